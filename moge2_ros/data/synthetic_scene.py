"""Procedural scenes of the synthetic generator: the :class:`Scene` description and random rooms and streets.

World frame (metres): **y points down** (along gravity), x and z span the ground.  A camera with the identity
pose therefore looks along +z with its image rows along +y, i.e. the world frame is the OpenCV camera frame of a
level camera.  The ground / floor is the plane ``y = 0``; "up" is ``-y``, so a point 1.5 m above the floor has
``y = -1.5``.

A scene is a small set of textured primitives (everything as plain numpy arrays, so a scene is cheap to build,
copy and pickle):

* infinite planes ``n . x = d`` (room walls, floor, ceiling, street ground), ``n`` pointing into the free space;
* boxes turned about the vertical axis (furniture, buildings, cars, kerbs);
* spheres (balls, lamps, tree crowns);
* vertical cylinders (pillars, poles, tree trunks, barrels).

Primitive ``k`` (planes first, then boxes, spheres, cylinders) has material ``k`` (pattern, two colours, texture
period in metres, noise phase).  Rendering is :func:`moge2_ros.data.synthetic_render.render_scene`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from moge2_ros.errors import DatasetError

__all__ = [
    "PATTERNS",
    "RoomLayout",
    "Scene",
    "SceneBuilder",
    "sample_room",
    "sample_street",
    "camera_pose",
]

#: Procedural texture patterns (index = value stored in ``Scene.pattern``).
PATTERNS = ("solid", "checker", "stripes", "noise", "bricks", "windows")


@dataclass
class Scene:
    """Textured primitives, light and sky of one procedural scene (world frame: y down, metres).

    Attributes:
        family: ``"room"``, ``"street"`` or a user name.
        planes: ``(P, 4)`` rows ``(nx, ny, nz, d)`` of planes ``n . x = d`` with unit ``n`` towards free space.
        box_centre, box_half, box_yaw: ``(B, 3)``, ``(B, 3)`` half sizes, ``(B,)`` radians about the y axis
            (local axis x maps to ``(cos yaw, 0, -sin yaw)``).
        sphere_centre, sphere_radius: ``(S, 3)``, ``(S,)``.
        cyl_centre, cyl_radius, cyl_y: ``(C, 2)`` axis position ``(x, z)``, ``(C,)``, ``(C, 2)`` extent
            ``(y_top, y_bottom)`` with ``y_top < y_bottom`` (y points down).
        pattern, color_a, color_b, tex_scale, tex_phase: per primitive (``P + B + S + C`` rows): pattern index in
            :data:`PATTERNS`, ``(N, 3)`` linear RGB colours in [0, 1], texture period in metres, noise phase.
        light_position: ``(3,)`` point light (rooms) or ``None``; light_direction: ``(3,)`` unit direction
            TOWARDS a distant light (sun) or ``None``; exactly one of them is set.
        ambient: ambient light share in [0, 1].
        sky_zenith, sky_horizon: ``(3,)`` sky colours (only visible where a ray hits nothing).
        fog_distance: metres at which 63% of a surface's colour is replaced by the horizon colour (``inf``: none).
    """

    family: str
    planes: np.ndarray
    box_centre: np.ndarray
    box_half: np.ndarray
    box_yaw: np.ndarray
    sphere_centre: np.ndarray
    sphere_radius: np.ndarray
    cyl_centre: np.ndarray
    cyl_radius: np.ndarray
    cyl_y: np.ndarray
    pattern: np.ndarray
    color_a: np.ndarray
    color_b: np.ndarray
    tex_scale: np.ndarray
    tex_phase: np.ndarray
    light_position: np.ndarray | None = None
    light_direction: np.ndarray | None = None
    ambient: float = 0.35
    sky_zenith: np.ndarray = field(default_factory=lambda: np.array([0.25, 0.45, 0.85]))
    sky_horizon: np.ndarray = field(default_factory=lambda: np.array([0.75, 0.85, 0.95]))
    fog_distance: float = math.inf

    @property
    def num_primitives(self) -> int:
        return len(self.planes) + len(self.box_centre) + len(self.sphere_centre) + len(self.cyl_centre)

    def validate(self) -> "Scene":
        """Check array shapes and value ranges; raise :class:`DatasetError` naming the bad field."""
        def need(name: str, value: np.ndarray, shape: tuple[int, ...]) -> None:
            arr = np.asarray(value)
            if arr.shape != shape or not np.isfinite(arr).all():
                raise DatasetError(f"scene.{name}: expected finite array of shape {shape}, found {arr.shape}")

        p, b, s, c = len(self.planes), len(self.box_centre), len(self.sphere_centre), len(self.cyl_centre)
        need("planes", self.planes, (p, 4))
        need("box_centre", self.box_centre, (b, 3))
        need("box_half", self.box_half, (b, 3))
        need("box_yaw", self.box_yaw, (b,))
        need("sphere_centre", self.sphere_centre, (s, 3))
        need("sphere_radius", self.sphere_radius, (s,))
        need("cyl_centre", self.cyl_centre, (c, 2))
        need("cyl_radius", self.cyl_radius, (c,))
        need("cyl_y", self.cyl_y, (c, 2))
        n = p + b + s + c
        if n == 0:
            raise DatasetError("scene: has no primitives")
        need("pattern", self.pattern, (n,))
        need("color_a", self.color_a, (n, 3))
        need("color_b", self.color_b, (n, 3))
        need("tex_scale", self.tex_scale, (n,))
        need("tex_phase", self.tex_phase, (n,))
        if p and not np.allclose(np.linalg.norm(self.planes[:, :3], axis=1), 1.0, atol=1e-6):
            raise DatasetError("scene.planes: plane normals must be unit vectors")
        if (self.box_half <= 0).any() or (self.sphere_radius <= 0).any() or (self.cyl_radius <= 0).any():
            raise DatasetError("scene: box half sizes and radii must be > 0")
        if c and not (self.cyl_y[:, 0] < self.cyl_y[:, 1]).all():
            raise DatasetError("scene.cyl_y: expected (y_top, y_bottom) with y_top < y_bottom (y points down)")
        if not ((self.pattern >= 0) & (self.pattern < len(PATTERNS))).all():
            raise DatasetError(f"scene.pattern: expected indices into {PATTERNS}")
        if (self.tex_scale <= 0).any():
            raise DatasetError("scene.tex_scale: texture periods must be > 0 metres")
        if (self.light_position is None) == (self.light_direction is None):
            raise DatasetError("scene: set exactly one of light_position and light_direction")
        return self


class SceneBuilder:
    """Collects primitives and their materials, then :meth:`build` packs them into a :class:`Scene`.

    Every ``add_*`` takes the material as keyword arguments: ``pattern`` (name in :data:`PATTERNS`), ``color_a``,
    ``color_b`` (RGB in [0, 1]), ``scale`` (texture period, metres) and ``phase`` (noise offset).
    """

    def __init__(self, family: str = "custom") -> None:
        self.family = family
        self._planes: list[tuple[list[float], dict]] = []
        self._boxes: list[tuple[list[float], dict]] = []
        self._spheres: list[tuple[list[float], dict]] = []
        self._cylinders: list[tuple[list[float], dict]] = []

    @staticmethod
    def _material(pattern: str = "solid", color_a=(0.6, 0.6, 0.6), color_b=(0.3, 0.3, 0.3), scale: float = 1.0,
                  phase: float = 0.0) -> dict:
        if pattern not in PATTERNS:
            raise DatasetError(f"scene material: unknown pattern {pattern!r}; expected one of {PATTERNS}")
        return {"pattern": PATTERNS.index(pattern), "a": list(color_a), "b": list(color_b), "scale": float(scale),
                "phase": float(phase)}

    def add_plane(self, normal, offset: float, **material) -> "SceneBuilder":
        """Plane ``normal . x = offset``; ``normal`` (normalised here) points towards the free space."""
        n = np.asarray(normal, dtype=np.float64)
        n = n / np.linalg.norm(n)
        self._planes.append(([*n, float(offset)], self._material(**material)))
        return self

    def add_box(self, centre, half, yaw: float = 0.0, **material) -> "SceneBuilder":
        """Box of half sizes ``half`` (local x, y, z) at ``centre``, turned by ``yaw`` radians about y."""
        self._boxes.append(([*centre, *half, float(yaw)], self._material(**material)))
        return self

    def add_sphere(self, centre, radius: float, **material) -> "SceneBuilder":
        self._spheres.append(([*centre, float(radius)], self._material(**material)))
        return self

    def add_cylinder(self, x: float, z: float, radius: float, y_top: float, y_bottom: float,
                     **material) -> "SceneBuilder":
        """Vertical cylinder with axis ``(x, z)`` from ``y_top`` to ``y_bottom`` (``y_top < y_bottom``)."""
        self._cylinders.append(([x, z, float(radius), float(y_top), float(y_bottom)], self._material(**material)))
        return self

    def build(self, light_position=None, light_direction=None, ambient: float = 0.35, sky_zenith=None,
              sky_horizon=None, fog_distance: float = math.inf) -> Scene:
        def arr(items: list, width: int) -> np.ndarray:
            return np.asarray([g for g, _ in items], dtype=np.float64).reshape(len(items), width)

        planes, boxes = arr(self._planes, 4), arr(self._boxes, 7)
        spheres, cyls = arr(self._spheres, 4), arr(self._cylinders, 5)
        mats = [m for _, m in self._planes + self._boxes + self._spheres + self._cylinders]
        direction = None
        if light_direction is not None:
            direction = np.asarray(light_direction, dtype=np.float64)
            direction = direction / np.linalg.norm(direction)
        kwargs = {}
        if sky_zenith is not None:
            kwargs["sky_zenith"] = np.asarray(sky_zenith, dtype=np.float64)
        if sky_horizon is not None:
            kwargs["sky_horizon"] = np.asarray(sky_horizon, dtype=np.float64)
        scene = Scene(
            family=self.family,
            planes=planes,
            box_centre=boxes[:, 0:3], box_half=boxes[:, 3:6], box_yaw=boxes[:, 6],
            sphere_centre=spheres[:, 0:3], sphere_radius=spheres[:, 3],
            cyl_centre=cyls[:, 0:2], cyl_radius=cyls[:, 2], cyl_y=cyls[:, 3:5],
            pattern=np.asarray([m["pattern"] for m in mats], dtype=np.int64),
            color_a=np.asarray([m["a"] for m in mats], dtype=np.float64).reshape(-1, 3),
            color_b=np.asarray([m["b"] for m in mats], dtype=np.float64).reshape(-1, 3),
            tex_scale=np.asarray([m["scale"] for m in mats], dtype=np.float64),
            tex_phase=np.asarray([m["phase"] for m in mats], dtype=np.float64),
            light_position=None if light_position is None else np.asarray(light_position, dtype=np.float64),
            light_direction=direction,
            ambient=float(ambient),
            fog_distance=float(fog_distance),
            **kwargs,
        )
        return scene.validate()


def camera_pose(position, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Camera-to-world pose ``(4, 4)`` of a camera at ``position`` (world frame, y down).

    ``yaw`` turns about the vertical (world y) axis (positive: towards +x from +z), ``pitch`` about the camera x
    axis (positive: looks UP, since y points down), ``roll`` about the optical axis; radians.  Identity angles
    give a level camera looking along +z.
    """
    cy_, sy_ = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    r_yaw = np.array([[cy_, 0, sy_], [0, 1, 0], [-sy_, 0, cy_]])
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])  # z -> (0, -sin, cos): up for pitch > 0
    r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    pose = np.eye(4)
    pose[:3, :3] = r_yaw @ r_pitch @ r_roll
    pose[:3, 3] = np.asarray(position, dtype=np.float64)
    return pose


