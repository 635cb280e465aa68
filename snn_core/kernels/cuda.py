"""CUDA kernels (numba.cuda) for the device-resident training path.

Every kernel mirrors the semantics of its NumPy twin in
:mod:`snn_core.kernels.reference` (and of the CPU kernel of the same name in
:mod:`snn_core.kernels.cpu`); the host wrappers below take and return
**device arrays** and launch one kernel each. Nothing here copies to or from
the host except the tiny convenience helpers at the end (``*_host``) used by
tests.

Importing this module needs ``numba-cuda`` (``pip install -e .[cuda]``) but
no GPU: kernels compile lazily at their first launch. Use
:func:`snn_core.backend.require_cuda` before launching anything to get a clear
error on a machine without a GPU. Under the CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1`` set before numba is imported) every kernel runs
as Python, one thread at a time: use tiny sizes there.

Layout (same as the CPU kernels): activations are feature-major, C-contiguous
``(F, T, B)`` device arrays, viewed as ``(F, N)`` with ``N = T * B`` by the
synaptic kernels. CSR weights are their three arrays (int32 ``indptr``,
``indices``, float32 ``data``). The device path is **float32 only**.

Thread mappings (one launch per call, 1-D grids of ``TPB`` threads):

=====================  =========================================================
kernel                 one thread per ...
=====================  =========================================================
LIF / readout fwd+bwd  (neuron f, sample b); the T-step loop (forward, or BPTT
                       backwards in time) runs inside the thread; consecutive
                       threads touch consecutive samples (coalesced)
csr_forward            (output row r, column n); loops over the row's
                       connections and adds only inputs that are nonzero
                       (event-driven for spikes); consecutive threads read
                       consecutive columns of X (coalesced)
csr_backward_input     (input j, column n); loops over column j of W through
                       the transposed structure (t_indptr, t_indices, t_perm,
                       i.e. the CSC of W): every thread owns its output, so no
                       atomics are needed
csr_grad_at            connection k (its row by binary search in indptr);
                       dot product of G[r, :] and X[j, :] over the N columns
bias_grad              output row r; sum of G[r, :]
adam / sgd             parameter element
losses                 sample b (softmax over the classes, float64); then one
                       block reduces the per-sample values into an accumulator
bernoulli encoder      (input f, sample b); loop over t; the counter-based
                       SplitMix64 hash of :mod:`snn_core.data.encoders`, so the
                       spikes equal the CPU encoder's bit for bit
=====================  =========================================================

Bit-for-bit notes. The LIF/readout membrane update ``u = alpha v + k0 + c I``
uses ``__fmul_rn`` / ``__fadd_rn`` on a real GPU, which the compiler never
contracts into fused multiply-adds: given the same input current, the device
produces the same membrane and the same spikes as the CPU kernel (which does
not contract either). Sums over connections or columns (CSR products,
gradients) are accumulated in a different order than on the CPU (which uses
fastmath), so they agree to float32 rounding (relative ~1e-6), not bitwise.
"""
from __future__ import annotations

import math
import warnings

import numba
import numpy as np
from numba import cuda

from .. import surrogate

from ..data.encoders import (
    _GAMMA, _HALF, _M1, _M2, _MASK16, _ONE, _S16, _S27, _S30, _S31, _SCALE16, _as_batch, _check_T, _stream_state,
)

#: True when running under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1).
SIMULATOR = bool(numba.config.ENABLE_CUDASIM)
#: threads per block of the 1-D launches
TPB = 128
#: threads of the single-block reduction (power of two; shared arrays are this size)
RED_TPB = 128

F32 = np.float32


# --------------------------------------------------------------------------
# Rounding-exact multiply/add (no FMA contraction on a real GPU)
# --------------------------------------------------------------------------
if SIMULATOR:  # numpy float32 scalar arithmetic is already single-rounded
    @cuda.jit(device=True)
    def _mul_rn(a, b):
        return a * b

    @cuda.jit(device=True)
    def _add_rn(a, b):
        return a + b
else:  # pragma: no cover - needs a GPU (type-checked with cuda.compile_ptx)
    from numba.cuda import libdevice

    @cuda.jit(device=True)
    def _mul_rn(a, b):
        return libdevice.fmul_rn(a, b)

    @cuda.jit(device=True)
    def _add_rn(a, b):
        return libdevice.fadd_rn(a, b)


