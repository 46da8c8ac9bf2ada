"""`latent-vs perf`: latency and memory of the MLVS control step on the CPU (paper III-D).

Per control step, on `--threads` CPU threads (default 2): ψ forward on one camera image,
the K nearest pose embeddings (FAISS), eq. 13's L_z (L_z_j of the K neighbours computed on
the fly, kept in the bank's cache) and eq. 14's pseudo-inverse — median and p99. Steps are
timed along 8 real oracle servo runs, each to convergence (consecutive steps revisit
neighbours, as a robot does; the first 40 steps of each run, where the camera moves fastest
and most neighbours are new, are also reported apart), on warm repeats and on cold random
queries (every neighbour's L_z computed). Also: the bank's build
time from scratch and from the disk cache, and the resident memory it adds; and, side by
side on the same bank, the authors' approach: scikit-learn's KNeighborsRegressor over the
stored table of every L_z_j, as configured in their code (weights="distance", leaf_size=50,
the default algorithm: brute force in 32-D), and scikit-learn's fastest setting we found (a
KD-tree, one job).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time

import numpy as np

from ..errors import UserError


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _stats(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"median_ms": float(np.median(a)), "p99_ms": float(np.percentile(a, 99)), "n": int(len(a))}


def bank_config_for(size: int):
    """The bank for --bank-size N: the authors' grid with round((0.99 N)^(1/6)) steps per DOF
    plus 1% of N near the goal (N = 10^6 -> 10 steps, 10^6 + 10^4 poses)."""
    from ..posebank import BankConfig
    steps = max(2, int(round((0.99 * size) ** (1 / 6))))
    return BankConfig(grid_steps=steps, near_goal=max(100, size // 100))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="latent-vs perf", description=__doc__.split("\n\n")[0] + " Prints a table and writes JSON.")
    p.add_argument("--model", default=None, help="model directory (default: models/default)")
    p.add_argument("--bank-size", type=int, default=10**6, help="pose bank size N (default 10^6: the authors' grid)")
    p.add_argument("--k", type=int, default=50, help="neighbours of eq. 13 (default 50)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch and FAISS (default 2)")
    p.add_argument("--steps", type=int, default=300, help="timed control steps per measurement (default 300)")
    p.add_argument("--servo-iters", type=int, default=1500,
                   help="at most this many steps per servo run (8 runs, each to convergence; default 1500)")
    p.add_argument("--no-sklearn", action="store_true", help="skip the scikit-learn side-by-side")
    p.add_argument("--out", default="perf.json", help="JSON output (default ./perf.json)")
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    if a.bank_size < 1000:
        raise UserError(f"--bank-size must be at least 1000 (got {a.bank_size})")
    if a.k < 1 or a.threads < 1 or a.steps < 10 or a.servo_iters < 40:
        raise UserError("--k and --threads must be at least 1, --steps at least 10, --servo-iters at least 40")
    out_dir = os.path.dirname(os.path.abspath(a.out))
    if not os.path.isdir(out_dir):
        raise UserError(f"--out: no such directory: {out_dir}")
    from tqdm import tqdm

    from ..control.mlvs import MLVS
    model, res = _setup(a)
    prog = tqdm(total=6, desc="perf", unit="stage")
    bank = _measure_bank(model, a.bank_size, out_dir, res)
    prog.update()
    tasks = _measure_psi(model, a.steps, res)
    prog.update()
    law = MLVS(model, k=a.k, bank=bank)
    law.set_goal_latent(model.embed_poses(np.zeros((1, 6))))
    timer = StepTimer(bank, a.k, law)
    _measure_servo(model, tasks, timer, a, res)
    prog.update()
    zq = _measure_cold(model, bank, timer, a.steps, res)
    prog.update()
    if not a.no_sklearn:
        _measure_sklearn(model, bank, law, zq, a, res)
    prog.update()
    prog.close()
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f, indent=1)
    os.replace(tmp, a.out)
    print(format_table(res))
    print(f"results in {a.out}")
    return 0


def _setup(a):
    """Threads (torch and FAISS: --threads; NumPy's BLAS: one, since the control step's
    matrices are tiny and a multi-threaded OpenBLAS spins on loaded cores), the model, and
    the result's header."""
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    from ..models import load_model
    from ..paths import model_dir as resolve
    torch.set_num_threads(a.threads)
    faiss.omp_set_num_threads(a.threads)
    threadpool_limits(1, user_api="blas")
    model = load_model(resolve(a.model or "default"))
    res: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                             "threads": a.threads, "torch": torch.__version__, "faiss": faiss.__version__},
                 "model": model.model_dir, "k": a.k}
    return model, res


