"""The one interface every control law implements (PBVS, DVS, AEVS, PBVS-CNN, MLVS).

A control law servos B tasks at once (B = 1 in the nodes; hundreds in the benchmark):

    law.set_goal(goal_images, goal_pose)   # I*: (B, H, W) uint8 (or (H, W) for all), oT_c* (4, 4)
    v = law.step(images, poses, active)    # -> (len(active), 6) camera twists (v, ω), camera frame

`images` are uint8 grayscale (len(active), H, W) rendered with `law.camera` (None: the law
needs no image); `poses` are the true oT_c (len(active), 4, 4), read only by laws with
`needs_pose = True` (PBVS, oracles); `active` indexes the tasks of set_goal still running.
Twists are per iteration (the benchmark applies T <- T · exp(v)); the ROS nodes read them
per second.
"""
from __future__ import annotations

import numpy as np

from ..camera import Camera


class ControlLaw:
    name: str = "base"
    camera: Camera | None = None   # render images with this camera; None: no image needed
    needs_pose: bool = False       # reads the true pose (PBVS reference, oracle rows)

    def set_goal(self, goal_images: np.ndarray | None, goal_pose: np.ndarray) -> None:
        raise NotImplementedError

    def step(self, images: np.ndarray | None, poses: np.ndarray | None, active: np.ndarray) -> np.ndarray:
        raise NotImplementedError
