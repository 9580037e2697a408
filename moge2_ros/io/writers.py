"""Writing depth maps, depth previews and metadata to files (numpy + Pillow; EXR optional)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from moge2_ros.errors import InputError

#: Largest depth representable in a 16-bit millimetre PNG, metres.
MAX_DEPTH_MM_PNG_M: float = 65.535


def _check_depth(depth: np.ndarray) -> np.ndarray:
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise InputError(f"depth must have shape (H, W), got {depth.shape}")
    if not np.issubdtype(depth.dtype, np.floating):
        raise InputError(f"depth must be floating point (metres), got dtype {depth.dtype}")
    return depth


def _valid_depth(depth: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``(H, W)`` bool: finite, strictly positive and inside ``mask`` (when given)."""
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(depth) & (depth > 0)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != depth.shape:
            raise InputError(f"mask shape {mask.shape} does not match depth shape {depth.shape}")
        valid &= mask
    return valid


def depth_to_mm_uint16(depth: np.ndarray) -> np.ndarray:
    """Convert metric depth to 16-bit millimetres (REP 118 ``16UC1`` convention).

    Args:
        depth: ``(H, W)`` float depth in metres; NaN, inf and values <= 0 are invalid.

    Returns:
        ``(H, W)`` uint16 depth in millimetres, rounded half up; 0 = invalid. Valid depths are clipped to
        [1, 65535] mm, i.e. a valid depth below 0.5 mm stays valid (1 mm) and depths beyond 65.535 m read 65535.
        The ROS ``16UC1`` depth image uses this same function.
    """
    depth = _check_depth(depth)
    valid = _valid_depth(depth, None)
    out = np.zeros(depth.shape, dtype=np.uint16)
    mm = np.floor(depth[valid].astype(np.float64) * 1000.0 + 0.5)
    out[valid] = np.clip(mm, 1, 65535).astype(np.uint16)
    return out


def _parent_dir(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_depth_png_mm(path: str | Path, depth: np.ndarray) -> Path:
    """Write depth as a 16-bit greyscale PNG in millimetres (0 = invalid), see :func:`depth_to_mm_uint16`.

    Args:
        path: output file (``.png``); parent folders are created.
        depth: ``(H, W)`` float depth in metres, NaN/inf/<=0 invalid.
    """
    path = _parent_dir(path)
    Image.fromarray(depth_to_mm_uint16(depth)).save(path, format="PNG")  # uint16 -> mode I;16
    return path


def read_depth_png_mm(path: str | Path) -> np.ndarray:
    """Read a millimetre depth PNG written by :func:`write_depth_png_mm`.

    Returns:
        ``(H, W)`` float32 depth in metres, NaN where the PNG holds 0.
    """
    with Image.open(path) as image:
        mm = np.asarray(image).astype(np.float32)
    if mm.ndim != 2:
        raise InputError(f"{path}: expected a single-channel depth PNG, got shape {mm.shape}")
    depth = mm / 1000.0
    depth[mm == 0] = np.nan
    return depth


def write_depth_npy(path: str | Path, depth: np.ndarray) -> Path:
    """Write depth as a float32 ``.npy`` array in metres (invalid pixels NaN).

    Args:
        path: output file (``.npy``); parent folders are created.
        depth: ``(H, W)`` float depth in metres; inf and values <= 0 are written as NaN.
    """
    depth = _check_depth(depth)
    out = depth.astype(np.float32, copy=True)
    out[~_valid_depth(depth, None)] = np.nan
    path = _parent_dir(path)
    np.save(path, out, allow_pickle=False)
    return path


def exr_available() -> bool:
    """True when the ``exr`` extra (the ``OpenEXR`` package, >= 3.3) is importable."""
    try:
        import OpenEXR  # noqa: F401  (optional dependency, imported lazily)
    except ImportError:
        return False
    return hasattr(OpenEXR, "File")


def write_depth_exr(path: str | Path, depth: np.ndarray) -> Path:
    """Write depth as a single-channel (``Z``) float32 OpenEXR image in metres (invalid pixels NaN).

    Needs the ``exr`` extra (``pip install "moge2_ros[exr]"``).

    Raises:
        InputError: OpenEXR (>= 3.3) is not installed.
    """
    depth = _check_depth(depth)
    if not exr_available():
        raise InputError('writing EXR needs the OpenEXR package (>= 3.3): pip install "moge2_ros[exr]"')
    import OpenEXR

    out = depth.astype(np.float32, copy=True)
    out[~_valid_depth(depth, None)] = np.nan
    path = _parent_dir(path)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"Z": np.ascontiguousarray(out)}) as exr_file:
        exr_file.write(str(path))
    return path


