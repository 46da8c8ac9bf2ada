"""`latent-vs demo`: the closed loop over DDS in one process, its exit status, plot and summary,
the fallback without a model, and --record."""
import json
import os

import pytest

pytest.importorskip("rclpy")
from latent_vs import cli, paths  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_demo_converges_exits_zero_and_writes_plot_and_summary(tmp_path, capsys):
    rc = cli.main(["demo", "--method", "pbvs", "--seed", "2", "--out", str(tmp_path), "--max-time", "60"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "pbvs converged" in out and "final error" in out and "t=" in out  # progress lines
    summary = json.load(open(tmp_path / "demo.json"))
    assert summary["converged"] and summary["state"] == "converged"
    assert summary["t_end_m"] < 0.01 and summary["twists"] > 20
    png = tmp_path / "demo.png"
    assert png.stat().st_size > 20_000 and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_demo_that_runs_out_of_time_exits_non_zero(tmp_path, capsys):
    rc = cli.main(["demo", "--method", "pbvs", "--seed", "2", "--out", str(tmp_path), "--max-time", "1",
                   "--no-plot", "--quiet"])
    assert rc == 1
    assert "did NOT converge" in capsys.readouterr().out
    assert json.load(open(tmp_path / "demo.json"))["converged"] is False


def test_demo_without_a_model_says_so(tmp_path, capsys):
    rc = cli.main(["demo", "--model", str(tmp_path / "missing"), "--out", str(tmp_path)])
    assert rc == 2
    assert str(tmp_path / "missing") in capsys.readouterr().err
    if not os.path.isfile(os.path.join(paths.model_dir("default"), "meta.json")):
        rc = cli.main(["demo", "--out", str(tmp_path), "--max-time", "0.5", "--no-plot", "--quiet"])
        err = capsys.readouterr().err
        assert "no default model yet" in err and "running PBVS" in err
        assert json.load(open(tmp_path / "demo.json"))["method"] == "pbvs"


def test_demo_falls_back_to_pbvs_when_the_default_model_does_not_servo(tmp_path):
    from latent_vs.ros.demo import _not_servo_grade
    meta = {"benchmark": {"mlvs-k50/clean": {"converged_pct": 12.5, "tasks": 500}}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    why = _not_servo_grade(str(tmp_path))
    assert why and "12.5%" in why and "500" in why
    meta["benchmark"]["mlvs-k50/clean"]["converged_pct"] = 54.6          # most, not reliably
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    assert "54.6%" in _not_servo_grade(str(tmp_path))
    meta["benchmark"]["mlvs-k50/clean"]["converged_pct"] = 99.0
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    assert _not_servo_grade(str(tmp_path)) is None
    (tmp_path / "meta.json").write_text(json.dumps({"benchmark": {}}))   # no figures: try the model
    assert _not_servo_grade(str(tmp_path)) is None


def test_demo_records_a_bag(tmp_path, capsys):
    pytest.importorskip("latent_vs.ros.record")
    from rosbags.highlevel import AnyReader
    bag = tmp_path / "run"
    rc = cli.main(["demo", "--method", "pbvs", "--seed", "1", "--out", str(tmp_path), "--record", str(bag),
                   "--no-plot", "--quiet"])
    assert rc == 0
    with AnyReader([bag]) as reader:
        counts = {c.topic.rsplit("/", 1)[-1]: c.msgcount for c in reader.connections}
    assert counts.get("cmd_twist", 0) > 20 and counts.get("image", 0) > 20 and counts.get("camera_pose", 0) > 20
