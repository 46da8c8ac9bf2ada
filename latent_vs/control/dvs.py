"""Photometric direct visual servoing, DVS (Collewet & Marchand 2008), batched over tasks.

Feature: the image itself, e = I - I* over the pixels away from a small border. Brightness
constancy gives the luminance interaction matrix, one row per pixel:

    L_I = -(∇I_x L_x + ∇I_y L_y),   L_x = [-1/Z, 0, x/Z, xy, -(1+x²), y],
                                    L_y = [0, -1/Z, y/Z, 1+y², -xy, -x]

with ∇I in normalised image units (p_x ∂I/∂u, p_y ∂I/∂v; ViSP's 7-tap derivative filter), (x, y)
the normalised coordinates of the pixel and Z the depth at the desired pose (the scene's
goal_depth_m: the poster is fronto-parallel there). The control law is the Levenberg–Marquardt
step of ViSP's photometric servoing example:

    H = Lᵀ L,   v = -λ (H + μ diag H)⁻¹ Lᵀ e

`interaction` chooses L: "desired" (L* at I*, computed once, as in ViSP's example), "current"
(at I) or "esm" (the mean of both, as the authors' benchmark code, SamFlt/dlvs, defaults to).
μ follows the authors' schedule: μ0 = 0.01 for `gn_after` iterations, then multiplied by
`mu_decay` each iteration down to `mu_min` (a move towards Gauss–Newton). Gain λ = 0.5 (authors).

`px_scale` multiplies the focal length used in L only (not in rendering): 1.0 is the correct
model; 1.9 = 570/300 reproduces the authors' DVS configuration, which builds L with p_x = 570
while rendering with p_x = 300.

Cost: Lᵀe and Lᵀ L are formed without the (N, 6) matrix L: every column of L is
a_k ⊙ ∇I_x + b_k ⊙ ∇I_y with fixed per-pixel coefficients a_k, b_k, so Lᵀ L is one
(B, 3N) @ (3N, 21) product of [∇I_x², ∇I_x ∇I_y, ∇I_y²] with precomputed coefficient products.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..camera import Camera, default_camera
from ..scene import SceneConfig
from .base import ControlLaw

# ViSP's derivative filter (vpImageFilter::derivativeFilterX/Y): antisymmetric, 7 taps;
# weights of I(u+k) - I(u-k) for k = 1, 2, 3.
_DERIV_W = np.array([2047.0, 913.0, 112.0], dtype=np.float32) / 8418.0
_GRAD_HALF = 3  # half width of the filter: the border must be at least this
_KERNEL_X = np.concatenate([-_DERIV_W[::-1], [0.0], _DERIV_W]).astype(np.float32)[None, :]  # (1, 7)

INTERACTIONS = ("desired", "current", "esm")


def image_gradients(images: np.ndarray, border: int) -> tuple[np.ndarray, np.ndarray]:
    """∂I/∂u, ∂I/∂v (grey levels per pixel) of (B, H, W) images on the interior that leaves
    `border` pixels on each side: returns two (B, H - 2 border, W - 2 border) float32 arrays."""
    images = np.asarray(images)
    b = border
    H, W = images.shape[-2:]
    gx = np.empty(images.shape[:-2] + (H - 2 * b, W - 2 * b), np.float32)
    gy = np.empty_like(gx)
    for i, img in enumerate(images.reshape(-1, H, W)):
        img = img.astype(np.float32)
        gx.reshape(-1, *gx.shape[-2:])[i] = cv2.filter2D(img, cv2.CV_32F, _KERNEL_X, borderType=cv2.BORDER_REPLICATE)[b:H - b, b:W - b]
        gy.reshape(-1, *gy.shape[-2:])[i] = cv2.filter2D(img, cv2.CV_32F, _KERNEL_X.T, borderType=cv2.BORDER_REPLICATE)[b:H - b, b:W - b]
    return gx, gy


class DVS(ControlLaw):
    name = "dvs"
    needs_pose = False

    def __init__(self, camera: Camera | None = None, size: int = 224, scene: SceneConfig = SceneConfig(),
                 gain: float = 0.5, mu: float = 0.01, gn_after: int = 500, mu_decay: float = 0.995,
                 mu_min: float = 0.0, interaction: str = "esm", px_scale: float = 1.0,
                 depth: float | None = None, border: int = _GRAD_HALF):
        if interaction not in INTERACTIONS:
            raise ValueError(f"interaction must be one of {INTERACTIONS}, not {interaction!r}")
        if border < _GRAD_HALF:
            raise ValueError(f"border must be >= {_GRAD_HALF} (the derivative filter's half width)")
        self.camera = camera or default_camera(size)
        self.gain, self.mu0, self.gn_after = float(gain), float(mu), int(gn_after)
        self.mu_decay, self.mu_min = float(mu_decay), float(mu_min)
        self.interaction, self.border = interaction, int(border)
        self.Z = float(depth if depth is not None else scene.goal_depth_m)
        cam, b = self.camera, self.border
        # the focal lengths of the interaction model (px_scale != 1: a deliberately wrong model)
        self.px_L, self.py_L = cam.px * px_scale, cam.py * px_scale
        u, v = np.meshgrid(np.arange(b, cam.width - b, dtype=float), np.arange(b, cam.height - b, dtype=float))
        x, y = ((u - cam.u0) / self.px_L).ravel(), ((v - cam.v0) / self.py_L).ravel()
        iZ = 1.0 / self.Z
        zero, one = np.zeros_like(x), np.ones_like(x)
        # L_I row = ∇I_x · A + ∇I_y · B  (A = -L_x, B = -L_y; see the module docstring)
        self._A = np.stack([iZ * one, zero, -x * iZ, -x * y, 1 + x * x, -y], 1).astype(np.float32)   # (N, 6)
        self._B = np.stack([zero, iZ * one, -y * iZ, -(1 + y * y), x * y, x], 1).astype(np.float32)  # (N, 6)
        A, B = self._A.astype(float), self._B.astype(float)
        iu, ju = np.triu_indices(6)  # Lᵀ L is symmetric: its 21 upper entries
        AA = A[:, iu] * A[:, ju]
        AB = A[:, iu] * B[:, ju] + B[:, iu] * A[:, ju]
        BB = B[:, iu] * B[:, ju]
        self._C = np.concatenate([AA, AB, BB], 0).astype(np.float32)  # (3N, 21)
        self._iu, self._ju = iu, ju
        self._goal: np.ndarray | None = None

    # -- helpers
    def _interior(self, images: np.ndarray) -> np.ndarray:
        b = self.border
        return np.asarray(images, dtype=np.float32)[..., b:-b, b:-b].reshape(len(images), -1)

    def _norm_gradients(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gx, gy = image_gradients(images, self.border)
        n = len(images)
        return gx.reshape(n, -1) * np.float32(self.px_L), gy.reshape(n, -1) * np.float32(self.py_L)

    def _hessian(self, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
        """Lᵀ L (B, 6, 6) for L rows ∇I_x A + ∇I_y B."""
        W = np.concatenate([gx * gx, gx * gy, gy * gy], 1)
        h = (W @ self._C).astype(float)
        H = np.empty((len(h), 6, 6))
        H[:, self._iu, self._ju] = h
        H[:, self._ju, self._iu] = h
        return H

    def _LTe(self, gx: np.ndarray, gy: np.ndarray, e: np.ndarray) -> np.ndarray:
        return ((gx * e) @ self._A + (gy * e) @ self._B).astype(float)

    def interaction_matrix(self, image: np.ndarray) -> np.ndarray:
        """L_I of one image (H, W): (N, 6), one row per interior pixel (row-major). For inspection
        and tests; the control law never forms it."""
        gx, gy = self._norm_gradients(np.asarray(image)[None])
        return gx[0, :, None] * self._A + gy[0, :, None] * self._B

    def mu_at(self, k: np.ndarray) -> np.ndarray:
        """μ after k iterations (authors' schedule)."""
        k = np.asarray(k, dtype=float)
        decayed = self.mu0 * self.mu_decay ** np.maximum(k - self.gn_after, 0.0)
        return np.maximum(self.mu_min, decayed)

    # -- ControlLaw
    def set_goal(self, goal_images: np.ndarray, goal_pose: np.ndarray) -> None:
        goal_images = np.asarray(goal_images)
        if goal_images.ndim == 2:
            goal_images = goal_images[None]
        if goal_images.shape[-2:] != (self.camera.height, self.camera.width):
            raise ValueError(f"goal images are {goal_images.shape[-2:]}, the law's camera is "
                             f"{self.camera.height}x{self.camera.width}")
        self._goal = self._interior(goal_images)
        self._gx_goal, self._gy_goal = self._norm_gradients(goal_images)
        self._H_goal = self._hessian(self._gx_goal, self._gy_goal) if self.interaction == "desired" else None
        self._iter = np.zeros(len(goal_images), dtype=int)  # iterations per task (μ schedule)

    def step(self, images: np.ndarray, poses, active: np.ndarray) -> np.ndarray:
        if self._goal is None:
            raise RuntimeError("DVS.step before set_goal")
        active = np.asarray(active, dtype=int)
        g = active if len(self._goal) > 1 else np.zeros_like(active)  # one I* for every task
        e = self._interior(images) - self._goal[g]                  # e = I - I*
        if self.interaction == "desired":
            gx, gy, H = self._gx_goal[g], self._gy_goal[g], self._H_goal[g]
        else:
            gx, gy = self._norm_gradients(images)
            if self.interaction == "esm":
                gx, gy = 0.5 * (gx + self._gx_goal[g]), 0.5 * (gy + self._gy_goal[g])
            H = self._hessian(gx, gy)
        if active.size and active.max() >= len(self._iter):  # one shared I*: counters grow on demand
            self._iter = np.concatenate([self._iter, np.zeros(active.max() + 1 - len(self._iter), int)])
        mu = self.mu_at(self._iter[active])
        diag = np.einsum("bii->bi", H)
        # Levenberg–Marquardt: (H + μ diag H); a tiny ridge keeps a blank image (H = 0) finite: v = 0
        ridge = 1e-9 * diag.mean(1, keepdims=True) + 1e-12
        Hlm = H + (mu[:, None] * diag + ridge)[:, :, None] * np.eye(6)
        v = -self.gain * np.linalg.solve(Hlm, self._LTe(gx, gy, e)[..., None])[..., 0]
        self._iter[active] += 1
        return v


def make(model_dir: str | None = None, **kwargs) -> DVS:
    """Factory for control/methods.py (DVS needs no model). kwargs: see DVS."""
    return DVS(**kwargs)
