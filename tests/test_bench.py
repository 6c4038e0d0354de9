"""Smoke test of the benchmark: it runs end to end and its JSON holds every raw sample.

Speed itself is never asserted here (that is what the benchmark reports).
"""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_bench_quick_runs_and_writes_its_json(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "playground.bench", "--model", "tiny-random", "--quick",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| genai | greedy |" in done.stdout and "roofline" in done.stdout
    results = json.loads(out.read_text())
    for kind in ("genai", "optimum"):
        engine = results["engines"][kind]
        assert engine["cold_load_s"] > 0 and engine["warm_load_s"] > 0
        assert engine["peak_rss_mb"] > 0
        for mode in ("greedy", "sampling"):
            samples = engine[mode]
            assert len(samples["ttft_s"]) == len(samples["tokens_per_s"]) == 2
            assert all(n >= 1 for n in samples["new_tokens"])
        assert len(engine["chat_ttft_s"]) == 6
    assert len(results["app"]["total_s"]) == 2
    assert results["memory_bandwidth_gbs"] > 0 and results["weight_bytes"] > 0
