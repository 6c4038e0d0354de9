"""`python -m playground chat`: the printable rule, the commands in-process on a recording fake,
and the real thing in a pseudo-terminal on tiny-tutor (marked slow: it loads the model)."""

import io
import json
import os
import re
import signal
import sys
import time

import pexpect
import pytest

from playground import display
from playground.models import TUTOR_DIR
from playground.session import Playground
from playground.settings import load_settings
from playground.terminal import TerminalChat, marked_prompt, preset_values, printable
from tests.conftest import ROOT
from tests.helpers.fakes import RecordingEngine

HOSTILE = "title\x1b]0;pwned\x07 clear\x1b[2J bell\x07 cr\r csi\x9b2J rtl\u202eevil"


# ---- printable ----------------------------------------------------------------------------


def test_printable_shows_escape_sequences_instead_of_obeying_them():
    shown = printable(HOSTILE)
    assert shown == ("title␛]0;pwned␇ clear␛[2J bell␇ cr␍ csi\\x9b2J rtl\\u202eevil")
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", shown)


def test_printable_keeps_text_newlines_and_tabs():
    text = "Größe 😀 日本語 <start_of_turn>\n\tindented © → ∞"
    assert printable(text) == text
    assert printable("\x00\x7f") == "␀␡"


def test_marked_prompt_marks_control_tokens_only_with_colour():
    prompt = "<bos><start_of_turn>user\nHi\x1b[2J<end_of_turn>\n"
    plain = marked_prompt(prompt, color=False)
    assert plain == "<bos><start_of_turn>user↵\nHi␛[2J<end_of_turn>↵\n"
    coloured = marked_prompt(prompt, color=True)
    assert "\x1b[7m<start_of_turn>\x1b[27m" in coloured
    assert "\x1b[7m<end_of_turn>\x1b[27m" in coloured
    # Our own marks are the only escape sequences: the prompt's ESC is still shown as ␛.
    assert re.sub(r"\x1b\[(7|27)m", "", coloured) == plain


# ---- presets ------------------------------------------------------------------------------


def test_a_preset_by_name_starts_from_the_sidebar_values():
    settings = load_settings()
    values = preset_values(settings, "deterministic")
    assert values == {**settings.defaults(), **settings.presets["Deterministic"]}
    assert preset_values(settings, None) == settings.defaults()
    with pytest.raises(ValueError, match=r"Unknown preset 'fast'.*'Deterministic'"):
        preset_values(settings, "fast")


# ---- commands, in-process on a recording fake ---------------------------------------------


def make_chat(reply="Fine, thanks."):
    settings = load_settings(model="tiny-tutor")
    engine = RecordingEngine(TUTOR_DIR, reply=reply)
    out = io.StringIO()
    chat = TerminalChat(Playground(engine, settings), settings.defaults(), out)
    return chat, engine, out


def lines_of(chat, out, *typed):
    """Type each line into `chat`; return what it wrote meanwhile, as lines."""
    start = len(out.getvalue())
    for line in typed:
        assert chat.handle(line)
    return out.getvalue()[start:].splitlines()


def test_a_message_streams_its_reply_then_one_line_of_figures():
    chat, _, out = make_chat()
    shown = lines_of(chat, out, "Hello")
    figures = chat.state.turns[-1]["figures"]
    assert shown == ["Fine, thanks.", f"[{display.figures_line(figures)}]"]
    assert figures["stop_reason"] == "end_of_turn" and figures["seed"] == 42
    assert [t["role"] for t in chat.state.turns] == ["user", "assistant"]


def test_model_text_is_printed_as_text():
    chat, _, out = make_chat(reply=HOSTILE)
    shown = "\n".join(lines_of(chat, out, "Hello"))
    assert "\x1b" not in shown and "\x07" not in shown and "\x9b" not in shown
    assert "title␛]0;pwned␇ clear␛[2J" in shown
    assert chat.state.turns[-1]["content"] == HOSTILE  # kept as it was, only shown safely


@pytest.mark.parametrize(
    ("typed", "said"),
    [
        ("/frobnicate", "error: Unknown command /frobnicate: /help lists them."),
        ("/set temperature hot",
         "error: temperature must be a number from 0 to 2, got 'hot' (str)."),
        ("/set temperature 2.5", "error: temperature must be a number from 0 to 2, got 2.5."),
        ("/set max_new_tokens 5000",
         "error: max_new_tokens must be a whole number from 1 to 4096, got 5000."),
        ("/set warmth 1", "error: Unknown sampling parameter 'warmth': one of max_new_tokens, "
         "temperature, top_p, top_k, repetition_penalty, seed, stop, prompt_lookup."),
        ("/policy shout", "error: The policy is one of fold, error, drop, got 'shout'."),
        ("/undo", "error: Nothing to undo."),
        ("/regen", "error: Nothing to regenerate yet."),
        ("/render", "error: Nothing to show yet: send a message first."),
    ],
)  # fmt: skip
def test_bad_input_gets_one_line_and_the_chat_goes_on(typed, said):
    chat, engine, out = make_chat()
    values = dict(chat.state.values)
    assert lines_of(chat, out, typed) == [said]
    assert chat.state.values == values and chat.state.turns == [] and engine.calls == []
    assert lines_of(chat, out, "Hello")[0] == "Fine, thanks."


