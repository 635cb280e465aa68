"""Losses on a network's output ``O`` of shape (T, batch, classes).

Each returns ``(value, grad)`` where ``grad = dL/dO`` has O's shape and dtype,
ready for :meth:`snn_core.network.Network.backward`. All are means over the
batch. ``predict(O)`` gives the predicted class (argmax of the time-summed output),
``count_correct(O, y)`` how many samples it gets right.

- ``ce_count``: softmax cross-entropy on spike counts ``sum_t O[t]``.
- ``ce_membrane``: softmax cross-entropy on the time-averaged readout
  membrane ``mean_t O[t]``.
- ``mse_rate``: mean squared error between rates ``mean_t O[t]`` and target
  rates (``on`` for the true class, ``off`` elsewhere).
- ``tet``: TET, ``(1 - lam) mean_t CE(O[t], y) + lam mean_t MSE(O[t], phi)``.

``O`` is a host array (float32 or float64). ``ce_count`` and ``ce_membrane``
run as one compiled call (:func:`snn_core.kernels.cpu.softmax_ce_time`; read
:func:`snn_core.kernels.reference.softmax_ce_time` for the arithmetic):
about twenty NumPy calls on a (T, batch, classes) array of a few thousand
values cost more than the arithmetic, 0.15-0.19 ms per training step.
"""
from __future__ import annotations

import numpy as np

from .kernels import cpu as K
from .kernels import reference as R


def _labels(O, y):
    """``y`` as int64 class indices, its shape and dtype checked against O (its range: by the caller)."""
    if not isinstance(O, np.ndarray) or O.ndim != 3:
        raise ValueError(f"output: expected an ndarray (T, batch, classes), got {getattr(O, 'shape', type(O))}")
    y = np.asarray(y)
    if y.shape != (O.shape[1],):
        raise ValueError(f"labels: expected shape ({O.shape[1]},), got {y.shape}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"labels: expected integers, got {y.dtype}")
    return y.astype(np.int64, copy=False)


def _check(O, y):
    y = _labels(O, y)
    if y.size and (y.min() < 0 or y.max() >= O.shape[2]):
        raise K.label_range_error(y, O.shape[2])
    return y


def _time_ce(O, y, mean):
    y = _labels(O, y)  # the range is checked by the kernel, in the same pass (two NumPy reductions here cost
    # 6-8 us a training step on the Emerald Rapids guest)
    if O.dtype.type not in (np.float32, np.float64):
        raise TypeError(f"output: expected float32 or float64, got {O.dtype}")
    # the kernel runs over the feature-major (classes, T, batch) buffer behind a network's output (no copy),
    # and the gradient is returned the same way: a (T, batch, classes) view of such a buffer, which the
    # output layer's backward takes without a copy
    O_fm = np.ascontiguousarray(O.transpose(2, 0, 1))
    g_fm = np.empty(O_fm.shape, O.dtype)
    value = K.softmax_ce_time(O_fm, y, mean, g_fm)  # one compiled call (readable: reference.softmax_ce_time)
    return value, g_fm.transpose(1, 2, 0)


def ce_count(O, y):
    """Cross-entropy on spike counts ``sum_t O[t]``."""
    return _time_ce(O, y, False)


def ce_membrane(O, y):
    """Cross-entropy on the time-averaged membrane ``mean_t O[t]``."""
    return _time_ce(O, y, True)


def mse_rate(O, y, on=1.0, off=0.0):
    """MSE between rates ``mean_t O[t]`` and target rates (on/off), mean over batch and classes."""
    y = _check(O, y)
    T, B, C = O.shape
    target = np.full((B, C), off)
    target[np.arange(B), y] = on
    diff = O.mean(axis=0, dtype=np.float64) - target
    g = 2.0 * diff / (B * C * T)
    return float((diff ** 2).mean()), np.broadcast_to(g.astype(O.dtype), O.shape).copy()


def tet(O, y, lam=1e-3, phi=1.0):
    """TET loss: per-step CE plus ``lam`` times per-step MSE to ``phi``."""
    y = _check(O, y)
    T, B, C = O.shape
    value, g = 0.0, np.empty(O.shape, np.float64)
    for t in range(T):
        ce, gce = R.softmax_ce(O[t], y)
        d = O[t].astype(np.float64) - phi
        value += ((1 - lam) * ce + lam * (d ** 2).mean()) / T
        g[t] = ((1 - lam) * gce + lam * 2.0 * d / (B * C)) / T
    return float(value), g.astype(O.dtype)


LOSSES = {"ce_count": ce_count, "ce_membrane": ce_membrane, "mse_rate": mse_rate, "tet": tet}


def get_loss(name):
    """The loss function called ``name``."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"loss: unknown name {name!r}; expected one of {sorted(LOSSES)}") from None


def predict(O):
    """Predicted class per sample: argmax of the time-summed output, (batch,) int64.

    O : (T, batch, classes). For float32/float64 arrays the sum runs step
    by step in O's dtype, as in the cross-entropy losses, in one compiled
    call (:func:`snn_core.kernels.cpu.predict_time`); ties go to the lower
    class.
    """
    O_fm = _compiled_view(O)
    if O_fm is not None:
        return K.predict_time(O_fm)
    return O.sum(axis=0).argmax(axis=1)


def count_correct(O, y):
    """How many samples :func:`predict` classifies as the labels y (batch,) say: an int.

    One compiled call for a float32/float64 O (after the training step's
    large kernels, the three NumPy calls it replaces cost ~45 us).
    """
    O_fm, y = _compiled_view(O), np.asarray(y)
    if O_fm is not None and y.shape == (O.shape[1],) and y.dtype == np.int64:
        return K.count_correct(O_fm, y)
    return int(np.count_nonzero(predict(O) == y))


def _compiled_view(O):
    """O (T, batch, classes) as the kernels' C-contiguous (classes, T, batch), or None where they do not apply
    (another dtype, an empty axis). No copy for a network's output: a view of such a buffer."""
    if isinstance(O, np.ndarray) and O.ndim == 3 and O.dtype.type in (np.float32, np.float64) and 0 not in O.shape:
        return np.ascontiguousarray(O.transpose(2, 0, 1))
    return None
