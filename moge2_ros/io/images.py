"""Reading images from files as RGB uint8 arrays (Pillow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from moge2_ros.errors import BudgetError, InputError

#: File name suffixes (lower case) treated as images when a folder is given.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder`` (not recursive), sorted by name.

    Files whose suffix (case-insensitive) is one of :data:`IMAGE_SUFFIXES` are listed; hidden files
    (name starting with ``.``) are not.

    Raises:
        InputError: ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"not a directory: {folder}")
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


#: Pillow modes of single-channel images deeper than 8 bits: depth maps, disparity, labels - not camera images.
_NON_COLOUR_MODES = {"I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I;16N": "16-bit", "I": "32-bit integer",
                     "F": "32-bit float"}


def non_colour_reason(path: str | Path) -> str | None:
    """Why ``path`` is not a camera image, or None: a single-channel image deeper than 8 bits (a 16-bit depth
    PNG, a float disparity TIFF, ...).  Only the header is read; an unreadable file gives None (the reader
    reports it).  8-bit greyscale counts as a (mono camera) image."""
    try:
        with Image.open(path) as image:
            mode = image.mode
    except Exception:  # noqa: BLE001 - unreadable: read_image_rgb gives the error
        return None
    depth = _NON_COLOUR_MODES.get(mode)
    if depth is None:
        return None
    return f"single-channel {depth} image (mode {mode}), likely a depth map or label, not a camera image"


def _to_uint8(array: np.ndarray, path: Path) -> np.ndarray:
    """Scale a high-bit-depth or float greyscale array to uint8."""
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        finite = array[np.isfinite(array)]
        if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
            raise InputError(
                f"cannot read image {path}: floating-point image with values in "
                f"[{finite.min():g}, {finite.max():g}], expected [0, 1] (is this a depth map?)"
            )
        return np.round(np.nan_to_num(array, nan=0.0) * 255.0).astype(np.uint8)
    # Integer images: Pillow gives 16-bit PNG / TIFF as mode "I;16*" or "I" (int32) with values 0..65535.
    if array.min() < 0 or array.max() > 65535:
        raise InputError(f"cannot read image {path}: integer values outside 0..65535")
    return np.round(array.astype(np.float64) / 257.0).astype(np.uint8)  # 65535 -> 255 exactly


def read_image_rgb(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as an RGB array.

    Greyscale (8/16-bit, float in [0, 1]), palette, RGBA (alpha dropped), CMYK and 16-bit images are converted;
    the EXIF orientation is applied (as image viewers and OpenCV do).

    Args:
        path: any format Pillow reads (PNG, JPEG, BMP, TIFF, ...).
        max_pixels: refuse an image larger than this (checked on the header's size, before decoding); None = only
            Pillow's own decompression-bomb limit.

    Returns:
        ``(H, W, 3)`` uint8 RGB array, C-contiguous.

    Raises:
        InputError: the file is missing, unreadable, truncated, not an image or has unsupported values;
            BudgetError (an InputError) when it is larger than ``max_pixels``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file: {path}")
    if not path.is_file():
        raise InputError(f"not a file: {path}")
    try:
        with Image.open(path) as image:
            width, height = image.size  # from the header: nothing decoded yet
            if max_pixels is not None and width * height > max_pixels:
                raise BudgetError(f"{path}: {width}x{height} = {width * height} pixels is over the limit of "
                                  f"{max_pixels} pixels (what the memory budget allows at this token count; "
                                  f"raise the budget or give a smaller image)")
            image.load()
            image = ImageOps.exif_transpose(image)
    except BudgetError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputError(f"cannot read image {path}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - a decoder's failures on a corrupt file are not part of any API
        # Pillow raises UnidentifiedImageError/OSError for most corrupt files, but plugins also raise
        # SyntaxError, ValueError, struct.error, IndexError, ... on malformed headers. This scope only
        # decodes an untrusted file, so every failure here means "unreadable image".
        detail = str(exc) or type(exc).__name__
        raise InputError(f"cannot read image {path}: {detail}") from exc

    mode = image.mode
    if mode in ("RGB",):
        rgb = np.asarray(image, dtype=np.uint8)
    elif mode in ("1", "L", "P", "PA", "LA", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV", "La"):
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    elif mode.startswith("I") or mode == "F":
        grey = _to_uint8(np.asarray(image), path)
        if grey.ndim != 2:
            raise InputError(f"cannot read image {path}: unsupported image mode {mode!r}")
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
    else:
        try:
            rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
        except (ValueError, OSError) as exc:
            raise InputError(f"cannot read image {path}: unsupported image mode {mode!r}") from exc
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InputError(f"cannot read image {path}: decoded to shape {rgb.shape}, expected (H, W, 3)")
    # Arrays that wrap Pillow's buffer are read-only; hand out a writable, C-contiguous array of our own.
    return rgb if rgb.flags.writeable and rgb.flags.c_contiguous else np.array(rgb, order="C")
