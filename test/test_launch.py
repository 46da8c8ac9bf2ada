"""Launch files and node configs, checked statically (launch_ros is not installable here):
they compile, name executables that setup.py installs and config files that exist, and every
parameter in config/*.yaml (node configs) is declared by its node, with a value of the
declared type inside the declared range."""
import ast
import os
import py_compile
import re

import pytest
import yaml

from latent_vs.ros import controller_node, encoder_node, sim_camera_node

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = [os.path.join(ROOT, "launch", f) for f in ("servo.launch.py", "sim.launch.py", "gazebo.launch.py")]
NODE_CONFIGS = [os.path.join(ROOT, "config", f) for f in ("servo.yaml", "sim.yaml", "gazebo.yaml")]
DECLARED = {"encoder": encoder_node.PARAMETERS, "controller": controller_node.PARAMETERS,
            "sim_camera": sim_camera_node.PARAMETERS}


def console_scripts():
    text = open(os.path.join(ROOT, "setup.py")).read()
    return dict(re.findall(r'"([\w-]+)\s*=\s*([\w.]+):main"', text))


def launch_calls(path):
    """(executable, node name) of each latent_vs Node(...) in a launch file, and the config
    file names it mentions."""
    tree = ast.parse(open(path).read())
    nodes = []
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Node":
            kw = {k.arg: k.value for k in call.keywords}
            if kw["package"].value == "latent_vs":  # others (ros_gz_bridge) come from their packages
                nodes.append((kw["executable"].value, kw["name"].value))
    configs = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and str(n.value).endswith(".yaml")]
    return nodes, configs


@pytest.mark.parametrize("path", LAUNCH)
def test_launch_file_compiles_and_names_real_executables_and_configs(path, tmp_path):
    py_compile.compile(path, cfile=str(tmp_path / "launch.pyc"), doraise=True)
    assert "def generate_launch_description" in open(path).read()
    scripts = console_scripts()
    nodes, configs = launch_calls(path)
    assert nodes
    for executable, name in nodes:
        assert executable in scripts, f"{executable} is not a console script in setup.py"
        module = scripts[executable]
        assert os.path.isfile(os.path.join(ROOT, *module.split(".")) + ".py"), module
        assert name in DECLARED
    assert configs
    for c in configs:
        assert any(os.path.isfile(os.path.join(ROOT, d, c)) for d in ("config", "worlds")), c


def test_setup_installs_launch_and_config_files():
    text = open(os.path.join(ROOT, "setup.py")).read()
    assert 'glob("launch/*.launch.py")' in text and 'glob("config/*.yaml")' in text
    assert 'tree("worlds", share)' in text


def _check_value(node, name, value):
    default, desc = DECLARED[node][name]
    if isinstance(default, bool):
        assert isinstance(value, bool), (node, name, value)
    elif isinstance(default, int):
        assert isinstance(value, int) and not isinstance(value, bool), (node, name, value)
    elif isinstance(default, float):
        assert isinstance(value, float), f"{node}.{name}: write {value} as a float"
    elif isinstance(default, list):
        assert isinstance(value, list) and len(value) == len(default) and all(isinstance(v, float) for v in value), \
            (node, name, value)
    else:
        assert isinstance(value, str), (node, name, value)
    for r in list(desc.floating_point_range) + list(desc.integer_range):
        assert r.from_value <= value <= r.to_value, f"{node}.{name} = {value} outside [{r.from_value}, {r.to_value}]"


@pytest.mark.parametrize("path", NODE_CONFIGS)
def test_node_config_parameters_are_declared_and_valid(path):
    doc = yaml.safe_load(open(path))
    assert doc
    for key, body in doc.items():
        # /**/<node>: the file applies under any namespace (an absolute /<node> would not)
        assert key.startswith("/**/") and list(body) == ["ros__parameters"], key
        node = key.strip("/").split("/")[-1]
        assert node in DECLARED, f"{path}: unknown node {key}"
        for name, value in body["ros__parameters"].items():
            assert name in DECLARED[node], f"{path}: {node} declares no parameter '{name}'"
            _check_value(node, name, value)
    if "/**/controller" in doc:
        ctl = doc["/**/controller"]["ros__parameters"]
        assert controller_node.ControllerNode._check(ctl) is None


# servo.yaml values that differ from the nodes' defaults on purpose (a real robot)
ROBOT_VALUES = {"controller": {"max_linear_speed", "max_angular_speed", "input_timeout", "command_frame"}}


def test_servo_yaml_lists_every_encoder_and_controller_parameter_with_a_comment():
    """A robot's user edits servo.yaml: every parameter of both nodes is there (issue 14:
    strict_intrinsics, intrinsics_tolerance, diagnostics_period, image_qos, ...), at the node's
    default unless it is a robot value, each with a one-line comment."""
    path = NODE_CONFIGS[0]
    doc = yaml.safe_load(open(path))
    lines = open(path).read().splitlines()
    for node in ("encoder", "controller"):
        have = doc[f"/**/{node}"]["ros__parameters"]
        missing = set(DECLARED[node]) - set(have)
        assert not missing, f"servo.yaml lacks {node} parameters {sorted(missing)}"
        for name, (default, _desc) in DECLARED[node].items():
            if name not in ROBOT_VALUES.get(node, ()):
                assert have[name] == default, (node, name, have[name], default)
    for name in ("strict_intrinsics", "intrinsics_tolerance", "intrinsics_matrix", "image_qos", "no_image_warning",
                 "diagnostics_period", "future_tolerance", "threads"):
        line = next(ln for ln in lines if ln.strip().startswith(f"{name}:"))
        assert "#" in line and len(line.split("#", 1)[1].strip()) > 5, line


def test_every_parameter_has_a_description():
    for node, params in DECLARED.items():
        for name, (_default, desc) in params.items():
            assert desc.description, f"{node}.{name}"
    units = [n for n, (_d, desc) in controller_node.PARAMETERS.items() if "[" in desc.description]
    assert {"gain", "max_linear_speed", "max_angular_speed", "input_timeout", "hand_eye"} <= set(units)


@pytest.mark.ros
def test_configs_load_through_rclpy_params_file():
    """What ros2 launch does with the config: --params-file (values reach the nodes)."""
    rclpy = pytest.importorskip("rclpy")
    from latent_vs.ros.controller_node import ControllerNode
    from latent_vs.ros.sim_camera_node import SimCameraNode
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        sim_yaml, servo_yaml = NODE_CONFIGS[1], NODE_CONFIGS[0]
        sim = SimCameraNode(context=context, cli_args=["--ros-args", "--params-file", sim_yaml])
        assert sim.get_parameter("rate").value == 30.0 and sim.get_parameter("publish_goal_image").value is True
        # mlvs needs a model: the robot config is checked with dvs, as a later -p overrides the file
        ctl = ControllerNode(context=context, cli_args=["--ros-args", "--params-file", servo_yaml,
                                                        "-p", "method:=dvs"])
        assert ctl.get_parameter("command_frame").value == "tool0"
        assert ctl.ctl.limits.max_linear_speed == 0.05 and ctl.ctl.input_timeout == 0.3
        assert not ctl.ctl.enabled  # a robot waits for ~/enable
        sim.destroy_node()
        ctl.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
