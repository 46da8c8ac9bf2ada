"""AEVS: visual servoing in the latent space of an autoencoder (paper II-C, eq. 6; Felton et
al., RA-L 2022), batched over tasks.

    z_I = encoder(I),  e = z_I - z_I*,  L_zI = (∂z/∂I)(∂I/∂r)
    v = -λ (H + μ diag H)⁻¹ L_zᵀ e,  H = L_zᵀ L_z        (Levenberg–Marquardt, as DVS)

∂I/∂r is the photometric interaction matrix of DVS (latent_vs/control/dvs.py: ViSP's
derivative filter, depth Z = the known desired depth for every pixel); ∂z/∂I is applied to
its six columns by forward-mode differentiation of the encoder (`latent_interaction_matrix`;
learning/aevs.py trains the autoencoder). As in the authors' code, the image is rendered
`border` pixels wider than the encoder input, so that the image gradients of every input pixel
are defined: `law.camera` is that wider camera, and the encoder reads the central crop.

`interaction`: "esm" (mean of L_z at I and I*, the authors' default), "current" or
"desired" (L_z at I*, computed once: cheapest). μ schedule and gain 0.5 as DVS (authors).

Cost per step: one encoder pass over 6 B images (forward-mode, one per twist component) for
"esm"/"current"; one over B images for "desired".
"""
from __future__ import annotations

import os
import sys

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD

from .. import paths
from ..camera import Camera
from ..errors import UserError
from ..models import EncoderModel, load_encoder_model, meta_kind
from ..models import prepare_images as crop_resize
from .base import ControlLaw
from .dvs import DVS

TRAIN_CONFIG = "train_aevs_cpu.yaml"    # config/<this> trains models/aevs (45 min on 2 CPU cores)
INTERACTIONS = ("esm", "current", "desired")


class MissingModelError(UserError):
    """No trained model of a baseline: `config` is the trainer config that makes one and `out`
    where the law looks for it first (latent-vs train CONFIG --out OUT), so a harness can train
    what is missing."""

    def __init__(self, message: str, config: str, out: str):
        super().__init__(message)
        self.config, self.out = config, out


BaselineModel = EncoderModel   # the name this module used before models.py owned the format


def load_baseline_model(model_dir: str | None, kind: str, config: str, device: str = "cpu") -> EncoderModel:
    """Load {psi.pt, meta.json} of `kind` (models.load_encoder_model) from model_dir, or from
    models/<kind> when it is None. A missing model raises MissingModelError naming it and the
    command that trains it (with `config`, into models/<kind>); a wrong one a ModelError
    naming the file."""
    train_hint = f"latent-vs train {config} --out {paths.model_dir(kind)}"
    if model_dir is not None and meta_kind(paths.model_dir(model_dir)) == "mlvs":
        # `latent-vs bench --model DIR` passes the MLVS model to every learned method: use ours
        print(f"note: {model_dir} is an MLVS model; {kind} uses its own default model", file=sys.stderr)
        model_dir = None
    model_dir = paths.model_dir(model_dir or kind)
    meta_path = os.path.join(model_dir, "meta.json")
    if not os.path.isfile(meta_path):
        raise MissingModelError(f"{kind} model not found: {meta_path} is missing; train one with: {train_hint}",
                                paths.config_file(config), model_dir)
    return load_encoder_model(model_dir, kind, device)


def prepare_images(images: np.ndarray, camera: Camera) -> np.ndarray:
    """uint8 (B, H, W) of the camera's size, or of any size (centre-cropped to its aspect and resized)."""
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.shape[1:] == (camera.height, camera.width):
        return images
    if camera.width != camera.height:
        raise UserError(f"images are {images.shape[2]}x{images.shape[1]}, the model expects {camera.width}x{camera.height}")
    return crop_resize(images, camera.width)


def wider_camera(cam: Camera, border: int) -> Camera:
    """The camera whose central crop of `border` pixels a side is `cam`."""
    return Camera(cam.width + 2 * border, cam.height + 2 * border, cam.px, cam.py, cam.u0 + border, cam.v0 + border)


