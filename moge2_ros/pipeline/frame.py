"""The per-frame pipeline of ``moge2_node`` and ``bag-infer``: one camera image in, the codec payloads of its outputs
out.  ROS-free: no rclpy, no rosbags; callers wrap the payloads into their own message classes
(:mod:`moge2_ros.ros.conversions` for rclpy, :mod:`moge2_ros.bags.writer` for rosbags).

Input side (the one decoding both callers use):
    :func:`decode_rgb` (from :mod:`moge2_ros.io.msg_codec`) turns a ``sensor_msgs/Image`` or ``CompressedImage``
    (any object with their fields) into the model input; a ``sensor_msgs/CameraInfo`` handed to
    :meth:`FramePipeline.process` becomes a camera model (K, D, R, P, binning, ROI;
    :func:`moge2_ros.io.camera_model.camera_model_from_info`), fixed intrinsics are checked by
    :func:`moge2_ros.io.plausibility.check_intrinsics` (once in :class:`FrameConfig` without an image size, then
    against each frame's size).  A CameraInfo that fails is replaced by the last good one of the same image size,
    else K is estimated; fixed intrinsics that fail by an estimate; the reason is returned
    (:attr:`FrameOutputs.intrinsics_error`, :attr:`FrameOutputs.camera_note`).

Real cameras: a camera with distortion (a non-zero D) is rectified before the model sees it
(:mod:`moge2_ros.pipeline.rectify`: OpenCV maps computed once per camera, one ``grid_sample`` per frame on the
inference device) into the pinhole camera K' = P[:3, :3] (or K, or a chosen field of view), and the model runs with
K' known.  The outputs are those of the rectified camera (``output_grid = rectified``: depth/camera_info carries K',
no distortion, binning 0, ROI zero), or resampled back onto the raw image grid with the input CameraInfo
(``output_grid = raw``).  A camera without distortion is used as it is (no resampling: the outputs are exactly
those of a pinhole CameraInfo).

Per frame, :meth:`FramePipeline.process` chooses the intrinsics (CameraInfo / estimate / fixed, see
:class:`FrameConfig`), runs the :class:`~moge2_ros.inference.Predictor` (with the intrinsics stabiliser when K is
estimated and stabilisation is on), smooths the metric scale, and encodes only the outputs asked for
(:data:`OUTPUTS`); asking for none runs no inference at all.

Frames and units: REP 103 optical frame (x right, y down, z forward); metres; intrinsics in pixels (ROS
``CameraInfo.K``, pixel centres at integer coordinates).  Outputs are at the input image's resolution (the
rectified view's when ``rectified_size`` or a distorted camera's view says otherwise).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import torch

from moge2_ros.anchors import (
    Anchor,
    AnchorConfig,
    CameraHeightAnchor,
    ScaleAnchoring,
    ScaleDecision,
    apply_decision,
)
from moge2_ros.errors import InputError
from moge2_ros.inference.temporal import INTRINSICS_MODES, IntrinsicsStabilizer, ScaleSmoother
from moge2_ros.io import msg_codec as codec
from moge2_ros.io.camera_model import (
    DISTORTION_MODELS,
    MAX_RECTIFIED_FOV_DEG,
    CameraModel,
    camera_info_key,
    camera_model_from_info,
    camera_model_from_k,
    check_distortion,
)
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
from moge2_ros.pipeline.frame_anchors import follow_anchor_config, in_rectified_frame, scale_fields
from moge2_ros.pipeline.rectify import Rectifier, RectifierCache

if TYPE_CHECKING:  # pragma: no cover
    from moge2_ros.inference import Predictor

__all__ = [
    "INTRINSICS_SOURCES",
    "OUTPUT_GRIDS",
    "OUTPUTS",
    "BatchItem",
    "FrameConfig",
    "FrameOutputs",
    "FramePipeline",
    "decode_rgb",
    "process_batch",
]

#: What a frame can publish (names of :class:`FrameOutputs` fields): ``depth`` (depth image), ``camera_info``
#: (of the depth image), ``points`` (PointCloud2), ``normals`` (32FC3 image), ``mask`` (mono8), ``colorized``
#: (bgr8 depth preview), ``geometry`` (MonocularGeometry).
OUTPUTS: Final[tuple[str, ...]] = ("depth", "camera_info", "points", "normals", "mask", "colorized", "geometry")

#: Where the intrinsics come from: a valid CameraInfo (else estimated), always estimated, or fixed.
INTRINSICS_SOURCES: Final[tuple[str, ...]] = ("camera_info", "estimate", "fixed")

#: Where the outputs of a distorted camera lie: the rectified pinhole view, or the raw (distorted) image grid.
OUTPUT_GRIDS: Final[tuple[str, ...]] = ("rectified", "raw")

#: Validated CameraInfo contents remembered per pipeline (a stream has one or a few).
_INFO_CACHE_SIZE: Final[int] = 8


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
        rectify: rectify a distorted camera (non-zero D) before the model (True), or use its K on the raw image as
            if it were rectified (False: the geometry bends with the lens; callers warn,
            :attr:`FrameOutputs.distortion_ignored`).
        output_grid: ``rectified`` (outputs in the rectified pinhole camera) or ``raw`` (depth, mask, normals,
            points resampled onto the raw image grid, with the input CameraInfo).
        rectified_fov_deg: horizontal field of view of the rectified view, degrees in (0, 150] (a wide pinhole crop
            of a fisheye), or 0 = the CameraInfo's P (K when it has none).
        rectified_size: ``(width, height)`` of the rectified view, or ``(0, 0)`` = the image's size.
        fixed_distortion: distortion coefficients of ``fixed_intrinsics`` (empty or zeros = none), for drivers that
            publish no CameraInfo.
        fixed_distortion_model: their model: ``plumb_bob`` (5), ``rational_polynomial`` (8), ``equidistant`` (4).
        anchors: metric scale anchoring (:class:`~moge2_ros.anchors.AnchorConfig`: the robot's metric sensors,
            handed to :meth:`FramePipeline.process` per frame, and a per-camera Kalman filter set the published
            scale), or None = the network's scale (with ``scale_smoothing``, which anchoring replaces).
        camera_height_m: with ``anchors``: the camera's height above a flat floor in metres (a ground-plane anchor on
            every frame where enough flat floor is visible), 0 = off.
        camera_up: the up direction (against gravity) in the raw camera's optical frame, e.g. ``(0, -1, 0)`` for a
            level camera; normalised.

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
    rectify: bool = True
    output_grid: str = "rectified"
    rectified_fov_deg: float = 0.0
    rectified_size: tuple[int, int] = (0, 0)
    fixed_distortion: tuple[float, ...] = ()
    fixed_distortion_model: str = "plumb_bob"
    anchors: AnchorConfig | None = None
    camera_height_m: float = 0.0
    camera_up: tuple[float, float, float] = (0.0, -1.0, 0.0)

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
        _choice("output_grid", self.output_grid, OUTPUT_GRIDS)
        if not (self.rectified_fov_deg == 0 or 0 < self.rectified_fov_deg <= MAX_RECTIFIED_FOV_DEG):
            raise InputError(f"rectified_fov_deg: expected 0 (from the CameraInfo's P) or a value in "
                             f"(0, {MAX_RECTIFIED_FOV_DEG:g}] degrees, found {self.rectified_fov_deg!r}")
        size = tuple(self.rectified_size)
        if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 65536
                                     for v in size) or (0 in size and size != (0, 0)):
            raise InputError(f"rectified_size: expected [width, height] > 0 pixels or [0, 0] (the image's size), "
                             f"found {codec.short(self.rectified_size)}")
        check_distortion(self.fixed_distortion_model, list(self.fixed_distortion), "fixed_distortion",
                         "fixed_distortion_model")
        if self.fixed_distortion_model not in DISTORTION_MODELS:
            raise InputError(f"fixed_distortion_model: expected one of {', '.join(DISTORTION_MODELS)}, found "
                             f"{codec.short(self.fixed_distortion_model)}")
        if self.intrinsics_source == "fixed":
            self.fixed_k()  # raises for missing or invalid values
        if not (self.camera_height_m == 0 or 0 < self.camera_height_m < 1e3):  # NaN fails too
            raise InputError(f"camera_height: expected 0 (off) or a height in (0, 1000) metres, found "
                             f"{self.camera_height_m!r}")
        if self.camera_height_m > 0:
            try:
                CameraHeightAnchor(self.camera_height_m, self.camera_up).checked()
            except InputError:
                raise InputError(f"camera_up: expected a finite non-zero direction [x, y, z] in the camera optical "
                                 f"frame, found {codec.short(self.camera_up)}") from None

    def anchor_list(self, anchors: Sequence[Anchor]) -> list[Anchor]:
        """A frame's anchors: the readings given plus the camera-height anchor when ``camera_height_m`` is set."""
        out = list(anchors)
        if self.camera_height_m > 0:
            out.append(CameraHeightAnchor(self.camera_height_m, tuple(self.camera_up)))  # type: ignore[arg-type]
        return out

    def view_size(self) -> tuple[int, int] | None:
        """``rectified_size`` as ``(width, height)``, or None for the image's size."""
        size = tuple(self.rectified_size)
        return None if size == (0, 0) else (int(size[0]), int(size[1]))

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
        width, height: size of the output images, pixels (the input image's; the rectified view's for a rectified
            camera; the cloud too when organized, stride 1).
        k: ``(3, 3)`` float64 intrinsics of the outputs, pixels: the given K exactly (CameraInfo or fixed), the
            rectified camera K' of a distorted one (the raw K on the raw grid), or the estimate.
        intrinsics_estimated: whether ``k`` was estimated from the image(s).
        inference_s: model time of the frame (prediction, scale smoothing, the depth's copy to the host), seconds.
        depth: depth image (``FrameConfig.depth_encoding`` / ``invalid_depth``), along z.
        camera_info: CameraInfo describing ``depth`` (P = [K | 0], no distortion; the input CameraInfo on the raw
            grid).
        cloud: PointCloud2 x, y, z [, rgb] [, normal_x/y/z], metres, optical frame.
        normals: 32FC3 unit normals, optical frame (None also when the model gives none).
        mask: mono8 validity, 255 = valid.
        colorized: bgr8 depth preview.
        geometry: MonocularGeometry content.
        intrinsics_error: why the given intrinsics were not used (K was estimated instead), or None: a
            :class:`ConversionError` whose message starts with ``camera_info`` for the CameraInfo given with the
            frame, an :class:`InputError` starting with ``fixed_intrinsics`` for fixed intrinsics implausible for
            this image's size.
        camera_note: what was used instead of a refused CameraInfo (``using the last good camera_info (WxH)`` or
            ``estimating the intrinsics``), or None.
        rectified: whether the image was rectified (a distorted camera).
        distortion_ignored: a distorted camera's K was used on the raw image (``rectify`` off).
        scale: the metric anchoring's decision for this frame (scale source, network and applied scale, its
            uncertainty, anchors used, dropped readings), or None when anchoring is off.
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
    camera_note: str | None = None
    rectified: bool = False
    distortion_ignored: bool = False
    scale: ScaleDecision | None = None


