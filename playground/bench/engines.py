"""The engines section of the benchmark: `python -m playground.bench [--model M] [--json OUT]`.

Owns: measuring, side by side in one run, engine load (cold and warm compiled-model cache, each
in a fresh process), time to first token and decode tokens/s of the `genai` and `optimum`
engines (greedy and sampling), the same through the running app's API, time to first token over
a 6-turn chat, peak memory per engine, and the machine's memory bandwidth with the roofline it
implies. It prints a markdown table; `--json` keeps every raw sample.
Does not own: the engines or the app (it drives them as a user would). Timing lives here and
only here: the test suite checks behaviour, never speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from playground.bench.measure import PROMPT, cell, cpu_name, package_versions, peak_rss_mb
from playground.chat_format import render
from playground.sampling import SamplingParams

ENGINES = ("genai", "optimum")


def _modes(new_tokens: int) -> dict[str, SamplingParams]:
    return {
        "greedy": SamplingParams(max_new_tokens=new_tokens, temperature=0, repetition_penalty=1.0),
        "sampling": SamplingParams(
            max_new_tokens=new_tokens, temperature=0.8, top_p=0.95, top_k=50, seed=1
        ),
    }


def worker(args: argparse.Namespace) -> None:
    """In a fresh process: load one engine, measure, print one JSON object."""
    from playground.engines import load_engine
    from playground.models import resolve_model

    cache_dir = Path(args.cache_dir)
    folder = resolve_model(args.model, Path(args.model_cache))
    ov_config = json.loads(args.ov_config)
    start = time.perf_counter()
    engine = load_engine(folder, args.worker, cache_dir=cache_dir, ov_config=ov_config)
    out: dict[str, Any] = {"load_s": time.perf_counter() - start}
    if not args.load_only:
        prompt = render([{"role": "user", "content": PROMPT}]).text
        for mode, params in _modes(args.new_tokens).items():
            engine.generate(prompt, params.with_(max_new_tokens=8)).run()  # warm-up
            runs, totals = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                runs.append(engine.generate(prompt, params).run())
                totals.append(time.perf_counter() - start)
            out[mode] = {
                "ttft_s": [r.ttft_s for r in runs],
                "tokens_per_s": [r.tokens_per_s for r in runs],
                "new_tokens": [r.new_tokens for r in runs],
                "total_s": totals,
            }
        out["chat_ttft_s"] = _chat_turns(engine, args.turn_tokens)
    out["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(out))


def _chat_turns(engine, turn_tokens: int, turns: int = 6) -> list[float]:
    """Time to first token at each turn of a chat whose user turns are ~`turn_tokens` tokens."""
    words = [
        "The",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "the",
        "lazy",
        "dog",
        "near",
        "the",
        "old",
        "river",
        "bank",
    ]
    history: list[dict[str, str]] = []
    ttfts = []
    params = SamplingParams(max_new_tokens=16, temperature=0, repetition_penalty=1.0)
    for turn in range(turns):
        text = f"Turn {turn}:"
        while engine.tokenizer.count(text) < turn_tokens:
            text += " " + " ".join(words[turn % 5 :] + words[: turn % 5])
        history.append({"role": "user", "content": text})
        result = engine.generate(render(history).text, params).run()
        ttfts.append(result.ttft_s)
        history.append({"role": "assistant", "content": result.text.strip() or "ok"})
    return ttfts


def _run_worker(kind: str, opts: argparse.Namespace, cache_dir: Path, load_only: bool) -> dict:
    command = [
        sys.executable, "-m", "playground.bench", "--worker", kind, "--model", opts.model,
        "--cache-dir", str(cache_dir), "--model-cache", str(opts.model_cache),
        "--ov-config", opts.ov_config, "--new-tokens", str(opts.new_tokens),
        "--repeats", str(opts.repeats), "--turn-tokens", str(opts.turn_tokens),
    ] + (["--load-only"] if load_only else [])  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench worker {kind} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _through_app(opts: argparse.Namespace, direct: dict) -> dict:
    """The same greedy requests through `python app.py`'s /complete, from this process."""
    from gradio_client import Client

    from playground.bench.serving import serving

    with serving(opts.model, str(opts.model_cache), opts.ov_config) as url:
        client = Client(url, verbose=False)
        prompt = render([{"role": "user", "content": PROMPT}]).text
        args = (prompt, opts.new_tokens, 0.0, 1.0, 0, 1.0, 1)
        client.predict(prompt, 8, 0.0, 1.0, 0, 1.0, 1, api_name="/complete")  # warm-up
        ttfts, totals = [], []
        for _ in range(opts.repeats):
            start = time.perf_counter()
            first = None
            for _ in client.submit(*args, api_name="/complete"):
                first = first or time.perf_counter()
            end = time.perf_counter()
            ttfts.append((first or end) - start)
            totals.append(end - start)
    tokens = statistics.median(direct["greedy"]["new_tokens"])
    return {
        "ttft_s": ttfts,
        "total_s": totals,
        "tokens_per_s": [tokens / t for t in totals],  # greedy: the same tokens as direct
    }


