"""The `remote` engine: generation on an OpenAI-compatible completions server.

Owns: talking to a serving engine (llama.cpp's server, OpenVINO Model Server, vLLM, LocalAI)
through the `openai` client: the probe at start (is the server there, what does it call the
model, does it add <bos> itself, does it count tokens as the playground does), the mapping of
every sampling control onto the server's names (and the notes on those it limits), the streamed
request and its reading, within the bounds of a reply (a chunk's size, the reply's bytes and
text, the alternatives per token: a reply past one ends with a note), Stop (closing the stream,
which ends the generation on the server), and the server's own token counts, log-probabilities
and word for why it stopped (a reply cut off at the server's context is labelled so).
Does not own: the prompt (it sends exactly the text the inspector shows, less a <bos> the server
adds itself), the tokens the inspector shows (the model's own tokenizer files, `tokens`), or the
stream, slots, stop strings and timing (`engines.base`). The server's address is the operator's
setting (`RemoteSettings`, read by `settings`); nothing a visitor sends can change it.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
from collections.abc import Iterable, Iterator
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
    StopReason,
    TokenScore,
)
from playground.export import SERVER_PLACEHOLDER, remote_code
from playground.sampling import SamplingParams, openai_options
from playground.tokens import Tokenizer

log = logging.getLogger(__name__)

# Counted by the server and by the playground at start: tells whether the server adds <bos>
# and whether it reads control tokens as the model's (one id each) rather than as text.
PROBE = f"{START_OF_TURN}user\nHi{END_OF_TURN}\n"
CANCEL_POLL_S = 0.05  # how often a request the server has not begun looks at its Stop
READ_AHEAD = 4  # chunks read and parsed ahead of the tokens taken from them

# The bounds of one streamed reply; past one, the reply ends with a note (`_over`). Unbounded, a
# server's one chunk of 64 MB of text took 128 s of the app's CPU, 8.3 GB more memory, and held
# every other thread of the app for 220 s; 20,000 alternatives per token took 5.9 GB in 60 s
# (issue 34, item 10). llama-cpp-python's chunk of one token with 5 alternatives is 450 bytes.
MAX_CHUNK_BYTES = 2**20  # one line, or one event, of the stream
BYTES_PER_TOKEN = 4096  # the stream's bytes, per token of max_new_tokens (plus EXTRA_CHUNKS)
EXTRA_CHUNKS = 8  # chunks beyond one per token: the finish, the usage, [DONE]
TEXT_PER_TOKEN = 128  # characters of text per token (tiny-tutor's longest token has 15)
MAX_ALTERNATIVES = TOP_ALTERNATIVES + 1  # the N asked for and the chosen token, as servers send


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


# What `RemoteSettings.server` may name: "auto" asks the server who it is.
SERVERS = ("auto", *DIALECTS)


@dataclass(frozen=True)
class RemoteSettings:
    """The OpenAI-compatible completions server of `--engine remote`: the operator's setting
    only (no visitor input reaches it), with the API key read from an environment variable
    whose *name* is kept here, so the key itself is never logged, shown or exported."""

    base_url: str = ""  # e.g. http://127.0.0.1:8080/v1
    served_model: str = ""  # the server's name for the model; "" = the first it lists
    api_key_env: str = ""  # name of the environment variable holding the API key
    server: str = "auto"  # which server's names the controls take (SERVERS)
    # Generations sent at once; the app's queue holds the rest. A server that batches
    # (vLLM, OVMS) can take more than the local engine; one that serves one request at a time
    # (llama-cpp-python) simply queues them.
    max_concurrent: int = 8
    timeout_s: float = 30.0  # connecting, and waiting for the first byte of each answer

    @property
    def api_key(self) -> str:
        import os

        return os.environ.get(self.api_key_env, "") if self.api_key_env else ""


class RemoteEngine(Engine):
    """Generation on a server; tokens, templates and the stream stay here."""

    kind = "remote"
    compiles = False  # no OpenVINO model in this process
    # The server tokenizes the text and decides its own end tokens: a `Delivery` can't reach it.
    takes_deliveries = False

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
            "stream": True,
            **openai_options(params, self.dialect.repetition_penalty),
        }
        if self.dialect.stream_logprobs:
            body["logprobs"] = self.dialect.alternatives
        return body

    @property
    def label(self) -> str:
        return f"{self.kind} · {self.dialect.name}"  # the kind of server, never its address

    def extra_code(self, prompt: str, params: SamplingParams) -> dict[str, str]:
        """The request the app sends, as curl and OpenAI-client code; the server's address stays
        the operator's (a placeholder), the API key its variable's name."""
        request = self.request(Prompt(prompt, [], threading.Event()), params)
        return remote_code(request, SERVER_PLACEHOLDER, self.remote.api_key_env)

    def run_native(
        self, prompt: Prompt, params: SamplingParams, on_token: OnToken
    ) -> NativeFigures | None:
        usage = finish = None
        received = 0
        chunks = self._chunks(self.request(prompt, params), params.max_new_tokens, prompt.cancel)
        for chunk in chunks:
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or ():
                for token_id, score, text in self._tokens(choice):
                    received += 1
                    if on_token(token_id, score, text):
                        return _figures(usage)
                said = choice.get("finish_reason")
                finish = said or finish
                if said == "stop":
                    # The server ended at an end token, which it does not send.
                    on_token(self.tokenizer.end_of_turn_id, None, "")
        if finish is None and not prompt.cancel.is_set():
            # llama-cpp-python answers 200 and then nothing to a prompt over its context.
            raise EngineError(
                "The server ended its answer without saying why it stopped; its log tells "
                "(a prompt longer than the server's context size is one cause)."
            )
        cut = _cut_by_context(finish, usage, received, params.max_new_tokens)
        return _figures(usage, "server_context" if cut else None)

    def _chunks(
        self, request: dict[str, Any], max_new_tokens: int, cancel: threading.Event
    ) -> Iterator[dict[str, Any]]:
        """The server's chunks for `request` (each checked against the bounds of a reply of
        `max_new_tokens`), until Stop. They are read by a thread of their own, so a wait for
        the server ends at Stop at once: llama.cpp's server sends nothing to a request queued
        behind another until it starts it, and closing a response from another thread does not
        end a read blocked on its socket (the slot was held until the 300 s timeout). Closing
        the stream is what ends the generation on the server; the reader closes it at Stop, at
        a bound, or at the next chunk after."""
        items: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
        reader = _Reader(self.client, request, _Bounds.of(max_new_tokens), cancel, items)
        threading.Thread(target=reader.run, daemon=True, name="remote-stream").start()
        while True:
            try:
                item = items.get(timeout=CANCEL_POLL_S)
            except queue.Empty:
                if cancel.is_set():
                    return
                continue
            if item is _END or (isinstance(item, _Broken) and cancel.is_set()):
                return
            if isinstance(item, _Refused):
                with self._answering_a_visitor():
                    raise item.error
            if isinstance(item, _Broken):
                raise EngineError(
                    f"The server stopped answering mid-reply ({type(item.error).__name__}); "
                    "the reply keeps what arrived."
                )
            if isinstance(item, EngineError):
                raise item
            yield item

    def _tokens(self, choice: dict[str, Any]) -> Iterator[tuple[int, TokenScore | None, str]]:
        """(id, score, text) for each token of one streamed choice: from its log-probabilities
        where the server gives them, else its text as one token."""
        logprobs = choice.get("logprobs") or {}
        pieces = logprobs.get("tokens")
        if not pieces:
            if text := choice.get("text"):
                yield self._id_of(text), None, text
            return
        tops = logprobs.get("top_logprobs") or [None] * len(pieces)
        for piece, logprob, top in zip(pieces, logprobs["token_logprobs"], tops, strict=True):
            yield self._id_of(piece), self._score(logprob, top), piece

    def _score(self, logprob: float | None, top: dict[str, float] | None) -> TokenScore | None:
        """A token's score, with the TOP_ALTERNATIVES likeliest alternatives: what the app shows
        (servers add the chosen token to the N asked for; `_Bounds.take` refused more)."""
        if logprob is None:
            return None
        best = sorted((top or {}).items(), key=lambda item: -item[1])[:TOP_ALTERNATIVES]
        return TokenScore(logprob, tuple((self._id_of(p), lp) for p, lp in best))

    def _id_of(self, piece: str) -> int:
        """The id of a piece of the server's text (its first, where it is longer than a token),
        from its first TEXT_PER_TOKEN characters: the first id needs no more, and the whole
        is costly (the id of 8 MB of text took 10.8 s of CPU and 1.6 GB here; a 64 MB chunk's
        was most of its 128 s: issue 34)."""
        return self.tokenizer.id_of(piece[:TEXT_PER_TOKEN])


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


@dataclass(frozen=True)
class _Broken:
    """A stream that broke off mid-reply (a dropped connection, a chunk that is not JSON)."""

    error: Exception


def _over(what: str) -> EngineError:
    """The note that ends a reply past a bound: it names the bound, and nothing the server
    sent (the operator's log has that)."""
    log.warning("a reply was ended at a bound: the server sent %s", what)
    return EngineError(
        f"The server sent {what}, past what this app accepts; the reply ends here and keeps "
        "what arrived."
    )


@dataclass
class _Bounds:
    """What one reply may still bring: its stream's bytes and its text (see MAX_CHUNK_BYTES)."""

    tokens: int
    bytes_left: int
    text_left: int

    @classmethod
    def of(cls, max_new_tokens: int) -> _Bounds:
        stream = (max_new_tokens + EXTRA_CHUNKS) * BYTES_PER_TOKEN
        return cls(max_new_tokens, stream, max_new_tokens * TEXT_PER_TOKEN)

    def read(self, size: int) -> None:
        """Count `size` more bytes of the stream."""
        self.bytes_left -= size
        if self.bytes_left < 0:
            limit = (self.tokens + EXTRA_CHUNKS) * BYTES_PER_TOKEN
            raise _over(f"more than {limit:,} bytes for a reply of {self.tokens:,} tokens")

    def take(self, chunk: Any) -> dict[str, Any]:
        """`chunk` (parsed), once its text and alternatives are counted against the bounds."""
        if not isinstance(chunk, dict):
            raise ValueError(f"a chunk is {type(chunk).__name__}, not an object")
        if chunk.get("error"):
            log.warning("the server reported an error mid-reply: %s", str(chunk)[:300])
            raise EngineError(
                "The server reported an error mid-reply; the operator's log has it. The reply "
                "keeps what arrived."
            )
        for choice in chunk.get("choices") or ():
            logprobs = choice.get("logprobs") or {}
            self.text_left -= sum(map(len, logprobs.get("tokens") or [choice.get("text") or ""]))
            if self.text_left < 0:
                limit = self.tokens * TEXT_PER_TOKEN
                raise _over(f"more than {limit:,} characters for a reply of {self.tokens:,} tokens")
            most = max(map(len, filter(None, logprobs.get("top_logprobs") or [{}])), default=0)
            if most > MAX_ALTERNATIVES:
                raise _over(f"{most:,} alternatives for one token (at most {MAX_ALTERNATIVES})")
        return chunk


class _Reader:
    """Reads one streamed reply into `items`, as it comes and within its bounds: the lines of
    the stream (none longer than MAX_CHUNK_BYTES: openai's own reader holds a line of any
    length whole), each event's JSON, each chunk's text and alternatives. Puts each chunk,
    then _END; or the first failure (`_Refused`, `_Broken`, a bound's EngineError)."""

    def __init__(
        self, client: Any, request: dict[str, Any], bounds: _Bounds, cancel: threading.Event,
        items: queue.Queue,
    ) -> None:  # fmt: skip
        self.client, self.request, self.bounds = client, request, bounds
        self.cancel, self.items = cancel, items

    def run(self) -> None:
        # Compressed, 64 kB of a stream can unpack to 64 MB at once: the server is asked for
        # none, and its bytes are read as they are.
        headers = {"Accept-Encoding": "identity"}
        create = self.client.completions.with_streaming_response.create
        try:
            response = create(**self.request, extra_headers=headers).__enter__()
        except Exception as error:
            self.put(_Refused(error))
            return
        threading.Thread(target=_close_on, args=(self.cancel, response), daemon=True).start()
        try:
            lines = _lines(response.http_response.iter_raw(), self.bounds)
            for chunk in _events(lines):
                if not self.put(self.bounds.take(chunk)):
                    break
            last: object = _END
        except EngineError as error:
            last = error
        except Exception as error:
            if self.cancel.is_set():
                # Our own close (`_close_on`: Stop, or the reply ended here) cut the read short:
                # no break to report (it was logged as one after every max_new_tokens end).
                last = _END
            else:
                log.warning("a reply broke off: %s", error)
                last = _Broken(error)
        finally:
            response.close()
        self.put(last)

    def put(self, item: object) -> bool:
        """Hand `item` on, waiting while the reader is READ_AHEAD chunks ahead; False at Stop."""
        while not self.cancel.is_set():
            try:
                self.items.put(item, timeout=CANCEL_POLL_S)
                return True
            except queue.Full:
                continue
        return False


_LINE_END = re.compile(rb"\r\n?|\n")


def _lines(blocks: Iterable[bytes], bounds: _Bounds) -> Iterator[bytes]:
    """The lines of a stream read in blocks, each as soon as it ends; a line longer than
    MAX_CHUNK_BYTES ends the reply before it is held whole. (A CR and LF split across two
    blocks give an extra empty line, which ends no event that has not ended already.)"""
    pending = bytearray()
    for block in blocks:
        bounds.read(len(block))
        *ended, rest = _LINE_END.split(block)
        for line in ended:
            if pending:
                line, pending = bytes(pending + line), bytearray()
            _within_a_chunk(len(line))
            yield line
        pending += rest
        _within_a_chunk(len(pending))


def _within_a_chunk(size: int) -> None:
    if size > MAX_CHUNK_BYTES:
        raise _over(f"a chunk of more than {MAX_CHUNK_BYTES:,} bytes")


def _events(lines: Iterable[bytes]) -> Iterator[Any]:
    """The parsed data of each server-sent event, until `[DONE]` (the SSE format: `data:`
    lines, joined, up to an empty line; other fields and comments are skipped)."""
    data: list[bytes] = []
    size = 0
    for line in lines:
        if line:
            field, _, value = line.partition(b":")
            if field == b"data":
                data.append(value[1:] if value.startswith(b" ") else value)
                size += len(data[-1]) + 1
                _within_a_chunk(size)  # an event of many lines is one chunk too
            continue
        if data:
            joined, data, size = b"\n".join(data), [], 0
            if joined.startswith(b"[DONE]"):
                return
            yield json.loads(joined)


def _close_on(cancel: threading.Event, stream: Any) -> None:
    cancel.wait()
    stream.close()


def _count(usage: Any, name: str) -> int | None:
    """One of the server's token counts, where it is one."""
    value = usage.get(name) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and 0 <= value < 2**53 else None


def _figures(usage: Any, stop_reason: StopReason | None = None) -> NativeFigures:
    """The server's own token counts, where it gave them, and what ended the reply."""
    return NativeFigures(
        prompt_tokens=_count(usage, "prompt_tokens"),
        new_tokens=_count(usage, "completion_tokens"),
        stop_reason=stop_reason,
    )


def _cut_by_context(finish: str | None, usage: Any, received: int, asked: int) -> bool:
    """Whether the server ended the reply at its own context size: "length" before
    max_new_tokens. llama-cpp-python lowers max_tokens to what fits its n_ctx and says
    "length" there (a 201-token prompt at n_ctx 256: 55 tokens of 200); the app called it "eos".
    New tokens are the server's count where it gives one, else those received (a server that
    streams neither log-probabilities nor usage counts each chunk as one)."""
    new = _count(usage, "completion_tokens")
    return finish == "length" and (received if new is None else new) < asked


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
