"""MLVS: visual servoing in the learned latent space (paper III-D, eq. 13-14).

    z_I = ψ(I), z* = ψ(I*), e = z_I − z*
    L_z  = Σ_j α_j L_z_j over the K nearest pose embeddings z_r_j of z_I      (eq. 13)
    v    = −λ L_z⁺ e                                                          (eq. 14)

with L_z_j = ∂φ/∂r(r_j) · L_r(r_j) (eq. 5) computed on the fly for the K neighbours
(posebank.py). Batched: the benchmark steps hundreds of tasks at once; the ROS controller
node uses set_goal_latent / step_latent with latents from the encoder node.

Variants (rows of the benchmark):
  * oracle=True: z_I := φ(Δr_true) with Δr_true = pose_difference(goal_pose, oT_c) — a
    perfect image encoder; measures φ and the control law apart from ψ (needs_pose);
  * exact_jacobian=True: with the oracle, L_z = ∂φ/∂r · L_r at the true Δr (no bank);
    without it, L_z exact at the bank's nearest pose refined by Gauss–Newton on
    ‖φ(r) − z_I‖ (jacobian="refine"), which also estimates the pose.
"""
from __future__ import annotations

import numpy as np
import torch

from ..geometry import latent_twist, pose_difference
from ..posebank import BankConfig, PoseBank, latent_interaction, load_or_build
from .base import ControlLaw

WEIGHTINGS = ("inverse", "proportional", "uniform")


