"""`latent-vs record`: record a run to a ROS 2 bag (MCAP by default, sqlite3 on request).

Two sources:
  * live:  `latent-vs record PATH [--topics ...]` subscribes to ROS 2 topics (default: image,
           camera_pose, latent, cmd_twist, goal_image, controller/state, controller/error_norm)
           and writes every message as it arrives (BagRecorder, also used by `demo --record`);
  * --sim: `latent-vs record PATH --sim` runs the closed loop in-process with no middleware:
           the scene renders the camera image, the same encoder and controller as the nodes
           (replay.ServoPipeline) compute the twist, and the camera moves by it. Deterministic;
           it needs no DDS, so it is how the tests and CI make bags.

Either way the bag is written under PATH.partial/ and moved to PATH when it is closed
(Ctrl-C and SIGTERM included: the bag is valid and says in its metadata that the run was
interrupted); only SIGKILL or a crash leaves a `.partial` directory.
"""
from __future__ import annotations

import argparse
import os
import json
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .. import bags, geometry
from ..errors import UserError
from ..replay import RUN_KEY, ServoPipeline, ServoSettings, one_blas_thread
from ..threads import quiet_threads

DEFAULT_LIVE_TOPICS = ["image", "camera_pose", "latent", "cmd_twist", "goal_image",
                       "controller/state", "controller/error_norm"]
TOPIC_TYPES = dict(bags.DEFAULT_TOPICS, **{"/goal_image": bags.IMAGE})


# ---------------------------------------------------------------- simulated run, no middleware

def record_simulation(path: str, settings: ServoSettings, storage: str = "mcap", steps: int = 100,
                      rate: float = 10.0, start_pose: np.ndarray | None = None, task: int = 0, seed: int = 0,
                      size: int = 224, encoding: str = "mono8", stop_after_converged: int = 5,
                      progress: bool = False, law=None) -> dict:
    """Closed loop in simulation, recorded to a bag at `path`, with the messages the nodes
    would publish, in virtual time (the loop runs as fast as it computes; the bag's clock
    advances 1/rate per frame from the wall-clock start). Per frame k (t_k = t0 + k / rate):
    /image and /camera_pose stamped and logged at t_k; /latent (label stamp t_k) logged at
    t_k + 1 µs; /cmd_twist (stamped at its publish time) and /controller/error_norm at
    t_k + 2 µs; /controller/state when it changes. The camera then moves by the last
    published twist for 1/rate s (the sim camera node's rule). The run's settings and goal
    pose go into the bag's custom_data so that `latent-vs replay` reproduces the twists.
    `law`: a prebuilt control law to reuse (replay.ServoPipeline). Returns a summary dict."""
    if steps < 1 or not rate > 0:
        raise UserError(f"--steps must be >= 1 and --rate > 0 (got {steps}, {rate})")
    with one_blas_thread():
        return _record_simulation(path, settings, storage, steps, rate, start_pose, task, seed, size, encoding,
                                  stop_after_converged, progress, law)


