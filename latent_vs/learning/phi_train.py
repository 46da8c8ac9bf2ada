"""Stage 1 of training: make the pose encoder φ servo-able (eq. 9 on random pose batches).

The MLVS control law is Gauss–Newton on ‖φ(r) − z*‖ (eq. 14). It stalls wherever φ folds,
i.e. where a pose far from the goal embeds near z* = φ(0). The paper's batches (N anchors
plus M nearest neighbours) fit local distances well but leave such folds (a prototype:
81% oracle convergence). What makes φ globally injective and servo-able is fitting eq. 9
on batches of *random* poses (far-field pairs), long enough, with a decaying learning rate.

Recipe (train_phi's defaults, chosen by measurement; figures in the README):
  * a pool of poses from tasks.sample_training_poses (look-at/look-from widened + 20% near
    the goal), expressed as φ's input Δr = c*r_c = pose_difference(goal, oT_c);
  * each step: the goal Δr = 0, `batch_size`·(1 − neighbour_fraction) poses drawn uniformly
    from the pool (far-field pairs) and, for `batch_size`·neighbour_fraction of them, a near
    neighbour T·exp(δ) (|δ_t| 1 mm–10 cm, |δ_ω| 0.1°–10°, log-uniform: the local metric,
    i.e. a well-scaled ∂φ/∂r); loss eq. 9 over all pairs (goal row/column × goal_weight);
  * Adam, learning rate `lr` with cosine decay to 0 over `steps` (5000: longer training
    converged as often but gave longer oracle trajectories).
  Measured (exact-Jacobian oracle, gain 0.1, seed-0 tasks; ReLU, batch 256, Adam 1e-3):
  1.5K steps 63–66% converged; 5K 100%, length ratio 6.5; 20K 100%, 18; 5K + neighbours
  100%, 4.5; SiLU 100%, 5.6 (with neighbours 91%); goal_weight 10: no change.

Diagnostics (returned, and logged): held-out mean |d_SE(3) − ‖Δz‖| and its correlation,
the distance error to the goal, a fold score, and the convergence of an exact-Jacobian
oracle servo (z_I := φ(r_true)) on a few seeded tasks.
"""
from __future__ import annotations

import collections
import math
import time
from typing import Callable

import numpy as np
import torch

from ..geometry import error_metrics, latent_twist, pose_difference, se3_exp
from ..posebank import latent_interaction
from .losses import loss_phi_se3, se3_pair_distance
from ..scene import SceneConfig, goal_pose
from ..tasks import sample_tasks, sample_training_poses


def oracle_servo(phi, tasks: np.ndarray, goal: np.ndarray, gain: float = 0.1, iters: int = 1500) -> dict:
    """Closed-loop oracle with φ's exact Jacobian: z_I := φ(Δr_true), v = −λ L_z⁺ (z − z*)
    (eq. 14), T ← T · exp(v). Returns per-task initial/final errors (m, rad) and path length."""
    T = np.array(tasks, dtype=np.float64)
    t0, r0 = error_metrics(goal, T)
    with torch.no_grad():
        z_goal = phi(torch.zeros(1, 6)).double().numpy()
    length = np.zeros(len(T))
    for _ in range(iters):
        r = pose_difference(goal, T)
        with torch.no_grad():
            e = phi(torch.as_tensor(r, dtype=torch.float32)).double().numpy() - z_goal
        L_z = latent_interaction(phi, r)                               # L_z = ∂φ/∂r · L_r (eq. 5)
        v = latent_twist(L_z, e, gain)                                 # eq. 14
        length += np.linalg.norm(v[:, :3], axis=1)
        T = T @ se3_exp(v)
    t1, r1 = error_metrics(goal, T)
    return {"t0": t0, "r0": r0, "t1": t1, "r1": r1, "length": length}


def converged(t0, r0, t1, r1) -> np.ndarray:
    """The benchmark's rule (design page): both errors cut by ≥ 90%, or below 1 cm and 1°."""
    return ((t1 <= 0.1 * t0) & (r1 <= 0.1 * r0)) | ((t1 < 0.01) & (r1 < np.deg2rad(1.0)))


