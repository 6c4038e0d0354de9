"""The named API endpoints: /complete, /chat and /render.

Owns: the endpoint functions and their signatures, which are built from the one list of sampling
fields (`sampling.SAMPLING_FIELDS`): names, types, space.yaml's defaults and help text. Values are
passed on by name.
Does not own: what a call does (`session.Playground`).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from playground.chat_format import parse_conversation
from playground.inspection import inspect_messages
from playground.sampling import SAMPLING_FIELDS, ParamError, describe
from playground.session import Playground, PromptOptions, Reply, throttle
from playground.ui.common import ENGINE_GROUP, user_errors

P = inspect.Parameter
# After the sampling values, on both generating endpoints (new parameters go last, so
# positional callers of earlier versions keep working).
TRAILING = [
    ("stop", str, "", "Stop strings, one per line: " + describe("stop")),
    ("figures", bool, False, "Stream JSON objects {text, figures} instead of text; the last "
     "one has the figures: stop_reason, prompt_tokens, new_tokens, ttft_s, tokens_per_s, seed."),
]  # fmt: skip


def with_sampling(
    fn: Callable, leading: list[tuple[str, type, Any, str]], playground: Playground
) -> Callable:
    """Give `fn(*args)` the signature and docstring of its leading parameters followed by the
    sampling fields, so the API page lists (and describes) each one."""
    ranges = dict(playground.settings.ranges)
    params, docs = [], []
    for name, kind, default, help_text in leading:
        params.append(P(name, P.POSITIONAL_OR_KEYWORD, default=default, annotation=kind))
        docs.append(f"    {name}: {help_text}")
    for f in SAMPLING_FIELDS:
        r = ranges[f.name]
        default = int(r.default) if r.integer else float(r.default)
        kind = int if r.integer else float
        params.append(P(f.name, P.POSITIONAL_OR_KEYWORD, default=default, annotation=kind))
        docs.append(f"    {f.name}: {describe(f.name, ranges)}")
    for name, kind, default, help_text in TRAILING:
        params.append(P(name, P.POSITIONAL_OR_KEYWORD, default=default, annotation=kind))
        docs.append(f"    {name}: {help_text}")
    signature = inspect.Signature(params, return_annotation=str)

    def endpoint(*args: Any, **kwargs: Any) -> Iterator[str]:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as error:
            raise ParamError(f"Bad arguments: {error}.") from None
        bound.apply_defaults()
        yield from fn(**bound.arguments)

    endpoint.__name__ = fn.__name__
    endpoint.__signature__ = signature
    endpoint.__annotations__ = {p.name: p.annotation for p in params} | {"return": str}
    endpoint.__doc__ = f"{fn.__doc__}\n\nArgs:\n" + "\n".join(docs)
    return user_errors(endpoint)


def sampling_of(arguments: dict[str, Any]) -> dict[str, Any]:
    return {f.name: arguments[f.name] for f in SAMPLING_FIELDS}


def stop_lines(stop: Any) -> list[str] | Any:
    if stop is None:
        return []
    return stop.splitlines() if isinstance(stop, str) else stop  # a list is checked as is


def stream_out(replies: Iterator[Reply], with_figures: Any) -> Iterator[str]:
    """Text as it grows, or (with `figures`) JSON objects whose last one carries the figures."""
    for reply in throttle(replies):
        if with_figures is True:
            yield json.dumps({"text": reply.text, "figures": reply.figures}, ensure_ascii=False)
        else:
            yield reply.text


def add_endpoints(playground: Playground) -> None:
    def complete(prompt: Any, **arguments: Any) -> Iterator[str]:
        """Stream the continuation of raw text (no template; one <bos> is added)."""
        params = playground.params(sampling_of(arguments), stop_lines(arguments["stop"]))
        yield from stream_out(playground.complete(prompt, params), arguments["figures"])

    def chat(
        message: Any,
        history: Any,
        system_prompt: Any,
        system_policy: Any,
        prefill: Any,
        **arguments: Any,
    ) -> Iterator[str]:
        """Stream the reply to `message` after `history` (JSON list of {role, content})."""
        params = playground.params(sampling_of(arguments), stop_lines(arguments["stop"]))
        if not isinstance(message, str) or not message.strip():
            raise ParamError("The message is empty.")
        turns = parse_conversation(playground.check_text(history or "[]", "The history"))
        turns.append({"role": "user", "content": playground.check_text(message, "The message")})
        system = playground.check_text(system_prompt or "", "The system prompt")
        options = PromptOptions(
            system, system_policy, playground.check_text(prefill or "", "The prefill")
        )
        yield from stream_out(playground.reply(turns, options, params), arguments["figures"])

    @user_errors
    def render(
        conversation: str, system_policy: str = "fold", add_generation_prompt: bool = True
    ) -> tuple[str, str]:
        """The exact prompt for a conversation (JSON), and its token view as JSON."""
        messages = parse_conversation(playground.check_text(conversation, "The conversation"))
        inspection = inspect_messages(
            messages,
            playground.engine.tokenizer,
            system_policy=system_policy,
            add_generation_prompt=bool(add_generation_prompt),
        )
        return inspection.prompt, json.dumps(inspection.as_json(), ensure_ascii=False)

    complete_api = with_sampling(
        complete, [("prompt", str, P.empty, "raw text, sent with no chat template")], playground
    )
    chat_api = with_sampling(
        chat,
        [
            ("message", str, P.empty, "the visitor's new message"),
            ("history", str, "[]", "the conversation so far: JSON list of {role, content}"),
            ("system_prompt", str, "", "instructions before the conversation (see system_policy)"),
            ("system_policy", str, "fold", "fold, error or drop: what to do with a system prompt"),
            ("prefill", str, "", "text the reply starts with"),
        ],
        playground,
    )
    gr.api(complete_api, api_name="complete", concurrency_id=ENGINE_GROUP, concurrency_limit=1)
    gr.api(chat_api, api_name="chat", concurrency_id=ENGINE_GROUP, concurrency_limit=1)
    gr.api(render, api_name="render")
