"""Torch backend options: token-grid buckets, channels-last, compile, CUDA-only options, Predictor wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moge2_ros import Predictor
from moge2_ros.backends.torch_options import TorchOptions, TorchRunner
from moge2_ros.errors import InputError


#: The shared tiny_model (test/conftest.py), drawn with seed 2 in this module.
TINY_MODEL = {"seed": 2}


def test_options_validation():
    with pytest.raises(InputError, match="compile_mode"):
        TorchOptions(compile_mode="fast")
    opts = TorchOptions(cuda_graphs=True)
    assert opts.compile and opts.compile_mode == "reduce-overhead" and not opts.is_default
    assert TorchOptions().is_default


def test_buckets_are_token_grids(tiny_model):
    runner = TorchRunner(tiny_model, TorchOptions())
    # every 4:3 size shares the 30x40 grid at 1200 tokens; 16:9 does not
    assert {runner.bucket(1, h, w, 1200) for h, w in ((480, 640), (960, 1280), (240, 320))} == {(1, 30, 40)}
    assert runner.bucket(1, 720, 1280, 1200) != (1, 30, 40)


def test_runner_equals_eager(tiny_model):
    x = torch.rand(2, 3, 50, 70)
    with torch.no_grad():
        ref = tiny_model(x, 80)
        got = TorchRunner(tiny_model, TorchOptions())(x, 80)
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_channels_last_is_close(tiny_model):
    import copy

    model = copy.deepcopy(tiny_model)
    runner = TorchRunner(model, TorchOptions(channels_last=True))
    assert model.neck.resamplers[0][1].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(1, 3, 50, 70)
    with torch.no_grad():
        ref, got = tiny_model(x, 80), runner(x, 80)
    for k in ref:
        assert (ref[k] - got[k]).abs().max() < 1e-4, k


def test_cuda_only_options_refused_on_cpu(tiny_model):
    for opts in (TorchOptions(cuda_graphs=True), TorchOptions(pinned_memory=True)):
        with pytest.raises(InputError, match="CUDA"):
            TorchRunner(tiny_model, opts)


def test_predictor_with_torch_options(tiny_model):
    import copy

    image = torch.rand(1, 3, 40, 60, generator=torch.Generator().manual_seed(0))
    plain = Predictor(tiny_model, num_tokens=64)
    assert Predictor(tiny_model, num_tokens=64, torch_options=TorchOptions())._forward is tiny_model  # nothing wrapped
    cl = Predictor(copy.deepcopy(tiny_model), num_tokens=64, torch_options=TorchOptions(channels_last=True))
    assert isinstance(cl._forward, TorchRunner)
    ref, got = plain.forward_raw(image), cl.forward_raw(image)
    for k in ref:
        assert (ref[k] - got[k]).abs().max() < 1e-4, k
    geo = cl.predict(image)  # the full pipeline runs through the runner
    assert geo.depth.shape == (1, 40, 60)


@pytest.mark.slow
def test_compile_does_not_recompile_within_a_bucket(tiny_model):
    """torch.compile of the core: two image sizes of one token grid reuse one graph (no recompilation)."""
    import torch._dynamo

    torch._dynamo.reset()
    runner = TorchRunner(tiny_model, TorchOptions(compile=True))
    assert runner.warmup([(48, 64)], num_tokens=48) == [(1, 6, 8)]
    from torch._dynamo.utils import counters

    frames_before = counters["stats"]["unique_graphs"]
    x = torch.rand(1, 3, 96, 128)  # same 6x8 grid
    with torch.inference_mode():  # the grad mode is part of dynamo's guards: use the Predictor's (= warmup's)
        got = runner(x, 48)
        ref = tiny_model(x, 48)
    assert counters["stats"]["unique_graphs"] == frames_before
    for k in ref:
        assert (ref[k] - got[k]).abs().max() < 1e-4, k


@pytest.mark.gpu
def test_cuda_graphs_and_pinned_memory(tiny_model):  # pragma: no cover - needs CUDA
    import copy

    model = copy.deepcopy(tiny_model).cuda()
    pred = Predictor(model, num_tokens=48, torch_options=TorchOptions(cuda_graphs=True, pinned_memory=True))
    image = np.random.default_rng(0).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    a = pred.predict(image)
    b = pred.predict(image)
    ref = Predictor(copy.deepcopy(tiny_model), num_tokens=48).predict(image)
    assert torch.equal(a.mask.cpu(), b.mask.cpu())
    valid = ref.mask & a.mask.cpu()
    assert (ref.depth[valid] - a.depth.cpu()[valid]).abs().max() < 1e-3
