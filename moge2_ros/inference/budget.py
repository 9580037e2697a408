"""The frame budget: worst-case memory and time of one frame from its pixels, the token count and the model.

A frame's working memory has two parts (measured by ``bench/bench_budget.py``, see docs/BENCHMARKS.md):

* **per pixel**: the decoded image, the full-resolution maps (points, depth, normals, mask, the resize of the
  head outputs, the edge filter) and every output's encoded bytes: :data:`BYTES_PER_PIXEL`;
* **per token**: the network's activations.  They scale with the token count times a structural width of the
  model (:func:`activation_elements_per_token`: the ViT block's live tensors and the conv decoder's five levels,
  level ``l`` at ``4**l`` pixels per token); :data:`ACTIVATION_FACTOR` turns that count into bytes measured.

``frame_cost(config, pixels, tokens)`` adds them up with a fixed overhead; :class:`FrameBudget` turns a memory
budget into limits: the largest image for a token count, the largest token count for an image, and a check
with a short reason.  The node, ``infer``, ``bag-infer``, ``eval`` and ``refine`` use the same limits
(:meth:`Predictor.check_frame <moge2_ros.inference.Predictor.check_frame>`).

Time is estimated from the model's multiply-adds (:func:`macs_per_token`) at a measured rate per device; it is a
guide (logged, shown in rejections), memory is what is enforced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

from ..errors import BudgetError, InputError
from ..model.config import ConvStackConfig, MoGe2Config

#: Bytes of working memory per image pixel with every output asked for: 113 measured for the pipeline
#: (bench/bench_budget.py, 11 MP frames), plus the node's message copies (~40: cloud, images), rounded up.
BYTES_PER_PIXEL: Final[int] = 160
#: Bytes of activation memory per structural activation element (:func:`activation_elements_per_token`), fp32,
#: measured on the demo and reference models (bench/bench_budget.py slopes: 1.4-3.2 bytes per element over two
#: runs), with margin for the network's and the post-processing's peaks coinciding.
ACTIVATION_FACTOR: Final[float] = 4.5
#: Fixed working memory of a frame (allocator slack, small tensors), bytes.
FIXED_BYTES: Final[int] = 48 << 20
#: Multiply-adds per second of this package's forward, by device type (measured, conservative: a slow machine's
#: rate, so times are over- rather than under-estimated).
MACS_PER_SECOND: Final[dict[str, float]] = {"cpu": 2.0e10, "cuda": 5.0e12}
#: Seconds per image pixel outside the network (decode, resize, post-processing, encoding), CPU.
SECONDS_PER_PIXEL: Final[float] = 1.0e-6
#: A token count beyond this many times the model's trained maximum is refused: it adds cost, not detail.
MAX_TOKEN_FACTOR: Final[int] = 4
#: Activation bytes per token assumed for an ONNX file without its model configuration: the official ViT-S/B/L
#: decoder's (:func:`activation_elements_per_token` = 108 k elements) times :data:`ACTIVATION_FACTOR`, rounded up.
UNKNOWN_MODEL_BYTES_PER_TOKEN: Final[int] = 512 << 10
#: Default memory budget on a CPU: this much, or a quarter of the machine's memory if that is less.
DEFAULT_CPU_BUDGET_MB: Final[int] = 2048


def _stack_elements(stack: ConvStackConfig) -> tuple[float, float]:
    """``(peak, kept)`` activation elements per token of one conv stack: the busiest level's live tensors
    (input, two norm/activation pairs, hidden conv, output, skip sum) and the outputs every level keeps."""
    peak = kept = 0.0
    for level, (width, out) in enumerate(zip(stack.dim_res_blocks, stack.dim_out)):
        area = 4.0 ** level
        hidden = width * stack.dim_times_res_block_hidden
        peak = max(peak, area * (5 * width + 3 * hidden))
        kept += area * (out if out is not None else width)
    return peak, kept


def activation_elements_per_token(config: MoGe2Config) -> float:
    """Structural count of the activation elements one token costs at the forward's peak: the larger of the
    encoder's (a ViT block's live tensors plus the intermediate features kept) and the decoder's (neck outputs kept
    plus the busiest stack's working set)."""
    vit = config.encoder.backbone
    encoder = vit.embed_dim * (6 + 2 * vit.mlp_ratio + len(config.encoder.layer_indices())) + config.encoder.dim_out
    neck_peak, neck_kept = _stack_elements(config.neck)
    heads = [h for h in (config.points_head, config.normal_head, config.mask_head) if h is not None]
    head_peak = max((_stack_elements(h)[0] for h in heads), default=0.0)
    head_outputs = sum(_stack_elements(h)[1] for h in heads)
    decoder = max(neck_peak, neck_kept + head_peak + head_outputs)
    return float(max(encoder, decoder))


