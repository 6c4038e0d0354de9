"""What a visitor sees of the engine's own process (issue 29), in real Chromium: a reply whose
engine process was killed keeps its text and says so, the chat goes on, and while a slow engine
reads a long prompt the reply says how far it has got.

The engine is the real one on tiny-random, its own for this module (the tests kill its
process), paced by a hook in that process. Screenshots go to the git-ignored `artifacts/`.
"""

import os
import signal

import pytest

from playground.engines import load_engine
from playground.ui import build_demo
from tests.conftest import serve
from tests.helpers.browser import open_page, screenshot, send, set_number
from tests.helpers.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def own_engine(settings, tiny_folder):
    engine = load_engine(tiny_folder, "genai", cache_dir=settings.cache_dir, max_concurrent=2)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def own_url(own_engine, settings):
    demo = build_demo(own_engine, settings)
    yield serve(demo, settings)
    demo.close()


@pytest.mark.parametrize("width", [1280, 400])
def test_a_killed_engine_keeps_the_reply_and_the_chat_goes_on(
    browser, own_url, own_engine, request, width
):
    own_engine.process.set_hooks(delay_s=0.02)
    page = open_page(browser, own_url, width)
    try:
        send(page, "My name is Zed.")
        page.wait_for_selector("#chatbot >> text=new tokens")
        set_number(page, "slider-max_new_tokens", 4096)
        set_number(page, "slider-temperature", 0)
        send(page, "Tell me a long story")
        page.wait_for_function(  # the new reply itself is visibly streaming
            "[...document.querySelectorAll('#chatbot [data-testid=bot]')].length > 1 && "
            "[...document.querySelectorAll('#chatbot [data-testid=bot]')].at(-1)"
            ".innerText.length > 200"
        )
        restarts = own_engine.status().engine_restarts
        os.kill(own_engine.process.pid, signal.SIGKILL)
        page.wait_for_selector("#chatbot >> text=the engine stopped mid-reply")
        chat = page.inner_text("#chatbot")
        assert "My name is Zed." in chat and "Tell me a long story" in chat
        reply = page.locator("#chatbot [data-testid=bot]").last.inner_text()
        assert len(reply) > 200  # the text that had arrived stays
        wait_until(lambda: own_engine.status().engine_process == "running", what="restart")
        assert own_engine.status().engine_restarts == restarts + 1
        page.get_by_role("tab", name="Model").click()
        page.wait_for_selector(f"#engine-status >> text=restarts: {restarts + 1}")
        page.get_by_role("tab", name="Chat").click()
        set_number(page, "slider-max_new_tokens", 8)
        send(page, "Short one")
        page.wait_for_selector("#chatbot >> text=8 new tokens")
        assert "My name is Zed." in page.inner_text("#chatbot")  # the conversation is kept
    finally:
        own_engine.process.set_hooks(delay_s=0.0)
        screenshot(page, request)


def test_a_long_prompt_shows_how_far_the_engine_has_read_it(browser, own_url, own_engine, request):
    own_engine.process.set_hooks(delay_s=1.0)  # each step reads 256 prompt tokens a second
    page = open_page(browser, own_url)
    try:
        set_number(page, "slider-max_new_tokens", 4)
        send(page, "word " * 1500)
        shown = page.wait_for_selector(
            "#chatbot >> text=/reading the prompt: 256 of [0-9,]+ tokens/"
        )
        assert shown.is_visible()
        page.wait_for_selector("#chatbot >> text=/reading the prompt: 512 of/")
        page.screenshot(path=f"artifacts/{request.node.name}-reading.png")
        page.wait_for_selector("#chatbot >> text=4 new tokens", timeout=60_000)
        assert "reading the prompt" not in page.inner_text("#chatbot")
    finally:
        own_engine.process.set_hooks(delay_s=0.0)
        screenshot(page, request)


def test_raw_and_the_notebook_show_how_far_the_prompt_has_been_read(
    browser, own_url, own_engine, request, tmp_path
):
    from tests.helpers.browser import open_notebook

    own_engine.process.set_hooks(delay_s=1.0)
    page = open_page(browser, own_url)
    lesson = tmp_path / "long.md"
    lesson.write_text("A long prompt.\n\n```raw max_new_tokens=2\n" + "word " * 1500 + "\n```\n")
    try:
        page.get_by_role("tab", name="Raw prompt").click()
        page.fill("#raw-prompt textarea", "word " * 1500)
        set_number(page, "slider-max_new_tokens", 2)
        page.click("#raw-generate")
        page.wait_for_selector("#raw-figures >> text=/reading the prompt: 256 of [0-9,]+ tokens/")
        page.screenshot(path=f"artifacts/{request.node.name}-raw-reading.png")
        page.wait_for_selector("#raw-figures >> text=2 new tokens", timeout=60_000)
        assert "reading the prompt" not in page.inner_text("#raw-figures")
        screenshot(page, request)
        page = open_notebook(browser, own_url)
        with page.expect_file_chooser() as chooser:
            page.click("#nb-upload")
        chooser.value.set_files(str(lesson))
        page.wait_for_selector("#nb-cell-2")
        page.click("#nb-run-all")
        page.wait_for_selector("#nb-cell-2 >> text=/reading the prompt: 256 of [0-9,]+ tokens/")
        page.screenshot(path=f"artifacts/{request.node.name}-notebook-reading.png")
        page.wait_for_selector("#nb-cell-2 >> text=2 new tokens", timeout=60_000)
    finally:
        own_engine.process.set_hooks(delay_s=0.0)
        page.screenshot(path=f"artifacts/{request.node.name}-notebook.png", full_page=True)
        page.close()
