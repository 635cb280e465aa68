"""The backend interface: what a layer, an optimizer and the trainer may ask of a device.

A layer never touches a kernel module directly: it calls
``self.backend.<kernel>(...)`` with arrays the backend allocated
(``empty``/``zeros``/``to_device``) and gets host copies with ``to_host``.
A new layer therefore writes each of its kernels once per backend (a method
here, implemented by each subclass) and nothing else. Capabilities one
backend lacks are optional with a plain fallback *inside the backend*
(``pack_spikes`` returns None, ``csr_grad`` returns no row mask), never a
second code path in the layers.

Layout: activations are feature-major ``(F, T, B)`` C-contiguous buffers,
viewed as ``(F, N)``, ``N = T * B``, by the synaptic kernels; what a layer
returns is ``time_major(buf)``, a ``(T, B, F)`` view. CSR weights are their
three arrays (int32 ``indptr``/``indices``, float ``data``); ``t_indptr``,
``t_indices``, ``t_perm`` is the transposed structure
(:func:`snn_core.sparse.transpose_structure`). Neuron kernels take the
:class:`snn_core.neurons.NeuronKernelParams` record ``prm``. Every kernel
writes into output arrays given by the caller; ``accumulate`` means "add to
``out``" (False: overwrite), which is how the lazy ``Parameter.grad_is_zero``
flag reaches the kernels.

The host backends (``reference``, ``cpu``) share the NumPy array helpers
defined here; a device backend overrides them.
"""
from __future__ import annotations

import sys

import numpy as np

from ..kernels import reference as R


class BufferPool:
    """Output buffers that are reused once nobody references them any more.

    A fresh multi-MB array costs one page fault per 4 KiB page when it is
    first written (glibc returns large freed blocks to the OS), which on a
    VM cost more than the kernels themselves. A layer therefore takes its
    outputs from this pool: a buffer is handed out again only when its
    reference count shows that no caller, cache, recorded dict or view of it
    is alive (views keep their base alive), so an array returned to a user
    is never overwritten by a later call. ``alloc(shape, dtype)`` makes a
    new buffer (the backend's ``empty``).

    The pool keeps up to ``cap`` buffers and, when full, forgets the one
    free buffer used longest ago. Eight hold a LIF layer's three buffers
    for each of a training batch, an evaluation batch (the Trainer's is
    larger) and the smaller last batch of an epoch, so that alternating
    between them allocates nothing (with four, every evaluation
    re-allocated and re-faulted the training buffers: the main job's
    validation took 13.4 ms instead of 10.6-11.2).
    """

    def __init__(self, alloc, cap=8):
        self.alloc, self.cap = alloc, cap
        self._bufs = []  # least recently handed out first

    def get(self, shape, dtype):
        """A free buffer of this shape and dtype (new if none is free)."""
        shape, dtype = tuple(shape), np.dtype(dtype)
        bufs = self._bufs
        # a free buffer has two references here: the list's and getrefcount's argument
        for i in range(len(bufs)):
            if bufs[i].shape == shape and bufs[i].dtype == dtype and sys.getrefcount(bufs[i]) <= 2:
                buf = bufs.pop(i)
                bufs.append(buf)
                return buf
        if len(bufs) >= self.cap:
            free = [i for i in range(len(bufs)) if sys.getrefcount(bufs[i]) <= 2]
            # all in use: forget the oldest (its holders keep it alive; it is just not reused)
            del bufs[free[0] if free else 0]
        buf = self.alloc(shape, dtype)
        bufs.append(buf)
        return buf

    def clear(self):
        """Forget every buffer."""
        self._bufs = []


class RecentShapes:
    """Scratch arrays made per shape, the last ``keep`` shapes kept (least recently used forgotten).

    For a layer's internal scratch (not handed to callers) whose shape
    follows the batch: training, evaluation and an epoch's last batch then
    each keep theirs instead of re-allocating at every switch.
    """

    def __init__(self, keep=3):
        self.keep = keep
        self._by_shape = {}  # insertion order: least recently used first

    def get(self, shape, make):
        """The scratch for ``shape`` (``make(shape)`` builds it the first time)."""
        found = self._by_shape.pop(shape, None)
        if found is None:
            found = make(shape)
            if len(self._by_shape) >= self.keep:
                del self._by_shape[next(iter(self._by_shape))]
        self._by_shape[shape] = found
        return found


#: dtypes of spike arrays that layers take as input besides their float dtype: 0/1 (or small counts) stored in
#: one byte, 4x smaller than float32 (what :func:`~snn_core.data.bernoulli_encode` writes with ``dtype=np.uint8``)
SPIKE_DTYPES = (np.dtype(np.uint8), np.dtype(np.bool_))


