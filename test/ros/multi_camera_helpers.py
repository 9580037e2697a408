"""Helpers of the tests of one ``moge2_node`` serving several cameras (``test_multi_camera*.py``,
``test_lifecycle.py``), built on ``ros_helpers`` (same isolation and deadline rules)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ros_helpers import (
    Inbox,
    NodeProcess,
    RosClient,
    camera_info,
    diagnostics_values,
    node_args,
    output_type,
    rgb_image,
)

#: The node's module (``python -m``).
NODE_MODULE = "moge2_ros.ros.node"


@dataclass
class CameraIO:
    """The test's side of one camera of the node: its input publishers and output inboxes."""

    name: str
    prefix: str  # absolute namespace of the camera's topics, e.g. /robot/front
    image_pub: Any
    info_pub: Any
    outputs: dict[str, Inbox]  # relative output topic -> inbox
    frame_id: str

    def send(self, client: RosClient, rgb: np.ndarray, k: np.ndarray | None = None) -> Any:
        """Publish ``rgb`` stamped now (after a CameraInfo with ``k`` when given); returns the stamp."""
        stamp = client.now()
        if k is not None:
            height, width = rgb.shape[:2]
            self.info_pub.publish(camera_info(stamp, k, width, height, self.frame_id))
        self.image_pub.publish(rgb_image(stamp, rgb, self.frame_id))
        return stamp


def cameras_param(names: list[str]) -> str:
    """``-p cameras:=...`` value of a list of names."""
    return "[" + ",".join(f"'{name}'" for name in names) + "]"


def camera_prefix(namespace: str, camera: str) -> str:
    ns = namespace.rstrip("/")
    return f"{ns}/{camera}" if camera else ns


def connect_cameras(client: RosClient, namespace: str, cameras: list[str], outputs: tuple[str, ...],
                    process: NodeProcess, inputs: dict[str, str] | None = None) -> dict[str, CameraIO]:
    """Publishers of every camera's ``image`` (or ``inputs[camera]``, relative to the node's namespace) and
    ``camera_info``, inboxes of its ``outputs``; waits until the node's subscriptions and publishers are matched."""
    from sensor_msgs.msg import CameraInfo, Image

    ios = {}
    for camera in cameras:
        prefix = camera_prefix(namespace, camera)
        image_topic = f"{namespace.rstrip('/')}/{inputs[camera]}" if inputs and camera in inputs else f"{prefix}/image"
        ios[camera] = CameraIO(
            camera, prefix, client.publisher(Image, image_topic), client.publisher(CameraInfo, f"{prefix}/camera_info"),
            {t: client.subscribe(output_type(t), f"{prefix}/{t}") for t in outputs}, f"{camera or 'cam'}_optical_frame")
    for io in ios.values():
        client.wait_for_subscribers(io.image_pub, process=process)
        client.wait_for_subscribers(io.info_pub, process=process)
        client.wait_for_publishers([f"{io.prefix}/{t}" for t in outputs], process=process)
    return ios


def start_multi(client: RosClient, env: dict[str, str], log_dir: Path, model: Path | str, namespace: str,
                cameras: list[str], outputs: tuple[str, ...] = ("depth/image", "depth/camera_info"),
                inputs: dict[str, str] | None = None, extra: tuple[str, ...] = (),
                **params: Any) -> tuple[NodeProcess, dict[str, CameraIO]]:
    """Start moge2_node in ``namespace`` serving ``cameras``; returns the process and each camera's side."""
    log = Path(log_dir) / f"moge2_node{namespace.replace('/', '_')}.log"
    process = NodeProcess(node_args(model, namespace, *extra, cameras=cameras_param(cameras), **params), env, log,
                          module=NODE_MODULE)
    try:
        process.wait_for_output("ready:")
        return process, connect_cameras(client, namespace, cameras, outputs, process, inputs)
    except BaseException:
        process.stop()
        raise


def camera_statuses(diagnostics: Inbox, node_fqn: str) -> dict[str, dict[str, str]]:
    """The newest /diagnostics values of every camera status of ``node_fqn`` (``<fqn>: camera <name>``)."""
    prefix = f"{node_fqn}: camera "
    found: dict[str, dict[str, str]] = {}
    for _, array in diagnostics.items:
        for status in array.status:
            if status.name.startswith(prefix):
                found[status.name[len(prefix):]] = {kv.key: kv.value for kv in status.values}
    return found


def node_status(diagnostics: Inbox, node_fqn: str) -> dict[str, str] | None:
    """The newest node-level /diagnostics values of ``node_fqn``."""
    for _, array in reversed(diagnostics.items):
        values = diagnostics_values(array, f"{node_fqn}: MoGe-2 inference")
        if values is not None:
            return values
    return None
