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

Parallel kernels write disjoint outputs per ``prange`` index (a row or a
neuron), never a shared accumulator, so they are race-free.
"""
from __future__ import annotations

import os

import numba
import numpy as np
from numba import prange

# The OpenMP layer's barriers spin: on a 2-core laptop with anything else
# running, every parallel call then stalls for milliseconds (measured 7 ms
# for a 10x800 kernel). The work-queue layer does not; users can still choose
# with NUMBA_THREADING_LAYER.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

from ..surrogate import smooth_spike, surrogate_grad

_jit = dict(cache=True, nogil=True)


# --------------------------------------------------------------------------
# LIF and readout over all T steps in one call
# --------------------------------------------------------------------------
@numba.njit(parallel=True, **_jit)
def lif_forward(I, v0, alpha, k0, c, v_th, v_reset, reset, sur, p, smooth, u_out, s_out, v_out):
    """Euler-integrate a LIF population over T steps.

    I : (F, T, B) input current; v0 : (F, B) initial membrane.
    alpha = 1 - dt/tau_m, k0 = (1 - alpha) * v_rest, c = R dt/tau_m.
    reset: 0 hard, 1 soft, 2 none; sur/p: surrogate code and parameter
    (used only when smooth=1, the test-only differentiable spike).
    Writes u_out (pre-reset membrane), s_out (spikes), v_out (final v, (F, B)).
    """
    F, T, B = I.shape
    one = s_out.dtype.type(1.0)
    zero = s_out.dtype.type(0.0)
    for f in prange(F):
        for b in range(B):
            v = v0[f, b]
            for t in range(T):
                u = alpha * v + k0 + c * I[f, t, b]
                u_out[f, t, b] = u
                if smooth:
                    s = s_out.dtype.type(smooth_spike(u - v_th, sur, p))
                else:
                    s = one if u >= v_th else zero
                s_out[f, t, b] = s
                if reset == 0:
                    v = u * (one - s) + v_reset * s
                elif reset == 1:
                    v = u - v_th * s
                else:
                    v = u
            v_out[f, b] = v


@numba.njit(parallel=True, **_jit)
def lif_backward(gs, u, s, alpha, c, v_th, v_reset, reset, detach, sur, p, gI):
    """BPTT through a LIF population: dL/dI from dL/ds (all (F, T, B)).

    With ``gv`` the gradient reaching the post-reset membrane v[t] from step
    t+1 (``gv = alpha * gu[t+1]``, zero after the last step)::

        gs_tot = gs[t] + gv * dv/ds      (dv/ds = v_reset - u | -v_th | 0; 0 if detach)
        gu[t]  = gs_tot * sigma'(u[t] - v_th) + gv * dv/du   (dv/du = 1 - s | 1 | 1)
        gI[t]  = c * gu[t]
    """
    F, T, B = gs.shape
    one = gI.dtype.type(1.0)
    zero = gI.dtype.type(0.0)
    for f in prange(F):
        for b in range(B):
            gv = zero
            for t in range(T - 1, -1, -1):
                uu = u[f, t, b]
                ss = s[f, t, b]
                if reset == 0:
                    dv_du = one - ss
                    dv_ds = v_reset - uu
                elif reset == 1:
                    dv_du = one
                    dv_ds = -v_th
                else:
                    dv_du = one
                    dv_ds = zero
                g_s = gs[f, t, b]
                if not detach:
                    g_s += gv * dv_ds
                gu = g_s * gI.dtype.type(surrogate_grad(uu - v_th, sur, p)) + gv * dv_du
                gI[f, t, b] = c * gu
                gv = alpha * gu


@numba.njit(parallel=True, **_jit)
def readout_forward(I, v0, alpha, k0, c, u_out):
    """Leaky integrator over T steps: u[t] = alpha u[t-1] + k0 + c I[t]."""
    F, T, B = I.shape
    for f in prange(F):
        for b in range(B):
            u_out[f, 0, b] = alpha * v0[f, b] + k0 + c * I[f, 0, b]
        for t in range(1, T):
            for b in range(B):
                u_out[f, t, b] = alpha * u_out[f, t - 1, b] + k0 + c * I[f, t, b]


@numba.njit(parallel=True, **_jit)
def readout_backward(gu, alpha, c, gI):
    """BPTT through the leaky integrator: gu_tot[t] = gu[t] + alpha gu_tot[t+1]."""
    F, T, B = gu.shape
    for f in prange(F):
        for b in range(B):
            gI[f, T - 1, b] = gu[f, T - 1, b]
        for tt in range(1, T):
            t = T - 1 - tt
            for b in range(B):
                gI[f, t, b] = gu[f, t, b] + alpha * gI[f, t + 1, b]
        for t in range(T):
            for b in range(B):
                gI[f, t, b] *= c


# --------------------------------------------------------------------------
# Sparse synapses: CSR weights (n_out, n_in) times feature-major activations
# --------------------------------------------------------------------------
@numba.njit(parallel=True, fastmath=True, **_jit)
def csr_forward(indptr, indices, data, bias, X, Y):
    """Y[r, :] = bias[r] + sum_k data[k] * X[indices[k], :] over row r.

    X : (n_in, N), Y : (n_out, N). Each connection streams one contiguous
    row of N columns (all T steps of the batch at once).
    """
    n_out, N = Y.shape
    for r in prange(n_out):
        for n in range(N):
            Y[r, n] = bias[r]
        for k in range(indptr[r], indptr[r + 1]):
            w = data[k]
            j = indices[k]
            for n in range(N):
                Y[r, n] += w * X[j, n]


@numba.njit(parallel=True, fastmath=True, **_jit)
def csr_backward_input(t_indptr, t_indices, t_perm, data, G, GX):
    """GX = W^T G through the transposed structure (CSC of W).

    t_indptr/t_indices/t_perm describe W^T: column j of W holds the entries
    ``data[t_perm[k]]`` at rows ``t_indices[k]`` for k in
    ``t_indptr[j]:t_indptr[j+1]``. Parallel over inputs j: each thread owns
    one output row, so there is no race.
    """
    n_in, N = GX.shape
    zero = GX.dtype.type(0.0)
    for j in prange(n_in):
        for n in range(N):
            GX[j, n] = zero
        for k in range(t_indptr[j], t_indptr[j + 1]):
            w = data[t_perm[k]]
            r = t_indices[k]
            for n in range(N):
                GX[j, n] += w * G[r, n]


@numba.njit(parallel=True, fastmath=True, **_jit)
def csr_grad_at(indptr, indices, G, X, out, accumulate):
    """dL/dW only at existing connections: out[k] (+)= G[r, :] . X[indices[k], :].

    G : (n_out, N) output gradient, X : (n_in, N) layer input. Never builds
    the dense n_out x n_in gradient.
    """
    n_out, N = G.shape
    for r in prange(n_out):
        for k in range(indptr[r], indptr[r + 1]):
            j = indices[k]
            acc = G.dtype.type(0.0)
            for n in range(N):
                acc += G[r, n] * X[j, n]
            if accumulate:
                out[k] += acc
            else:
                out[k] = acc


# --------------------------------------------------------------------------
# Optimizer updates (in place, one pass, O(n))
# --------------------------------------------------------------------------
@numba.njit(parallel=True, fastmath=True, **_jit)
def adam_update(w, g, m, v, lr, b1, b2, eps, bc1, bc2, wd):
    """Adam (L2 weight decay added to the gradient), bias-corrected."""
    for i in prange(w.size):
        gi = g[i] + wd * w[i]
        m[i] = b1 * m[i] + (1 - b1) * gi
        v[i] = b2 * v[i] + (1 - b2) * gi * gi
        w[i] -= lr * (m[i] / bc1) / (np.sqrt(v[i] / bc2) + eps)


@numba.njit(parallel=True, fastmath=True, **_jit)
def sgd_update(w, g, buf, lr, momentum, nesterov, wd):
    """SGD with optional (Nesterov) momentum and L2 weight decay."""
    for i in prange(w.size):
        gi = g[i] + wd * w[i]
        if momentum != 0:
            buf[i] = momentum * buf[i] + gi
            gi = gi + momentum * buf[i] if nesterov else buf[i]
        w[i] -= lr * gi
