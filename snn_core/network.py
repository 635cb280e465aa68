"""Sequential network: the forward pass over all time steps and BPTT back.

Because every layer processes the whole sequence ``(T, batch, features)``
in one call (see :mod:`snn_core.layers`), the network's time loop is the
layers' own: forward goes layer by layer, each over all T steps, and the
backward pass goes layer by layer in reverse, each running BPTT over all T
steps. For a feed-forward network this is exactly backpropagation through
time of the step-by-step unrolled graph.
"""
from __future__ import annotations

import contextlib

import numpy as np

from .backends import get_backend
from .layers import LIF, Layer, Linear, Readout, SparseLinear, check_finite

#: what a layer call runs under when no timer is given (shared: it keeps no state)
_UNTIMED = contextlib.nullcontext()


def _check_input(x, read):
    """Raise ValueError if the input features that the forward reads (``read``, None: all) hold NaN/Inf."""
    check_finite(x if read is None else x[..., read.view(bool)], "network input")


class Network:
    """A sequence of layers.

    Parameters
    ----------
    layers : list of Layer
        Consecutive sizes must match (``out_features`` of one equals
        ``in_features`` of the next). If two layers share a name, every layer
        is renamed ``"<index>_<name>"`` (and its parameters with it).

    Attributes
    ----------
    recorded : dict
        After ``forward(x, record=True)``: layer name -> that layer's
        ``recorded`` dict (``"u"``, ``"v"``, ``"spikes"`` for LIF layers, ``"u"`` for
        the readout, ``"current"`` for synaptic layers),
        every array ``(T, batch, features)``.
    """

    def __init__(self, layers):
        layers = list(layers)
        if not layers:
            raise ValueError("layers: expected at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers[{i}]: expected a Layer, got {type(layer).__name__}")
        for i in range(1, len(layers)):
            a, b = layers[i - 1], layers[i]
            if a.out_features != b.in_features:
                raise ValueError(
                    f"layers[{i}] ({b.name}): expects {b.in_features} inputs but layers[{i-1}] ({a.name}) "
                    f"gives {a.out_features}"
                )
        devices = sorted({layer.backend.name for layer in layers})
        if len(devices) > 1:
            raise ValueError(f"layers: on different backends {devices}; move them first (layer.to(device)) "
                             "or move the network afterwards (net.to(device))")
        names = [layer.name for layer in layers]
        if len(set(names)) != len(names):
            for i, layer in enumerate(layers):
                layer.name = f"{i}_{layer.name or type(layer).__name__.lower()}"
                for p in layer.parameters():  # keep error messages pointing at the right layer
                    p.name = f"{layer.name}.{p.name.rsplit('.', 1)[-1]}"
        layers[0].need_input_grad = False
        for layer in layers[1:]:
            layer.need_input_grad = True
        self.layers = layers
        self.recorded = {}

    @property
    def in_features(self):
        """Input size of the first layer."""
        return self.layers[0].in_features

    @property
    def out_features(self):
        """Output size of the last layer."""
        return self.layers[-1].out_features

    def forward(self, x, record=False, timer=None):
        """Run all layers over all time steps.

        Parameters
        ----------
        x : ndarray (T, batch, in_features)
            Input spikes or currents, the layers' dtype (float32 by default);
            or spikes (or spike counts) as uint8 or bool, which give the
            same bits as their float values. A first ``SparseLinear`` on the
            ``cpu`` backend packs a 0/1 uint8 input as it is, without a float
            copy (``bernoulli_encode(..., dtype=np.uint8)`` writes such
            input); elsewhere it is converted on the way in.
        record : bool
            Keep every layer's membrane and spikes in ``self.recorded``.
            Without it, neurons whose spikes reach nothing (hidden neurons
            without outgoing connections, on the ``cpu`` backend) are not
            simulated, and input features that only they read are not read
            (:meth:`input_rows_needed`): the output and the gradients are
            the same bits, and the work follows the connections that exist
            (the layers module docstring, "row masks"). With it, every
            neuron is simulated and every input read.
        timer : callable or None
            ``timer(name)`` returns a context manager that times one call
            (a :class:`~snn_core.profiling.PhaseTimer`); each top-level
            layer's forward is then charged to ``"<layer name> forward"``.

        Returns
        -------
        ndarray (T, batch, out_features)
        """
        first = self.layers[0]
        float_host = isinstance(x, np.ndarray) and x.dtype.kind == "f"  # uint8/bool input holds no NaN/Inf
        masks = None if record else self._forward_masks()
        read = masks[0][1] if masks is not None and masks[0] is not None else None  # input features read
        # A first layer that packs spikes checks every value it reads for 0/1 on the way (NaN and Inf fail it)
        # and changes no state: then the separate pass over the input is only needed when it was not spikes.
        deferred = float_host and first.packs_spikes
        if float_host and not deferred:
            _check_input(x, read)
        h = x
        for i, layer in enumerate(self.layers):
            with _UNTIMED if timer is None else timer(f"{layer.name} forward"):
                if masks is None or masks[i] is None:
                    h = layer.forward(h, record=record)
                else:
                    h = layer.forward(h, live=masks[i][0], live_in=masks[i][1])
            if deferred and layer is first and not first.input_was_spikes:
                _check_input(x, read)
        self.recorded = {m.name: m.recorded for m in self.modules() if record and m.recorded}
        return h

    def input_rows_needed(self):
        """The input features that :meth:`forward` reads: a uint8 mask (1 = read), or None for all of them.

        Without ``record``, an input feature whose connections all end at
        neurons whose spikes reach nothing (or that has no connection) is
        neither read nor checked for NaN/Inf: it changes no output and no
        gradient. The mask changes when the structure does (rewiring) or a
        layer's ``retain_output_grad`` is set. Backends without row masks
        read every input (None). The array is read-only and the same object
        until the mask changes (:class:`~snn_core.data.EncodeAhead` relies on
        that to skip comparing masks).
        """
        self._forward_masks()
        return self._kept_masks[2]

    def _forward_masks(self):
        """:meth:`_compute_forward_masks`, kept until some layer's ``row_mask_key`` changes.

        The walk ran twice per training step (the encoder's mask, then the
        forward): about 17 us of Python a step on the Emerald Rapids guest
        (docs/benchmarks.md), 1.5% of a step at density 0.01.
        """
        key = tuple(k for layer in self.layers for k in (layer, *layer.row_mask_key))
        kept = self.__dict__.get("_kept_masks")
        if kept is not None and len(kept[0]) == len(key) and all(a is b for a, b in zip(kept[0], key)):
            return kept[1]
        masks = self._compute_forward_masks()
        read = None if masks is None or masks[0] is None else masks[0][1]
        if read is not None:  # what input_rows_needed hands out: read-only, so that no caller changes the masks
            read = read.view()
            read.flags.writeable = False
        self._kept_masks = (key, masks, read)
        return masks

    def _compute_forward_masks(self):
        """Per layer, (live, live_in) row masks for its forward, or None (every row); None when no layer has any.

        Walks up from the output: a layer's output rows that the next layer
        does not read (``input_rows_needed``; e.g. hidden neurons without
        outgoing connections) are not computed, and neither are the rows
        before them that only they read, down to the network's input
        features. Only between neighbours that both take row masks (the
        layers module docstring), and into a first layer that takes them.
        """
        layers = self.layers
        out_live = [None] * len(layers)  # the output rows of each layer that something reads (None: all)
        for i in range(len(layers) - 1, 0, -1):
            if layers[i].takes_row_masks and layers[i - 1].takes_row_masks:
                out_live[i - 1] = layers[i].input_rows_needed(out_live[i])
        in_live = [layers[0].input_rows_needed(out_live[0]) if layers[0].takes_row_masks else None] + out_live[:-1]
        if in_live[0] is None and all(m is None for m in out_live):  # in_live[1:] are out_live[:-1]
            return None
        return [None if out_live[i] is None and in_live[i] is None else (out_live[i], in_live[i])
                for i in range(len(layers))]

    __call__ = forward

    def backward(self, grad_out, timer=None):
        """BPTT: accumulate every parameter's gradient from dL/d(output).

        ``grad_out`` has the output's shape ``(T, batch, out_features)``;
        ``timer`` as in :meth:`forward` (phases ``"<layer name> backward"``).
        """
        g, live = grad_out, None
        layers = self.layers
        for i in range(len(layers) - 1, -1, -1):
            layer = layers[i]
            with _UNTIMED if timer is None else timer(f"{layer.name} backward"):
                if layer.takes_row_masks:  # pass on which gradient rows are zero (layers module docstring)
                    g = layer.backward(g, live=live, mask_out=i > 0 and layers[i - 1].takes_row_masks)
                    live = layer.input_grad_live
                else:
                    g = layer.backward(g)
                    live = None

    def parameters(self):
        """Every layer's :class:`~snn_core.parameter.Parameter`, in layer order."""
        return [p for layer in self.layers for p in layer.parameters()]

    def zero_grad(self):
        """Reset all gradients (lazily: the next backward overwrites them)."""
        for p in self.parameters():
            p.zero_grad()

    def modules(self):
        """Every layer with the sub-layers of blocks flattened (a block's ``children`` replace it), in order."""
        out = []

        def walk(layers):
            for layer in layers:
                kids = getattr(layer, "children", None)
                if kids is None:
                    out.append(layer)
                else:
                    walk(kids)

        walk(self.layers)
        return out

    def train(self, mode=True):
        """Training mode (batch statistics in batch norm) for every layer; returns self."""
        for m in self.modules() + self.layers:
            m.training = bool(mode)
        return self

    def eval(self):
        """Evaluation mode (running statistics in batch norm); returns self."""
        return self.train(False)

    def sparse_layers(self):
        """The layers rewiring acts on: those with a sparse ``weight`` and ``set_connections``.

        SparseLinear and SparseConv2d, inside residual blocks too (:meth:`modules`).
        """
        return [layer for layer in self.modules() if hasattr(layer, "set_connections")]

    def check_finite(self):
        """Raise ValueError naming the first parameter holding NaN/Inf."""
        for layer in self.layers:
            for p in layer.parameters():
                n_bad = layer.backend.nonfinite_count(p.value)
                if n_bad:
                    raise ValueError(f"{p.name}: contains {n_bad} NaN/Inf value(s)")

    # -- devices and state ----------------------------------------------------------
    @property
    def backend(self):
        """The backend every layer runs on (see :meth:`to`)."""
        return self.layers[0].backend

    @property
    def device(self):
        """Name of that backend: ``"reference"``, ``"cpu"`` or ``"cuda"``."""
        return self.backend.name

    def to(self, device):
        """Move every layer to backend ``device`` ("reference", "cpu", "cuda"); returns self.

        Weights, structure and biases move; gradients restart at zero. An
        optimizer over these parameters moves its state at its next step.
        """
        bk = get_backend(device)
        for layer in self.layers:
            layer.to(bk)
        return self

    def state_dict(self):
        """``{layer name: layer.state_dict()}`` for every layer with state (host arrays)."""
        out = {}
        for layer in self.modules():
            d = layer.state_dict()
            if d:
                out[layer.name] = d
        return out

    def load_state_dict(self, state):
        """Load :meth:`state_dict` output; layers missing from ``state`` are left as they are."""
        for layer in self.modules():
            if layer.name in state:
                layer.load_state_dict(state[layer.name])

    def __repr__(self):
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Network(\n  {inner}\n)"


