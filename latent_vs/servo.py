"""The servo controller's brain, free of ROS: the controller node, the demo and the offline
replay (latent_vs.replay) all run this one class.

    ctl = ServoController(law, Limits(0.1, 0.5), input_timeout=0.5, converged_translation=0.0002,
                          converged_rotation=0.02, converged_steps=5, hand_eye=np.eye(4))
    ctl.set_goal_latent(z_goal)                 # or set_goal(goal measurement)
    twist, state = ctl.update(z, stamp_s, now_s)  # on every input
    twist, state = ctl.tick(now_s)              # on a timer, for staleness

`twist` is (6,) = (v [m/s], ω [rad/s]) in the command frame, or None: publish nothing.
States: idle (disabled), no_goal (enabled, no goal: none yet or cleared), servoing,
converged, stale, fault. Entering any state other than servoing returns ONE zero twist, then
None until servoing resumes:
  * converged: the law's estimate of the camera's pose error was below
    `converged_translation` [m] and `converged_rotation` [deg] for `converged_steps`
    consecutive inputs; latched until a new goal is set or the controller is re-enabled (the
    arm stays still even if the error grows again);
  * stale: the input was older than `input_timeout` when it arrived, or no input came for
    `input_timeout` (tick; also right after enabling); servoing resumes with the next fresh input;
  * fault: a bad input (NaN/inf, wrong shape, a latent far outside the model's range, a
    capture stamp more than `future_tolerance` ahead) or a non-finite control output;
    servoing resumes with the next good input. `event` holds one line saying why, for the log.
A twist is never beyond the limits (safety.limit_twist scales it as a whole).

A control law reaches the controller as a MeasurementLaw: LatentLaw (MLVS on latents z),
PoseLaw (PBVS on the camera pose oT_c, for simulation) or ImageLaw (DVS on grey images).
Twists of the batched control laws are read as per-second velocities. Each law estimates the
camera's pose error Δr̂ = (t [m], θu [rad]), the current camera pose seen from the goal
(geometry.pose_difference's convention): `pose_error` after each input; `error_norm` is the
law's own scalar error (a diagnostic only).
"""
from __future__ import annotations

import numpy as np

from . import geometry
from .imageconv import fit_image
from .safety import (HAND_EYE_MAX_TRANSLATION, LATENT_NORM_MARGIN, ZERO_TWIST, Limits, future_problem,
                     input_problem, is_stale, latent_norm_problem, limit_twist, setting_problem)

IDLE, NO_GOAL, SERVOING, CONVERGED, STALE, FAULT = "idle", "no_goal", "servoing", "converged", "stale", "fault"
STATES = (IDLE, NO_GOAL, SERVOING, CONVERGED, STALE, FAULT)
METHODS = ("mlvs", "pbvs", "dvs")
_ONE = np.array([0])


def _set_gain(law, gain: float) -> None:
    if not hasattr(law, "gain"):
        raise ValueError(f"control law {type(law).__name__} has no settable gain")
    law.gain = float(gain)


class MeasurementLaw:
    """A single-task control law on one measurement y: set_goal(y*), step(y) -> camera twist
    (6,), error(y) -> float (a diagnostic norm), pose_error(y, v_cam) -> the estimated pose
    of the camera seen from the goal (6,) = (t [m], θu [rad]), which decides `converged`.
    Laws with estimate_from_step read it from this input's twist v_cam = step(y)."""
    kind = "base"
    error_units = ""
    estimate_from_step = False

    def pose_error(self, y, v_cam=None) -> np.ndarray:
        raise NotImplementedError

    def problem(self, y) -> str | None:
        return input_problem(y)

    @property
    def gain(self) -> float:
        return float(self.law.gain)

    @gain.setter
    def gain(self, value: float) -> None:
        _set_gain(self.law, value)


