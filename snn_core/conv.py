"""Convolutional layers: sparse and dense convolutions, pooling, batch norm through time, residual blocks.

Every layer here honours the contract of :mod:`snn_core.layers`: it maps
``(T, batch, features)`` to ``(T, batch, features)`` over all T steps in one
call, with a hand-written backward, ``record=True`` and ``state_dict``, and
computes through ``self.backend`` (reference, cpu, cuda). A convolutional
activation is flattened channel-major, ``features = C * H * W`` with feature
``f = (c * H + y) * W + x`` (:mod:`snn_core.geometry`): the layout of
``image.reshape(-1)``, so MNIST's 784 pixels are a ``(1, 28, 28)`` input as
they are. Synapses are the same at every step, so a convolution treats the
``T * batch`` columns as one batch.

- :class:`SparseConv2d`: the kernel tensor ``(c_out, c_in, kh, kw)`` held as a
  CSR matrix ``(c_out, c_in*kh*kw)``; a :class:`~snn_core.layers.SparseLinear`
  in everything structure learning sees (``weight``, ``weight_param``,
  ``set_connections``, ``dense_weight_grad``), so ER/ERK init, every
  prune/grow rule, optimizer remap and history apply unchanged. The ``cpu``
  backend's kernels are event-driven (cost ~ connections x input spikes).
- :class:`Conv2d`: dense kernel (im2col + BLAS on the host), for controls.
- :class:`AvgPool2d`, :class:`MaxPool2d` (non-overlapping windows),
  :class:`Flatten` (a named no-op: features are already flat).
- :class:`BatchNorm2d`: threshold-dependent BN (tdBN, Zheng et al. 2021), the
  variant TET's models use: statistics per channel over batch, time and space.
- :class:`ResidualBlock`: ``main(x) + shortcut(x)`` with the layers it holds.
"""
from __future__ import annotations

import math

import numpy as np

from .backends import get_backend
from .geometry import conv_geometry, pool_geometry
from .layers import FLOAT_DTYPES, Layer, SparseLinear, check_finite
from .parameter import Parameter
from .sparse import canonical_csr, csr_from_arrays, fan_in_uniform, random_connectivity

__all__ = ["SparseConv2d", "Conv2d", "AvgPool2d", "MaxPool2d", "Flatten", "BatchNorm2d", "ResidualBlock",
           "fold_batchnorm"]


def _dtype(dtype, where):
    dtype = np.dtype(dtype)
    if dtype.type not in FLOAT_DTYPES:
        raise TypeError(f"{where}.dtype: expected float32 or float64, got {dtype}")
    return dtype


def _fm(layer, x, n, what):
    """(F, N) feature-major view of a layer input/gradient and its (T, B); an input may be uint8/bool spikes."""
    spikes = None if what == "grad" else layer.dtype  # only gradients must already be floats
    X3 = layer.backend.feature_major(x, n, layer.dtype, f"{layer.name} {what}", spikes)
    F, T, B = X3.shape
    return X3.reshape(F, T * B), T, B


def _unrolled_fan_out(layer, indptr, indices):
    """Per input feature: how many (connection, output position) pairs read it (host int64, in_features)."""
    g = layer.geometry
    ref = get_backend("reference")
    ones_g = np.ones((g.out_features, 1))
    if indptr is None:
        fo = np.empty((g.in_features, 1))
        ref.dense_conv_backward_input(g, np.ones((g.c_out, g.kernel_cols)), ones_g, fo)
    else:
        fo = np.empty((g.in_features, 1))
        ref.conv_backward_input(g, indptr, indices, None, None, None, np.ones(len(indices)), ones_g, fo)
    return np.rint(fo[:, 0]).astype(np.int64)


