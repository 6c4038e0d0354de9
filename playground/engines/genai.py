"""The `genai` engine: OpenVINO GenAI's ContinuousBatchingPipeline, the default, in a process
of its own.

Owns: the app's side of the engine process (`_genai_process` is the child's): starting it,
sending it requests and cancellations, routing what it says back to each request, and starting
a new one when it dies or hangs (`EngineProcess`); the GenerationConfig options made from
`SamplingParams`; the KV-cache status (GenAI's own metrics, as the child last sent them) and
GenAI's figures.
Does not own: the stream, slots and stop rules (`engines.base`, which run here in the app's
process, so Stop never waits on a step), stepping the pipeline (the child), loading and caching
(the registry in `engines/__init__`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, fields
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import playground
from playground.engines.base import (
    Engine,
    EngineError,
    EngineStatus,
    EngineStopped,
    NativeFigures,
    OnToken,
    Prompt,
    TokenScore,
    start_daemon,
)
from playground.memory import KvBudget, KvShape, kv_budget, kv_precision
from playground.sampling import SamplingParams, genai_options

log = logging.getLogger(__name__)

# How long the child may take to load the model (the 9B compiles for minutes on 2 vCPUs the
# first time), and to go without any message while it has requests (one 9B prefill step on a
# Space takes tens of seconds); past that it is taken as hung, killed and started again.
LOAD_TIMEOUT_S = 1800.0
HANG_TIMEOUT_S = 300.0
# How often a request looks at its Stop, and the reader at the child's silence.
POLL_S = 0.05
RESTART_PAUSE_S = 1.0  # between failed restarts: a child that can't start must not spin


class EngineProcess:
    """The app's handle on the child that steps the pipeline. One thread reads everything the
    child says; the request threads only send (under a lock) and read their own queue."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.hooks: dict[str, Any] = {}
        self.status: dict[str, Any] = {}
        self.state, self.restarts, self._closed, self._loading = "starting", 0, False, False
        self._requests: dict[int, queue.Queue] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._running = threading.Condition(self._lock)
        self._start()  # a child that fails at start raises here: the app ends with its line
        start_daemon(self._read, name="genai-process-reader")

    @property
    def pid(self) -> int:
        return self._child.pid

    def _start(self) -> None:
        """Start a child, send it the spec and wait (bounded) for it to load the model."""
        ours, theirs = socket.socketpair()
        package_root = str(Path(playground.__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}  # fmt: skip
        # A session of its own: a terminal's Ctrl-C goes to its whole foreground process group,
        # and reached the child too, which died of it mid-reply (the terminal chat's Ctrl-C
        # test, once in a full run). Stopping a reply is the app's to do; the child ends when the
        # app closes its socket.
        self._child = subprocess.Popen(
            [sys.executable, "-m", "playground.engines._genai_process", str(theirs.fileno())],
            pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        theirs.close()
        self._conn = Connection(ours.detach())
        self._conn.send(self.spec)
        try:
            kind, said = ("failed", f"the engine process loaded nothing in {LOAD_TIMEOUT_S:.0f} s")
            if self._conn.poll(LOAD_TIMEOUT_S):
                kind, said = self._conn.recv()
        except (EOFError, OSError):
            kind, said = "failed", f"the engine process ended while loading ({self._ended()})"
        if kind != "ready":
            self._child.kill()
            self._child.wait()
            raise RuntimeError(said)
        if self.hooks:
            self._conn.send(("hooks", self.hooks))
        with self._running:
            self.status, self.state, self._heard = said, "running", time.monotonic()
            self._running.notify_all()

    def _ended(self) -> str:
        code = self._child.wait()
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def _read(self) -> None:
        while True:
            try:
                if self._conn.poll(POLL_S):
                    self._route(self._conn.recv())
                elif self._requests and time.monotonic() - self._heard > self._limit():
                    log.error("the engine process said nothing for %.0f s: killing it",
                              self._limit())  # fmt: skip
                    self._child.kill()
            except (EOFError, OSError):
                if self._closed:
                    return
                self._restart()

    def _limit(self) -> float:
        """How long the child may be silent: a step's limit, or a load's while it loads."""
        return LOAD_TIMEOUT_S if self._loading else HANG_TIMEOUT_S

    def _route(self, message: tuple) -> None:
        self._heard = time.monotonic()
        kind = message[0]
        self._loading = kind == "loading"
        if kind == "step":
            self.status = message[1]
        if kind in ("step", "loading"):
            return
        with self._lock:
            events = self._requests.get(message[1])
            if kind in ("done", "error"):
                self._requests.pop(message[1], None)
        if events is not None:
            events.put(message)

    def _restart(self) -> None:
        """The child died (or was killed as hung): every request it had ends, keeping its text,
        and a new child starts; requests wait for it in `add`."""
        ended = self._ended()
        log.error("the engine process ended (%s); starting a new one", ended)
        with self._lock:
            self.state = "restarting"
            stopped, self._requests = list(self._requests.values()), {}
        for events in stopped:
            events.put(("stopped",))
        self._conn.close()
        while True:
            try:
                self._start()
                self.restarts += 1
                return
            except Exception:
                log.exception("the engine process failed to start again")
                time.sleep(RESTART_PAUSE_S)

    def add(self, ids: list[int], options: dict[str, Any], lookup: bool) -> tuple[int, queue.Queue]:
        """Send a request; returns its id and the queue its messages arrive on."""
        with self._running:
            if not self._running.wait_for(lambda: self.state == "running", LOAD_TIMEOUT_S):
                raise EngineError("The engine is restarting and not back yet; try again later.")
            request_id, events = next(self._ids), queue.Queue()
            if not self._requests:  # the child's silence counts from its first request on
                self._heard = time.monotonic()
            self._requests[request_id] = events
            # A child that has just died: the reader restarts it and stops this request.
            self._send(("add", request_id, ids, options, lookup))
        return request_id, events

    def cancel(self, request_id: int) -> None:
        with self._lock:
            if self._requests.pop(request_id, None) is not None:
                self._send(("cancel", request_id))

    def set_hooks(self, **hooks: Any) -> None:
        """Test hooks: `delay_s` before each step (a 9B's pace; a new process keeps it), `fail`
        the next n steps."""
        with self._lock:
            self.hooks.update({k: v for k, v in hooks.items() if k == "delay_s"})
            self._send(("hooks", hooks))

    def _send(self, message: tuple) -> None:
        with contextlib.suppress(OSError):  # a dead child: the reader restarts it
            self._conn.send(message)

    def close(self) -> None:
        self._closed = True
        self._child.kill()


@dataclass(frozen=True)
class GenAIStatus(EngineStatus):
    """The base status, with the KV cache and the engine process as GenAI's pipeline reports
    them (`_genai_process._Child._status`, read after each step)."""

    kv_cache_usage: float = 0.0  # held by running requests, 0 to 1
    kv_cache_step_usage: float = 0.0  # held during the last step
    kv_cache_peak: float = 0.0
    kv_cache_bytes: int = 0
    prompt_lookup_loaded: bool = False
    engine_process: str = "starting"
    engine_restarts: int = 0

    def lines(self) -> list[str]:
        loaded = "loaded" if self.prompt_lookup_loaded else "not loaded (built on first use)"
        return [
            *super().lines(),
            f"- **KV cache:** {100 * self.kv_cache_usage:.1f}% held by running requests "
            f"(peak {100 * self.kv_cache_peak:.1f}%) of {self.kv_cache_bytes / 2**20:,.1f} MiB "
            "set aside (RAM is used only as blocks fill) — the share of the model's memory in "
            "use now",
            f"- **Engine process:** {self.engine_process} · restarts: {self.engine_restarts} (a "
            "process that dies or hangs is replaced; the replies it was writing keep their text)",
            f"- **Prompt lookup pipeline:** {loaded}",
        ]


# What the engine process's report may fill: the fields GenAI's status adds to the base's.
GENAI_STATUS_FIELDS = {f.name for f in fields(GenAIStatus)} - {f.name for f in fields(EngineStatus)}


class GenAIEngine(Engine):
    """openvino_genai's ContinuousBatchingPipeline: every running request advances in the same
    pass over the weights, which on a CPU costs little more than one (decoding is bound by
    memory bandwidth). Prefix caching keeps a chat's earlier turns in the KV cache.

    The pipeline lives in a child process (`_genai_process`), so no step ever holds this
    process's GIL. Prompt lookup decoding needs a pipeline built for it; the child builds that
    second one on the first request that asks for it, unless `prompt_lookup` is off.
    """

    kind = "genai"
    probability_note = (
        "the model's own probabilities, before temperature, top-k and top-p changed the "
        "choice. This engine gives the chosen token's only."
    )
    supports_prompt_lookup = True  # unless the settings turn it off (`__init__`)
    prompt_lookup_refusal = "Prompt lookup is turned off here (prompt_lookup: false)."

    def __init__(
        self,
        folder: Path,
        device: str,
        ov_config: dict[str, str],
        max_concurrent: int = 4,
        context_size: int = 8192,
        kv_cache_gb: float = 0.0,
        prompt_lookup: bool = True,
        **kwargs: Any,
    ) -> None:
        # No budget: GenAI grows the cache as requests need it, bounded only by the slots.
        budget: KvBudget | None = None
        if kv_cache_gb:
            shape, precision = KvShape.read(folder), kv_precision(ov_config)
            budget = kv_budget(kv_cache_gb, shape, precision, max_concurrent, context_size)
        self.supports_prompt_lookup = prompt_lookup
        self.process = EngineProcess({
            "folder": str(folder), "device": device, "ov_config": dict(ov_config),
            "max_concurrent": max_concurrent, "kv_blocks": budget.blocks if budget else 0,
        })  # fmt: skip
        super().__init__(
            folder, max_concurrent=max_concurrent, context_size=context_size, kv_budget=budget,
            **kwargs,
        )  # fmt: skip

    @classmethod
    def create(cls, folder: Path, spec: Any, tokenizer: Any, ov_config: dict) -> GenAIEngine:
        return cls(folder, spec.device, ov_config, tokenizer=tokenizer,
                   context_size=spec.context_size, max_concurrent=spec.max_concurrent,
                   kv_cache_gb=spec.kv_cache_gb, prompt_lookup=spec.prompt_lookup)  # fmt: skip

    def status(self) -> GenAIStatus:
        process = self.process
        return GenAIStatus(
            **self._status_fields(),
            **{k: v for k, v in process.status.items() if k in GENAI_STATUS_FIELDS},
            engine_process=process.state,
            engine_restarts=process.restarts,
        )

    def notes(self) -> list[str]:
        notes = ["The model runs in a process of its own: a long engine step never holds up "
                 "the page, Stop or the Template inspector."]  # fmt: skip
        if self.kv_budget is None:
            return [*notes, "No KV-cache budget (kv_cache_gb: 0): the cache grows as requests "
                    "need it."]  # fmt: skip
        lookup = ""
        if self.supports_prompt_lookup:
            lookup = (" Prompt lookup's pipeline, built when a visitor first turns it on, loads "
                      "the model again with a cache of the same size.")  # fmt: skip
        # The bare token count meant nothing to a newcomer (issue 33): say what it holds.
        budget = (
            f"KV-cache budget: {self.kv_budget.describe()} — the model's memory of the text it "
            "reads and writes, shared by every reply written at once (each needs at most the "
            f"context size, {self.context_size:,} tokens). A request waits until its prompt and "
            f"max new tokens fit beside those running.{lookup}"
        )
        return [*notes, budget]

    def config(self, params: SamplingParams, end_ids: frozenset[int]) -> dict[str, Any]:
        """The GenerationConfig fields for `params`: explicit, as GenAI's samples write them."""
        return {
            "stop_token_ids": set(end_ids),
            "apply_chat_template": False,
            # The chosen token's log-probability under the raw model (about 3% slower); GenAI
            # gives no alternatives (values above 1 count as 1).
            "logprobs": 1,
            **genai_options(params, self.tokenizer.vocab_size),
        }

    def run_native(
        self,
        prompt: Prompt,
        params: SamplingParams,
        on_token: OnToken,
    ) -> NativeFigures | None:
        request_id, events = self.process.add(
            prompt.ids, self.config(params, prompt.end_ids), params.prompt_lookup
        )
        reads = tokens = 0
        try:
            # Waits are bounded by the stream's token timeout (`engines.base`), which cancels.
            while not prompt.cancel.is_set():
                try:
                    kind, *said = events.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                if kind == "reading":
                    prompt.on_reading(*said[1:])
                elif kind == "tokens":
                    reads += 1
                    for token_id, logprob in zip(said[1], said[2], strict=True):
                        tokens += 1
                        if on_token(token_id, TokenScore(logprob)):
                            return self._figures(params, reads, tokens)
                elif kind == "done":
                    return self._figures(params, reads, tokens, said[1])
                elif kind == "error":
                    raise RuntimeError(f"an engine step failed ({said[1]})")
                elif kind == "stopped":
                    raise EngineStopped()
            return self._figures(params, reads, tokens)
        finally:
            self.process.cancel(request_id)  # nothing to do for one that is done

    def _figures(
        self, params: SamplingParams, reads: int, tokens: int, native: dict | None = None
    ) -> NativeFigures:
        """GenAI's figures for a finished request (it has none for one stopped early)."""
        # Each step gives a request one token, plus the drafts it confirmed (prompt lookup).
        accepted = tokens - reads if params.prompt_lookup else None
        native = native or {}
        return NativeFigures(ttft_s=native.get("ttft_s"), tokens_per_s=native.get("tokens_per_s"),
                             accepted_drafts=accepted)  # fmt: skip

    def close(self) -> None:
        self.process.close()


ENGINE = GenAIEngine
