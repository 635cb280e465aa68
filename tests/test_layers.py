"""Layers and Network: closed forms, hand-computed spike trains, sparse vs
dense equivalence, state isolation, recording, memory layout and validation."""
import numpy as np
import pytest
import scipy.sparse as sp

from snn_core.layers import LIF, Linear, Readout, SparseLinear
from snn_core.network import Network, mlp
from snn_core.neurons import LIFParams, lif_step, readout_step

F32 = np.float32


def as_input(a, dtype=F32):
    return np.ascontiguousarray(a, dtype=dtype)


def constant_input(I, T):
    """(T, batch, n) array repeating the (batch, n) current I at every step."""
    return np.repeat(I[None], T, axis=0)


def closed_form_u(v0, I, T, p):
    """Euler recurrence with no reset: u[t] = v_rest + (v0 - v_rest) a^(t+1) + c I (1 - a^(t+1)) / (1 - a)."""
    a = 1.0 - p.dt / p.tau_m
    c = p.R * p.dt / p.tau_m
    t = np.arange(T, dtype=np.float64)[:, None, None]
    return p.v_rest + (v0 - p.v_rest) * a ** (t + 1) + c * I * (1 - a ** (t + 1)) / (1 - a)


# --------------------------------------------------------------------------
# LIF dynamics
# --------------------------------------------------------------------------
@pytest.mark.parametrize("tau_m, dt, R, v_rest", [(2.0, 1.0, 1.0, 0.0), (10.0, 1.0, 2.5, -0.3),
                                                  (5.0, 0.25, 0.7, 0.4), (3.0, 2.9, 1.0, 0.0)])
