"""Numba kernels for the hot loops (CPU).

Layout convention, shared by every kernel here and by
:mod:`snn_core.kernels.reference`: activations are **feature-major**,
``(features, T, batch)`` C-contiguous, viewed as ``(features, N)`` with
``N = T * batch`` where a product does not care about time. A connection then
touches one contiguous row of ``N`` values, which the compiler vectorises;
the public API still indexes arrays as ``(T, batch, features)`` through
transposed views of these buffers (see :mod:`snn_core.layers`).

CSR matrices are passed as their three arrays ``indptr, indices`` (int32) and
``data`` (the float dtype of the activations). Scalars are cast to that dtype
by the callers so that float32 stays float32 (no silent upcast, no second
compile). Every kernel has a plain NumPy twin in ``reference.py``; the tests
compare them.

Serial or parallel. A ``parallel=True`` call costs 70-90 us of thread
wake-up with the work-queue layer on this kind of machine, as much as
streaming a few MB. Every public kernel below is therefore a thin Python
function that estimates the work of the call and runs either the
``prange`` version (``_<name>_par``) or the serial one (``_<name>_ser``) of
the same row function; the results are identical (the row function is the
same code). ``PARALLEL_MIN_NS`` is the estimated serial run time above which
the parallel version is used.

Spiking inputs. When a synaptic layer's input holds only 0 and 1 (spikes),
:func:`spike_pack` condenses it once per forward pass into ``X8`` (uint8,
4x smaller than float32), a per-input spike count ``cnt`` and, for the inputs
that spike rarely (``cnt < thr``), the list of their active columns
``cols[j, :cnt[j]]``. The forward product and the weight gradient then skip
silent inputs altogether, walk the active-column list of rarely spiking
inputs (cost proportional to spikes) and stream the uint8 row of the others,
four connections per pass over the output row (:func:`csr_forward_spikes`,
:func:`csr_grad_spikes`). The same pack serves forward and backward.

Parallel kernels write disjoint outputs per ``prange`` index (a row or a
neuron), never a shared accumulator, so they are race-free.
"""
from __future__ import annotations

import os

import numba
import numpy as np
from numba import prange
from numba.cpython.unsafe.numbers import trailing_zeros

# The OpenMP layer's barriers spin: on a 2-core laptop with anything else
# running, every parallel call then stalls for milliseconds (measured 7 ms
# for a 10x800 kernel). The work-queue layer does not; users can still choose
# with NUMBA_THREADING_LAYER.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

from ..surrogate import smooth_spike, surrogate_grad

# error_model="numpy": IEEE division (no ZeroDivisionError branch), which lets
# loops with a division vectorise (Adam 3x faster); no kernel divides by zero.
_jit = dict(cache=True, nogil=True, error_model="numpy")

#: Estimated serial run time (ns) from which a kernel runs in parallel.
#: A parallel launch costs ~80 us (work-queue wake-up) and gains nothing
#: when the other core is busy; below ~300 us of work the serial version is
#: as fast on an idle machine and faster on a loaded one.
PARALLEL_MIN_NS = 300_000.0

# Serial costs per element (ns), measured on the 2-core AMD EPYC (Zen 4) of
# docs/benchmarks.md; only their order of magnitude matters.
_NS_LIF_FWD = 0.25     # one (neuron, step, sample) of the LIF/readout forward
_NS_LIF_BWD = 0.4      # one (neuron, step, sample) of the LIF/readout backward
_NS_STREAM = 0.06      # one float of a vectorised multiply-add over a row
_NS_EVENT = 0.65       # one scattered/gathered spike event
_NS_PACK = 0.15        # one element of spike_pack
_NS_UPDATE = 0.6       # one optimizer element


def _parallel(ns):
    return ns >= PARALLEL_MIN_NS


