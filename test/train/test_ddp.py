"""DistributedDataParallel through torchrun on CPU (gloo): 2 processes with per-rank batch b compute the same
update as 1 process with batch 2b on the same samples."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from moge2_ros.checkpoints import read_checkpoint
from moge2_ros.train.config import config_from_dict
from moge2_ros.train.state import find_latest_checkpoint, load_training_state
from moge2_ros.train.trainer import train
from train_helpers import PYTHON, free_port, subprocess_env, tiny_config, write_analytic_folder, write_launcher, \
    write_yaml

pytestmark = pytest.mark.slow


def _config(output: Path, root: Path, batch: int) -> dict:
    # Adam's first step is lr * g / (|g| + eps): a large eps keeps it a smooth function of g, so that the
    # float rounding differences of a batch split over processes stay small in the weights.
    return tiny_config(output, root, loop={"steps": 1, "batch_size": batch},
                       optim={"lr_head": 1e-3, "lr_backbone": 1e-3, "eps": 1e-3}, checkpoint={"every": 1})


def test_two_processes_equal_one_process_on_the_combined_batch(tmp_path: Path) -> None:
    root = write_analytic_folder(tmp_path / "data", count=8, seed=6)
    single = tmp_path / "single"
    train(config_from_dict(_config(single, root, batch=4)), quiet=True)

    ddp = tmp_path / "ddp"
    config = write_yaml(tmp_path / "ddp.yaml", _config(ddp, root, batch=2))
    env = subprocess_env()
    env.update(MASTER_ADDR="127.0.0.1", OMP_NUM_THREADS="1")
    command = [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), str(write_launcher(tmp_path)), "train", str(config)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # Rank 0 alone wrote the outputs (one log line, one checkpoint pair, one model).
    assert len((ddp / "log.jsonl").read_text().splitlines()) == 1
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == [
        "latest.json", "step_00000001.pt", "step_00000001.state.pt"]
    state = load_training_state(find_latest_checkpoint(ddp / "checkpoints").state)
    assert state["world_size"] == 2 and state["consumed"] == 1

    # A control: one process on half the batch (rank 0's samples only) makes a clearly different update.
    half = tmp_path / "half"
    train(config_from_dict(_config(half, root, batch=2)), quiet=True)

    from moge2_ros.train.trainer import build_model

    start = build_model(config_from_dict(_config(single, root, 4)).model, 3).state_dict()
    _, one = read_checkpoint(single / "model.pt")
    _, two = read_checkpoint(ddp / "model.pt")
    _, control = read_checkpoint(half / "model.pt")
    worst, control_gap = 0.0, 0.0
    for key, value in one.items():
        if not value.is_floating_point():
            continue
        update_one, update_two = value - start[key], two[key] - start[key]
        torch.testing.assert_close(update_two, update_one, rtol=1e-3, atol=1e-6, msg=f"update of {key} differs")
        worst = max(worst, float((update_two - update_one).abs().max()))
        control_gap = max(control_gap, float((control[key] - value).abs().max()))
    assert control_gap > 100 * max(worst, 1e-7), (worst, control_gap)