# Polynomial fit of Google's "Turbo" colormap (A. Mikhailov, 2019; polynomial approximation by R. Du),
# evaluated as sum_k c_k x^k for k = 0..5 per channel.
_TURBO_COEFFS = np.array(
    [
        [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],  # red
        [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],  # green
        [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],  # blue
    ],
    dtype=np.float64,
)


def turbo(x: np.ndarray) -> np.ndarray:
    """Turbo-like colormap.

    Args:
        x: array of any shape ``S`` with values in [0, 1] (clipped; NaN maps to 0).

    Returns:
        ``S + (3,)`` uint8 RGB; 0 -> almost black, 0.1 -> blue, 0.5 -> green, 0.95 -> dark red.
    """
    x = np.clip(np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0), 0.0, 1.0)
    powers = np.stack([x**k for k in range(6)], axis=-1)  # S + (6,)
    rgb = powers @ _TURBO_COEFFS.T  # S + (3,)
    return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


#: :func:`turbo` sampled at 1024 points plus a final black entry (invalid), so previews are one table lookup.
_TURBO_LUT = np.concatenate([turbo(np.linspace(0.0, 1.0, 1024)), np.zeros((1, 3), np.uint8)])
_LUT_BLACK = len(_TURBO_LUT) - 1
#: Valid pixels sampled (evenly) for the preview's normalising percentiles.
_PERCENTILE_SAMPLES = 65536


def colorize_depth(
    depth: np.ndarray,
    mask: np.ndarray | None = None,
    percentiles: tuple[float, float] = (1.0, 99.0),
) -> np.ndarray:
    """Coloured preview of a depth map: turbo colormap on inverse depth, near = red, far = blue.

    The inverse depth is normalised between robust percentiles of the valid pixels so that a few outliers do
    not wash out the preview, then mapped to the part [0.1, 0.95] of the colormap whose colours are clearly
    not black (black = invalid). For looking at, not for measuring: use the depth PNG / npy for values.

    Args:
        depth: ``(H, W)`` float depth in metres; NaN, inf and values <= 0 are invalid.
        mask: optional ``(H, W)`` bool validity mask, combined with the above.
        percentiles: lower / upper percentile of valid inverse depth mapped to the ends of the colormap.

    Returns:
        ``(H, W, 3)`` uint8 RGB image; invalid pixels black.
    """
    depth = _check_depth(depth)
    valid = _valid_depth(depth, mask)
    if not valid.any():
        return np.zeros(depth.shape + (3,), dtype=np.uint8)
    inv = 1.0 / depth[valid].astype(np.float32)
    step = max(1, inv.size // _PERCENTILE_SAMPLES)
    lo, hi = np.percentile(inv[::step], percentiles)
    scale = hi - lo
    x = np.clip((inv - lo) / scale, 0.0, 1.0) if scale > 0 else np.full_like(inv, 0.5)
    index = np.full(depth.shape, _LUT_BLACK, dtype=np.intp)
    index[valid] = np.rint((0.1 + 0.85 * x) * (_LUT_BLACK - 1))
    return _TURBO_LUT[index]


def write_rgb_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an ``(H, W, 3)`` uint8 RGB array as a PNG (parent folders are created)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError(f"expected an (H, W, 3) uint8 RGB image, got shape {rgb.shape} dtype {rgb.dtype}")
    path = _parent_dir(path)
    Image.fromarray(rgb, mode=None).save(path, format="PNG")
    return path


def jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays, paths and non-finite floats (-> None) to plain JSON values."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented, strict JSON (numpy values converted, NaN/inf written as ``null``)."""
    path = _parent_dir(path)
    text = json.dumps(jsonable(data), indent=2, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path