def test_lif_closed_form_constant_current(tau_m, dt, R, v_rest):
    rng = np.random.default_rng(0)
    T, B, n = 25, 3, 4
    p = LIFParams(tau_m=tau_m, dt=dt, R=R, v_rest=v_rest, v_th=1e9, reset="hard")
    I = rng.normal(size=(B, n))
    v0 = rng.normal(size=(B, n))
    expected = closed_form_u(v0, I, T, p)

    layer = LIF(n, p, dtype=np.float64)
    out = layer.forward(as_input(constant_input(I, T), np.float64), record=True, v0=v0)
    np.testing.assert_array_equal(out, 0.0)  # threshold never reached
    np.testing.assert_allclose(layer.recorded["u"], expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.recorded["v"], expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.v_last, expected[-1], rtol=1e-10, atol=1e-12)

    # float32 layer: same values to float32 accuracy
    layer32 = LIF(n, p)
    layer32.forward(as_input(constant_input(I, T)), record=True, v0=v0.astype(F32))
    np.testing.assert_allclose(layer32.recorded["u"], expected, rtol=2e-5, atol=2e-5)

    # the pure NumPy step
    v = v0.copy()
    for t in range(T):
        u, s, v = lif_step(v, I, p)
        np.testing.assert_allclose(u, expected[t], rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(s, 0.0)


def test_lif_closed_form_default_v0_is_v_rest():
    p = LIFParams(tau_m=4.0, v_rest=0.25, v_th=1e9)
    I = np.array([[0.5, -1.0]])
    layer = LIF(2, p, dtype=np.float64)
    layer.forward(constant_input(I, 6).astype(np.float64), record=True)
    expected = closed_form_u(np.full_like(I, 0.25), I, 6, p)
    np.testing.assert_allclose(layer.recorded["u"], expected, rtol=1e-12)


# Default LIFParams: tau_m = 2, dt = 1, R = 1 -> alpha = 0.5, c = 0.5, v_th = 1, v_reset = v_rest = 0.
# Hand computation for I = 1.8 (c I = 0.9):
#   hard:  u = 0.9 (0), 0.45+0.9=1.35 (1 -> v=0), 0.9 (0), 1.35 (1), ...            -> 0 1 0 1 0 1 0 1
#   soft:  u = 0.9 (0), 1.35 (1 -> v=0.35), 0.175+0.9=1.075 (1 -> v=0.075),
#          0.0375+0.9=0.9375 (0), 0.46875+0.9=1.36875 (1 -> v=0.36875),
#          0.184375+0.9=1.084375 (1 -> v=0.084375), 0.0421875+0.9=0.9421875 (0),
#          0.47109375+0.9=1.37109375 (1)                                             -> 0 1 1 0 1 1 0 1
#   none:  u = 0.9, 1.35, 1.575, 1.6875, ...                                         -> 0 1 1 1 1 1 1 1
# For I = 3 (c I = 1.5 >= 1 from rest) every reset mode spikes at every step.
# Hard reset to v_reset = -0.5 with I = 1.8: u = 0.9 (0), 1.35 (1 -> -0.5), -0.25+0.9=0.65 (0),
#   0.325+0.9=1.225 (1 -> -0.5), 0.65 (0), 1.225 (1), ...
HAND = [
    ("hard", 0.0, 1.8, [0, 1, 0, 1, 0, 1, 0, 1], [0.9, 1.35, 0.9, 1.35, 0.9, 1.35, 0.9, 1.35]),
    ("soft", 0.0, 1.8, [0, 1, 1, 0, 1, 1, 0, 1],
     [0.9, 1.35, 1.075, 0.9375, 1.36875, 1.084375, 0.9421875, 1.37109375]),
    ("none", 0.0, 1.8, [0, 1, 1, 1, 1, 1, 1, 1], [0.9, 1.35, 1.575, 1.6875, 1.74375, 1.771875, 1.7859375, 1.79296875]),
    ("hard", 0.0, 3.0, [1] * 8, [1.5] * 8),
    ("soft", 0.0, 3.0, [1] * 8, [1.5, 1.75, 1.875, 1.9375, 1.96875, 1.984375, 1.9921875, 1.99609375]),
    ("none", 0.0, 3.0, [1] * 8, [1.5, 2.25, 2.625, 2.8125, 2.90625, 2.953125, 2.9765625, 2.98828125]),
    ("hard", -0.5, 1.8, [0, 1, 0, 1, 0, 1, 0, 1], [0.9, 1.35, 0.65, 1.225, 0.65, 1.225, 0.65, 1.225]),
]


@pytest.mark.parametrize("reset, v_reset, I, spikes, u", HAND)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lif_hand_computed_spike_train(reset, v_reset, I, spikes, u, dtype):
    p = LIFParams(reset=reset, v_reset=v_reset)
    assert p.alpha == 0.5 and p.c == 0.5
    layer = LIF(1, p, dtype=dtype)
    x = np.full((8, 2, 1), I, dtype)
    out = layer.forward(x, record=True)
    assert out.dtype == dtype and out.shape == (8, 2, 1)
    for b in range(2):
        np.testing.assert_array_equal(out[:, b, 0], spikes)
        np.testing.assert_allclose(layer.recorded["u"][:, b, 0], u, rtol=1e-6)
    # the pure NumPy step gives the same train
    v = np.zeros((1, 1))
    got = []
    for t in range(8):
        uu, s, v = lif_step(v, np.full((1, 1), I), p)
        got.append(int(s[0, 0]))
        assert uu[0, 0] == pytest.approx(u[t], rel=1e-12)
    assert got == spikes


@pytest.mark.parametrize("reset", ["hard", "soft", "none"])
def test_recorded_v_is_post_reset(reset):
    p = LIFParams(reset=reset, v_reset=-0.2, v_th=0.8)
    layer = LIF(5, p)
    x = np.random.default_rng(1).normal(1.0, 1.0, size=(20, 3, 5)).astype(F32)
    s = layer.forward(x, record=True)
    u, v = layer.recorded["u"], layer.recorded["v"]
    assert s.sum() > 0
    if reset == "hard":
        expected_v = np.where(s == 1, -0.2, u)
    elif reset == "soft":
        expected_v = u - 0.8 * s
    else:
        expected_v = u
    np.testing.assert_allclose(v, expected_v, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(s, (u >= F32(0.8)).astype(F32))
    np.testing.assert_allclose(layer.v_last, v[-1], rtol=1e-6)
    # u[t] follows from v[t-1]
    np.testing.assert_allclose(u[1:], 0.5 * v[:-1] + 0.5 * x[1:], rtol=1e-5, atol=1e-6)


def test_from_decay():
    p = LIFParams.from_decay(0.9)
    assert p.alpha == pytest.approx(0.9, abs=1e-12)
    assert p.c == pytest.approx(1.0, abs=1e-12)
    p2 = LIFParams.from_decay(0.75, dt=0.5, v_th=2.0, reset="soft")
    assert p2.alpha == pytest.approx(0.75) and p2.c == pytest.approx(1.0)
    assert p2.dt == 0.5 and p2.v_th == 2.0 and p2.reset == "soft"
    p0 = LIFParams.from_decay(0.0)
    assert p0.alpha == pytest.approx(0.0) and p0.c == pytest.approx(1.0)
    # v = beta v + I
    layer = LIF(1, LIFParams.from_decay(0.9, v_th=1e9), dtype=np.float64)
    layer.forward(np.ones((4, 1, 1)), record=True)
    np.testing.assert_allclose(layer.recorded["u"][:, 0, 0], [1, 1.9, 2.71, 3.439], rtol=1e-12)
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="beta"):
            LIFParams.from_decay(bad)


def test_default_params_documented():
    p = LIFParams()
    assert (p.v_th, p.v_rest, p.v_reset, p.R, p.tau_m, p.dt) == (1.0, 0.0, 0.0, 1.0, 2.0, 1.0)
    assert p.alpha == 0.5 and p.c == 0.5 and p.reset == "hard"


@pytest.mark.parametrize("params", [LIFParams(), LIFParams(tau_m=7.0, dt=0.5, R=3.0, v_rest=-0.4)])
def test_readout_is_lif_without_threshold(params):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12, 4, 6)).astype(F32)
    v0 = rng.normal(size=(4, 6)).astype(F32)
    ro = Readout(6, params)
    y = ro.forward(x, v0=v0)
    lif_none = LIF(6, LIFParams(**{**params.__dict__, "reset": "none"}))
    lif_none.forward(x, record=True, v0=v0)
    np.testing.assert_allclose(y, lif_none.recorded["u"], rtol=1e-6, atol=1e-6)
    lif_inf = LIF(6, LIFParams(**{**params.__dict__, "v_th": 1e30}))
    lif_inf.forward(x, record=True, v0=v0)
    np.testing.assert_allclose(y, lif_inf.recorded["u"], rtol=1e-6, atol=1e-6)
    # and the pure step
    v = v0.astype(np.float64)
    for t in range(12):
        v = readout_step(v, x[t].astype(np.float64), params)
        np.testing.assert_allclose(y[t], v, rtol=1e-5, atol=1e-5)
    # no state carried: default start is v_rest at each call
    y2 = ro.forward(x)
    y3 = Readout(6, params).forward(x)
    np.testing.assert_array_equal(y2, y3)


