"""The Model tab and the fallback banner: what is being served, and why if it is not the default.

Owns: the `ModelTab` components (what is served, on which CPU at what measured speed, each
figure with its plain meaning (`display.model_lines`), and the engine's live figures: generations
running and waiting, KV-cache usage), and the banner's
presentation (styled, dismissable; its first line always shown whole, at any width, the details a
tap away: `display.banner_html`).
The notice's wording is `models.fallback_notice`'s; every text here is escaped. Once the banner
is closed, the page's labels still name the served model (`display.model_label`).
Does not own: loading the model or choosing a fallback (`engines`, `models`).
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from playground import display
from playground.engines import Engine
from playground.machine import this_cpu


@dataclass
class Banner:
    row: gr.Row
    text: gr.HTML
    close: gr.Button


@dataclass
class ModelTab:
    info: gr.Markdown
    status: gr.Markdown
    refresh: gr.Button


def build_banner(notice: str | None) -> Banner:
    with gr.Row(visible=bool(notice), elem_id="banner", equal_height=True) as row:
        text = gr.HTML(display.banner_html(notice or ""), elem_id="banner-text")
        close = gr.Button("✕", size="sm", scale=0, elem_id="banner-close")
    close.click(lambda: gr.Row(visible=False), None, row, api_visibility="private")
    return Banner(row, text, close)


def build_model(engine: Engine, notice: str | None) -> ModelTab:
    # An OpenVINO model run in this process has a device, a load time and this CPU to show.
    lines = display.model_lines(
        engine.info, engine.context_size, this_cpu(), engine.warm_up_result, engine.compiles
    )
    lines += [f"- {display.escape(note)}" for note in engine.notes()]
    if notice:
        lines.append(f"- **Note:** {display.escape(notice)}")
    info_md = gr.Markdown("\n".join(lines), elem_id="model-info")
    gr.Markdown("### Now")
    status = gr.Markdown(status_markdown(engine), elem_id="engine-status")
    refresh = gr.Button("Refresh", size="sm", elem_id="status-refresh")
    return ModelTab(info_md, status, refresh)


def status_markdown(engine: Engine) -> str:
    """The engine's live lines, as the engine's own status says them."""
    return "\n".join(engine.status().lines())


def wire_model(tab: ModelTab, engine: Engine, shown: gr.Tab) -> None:
    """The live figures are read when the tab is opened and on Refresh (no polling)."""

    def on_status() -> str:
        return status_markdown(engine)

    for trigger in (shown.select, tab.refresh.click):
        trigger(on_status, None, tab.status, show_progress="hidden", api_visibility="private")
