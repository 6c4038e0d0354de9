"""Smoke test of the benchmark: it runs end to end and its JSON holds every raw sample; and its
peak memory is each process's own.

Speed itself is never asserted here (that is what the benchmark reports).
"""

import json
import subprocess
import sys

import pytest

from playground.bench.serving import split
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def run_bench(*flags: str, out, timeout: int = 1200) -> subprocess.CompletedProcess:
    """`python -m playground.bench` on tiny-random with `flags`, its JSON written to `out`."""
    done = subprocess.run(
        [sys.executable, "-m", "playground.bench", "--model", "tiny-random", *flags,
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_bench_quick_runs_and_writes_its_json(tmp_path):
    out = tmp_path / "bench.json"
    done = run_bench("--quick", out=out)
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


def test_bench_profile_names_each_settings_kernels_and_their_shares(tmp_path):
    out = tmp_path / "profile.json"
    done = run_bench("--profile", out=out, timeout=600)
    results = json.loads(out.read_text())
    assert set(results) == {"1 thread", "2 threads", "1 thread, DYNAMIC_QUANTIZATION_GROUP_SIZE 32"}
    for result in results.values():
        assert result["step_s"] > 0
        # The int4 matmuls are there, with the kernel that ran them in brackets.
        assert any(k.startswith("FullyConnectedCompressed (") for k in result["kernels"])
    assert "| 2 threads |" in done.stdout and "FullyConnectedCompressed" in done.stdout


def test_bench_concurrency_sets_the_engine_beside_the_app_and_splits_each_first_token(tmp_path):
    out = tmp_path / "concurrency.json"
    done = run_bench("--concurrency", "--quick", out=out)
    print(done.stdout)
    assert "| 4 | engine |" in done.stdout and "| 4 | app |" in done.stdout
    section = json.loads(out.read_text())["concurrency"]
    for where in ("engine", "at_once"):
        for count in ("1", "2", "4"):
            runs = section[where][count]
            assert [len(run) for run in runs] == [int(count)] * 2
    app_requests = [r for runs in section["at_once"].values() for run in runs for r in run]
    engine_requests = [r for runs in section["engine"].values() for run in runs for r in run]
    for request in app_requests + engine_requests:
        stamps = request["timeline"]
        # The server's clock and the client's are one machine's: the moments come in order.
        moments = [request["start"], stamps.get("received", request["start"]),
                   stamps["submitted"], stamps["admitted"], stamps["first_token"],
                   stamps.get("first_sent", stamps["first_token"]), request["first"],
                   request["end"]]  # fmt: skip
        assert moments == sorted(moments), request
        parts = split(request)
        total = parts["queue"] + parts["engine"] + parts["stream"]
        assert abs(total - (request["first"] - request["start"])) < 1e-6
        assert request["new_tokens"] >= 1
    assert all("received" in r["timeline"] for r in app_requests)
    assert not any("received" in r["timeline"] for r in engine_requests)
    assert [len(run) for run in section["late"]] == [4, 4]


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
