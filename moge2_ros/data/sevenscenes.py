"""Microsoft 7-Scenes RGB-D frames (Kinect v1) as label-type "B" metric Samples.

Layout (e.g. ``../shared/data/sevenscenes-redkitchen``): ``frame-NNNNNN.color.jpg`` (640x480 RGB),
``frame-NNNNNN.depth.png`` (uint16 millimetres, 65535 and 0 = invalid), optional ``frame-NNNNNN.pose.txt``
(4x4 camera-to-world, metres) and optional ``depth-camera-intrinsics.txt`` (3x3).

The depth is in the DEPTH camera's frame and is not registered to the RGB image.  This reader applies the
approximate registration documented with the data (fitted by aligning depth edges to RGB edges):

1. back-project every valid depth pixel ``(u, v, d)`` with the depth intrinsics (f = 585, c = (320, 240));
2. translate by ``-0.025 m`` along x;
3. project with the RGB intrinsics (f = 525, c = (320, 240)) and round to the nearest pixel;
4. z-buffer: where several points land in one RGB pixel the nearest wins.

RGB pixels that receive no point (border, holes, occlusions; 24-28% of them) get NaN.  Edges still disagree by
a pixel or two: this is raw real data of the kind the refinement pipeline cleans.  The RGB intrinsics (not
published; the usual value) are returned as the Sample's pixel K (ROS convention).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from moge2_ros.data.sample import Dataset
from moge2_ros.data.sample import Sample, validate_sample
from moge2_ros.errors import DatasetError, InputError

__all__ = ["SevenScenesDataset", "register_depth", "DEPTH_K", "RGB_K", "DEPTH_TO_RGB_SHIFT_X", "FRAME_PATTERN"]

#: Depth camera pixel intrinsics (documented).
DEPTH_K = np.array([[585.0, 0.0, 320.0], [0.0, 585.0, 240.0], [0.0, 0.0, 1.0]])
#: RGB camera pixel intrinsics (the usual value; 7-Scenes does not publish them).
RGB_K = np.array([[525.0, 0.0, 320.0], [0.0, 525.0, 240.0], [0.0, 0.0, 1.0]])
#: x translation from the depth to the RGB camera frame, metres (fitted on depth vs RGB edges).
DEPTH_TO_RGB_SHIFT_X = -0.025
#: Raw depth values meaning "no measurement".
INVALID_MM = (0, 65535)

#: File name of a colour frame (group 1: the frame number); what makes a folder a 7-Scenes sequence.
FRAME_PATTERN = re.compile(r"^frame-(\d+)\.color\.(png|jpg)$")


def register_depth(depth_mm: np.ndarray, depth_k: np.ndarray = DEPTH_K, rgb_k: np.ndarray = RGB_K,
                   shift_x: float = DEPTH_TO_RGB_SHIFT_X, rgb_size: tuple[int, int] | None = None) -> np.ndarray:
    """Re-project a depth image into the RGB camera (pinhole, translation along x only, z-buffer).

    Args:
        depth_mm: ``(H, W)`` uint16 millimetres; 0 and 65535 are invalid.
        depth_k, rgb_k: ``(3, 3)`` pixel intrinsics of the depth and RGB cameras.
        shift_x: translation (metres) added to the x of every back-projected point.
        rgb_size: ``(height, width)`` of the RGB image (default: the depth image's size).

    Returns:
        ``(H_rgb, W_rgb)`` float32 depth (z, metres) in the RGB camera, NaN where no point lands.
    """
    height, width = depth_mm.shape
    out_h, out_w = rgb_size if rgb_size is not None else (height, width)
    valid = ~np.isin(depth_mm, INVALID_MM)
    v, u = np.nonzero(valid)
    z = depth_mm[v, u].astype(np.float64) / 1000.0
    x = (u - depth_k[0, 2]) / depth_k[0, 0] * z + shift_x
    y = (v - depth_k[1, 2]) / depth_k[1, 1] * z
    col = np.floor(rgb_k[0, 0] * x / z + rgb_k[0, 2] + 0.5).astype(np.int64)
    row = np.floor(rgb_k[1, 1] * y / z + rgb_k[1, 2] + 0.5).astype(np.int64)
    inside = (col >= 0) & (col < out_w) & (row >= 0) & (row < out_h)
    flat = np.full(out_h * out_w, np.inf)
    np.minimum.at(flat, row[inside] * out_w + col[inside], z[inside])
    flat[np.isinf(flat)] = np.nan
    return flat.reshape(out_h, out_w).astype(np.float32)


class SevenScenesDataset(Dataset):
    """Frames of a 7-Scenes sequence folder with depth registered to RGB (see the module docstring).

    Args:
        root: the sequence folder (``frame-NNNNNN.color.jpg`` + ``.depth.png`` [+ ``.pose.txt``]).
        indices: positions in the sorted frame list to keep (default: all).

    Samples: label type "B", metric, ``intrinsics`` = :data:`RGB_K`, depth NaN where unknown, no sky / normals;
    ``meta`` holds ``frame`` (the frame number) and, when the pose file exists, ``pose`` (4x4 camera-to-world of
    the depth camera, metres).
    """

    def __init__(self, root: str | Path, indices: Sequence[int] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"7-Scenes folder {self.root}: not a directory")
        frames = sorted((int(m.group(1)), p) for p in self.root.iterdir() if (m := FRAME_PATTERN.match(p.name)))
        if not frames:
            raise DatasetError(f"7-Scenes folder {self.root}: no frame-NNNNNN.color.jpg files")
        if indices is not None:
            try:
                frames = [frames[int(i)] for i in indices]
            except IndexError:
                raise DatasetError(f"7-Scenes folder {self.root}: indices must be in [0, {len(frames)}), found "
                                   f"{list(indices)}") from None
        self.frames = frames
        self.depth_k = DEPTH_K
        k_file = self.root / "depth-camera-intrinsics.txt"
        if k_file.is_file():
            from moge2_ros.io.intrinsics import load_intrinsics_file

            try:
                cam = load_intrinsics_file(k_file)
            except InputError as exc:
                raise DatasetError(str(exc).replace(f"--intrinsics-file {k_file}", str(k_file), 1)) from None
            self.depth_k = np.array([[cam.fx, 0, cam.cx], [0, cam.fy, cam.cy], [0, 0, 1]], dtype=np.float64)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def stems(self) -> list[str]:
        """One name per sample: ``frame-NNNNNN`` of its colour file."""
        return [f"frame-{number:06d}" for number, _ in self.frames]

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if isinstance(index, slice):
            raise DatasetError("SevenScenesDataset: slicing is not supported; pass indices= instead")
        from moge2_ros.io.images import read_image_rgb

        number, color = self.frames[index]
        prefix = color.name.split(".")[0]
        depth_path = self.root / f"{prefix}.depth.png"
        try:
            image = read_image_rgb(color)
        except InputError as exc:
            raise DatasetError(str(exc)) from None
        try:
            with Image.open(depth_path) as im:
                depth_mm = np.array(im)
        except FileNotFoundError:
            raise DatasetError(f"{depth_path}: missing (every colour frame needs its depth)") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise DatasetError(f"{depth_path}: cannot read: {exc}") from None
        if depth_mm.ndim != 2 or depth_mm.dtype not in (np.uint16, np.int32):
            raise DatasetError(f"{depth_path}: expected a 16-bit single-channel PNG, found {depth_mm.dtype} "
                               f"{depth_mm.shape}")
        depth = register_depth(depth_mm, self.depth_k, RGB_K, DEPTH_TO_RGB_SHIFT_X, image.shape[:2])
        meta: dict = {"frame": number}
        pose_path = self.root / f"{prefix}.pose.txt"
        if pose_path.is_file():
            try:
                pose = np.loadtxt(pose_path, dtype=np.float64)
            except ValueError as exc:
                raise DatasetError(f"{pose_path}: cannot read a 4x4 matrix: {exc}") from None
            if pose.shape != (4, 4):
                raise DatasetError(f"{pose_path}: expected a 4x4 matrix, found shape {pose.shape}")
            meta["pose"] = pose
        sample = Sample(image=image, depth=depth, intrinsics=RGB_K.copy(), label_type="B", is_metric=True,
                        source=str(color), meta=meta)
        return validate_sample(sample)
