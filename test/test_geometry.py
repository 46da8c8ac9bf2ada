"""SE(3) helpers: round trips, identities and finite-difference checks (float64)."""
import numpy as np
import pytest

from latent_vs import geometry as g


def random_poses(n, seed=0, max_angle=np.pi - 1e-6):
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    return np.concatenate([rng.normal(scale=0.5, size=(n, 3)), axis * rng.uniform(0, max_angle, (n, 1))], 1)


def test_pose_matrix_round_trip_including_near_pi():
    r = random_poses(5000)
    r[:10, 3:] *= (np.pi - 1e-7) / np.linalg.norm(r[:10, 3:], axis=1, keepdims=True)  # θ ≈ π
    r[10:20, 3:] *= 1e-9  # θ ≈ 0
    assert np.abs(g.matrix_to_pose(g.pose_to_matrix(r)) - r).max() < 1e-6


def test_rotations_are_orthonormal():
    R = g.rotation_from_thetau(random_poses(100)[:, 3:])
    assert np.allclose(R @ np.swapaxes(R, 1, 2), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(R), 1.0)


def test_se3_exp_log_round_trip_and_inverse():
    rng = np.random.default_rng(1)
    tw = rng.normal(size=(500, 6))
    tw[:, 3:] *= 2.5 / np.maximum(np.linalg.norm(tw[:, 3:], axis=1, keepdims=True), 2.5)
    assert np.abs(g.se3_log(g.se3_exp(tw)) - tw).max() < 1e-9
    T = g.pose_to_matrix(random_poses(50))
    assert np.allclose(T @ g.inverse(T), np.eye(4), atol=1e-12)


def test_se3_exp_pure_translation_and_rotation():
    T = g.se3_exp(np.array([0.1, -0.2, 0.3, 0, 0, 0]))
    assert np.allclose(T[:3, 3], [0.1, -0.2, 0.3]) and np.allclose(T[:3, :3], np.eye(3))
    T = g.se3_exp(np.array([0, 0, 0, 0, 0, np.pi / 2]))
    assert np.allclose(T[:3, :3] @ [1, 0, 0], [0, 1, 0])


@pytest.mark.parametrize("seed", range(5))
def test_L_pose_matches_finite_differences(seed):
    """Eq. 5: d(Δr)/dt = L_r v for a twist v in the current camera frame."""
    T_goal = g.pose_to_matrix(random_poses(1, seed + 100)[0])
    T = g.pose_to_matrix(random_poses(1, seed, max_angle=3.0)[0])
    L = g.L_pose(g.pose_difference(T_goal, T))
    eps, J = 1e-6, np.zeros((6, 6))
    for i in range(6):
        v = np.zeros(6)
        v[i] = eps
        J[:, i] = (g.pose_difference(T_goal, T @ g.se3_exp(v)) - g.pose_difference(T_goal, T @ g.se3_exp(-v))) / (2 * eps)
    assert np.abs(J - L).max() < 1e-6


def test_L_thetau_leaves_thetau_invariant():
    tu = random_poses(100)[:, 3:]
    assert np.allclose((g.L_thetau(tu) @ tu[..., None])[..., 0], tu, atol=1e-9)


def test_se3_distance_eq8():
    a = np.zeros(6)
    b = np.array([0.3, 0.4, 0.0, 0.0, 0.0, 0.5])
    assert np.isclose(g.se3_distance(a, b, w_t=0.5, w_r=0.25), 0.5 / 0.5 + 0.5 / 0.25)
    assert np.isclose(g.se3_distance(b, b, 1, 1), 0)


def test_velocity_twist_matrix_moves_twists_between_frames():
    """A rigid motion seen in frame a equals the same motion seen in b, transformed by aV_b."""
    aTb = g.pose_to_matrix(random_poses(1, 7)[0])
    v_b = np.array([0.1, -0.05, 0.2, 0.3, -0.1, 0.2])
    eps = 1e-7
    # displacement of b for its own twist, expressed as a displacement of a (a rigidly attached)
    D_b = g.se3_exp(v_b, eps)
    D_a = aTb @ D_b @ g.inverse(aTb)
    assert np.allclose(g.se3_log(D_a) / eps, g.velocity_twist_matrix(aTb) @ v_b, atol=1e-5)


def test_rpy_to_matrix_yaw():
    T = g.rpy_to_matrix(1, 2, 3, 0, 0, np.pi / 2)
    assert np.allclose(T[:3, :3] @ [1, 0, 0], [0, 1, 0]) and np.allclose(T[:3, 3], [1, 2, 3])


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-7, 1e-5, 1e-3, 0.5, 2.0, 3.1])
def test_L_pose_blocks_are_rodrigues_and_L_thetau(angle):
    """L_pose computes both blocks from one [θu]x: they equal R(θu) and L_θu, also at the
    small-angle switches."""
    rng = np.random.default_rng(int(angle * 1e3) + 1)
    r = rng.normal(size=(50, 6))
    r[:, 3:] *= angle / np.linalg.norm(r[:, 3:], axis=1, keepdims=True)
    L = g.L_pose(r)
    np.testing.assert_allclose(L[:, :3, :3], g.rotation_from_thetau(r[:, 3:]), atol=1e-12)
    np.testing.assert_allclose(L[:, 3:, 3:], g.L_thetau(r[:, 3:]), atol=1e-12)
    assert not L[:, :3, 3:].any() and not L[:, 3:, :3].any()
