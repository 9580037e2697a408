"""bench/bench_official.py without its benchmark virtualenv: the command line, the pins of that venv, and the
random-weight checkpoints both implementations load (the comparison itself needs the official code: a manual run,
recorded in docs/BENCHMARKS.md)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_official.py"



def test_help_runs_without_torch_or_the_official_code():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--configs" in out.stdout and "--setup-only" in out.stdout and "bench-official-venv" in out.stdout


def test_arguments(bench):
    args = bench.parse_args([])
    assert args.configs == ["public"] and args.tokens == [1200] and args.repeats == 6 and args.worker is None
    args = bench.parse_args(["--configs", "public", "vits", "vitb", "vitl", "--tokens", "1200", "2400", "3600"])
    assert args.configs == ["public", "vits", "vitb", "vitl"] and args.tokens == [1200, 2400, 3600]
    with pytest.raises(SystemExit):
        bench.parse_args(["--repeats", "0"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--configs", "vitg"])


def test_venv_pins_this_projects_numerics_and_keeps_the_official_code_out_of_its_dependencies(bench, monkeypatch):
    monkeypatch.delenv("MOGE2_TORCH_PIP_ARGS", raising=False)
    with_deps, no_deps = bench.venv_requirements()
    assert f"torch=={version('torch').split('+')[0]}" in with_deps
    assert f"numpy=={version('numpy')}" in with_deps and f"scipy=={version('scipy')}" in with_deps
    assert set(no_deps) == {"dlr-moge==2.0.0", "dlr-utils3d==1.3"}
    monkeypatch.setenv("MOGE2_TORCH_PIP_ARGS", "torch==2.13.0 --index-url https://example.invalid/cu128")
    assert bench.venv_requirements()[0][:3] == ["torch==2.13.0", "--index-url", "https://example.invalid/cu128"]


def test_no_build_without_setup(bench, tmp_path):
    with pytest.raises(SystemExit, match="--no-setup"):
        bench.ensure_venv(tmp_path / "missing", sys.executable, allow_build=False)


def test_random_weights_give_a_solvable_camera(bench, tmp_path, monkeypatch):
    """The wired random checkpoint loads strictly and predicts a valid mask and a pinhole camera."""
    from moge2_ros.checkpoints import load_model
    from moge2_ros.demo import DEMO_FOCAL
    from moge2_ros.model import MoGe2Config

    # the public configs are 0.2-1.3 GB; the tiny config goes through the same code
    monkeypatch.setitem(bench.CONFIGS, "tiny", ("tiny", "tiny"))
    spec = {"configs": {"tiny": {"model_config": MoGe2Config.tiny().to_dict()}}}
    reference = tmp_path / "reference"
    reference.mkdir()
    (reference / "moge2_state_dict_spec.json").write_text(__import__("json").dumps(spec))
    import _harness

    monkeypatch.setattr(_harness, "REFERENCE", reference)
    path = bench.checkpoint_for("tiny", tmp_path / "weights")
    assert path.exists() and bench.checkpoint_for("tiny", tmp_path / "weights") == path  # made once
    model = load_model(path)
    out = model.infer(torch.rand(3, 48, 64), num_tokens=12)
    assert out["mask"].float().mean() > 0.9
    focal = 2 * out["intrinsics"][0, 0] / (1 + (64 / 48) ** 2) ** 0.5 * (64 / 48)  # fx in half-diagonal units
    assert torch.isclose(focal, torch.tensor(DEMO_FOCAL), rtol=1e-3)
