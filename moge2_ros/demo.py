"""Offline demo material: a procedurally rendered example image and an UNTRAINED demo model.

Nothing here downloads anything. The random-init demo model only exercises the pipeline end to end; its depth,
points and intrinsics are meaningless. Real use needs the official weights (e.g. ``Ruicheng/moge-2-vitl-normal``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from moge2_ros.data.synthetic_scene import Scene
    from moge2_ros.model import MoGe2Model

UNTRAINED_WARNING = (
    "WARNING: the demo model is UNTRAINED (random weights): its depth, point cloud and intrinsics are "
    "meaningless and only show that the pipeline runs. For real use pass the official weights, e.g. "
    "--model Ruicheng/moge-2-vitl-normal (needs the 'hub' extra and a network) or a downloaded model.pt."
)


#: Added to the mask head's output bias of the demo model (logit; +3 -> probability ~0.95 for a zero input).
MASK_LOGIT_BIAS = 3.0


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


#: Focal length (in half-diagonal units) wired into the untrained demo model: 60 degrees across a 4:3 image.
DEMO_FOCAL = 0.8 / math.tan(math.radians(30.0))


def _wire_pinhole_points(model: "MoGe2Model", focal: float = DEMO_FOCAL) -> None:
    """Make an untrained model's point head describe a pinhole camera, so its estimated camera is sane.

    A random point head implies an arbitrary, often negative, focal length, and the Predictor rejects such
    frames. Here the uv plane that conditions the decoder is routed straight through the last level of the neck
    and of the point head into the raw x, y outputs (``x' = u / focal``, ``y' = v / focal``), while the raw z
    keeps (damped) random weights. With the 'exp' remap the points are then ``(u, v, focal) * exp(z') / focal``:
    an exact pinhole with that focal (fov_x = 60 degrees at 4:3) and meaningless depth. Still UNTRAINED.
    """
    import torch

    neck, head = model.neck, model.points_head
    with torch.no_grad():
        for conv in (neck.input_blocks[-1], head.input_blocks[-1]):
            conv.weight[:2].zero_()
            conv.bias[:2].zero_()
        neck.input_blocks[-1].weight[0, 0] = neck.input_blocks[-1].weight[1, 1] = 1.0  # channels 0, 1 <- uv
        head.input_blocks[-1].weight[0, 0] = head.input_blocks[-1].weight[1, 1] = 1.0
        for resampler in (neck.resamplers[-1], head.resamplers[-1]):  # nothing else reaches channels 0, 1
            resampler[-1].weight[:2].zero_()
            resampler[-1].bias[:2].zero_()
        out = head.output_blocks[-1]
        out.weight[:2].zero_()
        out.bias.zero_()
        out.weight[0, 0] = out.weight[1, 1] = 1.0 / focal
        out.weight[2] *= 0.2


def make_demo_model(path: str | Path, seed: int = 0) -> Path:
    """Build a random-init :meth:`MoGe2Config.tiny` model and save it as an official-format checkpoint.

    The model is UNTRAINED (see :data:`UNTRAINED_WARNING`).

    Args:
        path: output ``.pt`` (or ``.safetensors``) file; parent folders are created.
        seed: torch random seed, for a reproducible file.
    """
    import torch

    from moge2_ros.checkpoints import save_checkpoint
    from moge2_ros.model import MoGe2Config, MoGe2Model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MoGe2Model(MoGe2Config.tiny())
    model.eval()
    # A random mask head predicts "invalid" (probability < 0.5) almost everywhere, which would leave the demo
    # outputs empty. Bias its last convolution towards "valid" so that the (still meaningless) depth, preview
    # and point cloud have content.
    _wire_pinhole_points(model)
    convs = [m for m in model.mask_head.modules() if isinstance(m, torch.nn.Conv2d)]
    if convs and convs[-1].bias is not None and convs[-1].out_channels == 1:
        with torch.no_grad():
            convs[-1].bias += MASK_LOGIT_BIAS
    extra = {} if Path(path).suffix == ".safetensors" else {"note": "untrained random-init demo model"}
    return save_checkpoint(model, path, **extra)
