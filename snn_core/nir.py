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
    SparseConv2d / Conv2d            <->  Conv2d(weight (c_out, c_in, kh, kw) dense, zeros = no connection, bias,
                                                 stride, padding, dilation 1, groups 1, input_shape (h, w))
    Conv + BatchNorm2d                ->  Conv2d with the running statistics folded in (conv.fold_batchnorm)
    AvgPool2d                        <->  AvgPool2d(kernel_size = stride = (k, k), padding 0)
    Flatten                          <->  Flatten(input_type (C, H, W), start_dim 0, end_dim -1)
    ResidualBlock                    <->  its branches' nodes; both branch ends feed the next node (NIR sums
                                          the edges into a node); an identity shortcut is an edge around the
                                          main branch
    MaxPool2d                         -   refused: NIR 1.0 has no max-pooling node

Activations keep snn_core's channel-major layout: NIR's ``(C, H, W)`` shapes
flattened in C order are exactly snn_core's features, so nothing is permuted.
Neuron nodes after a convolution carry parameter arrays of the activation's
shape ``(C, H, W)``.

with ``tau = tau_m * dt / p.dt`` (``p.dt``: the layer's own step, ``dt``: the
step in the graph's time unit), ``r = R``, ``v_leak = v_rest``,
``v_threshold = v_th``. Every node also carries ``snn_core_*`` metadata (the
exact layer parameters, the reset mode, the surrogate, which connections hold
an explicit zero weight), so ``from_nir(to_nir(net, dt), dt)`` rebuilds the
network bit for bit; other tools ignore the metadata.

Layer types are looked up in two tables, ``EXPORTERS`` (snn_core class ->
function) and ``IMPORTERS`` (NIR class name -> function); a new layer type is
one entry in each. Anything without an entry is refused with a
``ValueError`` naming it. All reading of layer internals goes through the
adapter (``_synapse_arrays``, ``_neuron_params``, ``_geometry``,
``_block_branches``, ``_fold_bn``) and all construction through
``_build_synapse`` / ``_build_neurons`` / ``_build_pool`` / ``_build_flatten``
/ ``_build_block``; the graph walk (``_export_layers``, ``_sequence``) only
connects nodes.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .conv import AvgPool2d, BatchNorm2d, Conv2d, Flatten, MaxPool2d, ResidualBlock, SparseConv2d, fold_batchnorm
from .layers import FLOAT_DTYPES, LIF, Linear, Readout, SparseLinear
from .network import Network
from .neurons import LIFParams

#: prefix of the metadata keys snn_core writes into (and reads from) NIR nodes
META = "snn_core_"

#: NIR node types with no snn_core counterpart (yet), and why
UNSUPPORTED_NIR = {
    "Conv1d": "snn_core has no 1-D convolution layer",
    "SumPool2d": "snn_core has no sum-pooling layer (AvgPool2d nodes import)",
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
    """(dense weight matrix, bias or None, kind, flat positions of stored zero weights).

    The matrix is ``(n_out, n_in)`` for Linear/SparseLinear and the kernel
    matrix ``(c_out, c_in*kh*kw)`` for a convolution (its C-order reshape is
    the kernel tensor ``(c_out, c_in, kh, kw)``, so flat positions agree).
    ``kind`` is the class name.
    """
    kind = type(layer).__name__
    if isinstance(layer, SparseLinear):  # SparseConv2d too: its CSR is the kernel matrix
        w = layer.weight
        W = w.toarray()
        rows = np.repeat(np.arange(w.shape[0], dtype=np.int64), np.diff(w.indptr))
        zero = w.data == 0
        explicit = rows[zero] * w.shape[1] + w.indices[zero].astype(np.int64)
    else:
        W, explicit = np.array(layer.weight, copy=True), np.zeros(0, np.int64)
    bias = None if layer.bias is None else np.array(layer.backend.to_host(layer.bias.value), copy=True)
    return W, bias, kind, explicit


def _neuron_params(layer) -> LIFParams:
    return layer.params


def _geometry(layer):
    """The :class:`~snn_core.geometry.ConvGeometry` of a convolution or pooling layer."""
    return layer.geometry


def _conv_args(layer):
    """``(c_in, (h, w), (kh, kw), stride, padding)`` of a convolution: what ``_build_synapse`` needs."""
    g = _geometry(layer)
    return (g.c_in, (g.h, g.w), (g.kh, g.kw), g.stride, g.pad)


def _block_branches(block):
    """(main layers, shortcut layers or None) of a ResidualBlock."""
    return block.main, block.shortcut


def _fold_bn(conv, bn):
    """``bn(conv(x))`` with bn's running statistics as one convolution (a ValueError names a mismatch)."""
    return fold_batchnorm(conv, bn)


#: synaptic layer kinds (class names) and whether they are convolutions
SYNAPSE_KINDS = {"Linear": False, "SparseLinear": False, "Conv2d": True, "SparseConv2d": True}


def _build_synapse(kind, W, bias, explicit_zeros, dtype, name, conv=None):
    """A sparse layer (connections = nonzero entries + ``explicit_zeros``) or a dense one.

    ``kind``: a key of ``SYNAPSE_KINDS``; ``W``: the 2-D weight (kernel)
    matrix; ``conv``: for convolutions, ``(c_in, (h, w), (kh, kw), stride, padding)``.
    """
    from scipy import sparse

    n_out, n_in = W.shape
    if kind in ("Linear", "Conv2d"):
        csr = W
    else:
        mask = W != 0
        if explicit_zeros is not None and len(explicit_zeros):
            mask.flat[explicit_zeros] = True
        rows, cols = np.nonzero(mask)
        csr = sparse.csr_matrix((W[rows, cols].astype(dtype), (rows, cols)), shape=W.shape)
    kw = dict(bias=bias is not None, dtype=dtype, weight=csr, name=name)
    if kind == "Linear":
        layer = Linear(n_in, n_out, **kw)
    elif kind == "SparseLinear":
        layer = SparseLinear(n_in, n_out, **kw)
    else:
        c_in, size, kernel, stride, padding = conv
        cls = Conv2d if kind == "Conv2d" else SparseConv2d
        layer = cls(c_in, n_out, kernel, stride, padding, input_size=size, **kw)
    if bias is not None:
        layer.bias.value[...] = bias
    return layer


def _build_neurons(cls, n, params, dtype, name):
    return cls(n, params, dtype=dtype, name=name)


def _build_pool(channels, size, kernel, dtype, name):
    return AvgPool2d(channels, size, kernel, dtype=dtype, name=name)


def _build_flatten(n, dtype, name):
    return Flatten(n, dtype=dtype, name=name)


def _build_block(main, shortcut, name):
    """A ResidualBlock of already-built layers, which keep the names they have (``<block>.<layer>``)."""
    names = [layer.name for layer in main + (shortcut or [])]
    block = ResidualBlock(main, shortcut, name=name)  # renames the sub-layers "<name>.<their name>"
    for layer, full in zip(block.children, names):
        layer.name = full
        for p in layer.parameters():
            p.name = f"{full}.{p.name.rsplit('.', 1)[-1]}"
    return block


def _out_shape(layer, shape):
    """The activation shape after ``layer`` given its input ``shape`` ((C, H, W) or (n,))."""
    if isinstance(layer, (SparseConv2d, Conv2d, AvgPool2d, MaxPool2d)):
        g = _geometry(layer)
        return (g.c_out, g.oh, g.ow)
    if isinstance(layer, ResidualBlock):
        for sub in _block_branches(layer)[0]:
            shape = _out_shape(sub, shape)
        return shape
    if isinstance(layer, Flatten) or isinstance(layer, (Linear, SparseLinear)):
        return (layer.out_features,)
    return shape


def _in_shape(layer):
    """The input shape a network's first layer implies: (C, H, W) for a convolution/pool, else (n,)."""
    while isinstance(layer, ResidualBlock):
        layer = _block_branches(layer)[0][0]
    if isinstance(layer, (SparseConv2d, Conv2d, AvgPool2d, MaxPool2d)):
        g = _geometry(layer)
        return (g.c_in, g.h, g.w)
    return (layer.in_features,)


# --------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------
def _export_synapse(layer, dt, options, shape):
    nir = _nir()
    W, bias, kind, explicit = _synapse_arrays(layer)
    meta = {META + "layer": kind}
    if len(explicit):
        meta[META + "explicit_zeros"] = explicit
    if SYNAPSE_KINDS[kind]:
        g = _geometry(layer)
        if g.kh != g.kw:  # nir 1.0 infers a Conv2d's output width from the kernel height: reading would fail
            raise ValueError(f"layer {layer.name!r}: kernel {g.kh}x{g.kw} is not square; NIR 1.0 computes a "
                             "Conv2d's output shape from the kernel height alone, so the file would not read back")
        meta[META + "bias"] = bias is not None  # NIR's Conv2d always has a bias: zeros where there was none
        b = np.zeros(g.c_out, W.dtype) if bias is None else bias
        node = nir.Conv2d(input_shape=(g.h, g.w), weight=W.reshape(g.c_out, g.c_in, g.kh, g.kw), stride=g.stride,
                          padding=g.pad, dilation=1, groups=1, bias=b, metadata=meta)
        return [(layer.name, node)]
    node = nir.Linear(weight=W, metadata=meta) if bias is None else nir.Affine(weight=W, bias=bias, metadata=meta)
    return [(layer.name, node)]


def _neuron_arrays(p: LIFParams, shape, dt):
    """NIR's per-neuron parameter arrays (float64, of the activation ``shape``) for parameters ``p`` at step ``dt``."""
    tau = p.tau_m * (dt / p.dt)  # the layer's step p.dt lasts dt in the graph's time unit
    full = lambda v: np.full(shape, v, np.float64)  # noqa: E731
    return {"tau": full(tau), "r": full(p.R), "v_leak": full(p.v_rest), "v_threshold": full(p.v_th),
            "v_reset": full(p.v_reset)}


def _neuron_meta(layer, p: LIFParams):
    meta = {META + "layer": type(layer).__name__, META + "tau_m": p.tau_m, META + "dt": p.dt,
            META + "reset": p.reset, META + "detach_reset": bool(p.detach_reset), META + "surrogate": p.surrogate,
            META + "v_th": p.v_th, META + "v_reset": p.v_reset}  # v_th, v_reset: a readout's (unused) values
    if p.surrogate_param is not None:
        meta[META + "surrogate_param"] = float(p.surrogate_param)
    return meta


def _export_lif(layer, dt, options, shape):
    nir = _nir()
    p = _neuron_params(layer)
    if p.spike_fn != "heaviside":
        raise ValueError(f"layer {layer.name!r}: spike_fn={p.spike_fn!r} is a test-only smooth spike; "
                         "NIR neurons emit 0/1 spikes (use spike_fn='heaviside')")
    a, meta = _neuron_arrays(p, shape, dt), _neuron_meta(layer, p)
    if p.reset == "none":  # threshold without reset: a leaky integrator followed by a threshold
        li = nir.LI(tau=a["tau"], r=a["r"], v_leak=a["v_leak"], metadata=meta)
        return [(layer.name, li), (f"{layer.name}_threshold", nir.Threshold(threshold=a["v_threshold"],
                                                                             metadata={META + "layer": "LIF"}))]
    if p.reset == "soft" and not options.get("allow_soft_reset"):
        raise ValueError(f"layer {layer.name!r}: soft reset (v -= v_th after a spike) has no NIR primitive "
                         "(NIR's LIF resets to v_reset); pass allow_soft_reset=True (CLI --allow-soft-reset) to "
                         "export it as LIF with the reset mode in the node metadata, which other tools ignore")
    return [(layer.name, nir.LIF(metadata=meta, **a))]


def _export_readout(layer, dt, options, shape):
    nir = _nir()
    p = _neuron_params(layer)
    a = _neuron_arrays(p, shape, dt)
    return [(layer.name, nir.LI(tau=a["tau"], r=a["r"], v_leak=a["v_leak"], metadata=_neuron_meta(layer, p)))]


def _export_avgpool(layer, dt, options, shape):
    nir = _nir()
    g = _geometry(layer)
    k = np.array([g.kh, g.kw])
    node = nir.AvgPool2d(kernel_size=k, stride=k.copy(), padding=np.zeros(2, np.int64),
                         metadata={META + "layer": "AvgPool2d"})
    node.input_type, node.output_type = {"input": np.array([g.c_in, g.h, g.w])}, {"output": np.array([g.c_out, g.oh, g.ow])}
    return [(layer.name, node)]


def _export_flatten(layer, dt, options, shape):
    nir = _nir()
    # NIR shapes have no batch axis: start_dim 0 flattens all of (C, H, W), in C order = snn_core's layout
    return [(layer.name, nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1,
                                     metadata={META + "layer": "Flatten"}))]


def _refuse_maxpool(layer, dt, options, shape):
    raise ValueError(f"layer {layer.name!r} (MaxPool2d): NIR 1.0 has no max-pooling node; build the network with "
                     "average pooling (convnet(..., pool='avg')) to export it")


#: snn_core layer class -> function(layer, dt, options, input shape) -> [(node name, NIR node), ...]
#: (ResidualBlock and BatchNorm2d are handled by the graph walk: a block is its branches, BN folds into the conv)
EXPORTERS = {SparseLinear: _export_synapse, Linear: _export_synapse, LIF: _export_lif, Readout: _export_readout,
             SparseConv2d: _export_synapse, Conv2d: _export_synapse, AvgPool2d: _export_avgpool,
             Flatten: _export_flatten, MaxPool2d: _refuse_maxpool}


def _node_name(layer_name):
    """A layer name as a node name: dots (a block's ``block.conv1``) become ``_`` (torch-based readers forbid dots)."""
    return layer_name.replace(".", "_")


def _export_layers(layers, sources, shape, nodes, edges, dt, options, block=None):
    """Add the nodes of ``layers`` fed by the sum of ``sources``; returns (new sources, output shape).

    ``block``: ``(block name, "main"|"shortcut")`` for a residual branch (written into node metadata).
    """
    i = 0
    while i < len(layers):
        layer = layers[i]
        if isinstance(layer, ResidualBlock):
            if block is not None:
                raise ValueError(f"layer {layer.name!r} (ResidualBlock): a residual block inside another block's "
                                 "branch cannot be exported; use blocks one after another")
            if len(sources) > 1:  # the sum would have to feed both branches: no node holds it in NIR 1.0
                raise ValueError(f"layer {layer.name!r} (ResidualBlock): follows another residual block directly; NIR "
                                 "has no add node to hold the first sum, so put a layer (e.g. the LIF) between them")
            main, shortcut = _block_branches(layer)
            main_src, out = _export_layers(main, sources, shape, nodes, edges, dt, options, (layer.name, "main"))
            if shortcut is None:  # identity: the block's input goes around the main branch to the next node
                nodes[main_src[-1]].metadata[META + "identity_shortcut"] = True
                sc_src = list(sources)
            else:
                sc_src, _ = _export_layers(shortcut, sources, shape, nodes, edges, dt, options,
                                           (layer.name, "shortcut"))
            sources, shape = main_src + sc_src, out
            i += 1
            continue
        folded = None
        if isinstance(layer, (SparseConv2d, Conv2d)) and i + 1 < len(layers) and isinstance(layers[i + 1], BatchNorm2d):
            folded = layers[i + 1].name
            layer = _fold_bn(layer, layers[i + 1])  # running statistics; same connections
            i += 1
        elif isinstance(layer, BatchNorm2d):
            raise ValueError(f"layer {layer.name!r} (BatchNorm2d): batch norm is exported folded into the convolution "
                             "just before it, and this one does not follow a convolution")
        export = EXPORTERS.get(type(layer))
        if export is None:
            raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}): no NIR mapping; supported layer types: "
                             f"{', '.join(c.__name__ for c in EXPORTERS if c is not MaxPool2d)}, BatchNorm2d "
                             "(folded), ResidualBlock")
        for name, node in export(layer, dt, options, shape):
            name = _node_name(name)
            if name in ("input", "output") or name in nodes:
                raise ValueError(f"layer {layer.name!r}: node name {name!r} is taken; rename the layer")
            node.metadata = dict(node.metadata or {})
            if name == _node_name(layer.name):
                node.metadata[META + "name"] = layer.name
            if folded is not None:
                node.metadata[META + "folded_batchnorm"] = folded
            if block is not None:
                node.metadata[META + "block"], node.metadata[META + "branch"] = block
            nodes[name] = node
            edges += [(s, name) for s in sources]
            sources = [name]
        shape = _out_shape(layer, shape)
        i += 1
    return sources, shape


