"""Share links in the page: "Copy link" on Chat, Raw prompt, Template inspector and Compare, the
view a link restores, and whether its replay matched.

Owns: the `ShareBar` of each tab (the button and the link it made), reading each tab's
components into a view and writing a checked view back into them, the note at the top of the
page that says what a link opened (or why it could not), and the replay check after a run.
Does not own: the link's format and checks (`share`), the tabs' own handlers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from playground import display
from playground.chat_format import DEFAULT_SYSTEM_POLICY
from playground.compare import PEER, SERVED
from playground.sampling import SAMPLING_NAMES
from playground.session import Playground, exported_model, messages_of
from playground.share import ShareError, decode_view, encode_view, output_hash
from playground.ui.common import PRIVATE, user_errors
from playground.ui.compare import engine_of
from playground.ui.controls import SEED_MODES, preset_name

# The server returns the link's `share` value; the page makes it a whole URL, shows it and
# copies it (the clipboard needs a secure page: a Space's https, or localhost).
TO_URL = """(token) => {
  if (!token || token.startsWith('http')) return token;
  const url = location.origin + location.pathname + '?share=' + token;
  navigator.clipboard?.writeText(url).catch(() => {});
  return url;
}"""
SEPARATOR = "\n\x1e\n"  # between a comparison's outputs, in its hash


@dataclass
class ShareBar:
    button: gr.Button
    link: gr.Textbox


def build_share_bar(tab: str) -> ShareBar:
    with gr.Row(equal_height=True):
        button = gr.Button(
            "🔗 Copy link", size="sm", scale=0, min_width=120, elem_id=f"{tab}-share"
        )
        link = gr.Textbox(
            show_label=False,
            placeholder="A link to this view: the messages or prompt, the options and sampling",
            buttons=["copy"],
            interactive=False,
            max_lines=2,  # a long link scrolls inside its box rather than filling a phone
            scale=5,
            elem_id=f"{tab}-link",
        )
    return ShareBar(button, link)


def note_html(text: str) -> str:
    """The note at the top of the page: HTML, so a link's text (a model name, say) is shown
    literally, Markdown syntax included."""
    return f"<p>{display.escape(text)}</p>"


def served_model(playground: Playground) -> str:
    """The model as a link names it: its public name, never a server's folder."""
    info = playground.engine.info
    return exported_model(info.model if info else "")[0]


def compare_output(outputs: list[str]) -> str:
    return SEPARATOR.join(outputs)


def last_reply(turns: list) -> str:
    return turns[-1]["content"] if turns and turns[-1]["role"] == "assistant" else ""


def wire_share(
    ui: Any, bars: dict[str, ShareBar], note: gr.HTML, expected: gr.State, runs: dict
) -> None:
    """`ui` has the tabs' dataclasses (`chat`, `raw`, `inspector`, `compare`, `controls`,
    `tabs`, `playground`, `demo`); `runs` maps a tab to the events that end its runs."""
    inputs = _link_inputs(ui)
    for tab, bar in bars.items():

        @user_errors
        def on_copy_link(data: dict, tab: str = tab) -> str:
            return encode_view(_view_of(ui, tab, data))

        bar.button.click(
            on_copy_link, {*inputs[tab], *ui.controls.inputs}, bar.link, **PRIVATE
        ).then(None, bar.link, bar.link, js=TO_URL, **PRIVATE)

    def on_open(request: gr.Request) -> dict:
        token = request.query_params.get("share")
        if token is None:
            return {note: gr.skip()}  # an empty dict reads as one value to Gradio
        try:
            view = decode_view(token, ui.playground)
        except ShareError as error:
            message = f"⚠️ {error} The page opened empty instead."
            return {note: note_html(message), expected: None}
        return _restore(ui, view, note, expected)

    ui.demo.load(on_open, None, _restore_outputs(ui, note, expected), **PRIVATE)

    columns = ui.compare.columns
    replay_inputs = [expected, ui.chat.turns, ui.raw.output, *[c.output for c in columns]]
    for tab, events in runs.items():
        for event in events:
            event.then(
                lambda want, *values, tab=tab: (
                    replay_note(want, *values) if want and want["tab"] == tab else gr.skip()
                ),
                replay_inputs,
                note,
                **PRIVATE,
            )


