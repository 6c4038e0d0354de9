"""The benchmark's concurrency section: `python -m playground.bench --concurrency`.

Owns: serving several visitors at once, measured as they meet it, in one run: 1, 2 and 4 chats
sent together to the engine alone (threads in a process of their own) and to `python app.py`'s
API by light HTTP clients (aggregate tokens/s, each request's first token split into queue,
engine and stream by the server's timeline); a late arrival that sends while three others
decode; and the single-visitor decode of the app's engine against a bare
`openvino_genai.LLMPipeline` (the engine before continuous batching).
`--remote`: 1, 4 and 16 visitors at once through the app on the remote engine (llama.cpp's
server) beside the local engine, and the app's CPU per streamed token.
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

from playground.bench.measure import PROMPT
from playground.chat_format import DEFAULT_SYSTEM_POLICY, render
from playground.settings import ENV

ROOT = Path(__file__).resolve().parents[2]
GREEDY = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0, "seed": 1}
LATE_AFTER_S = 1.0  # the late visitor sends this long after three others started
COUNTS = (1, 2, 4)  # chats at once


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
    env = _env(model_cache, ov_config)
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


def _env(model_cache: str, ov_config: str) -> dict[str, str]:
    """The environment of the app and of the bench's engine processes: the same settings."""
    return {**os.environ, ENV["cache_dir"]: model_cache, ENV["ov_config"]: ov_config,
            ENV["queue_size"]: "64"}  # fmt: skip


def _baseline_main(folder: str, new_tokens: int, repeats: int) -> None:
    """In its own process: greedy decode tokens/s of a bare LLMPipeline, GenAI's own figure."""
    import openvino_genai

    pipe = openvino_genai.LLMPipeline(folder, "CPU")
    prompt = render([{"role": "user", "content": PROMPT}]).text
    config = openvino_genai.GenerationConfig(max_new_tokens=new_tokens, apply_chat_template=False)
    pipe.generate(prompt, openvino_genai.GenerationConfig(max_new_tokens=8))  # warm-up
    rates = []
    for _ in range(repeats):
        result = pipe.generate([prompt], config)
        rates.append(result.perf_metrics.get_throughput().mean)
    print(json.dumps({"tokens_per_s": rates}))


def concurrency(opts: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The section's raw samples, in one run: 1, 2 and 4 chats at once at the engine (threads
    calling it in a process of its own, no app), then the same through the app with light
    clients, each count twice, interleaved; a late arrival; a bare LLMPipeline."""
    n = opts.new_tokens
    env = _env(str(opts.model_cache), opts.ov_config)
    out: dict[str, Any] = {"new_tokens": n, "engine": _run_json(
        [sys.executable, "-m", "playground.bench.serving", "--engine-level", opts.model, str(n)],
        env, "the engine-level run")}  # fmt: skip
    out["at_once"] = {str(count): [] for count in COUNTS}
    out["cpu"] = {str(count): [] for count in COUNTS}
    out["late"] = []
    apps: list = []
    with serving(opts.model, str(opts.model_cache), opts.ov_config, process=apps) as url:
        light_at_once(url, [8], PROMPT)  # warm the server's path once more, as a visitor would
        cpu = _cpu_clocks(apps[0].pid)
        for _ in range(2):
            for count in COUNTS:
                before = cpu()
                out["at_once"][str(count)].append(light_at_once(url, [n] * count, PROMPT))
                out["cpu"][str(count)].append([b - a for a, b in zip(before, cpu(), strict=True)])
            late = light_at_once(url, [4 * n] * 3 + [n], PROMPT, [0, 0, 0, LATE_AFTER_S])
            out["late"].append(late)
    out["llm_pipeline"] = _run_json(
        [sys.executable, "-m", "playground.bench.serving", "--baseline", str(folder), str(n),
         str(opts.repeats)],
        env, "the LLMPipeline baseline",
    )  # fmt: skip
    return out


FREEZE_WORDS, FREEZE_TOKENS, PROBE_EVERY_S = 3000, 64, 0.05


def freeze(opts: argparse.Namespace) -> dict[str, Any]:
    """What one long prompt costs every other visitor (issue 29): a plain GET of
    /gradio_api/info and a /render call, one after the other every 50 ms, for 5 s with the app
    idle, then while it processes one raw prompt of 3,000 words with 64 new tokens through
    /complete. Latencies in seconds."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client

    with serving(opts.model, str(opts.model_cache), opts.ov_config) as url:
        light_at_once(url, [8], PROMPT)  # warm
        out = {"idle": _probe(url, lambda began: time.monotonic() - began > 5)}
        with ThreadPoolExecutor(1) as pool:
            prompt = "word " * FREEZE_WORDS
            long = pool.submit(Client(url, verbose=False).predict, prompt, FREEZE_TOKENS,
                               *list(GREEDY.values()), api_name="/complete")  # fmt: skip
            began = time.monotonic()
            out["busy"] = _probe(url, lambda _: long.done())
            long.result()
            out["long_prompt_s"] = time.monotonic() - began
    return out


