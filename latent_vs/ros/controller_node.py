"""Node `controller` (executable `controller_node`): measurement -> camera twist, with safety.

Inputs by `method`:
  * mlvs (default): `latent` (std_msgs/Float32MultiArray from the encoder; capture stamp in
    the label, see latent_vs.ros.convert), MLVS control law (eq. 13);
  * pbvs: `camera_pose` (geometry_msgs/PoseStamped, e.g. the simulator's ground truth), for
    runs without a model; goal: the scene's desired pose, or ~/set_goal_from_current;
  * dvs:  `image` (sensor_msgs/Image), photometric visual servoing, no model needed.
Output: `cmd_twist`, geometry_msgs/TwistStamped (header.frame_id = command_frame) or
geometry_msgs/Twist (stamped: false), in command_frame: the camera twist mapped by the
velocity twist matrix of `hand_eye` (the camera pose in command_frame).
Goal: parameter `goal_image` (file; set to "" to clear the goal: state no_goal, zero twist),
topic `goal_image` (sensor_msgs/Image), service `~/set_goal_from_current` (std_srvs/Trigger:
the newest input becomes the goal).
`~/enable` (std_srvs/SetBool) starts/stops servoing (stopping sends one zero twist);
`autostart` enables at start-up. Diagnostics `~/error_norm` (std_msgs/Float32: the law's
own error, mlvs: ‖z − z*‖), `~/state` (std_msgs/String: idle, no_goal, servoing, converged,
stale, fault; transient local) and `~/pose_error_estimate` (geometry_msgs/PoseStamped, for every
input processed while servoing or converged: the law's estimate of the current camera pose
seen from the goal camera pose, header.frame_id "goal" (the goal camera frame), header.stamp
= the input's capture stamp; position = t [m], orientation = the rotation θu as a
quaternion. mlvs: the pose bank's Gauss–Newton estimates of z and z* compared; pbvs: the true
pose difference; dvs: the Gauss–Newton step −v/λ).
Converged: the estimate below converged_translation [m] and converged_rotation [deg] for
converged_steps inputs in a row (logged with the estimate in mm and degrees).
/diagnostics (diagnostic_msgs/DiagnosticArray, every diagnostics_period s; latent_vs.ros.diagnostics):
the state as a level (servoing, converged, idle: OK; no_goal: WARN; stale, fault: ERROR), the
estimated pose error, the law's error (mlvs: latent error ‖z − z*‖), step time, input age and
rate, limits hit.
Safety (latent_vs.servo / latent_vs.safety): limits, input_timeout, future_tolerance,
faults (also a latent far outside the model's range, an image of an absurd size), converged,
parameters checked on set (a refused SetParameters says why), and a zero twist when the node
ends (SIGINT or SIGTERM).
"""
from __future__ import annotations

import sys
import time

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped, Twist, TwistStamped
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.duration import Duration
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Float32, Float32MultiArray, String
from std_srvs.srv import SetBool, Trigger

from .. import geometry, paths
from ..errors import UserError
from ..imageconv import read_grey_image
from ..safety import SETTINGS, ZERO_TWIST, Limits, image_size_problem, settings_problem
from ..servo import METHODS, STATES, ServoController, make_law
from .convert import (COMMAND_QOS, GOAL_QOS, LATEST_QOS, STATE_QOS, image_msg_to_array,
                      is_zero_stamp, latent_stamp, msg_to_latent, msg_to_pose, pose_to_msg, stamp_to_s,
                      twist_to_msg)
from .diagnostics import CONTROLLER_LEVELS, PERIOD_PARAMETER, Diagnostics, Window, period_descriptor_range
from .run import run_node

WATCHDOG_PERIOD_S = 0.02


def _float(text, lo, hi, read_only=False):
    return ParameterDescriptor(description=text, read_only=read_only, floating_point_range=[
        FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)])


def _setting(name, text):
    """A controller setting's descriptor with its range from safety.SETTINGS (one table for
    parameters and bag settings)."""
    lo, hi, _, kind, _ = SETTINGS[name]
    if kind is int:
        return ParameterDescriptor(description=text, integer_range=[
            IntegerRange(from_value=int(lo), to_value=int(hi), step=1)])
    return _float(text, lo, hi)