def _record_simulation(path, settings, storage, steps, rate, start_pose, task, seed, size, encoding,
                       stop_after_converged, progress, law) -> dict:
    from ..camera import default_camera
    from ..scene import Scene, SceneConfig, goal_pose
    from ..tasks import sample_tasks
    pipe = ServoPipeline(settings, law)
    scene_cfg = pipe.model.scene if pipe.model is not None else SceneConfig()
    scene = Scene(scene_cfg, default_camera(size))
    T_goal = pipe.model.goal_pose if pipe.model is not None else goal_pose(scene_cfg)
    T = sample_tasks(task + 1, seed, scene_cfg)[task] if start_pose is None else np.asarray(start_pose, float)
    goal_img = scene.render(T_goal)
    dt_ns = int(round(1e9 / rate))
    t0 = time.time_ns()
    v_applied = np.zeros(6)
    summary = {"frames": 0, "published": 0, "states": {}}
    converged_at, last_state, state = None, None, None
    with bags.BagWriter(path, storage) as bag:
        bag.set_custom_data(RUN_KEY, settings.to_json())
        bag.set_custom_data("latent_vs.goal_pose", json.dumps(np.round(T_goal, 12).tolist()))
        bag.set_custom_data("latent_vs.source", f"latent-vs record --sim (task {task}, seed {seed}, rate {rate} Hz)")
        bag.write("/goal_image", bags.image_msg(goal_img, t0, encoding=encoding), t0)
        pipe.set_goal(goal_img, T_goal)
        rng = range(steps)
        if progress:
            from tqdm import tqdm
            rng = tqdm(rng, desc="record --sim", unit="frame", file=sys.stderr, leave=False)
        for k in rng:
            t_k = t0 + (k + 1) * dt_ns
            img = scene.render(T)
            bag.write("/image", bags.image_msg(img, t_k, encoding=encoding), t_k)
            bag.write("/camera_pose", bags.pose_msg(T, t_k), t_k)
            y = pipe.measure(img[None], [T])[0]
            twist, state, err = pipe.step(y, t_k * 1e-9)
            t_enc, t_out = t_k + 1_000, t_k + 2_000   # virtual time: the outputs follow their image
            if pipe.kind == "latent":
                bag.write("/latent", bags.latent_msg(y, t_k, "camera"), t_enc)
            if np.isfinite(err):
                bag.write("/controller/error_norm", bags.float32_msg(err), t_out)
            if twist is not None:
                bag.write("/cmd_twist", bags.twist_msg(twist, t_out), t_out)
                v_applied = pipe.to_camera_frame(twist)     # the command frame is hand_eye's
                summary["published"] += 1
            if state != last_state:
                bag.write("/controller/state", bags.string_msg(state), t_out)
                last_state = state
            summary["frames"] += 1
            summary["states"][state] = summary["states"].get(state, 0) + 1
            T = T @ geometry.se3_exp(v_applied, 1.0 / rate)   # camera twist, camera frame
            if state == "converged":
                converged_at = k if converged_at is None else converged_at
                if k - converged_at >= stop_after_converged:
                    break
        summary["path"] = str(bag.close())
        summary["counts"] = dict(bag.counts)
    t_err, r_err = geometry.error_metrics(T_goal, T)
    summary.update(final_t_err_m=float(t_err), final_r_err_deg=float(np.degrees(r_err)), final_state=state)
    return summary


def run_metadata(method: str, model_dir: str | None = None, goal_pose: np.ndarray | None = None,
                 **controller) -> dict:
    """custom_data for a BagRecorder of a run: the controller settings (gain, k_neighbors,
    max_linear_speed, max_angular_speed, converged_translation, converged_rotation,
    converged_steps, input_timeout) and the goal pose,
    so that `latent-vs replay` reruns the controller as it was and reproduces its twists.

        BagRecorder("demo_recorder", path, custom_data=run_metadata("mlvs", model_dir, **settings))"""
    fields = ServoSettings.__dataclass_fields__
    s = ServoSettings(method=method, model_dir=model_dir, **{k: v for k, v in controller.items() if k in fields})
    out = {RUN_KEY: s.to_json()}
    if goal_pose is not None:
        out["latent_vs.goal_pose"] = json.dumps(np.round(np.asarray(goal_pose, float), 12).tolist())
    return out


# ---------------------------------------------------------------- live recording over ROS 2

def _import_rclpy():
    import rclpy  # noqa: F401  (only the live recorder needs ROS 2)
    from rclpy.node import Node
    return Node