class AEVS(ControlLaw):
    name = "aevs"
    needs_pose = False

    def __init__(self, model: EncoderModel, gain: float = 0.5, mu: float = 0.01, gn_after: int = 500,
                 mu_decay: float = 0.995, mu_min: float = 0.0, interaction: str = "esm",
                 depth: float | None = None, border: int = 3, device: str = "cpu", chunk: int = 256):
        if interaction not in INTERACTIONS:
            raise ValueError(f"interaction must be one of {INTERACTIONS}, not {interaction!r}")
        self.model = model
        self.encoder = model.psi
        self.device = torch.device(device)
        self.input_camera = model.camera                       # the encoder's input (S x S)
        self.camera = wider_camera(model.camera, border)       # what the simulator renders
        self.border = int(border)
        self.Z = float(depth if depth is not None else model.scene.goal_depth_m)
        self.interaction, self.chunk = interaction, int(chunk)
        # DVS supplies the photometric interaction matrix (same filter, same depth model) and the
        # Levenberg–Marquardt schedule; its own control law is not used.
        self._dvs = DVS(camera=self.camera, gain=gain, mu=mu, gn_after=gn_after, mu_decay=mu_decay,
                        mu_min=mu_min, depth=self.Z, border=self.border)
        self.gain = float(gain)
        mean, std = model.image_mean, model.image_std
        self._x_scale = 1.0 / (255.0 * std)                   # x = (I/255 - mean)/std: ∂x/∂I
        self._x_offset = mean / std
        self._z_goal: np.ndarray | None = None

    # -- features
    def _input(self, images: np.ndarray) -> torch.Tensor:
        b, S = self.border, self.input_camera.width
        I = torch.from_numpy(np.ascontiguousarray(images[:, b:b + S, b:b + S], dtype=np.float32))
        return (I * self._x_scale - self._x_offset).unsqueeze(1).to(self.device)

    def features(self, images: np.ndarray, with_L: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """z (B, D) and, with_L, L_z (B, D, 6) of uint8 images (B, H, W) rendered with law.camera."""
        images = prepare_images(images, self.camera)
        zs, Ls = [], []
        for i in range(0, len(images), self.chunk):
            part = images[i:i + self.chunk]
            x = self._input(part)
            if not with_L:
                with torch.no_grad():
                    zs.append(self.encoder(x).float().cpu().numpy())
                continue
            # ∂I/∂r of every encoder-input pixel (DVS's luminance interaction matrix), (b, N, 6)
            L_I = torch.from_numpy(np.stack([self._dvs.interaction_matrix(im) for im in part]))
            S = self.input_camera.width
            L_x = (L_I * self._x_scale).transpose(1, 2).reshape(len(part), 6, S, S).to(self.device)
            z, L_z = latent_interaction_matrix(self.encoder, x, L_x)
            zs.append(z.float().cpu().numpy())
            Ls.append(L_z.double().cpu().numpy())
        z = np.concatenate(zs).astype(float)
        return z, (np.concatenate(Ls) if with_L else None)

    # -- ControlLaw
    def set_goal(self, goal_images: np.ndarray, goal_pose: np.ndarray) -> None:
        goal_images = np.asarray(goal_images)
        if goal_images.ndim == 2:
            goal_images = goal_images[None]
        need_L = self.interaction in ("esm", "desired")
        self._z_goal, self._L_goal = self.features(goal_images, with_L=need_L)
        self._iter = np.zeros(len(goal_images), dtype=int)

    def step(self, images: np.ndarray, poses, active: np.ndarray) -> np.ndarray:
        if self._z_goal is None:
            raise RuntimeError("AEVS.step before set_goal")
        active = np.asarray(active, dtype=int)
        g = active if len(self._z_goal) > 1 else np.zeros_like(active)
        z, L = self.features(images, with_L=self.interaction != "desired")
        e = z - self._z_goal[g]                                           # eq. 6: e = z_I - z_I*
        if self.interaction == "desired":
            L = self._L_goal[g]
        elif self.interaction == "esm":
            L = 0.5 * (L + self._L_goal[g])
        if active.size and active.max() >= len(self._iter):
            self._iter = np.concatenate([self._iter, np.zeros(active.max() + 1 - len(self._iter), int)])
        v = lm_step(L, e, self._dvs.mu_at(self._iter[active]), self.gain)
        self._iter[active] += 1
        return v


def latent_interaction_matrix(encoder, x: torch.Tensor, L_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z = encoder(x) and L_z = (∂z/∂x) L_x (paper II-C, eq. 6's L_zI), by forward-mode AD.

    encoder: any module or TorchScript mapping (B, 1, S, S) -> (B, D); x: (B, 1, S, S) encoder
    input; L_x: (B, 6, S, S) interaction matrix of the encoder input (column k = ∂x/∂r_k for the
    camera twist's k-th component, in the units of x). Returns z (B, D) and L_z (B, D, 6).
    The six columns go through one batched forward pass of 6B images (one per direction)."""
    B = x.shape[0]
    if L_x.shape != (B, 6) + tuple(x.shape[2:]):
        raise ValueError(f"L_x must be (B, 6, S, S) = {(B, 6) + tuple(x.shape[2:])}, got {tuple(L_x.shape)}")
    primal = x.unsqueeze(1).expand(B, 6, *x.shape[1:]).reshape(B * 6, *x.shape[1:])
    tangent = L_x.reshape(B * 6, 1, *x.shape[2:]).to(x.dtype)
    with torch.no_grad(), fwAD.dual_level():
        out = encoder(fwAD.make_dual(primal.contiguous(), tangent.contiguous()))
        z6, jv = fwAD.unpack_dual(out)
    z = z6.reshape(B, 6, -1)[:, 0]
    L_z = jv.reshape(B, 6, -1).transpose(1, 2).contiguous()
    return z, L_z


def lm_step(L: np.ndarray, e: np.ndarray, mu: np.ndarray, gain: float) -> np.ndarray:
    """v = -λ (H + μ diag H)⁻¹ Lᵀ e, H = Lᵀ L; L (B, D, 6), e (B, D), μ (B,) -> (B, 6)."""
    H = np.einsum("bdi,bdj->bij", L, L)
    diag = np.einsum("bii->bi", H)
    ridge = 1e-9 * diag.mean(1, keepdims=True) + 1e-12
    Hlm = H + (mu[:, None] * diag + ridge)[:, :, None] * np.eye(6)
    return -gain * np.linalg.solve(Hlm, np.einsum("bdi,bd->bi", L, e)[..., None])[..., 0]


def make(model_dir: str | None = None, **kwargs) -> AEVS:
    """Factory for control/methods.py: the AEVS law on models/aevs (or model_dir).
    kwargs: see AEVS (gain, interaction, depth, border, device, ...)."""
    model = load_baseline_model(model_dir, "aevs", TRAIN_CONFIG, device=kwargs.get("device", "cpu"))
    return AEVS(model, **kwargs)
