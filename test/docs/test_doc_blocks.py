"""Executable documentation: every shell and Python block of README.md and docs/*.md runs here.

The blocks are read with ``pytest_codeblocks.extract_from_file`` (the ``pytest-codeblocks`` package), which
understands HTML-comment markers written just before a block::

    <!--pytest.mark.skip(reason="needs a CUDA device")-->        not runnable here, with the reason
    <!--pytest.mark.slow-->                                      runs, but only in the full suite
    <!--pytest-codeblocks:cont-->                                 this block continues the previous one
    <!--pytest-codeblocks:expected-output-->                      the next block is the previous one's output

Fences: ```bash / ```sh / ```python blocks are run; ```text blocks are listings (a command's output, a file
tree, a usage synopsis) and are not run. A block with any other fence, or none, fails
:func:`test_every_block_is_run_or_marked`, so a new block cannot silently escape the suite.

How a block runs (this module drives the tool rather than using its plugin, so that nothing is written into
the repository): each document gets its own working folder ``<tmp>/main``, holding links to the repository's
``.venv``, ``configs``, ``bench`` and ``scripts``, a ``../shared`` link to the shared data, and the stand-ins
for files a reader is assumed to have (:func:`_prepare`: ``model.pt`` / ``MODEL.pt`` / ``out/model.pt`` = the
bundled demo model in the official format, ``photo.jpg`` = the rendered example room, a three-frame synthetic
folder dataset as ``my_dataset/`` and the other folder names the documents use, and its recording by ``make-bag``
as ``recording/``, ``lab.mcap`` and ``rec.mcap``). The blocks of one document run in order
in that folder, so a block may use what an earlier one wrote. Bash blocks run with ``bash -euo pipefail`` and
``.venv/bin`` first on ``PATH``; Python blocks run in ``.venv/bin/python``. Nothing may use the network:
``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pytest_codeblocks import extract_from_file

from _paths import REPO, SHARED

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUN = {"bash", "sh", "python"}
LISTING = {"text"}
BLOCK_TIMEOUT_S = 240


def _blocks():
    """``(doc, block)`` for every fenced block of every document, in document order."""
    for doc in DOCS:
        for block in extract_from_file(doc):
            yield doc, block


#: Names a marker's condition may use (besides ``sys`` and ``pytest``).
SEVENSCENES = (SHARED / "data" / "sevenscenes-redkitchen").is_dir()


def _marks(block) -> list:
    # The markers are Python expressions naming pytest marks (as pytest-codeblocks' own plugin evaluates them).
    names = {"sys": sys, "pytest": pytest, "SEVENSCENES": SEVENSCENES}
    return [eval(mark, names) for mark in block.marks]  # noqa: S307 - the repository's own documents


def _block_id(doc: Path, block) -> str:
    return f"{doc.relative_to(REPO)}:{block.lineno}"


RUNNABLE = [pytest.param(doc, block, id=_block_id(doc, block), marks=_marks(block))
            for doc, block in _blocks() if block.syntax in RUN]


def test_every_block_is_run_or_marked():
    """Every fenced block is code that runs here, a listing (```text), or carries a skip mark with a reason."""
    problems = []
    for doc, block in _blocks():
        where = _block_id(doc, block)
        if block.syntax not in RUN | LISTING:
            problems.append(f"{where}: fence {block.syntax!r} (use bash, python, or text for a listing)")
        for mark in _marks(block):
            if mark.name == "skip" and not str(mark.kwargs.get("reason", "")).strip():
                problems.append(f"{where}: a skip mark without a reason")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------------------------- workspaces

def _stand_ins(root: Path) -> Path:
    """Files the documents assume the reader has, made once per session under ``root``."""
    if (root / "done").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    code = f"""
from moge2_ros import load_model
from moge2_ros.assets import demo_model_path
from moge2_ros.checkpoints import save_checkpoint
save_checkpoint(load_model(str(demo_model_path())), {str(root / "model.pt")!r})
"""
    env = _env()
    subprocess.run([str(REPO / ".venv/bin/python"), "-c", code], check=True, env=env, cwd=root,
                   capture_output=True, timeout=BLOCK_TIMEOUT_S)
    subprocess.run([str(REPO / ".venv/bin/moge2-ros"), "make-example-image", "--output", str(root / "photo.png"),
                    "--width", "320", "--height", "240"], check=True, env=env, capture_output=True)
    from PIL import Image
    Image.open(root / "photo.png").convert("RGB").save(root / "photo.jpg", quality=95)
    subprocess.run([str(REPO / ".venv/bin/moge2-ros"), "make-synthetic", "--output", str(root / "my_dataset"),
                    "--count", "3", "--size", "160x128", "--seed", "0"], check=True, env=env, capture_output=True)
    subprocess.run([str(REPO / ".venv/bin/moge2-ros"), "make-bag", str(root / "my_dataset"),
                    str(root / "recording")], check=True, env=env, capture_output=True)
    (root / "done").touch()
    return root


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", MPLBACKEND="Agg", PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"))
    return env


def _prepare(ws: Path, stand_ins: Path) -> Path:
    """``ws/main``: the working folder of one document's blocks (see the module docstring)."""
    main = ws / "main"
    main.mkdir(parents=True)
    for name in (".venv", "configs", "bench", "scripts"):
        (main / name).symlink_to(REPO / name)
    if SHARED.is_dir():
        (ws / "shared").symlink_to(SHARED)
    (main / "docs" / "images").mkdir(parents=True)
    for name in ("model.pt", "MODEL.pt", "out/model.pt"):
        (main / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(stand_ins / "model.pt", main / name)
    shutil.copy(stand_ins / "photo.jpg", main / "photo.jpg")
    for name in ("my_dataset", "my_folder_dataset", "odd_folder", "real_folder"):
        shutil.copytree(stand_ins / "my_dataset", main / name)
    shutil.copytree(stand_ins / "recording", main / "recording")
    mcap, = (stand_ins / "recording").glob("*.mcap")
    for name in ("lab.mcap", "rec.mcap"):
        shutil.copy(mcap, main / name)
    return main


@pytest.fixture(scope="session")
def _workspaces(tmp_path_factory):
    stand_ins = _stand_ins(tmp_path_factory.mktemp("doc_stand_ins"))
    made: dict[Path, Path] = {}

    def get(doc: Path) -> Path:
        if doc not in made:
            made[doc] = _prepare(tmp_path_factory.mktemp(doc.stem.lower()), stand_ins)
        return made[doc]
    return get


# ------------------------------------------------------------------------------------------------------ blocks

@pytest.mark.parametrize(("doc", "block"), RUNNABLE)
def test_doc_block(doc, block, _workspaces):
    """The block runs as written (exit status 0) in its document's working folder."""
    cwd = _workspaces(doc)
    if block.syntax == "python":
        argv = [str(REPO / ".venv/bin/python"), "-c", block.code]
    else:
        argv = ["/bin/bash", "-euo", "pipefail", "-c", block.code]
    try:
        run = subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{_block_id(doc, block)}: still running after {BLOCK_TIMEOUT_S} s\n{exc.stderr or ''}")
    if run.returncode != 0:
        pytest.fail(f"{_block_id(doc, block)} failed with exit status {run.returncode}:\n{block.code}\n"
                    f"--- stdout (end)\n{run.stdout[-3000:]}\n--- stderr (end)\n{run.stderr[-3000:]}",
                    pytrace=False)
    if block.expected_output is not None:
        expected, got = block.expected_output, run.stdout
        if block.expected_output_ignore_whitespace:
            expected, got = "".join(expected.split()), "".join(got.split())
        assert got == expected, f"{_block_id(doc, block)}: output differs from the documented listing"
