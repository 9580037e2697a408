"""Benchmark runner: the official data layout (depth PNG codec, config, evaluation view), the folder format,
result tables, and the ``eval`` subcommand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from moge2_ros.data.moge_benchmark import (
    _rotation_to_z,
    official_eval_view,
    read_moge_depth_png,
    read_official_sample,
    write_moge_depth_png,
    write_official_sample,
)
from moge2_ros.data.sample import Sample
from moge2_ros.errors import DatasetError
from moge2_ros.eval.benchmark import BenchmarkDataset, load_benchmarks, markdown_table, run_benchmarks
from moge2_ros.geometry.intrinsics import pixel_to_normalized_intrinsics
from moge2_ros.geometry.projection import depth_to_points
from moge2_ros.inference.result import Geometry

FAST = {"align_resolution": (16, 16), "skip": ("points_affine_invariant", "depth_affine_invariant")}
PLANE_N, PLANE_D = np.array([0.2, -0.5, 1.0]), 3.0  # plane n . X = d in the camera frame


def _plane_sample(h: int = 48, w: int = 64, cx: float | None = None, cy: float | None = None, seed: int = 0) -> Sample:
    """A tilted plane with a box in front (metric depth), random texture, pixel K with the given principal point."""
    k = np.array([[0.9 * w, 0, (w - 1) / 2 if cx is None else cx], [0, 0.9 * w, (h - 1) / 2 if cy is None else cy],
                  [0, 0, 1.0]])
    jj, ii = np.meshgrid(np.arange(w), np.arange(h))
    x, y = (jj - k[0, 2]) / k[0, 0], (ii - k[1, 2]) / k[1, 1]
    depth = (PLANE_D / (PLANE_N[0] * x + PLANE_N[1] * y + PLANE_N[2])).astype(np.float32)
    depth[h // 4: h // 2, w // 4: w // 2] = 1.5
    depth[:2, :2] = np.nan
    image = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)
    return Sample(image=image, depth=depth, intrinsics=k, is_metric=True, source=f"plane{seed}")


class ScaledTruthPredictor:
    """A stand-in model: the ground truth depth of the sample with this image, times ``scale``."""

    def __init__(self, samples, scale: float) -> None:
        self.by_image = {s.image.tobytes(): s for s in samples}
        self.scale = scale

    def predict(self, image, intrinsics=None, fov_x=None):
        sample = self.by_image[np.asarray(image).tobytes()]
        h, w = sample.depth.shape
        d = torch.from_numpy(sample.depth * self.scale)[None]
        k = torch.from_numpy(sample.intrinsics).float()[None]
        mask = torch.isfinite(d)
        points = depth_to_points(torch.nan_to_num(d, nan=1.0), pixel_to_normalized_intrinsics(k, w, h))
        fov = torch.zeros(1)
        return Geometry(points=torch.where(mask[..., None], points, torch.nan), depth=d, mask=mask, normal=None,
                        intrinsics=k, metric_scale=torch.ones(1), fov_x=fov, fov_y=fov, intrinsics_estimated=True,
                        num_tokens=0)


def test_depth_png_codec_round_trip(tmp_path):
    depth = np.random.default_rng(1).uniform(0.5, 20.0, (30, 40)).astype(np.float32)
    depth[0, :5] = np.nan
    depth[1, :3] = np.inf
    back = read_moge_depth_png(write_moge_depth_png(tmp_path / "d.png", depth))
    assert np.isnan(back[0, :5]).all() and np.isinf(back[1, :3]).all()
    ok = np.isfinite(depth)
    step = (20.0 / 0.5) ** (1 / 65533) - 1  # relative quantisation of the log encoding
    assert np.nanmax(np.abs(back[ok] / depth[ok] - 1)) <= step
    from PIL import Image

    Image.fromarray(np.zeros((4, 4), np.uint16)).save(tmp_path / "plain.png")
    with pytest.raises(DatasetError, match="near.*far"):
        read_moge_depth_png(tmp_path / "plain.png")


def test_eval_view_identity_for_centred_camera():
    sample = _plane_sample()
    view = official_eval_view(sample, sample.width, sample.height)
    assert np.array_equal(np.isnan(view.depth), np.isnan(sample.depth))
    assert np.nanmax(np.abs(view.depth - sample.depth)) < 1e-5
    assert np.array_equal(view.image, sample.image)
    assert np.allclose(view.intrinsics, sample.intrinsics)


def test_eval_view_recentres_and_keeps_the_geometry():
    sample = _plane_sample(h=96, w=128, cx=50.0, cy=60.0)
    view = official_eval_view(sample, 80, 80)
    assert view.depth.shape == (80, 80) and view.image.shape == (80, 80, 3)
    assert view.intrinsics[0, 2] == pytest.approx(39.5) and view.intrinsics[1, 2] == pytest.approx(39.5)
    k_n = view.meta["normalized_intrinsics"]
    assert k_n[0, 0] == pytest.approx(k_n[1, 1])  # square target pixels
    # Every valid output pixel, back-projected and rotated back into the raw camera, lies on the same plane
    # (or on the box): the view changes the camera, not the scene.
    jj, ii = np.meshgrid(np.arange(80), np.arange(80))
    k = view.intrinsics
    pts = np.stack([(jj - k[0, 2]) / k[0, 0], (ii - k[1, 2]) / k[1, 1], np.ones_like(jj, dtype=float)], -1)
    pts = pts * view.depth[..., None]
    rot = _rotation_to_z(np.linalg.inv(sample.intrinsics) @ np.array([63.5, 47.5, 1.0]))
    raw = pts @ rot  # R^T p
    on_plane = np.abs(raw @ PLANE_N - PLANE_D) / PLANE_D < 0.02
    on_box = np.abs(raw[..., 2] - 1.5) < 0.02
    valid = np.isfinite(view.depth)
    assert valid.mean() > 0.9
    assert (on_plane | on_box)[valid].mean() > 0.99


def _write_official_benchmark(root, samples, names):
    root.mkdir(parents=True)
    for name, sample in zip(names, samples):
        write_official_sample(root / name, sample)
    (root / ".index.txt").write_text("\n".join(names) + "\n")


def test_official_layout_config_and_run(tmp_path):
    samples = [_plane_sample(seed=i) for i in range(3)]
    _write_official_benchmark(tmp_path / "data" / "Planes", samples, ["a", "b", "c"])
    config = {"Planes": {"path": "data/Planes", "width": 64, "height": 48, "split": ".index.txt",
                         "depth_unit": 1.0, "has_sharp_boundary": True, "include_segmentation": True}}
    (tmp_path / "bench.json").write_text(json.dumps(config))
    specs = load_benchmarks(tmp_path / "bench.json")
    assert len(specs) == 1 and specs[0].path == tmp_path / "data" / "Planes" and specs[0].depth_unit == 1.0
    dataset = BenchmarkDataset(specs[0])
    assert len(dataset) == 3
    raw, _ = read_official_sample(tmp_path / "data" / "Planes" / "a", 1.0)
    assert np.allclose(raw.intrinsics, samples[0].intrinsics)
    first = dataset[0]
    assert first.meta["id"] == "a" and first.meta["has_sharp_boundary"] and first.is_metric

    # The stand-in model sees the evaluation-view images (JPEG-decoded), and predicts 1.2 x the truth.
    predictor = ScaledTruthPredictor(list(dataset), 1.2)
    summary = run_benchmarks(specs, predictor, progress=False, output_dir=tmp_path / "out", **FAST)
    bench = summary["benchmarks"]["Planes"]
    assert bench["count"] == 3 and not bench["skipped"]
    assert bench["mean"]["depth_metric/rel"] == pytest.approx(0.2, abs=1e-5)
    assert bench["mean"]["depth_scale_invariant/rel"] == pytest.approx(0.0, abs=1e-5)
    assert bench["mean"]["boundary/radius1_f1"] == pytest.approx(1.0)
    assert summary["mean"]["depth_metric/rel"] == pytest.approx(0.2, abs=1e-5)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [s["id"] for s in saved["benchmarks"]["Planes"]["samples"]] == ["a", "b", "c"]
    table = (tmp_path / "out" / "results.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| Planes |"))
    assert "| 3 |" in row and "20.00" in row


def test_folder_format_benchmark_and_mean_over_benchmarks(tmp_path):
    from moge2_ros.data.folder import write_sample

    samples = [_plane_sample(seed=10 + i) for i in range(2)]
    for i, sample in enumerate(samples):
        write_sample(tmp_path / "mine", f"f{i}", sample)
    _write_official_benchmark(tmp_path / "official", [_plane_sample(seed=20)], ["x"])
    specs = load_benchmarks(tmp_path / "mine") + load_benchmarks(tmp_path / "official")
    assert [s.kind for s in specs] == ["folder", "moge-benchmark"]
    official = list(BenchmarkDataset(specs[1]))
    predictor = ScaledTruthPredictor(samples + official, 1.1)
    summary = run_benchmarks(specs, predictor, progress=False, **FAST)
    assert summary["benchmarks"]["mine"]["count"] == 2
    assert [s["id"] for s in summary["benchmarks"]["mine"]["samples"]] == ["f0", "f1"]
    # mean = mean of the benchmark means (official key_average over benchmarks)
    for key in ("depth_scale_invariant/rel", "points_scale_invariant/rel"):
        means = [summary["benchmarks"][n]["mean"][key] for n in ("mine", "official")]
        assert summary["mean"][key] == pytest.approx(sum(means) / 2)
    # an official folder without a config has no depth_unit: not metric (official semantics), so the metric
    # groups come from the folder-format benchmark alone
    assert "depth_metric/rel" not in summary["benchmarks"]["official"]["mean"]
    assert summary["mean"]["depth_metric/rel"] == pytest.approx(0.1, abs=1e-5)
    assert "official" not in summary["benchmarks"]["mine"]["spec"]["path"]
    md = markdown_table(summary)
    assert "| mine | 2 |" in md and "| **mean** | 3 |" in md


@pytest.mark.parametrize("config, match", [
    ({"B": {"path": "data", "bogus": 1}}, "unknown keys.*bogus"),
    ({"B": {"path": "nowhere"}}, "data folder not found"),
    ({"B": {"path": "data", "width": 64}}, "both 'width' and 'height'"),
    ({"B": {"path": "data", "depth_unit": -1}}, "depth_unit.*positive"),
    ([1, 2], "JSON object"),
])
def test_bad_configs_name_the_problem(tmp_path, config, match):
    (tmp_path / "data").mkdir()
    (tmp_path / "c.json").write_text(json.dumps(config))
    with pytest.raises(DatasetError, match=match):
        load_benchmarks(tmp_path / "c.json")


def test_sevenscenes_folder_as_a_benchmark(tmp_path, sevenscenes_dir):
    """Benchmarks are opened by open_dataset: a 7-Scenes folder is detected, or named in a config with "format"."""
    specs = load_benchmarks(sevenscenes_dir)
    assert [(s.kind, s.name) for s in specs] == [("sevenscenes", sevenscenes_dir.name)]
    (tmp_path / "c.json").write_text(json.dumps({"kitchen": {"path": str(sevenscenes_dir), "format": "sevenscenes",
                                                             "subset": 100}}))
    dataset = BenchmarkDataset(load_benchmarks(tmp_path / "c.json")[0])
    assert len(dataset) == 3
    first = dataset[1]
    from moge2_ros.data.sevenscenes import SevenScenesDataset

    assert first.meta["id"] == SevenScenesDataset(sevenscenes_dir).stems[100]
    assert first.is_metric and first.image.shape == (480, 640, 3)
    (tmp_path / "bad.json").write_text(json.dumps({"k": {"path": str(sevenscenes_dir), "format": "official"}}))
    with pytest.raises(DatasetError, match="'format' must be one of moge-benchmark, folder, sevenscenes"):
        load_benchmarks(tmp_path / "bad.json")


def test_unknown_folder_and_missing_files(tmp_path):
    with pytest.raises(DatasetError, match="neither a benchmark config"):
        load_benchmarks(tmp_path)
    _write_official_benchmark(tmp_path / "b", [_plane_sample()], ["s"])
    (tmp_path / "b" / "s" / "meta.json").unlink()
    dataset = BenchmarkDataset(load_benchmarks(tmp_path / "b")[0])
    with pytest.raises(DatasetError, match="meta.json"):
        dataset[0]
    # run_benchmarks records the broken sample instead of stopping
    summary = run_benchmarks(load_benchmarks(tmp_path / "b"), ScaledTruthPredictor([], 1.0), progress=False)
    assert summary["benchmarks"]["b"]["count"] == 0
    assert "meta.json" in summary["benchmarks"]["b"]["skipped"][0]["reason"]
    assert summary["mean"] == {}


def test_eval_cli_with_demo_model(tiny_model_path, tmp_path, monkeypatch, capsys):
    import moge2_ros.cli as cli

    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", ("moge2_ros.eval.cli",))
    _write_official_benchmark(tmp_path / "bench", [_plane_sample(seed=i) for i in range(2)], ["p", "q"])
    model = tiny_model_path
    out = tmp_path / "out"
    code = cli.main(["eval", "--model", str(model), "--benchmark", str(tmp_path / "bench"), "--output", str(out),
                     "--num-tokens", "100", "--device", "cpu", "--align-resolution", "16", "--skip",
                     "points_affine_invariant,depth_affine_invariant", "--quiet"])
    assert code == 0
    saved = json.loads((out / "results.json").read_text())
    bench = saved["benchmarks"]["bench"]
    assert bench["count"] + len(bench["skipped"]) == 2
    assert "| bench |" in capsys.readouterr().out
    assert cli.main(["eval", "--model", str(model), "--benchmark", str(tmp_path / "nope"), "-o", str(out)]) == 2
