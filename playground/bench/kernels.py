"""Where a decode step's time goes: `python -m playground.bench --profile [--model M]`.

Owns: one decode step of an IR folder's stateful model on OpenVINO's CPU plugin, profiled per
operation (`PERF_COUNT`): the kernel each operation ran (its exec type, e.g. `brgemm_avx2_f32`)
and its share of the step, at 1 and 2 threads and with dynamic quantization asked for. This is
the "why" behind genai's decode against llama.cpp's (`peers`).
Does not own: the engines (it calls OpenVINO directly, as GenAI does underneath, without paged
attention) or any figure of the other sections.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

PROMPT_TOKENS = 100
DECODE_STEPS = 40
# Dynamic quantization (int8 activations against int4 weights) is what makes OpenVINO's int4
# fast on CPUs with VNNI or AMX; asked for here to see whether this CPU's kernels take it.
SETTINGS = {
    "1 thread": {"INFERENCE_NUM_THREADS": "1"},
    "2 threads": {"INFERENCE_NUM_THREADS": "2"},
    "1 thread, DYNAMIC_QUANTIZATION_GROUP_SIZE 32": {
        "INFERENCE_NUM_THREADS": "1", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "32"},
}  # fmt: skip


def profile(folder: Path, config: dict[str, str]) -> dict[str, Any]:
    """Prefill `PROMPT_TOKENS` tokens, decode `DECODE_STEPS` greedily; the median step time and
    the last step's time per (operation type, kernel)."""
    import numpy as np
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(folder / "openvino_model.xml"), "CPU", {"PERF_COUNT": "YES", **config}
    )
    request = compiled.create_infer_request()

    def infer(ids: np.ndarray, past: int) -> int:
        length = ids.shape[1]
        request.infer({
            "input_ids": ids,
            "attention_mask": np.ones((1, past + length), np.int64),
            "position_ids": np.arange(past, past + length, dtype=np.int64)[None],
            "beam_idx": np.zeros(1, np.int32),
        })  # fmt: skip
        return int(request.get_tensor("logits").data[0, -1].argmax())

    prompt = np.random.default_rng(0).integers(100, 1000, (1, PROMPT_TOKENS), dtype=np.int64)
    token, steps = infer(prompt, 0), []
    for past in range(PROMPT_TOKENS, PROMPT_TOKENS + DECODE_STEPS):
        began = time.perf_counter()
        token = infer(np.array([[token]], np.int64), past)
        steps.append(time.perf_counter() - began)
    kernels: dict[str, float] = defaultdict(float)
    for node in request.get_profiling_info():
        kernels[f"{node.node_type} ({node.exec_type})"] += node.real_time.total_seconds()
    return {"step_s": statistics.median(steps), "kernels": dict(kernels)}


def run(folder: Path) -> dict[str, Any]:
    return {name: profile(folder, config) for name, config in SETTINGS.items()}


def table(results: dict[str, Any], top: int = 3) -> str:
    lines = ["| setting | decode, tokens/s | kernel | share of the profiled step |",
             "|---|---|---|---|"]  # fmt: skip
    for name, result in results.items():
        total = sum(result["kernels"].values())
        ranked = sorted(result["kernels"].items(), key=lambda kv: -kv[1])[:top]
        for i, (kernel, seconds) in enumerate(ranked):
            first = (name, f"{1 / result['step_s']:.1f}") if i == 0 else ("", "")
            lines.append(f"| {first[0]} | {first[1]} | {kernel} | {seconds / total:.1%} |")
    return "\n".join(lines)
