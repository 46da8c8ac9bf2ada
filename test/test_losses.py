"""Losses of the latent space (eq. 8-12): tiny cases worked out by hand, the zero case, backward."""
import math

import numpy as np
import pytest
import torch

from latent_vs import geometry
from latent_vs.learning.losses import (data_weights, loss_fit, loss_perturbation, loss_phi_se3, loss_psi_phi,
                                       se3_pair_distance, total_loss)


def test_eq8_by_hand():
    # b is 0.3 m along x and 90° about z from a: 0.3/0.3 + (π/2)/(π/2) = 2
    r_a = torch.zeros(1, 6)
    r_b = torch.tensor([[0.3, 0, 0, 0, 0, math.pi / 2]])
    d = se3_pair_distance(r_a, r_b, w_t=0.3, w_r=math.pi / 2)
    assert d.shape == (1, 1)
    assert d.item() == pytest.approx(2.0, abs=1e-6)


def test_eq8_matches_geometry_module():
    r = np.random.default_rng(1).normal(size=(9, 6)) * 0.6
    d = se3_pair_distance(torch.tensor(r), torch.tensor(r[:4]), 0.25, 0.8).numpy()
    ref = geometry.se3_distance(r[:, None], r[None, :4], 0.25, 0.8)
    np.testing.assert_allclose(d, ref, atol=1e-7)
    assert np.allclose(np.diag(d[:4]), 0, atol=1e-7)


def test_eq9_by_hand():
    z = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    d = torch.tensor([[0.0, 4.0], [4.0, 0.0]])
    # two off-diagonal pairs each (5 - 4)², averaged over B² = 4
    assert loss_phi_se3(z, d).item() == pytest.approx(0.5)
    # weighted (phi_train's goal row/column): pair terms 1 and 1 times weights 3 and 1, over 4
    w = torch.tensor([[1.0, 3.0], [1.0, 1.0]])
    assert loss_phi_se3(z, d, w).item() == pytest.approx(1.0)


def test_eq10_by_hand():
    z_r = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    z_I = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    # (|zI0-zr0| - 0)² = 1, (|zI0-zr1| - 5)² = (√20 - 5)², the others 0
    assert loss_psi_phi(z_I, z_r).item() == pytest.approx((1 + (math.sqrt(20) - 5) ** 2) / 4, rel=1e-6)
    assert loss_psi_phi(z_r, z_r).item() == 0.0


def test_eq11_by_hand():
    one = torch.tensor([[[0.0, 0.0], [3.0, 4.0]]])            # P = 1: 5 + 5, / 1
    assert loss_perturbation(one).item() == pytest.approx(10.0)
    two = torch.tensor([[[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]]])  # P = 2: four pairs at 5, / 4
    assert loss_perturbation(two).item() == pytest.approx(5.0)
    both = torch.cat([one[:, :1].repeat(1, 3, 1), two])          # a collapsed group (0) and 5
    assert loss_perturbation(both, "mean").item() == pytest.approx(2.5)
    assert loss_perturbation(both, "sum").item() == pytest.approx(5.0)


def _exact_batch(V=3, w_t=0.2):
    """Pure translations: d_SE(3) = |Δt| / w_t, so z = t / w_t (padded) has exact distances."""
    t = torch.tensor(np.random.default_rng(0).normal(size=(6, 3)) * 0.3, dtype=torch.float32)
    r = torch.cat([t, torch.zeros_like(t)], 1)
    z_r = torch.cat([t / w_t, torch.zeros(6, 29)], 1)
    d = se3_pair_distance(r, r, w_t, 1.0)
    return r, z_r, d, z_r.repeat_interleave(V, 0)


def test_exact_embedding_gives_zero_loss():
    _r, z_r, d, z_I = _exact_batch()
    L, parts = total_loss(z_r, d, z_I)
    assert L.item() == pytest.approx(0.0, abs=1e-10)
    assert parts["L_phi_se3"] == pytest.approx(0.0, abs=1e-10)


