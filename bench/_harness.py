"""What the benchmark scripts share: paths, progress lines, the machine description, resident memory, percentiles
and the one-configuration-per-child-process runner.

The scripts run as ``python bench/<script>.py``, so this folder is on ``sys.path`` and they ``import _harness``;
the package itself is imported normally (``pip install -e .`` into the venv, as ``scripts/setup.sh`` does).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
#: ``../shared`` beside the repository: reference checkpoints and outputs, data sets read in place.
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "reference"


def log(message: str) -> None:
    """A progress line on stderr, ``[script HH:MM:SS] message`` (stdout carries the Markdown results)."""
    print(f"[{Path(sys.argv[0]).stem} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- machine


def cpu_model_name() -> str:
    """The CPU's ``model name`` from /proc/cpuinfo, else what ``platform`` knows, else ``"unknown CPU"``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info(device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    """CPU, core counts, memory, GPU (for a ``cuda`` device), versions, torch threads (``threads``, default torch's
    current setting), date, load average and the command line of this run."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model_name(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": threads or torch.get_num_threads(),
        "platform": platform.platform(),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join([os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd())
                               else sys.executable, *sys.argv]),
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    try:
        with open("/proc/meminfo") as f:
            info["mem_total_gb"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device) if torch.cuda.is_available() else "CUDA NOT AVAILABLE"
    return info


def machine_line(info: dict[str, Any]) -> str:
    """One line of :func:`machine_info` for a report header."""
    return (f"{info['cpu']}, {info['logical_cpus']} logical CPUs ({info['usable_cpus']} usable), "
            f"{info.get('mem_total_gb', '?')} GiB RAM" + (f", GPU {info['gpu']}" if "gpu" in info else "")
            + f"; Python {info['python']}, torch {info['torch']} ({info['torch_threads']} threads)")


# ---------------------------------------------------------------------------------------------- measuring


def rss_mb(pid: int | str = "self") -> float | None:
    """Resident memory (``VmRSS``) of process ``pid`` in MiB; None where /proc cannot tell."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (``ru_maxrss``; KiB on Linux) in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def p95(samples: list[float]) -> float:
    """95th percentile, ``statistics.quantiles(method='inclusive')`` (linear interpolation; with few samples it lies
    between the two largest); the one sample when there is one."""
    return statistics.quantiles(samples, n=20, method="inclusive")[18] if len(samples) >= 2 else samples[0]


# ---------------------------------------------------------------------------------------------- child processes


def run_child(script: str | Path, spec: dict[str, Any], timeout: float,
              env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python SCRIPT --single JSON(spec)`` (one configuration in a fresh process, so its peak memory is its
    own) and return the last JSON object line it printed, plus ``wall_s`` and the 1-minute load average before
    and after (``load1_before`` / ``load1_after``).  A failure returns ``spec`` with ``error`` (timeout, exit
    status or signal and the last line of stderr) and ``wall_s``.  ``env`` entries are added to the environment.
    """
    command = [sys.executable, str(Path(script).resolve()), "--single", json.dumps(spec)]
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f} s", "wall_s": time.perf_counter() - start}
    wall = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        reason = f"exit status {proc.returncode}" + (f": {err[-1][:240]}" if err else "")
        if proc.returncode < 0:
            reason = f"killed by signal {-proc.returncode} (out of memory?); {reason}"
        return {**spec, "error": reason, "wall_s": wall}
    result = json.loads(lines[-1])
    result.update(wall_s=wall, load1_before=load_before,
                  load1_after=os.getloadavg()[0] if hasattr(os, "getloadavg") else None)
    return result
