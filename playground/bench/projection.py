"""What a visitor of the 9B waits, on this CPU: `python -m playground.bench --project 9b`.

Owns: measuring `gemma2-9b-slice:N` (google/gemma-2-9b-it's exact widths in N of its 42 layers)
at several N, with the genai engine's own pipeline and scheduler and with llama.cpp Q4_0 of the
same seeded weights; each engine and N in a fresh process (so its peak memory is its own):
decode step time with 1 and with 4 requests, and first-token time (prefill) for prompts of
~128, ~1,024 (per-token) and 100, 500, 2,000 tokens (the waits the table gives); the fit
t = t_head + N·t_layer with its residual, and the extrapolation to 42 layers, weights memory
against `memory.py`'s prediction included; the markdown tables.
Does not own: building the slice (`models`), making a GGUF (`gguf`; the checkpoint comes from
`peers.hf_checkpoint`), or the other sections (`bench.__main__` dispatches).

Why fitting works: a decoder layer's cost does not depend on how many layers sit beside it, and
the embedding and 256,000-wide output layer are paid once per step; so N layers cost t_head +
N·t_layer, and the residual of the fit over three N says how far that holds here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from playground.bench.measure import cpu_name, package_versions, peak_rss_mb, rss_anon_mb

LAYERS = (2, 4, 8)
REAL_LAYERS = 42
DECODE_STEPS = 24  # timed decode steps per visitor count, after the prompts are read
VISITORS = (1, 4)
PER_TOKEN_SIZES = (128, 1024)  # the prefill cost per prompt token, short and long
WAIT_SIZES = (100, 500, 2000)  # the prompts whose first-token wait the table gives
SHORT_PROMPT = 16  # the decode runs' prompts
REPLY_TOKENS = 200  # "a reply" in the waits table
BOS_ID, FIRST_PLAIN_ID = 2, 300  # playground.models puts Gemma's special tokens below 300
LLAMA_CTX = 4096  # llama.cpp's one (unified) cache: the 2,000-token prompt, or 4 short ones


def _prompt(seed: int, size: int, vocab: int) -> list[int]:
    """`<bos>` and `size - 1` seeded ids below `vocab`, past the special tokens: no two prompts
    share a prefix past `<bos>`, so neither engine reuses an earlier prompt's cache. Random
    weights make any id as costly."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [BOS_ID, *rng.integers(FIRST_PLAIN_ID, vocab, size - 1).tolist()]


def _sizes() -> list[int]:
    return sorted({*PER_TOKEN_SIZES, *WAIT_SIZES})


# --- genai: the engine's pipeline, stepped here ---------------------------------------------


def _genai_worker(job: dict) -> dict:
    import numpy as np
    import openvino as ov
    import openvino_genai

    from playground.engines._genai_process import scheduler_config

    start = time.perf_counter()
    pipeline = openvino_genai.ContinuousBatchingPipeline(
        job["folder"], scheduler_config(max(VISITORS), 0), "CPU", job["ov_config"]
    )
    out: dict[str, Any] = {"load_s": time.perf_counter() - start}
    ids, vocab = iter(range(10**6)), job["vocab"]

    def add(prompt: list[int], new_tokens: int) -> Any:
        config = openvino_genai.GenerationConfig()
        config.max_new_tokens, config.ignore_eos = new_tokens, True  # random weights end anywhere
        tensor = ov.Tensor(np.array([prompt], dtype=np.int64))
        return pipeline.add_request(next(ids), tensor, config)

    def first_token_s(prompt: list[int]) -> float:
        handle = add(prompt, 1)
        start = time.perf_counter()
        while pipeline.has_non_finished_requests():
            pipeline.step()
        assert handle.read_all(), "no token"
        return time.perf_counter() - start

    def decode_steps(visitors: int, seed: int) -> list[float]:
        prompts = [_prompt(seed + v, SHORT_PROMPT, vocab) for v in range(visitors)]
        handles = [add(prompt, DECODE_STEPS + 4) for prompt in prompts]
        while not all(h.can_read() for h in handles):  # every prompt read, first tokens out
            pipeline.step()
        times = []
        for _ in range(DECODE_STEPS):
            start = time.perf_counter()
            pipeline.step()
            times.append(time.perf_counter() - start)
        while pipeline.has_non_finished_requests():
            pipeline.step()
        return times

    first_token_s(_prompt(0, 64, vocab))  # warm-up: the first inference compiles kernels
    decode_steps(1, 1)
    out["first_token_s"] = _first_tokens(first_token_s, job["repeats"], vocab)
    out["step_s"] = {str(v): decode_steps(v, 1000 * v) for v in VISITORS}
    out["rss_anon_mb"] = rss_anon_mb()  # while the model is loaded
    return out


