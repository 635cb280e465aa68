"""The ``reference`` backend: plain NumPy, written to be read.

Each method calls the readable twin in :mod:`snn_core.kernels.reference`
(the equations of ``docs/bptt.md`` line by line, forward next to backward)
and copies its result into the caller's output array. No spike packing, no
skipped rows, no threads: slow, but a full training run gives the ``cpu``
backend's curve within float tolerance, and a student can step into any
kernel (``ReferenceBackend.trace``: a function called with the carries of
every LIF backward step).
"""
from __future__ import annotations


from ..kernels import reference as R
from .base import Backend


class ReferenceBackend(Backend):
    """NumPy twins of every kernel, on host NumPy arrays.

    Attributes
    ----------
    trace : callable or None
        When set, ``lif_backward`` calls ``trace(t=..., gv=..., gs_tot=...,
        sg=..., gu=..., gI=...)`` at every step of the BPTT recurrence
        (arrays ``(F, B)``), e.g. ``print`` them or ``breakpoint()``.
    """

    name = "reference"
    trace = None

    # -- neurons -------------------------------------------------------------------
    def lif_forward(self, I, v0, prm, u, s, v_last):
        u[...], s[...], v_last[...] = R.lif_forward(I, v0, prm)

    def lif_backward(self, gs, u, s, prm, gI):
        gI[...] = R.lif_backward(gs, u, s, prm, trace=self.trace)

    def readout_forward(self, I, v0, prm, u):
        u[...] = R.readout_forward(I, v0, prm)

    def readout_backward(self, gu, prm, gI):
        gI[...] = R.readout_backward(gu, prm)

    # -- sparse synapses (no spike packing: pack_spikes stays None) -------------------
    def csr_forward(self, indptr, indices, data, bias, X, Y, pack=None, scratch=None):
        Y[...] = R.csr_forward(indptr, indices, data, bias, X)

    def csr_grad(self, indptr, indices, G, X, out, accumulate, gb, pack=None, scratch=None):
        g = R.csr_grad_at(indptr, indices, G, X).astype(out.dtype)
        if accumulate:
            out += g
        else:
            out[...] = g
        gb[...] = G.sum(axis=1)
        return None

    def csr_backward_input(self, t_indptr, t_indices, t_perm, data, G, GX, rownz=None):
        GX[...] = R.csr_backward_input_t(t_indptr, t_indices, t_perm, data, G)

    # -- sparse convolution (dense conv, pooling, batch norm: the base class's twins) ----
    def conv_forward(self, g, indptr, indices, t_indptr, t_indices, t_perm, data, bias, X, Y, scratch):
        Y[...] = R.conv_forward(indptr, indices, data, bias, X, g)

    def conv_grad(self, g, indptr, indices, t_indptr, t_indices, t_perm, G, X, out, accumulate, gb, scratch):
        d = R.conv_grad_at(indptr, indices, G, X, g).astype(out.dtype)
        if accumulate:
            out += d
        else:
            out[...] = d
        gb[...] = R.channel_sum(G, g)

    def conv_backward_input(self, g, indptr, indices, t_indptr, t_indices, t_perm, data, G, GX):
        GX[...] = R.conv_backward_input(indptr, indices, data, G, g)

    # -- optimizers --------------------------------------------------------------------
    def adam_update(self, w, g, m, v, lr, b1, b2, eps, bc1, bc2, wd):
        w[...], m[...], v[...] = R.adam_update(w, g, m, v, lr, b1, b2, eps, bc1, bc2, wd)

    def sgd_update(self, w, g, buf, lr, momentum, nesterov, wd):
        new_w, new_buf = R.sgd_update(w, g, buf, lr, momentum, nesterov, wd)
        w[...] = new_w
        if momentum != 0:
            buf[...] = new_buf

    def nonfinite_count(self, a):
        return R.count_nonfinite(a)


__all__ = ["ReferenceBackend"]