class SparseConv2d(SparseLinear):
    """Sparse 2-D convolution, the same kernel at every position and time step.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel : int or (kh, kw)
    stride, padding : int
        Zero padding on every side; output size ``(h + 2 padding - kh) // stride + 1``.
    density : float in (0, 1]
        Fraction of the ``out_channels * in_channels * kh * kw`` kernel
        weights present (exactly ``round(density * size)``, uniformly placed).
    input_size : int or (h, w)
        Required: the layer's features are ``in_channels * h * w``.
    bias : bool
        One bias per output channel (default False: a batch norm follows).
    seed, gain, dtype, name
        As :class:`~snn_core.layers.SparseLinear`; weights U(-a, a) with
        ``a = gain * sqrt(3 / fan_in)``, ``fan_in`` the output channel's
        actual number of kernel weights.
    weight : scipy.sparse matrix or array (out_channels, in_channels*kh*kw) or (out, in, kh, kw), optional

    Attributes
    ----------
    geometry : snn_core.geometry.ConvGeometry
    weight : scipy.sparse.csr_matrix (out_channels, in_channels*kh*kw)
        Column ``j = (ci * kh + ky) * kw + kx``; see SparseLinear for live/snapshot.
    kernel_shape : (out_channels, in_channels, kh, kw)
        What ERK initialisation reads.
    """

    packs_spikes = False  # the event-driven kernels read the input as it is
    takes_row_masks = False  # its backward reads and writes every row (the mask rules: snn_core.layers)

    def __init__(self, in_channels, out_channels, kernel, stride=1, padding=0, density=1.0, input_size=None,
                 bias=False, seed=None, gain=1.0, dtype=np.float32, weight=None, name="conv"):
        Layer.__init__(self)
        if input_size is None:
            raise ValueError(f"{name}: input_size (h, w) is required (features are in_channels * h * w)")
        self.name, self.dtype = name, _dtype(dtype, name)
        g = self.geometry = conv_geometry(in_channels, out_channels, input_size, kernel, stride, padding, name)
        self.in_features, self.out_features = g.in_features, g.out_features
        rng = np.random.default_rng(seed)
        shape = (g.c_out, g.kernel_cols)
        if weight is None:
            indptr, indices = random_connectivity(g.c_out, g.kernel_cols, density, rng)
            weight = csr_from_arrays(indptr, indices, fan_in_uniform(indptr, rng, gain, self.dtype), shape)
        elif getattr(weight, "ndim", 2) == 4:
            weight = np.asarray(weight).reshape(g.c_out, -1)
        weight = canonical_csr(weight, self.dtype)
        if weight.shape != shape:
            raise ValueError(f"{name}.weight: expected shape {shape}, got {weight.shape}")
        self.weight_param = Parameter(weight.data, f"{name}.weight")
        self.bias = Parameter(np.zeros(g.c_out, self.dtype), f"{name}.bias", decay=False) if bias else None
        self._set_weight(weight)
        self.retain_output_grad = False
        self._last_output_grad = None
        self.spike_input = None  # no spike packing here: the cpu kernels are event-driven already
        self._scratch = {}

    @property
    def kernel_shape(self):
        """``(out_channels, in_channels, kh, kw)``."""
        g = self.geometry
        return (g.c_out, g.c_in, g.kh, g.kw)

    @property
    def unrolled_size(self):
        """Connections of the dense convolution unrolled over positions: ``c_out*oh*ow * c_in*kh*kw`` (its MACs)."""
        g = self.geometry
        return g.out_features * g.kernel_cols

    def input_fan_out(self):
        """Synaptic events one nonzero input pixel triggers (int64, in_features): energy accounting."""
        w = self.weight
        return _unrolled_fan_out(self, w.indptr, w.indices)

    def forward(self, x, record=False):
        bk, g = self.backend, self.geometry
        x, reps = self.split_repeated_frame(x)
        X, T, B = _fm(self, x, self.in_features, "input")
        Y = self.buffer((self.out_features, T, B))
        indptr, indices = self._struct
        bk.conv_forward(g, indptr, indices, *self._backend_transpose(), self.weight_param.value,
                        self._bias_or_zeros(), X, Y.reshape(self.out_features, T * B), self._scratch)
        self._cache = (X, None, reps)
        out = self.repeat_frame(Y, reps)
        self.recorded = {"current": out} if record else {}
        return out

    def backward(self, grad_y):
        X, _, reps = self._needs_cache()
        bk, g = self.backend, self.geometry
        G, T, B = _fm(self, grad_y, self.out_features, "grad")
        Gw = self.frame_gradient(G.reshape(self.out_features, T, B), reps)
        indptr, indices = self._struct
        tr = self._backend_transpose()
        p = self.weight_param
        gb = self._scratch.get("gb")
        if gb is None:
            gb = self._scratch["gb"] = bk.empty(g.c_out, self.dtype)
        bk.conv_grad(g, indptr, indices, *tr, Gw, X, p.grad, not p.grad_is_zero, gb, self._scratch)
        p.grad_is_zero = False
        if self.bias is not None:
            bk.channel_sum(g, Gw, self.bias.grad, not self.bias.grad_is_zero)
            self.bias.grad_is_zero = False
        if self.retain_output_grad:
            self._last_output_grad = Gw
        if not self.need_input_grad:
            return None
        GX = self.buffer((self.in_features, T, B))
        bk.conv_backward_input(g, indptr, indices, *tr, p.value, G, GX.reshape(self.in_features, T * B))
        return bk.time_major(GX)

    def dense_weight_grad(self):
        """dL/dW at every kernel position (out_channels, in_channels*kh*kw) from the last backward (host).

        For gradient-based growth; needs ``retain_output_grad = True`` before that backward.
        """
        if self._last_output_grad is None or self._cache is None:
            raise RuntimeError(f"{self.name}: set retain_output_grad=True and run forward/backward first")
        G, X = self.backend.to_host(self._last_output_grad), self.backend.to_host(self._cache[0])
        self._last_output_grad = None
        out = np.empty(self.weight_shape, self.dtype)
        get_backend("cpu").dense_conv_grad(self.geometry, G, X, out, False)
        return out

    def __repr__(self):
        g = self.geometry
        return (f"SparseConv2d({g.c_in}x{g.h}x{g.w} -> {g.c_out}x{g.oh}x{g.ow}, kernel {g.kh}x{g.kw}, "
                f"stride {g.stride}, padding {g.pad}, density {self.density:.3g})")


