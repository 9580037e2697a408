"""The layer rules of ``.importlinter`` hold, and a wrong import breaks them (the check can fail)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _paths import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def lint_imports() -> Path:
    if not LINT_IMPORTS.is_file():
        pytest.fail(f"{LINT_IMPORTS} is missing: install the test extra (pip install -e '.[test]')")
    return LINT_IMPORTS


def test_contracts_are_kept(lint_imports):
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("model/vit.py", "from moge2_ros.io import msg_codec", "pure PyTorch"),
    ("geometry/uv.py", "import moge2_ros.inference.factory", "Layers"),
    ("inference/result.py", "import sensor_msgs.msg", "Only moge2_ros.ros imports rclpy"),
    ("bags/reader.py", "def _late():\n    from moge2_ros.data import open_dataset\n", "Layers"),
])
def test_a_wrong_import_breaks_a_contract(lint_imports, tmp_path, module, line, contract):
    shutil.copy(REPO / ".importlinter", tmp_path / ".importlinter")
    shutil.copytree(REPO / "moge2_ros", tmp_path / "moge2_ros",
                    ignore=shutil.ignore_patterns("__pycache__", "*.safetensors"))
    target = tmp_path / "moge2_ros" / module
    target.write_text(target.read_text(encoding="utf-8") + "\n" + line + "\n", encoding="utf-8")
    result = _lint(tmp_path, pythonpath=tmp_path)
    assert result.returncode != 0, result.stdout[-2000:]
    assert " 0 broken" not in result.stdout and contract in result.stdout.split("Broken contracts")[-1]


def test_no_import_cycle_between_modules():
    """No module imports itself back through others (imports inside functions count too)."""
    import grimp
    import networkx as nx

    graph = grimp.build_graph("moge2_ros")
    edges = nx.DiGraph((m, i) for m in graph.modules for i in graph.find_modules_directly_imported_by(m))
    cycles = [cycle for cycle in nx.simple_cycles(edges) if len(cycle) > 1]
    assert cycles == [], cycles[:5]
