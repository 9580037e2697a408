"""``bag-infer --anchor-topic`` (issue 14) on rendered frames with exact metric depth: a LiDAR-like cloud in its own
frame (transform from ``/tf_static``) and a rangefinder correct the bundled demo model's metric scale (about 2x too
small here); the TF chain, the explicit extrinsic, matching by stamp, resume, and the errors for a missing
transform, a malformed topic name and a wrong type."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bag_anchor_scenes import (INLIER_THRESHOLD, demo_predictor, geometries, infer_options, render_frames,
                               scale_errors, write_anchor_bag)

from moge2_ros.anchors import Extrinsic
from moge2_ros.bags import BagError
from moge2_ros.bags.reader import open_bag
from moge2_ros.bags.tf import TfEdge, TfTree
from moge2_ros.bags.writer import tf_message
from moge2_ros.data.make_bag import AnchorSensors
from moge2_ros.errors import InputError
from moge2_ros.pipeline.bag_anchors import BagAnchors, chain_extrinsic
from moge2_ros.pipeline.bag_infer import run_bag_infer


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("anchors")
    frames = render_frames()
    layout = write_anchor_bag(root / "in", frames)
    predictor = demo_predictor()
    network = run_bag_infer(root / "in", root / "network", infer_options(), progress=False, predictor=predictor)
    assert network.frames == len(frames)
    return {"root": root, "frames": frames, "layout": layout, "predictor": predictor,
            "network_errors": scale_errors(root / "network", frames)}


def _run(scene: dict, out: Path, in_bag: Path | None = None, **changes: Any) -> Any:
    options = infer_options(anchor_inlier_threshold=INLIER_THRESHOLD, **changes)
    return run_bag_infer(in_bag or scene["root"] / "in", out, options, progress=False, predictor=scene["predictor"])


def test_the_demo_model_is_wrong_without_anchors(scene: dict) -> None:
    errors = scene["network_errors"]
    assert np.all(errors > 1.3), errors  # what the anchors are there to fix
    assert {g.scale_source for g in geometries(scene["root"] / "network")} == {"network"}


def test_lidar_in_its_own_frame_gives_the_true_scale(scene: dict, tmp_path: Path) -> None:
    """The cloud is in frame 'lidar' (8 cm above the camera, body axes); the transform comes from /tf_static."""
    layout = scene["layout"]
    report = _run(scene, tmp_path / "out", anchor_topics=(layout.lidar_topic,), anchor_temporal=False)
    assert report.anchored_frames == len(scene["frames"]) and report.fallback_frames == 0
    assert report.anchor_readings == {layout.lidar_topic: {"used": 5, "no_reading": 0, "bad": 0, "no_transform": 0}}
    errors = scale_errors(tmp_path / "out", scene["frames"])
    np.testing.assert_allclose(errors, 1.0, atol=0.04)
    geos = geometries(tmp_path / "out")
    assert [g.scale_source for g in geos] == ["points"] * 5
    for geo, network in zip(geos, geometries(scene["root"] / "network")):
        assert geo.network_scale == pytest.approx(network.metric_scale, rel=1e-6)  # the network's own scale kept
        assert geo.metric_scale > 1.3 * geo.network_scale  # the applied one corrected
        assert geo.anchor_count >= 10 and 0 < geo.anchor_inliers <= geo.anchor_count


def test_explicit_extrinsic_equals_the_tf_chain(scene: dict, tmp_path: Path) -> None:
    layout = scene["layout"]
    sensors = AnchorSensors()
    _run(scene, tmp_path / "tf", anchor_topics=(layout.lidar_topic,), anchor_temporal=False, max_frames=2)
    _run(scene, tmp_path / "flag", anchor_topics=(layout.lidar_topic,), anchor_temporal=False, max_frames=2,
         anchor_extrinsics={layout.lidar_topic: list(sensors.lidar_to_camera)})
    assert [g.metric_scale for g in geometries(tmp_path / "tf")] == \
        pytest.approx([g.metric_scale for g in geometries(tmp_path / "flag")], rel=1e-9)
    # a wrong extrinsic (identity: the LiDAR's forward axis taken for the camera's x axis) does not anchor
    report = _run(scene, tmp_path / "wrong", anchor_topics=(layout.lidar_topic,), anchor_temporal=False, max_frames=2,
                  anchor_extrinsics={layout.lidar_topic: [0, 0, 0, 0, 0, 0, 1]})
    assert report.anchored_frames == 0 and report.fallback_frames == 2


def test_rangefinder_and_filtered_run(scene: dict, tmp_path: Path) -> None:
    """A single range cone (5 cm below the camera, from /tf_static) moves the scale towards the truth; with the
    temporal filter on, LiDAR + range give anchored frames and a summary of the fallbacks."""
    layout = scene["layout"]
    report = _run(scene, tmp_path / "range", anchor_topics=(layout.range_topic,), anchor_temporal=False, max_frames=3)
    assert report.anchored_frames == 3
    assert {g.scale_source for g in geometries(tmp_path / "range")} == {"range"}
    errors = scale_errors(tmp_path / "range", scene["frames"][:3])  # the demo model's coarse shape limits one cone
    assert np.all(np.abs(np.log(errors)) < np.abs(np.log(scene["network_errors"][:3]))), errors
    report = _run(scene, tmp_path / "both", anchor_topics=(layout.lidar_topic, layout.range_topic))
    assert report.anchored_frames >= 1 and report.anchored_frames + report.fallback_frames == 5
    assert sum(report.fallback_reasons.values()) >= report.fallback_frames
    assert all("#" in r or not any(c.isdigit() for c in r) for r in report.fallback_reasons)


def test_recorded_sensors_give_the_exact_scale_of_a_perfect_shape(scene: dict) -> None:
    """The bag's LiDAR and range readings, converted and moved into the camera frame by the /tf_static chain
    (BagAnchors), anchor a prediction that is the exact geometry at half the scale: the applied factor is 2
    (LiDAR within 1 %, the single range cone within 3 %): the simulated sensors and the transforms are exact."""
    from moge2_ros.anchors import AnchorConfig, ScaleAnchoring

    layout = scene["layout"]
    with open_bag(scene["root"] / "in") as bag:
        anchors = BagAnchors(scene["root"] / "in", bag, [layout.lidar_topic, layout.range_topic])
        try:
            for frame, stamp in zip(scene["frames"], layout.stamps_ns):
                readings = anchors.readings(stamp, layout.frame_id)
                assert [type(r).__name__ for r in readings] == ["PointCloudAnchor", "RangeAnchor"]
                k, depth = frame.intrinsics, frame.depth.astype(np.float64)
                v, u = np.mgrid[0:depth.shape[0], 0:depth.shape[1]]
                truth = np.stack([(u - k[0, 2]) / k[0, 0] * depth, (v - k[1, 2]) / k[1, 1] * depth, depth], -1)
                for reading, tolerance in zip(readings, (0.01, 0.03)):
                    anchoring = ScaleAnchoring(AnchorConfig(temporal=False))
                    decision = anchoring.update(truth / 2, np.isfinite(depth), k, 1.0, [reading])
                    assert decision.anchored, decision.reason
                    assert decision.factor == pytest.approx(2.0, rel=tolerance)
        finally:
            anchors.close()


def test_depth_anchor_modes_and_camera_height(scene: dict, tmp_path: Path) -> None:
    """The registered 32FC1 depth topic as an anchor: mode scale gives the true scale; mode complete publishes the
    sensor depth where it is valid (here: everywhere).  A camera height on the demo model, whose floor is not flat
    enough, falls back to the network's scale with the reason, never a wrong scale."""
    layout = scene["layout"]
    report = _run(scene, tmp_path / "depth", anchor_topics=(layout.depth_topic,), anchor_temporal=False,
                  max_frames=2)
    assert report.anchored_frames == 2 and {g.scale_source for g in geometries(tmp_path / "depth")} == {"depth"}
    np.testing.assert_allclose(scale_errors(tmp_path / "depth", scene["frames"][:2]), 1.0, atol=0.03)
    _run(scene, tmp_path / "complete", anchor_topics=(layout.depth_topic,), anchor_temporal=False, max_frames=2,
         anchor_mode="complete")
    np.testing.assert_allclose(scale_errors(tmp_path / "complete", scene["frames"][:2]), 1.0, atol=1e-4)
    report = _run(scene, tmp_path / "height", camera_height=1.2, anchor_temporal=False, max_frames=2)
    assert report.anchored_frames == 0 and report.fallback_frames == 2
    assert any(reason.startswith("ground:") for reason in report.fallback_reasons), report.fallback_reasons
    for geo, network in zip(geometries(tmp_path / "height"), geometries(scene["root"] / "network")):
        assert geo.scale_source == "network" and geo.metric_scale == pytest.approx(network.metric_scale, rel=1e-6)