# --------------------------------------------------------------------------
# LIF and readout over all T steps in one call
# --------------------------------------------------------------------------
# Loop order f, t, b: for one neuron f the carry (the membrane of the B
# samples) lives in v_out[f, :] and every inner loop runs over the B
# contiguous samples of one step, which the compiler vectorises. No
# fastmath: the arithmetic is the reference's, operation for operation.
@numba.njit(**_jit)
def _lif_forward_row(f, I, v0, alpha, k0, c, v_th, v_reset, reset, sur, p, smooth, u_out, s_out, v_out):
    T, B = I.shape[1], I.shape[2]
    one = s_out.dtype.type(1.0)
    zero = s_out.dtype.type(0.0)
    for b in range(B):
        v_out[f, b] = v0[f, b]
    if smooth:
        for t in range(T):
            for b in range(B):
                u = alpha * v_out[f, b] + k0 + c * I[f, t, b]
                u_out[f, t, b] = u
                s = s_out.dtype.type(smooth_spike(u - v_th, sur, p))
                s_out[f, t, b] = s
                if reset == 0:
                    v_out[f, b] = u * (one - s) + v_reset * s
                elif reset == 1:
                    v_out[f, b] = u - v_th * s
                else:
                    v_out[f, b] = u
    elif reset == 0:
        for t in range(T):
            for b in range(B):
                u = alpha * v_out[f, b] + k0 + c * I[f, t, b]
                u_out[f, t, b] = u
                sp = u >= v_th
                s_out[f, t, b] = one if sp else zero
                v_out[f, b] = v_reset if sp else u
    elif reset == 1:
        for t in range(T):
            for b in range(B):
                u = alpha * v_out[f, b] + k0 + c * I[f, t, b]
                u_out[f, t, b] = u
                sp = u >= v_th
                s_out[f, t, b] = one if sp else zero
                v_out[f, b] = u - v_th if sp else u
    else:
        for t in range(T):
            for b in range(B):
                u = alpha * v_out[f, b] + k0 + c * I[f, t, b]
                u_out[f, t, b] = u
                s_out[f, t, b] = one if u >= v_th else zero
                v_out[f, b] = u


@numba.njit(parallel=True, **_jit)
def _lif_forward_par(I, v0, alpha, k0, c, v_th, v_reset, reset, sur, p, smooth, u_out, s_out, v_out):
    for f in prange(I.shape[0]):
        _lif_forward_row(f, I, v0, alpha, k0, c, v_th, v_reset, reset, sur, p, smooth, u_out, s_out, v_out)


@numba.njit(**_jit)
def _lif_forward_ser(I, v0, alpha, k0, c, v_th, v_reset, reset, sur, p, smooth, u_out, s_out, v_out):
    for f in range(I.shape[0]):
        _lif_forward_row(f, I, v0, alpha, k0, c, v_th, v_reset, reset, sur, p, smooth, u_out, s_out, v_out)


def lif_forward(I, v0, alpha, k0, c, v_th, v_reset, reset, sur, p, smooth, u_out, s_out, v_out):
    """Euler-integrate a LIF population over T steps.

    I : (F, T, B) input current; v0 : (F, B) initial membrane.
    alpha = 1 - dt/tau_m, k0 = (1 - alpha) * v_rest, c = R dt/tau_m.
    reset: 0 hard, 1 soft, 2 none; sur/p: surrogate code and parameter
    (used only when smooth=1, the test-only differentiable spike).
    Writes u_out (pre-reset membrane), s_out (spikes), v_out (final v, (F, B)).
    """
    k = _lif_forward_par if _parallel(I.size * _NS_LIF_FWD) else _lif_forward_ser
    k(I, v0, alpha, k0, c, v_th, v_reset, reset, sur, p, smooth, u_out, s_out, v_out)


@numba.njit(**_jit)
def _surrogate_row(f, u, v_th, sur, p, out):
    """out[f] = sigma'(u[f] - v_th); one loop per surrogate so that each vectorises."""
    T, B = u.shape[1], u.shape[2]
    ft = out.dtype.type
    if sur == 0:
        for t in range(T):
            for b in range(B):
                out[f, t, b] = ft(surrogate_grad(u[f, t, b] - v_th, 0, p))
    elif sur == 1:
        for t in range(T):
            for b in range(B):
                out[f, t, b] = ft(surrogate_grad(u[f, t, b] - v_th, 1, p))
    elif sur == 2:
        for t in range(T):
            for b in range(B):
                out[f, t, b] = ft(surrogate_grad(u[f, t, b] - v_th, 2, p))
    elif sur == 3:
        for t in range(T):
            for b in range(B):
                out[f, t, b] = ft(surrogate_grad(u[f, t, b] - v_th, 3, p))
    else:
        for t in range(T):
            for b in range(B):
                out[f, t, b] = ft(surrogate_grad(u[f, t, b] - v_th, 4, p))


