"""Node `encoder` (executable `encoder_node`): camera image -> latent z = ψ(I).

Subscribes `image` (sensor_msgs/Image, sensor-data QoS, newest only; mono8, mono16, rgb8,
bgr8, rgba8, bgra8 at any resolution: centre-cropped and resized to the model input as the
model's meta.json says) and publishes `latent` (std_msgs/Float32MultiArray) carrying the
image's capture stamp and frame (see latent_vs.ros.convert). A bad image (unknown
encoding, wrong size) is logged and answered with a NaN latent, so that the controller
stops the arm at once instead of waiting for its input timeout.

Parameters: model_dir (default: the package's models/default), device (cpu|cuda),
threads (torch intra-op threads, default 1: 2 threads collapse on a loaded 2-core PC).
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
from rcl_interfaces.msg import IntegerRange, ParameterDescriptor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float32MultiArray  # noqa: E402

from .. import paths  # noqa: E402
from ..errors import UserError  # noqa: E402
from .convert import LATEST_QOS, STREAM_PUB_QOS, image_msg_to_array, latent_to_msg  # noqa: E402
from .run import run_node  # noqa: E402


PARAMETERS = {
    "model_dir": ("", ParameterDescriptor(read_only=True, description=(
        "model directory (psi.pt, phi.pt, meta.json); empty: the package's models/default"))),
    "device": ("cpu", ParameterDescriptor(read_only=True, description="torch device for ψ: cpu or cuda")),
    "threads": (1, ParameterDescriptor(read_only=True, description="torch intra-op threads [count]",
                                       integer_range=[IntegerRange(from_value=1, to_value=64, step=1)])),
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
        self.pub = self.create_publisher(Float32MultiArray, "latent", STREAM_PUB_QOS)
        self.sub = self.create_subscription(Image, "image", self.on_image, LATEST_QOS)
        self.get_logger().info(f"encoder ready: {model!r}")

    def on_image(self, msg: Image) -> None:
        try:
            img = image_msg_to_array(msg)
            z = self.model.encode(img[None])[0]
        except ValueError as e:
            self.bad_images += 1
            self.get_logger().error(f"bad image ({e}); publishing a NaN latent to stop the controller")
            z = np.full(self.model.latent_dim, np.nan, np.float32)
        else:
            self.encoded += 1
        self.pub.publish(latent_to_msg(z, msg.header.stamp, msg.header.frame_id))


def main(args=None) -> int:
    return run_node(EncoderNode, "encoder_node", args)


if __name__ == "__main__":
    sys.exit(main())
