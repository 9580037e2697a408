"""The cameras of one ``moge2_node`` and their parameter overrides.

* ``cameras`` (string array): relative namespaces of the cameras the node serves, e.g. ``[front, left]``: camera
  ``front`` reads ``front/image`` and ``front/camera_info`` and publishes ``front/depth/image``, ``front/points``,
  ... (all relative to the node's namespace, so ``__ns`` and remaps work as for one camera).  The default ``[""]``
  is one camera at the node's own namespace: the topics of a single-camera node.
* ``<camera>.<name>``: a per-camera value of one of :data:`OVERRIDABLE`, e.g. ``front.publish_points:=false``
  (a camera ``robot/front`` uses the prefix ``robot.front.``).  Declared without a value: a camera follows the
  node-level ``<name>`` until its override is set.  Values are checked as the node-level ones are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from rclpy.node import Node
from rclpy.parameter import Parameter

from ..errors import InputError
from .params import BY_NAME, ParamSpec, declare_all, descriptor

__all__ = ["OVERRIDABLE", "camera_cfg", "camera_names", "declare_node_parameters", "declare_overrides", "override_name",
           "split_override", "undeclared_overrides"]

#: Node parameters a camera may override (those that exist in this version of the parameter table).
_CANDIDATES: Final[tuple[str, ...]] = (
    "resolution_level", "num_tokens", "image_transport", "input_qos",
    "intrinsics_source", "fixed_intrinsics", "fixed_distortion", "fixed_distortion_model",
    "rectify", "output_grid", "rectified_fov_deg", "rectified_size",
    "intrinsics_stabilization", "intrinsics_window", "scale_smoothing",
    "publish_depth", "depth_encoding", "invalid_depth", "publish_points", "cloud_organized", "cloud_stride",
    "cloud_rgb", "cloud_normals", "publish_normals", "publish_mask", "publish_colorized", "publish_geometry",
    "anchor_mode", "anchor_points", "anchor_depth", "anchor_range", "anchor_max_age", "anchor_temporal",
    "anchor_points_frame", "anchor_range_frame", "anchor_points_extrinsic", "anchor_range_extrinsic",
    "camera_height", "camera_up", "anchor_inlier_threshold",
)
OVERRIDABLE: Final[tuple[str, ...]] = tuple(name for name in _CANDIDATES if name in BY_NAME)

_TOKEN = r"[A-Za-z_][A-Za-z0-9_]*"


def camera_names(values: Sequence[str]) -> list[str]:
    """The ``cameras`` parameter checked: relative namespaces (``front``, ``robot/left``), each listed once, or
    ``[""]`` alone (one camera at the node's namespace).

    Raises:
        InputError: an empty list, a name that is not a relative ROS namespace, a repeated name, or ``""`` beside
            other cameras.
    """
    names = [str(v) for v in values]
    if not names:
        raise InputError("cameras: expected at least one camera namespace ([''] = the node's own namespace)")
    for name in names:
        if name == "" and len(names) > 1:
            raise InputError("cameras: '' (the node's own namespace) must be the only camera when several are "
                             f"listed, found {names!r}")
        if name and not re.fullmatch(rf"{_TOKEN}(/{_TOKEN})*", name):
            raise InputError(f"cameras: {name!r} is not a relative ROS namespace (letters, digits, '_', separated "
                             "by '/', not starting with '/' or a digit)")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"cameras: each camera must be listed once, repeated: {', '.join(map(repr, repeated))}")
    return names


def override_name(camera: str, name: str) -> str:
    """The parameter of ``camera``'s own ``name``: ``front.publish_points``, ``robot.front.num_tokens``."""
    return f"{camera.replace('/', '.')}.{name}"


def split_override(param: str, cameras: Sequence[str]) -> tuple[str, str] | None:
    """``(camera, name)`` when ``param`` is a camera override of one of ``cameras``, else None."""
    for camera in cameras:
        if not camera:
            continue
        prefix = override_name(camera, "")
        if param.startswith(prefix) and param[len(prefix):] in OVERRIDABLE:
            return camera, param[len(prefix):]
    return None


def _type_of(spec: ParamSpec) -> Parameter.Type:
    value = spec.default
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value):
            return Parameter.Type.STRING_ARRAY
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return Parameter.Type.INTEGER_ARRAY
        return Parameter.Type.DOUBLE_ARRAY
    return Parameter.Type.from_parameter_value(value)


def declare_overrides(node: Node, cameras: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Declare ``<camera>.<name>`` for every camera (not the node's own ``""``) and every :data:`OVERRIDABLE` name,
    typed like the node-level parameter and without a value unless one was given at start-up.

    Returns:
        ``{camera: {name: value}}`` of the overrides given at start-up (every camera has an entry).

    Raises:
        InputError: a start-up value of the wrong type, naming the parameter.
    """
    given: dict[str, dict[str, Any]] = {camera: {} for camera in cameras}
    for camera in cameras:
        if not camera:
            continue
        for name in OVERRIDABLE:
            spec = BY_NAME[name]
            full = override_name(camera, name)
            d = descriptor(spec)
            d.description = f"Camera '{camera}': {d.description} Unset = the node-level '{name}'."
            try:
                param = node.declare_parameter(full, _type_of(spec), d)
            except Exception as exc:  # rclpy's InvalidParameterTypeException / ValueError: say which and why
                raise InputError(f"parameter '{full}': {exc}") from None
            if param.type_ != Parameter.Type.NOT_SET:
                given[camera][name] = param.value
    return given


def camera_cfg(node_cfg: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A camera's parameters: the node-level ones with the camera's overrides on top."""
    return {**node_cfg, **overrides}


def declare_node_parameters(node: Node) -> tuple[dict[str, Any], list[str], dict[str, dict[str, Any]]]:
    """Declare every parameter of ``moge2_node`` on ``node``: the node-level table, then the overrides of the
    cameras it lists.

    Returns:
        ``(cfg, cameras, overrides)``: node-level values by name, the checked camera names, and the overrides given
        at start-up per camera.

    Raises:
        InputError: bad camera names or an override of the wrong type (the message names it).
    """
    cfg = declare_all(node)
    cameras = camera_names(list(cfg["cameras"]))
    overrides = declare_overrides(node, cameras)
    unknown = undeclared_overrides(node)
    if unknown:  # rclpy ignores them silently: a misspelt name or a camera not in the list would go unnoticed
        node.get_logger().warning(
            f"ignored parameter(s) {', '.join(sorted(unknown))}: not parameters of this node (cameras "
            f"{list(cameras)}; a camera may override: {', '.join(OVERRIDABLE)})")
    return cfg, cameras, overrides


def undeclared_overrides(node: Node) -> list[str]:
    """Names given to the node at start-up (``-p``, a parameter file) that it did not declare: ignored by rclpy.
    Reads rclpy's start-up overrides (``Node._parameter_overrides``; an empty list where a version lacks it)."""
    given = getattr(node, "_parameter_overrides", None) or {}
    return [name for name in given if not node.has_parameter(name) and not name.startswith("qos_overrides.")
            and name != "use_sim_time"]
