"""rosbag2 reading and writing with rosbags (no ROS install): BagDataset round trips on real 7-Scenes frames in both
storage formats, clear errors for missing topics, unsynchronised stamps and damaged files, the LiDAR path."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from moge2_ros.bags import BagError
from moge2_ros.data.bag import BagDataset, project_points_to_depth
from moge2_ros.bags.reader import open_bag
from moge2_ros.data.make_bag import cloud_from_depth, write_samples_bag
from moge2_ros.bags.typestore import GEOMETRY, geometry_msg_path, get_typestore

STORAGES = ("mcap", "sqlite3")


@pytest.fixture(scope="module")
def frames(sevenscenes_frames: list) -> list:
    """The first 3 7-Scenes frames, 160x120 (``sevenscenes_frames`` of test/conftest.py)."""
    return sevenscenes_frames


@pytest.fixture(scope="module")
def bags(frames: list, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One bag per storage: rgb8 images, 32FC1 depth, a back-projected cloud; plus damaged copies."""
    root = tmp_path_factory.mktemp("bags")
    out = {}
    for storage in STORAGES:
        out[storage] = (root / storage, write_samples_bag(root / storage, frames, storage, depth_encoding="32FC1",
                                                            with_cloud=True))
    return out


def _storage_file(bag: Path) -> Path:
    return next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))


@pytest.mark.parametrize("storage", STORAGES)
def test_round_trip_equals_source_frames(bags: dict, frames: list, storage: str) -> None:
    path, layout = bags[storage]
    with open_bag(path) as bag:
        assert bag.storage == storage
        assert bag.topics[layout.image_topic] == "sensor_msgs/msg/Image"
        assert bag.message_count(layout.depth_topic) == len(frames)
        stamps = [m.stamp_ns for m in bag.messages([layout.image_topic])]
    assert stamps == layout.stamps_ns
    dataset = BagDataset(path, layout.image_topic, depth_topic=layout.depth_topic)
    assert len(dataset) == len(frames) and dataset.stamps_ns == layout.stamps_ns
    assert dataset.camera_info_topic == layout.camera_info_topic  # found as the image's sibling
    for sample, source in zip(dataset, frames):
        np.testing.assert_array_equal(sample.image, source.image)
        np.testing.assert_array_equal(sample.depth, source.depth)  # NaN == NaN here
        np.testing.assert_array_equal(sample.intrinsics, source.intrinsics)
        assert sample.label_type == "B" and sample.is_metric
        assert sample.meta["frame_id"] == layout.frame_id
    assert dataset[-1].meta["stamp_ns"] == layout.stamps_ns[-1]


@pytest.mark.parametrize(("image_format", "depth_encoding"), [("jpeg", "16UC1"), ("png", "16UC1"), ("bgr8", "32FC1")])
def test_image_and_depth_variants(frames: list, tmp_path: Path, image_format: str, depth_encoding: str) -> None:
    layout = write_samples_bag(tmp_path / "bag", frames[:2], "mcap", image_format=image_format,
                               depth_encoding=depth_encoding)
    if image_format in ("jpeg", "png"):
        assert layout.image_topic.endswith("/compressed")
    dataset = BagDataset(tmp_path / "bag", layout.image_topic, depth_topic=layout.depth_topic)
    for sample, source in zip(dataset, frames):
        difference = np.abs(sample.image.astype(int) - source.image.astype(int))
        if image_format == "jpeg":
            assert 0 < difference.mean() < 3.0  # lossy, but the same picture
        else:
            assert difference.max() == 0
        np.testing.assert_array_equal(np.isnan(sample.depth), np.isnan(source.depth))
        np.testing.assert_allclose(sample.depth, source.depth, atol=0.0005 if depth_encoding == "16UC1" else 0)


def test_missing_depth_topic_is_a_clear_error(bags: dict) -> None:
    path, layout = bags["mcap"]
    with pytest.raises(BagError, match=r"no depth topic '/camera/depth/image_rect_raw'.*candidates: .*aligned_depth"):
        BagDataset(path, layout.image_topic, depth_topic="/camera/depth/image_rect_raw")
    with pytest.raises(BagError, match=r"depth topic /camera/color/camera_info is sensor_msgs/msg/CameraInfo"):
        BagDataset(path, layout.image_topic, depth_topic=layout.camera_info_topic)
    with pytest.raises(BagError, match="exactly one of depth_topic"):
        BagDataset(path, layout.image_topic)


