"""numba.cuda kernels for convolutions, pooling, batch norm through time and the residual add.

Same layout and semantics as the readable twins in
:mod:`snn_core.kernels.reference` (named in every wrapper's docstring):
feature-major ``(F, N)`` device arrays, ``N = T * batch``, float32, a conv
kernel matrix ``(c_out, c_in*kh*kw)`` as CSR (or dense for ``Conv2d``), the
geometry ``g`` a :class:`snn_core.geometry.ConvGeometry` unpacked here into
scalars. One thread per output element, no atomics:

==========================  =================================================
kernel                      one thread per ...
==========================  =================================================
conv forward                (output feature (co, oy, ox), column n): loops over
                            row co's connections, skipping silent inputs
conv weight gradient        connection k: sum over positions and columns
conv input gradient         (input feature (ci, iy, ix), column n): loops over
                            the connections of ci's kernel columns (CSC)
channel sum (bias grad)     output channel
pooling fwd / bwd           (output / input element, column)
BN stats / BN backward      channel (reductions), then element
BN apply, add               element
==========================  =================================================

A dense convolution on this backend is the sparse kernels on a full
structure (every connection present), so there is one convolution algorithm
per backend.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from .cuda import TPB

F32 = np.float32


def _launch(kernel, n, *args):
    if n <= 0:
        return
    tpb = min(TPB, n)
    kernel[(n + tpb - 1) // tpb, tpb](*args)


def _check_f32(**arrays):
    for name, a in arrays.items():
        if a is not None and a.dtype != np.float32:
            raise TypeError(f"{name}: the CUDA kernels are float32 only, got {a.dtype}")


# --------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------
@cuda.jit
def _conv_forward_k(indptr, indices, data, bias, X, Y, c_in, h, w, oh, ow, kh, kw, s, p):
    n_out, N = Y.shape
    i = cuda.grid(1)
    if i >= n_out * N:
        return
    r = i // N
    n = i - r * N
    ohw = oh * ow
    co = r // ohw
    q = r - co * ohw
    oy = q // ow
    ox = q - oy * ow
    kk = kh * kw
    acc = bias[co]
    zero = F32(0.0)
    for k in range(indptr[co], indptr[co + 1]):
        j = indices[k]
        ci = j // kk
        rr = j - ci * kk
        ky = rr // kw
        kx = rr - ky * kw
        iy = oy * s - p + ky
        ix = ox * s - p + kx
        if iy >= 0 and iy < h and ix >= 0 and ix < w:
            x = X[(ci * h + iy) * w + ix, n]
            if x != zero:
                acc += data[k] * x
    Y[r, n] = acc


@cuda.jit
def _conv_grad_k(indptr, indices, G, X, out, accumulate, c_out, h, w, oh, ow, kh, kw, s, p):
    k = cuda.grid(1)
    nnz = indices.shape[0]
    if k >= nnz:
        return
    lo, hi = 0, c_out  # the row (output channel) of connection k, by binary search
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if indptr[mid] <= k:
            lo = mid
        else:
            hi = mid
    co = lo
    N = X.shape[1]
    kk = kh * kw
    j = indices[k]
    ci = j // kk
    rr = j - ci * kk
    ky = rr // kw
    kx = rr - ky * kw
    acc = F32(0.0)
    for oy in range(oh):
        iy = oy * s - p + ky
        if iy < 0 or iy >= h:
            continue
        for ox in range(ow):
            ix = ox * s - p + kx
            if ix < 0 or ix >= w:
                continue
            gr = (co * oh + oy) * ow + ox
            xr = (ci * h + iy) * w + ix
            for n in range(N):
                acc += G[gr, n] * X[xr, n]
    if accumulate:
        out[k] += acc
    else:
        out[k] = acc


@cuda.jit
def _conv_backward_input_k(t_indptr, t_indices, t_perm, data, G, GX, h, w, oh, ow, kh, kw, s, p):
    n_in, N = GX.shape
    i = cuda.grid(1)
    if i >= n_in * N:
        return
    f = i // N
    n = i - f * N
    hw = h * w
    ci = f // hw
    rr = f - ci * hw
    iy = rr // w
    ix = rr - iy * w
    acc = F32(0.0)
    for ky in range(kh):
        ty = iy + p - ky
        if ty < 0 or ty % s != 0 or ty // s >= oh:
            continue
        oy = ty // s
        for kx in range(kw):
            tx = ix + p - kx
            if tx < 0 or tx % s != 0 or tx // s >= ow:
                continue
            ox = tx // s
            j = (ci * kh + ky) * kw + kx
            for t in range(t_indptr[j], t_indptr[j + 1]):
                co = t_indices[t]
                acc += data[t_perm[t]] * G[(co * oh + oy) * ow + ox, n]
    GX[f, n] = acc


@cuda.jit
def _channel_sum_k(G, out, accumulate, ohw):
    c = cuda.grid(1)
    if c >= out.shape[0]:
        return
    N = G.shape[1]
    acc = F32(0.0)
    for r in range(c * ohw, (c + 1) * ohw):
        for n in range(N):
            acc += G[r, n]
    if accumulate:
        out[c] += acc
    else:
        out[c] = acc


def conv_forward(g, indptr, indices, data, bias, X, Y):
    """Y = sparse conv(X) + bias per channel. Readable twin: :func:`snn_core.kernels.reference.conv_forward`."""
    _check_f32(data=data, bias=bias, X=X, Y=Y)
    n_out, N = Y.shape
    _launch(_conv_forward_k, n_out * N, indptr, indices, data, bias, X, Y, g.c_in, g.h, g.w, g.oh, g.ow, g.kh,
            g.kw, g.stride, g.pad)


def conv_grad_at(g, indptr, indices, G, X, out, accumulate):
    """dL/dW at the connections. Readable twin: :func:`snn_core.kernels.reference.conv_grad_at`."""
    _check_f32(G=G, X=X, out=out)
    _launch(_conv_grad_k, indices.shape[0], indptr, indices, G, X, out, int(bool(accumulate)), g.c_out, g.h, g.w,
            g.oh, g.ow, g.kh, g.kw, g.stride, g.pad)


def conv_backward_input(g, t_indptr, t_indices, t_perm, data, G, GX):
    """GX = dL/dX of the convolution. Readable twin: :func:`snn_core.kernels.reference.conv_backward_input`."""
    _check_f32(data=data, G=G, GX=GX)
    n_in, N = GX.shape
    _launch(_conv_backward_input_k, n_in * N, t_indptr, t_indices, t_perm, data, G, GX, g.h, g.w, g.oh, g.ow,
            g.kh, g.kw, g.stride, g.pad)


def channel_sum(g, G, out, accumulate):
    """out[c] (+)= sum of channel c of G. Readable twin: :func:`snn_core.kernels.reference.channel_sum`."""
    _check_f32(G=G, out=out)
    _launch(_channel_sum_k, out.shape[0], G, out, int(bool(accumulate)), g.oh * g.ow)


# --------------------------------------------------------------------------
# Pooling (non-overlapping k x k windows)
# --------------------------------------------------------------------------
@cuda.jit
def _avgpool_fwd_k(X, Y, h, w, oh, ow, k):
    n_out, N = Y.shape
    i = cuda.grid(1)
    if i >= n_out * N:
        return
    r = i // N
    n = i - r * N
    c = r // (oh * ow)
    q = r - c * oh * ow
    oy = q // ow
    ox = q - oy * ow
    acc = F32(0.0)
    for dy in range(k):
        for dx in range(k):
            acc += X[(c * h + oy * k + dy) * w + ox * k + dx, n]
    Y[r, n] = acc / F32(k * k)


@cuda.jit
def _avgpool_bwd_k(G, GX, h, w, oh, ow, k):
    n_in, N = GX.shape
    i = cuda.grid(1)
    if i >= n_in * N:
        return
    f = i // N
    n = i - f * N
    c = f // (h * w)
    rr = f - c * h * w
    iy = rr // w
    ix = rr - iy * w
    GX[f, n] = G[(c * oh + iy // k) * ow + ix // k, n] / F32(k * k)


@cuda.jit
def _maxpool_fwd_k(X, Y, arg, h, w, oh, ow, k):
    n_out, N = Y.shape
    i = cuda.grid(1)
    if i >= n_out * N:
        return
    r = i // N
    n = i - r * N
    c = r // (oh * ow)
    q = r - c * oh * ow
    oy = q // ow
    ox = q - oy * ow
    best = X[(c * h + oy * k) * w + ox * k, n]
    a = 0
    for dy in range(k):
        for dx in range(k):
            v = X[(c * h + oy * k + dy) * w + ox * k + dx, n]
            if v > best:  # strictly: ties keep the first max
                best = v
                a = dy * k + dx
    Y[r, n] = best
    arg[r, n] = a


@cuda.jit
def _maxpool_bwd_k(G, arg, GX, h, w, oh, ow, k):
    n_in, N = GX.shape
    i = cuda.grid(1)
    if i >= n_in * N:
        return
    f = i // N
    n = i - f * N
    c = f // (h * w)
    rr = f - c * h * w
    iy = rr // w
    ix = rr - iy * w
    r = (c * oh + iy // k) * ow + ix // k
    if arg[r, n] == (iy % k) * k + ix % k:
        GX[f, n] = G[r, n]
    else:
        GX[f, n] = F32(0.0)


def avgpool_forward(g, X, Y):
    """Window means. Readable twin: :func:`snn_core.kernels.reference.avgpool_forward`."""
    _check_f32(X=X, Y=Y)
    _launch(_avgpool_fwd_k, Y.shape[0] * Y.shape[1], X, Y, g.h, g.w, g.oh, g.ow, g.kh)


def avgpool_backward(g, G, GX):
    """Window gradient spread evenly. Readable twin: :func:`snn_core.kernels.reference.avgpool_backward`."""
    _check_f32(G=G, GX=GX)
    _launch(_avgpool_bwd_k, GX.shape[0] * GX.shape[1], G, GX, g.h, g.w, g.oh, g.ow, g.kh)


def maxpool_forward(g, X, Y, arg):
    """Window maxima and their positions. Readable twin: :func:`snn_core.kernels.reference.maxpool_forward`."""
    _check_f32(X=X, Y=Y)
    _launch(_maxpool_fwd_k, Y.shape[0] * Y.shape[1], X, Y, arg, g.h, g.w, g.oh, g.ow, g.kh)


def maxpool_backward(g, G, arg, GX):
    """Gradient to each window's max. Readable twin: :func:`snn_core.kernels.reference.maxpool_backward`."""
    _check_f32(G=G, GX=GX)
    _launch(_maxpool_bwd_k, GX.shape[0] * GX.shape[1], G, arg, GX, g.h, g.w, g.oh, g.ow, g.kh)


