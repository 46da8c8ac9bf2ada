"""SE(3) geometry shared by the simulator, the control laws, the trainer and the nodes.

Conventions (paper Sec. II-B):
  * a pose vector r = (t, θu) ∈ R^6, metres and radians; t the translation, θu the
    rotation as axis u times angle θ ∈ [0, π];
  * a homogeneous matrix aTb (4x4) is the pose of frame b expressed in frame a;
  * a camera twist v = (v, ω) is the camera velocity expressed in the camera frame.

Every function accepts a single item or a batch: shapes are given as (..., 6), (..., 3, 3)
and (..., 4, 4). All NumPy, float64.
"""
from __future__ import annotations

import numpy as np

_EPS = 1e-9


def skew(w: np.ndarray) -> np.ndarray:
    """[w]x, the cross-product matrix. (..., 3) -> (..., 3, 3)."""
    w = np.asarray(w, dtype=float)
    K = np.zeros(w.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2] = -w[..., 2], w[..., 1]
    K[..., 1, 0], K[..., 1, 2] = w[..., 2], -w[..., 0]
    K[..., 2, 0], K[..., 2, 1] = -w[..., 1], w[..., 0]
    return K


def rotation_from_thetau(tu: np.ndarray) -> np.ndarray:
    """Rodrigues: θu (..., 3) -> R (..., 3, 3)."""
    tu = np.asarray(tu, dtype=float)
    theta = np.linalg.norm(tu, axis=-1)[..., None, None]
    K = skew(tu)
    small = theta < 1e-6
    th = np.where(small, 1.0, theta)
    a = np.where(small, 1.0 - theta**2 / 6.0, np.sin(th) / th)
    b = np.where(small, 0.5 - theta**2 / 24.0, (1.0 - np.cos(th)) / th**2)
    return np.eye(3) + a * K + b * (K @ K)


def thetau_from_rotation(R: np.ndarray) -> np.ndarray:
    """Inverse Rodrigues: R (..., 3, 3) -> θu (..., 3), θ ∈ [0, π]. Stable near 0 and π."""
    R = np.asarray(R, dtype=float)
    cos = np.clip((np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    theta = np.arccos(cos)
    vee = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0],
                    R[..., 1, 0] - R[..., 0, 1]], -1)
    sin = np.sin(theta)
    # generic case: θu = θ / (2 sin θ) vee(R - R^T)
    scale = np.where(theta < 1e-6, 0.5 + theta**2 / 12.0, theta / (2.0 * np.where(sin < 1e-12, 1.0, sin)))
    tu = scale[..., None] * vee
    # near π: u from the symmetric part of R (sign fixed by vee)
    near_pi = theta > np.pi - 1e-3
    if np.any(near_pi):
        # (R + R^T)/2 - cos θ I = (1 - cos θ) u u^T
        B = (R + np.swapaxes(R, -1, -2)) / 2.0 - cos[..., None, None] * np.eye(3)
        diag = np.clip(np.diagonal(B, axis1=-2, axis2=-1), 0.0, None)
        idx = np.argmax(diag, axis=-1)
        col = np.take_along_axis(B, np.broadcast_to(idx[..., None, None], B.shape[:-1] + (1,)), -1)[..., 0]
        u = col / np.linalg.norm(col, axis=-1, keepdims=True).clip(_EPS)
        sign = np.where(np.sum(u * vee, -1) < 0, -1.0, 1.0)
        tu_pi = (sign * theta)[..., None] * u
        tu = np.where(near_pi[..., None], tu_pi, tu)
    return tu


def pose_to_matrix(r: np.ndarray) -> np.ndarray:
    """r = (t, θu) (..., 6) -> T (..., 4, 4)."""
    r = np.asarray(r, dtype=float)
    T = np.zeros(r.shape[:-1] + (4, 4))
    T[..., :3, :3] = rotation_from_thetau(r[..., 3:])
    T[..., :3, 3] = r[..., :3]
    T[..., 3, 3] = 1.0
    return T


def matrix_to_pose(T: np.ndarray) -> np.ndarray:
    """T (..., 4, 4) -> r = (t, θu) (..., 6)."""
    T = np.asarray(T, dtype=float)
    return np.concatenate([T[..., :3, 3], thetau_from_rotation(T[..., :3, :3])], -1)


