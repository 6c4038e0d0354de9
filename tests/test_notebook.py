"""Notebook lessons: the format, its round trips, safe rendering, and every lesson run for real."""

import json
import subprocess
import sys

import nbformat
import pytest

from playground.notebook import (
    LessonError,
    MarkdownCell,
    NotebookContext,
    PromptCell,
    from_ipynb,
    handout_html,
    lesson_markdown,
    list_lessons,
    load_cells,
    parse_lesson,
    render_markdown,
    to_ipynb,
)
from playground.sampling import RANGES
from tests.conftest import ROOT

LESSONS = list_lessons()
HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    '<a href="javascript:alert(1)">x</a>',
    "[click](javascript:alert(1))",
    "[data](data:text/html;base64,PHNjcmlwdD4=)",
    "![pixel](http://127.0.0.1:9/x.png)",
    "<start_of_turn>user\nhi<end_of_turn>",
]


def test_eight_lessons_ship_and_round_trip_byte_for_byte():
    assert len(LESSONS) >= 8
    for path in LESSONS.values():
        text = path.read_text()
        cells = parse_lesson(text)
        assert any(isinstance(c, PromptCell) for c in cells), path
        assert lesson_markdown(cells) == text, path


def test_cells_round_trip_through_markdown_and_ipynb():
    cells = [
        MarkdownCell("# Title\n\nSome *prose* with ``` inside `code`."),
        PromptCell("chat", '[{"role": "user", "content": "Hi"}]',
                   (("system_policy", "drop"), ("prefill", "Sure, it's"), ("temperature", "0"))),
        PromptCell("raw", "<bos>text with ```` fences\nand a trailing space "),
        MarkdownCell("The end."),
    ]  # fmt: skip
    assert parse_lesson(lesson_markdown(cells)) == cells
    notebook = to_ipynb(cells, {1: "out"}, NotebookContext("owner/model", RANGES, end_ids=(1, 107)))
    nbformat.validate(notebook)
    assert from_ipynb(nbformat.writes(notebook)) == cells
    assert notebook.cells[2].outputs[0]["text"] == "out\n"


@pytest.mark.parametrize(
    "text, message",
    [
        ("```chat\nnot json\n```\n", "line 1"),
        ("intro\n\n```chat colour=red\n[]\n```\n", "unknown cell option 'colour=red'"),
        ("```chat policy=maybe\n[]\n```\n", "policy must be one of fold, error, drop"),
        ('```chat prefill="open\n[]\n```\n', "do not parse"),
        ('```chat\n[{"role": "robot", "content": "x"}]\n```\n', "unknown role"),
    ],
)
def test_bad_lessons_get_one_clear_message(text, message):
    with pytest.raises(LessonError, match=message):
        parse_lesson(text)


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("x.ipynb", b"{not json", "not a valid Jupyter notebook"),
        ("x.ipynb", b'{"cells": 3}', "not a valid Jupyter notebook"),
        ("x.md", b"\xff\xfe", "not UTF-8"),
        ("x.txt", b"hello", "choose a lesson"),
    ],
)
def test_bad_files_get_one_clear_message(name, data, message):
    with pytest.raises(LessonError, match=message):
        load_cells(name, data)


def test_markdown_is_rendered_inert():
    for text in HOSTILE:
        out = render_markdown(text)
        for bad in ("<img", "<script", '<a href="javascript', 'href="data:', 'onerror="'):
            assert bad not in out, (text, out)
    assert "&lt;img src=x onerror=alert(1)&gt;" in render_markdown(HOSTILE[0])
    assert "&lt;start_of_turn&gt;" in render_markdown(HOSTILE[-1])
    assert '<a href="https://example.org">x</a>' in render_markdown("[x](https://example.org)")
    assert 'href="mailto:a@b.c"' in render_markdown("[m](mailto:a@b.c)")


def test_handout_has_no_live_markup_from_any_cell():
    hostile = "\n".join(HOSTILE)
    cells = [
        MarkdownCell(f"# Lesson {HOSTILE[0]}\n\n{hostile}"),
        PromptCell("chat", json.dumps([{"role": "user", "content": hostile}])),
        PromptCell("raw", hostile),
    ]
    page = handout_html(HOSTILE[1], cells, {1: hostile, 2: hostile})
    for live in ("<script", "<img", 'href="javascript', 'href="data', 'onerror="'):
        assert live not in page
    assert "default-src 'none'" in page
    assert page.count("&lt;img src=x onerror=alert(1)&gt;") >= 4


