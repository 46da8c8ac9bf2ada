"""ψ's fit ‖ψ(I) − φ(r)‖ on poses it trained on against poses it never saw: the overfitting gap.

Draws 512 poses from the training pool exactly as `latent-vs train` does (the config's seed and
`data.samples`), 512 of the held-out set (seed + 7919) and 2000 fresh ones (another seed),
renders them clean and prints the mean fit, also by rotation from the goal (where it grows).

    python scripts/fit_gap.py models/default config/train_cpu_default.yaml [--samples 50000]

--samples: the pool size the model was trained on when it differs from the config's.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from latent_vs.learning.config import load_config  # noqa: E402
from latent_vs.learning.data import PoseSet  # noqa: E402
from latent_vs.models import load_model  # noqa: E402
from latent_vs.scene import Scene  # noqa: E402

BANDS_DEG = ((0, 30), (30, 60), (60, 90), (90, 180))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("config")
    ap.add_argument("--samples", type=int, default=None)
    a = ap.parse_args()
    cfg, model = load_config(a.config), load_model(a.model)
    scene_cfg = cfg.scene_config()
    scene = Scene(scene_cfg, cfg.camera_model())
    sets = (("training", cfg.seed, a.samples or cfg.data.samples, 512),
            ("held-out", cfg.seed + 7919, cfg.data.heldout, 512),
            ("fresh", 12345, 2000, 2000))
    for name, seed, n, k in sets:
        poses = PoseSet.sample(n, seed, scene_cfg, **cfg.data.pool())
        idx = np.random.default_rng(1).choice(len(poses), min(k, len(poses)), replace=False)
        fit = np.linalg.norm(model.encode(scene.render_batch(poses.T[idx])) - model.embed_poses(poses.r[idx]), axis=1)
        rot = np.degrees(np.linalg.norm(poses.r[idx, 3:], axis=1))
        bands = "  ".join(f"{lo}-{hi}°: {fit[(rot >= lo) & (rot < hi)].mean():.3f}" for lo, hi in BANDS_DEG)
        print(f"{name:9s} ({len(idx)} poses): fit {fit.mean():.4f}   by rotation  {bands}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
