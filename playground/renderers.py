"""Renderers side by side: one conversation through every chat-template renderer that runs here.

Owns: running a conversation through the renderers a Gemma-2 prompt meets outside the playground,
each exactly as its library does it: transformers' `apply_chat_template` on the model folder's
Jinja template (`hf-jinja`), OpenVINO GenAI's `Tokenizer.apply_chat_template` (`genai`),
llama-cpp-python's `Jinja2ChatFormatter` on a GGUF's embedded template, built as its `Llama`
builds it (`gguf`), and llama.cpp's C++ built-in formatter, `llama_chat_apply_template`, which
llama.cpp's server uses without --jinja (`llama.cpp built-in`); the token ids of each text, as
written (`Tokenizer.encode_as_is`); and naming how each text differs from the playground's own
rendering (`name_differences`, a pure function over two texts and the conversation).
Does not own: the template rules and the canonical rendering (`chat_format.render`), the
tokenizer (`tokens`), markup (`display.renderers_view`) or the UI. Imports no gradio, and no
renderer's library until that renderer runs: one that is missing, or a file a renderer needs,
makes it unavailable, with one line that says why. Nothing is ever faked.

A prefill goes to every library as a final assistant message: transformers continues it
(`continue_final_message`); GenAI and llama.cpp's built-in formatter have no way to continue a
message, so theirs comes back closed; llama-cpp-python always adds the generation prompt (its
`Llama` builds the formatter with the default), so after a prefill it opens a second model turn.
Each renderer gets the conversation as typed, its system message included: the system policy
is the playground's, applied to the canonical rendering only.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playground.chat_format import (
    BOS,
    END_OF_TURN,
    START_OF_TURN,
    RenderOptions,
    parse_conversation,
    render,
)
from playground.errors import UserError, reason_of
from playground.tokens import Tokenizer, genai_tokenizer

KINDS = ("<bos>", "trim", "separator", "newline", "refusal", "other")
CANONICAL = "canonical"
CANONICAL_LABEL = "The playground's own: chat_format.render with the model's template"


@dataclass(frozen=True)
class Difference:
    """One named way a renderer's text differs from the playground's: `kind` (one of `KINDS`)
    and a one-line explanation that says where."""

    kind: str
    explanation: str


@dataclass(frozen=True)
class Rendering:
    """What one renderer made of the conversation: its exact text and that text's ids, or why
    it refused (a `refusal` difference, no text), or why it can't run here (`unavailable`)."""

    name: str
    label: str
    text: str | None = None
    ids: tuple[int, ...] | None = None
    differences: tuple[Difference, ...] = ()
    unavailable: str | None = None

    def as_json(self) -> dict:
        return {
            "name": self.name,
            "label": self.label,
            "text": self.text,
            "ids": None if self.ids is None else list(self.ids),
            "token_count": None if self.ids is None else len(self.ids),
            "differences": [
                {"kind": d.kind, "explanation": d.explanation} for d in self.differences
            ],
            "unavailable": self.unavailable,
        }


class Unavailable(Exception):
    """A renderer that can't run here; str() says why, in one line."""


# ---- running the renderers -------------------------------------------------------------------


def compare_renderers(
    messages: Sequence[Mapping[str, object]],
    options: RenderOptions,
    folder: Path,
    tokenizer: Tokenizer,
    gguf: Path | None = None,
) -> tuple[Rendering, ...]:
    """The canonical rendering first, then every renderer's, each with its named differences.
    `gguf` defaults to the folder's only .gguf file (tiny-tutor ships one). Raises
    `ChatFormatError` when the playground itself refuses the conversation."""
    messages = parse_conversation(list(messages))
    canonical = render(messages, options, template=tokenizer.chat_template).text
    found = [Rendering(CANONICAL, CANONICAL_LABEL, canonical, _ids(tokenizer, canonical))]
    gguf = gguf or find_gguf(folder)
    with _LOCK:  # the libraries' tokenizers are shared by every visitor
        for name, label, run in RENDERERS:
            try:
                text = run(messages, options, folder, gguf)
            except Unavailable as why:
                found.append(Rendering(name, label, unavailable=str(why)))
                continue
            except Exception as error:  # the library's own refusal, in its own words
                refusal = Difference(
                    "refusal", f"{label.split(':')[0]} refuses: {reason_of(error)}"
                )
                found.append(Rendering(name, label, differences=(refusal,)))
                continue
            named = [
                _with_hint(name, d) for d in name_differences(canonical, text, messages, options)
            ]
            found.append(Rendering(name, label, text, _ids(tokenizer, text), tuple(named)))
    return tuple(found)


