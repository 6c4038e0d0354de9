"""The generator: one cached OpenVINO engine per (model, engine kind, device) per process.

Owns: loading an OpenVINO IR folder into an engine (`genai`: openvino_genai.LLMPipeline, the
default; `optimum`: optimum-intel's OVModelForCausalLM with transformers' generate, the path of
the LocalAI definition, kept as the reference), streaming text as it decodes, stop strings, end
tokens, cancellation, the context-size check, timing figures, the per-engine lock that keeps one
generation at a time, and the per-process engine cache.
Does not own: chat templates (`chat_format`), tokenization rules (`tokens`), where a model comes
from (`models`), settings (`settings`), or anything about the UI.

A prompt reaches `generate` as text that is already final (a rendered chat prompt or raw text);
`tokens.Tokenizer.encode` gives it exactly one `<bos>`.
"""

from __future__ import annotations

import logging
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


class EngineError(UserError, RuntimeError):
    """A generation that could not run or failed; the message is for people."""


class ContextOverflowError(EngineError):
    pass


@dataclass(frozen=True)
class GenerationResult:
    text: str
    token_ids: list[int]
    stop_reason: StopReason
    prompt_tokens: int
    new_tokens: int
    ttft_s: float
    tokens_per_s: float


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
    text: str = ""
    emitted: int = 0
    first_token_at: float | None = None
    stop_reason: StopReason | None = None

    def __post_init__(self) -> None:
        self.decoder = self.tokenizer.decoder()

    def push(self, token_id: int) -> bool:
        """Take one generated id; return True when generation must stop."""
        if self.stop_reason is not None:
            return True
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        if token_id in self.tokenizer.eos_ids:
            self.ids.append(token_id)
            self.stop_reason = "end_of_turn" if token_id == self.tokenizer.end_of_turn_id else "eos"
            return True
        self.ids.append(token_id)
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
    """Base: the lock, the worker thread, the stream and the figures; subclasses run the model."""

    kind = "base"

    def __init__(
        self,
        folder: Path,
        tokenizer: Tokenizer,
        context_size: int,
        info: EngineInfo | None = None,  # set by load_engine once loading is timed
    ) -> None:
        self.folder = folder
        self.tokenizer = tokenizer
        self.context_size = context_size
        self.info = info
        self._lock = threading.Lock()
        # Generations running in the native code now; tests check it never exceeds 1.
        self.active = 0
        self.peak_active = 0

    def check_fits(self, prompt_tokens: int, max_new_tokens: int) -> None:
        if prompt_tokens + max_new_tokens > self.context_size:
            raise ContextOverflowError(
                f"The prompt has {prompt_tokens} tokens and max_new_tokens is {max_new_tokens}: "
                f"together {prompt_tokens + max_new_tokens}, over the context size of "
                f"{self.context_size}. Shorten the prompt or lower max_new_tokens."
            )

    def generate(
        self,
        prompt: str,
        params: SamplingParams,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """Stream the continuation of `prompt` (final text, rendered or raw)."""
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
                # Waiting for the lock has its own limit (in the worker); once the engine is
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

    def _work(
        self, ids: list[int], params: SamplingParams, progress: _Progress, updates: queue.Queue
    ) -> None:
        def on_token(token_id: int) -> bool:
            stop = progress.push(token_id)
            if delta := progress.take():
                updates.put(delta)
            return stop

        try:
            if not self._lock.acquire(timeout=LOCK_TIMEOUT_S):
                raise EngineError("The engine is busy with another generation; try again.")
            try:
                updates.put(_STARTED)
                if progress.cancel.is_set():  # cancelled while waiting for the lock
                    progress.stop_reason = "cancelled"
                else:
                    self.active += 1
                    self.peak_active = max(self.peak_active, self.active)
                    progress.start = time.perf_counter()
                    try:
                        self.run_native(ids, params, on_token)
                    finally:
                        self.active -= 1
            finally:
                self._lock.release()
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
        return GenerationResult(
            text=progress.text,
            token_ids=progress.ids,
            stop_reason=progress.stop_reason or "cancelled",
            prompt_tokens=len(ids),
            new_tokens=new,
            ttft_s=first - progress.start,
            tokens_per_s=(new - 1) / decode_s if new > 1 and decode_s > 0 else 0.0,
        )

    def run_native(
        self, ids: list[int], params: SamplingParams, on_token: Callable[[int], bool]
    ) -> None:
        """Run the native generation, calling on_token per new id until it returns True."""
        raise NotImplementedError


class GenAIEngine(Engine):
    kind = "genai"

    def __init__(self, folder: Path, device: str, ov_config: dict[str, str], **kwargs: Any) -> None:
        import openvino_genai

        self._genai = openvino_genai
        self.pipeline = openvino_genai.LLMPipeline(str(folder), device, **ov_config)
        super().__init__(folder, **kwargs)

    def run_native(
        self, ids: list[int], params: SamplingParams, on_token: Callable[[int], bool]
    ) -> None:
        import numpy as np
        import openvino as ov

        genai = self._genai
        config = genai.GenerationConfig(
            # GenAI's max_new_tokens is unbounded by default: always set it.
            max_new_tokens=params.max_new_tokens,
            stop_token_ids=set(self.tokenizer.eos_ids),
            repetition_penalty=params.repetition_penalty,
            apply_chat_template=False,
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

        class Streamer(genai.StreamerBase):
            def write(self, token: int | list[int]) -> object:
                for token_id in token if isinstance(token, list) else [token]:
                    if on_token(token_id):
                        return genai.StreamingStatus.STOP
                return genai.StreamingStatus.RUNNING

            def end(self) -> None:
                pass

        streamer = Streamer()
        self.pipeline.generate(ov.Tensor(np.array([ids], dtype=np.int64)), config, streamer)


class OptimumEngine(Engine):
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
        self, ids: list[int], params: SamplingParams, on_token: Callable[[int], bool]
    ) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        stopped = False

        class Streamer(BaseStreamer):
            prompt_seen = False

            def put(self, value: torch.Tensor) -> None:
                nonlocal stopped
                if not self.prompt_seen:  # generate() first passes the prompt ids
                    self.prompt_seen = True
                    return
                for token_id in value.reshape(-1).tolist():
                    stopped = stopped or on_token(token_id)

            def end(self) -> None:
                pass

        class Stop(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: object, **kwargs) -> torch.Tensor:
                return torch.full((input_ids.shape[0],), stopped, dtype=torch.bool)

        sampling = {}
        if not params.greedy:
            torch.manual_seed(params.seed)  # global RNG, safe: we hold the engine lock
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
            **(sampling or {"do_sample": False}),
        )


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

    @classmethod
    def of(
        cls,
        folder: Path,
        kind: str = "genai",
        device: str = "CPU",
        ov_config: dict[str, str] | None = None,
        context_size: int = 8192,
    ) -> EngineSpec:
        config = tuple(sorted((str(k), str(v)) for k, v in (ov_config or {}).items()))
        return cls(str(Path(folder).resolve()), kind, device, config, context_size)


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
) -> Engine:
    """Create an engine (no caching); `get_engine` is the cached way in."""
    import openvino as ov

    if kind not in _ENGINE_CLASSES:
        raise EngineError(f"Unknown engine {kind!r}: choose one of {', '.join(ENGINE_KINDS)}.")
    ov_cache = cache_dir / "ov_cache" / folder.resolve().name  # per model: "cache used" is true
    ov_cache.mkdir(parents=True, exist_ok=True)
    cache_used = any(ov_cache.iterdir())
    config = {"CACHE_DIR": str(ov_cache), **(ov_config or {})}
    tokenizer = Tokenizer(folder)
    start = time.perf_counter()
    engine = _ENGINE_CLASSES[kind](
        folder, device, config, tokenizer=tokenizer, context_size=context_size
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
) -> Engine:
    """The process's one engine for these arguments (their `EngineSpec`), created once."""
    spec = EngineSpec.of(folder, kind, device, ov_config, context_size)
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
    )
    return engine, notice
