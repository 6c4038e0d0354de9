"""The Gradio Blocks UI, built around an injected engine: `build_demo(engine, settings, notice)`,
with an optional peer engine (the remote server beside it) for Compare's columns.

Owns: the page (banner, sampling sidebar, the Chat, Raw prompt, Template inspector, Compare,
Notebook and Model tabs), the wiring between tabs, the tab a link names (`?view=`), the queue
(behind `guard.FairAdmission`), the launch options and `launch` (which installs
`guard.VisitorsFirst`). Each tab is a module of this package (`chat`, `raw`, `inspector`,
`compare`, `notebook`, `model`, with `controls` for the sidebar, `api` for the named endpoints
and `guard` for what keeps one client from harming the others); this package is the only place
that imports gradio. Per-visitor state lives in gr.State and component values; the engine is
shared and stateless.
Does not own: what a turn does (`session`), prompt rules (`chat_format`), generation (`engines`),
markup (`display`), or reading settings (`settings`).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from playground import display
from playground.chat_format import parse_prompt
from playground.engines import Engine
from playground.session import Playground, conversation, without_reply
from playground.settings import MAX_UPLOAD_BYTES, Settings
from playground.ui.api import add_endpoints
from playground.ui.chat import CSS as CHAT_CSS
from playground.ui.chat import build_chat, build_skip_link, wire_chat
from playground.ui.common import (
    CLOSE_SIDEBAR_ON_PHONES,
    CSS,
    DOWNLOAD_AGE_S,
    ENGINE_GROUP,
    PRIVATE,
    user_errors,
)
from playground.ui.compare import build_compare, wire_compare
from playground.ui.controls import (
    build_controls,
    build_stop_note,
    wire_controls,
    wire_stop_notes,
)
from playground.ui.guard import (
    BodyLimit,
    FairAdmission,
    ReaderCount,
    Readers,
    close_unused_routes,
    keep_visitors,
)
from playground.ui.inspector import START, as_json, build_inspector, wire_inspector
from playground.ui.model import build_banner, build_model, wire_model
from playground.ui.notebook import CSS as NOTEBOOK_CSS
from playground.ui.notebook import build_notebook, wire_notebook
from playground.ui.raw import build_raw, wire_raw
from playground.ui.share import ShareBar, build_share_bar, wire_share

__all__ = ["build_demo", "launch", "launch_options"]
TAB_IDS = ("chat", "raw", "inspector", "compare", "notebook", "model")


def build_demo(
    engine: Engine,
    settings: Settings,
    notice: str | None = None,
    peer: Engine | None = None,
    peer_note: str | None = None,
) -> gr.Blocks:
    """The whole playground around `engine`; `notice` is shown as a banner (model fallback).
    `peer` (`engines.open_peer`) is a second engine on the same model that Compare's columns
    and the /compare endpoint may run on; `peer_note` says why a configured one is missing."""
    playground = Playground(engine, settings)
    peers = Playground(peer, settings) if peer is not None else None
    with gr.Blocks(
        title="Gemma-2 OpenVINO Playground", delete_cache=(DOWNLOAD_AGE_S, DOWNLOAD_AGE_S)
    ) as demo:
        build_skip_link()  # first, so that it is the first Tab stop
        # The served model, named: a closed banner must not leave "Gemma-2-9b-it" on a page
        # that serves a stand-in (issue 33).
        served = display.escape(display.model_label(engine.info.model if engine.info else ""))
        gr.Markdown(
            f"# Gemma-2 OpenVINO Playground\nChat with **{served}**, run by OpenVINO, send "
            "raw prompts, and see exactly how Gemma-2's chat format works.",
            elem_id="subtitle",
        )
        build_banner(notice)
        share_note, expected = gr.HTML(elem_id="share-note"), gr.State(None)
        controls = build_controls(settings, engine.supports_prompt_lookup)
        bars: dict[str, ShareBar] = {}
        notes = []  # the stop-strings note of each tab that generates
        with gr.Tabs(overflow_behavior="wrap") as tabs:
            with gr.Tab("Chat", id="chat"):
                bars["chat"] = build_share_bar("chat")
                notes.append(build_stop_note("chat"))
                chat = build_chat(playground)
            with gr.Tab("Raw prompt", id="raw"):
                bars["raw"] = build_share_bar("raw")
                notes.append(build_stop_note("raw"))
                raw = build_raw()
            with gr.Tab("Template inspector", id="inspector") as inspector_tab:
                bars["inspector"] = build_share_bar("inspector")
                inspector = build_inspector(inspector_tab, playground)
            with gr.Tab("Compare", id="compare"):
                bars["compare"] = build_share_bar("compare")
                notes.append(build_stop_note("compare"))
                compare = build_compare(playground, peers, peer_note)
            with gr.Tab("Notebook", id="notebook"):
                notes.append(build_stop_note("notebook"))
                notebook = build_notebook(playground)
            with gr.Tab("Model", id="model") as model_tab:
                model = build_model(engine, notice)
        wire_controls(controls, settings)
        wire_stop_notes(controls, notes)
        runs = {"chat": wire_chat(chat, controls, playground, demo)}
        runs["raw"] = wire_raw(raw, controls, playground)
        wire_inspector(inspector, controls, playground, demo)
        runs["compare"] = wire_compare(compare, controls, playground)
        wire_notebook(notebook, controls, playground, demo)
        wire_model(model, engine, model_tab)
        add_endpoints(playground, peers)

        demo.load(None, None, None, js=CLOSE_SIDEBAR_ON_PHONES, **PRIVATE)
        demo.load(on_view, None, tabs, **PRIVATE)
        page = SimpleNamespace(
            demo=demo, tabs=tabs, playground=playground, controls=controls,
            chat=chat, raw=raw, inspector=inspector, compare=compare,
        )  # fmt: skip
        wire_between_tabs(page)
        wire_share(page, bars, share_note, expected, runs)
    # The queue's places are FairAdmission's: a full queue of generations must not refuse a
    # page load, so Gradio's own bound (which counts every event) is off.
    # api_open=False: a queued endpoint is never run by a direct POST to /run/ (Gradio closes
    # those only on a Space), which would pass the queue and the fair admission.
    demo.queue(max_size=None, default_concurrency_limit=4, api_open=False)
    demo.fair_admission = FairAdmission(  # `launch` hands it to the session holder
        demo._queue,
        ENGINE_GROUP,
        slots=engine.max_concurrent,
        places=settings.queue_size + engine.max_concurrent,
        per_client=settings.per_client,
        other=4 * settings.queue_size,
        proxy_hops=settings.trusted_proxy_hops,
    )
    return demo


def wire_between_tabs(page: SimpleNamespace) -> None:
    """The buttons that carry a conversation or a prompt from one tab to another."""
    chat, raw, inspector, tabs = page.chat, page.raw, page.inspector, page.tabs

    @user_errors
    def on_use_chat(turns: list, system: str | None, system_policy: str, prefill: str | None):
        messages = conversation(system or "", turns)
        # A chat that ends with a reply is shown as it stands (no new model turn opened);
        # one that ends with the visitor's message is exactly the prompt the chat sends.
        add_gen = not messages or messages[-1]["role"] != "assistant"
        return as_json(messages), add_gen, system_policy, prefill or ""

    @user_errors
    def on_compare_chat(turns: list, system: str | None, prefill: str | None):
        # The chat's last question, to be answered anew in every column.
        messages = conversation(system or "", without_reply(turns))
        return as_json(messages or START), prefill or ""

    @user_errors
    def on_raw_to_inspector(prompt: str | None):
        parsed = parse_prompt(prompt or "")
        selected = gr.Tabs(selected="inspector")
        return as_json(parsed.messages), parsed.add_generation_prompt, parsed.prefill, selected

    inspector.use_chat.click(
        on_use_chat,
        [chat.turns, chat.system, chat.system_policy, chat.prefill],
        [
            inspector.conversation,
            inspector.generation_prompt,
            inspector.system_policy,
            inspector.prefill,
        ],
        **PRIVATE,
    )
    page.compare.use_chat.click(
        on_compare_chat,
        [chat.turns, chat.system, chat.prefill],
        [page.compare.conversation, page.compare.prefill],
        **PRIVATE,
    )
    inspector.to_raw.click(
        lambda prompt: (prompt, gr.Tabs(selected="raw")),
        inspector.prompt,
        [raw.prompt, tabs],
        **PRIVATE,
    )
    raw.load.click(lambda prompt: prompt, inspector.prompt, raw.prompt, **PRIVATE)
    raw.inspect.click(
        on_raw_to_inspector,
        raw.prompt,
        [inspector.conversation, inspector.generation_prompt, inspector.prefill, tabs],
        **PRIVATE,
    )


def launch(demo: gr.Blocks, settings: Settings, **options: Any) -> str:
    """Launch `demo` with `launch_options`, then give it the session holder that keeps
    visitors' chats (`guard.VisitorsFirst`); block unless `prevent_thread_lock`. Returns the
    local URL."""
    block = not options.pop("prevent_thread_lock", False)
    readers = demo.fair_admission.readers
    demo.launch(prevent_thread_lock=True, **launch_options(settings, readers), **options)
    keep_visitors(demo.server_app, demo, demo.fair_admission)
    close_unused_routes(demo.server_app)
    if block:
        demo.block_thread()
    return demo.local_url


def on_view(request: gr.Request) -> gr.Tabs:
    """The tab a shared link names, e.g. `?view=notebook`."""
    view = request.query_params.get("view", "")
    return gr.Tabs(selected=view) if view in TAB_IDS else gr.skip()


def launch_options(settings: Settings, readers: Readers) -> dict[str, Any]:
    """Hardened launch settings for a public Space; `readers` counts the open result streams
    (`guard.FairAdmission` ends generations nobody reads)."""
    middleware = [Middleware(BodyLimit, limit=settings.max_body_bytes),
                  Middleware(ReaderCount, readers=readers)]  # fmt: skip
    return {
        "max_file_size": MAX_UPLOAD_BYTES,
        # Every body is bounded before Gradio reads (and keeps) it: see `guard`.
        "app_kwargs": {"middleware": middleware},
        "state_session_capacity": settings.session_capacity,
        "enable_monitoring": False,
        "show_error": True,  # shows gr.Error messages; tracebacks never leave the server
        "ssr_mode": False,
        "css": CSS + CHAT_CSS + NOTEBOOK_CSS,
        "theme": gr.themes.Soft(),
    }