@numba.njit(**_jit)
def _lif_backward_row(f, gs, u, s, alpha, c, v_th, v_reset, reset, detach, sur, p, gI):
    T, B = gs.shape[1], gs.shape[2]
    one = gI.dtype.type(1.0)
    zero = gI.dtype.type(0.0)
    # A neuron whose output gradient is zero at every step (e.g. one without
    # outgoing connections) gets a zero input gradient: skip u, s entirely.
    nz = 0
    for t in range(T):
        for b in range(B):
            nz += gs[f, t, b] != zero
        if nz:
            break
    if nz == 0:
        for t in range(T):
            for b in range(B):
                gI[f, t, b] = zero
        return
    # pass 1: gI[f] <- sigma'(u - v_th); pass 2, backwards in time:
    # gI[f, t] <- gu[t] (unscaled, gv = alpha * gu[t+1] read from gI[f, t+1]);
    # pass 3: gI[f] *= c. Each inner loop writes one contiguous row only and
    # has no branch, so it vectorises.
    _surrogate_row(f, u, v_th, sur, p, gI)
    for b in range(B):
        gI[f, T - 1, b] = gs[f, T - 1, b] * gI[f, T - 1, b]
    if reset == 0:
        for tt in range(1, T):
            t = T - 1 - tt
            if detach:
                for b in range(B):
                    gv = alpha * gI[f, t + 1, b]
                    gI[f, t, b] = gs[f, t, b] * gI[f, t, b] + gv * (one - s[f, t, b])
            else:
                for b in range(B):
                    gv = alpha * gI[f, t + 1, b]
                    g_s = gs[f, t, b] + gv * (v_reset - u[f, t, b])
                    gI[f, t, b] = g_s * gI[f, t, b] + gv * (one - s[f, t, b])
    else:
        dvds = -v_th if reset == 1 else zero
        for tt in range(1, T):
            t = T - 1 - tt
            if detach:
                for b in range(B):
                    gv = alpha * gI[f, t + 1, b]
                    gI[f, t, b] = gs[f, t, b] * gI[f, t, b] + gv * one
            else:
                for b in range(B):
                    gv = alpha * gI[f, t + 1, b]
                    g_s = gs[f, t, b] + gv * dvds
                    gI[f, t, b] = g_s * gI[f, t, b] + gv * one
    for t in range(T):
        for b in range(B):
            gI[f, t, b] = c * gI[f, t, b]


@numba.njit(parallel=True, **_jit)
def _lif_backward_par(gs, u, s, alpha, c, v_th, v_reset, reset, detach, sur, p, gI):
    for f in prange(gs.shape[0]):
        _lif_backward_row(f, gs, u, s, alpha, c, v_th, v_reset, reset, detach, sur, p, gI)


@numba.njit(**_jit)
def _lif_backward_ser(gs, u, s, alpha, c, v_th, v_reset, reset, detach, sur, p, gI):
    for f in range(gs.shape[0]):
        _lif_backward_row(f, gs, u, s, alpha, c, v_th, v_reset, reset, detach, sur, p, gI)


def lif_backward(gs, u, s, alpha, c, v_th, v_reset, reset, detach, sur, p, gI):
    """BPTT through a LIF population: dL/dI from dL/ds (all (F, T, B)).

    With ``gv`` the gradient reaching the post-reset membrane v[t] from step
    t+1 (``gv = alpha * gu[t+1]``, zero after the last step)::

        gs_tot = gs[t] + gv * dv/ds      (dv/ds = v_reset - u | -v_th | 0; 0 if detach)
        gu[t]  = gs_tot * sigma'(u[t] - v_th) + gv * dv/du   (dv/du = 1 - s | 1 | 1)
        gI[t]  = c * gu[t]

    ``s`` is read only for the hard reset. Neurons whose ``gs`` is zero at
    every step are skipped (their ``gI`` is zero).
    """
    k = _lif_backward_par if _parallel(gs.size * _NS_LIF_BWD) else _lif_backward_ser
    k(gs, u, s, alpha, c, v_th, v_reset, reset, detach, sur, p, gI)


@numba.njit(**_jit)
def _readout_forward_row(f, I, v0, alpha, k0, c, u_out):
    T, B = I.shape[1], I.shape[2]
    for b in range(B):
        u_out[f, 0, b] = alpha * v0[f, b] + k0 + c * I[f, 0, b]
    for t in range(1, T):
        for b in range(B):
            u_out[f, t, b] = alpha * u_out[f, t - 1, b] + k0 + c * I[f, t, b]


@numba.njit(parallel=True, **_jit)
def _readout_forward_par(I, v0, alpha, k0, c, u_out):
    for f in prange(I.shape[0]):
        _readout_forward_row(f, I, v0, alpha, k0, c, u_out)


@numba.njit(**_jit)
def _readout_forward_ser(I, v0, alpha, k0, c, u_out):
    for f in range(I.shape[0]):
        _readout_forward_row(f, I, v0, alpha, k0, c, u_out)


def readout_forward(I, v0, alpha, k0, c, u_out):
    """Leaky integrator over T steps: u[t] = alpha u[t-1] + k0 + c I[t]."""
    k = _readout_forward_par if _parallel(I.size * _NS_LIF_FWD) else _readout_forward_ser
    k(I, v0, alpha, k0, c, u_out)


@numba.njit(**_jit)
def _readout_backward_row(f, gu, alpha, c, gI):
    T, B = gu.shape[1], gu.shape[2]
    for b in range(B):
        gI[f, T - 1, b] = gu[f, T - 1, b]
    for tt in range(1, T):
        t = T - 1 - tt
        for b in range(B):
            gI[f, t, b] = gu[f, t, b] + alpha * gI[f, t + 1, b]
    for t in range(T):
        for b in range(B):
            gI[f, t, b] *= c


