"""Launch arguments of every launch file: namespace, use_sim_time, log_level, params_file and
model_dir are declared, each declared argument is used, and the values reach the nodes. The
launch files are evaluated with stand-ins for launch / launch_ros (test/launch_eval.py)."""
import glob
import os

import pytest

from launch_eval import ROOT, evaluate

LAUNCH_FILES = sorted(glob.glob(os.path.join(ROOT, "launch", "*.launch.py")))
COMMON = ("namespace", "use_sim_time", "log_level", "params_file", "model_dir")
OURS = ("encoder_node", "controller_node", "sim_camera_node")


def test_every_launch_file_is_checked():
    names = {os.path.basename(p) for p in LAUNCH_FILES}
    assert {"servo.launch.py", "sim.launch.py", "gazebo.launch.py"} <= names


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=os.path.basename)
def test_common_arguments_are_declared_with_descriptions(path):
    from launch_eval import DeclareLaunchArgument, load
    _m, ld = load(path)
    args = {a.name: a for a in ld.entities if isinstance(a, DeclareLaunchArgument)}
    assert set(COMMON) <= set(args), sorted(set(COMMON) - set(args))
    for a in args.values():
        assert a.description, a.name


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=os.path.basename)
def test_every_declared_argument_is_used(path):
    got = evaluate(path)
    unused = set(got.declared) - got.used
    assert not unused, f"{os.path.basename(path)}: declared but never used: {sorted(unused)}"
    assert os.path.isfile(got.node("controller").params[0])


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=os.path.basename)
def test_common_arguments_reach_every_node(path, tmp_path):
    pf = tmp_path / "p.yaml"
    pf.write_text("/**:\n  ros__parameters: {}\n")
    got = evaluate(path, namespace="arm1", use_sim_time="true", log_level="debug", params_file=str(pf),
                   model_dir="/models/m")
    ours = [n for n in got.nodes if n.executable in OURS]
    assert {n.executable for n in ours} >= {"encoder_node", "controller_node"}
    for n in got.nodes:
        assert n.namespace == "/arm1", (n.name, n.namespace)
        dicts = [p for p in n.params if isinstance(p, dict)]
        assert any(d.get("use_sim_time") is True for d in dicts), n.name
        if n.executable in OURS:
            assert n.ros_arguments[-2:] == ["--log-level", "debug"], n.name
            assert n.params[0] == str(pf), n.name
            if n.executable != "sim_camera_node":
                assert dicts[-1]["model_dir"] == "/models/m", n.name
    # and the defaults: no namespace, wall-clock time (except in Gazebo), info
    got = evaluate(path)
    for n in got.nodes:
        assert n.namespace == "" and any(d.get("use_sim_time") is (path.endswith("gazebo.launch.py"))
                                         for d in n.params if isinstance(d, dict))
        if n.executable in OURS:
            assert n.ros_arguments[-2:] == ["--log-level", "info"]
            assert os.path.basename(n.params[0]).endswith(".yaml")


def test_sim_launch_runs_the_encoder_only_for_mlvs():
    path = os.path.join(ROOT, "launch", "sim.launch.py")
    assert evaluate(path).node("encoder").enabled
    assert not evaluate(path, method="pbvs").node("encoder").enabled
    assert evaluate(path, method="pbvs").node("controller").params[-1]["method"] == "pbvs"


def test_servo_launch_overrides():
    path = os.path.join(ROOT, "launch", "servo.launch.py")
    got = evaluate(path, hand_eye="[0.0, 0.0, 0.05, 0.0, 0.0, 0.0]", stamped="false",
                   camera_topic="/cam/image_raw", command_topic="/servo/cmd")
    ctl = got.node("controller")
    assert ctl.params[-1]["hand_eye"] == [0.0, 0.0, 0.05, 0.0, 0.0, 0.0] and ctl.params[-1]["stamped"] is False
    assert ("image", "/cam/image_raw") in ctl.remappings and ("cmd_twist", "/servo/cmd") in ctl.remappings
    assert ("image", "/cam/image_raw") in got.node("encoder").remappings


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=os.path.basename)
def test_strict_intrinsics_reaches_the_encoder_only(path):
    """strict_intrinsics (issue 14, item 3): declared where an encoder runs, false by default
    (the node's default), a bool parameter of the encoder alone."""
    from latent_vs.ros import encoder_node
    got = evaluate(path)
    assert got.declared["strict_intrinsics"] == "false"
    assert encoder_node.PARAMETERS["strict_intrinsics"][0] is False
    assert got.node("encoder").params[-1]["strict_intrinsics"] is False
    got = evaluate(path, strict_intrinsics="true")
    assert got.node("encoder").params[-1]["strict_intrinsics"] is True
    for n in got.nodes:
        if n.name != "encoder":
            assert not any("strict_intrinsics" in p for p in n.params if isinstance(p, dict)), n.name
    with pytest.raises(AssertionError, match="not a bool"):
        evaluate(path, strict_intrinsics="maybe")
