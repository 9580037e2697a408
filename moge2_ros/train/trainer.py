"""The MoGe-2 trainer: one optimisation loop for a CPU, one GPU, or many through ``torchrun`` + DDP.

Per optimizer step (as the official ``moge/scripts/train.py``):

1. a token budget is drawn from ``loop.num_tokens_range`` (a pure function of ``(seed, step)``, hence equal on
   every rank without communication);
2. for each of ``loop.grad_accum`` micro-batches: forward under autocast (``loop.amp``), then the loss set of each
   instance's label type (:func:`moge2_ros.train.losses.compute_instance_losses`, instances of one batch may mix
   label types), averaged over the batch (instances without a loss set count as 0, as in the official code),
   divided by ``grad_accum``, backward (DDP synchronises gradients on the last micro-batch only);
3. the global gradient norm is clipped to ``optim.grad_clip``; a step whose gradients are not finite is skipped
   (counted); AdamW steps with two parameter groups (backbone / head learning rates), then the LR schedule.

Reproducibility: the data order is a function of ``(seed, epoch)`` (``DistributedSampler`` +
:meth:`TrainingView.set_epoch`), each item of ``(seed, epoch, index)``, the token budget of ``(seed, step)`` and
the local-loss patch sampling of ``(seed, step, index)``; the optimizer, scheduler, gradient scaler, global RNG
states and the number of consumed micro-batches are saved with every checkpoint, so a resumed run continues with
bit-identical weights (``test/train/test_resume.py``), and ``P`` processes with per-rank batch ``b`` compute the
same update as one process with batch ``P b`` (``test/train/test_ddp.py``).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moge2_ros.data.sample import Sample
from moge2_ros.geometry.intrinsics import gt_focal_from_intrinsics
from moge2_ros.model.config import MoGe2Config
from moge2_ros.model.moge2 import MoGe2Model
from moge2_ros.train.config import (
    BagSource,
    DataSource,
    FolderSource,
    ModelConfig,
    ScheduleConfig,
    SevenScenesSource,
    SyntheticSource,
    TrainConfig,
    TrainConfigError,
    build_loss_sets,
    config_to_dict,
)
from moge2_ros.train.distributed import DistInfo, barrier, all_reduce_sum, init_distributed, shutdown_distributed
from moge2_ros.train.losses import LossSet, compute_instance_losses
from moge2_ros.train.state import (
    capture_rng_state,
    find_latest_checkpoint,
    load_training_state,
    restore_rng_state,
    save_training_checkpoint,
)

__all__ = [
    "TrainResult",
    "Trainer",
    "train",
    "build_model",
    "build_source",
    "build_param_groups",
    "lr_factor",
    "num_tokens_for_step",
    "instance_seed",
    "batch_loss",
    "validate",
]

CHECKPOINT_DIR = "checkpoints"
#: Keys of the configuration that must not change when a run is resumed (they change the data order, the model
#: or the optimisation); others (steps, logging, checkpoint and validation cadence, device) may.
RESUME_FIXED = ("seed", "model", "data.train", "data.augment", "optim", "schedule.kind", "schedule.warmup_steps",
                "schedule.backbone_freeze_steps", "loss", "loop.batch_size", "loop.grad_accum",
                "loop.num_tokens_range", "loop.low_resolution_steps")


# ------------------------------------------------------------------------------------------------ model / data


def build_model(cfg: ModelConfig, seed: int = 0, num_tokens_range: Sequence[int] | None = None) -> MoGe2Model:
    """The model of ``cfg``: loaded strictly from ``init``, or freshly initialised (``torch.manual_seed(seed)``)
    from ``config`` or ``preset``.

    A preset model gets ``num_tokens_range`` (the training range) as its ``model_config.num_tokens_range``, the
    range that inference maps resolution levels 0-9 onto, as the official configs do.
    """
    if cfg.init is not None:
        from moge2_ros.checkpoints import load_model

        return load_model(cfg.init)
    torch.manual_seed(seed)
    if cfg.config is not None:
        return MoGe2Model(MoGe2Config.from_dict(cfg.config))
    if cfg.preset not in ("tiny", "vits"):
        raise TrainConfigError("model: give init (a checkpoint), config (a model_config dict) or preset (tiny, vits)")
    args = {"embed_dim": 384, "depth": 12, "num_heads": 6} if cfg.preset == "vits" else {}
    config = MoGe2Config.tiny(**{**args, **cfg.preset_args}).to_dict()
    if num_tokens_range is not None:
        config["num_tokens_range"] = [int(num_tokens_range[0]), int(num_tokens_range[1])]
    return MoGe2Model(MoGe2Config.from_dict(config))


def _synthetic_cache(source: SyntheticSource, info: DistInfo, say: Any) -> Sequence[Sample]:
    """Render the frames of ``source`` once into ``cache_dir`` (folder format; rank 0) and read them from there."""
    from moge2_ros.data.folder import write_sample
    from moge2_ros.data.open import open_dataset
    from moge2_ros.data.synthetic import SyntheticConfig, SyntheticDataset

    root = Path(source.cache_dir)  # type: ignore[arg-type]
    key = {"count": source.count, "height": source.height, "width": source.width, "seed": source.seed,
           "generator": config_to_dict(source.generator)}
    marker = root / "synthetic_cache.json"
    if info.is_main:
        if marker.is_file() and json.loads(marker.read_text()) != key:
            raise TrainConfigError(f"{root}: holds a synthetic cache of other settings ({marker.read_text().strip()}); "
                                   "use another cache_dir")
        if not marker.is_file():
            dataset = SyntheticDataset(source.count, source.height, source.width, source.seed,
                                       SyntheticConfig(**source.generator))
            from tqdm import tqdm

            say(f"rendering {source.count} synthetic frames into {root} (once)")
            for i in tqdm(range(source.count), desc="render", unit="frame", file=sys.stderr, dynamic_ncols=True):
                stem = f"{i:06d}"
                if not (root / f"{stem}.normal.npy").is_file():  # the last file write_sample writes
                    write_sample(root, stem, dataset[i])
            from moge2_ros.train.state import atomic_write_bytes

            atomic_write_bytes(marker, json.dumps(key).encode())
    barrier(info)
    return open_dataset(root, format="folder")


def build_source(source: DataSource, info: DistInfo = DistInfo(), say: Any = print) -> Sequence[Sample]:
    """The ``Sequence[Sample]`` of one configured data source: the generator for ``synthetic``, otherwise the
    dataset :func:`moge2_ros.data.open.open_dataset` opens (the source's kind is its format)."""
    if isinstance(source, SyntheticSource):
        if source.cache_dir:
            return _synthetic_cache(source, info, say)
        from moge2_ros.data.synthetic import SyntheticConfig, SyntheticDataset

        return SyntheticDataset(source.count, source.height, source.width, source.seed,
                                SyntheticConfig(**source.generator))
    from moge2_ros.data.open import open_dataset

    if isinstance(source, FolderSource):
        return open_dataset(source.root, format="folder")
    if isinstance(source, BagSource):
        return open_dataset(source.path, format="bag", image_topic=source.image_topic,
                            depth_topic=source.depth_topic, cloud_topic=source.cloud_topic,
                            camera_info_topic=source.camera_info_topic, tolerance_ms=source.tolerance_ms)
    if isinstance(source, SevenScenesSource):
        full = open_dataset(source.root, format="sevenscenes")
        stop = len(full) if source.stop is None else min(source.stop, len(full))
        return open_dataset(source.root, format="sevenscenes", indices=range(source.start, stop))
    raise TrainConfigError(f"unknown data source {source!r}")  # pragma: no cover - config validation


class _Concat(Sequence[Sample]):
    """Several sample sequences, one after another."""

    def __init__(self, parts: Sequence[Sequence[Sample]]) -> None:
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.parts[part][index - int(self.offsets[part])]


class _Indexed(torch.utils.data.Dataset):
    """A training view whose items also carry their dataset ``index`` (seeds the local-loss sampling)."""

    def __init__(self, view: Any) -> None:
        self.view = view

    def __len__(self) -> int:
        return len(self.view)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.view[index])
        item["index"] = torch.tensor(int(index))
        return item


