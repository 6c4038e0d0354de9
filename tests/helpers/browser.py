"""The app in headless Chromium: opening a page (with its dialogs recorded), screenshots into
the git-ignored `artifacts/`, and what tests do on the page (the chat, the sliders, the notebook,
the Compare tab's columns).
"""

import json
import re

import httpx

from playground.compare import VARIANT_TITLES
from tests.conftest import ROOT

ARTIFACTS = ROOT / "artifacts"
TIMEOUT_MS = 60_000


def open_page(browser, url, width=1280):
    page = browser.new_page(viewport={"width": width, "height": 1000})
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    # Attached, not visible: a link to another tab (?view=, ?share=) hides the Chat tab, at a
    # moment that races the page's first paint.
    page.wait_for_selector("#message textarea", state="attached")
    return page


def screenshot(page, request):
    ARTIFACTS.mkdir(exist_ok=True)
    name = re.sub(r"[^\w.-]+", "_", request.node.name)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    page.close()


def set_number(page, elem_id, value):
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def send(page, text):
    page.fill("#message textarea", text)
    page.click("#send")


def start_long_reply(page):
    """Start a reply that streams for a long time: the tiny model's greedy reply to this prompt
    runs to max_new_tokens (no end token); return once it is visibly streaming."""
    set_number(page, "slider-max_new_tokens", 4096)
    set_number(page, "slider-temperature", 0)
    send(page, "Tell me a long story")
    page.wait_for_function("document.querySelector('#chatbot').innerText.length > 200")


def chat_text(page):
    return page.inner_text("#chatbot")


def wait_figures(page, nth=0):
    page.wait_for_selector(f"#chatbot >> text=prompt tokens >> nth={nth}")


def wait_text(page, selector, text):
    """Wait until the element's text includes `text` (polled in the page, as the stop test's
    note says)."""
    page.wait_for_function(
        "([s, t]) => document.querySelector(s)?.innerText.includes(t)",
        arg=[selector, text],
        polling=250,
    )


def fn_index_of(url: str, elem_id: str) -> int:
    """The id of the event handler a click on the element `elem_id` runs first."""
    config = httpx.get(f"{url}config", timeout=30).json()
    button = next(c["id"] for c in config["components"] if c["props"].get("elem_id") == elem_id)
    return next(d["id"] for d in config["dependencies"] if [button, "click"] in d["targets"])


def assert_chat_kept(page, message: str) -> None:
    """Regenerate answers (the server still has the conversation) and `message` is in it."""
    before = chat_text(page)
    page.click("#regenerate")
    # Either a new reply (a new seed, so new figures) or the refusal beside the input.
    page.wait_for_function(
        "([before]) => document.querySelector('#chatbot').innerText !== before"
        " && document.querySelector('#chatbot').innerText.includes('prompt tokens')"
        " || document.querySelector('#input-note').innerText.trim() !== ''",
        arg=[before],
    )
    assert "Nothing to regenerate" not in page.inner_text("#input-note")
    wait_figures(page)
    assert message in chat_text(page)
    page.close()


def open_notebook(browser, url, query="?view=notebook", width=1280):
    page = browser.new_page(viewport={"width": width, "height": 1000})
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url + query)
    page.wait_for_selector("#nb-document .nb-cell")
    return page


def cell_text(page, number):
    return page.inner_text(f"#nb-cell-{number}")


def open_compare(browser, url, width=1280, query="?view=compare"):
    page = open_page(browser, url + query, width)
    page.wait_for_selector("#compare-run")
    return page


def choose(page, column, name):
    # Scoped to the column, and the list waited out: a list still closing would make the next
    # column's option name match twice.
    dropdown = page.locator(f"#compare-variant-{column}")
    dropdown.locator("input").click()
    dropdown.get_by_role("option", name=VARIANT_TITLES[name], exact=True).click()
    dropdown.get_by_role("option").first.wait_for(state="detached")


def set_conversation(page, messages):
    editor = page.locator("#compare-conversation .cm-content")
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    editor.fill(json.dumps(messages))  # CodeMirror's own input: no auto-closed brackets


def run_all(page, columns):
    page.click("#compare-run")
    for n in range(1, columns + 1):
        page.wait_for_function(
            f"document.querySelector('#compare-figures-{n}').innerText.includes('tokens/s')"
        )


def clock_presses(page, button: str, shown: str, at_press: str = "() => null") -> None:
    """From now on, time in the page's own clock each press of `button` (a CSS selector) until
    the page first shows its result: `shown(mark)` true, where `mark` is `at_press()` taken at
    the press (both JS functions). What a visitor waits, without Playwright's own dispatch of
    the click (up to 0.4 s on a loaded machine). `press_waits` reads the times."""
    page.evaluate(f"""() => {{
      const presses = window.presses = [], atPress = {at_press}, shown = {shown};
      document.addEventListener('pointerdown', (event) => {{
        if (!event.target.closest({json.dumps(button)})) return;
        presses.push({{pressed: performance.now(), mark: atPress()}});
      }}, {{capture: true}});
      new MutationObserver(() => {{
        const press = presses[presses.length - 1];
        if (press && !press.shown && shown(press.mark)) press.shown = performance.now();
      }}).observe(document.body, {{subtree: true, childList: true, characterData: true}});
    }}""")


def press_waits(page) -> list[float]:
    """Seconds from each press `clock_presses` timed to its result, for those shown so far."""
    presses = page.evaluate("window.presses")
    return [(p["shown"] - p["pressed"]) / 1000 for p in presses if "shown" in p]


# A chat reply's first model text: a bot message past those there at the press, with text
# besides its <sub> reading line.
BOTS = "() => document.querySelectorAll('#chatbot [data-testid=bot]')"
FIRST_TOKEN = f"""(before) => {{
  const all = ({BOTS})();
  if (all.length <= before) return false;
  const reply = all[all.length - 1].cloneNode(true);
  reply.querySelectorAll('sub').forEach((sub) => sub.remove());
  return reply.textContent.trim() !== '';
}}"""


def clock_first_tokens(page) -> None:
    """Time each press of Send to its reply's first model text (`press_waits`)."""
    clock_presses(page, "#send", FIRST_TOKEN, at_press=f"() => ({BOTS})().length")
