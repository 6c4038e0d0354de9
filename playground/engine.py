"""The generator: one cached OpenVINO engine per (model, engine kind, device) per process.

Owns: loading an OpenVINO IR folder into an engine (`genai`: openvino_genai's
ContinuousBatchingPipeline, the default, which decodes up to `max_concurrent` requests in one pass
over the weights; `optimum`: optimum-intel's OVModelForCausalLM with transformers' generate, the
path of the LocalAI definition, kept as the one-at-a-time reference), streaming text as it
decodes, each token's probability, stop strings, end tokens, cancellation, the context-size
check, timing figures (GenAI's own metrics where it has them), the per-engine slots that bound
how many generations run at once, and the per-process engine cache.
Does not own: chat templates (`chat_format`), tokenization rules (`tokens`), where a model comes
from (`models`), settings (`settings`), or anything about the UI.

A prompt reaches `generate` as text that is already final (a rendered chat prompt or raw text);
`tokens.Tokenizer.encode` gives it exactly one `<bos>`.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from playground.errors import UserError
from playground.models import resolve_or_fall_back
from playground.sampling import SamplingParams
from playground.settings import Settings
from playground.tokens import Tokenizer

log = logging.getLogger(__name__)

ENGINE_KINDS = ("genai", "optimum")
StopReason = Literal["eos", "end_of_turn", "max_new_tokens", "stop_string", "cancelled"]

# How long a request waits for the engine lock, and for the next token, before giving up: no
# wait on the engine can hang forever.
LOCK_TIMEOUT_S = 600.0
TOKEN_TIMEOUT_S = 300.0
FAILED_STEP_PAUSE_S = 0.1


# How many of the most likely tokens the optimum engine keeps per step, as llama.cpp's n_probs.
TOP_ALTERNATIVES = 5
# Prompt lookup's drafts: up to 5 tokens copied after a match of up to 3 tokens of the text so
# far (GenAI's prompt_lookup sample uses these values).
PROMPT_LOOKUP_TOKENS = 5
PROMPT_LOOKUP_NGRAM = 3


class EngineError(UserError, RuntimeError):
    """A generation that could not run or failed; the message is for people."""


class ContextOverflowError(EngineError):
    pass


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


# What a native loop calls for each new token id (with its score, where the engine gives one);
# True means stop.
OnToken = Callable[[int, TokenScore | None], bool]


@dataclass(frozen=True)
class NativeFigures:
    """Figures the native engine measured itself (GenAI's perf metrics), which win over the
    timing taken around it."""

    ttft_s: float | None = None  # None where GenAI has none: a request stopped early
    tokens_per_s: float | None = None
    accepted_drafts: int | None = None  # prompt lookup: draft tokens the model confirmed


@dataclass(frozen=True)
class GenerationResult:
    text: str
    token_ids: list[int]
    stop_reason: StopReason
    prompt_tokens: int
    new_tokens: int
    ttft_s: float
    tokens_per_s: float
    scores: tuple[TokenScore | None, ...] = ()  # one per token id, None where the engine gave none
    accepted_drafts: int | None = None


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


@dataclass
class Generation:
    """An Iterator[str] of text deltas; `result` is set once it is exhausted.

    Leaving the loop early (a closed page, a `break`) cancels the native generation.
    """

    _chunks: Iterator[str]
    cancel_event: threading.Event
    result: GenerationResult | None = None

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
    ids: list[int] = field(default_factory=list)
    scores: list[TokenScore | None] = field(default_factory=list)
    native: NativeFigures | None = None
    text: str = ""
    emitted: int = 0
    first_token_at: float | None = None
    stop_reason: StopReason | None = None

    def __post_init__(self) -> None:
        self.decoder = self.tokenizer.decoder()

    def push(self, token_id: int, score: TokenScore | None = None) -> bool:
        """Take one generated id (and how sure the model was of it); return True when
        generation must stop."""
        if self.stop_reason is not None:
            return True
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.ids.append(token_id)
        self.scores.append(score)
        if token_id in self.tokenizer.eos_ids:
            self.stop_reason = "end_of_turn" if token_id == self.tokenizer.end_of_turn_id else "eos"
            return True
        before = len(self.text)
        self.text += self.decoder.push(token_id)
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


class Engine:
    """Base: the slots, the worker thread, the stream and the figures; subclasses run the model.

    At most `max_concurrent` generations run in the native code at once; the others wait for a
    slot (up to LOCK_TIMEOUT_S). The app's queue is set to the same number, so a visitor waits
    in Gradio's queue, where the page shows the position, rather than here.
    """

    kind = "base"
    supports_prompt_lookup = False

    def __init__(
        self,
        folder: Path,
        tokenizer: Tokenizer,
        context_size: int,
        info: EngineInfo | None = None,  # set by load_engine once loading is timed
        max_concurrent: int = 1,
    ) -> None:
        self.folder = folder
        self.tokenizer = tokenizer
        self.context_size = context_size
        self.info = info
        self.max_concurrent = max_concurrent
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._count_lock = threading.Lock()
        # Generations in the native code now, and waiting for a slot; tests check the bound.
        self.active = 0
        self.waiting = 0
        self.peak_active = 0

    def check_fits(self, prompt_tokens: int, max_new_tokens: int) -> None:
        if prompt_tokens + max_new_tokens > self.context_size:
            raise ContextOverflowError(
                f"The prompt has {prompt_tokens} tokens and max_new_tokens is {max_new_tokens}: "
                f"together {prompt_tokens + max_new_tokens}, over the context size of "
                f"{self.context_size}. Shorten the prompt or lower max_new_tokens."
            )

    def warm_up(self) -> float:
        """Run one short generation, so the first visitor waits no longer than the second
        (a fresh process took 1.9 s to its first token, 0.2 s once warm: issue 12). Returns
        the seconds it took."""
        start = time.perf_counter()
        params = SamplingParams(max_new_tokens=2, temperature=0, repetition_penalty=1.0)
        self.generate("Hello", params).run()
        return time.perf_counter() - start

    def status(self) -> dict[str, Any]:
        """What the engine is doing now, for the Model tab."""
        return {"active": self.active, "waiting": self.waiting, "slots": self.max_concurrent}

    def generate(
        self,
        prompt: str,
        params: SamplingParams,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """Stream the continuation of `prompt` (final text, rendered or raw)."""
        if params.prompt_lookup and not self.supports_prompt_lookup:
            raise EngineError(
                f"Prompt lookup runs on the genai engine; this is the {self.kind} engine."
            )
        ids = self.tokenizer.encode(prompt)
        self.check_fits(len(ids), params.max_new_tokens)
        cancel = cancel or threading.Event()
        generation = Generation(iter(()), cancel)
        generation._chunks = self._stream(ids, params, cancel, generation)
        return generation

    def _stream(
        self,
        ids: list[int],
        params: SamplingParams,
        cancel: threading.Event,
        generation: Generation,
    ) -> Iterator[str]:
        updates: queue.Queue = queue.Queue()
        progress = _Progress(self.tokenizer, params, cancel, time.perf_counter())
        worker = threading.Thread(
            target=self._work, args=(ids, params, progress, updates), daemon=True
        )
        worker.start()
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
                if item:
                    yield item
        finally:
            # Reached on normal end, on error, and when the consumer goes away (close()).
            cancel.set()
        generation.result = self._result(ids, progress)

    def _count(self, active: int = 0, waiting: int = 0) -> None:
        with self._count_lock:
            self.active += active
            self.waiting += waiting
            self.peak_active = max(self.peak_active, self.active)

    def _work(
        self, ids: list[int], params: SamplingParams, progress: _Progress, updates: queue.Queue
    ) -> None:
        def on_token(token_id: int, score: TokenScore | None = None) -> bool:
            stop = progress.push(token_id, score)
            if delta := progress.take():
                updates.put(delta)
            return stop

        try:
            self._count(waiting=1)
            try:
                got_slot = self._slots.acquire(timeout=LOCK_TIMEOUT_S)
            finally:
                self._count(waiting=-1)
            if not got_slot:
                raise EngineError("The engine is busy with other generations; try again.")
            try:
                updates.put(_STARTED)
                if progress.cancel.is_set():  # cancelled while waiting for a slot
                    progress.stop_reason = "cancelled"
                else:
                    self._count(active=1)
                    progress.start = time.perf_counter()
                    try:
                        progress.native = self.run_native(ids, params, on_token)
                    finally:
                        self._count(active=-1)
            finally:
                self._slots.release()
            progress.flush()
            if progress.stop_reason is None:
                # The native loop ended by itself: an end id it did not pass on, or the limit.
                reached = len(progress.ids) >= params.max_new_tokens
                progress.stop_reason = "max_new_tokens" if reached else "eos"
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
        decode_s = end - first
        ttft_s = first - progress.start
        tokens_per_s = (new - 1) / decode_s if new > 1 and decode_s > 0 else 0.0
        native = progress.native
        if native is not None and new and native.ttft_s is not None:
            # GenAI's own clock, which matched hand timing to 0.1% (issue 12).
            ttft_s, tokens_per_s = native.ttft_s, native.tokens_per_s
        return GenerationResult(
            text=progress.text,
            token_ids=progress.ids,
            stop_reason=progress.stop_reason or "cancelled",
            prompt_tokens=len(ids),
            new_tokens=new,
            ttft_s=ttft_s,
            tokens_per_s=tokens_per_s,
            scores=tuple(progress.scores),
            accepted_drafts=native.accepted_drafts if native else None,
        )

    def run_native(
        self,
        ids: list[int],
        params: SamplingParams,
        on_token: OnToken,
    ) -> NativeFigures | None:
        """Run the native generation, calling on_token per new id (with its score, where the
        engine gives one) until it returns True; return the engine's own figures, if any."""
        raise NotImplementedError


class _Request:
    """One request inside a ContinuousBatchingPipeline: its handle, and the failure of a step
    that it was part of. Dropping the handle drops the request (GenAI), so it is kept here."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.error: BaseException | None = None


class _Stepper:
    """The one thread that drives a ContinuousBatchingPipeline: it calls `step()` while any
    request is unfinished (step releases the GIL), and wakes the requests' readers after each.

    A step that raises fails the requests that were in it, not the thread: the next request
    gets a fresh start.
    """

    def __init__(self, pipeline: Any, name: str) -> None:
        import openvino_genai

        self.pipeline = pipeline
        self.running = openvino_genai.GenerationStatus.RUNNING
        self.steps = 0
        self._live: dict[int, _Request] = {}
        self._ids = itertools.count()
        self._wake = threading.Condition()
        threading.Thread(target=self._loop, daemon=True, name=name).start()

    def step(self) -> None:  # an attribute, so tests can inject a failing or stalling step
        self.pipeline.step()

    def add(self, ids: list[int], config: Any) -> tuple[int, _Request]:
        import numpy as np
        import openvino as ov

        with self._wake:
            request_id = next(self._ids)
            tensor = ov.Tensor(np.array([ids], dtype=np.int64))
            request = _Request(self.pipeline.add_request(request_id, tensor, config))
            self._live[request_id] = request
            self._wake.notify_all()
        return request_id, request

    def remove(self, request_id: int) -> None:
        with self._wake:
            request = self._live.pop(request_id)
            if request.handle.get_status() == self.running:
                request.handle.cancel()  # GenAI frees its KV blocks on the next step
            request.handle = None
            self._wake.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        """Block until a step after step number `seen` has ended; return the newest number."""
        with self._wake:
            self._wake.wait_for(lambda: self.steps > seen, timeout)
            return self.steps

    def _loop(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(self.pipeline.has_non_finished_requests)
            try:
                self.step()
            except Exception as error:
                log.exception("a continuous-batching step failed")
                with self._wake:
                    for request in self._live.values():
                        request.error = error
                time.sleep(FAILED_STEP_PAUSE_S)  # a step that keeps failing must not spin
            with self._wake:
                self.steps += 1
                self._wake.notify_all()


class GenAIEngine(Engine):
    """openvino_genai's ContinuousBatchingPipeline: every running request advances in the same
    pass over the weights, which on a CPU costs little more than one (decoding is bound by
    memory bandwidth). Prefix caching keeps a chat's earlier turns in the KV cache.

    Prompt lookup decoding needs a pipeline built for it, where every request drafts (GenAI
    checks it), so that second pipeline is built on the first request that asks for it.
    """

    kind = "genai"
    supports_prompt_lookup = True

    def __init__(
        self,
        folder: Path,
        device: str,
        ov_config: dict[str, str],
        max_concurrent: int = 4,
        **kwargs: Any,
    ) -> None:
        import openvino_genai

        self._genai = openvino_genai
        self._device = device
        self._ov_config = dict(ov_config)
        self._scheduler = openvino_genai.SchedulerConfig()
        self._scheduler.enable_prefix_caching = True
        self._scheduler.max_num_seqs = max_concurrent
        self.pipeline = openvino_genai.ContinuousBatchingPipeline(
            str(folder), self._scheduler, device, self._ov_config
        )
        self._stepper = _Stepper(self.pipeline, "genai-step")
        self._lookup_stepper: _Stepper | None = None
        self._lookup_lock = threading.Lock()
        super().__init__(folder, max_concurrent=max_concurrent, **kwargs)

    def _stepper_for(self, params: SamplingParams) -> _Stepper:
        if not params.prompt_lookup:
            return self._stepper
        with self._lookup_lock:
            if self._lookup_stepper is None:
                pipeline = self._genai.ContinuousBatchingPipeline(
                    str(self.folder),
                    self._scheduler,
                    self._device,
                    {**self._ov_config, "prompt_lookup": True},
                )
                self._lookup_stepper = _Stepper(pipeline, "genai-lookup-step")
            return self._lookup_stepper

    def status(self) -> dict[str, Any]:
        metrics = self.pipeline.get_metrics()  # as of the pipeline's last step
        running = self.pipeline.has_non_finished_requests()
        return {
            **super().status(),
            # GenAI reports percentages. With no unfinished request no block is held: prefix
            # caching keeps finished requests' blocks only as reusable, evictable cache.
            "kv_cache_usage": metrics.cache_usage / 100 if running else 0.0,
            "kv_cache_peak": metrics.max_cache_usage / 100,
            "kv_cache_bytes": metrics.kv_cache_size_in_bytes,
            "prompt_lookup_loaded": self._lookup_stepper is not None,
        }

    def config(self, params: SamplingParams) -> Any:
        """The GenerationConfig for `params`: explicit, as GenAI's samples write it."""
        config = self._genai.GenerationConfig(
            # GenAI's max_new_tokens is unbounded by default: always set it.
            max_new_tokens=params.max_new_tokens,
            stop_token_ids=set(self.tokenizer.eos_ids),
            repetition_penalty=params.repetition_penalty,
            apply_chat_template=False,
            # The chosen token's log-probability under the raw model (about 3% slower); GenAI
            # gives no alternatives (values above 1 count as 1).
            logprobs=1,
        )
        if not params.greedy:
            config.do_sample = True
            config.temperature = params.temperature
            config.top_p = params.top_p
            config.rng_seed = params.seed
            if params.top_k:
                # top_k has no cap in the API; past the vocabulary it cuts nothing, and
                # GenAI's size_t field could not hold every whole number anyway.
                config.top_k = min(params.top_k, self.tokenizer.vocab_size)
        if params.prompt_lookup:
            config.num_assistant_tokens = PROMPT_LOOKUP_TOKENS
            config.max_ngram_size = PROMPT_LOOKUP_NGRAM
        return config

    def run_native(
        self,
        ids: list[int],
        params: SamplingParams,
        on_token: OnToken,
    ) -> NativeFigures | None:
        stepper = self._stepper_for(params)
        seen = stepper.steps
        request_id, request = stepper.add(ids, self.config(params))
        reads = tokens = 0
        try:
            while True:
                if request.error is not None:
                    raise request.error
                handle = request.handle
                if handle.can_read():
                    for output in handle.read().values():
                        reads += 1
                        for token_id, logprob in zip(
                            output.generated_ids, output.generated_log_probs, strict=True
                        ):
                            tokens += 1
                            if on_token(token_id, TokenScore(logprob)):
                                return self._figures(handle, params, reads, tokens)
                elif handle.get_status() != stepper.running:
                    return self._figures(handle, params, reads, tokens)
                else:
                    newest = stepper.wait(seen, TOKEN_TIMEOUT_S)
                    if newest == seen:
                        raise EngineError(
                            f"The engine made no progress for {TOKEN_TIMEOUT_S:.0f} s; cancelled."
                        )
                    seen = newest
        finally:
            stepper.remove(request_id)

    def _figures(
        self, handle: Any, params: SamplingParams, reads: int, tokens: int
    ) -> NativeFigures:
        """GenAI's figures for a finished request (it has none for one stopped early)."""
        # Each step gives a request one token, plus the drafts it confirmed (prompt lookup).
        accepted = tokens - reads if params.prompt_lookup else None
        if handle.get_status() != self._genai.GenerationStatus.FINISHED:
            return NativeFigures(accepted_drafts=accepted)
        metrics = handle.get_perf_metrics()
        return NativeFigures(
            ttft_s=metrics.get_ttft().mean / 1000,
            tokens_per_s=metrics.get_throughput().mean,
            accepted_drafts=accepted,
        )


class OptimumEngine(Engine):
    """The reference path: one generation at a time (the base's one slot)."""

    kind = "optimum"

    def __init__(self, folder: Path, device: str, ov_config: dict[str, str], **kwargs: Any) -> None:
        try:
            from optimum.intel import OVModelForCausalLM
        except ImportError as error:
            raise EngineError(
                "The optimum engine needs torch and optimum-intel, which the app's own "
                "requirements leave out: pip install -r requirements-optimum.txt "
                f"(missing: {error.name})."
            ) from None
        self.model = OVModelForCausalLM.from_pretrained(
            folder, device=device, ov_config=dict(ov_config), compile=True
        )
        super().__init__(folder, **kwargs)

    def run_native(
        self,
        ids: list[int],
        params: SamplingParams,
        on_token: OnToken,
    ) -> NativeFigures | None:
        import torch
        from transformers import (
            LogitsProcessor,
            LogitsProcessorList,
            StoppingCriteria,
            StoppingCriteriaList,
        )
        from transformers.generation.streamers import BaseStreamer

        stopped = False
        step_logprobs: list[torch.Tensor] = []

        class Scores(LogitsProcessor):
            """Keeps the newest step's log-probabilities (one vector: a 256k vocabulary at
            every step would be about 1 MB a token), read when the streamer sees the choice.
            transformers runs it after its own processors, so under sampling it sees the
            scores after temperature, top-k and top-p."""

            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
                step_logprobs[:] = [torch.log_softmax(scores[0].float(), dim=-1)]
                return scores

        class Streamer(BaseStreamer):
            prompt_seen = False

            def put(self, value: torch.Tensor) -> None:
                nonlocal stopped
                if not self.prompt_seen:  # generate() first passes the prompt ids
                    self.prompt_seen = True
                    return
                for token_id in value.reshape(-1).tolist():
                    stopped = stopped or on_token(token_id, _score(step_logprobs, token_id))

            def end(self) -> None:
                pass

        class Stop(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: object, **kwargs) -> torch.Tensor:
                return torch.full((input_ids.shape[0],), stopped, dtype=torch.bool)

        sampling = {}
        if not params.greedy:
            torch.manual_seed(params.seed)  # global RNG, safe: one generation at a time
            sampling = dict(
                do_sample=True,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=min(params.top_k, self.tokenizer.vocab_size) or None,
            )
        input_ids = torch.tensor([ids], dtype=torch.long)
        self.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=params.max_new_tokens,
            repetition_penalty=params.repetition_penalty,
            eos_token_id=sorted(self.tokenizer.eos_ids),
            pad_token_id=0,
            streamer=Streamer(),
            stopping_criteria=StoppingCriteriaList([Stop()]),
            logits_processor=LogitsProcessorList([Scores()]),
            **(sampling or {"do_sample": False}),
        )
        return None


