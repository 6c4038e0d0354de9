"""The app on the remote engine, as a visitor meets it in Chromium: llama-cpp-python's server
on tiny-tutor's GGUF behind it (issue 18)."""

import pytest

from playground.engines import load_engine
from playground.models import TUTOR_DIR
from playground.settings import RemoteSettings
from tests.conftest import ENDLESS_RAW, ENDLESS_START, page_on, serve, start_llama_server
from tests.helpers.browser import chat_text, open_page, screenshot, send, set_number

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def remote_app(settings, base_url):
    """The real app, in this process, on a remote engine at `base_url`; returns (demo, url)."""
    from playground.ui import build_demo

    engine = load_engine(
        TUTOR_DIR, "remote", cache_dir=settings.cache_dir, model_name="tiny-tutor",
        remote=RemoteSettings(base_url=base_url),
    )  # fmt: skip
    demo = build_demo(engine, settings.with_(model="tiny-tutor"))
    return demo, serve(demo, settings)


@pytest.fixture(scope="module")
def app_url(settings):
    process, base_url = start_llama_server()
    demo, url = remote_app(settings, base_url)
    yield url
    demo.close()
    process.terminate()
    process.wait(30)


page = page_on("app_url")  # this module's app_url: the app on the remote engine


def test_a_visitor_chats_and_stops_on_the_remote_engine(page):
    set_number(page, "slider-temperature", 0)
    send(page, "What is 7 plus 5?")
    page.wait_for_selector("#chatbot >> text=prompt tokens")
    assert "So 7 plus 5 is 12." in chat_text(page)
    assert "end of turn" in chat_text(page)
    # A raw prompt tiny-tutor continues to the limit: Stop ends it mid-stream.
    page.get_by_role("tab", name="Raw prompt").click()
    set_number(page, "slider-max_new_tokens", 4000)
    page.fill("#raw-prompt textarea", ENDLESS_RAW)
    page.click("#raw-generate")
    page.wait_for_function("document.querySelector('#raw-output textarea').value.length > 20")
    page.click("#raw-stop")
    page.wait_for_selector("#raw-figures >> text=stopped by you")


def test_hostile_text_from_visitor_and_model_stays_text(page):
    hostile = "<img src=x onerror=alert(1)>"
    set_number(page, "slider-temperature", 0)
    set_number(page, "slider-max_new_tokens", 40)
    # The reply starts with the prefill, so the hostile text stands in the model's turn too.
    page.get_by_text("System prompt and reply start").click()
    page.fill("#prefill textarea", hostile)
    send(page, f"Repeat after me: {hostile}")
    page.wait_for_selector("#chatbot >> text=prompt tokens")
    page.wait_for_timeout(500)
    assert page.dialogs == []
    assert page.locator("#chatbot img, #chatbot script").count() == 0
    reply = page.locator("#chatbot [data-testid=bot]").last.inner_text()
    assert reply.startswith(hostile)
    assert hostile in page.locator("#chatbot [data-testid=user]").last.inner_text()


def test_the_model_tab_and_the_inspector_show_the_server(page):
    page.get_by_role("tab", name="Model").click()
    info = page.inner_text("#model-info")
    assert "llama.cpp's server" in info and "adds <bos> itself" in info
    page.get_by_role("tab", name="Template inspector").click()
    page.get_by_text("Code export").click()
    page.wait_for_selector("text=curl: the server's request")
    page.wait_for_function(
        "[...document.querySelectorAll('.cm-content')].some(e => e.innerText.includes('curl -N'))"
    )


def test_the_model_tab_at_400_px(browser, app_url, request):
    page = open_page(browser, app_url, width=400)
    page.get_by_role("tab", name="Model").click()
    assert "adds <bos> itself" in page.inner_text("#model-info")
    width = page.evaluate("document.documentElement.scrollWidth")
    screenshot(page, request)
    assert width <= 400  # nothing runs off the side of a phone


def test_a_server_killed_mid_reply_keeps_the_text_and_says_so(browser, settings, request):
    process, base_url = start_llama_server()
    demo, url = remote_app(settings, base_url)
    page = open_page(browser, url)
    try:
        page.get_by_role("tab", name="Raw prompt").click()
        set_number(page, "slider-temperature", 0)
        set_number(page, "slider-max_new_tokens", 4000)
        page.fill("#raw-prompt textarea", ENDLESS_RAW)
        page.click("#raw-generate")
        page.wait_for_function("document.querySelector('#raw-output textarea').value.length > 20")
        process.kill()
        page.wait_for_selector("#raw-figures >> text=stopped answering mid-reply")
        assert page.input_value("#raw-output textarea").startswith(ENDLESS_START)
        assert page.locator("#raw-output .error").count() == 0  # the text stays in view
        assert page.dialogs == []
    finally:
        screenshot(page, request)
        demo.close()
        process.kill()
        process.wait(30)
