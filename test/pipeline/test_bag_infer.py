"""``moge2-ros bag-infer`` end to end on bags of real 7-Scenes frames (both storage formats) with the untrained demo
model: output topics, stamps and frame ids, the CLI, atomic output, resume after an interruption."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moge2_ros.bags import BagError
from moge2_ros.bags.decode import depth_from_msg, k_from_camera_info
from moge2_ros.bags.reader import open_bag
from moge2_ros.data.make_bag import write_samples_bag
from moge2_ros.inference import PredictorOptions
from moge2_ros.pipeline.bag_infer import BagInferOptions, run_bag_infer

NUM_TOKENS = 64  # tiny token budget: the untrained model's numbers do not matter here, only the plumbing


@pytest.fixture(scope="module")
def setup(sevenscenes_frames: list, tiny_model_path: Path,
          tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from moge2_ros.checkpoints import load_model
    from moge2_ros.inference import Predictor

    root = tmp_path_factory.mktemp("infer")
    frames = sevenscenes_frames
    bags = {}
    for storage in ("mcap", "sqlite3"):  # compressed JPEG images + 16UC1 depth + camera_info, like a RealSense bag
        layout = write_samples_bag(root / f"in_{storage}", frames, storage, image_format="jpeg")
        bags[storage] = (root / f"in_{storage}", layout)
    model = tiny_model_path
    predictor = Predictor(load_model(model), num_tokens=NUM_TOKENS, estimate_normals=False, model_id=str(model))
    return {"root": root, "frames": frames, "bags": bags, "model": str(model), "predictor": predictor}


class _Counting:
    """A Predictor wrapper that counts calls and can fail (KeyboardInterrupt) at a given call."""

    def __init__(self, predictor: Any, interrupt_at: int | None = None) -> None:
        self.inner, self.calls, self.interrupt_at = predictor, 0, interrupt_at
        self.max_pixels, self.model_id = predictor.max_pixels, predictor.model_id
        self.pixel_limit = predictor.pixel_limit

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.interrupt_at is not None and self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        return self.inner.predict(*args, **kwargs)


def _options(setup: dict, **changes: Any) -> BagInferOptions:
    return BagInferOptions(PredictorOptions(model=setup["model"], num_tokens=NUM_TOKENS, estimate_normals=False),
                           **changes)


def _messages(path: Path, topic: str) -> list:
    with open_bag(path) as bag:
        return list(bag.messages([topic]))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_end_to_end_outputs_keep_stamps_and_frames(setup: dict, tmp_path: Path, storage: str) -> None:
    in_bag, layout = setup["bags"][storage]
    out = tmp_path / "out"
    report = run_bag_infer(in_bag, out, _options(setup, points=True, copy_input_topics=True, chunk_frames=3),
                           progress=False, predictor=setup["predictor"])
    assert report.frames == 3 and report.bad_frames == 0 and report.output == out
    assert not out.with_name("out.partial").exists()
    with open_bag(out) as bag:
        assert bag.storage == storage  # the input's storage by default
        topics = bag.topics
    assert topics["/moge2/depth/image"] == "sensor_msgs/msg/Image"
    assert topics["/moge2/geometry"] == "moge2_ros_msgs/msg/MonocularGeometry"
    for topic in ("/moge2/depth/image", "/moge2/depth/camera_info", "/moge2/points", "/moge2/geometry"):
        messages = _messages(out, topic)
        assert [m.stamp_ns for m in messages] == layout.stamps_ns
        assert {m.msg.header.frame_id for m in messages} == {layout.frame_id}
    for depth_msg, info_msg, geo_msg, frame in zip(_messages(out, "/moge2/depth/image"),
                                                   _messages(out, "/moge2/depth/camera_info"),
                                                   _messages(out, "/moge2/geometry"), setup["frames"]):
        assert depth_msg.msg.encoding == "32FC1"
        depth = depth_from_msg(depth_msg.msg)
        assert depth.shape == frame.depth.shape and np.isfinite(depth).any()
        np.testing.assert_array_equal(k_from_camera_info(info_msg.msg), frame.intrinsics)  # given K passed through
        assert geo_msg.msg.intrinsics_estimated is False and geo_msg.msg.num_tokens == NUM_TOKENS
        assert geo_msg.msg.model_id == setup["model"]
        assert geo_msg.msg.metric_scale > 0 and 0 < geo_msg.msg.valid_fraction <= 1
    # copied input topics: bytes unchanged
    for topic in (layout.image_topic, layout.depth_topic, layout.camera_info_topic):
        with open_bag(in_bag) as src, open_bag(out) as dst:
            assert [r.data for r in src.raw_messages([topic])] == [r.data for r in dst.raw_messages([topic])]


def test_selection_and_estimated_intrinsics(setup: dict, tmp_path: Path) -> None:
    in_bag, layout = setup["bags"]["mcap"]
    report = run_bag_infer(in_bag, tmp_path / "out", _options(setup, every=2, max_frames=1, use_camera_info=False,
                                                               output_namespace="/cam/mono", storage="sqlite3"),
                           progress=False, predictor=setup["predictor"])
    assert report.frames == 1
    with open_bag(tmp_path / "out") as bag:
        assert bag.storage == "sqlite3"
        assert sorted(bag.topics) == ["/cam/mono/depth/camera_info", "/cam/mono/depth/image", "/cam/mono/geometry"]
    (geo,) = _messages(tmp_path / "out", "/cam/mono/geometry")
    assert geo.stamp_ns == layout.stamps_ns[0] and geo.msg.intrinsics_estimated is True


def test_resume_after_interruption(setup: dict, tmp_path: Path) -> None:
    in_bag, layout = setup["bags"]["sqlite3"]
    out = tmp_path / "out"
    options = _options(setup, chunk_frames=1, copy_input_topics=True)
    interrupted = _Counting(setup["predictor"], interrupt_at=3)
    with pytest.raises(KeyboardInterrupt):
        run_bag_infer(in_bag, out, options, progress=False, predictor=interrupted)
    partial = tmp_path / "out.partial"
    assert not out.exists()  # nothing that looks complete
    state = json.loads((partial / "progress.json").read_text())
    assert state["frames_done"] == 2 and state["chunks"] == ["chunk-00000", "chunk-00001"]
    with pytest.raises(BagError, match="pass --resume"):
        run_bag_infer(in_bag, out, options, progress=False, predictor=setup["predictor"])
    with pytest.raises(BagError, match="cannot resume.*options"):
        run_bag_infer(in_bag, out, _options(setup, chunk_frames=2, copy_input_topics=True), resume=True,
                      progress=False, predictor=setup["predictor"])
    resumed = _Counting(setup["predictor"])
    report = run_bag_infer(in_bag, out, options, resume=True, progress=False, predictor=resumed)
    assert resumed.calls == 1 and report.resumed_frames == 2 and report.frames == 3
    assert not partial.exists()
    fresh = tmp_path / "fresh"
    run_bag_infer(in_bag, fresh, options, progress=False, predictor=setup["predictor"])
    with open_bag(out) as a, open_bag(fresh) as b:
        assert a.topics == b.topics
        for topic in a.topics:
            if topic.endswith("geometry"):  # holds the inference time
                continue
            assert [(r.log_time_ns, r.data) for r in a.raw_messages([topic])] == \
                   [(r.log_time_ns, r.data) for r in b.raw_messages([topic])], topic


def test_cli_bag_infer_and_errors(setup: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    import moge2_ros.cli as cli

    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", ("moge2_ros.pipeline.cli",))
    in_bag, layout = setup["bags"]["mcap"]
    out = tmp_path / "out"
    args = ["bag-infer", str(in_bag), str(out), "--model", setup["model"], "--num-tokens", str(NUM_TOKENS),
            "--max-frames", "2", "--quiet"]
    assert cli.main(args) == 0
    assert len(_messages(out, "/moge2/depth/image")) == 2
    assert cli.main(args) == 1  # the output exists
    assert "exists already" in capsys.readouterr().err
    # a truncated input: one line, exit 1, and no output that looks complete
    broken = tmp_path / "broken"
    shutil.copytree(in_bag, broken)
    storage = next(p for p in broken.iterdir() if p.suffix == ".mcap")
    storage.write_bytes(storage.read_bytes()[: storage.stat().st_size // 2])
    assert cli.main(["bag-infer", str(broken), str(tmp_path / "out2"), "--model", setup["model"], "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "corrupt or truncated" in err and str(broken) in err
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out2.partial").exists()
    assert cli.main(["bag-infer", str(in_bag), str(tmp_path / "o3"), "--model", setup["model"],
                     "--image-topic", "/nope"]) == 1
    assert "no image topic '/nope'" in capsys.readouterr().err


def test_cli_bag_infer_ctrl_c_ends_with_the_resume_hint(setup: dict, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C (KeyboardInterrupt from the predictor at frame 3) ends with one line naming the partial output and
    --resume; the resumed run then finishes the bag."""
    import moge2_ros.cli as cli
    import moge2_ros.inference.factory as factory

    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", ("moge2_ros.pipeline.cli",))
    real = factory.load_predictor
    monkeypatch.setattr(factory, "load_predictor",
                        lambda options, say=None: _Counting(real(options, say), interrupt_at=3))
    in_bag, _ = setup["bags"]["sqlite3"]
    out = tmp_path / "out"
    args = ["bag-infer", str(in_bag), str(out), "--model", setup["model"], "--num-tokens", str(NUM_TOKENS),
            "--chunk-frames", "1", "--quiet"]
    assert cli.main(args) == 130
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert "Traceback" not in "\n".join(lines)
    assert "interrupted" in lines[-1] and "--resume" in lines[-1] and "out.partial" in lines[-1], lines
    monkeypatch.setattr(factory, "load_predictor", real)
    assert cli.main([*args, "--resume"]) == 0
    assert len(_messages(out, "/moge2/depth/image")) == 3


