"""The trainer on tiny analytic folder datasets: the loss decreases, outputs are written in the documented layout,
checkpoints load in the Predictor, mixed label types, TensorBoard on/off, validation JSON."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from moge2_ros.checkpoints import load_model, read_checkpoint
from moge2_ros.train.config import TrainConfigError, build_loss_sets, config_from_dict
from moge2_ros.train.state import find_latest_checkpoint, load_training_state
from moge2_ros.train.trainer import Trainer, _Indexed, batch_loss, train
from train_helpers import analytic_sample, tiny_config, write_analytic_folder


@pytest.fixture(scope="module")
def folder_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_analytic_folder(tmp_path_factory.mktemp("data") / "a", count=6, seed=1)


@pytest.fixture(scope="module")
def folder_c(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_analytic_folder(tmp_path_factory.mktemp("data") / "c", count=4, seed=2, label_type="C")


def _fixed_batch(cfg, count: int = 4) -> dict:
    from moge2_ros.data.folder import FolderDataset
    from moge2_ros.data.pipeline import AugmentConfig, TrainingView

    view = _Indexed(TrainingView(FolderDataset(cfg.data.train[0].root), AugmentConfig(**cfg.data.augment),
                                 train=False))
    return torch.utils.data.default_collate([view[i] for i in range(count)])


def _eval_loss(model, batch, loss_sets) -> float:
    model.eval()
    with torch.no_grad():
        loss, _ = batch_loss(model(batch["image"], 16), batch, loss_sets, seed=0, step=0)
    return float(loss)


def test_loss_decreases_on_tiny_set(tmp_path: Path) -> None:
    # Two frames, batch 2, no augmentation, fixed token budget: the model must fit them.
    root = write_analytic_folder(tmp_path / "two", count=2, seed=1)
    overrides = {"loop": {"steps": 8, "num_tokens_range": [16, 16]}, "optim": {"lr_head": 3e-4, "lr_backbone": 3e-4},
                 "data": {"augment": {"flip_prob": 0.0, "color_jitter": False, "area_range": [1.0, 1.0]}},
                 "checkpoint": {"every": 1000}}
    cfg = config_from_dict(tiny_config(tmp_path / "run", root, **overrides))
    batch = _fixed_batch(cfg, 2)
    loss_sets = build_loss_sets(cfg.loss)
    from moge2_ros.train.trainer import build_model

    before = _eval_loss(build_model(cfg.model, cfg.seed), batch, loss_sets)
    result = train(cfg, quiet=True)
    after = _eval_loss(load_model(result.model_path), batch, loss_sets)
    assert result.step == 8 and result.skipped_steps == 0
    assert np.isfinite(before) and np.isfinite(after)
    assert after < 0.85 * before, (before, after)
    # Training-loss records: one per step (log.every = 1), finite, and lower at the end than at the start.
    losses = [r["loss"] for r in result.history]
    assert len(losses) == 8 and all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < losses[0]


def test_outputs_layout_and_checkpoints_load_in_predictor(tmp_path: Path, folder_a: Path) -> None:
    from moge2_ros.inference.predictor import Predictor

    data = tiny_config(tmp_path / "run", folder_a, loop={"steps": 2}, checkpoint={"every": 1})
    data["data"]["val"] = [{"kind": "folder", "root": str(folder_a)}]
    data["val"] = {"every": 1, "max_samples": 2, "align_resolution": 8}
    result = train(config_from_dict(data), quiet=True)
    out = tmp_path / "run"
    assert (out / "config.yaml").is_file() and (out / "log.jsonl").is_file()
    assert len((out / "log.jsonl").read_text().splitlines()) == 2

    # Official checkpoint format: exactly {'model_config', 'model'}; loads strictly in the Predictor.
    raw = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert set(raw) == {"model_config", "model"}
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*")) == [
        "step_00000001.pt", "step_00000001.state.pt", "step_00000002.pt", "step_00000002.state.pt"]
    latest = find_latest_checkpoint(out / "checkpoints")
    assert latest is not None and latest.step == 2 and latest.model == result.checkpoint
    _, state_dict = read_checkpoint(latest.model)
    final = load_model(out / "model.pt")
    for key, value in final.state_dict().items():
        assert torch.equal(value, state_dict[key]), key
    predictor = Predictor(load_model(latest.model), num_tokens=24)
    image = analytic_sample(np.random.default_rng(5), 30, 40).image
    geometry = predictor.predict(image)
    assert tuple(geometry.depth.shape[-2:]) == (30, 40)
    assert bool(torch.isfinite(geometry.intrinsics).all())

    # Training state: the optimizer of both parameter groups, scheduler, RNG, counters.
    state = load_training_state(latest.state)
    assert state["step"] == 2 and state["consumed"] == 2
    assert [g["name"] for g in state["optimizer"]["param_groups"]] == ["head", "backbone"]
    assert state["scheduler"]["last_epoch"] == 2 and "torch" in state["rng"]

    # Validation with the official metrics, written next to the checkpoints at steps 1 and 2.
    for step in (1, 2):
        record = json.loads((out / "checkpoints" / f"val_{step:08d}.json").read_text())
        assert record["step"] == step and record["num_samples"] == 2
        assert 0.0 <= record["depth_scale_invariant/delta1"] <= 1.0 and 0.0 < record["coverage"] <= 1.0
    assert [r["step"] for r in result.val] == [1, 2]

    # A second run into the same folder without resume is refused (nothing is overwritten).
    with pytest.raises(TrainConfigError, match="--resume"):
        train(config_from_dict(data), quiet=True)


def test_mixed_label_types_in_one_batch(folder_a: Path, folder_c: Path, tmp_path: Path) -> None:
    from moge2_ros.data.folder import FolderDataset
    from moge2_ros.data.pipeline import AugmentConfig, TrainingView
    from moge2_ros.train.trainer import build_model

    cfg = config_from_dict(tiny_config(tmp_path, folder_a))
    loss_sets = build_loss_sets(cfg.loss)
    augment = AugmentConfig(image_size=(24, 32))
    item_a = _Indexed(TrainingView(FolderDataset(folder_a), augment, train=False))[1]
    item_c = _Indexed(TrainingView(FolderDataset(folder_c), augment, train=False))[0]
    invalid = dict(item_a, label_type="invalid")
    batch = torch.utils.data.default_collate([item_a, item_c, invalid])
    assert batch["label_type"] == ["A", "C", "invalid"]
    model = build_model(cfg.model).train()
    out = model(batch["image"], 16)
    loss, records = batch_loss(out, batch, loss_sets, seed=0, step=0)
    # A uses its full (reduced) set with the normal map; C only global, patch_4, metric scale and mask.
    assert {"loss/global", "loss/patch_4", "loss/normal", "loss/normal_map", "loss/mask", "loss/metric_scale"} \
        <= set(records[0])
    assert set(k for k in records[1] if k.startswith("loss/")) == {"loss/global", "loss/patch_4", "loss/mask",
                                                                   "loss/metric_scale"}
    assert records[2] == {"loss": 0.0}
    # The batch loss is the mean over all three instances (the invalid one counts as 0).
    assert float(loss.detach()) == pytest.approx((records[0]["loss"] + records[1]["loss"]) / 3, rel=1e-5)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    # Every head is reached even where no term uses it (DINOv2's mask_token is never used in a forward pass).
    assert [n for n, g in grads.items() if g is None] == ["encoder.backbone.mask_token"]
    assert float(grads["scale_head.0.weight"].abs().sum()) > 0


def test_tensorboard_scalars_and_image_panel(tmp_path: Path, folder_a: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = tiny_config(tmp_path / "run", folder_a, log={"tensorboard": True, "image_every": 1}, loop={"steps": 2})
    train(config_from_dict(data), quiet=True)
    acc = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"train/loss", "lr/head", "lr/backbone", "perf/steps_per_s", "loss/global"} <= scalars
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]
    images = acc.Images("panel/input_pred_gt_depth")
    assert [e.step for e in images] == [1, 2]
    assert images[0].width == 3 * 32 and images[0].height == 2 * 24


def test_tensorboard_missing_is_a_warning(tmp_path: Path, folder_a: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import raises ImportError
    data = tiny_config(tmp_path / "run", folder_a, log={"tensorboard": True}, loop={"steps": 1})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(config_from_dict(data), quiet=True)
    assert result.step == 1 and not (tmp_path / "run" / "tb").exists()
    assert any("tensorboard" in str(w.message) for w in caught)


def test_nonfinite_gradients_skip_the_update(tmp_path: Path, folder_a: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import moge2_ros.train.trainer as trainer_module

    real = trainer_module.batch_loss

    def poisoned(*args, **kwargs):
        loss, records = real(*args, **kwargs)
        return loss * torch.tensor(float("nan")), records

    monkeypatch.setattr(trainer_module, "batch_loss", poisoned)
    cfg = config_from_dict(tiny_config(tmp_path / "run", folder_a, loop={"steps": 2}))
    trainer = Trainer(cfg, quiet=True)
    result = trainer.fit()
    assert result.skipped_steps == 2
    from moge2_ros.train.trainer import build_model

    initial = build_model(cfg.model, cfg.seed).state_dict()
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, initial[key]), key
