"""``moge2_node`` with ``backend:=onnx`` end to end (CPU ONNX Runtime): the node loads an ONNX file exported by
``moge2_ros.backends.export_onnx`` (no PyTorch model given), and its depth equals what the torch Predictor computes
from the same weights for the same frame; a bad ONNX file stops the node with one clear message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from moge2_ros.checkpoints import load_model
from moge2_ros.data.example import render_example_scene
from moge2_ros.inference import Predictor
from moge2_ros.ros.conversions import image_to_float
from ros_helpers import NodeProcess, RosClient, node_args, rgb_image, start_node

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
