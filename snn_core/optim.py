"""Optimizers (SGD, Adam) and learning-rate schedules.

Optimizers work on :class:`~snn_core.parameter.Parameter` objects, whose
``value`` is a dense array or the ``data`` array of a CSR weight matrix alike:
an update is elementwise, so it never needs to know which. Each update is one
fused compiled pass (O(size), i.e. O(nnz) for sparse weights).

Rewiring changes which connections exist; :meth:`Optimizer.remap` then moves
every state array (momentum, Adam moments) onto the new ``data`` layout: kept
connections keep their state, new ones start at 0, pruned ones are dropped.

Devices. The update runs on the backend of each parameter (``p.device``,
see :mod:`snn_core.backends`), and the state arrays live there too: after
``net.to("cuda")`` the next :meth:`Optimizer.step` moves the state over
once. ``state_dict`` always returns host arrays; ``remap`` on a device is a
host round trip of that parameter's state (only at rewiring events).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .backends import get_backend


# --------------------------------------------------------------------------
# Schedules: callables iteration -> learning rate
# --------------------------------------------------------------------------
class Constant:
    """The same learning rate at every iteration."""

    def __init__(self, lr):
        _check_lr(lr, "lr")
        self.lr0 = lr

    def __call__(self, it):
        return self.lr0


class ExponentialDecay:
    """``lr0 * (lr_end / lr0) ** (it / n_iters)``, then ``lr_end`` (paper: 0.01 -> 0.0001)."""

    def __init__(self, lr0, lr_end, n_iters):
        _check_lr(lr0, "lr0"), _check_lr(lr_end, "lr_end"), _check_iters(n_iters)
        self.lr0, self.lr_end, self.n_iters = lr0, lr_end, n_iters

    def __call__(self, it):
        return self.lr0 * (self.lr_end / self.lr0) ** (min(it, self.n_iters) / self.n_iters)


class CosineDecay:
    """``lr_end + (lr0 - lr_end) * (1 + cos(pi * it / n_iters)) / 2``."""

    def __init__(self, lr0, lr_end, n_iters):
        _check_lr(lr0, "lr0"), _check_lr(lr_end, "lr_end", allow_zero=True), _check_iters(n_iters)
        self.lr0, self.lr_end, self.n_iters = lr0, lr_end, n_iters

    def __call__(self, it):
        x = min(it, self.n_iters) / self.n_iters
        return self.lr_end + (self.lr0 - self.lr_end) * 0.5 * (1 + math.cos(math.pi * x))


class StepDecay:
    """``lr0 * gamma ** (it // step_size)``."""

    def __init__(self, lr0, step_size, gamma=0.1):
        _check_lr(lr0, "lr0"), _check_iters(step_size, "step_size")
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma: must be in (0, 1], got {gamma!r}")
        self.lr0, self.step_size, self.gamma = lr0, step_size, gamma

    def __call__(self, it):
        return self.lr0 * self.gamma ** (it // self.step_size)


def make_schedule(name, lr0, lr_end=None, n_iters=None, step_size=None, gamma=0.1):
    """Schedule by name: ``constant``, ``exponential``, ``cosine`` or ``step``."""
    if name == "constant":
        return Constant(lr0)
    if name == "exponential":
        return ExponentialDecay(lr0, lr_end, n_iters)
    if name == "cosine":
        return CosineDecay(lr0, 0.0 if lr_end is None else lr_end, n_iters)
    if name == "step":
        return StepDecay(lr0, step_size, gamma)
    raise ValueError(f"schedule: unknown name {name!r}; expected constant, exponential, cosine or step")


def _check_lr(lr, name, allow_zero=False):
    if (not isinstance(lr, numbers.Real) or isinstance(lr, bool) or not math.isfinite(lr) or lr < 0
            or (lr == 0 and not allow_zero)):
        raise ValueError(f"{name}: expected a finite learning rate > 0, got {lr!r}")


def _check_iters(n, name="n_iters"):
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {n!r}")


# --------------------------------------------------------------------------
# Optimizers
# --------------------------------------------------------------------------
class Optimizer:
    """Base class. ``lr`` is a float or a schedule ``it -> lr``.

    ``state[i]`` is a dict name -> array aligned elementwise with
    ``params[i].value``; ``iteration`` counts completed steps.
    """

    state_names = ()

    def __init__(self, params, lr, weight_decay=0.0):
        self.params = list(params)
        self.schedule = lr if callable(lr) else Constant(lr)
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight_decay: expected a finite value >= 0, got {weight_decay!r}")
        self.weight_decay = weight_decay
        self.iteration = 0
        self.state = [{k: get_backend(p.device).zeros(p.value.shape, p.value.dtype) for k in self.state_names}
                      for p in self.params]
        #: backend name of each parameter's state arrays (they follow ``p.device`` at the next step)
        self.state_devices = [p.device for p in self.params]

    def _follow(self, i):
        """Move parameter i's state to the parameter's backend if the parameter moved."""
        p = self.params[i]
        if self.state_devices[i] != p.device:
            old, new = get_backend(self.state_devices[i]), get_backend(p.device)
            self.state[i] = {k: new.to_device(np.array(old.to_host(a), copy=True)) for k, a in self.state[i].items()}
            self.state_devices[i] = p.device
        return get_backend(p.device)

    @property
    def lr(self):
        """Learning rate of the next step."""
        return self.schedule(self.iteration)

    def step(self):
        """Update every parameter in place from its gradient; advance the iteration."""
        lr = self.lr
        for i, p in enumerate(self.params):
            bk = self._follow(i)
            st = self.state[i]
            for k, arr in st.items():  # the kernels do not bounds-check: catch a missed remap here
                if arr.shape != p.value.shape:
                    raise RuntimeError(f"optimizer state {p.name}.{k} has shape {arr.shape} but the parameter "
                                       f"{p.value.shape}: call optimizer.remap after changing connections")
            if p.grad_is_zero:  # weight decay and momentum still act; the stale gradient must read as 0
                bk.fill(p.grad, 0)
            wd = self.weight_decay if p.decay else 0.0
            self._update(bk, p.value, p.grad, st, lr, wd)
        self.iteration += 1

    def zero_grad(self):
        """Reset the gradients of all optimised parameters."""
        for p in self.params:
            p.zero_grad()

    def index(self, param):
        """Position of ``param`` in ``params`` (KeyError if not optimised here)."""
        for i, p in enumerate(self.params):
            if p is param:
                return i
        raise KeyError(f"{param!r} is not optimised by this optimizer")

    def remap(self, param, src):
        """Realign ``param``'s state after rewiring.

        ``src[k]`` is the old index of the connection now at position k of the
        new ``data`` array, or -1 for a newly grown connection (state 0).
        """
        src = np.asarray(src)
        grown = src < 0
        at = np.where(grown, 0, src)  # a gather of every entry, then the grown ones zeroed: no masked gather
        i = self.index(param)
        bk = get_backend(self.state_devices[i])
        st = self.state[i]
        for k, old in st.items():
            old = bk.to_host(old)  # a host round trip on a device backend (rewiring events only)
            new = old[at] if len(old) else np.zeros(len(src), old.dtype)
            new[grown] = 0
            st[k] = bk.to_device(new)

    def host_state(self, param):
        """Host copies of ``param``'s state arrays (``{name: ndarray}``), whatever its backend."""
        i = self.index(param)
        bk = get_backend(self.state_devices[i])
        return {k: bk.to_host(a) for k, a in self.state[i].items()}

    def state_dict(self):
        """Plain arrays and numbers (for checkpoints)."""
        return {"iteration": self.iteration,
                "state": [{k: np.array(get_backend(d).to_host(v), copy=True) for k, v in st.items()}
                          for st, d in zip(self.state, self.state_devices)]}

    def load_state_dict(self, d):
        """Restore :meth:`state_dict` output (copies; shapes and names checked)."""
        if len(d["state"]) != len(self.params):
            raise ValueError(f"optimizer state: expected {len(self.params)} parameters, got {len(d['state'])}")
        for p, st in zip(self.params, d["state"]):
            if set(st) != set(self.state_names):
                raise ValueError(f"optimizer state {p.name}: expected arrays {sorted(self.state_names)}, got {sorted(st)}")
            for k, v in st.items():
                if v.shape != p.value.shape:
                    raise ValueError(f"optimizer state {p.name}.{k}: shape {v.shape} != parameter {p.value.shape}")
        self.iteration = int(d["iteration"])
        self.state = [{k: get_backend(p.device).to_device(np.array(v, dtype=p.value.dtype, order="C", copy=True))
                       for k, v in st.items()} for p, st in zip(self.params, d["state"])]
        self.state_devices = [p.device for p in self.params]


class SGD(Optimizer):
    """SGD with optional (Nesterov) momentum and L2 weight decay."""

    def __init__(self, params, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum: must be in [0, 1), got {momentum!r}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov: requires momentum > 0")
        self.momentum, self.nesterov = momentum, nesterov
        self.state_names = ("momentum",) if momentum else ()
        super().__init__(params, lr, weight_decay)

    def _update(self, bk, w, g, st, lr, wd):
        f = w.dtype.type
        buf = st["momentum"] if self.momentum else g  # g is a placeholder the kernel never reads
        n = w.size
        bk.sgd_update(w.reshape(n), g.reshape(n), buf.reshape(n), f(lr), f(self.momentum), self.nesterov, f(wd))


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction and optional L2 weight decay."""

    state_names = ("m", "v")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas: each must be in [0, 1), got {betas!r}")
        if not eps > 0:
            raise ValueError(f"eps: must be > 0, got {eps!r}")
        self.betas, self.eps = (b1, b2), eps
        super().__init__(params, lr, weight_decay)

    def _update(self, bk, w, g, st, lr, wd):
        f = w.dtype.type
        b1, b2 = self.betas
        t = self.iteration + 1
        n = w.size  # bias corrections are computed here, once, for every backend
        bk.adam_update(w.reshape(n), g.reshape(n), st["m"].reshape(n), st["v"].reshape(n), f(lr), f(b1),
                       f(b2), f(self.eps), f(1 - b1 ** t), f(1 - b2 ** t), f(wd))