def _stack_macs(stack: ConvStackConfig) -> float:
    macs = 0.0
    for level, (c_in, width, out, blocks) in enumerate(
            zip(stack.dim_in, stack.dim_res_blocks, stack.dim_out, stack.num_res_blocks)):
        area = 4.0 ** level
        hidden = width * stack.dim_times_res_block_hidden
        macs += area * ((c_in or 0) * width + blocks * 9 * 2 * width * hidden + (out or 0) * width)
        if level + 1 < len(stack.dim_res_blocks):  # 2x resampler into the next level: ~2 convs at 4x area
            macs += 4.0 * area * 9 * width * stack.dim_res_blocks[level + 1] * 1.5
    return macs


def macs_per_token(config: MoGe2Config, tokens: int) -> float:
    """Multiply-adds per token of the forward at ``tokens`` tokens (ViT blocks incl. attention, conv decoder)."""
    vit = config.encoder.backbone
    d = vit.embed_dim
    encoder = vit.depth * (4 * d * d + 2 * vit.mlp_ratio * d * d + 2 * tokens * d)
    stacks = [config.neck, *(h for h in (config.points_head, config.normal_head, config.mask_head) if h is not None)]
    return float(encoder + sum(_stack_macs(s) for s in stacks))


@dataclass(frozen=True)
class FrameCost:
    """Estimated worst case of one frame.

    Attributes:
        memory_bytes: working memory above the loaded model's, bytes.
        time_s: wall time on the device type it was estimated for, seconds (a guide).
    """

    memory_bytes: int
    time_s: float

    @property
    def memory_mb(self) -> float:
        return self.memory_bytes / 2**20


def _cost(per_token_bytes: float, config: MoGe2Config | None, pixels: int, tokens: int, device_type: str,
          batch: int) -> FrameCost:
    """The one cost formula: memory = fixed + batch x (pixels x bytes per pixel + tokens x bytes per token); time
    from the model's MACs (nan without a configuration)."""
    memory = FIXED_BYTES + batch * (BYTES_PER_PIXEL * pixels + per_token_bytes * tokens)
    if config is None:
        return FrameCost(int(memory), float("nan"))
    rate = MACS_PER_SECOND.get(device_type, MACS_PER_SECOND["cpu"])
    time_s = batch * (macs_per_token(config, tokens) * tokens / rate + SECONDS_PER_PIXEL * pixels)
    return FrameCost(int(memory), float(time_s))


def frame_cost(config: MoGe2Config, pixels: int, tokens: int, device_type: str = "cpu", batch: int = 1) -> FrameCost:
    """The :class:`FrameCost` of ``batch`` images of ``pixels`` pixels at ``tokens`` tokens on a ``device_type``
    device."""
    per_token = ACTIVATION_FACTOR * activation_elements_per_token(config)
    return _cost(per_token, config, pixels, tokens, device_type, batch)


def default_budget_mb(device_type: str = "cpu") -> int:
    """The default memory budget (MiB) of a device type: on a CPU :data:`DEFAULT_CPU_BUDGET_MB` or a quarter of
    the machine's memory if less; on CUDA half of the device's free memory at the call."""
    if device_type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return max(256, int(free / 2**20 / 2))
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return DEFAULT_CPU_BUDGET_MB
    return max(256, min(DEFAULT_CPU_BUDGET_MB, int(total / 2**20 / 4)))


