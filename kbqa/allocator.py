"""glibc malloc settings for torch on CPU: keep freed buffers for the next batch.

torch allocates every intermediate tensor with malloc and frees it right after. By default
glibc returns freed memory at the top of the heap to the kernel once more than 128 KB is free
(M_TRIM_THRESHOLD), so the next batch gets its buffers back as fresh zeroed pages, and the
page faults and kernel time that costs slow embedding markedly (docs/benchmarks.md §Ingest and
embedding speed, Allocator). Peak memory is unchanged: only memory the process already used is
kept, and large blocks (model weights) are still mapped and unmapped on their own.

Setting the trim threshold switches off glibc's dynamic mmap threshold, so that one is set
too, to the largest glibc accepts (32 MB on 64-bit), where the dynamic one would end up.
Environment settings (MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_) win over these.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
KEEP_FREED_BYTES = 128 << 20
MMAP_THRESHOLD_BYTES = 32 << 20


@functools.cache
def keep_freed_memory() -> bool:
    """Apply the settings once per process; False where glibc is not the allocator or the
    user set them in the environment."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ for name in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")):
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                and libc.mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES))
