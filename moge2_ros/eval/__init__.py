"""Evaluation: the official MoGe metrics, benchmark runs, rosbag evaluation and self-contained HTML reports.

Light to import (the command line imports :mod:`moge2_ros.eval.cli`): the public names below are loaded lazily::

    from moge2_ros.eval import compute_metrics, evaluate_geometry, write_html_report
"""

from __future__ import annotations

from moge2_ros._lazy import lazy_exports

#: Metric groups of :func:`compute_metrics`, in output order (here, not in :mod:`.metrics`, so that the command
#: line can offer them without importing torch).
METRIC_GROUPS = ("depth_metric", "depth_scale_invariant", "depth_affine_invariant", "disparity_affine_invariant",
                 "points_metric", "points_scale_invariant", "points_affine_invariant", "fov_x", "boundary")

# name -> module that defines it
_LAZY: dict[str, str] = {
    **{name: "moge2_ros.eval.metrics" for name in (
        "rel_depth", "delta1_depth", "rel_point", "delta1_point", "rel_point_local", "delta1_point_local",
        "boundary_f1", "compute_metrics", "evaluate_geometry", "gt_from_sample", "pred_from_geometry", "key_average",
        "nest_metrics")},
    "write_html_report": "moge2_ros.eval.report",
    **{name: "moge2_ros.eval.benchmark" for name in ("BenchmarkSpec", "load_benchmarks", "run_benchmarks")},
    "evaluate_bag": "moge2_ros.eval.bag_eval",
}

__all__ = sorted([*_LAZY, "METRIC_GROUPS"])


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
