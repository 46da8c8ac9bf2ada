"""Offline replay (`latent-vs replay BAG`): the recorded run's twists come back from the bag's
images through the same encoder and controller code, with no middleware."""
import csv
import json
import os

import cv2
import numpy as np
import pytest

from latent_vs import bags, paths
from latent_vs.cli import main as cli
from latent_vs.replay import ServoSettings, replay_offline
from latent_vs.ros.record import record_simulation

PBVS = ServoSettings(method="pbvs", gain=0.5)
DVS = ServoSettings(method="dvs", gain=0.5)


def run_cli(argv, capsys):
    rc = cli(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def col(rows, key):
    return np.array([float(r[key]) if r[key] not in ("", "nan") else np.nan for r in rows])


@pytest.fixture(scope="module")
def pbvs_bags(tmp_path_factory):
    d = tmp_path_factory.mktemp("replay")
    for storage in bags.STORAGES:
        record_simulation(str(d / storage), PBVS, storage, steps=25, rate=10.0)
    return d


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_replay_reproduces_the_recorded_twists(pbvs_bags, tmp_path, storage, capsys):
    out = tmp_path / "out"
    rc, stdout, err = run_cli(["replay", str(pbvs_bags / storage), "--quiet", "--out", str(out)], capsys)
    assert rc == 0, err
    assert {p.name for p in out.iterdir()} == {"replay.csv", "replay.png", "summary.json"}
    rows = read_csv(out / "replay.csv")
    assert len(rows) == 25
    rec = np.stack([col(rows, f"rec_{c}") for c in ("vx", "vy", "vz", "wx", "wy", "wz")], 1)
    cmd = np.stack([col(rows, f"cmd_{c}") for c in ("vx", "vy", "vz", "wx", "wy", "wz")], 1)
    assert np.all(np.isfinite(rec)) and np.allclose(cmd, rec, atol=1e-12)
    # ground truth in the bag: PBVS agrees with itself, and the true error shrinks
    assert np.nanmax(col(rows, "angle_deg")) < 1e-3
    t_err = col(rows, "t_err_m")
    assert t_err[-1] < t_err[0]
    s = json.loads((out / "summary.json").read_text())
    assert s["images"] == 25 and s["settings_from_bag"] and s["goal"] == "/goal_image in the bag"
    assert s["recorded_twists"]["compared"] == 25 and s["recorded_twists"]["max_abs_diff"] < 1e-12
    assert s["throughput"]["images_per_s"] > 0
    assert "images/s" in stdout and "max |replayed - recorded|" in stdout
    png = (out / "replay.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 200_000


def test_replay_default_output_next_to_the_bag_and_rerun(pbvs_bags, tmp_path, capsys):
    import shutil
    bag = shutil.copytree(pbvs_bags / "mcap", tmp_path / "run")
    rc, _, err = run_cli(["replay", str(bag), "--quiet"], capsys)
    assert rc == 0, err
    first = (tmp_path / "run_replay" / "summary.json").read_text()
    rc, _, err = run_cli(["replay", str(bag), "--quiet", "--max-images", "5"], capsys)
    assert rc == 0, err
    assert json.loads((tmp_path / "run_replay" / "summary.json").read_text())["images"] == 5 != \
        json.loads(first)["images"]
    assert len(read_csv(tmp_path / "run_replay" / "replay.csv")) == 5
    assert not [p for p in (tmp_path / "run_replay").iterdir() if ".tmp" in p.name]


def test_controller_overrides_change_the_twists(pbvs_bags, tmp_path, capsys):
    rc, _, err = run_cli(["replay", str(pbvs_bags / "mcap"), "--quiet", "--out", str(tmp_path / "o"),
                          "--gain", "0.25"], capsys)
    assert rc == 0, err
    rows = read_csv(tmp_path / "o" / "replay.csv")
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["settings"]["gain"] == 0.25 and not s["settings_from_bag"]
    # far from the speed limits the twist is proportional to the gain
    cmd = np.stack([col(rows, f"cmd_{c}") for c in ("vx", "vy", "vz", "wx", "wy", "wz")], 1)
    rec = np.stack([col(rows, f"rec_{c}") for c in ("vx", "vy", "vz", "wx", "wy", "wz")], 1)
    free = (np.linalg.norm(rec[:, :3], axis=1) < 0.09) & (np.linalg.norm(rec[:, 3:], axis=1) < 0.45)
    assert free.any() and np.allclose(cmd[free], rec[free] / 2, rtol=1e-6, atol=1e-9)
    assert s["recorded_twists"]["max_abs_diff"] > 1e-3   # and the comparison says so


def test_hand_eye_twists_in_the_command_frame(tmp_path):
    """With a hand_eye the commands are in the command frame; the agreement with PBVS is
    measured on the camera twist, and the replay still reproduces the commands."""
    s = ServoSettings(method="pbvs", gain=0.5, hand_eye=(0.05, 0.0, 0.1, 0.0, 0.3, 1.2))
    record_simulation(str(tmp_path / "he"), s, "mcap", steps=10, rate=10.0)
    res = replay_offline(str(tmp_path / "he"), progress=False)
    assert res.summary["settings_from_bag"] and res.summary["recorded_twists"]["max_abs_diff"] < 1e-12
    assert res.summary["agreement_with_pbvs"]["angle_deg_p90"] < 1e-3
    cmd = np.array([[r[f"cmd_{c}"] for c in ("vx", "vy", "vz", "wx", "wy", "wz")] for r in res.rows])
    pbvs = np.array([[r[f"pbvs_{c}"] for c in ("vx", "vy", "vz", "wx", "wy", "wz")] for r in res.rows])
    angle = np.degrees(np.arccos(np.sum(cmd[:, 3:] * pbvs[:, 3:], 1) /
                                 np.linalg.norm(cmd[:, 3:], axis=1) / np.linalg.norm(pbvs[:, 3:], axis=1)))
    assert np.all(angle > 10)   # the command frame is not the camera frame


@pytest.fixture(scope="module")
def dvs_bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("dvs") / "dvs"
    record_simulation(str(path), DVS, "mcap", steps=8, rate=10.0, size=96)
    return path


def test_goal_from_file_equals_goal_from_bag(dvs_bag, tmp_path, capsys):
    with bags.Bag(dvs_bag) as b:
        goal = bags.image_from_msg(b.decode(next(b.messages(["/goal_image"]))))
    cv2.imwrite(str(tmp_path / "goal.png"), goal)
    for args, name in (([], "a"), (["--goal", str(tmp_path / "goal.png")], "b")):
        rc, _, err = run_cli(["replay", str(dvs_bag), "--quiet", "--out", str(tmp_path / name)] + args, capsys)
        assert rc == 0, err
    a, b = read_csv(tmp_path / "a" / "replay.csv"), read_csv(tmp_path / "b" / "replay.csv")
    assert np.allclose(col(a, "cmd_wz"), col(b, "cmd_wz")) and np.allclose(col(a, "cmd_wz"), col(a, "rec_wz"))
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["goal"].startswith("file ")


def test_goal_time_picks_a_bag_image(dvs_bag, tmp_path, capsys):
    """--goal-time 0: the first image is the goal, so the controller (one input in a row is
    enough here) starts converged."""
    rc, _, err = run_cli(["replay", str(dvs_bag), "--quiet", "--out", str(tmp_path / "o"), "--goal-time", "0",
                          "--converged-steps", "1"], capsys)
    assert rc == 0, err
    rows = read_csv(tmp_path / "o" / "replay.csv")
    assert rows[0]["state"] == "converged" and float(rows[0]["error"]) == 0.0


def test_missing_goal_file(dvs_bag, tmp_path, capsys):
    rc, _, err = run_cli(["replay", str(dvs_bag), "--quiet", "--goal", str(tmp_path / "none.png")], capsys)
    assert rc == 2 and "goal image not found" in err and len(err.strip().splitlines()) == 1


def _bag_with(tmp_path, name, images):
    """A bag of camera images only (no poses, twists or settings), like a camera recording."""
    with bags.BagWriter(tmp_path / name) as w:
        for i, (topic, msg) in enumerate(images):
            w.write(topic, msg, 1_000 + i * 100_000_000)
    return tmp_path / name


def test_image_topic_found_by_type_any_name_and_encoding(tmp_path, capsys):
    from latent_vs.scene import Scene
    from latent_vs.tasks import sample_tasks
    sc = Scene()
    poses = sample_tasks(4, seed=5)
    imgs = [("/camera/color/image_raw", bags.image_msg(sc.render(T), 1_000 + i, encoding="bgr8"))
            for i, T in enumerate(poses)]
    bag = _bag_with(tmp_path, "cam", imgs)
    rc, out, err = run_cli(["replay", str(bag), "--quiet", "--method", "dvs", "--out", str(tmp_path / "o"),
                            "--converged-steps", "1"], capsys)
    assert rc == 0, err
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["image_topic"] == "/camera/color/image_raw" and s["images"] == 4
    assert s["goal"] == "last image on /camera/color/image_raw" and s["final_state"] == "converged"
    assert "recorded_twists" not in s and "agreement_with_pbvs" not in s   # nothing to compare against


@pytest.mark.parametrize("override", [[], ["--gain", "0.4"]])
def test_an_older_bag_with_converged_error_replays_with_one_warning(tmp_path, capsys, override):
    """Bags recorded before the pose-error stop store converged_error (a latent distance)."""
    from latent_vs.replay import RUN_KEY
    from latent_vs.scene import Scene
    from latent_vs.tasks import sample_tasks
    sc = Scene()
    old = {"method": "dvs", "gain": 0.5, "max_linear_speed": 0.1, "max_angular_speed": 0.5,
           "converged_error": 0.01, "input_timeout": 0.5, "hand_eye": [0.0] * 6, "k_neighbors": 50, "model_dir": None}
    with bags.BagWriter(tmp_path / "old") as w:
        w.set_custom_data(RUN_KEY, json.dumps(old))
        for i, T in enumerate(sample_tasks(3, seed=5)):
            w.write("/image", bags.image_msg(sc.render(T), 1_000 + i), 1_000 + i * 100_000_000)
    rc, _, err = run_cli(["replay", str(tmp_path / "old"), "--quiet", "--out", str(tmp_path / "o")] + override, capsys)
    assert rc == 0, err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and "converged_error" in lines[0] and "warning" in lines[0], err
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["images"] == 3 and s["settings"]["converged_translation"] == 0.0002


def test_image_topic_option_and_encoding_override(tmp_path, capsys):
    img = np.tile(np.arange(64, dtype=np.uint8), (48, 1))
    good = bags.image_msg(img, 5)
    mislabelled = bags.image_msg(img, 5)
    mislabelled.encoding = "yuv422"          # a driver that labels mono8 data wrongly
    bag = _bag_with(tmp_path, "two", [("/left", good), ("/right", mislabelled)] * 3)
    args = ["replay", str(bag), "--quiet", "--method", "dvs"]
    rc, _, err = run_cli(args + ["--image-topic", "/right", "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and "unsupported image encoding 'yuv422'" in err and "/right" in err
    assert not (tmp_path / "r").exists()
    rc, _, err = run_cli(args + ["--image-topic", "/right", "--encoding", "mono8", "--out", str(tmp_path / "r")],
                         capsys)
    assert rc == 0, err
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["image_topic"] == "/right"


def test_pbvs_on_a_bag_without_poses(tmp_path, capsys):
    bag = _bag_with(tmp_path, "np", [("/image", bags.image_msg(np.zeros((8, 8), np.uint8), 1))])
    rc, _, err = run_cli(["replay", str(bag), "--quiet", "--method", "pbvs"], capsys)
    assert rc == 2 and "needs camera poses" in err


# ---------------------------------------------------------------- MLVS: the learned encoder + controller

@pytest.fixture(scope="module")
def tiny_law():
    """models/tiny's MLVS law, loaded once (the pose bank takes seconds to load)."""
    from latent_vs.servo import make_law
    d = paths.model_dir("tiny")
    if not os.path.isfile(os.path.join(d, "meta.json")):
        pytest.skip("models/tiny is not in this checkout")
    return d, make_law("mlvs", d)


@pytest.mark.slow
def test_mlvs_replay_reproduces_latents_and_twists(tmp_path, tiny_law):
    model, law = tiny_law
    s = ServoSettings(method="mlvs", model_dir=model)
    record_simulation(str(tmp_path / "m"), s, "sqlite3", steps=12, rate=10.0, law=law)
    res = replay_offline(str(tmp_path / "m"), progress=False, batch_size=5, law=law)
    rows = res.rows
    assert len(rows) == 12 and res.summary["settings_from_bag"]
    # the same ψ on the same pixels (batched here, one by one when recorded): same z, same twist
    assert res.summary["recorded_latents"]["compared"] == 12
    assert res.summary["recorded_latents"]["max_norm_diff"] < 1e-4
    assert res.summary["recorded_twists"]["compared"] == sum(r["published"] for r in rows) > 0
    assert res.summary["recorded_twists"]["max_abs_diff"] < 1e-5
    assert res.summary["error_units"] == "latent distance"
    assert np.isfinite(res.summary["agreement_with_pbvs"]["angle_deg_median"])
