"""The Compare tab: one conversation as 2 to 4 columns, run at once, each stoppable alone.

Owns: the `CompareTab` components and their handlers: planning every column (its exact prompt,
the tokens it adds or lacks against column 1, its sampling, its fault's notes), shown as soon as
the page opens and again whenever a column's choice changes, before any run; an edited column's
text, which starts from column 1's prompt; streaming each column as its own
event (so each takes one of the engine's slots, admitted like any reply, and stops alone), and
the line under each output that says where it parts from column 1's. With a peer engine (the
remote server beside the served one: `engines.open_peer`), each column's Engine choice, its run
on that engine, and under a column on another engine than column 1's the divergence of the two
greedy runs (`divergence`, shown by `display.divergence_view`); without one, none of that shows.
Does not own: the faults, variants and differences (`compare`), streaming (`session`), markup
(`display`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from playground import display
from playground.compare import (
    CORRECT,
    EDITED,
    FAULTS,
    MAX_COLUMNS,
    PEER,
    SERVED,
    TRAPS,
    VARIANT_TITLES,
    Column,
    Variant,
    conversation_inputs,
    diff_counts,
    first_difference,
    greedy_divergence,
    parse_changes,
    plan_column,
    playground_of,
    readable_diff,
    token_diff,
)
from playground.divergence import NEEDS_GREEDY
from playground.engines import EngineError
from playground.errors import UserError
from playground.sampling import SamplingParams
from playground.session import Control, Playground, throttle
from playground.ui.common import PRIVATE, engine_events, probabilities, user_errors, wire_stop
from playground.ui.controls import Controls

# What a teacher sees first: the correct prompt beside two classic mistakes whose replies differ
# on the demo model too (a second <bos> changes none of tiny-tutor's: issue 33), then that one.
START_VARIANTS = (CORRECT, "assistant-role", "no-generation-prompt", "second-bos")
START_CONVERSATION = [{"role": "user", "content": "What is 7 plus 5?"}]
START_CONVERSATION_JSON = json.dumps(START_CONVERSATION, indent=2)
CHOICES = [(title, name) for name, title in VARIANT_TITLES.items()]
STALE_OUTPUT = "The output below is from the last run, of another prompt: Run all runs this one."
STALE_ENGINE = "The output below is from the last run, on another engine: Run all runs this one."


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
    ran_on: gr.State  # the engine (SERVED or PEER) that plan runs on
    result: gr.State  # its GenerationResult, kept only where a peer makes divergence possible
    engine: gr.Dropdown | None = None  # with a peer only
    divergence: gr.HTML | None = None  # with a peer only


@dataclass
class CompareTab:
    conversation: gr.Code
    prefill: gr.Textbox
    count: gr.Radio
    use_chat: gr.Button
    run: gr.Button
    columns: list[CompareColumn]
    playground: Playground
    peer: Playground | None = None


def fault_docs() -> str:
    """The fault lab's key: every fault, then every engine trap, what it does, why it matters
    (escaped)."""
    parts = []
    for heading, faults in (("Written by hand", FAULTS), ("Done by an engine or library", TRAPS)):
        parts.append(f"**{heading}**\n")
        parts += [
            f"- **{display.escape(f.title)}**: {display.escape(f.doc)}" for f in faults.values()
        ]
        parts.append("")
    return "\n".join(parts)


def build_compare(
    playground: Playground, peer: Playground | None = None, peer_note: str | None = None
) -> CompareTab:
    """The tab around the served `playground`; with `peer` (the remote engine beside it), each
    column may run on either; `peer_note` says in one line why a configured peer is missing."""
    gr.Markdown(
        "One conversation, sent 2 to 4 ways side by side: the correct prompt, a named chat-format "
        "fault, an engine trap (what a library or engine does to a correct prompt), other "
        "sampling values, or the prompt edited by hand. Each column shows the exact "
        "prompt it sends as soon as you pick it: tokens it adds to column 1's prompt are "
        "underlined in green, tokens it lacks are struck through in red. **Run all** streams "
        "every column at once, to see what the model makes of each."
    )
    if peer is not None:
        gr.Markdown(peer_intro(playground, peer), elem_id="compare-peer-intro")
    elif peer_note:
        gr.Markdown(display.escape(peer_note), elem_id="compare-peer-note")
    with gr.Row():
        conversation = gr.Code(
            START_CONVERSATION_JSON,
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
    # The page opens with its columns already shown (issue 33: they stayed empty until a run).
    start = [(variant, "", "", SERVED) for variant in START_VARIANTS]
    params = playground.params({})
    plans = plan_all(playground, START_CONVERSATION_JSON, "", 3, start, params, peer)
    on = playground.engine.label if peer is not None else ""
    views = [column_view(plan, plans[0], on) for plan in plans]
    engines = None
    if peer is not None:
        engines = [(playground.engine.label, SERVED), (peer.engine.label, PEER)]
    with gr.Row(equal_height=False, elem_id="compare-columns"):
        columns = [_build_column(i, *views[i], engines) for i in range(MAX_COLUMNS)]
    return CompareTab(conversation, prefill, count, use_chat, run, columns, playground, peer)


def peer_intro(playground: Playground, peer: Playground) -> str:
    """What the Engine choice of each column offers (escaped: an engine's labels are plain)."""
    served, remote = playground.engine.label, peer.engine.label
    return display.escape(
        f"Each column runs on an engine of its choice: {served} or {remote}, the same model "
        "with the same tokenizer. Under a column on another engine than column 1's, a greedy "
        "run (temperature 0) shows the first token where the two outputs part, both engines' "
        "logprob at every token, and how alike the whole outputs are."
    )


def _build_column(
    i: int, info: str, marked: str, engines: list[tuple[str, str]] | None
) -> CompareColumn:
    n = i + 1
    # 200 px: four columns fit beside the open sidebar at 1280 px; a phone gets one per row.
    with gr.Column(visible=i < 3, min_width=200, elem_id=f"compare-col-{n}") as box:
        gr.Markdown(f"### Column {n}" + (" (the reference)" if i == 0 else ""))
        variant = gr.Dropdown(
            CHOICES, value=START_VARIANTS[i], label="Prompt", elem_id=f"compare-variant-{n}"
        )
        engine = None
        if engines is not None:  # no dead control: only where there is a choice
            engine = gr.Dropdown(
                engines, value=SERVED, label="Engine", elem_id=f"compare-engine-{n}"
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
        info = gr.Markdown(info, elem_id=f"compare-info-{n}")
        prompt = gr.HTML(marked, elem_id=f"compare-prompt-{n}")
        stop = gr.Button("⏹ Stop", variant="stop", interactive=False, elem_id=f"compare-stop-{n}")
        output = gr.Textbox(
            label="Output", lines=5, interactive=False, elem_id=f"compare-output-{n}"
        )
        figures = gr.Markdown(elem_id=f"compare-figures-{n}")
        parts = gr.Markdown(elem_id=f"compare-parts-{n}")
        divergence = gr.HTML(elem_id=f"compare-divergence-{n}") if engines else None
        probs = gr.HTML(elem_id=f"compare-probs-{n}")
    return CompareColumn(
        box, variant, changes, edited, info, prompt, stop, output, figures, parts, probs,
        gr.State(Control()), gr.State(None), gr.State(SERVED), gr.State(None), engine, divergence,
    )  # fmt: skip


def plan_all(
    playground: Playground,
    conversation: str,
    prefill: str,
    count: int,
    columns: list[tuple[str, str, str, str]],
    params: SamplingParams,
    peer: Playground | None = None,
) -> list[Column | UserError | None]:
    """The first `count` columns' plans, from each one's (variant, edited text, sampling
    changes, engine), each made on its engine's playground, or the error that keeps a column
    from running; None when hidden. A conversation that can't be read raises: every column
    needs it."""
    messages, options = conversation_inputs(playground, conversation, prefill)
    plans: list[Column | UserError | None] = []
    for i, (name, edited, changes, engine) in enumerate(columns):
        if i >= count:
            plans.append(None)
            continue
        try:
            variant = Variant(name or CORRECT, edited, parse_changes(changes), engine or SERVED)
            on = playground_of(variant.engine, playground, peer)
            plans.append(plan_column(on, messages, options, variant, params))
        except UserError as error:
            plans.append(error)
    return plans


def plan_columns(
    data: dict, tab: CompareTab, controls: Controls
) -> list[Column | UserError | None]:
    """Every shown column's plan (`plan_all`), from an event's values."""
    playground = tab.playground
    values, stop, fresh = controls.read(data)
    return plan_all(
        playground,
        data[tab.conversation] or "",
        data[tab.prefill] or "",
        int(data[tab.count]),
        [(data[c.variant], data[c.edited] or "", data[c.changes] or "", engine_of(data, c))
         for c in tab.columns],
        playground.params(values, stop, new_seed=fresh),
        tab.peer,
    )  # fmt: skip


def engine_of(data: dict, column: CompareColumn) -> str:
    """The engine a column's choice names (the served one where there is no choice)."""
    return data[column.engine] or SERVED if column.engine is not None else SERVED


def column_view(
    plan: Column | UserError | None, reference: object, on: str = ""
) -> tuple[str, str]:
    """A column's info line and its prompt marked against the reference's (column 1's) tokens,
    when column 1 has a plan; `on` names the engine it runs on, where there is a choice."""
    if plan is None:
        return "", ""
    if isinstance(plan, UserError):
        return display.notes_markdown([str(plan)], []), ""
    reference = reference if isinstance(reference, Column) else None
    lines = [f"**{display.escape(plan.title)}**", f"{len(plan.tokens)} tokens"]
    if on:
        lines.insert(1, f"Runs on {display.escape(on)}")
    if reference is not None and plan is not reference:
        runs = token_diff(reference.tokens, plan.tokens)
        added, removed = diff_counts(runs)
        lines[-1] += f" · against column 1: +{added} / −{removed}"
        marked = display.diff_prompt(readable_diff(runs))
    else:
        marked = display.marked_prompt(plan.prompt)
    lines += [f"*{display.escape(note)}*" for note in plan.notes]
    return "\n\n".join(lines), marked


def wire_compare(tab: CompareTab, controls: Controls, playground: Playground) -> list:
    """Wire the tab; returns the events that stream the columns."""

    @user_errors
    def on_prepare(data: dict) -> dict:
        plans = plan_columns(data, tab, controls)
        updates = {}
        for column, plan, (info, marked) in zip(tab.columns, plans, _views(tab, data, plans),
                                                strict=True):  # fmt: skip
            runnable = isinstance(plan, Column)
            if runnable:
                data[column.control].queue()
            updates |= {
                column.plan: plan if runnable else None,
                column.ran_on: engine_of(data, column),
                column.result: None,
                column.info: info,
                column.prompt: marked,
                column.output: "",
                column.figures: "",
                column.parts: "",
                column.probs: "",
                column.stop: gr.update(interactive=runnable),
            }
            if column.divergence is not None:
                updates[column.divergence] = ""
        return updates

    def on_parts(*outputs: str) -> list[str]:
        reference = outputs[0] or ""
        return [
            display.escape(display.difference_line(first_difference(reference, out or ""), out, n))
            if out
            else ""
            for n, out in enumerate(outputs, 1)
        ]

    engines = [c.engine for c in tab.columns if c.engine is not None]
    prepared = tab.run.click(
        on_prepare,
        {
            tab.conversation, tab.prefill, tab.count, *controls.inputs, *engines,
            *[part for c in tab.columns for part in (c.variant, c.changes, c.edited, c.control)],
        },
        [
            part for c in tab.columns
            for part in (c.plan, c.ran_on, c.result, c.info, c.prompt, c.output, c.figures,
                         c.parts, c.probs, c.stop, c.divergence)
            if part is not None
        ],
        **PRIVATE,
    )  # fmt: skip
    runs = []
    for column in tab.columns:
        runs.append(prepared.success(**_wire_column(column, tab)))
        runs[-1].then(
            on_parts, [c.output for c in tab.columns], [c.parts for c in tab.columns], **PRIVATE
        )
        if tab.peer is not None:
            runs[-1].then(**_divergence_event(tab))
        wire_stop(column.stop, column.control)
        _wire_choice(tab, controls, playground, column)
    tab.count.change(
        lambda n: [gr.Column(visible=i < int(n)) for i in range(MAX_COLUMNS)],
        tab.count,
        [c.box for c in tab.columns],
        **PRIVATE,
    )
    _wire_preview(tab, controls)
    return runs


def _views(tab: CompareTab, data: dict, plans: list) -> list[tuple[str, str]]:
    """Every column's info line and marked prompt (`column_view`), with the engine it runs on."""
    labels = [label_of(tab, engine_of(data, c)) for c in tab.columns]
    return [column_view(p, plans[0], on) for p, on in zip(plans, labels, strict=True)]


def _wire_choice(
    tab: CompareTab, controls: Controls, playground: Playground, column: CompareColumn
) -> None:
    """A column's prompt choice: the edited prompt's box shows for "edited", and starts from
    column 1's prompt (`_on_variant`)."""
    column.variant.change(
        lambda variant: gr.update(visible=variant == EDITED),
        column.variant,
        column.edited,
        **PRIVATE,
    )
    # .input, a visitor's own choice only: a share link restores its edited text with the
    # choice, and a .change handler read that text before it had landed (seen in Chromium).
    column.variant.input(
        _on_variant(playground, tab, controls, column),
        {tab.conversation, tab.prefill, *controls.inputs,
         *[part for c in tab.columns for part in (c.variant, c.edited)]},
        column.edited,
        show_progress="hidden",
        **PRIVATE,
    )  # fmt: skip


def _wire_preview(tab: CompareTab, controls: Controls) -> None:
    """Every column's prompt, tokens, diff and notes follow what is picked, before any run
    (issue 33); a column whose shown output came from another prompt or engine says so."""

    def on_preview(data: dict) -> list[str]:
        # No toast while a teacher types: what keeps a column from running shows in it.
        try:
            plans = plan_columns(data, tab, controls)
        except UserError as error:
            shown = int(data[tab.count])
            plans = [error if i < shown else None for i in range(MAX_COLUMNS)]
        shown_views = []
        for column, plan, (info, marked) in zip(tab.columns, plans, _views(tab, data, plans),
                                                strict=True):  # fmt: skip
            ran = data[column.plan]
            if isinstance(plan, Column) and ran is not None and ran.prompt != plan.prompt:
                info += f"\n\n*{STALE_OUTPUT}*"
            elif ran is not None and data[column.ran_on] != engine_of(data, column):
                info += f"\n\n*{STALE_ENGINE}*"
            shown_views += [info, marked]
        return shown_views

    engines = [c.engine for c in tab.columns if c.engine is not None]
    # always_last: typing in an edited prompt queues one preview, not one a key.
    gr.on(
        [
            tab.conversation.change, tab.prefill.change, tab.count.change,
            controls.values["max_new_tokens"].change, *[e.change for e in engines],
            *[event for c in tab.columns
              for event in (c.variant.change, c.edited.change, c.changes.change)],
        ],
        on_preview,
        {
            tab.conversation, tab.prefill, tab.count, *controls.inputs, *engines,
            *[part for c in tab.columns
              for part in (c.variant, c.changes, c.edited, c.plan, c.ran_on)],
        },
        [part for c in tab.columns for part in (c.info, c.prompt)],
        trigger_mode="always_last",
        show_progress="hidden",
        **PRIVATE,
    )  # fmt: skip


def label_of(tab: CompareTab, engine: str) -> str:
    """The label of the engine a column runs on, where there is a choice (else "")."""
    if tab.peer is None:
        return ""
    return playground_of(engine, tab.playground, tab.peer).engine.label


def _divergence_event(tab: CompareTab) -> dict:
    """The event options that show, under each column on another engine than column 1's, the
    divergence of its greedy run from column 1's (shown again as each column ends)."""
    columns = tab.columns

    def on_divergence(data: dict) -> list[str]:
        first = columns[0]
        shown = []
        for column in columns:
            ran, reference = data[column.result], data[first.result]
            other_engine = data[column.ran_on] != data[first.ran_on]
            if column is first or not other_engine or ran is None or reference is None:
                shown.append("")
                continue
            shown.append(divergence_html(tab, data[first.plan], data[column.plan],
                                         (reference, ran), (data[first.ran_on],
                                                            data[column.ran_on])))  # fmt: skip
        return shown

    return {
        "fn": on_divergence,
        "inputs": {part for c in columns for part in (c.plan, c.ran_on, c.result)},
        "outputs": [c.divergence for c in columns],
        **PRIVATE,
    }


def divergence_html(
    tab: CompareTab,
    reference: Column,
    plan: Column,
    results: tuple[Any, Any],
    engines: tuple[str, str],
) -> str:
    """The divergence view of `plan`'s run against column 1's (`reference`), or why there is
    none: only greedy runs part because the engines differ."""
    found = greedy_divergence((results[0], reference.params), (results[1], plan.params))
    if found is None:
        return f"<p>{display.escape(NEEDS_GREEDY)}</p>"
    pieces = found.pieces(tab.playground.engine.tokenizer)
    same_prompt = [t.id for t in reference.tokens] == [t.id for t in plan.tokens]
    labels = (label_of(tab, engines[0]), label_of(tab, engines[1]))
    return display.divergence_view(found, pieces, labels, same_prompt)


def _on_variant(
    playground: Playground, tab: CompareTab, controls: Controls, column: CompareColumn
) -> Callable[[dict], Any]:
    """The handler of a visitor's prompt choice in `column`: an empty edited prompt starts from
    column 1's prompt (column 1's own, from the correct one), so it runs as it is."""
    first = tab.columns[0]

    def on_variant(data: dict) -> dict:
        if data[column.variant] != EDITED or (data[column.edited] or "").strip():
            return gr.skip()
        source = Variant(data[first.variant], data[first.edited] or "")
        if column is first or (source.prompt == EDITED and not source.text.strip()):
            source = Variant()
        try:
            messages, options = conversation_inputs(
                playground, data[tab.conversation] or "", data[tab.prefill] or ""
            )
            values, stop, _ = controls.read(data)
            params = playground.params(values, stop)
            text = plan_column(playground, messages, options, source, params).prompt
        except UserError:
            text = ""  # the column's preview says what is wrong
        return text

    return on_variant


def _wire_column(column: CompareColumn, tab: CompareTab) -> dict:
    """The event options that stream one column (each its own event: one engine slot), on the
    engine it was planned for."""
    keep = tab.peer is not None  # a result is kept only where divergence can use it

    @user_errors
    def on_run_column(plan: Column | None, ran_on: str, control: Control) -> Iterator[tuple]:
        if plan is None:
            return
        on = playground_of(ran_on, tab.playground, tab.peer)  # as the plan was made
        text = None
        try:
            replies = on.complete(plan.prompt, plan.params, control, plan.delivery)
            for reply in throttle(replies):
                text = reply.text
                line = display.escape(reply.line)
                if reply.figures is None:  # only the text and the reading change as it streams
                    yield text, line, gr.skip(), gr.skip(), gr.skip()
                    continue
                probs = probabilities(on, reply.tokens or [], True)
                kept = reply.result if keep else None
                yield text, line, probs, gr.update(interactive=False), kept
        except EngineError as error:
            if text is None:
                raise
            yield text, display.escape(f"⚠️ {error}"), "", gr.update(interactive=False), None
        finally:
            control.end()

    return {
        "fn": on_run_column,
        "inputs": [column.plan, column.ran_on, column.control],
        "outputs": [column.output, column.figures, column.probs, column.stop, column.result],
        "show_progress": "hidden",  # the Stop button shows that a column runs
        **engine_events(tab.playground),
        **PRIVATE,
    }
