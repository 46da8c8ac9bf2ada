"""Message <-> NumPy helpers shared by the nodes, the demo, the latency benchmark and tests.

The latent message. std_msgs/Float32MultiArray has no header, yet the controller must know
when the image behind a latent was captured (staleness is measured from the capture time,
not the arrival time). The encoder therefore writes the image's stamp and frame into the
label of the array's one dimension:

    layout.dim[0].label  = "latent stamp=<sec>.<nanosec, 9 digits> frame=<frame_id>"
    layout.dim[0].size   = layout.dim[0].stride = D,    data = z (D floats)

`msg_to_latent` reads it back (`latent_stamp`: the stamp exactly, as a Time); a latent from another publisher without such a label is
accepted and stamped with its arrival time.

QoS. Camera streams (`image`) use the sensor-data profile (best effort); the encoder and
the controller keep only the newest message (depth 1) so they never work on a backlog. The
encoder's image subscription follows its publishers by default (image_sub_qos: reliable when
they all are), since DDS drops best-effort samples too large for one datagram
(1920x1080 and up) when a fragment is lost.
`cmd_twist` is reliable (MoveIt Servo and ros2_control subscribe reliably). Diagnostics are
reliable; `~/state` is transient-local so a late subscriber sees the current state.
"""
from __future__ import annotations

import re

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped, Twist, TwistStamped
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, MultiArrayDimension

from .. import geometry
from ..imageconv import SUPPORTED_ENCODINGS, array_to_fields, image_to_array
from ..safety import image_size_problem

# -------------------------------------------------------------------------------- QoS
SENSOR_QOS = qos_profile_sensor_data                        # image publishers (like camera drivers)
LATEST_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                        history=HistoryPolicy.KEEP_LAST)     # stream subscribers: newest only
STREAM_PUB_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                            history=HistoryPolicy.KEEP_LAST)  # latent, camera_pose: any subscriber matches
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
GOAL_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
STATE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL)
IMAGE_QOS_CHOICES = ("auto", "reliable", "best_effort")


def image_sub_qos(reliable: bool) -> QoSProfile:
    """An image subscription keeping the newest image only, reliable or best effort."""
    return QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)


# -------------------------------------------------------------------------------- time
def stamp_to_s(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def is_zero_stamp(stamp) -> bool:
    return stamp.sec == 0 and stamp.nanosec == 0


# -------------------------------------------------------------------------------- images
def _cv_bridge():
    try:  # only ROS 2's cv_bridge (pip's "cv-bridge" is a ROS 1 build: refuse it)
        import cv_bridge
        if hasattr(cv_bridge, "CvBridge") and "ros" in getattr(cv_bridge, "__file__", ""):
            return cv_bridge.CvBridge()
    except Exception:
        pass
    return None


_BRIDGE = _cv_bridge()


def image_msg_to_array(msg: Image) -> np.ndarray:
    """sensor_msgs/Image -> uint8 grey (H, W). The supported encodings (mono8, mono16, rgb8,
    bgr8, rgba8, bgra8) go through latent_vs.imageconv, the same code the offline bag tools
    use, so live and replayed runs see the same pixels; other encodings (e.g. yuv422, bayer)
    go through ROS 2's cv_bridge when it is installed. Raises ValueError naming the problem
    (also for a size no camera has: safety.image_size_problem)."""
    if msg.encoding.lower() in SUPPORTED_ENCODINGS + ("8uc1", "16uc1") or _BRIDGE is None:
        img = image_to_array(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian))
    else:
        try:
            img = np.asarray(_BRIDGE.imgmsg_to_cv2(msg, desired_encoding="mono8"))
        except Exception as e:  # cv_bridge raises its own error type
            raise ValueError(f"cannot convert image encoding '{msg.encoding}': {e}") from None
    why = image_size_problem(msg.height, msg.width)   # after decoding: an unknown encoding is named first
    if why:
        raise ValueError(why)
    return img


