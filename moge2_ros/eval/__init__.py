"""Evaluation: the official MoGe metrics, benchmark runs, rosbag evaluation and self-contained HTML reports.

Light to import (the command line imports :mod:`moge2_ros.eval.cli`): the public names below are loaded lazily::

    from moge2_ros.eval import compute_metrics, evaluate_geometry, write_html_report
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module that defines it
_LAZY = {
    "rel_depth": "metrics",
    "delta1_depth": "metrics",
    "rel_point": "metrics",
    "delta1_point": "metrics",
    "rel_point_local": "metrics",
    "delta1_point_local": "metrics",
    "boundary_f1": "metrics",
    "compute_metrics": "metrics",
    "evaluate_geometry": "metrics",
    "gt_from_sample": "metrics",
    "pred_from_geometry": "metrics",
    "key_average": "metrics",
    "nest_metrics": "metrics",
    "write_html_report": "report",
    "BenchmarkSpec": "benchmark",
    "load_benchmarks": "benchmark",
    "run_benchmarks": "benchmark",
    "evaluate_bag": "bag_eval",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'moge2_ros.eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"moge2_ros.eval.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