def test_transforms_from_dynamic_tf(scene: dict, tmp_path: Path) -> None:
    """The sensor transforms on /tf (one per frame) instead of /tf_static: looked up at each reading's stamp."""
    layout = write_anchor_bag(tmp_path / "dyn", scene["frames"][:2], tf_dynamic=True)
    with open_bag(tmp_path / "dyn") as bag:
        assert "/tf" in bag.topics and "/tf_static" not in bag.topics
    report = _run(scene, tmp_path / "out", in_bag=tmp_path / "dyn", anchor_topics=(layout.lidar_topic,),
                  anchor_temporal=False)
    assert report.anchored_frames == 2
    assert report.anchor_readings[layout.lidar_topic]["no_transform"] == 0
    np.testing.assert_allclose(scale_errors(tmp_path / "out", scene["frames"][:2]), 1.0, atol=0.04)


def test_stale_readings_are_counted_and_the_frame_falls_back(scene: dict, tmp_path: Path) -> None:
    frames = scene["frames"][:2]
    in_bag = tmp_path / "late"
    from moge2_ros.data.make_bag import write_samples_bag

    layout = write_samples_bag(in_bag, frames, "mcap", depth_offset_ns=50_000_000, anchors=AnchorSensors())
    report = _run(scene, tmp_path / "out", in_bag=in_bag, anchor_topics=(layout.lidar_topic,),
                  anchor_max_age=0.02, anchor_temporal=False)
    assert report.anchored_frames == 0 and report.fallback_frames == 2
    assert report.anchor_readings[layout.lidar_topic]["no_reading"] == 2
    report = _run(scene, tmp_path / "ok", in_bag=in_bag, anchor_topics=(layout.lidar_topic,),
                  anchor_max_age=0.06, anchor_temporal=False)
    assert report.anchored_frames == 2


