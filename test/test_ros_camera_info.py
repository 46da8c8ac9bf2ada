"""camera_info against the model's intrinsics (issue 14, item 3): the crop-and-resize rule on
the intrinsics checked against the encoder's own image preprocessing, then the encoder over
real DDS: a matching camera_info is quiet, a different one is reported once with both sets
of numbers, strict_intrinsics withholds the latents (the controller goes stale and sends a
zero twist) until a matching one comes, and bad camera_info (zeros, NaN) never kills it."""
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import Float32MultiArray  # noqa: E402

from latent_vs.camera import default_camera  # noqa: E402
from latent_vs.learning.export import load_model, prepare_images  # noqa: E402
from latent_vs.ros import intrinsics  # noqa: E402
from latent_vs.ros.convert import array_to_image_msg  # noqa: E402
from latent_vs.ros.encoder_node import EncoderNode  # noqa: E402
from latent_vs.ros.probe import Probe, spin_until  # noqa: E402

pytestmark = pytest.mark.usefixtures("ros")    # rclpy.init() for the module (conftest.py)
MODEL_CAM = intrinsics.model_intrinsics(default_camera(64))


def camera_for_model(width, height, size=64, model=MODEL_CAM):
    """The intrinsics a width x height camera needs for its crop-and-resize to give the model's."""
    s = min(width, height)
    x0, y0, k = (width - s) // 2, (height - s) // 2, size / s
    return intrinsics.Intrinsics(width, height, model.fx / k, model.fy / k,
                                 (model.cx + 0.5) / k - 0.5 + x0, (model.cy + 0.5) / k - 0.5 + y0)


