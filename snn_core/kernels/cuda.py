"""CUDA kernels (numba.cuda) of the ``cuda`` backend (:mod:`snn_core.backends.cuda`).

Every kernel mirrors the semantics of its NumPy twin in
:mod:`snn_core.kernels.reference` (named in each wrapper's docstring, and the
CPU kernel of the same name in :mod:`snn_core.kernels.cpu`); the host
wrappers below take **device arrays** and launch one kernel each. Nothing
here copies to or from the host. Losses and encoders run on the host (see
``docs/gpu.md``).

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
dense fwd / dX         (output row, column) / (input, column); loop over the
                       other axis
dense weight grad      weight (r, j); dot product over the N columns
scale_rows / row_dot   element / feature
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

#: True when running under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1).
SIMULATOR = bool(numba.config.ENABLE_CUDASIM)
#: threads per block of the 1-D launches
TPB = 128

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
# Dense synapses and per-feature gains ((F, N) activations)
# --------------------------------------------------------------------------
@cuda.jit
def _dense_forward_k(W, bias, use_bias, X, Y):
    n_out, N = Y.shape
    i = cuda.grid(1)
    if i >= n_out * N:
        return
    r = i // N
    n = i - r * N
    acc = bias[r] if use_bias else np.float32(0.0)
    for j in range(W.shape[1]):
        acc += W[r, j] * X[j, n]
    Y[r, n] = acc


@cuda.jit
def _dense_grad_k(G, X, out, accumulate):
    n_out, n_in = out.shape
    i = cuda.grid(1)
    if i >= n_out * n_in:
        return
    r = i // n_in
    j = i - r * n_in
    acc = np.float32(0.0)
    for n in range(G.shape[1]):
        acc += G[r, n] * X[j, n]
    if accumulate:
        out[r, j] += acc
    else:
        out[r, j] = acc


@cuda.jit
def _dense_backward_input_k(W, G, GX):
    n_in, N = GX.shape
    i = cuda.grid(1)
    if i >= n_in * N:
        return
    j = i // N
    n = i - j * N
    acc = np.float32(0.0)
    for r in range(W.shape[0]):
        acc += W[r, j] * G[r, n]
    GX[j, n] = acc


@cuda.jit
def _scale_rows_k(g, X, Y):
    F, N = Y.shape
    i = cuda.grid(1)
    if i >= F * N:
        return
    f = i // N
    Y[f, i - f * N] = g[f] * X[f, i - f * N]


@cuda.jit
def _row_dot_k(G, X, out, accumulate):
    f = cuda.grid(1)
    if f >= G.shape[0]:
        return
    acc = np.float32(0.0)
    for n in range(G.shape[1]):
        acc += G[f, n] * X[f, n]
    if accumulate:
        out[f] += acc
    else:
        out[f] = acc


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


def lif_forward(I, v0, prm, u_out, s_out, v_out):
    """LIF over T steps on the device (all (F, T, B), v0/v_out (F, B)); ``prm``: NeuronKernelParams.

    Readable twin: :func:`snn_core.kernels.reference.lif_forward` (CPU: :func:`snn_core.kernels.cpu.lif_forward`).
    The record is unpacked here, once: numba.cuda kernels take scalars.
    """
    _check_f32(I=I, v0=v0, u_out=u_out, s_out=s_out, v_out=v_out)
    F, T, B = I.shape
    _launch(_lif_forward_k, F * B, I, v0, F32(prm.alpha), F32(prm.k0), F32(prm.c), F32(prm.v_th), F32(prm.v_reset),
            int(prm.reset), int(prm.surrogate), F32(prm.surrogate_p), int(prm.smooth), u_out, s_out, v_out)


def lif_backward(gs, u, s, prm, gI):
    """BPTT through LIF neurons on the device. Readable twin: :func:`snn_core.kernels.reference.lif_backward`."""
    _check_f32(gs=gs, u=u, s=s, gI=gI)
    F, T, B = gs.shape
    _launch(_lif_backward_k, F * B, gs, u, s, F32(prm.alpha), F32(prm.c), F32(prm.v_th), F32(prm.v_reset),
            int(prm.reset), int(bool(prm.detach)), int(prm.surrogate), F32(prm.surrogate_p), gI)


def readout_forward(I, v0, prm, u_out):
    """Leaky integrator on the device. Readable twin: :func:`snn_core.kernels.reference.readout_forward`."""
    _check_f32(I=I, v0=v0, u_out=u_out)
    F, T, B = I.shape
    _launch(_readout_forward_k, F * B, I, v0, F32(prm.alpha), F32(prm.k0), F32(prm.c), u_out)


def readout_backward(gu, prm, gI):
    """BPTT through the leaky integrator. Readable twin: :func:`snn_core.kernels.reference.readout_backward`."""
    _check_f32(gu=gu, gI=gI)
    F, T, B = gu.shape
    _launch(_readout_backward_k, F * B, gu, F32(prm.alpha), F32(prm.c), gI)


def csr_forward(indptr, indices, data, bias, X, Y):
    """Y[r, :] = bias[r] + sum_k data[k] X[indices[k], :] (X (n_in, N), Y (n_out, N)).

    Readable twin: :func:`snn_core.kernels.reference.csr_forward`.
    """
    _check_f32(data=data, bias=bias, X=X, Y=Y)
    n_out, N = Y.shape
    _launch(_csr_forward_k, n_out * N, indptr, indices, data, bias, X, Y)


def csr_backward_input(t_indptr, t_indices, t_perm, data, G, GX):
    """GX = W^T G through the transposed structure. Readable twin: :func:`snn_core.kernels.reference.csr_backward_input_t`."""
    _check_f32(data=data, G=G, GX=GX)
    n_in, N = GX.shape
    _launch(_csr_backward_input_k, n_in * N, t_indptr, t_indices, t_perm, data, G, GX)


def csr_grad_at(indptr, indices, G, X, out, accumulate=False):
    """out[k] (+)= G[r, :] . X[indices[k], :] for every connection k (row r).

    Readable twin: :func:`snn_core.kernels.reference.csr_grad_at`.
    """
    _check_f32(G=G, X=X, out=out)
    _launch(_csr_grad_at_k, indices.shape[0], indptr, indices, G, X, out, int(bool(accumulate)))


def bias_grad(G, out, accumulate=False):
    """out[r] (+)= sum_n G[r, n]. Readable twin: ``G.sum(axis=1)`` (:meth:`snn_core.backends.base.Backend.row_sum`)."""
    _check_f32(G=G, out=out)
    _launch(_bias_grad_k, G.shape[0], G, out, int(bool(accumulate)))


def dense_forward(W, bias, X, Y):
    """Y = W X (+ bias) for a dense W. Readable twin: :meth:`snn_core.backends.base.Backend.dense_forward`."""
    _check_f32(W=W, X=X, Y=Y)
    n_out, N = Y.shape
    use_bias = bias is not None
    _launch(_dense_forward_k, n_out * N, W, bias if use_bias else W[:, 0], int(use_bias), X, Y)


def dense_grad(G, X, out, accumulate=False):
    """out (+)= G X^T. Readable twin: :meth:`snn_core.backends.base.Backend.dense_grad`."""
    _check_f32(G=G, X=X, out=out)
    _launch(_dense_grad_k, out.shape[0] * out.shape[1], G, X, out, int(bool(accumulate)))


def dense_backward_input(W, G, GX):
    """GX = W^T G. Readable twin: :meth:`snn_core.backends.base.Backend.dense_backward_input`."""
    _check_f32(W=W, G=G, GX=GX)
    _launch(_dense_backward_input_k, GX.shape[0] * GX.shape[1], W, G, GX)


def scale_rows(g, X, Y):
    """Y[f, :] = g[f] X[f, :]. Readable twin: :meth:`snn_core.backends.base.Backend.scale_rows`."""
    _check_f32(g=g, X=X, Y=Y)
    _launch(_scale_rows_k, Y.shape[0] * Y.shape[1], g, X, Y)


def row_dot(G, X, out, accumulate=False):
    """out[f] (+)= G[f, :] . X[f, :]. Readable twin: :meth:`snn_core.backends.base.Backend.row_dot`."""
    _check_f32(G=G, X=X, out=out)
    _launch(_row_dot_k, G.shape[0], G, X, out, int(bool(accumulate)))


def adam_update(w, g, m, v, lr, b1, b2, eps, bc1, bc2, wd):
    """In-place Adam step on 1-D device arrays. Readable twin: :func:`snn_core.kernels.reference.adam_update`."""
    w, g, m, v = _flat(w), _flat(g), _flat(m), _flat(v)
    _check_f32(w=w, g=g, m=m, v=v)
    _launch(_adam_k, w.shape[0], w, g, m, v, F32(lr), F32(b1), F32(b2), F32(eps), F32(bc1), F32(bc2), F32(wd))


def sgd_update(w, g, buf, lr, momentum, nesterov, wd):
    """In-place SGD step on 1-D device arrays. Readable twin: :func:`snn_core.kernels.reference.sgd_update`."""
    w, g, buf = _flat(w), _flat(g), _flat(buf)
    _check_f32(w=w, g=g, buf=buf)
    _launch(_sgd_k, w.shape[0], w, g, buf, F32(lr), F32(momentum), bool(nesterov), F32(wd))


def fill(a, value):
    """a[...] = value (device array, any shape, contiguous). Readable twin: ``a[...] = value`` (Backend.fill)."""
    a = _flat(a)
    _launch(_fill_k, a.shape[0], a, a.dtype.type(value))
