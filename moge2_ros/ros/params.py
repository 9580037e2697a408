"""Parameters of ``moge2_node``: one table, declared with descriptors, ranges and documentation.

``config/moge2.yaml`` documents the same parameters for users; a test checks that the two agree.
Kinds of parameters:

* ``read_only``: fixed at start-up (the model source: nobody on the ROS graph may make the node load a file);
* ``restart``: changing them needs a model reload or new subscriptions; run-time changes are rejected with a
  reason (restart the node with the new value);
* everything else applies from the next frame on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node

from ..anchors import Extrinsic
from ..errors import InputError
from ..io.msg_codec import DEFAULT_MAX_PIXELS, short
from ..pipeline.anchor_msgs import extrinsic_param

#: Longest reason returned for a rejected parameter change; quoted values are cut to 80 characters first.
MAX_REASON_CHARS = 300


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    read_only: bool = False
    restart: bool = False
    choices: tuple[str, ...] | None = None
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None


PARAMS: tuple[ParamSpec, ...] = (
    # model and backend
    ParamSpec("model", "", "Model source: a MoGe-2 model.pt / .safetensors file, a directory, or a Hugging Face id "
              "(e.g. Ruicheng/moge-2-vitl-normal). Read-only at run time.", read_only=True),
    ParamSpec("device", "auto", "Inference device: auto (cuda if available, else cpu), cpu, cuda, cuda:N.", restart=True),
    ParamSpec("precision", "auto", "Network precision: auto (fp16 on CUDA, bf16 on a CPU with native bf16, else "
              "fp32; logged at start-up with its measured error), fp32, fp16 or bf16 (autocast).",
              restart=True, choices=("auto", "fp32", "fp16", "bf16")),
    ParamSpec("backend", "torch", "Inference backend: torch (PyTorch eager, optionally compiled) or onnx (ONNX "
              "Runtime running onnx_path; post-processing stays in torch).", restart=True, choices=("torch", "onnx")),
    ParamSpec("onnx_path", "", "ONNX file for backend=onnx (from 'moge2-ros export-onnx' or an official export). "
              "Read-only at run time.", read_only=True),
    ParamSpec("onnx_providers", ["tensorrt", "cuda", "cpu"], "ONNX Runtime execution providers in order of "
              "preference; a missing one is skipped with a warning.", restart=True),
    ParamSpec("onnx_cache_dir", "", "TensorRT engine cache folder for backend=onnx ('' = no cache). Read-only at run "
              "time.", read_only=True),
    ParamSpec("compile", False, "backend=torch: torch.compile the network (one graph per token grid; the first "
              "frame of each new grid compiles for tens of seconds).", restart=True),
    ParamSpec("channels_last", False, "backend=torch: channels-last memory format for the conv decoder.", restart=True),
    ParamSpec("cuda_graphs", False, "backend=torch on CUDA: replay CUDA graphs for fixed camera sizes.", restart=True),
    ParamSpec("pinned_memory", False, "backend=torch on CUDA: pinned host memory for image uploads.", restart=True),
    ParamSpec("resolution_level", 9, "Token budget level 0..9 inside the model's num_tokens_range (9 = most detail).",
              int_range=(0, 9)),
    ParamSpec("num_tokens", 0, "Explicit ViT token budget (0 = use resolution_level); at most 4x the model's "
              "trained maximum and within memory_budget_mb.", int_range=(0, 100000)),
    # input
    ParamSpec("image_transport", "raw", "Subscribe to 'image' (raw) or 'image/compressed' (compressed).",
              restart=True, choices=("raw", "compressed")),
    ParamSpec("input_qos", "sensor_data", "QoS of the image, camera_info and anchor subscriptions: sensor_data (best "
              "effort) or reliable. A best-effort subscription also connects to reliable publishers, but a large "
              "message (a dense LiDAR cloud of megabytes) rarely arrives whole over it: use reliable with such "
              "anchors.", restart=True,
              choices=("sensor_data", "reliable")),
    ParamSpec("memory_budget_mb", 0.0, "Working memory one frame may use above the loaded model, MiB (0 = the "
              "device's default: 2048 on a CPU, or a quarter of its memory if less; half the free memory on CUDA). "
              "Images, num_tokens and max_pixels are checked against it before a frame is processed.",
              restart=True, float_range=(0.0, 1e7)),
    ParamSpec("max_pixels", 0, "Largest accepted input image (pixels; 0 = what memory_budget_mb allows at the "
              "current token count); larger frames are rejected before decoding.",
              int_range=(0, DEFAULT_MAX_PIXELS)),
    ParamSpec("max_rate_hz", 0.0, "Process at most this many frames per second, all cameras together (0 = as fast "
              "as possible).", float_range=(0.0, 1000.0)),
    # several cameras in one node
    ParamSpec("cameras", [""], "Camera namespaces this node serves, relative to its own: [front, left] reads "
              "front/image and front/camera_info and publishes front/depth/image, ... with one model for all; [''] = "
              "one camera at the node's namespace. A camera's own value of a parameter: <camera>.<name> (README "
              "'Several cameras, managed node').", restart=True),
    ParamSpec("batch", "auto", "Frames of several cameras waiting together with the same image size and token grid "
              "run as one network batch: always, never, or auto (on for backend torch on CUDA; off on a CPU, where it "
              "measured no reliable gain, and for onnx).", choices=("auto", "always", "never")),
    ParamSpec("max_batch", 4, "Most frames in one network batch.", int_range=(1, 64)),
    # intrinsics
    ParamSpec("intrinsics_source", "camera_info", "camera_info: use a valid CameraInfo when one arrives (only the "
              "depth shift is solved), estimate otherwise; estimate: always estimate; fixed: use fixed_intrinsics.",
              choices=("camera_info", "estimate", "fixed")),
    ParamSpec("fixed_intrinsics", [0.0, 0.0, 0.0, 0.0], "fx, fy, cx, cy in pixels for intrinsics_source=fixed."),
    ParamSpec("fixed_distortion", [0.0, 0.0, 0.0, 0.0, 0.0], "Distortion coefficients D of fixed_intrinsics (for "
              "drivers that publish no CameraInfo): 5 for plumb_bob, 8 for rational_polynomial, 4 for equidistant; "
              "all zero = none."),
    ParamSpec("fixed_distortion_model", "plumb_bob", "Distortion model of fixed_distortion.",
              choices=("plumb_bob", "rational_polynomial", "equidistant")),
    # real cameras
    ParamSpec("rectify", True, "Rectify a distorted camera (CameraInfo or fixed D non-zero) before the model: the "
              "outputs are those of the rectified pinhole camera (P). false: use K on the raw image as if it were "
              "rectified (warned once)."),
    ParamSpec("output_grid", "rectified", "Outputs of a rectified camera: rectified (depth/camera_info = P[:3,:3], "
              "no distortion) or raw (depth, mask, normals, points resampled onto the raw image grid, with the "
              "input CameraInfo).", choices=("rectified", "raw")),
    ParamSpec("rectified_fov_deg", 0.0, "Horizontal field of view of the rectified view in degrees, e.g. a wide "
              "pinhole crop of a fisheye (0 = the CameraInfo's P, or K when P is all zero).",
              float_range=(0.0, 150.0)),
    ParamSpec("rectified_size", [0, 0], "Width, height of the rectified view in pixels ([0, 0] = the image's size)."),
    ParamSpec("intrinsics_stabilization", "none", "For estimated intrinsics of a fixed camera: none, average (mean "
              "of the last intrinsics_window frames) or lock (mean of the first intrinsics_window frames, then "
              "frozen).", choices=("none", "average", "lock")),
    ParamSpec("intrinsics_window", 30, "Frames averaged (or collected before locking) by intrinsics_stabilization.",
              int_range=(1, 100000)),
    ParamSpec("scale_smoothing", 0.0, "EMA weight of the newest frame's metric scale (0 = off: every frame uses its "
              "own scale).", float_range=(0.0, 1.0)),
    # metric anchors (the robot's own metric sensors set the scale)
    ParamSpec("anchor_mode", "off", "Metric scale anchoring: off (the network's scale, with scale_smoothing), scale "
              "(the anchors below correct the network's one metric scale; a per-camera Kalman filter keeps it steady), "
              "scale_shift (scale and a depth shift from points / depth anchors) or complete (scale, and the holes of "
              "an anchor/depth image filled from the network's depth gradients).",
              choices=("off", "scale", "scale_shift", "complete")),
    ParamSpec("anchor_points", False, "Subscribe to 'anchor/points' (sensor_msgs/PointCloud2: a LiDAR or any metric "
              "points, in its own frame).", restart=True),
    ParamSpec("anchor_depth", False, "Subscribe to 'anchor/depth' (sensor_msgs/Image 32FC1 m or 16UC1 mm registered "
              "to the camera image, any size: e.g. a depth camera with holes).", restart=True),
    ParamSpec("anchor_range", False, "Subscribe to 'anchor/range' (sensor_msgs/Range: ultrasonic, IR, single-beam "
              "ToF; the closest surface in its cone).", restart=True),
    ParamSpec("anchor_points_frame", "", "Frame that anchor_points_extrinsic maps from; a cloud in another frame is "
              "dropped as 'wrong_frame' ('' = any frame)."),
    ParamSpec("anchor_points_extrinsic", [0.0] * 7, "Transform of the anchor cloud into the camera optical frame: "
              "[tx, ty, tz, qx, qy, qz, qw] (metres, unit quaternion); all zero = from TF (when tf2_ros is available) "
              "or, without it, the cloud must be in the image's frame."),
    ParamSpec("anchor_range_frame", "", "Frame that anchor_range_extrinsic maps from ('' = any frame)."),
    ParamSpec("anchor_range_extrinsic", [0.0] * 7, "Transform of the Range sensor frame (cone along its +x axis) into "
              "the camera optical frame: [tx, ty, tz, qx, qy, qz, qw]; all zero = from TF, else the image's frame."),
    ParamSpec("anchor_max_age", 0.1, "Anchor readings whose stamp differs from the image's by more than this (s) are "
              "dropped as stale.", float_range=(0.001, 10.0)),
    ParamSpec("anchor_temporal", True, "Filter the anchored scale over time per camera (a Kalman filter in log "
              "scale with jump rejection); false: every frame stands alone."),
    ParamSpec("anchor_inlier_threshold", 0.15, "Relative depth error below which an anchor sample is an inlier of "
              "the fit (and the robust fit's truncation); raise it for a model with coarse shapes.",
              float_range=(0.01, 0.99)),
    ParamSpec("camera_height", 0.0, "Known height of the camera above a flat floor, metres (0 = off): with "
              "anchor_mode on, a ground-plane fit anchors the scale when enough flat floor is visible.",
              float_range=(0.0, 1000.0)),
    ParamSpec("camera_up", [0.0, -1.0, 0.0], "Up direction (against gravity) in the camera optical frame for "
              "camera_height, e.g. [0, -1, 0] for a level camera; from the mounting pitch and roll."),
    # filtering
    ParamSpec("edge_rtol", 0.04, "Flying-pixel filter: invalidate pixels whose relative depth change in a 3x3 window "
              "exceeds this (0 = off).", float_range=(0.0, 10.0)),
    ParamSpec("min_depth", 0.0, "Depth below this (m) is invalid.", float_range=(0.0, 1e6)),
    ParamSpec("max_depth", 0.0, "Depth above this (m) is invalid (0 = no limit).", float_range=(0.0, 1e6)),
    # outputs
    ParamSpec("publish_depth", True, "Publish depth/image and depth/camera_info."),
    ParamSpec("depth_encoding", "32FC1", "depth/image encoding: 32FC1 (metres) or 16UC1 (millimetres, 0 = invalid).",
              choices=("32FC1", "16UC1")),
    ParamSpec("invalid_depth", "nan", "Invalid 32FC1 depth pixels: nan, or inf (REP 117 'no return', lets costmaps "
              "clear space where the mask marks e.g. sky).", choices=("nan", "inf")),
    ParamSpec("publish_points", True, "Publish the PointCloud2 on 'points'."),
    ParamSpec("cloud_organized", True, "Organized cloud (H x W with NaN) or unorganized (invalid points dropped)."),
    ParamSpec("cloud_stride", 1, "Keep every n-th pixel in both directions in the cloud.", int_range=(1, 64)),
    ParamSpec("cloud_rgb", True, "Add the packed 'rgb' field to the cloud."),
    ParamSpec("cloud_normals", False, "Add normal_x/y/z fields to the cloud."),
    ParamSpec("publish_normals", True, "Publish 'normals' (32FC3 unit vectors, optical frame)."),
    ParamSpec("publish_mask", True, "Publish 'mask' (mono8, 255 = valid)."),
    ParamSpec("publish_colorized", True, "Publish 'depth/colorized' (bgr8), computed only while subscribed."),
    ParamSpec("publish_geometry", True, "Publish 'geometry' (moge2_ros_msgs/MonocularGeometry)."),
    ParamSpec("diagnostics_period", 1.0, "Seconds between /diagnostics messages.", restart=True,
              float_range=(0.05, 60.0)),
)

BY_NAME = {p.name: p for p in PARAMS}


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ParameterDescriptor of a spec: description (with the allowed values), ranges, read_only."""
    text = spec.description
    if spec.choices:
        text += f" One of: {', '.join(spec.choices)}."
    if spec.restart:
        text += " Changing it needs a node restart."
    d = ParameterDescriptor(description=text, read_only=spec.read_only)
    if spec.int_range is not None:
        d.integer_range = [IntegerRange(from_value=spec.int_range[0], to_value=spec.int_range[1], step=0)]
    if spec.float_range is not None:
        d.floating_point_range = [FloatingPointRange(from_value=spec.float_range[0], to_value=spec.float_range[1], step=0.0)]
    return d


