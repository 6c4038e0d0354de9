"""The genai engine in a process of its own (issue 29): no engine step freezes the app, and a
child that dies or hangs costs the running replies their end, never their text or the app.

The engine is the real one on tiny-random; its steps are made as slow as a 9B's on a Space by a
hook in the engine's process. The app is the real one over HTTP, measured from a client in a
process of its own (as a visitor is), against the idle figures measured in the same test.
"""

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

import pytest

from playground.engines import genai as genai_module
from playground.engines import load_engine
from playground.sampling import SamplingParams
from playground.ui import build_demo
from tests.conftest import ROOT, serve
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.slow

LONG = SamplingParams(max_new_tokens=4000, temperature=0, repetition_penalty=1.0)
SLOW_STEP_S = 5.0

# A light client in its own process: the latencies of `n` rounds of GET / (the page), GET
# /gradio_api/info and the /render endpoint (the Template inspector's route, no model needed).
PROBE = """
import json, sys, time, urllib.request
from gradio_client import Client
url, n = sys.argv[1], int(sys.argv[2])
client = Client(url, verbose=False)
out = {"page": [], "info": [], "render": []}
messages = json.dumps([{"role": "user", "content": "Hi"}])
for _ in range(n):
    for name, call in (
        ("page", lambda: urllib.request.urlopen(url, timeout=60).read()),
        ("info", lambda: urllib.request.urlopen(url + "gradio_api/info", timeout=60).read()),
        ("render", lambda: client.predict(messages, api_name="/render")),
    ):
        began = time.perf_counter()
        call()
        out[name].append(time.perf_counter() - began)
    print(json.dumps({"at": time.time()}), flush=True)
print(json.dumps(out))
"""


