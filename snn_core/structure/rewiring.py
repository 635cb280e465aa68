"""Evolutionary structure learning: prune rules, grow rules, the zeta schedule,
the rewiring event itself and the :class:`Rewirer` that a training loop calls.

One rewiring event on a layer with ``nnz`` connections (canonical CSR,
``shape = (n_out, n_in)``):

1. ``n = round(zeta(t) * nnz)`` (half up), ``zeta(t) = zeta0/2 (1 + cos(pi t / t_end))``;
2. a *prune rule* picks ``n`` indices into ``data`` to remove;
3. a *grow rule* picks ``n`` empty positions of the pruned structure (so a
   position pruned in this very event may be grown back, as a new connection);
4. :func:`rewire_csr` merges kept and new connections into a new canonical
   CSR and returns ``src``, the old data index of every new entry (``-1`` for
   grown ones), which is what ``optimizer.remap`` needs;
5. the layer gets the new arrays (``layer.set_connections``), the optimizer
   state is remapped (kept connections keep theirs, grown ones start at 0).

The number of connections of every layer is therefore exactly preserved.

Every rule and the core merge are pure functions on arrays, usable (and
tested) without a layer. Cost of an event: O(nnz log nnz) for the merge and
O(nnz) for the selections; the ``gradient`` grow rule additionally touches a
dense ``(n_out, n_in)`` gradient, which exists only at rewiring iterations.
"""
from __future__ import annotations

import math

import numpy as np

from ..kernels import cpu as K
from ..sparse import INDEX_DTYPE
from .history import RewiringHistory
from .init import check_name, multivariate_hypergeometric, position_keys, sample_empty_in_rows

PRUNE_RULES = ("magnitude", "set", "gradient")
GROW_RULES = ("random", "gradient", "momentum")
DECAYS = ("cosine", "constant", "none")
NEW_WEIGHTS = ("zero", "random")


# --------------------------------------------------------------------------
# Selection helpers
# --------------------------------------------------------------------------
def _select(scores, n, largest):
    scores = np.asarray(scores)
    size = len(scores)
    if n <= 0:
        return np.empty(0, np.int64)
    if n >= size:
        return np.arange(size, dtype=np.int64)
    kth = size - n if largest else n - 1
    thr = np.partition(scores, kth)[kth]  # one copy of scores; no sort
    take = scores > thr if largest else scores < thr
    need = n - int(np.count_nonzero(take))
    if need:
        take[np.flatnonzero(scores == thr)[:need]] = True
    return np.flatnonzero(take).astype(np.int64)  # flatnonzero is sorted: no O(n log n) sort


def smallest(scores, n):
    """Indices of the ``n`` smallest ``scores``, ties broken by the lower index.

    O(len(scores)): one ``np.partition`` (introselect, the algorithm behind
    ``np.argpartition``) finds the n-th smallest value; all strictly smaller
    entries are taken, then the tied ones in index order. Returns a sorted
    int64 array.
    """
    return _select(scores, n, largest=False)


def largest(scores, n):
    """Indices of the ``n`` largest ``scores``, ties broken by the lower index (sorted int64)."""
    return _select(scores, n, largest=True)


def round_half_up(x):
    """``floor(x + 0.5)`` as int (Python's ``round`` rounds half to even)."""
    return int(math.floor(x + 0.5))


# --------------------------------------------------------------------------
# Prune rules: (data, n, ...) -> sorted int64 indices into data
# --------------------------------------------------------------------------
def prune_magnitude(data, n):
    """The ``n`` connections with the smallest ``|w|`` (ties: lower data index)."""
    return smallest(np.abs(data), n)


