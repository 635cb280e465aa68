"""Surrogate derivatives: NumPy vs Numba, normalisation, primitives, validation.

Expected values come from the formulas in the module's documentation table,
re-implemented here independently of ``snn_core.surrogate``.
"""
import math

import numba
import numpy as np
import pytest
from scipy import integrate

from snn_core import surrogate as S
from snn_core.kernels.reference import smooth_spike_numpy
from snn_core.neurons import LIFParams

NAMES = ["rectangular", "triangle", "sigmoid", "arctan", "fast_sigmoid"]
DOCUMENTED_DEFAULTS = {"rectangular": 1.0, "triangle": 1.0, "sigmoid": 4.0, "arctan": 2.0, "fast_sigmoid": 25.0}


def documented(name, x, p):
    """sigma'(x) exactly as written in the docs table (independent re-implementation)."""
    x = np.asarray(x, np.float64)
    if name == "rectangular":
        return (1.0 / p) * (np.abs(x) < p / 2).astype(np.float64)
    if name == "triangle":
        return np.maximum(0.0, 1.0 / p - np.abs(x) / p ** 2)
    if name == "sigmoid":
        sig = 0.5 * (1.0 + np.tanh(0.5 * p * x))  # logistic, written differently on purpose
        return p * sig * (1.0 - sig)
    if name == "arctan":
        return (p / 2.0) / (1.0 + (np.pi / 2.0 * p * x) ** 2)
    if name == "fast_sigmoid":
        return 1.0 / (1.0 + p * np.abs(x)) ** 2
    raise AssertionError(name)


@numba.njit
def _grad_many(x, code, p):
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = S.surrogate_grad(x[i], code, p)
    return out


@numba.njit
def _smooth_many(x, code, p):
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = S.smooth_spike(x[i], code, p)
    return out


def _params(name):
    d = DOCUMENTED_DEFAULTS[name]
    return [d, 0.3 * d, 2.5 * d]


# --------------------------------------------------------------------------
# names, codes, defaults
# --------------------------------------------------------------------------
def test_registry_lists_exactly_the_documented_surrogates():
    assert sorted(S.SURROGATES) == sorted(NAMES)
    codes = [S.surrogate_code(n) for n in NAMES]
    assert len(set(codes)) == len(codes), "each surrogate needs its own kernel code"
    assert all(isinstance(c, int) for c in codes)


@pytest.mark.parametrize("name", NAMES)
def test_default_param_as_documented(name):
    assert S.default_param(name) == DOCUMENTED_DEFAULTS[name]
    # the default is what surrogate_numpy and LIFParams use when none is given
    x = np.linspace(-2, 2, 101)
    np.testing.assert_array_equal(S.surrogate_numpy(name, x), S.surrogate_numpy(name, x, DOCUMENTED_DEFAULTS[name]))
    assert LIFParams(surrogate=name).surrogate_p == DOCUMENTED_DEFAULTS[name]
    assert LIFParams(surrogate=name, surrogate_param=0.7).surrogate_p == 0.7


