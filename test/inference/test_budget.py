"""The frame budget: its limits are consistent, the Predictor and the decoders refuse what exceeds it before any
frame-sized allocation, and its memory estimate is an upper bound of what a frame really uses."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from moge2_ros.errors import BudgetError, InputError
from moge2_ros.inference import Predictor
from moge2_ros.inference.budget import (
    BYTES_PER_PIXEL,
    MAX_TOKEN_FACTOR,
    FrameBudget,
    activation_elements_per_token,
    default_budget_mb,
    frame_cost,
)
from moge2_ros.inference.factory import PredictorOptions, load_predictor
from moge2_ros.io.msg_codec import ImageTooLargeError, decode_rgb

from _paths import REPO


def test_max_pixels_is_the_exact_boundary(tiny_model):
    budget = FrameBudget(300, tiny_model.config)
    for tokens in (100, 400, 1200):
        limit = budget.max_pixels(tokens)
        assert limit > 0
        budget.check(limit, tokens)  # fits
        with pytest.raises(BudgetError, match="over the memory budget of 300 MiB"):
            budget.check(limit + BYTES_PER_PIXEL, tokens)  # one pixel's bytes more does not (rounding aside)
    assert budget.max_pixels(1200) < budget.max_pixels(100)  # more tokens leave less room for pixels


def test_cost_grows_with_pixels_tokens_and_batch(tiny_model):
    budget = FrameBudget(1000, tiny_model.config)
    base = budget.cost(640 * 480, 400)
    assert budget.cost(2 * 640 * 480, 400).memory_bytes - base.memory_bytes == BYTES_PER_PIXEL * 640 * 480
    assert budget.cost(640 * 480, 800).memory_bytes > base.memory_bytes
    assert budget.cost(640 * 480, 400, batch=2).memory_bytes > 2 * base.memory_bytes - 64 * 2**20
    assert base.time_s > 0
    per_token = activation_elements_per_token(tiny_model.config)
    assert per_token > 0 and frame_cost(tiny_model.config, 0, 1000).memory_bytes > frame_cost(
        tiny_model.config, 0, 500).memory_bytes


def test_token_limit_is_a_multiple_of_the_trained_range(tiny_model):
    budget = FrameBudget(10_000, tiny_model.config)
    top = tiny_model.config.num_tokens_range[1]
    assert budget.max_tokens == MAX_TOKEN_FACTOR * top
    budget.check_tokens(budget.max_tokens)
    with pytest.raises(BudgetError, match="trained maximum"):
        budget.check_tokens(budget.max_tokens + 1)
    small = FrameBudget(60, tiny_model.config)
    with pytest.raises(BudgetError, match="leave no room for a 0.3 MP image"):
        small.check_tokens(top)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_budget_must_be_positive_and_finite(tiny_model, bad):
    with pytest.raises(InputError, match="memory budget"):
        FrameBudget(bad, tiny_model.config)


def test_unknown_model_uses_a_conservative_per_token_cost(tiny_model):
    known = FrameBudget(1000, tiny_model.config)
    unknown = FrameBudget(1000, None, num_tokens_range=(1200, 3600))
    assert unknown.max_tokens == MAX_TOKEN_FACTOR * 3600
    assert unknown.cost(0, 1000).memory_bytes > known.cost(0, 1000).memory_bytes
    assert np.isnan(unknown.cost(0, 1000).time_s)


def test_default_budget_is_bounded():
    mb = default_budget_mb("cpu")
    assert 256 <= mb <= 2048


def test_predictor_refuses_a_huge_image_before_allocating(tiny_model):
    predictor = Predictor(tiny_model, num_tokens=300, memory_budget_mb=500)
    # A 6000x6000 view of one pixel: no memory behind it; converting it would allocate 432 MB.
    huge = torch.zeros(1, 3, 1, 1).expand(1, 3, 6000, 6000)
    start = time.perf_counter()
    with pytest.raises(BudgetError, match=r"image 6000x6000: 36.0 MP at 300 tokens needs ~\d+ MiB, over the memory "
                                          r"budget of 500 MiB"):
        predictor.predict(huge)
    assert time.perf_counter() - start < 0.5
    with pytest.raises(BudgetError, match="batch of 8"):  # a batch counts every image
        predictor.predict(torch.zeros(1, 3, 1, 1).expand(8, 3, 900, 1200))
    geo = predictor.predict(np.zeros((48, 64, 3), np.uint8))
    assert geo.depth.shape == (1, 48, 64)


def test_predictor_token_and_pixel_limits_follow_the_budget(tiny_model):
    predictor = Predictor(tiny_model, num_tokens=300, memory_budget_mb=500)
    assert predictor.pixel_limit() == predictor.budget.max_pixels(300)
    assert predictor.pixel_limit(1200) < predictor.pixel_limit()
    with pytest.raises(BudgetError, match="trained maximum"):
        predictor.budget_for(100_000)
    with pytest.raises(BudgetError, match="memory budget of 500 MiB allows at 300 tokens"):
        predictor.check_max_pixels(400_000_000)
    predictor.check_max_pixels(100_000)
    with pytest.raises(BudgetError):
        Predictor(tiny_model, num_tokens=300, memory_budget_mb=500, max_pixels=400_000_000)
    # An explicit limit under the budget's is enforced as given.
    capped = Predictor(tiny_model, num_tokens=300, memory_budget_mb=500, max_pixels=1000)
    assert capped.pixel_limit() == 1000
    with pytest.raises(BudgetError, match="limit max_pixels = 1000"):
        capped.predict(np.zeros((40, 40, 3), np.uint8))


def test_options_carry_the_budget_to_the_predictor(tiny_model_path):
    predictor = load_predictor(PredictorOptions(model=str(tiny_model_path), device="cpu", num_tokens=300,
                                                  memory_budget_mb=234))
    assert predictor.budget.budget_mb == 234


def test_decoding_refuses_a_png_over_the_limit_from_its_header(tiny_model):
    from PIL import Image

    predictor = Predictor(tiny_model, num_tokens=300, memory_budget_mb=300)
    buf = io.BytesIO()
    Image.new("RGB", (6000, 6000)).save(buf, format="PNG")
    msg = SimpleNamespace(format="png", data=buf.getvalue())
    assert len(msg.data) < 200_000
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="expected at most max_pixels"):
        decode_rgb(msg, predictor.pixel_limit())
    assert time.perf_counter() - start < 0.5


_MEASURE = r"""
import json, sys, numpy as np
from pathlib import Path
from moge2_ros.inference.factory import PredictorOptions, load_predictor
from moge2_ros.pipeline.frame import OUTPUTS, FrameConfig, FramePipeline
def vm(key):
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(key + ':'):
            return int(line.split()[1]) * 1024
