"""PBVS-CNN baseline: the Kendall & Cipolla loss, the pose regressor, and the control law in
closed loop (a tiny regressor fitted in the test session)."""
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from latent_vs.bench.sim import simulate
from latent_vs.camera import default_camera
from latent_vs.errors import UserError
from latent_vs.geometry import error_metrics, pose_difference, pose_to_matrix
from latent_vs.learning.export import FORMAT, FORMAT_VERSION, write_model_dir
from latent_vs.learning.nets import IMAGE_MEAN, IMAGE_STD
from latent_vs.learning.pbvs_cnn import KendallLoss, PoseRegressor, kendall_loss
from latent_vs.scene import Scene, SceneConfig, goal_pose


# ----------------------------------------------------------------------------- Kendall loss

def test_kendall_loss_hand_case():
    # two samples: translation errors (L1) 3 and 1 -> mean 2; rotation errors 0.2 and 0 -> mean 0.1
    r = torch.zeros(2, 6)
    r_hat = torch.tensor([[1.0, -2.0, 0.0, 0.1, 0.0, -0.1], [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    s_t, s_r = torch.tensor(math.log(2.0)), torch.tensor(-1.0)
    loss, e_t, e_r = kendall_loss(r_hat, r, s_t, s_r)
    assert e_t.item() == pytest.approx(2.0)
    assert e_r.item() == pytest.approx(0.1)
    # 2·e^{-ln 2} + ln 2 + 0.1·e^{1} - 1
    assert loss.item() == pytest.approx(1.0 + math.log(2.0) + 0.1 * math.e - 1.0, rel=1e-6)
    # the L2 variant uses Euclidean norms
    loss2, e_t2, _ = kendall_loss(r_hat, r, s_t, s_r, norm=2)
    assert e_t2.item() == pytest.approx((math.sqrt(5.0) + 1.0) / 2)


def test_kendall_loss_zero_error_and_gradients():
    r = torch.randn(4, 6, dtype=torch.float64)
    s_t = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    s_r = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    loss, e_t, e_r = kendall_loss(r.clone(), r, s_t, s_r)
    assert e_t.item() == 0.0 and e_r.item() == 0.0
    assert loss.item() == pytest.approx(0.5 - 3.0)            # only the regularisers s_t + s_r remain
    # gradient w.r.t. the log-variances: ∂L/∂s = 1 - e·exp(-s)
    r_hat = r + torch.tensor([0.3, 0.0, 0.0, 0.0, 0.05, 0.0], dtype=torch.float64)
    loss, e_t, e_r = kendall_loss(r_hat, r, s_t, s_r)
    g_t, g_r = torch.autograd.grad(loss, (s_t, s_r))
    assert g_t.item() == pytest.approx(1.0 - 0.3 * math.exp(-0.5), rel=1e-5)
    assert g_r.item() == pytest.approx(1.0 - 0.05 * math.exp(3.0), rel=1e-5)
    # and w.r.t. the prediction: the weight exp(-s) scales each half
    r_hat = r_hat.clone().requires_grad_(True)
    loss, _, _ = kendall_loss(r_hat, r, s_t.detach(), s_r.detach())
    (g,) = torch.autograd.grad(loss, r_hat)
    assert g[0, 0].item() == pytest.approx(math.exp(-0.5) / 4, rel=1e-5)   # sign(+0.3)·e^{-s_t}/B
    assert g[0, 4].item() == pytest.approx(math.exp(3.0) / 4, rel=1e-5)


def test_learned_log_variances_settle_at_the_errors():
    """Minimising over s alone: s* = log(mean error), i.e. each term is weighted by 1/error."""
    torch.manual_seed(0)
    r = torch.randn(64, 6)
    r_hat = r + torch.cat([0.2 * torch.randn(64, 3), 0.02 * torch.randn(64, 3)], 1)
    crit = KendallLoss()
    opt = torch.optim.Adam(crit.parameters(), lr=0.05)
    for _ in range(600):
        opt.zero_grad()
        loss, e_t, e_r = crit(r_hat, r)
        loss.backward()
        opt.step()
    assert crit.s_t.item() == pytest.approx(math.log(e_t.item()), abs=0.02)
    assert crit.s_r.item() == pytest.approx(math.log(e_r.item()), abs=0.02)


def test_kendall_loss_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="B, 6"):
        kendall_loss(torch.zeros(2, 7), torch.zeros(2, 7), torch.tensor(0.0), torch.tensor(0.0))


def test_pose_regressor_shapes():
    net = PoseRegressor(depth=10, width=8, in_size=64)
    out = net(torch.zeros(3, 1, 64, 64))
    assert out.shape == (3, 6)


# ----------------------------------------------------------------------------- control law

S = 32


def _meta(kind, camera, scene, latent_dim):
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "name": "test",
            "latent_dim": latent_dim, "image": {"size": camera.width, "channels": 1, "mean": IMAGE_MEAN,
                                                "std": IMAGE_STD},
            "camera": camera.to_dict(), "scene": scene.to_dict(), "goal_pose": goal_pose(scene)}


class LinearRegressor(nn.Module):
    def __init__(self, n_in: int):
        super().__init__()
        self.fc = nn.Linear(n_in, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


@pytest.fixture(scope="module")
def linear_pbvs_cnn_model(tmp_path_factory):
    """A 'pose regressor' fitted by ridge regression on 600 renders within 3 cm / 3° of the goal
    (seconds), exported like a trained PBVS-CNN model."""
    cam, sc = default_camera(S), SceneConfig()
    scene, G = Scene(sc, cam), goal_pose(sc)
    rng = np.random.default_rng(0)
    d = rng.uniform(-0.03, 0.03, (600, 6))
    T = G @ pose_to_matrix(d)
    X = (scene.render_batch(T).reshape(len(T), -1) / 255.0 - IMAGE_MEAN) / IMAGE_STD
    Xa = np.c_[X, np.ones(len(X))]
    W = np.linalg.solve(Xa.T @ Xa + 0.1 * np.eye(Xa.shape[1]), Xa.T @ pose_difference(G, T))
    net = LinearRegressor(S * S)
    with torch.no_grad():
        net.fc.weight.copy_(torch.from_numpy(W[:-1].T))
        net.fc.bias.copy_(torch.from_numpy(W[-1]))
    out = str(tmp_path_factory.mktemp("models") / "pbvs_cnn_linear")
    write_model_dir(out, {"psi.pt": net}, _meta("pbvs_cnn", cam, sc, 6))
    return out


def test_pbvs_cnn_closed_loop_converges(linear_pbvs_cnn_model):
    from latent_vs.control.pbvs_cnn import make
    law = make(linear_pbvs_cnn_model)
    assert law.camera.width == S and law.gain == 0.1
    G = goal_pose()
    tasks = G @ pose_to_matrix(np.array([[0.015, -0.01, 0.01, 0.02, -0.015, 0.01],
                                         [-0.01, 0.02, -0.015, -0.01, 0.02, -0.02]]))
    res = simulate(law, tasks, iters=200)
    t0, r0 = error_metrics(G, tasks)
    T_end = pose_to_matrix(res.poses[np.arange(2), res.n_poses - 1].astype(float))
    t1, r1 = error_metrics(G, T_end)
    assert np.all(t1 < 0.1 * t0) and np.all(r1 < 0.1 * r0), (t0, r0, t1, r1)


def test_pbvs_cnn_uses_the_estimated_goal_pose(linear_pbvs_cnn_model):
    """With I* taken at a displaced pose, the law servos to that pose, not to the true goal."""
    from latent_vs.control.pbvs_cnn import make
    law = make(linear_pbvs_cnn_model)
    cam, sc = law.camera, SceneConfig()
    scene, G = Scene(sc, cam), goal_pose(sc)
    target = G @ pose_to_matrix(np.array([0.01, 0.0, 0.0, 0.0, 0.0, 0.0]))
    law.set_goal(scene.render(target), G)
    T = G @ pose_to_matrix(np.array([[-0.01, 0.01, 0.0, 0.0, 0.0, 0.01]]))
    from latent_vs.geometry import se3_exp
    for _ in range(150):
        T = T @ se3_exp(law.step(scene.render(T[0])[None], None, np.array([0])))
    t_err, _ = error_metrics(target, T)
    assert t_err[0] < 0.003


def test_missing_model_names_the_train_command(tmp_path):
    from latent_vs.control.pbvs_cnn import make
    with pytest.raises(UserError, match="latent-vs train .*train_pbvs_cnn_cpu.yaml"):
        make(str(tmp_path / "nowhere"))


def test_wrong_kind_is_refused(tmp_path, linear_pbvs_cnn_model):
    from latent_vs.control.aevs import make as make_aevs
    with pytest.raises(UserError, match="kind"):
        make_aevs(linear_pbvs_cnn_model)
