"""The example room: a fixed scene of the procedural generator with exact ground truth (no download).

:func:`render_example_scene` renders it for ``moge2-ros make-example-image``, the demo camera
(:mod:`moge2_ros.ros.demo_camera`), the tests and the benchmarks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from moge2_ros.data.synthetic_scene import Scene

__all__ = ["ExampleScene", "example_room", "render_example_scene"]


@dataclass(frozen=True)
class ExampleScene:
    """A rendered example frame with exact ground truth.

    Attributes:
        rgb: ``(H, W, 3)`` uint8 image.
        depth: ``(H, W)`` float32 ground-truth depth (z) in metres, optical frame.
        intrinsics: ``(3, 3)`` float64 pinhole matrix in pixels (pixel centre of column j at x = j).
    """

    rgb: np.ndarray
    depth: np.ndarray
    intrinsics: np.ndarray


def example_room() -> "Scene":
    """The example room as a scene of the synthetic generator (:mod:`moge2_ros.data.synthetic`).

    Room frame = the generator's world frame (x right, y down, z forward): x in [-2, 2] m, floor at y = 1.2 m,
    ceiling at y = -1.5 m, back wall at z = 7 m, a checker floor, coloured walls, two spheres and a point light.
    """
    from moge2_ros.data.synthetic import SceneBuilder

    walls = dict(pattern="solid")
    builder = (
        SceneBuilder("room")
        .add_plane((0, -1, 0), -1.2, pattern="checker", color_a=(0.85, 0.83, 0.77), color_b=(0.25, 0.25, 0.27),
                   scale=1.0)
        .add_plane((0, 1, 0), -1.5, color_a=(0.92, 0.92, 0.88), **walls)
        .add_plane((1, 0, 0), -2.0, color_a=(0.80, 0.35, 0.30), **walls)
        .add_plane((-1, 0, 0), -2.0, color_a=(0.30, 0.55, 0.80), **walls)
        .add_plane((0, 0, -1), -7.0, color_a=(0.85, 0.80, 0.55), **walls)
        .add_sphere((-0.7, 0.75, 3.2), 0.45, color_a=(0.9, 0.6, 0.15), **walls)
        .add_sphere((0.9, 0.5, 4.6), 0.7, color_a=(0.25, 0.75, 0.35), **walls)
    )
    return builder.build(light_position=(0.3, -1.2, 2.5), ambient=0.3)


def render_example_scene(
    width: int = 640,
    height: int = 480,
    fov_x_deg: float = 60.0,
    camera_position: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> ExampleScene:
    """Render :func:`example_room` with the synthetic generator's ray caster (exact depth, shading, shadows).

    The camera looks along +z from ``camera_position`` (metres, room frame; keep it inside the room), with a
    centred principal point and square pixels, so a sequence of positions renders a moving camera.  Depth and
    intrinsics are those of that camera.

    Args:
        width, height: image size in pixels (>= 8 each).
        fov_x_deg: horizontal field of view in degrees, in (10, 150).
        camera_position: camera centre in the room frame, metres.
    """
    from moge2_ros.data.synthetic import camera_pose, render_scene

    if width < 8 or height < 8:
        raise ValueError(f"example image size must be at least 8x8 pixels, got {width}x{height}")
    if not 10.0 < fov_x_deg < 150.0:
        raise ValueError(f"fov_x_deg must be in (10, 150), got {fov_x_deg}")
    f = 0.5 * width / math.tan(math.radians(fov_x_deg) / 2)
    intrinsics = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], dtype=np.float64)
    sample = render_scene(example_room(), intrinsics, camera_pose(camera_position), width, height,
                          source="example_room")
    return ExampleScene(rgb=sample.image, depth=sample.depth, intrinsics=intrinsics)
