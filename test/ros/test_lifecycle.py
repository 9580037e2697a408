"""The managed node (issue 16): lifecycle transitions through the standard services ``<node>/change_state`` and
``<node>/get_state`` (lifecycle_msgs), over a real process serving two cameras.

configure (model loaded, publishers declared, no subscription) -> activate (outputs flow) -> deactivate (inputs
unsubscribed, no outputs, model kept) -> activate (outputs again, no second load) -> deactivate -> cleanup (topics
gone) -> shutdown (the process exits 0).  A configure that fails (a model file that does not exist) answers
failure and leaves the node unconfigured with the reason in its log; ``moge2_node --managed`` is the same node.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from moge2_ros.data.example import render_example_scene
from multi_camera_helpers import cameras_param, connect_cameras, node_status
from ros_helpers import MESSAGE_TIMEOUT_S, NodeProcess, RosClient, node_args, publish_paced, rgb_image, stamp_ns

pytestmark = pytest.mark.ros

NAMESPACE = "/managed"
FQN = "/managed/moge2_node"
CAMERAS = ["a", "b"]
OUTPUTS = ("depth/image",)


def get_state(client: RosClient, fqn: str) -> str:
    """The node's current lifecycle state label (``unconfigured``, ``inactive``, ``active``, ``finalized``)."""
    from lifecycle_msgs.srv import GetState

    service = client.node.create_client(GetState, f"{fqn}/get_state")
    try:
        client.spin_until(service.service_is_ready, MESSAGE_TIMEOUT_S, f"service {fqn}/get_state")
        future = service.call_async(GetState.Request())
        client.spin_until(future.done, MESSAGE_TIMEOUT_S, f"the reply of {fqn}/get_state")
        return str(future.result().current_state.label)
    finally:
        client.node.destroy_client(service)


