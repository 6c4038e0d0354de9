"""What a visitor sees of issue 12 in real Chromium: pages that stream at the same time and
stop alone, and the probability view (with hostile model text) in Chat and Raw prompt.

Screenshots go to the git-ignored `artifacts/` folder.
"""

import re
import time

import pytest

from tests.helpers.browser import open_page, screenshot, send, set_number
from tests.helpers.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def press_stop(page):
    # A click dispatched in the page: with four pages re-rendering their streams on 2 cores,
    # Playwright's own click can wait out its timeout scrolling the button into view.
    page.evaluate("document.querySelector('#stop').click()")
    page.wait_for_selector("#chatbot >> text=stopped by you")


def test_four_pages_stream_at_once_and_each_stops_alone(browser, batched_app_url, batched_engine):
    pages = [open_page(browser, batched_app_url) for _ in range(4)]
    try:
        for page in pages:
            set_number(page, "slider-max_new_tokens", 2000)  # 40 s at the paced speed
            set_number(page, "slider-temperature", 0)
        # Set up every page first, then send from all four together: set up one by one on a
        # loaded machine, the first reply could end before the last page had sent.
        for page in pages:
            send(page, "Tell me a long story")
        for page in pages:
            page.wait_for_function("document.querySelector('#chatbot').innerText.length > 200")
        assert batched_engine.active == 4  # all four stream now: none waits in the queue
        press_stop(pages[1])
        wait_until(lambda: batched_engine.active == 3)
        lengths = [len(p.inner_text("#chatbot")) for p in pages]
        time.sleep(1.0)
        for i in (0, 2, 3):  # the other three are still streaming
            assert len(pages[i].inner_text("#chatbot")) > lengths[i]
            assert "stopped by you" not in pages[i].inner_text("#chatbot")
        for i in (0, 2, 3):
            press_stop(pages[i])
        wait_until(lambda: batched_engine.active == 0)
    finally:
        for page in pages:
            page.close()


def tooltip(page, selector):
    return page.evaluate(
        f"getComputedStyle(document.querySelector({selector!r}), '::after').content"
    )


@pytest.mark.parametrize("width", [1280, 400])
def test_chat_shows_how_sure_the_model_was(browser, tutor_app_url, request, width):
    page = open_page(browser, tutor_app_url, width)
    set_number(page, "slider-temperature", 0)
    page.locator("#show-probs input").check()
    send(page, "What is 7 plus 5?")
    page.wait_for_selector("#chat-probs .probs-eot")
    view = page.inner_text("#chat-probs")
    assert "So 7 plus 5 is 12." in view.replace("\n", "")
    assert "P(<end_of_turn>) at the last step" in view and "chose to end its turn" in view
    assert "before temperature, top-k and top-p" in view
    token = page.locator("#chat-probs .tok").nth(3)
    token.focus()  # a tap focuses it: the tip shows without a mouse
    assert "p = " in tooltip(page, "#chat-probs .tok:focus")
    page.wait_for_timeout(300)
    screenshot(page, request)


def test_raw_probabilities_show_hostile_model_text_as_text(browser, tutor_app_url, request):
    page = open_page(browser, tutor_app_url)
    set_number(page, "slider-temperature", 0)
    set_number(page, "slider-max_new_tokens", 120)
    page.get_by_role("tab", name="Raw prompt").click()
    # tiny-tutor answers this raw text with markup-like tokens: <unused1>, <extra34>, ….
    page.fill("#raw-prompt textarea", "<script>alert(")
    page.locator("#raw-show-probs input").check()
    page.click("#raw-generate")
    page.wait_for_selector("#raw-probs .probs-eot")
    view = page.inner_text("#raw-probs")
    assert re.search(r"<(unused|extra)\d+>", view)  # the model's markup, as characters
    assert page.locator("#raw-probs :is(img, script, pad, unused1)").count() == 0
    assert page.dialogs == []
    page.locator("#raw-show-probs input").uncheck()
    page.wait_for_function("!document.querySelector('#raw-probs .probs')")
    page.locator("#raw-show-probs input").check()  # the last continuation comes back
    page.wait_for_selector("#raw-probs .probs-eot")
    screenshot(page, request)


def test_the_model_tab_shows_the_engine_now(browser, tutor_app_url, request):
    page = open_page(browser, tutor_app_url)
    page.get_by_role("tab", name="Model").click()
    page.wait_for_selector("#engine-status >> text=Generating now")
    status = page.inner_text("#engine-status")
    assert "of 4 at once" in status and "KV cache" in status
    page.click("#status-refresh")
    page.wait_for_selector("#engine-status >> text=Prompt lookup pipeline")
    screenshot(page, request)
