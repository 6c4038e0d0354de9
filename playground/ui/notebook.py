"""The Notebook tab: a lesson as one rendered document, an editor for its selected cell.

Owns: the `NotebookTab` components, picking a shipped lesson (also from the page's `?lesson=`
link), Reset, Upload (.md / .ipynb, then named in the lesson picker) and the three downloads
(lesson, Jupyter notebook, HTML handout, written to a fresh temp folder per request), the cell
editor (edit, add, delete, move), open under the selected cell, the page's own script
(`CELL_EVENTS`: it draws the cells that changed, one at a time; a click selects a cell, its ▶
or Shift+Enter runs it; an output's probabilities come when opened), and running one cell or
all of them in the engine's one queue, each step sending only the cells it changed
(`LIVE_CELL`), with Stop (which says at the top where it stopped).
Does not own: the lesson format, running a cell's prompt and the exports (`notebook`), the
edits and the page's HTML (`notebook_doc`), a prompt's checks (`Playground.raw_checks`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache, partial, wraps
from itertools import chain, count
from pathlib import Path

import gradio as gr
import nbformat

from playground import display
from playground import notebook as nb
from playground.errors import UserError
from playground.notebook_doc import (
    MARKDOWN,
    NEW_CELLS,
    CellOutput,
    Notebook,
    cell_from_editor,
    cell_html,
    cell_label,
    editor_fields,
    file_stem,
    opened_name,
    page_value,
    stopped_note,
)
from playground.sampling import ParamError, SamplingParams
from playground.session import Control, Playground, Reply, exported_model, throttle
from playground.ui.common import (
    PRIVATE,
    refuse,
    run_with_stop,
    user_errors,
    wire_stop,
    write_download,
)
from playground.ui.controls import Controls

KIND_CHOICES = [MARKDOWN, *nb.KINDS]

# The page's own script, run by Gradio 6's gr.HTML `js_on_load` (the only client code whose
# `trigger` carries data, the cell's index, to a Python handler as `gr.EventData`).
# It draws the cells (issue 34): the value holds each cell's HTML and the selected index
# (`notebook_doc.page_value`); a cell whose HTML changed is parsed alone and put in place of its
# old node, the others are at most moved (up to the selected cell above the editor, the rest
# below it). `DOCUMENT` renders the same two empty parts whatever the value, so Gradio's own
# patch (`we`/`Te` in its HTML component), which parsed and walked the whole document at every
# change, leaves them to this script: with it, ten cells of 4,096 tokens (4.3 MB) put the page
# 80 s behind the server, and a screenshot took up to 47 s. While a run streams, the running
# cell comes through `LIVE_CELL` into `drawCell` and the document's value is left alone:
# Gradio's page makes several passes over a component's whole value at each change of it
# (JSON.stringify to compare, a deep snapshot), which, even with the cells drawn one at a
# time, kept its main thread busy 36 s in 36 s (27 s of script) at the same size.
# A click on a cell picks it, its ▶ (or Shift+Enter on it, or anywhere in the editor but the
# source box, whose own Shift+Enter is Gradio's submit) runs it; an output's Probabilities,
# opened, are asked for (`notebook_doc.output_html` says why the page holds them only then).
# Once the picked cell shows selected it is put back where it was on screen (the editor,
# opening above it, moved it) and given the focus back (its node may have been redrawn).
# Text being selected is not a pick.
CELL_EVENTS = """
const [above, below] = element.querySelectorAll('.nb-doc');
const shown = [];
const nodes = [];
const drawCell = (i, html) => {
  if (shown[i] === html) return;
  const parsed = document.createElement('template');
  parsed.innerHTML = html;
  const node = parsed.content.firstElementChild;
  const focused = nodes[i]?.contains(document.activeElement) && document.activeElement;
  nodes[i]?.replaceWith(node);
  nodes[i] = node;
  shown[i] = html;
  if (focused) {  // the focus stays where it was: Shift+Enter runs the cell again
    const again = ['.nb-play', 'summary'].find((part) => focused.matches(part));
    (again ? node.querySelector(again) : node)?.focus({preventScroll: true});
  }
};
const root = element.closest('#nb-document') ?? {};  // where `LIVE_CELL` finds drawCell
root.drawCell = (i, html) => i < nodes.length && drawCell(i, html);
const draw = () => {
  const cells = props.value?.cells ?? [];
  const selected = props.value?.selected ?? 0;
  cells.forEach((html, i) => drawCell(i, html));
  nodes.splice(cells.length).forEach((node) => node.remove());
  shown.length = cells.length;
  let last = null;
  nodes.forEach((node, i) => {
    const part = i <= selected ? above : below;
    const next = last === null || i === selected + 1 ? part.firstChild : last.nextSibling;
    if (node !== next) part.insertBefore(node, next);
    last = node;
  });
};
const cellOf = (node) => node?.closest?.('.nb-cell');
let kept = null;
const pick = (cell, run) => {
  const index = Number(cell.dataset.cell);
  if (!cell.classList.contains('nb-selected')) {
    const focus = document.activeElement === cell;
    kept = {index, top: cell.getBoundingClientRect().top, focus};
  }
  trigger(run ? 'play' : 'pick', {cell: index});
};
element.addEventListener('click', (event) => {
  const cell = cellOf(event.target);
  if (!cell) return;
  const play = event.target.closest('.nb-play');
  if (!play && (event.target.closest('a, summary') || String(window.getSelection()))) return;
  pick(cell, Boolean(play));
});
element.addEventListener('toggle', (event) => {
  const details = event.target;
  if (!details.matches('.nb-probs') || !details.open || details.querySelector('.probs')) return;
  trigger('probs', {cell: Number(cellOf(details).dataset.cell)});
}, true);
element.addEventListener('keydown', (event) => {
  if (event.key !== 'Enter' || !event.shiftKey) return;
  if (event.target.closest('textarea, #nb-cell')) return;
  const cell = cellOf(event.target) || element.querySelector('.nb-cell.nb-selected');
  if (!cell) return;
  event.preventDefault();
  pick(cell, true);
});
watch('value', () => {
  draw();
  const cell = element.querySelector('.nb-cell.nb-selected');
  if (!kept || Number(cell?.dataset.cell) !== kept.index) return;
  window.scrollBy(0, cell.getBoundingClientRect().top - kept.top);
  const editor = document.getElementById('nb-editor')?.getBoundingClientRect();
  if (editor && editor.top > window.innerHeight - 120) {
    window.scrollBy(0, editor.top - window.innerHeight / 2);
  }
  if (kept.focus) cell.focus({preventScroll: true});
  kept = null;
});
draw();
"""
# The document: the cells up to the selected one, the editor (its children), the rest; the
# same text whatever the value (see `CELL_EVENTS`).
DOCUMENT = '<div class="nb-doc"></div>@children<div class="nb-doc"></div>'
# The cells a run changed since its last step, {"cells": [[index, html], ...], "step": n} (a
# cell with its probabilities, too, once opened): a component of its own, hidden, whose script
# hands them to the document's `drawCell`, so that a step costs the page the running cell (and
# the one that just ended), whatever the lesson's size. `step` makes every value new: the
# script runs on a change of value.
LIVE_CELL = """
watch('value', () => {
  const drawCell = document.getElementById('nb-document')?.drawCell;
  for (const [index, html] of props.value?.cells ?? []) drawCell?.(index, html);
});
"""
NO_LIVE_CELL = {"cells": [], "step": -1}
STEPS = count()

CSS = """
.nb-doc { display: flex; flex-direction: column; gap: 10px; margin-bottom: 10px; }
.nb-cell { border: 1px solid #e5e7eb; border-radius: 8px; padding: 6px 12px; cursor: pointer; }
.nb-cell.nb-selected { border: 2px solid #6366f1; border-radius: 8px 8px 0 0; cursor: auto; }
.nb-cell:focus-visible { outline: 2px solid #a5b4fc; outline-offset: 2px; }
.nb-head { font-size: 0.8em; color: #6b7280; margin: 0 0 4px; font-family: monospace; }
.nb-play { border: 1px solid #c7d2fe; background: #eef2ff; color: #4338ca; border-radius: 4px;
           padding: 0 8px; margin-right: 4px; cursor: pointer; font-size: 1.1em; }
.nb-play:hover { background: #e0e7ff; }
#nb-editor { border: 2px solid #6366f1; border-top: 1px dashed #c7d2fe;
             border-radius: 0 0 8px 8px; padding: 8px; margin: -10px 0 10px; }
.nb-cell .prompt { background: #f6f8fa; border-radius: 6px; padding: 8px; margin: 0; }
.nb-checks { font-size: 0.85em; color: #374151; }
.nb-out { border-left: 3px solid #f59e0b; padding-left: 8px; margin-top: 6px; }
.nb-figures { font-size: 0.8em; color: #6b7280; margin: 0; }
.nb-out-text { white-space: pre-wrap; word-break: break-word; background: #fffbeb;
               padding: 8px; border-radius: 6px; margin: 2px 0 0; font-size: 0.9em;
               max-height: 24em; overflow-y: auto; }
.nb-refused, .nb-error { color: #b91c1c; }
#nb-note:empty, #nb-live { display: none; }
#nb-note { color: #b91c1c; }
"""


@dataclass
class NotebookTab:
    control: gr.State
    notebook: gr.State
    lesson: gr.Dropdown
    reset: gr.Button
    upload: gr.UploadButton
    downloads: list[gr.DownloadButton]  # lesson .md, .ipynb, .html
    run_all: gr.Button
    stop: gr.Button
    note: gr.Markdown
    live: gr.HTML  # the running cell (`LIVE_CELL`)
    document: gr.HTML  # `page_value`: the cells' HTML; the editor opens under the selected one
    cell: gr.Dropdown  # the selected cell's index
    kind: gr.Radio
    options: gr.Textbox
    source: gr.Textbox
    apply: gr.Button
    run_cell: gr.Button
    up: gr.Button
    down: gr.Button
    delete: gr.Button
    new_kind: gr.Radio
    add: gr.Button

    @property
    def view(self) -> list:
        """What a change of cells updates (see `show`)."""
        return [self.notebook, self.cell, self.document, self.kind, self.options, self.source]

    @property
    def editor(self) -> set:
        return {self.notebook, self.control, self.cell, self.kind, self.options, self.source}


def shipped_lessons() -> dict[str, Path]:
    return nb.list_lessons()


def open_lesson(title: str) -> Notebook:
    lessons = shipped_lessons()
    if title not in lessons:
        raise nb.LessonError(f"There is no lesson called {title!r}.")
    return Notebook.open(title, nb.parse_lesson(lessons[title].read_text(encoding="utf-8")))


def build_notebook(playground: Playground) -> NotebookTab:
    lessons = list(shipped_lessons())
    first = open_lesson(lessons[0])
    gr.Markdown(
        "Lessons on Gemma-2's chat format, in cells you can edit and run. Prompts show their "
        "control tokens marked; outputs show exactly what the model wrote."
    )
    with gr.Row(equal_height=True):
        lesson = gr.Dropdown(lessons, value=lessons[0], label="Lesson", elem_id="nb-lesson",
                             scale=3, min_width=300)  # fmt: skip
        reset = gr.Button("Reset to the original", elem_id="nb-reset", scale=1)
        upload = gr.UploadButton("Open .md / .ipynb", file_types=[".md", ".ipynb"],
                                 type="filepath", elem_id="nb-upload", scale=1)  # fmt: skip
    with gr.Row():
        run_all = gr.Button("▶ Run all", variant="primary", elem_id="nb-run-all")
        stop = gr.Button("⏹ Stop", variant="stop", interactive=False, elem_id="nb-stop")
        downloads = [
            gr.DownloadButton(f"Download {what}", elem_id=f"nb-download-{ext}")
            for what, ext in (("lesson (.md)", "md"), (".ipynb", "ipynb"), ("handout", "html"))
        ]
    note = gr.Markdown(elem_id="nb-note")
    live = gr.HTML(NO_LIVE_CELL, html_template=" ", js_on_load=LIVE_CELL, elem_id="nb-live")
    document = gr.HTML(
        page(playground, first, 0), html_template=DOCUMENT, js_on_load=CELL_EVENTS,
        elem_id="nb-document",
    )  # fmt: skip
    with document, gr.Column(elem_id="nb-editor"):
        kind, options, source = editor_fields(first.cells[0])
        with gr.Row():
            cell = gr.Dropdown(cell_choices(first), value=0, label="Cell", elem_id="nb-cell",
                               scale=3, min_width=200)  # fmt: skip
            kind = gr.Radio(KIND_CHOICES, value=kind, label="Kind", elem_id="nb-kind",
                            scale=2, min_width=200)  # fmt: skip
        options = gr.Textbox(options, label="Options (e.g. temperature=0 system_policy=drop)",
                             elem_id="nb-options", max_lines=1)  # fmt: skip
        source = gr.Textbox(source, label="Source (markdown, JSON messages or raw text); "
                            "Shift+Enter runs the cell", lines=8, max_lines=24,
                            elem_id="nb-source")  # fmt: skip
        with gr.Row():
            apply = gr.Button("Apply edit", elem_id="nb-apply", min_width=100)
            run_cell = gr.Button("▶ Run cell", variant="primary", elem_id="nb-run-cell",
                                 min_width=100)  # fmt: skip
            up = gr.Button("↑ Up", size="sm", elem_id="nb-up", min_width=60)
            down = gr.Button("↓ Down", size="sm", elem_id="nb-down", min_width=60)
            delete = gr.Button("Delete", size="sm", variant="stop", elem_id="nb-delete",
                               min_width=60)  # fmt: skip
        with gr.Row(equal_height=True):
            new_kind = gr.Radio(KIND_CHOICES, value="chat", label="New cell",
                                elem_id="nb-new-kind", scale=3)  # fmt: skip
            add = gr.Button("+ Add it after this cell", size="sm", elem_id="nb-add", scale=1)
    return NotebookTab(gr.State(Control()), gr.State(first), lesson, reset, upload, downloads,
                       run_all, stop, note, live, document, cell, kind, options, source, apply,
                       run_cell, up, down, delete, new_kind, add)  # fmt: skip


def cell_choices(notebook: Notebook) -> list[tuple[str, int]]:
    return [(cell_label(i, c), i) for i, c in enumerate(notebook.cells)]


def cell_run_params(cell: nb.PromptCell, base: SamplingParams, playground: Playground):
    """The sidebar's sampling (with its stop strings and seed), overridden by the cell's own."""
    values = base.values()
    ranges = playground.settings.ranges
    return nb.cell_params(cell, ranges, values).with_(stop=base.stop)


def run_one(
    playground: Playground, notebook: Notebook, index: int, base: SamplingParams, control: Control
) -> Iterator[Notebook]:
    """Stream cell `index`'s output into the notebook: at once the cell with no output
    ("running…"), then what the engine writes, a few steps a second (`throttle`, from that
    first step on: a quick cell is two steps, its start and its end), and always the end. A
    refusal becomes the cell's output."""
    cell = notebook.cell(index)
    try:
        params = cell_run_params(cell, base, playground)
        replies = playground.run_cell(cell, params, control)  # a refusal raises here, at once
        outputs = chain([CellOutput()], (cell_output(reply, playground) for reply in replies))
        for output in throttle(outputs):
            yield (notebook := notebook.with_output(index, output))
    except UserError as error:
        yield notebook.with_output(index, CellOutput(error=str(error)))


def cell_output(reply: Reply, playground: Playground) -> CellOutput:
    probs = display.probability_view(reply.tokens or [], playground.engine.probability_note)
    return CellOutput(reply.text, reply.figures, probabilities=probs, note=reply.line)


@lru_cache(maxsize=512)
def prompt_checks(playground: Playground, prompt: str) -> str:
    """A prompt's token count and checks, as the Raw prompt tab shows them (cached: every step
    of a run renders its cell again, and every edit the whole page)."""
    return nb.render_markdown(playground.raw_checks(prompt))


def page(playground: Playground, notebook: Notebook, selected: int) -> dict:
    """The document's value (`page_value`)."""
    return page_value(
        notebook, selected, partial(prompt_checks, playground), playground.cell_prompt
    )


def cell_now(
    playground: Playground, notebook: Notebook, index: int, selected: int, probs: bool = False
) -> str:
    """Cell `index` as it is now: the very HTML the document holds for it after the run (with
    its probabilities open, if `probs`)."""
    cell, output = notebook.cells[index], notebook.outputs[index]
    checks = partial(prompt_checks, playground)
    chosen = index == selected
    return cell_html(index, cell, output, checks, playground.cell_prompt, chosen, probs)


def live_value(cells: dict[int, str]) -> dict:
    """`LIVE_CELL`'s value: these cells' HTML, by index."""
    return {"cells": list(cells.items()), "step": next(STEPS)}


def run_cells(
    playground: Playground, notebook: Notebook, selected: int, indices: list[int],
    base: SamplingParams, control: Control,
) -> Iterator[tuple[Notebook, dict, str]]:  # fmt: skip
    """Run cells `indices` in order until Stop: each step is the notebook, the cells changed
    since the last step (for `LIVE_CELL`) and the note over the page. The document itself is
    shown again once the run is over (`CELL_EVENTS` says why). A cell's end goes with the next
    step (the next cell's start, or the note a Stop writes), so a quick cell costs one step:
    about seven a second on tiny-tutor, which sent three each before."""
    unsent: dict[int, str] = {}
    for at, index in enumerate(indices):
        if control.stop:
            break
        for step in run_one(playground, notebook, index, base, control):
            notebook = step
            unsent[index] = cell_now(playground, notebook, index, selected)
            ended = notebook.outputs[index].figures or notebook.outputs[index].error
            if not ended or (at + 1 == len(indices) and not control.stop):
                yield notebook, live_value(unsent), ""
                unsent = {}
        if control.stop:
            yield notebook, live_value(unsent), stopped_note(index, len(indices) - at - 1)
            return
    if unsent:  # a Stop pressed as a cell ended, before the next began
        yield notebook, live_value(unsent), ""


def show(playground: Playground, notebook: Notebook, selected: int) -> tuple:
    """Everything a change of cells updates: state, cell picker, page and editor."""
    selected = max(0, min(selected, len(notebook.cells) - 1))
    return (
        notebook,
        gr.Dropdown(choices=cell_choices(notebook), value=selected),
        page(playground, notebook, selected),
        *editor_fields(notebook.cells[selected]),
    )


def idle(control: Control) -> None:
    """Edits wait for the run: its stream would overwrite them with its own copy."""
    if control.busy:
        raise ParamError("A cell is running: press Stop first.")


def warn(error: UserError) -> None:
    gr.Warning(display.toast_text(str(error)))  # a toast renders HTML: show the text literally


def refusals_warn(width: int) -> Callable:
    """A refused edit is a warning toast that changes nothing: raising instead would mark the
    page and the editor as failed, covered by an error overlay until the next event."""

    def decorate(fn: Callable) -> Callable:
        @wraps(fn)
        def call(*args):
            try:
                return fn(*args)
            except UserError as error:
                warn(error)
                return tuple(gr.skip() for _ in range(width))

        return user_errors(call)

    return decorate


def write_downloads(notebook: Notebook, playground: Playground, base: dict) -> list[str]:
    """The lesson, the Jupyter notebook and the handout, in a folder of their own."""
    engine = playground.engine
    served = engine.info.model if engine.info else ""
    model, _ = exported_model(served)
    settings = playground.settings
    context = nb.NotebookContext(
        model, settings.ranges, base, dict(settings.ov_config), end_ids=engine.tokenizer.eos_ids,
        prompt_of=playground.cell_prompt,
    )  # fmt: skip
    outputs = notebook.output_texts()
    folder = f"notebook-{secrets.token_hex(8)}"
    stem = file_stem(notebook.title)
    files = {
        "md": notebook.lesson(),
        "ipynb": nbformat.writes(nb.to_ipynb(notebook.cells, outputs, context)),
        "html": nb.handout_html(
            notebook.title,
            notebook.cells,
            outputs,
            playground.cell_prompt,
            model=display.model_label(served),
            settings=base,
            figures=notebook.output_figures(),
        ),
    }
    return [str(write_download(f"{folder}/{stem}.{ext}", text)) for ext, text in files.items()]


def edited(tab: NotebookTab, playground: Playground, data: dict) -> Notebook:
    """The notebook with the editor's text applied to the selected cell."""
    idle(data[tab.control])
    cell = cell_from_editor(data[tab.kind], data[tab.options] or "", data[tab.source] or "")
    if isinstance(cell, nb.PromptCell):  # a sampling value out of range: say so now
        nb.cell_params(cell, playground.settings.ranges, playground.settings.defaults())
    return data[tab.notebook].edited(data[tab.cell], cell)


def wire_notebook(
    tab: NotebookTab, controls: Controls, playground: Playground, demo: gr.Blocks
) -> None:
    refresh = wire_files(tab, controls, playground, demo)

    @refusals_warn(len(tab.view))
    def on_apply(data: dict) -> tuple:
        return show(playground, edited(tab, playground, data), data[tab.cell])

    wire_edits(tab, playground, on_apply, refresh)
    wire_runs(tab, controls, playground, on_apply, refresh)
    wire_probabilities(tab, playground)


def wire_probabilities(tab: NotebookTab, playground: Playground) -> None:
    """An output's Probabilities, opened (`CELL_EVENTS`): its cell drawn again with them."""

    @user_errors
    def on_probs(notebook: Notebook, selected: int, event: gr.EventData) -> dict:
        index = event._data.get("cell") if isinstance(event._data, dict) else None
        if type(index) is not int or not 0 <= index < len(notebook.cells):
            return gr.skip()  # the page's script sends a cell's number; anything else is odd
        if not (notebook.outputs[index] and notebook.outputs[index].probabilities):
            return gr.skip()
        return live_value({index: cell_now(playground, notebook, index, selected, probs=True)})

    tab.document.probs(on_probs, [tab.notebook, tab.cell], tab.live, **PRIVATE)


def wire_files(
    tab: NotebookTab, controls: Controls, playground: Playground, demo: gr.Blocks
) -> dict:
    """Lessons in and out: the picker, the page's `?lesson=`, Upload and the downloads. Returns
    the download refresh, as keyword arguments of an event, for every change to follow."""

    def on_downloads(data: dict) -> list:
        values, _, _ = controls.read(data)
        try:
            paths = write_downloads(data[tab.notebook], playground, values)
        except UserError as error:  # an opened file's cell with a bad sampling value
            warn(error)
            return [gr.skip()] * len(tab.downloads)
        return [gr.DownloadButton(value=path) for path in paths]

    @refusals_warn(len(tab.view) + 2)
    def on_lesson(title: str, control: Control) -> tuple:
        idle(control)
        lessons = list(shipped_lessons())
        if title not in lessons:  # the opened file's own entry, chosen again: it is open
            return (*[gr.skip()] * len(tab.view), gr.skip(), gr.skip())
        # A shipped lesson replaces an opened file, whose entry goes.
        picker = gr.Dropdown(choices=lessons, value=title)
        return (*show(playground, open_lesson(title), 0), "", picker)

    @user_errors
    def on_upload(path: str, control: Control) -> tuple:
        file = Path(path)  # Gradio keeps the visitor's file name as the file's last part
        try:
            idle(control)
            cells = nb.load_cells(file.name, file.read_bytes())
            if not cells:
                raise nb.LessonError("the file has no cells.")
        except UserError as error:
            note = display.escape(f"Not opened: {error}")
            return (*[gr.skip()] * len(tab.view), note, gr.skip())
        title = nb.lesson_title(cells)
        # The picker names the opened file, not the shipped lesson it showed before.
        name = opened_name(file.name, title)
        picker = gr.Dropdown(choices=[*shipped_lessons(), name], value=name)
        return (*show(playground, Notebook.open(title, cells), 0), "", picker)

    def on_page_load(request: gr.Request) -> tuple:
        """A teacher's link may name a lesson: `?view=notebook&lesson=04-one-bos`."""
        wanted = request.query_params.get("lesson", "")
        titles = {path.stem: title for title, path in shipped_lessons().items()}
        title = titles.get(wanted) or next(iter(titles.values()))
        return (*show(playground, open_lesson(title), 0), title)

    refresh = {"fn": on_downloads, "inputs": {tab.notebook, *controls.inputs},
               "outputs": tab.downloads, **PRIVATE}  # fmt: skip
    opened = [*tab.view, tab.note, tab.lesson]
    tab.lesson.input(on_lesson, [tab.lesson, tab.control], opened, **PRIVATE).success(**refresh)
    tab.upload.upload(on_upload, [tab.upload, tab.control], opened, **PRIVATE).then(**refresh)
    demo.load(on_page_load, None, [*tab.view, tab.lesson], **PRIVATE).then(**refresh)
    return refresh


def pick_cell(
    tab: NotebookTab, playground: Playground, notebook: Notebook, selected: int,
    control: Control, event: gr.EventData, quiet: bool,
) -> tuple:  # fmt: skip
    """A click on cell `event.cell` (`CELL_EVENTS`): the cell picker, page and editor follow it.
    The cell already selected keeps the editor as it is (its ▶ runs the edit, as Run cell
    does). Refused while a run streams (its steps show their own selection), with a warning
    unless `quiet` (a ▶'s run says why itself)."""
    skip = tuple(gr.skip() for _ in tab.view[1:])
    index = event._data.get("cell") if isinstance(event._data, dict) else None
    if index == selected:
        return skip
    try:
        if type(index) is not int:  # the page's script sends a number; anything else is odd
            raise ParamError("There is no such cell.")
        notebook.cell(index)
        idle(control)
    except UserError as error:
        if not quiet:
            warn(error)
        return skip
    return show(playground, notebook, index)[1:]


def wire_edits(tab: NotebookTab, playground: Playground, on_apply: Callable, refresh: dict) -> None:
    """Select (from the picker or a click on the page), apply, move, add, delete and reset:
    each a new Notebook, refused while running."""
    refused = refusals_warn(len(tab.view))

    def on_select(notebook: Notebook, selected: int) -> tuple:
        return show(playground, notebook, selected)[2:]

    @refused
    def on_move(data: dict, delta: int) -> tuple:
        notebook, selected = edited(tab, playground, data).moved(data[tab.cell], delta)
        return show(playground, notebook, selected)

    @refused
    def on_delete(notebook: Notebook, selected: int, control: Control) -> tuple:
        idle(control)
        if len(notebook.cells) == 1:
            raise ParamError("A lesson keeps at least one cell.")
        return show(playground, notebook.deleted(selected), selected)

    @refused
    def on_add(data: dict) -> tuple:
        notebook = edited(tab, playground, data)
        notebook = notebook.inserted(data[tab.cell], NEW_CELLS[data[tab.new_kind]])
        return show(playground, notebook, data[tab.cell] + 1)

    @refused
    def on_reset(notebook: Notebook, control: Control) -> tuple:
        idle(control)
        return show(playground, notebook.reset(), 0)

    edits = [
        (tab.apply.click, on_apply, tab.editor),
        (tab.up.click, lambda data: on_move(data, -1), tab.editor),
        (tab.down.click, lambda data: on_move(data, 1), tab.editor),
        (tab.add.click, on_add, {*tab.editor, tab.new_kind}),
        (tab.delete.click, on_delete, [tab.notebook, tab.cell, tab.control]),
        (tab.reset.click, on_reset, [tab.notebook, tab.control]),
    ]
    for trigger, fn, inputs in edits:
        trigger(fn, inputs, tab.view, **PRIVATE).success(**refresh)
    tab.cell.input(on_select, [tab.notebook, tab.cell], tab.view[2:], **PRIVATE)

    @user_errors
    def on_pick(notebook: Notebook, selected: int, control: Control, event: gr.EventData):
        return pick_cell(tab, playground, notebook, selected, control, event, quiet=False)

    tab.document.pick(on_pick, [tab.notebook, tab.cell, tab.control], tab.view[1:], **PRIVATE)


def wire_runs(
    tab: NotebookTab, controls: Controls, playground: Playground, on_apply: Callable,
    refresh: dict,
) -> None:  # fmt: skip
    """Run cell (its button, a cell's ▶, Shift+Enter in the editor) and Run all, the editor
    applied first, in the engine's one queue; Stop, and the note that says where it stopped."""

    def on_check_run(data: dict, every_cell: bool) -> None:
        """Before a run, with no outputs (a refusal then marks nothing as failed): the editor's
        cell must be valid, and Run cell needs a prompt cell."""
        try:
            cell = edited(tab, playground, data).cell(data[tab.cell])
            if not every_cell and not isinstance(cell, nb.PromptCell):
                raise ParamError("A markdown cell has nothing to run: pick a prompt cell.")
        except UserError as error:
            warn(error)
            raise refuse(error, "notebook run") from None

    def runner(every_cell: bool) -> Callable:
        @user_errors
        def on_run(data: dict) -> Iterator[tuple]:
            control, notebook, selected = data[tab.control], data[tab.notebook], data[tab.cell]
            try:
                values, stop, fresh = controls.read(data)
                base = playground.params(values, stop, new_seed=fresh)
                indices = [i for i in notebook.prompt_indices() if every_cell or i == selected]
                yield from run_cells(playground, notebook, selected, indices, base, control)
            finally:
                control.end()

        return on_run

    @user_errors
    def on_play(notebook: Notebook, selected: int, control: Control, event: gr.EventData):
        return pick_cell(tab, playground, notebook, selected, control, event, quiet=True)

    def on_show_page(notebook: Notebook, selected: int) -> dict:
        """After a run, the document holds what its cells showed (drawn already: nothing
        is parsed again)."""
        return page(playground, notebook, selected)

    # A cell's ▶ picks it first (so the editor holds it), then runs it as Run cell does.
    picked = tab.document.play(
        on_play, [tab.notebook, tab.cell, tab.control], tab.view[1:], **PRIVATE
    ).success
    # Submit: Shift+Enter in the source box (Gradio's own, for a box of several lines), Enter
    # in the one-line options box.
    run_cell = [tab.run_cell.click, tab.source.submit, tab.options.submit]
    for start, every_cell in ((partial(gr.on, run_cell), False), (picked, False),
                              (tab.run_all.click, True)):  # fmt: skip
        check = start(
            lambda data, every=every_cell: on_check_run(data, every), tab.editor, None, **PRIVATE
        )
        applied = check.success(on_apply, tab.editor, tab.view, **PRIVATE)
        run_with_stop(
            applied.success,
            runner(every_cell),
            {tab.notebook, tab.control, tab.cell, *controls.inputs},
            [tab.notebook, tab.live, tab.note],  # not the document: see `CELL_EVENTS`
            playground,
            tab.control,
            tab.stop,
            show_progress="minimal",  # the place in the queue shows; the stream is not covered
            show_progress_on=tab.document,
        ).then(on_show_page, [tab.notebook, tab.cell], tab.document, **PRIVATE).then(**refresh)
    wire_stop(tab.stop, tab.control)
