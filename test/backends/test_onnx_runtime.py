"""ONNX Runtime backend: provider selection / fallback, clear errors for bad files, Predictor(backend='onnx')."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from moge2_ros import Predictor
from moge2_ros.backends.onnx_export import export_onnx
from moge2_ros.backends.onnx_runtime import OnnxRuntimeBackend, resolve_providers
from moge2_ros.errors import InputError, ModelLoadError

H, W, TOKENS = 60, 80, 48


#: The shared tiny_model (test/conftest.py) of this module: no normal head, and a mask head biased to "valid" (random
#: weights: most pixels valid, so that geometry can be compared).
TINY_MODEL = {"seed": 1, "with_normal": False, "mask_logit": 4.0}


@pytest.fixture(scope="module")
def onnx_file(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ort") / "tiny.onnx"
    export_onnx(tiny_model, path, dynamic=False, height=H, width=W, num_tokens=TOKENS)
    return path


def test_resolve_providers_order_and_fallback(caplog):
    available = ["AzureExecutionProvider", "CPUExecutionProvider"]
    with caplog.at_level(logging.WARNING):
        assert resolve_providers(["tensorrt", "cuda", "cpu"], available) == ["CPUExecutionProvider"]
    assert "TensorrtExecutionProvider, CUDAExecutionProvider not available" in caplog.text
    assert "falling back to CPUExecutionProvider" in caplog.text
    full = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers(None, full) == full  # default order: TensorRT, CUDA, CPU
    assert resolve_providers(["cuda", "cpu"], full) == full[1:]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert resolve_providers(None, available) == ["CPUExecutionProvider"]  # default: no warning
    assert caplog.text == ""
    with pytest.raises(InputError, match="onnx provider 'gpu'"):
        resolve_providers(["gpu"], available)


def test_missing_provider_falls_back_with_warning(onnx_file, caplog):
    with caplog.at_level(logging.WARNING):
        backend = OnnxRuntimeBackend(onnx_file, providers=["cuda"])
    assert backend.providers == ["CPUExecutionProvider"]
    assert "CUDAExecutionProvider not available" in caplog.text


def test_outputs_match_torch_and_metadata(onnx_file, tiny_model):
    backend = OnnxRuntimeBackend(onnx_file, providers=["cpu"])
    assert backend.output_names == ["points", "mask", "metric_scale"] and not backend.has_num_tokens_input
    assert backend.static_shape == (1, 3, H, W) and backend.static_num_tokens == TOKENS
    assert backend.num_tokens_range == list(tiny_model.num_tokens_range)
    x = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(3))
    got = backend(x, TOKENS)
    with torch.no_grad():
        ref = tiny_model(x, TOKENS)
    assert set(got) == set(ref)
    for k in ref:
        assert got[k].dtype == torch.float32 and (got[k] - ref[k]).abs().max() < 1e-5
    with pytest.raises(InputError, match="static export for input"):
        backend(torch.rand(1, 3, H + 2, W), TOKENS)
    with pytest.raises(InputError, match="static export for 48 tokens"):
        backend(x, 96)


def _save_graph(path, inputs, outputs):
    nodes = [helper.make_node("Identity", [inputs[0].name], [o.name]) for o in outputs]
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def test_bad_files_give_one_clear_error(onnx_file, tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        OnnxRuntimeBackend(tmp_path / "nope.onnx")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        OnnxRuntimeBackend(empty)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(onnx_file.read_bytes()[: onnx_file.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="truncated, corrupt or another format"):
        OnnxRuntimeBackend(truncated, providers=["cpu"])
    # a valid ONNX file with other I/O names
    wrong = tmp_path / "wrong.onnx"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    _save_graph(wrong, [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    with pytest.raises(ModelLoadError, match="not a MoGe-2 ONNX model.*found inputs.*'x'"):
        OnnxRuntimeBackend(wrong, providers=["cpu"])
    # right names, wrong num_tokens type
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["b", 3, "h", "w"])
    tokens = helper.make_tensor_value_info("num_tokens", TensorProto.FLOAT, [])
    wrong2 = tmp_path / "wrong2.onnx"
    _save_graph(wrong2, [image, tokens], [helper.make_tensor_value_info("points", TensorProto.FLOAT, None)])
    with pytest.raises(ModelLoadError, match="num_tokens"):
        OnnxRuntimeBackend(wrong2, providers=["cpu"])


def test_predictor_onnx_backend_equals_torch(onnx_file, tiny_model):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    torch_pred = Predictor(tiny_model, num_tokens=TOKENS)
    onnx_pred = Predictor(None, backend="onnx", onnx_path=onnx_file, onnx_providers=["cpu"], num_tokens=TOKENS)
    assert onnx_pred.model is None and onnx_pred.onnx.providers == ["CPUExecutionProvider"]
    # random weights: the estimated focal is meaningless, so the camera is given (only the shift is solved)
    a, b = torch_pred.predict(image, fov_x=60.0), onnx_pred.predict(image, fov_x=60.0)
    assert torch.equal(a.mask, b.mask)
    valid = a.mask
    assert valid.any()
    assert (a.depth[valid] - b.depth[valid]).abs().max() < 1e-4 * a.depth[valid].abs().max().clamp(min=1)
    torch.testing.assert_close(a.intrinsics, b.intrinsics, atol=1e-3, rtol=1e-5)
    # resolution levels come from the file's metadata when no torch model is given (level 0 = 1200 tokens, which
    # this static export cannot serve: see test_static_export_budget)
    with pytest.raises(InputError, match=r"resolution_level 0 \(= 1200 tokens\)"):
        Predictor(None, backend="onnx", onnx_path=onnx_file, resolution_level=0)


def test_static_export_budget(onnx_file):
    """A static export serves one budget: adopted when none is asked for, refused (with the fix) otherwise."""
    adopted = Predictor(None, backend="onnx", onnx_path=onnx_file, onnx_providers=["cpu"])
    assert adopted.static_num_tokens == TOKENS and adopted.num_tokens == TOKENS
    assert f"static export for {TOKENS} tokens" in adopted.budget_note
    image = np.zeros((H, W, 3), dtype=np.uint8)
    assert adopted.predict(image, fov_x=60.0).num_tokens == TOKENS  # the adopted budget runs
    same = Predictor(None, backend="onnx", onnx_path=onnx_file, onnx_providers=["cpu"], num_tokens=TOKENS)
    assert same.num_tokens == TOKENS and same.budget_note is None
    with pytest.raises(InputError) as info:
        Predictor(None, backend="onnx", onnx_path=onnx_file, onnx_providers=["cpu"], num_tokens=400)
    message = str(info.value)
    assert "static export for 48 tokens" in message and "num_tokens 400" in message
    assert "--dynamic" in message and "--num-tokens 400" in message and f"num_tokens:={TOKENS}" in message
    assert "\n" not in message
    # run-time requests go through the same rule
    assert adopted.budget_for(None) == TOKENS and adopted.budget_for(TOKENS, 3) == TOKENS
    with pytest.raises(InputError, match="resolution_level 3"):
        adopted.budget_for(None, 3)
    with pytest.raises(InputError, match="positive"):
        adopted.budget_for(0)


def test_torch_budget_is_free(tiny_model):
    torch_pred = Predictor(tiny_model)
    assert torch_pred.static_num_tokens is None and torch_pred.budget_note is None
    assert torch_pred.budget_for(400) == 400 and torch_pred.budget_for(None, 0) == tiny_model.num_tokens_for_level(0)


def test_predictor_backend_arguments(onnx_file, tiny_model):
    with pytest.raises(InputError, match="backend"):
        Predictor(tiny_model, backend="tensorrt")
    with pytest.raises(InputError, match="onnx_path"):
        Predictor(tiny_model, backend="onnx")
    with pytest.raises(InputError, match="needs a model"):
        Predictor(None)
    with pytest.raises(InputError, match="torch backend"):
        Predictor(tiny_model, backend="onnx", onnx_path=onnx_file, compile=True)
    with pytest.raises(ModelLoadError, match="not found"):
        Predictor(None, backend="onnx", onnx_path=onnx_file.parent / "missing.onnx")


@pytest.mark.gpu
def test_cuda_provider_runs_on_gpu(onnx_file):  # pragma: no cover - needs onnxruntime-gpu and a GPU
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime build without CUDA")
    backend = OnnxRuntimeBackend(onnx_file, providers=["cuda", "cpu"])
    assert backend.providers[0] == "CUDAExecutionProvider"
    out = backend(torch.rand(1, 3, H, W, device="cuda"), TOKENS)
    assert out["points"].device.type == "cuda"
