"""Procedural synthetic scenes with exact metric ground truth (label type "A").

:class:`SyntheticDataset` is a ``Sequence[Sample]`` of random rooms and streets
(:mod:`~moge2_ros.data.synthetic_scene`) seen by random cameras and ray-cast by
:func:`~moge2_ros.data.synthetic_render.render_scene`: exact depth (z, metres), unit normals (camera frame,
facing the camera) and a sky mask, with random pinhole intrinsics.  Frame ``index`` of a dataset with ``seed``
is a pure function of ``(seed, index, height, width, config)``: the dataset holds no state and can be read by
many DataLoader workers in any order.

To fly a camera through ONE fixed scene (the demo camera does), build the scene once
(:func:`sample_scene` or a :class:`SceneBuilder`) and call :func:`render_scene` with a sequence of poses
(:func:`camera_pose`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from moge2_ros.data.sample import Sample
from moge2_ros.data.synthetic_render import pixel_rays, render_scene
from moge2_ros.data.synthetic_scene import (PATTERNS, RoomLayout, Scene, SceneBuilder, camera_pose, sample_room,
                                            sample_street)
from moge2_ros.errors import DatasetError

__all__ = [
    "SyntheticConfig",
    "SyntheticDataset",
    "RoomLayout",
    "Scene",
    "SceneBuilder",
    "PATTERNS",
    "camera_pose",
    "pixel_rays",
    "render_scene",
    "sample_scene",
    "sample_camera",
    "frame_rng",
]

FAMILIES = ("room", "street")


@dataclass(frozen=True)
class SyntheticConfig:
    """Random ranges of the generator (angles in degrees at this interface).

    Attributes:
        families: scene families to draw from (``"room"``, ``"street"``).
        family_weights: relative probabilities of ``families`` (None: equal).
        fov_x_deg: range of the horizontal field of view.
        principal_point_jitter: maximum offset of the principal point from the image centre, as a fraction of
            the image width (x) and height (y).
        focal_aspect_jitter: maximum ``|fy / fx - 1|``.
        pitch_deg, roll_deg: maximum absolute camera pitch and roll; yaw is uniform in ``yaw_deg``.
        room_camera_height, street_camera_height: camera height ranges above the floor / ground, metres.
        room_layout: ranges of a room's size, furniture count and camera placement (:class:`RoomLayout`, or a
            dict of its fields from a YAML config; default: the original rooms).
        shadows: cast shadow rays (more depth cues; about 1.5-2x the render time).
        device: torch device that renders (samples always come back as numpy arrays).
    """

    families: tuple[str, ...] = FAMILIES
    family_weights: tuple[float, ...] | None = None
    fov_x_deg: tuple[float, float] = (40.0, 100.0)
    principal_point_jitter: float = 0.03
    focal_aspect_jitter: float = 0.01
    pitch_deg: float = 10.0
    roll_deg: float = 3.0
    yaw_deg: float = 30.0
    room_camera_height: tuple[float, float] = (0.8, 1.8)
    street_camera_height: tuple[float, float] = (1.0, 2.5)
    room_layout: RoomLayout = RoomLayout()
    shadows: bool = True
    device: str = "cpu"

    def __post_init__(self) -> None:
        # Accept lists (YAML / JSON configs): store tuples so the config stays hashable and comparable.
        for name in ("families", "family_weights", "fov_x_deg", "room_camera_height", "street_camera_height"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if isinstance(self.room_layout, dict):
            unknown_keys = set(self.room_layout) - set(RoomLayout.__dataclass_fields__)
            if unknown_keys:
                raise DatasetError(f"SyntheticConfig.room_layout: unknown keys {sorted(unknown_keys)}; allowed: "
                                   f"{sorted(RoomLayout.__dataclass_fields__)}")
            object.__setattr__(self, "room_layout", RoomLayout(**self.room_layout))
        elif not isinstance(self.room_layout, RoomLayout):
            raise DatasetError(f"SyntheticConfig.room_layout: expected a RoomLayout or a dict of its fields, found "
                               f"{type(self.room_layout).__name__}")
        if self.family_weights is None:
            object.__setattr__(self, "family_weights", (1.0,) * len(self.families))
        unknown = [f for f in self.families if f not in FAMILIES]
        if not self.families or unknown:
            raise DatasetError(f"SyntheticConfig.families: expected a non-empty subset of {FAMILIES}, found "
                               f"{self.families!r}")
        if len(self.family_weights) != len(self.families) or min(self.family_weights) < 0 \
                or sum(self.family_weights) <= 0:
            raise DatasetError(f"SyntheticConfig.family_weights: expected {len(self.families)} weights >= 0 with a "
                               f"positive sum, found {self.family_weights!r}")
        lo, hi = self.fov_x_deg
        if not 1.0 <= lo <= hi < 170.0:
            raise DatasetError(f"SyntheticConfig.fov_x_deg: expected 1 <= min <= max < 170 degrees, found "
                               f"{self.fov_x_deg!r}")
        for name in ("principal_point_jitter", "focal_aspect_jitter"):
            if not 0.0 <= getattr(self, name) < 0.5:
                raise DatasetError(f"SyntheticConfig.{name}: expected a value in [0, 0.5), found {getattr(self, name)}")
        for name in ("pitch_deg", "roll_deg", "yaw_deg"):
            if not 0.0 <= getattr(self, name) <= 80.0:
                raise DatasetError(f"SyntheticConfig.{name}: expected degrees in [0, 80], found {getattr(self, name)}")
        for name in ("room_camera_height", "street_camera_height"):
            lo, hi = getattr(self, name)
            if not 0.05 <= lo <= hi:
                raise DatasetError(f"SyntheticConfig.{name}: expected 0.05 <= min <= max metres, found "
                                   f"{getattr(self, name)!r}")


def frame_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of frame ``index`` of a dataset with ``seed`` (independent streams per frame)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index)]))


def sample_scene(rng: np.random.Generator, config: SyntheticConfig | None = None,
                 family: str | None = None) -> tuple[Scene, dict]:
    """A random scene of ``family`` (drawn from ``config.families`` when None) and its layout info (see
    :func:`~moge2_ros.data.synthetic_scene.sample_room` / ``sample_street``)."""
    config = config or SyntheticConfig()
    if family is None:
        weights = np.asarray(config.family_weights, dtype=np.float64)
        family = config.families[int(rng.choice(len(config.families), p=weights / weights.sum()))]
    if family == "room":
        scene, info = sample_room(rng, layout=config.room_layout)
    elif family == "street":
        scene, info = sample_street(rng)
    else:
        raise DatasetError(f"sample_scene: unknown family {family!r}; expected one of {FAMILIES}")
    info["family"] = family
    return scene, info


def sample_camera(rng: np.random.Generator, info: dict, width: int, height: int,
                  config: SyntheticConfig | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Random pixel intrinsics and camera pose for a scene with layout ``info`` (from :func:`sample_scene`).

    Returns:
        ``(K (3, 3) float64 pixel intrinsics, pose (4, 4) camera-to-world, camera dict)`` with the drawn
        ``fov_x_deg``, ``height_m``, ``yaw_deg``, ``pitch_deg``, ``roll_deg``.
    """
    config = config or SyntheticConfig()
    fov = math.radians(rng.uniform(*config.fov_x_deg))
    fx = 0.5 * width / math.tan(fov / 2)
    fy = fx * (1.0 + rng.uniform(-config.focal_aspect_jitter, config.focal_aspect_jitter))
    cx = (width - 1) / 2 + rng.uniform(-1, 1) * config.principal_point_jitter * width
    cy = (height - 1) / 2 + rng.uniform(-1, 1) * config.principal_point_jitter * height
    k = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    lo, hi = config.room_camera_height if info["family"] == "room" else config.street_camera_height
    cam_height = min(rng.uniform(lo, hi), info.get("camera_height_max", math.inf))
    yaw = math.radians(rng.uniform(-config.yaw_deg, config.yaw_deg))
    pitch = math.radians(rng.uniform(-config.pitch_deg, config.pitch_deg))
    roll = math.radians(rng.uniform(-config.roll_deg, config.roll_deg))
    x, z = info["camera_xz"]
    pose = camera_pose((x, -cam_height, z), yaw, pitch, roll)
    camera = {"fov_x_deg": math.degrees(fov), "height_m": cam_height, "yaw_deg": math.degrees(yaw),
              "pitch_deg": math.degrees(pitch), "roll_deg": math.degrees(roll)}
    return k, pose, camera


