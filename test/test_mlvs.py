"""MLVS control law (eq. 13-14): closed-loop convergence with the oracle and a φ trained in
this session, the latent interface the controller node uses, and the image path of a real
exported model."""
import os

import numpy as np
import pytest
import torch

from latent_vs.control.mlvs import MLVS, make
from latent_vs.errors import UserError
from latent_vs.geometry import error_metrics, pose_difference, se3_exp
from latent_vs.learning.phi_train import converged
from latent_vs.posebank import BankConfig, PoseBank
from latent_vs.scene import goal_pose
from latent_vs.tasks import sample_tasks

SMALL_BANK = BankConfig(grid_steps=6, near_goal=3000, index="flat")


@pytest.fixture(scope="module")
def phi():
    """φ trained by phi_train.train_phi's recipe (5K steps; latent_vs/learning/phi_train.py)."""
    return torch.jit.load(os.path.join(os.path.dirname(__file__), "data", "phi_recipe.pt"))


@pytest.fixture(scope="module")
def bank(phi):
    return PoseBank.build(phi, SMALL_BANK)


def _servo(law, n=20, iters=300, seed=0):
    g = goal_pose()
    T = sample_tasks(n, seed)
    t0, r0 = error_metrics(g, T)
    law.set_goal(None, g)
    active = np.arange(n)
    for _ in range(iters):
        T = T @ se3_exp(law.step(None, T, active))
    t1, r1 = error_metrics(g, T)
    return converged(t0, r0, t1, r1), t1, r1


@pytest.mark.slow
@pytest.mark.parametrize("kw,rate", [(dict(exact_jacobian=True), 0.95), (dict(k=50, weighting="inverse"), 0.95),
                                     (dict(k=50, weighting="proportional"), 0.95), (dict(k=1), 0.75)],
                         ids=["oracle-exact", "oracle-knn50-inverse", "oracle-knn50-proportional", "oracle-knn1"])
def test_oracle_closed_loop_converges(phi, bank, kw, rate):
    law = MLVS(phi=phi, oracle=True, bank=bank, **kw)
    assert law.needs_pose and law.camera is None
    conv, t1, r1 = _servo(law)
    assert conv.mean() >= rate, conv.mean()
    assert np.median(t1[conv]) < 1e-4 and np.median(r1[conv]) < np.deg2rad(0.01)   # 0.1 mm, 0.01°


def test_step_latent_matches_step_and_handles_shapes(phi, bank):
    law = MLVS(phi=phi, oracle=True, k=10, bank=bank)
    g = goal_pose()
    T = sample_tasks(5, seed=1)
    law.set_goal(None, g)
    v = law.step(None, T, np.arange(5))
    z = phi(torch.as_tensor(pose_difference(g, T), dtype=torch.float32)).detach().numpy()
    law2 = MLVS(phi=phi, k=10, bank=bank)
    law2.set_goal_latent(phi(torch.zeros(1, 6))[0].detach().numpy())
    np.testing.assert_allclose(law2.step_latent(z), v, rtol=1e-4, atol=1e-5)
    assert law2.step_latent(z[0]).shape == (6,)
    np.testing.assert_allclose(law2.step_latent(z[0]), v[0], rtol=1e-4, atol=1e-5)
    # the pose estimate of eq. 13's neighbours is near the true Δr
    assert law2.last_pose_estimate.shape == (1, 6)
    # at the goal the twist is zero; a NaN latent stops its task only
    zz = np.stack([law2.z_goal[0], z[1] * np.nan, z[2]])
    out = law2.step_latent(zz)
    assert np.allclose(out[:2], 0) and np.linalg.norm(out[2]) > 0
    law2.gain = 0.5
    np.testing.assert_allclose(law2.step_latent(z[2]), 5 * v[2], rtol=1e-4, atol=1e-5)


def test_gain_and_direction_reduce_the_latent_error(phi, bank):
    """One small step along v reduces ‖z − z*‖ (eq. 14 is a descent direction)."""
    law = MLVS(phi=phi, k=50, bank=bank, gain=0.01)
    law.set_goal_latent(phi(torch.zeros(1, 6)).detach().numpy())
    g = goal_pose()
    T = sample_tasks(10, seed=2)
    f = lambda TT: phi(torch.as_tensor(pose_difference(g, TT), dtype=torch.float32)).detach().numpy()
    e0 = np.linalg.norm(f(T) - law.z_goal, axis=1)
    e1 = np.linalg.norm(f(T @ se3_exp(law.step_latent(f(T)))) - law.z_goal, axis=1)
    assert np.mean(e1 < e0) >= 0.9


def test_bad_arguments():
    with pytest.raises(ValueError, match="weighting"):
        MLVS(phi=torch.nn.Linear(6, 32), weighting="nearest", bank=object())
    with pytest.raises(UserError):
        make(model_dir="/nonexistent/model/dir")


def test_image_path_with_the_tiny_model():
    """A real exported model: ψ encodes images of any size; twists are finite, one per task."""
    law = make(model_dir="tiny", k=5, bank_config=BankConfig(grid_steps=4, near_goal=500, index="flat"),
               cache_dir="")
    from latent_vs.scene import Scene, SceneConfig
    scene = Scene(SceneConfig(), law.camera)
    g = goal_pose()
    law.set_goal(scene.render(g), g)
    T = sample_tasks(3, seed=4)
    imgs = np.stack([scene.render(t) for t in T])
    v = law.step(imgs, None, np.arange(3))
    assert v.shape == (3, 6) and np.isfinite(v).all()
    big = np.stack([np.pad(i, 20) for i in imgs])   # any size: the model crops and resizes
    assert law.step(big, None, np.arange(3)).shape == (3, 6)
    assert np.allclose(law.step(imgs[:1] * 0 + scene.render(g), None, np.array([0])), 0, atol=1e-9)


def test_pinv_apply_is_the_pseudo_inverse():
    """Eq. 14's L⁺e by the normal equations equals NumPy's pinv; rank-deficient L falls back."""
    from latent_vs.geometry import pinv_apply
    rng = np.random.default_rng(0)
    L, e = rng.normal(size=(20, 32, 6)), rng.normal(size=(20, 32))
    np.testing.assert_allclose(pinv_apply(L, e), (np.linalg.pinv(L) @ e[..., None])[..., 0], rtol=1e-9, atol=1e-12)
    L[3, :, 5] = 0.0                                                  # a camera DOF with no effect
    np.testing.assert_allclose(pinv_apply(L, e), (np.linalg.pinv(L) @ e[..., None])[..., 0], rtol=1e-9, atol=1e-12)


def test_latent_twist_is_eq14_and_stops_only_a_non_finite_task():
    """v = −λ L_z⁺ e (eq. 14), the one implementation every caller uses; a NaN in one task's
    L_z or e gives that task v = 0 and leaves the others alone."""
    from latent_vs.geometry import latent_twist
    rng = np.random.default_rng(1)
    L, e = rng.normal(size=(5, 32, 6)), rng.normal(size=(5, 32))
    want = -0.1 * (np.linalg.pinv(L) @ e[..., None])[..., 0]
    np.testing.assert_allclose(latent_twist(L, e, 0.1), want, rtol=1e-9, atol=1e-12)
    L[1, 0, 0], e[3, 2] = np.nan, np.inf
    v = latent_twist(L, e, 0.1)
    assert (v[[1, 3]] == 0).all()
    np.testing.assert_allclose(v[[0, 2, 4]], want[[0, 2, 4]], rtol=1e-9, atol=1e-12)
