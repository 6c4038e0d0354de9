"""The Notebook tab in real headless Chromium (Debian's), on the tiny random model: tests assert
structure, streaming, stop reasons and escaping, never what the model says."""

import json
import time

import nbformat
import pytest

from tests.conftest import page_on, serve
from tests.helpers.browser import (
    cell_text,
    open_notebook,
    screenshot,
    set_number,
    wait_text,
)
from tests.helpers.fakes import RecordingEngine

pytestmark = [pytest.mark.slow, pytest.mark.browser]

HOSTILE_IMG = "<img src=x onerror=alert(1)>"
HOSTILE_MD = f"{HOSTILE_IMG}\n\n<script>alert(2)</script>\n\n[click me](javascript:alert(3))"
HOSTILE_OUTPUT = (
    f"{HOSTILE_IMG} <script>alert(7)</script> [link](javascript:alert(8)) <start_of_turn>"
)
HOSTILE_CHAT = json.dumps(
    [{"role": "user", "content": f"{HOSTILE_IMG} <script>alert(4)</script> <start_of_turn>"}]
)


WIDTHS = [1280, 400]


page = page_on("app_url", open_notebook)


def select_cell(page, number):
    page.locator("#nb-cell input").click()
    page.get_by_role("option").nth(number - 1).click()
    page.wait_for_selector(f"#nb-cell-{number}.nb-selected")


def edit_cell(page, number, source, options=None):
    select_cell(page, number)
    page.fill("#nb-source textarea", source)
    if options is not None:
        page.locator("#nb-options").locator("input, textarea").first.fill(options)


def assert_inert(page):
    page.wait_for_timeout(300)
    assert page.dialogs == []
    assert page.locator("#nb-document img, #nb-document script").count() == 0
    assert page.locator("a[href^='javascript:'], a[href^='data:']").count() == 0


def test_the_deep_link_opens_the_notebook_tab_and_a_named_lesson(browser, app_url, request):
    page = open_notebook(browser, app_url, "?view=notebook&lesson=04-one-bos")
    try:
        assert page.get_by_role("tab", name="Notebook").get_attribute("aria-selected") == "true"
        wait_text(page, "#nb-cell-1", "4. One <bos>")
        assert page.locator("#nb-document").is_visible()
        assert "<bos>" in page.inner_text("#nb-document")  # control tokens shown as text
        assert page.locator("#nb-document .ctl").count() > 0  # ...and marked
    finally:
        screenshot(page, request)


def click_cell(page, number):
    """Click cell `number` on its frame (its padding, off any text, link or ▶)."""
    page.locator(f"#nb-cell-{number}").click(position={"x": 5, "y": 3})
    page.wait_for_selector(f"#nb-cell-{number}.nb-selected")


def prompt_cells(page):
    """The numbers of the cells with a ▶."""
    ids = page.eval_on_selector_all(
        "#nb-document .nb-play", "plays => plays.map((p) => p.closest('.nb-cell').id)"
    )
    return [int(i.removeprefix("nb-cell-")) for i in ids]


EDITOR_AT = """([n, seen]) => {
  const cell = document.getElementById(`nb-cell-${n}`)?.getBoundingClientRect();
  const editor = document.getElementById('nb-editor').getBoundingClientRect();
  return cell && Math.abs(editor.top - cell.bottom) <= 12 && editor.right <= innerWidth + 1
    && (!seen || (editor.top >= 0 && editor.top < innerHeight - 100));
}"""


def wait_editor_at(page, number, seen=True):
    """The editor opens right under cell `number`, no wider than the page, and (once a cell
    was picked) with its top on screen."""
    page.wait_for_function(EDITOR_AT, arg=[number, seen])
    assert page.input_value("#nb-cell input").startswith(f"{number} · ")