@dataclass
class _Job:
    """One frame between :meth:`FramePipeline._prepare` and :meth:`FramePipeline._finish`: its settings and state
    (taken together under the pipeline's lock), camera, rectified image (``(3, H', W')`` float tensor on the
    device, or the ``(H, W, 3)`` input) and known K (pixels) or None."""

    want: frozenset[str]
    config: FrameConfig
    stabilizer: IntrinsicsStabilizer
    smoother: ScaleSmoother
    anchoring: ScaleAnchoring | None
    rgb: np.ndarray
    width: int
    height: int
    camera: CameraModel | None
    info_msg: Any
    info_error: InputError | None
    note: str | None
    t0: float
    normals_wanted: bool
    rectifier: Rectifier | None
    image: Any
    k_known: npt.NDArray[np.float64] | None

    @property
    def stabilized(self) -> bool:
        """Estimated K of a fixed camera, stabilised over frames (one frame per network call)."""
        return self.k_known is None and self.stabilizer.mode != "none"

    def batch_key(self) -> tuple[Any, ...] | None:
        """Frames with equal keys run as one network batch (same image type and size, all K known or all
        estimated); None = alone (stabilised intrinsics)."""
        if self.stabilized:
            return None
        image = self.image
        if isinstance(image, torch.Tensor):
            kind: tuple[Any, ...] = ("tensor", tuple(image.shape), image.dtype, image.device)
        else:
            kind = ("array", tuple(image.shape), image.dtype)
        return (*kind, self.k_known is None)


