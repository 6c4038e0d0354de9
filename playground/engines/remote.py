"""The `remote` engine: generation on an OpenAI-compatible completions server.

Owns: talking to a serving engine (llama.cpp's server, OpenVINO Model Server, vLLM, LocalAI)
through the `openai` client: the probe at start (is the server there, what does it call the
model, does it add <bos> itself, does it count tokens as the playground does), the mapping of
every sampling control onto the server's names (and the notes on those it limits), the streamed
request, Stop (closing the stream, which ends the generation on the server), and the server's
own token counts and log-probabilities.
Does not own: the prompt (it sends exactly the text the inspector shows, less a <bos> the server
adds itself), the tokens the inspector shows (the model's own tokenizer files, `tokens`), or the
stream, slots, stop strings and timing (`engines.base`). The server's address is the operator's
setting (`settings.RemoteSettings`); nothing a visitor sends can change it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playground.chat_format import BOS, END_OF_TURN, START_OF_TURN
from playground.engines.base import (
    TOKEN_TIMEOUT_S,
    TOP_ALTERNATIVES,
    Engine,
    EngineError,
    NativeFigures,
    OnToken,
    Prompt,
    TokenScore,
)
from playground.sampling import SamplingParams
from playground.settings import RemoteSettings
from playground.tokens import Tokenizer

log = logging.getLogger(__name__)

# Counted by the server and by the playground at start: tells whether the server adds <bos>
# and whether it reads control tokens as the model's (one id each) rather than as text.
PROBE = f"{START_OF_TURN}user\nHi{END_OF_TURN}\n"
CANCEL_POLL_S = 0.05  # how often a request the server has not begun looks at its Stop


@dataclass(frozen=True)
class Dialect:
    """How one kind of server names the controls the OpenAI API lacks, and what it limits."""

    name: str
    repetition_penalty: str  # the request field for the repetition penalty
    alternatives: int  # most alternatives per token it returns (1: the chosen token only)
    stream_logprobs: bool  # whether streamed chunks carry log-probabilities


# From each server's docs: llama.cpp's server and llama-cpp-python take `repeat_penalty`;
# OVMS gives logprobs for the chosen token only and none while streaming; vLLM gives top-N.
DIALECTS = {
    "llama.cpp": Dialect("llama.cpp's server", "repeat_penalty", TOP_ALTERNATIVES, True),
    "vllm": Dialect("vLLM", "repetition_penalty", TOP_ALTERNATIVES, True),
    "ovms": Dialect("OpenVINO Model Server", "repetition_penalty", 1, False),
    "localai": Dialect("LocalAI", "repeat_penalty", 1, False),
}


def dialect_of(server: str, owned_by: str) -> Dialect:
    """The configured server's dialect; for `auto`, guessed from the model list's `owned_by`."""
    if server != "auto":
        return DIALECTS[server]
    owner = owned_by.lower()
    if "vllm" in owner:
        return DIALECTS["vllm"]
    if "ovms" in owner or "openvino" in owner:
        return DIALECTS["ovms"]
    if "localai" in owner:
        return DIALECTS["localai"]
    return DIALECTS["llama.cpp"]


class RemoteEngine(Engine):
    """Generation on a server; tokens, templates and the stream stay here."""

    kind = "remote"
    compiles = False  # no OpenVINO model in this process

    def __init__(
        self,
        folder: Path,
        remote: RemoteSettings,
        tokenizer: Tokenizer,
        context_size: int,
        max_concurrent: int,
    ) -> None:
        import openai

        super().__init__(folder, tokenizer, context_size, max_concurrent=max_concurrent)
        self.remote = remote
        self._openai = openai
        # No hidden retries; connecting has its own bound, and so does each wait for a chunk.
        timeout = openai.Timeout(TOKEN_TIMEOUT_S, connect=remote.timeout_s)
        self.client = openai.OpenAI(
            base_url=remote.base_url,
            api_key=remote.api_key or "none",
            timeout=timeout,
            max_retries=0,
        )
        self.model, owned_by = self._served_model()
        self.dialect = dialect_of(remote.server, owned_by)
        self.adds_bos, self.counts = self._probe_bos()
        self.token_source = "Tokens come from the model's own tokenizer files, read here; " + (
            _agreement(*self.counts)
        )

    @classmethod
    def create(cls, folder: Path, spec: Any, tokenizer: Tokenizer, ov_config: dict) -> Engine:
        return cls(folder, spec.remote, tokenizer, spec.context_size, spec.max_concurrent)

    @contextmanager
    def _answering(self, what: str) -> Iterator[None]:
        """A server's refusal or absence, while asking it for `what` at start, as one clear
        message for the operator (who chose the server: its address and answer are named)."""
        try:
            yield
        except self._openai.APIStatusError as error:
            raise EngineError(
                f"The serving engine at {self.remote.base_url} answered {error.status_code} "
                f"to {what}: {_error_text(error)}"
            ) from None
        except (self._openai.APIError, OSError) as error:
            raise EngineError(
                f"The serving engine at {self.remote.base_url} could not be reached "
                f"({type(error).__name__}): start it, or check --base-url."
            ) from None

    @contextmanager
    def _answering_a_visitor(self) -> Iterator[None]:
        """The same for a visitor's request, whose message never shows the server's address
        or its answer's body (it can hold paths or tokens): those go to the operator's log."""
        try:
            with self._answering("the request"):
                yield
        except EngineError as error:
            log.warning("a visitor's request failed: %s", error)
            status = getattr(error.__cause__ or error.__context__, "status_code", None)
            said = f"answered {status}" if status else "could not be reached"
            raise EngineError(
                f"The serving engine {said}; the operator's log has the details. Please retry."
            ) from None

    def _served_model(self) -> tuple[str, str]:
        """The model's name on the server (the setting, else the first listed) and its owner."""
        with self._answering("the list of models"):
            models = list(self.client.models.list())
        wanted = self.remote.served_model
        for model in models:
            if not wanted or model.id == wanted:
                return model.id, str(getattr(model, "owned_by", "") or "")
        listed = ", ".join(m.id for m in models) or "none"
        raise EngineError(f"The server does not serve {wanted!r} (it lists: {listed}).")

    def _probe_bos(self) -> tuple[bool, tuple[int, int]]:
        """Whether the server adds <bos> itself: it counts PROBE as the playground does
        without <bos> plus one. Returns that and (the server's count, the playground's)."""
        ours = len(self.tokenizer.encode(PROBE)) - 1  # without the <bos> encode adds
        with self._answering("a one-token probe"):
            reply = self.client.completions.create(
                model=self.model, prompt=PROBE, max_tokens=1, temperature=0.0
            )
        theirs = reply.usage.prompt_tokens if reply.usage else None
        if theirs is None:
            log.warning("the server reports no usage: assuming it adds <bos> itself")
            return True, (-1, ours)
        if theirs not in (ours, ours + 1):
            log.warning("the server counts %d tokens where the playground counts %d", theirs, ours)
        return theirs != ours, (theirs, ours)

    def notes(self) -> list[str]:
        theirs, ours = self.counts
        bos = (
            "adds <bos> itself, so the playground sends each prompt without its leading "
            "<bos>: exactly one reaches the model"
            if self.adds_bos
            else "adds no <bos>, so the playground sends each prompt with one"
        )
        notes = [
            f"Generation runs on {self.dialect.name}, model {_shown(self.model)}; up to "
            f"{self.max_concurrent} requests are sent at once, and the queue holds the rest.",
            f"The server {bos} (probed at start: it counted {theirs} tokens where the playground "
            f"counts {ours} without <bos>).",
            self.token_source,
        ]
        if self.dialect.alternatives <= 1:
            notes.append(
                f"{self.dialect.name} gives no alternatives per token"
                + ("" if self.dialect.stream_logprobs else ", and no probabilities while streaming")
                + ": the probability view shows what it has."
            )
        notes.append("Prompt lookup runs on the genai engine only; here it is refused.")
        return notes

    def request(self, prompt: Prompt, params: SamplingParams) -> dict[str, Any]:
        """The completions request for `prompt`: every control in the server's own names.
        Stop strings are applied here, on the streamed text, so every server stops alike."""
        text = prompt.text
        if self.adds_bos and text.startswith(BOS):
            text = text[len(BOS) :]
        elif not self.adds_bos and not text.startswith(BOS):
            text = BOS + text
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": text,
            "max_tokens": params.max_new_tokens,
            "temperature": 0.0 if params.greedy else params.temperature,
            "top_p": 1.0 if params.greedy else params.top_p,
            "seed": params.seed,
            "stream": True,
            "extra_body": {
                "top_k": params.top_k,
                self.dialect.repetition_penalty: params.repetition_penalty,
            },
        }
        if self.dialect.stream_logprobs:
            body["logprobs"] = self.dialect.alternatives
        return body

    def run_native(
        self, prompt: Prompt, params: SamplingParams, on_token: OnToken
    ) -> NativeFigures | None:
        usage = finish = None
        try:
            for chunk in self._chunks(self.request(prompt, params), prompt.cancel):
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    for token_id, score, text in self._tokens(choice):
                        if on_token(token_id, score, text):
                            return _figures(usage)
                    finish = choice.finish_reason or finish
                    if choice.finish_reason == "stop":
                        # The server ended at an end token, which it does not send.
                        on_token(self.tokenizer.end_of_turn_id, None, "")
        except (self._openai.APIError, OSError) as error:
            if prompt.cancel.is_set():
                return _figures(usage)
            raise EngineError(
                f"The server stopped answering mid-reply ({type(error).__name__}); "
                "the reply keeps what arrived."
            ) from None
        if finish is None and not prompt.cancel.is_set():
            # llama-cpp-python answers 200 and then nothing to a prompt over its context.
            raise EngineError(
                "The server ended its answer without saying why it stopped; its log tells "
                "(a prompt longer than the server's context size is one cause)."
            )
        return _figures(usage)

    def _chunks(self, request: dict[str, Any], cancel: threading.Event) -> Iterator[Any]:
        """The server's chunks for `request`, until Stop. They are read by a thread of their
        own, so a wait for the server ends at Stop at once: llama.cpp's server sends nothing to
        a request queued behind another until it starts it, and closing a response from
        another thread does not end a read blocked on its socket (the slot was held until the
        300 s timeout). Closing the stream is what ends the generation on the server; the
        reader closes it at Stop, or at the next chunk after."""
        items: queue.Queue = queue.Queue()

        def read() -> None:
            try:
                stream = self.client.completions.create(**request)
            except Exception as error:
                items.put(_Refused(error))
                return
            threading.Thread(target=_close_on, args=(cancel, stream), daemon=True).start()
            try:
                for chunk in stream:
                    items.put(chunk)
                    if cancel.is_set():
                        break
                items.put(_END)
            except Exception as error:
                items.put(error)
            finally:
                stream.close()

        threading.Thread(target=read, daemon=True, name="remote-stream").start()
        while True:
            try:
                item = items.get(timeout=CANCEL_POLL_S)
            except queue.Empty:
                if cancel.is_set():
                    return
                continue
            if item is _END:
                return
            if isinstance(item, _Refused):
                with self._answering_a_visitor():
                    raise item.error
            if isinstance(item, Exception):
                raise item
            yield item

    def _tokens(self, choice: Any) -> Iterator[tuple[int, TokenScore | None, str]]:
        """(id, score, text) for each token of one streamed choice: from its log-probabilities
        where the server gives them, else its text as one token."""
        logprobs = getattr(choice, "logprobs", None)
        if logprobs is None or not logprobs.tokens:
            if choice.text:
                yield self.tokenizer.id_of(choice.text), None, choice.text
            return
        tops = logprobs.top_logprobs or [None] * len(logprobs.tokens)
        for piece, logprob, top in zip(logprobs.tokens, logprobs.token_logprobs, tops, strict=True):
            alternatives = sorted((top or {}).items(), key=lambda item: -item[1])
            score = None if logprob is None else TokenScore(
                logprob, tuple((self.tokenizer.id_of(p), lp) for p, lp in alternatives)
            )  # fmt: skip
            yield self.tokenizer.id_of(piece), score, piece