# ------------------------------------------------------------------------------------------------ random materials


def _random_color(rng: np.random.Generator, saturation: tuple[float, float] = (0.1, 0.8),
                  value: tuple[float, float] = (0.25, 0.95)) -> np.ndarray:
    """A random RGB colour from hue / saturation / value."""
    h, s, v = rng.uniform(0, 1), rng.uniform(*saturation), rng.uniform(*value)
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _random_material(rng: np.random.Generator, patterns: tuple[str, ...], scale: tuple[float, float],
                     **color_kwargs) -> dict:
    a = _random_color(rng, **color_kwargs)
    contrast = rng.uniform(0.3, 0.8)
    b = np.clip(a * (1.0 - contrast) + contrast * _random_color(rng) * rng.uniform(0.2, 1.0), 0.0, 1.0)
    return {"pattern": patterns[rng.integers(len(patterns))], "color_a": a, "color_b": b,
            "scale": float(np.exp(rng.uniform(math.log(scale[0]), math.log(scale[1])))),
            "phase": float(rng.uniform(0, 100))}


_ALL = PATTERNS
_SURFACES = ("checker", "stripes", "noise", "bricks", "noise", "solid")


def _far_enough(x: float, z: float, radius: float, keep_out: list[tuple[float, float, float]]) -> bool:
    return all(math.hypot(x - kx, z - kz) > radius + kr for kx, kz, kr in keep_out)


