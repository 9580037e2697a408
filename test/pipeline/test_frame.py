"""The ROS-free frame pipeline (moge2_ros.pipeline.frame) with the small untrained demo model: what each option
produces, that only asked outputs are computed (none = no inference), the intrinsics sources, the state across
frames (stabiliser, scale smoother) and run-time reconfiguration.  Equality with a running node is
test/ros/test_node_pipeline_parity.py."""

from __future__ import annotations

import io
import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from moge2_ros.errors import InputError
from moge2_ros.io import msg_codec as codec
from moge2_ros.pipeline import OUTPUTS, FrameConfig, FramePipeline, decode_rgb

WIDTH, HEIGHT = 48, 36
TOKENS = 64
GIVEN_K = np.array([[40.123456789, 0.0, 23.3], [0.0, 41.987654321, 17.7], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    from moge2_ros.data.example import render_example_scene

    return [render_example_scene(WIDTH, HEIGHT, 60.0, camera_position=(0.2 * i, 0.0, 0.1 * i)).rgb
            for i in range(3)]


class _Counting:
    """Counts the predictor's calls (and passes everything else through)."""

    def __init__(self, inner: Any) -> None:
        self.__dict__["inner"] = inner
        self.__dict__["calls"] = 0

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        self.__dict__["calls"] += 1
        return self.inner.predict(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.inner, name, value)


def camera_info(k: np.ndarray = GIVEN_K, width: int = WIDTH, height: int = HEIGHT) -> SimpleNamespace:
    """A CameraInfo as any object with its fields (what the codec reads)."""
    roi = SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0, do_rectify=False)
    return SimpleNamespace(width=width, height=height, binning_x=0, binning_y=0, roi=roi,
                           k=np.asarray(k, dtype=np.float64).ravel().tolist())


def k_of(fields: codec.CameraInfoFields) -> np.ndarray:
    return np.asarray(fields.k).reshape(3, 3)


def cloud_xyz(fields: codec.CloudFields) -> np.ndarray:
    """``(height, width, 3)`` x, y, z of cloud fields (FLOAT32, unpadded, x y z first)."""
    values = np.frombuffer(fields.data, "<f4").reshape(fields.height, fields.width, len(fields.fields))
    return values[..., :3]


# ------------------------------------------------------------------------------------------------ outputs
def test_every_output_and_its_payload(predictor: Any, frames: list[np.ndarray]) -> None:
    pipeline = FramePipeline(predictor, FrameConfig(intrinsics_source="estimate", cloud_normals=True))
    rgb = frames[0]
    out = pipeline.process(rgb, OUTPUTS)
    assert out is not None and (out.width, out.height) == (WIDTH, HEIGHT) and out.intrinsics_estimated
    assert out.inference_s > 0 and out.intrinsics_error is None

    depth = codec.decode_depth(out.depth)
    assert out.depth.encoding == "32FC1" and depth.shape == (HEIGHT, WIDTH)
    mask = np.frombuffer(out.mask.data, np.uint8).reshape(HEIGHT, WIDTH)
    valid = mask == 255
    assert set(np.unique(mask).tolist()) <= {0, 255} and valid.any()
    assert np.isnan(depth[~valid]).all() and (depth[valid] > 0).all()

    k = k_of(out.camera_info)
    np.testing.assert_array_equal(k, out.k)
    assert out.camera_info.p[3] == 0 and (out.camera_info.width, out.camera_info.height) == (WIDTH, HEIGHT)

    assert [name for name, _ in out.cloud.fields] == ["x", "y", "z", "rgb", "normal_x", "normal_y", "normal_z"]
    assert (out.cloud.height, out.cloud.width) == (HEIGHT, WIDTH) and out.cloud.is_dense is False
    xyz = cloud_xyz(out.cloud)
    np.testing.assert_array_equal(xyz[..., 2], depth)

    normals = np.frombuffer(out.normals.data, "<f4").reshape(HEIGHT, WIDTH, 3)
    finite = np.isfinite(normals).all(axis=-1)
    assert out.normals.encoding == "32FC3" and not (finite & ~valid).any()
    np.testing.assert_allclose(np.linalg.norm(normals[finite], axis=-1), 1.0, atol=1e-4)
    assert out.colorized.encoding == "bgr8"
    assert (np.frombuffer(out.colorized.data, np.uint8).reshape(HEIGHT, WIDTH, 3)[~valid] == 0).all()

    geo = out.geometry
    assert geo.camera_info is out.camera_info
    assert geo.intrinsics_estimated is True and geo.num_tokens == TOKENS and geo.metric_scale > 0
    assert geo.model_id == predictor.model_id and geo.model_id.endswith("demo.pt")
    assert geo.inference_ms == pytest.approx(out.inference_s * 1e3)
    assert geo.valid_fraction == pytest.approx(valid.mean(), abs=1e-6)
    assert geo.fov_x_deg == pytest.approx(math.degrees(2 * math.atan(WIDTH / (2 * k[0, 0]))), rel=1e-4)


def test_payloads_are_the_predictor_output_through_the_codec(predictor: Any, frames: list[np.ndarray]) -> None:
    """Nothing but the Predictor and the codec: the same bytes as encoding a direct prediction."""
    rgb = frames[1]
    out = FramePipeline(predictor, FrameConfig(intrinsics_source="estimate")).process(
        rgb, {"depth", "camera_info", "points"})
    predictor.estimate_normals = False
    geo = predictor.predict(rgb)
    assert out.depth.data == codec.encode_depth(geo.depth[0].numpy()).data
    assert out.cloud.data == codec.encode_cloud(geo.points[0].numpy(), rgb).data
    np.testing.assert_array_equal(out.k, geo.intrinsics[0].numpy().astype(np.float64))


def test_only_the_asked_outputs_and_none_means_no_inference(predictor: Any, frames: list[np.ndarray]) -> None:
    counting = _Counting(predictor)
    pipeline = FramePipeline(counting, FrameConfig(intrinsics_source="estimate"))
    assert pipeline.process(frames[0], ()) is None and counting.calls == 0
    out = pipeline.process(frames[0], ["mask"])
    assert counting.calls == 1 and out.mask is not None
    assert (out.depth, out.camera_info, out.cloud, out.normals, out.colorized, out.geometry) == (None,) * 6
    out = pipeline.process(frames[0], {"geometry"})
    assert out.camera_info is None and out.geometry is not None  # the geometry's CameraInfo is not published alone
    with pytest.raises(InputError, match="outputs"):
        pipeline.process(frames[0], {"depth", "disparity"})


def test_normals_are_estimated_only_when_an_output_needs_them(predictor: Any, frames: list[np.ndarray]) -> None:
    pipeline = FramePipeline(predictor, FrameConfig(intrinsics_source="estimate"))
    pipeline.process(frames[0], {"points", "depth"})
    assert predictor.estimate_normals is False
    pipeline.process(frames[0], {"normals"})
    assert predictor.estimate_normals is True
    pipeline.configure(FrameConfig(intrinsics_source="estimate", cloud_normals=True))
    out = pipeline.process(frames[0], {"points"})
    assert predictor.estimate_normals is True and out.normals is None
    assert [name for name, _ in out.cloud.fields][-3:] == ["normal_x", "normal_y", "normal_z"]


@pytest.mark.parametrize("options", [
    dict(depth_encoding="16UC1"),
    dict(invalid_depth="inf"),
    dict(cloud_organized=False, cloud_rgb=False),
    dict(cloud_stride=3),
])
def test_encoding_and_cloud_options(predictor: Any, frames: list[np.ndarray], options: dict[str, Any]) -> None:
    rgb = frames[2]
    reference = FramePipeline(predictor, FrameConfig(intrinsics_source="estimate")).process(
        rgb, {"depth", "points", "mask"})
    out = FramePipeline(predictor, FrameConfig(intrinsics_source="estimate", **options)).process(
        rgb, {"depth", "points", "mask"})
    metres = codec.decode_depth(reference.depth)
    valid = np.isfinite(metres)
    assert out.mask.data == reference.mask.data
    if "depth_encoding" in options:
        millimetres = np.frombuffer(out.depth.data, "<u2").reshape(HEIGHT, WIDTH)
        assert out.depth.encoding == "16UC1" and (millimetres[~valid] == 0).all()
        np.testing.assert_allclose(millimetres[valid], np.round(metres[valid] * 1000), atol=1)
    elif "invalid_depth" in options:
        depth = codec.decode_depth(out.depth)
        assert np.isposinf(depth[~valid]).all() and np.array_equal(depth[valid], metres[valid])
    elif "cloud_stride" in options:
        assert (out.cloud.height, out.cloud.width) == (math.ceil(HEIGHT / 3), math.ceil(WIDTH / 3))
        xyz = cloud_xyz(out.cloud)
        np.testing.assert_array_equal(xyz[..., 2], metres[::3, ::3])
    else:
        assert out.cloud.height == 1 and out.cloud.width == valid.sum() and out.cloud.is_dense
        assert [name for name, _ in out.cloud.fields] == ["x", "y", "z"]
        np.testing.assert_array_equal(cloud_xyz(out.cloud)[0, :, 2], metres[valid])


# ------------------------------------------------------------------------------------------------ intrinsics
def test_camera_info_k_is_used_exactly(predictor: Any, frames: list[np.ndarray]) -> None:
    pipeline = FramePipeline(predictor)  # default source: camera_info
    out = pipeline.process(frames[0], {"depth", "camera_info", "geometry"}, camera_info=camera_info())
    assert out.intrinsics_estimated is False and out.geometry.intrinsics_estimated is False
    assert list(out.camera_info.k) == GIVEN_K.ravel().tolist()  # float64 values, not the model's float32
    # without a CameraInfo, or with source 'estimate', K is estimated
    assert pipeline.process(frames[0], {"depth"}).intrinsics_estimated
    estimate = FramePipeline(predictor, FrameConfig(intrinsics_source="estimate"))
    assert estimate.process(frames[0], {"depth"}, camera_info=camera_info()).intrinsics_estimated


@pytest.mark.parametrize("info, reason", [
    (camera_info(np.zeros((3, 3))), "fx"),
    (camera_info(width=WIDTH * 2, height=HEIGHT * 2), "size"),
])
def test_unusable_camera_info_is_reported_and_k_estimated(predictor: Any, frames: list[np.ndarray], info: Any,
                                                          reason: str) -> None:
    out = FramePipeline(predictor).process(frames[0], {"camera_info"}, camera_info=info)
    assert out.intrinsics_estimated and isinstance(out.intrinsics_error, codec.ConversionError)
    assert reason in str(out.intrinsics_error)
    assert out.k[0, 0] > 0 and out.k[0, 0] != 0.0


def test_fixed_intrinsics(predictor: Any, frames: list[np.ndarray]) -> None:
    fx, fy, cx, cy = 40.5, 41.25, 23.5, 17.0
    pipeline = FramePipeline(predictor, FrameConfig(intrinsics_source="fixed", fixed_intrinsics=(fx, fy, cx, cy)))
    out = pipeline.process(frames[0], {"camera_info", "geometry"}, camera_info=camera_info())  # info ignored
    np.testing.assert_array_equal(k_of(out.camera_info), [[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    assert out.geometry.intrinsics_estimated is False


@pytest.mark.parametrize("options, match", [
    (dict(intrinsics_source="fixed"), "fixed_intrinsics"),
    (dict(intrinsics_source="fixed", fixed_intrinsics=(0.0, 40.0, 20.0, 15.0)), "fx"),
    (dict(intrinsics_source="fixed", fixed_intrinsics=(40.0, 40.0, math.nan, 15.0)), "finite"),
    (dict(intrinsics_source="fixed", fixed_intrinsics=(40.0, 40.0, 20.0)), "fixed_intrinsics"),
    (dict(intrinsics_source="guess"), "intrinsics_source"),
    (dict(intrinsics_stabilization="median"), "intrinsics_stabilization"),
    (dict(intrinsics_window=0), "intrinsics_window"),
    (dict(scale_smoothing=1.5), "scale_smoothing"),
    (dict(scale_smoothing=math.nan), "scale_smoothing"),
    (dict(depth_encoding="8UC1"), "depth_encoding"),
    (dict(invalid_depth="zero"), "invalid_depth"),
    (dict(cloud_stride=0), "cloud_stride"),
])
def test_config_is_checked(options: dict[str, Any], match: str) -> None:
    with pytest.raises(InputError, match=match):
        FrameConfig(**options)


# ------------------------------------------------------------------------------------------------ state
def test_intrinsics_lock_and_a_new_image_size(predictor: Any, frames: list[np.ndarray]) -> None:
    pipeline = FramePipeline(predictor, FrameConfig(intrinsics_source="estimate", intrinsics_stabilization="lock",
                                                    intrinsics_window=2))
    ks = [pipeline.process(rgb, {"camera_info"}).k for rgb in frames]
    np.testing.assert_allclose(ks[2], (ks[0] + ks[1]) / 2, rtol=1e-6)
    # a locked K belongs to its image size: a camera with another size starts over (used to fail once locked)
    small = [rgb[: HEIGHT // 2, : WIDTH // 2] for rgb in frames]
    own = FramePipeline(predictor, FrameConfig(intrinsics_source="estimate")).process(small[0], {"camera_info"}).k
    out = pipeline.process(small[0], {"camera_info"})
    assert (out.camera_info.width, out.camera_info.height) == (WIDTH // 2, HEIGHT // 2) and out.intrinsics_estimated
    np.testing.assert_array_equal(out.k, own)
    pipeline.process(small[1], {"camera_info"})  # locks (window 2)
    locked = pipeline.process(small[2], {"camera_info"}).k
    # configure() keeps the stabiliser unless its own settings change
    pipeline.configure(FrameConfig(intrinsics_source="estimate", intrinsics_stabilization="lock",
                                   intrinsics_window=2, depth_encoding="16UC1"))
    np.testing.assert_array_equal(pipeline.process(small[0], {"camera_info"}).k, locked)
    pipeline.configure(FrameConfig(intrinsics_source="estimate", intrinsics_stabilization="lock", intrinsics_window=3))
    np.testing.assert_array_equal(pipeline.process(small[0], {"camera_info"}).k, own)


def test_scale_smoothing(predictor: Any, frames: list[np.ndarray]) -> None:
    plain = FramePipeline(predictor, FrameConfig(intrinsics_source="estimate"))
    scales = [plain.process(rgb, {"geometry"}).geometry.metric_scale for rgb in frames[:2]]
    smooth = FramePipeline(predictor, FrameConfig(intrinsics_source="estimate", scale_smoothing=0.5))
    first = smooth.process(frames[0], {"geometry", "depth"})
    second = smooth.process(frames[1], {"geometry", "depth"})
    assert first.geometry.metric_scale == pytest.approx(scales[0], rel=1e-6)
    assert second.geometry.metric_scale == pytest.approx(0.5 * scales[1] + 0.5 * scales[0], rel=1e-5)
    reference = codec.decode_depth(plain.process(frames[1], {"depth"}).depth)
    np.testing.assert_allclose(codec.decode_depth(second.depth), reference * (second.geometry.metric_scale / scales[1]),
                               rtol=1e-5)


# ------------------------------------------------------------------------------------------------ input side
def test_decode_rgb_raw_and_compressed() -> None:
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    raw = SimpleNamespace(width=8, height=6, encoding="bgr8", is_bigendian=0, step=8 * 3,
                          data=np.ascontiguousarray(rgb[..., ::-1]).tobytes())
    np.testing.assert_array_equal(decode_rgb(raw), rgb)
    buffer = io.BytesIO()
    PILImage.fromarray(rgb).save(buffer, format="PNG")
    np.testing.assert_array_equal(decode_rgb(SimpleNamespace(format="png", data=buffer.getvalue())), rgb)
    grey16 = SimpleNamespace(width=2, height=1, encoding="mono16", is_bigendian=0, step=4,
                             data=np.array([0, 65535], "<u2").tobytes())
    out = decode_rgb(grey16)  # 16-bit grey reaches the model as float in [0, 1], not rounded to 8 bits
    assert out.dtype == np.float32 and out[0, 1, 2] == 1.0
    with pytest.raises(codec.ConversionError):
        decode_rgb(raw, max_pixels=47)
