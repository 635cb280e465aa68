"""Plain NumPy versions of every kernel, written to be read: the ``reference`` backend runs these.

They are the truth the compiled kernels (:mod:`snn_core.kernels.cpu`,
:mod:`snn_core.kernels.cuda`) are tested against, the version to read when
learning what a kernel does, and, through
:class:`snn_core.backends.ReferenceBackend`, a backend that trains a network
(slowly). Same layout as the compiled kernels (feature-major ``(F, T, B)`` /
``(F, N)``), but they *return* their results instead of writing into output
buffers. Loops run over time only; neurons and samples are vectorised.

The neuron kernels are the equations of ``docs/bptt.md``, one line each, and
each forward sits next to its backward. They take the
:class:`snn_core.neurons.NeuronKernelParams` record ``prm`` (named fields, named
reset codes). ``trace``, when given, is called with the local variables of
every backward step (``t``, ``gv``, ``gs_tot``, ``gu``, ...), so a student can
print or break on the carries of a real training run (tutorial 04).
"""
from __future__ import annotations

import numpy as np

from ..neurons import RESET_HARD, RESET_SOFT, reset_membrane
from ..surrogate import SURROGATES, smooth_spike_numpy, surrogate_numpy

_NAMES = {code: name for name, (code, _) in SURROGATES.items()}

__all__ = ["smooth_spike_numpy", "reset_membrane", "reset_partials", "lif_forward", "lif_backward", "readout_forward", "readout_backward"]


# --------------------------------------------------------------------------
# LIF neurons: forward, then its BPTT backward (docs/bptt.md, "The LIF layer")
# --------------------------------------------------------------------------
def reset_partials(u, s, prm):
    """``(dv/du, dv/ds)`` of :func:`reset_membrane` (the table of docs/bptt.md)."""
    if prm.reset == RESET_HARD:
        return 1 - s, prm.v_reset - u
    if prm.reset == RESET_SOFT:
        return 1, -prm.v_th
    return 1, 0


def lif_forward(I, v0, prm):
    """Returns (u, s, v_last) for input currents I (F, T, B) and initial membrane v0 (F, B)."""
    F, T, B = I.shape
    u = np.empty_like(I)
    s = np.empty_like(I)
    v = v0.copy()
    for t in range(T):
        u[:, t] = prm.alpha * v + prm.k0 + prm.c * I[:, t]           # u[t] = alpha v[t-1] + k0 + c I[t]
        if prm.smooth:                                                # test-only differentiable spike
            s[:, t] = smooth_spike_numpy(u[:, t] - prm.v_th, _NAMES[prm.surrogate], prm.surrogate_p)
        else:
            s[:, t] = u[:, t] >= prm.v_th                             # s[t] = H(u[t] - v_th)
        v = reset_membrane(u[:, t], s[:, t], prm)                     # v[t] = reset(u[t], s[t])
    return u, s, v


def lif_backward(gs, u, s, prm, trace=None):
    """Returns gI = dL/dI given gs = dL/ds (direct gradient), u and s of the forward pass."""
    F, T, B = gs.shape
    gI = np.empty_like(gs)
    gv = np.zeros((F, B), gs.dtype)                                   # nothing flows back from after step T-1
    for t in range(T - 1, -1, -1):
        sg = surrogate_numpy(_NAMES[prm.surrogate], u[:, t] - prm.v_th, prm.surrogate_p).astype(gs.dtype)
        dv_du, dv_ds = reset_partials(u[:, t], s[:, t], prm)
        if prm.detach:
            gs_tot = gs[:, t]                                         # the reset is a constant
        else:
            gs_tot = gs[:, t] + gv * dv_ds                            # gs_tot[t] = gs[t] + gv dv/ds
        gu = gs_tot * sg + gv * dv_du                                 # gu[t] = gs_tot sigma'(u - v_th) + gv dv/du
        gI[:, t] = prm.c * gu                                         # gI[t] = c gu[t]
        if trace is not None:
            trace(t=t, gv=gv, gs_tot=gs_tot, sg=sg, gu=gu, gI=gI[:, t])
        gv = prm.alpha * gu                                           # gv for step t-1: alpha gu[t]
    return gI


