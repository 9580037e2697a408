"""Shared pytest fixtures and hooks of the moge2_ros test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

# 2-core CI machines: more threads than cores only adds contention. Set once, for the whole session.
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``<repo>/../shared/reference/public``: official-format checkpoint and official outputs.

    Missing reference data fails the test on CI (``CI=true``) and skips it elsewhere.
    """
    path = (REPO.parent / "shared" / "reference" / "public").resolve()
    if not path.is_dir():
        message = f"reference data not found at {path} (expected <repo>/../shared/reference/public)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def sevenscenes_dir() -> Path:
    """``<repo>/../shared/data/sevenscenes-redkitchen``: 300 real Kinect RGB-D frames (research licence: read in
    place, never copied into the repository).  Missing data fails the test on CI and skips it elsewhere."""
    path = (REPO.parent / "shared" / "data" / "sevenscenes-redkitchen").resolve()
    if not path.is_dir():
        message = f"7-Scenes data not found at {path} (expected <repo>/../shared/data/sevenscenes-redkitchen)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``@pytest.mark.gpu`` tests when no CUDA device is available."""
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
