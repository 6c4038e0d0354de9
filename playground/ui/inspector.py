"""The Template inspector tab: a conversation, the exact prompt it becomes, and its tokens.

Owns: the `InspectorTab` components (the conversation as JSON and as editable rows, kept in step
without loops, and the line that says what "Add generation prompt" does), and the handler that
shows the prompt, its notes, tokens, the double-BOS note, why a system message is folded
(`chat_format.fold_details`) and the code export. The prompt comes from `session.fit_prompt`,
the very call the chat makes. "Renderers side by side" runs the same conversation and options
through the other libraries' renderers on a click (`renderers.compare_renderers`).
Does not own: rendering or budgeting (`session`, `chat_format`), the renderers (`renderers`),
markup (`display`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import gradio as gr

from playground import display
from playground.chat_format import (
    DEFAULT_SYSTEM_POLICY,
    START_OF_TURN,
    SYSTEM_POLICIES,
    ChatFormatError,
    RenderOptions,
    fold_details,
    parse_conversation,
)
from playground.errors import UserError
from playground.inspection import double_bos_note
from playground.renderers import compare_renderers
from playground.session import Playground
from playground.ui.common import PRIVATE, user_errors
from playground.ui.controls import Controls

START = [{"role": "user", "content": "Hello!"}]
# What the checkbox does, in a line under it (issue 33: "Add generation prompt" said nothing).
GENERATION_PROMPT_NOTE = (
    f"Add generation prompt: end the prompt with {START_OF_TURN}model and a new line, the cue "
    "for the model to write its reply (the chat always sends it). Off: the prompt ends after "
    "the last message, as a stored conversation does."
)


RENDERERS_NOTE = (
    "The conversation above, with its options, through every chat-template renderer that runs "
    "here: transformers' apply_chat_template on the model's Jinja template, OpenVINO GenAI's, "
    "llama-cpp-python's on the GGUF's template and llama.cpp's built-in formatter (what its "
    "server uses without --jinja). Each is compared with the playground's own rendering, and "
    "each difference is named; a renderer that can't run here says why."
)


@dataclass
class InspectorTab:
    tab: gr.Tab
    conversation: gr.Code
    rows: gr.Dataframe
    add_row: gr.Button
    generation_prompt: gr.Checkbox
    generation_prompt_note: gr.Markdown
    system_policy: gr.Radio
    prefill: gr.Textbox
    use_chat: gr.Button
    to_raw: gr.Button
    checks: gr.Markdown
    counts: gr.Markdown
    marked: gr.HTML
    prompt: gr.Textbox
    tokens: gr.Dataframe
    token_note: gr.Markdown
    bos_note: gr.Markdown
    code_genai: gr.Code
    code_optimum: gr.Code
    code_curl: gr.Code
    code_openai: gr.Code
    renderers_run: gr.Button
    renderers: gr.HTML

    @property
    def outputs(self) -> list[gr.components.Component]:
        return [
            self.checks,
            self.counts,
            self.marked,
            self.prompt,
            self.tokens,
            self.bos_note,
            self.code_genai,
            self.code_optimum,
            self.code_curl,
            self.code_openai,
        ]


def as_json(messages: list[dict[str, str]]) -> str:
    return json.dumps(messages, indent=2, ensure_ascii=False)


def build_inspector(tab: gr.Tab, playground: Playground) -> InspectorTab:
    with gr.Row():
        with gr.Column():
            conversation = gr.Code(
                as_json(START),
                language="json",
                elem_id="conversation",
                label="Conversation (JSON list of {role, content})",
            )
            rows = gr.Dataframe(
                [["user", "Hello!"]],
                headers=["role", "content"],
                datatype=["str", "str"],
                type="array",
                interactive=True,
                label="…or as rows (role: user, assistant or system)",
                elem_id="rows",
            )
            add_row = gr.Button("Add message", size="sm", elem_id="add-row")
            with gr.Row():
                generation_prompt = gr.Checkbox(
                    True, label="Add generation prompt", elem_id="gen-prompt"
                )
                system_policy = gr.Radio(
                    list(SYSTEM_POLICIES), value=DEFAULT_SYSTEM_POLICY, label="System policy"
                )
            generation_prompt_note = gr.Markdown(
                display.escape(GENERATION_PROMPT_NOTE), elem_id="gen-prompt-note"
            )
            prefill = gr.Textbox(label="Start the reply with")
            with gr.Row():
                use_chat = gr.Button("Use the current chat", elem_id="use-chat")
                to_raw = gr.Button("Send to raw prompt", elem_id="to-raw")
        with gr.Column():
            checks = gr.Markdown(elem_id="checks")
            counts = gr.Markdown(elem_id="counts")
            marked = gr.HTML(elem_id="marked-prompt")
            prompt = gr.Textbox(
                label="Exact prompt text",
                lines=4,
                interactive=False,
                buttons=["copy"],
                elem_id="prompt-text",
            )
    tokens, token_note, bos_note, codes = _build_details(playground)
    with gr.Accordion("Renderers side by side", open=False):
        gr.Markdown(display.escape(RENDERERS_NOTE), elem_id="renderers-note")
        renderers_run = gr.Button("Run every renderer", size="sm", elem_id="renderers-run")
        renderers = gr.HTML(elem_id="renderers")
    return InspectorTab(
        tab,
        conversation,
        rows,
        add_row,
        generation_prompt,
        generation_prompt_note,
        system_policy,
        prefill,
        use_chat,
        to_raw,
        checks,
        counts,
        marked,
        prompt,
        tokens,
        token_note,
        bos_note,
        *codes,
        renderers_run,
        renderers,
    )


def _build_details(playground: Playground) -> tuple:
    """The token table with its note, the double-BOS note and the code export (genai,
    optimum, and on the remote engine curl and the OpenAI client)."""
    with gr.Accordion("Tokens", open=True):
        token_note = gr.Markdown(
            "\n\n".join(
                filter(None, [display.escape(playground.token_note()), display.TOKEN_LEGEND])
            ),
            elem_id="token-note",
        )
        tokens = gr.Dataframe(
            headers=["#", "id", "text", "special"],
            datatype=["number", "number", "str", "str"],
            interactive=False,
            elem_id="tokens",
        )
    with gr.Accordion("The double-BOS trap", open=False):
        bos_note = gr.Markdown(elem_id="bos-note")
    # The fold's note under a prompt is one line (issue 33); the why and the peers are here.
    with gr.Accordion("Why a system message is folded", open=False):
        gr.Markdown(
            display.escape(fold_details(playground.settings.fold_separator)), elem_id="fold-details"
        )
    with gr.Accordion("Code export", open=False):
        # The engine's own code beside every engine's (the remote engine's request, to run
        # without the app): shown where the engine has some.
        own = bool(playground.engine.extra_code("", playground.params({})))
        code_curl = gr.Code(language="shell", label="curl: the server's request", visible=own)
        code_openai = gr.Code(
            language="python", label="OpenAI client: the server's request", visible=own
        )
        code_genai = gr.Code(language="python", label="openvino_genai")
        code_optimum = gr.Code(language="python", label="optimum-intel")
    return tokens, token_note, bos_note, (code_genai, code_optimum, code_curl, code_openai)


def read_inputs(
    playground: Playground, tab: InspectorTab, data: dict
) -> tuple[list[dict[str, str]], RenderOptions]:
    """The inspector's conversation and options, checked like typed input."""
    messages = parse_conversation(
        playground.check_text(data[tab.conversation] or "", "The conversation")
    )
    options = RenderOptions(
        system_policy=data[tab.system_policy],
        prefill=data[tab.prefill] or "",
        add_generation_prompt=bool(data[tab.generation_prompt]),
        fold_separator=playground.settings.fold_separator,
    )
    return messages, options