def prune_set(data, n):
    """SET: the connections closest to zero among positive and among negative weights separately.

    Weights exactly 0 (e.g. grown and never updated) are closest to zero on
    both sides and go first. The remaining ``n'`` are split between the
    positive and the negative weights in proportion to their numbers
    (``round(n' * P / (P + N))`` for the positives, capped by what each side
    has), so each side loses the same fraction ``~ n / nnz`` of its weights,
    as in SET, while the total is exactly ``n``.
    """
    data = np.asarray(data)
    n = min(int(n), len(data))
    if n <= 0:
        return np.empty(0, np.int64)
    zero = np.flatnonzero(data == 0)
    if len(zero) >= n:
        return zero[:n].astype(np.int64)
    pos, neg = np.flatnonzero(data > 0), np.flatnonzero(data < 0)
    rest = n - len(zero)
    n_pos = min(len(pos), round_half_up(rest * len(pos) / (len(pos) + len(neg))))
    n_neg = rest - n_pos
    if n_neg > len(neg):
        n_neg, n_pos = len(neg), rest - len(neg)
    picked = [zero, pos[smallest(data[pos], n_pos)], neg[smallest(-data[neg], n_neg)]]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def prune_gradient(data, n, grad):
    """The ``n`` connections with the smallest ``|w * dL/dw|`` (first-order saliency).

    ``grad`` is aligned with ``data`` (``layer.weight_param.grad``).
    """
    grad = np.asarray(grad)
    if grad.shape != np.shape(data):
        raise ValueError(f"grad: expected shape {np.shape(data)} (aligned with data), got {grad.shape}")
    return smallest(np.abs(np.asarray(data, np.float64) * grad), n)


# --------------------------------------------------------------------------
# Grow rules: (structure after pruning, n, ...) -> sorted int64 flat keys
# --------------------------------------------------------------------------
def _empty_per_row(indptr, n_in):
    return n_in - np.diff(indptr).astype(np.int64)


def grow_random(indptr, indices, shape, n, rng):
    """``n`` positions drawn uniformly (without replacement) from the empty ones.

    Exact and mask-free: the per-row counts are multivariate hypergeometric
    with the rows' numbers of empty positions as colours (which is what
    drawing ``n`` of all empty positions uniformly gives), then each row
    draws its count among its own empty columns
    (:func:`~snn_core.structure.init.sample_empty_in_rows`).

    Returns sorted int64 flat keys ``row * n_in + col``.
    """
    n_out, n_in = shape
    empty = _empty_per_row(indptr, n_in)
    if n > empty.sum():
        raise ValueError(f"n: cannot grow {n} connections, only {int(empty.sum())} positions are empty")
    counts = multivariate_hypergeometric(rng, empty, int(n))
    return sample_empty_in_rows(indptr, indices, n_in, counts, rng)


def grow_gradient(indptr, indices, shape, n, dense_grad):
    """RigL: the ``n`` empty positions with the largest ``|dL/dw|``.

    ``dense_grad`` is the dense ``(n_out, n_in)`` weight gradient from
    ``layer.dense_weight_grad()``; O(n_out * n_in), the only dense-sized step.
    Ties go to the lower flat index. Returns sorted int64 flat keys.
    """
    n_out, n_in = shape
    g = np.asarray(dense_grad)
    if g.shape != (n_out, n_in):
        raise ValueError(f"dense_grad: expected shape {(n_out, n_in)}, got {g.shape}")
    score = np.abs(g).reshape(-1)  # a fresh array (g's dtype): safe to overwrite
    score[position_keys(indptr, indices, n_in)] = -np.inf  # occupied positions never win
    if n > n_out * n_in - len(indices):
        raise ValueError(f"n: cannot grow {n} connections, only {n_out * n_in - len(indices)} positions are empty")
    return largest(score, n)


def row_mean_abs(indptr, values):
    """Mean ``|values|`` over each row's connections (0 for empty rows), float64 (n_out,)."""
    counts = np.diff(indptr)
    rows = np.repeat(np.arange(len(counts)), counts)
    sums = np.bincount(rows, weights=np.abs(np.asarray(values, np.float64)), minlength=len(counts))
    return np.divide(sums, counts, out=np.zeros(len(counts)), where=counts > 0)


