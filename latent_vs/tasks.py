"""Seeded look-at/look-from servoing tasks (paper IV-A).

Camera positions are uniform in a 1.2 m x 1.2 m x 0.3 m box centred on the desired position;
the look-at point lies on the poster 8-32 cm from the desired one (uniform over the annulus);
the camera looks at it, then rolls about its optical axis by an angle uniform in
[-120°, 120°]. Paper: initial error 47 ± 16 cm, 74 ± 28°.
"""
from __future__ import annotations

import argparse

import numpy as np

from .geometry import error_metrics, pose_to_matrix
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


def sample_training_poses(n: int, seed: int = 0, scene: SceneConfig = SceneConfig(),
                          margin: float = 1.25, near_goal_fraction: float = 0.2,
                          near_goal_log: bool = False) -> np.ndarray:
    """Camera poses oT_c (n, 4, 4) for training: the benchmark's look-at/look-from
    distribution widened by `margin` (box, look-at radius, roll up to 180°), plus a fraction
    of small displacements around the goal (up to 5 cm, 10°) where servoing ends;
    near_goal_log scales each of those by a log-uniform factor in [1/50, 1] (down to 1 mm, 0.2°)."""
    rng = np.random.default_rng(seed)
    n_near = int(round(n * near_goal_fraction))
    far = sample_tasks(n - n_near, seed=int(rng.integers(2**31)), scene=scene,
                       box=tuple(margin * b for b in (1.2, 1.2, 0.3)),
                       look_at_radius=(0.0, 0.32 * margin), max_roll_deg=180.0)
    goal = goal_pose(scene)
    d = np.concatenate([rng.uniform(-0.05, 0.05, (n_near, 3)),
                        rng.normal(size=(n_near, 3))], 1)
    d[:, 3:] *= (np.deg2rad(rng.uniform(0, 10, n_near)) / np.linalg.norm(d[:, 3:], axis=1))[:, None]
    if near_goal_log:
        d *= np.exp(rng.uniform(np.log(1 / 50), 0.0, (n_near, 1)))
    near = goal @ pose_to_matrix(d)
    out = np.concatenate([far, near])
    return out[rng.permutation(n)]
