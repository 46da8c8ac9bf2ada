"""`latent-vs replay BAG`: test the servo on recorded data before the arm moves.

Offline (default): the bag's images go through the same encoder (LatentModel.encode, the
encoder node's ψ) and the same controller (servo.ServoController around the control law,
the controller node's brain) as on the robot, with no middleware, as fast as the CPU allows.
Written to --out (default BAG_replay/):
  replay.csv    one row per image: the commanded twist, the controller state, the latent
                error ‖z − z*‖; the recorded twist for that image and the difference when the
                bag has /cmd_twist; with ground-truth poses: the true pose error and the angle
                between the commanded twist and the PBVS twist on the true pose;
  replay.png    these against time;
  summary.json  counts, agreement statistics, throughput (written last: its presence means
                the replay finished).

Live (--publish): republishes the bag's topics over ROS 2 at the recorded timing (times
--rate), so the nodes run from a bag exactly as from a camera. That part is ROS code and lives
in latent_vs/ros/bag_publisher.py (its main); `latent-vs replay BAG --publish` is routed there
by cli.py, and this module only declares its options (build_parser), so one --help shows both.

The goal image I*: --goal FILE, else --goal-time T (the bag image nearest T s after the
start), else the bag's /goal_image topic (what the recorder stored), else its last image.
"""
from __future__ import annotations

import os
import argparse
import csv
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import bags, geometry
from .errors import UserError
from .threads import quiet_threads

METHODS = ("mlvs", "pbvs", "dvs")
RUN_KEY = "latent_vs.run"          # custom_data key: JSON of the recorded run's controller settings


# ---------------------------------------------------------------- the node pair, no middleware

@dataclass
class ServoSettings:
    """The controller settings of a run (stored in the bag's metadata by the recorder, so
    that a replay can reproduce the run's twists)."""
    method: str = "mlvs"
    model_dir: str | None = None           # None: models/default
    gain: float | None = 0.5               # [1/s] (the controller node's defaults throughout)
    k_neighbors: int | None = 50
    max_linear_speed: float = 0.10         # [m/s]
    max_angular_speed: float = 0.50        # [rad/s]
    converged_translation: float = 0.0002  # [m]
    converged_rotation: float = 0.02       # [deg]
    converged_steps: int = 5
    input_timeout: float = 0.5             # [s]
    hand_eye: tuple = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)   # camera pose in the command frame: x y z [m] r p y [rad]

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    def problem(self) -> str | None:
        """Why these settings cannot run the controller (the node's parameter checks,
        latent_vs.safety.SETTINGS), or None."""
        from .safety import settings_problem
        if self.method not in METHODS:
            return f"method must be one of {', '.join(METHODS)}, got {self.method!r}"
        if self.model_dir is not None and not isinstance(self.model_dir, str):
            return f"model_dir must be a path, got {self.model_dir!r}"
        values = {k: v for k, v in self.__dict__.items() if k not in ("method", "model_dir")}
        if values.get("gain") is None:
            values.pop("gain", None)
        if values.get("k_neighbors") is None:
            values.pop("k_neighbors", None)
        return settings_problem(values)

    @classmethod
    def from_json(cls, s: str, warn: bool = True) -> "ServoSettings":
        """Settings stored by a recorder; a bag from before the pose-error stop stores
        converged_error (a latent distance): that key is ignored, with one warning line (warn)."""
        d = json.loads(s)
        if not isinstance(d, dict):
            raise ValueError(f"not a JSON object: {s[:80]!r}")
        if isinstance(d.get("hand_eye"), list):
            d["hand_eye"] = tuple(d["hand_eye"])
        if "converged_error" in d and warn:
            print(f"latent-vs replay: warning: the bag's converged_error ({d['converged_error']}) is no longer a "
                  f"setting; the controller stops on converged_translation/converged_rotation "
                  f"(defaults {cls.converged_translation} m, {cls.converged_rotation}°)", file=sys.stderr)
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class ServoPipeline:
    """What the encoder node and the controller node compute for one image, in-process:
    I -> y (z = ψ(I) for MLVS; the true pose for PBVS; the image for DVS) -> ServoController."""

    def __init__(self, settings: ServoSettings, law=None):
        """`law`: an already built servo.MeasurementLaw of settings.method (a loaded model and
        pose bank, reused across runs); its gain and K are set from the settings."""
        from .safety import Limits
        from .servo import ServoController, as_measurement_law, make_law
        self.settings = settings
        why = settings.problem()
        if why:
            raise UserError(f"bad controller settings: {why}")
        try:
            if law is None:
                self.law = make_law(settings.method, settings.model_dir, settings.gain, settings.k_neighbors)
            else:
                self.law = as_measurement_law(law)
                if self.law.kind != {"mlvs": "latent", "pbvs": "pose", "dvs": "image"}[settings.method]:
                    raise ValueError(f"the given law is a {self.law.kind} law, not {settings.method}")
                if settings.gain is not None:
                    self.law.gain = settings.gain
                if settings.k_neighbors is not None and self.law.kind == "latent":
                    self.law.k = settings.k_neighbors
            self.controller = ServoController(
                self.law, Limits(settings.max_linear_speed, settings.max_angular_speed),
                input_timeout=settings.input_timeout, converged_translation=settings.converged_translation,
                converged_rotation=settings.converged_rotation, converged_steps=settings.converged_steps,
                hand_eye=geometry.rpy_to_matrix(*[float(x) for x in settings.hand_eye]))
        except (ValueError, TypeError) as e:
            raise UserError(f"bad controller settings: {e}") from None
        self.kind = self.law.kind
        self.model = getattr(self.law.law, "model", None) if self.kind == "latent" else None

    @property
    def needs_pose(self) -> bool:
        return self.kind == "pose"

    def measure(self, images: np.ndarray, poses: list | None = None) -> list:
        """The controller inputs y for a batch of images (B, H, W) (and their true poses)."""
        if self.kind == "latent":
            return list(self.model.encode(images))          # the encoder node's ψ
        if self.kind == "pose":
            return list(poses)
        return list(images)

    def set_goal(self, image: np.ndarray | None, pose: np.ndarray | None) -> np.ndarray | None:
        """Set I* (or oT_c* for PBVS). Returns z* for MLVS."""
        if self.kind == "pose":
            if pose is None:
                raise UserError("the pbvs method needs the goal pose (a bag with camera poses)")
            self.controller.set_goal(pose)
            return None
        if self.kind == "latent":
            z = self.model.encode(image[None])[0]
            self.controller.set_goal(z)
            return z
        self.controller.set_goal(image)
        return None

    def to_camera_frame(self, twist: np.ndarray) -> np.ndarray:
        """A commanded twist (command frame, hand_eye) back in the camera frame."""
        return geometry.velocity_twist_matrix(geometry.inverse(self.controller.hand_eye)) @ np.asarray(twist, float)

    def step(self, y, stamp_s: float | None, now_s: float | None = None):
        """-> (twist (6,) or None: nothing published, state, error norm)."""
        twist, state = self.controller.update(y, stamp_s, now_s)
        return twist, state, self.controller.error_norm


