"""The Chat tab: the conversation, its buttons and the streaming reply.

Owns: the `ChatTab` components and their handlers, and the page's skip link to the message box.
A send is checked first, all that its reply would refuse included (`Playground.check_turn`), by
an event with no outputs (a refusal then marks nothing as failed: the history stays, the message
stays in its box and the reason shows beside it), and only then accepted and answered. What a
turn does is `session`'s. The Examples list is `Playground.example_choices`.
The visitor's own messages are shown as typed (`display.literal`), the chatbot's edit box
included: `LITERAL_EDITS` keeps its text out of the chatbot's own Markdown.
Does not own: turn logic or prompts (`session`), markup (`display`), the sampling sidebar.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import gradio as gr

from playground import display, session
from playground.chat_format import DEFAULT_SYSTEM_POLICY, SYSTEM_POLICIES, RenderOptions
from playground.errors import UserError
from playground.session import Control, Playground
from playground.ui.common import (
    PRIVATE,
    engine_events,
    probabilities,
    refuse,
    user_errors,
    write_download,
)
from playground.ui.controls import Controls

# The edit pencil: Gradio 6's Chatbot fills its edit box with the message as sent (for a visitor's
# message, `display.literal`'s references) and, on ✓, shows the box's text at once, rendered as
# Markdown and HTML, before the server answers (`onedit` in its Index.svelte): an `<img>` typed
# there was made and fetched. So the box shows the text as typed, and a click on ✓ (or ✗: the box
# is then thrown away) first turns it into references, in a capturing listener, which runs before
# the button's own handler reads the box. Stricter than `literal` (every ASCII mark, whitespace
# but lone spaces): what the server gets back, `from_literal` undoes all the same.
LITERAL_EDITS = """() => {
  const space = (c) => c !== undefined && /\\s/u.test(c);
  const literal = (text) => Array.from(text).map((c, i, all) => {
    const lone = c === ' ' && i > 0 && i < all.length - 1 && !space(all[i - 1])
      && !space(all[i + 1]);
    const code = c.codePointAt(0);
    const other = code > 0x7f && (!space(c) || code < 0xa0);  // C1: see display._C1
    return /[A-Za-z0-9]/.test(c) || lone || other ? c : `&#${code};`;
  }).join('');
  const typed = (shown) => shown.replace(/&#(\\d{1,7});/g,
    (ref, n) => (Number(n) <= 0x10ffff ? String.fromCodePoint(Number(n)) : ref));
  const boxes = () => document.querySelectorAll('#chatbot textarea.edit-textarea');
  const put = (box, text) => {
    box.value = text;
    box.dispatchEvent(new Event('input', {bubbles: true}));  // the chatbot's bound value
  };
  new MutationObserver(() => {
    for (const box of boxes()) {
      if (box.dataset.typed) continue;
      box.dataset.typed = 'yes';
      put(box, typed(box.value));
    }
  }).observe(document.body, {childList: true, subtree: true});
  document.addEventListener('click', (event) => {
    if (!event.target.closest?.('#chatbot .message-buttons button')) return;
    for (const box of boxes()) put(box, literal(box.value));
  }, true);
}"""
# The first thing a Tab press reaches: the sidebar's 30 or so controls came before the message
# box (34 presses, issue 33). Shown only when focused (WCAG 2.4.1's "skip link"); it opens the
# Chat tab if another is open.
SKIP_LINK = '<a href="#message">Skip to the message box</a>'
TO_MESSAGE = """element.querySelector('a').addEventListener('click', (event) => {
  event.preventDefault();
  const box = () => document.querySelector('#message textarea');
  if (box()?.checkVisibility()) return box().focus();
  document.querySelector('button[role=tab][data-tab-id=chat]')?.click();
  setTimeout(() => box()?.focus(), 100);  // once the tab is drawn
});"""
# A visitor's message keeps its spaces and newlines (`display.literal` sends them as references).
# The skip link's block takes no room, and its link shows only when focused. The message box's
# focus ring is plain to see (the Soft theme's was a faint shadow, issue 33): 3:1 against the
# page and the box at least, as WCAG 1.4.11 asks of a focus indicator; !important, since
# Gradio's own textbox style says `outline: none !important`. The link's transition is off: a
# gr.HTML link transitions (Gradio's prose style), so it slid in from -10000 px, seen in Chromium.
CSS = """
#chatbot [data-testid="user"] .md p { white-space: pre-wrap; }
#skip-link { position: absolute; z-index: 1000; }
#skip-link a { position: absolute; left: 8px; top: 8px; white-space: nowrap; padding: 8px 12px;
  background: #fff; color: #1d4ed8; outline: 3px solid #1d4ed8; transition: none; }
