"""MoGe-2: DINOv2 encoder, conv neck, point / normal / mask heads and the CLS-token metric-scale MLP.

:meth:`MoGe2Model.forward` returns the raw maps exactly like the official ``MoGeModel.forward``;
:meth:`MoGe2Model.infer` reproduces the official ``infer`` (same arguments, same outputs) so that code written
for the official package runs unchanged.  Everything after the forward pass lives in
:mod:`moge2_ros.geometry` and is shared with the robot-facing :class:`moge2_ros.Predictor`.

The forward is written once, as the composition of three public pieces that backends reuse:

1. :meth:`MoGe2Model.grid_inputs` — the size-dependent inputs of the core (:class:`GridInputs`): the token grid,
   the encoder-sized image, the positional embeddings, the five uv conditioning grids;
2. :meth:`MoGe2Model.core` — normalisation, ViT, projections, neck, heads and scale MLP: everything whose shapes
   depend only on ``(B, rows, cols)`` (what ``torch.compile`` compiles once per token grid);
3. :meth:`MoGe2Model.finish_outputs` — the resize to the image size and the output activations.

Steps 1 and 3 take a :class:`~moge2_ros.model.size_ops.SizeOps` strategy for their primitive operations (resizes,
``linspace``); the ONNX exporter passes its export variant and otherwise traces this very forward.

References: Wang et al., "MoGe-2: Accurate Monocular Geometry with Metric Scale and Sharp Details", 2025.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, InputError
from ..geometry.postprocess import recover_geometry
from ..geometry.uv import grid_from_axes, view_plane_axes
from .config import HEADS, NUM_LEVELS, EncoderConfig, MoGe2Config
from .conv_stack import ConvStack
from .size_ops import EAGER, Number, Size, SizeOps, as_number, grid_size, token_grid
from .vit import VisionTransformer

PATCH_SIZE = 14
#: Keys of :meth:`MoGe2Model.forward`'s dict in order (also the official ONNX outputs); a model has a subset.
OUTPUT_NAMES = ("points", "normal", "mask", "metric_scale")
#: Output -> the module that produces it.
_HEAD_OF = {"points": "points_head", "normal": "normal_head", "mask": "mask_head", "metric_scale": "scale_head"}
_MAP_OUTPUTS = ("points", "normal", "mask")


class GridInputs(NamedTuple):
    """Size-dependent inputs of :meth:`MoGe2Model.core` (``core(*inputs)``).

    Attributes:
        image14: ``(B, 3, 14·rows, 14·cols)`` image resized to the token grid, RGB in [0, 1] (not normalised).
        pos_embed: ``(1, 1 + rows·cols, E)`` positional embeddings (class token first).
        uv: five ``(B, 2, rows·2^l, cols·2^l)`` normalised view-plane grids (u, v channels), l = 0..4.
    """

    image14: torch.Tensor
    pos_embed: torch.Tensor
    uv: list[torch.Tensor]


class DINOv2Encoder(nn.Module):
    """Resize (antialiased bilinear) to the token grid, normalise, run the ViT, project and sum the taken layers.

    ``forward(image (B,3,H,W) in [0,1], rows, cols)`` -> ``(features (B, dim_out, rows, cols), cls (B, E))``,
    ``cls`` being the class token of the last taken block after the final LayerNorm.  It is
    :meth:`encode` of :meth:`resize_input` and the backbone's positional embeddings; the model calls the pieces.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.layers = cfg.layer_indices()
        self.backbone = VisionTransformer(cfg.backbone)
        width = cfg.backbone.embed_dim
        self.output_projections = nn.ModuleList(nn.Conv2d(width, cfg.dim_out, kernel_size=1) for _ in self.layers)
        # Persistent buffers: checkpoints carry them (possibly fp16-rounded), so they are loaded, not hard-coded.
        self.register_buffer("image_mean", torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1))

    def resize_input(self, image: torch.Tensor, rows: Size, cols: Size, ops: SizeOps = EAGER) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, 3, 14·rows, 14·cols)``: antialiased bilinear (plain bilinear when
        ``ops.official_compatible``)."""
        return ops.resize_bilinear(image, rows * PATCH_SIZE, cols * PATCH_SIZE, antialias=not ops.official_compatible)

    def encode(self, image14: torch.Tensor, pos_embed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalise, ViT with ``pos_embed`` ``(1, 1 + rows·cols, E)``, project and sum the taken layers.

        Returns:
            ``(features (B, dim_out, rows, cols), cls (B, E))`` for ``image14`` ``(B, 3, 14·rows, 14·cols)``.
        """
        x = (image14 - self.image_mean) / self.image_std
        rows, cols = x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE
        taken = self.backbone.forward_layers(x, pos_embed, self.layers)
        projected = [
            proj(tokens.permute(0, 2, 1).unflatten(2, (rows, cols)).contiguous())
            for proj, (tokens, _) in zip(self.output_projections, taken)
        ]
        return torch.stack(projected, dim=1).sum(dim=1), taken[-1][1]

    def forward(self, image: torch.Tensor, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
        pos_embed = self.backbone.interpolate_pos_encoding(rows, cols, image.dtype)
        return self.encode(self.resize_input(image, rows, cols), pos_embed)


def decoder_channels_last(features: torch.Tensor) -> bool:
    """Whether :meth:`MoGe2Model.core` runs the conv decoder (neck and heads) on channels-last activations.

    Yes in eager CPU inference: oneDNN's convolutions, transposed convolutions, bilinear upsampling and replicate
    padding work natively on channels-last data, and the decoder's inputs otherwise arrive in mixed layouts (the uv
    grids are channels-last views, the encoder features are not), so the kernels reorder between formats at every
    level.  Measured on an AVX-512 CPU with one thread (torch 2.13, 640x480, 1200 tokens): the reference model's
    decoder 214 -> 166 ms, the v2.json decoder 2.72 -> 2.03 s per frame (docs/BENCHMARKS.md, section "Official
    MoGe-2 code vs moge2_ros").  The weights keep their layout (a channels-last input is enough for oneDNN to
    choose its channels-last kernels), so state dicts are unchanged; values differ from the NCHW kernels only by
    float32 rounding (1e-6 relative).  Other devices keep the layout they are given
    (:class:`~moge2_ros.backends.torch_options.TorchOptions` ``channels_last`` chooses there), and so do traced
    graphs (``torch.compile``, ONNX export), which make their own layout decisions.
    """
    return features.device.type == "cpu" and not torch.compiler.is_compiling()


def make_mlp(dims: list[int]) -> nn.Sequential:
    """Linear, ReLU, ..., Linear (no activation after the last layer)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        if i > 0:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


class MoGe2Model(nn.Module):
    """The MoGe-2 network.  Build from a :class:`MoGe2Config` (or an official ``model_config`` dict)."""

    def __init__(self, config: MoGe2Config | Mapping[str, Any]) -> None:
        super().__init__()
        if not isinstance(config, MoGe2Config):
            config = MoGe2Config.from_dict(config)
        self.config = config
        self.encoder = DINOv2Encoder(config.encoder)
        self.neck = ConvStack(config.neck)
        for name in HEADS:
            head_cfg = getattr(config, name)
            if head_cfg is not None:
                setattr(self, name, ConvStack(head_cfg))
        if config.scale_head is not None:
            self.scale_head = make_mlp(config.scale_head.dims)
        self.remap_output = config.remap_output
        self.num_tokens_range = list(config.num_tokens_range)

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def has_head(self, name: str) -> bool:
        """Whether the model has ``name`` in {'points_head', 'normal_head', 'mask_head', 'scale_head'}."""
        return hasattr(self, name)

    @property
    def output_names(self) -> list[str]:
        """The keys of :meth:`forward`'s dict for this model, in :data:`OUTPUT_NAMES` order."""
        return [name for name in OUTPUT_NAMES if self.has_head(_HEAD_OF[name])]

    def conv_decoder(self) -> list[nn.Module]:
        """The convolutional decoder: the neck and the map heads the model has (where channels-last helps)."""
        return [self.neck, *(getattr(self, _HEAD_OF[k]) for k in _MAP_OUTPUTS if self.has_head(_HEAD_OF[k]))]

    def num_tokens_for_level(self, resolution_level: int) -> int:
        """Official mapping of a resolution level 0..9 to a token budget inside ``num_tokens_range``."""
        if not 0 <= resolution_level <= 9:
            raise InputError(f"resolution_level must be in [0, 9], found {resolution_level}")
        lo, hi = self.num_tokens_range
        return int(lo + (resolution_level / 9) * (hi - lo))

    # ------------------------------------------------------------------ forward
    def grid_inputs(self, image: torch.Tensor, num_tokens: int | torch.Tensor, ops: SizeOps = EAGER) -> GridInputs:
        """Step 1 of :meth:`forward`: the size-dependent inputs of :meth:`core` for a ``(B, 3, H, W)`` image.

        The token grid is :func:`~moge2_ros.model.size_ops.token_grid` of ``num_tokens`` at ``ar = W / H``; the
        image is resized to ``14·rows × 14·cols``; the positional embeddings are interpolated to the grid; the uv
        grids cover the image's aspect ratio at ``rows·2^l × cols·2^l``, l = 0..4.  Tensors take ``image``'s dtype.
        """
        batch, _, height, width = image.shape
        aspect_ratio = as_number(width) / as_number(height)
        rows, cols = token_grid(num_tokens, aspect_ratio)
        rows, cols = grid_size(rows), grid_size(cols)
        image14 = self.encoder.resize_input(image, rows, cols, ops)
        pos_embed = self.encoder.backbone.interpolate_pos_encoding(rows, cols, image.dtype, ops)
        uv = self._uv_grids(rows, cols, aspect_ratio, batch, image.dtype, image.device, ops)
        return GridInputs(image14, pos_embed, uv)

    def _uv_grids(self, rows: Size, cols: Size, aspect_ratio: Number, batch: Size, dtype: torch.dtype,
                  device: torch.device, ops: SizeOps) -> list[torch.Tensor]:
        """The decoder's uv conditioning, ``(B, 2, rows·2^l, cols·2^l)`` for l = 0..4 (NOTES.md §2.9)."""
        grids = []
        for level in range(NUM_LEVELS):
            u, v = view_plane_axes(cols * 2**level, rows * 2**level, aspect_ratio, dtype, device, linspace=ops.linspace)
            grids.append(grid_from_axes(u, v).permute(2, 0, 1).unsqueeze(0).expand(batch, -1, -1, -1))
        return grids

    def core(self, image14: torch.Tensor, pos_embed: torch.Tensor, uv: Sequence[torch.Tensor]
             ) -> dict[str, torch.Tensor]:
        """Step 2 of :meth:`forward` (arguments: a :class:`GridInputs`): normalise, ViT, projections, neck, heads and
        scale MLP — the part whose shapes depend only on ``(B, rows, cols)``.  On the CPU the neck and heads run on
        channels-last activations (:func:`decoder_channels_last`).

        Returns:
            ``points`` / ``normal`` / ``mask``: raw head maps ``(B, C, 16·rows, 16·cols)`` (before the resize and the
            activations) for the heads the model has; ``metric_scale``: ``(B,)`` (already ``exp``-ed).
        """
        features, cls_token = self.encoder.encode(image14, pos_embed)
        neck_in = [torch.cat([features, uv[0]], dim=1), *uv[1:]]
        if decoder_channels_last(features):
            neck_in = [x.contiguous(memory_format=torch.channels_last) for x in neck_in]
        neck_out = self.neck(neck_in)
        raw = {key: getattr(self, _HEAD_OF[key])(neck_out)[-1] for key in _MAP_OUTPUTS if self.has_head(_HEAD_OF[key])}
        if self.has_head("scale_head"):
            raw["metric_scale"] = self.scale_head(cls_token).squeeze(1).exp()
        return raw

    def finish_outputs(self, raw: Mapping[str, torch.Tensor], height: Size, width: Size, ops: SizeOps = EAGER
                       ) -> dict[str, torch.Tensor]:
        """Step 3 of :meth:`forward`: resize :meth:`core`'s maps to ``height × width`` (bilinear, no antialias), then
        apply the output activations: ``points`` ``(B, H, W, 3)`` remapped (for 'exp' the interpolation thus happens
        in log-depth), ``normal`` ``(B, H, W, 3)`` unit, ``mask`` ``(B, H, W)`` sigmoid; ``metric_scale`` passes
        through."""
        maps = {k: ops.resize_bilinear(raw[k], height, width, antialias=False) for k in _MAP_OUTPUTS if k in raw}
        out: dict[str, torch.Tensor] = {}
        if "points" in maps:
            out["points"] = self._remap_points(maps["points"].permute(0, 2, 3, 1))
        if "normal" in maps:
            out["normal"] = F.normalize(maps["normal"].permute(0, 2, 3, 1), dim=-1)
        if "mask" in maps:
            out["mask"] = maps["mask"].squeeze(1).sigmoid()
        if "metric_scale" in raw:
            out["metric_scale"] = raw["metric_scale"]
        return out

    def _remap_points(self, points: torch.Tensor) -> torch.Tensor:
        if self.remap_output == "linear":
            return points
        if self.remap_output == "sinh":
            return torch.sinh(points)
        xy, z = points.split([2, 1], dim=-1)
        if self.remap_output == "exp":
            z = torch.exp(z)
            return torch.cat([xy * z, z], dim=-1)
        if self.remap_output == "sinh_exp":
            return torch.cat([torch.sinh(xy), torch.exp(z)], dim=-1)
        raise ConfigError(f"unknown remap_output {self.remap_output!r}")

    def forward(self, image: torch.Tensor, num_tokens: int | torch.Tensor, ops: SizeOps = EAGER
                ) -> dict[str, torch.Tensor]:
        """Raw network outputs, exactly as the official forward: ``finish_outputs(core(*grid_inputs(...)))``.

        Args:
            image: ``(B, 3, H, W)`` RGB in [0, 1].
            num_tokens: ViT token budget (int or 0-d tensor).
            ops: how the size-dependent steps compute their primitives (default: eager PyTorch).
        Returns:
            Dict with (only for the heads the model has, in :data:`OUTPUT_NAMES` order) ``points`` ``(B, H, W, 3)``
            affine-invariant point map (up to scale and z-shift), ``normal`` ``(B, H, W, 3)`` unit normals, ``mask``
            ``(B, H, W)`` validity probability, ``metric_scale`` ``(B,)``.
        """
        raw = self.core(*self.grid_inputs(image, num_tokens, ops))
        return self.finish_outputs(raw, image.shape[-2], image.shape[-1], ops)

    # ------------------------------------------------------------------ official-compatible inference
    @torch.inference_mode()
    def infer(
        self,
        image: torch.Tensor,
        num_tokens: int | None = None,
        resolution_level: int = 9,
        force_projection: bool = True,
        apply_mask: bool = True,
        fov_x: float | torch.Tensor | None = None,
        use_fp16: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """Official ``MoGeModel.infer``: same arguments, same outputs.

        Args:
            image: ``(3, H, W)`` or ``(B, 3, H, W)`` RGB in [0, 1].
            num_tokens: token budget; None -> from ``resolution_level`` (0..9) within ``num_tokens_range``.
            force_projection: recompute points from depth and intrinsics (pinhole-consistent output).
            apply_mask: +inf points / depth and zero normals outside the predicted mask.
            fov_x: known horizontal field of view in DEGREES (centred principal point); None -> estimated.
            use_fp16: run the network under float16 autocast.  None (default) = on CUDA only: the official
                default is True everywhere, but CPU float16 autocast is ~10x slower than float32 in torch 2.13
                (27.2 s vs 2.6 s measured on the reference model, 240x320), so CPU defaults to float32.
                An explicit True is honoured on every device.
        Returns:
            ``points`` (B,H,W,3) metric (or relative without a scale head), ``depth`` (B,H,W), ``intrinsics``
            (B,3,3) NORMALISED (image spans [0,1]), ``mask`` (B,H,W) bool, ``normal`` (B,H,W,3) if present;
            batch dim removed for a 3-D input.  Outside the mask: +inf (points, depth), 0 (normal).
        """
        squeeze = image.dim() == 3
        if squeeze:
            image = image.unsqueeze(0)
        if image.dim() != 4 or image.shape[1] != 3:
            raise InputError(f"infer: expected an image (3, H, W) or batch (B, 3, H, W), found shape {tuple(image.shape)}")
        image = image.to(dtype=self.dtype, device=self.device)
        if num_tokens is None:
            num_tokens = self.num_tokens_for_level(resolution_level)
        if use_fp16 is None:
            use_fp16 = self.device.type == "cuda"
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=use_fp16 and self.dtype != torch.float16):
            raw = self.forward(image, num_tokens=num_tokens)
        raw = {k: v.float() for k, v in raw.items()}
        if isinstance(fov_x, torch.Tensor):
            fov_x = fov_x.float()
        result: dict[str, torch.Tensor] = {}
        if "points" in raw:
            geo = recover_geometry(raw["points"], raw.get("mask"), raw.get("metric_scale"), fov_x=fov_x,
                                   force_projection=force_projection)
            result.update(points=geo.points, intrinsics=geo.intrinsics, depth=geo.depth)
            mask = geo.mask
        else:
            mask = raw["mask"] > 0.5 if "mask" in raw else None
        if mask is not None:
            result["mask"] = mask
        if "normal" in raw:
            result["normal"] = raw["normal"]
        if apply_mask and mask is not None:
            if "points" in result:
                result["points"] = torch.where(mask[..., None], result["points"], torch.inf)
                result["depth"] = torch.where(mask, result["depth"], torch.inf)
            if "normal" in result:
                result["normal"] = torch.where(mask[..., None], result["normal"], torch.zeros_like(result["normal"]))
        if squeeze:
            result = {k: v.squeeze(0) for k, v in result.items()}
        return result
