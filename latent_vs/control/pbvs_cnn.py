"""PBVS-CNN: PBVS on poses regressed by a CNN from the current and the desired images (paper
II-B and IV-A; e.g. Bateux et al. 2018), batched over tasks.

The regressor (learning/pbvs_cnn.py) maps an image to r̂ = c*r̂_c, the camera pose seen from
the desired pose. With r̂ for I and r̂* for I* (≈ 0 for a clean I*, not exactly):

    Δr̂ = (r̂*)⁻¹ ∘ r̂   (the current camera seen from the estimated desired one)
    v   = -λ L_r(Δr̂)⁻¹ Δr̂       (eq. 5; λ = 0.1 as the authors)

The loop stops where the two estimates agree: with a clean I* that is the goal whatever the
regressor's bias there (models/pbvs_cnn ends 1.1 mm out on the benchmark; the paper's
converged runs 33.5 mm, 1.71°); a perturbed I* moves r̂* and with it the end pose.
"""
from __future__ import annotations

import numpy as np
import torch

from ..geometry import L_pose, inverse, matrix_to_pose, pose_to_matrix
from ..models import EncoderModel
from .aevs import load_baseline_model, prepare_images
from .base import ControlLaw

TRAIN_CONFIG = "train_pbvs_cnn_cpu.yaml"   # config/<this> trains models/pbvs_cnn (45 min on 2 CPU cores)


class PBVSCNN(ControlLaw):
    name = "pbvs-cnn"
    needs_pose = False

    def __init__(self, model: EncoderModel, gain: float = 0.1, device: str = "cpu", chunk: int = 256):
        self.model = model
        self.regressor = model.psi
        self.camera = model.camera
        self.gain = float(gain)
        self.device = torch.device(device)
        self.chunk = int(chunk)
        self._x_scale = 1.0 / (255.0 * model.image_std)
        self._x_offset = model.image_mean / model.image_std
        self._T_goal_hat: np.ndarray | None = None

    def estimate(self, images: np.ndarray) -> np.ndarray:
        """r̂ = (t, θu) (B, 6) of uint8 images (B, H, W): the camera seen from the desired pose."""
        images = prepare_images(images, self.camera)
        out = []
        with torch.no_grad():
            for i in range(0, len(images), self.chunk):
                I = torch.from_numpy(np.ascontiguousarray(images[i:i + self.chunk], dtype=np.float32))
                x = (I * self._x_scale - self._x_offset).unsqueeze(1).to(self.device)
                out.append(self.regressor(x).double().cpu().numpy())
        return np.concatenate(out)

    def set_goal(self, goal_images: np.ndarray, goal_pose: np.ndarray) -> None:
        goal_images = np.asarray(goal_images)
        if goal_images.ndim == 2:
            goal_images = goal_images[None]
        self._T_goal_hat = pose_to_matrix(self.estimate(goal_images))      # c*T̂_c* per task (≈ I)

    def step(self, images: np.ndarray, poses, active: np.ndarray) -> np.ndarray:
        if self._T_goal_hat is None:
            raise RuntimeError("PBVS-CNN.step before set_goal")
        active = np.asarray(active, dtype=int)
        g = active if len(self._T_goal_hat) > 1 else np.zeros_like(active)
        T_hat = pose_to_matrix(self.estimate(images))                       # c*T̂_c
        dr = matrix_to_pose(inverse(self._T_goal_hat[g]) @ T_hat)          # Δr̂
        return -self.gain * np.linalg.solve(L_pose(dr), dr[..., None])[..., 0]   # v = -λ L_r⁻¹ Δr̂


def make(model_dir: str | None = None, **kwargs) -> PBVSCNN:
    """Factory for control/methods.py: PBVS-CNN on models/pbvs_cnn (or model_dir).
    kwargs: gain, device, chunk."""
    model = load_baseline_model(model_dir, "pbvs_cnn", TRAIN_CONFIG, device=kwargs.get("device", "cpu"))
    return PBVSCNN(model, **kwargs)
