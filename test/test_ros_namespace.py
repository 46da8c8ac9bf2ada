"""config/*.yaml under a namespace: the node executables started as `ros2 launch
namespace:=/arm1` starts them (`--ros-args -r __ns:=/arm1 --params-file config/servo.yaml`),
over real DDS; the values are read back through the nodes' parameter services
(rcl_interfaces/srv/GetParameters). With absolute keys (`/controller:`) the file would be
silently skipped and the nodes would run on their defaults (faster limits)."""
import os
import subprocess
import sys
import time

import pytest
import yaml

rclpy = pytest.importorskip("rclpy")
from rcl_interfaces.srv import GetParameters  # noqa: E402
from rclpy.parameter import parameter_value_to_python  # noqa: E402

from latent_vs.ros import controller_node, encoder_node  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVO_YAML = os.path.join(ROOT, "config", "servo.yaml")
NS = "/arm1"


def start(module, *extra):
    cmd = [sys.executable, "-m", f"latent_vs.ros.{module}", "--ros-args", "-r", f"__ns:={NS}",
           "--params-file", SERVO_YAML, *extra]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def get_parameters(node, service, names, timeout=90.0):
    """{name: value} from `service` (…/get_parameters), waiting for the node to come up."""
    client = node.create_client(GetParameters, service)
    try:
        deadline = time.monotonic() + timeout
        while not client.wait_for_service(timeout_sec=1.0):
            assert time.monotonic() < deadline, f"{service} did not appear"
        future = client.call_async(GetParameters.Request(names=list(names)))
        rclpy.spin_until_future_complete(node, future, timeout_sec=30.0)
        assert future.done(), f"{service}: no answer"
        return {n: parameter_value_to_python(v) for n, v in zip(names, future.result().values)}
    finally:
        node.destroy_client(client)


def test_servo_yaml_applies_under_a_namespace(procs):
    cfg = yaml.safe_load(open(SERVO_YAML))
    ctl_cfg, enc_cfg = cfg["/**/controller"]["ros__parameters"], cfg["/**/encoder"]["ros__parameters"]
    names = ["gain", "max_linear_speed", "max_angular_speed", "input_timeout", "command_frame", "autostart"]
    # the file's values differ from the nodes' own defaults, so reading them back proves it was
    # applied (the robot gain equals the default: sim.yaml's is checked below)
    for n in ["max_linear_speed", "max_angular_speed", "input_timeout", "command_frame"]:
        assert ctl_cfg[n] != controller_node.PARAMETERS[n][0], n
    procs.append(start("encoder_node", "-p", "threads:=1"))
    procs.append(start("controller_node"))  # servo.yaml as is: MLVS with models/default
    rclpy.init()
    try:
        node = rclpy.create_node("namespace_probe")
        try:
            for p in procs:
                assert p.poll() is None, p.communicate(timeout=10)[1]
            got = get_parameters(node, f"{NS}/controller/get_parameters", names)
            assert got == {n: ctl_cfg[n] for n in names}
            assert got["max_linear_speed"] == 0.05 and got["gain"] == 0.5
            enc = get_parameters(node, f"{NS}/encoder/get_parameters", list(enc_cfg))
            assert enc == enc_cfg and set(enc) <= set(encoder_node.PARAMETERS)
            # the nodes live in the namespace, their topics too
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline:
                nodes = set(node.get_node_names_and_namespaces())
                if {("controller", NS), ("encoder", NS)} <= nodes:
                    break
                time.sleep(0.2)
            assert {("controller", NS), ("encoder", NS)} <= nodes, nodes
            topics = dict(node.get_topic_names_and_types())
            assert f"{NS}/latent" in topics and f"{NS}/cmd_twist" in topics, sorted(topics)
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown()


def test_servo_launch_with_namespace_over_dds(procs, tmp_path):
    """servo.launch.py namespace:=/arm1 (evaluated by test/launch_eval.py into the commands
    ros2 launch runs): the nodes come up in /arm1 with servo.yaml's values and the arguments
    (strict_intrinsics:=true over the file's false)."""
    from launch_eval import command_line, evaluate
    got = evaluate(os.path.join(ROOT, "launch", "servo.launch.py"), namespace="arm1", log_level="warn",
                   command_frame="flange", hand_eye="[0.0, 0.0, 0.05, 0.0, 0.0, 0.0]", strict_intrinsics="true")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for n in got.nodes:
        procs.append(subprocess.Popen(command_line(n, str(tmp_path)), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    rclpy.init()
    try:
        node = rclpy.create_node("launch_probe")
        try:
            got = get_parameters(node, f"{NS}/controller/get_parameters",
                                 ["max_linear_speed", "gain", "command_frame", "hand_eye", "use_sim_time"])
            assert got == {"max_linear_speed": 0.05, "gain": 0.5, "command_frame": "flange",
                           "hand_eye": [0.0, 0.0, 0.05, 0.0, 0.0, 0.0], "use_sim_time": False}
            assert get_parameters(node, f"{NS}/encoder/get_parameters", ["threads", "strict_intrinsics"]) == {
                "threads": 1, "strict_intrinsics": True}
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown()


def test_sim_yaml_applies_under_a_namespace_in_process():
    """sim.yaml's gain (3.0, not the default 0.5) and limits reach a namespaced controller."""
    from latent_vs.ros.controller_node import ControllerNode
    from latent_vs.ros.sim_camera_node import SimCameraNode
    sim_yaml = os.path.join(ROOT, "config", "sim.yaml")
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        args = ["--ros-args", "-r", "__ns:=/arm2", "--params-file", sim_yaml]
        ctl = ControllerNode(context=context, cli_args=args + ["-p", "method:=pbvs"])
        sim = SimCameraNode(context=context, cli_args=args)
        assert ctl.get_namespace() == "/arm2" and sim.get_namespace() == "/arm2"
        assert controller_node.PARAMETERS["gain"][0] != 3.0
        assert ctl.get_parameter("gain").value == 3.0 and ctl.ctl.limits.max_linear_speed == 0.15
        assert sim.get_parameter("publish_goal_image").value is True
        ctl.destroy_node()
        sim.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
