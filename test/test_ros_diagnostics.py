"""/diagnostics (issue 14, item 4) over real DDS: the controller's and the encoder's
DiagnosticStatus, their levels in every state (servoing/converged/idle OK, no_goal WARN,
stale/fault ERROR; encoder OK/WARN/ERROR), the numbers they carry (estimated pose error,
latent error, step time, input age, limits hit; encoder rate and ψ time), the period
parameter, and strict_intrinsics end to end: the encoder withholds the latents, the
controller goes stale with a zero twist, both say ERROR."""
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from latent_vs import geometry  # noqa: E402
from latent_vs.camera import default_camera  # noqa: E402
from latent_vs.control.mlvs import MLVS  # noqa: E402
from latent_vs.learning.export import load_model  # noqa: E402
from latent_vs.posebank import BankConfig  # noqa: E402
from latent_vs.ros import intrinsics  # noqa: E402
from latent_vs.ros.controller_node import ControllerNode  # noqa: E402
from latent_vs.ros.convert import array_to_image_msg, pose_to_msg  # noqa: E402
from latent_vs.ros.diagnostics import CONTROLLER_LEVELS, ERROR, OK, WARN, fmt  # noqa: E402
from latent_vs.ros.encoder_node import EncoderNode  # noqa: E402
from latent_vs.ros.probe import Probe, spin_until  # noqa: E402
from latent_vs.scene import SceneConfig, goal_pose  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.usefixtures("ros")]
GOAL = goal_pose(SceneConfig())


class Monitor(Node):
    """What rqt_robot_monitor sees: the newest status of each name on /diagnostics."""

    def __init__(self):
        super().__init__("monitor")
        self.latest: dict[str, DiagnosticStatus] = {}
        self.times: dict[str, list[float]] = {}
        self.create_subscription(DiagnosticArray, "/diagnostics", self.on_array, 10)

    def on_array(self, msg: DiagnosticArray) -> None:
        for st in msg.status:
            self.latest[st.name] = st
            self.times.setdefault(st.name, []).append(time.monotonic())

    def values(self, name: str) -> dict[str, str]:
        return {kv.key: kv.value for kv in self.latest[name].values}

    def wait(self, ex, name: str, pred, timeout_s: float = 6.0) -> DiagnosticStatus:
        """Spin until the newest status of `name` satisfies pred(status); returns it."""
        spin_until(ex, lambda: name in self.latest and pred(self.latest[name]), timeout_s)
        assert name in self.latest, f"no {name} on /diagnostics (have {sorted(self.latest)})"
        return self.latest[name]


def level(lv):
    return lambda st: st.level == lv


def add(ex, *nodes):
    for n in nodes:
        ex.add_node(n)
    return nodes


def params(**kw):
    return [Parameter(k, value=v) for k, v in kw.items()]


def test_levels_table():
    assert {s: CONTROLLER_LEVELS[s] for s in ("servoing", "converged", "idle")} == dict.fromkeys(
        ("servoing", "converged", "idle"), OK)
    assert CONTROLLER_LEVELS["no_goal"] == WARN
    assert CONTROLLER_LEVELS["stale"] == CONTROLLER_LEVELS["fault"] == ERROR
    assert fmt(float("nan")) == "n/a" and fmt(None) == "n/a" and fmt(3) == "3" and fmt(0.12345) == "0.123"