@pytest.mark.parametrize("reset", ["hard", "soft", "none"])
@pytest.mark.parametrize("surrogate", ["sigmoid", "arctan"])
def test_lif_backward_matches_finite_differences_in_smooth_mode(reset, surrogate):
    # spike_fn="smooth" makes the forward differentiable with derivative = surrogate,
    # so the hand-written BPTT must equal central differences (float64)
    rng = np.random.default_rng(12)
    p = LIFParams(tau_m=3.0, reset=reset, v_reset=-0.1, surrogate=surrogate, spike_fn="smooth")
    layer = LIF(3, p, dtype=np.float64)
    x = rng.normal(1.0, 1.0, size=(6, 2, 3))
    wts = rng.normal(size=(6, 2, 3))

    def loss(xx):
        return float(np.sum(wts * layer.forward(xx)))

    loss(x)
    g = layer.backward(wts.copy())
    h = 1e-6
    fd = np.empty_like(x)
    for idx in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        fd[idx] = (loss(xp) - loss(xm)) / (2 * h)
    assert np.linalg.norm(g - fd) / np.linalg.norm(fd) < 1e-6


def test_readout_backward_matches_finite_differences():
    rng = np.random.default_rng(13)
    layer = Readout(2, LIFParams(tau_m=4.0, R=1.5, v_rest=0.2), dtype=np.float64)
    x = rng.normal(size=(5, 3, 2))
    wts = rng.normal(size=(5, 3, 2))
    layer.forward(x)
    g = layer.backward(wts.copy())
    h = 1e-6
    fd = np.empty_like(x)
    for idx in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        fd[idx] = (np.sum(wts * layer.forward(xp)) - np.sum(wts * layer.forward(xm))) / (2 * h)
    assert np.linalg.norm(g - fd) / np.linalg.norm(fd) < 1e-7


# --------------------------------------------------------------------------
# SparseLinear vs dense
# --------------------------------------------------------------------------
def _sparse_and_dense(rng, n_in=13, n_out=9, density=0.3, explicit_zeros=0, spike_input=None):
    W = sp.random(n_out, n_in, density=density, format="csr", dtype=np.float64, random_state=rng)
    W.data = rng.normal(size=W.nnz)
    if explicit_zeros:
        W.data[:explicit_zeros] = 0.0
    W = W.astype(F32)
    dense = W.toarray()
    bias = rng.normal(size=n_out).astype(F32)
    sl = SparseLinear(n_in, n_out, weight=W.copy())
    sl.spike_input = spike_input
    sl.bias.value[:] = bias
    dl = Linear(n_in, n_out, weight=dense.copy())
    dl.bias.value[:] = bias
    return W, dense, bias, sl, dl


def _layer_input(rng, kind, shape):
    if kind == "float":
        return rng.normal(size=shape).astype(F32)
    # spikes: some inputs silent, some rare, some frequent
    rates = rng.choice([0.0, 0.02, 0.3, 0.9], size=shape[-1])
    return (rng.random(shape) < rates).astype(F32)


# SparseLinear has a float path and a spike-driven path (0/1 inputs, packed);
# spike_input None chooses automatically, True forces packing, False forbids it
PATHS = [("float", None), ("spikes", None), ("spikes", True), ("spikes", False), ("float", True)]


