"""Shared helpers of the rosbag2 tests: small real frames from 7-Scenes as Samples (read in place, never copied)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from moge2_ros.data.sample import Sample

#: 7-Scenes RGB intrinsics (README of the data folder), pixels at 640x480.
SEVENSCENES_K = np.array([[525.0, 0.0, 320.0], [0.0, 525.0, 240.0], [0.0, 0.0, 1.0]])


def sevenscenes_frames(root: Path, count: int = 3, factor: int = 4) -> list[Sample]:
    """The first ``count`` frames, downscaled by ``factor`` (box filter for RGB, every factor-th depth pixel).

    The raw (unregistered) Kinect depth is used as is: these tests exercise the bag plumbing, for which any
    metric depth of the right size will do. Depth: millimetres / 1000, 0 and 65535 invalid (NaN).
    """
    samples = []
    for path in sorted(root.glob("frame-*.color.jpg"))[:count]:
        with PILImage.open(path) as image:
            rgb = image.convert("RGB")
            width, height = rgb.size
            rgb = np.asarray(rgb.resize((width // factor, height // factor), PILImage.BOX))
        with PILImage.open(str(path).replace(".color.jpg", ".depth.png")) as image:
            millimetres = np.asarray(image).astype(np.float32)[::factor, ::factor]
        depth = millimetres / np.float32(1000.0)
        depth[(millimetres == 0) | (millimetres == 65535)] = np.nan
        k = SEVENSCENES_K.copy()
        k[0, 0] /= factor
        k[1, 1] /= factor
        k[0, 2] = (k[0, 2] + 0.5) / factor - 0.5
        k[1, 2] = (k[1, 2] + 0.5) / factor - 0.5
        samples.append(Sample(image=rgb, depth=depth.astype(np.float32), intrinsics=k, source=str(path)))
    return samples