def test_backward_is_finite_and_pulls_images_to_poses():
    _r, z_r, d, z_I = _exact_batch()
    z_I = (z_I + 0.1 * torch.randn_like(z_I)).requires_grad_(True)
    z_r = z_r.clone().requires_grad_(True)
    L, parts = total_loss(z_r, d, z_I)
    L.backward()
    assert L.item() > 0 and parts["L_perturb"] > 0
    assert torch.isfinite(z_I.grad).all() and torch.isfinite(z_r.grad).all()
    assert z_I.grad.abs().sum() > 0
    # a small step against the gradient lowers the loss
    with torch.no_grad():
        L2, _ = total_loss(z_r - 1e-2 * z_r.grad, d, z_I - 1e-2 * z_I.grad)
    assert L2.item() < L.item()


def test_data_weights_are_mean_distances():
    r = np.array([[0, 0, 0, 0, 0, 0], [0.2, 0, 0, 0, 0, 0.5]], float)
    w_t, w_r = data_weights(r)
    assert w_t == pytest.approx(0.2) and w_r == pytest.approx(0.5)
    with pytest.raises(ValueError):
        data_weights(np.zeros((1, 6)))


def test_fit_term_by_hand_and_why_it_exists():
    z_r = torch.tensor([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0]])
    z_I = torch.tensor([[1.0, 0.0, 0.0], [3.0, 4.0, 0.0]])
    assert loss_fit(z_I, z_r).item() == pytest.approx(0.5)   # (1 + 0) / 2
    # image embeddings off the plane of the z_r: eq. 10 sees the offset only in its diagonal
    # (1/B of its terms) and to second order elsewhere; the fit term sees it fully
    g = torch.arange(4.0) * 3
    z_r = torch.stack([g.repeat(4), g.repeat_interleave(4), torch.zeros(16)], 1)
    off = z_r + torch.tensor([0.0, 0.0, 0.5])
    assert loss_psi_phi(off, z_r).item() < 0.1 * loss_fit(off, z_r).item()
    L, parts = total_loss(z_r, torch.cdist(z_r, z_r), off, fit_weight=1.0)
    assert parts["L_fit"] == pytest.approx(0.25) and L.item() == pytest.approx(parts["L_psi_phi"] + 0.25, rel=1e-5)


def test_goal_relative_term_by_hand():
    """mean ‖(z_I − z_I*) − (z_r − z_r*)‖² / (‖z_r − z_r*‖² + ε²), worked by hand; zero when
    the image errors equal the pose errors even if ψ is offset from φ by a constant."""
    from latent_vs.learning.losses import loss_goal_relative
    z_r = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    z_rg = torch.zeros(1, 2)
    z_I = torch.tensor([[3.0, 5.0], [1.0, 0.0]])      # errors (0, 1) and (1, 0)
    z_Ig = torch.zeros(1, 2)
    eps = 0.5
    expected = (1.0 / (25.0 + 0.25) + 1.0 / (0.0 + 0.25)) / 2
    assert loss_goal_relative(z_I, z_r, z_Ig, z_rg, eps).item() == pytest.approx(expected)
    offset = torch.tensor([[0.3, -0.7]])
    assert loss_goal_relative(z_r + offset, z_r, z_rg + offset, z_rg, eps).item() == pytest.approx(0.0, abs=1e-12)
    # a flat ψ near the goal costs ~1 however small the error: what loss_fit does not see
    small = torch.tensor([[1e-3, 0.0]])
    flat = loss_goal_relative(torch.zeros(1, 2), small, z_Ig, z_rg, eps=1e-4).item()
    assert flat == pytest.approx(1e-6 / (1e-6 + 1e-8)) and loss_fit(torch.zeros(1, 2), small).item() < 1e-5


def test_goal_relative_term_per_row_eps():
    """ε may be one per row (clean views get a small ε, perturbed ones the default): each row's
    term is its own ratio."""
    from latent_vs.learning.losses import loss_goal_relative
    z_r = torch.tensor([[1e-3, 0.0], [1e-3, 0.0]])
    z_I = torch.zeros(2, 2)                            # a flat ψ: error (1e-3, 0) on both rows
    zero = torch.zeros(1, 2)
    eps = torch.tensor([1e-4, 0.05])
    expected = (1e-6 / (1e-6 + 1e-8) + 1e-6 / (1e-6 + 0.0025)) / 2
    assert loss_goal_relative(z_I, z_r, zero, zero, eps).item() == pytest.approx(expected, rel=1e-5)
