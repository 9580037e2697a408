"""The log-depth Poisson completion, re-exported from :mod:`moge2_ros.geometry.poisson`.

The pure solver lives in the geometry layer so that layers below ``refine`` (the metric anchors of
:mod:`moge2_ros.anchors`, mode ``complete``) can use it too; the refinement pipeline and its users import it from
here as before.
"""

from moge2_ros.geometry.poisson import (  # noqa: F401
    PoissonResult,
    PoissonSystem,
    Solver,
    poisson_system,
    scipy_available,
    solve_log_depth_poisson,
)

__all__ = ["PoissonSystem", "PoissonResult", "Solver", "poisson_system", "solve_log_depth_poisson", "scipy_available"]
