"""The classic control laws: PBVS on the true pose and photometric DVS."""
import numpy as np
import pytest

from latent_vs.bench import metrics as M
from latent_vs.control import methods
from latent_vs.bench.sim import simulate
from latent_vs.camera import default_camera
from latent_vs.control.base import ControlLaw
from latent_vs.control.dvs import DVS, image_gradients
from latent_vs.control.pbvs import PBVS
from latent_vs.geometry import error_metrics, pose_to_matrix, se3_exp, thetau_from_rotation
from latent_vs.scene import Scene, goal_pose
from latent_vs.tasks import sample_tasks

GOAL = goal_pose()


def near_goal(d):
    return GOAL @ pose_to_matrix(np.asarray(d, float))


def test_factories_make_control_laws_with_the_interface():
    p, d = methods.make("pbvs"), methods.make("dvs")
    assert isinstance(p, ControlLaw) and isinstance(d, ControlLaw)
    assert p.needs_pose and p.camera is None and p.gain == 0.1
    assert not d.needs_pose and d.camera == default_camera(224) and d.gain == 0.5
    assert methods.make("dvs", size=64).camera == default_camera(64)


def test_pbvs_converges_on_a_straight_line_and_the_rotation_geodesic():
    tasks = sample_tasks(5, seed=11)
    res = simulate(PBVS(), tasks, iters=400)
    assert np.all(res.reason == "still")
    for i in range(5):
        P = res.poses[i, :res.n_poses[i]].astype(float)
        t_end, r_end = M.pose_errors(GOAL, P[-1])
        assert t_end < 1e-4 and r_end < np.radians(0.01)
        t0 = np.linalg.norm(P[0, :3] - GOAL[:3, 3])
        assert M.path_length(P) / t0 == pytest.approx(1.0, abs=0.005)  # a straight line
        # the rotation axis of c*R_c stays fixed while its angle decreases
        R = pose_to_matrix(P)[:, :3, :3]
        tu = thetau_from_rotation(GOAL[:3, :3].T @ R)
        theta = np.linalg.norm(tu, axis=1)
        keep = theta > 1e-3
        axes = tu[keep] / theta[keep, None]
        assert np.all(axes @ axes[0] > 0.999)
        assert np.all(np.diff(theta) <= 1e-12)


def test_pbvs_first_step_cuts_the_error_by_the_gain():
    T0 = near_goal([0.1, -0.05, 0.2, 0.3, -0.2, 0.5])
    law = PBVS(gain=0.1)
    law.set_goal(None, GOAL)
    v = law.step(None, T0[None], np.array([0]))
    t0, r0 = error_metrics(GOAL, T0)
    t1, r1 = error_metrics(GOAL, T0 @ se3_exp(v[0]))
    assert r1 == pytest.approx(0.9 * r0, rel=1e-6)
    assert t1 == pytest.approx(0.9 * t0, rel=0.02)


def test_luminance_interaction_matrix_predicts_the_image_change():
    """L_I v ≈ I(pose · exp(v)) - I(pose) for a small motion along each degree of freedom."""
    law = DVS()
    sc = Scene(camera=law.camera)
    I0 = sc.render(GOAL).astype(np.float32)
    L = law.interaction_matrix(I0)
    b = law.border
    for k, step in enumerate([2e-3, 2e-3, 4e-3, 4e-3, 4e-3, 6e-3]):
        v = np.zeros(6)
        v[k] = step
        Ip, Im = (sc.render(GOAL @ se3_exp(s * v)).astype(np.float32)[b:-b, b:-b].ravel() for s in (1, -1))
        actual, predicted = (Ip - Im) / 2, L @ v
        cos = actual @ predicted / (np.linalg.norm(actual) * np.linalg.norm(predicted))
        assert cos > 0.8, (k, cos)
        assert 0.6 < np.linalg.norm(predicted) / np.linalg.norm(actual) < 1.5


def test_image_gradients_of_a_ramp():
    u = np.arange(40, dtype=np.float32)
    img = np.tile(3.0 * u, (30, 1))[None]           # I = 3u: ∂I/∂u = 3, ∂I/∂v = 0
    gx, gy = image_gradients(img, 3)
    assert gx.shape == (1, 24, 34)
    assert np.allclose(gx, 3.0, atol=1e-4) and np.allclose(gy, 0.0, atol=1e-4)


@pytest.mark.parametrize("interaction", ["esm", "desired"])
def test_dvs_converges_from_a_small_displacement(interaction):
    starts = np.stack([near_goal([0.02, -0.015, 0.03, 0.03, -0.04, 0.06]),
                       near_goal([-0.03, 0.02, -0.02, -0.05, 0.02, -0.08])])
    res = simulate(DVS(interaction=interaction), starts, iters=200)
    for i in range(2):
        t0, r0 = M.pose_errors(GOAL, res.poses[i, 0])
        t, r = M.pose_errors(GOAL, res.poses[i, res.n_poses[i] - 1])
        assert t < 1e-3 and np.degrees(r) < 0.05, (interaction, t, np.degrees(r))
        assert M.velocity_converged(res.last_velocities[i])


def test_dvs_is_batched_over_active_tasks_and_keeps_per_task_goals():
    law = DVS(size=64)
    sc = Scene(camera=law.camera)
    T = np.stack([near_goal([0.01, 0, 0, 0, 0, 0.02]), near_goal([0, 0.01, 0, 0.02, 0, 0]), GOAL])
    imgs = sc.render_batch(T)
    goals = np.stack([sc.render(GOAL)] * 3)
    law.set_goal(goals, GOAL)
    v_all = law.step(imgs, None, np.arange(3))
    law2 = DVS(size=64)
    law2.set_goal(goals, GOAL)
    v_sub = law2.step(imgs[[0, 2]], None, np.array([0, 2]))
    assert np.allclose(v_sub, v_all[[0, 2]], atol=1e-9)
    assert np.allclose(v_all[2], 0, atol=1e-9)      # at the goal: no motion
    # the twist moves the camera towards the goal
    for i in (0, 1):
        assert error_metrics(GOAL, T[i] @ se3_exp(v_all[i]))[0] < error_metrics(GOAL, T[i])[0]


@pytest.mark.parametrize("interaction", ["esm", "desired", "current"])
def test_dvs_on_a_blank_image_returns_a_finite_twist(interaction):
    law = DVS(size=64, interaction=interaction)
    law.set_goal(Scene(camera=law.camera).render(GOAL), GOAL)
    v = law.step(np.zeros((1, 64, 64), np.uint8), None, np.array([0]))
    assert np.all(np.isfinite(v))
    if interaction == "current":  # no gradient at all: H = 0, no motion
        assert np.allclose(v, 0)


def test_dvs_rejects_bad_configuration():
    with pytest.raises(ValueError, match="interaction"):
        DVS(interaction="mean")
    with pytest.raises(ValueError, match="border"):
        DVS(border=1)
    with pytest.raises(ValueError, match="camera"):
        DVS(size=64).set_goal(np.zeros((1, 32, 32), np.uint8), GOAL)


def test_dvs_levenberg_marquardt_schedule():
    law = DVS(mu=0.01, gn_after=500, mu_decay=0.995, mu_min=0.0)
    assert law.mu_at(np.array([0, 500]))[1] == 0.01
    assert law.mu_at(np.array([600]))[0] == pytest.approx(0.01 * 0.995 ** 100)
