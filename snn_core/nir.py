"""NIR export and import: trained networks to neuromorphic hardware and back.

`NIR <https://neuroir.org>`_ (the ``nir`` package, an optional dependency:
``pip install "snn_core[nir]"``) is the interchange format that snnTorch,
Norse, Rockpool, Sinabs, Lava, SpiNNaker2, Xylo and others read. A NIR graph
describes continuous-time neurons; snn_core simulates them with one explicit
Euler step of ``dt`` per time step. The mapping (equations side by side in
``docs/nir.md``)::

    snn_core layer                        NIR node(s)
    SparseLinear / Linear (bias)     <->  Affine(weight (n_out, n_in) dense, zeros = no connection, bias)
    SparseLinear / Linear (no bias)  <->  Linear(weight)
    LIF, reset "hard"                <->  LIF(tau, r, v_leak, v_threshold, v_reset)
    LIF, reset "none"                <->  LI(tau, r, v_leak) -> Threshold(v_threshold)
    LIF, reset "soft"                 ->  LIF + node metadata (only with allow_soft_reset=True)
    Readout                          <->  LI(tau, r, v_leak)

with ``tau = tau_m * dt / p.dt`` (``p.dt``: the layer's own step, ``dt``: the
step in the graph's time unit), ``r = R``, ``v_leak = v_rest``,
``v_threshold = v_th``. Every node also carries ``snn_core_*`` metadata (the
exact layer parameters, the reset mode, the surrogate, which connections hold
an explicit zero weight), so ``from_nir(to_nir(net, dt), dt)`` rebuilds the
network bit for bit; other tools ignore the metadata.

Layer types are looked up in two tables, ``EXPORTERS`` (snn_core class ->
function) and ``IMPORTERS`` (NIR class name -> function); a new layer type
(``Conv2d``, ``AvgPool2d``, ``Flatten``) is one entry in each. Anything
without an entry is refused with a ``ValueError`` naming it. All reading of
layer internals goes through ``_synapse_arrays`` / ``_neuron_params`` and all
construction through ``_build_synapse`` / ``_build_neurons``.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .layers import FLOAT_DTYPES, LIF, Linear, Readout, SparseLinear
from .network import Network
from .neurons import LIFParams

#: prefix of the metadata keys snn_core writes into (and reads from) NIR nodes
META = "snn_core_"

#: NIR node types with no snn_core counterpart (yet), and why
UNSUPPORTED_NIR = {
    "Conv1d": "snn_core has no 1-D convolution layer",
    "Conv2d": "NIR import/export of snn_core.conv layers is not implemented yet",
    "AvgPool2d": "NIR import/export of snn_core.conv layers is not implemented yet",
    "SumPool2d": "snn_core has no sum-pooling layer",
    "Flatten": "NIR import/export of snn_core.conv layers is not implemented yet",
    "CubaLIF": "snn_core's LIF has no synaptic-current state (tau_syn)",
    "CubaLI": "snn_core's readout has no synaptic-current state (tau_syn)",
    "IF": "a non-leaky neuron needs tau = infinity; snn_core's Euler LIF needs dt <= tau_m",
    "I": "a non-leaky integrator needs tau = infinity; snn_core's Euler readout needs dt <= tau_m",
    "Delay": "snn_core has no synaptic delays",
    "Scale": "snn_core has no elementwise scaling layer",
    "NIRGraph": "nested subgraphs are not supported; flatten the graph first",
}


def _nir():
    try:
        import nir
    except ImportError:
        raise ImportError("NIR support needs the 'nir' package: pip install 'nir>=1.0' "
                          "(or the snn_core extra: pip install 'snn_core[nir]')") from None
    return nir


def _check_dt(dt):
    if isinstance(dt, bool) or not isinstance(dt, (int, float, np.floating, np.integer)):
        raise TypeError(f"dt: expected a real number (the duration of one time step), got {type(dt).__name__}")
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt: must be a finite number > 0, got {dt!r}")
    return float(dt)


# --------------------------------------------------------------------------
# the adapter: the only code that reads or builds layer internals
# --------------------------------------------------------------------------
def _synapse_arrays(layer):
    """(dense weight (n_out, n_in), bias or None, kind, flat positions of stored zero weights)."""
    if isinstance(layer, SparseLinear):
        w = layer.weight
        W = w.toarray()
        rows = np.repeat(np.arange(w.shape[0], dtype=np.int64), np.diff(w.indptr))
        zero = w.data == 0
        explicit = rows[zero] * w.shape[1] + w.indices[zero].astype(np.int64)
        kind = "SparseLinear"
    else:
        W, explicit, kind = np.array(layer.weight, copy=True), np.zeros(0, np.int64), "Linear"
    bias = None if layer.bias is None else np.array(layer.backend.to_host(layer.bias.value), copy=True)
    return W, bias, kind, explicit


def _neuron_params(layer) -> LIFParams:
    return layer.params


def _build_synapse(kind, W, bias, explicit_zeros, dtype, name):
    """A SparseLinear (connections = nonzero entries + ``explicit_zeros``) or a dense Linear."""
    from scipy import sparse

    n_out, n_in = W.shape
    if kind == "Linear":
        layer = Linear(n_in, n_out, bias=bias is not None, dtype=dtype, weight=W, name=name)
    else:
        mask = W != 0
        if explicit_zeros is not None and len(explicit_zeros):
            mask.flat[explicit_zeros] = True
        rows, cols = np.nonzero(mask)
        csr = sparse.csr_matrix((W[rows, cols].astype(dtype), (rows, cols)), shape=W.shape)
        layer = SparseLinear(n_in, n_out, bias=bias is not None, dtype=dtype, weight=csr, name=name)
    if bias is not None:
        layer.bias.value[...] = bias
    return layer


def _build_neurons(cls, n, params, dtype, name):
    return cls(n, params, dtype=dtype, name=name)


# --------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------
def _export_synapse(layer, dt, options):
    nir = _nir()
    W, bias, kind, explicit = _synapse_arrays(layer)
    meta = {META + "layer": kind}
    if len(explicit):
        meta[META + "explicit_zeros"] = explicit
    node = nir.Linear(weight=W, metadata=meta) if bias is None else nir.Affine(weight=W, bias=bias, metadata=meta)
    return [(layer.name, node)]


def _neuron_arrays(p: LIFParams, n, dt):
    """NIR's per-neuron parameter arrays (float64) for parameters ``p`` at step ``dt``."""
    tau = p.tau_m * (dt / p.dt)  # the layer's step p.dt lasts dt in the graph's time unit
    full = lambda v: np.full(n, v, np.float64)  # noqa: E731
    return {"tau": full(tau), "r": full(p.R), "v_leak": full(p.v_rest), "v_threshold": full(p.v_th),
            "v_reset": full(p.v_reset)}


