"""Plain NumPy versions of every kernel in :mod:`snn_core.kernels.cpu`.

They are the truth the compiled kernels are tested against, and the version
to read when learning what a kernel does. Same arguments, same layout
(feature-major ``(F, T, B)`` / ``(F, N)``), but they *return* their results
instead of writing into output buffers. Loops run over time only; everything
else is vectorised.
"""
from __future__ import annotations

import numpy as np

from ..surrogate import SURROGATES, surrogate_numpy

_NAMES = {code: name for name, (code, _) in SURROGATES.items()}


def smooth_spike_numpy(x, name, p):
    """NumPy twin of :func:`snn_core.surrogate.smooth_spike` (test-only spike)."""
    x = np.asarray(x)
    if name == "rectangular":
        return np.clip(x / p + 0.5, 0.0, 1.0).astype(x.dtype)
    if name == "triangle":
        y = np.where(x < 0, 0.5 * (1 + x / p) ** 2, 1 - 0.5 * (1 - x / p) ** 2)
        return np.where(x <= -p, 0.0, np.where(x >= p, 1.0, y)).astype(x.dtype)
    if name == "sigmoid":
        return (1.0 / (1.0 + np.exp(-p * x))).astype(x.dtype)
    if name == "arctan":
        return (0.5 + np.arctan(0.5 * np.pi * p * x) / np.pi).astype(x.dtype)
    return (0.5 + x / (1.0 + p * np.abs(x))).astype(x.dtype)


def lif_forward(I, v0, alpha, k0, c, v_th, v_reset, reset, sur, p, smooth):
    """Returns (u, s, v_last); see the compiled kernel for the arguments."""
    F, T, B = I.shape
    u = np.empty_like(I)
    s = np.empty_like(I)
    v = v0.copy()
    for t in range(T):
        u[:, t] = alpha * v + k0 + c * I[:, t]
        if smooth:
            s[:, t] = smooth_spike_numpy(u[:, t] - v_th, _NAMES[sur], p)
        else:
            s[:, t] = u[:, t] >= v_th
        if reset == 0:
            v = u[:, t] * (1 - s[:, t]) + v_reset * s[:, t]
        elif reset == 1:
            v = u[:, t] - v_th * s[:, t]
        else:
            v = u[:, t].copy()
    return u, s, v


def lif_backward(gs, u, s, alpha, c, v_th, v_reset, reset, detach, sur, p):
    """Returns gI = dL/dI given gs = dL/ds (the BPTT recurrence, in time)."""
    F, T, B = gs.shape
    gI = np.empty_like(gs)
    gv = np.zeros((F, B), gs.dtype)
    sg = surrogate_numpy(_NAMES[sur], u - v_th, p).astype(gs.dtype)
    for t in range(T - 1, -1, -1):
        if reset == 0:
            dv_du, dv_ds = 1 - s[:, t], v_reset - u[:, t]
        elif reset == 1:
            dv_du, dv_ds = 1, -v_th
        else:
            dv_du, dv_ds = 1, 0
        g_s = gs[:, t] if detach else gs[:, t] + gv * dv_ds
        gu = g_s * sg[:, t] + gv * dv_du
        gI[:, t] = c * gu
        gv = alpha * gu
    return gI


def readout_forward(I, v0, alpha, k0, c):
    """Returns u: the leaky integrator's membrane at every step."""
    u = np.empty_like(I)
    v = v0
    for t in range(I.shape[1]):
        v = alpha * v + k0 + c * I[:, t]
        u[:, t] = v
    return u


def readout_backward(gu, alpha, c):
    """Returns gI for the leaky integrator."""
    gI = np.empty_like(gu)
    acc = np.zeros_like(gu[:, 0])
    for t in range(gu.shape[1] - 1, -1, -1):
        acc = gu[:, t] + alpha * acc
        gI[:, t] = acc
    return c * gI


def _rows(indptr):
    return np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))