@numba.njit(parallel=True, **_jit)
def _readout_backward_par(gu, alpha, c, gI):
    for f in prange(gu.shape[0]):
        _readout_backward_row(f, gu, alpha, c, gI)


@numba.njit(**_jit)
def _readout_backward_ser(gu, alpha, c, gI):
    for f in range(gu.shape[0]):
        _readout_backward_row(f, gu, alpha, c, gI)


def readout_backward(gu, alpha, c, gI):
    """BPTT through the leaky integrator: gu_tot[t] = gu[t] + alpha gu_tot[t+1]."""
    k = _readout_backward_par if _parallel(gu.size * _NS_LIF_FWD) else _readout_backward_ser
    k(gu, alpha, c, gI)


# --------------------------------------------------------------------------
# Sparse synapses: CSR weights (n_out, n_in) times feature-major activations
# --------------------------------------------------------------------------
# Dense-row kernels handle four connections per pass over the output row:
# one load/store of Y[r, n] per four multiply-adds instead of per one (the
# single-connection loop is bound by those stores).
@numba.njit(fastmath=True, **_jit)
def _csr_forward_row(r, indptr, indices, data, bias, X, Y):
    N = Y.shape[1]
    for n in range(N):
        Y[r, n] = bias[r]
    k = indptr[r]
    e = indptr[r + 1]
    while k + 4 <= e:
        w0, w1, w2, w3 = data[k], data[k + 1], data[k + 2], data[k + 3]
        j0, j1, j2, j3 = indices[k], indices[k + 1], indices[k + 2], indices[k + 3]
        for n in range(N):
            Y[r, n] += (w0 * X[j0, n] + w1 * X[j1, n]) + (w2 * X[j2, n] + w3 * X[j3, n])
        k += 4
    while k < e:
        w0 = data[k]
        j0 = indices[k]
        for n in range(N):
            Y[r, n] += w0 * X[j0, n]
        k += 1


@numba.njit(parallel=True, **_jit)
def _csr_forward_par(indptr, indices, data, bias, X, Y):
    for r in prange(Y.shape[0]):
        _csr_forward_row(r, indptr, indices, data, bias, X, Y)


@numba.njit(**_jit)
def _csr_forward_ser(indptr, indices, data, bias, X, Y):
    for r in range(Y.shape[0]):
        _csr_forward_row(r, indptr, indices, data, bias, X, Y)


def csr_forward(indptr, indices, data, bias, X, Y):
    """Y[r, :] = bias[r] + sum_k data[k] * X[indices[k], :] over row r.

    X : (n_in, N), Y : (n_out, N). Each connection streams one contiguous
    row of N columns (all T steps of the batch at once).
    """
    ns = (len(indices) + Y.shape[0]) * Y.shape[1] * _NS_STREAM
    k = _csr_forward_par if _parallel(ns) else _csr_forward_ser
    k(indptr, indices, data, bias, X, Y)


@numba.njit(fastmath=True, **_jit)
def _row_sum_nz(r, G, gb, rownz):
    """gb[r] = sum_n G[r, n]; rownz[r] = 1 if any G[r, n] != 0. Returns rownz[r]."""
    N = G.shape[1]
    zero = G.dtype.type(0.0)
    acc = zero
    nz = 0
    for n in range(N):
        g = G[r, n]
        acc += g
        nz += g != zero
    gb[r] = acc
    rownz[r] = 1 if nz else 0
    return nz != 0


@numba.njit(fastmath=True, **_jit)
def _csr_grad_dense_row(r, indptr, indices, G, X, out, accumulate, gb, rownz):
    N = G.shape[1]
    zero = G.dtype.type(0.0)
    k = indptr[r]
    e = indptr[r + 1]
    if not _row_sum_nz(r, G, gb, rownz):
        if not accumulate:
            for kk in range(k, e):
                out[kk] = zero
        return
    while k + 4 <= e:
        j0, j1, j2, j3 = indices[k], indices[k + 1], indices[k + 2], indices[k + 3]
        a0 = zero
        a1 = zero
        a2 = zero
        a3 = zero
        for n in range(N):
            g = G[r, n]
            a0 += g * X[j0, n]
            a1 += g * X[j1, n]
            a2 += g * X[j2, n]
            a3 += g * X[j3, n]
        if accumulate:
            out[k] += a0
            out[k + 1] += a1
            out[k + 2] += a2
            out[k + 3] += a3
        else:
            out[k] = a0
            out[k + 1] = a1
            out[k + 2] = a2
            out[k + 3] = a3
        k += 4
    while k < e:
        j0 = indices[k]
        a0 = zero
        for n in range(N):
            a0 += G[r, n] * X[j0, n]
        if accumulate:
            out[k] += a0
        else:
            out[k] = a0
        k += 1