@pytest.mark.parametrize("kind, spike_input", PATHS)
@pytest.mark.parametrize("density", [0.05, 0.3, 1.0])
def test_sparse_linear_forward_equals_dense(kind, spike_input, density):
    rng = np.random.default_rng(3)
    W, dense, bias, sl, dl = _sparse_and_dense(rng, density=density, spike_input=spike_input)
    x = _layer_input(rng, kind, (5, 4, 13))
    expected = np.einsum("oi,tbi->tbo", np.asarray(W.todense(), np.float64), x.astype(np.float64)) + bias
    y = sl.forward(x)
    assert y.shape == (5, 4, 9) and y.dtype == F32
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dl.forward(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind, spike_input", PATHS)
@pytest.mark.parametrize("density", [0.05, 0.3, 1.0])
def test_sparse_linear_gradients_equal_dense_at_mask(kind, spike_input, density):
    rng = np.random.default_rng(4)
    n_zero = 3 if density > 0.1 else 1
    W, dense, bias, sl, dl = _sparse_and_dense(rng, density=density, explicit_zeros=n_zero, spike_input=spike_input)
    x = _layer_input(rng, kind, (6, 3, 13))
    if kind == "spikes":
        x[:, :, 0] = 1.0  # make sure the explicit zeros below see some input
    gy = rng.normal(size=(6, 3, 9)).astype(F32)
    gy[:, :, 1] = 0.0  # an output with no gradient
    sl.forward(x)
    dl.forward(x)
    gx_s = sl.backward(gy)
    gx_d = dl.backward(gy)
    rows = np.repeat(np.arange(9), np.diff(sl.weight.indptr))
    cols = sl.weight.indices
    assert sl.weight_param.grad.shape == (sl.nnz,) == (W.nnz,)
    np.testing.assert_allclose(sl.weight_param.grad, dl.weight_param.grad[rows, cols], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sl.bias.grad, dl.bias.grad, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx_s, gx_d, rtol=1e-5, atol=1e-5)
    # independent check of the dense gradient itself
    g64 = np.einsum("tbo,tbi->oi", gy.astype(np.float64), x.astype(np.float64))
    np.testing.assert_allclose(dl.weight_param.grad, g64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sl.bias.grad, gy.sum(axis=(0, 1)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx_s, np.einsum("tbo,oi->tbi", gy.astype(np.float64), dense), rtol=1e-5, atol=1e-5)
    # the explicit zeros are connections and do get a gradient
    zero_pos = np.flatnonzero(sl.weight.data == 0)
    assert len(zero_pos) == n_zero
    np.testing.assert_allclose(sl.weight_param.grad[zero_pos], g64[rows[zero_pos], cols[zero_pos]], rtol=1e-5,
                               atol=1e-5)

    # gradients accumulate until zero_grad
    sl.forward(x)
    sl.backward(gy)
    np.testing.assert_allclose(sl.weight_param.grad, 2 * g64[rows, cols], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sl.bias.grad, 2 * gy.sum(axis=(0, 1)), rtol=1e-5, atol=1e-5)
    sl.weight_param.zero_grad()
    sl.bias.zero_grad()
    sl.forward(x)
    sl.backward(gy)
    np.testing.assert_allclose(sl.weight_param.grad, g64[rows, cols], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sl.bias.grad, gy.sum(axis=(0, 1)), rtol=1e-5, atol=1e-5)

    # the dense gradient, only on request
    sl.retain_output_grad = True
    sl.forward(x)
    sl.backward(gy)
    np.testing.assert_allclose(sl.dense_weight_grad(), g64, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="retain_output_grad"):
        sl.dense_weight_grad()  # released after use


@pytest.mark.parametrize("spike_input", [None, True])
def test_sparse_linear_backward_uses_latest_forward(spike_input):
    # scratch buffers are reused between calls: backward must see the last forward's input
    rng = np.random.default_rng(14)
    sl = SparseLinear(30, 20, density=0.5, seed=0)
    sl.spike_input = spike_input
    x1 = _layer_input(rng, "spikes", (4, 3, 30))
    x2 = _layer_input(rng, "spikes", (4, 3, 30))
    x3 = _layer_input(rng, "spikes", (7, 2, 30))  # another shape
    gy = rng.normal(size=(4, 3, 20)).astype(F32)
    fresh = SparseLinear(30, 20, density=0.5, seed=0)
    fresh.forward(x2)
    g_ref = fresh.backward(gy).copy()
    w_ref = fresh.weight_param.grad.copy()
    sl.forward(x1)
    sl.forward(x3)
    y2 = sl.forward(x2).copy()
    np.testing.assert_array_equal(y2, fresh.forward(x2))
    g = sl.backward(gy)
    np.testing.assert_allclose(g, g_ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sl.weight_param.grad, w_ref, rtol=1e-6, atol=1e-6)
    # a float input after spike inputs, and spikes again
    xf = _layer_input(rng, "float", (4, 3, 30))
    dense = sl.weight.toarray().astype(np.float64)
    np.testing.assert_allclose(sl.forward(xf), xf @ dense.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sl.forward(x1), x1 @ dense.T, rtol=1e-5, atol=1e-5)


def test_sparse_linear_never_allocates_dense_gradient():
    sl = SparseLinear(400, 300, density=0.01, seed=0)
    assert sl.nnz == 1200
    assert sl.weight_param.value is sl.weight.data
    assert sl.weight_param.grad.shape == (sl.nnz,)
    x = np.random.default_rng(0).random((3, 2, 400)).astype(F32)
    sl.forward(x)
    sl.backward(np.ones((3, 2, 300), F32))
    assert sl.weight_param.grad.shape == (sl.nnz,)
    for p in sl.parameters():
        assert p.grad.size <= max(sl.nnz, 300)


@pytest.mark.parametrize("spike_input", [None, True])
def test_sparse_linear_explicit_zeros_stay_connections(spike_input):
    W = sp.csr_matrix((np.array([0.0, 2.0, 0.0], F32), np.array([0, 2, 1], np.int32), np.array([0, 2, 3], np.int32)),
                      shape=(2, 3))
    sl = SparseLinear(3, 2, weight=W, bias=False)
    sl.spike_input = spike_input
    assert sl.nnz == 3 and sl.density == pytest.approx(0.5)
    np.testing.assert_array_equal(sl.weight.indices, [0, 2, 1])
    x = np.ones((1, 1, 3), F32)
    np.testing.assert_allclose(sl.forward(x)[0, 0], [2.0, 0.0])
    g = sl.backward(np.ones((1, 1, 2), F32))
    np.testing.assert_allclose(sl.weight_param.grad, [1.0, 1.0, 1.0])
    np.testing.assert_allclose(g[0, 0], [0.0, 0.0, 2.0])
    # a dense array: zeros are *not* connections there
    sd = SparseLinear(3, 2, weight=np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 3.0]]))
    assert sd.nnz == 2


