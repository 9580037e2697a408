"""Training configuration: a YAML file validated into typed dataclasses.

:func:`load_config` reads a YAML file, :func:`config_from_dict` a dict (the same schema); both reject unknown keys,
wrong types and out-of-range values with a :class:`TrainConfigError` whose message names the key path, e.g.
``train.batch_size: expected an int >= 1, found 0``.  :func:`config_to_dict` writes the resolved configuration
back (the trainer saves it as ``config.yaml`` beside every run).  :func:`merge_dicts` overlays a partial dict on
a full one (``finetune --config``).

Every key and its meaning is listed in ``docs/TRAINING.md``.  Relative paths (``output_dir``, dataset roots,
``model.init``) are relative to the current working directory.

This module imports no torch at module level: the CLI validates a file before anything heavy is loaded.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from moge2_ros.errors import Moge2RosError

__all__ = [
    "TrainConfigError",
    "ModelConfig",
    "SyntheticSource",
    "FolderSource",
    "BagSource",
    "SevenScenesSource",
    "DataSource",
    "DataConfig",
    "OptimConfig",
    "ScheduleConfig",
    "LossConfig",
    "LoopConfig",
    "LogConfig",
    "CheckpointConfig",
    "ValConfig",
    "TrainConfig",
    "load_config",
    "build_loss_sets",
    "config_from_dict",
    "config_to_dict",
    "merge_dicts",
]


class TrainConfigError(Moge2RosError, ValueError):
    """A training configuration is malformed; the message names the key path (``train.batch_size``)."""


def _check(meta: Mapping[str, Any], value: Any, path: str) -> None:
    """Range / choice checks stored in a field's metadata."""
    for key, bound, ok in (("ge", meta.get("ge"), lambda v, b: v >= b), ("gt", meta.get("gt"), lambda v, b: v > b),
                           ("le", meta.get("le"), lambda v, b: v <= b), ("lt", meta.get("lt"), lambda v, b: v < b)):
        if bound is None or value is None:
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, (int, float)) and not ok(item, bound):
                sign = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}[key]
                raise TrainConfigError(f"{path}: expected values {sign} {bound}, found {value!r}")


def _f(default: Any = dataclasses.MISSING, *, factory: Any = None, **checks: Any) -> Any:
    """A dataclass field with range checks (``ge``, ``gt``, ``le``, ``lt``) in its metadata."""
    if factory is not None:
        return field(default_factory=factory, metadata=checks)
    return field(default=default, metadata=checks)


# ---------------------------------------------------------------------------------------------------- sections


@dataclass
class ModelConfig:
    """What is trained.

    Attributes:
        init: checkpoint to start from (``model.pt`` / ``.safetensors`` / model folder / Hugging Face id); its
            architecture is used and its weights are loaded strictly (fine-tuning).  None: train from scratch.
        preset: architecture of a from-scratch model: ``"tiny"`` (:meth:`MoGe2Config.tiny`, the demo model) or
            ``"vits"`` (a ViT-S-sized backbone, 384 wide x 12 blocks, with the tiny decoder).
        preset_args: keyword arguments of :meth:`MoGe2Config.tiny` (``embed_dim``, ``depth``, ``num_heads``,
            ``with_normal``).
        config: a full official ``model_config`` dict (instead of ``preset``).
    """

    init: str | None = None
    preset: Literal["tiny", "vits"] | None = "tiny"
    preset_args: dict[str, Any] = _f(factory=dict)
    config: dict[str, Any] | None = None

    def _validate(self, path: str) -> None:
        if self.config is not None and self.init is not None:
            raise TrainConfigError(f"{path}: give either init (a checkpoint) or config (an architecture), not both")
        unknown = set(self.preset_args) - {"embed_dim", "depth", "num_heads", "with_normal"}
        if unknown:
            raise TrainConfigError(f"{path}.preset_args: unknown keys {sorted(unknown)}; allowed: "
                                   "embed_dim, depth, num_heads, with_normal")


@dataclass
class SyntheticSource:
    """Procedural scenes (:class:`moge2_ros.data.synthetic.SyntheticDataset`, label type A, exact metric depth).

    Attributes:
        count, height, width, seed: frames, rendered size (pixels) and generator seed.
        generator: keyword arguments of :class:`SyntheticConfig` (families, fov_x_deg, shadows, ...).
        cache_dir: render every frame once into this folder (folder format) and read it from there afterwards;
            rendering costs about a second per frame on a CPU, so training without a cache is render-bound.
    """

    kind: Literal["synthetic"] = "synthetic"
    count: int = _f(1000, ge=1)
    height: int = _f(240, ge=16)
    width: int = _f(320, ge=16)
    seed: int = _f(0, ge=0)
    generator: dict[str, Any] = _f(factory=dict)
    cache_dir: str | None = None


