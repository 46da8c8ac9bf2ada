"""Benchmark metrics (on hand-made trajectories), the simulation loop and the `latent-vs bench` command."""
import json
import os

import numpy as np
import pytest

from latent_vs import cli
from latent_vs.bench import metrics as M
from latent_vs.bench import report
from latent_vs.bench.run import parse_methods
from latent_vs.bench.sim import simulate, visible_fraction
from latent_vs.camera import default_camera
from latent_vs.control.pbvs import PBVS
from latent_vs.errors import UserError
from latent_vs.scene import SceneConfig, goal_pose

GOAL = goal_pose()


def line(a, b, n):
    """n poses (t, θu = 0) from a to b, evenly spaced."""
    p = np.linspace(a, b, n)
    return np.concatenate([p, np.zeros((n, 3))], 1)


# ------------------------------------------------------------------ metrics on hand-made trajectories

def test_straight_line_vs_detour_length_ratio_and_ape():
    start, goal = np.array([0.3, 0.0, -0.6]), GOAL[:3, 3]
    ref = line(start, goal, 11)                                   # 0.3 m straight
    corner = np.array([0.3, 0.4, -0.6])
    detour = np.concatenate([line(start, corner, 6), line(corner, goal, 6)[1:]])  # 0.4 + 0.5 m
    assert M.path_length(ref) == pytest.approx(0.3)
    assert M.path_length(detour) / M.path_length(ref) == pytest.approx(3.0)
    assert M.ape(ref, ref) == (0.0, 0.0)
    t, r = M.ape(detour, ref)
    assert r == pytest.approx(0.0, abs=1e-12)
    # index-aligned distances, by hand
    expected = np.linalg.norm(detour[:, :3] - ref[:, :3], axis=1).mean()
    assert t == pytest.approx(expected) and t > 0.1


def test_ape_of_a_constant_offset_and_a_constant_rotation():
    ref = line([0.2, 0.1, -0.5], GOAL[:3, 3], 20)
    shifted = ref.copy()
    shifted[:, :3] += [0.0, 0.03, 0.04]
    assert M.ape(shifted, ref)[0] == pytest.approx(0.05)
    turned = ref.copy()
    turned[:, 5] = np.radians(10)
    assert np.degrees(M.ape(turned, ref)[1]) == pytest.approx(10.0)


def test_shorter_trajectories_are_padded_with_their_last_pose():
    ref = line([0.3, 0, -0.6], GOAL[:3, 3], 11)
    fast = line([0.3, 0, -0.6], GOAL[:3, 3], 6)                  # arrives in 5 steps, then stays
    a, b = M.pad_trajectory(fast, 6, 21), M.pad_trajectory(ref, 11, 21)
    assert a.shape == (21, 6) and np.allclose(a[6:], fast[-1]) and np.allclose(b[11:], ref[-1])
    t, _ = M.ape(a, b)
    assert t == pytest.approx(np.linalg.norm(a[:, :3] - b[:, :3], axis=1).sum() / 21)
    assert M.path_length(a) == pytest.approx(M.path_length(b))


def test_convergence_rule():
    still = np.zeros((10, 6))
    moving = np.full((10, 6), 1e-3)
    t0, r0 = 0.5, np.radians(70)
    # errors cut by more than 90 %
    assert M.converged(t0, r0, 0.04, np.radians(6), still, "max_iters")
    # only one of the two cut by 90 %, and not below 1 cm / 1°
    assert not M.converged(t0, r0, 0.04, np.radians(8), still, "max_iters")
    # small initial error: the absolute rule (1 cm and 1°)
    assert M.converged(0.05, np.radians(5), 0.009, np.radians(0.9), still, "max_iters")
    assert not M.converged(0.05, np.radians(5), 0.011, np.radians(0.9), still, "max_iters")
    # still moving: not converged
    assert not M.converged(t0, r0, 0.0, 0.0, moving, "max_iters")
    # lost: never converged
    assert not M.converged(t0, r0, 0.0, 0.0, still, "out_of_view")


def test_velocity_thresholds():
    v = np.zeros((12, 6))
    v[:, 0] = 0.99e-4                                    # 0.099 mm per iteration
    v[:, 3] = np.radians(0.0099)
    assert M.velocity_converged(v)
    assert not M.is_still(v)
    v[-1, 1] = 1e-4                                      # one twist over 0.1 mm
    assert not M.velocity_converged(v)
    assert M.velocity_converged(np.zeros((20, 6))) and M.is_still(np.zeros((20, 6)))
    assert not M.velocity_converged(np.zeros((5, 6)))   # fewer than 10 twists