# --------------------------------------------------------------------------
# Readout (leaky integrator): forward, then backward
# --------------------------------------------------------------------------
def readout_forward(I, v0, prm):
    """Returns u (F, T, B): the leaky integrator's membrane at every step."""
    u = np.empty_like(I)
    v = v0
    for t in range(I.shape[1]):
        v = prm.alpha * v + prm.k0 + prm.c * I[:, t]                  # u[t] = alpha u[t-1] + k0 + c I[t]
        u[:, t] = v
    return u


def readout_backward(gu, prm):
    """Returns gI for the leaky integrator: gu_tot[t] = gu[t] + alpha gu_tot[t+1], gI = c gu_tot."""
    gI = np.empty_like(gu)
    acc = np.zeros_like(gu[:, 0])
    for t in range(gu.shape[1] - 1, -1, -1):
        acc = gu[:, t] + prm.alpha * acc
        gI[:, t] = prm.c * acc
    return gI


# --------------------------------------------------------------------------
# Sparse synapses: W (n_out, n_in) in CSR, activations (features, N)
# --------------------------------------------------------------------------
def csr_forward(indptr, indices, data, bias, X):
    """Returns Y = W X + bias[:, None] for CSR W (n_out, n_in), X (n_in, N)."""
    n_out = len(indptr) - 1
    Y = np.empty((n_out, X.shape[1]), X.dtype)
    for r in range(n_out):
        k = slice(indptr[r], indptr[r + 1])                       # the connections of output r
        Y[r] = bias[r] + data[k] @ X[indices[k]]                  # Y[r] = b[r] + sum_k W[r, j_k] X[j_k]
    return Y


def csr_backward_input(indptr, indices, data, G, n_in):
    """Returns GX = W^T G (n_in, N); built from W itself, not its transpose."""
    GX = np.zeros((n_in, G.shape[1]), G.dtype)
    for r in range(len(indptr) - 1):
        k = slice(indptr[r], indptr[r + 1])
        np.add.at(GX, indices[k], data[k, None] * G[r])           # each connection r <- j sends W[r, j] G[r] to j
    return GX


def csr_backward_input_t(t_indptr, t_indices, t_perm, data, G):
    """Returns GX = W^T G through the transposed structure: W^T is the CSR (t_indptr, t_indices, data[t_perm])."""
    zero = np.zeros(len(t_indptr) - 1, G.dtype)
    return csr_forward(t_indptr, t_indices, data[t_perm], zero, G)


def time_sum(G3):
    """Returns G3 (F, T, B) summed over time, (F, B): step 0 plus step 1 plus ..., in that order.

    The gradient of a frame computed once and shown at every step (direct coding).
    """
    return G3.sum(axis=1)                                        # NumPy adds the T slices one after the other


def csr_grad_at(indptr, indices, G, X):
    """Returns dL/dW at the existing connections: (nnz,) aligned with data."""
    out = np.empty(len(indices), G.dtype)
    for r in range(len(indptr) - 1):
        k = slice(indptr[r], indptr[r + 1])
        out[k] = X[indices[k]] @ G[r]                             # dL/dW[r, j] = sum_n G[r, n] X[j, n]
    return out


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


def softmax_ce(z, y):
    """Returns (loss, dL/dz): the mean softmax cross-entropy of logits z (B, C) and int labels y (B,), in float64."""
    z = z.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)                                  # shift: exp cannot overflow
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))               # log softmax
    B = len(y)
    loss = -logp[np.arange(B), y].mean()
    g = np.exp(logp)                                                      # dL/dz = (softmax - onehot) / B
    g[np.arange(B), y] -= 1.0
    return float(loss), g / B


