"""Recording live topics and replaying bags live, over real rclpy/DDS (isolated domain, see
conftest.py). Reliable QoS and bounded spin loops with deadlines; no sleeps for sync."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from geometry_msgs.msg import PoseStamped, TwistStamped  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from latent_vs import bags  # noqa: E402
from latent_vs.replay import ServoSettings  # noqa: E402
from latent_vs.ros.bag_publisher import BagPublisher  # noqa: E402
from latent_vs.ros.record import BagRecorder, record_simulation  # noqa: E402

pytestmark = pytest.mark.ros
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
PBVS = ServoSettings(method="pbvs", gain=0.5)


@pytest.fixture(scope="module")
def ctx():
    context = rclpy.context.Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


@pytest.fixture
def executor(ctx):
    ex = SingleThreadedExecutor(context=ctx)
    nodes = []

    def add(node):
        nodes.append(node)
        ex.add_node(node)
        return node
    ex.add = add
    yield ex
    for n in nodes:
        ex.remove_node(n)
        n.destroy_node()
    ex.shutdown()


def spin_until(ex, cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        ex.spin_once(timeout_sec=0.02)
    return cond()


def make_image(i, stamp_ns):
    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = "camera"
    msg.height, msg.width, msg.encoding, msg.step = 32, 40, "mono8", 40
    msg.data = np.full(32 * 40, i, np.uint8).tobytes()
    return msg


def make_twist(i, stamp_ns):
    msg = TwistStamped()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = "camera"
    msg.twist.linear.x, msg.twist.angular.z = 0.01 * i, -0.02 * i
    return msg


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_bag_recorder_records_live_topics(ctx, executor, tmp_path, storage):
    pub_node = executor.add(rclpy.create_node("cam", context=ctx))
    img_pub = pub_node.create_publisher(Image, "image", qos_profile_sensor_data)   # as camera drivers do
    tw_pub = pub_node.create_publisher(TwistStamped, "cmd_twist", RELIABLE)
    rec = executor.add(BagRecorder("rec", str(tmp_path / "live"), ["image", "cmd_twist", "latent"], storage,
                                   custom_data={"note": "test"}, context=ctx))
    assert spin_until(executor, lambda: img_pub.get_subscription_count() > 0 and tw_pub.get_subscription_count() > 0)
    # the recorder matched each publisher's reliability (a reliable subscriber would miss a best-effort camera)
    assert rec._subs["/image"].qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
    assert rec._subs["/cmd_twist"].qos_profile.reliability == ReliabilityPolicy.RELIABLE
    assert "/latent" in rec._pending       # no publisher: waits for one to learn its type
    t0 = time.time_ns()
    n = 15
    for i in range(n):
        img_pub.publish(make_image(i, t0 + i))
        tw_pub.publish(make_twist(i, t0 + i))
        spin_until(executor, lambda: rec.counts["/cmd_twist"] > i, timeout=2.0)
    assert spin_until(executor, lambda: rec.counts["/image"] >= n and rec.counts["/cmd_twist"] >= n, timeout=5.0)
    path = rec.close()
    with bags.Bag(path) as b:
        assert b.topics["/image"].msgtype == bags.IMAGE and b.topics["/cmd_twist"].msgtype == bags.TWIST
        assert b.topics["/image"].count == n and b.topics["/cmd_twist"].count == n
        assert "/latent" not in b.topics and b.custom_data["note"] == "test"
        imgs, tws, logs = [], [], []
        for m in b.messages():
            msg = b.decode(m)
            logs.append(m.t_ns)
            if m.topic == "/image":
                imgs.append((bags.stamp_ns(msg), bags.image_from_msg(msg)))
            else:
                tws.append((bags.stamp_ns(msg), bags.twist_from_msg(msg)))
    assert [s for s, _ in imgs] == [t0 + i for i in range(n)]
    assert all(np.all(img == i) and img.shape == (32, 40) for i, (_, img) in enumerate(imgs))
    assert np.allclose([v[0] for _, v in tws], [0.01 * i for i in range(n)])
    assert all(t0 <= t <= time.time_ns() for t in logs)        # logged at the node's clock


def _wait_line(proc, text, timeout=30.0):
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"'{text}' not seen; got: {''.join(lines)}")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigint", "sigkill"])
def test_record_command_interrupted(ctx, executor, tmp_path, how, capsys):
    """`latent-vs record` stopped by Ctrl-C leaves a valid bag; killed, a `.partial` dir that
    replay refuses with a message saying so."""
    path = tmp_path / "cli"
    proc = subprocess.Popen([sys.executable, "-m", "latent_vs.cli", "record", str(path), "--topics", "/cmd_twist"],
                            cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        _wait_line(proc, "recording")
        node = executor.add(rclpy.create_node("pub", context=ctx))
        pub = node.create_publisher(TwistStamped, "cmd_twist", RELIABLE)
        assert spin_until(executor, lambda: pub.get_subscription_count() > 0, timeout=15.0)
        for i in range(10):
            pub.publish(make_twist(i, i + 1))
        assert pub.wait_for_all_acked(rclpy.duration.Duration(seconds=5.0))
        proc.send_signal(signal.SIGINT if how == "sigint" else signal.SIGKILL)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    if how == "sigint":
        assert proc.returncode == 0, err
        assert "/cmd_twist 10" in out
        with bags.Bag(path) as b:
            assert b.topics["/cmd_twist"].count == 10
        assert not (tmp_path / "cli.partial").exists()
    else:
        assert not path.exists() and (tmp_path / "cli.partial").is_dir()
        with pytest.raises(bags.BagError, match="incomplete"):
            bags.Bag(tmp_path / "cli.partial")


@pytest.fixture(scope="module")
def pbvs_bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("live") / "pbvs"
    record_simulation(str(path), PBVS, "mcap", steps=20, rate=10.0)
    return path


def _collector(node, topics_types, store):
    for topic, mtype in topics_types:
        store[topic] = []
        node.create_subscription(mtype, topic, lambda m, t=topic: store[t].append(m), RELIABLE, raw=False)


def test_live_replay_republishes_every_message_in_order(ctx, executor, pbvs_bag):
    got = {}
    sub = executor.add(rclpy.create_node("sub", context=ctx))
    _collector(sub, [("/image", Image), ("/camera_pose", PoseStamped), ("/cmd_twist", TwistStamped)], got)
    with bags.Bag(pbvs_bag) as bag:
        player = executor.add(BagPublisher(bag, ["/image", "/camera_pose", "/cmd_twist"], rate=4.0,
                                           restamp=False, context=ctx))
        assert spin_until(executor, lambda: all(p.get_subscription_count() > 0 for p in player.publishers_.values()))
        out = player.play()
        recorded = {t: [bag.decode(m) for m in bag.messages([t])] for t in got}
        duration_s = (bag.end_ns - bag.start_ns) / 1e9
    assert spin_until(executor, lambda: all(len(got[t]) == len(recorded[t]) for t in got), timeout=10.0)
    assert out["counts"] == {t: len(recorded[t]) for t in got}
    assert out["wall_s"] >= 0.95 * duration_s / 4.0      # paced by the recorded timing, 4x faster
    for a, b in zip(got["/image"], recorded["/image"]):
        assert bytes(a.data) == bytes(b.data.tobytes()) and a.header.stamp.sec == b.header.stamp.sec \
            and a.header.stamp.nanosec == b.header.stamp.nanosec
    for a, b in zip(got["/cmd_twist"], recorded["/cmd_twist"]):
        assert np.allclose([a.twist.linear.x, a.twist.angular.z], [b.twist.linear.x, b.twist.angular.z])


def test_live_replay_restamps_to_playback_time(ctx, executor, pbvs_bag):
    got = {}
    sub = executor.add(rclpy.create_node("sub2", context=ctx))
    _collector(sub, [("/image", Image)], got)
    rate = 2.0
    with bags.Bag(pbvs_bag) as bag:
        player = executor.add(BagPublisher(bag, ["/image"], rate=rate, context=ctx))
        assert spin_until(executor, lambda: player.publishers_["/image"].get_subscription_count() > 0)
        t_start = time.time_ns()
        player.play()
        n = bag.topics["/image"].count
    assert spin_until(executor, lambda: len(got["/image"]) == n)
    st = np.array([m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in got["/image"]], np.int64)
    assert st[0] >= t_start                                  # stamped at playback, like a live camera
    assert np.allclose(np.diff(st), 0.1e9 / rate, atol=1e3)  # 10 Hz recording played at 2x


def test_live_replay_drives_the_controller_node_like_the_recording(ctx, executor, pbvs_bag):
    """The bag's camera poses, published live into H4's controller node (method pbvs, the
    settings the bag was recorded with), give back the recorded twists."""
    from latent_vs.ros.controller_node import ControllerNode
    params = [Parameter("method", value="pbvs"), Parameter("autostart", value=True),
              Parameter("gain", value=PBVS.gain), Parameter("input_timeout", value=2.0)]
    ctl = executor.add(ControllerNode(parameter_overrides=params, context=ctx))
    got = []
    sub = executor.add(rclpy.create_node("sub3", context=ctx))
    sub.create_subscription(TwistStamped, "cmd_twist", lambda m: got.append(bags_twist(m)), RELIABLE)
    with bags.Bag(pbvs_bag) as bag:
        recorded = np.array([bags.twist_from_msg(bag.decode(m)) for m in bag.messages(["/cmd_twist"])])
        player = executor.add(BagPublisher(bag, ["/camera_pose"], rate=1.0, context=ctx))
        assert spin_until(executor, lambda: player.publishers_["/camera_pose"].get_subscription_count() > 0
                          and sub.count_publishers("cmd_twist") > 0)
        # play while spinning the controller: the publisher paces itself, we spin between messages
        import threading
        th = threading.Thread(target=player.play)
        th.start()
        while th.is_alive():
            executor.spin_once(timeout_sec=0.01)
        th.join()
    spin_until(executor, lambda: len(got) >= len(recorded), timeout=3.0)
    got = np.array(got)
    assert len(got) >= 0.8 * len(recorded), (len(got), len(recorded))   # best-effort input: a few may drop
    # every twist the node sent is one of the recorded twists, and in the same order
    idx = [int(np.argmin(np.abs(recorded - g).max(axis=1))) for g in got]
    assert all(np.abs(recorded[i] - g).max() < 1e-9 for i, g in zip(idx, got))
    assert idx == sorted(idx)


def bags_twist(m):
    return np.array([m.twist.linear.x, m.twist.linear.y, m.twist.linear.z,
                     m.twist.angular.x, m.twist.angular.y, m.twist.angular.z])


def test_latent_label_matches_the_encoder_nodes(ctx):
    """bags.latent_stamp_ns reads the stamp the encoder node writes (latent_vs.ros.convert)."""
    from rclpy.serialization import serialize_message
    from builtin_interfaces.msg import Time
    from latent_vs.ros.convert import latent_to_msg
    msg = latent_to_msg(np.arange(4, dtype=np.float32), Time(sec=12, nanosec=3400), "cam")
    raw = serialize_message(msg)
    back = bags.TYPESTORE.deserialize_cdr(raw, bags.LATENT)
    assert bags.latent_stamp_ns(back) == 12 * 10**9 + 3400
    ours = bags.latent_msg(np.arange(4, dtype=np.float32), 12 * 10**9 + 3400, "cam")
    assert ours.layout.dim[0].label == msg.layout.dim[0].label


@pytest.mark.slow
def test_demo_run_recorded_over_ros_replays_offline_to_the_same_twists(tmp_path):
    """A live run (the demo's nodes over DDS, PBVS on the simulator's pose) recorded with
    BagRecorder, replayed offline with the run's settings: the same twists."""
    from latent_vs.replay import replay_offline
    from latent_vs.ros.demo import demo_settings, run_demo
    settings, sim_params = demo_settings("pbvs")
    # a few seconds of servoing, converged or not (this is about the replay, not the demo)
    run_demo("pbvs", None, sim_params, 6.0, settings, record=str(tmp_path / "demo"), progress=False)
    fields = ServoSettings.__dataclass_fields__
    replay_settings = ServoSettings(method="pbvs", **{k: v for k, v in settings.items() if k in fields})
    res = replay_offline(str(tmp_path / "demo"), replay_settings, progress=False)
    tw = res.summary["recorded_twists"]
    assert tw["recorded"] >= 10 and tw["unmatched"] == 0
    assert tw["compared"] + tw["stop_twists"] == tw["recorded"] and tw["replay_sent_nothing"] == 0
    assert tw["max_abs_diff"] < 1e-9