def _link_inputs(ui: Any) -> dict[str, list]:
    """Each tab's components that a link of it carries."""
    chat, raw, inspector, compare = ui.chat, ui.raw, ui.inspector, ui.compare
    return {
        "chat": [chat.turns, chat.system, chat.system_policy, chat.prefill],
        "raw": [raw.prompt, raw.no_bos, raw.output],
        "inspector": [
            inspector.conversation, inspector.generation_prompt, inspector.system_policy,
            inspector.prefill,
        ],
        "compare": [
            compare.conversation, compare.prefill, compare.count,
            *[part for c in compare.columns for part in (c.variant, c.edited, c.changes)],
            *[c.engine for c in compare.columns if c.engine is not None],
            *[c.output for c in compare.columns],
        ],
    }  # fmt: skip


def _view_of(ui: Any, tab: str, data: dict) -> dict[str, Any]:
    """The view a link of `tab` carries, read from an event's component values."""
    values, stop, _ = ui.controls.read(data)
    view: dict[str, Any] = {
        "tab": tab,
        "model": served_model(ui.playground),
        "engine": ui.playground.engine.kind,
        "sampling": {name: values[name] for name in SAMPLING_NAMES},
        "stop": stop,
    }
    fields, output = _tab_view(ui, tab, data)
    view |= fields
    if output:
        view["hash"] = output_hash(output)
    return view


def _tab_view(ui: Any, tab: str, data: dict) -> tuple[dict[str, Any], str]:
    """A tab's own fields of a view, and the output a replay is checked against."""
    if tab == "chat":
        chat, turns = ui.chat, data[ui.chat.turns]
        fields = {
            "messages": messages_of(turns),
            "system": data[chat.system] or "",
            "system_policy": data[chat.system_policy],
            "prefill": data[chat.prefill] or "",
        }
        return fields, last_reply(turns)
    if tab == "raw":
        raw = ui.raw
        fields = {"prompt": data[raw.prompt] or "", "no_bos": bool(data[raw.no_bos])}
        return fields, data[raw.output] or ""
    if tab == "inspector":
        inspector = ui.inspector
        return {
            "conversation": data[inspector.conversation] or "",
            "generation_prompt": bool(data[inspector.generation_prompt]),
            "system_policy": data[inspector.system_policy],
            "prefill": data[inspector.prefill] or "",
        }, ""
    compare, count = ui.compare, int(data[ui.compare.count])
    shown = compare.columns[:count]
    fields = {
        "conversation": data[compare.conversation] or "",
        "prefill": data[compare.prefill] or "",
        "count": count,
        "columns": [
            {"prompt": data[c.variant], "text": data[c.edited] or "",
             "changes": data[c.changes] or "", "engine": engine_of(data, c)}
            for c in shown
        ],
    }  # fmt: skip
    outputs = [data[c.output] or "" for c in shown]
    return fields, compare_output(outputs) if all(outputs) else ""


def replay_note(want: dict, turns: list, raw_output: str, *column_outputs: str) -> Any:
    """After a run of a shared view: whether its output has the link's hash."""
    if want["tab"] == "chat":
        output = last_reply(turns)
    elif want["tab"] == "raw":
        output = raw_output
    else:
        outputs = [v or "" for v in column_outputs[: want["count"]]]
        if not all(outputs):
            return gr.skip()  # the other columns are still running
        output = compare_output(outputs)
    if not output:
        return gr.skip()
    got = output_hash(output)
    if got == want["hash"]:
        return note_html(f"✅ The replay matched the shared output (hash {got}).")
    return note_html(
        f"❌ The replay differs from the shared output: hash {got}, the link's "
        f"{want['hash']}. A random seed, other values, or another model or engine "
        "change the output."
    )


