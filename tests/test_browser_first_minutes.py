"""Issue 33, "The first five minutes", in real headless Chromium at 1280 and 400 px: the app
serving tiny-tutor in place of the default model, with the real fallback notice.

Screenshots go to the git-ignored `artifacts/` folder.
"""

import pytest

from tests.helpers.browser import set_number

pytestmark = [pytest.mark.slow, pytest.mark.browser]

WIDTHS = [1280, 400]
SERVED = "tiny-tutor (demo model)"


def clipped(page, selector):
    """Descriptions of the elements at `selector` and under it whose text is cut: scrolled
    inside itself, or wider than the viewport."""
    return page.eval_on_selector(
        selector,
        """(root) => [root, ...root.querySelectorAll('*')].filter((e) => {
            const box = e.getBoundingClientRect();
            const scrolls = getComputedStyle(e).overflowY !== 'visible';
            return scrolls && e.scrollHeight > e.clientHeight + 1
                || box.right > window.innerWidth + 1;
        }).map((e) => e.tagName + '.' + e.className)""",
    )


@pytest.mark.parametrize("width", WIDTHS)
def test_the_banner_shows_its_whole_first_line_and_the_details_on_tap(open_at, width):
    page = open_at(width)
    head = page.locator("#banner-text .banner-head")
    head.wait_for()
    said = head.inner_text()
    assert "You are talking to tiny-tutor, a small demo model" in said
    assert "gemma-2-9b-it-ov-int4 is not available here" in said
    assert clipped(page, "#banner") == []
    size = float(head.evaluate("(e) => getComputedStyle(e).fontSize").removesuffix("px"))
    assert size >= 14  # readable on a phone, not shrunk
    box, banner = head.bounding_box(), page.locator("#banner").bounding_box()
    assert box["y"] + box["height"] <= banner["y"] + banner["height"]  # all of it, in the box
    cause = page.get_by_text("is not downloaded on this server")
    assert not cause.is_visible()  # the details wait for a tap
    page.locator("#banner-text summary").click()
    cause.wait_for()
    assert "Hugging Face Hub could not be reached" in page.inner_text("#banner")
    assert "hf download fakezeta/gemma-2-9b-it-ov-int4" in page.inner_text("#banner")
    assert clipped(page, "#banner") == []  # the banner grew: nothing scrolls inside it
    assert "Error" not in page.inner_text("#banner")  # no exception's name


@pytest.mark.parametrize("width", WIDTHS)
def test_after_closing_the_banner_the_page_still_names_the_model_served(open_at, width):
    page = open_at(width)
    page.click("#banner-close")
    page.wait_for_selector("#banner", state="hidden")
    subtitle = page.inner_text("#subtitle")
    label = page.inner_text("#chatbot [data-testid=block-label]")
    placeholder = page.get_attribute("#message textarea", "placeholder")
    for text in (subtitle, label, placeholder):
        assert SERVED in text
        assert "Gemma-2-9b-it" not in text and "Gemma-2…" not in text
    assert page.get_by_text(SERVED).first.is_visible()
    assert page.locator("#message textarea").is_visible()


def test_raw_prompt_shows_an_example_and_why_a_continuation_is_empty(open_at):
    page = open_at(1280)
    page.get_by_role("tab", name="Raw prompt").click()
    box = page.locator("#raw-prompt textarea")
    example = "<start_of_turn>user\nWhat is 7 plus 5?<end_of_turn>\n<start_of_turn>model\n"
    assert box.get_attribute("placeholder") == example
    set_number(page, "slider-temperature", 0)
    box.fill("What is 7 plus 5?")  # no turns: tiny-tutor ends its turn at once
    page.click("#raw-generate")
    page.wait_for_selector("#raw-figures >> text=end of turn")
    figures = page.inner_text("#raw-figures")
    assert "1 new token ·" in figures
    rate = float(figures.split(" tokens/s")[0].rsplit("· ", 1)[1])
    assert rate > 0
    assert "The model ended its turn at once: its first token was <end_of_turn>" in figures
    assert page.input_value("#raw-output textarea") == ""
    page.click("#raw-example")  # the example, one click away, and answered
    page.wait_for_function(f"document.querySelector('#raw-prompt textarea').value === {example!r}")
    page.click("#raw-generate")
    page.wait_for_function(
        "document.querySelector('#raw-output textarea').value.endsWith('So 7 plus 5 is 12.')"
    )
    page.wait_for_selector("#raw-figures >> text=end of turn")
    assert "ended its turn at once" not in page.inner_text("#raw-figures")


@pytest.mark.parametrize("width", WIDTHS)
def test_stop_strings_set_for_raw_show_in_every_tab_they_apply_to(open_at, width):
    page = open_at(width)
    if width < 768:  # the sidebar starts closed on a phone
        page.wait_for_function("document.querySelectorAll('.sidebar.open').length === 0")
        page.locator(".sidebar .toggle-button").click()
    page.fill("#stop-strings textarea", "###\n<b>User:</b>")
    page.locator("#stop-strings textarea").blur()
    if width < 768:
        page.locator(".sidebar .toggle-button").click()
    note = page.locator("#chat-stop-note")
    note.wait_for()
    assert '"###", "<b>User:</b>"' in note.inner_text()  # literal, not markup
    assert "apply to every tab" in note.inner_text()
    page.get_by_role("tab", name="Raw prompt").click()
    assert '"###"' in page.locator("#raw-stop-note").inner_text()
    assert clipped(page, "#raw-stop-note") == []
    page.get_by_role("tab", name="Chat").click()
    if width < 768:
        page.locator(".sidebar .toggle-button").click()
    page.fill("#stop-strings textarea", "")
    page.locator("#stop-strings textarea").blur()
    page.wait_for_selector("#chat-stop-note", state="hidden")


@pytest.mark.parametrize("width", WIDTHS)
def test_the_model_tab_names_the_cpu_and_the_speed_measured_at_start(open_at, width):
    import re

    from playground.machine import this_cpu

    page = open_at(width)
    page.get_by_role("tab", name="Model").click()
    info = page.inner_text("#model-info")
    cpu = this_cpu()
    assert f"CPU: {cpu.name}, " in info
    assert all(flag in info for flag in cpu.speed_flags()) and cpu.speed_flags()
    assert re.search(r"Measured at start: \d+\.\d tokens/s decoding one reply alone", info)
    assert ("llama.cpp's server" in info) == (not cpu.has_vnni)


@pytest.mark.parametrize("width", WIDTHS)
def test_the_model_tab_says_what_each_figure_means_and_the_inspector_explains_itself(
    open_at, width
):
    # Issue 33, words: "6,249,856 tokens" beside "Context size: 8192" meant nothing.
    from playground.display import MEANINGS
    from playground.ui.inspector import GENERATION_PROMPT_NOTE

    page = open_at(width)
    page.get_by_role("tab", name="Model").click()
    info = page.inner_text("#model-info")
    for label, meaning in MEANINGS.items():
        assert f"{label}:" in info and meaning in info, label
    assert "Context size: 8,192 tokens — the most the model reads at once" in info
    assert "KV-cache budget:" in info and "the model's memory of the text" in info
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    page.get_by_role("tab", name="Template inspector").click()
    note = page.locator("#gen-prompt-note")
    note.wait_for()
    assert note.inner_text().strip() == GENERATION_PROMPT_NOTE  # <start_of_turn> as text
    assert "<start_of_turn>model" in note.inner_text()
    page.get_by_text("Why a system message is folded").click()
    assert "minja" in page.locator("#fold-details").inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= width
