"""Pure-PyTorch MoGe-2 network: configuration, modules and strict state-dict loading (no file I/O)."""

from .config import ConvStackConfig, EncoderConfig, MoGe2Config, ScaleHeadConfig, ViTSpec
from .moge2 import OUTPUT_NAMES, DINOv2Encoder, GridInputs, MoGe2Model
from .size_ops import EAGER, SizeOps, token_grid
from .state_dict import check_state_dict, load_state_dict_strict

__all__ = [
    "EAGER",
    "OUTPUT_NAMES",
    "ConvStackConfig",
    "DINOv2Encoder",
    "EncoderConfig",
    "GridInputs",
    "MoGe2Config",
    "MoGe2Model",
    "ScaleHeadConfig",
    "SizeOps",
    "ViTSpec",
    "check_state_dict",
    "load_state_dict_strict",
    "token_grid",
]