@pytest.mark.parametrize("name", NAMES)
def test_numpy_matches_documented_formula(name):
    x = np.linspace(-3, 3, 1201)
    for p in _params(name):
        got = S.surrogate_numpy(name, x, p)
        assert got.shape == x.shape
        np.testing.assert_allclose(got, documented(name, x, p), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_peak_value_at_threshold(name):
    # sigma'(0): 1/a, 1/g, k/4, alpha/2, 1 -- read off the docs table by hand
    expected_peak = {"rectangular": lambda p: 1 / p, "triangle": lambda p: 1 / p, "sigmoid": lambda p: p / 4,
                     "arctan": lambda p: p / 2, "fast_sigmoid": lambda p: 1.0}[name]
    for p in _params(name):
        assert S.surrogate_numpy(name, 0.0, p) == pytest.approx(expected_peak(p), rel=1e-12)
        # and it is the maximum, symmetric and non-negative
        pos = np.linspace(1e-3, 4, 400)
        x = np.concatenate([-pos[::-1], [0.0], pos])  # exactly symmetric grid
        y = S.surrogate_numpy(name, x, p)
        assert np.all(y >= 0)
        assert y.max() == pytest.approx(expected_peak(p), rel=1e-12)
        np.testing.assert_allclose(y, y[::-1], rtol=0, atol=1e-12 * expected_peak(p))


@pytest.mark.parametrize("name", NAMES)
def test_numba_surrogate_grad_equals_numpy(name):
    code = S.surrogate_code(name)
    # a grid that includes 0, the rectangle edges are avoided by a tiny offset
    x = np.linspace(-3, 3, 2001) + 1e-7
    for p in _params(name):
        got = _grad_many(x, code, float(p))
        np.testing.assert_allclose(got, S.surrogate_numpy(name, x, p), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_integral(name):
    for p in _params(name):
        f = lambda x: float(S.surrogate_numpy(name, x, p))  # noqa: E731
        if name in ("rectangular", "triangle"):
            # compact support: integrate over it, telling quad where the kinks are
            half = p / 2 if name == "rectangular" else p
            val, _ = integrate.quad(f, -2 * half, 2 * half, points=[-half, 0.0, half], limit=200)
        else:
            with np.errstate(over="ignore"):  # sigmoid: exp(-k x) overflows far in the tail (value still 0)
                val, _ = integrate.quad(f, -np.inf, np.inf, limit=400)
        expected = 2.0 / p if name == "fast_sigmoid" else 1.0
        assert val == pytest.approx(expected, rel=1e-6), (name, p, val)


@pytest.mark.parametrize("name", NAMES)
def test_smooth_spike_derivative_is_surrogate(name):
    code = S.surrogate_code(name)
    h = 1e-6
    for p in _params(name):
        x = np.linspace(-3 * p, 3 * p, 997)
        # kinks of the surrogate itself (where central differences are only O(h))
        kinks = {"rectangular": [-p / 2, p / 2], "triangle": [-p, 0.0, p], "fast_sigmoid": [0.0]}.get(name, [])
        for k in kinks:
            x = x[np.abs(x - k) > 10 * h]
        fd = (_smooth_many(x + h, code, float(p)) - _smooth_many(x - h, code, float(p))) / (2 * h)
        exact = _grad_many(x, code, float(p))
        np.testing.assert_allclose(fd, exact, rtol=1e-6, atol=1e-7 * max(1.0, exact.max()))


@pytest.mark.parametrize("name", NAMES)
def test_smooth_spike_is_monotone_and_centred(name):
    code = S.surrogate_code(name)
    for p in _params(name):
        x = np.concatenate([[-1e6], np.linspace(-50, 50, 5001), [1e6]])
        y = _smooth_many(x, code, float(p))
        assert np.all(np.diff(y) >= 0)
        assert _smooth_many(np.zeros(1), code, float(p))[0] == pytest.approx(0.5, abs=1e-15)
        lo, hi = y[0], y[-1]
        if name == "fast_sigmoid":
            # documented exception: the primitive spans only 0.5 -/+ 1/k
            assert lo > 0.5 - 1 / p - 1e-12 and hi < 0.5 + 1 / p + 1e-12
        else:
            assert lo == pytest.approx(0.0, abs=1e-5) and hi == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_smooth_spike_numpy_twin_matches_numba(name):
    code = S.surrogate_code(name)
    x = np.linspace(-3, 3, 1001)
    for p in _params(name):
        np.testing.assert_allclose(smooth_spike_numpy(x, name, p), _smooth_many(x, code, float(p)),
                                   rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_far_tails_are_finite_and_vanish(name):
    x = np.array([-1e4, -300.0, 300.0, 1e4])
    code = S.surrogate_code(name)
    p = DOCUMENTED_DEFAULTS[name]
    with np.errstate(over="ignore"):
        y = S.surrogate_numpy(name, x)
    assert np.all(np.isfinite(y)) and np.all(y < 1e-4)
    yn = _grad_many(x, code, p)
    assert np.all(np.isfinite(yn)) and np.all(yn < 1e-4)


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["gaussian", "Sigmoid", "", "fast-sigmoid"])
def test_unknown_name_raises(bad):
    with pytest.raises(ValueError, match="surrogate"):
        S.surrogate_code(bad)
    with pytest.raises(ValueError, match="surrogate"):
        S.default_param(bad)
    with pytest.raises(ValueError, match="surrogate"):
        S.surrogate_numpy(bad, np.zeros(3))
    with pytest.raises(ValueError, match="surrogate"):
        LIFParams(surrogate=bad)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [0.0, -1.0, -1e-12, math.nan])
def test_non_positive_param_raises(name, bad):
    with pytest.raises(ValueError, match="param"):
        S.surrogate_numpy(name, np.zeros(3), bad)
    with pytest.raises(ValueError, match="surrogate_param"):
        LIFParams(surrogate=name, surrogate_param=bad)


def test_infinite_param_rejected():
    # LIFParams requires a finite surrogate_param; surrogate_numpy should agree
    # (with p = inf, sigmoid/arctan/fast_sigmoid return NaN)
    for name in NAMES:
        with pytest.raises(ValueError, match="surrogate_param"):
            LIFParams(surrogate=name, surrogate_param=math.inf)
    for name in NAMES:
        with np.errstate(all="ignore"), pytest.raises(ValueError, match="param"):
            S.surrogate_numpy(name, np.array([0.0, 0.3]), math.inf)
