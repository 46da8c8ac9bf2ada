"""Node `encoder` (executable `encoder_node`): camera image -> latent z = ψ(I).

Subscribes `image` (sensor_msgs/Image, newest only; mono8, mono16, rgb8, bgr8, rgba8, bgra8
at any sane resolution: 16..8192 px a side, aspect up to 4: centre-cropped and resized to
the model input as the model's meta.json says) and publishes `latent`
(std_msgs/Float32MultiArray) carrying the image's capture stamp and frame (see
latent_vs.ros.convert). A bad image (unknown encoding, wrong or absurd size) is logged once
(until a good image comes) and answered with a NaN latent, so that the controller stops the
arm at once instead of waiting for its input timeout.

Parameters: model_dir (default: the package's models/default), device (cpu|cuda),
threads (torch intra-op threads, default 1: 2 threads collapse on a loaded 2-core PC),
image_qos: auto (default: reliable when every image publisher is, else best effort, re-chosen
when the publishers change; large best-effort images are fragmented and dropped by DDS, so
a reliable camera at 1920x1080 or 4000x3000 gets through), reliable, or best_effort. When a
publisher of `image` is present but no image arrived for no_image_warning s, one warning says
so (the QoS mismatch or size is the usual cause).
camera_info: subscribes the camera's sensor_msgs/CameraInfo beside the image (image_transport's
rule: `<image topic's namespace>/camera_info`, unless `camera_info` is remapped) and compares
its intrinsics, after the same crop and resize as the images, with the model's (meta.json
camera; latent_vs.ros.intrinsics): beyond intrinsics_tolerance they are reported once with both
sets of numbers. strict_intrinsics: true refuses to servo on them: no latent is published (the
controller goes stale and sends a zero twist) until a camera_info that matches comes, also
while none came or it is unusable (zeros, NaN). intrinsics_matrix: k (image_raw) or p
(rectified images).
/diagnostics (latent_vs.ros.diagnostics): every diagnostics_period s, the encoding rate, ψ time,
bad images, the image age and the intrinsics check.
A missing or mismatched model stops the node at start-up with one line naming the file.
"""
from __future__ import annotations

import sys

import numpy as np
import rclpy
import time

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Float32MultiArray

from .. import paths
from ..errors import UserError
from . import intrinsics
from .convert import IMAGE_QOS_CHOICES, STREAM_PUB_QOS, image_msg_to_array, image_sub_qos, latent_to_msg
from .diagnostics import ERROR, OK, PERIOD_PARAMETER, WARN, Diagnostics, Window, period_descriptor_range
from .run import run_node


PARAMETERS = {
    "model_dir": ("", ParameterDescriptor(read_only=True, description=(
        "model directory (psi.pt, phi.pt, meta.json); empty: the package's models/default"))),
    "device": ("cpu", ParameterDescriptor(read_only=True, description="torch device for ψ: cpu or cuda")),
    "threads": (1, ParameterDescriptor(read_only=True, description="torch intra-op threads [count]",
                                       integer_range=[IntegerRange(from_value=1, to_value=64, step=1)])),
    "image_qos": ("auto", ParameterDescriptor(read_only=True, description=(
        "reliability of the image subscription: auto (as the publishers offer), reliable, best_effort"))),
    "no_image_warning": (2.0, ParameterDescriptor(read_only=True, description=(
        "warn once when a publisher of image is present but no image came for this long [s]"),
        floating_point_range=[FloatingPointRange(from_value=0.1, to_value=60.0, step=0.0)])),
    "strict_intrinsics": (False, ParameterDescriptor(read_only=True, description=(
        "publish no latent (the controller stops) unless camera_info matches the model's intrinsics"))),
    "intrinsics_tolerance": (0.02, ParameterDescriptor(read_only=True, description=(
        "camera_info vs the model's intrinsics: largest difference of the focal lengths (relative) and "
        "of the principal point (per image side) [fraction]"),
        floating_point_range=[FloatingPointRange(from_value=0.0, to_value=1.0, step=0.0)])),
    "intrinsics_matrix": ("k", ParameterDescriptor(read_only=True, description=(
        "which camera_info matrix describes the images: k (image_raw) or p (rectified images)"))),
    PERIOD_PARAMETER: (1.0, ParameterDescriptor(read_only=True, description="period of /diagnostics [s]",
                                                floating_point_range=period_descriptor_range())),
}