def test_sparse_linear_random_init():
    sl = SparseLinear(50, 40, density=0.1, seed=1)
    assert sl.nnz == 200 and sl.density == pytest.approx(0.1)
    fan_in = np.diff(sl.weight.indptr)
    bound = np.repeat(np.sqrt(3.0 / np.maximum(fan_in, 1)), fan_in)
    assert np.all(np.abs(sl.weight.data) <= bound + 1e-6)
    np.testing.assert_array_equal(sl.bias.value, 0)
    assert sl.bias.decay is False and sl.weight_param.decay is True
    sl2 = SparseLinear(50, 40, density=0.1, seed=1)
    np.testing.assert_array_equal(sl.weight.indices, sl2.weight.indices)
    np.testing.assert_array_equal(sl.weight.data, sl2.weight.data)


def test_first_layer_returns_no_input_grad():
    net = Network([SparseLinear(4, 3, seed=0), LIF(3), Linear(3, 2, seed=0), Readout(2)])
    assert net.layers[0].need_input_grad is False
    assert all(layer.need_input_grad for layer in net.layers[1:])
    x = np.ones((2, 1, 4), F32)
    net.forward(x)
    assert net.layers[0].backward(np.ones((2, 1, 3), F32)) is None


# --------------------------------------------------------------------------
# state isolation, recording, layouts
# --------------------------------------------------------------------------
def _x(rng, T=8, B=5, n=20, p=0.3):
    return (rng.random((T, B, n)) < p).astype(F32)


@pytest.mark.parametrize("output", ["readout", "lif"])
def test_same_seed_same_network(output):
    rng = np.random.default_rng(5)
    x = _x(rng)
    a = mlp([20, 30, 4], density=0.4, seed=7, output=output, gain=3.0)
    b = mlp([20, 30, 4], density=0.4, seed=7, output=output, gain=3.0)
    c = mlp([20, 30, 4], density=0.4, seed=8, output=output, gain=3.0)
    ya, yb, yc = a.forward(x), b.forward(x), c.forward(x)
    np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a.layers[0].weight.data, c.layers[0].weight.data)
    if output == "readout":
        assert not np.array_equal(ya, yc)


@pytest.mark.parametrize("sparse", [True, False])
def test_no_state_leak_between_calls_or_networks(sparse):
    rng = np.random.default_rng(6)
    x1, x2 = _x(rng), _x(rng)
    hidden = LIFParams(v_th=0.5, reset="soft")
    A = mlp([20, 30, 4], density=0.5, seed=1, hidden=hidden, sparse=sparse, gain=3.0)
    B = mlp([20, 30, 4], density=0.5, seed=2, hidden=hidden, sparse=sparse, gain=3.0)
    yb1 = B.forward(x1).copy()
    A.forward(x2)
    A.forward(x1)
    yb2 = B.forward(x1)
    np.testing.assert_array_equal(yb1, yb2)
    # same input twice, a different batch in between
    B.forward(x2)
    np.testing.assert_array_equal(B.forward(x1), yb1)
    # the hidden layer did spike, so there was state that could have leaked
    B.forward(x1, record=True)
    assert B.recorded["lif1"]["spikes"].sum() > 0
    assert np.any(B.layers[1].v_last != 0)


