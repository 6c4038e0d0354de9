"""llama.cpp side by side: `python -m playground.bench --peer llama.cpp [--model mid-random]`.

Owns: putting a synthetic Gemma-2 (`mid-random`, `tiny-random`) in llama.cpp's hands and timing
it beside the `genai` engine in the same run: the model's Hugging Face checkpoint (the seeded
weights its OpenVINO IR was exported from) and its f16, Q4_0 and Q4_K_M GGUFs (made by `gguf`),
cached; and the measurement: load, time to first token at ~100 and ~1000 prompt tokens and
decode tokens/s, at 1 and 2 threads, each engine in its own process (so peak memory is its own),
interleaved, on the machine as it is and beside a busy-loop process on one core. It prints a
markdown table; `--json` keeps every raw sample. `python -m playground.bench.peers --gap` measures
genai's exports and OpenVINO settings against llama.cpp Q4_0 at a short prompt.
Does not own: the engines (it loads `genai` through `playground.engines` as bench does), the
synthetic models' recipe (`playground.models`), making a GGUF (`playground.gguf`), or the other
sections' measurements (`playground.bench` only dispatches here; `measure` holds what the
sections share). llama-cpp-python is not a requirement of the app: it is in
`requirements-dev.txt` (the remote engine's tests serve with it) and `requirements-bench.txt`;
without it this says how to install it and exits with 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from playground.bench.measure import cell, cpu_name, package_versions, peak_rss_mb
from playground.gguf import (
    LLAMA_CPP_PYTHON,
    QUANTS,
    GGUFError,
    convert_to_gguf,
    quantize,
    write_sentencepiece_model,
)

THREADS = (1, 2)
PROMPT_SIZES = (100, 1000)
# The machine as found (other jobs included: the table says how many cores they used), then
# beside a busy loop pinned to one core.
AS_IS, BUSY = "as is", "+ busy loop"
LLAMA_CTX = 2048  # llama.cpp's context: the longest prompt and its new tokens fit

INSTALL_MESSAGE = f"""\
--peer llama.cpp needs llama-cpp-python {LLAMA_CPP_PYTHON} and the converter's packages, which \
are not in requirements.txt or requirements-dev.txt: llama-cpp-python builds llama.cpp from \
source, which takes about 20 minutes on 2 cores and needs a C++ compiler and CMake. Install \
them with `pip install -r requirements-bench.txt` and run the command again. The first run also \
fetches llama-cpp-python's source distribution once with `pip download` (about 77 MB, for its \
convert_hf_to_gguf.py) into {{home}}, unless you put \
llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz there yourself (see BENCHMARKS.md)."""


class PeerError(RuntimeError):
    """Something the peer benchmark cannot do; the message is for people."""


def missing_packages() -> list[str]:
    """The packages `--peer llama.cpp` needs that can't be imported here."""
    missing = []
    for module, package in (("llama_cpp", "llama-cpp-python"), ("sentencepiece", "sentencepiece")):
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    return missing


def install_message(missing: list[str], cache_dir: Path) -> str:
    """The one paragraph that says what is missing and how to install it."""
    home = cache_dir / "llama.cpp"
    return f"Missing: {', '.join(missing)}. {INSTALL_MESSAGE.format(home=home)}"


# --- the SentencePiece model ---------------------------------------------------------------


# --- the GGUF files -------------------------------------------------------------------------


def hf_checkpoint(name: str, folder: Path, cache_dir: Path) -> Path:
    """The Hugging Face checkpoint of the synthetic model `name` whose IR is `folder`, rebuilt
    (seeded, so the same weights) and cached; with a SentencePiece tokenizer.model beside it."""
    from playground.models import save_synthetic_checkpoint, synthetic_folder_name, synthetic_spec

    target = cache_dir / "hf" / synthetic_folder_name(name)
    if not (target / "tokenizer.model").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
            work = Path(tmp) / "hf"
            save_synthetic_checkpoint(synthetic_spec(name), work)
            write_sentencepiece_model(work / "tokenizer.json", work / "tokenizer.model")
            shutil.rmtree(target, ignore_errors=True)
            os.replace(work, target)
    # The IR was exported from this checkpoint: the same recipe, so the same vocabulary and merges.
    ours = json.loads((target / "tokenizer.json").read_text(encoding="utf-8"))
    theirs = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    if ours["model"] != theirs["model"]:
        raise PeerError(f"{target} and {folder} have different tokenizers: not the same build")
    return target