@dataclass
class FolderSource:
    """A folder in the documented folder format (:class:`moge2_ros.data.folder.FolderDataset`)."""

    kind: Literal["folder"] = "folder"
    root: str = ""

    def _validate(self, path: str) -> None:
        if not self.root:
            raise TrainConfigError(f"{path}.root: expected the dataset folder")


@dataclass
class BagSource:
    """A rosbag2 recording (:class:`moge2_ros.data.bag.BagDataset`): image + depth (label B) or image + LiDAR
    cloud (label C), synchronised by header stamp."""

    kind: Literal["bag"] = "bag"
    path: str = ""
    image_topic: str = ""
    depth_topic: str | None = None
    cloud_topic: str | None = None
    camera_info_topic: str | None = None
    tolerance_ms: float | None = _f(None, gt=0)

    def _validate(self, path: str) -> None:
        if not self.path:
            raise TrainConfigError(f"{path}.path: expected the bag folder or file")
        if not self.image_topic:
            raise TrainConfigError(f"{path}.image_topic: expected the image topic")
        if (self.depth_topic is None) == (self.cloud_topic is None):
            raise TrainConfigError(f"{path}: expected exactly one of depth_topic and cloud_topic")


@dataclass
class SevenScenesSource:
    """Frames ``[start, stop)`` of the 7-Scenes recording (:class:`moge2_ros.data.sevenscenes.SevenScenesDataset`)."""

    kind: Literal["sevenscenes"] = "sevenscenes"
    root: str = ""
    start: int = _f(0, ge=0)
    stop: int | None = _f(None, ge=1)

    def _validate(self, path: str) -> None:
        if not self.root:
            raise TrainConfigError(f"{path}.root: expected the 7-Scenes folder")
        if self.stop is not None and self.stop <= self.start:
            raise TrainConfigError(f"{path}: expected start < stop, found {self.start} >= {self.stop}")


DataSource = Union[SyntheticSource, FolderSource, BagSource, SevenScenesSource]
_SOURCE_KINDS: dict[str, type] = {"synthetic": SyntheticSource, "folder": FolderSource, "bag": BagSource,
                                  "sevenscenes": SevenScenesSource}


@dataclass
class DataConfig:
    """Datasets and augmentation.

    Attributes:
        train: the training sources (concatenated).
        val: held-out sources for validation (empty: no validation).
        augment: keyword arguments of :class:`moge2_ros.data.pipeline.AugmentConfig` (``image_size: [H, W]``,
            ``area_range``, ``flip_prob``, colour jitter ranges, ...); checked against its fields.
        num_workers: DataLoader worker processes per rank (0: load in the training process).
    """

    train: list[DataSource] = _f(factory=list)
    val: list[DataSource] = _f(factory=list)
    augment: dict[str, Any] = _f(factory=dict)
    num_workers: int = _f(0, ge=0)

    def _validate(self, path: str) -> None:
        if not self.train:
            raise TrainConfigError(f"{path}.train: expected at least one data source")


@dataclass
class OptimConfig:
    """AdamW with two parameter groups.

    Attributes:
        lr_head: learning rate of everything but the backbone (official: 1e-4).
        lr_backbone: learning rate of the parameters matching ``backbone_patterns`` (official: 1e-5).
        backbone_patterns: ``fnmatch`` patterns of the backbone's parameter names (official: the DINOv2 ViT,
            ``encoder.backbone.*``; the encoder's output projections train with the head).
        weight_decay, betas, eps: AdamW settings.
        grad_clip: maximum global gradient norm (0: no clipping; official: 1.0).
    """

    lr_head: float = _f(1e-4, gt=0)
    lr_backbone: float = _f(1e-5, ge=0)
    backbone_patterns: list[str] = _f(factory=lambda: ["encoder.backbone.*"])
    weight_decay: float = _f(0.01, ge=0)
    betas: tuple[float, float] = _f((0.9, 0.999), ge=0, lt=1)
    eps: float = _f(1e-8, gt=0)
    grad_clip: float = _f(1.0, ge=0)