def test_missing_transform_is_a_clear_error(scene: dict, tmp_path: Path) -> None:
    frames = scene["frames"][:2]
    layout = write_anchor_bag(tmp_path / "no_tf", frames, tf_static=False)
    with pytest.raises(BagError) as info:
        _run(scene, tmp_path / "out", in_bag=tmp_path / "no_tf", anchor_topics=(layout.lidar_topic,))
    text = str(info.value)
    assert "no transform from frame 'lidar' to frame 'camera_color_optical_frame'" in text
    assert f"--anchor-extrinsic {layout.lidar_topic}=" in text and "/tf_static" in text
    assert not (tmp_path / "out").exists()
    # the flag instead of /tf_static
    report = _run(scene, tmp_path / "out", in_bag=tmp_path / "no_tf", anchor_topics=(layout.lidar_topic,),
                  anchor_temporal=False, anchor_extrinsics={layout.lidar_topic: list(AnchorSensors().lidar_to_camera)})
    assert report.anchored_frames == 2


@pytest.mark.parametrize("topic, message", [
    ("camera/lidar/scan", "expected an absolute topic name"),
    ("/camera/lidar scan", "expected an absolute topic name"),
    ("/camera/lidar/points", "no anchor topic /camera/lidar/points in the bag; topics of an anchor type"),
    ("/camera/color/camera_info", "is sensor_msgs/msg/CameraInfo; expected sensor_msgs/msg/PointCloud2"),
    ("/camera/color/image_raw", "is an Image with encoding 'rgb8'; a depth anchor must be 32FC1 or 16UC1"),
])
def test_bad_anchor_topics_are_clear_errors(scene: dict, tmp_path: Path, topic: str, message: str) -> None:
    with pytest.raises(BagError, match=message):
        _run(scene, tmp_path / "out", anchor_topics=(topic,))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_bad_anchor_options(scene: dict, tmp_path: Path) -> None:
    layout = scene["layout"]
    with pytest.raises(InputError, match="not an --anchor-topic"):
        _run(scene, tmp_path / "a", anchor_topics=(layout.lidar_topic,),
             anchor_extrinsics={layout.range_topic: [0, 0, 0, 0, 0, 0, 1]})
    with pytest.raises(InputError, match="quaternion norm"):
        _run(scene, tmp_path / "b", anchor_topics=(layout.lidar_topic,),
             anchor_extrinsics={layout.lidar_topic: [0, 0, 0, 0, 0, 0, 2]})
    with pytest.raises(InputError, match="anchor_mode"):
        _run(scene, tmp_path / "c", anchor_topics=(layout.lidar_topic,), anchor_mode="median")
    with pytest.raises(BagError, match="more than once"):
        _run(scene, tmp_path / "d", anchor_topics=(layout.lidar_topic, layout.lidar_topic))


