"""The Compare tab: one conversation as 2 to 4 columns, run at once, each stoppable alone.

Owns: the `CompareTab` components and their handlers: planning every column (its exact prompt,
the tokens it adds or lacks against column 1, its sampling), streaming each column as its own
event (so each takes one of the engine's slots, admitted like any reply, and stops alone), and
the line under each output that says where it parts from column 1's.
Does not own: the faults, variants and differences (`compare`), streaming (`session`), markup
(`display`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import gradio as gr

from playground import display
from playground.compare import (
    CORRECT,
    EDITED,
    FAULTS,
    MAX_COLUMNS,
    VARIANT_TITLES,
    Column,
    Variant,
    conversation_inputs,
    diff_counts,
    first_difference,
    parse_changes,
    plan_column,
    token_diff,
)
from playground.engines import EngineError
from playground.errors import UserError
from playground.session import Control, Playground, throttle
from playground.ui.common import PRIVATE, engine_events, probabilities, user_errors, wire_stop
from playground.ui.controls import Controls

# What a teacher sees first: the correct prompt beside two classic mistakes.
START_VARIANTS = (CORRECT, "second-bos", "no-generation-prompt", "assistant-role")
START_CONVERSATION = [{"role": "user", "content": "What is 7 plus 5?"}]
CHOICES = [(title, name) for name, title in VARIANT_TITLES.items()]


@dataclass
class CompareColumn:
    box: gr.Column
    variant: gr.Dropdown
    changes: gr.Textbox
    edited: gr.Textbox
    info: gr.Markdown
    prompt: gr.HTML
    stop: gr.Button
    output: gr.Textbox
    figures: gr.Markdown
    parts: gr.Markdown
    probs: gr.HTML
    control: gr.State
    plan: gr.State  # the `compare.Column` this run sends, or None


@dataclass
class CompareTab:
    conversation: gr.Code
    prefill: gr.Textbox
    count: gr.Radio
    use_chat: gr.Button
    run: gr.Button
    columns: list[CompareColumn]


def fault_docs() -> str:
    """The fault lab's key: every fault, what it does, why it matters (escaped)."""
    return "\n".join(
        f"- **{display.escape(fault.title)}**: {display.escape(fault.doc)}"
        for fault in FAULTS.values()
    )


def build_compare() -> CompareTab:
    gr.Markdown(
        "One conversation, sent 2 to 4 ways side by side: the correct prompt, a named chat-format "
        "fault, other sampling values, or the prompt edited by hand. **Run all** streams every "
        "column at once; tokens a column adds to column 1's prompt are underlined in green, "
        "tokens it lacks are struck through in red."
    )
    with gr.Row():
        conversation = gr.Code(
            json.dumps(START_CONVERSATION, indent=2),
            language="json",
            label="Conversation (JSON list of {role, content}; a system message may come first)",
            elem_id="compare-conversation",
        )
        with gr.Column():
            prefill = gr.Textbox(label="Start the reply with", elem_id="compare-prefill")
            count = gr.Radio([2, 3, 4], value=3, label="Columns", elem_id="compare-count")
            with gr.Row():
                use_chat = gr.Button("Use the current chat", elem_id="compare-use-chat")
                run = gr.Button("Run all", variant="primary", elem_id="compare-run")
    with gr.Accordion("The faults, one by one", open=False):
        gr.Markdown(fault_docs(), elem_id="compare-faults")
    with gr.Row(equal_height=False):
        columns = [_build_column(i) for i in range(MAX_COLUMNS)]
    return CompareTab(conversation, prefill, count, use_chat, run, columns)


def _build_column(i: int) -> CompareColumn:
    n = i + 1
    with gr.Column(visible=i < 3, min_width=280, elem_id=f"compare-col-{n}") as box:
        gr.Markdown(f"### Column {n}" + (" (the reference)" if i == 0 else ""))
        variant = gr.Dropdown(
            CHOICES, value=START_VARIANTS[i], label="Prompt", elem_id=f"compare-variant-{n}"
        )
        changes = gr.Textbox(
            label="Sampling changes",
            placeholder="e.g. temperature=1.2 seed=7",
            max_lines=1,
            elem_id=f"compare-changes-{n}",
        )
        edited = gr.Textbox(
            label="Prompt text, sent as is",
            lines=5,
            visible=False,
            elem_id=f"compare-edited-{n}",
        )
        info = gr.Markdown(elem_id=f"compare-info-{n}")
        prompt = gr.HTML(elem_id=f"compare-prompt-{n}")
        stop = gr.Button("⏹ Stop", variant="stop", interactive=False, elem_id=f"compare-stop-{n}")
        output = gr.Textbox(
            label="Output", lines=5, interactive=False, elem_id=f"compare-output-{n}"
        )
        figures = gr.Markdown(elem_id=f"compare-figures-{n}")
        parts = gr.Markdown(elem_id=f"compare-parts-{n}")
        probs = gr.HTML(elem_id=f"compare-probs-{n}")
    return CompareColumn(
        box, variant, changes, edited, info, prompt, stop, output, figures, parts, probs,
        gr.State(Control()), gr.State(None),
    )  # fmt: skip