# --------------------------------------------------------------------------
# Surrogates: the very Python functions of snn_core.surrogate, compiled for the
# device, so CPU and GPU can never disagree on a formula
# --------------------------------------------------------------------------
_surrogate_grad = cuda.jit(device=True)(surrogate.surrogate_grad.py_func)
_smooth_spike = cuda.jit(device=True)(surrogate.smooth_spike.py_func)


# --------------------------------------------------------------------------
# Neurons: one thread per (neuron, sample), loop over T inside
# --------------------------------------------------------------------------
@cuda.jit
def _lif_forward_k(I, v0, alpha, k0, c, v_th, v_reset, reset, sur, p, smooth, u_out, s_out, v_out):
    F, T, B = I.shape
    i = cuda.grid(1)
    if i >= F * B:
        return
    f = i // B
    b = i - f * B
    one = np.float32(1.0)
    zero = np.float32(0.0)
    v = v0[f, b]
    for t in range(T):
        u = _add_rn(_add_rn(_mul_rn(alpha, v), k0), _mul_rn(c, I[f, t, b]))
        u_out[f, t, b] = u
        if smooth:
            s = np.float32(_smooth_spike(u - v_th, sur, p))
            s_out[f, t, b] = s
            if reset == 0:
                v = u * (one - s) + v_reset * s
            elif reset == 1:
                v = u - v_th * s
            else:
                v = u
        else:
            sp = u >= v_th
            s_out[f, t, b] = one if sp else zero
            if reset == 0:
                v = v_reset if sp else u
            elif reset == 1:
                v = u - v_th if sp else u
            else:
                v = u
    v_out[f, b] = v


@cuda.jit
def _lif_backward_k(gs, u, s, alpha, c, v_th, v_reset, reset, detach, sur, p, gI):
    F, T, B = gs.shape
    i = cuda.grid(1)
    if i >= F * B:
        return
    f = i // B
    b = i - f * B
    one = np.float32(1.0)
    zero = np.float32(0.0)
    gv = zero
    for tt in range(T):
        t = T - 1 - tt
        sg = np.float32(_surrogate_grad(u[f, t, b] - v_th, sur, p))
        if reset == 0:
            dv_du = one - s[f, t, b]
            dv_ds = v_reset - u[f, t, b]
        elif reset == 1:
            dv_du = one
            dv_ds = -v_th
        else:
            dv_du = one
            dv_ds = zero
        if detach:
            g_s = gs[f, t, b]
        else:
            g_s = gs[f, t, b] + gv * dv_ds
        gu = g_s * sg + gv * dv_du
        gI[f, t, b] = c * gu
        gv = alpha * gu


@cuda.jit
def _readout_forward_k(I, v0, alpha, k0, c, u_out):
    F, T, B = I.shape
    i = cuda.grid(1)
    if i >= F * B:
        return
    f = i // B
    b = i - f * B
    v = v0[f, b]
    for t in range(T):
        v = _add_rn(_add_rn(_mul_rn(alpha, v), k0), _mul_rn(c, I[f, t, b]))
        u_out[f, t, b] = v


@cuda.jit
def _readout_backward_k(gu, alpha, c, gI):
    F, T, B = gu.shape
    i = cuda.grid(1)
    if i >= F * B:
        return
    f = i // B
    b = i - f * B
    acc = np.float32(0.0)
    for tt in range(T):
        t = T - 1 - tt
        acc = gu[f, t, b] + alpha * acc
        gI[f, t, b] = c * acc


# --------------------------------------------------------------------------
# Sparse synapses (feature-major (F, N) activations)
# --------------------------------------------------------------------------
@cuda.jit
def _csr_forward_k(indptr, indices, data, bias, X, Y):
    n_out, N = Y.shape
    i = cuda.grid(1)
    if i >= n_out * N:
        return
    r = i // N
    n = i - r * N
    zero = np.float32(0.0)
    acc = bias[r]
    for k in range(indptr[r], indptr[r + 1]):
        x = X[indices[k], n]
        if x != zero:  # event-driven: silent inputs cost a load, no arithmetic
            acc += data[k] * x
    Y[r, n] = acc


@cuda.jit
def _csr_backward_input_k(t_indptr, t_indices, t_perm, data, G, GX):
    n_in, N = GX.shape
    i = cuda.grid(1)
    if i >= n_in * N:
        return
    j = i // N
    n = i - j * N
    acc = np.float32(0.0)
    for q in range(t_indptr[j], t_indptr[j + 1]):
        acc += data[t_perm[q]] * G[t_indices[q], n]
    GX[j, n] = acc


