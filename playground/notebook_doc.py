"""A lesson open in the browser: its cells with their outputs, the edits, and its page.

Owns: the `Notebook` value a visitor's session holds (cells, the output each prompt cell got,
the original cells for Reset), the edit operations (edit, add, delete, move: each returns a new
Notebook), the editor's text fields of a cell and the cell they describe, and the page: each
cell's HTML (markdown through `notebook.render_markdown`, prompts and outputs escaped by
`display`), which the page redraws one cell at a time.
Does not own: the lesson format or running cells (`notebook`), components or events
(`ui.notebook`), token counts and checks (passed in by the caller, which has the tokenizer).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from playground import display
from playground.chat_format import ChatFormatError, parse_conversation
from playground.notebook import (
    KINDS,
    Cell,
    LessonError,
    MarkdownCell,
    PromptCell,
    cell_prompt,
    check_size,
    lesson_markdown,
    parse_lesson,
    render_markdown,
)

MARKDOWN = "markdown"
NEW_CELLS: dict[str, Cell] = {
    MARKDOWN: MarkdownCell("Write here: **markdown**, with [links](https://ai.google.dev/gemma)."),
    "chat": PromptCell("chat", '[{"role": "user", "content": "Hello!"}]'),
    "raw": PromptCell("raw", "<bos><start_of_turn>user\nHello!<end_of_turn>\n"),
}


@dataclass(frozen=True)
class CellOutput:
    """What running a prompt cell gave: the text so far, then its figures (`session.figures_of`);
    or why it did not run."""

    text: str = ""
    figures: Mapping[str, Any] | None = None
    error: str = ""
    probabilities: str = ""  # `display.probability_view` of the finished output (escaped HTML)
    note: str = ""  # while it runs, the line under it (`session.Reply.line`): the prompt's reading

    def as_text(self) -> str:
        """The output as the exported notebook and the handout store it (as the CLI does)."""
        return f"error: {self.error}" if self.error else self.text


@dataclass(frozen=True)
class Notebook:
    """Cells and their outputs (one per cell, None until run), and the cells Reset returns to."""

    title: str
    cells: tuple[Cell, ...]
    outputs: tuple[CellOutput | None, ...] = ()
    original: tuple[Cell, ...] = field(default=(), repr=False)

    @classmethod
    def open(cls, title: str, cells: list[Cell] | tuple[Cell, ...]) -> Notebook:
        cells = tuple(cells)
        return cls(title, cells, (None,) * len(cells), cells)

    def reset(self) -> Notebook:
        return Notebook.open(self.title, self.original)

    def cell(self, index: int) -> Cell:
        if not 0 <= index < len(self.cells):
            raise LessonError(f"There is no cell {index + 1}.")
        return self.cells[index]

    def edited(self, index: int, cell: Cell) -> Notebook:
        """Cell `index` replaced; its output is kept only if the cell did not change."""
        if self.cell(index) == cell:
            return self
        return self._with(index, cell, None)

    def with_output(self, index: int, output: CellOutput) -> Notebook:
        return self._with(index, self.cell(index), output)

    def inserted(self, after: int, cell: Cell) -> Notebook:
        """`cell` added after cell `after` (-1: first)."""
        at = max(0, min(after + 1, len(self.cells)))
        cells = (*self.cells[:at], cell, *self.cells[at:])
        check_size(cells)
        outputs = (*self.outputs[:at], None, *self.outputs[at:])
        return replace(self, cells=cells, outputs=outputs)

    def deleted(self, index: int) -> Notebook:
        self.cell(index)
        cells = self.cells[:index] + self.cells[index + 1 :]
        return replace(self, cells=cells, outputs=self.outputs[:index] + self.outputs[index + 1 :])

    def moved(self, index: int, delta: int) -> tuple[Notebook, int]:
        """Cell `index` moved by `delta` places (with its output), and where it is now."""
        self.cell(index)
        to = max(0, min(index + delta, len(self.cells) - 1))
        cells, outputs = list(self.cells), list(self.outputs)
        cells.insert(to, cells.pop(index))
        outputs.insert(to, outputs.pop(index))
        return replace(self, cells=tuple(cells), outputs=tuple(outputs)), to

    def prompt_indices(self) -> list[int]:
        return [i for i, cell in enumerate(self.cells) if isinstance(cell, PromptCell)]

    def output_texts(self) -> dict[int, str]:
        """Outputs by cell index, for `to_ipynb` and `handout_html`."""
        done = {i: out for i, out in enumerate(self.outputs) if out and (out.figures or out.error)}
        return {i: out.as_text() for i, out in done.items()}

    def output_figures(self) -> dict[int, str]:
        """Each finished output's figures line (its seed included), for `handout_html`."""
        done = enumerate(self.outputs)
        return {i: display.figures_line(out.figures) for i, out in done if out and out.figures}

    def lesson(self) -> str:
        return lesson_markdown(self.cells)

    def _with(self, index: int, cell: Cell, output: CellOutput | None) -> Notebook:
        cells = (*self.cells[:index], cell, *self.cells[index + 1 :])
        if cell != self.cells[index]:
            check_size(cells)
        outputs = (*self.outputs[:index], output, *self.outputs[index + 1 :])
        return replace(self, cells=cells, outputs=outputs)


