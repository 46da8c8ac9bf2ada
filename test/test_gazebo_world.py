"""worlds/poster.sdf (Gazebo, not runnable here) checked without Gazebo: `ign sdf -k` (Debian's
ignition-tools + libsdformat-dev, SDF <= 1.9, installed by scripts/setup_env.sh), and its
camera, poster and frames against models/default/meta.json, the scene config, the bridge
YAML and config/gazebo.yaml."""
import hashlib
import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import yaml

from latent_vs import geometry
from latent_vs.camera import Camera
from latent_vs.scene import SceneConfig, goal_pose

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORLD = os.path.join(ROOT, "worlds", "poster.sdf")
BRIDGE = os.path.join(ROOT, "worlds", "poster_bridge.yaml")
GAZEBO_YAML = os.path.join(ROOT, "config", "gazebo.yaml")
META = json.load(open(os.path.join(ROOT, "models", "default", "meta.json")))


def _world():
    return ET.parse(WORLD).getroot()


def _floats(el):
    return [float(v) for v in el.text.split()]


def _pose(el):
    """4x4 of an SDF <pose> (x y z roll pitch yaw, fixed axes: the same as ROS rpy)."""
    p = el.find("pose")
    return geometry.rpy_to_matrix(*_floats(p)) if p is not None else np.eye(4)


def _model(root, name):
    (m,) = [m for m in root.iter("model") if m.get("name") == name]
    return m


