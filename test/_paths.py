"""Paths of the repository as seen from the test suite; import by name: ``from _paths import REPO``.

``test/`` is on ``sys.path`` (``pythonpath = test`` in ``pytest.ini``), so every test module, at any depth below
``test/``, imports this one module instead of counting ``Path(__file__).parent`` levels.
"""

from __future__ import annotations

from pathlib import Path

#: The repository root (the folder that holds ``pytest.ini``, ``moge2_ros/`` and ``test/``).
REPO = Path(__file__).resolve().parent.parent

#: ``<repo>/../shared``: reference outputs and data sets that live beside the repository (read in place).
SHARED = (REPO.parent / "shared").resolve()
