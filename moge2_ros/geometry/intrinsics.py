"""Camera intrinsics helpers: construction, normalised <-> pixel conversion, FoV, validation.

Two conventions are used throughout the package:

* **Normalised intrinsics** (MoGe's, "uv units"): the image spans [0, 1] on both axes and the centre of
  pixel column j is at ``u = (j + 0.5) / W`` (row i at ``v = (i + 0.5) / H``).  A centred camera has
  ``cx = cy = 0.5``.
* **Pixel intrinsics** (ROS ``CameraInfo.K`` / OpenCV): pixel centres at integer coordinates, so
  ``fx_px = fx_n * W``, ``fy_px = fy_n * H``, ``cx_px = cx_n * W - 0.5``, ``cy_px = cy_n * H - 0.5``
  (skew ``s_px = s_n * W``).

Both are ``(..., 3, 3)`` upper-triangular matrices ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` acting on
OpenCV camera-frame points (x right, y down, z forward).
"""

from __future__ import annotations

import torch

from moge2_ros.errors import GeometryError
from moge2_ros.geometry._checks import check_intrinsics_shape

__all__ = [
    "intrinsics_from_focal_center",
    "normalized_to_pixel_intrinsics",
    "pixel_to_normalized_intrinsics",
    "intrinsics_to_fov",
    "gt_focal_from_intrinsics",
    "validate_intrinsics",
]

_Number = float | int


def intrinsics_from_focal_center(
    fx: torch.Tensor | _Number,
    fy: torch.Tensor | _Number,
    cx: torch.Tensor | _Number,
    cy: torch.Tensor | _Number,
) -> torch.Tensor:
    """``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` with the arguments broadcast against each other.

    Args:
        fx, fy, cx, cy: tensors of broadcastable shapes ``(...)`` or Python numbers (any convention).

    Returns:
        ``(..., 3, 3)``; dtype/device of the tensor arguments (the first one; float32 / CPU if all are
        numbers).
    """
    args = (fx, fy, cx, cy)
    ref = next((t for t in args if isinstance(t, torch.Tensor)), None)
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    device = ref.device if ref is not None else None
    tensors = [torch.as_tensor(t, dtype=dtype, device=device) for t in args]
    try:
        fx_t, fy_t, cx_t, cy_t = torch.broadcast_tensors(*tensors)
    except RuntimeError:
        raise GeometryError(
            "intrinsics_from_focal_center: expected broadcastable fx, fy, cx, cy, found shapes "
            f"{[tuple(t.shape) for t in tensors]}"
        ) from None
    zeros = torch.zeros_like(fx_t)
    ones = torch.ones_like(fx_t)
    flat = torch.stack([fx_t, zeros, cx_t, zeros, fy_t, cy_t, zeros, zeros, ones], dim=-1)
    return flat.unflatten(-1, (3, 3))


def _check_size(width: int, height: int) -> None:
    if int(width) != width or int(height) != height or width <= 0 or height <= 0:
        raise GeometryError(f"image size: expected positive integer width and height, found {width!r} x {height!r}")


