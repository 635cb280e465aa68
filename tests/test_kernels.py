"""Parity of every Numba kernel (kernels/cpu.py) with its NumPy twin
(kernels/reference.py), plus the CSR helpers of snn_core.sparse.

All kernels are called with float32 arrays and float32 scalars, exactly as the
layers and optimizers call them (so the signatures are the cached ones).
Each public kernel dispatches to a serial or a ``prange`` version depending on
the estimated work (``cpu.PARALLEL_MIN_NS``); the ``mode`` fixture forces
each of them in turn.
"""

import numpy as np
import pytest
import scipy.sparse as sp

from snn_core.kernels import cpu, reference as ref
from snn_core.neurons import LIFParams, NeuronKernelParams
from snn_core.sparse import (
    INDEX_DTYPE,
    canonical_csr,
    check_csr,
    random_connectivity,
    sample_row_columns,
    transpose_structure,
)
from snn_core.surrogate import SURROGATES, surrogate_code

F32 = np.float32
SEEDS = list(range(6))
SUR_NAMES = sorted(SURROGATES)
TINY = 1e-30


def relerr(a, b):
    """Norm-based relative error ||a - b|| / max(||b||, tiny), in float64."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), TINY)


def assert_close(a, b, tol=1e-5):
    e = relerr(a, b)
    assert e < tol, f"relative error {e:.3e} >= {tol}"


def _lif_case(seed, smooth):
    rng = np.random.default_rng(seed)
    F, T, B = (int(v) for v in rng.integers(1, 9, size=3))
    if seed == 0:
        F, T, B = 1, 1, 1  # degenerate shape
    sur_name = SUR_NAMES[seed % len(SUR_NAMES)]
    p = float(SURROGATES[sur_name][1] * rng.uniform(0.5, 2.0))
    alpha = rng.uniform(0.0, 0.99)
    v_rest = rng.uniform(-0.5, 0.5)
    sc = dict(alpha=F32(alpha), k0=F32((1 - alpha) * v_rest), c=F32(rng.uniform(0.1, 2.0)),
              v_th=F32(rng.uniform(0.5, 1.5)), v_reset=F32(rng.uniform(-0.5, 0.3)),
              sur=surrogate_code(sur_name), p=F32(p), smooth=int(smooth))
    I = rng.normal(0.6, 1.0, size=(F, T, B)).astype(F32)
    v0 = rng.normal(0.0, 0.5, size=(F, B)).astype(F32)
    return I, v0, sc


def _prm(sc, reset, detach=False):
    """The named kernel record of a test case (reset/surrogate as codes)."""
    return NeuronKernelParams(alpha=sc["alpha"], k0=sc["k0"], c=sc["c"], v_th=sc["v_th"], v_reset=sc["v_reset"],
                              reset=reset, detach=int(detach), surrogate=sc["sur"], surrogate_p=sc["p"],
                              smooth=sc["smooth"])


def _run_lif_forward(I, v0, sc, reset):
    F, T, B = I.shape
    u, s, v = np.full_like(I, np.nan), np.full_like(I, np.nan), np.full((F, B), np.nan, F32)
    cpu.lif_forward(I, v0, _prm(sc, reset), u, s, v)
    return u, s, v


# --------------------------------------------------------------------------
# LIF / readout
# --------------------------------------------------------------------------
@pytest.mark.parametrize("smooth", [0, 1])
@pytest.mark.parametrize("reset", [0, 1, 2])
@pytest.mark.parametrize("seed", SEEDS)
def test_lif_forward_parity(seed, reset, smooth, mode):
    I, v0, sc = _lif_case(seed, smooth)
    v0_copy, I_copy = v0.copy(), I.copy()
    u, s, v = _run_lif_forward(I, v0, sc, reset)
    ur, sr, vr = ref.lif_forward(I, v0, _prm(sc, reset))
    assert u.dtype == s.dtype == v.dtype == F32
    assert_close(u, ur)
    assert_close(v, vr)
    if smooth:
        assert_close(s, sr)
    else:
        np.testing.assert_array_equal(s, sr)  # spikes must match exactly
        assert set(np.unique(s)) <= {0.0, 1.0}
    # inputs untouched
    np.testing.assert_array_equal(v0, v0_copy)
    np.testing.assert_array_equal(I, I_copy)


def test_lif_forward_parity_many_spikes(mode):
    # a larger case where every reset branch is hit many times
    rng = np.random.default_rng(99)
    I = rng.normal(1.0, 1.0, size=(13, 40, 7)).astype(F32)
    v0 = np.zeros((13, 7), F32)
    for reset in (0, 1, 2):
        sc = dict(alpha=F32(0.8), k0=F32(0.0), c=F32(0.5), v_th=F32(1.0), v_reset=F32(-0.2), sur=0, p=F32(1.0),
                  smooth=0)
        u, s, v = _run_lif_forward(I, v0, sc, reset)
        ur, sr, vr = ref.lif_forward(I, v0, _prm(sc, reset))
        assert 0.05 < s.mean() < 0.95
        np.testing.assert_array_equal(s, sr)
        assert_close(u, ur)
        assert_close(v, vr)


@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("reset", [0, 1, 2])
@pytest.mark.parametrize("smooth", [0, 1])
@pytest.mark.parametrize("seed", SEEDS)
def test_lif_backward_parity(seed, reset, detach, smooth, mode):
    I, v0, sc = _lif_case(seed + 100, smooth)
    ur, sr, _ = ref.lif_forward(I, v0, _prm(sc, reset))
    rng = np.random.default_rng(seed + 1000)
    gs = rng.normal(size=I.shape).astype(F32)
    if seed % 2 and I.shape[0] > 1:
        gs[rng.integers(I.shape[0])] = 0.0  # a neuron with no output gradient at all
    gI = np.full_like(gs, np.nan)
    cpu.lif_backward(gs, ur, sr, _prm(sc, reset, detach), gI)
    gIr = ref.lif_backward(gs, ur, sr, _prm(sc, reset, detach))
    assert gI.dtype == F32
    assert np.all(np.isfinite(gI))
    assert_close(gI, gIr)


@pytest.mark.parametrize("sur_name", SUR_NAMES)
def test_lif_backward_parity_each_surrogate(sur_name, mode):
    # every surrogate branch of the backward kernel, with many u near threshold
    rng = np.random.default_rng(sorted(SUR_NAMES).index(sur_name))
    F, T, B = 6, 15, 5
    u = rng.normal(1.0, 0.6, size=(F, T, B)).astype(F32)
    s = (u >= 1).astype(F32)
    gs = rng.normal(size=(F, T, B)).astype(F32)
    p = F32(SURROGATES[sur_name][1])
    for reset in (0, 1, 2):
        gI = np.full_like(gs, np.nan)
        prm = NeuronKernelParams(alpha=F32(0.7), k0=F32(0), c=F32(0.9), v_th=F32(1.0), v_reset=F32(-0.1), reset=reset,
                                 detach=0, surrogate=surrogate_code(sur_name), surrogate_p=p, smooth=0)
        cpu.lif_backward(gs, u, s, prm, gI)
        assert_close(gI, ref.lif_backward(gs, u, s, prm))


@pytest.mark.parametrize("seed", SEEDS)
def test_readout_parity(seed, mode):
    rng = np.random.default_rng(seed + 7)
    F, T, B = (int(v) for v in rng.integers(1, 10, size=3))
    alpha, v_rest = rng.uniform(0, 0.99), rng.uniform(-1, 1)
    a, k0, c = F32(alpha), F32((1 - alpha) * v_rest), F32(rng.uniform(0.1, 2))
    I = rng.normal(size=(F, T, B)).astype(F32)
    v0 = rng.normal(size=(F, B)).astype(F32)
    u = np.full_like(I, np.nan)
    prm = LIFParams().kernel_params(F32)._replace(alpha=a, k0=k0, c=c)
    cpu.readout_forward(I, v0, prm, u)
    assert_close(u, ref.readout_forward(I, v0, prm))
    gu = rng.normal(size=(F, T, B)).astype(F32)
    gI = np.full_like(gu, np.nan)
    cpu.readout_backward(gu, prm, gI)
    assert_close(gI, ref.readout_backward(gu, prm))


# --------------------------------------------------------------------------
# CSR kernels
# --------------------------------------------------------------------------
# (n_out, n_in, density): tiny densities leave whole rows/columns empty,
# (5, 5, 0.01) rounds to zero connections, 1.0 is fully connected
CSR_CASES = [(30, 40, 0.01), (5, 5, 0.01), (25, 17, 0.05), (8, 60, 0.2), (33, 9, 0.5), (12, 12, 1.0),
             (1, 50, 0.3), (50, 1, 0.6), (20, 30, 0.9), (7, 23, 1.0)]


def _csr_case(i, n_out, n_in, density):
    rng = np.random.default_rng(500 + i)
    indptr, indices = random_connectivity(n_out, n_in, density, rng)
    data = rng.normal(size=len(indices)).astype(F32)
    N = int(rng.integers(1, 24))
    X = rng.normal(size=(n_in, N)).astype(F32)
    G = rng.normal(size=(n_out, N)).astype(F32)
    if n_out > 2:
        G[rng.choice(n_out, size=n_out // 3, replace=False)] = 0.0  # rows with no gradient
    bias = rng.normal(size=n_out).astype(F32)
    return indptr, indices, data, X, G, bias


def _dense(indptr, indices, data, shape):
    return sp.csr_matrix((data, indices, indptr), shape=shape).toarray().astype(np.float64)


def _rows(indptr):
    return np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))


@pytest.mark.parametrize("i, case", list(enumerate(CSR_CASES)))
def test_csr_forward_parity(i, case, mode):
    n_out, n_in, density = case
    indptr, indices, data, X, G, bias = _csr_case(i, *case)
    assert len(indices) == round(density * n_out * n_in)
    Y = np.full((n_out, X.shape[1]), np.nan, F32)
    cpu.csr_forward(indptr, indices, data, bias, X, Y)
    assert_close(Y, ref.csr_forward(indptr, indices, data, bias, X))
    assert_close(Y, _dense(indptr, indices, data, (n_out, n_in)) @ X + bias[:, None])  # and both are W X + b


@pytest.mark.parametrize("i, case", list(enumerate(CSR_CASES)))
def test_csr_backward_input_parity(i, case, mode):
    n_out, n_in, density = case
    indptr, indices, data, X, G, bias = _csr_case(i, *case)
    W = _dense(indptr, indices, data, (n_out, n_in))
    t_indptr, t_indices, perm = transpose_structure(indptr, indices, n_in)
    GX = np.full((n_in, G.shape[1]), np.nan, F32)
    cpu.csr_backward_input(t_indptr, t_indices, perm, data, G, GX)
    GXr = ref.csr_backward_input(indptr, indices, data, G, n_in)
    assert_close(GX, GXr)
    assert_close(GX, W.T @ G)
    # the variant that skips rows of G flagged as all-zero
    rownz = (G != 0).any(axis=1).astype(np.uint8)
    assert rownz.sum() < n_out or n_out <= 2
    GX2 = np.full_like(GX, np.nan)
    cpu.csr_backward_input_nz(t_indptr, t_indices, perm, data, G, rownz, GX2)
    assert_close(GX2, ref.csr_backward_input_nz(indptr, indices, data, G, rownz, n_in))
    assert_close(GX2, W.T @ G)


@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("i, case", list(enumerate(CSR_CASES)))
def test_csr_grad_parity(i, case, accumulate, mode):
    n_out, n_in, density = case
    indptr, indices, data, X, G, bias = _csr_case(i, *case)
    nnz = len(indices)
    gr = ref.csr_grad_at(indptr, indices, G, X)
    assert_close(gr, (G.astype(np.float64) @ X.T.astype(np.float64))[_rows(indptr), indices])
    base = np.random.default_rng(i).normal(size=nnz).astype(F32)
    expected = base + gr if accumulate else gr

    out = base.copy() if accumulate else np.full(nnz, np.nan, F32)
    cpu.csr_grad_at(indptr, indices, G, X, out, accumulate)
    assert_close(out, expected)

    # fused version: also the bias gradient and the nonzero-row flags
    out = base.copy() if accumulate else np.full(nnz, np.nan, F32)
    gb, rownz = np.full(n_out, np.nan, F32), np.full(n_out, 7, np.uint8)
    cpu.csr_grad_dense(indptr, indices, G, X, out, accumulate, gb, rownz)
    g_ref, gb_ref, nz_ref = ref.csr_grad_dense(indptr, indices, G, X)
    assert_close(out, base + g_ref if accumulate else g_ref)
    assert_close(gb, gb_ref)
    np.testing.assert_array_equal(rownz, nz_ref)


def _spike_input(rng, n_in, N):
    """0/1 matrix whose rows span silent, rare and frequent spiking."""
    rates = rng.choice([0.0, 0.02, 0.1, 0.5, 0.9, 1.0], size=n_in)
    return (rng.random((n_in, N)) < rates[:, None]).astype(F32)


def _pack(X, thr):
    n_in, N = X.shape
    X8 = np.full((n_in, N), 99, np.uint8)
    cnt = np.full(n_in, -1, np.int32)
    cols = np.full((n_in, max(1, min(thr, N))), -1, np.int32)
    n_bad = cpu.spike_pack(X, X8, cnt, cols, thr)
    return X8, cnt, cols, n_bad


@pytest.mark.parametrize("thr", [0, 1, 3, 8, 1000])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spike_pack_parity(seed, thr, mode):
    rng = np.random.default_rng(seed)
    n_in, N = int(rng.integers(1, 30)), int(rng.integers(1, 60))
    X = _spike_input(rng, n_in, N)
    X8, cnt, cols, n_bad = _pack(X, thr)
    X8r, cntr, colsr, n_badr = ref.spike_pack(X, thr)
    np.testing.assert_array_equal(X8, X8r)
    np.testing.assert_array_equal(cnt, cntr)
    assert n_bad == n_badr == 0
    for j in range(n_in):
        if colsr[j] is not None:
            np.testing.assert_array_equal(cols[j, :cnt[j]], colsr[j])
    # not a spike matrix: entries other than 0/1, NaN included, are counted
    Xb = X.copy()
    Xb.flat[rng.choice(Xb.size, size=min(4, Xb.size), replace=False)] = [0.5, -1.0, np.nan, 2.0][:min(4, Xb.size)]
    assert _pack(Xb, thr)[3] == ref.spike_pack(Xb, thr)[3] == min(4, Xb.size)


@pytest.mark.parametrize("thr", [0, 3, 1000])
@pytest.mark.parametrize("i, case", list(enumerate(CSR_CASES)))
def test_csr_spike_kernels_parity(i, case, thr, mode):
    n_out, n_in, density = case
    indptr, indices, data, _, G, bias = _csr_case(i, *case)
    rng = np.random.default_rng(700 + i)
    X = _spike_input(rng, n_in, G.shape[1])
    X8, cnt, cols, n_bad = _pack(X, thr)
    assert n_bad == 0
    W = _dense(indptr, indices, data, (n_out, n_in))

    Y = np.full((n_out, X.shape[1]), np.nan, F32)
    cpu.csr_forward_spikes(indptr, indices, data, bias, X8, cnt, cols, thr, Y)
    assert_close(Y, ref.csr_forward_spikes(indptr, indices, data, bias, X8))
    assert_close(Y, W @ X + bias[:, None])

    g_ref, gb_ref, nz_ref = ref.csr_grad_spikes(indptr, indices, X8, G)
    assert_close(g_ref, (G.astype(np.float64) @ X.T)[_rows(indptr), indices])
    for accumulate in (False, True):
        base = rng.normal(size=len(indices)).astype(F32)
        out = base.copy() if accumulate else np.full(len(indices), np.nan, F32)
        gb, rownz = np.full(n_out, np.nan, F32), np.full(n_out, 7, np.uint8)
        cpu.csr_grad_spikes(indptr, indices, X8, cnt, cols, thr, G, out, accumulate, gb, rownz)
        assert_close(out, base + g_ref if accumulate else g_ref)
        assert_close(gb, gb_ref)
        np.testing.assert_array_equal(rownz, nz_ref)


# --------------------------------------------------------------------------
# optimizer kernels
# --------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 7, 1000, 9000])
@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_adam_update_parity(n, wd, mode):
    rng = np.random.default_rng(n)
    w = rng.normal(size=n).astype(F32)
    m, v = np.zeros(n, F32), np.zeros(n, F32)
    wr, mr, vr = w.copy(), m.copy(), v.copy()
    b1, b2, lr, eps = 0.9, 0.999, 0.01, 1e-8
    for t in range(1, 6):
        g = rng.normal(size=n).astype(F32)
        args = (F32(lr), F32(b1), F32(b2), F32(eps), F32(1 - b1 ** t), F32(1 - b2 ** t), F32(wd))
        cpu.adam_update(w, g, m, v, *args)
        wr, mr, vr = ref.adam_update(wr, g, mr, vr, *args)
        assert w.dtype == m.dtype == v.dtype == F32
        assert_close(w, wr)
        assert_close(m, mr)
        assert_close(v, vr)


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.5, True), (0.9, True)])
@pytest.mark.parametrize("wd", [0.0, 0.01])
@pytest.mark.parametrize("n", [1, 513, 9000])
def test_sgd_update_parity(momentum, nesterov, wd, n, mode):
    rng = np.random.default_rng(n + 3)
    w = rng.normal(size=n).astype(F32)
    buf = np.zeros(n, F32)
    wr, bufr = w.copy(), buf.copy()
    for _ in range(5):
        g = rng.normal(size=n).astype(F32)
        cpu.sgd_update(w, g, buf, F32(0.05), F32(momentum), nesterov, F32(wd))
        wr, bufr = ref.sgd_update(wr, g, bufr, F32(0.05), F32(momentum), nesterov, F32(wd))
        assert_close(w, wr)
        if momentum:
            assert_close(buf, bufr)
        else:
            np.testing.assert_array_equal(buf, 0)  # buffer untouched without momentum


@pytest.mark.parametrize("T", [2, 5])
def test_time_sum_parity(T, mode):
    rng = np.random.default_rng(T)
    G3 = (rng.normal(size=(301, T, 17)) * 10.0 ** rng.uniform(-3, 3, (301, T, 17))).astype(F32)
    out = np.empty((301, 17), F32)
    cpu.time_sum(G3, out)
    np.testing.assert_array_equal(out, ref.time_sum(G3))  # the same additions in the same order


@pytest.mark.parametrize("mean", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_ce_time_parity(dtype, mean):
    rng = np.random.default_rng(7)
    O = rng.normal(0.5, 2.0, size=(10, 6, 37)).astype(dtype)  # (classes, T, batch), feature-major
    y = rng.integers(0, 10, 37)
    g = np.full(O.shape, np.nan, dtype)
    value = cpu.softmax_ce_time(O, y, mean, g)
    want_value, want_g = ref.softmax_ce_time(O, y, mean)
    assert value == pytest.approx(want_value, rel=1e-13)
    np.testing.assert_allclose(g, want_g, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=0)
    np.testing.assert_array_equal(g, g[:, :1, :].repeat(O.shape[1], axis=1))  # the same at every step
    for bad in (10, -1):  # a label outside [0, C): both raise, naming the range; nothing is written
        y[5] = bad
        g[...] = np.nan
        for run in (lambda: cpu.softmax_ce_time(O, y, mean, g), lambda: ref.softmax_ce_time(O, y, mean)):
            with pytest.raises(ValueError, match=r"labels: must be in \[0, 10\), got range"):
                run()
        assert np.isnan(g).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(10, 8, 100), (3, 1, 1), (1, 5, 4), (7, 8, 1)])
def test_predict_time_and_count_correct_parity(dtype, shape):
    C, T, B = shape
    rng = np.random.default_rng(C * T + B)
    O = rng.normal(0, 1.5, shape).astype(dtype)
    O[:, :, ::3] = np.round(O[:, :, ::3])  # integer sums: ties, which go to the lower class
    y = rng.integers(0, C, B)
    want = ref.predict_time(O)
    np.testing.assert_array_equal(cpu.predict_time(O), want)
    assert cpu.count_correct(O, y) == ref.count_correct(O, y) == int(np.count_nonzero(want == y))
    if B > 1 and C > 2:  # a NaN sum wins at once, as np.argmax has it; an Inf wins over every number
        O[2, T - 1, 0], O[1, 0, 1] = np.nan, np.inf
        np.testing.assert_array_equal(cpu.predict_time(O), ref.predict_time(O))
        assert cpu.predict_time(O)[:2].tolist() == [2, 1]


def _random_csr_structure(rng, n_out, n_in, density):
    mask = rng.random((n_out, n_in)) < density
    mask[0] = False  # an empty row
    w = sp.csr_matrix(mask.astype(np.float32))
    return w.indptr.astype(np.int32), w.indices.astype(np.int32), rng.normal(size=w.nnz).astype(np.float32)


@pytest.mark.parametrize("seed", range(4))
def test_csr_remove_and_merge_parity(seed):
    rng = np.random.default_rng(seed)
    n_out, n_in = 13, 29
    indptr, indices, data = _random_csr_structure(rng, n_out, n_in, 0.3)
    keep = rng.random(len(indices)) < 0.6
    for got, want in zip(cpu.csr_remove(indptr, indices, keep), ref.csr_remove(indptr, indices, keep)):
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, want)
    rows = np.repeat(np.arange(n_out), np.diff(indptr))
    kept_keys = (rows * n_in + indices)[keep]
    empty = np.setdiff1d(np.arange(n_out * n_in), kept_keys)  # a pruned position may come back
    for m in (0, 1, 40, len(empty)):
        new_keys = np.sort(rng.choice(empty, m, replace=False)).astype(np.int64)
        new_values = rng.normal(size=m).astype(np.float32)
        got = cpu.csr_merge(indptr, indices, data, keep, new_keys, new_values, n_in)
        want = ref.csr_merge(indptr, indices, data, keep, new_keys, new_values, n_in)
        for g, w in zip(got, want):
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g, w)
        assert got[0][-1] == keep.sum() + m and (got[3] >= 0).sum() == keep.sum()
    clash = np.sort(np.concatenate([empty[:3], kept_keys[-1:]])).astype(np.int64)  # a kept connection
    args = (indptr, indices, data, keep, clash, np.zeros(4, np.float32), n_in)
    assert cpu.csr_merge(*args) is None and ref.csr_merge(*args) is None


@pytest.mark.parametrize("sizes", [(0, 0), (0, 5), (5, 0), (50, 400), (400, 50)])
def test_sorted_member_and_merge_parity(sizes):
    rng = np.random.default_rng(sum(sizes))
    a = np.sort(rng.choice(2000, sizes[0], replace=False)).astype(np.int64)
    b = np.sort(rng.choice(2000, sizes[1], replace=False)).astype(np.int64)
    np.testing.assert_array_equal(cpu.sorted_member(a, b), ref.sorted_member(a, b))
    assert cpu.sorted_member(a, b).dtype == bool
    new = b[~ref.sorted_member(b, a)]
    np.testing.assert_array_equal(cpu.sorted_merge(a, new), ref.sorted_merge(a, new))
    np.testing.assert_array_equal(cpu.sorted_merge(a, new), np.union1d(a, b))


def test_every_public_kernel_is_covered():
    # a new kernel in cpu.py needs a parity test here
    public = {name for name, obj in vars(cpu).items()
              if callable(obj) and not name.startswith("_") and getattr(obj, "__module__", "") == cpu.__name__}
    public -= {"pick_version", "parallel_min_ns", "threading_layer"}  # the serial/parallel choice, not kernels
    public -= {"borrow"}  # the views every kernel takes of its arrays (test_borrow_is_a_view_of_the_same_memory)
    public -= {"label_range_error"}  # the error softmax_ce_time raises, like its twin (test_softmax_ce_time_parity)
    covered = {"nonfinite_count", "lif_forward", "lif_backward", "readout_forward", "readout_backward", "csr_forward",
               "csr_backward_input", "csr_backward_input_nz", "csr_grad_at", "csr_grad_dense", "spike_pack",
               "csr_forward_spikes", "csr_grad_spikes", "spike_work_ns", "adam_update", "sgd_update", "time_sum",
               "softmax_ce_time", "predict_time", "count_correct", "csr_remove", "csr_merge", "sorted_member",
               "sorted_merge"}
    assert public <= covered, f"kernels without a parity test: {sorted(public - covered)}"


def test_borrow_is_a_view_of_the_same_memory():
    import sys

    import numba

    @numba.njit
    def fill_and_sum(a, b):
        va, vb = cpu.borrow(a), cpu.borrow(b)
        for i in range(va.shape[0]):
            va[i] = i
        total = 0.0
        for i in range(vb.shape[0]):  # a strided 2-D view keeps its shape and strides
            for j in range(vb.shape[1]):
                total += vb[i, j] * (j + 1)
        return total

    a = np.zeros(6, F32)
    b = np.arange(12, dtype=np.float64).reshape(3, 4).T  # (4, 3), not C-contiguous
    refs = sys.getrefcount(a), sys.getrefcount(b)
    assert fill_and_sum(a, b) == float(sum(b[i, j] * (j + 1) for i in range(4) for j in range(3)))
    np.testing.assert_array_equal(a, np.arange(6))
    assert (sys.getrefcount(a), sys.getrefcount(b)) == refs  # a borrowed view owns no reference

    @numba.njit
    def not_an_array(x):
        return cpu.borrow(x)

    with pytest.raises(numba.TypingError, match="borrow takes an array"):
        not_an_array(1.0)


def test_stores_into_a_borrowed_array_survive_a_parallel_loop():
    # Numba's parfor dead-code pass drops ``a[i] = v`` (i the prange index) into an array it believes
    # local and unread afterwards; kernels.cpu registers borrow() with its alias analysis so that the
    # borrowed view counts as the argument it views
    import numba

    @numba.njit(parallel=True)
    def mark(a, keep):
        a = cpu.borrow(a)
        for i in numba.prange(a.shape[0]):
            if keep[i]:
                a[i] = 5
            else:
                a[i] = 0

    a = np.full(7, -1, np.int32)
    mark(a, np.array([1, 0, 1, 0, 0, 1, 1], np.uint8))
    np.testing.assert_array_equal(a, [5, 0, 5, 0, 0, 5, 5])


# --------------------------------------------------------------------------
# sparse.py helpers
# --------------------------------------------------------------------------
def _raw(indptr, indices, data, shape):
    return sp.csr_matrix((np.asarray(data, F32), np.asarray(indices, INDEX_DTYPE), np.asarray(indptr, INDEX_DTYPE)),
                         shape=shape)


def test_canonical_csr_keeps_explicit_zeros():
    m = _raw([0, 2, 3, 3], [0, 2, 1], [0.0, 1.5, 0.0], (3, 3))
    assert m.nnz == 3
    w = canonical_csr(m)
    assert w.nnz == 3
    np.testing.assert_array_equal(w.indptr, [0, 2, 3, 3])
    np.testing.assert_array_equal(w.indices, [0, 2, 1])
    np.testing.assert_array_equal(w.data, [0.0, 1.5, 0.0])
    assert w.indptr.dtype == w.indices.dtype == np.int32
    assert w.data.dtype == F32
    # dtype conversion keeps them too
    w64 = canonical_csr(m, dtype=np.float64)
    assert w64.nnz == 3 and w64.data.dtype == np.float64


def test_canonical_csr_from_dense_and_other_formats():
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(6, 9)) * (rng.random((6, 9)) < 0.4)
    w = canonical_csr(dense)
    assert w.nnz == np.count_nonzero(dense)
    np.testing.assert_allclose(w.toarray(), dense.astype(F32))
    for fmt in ("csc", "coo", "lil", "dok"):
        wf = canonical_csr(sp.csr_matrix(dense).asformat(fmt))
        np.testing.assert_array_equal(wf.indptr, w.indptr)
        np.testing.assert_array_equal(wf.indices, w.indices)
        np.testing.assert_array_equal(wf.data, w.data)
        assert wf.indices.dtype == np.int32 and wf.indptr.dtype == np.int32
    with pytest.raises(ValueError, match="weight"):
        canonical_csr(np.zeros(5))


def test_canonical_csr_sorts_unsorted_rows():
    m = _raw([0, 3, 4], [2, 0, 1, 1], [3.0, 1.0, 2.0, 4.0], (2, 3))
    w = canonical_csr(m)
    np.testing.assert_array_equal(w.indices, [0, 1, 2, 1])
    np.testing.assert_array_equal(w.data, [1.0, 2.0, 3.0, 4.0])


def test_canonical_csr_rejects_duplicates_in_csr():
    m = _raw([0, 2, 3], [1, 1, 0], [1.0, 2.0, 3.0], (2, 3))
    with pytest.raises(ValueError, match="CSR"):
        canonical_csr(m)
    # unsorted *and* duplicated
    m = _raw([0, 3, 3], [2, 0, 2], [1.0, 2.0, 3.0], (2, 3))
    with pytest.raises(ValueError, match="CSR"):
        canonical_csr(m)


def test_canonical_csr_rejects_duplicates_in_coo():
    # The docstring: "Duplicates are an error rather than being summed silently".
    # A COO matrix with a repeated (row, col) must not become one summed connection.
    coo = sp.coo_matrix((np.array([1.0, 2.0, 5.0]), (np.array([0, 0, 1]), np.array([1, 1, 0]))), shape=(2, 2))
    with pytest.raises(ValueError):
        canonical_csr(coo)


@pytest.mark.parametrize("indptr, indices, shape, ok", [
    ([0, 2, 3], [0, 2, 1], (2, 3), True),
    ([0, 0, 0], [], (2, 3), True),
    ([0, 0, 2, 2], [0, 2], (3, 3), True),
    ([0, 2, 3], [2, 0, 1], (2, 3), False),   # unsorted within row 0
    ([0, 2, 3], [1, 1, 0], (2, 3), False),   # duplicate in row 0
    ([0, 1, 3], [2, 0, 0], (2, 3), False),   # duplicate in row 1
    ([0, 0, 2], [1, 0], (2, 3), False),      # unsorted in row 1 after an empty row
    ([0, 2, 2, 4], [0, 2, 2, 1], (3, 3), False),  # unsorted in the last row
    ([0, 1, 2], [2, 0], (2, 3), True),       # decreasing across rows is fine
    ([0, 2, 3], [0, 3, 1], (2, 3), False),   # column out of range
    ([0, 2, 3], [0, -1, 1], (2, 3), False),  # negative column
    ([0, 2], [0, 1], (2, 3), False),         # indptr too short
    ([1, 2, 3], [0, 1], (2, 3), False),      # indptr[0] != 0
    ([0, 2, 1, 3], [0, 1, 2], (3, 3), False),  # indptr decreasing
    ([0, 2, 4], [0, 1, 2], (2, 3), False),   # indptr[-1] != nnz
])
def test_check_csr_cases(indptr, indices, shape, ok):
    ip, ix = np.asarray(indptr, INDEX_DTYPE), np.asarray(indices, INDEX_DTYPE)
    if ok:
        check_csr(ip, ix, shape)
    else:
        with pytest.raises(ValueError, match="CSR"):
            check_csr(ip, ix, shape)


def _valid_structure_slow(indptr, indices, n_in):
    for r in range(len(indptr) - 1):
        row = list(indices[indptr[r]:indptr[r + 1]])
        if any(c < 0 or c >= n_in for c in row) or any(b <= a for a, b in zip(row, row[1:])):
            return False
    return True


def test_check_csr_agrees_with_slow_check_on_random_structures():
    rng = np.random.default_rng(3)
    n_bad = 0
    for _ in range(400):
        n_out, n_in = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        counts = rng.integers(0, n_in + 1, size=n_out)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(INDEX_DTYPE)
        indices = np.concatenate([np.sort(rng.choice(n_in, size=k, replace=False)) for k in counts]
                                 + [np.zeros(0, int)]).astype(INDEX_DTYPE)
        if len(indices) and rng.random() < 0.6:  # corrupt one entry
            indices[rng.integers(len(indices))] = rng.integers(0, n_in)
        ok = _valid_structure_slow(indptr, indices, n_in)
        n_bad += not ok
        if ok:
            check_csr(indptr, indices, (n_out, n_in))
        else:
            with pytest.raises(ValueError):
                check_csr(indptr, indices, (n_out, n_in))
    assert n_bad > 30  # the corruption produced enough invalid structures


@pytest.mark.parametrize("i, case", list(enumerate(CSR_CASES)))
def test_transpose_structure_matches_scipy(i, case):
    n_out, n_in, density = case
    rng = np.random.default_rng(900 + i)
    indptr, indices = random_connectivity(n_out, n_in, density, rng)
    nnz = len(indices)
    data = np.arange(1, nnz + 1, dtype=F32)  # distinct values identify each connection
    W = sp.csr_matrix((data, indices, indptr), shape=(n_out, n_in))
    WT = W.T.tocsr()
    WT.sort_indices()
    t_indptr, t_indices, perm = transpose_structure(indptr, indices, n_in)
    assert len(t_indptr) == n_in + 1
    np.testing.assert_array_equal(t_indptr, WT.indptr)
    np.testing.assert_array_equal(t_indices, WT.indices)
    np.testing.assert_array_equal(data[perm], WT.data)
    assert sorted(perm.tolist()) == list(range(nnz))  # a permutation


@pytest.mark.parametrize("n_out, n_in, density", CSR_CASES + [(100, 1000, 0.003), (3, 3, 1.0)])
def test_random_connectivity_exact(n_out, n_in, density):
    rng = np.random.default_rng(11)
    indptr, indices = random_connectivity(n_out, n_in, density, rng)
    assert indptr.dtype == indices.dtype == INDEX_DTYPE
    assert len(indptr) == n_out + 1 and indptr[0] == 0
    assert len(indices) == indptr[-1] == int(round(density * n_out * n_in))
    assert np.all(np.diff(indptr) >= 0) and np.all(np.diff(indptr) <= n_in)
    for r in range(n_out):
        row = indices[indptr[r]:indptr[r + 1]]
        assert np.all(np.diff(row) > 0), "sorted and duplicate-free"
        assert row.size == 0 or (row.min() >= 0 and row.max() < n_in)
    check_csr(indptr, indices, (n_out, n_in))


def test_random_connectivity_not_exact():
    rng = np.random.default_rng(12)
    indptr, indices = random_connectivity(200, 50, 0.1, rng, exact=False)
    check_csr(indptr, indices, (200, 50))
    # binomial total: mean 1000, sd ~ 30
    assert abs(len(indices) - 1000) < 200


def test_random_connectivity_positions_uniform():
    rng = np.random.default_rng(13)
    n_out, n_in, density, reps = 3, 4, 0.5, 3000
    counts = np.zeros((n_out, n_in))
    for _ in range(reps):
        indptr, indices = random_connectivity(n_out, n_in, density, rng)
        rows = np.repeat(np.arange(n_out), np.diff(indptr))
        np.add.at(counts, (rows, indices), 1)
    p = density  # every position present with probability nnz / total
    sd = np.sqrt(reps * p * (1 - p))
    assert np.all(np.abs(counts - reps * p) < 5 * sd), counts


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.01])
def test_random_connectivity_bad_density(bad):
    with pytest.raises(ValueError, match="density"):
        random_connectivity(3, 3, bad, np.random.default_rng(0))


@pytest.mark.parametrize("n_in, k", [(1000, 5), (1000, 249), (1000, 250), (100, 100), (10, 0), (1, 1), (7, 3)])
def test_sample_row_columns(n_in, k):
    rng = np.random.default_rng(n_in + k)
    for _ in range(20):
        cols = sample_row_columns(rng, n_in, k)
        assert cols.dtype == INDEX_DTYPE
        assert len(cols) == k
        assert len(np.unique(cols)) == k
        assert np.all(np.diff(cols) > 0)
        assert k == 0 or (cols.min() >= 0 and cols.max() < n_in)


def test_sample_row_columns_uniform_both_branches():
    rng = np.random.default_rng(5)
    for n_in, k in ((40, 3), (8, 4)):  # rejection branch, permutation branch
        counts = np.zeros(n_in)
        reps = 4000
        for _ in range(reps):
            counts[sample_row_columns(rng, n_in, k)] += 1
        p = k / n_in
        sd = np.sqrt(reps * p * (1 - p))
        assert np.all(np.abs(counts - reps * p) < 5 * sd), counts
