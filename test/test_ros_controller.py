"""Controller node over real DDS (isolated domain, see conftest.py): closed loop through topics,
every safety behaviour, the three ways to set a goal, parameter validation, the published pose
error estimate and what it takes to converge. PBVS (camera_pose)
and DVS (image) need no model; the MLVS path is in test_ros_latent.py."""
import os

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from latent_vs import geometry  # noqa: E402
from latent_vs.errors import UserError  # noqa: E402
from latent_vs.imageconv import fit_image  # noqa: E402
from latent_vs.ros.controller_node import ControllerNode  # noqa: E402
from latent_vs.ros.convert import array_to_image_msg, msg_to_pose, pose_to_msg  # noqa: E402
from latent_vs.ros.probe import Probe, spin_until  # noqa: E402
from latent_vs.ros.sim_camera_node import SimCameraNode  # noqa: E402
from latent_vs.scene import Scene, SceneConfig, goal_pose  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.usefixtures("ros")]
GOAL = goal_pose(SceneConfig())
ZERO = np.zeros(6)


def _params(d):
    return [Parameter(k, value=v) for k, v in d.items()]


def start(ex, sim=None, ctl=None, probe=True, remap=None):
    """sim camera + controller + probe in one executor; remap: cmd_twist of controller/probe."""
    nodes = {}
    args = ["--ros-args", "-r", f"cmd_twist:={remap}"] if remap else None
    if sim is not None:
        nodes["sim"] = SimCameraNode(parameter_overrides=_params(sim))
    if ctl is not None:
        nodes["ctl"] = ControllerNode(parameter_overrides=_params(ctl), cli_args=args)
    if probe:
        stamped = (ctl or {}).get("stamped", True)
        nodes["probe"] = Probe(stamped=stamped, cli_args=args)
    for n in nodes.values():
        ex.add_node(n)
    return nodes


def nonzero(twists):
    return [t for t in twists if np.linalg.norm(t) > 0]


PBVS = dict(method="pbvs", autostart=True, gain=2.0, max_linear_speed=0.3, max_angular_speed=1.0)


@pytest.mark.slow
@pytest.mark.parametrize("seed, hand_eye, stamped", [
    (0, [0.0] * 6, True),
    (1, [0.05, -0.02, 0.1, 0.2, -0.1, 1.0], True),   # camera off the tool flange
    (2, [0.0] * 6, False),                           # plain Twist
])
def test_pbvs_closed_loop_converges_through_topics(ex, seed, hand_eye, stamped):
    n = start(ex, sim=dict(seed=seed, hand_eye=hand_eye, stamped=stamped),
              ctl=dict(PBVS, hand_eye=hand_eye, stamped=stamped, command_frame="tool0"))
    probe, sim = n["probe"], n["sim"]
    assert spin_until(ex, lambda: probe.state == "converged", 40.0), f"states {probe.states[-5:]}"
    t_err, r_err = geometry.error_metrics(GOAL, sim.camera_pose)
    assert t_err < 0.01 and r_err < np.deg2rad(1.0)
    tw = np.array(probe.twists)
    assert len(nonzero(tw)) > 20
    assert np.linalg.norm(tw[:, :3], axis=1).max() <= 0.3
    assert np.linalg.norm(tw[:, 3:], axis=1).max() <= 1.0
    # converged -> one zero twist, then nothing more while the sim keeps publishing
    spin_until(ex, lambda: False, 0.5)
    np.testing.assert_array_equal(probe.twists[-1], ZERO)
    assert len(probe.twists) == len(tw)
    if stamped:
        assert probe.twist_msgs[-1].header.frame_id == "tool0"


def _set_params(ex, probe, values: dict, node="controller"):
    """Set parameters through the node's parameter service, as `ros2 param set` does."""
    client = probe.create_client(SetParameters, f"{node}/set_parameters")
    req = SetParameters.Request(parameters=[
        ParameterMsg(name=k, value=Parameter(k, value=v).get_parameter_value()) for k, v in values.items()])
    res = probe.call(ex, client, req)
    probe.destroy_client(client)
    assert res is not None, "no answer from set_parameters"
    return res.results


