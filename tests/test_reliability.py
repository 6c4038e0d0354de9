"""A public page in front of one shared model: bad input, cancellation, concurrency, failures.

Everything here runs against a real Gradio server over HTTP. The engine is the real one on the
tiny model, paced like the real model where timing matters, or the recording fake where the
point is that nothing reaches the model.
"""

import contextlib
import http.client
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from playground.engines import EngineError
from playground.engines import base as base_module
from playground.sampling import SamplingParams
from playground.ui import build_demo
from tests.conftest import ROOT, serve
from tests.helpers.fakes import RecordingEngine
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.slow

GREEDY = [0.0, 1.0, 0, 1.0, 1]  # temperature, top_p, top_k, repetition_penalty, seed


def call_raw(url: str, api: str, body: str) -> tuple[str, str]:
    """POST a raw JSON body (NaN and Infinity included) to an endpoint; return (event, data)."""
    request = urllib.request.Request(
        f"{url}gradio_api/call/{api}",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            event_id = json.loads(response.read())["event_id"]
    except urllib.error.HTTPError as error:
        return "http_error", f"{error.code} {error.read().decode(errors='replace')}"
    with urllib.request.urlopen(f"{url}gradio_api/call/{api}/{event_id}", timeout=120) as stream:
        lines = stream.read().decode().splitlines()
    events = [line.split(":", 1)[1].strip() for line in lines if line.startswith("event:")]
    data = [line.split(":", 1)[1].strip() for line in lines if line.startswith("data:")]
    return events[-1], data[-1]


@pytest.fixture(scope="module")
def recording(tiny_folder, settings):
    engine = RecordingEngine(tiny_folder)
    demo = build_demo(engine, settings)
    yield engine, serve(demo, settings)
    demo.close()


@pytest.fixture
def paced(paced_engine, paced_app_url):
    paced_engine.peak_active = 0
    yield paced_engine, paced_app_url
    wait_until(lambda: paced_engine.active == 0, what="the engine to be idle")


# ---- 1. one generation at a time ------------------------------------------------------------


def test_chat_and_completion_from_two_clients_never_overlap(paced):
    engine, url = paced
    chat_client, raw_client = Client(url, verbose=False), Client(url, verbose=False)
    chat = chat_client.submit("Hi", "[]", "", "fold", "", 40, *GREEDY, api_name="/chat")
    raw = raw_client.submit("Once upon a time", 40, *GREEDY, api_name="/complete")
    assert chat.result() and raw.result()
    assert engine.peak_active == 1


# ---- 2. stop and client disconnects ---------------------------------------------------------


def test_cancelled_client_job_stops_the_native_loop(paced):
    engine, url = paced
    client = Client(url, verbose=False)
    counted = count_tokens(engine)
    job = client.submit("Once upon a time", 4000, *GREEDY, api_name="/complete")
    wait_until(lambda: len(job.outputs()) >= 2, what="streaming to start")
    job.cancel()
    at_cancel = counted[0]
    wait_until(lambda: engine.active == 0, what="the native loop to stop")
    assert counted[0] - at_cancel < 50  # stopped within a second of tokens, not at 4000
    assert client.predict("Hello", 5, *GREEDY, api_name="/complete")  # the next one runs


def count_tokens(engine):
    """Count the tokens the native loop produces, from now on."""
    counted = [0]
    run = engine.run_native

    def counting_run(prompt, params, on_token):
        def counting(token_id, score=None, text=None):
            counted[0] += 1
            return on_token(token_id, score, text)

        return run(prompt, params, counting)

    engine.run_native = counting_run
    return counted


# ---- 3. failures inside generation ----------------------------------------------------------


def test_failure_inside_generation_is_reported_and_frees_everything(
    genai_engine, client, monkeypatch
):
    # The engine's process raises "injected failure: /secret/path" in its next step.
    genai_engine.process.set_hooks(fail=1)
    with pytest.raises(AppError) as raised:
        client.predict("Hello", 10, *GREEDY, api_name="/complete")
    message = str(raised.value)
    assert "Generation failed inside the engine" in message
    assert "/secret/path" not in message and "Traceback" not in message
    wait_until(lambda: genai_engine.active == 0, what="the failed request to end")
    assert client.predict("Hello", 5, *GREEDY, api_name="/complete")


def test_a_pipeline_that_stalls_times_out_and_frees_its_slot(settings, tiny_folder, monkeypatch):
    from playground.engines import load_engine

    engine = load_engine(tiny_folder, "genai", cache_dir=settings.cache_dir, max_concurrent=1)
    engine.process.set_hooks(delay_s=1.5)  # every step stalls 1.5 s
    monkeypatch.setattr(base_module, "TOKEN_TIMEOUT_S", 0.3)
    with pytest.raises(EngineError, match=r"produced nothing"):
        engine.generate("Hello", SamplingParams(max_new_tokens=5)).run()
    # The stream gave up, which cancels the request: its slot is free at once.
    wait_until(lambda: engine.active == 0, what="the slot")
    engine.process.set_hooks(delay_s=0.0)
    monkeypatch.setattr(base_module, "TOKEN_TIMEOUT_S", 30.0)
    assert engine.generate("Hello", SamplingParams(max_new_tokens=5)).run().new_tokens
    engine.close()


# ---- 4. a full queue ------------------------------------------------------------------------


def test_full_queue_answers_clearly_and_recovers(paced_engine, settings):
    demo = build_demo(paced_engine, settings.with_(queue_size=1))
    url = serve(demo, settings)
    try:
        clients = [Client(url, verbose=False) for _ in range(4)]
        jobs = [c.submit("Hello", 60, *GREEDY, api_name="/complete") for c in clients]
        outcomes = []
        for job in jobs:
            try:
                job.result()
                outcomes.append("done")
            except Exception as error:  # the client raises on a full queue
                outcomes.append(str(error))
        assert outcomes.count("done") >= 1
        full = [o for o in outcomes if o != "done"]
        assert full and all("queue is full" in o.lower() for o in full)
        assert Client(url, verbose=False).predict("Hello", 5, *GREEDY, api_name="/complete")
    finally:
        demo.close()


# ---- 5. context overflow --------------------------------------------------------------------


def test_context_overflow_is_refused_before_the_model_and_the_limit_is_accepted(
    recording, tokenizer
):
    engine, url = recording
    client = Client(url, verbose=False)
    # Each "<start_of_turn>" is exactly one token: with <bos>, n of them make n + 1 tokens.
    at_limit = "<start_of_turn>" * (8192 - 4096 - 1)
    assert tokenizer.count(at_limit) + 4096 == 8192
    calls = len(engine.calls)
    with pytest.raises(AppError, match=r"4097 tokens and max_new_tokens is 4096.*8192"):
        client.predict(at_limit + "<start_of_turn>", 4096, *GREEDY, api_name="/complete")
    assert len(engine.calls) == calls  # refused before any model call
    assert client.predict(at_limit, 4096, *GREEDY, api_name="/complete") == "Fine, thanks."


def test_chat_drops_the_oldest_turns_to_fit(recording, tokenizer):
    engine, url = recording
    long_text = "Hello world. " * 500
    per_message = tokenizer.count(long_text)
    assert 2000 < per_message < 4000
    history = [
        {"role": "user", "content": "FIRST " + long_text},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "SECOND " + long_text},
        {"role": "assistant", "content": "ok"},
    ]
    client = Client(url, verbose=False)
    reply = client.predict("NEWEST " + long_text, json.dumps(history), "", "fold", "", 2048,
                           *GREEDY, api_name="/chat")  # fmt: skip
    assert reply == "Fine, thanks."
    sent = engine.calls[-1]
    assert "FIRST" not in sent["prompt"] and "NEWEST" in sent["prompt"]
    assert len(sent["ids"]) + 2048 <= 8192


