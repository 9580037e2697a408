"""keep_freed_memory: freed frame-sized buffers are reused instead of page-faulting on every frame."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

from moge2_ros.ros.host_memory import keep_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# A frame's worth of buffers (six 640x480x3 float32 maps alive at once, as in post-processing and message
# conversion), written and freed 20 times; prints the minor page faults this caused.
_PROBE = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from moge2_ros.ros.host_memory import keep_freed_memory
    if sys.argv[1] == "1":
        assert keep_freed_memory()
    def frame():
        arrays = [np.empty((480, 640, 3), np.float32) for _ in range(6)]
        for a in arrays:
            a.fill(1.0)
    for _ in range(3):
        frame()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        frame()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(enabled: bool) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, "1" if enabled else "0"], capture_output=True, text=True,
                         check=True, timeout=120)
    return int(out.stdout.strip())


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_freed_frame_buffers_are_reused_without_page_faults():
    default, kept = _faults(False), _faults(True)
    # 3.7 MB per array = 900 pages: glibc's default maps fresh pages each time (or trims them back)
    assert default > 5000, default
    assert kept < 200, kept


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_returns_true_on_glibc():
    assert keep_freed_memory() is True
