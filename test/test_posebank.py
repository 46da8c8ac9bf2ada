"""Pose bank: L_z against finite differences of φ composed with the pose update, FAISS
against brute force, eq. 13's weights on a hand case, the disk cache round trip."""
import os
import warnings

import numpy as np
import pytest
import torch

from latent_vs.errors import UserError
from latent_vs.geometry import pose_difference, pose_to_matrix, se3_exp
from latent_vs.learning.nets import PoseNet
from latent_vs.posebank import (BankConfig, BankError, PoseBank, grid_poses, knn_weights, latent_interaction,
                                load_or_build, near_goal_poses)


@pytest.fixture(scope="module")
def phi():
    torch.manual_seed(0)
    return torch.jit.script(PoseNet(activation="silu").eval())


@pytest.fixture(scope="module")
def small_bank(phi):
    return PoseBank.build(phi, BankConfig(grid_steps=5, near_goal=3000, nprobe=16))


def test_latent_interaction_matches_finite_differences_of_phi_after_a_twist(phi):
    """L_z v = d/dε φ(Δr(T·exp(εv))) at ε = 0: the Jacobian of φ composed with the pose update."""
    phi64 = PoseNet(activation="silu").double().eval()
    phi64.load_state_dict({k: v.double() for k, v in phi.state_dict().items()})
    rng = np.random.default_rng(1)
    goal = np.eye(4)
    goal[2, 3] = -0.6
    T = goal @ pose_to_matrix(np.concatenate([rng.uniform(-0.3, 0.3, (4, 3)), rng.uniform(-1.0, 1.0, (4, 3))], 1))
    L = latent_interaction(phi64, pose_difference(goal, T), dtype=torch.float64)
    assert L.shape == (4, 32, 6)
    eps = 1e-6
    f = lambda TT: phi64(torch.as_tensor(pose_difference(goal, TT))).detach().numpy()
    for i in range(6):
        v = np.zeros(6)
        v[i] = 1.0
        fd = (f(T @ se3_exp(eps * v)) - f(T @ se3_exp(-eps * v))) / (2 * eps)
        np.testing.assert_allclose(L[:, :, i], fd, rtol=1e-5, atol=1e-7)


def test_knn_weights_hand_case():
    d = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(knn_weights(d, "proportional"), [[1 / 6, 2 / 6, 3 / 6]])   # eq. 13 as printed
    np.testing.assert_allclose(knn_weights(d, "inverse"), [[6 / 11, 3 / 11, 2 / 11]])     # authors' code
    np.testing.assert_allclose(knn_weights(np.array([[0.0, 2.0, 0.0]]), "inverse"), [[0.5, 0.0, 0.5]])
    np.testing.assert_allclose(knn_weights(np.zeros((1, 4)), "proportional"), [[0.25] * 4])
    with pytest.raises(ValueError):
        knn_weights(d, "nearest")


def test_grid_is_the_authors_and_near_goal_set_is_near():
    g = grid_poses(10)
    assert g.shape == (10**6, 6)
    np.testing.assert_allclose(g.max(0), [0.4, 0.4, 0.4, np.pi / 4, np.pi / 4, np.pi / 2], rtol=1e-6)
    n = near_goal_poses(1000)
    assert np.abs(n[:, :3]).max() <= 0.05 + 1e-6 and np.linalg.norm(n[:, 3:], axis=1).max() <= np.deg2rad(10) + 1e-6
    assert np.all(n[0] == 0)


def test_ivf_search_recalls_brute_force_on_real_latents(phi, small_bank):
    from latent_vs.posebank import embed
    from latent_vs.scene import goal_pose
    from latent_vs.tasks import sample_tasks
    z_bank = embed(phi, small_bank.poses)
    q = embed(phi, pose_difference(goal_pose(), sample_tasks(100, seed=3)).astype(np.float32))
    d_true = ((q[:, None, :] - z_bank[None]) ** 2).sum(-1)
    truth = np.argsort(d_true, 1)[:, :50]
    dist, idx = small_bank.search(q, 50)
    recall = np.mean([len(set(a) & set(b)) / 50 for a, b in zip(idx, truth)])
    assert recall >= 0.95, recall
    # distances are Euclidean (not squared) and match the stored embeddings
    np.testing.assert_allclose(dist, np.linalg.norm(z_bank[idx] - q[:, None], axis=-1), rtol=1e-3, atol=1e-4)
    flat = PoseBank.build(phi, BankConfig(grid_steps=5, near_goal=3000, index="flat"))
    d_f, i_f = flat.search(q, 50)
    np.testing.assert_array_equal(np.sort(i_f, 1), np.sort(truth, 1))


def test_k1_interaction_is_the_exact_one_at_the_nearest_pose(phi, small_bank):
    r = small_bank.poses[[17, 4000]]
    z = phi(torch.as_tensor(r)).detach().numpy()
    L, r_hat = small_bank.interaction(z, k=1)
    np.testing.assert_allclose(L, latent_interaction(phi, r), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r_hat, r, atol=1e-6)