def _first_tokens(first_token_s, repeats: int, vocab: int) -> dict[str, list[float]]:
    return {
        str(size): [first_token_s(_prompt(size * 100 + r, size, vocab)) for r in range(repeats)]
        for size in _sizes()
    }


# --- llama.cpp: its C API, so that 4 sequences decode in one batch ---------------------------


def _llama_worker(job: dict) -> dict:
    import llama_cpp as ll

    from playground.bench.peers import has_amx

    start = time.perf_counter()
    params = ll.llama_model_default_params()
    params.use_extra_bufts = not has_amx()  # see peers.load_llama: they crashed with AMX
    model = ll.llama_model_load_from_file(job["model_file"].encode(), params)
    context_params = ll.llama_context_default_params()
    context_params.n_ctx, context_params.n_batch = LLAMA_CTX, max(_sizes())
    context_params.n_seq_max, context_params.kv_unified = max(VISITORS), True
    context_params.n_threads = context_params.n_threads_batch = os.cpu_count() or 1
    ctx = ll.llama_init_from_model(model, context_params)
    out: dict[str, Any] = {"load_s": time.perf_counter() - start}
    batch = ll.llama_batch_init(max(_sizes()), 0, max(VISITORS))
    vocab = job["vocab"]
    n_vocab = ll.llama_vocab_n_tokens(ll.llama_model_get_vocab(model))

    def decode(tokens: list[tuple[int, int, int]]) -> list[int]:
        """(token, position, sequence) in one batch; the greedy next token of each sequence."""
        for i, (token, pos, seq) in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = i == len(tokens) - 1 or tokens[i + 1][2] != seq
        batch.n_tokens = len(tokens)
        if ll.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")
        return [_argmax(ll.llama_get_logits_ith(ctx, i), n_vocab)
                for i in range(len(tokens)) if batch.logits[i]]  # fmt: skip

    def clear() -> None:
        ll.llama_memory_clear(ll.llama_get_memory(ctx), True)

    def first_token_s(prompt: list[int]) -> float:
        clear()
        start = time.perf_counter()
        decode([(token, pos, 0) for pos, token in enumerate(prompt)])
        return time.perf_counter() - start

    def decode_steps(visitors: int, seed: int) -> list[float]:
        clear()
        prompts = [_prompt(seed + v, SHORT_PROMPT, vocab) for v in range(visitors)]
        nexts = decode([(t, p, v) for v, ids in enumerate(prompts) for p, t in enumerate(ids)])
        times = []
        for step in range(DECODE_STEPS):
            start = time.perf_counter()
            nexts = decode([(t, SHORT_PROMPT + step, v) for v, t in enumerate(nexts)])
            times.append(time.perf_counter() - start)
        return times

    first_token_s(_prompt(0, 64, vocab))
    decode_steps(1, 1)
    out["first_token_s"] = _first_tokens(first_token_s, job["repeats"], vocab)
    out["step_s"] = {str(v): decode_steps(v, 1000 * v) for v in VISITORS}
    out["rss_anon_mb"] = rss_anon_mb()  # while the model is loaded
    ll.llama_batch_free(batch)
    ll.llama_free(ctx)
    ll.llama_model_free(model)
    return out


def _argmax(logits: Any, n_vocab: int) -> int:
    import numpy as np

    return int(np.ctypeslib.as_array(logits, shape=(n_vocab,)).argmax())


# --- the runs ---------------------------------------------------------------------------------


