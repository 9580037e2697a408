"""What every ``moge2-ros`` subcommand shares in argparse: value types (one line per bad value, see
:mod:`moge2_ros.cli`) and the one model argument group (:func:`add_model_arguments` -> :func:`predictor_options`).

Nothing heavy is imported at module level, so registering the subcommands stays fast.
"""

from __future__ import annotations

import argparse
import math
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from moge2_ros.inference.factory import PredictorOptions

__all__ = ["add_model_arguments", "device", "fov", "positive_float", "positive_int", "predictor_options",
           "resolution_level"]


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def fov(text: str) -> float:
    value = positive_float(text)
    if not value < 180.0:
        raise argparse.ArgumentTypeError(f"expected degrees in (0, 180), got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected an integer > 0, got {text!r}")
    return value


def resolution_level(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer 0-9, got {text!r}") from None
    if not 0 <= value <= 9:
        raise argparse.ArgumentTypeError(f"expected an integer 0-9, got {text!r}")
    return value


def device(text: str) -> str:
    """'auto', 'cpu', 'cuda' or 'cuda:N' (whether the device exists is checked when the model loads)."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def add_model_arguments(
    parser: argparse.ArgumentParser,
    *,
    precision: bool = True,
    tokens: bool = True,
    edge_filter: bool = False,
    default_level: int = 9,
    model_help: str = "",
) -> None:
    """The one ``--model`` argument group of every subcommand that runs a model.

    Adds ``--model``, ``--device`` and (as asked) ``--precision``, ``--resolution-level`` / ``--num-tokens``
    (mutually exclusive) and ``--edge-rtol``; :func:`predictor_options` turns the parsed values into
    :class:`moge2_ros.inference.PredictorOptions`.

    Args:
        parser: the subcommand's parser.
        precision: add ``--precision``.
        tokens: add ``--resolution-level`` / ``--num-tokens``.
        edge_filter: add ``--edge-rtol``.
        default_level: default of ``--resolution-level``.
        model_help: what the model is used for, put before the generic ``--model`` help.
    """
    group = parser.add_argument_group("model")
    group.add_argument("--model", metavar="SRC",
                       help=(model_help + " " if model_help else "") + "model.pt / .safetensors file, model folder or "
                       "Hugging Face id (e.g. Ruicheng/moge-2-vitl-normal, needs the 'hub' extra); default: the "
                       "bundled demo model (synthetic-trained, 1.5 M parameters)")
    group.add_argument("--device", type=device, default="auto", metavar="auto|cpu|cuda[:N]",
                       help="inference device (default auto: cuda when available, else cpu)")
    if precision:
        group.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                           help="network precision (fp16/bf16: autocast, for CUDA; default fp32)")
    if tokens:
        res = group.add_mutually_exclusive_group()
        res.add_argument("--resolution-level", type=resolution_level, default=default_level, metavar="0-9",
                         help=f"0 = fewest ViT tokens (fastest) ... 9 = most (default {default_level})")
        res.add_argument("--num-tokens", type=positive_int, metavar="N", help="exact ViT token budget")
    if edge_filter:
        group.add_argument("--edge-rtol", type=positive_float, metavar="R",
                           help="remove flying pixels where the relative depth change to a neighbour exceeds R")


def predictor_options(args: argparse.Namespace, **overrides: Any) -> "PredictorOptions":
    """:class:`~moge2_ros.inference.PredictorOptions` from arguments added by :func:`add_model_arguments`
    (``overrides`` set further fields, e.g. ``estimate_normals=False``)."""
    from moge2_ros.inference.factory import PredictorOptions

    values: dict[str, Any] = {"model": args.model, "device": args.device}
    for name in ("precision", "resolution_level", "num_tokens", "edge_rtol"):
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    values.update(overrides)
    return PredictorOptions(**values)
