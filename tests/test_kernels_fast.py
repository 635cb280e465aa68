"""Parity of the spike-driven / fused kernels with their NumPy twins, and
equivalence of the fast layer paths with the plain ones.

Every kernel runs in both its serial and its parallel version (the ``mode``
fixture moves ``cpu.PARALLEL_MIN_NS``). Errors are measured relative to the
largest reference value, against references computed in float64 from the
same float32 inputs: ``max|kernel - ref| / max|ref| < 1e-5``.
"""

import numba
import numpy as np
import pytest

from snn_core import LIF, Adam, LIFParams, SparseLinear, ce_count, mlp
from snn_core.kernels import cpu
from snn_core.kernels import reference as ref
from snn_core.layers import check_finite
from snn_core.sparse import fan_in_uniform, random_connectivity, transpose_structure

F32 = np.float32
DENSITIES = [0.01, 0.05, 0.2, 0.5, 1.0]
RATES = [0.0, 0.01, 0.1, 0.5, 1.0]


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.abs(b).max(initial=0.0), 1e-30)
    return np.abs(a - b).max(initial=0.0) / scale


def case(seed):
    """Random shapes, density, spike rate and list threshold."""
    rng = np.random.default_rng(seed)
    n_in, n_out = int(rng.integers(1, 70)), int(rng.integers(1, 70))
    T, B = int(rng.integers(1, 7)), int(rng.integers(1, 13))
    N = T * B
    d = float(DENSITIES[seed % len(DENSITIES)])
    rate = float(RATES[(seed // len(DENSITIES)) % len(RATES)])
    indptr, indices = random_connectivity(n_out, n_in, d, rng)
    data = fan_in_uniform(indptr, rng, 1.0, F32)
    X = (rng.random((n_in, N)) < rate).astype(F32)
    # some inputs silent, some always on, to hit every branch
    if n_in > 3:
        X[0] = 0
        X[1] = 1
    thr = int(rng.integers(0, N + 2))
    return rng, n_in, n_out, N, indptr, indices, data, X, thr


def pack(X, thr, bits=False):
    X8 = np.empty(X.shape, np.uint8)
    cnt = np.empty(X.shape[0], np.int32)
    cols = np.full(X.shape, -1, np.int32)
    Xb = np.full((X.shape[0], (X.shape[1] + 15) // 16), 0xFFFF, np.uint16) if bits else None
    n_bad = cpu.spike_pack(X, X8, cnt, cols, thr, Xb)
    return (X8, cnt, cols, n_bad, Xb) if bits else (X8, cnt, cols, n_bad)


SEEDS = range(25)


@pytest.mark.parametrize("seed", SEEDS)
def test_spike_pack(seed, mode):
    _, n_in, _, N, _, _, _, X, thr = case(seed)
    X8, cnt, cols, n_bad, Xb = pack(X, thr, bits=True)
    np.testing.assert_array_equal(Xb, ref.spike_bits(X8))
    X8r, cntr, colsr, n_badr = ref.spike_pack(X, thr)
    assert n_bad == n_badr == 0
    np.testing.assert_array_equal(X8, X8r)
    np.testing.assert_array_equal(cnt, cntr)
    for j in range(n_in):
        if colsr[j] is not None:
            np.testing.assert_array_equal(cols[j, : cnt[j]], colsr[j])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N", [16, 100, 803])
def test_bit_path_wide_rows(dtype, N, mode):
    """Many full 16-column words plus a tail, both float dtypes."""
    rng = np.random.default_rng(N)
    n_in, n_out = 40, 30
    indptr, indices = random_connectivity(n_out, n_in, 0.5, rng)
    data = fan_in_uniform(indptr, rng, 1.0, dtype)
    X = (rng.random((n_in, N)) < 0.3).astype(dtype)
    X8, cnt, cols, _, Xb = pack(X, 2, bits=True)
    bias = rng.normal(size=n_out).astype(dtype)
    Y = np.empty((n_out, N), dtype)
    cpu.csr_forward_spikes(indptr, indices, data, bias, X8, cnt, cols, 2, Y, Xb=Xb)
    assert rel_err(Y, ref.csr_forward_spikes(indptr, indices, data.astype(np.float64), bias.astype(np.float64),
                                             X8)) < 1e-5
    G = rng.normal(size=(n_out, N)).astype(dtype)
    out, gb, rownz = np.empty(len(indices), dtype), np.empty(n_out, dtype), np.empty(n_out, np.uint8)
    cpu.csr_grad_spikes(indptr, indices, X8, cnt, cols, 2, G, out, False, gb, rownz, Xb=Xb)
    assert rel_err(out, ref.csr_grad_spikes(indptr, indices, X8, G.astype(np.float64))[0]) < 1e-5


@pytest.mark.parametrize("N", [16, 112, 128, 240, 800, 803])
def test_bit_path_adds_in_connection_order(N, mode):
    """The register-blocked forward adds each row's connections one at a time, in CSR order: exact float32.

    N covers every block split of the 16-column words (8 / 4 / 2 / 1 and
    their sums) and a uint8 tail; the reference adds the same float32 terms
    in the same order (streamed inputs first, then the listed ones).
    """
    rng = np.random.default_rng(N)
    n_in, n_out, thr = 60, 25, 3
    indptr, indices = random_connectivity(n_out, n_in, 0.4, rng)
    data = fan_in_uniform(indptr, rng, 1.0, F32)
    X = (rng.random((n_in, N)) < rng.random((n_in, 1)) * 0.6).astype(F32)
    X[:3, : N - 2] = 0  # three inputs below the list threshold (at most two spikes each)
    X8, cnt, cols, _, Xb = pack(X, thr, bits=True)
    bias = rng.normal(size=n_out).astype(F32)
    Y = np.empty((n_out, N), F32)
    cpu.csr_forward_spikes(indptr, indices, data, bias, X8, cnt, cols, thr, Y, Xb=Xb)
    if N % 16:  # the tail columns are summed four connections at a time: compare the full words only
        N = N - N % 16
    expect = np.empty((n_out, N), F32)
    for r in range(n_out):
        y = np.full(N, bias[r], F32)
        ks = range(indptr[r], indptr[r + 1])
        for k in [k for k in ks if cnt[indices[k]] >= thr] + [k for k in ks if 0 < cnt[indices[k]] < thr]:
            y = y + np.where(X8[indices[k], :N] != 0, data[k], F32(0))
        expect[r] = y
    np.testing.assert_array_equal(Y[:, :N], expect)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("alias", [False, True])
def test_spike_pack_uint8(seed, alias, mode):
    """A uint8 X packs like its float values; as its own X8 it is only read, never written."""
    _, n_in, _, N, _, _, _, X, thr = case(seed)
    X_u8 = X.astype(np.uint8)
    keep = X_u8.copy()
    X8 = X_u8 if alias else np.full(X.shape, 7, np.uint8)
    cnt, cols = np.empty(n_in, np.int32), np.full(X.shape, -1, np.int32)
    Xb = np.full((n_in, (N + 15) // 16), 0xFFFF, np.uint16)
    assert cpu.spike_pack(X_u8, X8, cnt, cols, thr, Xb) == 0
    f8, fcnt, fcols, _, fXb = pack(X, thr, bits=True)
    np.testing.assert_array_equal(X8, f8)
    np.testing.assert_array_equal(cnt, fcnt)
    np.testing.assert_array_equal(Xb, fXb)
    for j in range(n_in):
        if 0 < cnt[j] < thr:
            np.testing.assert_array_equal(cols[j, :cnt[j]], fcols[j, :cnt[j]])
    np.testing.assert_array_equal(X_u8, keep)


@pytest.mark.parametrize("N", [5, 8, 24, 803])  # a tail only, whole 64-bit words, words and a tail
def test_spike_pack_uint8_flags_non_spikes_and_keeps_them(N, mode):
    X = np.zeros((6, N), np.uint8)
    X[1, N - 1] = 2
    X[2, 0] = 255
    X[2, N // 2] = 3
    X[3, N // 3] = 1
    X[4, N - 1] = 128  # only the highest bit
    keep = X.copy()
    cnt, cols = np.empty(6, np.int32), np.empty(X.shape, np.int32)
    n_bad = cpu.spike_pack(X, X, cnt, cols, 2)
    assert n_bad == ref.spike_pack(X, 2)[3] == 4
    np.testing.assert_array_equal(X, keep)


def test_spike_pack_refuses_a_float_x_as_its_own_copy():
    X = np.zeros((3, 8), F32)
    with pytest.raises(ValueError, match="X8 may be X only for a C-contiguous uint8 X"):
        cpu.spike_pack(X, X, np.empty(3, np.int32), np.empty((3, 8), np.int32), 2)


def test_spike_pack_flags_non_spikes(mode):
    X = np.zeros((5, 24), F32)
    X[1, 3] = 0.5
    X[2, 7] = np.nan
    X[3, 0] = 2.0
    X[4, 23] = -1.0
    assert pack(X, 5)[3] == ref.spike_pack(X, 5)[3] == 4


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("bits", [False, True])
def test_csr_forward_spikes(seed, bits, mode):
    rng, n_in, n_out, N, indptr, indices, data, X, thr = case(seed)
    bias = rng.normal(size=n_out).astype(F32)
    X8, cnt, cols, _, Xb = pack(X, thr, bits=True)
    Y = np.empty((n_out, N), F32)
    cpu.csr_forward_spikes(indptr, indices, data, bias, X8, cnt, cols, thr, Y, Xb=Xb if bits else None)
    Yr = ref.csr_forward_spikes(indptr, indices, data.astype(np.float64), bias.astype(np.float64), X8)
    assert rel_err(Y, Yr) < 1e-5
    Y2 = np.empty_like(Y)
    cpu.csr_forward(indptr, indices, data, bias, X, Y2)  # the float kernel agrees too
    assert rel_err(Y2, Yr) < 1e-5


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("bits", [False, True])
def test_csr_grad_spikes(seed, accumulate, bits, mode):
    rng, n_in, n_out, N, indptr, indices, data, X, thr = case(seed)
    G = rng.normal(size=(n_out, N)).astype(F32)
    G[rng.random(n_out) < 0.3] = 0  # rows without gradient are skipped
    X8, cnt, cols, _, Xb = pack(X, thr, bits=True)
    out0 = rng.normal(size=len(indices)).astype(F32)
    out = out0.copy()
    gb, rownz = np.empty(n_out, F32), np.empty(n_out, np.uint8)
    cpu.csr_grad_spikes(indptr, indices, X8, cnt, cols, thr, G, out, accumulate, gb, rownz, Xb=Xb if bits else None)
    g_r, gb_r, nz_r = ref.csr_grad_spikes(indptr, indices, X8, G.astype(np.float64))
    expect = g_r + out0 if accumulate else g_r
    assert rel_err(out, expect) < 1e-5
    assert rel_err(gb, gb_r) < 1e-5
    np.testing.assert_array_equal(rownz, nz_r)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("accumulate", [False, True])
def test_csr_grad_dense(seed, accumulate, mode):
    rng, n_in, n_out, N, indptr, indices, data, X, thr = case(seed)
    X = X * rng.normal(size=X.shape).astype(F32)  # any real input
    G = rng.normal(size=(n_out, N)).astype(F32)
    G[rng.random(n_out) < 0.3] = 0
    out0 = rng.normal(size=len(indices)).astype(F32)
    out = out0.copy()
    gb, rownz = np.empty(n_out, F32), np.empty(n_out, np.uint8)
    cpu.csr_grad_dense(indptr, indices, G, X, out, accumulate, gb, rownz)
    g_r, gb_r, nz_r = ref.csr_grad_dense(indptr, indices, G.astype(np.float64), X.astype(np.float64))
    assert rel_err(out, g_r + out0 if accumulate else g_r) < 1e-5
    assert rel_err(gb, gb_r) < 1e-5
    np.testing.assert_array_equal(rownz, nz_r)


@pytest.mark.parametrize("seed", SEEDS)
def test_csr_backward_input_nz(seed, mode):
    rng, n_in, n_out, N, indptr, indices, data, X, thr = case(seed)
    G = rng.normal(size=(n_out, N)).astype(F32)
    zero_rows = rng.random(n_out) < 0.3
    G[zero_rows] = 0
    rownz = (~zero_rows).astype(np.uint8)
    t_indptr, t_indices, perm = transpose_structure(indptr, indices, n_in)
    GX = np.full((n_in, N), np.nan, F32)
    cpu.csr_backward_input_nz(t_indptr, t_indices, perm, data, G, rownz, GX)
    GXr = ref.csr_backward_input_nz(indptr, indices, data.astype(np.float64), G.astype(np.float64), rownz, n_in)
    assert rel_err(GX, GXr) < 1e-5


@pytest.mark.parametrize("shape", [(0,), (7,), (3, 5, 4), (1000,)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonfinite_count(shape, dtype):
    rng = np.random.default_rng(0)
    a = rng.normal(size=shape).astype(dtype)
    if a.size:
        flat = a.reshape(-1)
        flat[rng.integers(0, a.size, 3)] = [np.nan, np.inf, -np.inf]
    for view in (a, a.T, a[..., ::2] if a.ndim else a):
        assert cpu.nonfinite_count(view) == ref.count_nonfinite(view)


def test_check_finite_message():
    x = np.zeros((4, 3, 5), F32).transpose(1, 2, 0)
    check_finite(x, "input")
    x[1, 2, 3] = np.nan
    x[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="input: contains 2 NaN/Inf value"):
        check_finite(x, "input")
    check_finite(np.full(3, 3e38, F32), "big")  # float32 sum overflows; values are finite


# --------------------------------------------------------------------------
# Layers: spike-driven path == float path on spike inputs, gradients included
# --------------------------------------------------------------------------
def _twins(n_in, n_out, density, seed):
    a = SparseLinear(n_in, n_out, density, seed=seed, name="a")
    b = SparseLinear(n_in, n_out, density, seed=seed, name="b")
    rng = np.random.default_rng(seed)
    a.bias.value[:] = b.bias.value[:] = rng.normal(size=n_out)
    a.spike_input, b.spike_input = True, False
    return a, b


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("rate", [0.02, 0.15, 0.6])
def test_sparse_linear_spike_path_equals_plain(density, rate, mode):
    n_in, n_out, T, B = 97, 45, 6, 11
    a, b = _twins(n_in, n_out, density, seed=3)
    rng = np.random.default_rng(4)
    for step in range(2):  # the second backward accumulates
        x = (rng.random((T, B, n_in)) < rate).astype(F32)
        ya, yb = a.forward(x), b.forward(x)
        assert a._cache[1] is not None and b._cache[1] is None  # a took the spike path
        assert rel_err(ya, yb) < 1e-5
        g = rng.normal(size=ya.shape).astype(F32)
        g[:, :, rng.random(n_out) < 0.3] = 0
        ga, gb = a.backward(g), b.backward(g)
        assert rel_err(ga, gb) < 1e-5
        assert rel_err(a.weight_param.grad, b.weight_param.grad) < 1e-5
        assert rel_err(a.bias.grad, b.bias.grad) < 1e-5


def test_sparse_linear_non_spike_input_falls_back(mode):
    a, b = _twins(30, 20, 0.5, seed=5)
    x = np.random.default_rng(6).random((4, 3, 30)).astype(F32)  # currents, not spikes
    ya, yb = a.forward(x), b.forward(x)
    assert a._cache[1] is None
    np.testing.assert_array_equal(ya, yb)


def test_sparse_linear_auto_detects_spikes():
    layer = SparseLinear(50, 40, 0.5, seed=1)
    assert layer.spike_input is None
    layer.forward((np.random.default_rng(0).random((3, 4, 50)) < 0.2).astype(F32))
    assert layer._cache[1] is not None
    layer.spike_input = False
    layer.forward((np.random.default_rng(0).random((3, 4, 50)) < 0.2).astype(F32))
    assert layer._cache[1] is None


def test_emits_spikes_flags():
    assert LIF(3).emits_spikes
    assert not LIF(3, LIFParams(spike_fn="smooth")).emits_spikes
    assert not SparseLinear(3, 2).emits_spikes


def test_network_fast_path_matches_plain_network(mode):
    """One training step of a spiking MLP: spike path vs float path everywhere."""
    p = LIFParams.from_decay(0.9, reset="soft")
    nets = [mlp([60, 50, 40, 5], density=0.3, hidden=p, readout=p, output="lif", seed=7, gain=2.0) for _ in range(2)]
    for layer in nets[1].sparse_layers():
        layer.spike_input = False
    rng = np.random.default_rng(8)
    x = (rng.random((5, 9, 60)) < 0.3).astype(F32)
    y = rng.integers(0, 5, 9)
    outs = []
    for net in nets:
        o = net.forward(x)
        _, g = ce_count(o, y)
        net.zero_grad()
        net.backward(g)
        outs.append(o)
    np.testing.assert_array_equal(outs[0], outs[1])  # spikes identical
    for pa, pb in zip(nets[0].parameters(), nets[1].parameters()):
        assert rel_err(pa.grad, pb.grad) < 1e-5, pa.name
    assert nets[0].layers[2]._cache[1] is not None  # the hidden->hidden layer took the spike path


# --------------------------------------------------------------------------
# Reused buffers never overwrite what a caller holds
# --------------------------------------------------------------------------
def test_outputs_stay_valid_across_calls():
    p = LIFParams.from_decay(0.9, reset="soft")
    net = mlp([30, 40, 4], density=0.5, hidden=p, readout=p, output="lif", seed=1, gain=3.0)
    rng = np.random.default_rng(2)
    xs = [(rng.random((4, 5, 30)) < 0.4).astype(F32) for _ in range(3)]
    kept, kept_copies = [], []
    for x in xs:
        h = x
        for layer in net.layers:
            h = layer.forward(h)
            kept.append(h)
            kept_copies.append(h.copy())
        g = np.ones_like(h)
        for layer in reversed(net.layers):
            g = layer.backward(g)
            if g is not None:
                kept.append(g)
                kept_copies.append(g.copy())
    for a, b in zip(kept, kept_copies):
        np.testing.assert_array_equal(a, b)
    for i in range(len(kept)):  # every live output has its own memory
        for j in range(i + 1, len(kept)):
            assert not np.shares_memory(kept[i], kept[j])


def test_buffers_are_reused_once_released():
    layer = LIF(20)
    x = np.zeros((3, 4, 20), F32)
    base = layer.forward(x).base
    layer.forward(x)  # the first output is still cached for backward: a second buffer
    del base
    layer.forward(x)
    # two output buffers (one still cached), and one v_last buffer reused by every call
    assert sorted(b.shape for b in layer._buffers._bufs) == [(20, 3, 4), (20, 3, 4), (20, 4)]
    kept = layer.v_last
    layer.forward(x)  # a caller holds the last v_last: the next call must not overwrite it
    assert not np.shares_memory(kept, layer.v_last)


def test_alternating_batch_sizes_allocate_nothing_after_one_round(monkeypatch):
    # a Trainer alternates a training batch, its evaluation batch (larger) and an epoch's smaller last
    # batch: once each has run, the layers' buffers and scratch (pool, LIF membrane, resting state,
    # spike packs) are all reused
    from snn_core.backends.cpu import CpuBackend

    made = []
    for name in ("empty", "full"):
        original = getattr(CpuBackend, name)
        monkeypatch.setattr(CpuBackend, name, lambda self, *a, _f=original, **k: made.append(a) or _f(self, *a, **k))
    from snn_core.backends import cpu as cpu_backend

    packed = []
    make_pack = cpu_backend._pack_scratch
    monkeypatch.setattr(cpu_backend, "_pack_scratch", lambda shape: packed.append(shape) or make_pack(shape))
    p = LIFParams.from_decay(0.9, reset="soft")
    net = mlp([30, 40, 4], density=0.5, hidden=p, readout=p, output="lif", seed=1, gain=3.0)
    rng = np.random.default_rng(2)

    def round_of_batches():
        for batch, backward in ((5, True), (9, False), (3, True)):
            out = net.forward((rng.random((4, batch, 30)) < 0.4).astype(F32))
            if backward:
                _, g = ce_count(out, rng.integers(0, 4, batch))
                net.zero_grad()
                net.backward(g)

    round_of_batches()
    assert made and packed  # the counters see the allocations
    made.clear()
    packed.clear()
    for _ in range(3):
        round_of_batches()
    assert made == [] and packed == []


def test_buffer_pool_forgets_the_free_buffer_used_longest_ago():
    from snn_core.backends.base import BufferPool, RecentShapes

    pool = BufferPool(np.empty, cap=3)
    held = pool.get((2,), F32)  # in use throughout
    old, new = pool.get((3,), F32), pool.get((4,), F32)
    old_id, new_id = id(old), id(new)
    del old, new
    assert id(pool.get((3,), F32)) == old_id  # reused, and now the most recently used
    pool.get((5,), F32)  # full: forgets the free (4,) buffer, not the held one nor the (3,) one
    assert [b.shape for b in pool._bufs] == [(2,), (3,), (5,)] and pool._bufs[0] is held
    assert id(pool.get((4,), F32)) != new_id
    recent = RecentShapes(keep=2)
    a = recent.get((1,), np.zeros)
    recent.get((2,), np.zeros)
    assert recent.get((1,), np.ones) is a  # kept, and now the most recently used
    recent.get((3,), np.zeros)  # forgets (2,)
    assert recent.get((2,), np.ones)[0] == 1.0 and recent.get((1,), np.ones) is not a


def test_recorded_arrays_stay_valid():
    layer = LIF(10, LIFParams.from_decay(0.9))
    rng = np.random.default_rng(0)
    layer.forward(rng.normal(size=(4, 3, 10)).astype(F32) + 1, record=True)
    rec = {k: v.copy() for k, v in layer.recorded.items()}
    saved = layer.recorded
    layer.forward(rng.normal(size=(4, 3, 10)).astype(F32))
    for k in rec:
        np.testing.assert_array_equal(saved[k], rec[k])


# --------------------------------------------------------------------------
# No recompilation per call
# --------------------------------------------------------------------------
def _dispatchers():
    return {name: obj for name, obj in vars(cpu).items() if isinstance(obj, numba.core.registry.CPUDispatcher)}


def test_no_new_signatures_after_first_iteration():
    p = LIFParams.from_decay(0.9, reset="soft")
    net = mlp([40, 64, 48, 6], density=0.4, hidden=p, readout=p, output="lif", seed=3, gain=2.0)
    opt = Adam(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)

    def step(T, B):
        x = (rng.random((T, B, 40)) < 0.3).astype(F32)
        _, g = ce_count(net.forward(x), rng.integers(0, 6, B))
        net.zero_grad()
        net.backward(g)
        opt.step()

    step(5, 7)
    before = {k: len(d.signatures) for k, d in _dispatchers().items()}
    for T, B in [(5, 7), (3, 20), (8, 1)]:  # other shapes: same types, no compile
        step(T, B)
    after = {k: len(d.signatures) for k, d in _dispatchers().items()}
    assert after == before