def probe(url: str, rounds: int) -> dict[str, list[float]]:
    done = subprocess.run([sys.executable, "-c", PROBE, url, str(rounds)], cwd=ROOT, check=True,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture
def engine(settings, tiny_folder):
    engine = load_engine(tiny_folder, "genai", cache_dir=settings.cache_dir, max_concurrent=2)
    yield engine
    engine.close()


def in_a_step(engine) -> None:
    """Wait until a request is inside a slow step: admitted, and no step has ended since."""
    wait_until(lambda: engine.active == 1, what="the request to be admitted")
    steps = engine.process.status["steps"]
    wait_until(lambda: engine.process.status["steps"] > steps, what="a first step to end")
    time.sleep(0.3)  # the next step has begun


def test_a_slow_step_freezes_neither_the_page_nor_render_nor_stop(engine, settings):
    demo = build_demo(engine, settings)
    try:
        url = serve(demo, settings)
        idle = probe(url, 5)
        engine.process.set_hooks(delay_s=SLOW_STEP_S)
        generation = engine.generate("Once", LONG)
        stream = iter(generation)
        threading.Thread(target=lambda: next(stream, None), daemon=True).start()
        in_a_step(engine)
        began = time.monotonic()
        busy = probe(url, 3)
        assert time.monotonic() - began < SLOW_STEP_S, "the probes ran inside one step"
        for name in idle:
            slowest, usual = max(busy[name]), statistics.median(idle[name])
            print(f"{name}: idle median {usual * 1000:.0f} ms, in a {SLOW_STEP_S:.0f} s step "
                  f"max {slowest * 1000:.0f} ms")  # fmt: skip
            assert slowest < usual + 0.2 + max(idle[name])  # generous: no wall-clock race
        # Stop, pressed inside the step, ends the reply at once, not at the step's end.
        began = time.monotonic()
        generation.cancel()
        wait_until(lambda: engine.active == 0, SLOW_STEP_S, what="Stop")
        took = time.monotonic() - began
        print(f"Stop inside a {SLOW_STEP_S:.0f} s step took {took:.2f} s")
        assert took < 0.5
    finally:
        engine.process.set_hooks(delay_s=0.0)
        demo.close()


def test_the_9bs_real_steps_freeze_neither_the_page_nor_stop(settings):
    """No hook: the real OpenVINO compute of a slice of the 9B's exact widths (2 of its 42
    layers, `bench --project 9b`), reading a 3,000-token prompt in steps of 256 tokens, each
    using every core. A visitor's page and Stop must not wait on a step, which the old engine
    in the app's process did (it held the GIL for the step's whole length)."""
    from playground.models import SLICE, resolve_model

    engine = load_engine(resolve_model(SLICE, settings.cache_dir), "genai",
                         cache_dir=settings.cache_dir, max_concurrent=2)  # fmt: skip
    demo = build_demo(engine, settings)
    try:
        url = serve(demo, settings)
        idle = probe(url, 5)
        generation = engine.generate("word " * 1500, LONG.with_(max_new_tokens=64))  # 3,001 tokens
        stream = iter(generation)
        threading.Thread(target=lambda: next(stream, None), daemon=True).start()
        in_a_step(engine)
        steps, began = engine.process.status["steps"], time.monotonic()
        busy = probe(url, 3)
        step_s = (time.monotonic() - began) / max(1, engine.process.status["steps"] - steps)
        assert generation.reading is not None, "the probes ran after the prompt was read"
        for name in idle:
            slowest, usual = max(busy[name]), statistics.median(idle[name])
            print(f"{name}: idle median {usual * 1000:.0f} ms, during {step_s:.2f} s steps "
                  f"max {slowest * 1000:.0f} ms")  # fmt: skip
            assert slowest < usual + 0.5 + max(idle[name])
        began = time.monotonic()
        generation.cancel()
        wait_until(lambda: engine.active == 0, 5, what="Stop")
        print(f"Stop during the prompt's reading took {time.monotonic() - began:.2f} s")
        assert time.monotonic() - began < 0.5
    finally:
        demo.close()
        engine.close()


def start_long_reply(engine):
    generation = engine.generate("Hi", LONG)
    stream = iter(generation)
    text = ""
    while len(text) < 20:
        text += next(stream)
    return generation, stream, text


def test_a_terminals_ctrl_c_reaches_the_app_not_the_engine_process(engine):
    # Ctrl-C in a terminal signals its foreground process group, so the child must not be in
    # the app's (test_terminal's pty Ctrl-C test drives it end to end).
    assert os.getpgid(engine.process.pid) != os.getpgid(0)
    assert os.getsid(engine.process.pid) == engine.process.pid


def test_a_killed_engine_process_ends_the_reply_keeping_its_text_and_comes_back(engine):
    engine.process.set_hooks(delay_s=0.02)  # slow enough to be killed mid-reply
    generation, stream, text = start_long_reply(engine)
    old = engine.process.pid
    os.kill(old, signal.SIGKILL)
    text += "".join(stream)
    result = generation.result
    assert result.stop_reason == "engine_stopped"
    assert result.text == text and len(text) >= 20 and result.new_tokens < 4000
    assert engine.active == 0
    wait_until(lambda: engine.status().engine_process == "running", what="a new process")
    assert engine.process.pid != old and engine.status().engine_restarts == 1
    engine.process.set_hooks(delay_s=0.0)  # the hooks outlive the process: they are reset here
    assert engine.generate("Hello", LONG.with_(max_new_tokens=5)).run().new_tokens == 5


def test_a_hung_engine_process_is_killed_and_replaced(engine, monkeypatch):
    monkeypatch.setattr(genai_module, "HANG_TIMEOUT_S", 1.0)
    engine.process.set_hooks(delay_s=0.02)
    generation, stream, text = start_long_reply(engine)
    hung = engine.process.pid
    os.kill(hung, signal.SIGSTOP)  # a step that never returns
    began = time.monotonic()
    text += "".join(stream)
    print(f"a hung process was replaced {time.monotonic() - began:.2f} s after it stopped")
    assert generation.result.stop_reason == "engine_stopped" and generation.result.text == text
    engine.process.set_hooks(delay_s=0.0)
    assert engine.generate("Hello", LONG.with_(max_new_tokens=5)).run().new_tokens == 5
    assert engine.process.pid != hung and engine.status().engine_restarts == 1


def test_an_engine_idle_past_the_hang_limit_is_not_taken_as_hung(engine, monkeypatch):
    # The silence was counted from the child's last message, so the first request after 300 s
    # of idleness found the child "silent" at once, killed it, and came back empty (the full
    # suite saw it twice).
    monkeypatch.setattr(genai_module, "HANG_TIMEOUT_S", 0.5)
    engine.generate("Hello", LONG.with_(max_new_tokens=2)).run()
    time.sleep(1.0)  # idle, past the limit
    assert engine.generate("Hello", LONG.with_(max_new_tokens=5)).run().new_tokens == 5
    assert engine.status().engine_restarts == 0


def test_prefill_progress_reaches_the_reply_before_its_first_token(engine):
    # Each slow step reads at most max_num_batched_tokens (256) of the prompt: a 1,000-token
    # prompt is read over four steps, each reported before the first token.
    engine.process.set_hooks(delay_s=0.2)
    try:
        generation = engine.generate("word " * 1000, LONG.with_(max_new_tokens=2))
        seen = []
        for _ in generation:
            if generation.reading and generation.reading not in seen:
                seen.append(generation.reading)
    finally:
        engine.process.set_hooks(delay_s=0.0)
    total = generation.result.prompt_tokens
    assert [r.of for r in seen] == [total] * len(seen) and len(seen) >= 3
    assert [r.read for r in seen] == sorted({r.read for r in seen}) and seen[0].read == 256


def test_a_model_that_fails_to_load_raises_one_clear_error(settings, tiny_folder):
    from playground.engines import EngineError

    with pytest.raises(EngineError, match=r"OpenVINO could not load .* NOT_A_PROPERTY"):
        load_engine(tiny_folder, "genai", cache_dir=settings.cache_dir,
                    ov_config={"NOT_A_PROPERTY": "1"})  # fmt: skip


def test_a_playground_that_refuses_prompt_lookup_never_builds_its_pipeline(settings, tiny_folder):
    from playground.engines import EngineError

    engine = load_engine(tiny_folder, "genai", cache_dir=settings.cache_dir, prompt_lookup=False)
    try:
        with pytest.raises(EngineError, match=r"turned off here \(prompt_lookup: false\)"):
            engine.generate("Hello", LONG.with_(max_new_tokens=5, prompt_lookup=True))
        assert engine.generate("Hello", LONG.with_(max_new_tokens=5)).run().new_tokens == 5
        assert engine.status().prompt_lookup_loaded is False
    finally:
        engine.close()
