"""The named API endpoints: /complete, /chat, their _json forms, /compare, /render and /status.

Owns: the endpoint functions and their signatures, which are built from the one list of sampling
fields (`sampling.SAMPLING_FIELDS`): names, types, space.yaml's defaults and help text. Values are
passed on by name.
Does not own: what a call does (`session.Playground`).
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from playground.chat_format import DEFAULT_SYSTEM_POLICY, RenderOptions, parse_conversation
from playground.compare import compare, conversation_inputs, parse_variants
from playground.inspection import inspect_messages
from playground.sampling import (
    RANDOM_SEED,
    SAMPLING_FIELDS,
    Domain,
    ParamError,
    SamplingParams,
    describe,
)
from playground.session import Playground, Reply, throttle
from playground.ui.common import engine_events, user_errors

P = inspect.Parameter
# The sampling values /complete, /chat and /compare take by position, frozen as they are: Gradio
# refuses a raw HTTP call that leaves out any parameter, so one more here would break every
# caller (issue 31). A sampling field added later reaches the API on the _json endpoints only,
# after TRAILING, with its default; tests/test_api_calls.py holds the lists.
POSITIONAL_SAMPLING = (
    "max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed",
)  # fmt: skip
# After the sampling values, on the _json endpoints. /complete and /chat keep their parameter
# lists, because Gradio refuses a raw HTTP call that leaves out any parameter: adding one would
# break every existing caller.
TRAILING = [
    ("stop", str, "", "Stop strings, one per line. " + describe("stop")),
    (
        "logprobs",
        int,
        0,
        "0 for none; N from 1 to 20 adds `tokens` to the last object: each generated token "
        "with its logprob and, on engines that give them (optimum), up to N likeliest "
        "alternatives in top_logprobs, as OpenAI's logprobs and llama.cpp's n_probs.",
    ),
    ("prompt_lookup", bool, False, describe("prompt_lookup") + " genai engine only."),
]
DEFAULTS = {"stop": "", "logprobs": 0, "prompt_lookup": False}
MAX_LOGPROBS = 20
JSON_NOTE = (
    "Streams JSON objects {text, figures}; figures is null until the last one, which has "
    "stop_reason, prompt_tokens, new_tokens, ttft_s, tokens_per_s and seed (and "
    "accepted_drafts with prompt lookup). The last one also has timeline: the server's clock "
    "(seconds since the epoch) when the call was received, admitted to the engine, its first "
    "token made and first sent."
)


def with_sampling(
    fn: Callable,
    leading: list[tuple[str, type, Any, str]],
    playground: Playground,
    trailing: list[tuple[str, type, Any, str]] = (),
    name: str = "",
) -> Callable:
    """Give `fn(*args)` the signature and docstring of its leading parameters followed by the
    sampling fields, so the API page lists (and describes) each one."""
    ranges = dict(playground.settings.ranges)
    params, docs = [], []
    for param, kind, default, help_text in leading:
        params.append(P(param, P.POSITIONAL_OR_KEYWORD, default=default, annotation=kind))
        docs.append(f"    {param}: {help_text}")
    later = [f.name for f in SAMPLING_FIELDS if f.name not in POSITIONAL_SAMPLING]
    for name in [*POSITIONAL_SAMPLING, *(later if trailing else [])]:
        r = ranges[name]
        default = int(r.default) if r.integer else float(r.default)
        kind = int if r.integer else float
        if name == "seed":
            kind = int | None  # empty (or -1) draws a random seed
        params.append(P(name, P.POSITIONAL_OR_KEYWORD, default=default, annotation=kind))
        docs.append(f"    {name}: {describe(name, ranges)}")
    for param, kind, default, help_text in trailing:
        params.append(P(param, P.POSITIONAL_OR_KEYWORD, default=default, annotation=kind))
        docs.append(f"    {param}: {help_text}")
    signature = inspect.Signature(params, return_annotation=str)

    def endpoint(*args: Any, **kwargs: Any) -> Iterator[str]:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as error:
            raise ParamError(f"Bad arguments: {error}.") from None
        bound.apply_defaults()
        arguments = {**DEFAULTS, **bound.arguments, "figures": bool(trailing),
                     "received": time.time()}  # fmt: skip
        yield from fn(**arguments)

    endpoint.__name__ = name or fn.__name__
    endpoint.__signature__ = signature
    endpoint.__annotations__ = {p.name: p.annotation for p in params} | {"return": str}
    doc = f"{fn.__doc__} {JSON_NOTE}" if trailing else fn.__doc__
    endpoint.__doc__ = f"{doc}\n\nArgs:\n" + "\n".join(docs)
    # The API page shows only an endpoint's description: it lists the parameters too.
    endpoint.api_description = f"{doc} Parameters: " + "; ".join(d.strip() for d in docs)
    return user_errors(endpoint)


def call_params(playground: Playground, arguments: dict[str, Any]) -> SamplingParams:
    """The call's values, anything the engine accepts; a seed drawn for an empty seed or -1 is
    told to the caller (a gr.Info, which gradio_client receives as a log) and in the figures."""
    values = {f.name: arguments.get(f.name) for f in SAMPLING_FIELDS}  # absent: its default
    values["prompt_lookup"] = arguments["prompt_lookup"]
    if values["seed"] is None:
        values["seed"] = RANDOM_SEED
    params, drawn = playground.request_params(values, arguments["stop"])
    if drawn is not None:
        gr.Info(f"Random seed drawn: {drawn}")
    return params


def stream_out(
    replies: Iterator[Reply], with_figures: bool, top: int, received: float
) -> Iterator[str]:
    """Text as it grows, or (with `figures`) JSON objects whose last one carries the figures
    and the timeline (`received`: when the call reached the endpoint), and, when `top` (a
    checked `logprobs`) is above 0, the tokens with their logprobs."""
    first_sent = None
    for reply in throttle(replies):
        first_sent = first_sent or time.time()
        if not with_figures:
            yield reply.text
            continue
        out: dict[str, Any] = {"text": reply.text, "figures": reply.figures}
        if reply.result is not None:
            stamps = {"received": received, **reply.result.timeline, "first_sent": first_sent}
            out["timeline"] = stamps
        if top and reply.tokens is not None:
            out["tokens"] = [
                {**t, "top_logprobs": t["top_logprobs"][:top]} if "top_logprobs" in t else t
                for t in reply.tokens
            ]
        yield json.dumps(out, ensure_ascii=False)


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ParamError(f"{what} is not valid JSON: {error.msg} (line {error.lineno}).") from None


def logprobs_count(value: Any) -> int:
    return int(Domain(0, MAX_LOGPROBS, integer=True).check("logprobs", value))


PROMPT_LEADING = [("prompt", str, P.empty, "raw text, sent with no chat template")]
CHAT_LEADING = [
    ("message", str, P.empty, "the visitor's new message"),
    ("history", str, "[]", "the conversation so far: JSON list of {role, content}"),
    ("system_prompt", str, "", "instructions before the conversation (see system_policy)"),
    (
        "system_policy",
        str,
        DEFAULT_SYSTEM_POLICY,
        "fold, error or drop: what to do with a system prompt",
    ),
    ("prefill", str, "", "text the reply starts with"),
]
COMPARE_LEADING = [
    ("conversation", str, P.empty, "JSON list of {role, content}; a system message may lead"),
    ("columns", str, '["correct", "second-bos"]', "JSON list of 2 to 4 variants"),
    ("prefill", str, "", "text every reply starts with"),
]


def add_endpoints(playground: Playground, peer: Playground | None = None) -> None:
    """The generating endpoints on `playground`'s engine; /compare's columns may also run on
    `peer`'s (`compare.PEER`)."""

    def complete(prompt: Any, **arguments: Any) -> Iterator[str]:
        """Stream the continuation of raw text (no template; one <bos> is added)."""
        params = call_params(playground, arguments)
        top = logprobs_count(arguments["logprobs"])  # refused before any generation
        replies = playground.complete(prompt, params)
        yield from stream_out(replies, arguments["figures"], top, arguments["received"])

    def chat(
        message: Any,
        history: Any,
        system_prompt: Any,
        system_policy: Any,
        prefill: Any,
        **arguments: Any,
    ) -> Iterator[str]:
        """Stream the reply to `message` after `history` (JSON list of {role, content})."""
        params = call_params(playground, arguments)
        if not isinstance(message, str) or not message.strip():
            raise ParamError("The message is empty.")
        turns = parse_conversation(playground.check_text(history or "[]", "The history"))
        turns.append({"role": "user", "content": playground.check_text(message, "The message")})
        system = playground.check_text(system_prompt or "", "The system prompt")
        prefill = playground.check_text(prefill or "", "The prefill")
        top = logprobs_count(arguments["logprobs"])
        options = RenderOptions(system_policy, prefill=prefill)
        replies = playground.reply(turns, options, params, system=system)
        yield from stream_out(replies, arguments["figures"], top, arguments["received"])

    def compare_columns(conversation: Any, columns: Any, prefill: Any, **arguments: Any):
        """Run one conversation as 2 to 4 variants (`columns`: JSON list of a variant's name, or
        {prompt, text, sampling, engine}; names: correct, edited and the faults of the Compare
        tab; engine: served, or peer for the remote server beside it, also written name@peer),
        one after another, and return JSON: each column's prompt, token count, the tokens it
        adds to or lacks from column 1's, output, figures and `parts_at`, the first character
        where its output parts from column 1's (null when the same); a column on another engine
        than column 1's also has `divergence` (greedy runs: the first token where they part,
        both engines' logprobs, the similarity)."""
        params = call_params(playground, arguments)
        variants = parse_variants(_json(playground.check_text(columns, "columns"), "columns"))
        messages, options = conversation_inputs(playground, conversation, prefill or "")
        results = compare(playground, messages, options, variants, params, peer)
        yield json.dumps({"columns": results}, ensure_ascii=False)

    engine = engine_events(playground)
    for fn, leading, trailing, name in [
        (compare_columns, COMPARE_LEADING, [], "compare"),
        (complete, PROMPT_LEADING, [], "complete"),
        (chat, CHAT_LEADING, [], "chat"),
        (complete, PROMPT_LEADING, TRAILING, "complete_json"),
        (chat, CHAT_LEADING, TRAILING, "chat_json"),
    ]:
        endpoint = with_sampling(fn, leading, playground, trailing, name)
        gr.api(endpoint, api_name=name, api_description=endpoint.api_description, **engine)
    add_inspection_endpoints(playground)