# ---- the editor -------------------------------------------------------------------------------


def kind_of(cell: Cell) -> str:
    return cell.kind if isinstance(cell, PromptCell) else MARKDOWN


def options_line(cell: Cell) -> str:
    """A prompt cell's options as the lesson file writes them after its kind."""
    return "" if isinstance(cell, MarkdownCell) else cell.options_text()


def editor_fields(cell: Cell) -> tuple[str, str, str]:
    """(kind, options line, source) of a cell, for the editor."""
    source = cell.source if isinstance(cell, MarkdownCell) else cell.body
    return kind_of(cell), options_line(cell), source


def cell_from_editor(kind: str, options: str, source: str) -> Cell:
    """The cell the editor describes, read by the lesson parser itself (so the options line
    obeys the file's rules). Raises LessonError for a cell a lesson file could not hold."""
    if kind == MARKDOWN:
        if not source.strip():
            raise LessonError("A markdown cell cannot be empty: delete it instead.")
        cells = parse_lesson(source)
        if len(cells) > 1 or any(isinstance(c, PromptCell) for c in cells):
            raise LessonError(
                "A markdown cell cannot hold a ```chat or ```raw block: add a prompt cell instead."
            )
        return MarkdownCell(source.strip("\n"))
    if kind not in KINDS:
        raise LessonError(f"A cell is markdown, chat or raw, not {kind!r}.")
    # A raw cell is sent as written: its last newline (after `model`, say) is part of it.
    body = source.lstrip("\n") if kind == "raw" else source.strip("\n")
    fenced = lesson_markdown([PromptCell(kind, body)])
    head, rest = fenced.split("\n", 1)
    options = " ".join(options.split())  # one line, whatever was typed
    try:
        cells = parse_lesson(f"{head} {options}\n{rest}" if options else fenced)
    except LessonError as error:
        raise LessonError(str(error).removeprefix("line 1: ")) from None
    return cells[0]


def cell_label(index: int, cell: Cell) -> str:
    """The cell's name in the picker: its number, kind and first words (of a chat cell, its
    last message's, rather than the JSON around them)."""
    _, _, source = editor_fields(cell)
    if isinstance(cell, PromptCell) and cell.kind == "chat":
        # Unreadable JSON keeps its text: applying the edit says what is wrong with it.
        with contextlib.suppress(ChatFormatError, IndexError):
            source = parse_conversation(cell.body)[-1]["content"]
    first = next((line.strip() for line in source.splitlines() if line.strip()), "")
    return f"{index + 1} · {kind_of(cell)}: {shortened(first)}"