@torch.no_grad()
def phi_diagnostics(phi, w_t: float, w_r: float, n: int = 2000, seed: int = 12345,
                    oracle_tasks: int = 50, oracle_iters: int = 400) -> dict:
    """Held-out geometry of φ: mean |d_SE(3) − ‖Δz‖|, its Pearson correlation, the same to the
    goal only, a fold score (smallest ‖φ(r) − z*‖ / d_SE(3)(r, 0) over poses at least 0.5 away;
    0 means a fold), and exact-Jacobian oracle convergence on `oracle_tasks` seeded tasks."""
    goal = goal_pose(SceneConfig())
    r = torch.as_tensor(pose_difference(goal, sample_training_poses(n, seed=seed)), dtype=torch.float32)
    r = torch.cat([torch.zeros(1, 6), r])
    d = se3_pair_distance(r, r, w_t, w_r)
    z = phi(r)
    dz = torch.cdist(z, z)
    iu = torch.triu_indices(len(r), len(r), 1)
    a, b = d[iu[0], iu[1]], dz[iu[0], iu[1]]
    corr = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    fold_mask = d[0, 1:] > 0.5
    fold = float((dz[0, 1:][fold_mask] / d[0, 1:][fold_mask]).min()) if fold_mask.any() else float("nan")
    out = {"heldout_pair_abs_err": float((a - b).abs().mean()), "heldout_pair_corr": corr,
           "heldout_goal_abs_err": float((d[0, 1:] - dz[0, 1:]).abs().mean()), "fold_ratio_min": fold}
    if oracle_tasks > 0:
        with torch.enable_grad():
            res = oracle_servo(phi, sample_tasks(oracle_tasks, seed=seed), goal, iters=oracle_iters)
        out["oracle_exact_converged"] = float(converged(res["t0"], res["r0"], res["t1"], res["r1"]).mean())
    return out


def small_twists(n: int, seed: int = 0, t_range=(1e-3, 0.1), r_range_deg=(0.1, 10.0)) -> np.ndarray:
    """n random twists (n, 6): random directions, magnitudes log-uniform in t_range [m] and
    r_range_deg [deg] (the near-neighbour displacements of the training batches)."""
    rng = np.random.default_rng(seed)
    out = rng.normal(size=(n, 6))
    for sl, (lo, hi) in ((slice(0, 3), t_range), (slice(3, 6), np.deg2rad(r_range_deg))):
        mag = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
        out[:, sl] *= (mag / np.linalg.norm(out[:, sl], axis=1))[:, None]
    return out


def train_phi(phi: torch.nn.Module, steps: int = 20000, batch_size: int = 256, lr: float = 1e-3,
              w_t: float = 1.0, w_r: float = 1.0, device: str = "cpu", seed: int = 0,
              log: Callable[[int, dict], None] | None = None, *, goal_weight: float = 1.0,
              neighbour_fraction: float = 0.5, pool_size: int = 100_000, log_every: int = 500,
              diagnostics: bool = True,
              scene: SceneConfig = SceneConfig(), pool: dict | None = None) -> dict:
    """Fit φ to eq. 9 on random pose batches (the recipe in the module docstring).

    phi: φ, (B, 6) Δr -> (B, D); trained in place. w_t, w_r: eq. 8's weights (from the data).
    pool: keyword arguments of tasks.sample_training_poses (DataSection.pool(); default: its defaults).
    log(step, logs) is called every `log_every` steps with {"loss_phi" (mean of the last steps), "lr"}.
    Returns the diagnostics of phi_diagnostics plus {"steps", "seconds", "final_loss"}."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    goal = goal_pose(scene)
    T_pool = sample_training_poses(pool_size, seed=seed, scene=scene, **(pool or {}))
    pool = torch.as_tensor(pose_difference(goal, T_pool), dtype=torch.float32, device=device)
    # each pool pose's near neighbour: T · exp(δ), |δ_t| log-uniform in [1 mm, 10 cm], |δ_ω| in [0.1°, 10°]
    near = torch.as_tensor(pose_difference(goal, T_pool @ se3_exp(small_twists(pool_size, seed + 1))),
                           dtype=torch.float32, device=device)
    n_near = int(round(batch_size * min(max(neighbour_fraction, 0.0), 0.5)))
    n_rand = batch_size - n_near
    phi.to(device).train()
    opt = torch.optim.Adam(phi.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    B = batch_size + 1
    W = torch.ones(B, B, device=device)
    W[0, :] = W[:, 0] = goal_weight
    W = W / W.mean()
    zero = torch.zeros(1, 6, device=device)
    t_start = time.time()
    recent = collections.deque(maxlen=max(1, min(100, steps // 10)))   # loss over the last steps
    for step in range(1, steps + 1):
        idx = torch.randint(len(pool), (n_rand,), generator=gen).to(device)
        r = torch.cat([zero, pool[idx], near[idx[:n_near]]])
        with torch.no_grad():
            d = se3_pair_distance(r, r, w_t, w_r)
        z = phi(r)
        loss = loss_phi_se3(z, d, W)                                       # eq. 9, goal row/column weighted
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        recent.append(loss.item())
        if log is not None and (step % log_every == 0 or step == steps):
            log(step, {"loss_phi": float(np.mean(recent)), "lr": sched.get_last_lr()[0]})
    phi.eval()
    out = {"steps": steps, "seconds": time.time() - t_start, "final_loss": float(np.mean(recent))}
    if diagnostics:
        phi.cpu()
        out.update(phi_diagnostics(phi, w_t, w_r))
        phi.to(device)
    return out