def apportion(n, weights, caps, rng):
    """Split ``n`` into integer counts proportional to ``weights``, each ``<= caps``.

    Water-filling: rows whose share exceeds their cap get the cap and the
    rest is re-split among the others; shares are rounded by largest
    remainder (ties to the lower row). Whatever rows with positive weight
    cannot hold (or all of ``n`` when every weight is 0) is spread uniformly
    over the remaining room (multivariate hypergeometric).
    """
    weights = np.asarray(weights, np.float64)
    caps = np.asarray(caps, np.int64)
    alloc = np.zeros(len(caps), np.int64)
    active = (weights > 0) & (caps > 0)
    left = int(n)
    while left > 0 and active.any():
        share = left * weights * active / weights[active].sum()
        over = active & (share >= caps - alloc)
        if over.any():  # these rows are filled; re-split what is left among the others
            left -= int((caps - alloc)[over].sum())
            alloc[over] = caps[over]
            active &= ~over
            continue
        base = np.floor(share).astype(np.int64)
        extra = left - int(base.sum())
        frac = np.where(active, share - base, -1.0)
        base[np.argsort(-frac, kind="stable")[:extra]] += 1
        alloc += base
        left = 0
    if left > 0:
        alloc += multivariate_hypergeometric(rng, caps - alloc, left)
    return alloc


def grow_momentum(indptr, indices, shape, n, rng, row_score):
    """Sparse-Momentum-style growth at the level of rows (output neurons).

    The ``n`` new connections are distributed among rows in proportion to
    ``row_score`` (the mean ``|momentum|`` of each row's connections at the
    event, see :func:`row_mean_abs`), capped by each row's empty positions
    (:func:`apportion`); within a row the columns are drawn uniformly among
    the empty ones. Rows with zero score get only what the others cannot hold.
    Returns sorted int64 flat keys.
    """
    n_out, n_in = shape
    row_score = np.asarray(row_score, np.float64)
    if row_score.shape != (n_out,):
        raise ValueError(f"row_score: expected shape ({n_out},), got {row_score.shape}")
    empty = _empty_per_row(indptr, n_in)
    if n > empty.sum():
        raise ValueError(f"n: cannot grow {n} connections, only {int(empty.sum())} positions are empty")
    counts = apportion(int(n), row_score, empty, rng)
    return sample_empty_in_rows(indptr, indices, n_in, counts, rng)


# --------------------------------------------------------------------------
# The event on CSR arrays
# --------------------------------------------------------------------------
def _kept(nnz, prune_idx):
    """The boolean mask of the entries that ``prune_idx`` (distinct indices into data) does not name."""
    prune_idx = np.asarray(prune_idx, np.int64)
    if len(prune_idx) and (prune_idx.min() < 0 or prune_idx.max() >= nnz):
        raise ValueError(f"prune_idx: indices must be in [0, {nnz})")
    keep = np.ones(nnz, bool)
    keep[prune_idx] = False
    if nnz - np.count_nonzero(keep) != len(prune_idx):
        raise ValueError("prune_idx: contains duplicates")
    return keep


def remove_connections(indptr, indices, prune_idx):
    """The structure without the entries ``prune_idx`` (indices into data).

    Returns ``(indptr, indices, keep)``: the pruned canonical structure
    (int32) and the boolean mask of kept data entries. One compiled pass
    (:func:`snn_core.kernels.cpu.csr_remove`).
    """
    keep = _kept(len(indices), prune_idx)
    new_indptr, new_indices = K.csr_remove(np.asarray(indptr, INDEX_DTYPE), np.asarray(indices, INDEX_DTYPE), keep)
    return new_indptr, new_indices, keep


def rewire_csr(indptr, indices, data, shape, prune_idx, new_rows, new_cols, new_values):
    """Remove ``prune_idx`` and insert ``(new_rows, new_cols)`` with ``new_values``.

    Parameters
    ----------
    indptr, indices, data : canonical CSR of shape ``shape = (n_out, n_in)``
    prune_idx : int array (k,), distinct indices into ``data`` to remove
    new_rows, new_cols : int arrays (m,), positions to add; each must be
        empty once ``prune_idx`` is removed (a just-pruned position is
        allowed) and they must be distinct
    new_values : float array (m,) or scalar, their weights

    Returns
    -------
    indptr (int32, n_out + 1), indices (int32), data (data's dtype), src (int64)
        The new canonical CSR, built by merging the kept entries (already in
        order) with the sorted new ones, and ``src[k]``: the old data index
        of entry k, or -1 if it was grown. Inputs are not modified.
    """
    return _merge(indptr, indices, data, shape, _kept(len(indices), prune_idx), new_rows, new_cols, new_values)