@dataclass
class ScheduleConfig:
    """Learning-rate schedule (a multiplier of each group's base LR, per optimizer step).

    Attributes:
        kind: ``"cosine"`` (warm-up, then cosine decay to ``min_lr_ratio``), ``"constant"`` (warm-up, then 1)
            or ``"step"`` (warm-up, then ``gamma`` every ``step_size`` steps).
        warmup_steps: linear warm-up from 0.
        min_lr_ratio: floor of the cosine decay.
        step_size, gamma: of the ``"step"`` schedule (official: 25000, 0.5).
        backbone_freeze_steps: the backbone LR is 0 for this many steps and then warms up over ``warmup_steps``
            (official recipe: 1000).
    """

    kind: Literal["cosine", "constant", "step"] = "cosine"
    warmup_steps: int = _f(100, ge=0)
    min_lr_ratio: float = _f(0.0, ge=0, le=1)
    step_size: int = _f(25000, ge=1)
    gamma: float = _f(0.5, gt=0, le=1)
    backbone_freeze_steps: int = _f(0, ge=0)


@dataclass
class LossConfig:
    """Loss sets per label type.

    Attributes:
        sets: full replacement of the loss set of a label type, in the official JSON form
            ``{A: {name: {function, weight, params}}}`` (label types not given keep the official set).
        overrides: changes to single terms ``{A: {global: {align_resolution: 16}, patch_64: null}}``: a mapping
            updates ``weight`` and ``params`` keys of that term, ``null`` removes the term.  Applied after
            ``sets``.  Use it on a CPU: the alignments cost O(N^2) in ``align_resolution^2`` (see TRAINING.md).
    """

    sets: dict[str, Any] = _f(factory=dict)
    overrides: dict[str, Any] = _f(factory=dict)


@dataclass
class LoopConfig:
    """The optimisation loop.

    Attributes:
        steps: optimizer steps in total.
        batch_size: instances per forward pass per process.
        grad_accum: forward/backward passes per optimizer step (effective batch = batch_size x grad_accum x
            processes).
        num_tokens_range: ``[min, max]`` ViT token budget drawn uniformly per step (official: 1200-3600; a CPU
            needs small values such as 300-600).
        low_resolution_steps: use ``num_tokens_range[0]`` for the first steps (official: 50000).
        amp: ``"off"``, ``"bf16"``, ``"fp16"`` (with a gradient scaler; CUDA only) or ``"auto"`` (bf16 on CUDA
            when supported, else fp16; off on a CPU).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``; under torchrun each rank takes
            ``cuda:LOCAL_RANK``.
        skip_nonfinite: skip an update whose loss or gradients are not finite (counted and logged).
    """

    steps: int = _f(1000, ge=1)
    batch_size: int = _f(4, ge=1)
    grad_accum: int = _f(1, ge=1)
    num_tokens_range: tuple[int, int] = _f((1200, 3600), ge=4)
    low_resolution_steps: int = _f(0, ge=0)
    amp: Literal["off", "bf16", "fp16", "auto"] = "auto"
    device: str = "auto"
    skip_nonfinite: bool = True

    def _validate(self, path: str) -> None:
        lo, hi = self.num_tokens_range
        if lo > hi:
            raise TrainConfigError(f"{path}.num_tokens_range: expected [min, max] with min <= max, found "
                                   f"{list(self.num_tokens_range)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise TrainConfigError(f"{path}.device: expected auto, cpu or cuda, found {self.device!r}")


@dataclass
class LogConfig:
    """Logging (rank 0 only).

    Attributes:
        every: steps between log records (``log.jsonl``, TensorBoard scalars, progress-bar postfix).
        progress: show a tqdm progress bar with the loss and the rate.
        tensorboard: write TensorBoard events under ``<output_dir>/tb`` (warning and off when the package is
            missing).
        image_every: steps between image panels (input, predicted and ground-truth depth); 0: none.
        num_images: instances per panel.
    """

    every: int = _f(10, ge=1)
    progress: bool = True
    tensorboard: bool = True
    image_every: int = _f(0, ge=0)
    num_images: int = _f(2, ge=1)


@dataclass
class CheckpointConfig:
    """Checkpoints under ``<output_dir>/checkpoints``.

    Attributes:
        every: steps between checkpoints (the last step is always saved).
        keep: most recent checkpoints kept (older ones are deleted; 0 keeps all).
    """

    every: int = _f(500, ge=1)
    keep: int = _f(3, ge=0)


@dataclass
class ValConfig:
    """Validation on ``data.val`` with the official metrics (:mod:`moge2_ros.eval.metrics`).

    Attributes:
        every: steps between validations (0: only at the end).
        max_samples: at most this many validation items (evenly spaced).
        num_tokens: token budget at validation (None: ``loop.num_tokens_range[1]``).
        align_resolution: side of the metrics' alignment subsample (official 64; smaller is faster on a CPU).
        affine_invariant: also compute the slow affine-invariant groups.
    """

    every: int = _f(0, ge=0)
    max_samples: int = _f(32, ge=1)
    num_tokens: int | None = _f(None, ge=4)
    align_resolution: int = _f(32, ge=4)
    affine_invariant: bool = False


@dataclass
class TrainConfig:
    """The whole training configuration (see ``docs/TRAINING.md`` for every key).

    Attributes:
        output_dir: run folder (checkpoints, logs, ``config.yaml``, ``model.pt``).
        seed: seeds the data order, augmentation, token budgets, loss sampling and initial weights.
    """

    output_dir: str = "runs/train"
    seed: int = _f(0, ge=0)
    model: ModelConfig = _f(factory=ModelConfig)
    data: DataConfig = _f(factory=DataConfig)
    optim: OptimConfig = _f(factory=OptimConfig)
    schedule: ScheduleConfig = _f(factory=ScheduleConfig)
    loss: LossConfig = _f(factory=LossConfig)
    loop: LoopConfig = _f(factory=LoopConfig)
    log: LogConfig = _f(factory=LogConfig)
    checkpoint: CheckpointConfig = _f(factory=CheckpointConfig)
    val: ValConfig = _f(factory=ValConfig)


# ---------------------------------------------------------------------------------------------------- parsing


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, getattr(__import__("types"), "UnionType", Union)):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin in (list, tuple):
        return f"a list ({tp})"
    if origin is dict:
        return "a mapping"
    return {int: "an int", float: "a number", bool: "true/false", str: "a string"}.get(tp, str(tp))


