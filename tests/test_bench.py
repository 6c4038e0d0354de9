"""Smoke test of the benchmark: it runs end to end and its JSON holds every raw sample; and its
peak memory is each process's own.

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


# A parent that holds PARENT_MB starts a child that allocates CHILD_MB: the child's peak must be
# its own (its allocation plus Python and the imports), never the parent's.
PARENT_MB, CHILD_MB = 700, 200
CHILD = f"""
import resource
from playground.bench.measure import peak_rss_mb
before = peak_rss_mb()
data = b"x" * ({CHILD_MB} * 2**20)  # written, so every page is resident
print(before, peak_rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
PARENT = f"""
import subprocess, sys
data = b"x" * ({PARENT_MB} * 2**20)
done = subprocess.run([sys.executable, "-c", {CHILD!r}], capture_output=True, text=True)
sys.stdout.write(done.stdout + done.stderr)
"""


def test_peak_memory_is_the_processs_own_not_its_parents():
    done = subprocess.run(
        [sys.executable, "-c", PARENT], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    before, peak, inherited = map(float, done.stdout.split())
    assert before < 150  # Python and the imports
    assert before + CHILD_MB - 5 <= peak < before + CHILD_MB + 50
    assert peak < PARENT_MB  # what ru_maxrss would have said: the parent's peak or more
    print(f"child peak {peak:.0f} MB; ru_maxrss in the child said {inherited:.0f} MB")
