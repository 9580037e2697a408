"""Camera intrinsics from command-line text and calibration files (pixels, ROS/OpenCV convention).

Every value read is checked for plausibility (:func:`moge2_ros.io.plausibility.check_intrinsics`): against the
image size the file names, else against any plausible image; :meth:`CameraIntrinsics.matrix_for` checks again
against the image the intrinsics are used with.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Sequence

import numpy as np

from moge2_ros.errors import InputError
from moge2_ros.io.plausibility import check_intrinsics


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics in pixels, optionally with the image size they were calibrated for.

    Attributes:
        source: where the values come from (``--intrinsics``, ``--intrinsics-file <path>``), for messages.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int | None = None
    height: int | None = None
    source: str = field(default="intrinsics", compare=False)
    distortion_model: str = ""
    d: tuple[float, ...] = ()
    r: tuple[float, ...] = ()
    p: tuple[float, ...] = ()

    @property
    def distorted(self) -> bool:
        """Whether a distortion with a non-zero coefficient was given (the image is rectified before the model)."""
        return any(v != 0 for v in self.d)

    def camera_info(self) -> Any:
        """The calibration as an object with the ``sensor_msgs/CameraInfo`` fields (for
        :func:`moge2_ros.io.camera_model.camera_model_from_info`; size 0x0 when the file named none)."""
        from types import SimpleNamespace

        roi = SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0, do_rectify=False)
        return SimpleNamespace(
            width=self.width or 0, height=self.height or 0, distortion_model=self.distortion_model, d=list(self.d),
            k=[self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0], r=list(self.r) or [0.0] * 9,
            p=list(self.p) or [0.0] * 12, binning_x=0, binning_y=0, roi=roi)

    def matrix(self) -> np.ndarray:
        """``(3, 3)`` float32 ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``."""
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], dtype=np.float32)

    def matrix_for(self, width: int, height: int, image: str = "the image") -> np.ndarray:
        """``(3, 3)`` float64 K for an image of ``width x height`` pixels (``image`` names it in messages).

        Raises:
            InputError: the intrinsics name another image size, or are implausible for this one
                (:func:`~moge2_ros.io.plausibility.check_intrinsics`).
        """
        if self.width is not None and (self.width, self.height) != (width, height):
            raise InputError(f"{self.source}: the intrinsics are for {self.width}x{self.height} images, {image} is "
                             f"{width}x{height}")
        k = np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], dtype=np.float64)
        return check_intrinsics(k, width, height, f"{self.source} for {image}")


def _checked_intrinsics(values: Sequence[Any], where: str, width: Any = None, height: Any = None) -> CameraIntrinsics:
    try:
        fx, fy, cx, cy = (float(v) for v in values)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{where}: expected four numbers fx, fy, cx, cy (pixels), got {list(values)!r}"[:300]) \
            from None
    size: list[int | None] = []
    for name, value in (("width", width), ("height", height)):
        if value is None:
            size.append(None)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf \
                and value == int(value):
            size.append(int(value))
        else:
            raise InputError(f"{where}: image {name} must be a positive integer, got {value!r}")
    # plausible for the image size the file names; without one, for some image (checked again once it is known)
    known = size[0] is not None and size[1] is not None
    check_intrinsics([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], size[0] if known else None, size[1] if known else None,
                     where)
    return CameraIntrinsics(fx, fy, cx, cy, size[0], size[1], source=where)


def _from_matrix(matrix: Any, where: str, width: Any = None, height: Any = None) -> CameraIntrinsics:
    flat: list[Any]
    if isinstance(matrix, dict) and "data" in matrix:  # ROS camera_info YAML: {rows: 3, cols: 3, data: [9]}
        matrix = matrix["data"]
    if isinstance(matrix, (list, tuple)) and len(matrix) == 3 and all(isinstance(r, (list, tuple)) for r in matrix):
        flat = [v for row in matrix for v in row]
    elif isinstance(matrix, (list, tuple)):
        flat = list(matrix)
    else:
        raise InputError(f"{where}: expected a 3x3 camera matrix, got {type(matrix).__name__}")
    if len(flat) != 9:
        raise InputError(f"{where}: expected a 3x3 camera matrix (9 numbers), got {len(flat)} numbers")
    try:
        k = [float(v) for v in flat]
    except (TypeError, ValueError):
        raise InputError(f"{where}: camera matrix entries must be numbers") from None
    if any(abs(k[i]) > 1e-6 for i in (1, 3, 6, 7)) or abs(k[8] - 1.0) > 1e-6:
        raise InputError(f"{where}: expected [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (no skew), got {k}")
    return _checked_intrinsics((k[0], k[4], k[2], k[5]), where, width, height)


_CALIBRATION_KEYS: Final[dict[str, tuple[tuple[str, ...], int | None]]] = {
    # field -> (keys in a ROS camera_calibration YAML / a JSON, number of values or None = any)
    "d": (("distortion_coefficients", "D", "d"), None),
    "r": (("rectification_matrix", "R", "r"), 9),
    "p": (("projection_matrix", "P", "p"), 12),
}


def _numbers(value: Any, count: int | None, where: str) -> tuple[float, ...]:
    if isinstance(value, dict) and "data" in value:  # ROS YAML: {rows, cols, data}
        value = value["data"]
    if isinstance(value, (list, tuple)) and value and all(isinstance(r, (list, tuple)) for r in value):
        value = [v for row in value for v in row]
    if not isinstance(value, (list, tuple)):
        raise InputError(f"{where}: expected a list of numbers, got {type(value).__name__}")
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: expected numbers, got {_one_line(repr(value))[:120]}") from None
    if count is not None and len(numbers) != count:
        raise InputError(f"{where}: expected {count} numbers, got {len(numbers)}")
    if not all(math.isfinite(v) for v in numbers):
        raise InputError(f"{where}: expected finite numbers, got {list(numbers)}"[:300])
    return numbers


def _with_distortion(intrinsics: CameraIntrinsics, data: dict[str, Any], where: str) -> CameraIntrinsics:
    """Add D, R, P and the distortion model of a ROS ``camera_calibration`` YAML (or a JSON with those keys);
    the model is checked (:func:`moge2_ros.io.camera_model.check_distortion`), R and P when the image is known."""
    from moge2_ros.io.camera_model import check_distortion

    values: dict[str, Any] = {}
    for name, (keys, count) in _CALIBRATION_KEYS.items():
        for key in keys:
            if key in data and data[key] is not None:
                values[name] = _numbers(data[key], count, f"{where} [{key}]")
                break
    model = data.get("distortion_model", "plumb_bob" if values.get("d") else "")
    if not isinstance(model, str):
        raise InputError(f"{where} [distortion_model]: expected a name, got {type(model).__name__}")
    check_distortion(model, list(values.get("d", ())), f"{where} [distortion_coefficients]",
                     f"{where} [distortion_model]")
    if not values:
        return intrinsics
    return replace(intrinsics, distortion_model=model, **values)


def parse_intrinsics_arg(text: str) -> CameraIntrinsics:
    """Parse ``fx,fy,cx,cy`` (pixels; commas and/or white space), as given to ``--intrinsics``."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    if len(parts) != 4:
        raise InputError(f"--intrinsics: expected fx,fy,cx,cy (four numbers, pixels), got {text!r}")
    return _checked_intrinsics(parts, "--intrinsics")


