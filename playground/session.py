"""What a playground turn does, without gradio: the chat's turns, the prompt budget, streaming.

Owns: the list of turns (each `{"role", "content"}`, a reply also carrying its `"figures"`), the
turn operations (submit, regenerate, undo, edit an earlier message, clear, apply an example), the
`conversation` (a system prompt before the turns) and the one `fit_prompt` that both the chat
and the inspector call (with `chat_format.RenderOptions` and the configured fold separator), the
figures of a reply as data, the per-visitor `Control` (Stop flag, busy flag) and the
`Playground` object that the UI, the named API endpoints and the command line share.
Does not own: components or events (`ui`), markup (`display`), template rules (`chat_format`),
generation itself (`engines`). Nothing here imports gradio, so all of it is testable in-process.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from playground import display, traps
from playground.chat_format import (
    CONTROL_TOKEN_TEXTS,
    Budget,
    RenderOptions,
    check_messages,
    check_unicode,
    fit_budget,
    parse_conversation,
)
from playground.engines import (
    AS_SENT,
    Delivery,
    Engine,
    Generation,
    GenerationResult,
    Reading,
)
from playground.errors import UserError
from playground.export import export_code
from playground.inspection import Inspection, inspect_budget, inspect_text
from playground.models import TUTOR, looks_like_repo_id
from playground.notebook import PromptCell, cell_prompt
from playground.sampling import RANGES, ParamError, SamplingParams, stop_list
from playground.settings import Settings
from playground.tokens import Tokenizer
from playground.tutor import UNCHANGED_BY

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
# Gradio's page copies its whole state on every update (structuredClone, seen in a Chromium
# profile), so updates cost the page, not the server. At 10 a second a streaming page on 2
# cores fell behind and a Stop click took 1.3 s on average to reach the engine; at 4 a
# second, 0.5 s (tests/test_browser.py's paced app, 4 clicks each, 2026-12-06).
UPDATE_INTERVAL_S = 0.25
GEMMA2_VOCAB_SIZE = 256000
NEEDS_9B = "needs Gemma-2-9B"  # an example tiny-tutor does not answer (`example_choices`)

Turn = dict[str, Any]  # {"role", "content"}, and "figures" (see `figures_of`) on a reply


# ---- turns ------------------------------------------------------------------------------------


def messages_of(turns: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The turns as plain `{"role", "content"}` messages (what the template sees)."""
    return [{"role": t["role"], "content": t["content"]} for t in turns]


def without_reply(turns: Sequence[Turn]) -> list[Turn]:
    """The turns without their trailing reply (for Regenerate and Undo)."""
    turns = list(turns)
    while turns and turns[-1]["role"] == "assistant":
        turns.pop()
    return turns


def submit(turns: Sequence[Turn], text: str | None) -> list[Turn]:
    """The turns with the visitor's new message; a trailing message whose reply failed is
    replaced by it (a conversation alternates, and the failed one was never answered)."""
    if not isinstance(text, str) or not text.strip():
        raise ParamError("Type a message first.")
    turns = list(turns)
    if turns and turns[-1]["role"] == "user":
        turns.pop()
    return [*turns, {"role": "user", "content": text}]


def regenerate(turns: Sequence[Turn]) -> list[Turn]:
    """The turns ready for a new reply to the last message."""
    turns = without_reply(turns)
    if not turns:
        raise ParamError("Nothing to regenerate yet.")
    return turns


def undo(turns: Sequence[Turn]) -> tuple[str, list[Turn]]:
    """Take back the last message (and its reply): its text goes back into the message box."""
    turns = without_reply(turns)
    if not turns:
        return "", []
    return turns[-1]["content"], turns[:-1]


def edit(turns: Sequence[Turn], index: int, text: str) -> list[Turn]:
    """Replace message `index` and forget everything after it (the OpenAI Playground's habit):
    an edited message of the visitor's is then answered anew."""
    if not 0 <= index < len(turns):
        raise ParamError(f"There is no message {index + 1} to edit.")
    if not isinstance(text, str) or not text.strip():
        raise ParamError("An edited message cannot be empty.")
    return [*turns[:index], {"role": turns[index]["role"], "content": text}]


