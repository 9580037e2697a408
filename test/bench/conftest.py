"""The ``bench`` fixture: the benchmark script named by the test module's ``SCRIPT`` (a Path under bench/),
imported as a module the way it runs (its folder on ``sys.path``, for ``_harness``)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def bench(request: pytest.FixtureRequest) -> Iterator[ModuleType]:
    script = request.module.SCRIPT
    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(script.parent))
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(script.parent))