# ---------------------------------------------------------------- offline replay

@dataclass
class ReplayResult:
    rows: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    has_pose: bool = False
    has_recorded: bool = False


def _pbvs_twist(goal_pose: np.ndarray, T: np.ndarray) -> np.ndarray:
    """The PBVS direction on the true pose: -L_r⁻¹ Δr (eq. 5), gain 1 (control/pbvs.py)."""
    from .control.pbvs import PBVS
    law = PBVS(gain=1.0)
    law.set_goal(None, goal_pose)
    return law.step(None, T[None], np.array([0]))[0]


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < 1e-12 or nb < 1e-12:
        return float("nan")
    return float(np.degrees(np.arccos(np.clip(a @ b / (na * nb), -1.0, 1.0))))


def _read_goal_file(path: str) -> np.ndarray:
    import cv2
    if not os.path.isfile(path):
        raise UserError(f"goal image not found: {path}")
    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise UserError(f"goal image is not a readable image file: {path}")
    return img


class _Images:
    """Decodes the image topic's messages to grey arrays, with errors naming the message."""

    def __init__(self, bag: bags.Bag, topic: str, encoding: str | None):
        self.bag, self.topic, self.encoding = bag, topic, encoding

    def decode(self, m: bags.Message, what: str) -> tuple[np.ndarray, int]:
        msg = self.bag.decode(m)
        try:
            img = bags.image_from_msg(msg, self.encoding)
        except ValueError as e:
            raise UserError(f"{what} on {m.topic} in bag {self.bag.path}: {e}") from None
        st = bags.stamp_ns(msg)
        return img, (st if st > 0 else m.t_ns)


def _stamped_table(bag: bags.Bag, topic: str | None, convert) -> tuple[dict, np.ndarray, list, list]:
    """All messages of a small topic: {header stamp: value}, log times, values and header
    stamps (None when unstamped), in log order."""
    by_stamp, log_t, values, stamps = {}, [], [], []
    if topic is None:
        return by_stamp, np.zeros(0, np.int64), values, stamps
    for m in bag.messages([topic], stop_at_damage=True):
        msg = bag.decode(m)
        try:
            v = convert(msg)
        except (ValueError, AttributeError) as e:
            raise UserError(f"bad {m.msgtype} on {topic} in bag {bag.path}: {e}") from None
        st = bags.stamp_ns(msg) if hasattr(msg, "header") else None
        if st is not None:
            by_stamp[st] = v
        log_t.append(m.t_ns)
        values.append(v)
        stamps.append(st)
    return by_stamp, np.asarray(log_t, np.int64), values, stamps


def _nearest(log_t: np.ndarray, values: list, t: int, tol_ns: int):
    if len(values) == 0:
        return None
    i = int(np.clip(np.searchsorted(log_t, t), 1, len(log_t) - 1)) if len(log_t) > 1 else 0
    if len(log_t) > 1 and abs(log_t[i - 1] - t) <= abs(log_t[i] - t):
        i -= 1
    return values[i] if abs(int(log_t[i]) - t) <= tol_ns else None