# --------------------------------------------------------------------------
# Batch norm through time (rows = channels of X (C, M)) and the residual add
# --------------------------------------------------------------------------
@cuda.jit
def _bn_stats_k(X, mean, var):
    c = cuda.grid(1)
    C, M = X.shape
    if c >= C:
        return
    s = 0.0
    for i in range(M):
        s += X[c, i]
    m = s / M
    ss = 0.0
    for i in range(M):
        d = X[c, i] - m
        ss += d * d
    mean[c] = m
    var[c] = ss / M


@cuda.jit
def _bn_apply_k(X, scale, shift, Y):
    C, M = X.shape
    i = cuda.grid(1)
    if i >= C * M:
        return
    c = i // M
    j = i - c * M
    Y[c, j] = X[c, j] * scale[c] + shift[c]


@cuda.jit
def _bn_reduce_k(G, X, mean, invstd, gg, gb, accumulate):
    c = cuda.grid(1)
    C, M = X.shape
    if c >= C:
        return
    sg = F32(0.0)
    sgx = F32(0.0)
    for i in range(M):
        sg += G[c, i]
        sgx += G[c, i] * (X[c, i] - mean[c]) * invstd[c]
    if accumulate:
        gb[c] += sg
        gg[c] += sgx
    else:
        gb[c] = sg
        gg[c] = sgx


