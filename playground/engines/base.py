"""The engines' shared contract: what every engine takes and streams back.

Owns: the `Engine` base (the slots that bound how many generations run at once, the worker
thread, the stream of text deltas, stop strings, end tokens, cancellation, the context-size
check, the timing figures), the values it returns (`Generation`, `GenerationResult`,
`TokenScore`, `NativeFigures`, `EngineInfo`, `EngineStatus`), the `Prompt` a native loop
receives, and the engines' errors.
Does not own: running a model (one module per engine kind beside this one: `genai`, `optimum`,
`remote`), the registry of kinds and the per-process cache (`engines/__init__`), chat templates
(`chat_format`), tokenization rules (`tokens`), where a model comes from (`models`).

A prompt reaches `generate` as text that is already final (a rendered chat prompt or raw text);
`tokens.Tokenizer.encode` gives it exactly one `<bos>`.
"""

from __future__ import annotations

import logging
import math
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from playground.errors import UserError
from playground.memory import KvBudget
from playground.sampling import SamplingParams
from playground.tokens import Tokenizer

log = logging.getLogger(__name__)

StopReason = Literal[
    "eos", "end_of_turn", "max_new_tokens", "stop_string", "cancelled", "engine_stopped",
    "server_context",
]  # fmt: skip

# How long a request waits for the engine lock, and for the next token, before giving up: no
# wait on the engine can hang forever.
LOCK_TIMEOUT_S = 600.0
TOKEN_TIMEOUT_S = 300.0
# How many of the most likely tokens an engine keeps per step, where it can (optimum, and remote
# servers that give alternatives), as llama.cpp's n_probs.
TOP_ALTERNATIVES = 5
# The warm-up's one reply: a greeting in the chat format, so any chat model answers it at some
# length; 8 tokens give a decode speed (the first token's wait is the prompt's, not decode's).
WARM_UP_PROMPT = "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n"
WARM_UP_TOKENS = 8


