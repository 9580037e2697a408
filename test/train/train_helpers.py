"""Helpers of the trainer tests (``test/train/``; import them by name, ``from train_helpers import ...``): tiny
analytic datasets and a tiny, fast training configuration."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np

from _paths import REPO
from moge2_ros.data.folder import write_sample
from moge2_ros.data.sample import Sample

#: A launcher for subprocesses (e.g. under torchrun): ``python LAUNCHER train ...`` runs the ``moge2-ros`` CLI.
LAUNCHER_SOURCE = """\
import sys
from moge2_ros.cli import main
sys.exit(main())
"""


def analytic_sample(rng: np.random.Generator, height: int, width: int, label_type: str = "A",
                    sky_rows: int = 0) -> Sample:
    """A slanted textured plane seen by a pinhole camera: exact metric depth, normals, optional sky rows.

    The plane ``n . X = d`` (camera frame, metres) is intersected with the pixel rays; the image colour is a
    function of depth and of the plane coordinates, so the geometry is learnable from the image.
    """
    f = width * rng.uniform(0.7, 1.1)
    k = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], dtype=np.float64)
    normal = np.array([rng.uniform(-0.4, 0.4), rng.uniform(-0.6, -0.1), -1.0])
    normal /= np.linalg.norm(normal)
    d = -rng.uniform(1.5, 4.0)  # n . X = d with n pointing at the camera (n_z < 0) and X_z > 0
    jj, ii = np.meshgrid(np.arange(width), np.arange(height))
    rays = np.stack([(jj - k[0, 2]) / f, (ii - k[1, 2]) / f, np.ones_like(jj, dtype=np.float64)], axis=-1)
    depth = d / (rays @ normal)
    points = rays * depth[..., None]
    stripes = 0.5 + 0.5 * np.sin(points[..., 0] * 6.0) * np.cos(points[..., 1] * 6.0)
    shade = 1.0 / depth
    image = np.stack([stripes, shade / shade.max(), 0.3 + 0.4 * stripes * shade / shade.max()], axis=-1)
    image = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    depth = depth.astype(np.float32)
    normals = np.broadcast_to(normal, (height, width, 3)).astype(np.float32).copy()
    sky = np.zeros((height, width), dtype=bool)
    if sky_rows:
        sky[:sky_rows] = True
        depth[:sky_rows] = np.nan
        normals[:sky_rows] = np.nan
        image[:sky_rows] = (120, 170, 250)
    return Sample(image=image, depth=depth, intrinsics=k, sky=sky if label_type == "A" else None,
                  normal=normals if label_type == "A" else None, label_type=label_type, is_metric=True,
                  source="analytic")


def write_analytic_folder(root: Path, count: int, seed: int = 0, height: int = 36, width: int = 48,
                          label_type: str = "A") -> Path:
    """A folder dataset of ``count`` analytic frames (every other one with sky rows for label A)."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        sky = (height // 6) if (label_type == "A" and i % 2) else 0
        write_sample(root, f"{i:04d}", analytic_sample(rng, height, width, label_type, sky))
    return root


#: Loss overrides that make a step take well under a second on a CPU (tiny alignments, no fine patches).
FAST_LOSS = {
    "A": {"global": {"align_resolution": 8}, "patch_4": {"align_resolution": 6, "num_patches": 4},
          "patch_16": None, "patch_64": None},
    "B": {"global": {"align_resolution": 8}, "patch_4": {"align_resolution": 6, "num_patches": 4}, "patch_16": None},
    "C": {"global": {"align_resolution": 8}, "patch_4": {"align_resolution": 6, "num_patches": 4}},
}


def small_model_config() -> dict[str, Any]:
    """An official-schema ``model_config`` of a very small MoGe-2 (24-wide 2-block ViT, 32..8-wide decoder)."""
    from moge2_ros.model.config import MoGe2Config

    widths = [32, 16, 8, 8, 8]
    config = MoGe2Config.tiny(embed_dim=24, depth=2, num_heads=2).to_dict()
    config["encoder"]["dim_out"] = widths[0]
    config["neck"]["dim_in"] = [widths[0] + 2, 2, 2, 2, 2]
    config["neck"]["dim_res_blocks"] = widths
    for head in ("points_head", "normal_head", "mask_head"):
        config[head]["dim_in"] = widths
        config[head]["dim_res_blocks"] = widths
    config["scale_head"]["dims"] = [24, 32, 1]
    return config


def tiny_config(output: Path, train_root: Path, **overrides: Any) -> dict[str, Any]:
    """A training config dict for a very small model on a folder dataset (a few tenths of a second per step)."""
    from moge2_ros.train.config import merge_dicts

    base: dict[str, Any] = {
        "output_dir": str(output),
        "seed": 3,
        "model": {"preset": None, "config": small_model_config()},
        "data": {"train": [{"kind": "folder", "root": str(train_root)}],
                 "augment": {"image_size": [24, 32]}},
        "optim": {"lr_head": 1e-3, "lr_backbone": 1e-3},
        "schedule": {"kind": "constant", "warmup_steps": 1},
        "loss": {"overrides": FAST_LOSS},
        "loop": {"steps": 4, "batch_size": 2, "num_tokens_range": [12, 20], "device": "cpu"},
        "log": {"every": 1, "progress": False, "tensorboard": False},
        "checkpoint": {"every": 2, "keep": 0},
    }
    return merge_dicts(base, overrides)


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_launcher(directory: Path) -> Path:
    path = directory / "moge2_ros_launcher.py"
    path.write_text(LAUNCHER_SOURCE)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def subprocess_env() -> dict[str, str]:
    """Environment of a training subprocess: the repository importable, 2 threads like the test process."""
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["OMP_NUM_THREADS"] = "2"
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    env.pop("LOCAL_RANK", None)
    return env


PYTHON = sys.executable
