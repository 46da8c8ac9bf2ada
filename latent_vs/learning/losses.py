"""Metric-learning losses of the latent space (paper III-B, eq. 8-12), in torch.

Shapes: poses r (B, 6) = (t [m], θu [rad]); latents z (B, D).
All pairwise terms average over the B² ordered pairs, the diagonal included, as printed.
Euclidean norms use a safe square root (gradient 0, not NaN, at zero distance: the diagonal).
"""
from __future__ import annotations

import numpy as np
import torch

from .. import geometry


def _rotation_from_thetau(tu: torch.Tensor) -> torch.Tensor:
    """Rodrigues in torch: θu (..., 3) -> R (..., 3, 3); float64 recommended."""
    theta = tu.norm(dim=-1, keepdim=True)
    small = theta < 1e-8
    u = tu / torch.where(small, torch.ones_like(theta), theta)
    zero = torch.zeros_like(u[..., 0])
    K = torch.stack([zero, -u[..., 2], u[..., 1], u[..., 2], zero, -u[..., 0], -u[..., 1], u[..., 0], zero],
                    -1).reshape(*u.shape[:-1], 3, 3)
    s, c = torch.sin(theta)[..., None], torch.cos(theta)[..., None]
    eye = torch.eye(3, dtype=tu.dtype, device=tu.device).expand_as(K)
    R = eye + s * K + (1 - c) * (K @ K)
    return torch.where(small[..., None], eye, R)


def se3_pair_distance(r_a: torch.Tensor, r_b: torch.Tensor, w_t: float, w_r: float) -> torch.Tensor:
    """Eq. 8 for every pair: d_SE(3)(r_a[i], r_b[j]) = ||Δt|| / w_t + Δθ / w_θu, with Δ the pose
    of b seen from a. (B, 6), (C, 6) -> (B, C), in r_a's dtype (computed in float64)."""
    a, b = r_a.double(), r_b.double()
    Ra, Rb = _rotation_from_thetau(a[:, 3:]), _rotation_from_thetau(b[:, 3:])
    # Δt = R_a^T (t_b - t_a): |Δt| = |t_b - t_a| (rotation keeps norms)
    dt = torch.cdist(a[:, :3], b[:, :3])
    # Δθ from trace(R_a^T R_b) = Σ R_a ⊙ R_b (float64: arccos resolves ~1e-8 rad near 0)
    cos = ((torch.einsum("aij,bij->ab", Ra, Rb) - 1) / 2).clamp(-1, 1)
    dtheta = torch.arccos(cos)
    return (dt / w_t + dtheta / w_r).to(r_a.dtype)