def test_v_last_does_not_feed_next_call():
    rng = np.random.default_rng(7)
    p = LIFParams(v_th=0.7, reset="soft", v_rest=0.1)
    layer = LIF(10, p)
    x1 = rng.normal(1.0, 1.0, size=(6, 3, 10)).astype(F32)
    x2 = rng.normal(0.3, 1.0, size=(6, 3, 10)).astype(F32)
    layer.forward(x1, record=True)
    assert np.any(np.abs(layer.v_last - 0.1) > 1e-3)
    y = layer.forward(x2, record=True)
    u_after = layer.recorded["u"].copy()
    fresh = LIF(10, p)
    np.testing.assert_array_equal(y, fresh.forward(x2, record=True))
    np.testing.assert_array_equal(u_after, fresh.recorded["u"])
    # and the first step starts from v_rest
    np.testing.assert_allclose(u_after[0], 0.5 * 0.1 + 0.5 * 0.1 + 0.5 * x2[0], rtol=1e-6, atol=1e-6)
    # an explicit v0 is used only for that call
    v0 = np.full((3, 10), 0.6, F32)
    layer.forward(x2, record=True, v0=v0)
    np.testing.assert_allclose(layer.recorded["u"][0], 0.5 * 0.6 + 0.05 + 0.5 * x2[0], rtol=1e-6, atol=1e-6)
    layer.forward(x2, record=True)
    np.testing.assert_array_equal(layer.recorded["u"], u_after)


def test_record_shapes_and_spikes_equal_output():
    rng = np.random.default_rng(8)
    T, B = 7, 3
    net = mlp([20, 16, 12, 5], density=0.5, seed=3, output="lif", gain=3.0,
              hidden=LIFParams(v_th=0.5), readout=LIFParams(v_th=0.3))
    x = _x(rng, T=T, B=B, p=0.5)
    y_plain = net.forward(x).copy()
    y = net.forward(x, record=True)
    np.testing.assert_array_equal(y, y_plain)
    lif_names = [layer.name for layer in net.layers if isinstance(layer, LIF)]
    assert lif_names == ["lif1", "lif2", "lif3"]
    assert set(lif_names) <= set(net.recorded)
    sizes = {"lif1": 16, "lif2": 12, "lif3": 5}
    for name in lif_names:
        rec = net.recorded[name]
        for key in ("u", "v", "spikes"):
            assert rec[key].shape == (T, B, sizes[name]), (name, key, rec[key].shape)
    np.testing.assert_array_equal(net.recorded["lif3"]["spikes"], y)
    assert net.recorded["lif1"]["spikes"].sum() > 0
    # the hidden spikes recorded are what the next synapse received
    rec1 = net.recorded["lif1"]["spikes"].copy()
    np.testing.assert_array_equal(net.layers[1].forward(net.layers[0].forward(x)), rec1)
    # without record nothing is kept at network level
    net.forward(x)
    assert net.recorded == {}


def test_readout_record():
    net = mlp([20, 8, 3], seed=0)
    x = _x(np.random.default_rng(9))
    y = net.forward(x, record=True)
    np.testing.assert_array_equal(net.recorded["readout"]["u"], y)


@pytest.mark.parametrize("sparse", [True, False])
def test_feature_major_view_input_gives_identical_output(sparse):
    rng = np.random.default_rng(10)
    T, B, n = 9, 4, 20
    x = np.ascontiguousarray(rng.normal(0.5, 1.0, size=(T, B, n)).astype(F32))
    fm = np.ascontiguousarray(x.transpose(2, 0, 1)).transpose(1, 2, 0)  # same values, feature-major memory
    assert not fm.flags.c_contiguous and np.array_equal(fm, x)
    fortran = np.asfortranarray(x)
    strided = np.ascontiguousarray(np.repeat(x, 2, axis=0))[::2]
    net = mlp([n, 15, 3], density=0.5, seed=4, sparse=sparse, gain=2.0)
    y = net.forward(x).copy()
    for other in (fm, fortran, strided):
        np.testing.assert_array_equal(net.forward(other), y)
    # individual layers too, including a feature-major view as grad
    for layer in (LIF(n), Readout(n), Linear(n, 6, seed=0), SparseLinear(n, 6, density=0.3, seed=0)):
        y1 = layer.forward(x).copy()
        np.testing.assert_array_equal(layer.forward(fm), y1)
        g = rng.normal(size=y1.shape).astype(F32)
        gfm = np.ascontiguousarray(g.transpose(2, 0, 1)).transpose(1, 2, 0)
        layer.forward(x)
        gx1 = layer.backward(g)
        gx1 = None if gx1 is None else gx1.copy()
        layer.forward(x)
        gx2 = layer.backward(gfm)
        if gx1 is not None:
            np.testing.assert_array_equal(gx2, gx1)


