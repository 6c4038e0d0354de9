"""Side by side with the peers (issue 13), where users meet it: the command line and the API.

The fold (trim, then join with a settable separator), the prefill that ends in whitespace,
OpenAI-style content parts, the official template's words in errors, and the sampling values
the engine accepts, each bound tried on both sides.
"""

import json
import os
import re
import subprocess
import sys

import pytest
from gradio_client.exceptions import AppError
from gradio_client.utils import StatusUpdate

from playground.chat_format import FOLD_NOTE, TEMPLATE_ALTERNATION_ERROR, RenderOptions, render
from playground.sampling import MAX_ENGINE_STOP_STRINGS, MAX_STOP_LENGTH, SamplingParams
from tests.conftest import ROOT, serve

pytestmark = pytest.mark.slow

SYSTEM_AND_USER = [
    {"role": "system", "content": "You are brief.\n"},
    {"role": "user", "content": "  Hi"},
]
PARTS = [
    {
        "role": "user",
        "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}],
    }
]
IMAGE_PART = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "http://x/cat.png"}},
        ],
    }
]


def cli(*args: object, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m playground ARGS`, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "playground", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )


def refused(done: subprocess.CompletedProcess) -> str:
    """The one error line of a command that must fail with status 2."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@pytest.fixture
def write(tmp_path):
    def write(data, name="conversation.json"):
        path = tmp_path / name
        path.write_text(json.dumps(data), encoding="utf-8")
        return path

    return write


# ------------------------------------------------------------------------ 1. the fold, CLI


def test_cli_fold_trims_then_joins_with_a_blank_line(write):
    done = cli("render", write(SYSTEM_AND_USER))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("<bos><start_of_turn>user\nYou are brief.\n\nHi<end_of_turn>\n")


def test_cli_fold_separator_flag_reads_escapes(write):
    done = cli("render", write(SYSTEM_AND_USER), "--fold-separator", r"\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == render(SYSTEM_AND_USER, RenderOptions(fold_separator="\n")).text
    assert "You are brief.\nHi<end_of_turn>" in done.stdout


def test_cli_json_carries_the_fold_note(write):
    done = cli("render", write(SYSTEM_AND_USER), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    # One short line (issue 33); the separator and the peers are `fold_details`' (below).
    assert data["notes"] == [FOLD_NOTE]
    assert data["warnings"] == []


def test_cli_generate_uses_the_fold_separator(write, tokenizer):
    path = write(SYSTEM_AND_USER)
    counts = {}
    for separator in (r"\n\n", r"\n---\n---\n"):
        done = cli(
            "generate", "--model", "tiny-random", "--messages", path, "--max-new-tokens", 1,
            "--fold-separator", separator, "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        counts[separator] = json.loads(done.stdout.splitlines()[-1])["prompt_tokens"]
    expected = render(SYSTEM_AND_USER, RenderOptions(fold_separator="\n---\n---\n")).text
    assert counts[r"\n---\n---\n"] == tokenizer.count(expected)
    assert (
        counts[r"\n---\n---\n"] > counts[r"\n\n"] == tokenizer.count(render(SYSTEM_AND_USER).text)
    )


# ------------------------------------------------------------------------ 1. the fold, API


def test_api_fold_trims_then_joins_and_notes_the_peers(client):
    prompt, details = client.predict(json.dumps(SYSTEM_AND_USER), "fold", True, api_name="/render")
    assert prompt.startswith("<bos><start_of_turn>user\nYou are brief.\n\nHi<end_of_turn>\n")
    assert json.loads(details)["notes"] == [FOLD_NOTE]


def test_api_follows_the_fold_separator_setting(settings, genai_engine):
    from gradio_client import Client

    from playground.ui import build_demo

    demo = build_demo(genai_engine, settings.with_(fold_separator="\n"))
    try:
        client = Client(serve(demo, settings), verbose=False)
        prompt, _ = client.predict(json.dumps(SYSTEM_AND_USER), "fold", True, api_name="/render")
    finally:
        demo.close()
    assert prompt == render(SYSTEM_AND_USER, RenderOptions(fold_separator="\n")).text
    assert "You are brief.\nHi<end_of_turn>" in prompt


# ----------------------------------------------------------- 2. a prefill ending in a space


def test_cli_prefill_ending_in_whitespace_warns_with_the_tokens(write, tokenizer):
    done = cli(
        "render", write([{"role": "user", "content": "Hi"}]), "--prefill", "Sure, ", "--json"
    )
    assert done.returncode == 0, done.stderr
    warning, tokens = json.loads(done.stdout)["warnings"]
    assert warning.startswith("the prefill ends in whitespace (' ')")
    assert "continue_final_message" in warning
    prompt = render([{"role": "user", "content": "Hi"}], RenderOptions(prefill="Sure, ")).text
    with_space = tokenizer.encode(prompt)
    without = tokenizer.encode(prompt.rstrip())
    assert with_space != without
    assert tokens.startswith("the prefill's trailing whitespace in tokens: the prompt ends with ")
    assert f"({with_space[-1]})" in tokens.split("; without it")[0]
    assert tokens.endswith(f"({without[-1]}).")

    done = cli("render", write([{"role": "user", "content": "Hi"}]), "--prefill", "Sure,", "--json")
    assert json.loads(done.stdout)["warnings"] == []


# ----------------------------------------------------------------------- 4. content parts


def test_cli_flattens_text_parts(write):
    done = cli("render", write(PARTS))
    assert done.returncode == 0, done.stderr
    assert done.stdout == render([{"role": "user", "content": "first\nsecond"}]).text


def test_cli_names_a_part_of_another_type(write):
    line = refused(cli("render", write(IMAGE_PART)))
    assert "message 1: content part 2 has type 'image_url'" in line


def test_api_flattens_text_parts_in_render_and_chat_history(client):
    prompt, _ = client.predict(json.dumps(PARTS), "fold", True, api_name="/render")
    assert prompt == render([{"role": "user", "content": "first\nsecond"}]).text
    history = [*PARTS, {"role": "assistant", "content": [{"type": "text", "text": "ok"}]}]
    reply = client.predict("more", json.dumps(history), "", "fold", "", 2, 0.0, api_name="/chat")
    assert isinstance(reply, str)


def test_api_names_a_part_of_another_type(client):
    with pytest.raises(AppError, match="message 1: content part 2 has type 'image_url'"):
        client.predict(json.dumps(IMAGE_PART), "fold", True, api_name="/render")
    with pytest.raises(AppError, match="message 1: content part 2 has type 'image_url'"):
        client.predict("Hi", json.dumps([*IMAGE_PART, {"role": "assistant", "content": "x"}]),
                       api_name="/chat")  # fmt: skip


# ------------------------------------------------------------- 5. the template's own words


def test_cli_quotes_the_template_after_the_explanation(write):
    users = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    line = refused(cli("render", write(users)))
    assert line.startswith("error: message 2: expected 'assistant' after 'user', got 'user'")
    assert line.endswith(f'Gemma-2\'s template says: "{TEMPLATE_ALTERNATION_ERROR}"')
    line = refused(cli("render", write(SYSTEM_AND_USER), "--system-policy", "error"))
    assert line.startswith("error: Gemma-2 was trained without a system turn")
    assert line.endswith('Its template says: "System role not supported"')


def test_api_quotes_the_template_after_the_explanation(client):
    users = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    words = re.escape(f'Gemma-2\'s template says: "{TEMPLATE_ALTERNATION_ERROR}"')
    with pytest.raises(AppError, match="^message 2: expected 'assistant' after 'user'.*" + words):
        client.predict(json.dumps(users), "fold", True, api_name="/render")
    with pytest.raises(
        AppError, match=r'trained without a system turn.*"System role not supported"'
    ):
        client.predict("Hi", "[]", "Be brief.", "error", api_name="/chat")


# ----------------------------------------------------- 3. sampling values: the command line

INSIDE = [
    # Every bound's inside value, a few to a run (each run loads the model).
    ["--top-p", "1e-9", "--top-k", "1000000000", "--repetition-penalty", "0.01",
     "--seed", str(2**64 - 1), "--temperature", "2"],
    ["--top-p", "1", "--top-k", "0", "--repetition-penalty", "1000", "--seed", "0",
     "--temperature", "0"],
    ["--stop", *[f"s{i}" for i in range(MAX_ENGINE_STOP_STRINGS - 1)], "x" * MAX_STOP_LENGTH],
    # The optimum engine (transformers' generate) takes the same low ends, top_k far past the
    # vocabulary included.
    ["--engine", "optimum", "--top-p", "1e-9", "--top-k", str(10**30),
     "--repetition-penalty", "0.01", "--seed", str(2**64 - 1), "--temperature", "2"],
]  # fmt: skip
OUTSIDE = [
    (["--top-p", "0"], "top_p must be a number above 0 and at most 1, got 0."),
    (["--top-p", "1.0001"], "top_p must be a number above 0 and at most 1, got 1.0001."),
    (["--top-p", "nan"], "top_p must be a number above 0 and at most 1, got nan."),
    (["--top-k", "-1"], "top_k must be a whole number of at least 0, got -1."),
    (["--repetition-penalty", "0"], "repetition_penalty must be a number above 0, got 0."),
    (["--repetition-penalty", "-0.5"], "repetition_penalty must be a number above 0, got -0.5."),
    (["--repetition-penalty", "inf"], "repetition_penalty must be a number above 0, got inf."),
    (["--seed", "-2"], "seed must be a whole number from -1 to 18446744073709551615, got -2."),
    (["--seed", str(2**64)], f"seed must be a whole number from -1 to {2**64 - 1}, got {2**64}."),
    (["--temperature", "-0.01"], "temperature must be a number from 0 to 2, got -0.01."),
    (["--temperature", "2.01"], "temperature must be a number from 0 to 2, got 2.01."),
    (["--max-new-tokens", "0"], "max_new_tokens must be a whole number from 1 to 8192, got 0."),
    (["--max-new-tokens", "8193"], "max_new_tokens must be a whole number from 1 to 8192, got"),
    (["--stop", *map(str, range(MAX_ENGINE_STOP_STRINGS + 1))], "stop takes at most 64 strings"),
    (["--stop", "x" * (MAX_STOP_LENGTH + 1)], "of at most 100 characters each, got one of 101."),
]


@pytest.mark.parametrize("args", INSIDE, ids=["low-ends", "high-ends", "stop-strings", "optimum"])
def test_cli_accepts_every_bound_from_inside(args):
    done = cli("generate", "--model", "tiny-random", "--prompt", "hi", "--max-new-tokens", 3,
               *args, "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert 1 <= out["new_tokens"] <= 3
    if "--seed" in args:
        assert out["seed"] == int(args[args.index("--seed") + 1])


@pytest.mark.parametrize("args, message", OUTSIDE, ids=[" ".join(a)[:30] for a, _ in OUTSIDE])
def test_cli_refuses_every_bound_from_outside(args, message):
    line = refused(cli("generate", "--model", "tiny-random", "--prompt", "hi", *args))
    assert message in line


def test_cli_max_new_tokens_up_to_what_fits_the_context():
    # "hi" is 3 tokens with <bos>: 8189 new tokens fit 8192, 8190 do not. Any vowel stops the
    # run early, so the test does not decode thousands of tokens.
    fits = cli("generate", "--model", "tiny-random", "--prompt", "hi", "--max-new-tokens", 8189,
               "--temperature", 0, "--stop", "a", "e", "i", "o", "u", "--json")  # fmt: skip
    assert fits.returncode == 0, fits.stderr[-2000:]
    assert json.loads(fits.stdout.splitlines()[-1])["prompt_tokens"] == 3
    line = refused(cli("generate", "--model", "tiny-random", "--prompt", "hi",
                       "--max-new-tokens", 8190))  # fmt: skip
    assert "The prompt has 3 tokens and max_new_tokens is 8190" in line


def test_cli_seed_minus_one_draws_one_and_reports_it():
    args = ("generate", "--model", "tiny-random", "--prompt", "Hello", "--max-new-tokens", 12,
            "--temperature", 1, "--top-k", 0, "--top-p", 1)  # fmt: skip
    drawn = cli(*args, "--seed", -1)
    assert drawn.returncode == 0, drawn.stderr[-2000:]
    (seed,) = re.findall(r"^random seed drawn: (\d+)$", drawn.stderr, flags=re.MULTILINE)
    again = cli(*args, "--seed", seed)
    assert again.returncode == 0 and "random seed drawn" not in again.stderr
    assert again.stdout == drawn.stdout
    as_json = json.loads(cli(*args, "--seed", -1, "--json").stdout.splitlines()[-1])
    assert 0 <= as_json["seed"] <= 2**31 - 1


# -------------------------------------------------------------- 3. sampling values: the API

GREEDY = dict(temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.0, seed=1)


def complete(client, max_new_tokens=3, **sampling):
    """/complete with `sampling` over the greedy defaults; the final text and the job."""
    v = {**GREEDY, **sampling}
    job = client.submit("Hello", max_new_tokens, v["temperature"], v["top_p"], v["top_k"],
                        v["repetition_penalty"], v["seed"], api_name="/complete")  # fmt: skip
    return job.result(), job


def chat(client, max_new_tokens=3, **sampling):
    v = {**GREEDY, **sampling}
    return client.predict("Hi", "[]", "", "fold", "", max_new_tokens, v["temperature"], v["top_p"],
                          v["top_k"], v["repetition_penalty"], v["seed"],
                          api_name="/chat")  # fmt: skip


API_INSIDE = [
    dict(top_p=1e-9),
    dict(top_p=1.0, temperature=1.0),
    dict(top_k=0, temperature=1.0),
    dict(top_k=10**12, temperature=1.0),  # far past the vocabulary: no cut
    dict(repetition_penalty=1e-3),
    dict(repetition_penalty=0.5),  # below 1: encourages repetition
    dict(repetition_penalty=1e6),
    dict(seed=0, temperature=1.0),
    dict(seed=2**64 - 1, temperature=1.0),
    dict(temperature=0.0),
    dict(temperature=2.0),
    dict(max_new_tokens=1),
]
API_OUTSIDE = [
    (dict(top_p=0.0), "top_p must be a number above 0 and at most 1, got 0."),
    (dict(top_p=1.0001), "top_p must be a number above 0 and at most 1, got 1.0001."),
    (dict(top_p=-1.0), "top_p must be a number above 0 and at most 1, got -1."),
    (dict(top_k=-1), "top_k must be a whole number of at least 0, got -1."),
    (dict(top_k=2.5), "top_k must be a whole number of at least 0, got 2.5."),
    (dict(repetition_penalty=0.0), "repetition_penalty must be a number above 0, got 0."),
    (dict(repetition_penalty=-1.0), "repetition_penalty must be a number above 0, got -1."),
    (dict(seed=-2), "seed must be a whole number from -1 to 18446744073709551615, got -2."),
    (dict(seed=2**64), f"seed must be a whole number from -1 to {2**64 - 1}, got {2**64}."),
    (dict(temperature=-0.01), "temperature must be a number from 0 to 2, got -0.01."),
    (dict(temperature=2.01), "temperature must be a number from 0 to 2, got 2.01."),
    (dict(max_new_tokens=0), "max_new_tokens must be a whole number from 1 to 8192, got 0."),
    (dict(max_new_tokens=8193), "max_new_tokens must be a whole number from 1 to 8192, got 8193."),
]


@pytest.mark.parametrize("values", API_INSIDE, ids=[str(v)[:40] for v in API_INSIDE])
def test_api_accepts_every_bound_from_inside(client, genai_engine, values):
    """Both endpoints take the value and the engine gets it: the same text as a direct call."""
    values = {**GREEDY, **values}
    max_new_tokens = values.pop("max_new_tokens", 3)
    params = SamplingParams(max_new_tokens=max_new_tokens, **values)
    text, _ = complete(client, max_new_tokens, **values)
    assert text == genai_engine.generate("Hello", params).run().text
    reply = chat(client, max_new_tokens, **values)
    prompt = render([{"role": "user", "content": "Hi"}]).text
    assert reply == genai_engine.generate(prompt, params).run().text


@pytest.mark.parametrize("endpoint", [complete, chat], ids=["complete", "chat"])
@pytest.mark.parametrize("values, message", API_OUTSIDE, ids=[str(v)[:40] for v, _ in API_OUTSIDE])
def test_api_refuses_every_bound_from_outside(client, endpoint, values, message):
    values = dict(values)
    max_new_tokens = values.pop("max_new_tokens", 3)
    with pytest.raises(AppError, match=re.escape(message)):
        endpoint(client, max_new_tokens, **values)


def test_api_top_p_nan_is_refused(app_url):
    # gradio_client cannot send NaN; a raw request can (JSON parsers in the wild accept it).
    import urllib.request

    body = json.dumps({"data": ["Hello", 3, 0.5, float("nan"), 0, 1.0, 1]}).encode()
    request = urllib.request.Request(app_url + "gradio_api/call/complete", data=body,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    event_id = json.loads(urllib.request.urlopen(request, timeout=60).read())["event_id"]
    with urllib.request.urlopen(f"{app_url}gradio_api/call/complete/{event_id}", timeout=120) as r:
        events = r.read().decode()
    assert "event: error" in events
    assert "top_p must be a number above 0 and at most 1, got nan." in events


def test_api_max_new_tokens_up_to_what_fits_the_context(settings, tiny_folder):
    from gradio_client import Client

    from playground.engines import load_engine
    from playground.ui import build_demo

    small = load_engine(tiny_folder, "genai", cache_dir=settings.cache_dir, context_size=24,
                        ov_config=dict(settings.ov_config))  # fmt: skip
    prompt_tokens = small.tokenizer.count("Hello")
    demo = build_demo(small, settings)
    try:
        client = Client(serve(demo, settings), verbose=False)
        text, _ = complete(client, 24 - prompt_tokens)
        assert isinstance(text, str)
        with pytest.raises(AppError, match=f"The prompt has {prompt_tokens} tokens"):
            complete(client, 24 - prompt_tokens + 1)
        with pytest.raises(AppError, match="max_new_tokens must be a whole number from 1 to 24"):
            complete(client, 25)
    finally:
        demo.close()


def _logs(job) -> list[str]:
    logs = []
    while not job.communicator.updates.empty():
        update = job.communicator.updates.get_nowait()
        if isinstance(update, StatusUpdate) and update.log:
            logs.append(update.log[0])
    return logs


@pytest.mark.parametrize("seed", [-1, None], ids=["minus-one", "empty"])
def test_api_random_seed_is_drawn_and_reported(client, seed):
    sampled = dict(temperature=1.0, top_p=1.0, top_k=0)
    text, job = complete(client, 12, seed=seed, **sampled)
    (log,) = [entry for entry in _logs(job) if entry.startswith("Random seed drawn: ")]
    drawn = int(log.removeprefix("Random seed drawn: "))
    assert 0 <= drawn <= 2**31 - 1
    again, job = complete(client, 12, seed=drawn, **sampled)
    assert again == text
    assert not [entry for entry in _logs(job) if entry.startswith("Random seed")]


def test_api_repetition_penalty_below_one_changes_the_text(client):
    plain, _ = complete(client, 40, repetition_penalty=1.0)
    encouraged, _ = complete(client, 40, repetition_penalty=0.3)
    assert plain != encouraged
