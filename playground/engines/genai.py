"""The `genai` engine: OpenVINO GenAI's ContinuousBatchingPipeline, the default.

Owns: the pipeline (and a second one built for prompt lookup on first use), the one stepper
thread that drives each, the GenerationConfig made from `SamplingParams`, the KV-cache status
(GenAI's own metrics) and GenAI's figures.
Does not own: the stream, slots and stop rules (`engines.base`), loading and caching (the
registry in `engines/__init__`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from pathlib import Path
from typing import Any

from playground.engines.base import (
    TOKEN_TIMEOUT_S,
    Engine,
    EngineError,
    NativeFigures,
    OnToken,
    Prompt,
    TokenScore,
)
from playground.memory import KvBudget, KvShape, kv_budget, kv_precision
from playground.sampling import SamplingParams, genai_options

log = logging.getLogger(__name__)

FAILED_STEP_PAUSE_S = 0.1
# GenAI's Python binding of step() keeps the GIL (no gil_scoped_release on "step" in
# src/python/py_continuous_batching_pipeline.cpp), so while the engine steps no other thread of
# the app runs: not the server's event loop, not the streams. After each step the stepper
# sleeps this share of the step's time, so they catch up. Measured on mid-random, 4 chats at
# once: a first token took 2.2-5.7 s from the engine to the client with no pause, 0.006 s with
# 5%.
STEP_YIELD = 0.05
# A new request needs several hops through uvicorn and Gradio's queue before its endpoint runs,
# each one only in a pause. So while the app's Python threads used the CPU for more than this
# share of a pause, the stepper pauses again, up to `STEP_YIELD_MAX` of the step. OpenVINO's own
# threads are not counted: they spin between steps (a whole-process clock saw 0.22-0.35 of each
# pause busy with no request coming, the Python threads 0.12-0.19). On mid-random, 3 chats
# decoding, a late visitor's endpoint ran 0.15-0.29 s after it sent; 0.34-0.54 s when a sleep
# that ended late was the sign, 0.89-1.36 s with the 5% alone.
APP_BUSY = 0.5
STEP_YIELD_MAX = 0.5

# Prompt lookup's drafts: up to 5 tokens copied after a match of up to 3 tokens of the text so
# far (GenAI's prompt_lookup sample uses these values).
PROMPT_LOOKUP_TOKENS = 5
PROMPT_LOOKUP_NGRAM = 3


class _Request:
    """One request inside a ContinuousBatchingPipeline: its handle, and the failure of a step
    that it was part of. Dropping the handle drops the request (GenAI), so it is kept here."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.error: BaseException | None = None


class _Stepper:
    """The one thread that drives a ContinuousBatchingPipeline: it calls `step()` while any
    request is unfinished, wakes the requests' readers after each, and pauses (step holds the
    GIL; `_pause`).

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
            started = time.perf_counter()
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
            try:
                _pause(time.perf_counter() - started)
            except Exception:  # this is the engine's one thread: a pause that fails must not end it
                log.exception("the stepper's pause failed")


def _pause(step_s: float) -> None:
    """The app's turn after a step of `step_s` seconds: `STEP_YIELD` of it, then more while the
    app's threads kept busy, up to `STEP_YIELD_MAX` of it."""
    share = STEP_YIELD * step_s
    deadline = time.perf_counter() + STEP_YIELD_MAX * step_s
    before = _app_cpu()
    while True:
        asked = time.perf_counter()
        time.sleep(share)
        after, woke = _app_cpu(), time.perf_counter()
        used = sum(seconds - before.get(ident, 0.0) for ident, seconds in after.items())
        if used < APP_BUSY * (woke - asked) or woke >= deadline:
            return
        before = after


def _app_cpu() -> dict[int, float]:
    """CPU seconds used so far by each of the process's Python threads but this one."""
    me, used = threading.get_ident(), {}
    for thread in threading.enumerate():
        if thread.ident not in (me, None):  # None: started, not yet running
            with contextlib.suppress(OSError):  # the thread has just ended
                used[thread.ident] = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return used


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
        context_size: int = 8192,
        kv_cache_gb: float = 0.0,
        **kwargs: Any,
    ) -> None:
        import openvino_genai

        self._genai = openvino_genai
        self._device = device
        self._ov_config = dict(ov_config)
        self._scheduler = openvino_genai.SchedulerConfig()
        self._scheduler.enable_prefix_caching = True
        self._scheduler.max_num_seqs = max_concurrent
        # No budget: GenAI grows the cache as requests need it, bounded only by the slots.
        budget: KvBudget | None = None
        if kv_cache_gb:
            shape, precision = KvShape.read(folder), kv_precision(self._ov_config)
            budget = kv_budget(kv_cache_gb, shape, precision, max_concurrent, context_size)
            self._scheduler.num_kv_blocks = budget.blocks  # allocated once, in full
        self.pipeline = openvino_genai.ContinuousBatchingPipeline(
            str(folder), self._scheduler, device, self._ov_config
        )
        self._stepper = _Stepper(self.pipeline, "genai-step")
        self._lookup_stepper: _Stepper | None = None
        self._lookup_lock = threading.Lock()
        super().__init__(
            folder, max_concurrent=max_concurrent, context_size=context_size, kv_budget=budget,
            **kwargs,
        )  # fmt: skip

    @classmethod
    def create(cls, folder: Path, spec: Any, tokenizer: Any, ov_config: dict) -> GenAIEngine:
        return cls(folder, spec.device, ov_config, tokenizer=tokenizer,
                   context_size=spec.context_size, max_concurrent=spec.max_concurrent,
                   kv_cache_gb=spec.kv_cache_gb)  # fmt: skip

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

    def notes(self) -> list[str]:
        if self.kv_budget is None:
            return ["No KV-cache budget (kv_cache_gb: 0): the cache grows as requests need it."]
        return [
            f"KV-cache budget: {self.kv_budget.describe()}. A request waits until its prompt "
            "and max new tokens fit beside those running. Prompt lookup's pipeline, built when "
            "a visitor first turns it on, loads the model again with a cache of the same size."
        ]

    def config(self, params: SamplingParams) -> Any:
        """The GenerationConfig for `params`: explicit, as GenAI's samples write it."""
        config = self._genai.GenerationConfig(
            stop_token_ids=set(self.tokenizer.eos_ids),
            apply_chat_template=False,
            # The chosen token's log-probability under the raw model (about 3% slower); GenAI
            # gives no alternatives (values above 1 count as 1).
            logprobs=1,
        )
        for name, value in genai_options(params, self.tokenizer.vocab_size).items():
            setattr(config, name, value)
        if params.prompt_lookup:
            config.num_assistant_tokens = PROMPT_LOOKUP_TOKENS
            config.max_ngram_size = PROMPT_LOOKUP_NGRAM
        return config

    def run_native(
        self,
        prompt: Prompt,
        params: SamplingParams,
        on_token: OnToken,
    ) -> NativeFigures | None:
        stepper = self._stepper_for(params)
        seen = stepper.steps
        request_id, request = stepper.add(prompt.ids, self.config(params))
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


ENGINE = GenAIEngine