class Conv2d(Layer):
    """Dense 2-D convolution (the control for :class:`SparseConv2d`); same arguments but no density.

    ``weight`` is the dense kernel matrix (out_channels, in_channels*kh*kw)
    (live on a host backend, a host copy on a device); ``weight_param`` the
    trained :class:`~snn_core.parameter.Parameter`.
    """

    def __init__(self, in_channels, out_channels, kernel, stride=1, padding=0, input_size=None, bias=False,
                 seed=None, gain=1.0, dtype=np.float32, weight=None, name="conv"):
        super().__init__()
        if input_size is None:
            raise ValueError(f"{name}: input_size (h, w) is required (features are in_channels * h * w)")
        self.name, self.dtype = name, _dtype(dtype, name)
        g = self.geometry = conv_geometry(in_channels, out_channels, input_size, kernel, stride, padding, name)
        self.in_features, self.out_features = g.in_features, g.out_features
        if weight is None:
            a = gain * math.sqrt(3.0 / g.kernel_cols)
            weight = np.random.default_rng(seed).uniform(-a, a, size=(g.c_out, g.kernel_cols))
        weight = np.array(weight, dtype=self.dtype, order="C", copy=True).reshape(g.c_out, -1)
        if weight.shape != (g.c_out, g.kernel_cols):
            raise ValueError(f"{name}.weight: expected shape {(g.c_out, g.kernel_cols)}, got {weight.shape}")
        check_finite(weight, f"{name}.weight")
        self.weight_param = Parameter(weight, f"{name}.weight")
        self.bias = Parameter(np.zeros(g.c_out, self.dtype), f"{name}.bias", decay=False) if bias else None

    @property
    def weight(self):
        """The kernel matrix (out_channels, in_channels*kh*kw)."""
        return self.backend.to_host(self.weight_param.value)

    @property
    def weight_shape(self):
        g = self.geometry
        return (g.c_out, g.kernel_cols)

    @property
    def kernel_shape(self):
        """``(out_channels, in_channels, kh, kw)``."""
        g = self.geometry
        return (g.c_out, g.c_in, g.kh, g.kw)

    @property
    def nnz(self):
        """Every kernel weight is a connection."""
        return self.weight_param.value.size

    @property
    def unrolled_size(self):
        """``c_out*oh*ow * c_in*kh*kw``: the MACs of one application."""
        g = self.geometry
        return g.out_features * g.kernel_cols

    def input_fan_out(self):
        """Synaptic events one nonzero input pixel triggers (int64, in_features)."""
        return _unrolled_fan_out(self, None, None)

    def parameters(self):
        return [self.weight_param] + ([self.bias] if self.bias is not None else [])

    def forward(self, x, record=False):
        bk, g = self.backend, self.geometry
        x, reps = self.split_repeated_frame(x)
        X, T, B = _fm(self, x, self.in_features, "input")
        Y = self.buffer((self.out_features, T, B))
        bk.dense_conv_forward(g, self.weight_param.value, None if self.bias is None else self.bias.value, X,
                              Y.reshape(self.out_features, T * B))
        self._cache = (X, reps)
        out = self.repeat_frame(Y, reps)
        self.recorded = {"current": out} if record else {}
        return out

    def backward(self, grad_y):
        X, reps = self._needs_cache()
        bk, g = self.backend, self.geometry
        G, T, B = _fm(self, grad_y, self.out_features, "grad")
        Gw = self.frame_gradient(G.reshape(self.out_features, T, B), reps)
        w = self.weight_param
        bk.dense_conv_grad(g, Gw, X, w.grad, not w.grad_is_zero)
        w.grad_is_zero = False
        if self.bias is not None:
            bk.channel_sum(g, Gw, self.bias.grad, not self.bias.grad_is_zero)
            self.bias.grad_is_zero = False
        if not self.need_input_grad:
            return None
        GX = self.buffer((self.in_features, T, B))
        bk.dense_conv_backward_input(g, w.value, G, GX.reshape(self.in_features, T * B))
        return bk.time_major(GX)

    def __repr__(self):
        g = self.geometry
        return f"Conv2d({g.c_in}x{g.h}x{g.w} -> {g.c_out}x{g.oh}x{g.ow}, kernel {g.kh}x{g.kw}, stride {g.stride}, padding {g.pad})"