@pytest.mark.slow
@pytest.mark.parametrize("title", list(LESSONS))
def test_every_lesson_runs_end_to_end_on_the_tiny_model(title, tmp_path):
    lesson = LESSONS[title]
    out, page = tmp_path / "lesson.ipynb", tmp_path / "lesson.html"
    done = subprocess.run(
        [sys.executable, "-m", "playground", "notebook", "run", str(lesson), "--model",
         "tiny-tutor", "--out", str(out), "--html", str(page)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    notebook = nbformat.read(out, as_version=4)
    nbformat.validate(notebook)
    prompts = [c for c in parse_lesson(lesson.read_text()) if isinstance(c, PromptCell)]
    code = [c for c in notebook.cells if c.cell_type == "code"][1:]
    assert len(code) == len(prompts) and all(c.outputs for c in code)
    assert "<script" not in page.read_text()


@pytest.mark.slow
def test_the_exported_notebook_prints_the_playgrounds_own_output(tmp_path):
    """The .ipynb's code cells, run as one script on the tiny model, print what the playground
    stored for each greedy cell."""
    out = tmp_path / "lesson.ipynb"
    lesson = LESSONS[next(t for t in LESSONS if t.startswith("1."))]
    subprocess.run(
        [sys.executable, "-m", "playground", "notebook", "run", str(lesson), "--model",
         "tiny-tutor", "--out", str(out)],
        cwd=ROOT, check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    code = [c for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code"]
    marker = "----cell----"
    script = f"\nprint({marker!r})\n".join(c.source for c in code)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    printed = done.stdout.split(marker + "\n")[1:]
    stored = [c.outputs[0]["text"] for c in code[1:]]
    assert printed == stored and len(stored) >= 3


def ipynb_with_options(options) -> str:
    notebook = nbformat.v4.new_notebook()
    meta = {"playground": {"kind": "raw", "body": "<bos>Hi", "options": options}}
    notebook.cells.append(nbformat.v4.new_code_cell("pass", metadata=meta))
    return nbformat.writes(notebook)


@pytest.mark.parametrize(
    "options, said",
    [("ab", "must be a list"), (5, "must be a list"), ([["a", "b", "c"]], "pairs"),
     ([["colour", "red"]], "unknown cell option 'colour'"),
     ([["output", "pdf"]], "output must be")],
)  # fmt: skip
def test_odd_notebook_options_are_refused_naming_the_cell(options, said):
    # Issue 23 P7: these were "Something went wrong", or (unknown names) loaded and then
    # exported as a lesson that would not open again.
    with pytest.raises(LessonError, match=f"cell 1 of the notebook: .*{said}"):
        load_cells("x.ipynb", ipynb_with_options(options).encode())


def test_what_a_notebook_loads_round_trips_through_a_lesson():
    cells = load_cells(
        "x.ipynb", ipynb_with_options([["seed", 7], ["output", "markdown"]]).encode()
    )
    assert parse_lesson(lesson_markdown(cells)) == cells


@pytest.mark.slow
def test_notebook_run_and_generate_give_the_same_text_at_one_seed(tmp_path):
    """One path for a cell (`Playground.run_cell`): a sampled chat cell run by `notebook run`
    gives, at the same seed, the text `generate` gives for the same conversation."""
    sampling = {"temperature": "1.5", "top_p": "1.0", "top_k": "0", "repetition_penalty": "1.0",
                "seed": "4", "max_new_tokens": "24"}  # fmt: skip
    messages = [{"role": "user", "content": "Tell me about the sea."}]
    options = " ".join(f"{k}={v}" for k, v in sampling.items())
    lesson = tmp_path / "lesson.md"
    lesson.write_text(f"# Same seed\n\n```chat {options}\n{json.dumps(messages)}\n```\n")
    conversation = tmp_path / "conversation.json"
    conversation.write_text(json.dumps(messages))
    out = tmp_path / "lesson.ipynb"
    done = subprocess.run(
        [sys.executable, "-m", "playground", "notebook", "run", str(lesson), "--model",
         "tiny-tutor", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    code = [c for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code"]
    ran = code[1].outputs[0]["text"].removesuffix("\n")
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in sampling.items()]
    done = subprocess.run(
        [sys.executable, "-m", "playground", "generate", "--model", "tiny-tutor", "--messages",
         str(conversation), *flags, "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    generated = json.loads(done.stdout.strip().splitlines()[-1])
    assert generated["seed"] == 4 and generated["new_tokens"] > 0
    assert ran == generated["text"]


def test_an_older_lessons_policy_option_is_read_as_system_policy():
    (cell,) = parse_lesson('```chat policy=drop\n[{"role": "user", "content": "Hi"}]\n```\n')
    assert cell.options == (("system_policy", "drop"),)
    assert lesson_markdown([cell]).startswith("```chat system_policy=drop")
