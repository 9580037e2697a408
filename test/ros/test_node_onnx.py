"""``moge2_node`` with ``backend:=onnx`` end to end (CPU ONNX Runtime): the node loads an ONNX file exported by
``moge2_ros.backends.export_onnx`` (no PyTorch model given), and its depth equals what the torch Predictor computes
from the same weights for the same frame; a bad ONNX file stops the node with one clear message; a static export's
token budget is adopted when none is asked for and a conflicting one stops the node with the fix; /diagnostics
goes to ERROR while every frame is rejected and to WARN while some are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from moge2_ros.checkpoints import load_model
from moge2_ros.data.example import render_example_scene
from moge2_ros.inference import Predictor
from moge2_ros.ros.conversions import image_to_float
from ros_helpers import NodeProcess, RosClient, diagnostics_values, node_args, rgb_image, start_node

pytestmark = [pytest.mark.ros, pytest.mark.slow]

WIDTH, HEIGHT, TOKENS = 96, 72, 108


@pytest.fixture(scope="module")
def onnx_file(workdir: Path, tiny_model_path: Path) -> Path:
    from moge2_ros.backends.onnx_export import export_onnx

    path = workdir / "demo_static.onnx"
    export_onnx(load_model(tiny_model_path), path, dynamic=False, height=HEIGHT, width=WIDTH, num_tokens=TOKENS)
    return path


def test_node_runs_the_onnx_backend(client: RosClient, env: dict[str, str], workdir: Path, tiny_model_path: Path,
                                    onnx_file: Path) -> None:
    rgb = render_example_scene(WIDTH, HEIGHT, 60.0, camera_position=(0.2, 0.0, 0.3)).rgb
    node = start_node(client, env, workdir, "''", "/cam_onnx", outputs=("depth/image", "geometry"),
                      backend="onnx", onnx_path=str(onnx_file), onnx_providers="['cpu']", num_tokens=TOKENS,
                      intrinsics_source="estimate", edge_rtol=0.0)
    try:
        stamp = client.now()
        got = client.request(lambda: node.image_pub.publish(rgb_image(stamp, rgb)), stamp,
                             [node.outputs["depth/image"], node.outputs["geometry"]], process=node.process)
        depth = image_to_float(got["/cam_onnx/depth/image"])
        assert got["/cam_onnx/geometry"].num_tokens == TOKENS
    finally:
        node.stop()
    torch_depth = Predictor(load_model(tiny_model_path), device="cpu", num_tokens=TOKENS).predict(rgb).depth[0].numpy()
    assert depth.shape == (HEIGHT, WIDTH)
    both = np.isfinite(depth) & np.isfinite(torch_depth)
    assert both.mean() > 0.5
    np.testing.assert_array_equal(np.isfinite(depth), np.isfinite(torch_depth))
    np.testing.assert_allclose(depth[both], torch_depth[both], rtol=1e-4, atol=1e-5)


def test_truncated_onnx_file_stops_the_node(env: dict[str, str], workdir: Path, onnx_file: Path) -> None:
    bad = workdir / "truncated.onnx"
    bad.write_bytes(onnx_file.read_bytes()[:4096])
    process = NodeProcess(node_args("''", "/cam_onnx_bad", backend="onnx", onnx_path=str(bad)), env,
                          workdir / "onnx_bad.log")
    try:
        status = process.wait_exit(timeout=60.0)
    finally:
        process.stop()
    output = process.output()
    assert status != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if "cannot start" in line]
    assert len(lines) == 1 and "truncated.onnx" in lines[0], output


def _level(cam, predicate, timeout: float = 30.0) -> tuple[int, str]:
    """(level, message) of the newest /diagnostics status of ``cam`` that arrives from now on and satisfies
    ``predicate(level, values)``."""
    start = len(cam.diagnostics)

    def find():
        for _, array in reversed(cam.diagnostics.items[start:]):
            for status in array.status:
                if status.name.startswith(cam.status_prefix):
                    level = status.level if isinstance(status.level, int) else status.level[0]
                    if predicate(level, diagnostics_values(array, cam.status_prefix)):
                        return level, status.message
        return None

    return cam.client.spin_until(find, timeout, f"/diagnostics of {cam.fqn}", cam.process)


def test_node_adopts_the_static_budget(client: RosClient, env: dict[str, str], workdir: Path,
                                       onnx_file: Path) -> None:
    """No num_tokens given (the bundled-model default): the node runs at the file's budget and says so; a run-time
    budget the file cannot serve is refused; frames the static export cannot take make /diagnostics ERROR, then
    WARN once some frames are published again."""
    node = start_node(client, env, workdir, "''", "/cam_onnx_adopt", outputs=("depth/image", "geometry"),
                      backend="onnx", onnx_path=str(onnx_file), onnx_providers="['cpu']",
                      intrinsics_source="estimate", diagnostics_period=0.25)
    try:
        log = node.process.output()
        assert f"static export for {TOKENS} tokens: running at {TOKENS} tokens" in log, log
        assert f"{TOKENS} tokens, input" in log, log  # the ready line
        (result,) = client.set_parameters(node.fqn, num_tokens=400)
        assert not result.successful and f"static export for {TOKENS} tokens" in result.reason, result.reason
        (result,) = client.set_parameters(node.fqn, resolution_level=0)
        assert not result.successful and "--dynamic" in result.reason, result.reason

        wrong = render_example_scene(WIDTH // 2, HEIGHT // 2, 60.0).rgb  # a size the static export was not made for

        def rejected_and_error(level: int, values: dict[str, str]) -> bool:
            node.image_pub.publish(rgb_image(client.now(), wrong))  # keep the input rate up while polling
            return int(values["bad_input"]) > 0 and int(values["processed"]) == 0 and level == 2

        level, message = _level(node, rejected_and_error)
        assert "static export for input" in message, message

        rgb = render_example_scene(WIDTH, HEIGHT, 60.0).rgb
        stamp = client.now()
        got = client.request(lambda: node.image_pub.publish(rgb_image(stamp, rgb)), stamp,
                             [node.outputs["depth/image"], node.outputs["geometry"]], process=node.process)
        assert got["/cam_onnx_adopt/geometry"].num_tokens == TOKENS
        level, message = _level(node, lambda level, values: int(values["processed"]) > 0)
        assert level == 1 and "some frames fail" in message, (level, message)
    finally:
        node.stop()


def test_conflicting_budget_stops_the_node(env: dict[str, str], workdir: Path, onnx_file: Path) -> None:
    process = NodeProcess(node_args("''", "/cam_onnx_conflict", backend="onnx", onnx_path=str(onnx_file),
                                    onnx_providers="['cpu']", num_tokens=400), env, workdir / "onnx_conflict.log")
    try:
        status = process.wait_exit(timeout=90.0)
    finally:
        process.stop()
    output = process.output()
    assert status == 1, output
    assert "Traceback" not in output and "ready:" not in output, output
    lines = [line for line in output.splitlines() if "cannot start" in line]
    assert len(lines) == 1, output
    for fix in (f"static export for {TOKENS} tokens", "--dynamic", "--num-tokens 400", f"num_tokens:={TOKENS}"):
        assert fix in lines[0], output