def test_unsynchronised_stamps_are_a_clear_error(frames: list, tmp_path: Path) -> None:
    layout = write_samples_bag(tmp_path / "late", frames[:2], "sqlite3", depth_offset_ns=40_000_000, period_ns=200_000_000)
    with pytest.raises(BagError, match=r"unsynchronised stamps.*within 20 ms.*nearest offset 40\.0 ms"):
        BagDataset(tmp_path / "late", layout.image_topic, depth_topic=layout.depth_topic)
    dataset = BagDataset(tmp_path / "late", layout.image_topic, depth_topic=layout.depth_topic, tolerance_ms=50)
    assert len(dataset) == 2
    assert dataset[1].meta["label_stamp_ns"] - dataset[1].meta["stamp_ns"] == 40_000_000


@pytest.mark.parametrize("storage", STORAGES)
def test_truncated_or_corrupt_bag_is_a_clear_error(bags: dict, tmp_path: Path, storage: str) -> None:
    path, layout = bags[storage]
    for damage in ("truncate", "corrupt"):
        copy = tmp_path / f"{storage}_{damage}"
        shutil.copytree(path, copy)
        target = _storage_file(copy)
        data = bytearray(target.read_bytes())
        if damage == "truncate":
            data = data[: int(len(data) * 0.6)]
        else:
            third = len(data) // 3  # a wiped stretch (bad sectors): records and their lengths are lost
            data[third : 2 * third] = bytes(third)
        target.write_bytes(bytes(data))
        with pytest.raises(BagError, match=r"corrupt or truncated") as info:
            BagDataset(copy, layout.image_topic, depth_topic=layout.depth_topic)
        assert str(copy) in str(info.value)


def test_missing_metadata_and_missing_bag(bags: dict, tmp_path: Path) -> None:
    path, _ = bags["mcap"]
    copy = tmp_path / "interrupted"
    shutil.copytree(path, copy)
    (copy / "metadata.yaml").unlink()
    with pytest.raises(BagError, match=r"no metadata.yaml.*pass the storage file itself"):
        open_bag(copy)
    with open_bag(_storage_file(copy)) as bag:  # the bare MCAP file still reads
        assert len(bag.topics) == 4
    with pytest.raises(BagError, match="no such bag"):
        open_bag(tmp_path / "nothing")


@pytest.mark.parametrize("storage", STORAGES)
def test_lidar_cloud_projects_back_to_the_depth(bags: dict, frames: list, storage: str) -> None:
    path, layout = bags[storage]
    dataset = BagDataset(path, layout.image_topic, cloud_topic=layout.cloud_topic)
    sample = dataset[1]
    source = frames[1].depth
    assert sample.label_type == "C"
    hit = np.isfinite(sample.depth)
    assert hit.sum() >= 0.95 * np.isfinite(source).sum()  # back-projected pixel centres land on their own pixels
    np.testing.assert_allclose(sample.depth[hit], source[hit], rtol=1e-6)
    assert not np.isfinite(sample.depth[~np.isfinite(source)]).any()


def test_projection_z_buffer_and_extrinsics(bags: dict, frames: list) -> None:
    k = np.array([[10.0, 0, 4.5], [0, 10.0, 2.0], [0, 0, 1]])
    near, far = [0.0, 0.0, 2.0], [0.0, 0.0, 5.0]  # both on pixel (row 2, col 4 or 5): the nearest wins
    depth = project_points_to_depth(np.array([far, near, [0, 0, -1.0], [100.0, 0, 1.0]]), k, 10, 5)
    assert np.nanmin(depth) == 2.0 and np.isfinite(depth).sum() == 1
    assert depth[2, 5] == 2.0  # u = 4.5 is the border of pixels 4 and 5: rounds half up
    path, layout = bags["mcap"]
    moved = np.eye(4)
    moved[2, 3] = 0.5  # the cloud frame sits 0.5 m behind the camera
    shifted = BagDataset(path, layout.image_topic, cloud_topic=layout.cloud_topic, cloud_to_camera=moved)[0]
    back = cloud_from_depth(frames[0].depth, frames[0].intrinsics)
    expected = project_points_to_depth(back + np.array([0, 0, 0.5]), frames[0].intrinsics, 160, 120)
    np.testing.assert_array_equal(shifted.depth, expected)


def test_typestore_registers_monocular_geometry() -> None:
    store = get_typestore()
    assert GEOMETRY in store.types
    text = geometry_msg_path().read_text()
    assert "metric_scale" in text and "metric_scale" in store.fielddefs[GEOMETRY][1][3][0]