h, w, tokens = (int(v) for v in sys.argv[1:4])
p = load_predictor(PredictorOptions(model=sys.argv[4], device='cpu', num_tokens=tokens))
pipe = FramePipeline(p, FrameConfig(cloud_normals=True))
pipe.process(np.zeros((32, 40, 3), np.uint8), OUTPUTS)
rgb = (np.add.outer(np.arange(h), np.arange(w)) % 256).astype(np.uint8)[..., None].repeat(3, axis=2)
rss = vm('VmRSS')
Path('/proc/self/clear_refs').write_text('5')
pipe.process(rgb, OUTPUTS)
print(json.dumps({'used': vm('VmHWM') - rss, 'cost': p.budget.cost(h * w, tokens).memory_bytes}))
"""


@pytest.mark.parametrize("height, width, tokens", [(960, 1280, 400), (480, 640, 1200)])
def test_estimate_bounds_the_measured_frame_memory(tiny_model_path, height, width, tokens):
    """One frame with every output, in a fresh process: the resident high-water mark it adds stays below the
    budget's estimate (and the estimate is not absurdly loose: within 6x)."""
    proc = subprocess.run([sys.executable, "-c", _MEASURE, str(height), str(width), str(tokens), str(tiny_model_path)],
                          capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 0 < result["used"] <= result["cost"], result
    assert result["cost"] < 6 * result["used"], result
