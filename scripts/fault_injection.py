"""Fault injection against live nodes (issue 13): signals, stamps, absurd values, untrusted
files, large images, damaged bags, clearing the goal; and camera_info (issue 14): a camera
that differs from the model's intrinsics under strict_intrinsics, broken camera_info. Starts encoder_node, controller_node and
sim_camera_node as processes over real DDS (and the `latent-vs` CLI for files and bags), injects
each fault and prints a table: case, expected, got, ✅/❌. Exit status 1 when any case fails.

    python scripts/fault_injection.py            # all items (~2 min on a loaded 2-core PC)
    python scripts/fault_injection.py 3 7        # only items 3 and 7

test/test_hardening.py runs the same cases, one test per item.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for k, v in (("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"), ("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp"),
             ("AMENT_PREFIX_PATH", sys.prefix), ("OMP_WAIT_POLICY", "PASSIVE"), ("MPLBACKEND", "Agg")):
    os.environ.setdefault(k, v)

import numpy as np  # noqa: E402

ITEMS = {1: "signals", 2: "stamps", 3: "absurd values", 4: "untrusted files", 5: "large images", 6: "bags", 7: "goal",
         8: "camera_info"}
ZERO = np.zeros(6)


def proc(args: list[str], log: Path, module: str | None = None) -> subprocess.Popen:
    """A node (module under latent_vs.ros) or a CLI command, stdout+stderr to `log`."""
    cmd = [sys.executable, "-m", f"latent_vs.ros.{module}", "--ros-args", *args] if module else \
        [sys.executable, "-m", "latent_vs.cli", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def ros_args(params: dict, ns: str = "", remap: dict | None = None) -> list[str]:
    out = []
    for k, v in params.items():
        out += ["-p", f"{k}:={json.dumps(v) if not isinstance(v, str) else v}"]
    for a, b in (remap or {}).items():
        out += ["-r", f"{a}:={b}"]
    return out + (["-r", f"__ns:={ns}"] if ns else [])


class Harness:
    """The rclpy side: one node that publishes the faults and watches the answers."""

    def __init__(self, tmp: Path):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        rclpy.init()
        from latent_vs.ros.probe import Probe
        self.rclpy, self.tmp = rclpy, tmp
        self.ex = SingleThreadedExecutor()
        self.node = rclpy.create_node("fault_injection")
        self.ex.add_node(self.node)
        self.probes: dict[str, Probe] = {}
        self.procs: list[subprocess.Popen] = []

    def probe(self, ns: str = ""):
        from latent_vs.ros.probe import Probe
        if ns not in self.probes:
            p = Probe(node_name="probe", namespace=ns or "/", watch_pose=False)
            self.ex.add_node(p)
            self.probes[ns] = p
        return self.probes[ns]

    def spin(self, cond=lambda: False, timeout: float = 5.0) -> bool:
        from latent_vs.ros.probe import spin_until
        return spin_until(self.ex, cond, timeout)

    def wait_node(self, name: str, ns: str, timeout: float = 90.0) -> bool:
        return self.spin(lambda: (name, ns or "/") in self.node.get_node_names_and_namespaces(), timeout)

    def start(self, module: str, params: dict, log: str, ns: str = "", remap=None) -> subprocess.Popen:
        p = proc(ros_args(params, ns, remap), self.tmp / log, module)
        self.procs.append(p)
        return p

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
        for node in list(self.ex.get_nodes()):   # nodes go before their context (a later rclpy.init must not meet them)
            self.ex.remove_node(node)
            node.destroy_node()
        self.ex.shutdown()
        self.rclpy.try_shutdown()


def log_count(path: Path, text: str) -> int:
    return path.read_text(errors="replace").count(text) if path.exists() else 0


# ---------------------------------------------------------------- the model side (latents, images)

class World:
    """The default model, its goal image file and latents for the controller's input."""

    def __init__(self, tmp: Path):
        import cv2
        from latent_vs.camera import default_camera
        from latent_vs.models import load_model
        from latent_vs.scene import Scene
        from latent_vs.tasks import sample_tasks
        self.model = load_model(str(ROOT / "models" / "default"))
        scene = Scene(self.model.scene, default_camera(224))
        self.goal_file = tmp / "goal.png"
        cv2.imwrite(str(self.goal_file), scene.render(self.model.goal_pose))
        self.start_img = scene.render(sample_tasks(1, seed=0, scene=self.model.scene)[0])
        self.z = self.model.encode(self.start_img[None])[0]