def shortened(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def opened_name(file_name: str, title: str) -> str:
    """How the lesson picker names an opened file: its title and the file's own name (a
    visitor's text: the picker shows it as text)."""
    return f"{shortened(title)} (opened: {shortened(file_name)})"


def stopped_note(index: int, left: int) -> str:
    """The note over the page when Stop ended a run at cell `index`, with `left` prompt cells
    after it not run."""
    rest = f"; the {left} prompt cell{'s' if left > 1 else ''} after it did not run" if left else ""
    return f"⏹ Stopped at cell {index + 1}{rest}."


# ---- the page ---------------------------------------------------------------------------------


def prompt_html(
    cell: PromptCell,
    checks: Callable[[str], str],
    prompt_of: Callable[[PromptCell], str] = cell_prompt,
) -> str:
    """The prompt the model gets (`prompt_of(cell)`: the served model's, from the Notebook
    tab), control tokens marked, with `checks(prompt)` (HTML) under it; or the template's
    refusal, which running the cell shows too."""
    prompt, marked = _marked_prompt(cell, prompt_of)
    if prompt is None:
        return marked
    return marked + f'<div class="nb-checks">{checks(prompt)}</div>'


# The page is shown again at every step of a run, and only the running cell changes: each
# other cell's HTML comes from these caches (by content, so shared by visitors and bounded).
@functools.lru_cache(maxsize=1024)
def _marked_prompt(
    cell: PromptCell, prompt_of: Callable[[PromptCell], str]
) -> tuple[str | None, str]:
    try:
        prompt = prompt_of(cell)
    except ChatFormatError as error:
        return (
            None,
            f'<p class="nb-refused">{display.escape(f"Refused by the template: {error}")}</p>',
        )
    return prompt, display.marked_prompt(prompt)


@functools.lru_cache(maxsize=1024)
def _markdown_html(source: str) -> str:
    return f'<div class="nb-md">{render_markdown(source)}</div>'


def output_html(cell: PromptCell, output: CellOutput, probabilities: bool = False) -> str:
    """Under a run cell: its figures, then the text as literal characters (or, with the cell
    option output=markdown, rendered by the safe renderer), then its probabilities, closed and
    empty unless `probabilities`: the view takes about 100 bytes a token, 25 times the text,
    and the page asks for it when it is opened (`ui.notebook.CELL_EVENTS`). Issue 34: with it,
    ten cells of 4,096 tokens made the page 3.9 MB, which Gradio's page copies at every update
    of any component, and a Stop took 0.4 to 1.7 s to land; without it, 0.1 to 0.5 s."""
    if output.error:
        return f'<div class="nb-out"><p class="nb-error">{display.escape(output.error)}</p></div>'
    figures = display.figures_line(output.figures) if output.figures else output.note or "running…"
    if cell.option("output", "text") == "markdown":
        body = f'<div class="nb-out-md">{render_markdown(output.text)}</div>'
    else:
        body = f'<pre class="nb-out-text">{display.escape(output.text)}</pre>'
    if output.probabilities:
        view = output.probabilities if probabilities else ""
        body += (
            f'<details class="nb-probs"{" open" if probabilities else ""}>'
            f"<summary>Probabilities</summary>{view}</details>"
        )
    return f'<div class="nb-out"><p class="nb-figures">{display.escape(figures)}</p>{body}</div>'


def cell_html(
    index: int,
    cell: Cell,
    output: CellOutput | None,
    checks: Callable[[str], str],
    prompt_of: Callable[[PromptCell], str] = cell_prompt,
    selected: bool = False,
    probabilities: bool = False,
) -> str:
    """Cell `index` as the page shows it: numbered, a prompt cell with a ▶ (`data-cell` is
    its index) and its output (with its probabilities open, if asked: `output_html`), the
    selected one outlined."""
    head = f"{index + 1} · {kind_of(cell)}"
    if options := options_line(cell):
        head += f" · {options}"
    head = display.escape(head)
    if isinstance(cell, MarkdownCell):
        body = _markdown_html(cell.source)
    else:
        head = (
            f'<button type="button" class="nb-play" aria-label="Run cell {index + 1}" '
            f'title="Run cell {index + 1} (Shift+Enter)">▶</button> {head}'
        )
        body = prompt_html(cell, checks, prompt_of)
        if output:
            body += output_html(cell, output, probabilities)
    chosen = " nb-selected" if selected else ""
    return (
        f'<section class="nb-cell{chosen}" id="nb-cell-{index + 1}" data-cell="{index}" '
        f'tabindex="0"><p class="nb-head">{head}</p>{body}</section>'
    )


def page_value(
    notebook: Notebook,
    selected: int,
    checks: Callable[[str], str],
    prompt_of: Callable[[PromptCell], str] = cell_prompt,
) -> dict[str, Any]:
    """The Notebook tab's document: each cell's HTML (`cell_html`) and the selected index. The
    page's script places the cells up to the selected one above the editor and the rest below
    it, and parses only the cells whose HTML changed (`ui.notebook.CELL_EVENTS`)."""
    outputs = (*notebook.outputs, *[None] * len(notebook.cells))  # None: not run
    cells = [
        cell_html(i, cell, output, checks, prompt_of, i == selected)
        for i, (cell, output) in enumerate(zip(notebook.cells, outputs, strict=False))
    ]
    return {"cells": cells, "selected": selected}


def document_html(
    notebook: Notebook,
    selected: int,
    checks: Callable[[str], str],
    prompt_of: Callable[[PromptCell], str] = cell_prompt,
) -> str:
    """The whole lesson as one page of numbered cells, as the Notebook tab shows it."""
    cells = page_value(notebook, selected, checks, prompt_of)["cells"]
    return '<div class="nb-doc">{}</div>'.format("\n".join(cells))


def file_stem(title: str, limit: int = 60) -> str:
    """A download's file name from the lesson's title: its words (letters and digits) joined
    by dashes, as many whole words as fit in `limit` characters (a first word longer than
    that is cut: the name stays bounded)."""
    words = "".join(c if c.isalnum() else " " for c in title.lower()).split()
    stem = words[0][:limit] if words else "lesson"
    for word in words[1:]:
        if len(stem) + 1 + len(word) > limit:
            break
        stem += f"-{word}"
    return stem
