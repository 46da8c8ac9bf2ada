"""The camera's sensor_msgs/CameraInfo against the model's intrinsics (meta.json `camera`).

The encoder centre-crops every image to a square (side s = min(W, H), offset
x0 = (W - s) // 2, y0 = (H - s) // 2) and resizes it to the model input (size x size, OpenCV's
pixel-centre convention), as latent_vs.learning.export.prepare_images does. The same on the
intrinsics: k = size / s, px = fx k, py = fy k, u0 = (cx - x0 + 0.5) k - 0.5,
v0 = (cy - y0 + 0.5) k - 0.5 (camera.Camera.scaled's convention). Those are compared with
the model's: focal lengths relative to the model's, the principal point as a fraction of the
model image's side; beyond `tolerance` they differ.

CameraInfo's binning and ROI are applied first (as image_geometry does): the image is the
ROI, binned. `matrix` "k" reads K (the intrinsics of image_raw), "p" the left 3x3 of P (those
of a rectified image, image_rect). Distortion is not checked (the model saw an ideal
pinhole camera: feed it rectified images when D is not zero).
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of an image of width x height [px]."""
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def text(self) -> str:
        return f"{self.width}x{self.height} fx {self.fx:.2f} fy {self.fy:.2f} cx {self.cx:.2f} cy {self.cy:.2f}"


def from_camera_info(msg, matrix: str = "k") -> Intrinsics:
    """sensor_msgs/CameraInfo -> the intrinsics of the image it describes (binning and ROI
    applied). Raises ValueError naming what is wrong (zero size, an uncalibrated all-zero K,
    non-finite or non-positive focal lengths, a principal point far outside the image)."""
    if matrix not in ("k", "p"):
        raise ValueError(f"matrix must be 'k' or 'p', got {matrix!r}")
    m = list(msg.k) if matrix == "k" else list(msg.p)
    if len(m) != (9 if matrix == "k" else 12):
        raise ValueError(f"{matrix.upper()} has {len(m)} values")
    stride = 3 if matrix == "k" else 4
    fx, cx, fy, cy = float(m[0]), float(m[2]), float(m[stride + 1]), float(m[stride + 2])
    W, H = int(msg.width), int(msg.height)
    if W <= 0 or H <= 0:
        raise ValueError(f"image size {W}x{H}")
    if not all(math.isfinite(v) for v in m):
        raise ValueError(f"{matrix.upper()} has non-finite values {m}")
    if fx == 0 and fy == 0 and cx == 0 and cy == 0:
        raise ValueError(f"{matrix.upper()} is all zeros (an uncalibrated camera)")
    if not (fx > 0 and fy > 0):
        raise ValueError(f"focal lengths fx {fx:g}, fy {fy:g} are not positive")
    roi = msg.roi
    if roi.width > 0 and roi.height > 0:      # the image is the ROI (of the full-resolution K)
        cx, cy, W, H = cx - roi.x_offset, cy - roi.y_offset, int(roi.width), int(roi.height)
    bx, by = max(int(msg.binning_x), 1), max(int(msg.binning_y), 1)
    if bx > 1 or by > 1:
        fx, cx, W = fx / bx, cx / bx, W // bx
        fy, cy, H = fy / by, cy / by, H // by
    if W <= 0 or H <= 0:
        raise ValueError(f"image size {W}x{H} after binning {bx}x{by} and ROI")
    if not (-W <= cx <= 2 * W and -H <= cy <= 2 * H):
        raise ValueError(f"principal point ({cx:g}, {cy:g}) far outside the {W}x{H} image")
    return Intrinsics(W, H, fx, fy, cx, cy)


def crop_and_resize(cam: Intrinsics, size: int) -> tuple[Intrinsics, str]:
    """The intrinsics of the model input made from an image with intrinsics `cam` (centre
    crop to a square, resize to size x size), and the operation in words."""
    W, H = cam.width, cam.height
    if (W, H) == (size, size):
        return cam, "no crop or resize"
    s = min(W, H)
    x0, y0 = (W - s) // 2, (H - s) // 2
    k = size / s
    out = Intrinsics(size, size, cam.fx * k, cam.fy * k, (cam.cx - x0 + 0.5) * k - 0.5, (cam.cy - y0 + 0.5) * k - 0.5)
    crop = f"crop {s}x{s} at ({x0}, {y0}), " if (W, H) != (s, s) else ""
    return out, f"{crop}resize to {size}x{size}"


def differences(cam: Intrinsics, model: Intrinsics) -> dict[str, float]:
    """Relative differences: focal lengths to the model's, principal point to the model's side."""
    return {"fx": cam.fx / model.fx - 1.0, "fy": cam.fy / model.fy - 1.0,
            "cx": (cam.cx - model.cx) / model.width, "cy": (cam.cy - model.cy) / model.height}


@dataclass(frozen=True)
class Check:
    ok: bool
    line: str             # one line with both sets of numbers
    key: tuple            # what the line says, rounded: a new line is logged only when it changes
    worst: float          # the largest relative difference


def check(cam: Intrinsics, model: Intrinsics, tolerance: float) -> Check:
    """Compare a camera (its CameraInfo intrinsics) with the model's (meta.json camera)."""
    seen, how = crop_and_resize(cam, model.width)
    d = differences(seen, model)
    worst = max(abs(v) for v in d.values())
    ok = worst <= tolerance
    diff = ", ".join(f"{k} {100 * v:+.1f}%" for k, v in d.items())
    line = (f"camera_info {cam.text()} -> model input ({how}): px {seen.fx:.2f} py {seen.fy:.2f} "
            f"u0 {seen.cx:.2f} v0 {seen.cy:.2f}; the model's (meta.json camera): px {model.fx:.2f} "
            f"py {model.fy:.2f} u0 {model.cx:.2f} v0 {model.cy:.2f} ({diff}; intrinsics_tolerance "
            f"{100 * tolerance:g}%: focal lengths relative, principal point per image side)")
    key = (ok, cam.width, cam.height) + tuple(round(v, 3) for v in (cam.fx, cam.fy, cam.cx, cam.cy))
    return Check(ok, line, key, worst)


def model_intrinsics(camera) -> Intrinsics:
    """latent_vs.camera.Camera (a model's meta.json camera) -> Intrinsics."""
    return Intrinsics(int(camera.width), int(camera.height), float(camera.px), float(camera.py),
                      float(camera.u0), float(camera.v0))
