"""The official MoGe benchmark data layout: :class:`MoGeBenchmarkDataset` (``open_dataset`` format
``"moge-benchmark"``), the sample reader and the official evaluation view.

Layout of one benchmark (the folders that ``configs/eval/all_benchmarks.json`` of the official release points at)::

    <benchmark>/
      .index.txt              one sample folder per line (relative to <benchmark>; the config's "split" key)
      <sample>/image.jpg      RGB image
      <sample>/depth.png      16-bit log-encoded depth (below), any unit; the config's depth_unit makes it metres
      <sample>/meta.json      {"intrinsics": 3x3 NORMALISED intrinsics (uv units: the image spans [0, 1])}
      <sample>/segmentation.png  (optional, only with include_segmentation; not used here)

Depth PNG encoding (official ``moge/utils/io.py``): uint16 ``v``; ``0`` = unknown, ``65535`` = infinitely far
(sky), otherwise ``depth = near^(1 - x) * far^x`` with ``x = (v - 1) / 65533``; ``near`` and ``far`` are PNG
text chunks (and a legacy ``unit`` chunk multiplies the result).

The official evaluation does not feed the raw image to the model: every sample is re-rendered into a centred
pinhole view of the benchmark's ``width`` x ``height`` (:func:`official_eval_view`): the view is rotated so the
optical axis passes through the image centre, its field of view is the largest of the target aspect ratio that
fits inside the raw image, the image is LANCZOS-resized to about the target pixel size and warped through the
homography (bilinear; depth nearest, converted from ray length to z in the new view), and depths more than
``drop_max_depth`` times the 1 % quantile are dropped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from moge2_ros.data.sample import Dataset
from moge2_ros.data.sample import Sample
from moge2_ros.errors import DatasetError

__all__ = [
    "MoGeBenchmarkDataset",
    "read_moge_depth_png",
    "write_moge_depth_png",
    "read_index",
    "read_official_sample",
    "write_official_sample",
    "official_eval_view",
]


# ------------------------------------------------------------------------------------------------ depth PNG codec


def read_moge_depth_png(path: str | Path) -> np.ndarray:
    """Decode an official log-encoded 16-bit depth PNG: ``(H, W)`` float32, NaN unknown, +inf infinitely far.

    Raises:
        DatasetError: unreadable file, not 16-bit, or missing / bad ``near`` / ``far`` text chunks.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            info = dict(img.info)
            raw = np.array(img)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read the depth PNG ({exc})") from None
    if raw.ndim != 2 or raw.dtype not in (np.uint16, np.int32, np.uint32):
        raise DatasetError(f"{path}: expected a single-channel 16-bit depth PNG, found {raw.dtype} {raw.shape}")
    try:
        near, far = float(info["near"]), float(info["far"])
    except (KeyError, ValueError):
        raise DatasetError(f"{path}: missing or bad 'near' / 'far' PNG text chunks of the MoGe depth encoding "
                           f"(found {sorted(k for k in info if isinstance(k, str))})") from None
    if not (0 < near < far and math.isfinite(far)):
        raise DatasetError(f"{path}: expected 0 < near < far, found near={near}, far={far}")
    raw = raw.astype(np.int64)
    x = (raw.astype(np.float32) - 1) / 65533
    depth = (near ** (1 - x) * far**x).astype(np.float32)
    if "unit" in info:
        depth *= np.float32(float(info["unit"]))
    depth[raw == 0] = np.nan
    depth[raw == 65535] = np.inf
    return depth


def write_moge_depth_png(path: str | Path, depth: np.ndarray, max_range: float = 1e5) -> Path:
    """Encode ``(H, W)`` depth (NaN unknown, +inf infinitely far) in the official 16-bit log format.

    ``near = max(min finite, 1e-5)``, ``far = max(1.1 near, min(max finite, near * max_range))``; the relative
    quantisation step is ``(far / near)^(1 / 65533) - 1`` (3.5e-5 for far / near = 10).
    """
    depth = np.asarray(depth, dtype=np.float32)
    finite = np.isfinite(depth)
    if depth.ndim != 2 or not finite.any():
        raise DatasetError(f"{path}: expected an (H, W) depth map with finite values, found shape {depth.shape}")
    near = max(float(depth[finite].min()), 1e-5)
    far = max(near * 1.1, min(float(depth[finite].max()), near * max_range))
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.log(np.clip(np.nan_to_num(depth, nan=near, posinf=far), near, far) / near) / math.log(far / near)
    code = (1 + np.round(np.clip(x, 0, 1) * 65533)).astype(np.uint16)
    code[np.isnan(depth)] = 0
    code[np.isinf(depth)] = 65535
    info = PngImagePlugin.PngInfo()
    info.add_text("near", repr(near))
    info.add_text("far", repr(far))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(code).save(path, pnginfo=info)
    return path


