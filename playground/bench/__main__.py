"""Benchmarks: `python -m playground.bench [--model M] [--json OUT] [--quick]`.

Owns: the command line, and sending each run to its section: the engines and the app side by
side (`engines`, the default), several visitors at once (`serving`: `--concurrency`,
`--remote`), llama.cpp beside genai (`peers`: `--peer llama.cpp`) and the 9B's waits projected
from slices of its widths (`projection`: `--project 9b`).
Does not own: the measurements themselves (those modules, and `measure` for what they share).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from playground.bench import engines


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m playground.bench",
        description="Measure both engines on this machine: load time (cold and warm cache), "
        "time to first token, tokens per second, the same through the app's API, and peak "
        "memory. Prints a markdown table. Takes minutes; --quick takes about one.",
    )
    parser.add_argument(
        "--model",
        default="tiny-random",
        help="the model to measure: tiny-random (default, seconds to build), mid-random "
        "(~250M parameters, closer to real costs) or the path of an OpenVINO IR folder",
    )
    parser.add_argument("--json", type=Path, help="also write every raw sample to this file")
    parser.add_argument(
        "--quick", action="store_true", help="a quick check: 2 repetitions of 32 tokens"
    )
    parser.add_argument(
        "--ov-config",
        default="{}",
        help='OpenVINO properties as a JSON object, e.g. \'{"INFERENCE_PRECISION_HINT": "f32"}\'',
    )
    parser.add_argument(
        "--peer",
        choices=("llama.cpp",),
        help="instead, measure llama.cpp (Q4_0 and Q4_K_M GGUFs of the same synthetic model) "
        "beside genai at 1 and 2 threads, as the machine is and beside a busy loop "
        "(playground/bench/peers.py; needs requirements-bench.txt)",
    )
    parser.add_argument(
        "--concurrency",
        action="store_true",
        help="only the concurrency section: 1, 2 and 4 chats at once through the app's API, "
        "a late arrival, and one visitor against a bare LLMPipeline (playground.bench.serving)",
    )
    parser.add_argument(
        "--remote",
        action="store_true",
        help="only the remote section: 1, 4 and 16 visitors at once through the app on the "
        "remote engine (llama-cpp-python's server on tiny-tutor's GGUF) and on genai, and the "
        "app's CPU per streamed token (playground.bench.serving)",
    )
    parser.add_argument(
        "--freeze",
        action="store_true",
        help="only what one long prompt costs other visitors: /gradio_api/info and /render "
        "latencies, idle and while the app reads a 3,000-word prompt (playground.bench.serving)",
    )
    parser.add_argument(
        "--project",
        choices=("9b",),
        help="instead, what a visitor of Gemma-2-9b waits on this CPU: slices of its exact "
        "widths (gemma2-9b-slice:N, built once, ~90 s and ~11 GB of RAM each) measured at "
        "--layers, fitted per layer and projected to its 42 layers, genai beside llama.cpp Q4_0 "
        "of the same weights (playground.bench.projection; llama.cpp needs "
        "requirements-bench.txt, else genai alone)",
    )
    parser.add_argument(
        "--layers",
        type=lambda text: tuple(int(n) for n in text.split(",")),
        default=(2, 4, 8),
        help="with --project: the slices' layer counts, comma-separated (default 2,4,8)",
    )
    parser.add_argument(
        "--memory",
        action="store_true",
        help="only the memory table (no measuring): Gemma-2-9b's KV cache per token and the "
        "visitors at the full context that fit in 16 and 32 GiB, from its config.json shapes, "
        "or from those of --model when it names a folder (playground.memory)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="only where a decode step's time goes: each operation's kernel and share, at 1 "
        "and 2 threads (OpenVINO's PERF_COUNT; playground.bench.kernels)",
    )
    parser.add_argument("--worker", choices=engines.ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    parser.add_argument("--model-cache", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--load-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--new-tokens", type=int, default=128, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=5, help=argparse.SUPPRESS)
    parser.add_argument("--turn-tokens", type=int, default=600, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    opts = _parser().parse_args(argv)
    if opts.model_cache is None:
        from playground.settings import load_settings

        opts.model_cache = str(load_settings().cache_dir)
    if opts.worker:
        engines.worker(opts)
        return 0
    if opts.memory:
        print(_memory_table(Path(opts.model)))
        return 0
    if opts.peer:
        from playground.bench import peers

        return peers.main(opts)
    if opts.project:
        return _project(opts)
    if opts.quick:
        opts.new_tokens, opts.repeats, opts.turn_tokens = 32, 2, 80
    if opts.profile:
        from playground.bench import kernels
        from playground.models import resolve_model

        results = kernels.run(resolve_model(opts.model, Path(opts.model_cache)))
        print(kernels.table(results))
    elif opts.freeze:
        from playground.bench import serving

        results = {"command": " ".join(["python -m playground.bench", *sys.argv[1:]])}
        results["freeze"] = serving.freeze(opts)
        print(serving.freeze_table(results["freeze"]))
    elif opts.remote:
        from playground.bench import serving

        results = {"command": " ".join(["python -m playground.bench", *sys.argv[1:]])}
        results["remote"] = serving.remote(opts)
        print(serving.remote_table(results["remote"]))
    elif opts.concurrency:
        from playground.bench import serving
        from playground.models import resolve_model

        folder = resolve_model(opts.model, Path(opts.model_cache))
        results = {"command": " ".join(["python -m playground.bench", *sys.argv[1:]])}
        results["concurrency"] = serving.concurrency(opts, folder)
        print(serving.table(results["concurrency"]))
    else:
        results = engines.run(opts)
        print(engines.table(results))
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=2))
    return 0


def _project(opts: argparse.Namespace) -> int:
    from playground.bench import peers, projection

    if len(set(opts.layers)) < 2 or not all(1 <= n <= 42 for n in opts.layers):
        print("--layers needs two or more layer counts from 1 to 42", file=sys.stderr)
        return 2
    opts.llama = not peers.missing_packages()
    if not opts.llama:
        print(
            "llama-cpp-python is not installed: measuring genai alone "
            "(pip install -r requirements-bench.txt for llama.cpp beside it)",
            file=sys.stderr,
        )
    opts.repeats = 2 if opts.quick else 3
    results = projection.run(opts)
    print(projection.table(results))
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=2))
    return 0


def _memory_table(folder: Path) -> str:
    """The memory table of the IR folder `folder` (its weights file's size), or of Gemma-2-9b
    (its int4 weights estimated) when `folder` is not one."""
    from playground import memory

    if (folder / "config.json").is_file():
        config = json.loads((folder / "config.json").read_text())
        weights, source = (folder / "openvino_model.bin").stat().st_size, f"{folder}'s"
    else:
        config = memory.GEMMA2_9B_CONFIG
        weights, source = memory.int4_weight_bytes(config), "Gemma-2-9b's int4 (estimated)"
    context = config.get("max_position_embeddings", 8192)
    runtime = memory.RUNTIME_BYTES / 2**30
    head = f"Weights: {source} {weights / 2**30:.2f} GiB; runtime {runtime:.1f} GiB."
    return "\n".join([head, "", *memory.memory_table(config, weights, context)])


if __name__ == "__main__":
    sys.exit(main())