def test_world_is_valid_sdf_for_ign_sdf_check():
    ign = shutil.which("ign")
    if ign is None:
        pytest.skip("`ign` not installed (apt-get install ignition-tools libsdformat-dev; "
                    "scripts/setup_env.sh does it where apt-get works as root)")
    r = subprocess.run([ign, "sdf", "-k", WORLD], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Valid." in r.stdout, r.stdout + r.stderr
    assert _world().get("version") == "1.9"  # the newest version libsdformat12 checks


def test_ign_sdf_check_rejects_a_broken_world(tmp_path):
    """The check above is a real check: a bad value fails it."""
    ign = shutil.which("ign")
    if ign is None:
        pytest.skip("`ign` not installed (see test_world_is_valid_sdf_for_ign_sdf_check)")
    bad = tmp_path / "bad.sdf"
    bad.write_text(open(WORLD).read().replace("<width>224</width>", "<width>wide</width>"))
    r = subprocess.run([ign, "sdf", "-k", str(bad)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Valid." not in r.stdout


def test_camera_has_the_models_intrinsics():
    sensor = _world().find(".//sensor[@type='camera']")
    cam = sensor.find("camera")
    w, h = int(cam.find("image/width").text), int(cam.find("image/height").text)
    k = {n: float(cam.find(f"lens/intrinsics/{n}").text) for n in ("fx", "fy", "cx", "cy", "s")}
    gz = Camera(w, h, k["fx"], k["fy"], k["cx"], k["cy"])
    model = Camera.from_dict(META["camera"])
    scaled = gz.scaled(model.width, model.height)  # what the encoder's resize turns it into
    np.testing.assert_allclose([scaled.px, scaled.py, scaled.u0, scaled.v0],
                               [model.px, model.py, model.u0, model.v0], rtol=0, atol=1e-9)
    assert k["s"] == 0.0 and w * model.height == h * model.width  # same aspect: no crop
    # the horizontal field of view Gazebo also reads agrees with fx
    assert float(cam.find("horizontal_fov").text) == pytest.approx(2 * np.arctan(w / (2 * k["fx"])), abs=1e-12)
    assert cam.find("image/format").text == "L8"  # grey: bridged as mono8, which the encoder takes
    assert float(sensor.find("update_rate").text) == 30.0


def test_poster_matches_the_scene_config_and_texture():
    root = _world()
    scene = SceneConfig.from_dict(META["scene"])
    assert (scene.width_m, scene.height_m, scene.goal_depth_m) == (SceneConfig().width_m, SceneConfig().height_m,
                                                                   SceneConfig().goal_depth_m)
    poster = _model(root, "poster")
    assert poster.find("static").text == "true"
    plane = poster.find(".//visual/geometry/plane")
    assert _floats(plane.find("size")) == [scene.width_m, scene.height_m]
    assert _floats(plane.find("normal")) == [0.0, 0.0, 1.0]
    albedo = poster.find(".//pbr/metal/albedo_map").text
    texture = os.path.join(os.path.dirname(WORLD), albedo)  # gz-sim resolves it beside the world
    assert META["scene"]["texture"] == "package:data/poster_coffee.png"
    meta_texture = os.path.join(ROOT, "latent_vs", "data", "poster_coffee.png")

    def digest(p):
        return hashlib.sha256(open(p, "rb").read()).hexdigest()
    assert digest(texture) == digest(meta_texture)


def test_frames_rig_at_goal_and_optical_hand_eye():
    """The rig starts at the goal: the optical frame (sensor at camera_link's origin, Gazebo
    camera looking along +x, rotated by config/gazebo.yaml's hand_eye) seen from the scene
    frame of the poster (x = texture right, y = texture down, z into the poster) is
    latent_vs.scene.goal_pose: 0.6 m in front of the centre, optical axis perpendicular."""
    root = _world()
    poster, rig = _model(root, "poster"), _model(root, "camera_rig")
    link = rig.find("link")
    sensor = link.find("sensor")
    T_w_poster = _pose(poster) @ _pose(poster.find("link")) @ _pose(poster.find(".//visual"))
    # plane local frame: x = texture right, y = texture up, z = normal towards the camera;
    # the scene frame turns it by pi about x (y down, z into the poster)
    T_w_scene = T_w_poster @ geometry.rpy_to_matrix(0, 0, 0, np.pi, 0, 0)
    ctl = yaml.safe_load(open(GAZEBO_YAML))["/**/controller"]["ros__parameters"]
    T_link_opt = geometry.rpy_to_matrix(*ctl["hand_eye"])
    T_w_opt = _pose(rig) @ _pose(link) @ _pose(sensor) @ T_link_opt
    T_scene_opt = np.linalg.inv(T_w_scene) @ T_w_opt
    np.testing.assert_allclose(T_scene_opt, goal_pose(SceneConfig.from_dict(META["scene"])), atol=1e-9)
    # the optical axes in camera_link: z forward = Gazebo's +x, x right = -y, y down = -z
    R = T_link_opt[:3, :3]
    np.testing.assert_allclose(R @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(R @ [1, 0, 0], [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(R @ [0, 1, 0], [0, 0, -1], atol=1e-12)
    # a camera twist "forward along the optical axis" becomes +x linear velocity of the rig
    V = geometry.velocity_twist_matrix(T_link_opt)
    np.testing.assert_allclose(V @ [0, 0, 0.1, 0, 0, 0], [0.1, 0, 0, 0, 0, 0], atol=1e-12)
    assert ctl["command_frame"] == link.get("name") and ctl["stamped"] is False
    assert link.find("gravity").text == "false"


def test_bridge_maps_the_worlds_topics():
    root = _world()
    entries = yaml.safe_load(open(BRIDGE))
    keys = {"ros_topic_name", "gz_topic_name", "ros_type_name", "gz_type_name", "direction"}
    assert all(set(e) == keys for e in entries)
    by_ros = {e["ros_topic_name"]: e for e in entries}
    sensor_topic = root.find(".//sensor[@type='camera']/topic").text
    image, info = by_ros["camera/image_raw"], by_ros["camera/camera_info"]
    assert image["gz_topic_name"] == sensor_topic and image["direction"] == "GZ_TO_ROS"
    assert image["ros_type_name"] == "sensor_msgs/msg/Image" and image["gz_type_name"] == "gz.msgs.Image"
    # gz-sensors publishes camera_info beside the image topic
    assert info["gz_topic_name"] == sensor_topic.rsplit("/", 1)[0] + "/camera_info"
    assert info["ros_type_name"] == "sensor_msgs/msg/CameraInfo" and info["direction"] == "GZ_TO_ROS"
    vel_plugin = [p for p in root.iter("plugin") if p.get("name") == "gz::sim::systems::VelocityControl"]
    assert len(vel_plugin) == 1
    cmd = by_ros["cmd_vel"]
    assert cmd["gz_topic_name"] == vel_plugin[0].find("topic").text and cmd["direction"] == "ROS_TO_GZ"
    assert cmd["ros_type_name"] == "geometry_msgs/msg/Twist" and cmd["gz_type_name"] == "gz.msgs.Twist"
    assert by_ros["/clock"]["direction"] == "GZ_TO_ROS"


def test_gazebo_launch_wires_world_bridge_and_nodes():
    from launch_eval import evaluate
    got = evaluate(os.path.join(ROOT, "launch", "gazebo.launch.py"))
    (cmd, enabled), = got.processes
    assert cmd[0].startswith("gz sim -r ") and cmd[0].endswith(WORLD) and enabled
    bridge = got.node("gz_bridge")
    assert bridge.package == "ros_gz_bridge" and bridge.params[0]["config_file"] == BRIDGE
    topics = {e["ros_topic_name"] for e in yaml.safe_load(open(BRIDGE))}
    enc, ctl = got.node("encoder"), got.node("controller")
    assert dict(enc.remappings)["image"] in topics and dict(ctl.remappings)["image"] in topics
    assert dict(ctl.remappings)["cmd_twist"] in topics
    assert enc.params[0] == ctl.params[0] == GAZEBO_YAML
