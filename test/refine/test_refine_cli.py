"""Tests of ``moge2-ros refine`` (moge2_ros.refine.cli) on a tiny folder dataset with the untrained demo model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import moge2_ros.cli as cli
from moge2_ros.data.folder import FolderDataset, write_sample
from moge2_ros.data.sample import PROVENANCE
from moge2_ros.data.synthetic import SyntheticDataset
from moge2_ros.refine.corrupt import corrupt_depth


@pytest.fixture()
def refine_cli():
    return cli.main


@pytest.fixture(scope="module")
def setup(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("refine")
    model = tiny_model_path
    data = root / "real"
    synthetic = SyntheticDataset(3, 48, 64, seed=11)
    for i in range(3):
        sample = synthetic[i]
        depth = corrupt_depth(sample.depth, np.random.default_rng(i)).depth
        write_sample(data, f"f{i}", sample.replace(depth=depth, normal=None, sky=None, label_type="B"))
    return {"model": model, "data": data, "root": root}


def _args(setup: dict[str, Path], output: Path, *extra: str) -> list[str]:
    return ["refine", "--model", str(setup["model"]), "--data", str(setup["data"]), "--output", str(output),
            "--device", "cpu", "--resolution-level", "0", *extra]


def test_refine_writes_a_folder_dataset_and_resumes(setup: dict[str, Path], tmp_path: Path, refine_cli,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "refined"
    before = sorted(p.stat().st_mtime_ns for p in setup["data"].iterdir())
    assert refine_cli(_args(setup, out, "--limit", "2")) == 0
    captured = capsys.readouterr().out
    assert "f0: filtered" in captured and "% of all pixels" in captured
    progress = [json.loads(line) for line in (out / "refine_progress.jsonl").read_text().splitlines()]
    assert [r["stem"] for r in progress] == ["f0", "f1"]
    refined = FolderDataset(out)
    assert refined.stems == ["f0", "f1"] and refined.label_type == "B"
    for stem in refined.stems:
        sample = refined.load(stem)
        assert sample.provenance is not None
        assert set(np.unique(sample.provenance)) <= set(PROVENANCE.values())
        filled_or_kept = np.isin(sample.provenance, [PROVENANCE["kept"], PROVENANCE["filled"]])
        np.testing.assert_array_equal(filled_or_kept, np.isfinite(sample.depth))
    # Resume: only the missing frame is processed; earlier lines are untouched.
    assert refine_cli(_args(setup, out, "--quiet")) == 0
    lines = (out / "refine_progress.jsonl").read_text().splitlines()
    assert [json.loads(line)["stem"] for line in lines] == ["f0", "f1", "f2"]
    summary = json.loads((out / "refine_summary.json").read_text())
    assert summary["frames"] == 3
    assert sorted(p.stat().st_mtime_ns for p in setup["data"].iterdir()) == before  # input untouched
    # Different settings into the same output are refused.
    assert refine_cli(_args(setup, out, "--no-filter", "--quiet")) == 2
    assert "other settings" in capsys.readouterr().err


def test_refine_with_the_demo_model_warns_once(setup: dict[str, Path], tmp_path: Path, refine_cli,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from moge2_ros.assets import demo_model_path

    args = ["refine", "--data", str(setup["data"]), "--device", "cpu", "--resolution-level", "0", "--limit", "2",
            "--quiet"]
    assert refine_cli([*args, "--output", str(tmp_path / "bundled")]) == 0  # no --model: the bundled one
    warnings = [line for line in capsys.readouterr().err.splitlines() if "too weak to judge" in line]
    assert len(warnings) == 1 and "docs/REFINEMENT.md" in warnings[0] and "--no-filter" in warnings[0], warnings
    assert refine_cli([*args, "--model", str(demo_model_path()), "--output", str(tmp_path / "named")]) == 0
    assert sum("too weak to judge" in line for line in capsys.readouterr().err.splitlines()) == 1
    # another model, or no filter to judge with: no warning
    assert refine_cli([*args, "--model", str(setup["model"]), "--output", str(tmp_path / "other")]) == 0
    assert refine_cli([*args, "--no-filter", "--output", str(tmp_path / "fill_only")]) == 0
    assert "too weak" not in capsys.readouterr().err


def test_refine_refuses_to_write_into_its_input(setup: dict[str, Path], refine_cli,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    for output in (setup["data"], setup["data"] / "sub"):
        assert refine_cli(_args(setup, output)) == 2
        err = capsys.readouterr().err
        assert "refine never writes into its input" in err and "Traceback" not in err
    assert not (setup["data"] / "sub").exists()


def test_refine_usage_errors(setup: dict[str, Path], tmp_path: Path, refine_cli,
                             capsys: pytest.CaptureFixture[str]) -> None:
    assert refine_cli(_args(setup, tmp_path / "o1", "--no-filter", "--no-fill")) == 2
    assert "nothing to do" in capsys.readouterr().err
    assert refine_cli(_args(setup, tmp_path / "o2", "--image-topic", "/cam/image")) == 2
    assert "only applies to rosbag2" in capsys.readouterr().err
    missing = ["refine", "--model", str(setup["model"]), "--data", str(tmp_path / "nope"), "--output",
               str(tmp_path / "o3")]
    assert refine_cli(missing) == 2
    assert "no such file" in capsys.readouterr().err
    occupied = tmp_path / "occupied"
    write_sample(occupied, "x", FolderDataset(setup["data"]).load("f0"))
    assert refine_cli(_args(setup, occupied)) == 2
    assert "did not write" in capsys.readouterr().err