# ------------------------------------------------------------------------------------------------------- rooms


@dataclass(frozen=True)
class RoomLayout:
    """Random ranges of a room's layout (uniform draws; metres unless stated).

    The defaults are the generator's original rooms (so frame ``i`` of a seed stays the same): 3-8 m wide, 3-10 m
    deep, 2.4-3.5 m high, 2-8 furniture boxes, the camera 10-45% of the depth behind the room's centre.

    Attributes:
        width, depth, height: ranges of the room's size along x, z and y.
        boxes: ``(min, max)`` number of furniture boxes tried (inclusive; a box that finds no free spot is dropped).
        camera_depth: range of the camera's z as a fraction of the depth (negative: behind the centre; the far
            wall is then ``(0.5 - fraction) * depth`` metres ahead).
    """

    width: tuple[float, float] = (3.0, 8.0)
    depth: tuple[float, float] = (3.0, 10.0)
    height: tuple[float, float] = (2.4, 3.5)
    boxes: tuple[int, int] = (2, 8)
    camera_depth: tuple[float, float] = (-0.45, -0.1)

    def __post_init__(self) -> None:
        for name in ("width", "depth", "height", "boxes", "camera_depth"):
            value = getattr(self, name)
            if isinstance(value, list):  # YAML / JSON configs
                object.__setattr__(self, name, tuple(value))
                value = tuple(value)
            if len(value) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value) \
                    or value[0] > value[1]:
                raise DatasetError(f"RoomLayout.{name}: expected a (min, max) pair of finite numbers with "
                                   f"min <= max, found {value!r}")
        if self.height[0] < 1.0 or self.width[0] < 1.0 or self.depth[0] < 1.0:
            raise DatasetError(f"RoomLayout: width, depth and height must be >= 1 m, found width {self.width}, "
                               f"depth {self.depth}, height {self.height}")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in self.boxes) or self.boxes[0] < 0:
            raise DatasetError(f"RoomLayout.boxes: expected integers 0 <= min <= max, found {self.boxes!r}")
        if not (-0.5 < self.camera_depth[0] and self.camera_depth[1] < 0.5):
            raise DatasetError(f"RoomLayout.camera_depth: expected fractions in (-0.5, 0.5), found "
                               f"{self.camera_depth!r}")


