"""Plausibility of pinhole camera intrinsics: the one check every entry point of a given K runs (a CameraInfo, a
calibration file, ``--intrinsics``, the node's ``fixed_intrinsics``, ``Predictor.predict(intrinsics=...)``).

A K can be well-formed (finite, fx, fy > 0, zero skew) and still describe no camera: fx = 1e30 px gives depths of
~1e27 m with every pixel "valid", fx = 1e-30 px a field of view of 180 degrees.  :func:`check_intrinsics` refuses
such values with a one-line message naming the rule, the value (``%g``, so never a huge string) and the limit.

Convention: ROS ``CameraInfo.K`` in pixels, ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``, pixel centres at integer
coordinates (the image spans ``-0.5 .. W - 0.5``).  The field of view of a side of ``W`` pixels is
``2 * atan(W / (2 * fx))``.

Rules, with an image size ``W x H``:
    * every entry of K finite; fx > 0 and fy > 0;
    * fx / fy in ``[1 / MAX_ASPECT, MAX_ASPECT]``;
    * horizontal and vertical fields of view in ``[MIN_FOV_DEG, MAX_FOV_DEG]``;
    * principal point near the image: ``cx`` in ``[-M * W, (1 + M) * W]``, ``cy`` in ``[-M * H, (1 + M) * H]``
      with ``M = PRINCIPAL_POINT_MARGIN``.

Without an image size (a configuration or a file read before any image), the rules that need one are replaced by
the loosest bounds any image of at most ``MAX_IMAGE_SIDE`` pixels a side allows (:data:`MIN_FOCAL_PX`,
:data:`MAX_FOCAL_PX`, :data:`MAX_PRINCIPAL_POINT_PX`); the full check runs again once the size is known.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from moge2_ros.errors import InputError

__all__ = [
    "MAX_ASPECT",
    "MAX_FOCAL_PX",
    "MAX_FOV_DEG",
    "MAX_IMAGE_SIDE",
    "MAX_PRINCIPAL_POINT_PX",
    "MIN_FOCAL_PX",
    "MIN_FOV_DEG",
    "PRINCIPAL_POINT_MARGIN",
    "check_intrinsics",
    "fov_deg",
]

#: Narrowest field of view per axis, degrees.  An 800 mm lens on a full-frame sensor sees 2.6 x 1.7 degrees; below
#: 1 degree is a telescope (or a K in the wrong unit, or a garbage fx), where a monocular depth model has nothing to
#: go on.
MIN_FOV_DEG: Final[float] = 1.0

#: Widest field of view per axis, degrees.  A pinhole image cannot reach 180 degrees (fx -> 0); rectified wide-angle
#: and fisheye crops reach 120-160.  Anything wider is a K that does not belong to this image (or one in metres).
MAX_FOV_DEG: Final[float] = 175.0

#: Largest pixel aspect fx / fy (and fy / fx).  Square pixels give 1; a 2x anamorphic lens, a field of an interlaced
#: video or a non-uniform resize give up to ~4; 8 leaves room and still catches a swapped or mistyped value.
MAX_ASPECT: Final[float] = 8.0

#: How far outside the image the principal point may be, in image sizes per side: cx in [-W, 2W] and cy in
#: [-H, 2H] for a margin of 1.  Crops shift it (an off-centre crop of a wide image can move it beyond the edge), but
#: not by more than the image is wide unless the crop is a sliver of a much larger picture.
PRINCIPAL_POINT_MARGIN: Final[float] = 1.0

#: Largest image side in pixels assumed when no image size is known (a 150-megapixel sensor is 14204 px wide).
MAX_IMAGE_SIDE: Final[int] = 65536

#: Smallest focal length of any plausible image: a 1 px side at :data:`MAX_FOV_DEG`, ~0.0218 px.
MIN_FOCAL_PX: Final[float] = 1.0 / (2.0 * math.tan(math.radians(MAX_FOV_DEG) / 2.0))

#: Largest focal length of any plausible image: :data:`MAX_IMAGE_SIDE` at :data:`MIN_FOV_DEG`, ~3.75e6 px.
MAX_FOCAL_PX: Final[float] = MAX_IMAGE_SIDE / (2.0 * math.tan(math.radians(MIN_FOV_DEG) / 2.0))

#: Largest principal point coordinate of any plausible image, in absolute value: ``(1 + margin) * MAX_IMAGE_SIDE``.
MAX_PRINCIPAL_POINT_PX: Final[float] = (1.0 + PRINCIPAL_POINT_MARGIN) * MAX_IMAGE_SIDE


def fov_deg(side_px: float, focal_px: float) -> float:
    """Field of view ``2 * atan(side / (2 * focal))`` in degrees of an image side of ``side_px`` pixels."""
    return math.degrees(2.0 * math.atan2(side_px, 2.0 * focal_px))


def _size(value: Any, name: str, what: str, error: type[InputError]) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise error(f"{what}: image {name} must be an integer > 0, found {value!r}"[:200])
    return int(value)


def check_intrinsics(
    k: Any,
    width: int | None = None,
    height: int | None = None,
    what: str = "intrinsics",
    error: type[InputError] = InputError,
) -> npt.NDArray[np.float64]:
    """Check that the pixel intrinsics ``k`` are plausible for an image of ``width x height`` (module docstring).

    Only fx, fy, cx, cy are judged (and the finiteness of every entry); the form of K (zero skew, last row
    ``(0, 0, 1)``) is the callers' check.

    Args:
        k: ``(3, 3)`` matrix or 9 row-major values, pixels (ROS ``CameraInfo.K``).
        width, height: the image size in pixels, or both None when it is not known yet (size-free bounds).
        what: names ``k`` in the message (``camera_info.k``, ``fixed_intrinsics``, ``--intrinsics``, ...).
        error: the exception class raised (an :class:`InputError` subclass, e.g. the codec's ``ConversionError``).

    Returns:
        ``(3, 3)`` float64 K (a copy).

    Raises:
        InputError (``error``): one line ``<what>: <rule>: <value> ... <limit>``.
    """
    try:
        matrix = np.array(k, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise error(f"{what}: expected a 3x3 matrix of numbers (pixels), found {type(k).__name__}") from None
    if matrix.size != 9 or matrix.shape not in ((3, 3), (9,)):
        raise error(f"{what}: expected a 3x3 matrix (or 9 values), found shape {matrix.shape}")
    matrix = matrix.reshape(3, 3)
    flat = matrix.ravel()
    bad = np.flatnonzero(~np.isfinite(flat))
    if bad.size:
        raise error(f"{what}: every entry must be finite, found K[{bad[0]}] = {flat[bad[0]]:g}")
    fx, fy, cx, cy = (float(v) for v in (matrix[0, 0], matrix[1, 1], matrix[0, 2], matrix[1, 2]))
    if not (fx > 0 and fy > 0):
        raise error(f"{what}: focal lengths must be > 0 pixels, found fx = {fx:g}, fy = {fy:g} "
                    "(an uncalibrated camera publishes zeros)")
    aspect = fx / fy
    if not 1.0 / MAX_ASPECT <= aspect <= MAX_ASPECT:
        raise error(f"{what}: pixel aspect fx / fy = {aspect:g} (fx = {fx:g}, fy = {fy:g}) is outside "
                    f"[1/{MAX_ASPECT:g}, {MAX_ASPECT:g}]")
    if width is None and height is None:
        for name, focal in (("fx", fx), ("fy", fy)):
            if focal < MIN_FOCAL_PX:
                raise error(f"{what}: {name} = {focal:g} px is below {MIN_FOCAL_PX:.3g} px, a {MAX_FOV_DEG:g} deg "
                            "field of view over 1 px")
            if focal > MAX_FOCAL_PX:
                raise error(f"{what}: {name} = {focal:g} px is above {MAX_FOCAL_PX:.3g} px, a {MIN_FOV_DEG:g} deg "
                            f"field of view over {MAX_IMAGE_SIDE} px (the widest image assumed)")
        for name, centre in (("cx", cx), ("cy", cy)):
            if not -MAX_PRINCIPAL_POINT_PX <= centre <= MAX_PRINCIPAL_POINT_PX:
                raise error(f"{what}: {name} = {centre:g} px is outside +-{MAX_PRINCIPAL_POINT_PX:g} px "
                            f"(the principal point of an image of at most {MAX_IMAGE_SIDE} px a side)")
        return matrix
    w = _size(width, "width", what, error)
    h = _size(height, "height", what, error)
    for axis, side, name, focal in (("horizontal", w, "fx", fx), ("vertical", h, "fy", fy)):
        fov = fov_deg(side, focal)
        if not MIN_FOV_DEG <= fov <= MAX_FOV_DEG:
            raise error(f"{what}: {axis} field of view {fov:g} deg ({name} = {focal:g} px over {side} px) is outside "
                        f"[{MIN_FOV_DEG:g}, {MAX_FOV_DEG:g}] deg")
    margin = PRINCIPAL_POINT_MARGIN
    for name, centre, side in (("cx", cx, w), ("cy", cy, h)):
        low, high = -margin * side, (1.0 + margin) * side
        if not low <= centre <= high:
            raise error(f"{what}: principal point {name} = {centre:g} px is outside [{low:g}, {high:g}] px "
                        f"(the {side} px image and {margin:g} image size beyond each edge)")
    return matrix
