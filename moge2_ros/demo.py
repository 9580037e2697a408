"""The UNTRAINED demo model: a random-init tiny MoGe-2 whose outputs are shaped but meaningless.

``moge2-ros make-demo-model`` writes it; tests and benchmarks use it where any model of the official format will
do.  It is not the bundled demo model (:mod:`moge2_ros.assets`, trained on synthetic scenes).  Nothing here
downloads anything; real use needs the official weights (e.g. ``Ruicheng/moge-2-vitl-normal``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from moge2_ros.model import MoGe2Model

__all__ = ["UNTRAINED_WARNING", "make_demo_model", "wire_untrained_model"]

UNTRAINED_WARNING = (
    "WARNING: the demo model is UNTRAINED (random weights): its depth, point cloud and intrinsics are "
    "meaningless and only show that the pipeline runs. For real use pass the official weights, e.g. "
    "--model Ruicheng/moge-2-vitl-normal (needs the 'hub' extra and a network) or a downloaded model.pt."
)


#: Added to the mask head's output bias of the demo model (logit; +3 -> probability ~0.95 for a zero input).
MASK_LOGIT_BIAS = 3.0


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
    wire_untrained_model(model)
    extra = {} if Path(path).suffix == ".safetensors" else {"note": "untrained random-init demo model"}
    return save_checkpoint(model, path, **extra)


def wire_untrained_model(model: "MoGe2Model") -> None:
    """Give a random-init model (any configuration) shaped outputs, in place: the point head describes a pinhole
    camera (:func:`_wire_pinhole_points`) and the mask head's last bias is raised by :data:`MASK_LOGIT_BIAS`.

    A random mask head predicts "invalid" (probability < 0.5) almost everywhere, which would leave the outputs
    empty, and a random point head implies a degenerate camera.  The model stays UNTRAINED; its cost per frame is
    unchanged (only weight values change), which is what benchmarks of random-weight configurations need.
    """
    import torch

    _wire_pinhole_points(model)
    convs = [m for m in model.mask_head.modules() if isinstance(m, torch.nn.Conv2d)]
    if convs and convs[-1].bias is not None and convs[-1].out_channels == 1:
        with torch.no_grad():
            convs[-1].bias += MASK_LOGIT_BIAS
