"""Numba kernels of the ``cpu`` backend for sparse convolutions (event-driven).

Readable twins: :func:`snn_core.kernels.reference.conv_forward`,
:func:`~snn_core.kernels.reference.conv_grad_at` and
:func:`~snn_core.kernels.reference.conv_backward_input` (im2col and one
matrix product each). Here nothing is dense: the cost follows
**connections x nonzero inputs**.

- forward: every nonzero input value ``x[ci, iy, ix]`` of a sample is
  scattered through the kernel entries that read it: for each kernel offset
  ``(ky, kx)`` that lands on an output position, the connections of column
  ``j = (ci kh + ky) kw + kx`` (the transposed structure) add ``w x`` to their
  output channel. Silent inputs (no spike) cost nothing.
- weight gradient: the same walk over the nonzero inputs, adding
  ``x * G[co, oy, ox]`` to connection ``k``.
- input gradient: the walk goes the other way, over the nonzero entries of the
  output gradient ``G`` (zero wherever the surrogate is zero), through the
  connections of their output channel's row.

Layout: the wrappers take the engine's feature-major ``(F, N)`` arrays,
``N = T * batch``, and work on sample-major copies ``(N, F)`` (one transpose
each way, O(F N), small next to the products) so that one sample's pixels are
contiguous; ``prange`` runs over the N columns (disjoint outputs; the weight
gradient sums per-thread buffers afterwards: no races).
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .cpu import pick_version

_jit = dict(cache=True, nogil=True, error_model="numpy", fastmath=True)
#: fast-math without reassociation: sums keep the order they are written in (contraction to FMA stays,
#: as under fastmath=True), so a kernel that adds several terms per pass gives the one-term loop's bits
_jit_ordered = dict(_jit, fastmath={"contract", "nnan", "ninf", "nsz", "arcp", "afn"})

#: serial cost of one scattered/gathered update (ns), for the serial/parallel choice
_NS_EVENT = 0.8


@numba.njit(**_jit)
def _fwd_sample(n, XT, t_indptr, t_indices, tdata, bias, g, YT):
    c_in, h, w, c_out, oh, ow, kh, kw, s, p = g
    hw, ohw = h * w, oh * ow
    y = YT[n]
    x = XT[n]
    for co in range(c_out):
        b = bias[co]
        for q in range(co * ohw, (co + 1) * ohw):
            y[q] = b
    for f in range(c_in * hw):
        v = x[f]
        if v == 0:
            continue
        ci = f // hw
        r = f - ci * hw
        iy = r // w
        ix = r - iy * w
        for ky in range(kh):
            ty = iy + p - ky
            if ty < 0:
                break
            if ty % s != 0 or ty // s >= oh:
                continue
            for kx in range(kw):
                tx = ix + p - kx
                if tx < 0:
                    break
                if tx % s != 0 or tx // s >= ow:
                    continue
                q = (ty // s) * ow + tx // s
                j = (ci * kh + ky) * kw + kx
                for t in range(t_indptr[j], t_indptr[j + 1]):
                    y[t_indices[t] * ohw + q] += v * tdata[t]


@numba.njit(parallel=True, **_jit)
def _fwd_par(XT, t_indptr, t_indices, tdata, bias, g, YT):
    for n in prange(XT.shape[0]):
        _fwd_sample(n, XT, t_indptr, t_indices, tdata, bias, g, YT)


@numba.njit(**_jit)
def _fwd_ser(XT, t_indptr, t_indices, tdata, bias, g, YT):
    for n in range(XT.shape[0]):
        _fwd_sample(n, XT, t_indptr, t_indices, tdata, bias, g, YT)


@numba.njit(**_jit)
def _grad_sample(n, XT, GT, t_indptr, t_indices, t_perm, g, acc):
    c_in, h, w, c_out, oh, ow, kh, kw, s, p = g
    hw, ohw = h * w, oh * ow
    x = XT[n]
    gr = GT[n]
    for f in range(c_in * hw):
        v = x[f]
        if v == 0:
            continue
        ci = f // hw
        r = f - ci * hw
        iy = r // w
        ix = r - iy * w
        for ky in range(kh):
            ty = iy + p - ky
            if ty < 0:
                break
            if ty % s != 0 or ty // s >= oh:
                continue
            for kx in range(kw):
                tx = ix + p - kx
                if tx < 0:
                    break
                if tx % s != 0 or tx // s >= ow:
                    continue
                q = (ty // s) * ow + tx // s
                j = (ci * kh + ky) * kw + kx
                for t in range(t_indptr[j], t_indptr[j + 1]):
                    acc[t_perm[t]] += v * gr[t_indices[t] * ohw + q]


@numba.njit(parallel=True, **_jit)
def _grad_par(XT, GT, t_indptr, t_indices, t_perm, g, accs):
    nth = accs.shape[0]
    N = XT.shape[0]
    for c in prange(nth):
        accs[c, :] = 0
        for n in range(c * N // nth, (c + 1) * N // nth):
            _grad_sample(n, XT, GT, t_indptr, t_indices, t_perm, g, accs[c])


@numba.njit(**_jit)
def _grad_ser(XT, GT, t_indptr, t_indices, t_perm, g, accs):
    accs[0, :] = 0
    for n in range(XT.shape[0]):
        _grad_sample(n, XT, GT, t_indptr, t_indices, t_perm, g, accs[0])


@numba.njit(**_jit)
def _bwd_sample(n, GT, indptr, off, kys, kxs, data, g, GXT):
    c_in, h, w, c_out, oh, ow, kh, kw, s, p = g
    ohw = oh * ow
    gx = GXT[n]
    gx[:] = 0
    gr = GT[n]
    for co in range(c_out):
        for q in range(ohw):
            gv = gr[co * ohw + q]
            if gv == 0:
                continue
            oy = q // ow
            y0 = oy * s - p
            x0 = (q - oy * ow) * s - p
            base = y0 * w + x0
            for k in range(indptr[co], indptr[co + 1]):
                iy = y0 + kys[k]
                ix = x0 + kxs[k]
                if iy < 0 or iy >= h or ix < 0 or ix >= w:
                    continue
                gx[base + off[k]] += data[k] * gv


@numba.njit(parallel=True, **_jit)
def _bwd_par(GT, indptr, off, kys, kxs, data, g, GXT):
    for n in prange(GT.shape[0]):
        _bwd_sample(n, GT, indptr, off, kys, kxs, data, g, GXT)


@numba.njit(**_jit)
def _bwd_ser(GT, indptr, off, kys, kxs, data, g, GXT):
    for n in range(GT.shape[0]):
        _bwd_sample(n, GT, indptr, off, kys, kxs, data, g, GXT)


# --------------------------------------------------------------------------
# Row path: one connection at a time over whole rows of T*batch columns.
# For connection (co, ci, ky, kx) the output row of position (oy, ox) adds
# w * the input row of pixel (oy*s - p + ky, ox*s - p + kx): an axpy over N
# contiguous values (a run of ow*N with stride 1). Cost ~ connections x
# positions x N at SIMD speed, independent of the spike count: the cheaper
# path once inputs are dense enough (RATE_EVENT_MAX).
#
# Tiles of image rows: every connection of every output channel reads an
# input channel, so walking the channels over the whole image streams the
# input once per connection (conv2 of the conv job: 4,011 x 100 KB = 400 MB
# per call, from L3). The kernels therefore walk a band of rows at a time
# (``_tile_rows``: the band of every input channel fits in TILE_BYTES) and all
# channels within it; the band then stays in L2 while the channels reuse it.
# Each output value still receives its terms in the same order (connections
# in row order), so the result is bit for bit that of the untiled walk.
# --------------------------------------------------------------------------
#: bytes of input rows (all channels) one tile may span: half a 2 MiB L2
TILE_BYTES = 1 << 20


def _tile_rows(channels, rows_per_out, kernel, width, N, itemsize):
    """Output rows per tile: the most whose input band (``channels`` x rows x ``width`` x N) fits TILE_BYTES.

    ``rows_per_out`` is the stride (input rows per extra output row) and
    ``kernel`` the kernel height (the band of one output row). At least 1.
    """
    row = max(channels * width * N * itemsize, 1)
    return max(1, (TILE_BYTES // row - kernel) // max(rows_per_out, 1) + 1)


@numba.njit(**_jit)
def _ox_range(kx, s, p, w, ow):
    lo = 0
    if p - kx > 0:
        lo = (p - kx + s - 1) // s
    hi = (w - 1 + p - kx) // s
    if hi > ow - 1:
        hi = ow - 1
    return lo, hi


@numba.njit(**_jit)
def _rows_fwd_channel(co, oy0, oy1, X, indptr, indices, data, bias, g, Y):
    """Output rows oy0 <= oy < oy1 of channel co."""
    c_in, h, w, c_out, oh, ow, kh, kw, s, p = g
    N = X.shape[1]
    Xf, Yf = X.reshape(X.size), Y.reshape(Y.size)
    hw, ohw, kk = h * w, oh * ow, kh * kw
    for q in range(co * ohw + oy0 * ow, co * ohw + oy1 * ow):
        Y[q, :] = bias[co]
    for k in range(indptr[co], indptr[co + 1]):
        j = indices[k]
        wt = data[k]
        ci = j // kk
        ky = (j - ci * kk) // kw
        kx = j - ci * kk - ky * kw
        lo, hi = _ox_range(kx, s, p, w, ow)
        if hi < lo:
            continue
        # stride 1: the rows of ox = lo..hi are adjacent in Y and in X, so one
        # axpy of (hi-lo+1)*N values covers them; otherwise one row at a time
        run = hi - lo + 1 if s == 1 else 1
        L = run * N
        for oy in range(oy0, oy1):
            iy = oy * s - p + ky
            if iy < 0 or iy >= h:
                continue
            for ox in range(lo, hi + 1, run):
                yb = (co * ohw + oy * ow + ox) * N
                xb = (ci * hw + iy * w + ox * s - p + kx) * N
                yv, xv = Yf[yb:yb + L], Xf[xb:xb + L]  # slices: flat offsets into one array do not vectorise
                for i in range(L):
                    yv[i] += wt * xv[i]


@numba.njit(parallel=True, **_jit)
def _rows_fwd_par(X, indptr, indices, data, bias, g, Y, R):
    oh, c_out = g[4], len(indptr) - 1
    nt = (oh + R - 1) // R
    # (tile, channel) pairs in tile order: each thread takes a run of whole tiles, all channels
    for i in prange(nt * c_out):
        t, co = i // c_out, i % c_out
        _rows_fwd_channel(co, t * R, min(oh, t * R + R), X, indptr, indices, data, bias, g, Y)


@numba.njit(**_jit)
def _rows_fwd_ser(X, indptr, indices, data, bias, g, Y, R):
    oh = g[4]
    for oy0 in range(0, oh, R):
        for co in range(len(indptr) - 1):
            _rows_fwd_channel(co, oy0, min(oh, oy0 + R), X, indptr, indices, data, bias, g, Y)


@numba.njit(**_jit)
def _rows_grad_channel(co, oy0, oy1, G, X, indptr, indices, g, out):
    """Adds the terms of output rows oy0 <= oy < oy1 to out[k] for the connections k of channel co."""
    c_in, h, w, c_out, oh, ow, kh, kw, s, p = g
    N = X.shape[1]
    Gf, Xf = G.reshape(G.size), X.reshape(X.size)
    hw, ohw, kk = h * w, oh * ow, kh * kw
    for k in range(indptr[co], indptr[co + 1]):
        j = indices[k]
        ci = j // kk
        ky = (j - ci * kk) // kw
        kx = j - ci * kk - ky * kw
        lo, hi = _ox_range(kx, s, p, w, ow)
        run = hi - lo + 1 if s == 1 else 1  # stride 1: one dot product over adjacent rows
        L = run * N
        acc = out[k]  # accumulate in the data dtype: the float32 sums vectorise
        for oy in range(oy0, oy1):
            iy = oy * s - p + ky
            if iy < 0 or iy >= h or hi < lo:
                continue
            for ox in range(lo, hi + 1, run):
                gb = (co * ohw + oy * ow + ox) * N
                xb = (ci * hw + iy * w + ox * s - p + kx) * N
                gv, xv = Gf[gb:gb + L], Xf[xb:xb + L]
                for i in range(L):
                    acc += gv[i] * xv[i]
        out[k] = acc


@numba.njit(parallel=True, **_jit)
def _rows_grad_par(G, X, indptr, indices, g, out, R):
    oh = g[4]
    out[:] = 0
    for oy0 in range(0, oh, R):  # tiles in order: every out[k] sums its rows top to bottom
        for co in prange(len(indptr) - 1):
            _rows_grad_channel(co, oy0, min(oh, oy0 + R), G, X, indptr, indices, g, out)


@numba.njit(**_jit)
def _rows_grad_ser(G, X, indptr, indices, g, out, R):
    oh = g[4]
    out[:] = 0
    for oy0 in range(0, oh, R):
        for co in range(len(indptr) - 1):
            _rows_grad_channel(co, oy0, min(oh, oy0 + R), G, X, indptr, indices, g, out)


@numba.njit(**_jit_ordered)
def _rows_bwd_channel(ci, iy0, iy1, G, t_indptr, t_indices, t_perm, data, g, GX):
    """Input rows iy0 <= iy < iy1 of channel ci.

    The connections of one kernel column j share (ky, kx), so four of them go
    through the rows in one pass: one load and store of GX per four
    multiply-adds. The terms are added one after the other, as in the
    one-connection loop (``_jit_ordered``: no reassociation), so the result
    is bit for bit the same.
    """
    c_in, h, w, c_out, oh, ow, kh, kw, s, p = g
    N = G.shape[1]
    Gf, GXf = G.reshape(G.size), GX.reshape(GX.size)
    hw, ohw, kk = h * w, oh * ow, kh * kw
    for f in range(ci * hw + iy0 * w, ci * hw + iy1 * w):
        GX[f, :] = 0
    for j in range(ci * kk, (ci + 1) * kk):
        ky = (j - ci * kk) // kw
        kx = j - ci * kk - ky * kw
        lo, hi = _ox_range(kx, s, p, w, ow)
        if hi < lo:
            continue
        run = hi - lo + 1 if s == 1 else 1  # stride 1: one axpy over adjacent rows
        L = run * N
        # the output rows whose input row oy*s - p + ky falls in the band (// floors, as in Python)
        oy_lo = max(0, (iy0 + p - ky + s - 1) // s)
        oy_hi = min(oh, (iy1 - 1 + p - ky) // s + 1)
        t, e = t_indptr[j], t_indptr[j + 1]
        while t + 4 <= e:
            b0, b1 = t_indices[t] * ohw * N, t_indices[t + 1] * ohw * N
            b2, b3 = t_indices[t + 2] * ohw * N, t_indices[t + 3] * ohw * N
            w0, w1, w2, w3 = data[t_perm[t]], data[t_perm[t + 1]], data[t_perm[t + 2]], data[t_perm[t + 3]]
            for oy in range(oy_lo, oy_hi):
                iy = oy * s - p + ky
                for ox in range(lo, hi + 1, run):
                    q = (oy * ow + ox) * N
                    xb = (ci * hw + iy * w + ox * s - p + kx) * N
                    xv = GXf[xb:xb + L]
                    g0, g1 = Gf[b0 + q:b0 + q + L], Gf[b1 + q:b1 + q + L]
                    g2, g3 = Gf[b2 + q:b2 + q + L], Gf[b3 + q:b3 + q + L]
                    for i in range(L):
                        xv[i] = (((xv[i] + w0 * g0[i]) + w1 * g1[i]) + w2 * g2[i]) + w3 * g3[i]
            t += 4
        while t < e:
            co = t_indices[t]
            wt = data[t_perm[t]]
            for oy in range(oy_lo, oy_hi):
                iy = oy * s - p + ky
                for ox in range(lo, hi + 1, run):
                    gb = (co * ohw + oy * ow + ox) * N
                    xb = (ci * hw + iy * w + ox * s - p + kx) * N
                    xv, gv = GXf[xb:xb + L], Gf[gb:gb + L]
                    for i in range(L):
                        xv[i] += wt * gv[i]
            t += 1


@numba.njit(parallel=True, **_jit)
def _rows_bwd_par(G, t_indptr, t_indices, t_perm, data, g, GX, R):
    h = g[1]
    for iy0 in range(0, h, R):
        for ci in prange(g[0]):
            _rows_bwd_channel(ci, iy0, min(h, iy0 + R), G, t_indptr, t_indices, t_perm, data, g, GX)


@numba.njit(**_jit)
def _rows_bwd_ser(G, t_indptr, t_indices, t_perm, data, g, GX, R):
    h = g[1]
    for iy0 in range(0, h, R):
        for ci in range(g[0]):
            _rows_bwd_channel(ci, iy0, min(h, iy0 + R), G, t_indptr, t_indices, t_perm, data, g, GX)


#: inputs with more than this fraction of nonzero values take the row path
#: (SIMD over the T*batch columns beats one scattered update per event);
#: sparser inputs (spikes at low rates) take the event-driven path
RATE_EVENT_MAX = 0.1
_NS_ROW = 0.08  # one multiply-add of the row path (vectorised)


def rows_ns(g, nnz, N):
    """Estimated serial ns of one row-path product (a cost model: no twin)."""
    return nnz * g.oh * g.ow * N * _NS_ROW


def _ints(g):
    return tuple(int(v) for v in g)


def _events(A, fanout):
    """Estimated serial ns: nonzeros of A times connections per nonzero."""
    return float(np.count_nonzero(A)) * fanout * _NS_EVENT


def conv_forward(indptr, indices, data, t_indptr, t_indices, t_perm, bias, X, Y, g):
    """Y (c_out*oh*ow, N) = sparse conv of X (c_in*h*w, N) + bias per channel, event-driven.

    Readable twin: :func:`snn_core.kernels.reference.conv_forward`.
    """
    nz = np.count_nonzero(X)
    if nz > RATE_EVENT_MAX * X.size:
        R = _tile_rows(g.c_in, g.stride, g.kh, g.w, X.shape[1], X.itemsize)
        pick_version(_rows_fwd_ser, _rows_fwd_par, rows_ns(g, len(indices), X.shape[1]))(
            X, indptr, indices, data, bias, _ints(g), Y, R)
        return None
    XT = np.ascontiguousarray(X.T)
    YT = np.empty((X.shape[1], Y.shape[0]), Y.dtype)
    tdata = np.ascontiguousarray(data[t_perm])
    fan = len(indices) * g.kh * g.kw / max(g.kernel_cols, 1) / g.stride ** 2
    pick_version(_fwd_ser, _fwd_par, _events(XT, fan))(XT, t_indptr, t_indices, tdata, bias, _ints(g), YT)
    Y[...] = YT.T
    return XT


def conv_grad_at(indptr, indices, t_indptr, t_indices, t_perm, G, X, XT, out, accumulate, g):
    """dL/dW at the connections (nnz,): event-driven over the nonzeros of XT = X^T (N, c_in*h*w)
    when the forward made XT, else the row path over X (c_in*h*w, N).

    Readable twin: :func:`snn_core.kernels.reference.conv_grad_at`.
    """
    if XT is None:
        d = np.empty(len(indices), out.dtype)
        R = _tile_rows(g.c_in, g.stride, g.kh, g.w, X.shape[1], X.itemsize)
        pick_version(_rows_grad_ser, _rows_grad_par, rows_ns(g, len(indices), X.shape[1]))(
            G, X, indptr, indices, _ints(g), d, R)
        if accumulate:
            out += d
        else:
            out[...] = d
        return
    GT = np.ascontiguousarray(G.T)
    nnz = len(t_indices)
    fan = nnz * g.kh * g.kw / max(g.kernel_cols, 1) / g.stride ** 2
    ns = _events(XT, fan)
    fn = pick_version(_grad_ser, _grad_par, ns)
    nth = numba.get_num_threads() if fn is not _grad_ser else 1
    accs = np.empty((nth, nnz), np.float64 if out.dtype == np.float64 else np.float32)
    fn(XT, GT, t_indptr, t_indices, t_perm, _ints(g), accs)
    total = accs.sum(axis=0, dtype=out.dtype)
    if accumulate:
        out += total
    else:
        out[...] = total


def conv_backward_input(indptr, indices, data, t_indptr, t_indices, t_perm, G, GX, g):
    """GX (c_in*h*w, N) = W^T G of the convolution: over the nonzeros of G when they are few, else the row path.

    Readable twin: :func:`snn_core.kernels.reference.conv_backward_input`.
    """
    if np.count_nonzero(G) > RATE_EVENT_MAX * G.size:
        # a band of R input rows reads about R / stride + kernel output rows of every output channel
        R = max(1, _tile_rows(g.c_out, 1, g.kh, g.ow, G.shape[1], G.itemsize) - 1) * g.stride
        pick_version(_rows_bwd_ser, _rows_bwd_par, rows_ns(g, len(indices), G.shape[1]))(
            G, t_indptr, t_indices, t_perm, data, _ints(g), GX, R)
        return
    GT = np.ascontiguousarray(G.T)
    GXT = np.empty((G.shape[1], GX.shape[0]), GX.dtype)
    fan = len(indices) / max(g.c_out, 1)
    # per connection: its kernel offset (ky, kx) and its input offset relative to the window corner
    ci, rr = np.divmod(indices, g.kh * g.kw)
    kys, kxs = np.divmod(rr, g.kw)
    off = (ci * (g.h * g.w) + kys * g.w + kxs).astype(np.int64)
    pick_version(_bwd_ser, _bwd_par, _events(GT, fan))(GT, indptr, off, kys.astype(np.int64), kxs.astype(np.int64),
                                                       data, _ints(g), GXT)
    GX[...] = GXT.T


# --------------------------------------------------------------------------
# Batch norm through time, one channel per row of X (C, M); twins:
# snn_core.kernels.reference.bn_stats / bn_apply / bn_backward
# --------------------------------------------------------------------------
@numba.njit(parallel=True, **_jit)
def _bn_stats(X, mean, var):
    C, M = X.shape
    for c in prange(C):
        x = X[c]
        s = 0.0
        for i in range(M):
            s += x[i]
        m = s / M
        ss = 0.0
        for i in range(M):
            d = x[i] - m
            ss += d * d
        mean[c] = m
        var[c] = ss / M


def bn_stats(X, mean, var):
    """Per-row mean and biased variance in float64 accumulation. Readable twin: :func:`snn_core.kernels.reference.bn_stats`."""
    _bn_stats(X, mean, var)


@numba.njit(parallel=True, **_jit)
def _bn_apply(X, scale, shift, Y):
    C, M = X.shape
    for c in prange(C):
        a, b = scale[c], shift[c]
        for i in range(M):
            Y[c, i] = X[c, i] * a + b


def bn_apply(X, scale, shift, Y):
    """Y = scale[c] X + shift[c]. Readable twin: :func:`snn_core.kernels.reference.bn_apply`."""
    _bn_apply(X, scale, shift, Y)


@numba.njit(parallel=True, **_jit)
def _bn_backward(G, X, mean, invstd, gamma, GX, gg, gb):
    C, M = X.shape
    for c in prange(C):
        m, r = mean[c], invstd[c]
        sg = 0.0
        sgx = 0.0
        for i in range(M):
            gi = G[c, i]
            sg += gi
            sgx += gi * (X[c, i] - m) * r
        gb[c] = sg
        gg[c] = sgx
        k = gamma[c] * r
        a, b = sg / M, sgx / M
        for i in range(M):
            GX[c, i] = k * (G[c, i] - a - (X[c, i] - m) * r * b)


def bn_backward(G, X, mean, invstd, gamma, GX, gg, gb):
    """Batch-statistics BN backward into GX, gg (dL/dgamma), gb (dL/dbeta). Readable twin: :func:`snn_core.kernels.reference.bn_backward`."""
    _bn_backward(G, X, mean, invstd, gamma, GX, gg, gb)


# --------------------------------------------------------------------------
# Non-overlapping pooling on (c*h*w, N) rows; twins:
# snn_core.kernels.reference.avgpool_forward / avgpool_backward
# --------------------------------------------------------------------------
@numba.njit(parallel=True, **_jit)
def _avgpool_forward(X, Y, c_in, h, w, k):
    oh, ow, N = h // k, w // k, X.shape[1]
    scale = Y.dtype.type(1.0 / (k * k))
    for r in prange(c_in * oh):
        c, oy = r // oh, r % oh
        for ox in range(ow):
            y = Y[r * ow + ox]
            y[:] = 0
            for ky in range(k):
                base = (c * h + oy * k + ky) * w + ox * k
                for kx in range(k):
                    x = X[base + kx]
                    for n in range(N):
                        y[n] += x[n]
            for n in range(N):
                y[n] *= scale


def avgpool_forward(g, X, Y):
    """Mean of every k x k window of X (c*h*w, N) into Y (c*oh*ow, N). Readable twin: :func:`snn_core.kernels.reference.avgpool_forward`."""
    _avgpool_forward(X, Y, g.c_in, g.h, g.w, g.kh)


@numba.njit(parallel=True, **_jit)
def _avgpool_backward(G, GX, c_in, h, w, k):
    oh, ow, N = h // k, w // k, G.shape[1]
    scale = G.dtype.type(1.0 / (k * k))
    for r in prange(c_in * oh):
        c, oy = r // oh, r % oh
        for ox in range(ow):
            gy = G[r * ow + ox]
            for ky in range(k):
                base = (c * h + oy * k + ky) * w + ox * k
                for kx in range(k):
                    gx = GX[base + kx]
                    for n in range(N):
                        gx[n] = gy[n] * scale


def avgpool_backward(g, G, GX):
    """Each window's gradient G (c*oh*ow, N) spread evenly over its inputs in GX (c*h*w, N). Readable twin: :func:`snn_core.kernels.reference.avgpool_backward`."""
    _avgpool_backward(G, GX, g.c_in, g.h, g.w, g.kh)