# ------------------------------------------------------------------------------------------------ samples


def read_index(root: Path, split: str = ".index.txt") -> list[str]:
    """Sample folder names listed in ``root / split`` (blank lines ignored)."""
    index = Path(root) / split
    try:
        names = [line.strip() for line in index.read_text(encoding="utf-8").splitlines()]
    except OSError as exc:
        raise DatasetError(f"{index}: cannot read the benchmark index ({exc.strerror or exc})") from None
    names = [n for n in names if n]
    if not names:
        raise DatasetError(f"{index}: the benchmark index lists no samples")
    return names


def _read_rgb(folder: Path) -> np.ndarray:
    for name in ("image.jpg", "image.png", "image.jpeg"):
        path = folder / name
        if path.is_file():
            try:
                with Image.open(path) as img:
                    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
            except OSError as exc:
                raise DatasetError(f"{path}: cannot read the image ({exc})") from None
    raise DatasetError(f"{folder}: no image.jpg (or image.png) in this benchmark sample")


def read_official_sample(folder: str | Path, depth_unit: float | None = None) -> tuple[Sample, np.ndarray]:
    """Read one raw official sample (before the evaluation view).

    Args:
        folder: ``<benchmark>/<sample>``.
        depth_unit: metres per stored depth unit (the config's ``depth_unit``); None = not metric (depth kept in
            its own unit, ``is_metric`` False).

    Returns:
        ``(sample, infinite)``: the Sample (pixel intrinsics, depth NaN where unknown or infinite,
        ``sky`` = infinitely far pixels) and the ``(H, W)`` bool map of infinitely far pixels.
    """
    folder = Path(folder)
    image = _read_rgb(folder)
    depth = read_moge_depth_png(folder / "depth.png")
    if depth.shape != image.shape[:2]:
        raise DatasetError(f"{folder / 'depth.png'}: size {depth.shape[::-1]} differs from the image's "
                           f"{image.shape[1::-1]}")
    meta_path = folder / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        k_norm = np.asarray(meta["intrinsics"], dtype=np.float64)
    except OSError as exc:
        raise DatasetError(f"{meta_path}: cannot read ({exc.strerror or exc})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{meta_path}: expected JSON with a 3x3 'intrinsics' (normalised) ({exc})") from None
    if k_norm.shape != (3, 3) or not np.isfinite(k_norm).all() or k_norm[0, 0] == 0 or k_norm[1, 1] == 0:
        raise DatasetError(f"{meta_path}: 'intrinsics' must be a finite 3x3 matrix with non-zero focal lengths, "
                           f"found {k_norm.tolist()}")
    h, w = depth.shape
    k_px = np.array([[k_norm[0, 0] * w, k_norm[0, 1] * w, k_norm[0, 2] * w - 0.5],
                     [0.0, k_norm[1, 1] * h, k_norm[1, 2] * h - 0.5],
                     [0.0, 0.0, 1.0]])
    infinite = np.isinf(depth)
    if depth_unit is not None:
        depth = depth * np.float32(depth_unit)
    with np.errstate(invalid="ignore"):
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(np.nan)).astype(np.float32)
    sample = Sample(image=image, depth=depth, intrinsics=k_px, sky=infinite,
                    label_type="B", is_metric=depth_unit is not None, source=str(folder),
                    meta={"normalized_intrinsics": k_norm})
    return sample, infinite