def sample_room(rng: np.random.Generator, camera_xz: tuple[float, float] | None = None,
                camera_clearance: float = 0.6, layout: RoomLayout | None = None) -> tuple[Scene, dict]:
    """A random room: floor, ceiling and four walls, furniture-like boxes, spheres and cylinders, a point light.

    The room spans ``x in [-w/2, w/2]``, ``z in [-d/2, d/2]``, ``y in [-h, 0]`` (floor at ``y = 0``), with sizes
    and the number of boxes drawn from ``layout`` (default :class:`RoomLayout`).  Objects keep
    ``camera_clearance`` metres (horizontally) away from the camera position (``camera_xz``; drawn here if None),
    so any camera there with a height inside the room sees every object from outside.

    Returns:
        ``(scene, info)`` with ``info = {"camera_xz": (x, z), "size": (w, h, d), "camera_height_max": h}``.
    """
    layout = layout or RoomLayout()
    w, d, h = rng.uniform(*layout.width), rng.uniform(*layout.depth), rng.uniform(*layout.height)
    if camera_xz is None:
        camera_xz = (rng.uniform(-0.3, 0.3) * w, rng.uniform(*layout.camera_depth) * d)
    b = SceneBuilder("room")
    floor = _random_material(rng, ("checker", "noise", "stripes", "bricks"), (0.2, 1.2))
    wall = _random_material(rng, ("solid", "noise", "stripes", "bricks", "checker"), (0.3, 2.0), saturation=(0.0, 0.5))
    b.add_plane((0, -1, 0), 0.0, **floor)                                   # floor, normal up
    b.add_plane((0, 1, 0), -h, **_random_material(rng, ("solid", "noise", "checker"), (0.5, 2.0),
                                                  saturation=(0.0, 0.2), value=(0.6, 0.95)))  # ceiling
    for normal, offset in (((1, 0, 0), -w / 2), ((-1, 0, 0), -w / 2), ((0, 0, 1), -d / 2), ((0, 0, -1), -d / 2)):
        mat = wall if rng.uniform() < 0.7 else _random_material(rng, _SURFACES, (0.3, 2.0))
        b.add_plane(normal, offset, **mat)

    keep_out = [(camera_xz[0], camera_xz[1], camera_clearance)]
    def place(radius: float) -> tuple[float, float] | None:
        for _ in range(12):
            x = rng.uniform(-w / 2 + radius, w / 2 - radius) if w / 2 > radius else 0.0
            z = rng.uniform(-d / 2 + radius, d / 2 - radius) if d / 2 > radius else 0.0
            if _far_enough(x, z, radius, keep_out):
                keep_out.append((x, z, radius))
                return x, z
        return None

    tops: list[tuple[float, float, float]] = []  # (x, z, y_top) of box tops, to put spheres on
    for _ in range(rng.integers(layout.boxes[0], layout.boxes[1] + 1)):
        hx, hz = rng.uniform(0.15, 1.0), rng.uniform(0.15, 1.0)
        hy = rng.uniform(0.15, min(1.0, 0.45 * h))
        spot = place(math.hypot(hx, hz))
        if spot is None:
            continue
        x, z = spot
        yaw = rng.uniform(-math.pi, math.pi) if rng.uniform() < 0.5 else rng.choice([0.0, math.pi / 2])
        b.add_box((x, -hy, z), (hx, hy, hz), yaw, **_random_material(rng, _ALL, (0.1, 0.8)))
        tops.append((x, z, -2 * hy))
    for _ in range(rng.integers(0, 5)):
        r = rng.uniform(0.08, 0.5)
        if tops and rng.uniform() < 0.4:
            x, z, y_top = tops[rng.integers(len(tops))]
            b.add_sphere((x, y_top - r, z), r, **_random_material(rng, _SURFACES, (0.05, 0.4)))
            continue
        spot = place(r)
        if spot is None:
            continue
        y = -r if rng.uniform() < 0.6 else -rng.uniform(r + 0.3, h - r - 0.1)  # on the floor or hanging
        b.add_sphere((spot[0], y, spot[1]), r, **_random_material(rng, _SURFACES, (0.05, 0.4)))
    for _ in range(rng.integers(0, 4)):
        r = rng.uniform(0.08, 0.4)
        spot = place(r)
        if spot is None:
            continue
        top = -h if rng.uniform() < 0.3 else -rng.uniform(0.3, h * 0.8)  # pillar to the ceiling or a barrel
        b.add_cylinder(spot[0], spot[1], r, top, 0.0, **_random_material(rng, _ALL, (0.1, 0.6)))
    light = (rng.uniform(-0.4, 0.4) * w, -h + rng.uniform(0.2, 0.6), rng.uniform(-0.4, 0.4) * d)
    scene = b.build(light_position=light, ambient=rng.uniform(0.2, 0.45))
    return scene, {"camera_xz": camera_xz, "size": (w, h, d), "camera_height_max": h - 0.3}


