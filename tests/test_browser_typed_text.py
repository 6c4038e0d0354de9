"""Typed text stays text on every path into the chat (issue 33, security): send, the edit pencil,
regenerate, a loaded conversation and a share link, in real Chromium at 1280 and 400 px.

A MutationObserver, installed before the page's own scripts, records every element created inside
a visitor's bubble and every element the hostile text could make anywhere; Playwright records
every request. The visitor's bubble must show the text exactly as typed.
Screenshots go to the git-ignored `artifacts/` folder.
"""

import json

import pytest

from tests.conftest import page_on
from tests.helpers.browser import TIMEOUT_MS, send, set_number

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# The text, then Markdown, LaTeX, autolinks, an entity and whitespace: each would make
# an element if the chat rendered it (an image, bold, KaTeX, a link, a list, a code block).
TYPED = (
    "edited <img src=x onerror=alert(1)> <b id=bold>x</b> ![a](http://127.0.0.1:9/x.png)\n"
    "  **bold**  $$x^2$$ `code` www.example.com a@b.co &amp; \\*\n\n\n"
    "1. one\n    indented"
)
WIDTHS = [1280, 400]

# Before the page's scripts: inside a visitor's bubble only the paragraph the Markdown wraps
# text in may be created; anywhere, no element may carry what the hostile text names.
WATCH = """
window.typedElements = [];
window.hostileElements = [];
const HOSTILE = 'img[src="x"], img[src*="127.0.0.1:9"], #bold, a[href*="127.0.0.1:9"]';
new MutationObserver((records) => {
  for (const record of records) {
    const inBubble = record.target.closest?.('[data-testid="user"] .md');
    for (const node of record.addedNodes) {
      if (node.nodeType !== Node.ELEMENT_NODE) continue;
      for (const el of [node, ...node.querySelectorAll('*')]) {
        const mine = inBubble || el.parentElement?.closest('[data-testid="user"] .md');
        if (mine && el.tagName !== 'P') window.typedElements.push(el.outerHTML.slice(0, 80));
        if (el.matches(HOSTILE)) window.hostileElements.push(el.outerHTML.slice(0, 80));
      }
    }
  }
}).observe(document, {childList: true, subtree: true});
"""


def watched_page(browser, url, width):
    """A page whose every created element and request is recorded from its first script."""
    page = browser.new_page(viewport={"width": width, "height": 1000})
    page.dialogs, page.requests = [], []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.on("request", lambda request: page.requests.append(request.url))
    page.set_default_timeout(TIMEOUT_MS)
    page.add_init_script(WATCH)
    page.goto(url)
    page.wait_for_selector("#message textarea", state="attached")
    set_number(page, "slider-max_new_tokens", 4)
    return page


page = page_on("tutor_app_url", watched_page, WIDTHS)


def wait_replies(page, count):
    page.wait_for_function(
        "(n) => document.querySelector('#chatbot').innerText.split('prompt tokens').length > n",
        arg=count,
    )


def user_bubbles(page):
    """The text of each visitor's bubble as it stands on the page."""
    return page.eval_on_selector_all(
        "#chatbot [data-testid='user'] .md", "els => els.map(el => el.innerText.trimEnd())"
    )


def assert_inert(page):
    """Nothing the typed text names was created or requested, and no script ran."""
    page.wait_for_timeout(1000)  # time for any image request to be made
    assert page.evaluate("window.typedElements") == []
    assert page.evaluate("window.hostileElements") == []
    fetched = [url for url in page.requests if "127.0.0.1:9/" in url or url.endswith("/x")]
    assert fetched == []
    assert page.dialogs == []


def test_sent_text_is_shown_as_typed(page):
    send(page, TYPED)
    wait_replies(page, 1)
    assert_inert(page)
    assert user_bubbles(page) == [TYPED]


def test_an_edit_is_shown_as_typed_from_the_check_mark_on(page, tmp_path):
    send(page, "FIRST")
    wait_replies(page, 1)
    send(page, "SECOND")
    wait_replies(page, 2)
    page.locator("#chatbot button[aria-label='Edit']").first.click()
    page.locator("#chatbot textarea").first.fill(TYPED)
    page.locator("#chatbot button[aria-label='Submit']").first.click()
    # Between the check mark and the server's answer the chatbot shows the edit itself.
    page.wait_for_function("!document.querySelector('#chatbot').innerText.includes('SECOND')")
    wait_replies(page, 1)
    assert_inert(page)
    assert user_bubbles(page) == [TYPED]
    # Edited again, the message is in the box as typed, and the server kept it exactly.
    page.locator("#chatbot button[aria-label='Edit']").first.click()
    assert page.locator("#chatbot textarea").first.input_value() == TYPED
    page.locator("#chatbot button[aria-label='Cancel']").first.click()
    with page.expect_download() as download:
        page.click("#download")
    saved = tmp_path / "c.json"
    download.value.save_as(saved)
    assert json.loads(saved.read_text())["messages"][0]["content"] == TYPED
    assert_inert(page)


def test_a_regenerated_turn_shows_its_message_as_typed(page):
    set_number(page, "slider-temperature", 1.0)
    send(page, TYPED)
    wait_replies(page, 1)
    before = page.inner_text("#chatbot")
    page.click("#regenerate")
    page.wait_for_function(
        "(before) => document.querySelector('#chatbot').innerText !== before"
        " && document.querySelector('#chatbot').innerText.includes('prompt tokens')",
        arg=before,
    )
    assert user_bubbles(page) == [TYPED]
    assert_inert(page)


def test_a_loaded_conversation_shows_its_messages_as_typed(page, tmp_path):
    # Each message also starts as a Markdown block would: a heading, a list, a quote, a table.
    typed = [TYPED, "# heading", "- item", "1. one", "> quote", "| a | b |", "---"]
    messages = []
    for text in typed:
        messages += [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]
    path = tmp_path / "typed.json"
    path.write_text(json.dumps({"messages": messages[:-1]}))
    with page.expect_file_chooser() as chooser:
        page.click("#upload")
    chooser.value.set_files(str(path))
    page.wait_for_function(
        "(n) => document.querySelectorAll('#chatbot [data-testid=user]').length == n",
        arg=len(typed),
    )
    assert user_bubbles(page) == typed
    assert_inert(page)


def test_a_share_link_shows_its_messages_as_typed(page, browser, tutor_app_url, request):
    send(page, TYPED)
    wait_replies(page, 1)
    send(page, TYPED + " again")
    wait_replies(page, 2)
    page.click("#chat-share")
    page.wait_for_function("document.querySelector('#chat-link textarea').value.startsWith('h')")
    link = page.input_value("#chat-link textarea")
    shared = watched_page(browser, link, request.node.callspec.params["page"])
    try:
        shared.wait_for_selector("#share-note >> text=Opened a shared chat view")
        # The last reply is taken off to be replayed: its question waits in the message box.
        shared.wait_for_function(
            "document.querySelectorAll('#chatbot [data-testid=user]').length == 1"
        )
        assert user_bubbles(shared) == [TYPED]
        assert shared.input_value("#message textarea") == TYPED + " again"
        assert_inert(shared)
    finally:
        shared.close()
    assert_inert(page)