def _measure_bank(model, size: int, out_dir: str, res: dict):
    """The bank built from scratch, saved and loaded again: times and resident memory."""
    from ..posebank import PoseBank
    cfg = bank_config_for(size)
    gc.collect()
    m0 = _rss_mib()
    t = time.perf_counter()
    bank = PoseBank.build(model.phi, cfg)
    build_s = time.perf_counter() - t
    gc.collect()
    res["bank"] = {"size": len(bank), "grid_steps": cfg.grid_steps, "index": cfg.index, "nlist": bank.index.nlist
                   if hasattr(bank.index, "nlist") else 0, "nprobe": cfg.nprobe, "build_s": build_s,
                   "rss_added_by_build_mib": _rss_mib() - m0}
    tmp = os.path.join(out_dir, f".perf-bank-{os.getpid()}.npz")
    try:
        bank.save(tmp)
        del bank
        gc.collect()
        m0 = _rss_mib()
        t = time.perf_counter()
        bank = PoseBank.load(tmp, model.phi)
        res["bank"]["load_from_cache_s"] = time.perf_counter() - t
        gc.collect()
        res["bank"]["rss_added_by_load_mib"] = _rss_mib() - m0
        res["bank"]["nbytes_mib"] = bank.nbytes() / 2**20
        res["bank"]["cache_file_mib"] = os.path.getsize(tmp) / 2**20
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return bank