def _neuron_meta(layer, p: LIFParams):
    meta = {META + "layer": type(layer).__name__, META + "tau_m": p.tau_m, META + "dt": p.dt,
            META + "reset": p.reset, META + "detach_reset": bool(p.detach_reset), META + "surrogate": p.surrogate,
            META + "v_th": p.v_th, META + "v_reset": p.v_reset}  # v_th, v_reset: a readout's (unused) values
    if p.surrogate_param is not None:
        meta[META + "surrogate_param"] = float(p.surrogate_param)
    return meta


def _export_lif(layer, dt, options):
    nir = _nir()
    p = _neuron_params(layer)
    if p.spike_fn != "heaviside":
        raise ValueError(f"layer {layer.name!r}: spike_fn={p.spike_fn!r} is a test-only smooth spike; "
                         "NIR neurons emit 0/1 spikes (use spike_fn='heaviside')")
    a, meta = _neuron_arrays(p, layer.out_features, dt), _neuron_meta(layer, p)
    if p.reset == "none":  # threshold without reset: a leaky integrator followed by a threshold
        li = nir.LI(tau=a["tau"], r=a["r"], v_leak=a["v_leak"], metadata=meta)
        return [(layer.name, li), (f"{layer.name}_threshold", nir.Threshold(threshold=a["v_threshold"],
                                                                             metadata={META + "layer": "LIF"}))]
    if p.reset == "soft" and not options.get("allow_soft_reset"):
        raise ValueError(f"layer {layer.name!r}: soft reset (v -= v_th after a spike) has no NIR primitive "
                         "(NIR's LIF resets to v_reset); pass allow_soft_reset=True (CLI --allow-soft-reset) to "
                         "export it as LIF with the reset mode in the node metadata, which other tools ignore")
    return [(layer.name, nir.LIF(metadata=meta, **a))]


def _export_readout(layer, dt, options):
    nir = _nir()
    p = _neuron_params(layer)
    a = _neuron_arrays(p, layer.out_features, dt)
    return [(layer.name, nir.LI(tau=a["tau"], r=a["r"], v_leak=a["v_leak"], metadata=_neuron_meta(layer, p)))]


