"""The conv decoder runs channels-last on the CPU (moge2_ros.model.moge2.decoder_channels_last): same values as
the NCHW kernels up to float32 rounding, same shapes, the state dict untouched."""

from __future__ import annotations

import torch

import moge2_ros.model.moge2 as moge2

TINY_MODEL = {"mask_logit": 3.0}


def test_channels_last_decoder_equals_nchw(tiny_model, monkeypatch):
    image = torch.rand(2, 3, 50, 70, generator=torch.Generator().manual_seed(0))
    weights = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    with torch.inference_mode():
        inputs = tiny_model.grid_inputs(image, 24)
        fast = tiny_model.core(*inputs)
        monkeypatch.setattr(moge2, "decoder_channels_last", lambda features: False)
        plain = tiny_model.core(*inputs)
    for key in ("points", "normal", "mask"):
        assert fast[key].is_contiguous(memory_format=torch.channels_last)
        assert fast[key].shape == plain[key].shape
        torch.testing.assert_close(fast[key], plain[key], rtol=1e-5, atol=1e-5)
    assert torch.equal(fast["metric_scale"], plain["metric_scale"])
    state = tiny_model.state_dict()
    assert all(torch.equal(state[k], v) and state[k].is_contiguous() for k, v in weights.items())


def test_only_eager_cpu_inference_uses_it():
    assert moge2.decoder_channels_last(torch.zeros(1, 4, 2, 2))
    assert not moge2.decoder_channels_last(torch.zeros(1, 4, 2, 2, device="meta"))