class SyntheticDataset(Sequence[Sample]):
    """``count`` random synthetic frames of ``height x width`` pixels, rendered on access.

    Frame ``i`` depends only on ``(seed, i, height, width, config)``.  Samples: label type "A", metric, exact
    ``depth`` (NaN on sky), ``normal`` (NaN on sky), ``sky``, pixel ``intrinsics``; ``meta`` holds the family,
    the camera pose (camera-to-world, world y down) and the drawn camera parameters.
    """

    def __init__(self, count: int, height: int, width: int, seed: int = 0,
                 config: SyntheticConfig | None = None) -> None:
        for name, value, minimum in (("count", count, 0), ("height", height, 2), ("width", width, 2)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
                raise DatasetError(f"SyntheticDataset: {name} must be an int >= {minimum}, found {value!r}")
        self.count, self.height, self.width, self.seed = int(count), int(height), int(width), int(seed)
        self.config = config or SyntheticConfig()

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if isinstance(index, slice):
            raise DatasetError("SyntheticDataset: slicing is not supported; index one frame at a time")
        i = int(index)
        if i < 0:
            i += self.count
        if not 0 <= i < self.count:
            raise IndexError(f"SyntheticDataset index {index} out of range for {self.count} frames")
        rng = frame_rng(self.seed, i)
        scene, info = sample_scene(rng, self.config)
        k, pose, camera = sample_camera(rng, info, self.width, self.height, self.config)
        return render_scene(
            scene, k, pose, self.width, self.height, device=self.config.device, shadows=self.config.shadows,
            source=f"synthetic:seed={self.seed}:index={i}", meta={"family": info["family"], "camera": camera},
        )