def test_summary_averages_over_converged_tasks_only():
    tasks = [dict(converged=True, t_end_m=0.001, r_end_rad=0.0, ape_t_m=0.01, ape_r_rad=0.0, length_ratio=1.0,
                  stop="still", iterations=100),
             dict(converged=True, t_end_m=0.003, r_end_rad=0.0, ape_t_m=0.03, ape_r_rad=0.0, length_ratio=2.0,
                  stop="still", iterations=200),
             dict(converged=False, t_end_m=0.5, r_end_rad=1.0, ape_t_m=0.5, ape_r_rad=1.0, length_ratio=9.0,
                  stop="diverged", iterations=30),
             dict(converged=False, t_end_m=0.4, r_end_rad=1.0, ape_t_m=0.5, ape_r_rad=1.0, length_ratio=9.0,
                  stop="max_iters", iterations=1500)]
    row = M.summarize(tasks)
    assert row["converged_pct"] == 50.0
    assert row["end_mm"][0] == pytest.approx(2.0) and row["ape_cm"][0] == pytest.approx(2.0)
    assert row["length_ratio"] == pytest.approx((1.5, 0.5))
    assert row["stops"]["diverged"] == 1 and row["stops"]["still"] == 2


# ------------------------------------------------------------------ the simulation loop

class Drift:
    """A law that always moves the camera sideways (to test the 'lost' rules)."""
    name, camera, needs_pose = "drift", default_camera(64), False

    def set_goal(self, goal_images, goal_pose):
        pass

    def step(self, images, poses, active):
        v = np.zeros((len(active), 6))
        v[:, 0] = 0.02
        return v


class Diverge(Drift):
    camera = None

    def step(self, images, poses, active):
        v = np.zeros((len(active), 6))
        v[:, 2] = -0.2                                   # backwards along the optical axis
        return v


class Broken(Drift):
    def step(self, images, poses, active):
        return np.full((len(active), 6), np.nan)


def test_lost_tasks_stop_early_and_do_not_converge():
    start = GOAL[None].copy()
    r = simulate(Drift(), start, iters=500)
    assert r.reason[0] == "out_of_view" and r.n_poses[0] < 200
    r = simulate(Diverge(), start, iters=500)
    assert r.reason[0] == "diverged" and r.n_poses[0] < 40
    r = simulate(Broken(), start, iters=50)
    assert r.reason[0] == "non_finite" and r.n_poses[0] == 2
    m = M.task_metrics(GOAL, r.poses[0], r.n_poses[0], r.last_velocities[0], r.reason[0], None, None, 51)
    assert not m["converged"]


class Recorder:
    """A law that stands still and keeps every image (goal and current) it is given."""
    name, camera, needs_pose = "recorder", default_camera(64), False

    def set_goal(self, goal_images, goal_pose):
        self.goal_images, self.images = goal_images, []

    def step(self, images, poses, active):
        self.images.append(images)
        return np.zeros((len(active), 6))


def test_simulate_renders_with_the_renderer_it_is_given():
    class Flat:   # a second renderer: every pixel 77
        def __init__(self, scene, camera):
            self.shape = (camera.height, camera.width)

        def render(self, T):
            return np.full(self.shape, 77, np.uint8)
    law = Recorder()
    simulate(law, GOAL[None], iters=3)
    assert law.images[0].std() > 10 and law.goal_images.std() > 10      # the poster by default
    simulate(law, GOAL[None], iters=3, renderer=Flat)
    assert np.all(law.images[0] == 77) and np.all(law.goal_images == 77)


def test_visible_fraction():
    cam = default_camera(64)
    assert visible_fraction(SceneConfig(), cam, GOAL[None])[0] == 1.0
    away = GOAL.copy()
    away[0, 3] = 3.0
    assert visible_fraction(SceneConfig(), cam, away[None])[0] == 0.0


def test_pbvs_runs_stop_when_still_and_have_length_ratio_one():
    from latent_vs.tasks import sample_tasks
    tasks = sample_tasks(4, seed=5)
    r = simulate(PBVS(), tasks, iters=1500)
    figs = [M.task_metrics(GOAL, r.poses[i], r.n_poses[i], r.last_velocities[i], r.reason[i],
                           r.poses[i], r.n_poses[i], 1501) for i in range(4)]
    row = M.summarize(figs)
    assert row["converged_pct"] == 100.0 and row["length_ratio"][0] == pytest.approx(1.0)
    assert all(f["stop"] == "still" and f["iterations"] < 200 for f in figs)
    assert row["end_mm"][0] < 0.01