# name -> (default, descriptor). Units in brackets; ranges are enforced by rclpy on set, the
# rest (strictly positive values, hand_eye, goal_image) by _validate.
PARAMETERS = {
    "method": ("mlvs", ParameterDescriptor(read_only=True, description=(
        "control law: mlvs (latents from the encoder), pbvs (camera_pose, simulation), dvs (image)"))),
    "model_dir": ("", ParameterDescriptor(read_only=True, description=(
        "MLVS model directory; empty: the package's models/default"))),
    "threads": (1, ParameterDescriptor(read_only=True, description="torch intra-op threads of φ (MLVS, CPU) [count]",
                                       integer_range=[IntegerRange(from_value=1, to_value=64, step=1)])),
    "gain": (0.5, _setting("gain", "control gain λ [1/s]: the error decays as exp(-λ t) far from the limits")),
    "k_neighbors": (50, _setting("k_neighbors", "MLVS: neighbours K of the latent regression (eq. 13) [count]")),
    "max_linear_speed": (0.10, _setting("max_linear_speed",
                                        "limit on ‖v‖ [m/s]; the whole twist is scaled to keep its direction")),
    "max_angular_speed": (0.50, _setting("max_angular_speed",
                                         "limit on ‖ω‖ [rad/s]; the whole twist is scaled to keep its direction")),
    "input_timeout": (0.5, _setting("input_timeout",
                                    "input older than this (capture stamp), or none for this long, stops the arm [s]")),
    "future_tolerance": (0.1, _setting("future_tolerance", "input stamped further than this ahead of the "
                                       "controller's clock is refused (fault) [s]")),
    "converged_translation": (0.0002, _setting("converged_translation",
        "converged (the arm stops) when the estimated translation error stays below this [m] "
        "(and the rotation below converged_rotation) for converged_steps inputs; 0: never")),
    "converged_rotation": (0.02, _setting("converged_rotation",
        "converged when the estimated rotation error stays below this [deg] (and the translation "
        "below converged_translation) for converged_steps inputs; 0: never")),
    "converged_steps": (5, _setting("converged_steps",
        "consecutive inputs the estimated pose error must stay within the converged bounds [count]")),
    "hand_eye": ([0.0] * 6, ParameterDescriptor(description=(
        "camera pose in command_frame: x y z [m] roll pitch yaw [rad] (fixed axes X, Y, Z); identity by default"))),
    "command_frame": ("camera", ParameterDescriptor(description=(
        "frame_id of cmd_twist: a frame rigidly attached to the camera (e.g. MoveIt Servo's ee_frame)"))),
    "stamped": (True, ParameterDescriptor(read_only=True, description=(
        "publish geometry_msgs/TwistStamped (true) or geometry_msgs/Twist (false)"))),
    "goal_image": ("", ParameterDescriptor(description=(
        "goal view I*: an image file (png, jpg; grey, colour or 16 bit); empty: none"))),
    "autostart": (False, ParameterDescriptor(read_only=True, description=(
        "servo as soon as a goal is set; false: wait for ~/enable"))),
    PERIOD_PARAMETER: (1.0, ParameterDescriptor(read_only=True, description="period of /diagnostics [s]",
                                                floating_point_range=period_descriptor_range())),
}