# One render at a time, app-wide: each holds the GIL for as long as it runs (up to 0.14 s of
# CPU, fitted to the context), and a flood of them on Gradio's worker threads (four at once by
# default) slowed every page event: issue 34's soak saw a chat's three events take 2 s each to
# start. Callers wait in the queue, where fair admission shares it out by client.
RENDERS = {"concurrency_id": "render", "concurrency_limit": 1}


def add_inspection_endpoints(playground: Playground) -> None:
    """/render and /status: they generate nothing, so they never wait for the engine."""

    @user_errors
    def render(
        conversation: str,
        system_policy: str = DEFAULT_SYSTEM_POLICY,
        add_generation_prompt: bool = True,
    ) -> tuple[str, str]:
        """The exact prompt for a conversation (JSON), and its token view as JSON."""
        messages = parse_conversation(playground.check_text(conversation, "The conversation"))
        options = RenderOptions(
            system_policy,
            add_generation_prompt=bool(add_generation_prompt),
            fold_separator=playground.settings.fold_separator,
        )
        # Fitted to the context, as the CLI's `render`: a prompt's cost is bounded by the
        # context, not the input (one 65,000-emoji message took 1.2-1.8 s of CPU for 260,016
        # token rows unfitted, issue 34 item 8); the fold stays a note, as before.
        engine = playground.engine
        inspection = inspect_messages(
            messages, engine.tokenizer, options, context_size=engine.context_size
        )
        return inspection.prompt, json.dumps(inspection.as_json(), ensure_ascii=False)

    gr.api(render, api_name="render", **RENDERS)

    def status() -> str:
        """The engine now, as JSON: generations running (active) and waiting for a slot, the
        slots, and on the genai engine KV-cache usage (0 to 1) and its size in bytes."""
        return json.dumps(playground.engine.status().as_dict())

    gr.api(status, api_name="status")