@cuda.jit(device=True)
def _row_of(indptr, k):
    """The row r with indptr[r] <= k < indptr[r + 1] (binary search)."""
    lo = 0
    hi = indptr.shape[0] - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if indptr[mid] <= k:
            lo = mid
        else:
            hi = mid
    return lo


@cuda.jit
def _csr_grad_at_k(indptr, indices, G, X, out, accumulate):
    nnz = indices.shape[0]
    k = cuda.grid(1)
    if k >= nnz:
        return
    r = _row_of(indptr, k)
    j = indices[k]
    acc = np.float32(0.0)
    for n in range(G.shape[1]):
        acc += G[r, n] * X[j, n]
    if accumulate:
        out[k] += acc
    else:
        out[k] = acc


@cuda.jit
def _bias_grad_k(G, out, accumulate):
    n_out, N = G.shape
    r = cuda.grid(1)
    if r >= n_out:
        return
    acc = np.float32(0.0)
    for n in range(N):
        acc += G[r, n]
    if accumulate:
        out[r] += acc
    else:
        out[r] = acc


# --------------------------------------------------------------------------
# Optimizers (same expressions as snn_core.kernels.cpu, hence same types)
# --------------------------------------------------------------------------
@cuda.jit
def _adam_k(w, g, m, v, lr, b1, b2, eps, bc1, bc2, wd):
    i = cuda.grid(1)
    if i >= w.shape[0]:
        return
    gi = g[i] + wd * w[i]
    m[i] = b1 * m[i] + (1 - b1) * gi
    v[i] = b2 * v[i] + (1 - b2) * gi * gi
    w[i] -= lr * (m[i] / bc1) / (math.sqrt(v[i] / bc2) + eps)


@cuda.jit
def _sgd_k(w, g, buf, lr, momentum, nesterov, wd):
    i = cuda.grid(1)
    if i >= w.shape[0]:
        return
    gi = g[i] + wd * w[i]
    if momentum != 0:
        buf[i] = momentum * buf[i] + gi
        gi = gi + momentum * buf[i] if nesterov else buf[i]
    w[i] -= lr * gi


@cuda.jit
def _fill_k(a, value):
    i = cuda.grid(1)
    if i < a.shape[0]:
        a[i] = value


# --------------------------------------------------------------------------
# Losses: one thread per sample, output O feature-major (C, T, B)
# --------------------------------------------------------------------------
@cuda.jit(device=True)
def _tsum(O, c, b):
    """float32 sum over time of O[c, :, b] (what losses.predict sums)."""
    s = np.float32(0.0)
    for t in range(O.shape[1]):
        s += O[c, t, b]
    return s


@cuda.jit(device=True)
def _predict(O, b):
    C = O.shape[0]
    best = 0
    smax = _tsum(O, 0, b)
    for c in range(1, C):
        s = _tsum(O, c, b)
        if s > smax:  # first maximum wins, like numpy.argmax
            smax = s
            best = c
    return best


@cuda.jit(device=True)
def _ce_logit(O, c, b, mean):
    s = _tsum(O, c, b)
    if mean:
        return np.float64(s / np.float32(O.shape[1]))
    return np.float64(s)


@cuda.jit
def _ce_k(O, y_all, idx, mean, loss_out, correct_out, G):
    """Softmax CE on time-summed (mean=0, ce_count) or time-averaged (mean=1, ce_membrane) outputs."""
    C, T, B = O.shape
    b = cuda.grid(1)
    if b >= B:
        return
    label = y_all[idx[b]]
    zmax = _ce_logit(O, 0, b, mean)
    for c in range(1, C):
        zmax = max(zmax, _ce_logit(O, c, b, mean))
    se = 0.0
    for c in range(C):
        se += math.exp(_ce_logit(O, c, b, mean) - zmax)
    lse = math.log(se)
    loss_out[b] = -((_ce_logit(O, label, b, mean) - zmax) - lse) / B
    for c in range(C):
        g = math.exp((_ce_logit(O, c, b, mean) - zmax) - lse)
        if c == label:
            g -= 1.0
        g = g / B
        if mean:
            g = g / T
        g32 = np.float32(g)
        for t in range(T):
            G[c, t, b] = g32
    correct_out[b] = 1.0 if _predict(O, b) == label else 0.0


