"""Losses: values against direct NumPy formulas, gradients against central
finite differences (float64), predictions and label validation."""
import numpy as np
import pytest
from scipy.special import logsumexp

from snn_core import losses as L
from snn_core.kernels import reference as R

NAMES = ["ce_count", "ce_membrane", "mse_rate", "tet"]


def _ce(z, y):
    """Mean softmax cross-entropy written directly with scipy's logsumexp."""
    return float(np.mean(logsumexp(z, axis=1) - z[np.arange(len(y)), y]))


def expected_value(name, O, y, **kw):
    O = O.astype(np.float64)
    T, B, C = O.shape
    if name == "ce_count":
        return _ce(O.sum(axis=0), y)
    if name == "ce_membrane":
        return _ce(O.mean(axis=0), y)
    if name == "mse_rate":
        on, off = kw.get("on", 1.0), kw.get("off", 0.0)
        target = np.where(np.arange(C)[None, :] == y[:, None], on, off)
        return float(np.mean((O.mean(axis=0) - target) ** 2))
    if name == "tet":
        lam, phi = kw.get("lam", 1e-3), kw.get("phi", 1.0)
        per_t = [(1 - lam) * _ce(O[t], y) + lam * np.mean((O[t] - phi) ** 2) for t in range(T)]
        return float(np.mean(per_t))
    raise AssertionError(name)


def _case(seed, T=4, B=3, C=5, spikes=False):
    rng = np.random.default_rng(seed)
    if spikes:
        O = (rng.random((T, B, C)) < 0.4).astype(np.float64)
    else:
        O = rng.normal(size=(T, B, C))
    y = rng.integers(0, C, size=B)
    return O, y


KWARGS = {"ce_count": [{}], "ce_membrane": [{}], "mse_rate": [{}, {"on": 0.8, "off": 0.1}],
          "tet": [{}, {"lam": 0.3, "phi": 0.5}]}
CASES = [(n, kw) for n in NAMES for kw in KWARGS[n]]


