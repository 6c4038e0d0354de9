"""Soak: 200 requests with random valid values from 4 parallel clients against `python app.py`,
which decodes up to 4 at once: chats, completions, renders, Stops (a job cancelled mid-stream)
and closed pages (a client that goes away mid-stream).

Every request ends and none fails; afterwards the engine is idle (nothing running or waiting,
no KV-cache block held), and the server's peak memory after warm-up grows by less than 10%.
The figures are written to artifacts/soak.json for the closing note.
"""

import json
import os
import random
import subprocess
import sys
import threading
import time

import psutil
import pytest
from gradio_client import Client

from tests.conftest import ROOT, free_port, wait_for_page

pytestmark = pytest.mark.slow

REQUESTS, CLIENTS, WARM_UP = 200, 4, 20


def visitor_of(client: Client) -> dict[str, str]:
    """The visitor's address header a client was made with."""
    return {"X-Forwarded-For": client.headers["X-Forwarded-For"]}


def random_call(client: Client, rng: random.Random) -> object:
    sampling = [
        rng.randint(1, 48),  # max_new_tokens
        round(rng.uniform(0, 1.5), 2),  # temperature
        round(rng.uniform(0.1, 1.0), 2),  # top_p
        rng.randint(0, 100),  # top_k
        round(rng.uniform(1.0, 1.5), 2),  # repetition_penalty
        rng.randint(0, 2**31 - 1),  # seed
    ]
    kind = rng.choice(["complete", "chat", "render", "stop", "close"])
    if kind in ("stop", "close"):
        # A long reply, left mid-stream: Stop cancels the job; a closed page drops the client.
        owner = (
            client
            if kind == "stop"
            else Client(client.src, verbose=False, headers=visitor_of(client))
        )
        job = owner.submit("Once upon", 400, *sampling[1:], api_name="/complete")
        deadline = time.monotonic() + 60
        while not job.outputs() and not job.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        job.cancel()
        if kind == "close":
            owner.close()
        return kind
    if kind == "complete":
        return client.predict(rng.choice(["Hello", "Once upon", "def f("]), *sampling,
                              api_name="/complete")  # fmt: skip
    history = json.dumps(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}]
    )
    if kind == "chat":
        return client.predict("How are you?", history, rng.choice(["", "Be brief."]), "fold", "",
                              *sampling, api_name="/chat")  # fmt: skip
    return client.predict(history, "fold", False, api_name="/render")


def test_soak_200_requests_from_4_clients(tmp_path):
    port = free_port()
    # A small session capacity: the closed clients' sessions (never closed for Gradio) must be
    # evicted, so memory stays bounded however many visitors come and go.
    # Behind one proxy, as on a Space: X-Forwarded-For tells the clients apart.
    env = {**os.environ, "PLAYGROUND_QUEUE_SIZE": "64", "PLAYGROUND_SESSION_CAPACITY": "16",
           "PLAYGROUND_TRUSTED_PROXY_HOPS": "1"}  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, "app.py", "--model", "tiny-random", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for_page(url, server)
        process = psutil.Process(server.pid)
        warm = Client(url, verbose=False)
        failures: list[str] = []
        counts = [0] * CLIENTS

        def worker(index: int, requests: int, seed: int):
            # Each its own visitor, as behind a Space's proxy: the app shares its slots out by
            # the address the proxy appends to X-Forwarded-For (all of these come from 127.0.0.1).
            visitor = {"X-Forwarded-For": f"192.0.2.{index + 1}"}
            client = Client(url, verbose=False, headers=visitor)
            worker_rng = random.Random(seed)
            for _ in range(requests):
                try:
                    random_call(client, worker_rng)
                    counts[index] += 1
                except Exception as error:
                    failures.append(f"{type(error).__name__}: {error}")

        def run_clients(requests: int, seed: int) -> None:
            """The mix from CLIENTS clients at once, `requests` each."""
            workers = [
                threading.Thread(target=worker, args=(i, requests, seed + i))
                for i in range(CLIENTS)
            ]
            for thread in workers:
                thread.start()
            for thread in workers:
                thread.join()

        # The warm-up is the same mix, concurrent too: the KV cache and the batched buffers
        # grow to their working size before the baseline is taken.
        run_clients(WARM_UP // CLIENTS, seed=100)
        assert failures == []
        counts = [0] * CLIENTS
        baseline = process.memory_info().rss
        peak = [baseline]
        done = threading.Event()

        def sample():
            while not done.wait(0.1):
                peak[0] = max(peak[0], process.memory_info().rss)

        sampler = threading.Thread(target=sample)
        sampler.start()
        start = time.monotonic()
        run_clients(REQUESTS // CLIENTS, seed=1)
        elapsed = time.monotonic() - start
        done.set()
        sampler.join()
        deadline = time.monotonic() + 60
        while (status := json.loads(warm.predict(api_name="/status")))["active"]:
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=60)
    growth = peak[0] / baseline - 1
    figures = {
        "requests": sum(counts),
        "failures": failures,
        "seconds": round(elapsed, 1),
        "rss_after_warm_up_mb": round(baseline / 2**20, 1),
        "peak_rss_mb": round(peak[0] / 2**20, 1),
        "growth_percent": round(100 * growth, 2),
        "engine_after": status,
    }
    (ROOT / "artifacts").mkdir(exist_ok=True)
    (ROOT / "artifacts" / "soak.json").write_text(json.dumps(figures, indent=2))
    assert failures == []
    assert sum(counts) == REQUESTS
    assert status["waiting"] == 0 and status["kv_cache_usage"] == 0.0, status
    assert growth < 0.10, figures
