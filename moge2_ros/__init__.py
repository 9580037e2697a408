"""moge2_ros: MoGe-2 monocular metric geometry (depth, points, normals, intrinsics) for ROS 2.

The public API is imported lazily, so ``import moge2_ros`` (and the ``moge2-ros`` command's argument
parsing) does not pay for importing torch::

    from moge2_ros import load_model, Predictor, Geometry
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from moge2_ros._lazy import lazy_exports

__version__ = "0.1.0"

__all__ = ["Geometry", "MoGeModel", "Predictor", "load_model", "__version__"]

# name -> module that defines it
_LAZY = {
    "load_model": "moge2_ros.checkpoints",
    "MoGeModel": "moge2_ros.checkpoints",
    "Predictor": "moge2_ros.inference",
    "Geometry": "moge2_ros.inference.result",
}

if TYPE_CHECKING:  # pragma: no cover
    from moge2_ros.checkpoints import MoGeModel, load_model
    from moge2_ros.inference import Predictor
    from moge2_ros.inference.result import Geometry


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