def _make_bag_recorder_class():
    Node = _import_rclpy()
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    from .bag_publisher import msg_class

    class BagRecorder(Node):
        """An rclpy node that writes the given topics to a bag with rosbags.

        `topics`: names (relative names resolve in the node's namespace) or {name: msgtype}.
        Each topic is subscribed once a publisher of it appears (checked every 0.25 s), with
        the reliability its publishers offer (reliable when they all are, else best-effort;
        transient-local when they all are, so latched messages such as ~/state arrive);
        its type comes from the mapping, else latent_vs's defaults (image, camera_pose, ...),
        else the ROS graph. Messages are taken raw: the CDR bytes go to the bag unchanged,
        logged at the node's clock. close() finishes the bag (main calls it on Ctrl-C)."""

        def __init__(self, node_name: str = "bag_recorder", path: str = "run", topics=None,
                     storage: str = "mcap", custom_data: dict | None = None, **node_kwargs):
            super().__init__(node_name, **node_kwargs)
            self.writer = bags.BagWriter(path, storage)
            for k, v in (custom_data or {}).items():
                self.writer.set_custom_data(k, v)
            topics = DEFAULT_LIVE_TOPICS if topics is None else topics
            items = topics.items() if isinstance(topics, dict) else ((t, None) for t in topics)
            self._pending: dict[str, str | None] = {}
            for name, msgtype in items:
                full = self.resolve_topic_name(name)
                self._pending[full] = msgtype or TOPIC_TYPES.get(full)
            self._subs = {}
            self._lock = threading.Lock()   # a multi-threaded executor may close while a callback writes
            self.counts: dict[str, int] = {}
            self._subscribe_ready()
            self._timer = self.create_timer(0.25, self._subscribe_ready) if self._pending else None

        def _subscribe_ready(self):
            """Subscribe every pending topic whose type is known (graph lookup when needed)."""
            if not self._pending:
                return
            graph = dict(self.get_topic_names_and_types())
            for name, msgtype in list(self._pending.items()):
                pubs = self.get_publishers_info_by_topic(name)
                if not pubs:      # wait for a publisher: its QoS (and maybe its type) decide ours
                    continue
                if msgtype is None:
                    types = graph.get(name)
                    if not types:
                        continue
                    msgtype = types[0]
                reliable = all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in pubs)
                latched = all(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in pubs)
                qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                                 reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
                self._subs[name] = self.create_subscription(
                    msg_class(msgtype), name, self._callback(name, msgtype), qos, raw=True)
                self.counts[name] = 0
                del self._pending[name]
            if not self._pending and getattr(self, "_timer", None) is not None:
                self._timer.cancel()

        def _callback(self, topic: str, msgtype: str):
            def cb(data: bytes):
                with self._lock:
                    if self.writer.closed:
                        return
                    self.writer.write_raw(topic, msgtype, data, self.get_clock().now().nanoseconds)
                    self.counts[topic] += 1
            return cb

        @property
        def path(self) -> Path:
            return self.writer.path

        def close(self) -> Path:
            """Stop writing and finish the bag (idempotent)."""
            with self._lock:
                return self.writer.close()

        def destroy_node(self):
            self.close()
            return super().destroy_node()

    return BagRecorder


_BagRecorder = None


def __getattr__(name):
    # `from latent_vs.ros.record import BagRecorder` builds the rclpy class on first use, so
    # `record --sim` and the offline tools never load ROS 2.
    global _BagRecorder
    if name == "BagRecorder":
        if _BagRecorder is None:
            _BagRecorder = _make_bag_recorder_class()
        return _BagRecorder
    raise AttributeError(name)


