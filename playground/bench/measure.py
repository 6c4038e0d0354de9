"""What the benchmarks share: the prompt they send, the table cell, a process's own peak memory,
the machine's CPU name and the installed versions of the packages a run depends on.

Owns: these small measurements and their formatting. Does not own: any benchmark (`engines`,
`serving`, `peers` use these).
"""

from __future__ import annotations

import resource
import statistics
import sys
from pathlib import Path

# The one user message every engine and serving run sends (rendered with the chat template).
PROMPT = "Write a story about a lighthouse keeper who finds a message in a bottle."
VERSIONED = ("openvino", "openvino-genai", "optimum-intel", "transformers", "torch", "gradio")


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory, plus that of its child processes (the genai
    engine's own process, where the model lives), in MiB: VmHWM from /proc/PID/status. A sum of
    peaks, so at most the true peak of the whole.

    Not ru_maxrss: Linux carries a parent's maximum into its child across fork and exec, so a
    worker started by a process that had built a model reported that process's peak (issue 13:
    2477 MB for a worker that used 483 MB alone). VmHWM belongs to the address space, which
    exec replaces. Elsewhere (no /proc) ru_maxrss is the best there is.
    """
    try:
        children = [
            pid for task in Path("/proc/self/task").iterdir()
            for pid in (task / "children").read_text().split()
        ]  # fmt: skip
        own = _vm_hwm_mb("self")
    except OSError:
        own = None
    if own is not None:
        return own + sum(_vm_hwm_mb(pid, missing=0.0) for pid in children)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes on macOS


def rss_anon_mb() -> float | None:
    """This process's anonymous resident memory now (RssAnon), in MiB: what it holds itself,
    without the pages of files it maps (a model's weights file), which the kernel may drop and
    read again under pressure; None where /proc is not there."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _vm_hwm_mb(pid: str, missing: float | None = None) -> float:
    """VmHWM of process `pid`; `missing` for one that has ended, where given."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # reported in kB
    except OSError:
        if missing is None:
            raise
        return missing
    raise OSError(f"no VmHWM for process {pid}")


def cpu_name() -> str:
    """The CPU's name and the flags that decide int4 speed, for the record of a run."""
    from playground.machine import this_cpu

    cpu = this_cpu()
    return f"{cpu.name} ({', '.join(cpu.speed_flags()) or 'no AVX2'})"


def package_versions(names: tuple[str, ...] = VERSIONED) -> dict[str, str]:
    """The installed version of each package, for the record of a run."""
    from importlib.metadata import version

    return {name: version(name) for name in names}


def cell(values: list[float], fmt: str = "{:.1f}") -> str:
    """A table cell: the median, then the min–max range; empty for no values."""
    if not values:
        return ""
    s = _summary(values)
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})"