def _probe(url: str, done: Any) -> dict[str, list[float]]:
    """GET /gradio_api/info and POST /render (read to its end), every PROBE_EVERY_S until
    `done(began)`; each call's latency."""
    import urllib.request

    render_body = json.dumps({"data": [json.dumps([{"role": "user", "content": "Hi"}])]})
    times: dict[str, list[float]] = {"info": [], "render": []}
    began = time.monotonic()
    while not done(began):
        start = time.perf_counter()
        urllib.request.urlopen(url + "gradio_api/info", timeout=120).read()
        times["info"].append(time.perf_counter() - start)
        start = time.perf_counter()
        post = urllib.request.Request(url + "gradio_api/call/render", render_body.encode(),
                                      {"Content-Type": "application/json"})  # fmt: skip
        event = json.loads(urllib.request.urlopen(post, timeout=120).read())["event_id"]
        urllib.request.urlopen(f"{url}gradio_api/call/render/{event}", timeout=120).read()
        times["render"].append(time.perf_counter() - start)
        time.sleep(PROBE_EVERY_S)
    return times


def freeze_table(section: dict[str, Any]) -> str:
    rows = [
        "| app | call | n | median, ms | p95, ms | p99, ms | max, ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for state, label in (("idle", "idle"), ("busy", f"reading {FREEZE_WORDS:,} words")):
        for call, times in section[state].items():
            ms = sorted(t * 1000 for t in times)
            pick = [ms[min(len(ms) - 1, int(q * len(ms)))] for q in (0.95, 0.99)]
            rows.append(f"| {label} | {call} | {len(ms)} | {statistics.median(ms):.0f} | "
                        f"{pick[0]:.0f} | {pick[1]:.0f} | {ms[-1]:.0f} |")  # fmt: skip
    rows.append(f"\n- the long prompt's /complete took {section['long_prompt_s']:.1f} s")
    return "\n".join(rows)


def _cpu_clocks(app_pid: int) -> Any:
    """A reading of (wall, the app process's CPU, its engine process's CPU) seconds: on 2 cores
    what the app spends streaming comes out of the engine's inference threads."""
    import psutil

    app = psutil.Process(app_pid)
    engines = [c for c in app.children() if "_genai_process" in " ".join(c.cmdline())]

    def read() -> tuple[float, float, float]:
        return (time.time(), sum(app.cpu_times()[:2]),
                sum(sum(e.cpu_times()[:2]) for e in engines))  # fmt: skip

    return read


def _run_json(command: list[str], env: dict[str, str], what: str) -> Any:
    """Run a bench helper process; its last line of output is JSON."""
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{what} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _engine_main(model: str, new_tokens: int) -> None:
    """In its own process: the app's engine, loaded as the app loads it, with 1, 2 and 4
    threads calling it at once (each count twice, interleaved): the aggregate without the
    app."""
    from concurrent.futures import ThreadPoolExecutor

    from playground.engines import open_engine
    from playground.sampling import SamplingParams
    from playground.settings import load_settings

    engine, _ = open_engine(load_settings(model=model))
    prompt = render([{"role": "user", "content": PROMPT}]).text
    params = SamplingParams(**GREEDY, max_new_tokens=new_tokens)
    # Warmed as the app is: the same prompt once (its prefix is then cached, as in the app).
    engine.generate(prompt, params.with_(max_new_tokens=8)).run()
    runs: dict[str, list] = {str(count): [] for count in COUNTS}
    for _ in range(2):
        for count in COUNTS:
            with ThreadPoolExecutor(count) as pool:
                chats = [pool.submit(_engine_chat, engine, prompt, params) for _ in range(count)]
                runs[str(count)].append([chat.result() for chat in chats])
    print(json.dumps(runs))


def _engine_chat(engine: Any, prompt: str, params: Any) -> dict:
    """One generation timed as `light_chat` times a chat, with the engine's own stamps."""
    start = time.time()
    generation = engine.generate(prompt, params)
    first = None
    for _ in generation:
        first = first or time.time()
    result, end = generation.result, time.time()
    # A reply that ends at once streams no text: its first token reaches the caller at the end.
    return {"start": start, "first": first or end, "end": end, "new_tokens": result.new_tokens,
            "ttft_s": result.ttft_s, "tokens_per_s": result.tokens_per_s,
            "timeline": result.timeline}  # fmt: skip


# tiny-tutor repeats this in about 260 tokens (it refuses PROMPT in 46).
REPEAT = "Repeat after me: " + "la " * 40


def light_chat(
    url: str, question: str, new_tokens: int, source: str = "127.0.0.1", delay: float = 0.0
) -> dict:
    """One chat over Gradio's plain HTTP API (a POST, then the SSE stream read line by line),
    sent after `delay` s: a client that costs almost no CPU, unlike a gradio_client process
    per visitor. `source` is the loopback address it sends from: the app tells visitors apart
    by address. Returns the client's times, the figures and the server's timeline."""
    import http.client
    from urllib.parse import urlsplit

    where = urlsplit(url)
    body = [question, "[]", "", DEFAULT_SYSTEM_POLICY, "", new_tokens, *GREEDY.values(), "", 0,
            False]  # fmt: skip

    def connection() -> http.client.HTTPConnection:
        return http.client.HTTPConnection(
            where.hostname, where.port, timeout=900, source_address=(source, 0)
        )

    time.sleep(delay)
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
    out = json.loads(json.loads(last)[0])
    return {"start": start, "first": first, "end": end, **out["figures"],
            "timeline": out["timeline"]}  # fmt: skip


def light_at_once(
    url: str, new_tokens: list[int], question: str = REPEAT, delays: list[float] | None = None
) -> list[dict]:
    """One light chat per entry of `new_tokens`, sent together (or each after its `delays`),
    each from its own thread and loopback address (the app's fair queue allows one address
    only its share once every slot is busy)."""
    from concurrent.futures import ThreadPoolExecutor

    delays = delays or [0.0] * len(new_tokens)
    with ThreadPoolExecutor(len(new_tokens)) as pool:
        runs = [
            pool.submit(light_chat, url, question, n, f"127.0.0.{2 + i}", delay)
            for i, (n, delay) in enumerate(zip(new_tokens, delays, strict=True))
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
                light_at_once(url, [8])  # warm
                app = psutil.Process(apps[0].pid)
                out[name] = {str(count): [] for count in (1, 4, 16)}
                for _ in range(2):  # each count twice, interleaved
                    for count in (1, 4, 16):
                        cpu = sum(app.cpu_times()[:2])
                        runs = light_at_once(url, [opts.new_tokens] * count)
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


def split(request: dict) -> dict[str, float]:
    """A request's time to first token at its client, in parts by the server's timeline:
    queue (sending, Gradio's queue, rendering, waiting for a slot), engine (prefill to the
    first token) and stream (the token's way to the client); `to_app` is the part of the
    queue before the app's endpoint ran (absent at the engine alone)."""
    stamps = request["timeline"]
    parts = {
        "queue": stamps["admitted"] - request["start"],
        "engine": stamps["first_token"] - stamps["admitted"],
        "stream": request["first"] - stamps["first_token"],
    }
    if "received" in stamps:
        parts["to_app"] = stamps["received"] - request["start"]
    return parts


def _medians(requests: list[dict]) -> str:
    parts = [split(r) for r in requests]
    names = ("queue", "engine", "stream")
    return " / ".join(f"{statistics.median(p[name] for p in parts):.3f}" for name in names)


def _first(request: dict) -> float:
    return request["first"] - request["start"]


def table(section: dict[str, Any]) -> str:
    rows = [
        "| chats at once | where | aggregate tokens/s (median) | × one chat | app / engine | "
        "first token at the client, s (median, max) | queue / engine / stream, s (medians) |",
        "|---|---|---|---|---|---|---|",
    ]
    rate = {}
    for where, runs_by_count in (("engine", section["engine"]), ("app", section["at_once"])):
        one = statistics.median(aggregate_tokens_per_s(r) for r in runs_by_count["1"])
        for count, runs in runs_by_count.items():
            rate[where, count] = statistics.median(aggregate_tokens_per_s(r) for r in runs)
            ratio = (f"{rate[where, count] / rate['engine', count]:.2f}×"
                     if where == "app" else "")  # fmt: skip
            requests = [req for run in runs for req in run]
            firsts = [_first(req) for req in requests]
            rows.append(
                f"| {count} | {where} | {rate[where, count]:.1f} | "
                f"{rate[where, count] / one:.2f}× | {ratio} | "
                f"{statistics.median(firsts):.3f}, {max(firsts):.3f} | {_medians(requests)} |"
            )
    late = [run[-1] for run in section["late"]]
    to_app = statistics.median(split(r)["to_app"] for run in section["at_once"]["1"] for r in run)
    one_app = statistics.median(_first(r) for run in section["at_once"]["1"] for r in run)
    one_engine = statistics.median(_first(r) for run in section["engine"]["1"] for r in run)
    single = [r[0]["tokens_per_s"] for r in section["at_once"]["1"]]
    bare = section["llm_pipeline"]["tokens_per_s"]
    rows += [
        "",
        f"- late arrival (sent {LATE_AFTER_S:.0f} s after three others started decoding): first "
        "token at the client in " + ", ".join(f"{_first(r):.3f}" for r in late) + " s; "
        f"queue / engine / stream {_medians(late)} s",
        f"- one chat's first token at the client: {one_app:.3f} s through the app, "
        f"{one_engine:.3f} s at the engine alone ({one_app - one_engine:+.3f} s); of the app's, "
        f"{to_app:.3f} s passed before its endpoint ran",
        f"- one visitor's decode through the app: {statistics.median(single):.1f} tokens/s "
        f"(GenAI's figure); a bare LLMPipeline in the same run: {statistics.median(bare):.1f} "
        f"tokens/s ({statistics.median(single) / statistics.median(bare):.2f}×)",
    ]
    for count, runs in section.get("cpu", {}).items():
        cores = [(app / wall, engine / wall) for wall, app, engine in runs]
        rows.append(
            f"- {count} at once through the app: the app process used "
            + ", ".join(f"{a:.2f}" for a, _ in cores) + " of a core, its engine process "
            + ", ".join(f"{e:.2f}" for _, e in cores) + " cores"
        )  # fmt: skip
    return "\n".join(rows)


if __name__ == "__main__":
    if sys.argv[1] == "--baseline":
        _baseline_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "--engine-level":
        _engine_main(sys.argv[2], int(sys.argv[3]))
