"""Augmentations of the training pipeline: crop + resize with exact intrinsics, flip, colour jitter.

Pure functions; the randomness is drawn by :func:`sample_params` from a numpy ``Generator`` into an
:class:`AugmentParams` record, and :func:`apply_geometry` / :func:`color_jitter` apply it deterministically (the
tests re-apply the same parameters with and without a flip).

Intrinsics convention: pixel K (ROS ``CameraInfo.K``, pixel centres at integer coordinates).  Cropping
``[top, top + h) x [left, left + w)`` and resizing to ``(H', W')`` maps source pixel coordinate ``x`` to
``(x - left + 0.5) * W' / w - 0.5`` (pixel-centre convention), hence ``fx' = fx W' / w``,
``cx' = (cx - left + 0.5) W' / w - 0.5`` (same for y), skew scaled like fx.  A horizontal flip of a W-wide image
maps ``x`` to ``W - 1 - x``: ``cx' = W - 1 - cx``, skew negated, and camera-frame x (points, normals) negated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from moge2_ros.errors import DatasetError
from moge2_ros.geometry.resize import masked_nearest_resize

__all__ = [
    "AugmentParams",
    "crop_resize_intrinsics",
    "flip_intrinsics",
    "random_crop",
    "centre_crop",
    "resize_image",
    "resize_nearest_valid",
    "resize_nearest",
    "color_jitter",
    "sample_params",
]


@dataclass(frozen=True)
class AugmentParams:
    """One draw of the augmentation.

    Attributes:
        crop: ``(top, left, height, width)`` of the crop in source pixels.
        flip: mirror horizontally after resizing.
        jitter: ``(brightness, contrast, saturation, hue, gamma)`` factors, or None for no colour change.
    """

    crop: tuple[int, int, int, int]
    flip: bool = False
    jitter: tuple[float, float, float, float, float] | None = None


def crop_resize_intrinsics(k: np.ndarray, crop: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """Pixel intrinsics of a crop ``(top, left, h, w)`` resized to ``size = (H', W')`` (module docstring).

    Args:
        k: ``(3, 3)`` pixel K of the source image.

    Returns:
        ``(3, 3)`` float64 pixel K of the output image.
    """
    top, left, h, w = crop
    sx, sy = size[1] / w, size[0] / h
    k = np.asarray(k, dtype=np.float64)
    out = np.eye(3)
    out[0, 0], out[0, 1], out[0, 2] = k[0, 0] * sx, k[0, 1] * sx, (k[0, 2] - left + 0.5) * sx - 0.5
    out[1, 1], out[1, 2] = k[1, 1] * sy, (k[1, 2] - top + 0.5) * sy - 0.5
    return out


def flip_intrinsics(k: np.ndarray, width: int) -> np.ndarray:
    """Pixel K of the horizontally mirrored image (``cx -> W - 1 - cx``, skew negated)."""
    out = np.array(k, dtype=np.float64)
    out[0, 2] = width - 1 - out[0, 2]
    out[0, 1] = -out[0, 1]
    return out


def _largest_crop(src_h: int, src_w: int, aspect: float) -> tuple[float, float]:
    """Height and width of the largest crop with width / height = ``aspect`` inside the source."""
    if src_w / src_h > aspect:
        return float(src_h), src_h * aspect
    return src_w / aspect, float(src_w)


def centre_crop(src_h: int, src_w: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The largest centred crop with the aspect ratio of ``size = (H, W)``: ``(top, left, h, w)``."""
    ch, cw = _largest_crop(src_h, src_w, size[1] / size[0])
    h, w = max(1, min(src_h, round(ch))), max(1, min(src_w, round(cw)))
    return (src_h - h) // 2, (src_w - w) // 2, h, w


