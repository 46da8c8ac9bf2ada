"""Safety rules of the servo controller, kept apart from any control law and from ROS.

  * limits:    a twist is never sent beyond `max_linear_speed` [m/s] or `max_angular_speed`
               [rad/s]; a twist over a limit is scaled as a whole, so its direction is kept;
  * staleness: an input older than `input_timeout` [s] stops the arm (one zero twist);
  * faults:    a non-finite input or output (NaN, inf), or an input of the wrong shape,
               stops the arm (one zero twist) and the controller waits for good input.
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