def test_outputs_are_time_major_views_of_feature_major_buffers():
    net = mlp([20, 10, 3], seed=0)
    x = _x(np.random.default_rng(11))
    y = net.forward(x)
    assert y.shape == (8, 5, 3)
    # the underlying buffer is (features, T, batch) C-contiguous
    assert y.transpose(2, 0, 1).flags.c_contiguous


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------
def _layers():
    return [("lif", LIF(4, name="lif")), ("readout", Readout(4, name="readout")),
            ("linear", Linear(4, 3, seed=0, name="linear")),
            ("sparse_linear", SparseLinear(4, 3, density=0.5, seed=0, name="sparse_linear"))]


@pytest.mark.parametrize("idx", range(4))
def test_bad_input_errors_name_the_layer(idx):
    name, layer = _layers()[idx]
    with pytest.raises(ValueError, match=rf"{name} input.*shape"):
        layer.forward(np.zeros((3, 4), F32))
    with pytest.raises(ValueError, match=rf"{name} input.*4 features"):
        layer.forward(np.zeros((3, 2, 5), F32))
    with pytest.raises(TypeError, match=rf"{name} input.*dtype float32.*float64"):
        layer.forward(np.zeros((3, 2, 4), np.float64))
    with pytest.raises(TypeError, match=rf"{name} input.*numpy.ndarray"):
        layer.forward([[[0.0] * 4]])
    with pytest.raises(RuntimeError, match=rf"{name}.*backward called before forward"):
        layer.backward(np.zeros((3, 2, layer.out_features), F32))
    layer.forward(np.zeros((3, 2, 4), F32))
    with pytest.raises(ValueError, match=rf"{name} grad"):
        layer.backward(np.zeros((3, 2, layer.out_features + 1), F32))
    with pytest.raises(TypeError, match=rf"{name} grad"):
        layer.backward(np.zeros((3, 2, layer.out_features), np.float64))


def test_float64_layers_accept_float64_and_reject_float32():
    layer = LIF(3, dtype=np.float64)
    assert layer.forward(np.zeros((2, 1, 3))).dtype == np.float64
    with pytest.raises(TypeError, match="dtype"):
        layer.forward(np.zeros((2, 1, 3), F32))
    with pytest.raises(TypeError, match="dtype"):
        LIF(3, dtype=np.int32)
    with pytest.raises(TypeError, match="dtype"):
        Linear(3, 2, dtype=np.float16)


def test_v0_shape_checked():
    with pytest.raises(ValueError, match="v0"):
        LIF(3, name="lif").forward(np.zeros((2, 4, 3), F32), v0=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="v0"):
        Readout(3).forward(np.zeros((2, 4, 3), F32), v0=np.zeros(3))


def test_network_validation():
    with pytest.raises(ValueError, match=r"layers\[1\].*expects 5 inputs"):
        Network([Linear(3, 4, seed=0), LIF(5)])
    with pytest.raises(ValueError, match=r"layers\[2\]"):
        Network([Linear(3, 4, seed=0), LIF(4), SparseLinear(3, 2, seed=0)])
    with pytest.raises(ValueError, match="layers"):
        Network([])
    with pytest.raises(TypeError, match=r"layers\[1\]"):
        Network([Linear(3, 4, seed=0), "lif"])
    with pytest.raises(ValueError, match="sizes"):
        mlp([5])
    with pytest.raises(ValueError, match="output"):
        mlp([5, 3], output="softmax")
    with pytest.raises(ValueError, match="densities"):
        mlp([5, 4, 3], densities=[0.5])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_network_rejects_non_finite_input(bad):
    net = mlp([6, 5, 2], seed=0)
    x = np.zeros((3, 2, 6), F32)
    x[1, 1, 4] = bad
    with pytest.raises(ValueError, match="network input.*NaN/Inf"):
        net.forward(x)
    # a non-contiguous view is checked too
    fm = np.ascontiguousarray(x.transpose(2, 0, 1)).transpose(1, 2, 0)
    with pytest.raises(ValueError, match="network input"):
        net.forward(fm)


