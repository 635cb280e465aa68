"""Sparse initialisation of a whole network from one global density.

Three ways to split a global density ``D`` among layers (``shapes`` lists each
layer's weight shape, ``(n_out, n_in)`` or, for convolutions,
``(n_out, n_in, kh, kw)``):

- ``erdos_renyi`` (SET): ``p_k = min(1, eps * (n_in + n_out) / (n_in * n_out))``
- ``erk`` (RigL): ``p_k = min(1, eps * (n_in + n_out + kh + kw) / (n_in * n_out * kh * kw))``
- ``uniform``: ``p_k = D`` for every layer.

For the first two, one ``eps`` is solved so that the network holds
``D x (total possible connections)``; a layer whose ``p_k`` would exceed 1 is
made dense and ``eps`` is re-solved over the remaining layers (RigL's ERK
procedure). Densities become *exact integer connection counts* by
largest-remainder rounding, so the network total is ``round(D * total)``.

:func:`sparse_init` then places exactly that many connections in each
:class:`~snn_core.layers.SparseLinear` of a network, uniformly at random
(Erdős–Rényi with a fixed edge count), with fan-in-scaled initial weights.
Memory is O(nnz): positions are sampled per row against the existing
structure, never through a dense ``n_out x n_in`` mask.

Too-low density: a layer that would get fewer connections than it has output
neurons raises ``ValueError`` unless ``min_per_row >= 1`` is passed, which
gives every output neuron at least ``min_per_row`` inputs (raising the layer's
count to ``min_per_row * n_out`` if needed; otherwise the count is kept).
"""
from __future__ import annotations

import math

import numpy as np

from ..sparse import INDEX_DTYPE, fan_in_uniform

INIT_METHODS = ("erdos_renyi", "erk", "uniform")

#: numpy's multivariate hypergeometric sampler requires fewer positions than this
_MVHG_LIMIT = 10 ** 9


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------
def check_density(density, name="density"):
    """Return ``density`` as a float, or raise ValueError unless it is in (0, 1]."""
    try:
        d = float(density)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number in (0, 1], got {density!r}") from None
    if not (math.isfinite(d) and 0.0 < d <= 1.0):
        raise ValueError(f"{name}: must be in (0, 1], got {density!r}")
    return d


def check_name(value, valid, what):
    """Raise ValueError listing the valid names unless ``value`` is one of them."""
    if value not in valid:
        raise ValueError(f"{what}: unknown name {value!r}; expected one of {', '.join(map(repr, valid))}")
    return value


def _check_shapes(shapes, allow_conv=True):
    out = []
    if len(shapes) == 0:
        raise ValueError("shapes: expected at least one layer shape")
    for i, s in enumerate(shapes):
        s = tuple(int(v) for v in s)
        ok_len = (2, 4) if allow_conv else (2,)
        if len(s) not in ok_len or min(s) < 1:
            want = "(n_out, n_in) or (n_out, n_in, kh, kw)" if allow_conv else "(n_out, n_in)"
            raise ValueError(f"shapes[{i}]: expected {want} with positive sizes, got {s}")
        out.append(s)
    return out


# --------------------------------------------------------------------------
# Per-layer densities
# --------------------------------------------------------------------------
def _solve_eps(sizes, scales, density):
    """Densities ``min(1, eps * scale_k)`` whose connection total is ``density * sum(sizes)``.

    ``sizes`` (possible connections per layer) and ``scales`` are float64
    arrays (L,). Layers capped at 1 are removed and ``eps`` re-solved until
    no remaining layer exceeds 1 (each pass only raises ``eps``, so a capped
    layer never needs un-capping).
    """
    dense = np.zeros(len(sizes), bool)
    target = density * sizes.sum()
    while True:
        rest = ~dense
        rhs = target - sizes[dense].sum()
        divisor = (scales[rest] * sizes[rest]).sum()
        if divisor <= 0 or rhs <= 0:  # everything dense (density == 1 or rounding)
            p = np.where(dense, 1.0, 0.0)
            break
        eps = rhs / divisor
        p = np.where(dense, 1.0, eps * scales)
        over = rest & (p > 1.0 - 1e-12)  # within rounding of 1: dense (so D = 1 gives exactly 1.0)
        if not over.any():
            break
        dense |= over
    return np.minimum(p, 1.0)


