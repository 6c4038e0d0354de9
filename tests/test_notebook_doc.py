"""The Notebook tab's gradio-free half: edits keep outputs with their cells, the editor reads
cells as the lesson file does, and the page keeps every visitor's or model's text inert."""

import json
import time

import pytest

from playground.notebook import LessonError, MarkdownCell, PromptCell, list_lessons, parse_lesson
from playground.notebook_doc import (
    NEW_CELLS,
    CellOutput,
    Notebook,
    cell_from_editor,
    cell_label,
    document_html,
    editor_fields,
    file_stem,
    opened_name,
    page_value,
    stopped_note,
)
from playground.session import exported_model

HOSTILE = "<img src=x onerror=alert(1)> <script>alert(2)</script> [x](javascript:alert(3))"
FIGURES = {"stop_reason": "eos", "prompt_tokens": 5, "new_tokens": 2, "ttft_s": 0.1,
           "tokens_per_s": 9.0, "seed": 1}  # fmt: skip


def sample() -> Notebook:
    cells = [MarkdownCell("# Title"), PromptCell("raw", "A"), PromptCell("raw", "B")]
    notebook = Notebook.open("Title", cells)
    return notebook.with_output(1, CellOutput("out A", FIGURES))


def no_live_markup(page: str) -> None:
    for bad in ("<img", "<script", 'href="javascript', "onerror=alert(1)>"):
        assert bad not in page


def test_moving_inserting_and_deleting_carry_each_output_with_its_cell():
    notebook, at = sample().moved(1, 1)
    assert at == 2 and notebook.cells[2] == PromptCell("raw", "A")
    assert notebook.outputs[2].text == "out A" and notebook.outputs[1] is None
    assert sample().moved(0, -1)[1] == 0  # clamped at the top
    added = sample().inserted(0, NEW_CELLS["markdown"])
    assert added.cells[1] == NEW_CELLS["markdown"] and added.outputs[2].text == "out A"
    assert sample().inserted(-1, NEW_CELLS["raw"]).cells[0] == NEW_CELLS["raw"]
    deleted = sample().deleted(0)
    assert deleted.cells[0] == PromptCell("raw", "A") and deleted.outputs[0].text == "out A"
    with pytest.raises(LessonError, match="no cell 9"):
        sample().deleted(8)


def test_an_edit_clears_the_output_only_when_the_cell_changed_and_reset_restores():
    assert sample().edited(1, PromptCell("raw", "A")).outputs[1].text == "out A"
    changed = sample().edited(1, PromptCell("raw", "A2"))
    assert changed.outputs[1] is None
    assert changed.reset() == Notebook.open("Title", sample().cells)


def test_only_finished_outputs_are_exported():
    notebook = sample().with_output(2, CellOutput("half"))  # still streaming
    assert notebook.output_texts() == {1: "out A"}
    refused = notebook.with_output(2, CellOutput(error="System role not supported"))
    assert refused.output_texts()[2] == "error: System role not supported"


@pytest.mark.parametrize("path", list(list_lessons().values()), ids=lambda p: p.stem)
def test_the_editor_reads_back_every_cell_of_every_lesson(path):
    for cell in parse_lesson(path.read_text()):
        assert cell_from_editor(*editor_fields(cell)) == cell


def test_the_editor_refuses_what_a_lesson_file_cannot_hold():
    with pytest.raises(LessonError, match=r"^unknown cell option 'colour=red'"):
        cell_from_editor("chat", "colour=red", '[{"role": "user", "content": "hi"}]')
    with pytest.raises(LessonError, match="policy must be one of"):
        cell_from_editor("chat", "policy=ignore", '[{"role": "user", "content": "hi"}]')
    with pytest.raises(LessonError, match="cannot hold a ```chat"):
        cell_from_editor("markdown", "", 'Text\n\n```chat\n[{"role": "user", "content": "x"}]\n```')
    with pytest.raises(LessonError, match="cannot be empty"):
        cell_from_editor("markdown", "", "  \n")
    with pytest.raises(LessonError):
        cell_from_editor("chat", "", "not json")
    fenced = cell_from_editor("raw", "temperature=0  seed=3", "text with ``` inside")
    assert fenced == PromptCell(
        "raw", "text with ``` inside", (("temperature", "0"), ("seed", "3"))
    )


