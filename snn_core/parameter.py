"""A trainable array and its gradient, the unit optimizers and rewiring share."""
from __future__ import annotations

import numpy as np


class Parameter:
    """A trainable array ``value`` with a gradient ``grad`` of the same shape.

    For a dense layer ``value`` is the weight matrix or bias vector. For a
    :class:`~snn_core.layers.SparseLinear` it *is* the CSR ``data`` array of
    the weight matrix (the same object, so in-place optimizer updates change
    the weights); rewiring swaps in a new array and tells the optimizer how
    the old entries map onto the new ones.

    Gradients accumulate across ``backward`` calls until :meth:`zero_grad`;
    zeroing is lazy (a flag), so the first accumulation overwrites instead of
    adding and no memset is spent.
    """

    def __init__(self, value: np.ndarray, name: str, decay: bool = True):
        self.value = value
        self.grad = np.zeros_like(value)
        self.name = name
        #: whether weight decay applies (weights yes, biases no)
        self.decay = decay
        self.grad_is_zero = True
        #: name of the backend holding ``value`` and ``grad`` (set by ``Layer.to``)
        self.device = "cpu"

    def zero_grad(self):
        """Mark the gradient as zero (the next accumulation overwrites it)."""
        self.grad_is_zero = True

    def accumulate(self, g: np.ndarray):
        """Add host array ``g`` to the gradient (copying if the gradient is zero); host backends only.

        Layers on any backend write gradients with their backend's kernels
        (``accumulate=not p.grad_is_zero``) and then clear ``grad_is_zero``.
        """
        if self.grad_is_zero:
            np.copyto(self.grad, g)
        else:
            self.grad += g
        self.grad_is_zero = False

    def replace(self, value, grad=None):
        """Swap in a new value array (after rewiring or a move); gradient becomes zero.

        ``grad``: the new gradient array (a device backend passes its own);
        default ``np.zeros_like(value)``.
        """
        self.value = value
        self.grad = np.zeros_like(value) if grad is None else grad
        self.grad_is_zero = True

    def __repr__(self):
        return f"Parameter({self.name!r}, shape={self.value.shape}, dtype={self.value.dtype})"