def _convert(tp: Any, value: Any, path: str) -> Any:
    """``value`` checked against / converted to the type ``tp``; errors name ``path``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if tp is type(None):
        if value is not None:
            raise TrainConfigError(f"{path}: expected null, found {value!r}")
        return None
    if origin is Literal:
        if value not in args:
            raise TrainConfigError(f"{path}: expected {_type_name(tp)}, found {value!r}")
        return value
    if origin is Union or (origin is not None and type(tp).__name__ == "UnionType"):
        if value is None and type(None) in args:
            return None
        if tp == DataSource or set(args) == set(_SOURCE_KINDS.values()):
            return _parse_source(value, path)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except TrainConfigError as exc:
                errors.append(str(exc))
        raise TrainConfigError(errors[0] if len(errors) == 1 else f"{path}: expected {_type_name(tp)}, found {value!r}")
    if dataclasses.is_dataclass(tp):
        return _parse_dataclass(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise TrainConfigError(f"{path}: expected true/false, found {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TrainConfigError(f"{path}: expected an int, found {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TrainConfigError(f"{path}: expected a finite number, found {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TrainConfigError(f"{path}: expected a string, found {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise TrainConfigError(f"{path}: expected a list, found {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise TrainConfigError(f"{path}: expected a list of {len(args)} values, found {list(value)!r}")
            return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, Mapping):
            raise TrainConfigError(f"{path}: expected a mapping, found {value!r}")
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise TrainConfigError(f"{path}: keys must be strings, found {bad[0]!r}")
        return {k: _convert(args[1] if args else Any, v, f"{path}.{k}") for k, v in value.items()}
    raise TrainConfigError(f"{path}: unsupported type {tp}")  # pragma: no cover - schema bug


def _parse_dataclass(cls: type, data: Any, path: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise TrainConfigError(f"{path or 'config'}: expected a mapping, found {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{path}." if path else ""
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise TrainConfigError(f"{prefix}{unknown[0]}: unknown key; expected one of {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        key_path = f"{prefix}{name}"
        kwargs[name] = _convert(hints[name], value, key_path)
        _check(fields[name].metadata, kwargs[name], key_path)
    obj = cls(**kwargs)
    validate = getattr(obj, "_validate", None)
    if validate is not None:
        validate(path or "config")
    return obj


def _parse_source(value: Any, path: str) -> DataSource:
    if not isinstance(value, Mapping):
        raise TrainConfigError(f"{path}: expected a mapping with a 'kind', found {value!r}")
    kind = value.get("kind")
    if kind not in _SOURCE_KINDS:
        raise TrainConfigError(f"{path}.kind: expected one of {sorted(_SOURCE_KINDS)}, found {kind!r}")
    return _parse_dataclass(_SOURCE_KINDS[kind], value, path)


def _check_against_dataclass(cls: type, values: Mapping[str, Any], path: str) -> dict[str, Any]:
    """Keyword arguments for an external dataclass (AugmentConfig, SyntheticConfig): unknown keys rejected, lists
    turned into tuples where the field's default is a tuple."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise TrainConfigError(f"{path}.{key}: unknown key; expected one of {sorted(fields)}")
        default = fields[key].default
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        out[key] = value
    try:
        cls(**out)
    except (Moge2RosError, TypeError, ValueError) as exc:
        raise TrainConfigError(f"{path}: {exc}") from None
    return out


