"""The benchmark's metrics: ONE definition of each, applied to every method alike.

Definitions (the README copies this text):

* **Run.** A task starts at its initial pose oT_c(0) and runs the closed loop
  oT_c(k+1) = oT_c(k) · exp(v(k)) for at most `iters` iterations (default 1500); v(k) is the
  law's twist for iteration k (camera frame, per iteration).
* **Early termination.** A task stops early, and keeps its last pose for the rest of the budget, when
  - it is *still*: its last 10 twists are all below 0.001 mm and 0.001° per iteration
    (100x stricter than the convergence test below, so what it would still move is negligible:
    at most ~0.01 mm / 0.01° for a law that decays exponentially with gain 0.1); or
  - it is *lost*: the poster is entirely out of view for 50 consecutive iterations (image
    laws only), or the camera is more than 3 m from the desired pose, or the law returns a
    non-finite twist. A lost task counts as not converged.
* **Errors.** t_err = ||c*t_c|| (m) and r_err = θ of c*R_c (rad), the pose of the camera seen
  from the desired pose; "end error" is the error at the last pose.
* **Converged** (the authors' rule, SamFlt/dlvs): not lost, AND
  (t_end < 0.1 t_0 and r_end < 0.1 r_0, or t_end < 1 cm and r_end < 1°), AND *velocity
  converged*: each of the last 10 twists has translation < 0.1 mm and rotation < 0.01° per
  iteration.
* **APE** (absolute pose error against PBVS, on the same task): both trajectories are padded
  with their last pose to iters + 1 poses (what a stopped task does: it stays), then
  APE_t = mean_k ||t_k - t_k^PBVS|| (positions in the scene frame) and
  APE_r = mean_k angle(R_k^PBVS ᵀ R_k), i.e. index-aligned over the whole budget, as the
  authors' evo-based evaluation of 1500-iteration runs.
* **Length ratio** = path length / PBVS path length, path length = Σ_k ||t_{k+1} - t_k|| (camera
  positions, metres; a stopped task adds nothing).
* **Table rows.** Converged % over all tasks; end error, APE and length ratio are mean ± std
  over the converged tasks only (as the paper's Table I), in mm and °, cm and °, and a ratio.
"""
from __future__ import annotations

import numpy as np

from ..geometry import error_metrics, pose_to_matrix, thetau_from_rotation

# convergence (authors' rule)
REL_TOL = 0.1                     # end errors below 10 % of the initial ones ...
ABS_T_M = 0.01                    # ... or below 1 cm
ABS_R_RAD = np.deg2rad(1.0)       # ... and 1°
VEL_WINDOW = 10                   # the last 10 twists ...
VEL_T_M = 1e-4                    # ... below 0.1 mm per iteration
VEL_R_RAD = np.deg2rad(0.01)      # ... and 0.01° per iteration
# early termination
STILL_T_M = 1e-6                  # still: last VEL_WINDOW twists below 0.001 mm ...
STILL_R_RAD = np.deg2rad(1e-3)    # ... and 0.001° per iteration
LOST_OUT_OF_VIEW_ITERS = 50       # poster fully out of view this many iterations in a row
LOST_DISTANCE_M = 3.0             # or the camera this far from the desired pose

REASONS = ("still", "max_iters", "out_of_view", "diverged", "non_finite")
LOST_REASONS = ("out_of_view", "diverged", "non_finite")


def _below(velocities: np.ndarray, t_max: float, r_max: float) -> np.ndarray:
    """velocities (..., W, 6) -> (...) bool: every twist of the window below both limits."""
    v = np.asarray(velocities, dtype=float)
    return (np.all(np.linalg.norm(v[..., :3], axis=-1) < t_max, axis=-1)
            & np.all(np.linalg.norm(v[..., 3:], axis=-1) < r_max, axis=-1))


def velocity_converged(last_velocities: np.ndarray) -> np.ndarray:
    """(..., W, 6) the last W=10 twists -> bool: all below 0.1 mm and 0.01° per iteration.
    Fewer than 10 twists: False."""
    v = np.asarray(last_velocities)
    if v.shape[-2] < VEL_WINDOW:
        return np.zeros(v.shape[:-2], bool)
    return _below(v[..., -VEL_WINDOW:, :], VEL_T_M, VEL_R_RAD)


def is_still(last_velocities: np.ndarray) -> np.ndarray:
    """Early-termination test: the last 10 twists below 0.001 mm and 0.001° per iteration."""
    v = np.asarray(last_velocities)
    if v.shape[-2] < VEL_WINDOW:
        return np.zeros(v.shape[:-2], bool)
    return _below(v[..., -VEL_WINDOW:, :], STILL_T_M, STILL_R_RAD)


