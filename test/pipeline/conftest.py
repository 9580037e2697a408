"""Fixtures of the frame pipeline tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

#: Token budget of the pipeline tests' predictor (small images, fast frames).
TOKENS = 64


@pytest.fixture(scope="module")
def predictor(tiny_model_path: Path) -> Any:
    """The untrained demo model on the CPU in fp32 at 64 tokens, edge filter 0.04: one per test module (a pipeline
    sets per-frame attributes such as ``estimate_normals`` on it)."""
    from moge2_ros.inference import PredictorOptions, load_predictor

    return load_predictor(PredictorOptions(model=str(tiny_model_path), device="cpu", num_tokens=TOKENS,
                                           edge_rtol=0.04, precision="fp32"))
