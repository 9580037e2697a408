"""One way to make a :class:`~moge2_ros.inference.predictor.Predictor` from user options.

Every entry point that takes a model from its user — the ``moge2-ros`` subcommands, ``moge2_node``, ``bag-infer``
— describes what it wants as a :class:`PredictorOptions` and calls :func:`load_predictor`: model source (or the
bundled demo model), device resolution, backend (torch with its options, or ONNX Runtime), precision, token budget,
filters.  Nothing else in the package builds a Predictor from strings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InputError, ModelLoadError

if TYPE_CHECKING:  # pragma: no cover
    from .predictor import Predictor

__all__ = ["PredictorOptions", "load_predictor"]


@dataclass(frozen=True)
class PredictorOptions:
    """What a user chooses about inference (units and meanings as :class:`Predictor`).

    Attributes:
        model: model source for :func:`moge2_ros.checkpoints.load_model` (``model.pt``, ``.safetensors``, a
            directory or a Hugging Face id); None or "" = the bundled demo model (torch backend), or no torch model
            at all (onnx backend: the ONNX file is the model).
        device: 'auto' / None (CUDA when present, else CPU), 'cpu', 'cuda', 'cuda:N'; never a silent fall-back.
        precision: 'fp32', 'fp16', 'bf16' (autocast) or 'auto' (fp16 on CUDA, bf16 on a CPU with native bf16, else
            fp32: :mod:`moge2_ros.inference.precision`; the predictor's ``precision_note`` says which).
        resolution_level: 0..9, the official token-budget level (ignored when ``num_tokens`` is set).
        num_tokens: explicit ViT token budget (None = from ``resolution_level``).
        edge_rtol: flying-pixel filter threshold (None = off).
        depth_range: ``(min, max)`` metres kept (None = all).
        estimate_normals: normals from the points for models without a normal head.
        max_pixels: largest accepted image (pixels); None = what ``memory_budget_mb`` allows.
        memory_budget_mb: working memory one frame may use above the model, MiB (None = the device's default);
            see :mod:`moge2_ros.inference.budget`.
        backend: 'torch' or 'onnx'.
        onnx_path, onnx_providers, onnx_cache_dir: the ONNX Runtime backend's file, providers (empty = all, in the
            order TensorRT, CUDA, CPU) and TensorRT cache folder.
        compile, cuda_graphs, channels_last, pinned_memory: the torch backend's options
            (:class:`~moge2_ros.backends.torch_options.TorchOptions`).
    """

    model: str | None = None
    device: str | None = None
    precision: str = "fp32"
    resolution_level: int = 9
    num_tokens: int | None = None
    edge_rtol: float | None = None
    depth_range: tuple[float, float] | None = None
    estimate_normals: bool = True
    max_pixels: int | None = None
    memory_budget_mb: float | None = None
    backend: str = "torch"
    onnx_path: str | None = None
    onnx_providers: tuple[str, ...] = ()
    onnx_cache_dir: str | None = None
    compile: bool = False
    cuda_graphs: bool = False
    channels_last: bool = False
    pinned_memory: bool = False


def load_predictor(options: PredictorOptions, say: Callable[[str], None] | None = None) -> "Predictor":
    """Load the model and build the :class:`Predictor` that ``options`` describe.

    Args:
        options: the user's choices.
        say: where a note goes when the bundled demo model is used (default: nowhere).
    Returns:
        The predictor; ``predictor.model_id`` names what it runs (the model source, or the ONNX file).
    Raises:
        InputError: bad options (device, precision, backend, token budget, ...).
        ModelLoadError: the model (or ONNX file) cannot be loaded.
    """
    from ..assets import model_source
    from ..checkpoints import load_model
    from .predictor import Predictor, resolve_device

    device = resolve_device(options.device)
    common = dict(device=device, dtype=options.precision, resolution_level=options.resolution_level,
                  num_tokens=options.num_tokens, edge_rtol=options.edge_rtol, depth_range=options.depth_range,
                  estimate_normals=options.estimate_normals, max_pixels=options.max_pixels,
                  memory_budget_mb=options.memory_budget_mb)
    if options.backend == "onnx":
        if not options.onnx_path:
            raise ModelLoadError("backend 'onnx' needs an ONNX file (onnx_path: from 'moge2-ros export-onnx' or an "
                                 "official export)")
        model = load_model(options.model, device=device) if options.model else None
        return Predictor(model, backend="onnx", onnx_path=options.onnx_path,
                         onnx_providers=list(options.onnx_providers) or None,
                         onnx_cache_dir=options.onnx_cache_dir or None, model_id=str(options.onnx_path), **common)
    if options.backend != "torch":
        raise InputError(f"backend: expected torch or onnx, found {options.backend!r}")
    if options.onnx_path:
        raise InputError("an ONNX file is given but the backend is 'torch'; use backend 'onnx'")
    source = model_source(options.model, say)
    from ..backends.torch_options import TorchOptions

    torch_options = TorchOptions(compile=options.compile, cuda_graphs=options.cuda_graphs,
                                 channels_last=options.channels_last, pinned_memory=options.pinned_memory)
    return Predictor(load_model(source, device=device), torch_options=torch_options, model_id=source, **common)
