"""A watching node for the demo, the latency benchmark and the tests: what a user would see
with `ros2 topic echo` on cmd_twist, the controller's ~/state, ~/error_norm and
~/pose_error_estimate and the simulator's camera_pose, plus clients of the controller's services.

`spin_until(executor, predicate, timeout_s)` is the bounded spin loop used everywhere
instead of sleeps.
"""
from __future__ import annotations

import time

import numpy as np
from geometry_msgs.msg import PoseStamped, Twist, TwistStamped
from rclpy.node import Node
from std_msgs.msg import Float32, String
from std_srvs.srv import SetBool, Trigger

from .convert import COMMAND_QOS, LATEST_QOS, STATE_QOS, msg_to_pose, msg_to_twist


def spin_until(executor, predicate, timeout_s: float, step_s: float = 0.01) -> bool:
    """Spin `executor` until predicate() is true or timeout_s passes; returns predicate()."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return bool(predicate())
        executor.spin_once(timeout_sec=step_s)
    return True


class Probe(Node):
    def __init__(self, controller: str = "controller", stamped: bool = True, node_name: str = "probe",
                 watch_pose: bool = True, **kwargs):
        super().__init__(node_name, **kwargs)
        self.twists: list[np.ndarray] = []        # every cmd_twist received, in order
        self.twist_times: list[float] = []        # monotonic receive times [s]
        self.twist_msgs: list = []
        self.states: list[str] = []
        self.errors: list[float] = []
        self.error_times: list[float] = []         # monotonic receive times [s]
        self.estimates: list = []                  # ~/pose_error_estimate messages (PoseStamped)
        self.estimate_times: list[float] = []      # monotonic receive times [s]
        self.pose: np.ndarray | None = None
        self.poses: list[np.ndarray] = []
        self.create_subscription(TwistStamped if stamped else Twist, "cmd_twist", self._on_twist, COMMAND_QOS)
        self.create_subscription(String, f"{controller}/state", lambda m: self.states.append(m.data), STATE_QOS)
        self.create_subscription(Float32, f"{controller}/error_norm", self._on_error, 10)
        self.create_subscription(PoseStamped, f"{controller}/pose_error_estimate", self._on_estimate, 10)
        if watch_pose:
            self.create_subscription(PoseStamped, "camera_pose", self._on_pose, LATEST_QOS)
        self.enable_client = self.create_client(SetBool, f"{controller}/enable")
        self.goal_client = self.create_client(Trigger, f"{controller}/set_goal_from_current")

    def _on_twist(self, msg) -> None:
        self.twists.append(msg_to_twist(msg))
        self.twist_times.append(time.monotonic())
        self.twist_msgs.append(msg)

    def _on_error(self, msg: Float32) -> None:
        self.error_times.append(time.monotonic())
        self.errors.append(msg.data)

    def _on_estimate(self, msg: PoseStamped) -> None:
        self.estimate_times.append(time.monotonic())
        self.estimates.append(msg)

    def _on_pose(self, msg: PoseStamped) -> None:
        self.pose = msg_to_pose(msg)
        self.poses.append(self.pose)

    def stopped(self, state: str, since: int) -> bool:
        """The controller reports `state` and a zero twist came after twist number `since`
        (the two topics are not ordered with respect to each other)."""
        return self.state == state and any(not np.any(t) for t in self.twists[since:])

    def moving(self, since: int) -> bool:
        """Servoing, with a non-zero twist after twist number `since`."""
        return self.state == "servoing" and any(np.any(t) for t in self.twists[since:])

    @property
    def state(self) -> str | None:
        return self.states[-1] if self.states else None

    def call(self, executor, client, request, timeout_s: float = 10.0):
        """Call a service and spin until the answer (None on timeout)."""
        if not spin_until(executor, client.service_is_ready, timeout_s):
            return None
        future = client.call_async(request)
        spin_until(executor, future.done, timeout_s)
        return future.result() if future.done() else None

    def enable(self, executor, on: bool = True, timeout_s: float = 10.0):
        return self.call(executor, self.enable_client, SetBool.Request(data=on), timeout_s)

    def set_goal_from_current(self, executor, timeout_s: float = 10.0):
        return self.call(executor, self.goal_client, Trigger.Request(), timeout_s)
