"""DINOv2-family Vision Transformer (ViT-S/B/L/G with 14-px patches, or a custom small spec).

State-dict keys equal those of DINOv2's hub models (``cls_token``, ``pos_embed``, ``mask_token``,
``patch_embed.proj``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,mlp.fc2,ls2.gamma}``,
``norm``), so official MoGe-2 checkpoints load strictly.  Only what MoGe-2 uses is implemented:
no register tokens, no masking, no drop-path; LayerScale and biases everywhere; LayerNorm eps 1e-6.

References: Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", 2023.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import ViTSpec
from .size_ops import EAGER, Size, SizeOps, as_number

LAYER_NORM_EPS = 1e-6
#: DINOv2's offset added to the target grid size when interpolating positional embeddings.
POS_EMBED_INTERPOLATE_OFFSET = 0.1


class PatchEmbed(nn.Module):
    """(B, 3, H, W) -> (B, H/14 * W/14, E) tokens, row-major (row index = y)."""

    def __init__(self, embed_dim: int, patch_size: int = 14) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """fc1 -> GELU (exact erf form) -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFN(nn.Module):
    """DINOv2-giant FFN: ``w3(silu(a) * b)`` with ``(a, b) = w12(x).chunk(2)``; hidden rounded to a multiple of 8."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))``, then ``x + ls2(ffn(norm2(x)))``."""

    def __init__(self, spec: ViTSpec) -> None:
        super().__init__()
        dim = spec.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, spec.num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        hidden = int(dim * spec.mlp_ratio)
        self.mlp: nn.Module = SwiGLUFFN(dim, hidden) if spec.ffn == "swiglu" else Mlp(dim, hidden)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """DINOv2 ViT trunk returning normalised intermediate block outputs (:meth:`forward_layers`)."""

    def __init__(self, spec: ViTSpec) -> None:
        super().__init__()
        self.spec = spec
        dim = spec.embed_dim
        self.patch_size = spec.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + spec.pos_grid**2, dim))
        # Present in DINOv2 checkpoints (masked-image-modelling token); never used at inference.
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.patch_embed = PatchEmbed(dim, spec.patch_size)
        self.blocks = nn.ModuleList(Block(spec) for _ in range(spec.depth))
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random initialisation (truncated normal, DINOv2 style); LayerScale starts at 1.

        Skipped on the ``meta`` device (shapes only: the loader's pre-allocation check), where ``normal_`` would
        cost a second of lazy imports and do nothing.
        """
        if self.pos_embed.is_meta:
            return
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def interpolate_pos_encoding(self, rows: Size, cols: Size, dtype: torch.dtype, ops: SizeOps = EAGER
                                 ) -> torch.Tensor:
        """Positional embeddings for a ``rows × cols`` token grid, ``(1, 1 + rows·cols, E)`` (class token first).

        The patch part of the stored square table is resized bicubically with DINOv2's scale factors
        ``(rows + 0.1) / grid`` and ``(cols + 0.1) / grid`` (the offset changes the sampling positions, so it is part
        of the numerics, not a rounding guard to drop), except that the table is used as is when the token grid
        equals the stored grid.  ``ops.official_compatible`` instead resizes to ``rows × cols`` with no offset and no
        shortcut.  Computed in float32 (``ops`` does the resize), the result cast to ``dtype`` (the tokens' dtype).
        """
        grid = self.spec.pos_grid
        if ops.official_compatible:
            scale, keep = None, False
        else:
            r, c = as_number(rows), as_number(cols)
            scale = ((r + POS_EMBED_INTERPOLATE_OFFSET) / grid, (c + POS_EMBED_INTERPOLATE_OFFSET) / grid)
            keep = (r == grid) & (c == grid)
        pos = self.pos_embed.float()
        patch = pos[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        patch = ops.resize_bicubic(patch, rows, cols, scale, keep)
        patch = patch.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat([pos[:, :1], patch], dim=1).to(dtype)

    def forward_layers(self, x: torch.Tensor, pos_embed: torch.Tensor, layers: Sequence[int]
                       ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Run the trunk on a normalised image with already-interpolated positional embeddings.

        Args:
            x: ``(B, 3, 14·rows, 14·cols)`` normalised image.
            pos_embed: ``(1, 1 + rows·cols, E)`` from :meth:`interpolate_pos_encoding`.
            layers: 0-based block indices to take, in increasing order.
        Returns:
            One ``(patch_tokens (B, rows·cols, E), cls_token (B, E))`` pair per taken block, in block order, each
            after the shared final LayerNorm.  Blocks after the last taken one are skipped (their output is unused).
        """
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + pos_embed
        outputs = []
        for i, block in enumerate(self.blocks[: max(layers) + 1]):
            tokens = block(tokens)
            if i in layers:
                normed = self.norm(tokens)
                outputs.append((normed[:, 1:], normed[:, 0]))
        return outputs

    def get_intermediate_layers(self, x: torch.Tensor, layers: Sequence[int]
                                ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """DINOv2's entry point: :meth:`forward_layers` with the positional embeddings of ``x``'s token grid.

        Args:
            x: ``(B, 3, H, W)`` normalised image, H and W multiples of 14.
            layers: 0-based block indices to take, in increasing order.
        Returns:
            As :meth:`forward_layers`.
        """
        rows, cols = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        return self.forward_layers(x, self.interpolate_pos_encoding(rows, cols, x.dtype), layers)