def test_set_changes_what_the_next_reply_is_sampled_with():
    chat, engine, out = make_chat()
    said = lines_of(chat, out, "/set temperature 0", "/set top_k 7", "/set stop thanks",
                    "/set prompt_lookup off", "Hello")  # fmt: skip
    assert said[:4] == ["temperature = 0.0", "top_k = 7", "stop = ['thanks']",
                        "prompt_lookup = False"]  # fmt: skip
    params = engine.calls[-1]["params"]
    assert (params.temperature, params.top_k, params.stop) == (0.0, 7, ("thanks",))
    assert chat.state.turns[-1]["content"] == "Fine, "  # the stop string ended it


def test_system_policy_and_prefill_shape_the_prompt():
    chat, engine, out = make_chat()
    lines_of(chat, out, "/system Answer in French.", "/prefill Bien", "Hello")
    prompt = engine.calls[-1]["prompt"]
    assert prompt.endswith("Answer in French.\n\nHello<end_of_turn>\n<start_of_turn>model\nBien")
    assert chat.state.turns[-1]["content"].startswith("Bien")
    said = lines_of(chat, out, "/policy error", "/regen")
    assert said[-1].startswith("error: ") and "system" in said[-1]


def test_undo_puts_the_message_back_and_regen_draws_a_new_seed():
    chat, engine, out = make_chat()
    lines_of(chat, out, "Hello", "/regen")
    assert len(engine.calls) == 2 and engine.calls[1]["prompt"] == engine.calls[0]["prompt"]
    assert len(chat.state.turns) == 2
    assert lines_of(chat, out, "/undo") == ["took back: Hello"]
    assert chat.state.turns == [] and chat.state.pending_input == "Hello"


def test_save_and_load_are_the_web_apps_conversation_file(tmp_path):
    chat, _, out = make_chat()
    path = tmp_path / "talk.json"
    lines_of(chat, out, "/system Be brief.", "Hello", f"/save {path}")
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert [m["role"] for m in saved["messages"]] == ["system", "user", "assistant"]
    assert "figures" in saved["messages"][-1]
    turns = chat.state.turns
    lines_of(chat, out, "/clear", "/system")
    assert chat.state.turns == [] and chat.state.system == ""
    said = lines_of(chat, out, f"/load {path}")
    assert chat.state.turns == turns and chat.state.system == "Be brief."
    assert said[-1] == f"loaded 2 messages from {path}"


def test_a_file_that_is_not_a_conversation_is_refused_in_one_line(tmp_path):
    chat, _, out = make_chat()
    lines_of(chat, out, "Hello")
    turns = list(chat.state.turns)
    for name, content in [("a.json", b'{"not": "messages"}'), ("b.json", b"\xff\xfe"),
                          ("c.json", b"[1, 2")]:  # fmt: skip
        (tmp_path / name).write_bytes(content)
        said = lines_of(chat, out, f"/load {tmp_path / name}")
        assert len(said) == 1 and said[0].startswith("error: Not loaded: "), said
    said = lines_of(chat, out, f"/load {tmp_path / 'missing.json'}")
    assert len(said) == 1 and "No such file" in said[0]
    assert chat.state.turns == turns


def test_a_loaded_conversation_is_shown_as_text(tmp_path):
    chat, _, out = make_chat()
    path = tmp_path / "hostile.json"
    messages = [{"role": "user", "content": HOSTILE}, {"role": "assistant", "content": "ok"}]
    path.write_text(json.dumps({"messages": messages}), encoding="utf-8")
    shown = "\n".join(lines_of(chat, out, f"/load {path}"))
    assert "\x1b" not in shown and "\x07" not in shown
    assert "you: title␛]0;pwned␇ clear␛[2J" in shown
    assert chat.state.turns[0]["content"] == HOSTILE


def test_quit_leaves_and_end_of_input_too():
    chat, _, _ = make_chat()
    assert chat.handle("/quit") is False
    typed = iter(["Hello"])

    def read(prompt):
        try:
            return next(typed)
        except StopIteration:
            raise EOFError from None

    assert chat.run(read) == 0
    assert len(chat.state.turns) == 2


# ---- the real thing: a pseudo-terminal, tiny-tutor ----------------------------------------


def spawn_chat(**spawn_args):
    """The chat on a pty, at its first prompt."""
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "playground", "chat", "--model", "tiny-tutor", "--preset", "Deterministic"],
        cwd=str(ROOT),
        encoding="utf-8",
        timeout=120,
        dimensions=(50, 200),
        # PYTHONFAULTHANDLER: a SIGABRT makes the chat print every thread's stack (`frozen`).
        env={**env, "TERM": "xterm", "PYTHONIOENCODING": "utf-8", "PYTHONFAULTHANDLER": "1"},
        **spawn_args,
    )
    child.expect_exact("you> ")
    return child


@pytest.fixture
def terminal(tmp_path):
    child = spawn_chat()
    yield child
    child.close(force=True)