def test_refine_mode_recovers_the_pose(phi, small_bank):
    r = np.array([[0.05, -0.12, 0.08, 0.1, -0.2, 0.3]])
    z = phi(torch.as_tensor(r, dtype=torch.float32)).detach().numpy()
    L, r_hat = small_bank.interaction(z, mode="refine", refine_steps=6)
    np.testing.assert_allclose(r_hat, r, atol=1e-3)
    np.testing.assert_allclose(L, latent_interaction(phi, r_hat), rtol=1e-5, atol=1e-6)


def test_cache_round_trip_and_truncated_file(phi, small_bank, tmp_path):
    path = str(tmp_path / "bank.npz")
    small_bank.save(path)
    loaded = PoseBank.load(path, phi)
    q = np.random.default_rng(0).normal(size=(20, 32)).astype(np.float32)
    for a, b in zip(small_bank.search(q, 10), loaded.search(q, 10)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(small_bank.interaction(q, 10)[0], loaded.interaction(q, 10)[0])
    # a truncated file: an error that names the file
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(BankError, match="bank.npz") as err:
        PoseBank.load(path, phi)
    assert isinstance(err.value, UserError)
    with pytest.raises(BankError, match="not found"):
        PoseBank.load(str(tmp_path / "missing.npz"), phi)


def test_load_or_build_caches_rebuilds_truncated_and_keys_on_phi(phi, tmp_path):
    cfg = BankConfig(grid_steps=3, near_goal=500, index="flat")
    a = load_or_build(phi, cfg, cache_dir=str(tmp_path))
    files = os.listdir(tmp_path)
    assert len(files) == 1 and files[0].startswith("posebank-")
    b = load_or_build(phi, cfg, cache_dir=str(tmp_path))
    np.testing.assert_array_equal(a.poses, b.poses)
    path = os.path.join(tmp_path, files[0])
    with open(path, "r+b") as f:
        f.truncate(100)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        c = load_or_build(phi, cfg, cache_dir=str(tmp_path))
    assert any(files[0] in str(x.message) for x in w)
    q = np.random.default_rng(0).normal(size=(5, 32)).astype(np.float32)
    np.testing.assert_array_equal(a.search(q, 3)[1], c.search(q, 3)[1])
    assert PoseBank.load(path, phi).key == a.key          # rewritten whole
    other = torch.jit.script(PoseNet(activation="silu").eval())
    with pytest.raises(BankError, match="another φ"):
        PoseBank.load(path, other)


def test_perf_command_rejects_bad_input(tmp_path):
    from latent_vs.bench import perf
    with pytest.raises(UserError, match="bank-size"):
        perf.main(["--bank-size", "10"])
    with pytest.raises(UserError, match="--out"):
        perf.main(["--out", str(tmp_path / "missing" / "perf.json")])
    with pytest.raises(SystemExit) as e:
        perf.main(["--help"])
    assert e.value.code == 0


def test_float32_jacobian_and_bank_cache_match_float64(phi, small_bank):
    """The bank's cache computes L_z_j in float32: within float32 rounding of float64."""
    ids = np.arange(0, len(small_bank), max(1, len(small_bank) // 40))[:40]
    ref = latent_interaction(phi, small_bank.poses[ids])
    f32 = latent_interaction(phi, small_bank.poses[ids], np_dtype=np.float32)
    assert f32.dtype == np.float32
    scale = np.abs(ref).max()
    np.testing.assert_allclose(f32, ref, atol=1e-5 * scale)
    small_bank.clear_cache()
    np.testing.assert_allclose(small_bank.bank_interaction(ids), ref, atol=1e-5 * scale)


@pytest.mark.slow
def test_perf_command_runs_on_a_small_bank(tmp_path, capsys):
    """`latent-vs perf` end to end on a small bank: servo runs to their end, the first 40 steps
    apart, warm and cold steps, the scikit-learn side by side; JSON and a table."""
    import json
    from latent_vs.bench import perf
    out = tmp_path / "perf.json"
    assert perf.main(["--model", "tiny", "--bank-size", "3000", "--steps", "20", "--servo-iters", "50",
                      "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    n_all, n_first = res["step_servo"]["total_ms"]["n"], res["step_servo_first40"]["total_ms"]["n"]
    assert 8 * 40 >= n_first and n_all > n_first and n_all <= 8 * 50
    for key in ("step_servo", "step_warm", "step_cold"):
        assert 0 < res[key]["total_ms"]["median_ms"] <= res[key]["total_ms"]["p99_ms"]
    assert res["speedup_vs_sklearn"]["servo"] > 0 and res["bank"]["size"] > 2000
    assert "speed-up of ours" in capsys.readouterr().out


def test_cache_evicts_the_least_recently_used_banks(tmp_path):
    """The pose-bank cache keeps the `keep` most recently used banks by itself."""
    import os
    from latent_vs.posebank import evict_old_banks
    for i in range(5):
        p = tmp_path / f"posebank-{i}.npz"
        p.write_bytes(b"x")
        os.utime(p, (1000 + i, 1000 + i))
    (tmp_path / "other.txt").write_text("kept")
    os.utime(tmp_path / "posebank-0.npz", (2000, 2000))          # used recently: kept
    gone = evict_old_banks(str(tmp_path), keep=3)
    assert sorted(os.path.basename(p) for p in gone) == ["posebank-1.npz", "posebank-2.npz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.txt", "posebank-0.npz", "posebank-3.npz",
                                                          "posebank-4.npz"]