def _score(step_logprobs: list, token_id: int) -> TokenScore | None:
    """The chosen token's score and the step's top alternatives, from the kept vector."""
    if not step_logprobs:
        return None
    logprobs = step_logprobs[0]
    top = logprobs.topk(TOP_ALTERNATIVES)
    alternatives = tuple(
        (int(i), float(v)) for i, v in zip(top.indices.tolist(), top.values.tolist(), strict=True)
    )
    return TokenScore(float(logprobs[token_id]), alternatives)


_ENGINE_CLASSES: dict[str, type[Engine]] = {"genai": GenAIEngine, "optimum": OptimumEngine}


@dataclass(frozen=True)
class EngineSpec:
    """Everything that shapes an engine, and so the key of the per-process cache: a caller
    asking for another config or context size never gets this one by mistake."""

    folder: str  # resolved, so two spellings of one folder share an engine
    kind: str = "genai"
    device: str = "CPU"
    ov_config: tuple[tuple[str, str], ...] = ()
    context_size: int = 8192
    max_concurrent: int = 4

    @classmethod
    def of(
        cls,
        folder: Path,
        kind: str = "genai",
        device: str = "CPU",
        ov_config: dict[str, str] | None = None,
        context_size: int = 8192,
        max_concurrent: int = 4,
    ) -> EngineSpec:
        config = tuple(sorted((str(k), str(v)) for k, v in (ov_config or {}).items()))
        return cls(str(Path(folder).resolve()), kind, device, config, context_size, max_concurrent)


