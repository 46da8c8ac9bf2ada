#!/usr/bin/env python3
"""MLVS on images from a second, independently written renderer of the same poster scene: does
the shipped ψ generalise beyond the quirks of the renderer it was trained on?

latent_vs.scene renders by OpenCV homography warp from a copy of the poster pre-resampled to the
camera's resolution at the goal depth (no aliasing there). The renderer here casts each pixel's
ray onto the poster plane and samples the poster file at its own resolution (cv2.remap), so it
differs in texture resolution, aliasing, grey conversion and sub-pixel conventions. The goal
image I* comes from the same renderer as the current images, as it would on a user's rig.

    python scripts/renderer_check.py --tasks 100 --seed 11 [--variants ours,ray64,...] [--model M]

Variants: ours (latent_vs.scene at ψ's size), ray64 (ray cast at 64 px from the full poster:
aliased where the poster is minified), ray64-ss4 (4x4 supersampled), ray224 (224 px camera, the
encoder's resize to ψ's input), ray224-mean (grey = mean of R, G, B instead of BT.601),
ray224-gamma (grey levels through a 0.8 gamma curve), ray224-bg128 (mid-grey background),
ray224-bg255 (white background).
One table row per variant (converged %, end error, APE and length ratio against PBVS)."""
import argparse
import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

VARIANTS = {
    "ours": {},
    "ray64": dict(size=64),
    "ray64-ss4": dict(size=64, supersample=4),
    "ray224": dict(size=224),
    "ray224-mean": dict(size=224, grey="mean"),
    "ray224-gamma": dict(size=224, gamma=0.8),
    "ray224-bg128": dict(size=224, background=128),
    "ray224-bg255": dict(size=224, background=255),
}


class RayCastScene:
    """The poster plane z = 0 (centred, width_m x height_m) seen by a pinhole camera, one ray per
    (sub-)pixel centre, bilinear samples of the poster file at its own resolution."""

    def __init__(self, config, camera, supersample: int = 1, grey: str = "bt601", gamma: float = 1.0,
                 background: int | None = None):
        self.config, self.camera, self.ss = config, camera, int(supersample)
        bgr = cv2.imread(os.path.abspath(config.texture), cv2.IMREAD_COLOR).astype(np.float32)
        tex = bgr.mean(2) if grey == "mean" else cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        self.texture = (255.0 * (tex / 255.0) ** gamma).astype(np.float32)
        self.background = float(config.background if background is None else background)
        s = self.ss
        u = (np.arange(camera.width * s) + 0.5) / s - 0.5          # sub-pixel centres, pixel units
        v = (np.arange(camera.height * s) + 0.5) / s - 0.5
        uu, vv = np.meshgrid(u, v)
        self.rays = np.stack([(uu - camera.u0) / camera.px, (vv - camera.v0) / camera.py, np.ones_like(uu)], -1)

    def render(self, T_oc: np.ndarray) -> np.ndarray:
        R, t = T_oc[:3, :3], T_oc[:3, 3]
        d = self.rays @ R.T                                          # ray directions, poster frame
        with np.errstate(divide="ignore", invalid="ignore"):
            lam = -t[2] / d[..., 2]
        x, y = t[0] + lam * d[..., 0], t[1] + lam * d[..., 1]
        th, tw = self.texture.shape
        # poster point -> texture pixel: the poster's edges are the texture's outer pixel edges
        mx = ((x / self.config.width_m + 0.5) * tw - 0.5).astype(np.float32)
        my = ((y / self.config.height_m + 0.5) * th - 0.5).astype(np.float32)
        bad = ~(lam > 0) | ~np.isfinite(mx) | ~np.isfinite(my)
        mx[bad], my[bad] = -1e4, -1e4
        img = cv2.remap(self.texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                        borderValue=self.background)
        if self.ss > 1:
            img = cv2.resize(img, (self.camera.width, self.camera.height), interpolation=cv2.INTER_AREA)
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)

    def render_batch(self, T_oc):
        return np.stack([self.render(T) for T in T_oc])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=100)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--iters", type=int, default=1500)
    p.add_argument("--model", default=None)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--perturbed", action="store_true", help="perturb I* (lighting + occlusion) as the benchmark does")
    a = p.parse_args(argv)
    names = a.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)} (known: {', '.join(VARIANTS)})")

    import torch
    torch.set_num_threads(1)
    from latent_vs.bench import metrics as M
    from latent_vs.bench import sim
    from latent_vs.control import mlvs, pbvs
    from latent_vs.scene import Scene, goal_pose
    from latent_vs.tasks import sample_tasks

    tasks = ref = goal = None
    print(f"{'variant':14s} {'conv %':>7s} {'end mm':>8s} {'end °':>7s} {'APE cm':>7s} {'ratio':>12s}  stops")
    for name in names:
        opts = dict(VARIANTS[name])
        law = mlvs.make(a.model, k=a.k, sensor=opts.pop("size", None))
        scene = sim.law_scene(law)
        if tasks is None:
            tasks = sample_tasks(a.tasks, seed=a.seed, scene=scene)
            goal = goal_pose(scene)
            ref = sim.simulate(pbvs.PBVS(), tasks, a.iters, None, scene)
        renderer = Scene if name == "ours" else (lambda cfg, cam, o=opts: RayCastScene(cfg, cam, **o))
        imgs = sim.goal_images(law, len(tasks), scene, a.perturbed, a.seed, renderer=renderer)
        res = sim.simulate(law, tasks, a.iters, imgs, scene, renderer=renderer)
        L = a.iters + 1
        figs = [M.task_metrics(goal, res.poses[i], res.n_poses[i], res.last_velocities[i], str(res.reason[i]),
                               ref.poses[i], ref.n_poses[i], L) for i in range(len(tasks))]
        row = M.summarize(figs)
        stops = ", ".join(f"{k} {v}" for k, v in row["stops"].items() if v)
        print(f"{name:14s} {row['converged_pct']:7.1f} {row['end_mm'][0]:8.3f} {row['end_deg'][0]:7.3f} "
              f"{row['ape_cm'][0]:7.2f} {row['length_ratio'][0]:6.3f} ± {row['length_ratio'][1]:.2f}  {stops}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