def gguf_files(name: str, folder: Path, cache_dir: Path) -> dict[str, Path]:
    """f16, Q4_0 and Q4_K_M GGUFs of the synthetic model `name` (IR `folder`), made once."""
    from playground.models import synthetic_folder_name

    home = cache_dir / "gguf" / synthetic_folder_name(name)
    home.mkdir(parents=True, exist_ok=True)
    files = {"f16": home / "f16.gguf"}
    if not files["f16"].is_file():
        convert_to_gguf(hf_checkpoint(name, folder, cache_dir), files["f16"], cache_dir)
    for quant in QUANTS:
        files[quant] = home / f"{quant}.gguf"
        if not files[quant].is_file():
            quantize(files["f16"], files[quant], quant)
    return files


# --- the workers (one engine each, in a fresh process) --------------------------------------


def has_amx() -> bool:
    from playground.machine import this_cpu

    return this_cpu().has_amx


def load_llama(model_file: str, **kwargs: Any) -> Any:
    """`llama_cpp.Llama`, with llama.cpp's extra weight buffers (repacked and AMX) off on a
    CPU with AMX: there llama-cpp-python 0.3.36's Q4_0 and Q4_K_M GGUFs crashed in `decode`
    (a segmentation fault), and ran with them off. `Llama` has no argument for it, so the
    default model parameters it starts from are changed while it loads."""
    import llama_cpp
    import llama_cpp.llama_cpp as native

    if not has_amx():
        return llama_cpp.Llama(model_file, **kwargs)
    default = native.llama_model_default_params

    def without_extra_buffers() -> Any:
        params = default()
        params.use_extra_bufts = False
        return params

    native.llama_model_default_params = without_extra_buffers
    try:
        return llama_cpp.Llama(model_file, **kwargs)
    finally:
        native.llama_model_default_params = default


def _llama_worker(job: dict) -> dict:
    import llama_cpp

    threads = job["threads"]
    start = time.perf_counter()
    llm = load_llama(
        job["model_file"], n_ctx=LLAMA_CTX, n_threads=threads, n_threads_batch=threads,
        verbose=False,
    )  # fmt: skip
    out: dict[str, Any] = {"load_s": time.perf_counter() - start}
    sampler = llama_cpp.llama_sampler_init_greedy()
    eos = set(job["eos_ids"])

    def generate(ids: list[int], new_tokens: int) -> dict:
        llm.reset()  # no reuse of the previous prompt's cache
        start = time.perf_counter()
        llm.eval(ids)
        token = llama_cpp.llama_sampler_sample(sampler, llm.ctx, -1)
        first, first_cpu = time.perf_counter(), time.process_time()
        new = [token]
        while len(new) < new_tokens and token not in eos:
            llm.eval([token])
            token = llama_cpp.llama_sampler_sample(sampler, llm.ctx, -1)
            new.append(token)
        end, end_cpu = time.perf_counter(), time.process_time()
        return _figures(len(ids), len(new), first - start, end - first, end_cpu - first_cpu)

    out["runs"] = _runs(job, lambda prompt, n: generate(prompt["ids"], n))
    llama_cpp.llama_sampler_free(sampler)
    return out


def _genai_worker(job: dict) -> dict:
    from playground.engines import load_engine
    from playground.sampling import SamplingParams

    ov_config = {"INFERENCE_NUM_THREADS": job["threads"], **job.get("ov_config", {})}
    start = time.perf_counter()
    engine = load_engine(
        Path(job["model_file"]), "genai", cache_dir=Path(job["cache_dir"]), ov_config=ov_config
    )
    out: dict[str, Any] = {"load_s": time.perf_counter() - start}

    import psutil

    child = psutil.Process(engine.process.pid)

    def cpu_s() -> float:
        """This process's CPU time and the engine process's, where the model runs."""
        return time.process_time() + sum(child.cpu_times()[:2])

    def generate(prompt: dict, new_tokens: int) -> dict:
        params = SamplingParams(max_new_tokens=new_tokens, temperature=0, repetition_penalty=1.0)
        generation = engine.generate(prompt["text"], params)
        first_cpu = None
        for _ in generation:  # the first text arrives with the first token
            first_cpu = cpu_s() if first_cpu is None else first_cpu
        end_cpu = cpu_s()
        result = generation.result
        decode_s = (result.new_tokens - 1) / result.tokens_per_s if result.tokens_per_s else 0.0
        return _figures(result.prompt_tokens, result.new_tokens, result.ttft_s, decode_s,
                        end_cpu - (first_cpu or end_cpu))  # fmt: skip

    out["runs"] = _runs(job, generate)
    return out