def test_limits_hold_and_a_new_limit_applies_at_once(ex):
    n = start(ex, sim=dict(seed=4), ctl=dict(PBVS, gain=5.0))
    probe = n["probe"]
    assert spin_until(ex, lambda: len(probe.twists) >= 10, 10.0)
    tw = np.array(probe.twists)
    assert np.linalg.norm(tw[:, :3], axis=1).max() <= 0.3 and np.linalg.norm(tw[:, 3:], axis=1).max() <= 1.0
    at_limit = np.maximum(np.linalg.norm(tw[:, :3], axis=1) / 0.3, np.linalg.norm(tw[:, 3:], axis=1) / 1.0)
    assert at_limit.max() > 0.99  # far from the goal with a large gain: scaled down to the limit
    (res,) = _set_params(ex, probe, {"max_linear_speed": 0.02})
    assert res.successful
    k = len(probe.twists)
    assert spin_until(ex, lambda: len(probe.twists) >= k + 10, 10.0)
    tw = np.array(probe.twists[k:])
    assert np.linalg.norm(tw[:, :3], axis=1).max() <= 0.02
    # the whole twist was scaled: the direction matches the unlimited law's
    ctl = n["ctl"]
    raw = ctl.ctl.to_command_frame(ctl.law.step(n["sim"].camera_pose))
    last = tw[-1]
    assert np.dot(last, raw) / (np.linalg.norm(last) * np.linalg.norm(raw)) > 0.99


def test_parameter_validation(ex):
    n = start(ex, sim=dict(seed=0), ctl=dict(method="dvs"))
    probe = n["probe"]
    bad = [
        {"max_linear_speed": -0.1},          # out of the declared range
        {"max_linear_speed": 0.0},           # in range, but not > 0
        {"max_angular_speed": 100.0},
        {"input_timeout": 0.0},
        {"hand_eye": [0.1, 0.2]},
        {"hand_eye": [0.0, 0.0, 0.0, float("nan"), 0.0, 0.0]},
        {"goal_image": "/nonexistent/goal.png"},
        {"method": "pbvs"},                  # read-only
        {"gain": "fast"},                    # wrong type
        {"converged_translation": -0.001},
        {"converged_rotation": -0.1},
        {"converged_steps": 0},
    ]
    for values in bad:
        (res,) = _set_params(ex, probe, values)
        assert not res.successful and res.reason, values
    (res,) = _set_params(ex, probe, {"goal_image": "/nonexistent/goal.png"})
    assert "/nonexistent/goal.png" in res.reason
    ctl = n["ctl"]
    assert ctl.ctl.limits.max_linear_speed == 0.1 and ctl.get_parameter("method").value == "dvs"
    assert (ctl.ctl.converged_translation, ctl.ctl.converged_rotation, ctl.ctl.converged_steps) == (0.0002, 0.02, 5)
    ok = _set_params(ex, probe, {"gain": 2.0, "max_angular_speed": 0.3, "converged_translation": 0.002,
                                 "converged_rotation": 0.2, "converged_steps": 3,
                                 "hand_eye": [0.0, 0.0, 0.1, 0.0, 0.0, 0.0]})
    assert all(r.successful for r in ok)
    assert ctl.law.gain == 2.0 and ctl.ctl.limits.max_angular_speed == 0.3
    assert (ctl.ctl.converged_translation, ctl.ctl.converged_rotation, ctl.ctl.converged_steps) == (0.002, 0.2, 3)
    assert ctl.ctl.hand_eye[2, 3] == pytest.approx(0.1)


@pytest.mark.parametrize("override, message", [
    ({"max_linear_speed": 0.0}, "max_linear_speed"),
    ({"method": "magic"}, "method"),
    ({"goal_image": "/nonexistent/goal.png"}, "/nonexistent/goal.png"),
])
def test_bad_parameters_at_start_up_name_the_problem(override, message):
    with pytest.raises(UserError, match=message):
        ControllerNode(parameter_overrides=_params({"method": "dvs", **override}))


def test_stale_input_sends_one_zero_twist(ex):
    n = start(ex, sim=dict(seed=0), ctl=dict(PBVS, input_timeout=0.3))
    probe, sim = n["probe"], n["sim"]
    assert spin_until(ex, lambda: len(probe.twists) >= 5, 10.0)
    k0 = len(probe.twists)
    ex.remove_node(sim)  # the camera stops
    sim.destroy_node()
    assert spin_until(ex, lambda: probe.stopped("stale", k0), 5.0)
    spin_until(ex, lambda: False, 0.2)
    k = len(probe.twists)
    spin_until(ex, lambda: False, 1.0)  # nothing more comes while stale
    assert len(probe.twists) == k
    np.testing.assert_array_equal(probe.twists[-1], ZERO)
    assert np.linalg.norm(probe.twists[-2]) > 0
    assert "stale" not in probe.states[:-1] or probe.states.count("stale") == 1