def normalized_to_pixel_intrinsics(intrinsics: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Normalised (uv-unit) intrinsics -> pixel intrinsics (ROS / OpenCV, pixel centres at integers).

    Equivalent to ``[[W, 0, -0.5], [0, H, -0.5], [0, 0, 1]] @ K_n``, evaluated elementwise:
    ``fx_px = fx * W``, ``s_px = s * W``, ``cx_px = cx * W - 0.5``, ``fy_px = fy * H``, ``cy_px = cy * H - 0.5``.

    Args:
        intrinsics: ``(..., 3, 3)`` normalised intrinsics.
        width, height: image size in pixels.

    Returns:
        ``(..., 3, 3)`` pixel intrinsics, same dtype/device.
    """
    check_intrinsics_shape(intrinsics)
    _check_size(width, height)
    row0 = intrinsics[..., 0, :] * width - 0.5 * intrinsics[..., 2, :]
    row1 = intrinsics[..., 1, :] * height - 0.5 * intrinsics[..., 2, :]
    return torch.stack([row0, row1, intrinsics[..., 2, :]], dim=-2)


def pixel_to_normalized_intrinsics(intrinsics: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Pixel intrinsics (ROS / OpenCV) -> normalised (uv-unit) intrinsics; inverse of
    :func:`normalized_to_pixel_intrinsics`: ``fx = fx_px / W``, ``cx = (cx_px + 0.5) / W``, ``fy = fy_px / H``,
    ``cy = (cy_px + 0.5) / H``.

    Args:
        intrinsics: ``(..., 3, 3)`` pixel intrinsics.
        width, height: image size in pixels.

    Returns:
        ``(..., 3, 3)`` normalised intrinsics, same dtype/device.
    """
    check_intrinsics_shape(intrinsics)
    _check_size(width, height)
    row0 = (intrinsics[..., 0, :] + 0.5 * intrinsics[..., 2, :]) / width
    row1 = (intrinsics[..., 1, :] + 0.5 * intrinsics[..., 2, :]) / height
    return torch.stack([row0, row1, intrinsics[..., 2, :]], dim=-2)


def intrinsics_to_fov(intrinsics: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal and vertical field of view (radians) of NORMALISED intrinsics.

    ``fov_x = 2 * atan(0.5 / fx)``, ``fov_y = 2 * atan(0.5 / fy)`` (exact for a centred principal point).

    Args:
        intrinsics: ``(..., 3, 3)`` normalised intrinsics.

    Returns:
        ``(fov_x, fov_y)``, each ``(...)``.
    """
    check_intrinsics_shape(intrinsics)
    return 2 * torch.atan(0.5 / intrinsics[..., 0, 0]), 2 * torch.atan(0.5 / intrinsics[..., 1, 1])


def gt_focal_from_intrinsics(intrinsics: torch.Tensor) -> torch.Tensor:
    """Focal length in units of the image diagonal, ``1 / sqrt(1 / fx^2 + 1 / fy^2)``, of NORMALISED intrinsics.

    With ``fx = f_px / W`` and ``fy = f_px / H`` this is ``f_px / sqrt(W^2 + H^2)``: the focal with which the
    official trainer scales the local loss's patch radii (used by that loss and by the refinement's filter).

    Args:
        intrinsics: ``(..., 3, 3)`` normalised intrinsics.

    Returns:
        ``(...)``, same dtype/device.
    """
    check_intrinsics_shape(intrinsics)
    return 1 / (1 / intrinsics[..., 0, 0] ** 2 + 1 / intrinsics[..., 1, 1] ** 2) ** 0.5


def validate_intrinsics(intrinsics: torch.Tensor, name: str = "intrinsics", atol: float = 1e-6) -> torch.Tensor:
    """Check that ``intrinsics`` is a usable ``(..., 3, 3)`` camera matrix; return it unchanged.

    Requires: floating tensor of shape ``(..., 3, 3)``, all entries finite, ``fx > 0`` and ``fy > 0``, bottom row
    ``(0, 0, 1)`` and ``K[1, 0] == 0`` (within ``atol``).  Works for either convention.  Reads values back to
    the host (it is a validator, not for inner loops).

    Raises:
        GeometryError: saying what was expected and what was found.
    """
    check_intrinsics_shape(intrinsics, name)
    if intrinsics.numel() == 0:
        return intrinsics
    k = intrinsics.detach()
    if not bool(torch.isfinite(k).all()):
        raise GeometryError(f"{name}: expected finite values, found non-finite entries in {k.cpu().tolist()}")
    fx, fy = k[..., 0, 0], k[..., 1, 1]
    if not bool(((fx > 0) & (fy > 0)).all()):
        raise GeometryError(
            f"{name}: expected positive focal lengths fx, fy, found fx={fx.cpu().tolist()}, fy={fy.cpu().tolist()}"
        )
    expected_rows = torch.tensor([0.0, 0.0, 1.0], dtype=k.dtype, device=k.device)
    if not bool(((k[..., 2, :] - expected_rows).abs() <= atol).all()) or not bool((k[..., 1, 0].abs() <= atol).all()):
        raise GeometryError(
            f"{name}: expected an upper-triangular camera matrix with bottom row (0, 0, 1), found {k.cpu().tolist()}"
        )
    return intrinsics

