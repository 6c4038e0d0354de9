"""The Raw prompt tab: text sent as is, with the inspector's live checks.

Owns: the `RawTab` components, the example prompt (a real Gemma prompt, as the placeholder and
one click away), the streaming of a continuation with its figures and, when the model ended it
with its first token, why (`display.ended_at_once`), its Stop, and the live checks under the
prompt.
Does not own: the empty-prompt rule and streaming (`session.Playground.complete`), what the
checks say (token count, a doubled or missing `<bos>`, control-token text:
`Playground.raw_checks`), how the "no <bos>" option sends (`Playground.raw_delivery`), the
start/stop wiring (`ui.common.run_with_stop`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import gradio as gr

from playground import display
from playground.engines import EngineError
from playground.session import Control, Playground, throttle
from playground.ui.common import PRIVATE, probabilities, run_with_stop, user_errors, wire_stop
from playground.ui.controls import Controls

# A question in Gemma's turns, ready for the model's answer: plain text with no turns around it
# is often ended at once (issue 33). tiny-tutor answers this one too.
EXAMPLE_PROMPT = "<start_of_turn>user\nWhat is 7 plus 5?<end_of_turn>\n<start_of_turn>model\n"


@dataclass
class RawTab:
    control: gr.State
    prompt: gr.Textbox
    checks: gr.Markdown
    run: gr.Button
    stop: gr.Button
    load: gr.Button
    inspect: gr.Button
    example: gr.Button
    output: gr.Textbox
    figures: gr.Markdown
    show_probs: gr.Checkbox
    tokens: gr.State  # the last continuation's `session.token_probabilities`
    probs: gr.HTML
    no_bos: gr.Checkbox


def build_raw() -> RawTab:
    control = gr.State(Control())
    gr.Markdown(
        "Text sent as is: no chat template. One `<bos>` is added unless it starts with one "
        "(or none, with **Send without `<bos>`**). "
        "To have the model answer, write Gemma's turns, as the example does."
    )
    prompt = gr.Textbox(label="Prompt", lines=8, placeholder=EXAMPLE_PROMPT, elem_id="raw-prompt")
    # Off by default: the engine trap "no <bos>" (the fault lab's), to see what it does.
    no_bos = gr.Checkbox(
        label="Send without <bos>",
        info="An engine trap: some engines add none. Gemma needs exactly one.",
        elem_id="raw-no-bos",
    )
    checks = gr.Markdown(elem_id="raw-checks")
    with gr.Row():
        run = gr.Button("Generate", variant="primary", elem_id="raw-generate")
        stop = gr.Button("⏹ Stop", variant="stop", interactive=False, elem_id="raw-stop")
        load = gr.Button("Load the inspector's prompt", elem_id="raw-load")
        inspect = gr.Button("Open in the inspector", elem_id="raw-inspect")
        example = gr.Button("Use the example", elem_id="raw-example")
    output = gr.Textbox(label="Continuation", lines=8, interactive=False, elem_id="raw-output")
    figures = gr.Markdown(elem_id="raw-figures")
    show_probs = gr.Checkbox(
        label="Show probabilities",
        info="How sure the model was of each token",
        elem_id="raw-show-probs",
    )
    probs = gr.HTML(elem_id="raw-probs")
    return RawTab(
        control,
        prompt,
        checks,
        run,
        stop,
        load,
        inspect,
        example,
        output,
        figures,
        show_probs,
        gr.State([]),
        probs,
        no_bos,
    )


def wire_raw(tab: RawTab, controls: Controls, playground: Playground) -> list:
    """Wire the tab; returns the event that ends a run (after it streams a continuation)."""

    @user_errors
    def on_raw(data: dict) -> Iterator[tuple]:
        control = data[tab.control]
        text = None
        try:
            values, stop, fresh = controls.read(data)
            params = playground.params(values, stop, new_seed=fresh)
            prompt = data[tab.prompt] or ""
            delivery = playground.raw_delivery(prompt, data[tab.no_bos])
            for reply in throttle(playground.complete(prompt, params, control, delivery)):
                line = display.escape(reply.line)
                if why := display.ended_at_once(reply.text, reply.figures):
                    line += f"\n\n⚠️ {display.escape(why)}"
                tokens = reply.tokens or []
                probs = probabilities(playground, tokens, data[tab.show_probs])
                text = reply.text
                yield reply.text, line, gr.update(interactive=reply.figures is None), tokens, probs
        except EngineError as error:
            if text is None:
                raise  # nothing arrived: the toast says why
            # A failure mid-reply (a server gone, say): keep what arrived and say what happened.
            yield text, display.escape(f"⚠️ {error}"), gr.update(interactive=False), [], ""
        finally:
            control.end()

    run = run_with_stop(
        tab.run.click,
        on_raw,
        {tab.prompt, tab.no_bos, tab.control, tab.show_probs, *controls.inputs},
        [tab.output, tab.figures, tab.stop, tab.tokens, tab.probs],
        playground,
        tab.control,
        tab.stop,
    )
    wire_stop(tab.stop, tab.control)
    tab.example.click(lambda: EXAMPLE_PROMPT, None, tab.prompt, **PRIVATE)
    gr.on(
        [tab.prompt.change, tab.no_bos.change],
        playground.raw_checks,
        [tab.prompt, tab.no_bos],
        tab.checks,
        show_progress="hidden",
        **PRIVATE,
    )
    tab.show_probs.change(
        lambda tokens, show: probabilities(playground, tokens, show),
        [tab.tokens, tab.show_probs],
        tab.probs,
        **PRIVATE,
    )
    return [run]
