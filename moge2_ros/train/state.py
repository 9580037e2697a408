"""Training-state files: model checkpoints in the official format plus a state file for exact resume.

Layout under ``<output_dir>/checkpoints``::

    step_00000500.pt         {'model_config': dict, 'model': state_dict}: the official format, loadable by
                             moge2_ros.load_model / the Predictor / the node / the official code (strict keys)
    step_00000500.state.pt   {'format', 'step', 'consumed', 'optimizer', 'scheduler', 'scaler', 'rng', 'config'}
    latest.json              {"step": 500, "model": "step_00000500.pt", "state": "step_00000500.state.pt"}

Every file is written to a hidden temporary file in the same folder and renamed (atomic on POSIX), and
``latest.json`` is replaced only after both files of a step are complete, so a run killed at any moment leaves a
consistent latest checkpoint.  The state file holds only tensors and plain containers, so it is read with
``torch.load(weights_only=True)`` like the model.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from moge2_ros.checkpoints import save_checkpoint
from moge2_ros.errors import Moge2RosError
from moge2_ros.io.atomic import atomic_path, atomic_write_bytes

__all__ = [
    "TrainingStateError",
    "CheckpointRef",
    "STATE_FORMAT",
    "capture_rng_state",
    "restore_rng_state",
    "atomic_write_bytes",
    "atomic_torch_save",
    "save_training_checkpoint",
    "find_latest_checkpoint",
    "load_training_state",
    "prune_checkpoints",
]

STATE_FORMAT = "moge2_ros.train.state/1"
LATEST = "latest.json"


class TrainingStateError(Moge2RosError):
    """A training-state file is missing, unreadable or does not belong to this run."""


@dataclass(frozen=True)
class CheckpointRef:
    """The files of one saved step."""

    step: int
    model: Path
    state: Path


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically (:func:`moge2_ros.io.atomic.atomic_path`)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states (torch CPU and CUDA, numpy, Python ``random``) as tensors and plain containers."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states only when CUDA is available)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _name(step: int) -> str:
    return f"step_{step:08d}"


def save_training_checkpoint(
    directory: str | os.PathLike, step: int, model: torch.nn.Module, state: Mapping[str, Any], keep: int = 0
) -> CheckpointRef:
    """Write the model (official format) and the training state of ``step``, then point ``latest.json`` at them.

    Args:
        directory: the checkpoint folder (created).
        step: optimizer steps done.
        model: the (unwrapped) :class:`MoGe2Model`.
        state: optimizer / scheduler / scaler / RNG / counters; ``format`` and ``step`` are added.
        keep: keep this many most recent steps (0: all).

    Returns:
        The paths written.
    """
    directory = Path(directory)
    ref = CheckpointRef(step, directory / f"{_name(step)}.pt", directory / f"{_name(step)}.state.pt")
    save_checkpoint(model, ref.model)  # type: ignore[arg-type]
    atomic_torch_save({**state, "format": STATE_FORMAT, "step": int(step)}, ref.state)
    latest = {"step": int(step), "model": ref.model.name, "state": ref.state.name}
    atomic_write_bytes(directory / LATEST, (json.dumps(latest, indent=1) + "\n").encode())
    if keep > 0:
        prune_checkpoints(directory, keep)
    return ref


def prune_checkpoints(directory: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the ``keep`` most recent steps (never the one ``latest.json`` names); returns the deleted
    files."""
    directory = Path(directory)
    latest = find_latest_checkpoint(directory)
    steps = sorted({int(p.name[5:13]) for p in directory.glob("step_*.pt") if p.name[5:13].isdigit()})
    deleted = []
    for step in steps[:-keep] if keep > 0 else []:
        if latest is not None and step == latest.step:
            continue
        for path in (directory / f"{_name(step)}.pt", directory / f"{_name(step)}.state.pt"):
            if path.exists():
                path.unlink()
                deleted.append(path)
    return deleted


def find_latest_checkpoint(directory: str | os.PathLike) -> CheckpointRef | None:
    """The step ``latest.json`` names, or None when there is none.

    Raises:
        TrainingStateError: ``latest.json`` is unreadable or names files that do not exist.
    """
    path = Path(directory) / LATEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        ref = CheckpointRef(int(data["step"]), path.parent / str(data["model"]), path.parent / str(data["state"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TrainingStateError(f"{path}: unreadable ({exc}); expected {{'step', 'model', 'state'}}") from None
    for file in (ref.model, ref.state):
        if not file.is_file():
            raise TrainingStateError(f"{path}: names {file.name}, which does not exist in {path.parent}")
    return ref


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a state file (``torch.load(weights_only=True)``) and check its format.

    Raises:
        TrainingStateError: unreadable file or another format.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types on bad files
        raise TrainingStateError(f"{path}: not a readable training-state file ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise TrainingStateError(f"{path}: expected a training state of format {STATE_FORMAT!r}, found {found!r}")
    return state
