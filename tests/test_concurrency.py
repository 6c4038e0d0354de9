"""Many visitors at once (issue 12): continuous batching, token probabilities, prompt lookup.

The engines are the real ones: tiny-tutor where replies matter, tiny-random (paced like a real
model, four slots) where only overlap and cancellation do. Over HTTP through gradio_client
where a visitor meets them.
"""

import json
import math
import random
import subprocess
import sys
import threading

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from playground.chat_format import render
from playground.engines import EngineError, load_engine
from playground.sampling import SamplingParams
from playground.ui import build_demo
from tests.conftest import ROOT, serve
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.slow

GREEDY = SamplingParams(max_new_tokens=80, temperature=0, repetition_penalty=1.0)
QUESTIONS = ["What is 7 plus 5?", "What is 9 minus 4?", "What is 3 times 4?", "Say hello."]


def chat_prompt(question: str) -> str:
    return render([{"role": "user", "content": question}]).text


def run_together(engine, prompts, params=GREEDY):
    """Start every generation at once, each from its own thread; return their results."""
    results = [None] * len(prompts)
    start = threading.Barrier(len(prompts))

    def run(i):
        start.wait()
        results[i] = engine.generate(prompts[i], params).run()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return results


# ---- the engine -------------------------------------------------------------------------------


def test_batched_replies_equal_the_replies_alone(tutor_engine):
    prompts = [chat_prompt(q) for q in QUESTIONS]
    alone = [tutor_engine.generate(p, GREEDY).run() for p in prompts]
    together = run_together(tutor_engine, prompts)
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    assert alone[0].text == "7+1=8, 7+2=9, 7+3=10, 7+4=11, 7+5=12. So 7 plus 5 is 12."
    assert all(r.stop_reason == "end_of_turn" for r in together)


def test_four_generations_run_at_once_and_one_is_cancelled_alone(batched_engine):
    batched_engine.peak_active = 0
    params = GREEDY.with_(max_new_tokens=60)
    generations = [batched_engine.generate(f"Story {i}:", params) for i in range(4)]
    streams = [iter(g) for g in generations]
    for stream in streams:
        next(stream)  # every one has started streaming
    assert batched_engine.active == 4
    generations[1].cancel()
    results = [g.run() for g in generations]
    assert batched_engine.peak_active == 4
    assert results[1].stop_reason == "cancelled" and results[1].new_tokens < 60
    assert [r.stop_reason for i, r in enumerate(results) if i != 1] == ["max_new_tokens"] * 3
    wait_until(lambda: batched_engine.active == 0)


def test_the_kv_cache_is_released_when_idle(settings, tiny_folder):
    engine = load_engine(tiny_folder, "genai", cache_dir=settings.cache_dir, max_concurrent=4)

    def probe_bytes() -> float:
        """KV-cache bytes held at the last step of a lone 1-token request (GenAI gives a
        percentage of a cache that grows as needed), as the engine's process reports it."""
        steps = engine.process.status["steps"]
        engine.generate("Probe", GREEDY.with_(max_new_tokens=1)).run()
        wait_until(lambda: engine.process.status["steps"] > steps, what="the probe's step")
        status = engine.process.status
        return status["kv_cache_step_usage"] * status["kv_cache_bytes"]

    before = probe_bytes()
    params = GREEDY.with_(max_new_tokens=50)
    generations = [engine.generate(f"Text {i} " * 20, params) for i in range(8)]
    for i, generation in enumerate(generations):
        if i % 3 == 0:
            next(iter(generation))
            generation.cancel()  # a visitor who pressed Stop
    for generation in generations:
        generation.run()
    wait_until(lambda: engine.status().kv_cache_usage == 0.0, what="the last step's status")
    assert engine.status().kv_cache_bytes > before  # the cache grew
    assert probe_bytes() == pytest.approx(before)  # no block of the 8 requests is still held
    engine.close()


def test_a_hundred_greedy_calls_on_tiny_random_are_never_nan(genai_engine):
    """GenAI raises on NaN logits when log-probabilities are asked for, and the engine always
    asks: a call that completes had finite logits, and never all-<pad> output."""
    rng = random.Random(0)
    words = ["Hello", "Once upon", "def f(", "1 2 3", "ü漢字 🎉", "\n\n", chat_prompt("Hi")]
    for _ in range(100):
        prompt = " ".join(rng.choice(words) for _ in range(rng.randint(1, 6)))
        result = genai_engine.generate(prompt, GREEDY.with_(max_new_tokens=16)).run()
        assert not all(token == 0 for token in result.token_ids)
        assert all(s is not None and math.isfinite(s.logprob) for s in result.scores)


def test_optimum_gives_the_five_likeliest_tokens(optimum_engine):
    result = optimum_engine.generate("Once upon a time", GREEDY.with_(max_new_tokens=8)).run()
    for token_id, score in zip(result.token_ids, result.scores, strict=True):
        assert len(score.alternatives) == 5
        best_id, best_logprob = score.alternatives[0]
        assert token_id == best_id and score.logprob == pytest.approx(best_logprob)
        assert [lp for _, lp in score.alternatives] == sorted(
            (lp for _, lp in score.alternatives), reverse=True
        )


def test_prompt_lookup_needs_the_genai_engine(optimum_engine):
    with pytest.raises(EngineError, match="genai engine"):
        optimum_engine.generate("Hello", GREEDY.with_(prompt_lookup=True))


