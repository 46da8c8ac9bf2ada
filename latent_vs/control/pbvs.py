"""PBVS on the true pose: the reference law of the benchmark (paper Sec. II-B).

    Δr = c*r_c = (c*t_c, θu)            (the current camera seen from the desired one)
    v  = -λ L_r⁻¹ Δr                    (eq. 5 for L_r; camera twist per iteration)

With L_r = [[c*R_c, 0], [0, L_θu]] this gives d(c*t_c)/dt = -λ c*t_c (a straight line to the
goal) and d(θu)/dt = -λ θu (the rotation geodesic): the shortest path, both ways.
"""
from __future__ import annotations

import numpy as np

from ..geometry import L_pose, pose_difference
from .base import ControlLaw


class PBVS(ControlLaw):
    name = "pbvs"
    camera = None       # reads no image
    needs_pose = True   # the true pose oT_c

    def __init__(self, gain: float = 0.1):
        self.gain = float(gain)
        self.goal_pose: np.ndarray | None = None

    def set_goal(self, goal_images, goal_pose: np.ndarray) -> None:
        self.goal_pose = np.asarray(goal_pose, dtype=float)

    def step(self, images, poses: np.ndarray, active: np.ndarray) -> np.ndarray:
        if self.goal_pose is None:
            raise RuntimeError("PBVS.step before set_goal")
        poses = np.asarray(poses, dtype=float).reshape(-1, 4, 4)
        goal = self.goal_pose if self.goal_pose.ndim == 2 else self.goal_pose[np.asarray(active)]
        dr = pose_difference(goal, poses)                       # (B, 6)
        L = L_pose(dr)                                          # eq. 5, (B, 6, 6)
        return -self.gain * np.linalg.solve(L, dr[..., None])[..., 0]


def make(model_dir: str | None = None, gain: float = 0.1) -> PBVS:
    """Factory for control/methods.py (PBVS needs no model)."""
    return PBVS(gain=gain)
