"""ONNX Runtime backend: runs a MoGe-2 ONNX file (ours or an official one) and returns the raw forward outputs.

Execution providers are tried in the order TensorRT, CUDA, CPU (or the order given).  A requested provider that
this onnxruntime build does not have — or that fails to initialise — is skipped with a logged WARNING naming the
provider that is used instead; never silently.  The file is checked when it is loaded: a missing, empty, truncated
or foreign file, or one whose inputs / outputs are not the MoGe-2 I/O (``image`` (B,3,H,W) float, optional
``num_tokens`` int64 scalar; outputs among ``points``, ``normal``, ``mask``, ``metric_scale`` with ``points``
present) raises one :class:`~moge2_ros.errors.ModelLoadError` that says what was expected and what was found.

The outputs are the dict of :meth:`MoGe2Model.forward` as float32 torch tensors, so post-processing is the same
geometry code as for the torch backend (:meth:`moge2_ros.inference.predictor.Predictor.postprocess`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import InputError, ModelLoadError
from ..model.moge2 import OUTPUT_NAMES

LOG = logging.getLogger(__name__)

#: Short provider names accepted in configuration -> ONNX Runtime names, in the default preference order.
PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
DEFAULT_PROVIDER_ORDER = ("tensorrt", "cuda", "cpu")
#: Key prefix of the moge2_ros metadata in an exported file (written by :mod:`.onnx_export`, read here).
META_PREFIX = "moge2_ros."


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ModelLoadError("the ONNX backend needs onnxruntime: pip install onnxruntime (CPU) or onnxruntime-gpu "
                             "(CUDA / TensorRT)") from None
    return onnxruntime


def resolve_providers(requested: Sequence[str] | None, available: Sequence[str],
                      logger: logging.Logger = LOG) -> list[str]:
    """Map short names ('tensorrt', 'cuda', 'cpu' or full ONNX Runtime names) to the available ORT providers.

    Missing ones are dropped with a WARNING; CPU is appended as the last resort when nothing requested is present.

    Raises:
        InputError: an unknown provider name.
    """
    names = []
    for item in (requested if requested else DEFAULT_PROVIDER_ORDER):
        key = str(item).strip()
        full = PROVIDERS.get(key.lower(), key)
        if full not in PROVIDERS.values():
            raise InputError(f"onnx provider {item!r}: expected one of {', '.join(PROVIDERS)} "
                             f"(or their ONNX Runtime names {', '.join(PROVIDERS.values())})")
        if full not in names:
            names.append(full)
    chosen = [p for p in names if p in available]
    missing = [p for p in names if p not in available]
    if not chosen:
        chosen = ["CPUExecutionProvider"]
    if missing and requested:
        logger.warning("ONNX Runtime: execution provider(s) %s not available in this onnxruntime build "
                       "(available: %s); falling back to %s", ", ".join(missing), ", ".join(available), chosen[0])
    elif missing:
        logger.info("ONNX Runtime: %s not available; using %s", ", ".join(missing), ", ".join(chosen))
    return chosen


class OnnxRuntimeBackend:
    """A MoGe-2 ONNX model in an ONNX Runtime session.

    Args:
        path: ``.onnx`` file (exported by ``moge2-ros export-onnx`` or an official MoGe-2 ONNX file).
        providers: provider preference, short names ('tensorrt', 'cuda', 'cpu'); default all three in that order
            (those present are used).  Asking for one that is absent logs a warning and falls back.
        device_id: CUDA device index for the CUDA and TensorRT providers.
        trt_cache_dir: folder for TensorRT engine and timing caches (created); None = no engine cache.
        trt_fp16: let TensorRT build float16 engines.
        intra_op_threads: CPU threads of the session (None = ONNX Runtime's default).
        logger: where provider warnings go.
    Raises:
        ModelLoadError: unreadable, truncated or non-MoGe-2 file.  InputError: unknown provider name.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        providers: Sequence[str] | None = None,
        device_id: int = 0,
        trt_cache_dir: str | os.PathLike | None = None,
        trt_fp16: bool = False,
        intra_op_threads: int | None = None,
        logger: logging.Logger = LOG,
    ) -> None:
        ort = _import_ort()
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f"{self.path}: ONNX model file not found")
        size = self.path.stat().st_size
        if size == 0:
            raise ModelLoadError(f"{self.path}: ONNX model file is empty (0 bytes)")
        chosen = resolve_providers(providers, ort.get_available_providers(), logger)
        options = []
        for name in chosen:
            if name == "TensorrtExecutionProvider":
                trt: dict[str, Any] = {"device_id": device_id, "trt_fp16_enable": bool(trt_fp16)}
                if trt_cache_dir is not None:
                    Path(trt_cache_dir).mkdir(parents=True, exist_ok=True)
                    trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(trt_cache_dir),
                               trt_timing_cache_enable=True, trt_timing_cache_path=str(trt_cache_dir))
                options.append(trt)
            elif name == "CUDAExecutionProvider":
                options.append({"device_id": device_id})
            else:
                options.append({})
        so = ort.SessionOptions()
        so.log_severity_level = 3  # ORT's own warnings (e.g. about unused initialisers) stay quiet
        if intra_op_threads is not None:
            so.intra_op_num_threads = int(intra_op_threads)
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=so, providers=chosen,
                                                provider_options=options)
        except Exception as exc:  # onnxruntime raises InvalidProtobuf, InvalidGraph, Fail, NoSuchFile, ...
            text = " ".join(str(exc).split())[:300]
            raise ModelLoadError(f"{self.path}: not a loadable ONNX model ({size} bytes; truncated, corrupt or "
                                 f"another format): {type(exc).__name__}: {text}") from None
        self.providers = list(self.session.get_providers())
        dropped = [p for p in chosen if p not in self.providers]
        if dropped:
            logger.warning("ONNX Runtime: execution provider(s) %s failed to initialise; running on %s",
                           ", ".join(dropped), ", ".join(self.providers))
        self._check_io()
        meta = self.session.get_modelmeta().custom_metadata_map or {}
        self.metadata = {k[len(META_PREFIX):]: v for k, v in meta.items() if k.startswith(META_PREFIX)}

    # ------------------------------------------------------------------ validation
    def _check_io(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        found = (f"found inputs {[(i.name, i.type, i.shape) for i in inputs.values()]}, outputs {outputs}")
        expected = ("expected inputs image (B, 3, H, W) float and optionally num_tokens (int64 scalar); outputs "
                    "points and any of normal, mask, metric_scale")
        image = inputs.get("image")
        extra = set(inputs) - {"image", "num_tokens"}
        bad = (image is None or extra or image.type not in ("tensor(float)", "tensor(float16)")
               or len(image.shape) != 4 or image.shape[1] not in (3, "3")
               or "points" not in outputs or set(outputs) - set(OUTPUT_NAMES))
        tokens = inputs.get("num_tokens")
        if tokens is not None and (tokens.type != "tensor(int64)" or len(tokens.shape) > 1):
            bad = True
        if bad:
            raise ModelLoadError(f"{self.path}: not a MoGe-2 ONNX model: {expected}; {found}")
        self.input_names = list(inputs)
        self.output_names = outputs
        self._image_dtype = np.float16 if image.type == "tensor(float16)" else np.float32
        self._tokens_shape: tuple[int, ...] | None = None if tokens is None else tuple(1 for _ in tokens.shape)
        self.static_shape = tuple(image.shape) if all(isinstance(d, int) for d in image.shape) else None

    # ------------------------------------------------------------------ properties
    @property
    def has_num_tokens_input(self) -> bool:
        """Whether the graph takes ``num_tokens`` (dynamic exports and official files); static exports do not."""
        return self._tokens_shape is not None

    @property
    def static_num_tokens(self) -> int | None:
        """The token budget baked into a static export (from its metadata), else None."""
        value = self.metadata.get("num_tokens")
        return None if self.has_num_tokens_input or value is None else int(json.loads(value))

    @property
    def num_tokens_range(self) -> list[int]:
        """The model's token range from the file's metadata; the official default [1200, 3600] otherwise."""
        value = self.metadata.get("num_tokens_range")
        return [int(v) for v in json.loads(value)] if value else [1200, 3600]

    # ------------------------------------------------------------------ inference
    def __call__(self, image: torch.Tensor, num_tokens: int) -> dict[str, torch.Tensor]:
        """Run the network.

        Args:
            image: ``(B, 3, H, W)`` float RGB in [0, 1] (any device; copied to host memory for the session).
            num_tokens: ViT token budget.
        Returns:
            The raw outputs as float32 tensors on ``image.device``: ``points`` (B,H,W,3), ``normal`` (B,H,W,3),
            ``mask`` (B,H,W), ``metric_scale`` (B,) — those the file has.
        Raises:
            InputError: wrong image shape, or a size / token budget a static export was not made for.
        """
        if image.dim() != 4 or image.shape[1] != 3:
            raise InputError(f"ONNX backend: expected an image batch (B, 3, H, W), found {tuple(image.shape)}")
        if self.static_shape is not None and tuple(image.shape) != self.static_shape:
            raise InputError(f"{self.path.name} is a static export for input {self.static_shape}; "
                             f"found {tuple(image.shape)} (export with --dynamic for other sizes)")
        feeds: dict[str, np.ndarray] = {
            "image": image.detach().to("cpu", torch.float32).contiguous().numpy().astype(self._image_dtype, copy=False)}
        if self._tokens_shape is not None:
            feeds["num_tokens"] = np.full(self._tokens_shape, int(num_tokens), dtype=np.int64)
        elif self.static_num_tokens is not None and int(num_tokens) != self.static_num_tokens:
            raise InputError(f"{self.path.name} is a static export for {self.static_num_tokens} tokens; "
                             f"found {num_tokens}")
        values = self.session.run(self.output_names, feeds)
        return {name: torch.from_numpy(np.asarray(v, dtype=np.float32)).to(image.device)
                for name, v in zip(self.output_names, values)}