def inverse(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid transform (..., 4, 4)."""
    T = np.asarray(T, dtype=float)
    Ti = np.zeros_like(T)
    Rt = np.swapaxes(T[..., :3, :3], -1, -2)
    Ti[..., :3, :3] = Rt
    Ti[..., :3, 3] = -(Rt @ T[..., :3, 3, None])[..., 0]
    Ti[..., 3, 3] = 1.0
    return Ti


def pose_difference(T_goal: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Δr = (c*t_c, θu of c*R_c): the current pose seen from the goal (paper II-B).

    T_goal = oT_c*, T = oT_c, both (..., 4, 4); returns (..., 6)."""
    return matrix_to_pose(inverse(T_goal) @ T)


def se3_exp(twist: np.ndarray, dt: float = 1.0) -> np.ndarray:
    """Exponential map of a twist (v, ω) applied for dt: the displacement c(t)T_c(t+dt).

    A camera at oT_c moving with twist v (camera frame) ends at oT_c @ se3_exp(v, dt)."""
    twist = np.asarray(twist, dtype=float) * dt
    v, w = twist[..., :3], twist[..., 3:]
    theta = np.linalg.norm(w, axis=-1)[..., None, None]
    K = skew(w)
    small = theta < 1e-6
    th = np.where(small, 1.0, theta)
    b = np.where(small, 0.5 - theta**2 / 24.0, (1.0 - np.cos(th)) / th**2)
    c = np.where(small, 1.0 / 6.0 - theta**2 / 120.0, (th - np.sin(th)) / th**3)
    V = np.eye(3) + b * K + c * (K @ K)
    T = np.zeros(twist.shape[:-1] + (4, 4))
    T[..., :3, :3] = rotation_from_thetau(w)
    T[..., :3, 3] = (V @ v[..., None])[..., 0]
    T[..., 3, 3] = 1.0
    return T


def se3_log(T: np.ndarray) -> np.ndarray:
    """Logarithm: the twist (v, ω) with se3_exp(v, 1) = T. (..., 4, 4) -> (..., 6)."""
    T = np.asarray(T, dtype=float)
    w = thetau_from_rotation(T[..., :3, :3])
    theta = np.linalg.norm(w, axis=-1)[..., None, None]
    K = skew(w)
    small = theta < 1e-6
    th = np.where(small, 1.0, theta)
    # V^-1 = I - K/2 + (1/θ² - (1+cos θ)/(2 θ sin θ)) K²
    coef = np.where(small, 1.0 / 12.0, 1.0 / th**2 - (1.0 + np.cos(th)) / (2.0 * th * np.sin(np.clip(th, _EPS, np.pi - 1e-9))))
    Vinv = np.eye(3) - 0.5 * K + coef * (K @ K)
    v = (Vinv @ T[..., :3, 3, None])[..., 0]
    return np.concatenate([v, w], -1)


def L_thetau(tu: np.ndarray) -> np.ndarray:
    """Interaction matrix of θu (of c*R_c, ω in the current camera frame). (..., 3) -> (..., 3, 3).

    L_θu = I + (θ/2)[u]x + (1 - sinc θ / sinc²(θ/2)) [u]x²  -- the sign of the [u]x term
    is '+' for this convention (checked against finite differences in the tests)."""
    tu = np.asarray(tu, dtype=float)
    theta = np.linalg.norm(tu, axis=-1)[..., None, None]
    small = theta < 1e-8
    th = np.where(small, 1.0, theta)
    U = skew(tu) / th  # [u]x
    sinc = np.sinc(th / np.pi)
    sinc_half = np.sinc(th / (2 * np.pi))
    L = np.eye(3) + (th / 2.0) * U + (1.0 - sinc / sinc_half**2) * (U @ U)
    return np.where(small, np.eye(3) + 0.5 * skew(tu), L)


def L_pose(r: np.ndarray) -> np.ndarray:
    """Eq. 5: interaction matrix of Δr = (c*t_c, θu) w.r.t. the camera twist. (..., 6) -> (..., 6, 6).

    Blocks R(θu) (Rodrigues) and L_θu (see L_thetau) from one [θu]x and its square:
    R = I + (sin θ/θ) K + ((1 − cos θ)/θ²) K², L_θu = I + K/2 + ((1 − sinc θ / sinc²(θ/2))/θ²) K²
    (the control step calls this for every new neighbour: one pass instead of two)."""
    r = np.asarray(r, dtype=float)
    tu = r[..., 3:]
    theta = np.sqrt((tu * tu).sum(-1))[..., None, None]
    K = skew(tu)
    K2 = K @ K
    small = theta < 1e-6
    th = np.where(small, 1.0, theta)
    a = np.where(small, 1.0 - theta**2 / 6.0, np.sin(th) / th)
    b = np.where(small, 0.5 - theta**2 / 24.0, (1.0 - np.cos(th)) / th**2)
    c = np.where(small, 1.0 / 12.0, (1.0 - np.sinc(th / np.pi) / np.sinc(th / (2 * np.pi)) ** 2) / th**2)
    L = np.zeros(r.shape[:-1] + (6, 6))
    L[..., :3, :3] = a * K + b * K2
    L[..., 3:, 3:] = 0.5 * K + c * K2
    i = np.arange(6)
    L[..., i, i] += 1.0
    return L


def se3_distance(r_j: np.ndarray, r_k: np.ndarray, w_t: float, w_r: float) -> np.ndarray:
    """Eq. 8: d_SE(3)(r_j, r_k) = ||Δt|| / w_t + Δθ / w_θu, with Δ = pose of k seen from j."""
    d = matrix_to_pose(inverse(pose_to_matrix(r_j)) @ pose_to_matrix(r_k))
    return np.linalg.norm(d[..., :3], axis=-1) / w_t + np.linalg.norm(d[..., 3:], axis=-1) / w_r


def pinv_apply(L: np.ndarray, e: np.ndarray) -> np.ndarray:
    """L⁺ e for L (B, D, 6) of full column rank, e (B, D) -> (B, 6): the normal equations
    (LᵀL)⁻¹ Lᵀ e (a 6x6 solve: ~5x faster than an SVD per step); pinv if any LᵀL is singular."""
    Lt = np.swapaxes(L, 1, 2)
    try:
        out = np.linalg.solve(Lt @ L, Lt @ e[..., None])[..., 0]
        if np.isfinite(out).all():
            return out
    except np.linalg.LinAlgError:
        pass
    return (np.linalg.pinv(L) @ e[..., None])[..., 0]


def latent_twist(L_z: np.ndarray, e: np.ndarray, gain: float) -> np.ndarray:
    """Eq. 14: v = −λ L_z⁺ e for L_z (B, D, 6), e (B, D) -> (B, 6). A task whose L_z or e is
    not finite gets v = 0 (it stops; the others go on)."""
    L_z, e = np.asarray(L_z, dtype=np.float64), np.asarray(e, dtype=np.float64)
    v = np.zeros((len(e), 6))
    ok = np.isfinite(L_z).all((1, 2)) & np.isfinite(e).all(1)
    if ok.any():
        v[ok] = -gain * pinv_apply(L_z[ok], e[ok])
    return v


def error_metrics(T_goal: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Translation error (m) and rotation error (rad) of T with respect to T_goal."""
    d = pose_difference(T_goal, T)
    return np.linalg.norm(d[..., :3], axis=-1), np.linalg.norm(d[..., 3:], axis=-1)


def velocity_twist_matrix(aTb: np.ndarray) -> np.ndarray:
    """aV_b (6x6): maps a twist expressed in frame b to the same rigid motion in frame a.

    aV_b = [[aR_b, [at_b]x aR_b], [0, aR_b]]  (Chaumette & Hutchinson 2006)."""
    aTb = np.asarray(aTb, dtype=float)
    R, t = aTb[..., :3, :3], aTb[..., :3, 3]
    V = np.zeros(aTb.shape[:-2] + (6, 6))
    V[..., :3, :3] = R
    V[..., :3, 3:] = skew(t) @ R
    V[..., 3:, 3:] = R
    return V


def rpy_to_matrix(x: float, y: float, z: float, roll: float, pitch: float, yaw: float) -> np.ndarray:
    """ROS-style xyz + roll/pitch/yaw (fixed axes X, Y, Z) -> 4x4."""
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    R = np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                  [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                  [-sp, cp * sr, cp * cr]])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = (x, y, z)
    return T