@numba.njit(parallel=True, **_jit)
def _csr_grad_dense_par(indptr, indices, G, X, out, accumulate, gb, rownz):
    for r in prange(G.shape[0]):
        _csr_grad_dense_row(r, indptr, indices, G, X, out, accumulate, gb, rownz)


@numba.njit(**_jit)
def _csr_grad_dense_ser(indptr, indices, G, X, out, accumulate, gb, rownz):
    for r in range(G.shape[0]):
        _csr_grad_dense_row(r, indptr, indices, G, X, out, accumulate, gb, rownz)


def csr_grad_dense(indptr, indices, G, X, out, accumulate, gb, rownz):
    """:func:`csr_grad_at` plus, in the same pass over G, the bias gradient
    ``gb[r] = sum_n G[r, n]`` and ``rownz[r] = any(G[r, :] != 0)`` (uint8).

    Rows of G that are entirely zero skip their connections (gradient 0).
    """
    ns = (len(indices) + G.shape[0]) * G.shape[1] * _NS_STREAM
    k = _csr_grad_dense_par if _parallel(ns) else _csr_grad_dense_ser
    k(indptr, indices, G, X, out, accumulate, gb, rownz)


def csr_grad_at(indptr, indices, G, X, out, accumulate):
    """dL/dW only at existing connections: out[k] (+)= G[r, :] . X[indices[k], :].

    G : (n_out, N) output gradient, X : (n_in, N) layer input. Never builds
    the dense n_out x n_in gradient.
    """
    n_out = G.shape[0]
    csr_grad_dense(indptr, indices, G, X, out, accumulate, np.empty(n_out, G.dtype), np.empty(n_out, np.uint8))


@numba.njit(fastmath=True, **_jit)
def _csr_backward_input_row(j, t_indptr, t_indices, t_perm, data, G, rownz, GX):
    N = GX.shape[1]
    zero = GX.dtype.type(0.0)
    for n in range(N):
        GX[j, n] = zero
    # connections from rows of G that are entirely zero contribute nothing
    q = 0
    r0 = r1 = r2 = r3 = 0
    w0 = w1 = w2 = w3 = zero
    for k in range(t_indptr[j], t_indptr[j + 1]):
        r = t_indices[k]
        if not rownz[r]:
            continue
        w = data[t_perm[k]]
        if q == 0:
            r0, w0 = r, w
        elif q == 1:
            r1, w1 = r, w
        elif q == 2:
            r2, w2 = r, w
        else:
            r3, w3 = r, w
        q += 1
        if q == 4:
            for n in range(N):
                GX[j, n] += (w0 * G[r0, n] + w1 * G[r1, n]) + (w2 * G[r2, n] + w3 * G[r3, n])
            q = 0
    if q > 0:
        if q < 2:
            r1, w1 = r0, zero
        if q < 3:
            r2, w2 = r0, zero
        r3, w3 = r0, zero
        for n in range(N):
            GX[j, n] += (w0 * G[r0, n] + w1 * G[r1, n]) + (w2 * G[r2, n] + w3 * G[r3, n])


@numba.njit(parallel=True, **_jit)
def _csr_backward_input_par(t_indptr, t_indices, t_perm, data, G, rownz, GX):
    for j in prange(GX.shape[0]):
        _csr_backward_input_row(j, t_indptr, t_indices, t_perm, data, G, rownz, GX)


@numba.njit(**_jit)
def _csr_backward_input_ser(t_indptr, t_indices, t_perm, data, G, rownz, GX):
    for j in range(GX.shape[0]):
        _csr_backward_input_row(j, t_indptr, t_indices, t_perm, data, G, rownz, GX)


def csr_backward_input_nz(t_indptr, t_indices, t_perm, data, G, rownz, GX):
    """:func:`csr_backward_input` skipping rows r of G with ``rownz[r] == 0``.

    ``rownz`` (uint8, n_out) must be 1 wherever G[r, :] has a nonzero
    (:func:`csr_grad_dense` / :func:`csr_grad_spikes` produce it).
    """
    ns = (len(t_indices) + GX.shape[0]) * GX.shape[1] * _NS_STREAM
    k = _csr_backward_input_par if _parallel(ns) else _csr_backward_input_ser
    k(t_indptr, t_indices, t_perm, data, G, rownz, GX)


def csr_backward_input(t_indptr, t_indices, t_perm, data, G, GX):
    """GX = W^T G through the transposed structure (CSC of W).

    t_indptr/t_indices/t_perm describe W^T: column j of W holds the entries
    ``data[t_perm[k]]`` at rows ``t_indices[k]`` for k in
    ``t_indptr[j]:t_indptr[j+1]``. Parallel over inputs j: each thread owns
    one output row, so there is no race.
    """
    csr_backward_input_nz(t_indptr, t_indices, t_perm, data, G, np.ones(G.shape[0], np.uint8), GX)