@pytest.mark.parametrize("width", WIDTHS)
def test_a_click_selects_a_cell_and_the_editor_opens_under_it(browser, app_url, request, width):
    page = open_notebook(browser, app_url, width=width)
    try:
        wait_editor_at(page, 1, seen=False)
        last = page.locator("#nb-document .nb-cell").count()
        assert last >= 5
        for number in (last, 3, last - 1, 1):
            click_cell(page, number)
            assert page.locator("#nb-document .nb-selected").count() == 1
            wait_editor_at(page, number)
            assert page.locator(f"#nb-cell-{number}").is_visible()
        click_cell(page, 2)
        wait_editor_at(page, 2)
        assert page.input_value("#nb-source textarea").startswith('[{"role": "user"')
    finally:
        screenshot(page, request)


@pytest.mark.parametrize("width", WIDTHS)
def test_a_cells_play_button_and_shift_enter_run_it(browser, app_url, request, width):
    page = open_notebook(browser, app_url, width=width)
    try:
        first, second = prompt_cells(page)[:2]
        page.click(f"#nb-cell-{second} .nb-play")  # picks the cell, then runs it
        wait_text(page, f"#nb-cell-{second} .nb-figures", "new tokens")
        assert page.locator(f"#nb-cell-{second}.nb-selected").count() == 1
        assert page.locator("#nb-document .nb-out").count() == 1  # that cell alone ran
        wait_editor_at(page, second, seen=False)  # under the output, which grew after the pick
        # Shift+Enter on the selected cell runs it.
        click_cell(page, first)
        wait_editor_at(page, first)
        page.keyboard.press("Shift+Enter")
        wait_text(page, f"#nb-cell-{first} .nb-figures", "new tokens")
        page.wait_for_function("document.querySelector('#nb-stop').disabled")
        # Its node was drawn anew at each step of the run; the focus stayed on it.
        assert page.evaluate("document.activeElement.id") == f"nb-cell-{first}"
        # Shift+Enter in the source box applies the edit and runs it; the text stays literal.
        page.fill("#nb-source textarea", HOSTILE_CHAT)
        page.press("#nb-source textarea", "Shift+Enter")
        page.wait_for_function(
            """([n, text]) => {
              const cell = document.getElementById(`nb-cell-${n}`);
              return cell.innerText.includes(text)
                && cell.querySelector('.nb-figures')?.innerText.includes('new tokens');
            }""",
            arg=[first, HOSTILE_IMG],
        )
        assert page.input_value("#nb-source textarea") == HOSTILE_CHAT  # no newline added
        assert "<script>alert(4)</script>" in cell_text(page, first)
        wait_editor_at(page, first, seen=False)
        assert_inert(page)
    finally:
        screenshot(page, request)


def test_the_plain_link_opens_the_chat(browser, app_url):
    page = browser.new_page()
    page.goto(app_url)
    page.wait_for_selector("#message textarea")
    assert page.get_by_role("tab", name="Chat").get_attribute("aria-selected") == "true"
    page.close()


def test_edit_a_cell_and_run_it_with_hostile_text_shown_literally(page):
    set_number(page, "slider-max_new_tokens", 64)
    edit_cell(page, 2, HOSTILE_CHAT, "temperature=0 max_new_tokens=6")
    page.click("#nb-run-cell")
    wait_text(page, "#nb-cell-2", "6 new tokens")  # the cell's option beats the slider
    text = cell_text(page, 2)
    assert "2 · chat · temperature=0 max_new_tokens=6" in text
    assert HOSTILE_IMG in text and "<script>alert(4)</script>" in text
    assert "tokens as sent" in text and "seed" in text
    assert page.locator("#nb-cell-2 .nb-out-text").count() == 1
    edit_cell(page, 1, HOSTILE_MD)
    page.click("#nb-apply")
    wait_text(page, "#nb-cell-1", "click me")
    assert HOSTILE_IMG in cell_text(page, 1) and "<script>alert(2)</script>" in cell_text(page, 1)
    for link in page.locator("#nb-document a").all():
        link.click(force=True)
    assert_inert(page)