def _validate_loss(cfg: LossConfig) -> None:
    from moge2_ros.train.losses import LOSS_SET_LABELS, LossError, LossSet

    for section in ("sets", "overrides"):
        for label, spec in getattr(cfg, section).items():
            if label not in LOSS_SET_LABELS:
                raise TrainConfigError(f"loss.{section}.{label}: unknown label type; expected one of "
                                       f"{list(LOSS_SET_LABELS)}")
            if not isinstance(spec, Mapping):
                raise TrainConfigError(f"loss.{section}.{label}: expected a mapping of loss terms, found {spec!r}")
            if section == "sets":
                try:
                    LossSet.from_dict(spec)
                except LossError as exc:
                    raise TrainConfigError(f"loss.sets.{label}: {exc}") from None
    build_loss_sets(cfg)


def build_loss_sets(cfg: LossConfig) -> dict[str, Any]:
    """The per-label loss sets (official sets, replaced by ``sets``, then changed by ``overrides``).

    Raises:
        TrainConfigError: an override names a term that is not in the set or has malformed values.
            A resulting set that is invalid (bad parameter, order) is reported with its label.
    """
    from moge2_ros.train.losses import OFFICIAL_LOSS_SETS, LossError, LossSet

    out = {}
    for label, official in OFFICIAL_LOSS_SETS.items():
        spec = dict(cfg.sets[label]) if label in cfg.sets else official.to_dict()
        spec = {k: {**v, "params": dict(v.get("params", {}))} for k, v in spec.items()}
        for name, change in cfg.overrides.get(label, {}).items():
            path = f"loss.overrides.{label}.{name}"
            if name not in spec:
                raise TrainConfigError(f"{path}: no term {name!r} in the loss set of label {label}; terms: "
                                       f"{list(spec)}")
            if change is None:
                del spec[name]
                continue
            if not isinstance(change, Mapping):
                raise TrainConfigError(f"{path}: expected a mapping (weight, params keys) or null, found {change!r}")
            for key, value in change.items():
                if key == "weight":
                    spec[name]["weight"] = _convert(float, value, f"{path}.weight")
                else:  # a loss-function parameter (checked by LossTerm)
                    spec[name]["params"][key] = value
        try:
            out[label] = LossSet.from_dict(spec)
        except LossError as exc:
            raise TrainConfigError(f"loss (label {label}): {exc}") from None
    return out


def config_from_dict(data: Mapping[str, Any], validate_external: bool = True) -> TrainConfig:
    """Validate a configuration dict into a :class:`TrainConfig`.

    Args:
        data: the parsed YAML (``None`` values mean "default" only where the key accepts null).
        validate_external: also check ``data.augment`` against ``AugmentConfig``, synthetic ``generator`` dicts
            against ``SyntheticConfig`` and the loss sets (imports torch).

    Raises:
        TrainConfigError: naming the key path of the first problem.
    """
    cfg = _parse_dataclass(TrainConfig, data, "")
    if validate_external:
        from moge2_ros.data.pipeline import AugmentConfig
        from moge2_ros.data.synthetic import SyntheticConfig

        cfg.data.augment = _check_against_dataclass(AugmentConfig, cfg.data.augment, "data.augment")
        for section in ("train", "val"):
            for i, source in enumerate(getattr(cfg.data, section)):
                if isinstance(source, SyntheticSource):
                    source.generator = _check_against_dataclass(SyntheticConfig, source.generator,
                                                                f"data.{section}[{i}].generator")
        _validate_loss(cfg.loss)
    return cfg


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Read and validate a YAML training configuration (optionally overlaid with ``overrides``).

    Raises:
        TrainConfigError: unreadable file, YAML syntax error, or an invalid key (with its path).
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise TrainConfigError(f"{path}: cannot read the training config ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TrainConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise TrainConfigError(f"{path}: expected a mapping at the top level, found {type(data).__name__}")
    if overrides:
        data = merge_dicts(data, overrides)
    try:
        return config_from_dict(data)
    except TrainConfigError as exc:
        raise TrainConfigError(f"{path}: {exc}") from None


def merge_dicts(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` overlaid recursively (mappings merge, anything else replaces)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def config_to_dict(cfg: Any) -> Any:
    """A :class:`TrainConfig` (or any part of it) as plain YAML-able data (tuples become lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {k: config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    return cfg
