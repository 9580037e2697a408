"""process_batch (issue 16): frames of several cameras, each with its own FramePipeline, on one predictor.

Frames of the same size and kind of intrinsics run as one network call; each frame's outputs equal what its own
pipeline's ``process`` gives (same header-free payloads within float tolerance: a batched forward may sum in another
order), its per-camera state (scale smoother, stabiliser) is its own, and a bad frame does not cost the others.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from moge2_ros.errors import InputError
from moge2_ros.io import msg_codec as codec
from moge2_ros.pipeline.frame import BatchItem, FrameConfig, FramePipeline, process_batch

TOKENS = 64
OUT = ("depth", "camera_info", "points", "mask")


class Recording:
    """Passes through to a predictor and records the batch size of every network call."""

    def __init__(self, inner: Any) -> None:
        self.__dict__["inner"] = inner
        self.__dict__["batches"] = []

    def predict(self, image: Any, *args: Any, **kwargs: Any) -> Any:
        self.__dict__["batches"].append(len(image) if np.ndim(image) == 4 else 1)
        return self.inner.predict(image, *args, **kwargs)

    def predict_stabilized(self, image: Any, stabilizer: Any) -> Any:
        self.__dict__["batches"].append(1)
        return self.inner.predict_stabilized(image, stabilizer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.inner, name, value)


def scene(width: int, height: int, i: int) -> np.ndarray:
    from moge2_ros.data.example import render_example_scene

    return render_example_scene(width, height, 60.0, camera_position=(0.1 * i, 0.0, 0.05 * i)).rgb


def info(k: np.ndarray, width: int, height: int, d: list[float] | None = None) -> SimpleNamespace:
    roi = SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0, do_rectify=False)
    return SimpleNamespace(width=width, height=height, binning_x=0, binning_y=0, roi=roi, distortion_model="plumb_bob",
                           d=list(d or [0.0] * 5), k=np.asarray(k, dtype=np.float64).ravel().tolist(),
                           r=np.eye(3).ravel().tolist(), p=[0.0] * 12)


K1 = np.array([[50.0, 0.0, 23.5], [0.0, 50.0, 17.5], [0.0, 0.0, 1.0]])
K2 = np.array([[42.0, 0.0, 24.0], [0.0, 44.0, 18.0], [0.0, 0.0, 1.0]])


def cameras() -> list[tuple[FrameConfig, tuple[int, int], Any]]:
    """(config, size, camera_info) of five cameras: two 48x36 with known K (one batch), two 48x36 estimated (another),
    one 40x30 alone, one 48x36 with stabilised estimated K (alone) and a scale smoother on the first."""
    return [
        (FrameConfig(scale_smoothing=0.5), (48, 36), info(K1, 48, 36)),
        (FrameConfig(), (48, 36), info(K2, 48, 36)),
        (FrameConfig(intrinsics_source="estimate"), (48, 36), None),
        (FrameConfig(intrinsics_source="estimate"), (48, 36), None),
        (FrameConfig(intrinsics_source="estimate"), (40, 30), None),
        (FrameConfig(intrinsics_source="estimate", intrinsics_stabilization="average", intrinsics_window=3),
         (48, 36), None),
    ]


def same(a: Any, b: Any) -> None:
    assert (a.width, a.height, a.intrinsics_estimated) == (b.width, b.height, b.intrinsics_estimated)
    np.testing.assert_allclose(a.k, b.k, rtol=1e-4)
    da, db = codec.decode_depth(a.depth), codec.decode_depth(b.depth)
    assert np.array_equal(np.isnan(da), np.isnan(db)) or np.mean(np.isnan(da) != np.isnan(db)) < 0.01
    both = ~np.isnan(da) & ~np.isnan(db)
    np.testing.assert_allclose(da[both], db[both], rtol=2e-3, atol=1e-4)
    assert a.geometry is None and b.geometry is None


def test_batched_frames_equal_their_own_pipelines_and_share_network_calls(predictor: Any) -> None:
    recording = Recording(predictor)
    setups = cameras()
    batched = [FramePipeline(recording, config) for config, _, _ in setups]
    alone = [FramePipeline(predictor, config) for config, _, _ in setups]
    for step in range(3):  # state across frames (smoother, stabiliser) stays per camera
        recording.batches.clear()
        items = [BatchItem(pipe, scene(*size, step + n), OUT, camera_info=ci)
                 for n, (pipe, (_, size, ci)) in enumerate(zip(batched, setups))]
        results = process_batch(items)
        # known-K pair, estimated pair, the 40x30 one, the stabilised one
        assert sorted(recording.batches) == [1, 1, 2, 2], recording.batches
        for n, (result, pipe) in enumerate(zip(results, alone)):
            assert not isinstance(result, Exception), result
            expected = pipe.process(items[n].rgb, OUT, camera_info=items[n].camera_info)
            same(result, expected)
        np.testing.assert_array_equal(results[0].k, K1)  # a given K passes through exactly
        np.testing.assert_array_equal(results[1].k, K2)


def test_a_bad_frame_costs_only_itself_and_no_output_asked_is_none(predictor: Any) -> None:
    good = FramePipeline(predictor, FrameConfig(intrinsics_source="estimate"))
    other = FramePipeline(predictor, FrameConfig(intrinsics_source="estimate"))
    idle = FramePipeline(predictor, FrameConfig())
    results = process_batch([
        BatchItem(good, scene(48, 36, 0), OUT),
        BatchItem(other, scene(48, 36, 1), ("depth", "sideways")),
        BatchItem(idle, scene(48, 36, 2), ()),
    ])
    assert results[0] is not None and not isinstance(results[0], Exception)
    assert isinstance(results[1], InputError) and "sideways" in str(results[1])
    assert results[2] is None


def test_an_implausible_known_k_in_a_batch_falls_back_to_frames_alone(predictor: Any) -> None:
    recording = Recording(predictor)
    a = FramePipeline(recording, FrameConfig())
    b = FramePipeline(recording, FrameConfig())
    bad_k = np.array([[5000.0, 0.0, 23.5], [0.0, 5000.0, 17.5], [0.0, 0.0, 1.0]])  # refused for 48x36
    results = process_batch([BatchItem(a, scene(48, 36, 0), OUT, camera_info=info(K1, 48, 36)),
                             BatchItem(b, scene(48, 36, 1), OUT, camera_info=info(bad_k, 48, 36))])
    assert not isinstance(results[0], Exception) and not isinstance(results[1], Exception)
    np.testing.assert_array_equal(results[0].k, K1)
    assert results[1].intrinsics_error is not None and results[1].intrinsics_estimated  # the pipeline's own rule


def test_pipelines_of_different_predictors_are_refused(predictor: Any, tiny_model_path: Path) -> None:
    from moge2_ros.inference import PredictorOptions, load_predictor

    second = load_predictor(PredictorOptions(model=str(tiny_model_path), device="cpu", num_tokens=TOKENS))
    with pytest.raises(InputError, match="same predictor"):
        process_batch([BatchItem(FramePipeline(predictor), scene(48, 36, 0), OUT),
                       BatchItem(FramePipeline(second), scene(48, 36, 0), OUT)])
