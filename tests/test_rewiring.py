"""Rewiring: prune/grow rules, the pure CSR event, the Rewirer schedule,
invariants at every event, optimizer-state alignment, history, checkpoints."""
import copy
import json
import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snn_core import SGD, Adam, SparseLinear, ce_membrane, mlp
from snn_core.sparse import check_csr
from snn_core.structure import (GROW_RULES, PRUNE_RULES, Rewirer, RewiringHistory, apportion, default_t_end,
                                grow_gradient, grow_momentum, grow_random, largest, position_keys,
                                prune_gradient, prune_magnitude, prune_set, random_structure,
                                remove_connections, rewire_csr, rewire_layer, row_mean_abs, smallest,
                                sparse_init, zeta_schedule)

FAST = settings(max_examples=40, deadline=None)


def random_csr(rng, n_out, n_in, density, dtype=np.float32):
    nnz = int(round(density * n_out * n_in))
    indptr, indices = random_structure(n_out, n_in, nnz, rng)
    data = rng.normal(size=nnz).astype(dtype)
    return indptr, indices, data


def batch(rng, n_in, T=4, B=8, n_classes=2):
    x = (rng.random((T, B, n_in)) < 0.4).astype(np.float32)
    return x, rng.integers(0, n_classes, B)


def train_step(net, opt, rng, rewirer=None, it=None):
    if rewirer is not None:
        rewirer.prepare(it, net)
    x, y = batch(rng, net.in_features, n_classes=net.out_features)
    _, g = ce_membrane(net.forward(x), y)
    net.zero_grad()
    net.backward(g)
    opt.step()


# --------------------------------------------------------------------------
# Selection and prune rules
# --------------------------------------------------------------------------
@FAST
@given(st.lists(st.integers(-5, 5), min_size=0, max_size=60), st.integers(0, 70))
def test_smallest_matches_stable_sort_with_ties_by_index(values, n):
    a = np.array(values, float)
    ref = np.sort(np.argsort(a, kind="stable")[:n])
    assert np.array_equal(smallest(a, n), ref)
    ref = np.sort(np.argsort(-a, kind="stable")[:n])
    assert np.array_equal(largest(a, n), ref)


@FAST
@given(st.integers(1, 200), st.floats(0, 0.99), st.integers(0, 2 ** 31))
def test_prune_magnitude_and_gradient_pick_the_smallest_scores(nnz, frac, seed):
    rng = np.random.default_rng(seed)
    data = np.round(rng.normal(size=nnz), 1).astype(np.float32)  # rounding makes ties
    n = int(frac * nnz)
    idx = prune_magnitude(data, n)
    assert len(idx) == n and np.all(np.diff(idx) > 0)
    assert np.array_equal(idx, np.sort(np.argsort(np.abs(data), kind="stable")[:n]))
    grad = rng.normal(size=nnz).astype(np.float32)
    idx = prune_gradient(data, n, grad)
    score = np.abs(data.astype(np.float64) * grad)
    assert np.array_equal(idx, np.sort(np.argsort(score, kind="stable")[:n]))


@FAST
@given(st.integers(1, 200), st.floats(0, 0.99), st.integers(0, 2 ** 31))
def test_prune_set_closest_to_zero_per_sign(nnz, frac, seed):
    rng = np.random.default_rng(seed)
    data = rng.normal(size=nnz).astype(np.float32)
    data[rng.random(nnz) < 0.1] = 0.0
    n = int(frac * nnz)
    idx = prune_set(data, n)
    assert len(idx) == n and len(np.unique(idx)) == n
    gone = np.zeros(nnz, bool)
    gone[idx] = True
    zeros = data == 0
    if n <= zeros.sum():
        assert np.all(zeros[idx])
        return
    assert np.all(gone[zeros]), "zeros are closest to zero and go first"
    for side in (data > 0, data < 0):  # within each sign, every pruned weight is closer to 0 than every kept one
        if (gone & side).any() and (~gone & side).any():
            assert np.abs(data[gone & side]).max() <= np.abs(data[~gone & side]).min()
    pos, neg = (data > 0).sum(), (data < 0).sum()
    rest = n - zeros.sum()
    n_pos = (gone & (data > 0)).sum()
    if 0 < rest and pos and neg:  # same fraction of each sign, up to rounding and capacity
        share = rest * pos / (pos + neg)
        assert abs(n_pos - share) <= 1 or n_pos == pos or (rest - n_pos) == neg