# ---- 6. bad values past the UI --------------------------------------------------------------

CHAT_REST = ", 20, 0.5, 0.9, 50, 1.0, 1"  # max_new_tokens … seed
BAD_CALLS = [
    ("complete", '["Hello", 20, NaN, 0.9, 50, 1.0, 1]', "temperature must be"),
    ("complete", '["Hello", 20, Infinity, 0.9, 50, 1.0, 1]', "temperature must be"),
    ("complete", '["Hello", 20, 0.5, -Infinity, 50, 1.0, 1]', "top_p must be"),
    ("complete", '["Hello", 1e9, 0.5, 0.9, 50, 1.0, 1]', "max_new_tokens must be"),
    ("complete", '["Hello", 20, 0.5, 0.9, 50, 1.0, 1.5]', "seed must be"),
    ("complete", '["Hello", "20", 0.5, 0.9, 50, 1.0, 1]', "max_new_tokens must be"),
    ("complete", '["Hello", 20, 0.5, 0.9, [5], 1.0, 1]', "top_k must be"),
    ("complete", '["Hello", 20, 0.5, 0.9, 50, "1.0", 1]', "repetition_penalty must be"),
    ("complete", '["Hello", 20, 0.5, 0.9, 50, true, 1]', "repetition_penalty must be"),
    ("complete", '[["a"], 20, 0.5, 0.9, 50, 1.0, 1]', "must be text"),
    ("complete", json.dumps(["x" * 1_000_000, 20, 0.5, 0.9, 50, 1.0, 1]), "characters"),
    ("complete", '["", 20, 0.5, 0.9, 50, 1.0, 1]', "empty"),
    ("complete", '["  \\n ", 20, 0.5, 0.9, 50, 1.0, 1]', "empty"),
    ("chat", '["Hi", "[{", "", "fold", ""' + CHAT_REST + "]", "not valid JSON"),
    ("chat", '["Hi", "[{\\"role\\": \\"robot\\", \\"content\\": \\"x\\"}]", "", "fold", ""'
     + CHAT_REST + "]", "robot"),
    ("chat", '["", "[]", "", "fold", ""' + CHAT_REST + "]", "empty"),
    ("chat", '["Hi", "[]", "", "bogus", ""' + CHAT_REST + "]", "fold"),
    ("chat", '["Hi", "[]", "", "fold", ""' + CHAT_REST.replace("0.5", "NaN") + "]",
     "temperature must be"),
    ("render", '["[{\\"role\\": \\"wizard\\", \\"content\\": \\"x\\"}]", "fold", true]',
     "wizard"),
    ("render", '["{\\"messages\\": 5}", "fold", true]', "array"),
    ("render", '[5, "fold", true]', "must be text"),
]  # fmt: skip