def replay_offline(bag_path: str, settings: ServoSettings | None = None, goal: str | None = None,
                   goal_time: float | None = None, image_topic: str | None = None,
                   pose_topic: str | None = None, twist_topic: str | None = None,
                   encoding: str | None = None, batch_size: int = 16, max_images: int | None = None,
                   progress: bool = True, law=None) -> ReplayResult:
    """Run the encoder + controller over the bag's images; see the module docstring.
    `law`: a prebuilt control law to reuse (see ServoPipeline)."""
    t_start = time.perf_counter()
    with one_blas_thread(), bags.Bag(bag_path) as bag:
        bag.require_messages()
        src = _BagInputs.read(bag, image_topic, pose_topic, twist_topic, encoding)
        settings, recorded = _settings_for(bag, settings)
        if settings.method == "pbvs" and not src.poses[2]:
            raise UserError(f"the pbvs method needs camera poses; bag {bag.path} has no {bags.POSE} topic")
        goal_img, goal_pose, goal_src = _find_goal(bag, src, goal, goal_time)
        pipe = ServoPipeline(settings, law)   # the model is loaded once the bag is known to be usable
        if goal_pose is None and "latent_vs.goal_pose" in bag.custom_data:
            goal_pose = np.array(json.loads(bag.custom_data["latent_vs.goal_pose"]), float).reshape(4, 4)
        if goal_pose is None and src.poses[2]:
            # a goal from outside the bag: assume the model's (or the default scene's) desired pose
            from .scene import SceneConfig, goal_pose as scene_goal
            goal_pose = pipe.model.goal_pose if pipe.model is not None else scene_goal(SceneConfig())
        pipe.set_goal(goal_img, goal_pose)
        run = _ImageRun(pipe, goal_pose, bag_path, batch_size)
        run.run(bag, src, max_images, progress)
        corruption = bag.corruption
    if corruption and not run.rows:
        raise bags.BagError(f"{corruption}; no image could be replayed before it")
    tw_stats = _attach_recorded(run.rows, run.z_replayed, src.latents, src.input_log(pipe.kind), *src.twists[1:])
    res = ReplayResult(rows=run.rows, has_pose=any(r["t_err_m"] == r["t_err_m"] for r in run.rows),
                       has_recorded=bool(src.twists[2]))
    res.summary = {"bag": str(Path(bag_path).absolute()), "images": len(run.rows), "image_topic": src.image_topic,
                   "pose_topic": src.pose_topic, "twist_topic": src.twist_topic, "goal": goal_src,
                   "settings": settings.__dict__, "error_units": pipe.law.error_units,
                   "settings_from_bag": recorded is not None and settings == recorded,
                   **_run_summary(run, time.perf_counter() - t_start, batch_size)}
    _add_agreement(res.summary, run.rows, tw_stats if src.twists[2] else None, corruption)
    return res


def one_blas_thread():
    """NumPy's BLAS on one thread while the controller runs: its matrices are small, and two
    spinning BLAS threads collapse on a loaded 2-core PC (also when numpy was imported first)."""
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=1, user_api="blas")


@dataclass
class _BagInputs:
    """The bag's topics for a replay: images (decoded on demand), and the small topics read
    whole: true poses, recorded twists and latents, matched to images by header stamp."""
    images: _Images
    image_topic: str
    goal_topics: list
    pose_topic: str | None
    twist_topic: str | None
    poses: tuple      # ({stamp: T}, log times, values, stamps)
    twists: tuple     # (_, log times, values, stamps)
    latents: dict     # image stamp -> (log time, recorded z)

    @classmethod
    def read(cls, bag, image_topic, pose_topic, twist_topic, encoding) -> _BagInputs:
        goal_topics = [t.name for t in bag.topics.values()
                       if t.name.rstrip("/").endswith("goal_image") and t.msgtype in bags.IMAGE_TYPES and t.count]
        img_topic = bag.find_topic(bags.IMAGE_TYPES, "image", image_topic, "--image-topic", prefer="/image",
                                   exclude=goal_topics)
        if bag.topics[img_topic].count == 0:
            raise UserError(f"image topic {img_topic} in bag {bag.path} has no messages")
        pose_t = bag.find_topic((bags.POSE,), "camera pose", pose_topic, "--pose-topic",
                                prefer="/camera_pose", required=False)
        twist_t = bag.find_topic(bags.TWIST_TYPES, "twist", twist_topic, "--twist-topic",
                                 prefer="/cmd_twist", required=False)
        poses = _stamped_table(bag, pose_t, bags.pose_from_msg)
        twists = _stamped_table(bag, twist_t, bags.twist_from_msg)
        latent_t = bag.find_topic((bags.LATENT,), "latent", None, prefer="/latent", required=False)
        latents = {}
        if latent_t is not None:
            for m in bag.messages([latent_t], stop_at_damage=True):
                msg = bag.decode(m)
                st = bags.latent_stamp_ns(msg)
                if st is not None and st not in latents:
                    latents[st] = (m.t_ns, bags.latent_from_msg(msg))
        return cls(_Images(bag, img_topic, encoding), img_topic, goal_topics, pose_t, twist_t, poses, twists, latents)

    def pose_at(self, stamp: int, log_ns: int):
        """The true pose with this header stamp, else the one logged within 50 ms, else None."""
        T = self.poses[0].get(stamp)
        return T if T is not None else _nearest(self.poses[1], self.poses[2], log_ns, 50_000_000)

    def input_log(self, kind: str) -> dict:
        """Image stamp -> log time of the controller's recorded input (latent or pose)."""
        if kind == "latent":
            return {st: v[0] for st, v in self.latents.items()}
        if kind == "pose":
            return {st: int(t) for st, t in zip(self.poses[3], self.poses[1]) if st is not None}
        return {}


