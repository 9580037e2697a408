"""What every ``moge2-ros`` subcommand shares: the program name, exit statuses and one-line messages; argparse
value types (a bad value is one line, see :mod:`moge2_ros.cli`); and the one model argument group
(:func:`add_model_arguments` -> :func:`model_arguments` -> :class:`moge2_ros.inference.PredictorOptions`).

This is the bottom of the command line: the subcommand modules (``<layer>/cli.py``, from ``backends`` up) and
:mod:`moge2_ros.cli` import it, and it imports nothing of the package but :mod:`moge2_ros.errors`-level modules
(none at all today), so that every layer's ``cli.py`` may use it.  Nothing heavy is imported, so registering the
subcommands stays fast.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from typing import Any

__all__ = ["EXIT_OK", "EXIT_RUNTIME", "EXIT_USAGE", "PROG", "add_device_argument", "add_model_arguments", "device",
           "error", "fov", "model_arguments", "note", "one_line", "os_error_text", "positive_float", "positive_int",
           "resolution_level"]

PROG = "moge2-ros"
#: Exit statuses: success, runtime error (model, inference, unreadable file, ...), usage error (bad argument).
EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


# ---------------------------------------------------------------------------------------------- messages


def one_line(text: object) -> str:
    """``text`` with every run of white space (newlines included) made one space."""
    return " ".join(str(text).split())


def os_error_text(exc: OSError) -> str:
    """``strerror: filename`` of an OSError when it has both, else its message."""
    if exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc) or type(exc).__name__


def error(message: str) -> str:
    """The one error line ``moge2-ros: error: MESSAGE`` (without printing it)."""
    return f"{PROG}: error: {one_line(message)}"


def note(message: str) -> None:
    """Print ``moge2-ros: MESSAGE`` on stderr (notes such as the bundled-demo-model one)."""
    print(f"{PROG}: {one_line(message)}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- value types


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def fov(text: str) -> float:
    """Degrees in (0, 180)."""
    value = positive_float(text)
    if not value < 180.0:
        raise argparse.ArgumentTypeError(f"expected degrees in (0, 180), got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected an integer > 0, got {text!r}")
    return value


def resolution_level(text: str) -> int:
    """An integer 0-9 (the token-budget level)."""
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


def add_device_argument(parser: Any, *, training: bool = False) -> None:
    """``--device``: the inference device (``auto``, ``cpu``, ``cuda``, ``cuda:N``; default auto) or, with
    ``training``, the training device (``auto``, ``cpu``, ``cuda``; default None = the config's ``loop.device``)."""
    if training:
        parser.add_argument("--device", choices=("auto", "cpu", "cuda"),
                            help="training device: auto (CUDA when present), cpu or cuda; under torchrun each "
                                 "process uses cuda:LOCAL_RANK (default: the config's loop.device, auto)")
    else:
        parser.add_argument("--device", type=device, default="auto", metavar="auto|cpu|cuda[:N]",
                            help="inference device (default auto: cuda when available, else cpu)")


def add_model_arguments(
    parser: argparse.ArgumentParser,
    *,
    precision: bool = True,
    tokens: bool = True,
    edge_filter: bool = False,
    default_level: int = 9,
    default_precision: str = "auto",
    model_help: str = "",
    device: str | None = "inference",
) -> None:
    """The one ``--model`` argument group of every subcommand that loads a model.

    Adds ``--model``, ``--device`` and (as asked) ``--precision``, ``--resolution-level`` / ``--num-tokens``
    (mutually exclusive) and ``--edge-rtol``.  A command that predicts turns the parsed values into
    :class:`moge2_ros.inference.PredictorOptions` with :func:`model_arguments`; one that only loads the model
    (``export-onnx``, ``finetune``) resolves ``args.model`` with :func:`moge2_ros.assets.model_source`.

    Args:
        parser: the subcommand's parser.
        precision: add ``--precision``.
        tokens: add ``--resolution-level`` / ``--num-tokens``.
        edge_filter: add ``--edge-rtol``.
        default_level: default of ``--resolution-level``.
        default_precision: default of ``--precision`` (``auto``: the fastest accurate one for the device; ``eval``
            uses ``fp32`` so that its numbers are the model's own).
        model_help: what the model is used for, put before the generic ``--model`` help.
        device: ``"inference"`` (``auto|cpu|cuda[:N]``), ``"training"`` (``auto|cpu|cuda``, see
            :func:`add_device_argument`) or None (no ``--device``: the command chooses, e.g. ONNX export on the CPU).
    """
    group = parser.add_argument_group("model")
    group.add_argument("--model", metavar="SRC",
                       help=(model_help + " " if model_help else "") + "model.pt / .safetensors file, model folder or "
                       "Hugging Face id (e.g. Ruicheng/moge-2-vitl-normal, needs the 'hub' extra); default: the "
                       "bundled demo model (synthetic-trained, 1.5 M parameters)")
    if device is not None:
        if device not in ("inference", "training"):
            raise ValueError(f"device: expected 'inference', 'training' or None, got {device!r}")
        add_device_argument(group, training=device == "training")
    if precision:
        group.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default=default_precision,
                           help="network precision: auto = fp16 on CUDA, bf16 on a CPU with native bf16 "
                                f"(depth AbsRel ~3e-3 against fp32), else fp32; fp16/bf16 = autocast (default "
                                f"{default_precision})")
    if tokens:
        res = group.add_mutually_exclusive_group()
        res.add_argument("--resolution-level", type=resolution_level, default=default_level, metavar="0-9",
                         help=f"0 = fewest ViT tokens (fastest) ... 9 = most (default {default_level})")
        res.add_argument("--num-tokens", type=positive_int, metavar="N", help="exact ViT token budget")
        group.add_argument("--memory-budget-mb", type=positive_float, metavar="MIB",
                           help="working memory one frame may use above the model; larger images and token counts "
                                "are refused before they are processed (default: 2048 on a CPU, or a quarter of "
                                "its memory if less; half the free memory on CUDA)")
    if edge_filter:
        group.add_argument("--edge-rtol", type=positive_float, metavar="R",
                           help="remove flying pixels where the relative depth change to a neighbour exceeds R")


def model_arguments(args: argparse.Namespace, **overrides: Any) -> dict[str, Any]:
    """The values of the group :func:`add_model_arguments` added, named as the fields of
    :class:`moge2_ros.inference.PredictorOptions` (``overrides`` set further fields, e.g.
    ``estimate_normals=False``).  A command builds its predictor as
    ``load_predictor(PredictorOptions(**model_arguments(args)), say=note)``, which falls back to the bundled demo
    model and says so; one that records the model first resolves it with :func:`moge2_ros.assets.model_source`."""
    values: dict[str, Any] = {"model": args.model, "device": getattr(args, "device", None)}
    for name in ("precision", "resolution_level", "num_tokens", "memory_budget_mb", "edge_rtol"):
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    values.update(overrides)
    return values