# ------------------------------------------------------------------------------------------------ optimisation


def build_param_groups(model: torch.nn.Module, patterns: Sequence[str], lr_head: float,
                       lr_backbone: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: ``[head (everything else), backbone (names matching patterns)]``.

    Raises:
        TrainConfigError: the patterns match no parameter (the split would silently do nothing).
    """
    head, backbone = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (backbone if any(fnmatch(name, pat) for pat in patterns) else head).append(p)
    if not backbone:
        raise TrainConfigError(f"optim.backbone_patterns: {list(patterns)} match no parameter of the model "
                               "(names look like encoder.backbone.blocks.0.attn.qkv.weight)")
    return [{"params": head, "lr": lr_head, "name": "head"},
            {"params": backbone, "lr": lr_backbone, "name": "backbone"}]


def lr_factor(step: int, cfg: ScheduleConfig, total_steps: int, delay: int = 0) -> float:
    """Multiplier of the base LR at optimizer step ``step`` (0-based): 0 before ``delay``, linear warm-up over
    ``warmup_steps`` (reaching 1 at the last warm-up step), then cosine (to ``min_lr_ratio`` at ``total_steps``),
    constant, or step decay."""
    s = step - delay
    if s < 0:
        return 0.0
    if cfg.warmup_steps > 0 and s < cfg.warmup_steps:
        return (s + 1) / cfg.warmup_steps
    after = s - cfg.warmup_steps
    if cfg.kind == "constant":
        return 1.0
    if cfg.kind == "step":
        return cfg.gamma ** (after // cfg.step_size)
    span = max(1, total_steps - delay - cfg.warmup_steps)
    progress = min(1.0, after / span)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _lr_lambda(step: int, cfg: ScheduleConfig, total: int, delay: int) -> float:
    return lr_factor(step, cfg, total, delay)


def num_tokens_for_step(seed: int, step: int, token_range: Sequence[int], low_resolution_steps: int = 0) -> int:
    """Token budget of step ``step``: ``token_range[0]`` during the low-resolution phase, else uniform in
    ``[min, max]`` from an RNG seeded by ``(seed, step)`` (identical on every rank)."""
    lo, hi = int(token_range[0]), int(token_range[1])
    if step < low_resolution_steps:
        return lo
    return int(np.random.default_rng([seed, step, 0x70CE]).integers(lo, hi + 1))


def instance_seed(seed: int, step: int, index: int) -> int:
    """Seed of the local-loss patch sampling of dataset item ``index`` at ``step`` (independent of ranks and
    batch layout)."""
    a, b = np.random.SeedSequence([seed, step, index, 0x10C]).generate_state(2, np.uint32)
    return (int(a) << 31) ^ int(b)


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "off":
        return None
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise TrainConfigError("loop.amp: fp16 needs a CUDA device (use bf16 or off on a CPU)")
    return torch.bfloat16 if amp == "bf16" else torch.float16


# ------------------------------------------------------------------------------------------------ losses


def batch_loss(
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, Any],
    loss_sets: Mapping[str, LossSet],
    seed: int,
    step: int,
) -> tuple[torch.Tensor, list[dict[str, float]]]:
    """Mean over the batch of each instance's loss-set total (the official per-instance loop).

    Args:
        outputs: the model's forward dict (``points (B, H, W, 3)``, optional ``mask``, ``normal``,
            ``metric_scale``), any float dtype (cast to float32 here).
        batch: a collated :class:`TrainingView` batch plus ``index (B,)``.
        loss_sets: per label type (``"A"``, ``"B"``, ``"C"``, ``"invalid"``).
        seed, step: seed the local-loss sampling of each instance (:func:`instance_seed`).

    Returns:
        ``(loss 0-d, records)``: one record of Python floats per instance (``loss``, ``loss/<term>``,
        ``misc/<term>/<name>``).  The loss always depends on every output (with weight 0 where no term uses
        it), so every rank runs a backward pass that reaches every head.
    """
    points = outputs["points"].float()
    mask = outputs["mask"].float() if "mask" in outputs else None
    normal = outputs["normal"].float() if "normal" in outputs else None
    scale = outputs["metric_scale"].float() if "metric_scale" in outputs else None
    device = points.device
    focal = gt_focal_from_intrinsics(batch["intrinsics"].to(device))
    totals, records = [], []
    for i in range(points.shape[0]):
        loss_set = loss_sets[batch["label_type"][i]]
        if not loss_set.terms:
            totals.append(torch.zeros((), device=device))
            records.append({"loss": 0.0})
            continue
        has_normal = bool(batch["has_normal"][i])
        gt_normal = None
        if has_normal:
            n = batch["normal"][i].to(device)
            gt_normal = torch.where((n.norm(dim=-1) > 0)[..., None], n, torch.nan)
        generator = torch.Generator(device=device)
        generator.manual_seed(instance_seed(seed, step, int(batch["index"][i])))
        total, losses, misc = compute_instance_losses(
            loss_set,
            pred_points=points[i],
            gt_points=batch["points"][i].to(device),
            gt_focal=focal[i],
            pred_mask=mask[i] if mask is not None else None,
            pred_normal=normal[i] if normal is not None and has_normal else None,
            pred_metric_scale=scale[i] if scale is not None else None,
            gt_normal=gt_normal,
            gt_mask_pos=batch["mask_pos"][i].to(device),
            gt_mask_neg=batch["mask_neg"][i].to(device),
            is_metric=bool(batch["is_metric"][i]),
            generator=generator,
        )
        totals.append(total)
        record = {"loss": float(total.detach())}
        record.update({f"loss/{k}": float(v.detach()) for k, v in losses.items()})
        record.update({f"misc/{k}/{m}": float(x) for k, vals in misc.items() for m, x in vals.items()})
        records.append(record)
    loss = torch.stack(totals).mean()
    zero = sum((torch.nan_to_num(v.float(), 0.0, 0.0, 0.0) * 0).sum() for v in outputs.values())
    return loss + zero, records


def _mean_records(records: Sequence[Mapping[str, float]]) -> dict[str, float]:
    keys = sorted({k for r in records for k in r})
    out = {}
    for key in keys:
        values = [r[key] for r in records if key in r and math.isfinite(r[key])]
        if values:
            out[key] = float(sum(values) / len(values))
    return out


# ------------------------------------------------------------------------------------------------ validation


@torch.no_grad()
def validate(
    model: MoGe2Model, view: Any, indices: Sequence[int], num_tokens: int, device: torch.device,
    align_resolution: int = 32, affine_invariant: bool = False, amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Official metrics (:func:`moge2_ros.eval.metrics.compute_metrics`) of ``model`` on items ``indices`` of a
    ``TrainingView(train=False)``, averaged (:func:`~moge2_ros.eval.metrics.key_average`).

    The prediction is the model's metric geometry (:func:`recover_geometry` with the estimated focal, the
    predicted mask and metric scale); metrics are taken on the ground-truth pixels that also have a valid
    prediction, and ``coverage`` (their share) is reported next to them.
    """
    from moge2_ros.eval.metrics import compute_metrics, key_average
    from moge2_ros.geometry.postprocess import recover_geometry

    skip = () if affine_invariant else ("points_affine_invariant", "depth_affine_invariant",
                                        "disparity_affine_invariant")
    was_training = model.training
    model.eval()
    records = []
    try:
        for index in indices:
            item = view[index]
            image = item["image"][None].to(device)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                out = model(image, num_tokens)
            out = {k: v.float() for k, v in out.items()}
            geo = recover_geometry(out["points"], out.get("mask"), out.get("metric_scale"))
            depth, points = geo.depth[0], geo.points[0]
            valid = torch.isfinite(depth) & (depth > 0) & torch.isfinite(points).all(dim=-1)
            if geo.mask is not None:
                valid &= geo.mask[0]
            gt_valid = item["mask_pos"].to(device)
            mask = gt_valid & valid
            if not bool(mask.any()):
                records.append({"coverage": 0.0})
                continue
            gt = {
                "depth": torch.where(gt_valid, item["depth"].to(device), torch.inf),
                "depth_mask": mask,
                "points": item["points"].to(device),
                "intrinsics": item["intrinsics"].to(device),
                "is_metric": bool(item["is_metric"]),
            }
            pred = {"points_metric": torch.where(mask[..., None], points, 1.0),
                    "depth_metric": torch.where(mask, depth, 1.0), "intrinsics": geo.intrinsics[0]}
            metrics = compute_metrics(pred, gt, align_resolution=(align_resolution, align_resolution), skip=skip)
            assert isinstance(metrics, dict)
            metrics["coverage"] = float(mask.sum()) / max(1, int(gt_valid.sum()))
            records.append(metrics)
    finally:
        model.train(was_training)
    return key_average(records)


