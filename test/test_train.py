"""The training pipeline: renderers agree, batches follow the paper's policy, configs validate,
and `latent-vs train` trains, checkpoints, resumes, keeps its time budget and exports a model
that loads."""
import csv
import json
import os

import numpy as np
import pytest
import torch

from latent_vs import cli, geometry
from latent_vs.camera import default_camera
from latent_vs.errors import UserError
from latent_vs.learning import data
from latent_vs.learning.config import load_config
from latent_vs.learning.export import load_model
from latent_vs.scene import Scene, SceneConfig, goal_pose

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(f for f in os.listdir(os.path.join(ROOT, "config")) if f.startswith("train_") and f.endswith(".yaml"))
TOY = ["--set", "data.samples=400", "--set", "data.heldout=16", "--set", "data.anchors=4",
       "--set", "data.neighbour_pool=64", "--set", "psi.width=4", "--set", "train.log_every_steps=1",
       "--set", "train.eval_every_steps=2", "--phi-pretrain-steps", "0", "--quiet"]


def test_torch_renderer_matches_scene_render():
    scene = Scene(SceneConfig(), default_camera(64))
    poses = data.PoseSet.sample(60, 5, SceneConfig()).T
    goal = goal_pose()
    behind = goal.copy()
    behind[2, 3] = 0.3                      # behind the poster plane, looking away from it
    edge = goal @ geometry.pose_to_matrix(np.array([0, 0, 0, 0, np.pi / 2, 0]))  # plane seen edge-on
    T = np.concatenate([poses, goal[None], behind[None], edge[None]])
    ref = scene.render_batch(T).astype(np.float32)
    out = data.TorchRenderer(scene).render(torch.from_numpy(T)).numpy()
    diff = np.abs(out - ref)
    assert diff.mean() < 1.0                 # ~1 grey level on average (measured: < 0.001)
    assert (diff <= 1).mean() > 0.99
    assert ref[:60].std() > 10               # the poster is really in view


def test_neighbours_are_the_nearest_in_the_pool():
    poses = data.PoseSet.sample(300, 1, SceneConfig())
    R, t = torch.from_numpy(poses.R), torch.from_numpy(poses.t)
    gen = torch.Generator().manual_seed(0)
    idx = data.select_indices(len(poses), R, t, anchors=5, neighbours=3, pool=300, w_t=0.5, w_r=1.5, gen=gen)
    assert idx.shape == (20,)
    groups = idx.reshape(5, 4).numpy()
    for g in groups:
        r = poses.r[g].astype(np.float64)
        d_all = geometry.se3_distance(poses.r[g[0]][None].astype(np.float64), poses.r.astype(np.float64), 0.5, 1.5)
        d_all[g[0]] = np.inf
        d_nn = geometry.se3_distance(r[:1], r[1:], 0.5, 1.5)
        # pool = whole set drawn with replacement: neighbours are among the nearest poses
        assert d_nn.max() <= np.sort(d_all)[12] + 1e-4


def test_perturbations_change_images_in_both_pipelines():
    scene = Scene(SceneConfig(), default_camera(64))
    img = scene.render(goal_pose())
    rng = np.random.default_rng(0)
    np_change = np.mean([np.abs(data.perturb_np(img, rng).astype(float) - img).mean() for _ in range(30)])
    t = torch.from_numpy(img).float()[None].repeat(30, 1, 1)
    t_change = (data.perturb_torch(t, torch.Generator().manual_seed(0)) - t).abs().mean().item()
    assert np_change > 3 and t_change > 3
    assert 0.5 < t_change / np_change < 2     # the same perturbation law


def test_batch_layout():
    scene = Scene(SceneConfig(), default_camera(64))
    poses = data.PoseSet.sample(200, 2, SceneConfig())
    src = data.TorchBatchSource(poses, scene, anchors=3, neighbours=2, perturbations=2, pool=100,
                                w_t=0.5, w_r=1.5, device="cpu", seed=0)
    b = next(src)
    assert b.images.shape == (9, 3, 1, 64, 64) and b.r.shape == (9, 6) and b.T.shape == (9, 4, 4)
    assert b.flat_images().shape == (27, 1, 64, 64)
    np.testing.assert_allclose(b.r.numpy(), geometry.pose_difference(poses.goal, b.T.numpy()), atol=1e-5)
    assert not torch.equal(b.images[:, 0], b.images[:, 1])   # view 1 is perturbed


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_validate(name):
    cfg = load_config(os.path.join(ROOT, "config", name))
    assert cfg.image_size % 32 == 0


