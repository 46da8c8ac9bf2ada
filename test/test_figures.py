"""The paper's figures (bench/figures.py): geometry of the Fig. 3a starts, the PCA, and each
figure written as a small PNG from real closed-loop runs with a tiny (untrained) MLVS model."""
import os

import numpy as np
import pytest
import torch

from latent_vs.camera import default_camera
from latent_vs.errors import UserError
from latent_vs.geometry import pose_difference
from latent_vs.scene import SceneConfig, goal_pose

from latent_vs.bench import figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_xy_start_poses_are_20cm_displacements_in_the_plane():
    T = figures.xy_start_poses(0.2, 8)
    d = pose_difference(goal_pose(), T)
    assert np.allclose(np.linalg.norm(d[:, :2], axis=1), 0.2)
    assert np.allclose(d[:, 2:], 0.0)
    ang = np.degrees(np.arctan2(d[:, 1], d[:, 0])) % 360
    assert np.allclose(ang, np.arange(8) * 45.0)


def test_pca_2d_hand_case():
    # points on a plane spanned by e1 (spread 3) and e2 (spread 1) in R^5: 100 % in 2 PCs, e1 first
    X = np.zeros((4, 5))
    X[:, 0] = [3, -3, 0, 0]
    X[:, 1] = [0, 0, 1, -1]
    axes, ratio, frac = figures.pca_2d(X)
    assert frac == pytest.approx(1.0)
    assert abs(axes[0, 0]) == pytest.approx(1.0, abs=1e-6) and abs(axes[1, 1]) == pytest.approx(1.0, abs=1e-6)
    assert ratio == pytest.approx([0.9, 0.1])


def test_paper_fig4_start():
    d = pose_difference(goal_pose(), figures.start_from_paper_fig4())
    assert np.allclose(100 * d[:3], figures.PAPER_FIG4_START[:3])
    assert np.allclose(np.degrees(d[3:]), figures.PAPER_FIG4_START[3:])


@pytest.fixture(scope="module")
def tiny_mlvs(tmp_path_factory):
    """An untrained MLVS model (ψ ResNet-10 w4 at 32 px, φ the paper's MLP) and a 3^6-pose bank."""
    from latent_vs.control.mlvs import MLVS
    from latent_vs.learning.export import export_model, load_model
    from latent_vs.learning.nets import IMAGE_MEAN, IMAGE_STD, ImageEncoder, PoseNet
    from latent_vs.posebank import BankConfig
    torch.manual_seed(0)
    out = str(tmp_path_factory.mktemp("models") / "mlvs_tiny")
    cam, sc = default_camera(32), SceneConfig()
    meta = {"name": "tiny", "kind": "mlvs", "latent_dim": 32,
            "image": {"size": 32, "channels": 1, "mean": IMAGE_MEAN, "std": IMAGE_STD},
            "camera": cam.to_dict(), "scene": sc.to_dict(), "goal_pose": goal_pose(sc), "w_t": 0.7, "w_r": 1.8}
    export_model(out, ImageEncoder(depth=10, width=4, in_size=32), PoseNet(), meta)
    return MLVS(load_model(out), k=5, bank_config=BankConfig(grid_steps=3, near_goal=100, index="flat"),
                cache_dir=str(tmp_path_factory.mktemp("bank")))


def _check_png(path):
    assert os.path.isfile(path)
    assert os.path.getsize(path) < 300_000
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC


def test_fig3a_latent_pca(tmp_path, tiny_mlvs):
    info = figures.latent_pca_figure(str(tmp_path / "fig3a.png"), tiny_mlvs, n=4, iters=5)
    _check_png(tmp_path / "fig3a.png")
    assert 0.0 < info["explained_variance"] <= 1.0 and len(info["end_error_mm"]) == 4


def test_fig4_panel(tmp_path, tiny_mlvs):
    info = figures.mlvs_run_panel(str(tmp_path / "fig4.png"), tiny_mlvs, figures.start_from_paper_fig4(), iters=5)
    _check_png(tmp_path / "fig4.png")
    assert info["iters"] <= 5


def test_fig3b_trajectories(tmp_path, tiny_mlvs):
    from latent_vs.control.dvs import DVS
    from latent_vs.control.pbvs import PBVS
    from latent_vs.tasks import sample_tasks
    laws = {"pbvs": PBVS(), "dvs": DVS(size=64), "mlvs-k5": tiny_mlvs}
    ends = figures.trajectories_figure(str(tmp_path / "fig3b.png"), laws, sample_tasks(1, 0)[0], iters=30)
    _check_png(tmp_path / "fig3b.png")
    assert set(ends) == set(laws)
    # PBVS on the true pose closes the error geometrically: 0.9^30 of it remains
    t0 = np.linalg.norm(pose_difference(goal_pose(), sample_tasks(1, 0)[0])[:3])
    assert ends["pbvs"]["t_end_mm"] == pytest.approx(1000 * t0 * 0.9**30, rel=0.05)


def test_cli_rejects_bad_input(tmp_path):
    with pytest.raises(UserError, match="--which"):
        figures.main(["--which", "5", "--out", str(tmp_path)])
    with pytest.raises(UserError, match="--fig4-start"):
        figures.main(["--which", "4", "--fig4-start", "1,2,3", "--out", str(tmp_path)])


def test_task_most_converged(tmp_path):
    import json
    runs = {"pbvs/clean": [{"task": i, "converged": True} for i in range(3)],
            "dvs/clean": [{"task": 0, "converged": False}, {"task": 1, "converged": False}, {"task": 2, "converged": True}],
            "aevs/clean": [{"task": 0, "converged": False}, {"task": 1, "converged": True}, {"task": 2, "converged": True}]}
    (tmp_path / "tasks.json").write_text(json.dumps({"config": {}, "tasks": runs}))
    assert figures.task_most_converged(str(tmp_path / "tasks.json")) == 2
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UserError, match="bad.json"):
        figures.task_most_converged(str(tmp_path / "bad.json"))
