"""Row masks in the forward: neurons whose spikes reach nothing are not simulated.

A hidden neuron without outgoing connections changes neither the network's
output nor any gradient. ``Network.forward`` (without ``record``) passes
the ``cpu`` kernels uint8 masks of the rows something reads (``live``),
walking up from the output, so that such neurons, and the synaptic rows
that only feed them, cost nothing. These tests check that the rows left
out are never read or written (fresh buffers hold NaN, skipped inputs are
poisoned), that what is computed is the same bits as without masks, that
``record=True`` still computes every neuron, and that the layer calls that
would need a skipped value refuse with a clear error.
"""

import numpy as np
import pytest

from snn_core import LIFParams, SparseLinear, ce_count, mlp
from snn_core.backends.cpu import CpuBackend
from snn_core.kernels import cpu
from snn_core.neurons import NeuronKernelParams
from snn_core.sparse import random_connectivity
from snn_core.surrogate import surrogate_code

F32 = np.float32


def _live_rows(rng, n, frac=0.4):
    live = (rng.random(n) >= frac).astype(np.uint8)
    live[0], live[-1] = 0, 1  # at least one skipped and one computed row
    return live


@pytest.mark.parametrize("smooth", [0, 1])
@pytest.mark.parametrize("reset", [0, 1, 2])
@pytest.mark.parametrize("seed", range(3))
def test_lif_forward_computes_only_live_neurons(seed, reset, smooth, mode):
    rng = np.random.default_rng(seed)
    F, T, B = 11, 6, 7
    I = rng.normal(0.6, 0.8, size=(F, T, B)).astype(F32)
    v0 = rng.normal(0.0, 0.3, size=(F, B)).astype(F32)
    prm = NeuronKernelParams(alpha=F32(0.85), k0=F32(0.01), c=F32(0.9), v_th=F32(1.0), v_reset=F32(0.0), reset=reset,
                             detach=0, surrogate=surrogate_code("fast_sigmoid"), surrogate_p=F32(5.0), smooth=smooth)
    want = [np.empty_like(I), np.empty_like(I), np.empty_like(v0)]
    cpu.lif_forward(I, v0, prm, *want)
    live = _live_rows(rng, F)
    poisoned = I.copy()
    poisoned[live == 0] = np.nan  # inputs of skipped neurons must not be read
    got = [np.full_like(I, 7.0), np.full_like(I, 7.0), np.full_like(v0, 7.0)]
    cpu.lif_forward(poisoned, v0, prm, *got, live)
    on = live == 1
    for w, g in zip(want, got):
        np.testing.assert_array_equal(g[on], w[on])
    assert all(np.all(g[~on] == 7.0) for g in got)  # left unwritten (the layer's v_last marks them NaN)
    assert want[1][on].any()  # some computed neuron spiked


def _case(rng, n_out=13, n_in=17, N=40, density=0.3):
    indptr, indices = random_connectivity(n_out, n_in, density, rng)
    data = rng.normal(size=len(indices)).astype(F32)
    bias = rng.normal(size=n_out).astype(F32)
    X = (rng.random((n_in, N)) < 0.3).astype(F32)
    live = _live_rows(rng, n_out)
    # inputs that only skipped rows read may hold anything: poison them
    read = np.zeros(n_in, bool)
    for r in np.flatnonzero(live):
        read[indices[indptr[r]:indptr[r + 1]]] = True
    Xp = X.copy()
    Xp[~read] = np.nan
    return indptr, indices, data, bias, X, Xp, live, read


@pytest.mark.parametrize("seed", range(4))
def test_csr_forward_computes_only_live_rows(seed, mode):
    rng = np.random.default_rng(100 + seed)
    indptr, indices, data, bias, X, Xp, live, read = _case(rng)
    assert not read.all()
    want = np.empty((len(bias), X.shape[1]), F32)
    cpu.csr_forward(indptr, indices, data, bias, X, want)
    got = np.full_like(want, 7.0)
    cpu.csr_forward(indptr, indices, data, bias, Xp, got, live)
    np.testing.assert_array_equal(got[live == 1], want[live == 1])
    assert np.all(got[live == 0] == 7.0)