def test_publish_command(ctx, executor, pbvs_bag, capsys):
    """`latent-vs replay BAG --publish --rate 4 --topics /camera_pose --remap ...`"""
    import threading
    from latent_vs.cli import main as cli
    got = []
    sub = executor.add(rclpy.create_node("sub4", context=ctx))
    sub.create_subscription(PoseStamped, "/replayed/pose", got.append, RELIABLE)
    rc = {}
    th = threading.Thread(target=lambda: rc.setdefault("rc", cli(
        ["replay", str(pbvs_bag), "--publish", "--rate", "4", "--topics", "/camera_pose",
         "--remap", "/camera_pose:=/replayed/pose", "--wait-subscribers", "10"])))
    th.start()
    while th.is_alive():
        executor.spin_once(timeout_sec=0.01)
    th.join()
    assert rc["rc"] == 0
    assert spin_until(executor, lambda: len(got) == 20, timeout=5.0)
    assert "published 20 messages" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--rate", "0"], "--rate must be a positive number"),
    (["--topics", "/nope"], "/nope not in bag"),
    (["--remap", "/image=/x"], "--remap expects FROM:=TO"),
])
def test_publish_bad_options(pbvs_bag, capsys, args, message):
    from latent_vs.cli import main as cli
    rc = cli(["replay", str(pbvs_bag), "--publish", "--wait-subscribers", "0"] + args)
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_mlvs_bag_replayed_live_into_encoder_and_controller_nodes(ctx, executor, tmp_path):
    """The MLVS run recorded in simulation, its goal and camera images published live into
    the encoder and controller nodes: the nodes command the recorded twists again."""
    import threading
    from latent_vs import paths
    from latent_vs.ros.controller_node import ControllerNode
    from latent_vs.ros.encoder_node import EncoderNode
    from latent_vs.servo import make_law
    model = paths.model_dir("tiny")
    if not os.path.isfile(os.path.join(model, "meta.json")):
        pytest.skip("models/tiny is not in this checkout")
    s = ServoSettings(method="mlvs", model_dir=model)
    law = make_law("mlvs", model, gain=s.gain, k_neighbors=s.k_neighbors)
    record_simulation(str(tmp_path / "m"), s, "mcap", steps=12, rate=10.0, law=law)
    executor.add(EncoderNode(model=law.law.model, context=ctx))
    params = [Parameter("autostart", value=True), Parameter("gain", value=s.gain),
              Parameter("k_neighbors", value=s.k_neighbors), Parameter("input_timeout", value=5.0),
              Parameter("max_linear_speed", value=s.max_linear_speed),
              Parameter("max_angular_speed", value=s.max_angular_speed),
              Parameter("converged_translation", value=s.converged_translation),
              Parameter("converged_rotation", value=s.converged_rotation),
              Parameter("converged_steps", value=s.converged_steps)]
    executor.add(ControllerNode(law=law, parameter_overrides=params, context=ctx))
    got = []
    sub = executor.add(rclpy.create_node("sub5", context=ctx))
    sub.create_subscription(TwistStamped, "cmd_twist", lambda m: got.append(bags_twist(m)), RELIABLE)
    with bags.Bag(tmp_path / "m") as bag:
        recorded = np.array([bags.twist_from_msg(bag.decode(m)) for m in bag.messages(["/cmd_twist"])])
        player = executor.add(BagPublisher(bag, ["/goal_image", "/image"], rate=0.5, context=ctx))
        assert spin_until(executor, lambda: all(p.get_subscription_count() > 0 for p in player.publishers_.values())
                          and sub.count_publishers("cmd_twist") > 0, timeout=15.0)
        th = threading.Thread(target=player.play)
        th.start()
        while th.is_alive():
            executor.spin_once(timeout_sec=0.01)
        th.join()
    spin_until(executor, lambda: len(got) >= len(recorded), timeout=5.0)
    got = np.array(got).reshape(-1, 6)
    got = got[np.any(got != 0, axis=1)]      # zero twists: the controller's stop when the input ends
    assert len(got) >= 0.6 * len(recorded), (len(got), len(recorded))   # best-effort camera: some may drop
    idx = [int(np.argmin(np.abs(recorded - g).max(axis=1))) for g in got]
    assert all(np.abs(recorded[i] - g).max() < 1e-4 for i, g in zip(idx, got))
    assert idx == sorted(idx)