def _merge(indptr, indices, data, shape, keep, new_rows, new_cols, new_values):
    """:func:`rewire_csr` with the mask of kept entries (``_kept``) instead of ``prune_idx``."""
    n_out, n_in = shape
    data = np.asarray(data)
    new_rows = np.asarray(new_rows, np.int64).reshape(-1)
    new_cols = np.asarray(new_cols, np.int64).reshape(-1)
    if new_rows.shape != new_cols.shape:
        raise ValueError("new_rows, new_cols: must have the same length")
    if len(new_rows) and (min(new_rows.min(), new_cols.min()) < 0 or new_rows.max() >= n_out
                          or new_cols.max() >= n_in):
        raise ValueError(f"new positions: out of range for shape {shape}")
    new_values = np.broadcast_to(np.asarray(new_values, data.dtype), new_rows.shape)
    new_keys = new_rows * np.int64(n_in) + new_cols
    if len(new_keys) > 1 and np.any(np.diff(new_keys) < 0):  # grow rules already return sorted keys
        order = np.argsort(new_keys, kind="stable")
        new_keys, new_values = new_keys[order], new_values[order]
    if len(new_keys) > 1 and np.any(np.diff(new_keys) == 0):
        raise ValueError("new positions: contain duplicates")
    # one pass over both, in key order: new entry j lands after the kept entries with smaller keys
    merged = K.csr_merge(np.asarray(indptr, INDEX_DTYPE), np.asarray(indices, INDEX_DTYPE), data, keep, new_keys,
                         np.ascontiguousarray(new_values), n_in)
    if merged is None:
        raise ValueError("new positions: some are already connections (not pruned in this event)")
    return merged


# --------------------------------------------------------------------------
# Schedule
# --------------------------------------------------------------------------
def zeta_schedule(t, zeta0, t_end, decay="cosine"):
    """Fraction of connections rewired at iteration ``t``.

    ``cosine``: ``zeta0 / 2 * (1 + cos(pi * t / t_end))``; ``constant``:
    ``zeta0``; ``none``: 0. Always 0 for ``t >= t_end``.
    """
    check_name(decay, DECAYS, "decay")
    if decay == "none" or t >= t_end:
        return 0.0
    if decay == "constant":
        return float(zeta0)
    return float(zeta0) / 2.0 * (1.0 + math.cos(math.pi * t / t_end))


def default_t_end(n_iterations, fraction=0.75):
    """The default end of rewiring: ``int(fraction * n_iterations)`` (75% of training)."""
    if not isinstance(n_iterations, (int, np.integer)) or n_iterations < 1:
        raise ValueError(f"n_iterations: expected an integer >= 1, got {n_iterations!r}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction: must be in (0, 1], got {fraction!r}")
    return int(fraction * n_iterations)


# --------------------------------------------------------------------------
# One layer
# --------------------------------------------------------------------------
def momentum_state(optimizer, param):
    """The optimizer's momentum array for ``param`` (Adam ``m`` or SGD ``momentum``)."""
    if optimizer is None:
        raise ValueError("grow='momentum': needs the optimizer (Adam, or SGD with momentum > 0)")
    st = optimizer.host_state(param)  # host copies whatever the backend
    for key in ("m", "momentum"):
        if key in st:
            return st[key]
    raise ValueError("grow='momentum': the optimizer keeps no momentum (use Adam, or SGD with momentum > 0)")