@dataclass(frozen=True)
class BatchItem:
    """One frame for :func:`process_batch`: the arguments of :meth:`FramePipeline.process` and its pipeline."""

    pipeline: "FramePipeline"
    rgb: np.ndarray
    outputs: Collection[str]
    camera_info: Any = None
    anchors: Sequence[Anchor] = ()
    stamp: float | None = None
    camera_id: str = ""


def process_batch(items: Sequence[BatchItem]) -> list[FrameOutputs | None | Exception]:
    """Run frames of several cameras (each its own :class:`FramePipeline`, all on one predictor), those of the same
    image size (after rectification) and the same kind of intrinsics (all given, or all estimated) as one network
    batch, the others one by one.  Each frame's result equals what its pipeline's :meth:`FramePipeline.process`
    returns for it (same settings, same per-camera state: intrinsics, scale smoother, anchoring).

    A batch the predictor refuses as a whole (e.g. over the memory budget as a batch) runs frame by frame.
    ``inference_s`` of a batched frame spans its own preparation, the shared network call and its own
    post-processing.

    Args:
        items: the frames; their pipelines must share one predictor.

    Returns:
        Per item, in order: its :class:`FrameOutputs`, None (no output asked for), or the :class:`InputError` it
        raised (the other frames still run).

    Raises:
        InputError: pipelines with different predictors.
    """
    if len({id(item.pipeline.predictor) for item in items}) > 1:
        raise InputError("process_batch: every frame's pipeline must use the same predictor")
    results: list[FrameOutputs | None | Exception] = [None] * len(items)
    jobs: dict[int, _Job] = {}
    for i, item in enumerate(items):
        try:
            job = item.pipeline._prepare(item.rgb, item.outputs, item.camera_info)
        except InputError as exc:
            results[i] = exc
            continue
        if job is not None:
            jobs[i] = job
    groups: dict[Any, list[int]] = {}
    for i, job in jobs.items():
        key = job.batch_key()
        groups.setdefault(("alone", i) if key is None else key, []).append(i)
    for members in groups.values():
        geos: dict[int, Any] = {}
        if len(members) > 1:
            predictor = items[members[0]].pipeline.predictor
            predictor.estimate_normals = any(jobs[i].normals_wanted for i in members)
            first = jobs[members[0]].image
            stack = torch.stack([jobs[i].image for i in members]) if isinstance(first, torch.Tensor) \
                else np.stack([jobs[i].image for i in members])
            ks = None if jobs[members[0]].k_known is None else np.stack([jobs[i].k_known for i in members])
            try:
                batch = predictor.predict(stack, intrinsics=ks)
                geos = {i: batch[n] for n, i in enumerate(members)}
            except InputError:
                geos = {}  # refused as a batch (budget, an implausible K): each frame alone says why
        for i in members:
            item = items[i]
            try:
                geo = geos[i] if i in geos else item.pipeline._predict(jobs[i])
                results[i] = item.pipeline._finish(jobs[i], geo, item.anchors, item.stamp, item.camera_id)
            except InputError as exc:
                results[i] = exc
    return results


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
        self._anchoring = ScaleAnchoring(self._config.anchors) if self._config.anchors is not None else None
        #: Rectification maps per camera and view (computed on a camera's first frame).
        self.rectifiers = RectifierCache()
        self._infos: OrderedDict[tuple[Any, ...], CameraModel | InputError] = OrderedDict()
        self._last_good: dict[tuple[int, int], tuple[CameraModel, Any]] = {}

    @property
    def config(self) -> FrameConfig:
        return self._config

    def configure(self, config: FrameConfig) -> None:
        """Use ``config`` from the next frame on.  The intrinsics stabiliser, the scale smoother and the anchoring's
        filters start over only when their own settings change (the anchoring's: its mode or filter parameters;
        other anchor thresholds apply to the running filters)."""
        with self._lock:
            old = self._config
            if (config.intrinsics_stabilization, config.intrinsics_window) != \
                    (old.intrinsics_stabilization, old.intrinsics_window):
                self._stabilizer = IntrinsicsStabilizer(config.intrinsics_stabilization, config.intrinsics_window)
            if config.scale_smoothing != old.scale_smoothing:
                self._smoother = ScaleSmoother(config.scale_smoothing)
            self._anchoring = follow_anchor_config(self._anchoring, config.anchors)
            self._config = config

    def process(self, rgb: np.ndarray, outputs: Collection[str], camera_info: Any = None,
                anchors: Sequence[Anchor] = (), stamp: float | None = None,
                camera_id: str = "") -> FrameOutputs | None:
        """Run one frame and encode the ``outputs`` asked for.

        Args:
            rgb: ``(H, W, 3)`` RGB image, uint8 or float in [0, 1] (what :func:`decode_rgb` returns; a read-only
                view is fine, nothing writes to it).
            outputs: names from :data:`OUTPUTS`; empty = nothing to do (returns None, no inference).
            camera_info: the camera's latest ``sensor_msgs/CameraInfo`` (any object with its fields) or None; used
                when ``intrinsics_source`` is ``camera_info``.  One that is not valid for this image is replaced by
                the last good one of this image size, else K is estimated, and the reason is returned in
                :attr:`FrameOutputs.intrinsics_error` (so are fixed intrinsics that are implausible for this image).
            anchors: this frame's metric sensor readings (:mod:`moge2_ros.anchors.sources`, e.g. from
                :mod:`moge2_ros.pipeline.anchor_msgs`) in the RAW camera's optical frame (a depth image registered to
                the raw image); used when ``config.anchors`` is set, moved into the rectified camera's frame for a
                rectified camera.  Bad readings are counted in :attr:`FrameOutputs.scale`, never raised.
            stamp: the image's time in seconds (anchor staleness, the filter's time step), or None.
            camera_id: the camera's filter key (its frame_id); the filter resets when the image size or K change.

        Returns:
            The payloads, or None when ``outputs`` is empty.

        Raises:
            InputError: an image the predictor refuses (e.g. larger than its ``max_pixels``), an unknown output.
        """
        job = self._prepare(rgb, outputs, camera_info)
        if job is None:
            return None
        return self._finish(job, self._predict(job), anchors, stamp, camera_id)

    def _prepare(self, rgb: np.ndarray, outputs: Collection[str], camera_info: Any) -> _Job | None:
        """Everything before the network: the outputs checked, the settings of this frame, its camera, the rectified
        image (None when no output is asked for)."""
        want = frozenset(outputs)
        unknown = want.difference(OUTPUTS)
        if unknown:
            raise InputError(f"outputs: expected names from {', '.join(OUTPUTS)}, found {', '.join(sorted(unknown))}")
        if not want:
            return None
        with self._lock:
            config, stabilizer, smoother, anchoring = self._config, self._stabilizer, self._smoother, self._anchoring
        height, width = rgb.shape[:2]
        camera, info_msg, info_error, note = self._camera(config, camera_info, width, height)

        t0 = time.perf_counter()
        normals_wanted = "normals" in want or ("points" in want and config.cloud_normals)
        rectifier: Rectifier | None = None
        image: Any = rgb
        k_known = None if camera is None else camera.k
        if camera is not None and camera.distorted and config.rectify:
            rectifier = self.rectifiers.get(camera, self.predictor.device, config.rectified_fov_deg,
                                            config.view_size())
            image = rectifier.rectify(rgb)
            k_known = rectifier.k
        return _Job(want, config, stabilizer, smoother, anchoring, rgb, width, height, camera, info_msg, info_error,
                    note, t0, normals_wanted, rectifier, image, k_known)

    def _predict(self, job: _Job) -> Any:
        """The network and its post-processing for one prepared frame: :class:`~moge2_ros.inference.Geometry`."""
        predictor = self.predictor
        predictor.estimate_normals = job.normals_wanted
        if job.stabilized:
            job.stabilizer.follow_size(job.width, job.height)
            return predictor.predict_stabilized(job.rgb, job.stabilizer)
        return predictor.predict(job.image, intrinsics=job.k_known)

    def _finish(self, job: _Job, geo: Any, anchors: Sequence[Anchor], stamp: float | None,
                camera_id: str) -> FrameOutputs:
        """Everything after the network: scale (anchors or smoother), output grid, encoding."""
        want, config, smoother, anchoring = job.want, job.config, job.smoother, job.anchoring
        rgb, width, height, camera, info_msg = job.rgb, job.width, job.height, job.camera, job.info_msg
        info_error, note, t0, normals_wanted = job.info_error, job.note, job.t0, job.normals_wanted
        rectifier, image, k_known = job.rectifier, job.image, job.k_known
        predictor = self.predictor
        network_scale = float(geo.metric_scale[0])
        decision = None
        if anchoring is not None:
            readings = config.anchor_list(anchors)
            if rectifier is not None:
                readings = in_rectified_frame(readings, rectifier)
            decision = anchoring.update(geo.points[0], geo.mask[0], geo.intrinsics[0], network_scale, readings,
                                        stamp=stamp, camera_id=camera_id,
                                        normals=geo.normal[0] if geo.normal is not None else None)
            geo = apply_decision(geo, decision)
        else:
            factor = smoother.update(network_scale)
            if factor != 1.0:
                geo = geo.scaled(factor)
        raw_grid = rectifier is not None and config.output_grid == "raw"
        colours = rgb
        if raw_grid:
            assert rectifier is not None and camera is not None
            depth_t, mask_t, points_t, normal_t = _to_raw_grid(rectifier, geo, normals_wanted)
            k = camera.k
            out_w, out_h = width, height
        else:
            depth_t, mask_t, points_t = geo.depth[0], geo.mask[0], geo.points[0]
            normal_t = geo.normal[0] if geo.normal is not None else None
            # Given intrinsics are passed through exactly (float64), not after the model's float32 round trip.
            k = k_known if k_known is not None else geo.intrinsics[0].cpu().numpy().astype(np.float64)
            out_h, out_w = int(depth_t.shape[0]), int(depth_t.shape[1])
            if rectifier is not None and "points" in want and config.cloud_rgb:
                colours = (image.permute(1, 2, 0) * 255.0).round_().to(torch.uint8).cpu().numpy()
        depth = depth_t.cpu().numpy() if ("depth" in want or "colorized" in want) else None
        inference_s = time.perf_counter() - t0

        info_fields = None
        if "camera_info" in want or "geometry" in want:
            if raw_grid:
                assert camera is not None and rectifier is not None
                info_fields = _raw_camera_info(camera, info_msg, rectifier)
            else:
                info_fields = codec.encode_camera_info(k, out_w, out_h)
        normal = normal_t.cpu().numpy() if normal_t is not None and normals_wanted else None
        cloud = None
        if "points" in want:
            cloud = codec.encode_cloud(points_t.cpu().numpy(), colours if config.cloud_rgb else None,
                                       normal if config.cloud_normals else None,
                                       organized=config.cloud_organized, stride=config.cloud_stride)
        geometry = None
        if "geometry" in want:
            assert info_fields is not None
            geometry = GeometryFields(
                camera_info=info_fields, intrinsics_estimated=k_known is None,
                metric_scale=float(geo.metric_scale[0]), fov_x_deg=float(geo.fov_x[0]),
                fov_y_deg=float(geo.fov_y[0]), num_tokens=int(geo.num_tokens), inference_ms=inference_s * 1e3,
                model_id=str(predictor.model_id), valid_fraction=float(mask_t.float().mean()),
                **scale_fields(decision, network_scale),
            )
        return FrameOutputs(
            width=out_w,
            height=out_h,
            k=k,
            intrinsics_estimated=k_known is None,
            inference_s=inference_s,
            depth=codec.encode_depth(depth, config.depth_encoding, config.invalid_depth) if "depth" in want else None,
            camera_info=info_fields if "camera_info" in want else None,
            cloud=cloud,
            normals=codec.encode_normals(normal) if "normals" in want and normal is not None else None,
            mask=codec.encode_mask(mask_t.cpu().numpy()) if "mask" in want else None,
            colorized=codec.encode_colorized_depth(depth) if "colorized" in want else None,
            geometry=geometry,
            intrinsics_error=info_error,
            camera_note=note,
            rectified=rectifier is not None,
            distortion_ignored=camera is not None and camera.distorted and not config.rectify,
            scale=decision,
        )

    def _camera(self, config: FrameConfig, camera_info: Any, width: int, height: int) \
            -> tuple[CameraModel | None, Any, InputError | None, str | None]:
        """``(camera, message, problem, note)``: the given camera of this frame (None to estimate K), the
        CameraInfo it came from (None for fixed intrinsics), why a CameraInfo that was there or the fixed
        intrinsics could not be used for this image, and what was used instead."""
        if config.intrinsics_source == "fixed":
            try:
                k = check_intrinsics(config.fixed_k(), width, height, "fixed_intrinsics")
                return camera_model_from_k(k, width, height, config.fixed_distortion_model,
                                           list(config.fixed_distortion)), None, None, None
            except InputError as exc:
                return None, None, exc, "estimating the intrinsics"
        if config.intrinsics_source != "camera_info" or camera_info is None:
            return None, None, None, None
        key = camera_info_key(camera_info)
        cached = self._infos.get((key, width, height)) if key is not None else None
        if cached is None:
            try:
                cached = camera_model_from_info(camera_info, width, height)
            except InputError as exc:
                cached = exc
            if key is not None:
                self._infos[(key, width, height)] = cached
                while len(self._infos) > _INFO_CACHE_SIZE:
                    self._infos.popitem(last=False)
        elif key is not None:
            self._infos.move_to_end((key, width, height))
        if isinstance(cached, CameraModel):
            self._last_good[(width, height)] = (cached, camera_info)
            return cached, camera_info, None, None
        good = self._last_good.get((width, height))
        if good is not None:
            return good[0], good[1], cached, f"using the last good camera_info ({width}x{height})"
        return None, None, cached, "estimating the intrinsics"


