"""``precision: auto``: fp16 on CUDA, bf16 on a CPU with native bf16, fp32 otherwise (and for ONNX on a CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moge2_ros.errors import InputError
from moge2_ros.inference import Predictor
from moge2_ros.inference import precision as precision_mod
from moge2_ros.inference.precision import resolve_precision


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_a_cpu_follows_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(precision_mod, "cpu_has_native_bf16", lambda: native)
    name, why = resolve_precision("auto", torch.device("cpu"))
    assert name == expected and why.startswith("auto: CPU")
    assert resolve_precision("auto", torch.device("cpu"), backend="onnx")[0] == "fp32"


def test_auto_on_cuda_is_fp16_and_explicit_choices_stay():
    assert resolve_precision("auto", torch.device("cuda", 0))[0] == "fp16"
    for name in ("fp32", "fp16", "bf16"):
        assert resolve_precision(name, torch.device("cpu")) == (name, "as asked")
    with pytest.raises(InputError, match="precision: expected one of auto, fp32, fp16, bf16"):
        resolve_precision("fp8", torch.device("cpu"))


def test_native_bf16_agrees_with_the_cpu_flags():
    flags = open("/proc/cpuinfo").read()
    if not (" avx512_bf16" in flags or " amx_bf16" in flags) and precision_mod.cpu_has_native_bf16():
        pytest.fail("oneDNN reports native bf16 on a CPU without avx512_bf16 / amx_bf16")
    if (" avx512_bf16" in flags or " amx_bf16" in flags):
        assert precision_mod.cpu_has_native_bf16()


def test_predictor_auto_runs_the_resolved_precision(tiny_model, monkeypatch):
    monkeypatch.setattr(precision_mod, "cpu_has_native_bf16", lambda: True)
    predictor = Predictor(tiny_model, dtype="auto", num_tokens=300)
    assert predictor.dtype == torch.bfloat16 and predictor.precision == "bf16"
    assert predictor.precision_note.startswith("precision bf16 (auto: CPU with native bf16 instructions; depth AbsRel")
    fp32 = Predictor(tiny_model, num_tokens=300)
    assert fp32.precision == "fp32" and "as asked" in fp32.precision_note
    image = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    assert predictor.predict(image).depth.shape == fp32.predict(image).depth.shape == (1, 48, 64)