class MLVS(ControlLaw):
    """Latent-space servoing with a LatentModel (latent_vs/models.py) and a pose bank."""

    name = "mlvs"

    def __init__(self, model=None, k: int = 50, oracle: bool = False, exact_jacobian: bool = False,
                 weighting: str = "inverse", gain: float = 0.1, jacobian: str = "knn",
                 bank: PoseBank | None = None, bank_config: BankConfig | None = None,
                 cache_dir: str | None = None, refine_steps: int = 3, phi=None, progress: bool = False,
                 sensor: int | None = None):
        """model: LatentModel (ψ, φ, meta); phi: φ alone (oracle use without ψ; model may be None).
        k: neighbours of eq. 13; weighting: α_j ∝ distance ("proportional", eq. 13 as printed)
        or ∝ 1/distance ("inverse", the authors' code); gain: λ of eq. 14.
        jacobian: "knn" (eq. 13) or "refine" (exact L_z at a Gauss–Newton pose estimate).
        sensor: size [px] of the camera image a simulation renders (`camera`); the encoder's
        preprocessing makes ψ's input from it, as in the nodes. None: ψ's input size."""
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting '{weighting}' (known: {', '.join(WEIGHTINGS)})")
        if jacobian not in ("knn", "refine"):
            raise ValueError(f"unknown jacobian '{jacobian}' (knn, refine)")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.model = model
        self.phi = phi if phi is not None else model.phi
        self.k, self.weighting, self.gain = int(k), weighting, float(gain)
        self.oracle, self.exact_jacobian = bool(oracle), bool(exact_jacobian)
        self.jacobian = "refine" if (exact_jacobian and not oracle) else jacobian
        self.refine_steps = int(refine_steps)
        self.needs_pose = self.oracle
        self.camera = None if (self.oracle or model is None) else model.camera
        if self.camera is not None and sensor:
            self.camera = self.camera.scaled(int(sensor))
        self.name = "mlvs" + ("-oracle" if oracle else "") + ("-exact" if exact_jacobian else f"-k{k}")
        self.bank = bank
        if self.bank is None and not (self.oracle and self.exact_jacobian):
            self.bank = load_or_build(self.phi, bank_config or BankConfig(), cache_dir=cache_dir, progress=progress)
        self.z_goal: np.ndarray | None = None
        self.goal_pose: np.ndarray | None = None
        self.last_pose_estimate: np.ndarray | None = None   # Δr estimates of the last step (B, 6)
        with torch.no_grad():
            self._z_origin = self.phi(torch.zeros(1, 6)).numpy().astype(np.float64)  # φ(Δr = 0)

    # -- ControlLaw
    def set_goal(self, goal_images: np.ndarray | None, goal_pose: np.ndarray) -> None:
        self.goal_pose = np.asarray(goal_pose, dtype=np.float64)
        if self.oracle:
            self.z_goal = self._z_origin                          # z* = φ(Δr = 0)
        else:
            imgs = np.asarray(goal_images)
            self.z_goal = self.model.encode(imgs[None] if imgs.ndim == 2 else imgs).astype(np.float64)

    def step(self, images: np.ndarray | None, poses: np.ndarray | None, active: np.ndarray) -> np.ndarray:
        if self.z_goal is None:
            raise RuntimeError("set_goal must be called before step")
        active = np.asarray(active)
        r_true = None
        if self.oracle:
            r_true = pose_difference(self.goal_pose, np.asarray(poses, dtype=np.float64))
            with torch.no_grad():
                z = self.phi(torch.as_tensor(r_true, dtype=torch.float32)).numpy()
        else:
            z = self.model.encode(np.asarray(images))
        z_goal = self.z_goal if len(self.z_goal) == 1 else self.z_goal[active]
        return self._control(np.asarray(z, dtype=np.float64), z_goal, r_true)

    # -- latent interface (controller node)
    def set_goal_latent(self, z_goal: np.ndarray) -> None:
        """z* (D,) for every task, or (B, D) one per task."""
        self.z_goal = np.atleast_2d(np.asarray(z_goal, dtype=np.float64))

    def step_latent(self, z: np.ndarray) -> np.ndarray:
        """Twist(s) from latent(s) z_I: (D,) -> (6,), (B, D) -> (B, 6) (one goal, or B goals)."""
        if self.z_goal is None:
            raise RuntimeError("set_goal_latent must be called before step_latent")
        z = np.asarray(z, dtype=np.float64)
        v = self._control(np.atleast_2d(z), self.z_goal)
        return v[0] if z.ndim == 1 else v

    def estimate_pose(self, z: np.ndarray) -> np.ndarray:
        """Δr̂ (B, 6) at latents z (B, D): the camera pose seen from the goal, by the bank's
        nearest pose refined by `refine_steps` Gauss–Newton steps on ‖φ(r) − z‖."""
        if self.bank is None:
            raise RuntimeError("estimate_pose needs a pose bank (this law has none)")
        return self.bank.estimate_pose(np.atleast_2d(z), self.refine_steps)

    # -- the law
    def interaction(self, z: np.ndarray, r_true: np.ndarray | None = None) -> np.ndarray:
        """L_z (B, D, 6) at latents z (B, D)."""
        if self.oracle and self.exact_jacobian:
            self.last_pose_estimate = r_true
            return latent_interaction(self.phi, r_true)
        L_z, r_hat = self.bank.interaction(z.astype(np.float32), self.k, self.weighting, self.jacobian,
                                           self.refine_steps)
        self.last_pose_estimate = r_hat
        return L_z

    def _control(self, z: np.ndarray, z_goal: np.ndarray, r_true: np.ndarray | None = None) -> np.ndarray:
        e = np.broadcast_to(z - z_goal, z.shape)                     # e = z_I − z*
        v = np.zeros((len(z), 6))
        ok = np.isfinite(e).all(1)                                   # a NaN input stops that task only
        if not ok.any():
            return v
        L_z = self.interaction(z[ok], None if r_true is None else r_true[ok])
        v[ok] = latent_twist(L_z, e[ok], self.gain)                   # eq. 14
        return v


def make(model_dir: str | None = None, k: int = 50, oracle: bool = False, exact_jacobian: bool = False,
         weighting: str = "inverse", gain: float = 0.1, sensor: int | None = None, **kwargs) -> MLVS:
    """Benchmark/ROS factory: load models/<model_dir or default> and build (or load) its bank.
    The benchmark renders ψ's input size (uint8) unless `sensor` is given, e.g. mlvs-k50[sensor=224]:
    224 px images brought to ψ's input by the encoder's preprocessing, as in the demo's nodes."""
    from ..models import load_model
    from ..paths import model_dir as resolve
    model = load_model(resolve(model_dir or "default"))
    return MLVS(model, k=k, oracle=oracle, exact_jacobian=exact_jacobian, weighting=weighting, gain=gain,
                sensor=sensor, **kwargs)
