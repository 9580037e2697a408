"""load_predictor: the one factory of Predictors from user options."""

from __future__ import annotations

import argparse

import pytest

from moge2_ros.assets import demo_model_path
from moge2_ros.cli_args import add_model_arguments, model_arguments
from moge2_ros.errors import InputError, ModelLoadError
from moge2_ros.inference import PredictorOptions, load_predictor


def test_default_model_is_the_bundled_one_and_says_so():
    notes: list[str] = []
    predictor = load_predictor(PredictorOptions(device="cpu", num_tokens=300, edge_rtol=0.05), say=notes.append)
    assert predictor.model_id == str(demo_model_path())
    assert len(notes) == 1 and "bundled demo model" in notes[0]
    assert (predictor.num_tokens, predictor.edge_rtol, predictor.device.type) == (300, 0.05, "cpu")


def test_explicit_model_says_nothing(tmp_path):
    notes: list[str] = []
    predictor = load_predictor(PredictorOptions(model=str(demo_model_path()), device="cpu", resolution_level=0),
                               say=notes.append)
    assert notes == []
    assert predictor.num_tokens == predictor.num_tokens_for_level(0)


@pytest.mark.parametrize("options, error, words", [
    (PredictorOptions(backend="onnx"), ModelLoadError, "onnx"),
    (PredictorOptions(backend="tensorflow"), InputError, "backend"),
    (PredictorOptions(onnx_path="x.onnx"), InputError, "backend 'onnx'"),
    (PredictorOptions(device="tpu"), InputError, "device"),
    (PredictorOptions(precision="fp8", device="cpu"), InputError, "precision"),
    (PredictorOptions(model="/no/such/model.pt", device="cpu"), ModelLoadError, "/no/such/model.pt"),
])
def test_bad_options_raise_clear_errors(options, error, words):
    with pytest.raises(error, match=words):
        load_predictor(options)


def test_argument_group_round_trip():
    parser = argparse.ArgumentParser()
    add_model_arguments(parser, edge_filter=True, default_level=3)
    options = PredictorOptions(**model_arguments(
        parser.parse_args(["--device", "cpu", "--precision", "bf16", "--edge-rtol", "0.1"]), estimate_normals=False))
    assert options == PredictorOptions(device="cpu", precision="bf16", resolution_level=3, edge_rtol=0.1,
                                       estimate_normals=False)
    with pytest.raises(SystemExit):
        parser.parse_args(["--resolution-level", "2", "--num-tokens", "100"])  # mutually exclusive
    with pytest.raises(SystemExit):
        parser.parse_args(["--device", "gpu"])
