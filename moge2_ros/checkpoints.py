"""Reading and writing MoGe-2 checkpoints (the file and network I/O the pure model package does not do).

Accepted sources for :func:`load_model`:

* an official ``model.pt``: ``torch.save({'model_config': dict, 'model': state_dict})`` — read with
  ``torch.load(weights_only=True)``; a file holding anything but plain tensors and containers is refused;
* a ``.safetensors`` file whose metadata holds ``model_config`` (JSON) or with a ``config.json`` beside it;
* a directory holding ``model.pt`` or ``model.safetensors``;
* a Hugging Face model id such as ``Ruicheng/moge-2-vitl-normal`` (needs the ``hub`` extra and a network or a
  warm cache).

Weights are matched strictly: missing or unexpected keys are rejected with their names.

:class:`MoGeModel` is the official package's entry point, ``MoGeModel.from_pretrained(source)``, for code written
against it; it lives here, above the pure model package, because loading is file and network I/O.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import ConfigError, ModelLoadError
from .model.config import MoGe2Config
from .model.moge2 import MoGe2Model
from .model.state_dict import check_state_dict, load_state_dict_strict

_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CHECKPOINT_NAMES = ("model.pt", "model.safetensors")
_CONFIG_NAMES = ("config.json", "model_config.json")


def _read_torch_file(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types on bad input (RuntimeError, KeyError, EOFError, ...)
        first_line = str(exc).splitlines()[0][:200] if str(exc) else ""
        if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in str(exc):
            raise ModelLoadError(
                f"{path}: refused to load — the file holds Python objects other than tensors and plain containers, "
                "and loading them could run arbitrary code (torch.load weights_only=True). Re-save it as "
                "{'model_config': dict, 'model': state_dict} or as .safetensors from a trusted environment."
            ) from None
        size = path.stat().st_size if path.exists() else 0
        raise ModelLoadError(
            f"{path}: not a readable PyTorch checkpoint ({size} bytes; truncated, corrupt or another format): "
            f"{type(exc).__name__}: {first_line}. "
            "Expected a torch.save archive {'model_config': ..., 'model': ...}; download it again."
        ) from None


def _read_safetensors(path: Path) -> tuple[dict[str, Any] | None, dict[str, torch.Tensor]]:
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover - safetensors is a core dependency
        raise ModelLoadError("reading .safetensors needs the 'safetensors' package: pip install safetensors") from None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own SafetensorError / OSError types
        raise ModelLoadError(f"{path}: not a readable .safetensors file (truncated or corrupt): {exc}") from None
    config = None
    if "model_config" in metadata:
        try:
            config = json.loads(metadata["model_config"])
        except json.JSONDecodeError as exc:
            raise ModelLoadError(f"{path}: metadata 'model_config' is not valid JSON: {exc}") from None
    return config, tensors


def _config_beside(path: Path) -> dict[str, Any] | None:
    for name in _CONFIG_NAMES:
        candidate = path.parent / name
        if candidate.is_file():
            try:
                data = json.loads(candidate.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ModelLoadError(f"{candidate}: cannot read model config JSON: {exc}") from None
            return data.get("model_config", data) if isinstance(data, dict) else None
    return None


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read ``(model_config, state_dict)`` from a ``.pt`` / ``.safetensors`` file or a model directory."""
    path = Path(path)
    if path.is_dir():
        for name in _CHECKPOINT_NAMES:
            if (path / name).is_file():
                return read_checkpoint(path / name)
        raise ModelLoadError(f"{path}: directory holds none of {list(_CHECKPOINT_NAMES)}")
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such model file or directory")
    if path.suffix == ".safetensors":
        config, state_dict = _read_safetensors(path)
        config = config if config is not None else _config_beside(path)
        if config is None:
            raise ModelLoadError(
                f"{path}: no model_config — expected it in the safetensors metadata or in config.json beside the file"
            )
        return config, state_dict
    data = _read_torch_file(path)
    if not isinstance(data, Mapping) or "model_config" not in data or "model" not in data:
        found = sorted(map(str, data))[:8] if isinstance(data, Mapping) else type(data).__name__
        hint = ""
        if isinstance(data, Mapping) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
            hint = " It looks like a bare state dict: save it with its model_config."
        raise ModelLoadError(
            f"{path}: not a MoGe-2 checkpoint — expected a dict with 'model_config' and 'model', found {found}.{hint}"
        )
    if not isinstance(data["model"], Mapping):
        raise ModelLoadError(f"{path}: 'model' must be a state dict, found {type(data['model']).__name__}")
    return data["model_config"], dict(data["model"])