def softmax_ce_time(O, y, mean):
    """Returns (loss, dL/dO): :func:`softmax_ce` of the logits ``sum_t O[t]`` (``mean``: ``mean_t O[t]``).

    O : (C, T, B), feature-major like every kernel here; y : (B,) int class
    indices. The gradient, the same at every step, has O's shape and dtype.
    """
    C, T, B = O.shape
    if np.any((y < 0) | (y >= C)):
        raise ValueError(f"labels: must be in [0, {C}), got range [{y.min()}, {y.max()}]")
    loss, g = softmax_ce((O.mean(axis=1) if mean else O.sum(axis=1)).T, y)  # logits (B, C)
    g = g / (T if mean else 1)                                              # dz/dO[t] = 1 (or 1/T)
    return loss, np.broadcast_to(g.T[:, None, :].astype(O.dtype), O.shape).copy()


def predict_time(O):
    """Returns (B,) int64: per sample, the argmax over classes of ``sum_t O[:, t, b]``.

    O : (C, T, B), feature-major. The sum runs step by step (t = 0, 1, ...)
    in O's dtype, like :func:`softmax_ce_time`'s logits.
    """
    acc = O[:, 0, :].copy()
    for t in range(1, O.shape[1]):
        acc += O[:, t, :]
    return acc.argmax(axis=0).astype(np.int64)


def count_correct(O, y):
    """Returns how many samples :func:`predict_time` classifies as ``y`` (B,) says."""
    return int(np.count_nonzero(predict_time(O) == y))


def csr_remove(indptr, indices, keep):
    """Returns (indptr, indices) int32: the CSR structure of the entries with ``keep[e]`` True."""
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    new_indptr = np.zeros(len(indptr), np.int32)
    np.cumsum(np.bincount(rows[keep], minlength=len(indptr) - 1), out=new_indptr[1:])
    return new_indptr, np.asarray(indices, np.int32)[keep]


