"""The real app on the tiny model, over HTTP with gradio_client: every named endpoint."""

import json
import os
import subprocess
import sys
import time

import pytest
from gradio_client.exceptions import AppError

from playground.chat_format import RenderOptions, render
from playground.sampling import SamplingParams
from tests.conftest import ROOT, free_port, wait_for_page

pytestmark = pytest.mark.slow

GREEDY = dict(temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.0, seed=1)
CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]


def complete(client, prompt, max_new_tokens=20, **sampling):
    values = {**GREEDY, **sampling}
    job = client.submit(
        prompt,
        max_new_tokens,
        values["temperature"],
        values["top_p"],
        values["top_k"],
        values["repetition_penalty"],
        values["seed"],
        api_name="/complete",
    )
    outputs = list(job)
    return outputs, job.outputs()[-1]


def test_named_endpoints_and_their_parameters(client):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(api) == {
        "/chat", "/complete", "/render", "/chat_json", "/complete_json", "/status", "/compare"
    }  # fmt: skip

    def names(endpoint):
        return [p["parameter_name"] for p in api[endpoint]["parameters"]]

    assert names("/render") == ["conversation", "system_policy", "add_generation_prompt"]
    assert names("/compare")[:3] == ["conversation", "columns", "prefill"]
    assert names("/complete") == [
        "prompt", "max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed",
    ]  # fmt: skip
    assert names("/complete_json") == [*names("/complete"), "stop", "logprobs", "prompt_lookup"]
    assert names("/chat_json") == [*names("/chat"), "stop", "logprobs", "prompt_lookup"]
    assert names("/chat")[:5] == ["message", "history", "system_prompt", "system_policy", "prefill"]


def test_render_returns_the_exact_prompt_first(client):
    conversation = [
        {"role": "system", "content": "Be brief."},
        *CHAT,
        {"role": "user", "content": "<b>x</b>"},
    ]
    prompt, details = client.predict(json.dumps(conversation), "fold", True, api_name="/render")
    assert prompt == render(conversation).text
    assert prompt.startswith("<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n")
    view = json.loads(details)
    assert view["bos_count"] == 1 and view["token_count"] == len(view["tokens"])
    no_gen, _ = client.predict(json.dumps(CHAT), "fold", False, api_name="/render")
    assert not no_gen.endswith("<start_of_turn>model\n")


@pytest.mark.parametrize(
    "conversation, policy, message",
    [
        ('[{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]', "error",
         "System role not supported"),
        ('[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]', "fold",
         "message 2"),
        ('[{"role": "robot", "content": "a"}]', "fold", "robot"),
        ("[{", "fold", "not valid JSON"),
        ("[]", "fold", "empty"),
    ],
)  # fmt: skip
def test_render_errors_come_back_as_messages(client, conversation, policy, message):
    with pytest.raises(AppError, match=message):
        client.predict(conversation, policy, True, api_name="/render")


def test_complete_streams_and_matches_the_engine(client, genai_engine):
    outputs, final = complete(client, "Hello", max_new_tokens=200)
    assert len(outputs) >= 2  # streamed, not one answer at the end
    assert all(final.startswith(partial) for partial in outputs)
    params = SamplingParams(max_new_tokens=200, **GREEDY)
    assert final == genai_engine.generate("Hello", params).run().text


def test_sliders_reach_the_engine(client, genai_engine):
    sampled = dict(temperature=1.0, top_p=0.95, top_k=0, repetition_penalty=1.0)
    _, first = complete(client, "Hello", 30, **sampled, seed=3)
    _, again = complete(client, "Hello", 30, **sampled, seed=3)
    _, other = complete(client, "Hello", 30, **sampled, seed=4)
    assert first == again != other
    _, short = complete(client, "Hello", 5)
    result = genai_engine.generate("Hello", SamplingParams(max_new_tokens=5, **GREEDY)).run()
    assert short == result.text and result.new_tokens == 5