def _settings_for(bag, settings: ServoSettings | None) -> tuple[ServoSettings, ServoSettings | None]:
    """(the settings to replay with, the bag's stored settings or None)."""
    recorded = None
    if RUN_KEY in bag.custom_data:
        try:
            recorded = ServoSettings.from_json(bag.custom_data[RUN_KEY])
        except (ValueError, TypeError) as e:
            raise UserError(f"bag {bag.path}: the stored controller settings ({RUN_KEY}) cannot be read: "
                            f"{bags._one_line(e)}") from None
    if settings is None:
        settings = recorded or ServoSettings()
        why = settings.problem()
        if why:
            raise UserError(f"bag {bag.path}: the stored controller settings are refused: {why} "
                            "(give the setting as an option, e.g. --gain, to replay anyway)")
    return settings, recorded


def _find_goal(bag, src: _BagInputs, goal: str | None, goal_time: float | None):
    """(I*, its true pose or None, where it came from): --goal FILE, else --goal-time T, else
    the bag's goal_image topic, else its last image."""
    if goal is not None:
        return _read_goal_file(goal), None, f"file {goal}"
    img_topic, gm = src.image_topic, None
    if goal_time is not None:
        target = bag.start_ns + int(goal_time * 1e9)
        for m in bag.messages([img_topic], stop_at_damage=True):
            if gm is None or abs(m.t_ns - target) < abs(gm.t_ns - target):
                gm = m
        goal_src = f"{img_topic} at {(gm.t_ns - bag.start_ns) / 1e9:.3f} s" if gm is not None else ""
    else:
        topic = src.goal_topics[:1] or [img_topic]
        for m in bag.messages(topic, stop_at_damage=True):
            gm = m
        goal_src = f"{src.goal_topics[0]} in the bag" if src.goal_topics else f"last image on {img_topic}"
    if gm is None:
        raise bags.BagError(f"{bag.corruption or f'bag {bag.path} is damaged'}; no image could be read before it")
    goal_img, goal_stamp = src.images.decode(gm, f"goal image ({goal_src})")
    goal_pose = src.poses[0].get(goal_stamp)
    if goal_pose is None and gm.topic == img_topic:
        goal_pose = _nearest(src.poses[1], src.poses[2], gm.t_ns, 50_000_000)
    return goal_img, goal_pose, goal_src


class _ImageRun:
    """The bag's images through the pipeline: encoded in batches (the encoder is the cost),
    the controller stepping one image at a time. Collects the rows and the timings."""

    def __init__(self, pipe: ServoPipeline, goal_pose, bag_path: str, batch_size: int):
        self.pipe, self.goal_pose, self.bag_path, self.batch_size = pipe, goal_pose, bag_path, batch_size
        self.rows: list[dict] = []
        self.z_replayed: list = []
        self.t_enc = self.t_ctl = self.t_read = self.t_loop = 0.0
        self.first_stamp = None
        self.buf: list = []

    def run(self, bag, src: _BagInputs, max_images: int | None, progress: bool) -> None:
        count = bag.topics[src.image_topic].count
        n_total = count if max_images is None else min(max_images, count)
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=n_total, desc="replay", unit="img", file=sys.stderr, leave=False)
        t_loop = tr = time.perf_counter()
        for idx, m in enumerate(bag.messages([src.image_topic], stop_at_damage=True)):
            if max_images is not None and idx >= max_images:
                break
            img, st = src.images.decode(m, f"image {idx}")
            self.buf.append((img, st, m.t_ns, src.pose_at(st, m.t_ns)))
            if len(self.buf) >= self.batch_size:
                self.t_read += time.perf_counter() - tr
                self.flush(bar)
                tr = time.perf_counter()
        self.t_read += time.perf_counter() - tr
        self.flush(bar)
        self.t_loop = time.perf_counter() - t_loop
        if bar is not None:
            bar.close()

    def flush(self, bar) -> None:
        if not self.buf:
            return
        pipe = self.pipe
        imgs, poses = [b[0] for b in self.buf], [b[3] for b in self.buf]
        t0 = time.perf_counter()
        same = all(i.shape == imgs[0].shape for i in imgs)
        ys = pipe.measure(np.stack(imgs), poses) if same else \
            sum((pipe.measure(i[None], [p]) for i, p in zip(imgs, poses)), [])
        self.t_enc += time.perf_counter() - t0
        for (img, st, log_ns, T), y in zip(self.buf, ys):
            self.first_stamp = st if self.first_stamp is None else self.first_stamp
            if pipe.needs_pose and T is None:
                raise UserError(f"no camera pose for the image at {st} ns in bag {self.bag_path} (pbvs needs one per image)")
            tc = time.perf_counter()
            twist, state, err = pipe.step(y, st * 1e-9)
            self.t_ctl += time.perf_counter() - tc
            self.rows.append(_row(len(self.rows), st, self.first_stamp, log_ns, twist, state, err, T, self.goal_pose,
                                  None if twist is None else pipe.to_camera_frame(twist)))
            self.z_replayed.append(y if pipe.kind == "latent" else None)
        if bar is not None:
            bar.update(len(self.buf))
        self.buf.clear()