@cuda.jit
def _mse_rate_k(O, y_all, idx, on, off, loss_out, correct_out, G):
    C, T, B = O.shape
    b = cuda.grid(1)
    if b >= B:
        return
    label = y_all[idx[b]]
    total = 0.0
    for c in range(C):
        acc = 0.0
        for t in range(T):
            acc += np.float64(O[c, t, b])
        diff = acc / T - (on if c == label else off)
        total += diff * diff
        g32 = np.float32(2.0 * diff / (B * C * T))
        for t in range(T):
            G[c, t, b] = g32
    loss_out[b] = total / (B * C)
    correct_out[b] = 1.0 if _predict(O, b) == label else 0.0


@cuda.jit
def _tet_k(O, y_all, idx, lam, phi, loss_out, correct_out, G):
    C, T, B = O.shape
    b = cuda.grid(1)
    if b >= B:
        return
    label = y_all[idx[b]]
    value = 0.0
    for t in range(T):
        zmax = np.float64(O[0, t, b])
        for c in range(1, C):
            zmax = max(zmax, np.float64(O[c, t, b]))
        se = 0.0
        sq = 0.0
        for c in range(C):
            z = np.float64(O[c, t, b])
            se += math.exp(z - zmax)
            sq += (z - phi) * (z - phi)
        lse = math.log(se)
        ce = -((np.float64(O[label, t, b]) - zmax) - lse)
        value += ((1 - lam) * ce / B + lam * sq / (B * C)) / T
        for c in range(C):
            z = np.float64(O[c, t, b])
            gce = math.exp((z - zmax) - lse)
            if c == label:
                gce -= 1.0
            G[c, t, b] = np.float32(((1 - lam) * gce / B + lam * 2.0 * (z - phi) / (B * C)) / T)
    loss_out[b] = value
    correct_out[b] = 1.0 if _predict(O, b) == label else 0.0


@cuda.jit
def _reduce_k(loss_b, correct_b, acc):
    """acc += (B * sum(loss_b), sum(correct_b), B): one block of RED_TPB threads."""
    sl = cuda.shared.array(RED_TPB, numba.float64)
    sc = cuda.shared.array(RED_TPB, numba.float64)
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    B = loss_b.shape[0]
    a = 0.0
    c = 0.0
    for i in range(tid, B, nt):
        a += loss_b[i]
        c += correct_b[i]
    sl[tid] = a
    sc[tid] = c
    cuda.syncthreads()
    s = nt // 2
    while s > 0:
        if tid < s:
            sl[tid] += sl[tid + s]
            sc[tid] += sc[tid + s]
        cuda.syncthreads()
        s //= 2
    if tid == 0:
        acc[0] += sl[0] * B
        acc[1] += sc[0]
        acc[2] += B


