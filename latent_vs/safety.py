"""Safety rules of the servo controller, kept apart from any control law and from ROS.

  * limits:    a twist is never sent beyond `max_linear_speed` [m/s] or `max_angular_speed`
               [rad/s]; a twist over a limit is scaled as a whole, so its direction is kept;
  * staleness: an input older than `input_timeout` [s] stops the arm (one zero twist);
  * faults:    a non-finite input or output (NaN, inf), an input of the wrong shape, a
               latent far outside the model's range, an image of an absurd size, or an input
               stamped in the future stops the arm (one zero twist) and the controller waits
               for good input;
  * settings:  every controller setting has one range (SETTINGS), checked when a parameter
               is set and when a bag's stored settings are replayed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ZERO_TWIST = np.zeros(6)


@dataclass(frozen=True)
class Limits:
    max_linear_speed: float = 0.10   # [m/s]   norm of v
    max_angular_speed: float = 0.50  # [rad/s] norm of ω

    def __post_init__(self):
        for name in ("max_linear_speed", "max_angular_speed"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")


def limit_twist(twist: np.ndarray, limits: Limits) -> tuple[np.ndarray, float]:
    """Scale the whole twist (v, ω) (6,) so that ‖v‖ <= max_linear_speed and
    ‖ω‖ <= max_angular_speed; returns (limited twist, scale in (0, 1]).

    A non-finite twist is a fault, never a command: it raises ValueError."""
    twist = np.asarray(twist, dtype=float).reshape(6)
    if not np.all(np.isfinite(twist)):
        raise ValueError(f"non-finite twist {twist}")
    n_v, n_w = np.linalg.norm(twist[:3]), np.linalg.norm(twist[3:])
    scale = 1.0
    # (1 - 1e-9): a twist at the limit stays below it after float rounding, however its norm is summed
    if n_v > limits.max_linear_speed:
        scale = min(scale, limits.max_linear_speed / n_v * (1 - 1e-9))
    if n_w > limits.max_angular_speed:
        scale = min(scale, limits.max_angular_speed / n_w * (1 - 1e-9))
    return twist * scale, scale


def input_problem(y: np.ndarray, shape: tuple | None = None) -> str | None:
    """Why an input (latent, pose or image array) cannot be used, or None when it can."""
    y = np.asarray(y)
    if shape is not None and tuple(y.shape) != tuple(shape):
        return f"input has shape {tuple(y.shape)}, expected {tuple(shape)}"
    if y.size == 0:
        return "input is empty"
    if np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y)):
        bad = int(np.size(y) - np.count_nonzero(np.isfinite(y)))
        return f"input has {bad} non-finite value(s) (NaN/inf)"
    return None


def is_stale(stamp_s: float, now_s: float, input_timeout: float) -> bool:
    """An input captured at stamp_s [s] is stale at now_s when older than input_timeout [s]."""
    return (now_s - stamp_s) > input_timeout


# ---------------------------------------------------------------- settings
# The controller's settings with their ranges, shared by the node's parameters (checked on
# set) and the settings a bag stores for replay: name -> (lo, hi, lo_open, kind, unit).
SETTINGS = {
    "gain": (0.0, 20.0, True, float, "1/s"),
    "k_neighbors": (1, 1000, False, int, "count"),
    "max_linear_speed": (0.0, 2.0, True, float, "m/s"),
    "max_angular_speed": (0.0, 6.3, True, float, "rad/s"),
    "input_timeout": (0.0, 10.0, True, float, "s"),
    "future_tolerance": (0.0, 10.0, False, float, "s"),
    "converged_translation": (0.0, 1.0, False, float, "m"),
    "converged_rotation": (0.0, 180.0, False, float, "deg"),
    "converged_steps": (1, 1000, False, int, "count"),
}
HAND_EYE_MAX_TRANSLATION = 10.0   # [m] per axis: the camera is on the arm, not kilometres away
HAND_EYE_MAX_ANGLE = 2 * np.pi    # [rad] per angle


def _number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def setting_problem(name: str, value) -> str | None:
    """Why `value` is not acceptable for the controller setting `name`, or None (unknown
    names are accepted: the caller checks its own)."""
    if name == "hand_eye":
        he = None if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") else list(value)
        if he is None or len(he) != 6 or not all(_number(v) and np.isfinite(v) for v in he):
            return f"hand_eye must be 6 finite numbers (x y z roll pitch yaw), got {value!r}"
        if max(abs(v) for v in he[:3]) > HAND_EYE_MAX_TRANSLATION or max(abs(v) for v in he[3:]) > HAND_EYE_MAX_ANGLE:
            return (f"hand_eye out of range (|x|, |y|, |z| <= {HAND_EYE_MAX_TRANSLATION:g} m, "
                    f"|roll|, |pitch|, |yaw| <= 2π rad), got {list(he)}")
        return None
    if name not in SETTINGS:
        return None
    lo, hi, lo_open, kind, unit = SETTINGS[name]
    ok = _number(value) and np.isfinite(value) and (kind is float or float(value) == int(value))
    if ok:
        ok = (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        return f"{name} must be {'an integer' if kind is int else 'a number'} in {'(' if lo_open else '['}{lo:g}, {hi:g}] [{unit}], got {value!r}"
    return None


def settings_problem(values: dict) -> str | None:
    """The first problem among {name: value} settings, or None."""
    for name, value in values.items():
        why = setting_problem(name, value)
        if why:
            return why
    return None


# ---------------------------------------------------------------- images and latents
IMAGE_MIN_SIDE = 16          # [px]
IMAGE_MAX_SIDE = 8192        # [px]
IMAGE_MAX_ASPECT = 4.0       # longer side / shorter side (32:9 panoramas are 3.6)


def image_size_problem(height: int, width: int) -> str | None:
    """Why an image of height x width cannot be a camera view, or None."""
    h, w = int(height), int(width)
    if min(h, w) < IMAGE_MIN_SIDE or max(h, w) > IMAGE_MAX_SIDE:
        return f"image size {w}x{h} outside {IMAGE_MIN_SIDE}..{IMAGE_MAX_SIDE} px per side"
    if max(h, w) / min(h, w) > IMAGE_MAX_ASPECT:
        return f"image size {w}x{h}: aspect ratio {max(h, w) / min(h, w):.1f} beyond {IMAGE_MAX_ASPECT:g}"
    return None


LATENT_NORM_MARGIN = 4.0      # bound = margin x the largest ‖z‖ seen in training


def latent_norm_record(*latents: np.ndarray, source: str = "") -> dict:
    """meta.json's `latent_norm`: the largest and the 99th-percentile ‖z‖ over the given
    latents (ψ of held-out images, φ of poses) and the bound the controller enforces."""
    n = np.concatenate([np.linalg.norm(np.asarray(z, np.float64).reshape(len(z), -1), axis=1) for z in latents])
    mx = float(n.max())
    return {"max": round(mx, 4), "p99": round(float(np.percentile(n, 99)), 4),
            "bound": round(LATENT_NORM_MARGIN * mx, 4), "count": int(n.size), "source": source}


def latent_norm_problem(z: np.ndarray, bound: float | None) -> str | None:
    """Why a finite latent is far outside what the model produces (‖z‖ > bound), or None."""
    if bound is None:
        return None
    n = float(np.linalg.norm(np.asarray(z, np.float64)))
    if n > bound:
        return f"latent norm {n:.4g} far outside the model's range (bound {bound:.4g})"
    return None


def future_problem(stamp_s: float, now_s: float, tolerance: float) -> str | None:
    """Why an input stamped stamp_s is refused at now_s: stamped more than `tolerance` [s]
    in the future (a camera on another clock would otherwise disable the staleness check)."""
    ahead = stamp_s - now_s
    if ahead > tolerance:
        return (f"input stamped {ahead:.3f} s in the future (tolerance {tolerance:g} s): "
                "the camera is not on the controller's clock")
    return None