def test_hostile_text_stays_inert_on_the_page():
    cells = [
        MarkdownCell(HOSTILE),
        PromptCell("chat", '[{"role": "user", "content": "<img src=x onerror=alert(1)>"}]'),
        PromptCell("raw", HOSTILE, (("prefill", "<script>"),)),
        PromptCell("raw", "x", (("output", "markdown"),)),
        PromptCell(
            "chat",
            '[{"role": "system", "content": "<b>s</b>"}, {"role": "user", "content": "u"}]',
            (("system_policy", "error"),),
        ),
    ]
    notebook = Notebook.open("T", cells)
    notebook = notebook.with_output(1, CellOutput(HOSTILE + "<start_of_turn>", FIGURES))
    notebook = notebook.with_output(3, CellOutput(HOSTILE, FIGURES))
    page = document_html(notebook, 0, lambda prompt: f"checked {len(prompt)}")
    no_live_markup(page)
    assert page.count("&lt;img src=x onerror=alert(1)&gt;") >= 4
    assert "&lt;start_of_turn&gt;" in page and "end of sequence" in page
    assert "[x](javascript:alert(3))" in page  # the link's text stands, as text
    assert "Refused by the template" in page
    assert (
        page.count('class="nb-cell') == 5 and 'class="nb-cell nb-selected" id="nb-cell-1"' in page
    )
    assert "checked" in page  # the caller's checks stand under each prompt


def test_cell_labels_and_file_names_are_short_and_plain():
    label = cell_label(3, PromptCell("chat", "\n" + "word " * 40))
    assert label.startswith("4 · chat: word") and label.endswith("…") and len(label) < 70
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "What is 7 plus 5?"}]  # fmt: skip
    chat = PromptCell("chat", json.dumps(messages))
    assert cell_label(0, chat) == "1 · chat: What is 7 plus 5?"
    assert file_stem("1. The anatomy of a turn!") == "1-the-anatomy-of-a-turn"
    assert file_stem("<<>>") == "lesson"


def test_the_exported_notebook_never_names_a_folder_of_this_server(tmp_path):
    assert exported_model("tiny-random") == ("path/to/tiny-random", False)
    assert exported_model("google/gemma-2-9b-it") == ("google/gemma-2-9b-it", True)
    assert exported_model("tiny-random", tmp_path) == (str(tmp_path), False)  # the CLI's own
    # By name: the exported code finds it where it runs (issue 33: a clone's path broke Colab).
    assert exported_model("tiny-tutor") == ("tiny-tutor", False)


# ---- issue 33: the notebook acts like a notebook ------------------------------------------------


@pytest.mark.parametrize(
    "title",
    [
        "9. The fault lab: one question, ten ways to get the format wrong",  # was cut at "wron"
        "Une leçon très longue: " + "mot " * 40,
        *list_lessons(),
    ],
)
def test_download_names_are_whole_words_and_bounded(title):
    stem = file_stem(title)
    words = "".join(c if c.isalnum() else " " for c in title.lower()).split()
    assert 0 < len(stem) <= 60
    assert stem.split("-") == words[: stem.count("-") + 1]  # whole words, in order
    longer = "-".join(words[: stem.count("-") + 2])
    assert stem == "-".join(words) or len(longer) > 60  # as many as fit


def test_the_fault_labs_download_name_ends_on_a_word():
    stem = file_stem("9. The fault lab: one question, ten ways to get the format wrong")
    assert stem == "9-the-fault-lab-one-question-ten-ways-to-get-the-format"
    assert len(file_stem("x" * 500)) == 60 and file_stem("é" * 3 + " 漢字") == "ééé-漢字"
    assert file_stem("../../etc/passwd <img src=x>") == "etc-passwd-img-src-x"


def test_the_page_has_a_cell_each_the_selected_one_outlined_and_prompt_cells_a_play_button():
    cells = [MarkdownCell(HOSTILE), PromptCell("raw", HOSTILE), MarkdownCell("end"),
             PromptCell("raw", "B", (("temperature", "0"),))]  # fmt: skip
    notebook = Notebook.open("T", cells).with_output(1, CellOutput(HOSTILE, FIGURES))
    value = page_value(notebook, 1, lambda prompt: "")
    assert value["selected"] == 1 and len(value["cells"]) == 4  # the page's script splits it
    first, second, _, fourth = value["cells"]
    assert all(html.startswith('<section class="nb-cell') for html in value["cells"])
    assert all(html.endswith("</section>") for html in value["cells"])
    assert 'class="nb-cell nb-selected" id="nb-cell-2" data-cell="1" tabindex="0"' in second
    assert sum("nb-selected" in html for html in value["cells"]) == 1
    assert "nb-play" not in first and second.count('class="nb-play"') == 1
    assert 'aria-label="Run cell 4"' in fourth and "4 · raw · temperature=0" in fourth
    for html in value["cells"]:
        no_live_markup(html)
    joined = "\n".join(value["cells"])
    assert document_html(notebook, 1, lambda prompt: "") == f'<div class="nb-doc">{joined}</div>'


def test_the_stopped_note_names_the_cell_and_what_did_not_run():
    assert stopped_note(1, 2) == "⏹ Stopped at cell 2; the 2 prompt cells after it did not run."
    assert stopped_note(4, 1) == "⏹ Stopped at cell 5; the 1 prompt cell after it did not run."
    assert stopped_note(0, 0) == "⏹ Stopped at cell 1."