def to_nir(network, dt, allow_soft_reset=False):
    """The NIR graph of ``network``: ``input -> layer nodes -> output``.

    Parameters
    ----------
    network : Network
        Layers of the types in ``EXPORTERS`` (Linear, SparseLinear, LIF,
        Readout, SparseConv2d, Conv2d, AvgPool2d, Flatten), BatchNorm2d
        directly after a convolution (folded into it with its running
        statistics) and ResidualBlock (its branches; NIR sums the edges into
        the node after the block); anything else (MaxPool2d, a block inside a
        block, a lone BatchNorm2d, a non-square kernel) raises ValueError
        naming the layer.
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
        Nodes named after the layers with ``.`` replaced by ``_`` (plus
        ``input``, ``output`` and ``<name>_threshold`` for no-reset LIF
        layers). Weights keep the layers' dtype (conv kernels as
        ``(c_out, c_in, kh, kw)``); neuron parameters are float64 arrays of
        one value per neuron, shaped like the activation (``(n,)`` or
        ``(C, H, W)``). The input node's shape is ``(C, H, W)`` when the
        first layer is a convolution or pooling.
    """
    nir = _nir()
    from .version import __version__

    if not isinstance(network, Network):
        raise TypeError(f"network: expected a snn_core Network, got {type(network).__name__}")
    dt = _check_dt(dt)
    options = {"allow_soft_reset": bool(allow_soft_reset)}
    shape = _in_shape(network.layers[0])
    nodes = {"input": nir.Input(input_type={"input": np.array(shape)})}
    edges = []
    sources, shape = _export_layers(network.layers, ["input"], shape, nodes, edges, dt, options)
    nodes["output"] = nir.Output(output_type={"output": np.array(shape)})
    edges += [(s, "output") for s in sources]
    meta = {META + "version": __version__, META + "dt": dt,
            META + "discretisation": "explicit Euler: u[t] = v[t-1] + dt/tau*((v_leak - v[t-1]) + r*I[t]), "
                                     "I[t] = W x[t] + b of the same step, spike s[t] = (u[t] >= v_threshold), "
                                     "v[t] = v_reset where s[t] = 1 else u[t]; v[-1] = v_leak"}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


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
    if a.size != n:
        raise ValueError(f"node {name!r}: {field} has shape {a.shape}, expected {n} values")
    a = a.reshape(-1)
    if a.size and not np.all(a == a[0]):
        raise ValueError(f"node {name!r}: {field} differs between neurons ({a.min():g} .. {a.max():g}); "
                         "snn_core's neuron layers share one value per layer")
    return float(a[0]) if a.size else 0.0