def load_intrinsics_file(path: str | Path) -> CameraIntrinsics:
    """Read intrinsics (pixels) from a file.

    Accepted:
      * ``.json`` / ``.yaml`` / ``.yml`` mapping with one of: ``intrinsics`` or ``K`` or ``camera_matrix``
        (3x3 nested list, 9 numbers, or ROS ``{rows, cols, data}``), or ``fx``, ``fy``, ``cx``, ``cy``;
        optional image size as ``width``/``height`` or ``image_width``/``image_height`` (ROS calibration YAML);
        optional ``distortion_model`` with ``distortion_coefficients`` (D), ``rectification_matrix`` (R) and
        ``projection_matrix`` (P) of a ROS ``camera_calibration`` YAML (or ``D``, ``R``, ``P``): a distorted
        camera's images are rectified before the model (:func:`moge2_ros.pipeline.images.infer_image_file`);
        the ``<stem>.json`` files written by ``infer`` are accepted too;
      * any other suffix (e.g. ``.txt``): 9 numbers (3x3 row-major) or 4 numbers ``fx fy cx cy``, separated by
        white space or commas; ``#`` starts a comment.
    """
    path = Path(path)
    where = f"--intrinsics-file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{where}: cannot read: {exc}") from None
    suffix = path.suffix.lower()
    if suffix in (".json", ".yaml", ".yml"):
        try:
            if suffix == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except Exception as exc:  # noqa: BLE001 - json/yaml parse errors of an untrusted file
            raise InputError(f"{where}: not valid {suffix[1:].upper()}: {_one_line(str(exc))[:200]}") from None
        if not isinstance(data, dict):
            raise InputError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
        width = data.get("width", data.get("image_width"))
        height = data.get("height", data.get("image_height"))
        for key in ("intrinsics", "K", "k", "camera_matrix"):
            if key in data:
                return _with_distortion(_from_matrix(data[key], f"{where} [{key}]", width, height), data, where)
        if all(k in data for k in ("fx", "fy", "cx", "cy")):
            return _with_distortion(
                _checked_intrinsics([data[k] for k in ("fx", "fy", "cx", "cy")], where, width, height), data, where)
        raise InputError(f"{where}: found none of 'intrinsics', 'K', 'camera_matrix' or fx/fy/cx/cy")
    numbers = re.split(r"[,\s]+", "\n".join(line.split("#")[0] for line in text.splitlines()).strip())
    numbers = [n for n in numbers if n]
    if len(numbers) == 9:
        return _from_matrix(numbers, where)
    if len(numbers) == 4:
        return _checked_intrinsics(numbers, where)
    raise InputError(f"{where}: expected 9 numbers (3x3 matrix) or 4 numbers (fx fy cx cy), found {len(numbers)}")