def test_pose_error_estimate_is_published_and_converged_needs_steps_in_a_row(ex, capfd):
    n = start(ex, ctl=dict(PBVS, converged_steps=3, converged_translation=0.001, converged_rotation=0.1))
    probe = n["probe"]
    pub = probe.create_publisher(PoseStamped, "camera_pose", 10)
    assert spin_until(ex, lambda: pub.get_subscription_count() > 0, 5.0)
    far = GOAL @ geometry.pose_to_matrix([0.01, -0.02, 0.005, 0.02, 0.0, -0.05])
    near = GOAL @ geometry.pose_to_matrix([0.0003, 0.0, -0.0004, 0.0, 0.001, 0.0])   # 0.5 mm, 0.057°
    for i, T in enumerate([far, near, near, far, near, near, near, far]):
        stamp = probe.get_clock().now().to_msg()
        stamp.nanosec = (stamp.nanosec // 1000) * 1000 + 123                           # an exact stamp
        pub.publish(pose_to_msg(T, stamp))
        assert spin_until(ex, lambda: len(probe.estimates) == i + 1, 5.0), i
        msg = probe.estimates[-1]
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (stamp.sec, stamp.nanosec, "goal")
        np.testing.assert_allclose(msg_to_pose(msg), geometry.pose_to_matrix(geometry.pose_difference(GOAL, T)),
                                   atol=1e-12)
        assert n["ctl"].ctl.state == ("converged" if i >= 6 else "servoing"), i   # the 3rd near pose in a row
    assert spin_until(ex, lambda: probe.state == "converged", 5.0)
    assert "converged: estimated pose error 0.500 mm, 0.0573°" in capfd.readouterr().err
    np.testing.assert_array_equal(probe.twists[-1], ZERO)


def test_old_input_is_stale_and_fresh_input_resumes(ex):
    n = start(ex, ctl=dict(PBVS, input_timeout=0.3))
    probe, ctl = n["probe"], n["ctl"]
    pub = probe.create_publisher(PoseStamped, "camera_pose", 10)
    assert spin_until(ex, lambda: pub.get_subscription_count() > 0, 5.0)
    T = geometry.rpy_to_matrix(0.1, 0.0, -0.6, 0.0, 0.0, 0.0)
    now = probe.get_clock().now()
    pub.publish(pose_to_msg(T, now.to_msg()))
    assert spin_until(ex, lambda: probe.state == "servoing" and len(probe.twists) >= 1, 5.0)
    old = (now - rclpy.duration.Duration(seconds=2.0)).to_msg()
    n = len(probe.twists)
    pub.publish(pose_to_msg(T, old))  # captured 2 s ago
    assert spin_until(ex, lambda: probe.stopped("stale", n), 5.0)
    spin_until(ex, lambda: False, 0.2)
    assert len(probe.twists) == n + 1  # no motion from the old input: one zero twist
    np.testing.assert_array_equal(probe.twists[-1], ZERO)
    pub.publish(pose_to_msg(T, probe.get_clock().now().to_msg()))
    assert spin_until(ex, lambda: probe.moving(n + 1), 5.0)


def test_nan_input_is_a_fault_logged_and_the_node_stays_up(ex, capfd):
    n = start(ex, ctl=dict(PBVS))
    probe = n["probe"]
    pub = probe.create_publisher(PoseStamped, "camera_pose", 10)
    assert spin_until(ex, lambda: pub.get_subscription_count() > 0, 5.0)
    T = geometry.rpy_to_matrix(0.1, 0.0, -0.6, 0.0, 0.0, 0.0)
    pub.publish(pose_to_msg(T, probe.get_clock().now().to_msg()))
    assert spin_until(ex, lambda: len(probe.twists) >= 1, 5.0)
    bad = pose_to_msg(T, probe.get_clock().now().to_msg())
    bad.pose.position.x = float("nan")
    k = len(probe.twists)
    pub.publish(bad)
    assert spin_until(ex, lambda: probe.stopped("fault", k), 5.0)
    np.testing.assert_array_equal(probe.twists[-1], ZERO)
    assert "fault: bad input" in capfd.readouterr().err
    pub.publish(pose_to_msg(T, probe.get_clock().now().to_msg()))  # good input again
    assert spin_until(ex, lambda: probe.moving(k + 1), 5.0)


def test_bad_image_is_a_fault(ex, capfd):
    n = start(ex, sim=dict(seed=-1, start_pose=[0.02, 0.0, -0.6, 0.0, 0.0, 0.0]),
              ctl=dict(method="dvs", autostart=True))
    probe, sim = n["probe"], n["sim"]
    assert spin_until(ex, lambda: probe.state == "servoing", 10.0)
    ex.remove_node(sim)
    sim.destroy_node()
    pub = probe.create_publisher(Image, "image", 10)
    bad = array_to_image_msg(np.zeros((4, 4), np.uint8), probe.get_clock().now().to_msg())
    bad.encoding = "yuv422"
    assert spin_until(ex, lambda: pub.get_subscription_count() > 0, 5.0)
    spin_until(ex, lambda: False, 0.2)
    k = len(probe.twists)
    pub.publish(bad)
    assert spin_until(ex, lambda: probe.stopped("fault", k), 5.0)
    np.testing.assert_array_equal(probe.twists[-1], ZERO)
    assert "unsupported image encoding 'yuv422'" in capfd.readouterr().err


def test_disable_sends_zero_and_stops_enable_resumes(ex):
    n = start(ex, sim=dict(seed=0), ctl=dict(PBVS, autostart=False))
    probe = n["probe"]
    spin_until(ex, lambda: False, 0.5)
    assert probe.twists == [] and probe.state == "idle"  # no autostart: waits for ~/enable
    assert probe.enable(ex, True).success
    assert spin_until(ex, lambda: len(nonzero(probe.twists)) >= 5, 10.0)
    k0 = len(probe.twists)
    res = probe.enable(ex, False)
    assert res.success and "disabled" in res.message
    assert spin_until(ex, lambda: probe.stopped("idle", k0), 5.0)
    spin_until(ex, lambda: False, 0.2)
    np.testing.assert_array_equal(probe.twists[-1], ZERO)
    k = len(probe.twists)
    spin_until(ex, lambda: False, 0.5)
    assert len(probe.twists) == k  # the sim still runs; the controller stays quiet
    probe.enable(ex, True)
    assert spin_until(ex, lambda: probe.moving(k), 5.0)


# ---------------------------------------------------------------- the three ways to set a goal (DVS)

def _views(offset):
    scene = Scene(SceneConfig())
    here = scene.render(GOAL)
    there = scene.render(GOAL @ geometry.pose_to_matrix(offset))
    rms = np.sqrt(np.mean((here.astype(np.float32) - there.astype(np.float32)) ** 2)) / 255.0
    return here, there, rms


def _goal_rig(ex):
    # the controller's cmd_twist is remapped away from the sim: the camera stays at the goal pose
    return start(ex, sim=dict(seed=-1, publish_goal_image=False),
                 ctl=dict(method="dvs", autostart=True), remap="cmd_unused")


def test_goal_from_current_view_service(ex):
    n = _goal_rig(ex)
    probe = n["probe"]
    assert spin_until(ex, lambda: n["ctl"].last_input is not None, 10.0)
    res = probe.set_goal_from_current(ex)
    assert res.success, res.message
    assert spin_until(ex, lambda: probe.state == "converged" and probe.errors, 5.0)  # the goal is what it sees
    assert probe.errors[-1] < 0.002


def test_goal_from_topic(ex):
    n = _goal_rig(ex)
    probe = n["probe"]
    here, there, rms = _views([0.03, 0.0, 0.0, 0.0, 0.0, 0.05])
    pub = probe.create_publisher(Image, "goal_image", 10)
    assert spin_until(ex, lambda: pub.get_subscription_count() > 0, 5.0)
    pub.publish(array_to_image_msg(there))
    assert spin_until(ex, lambda: probe.state == "servoing" and len(probe.errors) > 3, 5.0)
    assert probe.errors[-1] == pytest.approx(rms, rel=1e-3)
    pub.publish(array_to_image_msg(here))
    assert spin_until(ex, lambda: probe.state == "converged", 5.0)


def test_goal_from_file_parameter(ex, tmp_path):
    n = _goal_rig(ex)
    probe = n["probe"]
    _here, there, rms = _views([0.0, 0.02, 0.03, 0.05, 0.0, 0.0])
    path = str(tmp_path / "goal.png")
    cv2.imwrite(path, cv2.cvtColor(there, cv2.COLOR_GRAY2BGR))  # a colour file works too
    (res,) = _set_params(ex, probe, {"goal_image": path})
    assert res.successful, res.reason
    assert spin_until(ex, lambda: probe.state == "servoing" and len(probe.errors) > 3, 5.0)
    assert probe.errors[-1] == pytest.approx(rms, rel=1e-2)
    # and at start-up
    ctl2 = ControllerNode(node_name="controller2", parameter_overrides=_params(dict(method="dvs", goal_image=path)))
    assert ctl2.ctl.has_goal
    np.testing.assert_array_equal(ctl2.law.goal, fit_image(there, 224, 224))
    ctl2.destroy_node()
    assert os.path.isfile(path)
