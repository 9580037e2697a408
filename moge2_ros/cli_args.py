"""argparse value types shared by every ``moge2-ros`` subcommand (one line per bad value, see :mod:`moge2_ros.cli`)."""

from __future__ import annotations

import argparse
import math

__all__ = ["positive_float", "positive_int", "fov", "resolution_level"]


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