def say(child, line: str) -> str:
    """Type `line`, wait for the next prompt; return what the chat printed in between."""
    child.sendline(line)
    child.expect_exact("you> ")
    return child.before


@pytest.mark.slow
def test_pty_a_sum_and_the_rendered_prompt(terminal):
    shown = say(terminal, "What is 7 plus 5?")
    assert "So 7 plus 5 is 12." in shown
    figures = r"\[\d+ prompt tokens · \d+ new tokens · first token .* · seed 42 · end of turn\]"
    assert re.search(figures, shown)
    rendered = say(terminal, "/render")
    assert "\x1b[7m<start_of_turn>\x1b[27muser↵" in rendered
    assert "What is 7 plus 5?\x1b[7m<end_of_turn>\x1b[27m↵" in rendered
    tokens = say(terminal, "/tokens")
    assert re.search(r"\s1\s+106  <start_of_turn>  yes", tokens)
    terminal.sendeof()
    terminal.expect(pexpect.EOF)
    assert terminal.wait() == 0


def frozen(child) -> str:
    """Every thread's stack of a chat that stopped answering (faulthandler, on SIGABRT)."""
    child.kill(signal.SIGABRT)
    child.expect(pexpect.EOF, timeout=10)
    return child.before


@pytest.mark.slow
def test_pty_ctrl_c_stops_the_reply_not_the_chat(terminal):
    # Greedy and started with z's, tiny-tutor writes z's until max_new_tokens (measured: 2000
    # of 2000): a reply long enough to interrupt.
    say(terminal, "/set max_new_tokens 4000")
    say(terminal, "/prefill " + "z" * 20)
    terminal.sendline("hi")
    terminal.expect("z{200}")
    started = time.monotonic()
    terminal.sendintr()
    try:
        terminal.expect_exact("you> ", timeout=30)
    except pexpect.TIMEOUT:
        pytest.fail("the chat froze after Ctrl-C; its threads:\n" + frozen(terminal))
    assert time.monotonic() - started < 10
    figures = re.search(r"\[\d+ prompt tokens · (\d+) new tokens .* stopped by you\]",
                        terminal.before)  # fmt: skip
    assert figures and int(figures.group(1)) < 4000
    # At the prompt: a fresh prompt, as in a shell, not an exit; pressed once the chat waits
    # there (readline notices a signal only inside its select()).
    time.sleep(0.5)
    assert_ctrl_c_gives_a_fresh_prompt(terminal)
    # The chat goes on: a z-filled history derails tiny-tutor, so start afresh first.
    assert "conversation cleared" in say(terminal, "/clear")
    assert "prefill off" in say(terminal, "/prefill")
    assert "So 7 plus 5 is 12." in say(terminal, "What is 7 plus 5?")
    assert terminal.isalive()


def assert_ctrl_c_gives_a_fresh_prompt(child) -> None:
    child.sendintr()
    try:
        child.expect_exact("you> ", timeout=30)
    except pexpect.TIMEOUT:
        pytest.fail("no fresh prompt after Ctrl-C at the prompt; threads:\n" + frozen(child))
    assert child.isalive()


@pytest.mark.slow
def test_pty_ctrl_c_at_the_prompt_works_though_the_parent_ignored_sigint():
    # A command run with `&` by a non-interactive shell (a CI script, nohup) starts with SIGINT
    # ignored (POSIX). The chat lost every Ctrl-C at its prompt so: this test's old failure in 4
    # backgrounded full runs, never when run in the foreground.
    child = spawn_chat(preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        time.sleep(0.5)
        assert_ctrl_c_gives_a_fresh_prompt(child)
        assert "So 7 plus 5 is 12." in say(child, "What is 7 plus 5?")
    finally:
        child.close(force=True)


@pytest.mark.slow
def test_pty_save_then_load_restores_the_turns(terminal, tmp_path):
    path = tmp_path / "talk.json"
    say(terminal, "What is 7 plus 5?")
    assert f"saved 2 messages to {path}" in say(terminal, f"/save {path}")
    say(terminal, "/clear")
    assert "Nothing to show yet" in say(terminal, "/render")
    loaded = say(terminal, f"/load {path}")
    assert "you: What is 7 plus 5?" in loaded and "So 7 plus 5 is 12." in loaded
    assert "What is 7 plus 5?" in say(terminal, "/render")
    assert "So 3 plus 4 is 7." in say(terminal, "What is 3 plus 4?")


@pytest.mark.slow
def test_pty_hostile_text_is_neutralised(terminal, tmp_path):
    path = tmp_path / "hostile.json"
    messages = [{"role": "user", "content": HOSTILE}, {"role": "assistant", "content": "ok"}]
    path.write_text(json.dumps({"messages": messages}), encoding="utf-8")
    loaded = say(terminal, f"/load {path}")
    assert "title␛]0;pwned␇ clear␛[2J" in loaded
    assert "\x1b]0;" not in loaded and "\x1b[2J" not in loaded and "\x07" not in loaded
    rendered = say(terminal, "/render")
    assert "\x1b]0;" not in rendered and "␛]0;pwned␇" in rendered
