"""Typed configuration of a MoGe-2 model.

The schema is the official ``model_config`` dict stored in every MoGe-2 checkpoint
(``{'model_config': dict, 'model': state_dict}``)::

    encoder:      {backbone, intermediate_layers, dim_out}
    neck:         conv stack {dim_in, dim_out, dim_res_blocks, num_res_blocks, resamplers, norms, ...}
    points_head / normal_head / mask_head: conv stacks (each optional)
    scale_head:   {dims}  (MLP on the CLS token; optional)
    remap_output: 'linear' | 'sinh' | 'exp' | 'sinh_exp'
    num_tokens_range: [min, max]

:meth:`MoGe2Config.from_dict` reads such a dict and :meth:`MoGe2Config.to_dict` writes it back unchanged
(keys this package does not use are kept verbatim in ``extra``).  One extension: ``encoder.backbone`` may be a
dict describing a custom small ViT (:class:`ViTSpec`) instead of a DINOv2 name, for tiny demo and test models.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..errors import ConfigError

#: DINOv2 backbones by hub name: (embed_dim, depth, num_heads, ffn).
DINOV2_BACKBONES: dict[str, tuple[int, int, int, str]] = {
    "dinov2_vits14": (384, 12, 6, "mlp"),
    "dinov2_vitb14": (768, 12, 12, "mlp"),
    "dinov2_vitl14": (1024, 24, 16, "mlp"),
    "dinov2_vitg14": (1536, 40, 24, "swiglu"),
}

REMAP_MODES = ("linear", "sinh", "exp", "sinh_exp")
RESAMPLERS = ("conv_transpose", "bilinear", "nearest", "pixel_shuffle")
NORMS = ("none", "layer_norm", "group_norm", "instance_norm")
ACTIVATIONS = ("relu", "leaky_relu", "silu", "elu")
HEADS = ("points_head", "normal_head", "mask_head")
#: Number of decoder levels conditioned on a uv grid (token grid × 2^l, l = 0..4).
NUM_LEVELS = 5

#: Upper bounds of a plausible configuration: generous margins around the official ones (ViT-S/B/L/G: widths
#: 384-1536, 12-40 blocks, 6-24 heads; conv widths <= 1024, <= 2 residual blocks per level; scale MLP widths
#: <= 1024; 1200-3600 tokens).  A model_config beyond them is refused before anything is built, so a hostile
#: or corrupt checkpoint cannot make the loader allocate gigabytes.
LIMITS: dict[str, int] = {
    "embed_dim": 8192,
    "depth": 128,
    "num_heads": 128,
    "mlp_ratio": 16,
    "pos_grid": 256,
    "conv_width": 8192,
    "num_res_blocks": 16,
    "dim_times_res_block_hidden": 16,
    "mlp_width": 16384,
    "mlp_layers": 16,
    "num_tokens": 65536,
}


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _bounded_int(value: Any, name: str, lo: int, hi: int) -> int:
    """``value`` as an int in ``[lo, hi]``, else :class:`ConfigError` naming the field and the range."""
    _require(isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi,
             f"{name}: expected an integer in [{lo}, {hi}], found {_short(value)}")
    return int(value)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _int_list(value: Any, name: str, allow_none: bool = False) -> list:
    _require(isinstance(value, Sequence) and not isinstance(value, str), f"{name}: expected a list, found {value!r}")
    out = []
    for v in value:
        if v is None and allow_none:
            out.append(None)
        else:
            _require(isinstance(v, int) and not isinstance(v, bool) and v >= 0, f"{name}: expected integers >= 0, found {value!r}")
            out.append(int(v))
    return out


@dataclass
class ViTSpec:
    """A ViT backbone: a DINOv2 model (by name) or a custom small ViT with the same structure.

    Attributes:
        embed_dim, depth, num_heads: transformer width, number of blocks, attention heads.
        mlp_ratio: FFN hidden width / embed_dim.
        ffn: 'mlp' (fc1-GELU-fc2) or 'swiglu' (DINOv2 giant's fused SwiGLU, keys w12 / w3).
        pos_grid: side of the square grid of learned positional embeddings (37 for DINOv2: 518 px / 14).
        name: the DINOv2 hub name, or None for a custom spec.
    Patches are always 14×14 pixels: the MoGe token budget is defined in 14-pixel patches.
    """

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    ffn: str = "mlp"
    pos_grid: int = 37
    name: str | None = None

    patch_size: int = field(default=14, init=False)

    def __post_init__(self) -> None:
        self.embed_dim = _bounded_int(self.embed_dim, "encoder.backbone.embed_dim", 1, LIMITS["embed_dim"])
        self.depth = _bounded_int(self.depth, "encoder.backbone.depth", 1, LIMITS["depth"])
        self.num_heads = _bounded_int(self.num_heads, "encoder.backbone.num_heads", 1, LIMITS["num_heads"])
        _require(isinstance(self.mlp_ratio, (int, float)) and not isinstance(self.mlp_ratio, bool)
                 and 0 < self.mlp_ratio <= LIMITS["mlp_ratio"],
                 f"encoder.backbone.mlp_ratio: expected a number in (0, {LIMITS['mlp_ratio']}], found {_short(self.mlp_ratio)}")
        self.pos_grid = _bounded_int(self.pos_grid, "encoder.backbone.pos_grid", 1, LIMITS["pos_grid"])
        _require(self.embed_dim % self.num_heads == 0, f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        _require(self.ffn in ("mlp", "swiglu"), f"ffn must be 'mlp' or 'swiglu', found {self.ffn!r}")

    @classmethod
    def from_value(cls, value: str | Mapping[str, Any]) -> "ViTSpec":
        """Parse ``encoder.backbone``: a DINOv2 hub name or a custom-spec dict."""
        if isinstance(value, str):
            if value not in DINOV2_BACKBONES:
                raise ConfigError(
                    f"encoder.backbone: unknown backbone {value!r}; expected one of {sorted(DINOV2_BACKBONES)} "
                    "or a dict {'embed_dim', 'depth', 'num_heads', ...} for a custom ViT"
                )
            dim, depth, heads, ffn = DINOV2_BACKBONES[value]
            return cls(embed_dim=dim, depth=depth, num_heads=heads, ffn=ffn, name=value)
        if isinstance(value, Mapping):
            known = {"embed_dim", "depth", "num_heads", "mlp_ratio", "ffn", "pos_grid"}
            unknown = set(value) - known - {"type"}
            _require(not unknown, f"encoder.backbone: unknown keys {sorted(unknown)} in custom ViT spec; allowed {sorted(known)}")
            missing = {"embed_dim", "depth", "num_heads"} - set(value)
            _require(not missing, f"encoder.backbone: custom ViT spec lacks {sorted(missing)}")
            return cls(**{k: value[k] for k in known if k in value})
        raise ConfigError(f"encoder.backbone: expected a string or a dict, found {value!r}")

    def to_value(self) -> str | dict[str, Any]:
        if self.name is not None:
            return self.name
        return {
            "type": "vit",
            "embed_dim": self.embed_dim,
            "depth": self.depth,
            "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio,
            "ffn": self.ffn,
            "pos_grid": self.pos_grid,
        }


@dataclass
class EncoderConfig:
    """ViT encoder: which blocks feed the decoder and the width of their summed 1×1 projections."""

    backbone: ViTSpec
    intermediate_layers: int | list[int]
    dim_out: int
    extra: dict[str, Any] = field(default_factory=dict)

    def layer_indices(self) -> list[int]:
        """0-based block indices whose outputs are taken, in block order."""
        if isinstance(self.intermediate_layers, int):
            return list(range(self.backbone.depth - self.intermediate_layers, self.backbone.depth))
        return sorted(self.intermediate_layers)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EncoderConfig":
        _require(isinstance(d, Mapping), f"encoder: expected a dict, found {d!r}")
        for k in ("backbone", "intermediate_layers", "dim_out"):
            _require(k in d, f"encoder: missing key {k!r}")
        backbone = ViTSpec.from_value(d["backbone"])
        layers = d["intermediate_layers"]
        if isinstance(layers, int) and not isinstance(layers, bool):
            _require(1 <= layers <= backbone.depth, f"encoder.intermediate_layers={layers} must be in [1, {backbone.depth}]")
        else:
            layers = _int_list(layers, "encoder.intermediate_layers")
            _require(0 < len(layers) <= backbone.depth and all(i < backbone.depth for i in layers),
                     f"encoder.intermediate_layers={_short(layers)} must be 1 to {backbone.depth} block indices < {backbone.depth}")
        dim_out = _bounded_int(d["dim_out"], "encoder.dim_out", 1, LIMITS["conv_width"])
        extra = {k: copy.deepcopy(v) for k, v in d.items() if k not in ("backbone", "intermediate_layers", "dim_out")}
        return cls(backbone=backbone, intermediate_layers=layers, dim_out=dim_out, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        layers = self.intermediate_layers if isinstance(self.intermediate_layers, int) else list(self.intermediate_layers)
        return {"backbone": self.backbone.to_value(), "intermediate_layers": layers, "dim_out": self.dim_out, **copy.deepcopy(self.extra)}


@dataclass
class ConvStackConfig:
    """A 5-level conv decoder (the neck and each head).

    Level i works at 2^i × the token grid: ``x = input_block_i(in_i) (+ x)``, ``num_res_blocks[i]`` residual
    blocks, ``out_i = output_block_i(x)``, then (i < 4) a 2× resampler to level i+1.
    ``dim_in[i]`` / ``dim_out[i]`` of None mean "no input / no output projection" at that level.
    """

    dim_in: list[int | None]
    dim_res_blocks: list[int]
    dim_out: list[int | None]
    resamplers: list[str]
    num_res_blocks: list[int]
    res_block_in_norm: str = "layer_norm"
    res_block_hidden_norm: str = "group_norm"
    dim_times_res_block_hidden: int = 1
    activation: str = "relu"
    extra: dict[str, Any] = field(default_factory=dict)
    # Which keys were present in the source dict, so to_dict() writes back exactly what was read.
    _present: tuple[str, ...] = field(default=(), repr=False, compare=False)
    _scalar: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    _KEYS = ("dim_in", "dim_res_blocks", "dim_out", "resamplers", "num_res_blocks", "res_block_in_norm",
             "res_block_hidden_norm", "dim_times_res_block_hidden", "activation")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], name: str) -> "ConvStackConfig":
        _require(isinstance(d, Mapping), f"{name}: expected a dict, found {d!r}")
        for k in ("dim_in", "dim_res_blocks", "dim_out", "resamplers"):
            _require(k in d, f"{name}: missing key {k!r}")
        dims = _int_list(d["dim_res_blocks"], f"{name}.dim_res_blocks")
        _require(len(dims) == NUM_LEVELS and all(0 < x <= LIMITS["conv_width"] for x in dims),
                 f"{name}.dim_res_blocks: expected {NUM_LEVELS} ints in [1, {LIMITS['conv_width']}], "
                 f"found {_short(d['dim_res_blocks'])}")
        scalar: dict[str, Any] = {}

        def per_level(key: str, value: Any, allow_none: bool, n: int = NUM_LEVELS) -> list:
            if isinstance(value, (int, str)) or value is None:  # official code repeats a scalar for every level
                scalar[key] = value
                return [value] * n
            out = _int_list(value, f"{name}.{key}", allow_none=allow_none) if key != "resamplers" else list(value)
            _require(len(out) == n, f"{name}.{key}: expected {n} entries, found {len(out)}")
            return out

        dim_in = per_level("dim_in", d["dim_in"], True)
        dim_out = per_level("dim_out", d["dim_out"], True)
        resamplers = per_level("resamplers", d["resamplers"], False, NUM_LEVELS - 1)
        for r in resamplers:
            _require(r in RESAMPLERS, f"{name}.resamplers: unsupported resampler {r!r}; supported {list(RESAMPLERS)}")
        num_res = per_level("num_res_blocks", d.get("num_res_blocks", 1), False)
        for key, values, hi in (("dim_in", dim_in, LIMITS["conv_width"] + 2), ("dim_out", dim_out, LIMITS["conv_width"]),
                                ("num_res_blocks", num_res, LIMITS["num_res_blocks"])):
            for v in values:
                if v is not None:
                    _bounded_int(v, f"{name}.{key}", 0, hi)
        in_norm = d.get("res_block_in_norm", "layer_norm")
        hidden_norm = d.get("res_block_hidden_norm", "group_norm")
        for key, norm in (("res_block_in_norm", in_norm), ("res_block_hidden_norm", hidden_norm)):
            _require(norm in NORMS, f"{name}.{key}: unsupported norm {norm!r}; supported {list(NORMS)}")
        activation = d.get("activation", "relu")
        _require(activation in ACTIVATIONS, f"{name}.activation: unsupported {activation!r}; supported {list(ACTIVATIONS)}")
        hidden = d.get("dim_times_res_block_hidden", 1)
        _bounded_int(hidden, f"{name}.dim_times_res_block_hidden", 1, LIMITS["dim_times_res_block_hidden"])
        extra = {k: copy.deepcopy(v) for k, v in d.items() if k not in cls._KEYS}
        return cls(dim_in=dim_in, dim_res_blocks=dims, dim_out=dim_out, resamplers=resamplers, num_res_blocks=num_res,
                   res_block_in_norm=in_norm, res_block_hidden_norm=hidden_norm, dim_times_res_block_hidden=hidden,
                   activation=activation, extra=extra, _present=tuple(k for k in cls._KEYS if k in d), _scalar=scalar)

    def to_dict(self) -> dict[str, Any]:
        full = {
            "dim_in": list(self.dim_in),
            "dim_out": list(self.dim_out),
            "dim_res_blocks": list(self.dim_res_blocks),
            "num_res_blocks": list(self.num_res_blocks),
            "res_block_in_norm": self.res_block_in_norm,
            "res_block_hidden_norm": self.res_block_hidden_norm,
            "resamplers": list(self.resamplers),
            "dim_times_res_block_hidden": self.dim_times_res_block_hidden,
            "activation": self.activation,
        }
        for key, value in self._scalar.items():
            full[key] = value
        present = self._present or ("dim_in", "dim_out", "dim_res_blocks", "num_res_blocks", "res_block_in_norm",
                                    "res_block_hidden_norm", "resamplers")
        return {**{k: full[k] for k in present}, **copy.deepcopy(self.extra)}


@dataclass
class ScaleHeadConfig:
    """MLP from the CLS token to log metric scale: Linear, ReLU, ..., Linear over ``dims``."""

    dims: list[int]
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ScaleHeadConfig":
        _require(isinstance(d, Mapping) and "dims" in d, f"scale_head: expected {{'dims': [...]}}, found {d!r}")
        dims = _int_list(d["dims"], "scale_head.dims")
        _require(2 <= len(dims) <= LIMITS["mlp_layers"] + 1 and all(0 < x <= LIMITS["mlp_width"] for x in dims),
                 f"scale_head.dims: expected 2 to {LIMITS['mlp_layers'] + 1} ints in [1, {LIMITS['mlp_width']}], "
                 f"found {_short(dims)}")
        return cls(dims=dims, extra={k: copy.deepcopy(v) for k, v in d.items() if k != "dims"})

    def to_dict(self) -> dict[str, Any]:
        return {"dims": list(self.dims), **copy.deepcopy(self.extra)}


@dataclass
class MoGe2Config:
    """Complete MoGe-2 model configuration (see the module docstring for the schema)."""

    encoder: EncoderConfig
    neck: ConvStackConfig
    points_head: ConvStackConfig | None = None
    normal_head: ConvStackConfig | None = None
    mask_head: ConvStackConfig | None = None
    scale_head: ScaleHeadConfig | None = None
    remap_output: str = "linear"
    num_tokens_range: tuple[int, int] = (1200, 3600)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(self.remap_output in REMAP_MODES, f"remap_output: expected one of {list(REMAP_MODES)}, found {self.remap_output!r}")
        lo, hi = self.num_tokens_range
        _require(0 < lo <= hi <= LIMITS["num_tokens"],
                 f"num_tokens_range: expected 0 < min <= max <= {LIMITS['num_tokens']}, found {list(self.num_tokens_range)}")
        e, n = self.encoder, self.neck
        _require(n.dim_in[0] == e.dim_out + 2,
                 f"neck.dim_in[0] must be encoder.dim_out + 2 (features + uv) = {e.dim_out + 2}, found {n.dim_in[0]}")
        _require(all(d == 2 for d in n.dim_in[1:]), f"neck.dim_in[1:] must be 2 (uv maps), found {n.dim_in[1:]}")
        for name in HEADS:
            head = getattr(self, name)
            if head is None:
                continue
            expect_out = 1 if name == "mask_head" else 3
            _require(head.dim_out[-1] == expect_out, f"{name}.dim_out[-1] must be {expect_out}, found {head.dim_out[-1]}")
            neck_out = [o if o is not None else r for o, r in zip(n.dim_out, n.dim_res_blocks)]
            _require(list(head.dim_in) == neck_out, f"{name}.dim_in must equal the neck's output widths {neck_out}, found {head.dim_in}")
        if self.scale_head is not None:
            _require(self.scale_head.dims[0] == e.backbone.embed_dim,
                     f"scale_head.dims[0] must be the backbone width {e.backbone.embed_dim}, found {self.scale_head.dims[0]}")
            _require(self.scale_head.dims[-1] == 1, f"scale_head.dims[-1] must be 1, found {self.scale_head.dims[-1]}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MoGe2Config":
        """Read an official ``model_config`` dict (raises :class:`ConfigError` naming the bad entry)."""
        _require(isinstance(d, Mapping), f"model_config: expected a dict, found {type(d).__name__}")
        for k in ("encoder", "neck"):
            _require(k in d, f"model_config: missing key {k!r} (found keys {sorted(d)})")
        heads = {name: ConvStackConfig.from_dict(d[name], name) if d.get(name) is not None else None for name in HEADS}
        rng = d.get("num_tokens_range", [1200, 3600])
        rng = _int_list(rng, "num_tokens_range")
        _require(len(rng) == 2, f"num_tokens_range: expected [min, max], found {rng}")
        known = {"encoder", "neck", "scale_head", "remap_output", "num_tokens_range", *HEADS}
        return cls(
            encoder=EncoderConfig.from_dict(d["encoder"]),
            neck=ConvStackConfig.from_dict(d["neck"], "neck"),
            scale_head=ScaleHeadConfig.from_dict(d["scale_head"]) if d.get("scale_head") is not None else None,
            remap_output=d.get("remap_output", "linear"),
            num_tokens_range=(rng[0], rng[1]),
            extra={k: copy.deepcopy(v) for k, v in d.items() if k not in known},
            **heads,
        )

    def to_dict(self) -> dict[str, Any]:
        """The official ``model_config`` dict (round-trips :meth:`from_dict` unchanged)."""
        out: dict[str, Any] = {"encoder": self.encoder.to_dict(), "neck": self.neck.to_dict()}
        for name in HEADS:
            head = getattr(self, name)
            if head is not None:
                out[name] = head.to_dict()
        if self.scale_head is not None:
            out["scale_head"] = self.scale_head.to_dict()
        out["remap_output"] = self.remap_output
        out["num_tokens_range"] = list(self.num_tokens_range)
        out.update(copy.deepcopy(self.extra))
        return out

    @classmethod
    def tiny(cls, embed_dim: int = 96, depth: int = 4, num_heads: int = 3, with_normal: bool = True) -> "MoGe2Config":
        """A small custom-ViT configuration (a few MB) for the demo model and fast tests."""
        widths = [96, 64, 32, 16, 16]
        stack = {"dim_res_blocks": widths, "num_res_blocks": [0, 1, 1, 1, 0], "res_block_in_norm": "none",
                 "res_block_hidden_norm": "none", "resamplers": ["conv_transpose"] * 3 + ["bilinear"]}

        def head(out: int) -> dict[str, Any]:
            return {"dim_in": widths, "dim_out": [None] * 4 + [out], **stack}

        d: dict[str, Any] = {
            "encoder": {"backbone": {"embed_dim": embed_dim, "depth": depth, "num_heads": num_heads},
                        "intermediate_layers": min(4, depth), "dim_out": widths[0]},
            "neck": {"dim_in": [widths[0] + 2, 2, 2, 2, 2], "dim_out": None, **stack},
            "points_head": head(3),
            "mask_head": head(1),
            "scale_head": {"dims": [embed_dim, 128, 1]},
            "remap_output": "exp",
            "num_tokens_range": [1200, 3600],
        }
        if with_normal:
            d["normal_head"] = head(3)
        return cls.from_dict(d)