def needs_reply(turns: Sequence[Turn]) -> bool:
    return bool(turns) and turns[-1]["role"] == "user"


def apply_example(messages: Sequence[Mapping[str, str]]) -> tuple[str, str, list[Turn]]:
    """An example as (system prompt, text for the message box, turns already shown)."""
    messages = list(messages)
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    rest = messages[1:] if system else messages
    last = rest[-1]["content"] if rest and rest[-1]["role"] == "user" else ""
    rest = rest[:-1] if last else rest
    return system, last, [dict(m) for m in rest]


def conversation_json(turns: Sequence[Turn], system: str = "") -> str:
    """The conversation as a JSON file a visitor can download and load back."""
    messages = [{"role": "system", "content": system}] if system.strip() else []
    # A reply's token probabilities stay in the page: the file is the conversation.
    messages += [{k: v for k, v in t.items() if k != "tokens"} for t in turns]
    return json.dumps({"messages": messages}, indent=2, ensure_ascii=False)


def load_conversation(text: str) -> tuple[str, list[Turn]]:
    """A downloaded conversation read back: (system prompt, turns)."""
    messages = parse_conversation(text)
    data = json.loads(text) if isinstance(text, str) else text
    figures = _figures_by_position(data)
    offset = 1 if messages and messages[0]["role"] == "system" else 0  # an empty one too
    system = messages[0]["content"] if offset else ""
    if messages[offset:]:
        # Checked as it loads, as a send would check it: a file with two user messages in a
        # row loaded silently, and only the next Send failed (issue 33). Ending either way is
        # fine: a reply awaits the next message, a message awaits Send.
        check_messages(messages, add_generation_prompt=False)
    turns = [dict(m) for m in messages[offset:]]
    for i, turn in enumerate(turns):
        if figures.get(i + offset) is not None and turn["role"] == "assistant":
            turn["figures"] = checked_figures(figures[i + offset], i + offset + 1)
    return system, turns


def _figures_by_position(data: Any) -> dict[int, Any]:
    items = data.get("messages") if isinstance(data, Mapping) else data
    if not isinstance(items, list):
        return {}
    return {i: m.get("figures") for i, m in enumerate(items) if isinstance(m, Mapping)}


# A reply's figures as `figures_of` writes them: what a loaded file's must look like, since
# they are shown under the reply.
MAX_FIGURE = 2**53
FIGURE_TYPES = {"stop_reason": str, "prompt_tokens": int, "new_tokens": int,
                "ttft_s": float, "tokens_per_s": float, "seed": int}  # fmt: skip


def checked_figures(figures: Any, position: int) -> dict[str, Any]:
    """A loaded reply's figures, checked against `FIGURE_TYPES`; the error names the message
    and the field."""
    where = f"message {position}: 'figures'"
    if not isinstance(figures, Mapping):
        raise ParamError(f"{where} must be an object.")
    checked: dict[str, Any] = {}
    for name, kind in FIGURE_TYPES.items():
        value = figures.get(name)
        # A figure is 0 or more and below 2^53: JSON numbers past that don't survive the page
        # (a 400-digit one gave "Something went wrong"), and no count or time gets there.
        number = (isinstance(value, int | float) and not isinstance(value, bool)
                  and 0 <= value < MAX_FIGURE)  # fmt: skip
        if not (isinstance(value, str) if kind is str else number):
            wanted = "text" if kind is str else f"a number from 0 to {MAX_FIGURE:,}"
            raise ParamError(f"{where}: {name!r} must be {wanted}, got {str(value)[:40]!r}.")
        checked[name] = check_unicode(value, f"{where}: {name!r}") if kind is str else value
    drafts = figures.get("accepted_drafts")
    if isinstance(drafts, int) and not isinstance(drafts, bool) and 0 <= drafts < MAX_FIGURE:
        checked["accepted_drafts"] = drafts
    return checked


def load_examples(
    folder: Path = EXAMPLES_DIR,
) -> tuple[dict[str, list[dict[str, str]]], set[str]]:
    """Example conversations by title, and the titles tiny-tutor answers: each file is
    {title, messages, tiny_tutor} or a list of messages. `"tiny_tutor": true` is measured, not
    hoped (tests/test_chat_first_use.py runs tiny-tutor on every example)."""
    examples, for_tutor = {}, set()
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        title = data.get("title", path.stem) if isinstance(data, dict) else path.stem
        examples[title] = parse_conversation(data)
        if isinstance(data, dict) and data.get("tiny_tutor") is True:
            for_tutor.add(title)
    return examples, for_tutor