def _size(name, node):
    """Number of neurons of a neuron node: the size of its parameter arrays ((n,) or (C, H, W))."""
    for field in ("tau", "r", "threshold"):
        if hasattr(node, field):
            a = np.asarray(getattr(node, field))
            if a.ndim == 0:
                raise ValueError(f"node {name!r}: expected parameter arrays (one value per neuron), got a scalar")
            return int(a.size)
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


def _bias_and_kind(name, node, W, ctx, dense_kind, sparse_kind):
    """(bias or None, layer kind, explicit zero positions or None) of an Affine/Linear/Conv2d node."""
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
        kind, explicit = _meta(node, "layer", sparse_kind), _meta(node, "explicit_zeros")
        kind = kind if kind in (dense_kind, sparse_kind) else sparse_kind
    else:
        kind, explicit = (dense_kind if keep_zeros else sparse_kind), None
    if explicit is not None:
        explicit = np.atleast_1d(np.asarray(explicit, np.int64))
        if explicit.size and (explicit.min() < 0 or explicit.max() >= W.size):
            raise ValueError(f"node {name!r}: metadata {META}explicit_zeros points outside the weight matrix")
    return bias, kind, explicit


def _import_synapse(name, node, ctx):
    W = np.asarray(node.weight)
    if W.ndim != 2:
        raise ValueError(f"node {name!r}: expected a 2-D weight (n_out, n_in), got shape {W.shape}")
    bias, kind, explicit = _bias_and_kind(name, node, W, ctx, "Linear", "SparseLinear")
    return [_build_synapse(kind, W.astype(ctx["dtype"]), None if bias is None else bias.astype(ctx["dtype"]),
                           explicit, ctx["dtype"], ctx["layer_name"])]