def _measure_psi(model, steps: int, res: dict) -> np.ndarray:
    """ψ forward on one image at the model's camera; returns the 8 seeded tasks."""
    from ..scene import Scene
    from ..tasks import sample_tasks
    tasks = sample_tasks(8, seed=0, scene=model.scene)
    img = Scene(model.scene, model.camera).render(tasks[0])
    model.encode(img[None])
    psi_ms = []
    for _ in range(max(30, steps // 5)):
        t = time.perf_counter()
        model.encode(img[None])
        psi_ms.append(1e3 * (time.perf_counter() - t))
    res["psi"] = _stats(psi_ms) | {"image_size": model.image_size}
    return tasks


class StepTimer:
    """The control step without ψ, timed by part: KNN, eq. 13, eq. 14 (and the total)."""
    PARTS = ("knn_ms", "lz_ms", "pinv_ms", "total_ms")

    def __init__(self, bank, k: int, law):
        self.bank, self.k, self.law = bank, k, law

    def __call__(self, z: np.ndarray) -> tuple[np.ndarray, tuple]:
        from ..geometry import latent_twist
        t0 = time.perf_counter()
        dist, idx = self.bank.search(z, self.k)
        t1 = time.perf_counter()
        L = self.bank.interpolate(dist, idx, "inverse")                                    # eq. 13
        t2 = time.perf_counter()
        v = latent_twist(L, z - self.law.z_goal, self.law.gain)                            # eq. 14
        t3 = time.perf_counter()
        return v, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)

    def record(self, into: dict, dt: tuple) -> None:
        for key, x in zip(self.PARTS, dt):
            into.setdefault(key, []).append(1e3 * x)


def _measure_servo(model, tasks: np.ndarray, timer: StepTimer, a, res: dict) -> None:
    """Steps along 8 oracle servo runs, each to its end (as a robot servos: most steps are
    near the goal), their first 40 steps apart, then warm repeats of the final latents."""
    from ..geometry import pose_difference, se3_exp
    goal, T = model.goal_pose, tasks.copy()
    parts, first, warm = {}, {}, {}
    for i in range(len(T)):
        for it in range(a.servo_iters):
            v, dt = timer(model.embed_poses(pose_difference(goal, T[i])).astype(np.float64))
            timer.record(parts, dt)
            if it < 40:
                timer.record(first, dt)
            T[i] = T[i] @ se3_exp(v[0])
            if np.linalg.norm(v[0, :3]) < 1e-7 and np.linalg.norm(v[0, 3:]) < 1e-7:  # still: converged
                break
    z_end = model.embed_poses(pose_difference(goal, T)).astype(np.float64)
    for it in range(a.steps):   # warm: the same latents again (neighbours' L_z_j cached, as near convergence)
        timer.record(warm, timer(z_end[it % len(T)][None])[1])
    res["step_servo"] = {k: _stats(v) for k, v in parts.items()}
    res["step_servo_first40"] = {k: _stats(v) for k, v in first.items()}
    res["step_warm"] = {k: _stats(v) for k, v in warm.items()}


def _measure_cold(model, bank, timer: StepTimer, steps: int, res: dict) -> np.ndarray:
    """Random queries with the L_z cache cleared: every neighbour's L_z computed. Returns them."""
    rng = np.random.default_rng(1)
    cold: dict = {}
    zq = model.embed_poses(bank.poses[rng.integers(0, len(bank), steps)] + rng.normal(0, 0.02, (steps, 6)))
    for z in zq:
        bank.clear_cache()
        timer.record(cold, timer(z[None].astype(np.float64))[1])
    res["step_cold"] = {k: _stats(v) for k, v in cold.items()}
    return zq


def _measure_sklearn(model, bank, law, zq: np.ndarray, a, res: dict) -> None:
    """The authors' approach on the same bank: the stored L_z table + KNeighborsRegressor."""
    from sklearn.neighbors import KNeighborsRegressor

    from ..geometry import latent_twist
    from ..posebank import embed, latent_interaction
    z_bank = embed(model.phi, bank.poses)
    gc.collect()
    m1 = _rss_mib()
    t = time.perf_counter()
    table = np.concatenate([latent_interaction(model.phi, bank.poses[i:i + 20000]).reshape(-1, 6 * model.latent_dim)
                            .astype(np.float32) for i in range(0, len(bank), 20000)])
    table_s = time.perf_counter() - t
    ours = res["step_servo"]["total_ms"]["median_ms"]

    def side_by_side(knr) -> dict:
        t = time.perf_counter()
        knr.fit(z_bank, table)
        fit_s = time.perf_counter() - t
        gc.collect()
        sk_ms = []
        for z in zq[: max(10, a.steps // 10)]:
            t = time.perf_counter()
            L = knr.predict(z[None]).reshape(1, model.latent_dim, 6)
            latent_twist(L, z[None] - law.z_goal, law.gain)
            sk_ms.append(1e3 * (time.perf_counter() - t))
        return _stats(sk_ms) | {"fit_s": fit_s, "speedup_of_ours": _stats(sk_ms)["median_ms"] / ours}

    # as in the authors' code (inference/methods: KNeighborsRegressor(k, weights='distance',
    # n_jobs=..., leaf_size=50), default algorithm: brute force in 32-D), on our threads
    res["sklearn"] = side_by_side(KNeighborsRegressor(n_neighbors=a.k, weights="distance", leaf_size=50,
                                                      n_jobs=a.threads))
    res["sklearn"] |= {"table_s": table_s, "rss_added_mib": _rss_mib() - m1, "table_mib": table.nbytes / 2**20,
                       "config": f"KNeighborsRegressor({a.k}, weights='distance', leaf_size=50, n_jobs={a.threads})"}
    # the fastest scikit-learn setting we found: a KD-tree, one job (joblib's start-up cost
    # dominates a single query)
    res["sklearn_kdtree"] = side_by_side(KNeighborsRegressor(n_neighbors=a.k, weights="distance", leaf_size=50,
                                                             algorithm="kd_tree"))
    res["sklearn_kdtree"]["config"] = f"KNeighborsRegressor({a.k}, weights='distance', leaf_size=50, algorithm='kd_tree')"
    sk = res["sklearn"]["median_ms"]
    res["speedup_vs_sklearn"] = {"servo": sk / ours,
                                 "servo_first40": sk / res["step_servo_first40"]["total_ms"]["median_ms"],
                                 "warm": sk / res["step_warm"]["total_ms"]["median_ms"],
                                 "cold": sk / res["step_cold"]["total_ms"]["median_ms"],
                                 "servo_vs_kdtree": res["sklearn_kdtree"]["speedup_of_ours"]}


def format_table(res: dict) -> str:
    b, s, c = res["bank"], res["step_servo"], res["step_cold"]
    rows = [("ψ forward (1 image, %d px)" % res["psi"]["image_size"], res["psi"]),
            ("KNN search (FAISS %s, servo)" % b["index"], s["knn_ms"]),
            ("L_z eq. 13 (servo, cached L_z_j)", s["lz_ms"]),
            ("pinv + eq. 14", s["pinv_ms"]),
            ("control step without ψ (servo runs, %d steps)" % s["total_ms"]["n"], s["total_ms"]),
            ("control step without ψ (first 40 steps of each run)", res["step_servo_first40"]["total_ms"]),
            ("control step without ψ (warm: L_z_j cached)", res["step_warm"]["total_ms"]),
            ("control step without ψ (cold)", c["total_ms"])]
    if "sklearn" in res:
        rows.append(("authors' KNeighborsRegressor (brute, 2 jobs) + eq. 14", res["sklearn"]))
        rows.append(("scikit-learn KD-tree, 1 job + eq. 14", res["sklearn_kdtree"]))
    lines = [f"MLVS control step on {res['machine']['threads']} CPU thread(s), K={res['k']}, bank {b['size']:,} poses",
             f"{'':52s} {'median ms':>10s} {'p99 ms':>10s}"]
    lines += [f"{name:52s} {r['median_ms']:10.3f} {r['p99_ms']:10.3f}" for name, r in rows]
    lines.append(f"bank: built in {b['build_s']:.1f} s (resident +{b['rss_added_by_build_mib']:.0f} MiB), loaded from "
                 f"its cache file ({b['cache_file_mib']:.0f} MiB) in {b['load_from_cache_s']:.2f} s (resident "
                 f"+{b['rss_added_by_load_mib']:.0f} MiB; poses + index + L_z cache {b['nbytes_mib']:.0f} MiB)")
    if "sklearn" in res:
        sk = res["sklearn"]
        lines.append(f"authors' table of L_z: {sk['table_mib']:.0f} MiB, +{sk['rss_added_mib']:.0f} MiB resident, "
                     f"KD-tree fit {res['sklearn_kdtree']['fit_s']:.1f} s; speed-up of ours against the authors' "
                     f"regressor: {res['speedup_vs_sklearn']['servo']:.0f}x (servo runs), "
                     f"{res['speedup_vs_sklearn']['servo_first40']:.0f}x (first 40 steps), "
                     f"{res['speedup_vs_sklearn']['warm']:.0f}x (warm), "
                     f"{res['speedup_vs_sklearn']['cold']:.0f}x (cold); against the KD-tree: "
                     f"{res['speedup_vs_sklearn']['servo_vs_kdtree']:.1f}x (servo runs)")
    return "\n".join(lines)
