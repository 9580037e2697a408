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

from moge2_ros._lazy import lazy_exports

# name -> module that defines it
_EXPORTS: dict[str, str] = {
    **{name: "moge2_ros.refine.filter" for name in ("FilterConfig", "FilterResult", "mismatch_filter")},
    **{name: "moge2_ros.refine.poisson" for name in ("PoissonResult", "solve_log_depth_poisson")},
    **{name: "moge2_ros.refine.pipeline" for name in (
        "RefineConfig", "RefineOutput", "refine_depth", "refine_sample", "predict_points")},
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