def safe_norm(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """||x|| with a zero (not NaN) gradient where x = 0."""
    sq = (x * x).sum(dim)
    nz = sq > 0
    return torch.where(nz, torch.sqrt(torch.where(nz, sq, torch.ones_like(sq))), torch.zeros_like(sq))


def pairwise_latent_distance(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """||z_a[i] - z_b[j]||: (B, D), (C, D) -> (B, C)."""
    return safe_norm(z_a[:, None, :] - z_b[None, :, :])


def loss_phi_se3(z_r: torch.Tensor, d: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 9: (1/B²) Σ_j Σ_k (d_SE(3)(r_j, r_k) - ||z_rj - z_rk||)². z_r (B, D), d (B, B);
    weight (B, B), optional: each pair's term multiplied by it (phi_train weights the goal's)."""
    sq = (d - pairwise_latent_distance(z_r, z_r)) ** 2
    return (sq if weight is None else weight * sq).mean()


def loss_psi_phi(z_I: torch.Tensor, z_r: torch.Tensor) -> torch.Tensor:
    """Eq. 10: (1/B²) Σ_j Σ_k (||z_Ij - z_rk|| - ||z_rj - z_rk||)². z_I (B, D) are the images of
    the poses whose embeddings are z_r (B, D), row by row (repeat z_r for perturbed copies)."""
    return ((pairwise_latent_distance(z_I, z_r) - pairwise_latent_distance(z_r, z_r)) ** 2).mean()


def loss_perturbation(z_groups: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Eq. 11: L_Pj = (1/P²) Σ_m Σ_n ||z_(Ij+Pm) - z_(Ij+Pn)|| over the P+1 views of pose j
    (view 0 is the clean image). z_groups (B, P+1, D).

    reduction "sum" is eq. 12's Σ_j L_Pj as printed; "mean" (default) averages over the B poses,
    which keeps the term's weight independent of the batch size (the authors' code uses means)."""
    P = z_groups.shape[1] - 1
    if P < 1:
        return z_groups.new_zeros(())
    d = safe_norm(z_groups[:, :, None, :] - z_groups[:, None, :, :])  # (B, P+1, P+1)
    per_pose = d.sum((1, 2)) / P ** 2
    if reduction == "sum":
        return per_pose.sum()
    if reduction == "mean":
        return per_pose.mean()
    raise ValueError(f"unknown reduction '{reduction}'")


def loss_fit(z_I: torch.Tensor, z_r: torch.Tensor) -> torch.Tensor:
    """Not in the paper: (1/B) Σ_j ||z_Ij - z_rj||², a direct pull of each image embedding onto
    its pose embedding. Eq. 10 matches distances only; where the z_r span few directions it
    barely constrains z_I off their affine hull (a distance is second-order in such offsets),
    which leaves ||ψ(I) - φ(r)|| large while eq. 10 is small. z_I, z_r (B, D) row by row."""
    return ((z_I - z_r) ** 2).sum(1).mean()


def total_loss(z_r: torch.Tensor, d: torch.Tensor, z_I: torch.Tensor, z_groups: torch.Tensor | None = None,
               weights=(1.0, 1.0, 1.0), reduction: str = "mean", fit_weight: float = 0.0) -> tuple[torch.Tensor, dict]:
    """Eq. 12: L = L_φ,SE(3) + L_ψ,φ + Σ_j L_Pj (each term optionally weighted), plus
    fit_weight · loss_fit (0 = the paper's loss).

    z_r (B, D) pose embeddings, d (B, B) their eq. 8 distances, z_I (B·V, D) image embeddings
    of V views per pose ordered pose-major (pose j's views are rows jV .. jV+V-1), or (B, D).
    z_groups defaults to z_I reshaped to (B, V, D). Returns (L, {term: float})."""
    B = z_r.shape[0]
    V = z_I.shape[0] // B
    if V * B != z_I.shape[0]:
        raise ValueError(f"z_I has {z_I.shape[0]} rows, not a multiple of the {B} poses")
    l_phi = loss_phi_se3(z_r, d)
    z_r_rep = z_r.repeat_interleave(V, 0) if V > 1 else z_r
    l_psi = loss_psi_phi(z_I, z_r_rep)
    if z_groups is None:
        z_groups = z_I.reshape(B, V, -1)
    l_p = loss_perturbation(z_groups, reduction)
    w = weights
    L = w[0] * l_phi + w[1] * l_psi + w[2] * l_p
    logs = {"L_phi_se3": float(l_phi.detach()), "L_psi_phi": float(l_psi.detach()), "L_perturb": float(l_p.detach())}
    if fit_weight:
        l_fit = loss_fit(z_I, z_r_rep)
        L = L + fit_weight * l_fit
        logs["L_fit"] = float(l_fit.detach())
    return L, {"loss": float(L.detach()), **logs}


def loss_goal_relative(z_I: torch.Tensor, z_r: torch.Tensor, z_I_goal: torch.Tensor, z_r_goal: torch.Tensor,
                       eps: float | torch.Tensor = 0.05) -> torch.Tensor:
    """Not in the paper: mean ‖(z_I − z_I*) − (z_r − z_r*)‖² / (‖z_r − z_r*‖² + ε²). The
    controller servos on e = ψ(I) − ψ(I*) (eq. 14); this asks e to match φ's error relative to
    its size, so that ψ stays informative near the goal, where absolute errors (loss_fit) are
    tiny and a ψ flat around I* costs almost nothing. z_I, z_r (B, D); z_I_goal, z_r_goal (1, D);
    eps a float or one per row (B,)."""
    dz_r = z_r - z_r_goal
    return (((z_I - z_I_goal) - dz_r) ** 2).sum(1).div((dz_r ** 2).sum(1) + eps ** 2).mean()


def data_weights(r: np.ndarray, n_pairs: int = 20000, seed: int = 0) -> tuple[float, float]:
    """(w_t, w_θu) of eq. 8: the mean translation [m] and rotation [rad] distances between
    random pairs of poses from a subset of the data (the authors: up to 10K samples).
    r (N, 6) numpy (or torch) poses."""
    r = np.asarray(r.detach().cpu() if isinstance(r, torch.Tensor) else r, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] != 6 or len(r) < 2:
        raise ValueError(f"data_weights needs (N >= 2, 6) poses, got {r.shape}")
    rng = np.random.default_rng(seed)
    sub = r[rng.permutation(len(r))[:10000]]
    i = rng.integers(0, len(sub), n_pairs)
    j = rng.integers(0, len(sub), n_pairs)
    keep = i != j
    T = geometry.pose_to_matrix(sub)
    delta = geometry.matrix_to_pose(geometry.inverse(T[i[keep]]) @ T[j[keep]])
    return float(np.linalg.norm(delta[:, :3], axis=1).mean()), float(np.linalg.norm(delta[:, 3:], axis=1).mean())
