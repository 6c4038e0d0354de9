"""Notebook lessons: markdown files with runnable prompt cells, and what they become.

Owns: the lesson format (ordinary CommonMark; a fenced block whose info string starts with
`chat` or `raw` is a prompt cell, its options written after the kind as `key=value`), parsing it
with markdown-it-py's token stream, writing it back byte for byte, a cell's prompt and sampling,
the Jupyter notebook (nbformat) and the standalone HTML handout, and
the one safe markdown renderer of the server (raw HTML off, links only http(s) and mailto).
Does not own: components (`ui`), the engine, or the chat format itself (`chat_format`).
"""

from __future__ import annotations

import html
import json
import shlex
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

from playground.chat_format import (
    DEFAULT_FOLD_SEPARATOR,
    DEFAULT_SYSTEM_POLICY,
    GEMMA2_CHAT_TEMPLATE,
    SYSTEM_POLICIES,
    ChatFormatError,
    RenderOptions,
    check_unicode,
    parse_conversation,
    render,
)
from playground.errors import UserError
from playground.export import notebook_run_code, notebook_setup_code
from playground.sampling import ParamError, Range, SamplingParams
from playground.traps import TRAPS

LESSONS_DIR = Path(__file__).resolve().parent.parent / "examples" / "lessons"
KINDS = ("chat", "raw")
# `trap=`: a chat cell sent as that engine trap sends it (`traps`), as the fault lab's column.
PROMPT_OPTIONS = {"system_policy": SYSTEM_POLICIES, "generation_prompt": ("on", "off"),
                  "prefill": None, "output": ("text", "markdown"),
                  "trap": tuple(TRAPS)}  # fmt: skip
# Older lessons wrote `policy=`; it is read as `system_policy=`, the policy's one name.
ALIASES = {"policy": "system_policy"}
SAMPLING_OPTIONS = ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed")
# A lesson's size: the shipped ones are about 1,500 characters and 10 cells. Every step of a
# run shows the whole page again, so its size bounds what a run costs beside the engine.
MAX_LESSON_CHARS = 50_000
MAX_CELLS = 100


class LessonError(UserError, ValueError):
    """A lesson or notebook file that cannot be read; the message is one line for people."""


@dataclass(frozen=True)
class MarkdownCell:
    source: str


@dataclass(frozen=True)
class PromptCell:
    """A prompt to run: `body` is a JSON conversation (`chat`) or the exact text (`raw`)."""

    kind: str
    body: str
    options: tuple[tuple[str, str], ...] = ()

    def option(self, name: str, default: str = "") -> str:
        return dict(self.options).get(name, default)

    def options_text(self) -> str:
        """The options as a lesson's fence writes them after the kind: `temperature=0 seed=7`."""
        return " ".join(f"{name}={shlex.quote(value)}" for name, value in self.options)

    def with_options(self, **changes: str) -> PromptCell:
        options = dict(self.options) | changes
        return replace(self, options=tuple((k, v) for k, v in options.items() if v != ""))


Cell = MarkdownCell | PromptCell


# ---------------------------------------------------------------------------------------------
# The lesson format
# ---------------------------------------------------------------------------------------------


def _parse_info(info: str, line: int) -> tuple[str, tuple[tuple[str, str], ...]]:
    try:
        kind, *words = shlex.split(info)
    except ValueError as error:
        raise LessonError(f"line {line}: the cell's options do not parse ({error}).") from None
    options = []
    for word in words:
        name, sep, value = word.partition("=")
        name = ALIASES.get(name, name)
        if not sep or (name not in PROMPT_OPTIONS and name not in SAMPLING_OPTIONS):
            raise LessonError(f"line {line}: unknown cell option {word!r} (known: {KNOWN}).")
        options.append(checked_option(name, value, f"line {line}"))
    return kind, tuple(options)


KNOWN = ", ".join([*PROMPT_OPTIONS, *SAMPLING_OPTIONS])


def checked_option(name: str, value: str, where: str) -> tuple[str, str]:
    """One cell option, as a lesson's fence or a notebook's metadata gives it: only known
    names and allowed values, so whatever loads is written back and opens again."""
    name = ALIASES.get(name, name)
    if name not in PROMPT_OPTIONS and name not in SAMPLING_OPTIONS:
        raise LessonError(f"{where}: unknown cell option {name!r} (known: {KNOWN}).")
    allowed = PROMPT_OPTIONS.get(name)
    if allowed and value not in allowed:
        raise LessonError(f"{where}: {name} must be one of {', '.join(allowed)}.")
    return name, value