def start_daemon(
    target: Callable[..., Any], *args: Any, name: str | None = None
) -> threading.Thread:
    """Start a daemon thread that never takes SIGINT (a new thread inherits its creator's mask).
    CPython acts on a signal in the main thread only, and a Ctrl-C the kernel hands to another
    thread would leave a main thread blocked in readline's select() unaware of it."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        thread = threading.Thread(target=target, args=args, daemon=True, name=name)
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    return thread


class EngineError(UserError, RuntimeError):
    """A generation that could not run or failed; the message is for people."""


class ContextOverflowError(EngineError):
    pass


class EngineStopped(Exception):
    """The engine's process ended mid-reply (it died, or hung and was killed): the reply ends
    there and keeps its text, and a new process serves the next one."""


@dataclass(frozen=True)
class TokenScore:
    """How sure the model was of one generated token: its log-probability under the model's own
    distribution (before temperature, top-k and top-p reshaped it), and, on engines that give
    them, the most likely tokens at that step as (id, log-probability), best first."""

    logprob: float
    alternatives: tuple[tuple[int, float], ...] = ()

    @property
    def probability(self) -> float:
        return math.exp(self.logprob)


# What a native loop calls for each new token id (with its score, where the engine gives one, and
# its text, where the engine decoded it itself); True means stop.
OnToken = Callable[..., bool]


@dataclass(frozen=True)
class Delivery:
    """How a prompt reaches the model when a library, not the playground, decides it: the fault
    lab's engine traps (`compare`). `ids`: the tokens that library built (None: the text's ids
    with exactly one `<bos>`, `tokens.Tokenizer.encode`); `end_ids`: the ids that end a reply
    (None: the model's own, `Tokenizer.eos_ids`); `stop_ids`: id sequences that end it as a
    stop string would (a stop string some library encoded)."""

    ids: tuple[int, ...] | None = None
    end_ids: frozenset[int] | None = None
    stop_ids: tuple[tuple[int, ...], ...] = ()


AS_SENT = Delivery()  # the playground's own way: what every tab but the fault lab sends


@dataclass(frozen=True)
class Prompt:
    """One request as a native loop receives it: the final text, its ids (exactly one `<bos>`
    first, unless a `Delivery` said otherwise), the ids that end it, the event that is set when
    the visitor stops it, and where an engine that knows reports how many prompt tokens it has
    read so far (`on_reading(read, of)`)."""

    text: str
    ids: list[int]
    cancel: threading.Event
    on_reading: Callable[[int, int], None] = lambda read, of: None
    end_ids: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Reading:
    """How far the engine has read a prompt before its first token: `read` of `of` tokens."""

    read: int
    of: int


@dataclass(frozen=True)
class NativeFigures:
    """Figures the native engine measured itself (GenAI's perf metrics), which win over the
    timing taken around it."""

    ttft_s: float | None = None  # None where GenAI has none: a request stopped early
    tokens_per_s: float | None = None
    accepted_drafts: int | None = None  # prompt lookup: draft tokens the model confirmed
    # A remote server's own token counts (its `usage`), which win over the local ones.
    prompt_tokens: int | None = None
    new_tokens: int | None = None
    # Why the native loop ended by itself, where the engine knows better than "eos": a remote
    # server that cut the reply off at its own context size.
    stop_reason: StopReason | None = None


def tokens_per_second(
    new: int, ttft_s: float, decode_s: float, native: float | None = None
) -> float:
    """A generation's tokens/s, the one rule of every engine and so of every surface (the
    app, the API, the CLI's --json): from 2 new tokens on, the decode rate (the tokens after
    the first over the time after it), GenAI's own (`native`) where it has a true one; for a
    single token, that token over its own wait (1 / ttft_s), since it has no decode time; for
    none, 0.0. GenAI reports -1000 for a single token (1000 / its TPOT of -1, issue 33)."""
    if new <= 0:
        return 0.0
    if new == 1:
        return 1 / ttft_s if ttft_s > 0 else 0.0
    if native is not None and math.isfinite(native) and native > 0:
        return native
    return (new - 1) / decode_s if decode_s > 0 else 0.0


@dataclass(frozen=True)
class GenerationResult:
    text: str
    token_ids: list[int]
    stop_reason: StopReason
    prompt_tokens: int
    new_tokens: int
    ttft_s: float
    tokens_per_s: float  # `tokens_per_second`: never negative, and true for 0 and 1 new tokens
    scores: tuple[TokenScore | None, ...] = ()  # one per token id, None where the engine gave none
    accepted_drafts: int | None = None
    # Wall-clock moments (time.time()) of the request: "submitted", "admitted" (a slot and its
    # KV tokens were free) and "first_token"; the serving bench splits a visitor's wait by them.
    timeline: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineInfo:
    model: str
    kind: str
    device: str
    openvino_version: str
    load_s: float
    cache_used: bool


_END = object()
_STARTED = object()


@dataclass(frozen=True)
class EngineStatus:
    """What an engine is doing now: the Model tab's live lines and /status's JSON. An engine
    kind with more to say subclasses it (`GenAIStatus`) and adds its own lines."""

    active: int
    waiting: int
    slots: int
    kv_budget_tokens: int | None = None  # under a KV budget: its size and what is reserved
    kv_reserved_tokens: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """/status's JSON: every field that applies to this engine."""
        return {name: value for name, value in asdict(self).items() if value is not None}

    def lines(self) -> list[str]:
        """Markdown lines for the Model tab (numbers only, nothing from a visitor)."""
        # Under a KV budget a request also waits while its tokens don't fit beside the others.
        budget = self.kv_budget_tokens is not None
        wait = "a slot or KV-budget tokens" if budget else "a slot"
        lines = [
            f"- **Generating now:** {self.active} of {self.slots} at once"
            f" · **waiting for {wait}:** {self.waiting}"
        ]
        if budget:
            lines.append(
                f"- **KV budget:** {self.kv_reserved_tokens:,} of {self.kv_budget_tokens:,}"
                " tokens reserved by running requests (prompt and max new tokens each); a "
                "request that doesn't fit waits — the KV cache is the model's memory of the text "
                "it has read"
            )
        return lines


@dataclass
class Generation:
    """An Iterator[str] of text deltas; `result` is set once it is exhausted.

    Leaving the loop early (a closed page, a `break`) cancels the native generation.
    """

    _chunks: Iterator[str]
    cancel_event: threading.Event
    result: GenerationResult | None = None
    reading: Reading | None = None  # the newest progress on the prompt, until the first token

    def __iter__(self) -> Iterator[str]:
        return self._chunks

    def cancel(self) -> None:
        self.cancel_event.set()

    def run(self) -> GenerationResult:
        """Consume everything and return the result."""
        for _ in self._chunks:
            pass
        assert self.result is not None
        return self.result


@dataclass
class _Progress:
    """What one generation has produced so far; decides when to stop."""

    tokenizer: Tokenizer
    params: SamplingParams
    cancel: threading.Event
    start: float
    end_ids: frozenset[int] = frozenset()
    stop_ids: tuple[tuple[int, ...], ...] = ()
    ids: list[int] = field(default_factory=list)
    scores: list[TokenScore | None] = field(default_factory=list)
    native: NativeFigures | None = None
    text: str = ""
    emitted: int = 0
    first_token_at: float | None = None
    stop_reason: StopReason | None = None
    timeline: dict[str, float] = field(default_factory=lambda: {"submitted": time.time()})

    def __post_init__(self) -> None:
        self.decoder = self.tokenizer.decoder()

    def push(self, token_id: int, score: TokenScore | None = None, text: str | None = None) -> bool:
        """Take one generated id (how sure the model was of it, and its text where a server
        decoded it: that text is shown as is); return True when generation must stop."""
        if self.stop_reason is not None:
            return True
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
            self.timeline["first_token"] = time.time()
        self.ids.append(token_id)
        self.scores.append(score)
        if token_id in self.end_ids:
            self.stop_reason = "end_of_turn" if token_id == self.tokenizer.end_of_turn_id else "eos"
            return True
        before = len(self.text)
        self.text += self.decoder.push(token_id) if text is None else text
        for ids in self.stop_ids:
            if self.ids[-len(ids) :] == list(ids):  # a stop string as ids: cut it as one
                self.text = self.text.removesuffix(self.tokenizer.decode(list(ids)))
                self.stop_reason = "stop_string"
                return True
        for stop in self.params.stop:
            # A new match must end inside the newest delta: search just that window.
            at = self.text.find(stop, max(0, before - len(stop) + 1))
            if at != -1:
                self.text = self.text[:at]
                self.stop_reason = "stop_string"
                return True
        if self.cancel.is_set():
            self.stop_reason = "cancelled"
            return True
        if len(self.ids) >= self.params.max_new_tokens:
            self.stop_reason = "max_new_tokens"
            return True
        return False

    def flush(self) -> None:
        """Add what the decoder still holds (an unfinished character at the very end)."""
        if self.stop_reason not in ("stop_string", "cancelled"):
            self.text += self.decoder.flush()

    def take(self) -> str:
        """Text that is safe to show: holds back a tail that may start a stop string."""
        hold = max((_overlap(self.text, s) for s in self.params.stop), default=0)
        if self.stop_reason is not None:
            hold = 0
        end = len(self.text) - hold
        if end <= self.emitted:
            return ""
        delta, self.emitted = self.text[self.emitted : end], end
        return delta


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of stop."""
    for n in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


class _Admission:
    """Who may enter the native code: a generation needs a free slot and, under a KV budget, room
    for its tokens (prompt and max_new_tokens) beside those of the generations running.

    In the order they came, except that a request that fits may pass those ahead of it that
    don't, for as long as the longest waiting of them has waited under `PASS_FOR_S`: one big
    reservation no longer holds every small request behind it (victims waited 54-66 s in
    issue 34), and past that age nobody passes it, so it is never starved."""

    POLL_S = 0.1  # how often a waiting generation looks at its cancel event
    PASS_FOR_S = 60.0

    def __init__(self, slots: int, budget_tokens: int | None) -> None:
        self._free_slots, self._free_tokens = slots, budget_tokens
        self._line: deque[tuple[object, int, float]] = deque()  # (ticket, tokens, since)
        self._changed = threading.Condition()

    def _fits(self, tokens: int) -> bool:
        return self._free_slots > 0 and (self._free_tokens is None or tokens <= self._free_tokens)

    def _turn(self, ticket: object) -> bool:
        """Whether `ticket` may enter now (see the class)."""
        now = time.monotonic()
        for other, tokens, since in self._line:
            if other is ticket:
                return self._fits(tokens)
            if self._fits(tokens) or now - since >= self.PASS_FOR_S:
                return False  # it goes first, or it has waited too long to be passed
        return False

    def enter(self, tokens: int, cancel: threading.Event, timeout_s: float) -> bool:
        """Wait for room for `tokens`; False if cancelled or timed out (nothing taken)."""
        deadline = time.monotonic() + timeout_s
        entry = (object(), tokens, time.monotonic())
        with self._changed:
            self._line.append(entry)
            try:
                while not self._turn(entry[0]):
                    left = deadline - time.monotonic()
                    if cancel.is_set() or left <= 0:
                        return False
                    self._changed.wait(min(left, self.POLL_S))
                self._free_slots -= 1
                if self._free_tokens is not None:
                    self._free_tokens -= tokens
                return True
            finally:
                self._line.remove(entry)
                self._changed.notify_all()  # the next in line may fit now

    def leave(self, tokens: int) -> None:
        with self._changed:
            self._free_slots += 1
            if self._free_tokens is not None:
                self._free_tokens += tokens
            self._changed.notify_all()

    def reserved(self, budget_tokens: int) -> int:
        return budget_tokens - (self._free_tokens or 0)


class Engine:
    """Base: admission, the worker thread, the stream and the figures; subclasses run the model.

    At most `max_concurrent` generations run in the native code at once, and under a KV budget
    (`kv_budget`) only as many as their tokens fit; the others wait (up to
    LOCK_TIMEOUT_S). The app's queue is set to the slots, so a visitor waits in Gradio's queue,
    where the page shows the position, rather than here.
    """

    kind = "base"
    supports_prompt_lookup = False
    compiles = True  # runs an OpenVINO model here, so it has a compiled-model cache
    token_source = ""  # where the inspector's tokens come from, when not from this engine
    # What the probability view's tints are, on this engine (`display.probability_view`).
    probability_note = "the model's probabilities."
    # Why a request for prompt lookup is refused where `supports_prompt_lookup` is False.
    prompt_lookup_refusal = "Prompt lookup runs on the genai engine; this is the {kind} engine."
    # Whether the engine runs the ids and end ids it is given (a `Delivery`): the fault lab's
    # engine traps need it; an engine whose server tokenizes the text itself cannot.
    takes_deliveries = True
    delivery_refusal = (
        "This column sends the model other tokens or other end tokens than the text implies; "
        "the {kind} engine sends text, which its server tokenizes itself. Run it on the genai "
        "or optimum engine."
    )

    @classmethod
    def create(cls, folder: Path, spec: Any, tokenizer: Tokenizer, ov_config: dict) -> Engine:
        """Build the engine that `spec` (an `EngineSpec`) describes: the registry's one way in."""
        raise NotImplementedError

    def __init__(
        self,
        folder: Path,
        tokenizer: Tokenizer,
        context_size: int,
        info: EngineInfo | None = None,  # set by load_engine once loading is timed
        max_concurrent: int = 1,
        kv_budget: KvBudget | None = None,  # holds at least context_size (`memory.kv_budget`)
    ) -> None:
        self.folder = folder
        self.tokenizer = tokenizer
        self.context_size = context_size
        self.info = info
        self.max_concurrent = max_concurrent
        self.kv_budget = kv_budget
        self._admission = _Admission(max_concurrent, kv_budget.tokens if kv_budget else None)
        self._count_lock = threading.Lock()
        # Generations in the native code now, and waiting for a slot; tests check the bound.
        self.active = 0
        self.waiting = 0
        self.peak_active = 0
        self.warm_up_result: GenerationResult | None = None  # the Model tab's measured speed

    def check_fits(self, prompt_tokens: int, max_new_tokens: int) -> None:
        if prompt_tokens + max_new_tokens > self.context_size:
            raise ContextOverflowError(
                f"The prompt has {prompt_tokens} tokens and max_new_tokens is {max_new_tokens}: "
                f"together {prompt_tokens + max_new_tokens}, over the context size of "
                f"{self.context_size}. Shorten the prompt or lower max_new_tokens."
            )

    def check_delivery(self, delivery: Delivery) -> None:
        """Refuse a `Delivery` this engine can't honour, before anything is planned or sent."""
        if delivery != AS_SENT and not self.takes_deliveries:
            raise EngineError(self.delivery_refusal.format(kind=self.kind))

    @property
    def label(self) -> str:
        """The engine as a choice names it: its kind, and where it runs (never an address)."""
        return f"{self.kind} · this machine"

    def warm_up(self) -> float:
        """Run one short generation, so the first visitor waits no longer than the second
        (a fresh process took 1.9 s to its first token, 0.2 s once warm: issue 12), and keep
        its figures: the decode speed measured on this machine, which the Model tab shows.
        Returns the seconds it took."""
        start = time.perf_counter()
        params = SamplingParams(max_new_tokens=WARM_UP_TOKENS, temperature=0,
                                repetition_penalty=1.0)  # fmt: skip
        self.warm_up_result = self.generate(WARM_UP_PROMPT, params).run()
        return time.perf_counter() - start

    def status(self) -> EngineStatus:
        """What the engine is doing now, for the Model tab and /status."""
        return EngineStatus(**self._status_fields())

    def _status_fields(self) -> dict[str, Any]:
        """The base `EngineStatus` fields, for a kind's own status to add to."""
        fields = {"active": self.active, "waiting": self.waiting, "slots": self.max_concurrent}
        if self.kv_budget is not None:
            fields["kv_budget_tokens"] = self.kv_budget.tokens
            fields["kv_reserved_tokens"] = self._admission.reserved(self.kv_budget.tokens)
        return fields

    def generate(
        self,
        prompt: str,
        params: SamplingParams,
        cancel: threading.Event | None = None,
        delivery: Delivery = AS_SENT,
    ) -> Generation:
        """Stream the continuation of `prompt` (final text, rendered or raw), sent as `delivery`
        says (by default as the playground sends every prompt)."""
        if params.prompt_lookup and not self.supports_prompt_lookup:
            raise EngineError(self.prompt_lookup_refusal.format(kind=self.kind))
        self.check_delivery(delivery)
        ids = self.tokenizer.encode(prompt) if delivery.ids is None else list(delivery.ids)
        self.check_fits(len(ids), params.max_new_tokens)
        cancel = cancel or threading.Event()
        end_ids = self.tokenizer.eos_ids if delivery.end_ids is None else delivery.end_ids
        generation = Generation(iter(()), cancel)
        native = Prompt(prompt, ids, cancel, end_ids=end_ids)
        generation._chunks = self._stream(native, params, generation, delivery.stop_ids)
        return generation

    def _stream(
        self,
        prompt: Prompt,
        params: SamplingParams,
        generation: Generation,
        stop_ids: tuple[tuple[int, ...], ...] = (),
    ) -> Iterator[str]:
        cancel = prompt.cancel
        updates: queue.Queue = queue.Queue()
        progress = _Progress(self.tokenizer, params, cancel, time.perf_counter(),
                             end_ids=prompt.end_ids, stop_ids=stop_ids)  # fmt: skip
        start_daemon(self._work, prompt, params, progress, updates, name="generation")
        started = False
        try:
            while True:
                # Waiting for a slot has its own limit (in the worker); once the engine is
                # ours, a silence of TOKEN_TIMEOUT_S means it is stuck.
                timeout = TOKEN_TIMEOUT_S if started else LOCK_TIMEOUT_S + TOKEN_TIMEOUT_S
                try:
                    item = updates.get(timeout=timeout)
                except queue.Empty:
                    cancel.set()
                    raise EngineError(
                        f"The engine produced nothing for {timeout:.0f} s; cancelled."
                    ) from None
                if item is _STARTED:
                    started = True
                    continue
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, Reading):
                    generation.reading = item
                    yield ""  # no new text, but news: the consumer may show the progress
                elif item:
                    yield item
        finally:
            # Reached on normal end, on error, and when the consumer goes away (close()).
            cancel.set()
        generation.result = self._result(prompt.ids, progress)

    def _count(self, active: int = 0, waiting: int = 0) -> None:
        with self._count_lock:
            self.active += active
            self.waiting += waiting
            self.peak_active = max(self.peak_active, self.active)

    def _work(
        self, prompt: Prompt, params: SamplingParams, progress: _Progress, updates: queue.Queue
    ) -> None:
        def on_token(
            token_id: int, score: TokenScore | None = None, text: str | None = None
        ) -> bool:
            stop = progress.push(token_id, score, text)
            if delta := progress.take():
                updates.put(delta)
            return stop

        try:
            tokens = len(prompt.ids) + params.max_new_tokens
            self._count(waiting=1)
            try:
                admitted = self._admission.enter(tokens, progress.cancel, LOCK_TIMEOUT_S)
            finally:
                self._count(waiting=-1)
            if not admitted and not progress.cancel.is_set():
                raise EngineError("The engine is busy with other generations; try again.")
            updates.put(_STARTED)
            if not admitted:  # cancelled while waiting for its turn
                progress.stop_reason = "cancelled"
            else:
                try:
                    self._count(active=1)
                    progress.start = time.perf_counter()
                    progress.timeline["admitted"] = time.time()
                    reading = replace(prompt, on_reading=lambda *n: updates.put(Reading(*n)))
                    progress.native = self.run_native(reading, params, on_token)
                except EngineStopped:
                    progress.stop_reason = "engine_stopped"
                finally:
                    self._count(active=-1)
                    self._admission.leave(tokens)
            progress.flush()
            if progress.stop_reason is None and progress.cancel.is_set():
                progress.stop_reason = "cancelled"  # the native loop saw Stop before a token did
            if progress.stop_reason is None:
                # The native loop ended by itself: an end id it did not pass on, the limit, or
                # what the engine says.
                reached = len(progress.ids) >= params.max_new_tokens
                said = progress.native.stop_reason if progress.native else None
                progress.stop_reason = "max_new_tokens" if reached else said or "eos"
            if delta := progress.take():
                updates.put(delta)
            updates.put(_END)
        except EngineError as error:
            updates.put(error)
        except Exception as error:
            # The details go to the server log; the visitor gets a short message.
            log.exception("generation failed")
            updates.put(
                EngineError(
                    f"Generation failed inside the engine ({type(error).__name__}); "
                    "the engine is free again, please retry."
                )
            )

    def _result(self, ids: list[int], progress: _Progress) -> GenerationResult:
        end = time.perf_counter()
        first = progress.first_token_at or end
        new = len(progress.ids)
        ttft_s = first - progress.start
        native = progress.native or NativeFigures()
        own_rate = None
        if new and native.ttft_s is not None:
            # GenAI's own clock, which matched hand timing to 0.1% (issue 12).
            ttft_s, own_rate = native.ttft_s, native.tokens_per_s
        tokens_per_s = tokens_per_second(new, ttft_s, end - first, own_rate)
        return GenerationResult(
            text=progress.text,
            token_ids=progress.ids,
            stop_reason=progress.stop_reason or "cancelled",
            prompt_tokens=native.prompt_tokens or len(ids),
            new_tokens=native.new_tokens or new,
            ttft_s=ttft_s,
            tokens_per_s=tokens_per_s,
            scores=tuple(progress.scores),
            accepted_drafts=native.accepted_drafts,
            timeline=progress.timeline,
        )

    def notes(self) -> list[str]:
        """What a visitor should know about this engine (the Model tab shows each line)."""
        return []

    def extra_code(self, prompt: str, params: SamplingParams) -> dict[str, str]:
        """Runnable code of this engine's own for `prompt`, by the inspector's labels, beside
        the openvino_genai and optimum-intel code every engine exports (`export`)."""
        return {}

    def run_native(
        self,
        prompt: Prompt,
        params: SamplingParams,
        on_token: OnToken,
    ) -> NativeFigures | None:
        """Run the native generation of `prompt`, calling on_token per new id (with its score,
        where the engine gives one) until it returns True; return the engine's own figures."""
        raise NotImplementedError