# --------------------------------------------------------------------------
# Spiking inputs: pack once, then cost follows connections x spikes
# --------------------------------------------------------------------------
@numba.njit(**_jit)
def _spike_pack_row(j, X, X8, cnt, cols, thr):
    N = X.shape[1]
    zero = X.dtype.type(0.0)
    one = X.dtype.type(1.0)
    c = 0
    bad = 0
    for n in range(N):
        x = X[j, n]
        a = x != zero
        bad += a & (x != one)
        X8[j, n] = a
        c += a
    cnt[j] = c
    if 0 < c < thr:
        # active columns, 8 at a time: skip all-silent groups with one
        # 64-bit test, then walk the set bytes with trailing-zero counts
        i = 0
        n0 = 0
        if N >= 8:
            W = X8[j, : N - N % 8].view(np.uint64)
            for q in range(W.shape[0]):
                w = W[q]
                while w:
                    cols[j, i] = n0 + (trailing_zeros(w) >> 3)
                    i += 1
                    w &= w - np.uint64(1)
                n0 += 8
        for n in range(n0, N):
            if X8[j, n]:
                cols[j, i] = n
                i += 1
    return bad


@numba.njit(parallel=True, **_jit)
def _spike_pack_par(X, X8, cnt, cols, thr):
    bad = 0
    for j in prange(X.shape[0]):
        bad += _spike_pack_row(j, X, X8, cnt, cols, thr)
    return bad


@numba.njit(**_jit)
def _spike_pack_ser(X, X8, cnt, cols, thr):
    bad = 0
    for j in range(X.shape[0]):
        bad += _spike_pack_row(j, X, X8, cnt, cols, thr)
    return bad


def spike_pack(X, X8, cnt, cols, thr):
    """Condense a spike matrix X (n_in, N) for the spike-driven kernels.

    Writes X8[j, n] = (X[j, n] != 0) (uint8), cnt[j] = number of active
    columns of row j and, for rows with ``0 < cnt[j] < thr``, their sorted
    active columns in ``cols[j, :cnt[j]]`` (int32, other entries undefined).
    Returns the number of entries that are neither 0 nor 1 (NaN included):
    if it is not 0, X is not a spike matrix and the packed arrays must not
    be used.
    """
    k = _spike_pack_par if _parallel(X.size * _NS_PACK) else _spike_pack_ser
    return int(k(X, X8, cnt, cols, thr))


@numba.njit(fastmath=True, **_jit)
def _add4_spikes(r, Y, X8, j0, j1, j2, j3, w0, w1, w2, w3):
    """Y[r, n] += sum of the w_i whose input j_i spiked at column n."""
    zero = Y.dtype.type(0.0)
    for n in range(Y.shape[1]):
        Y[r, n] += ((w0 if X8[j0, n] else zero) + (w1 if X8[j1, n] else zero)) + (
            (w2 if X8[j2, n] else zero) + (w3 if X8[j3, n] else zero))


@numba.njit(fastmath=True, **_jit)
def _csr_forward_spikes_row(r, indptr, indices, data, bias, X8, cnt, cols, thr, Y):
    N = Y.shape[1]
    zero = Y.dtype.type(0.0)
    for n in range(N):
        Y[r, n] = bias[r]
    q = 0
    j0 = j1 = j2 = j3 = 0
    w0 = w1 = w2 = w3 = zero
    for k in range(indptr[r], indptr[r + 1]):
        j = indices[k]
        m = cnt[j]
        if m == 0:
            continue
        w = data[k]
        if m < thr:  # rarely spiking input: one add per spike
            for i in range(m):
                Y[r, cols[j, i]] += w
            continue
        if q == 0:
            j0, w0 = j, w
        elif q == 1:
            j1, w1 = j, w
        elif q == 2:
            j2, w2 = j, w
        else:
            j3, w3 = j, w
        q += 1
        if q == 4:
            _add4_spikes(r, Y, X8, j0, j1, j2, j3, w0, w1, w2, w3)
            q = 0
    if q == 1:
        for n in range(N):
            Y[r, n] += w0 if X8[j0, n] else zero
    elif q == 2:
        for n in range(N):
            Y[r, n] += (w0 if X8[j0, n] else zero) + (w1 if X8[j1, n] else zero)
    elif q == 3:
        _add4_spikes(r, Y, X8, j0, j1, j2, j0, w0, w1, w2, zero)


@numba.njit(parallel=True, **_jit)
def _csr_forward_spikes_par(indptr, indices, data, bias, X8, cnt, cols, thr, Y):
    for r in prange(Y.shape[0]):
        _csr_forward_spikes_row(r, indptr, indices, data, bias, X8, cnt, cols, thr, Y)


