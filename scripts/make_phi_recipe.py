#!/usr/bin/env python3
"""Train the recipe φ (stage 1, `phi_train.train_phi`) on the training pose pool and save it
as TorchScript for `train.phi_init` (config/phi_recipe.pt is made by this script's defaults).

    python scripts/make_phi_recipe.py --out config/phi_recipe.pt [--steps 20000] [--neighbour-fraction 0]

φ depends on poses only, so one φ serves every scene. Its input scale (eq. 8's w_t, w_θu) is
computed exactly as the trainer computes it for `config/train_cpu_default.yaml` (the same
pool, seed and sample count), so a run that loads it sees the same eq. 8. Prints φ's held-out
geometry and an exact-Jacobian oracle servo (z_I := φ(r_true), eq. 14, gain 0.1) on seeded
benchmark tasks: converged share and path length over the straight-line length."""
import argparse
import os
import sys
import time

import numpy as np
import torch

from latent_vs.errors import UserError
from latent_vs.learning.config import load_config
from latent_vs.learning.data import PoseSet
from latent_vs.learning.export import to_torchscript
from latent_vs.learning.losses import data_weights
from latent_vs.learning.nets import PoseNet
from latent_vs.learning.phi_train import converged, oracle_servo, train_phi
from latent_vs.scene import goal_pose
from latent_vs.tasks import sample_tasks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="TorchScript file to write")
    p.add_argument("--config", default=os.path.join(ROOT, "config", "train_cpu_default.yaml"),
                   help="trainer config whose pool, seed, samples and φ shape to use")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--neighbour-fraction", type=float, default=0.0)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--oracle-tasks", type=int, default=100)
    p.add_argument("--oracle-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    if a.steps < 1 or a.oracle_tasks < 0 or not 0 <= a.neighbour_fraction <= 0.5:
        p.error("--steps must be >= 1, --oracle-tasks >= 0, --neighbour-fraction in [0, 0.5]")
    torch.set_num_threads(a.threads)
    try:
        cfg = load_config(a.config)
    except UserError as e:
        print(f"make_phi_recipe: error: {e}", file=sys.stderr)
        return 2
    pool = cfg.data.pool()
    poses = PoseSet.sample(cfg.data.samples, cfg.seed, cfg.scene_config(), **pool)
    w_t, w_r = data_weights(poses.r, cfg.data.weight_pairs, seed=cfg.seed)
    print(f"pool {pool}: w_t = {w_t:.4f} m, w_θu = {w_r:.4f} rad", flush=True)
    torch.manual_seed(cfg.seed)
    phi = PoseNet(tuple(cfg.phi.hidden), cfg.latent_dim, cfg.phi.activation,
                  input_scale=(1 / w_t,) * 3 + (1 / w_r,) * 3)

    def log(step, logs):
        print(f"step {step}: loss {logs['loss_phi']:.5f} lr {logs['lr']:.2e}", flush=True)

    out = train_phi(phi, steps=a.steps, batch_size=a.batch, lr=a.lr, w_t=w_t, w_r=w_r, seed=cfg.seed,
                    neighbour_fraction=a.neighbour_fraction, log=log, log_every=2000, pool=pool,
                    scene=cfg.scene_config())
    print("diagnostics: " + ", ".join(f"{k} {v:.4g}" for k, v in out.items()), flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    to_torchscript(phi.cpu().eval(), torch.zeros(2, 6)).save(a.out)
    print(f"wrote {a.out}", flush=True)
    if a.oracle_tasks:
        t0 = time.time()
        goal = goal_pose(cfg.scene_config())
        res = oracle_servo(phi, sample_tasks(a.oracle_tasks, seed=a.oracle_seed, scene=cfg.scene_config()), goal)
        ok = converged(res["t0"], res["r0"], res["t1"], res["r1"])
        ratio = res["length"][ok] / res["t0"][ok]
        print(f"oracle (exact Jacobian, {a.oracle_tasks} tasks, seed {a.oracle_seed}, {time.time() - t0:.0f} s): "
              f"converged {100 * ok.mean():.1f}%, end {1e3 * np.median(res['t1'][ok]):.3f} mm median, "
              f"path / straight line median {np.median(ratio):.3f}, mean {ratio.mean():.3f}, max {ratio.max():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
