"""Pinhole camera intrinsics and image-plane helpers.

Defaults follow the authors' simulator: a 234x234 grayscale render with p_x = p_y = 300
and principal point (124, 114), cropped by 5 px on each side to 224x224. Any other output
size follows by scaling the cropped camera.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics of the *output* image (after the crop)."""
    width: int = 224
    height: int = 224
    px: float = 300.0
    py: float = 300.0
    u0: float = 119.0   # 124 - 5 px crop
    v0: float = 109.0   # 114 - 5 px crop

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.px, 0.0, self.u0], [0.0, self.py, self.v0], [0.0, 0.0, 1.0]])

    def scaled(self, width: int, height: int | None = None) -> "Camera":
        """The same field of view rendered at another size (e.g. 64 or 128 px)."""
        height = width if height is None else height
        sx, sy = width / self.width, height / self.height
        return Camera(width, height, self.px * sx, self.py * sy,
                      (self.u0 + 0.5) * sx - 0.5, (self.v0 + 0.5) * sy - 0.5)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Camera":
        return cls(**{k: d[k] for k in ("width", "height", "px", "py", "u0", "v0")})

    def normalized_grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Normalised image coordinates x = (u - u0)/px, y = (v - v0)/py of every pixel, (H, W) each."""
        u, v = np.meshgrid(np.arange(self.width, dtype=float), np.arange(self.height, dtype=float))
        return (u - self.u0) / self.px, (v - self.v0) / self.py


def default_camera(size: int = 224) -> Camera:
    cam = Camera()
    return cam if size == cam.width else cam.scaled(size)
