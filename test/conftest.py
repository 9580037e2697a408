"""Shared pytest fixtures and hooks of the moge2_ros test suite.

The suite is grouped by layer (``test/<layer>/``, the layers of ``.importlinter``). Fixtures used by more than
one layer live here; fixtures of one folder live in that folder's ``conftest.py`` (``test/ros/conftest.py``:
the ROS node processes). Plain helpers are modules imported by name (``_paths``, ``ros/ros_helpers.py``,
``train/train_helpers.py``); test modules are imported by basename (pytest's default ``prepend`` import mode,
no ``__init__.py``), so basenames are unique across the tree.

Models: every random-init tiny MoGe-2 of the suite comes from here, as

* ``tiny_model``: a model object, built fresh for each test module (tests may change it);
* ``tiny_model_path``: the untrained demo model (:func:`moge2_ros.demo.make_demo_model`) as a checkpoint file,
  written once per session, for tests that load a model by path (CLI, Predictor options, bags, the ROS node).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch

from _paths import SHARED

if TYPE_CHECKING:  # pragma: no cover
    from moge2_ros.data.sample import Sample
    from moge2_ros.model import MoGe2Model

# 2-core CI machines: more threads than cores only adds contention. Set once, for the whole session.
torch.set_num_threads(2)


def _shared_dir(path: Path, what: str, expected: str) -> Path:
    """``path`` if it is a folder; otherwise fail the test on CI (``CI=true``) and skip it elsewhere."""
    path = path.resolve()
    if not path.is_dir():
        message = f"{what} not found at {path} (expected {expected})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``<repo>/../shared/reference/public``: official-format checkpoint and official outputs.

    Missing reference data fails the test on CI (``CI=true``) and skips it elsewhere.
    """
    return _shared_dir(SHARED / "reference" / "public", "reference data", "<repo>/../shared/reference/public")


@pytest.fixture(scope="session")
def sevenscenes_dir() -> Path:
    """``<repo>/../shared/data/sevenscenes-redkitchen``: 300 real Kinect RGB-D frames (research licence: read in
    place, never copied into the repository).  Missing data fails the test on CI and skips it elsewhere."""
    return _shared_dir(SHARED / "data" / "sevenscenes-redkitchen", "7-Scenes data",
                       "<repo>/../shared/data/sevenscenes-redkitchen")


# ------------------------------------------------------------------------------------------------ 7-Scenes frames
#: 7-Scenes RGB intrinsics (README of the data folder), pixels at 640x480.
SEVENSCENES_K = np.array([[525.0, 0.0, 320.0], [0.0, 525.0, 240.0], [0.0, 0.0, 1.0]])


def _sevenscenes_frames(root: Path, count: int = 3, factor: int = 4) -> list[Sample]:
    """The first ``count`` frames, downscaled by ``factor`` (box filter for RGB, every factor-th depth pixel).

    The raw (unregistered) Kinect depth is used as is: the tests that use these frames exercise the bag plumbing,
    for which any metric depth of the right size will do. Depth: millimetres / 1000, 0 and 65535 invalid (NaN).
    """
    from PIL import Image as PILImage

    from moge2_ros.data.sample import Sample

    samples = []
    for path in sorted(root.glob("frame-*.color.jpg"))[:count]:
        with PILImage.open(path) as image:
            rgb = image.convert("RGB")
            width, height = rgb.size
            rgb = np.asarray(rgb.resize((width // factor, height // factor), PILImage.BOX))
        with PILImage.open(str(path).replace(".color.jpg", ".depth.png")) as image:
            millimetres = np.asarray(image).astype(np.float32)[::factor, ::factor]
        depth = millimetres / np.float32(1000.0)
        depth[(millimetres == 0) | (millimetres == 65535)] = np.nan
        k = SEVENSCENES_K.copy()
        k[0, 0] /= factor
        k[1, 1] /= factor
        k[0, 2] = (k[0, 2] + 0.5) / factor - 0.5
        k[1, 2] = (k[1, 2] + 0.5) / factor - 0.5
        samples.append(Sample(image=rgb, depth=depth.astype(np.float32), intrinsics=k, source=str(path)))
    return samples


@pytest.fixture(scope="module")
def sevenscenes_frames(sevenscenes_dir: Path) -> list[Sample]:
    """The first 3 frames of 7-Scenes downscaled 4x (160x120) as Samples (read in place, never copied), for the
    rosbag2 tests (bags/, pipeline/). Built once per test module."""
    return _sevenscenes_frames(sevenscenes_dir, count=3, factor=4)


# ------------------------------------------------------------------------------------------------ tiny models
#: Architecture of ``tiny_model``: ``MoGe2Config.tiny`` with a 48-wide, 2-block, 2-head ViT (fast on a CPU).
TINY_MODEL_CONFIG = {"embed_dim": 48, "depth": 2, "num_heads": 2}

#: What a test module may change through a module-level ``TINY_MODEL = {...}`` dict, with the defaults.
TINY_MODEL_OPTIONS: dict[str, Any] = {
    "seed": 0,  # torch.manual_seed before the weights are drawn
    "with_normal": True,  # with the normal head
    "mask_logit": None,  # a float: the mask head's last bias is set to it (random weights: mostly valid pixels)
}


@pytest.fixture(scope="module")
def tiny_model(request: pytest.FixtureRequest) -> MoGe2Model:
    """A random-init tiny MoGe-2 (:data:`TINY_MODEL_CONFIG`) in eval mode, built once per test module.

    The weights are drawn after ``torch.manual_seed(seed)`` on the global generator, as the test modules did
    before this fixture was shared: the model and the random draws of the tests that follow are reproducible.
    A module changes the options of :data:`TINY_MODEL_OPTIONS` with e.g. ``TINY_MODEL = {"seed": 1}``.
    """
    from moge2_ros.model import MoGe2Config, MoGe2Model

    overrides = dict(getattr(request.module, "TINY_MODEL", {}))
    unknown = set(overrides) - set(TINY_MODEL_OPTIONS)
    if unknown:
        raise ValueError(f"{request.module.__name__}.TINY_MODEL: unknown options {sorted(unknown)}")
    options = {**TINY_MODEL_OPTIONS, **overrides}
    torch.manual_seed(options["seed"])
    model = MoGe2Model(MoGe2Config.tiny(**TINY_MODEL_CONFIG, with_normal=options["with_normal"])).eval()
    if options["mask_logit"] is not None:
        with torch.no_grad():
            model.mask_head.output_blocks[-1].bias.fill_(options["mask_logit"])
    return model


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The untrained demo model as an official-format checkpoint (``make_demo_model``, seed 0), one per session.

    ``MoGe2Config.tiny()`` with random weights whose mask head is biased to "valid" and whose point head is wired
    to a pinhole camera, so that the Predictor, the CLI, bag-infer and the node accept its frames. Tests read the
    file and never change it (copy it first to change it).
    """
    from moge2_ros.demo import make_demo_model

    return make_demo_model(tmp_path_factory.mktemp("tiny_model") / "demo.pt")


# ------------------------------------------------------------------------------------------------ hooks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``@pytest.mark.gpu`` tests when no CUDA device is available."""
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
