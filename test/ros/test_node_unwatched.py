"""Frames that arrive while no output has a subscriber are not computed, and are counted as ``unwatched`` so that
the node's frame accounting adds up (``received == processed + dropped + unwatched + failures``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sensor_msgs.msg import Image

from moge2_ros.data.example import render_example_scene
from ros_helpers import RosClient, publish_paced, rgb_image, start_node

pytestmark = pytest.mark.ros


def test_frames_nobody_listens_to_are_counted_unwatched_then_computed_once_subscribed(
        client: RosClient, env: dict[str, str], workdir: Path, tiny_model_path: Path) -> None:
    rgb = render_example_scene(64, 48, 60.0).rgb
    node = start_node(client, env, workdir, tiny_model_path, "/unwatched", outputs=(), num_tokens=108,
                      diagnostics_period=0.25)
    try:
        before = node.stable_counters()
        publish_paced(client, lambda i: node.image_pub.publish(rgb_image(client.now(), rgb, node.frame_id)), 10,
                      10.0, node.process)
        after = node.stable_counters()
        d = {k: after[k] - before[k] for k in ("received", "processed", "dropped", "unwatched", "errors")}
        assert d["received"] == 10 and d["processed"] == 0 and d["errors"] == 0, d
        assert d["unwatched"] >= 1 and d["unwatched"] + d["dropped"] == d["received"], d
        # A subscriber appears: a frame is computed and published (sent again until the node has discovered the
        # subscription: the frames before that are unwatched), counted as processed.
        inbox = client.subscribe(Image, "/unwatched/depth/image")
        stamp = client.now()
        client.request(lambda: node.image_pub.publish(rgb_image(stamp, rgb, node.frame_id)), stamp, [inbox],
                       process=node.process)
        final = node.stable_counters()
        assert final["processed"] - after["processed"] >= 1, final
        assert final["received"] == final["processed"] + final["dropped"] + final["unwatched"], final
        assert np.isfinite(float(final["latency_p50_ms"]))
    finally:
        node.stop()