_engines: dict[EngineSpec, Engine] = {}
_engines_lock = threading.Lock()


def load_engine(
    folder: Path,
    kind: str = "genai",
    device: str = "CPU",
    *,
    cache_dir: Path,
    context_size: int = 8192,
    ov_config: dict[str, str] | None = None,
    model_name: str | None = None,
    max_concurrent: int = 4,
) -> Engine:
    """Create an engine (no caching); `get_engine` is the cached way in. `max_concurrent` is
    how many generations the genai engine decodes together; optimum runs one at a time."""
    import openvino as ov

    if kind not in _ENGINE_CLASSES:
        raise EngineError(f"Unknown engine {kind!r}: choose one of {', '.join(ENGINE_KINDS)}.")
    ov_cache = cache_dir / "ov_cache" / folder.resolve().name  # per model: "cache used" is true
    ov_cache.mkdir(parents=True, exist_ok=True)
    cache_used = any(ov_cache.iterdir())
    config = {"CACHE_DIR": str(ov_cache), **(ov_config or {})}
    tokenizer = Tokenizer(folder)
    start = time.perf_counter()
    concurrency = {"max_concurrent": max_concurrent} if kind == "genai" else {}
    engine = _ENGINE_CLASSES[kind](
        folder, device, config, tokenizer=tokenizer, context_size=context_size, **concurrency
    )
    load_s = time.perf_counter() - start
    engine.info = EngineInfo(
        model_name or str(folder), kind, device, ov.get_version(), load_s, cache_used
    )
    return engine