def _figures(
    prompt_tokens: int, new_tokens: int, ttft_s: float, decode_s: float, decode_cpu_s: float
) -> dict:
    """One generation's figures. tokens_per_cpu_s counts the CPU time the process got while
    decoding (all its threads): on a busy machine, what the engine does with the CPU it gets."""

    def rate(seconds: float) -> float:
        return (new_tokens - 1) / seconds if new_tokens > 1 and seconds > 0 else 0.0

    return {"prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "ttft_s": ttft_s,
            "tokens_per_s": rate(decode_s), "tokens_per_cpu_s": rate(decode_cpu_s)}  # fmt: skip


def _runs(job: dict, generate) -> dict[str, list[dict]]:
    generate(job["warmup"], 8)
    return {
        size: [generate(prompt, job["new_tokens"]) for prompt in prompts]
        for size, prompts in job["prompts"].items()
    }


def worker_main(job: dict) -> None:
    """In a fresh process: one engine, one thread count; print one JSON object."""
    out = _llama_worker(job) if job["engine"] == "llama" else _genai_worker(job)
    out["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(out))


def _run_worker(job: dict) -> dict:
    """Run `job` in a fresh process; add what the rest of the machine did meanwhile."""
    env = dict(os.environ)
    for name, value in job.get("env", {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    before, children = _cpu_jiffies(), os.times()
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "playground.bench.peers", "--worker"],
        input=json.dumps(job), capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    elapsed = time.monotonic() - start
    after, children_after = _cpu_jiffies(), os.times()
    if done.returncode != 0:
        raise PeerError(f"peer worker {job['engine']} failed:\n{done.stderr[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    worker_cpu = (children_after.children_user - children.children_user) + (
        children_after.children_system - children.children_system
    )
    if before and after:
        busy_s = (after - before) / os.sysconf("SC_CLK_TCK")
        # Cores' worth of CPU time that other processes used while this worker ran.
        out["others_cores"] = max(0.0, busy_s - worker_cpu) / elapsed
    out["worker_cores"] = worker_cpu / elapsed
    out["loadavg_1min"] = os.getloadavg()[0]
    return out


def _cpu_jiffies() -> int | None:
    """Busy CPU time of the whole machine so far, in clock ticks (Linux /proc/stat)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except OSError:
        return None
    return sum(fields) - fields[3] - fields[4]  # all but idle and iowait


# --- the run ---------------------------------------------------------------------------------


WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "near", "the",
         "old", "river", "bank", "at", "dawn"]  # fmt: skip


def make_prompts(tokenizer, sizes: tuple[int, ...], repeats: int) -> dict[str, Any]:
    """Distinct raw prompts of about `size` tokens each (no shared prefix past `<bos>`, so no
    engine can reuse an earlier prompt's cache), with their ids from the IR's tokenizer."""

    def prompt(tag: str, size: int) -> dict:
        text, i = f"<bos>{tag}:", 0
        while (n := tokenizer.count(text)) < size:
            text += " " + " ".join(WORDS[i % 7 :] + WORDS[: i % 7])
            i += 1
            if n > size - 20:  # close: grow by single words
                text = text.rsplit(" ", 1)[0] if tokenizer.count(text) > size + 4 else text
        return {"text": text, "ids": tokenizer.encode(text)}

    return {
        "warmup": prompt("Warm-up", 16),
        "prompts": {
            str(size): [prompt(f"Sample {r} of {size}", size) for r in range(repeats)]
            for size in sizes
        },
    }


def busy_loop(seconds: float) -> subprocess.Popen:
    """A competing process: one spinning Python loop pinned to the last core, bounded in time."""
    code = (
        "import os, time\n"
        "cpus = sorted(os.sched_getaffinity(0)); os.sched_setaffinity(0, {cpus[-1]})\n"
        f"end = time.monotonic() + {seconds}\n"
        "while time.monotonic() < end:\n    pass\n"
    )
    return subprocess.Popen([sys.executable, "-c", code])


def run(opts: argparse.Namespace) -> dict:
    from playground.models import SYNTHETIC_MODELS, resolve_model
    from playground.tokens import Tokenizer

    if opts.model not in SYNTHETIC_MODELS:
        raise PeerError(
            f"--peer llama.cpp converts a synthetic model's checkpoint: use --model "
            f"{' or '.join(SYNTHETIC_MODELS)}, not {opts.model!r}."
        )
    cache_dir = Path(opts.model_cache)
    folder = resolve_model(opts.model, cache_dir)
    files = gguf_files(opts.model, folder, cache_dir)
    tokenizer = Tokenizer(folder)
    prompts = make_prompts(tokenizer, PROMPT_SIZES, opts.repeats)
    engines: dict[str, tuple[str, str, dict]] = {
        "genai": ("genai", str(folder), {}),
        **{f"llama.cpp {q}": ("llama", str(files[q]), {}) for q in QUANTS},
    }
    if os.environ.get("OMP_WAIT_POLICY"):
        # llama.cpp's threads meet at OpenMP barriers: with the variable set (PASSIVE) they
        # sleep there, unset they spin first. Measure llama.cpp as it comes, too.
        engines["llama.cpp Q4_0, OMP_WAIT_POLICY unset"] = (
            "llama",
            str(files["Q4_0"]),
            {"OMP_WAIT_POLICY": None},
        )
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "command": " ".join(["python -m playground.bench", *sys.argv[1:]]),
        "model": opts.model,
        "versions": package_versions(("openvino", "openvino-genai", "llama-cpp-python")),
        "file_mb": {
            "genai (openvino_model.bin)": (folder / "openvino_model.bin").stat().st_size / 1e6,
            **{f"llama.cpp {k}": p.stat().st_size / 1e6 for k, p in files.items()},
        },
        "llama_ctx": LLAMA_CTX,
        "new_tokens": opts.new_tokens,
        "prompt_tokens": {
            size: [len(p["ids"]) for p in ps] for size, ps in prompts["prompts"].items()
        },
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "phases": {},
    }
    with tempfile.TemporaryDirectory() as ov_cache:
        base = {
            **prompts, "new_tokens": opts.new_tokens, "eos_ids": sorted(tokenizer.eos_ids),
            "cache_dir": ov_cache, "ov_config": json.loads(opts.ov_config),
        }  # fmt: skip
        # One throw-away genai load fills the compiled-model cache: every measured load is warm.
        _run_worker({**base, "engine": "genai", "model_file": str(folder), "threads": 2,
                     "prompts": {}})  # fmt: skip
        for phase in opts.phases:
            busy = busy_loop(3600) if phase == BUSY else None
            try:
                samples: dict[str, list[dict]] = {}
                for _ in range(opts.rounds):
                    for threads in THREADS:
                        for name, (kind, path, env) in engines.items():
                            job = {**base, "engine": kind, "model_file": path, "threads": threads,
                                   "env": env}  # fmt: skip
                            key = f"{name} @{threads}"
                            print(f"[{phase}] {key}", file=sys.stderr, flush=True)
                            samples.setdefault(key, []).append(_run_worker(job))
                            results["phases"][phase] = samples
                            if opts.json:  # what is measured so far survives an interruption
                                opts.json.write_text(json.dumps(results, indent=2))
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
    return results


def _pool(workers: list[dict], size: str, field: str) -> list[float]:
    return [run[field] for worker in workers for run in worker["runs"][size]]


def table(results: dict) -> str:
    """Markdown: one row per phase, thread count and engine; then genai / llama.cpp Q4_0."""
    short, long = (str(size) for size in PROMPT_SIZES)
    rows = [
        f"| machine | threads | engine | load, s | first token, ~{short} tokens, s | "
        f"first token, ~{long} tokens, s | decode at ~{short}, tokens/s | "
        f"decode at ~{long}, tokens/s | peak memory, MB | others' CPU, cores |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for phase, samples in results["phases"].items():
        for key, workers in samples.items():
            name, threads = key.rsplit(" @", 1)
            rows.append(
                f"| {phase} | {threads} | {name} | "
                f"{cell([w['load_s'] for w in workers], '{:.2f}')} | "
                f"{cell(_pool(workers, short, 'ttft_s'), '{:.3f}')} | "
                f"{cell(_pool(workers, long, 'ttft_s'), '{:.3f}')} | "
                f"{cell(_pool(workers, short, 'tokens_per_s'), '{:.1f}')} | "
                f"{cell(_pool(workers, long, 'tokens_per_s'), '{:.1f}')} | "
                f"{cell([w['peak_rss_mb'] for w in workers], '{:.0f}')} | "
                f"{cell([w.get('others_cores', 0.0) for w in workers], '{:.1f}')} |"
            )
        for threads in THREADS:
            genai = samples.get(f"genai @{threads}")
            peer = samples.get(f"llama.cpp Q4_0 @{threads}")
            if not genai or not peer:
                continue

            def ratio(size: str, field: str, genai=genai, peer=peer) -> float:
                mine = statistics.median(_pool(genai, size, field))
                return mine / statistics.median(_pool(peer, size, field))

            ratios.append(
                f"- {phase}, {threads} thread{'s' if threads > 1 else ''}: genai decodes at "
                f"{ratio(short, 'tokens_per_s'):.2f}× llama.cpp Q4_0's speed at ~{short} prompt "
                f"tokens and {ratio(long, 'tokens_per_s'):.2f}× at ~{long}; its first token "
                f"takes {ratio(short, 'ttft_s'):.2f}× and {ratio(long, 'ttft_s'):.2f}× the time"
            )
    sizes = ", ".join(f"{k} {v:.1f}" for k, v in results["file_mb"].items())
    return "\n".join([*rows, "", *ratios, f"- weight files, MB: {sizes}"])


def main(opts: argparse.Namespace) -> int:
    """`bench --peer llama.cpp`: run, print the table, write --json; 2 with a message when the
    packages are missing or the model can't be converted."""
    if missing := missing_packages():
        print(install_message(missing, Path(opts.model_cache)), file=sys.stderr)
        return 2
    if opts.quick:
        opts.new_tokens = 32
    opts.rounds = 1 if opts.quick else 2
    opts.repeats = 1 if opts.quick else 2
    opts.phases = (AS_IS,) if opts.quick else (AS_IS, BUSY)
    try:
        results = run(opts)
    except (PeerError, GGUFError) as error:
        print(str(error), file=sys.stderr)
        return 2
    print(table(results))
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=2))
    return 0


# --- closing the short-context gap: genai settings against llama.cpp Q4_0 -------------------

# Re-exports of the same checkpoint (models.export_ir's options), and OpenVINO properties on the
# model as built; each measured against llama.cpp Q4_0 in the same rounds.
EXPORTS: dict[str, dict[str, Any]] = {
    "int4 sym, group 128": {"sym": True, "group_size": 128},
    "int4 asym, group 32": {"group_size": 32},
    "int4 sym, group 32 (as Q4_0)": {"sym": True, "group_size": 32},
    "int4 sym, per channel": {"sym": True, "group_size": -1},
    "int4 output layer (all_layers)": {"group_size": 128, "all_layers": True},
    "int4 sym, group 128, int4 output layer": {"sym": True, "group_size": 128, "all_layers": True},
}
SETTINGS: dict[str, dict[str, Any]] = {
    "KV_CACHE_PRECISION u8": {"KV_CACHE_PRECISION": "u8"},
    "KV_CACHE_PRECISION f16": {"KV_CACHE_PRECISION": "f16"},
    "ENABLE_CPU_PINNING true": {"ENABLE_CPU_PINNING": True},
    "ENABLE_CPU_PINNING false": {"ENABLE_CPU_PINNING": False},
    "ATTENTION_BACKEND SDPA": {"ATTENTION_BACKEND": "SDPA"},
    "PERFORMANCE_HINT LATENCY": {"PERFORMANCE_HINT": "LATENCY"},
}


def exported_variant(name: str, folder: Path, cache_dir: Path, options: dict) -> Path:
    """The synthetic model `name` re-exported from its checkpoint with export_ir `options`."""
    from playground.models import SYNTHETIC_RECIPE, export_ir

    tag = "-".join(f"{k}{v}" for k, v in sorted(options.items()))
    target = cache_dir / "variants" / f"{name}-r{SYNTHETIC_RECIPE}-{tag}"
    if not (target / "openvino_model.xml").is_file():
        hf_dir = hf_checkpoint(name, folder, cache_dir)
        with tempfile.TemporaryDirectory(dir=target.parent.parent) as tmp:
            export_ir(hf_dir, Path(tmp) / "ov", bits=4, **options)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(Path(tmp) / "ov", target)
    return target


def gap(opts: argparse.Namespace) -> dict:
    """Each export and setting of genai beside llama.cpp Q4_0, interleaved, at `opts.threads`."""
    from playground.models import resolve_model
    from playground.tokens import Tokenizer

    cache_dir = Path(opts.model_cache)
    folder = resolve_model(opts.model, cache_dir)
    files = gguf_files(opts.model, folder, cache_dir)
    tokenizer = Tokenizer(folder)
    prompts = make_prompts(tokenizer, PROMPT_SIZES[:1], opts.repeats)  # the short prompt only
    runs: dict[str, tuple[str, str, dict]] = {
        "llama.cpp Q4_0": ("llama", str(files["Q4_0"]), {}),
        "genai as built (int4 asym, group 128)": ("genai", str(folder), {}),
    }
    for label, options in EXPORTS.items():
        if label in opts.only or not opts.only:
            variant = exported_variant(opts.model, folder, cache_dir, options)
            runs[label] = ("genai", str(variant), {})
    for label, ov_config in SETTINGS.items():
        if label in opts.only or not opts.only:
            runs[label] = ("genai", str(folder), ov_config)
    command = " ".join(["python -m playground.bench.peers", *sys.argv[1:]])
    results: dict[str, Any] = {"command": command, "threads": opts.threads, "samples": {}}
    with tempfile.TemporaryDirectory() as ov_cache:
        base = {**prompts, "new_tokens": opts.new_tokens, "eos_ids": sorted(tokenizer.eos_ids),
                "cache_dir": ov_cache, "threads": opts.threads}  # fmt: skip
        for round_ in range(opts.rounds):
            for label, (kind, path, ov_config) in runs.items():
                print(f"[gap {round_}] {label}", file=sys.stderr, flush=True)
                job = {**base, "engine": kind, "model_file": path, "ov_config": ov_config}
                if round_ == 0 and kind == "genai":  # fill the compiled-model cache first
                    _run_worker({**job, "prompts": {}})
                results["samples"].setdefault(label, []).append(_run_worker(job))
    return results


def gap_table(results: dict) -> str:
    short = str(PROMPT_SIZES[0])
    peer = results["samples"]["llama.cpp Q4_0"]
    peer_tps = statistics.median(_pool(peer, short, "tokens_per_s"))
    peer_cpu = statistics.median(_pool(peer, short, "tokens_per_cpu_s"))
    rows = [
        f"| genai at {results['threads']} thread(s) | decode at ~{short}, tokens/s | "
        f"/ llama.cpp Q4_0 | decode per CPU-second, tokens | / llama.cpp Q4_0 | "
        f"first token at ~{short}, s | others' CPU, cores |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, workers in results["samples"].items():
        tps = _pool(workers, short, "tokens_per_s")
        cpu = _pool(workers, short, "tokens_per_cpu_s")
        rows.append(
            f"| {label} | {cell(tps, '{:.1f}')} | {statistics.median(tps) / peer_tps:.2f}× | "
            f"{cell(cpu, '{:.1f}')} | {statistics.median(cpu) / peer_cpu:.2f}× | "
            f"{cell(_pool(workers, short, 'ttft_s'), '{:.3f}')} | "
            f"{cell([w.get('others_cores', 0.0) for w in workers], '{:.1f}')} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        worker_main(json.loads(sys.stdin.read()))
        sys.exit(0)
    parser = argparse.ArgumentParser(
        prog="python -m playground.bench.peers",
        description="The short-context gap: genai exports and settings beside llama.cpp Q4_0 "
        "(the side by side itself is `python -m playground.bench --peer llama.cpp`).",
    )
    parser.add_argument("--gap", action="store_true", required=True)
    parser.add_argument("--model", default="mid-random")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--only", nargs="*", default=[], help="labels of EXPORTS/SETTINGS")
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args()
    from playground.settings import load_settings

    opts.model_cache = str(load_settings().cache_dir)
    if missing := missing_packages():
        print(install_message(missing, Path(opts.model_cache)), file=sys.stderr)
        sys.exit(2)
    results = gap(opts)
    print(gap_table(results))
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=2))