def _run_summary(run: _ImageRun, wall: float, batch_size: int) -> dict:
    rows, n = run.rows, len(run.rows)
    return {"published": sum(1 for r in rows if r["published"]),
            "final_state": rows[-1]["state"] if rows else None,
            "latent_error_first": rows[0]["error"] if rows else None,
            "latent_error_last": rows[-1]["error"] if rows else None,
            "throughput": {"images_per_s": n / run.t_loop if run.t_loop > 0 else None,   # read + decode + encode + control
                           "images_per_s_encode_control": n / (run.t_enc + run.t_ctl) if run.t_enc + run.t_ctl > 0 else None,
                           "setup_s": wall - run.t_loop,    # open the bag, load the model and pose bank, goal
                           "read_decode_ms_per_image": 1e3 * run.t_read / max(n, 1),
                           "encode_ms_per_image": 1e3 * run.t_enc / max(n, 1),
                           "control_ms_per_image": 1e3 * run.t_ctl / max(n, 1),
                           "batch_size": batch_size, "wall_s": wall,
                           "torch_threads": _torch_threads()}}


def _add_agreement(s: dict, rows: list[dict], tw_stats: dict | None, corruption: str | None) -> None:
    """Agreement with PBVS on the true pose, with the recorded twists and latents."""
    if any(r["t_err_m"] == r["t_err_m"] for r in rows):
        ang = np.array([r["angle_deg"] for r in rows], float)
        ang = ang[np.isfinite(ang)]
        s["agreement_with_pbvs"] = {
            "twists_compared": int(ang.size),
            "angle_deg_median": float(np.median(ang)) if ang.size else None,
            "angle_deg_p90": float(np.percentile(ang, 90)) if ang.size else None,
            "fraction_within_45deg": float(np.mean(ang < 45)) if ang.size else None,
            "fraction_within_90deg": float(np.mean(ang < 90)) if ang.size else None,
            "t_err_m_first": rows[0]["t_err_m"], "t_err_m_last": rows[-1]["t_err_m"],
            "r_err_deg_first": rows[0]["r_err_deg"], "r_err_deg_last": rows[-1]["r_err_deg"]}
    if tw_stats is not None:
        s["recorded_twists"] = tw_stats
    if corruption:
        s["corruption"] = corruption + f" (the {len(rows)} images before it were replayed)"
    dz = np.array([r["rec_latent_diff"] for r in rows], float)
    dz = dz[np.isfinite(dz)]
    if dz.size:
        s["recorded_latents"] = {"compared": int(dz.size), "max_norm_diff": float(dz.max())}


def _torch_threads():
    try:
        import torch
        return torch.get_num_threads()
    except Exception:
        return None


MATCH_WINDOW = 5   # a recorded twist answers one of the last MATCH_WINDOW inputs logged before it


