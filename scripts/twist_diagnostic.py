#!/usr/bin/env python3
"""Does ψ steer the right way? For a model directory: the angle between the MLVS twist from
ψ(I) (K=50, eq. 13-14) and the oracle's twist from z_I := φ(r_true), at 200 benchmark task
starts and at 200 random poses near the goal per scale (~2 mm-5 cm, 0.2-6°). Also the
latent error's distance from φ's, ‖(ψ(I) − ψ(I*)) − (φ(r) − φ(0))‖, against ‖φ(r) − φ(0)‖.

    python scripts/twist_diagnostic.py models/default
"""
import sys

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from latent_vs.control.mlvs import MLVS
from latent_vs.geometry import pose_difference, se3_exp
from latent_vs.models import load_model
from latent_vs.scene import Scene
from latent_vs.tasks import sample_tasks


def main(model_dir: str) -> int:
    threadpool_limits(1, user_api="blas")
    torch.set_num_threads(1)
    m = load_model(model_dir)
    goal, scene = m.goal_pose, Scene(m.scene, m.camera)
    law = MLVS(m, k=50)
    z_star = m.encode(scene.render(goal)[None]).astype(np.float64)
    z_zero = m.embed_poses(np.zeros((1, 6))).astype(np.float64)

    def report(label, T):
        z = m.encode(np.stack([scene.render(t) for t in T])).astype(np.float64)
        z_r = m.embed_poses(pose_difference(goal, T)).astype(np.float64)
        law.set_goal_latent(z_star)
        v_psi = law.step_latent(z)
        law.set_goal_latent(z_zero)
        v_oracle = law.step_latent(z_r)
        cos = np.sum(v_psi * v_oracle, 1) / np.linalg.norm(v_psi, axis=1) / np.linalg.norm(v_oracle, axis=1)
        angle = np.degrees(np.arccos(np.clip(cos, -1, 1)))
        off = np.linalg.norm((z - z_star) - (z_r - z_zero), axis=1)
        print(f"{label}: twist angle median {np.median(angle):.1f}°, beyond 90° {np.mean(angle > 90):.0%}; "
              f"latent error off φ's by {np.median(off):.4f} (median; ‖φ(r) − φ(0)‖ "
              f"{np.median(np.linalg.norm(z_r - z_zero, axis=1)):.4f})")

    report("task starts", sample_tasks(200, seed=0, scene=m.scene))
    rng = np.random.default_rng(0)
    for scale in (0.3, 0.1, 0.03, 0.01):
        twist = rng.normal(size=(200, 6)) * np.array([0.1] * 3 + [0.2] * 3) * scale
        report(f"near the goal (scale {scale})", goal @ se3_exp(twist))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