def mlp(sizes, density=1.0, hidden=None, readout=None, output="readout", sparse=True, seed=0,
        gain=1.0, dtype=np.float32, densities=None):
    """Build ``sizes[0] -> sizes[1] -> ... -> sizes[-1]`` with LIF hidden layers.

    Parameters
    ----------
    sizes : list of int, e.g. ``[784, 800, 10]``
    density : float
        Density of every synaptic layer (use ``densities`` for one per layer,
        e.g. from :func:`snn_core.structure.init.erdos_renyi_densities`).
    hidden, readout : LIFParams
        Neuron parameters of hidden LIF layers and of the output layer.
    output : {"readout", "lif"}
        Non-spiking leaky-integrator output (membrane losses) or spiking LIF
        output (spike-count / rate losses).
    sparse : bool
        SparseLinear (CSR) synapses, or dense Linear ones (density ignored).
    seed : int
        One seed for the whole network (each layer gets its own stream).
    """
    if len(sizes) < 2:
        raise ValueError(f"sizes: expected at least [n_in, n_out], got {sizes}")
    if output not in ("readout", "lif"):
        raise ValueError(f"output: expected 'readout' or 'lif', got {output!r}")
    n_syn = len(sizes) - 1
    densities = [density] * n_syn if densities is None else list(densities)
    if len(densities) != n_syn:
        raise ValueError(f"densities: expected {n_syn} values, got {len(densities)}")
    rngs = np.random.default_rng(seed).spawn(n_syn)
    layers = []
    for i in range(n_syn):
        n_in, n_out = sizes[i], sizes[i + 1]
        if sparse:
            layers.append(SparseLinear(n_in, n_out, densities[i], seed=rngs[i], gain=gain, dtype=dtype, name=f"fc{i+1}"))
        else:
            layers.append(Linear(n_in, n_out, seed=rngs[i], gain=gain, dtype=dtype, name=f"fc{i+1}"))
        last = i == n_syn - 1
        if last and output == "readout":
            layers.append(Readout(n_out, readout, dtype=dtype, name="readout"))
        else:
            layers.append(LIF(n_out, readout if last else hidden, dtype=dtype, name=f"lif{i+1}"))
    return Network(layers)
