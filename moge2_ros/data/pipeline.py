"""The training view of a dataset: fixed-size augmented tensors in the conventions of the official losses.

``TrainingView(source, config, seed, train)`` wraps any ``Sequence[Sample]`` (folder, rosbag, synthetic,
7-Scenes) as a torch ``Dataset`` whose item ``i`` is a dict of tensors of size ``config.image_size = (H, W)``
(torch's default collate batches them):

======================  ===================  ==================================================================
key                     type                 content
======================  ===================  ==================================================================
``image``               float32 (3, H, W)    RGB in [0, 1] (antialiased bilinear resize, colour jitter)
``points``              float32 (H, W, 3)    metric camera-frame points (OpenCV frame), ``+inf`` where invalid
``depth``               float32 (H, W)       z in metres, NaN where invalid
``mask_pos``            bool (H, W)          pixels with valid geometry
``mask_neg``            bool (H, W)          pixels known to be sky (no geometry)
``normal``              float32 (H, W, 3)    unit normals (camera frame), zeros where unknown
``has_normal``          bool ()              the source has normals
``intrinsics``          float32 (3, 3)       NORMALISED intrinsics of the output (MoGe uv units)
``label_type``          str                  ``"A"``, ``"B"``, ``"C"``, or ``"invalid"`` (almost no valid pixel)
``is_metric``           bool ()              depth is in true metres
======================  ===================  ==================================================================

Geometry: a crop (random area and position; train) or the largest centred crop (eval) with the output's aspect
ratio, resized to ``(H, W)``; depth, normals and masks by the nearest valid pixel (depths are never blended),
the intrinsics adjusted exactly (:func:`~moge2_ros.data.augment.crop_resize_intrinsics`), points re-computed
from depth with :func:`moge2_ros.geometry.projection.depth_to_points`.  Train also flips horizontally and
jitters colours with the official ranges.  Item ``i`` is a pure function of ``(seed, epoch, i)``
(:meth:`TrainingView.set_epoch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from moge2_ros.data.augment import (
    AugmentParams,
    centre_crop,
    color_jitter,
    crop_resize_intrinsics,
    flip_intrinsics,
    resize_image,
    resize_nearest,
    resize_nearest_valid,
    sample_params,
)
from moge2_ros.data.sample import INVALID_LABEL, Sample
from moge2_ros.errors import DatasetError
from moge2_ros.geometry.intrinsics import pixel_to_normalized_intrinsics
from moge2_ros.geometry.projection import depth_to_points

__all__ = ["AugmentConfig", "TrainingView", "augment_sample"]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings (defaults: the official recipe's photometric ranges).

    Attributes:
        image_size: output ``(H, W)``.
        area_range: share of the largest crop (with the output aspect ratio) kept by a random crop.
        aspect_jitter: maximum ``|log|`` change of the crop's aspect ratio; non-zero values make pixels
            non-square in the output (``fx != fy``, exactly accounted for in the intrinsics).  0 keeps the
            source's pixel aspect, as the official recipe does.
        flip_prob: probability of a horizontal flip.
        brightness, contrast, saturation, gamma: factor ranges; hue: range in turns; jitter_prob: probability
            of applying the colour jitter; ``color_jitter=False`` disables it.
        min_valid_fraction: items with fewer valid pixels get ``label_type = "invalid"`` (no loss), as the official
            loader does.
    """

    image_size: tuple[int, int] = (256, 320)
    area_range: tuple[float, float] = (0.35, 1.0)
    aspect_jitter: float = 0.0
    flip_prob: float = 0.5
    color_jitter: bool = True
    brightness: tuple[float, float] = (0.7, 1.3)
    contrast: tuple[float, float] = (0.7, 1.3)
    saturation: tuple[float, float] = (0.7, 1.3)
    hue: tuple[float, float] = (-0.1, 0.1)
    gamma: tuple[float, float] = (0.7, 1.3)
    jitter_prob: float = 1.0
    min_valid_fraction: float = 0.001

    def __post_init__(self) -> None:
        # Accept lists (YAML / JSON configs): store tuples so the config stays hashable and comparable.
        for name in ("image_size", "area_range", "brightness", "contrast", "saturation", "hue", "gamma"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if len(self.image_size) != 2:
            raise DatasetError(f"AugmentConfig.image_size: expected (H, W), found {self.image_size!r}")
        h, w = self.image_size
        if not (isinstance(h, int) and isinstance(w, int) and h >= 2 and w >= 2):
            raise DatasetError(f"AugmentConfig.image_size: expected (H, W) ints >= 2, found {self.image_size!r}")
        lo, hi = self.area_range
        if not 0.0 < lo <= hi <= 1.0:
            raise DatasetError(f"AugmentConfig.area_range: expected 0 < min <= max <= 1, found {self.area_range!r}")
        if not 0.0 <= self.aspect_jitter <= 1.0:
            raise DatasetError(f"AugmentConfig.aspect_jitter: expected [0, 1], found {self.aspect_jitter}")
        for name in ("flip_prob", "jitter_prob", "min_valid_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise DatasetError(f"AugmentConfig.{name}: expected [0, 1], found {getattr(self, name)}")
        for name in ("brightness", "contrast", "saturation", "gamma"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi:
                raise DatasetError(f"AugmentConfig.{name}: expected 0 < min <= max, found {getattr(self, name)!r}")
        lo, hi = self.hue
        if not -0.5 <= lo <= hi <= 0.5:
            raise DatasetError(f"AugmentConfig.hue: expected -0.5 <= min <= max <= 0.5 turns, found {self.hue!r}")

    @property
    def jitter_ranges(self) -> tuple[tuple[float, float], ...] | None:
        if not self.color_jitter:
            return None
        return self.brightness, self.contrast, self.saturation, self.hue, self.gamma


def augment_sample(sample: Sample, params: AugmentParams, size: tuple[int, int],
                   min_valid_fraction: float = 0.001) -> dict[str, torch.Tensor | str]:
    """Apply one draw of the augmentation to ``sample``; return the training dict (module docstring)."""
    top, left, h, w = params.crop
    if not (0 <= top and 0 <= left and h >= 1 and w >= 1 and top + h <= sample.height and left + w <= sample.width):
        raise DatasetError(f"augment ({sample.source}): crop {params.crop} outside the {sample.width}x"
                           f"{sample.height} image")
    rows, cols = slice(top, top + h), slice(left, left + w)
    image = torch.from_numpy(np.ascontiguousarray(sample.image[rows, cols])).permute(2, 0, 1).float() / 255.0
    image = resize_image(image, size)

    depth = torch.from_numpy(np.ascontiguousarray(sample.depth[rows, cols]))
    valid = torch.isfinite(depth) & (depth > 0)
    has_normal = sample.normal is not None
    maps = [depth]
    if has_normal:
        maps.append(torch.from_numpy(np.ascontiguousarray(sample.normal[rows, cols])))
    resized = resize_nearest_valid(valid, size, *maps)
    mask_pos = resized[-1]
    depth = torch.where(mask_pos, resized[0], torch.nan)
    normal = torch.zeros(size + (3,), dtype=torch.float32)
    if has_normal:
        n = resized[1]
        known = mask_pos & torch.isfinite(n).all(dim=-1)
        normal = torch.where(known[..., None], n, 0.0)
    if sample.sky is not None:
        (sky,) = resize_nearest(size, torch.from_numpy(np.ascontiguousarray(sample.sky[rows, cols])))
        mask_neg = sky & ~mask_pos
    else:
        mask_neg = torch.zeros(size, dtype=torch.bool)

    k = crop_resize_intrinsics(sample.intrinsics, params.crop, size)
    if params.flip:
        image, depth, mask_pos, mask_neg = (x.flip(-1) for x in (image, depth, mask_pos, mask_neg))
        normal = normal.flip(1) * torch.tensor([-1.0, 1.0, 1.0])
        k = flip_intrinsics(k, size[1])
    if params.jitter is not None:
        image = color_jitter(image, *params.jitter)

    k_norm = pixel_to_normalized_intrinsics(torch.from_numpy(k), size[1], size[0]).float()
    points = depth_to_points(depth, k_norm)
    points = torch.where(mask_pos[..., None], points, torch.inf)
    label_type = sample.label_type
    if float(mask_pos.float().mean()) < min_valid_fraction:
        label_type = INVALID_LABEL
    return {
        "image": image.contiguous(),
        "points": points.contiguous(),
        "depth": depth.contiguous(),
        "mask_pos": mask_pos.contiguous(),
        "mask_neg": mask_neg.contiguous(),
        "normal": normal.float().contiguous(),
        "has_normal": torch.tensor(has_normal),
        "intrinsics": k_norm,
        "label_type": label_type,
        "is_metric": torch.tensor(bool(sample.is_metric)),
    }


class TrainingView(torch.utils.data.Dataset):
    """Augmented, fixed-size tensor view of a ``Sequence[Sample]`` (see the module docstring).

    Args:
        source: any sequence of :class:`Sample` (read lazily, item by item).
        config: augmentation settings.
        seed: base seed; item ``i`` of epoch ``e`` uses ``numpy.random.default_rng([seed, e, i])``.
        train: random crop, flip and jitter; ``False``: the largest centred crop, nothing random.
    """

    def __init__(self, source: Sequence[Sample], config: AugmentConfig | None = None, seed: int = 0,
                 train: bool = True) -> None:
        self.source = source
        self.config = config or AugmentConfig()
        self.seed = int(seed)
        self.train = bool(train)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of ``epoch`` (call before each epoch, like DistributedSampler.set_epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def params(self, index: int, sample: Sample) -> AugmentParams:
        """The augmentation draw of item ``index`` in the current epoch."""
        c = self.config
        if not self.train:
            return AugmentParams(crop=centre_crop(sample.height, sample.width, c.image_size))
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch, int(index)])
        return sample_params(rng, sample.height, sample.width, c.image_size, c.area_range, c.aspect_jitter,
                             c.flip_prob, c.jitter_ranges, c.jitter_prob)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        sample = self.source[index]
        return augment_sample(sample, self.params(index, sample), self.config.image_size,
                              self.config.min_valid_fraction)