#: snn_core layer class -> function(layer, dt, options) -> [(node name, NIR node), ...]
EXPORTERS = {SparseLinear: _export_synapse, Linear: _export_synapse, LIF: _export_lif, Readout: _export_readout}


def to_nir(network, dt, allow_soft_reset=False):
    """The NIR graph of ``network``: ``input -> layer nodes -> output``.

    Parameters
    ----------
    network : Network
        Layers of the types in ``EXPORTERS`` (Linear, SparseLinear, LIF,
        Readout); anything else raises ValueError naming the layer.
    dt : float
        Duration of one time step in the graph's time unit (seconds for most
        hardware). Time constants are written as ``tau = tau_m * dt / p.dt``.
    allow_soft_reset : bool
        Export soft-reset LIF layers as NIR ``LIF`` with the reset mode kept in
        node metadata (only snn_core reads it: other tools reset to
        ``v_reset``). Without it such layers raise ValueError.

    Returns
    -------
    nir.NIRGraph
        Nodes named after the layers (plus ``input``, ``output`` and
        ``<name>_threshold`` for no-reset LIF layers), edges in layer order.
        Weights keep the layers' dtype; neuron parameters are float64 arrays
        of one value per neuron.
    """
    nir = _nir()
    from .version import __version__

    if not isinstance(network, Network):
        raise TypeError(f"network: expected a snn_core Network, got {type(network).__name__}")
    dt = _check_dt(dt)
    options = {"allow_soft_reset": bool(allow_soft_reset)}
    nodes = {"input": nir.Input(input_type={"input": np.array([network.in_features])})}
    for layer in network.layers:
        export = EXPORTERS.get(type(layer))
        if export is None:
            raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}): no NIR mapping; supported layer types: "
                             f"{', '.join(c.__name__ for c in EXPORTERS)}")
        for name, node in export(layer, dt, options):
            if name in ("input", "output") or name in nodes:
                raise ValueError(f"layer {layer.name!r}: node name {name!r} is taken; rename the layer")
            nodes[name] = node
    nodes["output"] = nir.Output(output_type={"output": np.array([network.out_features])})
    names = list(nodes)
    meta = {META + "version": __version__, META + "dt": dt,
            META + "discretisation": "explicit Euler: u[t] = v[t-1] + dt/tau*((v_leak - v[t-1]) + r*I[t]), "
                                     "I[t] = W x[t] + b of the same step, spike s[t] = (u[t] >= v_threshold), "
                                     "v[t] = v_reset where s[t] = 1 else u[t]; v[-1] = v_leak"}
    return nir.NIRGraph(nodes=nodes, edges=list(zip(names[:-1], names[1:])), metadata=meta)


def write_nir(network, path, dt, allow_soft_reset=False):
    """Export ``network`` (see :func:`to_nir`) and write it to ``path`` atomically.

    The file is written under a temporary name and renamed, so an existing
    file is replaced only by a complete one. Returns the graph.
    """
    import os

    nir = _nir()
    graph = to_nir(network, dt, allow_soft_reset=allow_soft_reset)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        nir.write(str(tmp), graph)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return graph


def read_nir(path):
    """Read a NIR file with ``nir.read``; a clear one-line error if it is not one."""
    nir = _nir()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NIR file {path}: no such file")
    try:
        return nir.read(str(path))
    except Exception as e:  # h5py/nir raise OSError, KeyError, AssertionError, ... for foreign files
        raise ValueError(f"NIR file {path}: not a readable NIR graph ({type(e).__name__}: {e})") from None


# --------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------
def _meta(node, key, default=None):
    v = (getattr(node, "metadata", None) or {}).get(META + key, default)
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v.item()
    if isinstance(v, np.generic):
        v = v.item()
    return v


def _uniform(name, node, field, n):
    """The one value of a per-neuron parameter array (ValueError if they differ or the size is wrong)."""
    a = np.asarray(getattr(node, field), dtype=np.float64)
    if a.ndim == 0:
        a = np.full(n, float(a))
    if a.shape != (n,):
        raise ValueError(f"node {name!r}: {field} has shape {a.shape}, expected ({n},)")
    if a.size and not np.all(a == a[0]):
        raise ValueError(f"node {name!r}: {field} differs between neurons ({a.min():g} .. {a.max():g}); "
                         "snn_core's neuron layers share one value per layer")
    return float(a[0]) if a.size else 0.0