def array_to_image_msg(img: np.ndarray, stamp=None, frame_id: str = "camera") -> Image:
    msg = Image()
    for k, v in array_to_fields(img).items():
        setattr(msg, k, v)
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg


# -------------------------------------------------------------------------------- latents
_LABEL = re.compile(r"stamp=(\d+)\.(\d{9})(?: frame=(\S*))?")


def latent_to_msg(z: np.ndarray, stamp, frame_id: str = "") -> Float32MultiArray:
    """z (D,) + the image's header stamp -> Float32MultiArray (see the module docstring)."""
    z = np.asarray(z, dtype=np.float32).reshape(-1)
    msg = Float32MultiArray()
    label = f"latent stamp={stamp.sec}.{stamp.nanosec:09d} frame={frame_id}"
    msg.layout.dim = [MultiArrayDimension(label=label, size=z.size, stride=z.size)]
    msg.data = z.tolist()
    return msg


def _label(msg: Float32MultiArray):
    """The match of a latent's label (stamp sec, nanosec, frame), or None when unlabelled."""
    return _LABEL.search(msg.layout.dim[0].label) if msg.layout.dim else None


def msg_to_latent(msg: Float32MultiArray) -> tuple[np.ndarray, float | None, str]:
    """-> (z (D,) float32, capture stamp [s] or None when unlabelled, frame_id)."""
    z = np.asarray(msg.data, dtype=np.float32)
    m = _label(msg)
    if m:
        return z, int(m.group(1)) + int(m.group(2)) * 1e-9, m.group(3) or ""
    return z, None, ""


def latent_stamp(msg: Float32MultiArray):
    """The capture stamp in a latent's label as builtin_interfaces/Time (exact), or None."""
    m = _label(msg)
    return Time(sec=int(m.group(1)), nanosec=int(m.group(2))) if m else None


# -------------------------------------------------------------------------------- twists
def twist_to_msg(twist: np.ndarray, stamped: bool, stamp=None, frame_id: str = ""):
    """(v, ω) (6,) -> TwistStamped (header.frame_id = frame_id) or Twist."""
    t = Twist()
    v = [float(x) for x in np.asarray(twist, dtype=float).reshape(6)]
    t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z = v
    if not stamped:
        return t
    msg = TwistStamped()
    msg.twist = t
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg


def msg_to_twist(msg) -> np.ndarray:
    t = msg.twist if isinstance(msg, TwistStamped) else msg
    return np.array([t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z])


# -------------------------------------------------------------------------------- poses
def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Rotation (3, 3) -> unit quaternion (x, y, z, w)."""
    tu = geometry.thetau_from_rotation(R)
    theta = np.linalg.norm(tu)
    if theta < 1e-12:
        return np.array([0.0, 0.0, 0.0, 1.0])
    u = tu / theta
    return np.concatenate([u * np.sin(theta / 2), [np.cos(theta / 2)]])


def quaternion_to_matrix(q) -> np.ndarray:
    x, y, z, w = np.asarray(q, dtype=float) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def pose_to_msg(T: np.ndarray, stamp=None, frame_id: str = "scene") -> PoseStamped:
    msg = PoseStamped()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    p, q = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z = (float(v) for v in T[:3, 3])
    q.x, q.y, q.z, q.w = (float(v) for v in matrix_to_quaternion(T[:3, :3]))
    return msg


def msg_to_pose(msg: PoseStamped) -> np.ndarray:
    """PoseStamped -> 4x4 (NaN-filled if the quaternion is zero or non-finite)."""
    p, q = msg.pose.position, msg.pose.orientation
    quat = np.array([q.x, q.y, q.z, q.w])
    T = np.eye(4)
    if not np.all(np.isfinite(quat)) or np.linalg.norm(quat) < 1e-9:
        T[:3, :3] = np.nan
    else:
        T[:3, :3] = quaternion_to_matrix(quat)
    T[:3, 3] = (p.x, p.y, p.z)
    return T