def host_feature_major(x, n_features, dtype, where, spikes=None):
    """Validate a host ``(T, batch, n_features)`` array; return it as (F, T, B) C-contiguous.

    No copy when ``x`` already is a transposed view of a feature-major buffer
    of the returned dtype. ``spikes``: what a uint8 or bool ``x`` (a layer
    input in :data:`SPIKE_DTYPES`) becomes, ``dtype`` (converted, exactly)
    or ``np.uint8`` (kept, bool viewed as uint8); None (gradients) refuses
    such input like any other dtype than ``dtype``.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{where}: expected a numpy.ndarray of shape (T, batch, {n_features}), got {type(x).__name__}")
    if x.ndim != 3:
        raise ValueError(f"{where}: expected shape (T, batch, {n_features}), got {x.shape}")
    if x.shape[2] != n_features:
        raise ValueError(f"{where}: expected {n_features} features (last axis), got shape {x.shape}")
    if x.dtype != dtype:
        if spikes is None or x.dtype not in SPIKE_DTYPES:
            also = " or uint8/bool spikes" if spikes is not None else ""
            raise TypeError(f"{where}: expected dtype {dtype}{also}, got {x.dtype} (cast with x.astype(np.{dtype}))")
        if np.dtype(spikes) == np.uint8:
            return np.ascontiguousarray(x.transpose(2, 0, 1)).view(np.uint8)
        return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=dtype)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


class Backend:
    """Base class and interface. Subclasses implement the kernels; host backends inherit the arrays.

    Attributes
    ----------
    name : str
        ``"reference"``, ``"cpu"`` or ``"cuda"``.
    is_host : bool
        True when arrays are NumPy arrays in host memory (``to_host`` is free).
    dtypes : tuple of numpy dtypes
        The float dtypes this backend computes in.
    row_masks : bool
        True when ``lif_backward`` takes ``live``/``live_out``, ``csr_grad``
        takes ``live`` and ``csr_backward_input`` takes ``live_out``: uint8
        row masks through which layers pass on which gradient rows are known
        to be zero, so that those rows are neither read nor written (rules:
        :func:`snn_core.kernels.cpu.lif_backward`); and when ``lif_forward``,
        ``csr_forward`` and ``pack_spikes`` take ``live``: the rows of the
        forward whose values nothing reads, which are then not computed
        (:func:`snn_core.kernels.cpu.lif_forward`). Only ``cpu``.
    packs_uint8 : bool
        True when ``pack_spikes`` takes a uint8 spike matrix as it is, so a
        sparse layer's uint8 input is neither converted to float nor copied
        when it packs (and converted when it does not). Only ``cpu``.
    """

    name = "base"
    is_host = True
    dtypes = (np.dtype(np.float32), np.dtype(np.float64))
    row_masks = False
    packs_uint8 = False

    # -- arrays ----------------------------------------------------------------
    def empty(self, shape, dtype):
        """An uninitialised C-contiguous array of the backend."""
        return np.empty(shape, dtype)

    def zeros(self, shape, dtype):
        """A zero-filled array of the backend."""
        return np.zeros(shape, dtype)

    def full(self, shape, value, dtype):
        """An array of the backend filled with ``value``."""
        return np.full(shape, value, dtype)

    def to_device(self, a, dtype=None):
        """The backend's copy of host array ``a`` (host backends: ``a`` itself when already C-contiguous)."""
        return np.ascontiguousarray(a, dtype)

    def to_host(self, a):
        """A NumPy array with the values of backend array ``a`` (host backends: ``a`` itself, no copy)."""
        return a

    def is_array(self, a):
        """True when ``a`` is an array of this backend."""
        return isinstance(a, np.ndarray)

    def fill(self, a, value):
        """``a[...] = value`` in place."""
        a[...] = value

    def pool(self):
        """A new :class:`BufferPool` allocating this backend's arrays."""
        return BufferPool(self.empty)

    def feature_major(self, x, n_features, dtype, where, spikes=None):
        """Validate a ``(T, batch, n_features)`` input; return the (F, T, B) buffer (uploading host data).

        ``spikes``: what uint8/bool input becomes (:func:`host_feature_major`);
        layers pass their dtype for their input (or ``np.uint8`` where the
        backend's :attr:`packs_uint8` says it packs such input as it is) and
        nothing for gradients.
        """
        return host_feature_major(x, n_features, dtype, where, spikes)

    def time_major(self, buf):
        """What a layer returns: the ``(T, B, F)`` view of a feature-major (F, T, B) buffer."""
        return buf.transpose(1, 2, 0)

    def check_dtype(self, dtype, where):
        """Raise TypeError unless this backend computes in ``dtype``."""
        if np.dtype(dtype) not in self.dtypes:
            raise TypeError(f"{where}: the {self.name} backend computes in "
                            f"{' or '.join(str(d) for d in self.dtypes)}, not {np.dtype(dtype)}")

    def synchronize(self):
        """Wait for queued device work (no-op on host backends); for timing."""

    # -- kernels (each backend implements them) -----------------------------------
    def lif_forward(self, I, v0, prm, u, s, v_last):
        """LIF over T steps: writes u (pre-reset membrane), s (spikes) (F, T, B) and v_last (F, B)."""
        raise NotImplementedError

    def lif_backward(self, gs, u, s, prm, gI):
        """BPTT through LIF neurons: writes gI = dL/dI from gs = dL/ds (docs/bptt.md)."""
        raise NotImplementedError

    def readout_forward(self, I, v0, prm, u):
        """Leaky integrator over T steps: writes the membrane u (F, T, B)."""
        raise NotImplementedError

    def readout_backward(self, gu, prm, gI):
        """BPTT through the leaky integrator: writes gI from gu = dL/du."""
        raise NotImplementedError

    def pack_spikes(self, X, n_out, nnz, scratch, force=None):
        """Optional: a spike pack of X (n_in, N) that csr_forward/csr_grad may use, or None.

        ``scratch`` is a dict the calling layer keeps (reused buffers);
        ``force`` is the layer's ``spike_input`` (None: the backend decides,
        False: never). The default returns None: every input takes the float path.
        """
        return None

    def csr_forward(self, indptr, indices, data, bias, X, Y, pack=None, scratch=None):
        """Y (n_out, N) = W X + bias[:, None] for CSR W (n_out, n_in) and X (n_in, N)."""
        raise NotImplementedError

    def csr_grad(self, indptr, indices, G, X, out, accumulate, gb, pack=None, scratch=None):
        """dL/dW at the connections into ``out`` (nnz,) and the bias gradient ``gb`` = G.sum(1) (overwritten).

        Returns an optional row mask ``rownz`` (uint8, rows of G with a
        nonzero) for :meth:`csr_backward_input`, or None.
        """
        raise NotImplementedError

    def csr_backward_input(self, t_indptr, t_indices, t_perm, data, G, GX, rownz=None):
        """GX (n_in, N) = W^T G through the transposed structure (rows with rownz == 0 may be skipped)."""
        raise NotImplementedError

    def dense_forward(self, W, bias, X, Y):
        """Y = W X (+ bias[:, None] unless bias is None) for a dense W (n_out, n_in)."""
        np.matmul(W, X, out=Y)
        if bias is not None:
            Y += bias[:, None]

    def dense_grad(self, G, X, out, accumulate):
        """out (n_out, n_in) (+)= G X^T."""
        if accumulate:
            out += G @ X.T
        else:
            np.matmul(G, X.T, out=out)

    def dense_backward_input(self, W, G, GX):
        """GX (n_in, N) = W^T G."""
        np.matmul(W.T, G, out=GX)

    def row_sum(self, G, out, accumulate):
        """out (n,) (+)= G.sum(axis=1) for G (n, N)."""
        if accumulate:
            out += G.sum(axis=1)
        else:
            G.sum(axis=1, out=out)

    def time_sum(self, G3, out):
        """out (F, B) = G3 (F, T, B) summed over time, step after step (a repeated frame's gradient)."""
        out[...] = R.time_sum(G3)

    def scale_rows(self, g, X, Y):
        """Y[f, :] = g[f] * X[f, :] for X, Y (F, N) (a per-feature gain)."""
        np.multiply(g[:, None], X, out=Y)

    def row_dot(self, G, X, out, accumulate):
        """out[f] (+)= sum_n G[f, n] X[f, n] (the gradient of a per-feature gain)."""
        d = np.einsum("fn,fn->f", G, X)
        if accumulate:
            out += d
        else:
            out[...] = d

    def adam_update(self, w, g, m, v, lr, b1, b2, eps, bc1, bc2, wd):
        """One Adam step in place on 1-D w, m, v from gradient g (bias corrections bc1, bc2 given)."""
        raise NotImplementedError

    def sgd_update(self, w, g, buf, lr, momentum, nesterov, wd):
        """One SGD step in place on 1-D w (momentum buffer buf, ignored when momentum == 0)."""
        raise NotImplementedError

    # -- convolution, pooling, batch norm (geometry g: snn_core.geometry.ConvGeometry) -------
    # X (c_in*h*w, N), Y/G (c_out*oh*ow, N) feature-major; the kernel matrix is
    # (c_out, c_in*kh*kw). Host backends share the NumPy versions below (the
    # twins themselves: im2col + BLAS for dense convolutions, vectorised
    # reshapes for pooling and batch norm); the sparse convolution is
    # per backend (event-driven on cpu).
    def conv_forward(self, g, indptr, indices, t_indptr, t_indices, t_perm, data, bias, X, Y, scratch):
        """Y = sparse conv(X) + bias[c_out] for the CSR kernel matrix; ``scratch``: the layer's dict."""
        raise NotImplementedError

    def conv_grad(self, g, indptr, indices, t_indptr, t_indices, t_perm, G, X, out, accumulate, gb, scratch):
        """dL/dW at the connections into ``out`` (nnz,), per-channel bias gradient into ``gb`` (overwritten)."""
        raise NotImplementedError

    def conv_backward_input(self, g, indptr, indices, t_indptr, t_indices, t_perm, data, G, GX):
        """GX (c_in*h*w, N) = dL/dX of the sparse convolution."""
        raise NotImplementedError

    def dense_conv_forward(self, g, W, bias, X, Y):
        """Y = conv(X) with the dense kernel matrix W (c_out, c_in*kh*kw) (+ bias[c_out] unless None)."""
        Y[...] = R.dense_conv_forward(W, bias, X, g)

    def dense_conv_grad(self, g, G, X, out, accumulate):
        """out (c_out, c_in*kh*kw) (+)= dL/dW."""
        d = R.dense_conv_grad(G, X, g)
        if accumulate:
            out += d
        else:
            out[...] = d

    def dense_conv_backward_input(self, g, W, G, GX):
        """GX (c_in*h*w, N) = dL/dX of the dense convolution."""
        GX[...] = R.dense_conv_backward_input(W, G, g)

    def channel_sum(self, g, G, out, accumulate):
        """out (c_out,) (+)= G summed over positions and columns (a per-channel bias gradient)."""
        d = R.channel_sum(G, g)
        if accumulate:
            out += d
        else:
            out[...] = d

    def avgpool_forward(self, g, X, Y):
        """Y (c*oh*ow, N) = mean over every non-overlapping k x k window of X."""
        Y[...] = R.avgpool_forward(X, g)

    def avgpool_backward(self, g, G, GX):
        """GX (c*h*w, N): each window's gradient spread over its k*k inputs."""
        GX[...] = R.avgpool_backward(G, g)

    def maxpool_forward(self, g, X, Y, arg):
        """Y = max over every window; ``arg`` (uint8, Y's shape) = position of the max in its window."""
        Y[...], arg[...] = R.maxpool_forward(X, g)

    def maxpool_backward(self, g, G, arg, GX):
        """GX: each window's gradient to the input that was its max."""
        GX[...] = R.maxpool_backward(G, arg, g)

    def bn_stats(self, X, mean, var):
        """Per-row mean and biased variance of X (C, M) into ``mean``, ``var`` (C,)."""
        m, v = R.bn_stats(X)
        mean[...], var[...] = m, v

    def bn_apply(self, X, scale, shift, Y):
        """Y (C, M) = scale[c] X + shift[c]."""
        Y[...] = R.bn_apply(X, scale, shift)

    def bn_backward(self, G, X, mean, invstd, gamma, GX, ggamma, gbeta, accumulate):
        """Batch-statistics BN backward: GX (C, M) and the gamma/beta gradients ((+)= by ``accumulate``)."""
        gx, gg, gb = R.bn_backward(G, X, mean, invstd, gamma)
        GX[...] = gx
        if accumulate:
            ggamma += gg
            gbeta += gb
        else:
            ggamma[...], gbeta[...] = gg, gb

    def add(self, A, B, out):
        """out = A + B (same shapes; the residual shortcut)."""
        np.add(A, B, out=out)

    def nonfinite_count(self, a):
        """Number of NaN/Inf entries of ``a``."""
        return int(np.count_nonzero(~np.isfinite(self.to_host(a))))

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}>"


class KernelModuleBackend(Backend):
    """A backend whose neuron and optimizer kernels are functions of one kernel module (``kernels``)
    with the interface's own signatures: ``cpu`` and ``cuda`` share these delegations."""

    #: the kernel module (``snn_core.kernels.cpu`` or ``snn_core.kernels.cuda``)
    kernels = None

    def lif_forward(self, I, v0, prm, u, s, v_last):
        self.kernels.lif_forward(I, v0, prm, u, s, v_last)

    def lif_backward(self, gs, u, s, prm, gI):
        self.kernels.lif_backward(gs, u, s, prm, gI)

    def readout_forward(self, I, v0, prm, u):
        self.kernels.readout_forward(I, v0, prm, u)

    def readout_backward(self, gu, prm, gI):
        self.kernels.readout_backward(gu, prm, gI)

    def adam_update(self, w, g, m, v, lr, b1, b2, eps, bc1, bc2, wd):
        self.kernels.adam_update(w, g, m, v, lr, b1, b2, eps, bc1, bc2, wd)

    def sgd_update(self, w, g, buf, lr, momentum, nesterov, wd):
        self.kernels.sgd_update(w, g, buf, lr, momentum, nesterov, wd)