def _agreement(theirs: int, ours: int) -> str:
    """What the probe says of the server's tokenizer against the model's files."""
    if theirs < 0:
        return "the server gives no token counts to check them against."
    if theirs in (ours, ours + 1):
        return "at start the server counted a probe as they do."
    return (
        f"warning: the server counted a probe as {theirs} tokens where they count {ours}, "
        "so it may not serve the same model."
    )


_END = object()


@dataclass(frozen=True)
class _Refused:
    """The server's refusal of a request (or its absence), for `_answering_a_visitor` to word."""

    error: Exception


def _close_on(cancel: threading.Event, stream: Any) -> None:
    cancel.wait()
    stream.close()


def _figures(usage: Any) -> NativeFigures:
    """The server's own token counts, where it gave them."""
    if usage is None:
        return NativeFigures()
    return NativeFigures(prompt_tokens=usage.prompt_tokens, new_tokens=usage.completion_tokens)


def _shown(model: str) -> str:
    """The server's name for its model as a visitor may see it: a file path (llama.cpp's server
    names a model by its file when it has no alias) is cut to the file's name."""
    is_path = model.startswith(("/", "~", ".")) or "\\" in model or model.endswith(".gguf")
    return Path(model).name if is_path else model


def _error_text(error: Any) -> str:
    """A server's error body as one short line of plain text."""
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        body = body.get("message") or body.get("error") or body
    return " ".join(str(body or error.message).split())[:300]


ENGINE = RemoteEngine