#skip-link a:not(:focus) { left: -10000px; }
#message textarea:focus { outline: 3px solid #1d4ed8 !important; outline-offset: 1px; }
"""


@dataclass
class ChatTab:
    turns: gr.State  # this visitor's turns: {"role", "content"} and a reply's "figures"
    control: gr.State  # this visitor's `session.Control`
    system: gr.Textbox
    system_policy: gr.Radio
    prefill: gr.Textbox
    chatbot: gr.Chatbot
    show_probs: gr.Checkbox
    probs: gr.HTML  # the last reply's tokens, tinted by probability
    meter: gr.HTML
    notice: gr.Markdown
    message: gr.Textbox
    input_note: gr.Markdown
    send: gr.Button
    stop: gr.Button
    regenerate: gr.Button
    undo: gr.Button
    clear: gr.Button
    examples: gr.Dropdown
    download: gr.DownloadButton
    upload: gr.UploadButton


def build_skip_link() -> gr.HTML:
    """The link to the message box, for the top of the page (`SKIP_LINK`)."""
    return gr.HTML(SKIP_LINK, js_on_load=TO_MESSAGE, elem_id="skip-link")


def build_chat(playground: Playground) -> ChatTab:
    turns, control = gr.State([]), gr.State(Control())
    with gr.Accordion("System prompt and reply start", open=False):
        system = gr.Textbox(label="System prompt", lines=2, elem_id="system")
        system_policy = gr.Radio(
            list(SYSTEM_POLICIES),
            value=DEFAULT_SYSTEM_POLICY,
            label="System policy (Gemma-2 has no system role)",
            info="fold: put it before the first user message · error: refuse, as "
            "the official template does · drop: leave it out",
            elem_id="policy",
        )
        prefill = gr.Textbox(label="Start the reply with", elem_id="prefill")
    # The served model's name, never a fixed "Gemma-2": a stand-in's mistakes must not be
    # read as Gemma-2's (issue 33).
    served = display.model_label(playground.engine.info.model if playground.engine.info else "")
    # It grows with the conversation, up to 460 px: at a fixed 460 px the empty chat pushed the
    # message box below the fold, at 1280×900 and more so on a phone (issue 33).
    chatbot = gr.Chatbot(
        label=served,
        height=None,
        min_height=160,
        max_height=460,
        elem_id="chatbot",
        sanitize_html=True,
        editable="user",
    )
    # The message box right under the chat, the figures after it (issue 33, as above).
    with gr.Row(equal_height=True, elem_id="message-row"):
        message = gr.Textbox(
            placeholder=f"Message {served}…",
            label="Message",  # its accessible name; "Textbox" before (issue 33)
            show_label=False,
            scale=5,
            min_width=240,
            elem_id="message",
            max_length=playground.settings.max_input_chars,
        )
        send = gr.Button("Send", variant="primary", scale=1, min_width=80, elem_id="send")
    input_note = gr.Markdown(elem_id="input-note")
    with gr.Row():
        stop = gr.Button("⏹ Stop", variant="stop", interactive=False, elem_id="stop")
        regenerate = gr.Button("Regenerate", elem_id="regenerate")
        undo = gr.Button("Undo", elem_id="undo")
        clear = gr.Button("Clear", elem_id="clear")
    notice = gr.Markdown(elem_id="chat-notice")
    meter = gr.HTML(display.context_meter(0, 0, playground.context_size), elem_id="meter")
    show_probs = gr.Checkbox(
        label="Show probabilities",
        info="How sure the model was of each token of the last reply",
        elem_id="show-probs",
    )
    probs = gr.HTML(elem_id="chat-probs")
    with gr.Row():
        examples = gr.Dropdown(
            playground.example_choices(), value=None, label="Examples", elem_id="examples"
        )
        download = gr.DownloadButton("Download conversation", elem_id="download")
        upload = gr.UploadButton(
            "Load conversation", file_types=[".json"], type="binary", elem_id="upload"
        )
    return ChatTab(
        turns,
        control,
        system,
        system_policy,
        prefill,
        chatbot,
        show_probs,
        probs,
        meter,
        notice,
        message,
        input_note,
        send,
        stop,
        regenerate,
        undo,
        clear,
        examples,
        download,
        upload,
    )


def wire_chat(tab: ChatTab, controls: Controls, playground: Playground, demo: gr.Blocks) -> list:
    """Wire the tab; returns the events that stream a reply (a share link's replay check
    follows them)."""
    demo.load(None, None, None, js=LITERAL_EDITS, **PRIVATE)
    answer, replies = responder(tab, controls, playground), []
    wire_turn_starts(tab, controls, playground, lambda accepted: replies.append(answer(accepted)))
    wire_housekeeping(tab, playground, display.context_meter(0, 0, playground.context_size))
    tab.show_probs.change(
        lambda turns, show: last_reply_probabilities(playground, turns, show),
        [tab.turns, tab.show_probs],
        tab.probs,
        **PRIVATE,
    )
    return replies


def last_reply_probabilities(playground: Playground, turns: list, show: bool) -> str:
    """The probability view of the last reply, once it is done (its tokens come with its end)."""
    return probabilities(playground, turns[-1].get("tokens", []) if turns else [], show)


def responder(tab: ChatTab, controls: Controls, playground: Playground) -> Callable[[Any], Any]:
    """What answers a turn once it is accepted: streams the reply into the chat."""

    @user_errors
    def on_respond(data: dict) -> Iterator[tuple]:
        control, turns = data[tab.control], data[tab.turns]
        if control.outdated():  # cleared while this turn waited in the queue
            control.end()
            yield cleared_outputs()
            return
        control.stream()
        try:
            values, stop, fresh = controls.read(data)
            params = playground.params(values, stop, new_seed=fresh or control.fresh_seed)
            options = render_options(tab, data)
            replies = playground.reply(turns, options, params, control, data[tab.system] or "")
            for reply in session.throttle(replies):
                if control.outdated():
                    # Cleared meanwhile: never write the reply back, and clear once more after
                    # any update of ours that was already on its way.
                    yield cleared_outputs()
                    return
                outputs = respond_outputs(turns, reply, params.max_new_tokens, data[tab.show_probs])
                control.show(outputs[1])
                yield outputs
        except UserError as error:
            note = display.escape(str(error))
            skip = gr.skip()
            yield skip, skip, skip, skip, note, gr.update(interactive=False), skip
        finally:
            control.finish()

    def cleared_outputs() -> tuple:
        meter = display.context_meter(0, 0, playground.context_size)
        return [], [], meter, "", gr.skip(), gr.update(interactive=False), ""

    def respond_outputs(
        turns: list, reply: session.Reply, reserved: int, show_probs: bool
    ) -> tuple:
        budget = reply.budget
        # Dropped turns and control-token text: the same notes the inspector shows.
        note = display.notes_markdown([], budget.rendered.warnings, empty="")
        shown = {"role": "assistant", "content": reply.text}
        if reply.figures:
            shown["figures"] = reply.figures
        if reply.tokens:
            shown["tokens"] = reply.tokens
        current = [*turns, shown]
        meter = display.context_meter(budget.prompt_tokens, reserved, playground.context_size)
        # The note beside the input is left alone: a refused send's reason must stay up.
        stop = gr.update(interactive=reply.figures is None)
        probs = last_reply_probabilities(playground, current, show_probs)
        shown_turns = display.chat_display(current, reply.reading)
        return shown_turns, current, meter, note, gr.skip(), stop, probs

    inputs = {*reply_inputs(tab, controls), tab.show_probs}
    outputs = [tab.chatbot, tab.turns, tab.meter, tab.notice, tab.input_note, tab.stop, tab.probs]

    def answer(accepted: Any) -> Any:
        return accepted.success(on_respond, inputs, outputs, **engine_events(playground), **PRIVATE)

    return answer


def reply_inputs(tab: ChatTab, controls: Controls) -> set:
    """What a reply is made from: the turns, the system prompt, its policy, the prefill and the
    sampling values (`render_options`, `Controls.read`)."""
    return {tab.turns, tab.control, tab.system, tab.system_policy, tab.prefill, *controls.inputs}


def render_options(tab: ChatTab, data: dict) -> RenderOptions:
    """The chat's render options, read from an event's component values."""
    return RenderOptions(data[tab.system_policy], prefill=data[tab.prefill] or "")


def wire_turn_starts(
    tab: ChatTab, controls: Controls, playground: Playground, answer: Callable
) -> None:
    """Send, Regenerate and an edited message: each is checked first, all that the reply would
    refuse included, by an event with no outputs; a refusal shows beside the input (a refused
    message stays in its box, not in the chat), an accepted turn is shown and answered."""

    def gate(trigger: Callable, check: Callable, inputs: list, accept: Callable) -> None:
        # user_errors: anything but a refusal (a tokenizer's fault, say) is the server's.
        checked = trigger(
            user_errors(check), {*inputs, *reply_inputs(tab, controls)}, None, **PRIVATE
        )
        checked.failure(on_refused, tab.control, tab.input_note, **PRIVATE).then(
            display.chat_display, tab.turns, tab.chatbot, show_progress="hidden", **PRIVATE
        )  # an edit refused in the chatbot's own editor is put back as it was
        accepted = checked.success(accept, [*inputs, tab.control], accept_outputs, **PRIVATE)
        answer(accepted)

    accept_outputs = [tab.message, tab.turns, tab.chatbot, tab.input_note, tab.stop]

    def on_refused(control: Control) -> str:
        return display.escape(control.refusal)

    def shown(turns: list, message: Any = None) -> tuple:
        message = gr.skip() if message is None else message
        return message, turns, display.chat_display(turns), "", gr.update(interactive=True)

    def fits(data: dict, turns: list) -> None:
        """Refuse now what the reply would refuse once accepted (`Playground.check_turn`): a
        prompt too long, the system policy "error" with a system prompt, a bad prefill."""
        values, stop, _ = controls.read(data)
        params = playground.params(values, stop)
        playground.check_turn(turns, render_options(tab, data), params, data[tab.system] or "")

    def on_check_send(data: dict) -> None:
        text, control = data[tab.message], data[tab.control]
        with refusals(control, "send"):
            turns = session.submit(data[tab.turns], text)
            playground.check_text(text, "The message")
            fits(data, turns)
            control.begin()

    def on_send(text: str, turns: list, control: Control) -> tuple:
        return shown(session.submit(turns, text), message="")

    def on_check_regenerate(data: dict) -> None:
        control = data[tab.control]
        with refusals(control, "regenerate"):
            fits(data, session.regenerate(data[tab.turns]))
            control.begin(fresh_seed=True)  # a regenerated reply is another draw, not the same one

    def on_regenerate(turns: list, control: Control) -> tuple:
        return shown(session.regenerate(turns))

    def on_check_edit(data: dict, edit: gr.EditData) -> None:
        control = data[tab.control]
        with refusals(control, "edit"):
            index = edit.index if isinstance(edit.index, int) else edit.index[0]
            # The edit box sends `display.literal`'s references (`LITERAL_EDITS`).
            text = display.from_literal(str(edit.value))
            fits(data, session.edit(data[tab.turns], index, text))
            control.begin(edit=(index, text))  # the event data reaches only this first handler

    def on_edit(turns: list, control: Control) -> tuple:
        return shown(session.edit(turns, *control.edit))

    for trigger in (tab.message.submit, tab.send.click):
        gate(trigger, on_check_send, [tab.message, tab.turns], on_send)
    gate(tab.regenerate.click, on_check_regenerate, [tab.turns], on_regenerate)
    gate(tab.chatbot.edit, on_check_edit, [tab.turns], on_edit)


@contextmanager
def refusals(control: Control, where: str) -> Iterator[None]:
    """A user error while checking a turn: keep its reason for the note, stop the chain."""
    try:
        yield
    except UserError as error:
        control.refuse(str(error))
        raise refuse(error, where) from None


def wire_housekeeping(tab: ChatTab, playground: Playground, empty_meter: str) -> None:
    """Stop, Undo, Clear (the button and the chatbot's own trash icon), examples, files."""

    def on_stop(control: Control) -> None:
        # Not in the engine group: it runs at once, beside the reply it stops. It also
        # frees a turn whose reply never started (say, refused by a full queue).
        control.press_stop()

    def on_stopped(control: Control) -> tuple:
        turns = control.stopped_turns()
        if turns is None:
            return gr.skip(), gr.skip()
        return turns, display.chat_display(turns)

    tab.stop.click(on_stop, tab.control, None, show_progress="hidden", **PRIVATE).then(
        on_stopped, tab.control, [tab.turns, tab.chatbot], show_progress="hidden", **PRIVATE
    )

    def on_undo(turns: list, control: Control) -> tuple:
        if control.busy:
            busy = "Press Stop first: a reply is being written."
            return gr.skip(), gr.skip(), gr.skip(), busy, gr.skip()
        text, turns = session.undo(turns)
        return text, turns, display.chat_display(turns), "", ""

    tab.undo.click(
        on_undo,
        [tab.turns, tab.control],
        [tab.message, tab.turns, tab.chatbot, tab.input_note, tab.probs],
        **PRIVATE,
    )

    def on_clear(control: Control) -> tuple:
        control.clear()  # every way of clearing clears the state, streaming or not
        return [], [], empty_meter, "", "", ""

    clear_outputs = [tab.turns, tab.chatbot, tab.meter, tab.notice, tab.input_note, tab.probs]
    tab.clear.click(on_clear, tab.control, clear_outputs, **PRIVATE)
    tab.chatbot.clear(on_clear, tab.control, clear_outputs, **PRIVATE)

    @user_errors
    def on_example(title: str | None) -> tuple:
        system, last, turns = session.apply_example(playground.examples.get(title or "", []))
        return system, last, turns, display.chat_display(turns), empty_meter, ""

    tab.examples.change(
        on_example,
        tab.examples,
        [tab.system, tab.message, tab.turns, tab.chatbot, tab.meter, tab.probs],
        **PRIVATE,
    )

    wire_files(tab, playground)


def wire_files(tab: ChatTab, playground: Playground) -> None:
    """The conversation as a file: the download kept current, and an upload loaded back."""

    def on_download_ready(turns: list, system: str | None, control: Control) -> Any:
        partial = turns and turns[-1]["role"] == "assistant" and not turns[-1].get("figures")
        if control.streaming and partial:
            return gr.skip()  # a reply still streaming: its file comes with its end
        # Named by content: the same conversation is one file, not one more per update.
        text = session.conversation_json(turns, system or "")
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        path = write_download(f"{digest}/conversation.json", text)
        return gr.DownloadButton(value=str(path))

    for trigger in (tab.turns.change, tab.system.change):
        trigger(on_download_ready, [tab.turns, tab.system, tab.control], tab.download, **PRIVATE)

    def on_upload(data: bytes, control: Control) -> tuple:
        skip = gr.skip()
        if control.busy:
            return skip, skip, skip, "Press Stop first: a reply is being written.", skip
        try:
            system, turns = session.load_conversation(playground.check_file(data, "The file"))
        except UserError as error:  # anything else is the server's: user_errors says so
            return skip, skip, skip, display.escape(f"Not loaded: {error}"), skip
        return system, turns, display.chat_display(turns), "", ""

    tab.upload.upload(
        user_errors(on_upload),
        [tab.upload, tab.control],
        [tab.system, tab.turns, tab.chatbot, tab.input_note, tab.probs],
        **PRIVATE,
    )
