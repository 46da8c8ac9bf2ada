"""The controller's brain (latent_vs.servo) without ROS: closed loop, limits, frames and every
safety state. The node tests (test_ros_controller.py) check the same behaviour over DDS."""
import numpy as np
import pytest

from latent_vs import geometry
from latent_vs.control.pbvs import PBVS
from latent_vs.safety import Limits
from latent_vs.scene import SceneConfig, goal_pose
from latent_vs.servo import CONVERGED, FAULT, IDLE, SERVOING, STALE, ServoController
from latent_vs.tasks import sample_tasks

GOAL = goal_pose(SceneConfig())
DT = 1 / 30


def _ctl(**kw):
    gain = kw.pop("gain", 1.0)
    args = dict(limits=Limits(0.2, 0.6), input_timeout=0.5, converged_error=0.002)
    args.update(kw)
    ctl = ServoController(PBVS(gain=gain), **args)
    ctl.set_goal(GOAL)
    return ctl


def _run(ctl, T, steps=3000, hand_eye=np.eye(4)):
    """Integrate the published twist on the command frame (rigidly holding the camera)."""
    states, twists, t = [], [], 0.0
    oT_cmd = T @ geometry.inverse(hand_eye)
    for _ in range(steps):
        T = oT_cmd @ hand_eye
        twist, state = ctl.update(T, stamp_s=t, now_s=t + 0.01)
        states.append(state)
        if twist is not None:
            twists.append(twist)
            oT_cmd = oT_cmd @ geometry.se3_exp(twist, DT)
        t += DT
        if state == CONVERGED:
            break
    return oT_cmd @ hand_eye, states, np.array(twists)


def test_closed_loop_converges_within_limits_and_stops_with_one_zero():
    ctl = _ctl()
    T, states, twists = _run(ctl, sample_tasks(1, seed=3)[0])
    assert states[-1] == CONVERGED
    t_err, r_err = geometry.error_metrics(GOAL, T)
    assert t_err < 0.005 and r_err < np.deg2rad(0.5)
    assert np.linalg.norm(twists[:, :3], axis=1).max() <= 0.2
    assert np.linalg.norm(twists[:, 3:], axis=1).max() <= 0.6
    assert np.abs(twists[0]).max() > 0.01  # it did move, at the limit at first
    np.testing.assert_array_equal(twists[-1], np.zeros(6))  # the one zero on converging
    twist, state = ctl.update(T, stamp_s=0.0, now_s=0.0)  # latched: nothing more is sent
    assert (twist, state) == (None, CONVERGED)
    ctl.set_goal(GOAL.copy())  # the same goal re-sent: still latched
    assert ctl.update(T, 0.0, 0.0) == (None, CONVERGED)
    ctl.set_goal(GOAL @ geometry.pose_to_matrix([0.05, 0, 0, 0, 0, 0]))  # a new goal clears the latch
    twist, state = ctl.update(T, 0.0, 0.0)
    assert state == SERVOING and twist[0] > 0


def test_hand_eye_moves_the_camera_as_the_camera_twist_would():
    cmd_T_cam = geometry.rpy_to_matrix(0.03, -0.05, 0.12, 0.3, -1.2, 2.0)
    T0 = sample_tasks(1, seed=5)[0]
    wide = Limits(100.0, 100.0)  # limits would scale the two twists differently
    plain = _ctl(limits=wide)
    v_cam, _ = plain.update(T0)
    eye = _ctl(hand_eye=cmd_T_cam, limits=wide)
    v_cmd, _ = eye.update(T0)
    assert not np.allclose(v_cmd, v_cam)
    # moving the command frame by v_cmd moves the camera exactly as v_cam would
    oT_cmd = T0 @ geometry.inverse(cmd_T_cam)
    moved = oT_cmd @ geometry.se3_exp(v_cmd, 0.1) @ cmd_T_cam
    np.testing.assert_allclose(moved, T0 @ geometry.se3_exp(v_cam, 0.1), atol=1e-9)
    # and the servo still converges through the transformation
    T, states, _ = _run(eye, T0, hand_eye=cmd_T_cam)
    assert states[-1] == CONVERGED


