"""The Template inspector's "Renderers side by side", in real headless Chromium: a visitor's
hostile text stays literal text in every renderer's view, on a desktop and on a phone.

Screenshots go to the git-ignored `artifacts/` folder.
"""

import pytest

from tests.helpers.browser import open_page, screenshot

pytestmark = [pytest.mark.slow, pytest.mark.browser]

HOSTILE = "<img src=x onerror=alert(1)> <b>x</b> ![a](http://127.0.0.1:9/x.png)"


@pytest.mark.parametrize("width", [1280, 400])
def test_hostile_text_stays_literal_in_the_renderers_view(browser, tutor_app_url, request, width):
    page = open_page(browser, tutor_app_url, width=width)
    requested = []
    page.on("request", lambda r: requested.append(r.url) if "127.0.0.1:9" in r.url else None)
    try:
        page.get_by_role("tab", name="Template inspector").click()
        cell = page.locator("#rows span[data-editable=true]").get_by_text("Hello!", exact=True)
        cell.dblclick()
        page.keyboard.press("Control+A")
        page.keyboard.type(HOSTILE)
        page.keyboard.press("Enter")
        page.wait_for_function(
            "document.querySelector('#prompt-text textarea').value.includes('onerror')"
        )
        page.get_by_text("Renderers side by side").click()
        page.click("#renderers-run")
        view = page.locator("#renderers")
        view.locator("section.renderer").nth(4).wait_for()
        page.wait_for_timeout(500)  # time for anything the view could have made to load
        text = view.inner_text()
        # The canonical, transformers, GenAI and llama-cpp-python's texts, and llama.cpp's.
        assert text.count(HOSTILE) == 5
        assert "hf-jinja" in text and "llama.cpp built-in" in text and "<bos>" in text
        assert view.locator("img, b, script, a").count() == 0
        assert page.dialogs == [] and requested == []
        view.scroll_into_view_if_needed()
    finally:
        screenshot(page, request)