class _Pool(Layer):
    output_key = "pooled"

    def __init__(self, channels, input_size, kernel=2, dtype=np.float32, name="pool"):
        super().__init__()
        self.name, self.dtype = name, _dtype(dtype, name)
        g = self.geometry = pool_geometry(channels, input_size, kernel, name)
        self.in_features, self.out_features = g.in_features, g.out_features

    def __repr__(self):
        g = self.geometry
        return f"{type(self).__name__}({g.c_in}x{g.h}x{g.w} -> {g.c_out}x{g.oh}x{g.ow})"


class AvgPool2d(_Pool):
    """Mean over non-overlapping ``kernel x kernel`` windows (the paper's AP2); no neurons after it.

    ``kernel`` equal to the input size is a global average pool (ResNet19).
    The mean of spikes is a rate in [0, 1], not a spike: ``emits_spikes`` is False.
    """

    def forward(self, x, record=False):
        bk = self.backend
        X, T, B = _fm(self, x, self.in_features, "input")
        Y = self.buffer((self.out_features, T, B))
        bk.avgpool_forward(self.geometry, X, Y.reshape(self.out_features, T * B))
        self._cache = True
        out = bk.time_major(Y)
        self.recorded = {"pooled": out} if record else {}
        return out

    def backward(self, grad_y):
        self._needs_cache()
        bk = self.backend
        G, T, B = _fm(self, grad_y, self.out_features, "grad")
        if not self.need_input_grad:
            return None
        GX = self.buffer((self.in_features, T, B))
        bk.avgpool_backward(self.geometry, G, GX.reshape(self.in_features, T * B))
        return bk.time_major(GX)


class MaxPool2d(_Pool):
    """Max over non-overlapping windows; the gradient goes to the (first) max of each window.

    Max of spikes is a spike: the output is 0/1 when the input is.
    """

    def forward(self, x, record=False):
        bk = self.backend
        X, T, B = _fm(self, x, self.in_features, "input")
        Y = self.buffer((self.out_features, T, B))
        arg = bk.empty((self.out_features, T * B), np.uint8)
        bk.maxpool_forward(self.geometry, X, Y.reshape(self.out_features, T * B), arg)
        self._cache = arg
        out = bk.time_major(Y)
        self.recorded = {"pooled": out} if record else {}
        return out

    def backward(self, grad_y):
        arg = self._needs_cache()
        bk = self.backend
        G, T, B = _fm(self, grad_y, self.out_features, "grad")
        if not self.need_input_grad:
            return None
        GX = self.buffer((self.in_features, T, B))
        bk.maxpool_backward(self.geometry, G, arg, GX.reshape(self.in_features, T * B))
        return bk.time_major(GX)