def _pixels_text(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP" if pixels >= 100_000 else f"{pixels} pixels"


class FrameBudget:
    """Limits that keep every frame of one model within a memory budget.

    Args:
        budget_mb: working memory a frame may use above the loaded model, MiB (> 0, finite).
        config: the model's configuration (its structure and trained token range), or None for an ONNX file
            without one (then :data:`UNKNOWN_MODEL_BYTES_PER_TOKEN` and ``num_tokens_range`` are used).
        num_tokens_range: the trained ``(min, max)`` tokens when ``config`` is None.
        device_type: ``cpu`` or ``cuda`` (time estimates).

    Raises:
        InputError: a budget that is not a positive finite number.
    """

    def __init__(self, budget_mb: float, config: MoGe2Config | None = None,
                 num_tokens_range: tuple[int, int] = (1200, 3600), device_type: str = "cpu") -> None:
        if not 0 < budget_mb < float("inf"):
            raise InputError(f"memory budget must be a positive number of MiB, found {budget_mb:g}")
        self.config = config
        self.budget_mb = float(budget_mb)
        self.device_type = device_type
        self.trained_max = int(config.num_tokens_range[1] if config is not None else num_tokens_range[1])
        self.max_tokens = MAX_TOKEN_FACTOR * self.trained_max
        self._per_token = (ACTIVATION_FACTOR * activation_elements_per_token(config) if config is not None
                           else float(UNKNOWN_MODEL_BYTES_PER_TOKEN))

    def cost(self, pixels: int, tokens: int, batch: int = 1) -> FrameCost:
        """The :class:`FrameCost` of ``batch`` images of ``pixels`` pixels each at ``tokens`` tokens (time: nan
        without a model configuration)."""
        return _cost(self._per_token, self.config, pixels, tokens, self.device_type, batch)

    def max_pixels(self, tokens: int) -> int:
        """The largest image (pixels) that fits the budget at ``tokens`` tokens (0 if none does)."""
        spare = self.budget_mb * 2**20 - self.cost(0, tokens).memory_bytes
        return max(0, int(spare // BYTES_PER_PIXEL))

    def check_tokens(self, tokens: int, min_pixels: int = 640 * 480) -> None:
        """Raise :class:`InputError` when ``tokens`` exceeds :attr:`max_tokens` or leaves room for no image of
        ``min_pixels`` pixels within the budget."""
        if tokens > self.max_tokens:
            raise BudgetError(f"{tokens} tokens is more than {MAX_TOKEN_FACTOR}x the model's trained maximum "
                             f"({self.trained_max}): at most {self.max_tokens}")
        if self.max_pixels(tokens) < min_pixels:
            need = self.cost(min_pixels, tokens).memory_mb
            raise BudgetError(f"{tokens} tokens leave no room for a {_pixels_text(min_pixels)} image in the memory "
                             f"budget of {self.budget_mb:.0f} MiB (it needs ~{need:.0f} MiB)")

    def check(self, pixels: int, tokens: int, what: str = "frame", batch: int = 1) -> None:
        """Raise :class:`InputError` with a short reason when ``batch`` images of ``pixels`` pixels at ``tokens``
        tokens exceed the memory budget, or ``tokens`` the token limit."""
        if tokens > self.max_tokens:
            raise BudgetError(f"{what}: {tokens} tokens is more than {MAX_TOKEN_FACTOR}x the model's trained maximum "
                             f"({self.trained_max}): at most {self.max_tokens}")
        cost = self.cost(pixels, tokens, batch)
        if cost.memory_mb > self.budget_mb:
            per = " each" if batch > 1 else ""
            raise BudgetError(
                f"{what}: {_pixels_text(pixels)}{per} at {tokens} tokens needs ~{cost.memory_mb:.0f} MiB, over the "
                f"memory budget of {self.budget_mb:.0f} MiB (one image at {tokens} tokens: at most "
                f"{_pixels_text(self.max_pixels(tokens))})")

    def describe(self, tokens: int, pixels: int = 640 * 480) -> str:
        """One line for logs: the budget, the limits it implies and the cost of a ``pixels`` frame."""
        cost = self.cost(pixels, tokens)
        timing = f", ~{cost.time_s * 1e3:.0f} ms" if cost.time_s == cost.time_s else ""
        return (f"memory budget {self.budget_mb:.0f} MiB per frame: at {tokens} tokens images up to "
                f"{_pixels_text(self.max_pixels(tokens))}, at most {self.max_tokens} tokens; a "
                f"{_pixels_text(pixels)} frame needs ~{cost.memory_mb:.0f} MiB{timing}")