# ---------------------------------------------------------------- items

def _pub_latent(h: Harness, pub, z, ahead_s: float = 0.0):
    from builtin_interfaces.msg import Time
    from latent_vs.ros.convert import latent_to_msg
    t = h.node.get_clock().now().nanoseconds + int(ahead_s * 1e9)
    pub.publish(latent_to_msg(z, Time(sec=t // 10**9, nanosec=t % 10**9), "camera"))


def _feed_until(h, pub, z, cond, timeout=10.0, ahead_s=0.0, period=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _pub_latent(h, pub, z, ahead_s)
        if h.spin(cond, period):
            return True
    return cond()


def _stop_case(h, probe, pub, z, name, expected, state, ahead_s=0.0):
    """Bring the controller to servoing with good latents, then inject `z` (stamped ahead_s in
    the future): expect `state` and a zero twist after the fault."""
    good = _feed_until(h, pub, h.world.z, lambda: probe.moving(len(probe.twists) - 1), 15.0)
    k = len(probe.twists)
    _feed_until(h, pub, z, lambda: probe.stopped(state, k), 5.0, ahead_s)
    h.spin(timeout=0.2)
    ok = good and probe.stopped(state, k) and not np.any(probe.twists[-1])
    tail = probe.twists[k:]
    return name, expected, f"state {probe.state}, {'zero twist' if any(not np.any(t) for t in tail) else 'no zero twist'}" \
                           f"{'' if good else ' (never servoed first)'}", ok


def controller_cases(h: Harness, items: set[int]) -> list:
    """Items 2, 3 and 7 against one mlvs controller_node fed latents by the harness."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from std_msgs.msg import Float32MultiArray
    from sensor_msgs.msg import Image
    from latent_vs.ros.convert import COMMAND_QOS, GOAL_QOS
    rows = []
    h.start("controller_node", {"goal_image": str(h.world.goal_file), "input_timeout": 0.5}, "controller.log", ns="/c")
    probe = h.probe("/c")
    if not h.wait_node("controller", "/c"):
        return [("controller_node starts", "ready", "did not start", False)]
    pub = h.node.create_publisher(Float32MultiArray, "/c/latent", COMMAND_QOS)
    log = h.tmp / "controller.log"
    h.spin(lambda: pub.get_subscription_count() > 0, 10.0)
    if 2 in items:
        k = len(probe.twists)
        t0 = time.monotonic()
        probe.enable(h.ex, True)
        ok = h.spin(lambda: probe.stopped("stale", k), 3.0)
        rows.append(("2 enable, no input ever", "stale within input_timeout, zero twist",
                     f"state {probe.state} after {time.monotonic() - t0:.2f} s", ok))
        rows.append(_stop_case(h, probe, pub, h.world.z, "2 latent stamped 5 s in the future",
                               "fault, zero twist", "fault", ahead_s=5.0))
    else:
        probe.enable(h.ex, True)
    if 3 in items:
        z = h.world.z
        rows.append(_stop_case(h, probe, pub, z / np.linalg.norm(z) * 1e6, "3 latent of norm 1e6",
                               "fault (latent norm), zero twist", "fault"))
        big = z.copy()
        big[0] = 1e38
        rows.append(_stop_case(h, probe, pub, big, "3 latent with a 1e38 entry", "fault (latent norm), zero twist", "fault"))
        gpub = h.node.create_publisher(Image, "/c/goal_image", GOAL_QOS)
        h.spin(lambda: gpub.get_subscription_count() > 0, 5.0)
        from latent_vs.ros.convert import array_to_image_msg
        n0 = log_count(log, "image size")
        gpub.publish(array_to_image_msg(np.zeros((1, 4000), np.uint8)))
        h.spin(lambda: log_count(log, "image size") > n0, 5.0)
        rows.append(("3 goal image 1x4000 (topic)", "refused, one log line", f"{log_count(log, 'image size') - n0} log line(s)",
                     log_count(log, "image size") - n0 == 1))
        client = h.node.create_client(SetParameters, "/c/controller/set_parameters")
        h.spin(client.service_is_ready, 5.0)

        def set_param(name, value):
            v = ParameterValue(type=ParameterType.PARAMETER_DOUBLE_ARRAY, double_array_value=value) \
                if isinstance(value, list) else ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
            fut = client.call_async(SetParameters.Request(parameters=[Parameter(name=name, value=v)]))
            h.spin(fut.done, 5.0)
            return fut.result().results[0] if fut.done() and fut.result() else None
        for name, value in (("hand_eye", [1.7e308, 0.0, 0.0, 0.0, 0.0, 0.0]), ("hand_eye", [1e300, 0.0, 0.0, 0.0, 0.0, 0.0]),
                            ("hand_eye", [0.0, 0.0, 0.0, 1e300, 0.0, 0.0]), ("gain", 1e9),
                            ("input_timeout", float("nan"))):
            r = set_param(name, value)
            alive = h.spin(lambda: False, 0.2) or h.procs[-1].poll() is None
            got = "no answer" if r is None else ("accepted" if r.successful else f"refused: {r.reason[:60]}")
            rows.append((f"3 set {name} = {value if not isinstance(value, list) else value[:4]}",
                         "SetParameters refused with a reason, node up",
                         got + ("" if alive else ", node died"), r is not None and not r.successful and bool(r.reason) and alive))
    if 7 in items:
        _feed_until(h, pub, h.world.z, lambda: probe.moving(len(probe.twists) - 1), 15.0)
        from rclpy.parameter import Parameter as P
        k = len(probe.twists)
        client = h.node.create_client(SetParameters, "/c/controller/set_parameters")
        h.spin(client.service_is_ready, 5.0)
        fut = client.call_async(SetParameters.Request(parameters=[P("goal_image", value="").to_parameter_msg()]))
        h.spin(fut.done, 5.0)
        ok = _feed_until(h, pub, h.world.z, lambda: probe.stopped("no_goal", k), 5.0)
        for _ in range(10):                      # input keeps coming: the arm stays still
            _pub_latent(h, pub, h.world.z)
            h.spin(timeout=0.03)
        still = not any(np.any(t) for t in probe.twists[k:])
        rows.append(("7 goal_image set to \"\"", "state no_goal, zero twist, then nothing",
                     f"state {probe.state}, {len(probe.twists) - k} twist(s), all zero: {still}", ok and still))
    return rows


def encoder_cases(h: Harness, items: set[int]) -> list:
    """Items 3 (absurd image sizes) and 5 (large images, QoS, no-image warning) on encoder_node."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Float32MultiArray
    from latent_vs.ros.convert import array_to_image_msg, latent_stamp
    rows = []
    h.start("encoder_node", {"no_image_warning": 1.0}, "encoder.log", ns="/e")
    if not h.wait_node("encoder", "/e"):
        return [("encoder_node starts", "ready", "did not start", False)]
    log = h.tmp / "encoder.log"
    got = []
    h.node.create_subscription(Float32MultiArray, "/e/latent", lambda m: got.append(m), 10)
    pub = h.node.create_publisher(Image, "/e/image", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    h.spin(lambda: pub.get_subscription_count() > 0, 10.0)
    if 5 in items:   # a publisher present, nothing published
        ok = h.spin(lambda: log_count(log, "no image for") >= 1, 6.0)
        h.spin(timeout=2.0)
        n = log_count(log, "no image for")
        rows.append(("5 image publisher present, no images", "one warning line", f"{n} warning line(s)", ok and n == 1))

    def send(img, timeout=20.0):
        del got[:]
        t = h.node.get_clock().now().to_msg()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pub.publish(array_to_image_msg(img, t))
            if h.spin(lambda: any(latent_stamp(m) == t for m in got), 1.0):
                return next(np.asarray(m.data) for m in got if latent_stamp(m) == t)
        return None
    if 5 in items:
        for w, hh in ((1920, 1080), (4000, 3000)):
            img = np.random.default_rng(0).integers(0, 255, (hh, w), dtype=np.uint8)
            z = send(img)
            ok = z is not None and np.all(np.isfinite(z))
            rows.append((f"5 {w}x{hh} image, reliable publisher", "encoded (a finite latent)",
                         "a finite latent" if ok else ("NaN latent" if z is not None else "nothing arrived"), ok))
    if 3 in items:
        n0 = log_count(log, "bad image")
        zs = [send(np.zeros((1, 4000), np.uint8), 10.0) for _ in range(5)]
        n = log_count(log, "bad image") - n0
        nan = all(z is not None and np.all(np.isnan(z)) for z in zs)
        rows.append(("3 image 1x4000, five times", "refused (NaN latent), one log line",
                     f"NaN latents: {nan}, {n} log line(s)", nan and n == 1))
    return rows


def camera_info_cases(h: Harness) -> list:
    """Item 8 (issue 14): camera_info on a strict_intrinsics encoder_node feeding an mlvs
    controller_node, images and camera_info from the harness (the rendered start view, 224 px,
    and the camera it was rendered with): matching -> servoing; focal length +20% -> no
    latents, stale, zero twist; NaN or all-zero K -> one log line each, the encoder alive;
    matching again -> servoing again."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Float32MultiArray
    from latent_vs.camera import Camera, default_camera
    from latent_vs.ros.convert import SENSOR_QOS, array_to_image_msg
    from latent_vs.ros.sim_camera_node import camera_info_msg
    ns = "/k"
    enc = h.start("encoder_node", {"strict_intrinsics": True, "no_image_warning": 1.0}, "encoder_strict.log", ns=ns)
    h.start("controller_node", {"goal_image": str(h.world.goal_file), "input_timeout": 0.5}, "controller_k.log", ns=ns)
    probe = h.probe(ns)
    if not (h.wait_node("encoder", ns) and h.wait_node("controller", ns)):
        return [("8 strict encoder_node and controller_node start", "ready", "did not start", False)]
    log = h.tmp / "encoder_strict.log"
    latents = []
    h.node.create_subscription(Float32MultiArray, f"{ns}/latent", latents.append, 10)
    img_pub = h.node.create_publisher(Image, f"{ns}/image", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    info_pub = h.node.create_publisher(CameraInfo, f"{ns}/camera_info", SENSOR_QOS)
    h.spin(lambda: img_pub.get_subscription_count() > 0 and info_pub.get_subscription_count() > 0, 10.0)
    cam = default_camera(224)                                    # the camera World renders with
    good = camera_info_msg(cam)
    longer = camera_info_msg(Camera(224, 224, 1.2 * cam.px, 1.2 * cam.py, cam.u0, cam.v0))

    def feed(info, cond=lambda: False, timeout=5.0, n=None):
        """camera_info then the image, at ~20 Hz, until cond() or timeout (or n frames)."""
        deadline, sent = time.monotonic() + timeout, 0
        while time.monotonic() < deadline and (n is None or sent < n):
            stamp = h.node.get_clock().now().to_msg()
            info.header.stamp = stamp
            info_pub.publish(info)
            img_pub.publish(array_to_image_msg(h.world.start_img, stamp, "camera"))
            sent += 1
            if h.spin(cond, 0.05):
                return True
        return cond()

    rows = []
    probe.enable(h.ex, True)
    k = len(probe.twists)
    ok = feed(good, lambda: probe.moving(k) and len(latents) > 3, 60.0)
    n = log_count(log, "camera_info matches the model's intrinsics")
    rows.append(("8 strict_intrinsics, camera_info matching the model", "latents, servoing, one log line",
                 f"{len(latents)} latent(s), state {probe.state}, {n} log line(s)", ok and n == 1))

    k = len(probe.twists)
    stale = feed(longer, lambda: probe.stopped("stale", k), 5.0)
    n0 = len(latents)
    feed(longer, timeout=1.0)                                    # a second more: nothing gets through
    new = len(latents) - n0
    n = log_count(log, "camera intrinsics differ from the model's")
    zero = any(not np.any(t) for t in probe.twists[k:])
    rows.append(("8 strict_intrinsics, camera_info focal length +20%", "no latents, stale, zero twist, one log line",
                 f"{new} latent(s) in 1 s, state {probe.state}, {'zero twist' if zero else 'no zero twist'}, "
                 f"{n} log line(s)", stale and zero and new == 0 and n == 1))

    for what, k_values in (("K NaN", [float("nan")] * 9), ("K all zeros", [0.0] * 9)):
        broken = camera_info_msg(cam)
        broken.k = k_values
        n0, z0 = log_count(log, "unusable"), len(latents)
        feed(broken, n=5)
        h.spin(lambda: log_count(log, "unusable") > n0, 2.0)
        h.spin(timeout=0.3)
        n, new = log_count(log, "unusable") - n0, len(latents) - z0
        alive = enc.poll() is None and ("encoder", ns) in h.node.get_node_names_and_namespaces()
        rows.append((f"8 camera_info {what}, five times", "encoder alive, no latents (strict), one log line",
                     f"alive: {alive}, {new} latent(s), {n} log line(s)", alive and new == 0 and n == 1))

    k, n0 = len(probe.twists), len(latents)
    ok = feed(good, lambda: probe.moving(k) and len(latents) > n0, 10.0)
    n = log_count(log, "camera_info matches the model again")
    rows.append(("8 strict_intrinsics, matching camera_info again", "latents, servoing, one log line",
                 f"{len(latents) - n0} latent(s), state {probe.state}, {n} log line(s)", ok and n == 1))
    return rows


def signal_cases(h: Harness) -> list:
    """Item 1: SIGINT and SIGTERM to each node, idle (use_sim_time, no /clock) and busy."""
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import Image
    from latent_vs.ros.convert import COMMAND_QOS, array_to_image_msg, pose_to_msg
    from latent_vs.tasks import sample_tasks
    rows = []
    T = sample_tasks(1, seed=0)[0]
    img = np.zeros((224, 224), np.uint8)
    for sig in (signal.SIGINT, signal.SIGTERM):
        runs = []
        for module, name, extra in (("encoder_node", "encoder", {}),
                                    ("controller_node", "controller", {"method": "pbvs", "autostart": True}),
                                    ("sim_camera_node", "sim_camera", {})):
            for busy in (False, True):
                ns = f"/s{sig}{name}{int(busy)}"
                params = dict(extra, use_sim_time=not busy)
                p = h.start(module, params, f"sig_{ns[1:]}.log", ns=ns)
                runs.append((module, name, busy, ns, p))
        pubs = {}
        for module, name, busy, ns, p in runs:
            if not h.wait_node(name, ns):
                rows.append((f"1 {signal.Signals(sig).name} {module} {'busy' if busy else 'idle'}", "exits 0 within 1 s",
                             "did not start", False))
                continue
            h.probe(ns)
            if busy and name == "encoder":
                pubs[ns] = (h.node.create_publisher(Image, f"{ns}/image", COMMAND_QOS), "image")
            if busy and name == "controller":
                pubs[ns] = (h.node.create_publisher(PoseStamped, f"{ns}/camera_pose", COMMAND_QOS), "pose")
        for module, name, busy, ns, p in runs:
            if p.poll() is not None and not h.wait_node(name, ns, 0.1):
                continue
            label = f"1 {signal.Signals(sig).name} {module} {'busy' if busy else 'idle (sim time, no /clock)'}"
            probe = h.probes.get(ns)
            if probe is None:
                continue

            def feed():
                if ns in pubs:
                    pub, kind = pubs[ns]
                    stamp = h.node.get_clock().now().to_msg()
                    pub.publish(array_to_image_msg(img, stamp) if kind == "image" else pose_to_msg(T, stamp))
            if busy and name == "controller":
                deadline = time.monotonic() + 15
                while not probe.twists and time.monotonic() < deadline:
                    feed()
                    h.spin(timeout=0.03)
            for _ in range(10):
                feed()
                h.spin(timeout=0.03)
            k = len(probe.twists)
            t0 = time.monotonic()
            p.send_signal(sig)
            while p.poll() is None and time.monotonic() - t0 < 5.0:
                feed()
                h.spin(timeout=0.01)
            dt = time.monotonic() - t0
            h.spin(lambda: len(probe.twists) > k, 1.0 if name == "controller" else 0.0)
            zero = any(not np.any(t) for t in probe.twists[k:])
            need_zero = name == "controller"
            ok = p.poll() == 0 and dt < 1.0 and (zero or not need_zero)
            got = f"exit {p.poll()} after {dt:.2f} s" + (f", zero twist: {zero}" if need_zero else "")
            rows.append((label, "exits 0 within 1 s" + (", zero twist first" if need_zero else ""), got, ok))
    return rows


def file_cases(tmp: Path) -> list:
    """Item 4: a crafted pickle given to train --resume is refused and never run."""
    import torch
    marker = tmp / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    run = tmp / "evil_run"
    run.mkdir()
    torch.save({"modules": {"psi": Evil()}, "step": 1}, run / "checkpoint.pt")
    log = tmp / "train_resume.log"
    p = proc(["train", str(ROOT / "config" / "train_small.yaml"), "--out", str(tmp / "evil_model"), "--run-dir",
              str(run), "--resume", "--set", "data.samples=400", "--set", "data.heldout=16", "--set", "data.anchors=4",
              "--set", "data.neighbour_pool=64", "--set", "psi.width=4", "--phi-pretrain-steps", "0", "--quiet"], log)
    rc = p.wait(300)
    lines = [x for x in log.read_text().splitlines() if "error" in x]
    ok = rc == 2 and not marker.exists() and len(lines) == 1 and "refused" in lines[0] and "Traceback" not in log.read_text()
    return [("4 train --resume with a crafted pickle", "refused with one line, exit 2, code not run",
             f"exit {rc}, code run: {marker.exists()}, " + (lines[0][lines[0].find("refused"):][:48] if lines else ""), ok)]


def bag_cases(tmp: Path) -> list:
    """Item 6: a damaged MCAP body, absurd stored settings, SIGTERM during record --sim."""
    from latent_vs import bags
    from latent_vs.replay import RUN_KEY, ServoSettings
    rows = []
    bag = tmp / "b"
    p = proc(["record", str(bag), "--sim", "--method", "pbvs", "--gain", "1.0", "--steps", "40"], tmp / "rec.log")
    p.wait(300)
    # damage the second chunk's records (image pixels: nothing else would notice)
    dmg = tmp / "damaged"
    shutil.copytree(bag, dmg)
    f = next(dmg.glob("*.mcap"))
    chunks = list(bags._mcap_chunks(f))
    data = bytearray(f.read_bytes())
    off = chunks[-1][0] + 4 + 200_000
    data[off:off + 16] = b"\xff" * 16
    f.write_bytes(bytes(data))
    out = tmp / "damaged_out"
    p = proc(["replay", str(dmg), "--quiet", "--out", str(out)], tmp / "replay_damaged.log")
    rc = p.wait(300)
    text = (tmp / "replay_damaged.log").read_text()
    err = [x for x in text.splitlines() if "error:" in x]
    n = json.loads((out / "summary.json").read_text())["images"] if (out / "summary.json").exists() else 0
    rows.append(("6 replay of a bag with a damaged MCAP chunk", "one error line, exit 2, images before it reported",
                 f"exit {rc}, {len(err)} error line(s), {n} images reported", rc == 2 and len(err) == 1 and n > 0
                 and "Traceback" not in text))
    # stored settings beyond the controller's ranges
    bad = tmp / "bad_settings"
    with bags.BagWriter(bad) as w:
        w.set_custom_data(RUN_KEY, json.dumps(dict(ServoSettings(method="pbvs").__dict__, gain=1e9)))
        for k in range(3):
            t = (k + 1) * 10**8
            w.write("/image", bags.image_msg(np.zeros((64, 64), np.uint8), t), t)
    p = proc(["replay", str(bad), "--quiet", "--out", str(tmp / "bad_out")], tmp / "replay_bad.log")
    rc = p.wait(300)
    text = (tmp / "replay_bad.log").read_text()
    rows.append(("6 replay of a bag storing gain 1e9", "refused with one line, exit 2",
                 f"exit {rc}, " + (text[text.find("refused"):][:48] if "refused" in text else text.strip()[-48:]),
                 rc == 2 and "gain" in text and "refused" in text and "Traceback" not in text))
    # SIGTERM while recording
    term = tmp / "term"
    p = proc(["record", str(term), "--sim", "--method", "pbvs", "--steps", "100000",
                                "--converged-translation", "0"], tmp / "rec_term.log")
    deadline = time.monotonic() + 120
    while not (tmp / "term.partial").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(3.0)
    p.send_signal(signal.SIGTERM)
    rc = p.wait(60)
    valid = (term / "metadata.yaml").exists() and not (tmp / "term.partial").exists()
    n = 0
    if valid:
        with bags.Bag(term) as b:
            n = b.message_count
    rows.append(("6 SIGTERM during record --sim", "a closed, valid bag (no .partial)",
                 f"exit {rc}, valid bag: {valid}, {n} messages", valid and n > 0))
    return rows


def run(items: set[int], tmp: Path) -> list:
    rows = []
    if items & {1, 2, 3, 5, 7, 8}:
        h = Harness(tmp)
        try:
            if items & {2, 3, 7, 8}:
                h.world = World(tmp)
            if items & {2, 3, 7}:
                rows += controller_cases(h, items)
            if 8 in items:
                rows += camera_info_cases(h)
            if items & {3, 5}:
                rows += encoder_cases(h, items)
            if 1 in items:
                rows += signal_cases(h)
        finally:
            h.close()
    if 4 in items:
        rows += file_cases(tmp)
    if 6 in items:
        rows += bag_cases(tmp)
    return sorted(rows, key=lambda r: r[0].split(" ")[0])


def table(rows: list) -> str:
    lines = ["| case | expected | got | |", "|---|---|---|---|"]
    lines += [f"| {c} | {e} | {g} | {'✅' if ok else '❌'} |" for c, e, g, ok in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    items = {int(a) for a in (sys.argv[1:] if argv is None else argv)} or set(ITEMS)
    os.environ.setdefault("ROS_DOMAIN_ID", str(20 + os.getpid() % 70))
    tmp = Path(tempfile.mkdtemp(prefix="fault_injection_"))
    try:
        rows = run(items, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(table(rows))
    bad = sum(1 for r in rows if not r[3])
    print(f"\n{len(rows) - bad}/{len(rows)} cases as expected")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
