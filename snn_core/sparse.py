"""CSR helpers: the canonical form, its transpose, random connectivity.

A *connection* exists exactly when its (row, col) is stored in the CSR
structure; its weight may be 0 (a freshly grown connection starts at 0), so
explicit zeros are kept and ``eliminate_zeros`` is never called. The
canonical form used everywhere: int32 ``indptr``/``indices``, sorted column
indices within each row, no duplicates, float ``data`` of the layer's dtype.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

INDEX_DTYPE = np.int32


def canonical_csr(weight, dtype=np.float32) -> sp.csr_matrix:
    """Return ``weight`` as a canonical CSR matrix (copying only if needed).

    Accepts any scipy sparse matrix/array or a dense 2-D array (where every
    nonzero becomes a connection). Duplicates are an error rather than being
    summed silently: they mean the caller built a wrong structure.
    """
    if sp.issparse(weight):
        if weight.format == "coo":  # scipy would silently sum duplicates when converting
            keys = weight.row.astype(np.int64) * weight.shape[1] + weight.col
            if np.unique(keys).size != keys.size:
                raise ValueError("weight: duplicate (row, col) entries")
        w = sp.csr_matrix(weight, copy=True)
    else:
        a = np.asarray(weight)
        if a.ndim != 2:
            raise ValueError(f"weight: expected a 2-D (n_out, n_in) matrix, got shape {a.shape}")
        w = sp.csr_matrix(a)
    if w.dtype != dtype:
        w = w.astype(dtype)
    w = sp.csr_matrix((w.data, w.indices.astype(INDEX_DTYPE), w.indptr.astype(INDEX_DTYPE)), shape=w.shape)
    if not w.has_sorted_indices:
        w.sort_indices()
    check_csr(w.indptr, w.indices, w.shape)
    return w


def check_csr(indptr, indices, shape):
    """Raise ValueError unless the structure is valid, sorted and duplicate-free."""
    n_out, n_in = shape
    if indptr.ndim != 1 or indices.ndim != 1:
        raise ValueError("CSR: indptr and indices must be 1-D arrays")
    if len(indptr) != n_out + 1 or indptr[0] != 0 or indptr[-1] != len(indices):
        raise ValueError("CSR: indptr does not match the shape and the number of indices")
    if np.any(np.diff(indptr) < 0):
        raise ValueError("CSR: indptr is not non-decreasing")
    if len(indices) and (indices.min() < 0 or indices.max() >= n_in):
        raise ValueError(f"CSR: column index out of range [0, {n_in})")
    # within a row, strictly increasing columns = sorted and no duplicates
    d = np.diff(indices.astype(np.int64))
    row_starts = indptr[1:-1]
    inner = np.ones(len(d), bool)
    inner[row_starts[(row_starts > 0) & (row_starts < len(indices))] - 1] = False
    if np.any(d[inner] <= 0):
        raise ValueError("CSR: column indices are not strictly increasing within a row (unsorted or duplicated)")


def csr_from_arrays(indptr, indices, data, shape) -> sp.csr_matrix:
    """Wrap arrays as a CSR matrix without copying, sorting or dropping zeros."""
    return sp.csr_matrix((data, indices, indptr), shape=shape, copy=False)


def transpose_structure(indptr, indices, n_in):
    """The structure of W^T (= CSC of W) and the map into W's ``data``.

    Returns ``(t_indptr, t_indices, perm)`` such that column j of W holds the
    entries ``data[perm[k]]`` at rows ``t_indices[k]`` for
    ``k in t_indptr[j]:t_indptr[j+1]``, rows ascending. O(nnz log nnz); it is
    recomputed only when the structure changes (rewiring), not per step.
    """
    rows = np.repeat(np.arange(len(indptr) - 1, dtype=INDEX_DTYPE), np.diff(indptr))
    perm = np.argsort(indices, kind="stable").astype(INDEX_DTYPE)
    t_indptr = np.zeros(n_in + 1, INDEX_DTYPE)
    np.cumsum(np.bincount(indices, minlength=n_in), out=t_indptr[1:])
    return t_indptr, rows[perm], perm


def sample_row_columns(rng, n_in, k):
    """``k`` distinct sorted columns drawn uniformly from ``range(n_in)``.

    Costs O(k log k), not O(n_in): rejection of duplicates when k is small
    relative to n_in, a permutation otherwise.
    """
    if not 0 <= k <= n_in:
        raise ValueError(f"k: cannot draw {k} distinct columns out of {n_in}")
    if k * 4 >= n_in:
        return np.sort(rng.permutation(n_in)[:k]).astype(INDEX_DTYPE)
    cols = np.unique(rng.integers(0, n_in, size=k))
    while len(cols) < k:  # each round adds k - len(cols) draws, so never overshoots
        cols = np.unique(np.concatenate([cols, rng.integers(0, n_in, size=k - len(cols))]))
    return cols.astype(INDEX_DTYPE)


def random_connectivity(n_out, n_in, density, rng, exact=True):
    """Random CSR structure (indptr, indices) at the given density.

    ``exact=True`` places exactly ``round(density * n_out * n_in)`` connections
    (each of the possible positions equally likely, Erdős–Rényi with a fixed
    edge count); the per-row counts follow the multinomial. ``exact=False``
    keeps each connection independently with probability ``density``.
    Never builds a dense mask.
    """
    if not 0 < density <= 1:
        raise ValueError(f"density: must be in (0, 1], got {density!r}")
    total = n_out * n_in
    if exact:
        nnz = int(round(density * total))
        counts = rng.multivariate_hypergeometric(np.full(n_out, n_in), nnz) if n_out > 1 else np.array([nnz])
    else:
        counts = rng.binomial(n_in, density, size=n_out)
    indptr = np.zeros(n_out + 1, INDEX_DTYPE)
    np.cumsum(counts, out=indptr[1:])
    indices = np.empty(indptr[-1], INDEX_DTYPE)
    for r in range(n_out):
        indices[indptr[r]:indptr[r + 1]] = sample_row_columns(rng, n_in, int(counts[r]))
    return indptr, indices


def fan_in_uniform(indptr, rng, gain=1.0, dtype=np.float32):
    """Initial weights at the connections: U(-a, a), a = gain * sqrt(3 / fan_in).

    ``fan_in`` is each output neuron's *actual* number of connections, so the
    variance of the summed input ``gain^2 * E[x^2]`` does not depend on density.
    """
    fan_in = np.diff(indptr)
    a = gain * np.sqrt(3.0 / np.maximum(fan_in, 1))
    bound = np.repeat(a, fan_in)
    return (rng.uniform(-1.0, 1.0, size=len(bound)) * bound).astype(dtype)