# ---- prompts ----------------------------------------------------------------------------------


def conversation(system: str, turns: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The messages the template gets: the system prompt (if any) first, then the turns."""
    first = [{"role": "system", "content": system}] if system.strip() else []
    return [*first, *messages_of(turns)]


def fit_prompt(
    turns: Sequence[Mapping[str, Any]],
    options: RenderOptions,
    *,
    engine: Engine,
    max_new_tokens: int,
    system: str = "",
) -> Budget:
    """The prompt that is sent for `turns` after `system`: rendered with the model's template,
    the oldest exchanges dropped until it fits the context with room for the reply. The fold
    note joins the warnings, so the fold says what it did as the drop policy does."""
    budget = fit_budget(
        conversation(system, turns),
        count_tokens=engine.tokenizer.count,
        context_size=engine.context_size,
        max_new_tokens=max_new_tokens,
        options=options,
        template=engine.tokenizer.chat_template,
    )
    rendered = budget.rendered
    if rendered.notes:
        rendered = replace(rendered, warnings=(*rendered.notes, *rendered.warnings), notes=())
        budget = replace(budget, rendered=rendered)
    return budget


# ---- streaming --------------------------------------------------------------------------------


def figures_of(result: GenerationResult, seed: int, stop_reason: str | None = None) -> dict:
    """A reply's figures as data: what the UI shows under it and what the API returns;
    `accepted_drafts` only when prompt lookup drafted."""
    figures = {
        "stop_reason": stop_reason or result.stop_reason,
        "prompt_tokens": result.prompt_tokens,
        "new_tokens": result.new_tokens,
        "ttft_s": round(result.ttft_s, 3),
        "tokens_per_s": round(result.tokens_per_s, 1),
        "seed": seed,
    }
    if result.accepted_drafts is not None:
        figures["accepted_drafts"] = result.accepted_drafts
    return figures


@dataclass
class Control:
    """One visitor's generation in progress (kept in gr.State, so each session has its own):
    Stop cancels the engine's generation directly, without waiting for the next token to pass
    through the stream."""

    stop: bool = False
    busy: bool = False
    fresh_seed: bool = False  # the next reply draws a new seed (Regenerate)
    refusal: str = ""  # why the last send was refused, for the note beside the input
    edit: tuple[int, str] | None = None  # the message edit being answered
    streaming: bool = False  # a reply is being streamed to the page now
    cleared: int = 0  # how many times the conversation was cleared: a reply begun before a
    # clear must not write itself back
    begun_after: int = 0  # `cleared` when the current turn began
    shown: list[Turn] | None = None  # the turns last sent to the page by that reply
    generation: Generation | None = field(default=None, repr=False)

    def begin(self, fresh_seed: bool = False, edit: tuple[int, str] | None = None) -> None:
        """One reply at a time per visitor: a send while one streams would be overwritten.
        `fresh_seed`: the reply is another draw (Regenerate); `edit`: the message edit being
        answered (the event data reaches only the first handler)."""
        if self.busy:
            raise ParamError("A reply is still being written (or queued): press Stop first.")
        self.stop, self.busy, self.refusal, self.shown = False, True, "", None
        self.begun_after = self.cleared  # this turn belongs to the conversation as it is now
        self.fresh_seed = self.fresh_seed or fresh_seed
        if edit is not None:
            self.edit = edit

    def queue(self) -> None:
        """A run (raw prompt, notebook) about to be queued: busy, and a Stop pressed while it
        waits in the queue still counts."""
        self.stop, self.busy = False, True

    def refuse(self, reason: str) -> None:
        """Why the last send was refused, for the note beside the input."""
        self.refusal = reason

    def stream(self) -> None:
        """A reply starts streaming to the page (`finish` when it is over)."""
        self.streaming = True

    def finish(self) -> None:
        """The reply streamed to the page is over, and with it the turn."""
        self.streaming = False
        self.end()

    def show(self, turns: list[Turn]) -> None:
        """The turns the streaming reply last sent to the page."""
        self.shown = turns

    def attach(self, generation: Generation) -> None:
        """The engine's generation of this turn: Stop cancels it, also if pressed before."""
        self.generation = generation
        if self.stop:  # Stop pressed while this turn was still queued
            generation.cancel()

    def outdated(self) -> bool:
        """The conversation was cleared since the current turn began."""
        return self.cleared != self.begun_after

    def clear(self) -> None:
        """Clear the conversation: stop any reply, and keep it from being written back."""
        self.press_stop()
        self.cleared, self.shown = self.cleared + 1, None

    def stopped_turns(self, wait_s: float = 10.0) -> list[Turn] | None:
        """After Stop, once the reply has ended: its turns with the reply marked "stopped by
        you", or None when nothing needs changing.

        A Stop reaches the server only while the page shows an unfinished reply (the button is
        disabled once the end is shown), so a reply the engine finished while the click was on
        its way still ends as the visitor's stop: Stop always wins.
        """
        deadline = time.monotonic() + wait_s
        while self.streaming and time.monotonic() < deadline:
            time.sleep(0.02)
        turns = self.shown
        if not turns or not turns[-1].get("figures"):
            return None
        if turns[-1]["figures"]["stop_reason"] == "cancelled":
            return None
        figures = {**turns[-1]["figures"], "stop_reason": "cancelled"}
        return [*turns[:-1], {**turns[-1], "figures": figures}]

    def press_stop(self) -> None:
        self.stop, self.busy = True, False
        if self.generation is not None:
            self.generation.cancel()

    def end(self) -> None:
        self.busy, self.generation, self.fresh_seed = False, None, False


def token_probabilities(result: GenerationResult, tokenizer: Tokenizer) -> list[dict[str, Any]]:
    """Each generated token with how sure the model was of it, in the shape of OpenAI's
    `logprobs.content`: {"id", "token", "logprob"} (None where the engine gave none), and
    "top_logprobs", the step's likeliest tokens, on engines that give them."""
    entries = []
    for token, score in zip(tokenizer.describe(result.token_ids), result.scores, strict=True):
        entry: dict[str, Any] = {"id": token.id, "token": token.piece, "logprob": None}
        if score is not None:
            entry["logprob"] = round(score.logprob, 5)
        if score is not None and score.alternatives:
            pieces = tokenizer.describe([i for i, _ in score.alternatives])
            entry["top_logprobs"] = [
                {"id": piece.id, "token": piece.piece, "logprob": round(logprob, 5)}
                for piece, (_, logprob) in zip(pieces, score.alternatives, strict=True)
            ]
        entries.append(entry)
    return entries


@dataclass(frozen=True)
class Reply:
    """A reply so far; `figures` and `tokens` (`token_probabilities`) are set on the last."""

    text: str
    figures: dict | None = None
    tokens: list[dict[str, Any]] | None = None
    budget: Budget | None = None
    result: GenerationResult | None = field(default=None, repr=False)
    reading: Reading | None = None  # before the first token: how far the prompt has been read

    @property
    def line(self) -> str:
        """The line under the reply (`display.reply_line`), as plain text."""
        return display.reply_line(self.figures, self.reading)


def throttle(items: Iterator[Any], interval_s: float = UPDATE_INTERVAL_S) -> Iterator[Any]:
    """Pass on at most one item per interval, and always the last: a fast engine must not
    flood the browser with re-renders of a growing reply."""
    last_sent = 0.0
    pending = _NOTHING = object()
    for item in items:
        pending = item
        now = time.monotonic()
        if now - last_sent >= interval_s:
            last_sent = now
            pending = _NOTHING
            yield item
    if pending is not _NOTHING:
        yield pending


def sampling_params(
    settings: Settings,
    values: Mapping[str, Any],
    stop: str | Sequence[str] = "",
    new_seed: bool = False,
) -> SamplingParams:
    """Sampling values by name, checked against space.yaml's ranges; `stop` as one text (a
    string per line) or a list. `new_seed` draws a fresh seed (Regenerate, "new seed each
    run")."""
    stops = stop_list(stop)
    values = dict(values)
    if new_seed:
        high = settings.ranges.get("seed", RANGES["seed"]).high
        values["seed"] = random.randint(0, int(high))
    return SamplingParams.checked(dict(settings.ranges), **values, stop=list(stops))


def params_from_request(
    settings: Settings,
    values: Mapping[str, Any],
    stop: str | Sequence[str],
    context_size: int,
) -> tuple[SamplingParams, int | None]:
    """An API or command-line request's values: anything the engine accepts, not just the
    sliders' ranges (`SamplingParams.from_request`). Returns the seed it drew for -1."""
    return SamplingParams.from_request(
        dict(settings.ranges), context_size, **values, stop=stop_list(stop)
    )


class Playground:
    """The playground around one shared engine: what the UI, the API and the CLI all call.

    It keeps no visitor's state: turns and `Control` are passed in by the caller.
    """

    def __init__(self, engine: Engine, settings: Settings, examples_dir: Path = EXAMPLES_DIR):
        self.engine = engine
        self.settings = settings
        self.examples, self.tutor_examples = load_examples(examples_dir)

    @property
    def context_size(self) -> int:
        return self.engine.context_size

    @property
    def model(self) -> str:
        """The served model's name (`EngineInfo.model`); "" when the engine names none."""
        return self.engine.info.model if self.engine.info else ""

    def unchanged_by(self, fault: str) -> bool:
        """Whether the served model was measured to reply the same with `fault` (a
        `compare.FAULTS` name) as without it: the shipped tiny-tutor, for some (`UNCHANGED_BY`),
        so the page says so rather than promise a change it would not show."""
        return self.model == TUTOR and fault in UNCHANGED_BY

    def example_choices(self) -> list[tuple[str, str]]:
        """The Examples list as (label, title): served by tiny-tutor, those it answers first,
        and the rest marked (3 of the first 4 got its refusal, unmarked: issue 33)."""
        if self.model != TUTOR:
            return [(title, title) for title in self.examples]
        answered = [(title, title) for title in self.examples if title in self.tutor_examples]
        rest = [t for t in self.examples if t not in self.tutor_examples]
        return answered + [(f"{title} · {NEEDS_9B}", title) for title in rest]

    def check_text(self, text: Any, what: str) -> str:
        if not isinstance(text, str):
            raise ParamError(f"{what} must be text.")
        limit = self.settings.max_input_chars
        if len(text) > limit:
            raise ParamError(f"{what} has {len(text)} characters; the limit is {limit}.")
        return check_unicode(text, what)

    def check_file(self, data: Any, what: str) -> str:
        """An uploaded file's text, held to the same rules as typed text."""
        try:
            text = data.decode("utf-8") if isinstance(data, bytes) else data
        except UnicodeDecodeError:
            raise ParamError(f"{what} is not UTF-8 text.") from None
        return self.check_text(text, what)

    def params(
        self, values: Mapping[str, Any], stop: str | Sequence[str] = "", new_seed: bool = False
    ) -> SamplingParams:
        return sampling_params(self.settings, values, stop, new_seed)

    def request_params(
        self, values: Mapping[str, Any], stop: str | Sequence[str] = ""
    ) -> tuple[SamplingParams, int | None]:
        return params_from_request(self.settings, values, stop, self.context_size)

    def fit(
        self, turns: Sequence[Turn], options: RenderOptions, max_new_tokens: int, system: str = ""
    ) -> Budget:
        """`fit_prompt` on this engine, folding with the configured separator (space.yaml's
        fold_separator), whatever `options` says."""
        configured = replace(options, fold_separator=self.settings.fold_separator)
        return fit_prompt(
            turns, configured, engine=self.engine, max_new_tokens=max_new_tokens, system=system
        )

    def inspect(
        self,
        messages: Sequence[Turn],
        options: RenderOptions,
        max_new_tokens: int,
        system: str = "",
    ) -> Inspection:
        """The inspector's view: exactly the prompt `fit_prompt` gives the chat, explained as
        `/render` and the `render` command explain theirs (`inspection.inspect_budget`)."""
        budget = self.fit(messages, options, max_new_tokens, system)
        return inspect_budget(budget, self.engine.tokenizer, options.prefill)

    def inspect_raw(self, prompt: str, no_bos: bool = False) -> Inspection:
        text = self.check_text(prompt, "The prompt")
        return inspect_text(text, self.engine.tokenizer, no_bos=no_bos)

    def raw_checks(self, prompt: str | None, no_bos: bool = False) -> str:
        """What the engine will receive for raw text (with no `<bos>` at all when `no_bos`), as
        markdown: its tokens and what to watch out for (the raw tab's and the notebook's
        checks)."""
        if not prompt:
            return ""
        try:
            inspection = self.inspect_raw(prompt, no_bos)
        except UserError as error:
            return display.notes_markdown([str(error)], [])
        return display.raw_checks(inspection, prompt, self._raw_notes(prompt, inspection))

    def raw_notes(self, prompt: str, no_bos: bool = False) -> list[str]:
        """The raw checks' notes as plain lines (a doubled or missing `<bos>`, control-token
        text): what `generate --prompt` says on stderr, as the Raw tab says it (issue 33)."""
        inspection = self.inspect_raw(prompt, no_bos)
        return display.raw_notes(inspection, self._raw_notes(prompt, inspection))

    def _raw_notes(self, prompt: str, inspection: Inspection) -> list[str]:
        # The served model's name, where it was measured to reply the same without the fix.
        doubled = display.model_label(self.model) if self.unchanged_by("second-bos") else ""
        missing = display.model_label(self.model) if self.unchanged_by("no-bos") else ""
        return [*display.bos_notes(inspection, doubled, missing),
                *self.control_token_notes(prompt)]  # fmt: skip

    def raw_delivery(self, prompt: str, no_bos: bool) -> Delivery:
        """How raw text is sent: as every prompt (exactly one `<bos>`), or with none at all (the
        Raw tab's option, the fault lab's "no <bos>" trap)."""
        if not no_bos:
            return AS_SENT
        return Delivery(ids=tuple(self.engine.tokenizer.encode_without_bos(prompt)))

    def control_token_notes(self, prompt: str) -> list[str]:
        """Control-token texts in a raw prompt: each becomes one control token, not text."""
        found = [f"{t} ×{prompt.count(t)}" for t in CONTROL_TOKEN_TEXTS if t in prompt]
        if not found:
            return []
        return [f"Read as control tokens, not text: {', '.join(found)}."]

    def token_note(self) -> str:
        """Where the token table's tokens come from, when that is not plain: a remote engine's
        (the model's files here, not the server), and a tokenizer that is not Gemma-2's,
        whose token ids and pieces the table would otherwise seem to show."""
        tokenizer = self.engine.tokenizer
        notes = [self.engine.token_source] if self.engine.token_source else []
        if tokenizer.vocab_size != GEMMA2_VOCAB_SIZE:
            notes.append(
                f"These are not Gemma-2's tokens: the served model's tokenizer has "
                f"{tokenizer.vocab_size} entries, Gemma-2's has {GEMMA2_VOCAB_SIZE}, so words "
                "split differently here than for Gemma-2-9b-it."
            )
        return " ".join(notes)

    def check_turn(
        self,
        turns: Sequence[Turn],
        options: RenderOptions,
        params: SamplingParams,
        system: str = "",
    ) -> Budget:
        """What `reply` refuses before anything streams (the system prompt, the prefill, the
        prompt as rendered and fitted), for a caller that checks a turn before accepting it:
        the chat's Send leaves a refused message in its box rather than in the chat."""
        self.check_text(system, "The system prompt")
        self.check_text(options.prefill, "The prefill")
        return self.fit(turns, options, params.max_new_tokens, system)

    def reply(
        self,
        turns: Sequence[Turn],
        options: RenderOptions,
        params: SamplingParams,
        control: Control | None = None,
        system: str = "",
    ) -> Iterator[Reply]:
        """Stream the reply to `turns` (they end with the visitor's message) after `system`."""
        budget = self.check_turn(turns, options, params, system)
        for reply in self._stream(budget.rendered.text, params, options.prefill, control):
            yield replace(reply, budget=budget)

    def complete(
        self,
        prompt: Any,
        params: SamplingParams,
        control: Control | None = None,
        delivery: Delivery = AS_SENT,
    ) -> Iterator[Reply]:
        """Stream the continuation of raw text, sent as `delivery` says (the fault lab's engine
        traps, the Raw tab's "no <bos>"); the one rule for an empty prompt, everywhere."""
        self.check_text(prompt, "The prompt")
        if not prompt.strip():
            raise ParamError("The prompt is empty.")
        return self._stream(prompt, params, "", control, delivery)

    def cell_prompt(self, cell: PromptCell) -> str:
        """A notebook cell's prompt as the Chat tab would send it: a chat cell rendered with the
        served model's template and the configured fold separator; with `trap=`, the text that
        engine trap sends instead."""
        return self.cell_send(cell)[0]

    def cell_send(self, cell: PromptCell) -> tuple[str, Delivery]:
        """A notebook cell's text and how it reaches the model (`cell_prompt`)."""
        separator = self.settings.fold_separator
        text = cell_prompt(cell, self.engine.tokenizer.chat_template, separator)
        if not (name := cell.option("trap")):
            return text, AS_SENT
        if cell.kind != "chat":
            raise ParamError(
                "trap= goes with chat cells: a trap starts from a correct chat prompt."
            )
        case = self.trap_case(text, parse_conversation(cell.body), cell.option("prefill"))
        text, delivery = traps.apply(traps.TRAPS[name], case)
        self.engine.check_delivery(delivery)
        return text, delivery

    def trap_case(
        self, prompt: str, messages: Sequence[Mapping[str, str]], prefill: str
    ) -> traps.Case:
        """What an engine trap starts from on this engine: the correct `prompt` and the
        conversation and prefill it was rendered from."""
        engine, separator = self.engine, self.settings.fold_separator
        return traps.Case(prompt, messages, prefill, separator, engine.folder, engine.tokenizer)

    def run_cell(
        self, cell: PromptCell, params: SamplingParams, control: Control | None = None
    ) -> Iterator[Reply]:
        """Stream a notebook cell's output: the one path of the Notebook tab and `notebook
        run`. A refusal (the template's, an empty prompt) is raised before anything streams."""
        text, delivery = self.cell_send(cell)
        return self.complete(text, params, control, delivery)

    def _stream(
        self,
        prompt: str,
        params: SamplingParams,
        start: str,
        control: Control | None,
        delivery: Delivery = AS_SENT,
    ) -> Iterator[Reply]:
        generation = self.engine.generate(prompt, params, delivery=delivery)
        if control is not None:
            control.attach(generation)
        text = start
        try:
            for chunk in generation:
                text += chunk
                yield Reply(text, reading=generation.reading if text == start else None)
        finally:
            generation.cancel()  # a closed page or a cancelled job: end the native loop now
        result = generation.result
        # A Stop that arrives once the engine has finished, but before the visitor was shown
        # the end, still wins: the visitor pressed it while the reply looked unfinished.
        stopped = "cancelled" if control is not None and control.stop else None
        yield Reply(
            text,
            figures_of(result, params.seed, stopped),
            tokens=token_probabilities(result, self.engine.tokenizer),
            result=result,
        )

    def export(self, prompt: str, params: SamplingParams) -> dict[str, str]:
        """Runnable code for `prompt`, naming the model as a visitor can get it (never this
        server's folders)."""
        model, from_hub = exported_model(self.engine.info.model if self.engine.info else "")
        code = export_code(
            prompt,
            params,
            model=model,
            ov_config=self.settings.ov_config,
            end_ids=self.engine.tokenizer.eos_ids,
            from_hub=from_hub,
        )
        return code | self.engine.extra_code(prompt, params)


def exported_model(name: str, folder: Path | None = None) -> tuple[str, bool]:
    """How exported code names the served model, and whether that is a Hub id (which the code
    downloads): the Hub id; tiny-tutor by name (the code finds it where it runs:
    `export.model_code`); `folder` when the code is for this machine (the command line); else a
    placeholder folder named after it, since a server path never leaves the server."""
    if looks_like_repo_id(name) and not Path(name).expanduser().is_dir():
        return name, True
    if name == TUTOR:
        return TUTOR, False
    if folder is not None:
        return str(folder), False
    return f"path/to/{Path(name).name or 'model'}", False
