"""The terminal chat: `python -m playground chat`, a conversation on the web app's `Playground`.

Owns: the read–reply loop on a terminal (line editing with readline where Python has it, replies
streamed as they come, Ctrl-C as the Stop button, Ctrl-D or /quit to leave), the slash commands
and their one-line refusals, how a prompt and its tokens look on a terminal, and `printable`: the
rule that text from the model, the user or a file reaches the terminal as text, its control
characters and escape sequences shown, never obeyed.
Does not own: turns, prompts, streaming and figures (`session`), the checks of sampling values
(`sampling`, through `Playground.params`, as the web app's sliders are checked), the conversation
file (`session.conversation_json` / `load_conversation`, the web app's download), the figures
line and the token rows (`display`), the presets (`settings`) or argument parsing (`cli`).
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from playground import display, session
from playground.chat_format import (
    CONTROL_TOKEN_TEXTS,
    FOLD_NOTE,
    SYSTEM_POLICIES,
    RenderOptions,
    fold_details,
)
from playground.errors import UserError
from playground.inspection import Inspection
from playground.sampling import SAMPLING_NAMES, ParamError
from playground.session import Control, Playground, Turn
from playground.settings import Settings

try:  # line editing and history for input(); Windows' Python has no readline
    import readline
except ImportError:  # pragma: no cover
    readline = None

PROMPT = "you> "
# C0 controls but newline and tab, DEL, C1 controls (0x9b alone starts an escape sequence on
# some terminals), and the bidirectional overrides and isolates, which reorder what follows.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL = re.compile("|".join(map(re.escape, CONTROL_TOKEN_TEXTS)))
# Our own escape sequences, written only when stdout is a terminal that wants colour.
REVERSE, NORMAL, DIM, BRIGHT = "\x1b[7m", "\x1b[27m", "\x1b[2m", "\x1b[22m"


def printable(text: str) -> str:
    """`text` safe to write to a terminal: newlines and tabs kept, every other control character
    shown as its Unicode control picture (ESC as ␛, BEL as ␇, CR as ␍, DEL as ␡) or, past
    those, as an escape (\\x9b, \\u202e): an escape sequence is seen, not obeyed."""
    return _UNSAFE.sub(_picture, text)


def _picture(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    if code < 0x20:
        return chr(0x2400 + code)
    if code == 0x7F:
        return "\u2421"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def marked_prompt(prompt: str, color: bool) -> str:
    """A prompt for the terminal as the inspector shows it: made printable, newlines as ↵, and
    control tokens in reverse video (with colour; the text is the same either way)."""
    text = printable(prompt)
    if color:
        text = _CONTROL.sub(lambda m: f"{REVERSE}{m.group(0)}{NORMAL}", text)
    return text.replace("\n", "↵\n")


def wants_color(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (no-color.org)."""
    term = os.environ.get("TERM", "")
    return stream.isatty() and not os.environ.get("NO_COLOR") and term != "dumb"


def preset_values(settings: Settings, name: str | None) -> dict[str, Any]:
    """The sampling values a chat starts with: the sliders' defaults, then preset `name` (the
    sidebar's, by name; case does not matter)."""
    values: dict[str, Any] = settings.defaults()
    if name is None:
        return values
    by_name = {preset.casefold(): preset for preset in settings.presets}
    if name.casefold() not in by_name:
        known = ", ".join(repr(p) for p in settings.presets) or "none in space.yaml"
        raise ParamError(f"Unknown preset {name!r}: choose one of {known}.")
    return {**values, **settings.presets[by_name[name.casefold()]]}


@dataclass
class ChatState:
    """One terminal conversation: what the web app keeps in a visitor's page."""

    values: dict[str, Any]  # sampling values by name, prompt_lookup among them
    turns: list[Turn] = field(default_factory=list)
    system: str = ""
    options: RenderOptions = field(default_factory=RenderOptions)
    stop: tuple[str, ...] = ()
    pending_input: str = ""  # an undone message, put back on the input line
    # The notes already said in this conversation: each is said once, not before every reply
    # (issue 33: the fold note was reprinted each time).
    said: set[str] = field(default_factory=set)