def test_live_replay_restamps_latents_in_their_label(ctx, executor, tmp_path):
    from std_msgs.msg import Float32MultiArray
    from latent_vs.ros.convert import msg_to_latent
    t0 = 1_000_000_000_000
    with bags.BagWriter(tmp_path / "lat") as w:
        for i in range(5):
            w.write("/latent", bags.latent_msg(np.full(8, i, np.float32), t0 + i * 10**8, "cam"), t0 + i * 10**8 + 5)
    got = []
    sub = executor.add(rclpy.create_node("sub6", context=ctx))
    sub.create_subscription(Float32MultiArray, "/latent", got.append, RELIABLE)
    with bags.Bag(tmp_path / "lat") as bag:
        player = executor.add(BagPublisher(bag, rate=5.0, context=ctx))
        assert spin_until(executor, lambda: player.publishers_["/latent"].get_subscription_count() > 0)
        t_start = time.time_ns()
        player.play()
    assert spin_until(executor, lambda: len(got) == 5)
    out = [msg_to_latent(m) for m in got]
    assert [float(z[0]) for z, _, _ in out] == [0, 1, 2, 3, 4] and all(f == "cam" for _, _, f in out)
    st = np.array([s for _, s, _ in out])
    assert st[0] >= t_start * 1e-9 - 1e-3 and np.allclose(np.diff(st), 0.1 / 5.0, atol=1e-6)
