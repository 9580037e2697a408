"""Atomic writes (moge2_ros.io.atomic): complete or absent, and the same file mode as an ordinary new file."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from moge2_ros.io.atomic import atomic_path, atomic_write_bytes, current_umask

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def umask():
    """Set a umask for one test and restore the previous one."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_mask(mask: int) -> int:
        os.umask(mask)
        return mask

    yield set_mask
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_file_gets_the_mode_of_an_ordinary_file(tmp_path, umask, mask):
    umask(mask)
    ordinary = tmp_path / "ordinary.bin"
    ordinary.write_bytes(b"x")
    atomic = tmp_path / "atomic.bin"
    atomic_write_bytes(atomic, b"payload")
    assert atomic.read_bytes() == b"payload"
    assert _mode(atomic) == _mode(ordinary) == 0o666 & ~mask


def test_current_umask_reads_without_changing(umask):
    umask(0o027)
    assert current_umask() == 0o027
    assert current_umask() == 0o027


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(target, suffix=".tmp") as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".out.bin.") and tmp.suffix == ".tmp"
            tmp.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_missing_folder_is_created(tmp_path):
    atomic_write_bytes(tmp_path / "a" / "b" / "c.json", b"{}")
    assert (tmp_path / "a" / "b" / "c.json").read_bytes() == b"{}"


@pytest.mark.parametrize("name", ["model.pt", "model.safetensors"])
def test_saved_checkpoints_have_ordinary_modes(tiny_model, tmp_path, umask, name):
    """make-demo-model and the trainer write through save_checkpoint: 0644 under umask 022, not mkstemp's 0600."""
    from moge2_ros.checkpoints import save_checkpoint
    from moge2_ros.train.state import atomic_torch_save

    umask(0o022)
    assert _mode(save_checkpoint(tiny_model, tmp_path / name)) == 0o644
    atomic_torch_save({"step": 1}, tmp_path / "state.pt")
    assert _mode(tmp_path / "state.pt") == 0o644


def test_no_other_module_makes_its_own_temporary_files():
    """One atomic-write helper: mkstemp (owner-only files) appears nowhere else in the package."""
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "moge2_ros").rglob("*.py")
                 if p.name != "atomic.py" and re.search(r"\bmkstemp\(|NamedTemporaryFile\(", p.read_text())]
    assert offenders == []


def test_onnx_export_has_an_ordinary_mode(tiny_model, tmp_path, umask):
    pytest.importorskip("onnx")
    from moge2_ros.backends.onnx_export import export_onnx

    umask(0o022)
    path = tmp_path / "tiny.onnx"
    export_onnx(tiny_model, path, dynamic=False, height=60, width=80, num_tokens=48, validate=False)
    assert _mode(path) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx"]
