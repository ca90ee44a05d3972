"""kbqa.allocator: freed buffers are kept for the next batch instead of being faulted in again.

Measured by the kernel's own count of minor page faults (counts, not time) in a fresh process
while the embedded encoder embeds 300 texts a second time: with glibc's own settings every
batch faults its buffers in again (measured 175,000-243,000 faults), with kbqa's about 800.
"""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")

_ENCODE_TWICE = """
import resource, sys
import kbqa.allocator as allocator
if sys.argv[1] == "glibc":
    allocator.keep_freed_memory = lambda: False  # leave glibc's own settings
from kbqa.use_encoder import USEEncoder
texts = [f"第{i}条。" + "长城是中国古代的军事防御工程，绵延上万里。" * 10 for i in range(300)]
encoder = USEEncoder()
encoder.encode(texts)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
encoder.encode(texts)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

_APPLIED = "from kbqa.allocator import keep_freed_memory; print(keep_freed_memory())"


def _run(code: str, *args: str, **env: str) -> str:
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                            text=True, check=True, env={"PATH": "/usr/bin:/bin", **env})
    return result.stdout.split()[-1]


def test_the_encoder_reuses_freed_buffers_without_new_page_faults() -> None:
    glibc, kept = int(_run(_ENCODE_TWICE, "glibc")), int(_run(_ENCODE_TWICE, "kbqa"))
    assert glibc > 50_000
    assert kept < glibc / 20


def test_applied_once_unless_the_environment_sets_malloc() -> None:
    assert _run(_APPLIED) == "True"
    assert _run(_APPLIED, MALLOC_TRIM_THRESHOLD_="131072") == "False"
    assert _run(_APPLIED, MALLOC_MMAP_THRESHOLD_="131072") == "False"
