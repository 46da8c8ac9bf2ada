"""ROS 2 bags with `rosbags` (no ROS install needed): write, read, validate.

Bags are rosbag2 directories (metadata.yaml + one MCAP or sqlite3 file) with the ROS 2
Jazzy message types and type hashes, so a stock `ros2 bag info` / `ros2 bag play` reads
them. What latent_vs records, by default topic name (design.md, ROS 2 interface):

    /image                  sensor_msgs/msg/Image            camera image (header.stamp = capture time)
    /camera_pose            geometry_msgs/msg/PoseStamped    ground-truth oT_c in the scene frame (sim)
    /latent                 std_msgs/msg/Float32MultiArray   z_I = ψ(I)
    /cmd_twist              geometry_msgs/msg/TwistStamped   commanded camera twist [m/s, rad/s]
    /controller/state       std_msgs/msg/String              idle | servoing | converged | stale | fault
    /controller/error_norm  std_msgs/msg/Float32            ‖z_I − z*‖

Each message has two times: the bag's log time (when it was received/written) and, for
stamped types, header.stamp. As the nodes publish them: image and camera_pose carry the
capture time, latent carries its image's capture time in its label (latent_msg), cmd_twist
its publish time. Replay pairs a recorded twist with the image whose latent precedes it.

Writing is crash-safe: a bag is written inside `PATH.partial/` and moved to PATH only when it
is closed (metadata.yaml written). Anything called `*.partial` is an interrupted recording;
readers refuse it with a message that says so.

Damage is found, not replayed: MCAP chunks carry a CRC-32 of their records (the writer fills
it in on close, as `ros2 bag record` does); the reader checks every chunk's CRC when it opens
a bag, and reads only the messages logged before the first damaged chunk (`corruption` says
where it is). A bag without CRCs (written by another tool with them off) is read as it is.
"""
from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from . import geometry
from .errors import UserError

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
POSE = "geometry_msgs/msg/PoseStamped"
TWIST = "geometry_msgs/msg/TwistStamped"
TWIST_UNSTAMPED = "geometry_msgs/msg/Twist"
LATENT = "std_msgs/msg/Float32MultiArray"
STRING = "std_msgs/msg/String"
FLOAT32 = "std_msgs/msg/Float32"

DEFAULT_TOPICS: dict[str, str] = {
    "/image": IMAGE,
    "/camera_pose": POSE,
    "/latent": LATENT,
    "/cmd_twist": TWIST,
    "/controller/state": STRING,
    "/controller/error_norm": FLOAT32,
}
STORAGES = ("mcap", "sqlite3")
PARTIAL_SUFFIX = ".partial"

# Offered QoS written in the bag: reliable publishers match reliable and best-effort
# subscribers alike, so `ros2 bag play` of our bags feeds any node.
RELIABLE_QOS = Qos(QosHistory.KEEP_LAST, 10, QosReliability.RELIABLE, QosDurability.VOLATILE,
                   QosTime(0, 0), QosTime(0, 0), QosLiveliness.AUTOMATIC, QosTime(0, 0), False)

_T = TYPESTORE.types


class BagError(UserError):
    """A bag that cannot be used: missing, interrupted, corrupt, empty, or without the topic."""


# ---------------------------------------------------------------- message construction

def time_msg(t_ns: int):
    t_ns = int(t_ns)
    return _T["builtin_interfaces/msg/Time"](sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)


def header_msg(t_ns: int, frame_id: str):
    return _T["std_msgs/msg/Header"](stamp=time_msg(t_ns), frame_id=frame_id)


def image_msg(img: np.ndarray, t_ns: int, frame_id: str = "camera", encoding: str = "mono8"):
    """uint8 grey (H, W) -> sensor_msgs/Image (mono8, or any encoding imageconv writes)."""
    from .imageconv import array_to_fields_as
    f = array_to_fields_as(np.asarray(img), encoding)
    return _T[IMAGE](header=header_msg(t_ns, frame_id), height=f["height"], width=f["width"],
                     encoding=f["encoding"], is_bigendian=f["is_bigendian"], step=f["step"],
                     data=np.frombuffer(f["data"], np.uint8))


