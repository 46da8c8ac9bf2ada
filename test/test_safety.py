"""Safety rules at the pure level (the same rules are tested over DDS in test_ros_controller.py)."""
import numpy as np
import pytest

from latent_vs.safety import Limits, input_problem, is_stale, limit_twist


def test_limits_never_exceeded_and_direction_kept():
    rng = np.random.default_rng(0)
    lim = Limits(max_linear_speed=0.05, max_angular_speed=0.2)
    for _ in range(2000):
        v = rng.normal(size=6) * rng.choice([1e-3, 0.1, 10.0, 1e4])
        out, scale = limit_twist(v, lim)
        assert np.linalg.norm(out[:3]) <= lim.max_linear_speed
        assert np.linalg.norm(out[3:]) <= lim.max_angular_speed
        # the whole twist is scaled by one factor: same direction
        np.testing.assert_allclose(out, v * scale, rtol=1e-9, atol=1e-15)
        assert 0 < scale <= 1


def test_twist_within_limits_is_unchanged():
    lim = Limits(0.1, 0.5)
    v = np.array([0.01, -0.02, 0.03, 0.1, 0.0, -0.2])
    out, scale = limit_twist(v, lim)
    assert scale == 1.0
    np.testing.assert_array_equal(out, v)


def test_one_violated_limit_scales_both_parts():
    out, scale = limit_twist(np.array([0.0, 0.0, 0.01, 2.0, 0.0, 0.0]), Limits(0.1, 0.5))
    assert scale == pytest.approx(0.25)
    np.testing.assert_allclose(out, [0, 0, 0.0025, 0.5, 0, 0])


def test_non_finite_twist_is_refused():
    with pytest.raises(ValueError, match="non-finite"):
        limit_twist(np.array([np.nan, 0, 0, 0, 0, 0]), Limits())


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_limits_must_be_positive_and_finite(bad):
    with pytest.raises(ValueError, match="max_linear_speed"):
        Limits(max_linear_speed=bad)


def test_input_problems_are_named():
    assert input_problem(np.zeros(4, np.float32), (4,)) is None
    assert "non-finite" in input_problem(np.array([0.0, np.inf]), None)
    assert "non-finite" in input_problem(np.array([np.nan, 1.0]), None)
    assert "shape (3,), expected (4,)" in input_problem(np.zeros(3), (4,))


def test_staleness():
    assert not is_stale(10.0, 10.4, 0.5)
    assert is_stale(10.0, 10.6, 0.5)