def _size(name, node):
    for field in ("tau", "r", "threshold"):
        if hasattr(node, field):
            a = np.asarray(getattr(node, field))
            if a.ndim != 1:
                raise ValueError(f"node {name!r}: expected 1-D parameters (one per neuron), got shape {a.shape}")
            return a.shape[0]
    raise ValueError(f"node {name!r}: cannot tell its number of neurons")


def _params_from_nir(name, node, dt, reset, v_th=None, v_reset=None):
    """LIFParams for a NIR LIF/LI node: the snn_core metadata's exact values when they agree with the node."""
    n = _size(name, node)
    tau, r, v_leak = (_uniform(name, node, f, n) for f in ("tau", "r", "v_leak"))
    if v_th is None:  # an LI readout has no threshold or reset; LIFParams needs values (unused)
        v_th = float(_meta(node, "v_th", 1.0))
    if v_reset is None:
        v_reset = float(_meta(node, "v_reset", 0.0))
    kw = dict(v_th=v_th, v_rest=v_leak, v_reset=v_reset, R=r, reset=reset)
    for key in ("detach_reset", "surrogate", "surrogate_param"):
        if _meta(node, key) is not None:
            kw[key] = _meta(node, key)
    tau_m0, dt0 = _meta(node, "tau_m"), _meta(node, "dt")
    try:
        if tau_m0 is not None and dt0 is not None and float(tau_m0) * (dt / float(dt0)) == tau:
            return n, LIFParams(tau_m=float(tau_m0), dt=float(dt0), **kw)  # exactly the exported layer
        return n, LIFParams(tau_m=tau, dt=dt, **kw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"node {name!r}: {e}") from None


def _import_synapse(name, node, ctx):
    W = np.asarray(node.weight)
    if W.ndim != 2:
        raise ValueError(f"node {name!r}: expected a 2-D weight (n_out, n_in), got shape {W.shape}")
    bias = None
    if hasattr(node, "bias"):
        bias = np.asarray(node.bias)
        if bias.ndim == 0:
            bias = np.full(W.shape[0], bias)
        if bias.shape != (W.shape[0],):
            raise ValueError(f"node {name!r}: bias has shape {bias.shape}, expected ({W.shape[0]},)")
    for what, arr in (("weight", W), ("bias", bias)):
        if arr is not None and not np.all(np.isfinite(arr)):
            raise ValueError(f"node {name!r}: {what} contains NaN/Inf")
    keep_zeros = ctx["keep_zeros"]
    if keep_zeros is None:  # the exported layer's own kind and explicit zeros, else zeros = no connection
        kind, explicit = _meta(node, "layer", "SparseLinear"), _meta(node, "explicit_zeros")
        kind = kind if kind in ("Linear", "SparseLinear") else "SparseLinear"
    else:
        kind, explicit = ("Linear" if keep_zeros else "SparseLinear"), None
    if explicit is not None:
        explicit = np.atleast_1d(np.asarray(explicit, np.int64))
        if explicit.size and (explicit.min() < 0 or explicit.max() >= W.size):
            raise ValueError(f"node {name!r}: metadata {META}explicit_zeros points outside the weight matrix")
    return [_build_synapse(kind, W.astype(ctx["dtype"]), None if bias is None else bias.astype(ctx["dtype"]),
                           explicit, ctx["dtype"], name)]


def _import_lif(name, node, ctx):
    n = _size(name, node)
    v_th, v_reset = _uniform(name, node, "v_threshold", n), _uniform(name, node, "v_reset", n)
    reset = "soft" if _meta(node, "reset") == "soft" else "hard"
    n, p = _params_from_nir(name, node, ctx["dt"], reset, v_th, v_reset)
    return [_build_neurons(LIF, n, p, ctx["dtype"], name)]


def _import_li(name, node, ctx):
    nxt = ctx["next"]
    if nxt is not None and type(nxt[1]).__name__ == "Threshold":  # LI -> Threshold = LIF without reset
        tname, thr = nxt
        n = _size(name, node)
        v_th = _uniform(tname, thr, "threshold", n)
        n, p = _params_from_nir(name, node, ctx["dt"], "none", v_th, 0.0)
        ctx["consumed"] = 1
        return [_build_neurons(LIF, n, p, ctx["dtype"], name)]
    reset = _meta(node, "reset", "none")
    n, p = _params_from_nir(name, node, ctx["dt"], reset if reset in ("hard", "soft", "none") else "none")
    return [_build_neurons(Readout, n, p, ctx["dtype"], name)]