def change_state(client: RosClient, fqn: str, transition: str, timeout: float = 120.0) -> bool:
    """Ask for ``transition`` (configure, activate, deactivate, cleanup, shutdown); returns the service's
    ``success``."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    ids = {"configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE,
           "deactivate": Transition.TRANSITION_DEACTIVATE, "cleanup": Transition.TRANSITION_CLEANUP,
           "shutdown": Transition.TRANSITION_UNCONFIGURED_SHUTDOWN}
    service = client.node.create_client(ChangeState, f"{fqn}/change_state")
    try:
        client.spin_until(service.service_is_ready, MESSAGE_TIMEOUT_S, f"service {fqn}/change_state")
        future = service.call_async(ChangeState.Request(transition=Transition(id=ids[transition])))
        client.spin_until(future.done, timeout, f"the reply of {fqn}/change_state ({transition})")
        return bool(future.result().success)
    finally:
        client.node.destroy_client(service)


def test_transitions_do_what_they_say(client: RosClient, env: dict[str, str], workdir: Path,
                                      tiny_model_path: Path) -> None:
    from diagnostic_msgs.msg import DiagnosticArray

    diagnostics = client.inboxes.get("/diagnostics") or client.subscribe(DiagnosticArray, "/diagnostics", 100)
    process = NodeProcess(node_args(tiny_model_path, NAMESPACE, cameras=cameras_param(CAMERAS), num_tokens=108,
                                    diagnostics_period=0.25),
                          env, workdir / "managed.log", module="moge2_ros.ros.lifecycle")
    rgb = render_example_scene(64, 48, 70.0).rgb
    try:
        process.wait_for_output("unconfigured: waiting for 'configure'")
        assert get_state(client, FQN) == "unconfigured"
        assert client.node.count_publishers(f"{NAMESPACE}/a/depth/image") == 0

        assert change_state(client, FQN, "configure")
        assert get_state(client, FQN) == "inactive"
        client.wait_for_publishers([f"{NAMESPACE}/{c}/depth/image" for c in CAMERAS], process=process)
        assert client.node.count_subscribers(f"{NAMESPACE}/a/image") == 0  # inputs only once active

        assert change_state(client, FQN, "activate")
        assert get_state(client, FQN) == "active"
        ios = connect_cameras(client, NAMESPACE, CAMERAS, OUTPUTS, process)

        def one_frame(name: str) -> Any:
            io = ios[name]
            stamp = client.now()
            image = rgb_image(stamp, rgb, io.frame_id)
            return client.request(lambda: io.image_pub.publish(image), stamp, [io.outputs["depth/image"]],
                                  process=process)

        for name in CAMERAS:
            one_frame(name)

        assert change_state(client, FQN, "deactivate")
        assert get_state(client, FQN) == "inactive"
        client.spin_until(lambda: all(io.image_pub.get_subscription_count() == 0 for io in ios.values()),
                          MESSAGE_TIMEOUT_S, "the node's input subscriptions gone", process)
        sent_ns = client.now_ns()
        publish_paced(client, lambda i: [io.image_pub.publish(rgb_image(client.now(), rgb, io.frame_id))
                                         for io in ios.values()], 10, 10.0, process)
        # the diagnostics keep coming (the node is configured) and say it is inactive with its model loaded
        status = client.spin_until(
            lambda: (s := node_status(diagnostics, FQN)) is not None and s.get("model_loads") == "1"
            and diagnostics.items[-1][0] > sent_ns + 5e8 and s, MESSAGE_TIMEOUT_S, "diagnostics while inactive",
            process)
        assert status["model_loads"] == "1"
        late = [m for io in ios.values() for _, m in io.outputs["depth/image"].items
                if stamp_ns(m.header.stamp) >= sent_ns]
        assert not late, "outputs while inactive"

        assert change_state(client, FQN, "activate")
        client.spin_until(lambda: all(io.image_pub.get_subscription_count() > 0 for io in ios.values()),
                          MESSAGE_TIMEOUT_S, "the node's input subscriptions back", process)
        for name in CAMERAS:
            one_frame(name)
        assert process.output().count("configured: model") == 1  # the model was loaded once

        assert change_state(client, FQN, "deactivate")
        assert change_state(client, FQN, "cleanup")
        assert get_state(client, FQN) == "unconfigured"
        client.spin_until(lambda: client.node.count_publishers(f"{NAMESPACE}/a/depth/image") == 0,
                          MESSAGE_TIMEOUT_S, "the node's publishers gone", process)
        assert "unconfigured: model unloaded" in process.output()

        # A transition the state machine does not have from here is refused; the node keeps serving.
        with pytest.raises(AssertionError, match="timed out"):
            change_state(client, FQN, "activate", timeout=3.0)
        assert process.alive() and get_state(client, FQN) == "unconfigured"

        assert change_state(client, FQN, "shutdown")
        assert process.wait_exit(30.0) == 0, process.output()
        assert "Traceback" not in process.output(), process.output()
    finally:
        process.stop()


def test_a_failed_configure_leaves_the_node_unconfigured(client: RosClient, env: dict[str, str],
                                                         workdir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_model.pt"
    log = workdir / "managed_bad.log"
    # the console script's --managed flag (before --ros-args) runs the same lifecycle node
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moge2_ros.ros.node", "--managed", "--ros-args",
             *node_args(missing, "/managed_bad")], env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
    fqn = "/managed_bad/moge2_node"
    try:
        assert not change_state(client, fqn, "configure")
        assert get_state(client, fqn) == "unconfigured"
        text = log.read_text(errors="replace")
        assert "configure failed, still unconfigured" in text and "no_such_model.pt" in text, text
        assert proc.poll() is None, text  # still serving its lifecycle services
    finally:
        if proc.poll() is None:
            proc.send_signal(subprocess.signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


def test_the_managed_flag_is_read_before_ros_args_only() -> None:
    from moge2_ros.errors import InputError
    from moge2_ros.ros.node import managed_flag

    assert managed_flag(["moge2_node", "--managed", "--ros-args", "-p", "x:=1"]) == \
        (True, ["moge2_node", "--ros-args", "-p", "x:=1"])
    assert managed_flag(["moge2_node", "--managed=false"]) == (False, ["moge2_node"])
    assert managed_flag(["moge2_node", "--managed=True"]) == (True, ["moge2_node"])  # the launch file's value
    assert managed_flag(["moge2_node", "--ros-args", "--managed"]) == \
        (False, ["moge2_node", "--ros-args", "--managed"])  # after --ros-args it is rcl's (and refused there)
    with pytest.raises(InputError, match="--managed: expected true or false, found 'yes'"):
        managed_flag(["moge2_node", "--managed=yes"])