def _download_from_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ModelLoadError(
            f"'{repo_id}' looks like a Hugging Face model id, but huggingface_hub is not installed: "
            "pip install 'moge2_ros[hub]', or download model.pt and pass its path"
        ) from None
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename="model.pt"))
    except Exception as exc:  # network, auth, missing repo: hub raises many types
        raise ModelLoadError(
            f"could not fetch model.pt of '{repo_id}' from the Hugging Face Hub ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160] if str(exc) else ''}). Offline? Download it on a connected machine "
            "and pass the file path (or set HF_HOME to a cache that holds it)."
        ) from None


def resolve_model_source(source: str | os.PathLike) -> Path:
    """Local path of a model source: an existing path, or a Hugging Face id fetched into the hub cache."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    text = str(source)
    if _HF_ID.match(text) and not text.endswith((".pt", ".pth", ".safetensors")):
        return _download_from_hub(text)
    raise ModelLoadError(f"{text}: no such model file or directory (nor a Hugging Face id of the form owner/name)")


def build_model(model_config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> MoGe2Model:
    """Construct the model from its config and load the weights strictly, checking before allocating.

    The config is validated (types and plausible ranges, :class:`MoGe2Config`), the network is built on the
    ``meta`` device (shapes only, no memory) and every parameter and buffer name and shape is compared with
    ``state_dict``; only then is the network materialised on the CPU (uninitialised: every value comes from
    ``state_dict``) and loaded strictly.  A foreign or hostile file thus fails fast with :class:`ModelLoadError`.
    """
    try:
        config = MoGe2Config.from_dict(model_config)
    except ConfigError as exc:
        raise ModelLoadError(f"{source}: invalid model_config: {exc}") from None
    with torch.device("meta"):
        skeleton = MoGe2Model(config)
    check_state_dict(skeleton, state_dict, source)
    model = skeleton.to_empty(device="cpu")
    load_state_dict_strict(model, state_dict, source)
    return model


def load_model(source: str | os.PathLike, device: torch.device | str | None = None) -> MoGe2Model:
    """Load a MoGe-2 model (see the module docstring for the sources) in eval mode, float32.

    Raises:
        ModelLoadError: missing, unreadable, untrusted or mismatched checkpoint; the message says what to do.
    """
    path = resolve_model_source(source)
    config, state_dict = read_checkpoint(path)
    model = build_model(config, state_dict, str(path))
    model.eval()
    if device is not None:
        model.to(device)
    return model


class MoGeModel(MoGe2Model):
    """:class:`~moge2_ros.model.moge2.MoGe2Model` under the official class name, with the official constructor."""

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, device: torch.device | str | None = None) -> MoGe2Model:
        """Official-compatible loading: :func:`load_model` (strict key matching, weights only, eval mode, float32).

        Args:
            source: ``model.pt``, ``.safetensors``, a directory holding either, or a Hugging Face id.
            device: where to put the model (default CPU).
        Raises:
            ModelLoadError: see :func:`load_model`.
        """
        return load_model(source, device)


def save_checkpoint(model: MoGe2Model, path: str | os.PathLike, **extra: Any) -> Path:
    """Write ``{'model_config', 'model', **extra}`` in the official format, atomically (temp file + rename).

    ``.safetensors`` paths are written as safetensors with ``model_config`` JSON in the metadata.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    config = model.config.to_dict()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state_dict, tmp, metadata={"model_config": json.dumps(config)})
        else:
            torch.save({"model_config": config, "model": state_dict, **extra}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