def find_gguf(folder: Path) -> Path | None:
    """The folder's GGUF, when it holds exactly one."""
    found = sorted(folder.glob("*.gguf"))
    return found[0] if len(found) == 1 else None


def report(renderings: Sequence[Rendering]) -> str:
    """The comparison as plain text, for the terminal: texts as Python literals, so control
    tokens and whitespace show."""
    lines = []
    for r in renderings:
        if r.unavailable:
            lines.append(f"{r.name}: unavailable: {r.unavailable}")
            continue
        lines.append(f"{r.name}: {r.label}")
        if r.text is not None and r.ids is not None:
            lines.append(f"  text: {r.text!r}")
            lines.append(f"  {len(r.ids)} tokens: {list(r.ids)}")
        if r.name != CANONICAL:
            lines += [f"  {d.kind}: {d.explanation}" for d in r.differences] or [
                "  the same text as the canonical rendering"
            ]
    return "\n".join(lines) + "\n"


_LOCK = threading.Lock()
# What each library does that explains a difference, added to the explanation that names it.
_NO_CONTINUE = "has no way to continue a final message."
_HINTS = {
    "genai": {"is closed with": f"OpenVINO GenAI's apply_chat_template {_NO_CONTINUE}"},
    "gguf": {
        "is closed with": f"llama-cpp-python's chat formatter {_NO_CONTINUE}",
        "generation prompt after": "llama-cpp-python's Llama always adds one.",
    },
    "llama.cpp built-in": {
        "starts with": "llama.cpp adds one when it tokenizes the prompt if the GGUF's "
        "tokenizer.ggml.add_bos_token is true, as Gemma's GGUFs have it.",
        "is closed with": f"llama_chat_apply_template {_NO_CONTINUE}",
    },
}


def _with_hint(name: str, difference: Difference) -> Difference:
    hints = [h for key, h in _HINTS.get(name, {}).items() if key in difference.explanation]
    return Difference(difference.kind, " ".join([difference.explanation, *hints]))


def _ids(tokenizer: Tokenizer, text: str) -> tuple[int, ...]:
    return tuple(tokenizer.encode_as_is(text))


def _library_messages(messages: Sequence[Mapping[str, str]], prefill: str) -> list[dict]:
    extra = [{"role": "assistant", "content": prefill}] if prefill else []
    return [{"role": m["role"], "content": m["content"]} for m in messages] + extra


@functools.lru_cache(maxsize=2)
def _hf_tokenizer(folder: Path) -> object:  # transformers' own type, imported lazily
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def _loaded(library: str, package: str, load: Callable[[Path], Any], folder: Path) -> Any:
    """`load(folder)`, or Unavailable saying in one line why `library` can't run here."""
    try:
        return load(folder)
    except ImportError:
        raise Unavailable(f"{package} is not installed (requirements.txt has it)") from None
    except UserError as error:  # the loader's own words (a folder without the files it needs)
        raise Unavailable(str(error)) from None
    except Exception as error:
        why = f"{library} can't load {folder.name}'s tokenizer: {reason_of(error)}"
        raise Unavailable(why) from None


def _hf_jinja(messages: list, options: RenderOptions, folder: Path, gguf: Path | None) -> str:
    tokenizer = _loaded("transformers", "transformers", _hf_tokenizer, folder)
    if not tokenizer.chat_template:
        raise Unavailable(f"{folder.name}'s tokenizer has no chat template for transformers")
    prefill = options.prefill
    return tokenizer.apply_chat_template(
        _library_messages(messages, prefill),
        tokenize=False,
        add_generation_prompt=options.add_generation_prompt and not prefill,
        continue_final_message=bool(prefill),
    )


def _genai(messages: list, options: RenderOptions, folder: Path, gguf: Path | None) -> str:
    tokenizer = _loaded("OpenVINO GenAI", "openvino-genai", genai_tokenizer, folder)
    prefill = options.prefill
    return tokenizer.apply_chat_template(
        _library_messages(messages, prefill), options.add_generation_prompt and not prefill
    )