def _attach_recorded(rows: list[dict], z_replayed: list, latents: dict, input_log: dict, tw_log: np.ndarray,
                     tw_vals: list, tw_stamps: list) -> dict:
    """Pair the recorded twists with the images they answered, and the recorded latents
    with their images (exact, by the image stamp in the latent's label).

    A twist whose header stamp is an image's belongs to it. The controller node stamps its
    twists when it publishes them, so otherwise a twist belongs to one of the last
    MATCH_WINDOW images whose controller input (latent for MLVS, camera pose for PBVS, image
    for DVS) was logged before it: the newest, unless an older one's replayed twist equals
    it (the controller lagged a frame behind), or one logged up to half a frame after it
    (the recorder took the twist first). A faithful replay gives a
    difference of ~0 for every recorded twist; one that is not shows the difference. Zero
    twists with no zero replayed twist near them are the controller's stop commands (shut
    down, disabled), and twists for inputs where the replayed controller sent nothing
    (e.g. it had converged), are counted apart. Returns the comparison statistics."""
    anchors = np.array([input_log.get(r["stamp_ns"], r["log_ns"]) for r in rows], np.int64)
    order = np.argsort(anchors, kind="stable")
    # a recorder may log an input a little after the twist it caused (callback order in a
    # multi-threaded executor): exact matches are also looked for up to half a frame later
    slack = int(0.5 * np.median(np.diff(anchors[order]))) if len(rows) > 2 else 0
    cmd = np.array([[r[f"cmd_{c}"] for c in TWIST_COLS] for r in rows], float).reshape(-1, 6)
    row_of_stamp = {r["stamp_ns"]: i for i, r in enumerate(rows)}
    best: dict[int, tuple[float, np.ndarray]] = {}
    diffs, stops, unmatched, silent = [], 0, 0, 0
    for t_log, v, st in zip(tw_log, tw_vals, tw_stamps):
        v = np.asarray(v, float)
        i = row_of_stamp.get(st)
        if i is None:
            k = int(np.searchsorted(anchors[order], t_log, side="right"))
            cands = [int(j) for j in order[max(0, k - MATCH_WINDOW):k]]
            if not cands:
                unmatched += 1                  # logged before any replayed input
                continue
            i = cands[-1]                       # the newest input before the twist, unless
            tol = 1e-9 + 1e-4 * float(np.max(np.abs(v)))   # an older one gave this twist (lag)
            if not (rows[i]["published"] and float(np.max(np.abs(cmd[i] - v))) <= tol):
                k2 = int(np.searchsorted(anchors[order], t_log + slack, side="right"))
                near = [int(j) for j in order[max(0, k - MATCH_WINDOW):k2]]
                exact = [j for j in near if rows[j]["published"] and float(np.max(np.abs(cmd[j] - v))) <= tol]
                i = exact[-1] if exact else i
        if rows[i]["published"]:
            d = float(np.max(np.abs(cmd[i] - v)))
            if not np.any(v) and d > 0:
                stops += 1
            else:
                diffs.append(d)
        else:
            d = float("nan")                    # the replayed controller sent nothing for this input
            silent += 1
        if i not in best or not (best[i][0] <= d):
            best[i] = (d, v)
    for i, r in enumerate(rows):
        d, v = best.get(i, (float("nan"), None))
        r.update({f"rec_{c}": (float(x) if v is not None else float("nan")) for c, x in
                  zip(TWIST_COLS, v if v is not None else _NAN6)})
        r["rec_diff"] = d
        z, zr = z_replayed[i], latents.get(r["stamp_ns"])
        r["rec_latent_diff"] = float(np.linalg.norm(z - zr[1])) if (z is not None and zr is not None
                                                                    and zr[1].shape == z.shape) else float("nan")
    d = np.array(diffs, float)
    return {"recorded": len(tw_vals), "compared": int(d.size), "stop_twists": stops, "unmatched": unmatched,
            "replay_sent_nothing": silent,
            "max_abs_diff": float(d.max()) if d.size else None,
            "median_abs_diff": float(np.median(d)) if d.size else None,
            "match": "header stamp, else the newest input logged before the twist (or an older/just later one that gave it exactly)"}


_NAN6 = [float("nan")] * 6
TWIST_COLS = ("vx", "vy", "vz", "wx", "wy", "wz")


def _row(i, stamp, first_stamp, log_ns, twist, state, err, T, goal_pose, twist_cam) -> dict:
    r = {"index": i, "t_s": (stamp - first_stamp) * 1e-9, "stamp_ns": stamp, "log_ns": log_ns,
         "state": state, "published": int(twist is not None), "error": err}
    tw = _NAN6 if twist is None else [float(x) for x in twist]
    r.update({f"cmd_{c}": v for c, v in zip(TWIST_COLS, tw)})
    if T is not None and goal_pose is not None:
        t_err, r_err = geometry.error_metrics(goal_pose, T)
        v_pbvs = _pbvs_twist(goal_pose, T)
        r.update({"t_err_m": float(t_err), "r_err_deg": float(np.degrees(r_err))})
        r.update({f"pbvs_{c}": float(v) for c, v in zip(TWIST_COLS, v_pbvs)})
        if twist_cam is not None:
            tw = np.asarray(twist_cam, float)    # PBVS's twist is a camera twist
            r.update({"angle_v_deg": _angle_deg(tw[:3], v_pbvs[:3]), "angle_w_deg": _angle_deg(tw[3:], v_pbvs[3:]),
                      "angle_deg": _angle_deg(tw, v_pbvs)})
        else:
            r.update({"angle_v_deg": math.nan, "angle_w_deg": math.nan, "angle_deg": math.nan})
    else:
        r.update({"t_err_m": math.nan, "r_err_deg": math.nan})
        r.update({f"pbvs_{c}": math.nan for c in TWIST_COLS})
        r.update({"angle_v_deg": math.nan, "angle_w_deg": math.nan, "angle_deg": math.nan})
    return r


# ---------------------------------------------------------------- outputs (temp name, then rename)

def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_csv(rows: list[dict], path: Path) -> None:
    def w(tmp):
        with open(tmp, "w", newline="") as f:
            cw = csv.DictWriter(f, fieldnames=list(rows[0].keys()) if rows else ["index"])
            cw.writeheader()
            for r in rows:
                cw.writerow({k: (f"{v:.9g}" if isinstance(v, float) else v) for k, v in r.items()})
    _atomic_write(path, w)


