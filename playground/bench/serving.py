"""The benchmark's concurrency section: `python -m playground.bench --concurrency`.

Owns: serving several visitors at once, measured as they meet it: 1, 2 and 4 chats sent at the
same moment to `python app.py`'s API, each from its own process (aggregate tokens/s and each
request's time to first token); a late arrival that sends while three others decode; and the
single-visitor decode of the app's engine against a bare `openvino_genai.LLMPipeline` (the
engine before continuous batching), in the same run.
`--remote`: 1, 4 and 16 visitors at once through the app on the remote engine (llama.cpp's
server) beside the local engine, with light HTTP clients, and the app's CPU per streamed token.
Does not own: the other sections (`engines`, `peers`), the engines or the app (it drives them
as a user would). Timing lives here: the tests check behaviour only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playground.chat_format import DEFAULT_SYSTEM_POLICY, render
from playground.settings import ENV

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "Write a story about a lighthouse keeper who finds a message in a bottle."
GREEDY = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0, "seed": 1}
LATE_AFTER_S = 1.0  # the late visitor sends this long after three others started


@contextmanager
def serving(
    model: str, model_cache: str, ov_config: str, *flags: str, process: list | None = None
) -> Iterator[str]:
    """`python app.py` on `model` (with `flags`) on a free local port; yields its URL. The
    server's process is appended to `process`, for those who measure it."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        ENV["cache_dir"]: model_cache,
        ENV["ov_config"]: ov_config,
        ENV["queue_size"]: "64",
    }
    server = subprocess.Popen(
        [sys.executable, "app.py", "--model", model, "--port", str(port), *flags],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    if process is not None:
        process.append(server)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                urllib.request.urlopen(url + "config", timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the app did not start") from None
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=60)


def client_main(url: str, at: float, new_tokens: int) -> None:
    """In its own process: wait until `at` (epoch seconds), send one chat, print its times."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    time.sleep(max(0.0, at - time.time()))
    start = time.time()
    first = last = None
    job = client.submit(QUESTION, "[]", "", DEFAULT_SYSTEM_POLICY, "", new_tokens,
                        *GREEDY.values(), "", 0, False, api_name="/chat_json")  # fmt: skip
    for update in job:
        first = first or time.time()
        last = update
    end = time.time()
    figures = json.loads(last)["figures"]
    print(json.dumps({"start": start, "first": first, "end": end, **figures}))


def _send_at_once(url: str, delays: list[float], new_tokens: list[int]) -> list[dict]:
    """Start one client process per delay; each sends `delay` s after a shared start."""
    at = time.time() + 5.0  # time for every process to import gradio_client and connect
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "playground.bench.serving", url, str(at + delay), str(n)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for delay, n in zip(delays, new_tokens, strict=True)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise SystemExit(f"a bench client failed:\n{err[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def _baseline_main(folder: str, new_tokens: int, repeats: int) -> None:
    """In its own process: greedy decode tokens/s of a bare LLMPipeline, GenAI's own figure."""
    import openvino_genai

    pipe = openvino_genai.LLMPipeline(folder, "CPU")
    prompt = render([{"role": "user", "content": QUESTION}]).text
    config = openvino_genai.GenerationConfig(max_new_tokens=new_tokens, apply_chat_template=False)
    pipe.generate(prompt, openvino_genai.GenerationConfig(max_new_tokens=8))  # warm-up
    rates = []
    for _ in range(repeats):
        result = pipe.generate([prompt], config)
        rates.append(result.perf_metrics.get_throughput().mean)
    print(json.dumps({"tokens_per_s": rates}))


def concurrency(opts: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The section's raw samples: each count of concurrent chats twice, interleaved."""
    n = opts.new_tokens
    out: dict[str, Any] = {"new_tokens": n, "at_once": {"1": [], "2": [], "4": []}, "late": []}
    with serving(opts.model, str(opts.model_cache), opts.ov_config) as url:
        _send_at_once(url, [0.0], [8])  # warm the server's path once more, as a visitor would
        for _ in range(2):
            for count in (1, 2, 4):
                out["at_once"][str(count)].append(_send_at_once(url, [0.0] * count, [n] * count))
            out["late"].append(_send_at_once(url, [0, 0, 0, LATE_AFTER_S], [4 * n] * 3 + [n]))
    done = subprocess.run(
        [sys.executable, "-m", "playground.bench.serving", "--baseline", str(folder), str(n),
         str(opts.repeats)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"the LLMPipeline baseline failed:\n{done.stderr[-2000:]}")
    out["llm_pipeline"] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


# tiny-tutor repeats this in about 260 tokens (it refuses QUESTION in 46).
REPEAT = "Repeat after me: " + "la " * 40


def light_chat(url: str, question: str, new_tokens: int, source: str = "127.0.0.1") -> dict:
    """One chat over Gradio's plain HTTP API (a POST, then the SSE stream read line by line):
    a client that costs almost no CPU, unlike a gradio_client process per visitor. `source` is
    the loopback address it sends from: the app tells visitors apart by address."""
    import http.client
    from urllib.parse import urlsplit

    where = urlsplit(url)
    body = [question, "[]", "", DEFAULT_SYSTEM_POLICY, "", new_tokens, *GREEDY.values(), "", 0,
            False]  # fmt: skip

    def connection() -> http.client.HTTPConnection:
        return http.client.HTTPConnection(
            where.hostname, where.port, timeout=900, source_address=(source, 0)
        )

    start = time.time()
    post = connection()
    post.request("POST", "/gradio_api/call/chat_json", json.dumps({"data": body}),
                 {"Content-Type": "application/json"})  # fmt: skip
    event_id = json.loads(post.getresponse().read())["event_id"]
    post.close()
    stream = connection()
    stream.request("GET", f"/gradio_api/call/chat_json/{event_id}")
    first = last = None
    for line in stream.getresponse():
        if line.startswith(b"data:") and line[5:].strip() not in (b"null", b""):
            first = first or time.time()
            last = line[5:]
    stream.close()
    end = time.time()
    figures = json.loads(json.loads(last)[0])["figures"]
    return {"start": start, "first": first, "end": end, **figures}


def light_at_once(url: str, count: int, new_tokens: int) -> list[dict]:
    """`count` light chats sent together, each from its own thread and loopback address (the
    app's fair queue allows one address only its share once every slot is busy)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(count) as pool:
        runs = [
            pool.submit(light_chat, url, REPEAT, new_tokens, f"127.0.0.{2 + i}")
            for i in range(count)
        ]
        return [run.result() for run in runs]


def remote(opts: argparse.Namespace) -> dict[str, Any]:
    """1, 4 and 16 visitors at once through the app on the remote engine (llama-cpp-python's
    server on tiny-tutor's GGUF) and on the local genai engine, in one run, with the app
    process's own CPU seconds per streamed token on each."""
    import psutil

    from playground import llama_server

    out: dict[str, Any] = {"new_tokens": opts.new_tokens}
    llama, base_url = llama_server.start(threads=2)
    try:
        for name, flags in (
            ("remote", ("--engine", "remote", "--base-url", base_url)),
            ("genai", ()),
        ):
            apps: list = []
            with serving("tiny-tutor", str(opts.model_cache), "{}", *flags, process=apps) as url:
                light_at_once(url, 1, 8)  # warm
                app = psutil.Process(apps[0].pid)
                out[name] = {str(count): [] for count in (1, 4, 16)}
                for _ in range(2):  # each count twice, interleaved
                    for count in (1, 4, 16):
                        cpu = sum(app.cpu_times()[:2])
                        runs = light_at_once(url, count, opts.new_tokens)
                        cpu = sum(app.cpu_times()[:2]) - cpu
                        tokens = sum(r["new_tokens"] for r in runs)
                        out[name][str(count)].append(
                            {"requests": runs, "app_cpu_s_per_token": cpu / tokens}
                        )
    finally:
        llama.terminate()
        llama.wait(30)
    return out


def remote_table(section: dict[str, Any]) -> str:
    rows = [
        "| engine | visitors at once | aggregate tokens/s (each run) | first token, s (median, "
        "max) | app CPU ms per streamed token (each run) |",
        "|---|---|---|---|---|",
    ]
    for name in ("remote", "genai"):
        for count, runs in section[name].items():
            rates = [aggregate_tokens_per_s(run["requests"]) for run in runs]
            ttfts = [r["first"] - r["start"] for run in runs for r in run["requests"]]
            cpu = [1000 * run["app_cpu_s_per_token"] for run in runs]
            rows.append(
                f"| {name} | {count} | {', '.join(f'{r:.0f}' for r in rates)} | "
                f"{statistics.median(ttfts):.2f}, {max(ttfts):.2f} | "
                f"{', '.join(f'{c:.2f}' for c in cpu)} |"
            )
    return "\n".join(rows)


def aggregate_tokens_per_s(requests: list[dict]) -> float:
    """Tokens of every request over the wall time from the first send to the last end."""
    wall = max(r["end"] for r in requests) - min(r["start"] for r in requests)
    return sum(r["new_tokens"] for r in requests) / wall


def table(section: dict[str, Any]) -> str:
    rows = [
        "| chats at once | aggregate tokens/s | × one chat | time to first token, s "
        "(each request) |",
        "|---|---|---|---|",
    ]
    one = statistics.median(aggregate_tokens_per_s(r) for r in section["at_once"]["1"])
    for count, runs in section["at_once"].items():
        rate = statistics.median(aggregate_tokens_per_s(r) for r in runs)
        ttfts = sorted(req["first"] - req["start"] for r in runs for req in r)
        rows.append(
            f"| {count} | {rate:.1f} | {rate / one:.2f}× | "
            + ", ".join(f"{t:.2f}" for t in ttfts)
            + " |"
        )
    late = [r[-1]["first"] - r[-1]["start"] for r in section["late"]]
    single = [r[0]["tokens_per_s"] for r in section["at_once"]["1"]]
    bare = section["llm_pipeline"]["tokens_per_s"]
    rows += [
        "",
        f"- late arrival (sent {LATE_AFTER_S:.0f} s after three others started decoding): first "
        "token in " + ", ".join(f"{t:.2f}" for t in late) + " s",
        f"- one visitor's decode through the app: {statistics.median(single):.1f} tokens/s "
        f"(GenAI's figure); a bare LLMPipeline in the same run: {statistics.median(bare):.1f} "
        f"tokens/s ({statistics.median(single) / statistics.median(bare):.2f}×)",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    if sys.argv[1] == "--baseline":
        _baseline_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        client_main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))
