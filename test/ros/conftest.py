"""Fixtures of the ROS tests: one work folder, isolated ROS environment and test-side client per test module.

The node process tests (``test_node_*.py``) start ``moge2_node`` with the suite's ``tiny_model_path``
(``test/conftest.py``) through the helpers of ``ros_helpers.py``, which also states the isolation rules: a
random ``ROS_DOMAIN_ID`` per module, ``ROS_LOG_DIR`` and ``TMPDIR`` in the module's work folder, LOCALHOST
discovery, deadline polling, and every process stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ros_helpers import RosClient, ros_env


def _module_name(request: pytest.FixtureRequest) -> str:
    return request.module.__name__.rsplit(".", 1)[-1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """The test module's work folder: node logs, ``ros_log/``, ``tmp/`` and files the tests write."""
    return tmp_path_factory.mktemp(_module_name(request))


@pytest.fixture(scope="module")
def env(workdir: Path) -> dict[str, str]:
    """The module's isolated ROS environment (:func:`ros_helpers.ros_env`): node processes and ``client``."""
    return ros_env(workdir)


@pytest.fixture(scope="module")
def client(env: dict[str, str], request: pytest.FixtureRequest) -> Iterator[RosClient]:
    """The test's side of the ROS graph in ``env`` (its own rclpy context); closed after the module."""
    c = RosClient(env, f"moge2_{_module_name(request)}")
    try:
        yield c
    finally:
        c.close()