def erdos_renyi_densities(shapes, density):
    """SET's Erdős–Rényi per-layer densities at global density ``density``.

    Parameters
    ----------
    shapes : sequence of (n_out, n_in)
    density : float in (0, 1]

    Returns
    -------
    list of float, ``p_k = min(1, eps * (n_in + n_out) / (n_in * n_out))``.
    """
    density = check_density(density)
    shapes = _check_shapes(shapes, allow_conv=False)
    sizes = np.array([o * i for o, i in shapes], np.float64)
    scales = np.array([(o + i) / (o * i) for o, i in shapes], np.float64)
    return [float(p) for p in _solve_eps(sizes, scales, density)]


def erk_densities(shapes, density):
    """RigL's Erdős–Rényi-Kernel densities for conv ``(n_out, n_in, kh, kw)`` shapes.

    Scale ``(n_in + n_out + kh + kw) / (n_in * n_out * kh * kw)``; a 2-D
    ``(n_out, n_in)`` entry (a linear layer in the same network) uses the
    plain Erdős–Rényi scale ``(n_in + n_out) / (n_in * n_out)``.
    """
    density = check_density(density)
    shapes = _check_shapes(shapes, allow_conv=True)
    sizes = np.array([math.prod(s) for s in shapes], np.float64)
    scales = np.array([sum(s) / math.prod(s) for s in shapes], np.float64)
    return [float(p) for p in _solve_eps(sizes, scales, density)]


def uniform_densities(shapes, density):
    """Every layer at ``density``."""
    density = check_density(density)
    shapes = _check_shapes(shapes, allow_conv=True)
    return [density] * len(shapes)


_DENSITY_FNS = {"erdos_renyi": erdos_renyi_densities, "erk": erk_densities, "uniform": uniform_densities}


def connection_counts(shapes, density, method="erdos_renyi", min_per_row=0):
    """Exact number of connections per layer.

    The per-layer densities of ``method`` times the layer sizes, rounded by
    largest remainder (ties to the earlier layer) so the total is
    ``round(density * total possible)``.

    Raises ValueError when a layer would get fewer connections than output
    neurons (``shape[0]``) and ``min_per_row == 0``. With ``min_per_row = m >= 1``
    such a layer gets ``m * n_out`` connections instead.

    Returns
    -------
    list of int
    """
    check_name(method, INIT_METHODS, "method")
    min_per_row = _check_min_per_row(min_per_row)
    shapes = _check_shapes(shapes, allow_conv=(method != "erdos_renyi"))
    p = np.array(_DENSITY_FNS[method](shapes, density), np.float64)
    sizes = np.array([math.prod(s) for s in shapes], np.int64)
    ideal = p * sizes
    counts = np.minimum(np.floor(ideal).astype(np.int64), sizes)
    extra = int(round(check_density(density) * sizes.sum())) - int(counts.sum())
    if extra > 0:
        frac = ideal - counts
        frac[counts >= sizes] = -1.0  # a full layer cannot take more
        order = np.argsort(-frac, kind="stable")[:extra]
        counts[order[frac[order] > 0]] += 1
    out = []
    for k, (s, c) in enumerate(zip(shapes, counts)):
        n_out, per_row = s[0], math.prod(s[1:])
        if min_per_row > per_row:
            raise ValueError(f"min_per_row: {min_per_row} exceeds the {per_row} possible inputs of layer {k} {s}")
        if c < n_out:
            if min_per_row == 0:
                raise ValueError(
                    f"density: {density!r} gives layer {k} {s} only {int(c)} connection(s) for {n_out} output "
                    f"neurons; raise density or pass min_per_row=1 (--min-per-row 1) to give every output neuron one input")
        c = max(int(c), min_per_row * n_out)
        out.append(c)
    return out


def layer_densities(shapes, density, method="erdos_renyi", min_per_row=0):
    """Per-layer densities ``count_k / size_k`` from :func:`connection_counts`.

    Exact in the sense that ``round(d_k * size_k) == count_k``, so passing
    them to :func:`snn_core.network.mlp` (``densities=``) or
    :class:`~snn_core.layers.SparseLinear` reproduces the counts.
    """
    counts = connection_counts(shapes, density, method, min_per_row)
    return [c / math.prod(s) for c, s in zip(counts, shapes)]


