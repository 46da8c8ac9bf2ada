"""`latent-vs bench`: the paper's Table I benchmark.

N seeded look-at/look-from tasks (tasks.sample_tasks) x the chosen methods, closed loop in
simulation (bench/sim.py) for up to --iters iterations, with the clean and/or a perturbed
desired image I*. PBVS on the true pose always runs too: it is the reference trajectory for the
APE and the length ratio. Metrics: bench/metrics.py (one definition of each).

Outputs in --out: tasks.json (per-task figures), summary.json (rows, config, wall time),
table.md (our rows beside the paper's), trajectories.png, errors.png.

A method is a name from control/methods.py, optionally with factory keyword overrides in
brackets, e.g. `dvs[px_scale=1.9]` or `dvs[interaction=desired,size=128]`.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import re
import signal
import sys
import time

import numpy as np

from ..errors import UserError
from ..scene import SceneConfig, goal_pose
from ..tasks import sample_tasks
from ..control import methods as registry
from . import metrics as M
from . import report
from .sim import SimResult, goal_images, law_scene, simulate

_ITEM = re.compile(r"\s*([^,\[\]\s]+)\s*(?:\[([^\]]*)\])?\s*(?:,|$)")


def parse_methods(spec: str) -> list[tuple[str, dict]]:
    """'pbvs,dvs[px_scale=1.9]' -> [('pbvs', {}), ('dvs', {'px_scale': 1.9})]; 'all' -> methods.ALL."""
    import yaml
    spec = spec.strip()
    out, pos = [], 0
    while pos < len(spec):
        m = _ITEM.match(spec, pos)
        if not m or m.end() == pos:
            raise UserError(f"cannot parse --methods '{spec}' at '{spec[pos:]}'")
        name, args = m.group(1), m.group(2)
        pos = m.end()
        if name == "all":
            out += [(n, {}) for n in registry.ALL]
            continue
        if name not in registry.METHODS:
            raise UserError(f"unknown method '{name}' (known: {', '.join(registry.METHODS)}, all)")
        kw = {}
        for item in filter(None, (a.strip() for a in (args or "").split(","))):
            if "=" not in item:
                raise UserError(f"method option '{item}' of '{name}' is not KEY=VALUE")
            k, v = item.split("=", 1)
            kw[k.strip()] = yaml.safe_load(v)
        out.append((name, kw))
    if not out:
        raise UserError("--methods is empty")
    return out


def label_of(name: str, kw: dict) -> str:
    return name + ("[" + ",".join(f"{k}={v}" for k, v in kw.items()) + "]" if kw else "")


def make_law(name: str, model_dir: str | None, kw: dict):
    try:
        return registry.make(name, model_dir=model_dir, **kw)
    except UserError:
        raise
    except (TypeError, ValueError) as e:
        raise UserError(f"cannot make method '{label_of(name, kw)}': {e}") from e
    except ModuleNotFoundError as e:
        raise UserError(f"method '{name}' is not available in this build ({e.name} is missing)") from e


def _limit_threads() -> None:
    """One BLAS/torch thread per process: the benchmark parallelises over processes."""
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    except ImportError:
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _run_chunk(job: dict) -> tuple[np.ndarray, SimResult]:
    """Worker: make the law, render (perturbed) I* for the chunk's tasks, simulate."""
    _limit_threads()
    law = job.get("law") or make_law(job["method"], job["model_dir"], job["kw"])
    scene = law_scene(law)
    ids = job["ids"]
    imgs = goal_images(law, len(ids), scene, job["perturbed"], job["seed"], ids)
    return ids, simulate(law, job["tasks"], job["iters"], imgs, scene)


def run_method(name, kw, law, tasks, args, perturbed, pool, desc) -> tuple[SimResult, float]:
    """Simulate one method on all tasks (in chunks, over the pool if any); returns the merged result."""
    from tqdm import tqdm
    N = len(tasks)
    chunk = args.chunk or max(1, min(50, math.ceil(N / (4 * args.workers))))
    jobs = [{"method": name, "kw": kw, "model_dir": args.model, "ids": np.arange(s, min(N, s + chunk)),
             "tasks": tasks[s:s + chunk], "iters": args.iters, "perturbed": perturbed, "seed": args.seed,
             "law": None if pool else law} for s in range(0, N, chunk)]
    L = args.iters + 1
    res = SimResult(np.zeros((N, L, 6), np.float32), np.ones(N, int), np.zeros((N, M.VEL_WINDOW, 6)),
                    np.full(N, "max_iters", dtype=object))
    t0 = time.time()
    with tqdm(total=N, desc=desc, unit="task", leave=True, file=sys.stderr, disable=args.quiet) as bar:
        results = pool.imap_unordered(_run_chunk, jobs) if pool else map(_run_chunk, jobs)
        for ids, r in results:
            res.poses[ids], res.n_poses[ids], res.last_velocities[ids], res.reason[ids] = \
                r.poses, r.n_poses, r.last_velocities, r.reason
            bar.update(len(ids))
    res.reason = res.reason.astype(str)
    return res, time.time() - t0