@numba.njit(**_jit)
def _csr_forward_spikes_ser(indptr, indices, data, bias, X8, cnt, cols, thr, Y):
    for r in range(Y.shape[0]):
        _csr_forward_spikes_row(r, indptr, indices, data, bias, X8, cnt, cols, thr, Y)


def spike_work_ns(indptr_len, nnz, n_in, N, n_spikes):
    """Rough serial cost (ns) of a spike-driven product (for the serial/parallel choice)."""
    rate = n_spikes / max(1, n_in * N)
    return (indptr_len * N + nnz * N * min(1.0, 4.0 * rate)) * _NS_STREAM + nnz * rate * N * _NS_EVENT * 0.25


def csr_forward_spikes(indptr, indices, data, bias, X8, cnt, cols, thr, Y, work_ns=None):
    """Y = W X + bias for a spike matrix X given as :func:`spike_pack` output.

    Connections from silent inputs (cnt 0) cost nothing, those from inputs
    with ``cnt < thr`` add their weight at each active column, the others
    stream X8 rows, four connections per pass over Y[r, :].
    """
    if work_ns is None:
        work_ns = spike_work_ns(Y.shape[0], len(indices), X8.shape[0], Y.shape[1], int(cnt.sum()))
    k = _csr_forward_spikes_par if _parallel(work_ns) else _csr_forward_spikes_ser
    k(indptr, indices, data, bias, X8, cnt, cols, thr, Y)


@numba.njit(fastmath=True, **_jit)
def _dot4_spikes(r, G, X8, j0, j1, j2, j3):
    """Sums of G[r, n] over the columns n where input j_i spiked, i = 0..3."""
    zero = G.dtype.type(0.0)
    a0 = zero
    a1 = zero
    a2 = zero
    a3 = zero
    for n in range(G.shape[1]):
        g = G[r, n]
        a0 += g if X8[j0, n] else zero
        a1 += g if X8[j1, n] else zero
        a2 += g if X8[j2, n] else zero
        a3 += g if X8[j3, n] else zero
    return a0, a1, a2, a3


@numba.njit(**_jit)
def _put(out, k, a, accumulate):
    if accumulate:
        out[k] += a
    else:
        out[k] = a


@numba.njit(fastmath=True, **_jit)
def _csr_grad_spikes_row(r, indptr, indices, X8, cnt, cols, thr, G, out, accumulate, gb, rownz):
    zero = G.dtype.type(0.0)
    kb = indptr[r]
    ke = indptr[r + 1]
    if not _row_sum_nz(r, G, gb, rownz):
        if not accumulate:
            for k in range(kb, ke):
                out[k] = zero
        return
    q = 0
    j0 = j1 = j2 = j3 = 0
    k0 = k1 = k2 = k3 = 0
    for k in range(kb, ke):
        j = indices[k]
        m = cnt[j]
        if m == 0:
            if not accumulate:
                out[k] = zero
            continue
        if m < thr:  # rarely spiking input: gather G at its active columns
            a0 = zero
            a1 = zero
            i = 0
            while i + 2 <= m:
                a0 += G[r, cols[j, i]]
                a1 += G[r, cols[j, i + 1]]
                i += 2
            if i < m:
                a0 += G[r, cols[j, i]]
            _put(out, k, a0 + a1, accumulate)
            continue
        if q == 0:
            j0, k0 = j, k
        elif q == 1:
            j1, k1 = j, k
        elif q == 2:
            j2, k2 = j, k
        else:
            j3, k3 = j, k
        q += 1
        if q == 4:
            a0, a1, a2, a3 = _dot4_spikes(r, G, X8, j0, j1, j2, j3)
            _put(out, k0, a0, accumulate)
            _put(out, k1, a1, accumulate)
            _put(out, k2, a2, accumulate)
            _put(out, k3, a3, accumulate)
            q = 0
    if q == 1:
        a0 = zero
        for n in range(G.shape[1]):
            a0 += G[r, n] if X8[j0, n] else zero
        _put(out, k0, a0, accumulate)
    elif q > 1:  # pad the group with j0 and drop the padding
        if q == 2:
            j2 = j0
        a0, a1, a2, a3 = _dot4_spikes(r, G, X8, j0, j1, j2, j0)
        _put(out, k0, a0, accumulate)
        _put(out, k1, a1, accumulate)
        if q == 3:
            _put(out, k2, a2, accumulate)


@numba.njit(parallel=True, **_jit)
def _csr_grad_spikes_par(indptr, indices, X8, cnt, cols, thr, G, out, accumulate, gb, rownz):
    for r in prange(G.shape[0]):
        _csr_grad_spikes_row(r, indptr, indices, X8, cnt, cols, thr, G, out, accumulate, gb, rownz)


