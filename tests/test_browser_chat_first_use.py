"""Issue 33, "The first five minutes", the Chat tab's first use in real headless Chromium at 1280
and 400 px, on the app serving tiny-tutor in place of the default model (banner included): the
message box in sight, named and a Tab press or three away, the preset named by its values, a
refused message kept in its box, a loaded conversation checked, the Examples marked.

Screenshots go to the git-ignored `artifacts/` folder.
"""

import json

import pytest

from tests.helpers.browser import ARTIFACTS, set_number

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# On the fallback app (conftest's fallback_url), each page at a width (conftest's open_at).
WIDTHS = [1280, 400]

HEIGHT = 900  # open_at's viewport
BOX = "#message textarea"

# WCAG's contrast ratio of two CSS colours, for the focus ring against what it sits on.
CONTRAST = """([a, b]) => {
  const luminance = (color) => {
    const [r, g, b] = color.match(/[\\d.]+/g).slice(0, 3).map((v) => {
      const c = Number(v) / 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const [light, dark] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (light + 0.05) / (dark + 0.05);
}"""


def focused(page, selector):
    return page.evaluate(f"document.activeElement?.matches({selector!r}) ?? false")


def settled(page, width):
    """The page as a visitor first sees it: on a phone, once the sidebar has closed itself."""
    if width < 768:
        page.wait_for_function("document.querySelectorAll('.sidebar.open').length === 0")
    page.wait_for_timeout(300)  # the last layout pass


@pytest.mark.parametrize("width", WIDTHS)
def test_the_message_box_is_in_sight_named_message_and_three_tab_presses_away(open_at, width):
    page = open_at(width)
    settled(page, width)
    box = page.get_by_role("textbox", name="Message", exact=True)
    assert box.evaluate(f"(e) => e.matches({BOX!r})")  # its accessible name, not "Textbox"
    shown = box.bounding_box()
    assert page.evaluate("window.scrollY") == 0
    assert shown["y"] >= 0 and shown["y"] + shown["height"] <= HEIGHT, shown  # above the fold
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"reach-{width}-loaded.png"))

    presses = 0
    while presses < 3 and not focused(page, BOX):
        page.keyboard.press("Tab")
        presses += 1
        if focused(page, "#skip-link a"):
            link = page.locator("#skip-link a")
            assert link.inner_text() == "Skip to the message box"
            place = link.bounding_box()
            assert place["x"] >= 0 and place["x"] + place["width"] <= width  # seen when focused
            page.keyboard.press("Enter")
    assert focused(page, BOX), f"not at the message box after {presses} Tab presses"

    ring = box.evaluate(
        """(e) => { const s = getComputedStyle(e);
        const block = getComputedStyle(e.closest('.block') || document.body);
        return {style: s.outlineStyle, width: parseFloat(s.outlineWidth), color: s.outlineColor,
                box: s.backgroundColor, around: block.backgroundColor}; }"""
    )
    assert ring["style"] == "solid" and ring["width"] >= 2, ring
    for behind in (ring["box"], ring["around"], "rgb(255, 255, 255)"):
        assert page.evaluate(CONTRAST, [ring["color"], behind]) >= 3, (ring, behind)
    page.screenshot(path=str(ARTIFACTS / f"reach-{width}-focus.png"))


def test_the_skip_link_opens_the_chat_tab_from_another(open_at):
    page = open_at(1280)
    page.get_by_role("tab", name="Raw prompt").click()
    page.wait_for_selector(BOX, state="hidden")
    page.locator("#skip-link a").focus()
    page.keyboard.press("Enter")
    page.wait_for_function(f"document.activeElement?.matches({BOX!r})")
    assert page.locator(BOX).is_visible()


def test_the_preset_is_named_by_the_values_it_matches(open_at):
    page = open_at(1280)
    assert page.input_value("#preset input") == "Gemma Space defaults"  # "Custom" before
    set_number(page, "slider-temperature", 0.7)
    page.wait_for_function("document.querySelector('#preset input').value === 'Custom'")
    set_number(page, "slider-temperature", 0.6)
    page.wait_for_function(
        "document.querySelector('#preset input').value === 'Gemma Space defaults'"
    )


def test_a_refused_message_stays_in_its_box_and_out_of_the_chat(open_at):
    page = open_at(1280)
    page.get_by_text("System prompt and reply start").click()
    page.fill("#system textarea", "Answer in uppercase.")
    page.locator("#policy").get_by_label("error").check()
    typed = "What is 7 plus 5? <b>not bold</b>"
    page.fill(BOX, typed)
    page.click("#send")
    note = page.locator("#input-note")
    note.get_by_text("Gemma-2 was trained without a system turn").wait_for()
    page.wait_for_timeout(500)  # a reply, were it accepted, would be on its way by now
    assert page.input_value(BOX) == typed  # not emptied
    assert page.locator("#chatbot [data-testid=user]").count() == 0  # no sent bubble
    page.locator("#policy").get_by_label("fold").check()  # the reason fixed: it is sent
    page.click("#send")
    page.wait_for_selector("#chatbot >> text=prompt tokens")  # answered
    assert page.input_value(BOX) == ""
    assert page.locator("#chatbot [data-testid=user]").inner_text().strip() == typed  # literal


def test_a_conversation_with_two_user_messages_in_a_row_is_refused_as_it_loads(open_at, tmp_path):
    page = open_at(1280)
    path = tmp_path / "two-in-a-row.json"
    messages = [{"role": "user", "content": "First"}, {"role": "user", "content": "Second"}]
    path.write_text(json.dumps({"messages": messages}))
    with page.expect_file_chooser() as chooser:
        page.click("#upload")
    chooser.value.set_files(str(path))
    note = page.locator("#input-note")
    note.get_by_text("Not loaded: message 2: expected 'assistant' after 'user'").wait_for()
    assert page.locator("#chatbot [data-testid=user]").count() == 0


def test_the_examples_say_which_need_the_real_model(open_at):
    page = open_at(1280)
    page.locator("#examples input").click()
    options = [o.strip() for o in page.get_by_role("option").all_inner_texts()]
    marked = [o for o in options if o.endswith("· needs Gemma-2-9B")]
    assert not options[0].endswith("needs Gemma-2-9B")  # what tiny-tutor answers comes first
    assert len(marked) >= 3 and options[-len(marked) :] == marked  # the rest, last
    assert "Write code · needs Gemma-2-9B" in marked
    page.get_by_role("option", name="tiny-tutor: a sum, counted step by step").click()
    page.wait_for_function(f"document.querySelector({BOX!r}).value === 'What is 7 plus 5?'")
