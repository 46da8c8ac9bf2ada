"""`latent-vs latency`: camera image published -> twist received, over DDS.

The encoder and controller nodes run as they do on a robot (`--layout separate`: two
processes, what `ros2 run` / servo.launch.py start; `--layout combined`: both in one process,
as the demo runs them). This process plays camera and arm: it publishes one image (default
640x480 mono8, sensor-data QoS) and waits for the twist it causes on cmd_twist before the next
one (ping-pong, so no queueing is measured), over --frames frames after --warmup. The whole run
is pinned to the first --cores CPU cores (default 2, the development PC). Reports median, p90,
p99 and max in ms, and the frames lost (no twist within --timeout).
"""
from __future__ import annotations

import os
import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from .. import paths
from ..errors import UserError
from ..threads import local_discovery, quiet_threads

FLOOR_MEDIAN_MS = 20.0
_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="latent-vs latency", description=__doc__.split("\n\n")[0] + (
        " Encoder + controller as on a robot; median/p99 of image -> twist in ms."))
    p.add_argument("--model", default=None, help="model directory or name (default: models/default)")
    p.add_argument("--method", choices=("mlvs", "dvs"), default="mlvs",
                   help="mlvs: encoder + MLVS controller (needs a model); dvs: controller on the image, no model")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--encoding", default="mono8", choices=("mono8", "mono16", "rgb8", "bgr8"))
    p.add_argument("--frames", type=int, default=300, help="measured frames (default 300)")
    p.add_argument("--warmup", type=int, default=20, help="frames before measuring (default 20)")
    p.add_argument("--layout", choices=("separate", "combined"), default="separate",
                   help="encoder and controller in two processes (default) or one")
    p.add_argument("--cores", type=int, default=2, help="pin the run to this many CPU cores (default 2; 0: no pinning)")
    p.add_argument("--timeout", type=float, default=2.0, help="a frame without a twist after this many s is lost")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # internal: the combined pipeline
    return p


def _ros_args(ns: str, params: dict) -> list[str]:
    out = ["--ros-args", "-r", f"__ns:={ns}"]
    for k, v in params.items():
        out += ["-p", f"{k}:={json.dumps(v) if not isinstance(v, str) else v}"]
    return out


def _pipeline_params(method: str, model_dir: str | None) -> tuple[dict, dict]:
    ctl = dict(method=method, autostart=True, converged_translation=0.0, input_timeout=10.0,
               max_linear_speed=2.0, max_angular_speed=6.0)
    enc = {}
    if model_dir:
        ctl["model_dir"] = enc["model_dir"] = model_dir
    return enc, ctl


