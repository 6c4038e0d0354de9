"""The Notebook tab under load (issue 34, item 11): a run step costs the app and the page one
cell, not the document; a lesson at the size caps runs at a few percent of a core with the
page answering; Stop lands within a second once ten cells have written 4,096 tokens each.
The browser tests run the app in a process of its own (the CPU measured is the app's alone),
on tiny-tutor, paced as a test wants it; the page is Debian's Chromium."""

import json
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

from playground import display
from playground.notebook import MAX_CELLS, MAX_LESSON_CHARS, MarkdownCell, PromptCell, parse_lesson
from playground.notebook_doc import CellOutput, Notebook
from playground.session import Control, Playground
from tests.conftest import ROOT, free_port
from tests.helpers.browser import cell_text, clock_presses, open_notebook, press_waits, screenshot
from tests.helpers.fakes import RecordingEngine

# The app as `python app.py --model tiny-tutor` serves it, its engine paced by the seconds a
# step written in a file (argv: port, that file), through the engine process's test hook.
SERVE = """
import sys, threading, time
from pathlib import Path
from playground.engines import open_engine
from playground.settings import load_settings
from playground.ui import build_demo, launch
settings = load_settings(model="tiny-tutor")
engine, _ = open_engine(settings)
engine.warm_up()
def follow_pace(path=Path(sys.argv[2]), now=None):
    while True:
        pace = float(path.read_text() or 0)
        if pace != now:
            engine.process.set_hooks(delay_s=pace)
            now = pace
        time.sleep(0.2)
threading.Thread(target=follow_pace, daemon=True).start()
launch(build_demo(engine, settings), settings, server_name="127.0.0.1",
       server_port=int(sys.argv[1]))
"""