class LatentLaw(MeasurementLaw):
    """MLVS on latents (eq. 13): y = z = ψ(I) (D,), goal z* = ψ(I*); error ‖z − z*‖."""
    kind = "latent"
    error_units = "latent distance"

    def __init__(self, mlvs):
        self.law = mlvs
        self.latent_dim = int(mlvs.model.latent_dim) if getattr(mlvs, "model", None) is not None else None
        self.z_goal = None
        self.goal_estimate = None   # z*'s estimated pose (4, 4), in φ's goal frame (as Δr)
        self.norm_bound, self.norm_bound_source = self._norm_bound()

    def _norm_bound(self) -> tuple[float | None, str]:
        """The largest acceptable ‖z‖: meta.json's latent_norm.bound (recorded in training),
        else LATENT_NORM_MARGIN x the largest ‖φ(r)‖ over the pose bank."""
        model = getattr(self.law, "model", None)
        rec = (getattr(model, "meta", None) or {}).get("latent_norm") or {}
        if isinstance(rec.get("bound"), (int, float)) and rec["bound"] > 0:
            return float(rec["bound"]), "meta.json"
        bank = getattr(self.law, "bank", None)
        if model is not None and bank is not None and len(getattr(bank, "poses", ())):
            poses = np.asarray(bank.poses)[:: max(1, len(bank.poses) // 4096)]
            z = model.embed_poses(poses)
            return LATENT_NORM_MARGIN * float(np.linalg.norm(z, axis=1).max()), "pose bank (no latent_norm in meta.json)"
        return None, "none"

    def problem(self, y):
        return (input_problem(y, None if self.latent_dim is None else (self.latent_dim,))
                or latent_norm_problem(y, self.norm_bound))

    def warm_up(self, calls: int = 3) -> None:
        """Run the law a few times on φ's own latents, so that TorchScript's and functorch's
        first-call costs (seconds) are paid before the first camera image."""
        model = getattr(self.law, "model", None)
        if model is None:
            return
        saved = getattr(self.law, "z_goal", None)
        z = model.embed_poses(np.array([[0.0] * 6, [0.02, -0.01, 0.03, 0.05, 0.0, 0.1]]))
        self.law.set_goal_latent(z[:1])
        for _ in range(calls):
            self.law.step_latent(z[1])
        self.law.z_goal = saved

    def set_goal(self, z_goal):
        z_goal = np.asarray(z_goal, dtype=np.float32).reshape(-1)
        why = self.problem(z_goal)
        if why:
            raise ValueError(f"bad goal latent: {why}")
        self.z_goal = z_goal
        self.law.set_goal_latent(z_goal[None])
        self.goal_estimate = geometry.pose_to_matrix(self.law.estimate_pose(z_goal[None])[0])

    def step(self, z):
        return np.asarray(self.law.step_latent(np.asarray(z, np.float32)[None]), dtype=float).reshape(6)

    def error(self, z):
        return float(np.linalg.norm(np.asarray(z, float) - self.z_goal))

    def pose_error(self, z, v_cam=None):
        """The pose estimate of z relative to that of z* (both: the bank's nearest pose refined
        by Gauss–Newton on ‖φ(r) − z‖): zero (to rounding) when z = z*."""
        r_hat = self.law.estimate_pose(np.asarray(z, np.float32)[None])[0]
        return geometry.pose_difference(self.goal_estimate, geometry.pose_to_matrix(r_hat))

    @property
    def k(self):
        return getattr(self.law, "k", None)

    @k.setter
    def k(self, value):
        if hasattr(self.law, "k"):
            self.law.k = int(value)


class PoseLaw(MeasurementLaw):
    """A pose-based law (PBVS) on y = oT_c (4, 4); goal oT_c*; error ‖Δr‖ = ‖(c*t_c [m], θu [rad])‖."""
    kind = "pose"
    error_units = "‖(t [m], θu [rad])‖"

    def __init__(self, law):
        self.law = law
        self.goal = None

    def problem(self, y):
        return input_problem(y, (4, 4))

    def set_goal(self, T_goal):
        T_goal = np.asarray(T_goal, dtype=float)
        why = self.problem(T_goal)
        if why:
            raise ValueError(f"bad goal pose: {why}")
        self.goal = T_goal
        self.law.set_goal(None, T_goal)

    def step(self, T):
        return np.asarray(self.law.step(None, np.asarray(T, float)[None], _ONE), dtype=float).reshape(6)

    def error(self, T):
        return float(np.linalg.norm(geometry.pose_difference(self.goal, T)))

    def pose_error(self, T, v_cam=None):
        """The true pose difference (simulation)."""
        return geometry.pose_difference(self.goal, np.asarray(T, float))


class ImageLaw(MeasurementLaw):
    """A photometric law (DVS) on y = grey image (any size: centre-cropped and resized to the
    law's camera); error = RMS grey-level difference to I* / 255."""
    kind = "image"
    error_units = "RMS grey level / 255"
    estimate_from_step = True

    def __init__(self, law, goal_pose: np.ndarray | None = None):
        from .scene import SceneConfig, goal_pose as scene_goal
        self.law = law
        self.goal_pose = scene_goal(SceneConfig()) if goal_pose is None else goal_pose
        self.goal = None

    def _fit(self, img):
        img = np.asarray(img)
        if img.dtype != np.uint8 or img.ndim != 2:
            raise ValueError(f"expected a uint8 grey image, got {img.dtype} {img.shape}")
        cam = self.law.camera
        return img if cam is None else fit_image(img, cam.width, cam.height)

    def problem(self, y):
        y = np.asarray(y)
        if y.dtype != np.uint8 or y.ndim != 2 or y.size == 0:
            return f"expected a non-empty uint8 grey image, got {y.dtype} {y.shape}"
        return None

    def set_goal(self, img):
        why = self.problem(img)
        if why:
            raise ValueError(f"bad goal image: {why}")
        self.goal = self._fit(img)
        self.law.set_goal(self.goal[None], self.goal_pose)

    def step(self, img):
        return np.asarray(self.law.step(self._fit(img)[None], None, _ONE), dtype=float).reshape(6)

    def error(self, img):
        d = self._fit(img).astype(np.float32) - self.goal.astype(np.float32)
        return float(np.sqrt(np.mean(d * d)) / 255.0)

    def pose_error(self, img, v_cam=None):
        """The Gauss–Newton step itself: v = −λ L⁺ e ≈ −λ Δr near the goal, so Δr ≈ −v / λ."""
        v = self.step(img) if v_cam is None else np.asarray(v_cam, float)
        return -v / self.gain


def as_measurement_law(law) -> MeasurementLaw:
    """Wrap a control law: MLVS (has step_latent) -> LatentLaw; needs_pose -> PoseLaw; else ImageLaw."""
    if isinstance(law, MeasurementLaw):
        return law
    if hasattr(law, "step_latent"):
        return LatentLaw(law)
    if getattr(law, "needs_pose", False):
        return PoseLaw(law)
    return ImageLaw(law)


def make_law(method: str, model_dir: str | None = None, gain: float | None = None,
             k_neighbors: int | None = None) -> MeasurementLaw:
    """The controller node's laws by name: mlvs (latents; loads the model, raising
    ModelError naming the file when it is missing or mismatched), pbvs (sim pose), dvs (image)."""
    from .errors import UserError
    if method == "mlvs":
        try:
            from .control import mlvs
        except ImportError as e:
            raise UserError(f"method mlvs is not available in this installation ({e})") from None
        kw = {} if k_neighbors is None else {"k": int(k_neighbors)}
        law = mlvs.make(model_dir=model_dir, **kw)
    elif method in ("pbvs", "dvs"):
        from .control import methods
        law = methods.make(method)
    else:
        raise UserError(f"unknown method '{method}' (known: {', '.join(METHODS)})")
    m = as_measurement_law(law)
    if gain is not None:
        m.gain = gain
    return m


class ServoController:
    """Safety state machine around a MeasurementLaw (see the module docstring)."""

    def __init__(self, law, limits: Limits = Limits(), input_timeout: float = 0.5,
                 converged_translation: float = 0.0002, converged_rotation: float = 0.02,
                 converged_steps: int = 5, hand_eye: np.ndarray | None = None, enabled: bool = True,
                 future_tolerance: float = 0.1):
        """converged_translation [m], converged_rotation [deg]: bounds on the estimated pose
        error that must hold for converged_steps [count] consecutive inputs; an input stamped
        more than future_tolerance [s] ahead of now is refused (fault)."""
        self.law = as_measurement_law(law)
        self.limits = limits
        if not (input_timeout > 0):
            raise ValueError(f"input_timeout must be positive, got {input_timeout}")
        self.input_timeout = float(input_timeout)
        why = setting_problem("future_tolerance", future_tolerance)
        if why:
            raise ValueError(why)
        self.future_tolerance = float(future_tolerance)
        self.set_convergence(converged_translation, converged_rotation, converged_steps)
        self.set_hand_eye(np.eye(4) if hand_eye is None else hand_eye)
        self.enabled = bool(enabled)
        self.has_goal = False
        self._goal = None
        self._waiting()
        self.error_norm = float("nan")
        self.pose_error = np.full(6, np.nan)  # the law's estimated pose error for the last input
        self.small_steps = 0                  # consecutive inputs with a pose error within the bounds
        self.last_stamp: float | None = None  # capture time of the last input used [s]
        self.waiting_since: float | None = None  # servoing with no input yet: since when [s] (tick's clock)
        self.last_scale = 1.0                 # limit scaling of the last twist (1: within limits)
        self.event: str | None = None         # one line for the log when the state changes

    # ---------------------------------------------------------------- configuration
    def set_convergence(self, translation: float, rotation_deg: float, steps: int) -> None:
        """The bounds of `converged`: translation [m] and rotation [deg] of the estimated pose
        error, held for `steps` consecutive inputs (bounds of 0: never converged)."""
        for name, value in (("converged_translation", translation), ("converged_rotation", rotation_deg)):
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be >= 0, got {value}")
        if int(steps) != steps or steps < 1:
            raise ValueError(f"converged_steps must be an integer >= 1, got {steps}")
        self.converged_translation, self.converged_rotation = float(translation), float(rotation_deg)
        self.converged_steps = int(steps)

    def set_hand_eye(self, cmd_T_cam: np.ndarray) -> None:
        """The camera pose in the command frame (4x4); twists are mapped by cmd_V_cam."""
        T = np.asarray(cmd_T_cam, dtype=float)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError("hand_eye must be a finite 4x4 transform")
        if np.max(np.abs(T[:3, 3])) > HAND_EYE_MAX_TRANSLATION:
            raise ValueError(f"hand_eye translation {T[:3, 3].tolist()} beyond {HAND_EYE_MAX_TRANSLATION:g} m")
        R = T[:3, :3]
        if not np.allclose(R.T @ R, np.eye(3), atol=1e-6) or np.linalg.det(R) < 0:
            raise ValueError("hand_eye rotation is not a rotation matrix")
        self.hand_eye = T
        self._V = geometry.velocity_twist_matrix(T)

    def set_goal(self, goal) -> None:
        """A new goal measurement (z*, oT_c* or I* for the law's kind); clears 'converged'.
        The same goal again (e.g. a goal image re-sent to a new subscriber) changes nothing."""
        goal = np.asarray(goal)
        if self.has_goal and self._goal.shape == goal.shape and np.array_equal(self._goal, goal):
            return
        self.law.set_goal(goal)
        self._goal = goal.copy()
        self.has_goal = True
        self.small_steps = 0
        if self.state in (CONVERGED, NO_GOAL):
            self.state = SERVOING if self.enabled else IDLE
            self.last_stamp, self.waiting_since = None, None

    set_goal_latent = set_goal

    def clear_goal(self):
        """Forget the goal: one zero twist when the arm may be moving. Returns (twist | None, state)."""
        self.has_goal, self._goal, self.small_steps = False, None, 0
        if not self.enabled:
            self.event, self.state = "goal cleared", IDLE
            return None, IDLE
        return self._stop(NO_GOAL, "goal cleared: no goal, the arm stays still")

    def set_enabled(self, enabled: bool):
        """Start/stop servoing; disabling returns one zero twist. Returns (twist | None, state)."""
        self.enabled = bool(enabled)
        if not self.enabled:
            self.event = "disabled"
            self.state = IDLE
            return ZERO_TWIST.copy(), IDLE
        self.event = "enabled"
        self.state = NO_GOAL if not self.has_goal else SERVOING
        self.last_stamp, self.waiting_since = None, None
        self.small_steps = 0
        return None, self.state

    # ---------------------------------------------------------------- loop
    def _waiting(self) -> str:
        """The state while not servoing: idle (disabled) or no_goal (enabled, no goal yet)."""
        self.state = IDLE if not self.enabled else NO_GOAL
        return self.state

    def _stop(self, state: str, why: str):
        first = self.state != state
        self.state = state
        self.event = why if first else None
        self.small_steps = 0
        return (ZERO_TWIST.copy() if first else None), state

    def _reached(self, est: np.ndarray) -> str | None:
        """Count the inputs in a row whose estimated pose error is within the bounds; the
        converged event line once there are converged_steps of them."""
        t_mm, r_deg = 1e3 * np.linalg.norm(est[:3]), np.rad2deg(np.linalg.norm(est[3:]))
        within = t_mm < 1e3 * self.converged_translation and r_deg < self.converged_rotation
        self.small_steps = self.small_steps + 1 if within else 0
        if self.small_steps < self.converged_steps:
            return None
        return (f"converged: estimated pose error {t_mm:.3f} mm, {r_deg:.4f}° (below {1e3 * self.converged_translation:.3g} mm, "
                f"{self.converged_rotation:.3g}° for {self.small_steps} inputs in a row)")

    def to_command_frame(self, twist_cam: np.ndarray) -> np.ndarray:
        """cmd_V_cam @ twist: the same rigid motion expressed in the command frame."""
        return self._V @ np.asarray(twist_cam, dtype=float)

    def update(self, y, stamp_s: float | None = None, now_s: float | None = None):
        """One input (latent, pose or image) captured at stamp_s, received at now_s [s]
        (None: no staleness check). Returns (twist in the command frame | None, state)."""
        self.event = None
        if not self.enabled or not self.has_goal:
            return None, self._waiting()
        why = self.law.problem(y)
        if why is None and stamp_s is not None and now_s is not None:
            why = future_problem(stamp_s, now_s, self.future_tolerance)
        if why:
            return self._stop(FAULT, f"bad input: {why}")
        if stamp_s is not None and now_s is not None and is_stale(stamp_s, now_s, self.input_timeout):
            return self._stop(STALE, f"input is {now_s - stamp_s:.3f} s old (input_timeout {self.input_timeout} s)")
        self.last_stamp = stamp_s if stamp_s is not None else now_s
        err = self.law.error(y)
        if not np.isfinite(err):
            return self._stop(FAULT, f"error norm is {err}")
        self.error_norm = err
        v_cam = self.law.step(y) if self.law.estimate_from_step else None
        if v_cam is not None and not np.all(np.isfinite(v_cam)):
            return self._stop(FAULT, f"control law returned a non-finite twist {np.round(v_cam, 4).tolist()}")
        est = np.asarray(self.law.pose_error(y, v_cam), dtype=float).reshape(6)
        if not np.all(np.isfinite(est)):
            return self._stop(FAULT, f"pose error estimate is {np.round(est, 4).tolist()}")
        self.pose_error = est
        if self.state == CONVERGED:
            return None, CONVERGED
        why = self._reached(est)
        if why:
            return self._stop(CONVERGED, why)
        if v_cam is None:
            v_cam = self.law.step(y)
        if not np.all(np.isfinite(v_cam)):
            return self._stop(FAULT, f"control law returned a non-finite twist {np.round(v_cam, 4).tolist()}")
        twist, self.last_scale = limit_twist(self.to_command_frame(v_cam), self.limits)
        if self.state != SERVOING:
            self.event = f"servoing (was {self.state})"
        self.state = SERVOING
        return twist, SERVOING

    def report_fault(self, why: str):
        """A fault found outside the law (e.g. an image that cannot be decoded): stop the arm
        (one zero twist) when servoing is on. Returns (twist | None, state)."""
        self.event = None
        if not self.enabled or not self.has_goal:
            return None, self._waiting()
        return self._stop(FAULT, why)

    def tick(self, now_s: float):
        """Staleness check on a timer: no input for input_timeout while servoing -> stale
        (also when none came at all since servoing started: counted from the first tick)."""
        self.event = None
        if self.state != SERVOING:
            return None, self.state
        if self.last_stamp is None:
            if self.waiting_since is None or now_s < self.waiting_since:
                self.waiting_since = now_s
            if is_stale(self.waiting_since, now_s, self.input_timeout):
                return self._stop(STALE, f"no input received within input_timeout ({self.input_timeout} s) "
                                         "after servoing started")
        elif is_stale(self.last_stamp, now_s, self.input_timeout):
            return self._stop(STALE, f"no input for {now_s - self.last_stamp:.3f} s (input_timeout {self.input_timeout} s)")
        return None, self.state