# ------------------------------------------------------------------------------------------------ the trainer


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` did.

    Attributes:
        step: optimizer steps done (the resumed-from step included).
        output_dir: the run folder; model_path: the final ``model.pt`` (None when stopped early).
        checkpoint: the last checkpoint's model file (None if none was written).
        history: the log records written (rank 0); val: the validation records.
        skipped_steps: updates skipped for non-finite gradients; interrupted: stopped by ``stop_after``.
    """

    step: int
    output_dir: Path
    model_path: Path | None = None
    checkpoint: Path | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    val: list[dict[str, Any]] = field(default_factory=list)
    skipped_steps: int = 0
    interrupted: bool = False


def _get(d: Mapping[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, Mapping) else None  # type: ignore[assignment]
    return d


class Trainer:
    """Train a MoGe-2 model as configured (see the module docstring).

    Args:
        config: the validated configuration.
        resume: continue from ``<output_dir>/checkpoints/latest.json`` when it exists (otherwise start fresh);
            without ``resume`` an output folder that already holds checkpoints is refused.
        stop_after: stop (with a checkpoint) after this many optimizer steps in total - a test hook that
            simulates a preempted job.
        quiet: no progress bar and no messages.
    """

    def __init__(self, config: TrainConfig, *, resume: bool = False, stop_after: int | None = None,
                 quiet: bool = False) -> None:
        self.cfg = config
        self.resume = resume
        self.stop_after = stop_after
        self.quiet = quiet
        self.output_dir = Path(config.output_dir)
        self.ckpt_dir = self.output_dir / CHECKPOINT_DIR

    # -------------------------------------------------------------- helpers
    def _say(self, message: str) -> None:
        if self.info.is_main and not self.quiet:
            from tqdm import tqdm

            tqdm.write(f"[train] {message}", file=sys.stderr)

    def _open_tensorboard(self) -> Any:
        if not (self.info.is_main and self.cfg.log.tensorboard):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            warnings.warn("log.tensorboard: the tensorboard package is not installed; TensorBoard logging is off "
                          "(pip install tensorboard)", stacklevel=2)
            return None
        return SummaryWriter(log_dir=str(self.output_dir / "tb"))

    def _check_resume_config(self, saved: Mapping[str, Any]) -> None:
        current = config_to_dict(self.cfg)
        changed = [key for key in RESUME_FIXED if _get(saved, key) != _get(current, key)]
        if changed:
            raise TrainConfigError(f"{self.ckpt_dir}: cannot resume: the configuration differs from the saved run "
                                   f"in {changed}; restore them or train into a new output_dir")
        if saved.get("loop", {}).get("steps") != current["loop"]["steps"] and self.cfg.schedule.kind == "cosine":
            self._say("loop.steps changed since the checkpoint: the cosine schedule is stretched from here on")

    # -------------------------------------------------------------- setup
    def _setup(self) -> None:
        cfg = self.cfg
        self.info, self.device = init_distributed(cfg.loop.device)
        info, device = self.info, self.device
        self.amp_dtype = _amp_dtype(cfg.loop.amp, device)
        self.loss_sets = build_loss_sets(cfg.loss)

        latest = find_latest_checkpoint(self.ckpt_dir) if self.ckpt_dir.is_dir() else None
        if latest is not None and not self.resume:
            raise TrainConfigError(f"{self.output_dir}: holds checkpoints of an earlier run (latest step "
                                   f"{latest.step}); resume it (--resume) or choose another output_dir")
        self.state: dict[str, Any] | None = None
        if latest is not None:
            from moge2_ros.checkpoints import build_model as build_from_checkpoint, read_checkpoint

            self.state = load_training_state(latest.state)
            self._check_resume_config(self.state.get("config", {}))
            if self.state.get("world_size", 1) != info.world_size:
                raise TrainConfigError(f"{self.ckpt_dir}: the run used {self.state.get('world_size')} processes, "
                                       f"this one {info.world_size}; the data order would differ")
            model_config, state_dict = read_checkpoint(latest.model)
            self.model = build_from_checkpoint(model_config, state_dict, str(latest.model))
            self._say(f"resuming from {latest.model} (step {latest.step})")
        else:
            if self.resume:
                self._say(f"no checkpoint in {self.ckpt_dir}: starting from scratch")
            self.model = build_model(cfg.model, cfg.seed, cfg.loop.num_tokens_range)
        self.model.to(device).train()

        groups = build_param_groups(self.model, cfg.optim.backbone_patterns, cfg.optim.lr_head,
                                    cfg.optim.lr_backbone)
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr_head, betas=cfg.optim.betas, eps=cfg.optim.eps,
                                           weight_decay=cfg.optim.weight_decay)
        total = cfg.loop.steps
        lambdas = [partial(_lr_lambda, cfg=cfg.schedule, total=total, delay=0),
                   partial(_lr_lambda, cfg=cfg.schedule, total=total, delay=cfg.schedule.backbone_freeze_steps)]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambdas)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)

        self.step, self.consumed, self.skipped = 0, 0, 0
        if self.state is not None:
            self.optimizer.load_state_dict(self.state["optimizer"])
            self.scheduler.load_state_dict(self.state["scheduler"])
            if self.state.get("scaler"):
                self.scaler.load_state_dict(self.state["scaler"])
            restore_rng_state(self.state["rng"])
            self.step, self.consumed = int(self.state["step"]), int(self.state["consumed"])
            self.skipped = int(self.state.get("skipped", 0))

        self.net: torch.nn.Module = self.model
        if info.enabled:
            ddp_kwargs: dict[str, Any] = {"find_unused_parameters": True}
            if device.type == "cuda":
                ddp_kwargs["device_ids"] = [device.index]
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, **ddp_kwargs)

        self._setup_data()
        if info.is_main:
            import yaml

            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))

    def _setup_data(self) -> None:
        from moge2_ros.data.pipeline import AugmentConfig, TrainingView

        cfg, info = self.cfg, self.info
        augment = AugmentConfig(**cfg.data.augment)
        train = _Concat([build_source(s, info, self._say) for s in cfg.data.train])
        self.train_view = TrainingView(train, augment, seed=cfg.seed, train=True)
        self.sampler = torch.utils.data.DistributedSampler(
            self.train_view, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed,
            drop_last=True)
        self.batches_per_epoch = len(self.sampler) // cfg.loop.batch_size
        if self.batches_per_epoch == 0:
            raise TrainConfigError(f"data.train: {len(train)} items are fewer than loop.batch_size "
                                   f"({cfg.loop.batch_size}) x processes ({info.world_size})")
        self.val_view, self.val_indices = None, []
        if cfg.data.val and info.is_main:
            # Rank 0 alone validates: no barrier inside (a synthetic cache is rendered by this rank alone).
            val = _Concat([build_source(s, DistInfo(), self._say) for s in cfg.data.val])
            self.val_view = TrainingView(val, augment, seed=cfg.seed, train=False)
            n = min(cfg.val.max_samples, len(val))
            self.val_indices = sorted({int(round(x)) for x in np.linspace(0, len(val) - 1, n)})

    def _batches(self) -> Iterator[dict[str, Any]]:
        """Micro-batches from ``self.consumed`` on, epoch after epoch (the order depends only on seed and epoch)."""
        bs = self.cfg.loop.batch_size
        epoch, offset = divmod(self.consumed, self.batches_per_epoch)
        dataset = _Indexed(self.train_view)
        while True:
            self.train_view.set_epoch(epoch)
            self.sampler.set_epoch(epoch)
            indices = list(self.sampler)[: self.batches_per_epoch * bs]
            batches = [indices[i:i + bs] for i in range(offset * bs, len(indices), bs)]
            loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=self.cfg.data.num_workers,
                                                 pin_memory=self.device.type == "cuda")
            yield from loader
            epoch, offset = epoch + 1, 0

    # -------------------------------------------------------------- one step
    def _train_step(self, batches: Iterator[dict[str, Any]]) -> tuple[float, list[dict[str, float]], bool, int]:
        cfg, device = self.cfg, self.device
        num_tokens = num_tokens_for_step(cfg.seed, self.step, cfg.loop.num_tokens_range,
                                         cfg.loop.low_resolution_steps)
        self.optimizer.zero_grad(set_to_none=True)
        records: list[dict[str, float]] = []
        loss_sum = torch.zeros((), device=device)
        accum = cfg.loop.grad_accum
        self._last_batch = None
        for micro in range(accum):
            batch = next(batches)
            self.consumed += 1
            sync = contextlib.nullcontext() if (micro == accum - 1 or not self.info.enabled) else self.net.no_sync()
            with sync:
                image = batch["image"].to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=self.amp_dtype or torch.float32,
                                    enabled=self.amp_dtype is not None):
                    outputs = self.net(image, num_tokens)
                loss, recs = batch_loss(outputs, batch, self.loss_sets, cfg.seed, self.step)
                self.scaler.scale(loss / accum).backward()
            loss_sum += loss.detach() / accum
            records.extend(recs)
            self._last_batch = (batch, {k: v.detach() for k, v in outputs.items()})

        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if params else torch.zeros(())
        finite = bool(torch.isfinite(grad_norm))
        stepped = True
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)  # skips by itself on inf/NaN gradients
            stepped = finite
        elif finite or not cfg.loop.skip_nonfinite:
            self.optimizer.step()
        else:
            stepped = False
        self.scaler.update()
        with warnings.catch_warnings():  # a skipped first update is intended, not a misuse of the scheduler
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
            self.scheduler.step()
        if not stepped:
            self.skipped += 1
        # The displayed loss is the mean over all ranks (one small all-reduce per step).
        loss_sum = all_reduce_sum(loss_sum, self.info) / self.info.world_size
        return float(loss_sum), records, stepped, num_tokens

    # -------------------------------------------------------------- outputs
    def _checkpoint(self) -> Path:
        state = {
            "consumed": self.consumed,
            "skipped": self.skipped,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng_state(),
            "config": config_to_dict(self.cfg),
            "world_size": self.info.world_size,
        }
        ref = save_training_checkpoint(self.ckpt_dir, self.step, self.model, state, keep=self.cfg.checkpoint.keep)
        return ref.model

    def _validate(self, tb: Any) -> dict[str, Any] | None:
        if self.val_view is None or not self.val_indices:
            return None
        cfg = self.cfg
        tokens = cfg.val.num_tokens or cfg.loop.num_tokens_range[1]
        metrics = validate(self.model, self.val_view, self.val_indices, tokens, self.device,
                           cfg.val.align_resolution, cfg.val.affine_invariant, self.amp_dtype)
        record = {"step": self.step, "num_samples": len(self.val_indices), "num_tokens": tokens, **metrics}
        from moge2_ros.train.state import atomic_write_bytes

        atomic_write_bytes(self.ckpt_dir / f"val_{self.step:08d}.json",
                           (json.dumps(record, indent=1, allow_nan=True) + "\n").encode())
        if tb is not None:
            for key, value in metrics.items():
                if math.isfinite(value):
                    tb.add_scalar(f"val/{key}", value, self.step)
        summary = ", ".join(f"{k}={metrics[k]:.4f}" for k in ("depth_metric/rel", "depth_metric/delta1",
                                                                "depth_scale_invariant/rel") if k in metrics)
        self._say(f"validation at step {self.step}: {summary or metrics}")
        return record

    def _image_panel(self, tb: Any) -> None:
        from moge2_ros.geometry.postprocess import recover_geometry
        from moge2_ros.io.writers import colorize_depth

        if self._last_batch is None:
            return
        batch, outputs = self._last_batch
        n = min(self.cfg.log.num_images, outputs["points"].shape[0])
        mask = outputs["mask"][:n].float() if "mask" in outputs else None
        scale = outputs["metric_scale"][:n].float() if "metric_scale" in outputs else None
        geo = recover_geometry(outputs["points"][:n].float(), mask, scale)
        rows = []
        for i in range(n):
            image = (batch["image"][i].permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)
            pred = geo.depth[i].cpu().numpy()
            pred_mask = geo.mask[i].cpu().numpy() if geo.mask is not None else None
            rows.append(np.concatenate([image, colorize_depth(pred, pred_mask),
                                        colorize_depth(batch["depth"][i].numpy())], axis=1))
        tb.add_image("panel/input_pred_gt_depth", np.concatenate(rows, axis=0), self.step, dataformats="HWC")

    def _log(self, tb: Any, log_file: Any, record: dict[str, Any]) -> None:
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()
        if tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    tb.add_scalar(key if "/" in key else f"train/{key}", value, self.step)

    # -------------------------------------------------------------- the loop
    def fit(self) -> TrainResult:
        """Run the configured number of steps (or until ``stop_after``) and return what was done."""
        self._setup()
        try:
            return self._fit()
        finally:
            shutdown_distributed(self.info)

    def _fit(self) -> TrainResult:
        cfg, info = self.cfg, self.info
        result = TrainResult(step=self.step, output_dir=self.output_dir)
        tb = self._open_tensorboard()
        log_file = open(self.output_dir / "log.jsonl", "a") if info.is_main else None
        from tqdm import tqdm

        bar = tqdm(total=cfg.loop.steps, initial=self.step, desc="train", unit="step", file=sys.stderr,
                   dynamic_ncols=True, disable=not (info.is_main and cfg.log.progress and not self.quiet))
        n_params = sum(p.numel() for p in self.model.parameters())
        self._say(f"{n_params / 1e6:.2f} M parameters, {len(self.train_view)} training items, "
                  f"{info.world_size} process(es) on {self.device}, batch {cfg.loop.batch_size} x "
                  f"{cfg.loop.grad_accum} accumulation, amp {self.amp_dtype or 'off'}")
        batches = self._batches()
        window_start, window_steps, window_records, window_loss = time.perf_counter(), 0, [], 0.0
        last_checkpoint_step = self.step if self.state is not None else -1
        try:
            while self.step < cfg.loop.steps:
                loss, records, stepped, num_tokens = self._train_step(batches)
                self.step += 1
                window_steps += 1
                window_loss += loss
                window_records.extend(records)
                bar.update(1)
                if not stepped:
                    self._say(f"step {self.step}: non-finite gradients, update skipped ({self.skipped} so far)")
                if info.is_main and (self.step % cfg.log.every == 0 or self.step == 1):
                    elapsed = time.perf_counter() - window_start
                    lrs = [g["lr"] for g in self.optimizer.param_groups]
                    terms = _mean_records(window_records)
                    terms.pop("loss", None)
                    record = {"step": self.step, "loss": window_loss / window_steps, "lr/head": lrs[0],
                              "lr/backbone": lrs[1], "perf/steps_per_s": window_steps / max(elapsed, 1e-9),
                              "num_tokens": num_tokens, "skipped_steps": self.skipped, **terms}
                    self._log(tb, log_file, record)
                    result.history.append(record)
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lrs[0]:.2e}", refresh=False)
                    window_start, window_steps, window_records, window_loss = time.perf_counter(), 0, [], 0.0
                if tb is not None and cfg.log.image_every and self.step % cfg.log.image_every == 0:
                    self._image_panel(tb)
                stop_now = self.stop_after is not None and self.step >= self.stop_after
                if self.step % cfg.checkpoint.every == 0 or self.step == cfg.loop.steps or stop_now:
                    if info.is_main:
                        result.checkpoint = self._checkpoint()
                    last_checkpoint_step = self.step
                    barrier(info)
                if info.is_main and cfg.val.every and self.step % cfg.val.every == 0:
                    record = self._validate(tb)
                    if record:
                        result.val.append(record)
                barrier(info)
                if stop_now and self.step < cfg.loop.steps:
                    result.interrupted = True
                    break
        finally:
            bar.close()
            if log_file is not None:
                log_file.close()
        if not result.interrupted:
            if last_checkpoint_step != self.step and info.is_main:
                result.checkpoint = self._checkpoint()
            if info.is_main:
                if not (cfg.val.every and self.step % cfg.val.every == 0):
                    record = self._validate(tb)
                    if record:
                        result.val.append(record)
                from moge2_ros.checkpoints import save_checkpoint

                result.model_path = save_checkpoint(self.model, self.output_dir / "model.pt")
                self._say(f"done: {self.step} steps; model written to {result.model_path}")
            barrier(info)
        if tb is not None:
            tb.close()
        result.step, result.skipped_steps = self.step, self.skipped
        return result


def train(config: TrainConfig, *, resume: bool = False, stop_after: int | None = None,
          quiet: bool = False) -> TrainResult:
    """Shorthand for ``Trainer(config, resume=..., stop_after=..., quiet=...).fit()``."""
    return Trainer(config, resume=resume, stop_after=stop_after, quiet=quiet).fit()
