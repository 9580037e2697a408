"""Camera intrinsics from command-line text and calibration files (pixels, ROS/OpenCV convention).

Every value read is checked for plausibility (:func:`moge2_ros.io.plausibility.check_intrinsics`): against the
image size the file names, else against any plausible image; :meth:`CameraIntrinsics.matrix_for` checks again
against the image the intrinsics are used with.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

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
                return _from_matrix(data[key], f"{where} [{key}]", width, height)
        if all(k in data for k in ("fx", "fy", "cx", "cy")):
            return _checked_intrinsics([data[k] for k in ("fx", "fy", "cx", "cy")], where, width, height)
        raise InputError(f"{where}: found none of 'intrinsics', 'K', 'camera_matrix' or fx/fy/cx/cy")
    numbers = re.split(r"[,\s]+", "\n".join(line.split("#")[0] for line in text.splitlines()).strip())
    numbers = [n for n in numbers if n]
    if len(numbers) == 9:
        return _from_matrix(numbers, where)
    if len(numbers) == 4:
        return _checked_intrinsics(numbers, where)
    raise InputError(f"{where}: expected 9 numbers (3x3 matrix) or 4 numbers (fx fy cx cy), found {len(numbers)}")