def mlp_densities(sizes, density, method="erdos_renyi", min_per_row=0):
    """:func:`layer_densities` for ``mlp(sizes, densities=...)``: shapes ``(sizes[i+1], sizes[i])``."""
    shapes = [(sizes[i + 1], sizes[i]) for i in range(len(sizes) - 1)]
    return layer_densities(shapes, density, method, min_per_row)


def _check_min_per_row(m):
    if not isinstance(m, (int, np.integer)) or isinstance(m, bool) or m < 0:
        raise ValueError(f"min_per_row: expected an integer >= 0, got {m!r}")
    return int(m)


# --------------------------------------------------------------------------
# Sampling positions without a dense mask
# --------------------------------------------------------------------------
def position_keys(indptr, indices, n_in):
    """Flat keys ``row * n_in + col`` (int64) of a CSR structure, in CSR order.

    For a canonical CSR these are strictly increasing, so they can be
    searched with ``np.searchsorted``.
    """
    rows = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
    return rows * np.int64(n_in) + np.asarray(indices, np.int64)


def in_sorted(a, sorted_b):
    """Boolean mask: which elements of ``a`` occur in the sorted array ``sorted_b``. O(len(a) log len(b))."""
    a = np.asarray(a)
    if len(sorted_b) == 0:
        return np.zeros(a.shape, bool)
    i = np.searchsorted(sorted_b, a)
    i[i == len(sorted_b)] = 0
    return sorted_b[i] == a


