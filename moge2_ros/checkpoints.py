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
import socket
import warnings
from pathlib import Path
from urllib.parse import urlparse
from typing import Any, Mapping

import torch

from .errors import ConfigError, ModelLoadError
from .io.atomic import atomic_path
from .model.config import MoGe2Config
from .model.moge2 import MoGe2Model
from .model.state_dict import check_state_dict, load_state_dict_strict

_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CHECKPOINT_NAMES = ("model.pt", "model.safetensors")
_CONFIG_NAMES = ("config.json", "model_config.json")


_ZIP_MAGIC = b"PK\x03\x04"
#: A torch.save file in the legacy (non-zip) format: pickle protocol 2 then torch's magic number as a long.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def first_line(text: object, limit: int = 300) -> str:
    """The first line of ``str(text)``, cut at a word boundary with '...' when longer than ``limit``."""
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0] if " " in line[:limit] else line[:limit]
    return cut + " ..."


def sniff_file_kind(path: Path) -> str:
    """What a file is, from its first bytes: 'empty', 'zip' (torch.save), 'legacy_torch', 'pickle',
    'safetensors', 'text' or 'unknown'."""
    with path.open("rb") as f:
        head = f.read(64)
    size = path.stat().st_size
    if not head:
        return "empty"
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if head.startswith(_LEGACY_TORCH_MAGIC):
        return "legacy_torch"
    if len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8:
        return "safetensors"
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    text = head.decode("utf-8", errors="ignore")  # a multi-byte character cut at byte 64 is still text
    if len(text.encode("utf-8")) >= len(head) - 3 and all(c.isprintable() or c in "\t\r\n" for c in text):
        return "text"
    return "unknown"


def _not_a_checkpoint(path: Path, kind: str) -> ModelLoadError:
    size = path.stat().st_size
    what = {"empty": "an empty file", "text": "a text file", "unknown": "not a file format this loader knows"}[kind]
    start = ""
    if kind == "text":
        start = f" (it starts with {first_line(path.read_bytes()[:80].decode('utf-8', 'replace'), 60)!r})"
    return ModelLoadError(
        f"{path}: not a model checkpoint — {what}{start}, {size} bytes. Expected an official model.pt "
        "(a torch.save zip archive holding {'model_config', 'model'}), a .safetensors file, a folder holding "
        "either, or a Hugging Face id."
    )


def _read_torch_file(path: Path) -> Any:
    kind = sniff_file_kind(path)
    if kind in ("empty", "text", "unknown"):
        raise _not_a_checkpoint(path, kind)
    # Third-party warnings (e.g. torch's "Detected pickle protocol 4") are folded into the one error on failure
    # and re-issued on success, so a refused file gives exactly one message.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch.load raises many types on bad input (RuntimeError, KeyError, EOFError, ...)
            error = exc
        else:
            error = None
    if error is None:
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return data
    noted = "; ".join(dict.fromkeys(first_line(w.message, 160) for w in caught))
    noted = f" (torch also warned: {noted})" if noted else ""
    if kind == "pickle":
        raise ModelLoadError(
            f"{path}: not a model checkpoint — a plain Python pickle, not a torch.save archive; refused to load, "
            f"since unpickling it could run arbitrary code{noted}. Re-save it with torch.save as "
            "{'model_config': dict, 'model': state_dict} or as .safetensors from a trusted environment."
        ) from None
    if isinstance(error, pickle.UnpicklingError) and "Weights only load failed" in str(error):
        raise ModelLoadError(
            f"{path}: refused to load — the file holds Python objects other than tensors and plain containers, "
            "and loading them could run arbitrary code (torch.load weights_only=True). Re-save it as "
            "{'model_config': dict, 'model': state_dict} or as .safetensors from a trusted environment."
        ) from None
    raise ModelLoadError(
        f"{path}: not a readable PyTorch checkpoint ({path.stat().st_size} bytes; truncated, corrupt or another "
        f"format): {type(error).__name__}: {first_line(error, 200)}{noted}. "
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
    if path.suffix == ".safetensors" or sniff_file_kind(path) == "safetensors":
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


def _hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks not to contact the Hub (the values huggingface_hub accepts as true)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """A TCP connection to the Hub endpoint (``HF_ENDPOINT``) opens within ``timeout_s``: no retries, no HTTP."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _download_from_hub(repo_id: str) -> Path:
    """``model.pt`` of ``repo_id``: from the local Hugging Face cache if it is there, else downloaded.

    Fails fast, without the hub client's retries, when ``HF_HUB_OFFLINE`` is set or the Hub cannot be reached.
    """
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ModelLoadError(
            f"'{repo_id}' looks like a Hugging Face model id, but huggingface_hub is not installed: "
            "pip install 'moge2_ros[hub]', or download model.pt and pass its path"
        ) from None
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename="model.pt", local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError) or a cache the client cannot read: ask the Hub
        pass
    fix = ("Download model.pt on a connected machine and pass its path, or point HF_HOME at a Hugging Face cache "
           "that holds it.")
    if _hub_offline():
        raise ModelLoadError(
            f"'{repo_id}': model.pt is not in the local Hugging Face cache and HF_HUB_OFFLINE is set, so the Hub "
            f"was not contacted. {fix}"
        )
    if not _hub_reachable():
        raise ModelLoadError(
            f"'{repo_id}': model.pt is not in the local Hugging Face cache and the Hub "
            f"({os.environ.get('HF_ENDPOINT', 'https://huggingface.co')}) cannot be reached (offline?). {fix}"
        )
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename="model.pt"))
    except Exception as exc:  # auth, missing repo or file, network failure mid-way: hub raises many types
        raise ModelLoadError(
            f"'{repo_id}': could not fetch model.pt from the Hugging Face Hub ({type(exc).__name__}: "
            f"{first_line(exc)}). Check the id (owner/name) and your access to it; or: {fix}"
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
    """Write ``{'model_config', 'model', **extra}`` in the official format, atomically (temp file + rename, mode
    ``0o666 & ~umask`` like any new file: :func:`moge2_ros.io.atomic.atomic_path`).

    ``.safetensors`` paths are written as safetensors with ``model_config`` JSON in the metadata.
    """
    path = Path(path)
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    config = model.config.to_dict()
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state_dict, str(tmp), metadata={"model_config": json.dumps(config)})
        else:
            torch.save({"model_config": config, "model": state_dict, **extra}, tmp)
    return path