@numba.njit(**_jit)
def _csr_grad_spikes_ser(indptr, indices, X8, cnt, cols, thr, G, out, accumulate, gb, rownz):
    for r in range(G.shape[0]):
        _csr_grad_spikes_row(r, indptr, indices, X8, cnt, cols, thr, G, out, accumulate, gb, rownz)


def csr_grad_spikes(indptr, indices, X8, cnt, cols, thr, G, out, accumulate, gb, rownz, work_ns=None):
    """Weight gradient at the connections for a packed spike input.

    out[k] (+)= sum over the active columns n of input j = indices[k] of
    G[r, n]; also gb[r] = sum_n G[r, n] (bias gradient) and rownz[r] =
    any(G[r] != 0) from the same pass over G. Rows of G that are all zero
    and silent inputs are skipped.
    """
    if work_ns is None:
        work_ns = spike_work_ns(G.shape[0], len(indices), X8.shape[0], G.shape[1], int(cnt.sum()))
    k = _csr_grad_spikes_par if _parallel(work_ns) else _csr_grad_spikes_ser
    k(indptr, indices, X8, cnt, cols, thr, G, out, accumulate, gb, rownz)


# --------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------
@numba.njit(**_jit)
def _count_nonfinite(bits, expo):
    """Number of IEEE values whose exponent bits are all ones (Inf or NaN).

    Works on the raw bits (uint32/uint64 view) so that it vectorises without
    fastmath, which would assume there are no NaN/Inf to find.
    """
    c = 0
    for i in range(bits.size):
        c += (bits[i] & expo) == expo
    return c


_EXPO = {np.dtype(np.float32): (np.uint32, np.uint32(0x7F800000)),
         np.dtype(np.float64): (np.uint64, np.uint64(0x7FF0000000000000))}


def _nonfinite_count(arr):
    """Number of NaN/Inf entries of a float32/float64 array (any layout).

    Used by :func:`snn_core.layers.check_finite`; twin: ``reference.count_nonfinite``.
    """
    utype, expo = _EXPO[arr.dtype]
    flat = arr.ravel(order="K")  # a view whenever arr is contiguous in some axis order
    return int(_count_nonfinite(flat.view(utype), expo))


# --------------------------------------------------------------------------
# Optimizer updates (in place, one pass, O(n))
# --------------------------------------------------------------------------
@numba.njit(fastmath=True, **_jit)
def _adam_span(i0, i1, w, g, m, v, lr, b1, b2, eps, bc1, bc2, wd):
    for i in range(i0, i1):
        gi = g[i] + wd * w[i]
        m[i] = b1 * m[i] + (1 - b1) * gi
        v[i] = b2 * v[i] + (1 - b2) * gi * gi
        w[i] -= lr * (m[i] / bc1) / (np.sqrt(v[i] / bc2) + eps)


_CHUNK = 4096


@numba.njit(parallel=True, **_jit)
def _adam_par(w, g, m, v, lr, b1, b2, eps, bc1, bc2, wd):
    n = w.size
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        _adam_span(c * _CHUNK, min(n, (c + 1) * _CHUNK), w, g, m, v, lr, b1, b2, eps, bc1, bc2, wd)


@numba.njit(**_jit)
def _adam_ser(w, g, m, v, lr, b1, b2, eps, bc1, bc2, wd):
    _adam_span(0, w.size, w, g, m, v, lr, b1, b2, eps, bc1, bc2, wd)


def adam_update(w, g, m, v, lr, b1, b2, eps, bc1, bc2, wd):
    """Adam (L2 weight decay added to the gradient), bias-corrected."""
    k = _adam_par if _parallel(w.size * _NS_UPDATE) else _adam_ser
    k(w, g, m, v, lr, b1, b2, eps, bc1, bc2, wd)


@numba.njit(fastmath=True, **_jit)
def _sgd_span(i0, i1, w, g, buf, lr, momentum, nesterov, wd):
    for i in range(i0, i1):
        gi = g[i] + wd * w[i]
        if momentum != 0:
            buf[i] = momentum * buf[i] + gi
            gi = gi + momentum * buf[i] if nesterov else buf[i]
        w[i] -= lr * gi


@numba.njit(parallel=True, **_jit)
def _sgd_par(w, g, buf, lr, momentum, nesterov, wd):
    n = w.size
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        _sgd_span(c * _CHUNK, min(n, (c + 1) * _CHUNK), w, g, buf, lr, momentum, nesterov, wd)


@numba.njit(**_jit)
def _sgd_ser(w, g, buf, lr, momentum, nesterov, wd):
    _sgd_span(0, w.size, w, g, buf, lr, momentum, nesterov, wd)


def sgd_update(w, g, buf, lr, momentum, nesterov, wd):
    """SGD with optional (Nesterov) momentum and L2 weight decay."""
    k = _sgd_par if _parallel(w.size * _NS_UPDATE) else _sgd_ser
    k(w, g, buf, lr, momentum, nesterov, wd)