def _one_int(name, field, v):
    """An int from an int or an equal pair (snn_core convolutions use one stride/padding for both axes)."""
    a = np.atleast_1d(np.asarray(v)).reshape(-1)
    if a.size not in (1, 2) or a.size == 2 and a[0] != a[1] or a.dtype.kind not in "iuf" or a[0] != int(a[0]):
        raise ValueError(f"node {name!r}: {field}={v!r}; snn_core needs one integer for both axes")
    return int(a[0])


def _spatial_input(name, node, ctx, channels):
    """(h, w) of a conv/pool node's input from the running (C, H, W) shape (or its input_shape)."""
    shape = ctx["shape"]
    own = getattr(node, "input_shape", None)
    if len(shape) == 3:
        if shape[0] != channels:
            raise ValueError(f"node {name!r}: expects {channels} input channels, gets a {tuple(shape)} input")
        if own is not None and tuple(int(v) for v in np.atleast_1d(own)) != tuple(shape[1:]):
            raise ValueError(f"node {name!r}: input_shape {tuple(np.atleast_1d(own))} differs from its input "
                             f"{tuple(shape)}")
        return tuple(shape[1:])
    if own is not None and len(np.atleast_1d(own)) == 2 and channels * int(np.prod(own)) == int(np.prod(shape)):
        return tuple(int(v) for v in np.atleast_1d(own))  # a flat input of the right size, e.g. Input (784,)
    raise ValueError(f"node {name!r}: needs a (C, H, W) input, got shape {tuple(shape)}")