class Flatten(Layer):
    """Marks the end of the convolutional part: features are already flat (``C*H*W``), so nothing moves."""

    def __init__(self, n, dtype=np.float32, name="flatten"):
        super().__init__()
        self.in_features = self.out_features = int(n)
        self.name, self.dtype = name, _dtype(dtype, name)

    output_key = "output"

    def forward(self, x, record=False):
        self._cache = True
        self.recorded = {"output": x} if record else {}
        return x

    def backward(self, grad_y):
        self._needs_cache()
        return grad_y if self.need_input_grad else None


class BatchNorm2d(Layer):
    """Batch normalisation through time (tdBN): per channel over batch, time and space.

    ``y = gamma * (x - mean) / sqrt(var + eps) + beta`` with one mean and
    variance per channel taken over all ``T * batch * H * W`` values of that
    channel (time folded into the batch), as in the tdBN of Zheng et al. 2021
    that TET's VGGSNN/ResNet19 use. tdBN normalises to ``alpha * v_th``; with
    the engine's ``v_th = 1`` and ``alpha = 1`` that is ``gamma = 1`` at
    initialisation, so ``gamma`` starts at ``v_th`` (parameter ``v_th``).
    In evaluation (``Network.eval()``, which ``Trainer.evaluate`` uses) the
    running statistics replace the batch ones (``momentum`` as PyTorch:
    ``running = (1 - momentum) running + momentum batch``, unbiased variance).

    Parameters
    ----------
    channels : int
    input_size : int or (h, w); features are ``channels * h * w``
    eps, momentum : float
    v_th : float, initial gamma
    """

    output_key = "normalized"

    def __init__(self, channels, input_size, eps=1e-5, momentum=0.1, v_th=1.0, dtype=np.float32, name="bn"):
        super().__init__()
        self.name, self.dtype = name, _dtype(dtype, name)
        g = pool_geometry(channels, input_size, 1, name)
        self.channels, self.spatial = g.c_in, g.h * g.w
        self.in_features = self.out_features = g.in_features
        self.eps, self.momentum = float(eps), float(momentum)
        self.gamma = Parameter(np.full(self.channels, v_th, self.dtype), f"{name}.weight", decay=False)
        self.beta = Parameter(np.zeros(self.channels, self.dtype), f"{name}.bias", decay=False)
        self.running_mean = np.zeros(self.channels, np.float64)
        self.running_var = np.ones(self.channels, np.float64)

    def parameters(self):
        return [self.gamma, self.beta]

    @property
    def weight_shape(self):
        """``(channels, h*w)``: what ``state_dict()["shape"]`` holds."""
        return (self.channels, self.spatial)

    def _scale_shift(self, mean, var):
        invstd = 1.0 / np.sqrt(var + self.eps)
        gamma = self.backend.to_host(self.gamma.value).astype(np.float64)
        beta = self.backend.to_host(self.beta.value).astype(np.float64)
        scale = gamma * invstd
        return invstd, scale, beta - mean * scale

    def forward(self, x, record=False):
        bk, C = self.backend, self.channels
        X, T, B = _fm(self, x, self.in_features, "input")
        Xc = X.reshape(C, self.spatial * T * B)  # one channel's values are contiguous (geometry.py)
        if self.training:
            mean_d, var_d = bk.empty(C, np.float64 if self.dtype == np.float64 else np.float32), None
            var_d = bk.empty(C, mean_d.dtype)
            bk.bn_stats(Xc, mean_d, var_d)
            mean, var = bk.to_host(mean_d).astype(np.float64), bk.to_host(var_d).astype(np.float64)
            M = Xc.shape[1]
            m = self.momentum
            self.running_mean = (1 - m) * self.running_mean + m * mean
            self.running_var = (1 - m) * self.running_var + m * var * (M / max(M - 1, 1))
        else:
            mean, var = self.running_mean, self.running_var
        invstd, scale, shift = self._scale_shift(mean, var)
        Y = self.buffer((self.out_features, T, B))
        bk.bn_apply(Xc, bk.to_device(scale.astype(self.dtype)), bk.to_device(shift.astype(self.dtype)),
                    Y.reshape(C, -1))
        self._cache = (Xc, mean, invstd, self.training)
        out = bk.time_major(Y)
        self.recorded = {"normalized": out} if record else {}
        return out

    def backward(self, grad_y):
        Xc, mean, invstd, training = self._needs_cache()
        bk, C = self.backend, self.channels
        G, T, B = _fm(self, grad_y, self.out_features, "grad")
        Gc = G.reshape(C, -1)
        GX = self.buffer((self.in_features, T, B))
        acc = not self.gamma.grad_is_zero
        if training:
            bk.bn_backward(Gc, Xc, bk.to_device(mean.astype(self.dtype)), bk.to_device(invstd.astype(self.dtype)),
                           self.gamma.value, GX.reshape(C, -1), self.gamma.grad, self.beta.grad, acc)
        else:  # fixed statistics: y is affine in x per channel
            gsum, gx = bk.empty(C, self.dtype), bk.empty(C, self.dtype)
            bk.row_sum(Gc, gsum, False)
            bk.row_dot(Gc, Xc, gx, False)
            gsum_h, gx_h = bk.to_host(gsum).astype(np.float64), bk.to_host(gx).astype(np.float64)
            gg = invstd * (gx_h - mean * gsum_h)
            new_g = np.stack([gg, gsum_h]).astype(self.dtype)
            for p, v in zip((self.gamma, self.beta), new_g):
                p.replace(p.value, grad=bk.to_device(v + (bk.to_host(p.grad) if acc else 0)))
            _, scale, _ = self._scale_shift(mean, 1.0 / invstd ** 2 - self.eps)
            bk.scale_rows(bk.to_device(scale.astype(self.dtype)), Gc, GX.reshape(C, -1))
        self.gamma.grad_is_zero = self.beta.grad_is_zero = False
        return bk.time_major(GX) if self.need_input_grad else None

    def state_dict(self):
        """``weight`` (gamma), ``bias`` (beta), ``running_mean``, ``running_var`` and ``shape`` (channels, h*w)."""
        d = super().state_dict()
        d["running_mean"], d["running_var"] = self.running_mean.copy(), self.running_var.copy()
        return d

    def load_state_dict(self, state):
        super().load_state_dict(state)
        for key in ("running_mean", "running_var"):
            if key not in state:
                raise ValueError(f"{self.name}: state has no {key!r} array")
            a = np.asarray(state[key], np.float64)
            if a.shape != (self.channels,):
                raise ValueError(f"{self.name}.{key}: expected shape {(self.channels,)}, got {a.shape}")
            check_finite(a, f"{self.name}.{key}")
            setattr(self, key, a.copy())

    def __repr__(self):
        return f"BatchNorm2d({self.channels} channels x {self.spatial} positions, over T*batch*H*W)"