def declare_all(node: Node) -> dict[str, Any]:
    """Declare every parameter on ``node`` and return the start-up values by name."""
    for spec in PARAMS:
        node.declare_parameter(spec.name, spec.default, descriptor(spec))
    return {spec.name: node.get_parameter(spec.name).value for spec in PARAMS}


def short_reason(text: str) -> str:
    """``text`` cut to :data:`MAX_REASON_CHARS` (a reason must not echo a huge value back to the caller)."""
    if len(text) <= MAX_REASON_CHARS:
        return text
    return text[: MAX_REASON_CHARS - 40] + f" ... ({len(text)} characters)"


def check_value(name: str, value: Any) -> str | None:
    """Why a run-time value is not acceptable (None when it is), in at most :data:`MAX_REASON_CHARS`
    characters (values are quoted with :func:`~moge2_ros.io.msg_codec.short`). Ranges are checked by rclpy."""
    spec = BY_NAME.get(name)
    if spec is None:
        return None
    if spec.restart:
        return f"'{name}' cannot change at run time (needs a model reload or new subscriptions): restart the node"
    if spec.choices and value not in spec.choices:
        return short_reason(f"'{name}' must be one of {list(spec.choices)}, got {short(value)}")
    if name == "fixed_distortion":
        values = list(value)
        if not all(math.isfinite(v) for v in values):
            return short_reason(f"'fixed_distortion' must be finite numbers, got {short(values)}")
    if name == "rectified_size":
        values = list(value)
        if len(values) != 2 or not all(0 <= v <= 65536 for v in values) or (0 in values and values != [0, 0]):
            return short_reason(f"'rectified_size' must be [width, height] > 0 or [0, 0], got {short(values)}")
    if name in ("anchor_points_extrinsic", "anchor_range_extrinsic"):
        try:
            anchor_extrinsic(value, name)
        except InputError as exc:
            return short_reason(str(exc))
    if name == "camera_up":
        values = list(value)
        if len(values) != 3 or not all(math.isfinite(v) for v in values) or not any(values):
            return short_reason(f"'camera_up' must be 3 finite numbers, not all zero, got {short(values)}")
    if name == "fixed_intrinsics":
        values = list(value)
        if len(values) != 4 or not all(math.isfinite(v) for v in values) or any(v <= 0 for v in values[:2]):
            return short_reason(f"'fixed_intrinsics' must be [fx, fy, cx, cy], finite, with fx, fy > 0, got "
                                f"{short(values)}")
    return None


def anchor_extrinsic(values: Any, name: str) -> Extrinsic | None:
    """The extrinsic of ``anchor_points_extrinsic`` / ``anchor_range_extrinsic``: None when all zero (unset).

    Raises:
        InputError: not 7 finite numbers or not a unit quaternion (names the parameter).
    """
    values = list(values)
    if values and all(v == 0 for v in values):
        return None
    return extrinsic_param(values, name)
