"""`latent-vs demo`: MLVS with the shipped model by default, the PBVS baseline only on request
(announced as such), no silent fallback without a model, exit status and last line in
agreement, plot and summary, and --record."""
import json
import os

import numpy as np
import pytest

pytest.importorskip("rclpy")
from latent_vs import cli, paths  # noqa: E402
from latent_vs.ros.demo import verdict  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]
BANNER = "PBVS baseline on the simulator's TRUE camera pose"


def test_demo_runs_mlvs_with_the_shipped_model_by_default(tmp_path, capsys):
    if not os.path.isfile(os.path.join(paths.model_dir("default"), "meta.json")):
        pytest.skip("no models/default")
    rc = cli.main(["demo", "--out", str(tmp_path), "--max-time", "5", "--no-plot"])
    out = capsys.readouterr().out
    assert "method mlvs" in out and BANNER not in out and "estimate" in out  # progress lines
    summary = json.load(open(tmp_path / "demo.json"))
    assert summary["method"] == "mlvs" and summary["twists"] > 0 and summary["frames"] > 0
    last = out.strip().splitlines()[-1]
    assert "true end error" in last and "controller's estimate" in last
    # the exit status and the last line agree (the shipped model need not converge in 5 s)
    assert (rc == 0) == last.startswith("mlvs converged") == summary["ok"], (rc, last)
    assert rc == 0 or "did NOT converge within 5 s" in last or "FAILED" in last


def test_pbvs_baseline_says_so_converges_exits_zero_and_writes_plot_and_summary(tmp_path, capsys):
    rc = cli.main(["demo", "--method", "pbvs", "--seed", "2", "--out", str(tmp_path), "--max-time", "60"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert BANNER in out.splitlines()[0] and "not the learned method" in out.splitlines()[0]
    assert "t=" in out and "pbvs converged: the controller reported converged" in out and "true end error" in out
    summary = json.load(open(tmp_path / "demo.json"))
    assert summary["converged"] and summary["ok"] and summary["state"] == "converged"
    assert summary["t_end_m"] < 0.005 and summary["twists"] > 20
    assert summary["estimate_t_m"] < 0.001   # PBVS's estimate is the true pose difference
    png = tmp_path / "demo.png"
    assert png.stat().st_size > 20_000 and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_demo_that_runs_out_of_time_exits_non_zero(tmp_path, capsys):
    rc = cli.main(["demo", "--method", "pbvs", "--seed", "2", "--out", str(tmp_path), "--max-time", "1",
                   "--no-plot", "--quiet"])
    assert rc == 1
    assert "pbvs did NOT converge within 1 s" in capsys.readouterr().out
    assert json.load(open(tmp_path / "demo.json"))["converged"] is False


@pytest.mark.parametrize("method", [[], ["--method", "mlvs"]])
def test_demo_without_a_model_stops_with_one_line(tmp_path, capsys, method):
    missing = str(tmp_path / "missing")
    rc = cli.main(["demo", "--model", missing, "--out", str(tmp_path)] + method)
    cap = capsys.readouterr()
    assert rc == 2 and len(cap.err.strip().splitlines()) == 1
    assert missing in cap.err and "no usable model" in cap.err and "PBVS" not in cap.out
    assert not os.path.exists(tmp_path / "demo.json")        # no fallback run


def test_verdict_believes_converged_only_when_the_true_error_agrees():
    r = {"method": "mlvs", "converged": True, "state": "converged", "time_s": 12.0,
         "settings": {"converged_translation": 0.001, "converged_rotation": 0.1},
         "t0_m": 0.3, "r0_rad": 1.0, "t_end_m": 0.002, "r_end_rad": np.deg2rad(0.2),
         "estimate_t_m": 0.0009, "estimate_r_rad": np.deg2rad(0.09)}
    ok, line = verdict(r, 60)
    assert ok and line.startswith("mlvs converged") and "2.00 mm, 0.200°" in line and "0.90 mm" in line
    ok, line = verdict({**r, "t_end_m": 0.013}, 60)                 # the estimate is off by 14x
    assert not ok and line.startswith("mlvs FAILED") and "beyond 10x its bounds (10 mm, 1°)" in line
    ok, line = verdict({**r, "converged": False, "state": "servoing"}, 60)
    assert not ok and line.startswith("mlvs did NOT converge within 60 s (controller state servoing)")


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
