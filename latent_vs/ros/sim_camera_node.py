"""Node `sim_camera` (executable `sim_camera_node`): the simulated arm + camera for runs with
no hardware.

At `rate` Hz it integrates the newest `cmd_twist` (geometry_msgs/TwistStamped, or Twist with
`stamped: false`) held for at most `command_timeout` s (like a velocity controller: no new
command -> the arm stops), renders the package's poster scene (latent_vs.scene) and
publishes `image` (sensor_msgs/Image mono8, sensor-data QoS, frame `camera_frame`),
`camera_info` (sensor_msgs/CameraInfo of exactly the pinhole camera it renders with: K, P,
identity R, zero plumb_bob D; beside the image topic as image_transport puts it,
`<image topic's namespace>/camera_info` unless `camera_info` is remapped: the topic the
encoder reads, so its intrinsics check reports a match; `publish_camera_info: false` for
none) and `camera_pose` (geometry_msgs/PoseStamped, ground truth oT_c in frame
`scene_frame`), all with the same stamp. The twist acts on the command frame, which holds the camera at
`hand_eye` (the controller's parameter of the same name; identity: the twist is the
camera's). Start pose: the seeded look-at/look-from task `seed` (latent_vs.tasks), or
`start_pose` when seed < 0. With `publish_goal_image`, the view from the scene's desired
pose is published on `goal_image` to every new subscriber (the controller's goal), perturbed
like the benchmark's I* (lighting change, occlusions) when `goal_perturbation_seed` >= 0.
"""
from __future__ import annotations

import sys

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped, Twist, TwistStamped
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from .. import geometry
from ..camera import Camera, default_camera
from ..errors import UserError
from ..scene import Scene, SceneConfig, goal_pose, perturb_goal
from ..tasks import sample_tasks
from .convert import (COMMAND_QOS, GOAL_QOS, SENSOR_QOS, STREAM_PUB_QOS, array_to_image_msg, msg_to_twist,
                      pose_to_msg)
from .run import run_node


