"""ψ's fit ‖ψ(I) − φ(r)‖ on poses it trained on against poses it never saw: the overfitting gap.

Draws 512 poses from the training pool exactly as `latent-vs train` does, from the config the
model records in its meta.json (seed, `data.samples`, the pool), 512 of its held-out set and
2000 fresh ones (another seed), renders them clean and prints the mean fit, also by rotation
from the goal (where it grows) and within 10 cm of the goal position beyond 45° (where the
longest MLVS paths run). --fresh-from OTHER draws the fresh poses from another model's pool, so
that two models trained on different pools are compared on the same poses.

    python scripts/fit_gap.py models/default [--fresh-from /tmp/other_model]
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from latent_vs.learning.config import config_from_dict  # noqa: E402
from latent_vs.learning.data import PoseSet  # noqa: E402
from latent_vs.models import load_model, read_meta  # noqa: E402
from latent_vs.scene import Scene  # noqa: E402

BANDS_DEG = ((0, 30), (30, 60), (60, 90), (90, 180))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("--fresh-from", metavar="MODEL_DIR", help="draw the fresh poses from this model's pool")
    a = ap.parse_args()
    model = load_model(a.model_dir)
    cfg = config_from_dict(model.meta["config"])
    fresh_pool = config_from_dict(read_meta(a.fresh_from)["config"]).data.pool() if a.fresh_from else None
    scene = Scene(model.scene, cfg.camera_model())
    sets = (("training", cfg.seed, cfg.data.samples, 512, cfg.data.pool()),
            ("held-out", cfg.heldout_seed(), cfg.data.heldout, 512, cfg.data.pool()),
            ("fresh", 12345, 2000, 2000, fresh_pool or cfg.data.pool()))
    for name, seed, n, k, pool in sets:
        poses = PoseSet.sample(n, seed, model.scene, **pool)
        idx = np.random.default_rng(1).choice(len(poses), min(k, len(poses)), replace=False)
        fit = np.linalg.norm(model.encode(scene.render_batch(poses.T[idx])) - model.embed_poses(poses.r[idx]), axis=1)
        rot = np.degrees(np.linalg.norm(poses.r[idx, 3:], axis=1))
        close = (np.linalg.norm(poses.r[idx, :3], axis=1) < 0.10) & (rot > 45)
        bands = "  ".join(f"{lo}-{hi}°: {fit[(rot >= lo) & (rot < hi)].mean():.3f}" for lo, hi in BANDS_DEG)
        print(f"{name:9s} ({len(idx)} poses): fit {fit.mean():.4f}   by rotation  {bands}   "
              f"<10 cm & >45° ({close.sum()}): {fit[close].mean() if close.any() else float('nan'):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
