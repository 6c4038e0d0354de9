"""Cross-engine divergence in the Compare tab, in real Chromium (issue 32, item 3): the app serves
tiny-tutor on the genai engine with llama.cpp's server on tiny-tutor's GGUF as its peer; columns
on each engine run at once, and a column on the peer shows where its greedy output parts from
column 1's, the similarity and the two engines' logprobs as a plot; hostile text stays text.

Screenshots go to the git-ignored `artifacts/` folder.
"""

import json

import pytest

from playground.engines import open_peer
from playground.settings import RemoteSettings
from tests.conftest import serve, start_llama_server
from tests.helpers.browser import (
    choose,
    open_page,
    screenshot,
    set_conversation,
    set_number,
    wait_text,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]
HOSTILE = "<img src=x onerror=alert(1)><b>x</b> ![a](http://127.0.0.1:9/x.png)"
ONCE = "<bos>Once upon a time"  # parts at token 34 on the two engines (tests/test_divergence)


@pytest.fixture(scope="module")
def peer_app(settings, tutor_engine):
    """The app on tiny-tutor (genai) with llama.cpp's server as its peer: (url, peer)."""
    from playground.ui import build_demo

    process, base_url = start_llama_server()
    served = settings.with_(model="tiny-tutor", remote=RemoteSettings(base_url=base_url))
    peer, reason = open_peer(served, tutor_engine)
    assert reason is None
    demo = build_demo(tutor_engine, served, peer=peer)
    yield serve(demo, settings), peer
    demo.close()
    process.terminate()
    process.wait(30)


def choose_engine(page, column, label):
    dropdown = page.locator(f"#compare-engine-{column}")
    dropdown.locator("input").click()
    dropdown.get_by_role("option", name=label, exact=True).click()
    dropdown.get_by_role("option").first.wait_for(state="detached")


def fill_edited(page, column, text):
    choose(page, column, "edited")
    # It starts from column 1's prompt: wait for that, or it lands over the text typed here.
    page.wait_for_function(
        f"document.querySelector('#compare-edited-{column} textarea').value.startsWith('<bos>')"
    )
    page.fill(f"#compare-edited-{column} textarea", text)


@pytest.mark.parametrize("width", [1280, 400])
def test_a_column_on_the_peer_shows_where_its_greedy_output_parts(
    browser, peer_app, tutor_engine, request, width
):
    url, peer = peer_app
    page = open_page(browser, url + "?view=compare", width)
    page.wait_for_selector("#compare-run")
    assert peer.label in page.inner_text("#compare-peer-intro")
    set_number(page, "slider-temperature", 0)
    set_number(page, "slider-repetition_penalty", 1)
    set_number(page, "slider-max_new_tokens", 60)
    set_conversation(page, [{"role": "user", "content": HOSTILE + " What is 7 plus 5?"}])
    fill_edited(page, 1, ONCE)
    fill_edited(page, 2, ONCE)
    for n in (2, 3):
        choose_engine(page, n, peer.label)
        wait_text(page, f"#compare-info-{n}", f"Runs on {peer.label}")
    page.click("#compare-run")
    for n in (1, 2, 3):
        wait_text(page, f"#compare-figures-{n}", "tokens/s")
    wait_text(page, "#compare-divergence-2", "Parts from column 1 at token")
    wait_text(page, "#compare-divergence-3", "Similarity")

    # What the page shows is what the two engines return when called directly.
    greedy = dict(temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.0, seed=1)
    from playground.sampling import SamplingParams

    params = SamplingParams(max_new_tokens=60, **greedy)
    ours, theirs = tutor_engine.generate(ONCE, params).run(), peer.generate(ONCE, params).run()
    at = next(i for i, (a, b) in enumerate(zip(ours.token_ids, theirs.token_ids, strict=False))
              if a != b)  # fmt: skip
    shown = page.inner_text("#compare-divergence-2")
    assert f"Parts from column 1 at token {at} " in shown
    assert page.input_value("#compare-output-1 textarea") == ours.text
    assert page.input_value("#compare-output-2 textarea") == theirs.text
    plot = page.locator("#compare-divergence-2 svg.divergence-plot")
    assert plot.locator("polyline").count() >= 2 and plot.locator("polygon").count() == 1
    box = plot.bounding_box()
    assert box["width"] > 150 and box["height"] >= 100  # readable in a phone's column too
    assert "The prompts differ too" in page.inner_text("#compare-divergence-3")
    assert page.inner_text("#compare-divergence-1").strip() == ""

    # Hostile text in the conversation stays text everywhere it shows.
    assert HOSTILE in page.inner_text("#compare-prompt-3")
    assert page.dialogs == []
    assert page.locator("img[src='x'], img[src='http://127.0.0.1:9/x.png']").count() == 0
    assert page.locator("b:text-is('x')").count() == 0
    if width == 400:
        assert page.evaluate("document.documentElement.scrollWidth") <= 400
    page.locator("#compare-divergence-2").scroll_into_view_if_needed()
    screenshot(page, request)


