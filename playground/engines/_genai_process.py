"""The genai engine's own process: the only place that calls `ContinuousBatchingPipeline.step`.

Owns: the child's side of the engine process, started by `engines.genai` as
`python -m playground.engines._genai_process FD`: it builds the pipeline(s), steps them while
any request is unfinished, and answers over one socket (`multiprocessing.connection`), plus the
estimate of each request's prompt tokens read so far and the test hooks for slow or failing
steps.
Does not own: admission, the KV budget, stop strings, the streams (`engines.base`, in the app's
process) or restarting a child that died (`engines.genai`).

Why a process: GenAI's Python binding of `step()` keeps the GIL (no gil_scoped_release on "step"
in src/python/py_continuous_batching_pipeline.cpp), so a step in the app's process froze every
other thread of it, page loads and Stop included, for as long as the step took (seconds on the
9B). Why not `multiprocessing.Process`: its spawn re-runs the parent's main module in the child,
and `app.py` loads the engine at import (Spaces import it), so the child would start another.

The messages, each a tuple whose first item names it:
- app to child: ("add", id, ids, config, lookup), ("cancel", id), ("hooks", {delay_s, fail}).
- child to app: ("ready", status), ("failed", message), ("loading",), ("reading", id, read, of),
  ("tokens", id, ids, logprobs), ("done", id, figures), ("error", id, message),
  ("step", status).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger("playground.engines.genai.process")

# Prompt lookup's drafts: up to 5 tokens copied after a match of up to 3 tokens of the text so
# far (GenAI's prompt_lookup sample uses these values).
PROMPT_LOOKUP_TOKENS = 5
PROMPT_LOOKUP_NGRAM = 3
FAILED_STEP_PAUSE_S = 0.1  # a step that keeps failing must not spin


def scheduler_config(max_concurrent: int, kv_blocks: int) -> Any:
    """The engine's GenAI scheduler: prefix caching on, `max_concurrent` sequences at once, and
    `kv_blocks` KV-cache blocks allocated once in full (0: the cache grows as requests need)."""
    import openvino_genai

    scheduler = openvino_genai.SchedulerConfig()
    scheduler.enable_prefix_caching = True
    scheduler.max_num_seqs = max_concurrent
    if kv_blocks:
        scheduler.num_kv_blocks = kv_blocks
    return scheduler


@dataclass
class _Live:
    """One request in a pipeline: its handle (dropping it drops the request, in GenAI) and how
    many of its prompt tokens have been read, by the scheduler's rule (`_read_prompts`)."""

    handle: Any
    pipeline: Any
    prompt_tokens: int
    read: int = 0