#: NIR class name -> function(name, node, ctx) -> [Layer, ...]
IMPORTERS = {"Affine": _import_synapse, "Linear": _import_synapse, "LIF": _import_lif, "LI": _import_li}


def _chain(graph):
    """The graph's nodes from its single Input to its single Output, as [(name, node)], or ValueError."""
    kinds = {name: type(node).__name__ for name, node in graph.nodes.items()}
    inputs = [k for k, t in kinds.items() if t == "Input"]
    outputs = [k for k, t in kinds.items() if t == "Output"]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"graph: expected exactly one Input and one Output node, got inputs {inputs}, "
                         f"outputs {outputs}")
    succ, n_in = {}, {k: 0 for k in graph.nodes}
    for edge in graph.edges:
        a, b = edge
        for end in (a, b):
            if end not in graph.nodes:
                raise ValueError(f"graph: edge {a!r} -> {b!r} names an unknown node {end!r}")
        if a in succ:
            raise ValueError(f"graph: node {a!r} feeds several nodes ({succ[a]!r}, {b!r}); only feed-forward "
                             "chains (one path from input to output) are supported")
        succ[a] = b
        n_in[b] += 1
        if n_in[b] > 1:
            raise ValueError(f"graph: node {b!r} has several inputs; only feed-forward chains are supported")
    order, name = [], inputs[0]
    while name != outputs[0]:
        if name not in succ:
            raise ValueError(f"graph: the path from {inputs[0]!r} ends at {name!r} before reaching the output")
        name = succ[name]
        if name in order:
            raise ValueError(f"graph: a cycle through {name!r} (recurrent graphs are not supported)")
        order.append(name)
    order = order[:-1]  # drop the output
    off_path = sorted(set(graph.nodes) - set(order) - {inputs[0], outputs[0]})
    if off_path:
        raise ValueError(f"graph: node(s) {off_path} are not on the input -> output path")
    return [(k, graph.nodes[k]) for k in order if kinds[k] != "Identity"]


def from_nir(graph, dt, keep_zeros=None, dtype=None, fold_r=False):
    """A :class:`~snn_core.network.Network` simulating a NIR graph with Euler steps of ``dt``.

    Parameters
    ----------
    graph : nir.NIRGraph or str or Path
        A feed-forward chain ``Input -> ... -> Output`` of ``Affine`` /
        ``Linear``, ``LIF``, ``LI`` (-> ``Threshold``) and ``Identity`` nodes,
        or the path of a ``.nir`` file. Other node types, branches, cycles,
        and per-neuron parameters that differ within a layer raise
        ValueError naming the node.
    dt : float
        Duration of one time step in the graph's time unit; ``LIFParams``
        get ``tau_m = tau`` and this ``dt`` (or the exported layer's exact
        values, when the node's snn_core metadata agrees with its ``tau``).
    keep_zeros : None, bool
        How a weight matrix becomes connections. False: zero entries are
        absent connections (a ``SparseLinear`` of the nonzero entries).
        True: every entry is a connection (a dense ``Linear``). None
        (default): what the snn_core metadata says (layer kind and explicit
        zero-weight connections), else as False.
    dtype : float32, float64 or None
        Dtype of the layers; None: the first weight's (float32 unless it is
        float64).
    fold_r : bool
        Multiply each neuron layer's resistance ``r`` into the weights and
        bias of the synaptic layer before it and set ``R = 1`` (what a
        :class:`~snn_core.config.TrainConfig` can describe; the same
        dynamics up to float rounding).

    Returns
    -------
    Network
        Layers named after the nodes (a no-reset LIF after its LI node).
    """
    nir = _nir()
    dt = _check_dt(dt)
    if isinstance(graph, (str, Path)):
        graph = read_nir(graph)
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"graph: expected a nir.NIRGraph or a file path, got {type(graph).__name__}")
    if keep_zeros is not None and not isinstance(keep_zeros, bool):
        raise TypeError(f"keep_zeros: expected None, True or False, got {keep_zeros!r}")
    chain = _chain(graph)
    if not chain:
        raise ValueError("graph: no nodes between input and output")
    if dtype is None:
        first = next((np.asarray(n.weight).dtype for _, n in chain if hasattr(n, "weight")), np.dtype(np.float32))
        dtype = first if first.type in FLOAT_DTYPES else np.dtype(np.float32)
    dtype = np.dtype(dtype)
    if dtype.type not in FLOAT_DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    layers, i = [], 0
    while i < len(chain):
        name, node = chain[i]
        kind = type(node).__name__
        importer = IMPORTERS.get(kind)
        if importer is None:
            why = UNSUPPORTED_NIR.get(kind, "no snn_core counterpart")
            if kind == "Threshold":
                why = "a Threshold is supported only directly after an LI node (a LIF without reset)"
            raise ValueError(f"node {name!r} ({kind}): cannot import: {why}; supported: "
                             f"{', '.join(IMPORTERS)}, LI -> Threshold, Identity")
        ctx = {"dt": dt, "dtype": dtype, "keep_zeros": keep_zeros, "consumed": 0,
               "next": chain[i + 1] if i + 1 < len(chain) else None}
        layers += importer(name, node, ctx)
        i += 1 + ctx["consumed"]
    if fold_r:
        _fold_r(layers)
    try:
        return Network(layers)
    except ValueError as e:
        raise ValueError(f"graph: {e}") from None


