"""The robot-facing inference API: image in, metric :class:`Geometry` out."""

from __future__ import annotations

import contextlib
import math
from dataclasses import replace
import os
from types import SimpleNamespace
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from ..errors import BudgetError, InputError
from ..geometry.edges import depth_edge_mask
from ..geometry.intrinsics import intrinsics_to_fov, normalized_to_pixel_intrinsics, pixel_to_normalized_intrinsics
from ..geometry.normals import normals_from_points
from ..geometry.postprocess import metric_geometry, recover_camera
from ..io.plausibility import check_intrinsics
from ..model.moge2 import MoGe2Model
from .budget import FrameBudget, default_budget_mb
from .precision import precision_note, resolve_precision
from .preprocess import DEFAULT_MAX_PIXELS, ImageLike, image_to_batch, intrinsics_to_batch
from .result import Geometry
from .temporal import IntrinsicsStabilizer

if TYPE_CHECKING:  # pragma: no cover
    from ..backends.torch_options import TorchOptions

BACKENDS = ("torch", "onnx")
#: The ``resolution_level`` everyone defaults to; at this value (and no ``num_tokens``) no budget was asked for.
DEFAULT_RESOLUTION_LEVEL = 9

_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``torch.float32 | float16 | bfloat16`` or the strings 'fp32' / 'fp16' / 'bf16'."""
    if isinstance(dtype, str):
        if dtype not in _PRECISIONS:
            raise InputError(f"precision: expected one of {sorted(_PRECISIONS)}, found {dtype!r}")
        return _PRECISIONS[dtype]
    if dtype not in _PRECISIONS.values():
        raise InputError(f"dtype: expected float32, float16 or bfloat16, found {dtype}")
    return dtype


def resolve_device(name: str | None) -> torch.device:
    """The inference device for a user's choice: None / 'auto' -> CUDA when present, else CPU; 'cpu', 'cuda',
    'cuda:N'.  A CUDA device that is absent is an error, never a silent CPU fall-back.

    Raises:
        InputError: malformed name, CUDA requested without CUDA, or a device index that does not exist.
    """
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InputError(f"device {name!r}: expected auto, cpu, cuda or cuda:N ({exc})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r}: CUDA is not available here (torch.cuda.is_available() is False); "
                             "use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type != "cpu":
        raise InputError(f"device {name!r}: expected auto, cpu, cuda or cuda:N")
    return device


class Predictor:
    """Runs a MoGe-2 model on images and returns metric geometry in the camera optical frame.

    Args:
        model: a loaded :class:`MoGe2Model` (moved to ``device``; kept in float32).
        device: 'cpu', 'cuda', 'cuda:1', ... (default: the model's device).
        dtype: network precision — float32, or float16 / bfloat16 autocast (on CUDA; bf16 also works on CPU),
            or ``"auto"`` (:func:`~moge2_ros.inference.precision.resolve_precision`: fp16 on CUDA, bf16 on a CPU
            with native bf16, else fp32; :attr:`precision_note` says which and why).  Post-processing always
            runs in float32.
        resolution_level: 0..9, the official token-budget level (ignored when ``num_tokens`` is given).
        num_tokens: explicit ViT token budget (e.g. 1200, 2400, 3600).
            A static ONNX export serves one budget (:meth:`budget_for`): with no budget asked for (``num_tokens``
            None and ``resolution_level`` at its default 9) the file's is adopted (``budget_note`` says so);
            a different budget asked for is refused with an InputError that gives the fix.
        edge_rtol: when set, pixels at depth discontinuities whose relative depth change in a 3×3 window exceeds
            this are invalidated ("flying pixels"); None keeps them (official behaviour).
        depth_range: ``(min, max)`` metres; depth outside it is invalidated (None = keep everything).
        estimate_normals: for models without a normal head, compute normals from the metric points.
        compile: wrap the network forward in ``torch.compile`` (first call per input size is slow).
        max_pixels: largest accepted image (pixels); None = what the memory budget allows at the current token
            count (:meth:`pixel_limit`).  A value the budget cannot serve is refused.
        memory_budget_mb: working memory a frame may use above the loaded model, MiB (None = the device's
            default, :func:`~moge2_ros.inference.budget.default_budget_mb`).  Every image and every token count
            is checked against it (:attr:`budget`, a :class:`~moge2_ros.inference.budget.FrameBudget`) before
            anything frame-sized is allocated.
        backend: 'torch' (default) or 'onnx' (ONNX Runtime; ``model`` may then be None).
        onnx_path: the ``.onnx`` file of the 'onnx' backend (``moge2-ros export-onnx`` or an official file).
        onnx_providers: ONNX Runtime providers in order of preference ('tensorrt', 'cuda', 'cpu'; default all
            three, those present are used; a requested one that is absent logs a warning and falls back).
        onnx_cache_dir: TensorRT engine / timing cache folder (None: no cache).
        torch_options: :class:`~moge2_ros.backends.torch_options.TorchOptions` of the 'torch' backend
            (token-grid-bucketed ``torch.compile``, CUDA graphs, channels-last, pinned memory).
        model_id: what the predictor runs, for logs and output metadata (a model source or an ONNX file).
    """

    def __init__(
        self,
        model: MoGe2Model | None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str = torch.float32,
        resolution_level: int = DEFAULT_RESOLUTION_LEVEL,
        num_tokens: int | None = None,
        edge_rtol: float | None = None,
        depth_range: tuple[float, float] | None = None,
        estimate_normals: bool = True,
        compile: bool = False,
        max_pixels: int | None = None,
        memory_budget_mb: float | None = None,
        backend: str = "torch",
        onnx_path: str | os.PathLike | None = None,
        onnx_providers: Sequence[str] | None = None,
        onnx_cache_dir: str | os.PathLike | None = None,
        torch_options: "TorchOptions | None" = None,
        model_id: str = "",
    ) -> None:
        if backend not in BACKENDS:
            raise InputError(f"backend: expected one of {', '.join(BACKENDS)}, found {backend!r}")
        self.backend = backend
        self.model_id = model_id
        if isinstance(dtype, str) and dtype == "auto":
            target = (torch.device(device) if device is not None
                      else model.device if model is not None and backend == "torch" else torch.device("cpu"))
            name, why = resolve_precision("auto", target, backend)
            dtype = name
        else:
            why = "as asked"
        self.dtype = parse_dtype(dtype)
        #: The network precision in use ('fp32', 'fp16', 'bf16') and one line on why and what it costs.
        self.precision = {v: k for k, v in _PRECISIONS.items()}[self.dtype]
        self.precision_note = precision_note(self.precision, why)
        self.pin_memory = False
        if backend == "onnx":
            self._init_onnx(model, device, onnx_path, onnx_providers, onnx_cache_dir, compile, torch_options)
        else:
            if model is None:
                raise InputError("the torch backend needs a model (load one with moge2_ros.load_model)")
            if onnx_path is not None:
                raise InputError("onnx_path is given but backend is 'torch'; use backend='onnx'")
            if not model.has_head("points_head"):
                raise InputError("the model has no points head: it cannot predict geometry")
            self.device = torch.device(device) if device is not None else model.device
            self.model = model.to(self.device).eval()
            self._num_tokens_range = list(model.num_tokens_range)
            if torch_options is not None and compile:
                torch_options.compile = True
            if torch_options is not None and not torch_options.is_default:
                from ..backends.torch_options import TorchRunner

                runner = TorchRunner(self.model, torch_options)
                self.pin_memory = torch_options.pinned_memory
                self._forward: Callable[..., dict[str, torch.Tensor]] = runner
            else:
                self._forward = torch.compile(self.model) if compile else self.model
        config = model.config if model is not None else None
        budget_mb = memory_budget_mb if memory_budget_mb is not None else default_budget_mb(self.device.type)
        #: The frame memory budget and the limits it implies (images, token counts).
        self.budget = FrameBudget(budget_mb, config, tuple(self._num_tokens_range), self.device.type)
        #: A start-up note when the budget was not the one asked for (a static export's adopted budget), else None.
        self.budget_note: str | None = None
        self.num_tokens = self.budget_for(num_tokens, resolution_level)
        static = self.static_num_tokens
        if static is not None and num_tokens is None and resolution_level == DEFAULT_RESOLUTION_LEVEL:
            self.budget_note = (f"{self.onnx.path.name} is a static export for {static} tokens: running at "
                                f"{static} tokens (its budget; export with --dynamic to choose one at run time)")
        if edge_rtol is not None and not (edge_rtol > 0 and math.isfinite(edge_rtol)):
            raise InputError(f"edge_rtol must be a positive number or None, found {edge_rtol}")
        self.edge_rtol = edge_rtol
        if depth_range is not None:
            lo, hi = (float(v) for v in depth_range)
            if not (0 <= lo < hi):
                raise InputError(f"depth_range must satisfy 0 <= min < max, found {depth_range}")
            depth_range = (lo, hi)
        self.depth_range = depth_range
        self.estimate_normals = estimate_normals
        self.check_max_pixels(max_pixels)
        #: Explicit image limit (pixels), or None for the budget's (:meth:`pixel_limit`).
        self.max_pixels = max_pixels

    def _init_onnx(self, model: MoGe2Model | None, device: torch.device | str | None,
                   onnx_path: str | os.PathLike | None, providers: Sequence[str] | None,
                   cache_dir: str | os.PathLike | None, compile: bool, torch_options: "TorchOptions | None") -> None:
        from ..backends.onnx_runtime import OnnxRuntimeBackend

        if onnx_path is None:
            raise InputError("backend 'onnx' needs onnx_path (a .onnx file from 'moge2-ros export-onnx')")
        if compile or (torch_options is not None and not torch_options.is_default):
            raise InputError("compile / torch_options apply to the torch backend, not to backend 'onnx'")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        runtime = OnnxRuntimeBackend(onnx_path, providers=providers, device_id=self.device.index or 0,
                                     trt_cache_dir=cache_dir, trt_fp16=self.dtype == torch.float16)
        self.model = model
        self.onnx = runtime
        self._num_tokens_range = list(model.num_tokens_range) if model is not None else runtime.num_tokens_range
        self._forward = runtime

    @property
    def static_num_tokens(self) -> int | None:
        """The one token budget a static ONNX export serves; None when any budget works (torch, dynamic ONNX)."""
        return self.onnx.static_num_tokens if self.backend == "onnx" else None

    def budget_for(self, num_tokens: int | None, resolution_level: int = DEFAULT_RESOLUTION_LEVEL) -> int:
        """The token budget this predictor runs for a user's ``num_tokens`` (None = not set) and
        ``resolution_level``.

        Rule for a static ONNX export (one baked-in budget): nothing asked for (no ``num_tokens``, level at its
        default 9) -> the file's budget; a budget asked for that equals the file's -> that; any other -> refused.

        Any budget is also checked against the memory budget (:meth:`FrameBudget.check_tokens`: at most
        ``MAX_TOKEN_FACTOR`` times the model's trained maximum, and room left for a 640x480 image).

        Raises:
            InputError: a non-positive ``num_tokens``, a level outside 0..9, a budget that a static export
                cannot serve (the message names the fix), or one over the memory budget.
        """
        if num_tokens is not None and num_tokens <= 0:
            raise InputError(f"num_tokens must be positive, found {num_tokens}")
        asked = num_tokens if num_tokens is not None else self.num_tokens_for_level(resolution_level)
        static = self.static_num_tokens
        if static is None or asked == static:
            self.budget.check_tokens(asked)
            return asked
        if num_tokens is None and resolution_level == DEFAULT_RESOLUTION_LEVEL:
            return static
        what = (f"num_tokens {num_tokens}" if num_tokens is not None
                else f"resolution_level {resolution_level} (= {asked} tokens)")
        raise InputError(f"{self.onnx.path.name} is a static export for {static} tokens, but {what} was asked for; "
                         f"re-export with 'moge2-ros export-onnx --dynamic' (any budget) or '--num-tokens {asked}', "
                         f"or ask for {static} tokens (node: num_tokens:={static}; CLI: --num-tokens {static})")

    def num_tokens_for_level(self, resolution_level: int) -> int:
        """The official token budget of a resolution level 0..9 for this predictor's model (torch or ONNX)."""
        return MoGe2Model.num_tokens_for_level(SimpleNamespace(num_tokens_range=self._num_tokens_range),  # type: ignore[arg-type]
                                               resolution_level)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32 or self.backend == "onnx":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def check_max_pixels(self, max_pixels: int | None, num_tokens: int | None = None) -> None:
        """Raise :class:`InputError` when an explicit image limit ``max_pixels`` (None = the budget's: always
        fine) is not a positive integer or is more than the memory budget allows at ``num_tokens`` tokens
        (default: the current count)."""
        if max_pixels is None:
            return
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
            raise InputError(f"max_pixels must be a positive integer or None, found {max_pixels!r}")
        tokens = self.num_tokens if num_tokens is None else num_tokens
        allowed = self._budget_pixels(tokens)
        if max_pixels > allowed:
            raise BudgetError(f"max_pixels {max_pixels} is more than the memory budget of {self.budget.budget_mb:.0f} "
                             f"MiB allows at {tokens} tokens ({allowed}): lower it, or raise the memory budget")

    def pixel_limit(self, num_tokens: int | None = None) -> int:
        """The largest image (pixels) accepted now: the explicit ``max_pixels``, else what the memory budget
        allows at ``num_tokens`` (default: the current count), never above ``DEFAULT_MAX_PIXELS``.  Decoders use
        it before they allocate a frame."""
        budget = self._budget_pixels(self.num_tokens if num_tokens is None else num_tokens)
        return budget if self.max_pixels is None else min(self.max_pixels, budget)

    def _budget_pixels(self, tokens: int) -> int:
        """The largest image the memory budget allows at ``tokens`` tokens, never above ``DEFAULT_MAX_PIXELS``."""
        return min(DEFAULT_MAX_PIXELS, self.budget.max_pixels(tokens))

    def _check_budget(self, image: ImageLike) -> None:
        """Refuse an image (or batch) the memory budget cannot serve, from its shape alone."""
        shape = tuple(getattr(image, "shape", ()))
        if isinstance(image, torch.Tensor):
            dims = shape[-2:] if len(shape) in (3, 4) else ()
            batch = shape[0] if len(shape) == 4 else 1
        else:  # numpy: channels-last (H, W, 3) / (B, H, W, 3) or grey (H, W)
            dims = shape[:2] if len(shape) in (2, 3) else shape[1:3] if len(shape) == 4 else ()
            batch = shape[0] if len(shape) == 4 else 1
        if len(dims) != 2:
            return  # image_to_batch names the shape problem
        pixels = int(dims[0]) * int(dims[1])
        self.budget.check(pixels, self.num_tokens, batch=max(int(batch), 1),
                          what=f"image {dims[1]}x{dims[0]}" + (f" (batch of {batch})" if batch != 1 else ""))
        if self.max_pixels is not None and pixels > self.max_pixels:  # an explicit limit under the budget's
            raise BudgetError(f"image too large: {dims[1]}x{dims[0]} = {pixels} pixels, limit max_pixels = "
                              f"{self.max_pixels}")

    def _to_batch(self, image: ImageLike) -> torch.Tensor:
        self._check_budget(image)
        if not self.pin_memory:
            return image_to_batch(image, self.device, self.pixel_limit())
        host = image_to_batch(image, torch.device("cpu"), self.pixel_limit())
        return self._forward.to_device(host)  # type: ignore[union-attr]

    @torch.inference_mode()
    def forward_raw(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Network outputs (float32) for a ``(B, 3, H, W)`` batch in [0, 1] already on the device."""
        with self._autocast():
            raw = self._forward(batch, self.num_tokens)
        return {k: v.float() for k, v in raw.items()}

    @torch.inference_mode()
    def predict(
        self,
        image: ImageLike,
        intrinsics: ImageLike | None = None,
        fov_x: float | None = None,
    ) -> Geometry:
        """Predict metric geometry.

        Args:
            image: numpy channels-last RGB ``(H, W, 3)`` / ``(B, H, W, 3)`` (uint8, uint16 or float in [0, 1]),
                or torch channels-first ``(3, H, W)`` / ``(B, 3, H, W)`` float in [0, 1].
            intrinsics: known pinhole matrix in PIXELS, ``(3, 3)`` or ``(B, 3, 3)`` (ROS ``CameraInfo.k``
                convention, fx ≠ fy allowed); then only the depth shift is solved.  Each must be plausible for the
                image size (:func:`moge2_ros.io.plausibility.check_intrinsics`: fields of view, pixel aspect,
                principal point near the image).
            fov_x: known horizontal field of view in degrees (centred principal point); alternative to
                ``intrinsics``.
        Returns:
            :class:`Geometry` with a batch dimension (B = 1 for a single image).  A frame whose estimated
            focal length is not positive and finite, or whose metric scale is not, has an all-False mask.
        Raises:
            InputError: bad image, intrinsics or arguments.
        """
        if intrinsics is not None and fov_x is not None:
            raise InputError("give either intrinsics or fov_x, not both")
        if fov_x is not None and not (0.0 < float(fov_x) < 180.0):
            raise InputError(f"fov_x must be in (0, 180) degrees, found {fov_x}")
        batch = self._to_batch(image)
        k_norm = None
        if intrinsics is not None:
            b, _, height, width = batch.shape
            k_pixels = intrinsics_to_batch(intrinsics, b, torch.device("cpu"))  # checked on the host, then moved
            for i, k in enumerate(k_pixels.numpy()):
                check_intrinsics(k, width, height, "intrinsics" if b == 1 else f"intrinsics[{i}]")
            k_norm = pixel_to_normalized_intrinsics(k_pixels.to(self.device), width, height)
        geo = self.postprocess(self.forward_raw(batch), intrinsics_normalized=k_norm, fov_x=fov_x)
        return replace(geo, intrinsics_estimated=intrinsics is None and fov_x is None)

    @torch.inference_mode()
    def predict_stabilized(self, image: ImageLike, stabilizer: IntrinsicsStabilizer) -> Geometry:
        """Predict one image of a fixed camera whose intrinsics are stabilised over frames.

        The frame's own intrinsics are estimated and added to ``stabilizer``; when it has a stabilised matrix
        (averaged, or locked), the depth shift is re-solved with it from the same network output (no second
        forward pass).  Once the stabiliser is locked, the estimate is skipped.  ``intrinsics_estimated`` stays
        True: the intrinsics come from the images.

        Args:
            image: one image (see :meth:`predict`); batches are refused.
            stabilizer: the camera's :class:`IntrinsicsStabilizer` (updated in place).
        """
        batch = self._to_batch(image)
        b, _, height, width = batch.shape
        if b != 1:
            raise InputError(f"predict_stabilized takes one image, found a batch of {b}")
        raw = self.forward_raw(batch)
        if not stabilizer.locked:
            geo = self.postprocess(raw)
            stabilizer.update(geo.intrinsics[0].cpu().numpy(), width, height)
        k = stabilizer.current(width, height)
        if k is None:
            return geo
        k_norm = pixel_to_normalized_intrinsics(intrinsics_to_batch(k, 1, self.device), width, height)
        return replace(self.postprocess(raw, intrinsics_normalized=k_norm), intrinsics_estimated=True)

    @torch.inference_mode()
    def postprocess(
        self,
        raw: dict[str, torch.Tensor],
        intrinsics_normalized: torch.Tensor | None = None,
        fov_x: float | None = None,
    ) -> Geometry:
        """Raw network outputs (:meth:`forward_raw`) -> :class:`Geometry`: focal / shift recovery (or the shift
        alone with known ``(B, 3, 3)`` normalised intrinsics or ``fov_x``), metric scaling, validity (model mask,
        impossible camera, depth range, edge filter), normals, NaN for invalid pixels, pixel intrinsics."""
        b, height, width = raw["points"].shape[:3]
        camera = recover_camera(raw["points"], raw.get("mask"), fov_x=fov_x, intrinsics=intrinsics_normalized)

        scale = raw.get("metric_scale")
        if scale is None:
            scale = torch.ones(b, device=self.device)
        # A frame whose estimated camera is impossible (non-positive or non-finite focal, e.g. from an untrained
        # or confused model) or whose metric scale is not a positive number has no valid pixel at all.
        k = camera.intrinsics
        frame_ok = (k[:, 0, 0] > 0) & (k[:, 1, 1] > 0) & torch.isfinite(k).flatten(1).all(dim=1)
        frame_ok &= torch.isfinite(scale) & (scale > 0)
        metric_depth = camera.depth * scale[:, None, None]  # for the tests below; the outputs come from metric_geometry
        mask = metric_depth.abs() < torch.inf  # finite (NaN compares False); cheaper than isfinite on the CPU
        if camera.mask is not None:
            mask &= camera.mask
        mask &= frame_ok[:, None, None]
        if self.depth_range is not None:
            mask &= (metric_depth >= self.depth_range[0]) & (metric_depth <= self.depth_range[1])
        if self.edge_rtol is not None:
            mask &= ~depth_edge_mask(metric_depth, self.edge_rtol, mask=mask)
        points, depth = metric_geometry(camera.depth, k, scale, valid=mask)
        normal = raw.get("normal")
        if normal is None and self.estimate_normals:
            normal, normal_valid = normals_from_points(points, mask)
            mask_normal = normal_valid
        else:
            mask_normal = mask
        if normal is not None:
            # NaN where invalid, by one multiply into a new row-major (B, H, W, 3) tensor: the network's map is
            # channels-first in memory and is not modified; messages and numpy users want interleaved x, y, z.
            nan_or_one = mask_normal.to(normal.dtype)
            out = torch.empty(normal.shape, dtype=normal.dtype, device=normal.device)
            normal = torch.mul(normal, nan_or_one.div_(nan_or_one)[..., None], out=out)
        fov_x_rad, fov_y_rad = intrinsics_to_fov(k)
        return Geometry(
            points=points,
            depth=depth,
            mask=mask,
            normal=normal,
            intrinsics=normalized_to_pixel_intrinsics(k, width, height),
            metric_scale=scale,
            fov_x=torch.rad2deg(fov_x_rad),
            fov_y=torch.rad2deg(fov_y_rad),
            intrinsics_estimated=intrinsics_normalized is None and fov_x is None,
            num_tokens=self.num_tokens,
        )
