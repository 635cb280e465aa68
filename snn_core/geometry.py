"""Shapes of convolution and pooling layers on flattened feature vectors.

Activations stay ``(T, batch, features)`` everywhere; a convolutional
activation flattens its channels and pixels as ``features = C * H * W`` in
C order (channel slowest, column fastest), i.e. feature
``f = (c * H + y) * W + x``, the order of ``image.reshape(-1)`` for a
``(C, H, W)`` image. In the engine's feature-major buffers this is a
C-contiguous ``(C, H, W, T, B)`` array, so one channel's values are one
contiguous block (what batch norm through time reduces over).

A kernel tensor ``(c_out, c_in, kh, kw)`` is held as a matrix
``(c_out, c_in * kh * kw)``: column ``j = (ci * kh + ky) * kw + kx``.
"""
from __future__ import annotations

from typing import NamedTuple

__all__ = ["ConvGeometry", "conv_geometry", "pool_geometry", "pair"]


class ConvGeometry(NamedTuple):
    """Every integer a convolution (or pooling) kernel needs.

    ``c_in, h, w``: input channels and size; ``c_out, oh, ow``: output;
    ``kh, kw``: kernel size; ``stride``, ``pad`` (zero padding on every side).
    Output ``oh = (h + 2 pad - kh) // stride + 1`` (same for ``ow``).
    """

    c_in: int
    h: int
    w: int
    c_out: int
    oh: int
    ow: int
    kh: int
    kw: int
    stride: int
    pad: int

    @property
    def in_features(self):
        """``c_in * h * w``."""
        return self.c_in * self.h * self.w

    @property
    def out_features(self):
        """``c_out * oh * ow``."""
        return self.c_out * self.oh * self.ow

    @property
    def kernel_cols(self):
        """Columns of the kernel matrix: ``c_in * kh * kw``."""
        return self.c_in * self.kh * self.kw


def pair(v, what):
    """``(a, b)`` from an int or a pair of ints; ValueError naming ``what`` otherwise."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{what}: expected an int or a pair of ints, got {v!r}")
        a, b = v
    else:
        a = b = v
    try:
        a, b = int(a), int(b)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected an int or a pair of ints, got {v!r}") from None
    return a, b


def conv_geometry(c_in, c_out, input_size, kernel, stride=1, padding=0, where="conv"):
    """A :class:`ConvGeometry` after validating every size (ValueError naming the problem)."""
    h, w = pair(input_size, f"{where}.input_size")
    kh, kw = pair(kernel, f"{where}.kernel")
    c_in, c_out, stride, padding = int(c_in), int(c_out), int(stride), int(padding)
    if min(c_in, c_out, h, w, kh, kw) < 1:
        raise ValueError(f"{where}: channels, input size and kernel must be positive, got "
                         f"c_in={c_in}, c_out={c_out}, input_size={(h, w)}, kernel={(kh, kw)}")
    if stride < 1 or padding < 0:
        raise ValueError(f"{where}: expected stride >= 1 and padding >= 0, got stride={stride}, padding={padding}")
    oh, ow = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"{where}: kernel {(kh, kw)} does not fit the padded input {(h + 2 * padding, w + 2 * padding)}")
    return ConvGeometry(c_in, h, w, c_out, oh, ow, kh, kw, stride, padding)


def pool_geometry(channels, input_size, kernel, where="pool"):
    """Non-overlapping ``kernel x kernel`` pooling (stride = kernel, no padding); sizes must divide."""
    h, w = pair(input_size, f"{where}.input_size")
    k = int(kernel)
    if k < 1 or h % k or w % k:
        raise ValueError(f"{where}: kernel {k} must divide the input size {(h, w)} (non-overlapping pooling)")
    return ConvGeometry(int(channels), h, w, int(channels), h // k, w // k, k, k, k, 0)
