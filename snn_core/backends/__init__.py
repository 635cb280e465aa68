"""Backends: where a network's arrays live and which kernels compute on them.

One :class:`~snn_core.backends.base.Backend` interface (array allocation,
host/device transfer and the kernels that layers, optimizers and losses
need), three implementations:

- ``"reference"`` (:class:`ReferenceBackend`): plain NumPy, written to be
  read; the equations of ``docs/bptt.md`` line by line. Trains (slowly).
- ``"cpu"`` (:class:`CpuBackend`): the Numba kernels with every fast path
  (spike packing, skipped zero rows, serial/parallel choice). The default.
- ``"cuda"`` (:class:`~snn_core.backends.cuda.CudaBackend`): numba.cuda
  kernels on a GPU (or the CUDA simulator); loaded on first use.

Layers, :class:`~snn_core.network.Network`, optimizers, the Rewirer and the
Trainer are the same objects on every backend: ``net.to("cuda")`` moves a
model (the optimizer's state follows at its next step), ``--device`` picks
one for a training run. See ``docs/design.md`` and ``docs/gpu.md``.
"""
from __future__ import annotations

from .base import Backend, BufferPool
from .cpu import CpuBackend
from .reference import ReferenceBackend

#: the names ``get_backend`` / ``Network.to`` / ``--device`` accept
BACKENDS = ("reference", "cpu", "cuda")

_INSTANCES = {}


def get_backend(name="cpu"):
    """The backend called ``name`` (one shared instance per name); a Backend is returned as is.

    ``"cuda"`` checks that a CUDA device (or the simulator) is usable and
    raises a one-line RuntimeError naming the reason otherwise.
    """
    if isinstance(name, Backend):
        return name
    if name not in BACKENDS:
        raise ValueError(f"device: unknown backend {name!r}; expected one of {BACKENDS}")
    bk = _INSTANCES.get(name)
    if bk is None:
        if name == "cpu":
            bk = CpuBackend()
        elif name == "reference":
            bk = ReferenceBackend()
        else:
            from ..backend import require_cuda

            require_cuda()
            from .cuda import CudaBackend  # needs numba-cuda: imported only when asked for

            bk = CudaBackend()
        _INSTANCES[name] = bk
    return bk


__all__ = ["Backend", "BufferPool", "BACKENDS", "CpuBackend", "ReferenceBackend", "get_backend"]
