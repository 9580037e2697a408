"""``open_dataset`` / ``detect_format``: every dataset kind is detected and opened from its path, options reach the
reader, an explicit format overrides detection, and a path of no known kind gets one message naming what was
looked for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moge2_ros.data import open_dataset
from moge2_ros.data.bag import BagDataset
from moge2_ros.data.folder import FolderDataset, write_sample
from moge2_ros.data.moge_benchmark import MoGeBenchmarkDataset, write_official_sample
from moge2_ros.data.open import FORMATS, detect_format
from moge2_ros.data.sample import Dataset
from moge2_ros.data.sample import Sample
from moge2_ros.data.sevenscenes import SevenScenesDataset
from moge2_ros.errors import DatasetError

H, W = 24, 32


def _sample(seed: int) -> Sample:
    rng = np.random.default_rng(seed)
    depth = rng.uniform(1.0, 4.0, (H, W)).astype(np.float32)
    depth[0, :3] = np.nan
    k = np.array([[30.0, 0.0, 15.5], [0.0, 30.0, 11.5], [0.0, 0.0, 1.0]])
    return Sample(image=rng.integers(0, 256, (H, W, 3), dtype=np.uint8), depth=depth, intrinsics=k)


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    return [_sample(i) for i in range(2)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, samples: list[Sample]) -> Path:
    root = tmp_path_factory.mktemp("folder")
    for i, sample in enumerate(samples):
        write_sample(root, f"f{i}", sample)
    return root


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory: pytest.TempPathFactory, samples: list[Sample]) -> Path:
    root = tmp_path_factory.mktemp("bench")
    for name, sample in zip(("a", "b"), samples):
        write_official_sample(root / name, sample)
    (root / ".index.txt").write_text("a\nb\n")
    return root


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory, samples: list[Sample]):
    pytest.importorskip("rosbags")
    from moge2_ros.data.make_bag import write_samples_bag

    root = tmp_path_factory.mktemp("bag") / "rec"
    return root, write_samples_bag(root, samples, "mcap")


def _fake_sevenscenes(root: Path) -> Path:
    """Two 7-Scenes-named frames (small; enough for detection and the layout check)."""
    root.mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / f"frame-{i:06d}.color.jpg")
        Image.fromarray(np.full((H, W), 1500, np.uint16)).save(root / f"frame-{i:06d}.depth.png")
    return root


def test_each_kind_is_detected_and_opened(folder: Path, benchmark: Path, bag, tmp_path: Path,
                                          samples: list[Sample]) -> None:
    sevenscenes = _fake_sevenscenes(tmp_path / "seq")
    bag_root, layout = bag
    mcap = next(bag_root.glob("*.mcap"))
    assert [detect_format(p) for p in (bag_root, mcap, benchmark, sevenscenes, folder)] == [
        "bag", "bag", "moge-benchmark", "sevenscenes", "folder"]

    opened = open_dataset(folder)
    assert isinstance(opened, FolderDataset) and list(opened.stems) == ["f0", "f1"]
    assert np.array_equal(opened[1].image, samples[1].image)
    assert np.array_equal(opened[1].depth, samples[1].depth, equal_nan=True)

    seq = open_dataset(sevenscenes)
    assert isinstance(seq, SevenScenesDataset) and list(seq.stems) == ["frame-000000", "frame-000001"]

    official = open_dataset(benchmark)
    assert isinstance(official, MoGeBenchmarkDataset) and list(official.stems) == ["a", "b"]
    assert official[0].image.shape == (H, W, 3)  # evaluated at its own size without width / height

    for source in (bag_root, mcap):  # the bag folder and the bare .mcap file
        recording = open_dataset(source, image_topic=layout.image_topic, depth_topic=layout.depth_topic)
        assert isinstance(recording, BagDataset) and list(recording.stems) == ["000000", "000001"]
        assert np.array_equal(recording[0].image, samples[0].image)
    assert all(isinstance(d, Dataset) for d in (opened, seq, official, recording))


def test_options_reach_the_reader(benchmark: Path, bag, tmp_path: Path, samples: list[Sample]) -> None:
    bag_root, layout = bag
    recording = open_dataset(bag_root, image_topic=layout.image_topic, depth_topic=layout.depth_topic,
                             camera_info_topic=None, tolerance_ms=7.5)
    assert recording.tolerance_ms == 7.5 and recording.camera_info_topic == layout.camera_info_topic
    view = open_dataset(benchmark, width=16, height=12, depth_unit=1.0)
    first = view[0]
    assert first.image.shape == (12, 16, 3) and first.is_metric
    assert not open_dataset(benchmark)[0].is_metric  # depth_unit None: not metric (official meaning)
    seq = open_dataset(_fake_sevenscenes(tmp_path / "seq"), indices=[1])
    assert list(seq.stems) == ["frame-000001"]


def test_explicit_format_overrides_detection(folder: Path, tmp_path: Path, samples: list[Sample]) -> None:
    both = tmp_path / "both"
    for i, sample in enumerate(samples):
        write_sample(both, f"f{i}", sample)
    (both / ".index.txt").write_text("f0\n")  # also looks like an official benchmark, which auto prefers
    assert detect_format(both) == "moge-benchmark"
    assert isinstance(open_dataset(both, format="folder"), FolderDataset)
    with pytest.raises(DatasetError, match="no frame-NNNNNN"):
        open_dataset(folder, format="sevenscenes")
    with pytest.raises(DatasetError, match="unknown dataset format 'rosbag'.*folder"):
        open_dataset(folder, format="rosbag")


def test_options_that_do_not_apply_and_missing_bag_topics(folder: Path, bag) -> None:
    with pytest.raises(DatasetError, match=r"option image_topic does not apply to a folder dataset.*takes: none"):
        open_dataset(folder, image_topic="/camera/color/image_raw")
    assert len(open_dataset(folder, image_topic=None)) == 2  # None = the reader's default
    bag_root, layout = bag
    with pytest.raises(DatasetError, match="needs image_topic"):
        open_dataset(bag_root, depth_topic=layout.depth_topic)
    with pytest.raises(DatasetError, match="exactly one of depth_topic"):
        open_dataset(bag_root, image_topic=layout.image_topic)


def test_a_path_of_no_kind_names_what_was_looked_for(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError) as info:
        open_dataset(empty)
    message = str(info.value)
    assert message.startswith(f"{empty}: no frames of any dataset kind")
    for looked_for in ("metadata.yaml", ".mcap / .db3", ".index.txt", "frame-NNNNNN.color.jpg", "<stem>.rgb.png"):
        assert looked_for in message
    with pytest.raises(DatasetError, match="not a dataset"):
        detect_format(empty / "notes.txt")
    with pytest.raises(DatasetError, match="no such file or directory"):
        open_dataset(tmp_path / "missing")
    assert set(FORMATS) == {"bag", "moge-benchmark", "sevenscenes", "folder"}


def test_real_sevenscenes_folder(sevenscenes_dir: Path) -> None:
    dataset = open_dataset(sevenscenes_dir, indices=[0])
    assert detect_format(sevenscenes_dir) == "sevenscenes"
    sample = dataset[0]
    assert sample.image.shape == (480, 640, 3) and sample.label_type == "B" and sample.is_metric
    reference = SevenScenesDataset(sevenscenes_dir, indices=[0])[0]
    assert np.array_equal(sample.depth, reference.depth, equal_nan=True)
    assert list(dataset.stems) == ["frame-000000"]
