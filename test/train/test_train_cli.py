"""``moge2-ros train`` and ``moge2-ros finetune``: exit codes, one-line errors, resume, folder and bag inputs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import moge2_ros.cli as cli
from moge2_ros.checkpoints import load_model, save_checkpoint
from moge2_ros.model.config import MoGe2Config
from moge2_ros.model.moge2 import MoGe2Model
from train_helpers import FAST_LOSS, PYTHON, analytic_sample, small_model_config, subprocess_env, tiny_config, \
    write_analytic_folder, write_yaml


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_analytic_folder(tmp_path_factory.mktemp("cli") / "data", count=4, seed=8)


@pytest.fixture(scope="module")
def source_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(MoGe2Model(MoGe2Config.from_dict(small_model_config())),
                           tmp_path_factory.mktemp("model") / "model.pt")


#: What finetune --config overlays in these tests: a tiny image, token budget and loss (CPU speed).
FAST_FINETUNE = {"data": {"augment": {"image_size": [24, 32]}}, "loss": {"overrides": FAST_LOSS},
                 "loop": {"num_tokens_range": [12, 20]}, "log": {"progress": False, "tensorboard": False}}


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "finetune" in out


def test_cli_module_imports_no_torch() -> None:
    code = "import sys, moge2_ros.train.cli; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([PYTHON, "-c", code], env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_train_then_resume_with_more_steps(tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_yaml(tmp_path / "train.yaml", tiny_config(tmp_path / "ignored", folder, loop={"steps": 2}))
    out = tmp_path / "run"
    assert cli.main(["train", str(config), "--output", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "model.pt")
    first = load_model(out / "model.pt")
    # Again without --resume: refused (exit 1, one line naming the folder).
    assert cli.main(["train", str(config), "--output", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--resume" in err and str(out) in err
    # --resume with more steps continues from step 2.
    assert cli.main(["train", str(config), "--output", str(out), "--steps", "3", "--resume"]) == 0
    lines = (out / "log.jsonl").read_text().splitlines()
    assert [yaml.safe_load(line)["step"] for line in lines] == [1, 2, 3]
    second = load_model(out / "model.pt")
    assert any(not torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_train_errors_are_one_line(tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tiny_config(tmp_path / "run", folder)
    bad["loop"]["batch_sise"] = 2
    config = write_yaml(tmp_path / "bad.yaml", bad)
    assert cli.main(["train", str(config)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.yaml: loop.batch_sise: unknown key" in err
    assert cli.main(["train", str(config), "--steps", "0"]) == 2
    missing_data = write_yaml(tmp_path / "nodata.yaml", tiny_config(tmp_path / "run2", tmp_path / "nowhere"))
    assert cli.main(["train", str(missing_data)]) == 1
    assert "nowhere" in capsys.readouterr().err


def test_finetune_on_a_folder(tmp_path: Path, folder: Path, source_model: Path) -> None:
    overlay = write_yaml(tmp_path / "fast.yaml", FAST_FINETUNE)
    out = tmp_path / "ft"
    code = cli.main(["finetune", "--model", str(source_model), "--data", str(folder), "--output", str(out),
                     "--steps", "2", "--config", str(overlay), "--device", "cpu"])
    assert code == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["init"] == str(source_model)
    assert saved["optim"]["lr_head"] == 2e-5 and saved["optim"]["lr_backbone"] == 2e-6  # the lower LR
    assert saved["data"]["train"] == [{"kind": "folder", "root": str(folder)}]
    assert saved["loop"]["steps"] == 2 and saved["loss"]["overrides"] == FAST_LOSS
    before, after = load_model(source_model), load_model(out / "model.pt")
    assert before.config.to_dict() == after.config.to_dict()
    changed = [k for k, v in before.state_dict().items() if not torch.equal(v, after.state_dict()[k])]
    assert changed  # the weights moved


def test_finetune_on_a_bag(tmp_path: Path, source_model: Path) -> None:
    pytest.importorskip("rosbags")
    from moge2_ros.data.make_bag import write_samples_bag

    rng = np.random.default_rng(3)
    samples = [analytic_sample(rng, 36, 48, label_type="B") for _ in range(4)]
    layout = write_samples_bag(tmp_path / "rec", samples)
    overlay = write_yaml(tmp_path / "fast.yaml", FAST_FINETUNE)
    out = tmp_path / "ft"
    args = ["finetune", "--model", str(source_model), "--data", str(tmp_path / "rec"), "--output", str(out),
            "--steps", "1", "--config", str(overlay), "--device", "cpu"]
    assert cli.main(args) == 2  # a bag needs its topics
    code = cli.main(args + ["--image-topic", layout.image_topic, "--depth-topic", layout.depth_topic,
                            "--camera-info-topic", layout.camera_info_topic])
    assert code == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"]["train"][0]["kind"] == "bag" and saved["data"]["train"][0]["depth_topic"] == layout.depth_topic
    load_model(out / "model.pt")


def test_finetune_on_a_sevenscenes_folder(tmp_path: Path, source_model: Path, sevenscenes_dir: Path) -> None:
    """The 7-Scenes folder that make-bag and refine read is also a --data of finetune (detected, not configured)."""
    overlay = write_yaml(tmp_path / "fast.yaml", FAST_FINETUNE)
    out = tmp_path / "ft"
    code = cli.main(["finetune", "--model", str(source_model), "--data", str(sevenscenes_dir), "--output", str(out),
                     "--steps", "1", "--config", str(overlay), "--device", "cpu"])
    assert code == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"]["train"][0]["kind"] == "sevenscenes"
    assert saved["data"]["train"][0]["root"] == str(sevenscenes_dir)
    load_model(out / "model.pt")


def test_finetune_usage_errors(tmp_path: Path, folder: Path, source_model: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    base = ["finetune", "--model", str(source_model), "--output", str(tmp_path / "ft")]
    assert cli.main(base + ["--data", str(tmp_path / "missing")]) == 2
    assert "--data: no such folder" in capsys.readouterr().err
    assert cli.main(base + ["--data", str(tmp_path), "--image-topic", "/img"]) == 2
    assert "--depth-topic" in capsys.readouterr().err
    assert cli.main(base + ["--data", str(tmp_path), "--depth-topic", "/d", "--cloud-topic", "/c"]) == 2
    assert cli.main(base + ["--data", str(folder), "--image-topic", "/img", "--depth-topic", "/d"]) == 2
    err = capsys.readouterr().err
    assert "--image-topic only applies to rosbag2 input" in err and "is a folder dataset" in err
    assert cli.main(base + ["--data", str(tmp_path), "--steps", "-3"]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(base + ["--data", str(empty), "--device", "cpu"]) == 1
    assert "no frames" in capsys.readouterr().err