def test_limits_hold_in_the_command_frame_with_a_large_gain():
    cmd_T_cam = geometry.rpy_to_matrix(0.0, 0.0, 0.5, 0.0, 0.0, 0.0)  # lever arm: ω adds to v
    ctl = _ctl(gain=50.0, hand_eye=cmd_T_cam, limits=Limits(0.05, 0.3))
    for T in sample_tasks(20, seed=1):
        twist, _ = ctl.update(T)
        assert np.linalg.norm(twist[:3]) <= 0.05 and np.linalg.norm(twist[3:]) <= 0.3
        raw = ctl.to_command_frame(ctl.law.step(T))
        np.testing.assert_allclose(twist / np.linalg.norm(twist), raw / np.linalg.norm(raw), atol=1e-12)


def test_stale_input_stops_once_and_fresh_input_resumes():
    ctl = _ctl()
    T = sample_tasks(1, seed=2)[0]
    assert ctl.update(T, stamp_s=10.0, now_s=10.1)[1] == SERVOING
    twist, state = ctl.update(T, stamp_s=10.2, now_s=11.0)  # captured 0.8 s ago > 0.5 s
    assert state == STALE and np.array_equal(twist, np.zeros(6))
    assert "old" in ctl.event
    assert ctl.update(T, stamp_s=10.3, now_s=11.1) == (None, STALE)  # only one zero
    twist, state = ctl.update(T, stamp_s=11.1, now_s=11.12)
    assert state == SERVOING and np.linalg.norm(twist) > 0


def test_no_input_for_input_timeout_is_stale_on_tick():
    ctl = _ctl()
    T = sample_tasks(1, seed=2)[0]
    ctl.update(T, stamp_s=5.0, now_s=5.01)
    assert ctl.tick(5.3) == (None, SERVOING)
    twist, state = ctl.tick(5.6)
    assert state == STALE and np.array_equal(twist, np.zeros(6))
    assert ctl.tick(6.0) == (None, STALE)


@pytest.mark.parametrize("bad", [np.full((4, 4), np.nan), np.eye(3)])
def test_bad_input_is_a_fault_with_one_zero_and_recovers(bad):
    ctl = _ctl()
    T = sample_tasks(1, seed=2)[0]
    ctl.update(T)
    twist, state = ctl.update(bad)
    assert state == FAULT and np.array_equal(twist, np.zeros(6))
    assert "bad input" in ctl.event
    assert ctl.update(bad) == (None, FAULT)
    assert ctl.update(T)[1] == SERVOING


def test_non_finite_law_output_is_a_fault():
    class Broken(PBVS):
        def step(self, images, poses, active):
            return np.full((1, 6), np.nan)
    ctl = ServoController(Broken(), converged_error=0.0)
    ctl.set_goal(GOAL)
    twist, state = ctl.update(sample_tasks(1, seed=2)[0])
    assert state == FAULT and np.array_equal(twist, np.zeros(6))


def test_disable_sends_zero_and_then_nothing():
    ctl = _ctl()
    T = sample_tasks(1, seed=2)[0]
    ctl.update(T)
    twist, state = ctl.set_enabled(False)
    assert state == IDLE and np.array_equal(twist, np.zeros(6))
    assert ctl.update(T) == (None, IDLE)
    ctl.set_enabled(True)
    assert ctl.update(T)[1] == SERVOING


def test_no_goal_is_idle():
    ctl = ServoController(PBVS())
    assert ctl.update(GOAL) == (None, IDLE)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="input_timeout"):
        ServoController(PBVS(), input_timeout=0)
    with pytest.raises(ValueError, match="hand_eye"):
        ServoController(PBVS(), hand_eye=np.diag([1.0, 1.0, -1.0, 1.0]))
