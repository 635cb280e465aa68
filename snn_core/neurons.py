"""Leaky integrate-and-fire (LIF) neuron: parameters and the pure Euler step.

The membrane obeys ``tau_m dv/dt = -(v - v_rest) + R I(t)``. One explicit
Euler step of size ``dt`` (paper notes §2, symbols as in the code)::

    u[t] = v[t-1] + (dt / tau_m) * (-(v[t-1] - v_rest) + R * I[t])
         = alpha * v[t-1] + (1 - alpha) * v_rest + c * I[t]
           with alpha = 1 - dt/tau_m  (per-step decay)  and  c = R * dt/tau_m
    s[t] = H(u[t] - v_th)                                   # spike, 0 or 1
    hard reset:  v[t] = u[t] * (1 - s[t]) + v_reset * s[t]
    soft reset:  v[t] = u[t] - v_th * s[t]
    no reset:    v[t] = u[t]

``u`` is the membrane *before* the reset (what the threshold sees and what the
surrogate is evaluated at), ``v`` the membrane *after* it (what the next step
starts from). A non-spiking leaky-integrator readout uses the same ``u``
recurrence with no threshold and no reset.

Defaults: ``v_th = 1``, ``v_rest = v_reset = 0``, ``R = 1``, ``tau_m = 2 dt``
so that the per-step decay ``alpha`` is 0.5. Explicit Euler is stable and
non-oscillating only for ``dt <= tau_m``; larger steps are rejected.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .surrogate import default_param, smooth_spike_numpy, surrogate_code

RESET_MODES = ("hard", "soft", "none")
RESET_CODES = {name: i for i, name in enumerate(RESET_MODES)}
#: named reset codes of :class:`NeuronKernelParams` (what the kernels compare against)
RESET_HARD, RESET_SOFT, RESET_NONE = RESET_CODES["hard"], RESET_CODES["soft"], RESET_CODES["none"]
SPIKE_FNS = ("heaviside", "smooth")


class NeuronKernelParams(NamedTuple):
    """The named parameter record every neuron kernel takes (one per layer and dtype).

    Built by :meth:`LIFParams.kernel_params`; kernels read fields by name, so a
    call never depends on the order of a dozen scalars. Floats are in the
    layer's dtype; ``reset`` is one of ``RESET_HARD``/``RESET_SOFT``/``RESET_NONE``
    and ``surrogate`` a code of :data:`snn_core.surrogate.SURROGATES`.

    Fields: ``alpha`` (per-step decay ``1 - dt/tau_m``), ``k0`` (constant drive
    ``(1 - alpha) v_rest``), ``c`` (input gain ``R dt/tau_m``), ``v_th``,
    ``v_reset``, ``reset``, ``detach`` (reset detached in BPTT, 0/1),
    ``surrogate``, ``surrogate_p`` (its width/slope), ``smooth`` (1 in the
    test-only smooth-spike mode).
    """

    alpha: float
    k0: float
    c: float
    v_th: float
    v_reset: float
    reset: int
    detach: int
    surrogate: int
    surrogate_p: float
    smooth: int


def _positive_finite(name, value):
    if not isinstance(value, (int, float, np.floating, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")


def _finite(name, value):
    if not isinstance(value, (int, float, np.floating, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: must be finite, got {value!r}")


@dataclass(frozen=True)
class LIFParams:
    """Parameters of a LIF population (all neurons of a layer share them).

    Attributes
    ----------
    tau_m : float
        Membrane time constant (same time unit as ``dt``), > 0.
    dt : float
        Euler step, > 0 and <= ``tau_m``.
    v_th, v_rest, v_reset : float
        Threshold, resting and reset potentials (membrane units).
    R : float
        Membrane resistance: input current ``I`` is scaled by ``R``.
    reset : {"hard", "soft", "none"}
        Hard reset sets ``v`` to ``v_reset``; soft subtracts ``v_th``.
    detach_reset : bool
        If True the reset is treated as a constant in BPTT (no gradient flows
        through ``s`` into the membrane); the membrane recurrence still does.
    surrogate : str
        Name of the surrogate derivative (see :mod:`snn_core.surrogate`).
    surrogate_param : float or None
        Its width/slope; None means the surrogate's default.
    spike_fn : {"heaviside", "smooth"}
        ``"smooth"`` is a test-only mode: the forward spike becomes a smooth
        function whose derivative is exactly the surrogate.
    """

    tau_m: float = 2.0
    dt: float = 1.0
    v_th: float = 1.0
    v_rest: float = 0.0
    v_reset: float = 0.0
    R: float = 1.0
    reset: str = "hard"
    detach_reset: bool = False
    surrogate: str = "rectangular"
    surrogate_param: float | None = None
    spike_fn: str = "heaviside"

    def __post_init__(self):
        _positive_finite("tau_m", self.tau_m)
        _positive_finite("dt", self.dt)
        if self.dt > self.tau_m:
            raise ValueError(
                f"dt: must be <= tau_m for a stable explicit Euler step, got dt={self.dt}, tau_m={self.tau_m}"
            )
        for name in ("v_th", "v_rest", "v_reset", "R"):
            _finite(name, getattr(self, name))
        if self.reset not in RESET_MODES:
            raise ValueError(f"reset: unknown mode {self.reset!r}; expected one of {RESET_MODES}")
        if self.spike_fn not in SPIKE_FNS:
            raise ValueError(f"spike_fn: unknown {self.spike_fn!r}; expected one of {SPIKE_FNS}")
        surrogate_code(self.surrogate)  # raises on an unknown name
        if self.surrogate_param is not None:
            _positive_finite("surrogate_param", self.surrogate_param)

    @classmethod
    def from_decay(cls, beta: float, **kw) -> "LIFParams":
        """Parameters with per-step decay ``alpha = beta`` and input scale 1.

        This is the ``v = beta v + I`` form of snnTorch and most SNN papers:
        ``tau_m = dt / (1 - beta)`` and ``R = tau_m / dt`` make ``c = 1``.
        """
        if not 0 <= beta < 1:
            raise ValueError(f"beta: must be in [0, 1), got {beta!r}")
        dt = kw.pop("dt", 1.0)
        tau_m = dt / (1.0 - beta)
        return cls(tau_m=tau_m, dt=dt, R=tau_m / dt, **kw)

    @property
    def alpha(self) -> float:
        """Per-step membrane decay ``1 - dt/tau_m``."""
        return 1.0 - self.dt / self.tau_m

    @property
    def c(self) -> float:
        """Input gain per step ``R * dt / tau_m``."""
        return self.R * self.dt / self.tau_m

    @property
    def surrogate_p(self) -> float:
        """The surrogate parameter actually used."""
        return default_param(self.surrogate) if self.surrogate_param is None else float(self.surrogate_param)

    def codes(self):
        """The integer codes of the kernels: (reset, surrogate, smooth)."""
        return RESET_CODES[self.reset], surrogate_code(self.surrogate), int(self.spike_fn == "smooth")

    def kernel_params(self, dtype=np.float32) -> NeuronKernelParams:
        """The :class:`NeuronKernelParams` record of these parameters, floats cast to ``dtype``."""
        f = np.dtype(dtype).type
        reset, sur, smooth = self.codes()
        return NeuronKernelParams(alpha=f(self.alpha), k0=f((1.0 - self.alpha) * self.v_rest), c=f(self.c),
                                  v_th=f(self.v_th), v_reset=f(self.v_reset), reset=reset,
                                  detach=int(bool(self.detach_reset)), surrogate=sur, surrogate_p=f(self.surrogate_p),
                                  smooth=smooth)


def reset_membrane(u, s, prm):
    """``v[t] = reset(u[t], s[t])``: hard (to v_reset), soft (minus v_th) or none."""
    if prm.reset == RESET_HARD:
        return u * (1 - s) + prm.v_reset * s
    if prm.reset == RESET_SOFT:
        return u - prm.v_th * s
    return u.copy()


def lif_step(v, current, p: LIFParams):
    """One Euler step of a LIF population (NumPy, for tutorials and tests).

    Parameters
    ----------
    v : ndarray, (batch, n)
        Membrane after the previous step's reset.
    current : ndarray, (batch, n)
        Input current ``I[t]`` for this step.
    p : LIFParams

    Returns
    -------
    u, s, v_new : ndarray, (batch, n)
        Pre-reset membrane, spikes (0/1), post-reset membrane.
    """
    u = v + (p.dt / p.tau_m) * (-(v - p.v_rest) + p.R * current)
    if p.spike_fn == "smooth":
        s = smooth_spike_numpy(u - p.v_th, p.surrogate, p.surrogate_p)
    else:
        s = (u >= p.v_th).astype(u.dtype)
    if p.reset == "hard":
        v_new = u * (1 - s) + p.v_reset * s
    elif p.reset == "soft":
        v_new = u - p.v_th * s
    else:
        v_new = u
    return u, s, v_new


def readout_step(v, current, p: LIFParams):
    """One Euler step of the non-spiking leaky integrator (no threshold)."""
    return v + (p.dt / p.tau_m) * (-(v - p.v_rest) + p.R * current)
