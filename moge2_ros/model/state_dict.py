"""Strict state-dict loading with errors that name the offending keys (pure torch, no file I/O)."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ..errors import ModelLoadError


def _names(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Require ``state_dict`` to hold exactly ``model``'s keys with the same shapes (and float or equal dtypes).

    Reads only names, shapes and dtypes, so ``model`` may live on the ``meta`` device (nothing allocated).
    Raises :class:`ModelLoadError` listing missing keys, unexpected keys, shape mismatches or non-tensor values.
    """
    expected = model.state_dict()
    bad_values = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad_values:
        raise ModelLoadError(f"{source}: state-dict entries are not tensors: {_names(sorted(bad_values))}")
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    mismatched = [
        f"{k} (checkpoint {tuple(state_dict[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if mismatched:
        problems.append(f"shape mismatch: {_names(mismatched)}")
    non_float = [k for k, v in state_dict.items() if k in expected and not (v.is_floating_point() or v.dtype == expected[k].dtype)]
    if non_float:
        problems.append(f"unexpected dtype: {_names(sorted(non_float))}")
    if problems:
        raise ModelLoadError(
            f"{source}: weights do not match the model built from its model_config — " + "; ".join(problems)
        )


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Copy ``state_dict`` into ``model`` requiring exactly the same keys and shapes (:func:`check_state_dict`).

    Floating-point tensors are cast to the parameter dtype (official checkpoints may store fp16).
    Raises :class:`ModelLoadError` as :func:`check_state_dict` — nothing is loaded in that case.
    """
    check_state_dict(model, state_dict, source)
    model.load_state_dict(dict(state_dict), strict=True)