class ResidualBlock(Layer):
    """``y = main(x) + shortcut(x)``: a spiking residual block's add (the LIF after it is the next layer).

    Parameters
    ----------
    main : list of Layer
        E.g. conv-BN-LIF-conv-BN (the basic block of ResNet19).
    shortcut : list of Layer or None
        None: identity (sizes must match); else e.g. a 1x1 stride-2 conv + BN
        where the shape changes.
    name : str
        The sub-layers are renamed ``"<name>.<their name>"`` (and their parameters).

    ``children`` lists the sub-layers; :meth:`snn_core.network.Network.modules`
    flattens them, so rewiring, checkpoints, recording and energy see every
    sub-layer by its own name.
    """

    def __init__(self, main, shortcut=None, name="block"):
        super().__init__()
        self.name = name
        self.main, self.shortcut = list(main), (None if shortcut is None else list(shortcut))
        if not self.main:
            raise ValueError(f"{name}: main branch needs at least one layer")
        for branch in (self.main, self.shortcut or []):
            for a, b in zip(branch, branch[1:]):
                if a.out_features != b.in_features:
                    raise ValueError(f"{name}: {b.name} expects {b.in_features} inputs, {a.name} gives {a.out_features}")
        self.in_features, self.out_features = self.main[0].in_features, self.main[-1].out_features
        sc_in = self.in_features if self.shortcut is None else self.shortcut[0].in_features
        sc_out = self.in_features if self.shortcut is None else self.shortcut[-1].out_features
        if sc_in != self.in_features or sc_out != self.out_features:
            raise ValueError(f"{name}: the shortcut maps {sc_in} -> {sc_out} features, the main branch "
                             f"{self.in_features} -> {self.out_features}; pass a downsampling shortcut")
        self.dtype = self.main[0].dtype
        for layer in self.children:
            layer.name = f"{name}.{layer.name}"
            for p in layer.parameters():
                p.name = f"{layer.name}.{p.name.rsplit('.', 1)[-1]}"
            layer.need_input_grad = True

    @property
    def children(self):
        """The sub-layers, main branch first."""
        return self.main + (self.shortcut or [])

    def parameters(self):
        return [p for layer in self.children for p in layer.parameters()]

    def to(self, device):
        self.backend = get_backend(device)
        for layer in self.children:
            layer.to(self.backend)
        self.reset_state()
        return self

    def state_dict(self):
        return {}  # the sub-layers are saved under their own names (Network.modules)

    def load_state_dict(self, state):
        pass

    def reset_state(self):
        super().reset_state()
        for layer in self.children:
            layer.reset_state()

    @staticmethod
    def _run(layers, h, record):
        for layer in layers:
            h = layer.forward(h, record=record)
        return h

    def forward(self, x, record=False):
        bk = self.backend
        X, T, B = _fm(self, x, self.in_features, "input")
        h = self._run(self.main, x, record)
        s = x if self.shortcut is None else self._run(self.shortcut, x, record)
        Y = self.buffer((self.out_features, T, B))
        bk.add(_fm(self, h, self.out_features, "main")[0], _fm(self, s, self.out_features, "shortcut")[0],
               Y.reshape(self.out_features, T * B))
        self._cache = True
        return bk.time_major(Y)

    def backward(self, grad_y):
        self._needs_cache()
        bk = self.backend
        gm = grad_y
        for layer in reversed(self.main):
            gm = layer.backward(gm)
        gs = grad_y
        for layer in reversed(self.shortcut or []):
            gs = layer.backward(gs)
        if not self.need_input_grad:
            return None
        a, T, B = _fm(self, gm, self.in_features, "grad")
        GX = self.buffer((self.in_features, T, B))
        bk.add(a, _fm(self, gs, self.in_features, "grad")[0], GX.reshape(self.in_features, T * B))
        return bk.time_major(GX)

    def __repr__(self):
        inner = ", ".join(repr(layer) for layer in self.main)
        sc = "identity" if self.shortcut is None else ", ".join(repr(layer) for layer in self.shortcut)
        return f"ResidualBlock(main=[{inner}], shortcut=[{sc}])"


