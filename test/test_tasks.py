"""The seeded look-at/look-from task sampler (paper IV-A)."""
import numpy as np
import pytest

from latent_vs import tasks as T
from latent_vs.geometry import error_metrics
from latent_vs.scene import goal_pose


def test_tasks_are_reproducible_for_a_seed():
    a, b, c = T.sample_tasks(40, seed=3), T.sample_tasks(40, seed=3), T.sample_tasks(40, seed=4)
    assert a.shape == (40, 4, 4)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    # a prefix of a longer run is the same tasks
    assert np.array_equal(T.sample_tasks(10, seed=3), a[:10])


def test_initial_error_statistics_are_near_the_papers():
    s = T.initial_error_stats(T.sample_tasks(500, seed=0))
    # paper: 47 ± 16 cm, 74 ± 28°
    assert 41 < s["t_mean_cm"] < 53 and 11 < s["t_std_cm"] < 21
    assert 66 < s["r_mean_deg"] < 82 and 21 < s["r_std_deg"] < 35


def test_tasks_follow_the_box_look_at_and_roll_ranges():
    tasks = T.sample_tasks(300, seed=1)
    goal = goal_pose()
    off = tasks[:, :3, 3] - goal[:3, 3]
    assert np.all(np.abs(off) <= np.array([0.6, 0.6, 0.15]) + 1e-12)
    # the optical axis meets the poster plane 8-32 cm from its centre
    z = tasks[:, :3, 2]
    lam = -tasks[:, 2, 3] / z[:, 2]
    hit = tasks[:, :3, 3] + lam[:, None] * z
    r = np.linalg.norm(hit[:, :2], axis=1)
    assert np.all(lam > 0) and np.all((r > 0.08 - 1e-9) & (r < 0.32 + 1e-9))
    assert np.allclose(tasks[:, :3, :3] @ np.swapaxes(tasks[:, :3, :3], 1, 2), np.eye(3), atol=1e-12)
    # roll spread: the rotation errors reach beyond 120°
    _, rerr = error_metrics(goal, tasks)
    assert np.degrees(rerr).max() > 120


def test_look_at_points_the_optical_axis_at_the_target():
    pos, target = np.array([0.3, -0.2, -0.7]), np.array([0.05, 0.1, 0.0])
    for roll in (0.0, 1.0, -2.0):
        Tc = T.look_at(pos, target, roll)
        p_cam = np.linalg.inv(Tc) @ np.append(target, 1.0)
        assert np.allclose(p_cam[:2], 0, atol=1e-12) and p_cam[2] > 0
    # looking straight along the scene's y axis still gives a rotation
    Tc = T.look_at(np.array([0, -1.0, 0]), np.zeros(3))
    assert np.isclose(np.linalg.det(Tc[:3, :3]), 1.0)


def test_training_poses_are_seeded_and_include_near_goal_poses():
    a, b = T.sample_training_poses(200, seed=5), T.sample_training_poses(200, seed=5)
    assert a.shape == (200, 4, 4) and np.array_equal(a, b)
    t, r = error_metrics(goal_pose(), a)
    near = (t < 0.05 * np.sqrt(3) + 1e-9) & (np.degrees(r) <= 10 + 1e-6)
    assert near.mean() > 0.15