def error_converged(t0, r0, t_end, r_end) -> np.ndarray:
    """Authors' error test: both errors cut by 90 %, or both below 1 cm and 1°."""
    t0, r0, t_end, r_end = (np.asarray(a, dtype=float) for a in (t0, r0, t_end, r_end))
    relative = (t_end < REL_TOL * np.maximum(t0, 1e-4)) & (r_end < REL_TOL * np.maximum(r0, 1e-4))
    absolute = (t_end < ABS_T_M) & (r_end < ABS_R_RAD)
    return relative | absolute


def converged(t0, r0, t_end, r_end, last_velocities, reason) -> np.ndarray:
    """The convergence rule of the module docstring (vectorised over tasks)."""
    lost = np.isin(np.asarray(reason), LOST_REASONS)
    return error_converged(t0, r0, t_end, r_end) & velocity_converged(last_velocities) & ~lost


def pad_trajectory(poses: np.ndarray, n_poses: int, length: int) -> np.ndarray:
    """poses (L, 6) of which the first n_poses are valid -> (length, 6), held at the last valid one."""
    out = np.empty((length, poses.shape[-1]), dtype=float)
    n = min(n_poses, length)
    out[:n] = poses[:n]
    out[n:] = poses[n - 1]
    return out


def ape(traj: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Index-aligned absolute pose error of traj against ref, both (L, 6) pose vectors (t, θu)
    of oT_c of equal length: (mean translation error m, mean rotation error rad)."""
    traj, ref = np.asarray(traj, float), np.asarray(ref, float)
    e_t = np.linalg.norm(traj[:, :3] - ref[:, :3], axis=-1)
    R, R_ref = pose_to_matrix(traj)[:, :3, :3], pose_to_matrix(ref)[:, :3, :3]
    e_r = np.linalg.norm(thetau_from_rotation(np.swapaxes(R_ref, -1, -2) @ R), axis=-1)
    return float(e_t.mean()), float(e_r.mean())


def path_length(traj: np.ndarray) -> float:
    """Σ ||t_{k+1} - t_k|| of (L, 6) pose vectors (m)."""
    p = np.asarray(traj, float)[:, :3]
    return float(np.linalg.norm(np.diff(p, axis=0), axis=-1).sum())


def pose_errors(goal_pose: np.ndarray, poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., 6) pose vectors of oT_c -> translation (m), rotation (rad) errors to the goal."""
    return error_metrics(goal_pose, pose_to_matrix(poses))


def task_metrics(goal_pose: np.ndarray, poses: np.ndarray, n_poses: int, last_velocities: np.ndarray,
                 reason: str, ref_poses: np.ndarray | None, ref_n_poses: int | None, length: int) -> dict:
    """All per-task figures (SI units) for one task: poses (L, 6) valid up to n_poses; ref_* the
    PBVS run on the same task (None: no APE/length ratio); length = iters + 1."""
    t0, r0 = pose_errors(goal_pose, poses[0])
    t1, r1 = pose_errors(goal_pose, poses[n_poses - 1])
    conv = bool(converged(t0, r0, t1, r1, last_velocities, reason))
    out = {"t0_m": float(t0), "r0_rad": float(r0), "t_end_m": float(t1), "r_end_rad": float(r1),
           "converged": conv, "velocity_converged": bool(velocity_converged(last_velocities)),
           "iterations": int(n_poses - 1), "stop": reason, "path_length_m": path_length(poses[:n_poses])}
    if ref_poses is not None:
        a = pad_trajectory(poses, n_poses, length)
        b = pad_trajectory(ref_poses, ref_n_poses, length)
        out["ape_t_m"], out["ape_r_rad"] = ape(a, b)
        ref_len = path_length(ref_poses[:ref_n_poses])
        out["length_ratio"] = out["path_length_m"] / ref_len if ref_len > 0 else float("nan")
    return out


def summarize(tasks: list[dict]) -> dict:
    """Table I row from per-task metrics: converged % over all tasks; the rest over converged ones."""
    n = len(tasks)
    conv = [t for t in tasks if t["converged"]]

    def stat(key, scale=1.0):
        vals = np.array([t[key] for t in conv if key in t and np.isfinite(t[key])], float) * scale
        return (float(vals.mean()), float(vals.std())) if len(vals) else (float("nan"), float("nan"))

    row = {"tasks": n, "converged": len(conv), "converged_pct": 100.0 * len(conv) / max(n, 1),
           "end_mm": stat("t_end_m", 1000.0), "end_deg": stat("r_end_rad", 180.0 / np.pi),
           "ape_cm": stat("ape_t_m", 100.0), "ape_deg": stat("ape_r_rad", 180.0 / np.pi),
           "length_ratio": stat("length_ratio"),
           "stops": {r: sum(t["stop"] == r for t in tasks) for r in REASONS},
           "mean_iterations": float(np.mean([t["iterations"] for t in tasks])) if n else float("nan")}
    return row