def record_live(path: str, topics, storage: str, duration: float | None, max_messages: int | None) -> dict:
    """Record until Ctrl-C / SIGTERM (or --duration / --max-messages). The signals only set a
    flag checked between messages, so a message is never half-written, and the bag is closed
    (valid) whatever ends the recording short of SIGKILL."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.signals import SignalHandlerOptions
    BagRecorder = __getattr__("BagRecorder")
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    rec = None
    stop = {"sig": None}

    def on_signal(signum, frame):
        stop["sig"] = signum
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        rec = BagRecorder("bag_recorder", path, topics, storage)
        print(f"recording {', '.join(list(rec._subs) + list(rec._pending))} to {rec.path} "
              f"({storage}); Ctrl-C to stop", file=sys.stderr, flush=True)
        t_end = None if duration is None else time.monotonic() + duration
        while rclpy.ok() and stop["sig"] is None:
            rclpy.spin_once(rec, timeout_sec=0.1)
            if t_end is not None and time.monotonic() >= t_end:
                break
            if max_messages is not None and sum(rec.counts.values()) >= max_messages:
                break
        if rec is not None and rclpy.ok():   # drain what DDS already delivered (bounded)
            quiet_since, t_drain = time.monotonic(), time.monotonic() + 1.0
            n = sum(rec.counts.values())
            while time.monotonic() < t_drain and time.monotonic() - quiet_since < 0.2:
                rclpy.spin_once(rec, timeout_sec=0.02)
                if sum(rec.counts.values()) != n:
                    n, quiet_since = sum(rec.counts.values()), time.monotonic()
    except ExternalShutdownException:
        pass
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        out = {}
        if rec is not None:
            out = {"path": str(rec.close()), "counts": dict(rec.counts), "pending": list(rec._pending)}
            rec.destroy_node()
        rclpy.try_shutdown()
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="latent-vs record",
                                description="Record a run to a ROS 2 bag: live ROS 2 topics, or --sim a closed "
                                            "loop simulated in-process (no middleware).")
    p.add_argument("path", help="bag directory to create (must not exist)")
    p.add_argument("--storage", choices=bags.STORAGES, default="mcap", help="bag storage (default mcap)")
    live = p.add_argument_group("live")
    live.add_argument("--topics", nargs="+", metavar="T",
                      help=f"topics to record (default: {' '.join(DEFAULT_LIVE_TOPICS)})")
    live.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: Ctrl-C)")
    live.add_argument("--max-messages", type=int, metavar="N", help="stop after N messages")
    sim = p.add_argument_group("simulated (--sim)")
    sim.add_argument("--sim", action="store_true", help="record a closed loop simulated in-process")
    sim.add_argument("--method", choices=("mlvs", "pbvs", "dvs"), default="mlvs", help="control law (default mlvs)")
    sim.add_argument("--model", metavar="DIR", help="model directory (default models/default)")
    sim.add_argument("--gain", type=float, default=ServoSettings.gain,
                     help=f"control gain λ [1/s] (default {ServoSettings.gain}, as the controller node)")
    sim.add_argument("--k-neighbors", type=int, default=ServoSettings.k_neighbors,
                     help=f"K of the MLVS KNN interpolation (default {ServoSettings.k_neighbors})")
    sim.add_argument("--max-linear-speed", type=float, default=0.10, help="[m/s] (default 0.10)")
    sim.add_argument("--max-angular-speed", type=float, default=0.50, help="[rad/s] (default 0.50)")
    sim.add_argument("--converged-translation", type=float, default=ServoSettings.converged_translation,
                     metavar="M", help=f"stop when the estimated pose error stays below this [m] and "
                                       f"--converged-rotation (default {ServoSettings.converged_translation})")
    sim.add_argument("--converged-rotation", type=float, default=ServoSettings.converged_rotation, metavar="DEG",
                     help=f"[deg] (default {ServoSettings.converged_rotation})")
    sim.add_argument("--converged-steps", type=int, default=ServoSettings.converged_steps, metavar="N",
                     help=f"for this many frames in a row (default {ServoSettings.converged_steps})")
    sim.add_argument("--steps", type=int, default=150, help="frames (default 150)")
    sim.add_argument("--rate", type=float, default=10.0, help="camera rate [Hz] (default 10)")
    sim.add_argument("--task", type=int, default=0, help="index of the benchmark task to start from (default 0)")
    sim.add_argument("--seed", type=int, default=0, help="task seed (default 0)")
    sim.add_argument("--size", type=int, default=224, help="image size [px] (default 224)")
    sim.add_argument("--encoding", default="mono8", help="image encoding written (default mono8)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    quiet_threads()      # the controller's small matrices: one BLAS thread (as the nodes)
    if a.sim:
        from ..imageconv import SUPPORTED_ENCODINGS
        if a.encoding.lower() not in SUPPORTED_ENCODINGS:
            raise UserError(f"unknown --encoding '{a.encoding}' (supported: {', '.join(SUPPORTED_ENCODINGS)})")
        if a.size < 16:
            raise UserError(f"--size must be at least 16 px, got {a.size}")
        s = ServoSettings(method=a.method, model_dir=a.model, gain=a.gain, k_neighbors=a.k_neighbors,
                          max_linear_speed=a.max_linear_speed, max_angular_speed=a.max_angular_speed,
                          converged_translation=a.converged_translation,
                          converged_rotation=a.converged_rotation, converged_steps=a.converged_steps)
        def on_term(signum, frame):   # SIGTERM ends the run as Ctrl-C does: the bag is closed, valid
            raise KeyboardInterrupt
        old = signal.signal(signal.SIGTERM, on_term)
        try:
            out = record_simulation(a.path, s, a.storage, a.steps, a.rate, task=a.task, seed=a.seed,
                                    size=a.size, encoding=a.encoding, progress=True)
        finally:
            signal.signal(signal.SIGTERM, old)
        print(f"wrote {out['path']}: {out['frames']} frames, {out['published']} twists, final state "
              f"{out['final_state']}, final error {100 * out['final_t_err_m']:.2f} cm, {out['final_r_err_deg']:.2f}°")
        return 0
    out = record_live(a.path, a.topics, a.storage, a.duration, a.max_messages)
    counts = ", ".join(f"{t} {n}" for t, n in out.get("counts", {}).items()) or "nothing"
    print(f"wrote {out.get('path')}: {counts}" + (f" (never seen: {', '.join(out['pending'])})" if out.get("pending") else ""))
    return 0
