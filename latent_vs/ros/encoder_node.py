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
A missing or mismatched model stops the node at start-up with one line naming the file.
"""
from __future__ import annotations

import os

# before numpy/torch start their thread pools (2 busy threads collapse on a loaded 2-core PC)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys  # noqa: E402

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
import time  # noqa: E402

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor  # noqa: E402
from rclpy.clock import Clock, ClockType  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float32MultiArray  # noqa: E402

from .. import paths  # noqa: E402
from ..errors import UserError  # noqa: E402
from .convert import IMAGE_QOS_CHOICES, STREAM_PUB_QOS, image_msg_to_array, image_sub_qos, latent_to_msg  # noqa: E402
from .run import run_node  # noqa: E402


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
        import torch
        torch.set_num_threads(int(self.get_parameter("threads").value))
        if model is None:
            from ..learning.export import load_model
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
        self.on_graph()
        # on the wall clock: also with use_sim_time and no /clock
        self.create_timer(0.5, self.on_graph, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(f"encoder ready: {model!r}, image_qos {self.image_qos}")

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
        if not self.warned_no_image and now - self.last_image_t > self.no_image_warning:
            self.warned_no_image = True
            self.get_logger().warning(
                f"no image for {now - self.last_image_t:.1f} s although {len(pubs)} publisher(s) of "
                f"{self.sub.topic_name} are present (subscription {'reliable' if reliable else 'best effort'}; "
                "large best-effort images are dropped by DDS: publish them reliably, or set image_qos)")

    def on_image(self, msg: Image) -> None:
        self.last_image_t, self.warned_no_image = time.monotonic(), False
        try:
            img = image_msg_to_array(msg)
            z = self.model.encode(img[None])[0]
        except ValueError as e:
            self.bad_images += 1
            line = f"bad image ({e}); publishing a NaN latent to stop the controller"
            if line != self.last_problem:
                self.get_logger().error(line + " (logged once until a good image comes)")
                self.last_problem = line
            z = np.full(self.model.latent_dim, np.nan, np.float32)
        else:
            self.encoded += 1
            self.last_problem = None
        self.pub.publish(latent_to_msg(z, msg.header.stamp, msg.header.frame_id))


def main(args=None) -> int:
    return run_node(EncoderNode, "encoder_node", args)


if __name__ == "__main__":
    sys.exit(main())
