"""Rejected parameter changes come back with short reasons: a huge value is never echoed in full."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from moge2_ros.ros.params import MAX_REASON_CHARS, PARAMS, check_value, short_reason
from ros_helpers import RosClient, RunningNode, start_node

pytestmark = pytest.mark.ros

HUGE = "x" * 10_000_000


@pytest.mark.parametrize("name", [p.name for p in PARAMS if p.choices and not p.restart])
def test_choice_reason_quotes_a_cut_value(name):
    reason = check_value(name, HUGE)
    assert reason is not None and len(reason) <= MAX_REASON_CHARS, len(reason or "")
    assert reason.startswith(f"'{name}' must be one of") and "got 'xxx" in reason and reason.endswith("...")


def test_every_rejection_of_a_huge_value_is_short():
    for spec in PARAMS:
        reason = check_value(spec.name, HUGE if isinstance(spec.default, str) else spec.default)
        assert reason is None or len(reason) <= MAX_REASON_CHARS, (spec.name, len(reason))


def test_short_reason():
    assert short_reason("fine") == "fine"
    cut = short_reason("y" * 5000)
    assert len(cut) <= MAX_REASON_CHARS and cut.endswith("... (5000 characters)")


@pytest.fixture(scope="module")
def cam(client: RosClient, env: dict[str, str], workdir: Path, tiny_model_path: Path) -> Iterator[RunningNode]:
    node = start_node(client, env, workdir, tiny_model_path, "/reasons", outputs=("depth/image",), num_tokens=150)
    try:
        yield node
    finally:
        node.stop()


def test_node_returns_a_short_reason_for_a_huge_string(cam: RunningNode):
    (result,) = cam.client.set_parameters(cam.fqn, intrinsics_source="z" * 1_000_000)
    assert not result.successful
    assert len(result.reason) <= MAX_REASON_CHARS and "'intrinsics_source' must be one of" in result.reason, \
        len(result.reason)
    assert cam.process.alive()