@pytest.mark.parametrize("bits", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_spike_pack_and_spike_forward_skip_rows(seed, bits, mode):
    rng = np.random.default_rng(200 + seed)
    indptr, indices, data, bias, X, Xp, live, read = _case(rng, N=48)
    n_in, N = X.shape
    thr = 4  # some inputs listed spike by spike, the others streamed

    def pack(x, rows=None):
        X8, cnt, cols = np.full(x.shape, 9, np.uint8), np.full(n_in, -1, np.int32), np.full(x.shape, -1, np.int32)
        Xb = np.full((n_in, (N + 15) // 16), 0xFFFF, np.uint16) if bits else None
        bad = cpu.spike_pack(x, X8, cnt, cols, thr, Xb, rows)
        return bad, X8, cnt, cols, Xb

    bad, X8, cnt, cols, Xb = pack(X)
    assert bad == 0
    read8 = read.astype(np.uint8)
    bad_m, X8m, cntm, colsm, Xbm = pack(Xp, read8)
    assert bad_m == 0  # the NaN rows were not read
    assert pack(Xp)[0] > 0  # (they would have been counted)
    np.testing.assert_array_equal(cntm[read], cnt[read])
    assert np.all(cntm[~read] == 0)  # skipped inputs are packed as silent
    np.testing.assert_array_equal(X8m[read], X8[read])
    if bits:
        np.testing.assert_array_equal(Xbm[read], Xb[read])
    for j in np.flatnonzero(read & (cnt > 0) & (cnt < thr)):
        np.testing.assert_array_equal(colsm[j, :cnt[j]], cols[j, :cnt[j]])

    want = np.empty((len(bias), N), F32)
    cpu.csr_forward_spikes(indptr, indices, data, bias, X8, cnt, cols, thr, want, Xb=Xb)
    got = np.full_like(want, 7.0)
    cpu.csr_forward_spikes(indptr, indices, data, bias, X8m, cntm, colsm, thr, got, Xb=Xbm, live=live)
    np.testing.assert_array_equal(got[live == 1], want[live == 1])
    assert np.all(got[live == 0] == 7.0)


def test_masks_must_be_uint8_rows():
    I = np.zeros((3, 2, 2), F32)
    prm = LIFParams().kernel_params(F32)
    with pytest.raises(ValueError, match="lif_forward live: expected a uint8 row mask of shape"):
        cpu.lif_forward(I, np.zeros((3, 2), F32), prm, np.empty_like(I), np.empty_like(I), np.empty((3, 2), F32),
                        np.ones(3, bool))


# --------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------
def _nan_buffers(monkeypatch):
    """Every fresh buffer of the cpu backend holds NaN: a value read before it is written shows."""
    monkeypatch.setattr(CpuBackend, "empty", lambda self, shape, dtype: np.full(shape, np.nan, dtype))


def _runs(net, steps=3, seed=4, record=False, n_in=40, n_out=5):
    """Outputs and gradients of ``steps`` forward/backward passes (zero_grad before each)."""
    rng = np.random.default_rng(seed)
    outs, grads = [], []
    for _ in range(steps):
        x = (rng.random((6, 8, n_in)) < 0.4).astype(F32)
        out = net.forward(x, record=record)
        outs.append(np.array(out, copy=True))
        _, g = ce_count(out, rng.integers(0, n_out, 8))
        net.zero_grad()
        net.backward(g)
        grads.append([np.array(q.grad, copy=True) for q in net.parameters()])
    return outs, grads


def _mlp(sizes, density, seed=3):
    p = LIFParams.from_decay(0.9, reset="hard")
    return mlp(sizes, density=density, hidden=p, readout=p, output="lif", sparse=True, seed=seed)


def _skipped(lif):
    """The neurons the last forward of LIF layer ``lif`` did not compute (their final membrane is NaN)."""
    return np.isnan(lif.v_last).all(axis=0)


@pytest.mark.parametrize("sizes", [[40, 60, 5], [40, 60, 30, 5], [40, 50, 50, 40, 5]])
@pytest.mark.parametrize("density", [0.05, 0.1, 0.4])
def test_network_is_the_same_bits_without_skipped_neurons(monkeypatch, sizes, density, mode):
    _nan_buffers(monkeypatch)
    want = _runs(_mlp(sizes, density), record=True)
    net = _mlp(sizes, density)
    got = _runs(net)
    for a, b in zip(want[0], got[0]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(want[1], got[1]):
        for x, y in zip(a, b):
            assert np.all(np.isfinite(y))
            np.testing.assert_array_equal(x, y)
    # the hidden neurons skipped are exactly those whose spikes reach the output through no path of connections
    syn, neu = net.layers[0::2], net.layers[1::2]
    reach = np.ones(sizes[-1], bool)
    for k in range(len(syn) - 1, 0, -1):  # walk up from the output
        w = syn[k].weight.copy()
        w.data[:] = 1.0  # stored zeros are connections too
        reach = (w.toarray() != 0)[reach].any(axis=0)
        np.testing.assert_array_equal(_skipped(neu[k - 1]), ~reach)
    hidden = neu[:-1]
    if density == 0.05:
        assert _skipped(hidden[-1]).any()


def test_record_computes_every_neuron(monkeypatch):
    _nan_buffers(monkeypatch)
    net = _mlp([40, 60, 5], 0.05)
    x = (np.random.default_rng(0).random((4, 3, 40)) < 0.4).astype(F32)
    net.forward(x)
    lif = net.layers[1]
    assert _skipped(lif).sum() > 10
    net.forward(x, record=True)
    assert not _skipped(lif).any()
    rec = net.recorded[lif.name]
    assert all(np.all(np.isfinite(rec[k])) for k in ("u", "v", "spikes"))


def test_rewiring_changes_which_neurons_run(monkeypatch):
    # a new connection from a skipped neuron makes it run at the next forward (the mask follows the structure)
    _nan_buffers(monkeypatch)
    net, ref = _mlp([40, 60, 5], 0.05), _mlp([40, 60, 5], 0.05)
    x = (np.random.default_rng(1).random((4, 3, 40)) < 0.5).astype(F32)
    net.forward(x)
    j = int(np.flatnonzero(_skipped(net.layers[1]))[0])
    for m in (net, ref):
        w = m.layers[2].weight.tolil()
        w[0, j] = 0.5
        w = w.tocsr()
        m.layers[2].set_connections(w.indptr, w.indices, w.data)
    out = net.forward(x)
    assert not _skipped(net.layers[1])[j]
    np.testing.assert_array_equal(out, ref.forward(x, record=True))


def test_masks_are_kept_until_a_layer_key_changes(monkeypatch):
    # the network walks its layers for row masks once, then again only when a layer's row_mask_key changes:
    # new connections, retain_output_grad, another layer object at a position
    _nan_buffers(monkeypatch)
    walks = []
    orig = SparseLinear.input_rows_needed
    monkeypatch.setattr(SparseLinear, "input_rows_needed", lambda self, live=None: walks.append(self) or orig(self, live))
    net, ref = _mlp([40, 60, 5], 0.05), _mlp([40, 60, 5], 0.05)
    x = (np.random.default_rng(5).random((4, 3, 40)) < 0.5).astype(F32)
    first = net.input_rows_needed()
    n = len(walks)
    for _ in range(3):
        net.forward(x)
        np.testing.assert_array_equal(net.input_rows_needed(), first)
    assert len(walks) == n  # kept
    fc2 = net.layers[2]
    fc2.retain_output_grad = True  # its output gradient must be whole: no masks into or out of it
    assert fc2.row_mask_key[0] is False
    np.testing.assert_array_equal(net.forward(x), ref.forward(x, record=True))
    assert not _skipped(net.layers[1]).any() and len(walks) > n
    fc2.retain_output_grad = False
    net.forward(x)
    assert _skipped(net.layers[1]).any()
    other = _mlp([40, 60, 5], 0.05, seed=9).layers[2]
    net.layers[2] = other  # another layer object: walked again, and its structure decides
    n = len(walks)
    net.forward(x)
    assert len(walks) > n
    w = other.weight.copy()
    w.data[:] = 1.0
    np.testing.assert_array_equal(_skipped(net.layers[1]), (w.toarray() == 0).all(axis=0))


def test_layer_backward_after_a_masked_forward(monkeypatch):
    _nan_buffers(monkeypatch)
    net, ref = _mlp([40, 60, 5], 0.05), _mlp([40, 60, 5], 0.05)
    x = (np.random.default_rng(2).random((4, 3, 40)) < 0.4).astype(F32)
    net.forward(x)
    ref.forward(x, record=True)
    lif, skipped = net.layers[1], _skipped(net.layers[1])
    g = np.random.default_rng(3).normal(size=(4, 3, 60)).astype(F32)
    g[:, :, skipped] = 0.0  # a gradient only for the neurons computed: the same bits as after a full forward
    np.testing.assert_array_equal(lif.backward(g), ref.layers[1].backward(g))
    g[0, 0, np.flatnonzero(skipped)[0]] = 1.0
    with pytest.raises(ValueError, match="lif.*gradient for neurons the last forward did not compute"):
        lif.backward(g)
    live = np.ones(60, np.uint8)
    with pytest.raises(ValueError, match="live marks neurons the last forward did not compute"):
        lif.backward(g, live=live)


def test_dense_weight_grad_needs_an_unmasked_input():
    net = _mlp([40, 60, 5], 0.05)
    x = (np.random.default_rng(5).random((4, 3, 40)) < 0.4).astype(F32)
    fc2 = net.layers[2]
    _, g = ce_count(net.forward(x), np.arange(3))
    fc2.retain_output_grad = True  # too late: the forward already skipped the neurons fc2 does not read
    net.backward(g)
    with pytest.raises(RuntimeError, match="input was masked.*set retain_output_grad=True before the forward"):
        fc2.dense_weight_grad()
    _, g = ce_count(net.forward(x), np.arange(3))  # retained before the forward: every neuron runs
    assert not _skipped(net.layers[1]).any()
    net.backward(g)
    assert np.all(np.isfinite(fc2.dense_weight_grad()))


def test_forward_masks_are_refused_where_they_cannot_apply():
    net = _mlp([10, 12, 3], 0.5)
    x = np.ones((2, 3, 10), F32)
    fc, lif = net.layers[0], net.layers[1]
    live = np.ones(12, np.uint8)
    with pytest.raises(ValueError, match="record=True computes every row"):
        fc.forward(x, record=True, live=live)
    h = fc.forward(x)
    live_in = live.copy()
    live_in[3] = 0
    with pytest.raises(ValueError, match="live must mark only neurons whose input rows live_in marks"):
        lif.forward(h, live=live, live_in=live_in)
    net.to("reference")
    with pytest.raises(ValueError, match=f"{net.layers[0].name}: forward takes no row masks"):
        net.layers[0].forward(x, live=live)


# --------------------------------------------------------------------------
# The network's input: features that only skipped neurons read
# --------------------------------------------------------------------------
def _reach_inputs(net):
    """Input features with a path of connections to the output (numpy, from the weights)."""
    reach = np.ones(net.out_features, bool)
    for syn in net.layers[-2::-2]:  # the synaptic layers, from the output down
        w = syn.weight.copy()
        w.data[:] = 1.0  # stored zeros are connections too
        reach = (w.toarray() != 0)[reach].any(axis=0)
    return reach


@pytest.mark.parametrize("sizes", [[40, 60, 5], [40, 60, 30, 5]])
def test_input_rows_needed_is_the_inputs_with_a_path_to_the_output(sizes):
    net = _mlp(sizes, 0.05)
    read = net.input_rows_needed()
    assert read.dtype == np.uint8
    np.testing.assert_array_equal(read.astype(bool), _reach_inputs(net))
    assert 0 < read.sum() < sizes[0]
    with pytest.raises(ValueError, match="read-only"):
        read[:] = 0  # no caller can change the network's own mask
    assert net.input_rows_needed() is read  # the same object until the mask changes (EncodeAhead compares it so)
    assert _mlp(sizes, 1.0).input_rows_needed() is None  # every input is read
    net.to("reference")  # no row masks there: every input is read
    assert net.input_rows_needed() is None


@pytest.mark.parametrize("spikes", [True, False])
def test_unread_inputs_are_neither_read_nor_checked(monkeypatch, spikes, mode):
    _nan_buffers(monkeypatch)
    net, ref = _mlp([40, 60, 5], 0.05), _mlp([40, 60, 5], 0.05)
    net.layers[0].spike_input = True  # pack even at 3 connections per input: the check rides on packing
    unread = net.input_rows_needed() == 0
    rng = np.random.default_rng(7)
    x = (rng.random((4, 3, 40)) < 0.4).astype(F32) if spikes else rng.normal(0.5, 1.0, (4, 3, 40)).astype(F32)
    y = np.arange(3)
    poisoned = x.copy()
    poisoned[..., unread] = np.nan if spikes else np.inf
    out = net.forward(poisoned)
    want = ref.forward(x, record=True)
    np.testing.assert_array_equal(out, want)
    for m in (net, ref):
        m.zero_grad()
        m.backward(ce_count(want, y)[1])
    for a, b in zip(net.parameters(), ref.parameters()):
        np.testing.assert_array_equal(a.grad, b.grad)
    assert net.layers[0].input_was_spikes == spikes
    bad = poisoned.copy()
    bad[1, 2, np.flatnonzero(~unread)[0]] = np.nan  # a feature that is read
    with pytest.raises(ValueError, match="network input: contains 1 NaN/Inf"):
        net.forward(bad)
    with pytest.raises(ValueError, match="network input: contains"):
        net.forward(poisoned, record=True)  # record reads every input
