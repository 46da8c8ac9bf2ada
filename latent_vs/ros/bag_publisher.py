"""Live replay: republish a bag's topics over ROS 2 at the recorded timing (`latent-vs replay
BAG --publish [--rate F]`), so the encoder and controller nodes run from a bag exactly as
from a camera.

Messages go out as the bag's raw CDR bytes (no conversion; Jazzy types on both sides), each
at start + (log time − first log time) / rate. By default header stamps (and the image stamp
in a latent's label) are shifted to the playback clock (what a live camera would stamp; the
controller's staleness check needs it);
--keep-stamps publishes them as recorded. Publishers are reliable (keep last 100): they
match both reliable and best-effort (sensor-data) subscribers.
"""
from __future__ import annotations

import importlib
import math
import sys
import time

import rclpy
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from .. import bags
from ..errors import UserError

PLAYBACK_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)


def msg_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class (raises UserError if not installed)."""
    pkg, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), name)
    except (ImportError, AttributeError):
        raise UserError(f"cannot publish {msgtype}: its ROS 2 Python package '{pkg}' is not installed") from None


class BagPublisher(Node):
    """Publishes the messages of an open bags.Bag. play() blocks until done (or Ctrl-C).

    topics: bag topics to publish (None: all); remap: {bag topic: published topic}."""

    def __init__(self, bag: bags.Bag, topics=None, remap: dict | None = None, rate: float = 1.0,
                 restamp: bool = True, node_name: str = "bag_publisher", **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        if not rate > 0:
            raise UserError(f"rate must be positive, got {rate}")
        bag.require_messages()
        self.bag, self.rate, self.restamp = bag, float(rate), restamp
        remap = dict(remap or {})
        names = list(bag.topics) if not topics else list(topics)
        missing = [t for t in names if t not in bag.topics]
        if missing:
            raise UserError(f"topic(s) {', '.join(missing)} not in bag {bag.path} (it has: {', '.join(bag.topics)})")
        unknown = [t for t in remap if t not in bag.topics]
        if unknown:
            raise UserError(f"--remap names topic(s) {', '.join(unknown)} that are not in bag {bag.path}")
        self.topics = names
        self.publishers_ = {t: self.create_publisher(msg_class(bag.topics[t].msgtype), remap.get(t, t), PLAYBACK_QOS)
                            for t in names}
        self.counts = {t: 0 for t in names}

    def wait_for_subscribers(self, timeout_s: float) -> bool:
        """Wait (discovery takes up to ~3 s) until some publisher has a subscriber."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(p.get_subscription_count() > 0 for p in self.publishers_.values()):
                return True
            time.sleep(0.05)
        return any(p.get_subscription_count() > 0 for p in self.publishers_.values())

    def _restamped(self, m: bags.Message, offset_ns: int, t_bag0: int) -> bytes:
        """The message with its stamp moved to the playback clock: start + (stamp − first
        log time) / rate. Stamped messages and latents (stamp in the label) are rewritten;
        anything else goes out as recorded."""
        if m.msgtype == bags.LATENT:
            msg = self.bag.decode(m)
            st = bags.latent_stamp_ns(msg)
            if st is None:
                return m.raw
            frame = msg.layout.dim[0].label.partition(" frame=")[2]
            new = bags.latent_msg(msg.data, max(offset_ns + int((st - t_bag0) / self.rate), 0), frame)
            return bytes(bags.TYPESTORE.serialize_cdr(new, m.msgtype))
        if not bags.has_header(m.msgtype):
            return m.raw
        msg = self.bag.decode(m)
        st = bags.stamp_ns(msg)
        msg.header.stamp = bags.time_msg(max(offset_ns + int((st - t_bag0) / self.rate), 0))
        return bytes(bags.TYPESTORE.serialize_cdr(msg, m.msgtype))

    def play(self, progress: bool = False) -> dict:
        """Publish every message at its recorded time / rate. Returns counts and timing."""
        t_bag0 = None
        start_wall = time.monotonic()
        start_ros = self.get_clock().now().nanoseconds
        late = 0.0
        bar = None
        if progress:
            from tqdm import tqdm
            total = sum(self.bag.topics[t].count for t in self.topics)
            bar = tqdm(total=total, desc="publish", unit="msg", file=sys.stderr, leave=False)
        for m in self.bag.messages(self.topics):
            if t_bag0 is None:
                t_bag0 = m.t_ns
            target = start_wall + (m.t_ns - t_bag0) / 1e9 / self.rate
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                late = max(late, -delay)
            data = self._restamped(m, start_ros, t_bag0) if self.restamp else m.raw
            self.publishers_[m.topic].publish(data)
            self.counts[m.topic] += 1
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return {"counts": dict(self.counts), "wall_s": time.monotonic() - start_wall, "max_late_s": late}


def main(argv: list[str] | None = None) -> int:
    """`latent-vs replay BAG --publish ...`: the live half of `latent-vs replay` (its options:
    latent_vs.replay.build_parser)."""
    from ..replay import build_parser
    args = build_parser().parse_args(argv)
    if args.rate <= 0 or not math.isfinite(args.rate):
        raise UserError(f"--rate must be a positive number, got {args.rate}")
    return main_publish(args)


def main_publish(args) -> int:
    """`latent-vs replay BAG --publish ...` (args from latent_vs.replay.build_parser)."""
    remap = {}
    for r in args.remap:
        if ":=" not in r:
            raise UserError(f"--remap expects FROM:=TO, got '{r}'")
        a, b = r.split(":=", 1)
        remap[a] = b
    from rclpy.signals import SignalHandlerOptions
    with bags.Bag(args.bag) as bag:
        bag.require_messages()
        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)   # Ctrl-C: KeyboardInterrupt
        node = None
        try:
            node = BagPublisher(bag, args.topics, remap, args.rate, restamp=not args.keep_stamps)
            if args.wait_subscribers > 0 and not node.wait_for_subscribers(args.wait_subscribers):
                print(f"latent-vs replay: no subscriber after {args.wait_subscribers:g} s; publishing anyway",
                      file=sys.stderr)
            while True:
                out = node.play(progress=True)
                print(f"published {sum(out['counts'].values())} messages in {out['wall_s']:.2f} s "
                      f"(rate {args.rate:g}x): " + ", ".join(f"{t} {n}" for t, n in out["counts"].items()))
                if not args.loop:
                    break
                node.counts = {t: 0 for t in node.counts}
        except KeyboardInterrupt:
            print("latent-vs replay: stopped", file=sys.stderr)
        finally:
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()
    return 0
