"""The memory budget over a real node process: crafted images and parameter changes are refused and counted
before they cost memory, good frames keep flowing, and the node's peak resident memory stays within its budget.

The node runs with ``memory_budget_mb`` = 400 on compressed input.  The crafted inputs are those of the budget
issue: a 634-byte JPEG whose header says 6000x6000, a ~100 KB PNG of 6000x6000, a real image just over what the
budget allows, a token count far beyond the model's range and an image limit beyond the budget.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from moge2_ros.ros.params import MAX_REASON_CHARS
from ros_helpers import RosClient, RunningNode, header, jpeg_image, start_node

pytestmark = pytest.mark.ros

BUDGET_MB = 400
#: Allowance above the budget for what the budget does not model: rclpy's serialisation buffers of the outputs,
#: DDS history, the allocator keeping freed pages (the node's mallopt setting).
MARGIN_MB = 200
NUM_TOKENS = 300


def _vm_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{key} missing from /proc/{pid}/status")


def _compressed(stamp, data: bytes, fmt: str):
    from sensor_msgs.msg import CompressedImage

    return CompressedImage(header=header(stamp), format=fmt, data=data)


def _lying_jpeg(width: int, height: int) -> bytes:
    """A 16x16 baseline JPEG whose SOF0 header is patched to say ``width`` x ``height``."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(buf, format="JPEG", quality=50)
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _png(width: int, height: int) -> bytes:
    """A real, complete RGB PNG of the given size (a diagonal ramp: compresses to a few hundred KB at most)."""
    from PIL import Image

    ramp = (np.add.outer(np.arange(height), np.arange(width)) % 256).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(ramp).convert("RGB").save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


@pytest.fixture(scope="module")
def cam(client: RosClient, env: dict[str, str], workdir: Path, tiny_model_path: Path) -> Iterator[RunningNode]:
    from sensor_msgs.msg import CompressedImage

    node = start_node(client, env, workdir, tiny_model_path, "/budget", outputs=("depth/image",),
                      input_topic="image/compressed", input_type=CompressedImage, image_transport="compressed",
                      memory_budget_mb=float(BUDGET_MB), num_tokens=NUM_TOKENS, input_qos="reliable")
    try:
        yield node
    finally:
        node.stop()


def _good_frame(cam: RunningNode, rgb: np.ndarray) -> None:
    stamp = cam.client.now()
    msg, _ = jpeg_image(stamp, rgb)
    cam.client.request(lambda: cam.image_pub.publish(msg), stamp, [cam.outputs["depth/image"]],
                       process=cam.process)


def test_crafted_images_and_parameters_are_refused_within_the_budget(cam: RunningNode, tiny_model_path: Path):
    from moge2_ros.checkpoints import load_model
    from moge2_ros.inference.budget import FrameBudget

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, size=(480, 640, 3), dtype=np.uint8)
    _good_frame(cam, rgb)  # warm: model, allocator, publishers
    _good_frame(cam, rgb)
    baseline_kib = _vm_kib(cam.process.pid, "VmRSS")

    limit = FrameBudget(BUDGET_MB, load_model(tiny_model_path).config).max_pixels(NUM_TOKENS)
    side = int(np.sqrt(limit * 1.3)) + 1  # a real image 30 % over what the budget allows
    crafted = [(_lying_jpeg(6000, 6000), "jpeg"), (_png(6000, 6000), "png"), (_png(side, side), "png")]
    assert len(crafted[0][0]) < 1000 and len(crafted[1][0]) < 2_000_000
    before = cam.stable_counters()
    for i, (data, fmt) in enumerate(crafted):
        cam.image_pub.publish(_compressed(cam.client.now(), data, fmt))
        # counted before the next frame is sent (a good frame sent at once could replace it in the latest-frame slot)
        cam.client.spin_until(
            lambda i=i: int(cam.stable_counters(0.3)["over_budget"]) > int(before["over_budget"]) + i,
            what=f"crafted image {i} to be refused", process=cam.process)
        _good_frame(cam, rgb)  # the node keeps serving good frames between the crafted ones
    after = cam.stable_counters()
    assert int(after["over_budget"]) - int(before["over_budget"]) == len(crafted), after
    assert int(after["errors"]) == int(before["errors"])
    assert "memory budget" in after["last_error"] or "max_pixels" in after["last_error"], after["last_error"]

    # Parameter changes inside the declared ranges but over the budget are refused with short reasons.
    results = cam.client.set_parameters(cam.fqn, num_tokens=100000)
    assert not results[0].successful and "trained maximum" in results[0].reason, results[0].reason
    results = cam.client.set_parameters(cam.fqn, max_pixels=40_000_000)
    assert not results[0].successful and "memory budget" in results[0].reason, results[0].reason
    assert all(len(r.reason) <= MAX_REASON_CHARS for r in results)
    # An explicit limit the budget can serve is accepted and applies to the next frame (refused before decoding).
    cam.client.set_ok(cam.fqn, max_pixels=100_000)
    cam.image_pub.publish(_compressed(cam.client.now(), _png(640, 480), "png"))
    cam.client.spin_until(lambda: int(cam.stable_counters(0.3)["over_budget"]) > int(after["over_budget"]),
                          what="the 640x480 frame over max_pixels = 100000 to be counted", process=cam.process)
    cam.client.set_ok(cam.fqn, max_pixels=0)
    _good_frame(cam, rgb)
    final = cam.stable_counters()
    assert int(final["rejected_params"]) >= 2, final
    assert float(final["memory_budget_mb"]) == BUDGET_MB and int(final["max_pixels"]) == limit, final

    peak_kib = _vm_kib(cam.process.pid, "VmHWM")
    growth_mb = (peak_kib - baseline_kib) / 1024
    assert growth_mb <= BUDGET_MB + MARGIN_MB, (
        f"peak resident memory {peak_kib / 1024:.0f} MiB is {growth_mb:.0f} MiB above the warm node's "
        f"{baseline_kib / 1024:.0f} MiB: over the budget {BUDGET_MB} + margin {MARGIN_MB}")
    assert cam.process.alive()