class App:
    """The app in a process of its own, and the pace of its engine."""

    def __init__(self, folder):
        self.pace_file, log_path = folder / "pace", folder / "app.log"
        self.pace(0.0)
        port = free_port()
        with open(log_path, "w") as log:
            self.server = subprocess.Popen(
                [sys.executable, "-c", SERVE, str(port), str(self.pace_file)],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.url = f"http://127.0.0.1:{port}/"
        self.process = psutil.Process(self.server.pid)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and self.server.poll() is None:
            try:
                with urllib.request.urlopen(self.url + "config", timeout=5):
                    return
            except OSError:
                time.sleep(1)
        self.server.kill()
        pytest.fail(f"the app did not start: {log_path.read_text()[-2000:]}")

    def pace(self, seconds_per_step: float) -> None:
        """Each engine step waits this long first (0: tiny-tutor's own, ~1,000 tokens/s)."""
        self.pace_file.write_text(str(seconds_per_step))
        time.sleep(0.5)  # the app reads it every 0.2 s

    def cpu_s(self) -> float:
        """The app process's own CPU time (the engine's process is another)."""
        times = self.process.cpu_times()
        return times.user + times.system

    def stop(self) -> None:
        self.server.terminate()
        self.server.wait(timeout=30)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    app = App(tmp_path_factory.mktemp("app"))
    yield app
    app.stop()


def hundred_cells(tokens: int = 8) -> str:
    """A lesson just under both caps: 100 cells (50 markdown, 50 chat), about 45,000
    characters, each prompt writing `tokens` tokens of z's (tiny-tutor, greedy, prefilled;
    past a hundred or so, a prompt may end its turn sooner)."""
    parts = []
    for i in range(50):
        words = " ".join(f"word{i}x{j}" for j in range(40))
        parts.append(f"## Step {i + 1}\n\nSome *teaching* text about turn {i}: {words}.")
        content = f"Question {i}: " + " ".join(f"bako{i} lumi{j}" for j in range(27))
        body = json.dumps([{"role": "user", "content": content}])
        options = f"temperature=0 max_new_tokens={tokens} prefill=zzzz"
        parts.append(f"```chat {options}\n{body}\n```")
    return "# Hundred\n\n" + "\n\n".join(parts) + "\n"


def ten_long_cells() -> str:
    """Ten chat cells that each write z's until 4,096 tokens (tiny-tutor, greedy, prefilled)."""
    parts = []
    for i in range(10):
        body = json.dumps([{"role": "user", "content": f"Write z {i}."}])
        parts.append(f"```chat temperature=0 max_new_tokens=4096 prefill=zzzzzzzz\n{body}\n```")
    return "# Ten long\n\n" + "\n\n".join(parts) + "\n"


FIGURES = {"stop_reason": "length", "prompt_tokens": 9, "new_tokens": 4096, "ttft_s": 0.01,
           "tokens_per_s": 900.0, "seed": 42}  # fmt: skip


def upload(page, path, text):
    path.write_text(text)
    with page.expect_file_chooser() as chooser:
        page.click("#nb-upload")
    chooser.value.set_files(str(path))
    page.wait_for_selector(f"#nb-cell-{len(parse_lesson(text))}")


def probed_cpu(page, app: App, until) -> tuple[float, float, list, list]:
    """Until `until()`: the app's CPU per second, how long that took, and how long the page
    took to run a script and the app to answer a GET of /gradio_api/info (every half second;
    a GET of the page itself would cost the app 20 ms of CPU each, this one 2.5 ms)."""
    scripts, gets, began, spent = [], [], time.monotonic(), app.cpu_s()
    while not until():
        start = time.monotonic()
        page.evaluate("1")
        scripts.append(time.monotonic() - start)
        start = time.monotonic()
        with urllib.request.urlopen(app.url + "gradio_api/info", timeout=60) as response:
            response.read()
        gets.append(time.monotonic() - start)
        time.sleep(0.5)
    took = time.monotonic() - began
    return (app.cpu_s() - spent) / took, took, scripts, gets


def run_all(page, app: App, idle_s: float = 0.0):
    """Run all, probed (`probed_cpu`) until it ends; with `idle_s`, the app idling that long
    under the same probes first. Returns (idle CPU per second, `probed_cpu` of the run)."""
    ended = time.monotonic() + idle_s
    idle, *_ = probed_cpu(page, app, lambda: time.monotonic() > ended)
    page.click("#nb-run-all")
    page.wait_for_function("!document.querySelector('#nb-stop').disabled")
    stopped = "document.querySelector('#nb-stop').disabled"
    return idle, probed_cpu(page, app, lambda: page.evaluate(stopped))


STOPPED = (
    "document.querySelector('#nb-cell-11 .nb-figures')?.innerText.includes('stopped by you')"
    " && document.querySelector('#nb-note').innerText.includes('Stopped at cell 11.')"
)


def figures(page) -> list[str]:
    return page.locator("#nb-document .nb-figures").all_inner_texts()


# ---- a run step, in-process ---------------------------------------------------------------------


def test_a_run_step_sends_the_cells_it_changed_not_the_document(tiny_folder, settings):
    # Issue 34, item 11: each step of a run sent the whole document, which the page parsed and
    # walked again: with nine cells of 4,096 tokens done, 4.3 MB and 8 ms of the app's CPU a
    # step, and the page fell 80 s behind. A step now holds the running cell, with the one
    # that just ended (a quick cell is one step), and the document leaves out the outputs'
    # probabilities (98% of it here) until a visitor opens them.
    from playground.ui.notebook import cell_now, page, run_cells

    playground = Playground(RecordingEngine(tiny_folder, reply="word " * 20), settings)
    cells = [MarkdownCell("# T"), *[PromptCell("raw", f"Hello {i}") for i in range(10)]]
    notebook = Notebook.open("T", cells)
    tokens = [{"id": 1, "token": "zz", "logprob": -0.01}] * 4096
    done = CellOutput("zz" * 4096, FIGURES, probabilities=display.probability_view(tokens))
    for index in range(1, 10):
        notebook = notebook.with_output(index, done)
    document = json.dumps(page(playground, notebook, 0))
    assert "probs-text" not in document and len(document) < 9 * len(done.probabilities) / 10
    assert done.probabilities in cell_now(playground, notebook, 3, 0, probs=True)
    base = playground.params(settings.defaults())
    began = time.process_time()
    steps = list(run_cells(playground, notebook, 0, list(range(1, 11)), base, Control()))
    per_step = (time.process_time() - began) / len(steps)
    sent = [[index for index, _ in live["cells"]] for _, live, _ in steps]
    biggest = max(len(json.dumps(live)) for _, live, _ in steps)
    print(
        f"issue 34 item 11: a {len(document) / 1e6:.2f} MB document; {len(steps)} steps of "
        f"at most {biggest} bytes, {per_step * 1000:.1f} ms of CPU each with the engine's"
    )
    assert sent == [[1], *[[i - 1, i] for i in range(2, 11)], [10]]
    assert biggest < 5_000
    final, _, _ = steps[-1]
    assert all(final.outputs[i].figures for i in range(1, 11))  # every cell ran to its end


def test_a_stop_as_a_cell_ends_still_sends_its_end_and_says_where_it_stopped(tiny_folder, settings):
    from playground.ui.notebook import run_cells

    playground = Playground(RecordingEngine(tiny_folder), settings)
    notebook = Notebook.open("T", [PromptCell("raw", "A"), PromptCell("raw", "B")])
    base, control = playground.params(settings.defaults()), Control()
    steps = run_cells(playground, notebook, 0, [0, 1], base, control)
    _, first, _ = next(steps)  # cell 1 starts
    control.press_stop()  # its end, then the note, in one step
    rest = list(steps)
    assert [cell for cell, _ in first["cells"]] == [0] and len(rest) == 1
    final, live, note = rest[0]
    assert [cell for cell, _ in live["cells"]] == [0] and note.startswith("⏹ Stopped at cell 1")
    assert final.outputs[0].figures["stop_reason"] == "cancelled" and final.outputs[1] is None


# ---- the app over HTTP, in Chromium -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.browser
def test_a_100_cell_lesson_costs_the_app_a_few_percent_of_a_core_and_the_page_answers(
    browser, app, tmp_path, request
):
    # Issue 34, item 11: a 44,852-character, 100-cell lesson made the app use 1.36 s of CPU per
    # second while it ran, and the page stopped answering (a screenshot timed out at 30 s).
    # At tiny-tutor's own pace (about 1,000 tokens/s) the old code's page answered a script in
    # up to 6.3 s (16.4 s with 64 tokens a cell); this code's within 0.2 to 0.7 s. At 50
    # tokens/s (a fast CPU model) the old code cost the app 0.040 to 0.070 s of CPU a second
    # over its idle (here, 2 cores shared, with other work), this code 0.024 to 0.044.
    page = open_notebook(browser, app.url)
    try:
        lesson = hundred_cells(tokens=256)
        assert len(lesson) <= MAX_LESSON_CHARS and len(parse_lesson(lesson)) == MAX_CELLS
        upload(page, tmp_path / "fast.md", lesson)
        _, (running, took, scripts, gets) = run_all(page, app)
        print(
            f"issue 34 item 11: 50 cells of up to 256 tokens ran in {took:.1f} s; the app used "
            f"{running:.3f} s of CPU a second; the page answered a script within "
            f"{max(scripts):.2f} s, the app a GET within {max(gets):.2f} s"
        )
        assert len(figures(page)) == 50 and all("new tokens" in f for f in figures(page))
        assert max(scripts) < 1.0 and max(gets) < 1.0

        app.pace(0.02)  # 50 tokens/s
        upload(page, tmp_path / "paced.md", hundred_cells(tokens=8))
        idle, (running, took, scripts, gets) = run_all(page, app, idle_s=5)
        print(
            f"issue 34 item 11: 50 cells of 8 tokens ran in {took:.1f} s at 50 tokens/s; the "
            f"app used {running:.3f} s of CPU a second ({idle:.3f} idle); the page answered a "
            f"script within {max(scripts):.2f} s, the app a GET within {max(gets):.2f} s"
        )
        assert len(figures(page)) == 50 and all("8 new tokens" in f for f in figures(page))
        assert running - idle < 0.05  # a few percent of a core
        assert max(scripts) < 0.5 and max(gets) < 0.5
    finally:
        app.pace(0.0)
        screenshot(page, request)


@pytest.mark.slow
@pytest.mark.browser
def test_stop_lands_within_a_second_with_ten_cells_of_4096_tokens(browser, app, tmp_path, request):
    # Issue 34, item 11: ten cells of 4,096 tokens grew the document to 1.7 MB; the page's
    # answers took up to 26 s and Stop landed 56.6 s after the click. Here the old code's page
    # fell 80 s behind the app, and a Stop at the tenth cell found the run long over.
    page = open_notebook(browser, app.url)
    try:
        upload(page, tmp_path / "ten.md", ten_long_cells())
        page.click("#nb-run-all")
        page.wait_for_function(
            "document.querySelector('#nb-cell-11 .nb-out-text')?.innerText.length > 100",
            timeout=300_000,
        )  # the tenth cell runs: nine have written 4,096 tokens
        size = page.evaluate("document.querySelector('#nb-document').innerHTML.length")
        clock_presses(page, "#nb-stop", f"() => {STOPPED}")
        began = time.monotonic()
        page.click("#nb-stop", force=True)  # a person's click: no wait for a still page
        page.wait_for_function(STOPPED, polling=20)
        driven = time.monotonic() - began  # with Playwright's own dispatch of the click
        page.wait_for_function("document.querySelector('#nb-stop').disabled")
        (shown,) = press_waits(page)  # the engine ended, and the page says so
        print(
            f"issue 34 item 11: a {size / 1e6:.2f} MB document; Stop landed {shown:.2f} s "
            f"after the press, in the page's clock ({driven:.2f} s from Playwright's click)"
        )
        assert shown < 1.0
        assert all("4096 new tokens" in cell_text(page, n) for n in range(2, 11))
        assert "stopped by you" in cell_text(page, 11)
        assert "Stopped at cell 11." in page.inner_text("#nb-note")
        # An output's probabilities come when opened, every token of them.
        page.click("#nb-cell-2 .nb-probs summary")
        page.wait_for_selector("#nb-cell-2 .nb-probs[open] .probs-eot")
        assert page.locator("#nb-cell-2 .probs-text .tok").count() == 4096
        assert page.locator("#nb-cell-3 .nb-probs .tok").count() == 0  # not asked for
    finally:
        screenshot(page, request)