def _to_raw_grid(rectifier: Rectifier, geo: Any, normals: bool) \
        -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Depth, mask, points and normals of the rectified view resampled onto the raw image grid (nearest), in the
    raw camera frame: ``(H, W)``, ``(H, W)`` bool, ``(H, W, 3)``, ``(H, W, 3)`` or None."""
    from moge2_ros.geometry.remap import remap

    raw = rectifier.raw_grid()
    planes = [geo.depth[0][None], geo.mask[0][None].to(torch.float32)]
    if normals and geo.normal is not None:
        planes.append(geo.normal[0].permute(2, 0, 1))
    sampled = remap(torch.cat(planes, 0).to(torch.float32), raw.grid, mode="nearest")
    valid = raw.valid & (sampled[1] > 0.5) & torch.isfinite(sampled[0]) & (sampled[0] > 0)
    nan = torch.tensor(float("nan"), device=sampled.device)
    depth = torch.where(valid, sampled[0] * raw.z_scale, nan)
    points = depth[..., None] * raw.rays
    normal = None
    if len(planes) == 3:
        r = torch.as_tensor(rectifier.camera.r, dtype=torch.float32, device=sampled.device)
        normal = torch.where(valid[..., None], sampled[2:].permute(1, 2, 0) @ r, nan)  # R^T n, as rows
    return depth, valid, points, normal


def _raw_camera_info(camera: CameraModel, msg: Any, rectifier: Rectifier) -> CameraInfoFields:
    """The camera of outputs on the raw grid: the input CameraInfo unchanged, or (fixed intrinsics) K with its
    distortion, R = I and P = [K' | 0] of the rectified view."""
    if msg is not None:
        return codec.camera_info_fields(msg)
    p = np.zeros((3, 4))
    p[:, :3] = rectifier.k
    return CameraInfoFields(height=camera.height, width=camera.width, distortion_model=camera.distortion_model,
                            d=camera.d.copy(), k=camera.k.ravel().copy(), r=np.eye(3).ravel(), p=p.ravel())
