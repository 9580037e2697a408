"""MoGe-2: DINOv2 encoder, conv neck, point / normal / mask heads and the CLS-token metric-scale MLP.

:meth:`MoGe2Model.forward` returns the raw maps exactly like the official ``MoGeModel.forward``;
:meth:`MoGe2Model.infer` reproduces the official ``infer`` (same arguments, same outputs) so that code written
for the official package runs unchanged.  Everything after the forward pass lives in
:mod:`moge2_ros.geometry` and is shared with the robot-facing :class:`moge2_ros.Predictor`.

References: Wang et al., "MoGe-2: Accurate Monocular Geometry with Metric Scale and Sharp Details", 2025.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, InputError
from ..geometry.postprocess import recover_geometry
from ..geometry.uv import normalized_view_plane_uv
from .config import HEADS, EncoderConfig, MoGe2Config
from .conv_stack import ConvStack
from .vit import VisionTransformer

PATCH_SIZE = 14


class DINOv2Encoder(nn.Module):
    """Resize (antialiased bilinear) to the token grid, normalise, run the ViT, project and sum the taken layers.

    ``forward(image (B,3,H,W) in [0,1], rows, cols)`` -> ``(features (B, dim_out, rows, cols), cls (B, E))``,
    ``cls`` being the class token of the last taken block after the final LayerNorm.
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

    def forward(self, image: torch.Tensor, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.interpolate(image, (rows * PATCH_SIZE, cols * PATCH_SIZE), mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.image_mean) / self.image_std
        taken = self.backbone.get_intermediate_layers(x, self.layers)
        projected = [
            proj(tokens.permute(0, 2, 1).unflatten(2, (rows, cols)).contiguous())
            for proj, (tokens, _) in zip(self.output_projections, taken)
        ]
        return torch.stack(projected, dim=1).sum(dim=1), taken[-1][1]


def make_mlp(dims: list[int]) -> nn.Sequential:
    """Linear, ReLU, ..., Linear (no activation after the last layer)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        if i > 0:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


def token_grid(num_tokens: int | torch.Tensor, aspect_ratio: float) -> tuple[Any, Any]:
    """Token rows and columns for a budget of ``num_tokens`` at ``aspect_ratio = W / H``.

    ``rows = round(sqrt(n / ar))``, ``cols = round(sqrt(n * ar))`` (Python round: half to even); a tensor
    budget gives tensor results (``.round().long()``).  ``rows * cols`` generally differs from ``n``.
    """
    rows, cols = (num_tokens / aspect_ratio) ** 0.5, (num_tokens * aspect_ratio) ** 0.5
    if isinstance(rows, torch.Tensor):
        return rows.round().long(), cols.round().long()
    return round(rows), round(cols)


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

    def num_tokens_for_level(self, resolution_level: int) -> int:
        """Official mapping of a resolution level 0..9 to a token budget inside ``num_tokens_range``."""
        if not 0 <= resolution_level <= 9:
            raise InputError(f"resolution_level must be in [0, 9], found {resolution_level}")
        lo, hi = self.num_tokens_range
        return int(lo + (resolution_level / 9) * (hi - lo))

    # ------------------------------------------------------------------ forward
    def activate_maps(self, maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Output activations of the head maps already resized to the image, ``(B, C, H, W)`` each:
        ``points`` ``(B, H, W, 3)`` remapped, ``normal`` ``(B, H, W, 3)`` unit, ``mask`` ``(B, H, W)`` sigmoid
        (those present in ``maps``; other keys are ignored)."""
        out: dict[str, torch.Tensor] = {}
        if "points" in maps:
            out["points"] = self._remap_points(maps["points"].permute(0, 2, 3, 1))
        if "normal" in maps:
            out["normal"] = F.normalize(maps["normal"].permute(0, 2, 3, 1), dim=-1)
        if "mask" in maps:
            out["mask"] = maps["mask"].squeeze(1).sigmoid()
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

    def forward(self, image: torch.Tensor, num_tokens: int | torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw network outputs, exactly as the official forward.

        Args:
            image: ``(B, 3, H, W)`` RGB in [0, 1].
            num_tokens: ViT token budget (int or 0-d tensor).
        Returns:
            Dict with (only for the heads the model has) ``points`` ``(B, H, W, 3)`` affine-invariant point map
            (up to scale and z-shift), ``normal`` ``(B, H, W, 3)`` unit normals, ``mask`` ``(B, H, W)``
            validity probability, ``metric_scale`` ``(B,)``.
        """
        batch, _, height, width = image.shape
        aspect_ratio = width / height
        rows, cols = token_grid(num_tokens, aspect_ratio)

        features, cls_token = self.encoder(image, rows, cols)
        levels: list[torch.Tensor | None] = [features, None, None, None, None]
        for level in range(5):
            uv = normalized_view_plane_uv(width=cols * 2**level, height=rows * 2**level, aspect_ratio=aspect_ratio,
                                          dtype=image.dtype, device=image.device)
            uv = uv.permute(2, 0, 1).unsqueeze(0).expand(batch, -1, -1, -1)
            levels[level] = uv if levels[level] is None else torch.cat([levels[level], uv], dim=1)
        neck_out = self.neck(levels)

        raw = {key: getattr(self, f"{key}_head")(neck_out)[-1] for key in ("points", "normal", "mask") if self.has_head(f"{key}_head")}
        # Resize the raw maps first (no antialias), then remap: interpolation happens in log-depth for 'exp'.
        raw = {k: F.interpolate(v, (height, width), mode="bilinear", align_corners=False, antialias=False) for k, v in raw.items()}

        out = self.activate_maps(raw)
        if self.has_head("scale_head"):
            out["metric_scale"] = self.scale_head(cls_token).squeeze(1).exp()
        return out

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

    @classmethod
    def from_pretrained(cls, source: str, **kwargs: Any) -> "MoGe2Model":
        """Official-compatible constructor: same as :func:`moge2_ros.load_model` (strict, weights only)."""
        from ..checkpoints import load_model  # file / hub I/O stays outside the model package

        return load_model(source, **kwargs)