def test_sampled_columns_say_divergence_needs_greedy(browser, peer_app, request):
    url, peer = peer_app
    page = open_page(browser, url + "?view=compare")
    page.wait_for_selector("#compare-run")
    set_number(page, "slider-temperature", 1.0)
    set_number(page, "slider-max_new_tokens", 8)
    page.locator("#compare-count label:has-text('2')").click()
    choose(page, 2, "correct")
    choose_engine(page, 2, peer.label)
    page.click("#compare-run")
    wait_text(page, "#compare-divergence-2", "Divergence needs greedy runs")
    assert page.locator("#compare-divergence-2 svg").count() == 0
    screenshot(page, request)


def test_without_a_peer_the_tab_has_no_engine_choice(browser, tutor_app_url):
    page = open_page(browser, tutor_app_url + "?view=compare")
    page.wait_for_selector("#compare-run")
    assert page.locator("[id^=compare-engine-], [id^=compare-divergence-]").count() == 0
    assert page.locator("#compare-peer-intro, #compare-peer-note").count() == 0
    page.close()


def test_a_configured_peer_that_is_down_is_named_in_one_line(browser, settings, tutor_engine):
    from playground.ui import build_demo

    down = settings.with_(
        model="tiny-tutor", remote=RemoteSettings(base_url="http://127.0.0.1:9/v1")
    )
    peer, reason = open_peer(down, tutor_engine)
    demo = build_demo(tutor_engine, down, peer=peer, peer_note=reason)
    page = open_page(browser, serve(demo, settings) + "?view=compare")
    note = page.inner_text("#compare-peer-note")
    assert "could not be used at start" in note and "127.0.0.1:9" not in note
    assert page.locator("[id^=compare-engine-]").count() == 0
    page.close()
    demo.close()
    assert json.dumps(reason)  # one plain line


def test_a_shared_link_keeps_each_columns_engine(browser, peer_app, tutor_app_url, request):
    url, peer = peer_app
    page = open_page(browser, url + "?view=compare")
    page.wait_for_selector("#compare-run")
    choose_engine(page, 2, peer.label)
    wait_text(page, "#compare-info-2", f"Runs on {peer.label}")
    page.click("#compare-share")
    page.wait_for_function("document.querySelector('#compare-link textarea').value.startsWith('h')")
    link = page.input_value("#compare-link textarea")
    page.close()
    token = link.partition("?share=")[2]
    opened = open_page(browser, url + "?share=" + token)
    opened.wait_for_selector("#share-note >> text=Opened a shared compare view")
    wait_text(opened, "#compare-info-2", f"Runs on {peer.label}")
    assert peer.label in opened.input_value("#compare-engine-2 input")
    assert "Runs on" in opened.inner_text("#compare-info-1")
    assert peer.label not in opened.inner_text("#compare-info-1")
    # Opened where there is no peer: every column runs on the served engine, and it says so.
    elsewhere = open_page(browser, tutor_app_url + "?share=" + token)
    elsewhere.wait_for_selector("#share-note >> text=Opened a shared compare view")
    assert "1 of its columns ran on a second engine" in elsewhere.inner_text("#share-note")
    elsewhere.close()
    screenshot(opened, request)
