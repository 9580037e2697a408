"""MoGe-2's forward pass split at its size-dependent steps, shared by the ONNX exporter and the compiled torch path.

:meth:`MoGe2Model.forward` mixes two kinds of work: steps whose shapes depend only on the token grid (the ViT,
the conv neck and heads: the expensive part) and cheap steps that depend on the image size and aspect ratio
(the antialiased encoder resize, the positional-embedding interpolation, the uv conditioning grids, the output
resize).  Here the forward is cut into

1. :class:`GridInputs` — the size-dependent inputs of the core: the encoder-sized image, positional embeddings,
   the five uv grids (computed by :func:`eager_grid_inputs` with the model's own functions, or by the exporter with
   export-friendly tensor maths);
2. :func:`network_core` — everything whose shapes depend only on ``(B, rows, cols)``; it returns the raw head maps
   at ``16·rows × 16·cols`` and the metric scale;
3. :func:`finish_outputs` — the resize to the image size and the output activations.

``finish_outputs(model, network_core(model, eager_grid_inputs(model, image, n)), H, W)`` performs exactly the
operations of ``model(image, n)`` in the same order (bit-identical; tested), so a backend that compiles or exports
the core and recomputes the rest agrees with eager PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..geometry.uv import normalized_view_plane_uv
from ..model.moge2 import PATCH_SIZE, MoGe2Model, token_grid

#: Output names and order of the exported graph (the official ONNX I/O); a model exports those it has.
OUTPUT_NAMES = ("points", "normal", "mask", "metric_scale")
_MAP_HEADS = ("points", "normal", "mask")
NUM_LEVELS = 5


@dataclass
class GridInputs:
    """Size-dependent inputs of :func:`network_core`.

    Attributes:
        image14: ``(B, 3, 14·rows, 14·cols)`` image resized to the token grid, RGB in [0, 1] (not normalised).
        pos_embed: ``(1, 1 + rows·cols, E)`` positional embeddings (class token first).
        uv: five ``(B, 2, rows·2^l, cols·2^l)`` normalised view-plane grids (u, v channels), l = 0..4.
    """

    image14: torch.Tensor
    pos_embed: torch.Tensor
    uv: list[torch.Tensor]


def uv_levels(rows: int, cols: int, aspect_ratio: float, batch: int, dtype: torch.dtype, device: torch.device
              ) -> list[torch.Tensor]:
    """The five uv conditioning grids of the decoder, ``(B, 2, rows·2^l, cols·2^l)`` (NOTES.md §2.9)."""
    grids = []
    for level in range(NUM_LEVELS):
        uv = normalized_view_plane_uv(width=cols * 2**level, height=rows * 2**level, aspect_ratio=aspect_ratio,
                                      dtype=dtype, device=device)
        grids.append(uv.permute(2, 0, 1).unsqueeze(0).expand(batch, -1, -1, -1))
    return grids


def eager_grid_inputs(model: MoGe2Model, image: torch.Tensor, num_tokens: int) -> GridInputs:
    """:class:`GridInputs` for a ``(B, 3, H, W)`` image computed with the model's own (eager PyTorch) functions."""
    batch, _, height, width = image.shape
    aspect_ratio = width / height
    rows, cols = token_grid(num_tokens, aspect_ratio)
    image14 = F.interpolate(image, (rows * PATCH_SIZE, cols * PATCH_SIZE), mode="bilinear", align_corners=False,
                            antialias=True)
    backbone = model.encoder.backbone
    pos = backbone.interpolate_pos_encoding(rows * cols, rows * PATCH_SIZE, cols * PATCH_SIZE, image.dtype)
    return GridInputs(image14, pos, uv_levels(rows, cols, aspect_ratio, batch, image.dtype, image.device))


def network_core(model: MoGe2Model, inputs: GridInputs) -> dict[str, torch.Tensor]:
    """Normalise, ViT, projections, neck and heads: the part whose shapes depend only on ``(B, rows, cols)``.

    Returns:
        ``points`` / ``normal`` / ``mask``: raw head maps ``(B, C, 16·rows, 16·cols)`` (before the resize and
        activations) for the heads the model has; ``metric_scale``: ``(B,)`` (already ``exp``-ed).
    """
    encoder, backbone = model.encoder, model.encoder.backbone
    x = (inputs.image14 - encoder.image_mean) / encoder.image_std
    rows, cols = x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE
    tokens = backbone.patch_embed(x)
    tokens = torch.cat([backbone.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
    tokens = tokens + inputs.pos_embed
    taken = []
    for i, block in enumerate(backbone.blocks[: max(encoder.layers) + 1]):
        tokens = block(tokens)
        if i in encoder.layers:
            normed = backbone.norm(tokens)
            taken.append((normed[:, 1:], normed[:, 0]))
    projected = [proj(patches.permute(0, 2, 1).unflatten(2, (rows, cols)).contiguous())
                 for proj, (patches, _) in zip(encoder.output_projections, taken)]
    features = torch.stack(projected, dim=1).sum(dim=1)
    levels: list[torch.Tensor | None] = [torch.cat([features, inputs.uv[0]], dim=1), *inputs.uv[1:]]
    neck_out = model.neck(levels)
    raw = {key: getattr(model, f"{key}_head")(neck_out)[-1] for key in _MAP_HEADS if model.has_head(f"{key}_head")}
    if model.has_head("scale_head"):
        raw["metric_scale"] = model.scale_head(taken[-1][1]).squeeze(1).exp()
    return raw


Resize = Callable[[torch.Tensor, int, int], torch.Tensor]


def _interpolate_bilinear(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return F.interpolate(x, (height, width), mode="bilinear", align_corners=False, antialias=False)


def finish_outputs(model: MoGe2Model, raw: dict[str, torch.Tensor], height: int, width: int,
                   resize: Resize = _interpolate_bilinear) -> dict[str, torch.Tensor]:
    """Resize the raw maps to ``height × width`` (bilinear, no antialias) and apply the output activations.

    Returns the dict of :meth:`MoGe2Model.forward`: ``points`` ``(B, H, W, 3)``, ``normal`` ``(B, H, W, 3)``,
    ``mask`` ``(B, H, W)``, ``metric_scale`` ``(B,)`` — those the model has.
    """
    maps = {k: resize(v, height, width) for k, v in raw.items() if k in _MAP_HEADS}
    out = model.activate_maps(maps)
    if "metric_scale" in raw:
        out["metric_scale"] = raw["metric_scale"]
    return out


def split_forward(model: MoGe2Model, image: torch.Tensor, num_tokens: int,
                  core: Callable[[GridInputs], dict[str, torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
    """``model(image, num_tokens)`` computed through the three parts; ``core`` replaces :func:`network_core`
    (e.g. a ``torch.compile``-d version)."""
    inputs = eager_grid_inputs(model, image, num_tokens)
    raw = core(inputs) if core is not None else network_core(model, inputs)
    return finish_outputs(model, raw, image.shape[-2], image.shape[-1])