def test_tasks_command_prints_the_statistics(capsys):
    assert T.main(["--tasks", "50", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "50 tasks (seed 2)" in out and "paper: 47 ± 16 cm, 74 ± 28°" in out


def test_near_goal_log_scale_adds_small_displacements():
    goal = goal_pose()
    uni = T.sample_training_poses(4000, seed=3, near_goal_fraction=0.5, path_fraction=0.0, near_goal_log=False)
    log = T.sample_training_poses(4000, seed=3, near_goal_fraction=0.5, path_fraction=0.0, near_goal_log=True)
    t_u, r_u = error_metrics(goal, uni)
    t_l, r_l = error_metrics(goal, log)
    near_u = (t_u < 0.0867) & (r_u < np.deg2rad(10.01))      # the box's corner: √3 · 5 cm
    near_l = (t_l < 0.0867) & (r_l < np.deg2rad(10.01))
    assert near_u.sum() >= 1990 and near_l.sum() > 1700       # log scales reach 8 cm per axis
    assert (t_l[near_l] < 0.005).mean() > 5 * (t_u[near_u] < 0.005).mean()
    assert t_l[near_l].min() < 0.002 and np.rad2deg(r_l[near_l]).min() < 0.1


def test_near_goal_minimum_scale_reaches_below_half_a_millimetre():
    goal = goal_pose()
    kw = dict(n=4000, seed=3, near_goal_fraction=0.5, path_fraction=0.0)
    t_d, r_d = error_metrics(goal, T.sample_training_poses(**kw))
    t_s, r_s = error_metrics(goal, T.sample_training_poses(**kw, near_goal_min_mm=0.05, near_goal_min_deg=0.005))
    assert (t_s < 2e-4).sum() > 3 * max((t_d < 2e-4).sum(), 1)      # more poses where the servo ends
    assert (r_s < np.deg2rad(0.02)).sum() > 3 * max((r_d < np.deg2rad(0.02)).sum(), 1)
    assert (t_s > 0.05).sum() > 50                                   # still reaching 8 cm per axis
    for bad in (dict(near_goal_min_mm=0.0), dict(near_goal_min_mm=100.0), dict(near_goal_min_deg=-1.0)):
        with pytest.raises(ValueError):
            T.sample_training_poses(10, **bad)


def test_training_pool_fills_the_paths_to_the_goal():
    """The path component: starts shrunk towards the goal along r = s·r0, so the pool holds poses
    at every distance between the benchmark's starts and the goal (where trajectories run)."""
    from latent_vs.geometry import pose_difference
    goal = goal_pose()
    r_none = pose_difference(goal, T.sample_training_poses(6000, seed=4, path_fraction=0.0, near_goal_fraction=0.0))
    r_path = pose_difference(goal, T.sample_training_poses(6000, seed=4, path_fraction=0.5, near_goal_fraction=0.0))
    mid = lambda r: ((np.linalg.norm(r[:, :3], axis=1) > 0.03) & (np.linalg.norm(r[:, :3], axis=1) < 0.15)).mean()
    assert mid(r_path) > 4 * mid(r_none) and mid(r_path) > 0.08
    # every start in the benchmark's range is covered: roll of the starts reaches ±max_roll_deg
    _, rot = error_metrics(goal, T.sample_training_poses(6000, seed=4, path_fraction=0.0, near_goal_fraction=0.0))
    assert np.rad2deg(rot.max()) > 140
    with pytest.raises(ValueError):
        T.sample_training_poses(10, path_fraction=0.8, near_goal_fraction=0.3)


def test_decoupled_paths_put_large_rotations_near_the_goal_position():
    """r = (s_t·t0, s_r·θu0): within 10 cm of the goal position, rotations beyond 45°, which
    r = s·r0 leaves almost empty; a pool without the part is the one drawn before it existed."""
    goal = goal_pose()
    base = T.sample_training_poses(8000, seed=6, path_fraction=0.25)
    assert np.array_equal(base, T.sample_training_poses(8000, seed=6, path_fraction=0.25, decoupled_fraction=0.0))
    dec = T.sample_training_poses(8000, seed=6, path_fraction=0.25, decoupled_fraction=0.15)

    def region(P):
        t, r = error_metrics(goal, P)
        return ((t < 0.10) & (r > np.deg2rad(45))).mean()

    assert region(dec) > 2.5 * region(base) and region(dec) > 0.01
    with pytest.raises(ValueError):
        T.sample_training_poses(10, path_fraction=0.5, decoupled_fraction=0.3, near_goal_fraction=0.3)
