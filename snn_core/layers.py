"""Layers with explicit ``forward`` / ``backward``.

Every layer maps an array indexed ``(T, batch, features)`` to another, over
*all* T steps in one call: synapses are the same at every step, so a synaptic
layer handles the whole sequence at once, and a neuron layer runs its time
loop inside one compiled kernel. (A layer with recurrent connections would
own its time loop the same way; nothing else changes.)

Memory layout. Arrays index time-major, ``x[t, b, f]``, but the engine
*stores* them feature-major: outputs are transposed views of C-contiguous
``(features, T, batch)`` buffers, so a synapse touches one contiguous row of
``T * batch`` values. Any layout is accepted as input (a time-major array is
copied once into feature-major order); feeding a layer's output to the next
layer costs no copy. Encoders in :mod:`snn_core.data.encoders` produce
feature-major arrays directly.

The layer contract (what the network, optimizers and rewiring rely on):

- ``forward(x, record=False) -> y`` caches what ``backward`` needs on the
  instance (never on the class) and, with ``record=True``, leaves
  ``self.recorded`` (a dict of ``(T, batch, features)`` arrays);
- ``backward(grad_y) -> grad_x`` accumulates parameter gradients and returns
  the gradient w.r.t. the input (``None`` when ``need_input_grad`` is False);
- ``parameters()`` lists :class:`~snn_core.parameter.Parameter` objects;
- ``in_features`` / ``out_features`` give the sizes for shape checks.

Bad input raises ``TypeError`` (wrong type/dtype) or ``ValueError`` (shape,
non-finite values) naming the layer and what was expected.
"""
from __future__ import annotations

import sys

import numpy as np

from .kernels import cpu
from .neurons import LIFParams
from .parameter import Parameter
from .sparse import canonical_csr, check_csr, csr_from_arrays, fan_in_uniform, random_connectivity, transpose_structure

FLOAT_DTYPES = (np.float32, np.float64)

SPIKE_PACK_MIN_FANOUT = 4.0
"""SparseLinear packs a spike input (uint8 copy + per-input active-column
lists, :func:`snn_core.kernels.cpu.spike_pack`) when it has at least this
many connections per input on average (or when ``spike_input`` is True)."""
SPIKE_LIST_RATE = 0.03
"""Inputs active in fewer than this fraction of the T*batch columns are
handled spike by spike (active-column lists); the others stream uint8 rows."""


def _check_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype.type not in FLOAT_DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    return dtype