# --------------------------------------------------------------------------
# Encoders: x (n_samples, F) float32 intensities, idx (B,) sample indices
# --------------------------------------------------------------------------
@cuda.jit(device=True)
def _mix64(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@cuda.jit
def _bernoulli_k(x, idx, use_scale, scale, state, out):
    # One thread per (f, b); the draws of :func:`snn_core.data.encoders._bernoulli_row`:
    # word g of (f, b) is mix64(state + ((f * G + g) * B + b + 1) * GAMMA), G = ceil(T / 4),
    # and its 16-bit lane l decides step t = 4 g + l (spike iff lane < round(p * 2**16)).
    F, T, B = out.shape
    i = cuda.grid(1)
    if i >= F * B:
        return
    f = i // B
    b = i - f * B
    p = x[idx[b], f]
    if use_scale:
        p = min(p * scale, np.float32(1.0))
    th = np.uint64(p * _SCALE16 + _HALF)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    G = (T + 3) // 4
    z = np.uint64(0)
    for t in range(T):
        if t % 4 == 0:
            z = _mix64(state + (np.uint64((f * G + t // 4) * B + b) + _ONE) * _GAMMA)
        out[f, t, b] = one if (z & _MASK16) < th else zero
        z >>= _S16


@cuda.jit
def _direct_k(x, idx, out):
    F, T, B = out.shape
    i = cuda.grid(1)
    if i >= F * B:
        return
    f = i // B
    b = i - f * B
    v = x[idx[b], f]
    for t in range(T):
        out[f, t, b] = v


# --------------------------------------------------------------------------
# Host wrappers (device arrays in, device arrays out)
# --------------------------------------------------------------------------
def _launch(kernel, n, *args):
    if n <= 0:
        return
    tpb = min(TPB, n)
    kernel[(n + tpb - 1) // tpb, tpb](*args)


def _check_f32(**arrays):
    for name, a in arrays.items():
        if a is not None and a.dtype != np.float32:
            raise TypeError(f"{name}: the CUDA kernels are float32 only, got {a.dtype}")


def _flat(a):
    return a.reshape(a.size) if a.ndim != 1 else a


def lif_forward(I, v0, alpha, k0, c, v_th, v_reset, reset, sur, p, smooth, u_out, s_out, v_out):
    """Device twin of :func:`snn_core.kernels.cpu.lif_forward` (all (F, T, B), v0/v_out (F, B))."""
    _check_f32(I=I, v0=v0, u_out=u_out, s_out=s_out, v_out=v_out)
    F, T, B = I.shape
    _launch(_lif_forward_k, F * B, I, v0, F32(alpha), F32(k0), F32(c), F32(v_th), F32(v_reset), int(reset),
            int(sur), F32(p), int(smooth), u_out, s_out, v_out)


def lif_backward(gs, u, s, alpha, c, v_th, v_reset, reset, detach, sur, p, gI):
    """Device twin of :func:`snn_core.kernels.cpu.lif_backward`."""
    _check_f32(gs=gs, u=u, s=s, gI=gI)
    F, T, B = gs.shape
    _launch(_lif_backward_k, F * B, gs, u, s, F32(alpha), F32(c), F32(v_th), F32(v_reset), int(reset),
            int(bool(detach)), int(sur), F32(p), gI)


def readout_forward(I, v0, alpha, k0, c, u_out):
    """Device twin of :func:`snn_core.kernels.cpu.readout_forward`."""
    _check_f32(I=I, v0=v0, u_out=u_out)
    F, T, B = I.shape
    _launch(_readout_forward_k, F * B, I, v0, F32(alpha), F32(k0), F32(c), u_out)


def readout_backward(gu, alpha, c, gI):
    """Device twin of :func:`snn_core.kernels.cpu.readout_backward`."""
    _check_f32(gu=gu, gI=gI)
    F, T, B = gu.shape
    _launch(_readout_backward_k, F * B, gu, F32(alpha), F32(c), gI)


def csr_forward(indptr, indices, data, bias, X, Y):
    """Y[r, :] = bias[r] + sum_k data[k] X[indices[k], :] (X (n_in, N), Y (n_out, N))."""
    _check_f32(data=data, bias=bias, X=X, Y=Y)
    n_out, N = Y.shape
    _launch(_csr_forward_k, n_out * N, indptr, indices, data, bias, X, Y)


def csr_backward_input(t_indptr, t_indices, t_perm, data, G, GX):
    """GX = W^T G through the transposed structure (see :func:`snn_core.sparse.transpose_structure`)."""
    _check_f32(data=data, G=G, GX=GX)
    n_in, N = GX.shape
    _launch(_csr_backward_input_k, n_in * N, t_indptr, t_indices, t_perm, data, G, GX)


def csr_grad_at(indptr, indices, G, X, out, accumulate=False):
    """out[k] (+)= G[r, :] . X[indices[k], :] for every connection k (row r)."""
    _check_f32(G=G, X=X, out=out)
    _launch(_csr_grad_at_k, indices.shape[0], indptr, indices, G, X, out, int(bool(accumulate)))


def bias_grad(G, out, accumulate=False):
    """out[r] (+)= sum_n G[r, n]."""
    _check_f32(G=G, out=out)
    _launch(_bias_grad_k, G.shape[0], G, out, int(bool(accumulate)))


def adam_update(w, g, m, v, lr, b1, b2, eps, bc1, bc2, wd):
    """In-place Adam step (device twin of :func:`snn_core.kernels.cpu.adam_update`); 1-D arrays."""
    w, g, m, v = _flat(w), _flat(g), _flat(m), _flat(v)
    _check_f32(w=w, g=g, m=m, v=v)
    _launch(_adam_k, w.shape[0], w, g, m, v, F32(lr), F32(b1), F32(b2), F32(eps), F32(bc1), F32(bc2), F32(wd))


def sgd_update(w, g, buf, lr, momentum, nesterov, wd):
    """In-place SGD step (device twin of :func:`snn_core.kernels.cpu.sgd_update`); 1-D arrays."""
    w, g, buf = _flat(w), _flat(g), _flat(buf)
    _check_f32(w=w, g=g, buf=buf)
    _launch(_sgd_k, w.shape[0], w, g, buf, F32(lr), F32(momentum), bool(nesterov), F32(wd))


def fill(a, value):
    """a[...] = value (device array, any shape, contiguous)."""
    a = _flat(a)
    _launch(_fill_k, a.shape[0], a, a.dtype.type(value))


#: device loss names (those of snn_core.losses)
LOSSES = ("ce_count", "ce_membrane", "mse_rate", "tet")


def loss_and_grad(name, O, y, idx, loss_out, correct_out, G, on=1.0, off=0.0, lam=1e-3, phi=1.0):
    """Per-sample loss, correctness and dL/dO on the device.

    O : (C, T, B) float32 network output; ``y`` int labels (device) indexed
    by ``idx`` (device, (B,)): the label of sample b is ``y[idx[b]]``.
    Writes ``loss_out[b]`` (float64; the batch loss of :mod:`snn_core.losses`
    is ``loss_out.sum()``), ``correct_out[b]`` (1.0 when
    :func:`snn_core.losses.predict` is right) and ``G`` (C, T, B) float32, the
    same gradient as the CPU loss. Keyword arguments: those of the CPU losses.
    """
    _check_f32(O=O, G=G)
    B = O.shape[2]
    if name in ("ce_count", "ce_membrane"):
        _launch(_ce_k, B, O, y, idx, int(name == "ce_membrane"), loss_out, correct_out, G)
    elif name == "mse_rate":
        _launch(_mse_rate_k, B, O, y, idx, float(on), float(off), loss_out, correct_out, G)
    elif name == "tet":
        _launch(_tet_k, B, O, y, idx, float(lam), float(phi), loss_out, correct_out, G)
    else:
        raise ValueError(f"loss: unknown name {name!r}; expected one of {sorted(LOSSES)}")


def accumulate_loss(loss_b, correct_b, acc):
    """acc[0] += B * sum(loss_b) (the batch loss times the batch size), acc[1] += #correct, acc[2] += B.

    One block of up to ``RED_TPB`` threads; ``acc`` is a float64 device array (3,).
    """
    B = loss_b.shape[0]
    if B == 0:
        return
    nt = 1
    while nt < min(B, RED_TPB):
        nt *= 2
    _reduce_k[1, nt](loss_b, correct_b, acc)


def encode(kind, x, idx, T, seed_state, out, scale=1.0):
    """Encode the samples ``x[idx]`` into ``out`` (F, T, B) on the device.

    kind : "bernoulli" / "poisson" (``scale = max_rate * dt``; 1 for the
        defaults, where it equals bernoulli) or "direct".
    x : (n_samples, F) float32 device array of intensities in [0, 1]
    idx : (B,) integer device array of sample indices
    seed_state : np.uint64 stream state (``encoders._stream_state(seed)``)
    """
    _check_f32(x=x, out=out)
    F, T_, B = out.shape
    if T_ != T or x.shape[1] != F:
        raise ValueError(f"encode: out has shape {out.shape}, expected ({x.shape[1]}, {T}, B)")
    if kind in ("bernoulli", "poisson"):
        scale = float(scale)
        if SIMULATOR:  # numpy warns about the (intended) uint64 wrap-around of the hash
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                _launch(_bernoulli_k, F * B, x, idx, int(scale != 1.0), F32(scale), np.uint64(seed_state), out)
        else:
            _launch(_bernoulli_k, F * B, x, idx, int(scale != 1.0), F32(scale), np.uint64(seed_state), out)
    elif kind == "direct":
        _launch(_direct_k, F * B, x, idx, out)
    else:
        raise ValueError(f"encode: no device encoder {kind!r} (device encoders: bernoulli, poisson, direct)")
    return out


def bernoulli_encode(x, T, seed=None, out=None):
    """Device twin of :func:`snn_core.data.encoders.bernoulli_encode` (bit-identical spikes).

    ``x`` is a host (batch, features) array; returns the (F, T, B) float32
    device array (the CPU encoder returns the (T, B, F) view of the same
    (F, T, B) buffer).
    """
    xt = _as_batch(x)  # validation, (F, B)
    T = _check_T(T)
    F, B = xt.shape
    state = _stream_state(seed)
    d_x = cuda.to_device(np.ascontiguousarray(xt.T))
    d_idx = cuda.to_device(np.arange(B, dtype=np.int64))
    if out is None:
        out = cuda.device_array((F, T, B), np.float32)
    return encode("bernoulli", d_x, d_idx, T, state, out)
