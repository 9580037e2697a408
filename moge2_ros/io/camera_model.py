"""The camera of a ``sensor_msgs/CameraInfo`` for one image: K, D, R, P, binning and region of interest, with the
semantics of ``image_geometry.PinholeCameraModel`` (ROS ``image_proc``).  numpy only: the rectification maps
(OpenCV) and the resampling (torch) are :mod:`moge2_ros.pipeline.rectify` and :mod:`moge2_ros.geometry.remap`.

Conventions (REP 104 / image_geometry):
    * ``width x height`` of a CameraInfo is the calibrated full sensor resolution; ``K`` (raw camera), ``D``
      (distortion of the raw image), ``R`` (rotation of the raw camera frame into the rectified one) and ``P``
      (the rectified pinhole camera, ``[K' | t]``) are at that resolution.  Pixel centres at integer coordinates.
    * The image is the ROI of the full sensor (``roi`` all zero = the full sensor), then binned (``binning_x/y``
      0 or 1 = none): the image's K and P are the full ones with the principal point shifted by the ROI offset,
      then divided by the binning (fx, cx, Tx by ``binning_x``; fy, cy, Ty by ``binning_y``), as
      ``PinholeCameraModel.fromCameraInfo`` does.  ``width / binning_x x height / binning_y`` (of the ROI when
      there is one) must be the image size; a CameraInfo of ``0 x 0`` without binning or ROI means the image size.
    * Distortion models: ``plumb_bob`` (k1 k2 p1 p2 k3), ``rational_polynomial`` (k1 k2 p1 p2 k3 k4 k5 k6),
      ``equidistant`` (fisheye k1 k2 k3 k4).  An empty or all-zero D is a pinhole camera whatever the model name
      says (image_geometry copies such an image unchanged: it is rectified already); the image is then used as it
      is, with K.
    * An all-zero R is taken as the identity and an all-zero P as absent (the rectified camera is then K, or a
      chosen field of view); drivers without a stereo calibration publish zeros there.  An object without the
      ``distortion_model`` / ``d`` / ``r`` / ``p`` fields (a hand-made stand-in) reads as "", [], zeros, zeros.

Every problem raises :class:`~moge2_ros.io.msg_codec.ConversionError` with one line starting ``camera_info``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from moge2_ros.io.msg_codec import (
    ConversionError,
    as_str,
    camera_info_layout,
    field as msg_field,
    k_matrix,
    short,
)
from moge2_ros.io.plausibility import check_intrinsics

__all__ = [
    "DISTORTION_MODELS",
    "MAX_RECTIFIED_FOV_DEG",
    "CameraModel",
    "camera_info_key",
    "check_distortion",
    "camera_model_from_info",
    "camera_model_from_k",
    "rectified_intrinsics",
]

#: Distortion models handled and their number of coefficients in D.
DISTORTION_MODELS: Final[dict[str, int]] = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}

#: Widest horizontal field of view of a chosen rectified pinhole view (``rectified_fov_deg``), degrees: a pinhole
#: image wider than this spends most of its pixels on the stretched border.
MAX_RECTIFIED_FOV_DEG: Final[float] = 150.0

_ZEROS9: Final[tuple[float, ...]] = (0.0,) * 9
_ZEROS12: Final[tuple[float, ...]] = (0.0,) * 12

#: Largest ratio between a rectified focal length (P) and the raw one (K), either way: a rectified view zooms in or
#: out (a fisheye's P is often a third of K's), but a P that far off belongs to another camera or resolution.
_MAX_P_K_RATIO: Final[float] = 8.0

#: Largest deviation of R R^T from the identity accepted for a rotation (a YAML calibration prints 8-9 digits).
_ROTATION_TOL: Final[float] = 1e-4


@dataclass(frozen=True)
class CameraModel:
    """The camera of one image (binning and ROI applied), all matrices float64 in pixels of that image.

    Attributes:
        width, height: the image size, pixels.
        distortion_model: ``pinhole`` (no distortion: the image is used as it is), ``plumb_bob``,
            ``rational_polynomial`` or ``equidistant``.
        k: ``(3, 3)`` raw camera K of the image.
        d: distortion coefficients (empty for ``pinhole``).
        r: ``(3, 3)`` rotation raw -> rectified (identity when the message had zeros).
        p: ``(3, 4)`` rectified camera of the image, or None when the message gave none (all zero).
        key: hashable content (what a cache of rectification maps is keyed on).
        info_size: the CameraInfo's own ``width, height`` (full sensor), binning ``(bx, by)`` (1 = none) and ROI
            ``(x_offset, y_offset, width, height)`` (all zero = none), for messages and the raw-grid output.
    """

    width: int
    height: int
    distortion_model: str
    k: npt.NDArray[np.float64]
    d: npt.NDArray[np.float64]
    r: npt.NDArray[np.float64]
    p: npt.NDArray[np.float64] | None
    key: tuple[Any, ...]
    info_size: tuple[int, int] = (0, 0)
    binning: tuple[int, int] = (1, 1)
    roi: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def distorted(self) -> bool:
        """Whether the image needs resampling to become a pinhole image (a non-zero D)."""
        return self.distortion_model != "pinhole"


def _floats(values: Any, count: int | None, what: str) -> npt.NDArray[np.float64]:
    try:
        array = np.array(values, dtype=np.float64).ravel()
    except (TypeError, ValueError, OverflowError):
        raise ConversionError(f"{what}: expected a list of numbers, found {short(values)}") from None
    if count is not None and array.size != count:
        raise ConversionError(f"{what}: expected {count} values, found {array.size}")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ConversionError(f"{what}: expected finite values, found {what.rsplit('.', 1)[-1]}[{bad[0]}] = "
                              f"{array[bad[0]]:g}")
    return array


def check_distortion(model_name: Any, values: Any, what: str = "camera_info.d",
                     what_model: str = "camera_info.distortion_model") -> tuple[str, npt.NDArray[np.float64]]:
    """``(model, D)`` of a distortion model name and coefficients: ``("pinhole", [])`` for an empty or all-zero D
    (whatever the name), else a model of :data:`DISTORTION_MODELS` with its number of finite coefficients.

    Raises:
        ConversionError: ``<what_model>: ...`` (unknown name) or ``<what>: ...`` (wrong length, NaN / Inf).
    """
    name = as_str(model_name, what_model)
    d = _floats(values, None, what)
    if not np.any(d != 0):
        return "pinhole", np.zeros(0, dtype=np.float64)
    if name not in DISTORTION_MODELS:
        shown = " ".join(name.split())[:40]
        raise ConversionError(f"{what_model}: expected one of {', '.join(DISTORTION_MODELS)} for a "
                              f"non-zero D, found {shown!r}")
    count = DISTORTION_MODELS[name]
    if d.size != count:
        raise ConversionError(f"{what}: expected {count} coefficients for {name}, found {d.size}")
    return name, d


def _rotation(values: Any) -> npt.NDArray[np.float64]:
    r = _floats(values, 9, "camera_info.r").reshape(3, 3)
    if not np.any(r != 0):
        return np.eye(3)
    error = float(np.abs(r @ r.T - np.eye(3)).max())
    det = float(np.linalg.det(r))
    if error > _ROTATION_TOL or det <= 0:
        raise ConversionError(f"camera_info.r: expected a rotation matrix (R R^T = I, det +1), found "
                              f"max |R R^T - I| = {error:.3g}, det = {det:.3g}")
    return r


def _projection(values: Any, width: int, height: int, adjust: tuple[float, float, int, int],
                k: npt.NDArray[np.float64]) -> npt.NDArray[np.float64] | None:
    p = _floats(values, 12, "camera_info.p").reshape(3, 4)
    if not np.any(p != 0):
        return None
    if p[2, 3] != 0:
        raise ConversionError(f"camera_info.p: expected P[2, 3] = 0 (a rectified pinhole camera), found {p[2, 3]:g}")
    rect = k_matrix(p[:, :3], "camera_info.p[:3, :3]")
    p = np.concatenate([rect, p[:, 3:]], axis=1)
    p = _adjust(p, *adjust)
    check_intrinsics(p[:, :3], width, height, "camera_info.p", ConversionError)
    for axis, name in ((0, "fx"), (1, "fy")):
        ratio = p[axis, axis] / k[axis, axis]
        if not 1.0 / _MAX_P_K_RATIO <= ratio <= _MAX_P_K_RATIO:
            raise ConversionError(f"camera_info.p: rectified {name} = {p[axis, axis]:g} px is not within "
                                  f"{_MAX_P_K_RATIO:g}x of K's {k[axis, axis]:g} px (P does not belong to this K)")
    return p


def _adjust(m: npt.NDArray[np.float64], x_off: float, y_off: float, bx: int, by: int) -> npt.NDArray[np.float64]:
    """image_geometry's ROI and binning adjustment of a K (3x3) or P (3x4): shift the principal point by the ROI
    offset, then divide row 0 by ``bx`` and row 1 by ``by``."""
    m = m.copy()
    m[0, 2] -= x_off
    m[1, 2] -= y_off
    m[0] /= bx
    m[1] /= by
    return m


def camera_info_key(msg: Any) -> tuple[Any, ...] | None:
    """Hashable content of a CameraInfo (everything but the header), or None when a field is malformed (then
    :func:`camera_model_from_info` says what is wrong)."""
    try:
        roi = msg.roi
        return (int(msg.width), int(msg.height), str(getattr(msg, "distortion_model", "")),
                tuple(float(v) for v in getattr(msg, "d", ())), tuple(float(v) for v in msg.k),
                tuple(float(v) for v in getattr(msg, "r", _ZEROS9)),
                tuple(float(v) for v in getattr(msg, "p", _ZEROS12)),
                int(msg.binning_x), int(msg.binning_y),
                (int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)))
    except (AttributeError, TypeError, ValueError, OverflowError):
        return None


def camera_model_from_info(msg: Any, width: int, height: int) -> CameraModel:
    """The camera of a ``sensor_msgs/CameraInfo`` (any object with its fields) for an image of ``width x height``.

    Raises:
        ConversionError: one line starting ``camera_info``: size mismatch, binning that does not divide the size,
            ROI outside the calibrated image, K / P not a plausible pinhole matrix for the image
            (:func:`~moge2_ros.io.plausibility.check_intrinsics`), unknown distortion model or D of the wrong
            length for a non-zero D, NaN / Inf anywhere, R not a rotation, P[2, 3] not 0.
    """
    layout = camera_info_layout(msg, width, height)
    k_full = k_matrix(msg_field(msg, "k", "camera_info"), "camera_info.k")
    adjust = (float(layout.roi[0]), float(layout.roi[1]), layout.binning[0], layout.binning[1])
    k = check_intrinsics(_adjust(k_full, *adjust), width, height, "camera_info.k", ConversionError)
    model, d = check_distortion(getattr(msg, "distortion_model", ""), getattr(msg, "d", ()))
    r = _rotation(getattr(msg, "r", _ZEROS9))
    p = _projection(getattr(msg, "p", _ZEROS12), width, height, adjust, k)
    key = (width, height, model, tuple(d), tuple(k.ravel()), tuple(r.ravel()),
           None if p is None else tuple(p.ravel()))
    return CameraModel(width=width, height=height, distortion_model=model, k=k, d=d, r=r, p=p, key=key,
                       info_size=layout.info_size, binning=layout.binning, roi=layout.roi)


def camera_model_from_k(k: npt.NDArray[np.float64], width: int, height: int, distortion_model: str = "plumb_bob",
                        d: Any = (), what: str = "fixed_distortion") -> CameraModel:
    """The camera of a known K (``fixed_intrinsics``, a calibration file) with an optional distortion ``d`` of
    ``distortion_model``: R identity, no P (the rectified camera is K or a chosen field of view).

    Raises:
        ConversionError: as :func:`camera_model_from_info`, naming ``what`` for the distortion.
    """
    k = check_intrinsics(k, width, height, "k", ConversionError)
    model, coeffs = check_distortion(distortion_model, d, what, f"{what}_model")
    key = (width, height, model, tuple(coeffs), tuple(k.ravel()), tuple(np.eye(3).ravel()), None)
    return CameraModel(width=width, height=height, distortion_model=model, k=k, d=coeffs, r=np.eye(3), p=None,
                       key=key, info_size=(width, height))


def rectified_intrinsics(camera: CameraModel, fov_deg: float = 0.0, size: tuple[int, int] | None = None) \
        -> tuple[npt.NDArray[np.float64], int, int]:
    """The pinhole camera the image is rectified into: ``(K', width', height')``.

    * ``fov_deg`` > 0: square pixels, a horizontal field of view of ``fov_deg`` (at most
      :data:`MAX_RECTIFIED_FOV_DEG`), the principal point at the centre;
    * else ``P[:3, :3]`` (ROS ``image_rect``), or K when the CameraInfo gave no P.

    ``size`` (``(width, height)``, default the image's) resizes the view: focal lengths scale with the size and the
    principal point keeps its place in the picture (pixel centres at integer coordinates).

    Raises:
        ConversionError: a field of view outside (0, :data:`MAX_RECTIFIED_FOV_DEG`], a size that is not two
            integers > 0, a resulting K that is implausible for the size.
    """
    out_w, out_h = size if size is not None else (camera.width, camera.height)
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in (out_w, out_h)):
        raise ConversionError(f"rectified_size: expected two integers > 0, found {short(size)}")
    out_w, out_h = int(out_w), int(out_h)
    if fov_deg:
        if not 0.0 < fov_deg <= MAX_RECTIFIED_FOV_DEG:
            raise ConversionError(f"rectified_fov_deg: expected a value in (0, {MAX_RECTIFIED_FOV_DEG:g}] degrees, "
                                  f"found {fov_deg!r}")
        focal = out_w / (2.0 * math.tan(math.radians(fov_deg) / 2.0))
        k = np.array([[focal, 0.0, (out_w - 1) / 2.0], [0.0, focal, (out_h - 1) / 2.0], [0.0, 0.0, 1.0]])
    else:
        k = (camera.p[:, :3] if camera.p is not None else camera.k).copy()
        sx, sy = out_w / camera.width, out_h / camera.height
        if (sx, sy) != (1.0, 1.0):
            k[0, 0] *= sx
            k[1, 1] *= sy
            k[0, 2] = (k[0, 2] + 0.5) * sx - 0.5
            k[1, 2] = (k[1, 2] + 0.5) * sy - 0.5
    return check_intrinsics(k, out_w, out_h, "rectified camera", ConversionError), out_w, out_h