def rewire_layer(layer, n, rng, prune="magnitude", grow="random", new_weight="zero", new_weight_scale=0.1,
                 optimizer=None, dense_grad=None):
    """Run one rewiring event on a SparseLinear ``layer``: prune ``n``, grow ``n``.

    Updates the layer (``set_connections``) and, when given and optimising
    the layer's weights, the ``optimizer``'s state (``remap``).

    Parameters
    ----------
    layer : SparseLinear
    n : int, connections to rewire (0 <= n <= nnz)
    rng : numpy.random.Generator (random growth, random new weights)
    prune : "magnitude" | "set" | "gradient"
    grow : "random" | "gradient" | "momentum"
    new_weight : "zero" | "random"; random new weights are
        U(-s, s), ``s = new_weight_scale * sqrt(3 / fan_in)`` with the row's
        fan-in after the event (a small fraction of the init scale)
    optimizer : Optimizer or None (``momentum`` growth needs it)
    dense_grad : (n_out, n_in) array, required by ``grow="gradient"``

    Returns
    -------
    dict with ``pruned_keys`` / ``grown_keys`` (sorted int64 flat keys
    ``row * n_in + col``), ``src`` (see :func:`rewire_csr`) and ``n``.
    """
    check_name(prune, PRUNE_RULES, "prune")
    check_name(grow, GROW_RULES, "grow")
    check_name(new_weight, NEW_WEIGHTS, "new_weight")
    w = layer.weight
    shape = w.shape
    n_in = shape[1]
    indptr, indices, data = w.indptr, w.indices, w.data
    n = int(n)
    if not 0 <= n <= len(data):
        raise ValueError(f"n: must be in [0, {len(data)}], got {n}")
    param = layer.weight_param
    row_score = None
    if grow == "momentum":  # read before the structure changes
        row_score = row_mean_abs(indptr, momentum_state(optimizer, param))
    if grow == "gradient" and dense_grad is None:
        raise ValueError("grow='gradient': dense_grad (layer.dense_weight_grad()) is required")
    if n == 0:  # nothing to do: keep the layer, its gradient and the optimizer state as they are
        empty = np.empty(0, np.int64)
        return {"n": 0, "pruned_keys": empty, "grown_keys": empty, "src": np.arange(len(data), dtype=np.int64)}

    if prune == "magnitude":
        prune_idx = prune_magnitude(data, n)
    elif prune == "set":
        prune_idx = prune_set(data, n)
    else:
        if param.grad_is_zero:
            raise RuntimeError(f"{layer.name}: prune='gradient' needs the gradient of the last backward; "
                               "call maybe_rewire after optimizer.step() and before zero_grad()")
        prune_idx = prune_gradient(data, n, layer.backend.to_host(param.grad))

    kept_indptr, kept_indices, keep = remove_connections(indptr, indices, prune_idx)
    if grow == "random":
        grown = grow_random(kept_indptr, kept_indices, shape, n, rng)
    elif grow == "gradient":
        grown = grow_gradient(kept_indptr, kept_indices, shape, n, dense_grad)
    else:
        grown = grow_momentum(kept_indptr, kept_indices, shape, n, rng, row_score)
    rows, cols = grown // n_in, grown % n_in

    if new_weight == "zero":
        values = np.zeros(len(grown), data.dtype)
    else:
        fan_in = np.diff(kept_indptr) + np.bincount(rows, minlength=shape[0])
        bound = new_weight_scale * np.sqrt(3.0 / np.maximum(fan_in[rows], 1))
        values = (rng.uniform(-1.0, 1.0, size=len(grown)) * bound).astype(data.dtype)

    pruned_keys = position_keys(indptr, indices, n_in)[prune_idx]
    new_indptr, new_indices, new_data, src = _merge(indptr, indices, data, shape, keep, rows, cols, values)
    layer.set_connections(new_indptr, new_indices, new_data)
    if optimizer is not None and any(p is param for p in optimizer.params):
        optimizer.remap(param, src)
    return {"n": n, "pruned_keys": pruned_keys, "grown_keys": grown, "src": src}