def test_prune_gradient_checks_alignment():
    with pytest.raises(ValueError, match="grad"):
        prune_gradient(np.ones(5), 2, np.ones(4))


# --------------------------------------------------------------------------
# Grow rules
# --------------------------------------------------------------------------
@FAST
@given(st.integers(1, 30), st.integers(1, 30), st.floats(0, 1), st.floats(0, 1), st.integers(0, 2 ** 31))
def test_grow_random_picks_distinct_empty_positions(n_out, n_in, d, f, seed):
    rng = np.random.default_rng(seed)
    indptr, indices, _ = random_csr(rng, n_out, n_in, d)
    empty = n_out * n_in - len(indices)
    n = int(f * empty)
    keys = grow_random(indptr, indices, (n_out, n_in), n, rng)
    assert len(keys) == n and np.all(np.diff(keys) > 0)
    assert keys.min(initial=0) >= 0 and keys.max(initial=0) < n_out * n_in
    assert not np.isin(keys, position_keys(indptr, indices, n_in)).any()
    with pytest.raises(ValueError, match="empty"):
        grow_random(indptr, indices, (n_out, n_in), empty + 1, rng)


def test_grow_random_is_uniform_over_all_empty_positions():
    # 3 x 4 layer, rows with 3, 1 and 0 connections: all 8 empty positions equally likely
    indptr = np.array([0, 3, 4, 4], np.int32)
    indices = np.array([0, 1, 2, 3], np.int32)
    rng = np.random.default_rng(1)
    hits = np.zeros(12)
    for _ in range(2000):
        hits[grow_random(indptr, indices, (3, 4), 2, rng)] += 1
    occupied = position_keys(indptr, indices, 4)
    assert hits[occupied].sum() == 0
    expected = 2000 * 2 / 8
    assert np.all(np.abs(np.delete(hits, occupied) - expected) < 5 * np.sqrt(expected))


@FAST
@given(st.integers(1, 25), st.integers(1, 25), st.floats(0, 1), st.floats(0, 1), st.integers(0, 2 ** 31))
def test_grow_gradient_takes_largest_empty_gradients(n_out, n_in, d, f, seed):
    rng = np.random.default_rng(seed)
    indptr, indices, _ = random_csr(rng, n_out, n_in, d)
    g = np.round(rng.normal(size=(n_out, n_in)), 1).astype(np.float32)
    occupied = position_keys(indptr, indices, n_in)
    n = int(f * (n_out * n_in - len(occupied)))
    keys = grow_gradient(indptr, indices, (n_out, n_in), n, g)
    score = np.abs(g).reshape(-1).astype(float)
    score[occupied] = -np.inf
    assert np.array_equal(keys, np.sort(np.argsort(-score, kind="stable")[:n]))


def test_apportion_is_proportional_capped_and_exact():
    rng = np.random.default_rng(0)
    assert apportion(10, [1, 1, 2, 0], [10, 10, 10, 10], rng).tolist() == [2, 3, 5, 0] or \
        apportion(10, [1, 1, 2, 0], [10, 10, 10, 10], rng).tolist() == [3, 2, 5, 0]
    a = apportion(10, [1, 1, 100, 0], [5, 5, 2, 5], rng)
    assert a.sum() == 10 and a[2] == 2 and np.all(a <= [5, 5, 2, 5]) and a[3] == 0
    a = apportion(12, [1, 0, 0, 0], [2, 5, 5, 5], rng)  # overflow spreads over zero-score rows
    assert a.sum() == 12 and a[0] == 2
    a = apportion(7, [0, 0, 0], [3, 3, 3], rng)  # all zero: uniform over room
    assert a.sum() == 7 and np.all(a <= 3)


