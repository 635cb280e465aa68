"""The ``cuda`` backend: numba.cuda device arrays and the kernels of :mod:`snn_core.kernels.cuda`.

Importing this module needs the ``numba-cuda`` package;
:func:`snn_core.backends.get_backend` checks first that a GPU (or the CUDA
simulator, ``NUMBA_ENABLE_CUDASIM=1``) is usable. Float32 only.

What a layer returns on this backend is a :class:`DeviceSequence`: the
``(T, B, F)`` face of a feature-major ``(F, T, B)`` device buffer (numba's
device arrays cannot be transposed), with ``shape``/``dtype`` like an array
and ``to_host()``. A layer accepts a DeviceSequence from the layer before it
without a copy and uploads a host NumPy array once (``net.forward(x)`` with
host spikes works on every backend). No spike packing here: the CSR forward
kernel skips silent inputs per thread instead (``pack_spikes`` keeps the
base class's None).
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from ..kernels import conv_cuda as KC
from ..kernels import cuda as K
from .base import KernelModuleBackend, host_feature_major


def _on_device(a):
    """True for a numba device array (real or simulated; the simulator has no is_cuda_array)."""
    return hasattr(a, "copy_to_host") and not isinstance(a, DeviceSequence)


class DeviceSequence:
    """A ``(T, B, F)`` sequence whose values live in a feature-major ``(F, T, B)`` device buffer ``fm``."""

    ndim = 3

    def __init__(self, fm):
        self.fm = fm

    @property
    def shape(self):
        """``(T, B, F)``."""
        F, T, B = self.fm.shape
        return (T, B, F)

    @property
    def dtype(self):
        """The buffer's dtype (float32)."""
        return self.fm.dtype

    def to_host(self):
        """A host NumPy ``(T, B, F)`` view of a feature-major copy."""
        return self.fm.copy_to_host().transpose(1, 2, 0)

    def __array__(self, dtype=None, copy=None):
        a = self.to_host()
        return a if dtype is None else a.astype(dtype)

    def __repr__(self):
        return f"DeviceSequence(shape={self.shape}, dtype={self.dtype})"