def csr_forward(indptr, indices, data, bias, X):
    """Returns Y = W X + bias[:, None] for CSR W (n_out, n_in), X (n_in, N)."""
    n_out = len(indptr) - 1
    Y = np.zeros((n_out, X.shape[1]), X.dtype)
    np.add.at(Y, _rows(indptr), data[:, None] * X[indices])
    return Y + bias[:, None]


def csr_backward_input(indptr, indices, data, G, n_in):
    """Returns GX = W^T G (n_in, N); built from W itself, not its transpose."""
    GX = np.zeros((n_in, G.shape[1]), G.dtype)
    np.add.at(GX, indices, data[:, None] * G[_rows(indptr)])
    return GX


def csr_grad_at(indptr, indices, G, X):
    """Returns dL/dW at the existing connections: (nnz,) aligned with data."""
    return np.einsum("kn,kn->k", G[_rows(indptr)], X[indices])


def adam_update(w, g, m, v, lr, b1, b2, eps, bc1, bc2, wd):
    """Returns updated (w, m, v)."""
    g = g + wd * w
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    return w - lr * (m / bc1) / (np.sqrt(v / bc2) + eps), m, v


def sgd_update(w, g, buf, lr, momentum, nesterov, wd):
    """Returns updated (w, buf)."""
    g = g + wd * w
    if momentum != 0:
        buf = momentum * buf + g
        g = g + momentum * buf if nesterov else buf
    return w - lr * g, buf


# --------------------------------------------------------------------------
# Twins of the spike-driven and fused kernels
# --------------------------------------------------------------------------
def spike_pack(X, thr):
    """Returns (X8, cnt, cols, n_bad) for X (n_in, N).

    ``cols`` is a list: ``cols[j]`` holds the sorted active columns of row j
    when ``0 < cnt[j] < thr`` and is None otherwise (the compiled kernel
    leaves those rows of its padded array undefined).
    """
    X8 = (X != 0).astype(np.uint8)
    cnt = X8.sum(axis=1).astype(np.int32)
    cols = [np.flatnonzero(X8[j]).astype(np.int32) if 0 < cnt[j] < thr else None for j in range(X.shape[0])]
    n_bad = int(np.count_nonzero((X != 0) & (X != 1)))
    return X8, cnt, cols, n_bad


def csr_forward_spikes(indptr, indices, data, bias, X8):
    """Returns Y = W X + bias for the spike matrix X = X8 (0/1)."""
    return csr_forward(indptr, indices, data, bias, X8.astype(data.dtype))


def csr_grad_spikes(indptr, indices, X8, G):
    """Returns (dW at the connections, bias gradient G.sum(1), rownz) for X = X8."""
    g = csr_grad_at(indptr, indices, G, X8.astype(G.dtype))
    return g, G.sum(axis=1), (G != 0).any(axis=1).astype(np.uint8)


def csr_grad_dense(indptr, indices, G, X):
    """Returns (dW at the connections, bias gradient, rownz) for a float input X."""
    return csr_grad_at(indptr, indices, G, X), G.sum(axis=1), (G != 0).any(axis=1).astype(np.uint8)


def csr_backward_input_nz(indptr, indices, data, G, rownz, n_in):
    """Returns GX = W^T G using only the rows r of G with rownz[r] (the others must be 0)."""
    return csr_backward_input(indptr, indices, data, np.where(rownz[:, None] != 0, G, 0).astype(G.dtype), n_in)


def count_nonfinite(arr):
    """Returns the number of NaN/Inf entries (twin of ``cpu._nonfinite_count``)."""
    return int(np.count_nonzero(~np.isfinite(arr)))


def spike_bits(X8):
    """Returns the uint16 bit words of ``spike_pack(..., Xb)``: bit q of word w is X8[j, 16 w + q]."""
    n_in, N = X8.shape
    nw = (N + 15) // 16
    padded = np.zeros((n_in, nw * 16), np.uint8)
    padded[:, :N] = X8 != 0
    return np.packbits(padded, axis=1, bitorder="little").view(np.uint16).reshape(n_in, nw)
