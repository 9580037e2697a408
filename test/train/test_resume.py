"""Exact resume: a run stopped after step k (in process, or killed with SIGKILL in a subprocess) and resumed gives
bit-identical weights and optimizer state to an uninterrupted run of n steps."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from moge2_ros.checkpoints import read_checkpoint
from moge2_ros.train.config import TrainConfigError, config_from_dict
from moge2_ros.train.state import find_latest_checkpoint, load_training_state
from moge2_ros.train.trainer import Trainer, train
from train_helpers import PYTHON, subprocess_env, tiny_config, write_analytic_folder, write_launcher, write_yaml

STEPS = 5  # 6 items, batch 2: 3 batches per epoch, so step 4 is in the middle of the second epoch


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_analytic_folder(tmp_path_factory.mktemp("resume") / "data", count=6, seed=4)


def _config(output: Path, root: Path) -> dict:
    return tiny_config(output, root, loop={"steps": STEPS}, checkpoint={"every": 1, "keep": 0},
                       schedule={"kind": "cosine", "warmup_steps": 2})


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "run"
    result = train(config_from_dict(_config(out, data_root)), quiet=True)
    assert result.step == STEPS and result.model_path is not None
    return out


def _assert_same_run(a: Path, b: Path) -> None:
    _, weights_a = read_checkpoint(a / "model.pt")
    _, weights_b = read_checkpoint(b / "model.pt")
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), f"weights differ: {key}"
    state_a = load_training_state(find_latest_checkpoint(a / "checkpoints").state)
    state_b = load_training_state(find_latest_checkpoint(b / "checkpoints").state)
    assert state_a["step"] == state_b["step"] == STEPS and state_a["consumed"] == state_b["consumed"]
    opt_a, opt_b = state_a["optimizer"]["state"], state_b["optimizer"]["state"]
    assert opt_a.keys() == opt_b.keys()
    for index in opt_a:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt_a[index][name], opt_b[index][name]), f"optimizer state {index}.{name} differs"
    assert state_a["scheduler"] == state_b["scheduler"]


def test_resume_after_injected_stop_is_exact(tmp_path: Path, data_root: Path, reference: Path) -> None:
    out = tmp_path / "run"
    cfg = config_from_dict(_config(out, data_root))
    first = Trainer(cfg, stop_after=4, quiet=True).fit()
    assert first.interrupted and first.step == 4 and first.model_path is None
    assert find_latest_checkpoint(out / "checkpoints").step == 4
    second = Trainer(cfg, resume=True, quiet=True).fit()
    assert second.step == STEPS and not second.interrupted
    _assert_same_run(reference, out)
    # The log continues where it stopped: one record per step, none repeated.
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))


def test_resume_rejects_a_changed_config(tmp_path: Path, data_root: Path) -> None:
    out = tmp_path / "run"
    Trainer(config_from_dict(_config(out, data_root)), stop_after=1, quiet=True).fit()
    changed = _config(out, data_root)
    changed["loop"]["batch_size"] = 3
    with pytest.raises(TrainConfigError, match=r"loop\.batch_size"):
        Trainer(config_from_dict(changed), resume=True, quiet=True).fit()


@pytest.mark.slow
def test_resume_after_sigkill_is_exact(tmp_path: Path, data_root: Path, reference: Path) -> None:
    out = tmp_path / "run"
    config = write_yaml(tmp_path / "train.yaml", _config(out, data_root))
    launcher = write_launcher(tmp_path)
    command = [PYTHON, str(launcher), "train", str(config)]
    proc = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    latest = out / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if latest.is_file() and json.loads(latest.read_text())["step"] >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed:\n" + proc.stdout.read().decode()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    killed_at = find_latest_checkpoint(out / "checkpoints").step
    assert 2 <= killed_at < STEPS and not (out / "model.pt").exists()

    done = subprocess.run(command + ["--resume"], env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("model.pt")
    _assert_same_run(reference, out)
