"""/diagnostics (diagnostic_msgs/DiagnosticArray) for the encoder and the controller, the
topic that rqt_robot_monitor and diagnostic_aggregator read.

Each node publishes one DiagnosticStatus every `diagnostics_period` seconds (default 1; on
the wall clock, also with use_sim_time), named "<node's full name>: <task>" as
diagnostic_updater names them, with its numbers over the last period as key/values.

Levels (docs/ros.md): controller servoing, converged, idle: OK; no_goal: WARN (enabled, but
nothing to servo to); stale, fault: ERROR (the arm was stopped with a zero twist).
Encoder: OK while images are encoded (and camera_info matches the model, when there is one);
WARN: no image in the last period, no camera_info, or camera_info that differs from the
model's intrinsics (strict_intrinsics false); ERROR: strict_intrinsics refusing to encode,
or bad images (answered with NaN latents) in the last period.
"""
from __future__ import annotations

import math
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR", DiagnosticStatus.STALE: "STALE"}

# controller state -> level
CONTROLLER_LEVELS = {"servoing": OK, "converged": OK, "idle": OK, "no_goal": WARN, "stale": ERROR, "fault": ERROR}

TOPIC = "/diagnostics"
PERIOD_PARAMETER = "diagnostics_period"
PERIOD_RANGE = (0.1, 60.0)   # [s]


def fmt(value, digits: int = 3) -> str:
    """A number for a KeyValue: NaN/None -> 'n/a'."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    v = float(value)
    return "n/a" if not math.isfinite(v) else f"{v:.{digits}g}" if abs(v) >= 1e4 else f"{v:.{digits}f}"


class Window:
    """Samples over one diagnostics period (count, mean, max, last), and a total count."""

    def __init__(self):
        self.total = 0
        self.last = float("nan")
        self.reset()

    def reset(self) -> None:
        self.n, self.sum, self.max = 0, 0.0, float("nan")

    def add(self, x: float) -> None:
        self.n += 1
        self.total += 1
        self.sum += x
        self.last = x
        self.max = x if not (self.max >= x) else self.max

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n else float("nan")


class Diagnostics:
    """Publishes `make_status()` (-> (level, message, {key: value})) on /diagnostics every
    period seconds; `on_publish` (optional) runs after each (e.g. to reset windows)."""

    def __init__(self, node, task: str, period_s: float, make_status, hardware_id=lambda: "", on_publish=None):
        self.node, self.task = node, task
        self.name = f"{node.get_fully_qualified_name().lstrip('/')}: {task}"
        self.make_status, self.hardware_id, self.on_publish = make_status, hardware_id, on_publish
        self.pub = node.create_publisher(DiagnosticArray, TOPIC, 10)
        self.last_publish = time.monotonic()
        self.timer = None
        self.published = 0
        self.set_period(period_s)

    def set_period(self, period_s: float) -> None:
        if self.timer is not None:
            self.node.destroy_timer(self.timer)
        self.period_s = float(period_s)
        self.timer = self.node.create_timer(self.period_s, self.publish, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def status(self) -> DiagnosticStatus:
        now = time.monotonic()
        level, message, values = self.make_status(max(now - self.last_publish, 1e-6))
        st = DiagnosticStatus(level=level, name=self.name, message=message, hardware_id=str(self.hardware_id()))
        st.values = [KeyValue(key=k, value=v if isinstance(v, str) else fmt(v)) for k, v in values.items()]
        return st

    def publish(self) -> None:
        try:
            st = self.status()
        except Exception as e:   # diagnostics never take the node down
            st = DiagnosticStatus(level=ERROR, name=self.name, message=f"diagnostics failed: {type(e).__name__}: {e}")
        arr = DiagnosticArray(status=[st])
        arr.header.stamp = self.node.get_clock().now().to_msg()
        self.pub.publish(arr)
        self.published += 1
        self.last_publish = time.monotonic()
        if self.on_publish is not None:
            self.on_publish()


def period_descriptor_range():
    from rcl_interfaces.msg import FloatingPointRange
    return [FloatingPointRange(from_value=PERIOD_RANGE[0], to_value=PERIOD_RANGE[1], step=0.0)]
