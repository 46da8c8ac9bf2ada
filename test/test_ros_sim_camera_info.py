"""The simulated camera's camera_info (issue 14 follow-up): sim_camera publishes the
intrinsics it renders with, beside its image topic, with each image's stamp and frame, so the
demo's encoder checks them and reports a match (/diagnostics OK, "intrinsics: match", the
log line) instead of WARN "no camera_info"; strict_intrinsics servos on it."""
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import Float32MultiArray  # noqa: E402

from latent_vs import paths  # noqa: E402
from latent_vs.camera import Camera, default_camera  # noqa: E402
from latent_vs.learning.export import load_model  # noqa: E402
from latent_vs.ros import intrinsics  # noqa: E402
from latent_vs.ros.convert import SENSOR_QOS  # noqa: E402
from latent_vs.ros.demo import demo_settings  # noqa: E402
from latent_vs.ros.encoder_node import EncoderNode  # noqa: E402
from latent_vs.ros.probe import spin_until  # noqa: E402
from latent_vs.ros.sim_camera_node import SimCameraNode, camera_for, camera_info_msg  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.usefixtures("ros")]
MODEL_CAM = intrinsics.model_intrinsics(default_camera(64))


# ------------------------------------------------------------------ without ROS
@pytest.mark.parametrize("width, height", [(224, 224), (64, 64), (640, 480), (480, 640), (321, 240), (1920, 1080)])
def test_the_sim_cameras_info_is_its_render_camera_and_crops_to_the_models(width, height):
    cam = camera_for(width, height)
    msg = camera_info_msg(cam, frame_id="cam")
    assert (msg.width, msg.height, msg.header.frame_id) == (width, height, "cam")
    np.testing.assert_array_equal(np.reshape(msg.k, (3, 3)), cam.K)
    np.testing.assert_array_equal(np.reshape(msg.p, (3, 4))[:, :3], cam.K)
    assert list(msg.d) == [0.0] * 5 and list(msg.r) == [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    got = intrinsics.from_camera_info(msg)
    assert got == intrinsics.Intrinsics(width, height, cam.px, cam.py, cam.u0, cam.v0)
    assert intrinsics.from_camera_info(msg, "p") == got
    check = intrinsics.check(got, MODEL_CAM, 1e-12)     # exact, to rounding
    assert check.ok, check.line


def test_the_demos_sim_settings_match_the_shipped_models_camera():
    """config/sim.yaml's width/height (the demo's and sim.launch.py's) against models/default."""
    import json
    import os
    meta = os.path.join(paths.model_dir("default"), "meta.json")
    if not os.path.isfile(meta):
        pytest.skip("no models/default")
    model = intrinsics.model_intrinsics(Camera.from_dict(json.load(open(meta))["camera"]))
    _ctl, sim = demo_settings("mlvs")
    cam = camera_for(sim.get("width", 224), sim.get("height", 224))
    assert intrinsics.check(intrinsics.from_camera_info(camera_info_msg(cam)), model, 1e-12).ok


# ------------------------------------------------------------------ over DDS
@pytest.fixture(scope="module")
def model(random_model):
    return load_model(random_model("sim-camera-info-test", 8))


class Watch(Node):
    """/diagnostics (newest status of each name), and the sim's image and camera_info."""

    def __init__(self, ns: str, image_topic: str = "image", info_topic: str = "camera_info"):
        super().__init__("watch", namespace=ns)
        self.latest: dict[str, DiagnosticStatus] = {}
        self.images, self.infos, self.latents = [], [], []
        self.create_subscription(DiagnosticArray, "/diagnostics", self.on_array, 10)
        self.create_subscription(Image, image_topic, self.images.append, SENSOR_QOS)
        self.create_subscription(CameraInfo, info_topic, self.infos.append, SENSOR_QOS)
        self.create_subscription(Float32MultiArray, "latent", self.latents.append, 10)

    def on_array(self, msg):
        for st in msg.status:
            self.latest[st.name] = st

    def values(self, name):
        return {kv.key: kv.value for kv in self.latest[name].values}


def params(**kw):
    return [Parameter(k, value=v) for k, v in kw.items()]


@pytest.mark.parametrize("strict", [False, True])
def test_demo_pipeline_encoder_reports_the_sim_cameras_intrinsics_as_matching(ex, model, capfd, strict):
    """sim_camera -> encoder as the demo starts them (config/sim.yaml's sim settings, one
    namespace, the model's scene): the encoder logs the match, /diagnostics says OK and
    "intrinsics: match"; strict_intrinsics publishes latents on it (nothing withheld)."""
    ns = f"/sim_info_{int(strict)}"
    _ctl, sim_params = demo_settings("mlvs")
    sim_params.update(rate=15.0, publish_goal_image=False)
    sim = SimCameraNode(scene_config=model.scene, parameter_overrides=params(**sim_params), namespace=ns)
    enc = EncoderNode(model=model, namespace=ns,
                      parameter_overrides=params(diagnostics_period=0.3, strict_intrinsics=strict))
    watch = Watch(ns)
    for n in (sim, enc, watch):
        ex.add_node(n)
    name = f"{ns.lstrip('/')}/encoder: encoder"
    assert enc.camera_info_topic == f"{ns}/camera_info" == sim.info_pub.topic_name
    ok = spin_until(ex, lambda: name in watch.latest and watch.latest[name].level == DiagnosticStatus.OK
                    and watch.values(name)["intrinsics"] == "match" and len(watch.latents) > 3, 20.0)
    st = watch.latest.get(name)
    assert ok, (st.message, watch.values(name)) if st else sorted(watch.latest)
    v = watch.values(name)
    assert st.message.startswith("encoding at") and float(v["intrinsics difference (worst) [%]"]) < 1e-9
    assert v["camera_info topic"] == f"{ns}/camera_info" and v["latents withheld (total)"] == "0"
    assert enc.check.ok and enc._intrinsics_problem() is None and enc.withheld == 0
    err = capfd.readouterr().err
    assert err.count("camera_info matches the model's intrinsics") == 1, err
    assert "no camera_info" not in err and "differ from the model's" not in err
    # each camera_info carries its image's stamp and frame
    stamps = {(i.header.stamp.sec, i.header.stamp.nanosec): i.header.frame_id for i in watch.infos}
    assert len(watch.images) > 3 and len(watch.infos) > 3
    paired = [m for m in watch.images if (m.header.stamp.sec, m.header.stamp.nanosec) in stamps]
    assert len(paired) >= len(watch.images) - 2          # best effort: one may be lost, and the last in flight
    assert all(stamps[(m.header.stamp.sec, m.header.stamp.nanosec)] == m.header.frame_id == "camera" for m in paired)
    info = watch.infos[-1]
    assert (info.width, info.height) == (watch.images[-1].width, watch.images[-1].height) == (224, 224)


def test_camera_info_follows_a_remapped_image_topic_and_can_be_switched_off(ex, model):
    sim = SimCameraNode(parameter_overrides=params(publish_goal_image=False, width=320, height=240),
                        cli_args=["--ros-args", "-r", "__ns:=/arm2", "-r", "image:=camera/image_raw"])
    enc = EncoderNode(model=model, cli_args=["--ros-args", "-r", "__ns:=/arm2", "-r", "image:=camera/image_raw"])
    assert sim.info_pub.topic_name == enc.camera_info_topic == "/arm2/camera/camera_info"
    watch = Watch("/arm2", "camera/image_raw", "camera/camera_info")
    for n in (sim, enc, watch):
        ex.add_node(n)
    assert spin_until(ex, lambda: enc.check is not None and enc.image_size is not None, 15.0)
    assert enc.check.ok and enc._intrinsics_problem() is None and enc.camera.width == 320
    for n in (sim, enc, watch):
        ex.remove_node(n)
        n.destroy_node()
    sim = SimCameraNode(parameter_overrides=params(publish_goal_image=False, publish_camera_info=False),
                        namespace="/arm3")
    watch = Watch("/arm3")
    for n in (sim, watch):
        ex.add_node(n)
    assert sim.info_pub is None
    spin_until(ex, lambda: len(watch.images) > 5, 10.0)
    time.sleep(0.1)
    assert len(watch.images) > 5 and not watch.infos
