"""The ``cpu`` backend: NumPy arrays, Numba kernels of :mod:`snn_core.kernels.cpu`.

Every fast path of the engine lives here, behind the same methods as the
readable ``reference`` backend: spike packing (uint8 copy, bit words and
active-column lists of a 0/1 input, reused by the weight gradient), rows of
the output gradient that are zero skipped in ``W^T G``, the serial/parallel
choice of every kernel by estimated work, and BLAS for dense layers.
"""
from __future__ import annotations

import numpy as np

from ..kernels import conv_cpu as KC
from ..kernels import cpu as K
from .base import KernelModuleBackend, RecentShapes

SPIKE_PACK_MIN_FANOUT = 4.0
"""A SparseLinear input is spike-packed when the layer has at least this many
connections per input on average (or when the layer forces it)."""
SPIKE_LIST_RATE = 0.03
"""Inputs active in fewer than this fraction of the T*batch columns are
handled spike by spike (active-column lists); the others stream uint8 rows."""


def _pack_scratch(shape):
    """What :meth:`CpuBackend.pack_spikes` packs an (n_in, N) input into: spikes, counts, columns, bits."""
    n_in, N = shape
    return (np.empty(shape, np.uint8), np.empty(n_in, np.int32), np.empty(shape, np.int32),
            np.empty((n_in, (N + 15) // 16), np.uint16))


class CpuBackend(KernelModuleBackend):
    """Numba kernels on host NumPy arrays (float32 and float64)."""

    name = "cpu"
    kernels = K
    row_masks = True
    packs_uint8 = True

    def lif_forward(self, I, v0, prm, u, s, v_last, live=None):
        K.lif_forward(I, v0, prm, u, s, v_last, live)

    def lif_backward(self, gs, u, s, prm, gI, live=None, live_out=None):
        K.lif_backward(gs, u, s, prm, gI, live, live_out)

    # -- sparse synapses -------------------------------------------------------------
    def pack_spikes(self, X, n_out, nnz, scratch, force=None, live=None):
        """Spike-pack X (n_in, N) into reused scratch, or None when not worth it or not spikes.

        ``force``: None = pack when the layer has at least
        ``SPIKE_PACK_MIN_FANOUT`` connections per input, True = always try,
        False = never. Binary-ness is checked while packing, at no extra pass.
        ``live``: rows of X not to read (0), packed as silent (see ``spike_pack``).
        A C-contiguous uint8 X is its own uint8 copy: only counts, columns and
        bit words are written, and the returned pack refers to X.
        """
        if force is False or X.size == 0:
            return None
        n_in, N = X.shape
        if force is None and nnz < SPIKE_PACK_MIN_FANOUT * n_in:
            return None  # few connections per input: the float kernel is as cheap as packing
        packs = scratch.get("pack")
        if packs is None:
            packs = scratch["pack"] = RecentShapes()
        X8, cnt, cols, Xb = packs.get(X.shape, _pack_scratch)
        if X.dtype == np.uint8 and X.flags.c_contiguous:
            X8 = X
        thr = max(1, int(N * SPIKE_LIST_RATE))
        if K.spike_pack(X, X8, cnt, cols, thr, Xb, live):
            return None  # some value is neither 0 nor 1: not a spike train
        work = K.spike_work_ns(n_out, nnz, n_in, N, int(cnt.sum()))
        return X8, cnt, cols, thr, work, Xb

    @staticmethod
    def _split(scratch, nnz):
        ks = scratch.get("split")
        if ks is None or ks.size < 2 * nnz:
            ks = scratch["split"] = np.empty(max(2 * nnz, 1), np.int32)
        return ks

    def csr_forward(self, indptr, indices, data, bias, X, Y, pack=None, scratch=None, live=None):
        if pack is None:
            K.csr_forward(indptr, indices, data, bias, X, Y, live)
            return
        X8, cnt, cols, thr, work, Xb = pack
        K.csr_forward_spikes(indptr, indices, data, bias, X8, cnt, cols, thr, Y, work, Xb,
                             self._split({} if scratch is None else scratch, len(data)), live)

    def csr_grad(self, indptr, indices, G, X, out, accumulate, gb, pack=None, scratch=None, live=None):
        scratch = {} if scratch is None else scratch
        rownz = scratch.get("rownz")
        if rownz is None or rownz.shape[0] != G.shape[0]:
            rownz = scratch["rownz"] = np.empty(G.shape[0], np.uint8)
        if pack is None:
            K.csr_grad_dense(indptr, indices, G, X, out, accumulate, gb, rownz, live)
        else:
            X8, cnt, cols, thr, work, Xb = pack
            K.csr_grad_spikes(indptr, indices, X8, cnt, cols, thr, G, out, accumulate, gb, rownz, work, Xb,
                              self._split(scratch, len(indices)), live)
        return rownz

    def time_sum(self, G3, out):
        K.time_sum(G3, out)

    def csr_backward_input(self, t_indptr, t_indices, t_perm, data, G, GX, rownz=None, live_out=None):
        if rownz is None and live_out is None:
            K.csr_backward_input(t_indptr, t_indices, t_perm, data, G, GX)
        else:
            rownz = np.ones(G.shape[0], np.uint8) if rownz is None else rownz
            K.csr_backward_input_nz(t_indptr, t_indices, t_perm, data, G, rownz, GX, live_out)

    # -- sparse convolution: event-driven (kernels/conv_cpu.py); dense conv: im2col + BLAS (base) ----
    def conv_forward(self, g, indptr, indices, t_indptr, t_indices, t_perm, data, bias, X, Y, scratch):
        scratch["XT"] = KC.conv_forward(indptr, indices, data, t_indptr, t_indices, t_perm, bias, X, Y, g)

    def conv_grad(self, g, indptr, indices, t_indptr, t_indices, t_perm, G, X, out, accumulate, gb, scratch):
        XT = scratch.pop("XT", None)  # the event path's sample-major input (None: the row path ran)
        if XT is not None and XT.shape != (X.shape[1], X.shape[0]):
            XT = None
        KC.conv_grad_at(indptr, indices, t_indptr, t_indices, t_perm, G, X, XT, out, accumulate, g)
        self.channel_sum(g, G, gb, False)

    def conv_backward_input(self, g, indptr, indices, t_indptr, t_indices, t_perm, data, G, GX):
        KC.conv_backward_input(indptr, indices, data, t_indptr, t_indices, t_perm, G, GX, g)

    def bn_stats(self, X, mean, var):
        KC.bn_stats(X, mean, var)

    def bn_apply(self, X, scale, shift, Y):
        KC.bn_apply(X, scale, shift, Y)

    def bn_backward(self, G, X, mean, invstd, gamma, GX, ggamma, gbeta, accumulate):
        if accumulate:
            gg, gb = np.empty_like(ggamma), np.empty_like(gbeta)
            KC.bn_backward(G, X, mean, invstd, gamma, GX, gg, gb)
            ggamma += gg
            gbeta += gb
        else:
            KC.bn_backward(G, X, mean, invstd, gamma, GX, ggamma, gbeta)

    def avgpool_forward(self, g, X, Y):
        KC.avgpool_forward(g, X, Y)

    def maxpool_forward(self, g, X, Y, arg):
        KC.maxpool_forward(g, X, Y, arg)

    def maxpool_backward(self, g, G, arg, GX):
        KC.maxpool_backward(g, G, arg, GX)

    def avgpool_backward(self, g, G, GX):
        KC.avgpool_backward(g, G, GX)

    def nonfinite_count(self, a):
        if isinstance(a, np.ndarray) and a.dtype in self.dtypes:
            return K.nonfinite_count(a)  # one vectorised pass over the raw bits
        return super().nonfinite_count(a)
