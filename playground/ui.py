"""The Gradio Blocks UI, built around an injected engine: `build_demo(engine, settings)`.

Owns: the components of the Chat, Raw prompt, Template inspector and Model tabs, the shared
sampling controls, the event handlers (`on_<event>`), the named API endpoints (/chat, /complete,
/render), the engine concurrency group and the queue. It is the only module that imports gradio.
Per-visitor state lives in gr.State and component values; the engine is shared and stateless.
Does not own: prompt rules (`chat_format`, `inspection`), generation (`engine`), markup
(`display`), or reading settings (`settings`).
"""

from __future__ import annotations

import inspect
import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from functools import wraps
from pathlib import Path
from typing import Any

import gradio as gr

from playground import display
from playground.chat_format import (
    SYSTEM_POLICIES,
    Budget,
    ChatFormatError,
    fit_budget,
    parse_conversation,
    parse_prompt,
)
from playground.engine import Engine, EngineError, GenerationResult
from playground.inspection import double_bos_note, export_code, inspect_messages
from playground.sampling import RANDOM_SEED, ParamError, SamplingParams
from playground.settings import Settings

log = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
ENGINE_GROUP = "engine"  # every event that generates: one generation at a time, app-wide
SAMPLING_NAMES = ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed")
USER_ERRORS = (ChatFormatError, EngineError, ParamError)
UPDATE_INTERVAL_S = 0.1

CSS = """
.prompt { white-space: pre-wrap; word-break: break-word; font-size: 0.9em; }
.prompt .ctl { background: #fde68a; color: #7c2d12; border-radius: 3px; padding: 0 2px; }
.prompt .nl { color: #9ca3af; }
.meter progress { width: 12em; vertical-align: middle; }
"""