def camera_for(width: int, height: int) -> Camera:
    """The default camera's field of view across the shorter side at any size; a wider (or
    taller) image sees more on the sides (above and below), so the encoder's centre crop to a
    square (offset ((W - s) // 2, (H - s) // 2), s = min(W, H)) is exactly the default camera."""
    if width == height:
        return default_camera(width)
    base = default_camera()
    side = min(width, height)
    s = side / base.width
    return Camera(width, height, base.px * s, base.py * s,
                  (base.u0 + 0.5) * s - 0.5 + (width - side) // 2, (base.v0 + 0.5) * s - 0.5 + (height - side) // 2)


def camera_info_msg(camera: Camera, stamp=None, frame_id: str = "camera") -> CameraInfo:
    """sensor_msgs/CameraInfo of an ideal pinhole camera (no distortion, no rectification:
    K and the left 3x3 of P are the camera's intrinsics; binning and ROI unused)."""
    msg = CameraInfo(width=int(camera.width), height=int(camera.height), distortion_model="plumb_bob")
    px, py, u0, v0 = (float(v) for v in (camera.px, camera.py, camera.u0, camera.v0))
    msg.d = [0.0] * 5
    msg.k = [px, 0.0, u0, 0.0, py, v0, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [px, 0.0, u0, 0.0, 0.0, py, v0, 0.0, 0.0, 0.0, 1.0, 0.0]
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg


def camera_info_topic(node: Node) -> str:
    """`camera_info` when remapped, else the image topic's sibling (image_transport's rule;
    the encoder subscribes by the same rule: EncoderNode._camera_info_topic)."""
    remapped = node.resolve_topic_name("camera_info")
    if remapped != node.resolve_topic_name("camera_info", only_expand=True):
        return remapped
    return node.resolve_topic_name("image").rsplit("/", 1)[0] + "/camera_info"


PARAMETERS = {
    "rate": (30.0, ParameterDescriptor(read_only=True, description="simulation and image rate [Hz]",
                                       floating_point_range=[FloatingPointRange(from_value=1.0, to_value=1000.0, step=0.0)])),
    "width": (224, ParameterDescriptor(read_only=True, description="image width [px]",
                                       integer_range=[IntegerRange(from_value=16, to_value=4096, step=1)])),
    "height": (224, ParameterDescriptor(read_only=True, description="image height [px]",
                                        integer_range=[IntegerRange(from_value=16, to_value=4096, step=1)])),
    "seed": (0, ParameterDescriptor(read_only=True, description=(
        "start at the seeded look-at/look-from task (latent_vs.tasks.sample_tasks(1, seed)); -1: use start_pose"))),
    "start_pose": ([0.0, 0.0, -0.6, 0.0, 0.0, 0.0], ParameterDescriptor(read_only=True, description=(
        "start camera pose in the scene frame when seed < 0: x y z [m] roll pitch yaw [rad]"))),
    "stamped": (True, ParameterDescriptor(read_only=True, description="cmd_twist is TwistStamped (true) or Twist (false)")),
    "hand_eye": ([0.0] * 6, ParameterDescriptor(read_only=True, description=(
        "camera pose in the command frame the twist moves: x y z [m] roll pitch yaw [rad]"))),
    "command_timeout": (0.5, ParameterDescriptor(read_only=True, description=(
        "a twist is applied for at most this long after it arrives [s]"),
        floating_point_range=[FloatingPointRange(from_value=0.0, to_value=10.0, step=0.0)])),
    "camera_frame": ("camera", ParameterDescriptor(read_only=True, description="frame_id of image")),
    "publish_camera_info": (True, ParameterDescriptor(read_only=True, description=(
        "publish camera_info (the rendering camera's intrinsics) with every image"))),
    "scene_frame": ("scene", ParameterDescriptor(read_only=True, description="frame_id of camera_pose")),
    "publish_goal_image": (True, ParameterDescriptor(read_only=True, description=(
        "publish the view from the desired pose on goal_image to each new subscriber"))),
    "goal_perturbation_seed": (-1, ParameterDescriptor(read_only=True, description=(
        "perturb the published goal view with the benchmark's lighting change and occlusions "
        "(scene.perturb_goal), seeded by this; -1: the clean view"))),
}


class SimCameraNode(Node):
    def __init__(self, scene_config: SceneConfig | None = None, renderer=None, **kwargs):
        """renderer: (SceneConfig, Camera) -> an object with render(oT_c) -> uint8 image
        (None: latent_vs.scene.Scene; scripts/node_trials.py passes an independent ray caster)."""
        super().__init__(kwargs.pop("node_name", "sim_camera"), **kwargs)
        for name, (default, desc) in PARAMETERS.items():
            self.declare_parameter(name, default, desc)
        p = {name: self.get_parameter(name).value for name in PARAMETERS}
        for key in ("start_pose", "hand_eye"):
            if len(p[key]) != 6 or not np.all(np.isfinite(p[key])):
                raise UserError(f"sim_camera: parameter {key} must be 6 finite numbers (x y z roll pitch yaw)")
        self.scene_config = scene_config or SceneConfig()
        self.scene = (renderer or Scene)(self.scene_config, camera_for(p["width"], p["height"]))
        self.goal_pose = goal_pose(self.scene_config)
        self.dt = 1.0 / p["rate"]
        self.cmd_T_cam = geometry.rpy_to_matrix(*p["hand_eye"])
        start = sample_tasks(1, seed=p["seed"], scene=self.scene_config)[0] if p["seed"] >= 0 \
            else geometry.rpy_to_matrix(*p["start_pose"])
        self.start_pose = start
        self.oT_cmd = start @ geometry.inverse(self.cmd_T_cam)
        self.command_timeout = p["command_timeout"]
        self.camera_frame, self.scene_frame = p["camera_frame"], p["scene_frame"]
        self.twist = np.zeros(6)
        self.twist_time = None
        self.twists_received = 0
        self.frames = 0

        self.image_pub = self.create_publisher(Image, "image", SENSOR_QOS)
        self.pose_pub = self.create_publisher(PoseStamped, "camera_pose", STREAM_PUB_QOS)
        self.info_pub = self.create_publisher(CameraInfo, camera_info_topic(self), SENSOR_QOS) \
            if p["publish_camera_info"] else None
        cmd_type = TwistStamped if p["stamped"] else Twist
        self.create_subscription(cmd_type, "cmd_twist", self.on_twist, COMMAND_QOS)
        self.create_timer(self.dt, self.on_tick)
        if p["publish_goal_image"]:
            self.goal_image = self.scene.render(self.goal_pose)
            if p["goal_perturbation_seed"] >= 0:
                self.goal_image = perturb_goal(self.goal_image, np.random.default_rng(p["goal_perturbation_seed"]))
            self.goal_pub = self.create_publisher(Image, "goal_image", GOAL_QOS)
            self._goal_subscribers = 0
            self.create_timer(0.1, self.on_goal_timer)

    @property
    def camera_pose(self) -> np.ndarray:
        """oT_c, the true camera pose in the scene frame."""
        return self.oT_cmd @ self.cmd_T_cam

    def on_twist(self, msg) -> None:
        v = msg_to_twist(msg)
        if not np.all(np.isfinite(v)):
            self.get_logger().error(f"non-finite twist ignored: {v.tolist()}")
            return
        self.twist, self.twist_time = v, self.get_clock().now()
        self.twists_received += 1

    def on_tick(self) -> None:
        now = self.get_clock().now()
        if self.twist_time is not None and (now - self.twist_time).nanoseconds * 1e-9 <= self.command_timeout:
            self.oT_cmd = self.oT_cmd @ geometry.se3_exp(self.twist, self.dt)
        T = self.camera_pose
        stamp = now.to_msg()
        self.pose_pub.publish(pose_to_msg(T, stamp, self.scene_frame))
        if self.info_pub is not None:   # before the image, as camera drivers do
            self.info_pub.publish(camera_info_msg(self.scene.camera, stamp, self.camera_frame))
        self.image_pub.publish(array_to_image_msg(self.scene.render(T), stamp, self.camera_frame))
        self.frames += 1

    def on_goal_timer(self) -> None:
        n = self.goal_pub.get_subscription_count()
        if n > self._goal_subscribers:
            self.goal_pub.publish(array_to_image_msg(self.goal_image, self.get_clock().now().to_msg(), self.camera_frame))
        self._goal_subscribers = n


def main(args=None) -> int:
    return run_node(SimCameraNode, "sim_camera_node", args)


if __name__ == "__main__":
    sys.exit(main())