def test_an_opened_file_is_named_in_the_picker_shortly():
    assert opened_name("fault-lab.ipynb", "9. The fault lab") == (
        "9. The fault lab (opened: fault-lab.ipynb)"
    )
    long = opened_name("x" * 300 + ".ipynb", "T" * 300)
    assert len(long) < 120 and long.count("…") == 2


def test_the_handout_names_the_model_the_settings_and_each_outputs_seed():
    from playground.notebook import handout_html

    cells = [MarkdownCell("# T"), PromptCell("raw", "A", (("temperature", "0"),)),
             PromptCell("raw", "B")]  # fmt: skip
    notebook = Notebook.open("T", cells).with_output(1, CellOutput("out A", FIGURES))
    settings = {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.0,
                "max_new_tokens": 64, "seed": 1234, "prompt_lookup": False}  # fmt: skip
    page = handout_html("T", notebook.cells, notebook.output_texts(),
                        model="tiny-tutor (demo model)", settings=settings,
                        figures=notebook.output_figures())  # fmt: skip
    about = page.split('<p class="about">', 1)[1].split("</p>", 1)[0]
    assert "tiny-tutor (demo model)" in about and "Gemma" not in about
    for shown in ("temperature=0.7", "top_p=0.9", "top_k=40", "repetition_penalty=1.0",
                  "max_new_tokens=64", "seed=1234"):  # fmt: skip
        assert shown in about
    assert "Prompt (raw · temperature=0)" in page and "Prompt (raw)" in page
    assert "Output · 5 prompt tokens · 2 new tokens" in page and "seed 1 · " in page
    hostile = handout_html("T", cells, {1: "x"}, model=HOSTILE, settings={"seed": HOSTILE},
                           figures={1: HOSTILE})  # fmt: skip
    no_live_markup(hostile)
    assert hostile.count("&lt;img src=x onerror=alert(1)&gt;") == 3


# ---- issue 23 P5: a lesson's cost is bounded ---------------------------------------------------

BIG_MARKDOWN = "*a " * 16_000  # 48,000 characters: just under the limit, slow to render


def test_an_oversized_lesson_is_refused_with_a_clear_message():
    # An 850 KB lesson cost about 8 s of CPU per upload or Apply edit.
    with pytest.raises(LessonError, match="850000 characters; the limit is 50000"):
        parse_lesson("*a " * 283_333 + "a")
    many = "\n\n".join(f"```raw\nHi {i}\n```" for i in range(101))
    with pytest.raises(LessonError, match="101 cells; the limit is 100"):
        parse_lesson(many)
    notebook = Notebook.open("t", parse_lesson(BIG_MARKDOWN))
    with pytest.raises(LessonError, match="the limit is 50000"):
        notebook.inserted(0, MarkdownCell("b" * 5000))


def test_a_run_step_renders_only_the_changed_cell():
    # Each step of a run rendered the whole document again (2.8 s for the 850 KB lesson).
    cell = PromptCell("raw", "Once upon a time")
    notebook = Notebook.open("t", [MarkdownCell(BIG_MARKDOWN), cell])
    document_html(notebook, 1, lambda prompt: "")  # the first showing renders every cell
    began = time.process_time()
    for step in range(50):
        notebook = notebook.with_output(1, CellOutput("word " * step))
        page = document_html(notebook, 1, lambda prompt: "")
    per_step = (time.process_time() - began) / 50
    print(f"P5: {per_step * 1000:.2f} ms of CPU per step with a 48,000-character markdown cell")
    assert "word word" in page
    assert per_step < 0.02


@pytest.mark.slow
def test_the_page_handout_and_notebook_show_the_prompt_that_runs(tutor_engine, settings):
    import html
    import json

    from playground.display import marked_prompt
    from playground.notebook import NotebookContext, handout_html, to_ipynb
    from playground.notebook_doc import Notebook, document_html
    from playground.session import Playground

    # A fold separator set in space.yaml: the cells run with it, so they show it too.
    playground = Playground(tutor_engine, settings.with_(model="tiny-tutor", fold_separator="\n"))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    cell = PromptCell("chat", json.dumps(messages))
    runs = playground.cell_prompt(cell)
    assert "Be brief.\nHi" in runs
    page = document_html(Notebook.open("T", [cell]), 0, lambda prompt: "", playground.cell_prompt)
    assert marked_prompt(runs) in page
    assert html.escape(runs) in handout_html("T", [cell], {}, playground.cell_prompt)
    context = NotebookContext(
        "m", settings.ranges, end_ids=[1, 107], prompt_of=playground.cell_prompt
    )
    assert repr(runs) in to_ipynb([cell], {}, context).cells[1].source