def _restore_outputs(ui: Any, note: gr.HTML, expected: gr.State) -> list:
    chat, inspector, compare, controls = ui.chat, ui.inspector, ui.compare, ui.controls
    return [
        note, expected, ui.tabs, *controls.values.values(), controls.preset, controls.seed_mode,
        controls.stop,
        chat.turns, chat.chatbot, chat.message, chat.system, chat.system_policy, chat.prefill,
        ui.raw.prompt, ui.raw.no_bos,
        inspector.conversation, inspector.generation_prompt, inspector.system_policy,
        inspector.prefill,
        compare.conversation, compare.prefill, compare.count,
        *[part for c in compare.columns for part in (c.variant, c.edited, c.changes, c.box)],
        *[c.engine for c in compare.columns if c.engine is not None],
    ]  # fmt: skip


def _restore(ui: Any, view: dict, note: gr.HTML, expected: gr.State) -> dict:
    """The components' new values for a checked view, and the note that says what opened."""
    tab, controls = view["tab"], ui.controls
    updates: dict = {ui.tabs: gr.Tabs(selected=tab), controls.stop: view.get("stop", "")}
    # A fixed seed: the link's run is replayed, not drawn anew.
    updates[controls.seed_mode] = SEED_MODES[1]
    for name, value in view["sampling"].items():
        updates[controls.values[name]] = value
    updates[controls.preset] = preset_name(ui.playground.settings, view["sampling"])
    if tab == "chat":
        chat, turns, message = ui.chat, view["messages"], ""
        if "hash" in view and len(turns) >= 2 and turns[-1]["role"] == "assistant":
            # The shared reply is taken off and its question put back: Send replays it.
            message, turns = turns[-2]["content"], turns[:-2]
        updates |= {
            chat.turns: turns, chat.chatbot: display.chat_display(turns), chat.message: message,
            chat.system: view.get("system", ""), chat.prefill: view.get("prefill", ""),
            chat.system_policy: view.get("system_policy", DEFAULT_SYSTEM_POLICY),
        }  # fmt: skip
    elif tab == "raw":
        updates |= {ui.raw.prompt: view["prompt"], ui.raw.no_bos: view.get("no_bos", False)}
    elif tab == "inspector":
        inspector = ui.inspector
        updates |= {
            inspector.conversation: view["conversation"],
            inspector.generation_prompt: view.get("generation_prompt", True),
            inspector.system_policy: view.get("system_policy", DEFAULT_SYSTEM_POLICY),
            inspector.prefill: view.get("prefill", ""),
        }
    else:
        compare = ui.compare
        updates |= {
            compare.conversation: view["conversation"],
            compare.prefill: view.get("prefill", ""),
            compare.count: view["count"],
        }
        for i, column in enumerate(compare.columns):
            shared = view["columns"][i] if i < len(view["columns"]) else {}
            updates |= {
                column.variant: shared.get("prompt", "correct"),
                column.edited: gr.update(
                    value=shared.get("text", ""), visible=shared.get("prompt") == "edited"
                ),
                column.changes: shared.get("changes", ""),
                column.box: gr.Column(visible=i < view["count"]),
            }
            if column.engine is not None:  # a page without a peer runs every column on its own
                updates[column.engine] = shared.get("engine", SERVED)
    lines = [f"🔗 Opened a shared {tab} view, with its sampling values and a fixed seed."]
    served, kind = served_model(ui.playground), ui.playground.engine.kind
    if (view.get("model"), view.get("engine")) != (served, kind):
        lines.append(
            f"It was made on {view.get('model')} with the {view.get('engine')} engine; this "
            f"page serves {served} with {kind}, so a replay may differ."
        )
    on_peer = [c for c in view.get("columns", []) if c.get("engine") == PEER]
    if on_peer and ui.compare.columns[0].engine is None:
        lines.append(
            f"{len(on_peer)} of its columns ran on a second engine, which this page does not "
            "have: here every column runs on the engine it serves."
        )
    if "hash" in view:
        run = "press Send to replay its last reply" if tab == "chat" else "run it"
        lines.append(f"To check it, {run}: the shared output's hash is {view['hash']}.")
    updates[note] = note_html(" ".join(lines))
    if "hash" in view:
        updates[expected] = {"tab": tab, "hash": view["hash"], "count": view.get("count", 0)}
    else:
        updates[expected] = None
    return updates
