"""``moge2_node`` as a managed (lifecycle) node: ``moge2_node --managed`` or ``python -m moge2_ros.ros.lifecycle``.

Transitions, driven through the standard services ``<node>/change_state`` and ``<node>/get_state``
(``lifecycle_msgs``; e.g. by nav2's lifecycle manager):

===============  ===================================================================================================
transition       what happens
===============  ===================================================================================================
configure        load and warm the model, create every camera's publishers, pipeline and the inference worker.
                 SUCCESS -> inactive.  A model that cannot load or unusable parameters: FAILURE, the node stays
                 unconfigured (nothing kept) and logs the reason.
activate         subscribe to every camera's inputs; outputs flow.  SUCCESS -> active.
deactivate       unsubscribe and stop publishing (frames still waiting are dropped, counted); the model stays.
cleanup          stop the worker, destroy the topics, free the model (and the CUDA cache).  -> unconfigured.
shutdown         as cleanup, from any state; the process then exits.
error            (a transition raised) released as in cleanup; -> unconfigured.
===============  ===================================================================================================

The parameters are declared when the process starts (they can be set before ``configure``); the work is the
same code as the plain node's (:class:`~moge2_ros.ros.runtime.Moge2Runtime`).
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from typing import Any

import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from ..errors import Moge2RosError
from .camera_params import declare_node_parameters
from .host_memory import keep_freed_memory
from .runtime import Moge2Runtime

__all__ = ["Moge2LifecycleNode", "main"]

#: Seconds the process keeps serving after the shutdown transition (the reply of change_state must go out).
LINGER_S = 0.5


class Moge2LifecycleNode(LifecycleNode):
    """The managed MoGe-2 node (see the module docstring for its transitions).

    Raises:
        InputError: from the constructor, for camera names or override values that cannot be declared.
    """

    def __init__(self, node_name: str = "moge2_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        cfg, cameras, overrides = declare_node_parameters(self)
        self.runtime = Moge2Runtime(self, cfg, cameras, overrides)
        self.add_on_set_parameters_callback(self.runtime.on_set_parameters)
        self._done = threading.Event()
        self.get_logger().info(f"unconfigured: waiting for 'configure' on {self.get_fully_qualified_name()}"
                               "/change_state")

    @property
    def finished(self) -> bool:
        """True after the shutdown transition."""
        return self._done.is_set()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load and warm the model, create the publishers.  FAILURE (left unconfigured) when it cannot."""
        try:
            self.runtime.load()
        except Moge2RosError as exc:
            self.get_logger().error(f"configure failed, still unconfigured: {exc}")
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # a bug or a device failure: the error transition (released, unconfigured)
            self.get_logger().error(f"configure raised {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            return TransitionCallbackReturn.ERROR
        self.get_logger().info(f"configured: {self.runtime.describe()}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the inputs; outputs flow."""
        self.runtime.start_inputs()
        self.get_logger().info("active: " + ", ".join(c.input_topic for c in self.runtime.cameras.values()))
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe and stop publishing; the model stays loaded."""
        self.runtime.stop_inputs()
        self.get_logger().info("inactive: inputs unsubscribed, model kept")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the model and the topics."""
        self.runtime.unload()
        self.get_logger().info("unconfigured: model unloaded")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything; the process exits after this transition."""
        self.runtime.unload()
        self.get_logger().info("finalized: shutting down")
        self._done.set()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: release everything and go back to unconfigured."""
        self.runtime.unload()
        self.get_logger().error("a transition failed: resources released, unconfigured")
        return TransitionCallbackReturn.SUCCESS


def main(args: list[str] | None = None) -> int:
    """Entry point of the managed node (``moge2_node --managed`` calls it too)."""
    rclpy.init(args=args)
    keep_freed_memory()
    try:
        node = Moge2LifecycleNode()
    except Moge2RosError as exc:
        rclpy.logging.get_logger("moge2_node").fatal(f"cannot start: {exc}")
        rclpy.try_shutdown()
        return 1
    try:
        while rclpy.ok() and not node.finished:
            try:
                rclpy.spin_once(node, timeout_sec=0.1)
            except RCLError as exc:  # rclpy raises from the change_state service on a transition the state
                # machine does not have (e.g. 'activate' while unconfigured): refuse it, keep serving
                node.get_logger().error(f"refused a lifecycle request: {exc}")
        # Keep serving a moment after 'shutdown' so that the service reply reaches the caller.
        linger_until = time.monotonic() + LINGER_S
        while rclpy.ok() and node.finished and time.monotonic() < linger_until:
            rclpy.spin_once(node, timeout_sec=0.05)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.runtime.unload()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