def feature_major(x, n_features, dtype, where):
    """Validate a ``(T, batch, n_features)`` array; return it as (F, T, B) C-contiguous.

    No copy when ``x`` already is a transposed view of a feature-major buffer.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{where}: expected a numpy.ndarray of shape (T, batch, {n_features}), got {type(x).__name__}")
    if x.ndim != 3:
        raise ValueError(f"{where}: expected shape (T, batch, {n_features}), got {x.shape}")
    if x.shape[2] != n_features:
        raise ValueError(f"{where}: expected {n_features} features (last axis), got shape {x.shape}")
    if x.dtype != dtype:
        raise TypeError(f"{where}: expected dtype {dtype}, got {x.dtype} (cast with x.astype(np.{dtype}))")
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def time_major(buf):
    """View a feature-major (F, T, B) buffer as (T, B, F)."""
    return buf.transpose(1, 2, 0)


def check_finite(arr, what):
    """Raise ValueError if ``arr`` holds NaN or Inf (one cheap reduction first)."""
    if isinstance(arr, np.ndarray) and arr.dtype.type in FLOAT_DTYPES:
        # one vectorised pass over the raw bits (4x faster than a float sum)
        n_bad = cpu._nonfinite_count(arr)
        if n_bad:
            raise ValueError(f"{what}: contains {n_bad} NaN/Inf value(s)")
        return
    if not np.isfinite(arr.sum(dtype=np.float64)):
        bad = ~np.isfinite(arr)
        if bad.any():
            raise ValueError(f"{what}: contains {int(bad.sum())} NaN/Inf value(s)")


class _BufferPool:
    """Output buffers that are reused once nobody references them any more.

    A fresh multi-MB array costs one page fault per 4 KiB page when it is
    first written (glibc returns large freed blocks to the OS), which on a
    VM cost more than the kernels themselves. A layer therefore takes its
    outputs from this pool: a buffer is handed out again only when its
    reference count shows that no caller, cache, recorded dict or view of it
    is alive (views keep their base alive), so an array returned to a user
    is never overwritten by a later call.
    """

    def __init__(self, cap=4):
        self.cap = cap
        self._bufs = []

    def get(self, shape, dtype):
        for buf in self._bufs:
            # references: the list, the loop variable, getrefcount's argument
            if buf.shape == shape and buf.dtype == dtype and sys.getrefcount(buf) <= 3:
                return buf
        buf = np.empty(shape, dtype)
        if len(self._bufs) >= self.cap:
            self._bufs = [b for b in self._bufs if sys.getrefcount(b) > 3][-(self.cap - 1):]
        self._bufs.append(buf)
        return buf

    def clear(self):
        self._bufs = []


def _pool(layer):
    pool = layer.__dict__.get("_buffers")
    if pool is None:
        pool = layer._buffers = _BufferPool()
    return pool


class Layer:
    """Base class: see the module docstring for the contract."""

    in_features: int
    out_features: int
    name: str = ""
    #: False for the first layer, whose input (the data) needs no gradient
    need_input_grad: bool = True
    #: True when every output value is exactly 0 or 1 (a spiking layer);
    #: the next synaptic layer may then take its spike-driven path
    emits_spikes: bool = False

    def __init__(self):
        self.recorded = {}
        self._cache = None

    def parameters(self):
        """Trainable :class:`~snn_core.parameter.Parameter` objects (none for neurons)."""
        return []

    def forward(self, x, record=False):
        """Map ``x`` (T, batch, in_features) to (T, batch, out_features) over all steps."""
        raise NotImplementedError

    def backward(self, grad_y):
        """Accumulate parameter gradients from dL/dy; return dL/dx (or None)."""
        raise NotImplementedError

    def reset_state(self):
        """Forget cached activations (state never carries across calls anyway)."""
        self._cache = None
        self.recorded = {}
        _pool(self).clear()

    def _needs_cache(self):
        if self._cache is None:
            raise RuntimeError(f"{self.name or type(self).__name__}: backward called before forward")
        return self._cache

    def __repr__(self):
        return f"{type(self).__name__}({self.in_features} -> {self.out_features})"


# --------------------------------------------------------------------------
# Synapses
# --------------------------------------------------------------------------
class Linear(Layer):
    """Dense synapses ``I[t] = W x[t] + b`` with BLAS.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    seed : int or numpy.random.Generator
    gain : float
        Initial weights U(-a, a), ``a = gain * sqrt(3 / in_features)``.
    dtype : float32 (default) or float64
    weight : ndarray (out_features, in_features), optional
        Initial weights instead of the random ones.
    """

    def __init__(self, in_features, out_features, bias=True, seed=None, gain=1.0, dtype=np.float32, weight=None, name="linear"):
        super().__init__()
        self.dtype = _check_dtype(dtype)
        self.in_features, self.out_features, self.name = int(in_features), int(out_features), name
        rng = np.random.default_rng(seed)
        if weight is None:
            a = gain * np.sqrt(3.0 / in_features)
            weight = rng.uniform(-a, a, size=(out_features, in_features))
        weight = np.array(weight, dtype=self.dtype, order="C", copy=True)  # never alias the caller's array
        if weight.shape != (self.out_features, self.in_features):
            raise ValueError(f"{name}.weight: expected shape {(out_features, in_features)}, got {weight.shape}")
        check_finite(weight, f"{name}.weight")
        self.weight = Parameter(weight, f"{name}.weight")
        self.bias = Parameter(np.zeros(out_features, self.dtype), f"{name}.bias", decay=False) if bias else None

    def parameters(self):
        """``[weight, bias]`` (bias omitted when ``bias=False``)."""
        return [self.weight] + ([self.bias] if self.bias is not None else [])

    @property
    def nnz(self):
        """Number of connections: every weight of a dense layer."""
        return self.weight.value.size

    def forward(self, x, record=False):
        X = feature_major(x, self.in_features, self.dtype, f"{self.name} input").reshape(self.in_features, -1)
        Y = np.matmul(self.weight.value, X, out=_pool(self).get((self.out_features, X.shape[1]), self.dtype))
        if self.bias is not None:
            Y += self.bias.value[:, None]
        self._cache = (X, x.shape)
        out = time_major(Y.reshape(self.out_features, x.shape[0], x.shape[1]))
        self.recorded = {"current": out} if record else {}
        return out

    def backward(self, grad_y):
        X, shape = self._needs_cache()
        G = feature_major(grad_y, self.out_features, self.dtype, f"{self.name} grad").reshape(self.out_features, -1)
        w = self.weight
        if w.grad_is_zero:
            np.matmul(G, X.T, out=w.grad)
            w.grad_is_zero = False
        else:
            w.accumulate(G @ X.T)
        if self.bias is not None:
            self.bias.accumulate(G.sum(axis=1))
        if not self.need_input_grad:
            return None
        GX = np.matmul(w.value.T, G, out=_pool(self).get((self.in_features, G.shape[1]), self.dtype))
        return time_major(GX.reshape(self.in_features, shape[0], shape[1]))


class SparseLinear(Layer):
    """Sparse synapses ``I[t] = W x[t] + b`` with W a CSR matrix (n_out, n_in).

    Only existing connections cost time or memory: the forward product, the
    weight gradient (computed only at the connections, never as a dense
    ``n_out x n_in`` array) and the input gradient (through the transposed
    structure) are all O(nnz * T * batch).

    Parameters
    ----------
    in_features, out_features : int
    density : float in (0, 1]
        Fraction of the ``n_out * n_in`` possible connections present,
        placed uniformly at random (exactly ``round(density * n_out * n_in)``).
    bias : bool
    seed : int or numpy.random.Generator
    gain : float
        Weights U(-a, a) with ``a = gain * sqrt(3 / fan_in)`` where ``fan_in``
        is each output neuron's actual number of connections.
    dtype : float32 (default) or float64
    weight : scipy.sparse matrix or dense array (out_features, in_features), optional
        Use this structure and these values instead (every stored entry is a
        connection, explicit zeros included).

    Attributes
    ----------
    weight : scipy.sparse.csr_matrix
        Canonical CSR (int32 sorted indices, no duplicates); ``weight.data`` is
        the same array as ``weight_param.value``.
    weight_param, bias : Parameter
    spike_input : None, True or False
        Spike-driven path. With an input of only 0/1 values (spikes, as LIF
        layers and the Bernoulli encoder produce) the forward product and the
        weight gradient cost O(connections x spikes) instead of
        O(nnz * T * batch): the input is packed once per forward (uint8 copy,
        bit words, per-input active-column lists) and the pack is reused by
        backward. None (default): used whenever the layer has at least
        ``SPIKE_PACK_MIN_FANOUT`` connections per input and the input turns
        out to be binary (checked while packing, at no extra pass); True:
        pack regardless of fan-out; False: never. Results equal the plain
        path up to float rounding.
    """

    def __init__(self, in_features, out_features, density=1.0, bias=True, seed=None, gain=1.0,
                 dtype=np.float32, weight=None, name="sparse_linear"):
        super().__init__()
        self.dtype = _check_dtype(dtype)
        self.in_features, self.out_features, self.name = int(in_features), int(out_features), name
        rng = np.random.default_rng(seed)
        if weight is None:
            indptr, indices = random_connectivity(self.out_features, self.in_features, density, rng)
            data = fan_in_uniform(indptr, rng, gain, self.dtype)
            weight = csr_from_arrays(indptr, indices, data, (self.out_features, self.in_features))
        weight = canonical_csr(weight, self.dtype)
        if weight.shape != (self.out_features, self.in_features):
            raise ValueError(f"{name}.weight: expected shape {(self.out_features, self.in_features)}, got {weight.shape}")
        self.weight_param = Parameter(weight.data, f"{name}.weight")
        self.bias = Parameter(np.zeros(out_features, self.dtype), f"{name}.bias", decay=False) if bias else None
        self._set_weight(weight)
        #: set True (e.g. by gradient-based growth) to keep the output gradient
        #: of the next backward so that :meth:`dense_weight_grad` can run
        self.retain_output_grad = False
        self._last_output_grad = None
        #: spike-driven path: None = use it whenever the input holds only 0/1
        #: (checked for free while packing), False = never, True = pack even
        #: when the layer has few connections per input
        self.spike_input = None
        self._pack_buf = None
        self._split_buf = None
        self._row_buf = None
        self._zeros = None

    # -- structure ---------------------------------------------------------
    def _set_weight(self, weight):
        check_finite(weight.data, f"{self.name}.weight")
        self.weight = weight
        self.weight_param.replace(weight.data)
        self._transpose = None

    def set_connections(self, indptr, indices, data):
        """Replace the structure and values (used by rewiring).

        The arrays must already be canonical (validated here). Gradients are
        reset; the caller remaps optimizer state.
        """
        indptr, indices = np.asarray(indptr, np.int32), np.asarray(indices, np.int32)
        data = np.ascontiguousarray(data, self.dtype)
        if len(data) != len(indices):
            raise ValueError(f"{self.name}: {len(data)} weights for {len(indices)} connections")
        check_csr(indptr, indices, self.weight.shape)  # before scipy sees a damaged structure
        w = csr_from_arrays(indptr, indices, data, self.weight.shape)
        self._set_weight(canonical_csr(w, self.dtype))

    @property
    def nnz(self):
        """Number of existing connections (stored CSR entries, zeros included)."""
        return self.weight.nnz

    @property
    def density(self):
        """``nnz / (out_features * in_features)``."""
        return self.weight.nnz / (self.in_features * self.out_features)

    def transpose_structure(self):
        """Cached (t_indptr, t_indices, perm) of W^T; rebuilt after rewiring."""
        if self._transpose is None:
            self._transpose = transpose_structure(self.weight.indptr, self.weight.indices, self.in_features)
        return self._transpose

    def parameters(self):
        return [self.weight_param] + ([self.bias] if self.bias is not None else [])

    # -- compute -----------------------------------------------------------
    def _pack(self, X):
        """Spike-pack X (n_in, N) into reused scratch, or None if not worth it / not spikes."""
        if self.spike_input is False or X.size == 0:
            return None
        if self.spike_input is None and self.weight.nnz < SPIKE_PACK_MIN_FANOUT * self.in_features:
            return None  # few connections per input: the float kernel is as cheap as packing
        if self._pack_buf is None or self._pack_buf[0].shape != X.shape:
            n_in, N = X.shape
            self._pack_buf = (np.empty(X.shape, np.uint8), np.empty(n_in, np.int32), np.empty(X.shape, np.int32),
                              np.empty((n_in, (N + 15) // 16), np.uint16))
        X8, cnt, cols, Xb = self._pack_buf
        thr = max(1, int(X.shape[1] * SPIKE_LIST_RATE))
        if cpu.spike_pack(X, X8, cnt, cols, thr, Xb):
            return None  # some value is neither 0 nor 1: not a spike train
        w = self.weight
        work = cpu.spike_work_ns(self.out_features, w.nnz, X.shape[0], X.shape[1], int(cnt.sum()))
        if self._split_buf is None or self._split_buf.size < 2 * w.nnz:
            self._split_buf = np.empty(max(2 * w.nnz, 1), np.int32)
        return X8, cnt, cols, thr, work, Xb

    def _scratch_rows(self):
        if self._row_buf is None:
            self._row_buf = (np.empty(self.out_features, self.dtype), np.empty(self.out_features, np.uint8))
        return self._row_buf

    def forward(self, x, record=False):
        X = feature_major(x, self.in_features, self.dtype, f"{self.name} input").reshape(self.in_features, -1)
        w = self.weight
        Y = _pool(self).get((self.out_features, X.shape[1]), self.dtype)
        bias = self.bias.value if self.bias is not None else self._zero_bias()
        pack = self._pack(X)
        if pack is not None:
            X8, cnt, cols, thr, work, Xb = pack
            cpu.csr_forward_spikes(w.indptr, w.indices, w.data, bias, X8, cnt, cols, thr, Y, work, Xb,
                                   self._split_buf)
        else:
            cpu.csr_forward(w.indptr, w.indices, w.data, bias, X, Y)
        self._cache = (X, x.shape, pack)
        out = time_major(Y.reshape(self.out_features, x.shape[0], x.shape[1]))
        self.recorded = {"current": out} if record else {}  # the input current I[t] of the next layer
        return out

    def _zero_bias(self):
        if self._zeros is None:
            self._zeros = np.zeros(self.out_features, self.dtype)
        return self._zeros

    def backward(self, grad_y):
        X, shape, pack = self._needs_cache()
        G = feature_major(grad_y, self.out_features, self.dtype, f"{self.name} grad").reshape(self.out_features, -1)
        w, p = self.weight, self.weight_param
        gb, rownz = self._scratch_rows()
        if pack is not None:
            X8, cnt, cols, thr, work, Xb = pack
            if self._split_buf is None or self._split_buf.size < 2 * w.nnz:  # rewired since the forward
                self._split_buf = np.empty(max(2 * w.nnz, 1), np.int32)
            cpu.csr_grad_spikes(w.indptr, w.indices, X8, cnt, cols, thr, G, p.grad, not p.grad_is_zero, gb, rownz,
                                work, Xb, self._split_buf)
        else:
            cpu.csr_grad_dense(w.indptr, w.indices, G, X, p.grad, not p.grad_is_zero, gb, rownz)
        p.grad_is_zero = False
        if self.bias is not None:
            self.bias.accumulate(gb)
        if self.retain_output_grad:
            self._last_output_grad = G
        if not self.need_input_grad:
            return None
        t_indptr, t_indices, perm = self.transpose_structure()
        GX = _pool(self).get((self.in_features, G.shape[1]), self.dtype)
        cpu.csr_backward_input_nz(t_indptr, t_indices, perm, w.data, G, rownz, GX)
        return time_major(GX.reshape(self.in_features, shape[0], shape[1]))

    def dense_weight_grad(self):
        """dL/dW at *every* position (n_out, n_in) from the last backward.

        The only place a dense-sized gradient exists (gradient-based growth at
        rewiring iterations). Requires ``retain_output_grad = True`` before
        that backward; the retained gradient is released here.
        """
        if self._last_output_grad is None or self._cache is None:
            raise RuntimeError(f"{self.name}: set retain_output_grad=True and run forward/backward first")
        G, X = self._last_output_grad, self._cache[0]
        self._last_output_grad = None
        return G @ X.T


# --------------------------------------------------------------------------
# Neurons
# --------------------------------------------------------------------------
class _Neurons(Layer):
    def __init__(self, n, params=None, dtype=np.float32, name="lif"):
        super().__init__()
        self.params = LIFParams() if params is None else params
        if not isinstance(self.params, LIFParams):
            raise TypeError(f"{name}.params: expected LIFParams, got {type(self.params).__name__}")
        self.dtype = _check_dtype(dtype)
        self.in_features = self.out_features = int(n)
        self.name = name

    def _scalars(self):
        p, f = self.params, self.dtype.type
        return f(p.alpha), f((1.0 - p.alpha) * p.v_rest), f(p.c)

    def _initial(self, v0, batch):
        if v0 is None:
            return np.full((self.out_features, batch), self.params.v_rest, self.dtype)
        v0 = np.asarray(v0)
        if v0.shape != (batch, self.out_features):
            raise ValueError(f"{self.name} v0: expected shape {(batch, self.out_features)}, got {v0.shape}")
        return np.ascontiguousarray(v0.T, dtype=self.dtype)

    def __repr__(self):
        return f"{type(self).__name__}({self.out_features}, {self.params})"


class LIF(_Neurons):
    """A population of LIF neurons (Euler step in :mod:`snn_core.neurons`).

    ``forward(I)`` maps input currents ``(T, batch, n)`` to spikes of the
    same shape (values 0/1 in the layer's dtype). The membrane starts at
    ``v_rest`` at every call unless ``v0`` (batch, n) is given: no state leaks
    between batches or between networks. After ``forward(..., record=True)``,
    ``recorded`` holds ``u`` (membrane before reset, what the threshold
    sees), ``v`` (after reset) and ``spikes``, each ``(T, batch, n)``.
    ``v_last`` is the final membrane (batch, n) of the last call.
    """

    @property
    def emits_spikes(self):
        """True: outputs are exactly 0/1 (False in the test-only smooth mode)."""
        return self.params.spike_fn == "heaviside"

    def forward(self, x, record=False, v0=None):
        I = feature_major(x, self.in_features, self.dtype, f"{self.name} input")
        F, T, B = I.shape
        p, f = self.params, self.dtype.type
        alpha, k0, c = self._scalars()
        reset, sur, smooth = p.codes()
        # u is internal (kept for backward) and reused across calls unless it
        # is recorded; the returned spikes and v_last are always new arrays.
        u = np.empty_like(I) if record else self._scratch_u(I.shape)
        s, v_last = _pool(self).get(I.shape, self.dtype), np.empty((F, B), self.dtype)
        cpu.lif_forward(I, self._initial(v0, B), alpha, k0, c, f(p.v_th), f(p.v_reset), reset, sur,
                        f(p.surrogate_p), smooth, u, s, v_last)
        self._cache = (u, s)
        self.v_last = v_last.T
        if record:
            if p.reset == "hard":
                v = u * (1 - s) + f(p.v_reset) * s
            elif p.reset == "soft":
                v = u - f(p.v_th) * s
            else:
                v = u.copy()
            self.recorded = {"u": time_major(u), "v": time_major(v), "spikes": time_major(s)}
        return time_major(s)

    def _scratch_u(self, shape):
        buf = getattr(self, "_u_buf", None)
        if buf is None or buf.shape != shape:
            buf = self._u_buf = np.empty(shape, self.dtype)
        return buf

    def backward(self, grad_y):
        u, s = self._needs_cache()
        gs = feature_major(grad_y, self.out_features, self.dtype, f"{self.name} grad")
        p, f = self.params, self.dtype.type
        alpha, _, c = self._scalars()
        reset, sur, _ = p.codes()
        gI = _pool(self).get(gs.shape, self.dtype)
        cpu.lif_backward(gs, u, s, alpha, c, f(p.v_th), f(p.v_reset), reset, bool(p.detach_reset), sur,
                         f(p.surrogate_p), gI)
        return time_major(gI)


class Readout(_Neurons):
    """Non-spiking leaky integrator: the LIF membrane without threshold/reset.

    ``forward(I)`` returns the membrane ``u`` at every step, ``(T, batch, n)``,
    for membrane-based losses (e.g. cross-entropy on its time average).
    """

    def __init__(self, n, params=None, dtype=np.float32, name="readout"):
        super().__init__(n, params, dtype, name)

    def forward(self, x, record=False, v0=None):
        I = feature_major(x, self.in_features, self.dtype, f"{self.name} input")
        alpha, k0, c = self._scalars()
        u = _pool(self).get(I.shape, self.dtype)
        cpu.readout_forward(I, self._initial(v0, I.shape[2]), alpha, k0, c, u)
        self._cache = True
        if record:
            self.recorded = {"u": time_major(u)}
        return time_major(u)

    def backward(self, grad_y):
        self._needs_cache()
        gu = feature_major(grad_y, self.out_features, self.dtype, f"{self.name} grad")
        alpha, _, c = self._scalars()
        gI = _pool(self).get(gu.shape, self.dtype)
        cpu.readout_backward(gu, alpha, c, gI)
        return time_major(gI)