def test_controller_diagnostics_follow_the_states(ex):
    ctl = ControllerNode(parameter_overrides=params(
        method="pbvs", gain=2.0, max_linear_speed=0.01, max_angular_speed=0.05, input_timeout=0.3,
        diagnostics_period=0.2, command_frame="tool0"))
    mon, probe = Monitor(), Probe(watch_pose=False)
    pose_pub = probe.create_publisher(PoseStamped, "camera_pose", 10)
    add(ex, ctl, mon, probe)
    name = "controller: servo"
    st = mon.wait(ex, name, level(OK))
    assert st.message == "idle: waiting for ~/enable" and st.hardware_id == "tool0"
    v = mon.values(name)
    assert v["state"] == "idle" and v["method"] == "pbvs" and v["estimated translation error [mm]"] == "n/a"
    # the period parameter: 0.2 s
    n0 = len(mon.times[name])
    spin_until(ex, lambda: False, 1.0)
    assert 3 <= len(mon.times[name]) - n0 <= 7

    assert probe.enable(ex).success
    # servoing: poses 5 cm and 0.1 rad off the goal; the limits scale every twist down
    off = GOAL @ geometry.pose_to_matrix([0.05, -0.02, 0.03, 0.0, 0.1, 0.0])
    t_end = time.monotonic() + 2.0
    while time.monotonic() < t_end and not (mon.latest[name].level == OK and mon.values(name)["state"] == "servoing"
                                              and mon.values(name)["limits hit (period)"] != "0"):
        pose_pub.publish(pose_to_msg(off, ctl.get_clock().now().to_msg(), "world"))
        spin_until(ex, lambda: False, 0.03)
    st = mon.latest[name]
    v = mon.values(name)
    assert st.level == OK and v["state"] == "servoing", (st.message, v)
    assert st.message.startswith("servoing (speed limits hit on")
    assert float(v["estimated translation error [mm]"]) == pytest.approx(1e3 * np.linalg.norm([0.05, -0.02, 0.03]),
                                                                      rel=0.05)
    assert float(v["estimated rotation error [deg]"]) == pytest.approx(np.rad2deg(0.1), rel=0.05)
    assert float(v["pbvs error norm"]) > 0
    assert float(v["inputs [Hz]"]) > 5 and 0 <= float(v["step time [ms]"]) < 500
    assert 0 <= float(v["input age [s]"]) < 0.3 and int(v["limits hit (total)"]) > 0

    # no input: stale -> ERROR, zero twist sent
    st = mon.wait(ex, name, level(ERROR))
    assert mon.values(name)["state"] == "stale" and "zero twist sent" in st.message and "no input" in st.message
    assert probe.stopped("stale", 0)

    # a NaN pose: fault -> ERROR
    bad = pose_to_msg(off, ctl.get_clock().now().to_msg(), "world")
    bad.pose.position.x = float("nan")
    pose_pub.publish(bad)
    st = mon.wait(ex, name, lambda s: mon.values(name)["state"] == "fault")
    assert st.level == ERROR and st.message.startswith("fault: bad input") and "zero twist sent" in st.message

    # at the goal: converged -> OK
    t_end = time.monotonic() + 3.0
    while time.monotonic() < t_end and mon.values(name)["state"] != "converged":
        pose_pub.publish(pose_to_msg(GOAL, ctl.get_clock().now().to_msg(), "world"))
        spin_until(ex, lambda: False, 0.03)
    st = mon.latest[name]
    assert mon.values(name)["state"] == "converged" and st.level == OK, st.message


def test_controller_without_a_goal_warns(ex):
    ctl = ControllerNode(parameter_overrides=params(method="dvs", autostart=True, diagnostics_period=0.2))
    mon = Monitor()
    add(ex, ctl, mon)
    st = mon.wait(ex, "controller: servo", level(WARN))
    assert mon.values("controller: servo")["state"] == "no_goal"
    assert st.message == "enabled but no goal: the arm holds still"
    assert mon.values("controller: servo")["dvs error norm"] == "n/a"


def test_controller_diagnostics_under_a_namespace(ex):
    ctl = ControllerNode(parameter_overrides=params(method="pbvs", diagnostics_period=0.2),
                         cli_args=["--ros-args", "-r", "__ns:=/arm1"])
    mon = Monitor()
    add(ex, ctl, mon)
    assert mon.wait(ex, "arm1/controller: servo", level(OK)).name == "arm1/controller: servo"


# ------------------------------------------------------------------ encoder (and strict end to end)
@pytest.fixture(scope="module")
def model(random_model):
    return load_model(random_model("diag-test", 16))


def camera_info(width, height, scale=1.0):
    """A width x height camera whose crop and resize give the model's intrinsics (x scale on the focal)."""
    m = intrinsics.model_intrinsics(default_camera(64))
    s = min(width, height)
    k = 64 / s
    fx, fy = scale * m.fx / k, scale * m.fy / k
    cx, cy = (m.cx + 0.5) / k - 0.5 + (width - s) // 2, (m.cy + 0.5) / k - 0.5 + (height - s) // 2
    msg = CameraInfo(width=width, height=height)
    msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    return msg


class FakeCamera:
    def __init__(self, ex, node):
        self.ex = ex
        self.image_pub = node.create_publisher(Image, "image", 10)
        self.info_pub = node.create_publisher(CameraInfo, "camera_info", 10)
        img = np.random.default_rng(0).integers(0, 255, (480, 640), dtype=np.uint8)
        self.msg = array_to_image_msg(img, frame_id="cam_optical")

    def run(self, seconds, info=None, clock=None, until=None):
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end and not (until and until()):
            if info is not None:
                self.info_pub.publish(info)
            if clock is not None:
                self.msg.header.stamp = clock.now().to_msg()
            self.image_pub.publish(self.msg)
            spin_until(self.ex, lambda: False, 0.05)


