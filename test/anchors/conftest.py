"""Fixtures of the anchor tests: the example room with and without a visible floor (see anchor_helpers)."""

from __future__ import annotations

import pytest
from anchor_helpers import Scene, render


@pytest.fixture(scope="session")
def room() -> Scene:
    """The example room from its centre, 60 deg field of view: the floor (1.2 m below) fills the lower part."""
    return render(60.0)


@pytest.fixture(scope="session")
def wall() -> Scene:
    """A narrow (20 deg) view of the back wall and the spheres: no floor in the image."""
    return render(20.0)
