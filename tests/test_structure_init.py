"""Sparse initialisation: per-layer densities, exact counts, sparse_init, bad input."""
import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snn_core import mlp
from snn_core.sparse import check_csr
from snn_core.structure import (connection_counts, erdos_renyi_densities, erk_densities, layer_densities,
                                mlp_densities, random_structure, sample_empty_in_rows, sparse_init,
                                uniform_densities)
from snn_core.structure.init import multivariate_hypergeometric, position_keys

FAST = settings(max_examples=60, deadline=None)

dims = st.integers(1, 60)
shapes_2d = st.lists(st.tuples(dims, dims), min_size=1, max_size=4)
shapes_4d = st.lists(st.tuples(st.integers(1, 32), st.integers(1, 32), st.integers(1, 5), st.integers(1, 5)),
                     min_size=1, max_size=4)
densities = st.floats(0.01, 1.0)


# --------------------------------------------------------------------------
# Per-layer densities
# --------------------------------------------------------------------------
def _check_eps_solution(shapes, D, p, scale):
    sizes = np.array([math.prod(s) for s in shapes], float)
    p = np.array(p)
    assert np.all((p > 0) & (p <= 1))
    assert np.isclose((p * sizes).sum(), D * sizes.sum(), rtol=1e-9)
    # one eps for every layer that is not dense; dense layers would have wanted more
    free = p < 1
    if free.any():
        eps = p[free] / scale[free]
        assert np.allclose(eps, eps[0], rtol=1e-9)
        assert np.all(eps[0] * scale[~free] >= 1 - 1e-12)


@FAST
@given(shapes_2d, densities)
def test_erdos_renyi_one_eps_reaches_global_density(shapes, D):
    p = erdos_renyi_densities(shapes, D)
    scale = np.array([(o + i) / (o * i) for o, i in shapes])
    _check_eps_solution(shapes, D, p, scale)


@FAST
@given(shapes_4d, densities)
def test_erk_one_eps_reaches_global_density(shapes, D):
    p = erk_densities(shapes, D)
    scale = np.array([sum(s) / math.prod(s) for s in shapes])
    _check_eps_solution(shapes, D, p, scale)


def test_erdos_renyi_known_values_and_dense_small_layer():
    # 784-800-10 at 5%: the 800x10 readout wants p > 1 so it becomes dense, eps re-solved on fc1
    p = erdos_renyi_densities([(800, 784), (10, 800)], 0.05)
    assert p[1] == 1.0
    assert np.isclose(p[0] * 800 * 784, 0.05 * (800 * 784 + 8000) - 8000)
    # no capping: p proportional to (n_in + n_out) / (n_in * n_out)
    p = erdos_renyi_densities([(100, 100), (50, 100)], 0.1)
    assert np.isclose(p[0] / p[1], (200 / 1e4) / (150 / 5e3))
    assert erdos_renyi_densities([(3, 4), (5, 6)], 1.0) == [1.0, 1.0]


def test_erk_2d_entries_use_the_er_scale():
    assert np.allclose(erk_densities([(30, 40), (2, 30)], 0.2), erdos_renyi_densities([(30, 40), (2, 30)], 0.2))


def test_uniform_is_density_everywhere():
    assert uniform_densities([(3, 4), (8, 2, 3, 3)], 0.3) == [0.3, 0.3]


@FAST
@given(shapes_2d, st.floats(0.05, 1.0), st.sampled_from(["erdos_renyi", "uniform"]))
def test_connection_counts_are_exact(shapes, D, method):
    sizes = [o * i for o, i in shapes]
    try:
        counts = connection_counts(shapes, D, method)
    except ValueError as e:
        assert "min_per_row" in str(e)
        return
    assert sum(counts) == round(D * sum(sizes))
    assert all(0 < c <= s for c, s in zip(counts, sizes))
    dens = layer_densities(shapes, D, method)
    assert [round(d * s) for d, s in zip(dens, sizes)] == counts


