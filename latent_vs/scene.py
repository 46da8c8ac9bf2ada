"""The simulated scene: a textured planar poster rendered from any camera pose, and the
image perturbations (lighting, occlusion, noise) used for perturbed goal images and training.

Scene frame: origin at the poster centre, poster in the plane z = 0, x to the right and y
down the texture. The desired camera sits 0.60 m in front of the poster centre (at
z = -0.60) with its optical axis along +z, so its image shows the poster upright.
Images are uint8 grayscale arrays of shape (H, W).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from functools import lru_cache

import cv2
import numpy as np

from .camera import Camera, default_camera
from .errors import UserError

DEFAULT_TEXTURE = os.path.join(os.path.dirname(__file__), "data", "poster_coffee.png")


@dataclass(frozen=True)
class SceneConfig:
    """What a user changes to train on their own scene."""
    texture: str = DEFAULT_TEXTURE   # any image file; converted to grayscale
    width_m: float = 0.80            # poster size [m]
    height_m: float = 0.60
    goal_depth_m: float = 0.60       # desired camera distance to the poster [m]
    background: int = 0              # grey level where no poster is seen

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SceneConfig":
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in fields})


class SceneError(UserError):
    """A scene that cannot be used (missing or unreadable texture)."""


@lru_cache(maxsize=8)
def _load_texture(path: str, width_px: int, height_px: int) -> np.ndarray:
    if not os.path.isfile(path):
        raise SceneError(f"scene texture not found: {path}")
    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise SceneError(f"scene texture is not a readable image: {path}")
    return cv2.resize(img, (width_px, height_px), interpolation=cv2.INTER_AREA)


def goal_pose(scene: SceneConfig = SceneConfig()) -> np.ndarray:
    """oT_c*: the desired camera pose (4x4), centred, optical axis perpendicular to the poster."""
    T = np.eye(4)
    T[2, 3] = -scene.goal_depth_m
    return T


class Scene:
    """Renders the poster by plane homography (OpenCV)."""

    def __init__(self, config: SceneConfig = SceneConfig(), camera: Camera | None = None):
        self.config = config
        self.camera = camera or default_camera()
        # texture sampled at the image resolution seen from the goal depth (no aliasing there)
        px_per_m = self.camera.px / config.goal_depth_m
        self._tex_size = (max(8, int(round(config.width_m * px_per_m))),
                          max(8, int(round(config.height_m * px_per_m))))
        self.texture = _load_texture(os.path.abspath(config.texture), *self._tex_size)
        tw, th = self._tex_size
        # texture pixel (col, row) -> poster point (x, y, 1) on the plane z = 0
        self._A = np.array([[config.width_m / tw, 0, -config.width_m / 2 + 0.5 * config.width_m / tw],
                            [0, config.height_m / th, -config.height_m / 2 + 0.5 * config.height_m / th],
                            [0, 0, 1.0]])
        u, v = np.meshgrid(np.arange(self.camera.width, dtype=float), np.arange(self.camera.height, dtype=float))
        self._uv1 = np.stack([u, v, np.ones_like(u)], -1)

    def homography(self, T_oc: np.ndarray) -> np.ndarray:
        """Texture pixel -> image pixel for the camera at oT_c."""
        T_co = np.linalg.inv(T_oc)
        M = np.column_stack([T_co[:3, 0], T_co[:3, 1], T_co[:3, 3]])
        return self.camera.K @ M @ self._A

    def render(self, T_oc: np.ndarray) -> np.ndarray:
        """The image seen by the camera at oT_c (4x4): uint8 (H, W). Correct when the poster
        leaves the view, is seen edge-on or lies behind the camera (then: background)."""
        cam, bg = self.camera, int(self.config.background)
        T_co = np.linalg.inv(T_oc)
        n_c, d = T_co[:3, 2], float(T_co[:3, 2] @ T_co[:3, 3])  # plane n_c . X = d in the camera frame
        if abs(d) < 1e-9:  # camera inside the poster plane: sees it edge-on
            return np.full((cam.height, cam.width), bg, np.uint8)
        H = self.homography(T_oc)
        if abs(np.linalg.det(H)) < 1e-18:
            return np.full((cam.height, cam.width), bg, np.uint8)
        img = cv2.warpPerspective(self.texture, H, (cam.width, cam.height), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=bg)
        # pixels whose ray meets the plane behind the camera: λ = d / (n_c . K^-1 p) <= 0.
        # n_c . K^-1 p is affine in the pixel, so the image corners bound it: test them first.
        a = np.linalg.inv(cam.K).T @ n_c
        corners = self._uv1[[0, 0, -1, -1], [0, -1, 0, -1]] @ a
        if np.all(corners * d > 0):
            return img
        img[(self._uv1 @ a) * d <= 0] = bg
        return img

    def render_batch(self, T_oc: np.ndarray) -> np.ndarray:
        """(N, 4, 4) -> (N, H, W) uint8."""
        return np.stack([self.render(T) for T in T_oc])

    def depth_at_goal(self) -> float:
        """Depth Z of every pixel at the desired pose (a fronto-parallel plane)."""
        return self.config.goal_depth_m


# ---------------------------------------------------------------- perturbations (seeded)

def lighting(img: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Global contrast/brightness change plus a smooth linear lighting gradient."""
    h, w = img.shape
    gain = 1.0 + strength * rng.uniform(-0.3, 0.3)
    offset = strength * rng.uniform(-30, 30)
    angle = rng.uniform(0, 2 * np.pi)
    amp = strength * rng.uniform(10, 40)
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = ((xx / max(w - 1, 1) - 0.5) * np.cos(angle) + (yy / max(h - 1, 1) - 0.5) * np.sin(angle)) * 2 * amp
    return np.clip(img.astype(np.float32) * gain + offset + ramp, 0, 255).astype(np.uint8)


def occlusion(img: np.ndarray, rng: np.random.Generator, max_rects: int = 3, max_frac: float = 0.3) -> np.ndarray:
    """Random erasing: 1..max_rects rectangles of uniform noise or a flat grey."""
    out = img.copy()
    h, w = img.shape
    for _ in range(rng.integers(1, max_rects + 1)):
        rh = int(rng.uniform(0.08, max_frac) * h)
        rw = int(rng.uniform(0.08, max_frac) * w)
        y, x = rng.integers(0, h - rh + 1), rng.integers(0, w - rw + 1)
        if rng.random() < 0.5:
            out[y:y + rh, x:x + rw] = rng.integers(0, 256, (rh, rw), dtype=np.uint8)
        else:
            out[y:y + rh, x:x + rw] = rng.integers(0, 256)
    return out


def noise(img: np.ndarray, rng: np.random.Generator, sigma: float = 5.0) -> np.ndarray:
    """Additive Gaussian sensor noise (sigma in grey levels)."""
    return np.clip(img.astype(np.float32) + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def perturb_goal(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The benchmark's perturbed I*: a lighting change and occlusions (paper IV-A)."""
    return occlusion(lighting(img, rng), rng)