def _import_conv(name, node, ctx):
    W = np.asarray(node.weight)
    if W.ndim != 4:
        raise ValueError(f"node {name!r}: expected a 4-D weight (c_out, c_in, kh, kw), got shape {W.shape}")
    c_out, c_in, kh, kw = W.shape
    if _one_int(name, "dilation", node.dilation) != 1 or int(node.groups) != 1:
        raise ValueError(f"node {name!r}: dilation={node.dilation!r}, groups={node.groups!r}; snn_core's "
                         "convolutions have dilation 1 and groups 1")
    stride = _one_int(name, "stride", node.stride)
    if isinstance(node.padding, str):
        if node.padding == "valid":
            pad = 0
        elif stride == 1 and kh == kw and kh % 2:
            pad = kh // 2
        else:
            raise ValueError(f"node {name!r}: padding='same' needs stride 1 and an odd square kernel here")
    else:
        pad = _one_int(name, "padding", node.padding)
    size = _spatial_input(name, node, ctx, c_in)
    bias, kind, explicit = _bias_and_kind(name, node, W, ctx, "Conv2d", "SparseConv2d")
    has_bias = _meta(node, "bias")
    if bias is not None and (has_bias is False or has_bias is None and not np.any(bias)):
        bias = None  # NIR's Conv2d always has a bias; zeros (or the exporter's word) mean the layer had none
    W = W.reshape(c_out, c_in * kh * kw).astype(ctx["dtype"])
    return [_build_synapse(kind, W, None if bias is None else bias.astype(ctx["dtype"]), explicit, ctx["dtype"],
                           ctx["layer_name"], conv=(c_in, size, (kh, kw), stride, pad))]


