"""What a benchmark ran on, recorded in every bench JSON: speed and rounding depend on the CPU.

CPU model and the ISA flags that pick torch's and oneDNN's kernels (AVX2, AVX-512 and its BF16
and VNNI parts, AMX), the ISA limits set through the environment (ONEDNN_MAX_CPU_ISA,
ATEN_CPU_CAPABILITY: emulated CPUs), what torch reports it uses, cores, glibc and versions.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni",
              "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "avx_vnni",
              "avx_ne_convert")


def _cpuinfo() -> tuple[str, list[str]]:
    """(model name, the ISA flags above that the CPU has) from /proc/cpuinfo, where there is one."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine(), []
    fields = dict(line.split(":", 1) for line in text.splitlines()[:40] if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    return fields.get("model name", platform.machine()), [f for f in _ISA_FLAGS if f in flags]


def machine_facts() -> dict[str, object]:
    """CPU model, ISA flags and limits, the kernels torch picked, cores and library versions."""
    import torch

    from kbqa.llm.cpu_inference import packing_supported

    model, flags = _cpuinfo()
    return {
        "cpu_model": model,
        "isa_flags": flags,
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "(not set)"),
        "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY", "(not set)"),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_bf16_packing": packing_supported(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "glibc": " ".join(platform.libc_ver()),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def with_machine(payload: dict) -> dict:
    """`payload` with a "machine" entry (see machine_facts)."""
    return {**payload, "machine": machine_facts()}