def inspect(playground: Playground, tab: InspectorTab, controls: Controls, data: dict) -> tuple:
    """The inspector's outputs for its current inputs: a bad conversation is a note, not an
    error, since it is often half-typed."""
    try:
        values, stop, _ = controls.read(data)
        params = playground.params(values, stop)
        messages, options = read_inputs(playground, tab, data)
        inspection = playground.inspect(messages, options, params.max_new_tokens)
    except UserError as error:
        return display.notes_markdown([str(error)], []), "", "", "", None, "", "", "", "", ""
    code = playground.export(inspection.prompt, params)
    counts = (
        f"**{inspection.token_count} tokens**, {inspection.bos_count} `<bos>` at the "
        f"start, {len(inspection.prompt)} characters."
    )
    return (
        display.notes_markdown([], inspection.warnings),
        counts,
        display.marked_prompt(inspection.prompt),
        inspection.prompt,
        display.token_rows(inspection.tokens),
        display.escape(double_bos_note(inspection, playground.engine.tokenizer)),
        code["openvino_genai"],
        code["optimum"],
        code.get("curl", ""),
        code.get("openai", ""),
    )


def run_renderers(playground: Playground, tab: InspectorTab, data: dict) -> str:
    """The renderers view for the inspector's conversation and options (the whole conversation,
    not fitted to the context); a conversation that can't be rendered is one escaped line."""
    try:
        messages, options = read_inputs(playground, tab, data)
        engine = playground.engine
        found = compare_renderers(messages, options, engine.folder, engine.tokenizer)
    except UserError as error:
        return f"<p>{display.escape(str(error))}</p>"
    return display.renderers_view(found)


