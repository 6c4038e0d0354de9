"""Compare: one conversation run as 2 to 4 variants side by side, and the chat-format fault lab.

Owns: the named chat-format faults (`FAULTS`, each with what it does and why it matters), the
engine traps as columns (`TRAPS`, from `traps`: what a library or engine does to a correct
prompt, run with the ids and end ids that library gives), a column's `Variant` (the correct prompt,
a fault, a trap or a prompt edited by hand, plus sampling changes), turning a variant into the
exact text, ids and sampling values it runs (`plan_column`), the token difference between two
prompts (`token_diff`; `readable_diff` to show it), where two outputs part
(`first_difference`), the note beside a fault the served model was measured not to show, and
which engine a column runs on (`SERVED` or the remote `PEER`, `playground_of`), with the
divergence of a column run on another engine than column 1's (`divergence_data`).
Does not own: the template rules (`chat_format`), fitting and streaming (`session.Playground`),
markup (`display`), or the UI. Imports no gradio, so the Compare tab, the `/compare` endpoint and
the lesson share it.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from playground import display, traps
from playground.chat_format import (
    BOS,
    END_OF_TURN,
    START_OF_TURN,
    ChatFormatError,
    RenderOptions,
    parse_conversation,
)
from playground.divergence import NEEDS_GREEDY, Divergence, divergence
from playground.engines import AS_SENT, Delivery, GenerationResult
from playground.errors import UserError
from playground.sampling import SAMPLING_NAMES, ParamError, SamplingParams
from playground.session import Playground, fit_prompt
from playground.tokens import Token
from playground.traps import Trap

MAX_COLUMNS = 4
CORRECT = "correct"  # the prompt exactly as the Chat tab sends it
EDITED = "edited"  # a rendered prompt edited by hand, sent as is
# One column's sampling changes, as `name=value` pairs: short enough for a phone's keyboard.
MAX_CHANGES_CHARS = 200
# The engines a column may run on: the served one, or the remote server configured beside it
# (`engines.open_peer`), on the same model's tokenizer.
SERVED, PEER = "served", "peer"
ENGINES = (SERVED, PEER)
NO_PEER = (
    "This column runs on the peer engine, but none is configured: give the remote server's "
    "address (--base-url, PLAYGROUND_BASE_URL or playground.remote.base_url) beside the local "
    "engine."
)


@dataclass(frozen=True)
class Inputs:
    """What every variant starts from: the conversation (a system message may lead) and options
    the Chat tab would send."""

    playground: Playground
    messages: list[dict[str, str]]
    options: RenderOptions
    max_new_tokens: int

    def prompt(self, fold_separator: str | None = None, **changes: Any) -> str:
        """The prompt the Chat tab sends (its template, separator and budget), with `changes`
        to the options."""
        settings = self.playground.settings
        separator = settings.fold_separator if fold_separator is None else fold_separator
        budget = fit_prompt(
            self.messages,
            replace(self.options, fold_separator=separator, **changes),
            engine=self.playground.engine,
            max_new_tokens=self.max_new_tokens,
        )
        return budget.rendered.text

    def system(self) -> str:
        """The system message, for the faults that are about it."""
        if not self.messages or self.messages[0]["role"] != "system":
            raise UserError(
                'This fault is about the system message: add one ({"role": "system", ...} '
                "first) to see what it does."
            )
        return self.messages[0]["content"].strip()

    @functools.cached_property
    def case(self) -> traps.Case:
        """What an engine trap starts from: the correct prompt (fitted once, for both the trap's
        text and its delivery) and what it was made of."""
        return self.playground.trap_case(self.prompt(), self.messages, self.options.prefill)

    def without_system(self) -> Inputs:
        return replace(self, messages=[m for m in self.messages if m["role"] != "system"])


@dataclass(frozen=True)
class Fault:
    """A named mistake in the chat format: `change` makes its prompt from the correct inputs.
    An engine trap (what a library or engine does to a correct prompt) also says how the prompt
    reaches the model (`deliver`, from the inputs and that prompt): other ids than the text's,
    or other end ids."""

    title: str
    doc: str
    change: Callable[[Inputs], str]
    deliver: Callable[[Inputs, str], Delivery] | None = None

    @property
    def trap(self) -> bool:
        return self.deliver is not None


@dataclass(frozen=True)
class Variant:
    """What one column runs: `prompt` is CORRECT, EDITED or a key of LAB; `text` is the
    edited prompt; `sampling` the values that differ from the sidebar's, by name; `engine`
    the engine it runs on (`ENGINES`)."""

    prompt: str = CORRECT
    text: str = ""
    sampling: Mapping[str, Any] = field(default_factory=dict)
    engine: str = SERVED


@dataclass(frozen=True)
class Column:
    """A variant made concrete: the exact text sent, its tokens and sampling, how it reaches
    the model, and notes."""

    title: str
    prompt: str
    tokens: list[Token]
    params: SamplingParams
    notes: tuple[str, ...] = ()
    delivery: Delivery = AS_SENT


# ---- the faults -------------------------------------------------------------------------------


def _system_as_is(inputs: Inputs) -> str:
    turn = f"{START_OF_TURN}system\n{inputs.system()}{END_OF_TURN}\n"
    return inputs.without_system().prompt().replace(BOS, BOS + turn, 1)


def _policy(policy: str) -> Callable[[Inputs], str]:
    return lambda inputs: inputs.system() and inputs.prompt(system_policy=policy)


def _other_separator(inputs: Inputs) -> str:
    inputs.system()
    other = "\n" if inputs.playground.settings.fold_separator != "\n" else "\n\n"
    return inputs.prompt(fold_separator=other)


def _no_role_newline(inputs: Inputs) -> str:
    text = inputs.prompt()
    for role in ("user", "model"):
        text = text.replace(f"{START_OF_TURN}{role}\n", f"{START_OF_TURN}{role}")
    return text


def _typed_control(inputs: Inputs) -> str:
    last = max(i for i, m in enumerate(inputs.messages) if m["role"] == "user")
    typed = [dict(m) for m in inputs.messages]
    typed[last]["content"] += END_OF_TURN
    return replace(inputs, messages=typed).prompt()


FAULTS: dict[str, Fault] = {
    "no-generation-prompt": Fault(
        "No generation prompt",
        "The prompt ends after the user's <end_of_turn>, without <start_of_turn>model: the "
        "model is not told that its turn has begun, so it may write the user's next line, "
        "open a turn of its own or stop at once. (add_generation_prompt=False; a prefill "
        "needs the generation prompt, so it goes too.)",
        lambda inputs: inputs.prompt(add_generation_prompt=False, prefill=""),
    ),
    "second-bos": Fault(
        "A second <bos>",
        "<bos><bos> at the start: what a tokenizer that adds special tokens does to a prompt "
        "whose template already wrote <bos>. Gemma was trained with exactly one; a second is "
        "input it never saw, which can change its replies.",
        lambda inputs: BOS + inputs.prompt(),
    ),
    "assistant-role": Fault(
        "'assistant' as the role name",
        "<start_of_turn>assistant instead of <start_of_turn>model: OpenAI's role name written "
        "into the prompt. Gemma-2 knows the roles user and model only.",
        lambda inputs: inputs.prompt().replace(
            f"{START_OF_TURN}model\n", f"{START_OF_TURN}assistant\n"
        ),
    ),
    "system-as-is": Fault(
        "System turn passed through",
        "A <start_of_turn>system turn, as a template written for other models would send it. "
        "Gemma-2 was trained without a system role (its template raises 'System role not "
        "supported'), so it sees a turn it never learned.",
        _system_as_is,
    ),
    "drop-system": Fault(
        "System policy: drop",
        "The system message is left out: the model never sees those instructions.",
        _policy("drop"),
    ),
    "error-system": Fault(
        "System policy: error",
        "The system message is refused with the template's own error, as Gemma-2's template "
        "does: nothing is generated.",
        _policy("error"),
    ),
    "other-separator": Fault(
        "The other fold separator",
        "The system message folded into the first user message with '\\n' instead of "
        "'\\n\\n' (or the other way round, whichever the setting is not): the separator "
        "OpenVINO GenAI, llama.cpp and Ollama use. A small change in tokens; see whether the "
        "reply changes.",
        _other_separator,
    ),
    "no-role-newline": Fault(
        "No newline after the role",
        "<start_of_turn>user followed at once by the text, and <start_of_turn>model with no "
        "'\\n': the newline is part of the format the model learned.",
        _no_role_newline,
    ),
    "prefill-space": Fault(
        "A prefill ending in a space",
        "The prefill ends with ' ' (the prefill, or 'Sure,' when there is none). Gemma's "
        "tokens carry their space in front ('▁word'), so a trailing space is a token the "
        "model rarely saw before a word: replies often start oddly.",
        lambda inputs: inputs.prompt(prefill=(inputs.options.prefill.rstrip() or "Sure,") + " "),
    ),
    "typed-control-tokens": Fault(
        "Control tokens typed in the text",
        "The last user message ends with the text <end_of_turn> typed by the user. The "
        "tokenizer reads it as the control token, so the user's turn ends twice: typed control "
        "text is a prompt-injection path.",
        _typed_control,
    ),
}


def _as_fault(trap: Trap) -> Fault:
    return Fault(trap.title, trap.doc, lambda inputs: trap.text(inputs.case),
                 lambda inputs, text: trap.deliver(inputs.case, text))  # fmt: skip


# Every column kind of the fault lab: the mistakes people write, then what engines do (`traps`).
TRAPS: dict[str, Fault] = {name: _as_fault(trap) for name, trap in traps.TRAPS.items()}
LAB: dict[str, Fault] = {**FAULTS, **TRAPS}
VARIANT_TITLES = {
    CORRECT: "Correct: as the Chat tab sends it",
    **{name: f"{'Engine trap' if fault.trap else 'Fault'}: {fault.title}"
       for name, fault in LAB.items()},
    EDITED: "The prompt, edited by hand",
}  # fmt: skip


# ---- columns ----------------------------------------------------------------------------------


def parse_changes(text: str) -> dict[str, float]:
    """`temperature=1.2 seed=7` (spaces, commas or new lines between) as values by name."""
    if len(text) > MAX_CHANGES_CHARS:
        raise ParamError(f"Sampling changes have {len(text)} characters; the limit is 200.")
    changes: dict[str, float] = {}
    for item in text.replace(",", " ").split():
        name, sep, value = item.partition("=")
        if not sep or name not in SAMPLING_NAMES:
            names = ", ".join(SAMPLING_NAMES)
            raise ParamError(f"Sampling changes are name=value pairs, with names from: {names}.")
        try:
            changes[name] = float(value)
        except ValueError:
            raise ParamError(f"Sampling change {name}: {value!r} is not a number.") from None
    return changes


def conversation_inputs(
    playground: Playground, conversation: str, prefill: str
) -> tuple[list[dict[str, str]], RenderOptions]:
    """The compared conversation (JSON) as the Chat tab's messages and options: a leading
    system message is the system prompt (left out when blank), folded by the default policy."""
    messages = parse_conversation(playground.check_text(conversation, "The conversation"))
    options = RenderOptions(prefill=playground.check_text(prefill, "The prefill"))
    if messages and messages[0]["role"] == "system" and not messages[0]["content"].strip():
        messages = messages[1:]
    if not [m for m in messages if m["role"] != "system"]:
        raise ChatFormatError("the conversation is empty: add at least one user message")
    return messages, options


def plan_column(
    playground: Playground,
    messages: list[dict[str, str]],
    options: RenderOptions,
    variant: Variant,
    params: SamplingParams,
) -> Column:
    """The exact text and sampling values of one column. `params` are the shared values; the
    variant's sampling changes are checked against space.yaml's ranges like the sliders."""
    if variant.sampling:
        values = params.values() | dict(variant.sampling)
        params = playground.params(values, list(params.stop))
    notes: tuple[str, ...] = ()
    delivery = AS_SENT
    if variant.prompt == EDITED:
        text = playground.check_text(variant.text, "The edited prompt")
        if not text.strip():
            raise ParamError("The edited prompt is empty.")
    elif variant.prompt == CORRECT:
        text = Inputs(playground, messages, options, params.max_new_tokens).prompt()
    elif variant.prompt in LAB:
        fault = LAB[variant.prompt]
        inputs = Inputs(playground, messages, options, params.max_new_tokens)
        text = fault.change(inputs)
        notes = (fault.doc,)
        if fault.deliver is not None:
            delivery = fault.deliver(inputs, text)
            playground.engine.check_delivery(delivery)
            notes += tuple(traps.delivery_notes(delivery, playground.engine.tokenizer))
        if playground.unchanged_by(variant.prompt):
            notes += (display.unchanged_note(playground.model),)
    else:
        raise ParamError(f"Unknown variant {variant.prompt!r}: choose one of {', '.join(LAB)}.")
    title = VARIANT_TITLES[variant.prompt]
    if variant.sampling:
        title += " · " + ", ".join(f"{k}={v:g}" for k, v in variant.sampling.items())
    tokenizer = playground.engine.tokenizer
    ids = tokenizer.encode(text) if delivery.ids is None else list(delivery.ids)
    # Refused here, before its token view and any diff: a column the engine would refuse costs
    # no more than its encoding (a 41,000-token edited prompt was described token by token and
    # diffed first, and a shared link can carry one: issue 34, item 16).
    playground.engine.check_fits(len(ids), params.max_new_tokens)
    return Column(title, text, tokenizer.describe(ids), params, notes, delivery)


# ---- differences ------------------------------------------------------------------------------


# The longest prompt, or past it the longest differing middle (after the tokens both prompts
# start and end with), that is diffed token by token. difflib's matcher is cubic on runs of
# alike tokens: 2,000 byte-fallback emoji tokens a side took 6.6 s here, 1,000 took 0.78 s and
# 500 took 0.10 s. A longer middle is shown as one change: still true, only not the smallest.
MAX_DIFF_TOKENS = 500


def token_diff(reference: Sequence[Token], tokens: Sequence[Token]) -> list[tuple[str, list]]:
    """`tokens` against `reference` as runs of ("same" | "added" | "removed", tokens), in the
    order they read: what this prompt has that the reference lacks, and what it lost. Its cost
    is bounded whatever the input (`MAX_DIFF_TOKENS`)."""
    a, b = [t.id for t in reference], [t.id for t in tokens]
    start = end = 0
    if max(len(a), len(b)) > MAX_DIFF_TOKENS:  # shorter ones are diffed whole, as difflib does
        while start < min(len(a), len(b)) and a[start] == b[start]:
            start += 1
        while end < min(len(a), len(b)) - start and a[-1 - end] == b[-1 - end]:
            end += 1
    runs: list[tuple[str, list]] = [("same", list(tokens[:start]))] if start else []
    a_end, b_end = len(a) - end, len(b) - end
    if max(a_end, b_end) - start <= MAX_DIFF_TOKENS:
        matcher = difflib.SequenceMatcher(None, a[start:a_end], b[start:b_end], autojunk=False)
        opcodes = [(op, i1 + start, i2 + start, j1 + start, j2 + start)
                   for op, i1, i2, j1, j2 in matcher.get_opcodes()]  # fmt: skip
    else:
        opcodes = [("replace", start, a_end, start, b_end)]
    for op, i1, i2, j1, j2 in opcodes:
        if op == "equal":
            runs.append(("same", list(tokens[j1:j2])))
            continue
        if i2 > i1:
            runs.append(("removed", list(reference[i1:i2])))
        if j2 > j1:
            runs.append(("added", list(tokens[j1:j2])))
    if end:
        runs.append(("same", list(tokens[b_end:])))
    return runs


# On a model whose tokens are characters (tiny-tutor), difflib keeps stray letters of changed
# words alike ("user" against "system" keeps the s and the e), and the marks read as confetti
# (issue 33). For the eye, an alike run this short between two changes is shown inside them.
SLIVER_CHARS = 3


def readable_diff(runs: Sequence[tuple[str, list]]) -> list[tuple[str, list]]:
    """`token_diff`'s runs for reading: an alike run of under `SLIVER_CHARS` characters between
    two changes is shown as removed and added with them, so a changed word is marked whole. Both
    prompts still read out of it; counts come from the exact runs (`diff_counts`)."""
    parts: list[list] = []  # ["same", tokens] or ["change", removed, added]
    for kind, tokens in runs:
        if kind == "same":
            sliver = len("".join(t.piece for t in tokens)) < SLIVER_CHARS
            between = sliver and bool(parts) and parts[-1][0] == "change"
            parts.append(["same", list(tokens), between])
            continue
        if parts and parts[-1][0] == "same" and parts[-1][2]:
            same = parts.pop()[1]
            parts[-1][1] += same
            parts[-1][2] += same
        if not parts or parts[-1][0] != "change":
            parts.append(["change", [], []])
        parts[-1][1 if kind == "removed" else 2] += tokens
    shown: list[tuple[str, list]] = []
    for part in parts:
        if part[0] == "same":
            shown.append(("same", part[1]))
            continue
        shown += [(kind, run) for kind, run in (("removed", part[1]), ("added", part[2])) if run]
    return shown


def diff_counts(runs: Sequence[tuple[str, list]]) -> tuple[int, int]:
    """(tokens added, tokens removed) in a `token_diff`."""
    added = sum(len(run) for kind, run in runs if kind == "added")
    removed = sum(len(run) for kind, run in runs if kind == "removed")
    return added, removed


def first_difference(reference: str, text: str) -> int | None:
    """The first character where `text` departs from `reference`; None when they are equal."""
    if reference == text:
        return None
    same = 0
    for a, b in zip(reference, text, strict=False):
        if a != b:
            break
        same += 1
    return same


# ---- the whole comparison as data (the /compare endpoint, lessons) ----------------------------


def parse_variants(data: object) -> list[Variant]:
    """Columns from JSON data: 2 to 4 items, each a variant's name (`name@peer` runs it on the
    peer engine) or an object {"prompt": name, "text": edited prompt, "sampling": {name:
    value}, "engine": "served" or "peer"}."""
    if not isinstance(data, list) or not 2 <= len(data) <= MAX_COLUMNS:
        raise ParamError(f"columns must be a JSON list of 2 to {MAX_COLUMNS} variants.")
    variants = []
    for position, item in enumerate(data, 1):
        if isinstance(item, str):
            name, _, engine = item.partition("@")
            item = {"prompt": name, "engine": engine or SERVED}
        if not isinstance(item, dict) or set(item) - {"prompt", "text", "sampling", "engine"}:
            raise ParamError(
                f"column {position}: expected a variant name or an object with prompt, text, "
                "sampling and engine."
            )
        sampling = item.get("sampling") or {}
        text = item.get("text") or ""
        if not isinstance(sampling, dict) or not isinstance(text, str):
            raise ParamError(f"column {position}: sampling must be an object, text a string.")
        unknown = set(sampling) - set(SAMPLING_NAMES)
        if unknown:
            raise ParamError(f"column {position}: unknown sampling names {sorted(unknown)}.")
        engine = item.get("engine") or SERVED
        if engine not in ENGINES:
            raise ParamError(f"column {position}: engine must be one of {', '.join(ENGINES)}.")
        variants.append(Variant(str(item.get("prompt") or CORRECT), text, sampling, engine))
    return variants


def playground_of(engine: str, playground: Playground, peer: Playground | None) -> Playground:
    """The playground (so the engine and its tokenizer) a column on `engine` (`ENGINES`) runs
    on: the served `playground`, or the `peer`."""
    if engine == SERVED:
        return playground
    if peer is None:
        raise ParamError(NO_PEER)
    return peer


def greedy_divergence(
    reference: tuple[GenerationResult, SamplingParams],
    other: tuple[GenerationResult, SamplingParams],
) -> Divergence | None:
    """A column's run against column 1's, each (result, sampling values); None unless both
    were greedy: only there do the outputs part because the engines differ, not by chance."""
    if not (reference[1].greedy and other[1].greedy):
        return None
    return divergence(reference[0], other[0])


def divergence_data(
    reference: tuple[GenerationResult, SamplingParams],
    other: tuple[GenerationResult, SamplingParams],
    playground: Playground,
) -> dict[str, Any]:
    """`greedy_divergence` as JSON-ready data (`divergence.Divergence.as_json`, its pieces from
    `playground`'s tokenizer), or the note that says why there is none."""
    found = greedy_divergence(reference, other)
    if found is None:
        return {"greedy": False, "note": NEEDS_GREEDY}
    return {"greedy": True, **found.as_json(playground.engine.tokenizer)}


def compare(
    playground: Playground,
    messages: list[dict[str, str]],
    options: RenderOptions,
    variants: Sequence[Variant],
    params: SamplingParams,
    peer: Playground | None = None,
) -> list[dict[str, Any]]:
    """Every column planned and run to its end, one after another, on its engine (`peer` is
    the remote one beside the served `playground`), as JSON-ready data: its prompt, notes (a
    fault's or trap's explanation, what a trap sends), token count and difference from column
    1's, output, figures, where the output parts from column 1's, and for a column on another
    engine than column 1's its `divergence`. A column that cannot run carries its `error`
    instead."""
    results: list[dict[str, Any]] = []
    runs: dict[int, tuple[GenerationResult, SamplingParams]] = {}
    reference: Column | None = None
    for position, variant in enumerate(variants, 1):
        try:
            on = playground_of(variant.engine, playground, peer)
            column = plan_column(on, messages, options, variant, params)
        except UserError as error:
            results.append({"column": position, "engine": variant.engine, "error": str(error)})
            continue
        reference = reference or (column if position == 1 else None)
        runs_diff = token_diff(reference.tokens, column.tokens) if reference else []
        try:
            *_, last = on.complete(column.prompt, column.params, delivery=column.delivery)
        except UserError as error:  # this column's alone (one over the context, say)
            results.append({"column": position, "engine": variant.engine,
                            "title": column.title, "error": str(error)})  # fmt: skip
            continue
        runs[position] = (last.result, column.params)
        results.append(_column_data(position, variant.engine, column, runs_diff, last))
    _add_differences(results, runs, variants, peer or playground)
    return results


def _column_data(
    position: int, engine: str, column: Column, runs: list[tuple[str, list]], last: Any
) -> dict[str, Any]:
    added, removed = diff_counts(runs)
    return {
        "column": position,
        "engine": engine,
        "title": column.title,
        "prompt": column.prompt,
        "notes": list(column.notes),
        "token_count": len(column.tokens),
        "tokens_added": added,
        "tokens_removed": removed,
        "diff": [
            {"kind": kind, "tokens": [{"id": t.id, "piece": t.piece} for t in tokens]}
            for kind, tokens in runs
            if kind != "same"
        ],
        "output": last.text,
        "figures": last.figures,
    }


def _add_differences(
    results: list[dict[str, Any]],
    runs: Mapping[int, tuple[GenerationResult, SamplingParams]],
    variants: Sequence[Variant],
    playground: Playground,
) -> None:
    """Where each output parts from column 1's, and, for a column on another engine than
    column 1's, its divergence (only there: on one engine, greedy runs of one prompt are the
    same run, and the character line already says where two prompts' outputs part)."""
    first = results[0].get("output")
    for result in results:
        if "output" in result and first is not None:
            result["parts_at"] = first_difference(first, result["output"])
        position = result["column"]
        if 1 in runs and position in runs and variants[position - 1].engine != variants[0].engine:
            result["divergence"] = divergence_data(runs[1], runs[position], playground)
