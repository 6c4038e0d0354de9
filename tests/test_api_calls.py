"""The API over HTTP with gradio_client (issue 10): it gives what the UI shows, errors stay inert
text, and expected errors log one line."""

import json
import logging

import pytest
from gradio_client.exceptions import AppError

pytestmark = pytest.mark.slow

GREEDY = dict(temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.0, seed=1)


def test_17_complete_takes_stop_strings_and_returns_figures(client, genai_engine):
    from playground.sampling import SamplingParams

    full = genai_engine.generate("Hello", SamplingParams(max_new_tokens=40, **GREEDY)).run().text
    stop = full[10:14]
    assert stop and stop not in full[:13]
    out = client.predict("Hello", 40, *GREEDY.values(), stop, api_name="/complete_json")
    data = json.loads(out)
    assert data["text"] == full[: full.index(stop)]
    figures = data["figures"]
    assert figures["stop_reason"] == "stop_string" and figures["seed"] == 1
    assert set(figures) == {"stop_reason", "prompt_tokens", "new_tokens", "ttft_s",
                            "tokens_per_s", "seed"}  # fmt: skip


def test_17_chat_returns_figures_by_name(client):
    out = client.predict("Hi", api_name="/chat_json", max_new_tokens=5, seed=9, stop="zzz")
    data = json.loads(out)
    assert data["figures"]["new_tokens"] <= 5 and data["figures"]["seed"] == 9


def test_17_the_api_page_describes_every_parameter(app_url):
    import urllib.request

    with urllib.request.urlopen(app_url + "gradio_api/info", timeout=30) as response:
        info = json.loads(response.read())["named_endpoints"]
    for name, endpoint in info.items():
        if name in ("/render", "/status"):  # no sampling parameters
            continue
        for parameter in endpoint["parameters"]:
            assert f"{parameter['parameter_name']}: " in endpoint["description"], name
        assert "0 means no limit" in endpoint["description"]  # top_k's help, from sampling
    for name in ("/complete_json", "/chat_json"):
        assert "stop_reason" in info[name]["description"]


def test_2_and_6_error_messages_are_escaped_and_logged_in_one_line(client, caplog, capfd):
    caplog.set_level(logging.INFO, logger="playground.ui")
    with pytest.raises(AppError) as raised:
        client.predict("<img src=x>", "[{", api_name="/chat")
    assert "not valid JSON" in str(raised.value)
    with pytest.raises(AppError) as raised:
        client.predict("", 5, api_name="/complete")
    assert "The prompt is empty" in str(raised.value)
    refusals = [r for r in caplog.records if r.getMessage().startswith("refused in")]
    assert len(refusals) == 2 and all(r.exc_info is None for r in refusals)
    assert "Traceback" not in capfd.readouterr().err


def test_2_a_message_quoting_markup_comes_back_escaped(client):
    with pytest.raises(AppError) as raised:
        client.predict('[{"role": "<img src=x>", "content": "x"}]', "fold", True,
                       api_name="/render")  # fmt: skip
    message = str(raised.value)
    assert "&lt;img src=x&gt;" in message and "<img" not in message


def test_the_positional_parameters_of_complete_chat_and_compare_are_frozen(app_url):
    # Gradio refuses a raw HTTP call that leaves out a parameter: one added to these lists breaks
    # every caller (issue 31). A new sampling field belongs on the _json endpoints, at the end.
    import urllib.request

    with urllib.request.urlopen(app_url + "gradio_api/info", timeout=30) as response:
        info = json.loads(response.read())["named_endpoints"]
    sampling = ["max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed"]
    frozen = {
        "/complete": ["prompt", *sampling],
        "/chat": ["message", "history", "system_prompt", "system_policy", "prefill", *sampling],
        "/compare": ["conversation", "columns", "prefill", *sampling],
    }
    for name, parameters in frozen.items():
        assert [p["parameter_name"] for p in info[name]["parameters"]] == parameters, name
    for name, leading in (("/complete_json", "/complete"), ("/chat_json", "/chat")):
        shown = [p["parameter_name"] for p in info[name]["parameters"]]
        assert shown[: len(frozen[leading]) + 3] == [*frozen[leading], "stop", "logprobs",
                                                     "prompt_lookup"]  # fmt: skip