def test_mlp_densities_feed_mlp():
    sizes = [40, 30, 2]
    dens = mlp_densities(sizes, 0.1)
    net = mlp(sizes, densities=dens, seed=0)
    assert [l.nnz for l in net.sparse_layers()] == connection_counts([(30, 40), (2, 30)], 0.1)
    assert sum(l.nnz for l in net.sparse_layers()) == round(0.1 * (40 * 30 + 30 * 2))


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.0001, 2, float("nan"), float("inf"), "half", None])
def test_density_outside_unit_interval_is_rejected(bad):
    for fn in (erdos_renyi_densities, erk_densities, uniform_densities):
        with pytest.raises(ValueError, match="density"):
            fn([(3, 4)], bad)
    with pytest.raises(ValueError, match="density"):
        sparse_init(mlp([4, 3, 2], seed=0), bad)


def test_unknown_method_lists_valid_names():
    with pytest.raises(ValueError, match="erdos_renyi.*erk.*uniform"):
        sparse_init(mlp([4, 3, 2], seed=0), 0.5, method="gaussian")
    with pytest.raises(ValueError, match="method"):
        connection_counts([(3, 4)], 0.5, method="ER")


def test_bad_shapes_and_min_per_row():
    with pytest.raises(ValueError, match="shapes"):
        erdos_renyi_densities([], 0.5)
    with pytest.raises(ValueError, match="shapes"):
        erdos_renyi_densities([(3, 0)], 0.5)
    with pytest.raises(ValueError, match="shapes"):
        erdos_renyi_densities([(3, 4, 3, 3)], 0.5)  # conv shapes need erk
    with pytest.raises(ValueError, match="min_per_row"):
        connection_counts([(3, 4)], 0.5, min_per_row=-1)
    with pytest.raises(ValueError, match="min_per_row"):
        connection_counts([(3, 4)], 0.5, min_per_row=5)  # more than the 4 inputs


# --------------------------------------------------------------------------
# Too low density: our decision
# --------------------------------------------------------------------------
def test_too_low_density_raises_unless_min_per_row():
    net = mlp([40, 30, 2], seed=0)
    # 1% of 1260 = 13 connections: fc1 would get 9 for 30 output neurons
    with pytest.raises(ValueError, match=r"density.*fc1|density.*layer 0.*min_per_row=1"):
        sparse_init(net, 0.01)
    report = sparse_init(net, 0.01, min_per_row=1)
    for layer, rep in zip(net.sparse_layers(), report):
        assert np.all(np.diff(layer.weight.indptr) >= 1), "every output neuron has an input"
        assert rep["nnz"] == layer.nnz
    assert net.layers[0].nnz == 30  # raised to one per output neuron
    # a layer that would get zero connections at all
    with pytest.raises(ValueError, match="0 connection"):
        connection_counts([(1000, 1000), (1, 2)], 0.001, method="uniform")


def test_min_per_row_keeps_the_exact_count_when_it_suffices():
    counts = connection_counts([(30, 40), (2, 30)], 0.1)
    net = mlp([40, 30, 2], seed=0)
    rep = sparse_init(net, 0.1, min_per_row=1, seed=3)
    assert [r["nnz"] for r in rep] == counts
    for layer in net.sparse_layers():
        assert np.diff(layer.weight.indptr).min() >= 1


def test_without_min_per_row_rows_may_be_empty_at_enough_density():
    # 30 connections over 30 rows at random: some rows empty, which is allowed by default
    indptr, _ = random_structure(30, 40, 30, np.random.default_rng(0))
    assert (np.diff(indptr) == 0).any()
    indptr, _ = random_structure(30, 40, 30, np.random.default_rng(0), min_per_row=1)
    assert (np.diff(indptr) == 1).all()


# --------------------------------------------------------------------------
# sparse_init and sampling
# --------------------------------------------------------------------------
@FAST
@given(st.lists(st.integers(2, 50), min_size=2, max_size=4), st.floats(0.1, 1.0),
       st.sampled_from(["erdos_renyi", "erk", "uniform"]), st.integers(0, 2 ** 31), st.floats(0.5, 3.0))