def test_an_output_rendered_as_markdown_stays_inert(page):
    edit_cell(page, 2, "[click](javascript:alert(5)) <img src=x onerror=alert(6)>",
              "output=markdown max_new_tokens=4")  # fmt: skip
    page.locator("#nb-kind").get_by_text("raw", exact=True).click()
    page.click("#nb-run-cell")
    wait_text(page, "#nb-cell-2", "4 new tokens")
    assert page.locator("#nb-cell-2 .nb-out-md").count() == 1
    assert "2 · raw · output=markdown" in cell_text(page, 2)
    assert_inert(page)


def test_a_bad_cell_is_refused_with_an_escaped_message_and_kept(page):
    edit_cell(page, 2, "[not json", "")
    page.click("#nb-run-cell")
    toast = page.locator(".toast-body").first
    toast.wait_for()
    assert "JSON" in toast.inner_text() or "json" in toast.inner_text()
    assert page.locator("#nb-stop").is_disabled()
    edit_cell(page, 2, '[{"role": "user", "content": "hi"}]', f'colour="{HOSTILE_IMG}"')
    page.click("#nb-apply")
    page.locator(".toast-body").get_by_text("unknown cell option").first.wait_for()
    toasts = page.locator(".toast-body").all_inner_texts()
    assert any(HOSTILE_IMG in toast for toast in toasts)
    assert_inert(page)
    assert page.locator(".toast-body img").count() == 0
    assert page.locator("#nb-document .error, #nb-editor .error").count() == 0
    assert '"hi"' not in cell_text(page, 2)  # the refused edits changed nothing
    page.locator("#nb-options input").fill("temperature=9")
    page.click("#nb-apply")
    page.locator(".toast-body").get_by_text("from 0 to 2, got 9").first.wait_for()
    assert "temperature=9" not in cell_text(page, 2)
    select_cell(page, 1)  # nothing is covered by an error overlay


def test_run_all_runs_every_prompt_cell_in_order(page):
    set_number(page, "slider-max_new_tokens", 4)
    prompts = page.locator("#nb-document .prompt").count()
    assert prompts >= 2
    page.click("#nb-run-all")
    page.wait_for_function(
        f"document.querySelectorAll('#nb-document .nb-figures').length === {prompts} && "
        "![...document.querySelectorAll('#nb-document .nb-figures')]"
        ".some(e => e.innerText.includes('running'))",
        timeout=120_000,
    )
    figures = page.locator("#nb-document .nb-figures").all_inner_texts()
    assert all("new tokens" in line and "prompt tokens" in line for line in figures)
    page.wait_for_function("document.querySelector('#nb-stop').disabled")


def test_add_move_and_delete_a_cell(page):
    before = page.locator("#nb-document .nb-cell").count()
    select_cell(page, 1)
    page.locator("#nb-new-kind").get_by_text("markdown", exact=True).click()
    page.click("#nb-add")
    wait_text(page, "#nb-cell-2", "Write here")
    assert page.locator("#nb-document .nb-cell").count() == before + 1
    assert page.locator("#nb-cell-2.nb-selected").count() == 1  # the new cell is selected
    page.click("#nb-down")
    wait_text(page, "#nb-cell-3", "Write here")
    assert "Write here" not in cell_text(page, 2)
    assert "3 · markdown: Write here" in page.input_value("#nb-cell input")
    page.click("#nb-up")
    page.click("#nb-up")
    wait_text(page, "#nb-cell-1", "Write here")
    page.click("#nb-delete")
    page.wait_for_function(
        f"document.querySelectorAll('#nb-document .nb-cell').length === {before}"
    )
    assert "Write here" not in page.inner_text("#nb-document")