@contextmanager
def stop_on_interrupt(control: Control) -> Iterator[None]:
    """Ctrl-C while a reply streams presses Stop: the reply ends, the chat goes on."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; elsewhere Ctrl-C stays as it is
        return
    previous = signal.signal(signal.SIGINT, lambda *_: control.press_stop())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _number(text: str) -> Any:
    """A typed value as a number where it reads as one; else the text, which the check then
    refuses with the field's allowed values."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _switch(name: str, text: str) -> bool:
    words = {"on": True, "true": True, "yes": True, "off": False, "false": False, "no": False}
    if text.lower() not in words:
        raise ParamError(f"{name} must be on or off, got {text!r}.")
    return words[text.lower()]


class TerminalChat:
    """The chat loop and its commands, writing to `out`."""

    def __init__(
        self, playground: Playground, values: Mapping[str, Any], out: TextIO, color: bool = False
    ) -> None:
        self.playground = playground
        self.state = ChatState(values=dict(values))
        self.playground.params(self.state.values)  # a bad start is refused before the loop
        self.out, self.color = out, color
        self.commands: dict[str, tuple[Callable[[str], bool | None], str]] = {
            "/system": (self.set_system, "TEXT  the system prompt (none: clear it)"),
            "/policy": (self.set_policy, "fold|error|drop  how the system prompt is sent"),
            "/fold": (self.explain_fold, "  why and how a system prompt is folded"),
            "/prefill": (self.set_prefill, "TEXT  start the next replies with TEXT (none: off)"),
            "/render": (self.show_prompt, "  the exact prompt of the last reply, tokens marked"),
            "/tokens": (self.show_tokens, "  that prompt's tokens: position, id, piece"),
            "/undo": (self.undo, "  take back the last message and its reply"),
            "/regen": (self.regenerate, "  a new reply to the last message (a new seed)"),
            "/clear": (self.clear, "  forget the conversation (the system prompt stays)"),
            "/set": (self.set_value, "NAME VALUE  a sampling parameter; /set alone lists them"),
            "/save": (self.save, "FILE  write the conversation (the web app's JSON)"),
            "/load": (self.load, "FILE  read a conversation the web app or /save wrote"),
            "/help": (self.help, "  this list"),
            "/quit": (lambda _: False, "  leave (Ctrl-D too)"),
        }

    # ---- output --------------------------------------------------------------------------

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def say(self, line: str) -> None:
        """One line of the chat's own, dimmed on a colour terminal."""
        line = printable(line).replace("\n", " ")
        self.write(f"{DIM}{line}{BRIGHT}\n" if self.color else f"{line}\n")

    def show_turn(self, turn: Mapping[str, Any]) -> None:
        who = "you" if turn["role"] == "user" else "model"
        self.write(f"{who}: {printable(turn['content'])}\n")
        if turn.get("figures"):
            self.say(f"[{display.figures_line(turn['figures'])}]")

    # ---- the loop ------------------------------------------------------------------------

    def run(self, read: Callable[[str], str] = input) -> int:
        """Read lines until Ctrl-D or /quit; every line is a message or a command."""
        while True:
            try:
                if not self.handle(self.read_line(read)):
                    return 0
            except EOFError:
                self.write("\n")
                return 0
            except KeyboardInterrupt:  # at the prompt, or in a command: a fresh line, as in a shell
                self.write("\n")

    def read_line(self, read: Callable[[str], str]) -> str:
        """One line; an undone message is put back on it where readline can do that."""
        pending, self.state.pending_input = self.state.pending_input, ""
        if not pending or readline is None or read is not input:
            return read(PROMPT)
        readline.set_startup_hook(lambda: readline.insert_text(pending))
        try:
            return read(PROMPT)
        finally:
            readline.set_startup_hook(None)

    def handle(self, line: str) -> bool:
        """Act on one line; False to leave. A refusal is one line, and the chat goes on."""
        try:
            if line.startswith("/"):
                name, _, argument = line.partition(" ")
                if name not in self.commands:
                    raise ParamError(f"Unknown command {name}: /help lists them.")
                return self.commands[name][0](argument) is not False
            if line.strip():
                self.playground.check_text(line, "The message")
                self.state.turns = session.submit(self.state.turns, line)
                self.answer()
        except UserError as error:
            self.say(f"error: {error}")
        return True

    def answer(self, new_seed: bool = False) -> None:
        """Stream the reply to the last message, then its line of figures."""
        state = self.state
        params = self.playground.params(state.values, state.stop, new_seed=new_seed)
        control, shown, last = Control(), "", None
        control.begin()
        try:
            with stop_on_interrupt(control):
                replies = self.playground.reply(
                    state.turns, state.options, params, control, state.system
                )
                for number, last in enumerate(replies):
                    if number == 0:  # the fold, dropped turns, control-token text
                        self.say_notes(last.budget.rendered.warnings)
                    self.write(printable(last.text[len(shown) :]))
                    shown = last.text
        except UserError:
            self.write("\n" if shown else "")
            raise
        finally:
            control.end()
        assert last is not None and last.figures is not None
        state.turns.append({"role": "assistant", "content": last.text, "figures": last.figures})
        self.write("\n")
        self.say(f"[{display.figures_line(last.figures)}]")

    def say_notes(self, notes: Iterable[str]) -> None:
        """The chat's notes on a prompt, each once a conversation; the fold's points to /fold."""
        for note in notes:
            if note not in self.state.said:
                self.state.said.add(note)
                self.say(f"note: {note}" + (" (/fold: why)" if note == FOLD_NOTE else ""))

    # ---- commands ------------------------------------------------------------------------

    def set_system(self, text: str) -> None:
        self.playground.check_text(text, "The system prompt")
        self.state.system = text
        self.say("system prompt set" if text.strip() else "system prompt cleared")

    def set_policy(self, text: str) -> None:
        text = text.strip()
        if text not in SYSTEM_POLICIES:
            raise ParamError(f"The policy is one of {', '.join(SYSTEM_POLICIES)}, got {text!r}.")
        self.state.options = replace(self.state.options, system_policy=text)
        self.say(f"system policy: {text}")

    def explain_fold(self, _: str) -> None:
        self.say(fold_details(self.playground.settings.fold_separator))

    def set_prefill(self, text: str) -> None:
        self.playground.check_text(text, "The prefill")
        self.state.options = replace(self.state.options, prefill=text)
        self.say(f"replies start with {text!r}" if text else "prefill off")

    def prompt_turns(self) -> list[Turn]:
        """The turns whose prompt /render and /tokens show: the last reply's, or the prompt
        a message waiting for its reply gets."""
        turns = session.without_reply(self.state.turns)
        if not turns:
            raise ParamError("Nothing to show yet: send a message first.")
        return turns

    def show_prompt(self, _: str) -> None:
        inspection = self.inspection()
        self.say(f"the prompt ({inspection.token_count} tokens; control tokens marked):")
        shown = marked_prompt(inspection.prompt, self.color)
        self.write(shown if shown.endswith("\n") else shown + "\n")

    def show_tokens(self, _: str) -> None:
        inspection = self.inspection()
        self.say(f"{inspection.token_count} tokens (position, id, piece, special):")
        for position, token_id, piece, special in display.token_rows(inspection.tokens):
            self.write(f"{position:>5} {token_id:>7}  {printable(str(piece))}  {special}\n")

    def inspection(self) -> Inspection:
        max_new_tokens = self.playground.params(self.state.values).max_new_tokens
        turns, options = self.prompt_turns(), self.state.options
        return self.playground.inspect(turns, options, max_new_tokens, self.state.system)

    def undo(self, _: str) -> None:
        text, self.state.turns = session.undo(self.state.turns)
        if not text:
            raise ParamError("Nothing to undo.")
        self.state.pending_input = text
        self.say(f"took back: {text}")

    def regenerate(self, _: str) -> None:
        self.state.turns = session.regenerate(self.state.turns)
        self.answer(new_seed=True)  # another draw, not the same reply again

    def clear(self, _: str) -> None:
        self.state.turns, self.state.said = [], set()
        self.say("conversation cleared")

    def set_value(self, text: str) -> None:
        """`/set NAME VALUE`, checked as the web app checks its sliders; `/set` lists them."""
        name, _, raw = text.strip().partition(" ")
        state = self.state
        if not name:
            shown = {**state.values, "stop": list(state.stop)}
            self.say(", ".join(f"{k}={v!r}" for k, v in shown.items()))
            return
        values, stop = dict(state.values), state.stop
        if name == "stop":  # one stop string; /set stop alone removes them
            stop = (raw,) if raw else ()
        elif name == "prompt_lookup":
            values[name] = _switch(name, raw.strip())
        elif name in SAMPLING_NAMES:
            values[name] = _number(raw.strip())
        else:
            known = ", ".join([*SAMPLING_NAMES, "stop", "prompt_lookup"])
            raise ParamError(f"Unknown sampling parameter {name!r}: one of {known}.")
        checked = self.playground.params(values, stop)
        state.values, state.stop = values, stop
        shown = list(checked.stop) if name == "stop" else getattr(checked, name)
        self.say(f"{name} = {shown!r}")

    def save(self, text: str) -> None:
        path = Path(text.strip()).expanduser()
        try:
            path.write_text(
                session.conversation_json(self.state.turns, self.state.system) + "\n",
                encoding="utf-8",
            )
        except OSError as error:
            raise ParamError(f"Not saved: {error}") from None
        self.say(f"saved {len(self.state.turns)} messages to {path}")

    def load(self, text: str) -> None:
        path = Path(text.strip()).expanduser()
        try:
            content = self.playground.check_text(path.read_text(encoding="utf-8"), "The file")
            system, turns = session.load_conversation(content)
        except (UserError, ValueError, OSError) as error:  # UnicodeDecodeError is a ValueError
            raise ParamError(f"Not loaded: {error}") from None
        self.state.system = system
        self.state.turns, self.state.said = turns, set()
        if system:
            self.say(f"system prompt: {system}")
        for turn in turns:
            self.show_turn(turn)
        self.say(f"loaded {len(turns)} messages from {path}")

    def help(self, _: str) -> None:
        for name, (_, usage) in self.commands.items():
            self.write(f"{name} {usage}\n")
        self.write("Anything else is a message. Ctrl-C stops a reply; Ctrl-D or /quit leaves.\n")


def run_chat(playground: Playground, values: Mapping[str, Any], notice: str | None = None) -> int:
    """The chat on this process's terminal, until Ctrl-D or /quit."""
    out = sys.stdout
    if hasattr(out, "reconfigure"):  # control pictures on a terminal that can't show them
        out.reconfigure(errors="backslashreplace")
    chat = TerminalChat(playground, values, out, wants_color(out))
    if sys.stdin.isatty() and threading.current_thread() is threading.main_thread():
        # Ctrl-C is this chat's Stop key even when its parent ignored SIGINT: a command started
        # with `&` by a non-interactive shell inherits SIGINT ignored (POSIX), and a chat run so
        # then stopped its first reply (stop_on_interrupt's handler) but lost every Ctrl-C at
        # its prompt (found in backgrounded test runs, 2026-12-07).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if notice:
        chat.say(f"note: {notice}")
    info = playground.engine.info
    chat.say(f"{info.model} on the {info.kind} engine. /help lists the commands; Ctrl-C stops "
             "a reply; Ctrl-D or /quit leaves.")  # fmt: skip
    return chat.run()
