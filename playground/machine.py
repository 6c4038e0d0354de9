"""The CPU this process runs on: its name and the instruction sets that decide int4 speed.

Owns: reading /proc/cpuinfo once, the flags that matter to OpenVINO's and llama.cpp's int4
kernels, and the plain-words line the Model tab and the benchmarks print.
Does not own: measuring anything (`bench`), or OpenVINO's own view of the device (its
OPTIMIZATION_CAPABILITIES, read where OpenVINO is loaded anyway).

Why these flags: OpenVINO's CPU plugin multiplies int4 weights with int8 activations
("dynamic quantization") only on CPUs with AVX-VNNI or AVX512-VNNI (useDynamicQuantizationImpl
in src/plugins/intel_cpu/src/nodes/executors/dnnl/dnnl_fullyconnected_primitive.cpp), and
unpacks to float elsewhere; AMX adds tile units for int8 and bf16 matrices.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass

# Linux's names, in the order the line gives them, and how people write them.
SPEED_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx_vnni": "AVX-VNNI",
               "avx512_vnni": "AVX512-VNNI", "amx_int8": "AMX"}  # fmt: skip


@dataclass(frozen=True)
class Cpu:
    name: str
    flags: frozenset[str]  # every flag /proc/cpuinfo lists

    @property
    def has_vnni(self) -> bool:
        """Whether OpenVINO runs int4 weights with int8 activations here (see the docstring)."""
        return bool({"avx_vnni", "avx512_vnni"} & self.flags)

    @property
    def has_amx(self) -> bool:
        return "amx_tile" in self.flags

    def speed_flags(self) -> list[str]:
        """The flags that decide int4 speed, as people write them."""
        return [label for flag, label in SPEED_FLAGS.items() if flag in self.flags]

    def describe(self) -> str:
        """One line: the CPU, its cores here, the flags it has and the VNNI it lacks."""
        import os

        flags = ", ".join(self.speed_flags()) or "none of AVX2, AVX-512, VNNI, AMX"
        lacks = "" if self.has_vnni else " (no VNNI: OpenVINO unpacks int4 weights to float)"
        return f"{self.name}, {os.cpu_count()} cores here; {flags}{lacks}"


@functools.cache
def this_cpu() -> Cpu:
    """This machine's CPU, from /proc/cpuinfo (Linux); elsewhere its name alone."""
    name, flags = platform.processor() or "unknown CPU", frozenset()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = frozenset(value.split())
                    break  # the first core's lines say it for all
    except OSError:
        pass
    return Cpu(name, flags)