@cuda.jit
def _bn_input_grad_k(G, X, mean, invstd, gamma, sg, sgx, GX):
    C, M = X.shape
    i = cuda.grid(1)
    if i >= C * M:
        return
    c = i // M
    j = i - c * M
    xhat = (X[c, j] - mean[c]) * invstd[c]
    GX[c, j] = gamma[c] * invstd[c] * (G[c, j] - sg[c] / M - xhat * sgx[c] / M)


@cuda.jit
def _add_k(A, B, out):
    i = cuda.grid(1)
    if i >= out.size:
        return
    out[i] = A[i] + B[i]


def bn_stats(X, mean, var):
    """Per-row mean and biased variance. Readable twin: :func:`snn_core.kernels.reference.bn_stats`."""
    _check_f32(X=X, mean=mean, var=var)
    _launch(_bn_stats_k, X.shape[0], X, mean, var)


def bn_apply(X, scale, shift, Y):
    """Y = scale[c] X + shift[c]. Readable twin: :func:`snn_core.kernels.reference.bn_apply`."""
    _check_f32(X=X, scale=scale, shift=shift, Y=Y)
    _launch(_bn_apply_k, X.size, X, scale, shift, Y)


def bn_backward(G, X, mean, invstd, gamma, GX, ggamma, gbeta, accumulate):
    """Batch-statistics BN backward. Readable twin: :func:`snn_core.kernels.reference.bn_backward`."""
    _check_f32(G=G, X=X, mean=mean, invstd=invstd, gamma=gamma, GX=GX, ggamma=ggamma, gbeta=gbeta)
    C = X.shape[0]
    sg, sgx = cuda.device_array(C, F32), cuda.device_array(C, F32)
    _launch(_bn_reduce_k, C, G, X, mean, invstd, sgx, sg, 0)
    _launch(_bn_input_grad_k, X.size, G, X, mean, invstd, gamma, sg, sgx, GX)
    _launch(_bn_reduce_k, C, G, X, mean, invstd, ggamma, gbeta, int(bool(accumulate)))


def add(A, B, out):
    """out = A + B elementwise (any shape). Readable twin: :meth:`snn_core.backends.base.Backend.add`."""
    _check_f32(A=A, B=B, out=out)
    _launch(_add_k, out.size, A.reshape(A.size), B.reshape(B.size), out.reshape(out.size))