def user_errors(fn: Callable) -> Callable:
    """Expected errors become gr.Error with their message; anything else a short message
    (the traceback goes to the server log, never to the visitor)."""

    def translate(error: Exception) -> gr.Error:
        if isinstance(error, gr.Error):
            return error
        if isinstance(error, USER_ERRORS):
            return gr.Error(str(error))
        log.exception("unexpected error in %s", fn.__name__)
        return gr.Error("Something went wrong on the server; please try again.")

    if inspect.isgeneratorfunction(fn):

        @wraps(fn)
        def stream(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except Exception as error:
                raise translate(error) from None

        return stream

    @wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            raise translate(error) from None

    return call


def throttle(items: Iterator[Any], interval_s: float = UPDATE_INTERVAL_S) -> Iterator[Any]:
    """Pass on at most one item per interval, and always the last: a fast engine must not
    flood the browser with re-renders of a growing reply."""
    last_sent = 0.0
    pending = _NOTHING = object()
    for item in items:
        pending = item
        now = time.monotonic()
        if now - last_sent >= interval_s:
            last_sent = now
            pending = _NOTHING
            yield item
    if pending is not _NOTHING:
        yield pending


def with_system(system: str | None, history: list[dict[str, str]]) -> list[dict[str, str]]:
    """The conversation the chat tab sends: its system prompt (if any) first, then the history."""
    if system and system.strip():
        return [{"role": "system", "content": system}, *history]
    return list(history)


def without_reply(messages: list[dict], figs: list) -> tuple[list[dict], list]:
    """The history without its trailing reply (for Regenerate and Undo)."""
    while messages and messages[-1]["role"] == "assistant":
        messages, figs = messages[:-1], figs[:-1]
    return messages, figs


def load_examples(folder: Path = EXAMPLES_DIR) -> dict[str, list[dict[str, str]]]:
    """Example conversations, by title: each file is {title, messages} or a list of messages."""
    examples = {}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        title = data.get("title", path.stem) if isinstance(data, dict) else path.stem
        examples[title] = parse_conversation(data)
    return examples


def build_demo(engine: Engine, settings: Settings, notice: str | None = None) -> gr.Blocks:
    """The whole playground around `engine`; `notice` is shown as a banner (model fallback)."""
    tokenizer = engine.tokenizer
    ranges = settings.ranges
    examples = load_examples()

    def check_text(text: str, what: str) -> str:
        if not isinstance(text, str):
            raise ParamError(f"{what} must be text.")
        limit = settings.max_input_chars
        if len(text) > limit:
            raise ParamError(f"{what} has {len(text)} characters; the limit is {limit}.")
        return text

    def params_from(*values: Any, stop: str = "") -> SamplingParams:
        named = dict(zip(SAMPLING_NAMES, values, strict=True))
        stops = [s for s in (stop or "").splitlines() if s]
        return SamplingParams.checked(dict(ranges), **named, stop=stops)

    def params_of_request(*values: Any) -> SamplingParams:
        """The API's values: anything the engine accepts. An empty seed or -1 draws one, and
        the caller is told which (a gr.Info, which gradio_client receives as a log)."""
        named = dict(zip(SAMPLING_NAMES, values, strict=True))
        if named["seed"] is None:
            named["seed"] = RANDOM_SEED
        params, drawn = SamplingParams.from_request(dict(ranges), engine.context_size, **named)
        if drawn is not None:
            gr.Info(f"Random seed drawn: {drawn}")
        return params

    def chat_budget(
        history: list[dict[str, str]], system: str, policy: str, prefill: str, max_new: int
    ) -> Budget:
        """What the chat tab sends: the same call the inspector's "Use the current chat" uses."""
        return fit_budget(
            with_system(system, history),
            count_tokens=tokenizer.count,
            context_size=engine.context_size,
            max_new_tokens=max_new,
            template=tokenizer.chat_template,
            system_policy=policy,
            prefill=prefill,
            fold_separator=settings.fold_separator,
        )

    def stream_text(
        prompt: str, params: SamplingParams, start: str = "", stop: dict | None = None
    ) -> Iterator[tuple[str, GenerationResult | None]]:
        """Yield (text so far, None) while generating, then (text, result).

        `stop` is the visitor's stop flag ({"stop": bool} in gr.State, shared by reference with
        the Stop button's handler): once set, the engine is cancelled within a token and the
        stream ends normally, with its figures.
        """
        generation = engine.generate(prompt, params)
        text = start
        try:
            for chunk in generation:
                if stop and stop["stop"]:
                    generation.cancel()
                text += chunk
                yield text, None
        finally:
            generation.cancel()  # a closed page or a cancelled job: end the native loop now
        yield text, generation.result

    def stream_reply(
        history: list[dict[str, str]],
        system: str,
        policy: str,
        prefill: str,
        params: SamplingParams,
        stop: dict | None = None,
    ) -> Iterator[tuple[str, GenerationResult | None, Budget]]:
        """Yield (reply so far, result at the end, budget) for the chat tab and /chat."""
        check_text(system, "The system prompt")
        check_text(prefill, "The prefill")
        budget = chat_budget(history, system, policy, prefill, params.max_new_tokens)
        for reply, result in stream_text(budget.rendered.text, params, prefill, stop):
            yield reply, result, budget

    with gr.Blocks(title="Gemma-2 OpenVINO Playground") as demo:
        history = gr.State([])  # this visitor's messages, {"role", "content"}
        figures = gr.State([])  # per message: its figures line (replies) or None
        # This visitor's Stop flags and whether a reply is under way (shared by reference
        # between the handlers of one session; each session gets its own copy).
        chat_control = gr.State({"stop": False, "busy": False})
        raw_control = gr.State({"stop": False, "busy": False})

        gr.Markdown(
            "# Gemma-2 OpenVINO Playground\n"
            "Chat with Gemma-2-9b-it on a CPU (OpenVINO int4), send raw prompts, and see "
            "exactly how its chat format works."
        )
        gr.Markdown(
            f"⚠️ {display.escape(notice)}" if notice else "", visible=bool(notice), elem_id="banner"
        )

        with gr.Sidebar(label="Sampling", open=True):
            preset = gr.Dropdown(
                ["Custom", *settings.presets], value="Custom", label="Preset", elem_id="preset"
            )
            sliders = {
                name: gr.Slider(
                    ranges[name].low,
                    ranges[name].high,
                    value=ranges[name].default,
                    step=ranges[name].step,
                    label=name,
                    elem_id=f"slider-{name}",
                )
                for name in SAMPLING_NAMES
                if name != "seed"
            }
            with gr.Row():
                sliders["seed"] = gr.Number(
                    value=ranges["seed"].default, precision=0, label="seed", elem_id="seed"
                )
                dice = gr.Button("Random seed", scale=0, min_width=90, elem_id="dice")
            stop_box = gr.Textbox(
                label="Stop strings (one per line)", lines=2, elem_id="stop-strings"
            )
        sampling = [sliders[name] for name in SAMPLING_NAMES]

        with gr.Tabs() as tabs:
            with gr.Tab("Chat", id="chat"):
                with gr.Accordion("System prompt and reply start", open=False):
                    system_box = gr.Textbox(label="System prompt", lines=2, elem_id="system")
                    policy_box = gr.Radio(
                        list(SYSTEM_POLICIES),
                        value="fold",
                        label="System policy (Gemma-2 has no system role)",
                        info="fold: put it before the first user message · error: refuse, as "
                        "the official template does · drop: leave it out",
                        elem_id="policy",
                    )
                    prefill_box = gr.Textbox(label="Start the reply with", elem_id="prefill")
                chatbot = gr.Chatbot(
                    label="Gemma-2", height=460, elem_id="chatbot", sanitize_html=True
                )
                meter = gr.HTML(display.context_meter(0, engine.context_size), elem_id="meter")
                chat_notice = gr.Markdown(elem_id="chat-notice")
                with gr.Row():
                    message_box = gr.Textbox(
                        placeholder="Message Gemma-2…",
                        show_label=False,
                        scale=5,
                        elem_id="message",
                        max_length=settings.max_input_chars,
                    )
                    send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                with gr.Row():
                    stop_chat = gr.Button("Stop", variant="stop", elem_id="stop")
                    regenerate = gr.Button("Regenerate", elem_id="regenerate")
                    undo = gr.Button("Undo", elem_id="undo")
                    clear = gr.Button("Clear", elem_id="clear")
                example_box = gr.Dropdown(
                    list(examples), value=None, label="Examples", elem_id="examples"
                )

            with gr.Tab("Raw prompt", id="raw"):
                gr.Markdown(
                    "Text sent as is: no chat template. One `<bos>` is added unless it starts "
                    "with one."
                )
                raw_box = gr.Textbox(label="Prompt", lines=8, elem_id="raw-prompt")
                with gr.Row():
                    raw_run = gr.Button("Generate", variant="primary", elem_id="raw-generate")
                    raw_stop = gr.Button("Stop", variant="stop", elem_id="raw-stop")
                    raw_load = gr.Button("Load the inspector's prompt", elem_id="raw-load")
                    raw_inspect = gr.Button("Open in the inspector", elem_id="raw-inspect")
                raw_out = gr.Textbox(
                    label="Continuation", lines=8, interactive=False, elem_id="raw-output"
                )
                raw_figures = gr.Markdown(elem_id="raw-figures")

            with gr.Tab("Template inspector", id="inspector") as inspector_tab:
                with gr.Row():
                    with gr.Column():
                        conversation_box = gr.Code(
                            json.dumps(
                                [{"role": "user", "content": "Hello!"}],
                                indent=2,
                                ensure_ascii=False,
                            ),
                            language="json",
                            label="Conversation (JSON list of {role, content})",
                            elem_id="conversation",
                        )
                        rows_box = gr.Dataframe(
                            [["user", "Hello!"]],
                            headers=["role", "content"],
                            datatype=["str", "str"],
                            type="array",
                            interactive=True,
                            label="…or as rows (role: user, assistant or system)",
                            elem_id="rows",
                        )
                        with gr.Row():
                            gen_prompt_box = gr.Checkbox(
                                True, label="Add generation prompt", elem_id="gen-prompt"
                            )
                            inspect_policy = gr.Radio(
                                list(SYSTEM_POLICIES), value="fold", label="System policy"
                            )
                        inspect_prefill = gr.Textbox(label="Start the reply with")
                        with gr.Row():
                            use_chat = gr.Button("Use the current chat", elem_id="use-chat")
                            to_raw = gr.Button("Send to raw prompt", elem_id="to-raw")
                    with gr.Column():
                        checks = gr.Markdown(elem_id="checks")
                        counts = gr.Markdown(elem_id="counts")
                        marked = gr.HTML(elem_id="marked-prompt")
                        prompt_text = gr.Textbox(
                            label="Exact prompt text",
                            lines=4,
                            interactive=False,
                            buttons=["copy"],
                            elem_id="prompt-text",
                        )
                with gr.Accordion("Tokens", open=True):
                    token_table = gr.Dataframe(
                        headers=["#", "id", "text", "special"],
                        datatype=["number", "number", "str", "str"],
                        interactive=False,
                        elem_id="tokens",
                    )
                with gr.Accordion("The double-BOS trap", open=False):
                    bos_note = gr.Markdown(elem_id="bos-note")
                with gr.Accordion("Code export", open=False):
                    code_genai = gr.Code(language="python", label="openvino_genai")
                    code_optimum = gr.Code(language="python", label="optimum-intel")

            with gr.Tab("Model", id="model"):
                info = engine.info
                gr.Markdown(
                    "\n".join(
                        [
                            f"- **Model:** `{display.escape(info.model)}`",
                            f"- **Engine:** {info.kind}",
                            f"- **Device:** {display.escape(info.device)}",
                            f"- **OpenVINO:** {display.escape(info.openvino_version)}",
                            f"- **Load time:** {info.load_s:.2f} s",
                            "- **Compiled-model cache:** "
                            + ("used" if info.cache_used else "empty at start (now filled)"),
                            f"- **Context size:** {engine.context_size} tokens",
                        ]
                        + ([f"- **Note:** {display.escape(notice)}"] if notice else [])
                    ),
                    elem_id="model-info",
                )

        # ---- sampling controls ------------------------------------------------------------
        @user_errors
        def on_preset(name: str) -> list[Any]:
            values = settings.presets.get(name, {})
            return [
                gr.update(value=values[n]) if n in values else gr.update() for n in SAMPLING_NAMES
            ]

        preset.change(on_preset, preset, sampling, api_visibility="private")

        def on_dice() -> int:
            return random.randint(0, int(ranges["seed"].high))

        dice.click(on_dice, None, sliders["seed"], api_visibility="private")

        # ---- chat ----------------------------------------------------------------------------
        def begin_turn(control: dict) -> None:
            """One reply at a time per visitor: a send while one streams would be overwritten."""
            if control["busy"]:
                raise gr.Error("A reply is still being written (or queued): press Stop first.")
            control.update(stop=False, busy=True)

        @user_errors
        def on_submit(text: str | None, messages: list, figs: list, control: dict):
            if not text or not text.strip():
                raise gr.Error("Type a message first.")
            check_text(text, "The message")
            begin_turn(control)
            if messages and messages[-1]["role"] == "user":  # its reply failed: replace it
                messages, figs = messages[:-1], figs[:-1]
            messages = [*messages, {"role": "user", "content": text}]
            figs = [*figs, None]
            return "", messages, figs, display.chat_display(messages, figs)

        @user_errors
        def on_respond(
            messages: list,
            figs: list,
            control: dict,
            system: str | None,
            policy: str,
            prefill: str | None,
            *values: Any,
        ) -> Iterator[tuple]:
            try:
                params = params_from(*values[:-1], stop=values[-1])
                replies = stream_reply(
                    messages, system or "", policy, prefill or "", params, control
                )
                for reply, result, budget in throttle(replies):
                    # Dropped turns and control-token text: the same notes the inspector shows.
                    note = display.notes_markdown([], budget.rendered.warnings, empty="")
                    current = [*messages, {"role": "assistant", "content": reply}]
                    current_figs = [*figs, display.figures_line(result) if result else None]
                    used = budget.prompt_tokens + (result.new_tokens if result else 0)
                    yield (
                        display.chat_display(current, current_figs),
                        current,
                        current_figs,
                        display.context_meter(used, engine.context_size),
                        note,
                    )
            finally:
                control["busy"] = False

        respond_inputs = [
            history,
            figures,
            chat_control,
            system_box,
            policy_box,
            prefill_box,
            *sampling,
            stop_box,
        ]
        respond_outputs = [chatbot, history, figures, meter, chat_notice]
        submit_outputs = [message_box, history, figures, chatbot]

        def respond_after(event: Any) -> None:
            # .success: a message refused by on_submit must not trigger a reply.
            event.success(
                on_respond,
                respond_inputs,
                respond_outputs,
                concurrency_id=ENGINE_GROUP,
                concurrency_limit=1,
                api_visibility="private",
            )

        for trigger in (message_box.submit, send.click):
            respond_after(
                trigger(on_submit, [message_box, history, figures, chat_control], submit_outputs,
                        api_visibility="private")
            )  # fmt: skip

        @user_errors
        def on_regenerate(messages: list, figs: list, control: dict):
            messages, figs = without_reply(messages, figs)
            if not messages:
                raise gr.Error("Nothing to regenerate yet.")
            begin_turn(control)
            return messages, figs, display.chat_display(messages, figs)

        respond_after(
            regenerate.click(
                on_regenerate, [history, figures, chat_control], [history, figures, chatbot],
                api_visibility="private",
            )
        )  # fmt: skip

        @user_errors
        def on_undo(messages: list, figs: list, control: dict):
            if control["busy"]:
                raise gr.Error("A reply is still being written: press Stop first.")
            messages, figs = without_reply(messages, figs)
            text = messages[-1]["content"] if messages else ""
            messages, figs = messages[:-1], figs[:-1]
            return text, messages, figs, display.chat_display(messages, figs)

        undo.click(
            on_undo, [history, figures, chat_control], submit_outputs, api_visibility="private"
        )

        @user_errors
        def on_clear(control: dict):
            if control["busy"]:
                raise gr.Error("A reply is still being written: press Stop first.")
            return [], [], [], display.context_meter(0, engine.context_size), ""

        clear.click(
            on_clear,
            chat_control,
            [history, figures, chatbot, meter, chat_notice],
            api_visibility="private",
        )

        def on_stop(control: dict) -> None:
            # Not in the engine group: it runs at once, beside the reply it stops. It also
            # frees a turn whose reply never started (say, refused by a full queue).
            control.update(stop=True, busy=False)

        stop_chat.click(on_stop, chat_control, None, api_visibility="private")
        raw_stop.click(on_stop, raw_control, None, api_visibility="private")

        @user_errors
        def on_example(title: str | None):
            messages = examples.get(title or "", [])
            system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
            rest = messages[1:] if system else messages
            last = rest[-1]["content"] if rest and rest[-1]["role"] == "user" else ""
            rest = rest[:-1] if last else rest
            figs = [None] * len(rest)
            return system, last, rest, figs, display.chat_display(rest, figs)

        example_box.change(
            on_example,
            example_box,
            [system_box, message_box, history, figures, chatbot],
            api_visibility="private",
        )

        # ---- raw prompt ----------------------------------------------------------------------
        def run_complete(
            prompt: str, params: SamplingParams, stop: dict | None = None
        ) -> Iterator[tuple[str, GenerationResult | None]]:
            check_text(prompt, "The prompt")
            if not prompt.strip():
                raise ParamError("The prompt is empty.")
            return stream_text(prompt, params, stop=stop)

        @user_errors
        def on_raw(prompt: str | None, stop: dict, *values):
            params = params_from(*values[:-1], stop=values[-1])
            for text, result in throttle(run_complete(prompt or "", params, stop)):
                yield text, display.escape(display.figures_line(result)) if result else ""

        def on_raw_start(stop: dict) -> None:
            stop["stop"] = False  # before queueing, so a Stop pressed while queued still counts

        raw_run.click(on_raw_start, raw_control, None, api_visibility="private").then(
            on_raw,
            [raw_box, raw_control, *sampling, stop_box],
            [raw_out, raw_figures],
            concurrency_id=ENGINE_GROUP,
            concurrency_limit=1,
            api_visibility="private",
        )

        # ---- template inspector --------------------------------------------------------------
        @user_errors
        def on_inspect(conversation: str, add_gen: bool, policy: str, prefill: str | None, *values):
            try:
                params = params_from(*values[:-1], stop=values[-1])
                messages = parse_conversation(check_text(conversation or "", "The conversation"))
                inspection = inspect_messages(
                    messages,
                    tokenizer,
                    system_policy=policy,
                    add_generation_prompt=bool(add_gen),
                    prefill=prefill or "",
                    context_size=engine.context_size,
                    max_new_tokens=params.max_new_tokens,
                    fold_separator=settings.fold_separator,
                )
            except (ChatFormatError, ParamError) as error:
                empty = ("", "", None, "", "", "")
                return (display.notes_markdown([str(error)], []), "", *empty)
            code = export_code(
                inspection.prompt,
                params,
                model=str(engine.folder),
                ov_config=settings.ov_config,
                end_ids=tokenizer.eos_ids,
            )
            counts_text = (
                f"**{inspection.token_count} tokens**, {inspection.bos_count} `<bos>` at the "
                f"start, {len(inspection.prompt)} characters."
            )
            return (
                display.notes_markdown([], [*inspection.warnings, *inspection.notes]),
                counts_text,
                display.marked_prompt(inspection.prompt),
                inspection.prompt,
                display.token_rows(inspection.tokens),
                display.escape(double_bos_note(inspection, tokenizer)),
                code["openvino_genai"],
                code["optimum"],
            )

        inspect_inputs = [
            conversation_box,
            gen_prompt_box,
            inspect_policy,
            inspect_prefill,
            *sampling,
            stop_box,
        ]
        inspect_outputs = [
            checks,
            counts,
            marked,
            prompt_text,
            token_table,
            bos_note,
            code_genai,
            code_optimum,
        ]
        for trigger in (conversation_box.change, gen_prompt_box.change, inspect_policy.change,
                        inspect_prefill.change, inspector_tab.select, demo.load):  # fmt: skip
            trigger(on_inspect, inspect_inputs, inspect_outputs, api_visibility="private")

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
            return json.dumps(messages, indent=2, ensure_ascii=False)

        conversation_box.change(
            on_conversation_change, conversation_box, rows_box, api_visibility="private"
        )
        rows_box.input(on_rows_input, rows_box, conversation_box, api_visibility="private")

        @user_errors
        def on_use_chat(messages: list, system: str | None, policy: str, prefill: str | None):
            conversation = with_system(system, messages)
            # A chat that ends with a reply is shown as it stands (no new model turn opened);
            # one that ends with the visitor's message is exactly the prompt the chat sends.
            add_gen = not conversation or conversation[-1]["role"] != "assistant"
            as_json = json.dumps(conversation, indent=2, ensure_ascii=False)
            return as_json, add_gen, policy, prefill or ""

        use_chat.click(
            on_use_chat,
            [history, system_box, policy_box, prefill_box],
            [conversation_box, gen_prompt_box, inspect_policy, inspect_prefill],
            api_visibility="private",
        )

        def on_send_to_raw(prompt: str) -> tuple[str, gr.Tabs]:
            return prompt, gr.Tabs(selected="raw")

        def on_load_inspector_prompt(prompt: str) -> str:
            return prompt

        to_raw.click(on_send_to_raw, prompt_text, [raw_box, tabs], api_visibility="private")
        raw_load.click(on_load_inspector_prompt, prompt_text, raw_box, api_visibility="private")

        @user_errors
        def on_raw_to_inspector(prompt: str | None):
            parsed = parse_prompt(prompt or "")
            return (
                json.dumps(parsed.messages, indent=2, ensure_ascii=False),
                parsed.add_generation_prompt,
                parsed.prefill,
                gr.Tabs(selected="inspector"),
            )

        raw_inspect.click(
            on_raw_to_inspector,
            raw_box,
            [conversation_box, gen_prompt_box, inspect_prefill, tabs],
            api_visibility="private",
        )

        # ---- named API endpoints -------------------------------------------------------------
        defaults = settings.defaults()

        @user_errors
        def complete(
            prompt: str,
            max_new_tokens: int = int(defaults["max_new_tokens"]),
            temperature: float = defaults["temperature"],
            top_p: float = defaults["top_p"],
            top_k: int = int(defaults["top_k"]),
            repetition_penalty: float = defaults["repetition_penalty"],
            seed: int | None = int(defaults["seed"]),
        ) -> Iterator[str]:
            """Stream the continuation of raw text (no template; one <bos> is added)."""
            params = params_of_request(
                max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed
            )
            for text, _ in throttle(run_complete(prompt, params)):
                yield text

        @user_errors
        def chat(
            message: str,
            history: str = "[]",
            system_prompt: str = "",
            system_policy: str = "fold",
            prefill: str = "",
            max_new_tokens: int = int(defaults["max_new_tokens"]),
            temperature: float = defaults["temperature"],
            top_p: float = defaults["top_p"],
            top_k: int = int(defaults["top_k"]),
            repetition_penalty: float = defaults["repetition_penalty"],
            seed: int | None = int(defaults["seed"]),
        ) -> Iterator[str]:
            """Stream the reply to `message` after `history` (JSON list of {role, content})."""
            params = params_of_request(
                max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed
            )
            if not isinstance(message, str) or not message.strip():
                raise ParamError("The message is empty.")
            messages = parse_conversation(check_text(history or "[]", "The history"))
            messages.append({"role": "user", "content": check_text(message, "The message")})
            replies = stream_reply(messages, system_prompt, system_policy, prefill, params)
            for reply, _, _ in throttle(replies):
                yield reply

        @user_errors
        def render(
            conversation: str, system_policy: str = "fold", add_generation_prompt: bool = True
        ) -> tuple[str, str]:
            """The exact prompt for a conversation (JSON), and its token view as JSON."""
            messages = parse_conversation(check_text(conversation, "The conversation"))
            inspection = inspect_messages(
                messages,
                tokenizer,
                system_policy=system_policy,
                add_generation_prompt=bool(add_generation_prompt),
                fold_separator=settings.fold_separator,
            )
            return inspection.prompt, json.dumps(inspection.as_json(), ensure_ascii=False)

        gr.api(complete, api_name="complete", concurrency_id=ENGINE_GROUP, concurrency_limit=1)
        gr.api(chat, api_name="chat", concurrency_id=ENGINE_GROUP, concurrency_limit=1)
        gr.api(render, api_name="render")

    demo.queue(max_size=settings.queue_size, default_concurrency_limit=4)
    return demo


def launch_options(settings: Settings) -> dict[str, Any]:
    """Hardened launch settings for a public Space."""
    return {
        "max_file_size": "1mb",  # nothing here takes uploads; refuse big bodies anyway
        "enable_monitoring": False,
        "show_error": True,  # shows gr.Error messages; tracebacks never leave the server
        "ssr_mode": False,
        "css": CSS,
        "theme": gr.themes.Soft(),
    }