def write_official_sample(folder: str | Path, sample: Sample) -> Path:
    """Write ``sample`` in the official layout (``image.jpg`` quality 95, ``depth.png``, ``meta.json`` with
    normalised intrinsics; ``sample.sky`` pixels are stored as infinitely far).  For tests and conversions."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sample.image).save(folder / "image.jpg", quality=95)
    depth = sample.depth.astype(np.float32).copy()
    if sample.sky is not None:
        depth[sample.sky] = np.inf
    write_moge_depth_png(folder / "depth.png", depth)
    h, w = sample.depth.shape
    k = np.asarray(sample.intrinsics, dtype=np.float64)
    k_norm = [[k[0, 0] / w, k[0, 1] / w, (k[0, 2] + 0.5) / w], [0.0, k[1, 1] / h, (k[1, 2] + 0.5) / h],
              [0.0, 0.0, 1.0]]
    (folder / "meta.json").write_text(json.dumps({"intrinsics": k_norm}), encoding="utf-8")
    return folder


# ------------------------------------------------------------------------------------------------ evaluation view


def _rotation_to_z(direction: np.ndarray) -> np.ndarray:
    """Rotation matrix that maps unit(``direction``) onto +z by the shortest arc (Rodrigues)."""
    v = direction / np.linalg.norm(direction)
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(v, z)
    s, c = np.linalg.norm(axis), float(np.dot(v, z))
    if s < 1e-12:
        return np.eye(3)
    axis /= s
    kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = math.atan2(s, c)
    return np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx


def _line_hits(directions: np.ndarray, p: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Intersections of the lines ``s * directions[k]`` (through the origin) with the line ``p + t d``:
    ``(K, 2)``; rows of parallel lines are +inf."""
    out = np.full((len(directions), 2), np.inf)
    for k, a in enumerate(directions):
        m = np.array([[a[0], -d[0]], [a[1], -d[1]]])
        if abs(np.linalg.det(m)) < 1e-12:
            continue
        s, _ = np.linalg.solve(m, p)
        out[k] = s * a
    return out


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample ``(H, W, C)`` at float pixel coordinates (centres at integers), zero outside the image."""
    h, w = image.shape[:2]
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    out = np.zeros(x.shape + image.shape[2:], dtype=np.float64)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            vals = image[np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)].astype(np.float64)
            out += np.where(inside[..., None], vals * wx * wy, 0.0)
    return out


def official_eval_view(
    sample: Sample,
    width: int,
    height: int,
    drop_max_depth: float = 1000.0,
    infinite: np.ndarray | None = None,
) -> Sample:
    """Re-render a raw benchmark sample into the official evaluation view (see the module docstring).

    Args:
        sample: raw sample (pixel intrinsics; depth NaN where unknown).
        width, height: the benchmark's target size in pixels.
        drop_max_depth: depths above ``drop_max_depth`` times the 1 % depth quantile are dropped.
        infinite: ``(H, W)`` bool of infinitely far pixels (kept as ``sky`` in the output).

    Returns:
        A Sample of ``height x width`` with a centred principal point (pixel ``cx = (W - 1) / 2``), depth along the
        new optical axis (NaN unknown), ``meta["normalized_intrinsics"]`` and the source's other meta.
    """
    import torch

    from moge2_ros.geometry.resize import masked_nearest_resize

    raw_h, raw_w = sample.depth.shape
    k_px = np.asarray(sample.intrinsics, dtype=np.float64)
    k = np.array([[k_px[0, 0] / raw_w, k_px[0, 1] / raw_w, (k_px[0, 2] + 0.5) / raw_w],
                  [0.0, k_px[1, 1] / raw_h, (k_px[1, 2] + 0.5) / raw_h], [0.0, 0.0, 1.0]])
    k_inv = np.linalg.inv(k)
    raw_hor, raw_ver = abs(1.0 / k[0, 0]), abs(1.0 / k[1, 1])
    aspect = width / height
    tgt_hor = min(raw_hor, raw_ver * aspect)
    tgt_ver = tgt_hor / aspect

    rot = _rotation_to_z(k_inv @ np.array([0.5, 0.5, 1.0]))
    corners = np.array([[0, 0, 1], [0, 1, 1], [1, 1, 1], [1, 0, 1]], dtype=np.float64) @ (k_inv.T @ rot.T)
    corners = corners[:, :2] / corners[:, 2:3]
    warp_hor, warp_ver = raw_hor, raw_ver
    diagonals = np.array([[aspect, 1.0], [aspect, -1.0]])
    for i in range(4):
        hits = np.abs(_line_hits(diagonals, corners[i - 1], corners[i] - corners[i - 1]))
        warp_hor, warp_ver = min(warp_hor, 2 * hits[:, 0].min()), min(warp_ver, 2 * hits[:, 1].min())
    tgt_hor, tgt_ver = min(tgt_hor, warp_hor), min(tgt_ver, warp_ver)
    tgt_k = np.array([[1.0 / tgt_hor, 0.0, 0.5], [0.0, 1.0 / tgt_ver, 0.5], [0.0, 0.0, 1.0]])

    # 1. Resize to about the target pixel size (image: LANCZOS; depth: nearest valid pixel).
    res_w = max(1, int(raw_w * (raw_hor / raw_w) / (tgt_hor / width)))
    res_h = max(1, int(raw_h * (raw_ver / raw_h) / (tgt_ver / height)))
    image = np.asarray(Image.fromarray(sample.image).resize((res_w, res_h), Image.Resampling.LANCZOS))
    inf_map = np.zeros_like(sample.valid()) if infinite is None else infinite
    depth_t = torch.from_numpy(np.nan_to_num(sample.depth, nan=1.0).astype(np.float32))
    inf_t = torch.from_numpy(inf_map)
    depth_r, inf_r, mask_r = masked_nearest_resize(depth_t, inf_t, mask=torch.from_numpy(sample.valid() | inf_map),
                                                   size=(res_h, res_w))
    depth_r, inf_r, mask_r = depth_r.numpy().astype(np.float64), inf_r.numpy() & mask_r.numpy(), mask_r.numpy()
    # Distance along the ray (invariant under the rotation), using the resolution-free normalised intrinsics.
    jj, ii = np.meshgrid((np.arange(res_w) + 0.5) / res_w, (np.arange(res_h) + 0.5) / res_h)
    rays = np.stack([jj, ii, np.ones_like(jj)], axis=-1) @ k_inv.T
    distance = np.linalg.norm(rays, axis=-1) * depth_r

    # 2. Homography: target uv -> source uv, then source pixel coordinates (centres at integers).
    transform = k @ np.linalg.inv(rot) @ np.linalg.inv(tgt_k)
    tu, tv = np.meshgrid((np.arange(width) + 0.5) / width, (np.arange(height) + 0.5) / height)
    tgt_uv1 = np.stack([tu, tv, np.ones_like(tu)], axis=-1)
    src = tgt_uv1 @ transform.T
    src_uv = src[..., :2] / (src[..., 2:3] + 1e-12)
    px, py = src_uv[..., 0] * res_w - 0.5, src_uv[..., 1] * res_h - 0.5
    out_image = np.clip(np.round(_bilinear(image, px, py)), 0, 255).astype(np.uint8)
    xi, yi = np.rint(px).astype(np.int64), np.rint(py).astype(np.int64)
    inside = (xi >= 0) & (xi < res_w) & (yi >= 0) & (yi < res_h)
    xi, yi = np.clip(xi, 0, res_w - 1), np.clip(yi, 0, res_h - 1)
    tgt_mask = inside & mask_r[yi, xi] & ~inf_r[yi, xi]
    tgt_inf = inside & inf_r[yi, xi]
    ray_len = np.linalg.norm(tgt_uv1 @ np.linalg.inv(tgt_k).T, axis=-1)
    tgt_depth = np.where(tgt_mask, distance[yi, xi] / (ray_len + 1e-12), np.nan)

    # 3. Drop implausibly far depth (relative to the 1 % quantile).
    if tgt_mask.any():
        limit = np.nanquantile(tgt_depth, 0.01) * drop_max_depth
        with np.errstate(invalid="ignore"):
            tgt_mask &= tgt_depth <= limit
    tgt_depth = np.where(tgt_mask, tgt_depth, np.nan).astype(np.float32)
    tgt_k_px = np.array([[tgt_k[0, 0] * width, 0.0, 0.5 * width - 0.5],
                         [0.0, tgt_k[1, 1] * height, 0.5 * height - 0.5], [0.0, 0.0, 1.0]])
    meta = dict(sample.meta)
    meta["normalized_intrinsics"] = tgt_k
    return sample.replace(image=out_image, depth=tgt_depth, intrinsics=tgt_k_px, sky=tgt_inf, meta=meta,
                          normal=None, provenance=None)


# ------------------------------------------------------------------------------------------------ dataset


class MoGeBenchmarkDataset(Dataset):
    """The samples of one official benchmark folder, each in the official evaluation view (read on access).

    Args:
        root: the benchmark folder (holds ``split``).
        split: index file name inside ``root`` (the official config's ``split``).
        width, height: evaluation view size in pixels; None (both) = each image's own size.
        depth_unit: metres per stored depth unit; None = the depth is not metric (``is_metric`` False).
        drop_max_depth: depths above this many times the 1 % depth quantile are dropped (official default 1000).

    Samples: label type "B", pixel intrinsics with a centred principal point, ``sky`` = infinitely far pixels,
    ``meta["normalized_intrinsics"]``.

    Attributes:
        stems: the index entries (sample folders relative to ``root``), one per sample.

    Raises:
        DatasetError: unreadable or empty index, one of ``width`` / ``height`` without the other; a sample's
            files are checked when it is read.
    """

    def __init__(self, root: str | Path, split: str = ".index.txt", width: int | None = None,
                 height: int | None = None, depth_unit: float | None = None, drop_max_depth: float = 1000.0) -> None:
        self.root = Path(root)
        if (width is None) != (height is None):
            raise DatasetError(f"official benchmark {self.root}: give both width and height or neither")
        self.width, self.height = width, height
        self.depth_unit = depth_unit
        self.drop_max_depth = drop_max_depth
        self.stems: list[str] = read_index(self.root, split)

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if isinstance(index, slice):
            raise DatasetError("MoGeBenchmarkDataset: slicing is not supported; index one sample at a time")
        raw, infinite = read_official_sample(self.root / self.stems[index], self.depth_unit)
        width = self.width or raw.width
        height = self.height or raw.height
        return official_eval_view(raw, width, height, self.drop_max_depth, infinite)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]