def fold_batchnorm(conv, bn):
    """A new convolution equal to ``bn(conv(x))`` in evaluation mode (running statistics), for inference/export.

    Per output channel ``c``: ``scale = gamma / sqrt(running_var + eps)``; the
    kernel row ``c`` is multiplied by ``scale`` and the bias becomes
    ``beta + (bias - running_mean) * scale``. A sparse convolution keeps its
    exact structure (only stored values change), so the folded network has
    the same connections and the same SOP count.

    Parameters
    ----------
    conv : SparseConv2d or Conv2d
    bn : BatchNorm2d with ``bn.channels == conv``'s output channels

    Returns
    -------
    SparseConv2d or Conv2d (host backend ``cpu``, bias present, same name)
    """
    g = conv.geometry
    if not isinstance(bn, BatchNorm2d) or bn.channels != g.c_out or bn.spatial != g.oh * g.ow:
        raise ValueError(f"fold_batchnorm: {getattr(bn, 'name', bn)!r} does not normalise the output of {conv.name!r}")
    host = conv.backend.to_host
    gamma = host(bn.gamma.value).astype(np.float64)
    beta = host(bn.beta.value).astype(np.float64)
    scale = gamma / np.sqrt(bn.running_var + bn.eps)
    bias = np.zeros(g.c_out) if conv.bias is None else host(conv.bias.value).astype(np.float64)
    new_bias = beta + (bias - bn.running_mean) * scale
    args = (g.c_in, g.c_out, (g.kh, g.kw), g.stride, g.pad)
    if isinstance(conv, SparseConv2d):
        w = conv.weight
        rows = np.repeat(np.arange(g.c_out), np.diff(w.indptr))
        data = (np.asarray(w.data, np.float64) * scale[rows]).astype(conv.dtype)
        folded = SparseConv2d(*args, input_size=(g.h, g.w), bias=True, dtype=conv.dtype, name=conv.name,
                              weight=csr_from_arrays(w.indptr, w.indices, data, w.shape))
    else:
        W = conv.weight.astype(np.float64) * scale[:, None]
        folded = Conv2d(*args, input_size=(g.h, g.w), bias=True, dtype=conv.dtype, name=conv.name, weight=W)
    folded.bias.value[...] = new_bias.astype(conv.dtype)
    return folded
