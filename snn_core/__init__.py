"""snn_core: sparse spiking neural networks in NumPy/Numba with
evolutionary structure learning (ESL-SNNs, Shen et al., AAAI 2023).

Arrays are indexed time-major ``(T, batch, features)`` and float32 unless
stated otherwise. Start with :func:`snn_core.network.mlp` and
:class:`snn_core.training.Trainer`, or the tutorials in ``examples/``.
"""
from .layers import LIF, Layer, Linear, Readout, SparseLinear
from .losses import ce_count, ce_membrane, count_correct, get_loss, mse_rate, predict, tet
from .network import Network, mlp
from .neurons import LIFParams, lif_step, readout_step
from .optim import SGD, Adam, CosineDecay, ExponentialDecay, StepDecay, make_schedule
from .parameter import Parameter
from .surrogate import SURROGATES, surrogate_numpy

from .version import __version__

__all__ = [
    "LIF", "Layer", "Linear", "Readout", "SparseLinear", "Network", "mlp", "LIFParams", "lif_step",
    "readout_step", "SGD", "Adam", "CosineDecay", "ExponentialDecay", "StepDecay", "make_schedule",
    "Parameter", "SURROGATES", "surrogate_numpy", "ce_count", "ce_membrane", "mse_rate", "tet",
    "get_loss", "predict", "count_correct", "__version__",
]
