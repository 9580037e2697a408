"""Training configuration: YAML -> dataclasses with key-path errors; loss-set overrides; the shipped configs;
LR schedule, token budgets and parameter groups."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from _paths import REPO
from moge2_ros.train.config import (
    BagSource,
    FolderSource,
    SyntheticSource,
    TrainConfig,
    TrainConfigError,
    build_loss_sets,
    config_from_dict,
    config_to_dict,
    load_config,
    merge_dicts,
)
from moge2_ros.train.losses import OFFICIAL_LOSS_SETS

MINIMAL = {"data": {"train": [{"kind": "folder", "root": "somewhere"}]}}


def _with(**sections) -> dict:
    return merge_dicts(MINIMAL, sections)


def test_defaults_and_sources() -> None:
    cfg = config_from_dict({"data": {"train": [
        {"kind": "synthetic", "count": 5, "generator": {"fov_x_deg": [50, 70], "shadows": False}},
        {"kind": "folder", "root": "/data/a"},
        {"kind": "bag", "path": "rec", "image_topic": "/cam/image", "cloud_topic": "/lidar"},
    ], "augment": {"image_size": [96, 128], "area_range": [0.5, 1.0]}}})
    assert isinstance(cfg, TrainConfig)
    synthetic, folder, bag = cfg.data.train
    assert isinstance(synthetic, SyntheticSource) and synthetic.count == 5 and synthetic.height == 240
    assert synthetic.generator == {"fov_x_deg": (50, 70), "shadows": False}
    assert isinstance(folder, FolderSource) and folder.root == "/data/a"
    assert isinstance(bag, BagSource) and bag.depth_topic is None and bag.cloud_topic == "/lidar"
    assert cfg.data.augment == {"image_size": (96, 128), "area_range": (0.5, 1.0)}
    assert cfg.loop.num_tokens_range == (1200, 3600) and cfg.optim.lr_head == 1e-4 and cfg.optim.lr_backbone == 1e-5
    # Round trip through plain data (what the trainer writes as config.yaml).
    assert config_from_dict(config_to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"loop": {"batch_size": 0}}, r"^loop\.batch_size: expected values >= 1, found 0$"),
        ({"loop": {"bogus": 1}}, r"^loop\.bogus: unknown key"),
        ({"bogus": 1}, r"^bogus: unknown key"),
        ({"loop": {"steps": "ten"}}, r"^loop\.steps: expected an int, found 'ten'"),
        ({"loop": {"steps": True}}, r"^loop\.steps: expected an int"),
        ({"optim": {"lr_head": float("nan")}}, r"^optim\.lr_head: expected a finite number"),
        ({"optim": {"betas": [0.9]}}, r"^optim\.betas: expected a list of 2 values"),
        ({"optim": {"betas": [0.9, 1.0]}}, r"^optim\.betas: expected values < 1"),
        ({"loop": {"amp": "fp8"}}, r"^loop\.amp: expected one of 'off', 'bf16', 'fp16', 'auto'"),
        ({"loop": {"num_tokens_range": [600, 300]}}, r"^loop\.num_tokens_range: expected \[min, max\]"),
        ({"loop": {"device": "tpu"}}, r"^loop\.device: expected auto, cpu or cuda"),
        ({"schedule": {"kind": "linear"}}, r"^schedule\.kind: expected one of"),
        ({"model": {"preset_args": {"width": 3}}}, r"^model\.preset_args: unknown keys \['width'\]"),
        ({"model": {"init": "a.pt", "config": {}}}, r"^model: give either init"),
        ({"log": "loud"}, r"^log: expected a mapping"),
    ],
)
def test_bad_values_name_the_key_path(data: dict, message: str) -> None:
    with pytest.raises(TrainConfigError, match=message):
        config_from_dict(_with(**data))


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ([], r"^data\.train: expected at least one data source"),
        ([{"root": "x"}], r"^data\.train\[0\]\.kind: expected one of \['bag', 'folder', 'sevenscenes', 'synthetic'\]"),
        ([{"kind": "folder"}], r"^data\.train\[0\]\.root: expected the dataset folder"),
        ([{"kind": "folder", "root": "a"}, {"kind": "synthetic", "count": -1}],
         r"^data\.train\[1\]\.count: expected values >= 1, found -1"),
        ([{"kind": "synthetic", "generator": {"fov": 3}}], r"^data\.train\[0\]\.generator\.fov: unknown key"),
        ([{"kind": "synthetic", "generator": {"fov_x_deg": [120, 60]}}], r"^data\.train\[0\]\.generator: .*fov_x_deg"),
        ([{"kind": "bag", "path": "b", "image_topic": "/i"}], r"^data\.train\[0\]: expected exactly one of depth"),
        ([{"kind": "sevenscenes", "root": "r", "start": 5, "stop": 5}], r"^data\.train\[0\]: expected start < stop"),
        ([{"kind": "folder", "root": "a", "extra": 1}], r"^data\.train\[0\]\.extra: unknown key"),
    ],
)
def test_bad_sources_name_the_key_path(train: list, message: str) -> None:
    with pytest.raises(TrainConfigError, match=message):
        config_from_dict({"data": {"train": train}})


def test_augment_keys_are_checked_against_the_pipeline() -> None:
    with pytest.raises(TrainConfigError, match=r"^data\.augment\.size: unknown key"):
        config_from_dict(_with(data={"augment": {"size": [10, 10]}}))
    with pytest.raises(TrainConfigError, match=r"^data\.augment: .*image_size"):
        config_from_dict(_with(data={"augment": {"image_size": [1, 1]}}))


def test_loss_overrides_and_sets() -> None:
    cfg = config_from_dict(_with(loss={
        "overrides": {"A": {"global": {"align_resolution": 16, "weight": 2}, "patch_64": None},
                      "C": {"mask": {"weight": 0.5}}},
        "sets": {"B": {"global": {"function": "affine_invariant_global_loss", "weight": 1.0}}},
    }))
    sets = build_loss_sets(cfg.loss)
    a = {t.name: t for t in sets["A"].terms}
    assert "patch_64" not in a and a["global"].weight == 2.0 and a["global"].params == {"align_resolution": 16}
    assert a["patch_16"] == {t.name: t for t in OFFICIAL_LOSS_SETS["A"].terms}["patch_16"]  # untouched
    assert [t.name for t in sets["B"].terms] == ["global"]
    assert {t.name: t.weight for t in sets["C"].terms}["mask"] == 0.5
    assert sets["invalid"].terms == ()


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        ({"overrides": {"D": {}}}, r"^loss\.overrides\.D: unknown label type"),
        ({"overrides": {"A": {"patch_128": None}}}, r"^loss\.overrides\.A\.patch_128: no term 'patch_128'"),
        ({"overrides": {"A": {"global": {"align_res": 3}}}}, r"^loss \(label A\): .*'global'.*align_res"),
        ({"overrides": {"A": {"global": "small"}}}, r"^loss\.overrides\.A\.global: expected a mapping"),
        ({"overrides": {"A": {"global": None}}}, r"^loss \(label A\): .*metric_scale_loss needs"),
        ({"sets": {"B": {"g": {"function": "nope"}}}}, r"^loss\.sets\.B: .*unknown function 'nope'"),
    ],
)
def test_bad_loss_config(loss: dict, message: str) -> None:
    with pytest.raises(TrainConfigError, match=message):
        config_from_dict(_with(loss=loss))


def test_load_config_yaml_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(TrainConfigError, match="missing.yaml: cannot read"):
        load_config(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("loop: {steps: [\n")
    with pytest.raises(TrainConfigError, match="broken.yaml: not valid YAML"):
        load_config(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(TrainConfigError, match="list.yaml: expected a mapping at the top level"):
        load_config(listed)
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  train:\n    - {kind: folder, root: x}\nloop:\n  steps: 0\n")
    with pytest.raises(TrainConfigError, match=r"bad.yaml: loop\.steps: expected values >= 1, found 0"):
        load_config(bad)
    assert load_config(bad, {"loop": {"steps": 7}}).loop.steps == 7


@pytest.mark.parametrize("name", ["demo_synthetic.yaml", "finetune_folder.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    cfg = load_config(REPO / "configs" / "train" / name)
    assert cfg.loop.steps >= 1 and cfg.data.train


def test_merge_dicts() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert merge_dicts(base, {"a": {"c": [3]}, "e": 2}) == {"a": {"b": 1, "c": [3]}, "d": 1, "e": 2}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}  # not modified


# ---------------------------------------------------------------------------------------------- schedule & groups


def test_lr_factor_shapes() -> None:
    from moge2_ros.train.config import ScheduleConfig
    from moge2_ros.train.trainer import lr_factor

    cosine = ScheduleConfig(kind="cosine", warmup_steps=4, min_lr_ratio=0.1)
    values = [lr_factor(s, cosine, total_steps=20) for s in range(20)]
    assert values[:4] == [0.25, 0.5, 0.75, 1.0]
    assert values[4] == pytest.approx(1.0) and all(a >= b for a, b in zip(values[4:], values[5:]))
    assert lr_factor(20, cosine, 20) == pytest.approx(0.1) and lr_factor(100, cosine, 20) == pytest.approx(0.1)
    assert lr_factor(12, cosine, 20) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    constant = ScheduleConfig(kind="constant", warmup_steps=0)
    assert [lr_factor(s, constant, 10) for s in (0, 5, 50)] == [1.0, 1.0, 1.0]
    step = ScheduleConfig(kind="step", warmup_steps=2, step_size=3, gamma=0.5)
    assert [lr_factor(s, step, 100) for s in range(9)] == [0.5, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    # The backbone's delayed start (official recipe: 0 for 1000 steps, then a warm-up).
    assert [lr_factor(s, ScheduleConfig(kind="constant", warmup_steps=2), 100, delay=3) for s in range(6)] == \
        [0.0, 0.0, 0.0, 0.5, 1.0, 1.0]


def test_num_tokens_for_step_is_deterministic_and_in_range() -> None:
    from moge2_ros.train.trainer import num_tokens_for_step

    values = [num_tokens_for_step(7, s, (300, 600)) for s in range(200)]
    assert values == [num_tokens_for_step(7, s, (300, 600)) for s in range(200)]
    assert min(values) >= 300 and max(values) <= 600 and len(set(values)) > 50
    assert values != [num_tokens_for_step(8, s, (300, 600)) for s in range(200)]
    assert [num_tokens_for_step(7, s, (300, 600), low_resolution_steps=5) for s in range(5)] == [300] * 5


def test_param_groups_split_backbone_and_head() -> None:
    from moge2_ros.model.config import MoGe2Config
    from moge2_ros.model.moge2 import MoGe2Model
    from moge2_ros.train.trainer import build_param_groups

    model = MoGe2Model(MoGe2Config.tiny(embed_dim=24, depth=2, num_heads=2))
    head, backbone = build_param_groups(model, ["encoder.backbone.*"], 1e-4, 1e-5)
    names = {id(p): n for n, p in model.named_parameters()}
    assert (head["lr"], backbone["lr"]) == (1e-4, 1e-5)
    assert all(names[id(p)].startswith("encoder.backbone.") for p in backbone["params"])
    assert not any(names[id(p)].startswith("encoder.backbone.") for p in head["params"])
    assert len(head["params"]) + len(backbone["params"]) == len(names)
    assert any(names[id(p)].startswith("encoder.output_projections") for p in head["params"])
    with pytest.raises(TrainConfigError, match="optim.backbone_patterns"):
        build_param_groups(model, ["backbone.*"], 1e-4, 1e-5)
