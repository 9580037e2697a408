"""Validation and conversion of images and intrinsics handed to the Predictor."""

from __future__ import annotations

from typing import Union

import numpy as np
import torch

from ..errors import BudgetError, InputError
from ..io.msg_codec import DEFAULT_MAX_PIXELS

ImageLike = Union[np.ndarray, torch.Tensor]

MIN_SIDE = 2


def _check_size(height: int, width: int, max_pixels: int) -> None:
    if height < MIN_SIDE or width < MIN_SIDE:
        raise InputError(f"image too small: {width}x{height} pixels, need at least {MIN_SIDE}x{MIN_SIDE}")
    if height * width > max_pixels:
        raise BudgetError(f"image too large: {width}x{height} = {height * width} pixels, limit {max_pixels}")


def image_to_batch(
    image: ImageLike, device: torch.device, max_pixels: int = DEFAULT_MAX_PIXELS
) -> torch.Tensor:
    """Convert an image or batch to a ``(B, 3, H, W)`` float32 RGB tensor in [0, 1] on ``device``.

    Accepted:
      * numpy, channels-last RGB: ``(H, W, 3)`` or ``(B, H, W, 3)``; uint8 (/255), uint16 (/65535) or
        float in [0, 1]; grey ``(H, W)`` is replicated to 3 channels;
      * torch, channels-first (the official convention): ``(3, H, W)`` or ``(B, 3, H, W)``; float in [0, 1]
        or uint8 (/255).
    Float numpy and CPU tensors are checked to be finite and inside [0, 1]; CUDA tensors are not (that
    check would synchronise the GPU).

    Raises:
        InputError: wrong type, shape, dtype, value range, or size.
    """
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=-1)
        if array.ndim not in (3, 4) or array.shape[-1] != 3:
            raise InputError(
                f"numpy image: expected channels-last RGB (H, W, 3) or (B, H, W, 3) (or grey (H, W)), "
                f"found shape {image.shape}"
            )
        if array.dtype == np.uint8:
            scale = 1.0 / 255.0
        elif array.dtype == np.uint16:
            scale = 1.0 / 65535.0
        elif array.dtype in (np.float32, np.float64, np.float16):
            scale = None
            if array.size and (not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0):
                raise InputError("float numpy image: values must be finite and in [0, 1]")
        else:
            raise InputError(f"numpy image: unsupported dtype {array.dtype}; use uint8, uint16 or float in [0, 1]")
        array = np.ascontiguousarray(array)
        # read-only buffers (e.g. np.frombuffer over a ROS message) are copied: torch needs writable memory
        tensor = torch.from_numpy(array) if array.flags.writeable else torch.tensor(array)
        if tensor.dim() == 3:
            tensor = tensor.unsqueeze(0)
        tensor = tensor.to(device, non_blocking=True).permute(0, 3, 1, 2)
        tensor = tensor.float() * scale if scale is not None else tensor.float()
    elif isinstance(image, torch.Tensor):
        tensor = image
        if tensor.dim() == 3:
            tensor = tensor.unsqueeze(0)
        if tensor.dim() != 4 or tensor.shape[1] != 3:
            raise InputError(
                f"torch image: expected channels-first (3, H, W) or (B, 3, H, W), found shape {tuple(image.shape)}"
            )
        if tensor.dtype == torch.uint8:
            tensor = tensor.to(device).float() / 255.0
        elif tensor.is_floating_point():
            if tensor.device.type == "cpu" and tensor.numel():
                if not torch.isfinite(tensor).all() or tensor.min() < 0 or tensor.max() > 1:
                    raise InputError("float torch image: values must be finite and in [0, 1]")
            tensor = tensor.to(device=device, dtype=torch.float32)
        else:
            raise InputError(f"torch image: unsupported dtype {tensor.dtype}; use float in [0, 1] or uint8")
    else:
        raise InputError(f"image: expected a numpy array or a torch tensor, found {type(image).__name__}")
    if tensor.shape[0] == 0:
        raise InputError("image batch is empty")
    _check_size(tensor.shape[2], tensor.shape[3], max_pixels)
    return tensor.contiguous()


def intrinsics_to_batch(intrinsics: ImageLike, batch: int, device: torch.device) -> torch.Tensor:
    """Validate pixel-unit intrinsics ``(3, 3)`` or ``(B, 3, 3)`` and return ``(B, 3, 3)`` float32 on ``device``.

    Requires finite values, fx > 0, fy > 0, zero skew and a last row of (0, 0, 1).
    """
    k = torch.as_tensor(np.asarray(intrinsics) if not isinstance(intrinsics, torch.Tensor) else intrinsics)
    if not k.is_floating_point() and k.dtype not in (torch.int32, torch.int64):
        raise InputError(f"intrinsics: expected a numeric 3x3 matrix, found dtype {k.dtype}")
    k = k.to(torch.float64).cpu()
    if k.dim() == 2 and tuple(k.shape) == (3, 3):
        k = k.unsqueeze(0).expand(batch, 3, 3)
    if tuple(k.shape) != (batch, 3, 3):
        raise InputError(f"intrinsics: expected (3, 3) or ({batch}, 3, 3), found {tuple(k.shape)}")
    if not torch.isfinite(k).all():
        raise InputError("intrinsics: contain NaN or inf")
    if (k[:, 0, 0] <= 0).any() or (k[:, 1, 1] <= 0).any():
        raise InputError(f"intrinsics: fx and fy must be positive, found fx={k[:, 0, 0].tolist()} fy={k[:, 1, 1].tolist()}")
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=k.dtype)
    if not torch.allclose(k[:, 2], bottom.expand(batch, 3)) or (k[:, 1, 0] != 0).any() or (k[:, 0, 1] != 0).any():
        raise InputError(f"intrinsics: expected [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (no skew), found {k[0].tolist()}")
    return k.to(device=device, dtype=torch.float32)