def _import_avgpool(name, node, ctx):
    k = _one_int(name, "kernel_size", node.kernel_size)
    if _one_int(name, "stride", node.stride) != k or _one_int(name, "padding", node.padding) != 0:
        raise ValueError(f"node {name!r}: stride={node.stride!r}, padding={node.padding!r}; snn_core's AvgPool2d "
                         "has non-overlapping windows (stride = kernel_size, padding 0)")
    shape = ctx["shape"]
    if len(shape) != 3:
        raise ValueError(f"node {name!r}: needs a (C, H, W) input, got shape {tuple(shape)}")
    try:
        return [_build_pool(shape[0], tuple(shape[1:]), k, ctx["dtype"], ctx["layer_name"])]
    except ValueError as e:
        raise ValueError(f"node {name!r}: {e}") from None


def _import_flatten(name, node, ctx):
    shape = tuple(ctx["shape"])
    n = int(np.prod(shape))
    out = node.output_type.get("output") if node.output_type else None
    if out is not None and np.atleast_1d(out).size != 1:
        raise ValueError(f"node {name!r}: Flatten(start_dim={node.start_dim}, end_dim={node.end_dim}) of "
                         f"{shape} gives shape {tuple(int(v) for v in np.atleast_1d(out))}; only flattening everything (NIR shapes "
                         "have no batch axis: start_dim 0) is supported")
    return [_build_flatten(n, ctx["dtype"], ctx["layer_name"])]


def _import_lif(name, node, ctx):
    n = _size(name, node)
    v_th, v_reset = _uniform(name, node, "v_threshold", n), _uniform(name, node, "v_reset", n)
    reset = "soft" if _meta(node, "reset") == "soft" else "hard"
    n, p = _params_from_nir(name, node, ctx["dt"], reset, v_th, v_reset)
    return [_build_neurons(LIF, n, p, ctx["dtype"], ctx["layer_name"])]


def _import_li(name, node, ctx):
    nxt = ctx["next"]
    if nxt is not None and type(nxt[1]).__name__ == "Threshold":  # LI -> Threshold = LIF without reset
        tname, thr = nxt
        n = _size(name, node)
        v_th = _uniform(tname, thr, "threshold", n)
        n, p = _params_from_nir(name, node, ctx["dt"], "none", v_th, 0.0)
        ctx["consumed"] = 1
        return [_build_neurons(LIF, n, p, ctx["dtype"], ctx["layer_name"])]
    reset = _meta(node, "reset", "none")
    n, p = _params_from_nir(name, node, ctx["dt"], reset if reset in ("hard", "soft", "none") else "none")
    return [_build_neurons(Readout, n, p, ctx["dtype"], ctx["layer_name"])]


#: NIR class name -> function(name, node, ctx) -> [Layer, ...]
IMPORTERS = {"Affine": _import_synapse, "Linear": _import_synapse, "LIF": _import_lif, "LI": _import_li,
             "Conv2d": _import_conv, "AvgPool2d": _import_avgpool, "Flatten": _import_flatten}