# ------------------------------------------------------------------ the command

def test_method_list_parsing():
    assert parse_methods("pbvs,dvs") == [("pbvs", {}), ("dvs", {})]
    assert parse_methods("dvs[px_scale=1.9, interaction=desired],pbvs") == [
        ("dvs", {"px_scale": 1.9, "interaction": "desired"}), ("pbvs", {})]
    assert [m for m, _ in parse_methods("all")][:2] == ["pbvs", "dvs"]
    with pytest.raises(UserError, match="unknown method 'foo'"):
        parse_methods("pbvs,foo")
    with pytest.raises(UserError, match="KEY=VALUE"):
        parse_methods("dvs[fast]")


def test_bench_end_to_end_writes_results(tmp_path, capsys):
    out = tmp_path / "res"
    rc = cli.main(["bench", "--methods", "pbvs,dvs[size=64]", "--tasks", "3", "--iters", "120",
                   "--perturbed", "both", "--out", str(out), "--quiet"])
    assert rc == 0
    for name in ("tasks.json", "summary.json", "table.md", "trajectories.png", "errors.png"):
        assert (out / name).stat().st_size > 0
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    summary = json.loads((out / "summary.json").read_text())
    labels = [(r["label"], r["perturbed"]) for r in summary["rows"]]
    assert labels == [("pbvs", False), ("dvs[size=64]", False), ("dvs[size=64]", True)]
    assert summary["rows"][0]["converged_pct"] == 100.0 and summary["wall_time_s"] > 0
    per_task = json.loads((out / "tasks.json").read_text())["tasks"]
    assert set(per_task) == {"pbvs/clean", "dvs[size=64]/clean", "dvs[size=64]/perturbed"}
    t = per_task["dvs[size=64]/clean"][0]
    for key in ("t0_m", "r0_rad", "t_end_m", "r_end_rad", "converged", "ape_t_m", "ape_r_rad",
                "length_ratio", "iterations", "stop"):
        assert key in t
    assert t["iterations"] <= 120
    table = (out / "table.md").read_text()
    assert "| dvs[size=64] | clean | ours |" in table and "| pbvs | clean | ours | 100.0 |" in table
    printed = capsys.readouterr().out
    assert "wall time" in printed


@pytest.mark.slow
def test_bench_with_two_workers_gives_the_same_results(tmp_path):
    args = ["bench", "--methods", "dvs[size=64]", "--tasks", "4", "--iters", "30", "--quiet", "--chunk", "2"]
    assert cli.main(args + ["--out", str(tmp_path / "a")]) == 0
    assert cli.main(args + ["--out", str(tmp_path / "b"), "--workers", "2"]) == 0
    a = json.loads((tmp_path / "a" / "tasks.json").read_text())["tasks"]
    b = json.loads((tmp_path / "b" / "tasks.json").read_text())["tasks"]
    assert a == b


@pytest.mark.parametrize("args, message", [
    (["--methods", "pbvs,nope"], "unknown method 'nope'"),
    (["--tasks", "0"], "--tasks must be positive"),
    (["--iters", "-1"], "--iters must be positive"),
    (["--workers", "0"], "--workers"),
    (["--model", "/nonexistent/model"], "no such model directory"),
    (["--methods", "dvs[colour=red]"], "cannot make method"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    rc = cli.main(["bench", "--out", str(tmp_path / "o"), "--tasks", "2", "--iters", "2", "--quiet"] + args)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1


def test_unwritable_out_is_a_user_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = cli.main(["bench", "--tasks", "1", "--iters", "1", "--out", str(blocker / "sub"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "cannot write to --out" in err and len(err.splitlines()) == 1


def test_report_puts_the_papers_row_beside_ours(tmp_path):
    row = dict(M.summarize([dict(converged=True, t_end_m=0.0, r_end_rad=0.0, ape_t_m=0.1, ape_r_rad=0.2,
                                 length_ratio=2.0, stop="still", iterations=10)]),
               label="dvs", method="dvs", perturbed=False)
    md = report.markdown([row])
    assert "| dvs | clean | ours | 100.0 |" in md and "| dvs | clean | paper | 9.8 |" in md
    p = tmp_path / "x.json"
    report.write_json(str(p), {"a": float("nan"), "b": np.float32(1.5)})
    assert json.loads(p.read_text()) == {"a": None, "b": 1.5}
