"""Row masks: the gradient rows that ``Network.backward`` knows to be zero are neither read nor written.

A hidden neuron without outgoing connections has a zero gradient at every
step; with a sparse output layer that is most of the last hidden layer
(91% of 800 neurons at density 0.01 with 10 outputs). The ``cpu`` kernels
take uint8 masks for those rows (``live``: 0 = the row is zero, do not read
it; ``live_out``: the kernel marks the zero rows it left unwritten). These
tests check that the rows marked dead really are never read (they hold NaN
here), that rows left unwritten are exactly the zero rows of the unmasked
result, and that a whole network's gradients are the same bits with and
without masks, starting from buffers full of NaN.
"""

import numpy as np
import pytest

from snn_core import LIFParams, ce_count, mlp
from snn_core.backends import get_backend
from snn_core.backends.cpu import CpuBackend
from snn_core.kernels import cpu
from snn_core.neurons import NeuronKernelParams
from snn_core.sparse import random_connectivity, transpose_structure
from snn_core.surrogate import surrogate_code

F32 = np.float32


def _dead_rows(rng, n, frac=0.4):
    live = (rng.random(n) >= frac).astype(np.uint8)
    live[0] = 0  # at least one dead and one live row
    if n > 1:
        live[-1] = 1
    return live


@pytest.mark.parametrize("reset", [0, 1, 2])
@pytest.mark.parametrize("seed", range(4))
def test_lif_backward_masks(seed, reset, mode):
    rng = np.random.default_rng(seed)
    F, T, B = 9, 6, 5
    u = rng.normal(1.0, 0.6, size=(F, T, B)).astype(F32)
    s = (u >= 1).astype(F32)
    gs = rng.normal(size=(F, T, B)).astype(F32)
    live = _dead_rows(rng, F)
    gs[live == 0] = 0.0
    gs[F // 2] = 0.0  # live by the mask, but zero: found by the kernel
    prm = NeuronKernelParams(alpha=F32(0.8), k0=F32(0), c=F32(0.9), v_th=F32(1.0), v_reset=F32(0.0), reset=reset,
                             detach=0, surrogate=surrogate_code("rectangular"), surrogate_p=F32(1.0), smooth=0)
    want = np.full_like(gs, np.nan)
    cpu.lif_backward(gs, u, s, prm, want)  # no masks: every row written
    poisoned = gs.copy()
    poisoned[live == 0] = np.nan  # rows marked dead must not be read
    for mask_out in (False, True):
        got = np.full_like(gs, 7.0)
        live_out = np.full(F, 9, np.uint8) if mask_out else None
        cpu.lif_backward(poisoned, u, s, prm, got, live, live_out)
        zero_rows = ~want.reshape(F, -1).any(axis=1)
        if mask_out:
            np.testing.assert_array_equal(live_out, (~zero_rows).astype(np.uint8))
            assert np.all(got[zero_rows] == 7.0)  # left unwritten
            np.testing.assert_array_equal(got[~zero_rows], want[~zero_rows])
        else:
            np.testing.assert_array_equal(got, want)
        assert zero_rows[live == 0].all() and zero_rows[F // 2]


@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("spikes", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_weight_gradient_skips_dead_rows(seed, spikes, accumulate, mode):
    rng = np.random.default_rng(10 + seed)
    n_out, n_in, N = 12, 20, 35
    indptr, indices = random_connectivity(n_out, n_in, 0.3, rng)
    X = (rng.random((n_in, N)) < 0.3).astype(F32)
    G = rng.normal(size=(n_out, N)).astype(F32)
    live = _dead_rows(rng, n_out)
    G[live == 0] = 0.0
    poisoned = G.copy()
    poisoned[live == 0] = np.nan
    base = rng.normal(size=len(indices)).astype(F32)
    results = []
    for g, mask in ((G, None), (poisoned, live)):
        out = base.copy() if accumulate else np.full(len(indices), np.nan, F32)
        gb, rownz = np.full(n_out, np.nan, F32), np.full(n_out, 7, np.uint8)
        if spikes:
            thr = 3
            X8, cnt = np.empty((n_in, N), np.uint8), np.empty(n_in, np.int32)
            cols = np.empty((n_in, thr), np.int32)
            assert cpu.spike_pack(X, X8, cnt, cols, thr) == 0
            cpu.csr_grad_spikes(indptr, indices, X8, cnt, cols, thr, g, out, accumulate, gb, rownz, live=mask)
        else:
            cpu.csr_grad_dense(indptr, indices, g, X, out, accumulate, gb, rownz, mask)
        results.append((out, gb, rownz))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    assert not results[1][2][live == 0].any()


@pytest.mark.parametrize("seed", range(4))
def test_input_gradient_leaves_rows_without_live_connections(seed, mode):
    rng = np.random.default_rng(20 + seed)
    n_out, n_in, N = 6, 30, 17
    indptr, indices = random_connectivity(n_out, n_in, 0.15, rng)
    data = rng.normal(size=len(indices)).astype(F32)
    t_indptr, t_indices, perm = transpose_structure(indptr, indices, n_in)
    G = rng.normal(size=(n_out, N)).astype(F32)
    rownz = _dead_rows(rng, n_out, 0.3)
    G[rownz == 0] = np.nan  # rows flagged zero are not read
    want = np.full((n_in, N), np.nan, F32)
    cpu.csr_backward_input_nz(t_indptr, t_indices, perm, data, G, rownz, want)
    got = np.full((n_in, N), 7.0, F32)
    live_out = np.full(n_in, 9, np.uint8)
    cpu.csr_backward_input_nz(t_indptr, t_indices, perm, data, G, rownz, got, live_out)
    reached = np.zeros(n_in, bool)  # inputs with a connection from a row with a gradient
    for r in np.flatnonzero(rownz):
        reached[indices[indptr[r]:indptr[r + 1]]] = True
    assert 0 < reached.sum() < n_in
    np.testing.assert_array_equal(live_out, reached.astype(np.uint8))
    np.testing.assert_array_equal(got[reached], want[reached])
    assert np.all(got[~reached] == 7.0) and np.all(want[~reached] == 0.0)


def _train_grads(monkeypatch, masks, density, steps=3, accumulate=False):
    """Gradients of ``steps`` forward/backward passes of a sparse MLP whose fresh buffers hold NaN
    (``accumulate``: summed over the passes, zero_grad only before the first)."""
    monkeypatch.setattr(CpuBackend, "row_masks", masks)
    monkeypatch.setattr(CpuBackend, "empty", lambda self, shape, dtype: np.full(shape, np.nan, dtype))
    p = LIFParams.from_decay(0.9, reset="hard")
    net = mlp([40, 60, 30, 5], density=density, hidden=p, readout=p, output="lif", sparse=True, seed=3)
    rng = np.random.default_rng(4)
    grads, masks_seen = [], []
    for step in range(steps):
        x = (rng.random((6, 8, 40)) < 0.4).astype(F32)
        _, g = ce_count(net.forward(x), rng.integers(0, 5, 8))
        if step == 0 or not accumulate:
            net.zero_grad()
        net.backward(g)
        grads.append([np.array(q.grad, copy=True) for q in net.parameters()])
        masks_seen.append([None if m.input_grad_live is None else m.input_grad_live.copy() for m in net.layers])
    return net, grads, masks_seen


@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("density", [0.1, 0.4])
def test_network_gradients_are_the_same_bits_with_row_masks(monkeypatch, density, accumulate, mode):
    _, want, _ = _train_grads(monkeypatch, False, density, accumulate=accumulate)
    net, got, seen = _train_grads(monkeypatch, True, density, accumulate=accumulate)
    for a, b in zip(want, got):
        for x, y in zip(a, b):
            assert np.all(np.isfinite(y))
            np.testing.assert_array_equal(x, y)
    # the masks were passed: the output layer's input gradient marks hidden neurons without a path to the loss
    fc_out = net.layers[-2]
    assert seen[-1][-2] is not None and seen[-1][0] is None  # the first layer needs no input gradient
    if density == 0.1:
        assert (seen[-1][-2] == 0).any()
        no_outgoing = np.diff(fc_out.transpose_structure()[0]) == 0
        assert not seen[-1][-2][no_outgoing].any()


def test_retained_output_gradient_is_whole(monkeypatch):
    # rewiring's gradient-based growth retains a layer's output gradient: that layer then takes no masks,
    # so the LIF layer above it writes every row (NaN-filled fresh buffers would show an unwritten one)
    monkeypatch.setattr(CpuBackend, "empty", lambda self, shape, dtype: np.full(shape, np.nan, dtype))
    p = LIFParams.from_decay(0.9)
    rng = np.random.default_rng(0)
    x, labels = (rng.random((5, 6, 30)) < 0.4).astype(F32), rng.integers(0, 4, 6)
    dense = {}
    for device in ("cpu", "reference"):
        net = mlp([30, 50, 4], density=0.1, hidden=p, readout=p, output="lif", sparse=True, seed=1).to(device)
        fc1 = net.layers[0]
        fc1.retain_output_grad = True
        _, g = ce_count(net.forward(x), labels)
        net.backward(g)
        assert net.layers[1].input_grad_live is None
        dense[device] = fc1.dense_weight_grad()
    assert net.layers[2].input_grad_live is None  # reference: no masks anywhere
    assert np.all(np.isfinite(dense["cpu"])) and np.abs(dense["cpu"]).sum() > 0
    np.testing.assert_allclose(dense["cpu"], dense["reference"], rtol=1e-5, atol=1e-6)


def test_row_masks_need_a_backend_that_takes_them():
    p = LIFParams.from_decay(0.9)
    net = mlp([10, 12, 3], density=0.5, hidden=p, readout=p, output="lif", sparse=True, seed=0).to("reference")
    assert not get_backend("reference").row_masks and get_backend("cpu").row_masks
    x = np.ones((2, 3, 10), F32)
    out = net.forward(x)
    for layer in net.layers:
        assert not layer.takes_row_masks
    with pytest.raises(ValueError, match="lif.*takes no row masks"):
        net.layers[-1].backward(np.ones_like(out), mask_out=True)