@pytest.mark.parametrize("api, data, message", BAD_CALLS)
def test_bad_values_get_a_clear_error_and_never_reach_the_engine(recording, api, data, message):
    engine, url = recording
    calls = len(engine.calls)
    event, detail = call_raw(url, api, f'{{"data": {data}}}')
    assert event == "error", detail
    assert message.lower() in detail.lower()
    assert "Traceback" not in detail
    assert len(engine.calls) == calls
    assert Client(url, verbose=False).predict("Hello", 5, *GREEDY, api_name="/complete")


# ---- 8. hardened for a public Space ---------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "app.py", "../app.py", "space.yaml", "%2e%2e/%2e%2e/etc/passwd",
     str(ROOT / "app.py"), str(ROOT / ".cache")],
)  # fmt: skip
def test_file_route_serves_nothing_of_the_repo_or_system(app_url, path):
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{app_url}gradio_api/file={path}", timeout=30)
    assert refused.value.code == 403


def test_upload_size_is_capped_and_monitoring_is_off(app_url):
    body = b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.txt"\r\n\r\n'
    body += b"a" * 2_000_000 + b"\r\n--x--\r\n"
    # The server may answer 413 and close before it has read the whole body: the client's send
    # then breaks (EPIPE, once in a full run on 2026-12-07), but the answer is there to read.
    host, port = urllib.parse.urlsplit(app_url).netloc.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        connection.request("POST", "/gradio_api/upload", body,
                           {"Content-Type": "multipart/form-data; boundary=x"})  # fmt: skip
    assert connection.getresponse().status == 413
    connection.close()
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{app_url}gradio_api/monitoring", timeout=30)
    assert missing.value.code in (403, 404)


def test_concurrent_engine_use_from_threads_is_bounded_by_its_slots(genai_engine):
    """The engine's slots alone (no Gradio queue) bound how many requests decode together,
    and batching changes no greedy reply."""
    genai_engine.peak_active = 0
    params = SamplingParams(max_new_tokens=30, temperature=0, repetition_penalty=1.0)
    alone = genai_engine.generate("Hello", params).run().text
    results = []

    def run():
        results.append(genai_engine.generate("Hello", params).run().text)

    threads = [threading.Thread(target=run) for _ in range(genai_engine.max_concurrent + 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [alone] * len(threads)
    assert 1 < genai_engine.peak_active <= genai_engine.max_concurrent


def test_a_generation_cancelled_while_queued_for_a_slot_ends_as_cancelled(tiny_folder):
    engine = RecordingEngine(tiny_folder)
    assert engine._admission.enter(1, threading.Event(), 1)  # another holds the one slot
    cancel = threading.Event()
    generation = engine.generate("Hello", SamplingParams(max_new_tokens=5), cancel)
    threading.Timer(0.2, cancel.set).start()  # the visitor leaves while waiting
    start = time.monotonic()
    result = generation.run()
    assert result.stop_reason == "cancelled" and result.new_tokens == 0
    assert time.monotonic() - start < 2  # at once, not when the slot is free again
    assert engine.calls == []  # the model never ran
    engine._admission.leave(1)