class EncoderNode(Node):
    def __init__(self, model=None, **kwargs):
        """`model`: an already loaded LatentModel (the demo shares one); else model_dir is loaded."""
        super().__init__(kwargs.pop("node_name", "encoder"), **kwargs)
        for name, (default, desc) in PARAMETERS.items():
            self.declare_parameter(name, default, desc)
        device = self.get_parameter("device").value
        if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
            raise UserError(f"encoder: parameter device must be cpu or cuda, got '{device}'")
        self.image_qos = self.get_parameter("image_qos").value
        if self.image_qos not in IMAGE_QOS_CHOICES:
            raise UserError(f"encoder: parameter image_qos must be one of {', '.join(IMAGE_QOS_CHOICES)}, "
                            f"got '{self.image_qos}'")
        self.no_image_warning = float(self.get_parameter("no_image_warning").value)
        self.strict = bool(self.get_parameter("strict_intrinsics").value)
        self.tolerance = float(self.get_parameter("intrinsics_tolerance").value)
        self.matrix = str(self.get_parameter("intrinsics_matrix").value).lower()
        if self.matrix not in ("k", "p"):
            raise UserError(f"encoder: parameter intrinsics_matrix must be k or p, got '{self.matrix}'")
        import torch
        torch.set_num_threads(int(self.get_parameter("threads").value))
        if model is None:
            from ..models import load_model
            model_dir = self.get_parameter("model_dir").value or paths.model_dir("default")
            model = load_model(model_dir, device=device)
        self.model = model
        # TorchScript optimises on its first calls (seconds on a busy CPU): do it before the
        # first camera image, not on it
        blank = np.zeros((1, model.camera.height, model.camera.width), np.uint8)
        for _ in range(3):
            model.encode(blank)
        self.encoded = 0
        self.bad_images = 0
        self.last_problem = None       # the bad-image line logged last (logged again only when it changes)
        self.last_image_t = None       # monotonic time of the newest image (or of the first publisher seen)
        self.warned_no_image = False
        self.pub = self.create_publisher(Float32MultiArray, "latent", STREAM_PUB_QOS)
        self.sub, self.sub_reliable = None, None
        # camera_info: the intrinsics check (latent_vs.ros.intrinsics)
        self.model_intrinsics = intrinsics.model_intrinsics(model.camera)
        self.camera = None             # Intrinsics of the newest usable camera_info
        self.check = None              # its intrinsics.Check against the model
        self.camera_info_problem = None  # why the newest camera_info is unusable
        self.camera_info_count = 0
        self.image_size = None         # (width, height) of the newest image
        self.logged = set()            # intrinsics lines logged (each once)
        self.first_image_t = None
        self.withheld = 0              # images given no latent (strict_intrinsics)
        self.refusal = None            # why latents are withheld now (strict_intrinsics)
        self.camera_info_topic = self._camera_info_topic()
        self.create_subscription(CameraInfo, self.camera_info_topic, self.on_camera_info, qos_profile_sensor_data)
        self.on_graph()
        # /diagnostics
        self.psi_ms = Window()         # ψ time of each image encoded in the period [ms]
        self.bad_in_period = 0
        self.withheld_in_period = 0
        self.last_encoding = ""
        self.frame_id = ""
        self.diagnostics = Diagnostics(self, "encoder", float(self.get_parameter(PERIOD_PARAMETER).value),
                                       self._diagnostic_status, hardware_id=lambda: self.frame_id,
                                       on_publish=self._reset_period)
        # on the wall clock: also with use_sim_time and no /clock
        self.create_timer(0.5, self.on_graph, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(f"encoder ready: {model!r}, image_qos {self.image_qos}, camera_info "
                               f"{self.camera_info_topic} (strict_intrinsics {str(self.strict).lower()})")

    # ------------------------------------------------------------------ camera_info
    def _camera_info_topic(self) -> str:
        """`camera_info` when remapped, else the image topic's sibling (image_transport's rule)."""
        remapped = self.resolve_topic_name("camera_info")
        if remapped != self.resolve_topic_name("camera_info", only_expand=True):
            return remapped
        image = self.resolve_topic_name("image")
        return image.rsplit("/", 1)[0] + "/camera_info"

    def _log_once(self, level: str, line: str, key=None) -> None:
        """Log `line` unless a line with the same key (default: the line) was logged; the
        intrinsics verdict is keyed on (match or not, the size): noisy numbers log once."""
        key = line if key is None else key
        if key not in self.logged:
            self.logged.add(key)
            log = self.get_logger()   # one call site per severity (rclpy's logger wants that)
            if level == "error":
                log.error(line)
            elif level == "warning":
                log.warning(line)
            else:
                log.info(line)

    def on_camera_info(self, msg: CameraInfo) -> None:
        self.camera_info_count += 1
        consequence = ("; strict_intrinsics: no latents are published, the controller stops (stale)"
                       if self.strict else "; servoing anyway (strict_intrinsics false)")
        try:
            cam = intrinsics.from_camera_info(msg, self.matrix)
            check = intrinsics.check(cam, self.model_intrinsics, self.tolerance)
        except (ValueError, TypeError, ArithmeticError) as e:   # never a crash on a camera's message
            self.camera, self.check = None, None
            self.camera_info_problem = f"camera_info on {self.camera_info_topic} unusable ({e})"
            self._log_once("error" if self.strict else "warning", self.camera_info_problem + consequence)
            return
        self.camera_info_problem = None
        self.camera, self.check = cam, check
        key = ("intrinsics", self.check.ok, cam.width, cam.height)
        if self.check.ok:
            self._log_once("info", f"camera_info matches the model's intrinsics: {self.check.line}", key)
        else:
            self._log_once("error" if self.strict else "warning",
                           f"camera intrinsics differ from the model's: {self.check.line}{consequence}", key)

    def _intrinsics_problem(self) -> str | None:
        """Why the camera does not match the model (None: it does, or nothing to say)."""
        if self.camera_info_problem:
            return self.camera_info_problem
        if self.camera is None:
            return f"no camera_info on {self.camera_info_topic}" if self.camera_info_count == 0 else None
        if not self.check.ok:
            return f"camera intrinsics differ from the model's (worst {100 * self.check.worst:.1f}%)"
        return self._size_problem()

    def _size_problem(self) -> str | None:
        if self.camera is None or self.image_size is None or self.image_size == (self.camera.width, self.camera.height):
            return None
        return (f"images are {self.image_size[0]}x{self.image_size[1]} but camera_info describes "
                f"{self.camera.width}x{self.camera.height}")

    def on_graph(self) -> None:
        """Choose the image subscription's reliability (image_qos auto: as the publishers
        offer) and warn once when a publisher is present but no image arrives."""
        pubs = self.get_publishers_info_by_topic(self.resolve_topic_name("image"))
        if self.image_qos == "auto":
            reliable = bool(pubs) and all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in pubs)
        else:
            reliable = self.image_qos == "reliable"
        if self.sub is None or reliable != self.sub_reliable:
            if self.sub is not None:
                self.destroy_subscription(self.sub)
            self.sub = self.create_subscription(Image, "image", self.on_image, image_sub_qos(reliable))
            self.sub_reliable = reliable
        now = time.monotonic()
        if not pubs:
            self.last_image_t = None
            return
        if self.last_image_t is None:
            self.last_image_t = now
        if (not self.strict and self.camera_info_count == 0 and self.first_image_t is not None
                and now - self.first_image_t > self.no_image_warning):
            self._log_once("warning", f"no camera_info on {self.camera_info_topic}: the camera's intrinsics "
                                      "are not checked against the model's")
        if not self.warned_no_image and now - self.last_image_t > self.no_image_warning:
            self.warned_no_image = True
            self.get_logger().warning(
                f"no image for {now - self.last_image_t:.1f} s although {len(pubs)} publisher(s) of "
                f"{self.sub.topic_name} are present (subscription {'reliable' if reliable else 'best effort'}; "
                "large best-effort images are dropped by DDS: publish them reliably, or set image_qos)")

    def on_image(self, msg: Image) -> None:
        now = time.monotonic()
        self.last_image_t, self.warned_no_image = now, False
        self.first_image_t = self.first_image_t or now
        self.last_encoding, self.frame_id = f"{msg.width}x{msg.height} {msg.encoding}", msg.header.frame_id
        try:
            img = image_msg_to_array(msg)
            self.image_size = (img.shape[1], img.shape[0])
            if self.strict and self._withhold(now):
                return
            t0 = time.perf_counter()
            z = self.model.encode(img[None])[0]
            self.psi_ms.add(1e3 * (time.perf_counter() - t0))
        except ValueError as e:
            self.bad_images += 1
            self.bad_in_period += 1
            line = f"bad image ({e}); publishing a NaN latent to stop the controller"
            if line != self.last_problem:
                self.get_logger().error(line + " (logged once until a good image comes)")
                self.last_problem = line
            z = np.full(self.model.latent_dim, np.nan, np.float32)
        else:
            self.encoded += 1
            self.last_problem = None
            if self._size_problem():
                self._log_once("warning", f"{self._size_problem()}: the intrinsics check does not hold for them")
        self.pub.publish(latent_to_msg(z, msg.header.stamp, msg.header.frame_id))

    def _withhold(self, now: float) -> bool:
        """strict_intrinsics: True (and one log line per reason) when this image gets no latent."""
        why = self._intrinsics_problem()
        if why is None:
            if self.refusal is not None:
                self.get_logger().info(f"strict_intrinsics: camera_info matches the model again; publishing latents "
                                       f"({self.withheld} images withheld)")
            self.refusal = None
            return False
        self.refusal = why
        self.withheld += 1
        self.withheld_in_period += 1
        # the first images may come just before the first camera_info: a grace period
        if self.camera_info_count == 0 and now - self.first_image_t > self.no_image_warning:
            self._log_once("error", f"strict_intrinsics: {why} for {now - self.first_image_t:.1f} s; "
                                    "no latents are published, the controller stops (stale)", ("strict", why))
        elif self.camera is not None and self.check.ok:  # the size differs (the other reasons log on camera_info)
            self._log_once("error", f"strict_intrinsics: {why}; no latents are published, the controller stops (stale)")
        return True

    # ------------------------------------------------------------------ /diagnostics
    def _reset_period(self) -> None:
        self.psi_ms.reset()
        self.bad_in_period = self.withheld_in_period = 0

    def _diagnostic_status(self, period_s: float):
        now = time.monotonic()
        age = now - self.last_image_t if self.last_image_t is not None and self.first_image_t else None
        rate = self.psi_ms.n / period_s
        intr = self._intrinsics_problem()
        check = self.check
        values = {
            "images encoded [Hz]": rate,
            "ψ time [ms]": self.psi_ms.mean,
            "ψ time max [ms]": self.psi_ms.max,
            "bad images (period)": self.bad_in_period,
            "bad images (total)": self.bad_images,
            "images encoded (total)": self.encoded,
            "image": self.last_encoding or "none yet",
            "image age [s]": age,
            "camera_info topic": self.camera_info_topic,
            "intrinsics": "match" if intr is None and check is not None else (intr or "not checked"),
            "intrinsics difference (worst) [%]": 100 * check.worst if check else None,
            "strict_intrinsics": self.strict,
            "latents withheld (period)": self.withheld_in_period,
            "latents withheld (total)": self.withheld,
            "model": self.model.model_dir,
        }
        if self.strict and self.refusal is not None and self.withheld_in_period:
            return ERROR, f"strict_intrinsics: not encoding: {self.refusal}", values
        if self.bad_in_period:
            return ERROR, f"{self.bad_in_period} bad image(s): {self.last_problem or 'see the log'}", values
        if self.psi_ms.n == 0:
            return WARN, ("no image yet" if age is None else f"no image for {age:.1f} s"), values
        if intr is not None:
            return WARN, f"encoding at {rate:.1f} Hz; {intr}", values
        return OK, f"encoding at {rate:.1f} Hz", values


def main(args=None) -> int:
    return run_node(EncoderNode, "encoder_node", args)


if __name__ == "__main__":
    sys.exit(main())
