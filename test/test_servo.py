"""The controller's brain (latent_vs.servo) without ROS: closed loop, limits, frames, every
safety state, the pose error estimates that decide `converged`, and what `converged` means on
rendered runs of the shipped model. The node tests (test_ros_controller.py) check the same
behaviour over DDS."""
import os

import numpy as np
import pytest
import torch

from latent_vs import geometry, paths
from latent_vs.control import methods
from latent_vs.control.mlvs import MLVS
from latent_vs.control.pbvs import PBVS
from latent_vs.posebank import BankConfig, PoseBank
from latent_vs.safety import Limits
from latent_vs.scene import Scene, SceneConfig, goal_pose
from latent_vs.servo import CONVERGED, FAULT, IDLE, NO_GOAL, SERVOING, STALE, ImageLaw, LatentLaw, ServoController
from latent_vs.tasks import sample_tasks

GOAL = goal_pose(SceneConfig())
DT = 1 / 30


def _ctl(**kw):
    gain = kw.pop("gain", 1.0)
    args = dict(limits=Limits(0.2, 0.6), input_timeout=0.5, converged_translation=0.002, converged_rotation=0.1)
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
    ctl = ServoController(Broken(), converged_translation=0.0)
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


def test_no_goal_is_no_goal_and_a_cleared_goal_stops_the_arm():
    ctl = ServoController(PBVS())
    assert ctl.update(GOAL) == (None, NO_GOAL)
    ctl.set_goal(GOAL)
    assert ctl.update(sample_tasks(1, seed=2)[0])[1] == SERVOING
    twist, state = ctl.clear_goal()
    assert state == NO_GOAL and np.array_equal(twist, np.zeros(6))
    assert ctl.update(GOAL) == (None, NO_GOAL)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="input_timeout"):
        ServoController(PBVS(), input_timeout=0)
    with pytest.raises(ValueError, match="hand_eye"):
        ServoController(PBVS(), hand_eye=np.diag([1.0, 1.0, -1.0, 1.0]))


# ---------------------------------------------------------------- converged: the pose error estimate

def _near(t_mm=0.0, r_deg=0.0, axis=0):
    """The goal moved by t_mm along x and rotated by r_deg about `axis` (camera frame)."""
    r = np.zeros(6)
    r[0], r[3 + axis] = t_mm / 1000, np.deg2rad(r_deg)
    return GOAL @ geometry.pose_to_matrix(r)


def test_converged_needs_converged_steps_small_estimates_in_a_row():
    ctl = _ctl(converged_translation=0.001, converged_rotation=0.1, converged_steps=5)
    near, far_t, far_r = _near(0.5, 0.05), _near(1.5, 0.0), _near(0.0, 0.15, axis=1)
    for T in [near] * 4 + [far_t] + [near] * 4 + [far_r] + [near] * 4:   # never 5 in a row
        twist, state = ctl.update(T)
        assert state == SERVOING and np.linalg.norm(twist) > 0
    np.testing.assert_allclose(ctl.pose_error, geometry.pose_difference(GOAL, near), atol=1e-15)
    twist, state = ctl.update(near)                                       # the fifth in a row
    assert state == CONVERGED and np.array_equal(twist, np.zeros(6))
    assert "0.500 mm" in ctl.event and "0.0500°" in ctl.event and "5 inputs in a row" in ctl.event
    assert ctl.update(far_t) == (None, CONVERGED)                         # latched
    np.testing.assert_allclose(ctl.pose_error, geometry.pose_difference(GOAL, far_t), atol=1e-15)
    ctl.set_enabled(False)
    ctl.set_enabled(True)                                                 # re-enabled: counts again
    assert ctl.update(near)[1] == SERVOING


def test_a_stale_input_breaks_the_run_of_small_estimates():
    ctl = _ctl(converged_steps=3)
    near = _near(0.2)
    assert ctl.update(near, 1.0, 1.0)[1] == ctl.update(near, 1.1, 1.1)[1] == SERVOING
    assert ctl.update(near, 1.2, 2.0)[1] == STALE
    assert ctl.update(near, 2.1, 2.1)[1] == ctl.update(near, 2.2, 2.2)[1] == SERVOING
    assert ctl.update(near, 2.3, 2.3)[1] == CONVERGED


@pytest.mark.parametrize("kw, name", [
    (dict(converged_translation=-0.001), "converged_translation"),
    (dict(converged_translation=float("nan")), "converged_translation"),
    (dict(converged_rotation=-0.1), "converged_rotation"),
    (dict(converged_steps=0), "converged_steps"),
    (dict(converged_steps=2.5), "converged_steps"),
])
def test_bad_convergence_bounds_are_refused(kw, name):
    with pytest.raises(ValueError, match=name):
        ServoController(PBVS(), **kw)


def test_zero_bounds_never_converge():
    ctl = _ctl(converged_translation=0.0)
    for _ in range(10):
        assert ctl.update(GOAL)[1] == SERVOING


@pytest.fixture(scope="module")
def phi_mlvs():
    """MLVS with the recipe φ and a small bank; latents are φ's own (a perfect encoder)."""
    phi = torch.jit.load(os.path.join(os.path.dirname(__file__), "data", "phi_recipe.pt"))
    bank = PoseBank.build(phi, BankConfig(grid_steps=6, near_goal=3000, index="flat"))
    return MLVS(phi=phi, bank=bank, k=10)


