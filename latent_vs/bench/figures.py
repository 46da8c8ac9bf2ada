"""The paper's figures as PNGs, from closed-loop simulation with the package's models.

* Fig. 3a (`latent_pca_figure`): 8 MLVS trajectories whose initial errors are 20 cm displacements
  in the x/y plane (every 45°), drawn as z_I − z_I* projected on the first two principal
  components of all their latent errors; closed curves: the pose-embedding errors
  z_r − z_r* = φ(r) − φ(0) of x/y displacements of 5, 10, 15 and 20 cm, in the same projection.
* Fig. 3b (`trajectories_figure`): the 3-D camera trajectories of every method on one benchmark
  task (bench/plots.py:trajectories_3d).
* Fig. 4-style panel (`mlvs_run_panel`): one MLVS run — start and desired images, image
  differences at the start and the end, pose error r − r* (t in cm, θu in °), latent error
  z_I − z_I*, camera twists, and the 3-D trajectory. Default start: the paper's robot
  experiment, Δr0 = (−8.16 cm, 7.27 cm, −29.98 cm, 24.86°, −10.16°, 135.06°), 1200 iterations.

    latent-vs figures [--model DIR] [--out figures] [--which 3a,3b,4] [--task N] [--iters N]

Methods whose model is missing are left out of Fig. 3b with a note (Fig. 3a and 4 need the
MLVS model).
"""
from __future__ import annotations

import argparse
import io
import os
import sys

import matplotlib
from matplotlib.figure import Figure   # no pyplot: no GUI backend, no global figure registry
import numpy as np

from ..errors import UserError
from ..geometry import inverse, matrix_to_pose, pose_difference, pose_to_matrix, se3_log
from ..scene import Scene, SceneConfig, goal_pose
from .plots import trajectories_3d
from .report import write_atomic
from .sim import law_scene, simulate

# the paper's robot experiment (Sec. IV-B): initial pose error r - r* (cm, °)
PAPER_FIG4_START = (-8.16, 7.27, -29.98, 24.86, -10.16, 135.06)
FIG3B_METHODS = ("pbvs", "dvs", "aevs", "pbvs-cnn", "mlvs-k1", "mlvs-k50")


def _save(fig, path: str, dpi: int = 100) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomic(path, buf.getvalue())
    return path


def _trajectory_matrices(res, i: int) -> np.ndarray:
    """Camera poses oT_c (L, 4, 4) of task i of a SimResult (its valid part)."""
    return pose_to_matrix(res.poses[i, :res.n_poses[i]].astype(float))


def xy_start_poses(radius: float = 0.2, n: int = 8, scene: SceneConfig = SceneConfig()) -> np.ndarray:
    """n initial poses (n, 4, 4): the desired pose displaced by `radius` in the x/y plane, every 360/n°."""
    G = goal_pose(scene)
    a = np.arange(n) * 2 * np.pi / n
    r = np.zeros((n, 6))
    r[:, 0], r[:, 1] = radius * np.cos(a), radius * np.sin(a)
    return G @ pose_to_matrix(r)