def wire_inspector(
    tab: InspectorTab, controls: Controls, playground: Playground, demo: gr.Blocks
) -> None:
    @user_errors
    def on_inspect(data: dict) -> tuple:
        return inspect(playground, tab, controls, data)

    inputs = {tab.conversation, tab.generation_prompt, tab.system_policy, tab.prefill}
    inputs |= set(controls.inputs)
    for trigger in (
        tab.conversation.change,
        tab.generation_prompt.change,
        tab.system_policy.change,
        tab.prefill.change,
        tab.tab.select,
        demo.load,
    ):
        trigger(on_inspect, inputs, tab.outputs, **PRIVATE)

    # The JSON is the conversation; the rows are a second view of it. Only a visitor's own
    # edit of the rows (.input) writes the JSON, so the two never update each other in a loop.
    def on_conversation_change(conversation: str | None) -> Any:
        try:
            messages = parse_conversation(conversation or "")
        except ChatFormatError:
            return gr.update()  # keep the rows while the JSON is being typed
        return [[m["role"], m["content"]] for m in messages]

    def on_rows_input(rows: list[list[str]] | None) -> str:
        messages = [
            {"role": str(role).strip(), "content": str(content)}
            for role, content in (rows or [])
            if str(role).strip() or str(content).strip()
        ]
        return as_json(messages)

    def on_add_row(conversation: str | None) -> str:
        try:
            messages = parse_conversation(conversation or "[]")
        except ChatFormatError:
            return gr.update()
        role = "assistant" if messages and messages[-1]["role"] == "user" else "user"
        return as_json([*messages, {"role": role, "content": ""}])

    @user_errors
    def on_renderers(data: dict) -> str:
        return run_renderers(playground, tab, data)

    renderer_inputs = {tab.conversation, tab.generation_prompt, tab.system_policy, tab.prefill}
    tab.renderers_run.click(on_renderers, renderer_inputs, tab.renderers, **PRIVATE)
    tab.conversation.change(on_conversation_change, tab.conversation, tab.rows, **PRIVATE)
    tab.rows.input(on_rows_input, tab.rows, tab.conversation, **PRIVATE)
    tab.add_row.click(on_add_row, tab.conversation, tab.conversation, **PRIVATE)
