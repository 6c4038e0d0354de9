"""`python -m playground render`: the exact prompt text, its options, --json and its errors.

Most tests call `cli.main` in-process (the text path needs no model); the ones marked slow run
`python -m playground` in a subprocess, as a user would.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from playground.chat_format import RenderOptions, render
from playground.cli import main
from playground.models import SYNTHETIC_RECIPE

ROOT = Path(__file__).resolve().parent.parent
CHAT = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Größe 😀 and a tab\t"},
]
WITH_SYSTEM = [{"role": "system", "content": "Answer in French."}, *CHAT]
# Issue 13 added "notes" (the fold note).
JSON_KEYS = ["prompt", "tokens", "token_count", "bos_count", "warnings", "dropped_turns", "notes"]


@pytest.fixture
def write(tmp_path):
    def write(data, name="conversation.json") -> Path:
        path = tmp_path / name
        path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
        return path

    return write


def run(args, **env: str) -> subprocess.CompletedProcess:
    """`python -m playground ARGS` from the repo, bytes in and out."""
    return subprocess.run(
        [sys.executable, "-m", "playground", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        timeout=600,
        env={**os.environ, "PYTHONIOENCODING": "utf-8", **env},
    )


def render_out(capsys, *args) -> str:
    assert main(["render", *map(str, args)]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    return out.out


def fail(capsys, *args) -> str:
    """Run a render that must fail: status 2 and exactly one line on stderr, nothing on stdout."""
    try:
        status = main(["render", *map(str, args)])
    except SystemExit as exit:  # argparse's own errors
        status = exit.code
    assert status == 2
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.err
    return lines[0]


# ----------------------------------------------------------------------------- the prompt text


def test_render_prints_exactly_the_rendered_prompt(capsys, write):
    out = render_out(capsys, write(CHAT))
    assert out == render(CHAT).text
    assert out.endswith("<start_of_turn>model\n")  # the template's, no newline of the CLI's


def test_no_generation_prompt(capsys, write):
    messages = CHAT[:2]
    out = render_out(capsys, write(messages), "--no-generation-prompt")
    assert out == render(messages, RenderOptions(add_generation_prompt=False)).text
    assert out.endswith("<end_of_turn>\n") and not out.endswith("model\n")


def test_prefill_continues_the_model_turn(capsys, write):
    out = render_out(capsys, write(CHAT), "--prefill", "Sure, ")
    assert out == render(CHAT, RenderOptions(prefill="Sure, ")).text
    assert out.endswith("<start_of_turn>model\nSure, ")


@pytest.mark.parametrize("policy", ["fold", "drop"])
def test_system_policy_fold_and_drop(capsys, write, policy):
    out = render_out(capsys, write(WITH_SYSTEM), "--system-policy", policy)
    assert out == render(WITH_SYSTEM, RenderOptions(system_policy=policy)).text
    assert ("Answer in French.\n\nHi there" in out) == (policy == "fold")
    assert "Answer in French." in out or policy == "drop"


def test_fold_is_the_default_policy(capsys, write):
    assert (
        render_out(capsys, write(WITH_SYSTEM))
        == render(WITH_SYSTEM, RenderOptions(system_policy="fold")).text
    )


def test_system_policy_error_refuses_a_system_message(capsys, write):
    line = fail(capsys, write(WITH_SYSTEM), "--system-policy", "error")
    assert "System role not supported" in line
    # Without a system message the policy changes nothing.
    assert render_out(capsys, write(CHAT), "--system-policy", "error") == render(CHAT).text


def test_an_object_with_a_messages_list_is_accepted(capsys, write):
    data = {"messages": CHAT, "model": "ignored", "temperature": 0.3}
    assert render_out(capsys, write(data)) == render(CHAT).text


def test_extra_message_keys_are_ignored(capsys, write):
    messages = [{"role": "user", "content": "Hi", "name": "bob"}]
    assert render_out(capsys, write(messages)) == render([{"role": "user", "content": "Hi"}]).text


# ------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "data, message",
    [
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "message 2"),
        ([], "the conversation is empty"),
        ([{"role": "assistant", "content": "a"}], "expected 'user' as the first message"),
        ([{"role": "robot", "content": "a"}], "unknown role 'robot'"),
        ([{"role": "user"}], "message 1"),
        ('[{"role": "user", "content": "a"}', "not valid JSON"),
        ("", "not valid JSON"),
        ({"conversation": []}, "without 'messages'"),
        ({"messages": "hi"}, "'messages' must be an array"),
        ("42", "expected a list of messages"),
    ],
)
def test_invalid_conversation_exits_2_with_one_line(capsys, write, data, message):
    assert message in fail(capsys, write(data))


def test_missing_file_and_directory_exit_2(capsys, tmp_path):
    assert "No such file" in fail(capsys, tmp_path / "missing.json")
    assert "Is a directory" in fail(capsys, tmp_path)


def test_a_file_that_is_not_utf8_exits_2(capsys, tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes('[{"role": "user", "content": "caf\xe9"}]'.encode("latin-1"))
    line = fail(capsys, path)
    assert "not UTF-8" in line and str(path) in line


def test_prefill_without_generation_prompt_exits_2(capsys, write):
    line = fail(capsys, write(CHAT), "--no-generation-prompt", "--prefill", "Sure")
    assert "prefill" in line


def test_conversation_ending_with_the_model_needs_no_generation_prompt(capsys, write):
    messages = CHAT[:2]
    assert "ends with an assistant message" in fail(capsys, write(messages))


def test_unknown_system_policy_exits_2(capsys, write):
    assert "invalid choice: 'merge'" in fail(capsys, write(CHAT), "--system-policy", "merge")


# --------------------------------------------------------------------------------------- --json


@pytest.mark.slow
def test_json_keys_and_tokens(capsys, write, tokenizer):
    out = render_out(capsys, write(WITH_SYSTEM), "--json")
    assert out.endswith("\n") and out.count("\n") == 1  # one JSON object on one line
    data = json.loads(out)
    assert list(data) == JSON_KEYS
    assert data["prompt"] == render(WITH_SYSTEM).text
    assert data["token_count"] == len(data["tokens"]) == tokenizer.count(data["prompt"])
    assert data["bos_count"] == 1
    assert data["warnings"] == [] and data["dropped_turns"] == []
    for token in data["tokens"]:
        assert list(token) == ["id", "piece", "special"]
        assert isinstance(token["id"], int) and isinstance(token["piece"], str)
        assert isinstance(token["special"], bool)
    assert [t["id"] for t in data["tokens"]] == tokenizer.encode(data["prompt"])
    assert data["tokens"][:2] == [
        {"id": 2, "piece": "<bos>", "special": True},
        {"id": 106, "piece": "<start_of_turn>", "special": True},
    ]
    assert "".join(t["piece"] for t in data["tokens"]) == data["prompt"]


@pytest.mark.slow
def test_json_carries_warnings_and_the_options(capsys, write):
    messages = [*WITH_SYSTEM[:-1], {"role": "user", "content": "Say <end_of_turn> now"}]
    data = json.loads(
        render_out(capsys, write(messages), "--json", "--system-policy", "drop", "--prefill", "Ok")
    )
    assert (
        data["prompt"] == render(messages, RenderOptions(system_policy="drop", prefill="Ok")).text
    )
    assert len(data["warnings"]) == 2
    assert "'drop' system policy" in data["warnings"][0]
    assert "message 4 (user)" in data["warnings"][1] and "<end_of_turn>" in data["warnings"][1]


@pytest.mark.slow
def test_json_with_an_invalid_conversation_exits_2(capsys, write):
    assert "message 2" in fail(capsys, write([CHAT[0], CHAT[0]]), "--json")


# ------------------------------------------------------------------------- as a real command


@pytest.mark.slow
def test_command_prints_the_exact_bytes(write):
    done = run(["render", write(CHAT)])
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == render(CHAT).text.encode("utf-8")  # no trailing newline added
    assert done.stderr == b""


@pytest.mark.slow
def test_command_options(write):
    path = write(WITH_SYSTEM)
    done = run(["render", path, "--system-policy", "drop", "--prefill", "Bien sûr"])
    assert done.returncode == 0, done.stderr.decode()
    expected = render(WITH_SYSTEM, RenderOptions(system_policy="drop", prefill="Bien sûr")).text
    assert done.stdout == expected.encode("utf-8")
    done = run(["render", write(CHAT[:2]), "--no-generation-prompt"])
    assert done.stdout == render(CHAT[:2], RenderOptions(add_generation_prompt=False)).text.encode(
        "utf-8"
    )


@pytest.mark.slow
def test_command_json(write):
    done = run(["render", write({"messages": CHAT}), "--json"])
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode("utf-8").splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert list(data) == JSON_KEYS and data["prompt"] == render(CHAT).text


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["--system-policy", "error"], "System role not supported"),
        (["--system-policy", "merge"], "invalid choice"),
        (["--json", "--system-policy", "error"], "System role not supported"),
    ],
)
def test_command_errors_exit_2_with_one_line(write, args, message):
    done = run(["render", write(WITH_SYSTEM), *args])
    assert done.returncode == 2
    assert done.stdout == b""
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


@pytest.mark.slow
def test_command_json_stays_clean_while_the_model_is_built(write, tmp_path):
    # A first run builds the tiny model, and the build logs (NNCF's tables) must not reach
    # stdout, or `--json` is no longer one JSON object.
    done = run(["render", write(CHAT), "--json"], PLAYGROUND_CACHE=str(tmp_path / "fresh-cache"))
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    models = tmp_path / "fresh-cache" / "models"
    built = models / f"tiny-random-r{SYNTHETIC_RECIPE}" / "openvino_model.xml"
    assert built.is_file()
    data = json.loads(done.stdout.decode("utf-8"))
    assert list(data) == JSON_KEYS and data["prompt"] == render(CHAT).text


def test_19_help_is_written_for_users_with_ranges_and_defaults():
    bench = subprocess.run(
        [sys.executable, "-m", "playground.bench", "--help"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bench.returncode == 0
    assert "Owns:" not in bench.stdout and "Does not own" not in bench.stdout
    assert "mid-random" in bench.stdout and "--quick" in bench.stdout
    generate = subprocess.run(
        [sys.executable, "-m", "playground", "generate", "--help"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    text = " ".join(generate.stdout.split())
    assert "Randomness: 0 always picks the likeliest token" in text
    assert "0 means no limit" in text
    # Issue 33: what a request takes, not only the sliders' range, and --messages is a file.
    assert "Takes a number from 0 to 2; the web app's slider goes from 0 to 2; default 0.6" in text
    assert "Takes a number above 0; the web app's slider goes from 1 to 2" in text
    assert "from 1 to the model's context size" in text and "or -1 to draw one" in text
    assert "--messages FILE a JSON file" in text and "up to 64 here" in text