def test_sparse_init_exact_canonical_fan_in_scaled(sizes, D, method, seed, gain):
    net = mlp(sizes, seed=0)
    shapes = [(sizes[i + 1], sizes[i]) for i in range(len(sizes) - 1)]
    counts = connection_counts(shapes, D, method, min_per_row=1)
    report = sparse_init(net, D, method=method, seed=seed, gain=gain, min_per_row=1)
    for layer, rep, c in zip(net.sparse_layers(), report, counts):
        w = layer.weight
        check_csr(w.indptr, w.indices, w.shape)
        assert w.indptr.dtype == np.int32 and w.indices.dtype == np.int32 and w.data.dtype == np.float32
        assert layer.nnz == c == rep["nnz"]
        assert rep["name"] == layer.name and rep["shape"] == w.shape
        assert np.isclose(rep["density"], c / (w.shape[0] * w.shape[1]))
        fan_in = np.repeat(np.diff(w.indptr), np.diff(w.indptr))
        assert np.all(np.abs(w.data) <= gain * np.sqrt(3.0 / fan_in) * (1 + 1e-6))
        assert layer.weight_param.value is w.data


def test_sparse_init_is_reproducible_and_seed_dependent():
    def build(seed):
        net = mlp([20, 15, 3], seed=0)
        sparse_init(net, 0.3, seed=seed)
        return [(l.weight.indptr.copy(), l.weight.indices.copy(), l.weight.data.copy()) for l in net.sparse_layers()]

    a, b, c = build(7), build(7), build(8)
    for (pa, ia, da), (pb, ib, db) in zip(a, b):
        assert np.array_equal(pa, pb) and np.array_equal(ia, ib) and np.array_equal(da, db)
    assert any(not np.array_equal(ia, ic) for (_, ia, _), (_, ic, _) in zip(a, c))


def test_sparse_init_network_still_runs():
    net = mlp([12, 10, 3], seed=0)
    sparse_init(net, 0.4, seed=1, gain=2.0)
    x = (np.random.default_rng(0).random((4, 5, 12)) < 0.5).astype(np.float32)
    out = net.forward(x)
    assert out.shape == (4, 5, 3) and np.isfinite(out).all()


def test_sparse_init_needs_sparse_layers():
    with pytest.raises(ValueError, match="SparseLinear"):
        sparse_init(mlp([4, 3, 2], sparse=False, seed=0), 0.5)


def test_sampling_is_uniform_over_empty_positions():
    # one row of 10 columns with 3 occupied: each of the 7 empty ones equally likely
    rng = np.random.default_rng(0)
    indptr = np.array([0, 3], np.int32)
    indices = np.array([1, 4, 8], np.int32)
    hits = np.zeros(10)
    for _ in range(1500):
        keys = sample_empty_in_rows(indptr, indices, 10, np.array([2]), rng)
        assert len(np.unique(keys)) == 2 and not np.isin(keys, indices).any()
        hits[keys] += 1
    assert hits[[1, 4, 8]].sum() == 0
    expected = 1500 * 2 / 7
    assert np.all(np.abs(hits[hits > 0] - expected) < 5 * np.sqrt(expected))


@FAST
@given(st.integers(1, 40), st.integers(1, 40), st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.integers(0, 2 ** 31))
def test_sample_empty_in_rows_avoids_existing(n_out, n_in, d_exist, d_new, seed):
    rng = np.random.default_rng(seed)
    nnz = int(d_exist * n_out * n_in)
    indptr, indices = random_structure(n_out, n_in, nnz, rng)
    room = n_in - np.diff(indptr)
    counts = np.floor(room * d_new).astype(np.int64)
    keys = sample_empty_in_rows(indptr, indices, n_in, counts, rng)
    assert len(keys) == counts.sum() and np.all(np.diff(keys) > 0)
    assert not np.isin(keys, position_keys(indptr, indices, n_in)).any()
    assert np.array_equal(np.bincount(keys // n_in, minlength=n_out), counts)


def test_init_of_a_big_layer_uses_no_dense_mask():
    # 20000 x 20000 at 0.05%: a dense bool mask alone would be 400 MB
    tracemalloc.start()
    indptr, indices = random_structure(20000, 20000, 200_000, np.random.default_rng(0))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(indices) == 200_000
    check_csr(indptr, indices, (20000, 20000))
    assert peak < 40e6, f"peak {peak / 1e6:.1f} MB"


def test_multivariate_hypergeometric_beyond_numpy_limit():
    rng = np.random.default_rng(0)
    c = multivariate_hypergeometric(rng, np.array([6 * 10 ** 8, 6 * 10 ** 8, 10]), 1000)
    assert c.sum() == 1000 and c[2] <= 10 and 350 < c[0] < 650