class CudaBackend(KernelModuleBackend):
    """numba.cuda kernels on device arrays (a GPU, or the CUDA simulator)."""

    name = "cuda"
    kernels = K
    is_host = False
    dtypes = (np.dtype(np.float32),)

    # -- arrays ----------------------------------------------------------------
    def empty(self, shape, dtype):
        return cuda.device_array(shape, dtype)

    def zeros(self, shape, dtype):
        a = cuda.device_array(shape, dtype)
        self.fill(a, 0)
        return a

    def full(self, shape, value, dtype):
        a = cuda.device_array(shape, dtype)
        self.fill(a, value)
        return a

    def to_device(self, a, dtype=None):
        if _on_device(a):
            return a
        return cuda.to_device(np.ascontiguousarray(a, dtype))

    def to_host(self, a):
        if isinstance(a, DeviceSequence):
            return a.to_host()
        if _on_device(a):
            return a.copy_to_host()
        return a

    def is_array(self, a):
        return _on_device(a)

    def fill(self, a, value):
        if a.size:
            K.fill(a, value)

    def feature_major(self, x, n_features, dtype, where, spikes=None):
        if isinstance(x, DeviceSequence):
            if x.shape[2] != n_features:
                raise ValueError(f"{where}: expected {n_features} features (last axis), got shape {x.shape}")
            if x.dtype != dtype:
                raise TypeError(f"{where}: expected dtype {dtype}, got {x.dtype}")
            return x.fm
        if isinstance(x, np.ndarray):
            # uint8/bool spikes become floats on the host: the kernels compute in float32
            return cuda.to_device(host_feature_major(x, n_features, dtype, where, None if spikes is None else dtype))
        raise TypeError(f"{where}: expected a numpy.ndarray or a DeviceSequence of shape (T, batch, {n_features}), "
                        f"got {type(x).__name__}")

    def time_major(self, buf):
        return DeviceSequence(buf)

    def synchronize(self):
        cuda.synchronize()

    # -- kernels -----------------------------------------------------------------
    def csr_forward(self, indptr, indices, data, bias, X, Y, pack=None, scratch=None):
        K.csr_forward(indptr, indices, data, bias, X, Y)

    def csr_grad(self, indptr, indices, G, X, out, accumulate, gb, pack=None, scratch=None):
        K.csr_grad_at(indptr, indices, G, X, out, accumulate)
        K.bias_grad(G, gb, False)
        return None

    def csr_backward_input(self, t_indptr, t_indices, t_perm, data, G, GX, rownz=None):
        K.csr_backward_input(t_indptr, t_indices, t_perm, data, G, GX)

    def dense_forward(self, W, bias, X, Y):
        K.dense_forward(W, bias, X, Y)

    def dense_grad(self, G, X, out, accumulate):
        K.dense_grad(G, X, out, accumulate)

    def dense_backward_input(self, W, G, GX):
        K.dense_backward_input(W, G, GX)

    def row_sum(self, G, out, accumulate):
        K.bias_grad(G, out, accumulate)

    def scale_rows(self, g, X, Y):
        K.scale_rows(g, X, Y)

    def row_dot(self, G, X, out, accumulate):
        K.row_dot(G, X, out, accumulate)

    # -- convolution, pooling, batch norm, residual add (kernels/conv_cuda.py) ----------
    def conv_forward(self, g, indptr, indices, t_indptr, t_indices, t_perm, data, bias, X, Y, scratch):
        KC.conv_forward(g, indptr, indices, data, bias, X, Y)

    def conv_grad(self, g, indptr, indices, t_indptr, t_indices, t_perm, G, X, out, accumulate, gb, scratch):
        KC.conv_grad_at(g, indptr, indices, G, X, out, accumulate)
        KC.channel_sum(g, G, gb, False)

    def conv_backward_input(self, g, indptr, indices, t_indptr, t_indices, t_perm, data, G, GX):
        KC.conv_backward_input(g, t_indptr, t_indices, t_perm, data, G, GX)

    def _full_structure(self, g):
        """Device CSR and transposed structure of a dense kernel matrix (cached per shape)."""
        cache = self.__dict__.setdefault("_full", {})
        key = (g.c_out, g.kernel_cols)
        if key not in cache:
            n_out, n_in = key
            indptr = np.arange(0, n_out * n_in + 1, n_in, dtype=np.int32)
            indices = np.tile(np.arange(n_in, dtype=np.int32), n_out)
            t_indptr = np.arange(0, n_out * n_in + 1, n_out, dtype=np.int32)
            t_indices = np.tile(np.arange(n_out, dtype=np.int32), n_in)
            t_perm = (np.arange(n_out, dtype=np.int32)[None, :] * n_in + np.arange(n_in, dtype=np.int32)[:, None]).ravel()
            cache[key] = tuple(cuda.to_device(a) for a in (indptr, indices, t_indptr, t_indices, t_perm.astype(np.int32)))
        return cache[key]

    def dense_conv_forward(self, g, W, bias, X, Y):
        indptr, indices, *_ = self._full_structure(g)
        if bias is None:
            bias = self.zeros(g.c_out, W.dtype)
        KC.conv_forward(g, indptr, indices, W.reshape(W.size), bias, X, Y)

    def dense_conv_grad(self, g, G, X, out, accumulate):
        indptr, indices, *_ = self._full_structure(g)
        KC.conv_grad_at(g, indptr, indices, G, X, out.reshape(out.size), accumulate)

    def dense_conv_backward_input(self, g, W, G, GX):
        _, _, t_indptr, t_indices, t_perm = self._full_structure(g)
        KC.conv_backward_input(g, t_indptr, t_indices, t_perm, W.reshape(W.size), G, GX)

    def channel_sum(self, g, G, out, accumulate):
        KC.channel_sum(g, G, out, accumulate)

    def avgpool_forward(self, g, X, Y):
        KC.avgpool_forward(g, X, Y)

    def avgpool_backward(self, g, G, GX):
        KC.avgpool_backward(g, G, GX)

    def maxpool_forward(self, g, X, Y, arg):
        KC.maxpool_forward(g, X, Y, arg)

    def maxpool_backward(self, g, G, arg, GX):
        KC.maxpool_backward(g, G, arg, GX)

    def bn_stats(self, X, mean, var):
        KC.bn_stats(X, mean, var)

    def bn_apply(self, X, scale, shift, Y):
        KC.bn_apply(X, scale, shift, Y)

    def bn_backward(self, G, X, mean, invstd, gamma, GX, ggamma, gbeta, accumulate):
        KC.bn_backward(G, X, mean, invstd, gamma, GX, ggamma, gbeta, accumulate)

    def add(self, A, B, out):
        KC.add(A, B, out)