def _sequence(graph):
    """The graph as snn_core's layer order: a list of ``("node", name)`` and ``("block", name, main, shortcut)``.

    Walks from the single Input keeping the *frontier*: the nodes whose sum
    is the current activation (NIR sums the edges into a node). A node fed
    by exactly the frontier is the next layer; a frontier feeding two nodes
    starts a residual block whose two branches (or one branch and an edge
    around it: an identity shortcut) are chains that meet at one node.
    ``main`` and ``shortcut`` are lists of node names (``shortcut`` None for
    identity). Anything else raises ValueError naming the node.
    """
    kinds = {name: type(node).__name__ for name, node in graph.nodes.items()}
    inputs = [k for k, t in kinds.items() if t == "Input"]
    outputs = [k for k, t in kinds.items() if t == "Output"]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"graph: expected exactly one Input and one Output node, got inputs {inputs}, "
                         f"outputs {outputs}")
    succ, pred = {k: [] for k in graph.nodes}, {k: [] for k in graph.nodes}
    for edge in graph.edges:
        a, b = edge
        for end in (a, b):
            if end not in graph.nodes:
                raise ValueError(f"graph: edge {a!r} -> {b!r} names an unknown node {end!r}")
        if b not in succ[a]:
            succ[a].append(b)
            pred[b].append(a)
    out, frontier, seen, items, n_blocks = outputs[0], [inputs[0]], set(), [], 0

    def several_inputs(c, frontier):
        return ValueError(f"graph: node {c!r} has several inputs ({', '.join(pred[c])}) that are not one residual "
                          f"block's branches (fed by {', '.join(frontier)}); only feed-forward chains and residual "
                          "blocks are supported (a cycle is not)")

    while True:
        targets = set(succ[frontier[0]])
        for f in frontier:
            if set(succ[f]) != targets:
                raise ValueError(f"graph: nodes {frontier} feed different nodes; only feed-forward chains and "
                                 "residual blocks are supported")
        if not targets:
            raise ValueError(f"graph: the path from {inputs[0]!r} ends at {frontier[0]!r} before reaching the output")
        starts = sorted(t for t in targets if set(pred[t]) == set(frontier))
        if len(targets) == 1:
            (c,) = targets
            if not starts:
                raise several_inputs(c, frontier)
            if c in seen:
                raise ValueError(f"graph: a cycle through {c!r} (recurrent graphs are not supported)")
            seen.add(c)
            if c == out:
                break
            items.append(("node", c))
            frontier = [c]
            continue
        # a residual block: branches from the frontier that meet again at one node
        branches, joins = [], set(targets) - set(starts)
        for s in starts:
            chain, x = [s], s
            while True:
                if len(succ[x]) != 1:
                    raise ValueError(f"graph: node {frontier[0]!r} feeds several nodes ({', '.join(sorted(targets))}) "
                                     f"whose paths do not join again as a residual block (at {x!r}; nested branches "
                                     "are not supported)")
                (nx,) = succ[x]
                if len(pred[nx]) > 1 or nx == out:
                    joins.add(nx)
                    break
                if nx in chain or len(chain) > len(graph.nodes):
                    raise ValueError(f"graph: a cycle through {nx!r} (recurrent graphs are not supported)")
                chain.append(nx)
                x = nx
            branches.append(chain)
        identity = bool(set(targets) - set(starts))
        if len(joins) != 1 or len(branches) + identity != 2:
            raise ValueError(f"graph: node {frontier[0]!r} feeds several nodes ({', '.join(sorted(targets))}) that do "
                             "not join again as a residual block (two branches, or one and an identity shortcut, "
                             "meeting at one node)")
        (j,) = joins
        if set(pred[j]) != {c[-1] for c in branches} | (set(frontier) if identity else set()):
            raise several_inputs(j, frontier)
        if len(branches) == 2:  # main: the one the exporter marked, else the longer one
            marked = [_meta(graph.nodes[c[0]], "branch") for c in branches]
            if marked[0] != "main" and (marked[1] == "main" or len(branches[1]) > len(branches[0])):
                branches.reverse()
        n_blocks += 1
        block = _meta(graph.nodes[branches[0][0]], "block") or f"block{n_blocks}"
        items.append(("block", str(block), branches[0], branches[1] if len(branches) == 2 else None))
        seen.update(n for c in branches for n in c)
        if j in seen:
            raise ValueError(f"graph: a cycle through {j!r} (recurrent graphs are not supported)")
        seen.add(j)
        if j == out:
            break
        items.append(("node", j))  # the node after the block receives the sum
        frontier = [j]
    return items


def _import_chain(graph, names, ctx, block=None):
    """The layers of a chain of node names (``block``: the residual block they belong to, or None)."""
    chain = [(k, graph.nodes[k]) for k in names if type(graph.nodes[k]).__name__ != "Identity"]
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
        layer_name = str(_meta(node, "name", name))
        if block is not None and not layer_name.startswith(block + "."):
            layer_name = f"{block}.{layer_name}"
        ctx.update(consumed=0, next=chain[i + 1] if i + 1 < len(chain) else None, layer_name=layer_name)
        for layer in importer(name, node, ctx):
            layers.append(layer)
            ctx["shape"] = _out_shape(layer, ctx["shape"])
        i += 1 + ctx["consumed"]
    return layers