@dataclass(frozen=True)
class GGUFChat:
    """What llama-cpp-python reads from a GGUF to build its chat formatter."""

    template: str | None
    bos_id: int | None
    eos_id: int | None
    bos_token: str | None
    eos_token: str | None


def read_gguf_chat(path: Path) -> GGUFChat:
    """The GGUF's `tokenizer.chat_template` and its bos and eos tokens' ids and texts, read with
    the `gguf` package (requirements-dev.txt; the app's run needs none of it)."""
    try:
        stat = path.stat()
    except OSError as error:
        raise Unavailable(f"the GGUF {path} can't be read: {error.strerror}") from None
    return _read_gguf_chat(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _read_gguf_chat(path: Path, mtime_ns: int, size: int) -> GGUFChat:
    try:
        import gguf
    except ImportError:
        raise Unavailable(
            "the gguf package is not installed (requirements-dev.txt has it), so the GGUF's "
            "template can't be read"
        ) from None
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as error:
        raise Unavailable(f"{path.name} can't be read as a GGUF: {reason_of(error)}") from None
    fields = reader.fields

    def value(key: str) -> object:
        return fields[key].contents() if key in fields else None

    tokens = fields.get("tokenizer.ggml.tokens")

    def text(token_id: object) -> str | None:
        return None if token_id is None or tokens is None else tokens.contents(int(token_id))

    bos, eos = value("tokenizer.ggml.bos_token_id"), value("tokenizer.ggml.eos_token_id")
    template = value("tokenizer.chat_template")
    return GGUFChat(
        template if isinstance(template, str) else None,
        None if bos is None else int(bos),
        None if eos is None else int(eos),
        text(bos),
        text(eos),
    )


def _gguf(messages: list, options: RenderOptions, folder: Path, gguf: Path | None) -> str:
    if gguf is None:
        raise Unavailable(f"no GGUF: {folder.name} holds no single .gguf file, and none was given")
    chat = read_gguf_chat(gguf)
    if chat.template is None:
        raise Unavailable(f"{gguf.name} has no tokenizer.chat_template")
    if chat.bos_token is None or chat.eos_token is None:
        raise Unavailable(f"{gguf.name} names no bos or eos token, which the formatter is given")
    try:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    except Exception as error:
        raise Unavailable(f"llama-cpp-python can't be imported: {reason_of(error)}") from None
    # Exactly as llama_cpp.Llama builds it from the GGUF's metadata (add_generation_prompt is
    # left at its default, True); the handler then tokenizes without adding a <bos>.
    formatter = Jinja2ChatFormatter(
        template=chat.template,
        eos_token=chat.eos_token,
        bos_token=chat.bos_token,
        stop_token_ids=[chat.eos_id],
    )
    return formatter(messages=_library_messages(messages, options.prefill)).prompt


def _builtin(messages: list, options: RenderOptions, folder: Path, gguf: Path | None) -> str:
    try:
        import llama_cpp
    except Exception as error:
        raise Unavailable(f"llama-cpp-python can't be imported: {reason_of(error)}") from None
    template = None
    if gguf is not None:
        with contextlib.suppress(Unavailable):  # then llama.cpp's own name for its formatter
            template = read_gguf_chat(gguf).template
    chat = _library_messages(messages, options.prefill)
    if any("\0" in m["role"] + m["content"] for m in chat):
        raise Unavailable("a message holds a NUL character, where llama.cpp's C API stops reading")
    array = (llama_cpp.llama_chat_message * len(chat))(
        *(llama_cpp.llama_chat_message(m["role"].encode(), m["content"].encode()) for m in chat)
    )
    tmpl = (template or "gemma").encode()
    add = options.add_generation_prompt and not options.prefill
    size = 2 * sum(len(m["content"].encode()) for m in chat) + 256
    for _ in range(2):  # the first call says how big the text is when the buffer is too small
        buffer = ctypes.create_string_buffer(size)
        length = llama_cpp.llama_chat_apply_template(tmpl, array, len(chat), add, buffer, size)
        if length < 0:
            raise Unavailable("llama.cpp has no built-in formatter for this GGUF's template")
        if length <= size:
            return buffer.raw[:length].decode("utf-8")
        size = length
    raise RuntimeError("llama_chat_apply_template kept asking for a larger buffer")


Runner = Callable[[list, RenderOptions, Path, "Path | None"], str]
RENDERERS: tuple[tuple[str, str, Runner], ...] = (
    ("hf-jinja", "transformers: apply_chat_template on the folder's Jinja template", _hf_jinja),
    ("genai", "OpenVINO GenAI: Tokenizer.apply_chat_template", _genai),
    ("gguf", "llama-cpp-python: Jinja2ChatFormatter on the GGUF's template", _gguf),
    (
        "llama.cpp built-in",
        "llama.cpp: its built-in gemma formatter (llama_chat_apply_template)",
        _builtin,
    ),
)


# ---- naming the differences ------------------------------------------------------------------


@dataclass(frozen=True)
class _Turn:
    role: str
    newline: bool  # a newline after the role
    content: str
    closed: bool  # ended by <end_of_turn>
    after: str  # the text after <end_of_turn>, up to the next turn


_HEAD = re.compile(rf"(.*?)(\n|(?={re.escape(END_OF_TURN)})|\Z)(.*)", re.S)


def _turns(text: str) -> tuple[str, list[_Turn]]:
    """The text before the first turn, and the turns, read leniently: any text parses."""
    lead, *chunks = text.split(START_OF_TURN)
    turns = []
    for chunk in chunks:
        role, newline, body = _HEAD.match(chunk).groups()
        content, end, after = body.partition(END_OF_TURN)
        turns.append(_Turn(role, newline == "\n", content, bool(end), after))
    return lead, turns


def name_differences(
    canonical: str,
    other: str,
    messages: Sequence[Mapping[str, str]],
    options: RenderOptions | None = None,
) -> list[Difference]:
    """How `other` differs from the `canonical` rendering of `messages` under `options`, each
    difference named (`KINDS`, except `refusal`, which is a renderer's, not a text's) and placed:
    the leading `<bos>`s, then turn by turn, the role's newline, the content (whitespace at its
    edges, the separator of a folded system message), the `<end_of_turn>` and what follows it.
    Empty when the texts are equal."""
    if canonical == other:
        return []
    options = options or RenderOptions()
    found = []
    a_bos, b_bos = _leading(canonical, BOS), _leading(other, BOS)
    if a_bos != b_bos:
        found.append(
            Difference("<bos>", f"the text starts with {b_bos} {BOS}, the canonical with {a_bos}.")
        )
    a_lead, a_turns = _turns(canonical[a_bos * len(BOS) :])
    b_lead, b_turns = _turns(other[b_bos * len(BOS) :])
    if a_lead != b_lead:
        found.append(_other("before the first turn", a_lead, b_lead))
    same = 0
    while same < min(len(a_turns), len(b_turns)):
        aligned = _aligned(a_turns[same], b_turns[same])
        if aligned is None:
            break
        b_turns[same] = aligned
        same += 1
    fold = _fold(messages, options)
    for i in range(same):
        where = _where(a_turns, i)
        found += _turn_differences(a_turns[i], b_turns[i], where, fold if i == 0 else None)
    if same < max(len(a_turns), len(b_turns)):
        found.append(_turns_differ(a_turns[same:], b_turns[same:], same))
    return found or [_other("the text", canonical, other)]


def _aligned(a: _Turn, b: _Turn) -> _Turn | None:
    """`b` read as a turn of `a`'s role, or None if it isn't one: without the newline after the
    role, `<start_of_turn>modelHello` reads as role 'modelHello' until told otherwise."""
    if a.role == b.role:
        return b
    if not b.newline and a.role and b.role.startswith(a.role):
        return _Turn(a.role, False, b.role[len(a.role) :] + b.content, b.closed, b.after)
    return None


def _leading(text: str, token: str) -> int:
    count = 0
    while text.startswith(token, count * len(token)):
        count += 1
    return count


def _fold(messages: Sequence[Mapping[str, str]], options: RenderOptions) -> tuple | None:
    """(system, first user text, separator) when the canonical folds a system message."""
    if len(messages) < 2 or messages[0]["role"] != "system" or options.system_policy != "fold":
        return None
    return messages[0]["content"].strip(), messages[1]["content"].strip(), options.fold_separator


def _where(turns: list[_Turn], i: int) -> str:
    turn = turns[i]
    if i == len(turns) - 1 and not turn.closed and turn.role == "model":
        return "the generation prompt" if not turn.content else f"the prefill (turn {i + 1})"
    return f"turn {i + 1} ({turn.role})"


def _turn_differences(a: _Turn, b: _Turn, where: str, fold: tuple | None) -> list[Difference]:
    found = []
    if a.newline != b.newline:
        said = "an extra newline" if b.newline else "no newline"
        found.append(Difference("newline", f"{where}: {said} after the role {a.role!r}."))
    if a.content != b.content:
        found += (fold and _fold_differences(a.content, b.content, where, fold)) or (
            [Difference("trim", f"{where}: {_edges(a.content, b.content)}.")]
            if a.content.strip() == b.content.strip()
            else [_other(where, a.content, b.content)]
        )
    if a.closed != b.closed:
        said = (
            f"is closed with {END_OF_TURN}: the model would start a new turn, not continue it"
            if b.closed
            else f"is left open, without {END_OF_TURN}"
        )
        found.append(Difference("other", f"{where} {said}."))
    elif a.after != b.after:
        if a.after.replace("\n", "") == b.after.replace("\n", ""):
            found.append(
                Difference(
                    "newline",
                    f"after {where}'s {END_OF_TURN}: {b.after!r} here, {a.after!r} in the "
                    "canonical.",
                )
            )
        else:
            found.append(_other(f"after {where}'s {END_OF_TURN}", a.after, b.after))
    return found


def _edges(a: str, b: str) -> str:
    """Which edges' whitespace differs, and how."""
    if not a.strip():
        return f"all whitespace: {b!r} here, {a!r} in the canonical"
    said = []
    for edge, strip in (("start", str.lstrip), ("end", str.rstrip)):
        a_space = a[len(strip(a)) :] if edge == "end" else a[: len(a) - len(strip(a))]
        b_space = b[len(strip(b)) :] if edge == "end" else b[: len(b) - len(strip(b))]
        if a_space != b_space:
            said.append(
                f"the whitespace at its {edge} is {b_space!r} here, {a_space!r} in the canonical"
            )
    return "; ".join(said)


def _fold_differences(a: str, b: str, where: str, fold: tuple) -> list[Difference]:
    """How a folded system message was joined differently; empty if it wasn't a fold."""
    system, user, separator = fold
    core = b.strip()
    if not (core.startswith(system) and core.endswith(user) and len(core) >= len(system + user)):
        return []
    joint = core[len(system) : len(core) - len(user)]
    if joint.strip():
        return []
    found, inner = [], joint.strip(" \t")
    if inner != separator.strip(" \t"):
        found.append(
            Difference(
                "separator",
                f"{where}: the system message is joined to the first user message with "
                f"{inner!r}, the canonical with {separator!r} (fold_separator).",
            )
        )
    if joint != separator and inner != joint:
        found.append(
            Difference(
                "trim",
                f"{where}: the whitespace at the system message's end and the first user "
                f"message's start is kept ({joint!r} between them); the canonical trims both.",
            )
        )
    if core != b:
        found.append(Difference("trim", f"{where}: {_edges(core, b)}."))
    return found


def _turns_differ(a_rest: list[_Turn], b_rest: list[_Turn], start: int) -> Difference:
    def shown(turns: list[_Turn]) -> str:
        return ", ".join(t.role + ("" if t.closed else " (open)") for t in turns)

    if a_rest and b_rest:
        said = (
            f"from turn {start + 1} the turns differ: {shown(b_rest)} here, {shown(a_rest)} "
            "in the canonical"
        )
    elif b_rest:
        said = f"after turn {start} this text has more: {shown(b_rest)}"
        if start and b_rest[0].role == "model" and not b_rest[0].content:
            said += " (a generation prompt after the last turn)"
    else:
        said = f"after turn {start} this text ends; the canonical goes on with {shown(a_rest)}"
    if any(t.role == "system" for t in b_rest):
        said += "; the system message has a turn of its own, which Gemma-2 never saw in training"
    return Difference("other", said + ".")


def _other(where: str, a: str, b: str) -> Difference:
    at = next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )
    said = f"from character {at}, {_snippet(b, at)} here, {_snippet(a, at)} in the canonical"
    return Difference("other", f"{where}: {said}.")


def _snippet(text: str, start: int) -> str:
    piece = text[start : start + 24]
    if not piece:
        return "the end"
    return repr(piece + "…") if len(text) > start + 24 else repr(piece)