class ControllerNode(Node):
    def __init__(self, law=None, **kwargs):
        """`law`: an already built MeasurementLaw or control law (the demo shares the
        encoder's model this way); else one is made from the parameters."""
        super().__init__(kwargs.pop("node_name", "controller"), **kwargs)
        for name, (default, desc) in PARAMETERS.items():
            self.declare_parameter(name, default, desc)
        p = {name: self.get_parameter(name).value for name in PARAMETERS}
        why = self._check(p)
        if why:
            raise UserError(f"controller: {why}")
        self.method = p["method"]
        if law is None:
            if self.method == "mlvs":
                import torch
                torch.set_num_threads(int(p["threads"]))
            model_dir = (p["model_dir"] or paths.model_dir("default")) if self.method == "mlvs" else None
            law = make_law(self.method, model_dir, gain=p["gain"], k_neighbors=p["k_neighbors"])
        self.ctl = ServoController(law, Limits(p["max_linear_speed"], p["max_angular_speed"]),
                                   input_timeout=p["input_timeout"],
                                   converged_translation=p["converged_translation"],
                                   converged_rotation=p["converged_rotation"], converged_steps=p["converged_steps"],
                                   hand_eye=geometry.rpy_to_matrix(*p["hand_eye"]), enabled=p["autostart"],
                                   future_tolerance=p["future_tolerance"])
        self.law = self.ctl.law
        if hasattr(self.law, "warm_up"):
            self.law.warm_up()
        self.law.gain = p["gain"]
        self._apply_k(p["k_neighbors"])
        self.command_frame = p["command_frame"]
        self.stamped = bool(p["stamped"])
        self.last_input = None        # newest measurement (latent, pose or image) for set_goal_from_current
        self.published_state = None
        self.twists_sent = 0
        # /diagnostics: numbers over the last period
        self.step_ms = Window()        # time to process one input [ms]
        self.input_age = Window()      # receive time - capture stamp of each input [s]
        self.limits_hit = Window()     # twists the limits scaled down (value: the scale)
        self.last_event = ""           # the last stale/fault line

        self.cmd_pub = self.create_publisher(TwistStamped if self.stamped else Twist, "cmd_twist", COMMAND_QOS)
        self.err_pub = self.create_publisher(Float32, "~/error_norm", 10)
        self.estimate_pub = self.create_publisher(PoseStamped, "~/pose_error_estimate", 10)
        self.state_pub = self.create_publisher(String, "~/state", STATE_QOS)
        if self.law.kind == "latent":
            self.create_subscription(Float32MultiArray, "latent", self.on_latent, LATEST_QOS)
        elif self.law.kind == "pose":
            self.create_subscription(PoseStamped, "camera_pose", self.on_pose, LATEST_QOS)
            from ..scene import SceneConfig, goal_pose
            self.ctl.set_goal(goal_pose(SceneConfig()))  # the simulator's desired pose
        else:
            self.create_subscription(Image, "image", self.on_image, LATEST_QOS)
        if self.law.kind != "pose":  # pbvs's goal is a pose
            self.create_subscription(Image, "goal_image", self.on_goal_image, GOAL_QOS)
        self.create_service(SetBool, "~/enable", self.on_enable)
        self.create_service(Trigger, "~/set_goal_from_current", self.on_set_goal_from_current)
        if p["goal_image"]:
            self._set_goal_from_file(p["goal_image"], at_start=True)
        self.add_on_set_parameters_callback(self.on_set_parameters)
        self.create_timer(WATCHDOG_PERIOD_S, self.on_watchdog)
        self.diagnostics = Diagnostics(self, "servo", p[PERIOD_PARAMETER], self._diagnostic_status,
                                       hardware_id=lambda: self.command_frame, on_publish=self._reset_period)
        self._publish_state(force=True)
        self.get_logger().info(
            f"controller ready: method {self.method}, gain {p['gain']} 1/s, limits {p['max_linear_speed']} m/s "
            f"{p['max_angular_speed']} rad/s, input_timeout {p['input_timeout']} s, converged below "
            f"{1000 * p['converged_translation']:g} mm and {p['converged_rotation']:g}° for "
            f"{p['converged_steps']} inputs, command_frame '{self.command_frame}', "
            f"{'enabled' if self.ctl.enabled else 'waiting for ~/enable'}")

    # ------------------------------------------------------------------ parameters
    @staticmethod
    def _check(p: dict) -> str | None:
        """Why a set of parameter values is not acceptable (beyond rclpy's range checks)."""
        if "method" in p and p["method"] not in METHODS:
            return f"parameter method must be one of {', '.join(METHODS)}, got '{p['method']}'"
        why = settings_problem(p)
        return f"parameter {why}" if why else None

    def on_set_parameters(self, params) -> SetParametersResult:
        values = {q.name: q.value for q in params}
        why = self._check(values)
        if why is None:
            try:
                why = self._apply(values)
            except (ValueError, TypeError, ArithmeticError) as e:  # never a crash: a refusal with the reason
                why = f"{type(e).__name__}: {e}"
        if why:
            self.get_logger().warning(f"parameter change refused: {why}")
            return SetParametersResult(successful=False, reason=why)
        return SetParametersResult(successful=True)

    def _apply(self, values: dict) -> str | None:
        if "goal_image" in values:
            if values["goal_image"]:
                why = self._set_goal_from_file(values["goal_image"])
                if why:
                    return why
            else:
                self._emit(self.ctl.clear_goal()[0])
        if "max_linear_speed" in values or "max_angular_speed" in values:
            self.ctl.limits = Limits(values.get("max_linear_speed", self.ctl.limits.max_linear_speed),
                                     values.get("max_angular_speed", self.ctl.limits.max_angular_speed))
        if "gain" in values:
            self.law.gain = values["gain"]
        if "k_neighbors" in values:
            self._apply_k(values["k_neighbors"])
        if "input_timeout" in values:
            self.ctl.input_timeout = float(values["input_timeout"])
        if "future_tolerance" in values:
            self.ctl.future_tolerance = float(values["future_tolerance"])
        if {"converged_translation", "converged_rotation", "converged_steps"} & values.keys():
            c = self.ctl
            c.set_convergence(values.get("converged_translation", c.converged_translation),
                              values.get("converged_rotation", c.converged_rotation),
                              values.get("converged_steps", c.converged_steps))
        if "hand_eye" in values:
            self.ctl.set_hand_eye(geometry.rpy_to_matrix(*values["hand_eye"]))
        if "command_frame" in values:
            self.command_frame = values["command_frame"]
        return None

    def _apply_k(self, k: int) -> None:
        if self.law.kind == "latent":
            self.law.k = int(k)

    # ------------------------------------------------------------------ goals
    def _goal_from_image(self, img: np.ndarray):
        """A goal measurement from a goal image: z* = ψ(I*) for mlvs, I* for dvs."""
        why = image_size_problem(*np.shape(img)[:2])
        if why:
            raise ValueError(why)
        if self.law.kind == "latent":
            return self.law.law.model.encode(img[None])[0]
        if self.law.kind == "image":
            return img
        raise ValueError("method pbvs takes no goal image (its goal is a pose: the scene's "
                         "desired pose, or ~/set_goal_from_current)")

    def _set_goal(self, goal, source: str) -> str | None:
        try:
            self.ctl.set_goal(goal)
        except ValueError as e:
            return f"goal from {source} refused: {e}"
        self.get_logger().info(f"goal set from {source}")
        self._publish_state()
        return None

    def _set_goal_from_file(self, path: str, at_start: bool = False) -> str | None:
        try:
            goal = self._goal_from_image(read_grey_image(path))
        except ValueError as e:
            why = f"goal_image: {e}"
            if at_start:
                raise UserError(f"controller: {why}") from None
            return why
        return self._set_goal(goal, f"file {path}")

    def on_goal_image(self, msg: Image) -> None:
        try:
            goal = self._goal_from_image(image_msg_to_array(msg))
        except ValueError as e:
            self.get_logger().error(f"goal_image topic: {e}")
            return
        why = self._set_goal(goal, "topic goal_image")
        if why:
            self.get_logger().error(why)

    def on_set_goal_from_current(self, request, response):
        if self.last_input is None:
            response.success, response.message = False, f"no {self.law.kind} received yet"
            return response
        why = self._set_goal(self.last_input, "the current view")
        response.success = why is None
        response.message = why or f"goal set from the current {self.law.kind}"
        return response

    def on_enable(self, request, response):
        twist, state = self.ctl.set_enabled(request.data)
        self._emit(twist)
        response.success = True
        response.message = f"{'enabled' if request.data else 'disabled'}; state {state}"
        if request.data and not self.ctl.has_goal:
            response.message += " (no goal yet: set one to start servoing)"
        return response

    # ------------------------------------------------------------------ loop
    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    @staticmethod
    def _stamp_s(stamp) -> float | None:
        return None if stamp is None or is_zero_stamp(stamp) else stamp_to_s(stamp)

    def _process(self, y, stamp) -> None:
        """One input captured at `stamp` (builtin_interfaces/Time; None or zero: unknown):
        safety state machine, error diagnostics (of this input), twist."""
        t0 = time.perf_counter()
        stamp_s, now_s = self._stamp_s(stamp), self._now_s()
        twist, state = self.ctl.update(y, stamp_s, now_s)
        self.step_ms.add(1e3 * (time.perf_counter() - t0))
        if stamp_s is not None:
            self.input_age.add(now_s - stamp_s)
        if twist is not None and state == "servoing" and self.ctl.last_scale < 1.0:
            self.limits_hit.add(self.ctl.last_scale)
        if state in ("servoing", "converged") and np.isfinite(self.ctl.error_norm):
            self.err_pub.publish(Float32(data=float(self.ctl.error_norm)))
            if stamp is None or is_zero_stamp(stamp):
                stamp = self.get_clock().now().to_msg()
            self.estimate_pub.publish(pose_to_msg(geometry.pose_to_matrix(self.ctl.pose_error), stamp, "goal"))
        self._emit(twist)

    def on_latent(self, msg: Float32MultiArray) -> None:
        z, _, _ = msg_to_latent(msg)
        if np.all(np.isfinite(z)):
            self.last_input = z
        self._process(z, latent_stamp(msg))

    def on_pose(self, msg: PoseStamped) -> None:
        T = msg_to_pose(msg)
        if np.all(np.isfinite(T)):
            self.last_input = T
        self._process(T, msg.header.stamp)

    def on_image(self, msg: Image) -> None:
        try:
            img = image_msg_to_array(msg)
        except ValueError as e:
            self._emit(self.ctl.report_fault(f"bad image: {e}")[0])
            return
        self.last_input = img
        self._process(img, msg.header.stamp)

    def on_watchdog(self) -> None:
        twist, _ = self.ctl.tick(self._now_s())
        self._emit(twist)

    def _emit(self, twist) -> None:
        """Publish a twist (None: nothing), then log and publish any state change."""
        if twist is not None:
            self.cmd_pub.publish(twist_to_msg(twist, self.stamped, self.get_clock().now().to_msg(), self.command_frame))
            self.twists_sent += 1
        ev = self.ctl.event
        if ev:
            log = self.get_logger()
            if self.ctl.state == "fault":
                log.error(f"fault: {ev}; zero twist sent, waiting for good input")
                self.last_event = f"fault: {ev}"
            elif self.ctl.state == "stale":
                log.warning(f"stale input: {ev}; zero twist sent")
                self.last_event = f"stale: {ev}"
            else:
                log.info(ev)
            self.ctl.event = None
        self._publish_state()

    def _publish_state(self, force: bool = False) -> None:
        state = self.ctl.state
        assert state in STATES
        if force or state != self.published_state:
            self.state_pub.publish(String(data=state))
            self.published_state = state

    # ------------------------------------------------------------------ /diagnostics
    def _reset_period(self) -> None:
        for w in (self.step_ms, self.input_age, self.limits_hit):
            w.reset()

    def _diagnostic_status(self, period_s: float):
        c = self.ctl
        state = c.state
        est = c.pose_error if state in ("servoing", "converged") else np.full(6, np.nan)
        error_name = "latent error ‖z − z*‖" if self.law.kind == "latent" else f"{self.method} error norm"
        values = {
            "state": state,
            "method": self.method,
            "enabled": c.enabled,
            "goal": "set" if c.has_goal else "none",
            "estimated translation error [mm]": 1e3 * float(np.linalg.norm(est[:3])),
            "estimated rotation error [deg]": float(np.rad2deg(np.linalg.norm(est[3:]))),
            error_name: c.error_norm if state in ("servoing", "converged") else None,
            "inputs [Hz]": self.step_ms.n / period_s,
            "step time [ms]": self.step_ms.mean,
            "step time max [ms]": self.step_ms.max,
            "input age [s]": self.input_age.last if self.input_age.n else None,
            "input age max [s]": self.input_age.max,
            "limits hit (period)": self.limits_hit.n,
            "limits hit (total)": self.limits_hit.total,
            "twists sent": self.twists_sent,
            "input_timeout [s]": c.input_timeout,
            "last stale/fault": self.last_event or "none",
        }
        message = {"servoing": "servoing", "converged": "converged: the arm holds still",
                   "idle": "idle: waiting for ~/enable", "no_goal": "enabled but no goal: the arm holds still",
                   }.get(state, self.last_event or state)
        if state in ("stale", "fault"):
            message += "; zero twist sent"
        elif state == "servoing" and self.limits_hit.n:
            message += f" (speed limits hit on {self.limits_hit.n} twists)"
        return CONTROLLER_LEVELS[state], message, values

    def stop(self) -> None:
        """Zero twist on the way out (called by run_node and the demo before shutdown)."""
        if not rclpy.ok(context=self.context):
            return
        self.cmd_pub.publish(twist_to_msg(ZERO_TWIST, self.stamped, self.get_clock().now().to_msg(), self.command_frame))
        self.cmd_pub.wait_for_all_acked(Duration(seconds=0.3))
        self.get_logger().info("stopped: zero twist sent")


def main(args=None) -> int:
    return run_node(ControllerNode, "controller_node", args)


if __name__ == "__main__":
    sys.exit(main())