def get_engine(
    folder: Path,
    kind: str = "genai",
    device: str = "CPU",
    *,
    cache_dir: Path,
    context_size: int = 8192,
    ov_config: dict[str, str] | None = None,
    model_name: str | None = None,
    max_concurrent: int = 4,
) -> Engine:
    """The process's one engine for these arguments (their `EngineSpec`), created once."""
    spec = EngineSpec.of(folder, kind, device, ov_config, context_size, max_concurrent)
    with _engines_lock:
        if spec not in _engines:
            _engines[spec] = load_engine(
                Path(folder),
                kind,
                device,
                cache_dir=cache_dir,
                context_size=context_size,
                ov_config=dict(spec.ov_config),
                model_name=model_name,
                max_concurrent=max_concurrent,
            )
        return _engines[spec]


def open_engine(settings: Settings) -> tuple[Engine, str | None]:
    """The cached engine for `settings`, and a notice when it had to fall back.

    The default model falls back to `settings.fallback_model` when it can't be had (no network
    and no cached copy); a model given explicitly never does.
    """
    folder, name, notice = resolve_or_fall_back(
        settings.model,
        settings.fallback_model,
        cache_dir=settings.cache_dir,
        may_fall_back=not settings.model_given,
    )
    engine = get_engine(
        folder,
        settings.engine,
        settings.device,
        cache_dir=settings.cache_dir,
        context_size=settings.context_size,
        ov_config=dict(settings.ov_config),
        model_name=name,
        max_concurrent=settings.max_concurrent,
    )
    return engine, notice
