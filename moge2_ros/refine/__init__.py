"""Real-data label refinement (the MoGe-2 data pipeline): mismatch filtering against a synthetic-trained model and
log-depth Poisson completion.

* :mod:`~moge2_ros.refine.filter`: :func:`mismatch_filter` (per-neighbourhood robust scale + shift alignment,
  radius-relative flags, votes per level);
* :mod:`~moge2_ros.refine.poisson`: :func:`solve_log_depth_poisson` (scipy sparse direct or torch PCG);
* :mod:`~moge2_ros.refine.pipeline`: :func:`refine_depth` / :func:`refine_sample` / :func:`predict_points`;
* :mod:`~moge2_ros.refine.corrupt`: sensor-corruption simulator with exact truth (controlled tests, benchmark);
* :mod:`~moge2_ros.refine.cli`: the ``moge2-ros refine`` subcommand.

The package itself imports nothing heavy (``moge2-ros --help`` loads :mod:`~moge2_ros.refine.cli` through it); the
names below are imported from their modules on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FilterConfig": "filter",
    "FilterResult": "filter",
    "mismatch_filter": "filter",
    "PoissonResult": "poisson",
    "solve_log_depth_poisson": "poisson",
    "RefineConfig": "pipeline",
    "RefineOutput": "pipeline",
    "refine_depth": "pipeline",
    "refine_sample": "pipeline",
    "predict_points": "pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"moge2_ros.refine.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'moge2_ros.refine' has no attribute {name!r}")
