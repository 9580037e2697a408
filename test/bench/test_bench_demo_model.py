"""bench/bench_demo_model.py: the cross-validated ridge probe behind ``--scale-probe`` and a short run of that mode."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_demo_model.py"



def test_ridge_probe_finds_information_that_is_there_and_none_that_is_not(bench) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 12))
    y = x @ rng.normal(size=12) * 0.1 + 0.02 * rng.normal(size=200)
    informative = bench._ridge_cv_rms(x, y)
    assert informative < 0.2 * y.std()  # the noise level (0.02), far below the spread
    noise = bench._ridge_cv_rms(rng.normal(size=(200, 12)), y)
    assert 0.95 * y.std() < noise < 1.3 * y.std()  # unrelated features: no better than predicting the mean
    constant = bench._ridge_cv_rms(np.zeros((200, 1)), y)  # the intercept alone: the cross-validated mean
    assert constant == pytest.approx(y.std(), rel=0.05)


def test_scale_probe_prints_its_table(tiny_model_path: Path) -> None:
    out = subprocess.run([sys.executable, str(SCRIPT), "--scale-probe", "--model", str(tiny_model_path),
                          "--count", "20", "--size", "96x72"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = {line.split("|")[1].strip(): line for line in out.stdout.splitlines() if line.startswith("| ")}
    for name in ("the mean of the rooms (no information; the same CV)", "ridge on the class token (the scale head's input), 96 values",
                 "ridge on the mean patch feature, 96 values"):
        assert name in rows, out.stdout
        assert float(rows[name].split("|")[2]) > 0, rows[name]
    demo = [line for line in out.stdout.splitlines() if line.startswith("Demo room")]
    assert len(demo) == 1, out.stdout
    head, constant = (float(v) for v in re.findall(r"depth (\S+) with the model's scale head, (\S+) with the constant",
                                                    demo[0])[0])
    assert head > 0 and constant > 0, demo[0]
    too_few = subprocess.run([sys.executable, str(SCRIPT), "--scale-probe", "--count", "5"], capture_output=True,
                             text=True, timeout=120)
    assert too_few.returncode != 0 and "--count >= 20" in too_few.stderr