def test_encoder_diagnostics_rate_psi_time_and_intrinsics_levels(ex, model):
    enc = EncoderNode(model=model, parameter_overrides=params(diagnostics_period=0.3))
    mon, cam_node = Monitor(), Node("fake_camera")
    cam = FakeCamera(ex, cam_node)
    add(ex, enc, mon, cam_node)
    name = "encoder: encoder"
    st = mon.wait(ex, name, level(WARN))
    assert st.message == "no image yet"
    assert spin_until(ex, lambda: enc.sub is not None and cam.image_pub.get_subscription_count() > 0, 5.0)
    # images with a matching camera_info: OK, with the rate and ψ time
    cam.run(4.0, info=camera_info(640, 480),
            until=lambda: mon.latest[name].level == OK and float(mon.values(name)["images encoded [Hz]"]) > 5)
    st, v = mon.latest[name], mon.values(name)
    assert st.level == OK and st.message.startswith("encoding at"), (st.message, v)
    assert float(v["images encoded [Hz]"]) > 5 and 0 < float(v["ψ time [ms]"]) < 1000
    assert float(v["ψ time max [ms]"]) >= float(v["ψ time [ms]"])
    assert v["intrinsics"] == "match" and v["image"] == "640x480 mono8" and st.hardware_id == "cam_optical"
    assert v["camera_info topic"] == "/camera_info" and v["strict_intrinsics"] == "false"
    # a camera with 10% longer focal lengths: WARN (not strict: still encoding)
    cam.run(4.0, info=camera_info(640, 480, 1.1), until=lambda: mon.latest[name].level == WARN)
    st, v = mon.latest[name], mon.values(name)
    assert st.level == WARN and "differ from the model's" in st.message, st.message
    assert float(v["intrinsics difference (worst) [%]"]) == pytest.approx(10.0, abs=0.01)
    # a bad image: ERROR for that period
    cam.image_pub.publish(Image(height=10, width=10, step=10, encoding="mono8", data=bytes(50)))
    st = mon.wait(ex, name, level(ERROR))
    assert "bad image" in st.message and mon.values(name)["bad images (total)"] == "1"
    # images stop: WARN, no image for ...
    st = mon.wait(ex, name, lambda s: s.message.startswith("no image for"))
    assert st.level == WARN


def small_mlvs(model):
    return MLVS(model, k=5, bank_config=BankConfig(grid_steps=4, near_goal=100, index="flat"), cache_dir="")


def test_strict_intrinsics_stops_the_arm_and_both_nodes_say_error(ex, model):
    """A camera whose camera_info differs from the model's: the strict encoder publishes no
    latent, the controller (servoing, goal set) goes stale and sends a zero twist."""
    enc = EncoderNode(model=model, parameter_overrides=params(strict_intrinsics=True, diagnostics_period=0.3))
    ctl = ControllerNode(law=small_mlvs(model), parameter_overrides=params(
        method="mlvs", autostart=True, input_timeout=0.3, diagnostics_period=0.3, converged_translation=0.0))
    ctl.ctl.set_goal(model.encode(np.full((64, 64), 128, np.uint8))[0])
    mon, probe = Monitor(), Probe(watch_pose=False)
    cam = FakeCamera(ex, probe)
    add(ex, enc, ctl, mon, probe)
    assert spin_until(ex, lambda: cam.image_pub.get_subscription_count() > 0 and enc.pub.get_subscription_count() > 0, 5)
    cam.run(2.0, info=camera_info(640, 480), clock=ctl.get_clock(), until=lambda: probe.moving(0))
    assert probe.moving(0), probe.states                 # a matching camera: servoing
    n = len(probe.twists)
    cam.run(4.0, info=camera_info(640, 480, 0.8), clock=ctl.get_clock(),
            until=lambda: probe.stopped("stale", n) and mon.latest.get("encoder: encoder", None) is not None
            and mon.latest["encoder: encoder"].level == ERROR and mon.latest["controller: servo"].level == ERROR)
    assert probe.stopped("stale", n), probe.states
    enc_st, ctl_st = mon.latest["encoder: encoder"], mon.latest["controller: servo"]
    assert enc_st.level == ERROR and enc_st.message.startswith("strict_intrinsics: not encoding: camera intrinsics differ")
    assert ctl_st.level == ERROR and mon.values("controller: servo")["state"] == "stale"
    assert int(mon.values("encoder: encoder")["latents withheld (total)"]) > 0