def pose_msg(T: np.ndarray, t_ns: int, frame_id: str = "scene"):
    """oT_c (4, 4) -> geometry_msgs/PoseStamped (the camera pose in `frame_id`)."""
    q = quaternion_from_matrix(T)
    P = _T["geometry_msgs/msg/Pose"](
        position=_T["geometry_msgs/msg/Point"](x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
        orientation=_T["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]))
    return _T[POSE](header=header_msg(t_ns, frame_id), pose=P)


def twist_msg(v: np.ndarray, t_ns: int, frame_id: str = "camera"):
    """(v_x, v_y, v_z, ω_x, ω_y, ω_z) [m/s, rad/s] -> geometry_msgs/TwistStamped."""
    v = [float(x) for x in np.asarray(v, dtype=float).reshape(6)]
    V3 = _T["geometry_msgs/msg/Vector3"]
    tw = _T[TWIST_UNSTAMPED](linear=V3(x=v[0], y=v[1], z=v[2]), angular=V3(x=v[3], y=v[4], z=v[5]))
    return _T[TWIST](header=header_msg(t_ns, frame_id), twist=tw)


def latent_msg(z: np.ndarray, image_stamp_ns: int | None = None, frame_id: str = ""):
    """z (D,) -> std_msgs/Float32MultiArray. Float32MultiArray has no header, so the stamp of
    the image behind z goes into the label of its one dimension, as the encoder node writes it
    (latent_vs.ros.convert): "latent stamp=<sec>.<nanosec, 9 digits> frame=<frame_id>"."""
    z = np.asarray(z, dtype=np.float32).reshape(-1)
    label = "latent"
    if image_stamp_ns is not None:
        t = int(image_stamp_ns)
        label = f"latent stamp={t // 1_000_000_000}.{t % 1_000_000_000:09d} frame={frame_id}"
    dim = _T["std_msgs/msg/MultiArrayDimension"](label=label, size=z.size, stride=z.size)
    return _T[LATENT](layout=_T["std_msgs/msg/MultiArrayLayout"](dim=[dim], data_offset=0), data=z)


_LATENT_LABEL = re.compile(r"stamp=(\d+)\.(\d{9})")


def latent_stamp_ns(msg) -> int | None:
    """The image stamp [ns] in a latent's label (None: an unlabelled latent)."""
    if msg.layout.dim:
        m = _LATENT_LABEL.search(msg.layout.dim[0].label)
        if m:
            return int(m.group(1)) * 1_000_000_000 + int(m.group(2))
    return None


def string_msg(s: str):
    return _T[STRING](data=str(s))


def float32_msg(x: float):
    return _T[FLOAT32](data=float(x))


def quaternion_from_matrix(T: np.ndarray) -> tuple[float, float, float, float]:
    """Rotation of T (4x4 or 3x3) -> (x, y, z, w), w >= 0, through θu."""
    tu = geometry.thetau_from_rotation(np.asarray(T, dtype=float)[:3, :3])
    theta = float(np.linalg.norm(tu))
    xyz = tu * (np.sin(theta / 2) / theta if theta > 1e-12 else 0.5)
    return float(xyz[0]), float(xyz[1]), float(xyz[2]), float(np.cos(theta / 2))


def matrix_from_quaternion(x: float, y: float, z: float, w: float) -> np.ndarray:
    """(x, y, z, w) (any norm > 0) -> R (3, 3)."""
    q = np.array([x, y, z, w], dtype=float)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError(f"invalid quaternion {q.tolist()}")
    q = q / n
    if q[3] < 0:
        q = -q
    s = np.linalg.norm(q[:3])
    theta = 2.0 * np.arctan2(s, q[3])
    tu = q[:3] * (theta / s) if s > 1e-12 else 2.0 * q[:3]
    return geometry.rotation_from_thetau(tu)


# ---------------------------------------------------------------- message decoding

def has_header(msgtype: str) -> bool:
    """Whether messages of this type start with a std_msgs/Header (stamped types)."""
    t = _T.get(msgtype)
    fields = getattr(t, "__dataclass_fields__", {})
    return "header" in fields



def stamp_ns(msg) -> int:
    """header.stamp of a stamped message in ns."""
    s = msg.header.stamp
    return int(s.sec) * 1_000_000_000 + int(s.nanosec)


def image_from_msg(msg, encoding: str | None = None) -> np.ndarray:
    """sensor_msgs/Image or CompressedImage -> uint8 grey (H, W). `encoding` overrides the
    message's field (for a driver that labels its images wrongly). Raises ValueError naming
    the problem (unknown encoding, size mismatch, undecodable compressed data)."""
    if msg.__msgtype__ == COMPRESSED_IMAGE:
        import cv2
        img = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise ValueError(f"compressed image (format '{msg.format}') could not be decoded")
        return img
    from .imageconv import image_to_array
    return image_to_array(encoding or msg.encoding, msg.height, msg.width, msg.step, msg.data,
                          bool(msg.is_bigendian))


def pose_from_msg(msg) -> np.ndarray:
    """geometry_msgs/PoseStamped (or Pose) -> 4x4."""
    p = getattr(msg, "pose", msg)
    T = np.eye(4)
    T[:3, :3] = matrix_from_quaternion(p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w)
    T[:3, 3] = (p.position.x, p.position.y, p.position.z)
    return T


def twist_from_msg(msg) -> np.ndarray:
    """geometry_msgs/TwistStamped or Twist -> (6,)."""
    t = getattr(msg, "twist", msg)
    return np.array([t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z])


def latent_from_msg(msg) -> np.ndarray:
    return np.asarray(msg.data, dtype=np.float32).reshape(-1)


# ---------------------------------------------------------------- writing

class BagWriter:
    """Writes a rosbag2 bag at `path` (a directory, as `ros2 bag record -o`).

    The bag is built in `path.partial/` and renamed to `path` on close(): a process killed
    mid-recording leaves only `path.partial` (clearly marked, refused by readers); a clean
    close, also on Ctrl-C or an exception in a `with` block, leaves a valid bag. Topics are
    added on their first message; the message type comes from the message.

        with BagWriter("run1") as bag:                      # MCAP by default
            bag.write("/image", image_msg(img, t), t)        # t: log time [ns]
    """

    def __init__(self, path: str | os.PathLike, storage: str = "mcap"):
        if storage not in STORAGES:
            raise BagError(f"unknown bag storage '{storage}' (choose one of: {', '.join(STORAGES)})")
        self.path = Path(path).absolute()
        self.storage = storage
        self.partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        if self.path.name.endswith(PARTIAL_SUFFIX):
            raise BagError(f"bag name must not end in '{PARTIAL_SUFFIX}' (reserved for interrupted recordings): {self.path}")
        if self.path.exists():
            raise BagError(f"bag already exists, not overwriting: {self.path}")
        if self.partial.exists():
            raise BagError(f"an interrupted recording is in the way: {self.partial} (remove it or choose another name)")
        if not self.path.parent.is_dir():
            raise BagError(f"directory does not exist: {self.path.parent}")
        self.partial.mkdir()
        self._writer = Writer(self.partial / self.path.name, version=Writer.VERSION_LATEST,
                              storage_plugin=StoragePlugin[storage.upper()])
        self._writer.open()
        self._conns: dict[str, object] = {}
        self.counts: dict[str, int] = {}
        self.closed = False

    def _connection(self, topic: str, msgtype: str):
        conn = self._conns.get(topic)
        if conn is None:
            if msgtype not in TYPESTORE.types:
                raise BagError(f"message type '{msgtype}' of topic {topic} is unknown to the Jazzy typestore")
            conn = self._writer.add_connection(topic, msgtype, typestore=TYPESTORE,
                                               offered_qos_profiles=[RELIABLE_QOS])
            self._conns[topic] = conn
            self.counts[topic] = 0
        elif conn.msgtype != msgtype:
            raise BagError(f"topic {topic} already holds {conn.msgtype}, cannot add a {msgtype}")
        return conn

    def write(self, topic: str, msg, t_ns: int) -> None:
        """Serialise a rosbags message and write it with log time t_ns."""
        self.write_raw(topic, msg.__msgtype__, TYPESTORE.serialize_cdr(msg, msg.__msgtype__), t_ns)

    def write_raw(self, topic: str, msgtype: str, data: bytes, t_ns: int) -> None:
        """Write already serialised CDR (as an rclpy raw subscription delivers it)."""
        if self.closed:
            raise BagError(f"bag {self.path} is closed")
        self._writer.write(self._connection(topic, msgtype), int(t_ns), data)
        self.counts[topic] += 1

    def set_custom_data(self, key: str, value: str) -> None:
        """A string in metadata.yaml's custom_data (e.g. the model and goal of a run)."""
        self._writer.set_custom_data(key, str(value))

    def close(self) -> Path:
        """Finish the bag (index, metadata.yaml) and move it to its final name."""
        if self.closed:
            return self.path
        self.closed = True
        self._writer.close()
        if self.storage == "mcap":
            for f in (self.partial / self.path.name).glob("*.mcap"):
                seal_mcap_crcs(f)
        os.replace(self.partial / self.path.name, self.path)
        self.partial.rmdir()
        return self.path

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and not self.closed:
            # what was written so far is a valid bag; say in it that the run stopped early
            try:
                self.set_custom_data("latent_vs.interrupted", f"{exc_type.__name__}: {exc}"[:200])
            except Exception:
                pass
        self.close()
        return False


# ---------------------------------------------------------------- MCAP chunk CRCs

_MCAP_MAGIC = b"\x89MCAP0\r\n"
_OP_CHUNK, _OP_DATA_END = 0x06, 0x0F


def _mcap_chunks(path: Path):
    """(file offset of the CRC field, start_ns, stored CRC, CRC of the records or None when
    compressed) for each chunk of an MCAP file, in file order; stops at the data end. Raises
    ValueError on a broken record structure."""
    with open(path, "rb") as f:
        if f.read(8) != _MCAP_MAGIC:
            raise ValueError("no MCAP magic at the start")
        while True:
            head = f.read(9)
            if len(head) < 9:
                raise ValueError(f"record header cut short at byte {f.tell() - len(head)}")
            op, length = head[0], struct.unpack("<Q", head[1:])[0]
            start = f.tell()
            if op == _OP_DATA_END:
                return
            if op != _OP_CHUNK:
                f.seek(length, os.SEEK_CUR)
                continue
            body = f.read(length)
            if len(body) < length or length < 40:
                raise ValueError(f"chunk at byte {start} cut short")
            t0, _t1, _usize, crc, clen = struct.unpack_from("<QQQII", body, 0)
            comp = body[32:32 + clen]
            rlen = struct.unpack_from("<Q", body, 32 + clen)[0]
            records = body[40 + clen:40 + clen + rlen]
            if len(records) != rlen:
                raise ValueError(f"chunk at byte {start}: records cut short")
            yield start + 24, int(t0), int(crc), (zlib.crc32(records) if not comp else None)


def seal_mcap_crcs(path: Path) -> int:
    """Write the CRC-32 of each uncompressed chunk's records into its header (rosbags leaves
    them 0: "not computed"), so that a reader can tell damaged chunks. Returns the count."""
    fixes = [(off, actual) for off, _t, crc, actual in _mcap_chunks(path) if actual is not None and crc == 0]
    with open(path, "r+b") as f:
        for off, actual in fixes:
            f.seek(off)
            f.write(struct.pack("<I", actual))
    return len(fixes)


def mcap_damage(path: Path) -> tuple[int, str] | None:
    """(log time [ns] from which messages cannot be trusted, one line saying why) for the first
    chunk whose CRC does not match or whose structure is broken, or None when all is whole."""
    last_t = 0
    try:
        for i, (_off, t0, crc, actual) in enumerate(_mcap_chunks(path)):
            if crc != 0 and actual is not None and crc != actual:
                return t0, f"chunk {i} (from {t0} ns) fails its CRC check"
            last_t = t0
    except ValueError as e:
        return last_t + 1, str(e)
    return None


# ---------------------------------------------------------------- reading

@dataclass
class TopicInfo:
    name: str
    msgtype: str
    count: int


@dataclass
class Message:
    topic: str
    msgtype: str
    t_ns: int            # log time
    raw: bytes
    _msg: object = field(default=None, repr=False)

    @property
    def msg(self):
        """The deserialised rosbags message (decoded on first use)."""
        if self._msg is None:
            self._msg = TYPESTORE.deserialize_cdr(self.raw, self.msgtype)
        return self._msg


class Bag:
    """A rosbag2 bag opened for reading, with every failure turned into one BagError line.

        with Bag("run1") as bag:
            topic = bag.find_topic(IMAGE_TYPES, "image", option="--image-topic")
            for m in bag.messages([topic]):
                img = image_from_msg(m.msg)
    """

    def __init__(self, path: str | os.PathLike):
        p = Path(path)
        if not p.exists():
            raise BagError(f"bag not found: {p}")
        if p.is_file() and (p.parent / "metadata.yaml").is_file():
            p = p.parent            # the storage file of a bag directory: read the whole bag
        self.path = p
        if p.name.endswith(PARTIAL_SUFFIX) or (p.is_dir() and not (p / "metadata.yaml").exists()):
            if p.name.endswith(PARTIAL_SUFFIX) or any(p.glob("**/*.mcap")) or any(p.glob("**/*.db3")):
                raise BagError(f"bag {p} is incomplete: the recording was interrupted before it was closed "
                               "(no metadata.yaml)")
            raise BagError(f"not a ROS 2 bag (no metadata.yaml): {p}")
        if p.is_file() and p.suffix not in (".mcap", ".db3"):
            raise BagError(f"not a ROS 2 bag (expected a bag directory, .mcap or .db3): {p}")
        try:
            self._reader = Reader(p)
            self._reader.open()
        except Exception as e:  # rosbags raises ReaderError, OSError, apsw and struct errors
            raise BagError(f"cannot read bag {p}: {_damage_hint(e)}") from None
        self.corruption: str | None = None   # one line: where the damage is, once found
        self._damage_ns: int | None = None   # messages logged from here on are not read
        for f in ([p] if p.is_file() else sorted(p.glob("*.mcap"))):
            if f.suffix == ".mcap":
                dmg = mcap_damage(f)
                if dmg is not None:
                    self._damage_ns, why = dmg
                    self.corruption = f"bag {p} is corrupt: {f.name}: {why}"
                    break
        self.topics: dict[str, TopicInfo] = {}
        for c in self._reader.connections:
            info = self.topics.setdefault(c.topic, TopicInfo(c.topic, c.msgtype, 0))
            info.count += c.msgcount
        self._conns = {c.topic: c for c in self._reader.connections}

    @property
    def message_count(self) -> int:
        return int(self._reader.message_count)

    @property
    def start_ns(self) -> int:
        return int(self._reader.start_time)

    @property
    def end_ns(self) -> int:
        return int(self._reader.end_time)

    @property
    def custom_data(self) -> dict:
        meta = getattr(self._reader.storage, "metadata", None)
        return dict(getattr(meta, "custom", None) or {})

    def summary(self) -> str:
        lines = [f"{self.path}: {self.message_count} messages, {(self.end_ns - self.start_ns) / 1e9:.2f} s"]
        lines += [f"  {t.name:<28} {t.msgtype:<36} {t.count}" for t in self.topics.values()]
        return "\n".join(lines)

    def require_messages(self) -> None:
        if self.message_count == 0 or not self.topics:
            raise BagError(f"bag {self.path} is empty (no messages)")

    def find_topic(self, msgtypes: Iterable[str], what: str, name: str | None = None,
                   option: str = "", prefer: str | None = None, required: bool = True,
                   exclude=()) -> str | None:
        """The topic of one of `msgtypes`: `name` if given (it must exist with such a type),
        else `prefer` if present, else the only one not in `exclude` (several: the one with
        most messages).
        Raises a BagError that lists the candidates when none fits (or returns None when
        not `required`)."""
        msgtypes = tuple(msgtypes)
        cands = [t for t in self.topics.values() if t.msgtype in msgtypes and t.name not in exclude]
        hint = f" (choose one with {option})" if option else ""
        if name is not None:
            if name not in self.topics:
                have = ", ".join(t.name for t in cands) or "none"
                raise BagError(f"topic {name} is not in bag {self.path} ({what} topics there: {have})")
            if self.topics[name].msgtype not in msgtypes:
                raise BagError(f"topic {name} in bag {self.path} is a {self.topics[name].msgtype}, "
                               f"not a {' or '.join(msgtypes)}")
            return name
        if not cands:
            if not required:
                return None
            listing = ", ".join(f"{t.name} ({t.msgtype})" for t in self.topics.values()) or "no topics"
            raise BagError(f"bag {self.path} has no {what} topic ({' or '.join(msgtypes)}); it holds: {listing}")
        if prefer is not None and prefer in self.topics and self.topics[prefer].msgtype in msgtypes:
            return prefer
        return max(cands, key=lambda t: t.count).name

    def messages(self, topics: Iterable[str] = (), start_ns: int | None = None,
                 stop_ns: int | None = None, stop_at_damage: bool = False) -> Iterator[Message]:
        """Messages of `topics` (all when empty) in log-time order, none from a damaged chunk
        on (see `corruption`). A read error mid-way becomes a BagError naming the bag, or with
        stop_at_damage ends the messages and sets `corruption`."""
        topics = list(topics)
        conns = [self._conns[t] for t in topics if t in self._conns] if topics else []
        if topics and not conns:
            return
        if self._damage_ns is not None:
            stop_ns = self._damage_ns if stop_ns is None else min(stop_ns, self._damage_ns)
        try:
            for c, t, raw in self._reader.messages(conns, start=start_ns, stop=stop_ns):
                yield Message(c.topic, c.msgtype, int(t), bytes(raw))
        except BagError:
            raise
        except Exception as e:
            line = f"cannot read bag {self.path}: {_damage_hint(e)}"
            if not stop_at_damage:
                raise BagError(line) from None
            self.corruption = self.corruption or line

    def decode(self, m: Message):
        """m.msg, with a decoding failure (corrupt CDR) as a BagError."""
        try:
            return m.msg
        except Exception as e:
            raise BagError(f"cannot decode a {m.msgtype} on {m.topic} in bag {self.path}: the message's bytes "
                           "are corrupt (the bag was damaged after it was written)") from None

    def close(self) -> None:
        if getattr(self, "_reader", None) is not None and self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> "Bag":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
TWIST_TYPES = (TWIST, TWIST_UNSTAMPED)


def _damage_hint(e: BaseException) -> str:
    """What a reader exception means for the user, in their words (not the library's)."""
    if "metadata" in str(e).lower() or "yaml" in type(e).__name__.lower():
        return ("corrupt or truncated: its metadata.yaml cannot be read (edited by hand, or cut short); "
                "re-copy the bag")
    return ("corrupt or truncated: a data file is damaged or shorter than its index says (a copy cut short, "
            "a full disk, or a recorder that was killed); re-copy or re-record it")


def _one_line(e: BaseException) -> str:
    s = " ".join(str(e).split()) or type(e).__name__
    return s if len(s) <= 160 else s[:157] + "..."