def memory_bandwidth_gbs(size_mb: int = 512, repeats: int = 5) -> float:
    """Copy bandwidth (bytes read + written per second) of a large array, best of `repeats`."""
    import numpy as np

    source = np.ones(size_mb * 2**20 // 8)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best / 1e9


def run(opts: argparse.Namespace) -> dict:
    from playground.models import resolve_model

    folder = resolve_model(opts.model, Path(opts.model_cache))
    weight_bytes = (folder / "openvino_model.bin").stat().st_size
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "versions": package_versions(),
        "command": " ".join(["python -m playground.bench", *sys.argv[1:]]),
        "model": opts.model,
        "weight_bytes": weight_bytes,
        "ov_config": json.loads(opts.ov_config),
        "engines": {},
    }
    for kind in ENGINES:
        with tempfile.TemporaryDirectory() as cache:
            cold = _run_worker(kind, opts, Path(cache), load_only=False)
            warm = _run_worker(kind, opts, Path(cache), load_only=True)
        results["engines"][kind] = {
            **cold,
            "cold_load_s": cold["load_s"],
            "warm_load_s": warm["load_s"],
        }
    results["app"] = _through_app(opts, results["engines"]["genai"])
    bandwidth = memory_bandwidth_gbs()
    results["memory_bandwidth_gbs"] = bandwidth
    results["roofline_tokens_per_s"] = bandwidth * 1e9 / weight_bytes
    return results


def table(results: dict) -> str:
    """The markdown table of medians (with min–max) from `run`'s results."""
    roofline = results["roofline_tokens_per_s"]
    rows = [
        "| path | mode | time to first token, s | decode tokens/s | of roofline | "
        "cold / warm load, s | peak memory, MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, data in results["engines"].items():
        for mode in ("greedy", "sampling"):
            tps = data[mode]["tokens_per_s"]
            rows.append(
                f"| {kind} | {mode} | {cell(data[mode]['ttft_s'], '{:.3f}')} | {cell(tps)} | "
                f"{100 * statistics.median(tps) / roofline:.0f}% | "
                f"{data['cold_load_s']:.2f} / {data['warm_load_s']:.2f} | "
                f"{data['peak_rss_mb']:.0f} |"
            )
    app = results["app"]
    rows.append(
        f"| app /complete (genai) | greedy | {cell(app['ttft_s'], '{:.3f}')} | "
        f"{cell(app['tokens_per_s'])} | "
        f"{100 * statistics.median(app['tokens_per_s']) / roofline:.0f}% | | |"
    )
    genai, optimum = results["engines"]["genai"], results["engines"]["optimum"]
    speedup = statistics.median(genai["greedy"]["tokens_per_s"]) / statistics.median(
        optimum["greedy"]["tokens_per_s"]
    )
    direct_total = statistics.median(genai["greedy"]["total_s"])
    chat = genai["chat_ttft_s"]
    lines = [
        *rows,
        "",
        f"- genai / optimum decode, greedy: {speedup:.2f}×",
        f"- app / direct (whole request, greedy): "
        f"{direct_total / statistics.median(app['total_s']):.2f}×",
        "- time to first token over a 6-turn chat (genai): "
        + ", ".join(f"{t:.3f}" for t in chat)
        + f" s; turn 6 / turn 1: {chat[-1] / chat[0]:.2f}×",
        "- time to first token over a 6-turn chat (optimum): "
        + ", ".join(f"{t:.3f}" for t in optimum["chat_ttft_s"])
        + f" s; turn 6 / turn 1: {optimum['chat_ttft_s'][-1] / optimum['chat_ttft_s'][0]:.2f}×",
        f"- memory bandwidth (array copy): {results['memory_bandwidth_gbs']:.1f} GB/s; weights "
        f"read per token: {results['weight_bytes'] / 1e6:.1f} MB; roofline "
        f"{roofline:.0f} tokens/s",
    ]
    return "\n".join(lines)
