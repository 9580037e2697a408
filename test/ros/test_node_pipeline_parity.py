"""``moge2_node`` and ``bag-infer`` publish the same content for the same frames (they run one frame pipeline).

A bag of a few rendered frames is played, frame by frame, to a running ``moge2_node`` process (its image and
CameraInfo messages deserialised from the bag's own bytes) and the node's outputs are recorded; ``bag-infer`` runs
on the same bag with the same model and settings.  Per frame and topic the two must be equal: byte for byte for
the depth image data and the point cloud data, field for field for the CameraInfo and the MonocularGeometry
(except its ``inference_ms``), with the same header.

Two set-ups: raw rgb8 images with their CameraInfo (K passed through) and an organized cloud; JPEG images without
a CameraInfo (K estimated) and an unorganized cloud with stride 2.  Both cut the depth at the first frame's median
(``max_depth`` / ``depth_range``), so that invalid pixels (NaN, dropped points) are part of what is compared.  The node runs on the CPU with as many torch
threads as this process, so that both sides compute the very same floating point operations.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from moge2_ros.bags.reader import open_bag
from moge2_ros.data.make_bag import write_samples_bag
from moge2_ros.data.sample import Sample
from moge2_ros.inference import PredictorOptions
from moge2_ros.pipeline.bag_infer import BagInferOptions, output_topics, run_bag_infer
from ros_helpers import RosClient, start_node

pytestmark = pytest.mark.ros

WIDTH, HEIGHT = 64, 48
TOKENS = 96
EDGE_RTOL = 0.04
NUM_FRAMES = 3
TOPICS = ("depth/image", "depth/camera_info", "points", "geometry")


@dataclass(frozen=True)
class Setup:
    name: str
    image_format: str  # write_samples_bag image_format
    use_camera_info: bool
    cloud_organized: bool
    cloud_stride: int


SETUPS = [
    Setup("rgb8_camera_info", "rgb8", use_camera_info=True, cloud_organized=True, cloud_stride=1),
    Setup("jpeg_estimated", "jpeg", use_camera_info=False, cloud_organized=False, cloud_stride=2),
]


def frames() -> list[Sample]:
    from moge2_ros.data.example import render_example_scene

    samples = []
    for i in range(NUM_FRAMES):
        scene = render_example_scene(WIDTH, HEIGHT, 60.0, camera_position=(0.25 * i, 0.0, 0.15 * i))
        k = scene.intrinsics.copy()
        k[0, 0] += 0.123456789  # not a float32 value: a K passed through must stay float64
        depth = np.full((HEIGHT, WIDTH), np.nan, dtype=np.float32)  # no depth topic is written
        samples.append(Sample(image=scene.rgb, depth=depth, intrinsics=k, source=f"example:{i}"))
    return samples


# ------------------------------------------------------------------------------------------------ the two runs
def median_depth(model: Path) -> float:
    """Median predicted depth of the first frame (metres): a max_depth that invalidates about half the pixels."""
    from moge2_ros.inference import load_predictor

    predictor = load_predictor(PredictorOptions(model=str(model), device="cpu", precision="auto", num_tokens=TOKENS))
    depth = predictor.predict(frames()[0].image).depth[0].numpy()
    return float(np.median(depth[np.isfinite(depth)]))


def node_outputs(client: RosClient, env: dict[str, str], workdir: Path, model: Path, bag: Path,
                 setup: Setup, max_depth: float) -> dict[int, dict[str, Any]]:
    """Play the bag's frames to a moge2_node process; its outputs by image stamp (ns) and relative topic."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    with open_bag(bag) as reader:
        image_topic = next(t for t in reader.topics if "image_raw" in t)
        info_topic = next(t for t in reader.topics if t.endswith("camera_info"))
        compressed = image_topic.endswith("/compressed")
        image_type = CompressedImage if compressed else Image
        images = [deserialize_message(r.data, image_type) for r in reader.raw_messages([image_topic])]
        infos = [deserialize_message(r.data, CameraInfo) for r in reader.raw_messages([info_topic])]

    node_env = {**env, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    node = start_node(
        client, node_env, workdir, model, f"/parity_{setup.name}", outputs=TOPICS,
        input_topic="image/compressed" if compressed else "image", input_type=image_type,
        image_transport="compressed" if compressed else "raw", input_qos="reliable", device="cpu",
        num_tokens=TOKENS, edge_rtol=EDGE_RTOL, max_depth=max_depth,
        intrinsics_source="camera_info" if setup.use_camera_info else "estimate",
        cloud_organized=setup.cloud_organized, cloud_stride=setup.cloud_stride, cloud_rgb=True,
        cloud_normals=False,  # depth_encoding 32FC1 and invalid_depth nan: the defaults, as bag-infer writes
    )
    try:
        inboxes = [node.outputs[t] for t in TOPICS]
        prefix = f"{node.namespace}/"
        results: dict[int, dict[str, Any]] = {}
        for index, (image, info) in enumerate(zip(images, infos)):

            def publish() -> None:
                if setup.use_camera_info:
                    node.info_pub.publish(info)
                node.image_pub.publish(image)

            for _attempt in range(5):  # the CameraInfo may reach the node after the first image: send both again
                for inbox in inboxes:
                    inbox.clear()
                got = client.request(publish, image.header.stamp, inboxes, process=node.process)
                if got[f"{prefix}geometry"].intrinsics_estimated != setup.use_camera_info:
                    break
            stamp = image.header.stamp.sec * 1_000_000_000 + image.header.stamp.nanosec
            results[stamp] = {topic[len(prefix):]: msg for topic, msg in got.items()}
            assert results[stamp]["geometry"].intrinsics_estimated is (not setup.use_camera_info), index
        assert node.process.alive(), node.process.output()
    finally:
        node.stop()
    return results


def bag_outputs(bag: Path, out: Path, model: Path, setup: Setup, max_depth: float) -> dict[int, dict[str, Any]]:
    """bag-infer on the same bag; its messages by header stamp (ns) and relative topic."""
    options = BagInferOptions(
        PredictorOptions(model=str(model), device="cpu", precision="auto", num_tokens=TOKENS, edge_rtol=EDGE_RTOL,
                         depth_range=(0.0, max_depth), estimate_normals=False),
        use_camera_info=setup.use_camera_info, points=True, cloud_organized=setup.cloud_organized,
        cloud_stride=setup.cloud_stride,
    )
    report = run_bag_infer(bag, out, options, progress=False)
    assert report.frames == NUM_FRAMES and report.bad_frames == 0
    topics = output_topics(options.output_namespace)
    relative = {topics["depth"]: "depth/image", topics["camera_info"]: "depth/camera_info",
                topics["points"]: "points", topics["geometry"]: "geometry"}
    results: dict[int, dict[str, Any]] = {}
    with open_bag(out) as reader:
        for message in reader.messages(list(relative)):
            results.setdefault(message.stamp_ns, {})[relative[message.topic]] = message.msg
    return results


@pytest.fixture(scope="module")
def max_depth(tiny_model_path: Path) -> float:
    return median_depth(tiny_model_path)


@pytest.fixture(scope="module", params=SETUPS, ids=[s.name for s in SETUPS])
def runs(request: pytest.FixtureRequest, client: RosClient, env: dict[str, str], workdir: Path, tiny_model_path: Path,
         max_depth: float) -> Iterator[tuple[Setup, dict[int, dict[str, Any]], dict[int, dict[str, Any]]]]:
    setup: Setup = request.param
    bag = workdir / f"in_{setup.name}"
    write_samples_bag(bag, frames(), "mcap", image_format=setup.image_format, with_depth=False)
    from_node = node_outputs(client, env, workdir, tiny_model_path, bag, setup, max_depth)
    from_bag = bag_outputs(bag, workdir / f"out_{setup.name}", tiny_model_path, setup, max_depth)
    yield setup, from_node, from_bag


# ------------------------------------------------------------------------------------------------ comparison
def data_bytes(data: Any) -> bytes:
    """A message's uint8[] as bytes (rclpy: array('B'); rosbags: numpy uint8)."""
    return data.tobytes() if isinstance(data, np.ndarray) else bytes(data)


def header_of(msg: Any) -> tuple[int, int, str]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id


def camera_info_values(msg: Any) -> dict[str, Any]:
    roi = msg.roi
    return {
        "size": (msg.width, msg.height), "distortion_model": msg.distortion_model,
        "d": list(msg.d), "k": list(msg.k), "r": list(msg.r), "p": list(msg.p),
        "binning": (msg.binning_x, msg.binning_y),
        "roi": (roi.x_offset, roi.y_offset, roi.width, roi.height, bool(roi.do_rectify)),
    }


def test_same_frames_and_headers(runs: Any) -> None:
    _setup, from_node, from_bag = runs
    assert sorted(from_node) == sorted(from_bag) and len(from_node) == NUM_FRAMES
    for stamp in from_node:
        assert set(from_bag[stamp]) == set(TOPICS)
        for topic in TOPICS:
            assert header_of(from_node[stamp][topic]) == header_of(from_bag[stamp][topic]), (stamp, topic)


def test_depth_image_bytes_are_equal(runs: Any) -> None:
    _setup, from_node, from_bag = runs
    invalid: list[float] = []
    for stamp, node in from_node.items():
        a, b = node["depth/image"], from_bag[stamp]["depth/image"]
        assert (a.height, a.width, a.encoding, a.is_bigendian, a.step) == \
               (b.height, b.width, b.encoding, b.is_bigendian, b.step) == (HEIGHT, WIDTH, "32FC1", 0, WIDTH * 4)
        depth = np.frombuffer(data_bytes(a.data), "<f4")
        assert np.isfinite(depth).any(), "an all-invalid depth image would compare equal for the wrong reason"
        invalid.append(np.isnan(depth).mean())
        assert data_bytes(a.data) == data_bytes(b.data), stamp
    assert 0.2 < invalid[0] < 0.8, f"max_depth = the first frame's median: about half invalid, found {invalid}"


def test_camera_info_fields_are_equal(runs: Any) -> None:
    setup, from_node, from_bag = runs
    for stamp, node in from_node.items():
        a, b = camera_info_values(node["depth/camera_info"]), camera_info_values(from_bag[stamp]["depth/camera_info"])
        assert a == b, stamp
        if setup.use_camera_info:  # the bag's K, passed through as float64
            assert a["k"][0] != float(np.float32(a["k"][0]))


def test_point_cloud_bytes_are_equal(runs: Any) -> None:
    setup, from_node, from_bag = runs
    for stamp, node in from_node.items():
        a, b = node["points"], from_bag[stamp]["points"]
        layout = [(f.name, f.offset, f.datatype, f.count) for f in a.fields]
        assert layout == [(f.name, f.offset, f.datatype, f.count) for f in b.fields]
        assert [name for name, *_ in layout] == ["x", "y", "z", "rgb"]
        assert (a.height, a.width, bool(a.is_bigendian), a.point_step, a.row_step, bool(a.is_dense)) == \
               (b.height, b.width, bool(b.is_bigendian), b.point_step, b.row_step, bool(b.is_dense))
        if setup.cloud_organized:
            assert (a.height, a.width) == (HEIGHT, WIDTH)
        else:
            assert a.height == 1 and 0 < a.width <= -(-HEIGHT // 2) * -(-WIDTH // 2)
        assert data_bytes(a.data) == data_bytes(b.data), stamp


def test_geometry_fields_are_equal_except_timing(runs: Any, tiny_model_path: Path) -> None:
    setup, from_node, from_bag = runs
    names = ("intrinsics_estimated", "metric_scale", "fov_x_deg", "fov_y_deg", "num_tokens", "model_id",
             "valid_fraction")
    for stamp, node in from_node.items():
        a, b = node["geometry"], from_bag[stamp]["geometry"]
        assert {n: getattr(a, n) for n in names} == {n: getattr(b, n) for n in names}, stamp
        assert camera_info_values(a.camera_info) == camera_info_values(b.camera_info)
        assert header_of(a.camera_info) == header_of(b.camera_info) == header_of(a)
        assert a.intrinsics_estimated is (not setup.use_camera_info)
        assert a.num_tokens == TOKENS and a.model_id == str(tiny_model_path) and 0 < a.valid_fraction <= 1
        assert a.inference_ms > 0 and b.inference_ms > 0