def from_nir(graph, dt, keep_zeros=None, dtype=None, fold_r=False):
    """A :class:`~snn_core.network.Network` simulating a NIR graph with Euler steps of ``dt``.

    Parameters
    ----------
    graph : nir.NIRGraph or str or Path
        A feed-forward graph ``Input -> ... -> Output`` of ``Affine`` /
        ``Linear``, ``Conv2d``, ``AvgPool2d``, ``Flatten``, ``LIF``, ``LI``
        (-> ``Threshold``) and ``Identity`` nodes, or the path of a ``.nir``
        file: a chain, except residual blocks (two branches, or one and an
        edge around it, meeting at one node, which sums them) that become
        :class:`~snn_core.conv.ResidualBlock` layers. Other node types,
        other branches, cycles, convolutions with dilation/groups, and
        per-neuron parameters that differ within a layer raise ValueError
        naming the node.
    dt : float
        Duration of one time step in the graph's time unit; ``LIFParams``
        get ``tau_m = tau`` and this ``dt`` (or the exported layer's exact
        values, when the node's snn_core metadata agrees with its ``tau``).
    keep_zeros : None, bool
        How a weight matrix becomes connections. False: zero entries are
        absent connections (a ``SparseLinear`` of the nonzero entries).
        True: every entry is a connection (a dense ``Linear``). None
        (default): what the snn_core metadata says (layer kind and explicit
        zero-weight connections), else as False. Convolutions alike
        (``SparseConv2d`` / ``Conv2d``).
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
        Layers named after the nodes (a no-reset LIF after its LI node), or
        the exported layers' names from the snn_core metadata (a block's
        ``layer1.0.conv1`` for node ``layer1_0_conv1``).
    """
    nir = _nir()
    dt = _check_dt(dt)
    if isinstance(graph, (str, Path)):
        graph = read_nir(graph)
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"graph: expected a nir.NIRGraph or a file path, got {type(graph).__name__}")
    if keep_zeros is not None and not isinstance(keep_zeros, bool):
        raise TypeError(f"keep_zeros: expected None, True or False, got {keep_zeros!r}")
    items = _sequence(graph)
    if not items:
        raise ValueError("graph: no nodes between input and output")
    names = [n for it in items for n in ([it[1]] if it[0] == "node" else it[2] + (it[3] or []))]
    if dtype is None:
        first = next((np.asarray(graph.nodes[n].weight).dtype for n in names if hasattr(graph.nodes[n], "weight")),
                     np.dtype(np.float32))
        dtype = first if first.type in FLOAT_DTYPES else np.dtype(np.float32)
    dtype = np.dtype(dtype)
    if dtype.type not in FLOAT_DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    (input_name,) = graph.inputs
    in_shape = graph.nodes[input_name].input_type.get("input")
    ctx = {"dt": dt, "dtype": dtype, "keep_zeros": keep_zeros,
           "shape": tuple(int(v) for v in np.atleast_1d(in_shape)) if in_shape is not None else (0,)}
    layers, run = [], []
    for it in items + [("end",)]:
        if it[0] == "node":
            run.append(it[1])  # consecutive nodes form one chain, so LI -> Threshold can pair up
            continue
        layers += _import_chain(graph, run, ctx)
        run = []
        if it[0] == "block":
            _, block, main, shortcut = it
            shape_in = ctx["shape"]
            main_layers = _import_chain(graph, main, ctx, block)
            shape_out, ctx["shape"] = ctx["shape"], shape_in
            sc_layers = None if shortcut is None else _import_chain(graph, shortcut, ctx, block)
            ctx["shape"] = shape_out
            if fold_r:
                _fold_r(main_layers)
                if sc_layers:
                    _fold_r(sc_layers)
            try:
                layers.append(_build_block(main_layers, sc_layers, block))
            except ValueError as e:
                raise ValueError(f"graph: {e}") from None
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
        if not isinstance(layer, (LIF, Readout)) or not isinstance(prev, (Linear, SparseLinear, Conv2d)):
            continue
        p = _neuron_params(layer)
        if p.R == 1.0:
            continue
        W, bias, kind, explicit = _synapse_arrays(prev)
        scaled = _build_synapse(kind, W * p.R, None if bias is None else bias * p.R, explicit, prev.dtype, prev.name,
                                conv=_conv_args(prev) if SYNAPSE_KINDS[kind] else None)
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
                row[field] = float(np.asarray(getattr(node, field)).reshape(-1)[0])
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
