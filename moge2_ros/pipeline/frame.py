"""The per-frame pipeline of ``moge2_node`` and ``bag-infer``: one camera image in, the codec payloads of its outputs
out.  ROS-free: no rclpy, no rosbags; callers wrap the payloads into their own message classes
(:mod:`moge2_ros.ros.conversions` for rclpy, :mod:`moge2_ros.bags.writer` for rosbags).

Input side (the one decoding both callers use):
    :func:`decode_rgb` (from :mod:`moge2_ros.io.msg_codec`) turns a ``sensor_msgs/Image`` or ``CompressedImage``
    (any object with their fields) into the model input; a ``sensor_msgs/CameraInfo`` handed to
    :meth:`FramePipeline.process` is checked against the image by :func:`moge2_ros.io.msg_codec.check_camera_info`,
    fixed intrinsics by :func:`moge2_ros.io.plausibility.check_intrinsics` (once in :class:`FrameConfig` without an
    image size, then against each frame's size).  Given intrinsics that fail are replaced by an estimate and the
    reason returned (:attr:`FrameOutputs.intrinsics_error`).

Per frame, :meth:`FramePipeline.process` chooses the intrinsics (CameraInfo / estimate / fixed, see
:class:`FrameConfig`), runs the :class:`~moge2_ros.inference.Predictor` (with the intrinsics stabiliser when K is
estimated and stabilisation is on), smooths the metric scale, and encodes only the outputs asked for
(:data:`OUTPUTS`); asking for none runs no inference at all.

Frames and units: REP 103 optical frame (x right, y down, z forward); metres; intrinsics in pixels (ROS
``CameraInfo.K``, pixel centres at integer coordinates).  Outputs are at the input image's resolution.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from moge2_ros.errors import InputError
from moge2_ros.inference.temporal import INTRINSICS_MODES, IntrinsicsStabilizer, ScaleSmoother
from moge2_ros.io import msg_codec as codec
from moge2_ros.io.msg_codec import (
    DEPTH_ENCODINGS,
    CameraInfoFields,
    CloudFields,
    ConversionError,
    GeometryFields,
    ImageFields,
    decode_rgb,
)
from moge2_ros.io.plausibility import check_intrinsics

if TYPE_CHECKING:  # pragma: no cover
    from moge2_ros.inference import Predictor

__all__ = [
    "INTRINSICS_SOURCES",
    "OUTPUTS",
    "FrameConfig",
    "FrameOutputs",
    "FramePipeline",
    "decode_rgb",
]

#: What a frame can publish (names of :class:`FrameOutputs` fields): ``depth`` (depth image), ``camera_info``
#: (of the depth image), ``points`` (PointCloud2), ``normals`` (32FC3 image), ``mask`` (mono8), ``colorized``
#: (bgr8 depth preview), ``geometry`` (MonocularGeometry).
OUTPUTS: Final[tuple[str, ...]] = ("depth", "camera_info", "points", "normals", "mask", "colorized", "geometry")

#: Where the intrinsics come from: a valid CameraInfo (else estimated), always estimated, or fixed.
INTRINSICS_SOURCES: Final[tuple[str, ...]] = ("camera_info", "estimate", "fixed")


@dataclass(frozen=True)
class FrameConfig:
    """How a frame is turned into outputs (the node's parameters of the same names).

    Attributes:
        intrinsics_source: ``camera_info`` (use the CameraInfo given with the frame when valid: only the depth
            shift is solved; estimate K otherwise), ``estimate`` (always estimate K from the image) or ``fixed``
            (``fixed_intrinsics``).
        fixed_intrinsics: ``(fx, fy, cx, cy)`` in pixels for ``intrinsics_source = fixed``: finite, fx, fy > 0 and
            plausible for some image (:func:`~moge2_ros.io.plausibility.check_intrinsics` without a size); each
            frame checks them against its own size and estimates K when they do not fit.
        intrinsics_stabilization: for estimated K of a fixed camera: ``none``, ``average`` (mean of the last
            ``intrinsics_window`` frames) or ``lock`` (mean of the first ``intrinsics_window`` frames, then frozen).
        intrinsics_window: frames averaged / collected before locking (>= 1).
        scale_smoothing: EMA weight in [0, 1] of the newest frame's metric scale (0 = off).
        depth_encoding: ``32FC1`` (float metres) or ``16UC1`` (uint16 millimetres, 0 = invalid).
        invalid_depth: invalid 32FC1 pixels: ``nan`` or ``inf`` (REP 117 "no return").
        cloud_organized: organized cloud (H x W, NaN invalid) or unorganized (invalid points dropped).
        cloud_stride: keep every n-th pixel in both directions in the cloud (>= 1).
        cloud_rgb: add the packed ``rgb`` field to the cloud.
        cloud_normals: add ``normal_x/y/z`` fields to the cloud.

    Raises:
        InputError: from the constructor, for a value out of its range or choices.
    """

    intrinsics_source: str = "camera_info"
    fixed_intrinsics: tuple[float, float, float, float] | None = None
    intrinsics_stabilization: str = "none"
    intrinsics_window: int = 30
    scale_smoothing: float = 0.0
    depth_encoding: str = "32FC1"
    invalid_depth: str = "nan"
    cloud_organized: bool = True
    cloud_stride: int = 1
    cloud_rgb: bool = True
    cloud_normals: bool = False

    def __post_init__(self) -> None:
        _choice("intrinsics_source", self.intrinsics_source, INTRINSICS_SOURCES)
        _choice("intrinsics_stabilization", self.intrinsics_stabilization, INTRINSICS_MODES)
        _choice("depth_encoding", self.depth_encoding, DEPTH_ENCODINGS)
        _choice("invalid_depth", self.invalid_depth, ("nan", "inf"))
        if isinstance(self.intrinsics_window, bool) or not isinstance(self.intrinsics_window, int) \
                or self.intrinsics_window < 1:
            raise InputError(f"intrinsics_window: expected an integer >= 1, found {self.intrinsics_window!r}")
        if not 0.0 <= self.scale_smoothing <= 1.0:  # NaN fails too
            raise InputError(f"scale_smoothing: expected a number in [0, 1] (0 = off), found {self.scale_smoothing!r}")
        if isinstance(self.cloud_stride, bool) or not isinstance(self.cloud_stride, int) or self.cloud_stride < 1:
            raise InputError(f"cloud_stride: expected an integer >= 1, found {self.cloud_stride!r}")
        if self.intrinsics_source == "fixed":
            self.fixed_k()  # raises for missing or invalid values

    def fixed_k(self) -> npt.NDArray[np.float64]:
        """``(3, 3)`` float64 K in pixels of ``fixed_intrinsics``.

        Raises:
            InputError: not four finite numbers with fx, fy > 0, or values no image allows (a focal length of
                1e30 px; :func:`~moge2_ros.io.plausibility.check_intrinsics` without an image size).
        """
        try:
            values = [float(v) for v in self.fixed_intrinsics] if self.fixed_intrinsics is not None else []
        except (TypeError, ValueError, OverflowError):
            values = []
        if len(values) != 4 or not all(math.isfinite(v) for v in values):
            raise InputError(f"fixed_intrinsics: expected [fx, fy, cx, cy] (4 finite numbers, pixels), found "
                             f"{codec.short(self.fixed_intrinsics)}")
        fx, fy, cx, cy = values
        k = codec.k_matrix([fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0], "fixed_intrinsics")
        return check_intrinsics(k, None, None, "fixed_intrinsics")


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"{name}: expected one of {', '.join(choices)}, found {value!r}")


@dataclass(frozen=True)
class FrameOutputs:
    """What one frame publishes, as codec payloads (None where not asked for).

    Attributes:
        width, height: image size, pixels (every output image has it; the cloud too when organized, stride 1).
        k: ``(3, 3)`` float64 intrinsics of the outputs, pixels: the given K exactly (CameraInfo or fixed) or the
            estimate.
        intrinsics_estimated: whether ``k`` was estimated from the image(s).
        inference_s: model time of the frame (prediction, scale smoothing, the depth's copy to the host), seconds.
        depth: depth image (``FrameConfig.depth_encoding`` / ``invalid_depth``), along z.
        camera_info: CameraInfo describing ``depth`` (P = [K | 0], no distortion).
        cloud: PointCloud2 x, y, z [, rgb] [, normal_x/y/z], metres, optical frame.
        normals: 32FC3 unit normals, optical frame (None also when the model gives none).
        mask: mono8 validity, 255 = valid.
        colorized: bgr8 depth preview.
        geometry: MonocularGeometry content.
        intrinsics_error: why the given intrinsics were not used (K was estimated instead), or None: a
            :class:`ConversionError` whose message starts with ``camera_info`` for the CameraInfo given with the
            frame, an :class:`InputError` starting with ``fixed_intrinsics`` for fixed intrinsics implausible for
            this image's size.
    """

    width: int
    height: int
    k: npt.NDArray[np.float64]
    intrinsics_estimated: bool
    inference_s: float
    depth: ImageFields | None = None
    camera_info: CameraInfoFields | None = None
    cloud: CloudFields | None = None
    normals: ImageFields | None = None
    mask: ImageFields | None = None
    colorized: ImageFields | None = None
    geometry: GeometryFields | None = None
    intrinsics_error: InputError | None = None


class FramePipeline:
    """One camera's frame pipeline: its :class:`FrameConfig` and its state across frames (intrinsics stabiliser,
    metric scale smoother) around a :class:`~moge2_ros.inference.Predictor` built elsewhere
    (:func:`moge2_ros.inference.load_predictor`).

    :meth:`process` runs in one thread at a time (the node's worker); :meth:`configure` may be called from another
    thread (the node's parameter callback) and takes effect from the next frame on.

    Args:
        predictor: the model runner; its token budget, filters and ``max_pixels`` are the caller's to set. The
            pipeline sets ``predictor.estimate_normals`` per frame (normals only when an output needs them).
        config: the frame settings (default: :class:`FrameConfig` defaults).
    """

    def __init__(self, predictor: "Predictor", config: FrameConfig | None = None) -> None:
        self.predictor = predictor
        self._lock = threading.Lock()
        self._config = config if config is not None else FrameConfig()
        self._stabilizer = IntrinsicsStabilizer(self._config.intrinsics_stabilization, self._config.intrinsics_window)
        self._smoother = ScaleSmoother(self._config.scale_smoothing)

    @property
    def config(self) -> FrameConfig:
        return self._config

    def configure(self, config: FrameConfig) -> None:
        """Use ``config`` from the next frame on.  The intrinsics stabiliser and the scale smoother start over
        only when their own settings change."""
        with self._lock:
            old = self._config
            if (config.intrinsics_stabilization, config.intrinsics_window) != \
                    (old.intrinsics_stabilization, old.intrinsics_window):
                self._stabilizer = IntrinsicsStabilizer(config.intrinsics_stabilization, config.intrinsics_window)
            if config.scale_smoothing != old.scale_smoothing:
                self._smoother = ScaleSmoother(config.scale_smoothing)
            self._config = config

    def process(self, rgb: np.ndarray, outputs: Collection[str], camera_info: Any = None) -> FrameOutputs | None:
        """Run one frame and encode the ``outputs`` asked for.

        Args:
            rgb: ``(H, W, 3)`` RGB image, uint8 or float in [0, 1] (what :func:`decode_rgb` returns; a read-only
                view is fine, nothing writes to it).
            outputs: names from :data:`OUTPUTS`; empty = nothing to do (returns None, no inference).
            camera_info: the camera's latest ``sensor_msgs/CameraInfo`` (any object with its fields) or None; used
                when ``intrinsics_source`` is ``camera_info`` and it is valid for this image, else K is estimated
                and the reason is returned in :attr:`FrameOutputs.intrinsics_error` (so are fixed intrinsics that
                are implausible for this image).

        Returns:
            The payloads, or None when ``outputs`` is empty.

        Raises:
            InputError: an image the predictor refuses (e.g. larger than its ``max_pixels``), an unknown output.
        """
        want = frozenset(outputs)
        unknown = want.difference(OUTPUTS)
        if unknown:
            raise InputError(f"outputs: expected names from {', '.join(OUTPUTS)}, found {', '.join(sorted(unknown))}")
        if not want:
            return None
        with self._lock:
            config, stabilizer, smoother = self._config, self._stabilizer, self._smoother
        height, width = rgb.shape[:2]
        k_known, info_error = self._given_k(config, camera_info, width, height)

        predictor = self.predictor
        t0 = time.perf_counter()
        predictor.estimate_normals = "normals" in want or ("points" in want and config.cloud_normals)
        if k_known is None and stabilizer.mode != "none":
            stabilizer.follow_size(width, height)
            geo = predictor.predict_stabilized(rgb, stabilizer)
        else:
            geo = predictor.predict(rgb, intrinsics=k_known)
        factor = smoother.update(float(geo.metric_scale[0]))
        if factor != 1.0:
            geo = geo.scaled(factor)
        # Given intrinsics are passed through exactly (float64), not after the model's float32 round trip.
        if k_known is not None:
            k = k_known
        else:
            k = geo.intrinsics[0].cpu().numpy().astype(np.float64)
        depth = geo.depth[0].cpu().numpy() if ("depth" in want or "colorized" in want) else None
        inference_s = time.perf_counter() - t0

        info_fields = codec.encode_camera_info(k, width, height) if ("camera_info" in want or "geometry" in want) \
            else None
        normal = geo.normal[0].cpu().numpy() if geo.normal is not None and (
            "normals" in want or ("points" in want and config.cloud_normals)) else None
        cloud = None
        if "points" in want:
            cloud = codec.encode_cloud(geo.points[0].cpu().numpy(), rgb if config.cloud_rgb else None,
                                       normal if config.cloud_normals else None,
                                       organized=config.cloud_organized, stride=config.cloud_stride)
        geometry = None
        if "geometry" in want:
            assert info_fields is not None
            geometry = GeometryFields(
                camera_info=info_fields, intrinsics_estimated=k_known is None,
                metric_scale=float(geo.metric_scale[0]), fov_x_deg=float(geo.fov_x[0]),
                fov_y_deg=float(geo.fov_y[0]), num_tokens=int(geo.num_tokens), inference_ms=inference_s * 1e3,
                model_id=str(predictor.model_id), valid_fraction=float(geo.mask[0].float().mean()),
            )
        return FrameOutputs(
            width=width,
            height=height,
            k=k,
            intrinsics_estimated=k_known is None,
            inference_s=inference_s,
            depth=codec.encode_depth(depth, config.depth_encoding, config.invalid_depth) if "depth" in want else None,
            camera_info=info_fields if "camera_info" in want else None,
            cloud=cloud,
            normals=codec.encode_normals(normal) if "normals" in want and normal is not None else None,
            mask=codec.encode_mask(geo.mask[0].cpu().numpy()) if "mask" in want else None,
            colorized=codec.encode_colorized_depth(depth) if "colorized" in want else None,
            geometry=geometry,
            intrinsics_error=info_error,
        )

    @staticmethod
    def _given_k(config: FrameConfig, camera_info: Any, width: int,
                 height: int) -> tuple[npt.NDArray[np.float64] | None, InputError | None]:
        """``(K, problem)``: the given intrinsics of this frame (pixels, float64) or None to estimate them, and why
        a CameraInfo that was there, or the fixed intrinsics, could not be used for this image."""
        if config.intrinsics_source == "fixed":
            try:
                return check_intrinsics(config.fixed_k(), width, height, "fixed_intrinsics"), None
            except InputError as exc:
                return None, exc
        if config.intrinsics_source == "camera_info" and camera_info is not None:
            try:
                return codec.check_camera_info(camera_info, width, height), None
            except ConversionError as exc:
                return None, exc
        return None, None