def csr_merge(indptr, indices, data, keep, new_keys, new_values, n_in):
    """Returns (indptr, indices, data, src): the kept entries and the new ones (sorted flat keys
    ``row * n_in + col``) as one canonical CSR, src = old data index (-1: new); None when a new
    position is a kept connection."""
    n_out = len(indptr) - 1
    rows = np.repeat(np.arange(n_out, dtype=np.int64), np.diff(indptr))
    kept_keys = (rows * n_in + np.asarray(indices, np.int64))[keep]
    if np.isin(new_keys, kept_keys).any():
        return None
    keys = np.concatenate([kept_keys, new_keys])
    order = np.argsort(keys, kind="stable")                    # every key is distinct
    values = np.concatenate([np.asarray(data)[keep], np.asarray(new_values, data.dtype)])[order]
    src = np.concatenate([np.flatnonzero(keep), np.full(len(new_keys), -1)])[order].astype(np.int64)
    keys = keys[order]
    out_indptr = np.zeros(n_out + 1, np.int32)
    np.cumsum(np.bincount(keys // n_in, minlength=n_out), out=out_indptr[1:])
    return out_indptr, (keys % n_in).astype(np.int32), values, src


def sorted_member(a, b):
    """Returns which entries of the sorted array ``a`` occur in the sorted array ``b`` (bool)."""
    return np.isin(a, b)


def sorted_merge(a, b):
    """Returns the entries of the sorted arrays ``a`` and ``b`` as one sorted array."""
    return np.sort(np.concatenate([a, b]), kind="stable")


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
    """Returns the number of NaN/Inf entries (twin of ``cpu.nonfinite_count``)."""
    return int(np.count_nonzero(~np.isfinite(arr)))


def spike_bits(X8):
    """Returns the uint16 bit words of ``spike_pack(..., Xb)``: bit q of word w is X8[j, 16 w + q]."""
    n_in, N = X8.shape
    nw = (N + 15) // 16
    padded = np.zeros((n_in, nw * 16), np.uint8)
    padded[:, :N] = X8 != 0
    return np.packbits(padded, axis=1, bitorder="little").view(np.uint16).reshape(n_in, nw)


# --------------------------------------------------------------------------
# Convolution (geometry g: snn_core.geometry.ConvGeometry). X is (c_in*h*w, N)
# feature-major; the kernel matrix is (c_out, c_in*kh*kw), column
# j = (ci*kh + ky)*kw + kx. Forward next to its two backward products.
# --------------------------------------------------------------------------
def im2col(X, g):
    """The input patch under every kernel position: (c_in*kh*kw, oh*ow*N).

    ``cols[j, (oy*ow + ox)*N + n] = X[ci, oy*stride - pad + ky, ox*stride - pad + kx, n]``
    (0 outside the image): a convolution is then one matrix product.
    """
    N = X.shape[1]
    Xp = np.zeros((g.c_in, g.h + 2 * g.pad, g.w + 2 * g.pad, N), X.dtype)
    Xp[:, g.pad:g.pad + g.h, g.pad:g.pad + g.w] = X.reshape(g.c_in, g.h, g.w, N)
    cols = np.empty((g.c_in, g.kh, g.kw, g.oh, g.ow, N), X.dtype)
    for ky in range(g.kh):
        for kx in range(g.kw):
            cols[:, ky, kx] = Xp[:, ky:ky + g.stride * g.oh:g.stride, kx:kx + g.stride * g.ow:g.stride]
    return cols.reshape(g.kernel_cols, g.oh * g.ow * N)


def col2im(cols, g):
    """Adjoint of :func:`im2col`: add every patch value back to its pixel; returns (c_in*h*w, N)."""
    N = cols.shape[1] // (g.oh * g.ow)
    c = cols.reshape(g.c_in, g.kh, g.kw, g.oh, g.ow, N)
    Xp = np.zeros((g.c_in, g.h + 2 * g.pad, g.w + 2 * g.pad, N), cols.dtype)
    for ky in range(g.kh):
        for kx in range(g.kw):
            Xp[:, ky:ky + g.stride * g.oh:g.stride, kx:kx + g.stride * g.ow:g.stride] += c[:, ky, kx]
    return Xp[:, g.pad:g.pad + g.h, g.pad:g.pad + g.w].reshape(g.in_features, N)


def csr_to_dense(indptr, indices, data, n_cols):
    """The dense (n_rows, n_cols) matrix of a CSR (for reading, never on a hot path)."""
    Wd = np.zeros((len(indptr) - 1, n_cols), data.dtype)
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    Wd[rows, indices] = data
    return Wd


def dense_conv_forward(W, bias, X, g):
    """Y (c_out*oh*ow, N) = conv(X) with the dense kernel matrix W (c_out, c_in*kh*kw) (+ bias per channel)."""
    N = X.shape[1]
    Y = (W @ im2col(X, g)).reshape(g.c_out, g.oh * g.ow * N)
    if bias is not None:
        Y = Y + bias[:, None]
    return Y.reshape(g.out_features, N).astype(X.dtype, copy=False)


def dense_conv_grad(G, X, g):
    """dL/dW (c_out, c_in*kh*kw) = G im2col(X)^T, G the output gradient (c_out*oh*ow, N)."""
    return G.reshape(g.c_out, -1) @ im2col(X, g).T


def dense_conv_backward_input(W, G, g):
    """dL/dX (c_in*h*w, N) = col2im(W^T G)."""
    return col2im(W.T @ G.reshape(g.c_out, -1), g)


def conv_forward(indptr, indices, data, bias, X, g):
    """Sparse convolution: the CSR kernel matrix (c_out, c_in*kh*kw) applied at every position."""
    return dense_conv_forward(csr_to_dense(indptr, indices, data, g.kernel_cols), bias, X, g)


def conv_grad_at(indptr, indices, G, X, g):
    """dL/dW at the stored connections only, aligned with ``data`` (nnz,)."""
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    return dense_conv_grad(G, X, g)[rows, indices]


def conv_backward_input(indptr, indices, data, G, g):
    """dL/dX through the sparse kernel matrix (c_in*h*w, N)."""
    return dense_conv_backward_input(csr_to_dense(indptr, indices, data, g.kernel_cols), G, g)


def channel_sum(G, g):
    """Per output channel sum of G (c_out*oh*ow, N) over positions and columns (the bias gradient)."""
    return G.reshape(g.c_out, -1).sum(axis=1)


# --------------------------------------------------------------------------
# Pooling (non-overlapping k x k windows, geometry from pool_geometry)
# --------------------------------------------------------------------------
def _window_views(A, g):
    """The k*k strided views of A (c*h*w, N) as (c, oh, ow, N): offset (ky, kx) of every window."""
    a = A.reshape(g.c_in, g.oh, g.kh, g.ow, g.kw, A.shape[1])
    return [a[:, :, ky, :, kx] for ky in range(g.kh) for kx in range(g.kw)]


def avgpool_forward(X, g):
    """Mean of every k x k window: (c*oh*ow, N)."""
    return (sum(_window_views(X, g)) / (g.kh * g.kw)).reshape(g.out_features, X.shape[1]).astype(X.dtype, copy=False)


def avgpool_backward(G, g):
    """Each window's gradient spread evenly over its k*k inputs: (c*h*w, N)."""
    GX = np.empty((g.in_features, G.shape[1]), G.dtype)
    share = G.reshape(g.c_in, g.oh, g.ow, G.shape[1]) / (g.kh * g.kw)
    for view in _window_views(GX, g):
        view[...] = share
    return GX


def maxpool_forward(X, g):
    """Max of every window and the position of the (first) max inside it (uint8, row-major in the window)."""
    views = _window_views(X, g)
    y, arg = views[0].copy(), np.zeros(views[0].shape, np.uint8)
    for i, v in enumerate(views[1:], 1):
        bigger = v > y                      # strictly: ties keep the first max
        y[bigger], arg[bigger] = v[bigger], i
    return y.reshape(g.out_features, X.shape[1]), arg.reshape(g.out_features, X.shape[1])


def maxpool_backward(G, arg, g):
    """The whole window gradient goes to the input that was the max."""
    GX = np.empty((g.in_features, G.shape[1]), G.dtype)
    G4, a4 = G.reshape(g.c_in, g.oh, g.ow, G.shape[1]), arg.reshape(g.c_in, g.oh, g.ow, G.shape[1])
    for i, view in enumerate(_window_views(GX, g)):
        view[...] = np.where(a4 == i, G4, 0)
    return GX


# --------------------------------------------------------------------------
# Batch norm through time: per channel over (positions, T, batch); X is (C, M)
# --------------------------------------------------------------------------
def bn_stats(X):
    """Per-row mean and biased variance of X (C, M), accumulated in float64."""
    x = X.astype(np.float64)
    mean = x.mean(axis=1)
    return mean, ((x - mean[:, None]) ** 2).mean(axis=1)


def bn_apply(X, scale, shift):
    """Y = scale[c] * X + shift[c] per row (normalisation and affine folded together)."""
    return (X * scale[:, None] + shift[:, None]).astype(X.dtype, copy=False)


def bn_backward(G, X, mean, invstd, gamma):
    """Batch-statistics BN backward: (dL/dX, dL/dgamma, dL/dbeta).

    With ``xhat = (X - mean) * invstd`` and ``y = gamma xhat + beta``:
    ``dbeta = sum G``, ``dgamma = sum G xhat``,
    ``dX = gamma invstd (G - dbeta / M - xhat dgamma / M)`` (the mean and
    variance depend on every element of the row).
    """
    M = X.shape[1]
    xhat = (X - mean[:, None]) * invstd[:, None]
    gbeta = G.sum(axis=1)
    ggamma = (G * xhat).sum(axis=1)
    GX = (gamma * invstd)[:, None] * (G - gbeta[:, None] / M - xhat * ggamma[:, None] / M)
    return GX.astype(G.dtype, copy=False), ggamma, gbeta
