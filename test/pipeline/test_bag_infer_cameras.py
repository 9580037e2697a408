"""``bag-infer`` with a distorted camera: the bag's CameraInfo (D, R, P) goes through the frame pipeline, so the
output depth/camera_info is the rectified camera (or, with ``output_grid="raw"``, the input CameraInfo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moge2_ros.bags.reader import open_bag
from moge2_ros.bags.writer import BagWriter
from moge2_ros.data.example import render_example_scene
from moge2_ros.inference import PredictorOptions
from moge2_ros.io import msg_codec as codec
from moge2_ros.pipeline.bag_infer import BagInferOptions, run_bag_infer

W, H = 64, 48
K = np.array([[50.0, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 1.0]])
P = np.array([[45.0, 0.0, 32.0, 0.0], [0.0, 45.0, 24.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
D = np.array([-0.3, 0.1, 0.001, -0.002, 0.0])
START_NS = 1_700_000_000_000_000_000


@pytest.fixture(scope="module")
def distorted_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cameras") / "in"
    info = codec.CameraInfoFields(height=H, width=W, distortion_model="plumb_bob", d=D, k=K.ravel(),
                                  r=np.eye(3).ravel(), p=P.ravel())
    with BagWriter(path, "mcap") as writer:
        writer.add_topic("/cam/image_raw", "sensor_msgs/msg/Image")
        writer.add_topic("/cam/camera_info", "sensor_msgs/msg/CameraInfo")
        for i in range(2):
            stamp = START_NS + i * 100_000_000
            rgb = render_example_scene(W, H, 70.0, camera_position=(0.1 * i, 0.0, 0.0)).rgb
            writer.write_camera_info("/cam/camera_info", stamp, "cam", info)
            writer.write_image("/cam/image_raw", stamp, "cam", codec.encode_rgb(rgb))
    return path


@pytest.mark.parametrize("grid", ["rectified", "raw"])
def test_bag_camera_info_is_rectified(distorted_bag: Path, tmp_path: Path, tiny_model_path: Path,
                                      grid: str) -> None:
    options = BagInferOptions(PredictorOptions(model=str(tiny_model_path), num_tokens=64, estimate_normals=False),
                              output_grid=grid)
    messages: list[str] = []
    report = run_bag_infer(distorted_bag, tmp_path / "out", options, progress=False, log=messages.append)
    assert report.frames == 2 and report.bad_frames == 0
    assert not any("ignored" in m for m in messages), messages
    with open_bag(tmp_path / "out") as bag:
        infos = [item.msg for item in bag.messages(["/moge2/depth/camera_info"])]
    assert len(infos) == 2
    for msg in infos:
        if grid == "rectified":
            np.testing.assert_array_equal(np.asarray(msg.k).reshape(3, 3), P[:, :3])
            np.testing.assert_array_equal(np.asarray(msg.d), np.zeros(5))
        else:
            np.testing.assert_array_equal(np.asarray(msg.k).reshape(3, 3), K)
            np.testing.assert_array_equal(np.asarray(msg.d), D)
            np.testing.assert_array_equal(np.asarray(msg.p).reshape(3, 4), P)


@pytest.mark.parametrize("flags, expect_k, warned", [([], P[:, :3], False), (["--output-grid", "raw"], K, False),
                                                     (["--no-rectify"], K, True)])
def test_cli_rectify_flags(distorted_bag: Path, tmp_path: Path, tiny_model_path: Path,
                           monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                           flags: list[str], expect_k: np.ndarray, warned: bool) -> None:
    """``--output-grid`` and ``--no-rectify`` reach the pipeline: the published K says which camera the depth is in,
    and only an unrectified distorted camera is warned about."""
    import moge2_ros.cli as cli

    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", ("moge2_ros.pipeline.cli",))
    out = tmp_path / "out"
    assert cli.main(["bag-infer", str(distorted_bag), str(out), "--model", str(tiny_model_path), "--num-tokens", "64",
                     "--precision", "fp32", *flags]) == 0
    with open_bag(out) as bag:
        infos = [item.msg for item in bag.messages(["/moge2/depth/camera_info"])]
    assert len(infos) == 2
    for msg in infos:
        np.testing.assert_array_equal(np.asarray(msg.k).reshape(3, 3), expect_k)
    said = capsys.readouterr()
    assert ("distortion (D = [-0.3, 0.1, 0.001, -0.002, 0]) that is ignored" in said.out + said.err) == warned