def info_msg(cam: intrinsics.Intrinsics, frame="cam_optical") -> CameraInfo:
    msg = CameraInfo(width=cam.width, height=cam.height, distortion_model="plumb_bob")
    msg.k = [cam.fx, 0.0, cam.cx, 0.0, cam.fy, cam.cy, 0.0, 0.0, 1.0]
    msg.p = [cam.fx, 0.0, cam.cx, 0.0, 0.0, cam.fy, cam.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    msg.d = [0.0] * 5
    msg.header.frame_id = frame
    return msg


# ------------------------------------------------------------------ the rule, without ROS
def test_the_models_own_camera_at_224_px_matches_meta():
    cam = intrinsics.Intrinsics(224, 224, 300.0, 300.0, 119.0, 109.0)    # worlds/poster.sdf's camera
    seen, how = intrinsics.crop_and_resize(cam, 64)
    assert how == "resize to 64x64"
    np.testing.assert_allclose([seen.fx, seen.fy, seen.cx, seen.cy],
                               [MODEL_CAM.fx, MODEL_CAM.fy, MODEL_CAM.cx, MODEL_CAM.cy], atol=1e-9)
    assert intrinsics.check(cam, MODEL_CAM, 0.001).ok


@pytest.mark.parametrize("width, height", [(640, 480), (480, 640), (200, 150), (1920, 1080), (63, 64)])
def test_intrinsics_follow_the_encoders_crop_and_resize(width, height):
    """A ramp image whose grey level is the column (row) coordinate near the principal point
    (one grey level per pixel, exact in uint8): after the encoder's own prepare_images, the
    model-input pixel at u0 (v0) must read cx (cy) of the camera."""
    cx, cy = 0.43 * width + 3.3, 0.57 * height - 2.1
    cam = intrinsics.Intrinsics(width, height, 500.0, 510.0, cx, cy)
    seen, _ = intrinsics.crop_and_resize(cam, 64)
    for axis, centre, pred in ((1, cx, seen.cx), (0, cy, seen.cy)):
        n = (width, height)[1 - axis]
        ramp = np.clip(128 + np.arange(n) - round(centre), 0, 255)
        grey = np.broadcast_to(ramp[None, :] if axis == 1 else ramp[:, None], (height, width)).astype(np.uint8)
        out = prepare_images(grey, 64)[0].astype(float)
        profile = out[32, :] if axis == 1 else out[:, 32]
        # the input coordinate seen at model pixel `pred` (a ramp: linear interpolation is exact)
        seen_coord = np.interp(pred, np.arange(64), profile) - 128 + round(centre)
        assert seen_coord == pytest.approx(centre, abs=0.6), (axis, width, height)
    assert seen.fx == pytest.approx(500.0 * 64 / min(width, height))


def test_check_reports_both_sets_of_numbers_and_the_tolerance():
    good = camera_for_model(640, 480)
    assert intrinsics.check(good, MODEL_CAM, 1e-9).ok
    bad = intrinsics.Intrinsics(640, 480, good.fx * 1.1, good.fy, good.cx + 12, good.cy)
    c = intrinsics.check(bad, MODEL_CAM, 0.02)
    assert not c.ok and c.worst == pytest.approx(0.1, rel=1e-6)
    for text in ("640x480", f"fx {bad.fx:.2f}", "crop 480x480 at (80, 0), resize to 64x64",
                 f"px {MODEL_CAM.fx:.2f}", f"u0 {MODEL_CAM.cx:.2f}", "fx +10.0%", "intrinsics_tolerance 2%"):
        assert text in c.line, (text, c.line)
    assert intrinsics.check(bad, MODEL_CAM, 0.2).ok


def test_binning_roi_and_bad_camera_info():
    full = camera_for_model(1280, 960)
    msg = info_msg(full)
    msg.binning_x = msg.binning_y = 2
    cam = intrinsics.from_camera_info(msg)
    assert (cam.width, cam.height, cam.fx, cam.cx) == (640, 480, full.fx / 2, full.cx / 2)
    msg = info_msg(full)
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = 100, 50, 800, 600
    cam = intrinsics.from_camera_info(msg)
    assert (cam.width, cam.height, cam.cx, cam.cy) == (800, 600, full.cx - 100, full.cy - 50)
    assert intrinsics.from_camera_info(info_msg(full), "p") == intrinsics.from_camera_info(info_msg(full), "k")
    for broken, why in [(dict(k=[0.0] * 9), "all zeros"), (dict(k=[np.nan] * 9), "non-finite"),
                        (dict(width=0), "image size"), (dict(k=[-5.0, 0, 320, 0, 5, 240, 0, 0, 1]), "not positive"),
                        (dict(k=[500.0, 0, 1e6, 0, 500, 240, 0, 0, 1]), "far outside"),
                        (dict(binning_x=100000), "after binning")]:
        msg = info_msg(full)
        for k, v in broken.items():
            setattr(msg, k, v)
        with pytest.raises(ValueError, match=why):
            intrinsics.from_camera_info(msg)


# ------------------------------------------------------------------ the encoder over DDS
@pytest.fixture(scope="module")
def model(random_model):
    return load_model(random_model("camera-info-test", 8))


class Camera:
    """A camera on DDS: image on camera/image_raw, camera_info beside it (image_transport's rule)."""

    def __init__(self, ex, enc, width=640, height=480):
        self.ex, self.enc = ex, enc
        self.node = Probe(node_name="fake_camera", watch_pose=False)
        self.latents = []
        self.node.create_subscription(Float32MultiArray, "latent", self.latents.append, 10)
        self.image_pub = self.node.create_publisher(Image, "camera/image_raw", 10)
        self.info_pub = self.node.create_publisher(CameraInfo, "camera/camera_info", 10)
        rng = np.random.default_rng(0)
        self.image = array_to_image_msg(rng.integers(0, 255, (height, width), dtype=np.uint8), frame_id="cam_optical")
        ex.add_node(enc)
        ex.add_node(self.node)
        assert spin_until(ex, lambda: (self.image_pub.get_subscription_count() > 0
                                       and self.info_pub.get_subscription_count() > 0
                                       and enc.pub.get_subscription_count() > 0), 10.0)

    def frames(self, info, n=3, expect_latents=True):
        """n frames (camera_info, then the image, as drivers send them); True when each gave a latent."""
        got = 0
        for _ in range(n):
            before, count = len(self.latents), self.enc.camera_info_count
            if info is not None:
                self.info_pub.publish(info)
                spin_until(self.ex, lambda: self.enc.camera_info_count > count, 3.0)
            self.image_pub.publish(self.image)
            if spin_until(self.ex, lambda: len(self.latents) > before, 3.0 if expect_latents else 0.5):
                got += 1
        return got == n if expect_latents else got == 0


def encoder(model, **params):
    return EncoderNode(model=model, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
                       cli_args=["--ros-args", "-r", "image:=camera/image_raw"])


def test_camera_info_topic_follows_the_image_topic_or_its_remap(model):
    enc = encoder(model)
    assert enc.camera_info_topic == "/camera/camera_info"
    enc.destroy_node()
    enc = EncoderNode(model=model, cli_args=["--ros-args", "-r", "__ns:=/arm1", "-r", "image:=cam/image_rect",
                                             "-r", "camera_info:=/elsewhere/info"])
    assert enc.camera_info_topic == "/elsewhere/info"
    enc.destroy_node()


def test_matching_camera_info_is_quiet_and_different_is_reported_once(ex, model, capfd):
    enc = encoder(model)
    cam = Camera(ex, enc)
    good = camera_for_model(640, 480)
    assert cam.frames(info_msg(good))
    err = capfd.readouterr().err
    assert "camera_info matches the model's intrinsics" in err and "differ" not in err
    assert enc.check.ok and enc._intrinsics_problem() is None
    # a camera with a 10% longer focal length and an off-centre principal point
    bad = intrinsics.Intrinsics(640, 480, good.fx * 1.1, good.fy * 1.1, good.cx + 20, good.cy)
    assert cam.frames(info_msg(bad), n=4)          # not strict: still servoing
    err = capfd.readouterr().err
    assert err.count("camera intrinsics differ from the model's") == 1, err
    line = next(ln for ln in err.splitlines() if "differ from the model's" in ln)
    for text in (f"fx {bad.fx:.2f}", f"cx {bad.cx:.2f}", f"px {MODEL_CAM.fx:.2f}", f"u0 {MODEL_CAM.cx:.2f}",
                 "fx +10.0%", "servoing anyway (strict_intrinsics false)"):
        assert text in line, (text, line)


def test_strict_intrinsics_withholds_latents_until_a_matching_camera_info(ex, model, capfd):
    enc = encoder(model, strict_intrinsics=True, no_image_warning=0.2)
    cam = Camera(ex, enc)
    good = camera_for_model(640, 480)
    bad = intrinsics.Intrinsics(640, 480, good.fx * 0.9, good.fy * 0.9, good.cx, good.cy)
    assert cam.frames(info_msg(bad), expect_latents=False)
    err = capfd.readouterr().err
    assert err.count("camera intrinsics differ from the model's") == 1
    assert "strict_intrinsics: no latents are published, the controller stops (stale)" in err
    assert enc.withheld == 3
    assert cam.frames(info_msg(good))               # matching: latents again, one line says so
    assert "camera_info matches the model again; publishing latents (3 images withheld)" in capfd.readouterr().err
    # images of another size than camera_info describes: withheld too
    small = intrinsics.Intrinsics(320, 240, good.fx / 2, good.fy / 2, good.cx / 2, good.cy / 2)
    assert cam.frames(info_msg(small), n=2, expect_latents=False)
    assert "images are 640x480 but camera_info describes 320x240" in capfd.readouterr().err


@pytest.mark.parametrize("broken", [dict(k=[0.0] * 9), dict(k=[float("nan")] * 9), dict(width=0, height=0),
                                    dict(k=[float("inf"), 0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0]),
                                    dict(binning_x=100000, binning_y=7)])
def test_bad_camera_info_never_kills_the_encoder(ex, model, capfd, broken):
    for strict in (False, True):
        enc = encoder(model, strict_intrinsics=strict)
        cam = Camera(ex, enc)
        msg = info_msg(camera_for_model(640, 480))
        for k, v in broken.items():
            setattr(msg, k, v)
        assert cam.frames(msg, expect_latents=not strict)
        err = capfd.readouterr().err
        assert err.count("camera_info on /camera/camera_info unusable") == 1, err
        assert cam.frames(info_msg(camera_for_model(640, 480)))   # still alive, recovers
        for n in list(ex.get_nodes()):
            ex.remove_node(n)
            n.destroy_node()


def test_strict_without_camera_info_says_so_after_a_grace_period(ex, model, capfd):
    enc = encoder(model, strict_intrinsics=True, no_image_warning=0.3)
    cam = Camera(ex, enc)
    assert cam.frames(None, n=2, expect_latents=False)
    spin_until(ex, lambda: False, 0.4)
    assert cam.frames(None, n=1, expect_latents=False)
    err = capfd.readouterr().err
    assert err.count("strict_intrinsics: no camera_info on /camera/camera_info") == 1, err
