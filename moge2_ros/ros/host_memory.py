"""Keep freed large host buffers in the process heap, so per-frame arrays do not page-fault every frame.

glibc serves allocations above its mmap threshold (128 KiB at start, adapting up to 32 MiB) with fresh
``mmap`` pages and returns them with ``munmap`` on free; every new frame-sized tensor or numpy array then pays
one page fault per 4 KiB page on first write (a 640x480x3 float32 map: 900 faults, ~0.5 ms on a small CPU), and
heap memory above the trim threshold goes back to the kernel too.  Raising both thresholds makes freed frame
buffers reusable by the next frame: the node's post-processing at 640x480 drops from ~9.6 to ~5.5 ms on a
2-core CPU (``docs/BENCHMARKS.md``).  The price is that the resident size stays near its high-water mark
instead of shrinking between frames (it does not keep growing).

This is a process-wide setting for long-running processes with a steady frame size (the node, benchmarks);
the library never calls it by itself.  jemalloc / tcmalloc via ``LD_PRELOAD`` achieve the same.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(mmap_threshold_mib: int = 64, trim_threshold_mib: int = 256) -> bool:
    """Raise glibc's mmap and trim thresholds (``mallopt``) for this process.

    Args:
        mmap_threshold_mib: allocations up to this size come from the heap (and are reused after free); the
            default covers a 1920x1080x3 float32 map.
        trim_threshold_mib: free heap memory kept before it is returned to the kernel.

    Returns:
        True if glibc accepted the settings; False on other C libraries (musl, macOS) or if ``mallopt`` refused
        (nothing changed then).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if not mallopt(_M_MMAP_THRESHOLD, mmap_threshold_mib << 20):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold_mib << 20))