def pca_2d(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """First two principal axes of the rows of X (centred on 0: latent *errors*, whose origin is the
    goal). Returns (axes (2, D), explained variance ratio of the two, fraction)."""
    _, s, Vt = np.linalg.svd(X, full_matrices=False)
    var = s**2
    return Vt[:2], var[:2] / var.sum(), float(var[:2].sum() / var.sum())


def latent_pca_figure(path: str, law, radius: float = 0.2, n: int = 8, iters: int = 300,
                      circle_radii=(0.05, 0.10, 0.15, 0.20)) -> dict:
    """Fig. 3a with an MLVS law (law.model: ψ, φ). Returns figures for the caption."""
    scene_cfg = law_scene(law)
    starts = xy_start_poses(radius, n, scene_cfg)
    res = simulate(law, starts, iters, scene=scene_cfg)
    render = Scene(scene_cfg, law.camera)
    z_goal = law.model.encode(render.render(goal_pose(scene_cfg)))[0].astype(float)
    errors = []
    for i in range(n):
        T = _trajectory_matrices(res, i)
        errors.append(law.model.encode(render.render_batch(T)).astype(float) - z_goal)
    axes, ratio, frac = pca_2d(np.concatenate(errors))
    a = np.linspace(0, 2 * np.pi, 181)
    z_r0 = law.model.embed_poses(np.zeros((1, 6)))[0].astype(float)
    fig = Figure(figsize=(6, 5.5))
    ax = fig.subplots()
    for j, rad in enumerate(circle_radii):
        r = np.zeros((len(a), 6))
        r[:, 0], r[:, 1] = rad * np.cos(a), rad * np.sin(a)
        c = (law.model.embed_poses(r).astype(float) - z_r0) @ axes.T
        ax.plot(c[:, 0], c[:, 1], "--", color="0.6", lw=1)
        ax.annotate(f"{100 * rad:.0f} cm", c[45], fontsize=7, color="0.4")
    cmap = matplotlib.colormaps["tab10"]
    for i, e in enumerate(errors):
        p = e @ axes.T
        ang = int(round(360 * i / n))
        ax.plot(p[:, 0], p[:, 1], "-", color=cmap(i), lw=1.5, label=f"{ang}°")
        ax.plot(p[0, 0], p[0, 1], "o", color=cmap(i), ms=4)
    ax.plot(0, 0, "k*", ms=10)
    ax.set_xlabel(f"PC 1 ({100 * ratio[0]:.0f} %)")
    ax.set_ylabel(f"PC 2 ({100 * ratio[1]:.0f} %)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(title=f"start ({100 * radius:.0f} cm)", fontsize=7, title_fontsize=7, loc="best", ncol=2)
    t_end = [np.linalg.norm(pose_difference(goal_pose(scene_cfg), _trajectory_matrices(res, i)[-1])[:3])
             for i in range(n)]
    ax.set_title(f"Fig. 3a: z_I − z_I* of {n} MLVS runs (PCA, {100 * frac:.0f} % of variance);\n"
                 f"dashed: φ(r) − φ(0) for x/y displacements", fontsize=9)
    _save(fig, path)
    return {"explained_variance": frac, "end_error_mm": [1000 * t for t in t_end]}


def trajectories_figure(path: str, laws: dict, start: np.ndarray, iters: int = 1500,
                        title: str = "") -> dict:
    """Fig. 3b: label -> law, all from the same initial pose start (4, 4). The view is the box
    around the poster, the start and the goal (with a margin): a run that flies away leaves it."""
    traj, ends = {}, {}
    for label, law in laws.items():
        res = simulate(law, start[None], iters)
        T = _trajectory_matrices(res, 0)
        d = pose_difference(goal_pose(law_scene(law)), T[-1])
        e = ends[label] = {"t_end_mm": 1000 * float(np.linalg.norm(d[:3])),
                           "r_end_deg": float(np.degrees(np.linalg.norm(d[3:]))),
                           "iters": int(res.n_poses[0] - 1), "stop": str(res.reason[0])}
        traj[f"{label}: end {e['t_end_mm']:.0f} mm, {e['r_end_deg']:.1f}°"] = T[:, :3, 3]
    trajectories_3d(path, traj, goal_pose(), SceneConfig(), title or "Fig. 3b: camera trajectories",
                    clip_to_scene=True, legend_fontsize=7)
    return ends


def task_most_converged(tasks_json: str) -> int:
    """The task on which the most runs of a `latent-vs bench` tasks.json converged (ties: lowest id)."""
    import json
    try:
        with open(tasks_json) as f:
            runs = json.load(f)["tasks"]
        n = max(len(v) for v in runs.values())
        count = np.zeros(n, int)
        for figs in runs.values():
            for f in figs:
                count[f["task"]] += bool(f["converged"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{tasks_json}: not a benchmark tasks.json ({e})") from None
    return int(np.argmax(count))


def start_from_paper_fig4(scene: SceneConfig = SceneConfig()) -> np.ndarray:
    """oT_c of the paper's robot experiment start: Δr0 = c*r_c in cm and degrees."""
    d = np.array(PAPER_FIG4_START, dtype=float)
    r = np.concatenate([d[:3] / 100.0, np.radians(d[3:])])
    return goal_pose(scene) @ pose_to_matrix(r)


def mlvs_run_panel(path: str, law, start: np.ndarray, iters: int = 1200) -> dict:
    """Fig. 4-style panel of one MLVS run from `start` (4, 4)."""
    scene_cfg = law_scene(law)
    G = goal_pose(scene_cfg)
    res = simulate(law, start[None], iters, scene=scene_cfg)
    T = _trajectory_matrices(res, 0)
    render = Scene(scene_cfg, law.camera)
    imgs = render.render_batch(T)
    goal_img = render.render(G)
    z = law.model.encode(imgs).astype(float)
    e = z - law.model.encode(goal_img)[0].astype(float)
    dr = pose_difference(G, T)                                     # (L, 6) r − r*
    v = se3_log(inverse(T[:-1]) @ T[1:])                           # the applied twists, per iteration
    k = np.arange(len(T))
    fig = Figure(figsize=(16, 7.5))
    gs = fig.add_gridspec(2, 4)
    for j, (img, ttl) in enumerate([(imgs[0], "(a) start image I"), (goal_img, "(b) desired image I*")]):
        ax = fig.add_subplot(gs[0, j])
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        ax.set_title(ttl, fontsize=9)
        ax.axis("off")
    for j, (img, ttl) in enumerate([(imgs[0], "(c) I − I* at the start"), (imgs[-1], "(d) I − I* at the end")]):
        ax = fig.add_subplot(gs[0, 2 + j])
        ax.imshow(img.astype(float) - goal_img, cmap="gray", vmin=-255, vmax=255)
        ax.set_title(ttl, fontsize=9)
        ax.axis("off")
    names = ["x", "y", "z"]
    ax = fig.add_subplot(gs[1, 0])
    for i in range(3):
        ax.plot(k, 100 * dr[:, i], label=f"t{names[i]} [cm]")
    for i in range(3):
        ax.plot(k, np.degrees(dr[:, 3 + i]), "--", label=f"θu{names[i]} [°]")
    ax.set_title("(e) pose error r − r*", fontsize=9)
    ax.set_xlabel("iteration")
    ax.legend(fontsize=7, ncol=2)
    ax = fig.add_subplot(gs[1, 1])
    ax.plot(k, e, lw=0.8)
    ax.set_title(f"(f) latent error z_I − z_I* ({e.shape[1]} components)", fontsize=9)
    ax.set_xlabel("iteration")
    ax = fig.add_subplot(gs[1, 2])
    for i in range(3):
        ax.plot(k[:-1], 1000 * v[:, i], label=f"v{names[i]} [mm/it]")
    for i in range(3):
        ax.plot(k[:-1], np.degrees(v[:, 3 + i]), "--", label=f"ω{names[i]} [°/it]")
    ax.set_title("(g) camera twist v", fontsize=9)
    ax.set_xlabel("iteration")
    ax.legend(fontsize=7, ncol=2)
    ax = fig.add_subplot(gs[1, 3], projection="3d")
    p = T[:, :3, 3]
    w, h = scene_cfg.width_m / 2, scene_cfg.height_m / 2
    ax.plot([-w, w, w, -w, -w], [-h, -h, h, h, -h], [0] * 5, color="0.5", lw=1)
    ax.plot(p[:, 0], p[:, 1], p[:, 2], lw=1.5)
    ax.scatter(*p[0], color="k", s=15)
    ax.scatter(*G[:3, 3], color="r", marker="*", s=60)
    ax.invert_zaxis()
    ax.set_title("(h) 3-D trajectory", fontsize=9)
    end = dr[-1]
    fig.suptitle(f"MLVS run ({law.name}): Δr0 = ({', '.join(f'{100 * x:.1f}' for x in dr[0, :3])}) cm, "
                 f"({', '.join(f'{np.degrees(x):.1f}' for x in dr[0, 3:])})°  →  final "
                 f"({', '.join(f'{1000 * x:.2f}' for x in end[:3])}) mm, "
                 f"({', '.join(f'{np.degrees(x):.2f}' for x in end[3:])})° after {len(T) - 1} iterations",
                 fontsize=10)
    _save(fig, path, dpi=80)
    return {"t_end_mm": 1000 * float(np.linalg.norm(end[:3])), "r_end_deg": float(np.degrees(np.linalg.norm(end[3:]))),
            "iters": len(T) - 1}


# ----------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="latent-vs figures",
                                description="The paper's Fig. 3a (PCA of latent trajectories), Fig. 3b (3-D "
                                            "trajectories of every method on one task) and a Fig. 4-style panel "
                                            "of one MLVS run, as PNGs, by closed-loop simulation.")
    p.add_argument("--model", default=None, help="MLVS model directory (default: models/default)")
    p.add_argument("--out", default="figures", help="output folder (default: figures; the README's copies are "
                                                    "in docs/, overwritten only when you pass --out docs)")
    p.add_argument("--which", default="3a,3b,4", help="comma list of 3a, 3b, 4 (default: all)")
    p.add_argument("--methods", default=",".join(FIG3B_METHODS),
                   help=f"methods of Fig. 3b (default: {','.join(FIG3B_METHODS)})")
    p.add_argument("--task", type=int, default=0, help="benchmark task of Fig. 3b (seed --seed; default 0)")
    p.add_argument("--bench-dir", default=None,
                   help="a `latent-vs bench --out` folder: Fig. 3b shows the task most of its runs converged on")
    p.add_argument("--seed", type=int, default=0, help="task seed of Fig. 3b (default 0)")
    p.add_argument("--iters", type=int, default=1500, help="iterations of Fig. 3b (default 1500)")
    p.add_argument("--fig4-iters", type=int, default=1200, help="iterations of the Fig. 4 run (default 1200)")
    p.add_argument("--fig4-start", default=None,
                   help="Fig. 4 start Δr0 as 'tx,ty,tz,rx,ry,rz' in cm and degrees (default: the paper's "
                        + ",".join(str(x) for x in PAPER_FIG4_START) + ")")
    p.add_argument("--fig3a-iters", type=int, default=300, help="iterations of the Fig. 3a runs (default 300)")
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    which = {w.strip() for w in a.which.split(",") if w.strip()}
    if not which or which - {"3a", "3b", "4"}:
        raise UserError(f"--which must be a comma list of 3a, 3b, 4 (got '{a.which}')")
    for name in ("iters", "fig4_iters", "fig3a_iters"):
        if getattr(a, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be positive")
    start4 = None
    if a.fig4_start:
        try:
            vals = [float(x) for x in a.fig4_start.split(",")]
            assert len(vals) == 6
        except (ValueError, AssertionError):
            raise UserError(f"--fig4-start must be six numbers 'tx,ty,tz,rx,ry,rz' (cm, °), got '{a.fig4_start}'") from None
        start4 = goal_pose() @ pose_to_matrix(np.concatenate([np.array(vals[:3]) / 100, np.radians(vals[3:])]))
    from ..control import methods as registry
    from .run import make_law, parse_methods
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass
    out = {}
    mlvs = None
    if which & {"3a", "4"}:
        mlvs = make_law("mlvs-k50", a.model, {})
    if "3a" in which:
        out["3a"] = latent_pca_figure(os.path.join(a.out, "fig3a_latent_pca.png"), mlvs, iters=a.fig3a_iters)
        print(f"Fig. 3a: {a.out}/fig3a_latent_pca.png (PCA explains {100 * out['3a']['explained_variance']:.0f} %)")
    if "4" in which:
        out["4"] = mlvs_run_panel(os.path.join(a.out, "fig4_mlvs_run.png"), mlvs,
                                  start4 if start4 is not None else start_from_paper_fig4(), a.fig4_iters)
        print(f"Fig. 4: {a.out}/fig4_mlvs_run.png (end error {out['4']['t_end_mm']:.2f} mm, "
              f"{out['4']['r_end_deg']:.2f}° after {out['4']['iters']} iterations)")
    if "3b" in which:
        from ..tasks import sample_tasks
        if a.bench_dir:
            a.task = task_most_converged(os.path.join(a.bench_dir, "tasks.json"))
        if a.task < 0:
            raise UserError("--task must be >= 0")
        start = sample_tasks(a.task + 1, a.seed)[a.task]
        laws = {}
        for name, kw in parse_methods(a.methods):
            try:
                model = a.model if name.startswith("mlvs") else None
                laws[name] = make_law(name, model, kw)
            except UserError as e:
                print(f"note: {name} left out of Fig. 3b: {e}", file=sys.stderr)
        if not laws:
            raise UserError("no method of --methods could be made for Fig. 3b")
        d0 = pose_difference(goal_pose(), start)
        out["3b"] = trajectories_figure(
            os.path.join(a.out, "fig3b_trajectories.png"), laws, start, a.iters,
            title=f"Fig. 3b: task {a.task} (seed {a.seed}), initial error "
                  f"{100 * np.linalg.norm(d0[:3]):.0f} cm, {np.degrees(np.linalg.norm(d0[3:])):.0f}°")
        print(f"Fig. 3b: {a.out}/fig3b_trajectories.png: " +
              "; ".join(f"{k} end {v['t_end_mm']:.1f} mm / {v['r_end_deg']:.2f}°" for k, v in out["3b"].items()))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as e:
        print(f"latent-vs figures: error: {e}", file=sys.stderr)
        sys.exit(2)
