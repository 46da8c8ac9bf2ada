"""Seeded look-at/look-from servoing tasks (paper IV-A).

Camera positions are uniform in a 1.2 m x 1.2 m x 0.3 m box centred on the desired position;
the look-at point lies on the poster 8-32 cm from the desired one (uniform over the annulus);
the camera looks at it, then rolls about its optical axis by an angle uniform in
[-120°, 120°]. Paper: initial error 47 ± 16 cm, 74 ± 28°.
"""
from __future__ import annotations

import argparse

import numpy as np

from .geometry import error_metrics, pose_difference, pose_to_matrix
from .scene import SceneConfig, goal_pose


def look_at(position: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """oT_c for a camera at `position` whose optical axis (+z) passes through `target`,
    x axis as close to the scene's +x as possible, then rolled by `roll` about +z."""
    z = target - position
    z = z / np.linalg.norm(z)
    x = np.cross(np.array([0.0, 1.0, 0.0]), z)
    if np.linalg.norm(x) < 1e-9:  # optical axis along the scene's y axis
        x = np.cross(z, np.array([0.0, 0.0, 1.0]))
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    c, s = np.cos(roll), np.sin(roll)
    R = np.column_stack([x, y, z]) @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, position
    return T


def sample_tasks(n: int, seed: int = 0, scene: SceneConfig = SceneConfig(),
                 box=(1.2, 1.2, 0.3), look_at_radius=(0.08, 0.32), max_roll_deg: float = 120.0) -> np.ndarray:
    """n initial camera poses oT_c (n, 4, 4), reproducible for a given seed."""
    rng = np.random.default_rng(seed)
    goal = goal_pose(scene)
    centre, focus = goal[:3, 3], np.zeros(3)  # the desired camera looks at the poster centre
    out = np.empty((n, 4, 4))
    for i in range(n):
        pos = centre + rng.uniform(-0.5, 0.5, 3) * np.asarray(box)
        r0, r1 = look_at_radius
        rad = np.sqrt(rng.uniform(r0**2, r1**2))
        ang = rng.uniform(0, 2 * np.pi)
        target = focus + np.array([rad * np.cos(ang), rad * np.sin(ang), 0.0])
        roll = np.deg2rad(rng.uniform(-max_roll_deg, max_roll_deg))
        out[i] = look_at(pos, target, roll)
    return out


def initial_error_stats(tasks: np.ndarray, scene: SceneConfig = SceneConfig()) -> dict:
    t_err, r_err = error_metrics(goal_pose(scene), tasks)
    return {"n": len(tasks), "t_mean_cm": 100 * t_err.mean(), "t_std_cm": 100 * t_err.std(),
            "r_mean_deg": np.rad2deg(r_err.mean()), "r_std_deg": np.rad2deg(r_err.std())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="latent-vs tasks", description="Print the initial-error statistics of the seeded look-at/look-from tasks.")
    p.add_argument("--tasks", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.tasks <= 0:
        p.error("--tasks must be positive")
    s = initial_error_stats(sample_tasks(a.tasks, a.seed))
    print(f"{s['n']} tasks (seed {a.seed}): initial error {s['t_mean_cm']:.1f} ± {s['t_std_cm']:.1f} cm, "
          f"{s['r_mean_deg']:.1f} ± {s['r_std_deg']:.1f}°  (paper: 47 ± 16 cm, 74 ± 28°)")
    return 0


NEAR_GOAL_MAX_MM, NEAR_GOAL_MAX_DEG = 80.0, 8.0   # upper ends of the log-uniform near-goal scales


def sample_training_poses(n: int, seed: int = 0, scene: SceneConfig = SceneConfig(),
                          margin: float = 1.2, near_goal_fraction: float = 0.25,
                          near_goal_log: bool = True, path_fraction: float = 0.35,
                          max_roll_deg: float = 150.0, decoupled_fraction: float = 0.0,
                          near_goal_min_mm: float = 0.5, near_goal_min_deg: float = 0.05) -> np.ndarray:
    """Camera poses oT_c (n, 4, 4) for training: the pose pool that makes φ servo straight.

    Three parts (four with `decoupled_fraction`), in pose-vector space r = (t, θu) of the camera
    seen from the goal:
      * starts: the benchmark's look-at/look-from sampler widened by `margin` (box, look-at
        radius from 0) with a roll up to ±`max_roll_deg` (benchmark: 1.2 × 1.2 × 0.3 m,
        8–32 cm, ±120°);
      * paths (`path_fraction`): more such starts shrunk towards the goal, r = s·r0 with
        s ~ U(0, 1): the straight path the servo should take. Without them φ is unconstrained
        exactly where the trajectories run (MLVS K=50 went from 56% to 100% converged);
      * decoupled paths (`decoupled_fraction`): starts shrunk with independent progress in
        translation and rotation, r = (s_t·t0, s_r·θu0), s_t, s_r ~ U(0, 1): a servo rarely
        cancels both at one rate, and with r = s·r0 alone a few centimetres from the goal
        means a few degrees, so large rotations close to the goal position were left empty;
      * near the goal (`near_goal_fraction`): each component normal with a scale log-uniform in
        `near_goal_min_mm`–8 cm (translation) and `near_goal_min_deg`–8° (rotation), where
        servoing ends; with near_goal_log=False, uniform in a ±5 cm box and up to 10° instead.
    """
    if not (min(near_goal_fraction, path_fraction, decoupled_fraction) >= 0
            and near_goal_fraction + path_fraction + decoupled_fraction <= 1):
        raise ValueError("sample_training_poses: fractions must be >= 0 and sum to <= 1")
    if not (0 < near_goal_min_mm < NEAR_GOAL_MAX_MM and 0 < near_goal_min_deg < NEAR_GOAL_MAX_DEG):
        raise ValueError(f"sample_training_poses: near_goal_min_mm must be in (0, {NEAR_GOAL_MAX_MM:g}), "
                         f"near_goal_min_deg in (0, {NEAR_GOAL_MAX_DEG:g})")
    rng = np.random.default_rng(seed)
    n_near = int(round(n * near_goal_fraction))
    n_path = int(round(n * path_fraction))
    n_dec = int(round(n * decoupled_fraction))
    goal = goal_pose(scene)
    starts = sample_tasks(n - n_near, seed=int(rng.integers(2**31)), scene=scene,
                          box=tuple(margin * b for b in (1.2, 1.2, 0.3)),
                          look_at_radius=(0.0, 0.32 * margin), max_roll_deg=max_roll_deg)
    r_path = pose_difference(goal, starts[:n_path]) * rng.uniform(0, 1, (n_path, 1))
    if near_goal_log:
        lo, hi = np.log([near_goal_min_mm * 1e-3, np.deg2rad(near_goal_min_deg)]), \
            np.log([NEAR_GOAL_MAX_MM * 1e-3, np.deg2rad(NEAR_GOAL_MAX_DEG)])
        scale = np.exp(np.concatenate([rng.uniform(lo[0], hi[0], (n_near, 1)), rng.uniform(lo[1], hi[1], (n_near, 1))], 1))
        d = rng.normal(size=(n_near, 6)) * np.repeat(scale, 3, axis=1)
    else:
        d = np.concatenate([rng.uniform(-0.05, 0.05, (n_near, 3)), rng.normal(size=(n_near, 3))], 1)
        d[:, 3:] *= (np.deg2rad(rng.uniform(0, 10, n_near)) / np.linalg.norm(d[:, 3:], axis=1))[:, None]
    parts = [goal @ pose_to_matrix(r_path), starts[n_path + n_dec:], goal @ pose_to_matrix(d)]
    if n_dec:   # drawn last: a pool without this part is the same as before it existed
        r_dec = pose_difference(goal, starts[n_path:n_path + n_dec])
        r_dec *= np.repeat(rng.uniform(0, 1, (n_dec, 2)), 3, axis=1)
        parts.append(goal @ pose_to_matrix(r_dec))
    out = np.concatenate(parts)
    return out[rng.permutation(n)]