# ---- over HTTP --------------------------------------------------------------------------------


def complete_json(client, prompt, max_new_tokens=80, logprobs=0, prompt_lookup=False):
    return json.loads(
        client.predict(
            prompt, max_new_tokens, 0.0, 1.0, 0, 1.0, 1, "", logprobs, prompt_lookup,
            api_name="/complete_json",
        )
    )  # fmt: skip


def test_four_clients_stream_at_once_over_http(batched_app_url, batched_engine):
    batched_engine.peak_active = 0
    clients = [Client(batched_app_url, verbose=False) for _ in range(4)]
    jobs = [
        c.submit(f"Story {i}:", 60, 0.0, 1.0, 0, 1.0, 1, "", 0, False, api_name="/complete_json")
        for i, c in enumerate(clients)
    ]
    wait_until(lambda: all(len(j.outputs()) >= 1 for j in jobs))
    assert batched_engine.active == 4  # all four decode now; none waits for another
    jobs[2].cancel()
    ends = [json.loads(j.result()) for i, j in enumerate(jobs) if i != 2]
    assert [e["figures"]["new_tokens"] for e in ends] == [60, 60, 60]
    wait_until(lambda: batched_engine.active == 0)
    assert batched_engine.peak_active == 4


def test_the_api_returns_each_token_with_its_logprob(tutor_client):
    out = complete_json(tutor_client, chat_prompt("What is 7 plus 5?"), logprobs=3)
    tokens = out["tokens"]
    assert len(tokens) == out["figures"]["new_tokens"]
    assert "".join(t["token"] for t in tokens) == out["text"] + "<end_of_turn>"
    assert all(t["logprob"] <= 0 for t in tokens)
    assert tokens[-1]["token"] == "<end_of_turn>" and math.exp(tokens[-1]["logprob"]) > 0.5
    assert "tokens" not in complete_json(tutor_client, "Hi", max_new_tokens=3)


@pytest.mark.parametrize("bad", [-1, 21, 2.5, "3", True])
def test_a_bad_logprobs_value_is_refused_clearly(tutor_client, bad):
    with pytest.raises(AppError, match="logprobs must be a whole number from 0 to 20"):
        complete_json(tutor_client, "Hi", max_new_tokens=3, logprobs=bad)


def test_prompt_lookup_keeps_the_greedy_reply_and_counts_its_drafts(tutor_client):
    prompt = chat_prompt("Repeat after me: the red fox ran home.")
    plain = complete_json(tutor_client, prompt)
    drafted = complete_json(tutor_client, prompt, prompt_lookup=True)
    assert drafted["text"] == plain["text"]
    assert "accepted_drafts" not in plain["figures"]
    assert 0 <= drafted["figures"]["accepted_drafts"] < drafted["figures"]["new_tokens"]


def test_greedy_ids_equal_a_bare_llm_pipeline(tutor_engine):
    """The engine before continuous batching was openvino_genai.LLMPipeline: same ids."""
    import numpy as np
    import openvino as ov
    import openvino_genai

    pipe = openvino_genai.LLMPipeline(str(tutor_engine.folder), "CPU")
    prompts = [chat_prompt(q) for q in [*QUESTIONS, "Hi, I am Lena."]]
    for prompt in prompts:
        ids = tutor_engine.tokenizer.encode(prompt)
        config = openvino_genai.GenerationConfig(
            max_new_tokens=80,
            apply_chat_template=False,
            stop_token_ids=set(tutor_engine.tokenizer.eos_ids),
        )
        bare = pipe.generate(ov.Tensor(np.array([ids], dtype=np.int64)), config)
        ours = tutor_engine.generate(prompt, GREEDY).run()
        assert list(bare.tokens[0]) == ours.token_ids


def test_a_late_visitor_reaches_a_busy_engine_within_one_step(settings, tiny_folder):
    # Issue 20, then 29: while three chats decoded, a fourth visitor's request needed one of the
    # stepper's pauses for each hop through uvicorn and Gradio's queue, since a step held the
    # app's GIL. The engine now steps in a process of its own: a step of 1 s (a hook in that
    # process, a 9B's pace) no longer delays the app, so the late visitor's endpoint runs within
    # one step of its sending. The visitors are light HTTP clients in a process of their own.
    engine = load_engine(tiny_folder, "genai", cache_dir=settings.cache_dir, max_concurrent=4)
    engine.process.set_hooks(delay_s=1.0)
    demo = build_demo(engine, settings)
    try:
        url = serve(demo, settings)
        visitors = (
            "import json, sys; from playground.bench.serving import light_at_once; "
            "print(json.dumps(light_at_once(sys.argv[1], [8, 8, 8, 2], delays=[0, 0, 0, 3.5])))"
        )
        done = subprocess.run([sys.executable, "-c", visitors, url], cwd=ROOT, check=True,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        *busy, late = json.loads(done.stdout)
        received = late["timeline"]["received"]
        assert all(chat["end"] > received for chat in busy), "the others still decoded"
        waited = received - late["start"]
        print(f"late visitor: its endpoint ran {waited:.2f} s after it sent")
        assert waited < 1.0  # within the step under way (several steps with the GIL held)
    finally:
        demo.close()
        engine.close()