def test_stop_ends_a_long_cell_with_its_figures(browser, paced_app_url, paced_engine, request):
    page = open_notebook(browser, paced_app_url)
    try:
        edit_cell(page, 2, "Once upon a time", "temperature=0 max_new_tokens=4096")
        page.locator("#nb-kind").get_by_text("raw", exact=True).click()
        page.click("#nb-run-cell")
        page.wait_for_function(
            "document.querySelector('#nb-cell-2 .nb-out-text')?.innerText.length > 100"
        )
        page.click("#nb-stop")
        wait_text(page, "#nb-cell-2", "stopped by you")
        assert engine_ends(paced_engine)
        assert "4096 new tokens" not in cell_text(page, 2)
        stopped = cell_text(page, 2)
        page.wait_for_timeout(1000)
        assert cell_text(page, 2) == stopped  # nothing more arrives
        page.wait_for_function("document.querySelector('#nb-stop').disabled")
        # Stop during Run all ends the run: the later cells do not start.
        page.click("#nb-run-all")
        wait_text(page, "#nb-cell-2 .nb-figures", "running")  # the old output is gone
        page.wait_for_function(
            "document.querySelector('#nb-cell-2 .nb-out-text')?.innerText.length > 100"
        )
        page.click("#nb-stop")
        page.wait_for_function("document.querySelector('#nb-stop').disabled")
        assert "stopped by you" in cell_text(page, 2)
        assert page.locator("#nb-document .nb-out").count() == 1
        note = page.inner_text("#nb-note")
        assert "Stopped at cell 2; the 2 prompt cells after it did not run." in note
        # The Stop does not linger: the next Run all runs every cell to its end.
        edit_cell(page, 2, "Once upon a time", "max_new_tokens=3")
        page.click("#nb-run-all")
        page.wait_for_function("!document.querySelector('#nb-stop').disabled")
        page.wait_for_function("document.querySelector('#nb-stop').disabled", timeout=120_000)
        figures = page.locator("#nb-document .nb-figures").all_inner_texts()
        assert len(figures) == page.locator("#nb-document .prompt").count() == 3
        assert "3 new tokens" in figures[0]
        assert not any("stopped by you" in line for line in figures)
        assert page.inner_text("#nb-note") == ""  # a run to its end leaves no stop note
    finally:
        screenshot(page, request)


def engine_ends(engine, seconds=10):
    """Whether the engine's native loop ends within `seconds` (it may trail the page by a few
    milliseconds on a loaded machine)."""
    deadline = time.monotonic() + seconds
    while engine.active and time.monotonic() < deadline:
        time.sleep(0.05)
    return engine.active == 0


def download(page, elem_id, path, ready=lambda text: True):
    """Save the button's file; the files are rewritten once a run ends, so download again (for
    up to 30 s) until `ready` holds for the text."""
    deadline = time.monotonic() + 30
    while True:
        with page.expect_download() as info:
            page.click(f"#{elem_id}")
        info.value.save_as(path)
        if ready(path.read_text()) or time.monotonic() > deadline:
            return path
        page.wait_for_timeout(300)


def ran_export_me(ipynb: str) -> bool:
    cells = json.loads(ipynb)["cells"]
    return any("EXPORT-ME" in "".join(c["source"]) and c.get("outputs") for c in cells)