def worker_main(job: dict) -> None:
    """In a fresh process: one engine, one slice; print one JSON object."""
    out = _llama_worker(job) if job["engine"] == "llama.cpp" else _genai_worker(job)
    out["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(out))


def _run_worker(job: dict) -> dict:
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "playground.bench.projection", "--worker"],
        input=json.dumps(job), capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{job['engine']} worker failed:\n{done.stderr[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.monotonic() - start
    out["loadavg_1min"] = os.getloadavg()[0]
    return out


def q4_0_gguf(name: str, folder: Path, cache_dir: Path) -> Path:
    """llama.cpp's Q4_0 GGUF of the slice `name` (IR `folder`), from the same seeded checkpoint
    the IR was exported from, made once; the checkpoint and f16 GGUF (GBs) are not kept."""
    from playground.bench.peers import hf_checkpoint
    from playground.gguf import convert_to_gguf, quantize
    from playground.models import synthetic_folder_name

    home = cache_dir / "gguf" / synthetic_folder_name(name)
    target = home / "Q4_0.gguf"
    if target.is_file():
        return target
    home.mkdir(parents=True, exist_ok=True)
    checkpoint = hf_checkpoint(name, folder, cache_dir)
    f16 = convert_to_gguf(checkpoint, home / "f16.gguf", cache_dir)
    shutil.rmtree(checkpoint)
    quantize(f16, target, "Q4_0", threads=os.cpu_count() or 1)
    f16.unlink()
    return target


def run(opts: argparse.Namespace) -> dict:
    from playground.models import SLICE, resolve_model

    cache_dir = Path(opts.model_cache)
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu_name(),
        "openvino_capabilities": openvino_capabilities(),
        "cores": os.cpu_count(),
        "command": " ".join(["python -m playground.bench", *sys.argv[1:]]),
        "versions": package_versions(("openvino", "openvino-genai", "llama-cpp-python")),
        "layers": list(opts.layers),
        "builds": {},
        "runs": {},
    }
    for layers in opts.layers:
        name = f"{SLICE}:{layers}"
        start = time.monotonic()
        folder = resolve_model(name, cache_dir)
        gguf = q4_0_gguf(name, folder, cache_dir) if opts.llama else None
        results["builds"][str(layers)] = {
            "s": time.monotonic() - start,
            "ir_mb": (folder / "openvino_model.bin").stat().st_size / 1e6,
            "gguf_mb": gguf.stat().st_size / 1e6 if gguf else None,
        }
        vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
        jobs = {"genai": {"folder": str(folder), "ov_config": json.loads(opts.ov_config)}}
        if gguf:
            jobs["llama.cpp"] = {"model_file": str(gguf)}
        for engine, job in jobs.items():
            print(f"[{engine}] {name}", file=sys.stderr, flush=True)
            job = {**job, "engine": engine, "repeats": opts.repeats, "vocab": vocab}
            sample = _run_worker(job)
            results["runs"].setdefault(engine, {})[str(layers)] = sample
            if opts.json:  # what is measured so far survives an interruption
                opts.json.write_text(json.dumps(results, indent=2))
    results["projection"] = {e: project(runs) for e, runs in results["runs"].items()}
    return results


def openvino_capabilities() -> list[str]:
    import openvino as ov

    return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


# --- the fit and the projection ---------------------------------------------------------------


def fit(points: dict[int, float]) -> dict[str, float]:
    """Least squares t = head + layers·per_layer over {layers: t}; `residual` is the largest
    distance of a point from the line, as a share of the point (0 with two points: unchecked)."""
    xs, ys = list(points), list(points.values())
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    per_layer = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread
    head = mean_y - per_layer * mean_x
    residual = max(abs(y - (head + per_layer * x)) / y for x, y in zip(xs, ys, strict=True))
    return {"head": head, "per_layer": per_layer, "residual": residual,
            "at_42": head + per_layer * REAL_LAYERS}  # fmt: skip


def figures(runs: dict[str, dict]) -> dict[str, dict[int, float]]:
    """Every measured figure (medians of its samples) by layer count, from one engine's runs."""
    out: dict[str, dict[int, float]] = {}
    for n, run in runs.items():
        for visitors, times in run["step_s"].items():
            out.setdefault(f"step_s@{visitors}", {})[int(n)] = statistics.median(times)
        for size, times in run["first_token_s"].items():
            out.setdefault(f"first_token_s@{size}", {})[int(n)] = statistics.median(times)
        for memory in ("peak_rss_mb", "rss_anon_mb"):
            if run.get(memory) is not None:
                out.setdefault(memory, {})[int(n)] = run[memory]
    return out


def project(runs: dict[str, dict]) -> dict[str, dict[str, float]]:
    """The fit over N of every figure, each taken to 42 layers."""
    return {name: fit(points) for name, points in figures(runs).items()}


def waits(p: dict[str, dict[str, float]]) -> dict[str, str]:
    """What a visitor of the 9B waits, from one engine's projection: label -> figure."""

    def at_42(figure: str) -> float:
        return p[figure]["at_42"]

    reply, alone, four = REPLY_TOKENS, at_42("step_s@1"), at_42("step_s@4")
    out = {"decode, 1 visitor, tokens/s": f"{1 / alone:.2f}",
           "decode, 4 visitors at once, tokens/s each": f"{1 / four:.2f}"}  # fmt: skip
    for size in WAIT_SIZES:
        out[f"first token after a {size:,}-token prompt, s"] = (
            f"{at_42(f'first_token_s@{size}'):.1f}"
        )
    first = at_42("first_token_s@100")
    out[f"a {reply}-token reply to a 100-token prompt, alone, s"] = f"{first + reply * alone:.0f}"
    out["the same, each of 4 visitors at once, s"] = f"{first + reply * four:.0f}"
    for size in PER_TOKEN_SIZES:
        per_token = 1000 * at_42(f"first_token_s@{size}") / size
        out[f"reading a ~{size:,}-token prompt, ms per token"] = f"{per_token:.0f}"
    out["peak memory (RSS), GiB"] = f"{at_42('peak_rss_mb') / 1024:.1f}"
    if "rss_anon_mb" in p:  # RSS less the mapped weights file, which the kernel can drop
        out["memory it holds itself (RssAnon), GiB"] = f"{at_42('rss_anon_mb') / 1024:.1f}"
    return out


def table(results: dict) -> str:
    """Markdown: what a visitor of the 9B waits, per engine; then the fits and their inputs."""
    from playground import memory

    engines = list(results["projection"])
    columns = {engine: waits(results["projection"][engine]) for engine in engines}
    rows = [f"CPU: {results['cpu']}, {results['cores']} cores; OpenVINO's capabilities: "
            f"{', '.join(results['openvino_capabilities'])}. Layers measured: "
            f"{', '.join(map(str, results['layers']))}.", "",
            f"| at 42 layers (projected) | {' | '.join(engines)} |",
            "|---|" + "---|" * len(engines)]  # fmt: skip
    for label in columns[engines[0]]:
        rows.append(f"| {label} | " + " | ".join(columns[e][label] for e in engines) + " |")
    predicted = memory.int4_weight_bytes(memory.GEMMA2_9B_CONFIG) + memory.RUNTIME_BYTES
    rows += ["", "memory.py's prediction for genai (int4 weights and runtime, no KV cache): "
             f"{predicted / 2**30:.1f} GiB, to set beside RssAnon: the RSS also counts the "
             "pages of the mapped weights file.", "", _fits_table(results)]  # fmt: skip
    return "\n".join(rows)


def _fits_table(results: dict) -> str:
    layers = results["layers"]
    rows = ["| engine | figure | head (once per step) | per layer | residual of the fit | "
            + " | ".join(f"measured at {n} layers" for n in layers) + " |",
            "|---|---|---|---|---|" + "---|" * len(layers)]  # fmt: skip
    for engine, runs in results["runs"].items():
        for figure, points in figures(runs).items():
            line = fit(points)
            rows.append(
                f"| {engine} | {figure} | {line['head']:.4g} | {line['per_layer']:.4g} | "
                f"{100 * line['residual']:.1f}% | "
                + " | ".join(f"{points[n]:.4g}" if n in points else "" for n in layers)
                + " |"
            )
    return "\n".join(rows)


def main() -> None:
    if sys.argv[1:] == ["--worker"]:
        worker_main(json.loads(sys.stdin.read()))


if __name__ == "__main__":
    main()