def test_resume_keeps_the_anchor_options(scene: dict, tmp_path: Path) -> None:
    layout = scene["layout"]

    class Interrupting:
        def __init__(self, inner: Any, at: int) -> None:
            self.inner, self.calls, self.at = inner, 0, at
            self.max_pixels, self.model_id, self.pixel_limit = inner.max_pixels, inner.model_id, inner.pixel_limit

        def predict(self, *args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == self.at:
                raise KeyboardInterrupt
            return self.inner.predict(*args, **kwargs)

    options = infer_options(anchor_inlier_threshold=INLIER_THRESHOLD, anchor_topics=(layout.lidar_topic,),
                            anchor_temporal=False, chunk_frames=2)
    with pytest.raises(KeyboardInterrupt):
        run_bag_infer(scene["root"] / "in", tmp_path / "out", options, progress=False,
                      predictor=Interrupting(scene["predictor"], 4))
    other = infer_options(anchor_inlier_threshold=INLIER_THRESHOLD, anchor_topics=(layout.lidar_topic,),
                          anchor_temporal=False, chunk_frames=2, anchor_max_age=0.5)
    with pytest.raises(BagError, match="cannot resume.*options"):
        run_bag_infer(scene["root"] / "in", tmp_path / "out", other, resume=True, progress=False,
                      predictor=scene["predictor"])
    report = run_bag_infer(scene["root"] / "in", tmp_path / "out", options, resume=True, progress=False,
                           predictor=scene["predictor"])
    assert report.resumed_frames == 2 and report.frames == 5 and report.anchored_frames == 5
    np.testing.assert_allclose(scale_errors(tmp_path / "out", scene["frames"]), 1.0, atol=0.04)


def test_cli_anchor_flags(scene: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    import moge2_ros.cli as cli
    import moge2_ros.inference.factory as factory

    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", ("moge2_ros.pipeline.cli",))
    monkeypatch.setattr(factory, "load_predictor", lambda options, say=None: scene["predictor"])
    layout = scene["layout"]
    base = ["bag-infer", str(scene["root"] / "in"), str(tmp_path / "out"), "--quiet"]
    for bad, message in [(["--anchor-extrinsic", f"{layout.lidar_topic}=1,2,3"], "expected TOPIC=tx,ty,tz"),
                         (["--anchor-extrinsic", "/x=0,0,0,0,0,0,1"], "not one of the --anchor-topic values"),
                         (["--anchor-extrinsic", f"{layout.lidar_topic}=0,0,0,0,0,0,3"], "quaternion norm"),
                         (["--camera-up", "0,0"], "--camera-up '0,0'")]:
        assert cli.main([*base, "--anchor-topic", layout.lidar_topic, *bad]) == 2
        assert message in capsys.readouterr().err
    args = ["bag-infer", str(scene["root"] / "in"), str(tmp_path / "out"), "--anchor-topic", layout.lidar_topic,
            "--anchor-topic", layout.range_topic, "--no-anchor-filter", "--anchor-inlier-threshold",
            str(INLIER_THRESHOLD)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "metric anchors: 5 frames anchored, 0 kept the network's" in out
    assert f"{layout.lidar_topic}: used 5, no_reading 0, bad 0, no_transform 0" in out
    assert {g.scale_source for g in geometries(tmp_path / "out")} == {"points+range"}


# ------------------------------------------------------------------------------------------------ transforms


def _edge(parent: str, child: str, values: tuple[float, ...], stamp_ns: int = 0, static: bool = True) -> TfEdge:
    (item,) = tf_message([(stamp_ns, parent, child, values)]).transforms
    return TfEdge(parent, child, item.transform, stamp_ns, static)


def _matrix(values: tuple[float, ...]) -> np.ndarray:
    r, t = Extrinsic(values[:3], values[3:]).matrix()
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = r, t
    return m


def test_tf_chain_composition_through_a_common_parent() -> None:
    """base_link -> camera_link -> camera_optical and base_link -> lidar: lidar -> camera_optical is
    inv(T_base_optical) T_base_lidar, whatever the path's directions."""
    rng = np.random.default_rng(0)

    def random_values() -> tuple[float, ...]:
        q = rng.normal(size=4)
        return tuple(rng.normal(size=3)) + tuple(q / np.linalg.norm(q))

    a, b, c = random_values(), random_values(), random_values()
    tree = TfTree()
    tree.add(_edge("base_link", "camera_link", a))
    tree.add(_edge("/camera_link", "camera_optical", b))  # a leading slash is ignored
    tree.add(_edge("base_link", "lidar", c))
    expected = np.linalg.inv(_matrix(a) @ _matrix(b)) @ _matrix(c)
    ext = chain_extrinsic(tree.chain("lidar", "camera_optical"))
    r, t = ext.matrix()
    np.testing.assert_allclose(r, expected[:3, :3], atol=1e-9)
    np.testing.assert_allclose(t, expected[:3, 3], atol=1e-9)
    assert tree.chain("lidar", "/lidar") == []
    with pytest.raises(BagError, match="no transform from frame 'lidar' to frame 'map'.*base_link"):
        tree.chain("lidar", "map")


def test_tf_dynamic_edges_by_nearest_stamp_and_loops() -> None:
    tree = TfTree()
    for k in range(3):
        tree.add(_edge("odom", "base", (float(k), 0, 0, 0, 0, 0, 1), stamp_ns=k * 100, static=False))
    ((edge, inverse),) = tree.chain("base", "odom", stamp_ns=180)
    assert not inverse and edge.transform.translation.x == 2.0
    with pytest.raises(BagError, match="within"):
        tree.chain("base", "odom", stamp_ns=500, tolerance_ns=50)
    tree.add(_edge("base", "odom", (0, 0, 0, 0, 0, 0, 1)))
    with pytest.raises(BagError, match="loop"):
        tree.chain("base", "map")
    with pytest.raises(BagError, match="its own parent"):
        tree.add(_edge("x", "x", (0, 0, 0, 0, 0, 0, 1)))


def test_tf_from_bag_reads_tf_static(scene: dict) -> None:
    with open_bag(scene["root"] / "in") as bag:
        tree = TfTree.from_bag(bag)
        assert tree.frames == ["camera_color_optical_frame", "lidar", "rangefinder"]
        anchors = BagAnchors(scene["root"] / "in", bag, [scene["layout"].lidar_topic])
        try:
            assert anchors.kinds == {scene["layout"].lidar_topic: "points"}
        finally:
            anchors.close()
