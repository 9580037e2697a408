"""Mode ``complete``: fill the holes of a dense-ish metric depth anchor with the network's log-depth gradients.

The paper's completion: the known sensor depth is kept exactly, the missing pixels get the log-depth whose
gradients match the network's (a Poisson equation, :func:`moge2_ros.geometry.poisson.solve_log_depth_poisson`),
so the metric level comes from the sensor and only the network's relative shape is used.
"""

from __future__ import annotations

import numpy as np

from moge2_ros.geometry.poisson import solve_log_depth_poisson

__all__ = ["complete_depth"]


def complete_depth(known_depth: np.ndarray, guide_depth: np.ndarray, solver: str = "auto") -> np.ndarray:
    """Complete ``known_depth`` from ``guide_depth``'s log-depth gradients.

    Args:
        known_depth: ``(H, W)`` sensor depth on the image grid, metres, NaN where missing.
        guide_depth: ``(H, W)`` network depth of the same grid (any global scale), NaN where invalid.
        solver: ``auto`` / ``scipy`` / ``torch`` (see :func:`~moge2_ros.geometry.poisson.solve_log_depth_poisson`).

    Returns:
        ``(H, W)`` float32 metres: the sensor depth where known, the completion in the holes, NaN in holes whose
        region touches no sensor pixel or has no valid prediction.
    """
    result = solve_log_depth_poisson(np.asarray(known_depth, dtype=np.float32),
                                     np.asarray(guide_depth, dtype=np.float32), solver=solver)
    return result.depth.cpu().numpy()
