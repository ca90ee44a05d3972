"""What this CPU multiplies natively, so precision defaults follow the machine kbqa runs on."""

from __future__ import annotations

import os

# oneDNN ISA levels (ONEDNN_MAX_CPU_ISA) below which bf16 GEMMs are emulated: a limit set to one
# of these makes kbqa behave as on a CPU without native bf16 (how CI emulates such CPUs)
_NO_NATIVE_BF16_LIMITS = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI"}


def native_bf16() -> bool:
    """Whether bfloat16 matrix products run natively here (AVX512-BF16 or AMX); elsewhere they
    are emulated and slower than float32."""
    import torch

    limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if limit in _NO_NATIVE_BF16_LIMITS:
        return False
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(cpu, "_is_amx_tile_supported", lambda: False)())


def auto_dtype() -> str:
    """The LLM weight precision `llm_dtype = "auto"` picks: bfloat16 where native, else float32."""
    return "bfloat16" if native_bf16() else "float32"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), for records of where something was trained or run."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
