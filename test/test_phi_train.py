"""Stage-1 φ recipe: it fits eq. 9, is seeded, and the servo it yields converges (oracle)."""
import numpy as np
import pytest
import torch

from latent_vs.geometry import pose_difference, se3_distance
from latent_vs.learning.losses import data_weights
from latent_vs.learning.nets import PoseNet
from latent_vs.learning.phi_train import converged, phi_diagnostics, small_twists, train_phi
from latent_vs.scene import goal_pose
from latent_vs.tasks import sample_training_poses


def _weights():
    return data_weights(pose_difference(goal_pose(), sample_training_poses(2000, seed=5)))


def test_small_twists_magnitudes_are_in_range():
    tw = small_twists(2000, seed=0)
    t, w = np.linalg.norm(tw[:, :3], axis=1), np.rad2deg(np.linalg.norm(tw[:, 3:], axis=1))
    assert t.min() >= 1e-3 * (1 - 1e-9) and t.max() <= 0.1 * (1 + 1e-9)
    assert w.min() >= 0.1 * (1 - 1e-9) and w.max() <= 10 * (1 + 1e-9)
    assert np.median(t) < 0.02  # log-uniform: most are small


def test_converged_rule():
    t0, r0 = np.array([0.5, 0.5, 0.005, 0.5]), np.array([1.0, 1.0, 0.01, 1.0])
    t1, r1 = np.array([0.04, 0.06, 0.004, 0.001]), np.array([0.05, 0.05, 0.009, 0.2])
    assert converged(t0, r0, t1, r1).tolist() == [True, False, True, False]


def test_train_phi_fits_eq9_and_is_seeded():
    w_t, w_r = _weights()
    logs = []
    a, b = PoseNet(), PoseNet()
    b.load_state_dict(a.state_dict())
    out = train_phi(a, steps=300, batch_size=64, lr=1e-3, w_t=w_t, w_r=w_r, seed=3, pool_size=2000,
                    log=lambda s, l: logs.append((s, l)), log_every=50, diagnostics=False)
    train_phi(b, steps=300, batch_size=64, lr=1e-3, w_t=w_t, w_r=w_r, seed=3, pool_size=2000, diagnostics=False)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb)
    assert [s for s, _ in logs] == [50, 100, 150, 200, 250, 300] and logs[-1][1]["lr"] == pytest.approx(0.0, abs=1e-9)
    assert out["final_loss"] < 0.25 and logs[-1][1]["loss_phi"] < logs[0][1]["loss_phi"]
    # latent distances follow d_SE(3) (eq. 8) on held-out poses
    r = pose_difference(goal_pose(), sample_training_poses(200, seed=77))
    z = a(torch.as_tensor(r, dtype=torch.float32)).detach().numpy()
    i, j = np.triu_indices(len(r), 1)
    d = se3_distance(r[i], r[j], w_t, w_r)
    dz = np.linalg.norm(z[i] - z[j], axis=1)
    assert np.corrcoef(d, dz)[0, 1] > 0.85


def test_recipe_phi_is_servoable_oracle_exact():
    """The φ in test/data (config/phi_recipe.pt: scripts/make_phi_recipe.py, train_phi's defaults)
    converges under the exact-Jacobian oracle (the diagnostic the trainer writes to meta.json)."""
    import os
    w_t, w_r = _weights()
    phi = torch.jit.load(os.path.join(os.path.dirname(__file__), "data", "phi_recipe.pt"))
    diag = phi_diagnostics(phi, w_t, w_r, n=300, oracle_tasks=20, oracle_iters=300)
    assert diag["heldout_pair_corr"] > 0.95 and diag["fold_ratio_min"] > 0.3
    assert diag["oracle_exact_converged"] == 1.0, diag
    untrained = phi_diagnostics(PoseNet(), w_t, w_r, n=300, oracle_tasks=0)
    assert untrained["heldout_pair_corr"] < 0.9 and "oracle_exact_converged" not in untrained