def _metadata_options(options: Any, where: str) -> tuple[tuple[str, str], ...]:
    """A notebook cell's options: a list of [name, value] pairs of text."""
    shape = f'{where}: options must be a list of [name, value] pairs, like [["seed", "7"]]'
    if not isinstance(options, list):
        raise LessonError(f"{shape}, got {json_text(options)}.")
    pairs = []
    for pair in options:
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and all(isinstance(x, str | int | float) and not isinstance(x, bool) for x in pair)
        ):
            raise LessonError(f"{shape}, got {json_text(pair)} in it.")
        pairs.append(checked_option(str(pair[0]), str(pair[1]), where))
    return tuple(pairs)


def _text(text: str, where: str) -> str:
    try:
        return check_unicode(text, where)
    except ChatFormatError as error:
        raise LessonError(str(error)) from None


def json_text(value: Any) -> str:
    """A value as a short JSON text, for a message."""
    text = json.dumps(value, ensure_ascii=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def check_size(cells: Sequence[Cell] | None = None, chars: int | None = None) -> None:
    """Raise LessonError for a lesson over `MAX_CELLS` cells or `MAX_LESSON_CHARS` characters."""
    if chars is None and cells is not None:
        chars = sum(len(c.source) if isinstance(c, MarkdownCell) else len(c.body) for c in cells)
    if chars is not None and chars > MAX_LESSON_CHARS:
        raise LessonError(
            f"the lesson has {chars} characters; the limit is {MAX_LESSON_CHARS}: "
            "split it into several lessons."
        )
    if cells is not None and len(cells) > MAX_CELLS:
        raise LessonError(
            f"the lesson has {len(cells)} cells; the limit is {MAX_CELLS}: "
            "split it into several lessons."
        )


def parse_lesson(text: str) -> list[Cell]:
    """Cells of a lesson. Raises LessonError (with a line number) for a bad prompt cell, and
    for a lesson over the size limits (`check_size`)."""
    check_size(chars=len(text))
    lines = text.splitlines(keepends=True)
    cells: list[Cell] = []
    taken = 0
    for token in MarkdownIt("commonmark").parse(text):
        kind = token.info.split(maxsplit=1)[0] if token.info.strip() else ""
        if token.type != "fence" or token.level != 0 or kind not in KINDS or not token.map:
            continue
        start, end = token.map
        if source := "".join(lines[taken:start]).strip("\n"):
            cells.append(MarkdownCell(source))
        kind, options = _parse_info(token.info, start + 1)
        cell = PromptCell(kind, token.content.removesuffix("\n"), options)
        check_cell(cell, where=f"line {start + 1}")
        cells.append(cell)
        taken = end
    if source := "".join(lines[taken:]).strip("\n"):
        cells.append(MarkdownCell(source))
    check_size(cells)
    return cells


def _fence(body: str) -> str:
    longest, run = 0, 0
    for char in body:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def lesson_markdown(cells: Sequence[Cell]) -> str:
    """The lesson file of `cells`; `parse_lesson` gives the same cells back."""
    parts = []
    for cell in cells:
        if isinstance(cell, MarkdownCell):
            parts.append(cell.source)
            continue
        fence = _fence(cell.body)
        info = f"{cell.kind} {cell.options_text()}".rstrip()
        parts.append(f"{fence}{info}\n{cell.body}\n{fence}")
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------
# A cell's prompt and sampling
# ---------------------------------------------------------------------------------------------


def check_cell(cell: PromptCell, where: str = "this cell") -> None:
    """Raise LessonError if a chat cell's conversation cannot be rendered. The error policy's
    refusal of a system message is not checked: running such a cell shows the refusal, which is
    what a lesson may want to teach."""
    if cell.kind == "chat":
        try:
            render(parse_conversation(cell.body), render_options(cell, "drop"))
        except ChatFormatError as error:
            raise LessonError(f"{where}: {error}") from None


def cell_prompt(
    cell: PromptCell,
    template: str = GEMMA2_CHAT_TEMPLATE,
    fold_separator: str = DEFAULT_FOLD_SEPARATOR,
) -> str:
    """The exact text the model gets for the cell (one `<bos>` is added to raw text without):
    a chat cell rendered with `template` (the served model's, when a playground runs it: see
    `session.Playground.cell_prompt`) and `fold_separator`."""
    if cell.kind == "raw":
        return cell.body
    options = render_options(cell, fold_separator=fold_separator)
    return render(parse_conversation(cell.body), options, template=template).text


def render_options(
    cell: PromptCell,
    system_policy: str | None = None,
    fold_separator: str = DEFAULT_FOLD_SEPARATOR,
) -> RenderOptions:
    """A chat cell's options: `policy=` (unless `system_policy` overrides it),
    `generation_prompt=on|off` and `prefill=`."""
    return RenderOptions(
        system_policy=system_policy or cell.option("system_policy", DEFAULT_SYSTEM_POLICY),
        add_generation_prompt=cell.option("generation_prompt", "on") == "on",
        prefill=cell.option("prefill"),
        fold_separator=fold_separator,
    )


def cell_params(
    cell: PromptCell, ranges: Mapping[str, Range], base: Mapping[str, Any]
) -> SamplingParams:
    """`base` sampling values (the sliders), overridden by the cell's own."""
    values = dict(base)
    for name in SAMPLING_OPTIONS:
        if raw := cell.option(name):
            try:
                values[name] = float(raw) if "." in raw or "e" in raw.lower() else int(raw)
            except ValueError:
                raise ParamError(f"{name} must be a number, not {raw!r}.") from None
    return SamplingParams.checked(dict(ranges), **values)


# ---------------------------------------------------------------------------------------------
# Rendering: the safe markdown renderer, the handout and the Jupyter notebook
# ---------------------------------------------------------------------------------------------

_SAFE_SCHEMES = ("http://", "https://", "mailto:")


def _markdown_it() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False})
    md.disable("image")  # a handout opens offline and fetches nothing
    md.validateLink = lambda url: url.strip().lower().startswith(_SAFE_SCHEMES)
    return md