def test_spike_input_is_checked_by_the_packing_not_by_a_second_pass(monkeypatch):
    """A 0/1 input to a spike-packing first layer is verified while packing; anything else gets the full check."""
    import snn_core.network as network_module

    calls = []
    real = network_module.check_finite
    monkeypatch.setattr(network_module, "check_finite", lambda a, what: (calls.append(what), real(a, what)))
    net = mlp([6, 5, 2], seed=0)
    spikes = (np.arange(36).reshape(3, 2, 6) % 3 == 0).astype(F32)
    net.forward(spikes)
    assert calls == [] and net.layers[0].input_was_spikes
    currents = spikes * 0.5
    net.forward(currents)
    assert calls == ["network input"] and not net.layers[0].input_was_spikes
    bad = spikes.copy()
    bad[2, 1, 3] = np.nan
    with pytest.raises(ValueError, match="network input: contains 1 NaN/Inf"):
        net.forward(bad)
    np.testing.assert_array_equal(np.asarray(net.forward(spikes)), np.asarray(mlp([6, 5, 2], seed=0).forward(spikes)))


def test_non_finite_weights_rejected():
    W = sp.random(4, 5, density=0.5, format="csr", random_state=0).astype(F32)
    W.data[1] = np.nan
    with pytest.raises(ValueError, match=r"sparse_linear\.weight.*NaN/Inf"):
        SparseLinear(5, 4, weight=W)
    d = np.ones((4, 5))
    d[2, 3] = np.inf
    with pytest.raises(ValueError, match=r"linear\.weight.*NaN/Inf"):
        Linear(5, 4, weight=d)
    with pytest.raises(ValueError, match=r"fc\.weight.*NaN/Inf"):
        SparseLinear(5, 4, weight=d, name="fc")
    with pytest.raises(ValueError, match=r"linear\.weight.*shape"):
        Linear(5, 4, weight=np.ones((5, 4)))
    with pytest.raises(ValueError, match=r"weight.*shape"):
        SparseLinear(5, 4, weight=np.ones((5, 4)))


def test_network_rejects_bad_input_types():
    net = mlp([6, 5, 2], seed=0)
    with pytest.raises(TypeError, match="fc1 input.*numpy.ndarray"):
        net.forward([[[0.0] * 6]])
    with pytest.raises(TypeError, match="fc1 input.*dtype"):
        net.forward(np.zeros((2, 1, 6)))
    with pytest.raises(ValueError, match="fc1 input.*6 features"):
        net.forward(np.zeros((2, 1, 7), F32))


def test_default_layer_names_made_unique():
    net = Network([Linear(3, 4, seed=0), LIF(4), Linear(4, 2, seed=0), LIF(2)])
    names = [layer.name for layer in net.layers]
    assert len(set(names)) == 4
    net.forward(np.ones((3, 2, 3), F32), record=True)
    assert len(net.recorded) == 4  # every layer recorded under a distinct key
    assert sum("spikes" in rec for rec in net.recorded.values()) == 2  # the two LIF layers
    assert sum("current" in rec for rec in net.recorded.values()) == 2  # the two synaptic layers


def test_check_finite_identifies_parameter_after_renaming():
    # Network renames duplicate-named layers ("linear" twice -> "0_linear", "2_linear");
    # the error must still say *which* parameter holds the NaN.
    net = Network([Linear(3, 4, seed=0), LIF(4), Linear(4, 2, seed=0), LIF(2)])
    param_names = [p.name for p in net.parameters()]
    assert len(set(param_names)) == len(param_names), f"duplicate parameter names {param_names}"
    net.layers[2].weight_param.value[0, 0] = np.nan
    with pytest.raises(ValueError, match=net.layers[2].name):
        net.check_finite()


def test_network_check_finite_names_parameter():
    net = mlp([6, 5, 2], seed=0)
    net.check_finite()
    net.layers[0].weight_param.value[0] = np.inf
    with pytest.raises(ValueError, match=r"fc1\.weight"):
        net.check_finite()


@pytest.mark.parametrize("kwargs, match", [
    (dict(surrogate="gauss"), "surrogate"),
    (dict(reset="zero"), "reset"),
    (dict(spike_fn="step"), "spike_fn"),
    (dict(tau_m=0.0), "tau_m"),
    (dict(tau_m=-2.0), "tau_m"),
    (dict(tau_m=np.inf), "tau_m"),
    (dict(dt=0.0), "dt"),
    (dict(dt=-1.0), "dt"),
    (dict(dt=3.0, tau_m=2.0), "dt"),
    (dict(surrogate_param=0.0), "surrogate_param"),
    (dict(surrogate_param=-1.0), "surrogate_param"),
    (dict(v_th=np.nan), "v_th"),
    (dict(R=np.inf), "R"),
])
def test_lif_params_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LIFParams(**kwargs)


def test_lif_params_type_errors():
    with pytest.raises(TypeError, match="tau_m"):
        LIFParams(tau_m="2")
    with pytest.raises(TypeError, match="v_th"):
        LIFParams(v_th=None)
    with pytest.raises(TypeError, match="params"):
        LIF(3, params={"tau_m": 2.0})
    # dt == tau_m is allowed (alpha = 0)
    assert LIFParams(dt=2.0, tau_m=2.0).alpha == 0.0