def test_cli_make_bag_from_a_folder_dataset(setup: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import moge2_ros.data.folder as folder
    import moge2_ros.cli as cli

    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", ("moge2_ros.data.cli",))
    for k, frame in enumerate(setup["frames"][:2]):
        folder.write_sample(tmp_path / "ds", f"f{k}", frame)
    assert cli.main(["make-bag", str(tmp_path / "ds"), str(tmp_path / "bag"), "--storage", "sqlite3",
                     "--depth-encoding", "32FC1"]) == 0
    from moge2_ros.data.bag import BagDataset

    dataset = BagDataset(tmp_path / "bag", "/camera/color/image_raw", depth_topic="/camera/aligned_depth_to_color/image_raw")
    for sample, frame in zip(dataset, setup["frames"]):
        np.testing.assert_array_equal(sample.image, frame.image)
        np.testing.assert_allclose(sample.depth, frame.depth, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_make_bag_from_sevenscenes_then_bag_infer(setup: dict, sevenscenes_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, storage: str) -> None:
    """The full-size path a user takes: make-bag from the 7-Scenes folder (registered depth) -> bag-infer."""
    import moge2_ros.data.sevenscenes as sevenscenes
    import moge2_ros.cli as cli
    from moge2_ros.data.bag import BagDataset

    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", ("moge2_ros.data.cli", "moge2_ros.pipeline.cli"))
    bag = tmp_path / "kitchen"
    assert cli.main(["make-bag", str(sevenscenes_dir), str(bag), "--storage", storage, "--image-format", "jpeg",
                     "--max-frames", "2"]) == 0
    source = sevenscenes.SevenScenesDataset(sevenscenes_dir)
    dataset = BagDataset(bag, "/camera/color/image_raw/compressed", depth_topic="/camera/aligned_depth_to_color/image_raw")
    for k, sample in enumerate(dataset):
        reference = source[k]
        assert sample.image.shape == (480, 640, 3)
        assert np.abs(sample.image.astype(int) - reference.image.astype(int)).mean() < 3.0
        np.testing.assert_array_equal(np.isnan(sample.depth), np.isnan(reference.depth))
        np.testing.assert_allclose(sample.depth, reference.depth, atol=0.0005)
        np.testing.assert_allclose(sample.intrinsics, reference.intrinsics)
    out = tmp_path / "kitchen_moge2"
    assert cli.main(["bag-infer", str(bag), str(out), "--model", setup["model"], "--num-tokens", str(NUM_TOKENS),
                     "--points", "--quiet"]) == 0
    with open_bag(bag) as src:
        stamps = [m.stamp_ns for m in src.messages(["/camera/color/image_raw/compressed"])]
    for topic in ("/moge2/depth/image", "/moge2/points", "/moge2/geometry", "/moge2/depth/camera_info"):
        assert [m.stamp_ns for m in _messages(out, topic)] == stamps