def test_config_errors_name_the_file_and_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data: {anchorz: 3}\n")
    with pytest.raises(UserError, match=r"c\.yaml.*data.*anchorz"):
        load_config(str(p))
    p.write_text("psi: {depth: 50}\n")
    with pytest.raises(UserError, match=r"psi\.depth"):
        load_config(str(p))
    p.write_text("image_size: big\n")
    with pytest.raises(UserError, match=r"image_size"):
        load_config(str(p))
    p.write_text("data: {path_fraction: 0.5, decoupled_fraction: 0.4, near_goal_fraction: 0.25}\n")
    with pytest.raises(UserError, match=r"decoupled_fraction.*sum to <= 1"):
        load_config(str(p))
    p.write_text("scene: {texture: nowhere.png}\n")
    with pytest.raises(UserError, match=r"nowhere\.png"):
        load_config(str(p))
    p.write_text("name: x\ntrain:\n  lr: [1, 2\nkind: mlvs\n")     # a YAML error: file, line, column
    with pytest.raises(UserError, match=r"c\.yaml, line 4, column 5: not valid YAML \(expected ','"):
        load_config(str(p))
    assert cli.main(["train", str(tmp_path / "missing.yaml")]) == 2


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_train_checkpoint_resume_export(tmp_path, capsys):
    out, run = str(tmp_path / "m"), str(tmp_path / "run")
    cfg = os.path.join(ROOT, "config", "train_small.yaml")
    args = ["train", cfg, "--out", out, "--run-dir", run, *TOY]
    assert cli.main([*args, "--max-steps", "3"]) == 0
    for f in ("train_log.csv", "eval_log.csv", "loss.png", "checkpoint.pt", "config.yaml"):
        assert os.path.isfile(os.path.join(run, f)), f
    assert [r["step"] for r in _rows(os.path.join(run, "train_log.csv"))] == ["1", "2", "3"]
    m = load_model(out)
    meta = m.meta
    assert meta["training"]["steps"] == 3 and meta["training"]["device"] == "cpu"
    assert {"fit_clean", "fit_perturbed", "corr_image"} <= set(meta["diagnostics"])
    assert meta["config"]["name"] == "small" and meta["w_t"] > 0 and meta["benchmark"] == {}
    assert m.encode(np.zeros((2, 100, 120), np.uint8)).shape == (2, 32)
    # resume continues at step 4, with the learning rate of the resuming command's config
    # (at lr 1e-3 the warm-up keeps these steps below 1e-4; the checkpoint's rate used to win)
    assert cli.main([*args, "--max-steps", "5", "--resume", "--set", "train.lr=0.1"]) == 0
    rows = _rows(os.path.join(run, "train_log.csv"))
    assert [r["step"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert max(float(r["lr"]) for r in rows[:3]) < 1e-4 < 1e-3 < float(rows[3]["lr"])
    assert load_model(out).meta["training"]["steps"] == 5
    # --resume with no checkpoint is a one-line user error
    assert cli.main(["train", cfg, "--out", out, "--run-dir", str(tmp_path / "empty"), "--resume", *TOY]) == 2
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_time_budget_always_exports(tmp_path):
    out = str(tmp_path / "m")
    cfg = os.path.join(ROOT, "config", "train_small.yaml")
    # so many epochs that only the budget can end the run, on a fast machine or a slow one
    assert cli.main(["train", cfg, "--out", out, "--run-dir", str(tmp_path / "r"), "--time-budget-min", "0.3",
                     "--set", "renderer=torch", *TOY, "--set", "train.epochs=100000"]) == 0
    meta = json.load(open(os.path.join(out, "meta.json")))
    assert meta["training"]["stopped_by"] == "time budget" and meta["training"]["steps"] > 0


def test_stage1_fallback_fits_eq9():
    from latent_vs.learning.losses import data_weights
    from latent_vs.learning.nets import PoseNet
    from latent_vs.learning.objective_mlvs import fallback_train_phi
    torch.manual_seed(0)
    r = data.PoseSet.sample(2000, 0, SceneConfig()).r
    w_t, w_r = data_weights(r)
    phi = PoseNet(input_scale=(1 / w_t,) * 3 + (1 / w_r,) * 3)
    from latent_vs.learning.losses import loss_phi_se3, se3_pair_distance
    rt = torch.from_numpy(data.PoseSet.sample(256, 9, SceneConfig()).r)   # held-out poses
    d = se3_pair_distance(rt, rt, w_t, w_r)
    with torch.no_grad():
        before = loss_phi_se3(phi(rt), d).item()
    out = fallback_train_phi(phi, 150, 128, 3e-3, w_t, w_r, r, seed=0)
    with torch.no_grad():
        after = loss_phi_se3(phi(rt), d).item()
    assert out["steps"] == 150 and after < 0.1 * before


@pytest.mark.slow
def test_phi_init_and_psi_init_continue_from_a_model(tmp_path, capsys):
    """train.phi_init takes φ from a file and skips stage 1; train.psi_init starts ψ from a
    model (folded TorchScript weights back into weight norm), its last layer refit to φ."""
    cfg = os.path.join(ROOT, "config", "train_small.yaml")
    first = str(tmp_path / "first")
    assert cli.main(["train", cfg, "--out", first, "--run-dir", str(tmp_path / "r1"), *TOY, "--max-steps", "3"]) == 0
    recipe = os.path.join(ROOT, "config", "phi_recipe.pt")
    out = str(tmp_path / "second")
    assert cli.main(["train", cfg, "--out", out, "--run-dir", str(tmp_path / "r2"), *TOY, "--max-steps", "1",
                     "--set", f"train.phi_init={recipe}", "--set", f"train.psi_init={first}/psi.pt",
                     "--set", "train.lr=1e-12", "--set", "train.warmup_steps=0",
                     "--set", "train.phi_pretrain_steps=500"]) == 0
    m, ref = load_model(out), torch.jit.load(recipe)
    r = torch.from_numpy(data.PoseSet.sample(64, 3, SceneConfig()).r)
    torch.testing.assert_close(m.phi(r), ref(r))                       # φ is the file's, untouched
    assert m.meta["training"]["pretrain"]["recipe"] == "phi_init: phi_recipe.pt"
    # ψ's trunk is the first model's (lr ~0): same features, only the last layer differs
    a, b = torch.jit.load(os.path.join(first, "psi.pt")), torch.jit.load(os.path.join(out, "psi.pt"))
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for k in sa:
        if not k.startswith("fc."):
            torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(sa["fc.weight"], sb["fc.weight"])
    # ... refit by least squares: closer to the recipe φ than the first model's head (which
    # was fit to another φ); a rank-deficient solve gone wrong would be far worse
    poses = data.PoseSet.sample(256, 11, SceneConfig())
    x = m.normalise(np.stack([Scene(m.scene, m.camera).render(t) for t in poses.T]))
    z_r = ref(torch.from_numpy(poses.r))
    with torch.no_grad():
        fit_first = (a(x) - z_r).norm(dim=1).mean().item()
        fit_second = (b(x) - z_r).norm(dim=1).mean().item()
    assert fit_second < 0.7 * fit_first, (fit_first, fit_second)
    # a ψ of another architecture, or a missing file: one line naming the file
    capsys.readouterr()
    assert cli.main(["train", cfg, "--out", str(tmp_path / "x"), "--run-dir", str(tmp_path / "r3"), *TOY,
                     "--max-steps", "1", "--set", "psi.width=8", "--set", f"train.psi_init={first}/psi.pt"]) == 2
    err = capsys.readouterr().err
    assert "psi.pt" in err and "does not match" in err and "Traceback" not in err
    assert cli.main(["train", cfg, "--out", str(tmp_path / "x"), "--run-dir", str(tmp_path / "r4"), *TOY,
                     "--max-steps", "1", "--set", "train.phi_init=/nonexistent/phi.pt"]) == 2
    assert "train.phi_init not found: /nonexistent/phi.pt" in capsys.readouterr().err


def test_fit_affine_on_rank_deficient_features():
    """ψ's head refit (psi_init + phi_init) on features with dead ReLU channels: the least-
    squares optimum, as NumPy's SVD solver finds it."""
    from latent_vs.learning.objective_mlvs import fit_affine
    g = torch.Generator().manual_seed(0)
    F = torch.relu(torch.randn(2000, 40, generator=g, dtype=torch.float64) @ torch.randn(40, 129, generator=g,
                                                                                          dtype=torch.float64))
    F[:, ::2] = 0.0                                                        # dead channels: rank 40 of 129
    F = F * torch.logspace(-3, 3, 129, dtype=torch.float64)                # badly scaled, like real features
    Z = F[:, 1:65:2] @ torch.randn(32, 32, generator=g, dtype=torch.float64) * 1e-3 + 0.05 * torch.randn(
        2000, 32, generator=g, dtype=torch.float64)
    W, b = fit_affine(F, Z)
    A = np.concatenate([F.numpy(), np.ones((len(F), 1))], 1)
    best = np.linalg.lstsq(A, Z.numpy(), rcond=None)[0]
    ours = (F @ W.T + b - Z).norm(dim=1).mean().item()
    ref = np.linalg.norm(A @ best - Z.numpy(), axis=1).mean()
    assert ours == pytest.approx(ref, rel=1e-6)


def test_sensor_sizes_render_larger_images_as_the_encoder_resizes_them():
    """data.sensor_sizes: the clean view is a larger camera image brought to ψ's input by the
    encoder's own preprocessing (CPU source exactly; the GPU source's area resize within a few
    grey levels of it), unlike the image rendered at ψ's size."""
    from latent_vs.models import prepare_images
    cam, cfg = default_camera(64), SceneConfig()
    poses = data.PoseSet.sample(200, 2, cfg)
    big = Scene(cfg, cam.scaled(224))
    cpu = data.SceneBatchSource(poses, cfg, cam, anchors=3, neighbours=2, perturbations=1, pool=100,
                                w_t=0.5, w_r=1.5, device="cpu", seed=0, workers=0, sensor_sizes=[224])
    b = next(cpu)
    idx = [int(np.argmin(np.abs(poses.T - T).sum((1, 2)))) for T in b.T.numpy()]
    want = np.stack([np.rint(prepare_images(big.render(poses.T[i]), 64)[0]) for i in idx])
    got = b.images[:, 0, 0].numpy() * data.IMAGE_STD * 255 + data.IMAGE_MEAN * 255
    np.testing.assert_allclose(got, want, atol=1e-3)
    own = Scene(cfg, cam).render_batch(poses.T[idx]).astype(float)
    assert np.abs(own - want).mean() > 1.0          # not the image rendered at 64 px
    gpu = data.TorchBatchSource(poses, Scene(cfg, cam), anchors=3, neighbours=2, perturbations=1, pool=100,
                                w_t=0.5, w_r=1.5, device="cpu", seed=0, sensor_sizes=[224])
    bt = next(gpu)
    got_t = bt.images[:, 0, 0].numpy() * data.IMAGE_STD * 255 + data.IMAGE_MEAN * 255
    want_t = np.stack([prepare_images(big.render(T), 64)[0] for T in bt.T.numpy()])
    assert np.abs(got_t - want_t).mean() < 2.0
    cpu.close()


def test_background_fraction_renders_the_poster_on_random_greys():
    """data.background_fraction: that share of the clean views is the scene rendered with a random
    grey background (the poster pixels unchanged); 0 keeps the scene's own background. The GPU
    renderer has no such option: the config says so in one line."""
    cam, cfg = default_camera(64), SceneConfig()
    poses = data.PoseSet.sample(300, 3, cfg)
    for frac in (0.0, 1.0):
        src = data.SceneBatchSource(poses, cfg, cam, anchors=8, neighbours=2, perturbations=1, pool=100,
                                    w_t=0.5, w_r=1.5, device="cpu", seed=0, workers=0, background_fraction=frac)
        b = next(src)
        src.close()
        got = np.rint(b.images[:, 0, 0].numpy() * data.IMAGE_STD * 255 + data.IMAGE_MEAN * 255)
        idx = [int(np.argmin(np.abs(poses.T - T).sum((1, 2)))) for T in b.T.numpy()]
        black = Scene(cfg, cam).render_batch(poses.T[idx]).astype(float)
        white = Scene(SceneConfig(background=255), cam).render_batch(poses.T[idx]).astype(float)
        poster = black == white                      # pixels where only the poster is seen
        np.testing.assert_allclose(got[poster], black[poster], atol=1e-3)
        seen_bg = ~poster.all((1, 2))                # views with some background in them
        assert seen_bg.sum() >= 4
        changed = np.abs(got - black).max((1, 2)) > 0
        assert changed[seen_bg].all() if frac else not changed.any()
    cfg_path = os.path.join(ROOT, "config", "train_cpu_default.yaml")
    assert load_config(cfg_path, {"data.background_fraction": 0.3}).data.background_fraction == 0.3
    with pytest.raises(UserError, match="background_fraction"):
        load_config(cfg_path, {"data.background_fraction": 0.3, "renderer": "torch"})
    with pytest.raises(UserError, match="background_fraction"):
        load_config(cfg_path, {"data.background_fraction": 1.5})


def test_near_goal_minimum_scale_is_a_checked_config_setting():
    cfg_path = os.path.join(ROOT, "config", "train_cpu_default.yaml")
    cfg = load_config(cfg_path, {"data.near_goal_min_mm": 0.1, "data.near_goal_min_deg": 0.01})
    assert cfg.data.pool()["near_goal_min_mm"] == 0.1 and cfg.data.pool()["near_goal_min_deg"] == 0.01
    for bad in ({"data.near_goal_min_mm": 0.0}, {"data.near_goal_min_deg": 9.0}):
        with pytest.raises(UserError, match="near_goal_min"):
            load_config(cfg_path, bad)
