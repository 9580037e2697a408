"""The one in-memory record every dataset produces: :class:`Sample`.

Folder datasets, rosbag recordings, the synthetic generator and the refinement tool all yield ``Sample``
objects; the training pipeline, the evaluation code and the refinement tool consume them.  Arrays are numpy,
unbatched, in the conventions of the whole package (DESIGN.md §7):

* ``image``: ``(H, W, 3)`` uint8 RGB.
* ``depth``: ``(H, W)`` float32 **metres** along the optical axis (z), ``NaN`` where unknown (no measurement,
  filtered, outside the sensor's range).  Never 0 or +inf for "unknown".
* ``intrinsics``: ``(3, 3)`` float64 **pixel** intrinsics (ROS ``CameraInfo.K``: pixel centres at integer
  coordinates; see :mod:`moge2_ros.geometry.intrinsics` for the normalised form the model uses).
* ``sky``: optional ``(H, W)`` bool, pixels known to have NO geometry (sky, infinitely far, "mask negative" of the
  mask head).  ``None`` means unknown (real sensors: a missing depth is not sky).
* ``normal``: optional ``(H, W, 3)`` float32 unit normals in the camera frame (OpenCV: x right, y down, z
  forward), pointing towards the camera; ``NaN`` where unknown.
* ``provenance``: optional ``(H, W)`` uint8 label origin of refined data (:data:`PROVENANCE`).
* ``label_type``: the loss set of the official recipe: ``"A"`` synthetic dense, ``"B"`` real SfM/RGB-D-like,
  ``"C"`` LiDAR-like sparse.
* ``is_metric``: whether ``depth`` is in true metres (trains the metric-scale head) or only up to scale.
* ``source``: a human-readable origin (file path, ``bag:topic@stamp``, ``synthetic:seed``) used in error
  messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from moge2_ros.errors import DatasetError

__all__ = ["Dataset", "Sample", "LABEL_TYPES", "INVALID_LABEL", "PROVENANCE", "validate_sample"]

#: Label types of a Sample, each naming a loss set of the official recipe: "A" synthetic (dense, exact), "B" real
#: (SfM / MVS / RGB-D), "C" LiDAR (sparse).
LABEL_TYPES = ("A", "B", "C")
#: The label type a training item gets instead when almost none of its pixels is valid (no loss; set by
#: :mod:`moge2_ros.data.pipeline`, never by a Sample).
INVALID_LABEL = "invalid"

#: Values of ``Sample.provenance`` (written by ``moge2-ros refine``).
PROVENANCE = {"missing": 0, "kept": 1, "filtered": 2, "filled": 3}


@dataclass
class Sample:
    """One RGB frame with metric geometry labels (see the module docstring for shapes, units and frames)."""

    image: np.ndarray
    depth: np.ndarray
    intrinsics: np.ndarray
    sky: np.ndarray | None = None
    normal: np.ndarray | None = None
    provenance: np.ndarray | None = None
    label_type: str = "B"
    is_metric: bool = True
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    def valid(self) -> np.ndarray:
        """``(H, W)`` bool: pixels with a finite, positive depth."""
        with np.errstate(invalid="ignore"):
            return np.isfinite(self.depth) & (self.depth > 0)

    def replace(self, **changes: Any) -> "Sample":
        """A copy with some fields replaced (arrays are not copied)."""
        return replace(self, **changes)


def _fail(sample: Sample, message: str) -> None:
    where = f" ({sample.source})" if sample.source else ""
    raise DatasetError(f"sample{where}: {message}")


def validate_sample(sample: Sample) -> Sample:
    """Check shapes, dtypes and value rules of ``sample``; raise :class:`DatasetError` naming the source.

    Returns the same object, so ``validate_sample(Sample(...))`` can be used inline.
    """
    image = sample.image
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        _fail(sample, f"image: expected (H, W, 3) uint8 RGB, found {getattr(image, 'dtype', type(image))} "
                      f"{getattr(image, 'shape', '')}")
    h, w = image.shape[:2]
    if h < 2 or w < 2:
        _fail(sample, f"image: expected at least 2x2 pixels, found {w}x{h}")
    depth = sample.depth
    if not isinstance(depth, np.ndarray) or depth.shape != (h, w) or depth.dtype != np.float32:
        _fail(sample, f"depth: expected ({h}, {w}) float32 metres, found {getattr(depth, 'dtype', type(depth))} "
                      f"{getattr(depth, 'shape', '')}")
    with np.errstate(invalid="ignore"):
        bad = np.isinf(depth) | (depth <= 0)
    if bad.any():
        _fail(sample, f"depth: {int(bad.sum())} pixels are <= 0 or infinite; unknown depth must be NaN")
    k = np.asarray(sample.intrinsics)
    if k.shape != (3, 3) or not np.isfinite(k).all():
        _fail(sample, f"intrinsics: expected a finite (3, 3) pixel matrix, found shape {k.shape}")
    if not (k[0, 0] > 0 and k[1, 1] > 0 and k[1, 0] == 0 and k[2, 0] == 0 and k[2, 1] == 0 and k[2, 2] == 1):
        _fail(sample, f"intrinsics: expected [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0, found {k.tolist()}")
    if sample.sky is not None and (sample.sky.shape != (h, w) or sample.sky.dtype != np.bool_):
        _fail(sample, f"sky: expected ({h}, {w}) bool, found {sample.sky.dtype} {sample.sky.shape}")
    if sample.normal is not None and (sample.normal.shape != (h, w, 3) or sample.normal.dtype != np.float32):
        _fail(sample, f"normal: expected ({h}, {w}, 3) float32, found {sample.normal.dtype} {sample.normal.shape}")
    if sample.provenance is not None and (sample.provenance.shape != (h, w) or sample.provenance.dtype != np.uint8):
        _fail(sample, f"provenance: expected ({h}, {w}) uint8, found {sample.provenance.dtype} "
                      f"{sample.provenance.shape}")
    if sample.label_type not in LABEL_TYPES:
        _fail(sample, f"label_type: expected one of {LABEL_TYPES}, found {sample.label_type!r}")
    return sample


class Dataset(Sequence[Sample]):
    """Base class of the datasets :func:`~moge2_ros.data.open.open_dataset` returns: a ``Sequence[Sample]`` (read on access) with one
    name per sample.

    Attributes:
        stems: one name per sample, in order (for the folder, 7-Scenes and bag formats a valid folder-format stem).
    """

    stems: Sequence[str]