def plan_columns(
    playground: Playground, data: dict, tab: CompareTab, controls: Controls
) -> list[Column | UserError | None]:
    """Every shown column's plan, or the error that keeps it from running; None when hidden."""
    values, stop, fresh = controls.read(data)
    params = playground.params(values, stop, new_seed=fresh)
    messages, options = conversation_inputs(
        playground, data[tab.conversation] or "", data[tab.prefill] or ""
    )
    plans: list[Column | UserError | None] = []
    for i, column in enumerate(tab.columns):
        if i >= int(data[tab.count]):
            plans.append(None)
            continue
        try:
            variant = Variant(
                data[column.variant] or CORRECT,
                data[column.edited] or "",
                parse_changes(data[column.changes] or ""),
            )
            plans.append(plan_column(playground, messages, options, variant, params))
        except UserError as error:
            plans.append(error)
    return plans


def column_view(plan: Column | UserError | None, reference: Column | None) -> tuple[str, str]:
    """A column's info line and its prompt marked against the reference's tokens."""
    if plan is None:
        return "", ""
    if isinstance(plan, UserError):
        return display.notes_markdown([str(plan)], []), ""
    lines = [f"**{display.escape(plan.title)}**", f"{len(plan.tokens)} tokens"]
    if reference is not None and plan is not reference:
        runs = token_diff(reference.tokens, plan.tokens)
        added, removed = diff_counts(runs)
        lines[-1] += f" · against column 1: +{added} / −{removed}"
        marked = display.diff_prompt(runs)
    else:
        marked = display.marked_prompt(plan.prompt)
    lines += [f"*{display.escape(note)}*" for note in plan.notes]
    return "\n\n".join(lines), marked


def wire_compare(tab: CompareTab, controls: Controls, playground: Playground) -> list:
    """Wire the tab; returns the events that stream the columns."""

    @user_errors
    def on_prepare(data: dict) -> dict:
        plans = plan_columns(playground, data, tab, controls)
        reference = plans[0] if isinstance(plans[0], Column) else None
        updates = {}
        for column, plan in zip(tab.columns, plans, strict=True):
            info, marked = column_view(plan, reference)
            runnable = isinstance(plan, Column)
            if runnable:
                data[column.control].queue()
            updates |= {
                column.plan: plan if runnable else None,
                column.info: info,
                column.prompt: marked,
                column.output: "",
                column.figures: "",
                column.parts: "",
                column.probs: "",
                column.stop: gr.update(interactive=runnable),
            }
        return updates

    def on_parts(*outputs: str) -> list[str]:
        reference = outputs[0] or ""
        return [
            display.escape(display.difference_line(first_difference(reference, out or ""), out, n))
            if out
            else ""
            for n, out in enumerate(outputs, 1)
        ]

    columns_in = [c.box for c in tab.columns]
    prepared = tab.run.click(
        on_prepare,
        {
            tab.conversation, tab.prefill, tab.count, *controls.inputs,
            *[part for c in tab.columns for part in (c.variant, c.changes, c.edited, c.control)],
        },
        [
            part for c in tab.columns
            for part in (c.plan, c.info, c.prompt, c.output, c.figures, c.parts, c.probs, c.stop)
        ],
        **PRIVATE,
    )  # fmt: skip
    runs = []
    for column in tab.columns:
        runs.append(prepared.success(**_wire_column(column, playground)))
        runs[-1].then(
            on_parts, [c.output for c in tab.columns], [c.parts for c in tab.columns], **PRIVATE
        )
        wire_stop(column.stop, column.control)
        column.variant.change(
            lambda variant: gr.update(visible=variant == EDITED),
            column.variant,
            column.edited,
            **PRIVATE,
        )
    tab.count.change(
        lambda n: [gr.Column(visible=i < int(n)) for i in range(MAX_COLUMNS)],
        tab.count,
        columns_in,
        **PRIVATE,
    )
    return runs


def _wire_column(column: CompareColumn, playground: Playground) -> dict:
    """The event options that stream one column (each its own event: one engine slot)."""

    @user_errors
    def on_run_column(plan: Column | None, control: Control) -> Iterator[tuple]:
        if plan is None:
            return
        text = None
        try:
            replies = playground.complete(plan.prompt, plan.params, control)
            for reply in throttle(replies):
                text = reply.text
                line = display.escape(reply.line)
                if reply.figures is None:  # only the text and the reading change as it streams
                    yield text, line, gr.skip(), gr.skip()
                    continue
                probs = probabilities(playground, reply.tokens or [], True)
                yield text, line, probs, gr.update(interactive=False)
        except EngineError as error:
            if text is None:
                raise
            yield text, display.escape(f"⚠️ {error}"), "", gr.update(interactive=False)
        finally:
            control.end()

    return {
        "fn": on_run_column,
        "inputs": [column.plan, column.control],
        "outputs": [column.output, column.figures, column.probs, column.stop],
        "show_progress": "hidden",  # the Stop button shows that a column runs
        **engine_events(playground),
        **PRIVATE,
    }
