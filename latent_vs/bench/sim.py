"""Batched closed-loop simulation of any ControlLaw on a set of tasks (the benchmark's engine).

Every iteration: render the image of each running task with `law.camera` (laws with no camera
get none), pass the true poses to laws with `needs_pose`, ask for the twists of the running
tasks, and move each camera: oT_c <- oT_c · exp(v) (geometry.se3_exp). Tasks stop early by the
rules of metrics.py (still, or lost); a stopped task keeps its last pose.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..camera import Camera
from ..geometry import matrix_to_pose, se3_exp
from ..scene import Scene, SceneConfig, goal_pose, perturb_goal
from . import metrics as M


@dataclass
class SimResult:
    poses: np.ndarray            # (N, iters + 1, 6) float32 pose vectors (t, θu) of oT_c; valid up to n_poses
    n_poses: np.ndarray          # (N,) valid poses per task (iterations run + 1)
    last_velocities: np.ndarray  # (N, 10, 6) the last twists applied (zeros before the first)
    reason: np.ndarray           # (N,) why the task stopped: metrics.REASONS


def law_scene(law) -> SceneConfig:
    """The scene a law was made for: its own `scene_config`, its model's `scene`, else the default."""
    for cand in (getattr(law, "scene_config", None), getattr(getattr(law, "model", None), "scene", None)):
        if isinstance(cand, SceneConfig):
            return cand
    return SceneConfig()


def goal_images(law, n_tasks: int, scene: SceneConfig, perturbed: bool, seed: int,
                task_ids: np.ndarray | None = None, renderer=Scene) -> np.ndarray | None:
    """I* for each task, rendered with law.camera at the desired pose; perturbed (lighting +
    occlusion, scene.perturb_goal) with a generator seeded by (seed, task id). None if the law
    reads no image. renderer: (SceneConfig, Camera) -> an object with render(oT_c) -> uint8
    image (latent_vs.scene.Scene; scripts/renderer_check.py passes another)."""
    if law.camera is None:
        return None
    img = renderer(scene, law.camera).render(goal_pose(scene))
    ids = np.arange(n_tasks) if task_ids is None else np.asarray(task_ids)
    if not perturbed:
        return np.repeat(img[None], n_tasks, 0)
    return np.stack([perturb_goal(img, np.random.default_rng([seed, int(i), 7])) for i in ids])


def visible_fraction(scene: SceneConfig, camera: Camera, T_oc: np.ndarray, grid: int = 16) -> np.ndarray:
    """Fraction of a grid x grid set of image points whose ray meets the poster in front of the
    camera, for each pose (B, 4, 4) -> (B,)."""
    u = (np.arange(grid) + 0.5) * camera.width / grid - 0.5
    v = (np.arange(grid) + 0.5) * camera.height / grid - 0.5
    uu, vv = np.meshgrid(u, v)
    rays = np.stack([(uu.ravel() - camera.u0) / camera.px, (vv.ravel() - camera.v0) / camera.py,
                     np.ones(grid * grid)], 1)                                   # (P, 3), camera frame
    R, t = T_oc[:, :3, :3], T_oc[:, :3, 3]
    d = rays @ np.swapaxes(R, -1, -2)                                            # (B, P, 3) scene frame
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = -t[:, None, 2] / d[..., 2]                                          # plane z = 0
    p = t[:, None, :] + lam[..., None] * d
    hit = (lam > 0) & (np.abs(p[..., 0]) <= scene.width_m / 2) & (np.abs(p[..., 1]) <= scene.height_m / 2)
    return hit.mean(1)


def simulate(law, tasks: np.ndarray, iters: int, goal_imgs: np.ndarray | None = None,
             scene: SceneConfig | None = None, on_iteration=None, renderer=Scene) -> SimResult:
    """Run `law` on tasks (N, 4, 4) initial oT_c for at most `iters` iterations.
    goal_imgs: I* per task (N, H, W) rendered with law.camera (None: the clean I*).
    renderer: as in goal_images."""
    scene = scene or law_scene(law)
    N = len(tasks)
    goal = goal_pose(scene)
    view = renderer(scene, law.camera) if law.camera is not None else None
    if view is not None and goal_imgs is None:
        goal_imgs = goal_images(law, N, scene, perturbed=False, seed=0, renderer=renderer)
    law.set_goal(goal_imgs, goal)

    T = np.array(tasks, dtype=float)
    poses = np.zeros((N, iters + 1, 6), np.float32)
    poses[:, 0] = matrix_to_pose(T)
    n_poses = np.ones(N, int)
    last_v = np.zeros((N, M.VEL_WINDOW, 6))
    reason = np.full(N, "max_iters", dtype=object)
    out_of_view = np.zeros(N, int)
    active = np.arange(N)
    for k in range(iters):
        if active.size == 0:
            break
        images = np.stack([view.render(T[i]) for i in active]) if view is not None else None
        v = np.asarray(law.step(images, T[active] if law.needs_pose else None, active), dtype=float)
        bad = ~np.all(np.isfinite(v), axis=1)
        v[bad] = 0.0
        T[active] = T[active] @ se3_exp(v)
        poses[active, k + 1] = matrix_to_pose(T[active])
        n_poses[active] = k + 2
        last_v[active] = np.concatenate([last_v[active, 1:], v[:, None]], 1)

        stop = np.full(active.size, None, dtype=object)
        stop[(k + 1 >= M.VEL_WINDOW) & M.is_still(last_v[active])] = "still"
        if view is not None:
            seen = visible_fraction(scene, law.camera, T[active]) > 0
            out_of_view[active] = np.where(seen, 0, out_of_view[active] + 1)
            stop[out_of_view[active] >= M.LOST_OUT_OF_VIEW_ITERS] = "out_of_view"
        dist = np.linalg.norm(T[active, :3, 3] - goal[:3, 3], axis=1)
        stop[dist > M.LOST_DISTANCE_M] = "diverged"
        stop[bad] = "non_finite"
        done = stop != None  # noqa: E711 (object array)
        reason[active[done]] = stop[done]
        active = active[~done]
        if on_iteration is not None:
            on_iteration(k, active.size)
    return SimResult(poses, n_poses, last_v, reason.astype(str))