class _Child:
    """The stepping loop: one thread, so nothing else in this process waits on a step."""

    def __init__(self, conn: Connection, spec: dict[str, Any]) -> None:
        import openvino_genai

        self.genai, self.conn, self.spec = openvino_genai, conn, spec
        self.scheduler = scheduler_config(spec["max_concurrent"], spec["kv_blocks"])
        self.main = self._pipeline({})
        self.lookup: Any = None  # prompt lookup's pipeline, built on first use
        self.live: dict[int, _Live] = {}
        self.steps = 0
        self.hooks = {"delay_s": 0.0, "fail": 0}

    def _pipeline(self, extra: dict[str, Any]) -> Any:
        return self.genai.ContinuousBatchingPipeline(
            self.spec["folder"], self.scheduler, self.spec["device"],
            {**self.spec["ov_config"], **extra},
        )  # fmt: skip

    def run(self) -> None:
        while True:
            busy = [p for p in (self.main, self.lookup) if p and p.has_non_finished_requests()]
            # Idle, block until the app says something; busy, only take what has arrived.
            timeout = 0 if busy else None
            while self.conn.poll(timeout):
                self._handle(self.conn.recv())
                timeout = 0
            for pipeline in busy:
                self._step(pipeline)

    def _handle(self, message: tuple) -> None:
        kind, *rest = message
        if kind == "add":
            self._add(*rest)
        elif kind == "cancel":
            live = self.live.pop(rest[0], None)
            if live and live.handle.get_status() == self.genai.GenerationStatus.RUNNING:
                live.handle.cancel()  # GenAI frees its KV blocks on the next step
        elif kind == "hooks":
            self.hooks.update(rest[0])

    def _add(self, request_id: int, ids: list[int], options: dict[str, Any], lookup: bool) -> None:
        import numpy as np
        import openvino as ov

        config = self.genai.GenerationConfig()
        for name, value in options.items():
            setattr(config, name, value)
        if lookup:
            if self.lookup is None:
                # Prompt lookup needs a pipeline built for it (every request drafts, GenAI
                # checks it): it loads the model a second time, so only on first use. The app
                # is told, so that it waits as for a load, not as for a step.
                self.conn.send(("loading",))
                self.lookup = self._pipeline({"prompt_lookup": True})
            config.num_assistant_tokens = PROMPT_LOOKUP_TOKENS
            config.max_ngram_size = PROMPT_LOOKUP_NGRAM
        pipeline = self.lookup if lookup else self.main
        try:
            tensor = ov.Tensor(np.array([ids], dtype=np.int64))
            handle = pipeline.add_request(request_id, tensor, config)
        except Exception as error:  # a config GenAI refuses: this request's failure only
            log.exception("add_request failed")
            self.conn.send(("error", request_id, type(error).__name__))
            return
        self.live[request_id] = _Live(handle, pipeline, len(ids))

    def _step(self, pipeline: Any) -> None:
        try:
            self._hooked_step(pipeline)
        except Exception as error:
            log.exception("a continuous-batching step failed")
            for request_id, live in list(self.live.items()):
                if live.pipeline is pipeline:
                    del self.live[request_id]
                    if live.handle.get_status() == self.genai.GenerationStatus.RUNNING:
                        live.handle.cancel()
                    self.conn.send(("error", request_id, type(error).__name__))
            time.sleep(FAILED_STEP_PAUSE_S)
        else:
            self._read_prompts(pipeline)
            for request_id, live in list(self.live.items()):
                if live.pipeline is pipeline:
                    self._collect(request_id, live)
        self.steps += 1
        self.conn.send(("step", self._status()))

    def _hooked_step(self, pipeline: Any) -> None:
        """`pipeline.step()`, slowed or failed by the app's test hooks (a 9B's pace, faults)."""
        if self.hooks["delay_s"]:
            time.sleep(self.hooks["delay_s"])
        if self.hooks["fail"]:
            self.hooks["fail"] -= 1
            raise RuntimeError("injected failure: /secret/path")
        pipeline.step()

    def _read_prompts(self, pipeline: Any) -> None:
        """Advance each prefilling request's count of prompt tokens read, as GenAI's scheduler
        shares a step (dynamic split fuse, scheduler.hpp): every decoding request takes one of
        `max_num_batched_tokens`, then prompts take the rest in the order they came. Tokens that
        prefix caching already held are read sooner than counted here, never later."""
        lives = {rid: live for rid, live in self.live.items() if live.pipeline is pipeline}
        left = self.scheduler.max_num_batched_tokens - sum(
            live.read >= live.prompt_tokens for live in lives.values()
        )
        for request_id, live in lives.items():
            if live.read < live.prompt_tokens and left > 0:
                took = min(left, live.prompt_tokens - live.read)
                live.read, left = live.read + took, left - took
                if live.read < live.prompt_tokens:
                    self.conn.send(("reading", request_id, live.read, live.prompt_tokens))

    def _collect(self, request_id: int, live: _Live) -> None:
        handle = live.handle
        while handle.can_read():
            for output in handle.read().values():
                live.read = live.prompt_tokens  # a token: the whole prompt has been read
                self.conn.send(("tokens", request_id, list(output.generated_ids),
                                list(output.generated_log_probs)))  # fmt: skip
        if handle.get_status() != self.genai.GenerationStatus.RUNNING:
            del self.live[request_id]
            self.conn.send(("done", request_id, self._figures(handle)))

    def _figures(self, handle: Any) -> dict[str, Any]:
        """GenAI's own figures of a finished request (none for one stopped early)."""
        if handle.get_status() != self.genai.GenerationStatus.FINISHED:
            return {}
        metrics = handle.get_perf_metrics()
        return {"ttft_s": metrics.get_ttft().mean / 1000,
                "tokens_per_s": metrics.get_throughput().mean}  # fmt: skip

    def _status(self) -> dict[str, Any]:
        metrics = self.main.get_metrics()  # as of the pipeline's last step
        running = self.main.has_non_finished_requests()
        return {
            "steps": self.steps,
            # GenAI reports percentages. With no unfinished request no block is held: prefix
            # caching keeps finished requests' blocks only as reusable, evictable cache.
            "kv_cache_usage": metrics.cache_usage / 100 if running else 0.0,
            "kv_cache_step_usage": metrics.cache_usage / 100,  # what the last step held
            "kv_cache_peak": metrics.max_cache_usage / 100,
            "kv_cache_bytes": metrics.kv_cache_size_in_bytes,
            "prompt_lookup_loaded": self.lookup is not None,
        }


def main(fd: int) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    conn = Connection(socket.socket(fileno=fd).detach())
    spec = conn.recv()
    try:
        child = _Child(conn, spec)
    except Exception as error:  # OpenVINO's: a device or ov_config this CPU can't honour
        said = [line for line in str(error).splitlines() if line.strip()]
        conn.send(("failed", said[-1] if said else type(error).__name__))
        return
    conn.send(("ready", child._status()))
    try:
        child.run()
    except (EOFError, OSError):  # the app closed its end, or ended: so does the engine
        os._exit(0)  # at once: GenAI's destructors complain of requests still in the pipeline


if __name__ == "__main__":
    main(int(sys.argv[1]))
