"""PyTorch backend options: ``torch.compile`` with token-grid bucketing and warm-up, channels-last, CUDA graphs,
pinned-memory host-to-device copies.

Compiling ``MoGe2Model.forward`` as a whole would recompile for every new image size, because the image size enters
the graph (encoder resize, uv grids, output resize).  :class:`TorchRunner` runs the forward's three pieces itself and
compiles only the middle one, :meth:`~moge2_ros.model.moge2.MoGe2Model.core` — the ViT, neck and heads, >95 % of the
work — whose shapes depend on the batch size and the token grid ``(rows, cols)`` alone; the cheap size-dependent
steps (:meth:`~moge2_ros.model.moge2.MoGe2Model.grid_inputs`,
:meth:`~moge2_ros.model.moge2.MoGe2Model.finish_outputs`) run eagerly.  The token grid is the shape bucket: every
image size whose aspect ratio gives the same grid for the budget reuses one compiled graph (at 1200 tokens all 4:3
cameras, 640×480, 1280×960, … share 30×40), so a change of camera resolution does not recompile.
:meth:`TorchRunner.warmup` compiles the grids of the expected sizes before the first frame.  Outputs equal eager up
to the float reordering of the compiler.

CUDA graphs (``cuda_graphs=True``) use ``torch.compile(mode="reduce-overhead")``: one graph is recorded per
bucket (fixed shapes inside a bucket) and replayed; outputs are cloned out of the graph's memory pool.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..errors import InputError
from ..model.moge2 import MoGe2Model
from ..model.size_ops import token_grid

LOG = logging.getLogger(__name__)

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class TorchOptions:
    """Options of the torch backend.

    Attributes:
        compile: compile the network core with ``torch.compile`` (first frame of each token grid is slow).
        compile_mode: ``torch.compile`` mode (see :data:`COMPILE_MODES`); ``cuda_graphs`` forces "reduce-overhead".
        cuda_graphs: replay CUDA graphs per token grid (CUDA only; implies ``compile``).
        channels_last: store the conv decoder's weights (and run its activations) channels-last — faster convs on
            CUDA tensor cores; no effect on the ViT.
        pinned_memory: copy images to the GPU from page-locked host memory, asynchronously (CUDA only).
    """

    compile: bool = False
    compile_mode: str = "default"
    cuda_graphs: bool = False
    channels_last: bool = False
    pinned_memory: bool = False

    def __post_init__(self) -> None:
        if self.compile_mode not in COMPILE_MODES:
            raise InputError(f"compile_mode: expected one of {', '.join(COMPILE_MODES)}, found {self.compile_mode!r}")
        if self.cuda_graphs:
            self.compile = True
            self.compile_mode = "reduce-overhead"

    @property
    def is_default(self) -> bool:
        """True when no option is on (the runner is then the plain eager model)."""
        return not (self.compile or self.channels_last or self.pinned_memory)


class _Core(nn.Module):
    """:meth:`MoGe2Model.core` as a module (what ``torch.compile`` sees), optionally on channels-last inputs."""

    def __init__(self, model: MoGe2Model, channels_last: bool) -> None:
        super().__init__()
        self.model = model
        self.channels_last = channels_last

    def forward(self, image14: torch.Tensor, pos_embed: torch.Tensor, uv: list[torch.Tensor]
                ) -> dict[str, torch.Tensor]:
        if self.channels_last:
            image14 = image14.contiguous(memory_format=torch.channels_last)
            uv = [u.contiguous(memory_format=torch.channels_last) for u in uv]
        return self.model.core(image14, pos_embed, uv)


class TorchRunner:
    """Runs ``model(batch, num_tokens)`` with :class:`TorchOptions` applied; a drop-in for the model in the
    Predictor (``runner(batch, num_tokens) -> dict`` with the outputs of :meth:`MoGe2Model.forward`).

    Args:
        model: the MoGe-2 model, already on its device (eval mode).
        options: the options.
    Raises:
        InputError: CUDA-only options on a CPU model.
    """

    def __init__(self, model: MoGe2Model, options: TorchOptions) -> None:
        self.model = model
        self.options = options
        device = model.device
        if device.type != "cuda" and (options.cuda_graphs or options.pinned_memory):
            raise InputError("cuda_graphs and pinned_memory need a CUDA device; the model is on "
                             f"{device.type}")
        if options.channels_last:
            for module in model.conv_decoder():
                module.to(memory_format=torch.channels_last)
        self._core: Callable[..., dict[str, torch.Tensor]] = _Core(model, options.channels_last)
        if options.compile:
            self._core = torch.compile(self._core, mode=options.compile_mode, dynamic=False)
        #: token-grid buckets ``(batch, rows, cols)`` already compiled (or run once eagerly)
        self.buckets: set[tuple[int, int, int]] = set()

    def bucket(self, batch: int, height: int, width: int, num_tokens: int) -> tuple[int, int, int]:
        """The shape bucket of an input: ``(batch, rows, cols)`` of its token grid."""
        rows, cols = token_grid(num_tokens, width / height)
        return batch, rows, cols

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        """Move a host batch to the model's device (pinned, non-blocking when ``pinned_memory``)."""
        device = self.model.device
        if batch.device == device:
            return batch
        if self.options.pinned_memory and batch.device.type == "cpu":
            return batch.pin_memory().to(device, non_blocking=True)
        return batch.to(device)

    def __call__(self, image: torch.Tensor, num_tokens: int) -> dict[str, torch.Tensor]:
        """Outputs of ``model(image, num_tokens)`` for a ``(B, 3, H, W)`` batch in [0, 1] on the model's device."""
        key = self.bucket(image.shape[0], image.shape[-2], image.shape[-1], num_tokens)
        if self.options.compile and key not in self.buckets:
            LOG.info("torch backend: compiling the network for token grid %dx%d (batch %d); this frame is slow",
                     key[1], key[2], key[0])
        self.buckets.add(key)
        raw = self._core(*self.model.grid_inputs(image, num_tokens))
        if self.options.cuda_graphs:  # graph outputs live in the graph's pool: copy them out before the next replay
            raw = {k: v.clone() for k, v in raw.items()}
        return self.model.finish_outputs(raw, image.shape[-2], image.shape[-1])

    def warmup(self, sizes: Sequence[tuple[int, int]], num_tokens: int, batch: int = 1,
               autocast_dtype: torch.dtype | None = None) -> list[tuple[int, int, int]]:
        """Run (and so compile) once per distinct token grid of ``sizes`` (``(height, width)`` pixels).

        Returns:
            The buckets ``(batch, rows, cols)`` that were warmed up, in order.
        """
        done = []
        device = self.model.device
        ctx: Any = (torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype not in
                    (None, torch.float32) else contextlib.nullcontext())
        for height, width in sizes:
            key = self.bucket(batch, height, width, num_tokens)
            if key in done:
                continue
            image = torch.rand(batch, 3, height, width, device=device)
            with torch.inference_mode(), ctx:
                for _ in range(3 if self.options.cuda_graphs else 1):  # cudagraph trees record on the 2nd/3rd call
                    self(image, num_tokens)
            done.append(key)
        return done