def _start_pipeline(args, ns: str, model_dir: str | None) -> list[subprocess.Popen]:
    env = dict(os.environ, PYTHONPATH=_PKG_PARENT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    enc, ctl = _pipeline_params(args.method, model_dir)
    py = [sys.executable, "-m"]
    if args.layout == "combined":
        cmds = [py + ["latent_vs.ros.latency", "--serve", "--method", args.method]
                + (["--model", model_dir] if model_dir else []) + ["--ros-args", "-r", f"__ns:={ns}"]]
    else:
        cmds = [py + ["latent_vs.ros.controller_node"] + _ros_args(ns, ctl)]
        if args.method == "mlvs":
            cmds.append(py + ["latent_vs.ros.encoder_node"] + _ros_args(ns, enc))
    logs = tempfile.TemporaryFile(mode="w+")
    return [subprocess.Popen(c, env=env, stdout=logs, stderr=logs) for c in cmds], logs


def serve(argv) -> int:
    """The combined layout: encoder + controller nodes in this process, one executor."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.utilities import remove_ros_args

    from .controller_node import ControllerNode
    from .encoder_node import EncoderNode
    a = build_parser().parse_args(remove_ros_args(argv))
    model_dir = a.model
    rclpy.init(args=["latency"] + argv)
    enc_p, ctl_p = _pipeline_params(a.method, model_dir)
    nodes = []
    try:
        ctl = ControllerNode(parameter_overrides=[Parameter(k, value=v) for k, v in ctl_p.items()])
        nodes.append(ctl)
        if a.method == "mlvs":
            nodes.append(EncoderNode(model=ctl.law.law.model))
        ex = SingleThreadedExecutor()
        for n in nodes:
            ex.add_node(n)
        ex.spin()
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        for n in nodes:
            n.destroy_node()
        rclpy.try_shutdown()
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    local_discovery()     # also for the node processes it starts (they inherit the environment)
    quiet_threads()
    if "--serve" in argv:
        return serve(argv)
    a = build_parser().parse_args(argv)
    if a.frames < 1 or a.warmup < 0 or a.width < 16 or a.height < 16:
        raise UserError("--frames must be >= 1, --warmup >= 0, --width/--height >= 16")
    model_dir = None
    if a.method == "mlvs":
        model_dir = paths.model_dir(a.model or "default")
        if not os.path.isfile(os.path.join(model_dir, "meta.json")):
            raise UserError(f"model not found: {os.path.join(model_dir, 'meta.json')} (pass --model DIR, "
                            "or --method dvs to measure without a model)")
    if a.cores > 0 and hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))[:a.cores]
        os.sched_setaffinity(0, cores)  # inherited by the pipeline processes
    result = measure(a, model_dir)
    lat = result["latency_ms"]
    print(f"image -> twist over DDS ({a.layout} layout, {a.method}, {a.width}x{a.height} {a.encoding}, "
          f"{result['cores']} cores): median {lat['median']:.1f} ms, p90 {lat['p90']:.1f} ms, "
          f"p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms over {result['frames']} frames, {result['lost']} lost")
    if result["image_to_latent_ms"]:
        e = result["image_to_latent_ms"]
        print(f"  of which image -> latent (encoder): median {e['median']:.1f} ms, p99 {e['p99']:.1f} ms")
    met = lat["median"] <= FLOOR_MEDIAN_MS
    print(f"floor (median <= {FLOOR_MEDIAN_MS:.0f} ms): {'met' if met else 'NOT met'}")
    if a.json:
        d = os.path.dirname(os.path.abspath(a.json))
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=d)
        with os.fdopen(fd, "w") as f:
            json.dump(result, f, indent=2)
        os.replace(tmp, a.json)
    return 0


def measure(a, model_dir: str | None) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image
    from std_msgs.msg import Float32MultiArray

    from ..imageconv import array_to_fields_as
    from ..scene import Scene, SceneConfig, goal_pose
    from ..tasks import sample_tasks
    from .convert import GOAL_QOS, LATEST_QOS, SENSOR_QOS, array_to_image_msg
    from .probe import Probe, spin_until
    from .sim_camera_node import camera_for

    ns = f"/latent_vs_latency_{os.getpid()}"
    scene_cfg = SceneConfig()
    scene = Scene(scene_cfg, camera_for(a.width, a.height))
    goal = goal_pose(scene_cfg)
    # distinct views of the poster (the controller computes a real twist for each)
    frames = [scene.render(T) for T in sample_tasks(16, seed=1)]
    msgs = []
    for img in frames:
        m = Image()
        for k, v in array_to_fields_as(img, a.encoding).items():
            setattr(m, k, v)
        msgs.append(m)
    procs, logs = _start_pipeline(a, ns, model_dir)
    context = rclpy.Context()
    rclpy.init(context=context)
    probe = None
    try:
        probe = Probe(namespace=ns, watch_pose=False, context=context)
        latent_times: list[float] = []
        probe.create_subscription(Float32MultiArray, "latent", lambda _m: latent_times.append(time.monotonic()),
                                  LATEST_QOS)
        img_pub = probe.create_publisher(Image, "image", SENSOR_QOS)
        goal_pub = probe.create_publisher(Image, "goal_image", GOAL_QOS)
        ex = SingleThreadedExecutor(context=context)
        ex.add_node(probe)

        def alive():
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                logs.seek(0)
                raise UserError("the pipeline stopped: " + " | ".join(logs.read().strip().splitlines()[-3:]))
            return True

        print("starting encoder and controller...", flush=True)
        ready = spin_until(ex, lambda: alive() and img_pub.get_subscription_count() > 0
                           and goal_pub.get_subscription_count() > 0
                           and probe.count_publishers(f"{ns}/cmd_twist") > 0, 120.0)
        if not ready:
            raise UserError("encoder/controller did not come up within 120 s")
        goal_img = array_to_image_msg(scene.render(goal))
        deadline = time.monotonic() + 60.0
        while not probe.twists:  # until the goal is set and the whole chain answers
            if time.monotonic() > deadline:
                raise UserError("no twist came back within 60 s of start-up")
            goal_pub.publish(goal_img)
            msgs[0].header.stamp = probe.get_clock().now().to_msg()
            img_pub.publish(msgs[0])
            spin_until(ex, lambda: alive() and bool(probe.twists), 0.5)
        lat, enc, lost = [], [], 0
        total = a.warmup + a.frames
        from tqdm import tqdm
        for i in tqdm(range(total), desc="frames", unit="frame", file=sys.stderr, mininterval=1.0):
            alive()
            msg = msgs[i % len(msgs)]
            n, n_lat = len(probe.twists), len(latent_times)
            t0 = time.monotonic()
            msg.header.stamp = probe.get_clock().now().to_msg()
            img_pub.publish(msg)
            got = spin_until(ex, lambda: len(probe.twists) > n, a.timeout, step_s=0.001)
            if i < a.warmup:
                continue
            if got:
                lat.append((probe.twist_times[n] - t0) * 1000.0)
                if len(latent_times) > n_lat:
                    enc.append((latent_times[n_lat] - t0) * 1000.0)
            else:
                lost += 1
        if not lat:
            raise UserError(f"no twist came back for any of {a.frames} images (lost {lost})")
        lat = np.asarray(lat)
        return {"layout": a.layout, "method": a.method, "model_dir": model_dir, "width": a.width,
                "height": a.height, "encoding": a.encoding, "frames": int(len(lat)), "lost": lost,
                "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                "latency_ms": {"median": float(np.median(lat)), "p90": float(np.percentile(lat, 90)),
                               "p99": float(np.percentile(lat, 99)), "max": float(lat.max()),
                               "mean": float(lat.mean())},
                "image_to_latent_ms": {"median": float(np.median(enc)), "p99": float(np.percentile(enc, 99))}
                if enc else None}
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        logs.close()
        if probe is not None:
            probe.destroy_node()
        rclpy.try_shutdown(context=context)


if __name__ == "__main__":
    sys.exit(main())