def plot(res: ReplayResult, path: Path, title: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = res.rows
    t = np.array([r["t_s"] for r in rows])
    col = lambda k: np.array([r[k] for r in rows], float)  # noqa: E731
    n = 3 + int(res.has_pose)
    fig, ax = plt.subplots(n, 1, figsize=(7.5, 2.0 * n + 0.6), sharex=True)
    units = res.summary.get("error_units", "")
    ax[0].plot(t, col("error"), color="k", lw=1.2,
               label="‖z − z*‖ (replayed)" if units == "latent distance" else f"controller error {units}")
    ax[0].set_ylabel("latent error" if units == "latent distance" else "error")
    if res.has_pose:
        a2 = ax[0].twinx()
        a2.plot(t, col("t_err_m") * 100, color="tab:blue", lw=0.9, ls="--", label="true t error [cm]")
        a2.plot(t, col("r_err_deg"), color="tab:red", lw=0.9, ls="--", label="true θu error [°]")
        a2.set_ylabel("true error [cm, °]")
        a2.legend(loc="upper right", fontsize=7)
    ax[0].legend(loc="upper center", fontsize=7)
    colors = ["tab:blue", "tab:orange", "tab:green"]
    from matplotlib.lines import Line2D
    for k, (part, unit) in enumerate((("v", "m/s"), ("w", "rad/s"))):
        a = ax[1 + k]
        for j, c in enumerate("xyz"):
            if res.has_recorded:
                a.plot(t, col(f"rec_{part}{c}"), color=colors[j], lw=3.5, alpha=0.3)
            a.plot(t, col(f"cmd_{part}{c}"), color=colors[j], lw=1.0)
        sym = "v" if part == "v" else "ω"
        a.set_ylabel(f"{sym} [{unit}]")
        a.axhline(0, color="grey", lw=0.5)
        handles = [Line2D([], [], color=colors[j], lw=1.5, label=f"{sym}_{c}") for j, c in enumerate("xyz")]
        handles.append(Line2D([], [], color="grey", lw=1.0, label="replayed"))
        if res.has_recorded:
            handles.append(Line2D([], [], color="grey", lw=3.5, alpha=0.3, label="recorded"))
        a.legend(handles=handles, loc="upper right", fontsize=6, ncol=len(handles))
    if res.has_pose:
        a = ax[3]
        a.plot(t, col("angle_deg"), color="k", lw=1.1, label="6-D twist")
        a.plot(t, col("angle_v_deg"), color="tab:blue", lw=0.8, label="v only")
        a.plot(t, col("angle_w_deg"), color="tab:red", lw=0.8, label="ω only")
        a.set_ylabel("angle to PBVS [°]")
        a.set_ylim(0, 180)
        a.legend(loc="upper right", fontsize=7, ncol=3)
    ax[-1].set_xlabel("time since the first image [s]")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"))
    plt.close(fig)


def write_outputs(res: ReplayResult, out_dir: Path, title: str = "") -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = out_dir / "summary.json"
    if summary_path.exists():
        summary_path.unlink()      # the old summary must not vouch for half-new outputs
    files = {"csv": out_dir / "replay.csv", "png": out_dir / "replay.png", "summary": summary_path}
    write_csv(res.rows, files["csv"])
    plot(res, files["png"], title)
    _atomic_write(summary_path, lambda tmp: tmp.write_text(json.dumps(res.summary, indent=2, default=_json_default)))
    return files


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# ---------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="latent-vs replay",
        description="Replay a ROS 2 bag: offline through the encoder and controller (default), or "
                    "--publish it live over ROS 2 at the recorded timing.")
    p.add_argument("bag", help="bag directory (or a .mcap / .db3 file)")
    g = p.add_argument_group("offline replay")
    g.add_argument("--goal", metavar="IMAGE", help="goal image file I* (default: see --goal-time)")
    g.add_argument("--goal-time", type=float, metavar="T",
                   help="goal = the bag image nearest T seconds after the bag's start "
                        "(default: the bag's /goal_image, else its last image)")
    g.add_argument("--model", metavar="DIR", help="model directory, implies --method mlvs (default: the one the "
                                                   "run was recorded with, else models/default)")
    g.add_argument("--method", choices=METHODS, help="control law (default: the recorded run's, else mlvs)")
    g.add_argument("--gain", type=float, help="control gain λ [1/s]")
    g.add_argument("--k-neighbors", type=int, help="K of the MLVS KNN interpolation (eq. 13)")
    g.add_argument("--max-linear-speed", type=float, help="[m/s]")
    g.add_argument("--max-angular-speed", type=float, help="[rad/s]")
    g.add_argument("--converged-translation", type=float, metavar="M",
                   help="the controller stops when its estimated translation error [m] and rotation error stay "
                        "below the bounds for --converged-steps images (default: the run's, else 0.0002)")
    g.add_argument("--converged-rotation", type=float, metavar="DEG", help="[deg] (default: the run's, else 0.02)")
    g.add_argument("--converged-steps", type=int, metavar="N", help="(default: the run's, else 5)")
    g.add_argument("--hand-eye", type=float, nargs=6, metavar=("X", "Y", "Z", "R", "P", "Y"),
                   help="camera pose in the command frame (as the controller's hand_eye parameter)")
    g.add_argument("--image-topic", metavar="T", help="image topic (default: /image, else the Image topic with most messages)")
    g.add_argument("--pose-topic", metavar="T", help="ground-truth camera pose topic (PoseStamped)")
    g.add_argument("--twist-topic", metavar="T", help="recorded command topic to compare against")
    g.add_argument("--encoding", help="override the images' encoding field (mono8, mono16, rgb8, bgr8, rgba8, bgra8)")
    g.add_argument("--out", metavar="DIR", help="output directory (default: BAG_replay next to the bag)")
    g.add_argument("--batch-size", type=int, default=16, help="images encoded per forward pass (default 16)")
    g.add_argument("--max-images", type=int, help="stop after this many images")
    g.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1, as the nodes: 2 threads collapse on a loaded 2-core PC)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    live = p.add_argument_group("live replay (ROS 2)")
    live.add_argument("--publish", action="store_true", help="republish the bag's topics over ROS 2")
    live.add_argument("--rate", type=float, default=1.0, help="playback rate factor (default 1.0 = recorded timing)")
    live.add_argument("--topics", nargs="+", metavar="T", help="publish only these topics (default: all)")
    live.add_argument("--remap", nargs="+", default=[], metavar="FROM:=TO", help="publish topic FROM as TO")
    live.add_argument("--keep-stamps", action="store_true",
                      help="publish header stamps as recorded (default: shift them to the playback time, "
                           "as a live camera would stamp them)")
    live.add_argument("--wait-subscribers", type=float, default=5.0, metavar="S",
                      help="wait up to S seconds for a subscriber before playing (default 5)")
    live.add_argument("--loop", action="store_true", help="play again and again until Ctrl-C")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.publish:   # `latent-vs replay --publish` runs latent_vs.ros.bag_publisher (cli.py routes it)
        raise UserError("--publish republishes over ROS 2: run it as `latent-vs replay BAG --publish`")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_images is not None and args.max_images < 1:
        raise UserError(f"--max-images must be >= 1, got {args.max_images}")
    if args.model is not None and args.method is None:
        args.method = "mlvs"           # a model means the learned controller
    if args.encoding is not None:
        from .imageconv import SUPPORTED_ENCODINGS
        if args.encoding.lower() not in SUPPORTED_ENCODINGS:
            raise UserError(f"unknown --encoding '{args.encoding}' (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    if args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    quiet_threads(args.threads)

    settings = None
    overrides = {k: getattr(args, a) for k, a in (
        ("method", "method"), ("model_dir", "model"), ("gain", "gain"), ("k_neighbors", "k_neighbors"),
        ("max_linear_speed", "max_linear_speed"), ("max_angular_speed", "max_angular_speed"),
        ("converged_translation", "converged_translation"), ("converged_rotation", "converged_rotation"),
        ("converged_steps", "converged_steps"), ("hand_eye", "hand_eye")) if getattr(args, a) is not None}
    if "hand_eye" in overrides:
        overrides["hand_eye"] = tuple(overrides["hand_eye"])
    if overrides:
        with bags.Bag(args.bag) as bag:
            base = bag.custom_data.get(RUN_KEY)
        try:
            settings = ServoSettings.from_json(base, warn=False) if base else ServoSettings()  # replay_offline warns
        except (ValueError, TypeError):
            settings = ServoSettings()
        for k, v in overrides.items():
            setattr(settings, k, v)
    res = replay_offline(args.bag, settings, goal=args.goal, goal_time=args.goal_time,
                         image_topic=args.image_topic, pose_topic=args.pose_topic,
                         twist_topic=args.twist_topic, encoding=args.encoding,
                         batch_size=args.batch_size, max_images=args.max_images, progress=not args.quiet)
    out = Path(args.out) if args.out else Path(str(Path(args.bag).absolute()).rstrip("/") + "_replay")
    files = write_outputs(res, out, title=f"latent-vs replay {Path(args.bag).name} ({res.summary['settings']['method']}, "
                                          f"goal: {res.summary['goal']})")
    _print_summary(res.summary)
    print(f"wrote {files['csv']}, {files['png']}, {files['summary']}")
    if res.summary.get("corruption"):
        raise bags.BagError(f"{res.summary['corruption']}; written to {out}")
    return 0


def _print_summary(s: dict) -> None:
    tp = s["throughput"]
    print(f"replayed {s['images']} images from {s['image_topic']}: {tp['images_per_s']:.1f} images/s "
          f"(read {tp['read_decode_ms_per_image']:.2f} ms, encode {tp['encode_ms_per_image']:.1f} ms, control "
          f"{tp['control_ms_per_image']:.2f} ms per image; set-up {tp['setup_s']:.1f} s); final state {s['final_state']}, "
          f"error ({s['error_units']}) {s['latent_error_first']:.4g} -> {s['latent_error_last']:.4g}")
    if "recorded_twists" in s:
        r = s["recorded_twists"]
        print(f"recorded twists: {r['compared']} compared, max |replayed - recorded| = {r['max_abs_diff']}")
    if "agreement_with_pbvs" in s:
        a = s["agreement_with_pbvs"]
        if a["twists_compared"]:
            print(f"agreement with PBVS on the true pose: median angle {a['angle_deg_median']:.1f}°, "
                  f"{100 * a['fraction_within_45deg']:.0f}% within 45°")


if __name__ == "__main__":
    sys.exit(main())
