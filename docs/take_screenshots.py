"""Take README's screenshots from the real app in Debian's headless Chromium, as a visitor
without network sees it: the default model can't be had, so it serves tiny-tutor with a banner.

Usage: python docs/take_screenshots.py  (writes docs/*.png: 1280 px wide, and 400 px phones)
"""

import os
import sys
import tempfile
from pathlib import Path

# No hub and an empty cache: the app falls back to tiny-tutor, as on a fresh offline machine.
os.environ.update(HF_HUB_OFFLINE="1", HF_HOME=tempfile.mkdtemp())

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playwright.sync_api import sync_playwright

from playground.engines import open_engine
from playground.settings import load_settings
from playground.ui import build_demo
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, serve
from tests.helpers.browser import set_number

DOCS = Path(__file__).resolve().parent


def main() -> None:
    settings = load_settings()
    engine, notice = open_engine(settings)
    url = serve(build_demo(engine, settings, notice), settings)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        page.wait_for_selector("#message textarea")
        set_number(page, "slider-max_new_tokens", 160)
        page.locator("#examples input").click()
        page.get_by_text("tiny-tutor: a folded system prompt").click()
        page.wait_for_function("document.querySelector('#message textarea').value.length > 0")
        page.click("#send")
        page.wait_for_selector("#chatbot >> text=prompt tokens")
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(DOCS / "chat.png"))
        page.get_by_role("tab", name="Template inspector").click()
        page.click("#use-chat")
        page.wait_for_selector("#marked-prompt >> text=Answer in uppercase")
        page.screenshot(path=str(DOCS / "inspector.png"), full_page=True)
        page.get_by_role("tab", name="Raw prompt").click()
        page.fill("#raw-prompt textarea", "<start_of_turn>user\nWhat is 3 times 4?<end_of_turn>\n")
        page.click("#raw-generate")
        page.wait_for_selector("#raw-figures >> text=new tokens")
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(DOCS / "raw.png"))
        page.locator("#raw-show-probs input").check()
        page.wait_for_selector("#raw-probs .probs-eot")
        page.locator("#raw-probs .tok").nth(2).hover()
        page.locator("#raw-probs").screenshot(path=str(DOCS / "probabilities.png"))
        notebook_shots(browser, url)
        compare_shot(browser, url)
        phone = browser.new_page(viewport={"width": 400, "height": 860})
        phone.goto(url)
        phone.wait_for_selector("#message textarea")
        phone.fill("#message textarea", "What is 7 plus 5?")
        phone.click("#send")
        phone.wait_for_selector("#chatbot >> text=prompt tokens")
        phone.evaluate("window.scrollTo(0, 0)")
        phone.screenshot(path=str(DOCS / "chat-400.png"), full_page=True)
        browser.close()


def notebook_shots(browser, url: str) -> None:
    """The Notebook tab from its link, lesson 1 run: at 1280 px, and the top of it at 400 px."""
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.goto(url + "?view=notebook")
    page.wait_for_selector("#nb-document .nb-cell")
    set_number(page, "slider-max_new_tokens", 160)
    page.locator("#nb-cell input").click()
    page.get_by_role("option").nth(1).click()
    page.wait_for_selector("#nb-cell-2.nb-selected")
    page.locator("#nb-options input").fill("temperature=0 max_new_tokens=160")
    page.click("#nb-run-all")
    page.wait_for_function("document.querySelector('#nb-stop').disabled === false")
    page.wait_for_function("document.querySelector('#nb-stop').disabled", timeout=120_000)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(DOCS / "notebook.png"))
    phone = browser.new_page(viewport={"width": 400, "height": 860})
    phone.goto(url + "?view=notebook")
    phone.wait_for_selector("#nb-document .nb-cell")
    phone.wait_for_function("document.querySelectorAll('.sidebar.open').length === 0")
    phone.screenshot(path=str(DOCS / "notebook-400.png"), full_page=True)


def compare_shot(browser, url: str) -> None:
    """The Compare tab from its link: the correct prompt beside a fault and an engine trap, run
    greedily, with the sidebar closed so the columns have the width."""
    page = browser.new_page(viewport={"width": 1280, "height": 1250})
    page.goto(url + "?view=compare")
    page.wait_for_selector("#compare-info-3 >> text=tokens")
    set_number(page, "slider-temperature", 0)
    dropdown = page.locator("#compare-variant-3")
    dropdown.locator("input").click()
    dropdown.get_by_role("option", name="Engine trap: <end_of_turn> not a stop token").click()
    page.wait_for_selector("#compare-info-3 >> text=ends only on ids")
    page.click("#compare-run")
    for n in (1, 2, 3):
        page.wait_for_selector(f"#compare-figures-{n} >> text=tokens/s")
    page.locator(".sidebar .toggle-button").first.click()  # closed: the columns get the width
    page.evaluate("window.scrollTo(0, 0)")  # boxes in page coordinates, as the clip wants
    page.wait_for_timeout(500)  # the sidebar's closing transition
    box = page.locator("#compare-columns").bounding_box()  # down to the outputs and figures
    figures = [page.locator(f"#compare-figures-{n}").bounding_box() for n in (1, 2, 3)]
    bottom = max(f["y"] + f["height"] for f in figures)
    clip = {**box, "height": bottom + 16 - box["y"]}
    page.screenshot(path=str(DOCS / "compare.png"), clip=clip, full_page=True)


if __name__ == "__main__":
    main()