def test_export_ipynb_and_load_it_back(page, tmp_path):
    edit_cell(page, 2, '[{"role": "user", "content": "EXPORT-ME"}]', "max_new_tokens=5")
    page.click("#nb-run-cell")
    wait_text(page, "#nb-cell-2", "5 new tokens")
    heads = page.locator("#nb-document .nb-head").all_inner_texts()
    prompts = page.locator("#nb-document .prompt").all_inner_texts()
    saved = download(page, "nb-download-ipynb", tmp_path / "lesson.ipynb", ran_export_me)
    notebook = nbformat.read(saved, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code" and "EXPORT-ME" in c.source]
    assert len(code) == 1 and code[0].outputs  # the playground's output is stored
    assert "/work" not in saved.read_text() and "/tmp" not in saved.read_text()
    lesson = download(page, "nb-download-md", tmp_path / "lesson.md")
    assert "EXPORT-ME" in lesson.read_text() and "max_new_tokens=5" in lesson.read_text()
    page.click("#nb-reset")
    page.wait_for_function("!document.querySelector('#nb-document').innerText.includes('EXPORT')")
    with page.expect_file_chooser() as chooser:
        page.click("#nb-upload")
    chooser.value.set_files(str(saved))
    wait_text(page, "#nb-cell-2", "EXPORT-ME")
    assert page.locator("#nb-document .nb-head").all_inner_texts() == heads
    assert page.locator("#nb-document .prompt").all_inner_texts() == prompts
    assert "5 new tokens" not in page.inner_text("#nb-document")  # loaded cells, not yet run
    assert page.inner_text("#nb-note") == ""
    assert "(opened: lesson.ipynb)" in page.input_value("#nb-lesson input")


def test_an_opened_file_names_itself_literally_and_a_lesson_replaces_it(page, tmp_path):
    lesson = tmp_path / f"{HOSTILE_IMG}.md"
    lesson.write_text(f"# Mine {HOSTILE_IMG}\n\n```raw\nOnce\n```\n")
    with page.expect_file_chooser() as chooser:
        page.click("#nb-upload")
    chooser.value.set_files(str(lesson))
    wait_text(page, "#nb-cell-1", "Mine")
    name = page.input_value("#nb-lesson input")
    assert name.startswith(f"Mine {HOSTILE_IMG} (opened: ") and name.endswith(".md)")
    page.locator("#nb-lesson input").click()
    page.get_by_role("option").first.wait_for()
    assert page.locator("#nb-lesson img, [role=listbox] img").count() == 0
    page.get_by_role("option").nth(1).click()  # a shipped lesson
    wait_text(page, "#nb-cell-1", "2. The generation prompt")
    assert "opened" not in page.input_value("#nb-lesson input")
    assert_inert(page)


def test_an_invalid_upload_gets_one_clear_escaped_message(page, tmp_path):
    bad = tmp_path / "bad.md"
    bad.write_text(f'```chat colour="{HOSTILE_IMG}"\n[]\n```\n')
    before = page.inner_text("#nb-document")
    with page.expect_file_chooser() as chooser:
        page.click("#nb-upload")
    chooser.value.set_files(str(bad))
    wait_text(page, "#nb-note", "Not opened")
    note = page.inner_text("#nb-note")
    assert "unknown cell option" in note and HOSTILE_IMG in note
    assert page.locator("#nb-note img").count() == 0
    assert page.inner_text("#nb-document") == before  # the open lesson is kept
    junk = tmp_path / "junk.ipynb"
    junk.write_text("{not a notebook")
    with page.expect_file_chooser() as chooser:
        page.click("#nb-upload")
    chooser.value.set_files(str(junk))
    wait_text(page, "#nb-note", "not a valid Jupyter notebook")
    assert_inert(page)


def test_the_handout_opens_offline_with_hostile_text_inert(page, tmp_path):
    edit_cell(page, 1, HOSTILE_MD)
    page.click("#nb-apply")
    wait_text(page, "#nb-cell-1", "click me")
    edit_cell(page, 2, HOSTILE_CHAT, "max_new_tokens=4")
    page.click("#nb-run-cell")
    wait_text(page, "#nb-cell-2", "4 new tokens")
    handout = download(page, "nb-download-html", tmp_path / "handout.html",
                       lambda text: "alert(4)" in text)  # fmt: skip
    fetched = []
    page.on("request", lambda r: fetched.append(r.url) if not r.url.startswith("file:") else 0)
    page.goto(handout.as_uri())
    body = page.inner_text("body")
    assert HOSTILE_IMG in body and "<script>alert(4)</script>" in body and "click me" in body
    assert page.locator("img, script, a[href^='javascript:']").count() == 0
    assert page.dialogs == [] and fetched == []


def test_hostile_model_output_stays_inert_as_text_as_markdown_and_in_the_handout(
    browser, settings, tiny_folder, tmp_path, request
):
    """A (recording) model that writes markup: the output shows literally, and rendered as
    markdown it keeps no element, handler or javascript: link; the handout neither."""
    from playground.ui import build_demo

    demo = build_demo(RecordingEngine(tiny_folder, reply=HOSTILE_OUTPUT), settings)
    page = open_notebook(browser, serve(demo, settings))
    try:
        edit_cell(page, 2, '[{"role": "user", "content": "hi"}]', "max_new_tokens=512")
        page.click("#nb-run-cell")
        wait_text(page, "#nb-cell-2 .nb-figures", "end of turn")
        assert HOSTILE_OUTPUT in page.inner_text("#nb-cell-2 .nb-out-text")
        assert_inert(page)
        page.locator("#nb-options").locator("input").fill("output=markdown max_new_tokens=512")
        page.click("#nb-run-cell")
        page.wait_for_selector("#nb-cell-2 .nb-out-md")
        wait_text(page, "#nb-cell-2 .nb-figures", "end of turn")
        shown = page.inner_text("#nb-cell-2 .nb-out-md")
        assert HOSTILE_IMG in shown and "<script>alert(7)</script>" in shown
        for link in page.locator("#nb-document a").all():
            link.click(force=True)
        assert_inert(page)
        handout = download(page, "nb-download-html", tmp_path / "handout.html",
                           lambda text: "alert(7)" in text)  # fmt: skip
        page.goto(handout.as_uri())
        assert HOSTILE_OUTPUT in page.inner_text("body")
        assert page.locator("img, script, a[href^='javascript:']").count() == 0
        assert page.dialogs == []
    finally:
        screenshot(page, request)
        demo.close()


def test_a_cell_waits_in_the_one_engine_queue_behind_a_chat_reply(
    browser, paced_app_url, paced_engine, request
):
    from tests.helpers.browser import open_page, start_long_reply

    chat = open_page(browser, paced_app_url)
    page = open_notebook(browser, paced_app_url)
    try:
        start_long_reply(chat)
        edit_cell(page, 2, "Once upon a time", "max_new_tokens=3")
        page.locator("#nb-kind").get_by_text("raw", exact=True).click()
        page.click("#nb-run-cell")
        page.wait_for_function("!document.querySelector('#nb-stop').disabled")
        page.wait_for_function("/queue/i.test(document.querySelector('#nb-document').innerText)")
        page.wait_for_timeout(1000)
        assert page.locator("#nb-cell-2 .nb-out").count() == 0  # not started: queued
        assert paced_engine.active == 1
        chat.click("#stop", force=True)
        wait_text(page, "#nb-cell-2", "3 new tokens")
    finally:
        screenshot(page, request)
        chat.close()


def test_issue23_p5_stop_ends_a_run_of_a_big_lesson_within_a_second(
    browser, paced_app_url, paced_engine, request, tmp_path
):
    # An 850 KB lesson's Run all went on for 272 s after Stop: each step re-rendered the whole
    # page. A lesson just under the size limit now stops within a second.
    lesson = tmp_path / "big.md"
    lesson.write_text("*a " * 16_000 + "\n\n```raw temperature=0 max_new_tokens=4096\nOnce\n```\n")
    page = open_notebook(browser, paced_app_url)
    try:
        with page.expect_file_chooser() as chooser:
            page.click("#nb-upload")
        chooser.value.set_files(str(lesson))
        page.wait_for_selector("#nb-cell-2")
        page.click("#nb-run-all")
        page.wait_for_function(
            "document.querySelector('#nb-cell-2 .nb-out-text')?.innerText.length > 100"
        )
        began = time.monotonic()
        page.click("#nb-stop")
        page.wait_for_function("document.querySelector('#nb-stop').disabled")
        took = time.monotonic() - began
        print(f"P5: Stop ended the run {took:.2f} s after the click")
        assert "stopped by you" in cell_text(page, 2)
        assert engine_ends(paced_engine, seconds=1)
        assert took < 1.0
    finally:
        screenshot(page, request)