# --------------------------------------------------------------------------
# The schedule object a training loop talks to
# --------------------------------------------------------------------------
class Rewirer:
    """Prune-and-grow every ``t_iter`` iterations until ``t_end`` (ESL-SNNs / SET / RigL).

    Training loop contract (``iteration`` = number of optimizer steps done,
    i.e. ``optimizer.iteration`` right after ``optimizer.step()``)::

        for it in range(1, n_iterations + 1):
            rewirer.prepare(it, net)          # only matters for grow="gradient"
            out = net.forward(x); loss, g = ce_membrane(out, y)
            net.zero_grad(); net.backward(g); opt.step()
            rewirer.maybe_rewire(it, net, opt)

    Parameters
    ----------
    t_iter : int >= 1, iterations between events (paper: 1000)
    zeta0 : float in [0, 1), initial rewired fraction (0.3)
    decay : "cosine" (default), "constant" or "none" (no rewiring: static sparse)
    t_end : int, absolute iteration at which rewiring stops (events at
        ``0 < t < t_end`` with ``t % t_iter == 0``); or
    n_iterations : int, planned iterations; ``t_end`` defaults to 75% of it
    prune : "magnitude" (default), "set", "gradient"
    grow : "random" (default), "gradient", "momentum"
    new_weight : "zero" (default) or "random" (small, ``new_weight_scale``
        times the fan-in init bound)
    seed : int, seeds the rewirer's own numpy Generator
    snapshot_every : int or None, keep the CSR mask every k-th event in the history
    enabled : bool, False gives the static sparse control (same as decay="none")

    Attributes
    ----------
    history : RewiringHistory
    rng : numpy.random.Generator
    n_events : int, events run so far
    last_events : dict layer name -> the :func:`rewire_layer` result of the
        latest event (pruned/grown keys and ``src``), for inspection and plots
    """

    def __init__(self, t_iter=1000, zeta0=0.3, decay="cosine", t_end=None, n_iterations=None, prune="magnitude",
                 grow="random", new_weight="zero", new_weight_scale=0.1, seed=0, snapshot_every=None, enabled=True):
        if not isinstance(t_iter, (int, np.integer)) or isinstance(t_iter, bool) or t_iter < 1:
            raise ValueError(f"t_iter: expected an integer >= 1, got {t_iter!r}")
        if not isinstance(zeta0, (int, float, np.floating, np.integer)) or not 0 <= zeta0 < 1:
            raise ValueError(f"zeta0: must be in [0, 1), got {zeta0!r}")
        check_name(decay, DECAYS, "decay")
        check_name(prune, PRUNE_RULES, "prune")
        check_name(grow, GROW_RULES, "grow")
        check_name(new_weight, NEW_WEIGHTS, "new_weight")
        if not (math.isfinite(new_weight_scale) and new_weight_scale >= 0):
            raise ValueError(f"new_weight_scale: expected a finite value >= 0, got {new_weight_scale!r}")
        if snapshot_every is not None and (not isinstance(snapshot_every, (int, np.integer)) or snapshot_every < 1):
            raise ValueError(f"snapshot_every: expected None or an integer >= 1, got {snapshot_every!r}")
        self.enabled = bool(enabled) and decay != "none"
        if t_end is None and n_iterations is not None:
            t_end = default_t_end(n_iterations)
        if t_end is None and self.enabled:
            raise ValueError("t_end: required (absolute iteration where rewiring stops), or pass n_iterations "
                             "to use 75% of training")
        if t_end is not None and (not isinstance(t_end, (int, np.integer)) or t_end < 1):
            raise ValueError(f"t_end: expected an integer >= 1, got {t_end!r}")
        self.t_iter, self.zeta0, self.decay = int(t_iter), float(zeta0), decay
        self.t_end = None if t_end is None else int(t_end)
        self.prune, self.grow, self.new_weight = prune, grow, new_weight
        self.new_weight_scale = float(new_weight_scale)
        self.seed = seed
        self.snapshot_every = None if snapshot_every is None else int(snapshot_every)
        self.rng = np.random.default_rng(seed)
        self.history = RewiringHistory(snapshot_every=self.snapshot_every)
        self.n_events = 0
        self.last_events = {}

    # -- schedule ----------------------------------------------------------
    def zeta(self, iteration):
        """Rewired fraction at ``iteration`` (0 when disabled or past ``t_end``)."""
        if not self.enabled:
            return 0.0
        return zeta_schedule(iteration, self.zeta0, self.t_end, self.decay)

    def is_event(self, iteration):
        """Whether :meth:`maybe_rewire` rewires at ``iteration``."""
        return (self.enabled and 0 < iteration < self.t_end and iteration % self.t_iter == 0)

    def needs_dense_grad(self, iteration):
        """True when the backward of ``iteration`` must keep the output gradient (grow="gradient")."""
        return self.grow == "gradient" and self.is_event(iteration)

    def prepare(self, iteration, network):
        """Before the forward/backward of ``iteration``: set each sparse layer's ``retain_output_grad``.

        Only a rewirer that grows by gradient sets it (True before its
        events, False otherwise); any other leaves the flag as it is.
        """
        if self.grow != "gradient":  # called every step: not even a walk over the layers
            return
        flag = self.needs_dense_grad(iteration)
        for layer in network.sparse_layers():
            layer.retain_output_grad = flag

    # -- events ------------------------------------------------------------
    def maybe_rewire(self, iteration, network, optimizer=None):
        """Rewire every SparseLinear of ``network`` if ``iteration`` is an event.

        Call after ``optimizer.step()``. Returns the list of event records (one
        dict per layer, see :class:`RewiringHistory`), empty when nothing happened.
        """
        if not self.is_event(iteration):
            return []
        return self.rewire(iteration, network, optimizer)

    def rewire(self, iteration, network, optimizer=None, zeta=None):
        """Run an event now regardless of the schedule (``zeta`` defaults to ``self.zeta(iteration)``)."""
        zeta = self.zeta(iteration) if zeta is None else float(zeta)
        if not 0 <= zeta < 1:
            raise ValueError(f"zeta: must be in [0, 1), got {zeta!r}")
        self.n_events += 1
        self.last_events = {}
        records = []
        for layer in network.sparse_layers():
            w = layer.weight
            self.history.register(layer.name, w.shape, w.indptr, w.indices)
            if layer.nnz == w.shape[0] * w.shape[1]:
                # a dense layer (Erdős–Rényi makes small layers dense) has no
                # empty position: "rewiring" it would only zero its smallest
                # weights in place, so it is left alone
                layer.retain_output_grad = False
                continue
            dense_grad = None
            if self.grow == "gradient":
                try:
                    dense_grad = layer.dense_weight_grad()
                except RuntimeError as e:
                    raise RuntimeError(f"{e}; call rewirer.prepare(iteration, network) before the forward pass "
                                       "of a rewiring iteration") from None
                finally:
                    layer.retain_output_grad = False
            n = round_half_up(zeta * layer.nnz)
            ev = rewire_layer(layer, n, self.rng, self.prune, self.grow, self.new_weight, self.new_weight_scale,
                              optimizer, dense_grad)
            del dense_grad  # the dense gradient lives only during its layer's event
            self.last_events[layer.name] = ev
            w = layer.weight
            records.append(self.history.record(iteration, layer.name, zeta, ev["pruned_keys"], ev["grown_keys"],
                                               w.indptr, w.indices))
        return records

    # -- checkpoints -------------------------------------------------------
    def config(self):
        """JSON-able constructor arguments."""
        seed = self.seed if self.seed is None or isinstance(self.seed, (int, np.integer)) else None
        return {"t_iter": self.t_iter, "zeta0": self.zeta0, "decay": self.decay, "t_end": self.t_end,
                "prune": self.prune, "grow": self.grow, "new_weight": self.new_weight,
                "new_weight_scale": self.new_weight_scale, "seed": None if seed is None else int(seed),
                "snapshot_every": self.snapshot_every, "enabled": self.enabled}

    def state_dict(self):
        """``{"meta": JSON-able dict, "arrays": {name: ndarray}}``: config, RNG state, history."""
        hist = self.history.to_dict()
        meta = {"config": self.config(), "rng_state": self.rng.bit_generator.state, "n_events": self.n_events,
                "history": hist["meta"]}
        return {"meta": meta, "arrays": hist["arrays"]}

    def load_state_dict(self, state):
        """Restore config, RNG state and history from :meth:`state_dict` (in place)."""
        meta = state["meta"]
        fresh = Rewirer(**meta["config"])
        self.__dict__.update(fresh.__dict__)
        self.rng.bit_generator.state = meta["rng_state"]
        self.n_events = int(meta["n_events"])
        self.history = RewiringHistory.from_dict({"meta": meta["history"], "arrays": state["arrays"]})

    @classmethod
    def from_state_dict(cls, state):
        """A new Rewirer restored from :meth:`state_dict`."""
        r = cls(**state["meta"]["config"])
        r.load_state_dict(state)
        return r

    def __repr__(self):
        c = self.config()
        return "Rewirer(" + ", ".join(f"{k}={v!r}" for k, v in c.items()) + ")"