def _padded(res: SimResult, length: int) -> np.ndarray:
    idx = np.minimum(np.arange(length)[None, :], res.n_poses[:, None] - 1)
    return np.take_along_axis(res.poses, idx[..., None], axis=1)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="latent-vs bench",
        description="Table I benchmark: N seeded look-at/look-from tasks x methods, closed loop in simulation; "
                    "PBVS on the true pose runs as the reference trajectory. Writes tasks.json, summary.json, "
                    "table.md and PNG plots to --out.",
        epilog="Metric definitions: latent_vs/bench/metrics.py (converged %, end error, APE vs PBVS, length ratio).")
    p.add_argument("--methods", default="pbvs,dvs",
                   help="comma list of " + ", ".join(registry.METHODS) + " or 'all'; options in brackets, "
                        "e.g. dvs[px_scale=1.9] (default: pbvs,dvs)")
    p.add_argument("--tasks", type=int, default=500, help="number of tasks (default 500)")
    p.add_argument("--seed", type=int, default=0, help="task and perturbation seed (default 0)")
    p.add_argument("--iters", type=int, default=1500, help="iterations per task at most (default 1500)")
    p.add_argument("--perturbed", choices=("no", "yes", "both"), default="no",
                   help="desired image I*: clean (no), perturbed by lighting + occlusion (yes), or both rows")
    p.add_argument("--model", default=None, help="model directory for the learned methods (default: models/default)")
    p.add_argument("--out", default="bench-results", help="output folder (default ./bench-results)")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--chunk", type=int, default=0, help="tasks per batch (default: automatic, at most 50)")
    p.add_argument("--plot-task", type=int, default=-1,
                   help="task shown in the plots (default: the task the most runs converged on)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _check_args(args) -> None:
    if args.tasks <= 0:
        raise UserError(f"--tasks must be positive (got {args.tasks})")
    if args.iters <= 0:
        raise UserError(f"--iters must be positive (got {args.iters})")
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1 (got {args.workers})")
    if args.chunk < 0:
        raise UserError(f"--chunk must be positive (got {args.chunk})")
    if not -1 <= args.plot_task < args.tasks:
        raise UserError(f"--plot-task must be in [0, {args.tasks - 1}] (got {args.plot_task})")
    if args.model is not None and not os.path.isdir(args.model):
        raise UserError(f"--model: no such model directory: {args.model}")
    try:
        os.makedirs(args.out, exist_ok=True)
        report.write_atomic(os.path.join(args.out, ".write-test"), b"")
        os.unlink(os.path.join(args.out, ".write-test"))
    except OSError as e:
        raise UserError(f"cannot write to --out {args.out}: {e.strerror or e}") from e


def plan_runs(methods: list, model: str | None, perturbed: str) -> tuple[list, dict]:
    """The runs (name, kw, perturbed) — the PBVS reference first (a plain duplicate of pbvs is
    the reference itself) — and the laws by label."""
    runs = [("pbvs", {}, False)]
    variants = {"no": [False], "yes": [True], "both": [False, True]}[perturbed]
    laws = {}
    for name, kw in methods:
        lab = label_of(name, kw)
        if lab not in laws:
            laws[lab] = make_law(name, model, kw)
        for pert in (variants if laws[lab].camera is not None else [False]):
            if (name, kw, pert) not in runs:
                runs.append((name, kw, pert))
    laws.setdefault("pbvs", make_law("pbvs", model, {}))
    return runs, laws


def _worker_pool(workers: int):
    if workers <= 1:
        return None
    import multiprocessing as mp
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    pool = mp.get_context("spawn").Pool(workers)
    # a plain `kill` of the command must not orphan its workers: turn SIGTERM into an exit
    # that runs the caller's `finally` (pool.terminate)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return pool


def run_all(runs, laws, tasks, goal, args) -> tuple[list, dict, dict]:
    """Every run in closed loop: (table rows, per-task metrics by key, SimResults by key)."""
    L = args.iters + 1
    pool = _worker_pool(args.workers)
    _limit_threads()
    rows, per_task, results, ref = [], {}, {}, None
    try:
        for name, kw, pert in runs:
            lab = label_of(name, kw)
            key = f"{lab}/{'perturbed' if pert else 'clean'}"
            res, wall = run_method(name, kw, laws[lab], tasks, args, pert, pool, desc=key)
            ref = res if ref is None else ref
            figs = [dict(task=i, **M.task_metrics(goal, res.poses[i], res.n_poses[i], res.last_velocities[i],
                                                 res.reason[i], ref.poses[i], ref.n_poses[i], L))
                    for i in range(len(tasks))]
            per_task[key] = figs
            row = M.summarize(figs)
            row.update(label=lab, method=name, options=kw, perturbed=pert, wall_time_s=wall)
            rows.append(row)
            results[key] = res
    finally:
        if pool is not None:
            pool.terminate()
    return rows, per_task, results


def plot_data(results: dict, per_task: dict, goal, n_tasks: int, plot_task: int) -> tuple[int, dict, dict]:
    """One task's trajectories and error curves (by default the task most runs converged on, so
    that the figure shows every method arriving), and the median errors over all tasks."""
    conv = np.array([[f["converged"] for f in figs] for figs in per_task.values()])
    plot_task = plot_task if plot_task >= 0 else int(np.argmax(conv.sum(0)))
    traj_plot, curves = {}, {}
    for key, res in results.items():
        i, n_max = plot_task, int(res.n_poses.max())
        traj_plot[key] = res.poses[i, :res.n_poses[i]].astype(float)
        t_all, r_all = np.empty((n_tasks, n_max)), np.empty((n_tasks, n_max))
        for s in range(0, n_tasks, 50):  # in blocks: (50, n_max, 4, 4) at a time
            blk = SimResult(res.poses[s:s + 50, :n_max], res.n_poses[s:s + 50], None, None)
            t_all[s:s + 50], r_all[s:s + 50] = M.pose_errors(goal, _padded(blk, n_max))
        curves[key] = {"t": t_all[i, :res.n_poses[i]], "r": r_all[i, :res.n_poses[i]],
                       "t_median": np.median(t_all, 0), "r_median": np.median(r_all, 0)}
    return plot_task, traj_plot, curves


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    methods = parse_methods(args.methods)
    _check_args(args)
    runs, laws = plan_runs(methods, args.model, args.perturbed)
    scene = SceneConfig()
    goal = goal_pose(scene)
    for lab, law in laws.items():
        if law_scene(law) != scene:
            print(f"note: {lab} was made for another scene than the default; tasks use the default scene",
                  file=sys.stderr)
    tasks = sample_tasks(args.tasks, args.seed, scene)
    t_start = time.time()
    rows, per_task, results = run_all(runs, laws, tasks, goal, args)
    wall_total = time.time() - t_start
    plot_task, traj_plot, curves = plot_data(results, per_task, goal, len(tasks), args.plot_task)
    write_results(args, argv, rows, per_task, wall_total, plot_task, traj_plot, curves, goal, scene)
    return 0


def write_results(args, argv, rows, per_task, wall_total, plot_task, traj_plot, curves, goal, scene) -> None:
    """table.md, summary.json, tasks.json, trajectories.png, errors.png in --out; the table on stdout."""
    config = {"methods": args.methods, "tasks": args.tasks, "seed": args.seed, "iters": args.iters,
              "perturbed": args.perturbed, "model": args.model, "workers": args.workers,
              "command": "latent-vs bench " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}",
              "python": platform.python_version()}
    ref = per_task["pbvs/clean"]
    summary = {"config": config, "wall_time_s": wall_total, "rows": rows, "plot_task": plot_task,
               "initial_error": {"t_mean_cm": 100 * np.mean([f["t0_m"] for f in ref]),
                                 "r_mean_deg": float(np.degrees(np.mean([f["r0_rad"] for f in ref])))},
               "metrics": "latent_vs/bench/metrics.py"}
    from . import plots
    out = args.out
    report.write_json(os.path.join(out, "tasks.json"), {"config": config, "tasks": per_task})
    report.write_json(os.path.join(out, "summary.json"), summary)
    header = (f"{args.tasks} tasks (seed {args.seed}), up to {args.iters} iterations; "
              f"wall time {wall_total:.0f} s with {args.workers} worker(s) on {config['machine']}.\n"
              f"Means ± std over converged tasks; APE and length ratio against PBVS on the true pose.\n")
    report.write_atomic(os.path.join(out, "table.md"), report.markdown(rows, header))
    plots.trajectories_3d(os.path.join(out, "trajectories.png"), traj_plot, goal, scene,
                          title=f"task {plot_task}: camera positions")
    plots.error_curves(os.path.join(out, "errors.png"), curves,
                       title=f"pose error over iterations: task {plot_task} and median over {args.tasks} tasks")
    print(report.text(rows))
    print(f"\nwall time {wall_total:.1f} s ({args.workers} worker(s)); results in {out}/ "
          f"(table.md, summary.json, tasks.json, trajectories.png, errors.png)")
