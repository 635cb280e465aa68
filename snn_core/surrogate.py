"""Surrogate derivatives of the Heaviside spike function.

The spike is ``s = H(x)`` with ``x = v - v_th``. Its true derivative is zero
almost everywhere, so backpropagation replaces ``dH/dx`` by a smooth bump
``sigma'(x)`` (the *surrogate*). Each surrogate has one width/slope parameter;
the defaults are those of ``docs/concepts.md`` (paper notes §2):

=============  ============================================  =========
name           sigma'(x)                                     default
=============  ============================================  =========
rectangular    (1/a) * 1[|x| < a/2]                          a = 1
triangle       max(0, 1/g - |x|/g^2)                         g = 1
sigmoid        k * sig(k x) * (1 - sig(k x))                 k = 4
arctan         (alpha/2) / (1 + (pi/2 * alpha * x)^2)         alpha = 2
fast_sigmoid   1 / (1 + k |x|)^2                             k = 25
=============  ============================================  =========

All but ``fast_sigmoid`` integrate to one, like the delta they replace;
``fast_sigmoid`` integrates to ``2/k`` (it is SuperSpike's unnormalised form).

Inside Numba kernels a surrogate is named by an integer code (see
:func:`surrogate_code`) and evaluated by :func:`surrogate_grad`, an ``njit``
function with a branch per code. :func:`smooth_spike` is a *primitive* of each
surrogate (its derivative is exactly ``surrogate_grad``); the engine uses it
only in the test-only ``spike_fn="smooth"`` mode that makes finite-difference
gradient checks exact.

To add a surrogate: add a branch to both njit functions and a row to
``SURROGATES`` (see docs/howto.md, "custom surrogate").
"""
from __future__ import annotations

import math

import numba
import numpy as np

#: name -> (integer code used inside kernels, default parameter)
SURROGATES = {
    "rectangular": (0, 1.0),
    "triangle": (1, 1.0),
    "sigmoid": (2, 4.0),
    "arctan": (3, 2.0),
    "fast_sigmoid": (4, 25.0),
}


def surrogate_code(name: str) -> int:
    """Integer code of the surrogate called ``name`` (for kernels)."""
    try:
        return SURROGATES[name][0]
    except KeyError:
        raise ValueError(
            f"surrogate: unknown name {name!r}; expected one of {sorted(SURROGATES)}"
        ) from None


def default_param(name: str) -> float:
    """Default width/slope parameter of the surrogate called ``name``."""
    surrogate_code(name)
    return SURROGATES[name][1]


@numba.njit(cache=True, inline="always")
def surrogate_grad(x, code, p):
    """sigma'(x) for surrogate ``code`` with parameter ``p`` (scalar, njit)."""
    ax = abs(x)
    if code == 0:  # rectangular, width p
        return 1.0 / p if ax < 0.5 * p else 0.0
    if code == 1:  # triangle, half-width p
        return max(0.0, 1.0 / p - ax / (p * p))
    if code == 2:  # sigmoid, slope p: k sig(kx)(1 - sig(kx)) in a form that never overflows
        e = math.exp(-p * ax)
        return p * e / ((1.0 + e) * (1.0 + e))
    if code == 3:  # arctan, alpha = p
        z = 0.5 * math.pi * p * x
        return 0.5 * p / (1.0 + z * z)
    # fast sigmoid (SuperSpike), slope p
    d = 1.0 + p * ax
    return 1.0 / (d * d)


@numba.njit(cache=True, inline="always")
def smooth_spike(x, code, p):
    """A primitive of ``surrogate_grad`` going from 0 (x -> -inf) to 1.

    Used only by the test-only ``spike_fn="smooth"`` mode: with it the forward
    pass is differentiable and its exact derivative is the surrogate, so
    finite differences can check the hand-written backward pass.
    """
    if code == 0:
        return min(1.0, max(0.0, x / p + 0.5))
    if code == 1:
        if x <= -p:
            return 0.0
        if x >= p:
            return 1.0
        if x < 0.0:
            return 0.5 * (1.0 + x / p) ** 2
        return 1.0 - 0.5 * (1.0 - x / p) ** 2
    if code == 2:
        return 1.0 / (1.0 + math.exp(-p * x))
    if code == 3:
        return 0.5 + math.atan(0.5 * math.pi * p * x) / math.pi
    # fast sigmoid: d/dx [x / (1 + k|x|)] = 1 / (1 + k|x|)^2 exactly; this
    # primitive spans only 0.5 -/+ 1/k, which does not matter for a gradcheck.
    return 0.5 + x / (1.0 + p * abs(x))


def surrogate_numpy(name: str, x, param: float | None = None) -> np.ndarray:
    """Vectorised NumPy sigma'(x), for plotting and for reference kernels.

    Parameters
    ----------
    name : str
        One of ``SURROGATES``.
    x : array_like
        Distance to threshold ``v - v_th`` (membrane units).
    param : float, optional
        Width/slope; the surrogate's default if omitted.
    """
    code = surrogate_code(name)
    p = default_param(name) if param is None else float(param)
    if not (math.isfinite(p) and p > 0):
        raise ValueError(f"surrogate param: must be finite and > 0, got {param!r}")
    x = np.asarray(x, dtype=np.float64)
    ax = np.abs(x)
    if code == 0:
        return np.where(ax < 0.5 * p, 1.0 / p, 0.0)
    if code == 1:
        return np.maximum(0.0, 1.0 / p - ax / (p * p))
    if code == 2:
        e = np.exp(-p * ax)  # the symmetric form never overflows
        return p * e / ((1.0 + e) * (1.0 + e))
    if code == 3:
        z = 0.5 * np.pi * p * x
        return 0.5 * p / (1.0 + z * z)
    return 1.0 / (1.0 + p * ax) ** 2


def smooth_spike_numpy(x, name, p):
    """Vectorised NumPy twin of :func:`smooth_spike` (the test-only smooth spike), by surrogate name."""
    x = np.asarray(x)
    if name == "rectangular":
        return np.clip(x / p + 0.5, 0.0, 1.0).astype(x.dtype)
    if name == "triangle":
        y = np.where(x < 0, 0.5 * (1 + x / p) ** 2, 1 - 0.5 * (1 - x / p) ** 2)
        return np.where(x <= -p, 0.0, np.where(x >= p, 1.0, y)).astype(x.dtype)
    if name == "sigmoid":
        return (1.0 / (1.0 + np.exp(-p * x))).astype(x.dtype)
    if name == "arctan":
        return (0.5 + np.arctan(0.5 * np.pi * p * x) / np.pi).astype(x.dtype)
    return (0.5 + x / (1.0 + p * np.abs(x))).astype(x.dtype)