def random_crop(rng: np.random.Generator, src_h: int, src_w: int, size: tuple[int, int],
                area_range: tuple[float, float], aspect_jitter: float) -> tuple[int, int, int, int]:
    """A random crop ``(top, left, h, w)``: its aspect ratio is that of ``size = (H, W)`` times
    ``exp(U(-aspect_jitter, aspect_jitter))`` and its area a ``U(area_range)`` share of the largest crop of that
    aspect ratio; the position is uniform.  Always draws the same four numbers from ``rng``."""
    u_area, u_aspect, u_top, u_left = rng.uniform(size=4)
    aspect = size[1] / size[0] * math.exp((2 * u_aspect - 1) * aspect_jitter)
    ch, cw = _largest_crop(src_h, src_w, aspect)
    scale = math.sqrt(area_range[0] + (area_range[1] - area_range[0]) * u_area)
    h, w = max(1, min(src_h, round(ch * scale))), max(1, min(src_w, round(cw * scale)))
    top = min(src_h - h, int(u_top * (src_h - h + 1)))
    left = min(src_w - w, int(u_left * (src_w - w + 1)))
    return top, left, h, w


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize (pixel-centre aligned) of a ``(C, h, w)`` float image to ``(C, H, W)``."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def resize_nearest_valid(mask: torch.Tensor, size: tuple[int, int], *maps: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Resize sparse maps by the nearest VALID source pixel (never blending values across edges or holes); see
    :func:`moge2_ros.geometry.resize.masked_nearest_resize`.

    Args:
        mask: ``(h, w)`` bool validity.
        maps: ``(h, w, ...)`` tensors.

    Returns:
        ``(*resized_maps, resized_mask)``; resized maps hold arbitrary values where the mask is False.
    """
    return masked_nearest_resize(*maps, mask=mask, size=size)


def resize_nearest(size: tuple[int, int], *maps: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Plain nearest-pixel resize (pixel-centre aligned) of ``(h, w, ...)`` maps."""
    if not maps:
        return ()
    ones = torch.ones(maps[0].shape[:2], dtype=torch.bool, device=maps[0].device)
    return masked_nearest_resize(*maps, mask=ones, size=size)[:-1]


def _gray(image: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma ``(1, H, W)`` of a ``(3, H, W)`` RGB image."""
    return (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])[None]


# RGB <-> YIQ; a hue shift is a rotation of the (I, Q) chroma plane.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]],
                           dtype=torch.float64)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _hue_rotation(hue: float) -> torch.Tensor:
    """``(3, 3)`` RGB matrix that turns the hue by ``hue`` of a full circle (YIQ chroma rotation)."""
    c, s = math.cos(2 * math.pi * hue), math.sin(2 * math.pi * hue)
    rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], dtype=torch.float64)
    return _YIQ_TO_RGB @ rot @ _RGB_TO_YIQ


def color_jitter(image: torch.Tensor, brightness: float, contrast: float, saturation: float, hue: float,
                 gamma: float) -> torch.Tensor:
    """Photometric jitter of a ``(3, H, W)`` float RGB image in [0, 1], in the order of the official recipe
    (brightness, contrast, saturation, hue, gamma), clamping to [0, 1] after each step.

    * brightness: ``x * b``; contrast: blend with the mean luma, ``c x + (1 - c) mean``; saturation: blend with
      the per-pixel luma; hue: rotation of the YIQ chroma plane by ``hue`` turns (``hue`` in [-0.5, 0.5]);
      gamma: ``x ** g``.  Factors of 1 (hue 0) leave the image unchanged.
    """
    x = (image * brightness).clamp(0.0, 1.0)
    x = (contrast * x + (1 - contrast) * _gray(x).mean()).clamp(0.0, 1.0)
    x = (saturation * x + (1 - saturation) * _gray(x)).clamp(0.0, 1.0)
    if hue != 0.0:
        m = _hue_rotation(hue).to(x.dtype)
        x = torch.einsum("ij,jhw->ihw", m, x).clamp(0.0, 1.0)
    return x.pow(gamma) if gamma != 1.0 else x


def sample_params(rng: np.random.Generator, src_h: int, src_w: int, size: tuple[int, int],
                  area_range: tuple[float, float], aspect_jitter: float, flip_prob: float,
                  jitter_ranges: tuple[tuple[float, float], ...] | None, jitter_prob: float) -> AugmentParams:
    """Draw one :class:`AugmentParams`.  The same number of values is drawn whatever the probabilities, so a
    configuration that differs only in ``flip_prob`` or the jitter gives the same crops."""
    if src_h < 1 or src_w < 1:
        raise DatasetError(f"augment: empty source image {src_w}x{src_h}")
    crop = random_crop(rng, src_h, src_w, size, area_range, aspect_jitter)
    u_flip, u_jitter = rng.uniform(size=2)
    factors = rng.uniform(size=5)
    jitter = None
    if jitter_ranges is not None and u_jitter < jitter_prob:
        jitter = tuple(lo + (hi - lo) * float(u) for (lo, hi), u in zip(jitter_ranges, factors))
    return AugmentParams(crop=crop, flip=bool(u_flip < flip_prob), jitter=jitter)  # type: ignore[arg-type]