_MD = _markdown_it()


def render_markdown(source: str) -> str:
    """HTML for markdown written by a visitor, a lesson or the model: raw HTML is shown as
    text, and a link keeps its href only for http(s) and mailto."""
    return _MD.render(source)


def escape(text: str) -> str:
    return html.escape(text, quote=True)


HANDOUT_STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem;
       color: #1f2328; }
pre { white-space: pre-wrap; word-break: break-word; padding: .75rem; border-radius: 6px; }
pre.prompt { background: #f6f8fa; border: 1px solid #d0d7de; }
pre.output { background: #fff8e6; border: 1px solid #e9c46a; }
.label { font-size: .8rem; color: #57606a; margin: 1rem 0 .25rem; }
.about { font-size: .9rem; color: #57606a; border-bottom: 1px solid #d0d7de;
         padding-bottom: .5rem; }
"""


def handout_html(
    title: str,
    cells: Sequence[Cell],
    outputs: Mapping[int, str],
    prompt_of: Callable[[PromptCell], str] = cell_prompt,
    *,
    model: str = "",
    settings: Mapping[str, Any] | None = None,
    figures: Mapping[int, str] | None = None,
) -> str:
    """A standalone page: no script, and a policy that lets it load nothing at all. Each prompt
    is `prompt_of(cell)`: the served model's (`session.Playground.cell_prompt`) when it runs.
    It names what wrote the outputs (issue 33: a demo model's outputs must not read as
    Gemma-2's): `model` as the page names it, the sampling `settings` (the names of
    `SAMPLING_OPTIONS`), each cell's own options, and under each output its `figures` line,
    which holds the seed it ran with. Everything is escaped."""
    body = [f'<p class="about">{escape(handout_about(model, settings or {}))}</p>']
    for i, cell in enumerate(cells):
        if isinstance(cell, MarkdownCell):
            body.append(render_markdown(cell.source))
            continue
        try:
            prompt = prompt_of(cell)
        except ChatFormatError as error:
            prompt = f"(refused by the template: {error})"
        label = " · ".join(filter(None, [cell.kind, cell.options_text()]))
        body.append(f'<p class="label">Prompt ({escape(label)})</p>'
                    f'<pre class="prompt">{escape(prompt)}</pre>')  # fmt: skip
        if i in outputs:
            line = (figures or {}).get(i, "")
            body.append(
                f'<p class="label">Output{escape(f" · {line}" if line else "")}</p>'
                f'<pre class="output">{escape(outputs[i])}</pre>'
            )
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8">\n'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">\n"
        f"<title>{escape(title)}</title><style>{HANDOUT_STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def handout_about(model: str, settings: Mapping[str, Any]) -> str:
    """The handout's first line: the model and the sampling settings its outputs came from."""
    shown = ", ".join(f"{name}={settings[name]}" for name in SAMPLING_OPTIONS if name in settings)
    return (
        f"Outputs written by {model or 'the served model'}, run by OpenVINO. "
        f"Settings: {shown or 'the defaults'}; a cell's own options (beside its prompt) "
        "override them, and each output names the seed it ran with."
    )


@dataclass(frozen=True)
class NotebookContext:
    """What the exported notebook runs against: a hub id or a folder, the sampling base, the
    model's end ids (its tokenizer's) and how a cell becomes its prompt (the served model's
    template and fold separator, `session.Playground.cell_prompt`)."""

    model: str
    ranges: Mapping[str, Range]
    base: Mapping[str, Any] = field(default_factory=dict)
    ov_config: Mapping[str, str] = field(default_factory=dict)
    end_ids: Collection[int] = field(kw_only=True)
    prompt_of: Callable[[PromptCell], str] = field(default=cell_prompt, kw_only=True)


def to_ipynb(cells: Sequence[Cell], outputs: Mapping[int, str], context: NotebookContext):
    """An nbformat v4 notebook (validated): markdown cells as they are, each prompt cell as a
    code cell that runs exactly that prompt with openvino_genai, with its output stored."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    notebook = new_notebook(metadata={"playground": {"model": context.model}})
    notebook.cells.append(
        new_code_cell(notebook_setup_code(context.model, context.ov_config, context.end_ids))
    )
    count = 1
    for i, cell in enumerate(cells):
        if isinstance(cell, MarkdownCell):
            notebook.cells.append(new_markdown_cell(cell.source))
            continue
        meta = {"playground": {"kind": cell.kind, "body": cell.body,
                               "options": [list(pair) for pair in cell.options]}}  # fmt: skip
        try:
            params = cell_params(cell, context.ranges, context.base)
            source = notebook_run_code(context.prompt_of(cell), params)
        except ChatFormatError as error:
            refusal = f"raise ValueError({str(error)!r})"
            source = f"# The Gemma-2 template refuses this conversation.\n{refusal}"
        code = new_code_cell(source, metadata=meta)
        if i in outputs:
            count += 1
            code.execution_count = count
            code.outputs = [new_output("stream", name="stdout", text=outputs[i] + "\n")]
        notebook.cells.append(code)
    nbformat.validate(notebook)
    return notebook


def from_ipynb(text: str) -> list[Cell]:
    """The cells of a notebook written by `to_ipynb` (markdown cells, and prompt cells from
    their metadata); other code cells are left out."""
    import nbformat

    try:
        notebook = nbformat.reads(text, as_version=4)
        nbformat.validate(notebook)
    except Exception as error:  # NotJSONError, ValidationError, KeyError on odd files
        raise LessonError(f"not a valid Jupyter notebook ({type(error).__name__}).") from None
    cells: list[Cell] = []
    for cell in notebook.cells:
        check_size(cells)
        meta = cell.get("metadata", {}).get("playground")
        if cell.cell_type == "markdown":
            where = f"cell {len(cells) + 1} of the notebook"
            cells.append(MarkdownCell(_text(cell.source, where)))
        elif isinstance(meta, dict) and meta.get("kind") in KINDS:
            where = f"cell {len(cells) + 1} of the notebook"
            options = _metadata_options(meta.get("options", []), where)
            prompt = PromptCell(meta["kind"], _text(str(meta.get("body", "")), where), options)
            check_cell(prompt, where=where)
            cells.append(prompt)
    check_size(cells)
    return cells


def load_cells(name: str, data: bytes) -> list[Cell]:
    """Cells from an uploaded `.md` lesson or `.ipynb` notebook."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise LessonError("the file is not UTF-8 text.") from None
    if name.lower().endswith(".ipynb"):
        return from_ipynb(text)
    if name.lower().endswith((".md", ".markdown")):
        return parse_lesson(text)
    raise LessonError("choose a lesson (.md) or a Jupyter notebook (.ipynb).")


def lesson_title(cells: Sequence[Cell]) -> str:
    for cell in cells:
        if isinstance(cell, MarkdownCell):
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return "Lesson"


def list_lessons(folder: Path = LESSONS_DIR) -> dict[str, Path]:
    """Shipped lessons by title, in file order."""
    return {lesson_title(parse_lesson(p.read_text())): p for p in sorted(folder.glob("*.md"))}