@FAST
@given(st.integers(0, 60), st.lists(st.floats(0, 10), min_size=1, max_size=12), st.integers(0, 2 ** 31))
def test_apportion_properties(n, w, seed):
    rng = np.random.default_rng(seed)
    caps = rng.integers(0, 10, len(w))
    n = min(n, int(caps.sum()))
    a = apportion(n, w, caps, rng)
    assert a.sum() == n and np.all(a >= 0) and np.all(a <= caps)


def test_grow_momentum_follows_row_momentum():
    n_out, n_in = 4, 50
    indptr = np.zeros(n_out + 1, np.int32)
    keys = grow_momentum(indptr, np.empty(0, np.int32), (n_out, n_in), 40, np.random.default_rng(0),
                         np.array([0.0, 1.0, 3.0, 0.0]))
    assert np.bincount(keys // n_in, minlength=n_out).tolist() == [0, 10, 30, 0]
    with pytest.raises(ValueError, match="row_score"):
        grow_momentum(indptr, np.empty(0, np.int32), (n_out, n_in), 4, np.random.default_rng(0), np.ones(3))
    assert np.allclose(row_mean_abs(np.array([0, 2, 2, 3]), np.array([1.0, -3.0, 5.0])), [2.0, 0.0, 5.0])


# --------------------------------------------------------------------------
# The pure CSR event
# --------------------------------------------------------------------------
def check_event(before, after, shape, prune_idx, grown_keys, new_values=None):
    """Every invariant of one event on CSR arrays."""
    indptr, indices, data = before
    n_indptr, n_indices, n_data, src = after
    n_in = shape[1]
    check_csr(n_indptr, n_indices, shape)
    assert n_indptr.dtype == np.int32 and n_indices.dtype == np.int32 and n_data.dtype == data.dtype
    old_keys = position_keys(indptr, indices, n_in)
    new_keys = position_keys(n_indptr, n_indices, n_in)
    assert len(new_keys) == len(old_keys) - len(prune_idx) + len(grown_keys)
    assert np.all(np.diff(new_keys) > 0), "no duplicate (row, col)"
    pruned_keys = old_keys[prune_idx]
    kept_keys = np.delete(old_keys, prune_idx)
    # every grown position was empty before the event or pruned in it
    assert not np.isin(grown_keys, kept_keys).any()
    # every pruned connection is gone unless grown back (then it is new: src == -1)
    back = np.isin(pruned_keys, grown_keys)
    assert not np.isin(pruned_keys[~back], new_keys).any()
    assert np.array_equal(np.sort(np.concatenate([kept_keys, grown_keys])), new_keys)
    # src: kept entries point at their old index with unchanged weight; new ones are -1
    is_new = np.isin(new_keys, grown_keys)
    assert np.all(src[is_new] == -1) and np.all(src[~is_new] >= 0)
    assert np.array_equal(old_keys[src[~is_new]], new_keys[~is_new])
    assert np.array_equal(n_data[~is_new], data[src[~is_new]])
    if new_values is not None:
        assert np.array_equal(n_data[is_new], new_values)


@FAST
@given(st.integers(1, 30), st.integers(1, 30), st.floats(0.01, 1), st.floats(0, 0.99), st.integers(0, 2 ** 31))
def test_rewire_csr_invariants(n_out, n_in, d, zeta, seed):
    rng = np.random.default_rng(seed)
    indptr, indices, data = random_csr(rng, n_out, n_in, d)
    n = int(zeta * len(data))
    prune_idx = rng.choice(len(data), n, replace=False)
    k_indptr, k_indices, keep = remove_connections(indptr, indices, prune_idx)
    assert keep.sum() == len(data) - n
    grown = grow_random(k_indptr, k_indices, (n_out, n_in), n, rng)
    vals = rng.normal(size=n).astype(np.float32)
    out = rewire_csr(indptr, indices, data, (n_out, n_in), prune_idx, grown // n_in, grown % n_in, vals)
    check_event((indptr, indices, data), out, (n_out, n_in), np.sort(prune_idx), grown, vals)


def test_rewire_csr_rejects_bad_positions():
    indptr, indices, data = np.array([0, 2, 3], np.int32), np.array([0, 2, 1], np.int32), np.ones(3, np.float32)
    shape = (2, 3)
    with pytest.raises(ValueError, match="already"):
        rewire_csr(indptr, indices, data, shape, [0], [0], [2], 0.0)  # (0, 2) is kept
    out = rewire_csr(indptr, indices, data, shape, [1], [0], [2], 0.0)  # just pruned: may be regrown
    assert out[3].tolist() == [0, -1, 2] and out[2].tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="duplicates"):
        rewire_csr(indptr, indices, data, shape, [0, 1], [1, 1], [0, 0], 0.0)
    with pytest.raises(ValueError, match="duplicates"):
        rewire_csr(indptr, indices, data, shape, [0, 0], [1], [0], 0.0)
    with pytest.raises(ValueError, match="range"):
        rewire_csr(indptr, indices, data, shape, [0], [2], [0], 0.0)
    with pytest.raises(ValueError, match="prune_idx"):
        rewire_csr(indptr, indices, data, shape, [3], [1], [0], 0.0)


# --------------------------------------------------------------------------
# Schedule and configuration
# --------------------------------------------------------------------------
def test_zeta_schedule():
    assert zeta_schedule(0, 0.3, 100) == pytest.approx(0.3)
    assert zeta_schedule(50, 0.3, 100) == pytest.approx(0.15)
    assert zeta_schedule(25, 0.3, 100) == pytest.approx(0.15 * (1 + math.cos(math.pi / 4)))
    assert zeta_schedule(100, 0.3, 100) == 0.0 and zeta_schedule(150, 0.3, 100) == 0.0
    assert zeta_schedule(70, 0.3, 100, "constant") == 0.3
    assert zeta_schedule(70, 0.3, 100, "none") == 0.0
    assert default_t_end(1000) == 750


def test_event_iterations():
    r = Rewirer(t_iter=10, t_end=45)
    assert [it for it in range(0, 100) if r.is_event(it)] == [10, 20, 30, 40]
    r = Rewirer(n_iterations=100, t_iter=25)
    assert r.t_end == 75 and [it for it in range(0, 100) if r.is_event(it)] == [25, 50]
    assert not Rewirer(t_iter=10, t_end=45, grow="random").needs_dense_grad(10)
    g = Rewirer(t_iter=10, t_end=45, grow="gradient")
    assert g.needs_dense_grad(10) and not g.needs_dense_grad(11) and not g.needs_dense_grad(50)


@pytest.mark.parametrize("kwargs,match", [
    (dict(zeta0=-0.1), "zeta0"), (dict(zeta0=1.0), "zeta0"), (dict(zeta0=1.5), "zeta0"),
    (dict(t_iter=0), "t_iter"), (dict(t_iter=-5), "t_iter"), (dict(t_iter=2.5), "t_iter"),
    (dict(prune="smallest"), "prune.*magnitude.*set.*gradient"),
    (dict(grow="rigl"), "grow.*random.*gradient.*momentum"),
    (dict(decay="linear"), "decay.*cosine.*constant.*none"),
    (dict(new_weight="ones"), "new_weight.*zero.*random"),
    (dict(t_end=0), "t_end"), (dict(snapshot_every=0), "snapshot_every"),
])
def test_rewirer_rejects_bad_config(kwargs, match):
    kw = dict(t_end=100)
    kw.update(kwargs)
    with pytest.raises(ValueError, match=match):
        Rewirer(**kw)


def test_rewirer_needs_t_end_unless_static():
    with pytest.raises(ValueError, match="t_end"):
        Rewirer()
    Rewirer(enabled=False)
    Rewirer(decay="none")
    with pytest.raises(ValueError, match="n_iterations"):
        default_t_end(0)


def test_rewire_layer_rejects_bad_names():
    layer = SparseLinear(5, 4, 0.5, seed=0)
    rng = np.random.default_rng(0)
    for kw, match in [(dict(prune="x"), "prune"), (dict(grow="x"), "grow"), (dict(new_weight="x"), "new_weight")]:
        with pytest.raises(ValueError, match=match):
            rewire_layer(layer, 1, rng, **kw)
    with pytest.raises(ValueError, match="n"):
        rewire_layer(layer, layer.nnz + 1, rng)
    with pytest.raises(ValueError, match="dense_grad"):
        rewire_layer(layer, 1, rng, grow="gradient")


def test_rewiring_zero_connections_changes_nothing():
    layer = SparseLinear(5, 4, 0.5, seed=0)
    w = layer.weight
    ev = rewire_layer(layer, 0, np.random.default_rng(0))
    assert layer.weight is w and ev["n"] == 0 and np.array_equal(ev["src"], np.arange(layer.nnz))


# --------------------------------------------------------------------------
# Invariants at every event of real training runs
# --------------------------------------------------------------------------
def snapshot(net, opt):
    out = {}
    for layer in net.sparse_layers():
        w = layer.weight
        st = opt.state[opt.index(layer.weight_param)]
        out[layer.name] = (w.indptr.copy(), w.indices.copy(), w.data.copy(), {k: v.copy() for k, v in st.items()})
    return out


def check_rewirer_event(net, opt, rewirer, before, new_weight):
    for layer in net.sparse_layers():
        indptr, indices, data, state = before[layer.name]
        w = layer.weight
        if len(data) == w.shape[0] * w.shape[1]:  # dense layers are left untouched
            assert layer.name not in rewirer.last_events
            assert np.array_equal(w.data, data) and np.array_equal(w.indices, indices)
            continue
        ev = rewirer.last_events[layer.name]
        pruned_keys = ev["pruned_keys"]
        old_keys = position_keys(indptr, indices, w.shape[1])
        prune_idx = np.flatnonzero(np.isin(old_keys, pruned_keys))
        assert len(prune_idx) == len(pruned_keys) == len(ev["grown_keys"]) == ev["n"]
        assert layer.nnz == len(data), "nnz of every layer identical before and after"
        check_event((indptr, indices, data), (w.indptr, w.indices, w.data, ev["src"]), w.shape, prune_idx,
                    ev["grown_keys"], np.zeros(ev["n"], data.dtype) if new_weight == "zero" else None)
        assert layer.weight_param.value is w.data
        # optimizer state aligned with the new data: kept keep their moments, new ones start at 0
        src = ev["src"]
        st = opt.state[opt.index(layer.weight_param)]
        for k, old in state.items():
            assert st[k].shape == w.data.shape
            assert np.array_equal(st[k][src >= 0], old[src[src >= 0]])
            assert np.all(st[k][src < 0] == 0)


@settings(max_examples=12, deadline=None)
@given(st.lists(st.integers(2, 24), min_size=2, max_size=4), st.floats(0.1, 1.0),
       st.sampled_from(PRUNE_RULES), st.sampled_from(GROW_RULES), st.sampled_from(["zero", "random"]),
       st.sampled_from(["adam", "sgd"]), st.integers(0, 2 ** 31))
def test_invariants_at_every_event(sizes, density, prune, grow, new_weight, optim, seed):
    net = mlp(sizes, seed=seed % 1000, gain=2.0)
    sparse_init(net, density, seed=seed, min_per_row=1)
    opt = Adam(net.parameters(), lr=1e-2) if optim == "adam" else SGD(net.parameters(), lr=0.05, momentum=0.9)
    r = Rewirer(t_iter=2, zeta0=0.5, t_end=9, prune=prune, grow=grow, new_weight=new_weight, seed=seed)
    rng = np.random.default_rng(seed)
    events = 0
    for it in range(1, 11):
        train_step(net, opt, rng, r, it)
        before = snapshot(net, opt)
        recs = r.maybe_rewire(it, net, opt)
        if r.is_event(it):
            events += 1
            # dense layers (no empty position) are skipped; the others all rewire
            assert len(recs) == sum(l.nnz < l.in_features * l.out_features for l in net.sparse_layers())
            check_rewirer_event(net, opt, r, before, new_weight)
            for layer in net.sparse_layers():
                assert layer.retain_output_grad is False
        else:
            assert recs == []
            for layer in net.sparse_layers():  # nothing moves between events
                assert np.array_equal(layer.weight.indices, before[layer.name][1])
    assert events == 4 and r.n_events == 4
    n_sparse = sum(l.nnz < l.in_features * l.out_features for l in net.sparse_layers())
    assert len(r.history) == 4 * n_sparse


def test_structure_actually_changes_and_density_is_exact():
    net = mlp([30, 20, 4], seed=0)
    sparse_init(net, 0.2, seed=0)
    nnz0 = [l.nnz for l in net.sparse_layers()]
    keys0 = [position_keys(l.weight.indptr, l.weight.indices, l.in_features) for l in net.sparse_layers()]
    opt = Adam(net.parameters(), lr=1e-2)
    r = Rewirer(t_iter=1, zeta0=0.3, t_end=20, seed=0)
    rng = np.random.default_rng(0)
    for it in range(1, 21):
        train_step(net, opt, rng)
        r.maybe_rewire(it, net, opt)
    for layer, n0, k0 in zip(net.sparse_layers(), nnz0, keys0):
        assert layer.nnz == n0
        assert not np.array_equal(position_keys(layer.weight.indptr, layer.weight.indices, layer.in_features), k0)


@pytest.mark.parametrize("kw", [dict(enabled=False), dict(decay="none"), dict(enabled=False, t_end=10, t_iter=1)])
def test_static_sparse_control_never_rewires(kw):
    net = mlp([10, 8, 2], seed=0)
    sparse_init(net, 0.3, seed=0)
    before = [l.weight.indices.copy() for l in net.sparse_layers()]
    opt = Adam(net.parameters(), lr=1e-2)
    r = Rewirer(**kw)
    rng = np.random.default_rng(0)
    for it in range(1, 12):
        train_step(net, opt, rng, r, it)
        assert r.maybe_rewire(it, net, opt) == []
        assert r.zeta(it) == 0.0 and not r.is_event(it)
    assert all(np.array_equal(b, l.weight.indices) for b, l in zip(before, net.sparse_layers()))
    assert len(r.history) == 0


def test_gradient_growth_requires_prepare():
    net = mlp([10, 8, 2], density=0.5, seed=0)  # dense layers are never rewired
    opt = Adam(net.parameters(), lr=1e-2)
    r = Rewirer(t_iter=1, t_end=5, grow="gradient")
    train_step(net, opt, np.random.default_rng(0))  # no prepare: the output gradient was not kept
    with pytest.raises(RuntimeError, match="prepare"):
        r.maybe_rewire(1, net, opt)


def test_prepare_touches_the_flag_only_for_gradient_growth():
    net = mlp([10, 8, 2], density=0.5, seed=0)
    layer = net.sparse_layers()[0]
    layer.retain_output_grad = True  # set by the user: a random-growth rewirer leaves it
    Rewirer(t_iter=1, t_end=5).prepare(1, net)
    assert layer.retain_output_grad
    r = Rewirer(t_iter=2, t_end=5, grow="gradient")
    r.prepare(1, net)  # not an event: off
    assert not layer.retain_output_grad
    r.prepare(2, net)
    assert layer.retain_output_grad


def test_history_refuses_unsorted_keys():
    h = RewiringHistory()
    h.register("fc", (4, 5), np.array([0, 2, 2, 3, 3]), np.array([0, 1, 4]))
    with pytest.raises(ValueError, match="pruned_keys: expected sorted"):
        h.record(1, "fc", 0.1, [1, 0], [2, 3], np.array([0, 2, 2, 3, 3]), np.array([2, 3, 4]))
    with pytest.raises(ValueError, match="grown_keys: expected sorted"):
        h.record(1, "fc", 0.1, [0], [3, 3], np.array([0, 2, 2, 3, 3]), np.array([1, 3, 4]))
    assert len(h) == 0


def test_gradient_prune_needs_the_gradient():
    net = mlp([10, 8, 2], density=0.5, seed=0)  # dense layers are never rewired
    opt = Adam(net.parameters(), lr=1e-2)
    r = Rewirer(t_iter=1, t_end=5, prune="gradient")
    train_step(net, opt, np.random.default_rng(0))
    net.zero_grad()
    with pytest.raises(RuntimeError, match="zero_grad"):
        r.maybe_rewire(1, net, opt)


def test_momentum_growth_needs_momentum():
    net = mlp([10, 8, 2], density=0.5, seed=0)  # dense layers are never rewired
    opt = SGD(net.parameters(), lr=0.1)
    r = Rewirer(t_iter=1, t_end=5, grow="momentum")
    train_step(net, opt, np.random.default_rng(0))
    with pytest.raises(ValueError, match="momentum"):
        r.maybe_rewire(1, net, opt)
    with pytest.raises(ValueError, match="optimizer"):
        r.maybe_rewire(1, net, None)


def test_random_new_weights_are_small():
    net = mlp([20, 10, 2], seed=0)
    sparse_init(net, 0.3, seed=0)
    opt = Adam(net.parameters(), lr=1e-2)
    r = Rewirer(t_iter=1, t_end=5, new_weight="random", new_weight_scale=0.1, seed=0)
    train_step(net, opt, np.random.default_rng(0))
    r.maybe_rewire(1, net, opt)
    for layer in net.sparse_layers():
        src = r.last_events[layer.name]["src"]
        new = layer.weight.data[src < 0]
        fan_in = np.repeat(np.diff(layer.weight.indptr), np.diff(layer.weight.indptr))[src < 0]
        assert np.any(new != 0) and np.all(np.abs(new) <= 0.1 * np.sqrt(3 / fan_in) + 1e-7)


def test_an_event_on_a_big_layer_uses_no_dense_memory():
    # 20000 x 20000 at 0.1%: a dense bool mask alone would be 400 MB, a float64 array 3.2 GB
    layer = SparseLinear(20000, 20000, bias=False, weight=_big_csr(20000, 0.001))
    tracemalloc.start()
    rewire_layer(layer, int(0.3 * layer.nnz), np.random.default_rng(0))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert layer.nnz == int(round(0.001 * 20000 * 20000))
    assert peak < 60e6, f"peak {peak / 1e6:.1f} MB for nnz={layer.nnz}"


def _big_csr(n, density):
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    indptr, indices = random_structure(n, n, int(round(density * n * n)), rng)
    return sp.csr_matrix((rng.normal(size=len(indices)).astype(np.float32), indices, indptr), shape=(n, n))


# --------------------------------------------------------------------------
# History and checkpoints
# --------------------------------------------------------------------------
def run_training(net, opt, r, its, data_seed):
    rng = np.random.default_rng(data_seed)
    for it in its:
        train_step(net, opt, rng, r, it)
        r.maybe_rewire(it, net, opt)


def test_history_turnover_and_arrays():
    net = mlp([20, 12, 3], seed=1)
    sparse_init(net, 0.3, seed=1)
    opt = Adam(net.parameters(), lr=1e-2)
    r = Rewirer(t_iter=2, zeta0=0.4, t_end=30, seed=1, snapshot_every=3)
    run_training(net, opt, r, range(1, 31), 0)
    h = r.history
    a = h.as_arrays()
    n_rec = 14 * 2
    assert all(len(v) == n_rec for v in a.values())
    f1 = h.as_arrays("fc1")
    assert np.all(f1["layer"] == "fc1") and len(f1["iteration"]) == 14
    assert np.array_equal(f1["iteration"], np.arange(2, 30, 2))
    assert np.all(f1["n_pruned"] == f1["n_grown"])
    assert np.all(f1["nnz"] == net.layers[0].nnz)
    assert np.all(np.diff(f1["frac_initial_kept"]) <= 0) and np.all(np.diff(f1["n_ever_grown"]) >= 0)
    assert np.all(np.diff(f1["frac_explored"]) >= 0)
    n_init = len(h.initial_keys("fc1"))
    # every current connection is either an untouched initial one or was grown at some event
    assert np.allclose(f1["frac_grown"] * f1["nnz"] + f1["frac_initial_kept"] * n_init, f1["nnz"])
    layer = net.layers[0]
    cur = position_keys(layer.weight.indptr, layer.weight.indices, layer.in_features)
    assert np.isclose(f1["frac_grown"][-1], np.isin(cur, h.ever_grown_keys("fc1")).mean())
    assert np.isin(h.alive_initial_keys("fc1"), cur).all()
    ever = h.ever_grown_keys("fc1")
    assert np.array_equal(ever, np.unique(ever))  # sorted, each position once
    explored = len(np.union1d(h.initial_keys("fc1"), ever)) / (layer.out_features * layer.in_features)
    assert np.isclose(f1["frac_explored"][-1], explored)
    snaps = h.snapshots("fc1")
    assert [s[0] for s in snaps] == [0, 6, 12, 18, 24]
    last_snap = snaps[-1]
    assert len(last_snap[2]) == layer.nnz and last_snap[1].shape == (layer.out_features + 1,)


def test_history_round_trip_through_plain_values():
    net = mlp([15, 10, 3], seed=2)
    sparse_init(net, 0.3, seed=2)
    opt = Adam(net.parameters(), lr=1e-2)
    r = Rewirer(t_iter=1, zeta0=0.3, t_end=8, seed=2, snapshot_every=2)
    run_training(net, opt, r, range(1, 10), 0)
    d = r.history.to_dict()
    meta = json.loads(json.dumps(d["meta"]))
    assert all(isinstance(v, np.ndarray) for v in d["arrays"].values())
    h = RewiringHistory.from_dict({"meta": meta, "arrays": {k: v.copy() for k, v in d["arrays"].items()}})
    assert h.records == r.history.records
    for name in ("fc1", "fc2"):
        assert np.array_equal(h.ever_grown_keys(name), r.history.ever_grown_keys(name))
        for (i1, p1, x1), (i2, p2, x2) in zip(h.snapshots(name), r.history.snapshots(name)):
            assert i1 == i2 and np.array_equal(p1, p2) and np.array_equal(x1, x2)
        a, b = h.as_arrays(name), r.history.as_arrays(name)
        assert all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="version"):
        RewiringHistory.from_dict({"meta": dict(meta, version=99), "arrays": d["arrays"]})