def _fold_r(layers):
    """Move each neuron layer's R into the weights of the synaptic layer just before it."""
    import dataclasses

    for prev, layer in zip(layers[:-1], layers[1:]):
        if not isinstance(layer, (LIF, Readout)) or not isinstance(prev, (Linear, SparseLinear)):
            continue
        p = _neuron_params(layer)
        if p.R == 1.0:
            continue
        W, bias, kind, explicit = _synapse_arrays(prev)
        scaled = _build_synapse(kind, W * p.R, None if bias is None else bias * p.R, explicit, prev.dtype, prev.name)
        layers[layers.index(prev)] = scaled
        layer.params = dataclasses.replace(p, R=1.0)
    for prev, layer in zip(layers[:-1], layers[1:]):
        if isinstance(layer, (LIF, Readout)) and _neuron_params(layer).R != 1.0:
            raise ValueError(f"layer {layer.name!r}: r={_neuron_params(layer).R:g} cannot be folded: no synaptic "
                             "layer before it")


# --------------------------------------------------------------------------
# inspection
# --------------------------------------------------------------------------
def describe(graph):
    """One row per node: name, NIR type, input/output shape, and for weights nnz and density.

    Returns a list of dicts with keys ``name``, ``type``, ``in``, ``out``
    (tuples) and, for ``Affine``/``Linear`` nodes, ``nnz`` (nonzero weights)
    and ``density``; neuron nodes add their parameter values (``tau``, ``r``,
    ``v_leak``, ``v_threshold``, ``v_reset`` where present; first neuron's).
    """
    rows = []
    for name, node in graph.nodes.items():
        shape = lambda t: tuple(int(v) for v in np.atleast_1d(next(iter(t.values()))))  # noqa: E731
        row = {"name": name, "type": type(node).__name__, "in": shape(node.input_type), "out": shape(node.output_type)}
        if hasattr(node, "weight"):
            W = np.asarray(node.weight)
            row["nnz"] = int(np.count_nonzero(W))
            row["density"] = row["nnz"] / W.size if W.size else 0.0
        for field in ("tau", "r", "v_leak", "v_threshold", "v_reset", "threshold"):
            if hasattr(node, field):
                row[field] = float(np.atleast_1d(getattr(node, field))[0])
        rows.append(row)
    return rows


def format_graph(graph):
    """:func:`describe` as a text table plus the edges (what ``snn-esl export`` prints)."""
    lines = [f"{'node':16s} {'type':10s} {'in':>10s} {'out':>10s} {'nnz':>9s} {'density':>8s}  parameters"]
    for r in describe(graph):
        nnz = f"{r['nnz']:9d} {r['density']:8.4f}" if "nnz" in r else f"{'':9s} {'':8s}"
        params = " ".join(f"{k}={r[k]:.6g}" for k in ("tau", "r", "v_leak", "v_threshold", "v_reset", "threshold")
                          if k in r)
        lines.append(f"{r['name']:16s} {r['type']:10s} {str(r['in']):>10s} {str(r['out']):>10s} {nnz}  {params}")
    lines.append("edges: " + ", ".join(f"{a} -> {b}" for a, b in graph.edges))
    return "\n".join(lines)


__all__ = ["EXPORTERS", "IMPORTERS", "UNSUPPORTED_NIR", "META", "to_nir", "from_nir", "write_nir", "read_nir",
           "describe", "format_graph"]