def _embed(law, r):
    with torch.no_grad():
        return law.phi(torch.as_tensor(np.asarray(r)[None], dtype=torch.float32)).numpy()[0]


@pytest.mark.parametrize("goal", [[0.0] * 6, [0.02, -0.01, 0.03, 0.05, 0.02, -0.1]])
def test_latent_estimate_is_the_pose_of_z_seen_from_that_of_z_goal(phi_mlvs, goal):
    law = LatentLaw(phi_mlvs)
    T_goal = geometry.pose_to_matrix(goal)               # z* = φ(goal): any goal, not only φ's origin
    z_goal = _embed(phi_mlvs, goal)
    law.set_goal(z_goal)
    np.testing.assert_allclose(law.pose_error(z_goal), np.zeros(6), atol=1e-15)   # zero at z* (rounding)
    for d in ([0.0004, -0.0003, 0.0002, 0.0005, 0.0, -0.0008], [0.01, 0.02, -0.015, 0.03, -0.02, 0.05]):
        z = _embed(phi_mlvs, geometry.matrix_to_pose(T_goal @ geometry.pose_to_matrix(d)))
        np.testing.assert_allclose(law.pose_error(z), d, atol=2e-5)    # the camera seen from the goal


def test_image_estimate_is_the_gauss_newton_step_and_the_law_steps_once_per_input():
    law = ImageLaw(methods.make("dvs"))
    steps = []
    step = law.step
    law.step = lambda img: steps.append(1) or step(img)
    scene = Scene(SceneConfig())
    ctl = ServoController(law, converged_translation=0.0)
    ctl.set_goal(scene.render(GOAL))
    assert ctl.update(scene.render(GOAL))[1] == SERVOING and np.array_equal(ctl.pose_error, np.zeros(6))
    d = np.array([0.002, -0.001, 0.003, 0.002, -0.001, 0.003])
    twist, _ = ctl.update(scene.render(GOAL @ geometry.pose_to_matrix(d)))
    assert len(steps) == 2                                                # one Gauss–Newton step per input
    np.testing.assert_allclose(ctl.pose_error, -twist / law.gain, atol=1e-12)
    est = ctl.pose_error
    assert est @ d / (np.linalg.norm(est) * np.linalg.norm(d)) > 0.8      # ≈ Δr near the goal
    assert 0.5 < np.linalg.norm(est) / np.linalg.norm(d) < 2.0


# ---------------------------------------------------------------- converged on rendered runs

RENDERED_TASKS, RENDERED_ITERS, RENDERED_DT = 6, 600, 0.1   # 60 s of servoing at 10 Hz per task
TRUE_FACTOR = 10.0   # measured 3-5x with the shipped model (docs/training.md): an order of magnitude


def _rendered_runs(law, tasks, iters, dt):
    """Render (as the benchmark does), encode with the model, ServoController per task, integrate
    the twist. Returns {task: true (t [m], θ [rad]) when the controller said converged}."""
    from latent_vs.bench.sim import law_scene
    scene_cfg = law_scene(law)
    scene, goal = Scene(scene_cfg, law.camera), goal_pose(scene_cfg)
    z_goal = law.model.encode(scene.render(goal)[None])[0]
    ctls = [ServoController(LatentLaw(law), Limits(0.15, 0.6), input_timeout=1.0) for _ in tasks]
    for c in ctls:
        c.set_goal(z_goal)
    T, converged = np.array(tasks, dtype=float), {}
    for _ in range(iters):
        running = [i for i in range(len(T)) if i not in converged]
        if not running:
            break
        z = law.model.encode(np.stack([scene.render(T[i]) for i in running]))
        for i, z_i in zip(running, z):
            twist, state = ctls[i].update(z_i)
            if state == CONVERGED:
                converged[i] = tuple(float(e) for e in geometry.error_metrics(goal, T[i]))
            elif twist is not None:
                T[i] = T[i] @ geometry.se3_exp(twist, dt)
    return converged


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(os.path.join(paths.model_dir("default"), "meta.json")),
                    reason="no models/default")
def test_converged_on_rendered_runs_means_the_true_pose_error_is_small():
    """Whenever the controller says converged (its estimate below 0.2 mm and 0.02° for 5 inputs),
    the TRUE pose error must be within 10x those bounds. Must hold for any model: tasks that do
    not converge within the cap are fine, a `converged` the true pose belies is not."""
    from latent_vs.control import mlvs
    law = mlvs.make(gain=1.0)                       # models/default, K = 50, the node's gain
    converged = _rendered_runs(law, sample_tasks(RENDERED_TASKS, seed=0), RENDERED_ITERS, RENDERED_DT)
    ctl = ServoController(LatentLaw(law))
    t_max, r_max = TRUE_FACTOR * ctl.converged_translation, np.deg2rad(TRUE_FACTOR * ctl.converged_rotation)
    wrong = {i: f"{1000 * t:.1f} mm, {np.rad2deg(r):.2f}°" for i, (t, r) in converged.items()
             if not (t < t_max and r < r_max)}
    assert not wrong, (f"the controller said converged at these true pose errors (tasks of seed 0; bounds "
                       f"{1000 * t_max:g} mm, {np.rad2deg(r_max):g}°): {wrong}; {len(converged)} of "
                       f"{RENDERED_TASKS} tasks converged")