def sorted_unique(a):
    """Sorted distinct values of ``a`` (sort + neighbour compare).

    Used instead of ``np.unique``/``np.union1d``: numpy 2.3+ routes those
    through a hash table that measured ~20x slower than a sort on 10^6 int64.
    """
    a = np.sort(np.asarray(a).reshape(-1))
    if len(a) < 2:
        return a
    keep = np.empty(len(a), bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def multivariate_hypergeometric(rng, colors, nsample):
    """Counts drawn from ``colors`` without replacement (numpy's sampler, any size).

    Numpy's sampler needs ``sum(colors) < 1e9``; beyond that the counts come
    from ``nsample`` distinct uniformly drawn flat positions (exact, by
    rejection; only used for layers with more than 10^9 positions).
    """
    colors = np.asarray(colors, np.int64)
    total = int(colors.sum())
    if nsample > total:
        raise ValueError(f"cannot draw {nsample} from {total}")
    if len(colors) == 1:
        return np.array([nsample], np.int64)
    if total < _MVHG_LIMIT:
        return rng.multivariate_hypergeometric(colors, nsample).astype(np.int64)
    bounds = np.cumsum(colors)
    chosen = np.empty(0, np.int64)
    while len(chosen) < nsample:
        chosen = sorted_unique(np.concatenate([chosen, rng.integers(0, total, size=nsample - len(chosen))]))
    return np.bincount(np.searchsorted(bounds, chosen, side="right"), minlength=len(colors)).astype(np.int64)


def sample_empty_in_rows(indptr, indices, n_in, counts, rng):
    """Draw ``counts[r]`` distinct *empty* columns in every row ``r``.

    Parameters
    ----------
    indptr, indices : canonical CSR structure (int32), the positions to avoid
    n_in : int, number of columns
    counts : int array (n_out,), how many to draw per row
    rng : numpy.random.Generator

    Returns
    -------
    keys : int64 array (counts.sum(),), sorted flat keys ``row * n_in + col``.

    Each row's draw is uniform among its empty columns. Rows that would end
    up more than half full are drawn exactly from their list of empty columns
    (O(n_in) for that row, no worse than the row itself); the others by
    vectorised rejection of duplicates and occupied positions, which accepts
    at least half the draws, so a few rounds suffice. Memory O(nnz + sum(counts)).
    """
    n_out = len(indptr) - 1
    counts = np.asarray(counts, np.int64)
    row_nnz = np.diff(indptr).astype(np.int64)
    if np.any(counts < 0) or np.any(counts > n_in - row_nnz):
        raise ValueError("counts: a row asks for more positions than it has empty ones")
    n_in64 = np.int64(n_in)
    existing = position_keys(indptr, indices, n_in)
    parts = []
    full = (counts > 0) & (2 * (row_nnz + counts) > n_in)
    for r in np.flatnonzero(full):
        free = np.ones(n_in, bool)
        free[indices[indptr[r]:indptr[r + 1]]] = False
        cols = rng.choice(np.flatnonzero(free), size=int(counts[r]), replace=False)
        parts.append(r * n_in64 + np.sort(cols).astype(np.int64))
    rows = np.flatnonzero((counts > 0) & ~full).astype(np.int64)
    need = counts[rows]
    got = np.empty(0, np.int64)
    while len(rows):
        cand = sorted_unique(np.repeat(rows, need) * n_in64 + rng.integers(0, n_in, size=int(need.sum())))
        cand = cand[~in_sorted(cand, existing) & ~in_sorted(cand, got)]
        # two sorted disjoint runs: the stable sort (timsort) merges them in O(n)
        got = np.sort(np.concatenate([got, cand]), kind="stable")  # never overshoots: a row draws its deficit only
        have = np.bincount(got // n_in64, minlength=n_out)[rows]
        need = counts[rows] - have
        rows, need = rows[need > 0], need[need > 0]
    parts.append(got)
    return np.sort(np.concatenate(parts), kind="stable") if len(parts) > 1 else got


def random_structure(n_out, n_in, nnz, rng, min_per_row=0):
    """Exactly ``nnz`` positions of an ``(n_out, n_in)`` layer, uniformly at random.

    With ``min_per_row = m`` every row first gets ``m`` columns and the rest
    ``nnz - m * n_out`` are spread uniformly over the remaining positions
    (per-row counts multivariate hypergeometric). Returns canonical
    ``(indptr, indices)`` (int32). O(nnz) memory.
    """
    if not 0 <= nnz <= n_out * n_in:
        raise ValueError(f"nnz: must be in [0, {n_out * n_in}], got {nnz}")
    if min_per_row * n_out > nnz:
        raise ValueError(f"min_per_row: {min_per_row} per row needs {min_per_row * n_out} > nnz={nnz}")
    rest = nnz - min_per_row * n_out
    counts = min_per_row + multivariate_hypergeometric(rng, np.full(n_out, n_in - min_per_row), rest)
    empty_indptr = np.zeros(n_out + 1, INDEX_DTYPE)
    keys = sample_empty_in_rows(empty_indptr, np.empty(0, INDEX_DTYPE), n_in, counts, rng)
    indptr = np.zeros(n_out + 1, INDEX_DTYPE)
    np.cumsum(counts, out=indptr[1:])
    return indptr, (keys % n_in).astype(INDEX_DTYPE)


# --------------------------------------------------------------------------
# Whole network
# --------------------------------------------------------------------------
def layer_shapes(layers, method):
    """Shapes for the density rule: ``kernel_shape`` (n_out, n_in, kh, kw) of conv layers under ``erk``,
    else the 2-D weight matrix shape (a conv's (c_out, c_in*kh*kw): Erdős–Rényi on it)."""
    return [tuple(getattr(l, "kernel_shape", l.weight_shape)) if method == "erk" else tuple(l.weight_shape)
            for l in layers]


def fixed_density_counts(shapes, density, fixed, method="erdos_renyi", min_per_row=0):
    """Connection counts with some layers at a fixed density and the others sharing the rest by ``method``.

    The total stays exactly ``round(density * total possible)``: the other
    layers get density ``(D * total - fixed connections) / (their size)``
    among themselves, spread by ``method``. ValueError when the fixed layers
    alone use the whole budget or every layer is fixed.

    Parameters
    ----------
    shapes : sequence of layer shapes, as for :func:`connection_counts`
    density : float in (0, 1], the global density D
    fixed : dict {layer index: density in (0, 1]}
        Layer ``k`` gets ``round(fixed[k] * size_k)`` connections whatever
        ``method`` would give it (e.g. ``{0: 1.0}``: the first layer dense).
    method, min_per_row : as for :func:`connection_counts`

    Returns
    -------
    list of int
    """
    density = check_density(density)
    sizes = [math.prod(s) for s in shapes]
    budget = int(round(density * sum(sizes)))
    bad = sorted(k for k in fixed if not 0 <= k < len(shapes))
    if bad:
        raise ValueError(f"fixed: layer index(es) {bad} out of range for {len(shapes)} layers")
    out = {k: int(round(check_density(d) * sizes[k])) for k, d in fixed.items()}
    for k, c in out.items():  # as connection_counts: every output neuron needs its inputs
        if c < max(min_per_row, 1) * shapes[k][0]:
            raise ValueError(f"density: {fixed[k]!r} gives layer {k} {tuple(shapes[k])} only {c} connection(s) for "
                             f"{shapes[k][0]} output neurons (at least {max(min_per_row, 1)} each); raise its density")
    free = [k for k in range(len(shapes)) if k not in out]
    used = sum(out.values())
    if not free or budget <= used:
        raise ValueError(f"density: {density!r} leaves nothing for the other layers after the fixed-density ones "
                         f"({used} of {budget} connections); raise density or lower the fixed densities")
    rest = (budget - used) / sum(sizes[k] for k in free)
    counts = connection_counts([shapes[k] for k in free], min(rest, 1.0), method, min_per_row)
    counts[-1] += budget - used - sum(counts)  # rounding of the rescaled density: exact total
    out.update(zip(free, counts))
    return [out[k] for k in range(len(shapes))]


def dense_first_counts(shapes, density, method="erdos_renyi", min_per_row=0):
    """Connection counts with the first layer dense and the others sharing the rest by ``method``.

    :func:`fixed_density_counts` with ``{0: 1.0}``. ValueError when the first
    layer alone exceeds the budget.
    """
    return fixed_density_counts(shapes, density, {0: 1.0}, method, min_per_row)


def sparse_init(network, density, method="erdos_renyi", seed=0, gain=1.0, min_per_row=0, dense_first=False,
                layer_density=None):
    """(Re)initialise every sparse layer (SparseLinear, SparseConv2d) of ``network`` in place at global ``density``.

    Each layer gets exactly the count of :func:`connection_counts`, placed
    uniformly at random, with weights U(-a, a), ``a = gain * sqrt(3 / fan_in)``
    where ``fan_in`` is each output neuron's actual number of inputs. Biases
    are left alone. Call it before creating the optimizer (its state is not
    remapped here).

    Parameters
    ----------
    network : Network (or any object with ``sparse_layers()``)
    density : float in (0, 1], the global target density D
    method : "erdos_renyi" (default), "erk" or "uniform"
    seed : int or numpy.random.Generator; the same seed gives the same network
    gain : float
    min_per_row : int >= 0, see :func:`connection_counts`
    dense_first : bool
        Keep the first sparse layer dense (:func:`dense_first_counts`); the
        global total stays exact.
    layer_density : dict {layer name: density in (0, 1]} or None
        Layers held at these densities whatever ``method`` would give them
        (:func:`fixed_density_counts`; a name given here overrides
        ``dense_first`` for that layer); the others share the rest of the
        budget, so the global total stays exact.

    Returns
    -------
    list of dict, one per sparse layer: ``name``, ``shape`` (n_out, n_in),
    ``nnz``, ``density`` (actual), ``target_density`` (p_k of the method
    before rounding).
    """
    check_name(method, INIT_METHODS, "method")
    density = check_density(density)
    layers = network.sparse_layers()
    if not layers:
        raise ValueError("network: has no SparseLinear layers to initialise")
    shapes = layer_shapes(layers, method)
    fixed = {0: 1.0} if dense_first else {}
    names = [layer.name for layer in layers]
    for name, d in (layer_density or {}).items():
        if name not in names:
            raise ValueError(f"layer_density: {name!r} is not a sparse layer of this network; its sparse layers are {names}")
        fixed[names.index(name)] = d
    if fixed:
        counts = fixed_density_counts(shapes, density, fixed, method, min_per_row)
        p = [c / math.prod(s) for c, s in zip(counts, shapes)]
    else:
        counts = connection_counts(shapes, density, method, min_per_row)
        p = _DENSITY_FNS[method](shapes, density)
    rngs = np.random.default_rng(seed).spawn(len(layers))
    report = []
    for layer, nnz, rng, pk in zip(layers, counts, rngs, p):
        n_out, n_in = layer.weight_shape
        indptr, indices = random_structure(n_out, n_in, nnz, rng, min_per_row)
        data = fan_in_uniform(indptr, rng, gain, layer.dtype)
        layer.set_connections(indptr, indices, data)
        report.append({"name": layer.name, "shape": (n_out, n_in), "nnz": int(layer.nnz),
                       "density": layer.nnz / (n_out * n_in), "target_density": float(pk)})
    return report