# ----------------------------------------------------------------------------------------------------- streets


def sample_street(rng: np.random.Generator, camera_xz: tuple[float, float] | None = None,
                  camera_clearance: float = 1.0) -> tuple[Scene, dict]:
    """A random street along +z: ground, two rows of building blocks, a far block across the street, cars
    (boxes), poles and trees (cylinders and spheres), a sun and a sky (rays that hit nothing see the sky).

    Returns:
        ``(scene, info)`` with ``info = {"camera_xz": (x, z), "road_half_width": r, "camera_height_max": 3.0}``.
    """
    road = rng.uniform(3.0, 8.0)            # half width of the road
    walk = rng.uniform(1.5, 4.0)            # sidewalk width
    length = rng.uniform(50.0, 160.0)       # distance to the block that closes the street
    if camera_xz is None:
        camera_xz = (rng.uniform(-0.8, 0.8) * (road + walk * 0.5), rng.uniform(-5.0, 5.0))
    b = SceneBuilder("street")
    b.add_plane((0, -1, 0), 0.0, **_random_material(rng, ("noise", "noise", "checker", "stripes"), (0.3, 3.0),
                                                    saturation=(0.0, 0.15), value=(0.2, 0.55)))
    keep_out = [(camera_xz[0], camera_xz[1], camera_clearance)]
    # Sidewalk kerbs: long low boxes on both sides.
    kerb = _random_material(rng, ("bricks", "checker", "noise"), (0.3, 1.0), saturation=(0.0, 0.2))
    for side in (-1.0, 1.0):
        b.add_box((side * (road + walk / 2), -0.075, length / 2 - 20), (walk / 2, 0.075, length / 2 + 20), 0.0,
                  **kerb)
    # Building rows.
    facade_styles = [_random_material(rng, ("windows", "bricks", "windows", "stripes", "noise"), (1.5, 4.0))
                     for _ in range(3)]
    for side in (-1.0, 1.0):
        z = -30.0
        while z < length:
            width = rng.uniform(6.0, 20.0)
            depth = rng.uniform(8.0, 15.0)
            height = rng.uniform(6.0, 40.0)
            setback = rng.uniform(0.0, 1.5)
            x = side * (road + walk + setback + depth / 2)
            style = dict(facade_styles[rng.integers(len(facade_styles))])
            style["color_a"] = np.clip(style["color_a"] * rng.uniform(0.8, 1.2), 0, 1)
            style["phase"] = float(rng.uniform(0, 100))
            b.add_box((x, -height / 2, z + width / 2), (depth / 2, height / 2, width / 2), 0.0, **style)
            z += width + (rng.uniform(1.0, 6.0) if rng.uniform() < 0.25 else 0.0)
    far = rng.uniform(10.0, 40.0)
    b.add_box((0.0, -far / 2, length + 8.0), (road + walk + 40.0, far / 2, 8.0), 0.0,
              **facade_styles[rng.integers(len(facade_styles))])
    # Cars on the road.
    for _ in range(rng.integers(0, 8)):
        lane = rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.75) * road
        z = rng.uniform(-5.0, min(length - 10.0, 60.0))
        if not _far_enough(lane, z, 2.4, keep_out):
            continue
        keep_out.append((lane, z, 2.4))
        yaw = rng.normal(0.0, 0.05) + (math.pi if lane < 0 else 0.0)
        body = _random_material(rng, ("solid", "solid", "noise", "stripes"), (0.2, 1.0), value=(0.2, 0.95))
        b.add_box((lane, -0.55, z), (0.9, 0.4, 2.2), yaw, **body)
        b.add_box((lane, -1.2, z - 0.2), (0.8, 0.3, 1.2), yaw, **_random_material(rng, ("solid", "noise"), (0.2, 1.0),
                                                                                  value=(0.1, 0.5)))
    # Poles and trees along the sidewalk edges.
    for side in (-1.0, 1.0):
        z = rng.uniform(-10.0, 0.0)
        while z < min(length, 90.0):
            x = side * (road + rng.uniform(0.4, walk - 0.3))
            if _far_enough(x, z, 0.8, keep_out):
                if rng.uniform() < 0.5:
                    top = -rng.uniform(3.0, 8.0)
                    b.add_cylinder(x, z, rng.uniform(0.05, 0.15), top, 0.0,
                                   **_random_material(rng, ("solid", "stripes"), (0.2, 1.0), saturation=(0.0, 0.3)))
                    if rng.uniform() < 0.5:
                        b.add_sphere((x, top - 0.2, z), 0.25, **_random_material(rng, ("solid",), (1.0, 1.0),
                                                                                 value=(0.7, 1.0)))
                else:
                    trunk = rng.uniform(2.0, 4.0)
                    b.add_cylinder(x, z, rng.uniform(0.1, 0.25), -trunk, 0.0,
                                   **_random_material(rng, ("noise", "stripes"), (0.1, 0.5), value=(0.2, 0.45)))
                    crown = rng.uniform(1.0, 2.5)
                    b.add_sphere((x, -trunk - crown * 0.7, z), crown,
                                 **_random_material(rng, ("noise",), (0.2, 0.8), value=(0.2, 0.6)))
                keep_out.append((x, z, 0.8))
            z += rng.uniform(6.0, 20.0)
    elevation = rng.uniform(math.radians(20), math.radians(70))
    azimuth = rng.uniform(-math.pi, math.pi)
    sun = (math.cos(elevation) * math.sin(azimuth), -math.sin(elevation), math.cos(elevation) * math.cos(azimuth))
    zenith = np.array([0.2, 0.4, 0.85]) * rng.uniform(0.8, 1.1)
    horizon = np.clip(np.array([0.75, 0.82, 0.92]) * rng.uniform(0.85, 1.05), 0, 1)
    scene = b.build(light_direction=sun, ambient=rng.uniform(0.25, 0.5), sky_zenith=zenith, sky_horizon=horizon,
                    fog_distance=rng.uniform(150.0, 600.0))
    return scene, {"camera_xz": camera_xz, "road_half_width": road, "camera_height_max": 3.0}