@pytest.mark.parametrize("grow", ["random", "gradient", "momentum"])
def test_resume_from_state_dict_is_bit_identical(grow):
    def setup():
        net = mlp([16, 10, 3], seed=3)
        sparse_init(net, 0.3, seed=3)
        opt = Adam(net.parameters(), lr=1e-2)
        return net, opt, Rewirer(t_iter=2, zeta0=0.4, t_end=20, seed=5, grow=grow, new_weight="random",
                                 snapshot_every=2)

    net, opt, r = setup()
    run_training(net, opt, r, range(1, 21), 7)  # uninterrupted

    net2, opt2, r2 = setup()
    rng = np.random.default_rng(7)
    for it in range(1, 11):
        train_step(net2, opt2, rng, r2, it)
        r2.maybe_rewire(it, net2, opt2)
    # "checkpoint": the rewirer through JSON + plain arrays; network/optimizer copied as they are
    state = r2.state_dict()
    state = {"meta": json.loads(json.dumps(state["meta"])), "arrays": {k: v.copy() for k, v in state["arrays"].items()}}
    net3, opt3 = copy.deepcopy((net2, opt2))
    r3 = Rewirer.from_state_dict(state)
    assert r3.config() == r2.config() and r3.n_events == r2.n_events
    for it in range(11, 21):
        train_step(net3, opt3, rng, r3, it)
        r3.maybe_rewire(it, net3, opt3)

    for a, b in zip(net.sparse_layers(), net3.sparse_layers()):
        assert np.array_equal(a.weight.indptr, b.weight.indptr)
        assert np.array_equal(a.weight.indices, b.weight.indices)
        assert np.array_equal(a.weight.data, b.weight.data)
    assert r3.history.records == r.history.records
    assert r3.rng.bit_generator.state == r.rng.bit_generator.state

    r4 = Rewirer(t_end=3)
    r4.load_state_dict(state)
    assert r4.config() == r2.config()
