"""bag-eval: predictions in a rosbag2 recording against ground-truth depth / LiDAR, per-frame and summary metrics,
scale drift and flicker, outputs and report; end to end with bag-infer (slow)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from moge2_ros.bags import BagError
from moge2_ros.data.bag import BagDataset
from moge2_ros.data.make_bag import write_samples_bag
from moge2_ros.bags.writer import BagWriter
from moge2_ros.data.sevenscenes import SevenScenesDataset
from moge2_ros.eval.bag_eval import BagEvalConfig, evaluate_bag
from moge2_ros.eval.bag_eval_report import write_bag_eval_outputs
from moge2_ros.eval.metrics import evaluate_geometry
from moge2_ros.eval.report import read_report_data
from moge2_ros.geometry.intrinsics import pixel_to_normalized_intrinsics
from moge2_ros.geometry.projection import depth_to_points
from moge2_ros.inference.result import Geometry
from moge2_ros.io import msg_codec as codec

FRAMES = [0, 10, 20, 30]
SCALES = [1.0, 1.1, 1.2, 1.15]  # per-frame metric-scale error of the fake predictions
# Fast, non-official metric settings (the 64x64 affine solvers take seconds per frame on a CPU).
FAST = {"align_resolution": (24, 24), "skip": ("points_affine_invariant", "depth_affine_invariant")}
DEPTH_TOPIC = "/camera/aligned_depth_to_color/image_raw"


@pytest.fixture(scope="module")
def samples(sevenscenes_dir):
    return list(SevenScenesDataset(sevenscenes_dir, indices=FRAMES))


def _fake_prediction(depth: np.ndarray, scale: float) -> np.ndarray:
    pred = np.where(np.isfinite(depth), depth * scale, np.nan).astype(np.float32)
    pred[:, :40] = np.nan  # a strip the "model" rejects
    return pred


def _write_prediction_bag(path: Path, samples, stamps, frame_id: str, k_scale: float = 1.0) -> None:
    with BagWriter(path, "mcap") as bag:
        for sample, stamp, scale in zip(samples, stamps, SCALES):
            h, w = sample.depth.shape
            k = np.array(sample.intrinsics, dtype=np.float64)
            k[0, 0] *= k_scale
            bag.write_image("/moge2/depth/image", stamp, frame_id, codec.encode_depth(_fake_prediction(
                sample.depth, scale), "32FC1"))
            bag.write_camera_info("/moge2/depth/camera_info", stamp, frame_id, codec.encode_camera_info(k, w, h))


@pytest.fixture(scope="module")
def bags(samples, tmp_path_factory):
    root = tmp_path_factory.mktemp("bag_eval")
    layout = write_samples_bag(root / "gt", samples, "sqlite3", with_cloud=True)
    _write_prediction_bag(root / "pred", samples, layout.stamps_ns, layout.frame_id)
    return root, layout


def _geometry(depth: np.ndarray, k_px: np.ndarray) -> Geometry:
    h, w = depth.shape
    d = torch.from_numpy(depth)[None]
    k = torch.from_numpy(k_px).float()[None]
    mask = torch.isfinite(d)
    points = depth_to_points(torch.nan_to_num(d, nan=1.0), pixel_to_normalized_intrinsics(k, w, h))
    points = torch.where(mask[..., None], points, torch.nan)
    fov = torch.zeros(1)
    return Geometry(points=points, depth=d, mask=mask, normal=None, intrinsics=k, metric_scale=torch.ones(1),
                    fov_x=fov, fov_y=fov, intrinsics_estimated=False, num_tokens=0)


def test_bag_eval_equals_in_memory_evaluation(bags, tmp_path):
    root, layout = bags
    config = BagEvalConfig(pred_bag=root / "pred", gt_bag=root / "gt",
                           gt_depth_topic="aligned_depth_to_color/image_raw", **FAST)
    result = evaluate_bag(config, progress=False)
    assert result.summary["frames_evaluated"] == len(FRAMES) and not result.skipped
    assert result.config["gt_depth_topic"] == DEPTH_TOPIC  # resolved from its ending
    assert [r["stamp_ns"] for r in result.per_frame] == layout.stamps_ns

    gt_frames = BagDataset(root / "gt", layout.image_topic, depth_topic=DEPTH_TOPIC)  # what the bag holds (mm depth)
    evaluated_pixels = 0
    for record, sample, scale in zip(result.per_frame, gt_frames, SCALES):
        prediction = _fake_prediction(sample.depth, scale)
        evaluated_pixels += int((np.isfinite(prediction) & np.isfinite(sample.depth)).sum())
        expected = evaluate_geometry(_geometry(prediction, sample.intrinsics), sample, **FAST)
        for key, value in expected.items():
            assert record[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
        # hand-checkable: a uniformly scaled prediction
        assert record["depth_metric/rel"] == pytest.approx(scale - 1, abs=1e-5)
        assert record["depth_scale_invariant/rel"] == pytest.approx(0.0, abs=1e-5)
        assert record["disparity_affine_invariant/rel"] == pytest.approx(0.0, abs=1e-5)
        assert record["scale"] == pytest.approx(1 / scale, rel=1e-5)
        assert record["fov_x/mae"] == pytest.approx(0.0, abs=1e-4)

    # temporal stability: the error changes by log(s_t / s_t-1) at every pixel
    flick = [r["depth_flicker"] for r in result.per_frame]
    assert math.isnan(flick[0])
    for t in range(1, len(SCALES)):
        step = abs(math.log(SCALES[t] / SCALES[t - 1]))
        assert flick[t] == pytest.approx(step, abs=1e-5)
        assert result.per_frame[t]["scale_flicker"] == pytest.approx(step, abs=1e-5)
    # drift: the fitted scale line falls over the 0.3 s span
    times = np.array([r["time_s"] for r in result.per_frame])
    slope = np.polyfit(times, 1 / np.array(SCALES), 1)[0]
    assert result.summary["scale_drift"] == pytest.approx(slope * np.ptp(times) / np.mean(1 / np.array(SCALES)),
                                                          rel=1e-4)
    assert result.summary["scale_drift"] < 0
    assert result.summary["depth_metric/rel"] == pytest.approx(np.mean(SCALES) - 1, abs=1e-5)

    # error vs range: a uniform scale error is the same in every range bin
    rb = result.range_bins
    filled = [v for v, c in zip(rb["abs_rel"], rb["count"]) if c > 0]
    assert len(filled) >= 3 and all(0.0 <= v <= 0.2 + 1e-6 for v in filled)
    assert sum(rb["count"]) == evaluated_pixels

    paths = write_bag_eval_outputs(result, tmp_path / "out")
    data = read_report_data(paths["report"])
    assert len(data["per_frame"]) == len(FRAMES)
    for shown, record in zip(data["per_frame"], result.per_frame):
        for key, value in record.items():
            if isinstance(value, float) and not math.isfinite(value):
                assert shown[key] is None
            else:
                assert shown[key] == value
    saved = json.loads(paths["json"].read_text())
    assert saved["summary"]["frames_evaluated"] == len(FRAMES)
    with paths["csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert float(rows[2]["depth_metric/rel"]) == pytest.approx(result.per_frame[2]["depth_metric/rel"])
    html = paths["report"].read_text()
    assert html.count("<svg") >= 6 and html.count("data:image/png;base64,") >= 4 * 4


def test_bag_eval_lidar_ground_truth(bags):
    root, layout = bags
    result = evaluate_bag(BagEvalConfig(pred_bag=root / "pred", gt_bag=root / "gt", gt_cloud_topic="lidar/points",
                                        sample_images=0, **FAST), progress=False)
    assert result.summary["frames_evaluated"] == len(FRAMES)
    for record, scale in zip(result.per_frame, SCALES):
        assert record["depth_metric/rel"] == pytest.approx(scale - 1, abs=1e-4)
        assert 0.5 < record["coverage"] <= 1.0


def test_bag_eval_reports_estimated_intrinsics_error(bags, samples, tmp_path):
    root, layout = bags
    _write_prediction_bag(tmp_path / "pred_wide", samples, layout.stamps_ns, layout.frame_id, k_scale=0.9)
    result = evaluate_bag(BagEvalConfig(pred_bag=tmp_path / "pred_wide", gt_bag=root / "gt",
                                        gt_depth_topic=DEPTH_TOPIC, sample_images=0, max_frames=1, **FAST),
                          progress=False)
    fx, w = samples[0].intrinsics[0, 0], samples[0].width
    expected = math.degrees(2 * math.atan(w / (2 * 0.9 * fx)) - 2 * math.atan(w / (2 * fx)))
    assert result.per_frame[0]["fov_x/deviation"] == pytest.approx(expected, abs=1e-3)


def test_bag_eval_clear_errors(bags, samples, tmp_path):
    root, layout = bags
    with pytest.raises(BagError, match="ground-truth depth.*candidates.*aligned_depth_to_color"):
        evaluate_bag(BagEvalConfig(pred_bag=root / "pred", gt_bag=root / "gt", gt_depth_topic="no/such/depth"),
                     progress=False)
    shifted = [s + 10**9 for s in layout.stamps_ns]  # predictions 1 s late: 0.7 s after the last frame
    _write_prediction_bag(tmp_path / "late", samples, shifted, layout.frame_id)
    with pytest.raises(BagError, match=r"within 5 ms.*nearest offset 700\.0 ms"):
        evaluate_bag(BagEvalConfig(pred_bag=tmp_path / "late", gt_bag=root / "gt", gt_depth_topic=DEPTH_TOPIC),
                     progress=False)


def test_bag_eval_cli(bags, tmp_path, monkeypatch, capsys):
    import moge2_ros.cli as cli

    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", ("moge2_ros.eval.cli",))
    root, _ = bags
    out = tmp_path / "report"
    code = cli.main(["bag-eval", str(root / "pred"), "--gt-bag", str(root / "gt"), "--gt-depth-topic", DEPTH_TOPIC,
                     "--align-resolution", "24", "--skip", "points_affine_invariant,depth_affine_invariant",
                     "--max-frames", "2", "--sample-images", "1", "--output", str(out), "--quiet"])
    assert code == 0
    assert (out / "report.html").is_file() and (out / "metrics.json").is_file() and (out / "frames.csv").is_file()
    assert "2 frames evaluated" in capsys.readouterr().out
    assert cli.main(["bag-eval", str(tmp_path / "missing"), "--gt-depth-topic", "x", "-o", str(out)]) == 2
    assert cli.main(["bag-eval", str(root / "pred"), "--gt-depth-topic", "x", "--skip", "bogus", "-o", str(out)]) == 2
    assert "unknown metric group" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_end_to_end_bag_infer_then_bag_eval(sevenscenes_dir, tiny_model_path, tmp_path, storage):
    """7-Scenes bag -> bag-infer (demo model) -> bag-eval: the report's numbers equal the in-memory evaluation of
    the same model on the same frames."""
    from moge2_ros import Predictor, load_model
    from moge2_ros.inference import PredictorOptions
    from moge2_ros.pipeline.bag_infer import BagInferOptions, run_bag_infer

    frames = list(SevenScenesDataset(sevenscenes_dir, indices=[0, 60]))
    layout = write_samples_bag(tmp_path / "in", frames, storage)
    model_path = tiny_model_path
    run_bag_infer(tmp_path / "in", tmp_path / "pred", BagInferOptions(PredictorOptions(
        model=str(model_path), num_tokens=300, device="cpu", estimate_normals=False)), progress=False)
    result = evaluate_bag(BagEvalConfig(pred_bag=tmp_path / "pred", gt_bag=tmp_path / "in",
                                        gt_depth_topic=DEPTH_TOPIC, sample_images=1, **FAST), progress=False)
    paths = write_bag_eval_outputs(result, tmp_path / "eval")
    shown = read_report_data(paths["report"])["per_frame"]
    assert len(shown) == len(frames)

    predictor = Predictor(load_model(str(model_path), device="cpu"), device="cpu", num_tokens=300,
                          estimate_normals=False)
    gt_frames = BagDataset(tmp_path / "in", layout.image_topic, depth_topic=DEPTH_TOPIC)
    for record, sample in zip(shown, gt_frames):
        geometry = predictor.predict(sample.image, intrinsics=sample.intrinsics)
        expected = evaluate_geometry(geometry, sample, **FAST)
        for key, value in expected.items():
            if value is None or not math.isfinite(value):
                continue
            # depth travels bit-exactly (32FC1); points are re-projected from it (float32 rounding). The affine
            # disparity fit is an exact truncated-L1 search over candidate pairs: with the untrained model's nearly
            # piecewise-constant depth, near-ties let last-bit differences pick another optimum (seen: 1e-3).
            tol = 1e-5 if key.startswith(("depth", "coverage", "fov")) else 1e-4
            if key.startswith("disparity_affine_invariant"):
                tol = 5e-3
            assert record[key] == pytest.approx(value, rel=tol, abs=tol), key