@numba.njit(parallel=True, **_jit)
def _maxpool_forward(X, Y, arg, c_in, h, w, k):
    oh, ow, N = h // k, w // k, X.shape[1]
    for r in prange(c_in * oh):
        c, oy = r // oh, r % oh
        for ox in range(ow):
            y, a = Y[r * ow + ox], arg[r * ow + ox]
            first = X[(c * h + oy * k) * w + ox * k]
            for n in range(N):
                y[n] = first[n]
                a[n] = 0
            for i in range(1, k * k):  # window offsets in row-major order, as the twin's views
                x = X[(c * h + oy * k + i // k) * w + ox * k + i % k]
                pos = np.uint8(i)
                for n in range(N):
                    bigger = x[n] > y[n]  # strictly: a tie keeps the first max
                    y[n] = x[n] if bigger else y[n]
                    a[n] = pos if bigger else a[n]


def maxpool_forward(g, X, Y, arg):
    """Max of every k x k window of X (c*h*w, N) into Y, its offset in the window into ``arg`` (uint8). Readable twin: :func:`snn_core.kernels.reference.maxpool_forward`."""
    _maxpool_forward(X, Y, arg, g.c_in, g.h, g.w, g.kh)


@numba.njit(parallel=True, **_jit)
def _maxpool_backward(G, arg, GX, c_in, h, w, k):
    oh, ow, N = h // k, w // k, G.shape[1]
    zero = GX.dtype.type(0.0)
    for r in prange(c_in * oh):
        c, oy = r // oh, r % oh
        for ox in range(ow):
            gy, a = G[r * ow + ox], arg[r * ow + ox]
            for i in range(k * k):
                gx = GX[(c * h + oy * k + i // k) * w + ox * k + i % k]
                pos = np.uint8(i)
                for n in range(N):
                    gx[n] = gy[n] if a[n] == pos else zero


def maxpool_backward(g, G, arg, GX):
    """Each window's gradient G (c*oh*ow, N) to the input that was its max, zero to the others, in GX (c*h*w, N). Readable twin: :func:`snn_core.kernels.reference.maxpool_backward`."""
    _maxpool_backward(G, arg, GX, g.c_in, g.h, g.w, g.kh)