@pytest.mark.parametrize("name, kw", CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_value_matches_direct_computation(name, kw, seed):
    O, y = _case(seed, spikes=(seed == 2))
    value, grad = L.get_loss(name)(O, y, **kw)
    assert isinstance(value, float)
    assert value == pytest.approx(expected_value(name, O, y, **kw), rel=1e-12, abs=1e-14)
    assert grad.shape == O.shape and grad.dtype == O.dtype


def test_hand_computed_values():
    # T=2, B=1, C=2: counts (2, 0) -> CE = log(1 + e^-2) for label 0, log(1 + e^2) for label 1
    O = np.array([[[1.0, 0.0]], [[1.0, 0.0]]])
    assert L.ce_count(O, np.array([0]))[0] == pytest.approx(np.log1p(np.exp(-2.0)))
    assert L.ce_count(O, np.array([1]))[0] == pytest.approx(np.log1p(np.exp(2.0)))
    # mean membrane (1, 0) -> log(1 + e^-1)
    assert L.ce_membrane(O, np.array([0]))[0] == pytest.approx(np.log1p(np.exp(-1.0)))
    # rates (1, 0) vs target (1, 0) -> 0; vs (0, 1) -> (1 + 1) / 2 = 1
    assert L.mse_rate(O, np.array([0]))[0] == pytest.approx(0.0)
    assert L.mse_rate(O, np.array([1]))[0] == pytest.approx(1.0)
    # equal logits: CE = log C whatever the label
    Z = np.zeros((3, 4, 7))
    for name in ("ce_count", "ce_membrane"):
        assert L.get_loss(name)(Z, np.arange(4))[0] == pytest.approx(np.log(7))
    # tet with lam=0 is the mean of per-step CE
    assert L.tet(Z, np.arange(4), lam=0.0)[0] == pytest.approx(np.log(7))
    # tet with lam=1 is the MSE to phi
    assert L.tet(Z, np.arange(4), lam=1.0, phi=0.5)[0] == pytest.approx(0.25)


@pytest.mark.parametrize("name, kw", CASES)
@pytest.mark.parametrize("seed", [3, 4])
def test_gradient_matches_finite_differences(name, kw, seed):
    O, y = _case(seed)
    fn = L.get_loss(name)
    _, g = fn(O, y, **kw)
    h = 1e-6
    fd = np.empty_like(O)
    for idx in np.ndindex(*O.shape):
        Op, Om = O.copy(), O.copy()
        Op[idx] += h
        Om[idx] -= h
        fd[idx] = (fn(Op, y, **kw)[0] - fn(Om, y, **kw)[0]) / (2 * h)
    err = np.linalg.norm(g - fd) / np.linalg.norm(fd)
    assert err < 1e-6, err


@pytest.mark.parametrize("name", NAMES)
def test_float32_output_gives_float32_grad(name):
    O, y = _case(5)
    v64, g64 = L.get_loss(name)(O, y)
    v32, g32 = L.get_loss(name)(O.astype(np.float32), y)
    assert g32.dtype == np.float32 and g32.shape == O.shape
    assert v32 == pytest.approx(v64, rel=1e-5)
    np.testing.assert_allclose(g32, g64, rtol=1e-5, atol=1e-7)
    # the gradient is a fresh writable array, not a broadcast view (ce_count / ce_membrane return it as a
    # (T, batch, classes) view of a fresh feature-major buffer, which the output layer takes without a copy)
    assert g32.flags.writeable and 0 not in g32.strides
    assert g32.flags.owndata or (g32.base.flags.owndata and g32.base.size == g32.size)


@pytest.mark.parametrize("name", NAMES)
def test_labels_accept_any_integer_dtype_and_lists(name):
    O, y = _case(6)
    ref = L.get_loss(name)(O, y)[0]
    assert L.get_loss(name)(O, y.astype(np.int32))[0] == ref
    assert L.get_loss(name)(O, y.astype(np.uint8))[0] == ref
    assert L.get_loss(name)(O, list(int(v) for v in y))[0] == ref


def test_predict():
    O = np.zeros((3, 4, 5), np.float32)
    O[:, 0, 2] = 1                     # class 2 every step
    O[0, 1, 4] = 1; O[1, 1, 1] = 1; O[2, 1, 1] = 1  # noqa: E702  count 2 for class 1
    O[0, 2, 3] = 5; O[1, 2, 0] = 2; O[2, 2, 0] = 2  # noqa: E702  sum 5 vs 4 -> class 3
    O[:, 3, :] = np.arange(5)[::-1]    # class 0
    np.testing.assert_array_equal(L.predict(O), [2, 1, 3, 0])
    # the predicted class has the lowest ce_count loss among all labels
    O2, _ = _case(7)
    for b, pred in enumerate(L.predict(O2)):
        vals = [L.ce_count(O2[:, b:b + 1], np.array([c]))[0] for c in range(O2.shape[2])]
        assert pred == int(np.argmin(vals))


@pytest.mark.parametrize("B", [1, 2, 37])
def test_count_correct_and_predict_of_a_networks_output(B):
    # a network's output is a (T, batch, classes) view of a feature-major buffer: one compiled call,
    # whose sums run step by step (NumPy's sum of a one-sample view adds pairwise, another rounding)
    rng = np.random.default_rng(B)
    fm = rng.normal(0, 1, (10, 8, B)).astype(np.float32)
    y = rng.integers(0, 10, B)
    O = fm.transpose(1, 2, 0)
    np.testing.assert_array_equal(L.predict(O), R.predict_time(fm))
    assert L.count_correct(O, y) == int(np.count_nonzero(R.predict_time(fm) == y))
    for other in (np.ascontiguousarray(O), O.astype(np.float64), (O > 0).astype(np.int8)):  # any layout, dtype
        assert L.count_correct(other, list(y)) == int(np.count_nonzero(L.predict(other) == y))
    spikes = (O > 0.5).astype(np.float32)  # counts are exact in any order: NumPy agrees
    np.testing.assert_array_equal(L.predict(spikes), spikes.sum(axis=0).argmax(axis=1))


@pytest.mark.parametrize("name", NAMES)
def test_bad_labels(name):
    fn = L.get_loss(name)
    O = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match=r"labels: must be in \[0, 4\), got range \[0, 4\]"):
        fn(O, np.array([0, 1, 4]))        # out of range (C = 4)
    with pytest.raises(ValueError, match=r"labels: must be in \[0, 4\), got range \[-1, 2\]"):
        fn(O, np.array([0, -1, 2]))       # negative
    with pytest.raises(ValueError, match=r"got range \[0, 300\]"):
        fn(O, np.array([0, 300, 2], np.uint16))  # unsigned
    with pytest.raises(ValueError, match="labels"):
        fn(O, np.array([0, 1]))           # wrong length
    with pytest.raises(ValueError, match="labels"):
        fn(O, np.array([[0, 1, 2]]))      # wrong shape
    with pytest.raises(TypeError, match="labels"):
        fn(O, np.array([0.0, 1.0, 2.0]))  # float labels
    with pytest.raises(ValueError, match="output"):
        fn(np.zeros((3, 4)), np.array([0, 1, 2]))  # output not (T, batch, classes)


def test_get_loss():
    for name in NAMES:
        assert L.get_loss(name) is getattr(L, name)
    with pytest.raises(ValueError, match="loss.*'hinge'"):
        L.get_loss("hinge")


@pytest.mark.parametrize("mean", [False, True])
@pytest.mark.parametrize("shape", [(8, 100, 10), (1, 1, 1), (3, 5, 2), (4, 7, 13), (6, 33, 9)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_kernel_matches_its_twin(shape, dtype, mean):
    # the compiled ce_count / ce_membrane against kernels.reference.softmax_ce_time: the same logits and
    # loss to float64 rounding, the same float32 gradient; from a network's feature-major output (no copy)
    # and from a C-contiguous (T, batch, classes) array
    T, B, C = shape
    rng = np.random.default_rng(T * 100 + B + C)
    O_fm = (rng.random((C, T, B)) < 0.3).astype(dtype) + rng.normal(0, 0.2, (C, T, B)).astype(dtype) * mean
    y = rng.integers(0, C, B)
    want_v, want_g = R.softmax_ce_time(O_fm, y, mean)
    loss = L.ce_membrane if mean else L.ce_count
    for O in (O_fm.transpose(1, 2, 0), np.ascontiguousarray(O_fm.transpose(1, 2, 0))):
        v, g = loss(O, y)
        assert v == pytest.approx(want_v, rel=1e-13, abs=1e-15)
        assert g.shape == (T, B, C) and g.dtype == dtype
        np.testing.assert_allclose(g.transpose(2, 0, 1), want_g, rtol=1e-6 if dtype == np.float32 else 1e-13,
                                   atol=1e-30)