def test_chat_renders_with_the_template_and_streams(client, genai_engine):
    job = client.submit(
        "How are you?", json.dumps(CHAT), "Be brief.", "fold", "Sure,", 16, *GREEDY.values(),
        api_name="/chat",
    )  # fmt: skip
    reply = job.result()
    assert reply.startswith("Sure,")
    messages = [{"role": "system", "content": "Be brief."}, *CHAT,
                {"role": "user", "content": "How are you?"}]  # fmt: skip
    prompt = render(messages, RenderOptions(prefill="Sure,")).text
    expected = genai_engine.generate(prompt, SamplingParams(max_new_tokens=16, **GREEDY)).run()
    assert reply == "Sure," + expected.text


@pytest.mark.parametrize(
    "args, message",
    [
        (("Hello", 20, 5.0, 0.9, 50, 1.0, 1), "temperature must be a number from 0 to 2"),
        (("Hello", 0, 0.5, 0.9, 50, 1.0, 1), "max_new_tokens must be"),
        (("Hello", 20, 0.5, 0.9, 50, 1.0, -2), "seed must be"),  # issue 13: -1 is random
        (("", 20, 0.5, 0.9, 50, 1.0, 1), "empty"),
        (("   ", 20, 0.5, 0.9, 50, 1.0, 1), "empty"),
    ],
)
def test_complete_errors_come_back_as_messages(client, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/complete")


def test_chat_errors_come_back_as_messages(client):
    with pytest.raises(AppError, match="robot"):
        client.predict("Hi", '[{"role": "robot", "content": "x"}]', api_name="/chat")
    with pytest.raises(AppError, match="System role not supported"):
        client.predict("Hi", "[]", "Be brief.", "error", api_name="/chat")


def test_app_py_falls_back_to_the_tiny_model_with_a_banner(tmp_path):
    """`python app.py` with the default model unreachable: starts on tiny-tutor, says why."""
    port = free_port()
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    env.pop("PLAYGROUND_MODEL", None)
    server = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        page = wait_for_page(f"http://127.0.0.1:{port}/", server)
        assert "tiny-tutor" in page and "hf download fakezeta/gemma-2-9b-it-ov-int4" in page
    finally:
        server.terminate()
        log = server.communicate(timeout=60)[0]
    assert "You are talking to tiny-tutor, a small demo model" in log
    # The plain words are the visitor's; the exception's name is the operator's, in the log.
    assert "is not downloaded on this server" in page and "LocalEntryNotFoundError" not in page
    assert "could not be had (LocalEntryNotFoundError" in log
    # One short generation ran before the server said it was up (issue 12's warm-up).
    assert log.index("warmed up in") < log.index("Running on local URL")


def test_explicit_model_never_falls_back(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "app.py", "--model", "fakezeta/gemma-2-9b-it-ov-int4",
         "--port", str(free_port())],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode != 0
    assert "Could not get the model 'fakezeta/gemma-2-9b-it-ov-int4'" in done.stderr


def test_an_ov_config_openvino_refuses_ends_app_py_with_one_line(tmp_path):
    """OpenVINO's multi-line C++ error becomes the app's one line, naming the config."""
    env = {**os.environ, "HF_HOME": str(tmp_path), "PLAYGROUND_OV_CONFIG": '{"NOT_A_PROPERTY": 1}'}
    done = subprocess.run(
        [sys.executable, "app.py", "--model", "tiny-random", "--port", str(free_port())],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    said = "OpenVINO could not load tiny-random on CPU with ov_config {'NOT_A_PROPERTY': '1'}: "
    assert said + "NotFound: Unsupported property NOT_A_PROPERTY by CPU plugin." in done.stderr


def test_downloads_older_than_an_hour_go_at_the_next_pruning_write(tmp_path, monkeypatch):
    from playground.ui import common

    monkeypatch.setattr(common, "DOWNLOADS", tmp_path)
    old = common.write_download("a/conversation.json", "{}")
    an_hour_ago = time.time() - common.DOWNLOAD_AGE_S - 1
    os.utime(old, (an_hour_ago, an_hour_ago))
    common.write_download("b/conversation.json", "{}")
    assert old.exists()  # the folder was walked moments ago: not again before PRUNE_EVERY_S
    monkeypatch.setattr(common, "_next_prune", 0.0)
    recent = common.write_download("b/conversation.json", '{"messages": []}')
    assert not old.exists() and not old.parent.exists()
    assert recent.read_text() == '{"messages": []}'
    assert common.write_download("b/lesson.md", "# 1").parent == recent.parent
