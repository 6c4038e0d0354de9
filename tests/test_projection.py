"""The 9B's waits projected from slices of its widths (playground/bench/projection.py, and the
`gemma2-9b-slice` build in playground/models.py): the slice's shapes and export against the real
model's config, the fit against numpy's least squares, the table, and both workers on a real
(tiny) model."""

import json
import subprocess
import sys

import numpy as np
import pytest

from playground import memory
from playground.bench import projection
from playground.models import (
    SLICE,
    ModelUnavailableError,
    resolve_model,
    synthetic_spec,
)

# Only the layer count may differ from google/gemma-2-9b-it's config.json.
NINE_B = {**memory.GEMMA2_9B_CONFIG, "sliding_window": 4096, "query_pre_attn_scalar": 256,
          "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0}  # fmt: skip


def test_slice_names_choose_its_layers_and_nothing_else():
    assert synthetic_spec(SLICE).num_hidden_layers == 2
    assert synthetic_spec(f"{SLICE}:8").num_hidden_layers == 8
    assert synthetic_spec(f"{SLICE}:42").num_hidden_layers == 42
    assert synthetic_spec(f"{SLICE}:8").vocab_size == 256000
    for name in (f"{SLICE}:0", f"{SLICE}:43", f"{SLICE}:", f"{SLICE}:two", f"{SLICE}:-1",
                 "mid-random:4", "gemma2-9b-slice4"):  # fmt: skip
        assert synthetic_spec(name) is None, name


def test_a_bad_slice_name_is_refused_with_the_built_in_models(tmp_path):
    with pytest.raises(ModelUnavailableError, match="built-in models"):
        resolve_model(f"{SLICE}:99", tmp_path)


def test_fit_is_least_squares_with_its_largest_relative_distance():
    exact = projection.fit({2: 0.07, 4: 0.09, 8: 0.13})
    assert exact["per_layer"] == pytest.approx(0.01)
    assert exact["head"] == pytest.approx(0.05)
    assert exact["residual"] == pytest.approx(0.0, abs=1e-12)
    assert exact["at_42"] == pytest.approx(0.47)

    points = {2: 0.071, 4: 0.088, 8: 0.133}
    line = projection.fit(points)
    slope, intercept = np.polyfit(list(points), list(points.values()), 1)
    assert line["per_layer"] == pytest.approx(slope)
    assert line["head"] == pytest.approx(intercept)
    distances = [abs(y - (intercept + slope * x)) / y for x, y in points.items()]
    assert line["residual"] == pytest.approx(max(distances))
    assert line["residual"] > 0.005


def _run(layers: int, step: float, per_token: float) -> dict:
    """A worker's output whose every figure is `step`/`per_token` scaled by the layers."""
    sizes = projection._sizes()
    return {
        "step_s": {"1": [0.05 + step * layers] * 3, "4": [0.08 + 2 * step * layers] * 3},
        "first_token_s": {str(s): [s * per_token * (1 + layers)] * 2 for s in sizes},
        "peak_rss_mb": 900 + 100 * layers,
        "rss_anon_mb": 500 + 50 * layers,
    }


def test_the_table_projects_each_figure_to_42_layers():
    runs = {str(n): _run(n, 0.01, 0.001) for n in (2, 4, 8)}
    results = {"layers": [2, 4, 8], "runs": {"genai": runs}, "cpu": "A CPU (AVX2)", "cores": 2,
               "openvino_capabilities": ["FP32", "INT8"],
               "projection": {"genai": projection.project(runs)}}  # fmt: skip
    waits = projection.waits(results["projection"]["genai"])
    assert waits["decode, 1 visitor, tokens/s"] == f"{1 / (0.05 + 0.42):.2f}"
    assert waits["decode, 4 visitors at once, tokens/s each"] == f"{1 / (0.08 + 0.84):.2f}"
    assert waits["first token after a 2,000-token prompt, s"] == f"{2000 * 0.001 * 43:.1f}"
    reply = 100 * 0.001 * 43 + 200 * 0.47
    assert waits["a 200-token reply to a 100-token prompt, alone, s"] == f"{reply:.0f}"
    assert waits["peak memory (RSS), GiB"] == f"{(900 + 4200) / 1024:.1f}"
    assert waits["memory it holds itself (RssAnon), GiB"] == f"{(500 + 2100) / 1024:.1f}"
    text = projection.table(results)
    assert text.startswith("CPU: A CPU (AVX2), 2 cores; OpenVINO's capabilities: FP32, INT8.")
    assert "| decode, 1 visitor, tokens/s | 2.13 |" in text
    assert "| genai | step_s@1 | 0.05 | 0.01 | 0.0% | 0.07 | 0.09 | 0.13 |" in text


@pytest.mark.slow
def test_the_slice_has_the_9bs_widths_and_its_int4_export(settings):
    """The 2-layer slice (~75 s and ~11 GB of RAM to build once; test_engine_process runs it):
    the 9B's config but for the layers,
    a tokenizer of 256,000 entries, and weights of the size memory.py predicts for the 9B's
    export (int4 asym groups of 128, the embedding and output layer int8)."""
    folder = resolve_model(SLICE, settings.cache_dir)
    config = json.loads((folder / "config.json").read_text())
    assert {key: config[key] for key in NINE_B if key != "num_hidden_layers"} == {
        key: value for key, value in NINE_B.items() if key != "num_hidden_layers"
    }
    assert config["num_hidden_layers"] == 2
    assert config["tie_word_embeddings"] is True
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    assert len(tokenizer["model"]["vocab"]) == 256000
    weights = (folder / "openvino_model.bin").stat().st_size
    assert weights == pytest.approx(memory.int4_weight_bytes(config), rel=1e-4)
    # The export's compressed constants: per layer 7 matrices in u4 groups of 128, each with
    # a u4 zero point per group (asymmetric); the tied embedding u8 per row, with its zero point.
    import openvino as ov

    kinds: dict[tuple, int] = {}
    for op in ov.Core().read_model(folder / "openvino_model.xml").get_ops():
        if op.get_type_name() == "Constant" and op.get_element_type() in (ov.Type.u4, ov.Type.u8):
            key = (op.get_element_type().get_type_name(), tuple(op.get_output_shape(0))[-1])
            kinds[key] = kinds.get(key, 0) + 1
    assert kinds == {("u4", 128): 14, ("u4", 1): 14, ("u8", 3584): 1, ("u8", 1): 1}


@pytest.mark.slow
def test_both_workers_measure_a_real_model(tiny_folder, settings):
    """The genai and llama.cpp workers, each in its own process, on tiny-random and its Q4_0
    GGUF: every prompt size and visitor count measured, every time a real positive one."""
    from playground.bench import peers

    gguf = peers.gguf_files("tiny-random", tiny_folder, settings.cache_dir)["Q4_0"]
    vocab = json.loads((tiny_folder / "config.json").read_text())["vocab_size"]
    jobs = {"genai": {"folder": str(tiny_folder), "ov_config": {"INFERENCE_PRECISION_HINT": "f32"}},
            "llama.cpp": {"model_file": str(gguf)}}  # fmt: skip
    for engine, job in jobs.items():
        out = projection._run_worker({**job, "engine": engine, "repeats": 1, "vocab": vocab})
        assert set(out["first_token_s"]) == {str(s) for s in projection._sizes()}, engine
        assert all(len(times) == 1 and 0 < times[0] < 60
                   for times in out["first_token_s"].values()), engine  # fmt: skip
        assert set(out["step_s"]) == {"1", "4"}, engine
        assert all(len(times) == projection.DECODE_STEPS and min(times) > 0
                   for times in out["step_s"].values()), engine  # fmt: skip
        assert out["peak_rss_mb"] > out["rss_anon_mb"] > 20, engine


def test_bench_refuses_a_single_layer_count():
    done = subprocess.run(
        [sys.executable, "-m", "playground.bench", "--project", "9b", "--layers", "4"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "two or more layer counts" in done.stderr


def test_the_cpu_line_says_when_int4_runs_without_vnni():
    from playground.machine import Cpu

    epyc = Cpu("AMD EPYC 7B13", frozenset({"avx2", "fma"}))
    xeon = Cpu("Intel Xeon", frozenset({"avx2", "avx512f", "avx512_vnni", "amx_int8", "amx_tile"}))
    assert not epyc.has_vnni and xeon.has_vnni and xeon.has_amx and not epyc.has_amx
    assert epyc.speed_flags() == ["AVX2"]
    assert xeon.speed_flags() == ["AVX2", "AVX-512", "AVX512-VNNI", "AMX"]
    assert "no VNNI" in epyc.describe() and "no VNNI" not in xeon.describe()


def test_the_model_tab_lines_escape_and_point_a_cpu_without_vnni_to_llama_cpp():
    from playground import display
    from playground.engines.base import GenerationResult
    from playground.machine import Cpu

    warm_up = GenerationResult("Hello!", [1] * 8, "max_new_tokens", 12, 8, 0.5, 1.25)
    epyc = Cpu("AMD EPYC <img src=x>", frozenset({"avx2"}))
    lines = "\n".join(display.machine_lines(epyc, warm_up))
    assert "AMD EPYC &lt;img src=x&gt;" in lines and "<img" not in lines
    assert f"{warm_up.tokens_per_s:.1f} tokens/s" in lines and "llama.cpp's server" in lines
    xeon = Cpu("Xeon", frozenset({"avx2", "avx512_vnni"}))
    assert "llama.cpp" not in "\n".join(display.machine_lines(xeon, None))
    assert "Measured" not in "\n".join(display.machine_lines(xeon, None))
