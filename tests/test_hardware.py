"""llm_dtype "auto": bfloat16 only where the CPU multiplies it natively, else float32.

CPUs without native bf16 are emulated with ONEDNN_MAX_CPU_ISA, as CI does; the rule follows
measurements on emulated ISAs (docs/benchmarks.md, generation speed per ISA).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kbqa.config import Settings
from kbqa.hardware import auto_dtype, native_bf16
from kbqa.llm.loading import weights_dtype
from kbqa.llm.local import LocalLLM

CPU_HAS_BF16 = bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def test_auto_is_the_default() -> None:
    assert Settings().llm.dtype == "auto"


@pytest.mark.parametrize("limit", ["AVX2", "AVX512_CORE", "avx512_core_vnni"])
def test_an_isa_limit_without_bf16_picks_float32(limit: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
    assert not native_bf16()
    assert auto_dtype() == weights_dtype("auto") == "float32"


def test_without_a_limit_the_cpu_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert native_bf16() is CPU_HAS_BF16
    assert weights_dtype("auto") == ("bfloat16" if CPU_HAS_BF16 else "float32")


def test_explicit_precisions_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert weights_dtype("bfloat16") == "bfloat16"
    assert weights_dtype("int8-weights") == "bfloat16"
    assert weights_dtype("int8") == "float32"


def test_a_model_loads_in_the_auto_precision(tiny_llm_folder: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    llm = LocalLLM.from_folder(tiny_llm_folder, dtype="auto", max_new_tokens=4, prefix_cache=None)
    assert next(llm.model.parameters()).dtype == torch.float32
    assert llm.invoke("你好")
