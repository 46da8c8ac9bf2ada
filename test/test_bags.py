"""Bag layer: real rosbags bags (MCAP and sqlite3) written, read back and broken on purpose."""
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from latent_vs import bags, geometry
from latent_vs.cli import main as cli
from latent_vs.replay import RUN_KEY, ServoSettings
from latent_vs.ros.record import record_simulation
from latent_vs.tasks import sample_tasks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PBVS = ServoSettings(method="pbvs", gain=0.5)


def run_cli(argv, capsys):
    rc = cli(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_quaternion_round_trip():
    for T in sample_tasks(50, seed=3):
        R = bags.matrix_from_quaternion(*bags.quaternion_from_matrix(T))
        assert np.allclose(R, T[:3, :3], atol=1e-9)
    R_pi = geometry.rotation_from_thetau(np.array([0.0, np.pi, 0.0]))
    assert np.allclose(bags.matrix_from_quaternion(*bags.quaternion_from_matrix(R_pi)), R_pi, atol=1e-9)


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_messages_round_trip(tmp_path, storage):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (48, 64), dtype=np.uint8)
    T = sample_tasks(1, seed=1)[0]
    v = rng.normal(size=6)
    z = rng.normal(size=32).astype(np.float32)
    t0 = 1_700_000_000_123_456_789
    with bags.BagWriter(tmp_path / "b", storage) as w:
        w.write("/image", bags.image_msg(img, t0), t0)
        w.write("/image_rgb", bags.image_msg(img, t0 + 1, encoding="rgb8"), t0 + 1)
        w.write("/camera_pose", bags.pose_msg(T, t0), t0 + 2)
        w.write("/cmd_twist", bags.twist_msg(v, t0, "tool0"), t0 + 3)
        w.write("/latent", bags.latent_msg(z), t0 + 4)
        w.write("/controller/state", bags.string_msg("servoing"), t0 + 5)
        w.set_custom_data("k", "v")
    assert not (tmp_path / "b.partial").exists()
    with bags.Bag(tmp_path / "b") as b:
        assert b.message_count == 6 and b.start_ns == t0
        assert b.topics["/image"].msgtype == bags.IMAGE and b.topics["/cmd_twist"].msgtype == bags.TWIST
        assert b.custom_data["k"] == "v"
        got = {m.topic: (m.t_ns, b.decode(m)) for m in b.messages()}
    assert np.array_equal(bags.image_from_msg(got["/image"][1]), img)
    assert bags.stamp_ns(got["/image"][1]) == t0
    assert np.array_equal(bags.image_from_msg(got["/image_rgb"][1]), img)  # grey written as rgb8 reads back grey
    assert np.allclose(bags.pose_from_msg(got["/camera_pose"][1]), T, atol=1e-12)
    assert np.allclose(bags.twist_from_msg(got["/cmd_twist"][1]), v)
    assert got["/cmd_twist"][1].header.frame_id == "tool0"
    assert np.array_equal(bags.latent_from_msg(got["/latent"][1]), z)
    assert got["/controller/state"][1].data == "servoing"
    assert got["/latent"][0] == t0 + 4


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_bag_metadata_is_what_ros2_bag_expects(tmp_path, storage):
    """metadata.yaml: rosbag2 version 9 (Jazzy), the storage id, Jazzy type hashes, CDR."""
    import yaml
    with bags.BagWriter(tmp_path / "b", storage) as w:
        w.write("/image", bags.image_msg(np.zeros((4, 4), np.uint8), 10), 10)
        w.write("/cmd_twist", bags.twist_msg(np.zeros(6), 10), 11)
    meta = yaml.safe_load((tmp_path / "b" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 9 and meta["storage_identifier"] == storage
    assert meta["relative_file_paths"] == [f"b.{'mcap' if storage == 'mcap' else 'db3'}"]
    tm = {t["topic_metadata"]["name"]: t["topic_metadata"] for t in meta["topics_with_message_count"]}
    assert tm["/image"]["type_description_hash"] == bags.TYPESTORE.hash_rihs01(bags.IMAGE)
    assert tm["/image"]["serialization_format"] == "cdr"
    assert tm["/cmd_twist"]["offered_qos_profiles"][0]["reliability"] == "reliable"


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_record_simulated_run(tmp_path, storage):
    """The bag holds what the nodes would publish, with the nodes' stamping rules."""
    out = record_simulation(str(tmp_path / "run"), PBVS, storage, steps=30, rate=10.0)
    assert out["frames"] == 30 and out["published"] == 30
    assert out["final_t_err_m"] < 0.30   # it moved towards the goal (start: 35 cm)
    with bags.Bag(tmp_path / "run") as b:
        counts = {t: i.count for t, i in b.topics.items()}
        assert counts == {"/goal_image": 1, "/image": 30, "/camera_pose": 30, "/cmd_twist": 30,
                          "/controller/state": 1, "/controller/error_norm": 30}   # state: on change
        assert ServoSettings.from_json(b.custom_data[RUN_KEY]) == PBVS
        seen = {t: [] for t in counts}
        for m in b.messages():
            msg = b.decode(m)
            seen[m.topic].append((m.t_ns, bags.stamp_ns(msg) if hasattr(msg, "header") else None, msg))
    img_log = [t for t, _, _ in seen["/image"]]
    assert [s for _, s, _ in seen["/image"]] == img_log               # images stamped at capture
    assert np.allclose(np.diff(img_log), 1e8)                          # 10 Hz
    assert [s for _, s, _ in seen["/camera_pose"]] == img_log
    tw_log = [t for t, _, _ in seen["/cmd_twist"]]
    assert [s for _, s, _ in seen["/cmd_twist"]] == tw_log             # twists stamped at publish
    assert all(a < t < b for a, t, b in zip(img_log, tw_log, img_log[1:]))  # each between its image and the next
    assert seen["/controller/state"][0][2].data == "servoing"


def test_interrupted_with_block_leaves_a_valid_marked_bag(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with bags.BagWriter(tmp_path / "b") as w:
            for i in range(5):
                w.write("/image", bags.image_msg(np.full((8, 8), i, np.uint8), i + 1), i + 1)
            raise KeyboardInterrupt
    with bags.Bag(tmp_path / "b") as b:
        assert b.topics["/image"].count == 5
        assert "KeyboardInterrupt" in b.custom_data["latent_vs.interrupted"]


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_killed_writer_leaves_only_a_partial_directory(tmp_path, storage, capsys):
    script = textwrap.dedent(f"""
        import os, sys, numpy as np
        sys.path.insert(0, {ROOT!r})
        from latent_vs import bags
        w = bags.BagWriter({str(tmp_path / 'run')!r}, {storage!r})
        for i in range(200):
            w.write("/image", bags.image_msg(np.full((64, 64), i % 256, np.uint8), i + 1), i + 1)
        print("written", flush=True)
        os.kill(os.getpid(), {int(signal.SIGKILL)})
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "written" in p.stdout and p.returncode == -signal.SIGKILL
    assert not (tmp_path / "run").exists() and (tmp_path / "run.partial").is_dir()
    rc, out, err = run_cli(["replay", str(tmp_path / "run.partial"), "--quiet"], capsys)
    assert rc == 2 and "incomplete" in err and "interrupted" in err and len(err.strip().splitlines()) == 1
    # the next recording under the same name refuses to mix with the leftovers
    with pytest.raises(bags.BagError, match="interrupted recording is in the way"):
        bags.BagWriter(tmp_path / "run", storage)


def test_writer_refuses_to_overwrite(tmp_path):
    (tmp_path / "b").mkdir()
    with pytest.raises(bags.BagError, match="already exists"):
        bags.BagWriter(tmp_path / "b")
    with pytest.raises(bags.BagError, match="unknown bag storage"):
        bags.BagWriter(tmp_path / "c", "rosbag1")


# ---------------------------------------------------------------- bad input, through the CLI

@pytest.fixture(scope="module")
def sim_bags(tmp_path_factory):
    d = tmp_path_factory.mktemp("simbags")
    for storage in bags.STORAGES:
        record_simulation(str(d / storage), PBVS, storage, steps=20, rate=10.0)
    return d


def _copy(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


def _storage_file(bag_dir):
    return next(p for p in bag_dir.iterdir() if p.suffix in (".mcap", ".db3"))


def _one_error_line(rc, err):
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("latent-vs replay: error:"), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_truncated_bag(sim_bags, tmp_path, storage, capsys):
    bag = _copy(sim_bags / storage, tmp_path / "t")
    f = _storage_file(bag)
    os.truncate(f, f.stat().st_size // 2)
    rc, out, err = run_cli(["replay", str(bag), "--quiet", "--out", str(tmp_path / "o")], capsys)
    line = _one_error_line(rc, err)
    assert "corrupt or truncated" in line and str(bag) in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_corrupt_bag(sim_bags, tmp_path, storage, capsys):
    bag = _copy(sim_bags / storage, tmp_path / "c")
    f = _storage_file(bag)
    data = bytearray(f.read_bytes())
    rng = np.random.default_rng(0)
    for i in range(2000, len(data), 4096):
        data[i:i + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    f.write_bytes(bytes(data))
    rc, out, err = run_cli(["replay", str(bag), "--quiet", "--out", str(tmp_path / "o")], capsys)
    line = _one_error_line(rc, err)
    assert "corrupt" in line and str(bag) in line
    assert not (tmp_path / "o" / "summary.json").exists()


def test_missing_bag(tmp_path, capsys):
    rc, out, err = run_cli(["replay", str(tmp_path / "nope"), "--quiet"], capsys)
    assert "bag not found" in _one_error_line(rc, err)


def test_not_a_bag(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "f.txt").write_text("hello")
    for p in (tmp_path / "d", tmp_path / "f.txt"):
        rc, out, err = run_cli(["replay", str(p), "--quiet"], capsys)
        assert "not a ROS 2 bag" in _one_error_line(rc, err)


def test_bad_metadata(sim_bags, tmp_path, capsys):
    bag = _copy(sim_bags / "mcap", tmp_path / "m")
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: [\n")
    rc, out, err = run_cli(["replay", str(bag), "--quiet"], capsys)
    assert "corrupt or truncated" in _one_error_line(rc, err)


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_empty_bag(tmp_path, storage, capsys):
    with bags.BagWriter(tmp_path / "e", storage):
        pass
    rc, out, err = run_cli(["replay", str(tmp_path / "e"), "--quiet"], capsys)
    assert "is empty" in _one_error_line(rc, err)


def test_no_image_topic(tmp_path, capsys):
    with bags.BagWriter(tmp_path / "n") as w:
        w.write("/cmd_twist", bags.twist_msg(np.zeros(6), 1), 1)
        w.write("/controller/state", bags.string_msg("idle"), 2)
    rc, out, err = run_cli(["replay", str(tmp_path / "n"), "--quiet"], capsys)
    line = _one_error_line(rc, err)
    assert "no image topic" in line and "/cmd_twist" in line   # says what the bag does hold


def test_wrong_image_topic_option(sim_bags, capsys):
    rc, out, err = run_cli(["replay", str(sim_bags / "mcap"), "--quiet", "--image-topic", "/camera/raw"], capsys)
    line = _one_error_line(rc, err)
    assert "/camera/raw is not in bag" in line and "/image" in line
    rc, out, err = run_cli(["replay", str(sim_bags / "mcap"), "--quiet", "--image-topic", "/cmd_twist"], capsys)
    assert "is a geometry_msgs/msg/TwistStamped" in _one_error_line(rc, err)


def test_unknown_encoding_in_bag(tmp_path, capsys):
    with bags.BagWriter(tmp_path / "y") as w:
        m = bags.image_msg(np.zeros((8, 8), np.uint8), 5)
        m.encoding = "yuv422"
        w.write("/image", m, 5)
    rc, out, err = run_cli(["replay", str(tmp_path / "y"), "--quiet"], capsys)
    line = _one_error_line(rc, err)
    assert "unsupported image encoding 'yuv422'" in line and "/image" in line


def test_unknown_encoding_option(sim_bags, capsys):
    rc, out, err = run_cli(["replay", str(sim_bags / "mcap"), "--quiet", "--encoding", "bayer_rggb8"], capsys)
    assert "unknown --encoding 'bayer_rggb8'" in _one_error_line(rc, err)


def test_encoding_override_that_does_not_fit_the_data(sim_bags, tmp_path, capsys):
    rc, out, err = run_cli(["replay", str(sim_bags / "mcap"), "--quiet", "--encoding", "rgb8",
                            "--out", str(tmp_path / "o")], capsys)
    line = _one_error_line(rc, err)
    assert "image" in line and "bytes" in line


def test_record_sim_command_and_its_bad_input(tmp_path, capsys):
    rc = cli(["record", str(tmp_path / "r"), "--sim", "--method", "pbvs", "--steps", "5", "--storage", "sqlite3"])
    out = capsys.readouterr().out
    assert rc == 0 and "wrote" in out and "5 frames" in out
    with bags.Bag(tmp_path / "r") as b:
        assert b.topics["/image"].count == 5 and (tmp_path / "r" / "r.db3").is_file()
    for argv, message in (
            ([str(tmp_path / "r"), "--sim", "--method", "pbvs"], "already exists"),
            ([str(tmp_path / "s"), "--sim", "--method", "pbvs", "--encoding", "yuv422"], "unknown --encoding 'yuv422'"),
            ([str(tmp_path / "s"), "--sim", "--model", str(tmp_path / "nomodel")], "nomodel"),
            ([str(tmp_path / "s"), "--sim", "--method", "pbvs", "--steps", "0"], "--steps must be >= 1"),
            ([str(tmp_path / "nodir" / "s"), "--sim", "--method", "pbvs"], "directory does not exist")):
        rc = cli(["record"] + argv)
        err = capsys.readouterr().err
        assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s").exists() and not (tmp_path / "s.partial").exists()


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_bare_storage_file_is_a_bag_too(sim_bags, tmp_path, storage, capsys):
    """A lone .mcap / .db3 (no metadata.yaml) still reads; one inside a bag directory reads
    as the whole bag (with its metadata)."""
    import shutil
    f = _storage_file(sim_bags / storage)
    lone = shutil.copy(f, tmp_path / f.name)
    with bags.Bag(lone) as b:
        assert b.topics["/image"].count == 20 and RUN_KEY not in b.custom_data
    with bags.Bag(f) as b:
        assert b.path == sim_bags / storage and RUN_KEY in b.custom_data
    rc, out, err = run_cli(["replay", str(lone), "--quiet", "--method", "pbvs", "--out", str(tmp_path / "o")], capsys)
    assert rc == 0, err


def test_image_topic_without_messages(tmp_path, capsys):
    from rosbags.rosbag2 import Writer
    with Writer(tmp_path / "z", version=9) as w:   # a bag that declares /image but never got one
        w.add_connection("/image", bags.IMAGE, typestore=bags.TYPESTORE)
        c = w.add_connection("/cmd_twist", bags.TWIST, typestore=bags.TYPESTORE)
        w.write(c, 5, bags.TYPESTORE.serialize_cdr(bags.twist_msg(np.zeros(6), 5), bags.TWIST))
    rc, out, err = run_cli(["replay", str(tmp_path / "z"), "--quiet"], capsys)
    assert "image topic /image" in _one_error_line(rc, err) and "has no messages" in err
