"""``bag-eval --compare`` (issue 14): the network's and the anchored predictions of one rendered recording (exact
metric depth) evaluated against the same ground truth, side by side: the LiDAR-anchored bag has the lower metric
AbsRel, the higher δ1, a metric scale within a few % and less scale flicker; the CLI writes the table and both
reports and refuses bad --labels."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from bag_anchor_scenes import INLIER_THRESHOLD, demo_predictor, infer_options, render_frames, write_anchor_bag

from moge2_ros.eval.bag_eval import BagEvalConfig, evaluate_bag
from moge2_ros.eval.bag_eval_compare import comparison, default_label
from moge2_ros.pipeline.bag_infer import run_bag_infer

#: The slow alignment groups are not what this compares.
FAST = {"align_resolution": (24, 24), "skip": ("points_affine_invariant", "depth_affine_invariant"),
        "sample_images": 0}


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("compare")
    layout = write_anchor_bag(root / "in", render_frames())
    predictor = demo_predictor()
    run_bag_infer(root / "in", root / "network", infer_options(), progress=False, predictor=predictor)
    run_bag_infer(root / "in", root / "anchored",
                  infer_options(anchor_topics=(layout.lidar_topic,), anchor_temporal=False,
                                anchor_inlier_threshold=INLIER_THRESHOLD), progress=False, predictor=predictor)
    config = BagEvalConfig(pred_bag=root / "network", gt_bag=root / "in", gt_depth_topic=layout.depth_topic, **FAST)
    network = evaluate_bag(config, progress=False)
    anchored = evaluate_bag(BagEvalConfig(pred_bag=root / "anchored", gt_bag=root / "in",
                                          gt_depth_topic=layout.depth_topic, **FAST), progress=False)
    return {"root": root, "layout": layout, "network": network, "anchored": anchored}


def test_anchored_beats_the_network_side_by_side(bags: dict) -> None:
    network, anchored = bags["network"], bags["anchored"]
    assert default_label(network, "a") == "network" and default_label(anchored, "b") == "anchored"
    record = comparison([("network", network), ("anchored", anchored)])
    rows = {row["key"]: row["values"] for row in record["rows"]}
    assert rows["frames_evaluated"] == [5, 5]
    assert rows["anchored_fraction"] == [0.0, 1.0]
    net_rel, anc_rel = rows["depth_metric/rel"]
    assert anc_rel < 0.6 * net_rel, rows["depth_metric/rel"]
    assert rows["depth_metric/delta1"][1] > rows["depth_metric/delta1"][0] + 0.3
    net_scale, anc_scale = rows["scale"]
    assert net_scale > 1.3 and abs(math.log(anc_scale)) < 0.04, rows["scale"]
    # scale flicker: the anchored scale error hardly changes from frame to frame; the network's follows its bias
    assert rows["scale_flicker_median"][1] < 0.5 * rows["scale_flicker_median"][0], rows["scale_flicker_median"]
    for key in ("applied_scale_flicker", "depth_flicker"):
        assert all(math.isfinite(v) and v >= 0 for v in rows[key]), (key, rows[key])
    per_frame = anchored.per_frame
    assert [r["scale_source"] for r in per_frame] == ["points"] * 5
    assert all(r["model_metric_scale"] > 1.3 * r["network_scale"] for r in per_frame)


def test_bag_eval_compare_cli(bags: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    import moge2_ros.cli as cli

    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", ("moge2_ros.eval.cli",))
    root, layout = bags["root"], bags["layout"]
    base = ["bag-eval", str(root / "network"), "--gt-bag", str(root / "in"), "--gt-depth-topic",
            layout.depth_topic, "--align-resolution", "24", "--skip",
            "points_affine_invariant,depth_affine_invariant", "--sample-images", "0", "--quiet"]
    out = tmp_path / "eval"
    assert cli.main([*base, "--compare", str(root / "anchored"), "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| quantity | network | anchored |" in text and "| metric AbsRel |" in text
    saved = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    rel = next(row for row in saved["rows"] if row["key"] == "depth_metric/rel")["values"]
    assert rel == pytest.approx([bags["network"].summary["depth_metric/rel"],
                                 bags["anchored"].summary["depth_metric/rel"]], rel=1e-6)
    assert (out / "comparison.md").is_file()
    assert (out / "network" / "report.html").is_file() and (out / "anchored" / "metrics.json").is_file()
    # explicit labels name the columns and the subfolders
    assert cli.main([*base, "--compare", str(root / "anchored"), "--labels", "before,after",
                     "--output", str(tmp_path / "named")]) == 0
    assert "| quantity | before | after |" in capsys.readouterr().out
    assert (tmp_path / "named" / "after" / "report.html").is_file()
    for bad, message in [(["--labels", "a,b"], "give --compare too"),
                         (["--compare", str(root / "anchored"), "--labels", "x,x"], "two different names"),
                         (["--compare", str(root / "anchored"), "--labels", "x/y,z"], "two different names"),
                         (["--compare", str(tmp_path / "missing")], "no such bag")]:
        assert cli.main([*base, *bad, "--output", str(tmp_path / "bad")]) == 2
        assert message in capsys.readouterr().err
