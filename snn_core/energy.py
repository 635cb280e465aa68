"""Synaptic-operation (SOP) counting and energy estimates from a recorded forward pass.

What is counted (paper notes §2, "Energy")
------------------------------------------
Only *synaptic* work is counted: for every synaptic layer (``SparseLinear``
or dense ``Linear``) and every time step, each nonzero presynaptic value
triggers one operation per outgoing connection::

    ops of layer l = sum over t, batch, j of  1[a_j[t, b] != 0] * fan_out_j

``a`` is the layer's input (its presynaptic activity) and ``fan_out_j`` the
*actual* number of outgoing connections of presynaptic neuron ``j``:

- ``SparseLinear``: the number of stored connections in column ``j`` of the
  CSR weight, ``np.bincount(weight.indices, minlength=n_in)``. A stored
  connection counts even if its weight is 0 (a freshly grown synapse still
  exists in the structure and costs an operation on hardware);
- dense ``Linear``: ``n_out`` for every input (dense hardware touches every
  weight, zero or not).

The presynaptic activity of a synaptic layer is the output of the layer just
before it: the network input ``x`` for the first layer, otherwise the spikes
recorded by the preceding LIF layer (``net.recorded[name]["spikes"]``) or the
membrane of a preceding ``Readout`` layer.

Kind of operation:

- input that is *binary* (every value 0 or 1, i.e. spikes): each operation is
  an **accumulate (AC)**, the weight is simply added. These are the SOPs;
- input that is *not* binary (real-valued, e.g. direct/current coding of the
  pixels into the first layer): each nonzero input value times its fan-out is
  a **multiply-accumulate (MAC)**. Zero inputs cost nothing (event-driven),
  which favours the SNN slightly versus a dense MAC count but is what an
  event-driven chip does. ``input_kind="spikes"`` / ``"real"`` overrides the
  automatic check for every layer.

Not counted: bias additions, membrane updates (leak, threshold, reset) and
the readout integrator — neuron-level work that is O(neurons * T), small
compared to the synaptic O(connections * T) work, and left out by the usual
SOP convention.

All counts are reported **per sample** (totals divided by the batch size),
per layer and per time step.

Dense-ANN comparison
--------------------
The equivalent dense ANN has the same layer sizes with every connection
present. Its cost per sample is ``MACs = ann_timesteps * sum_l n_in * n_out``
and ``FLOPs = 2 * MACs`` (one multiply + one add). The usual convention for
"SNN vs ANN" is ``ann_timesteps = 1``: the ANN sees a static input once, so
its cost does not depend on T (e.g. 784-800-10: 2 * (784*800 + 800*10) =
1,270,400 FLOPs). Pass ``ann_timesteps=T`` to get instead what simulating the
dense SNN step by step on a GPU costs (the paper's "FLOPs on GPU" view).

Energy constants (45 nm, Horowitz 2014; TrueNorth, Merolla et al. 2014)
-----------------------------------------------------------------------
``e_ac_pj = 0.9`` pJ per accumulate, ``e_mac_pj = 4.6`` pJ per MAC,
``e_event_pj = 26`` pJ per synaptic event on TrueNorth. Estimates:

- ``snn_energy_pj = SOPs * e_ac + MACs * e_mac`` (MACs: non-spike input layer);
- ``ann_energy_pj = ANN MACs * e_mac``;
- ``truenorth_energy_pj = (SOPs + MACs) * e_event``: every synaptic event at
  the TrueNorth per-event cost (a real-valued input layer would have to be
  spike-encoded on the chip; it is charged one event per nonzero input and
  connection).

Usage::

    rep = energy_report(net, x)            # runs net.forward(x, record=True)
    print(format_report(rep))
    rep.sops_per_sample, rep.layers[0]["ops_per_step"], rep.firing_rates
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.sparse as sp

from .layers import Layer

__all__ = [
    "EnergyConstants",
    "EnergyReport",
    "fan_out",
    "is_binary",
    "layer_ops_per_step",
    "energy_from_arrays",
    "energy_from_network",
    "energy_report",
    "ann_macs",
    "format_report",
]

INPUT_KINDS = ("auto", "spikes", "real")


@dataclass(frozen=True)
class EnergyConstants:
    """Energy per operation in picojoules (defaults: 45 nm CMOS, TrueNorth)."""

    e_ac_pj: float = 0.9
    e_mac_pj: float = 4.6
    e_event_pj: float = 26.0

    def __post_init__(self):
        for k, v in asdict(self).items():
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"EnergyConstants.{k}: must be a finite number >= 0, got {v!r}")


@dataclass
class EnergyReport:
    """Result of :func:`energy_report` (every count is per sample).

    Attributes
    ----------
    T, n_samples : int
        Time steps and number of samples the counts were averaged over.
    layers : list of dict
        One per synaptic layer: ``name``, ``type``, ``n_in``, ``n_out``,
        ``connections``, ``density``, ``presynaptic`` (source name: ``"input"``
        or a layer name), ``op`` (``"AC"`` or ``"MAC"``), ``presyn_rate``
        (fraction of nonzero presynaptic values per input per step),
        ``mean_fan_out``, ``sops_per_sample``, ``macs_per_sample``,
        ``ops_per_step`` (ndarray (T,), per sample), ``ann_macs_per_sample``,
        ``energy_pj``.
    sops_per_sample : float
        Spike-driven accumulates (ACs) summed over layers.
    macs_per_sample : float
        MACs of layers fed by a real-valued (non-spike) input.
    synaptic_events_per_sample : float
        ``sops + macs``.
    ops_per_step : ndarray (T,)
        Synaptic events (ACs + MACs) per time step, summed over layers.
    ann_macs_per_sample, ann_flops_per_sample : float
        Dense equivalent network: ``ann_timesteps * sum n_in*n_out`` and twice that.
    ann_sparse_macs_per_sample : float
        ANN with the *same sparse structure*: ``ann_timesteps * sum connections``.
    snn_energy_pj, ann_energy_pj, truenorth_energy_pj : float
    firing_rates : dict
        LIF layer name -> mean spikes per neuron per time step.
    """

    T: int
    n_samples: int
    layers: list
    sops_per_sample: float
    macs_per_sample: float
    synaptic_events_per_sample: float
    ops_per_step: np.ndarray
    ann_timesteps: int
    ann_macs_per_sample: float
    ann_flops_per_sample: float
    ann_sparse_macs_per_sample: float
    snn_energy_pj: float
    ann_energy_pj: float
    truenorth_energy_pj: float
    firing_rates: dict
    constants: EnergyConstants = field(default_factory=EnergyConstants)

    def __getitem__(self, key):
        """Dict-style access: ``report["sops_per_sample"]``."""
        return getattr(self, key)

    def to_dict(self):
        """Plain dict (ndarrays become lists) for JSON logs."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["constants"] = asdict(self.constants)
        d["ops_per_step"] = np.asarray(self.ops_per_step).tolist()
        d["layers"] = [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in layer.items()}
                       for layer in self.layers]
        return d


# --------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------
def _is_synaptic(layer):
    """A layer with a weight matrix (``weight``) and its trained ``weight_param``: SparseLinear, Linear, ..."""
    return isinstance(layer, Layer) and hasattr(layer, "weight_param")


def _as_structure(weight):
    """-> ("sparse", indices, (n_out, n_in)) or ("dense", None, (n_out, n_in))."""
    if _is_synaptic(weight) and hasattr(weight, "geometry"):  # a convolution: features in, features out
        return ("sparse" if hasattr(weight, "set_connections") else "dense"), None, (weight.out_features,
                                                                                     weight.in_features)
    if _is_synaptic(weight):  # SparseLinear / Linear alike: ``weight`` is the matrix (CSR or dense)
        w = weight.weight
        if sp.issparse(w):
            return "sparse", w.indices, w.shape
        return "dense", None, w.shape
    if sp.issparse(weight):
        w = sp.csr_matrix(weight)
        return "sparse", w.indices, w.shape
    if isinstance(weight, tuple) and len(weight) == 3:
        _indptr, indices, shape = weight
        return "sparse", np.asarray(indices), tuple(int(s) for s in shape)
    a = np.asarray(weight)
    if a.ndim != 2:
        raise ValueError(f"weight: expected a layer, a scipy sparse matrix, (indptr, indices, shape) "
                         f"or a dense 2-D (n_out, n_in) array, got shape {a.shape}")
    return "dense", None, a.shape


def fan_out(weight):
    """Actual fan-out (int64, length n_in) of each presynaptic neuron.

    ``weight``: a ``SparseLinear`` / ``Linear`` layer, a scipy sparse matrix
    (n_out, n_in), a tuple ``(indptr, indices, (n_out, n_in))`` or a dense
    (n_out, n_in) array. Sparse: stored connections per column (explicit
    zeros included). Dense: ``n_out`` for every input.
    """
    if _is_synaptic(weight) and hasattr(weight, "input_fan_out"):  # convolutions unroll their kernel
        return weight.input_fan_out()
    kind, indices, (n_out, n_in) = _as_structure(weight)
    if kind == "sparse":
        return np.bincount(np.asarray(indices, np.int64), minlength=n_in).astype(np.int64)
    return np.full(n_in, n_out, np.int64)


def is_binary(a) -> bool:
    """True when every value of ``a`` is exactly 0 or 1 (a spike train)."""
    a = np.asarray(a)
    return bool(np.all((a == 0) | (a == 1)))


def layer_ops_per_step(presyn, fan_out_):
    """Synaptic events per time step, summed over the batch.

    ``presyn`` (T, batch, n_in), ``fan_out_`` (n_in,) -> float64 (T,) with
    ``ops[t] = sum_b sum_j 1[presyn[t, b, j] != 0] * fan_out_[j]``.
    """
    presyn = np.asarray(presyn)
    if presyn.ndim != 3:
        raise ValueError(f"presyn: expected shape (T, batch, n_in), got {presyn.shape}")
    fo = np.asarray(fan_out_, np.float64)
    if presyn.shape[2] != fo.shape[0]:
        raise ValueError(f"presyn has {presyn.shape[2]} inputs but fan_out has {fo.shape[0]}")
    active = np.count_nonzero(presyn, axis=1)  # (T, n_in) events per input, summed over batch
    return active.astype(np.float64) @ fo


def ann_macs(shapes, ann_timesteps=1):
    """MACs per sample of the dense network with layer shapes [(n_out, n_in), ...]."""
    return float(ann_timesteps * sum(int(a) * int(b) for a, b in shapes))


# --------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------
def energy_from_arrays(weights, presyn, names=None, sources=None, spikes=None, constants=None,
                       ann_timesteps=1, input_kind="auto"):
    """Count synaptic operations from explicit arrays.

    Parameters
    ----------
    weights : list
        One per synaptic layer; anything :func:`fan_out` accepts.
    presyn : list of ndarray (T, batch, n_in)
        The presynaptic activity of each layer (same T and batch for all).
    names, sources : list of str, optional
        Layer names and the names of their presynaptic sources (for the report).
    spikes : dict name -> ndarray (T, batch, n), optional
        Spike trains of LIF layers, for ``firing_rates``.
    constants : EnergyConstants, optional
    ann_timesteps : int
        Times the dense ANN runs per sample (1 = the usual convention).
    input_kind : {"auto", "spikes", "real"}
        "auto": a layer's ops are ACs if its input is binary, else MACs.

    Returns
    -------
    EnergyReport
    """
    constants = EnergyConstants() if constants is None else constants
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind: expected one of {INPUT_KINDS}, got {input_kind!r}")
    if int(ann_timesteps) < 1:
        raise ValueError(f"ann_timesteps: must be >= 1, got {ann_timesteps!r}")
    weights, presyn = list(weights), list(presyn)
    if len(weights) != len(presyn):
        raise ValueError(f"got {len(weights)} weights but {len(presyn)} presynaptic arrays")
    if not weights:
        raise ValueError("weights: expected at least one synaptic layer")
    names = [f"layer{i}" for i in range(len(weights))] if names is None else list(names)
    sources = ["input"] + names[:-1] if sources is None else list(sources)
    T, B = np.shape(presyn[0])[:2]
    acc = _Accumulator(T)
    for i, (w, a) in enumerate(zip(weights, presyn)):
        if np.shape(a)[:2] != (T, B):
            raise ValueError(f"presyn[{i}]: expected (T, batch) = {(T, B)}, got {np.shape(a)[:2]}")
        acc.add_layer(i, names[i], sources[i], w, a, input_kind)
    acc.add_samples(B)
    for name, s in (spikes or {}).items():
        acc.add_spikes(name, s)
    return acc.report(constants, ann_timesteps)


def _synaptic_inputs(net, x):
    """(layer, presynaptic array, source name) for every synaptic layer of ``net``.

    Uses ``net.recorded`` (after ``net.forward(x, record=True)``).
    """
    out = []
    for layer, prev in _with_predecessor(net.layers, None):
        if not _is_synaptic(layer):
            continue
        if prev is None:
            out.append((layer, x, "input"))
            continue
        rec = net.recorded.get(prev.name)
        key = prev.output_key  # the recorded array that is the layer's output: "spikes" (LIF), "u" (Readout)
        if key is None:
            raise ValueError(f"{layer.name}: its input comes from {type(prev).__name__} {prev.name!r}, "
                             "which records nothing; only LIF/Readout layers (or the network input) "
                             "can feed a synaptic layer for SOP counting")
        if not rec or key not in rec:
            raise ValueError(f"{layer.name}: no recorded {key!r} for {prev.name!r}; "
                             "run net.forward(x, record=True) with this x first")
        out.append((layer, rec[key], prev.name))
    if not out:
        raise ValueError("network has no synaptic (SparseLinear/Linear) layer")
    return out


def _with_predecessor(layers, prev):
    """(leaf layer, the leaf layer whose output it reads) in order; blocks feed both branches their input."""
    for layer in layers:
        kids = getattr(layer, "children", None)
        if kids is None:
            yield layer, prev
            prev = layer
            continue
        last = prev
        for branch in (layer.main, layer.shortcut or []):
            p = prev
            for sub, p_sub in _with_predecessor(branch, prev):
                yield sub, p_sub
                p = sub
            last = p if branch is layer.main else last
        prev = last  # approximation for what follows: the block's main branch (its add is not recorded)


def energy_from_network(net, x, constants=None, ann_timesteps=1, input_kind="auto"):
    """Count operations of ``net`` after ``net.forward(x, record=True)`` (not re-run)."""
    acc = _Accumulator(np.shape(x)[0])
    _accumulate_network(acc, net, x, input_kind)
    return acc.report(EnergyConstants() if constants is None else constants, ann_timesteps)


def _accumulate_network(acc, net, x, input_kind):
    T, B = np.shape(x)[:2]
    for i, (layer, a, src) in enumerate(_synaptic_inputs(net, x)):
        if np.shape(a)[:2] != (T, B):
            raise ValueError(f"{layer.name}: recorded input has (T, batch) {np.shape(a)[:2]} but x has {(T, B)}; "
                             "run net.forward(x, record=True) with this x first")
        acc.add_layer(i, layer.name, src, layer, a, input_kind)
    acc.add_samples(B)
    for layer in net.modules():
        if "spikes" in net.recorded.get(layer.name, {}):
            acc.add_spikes(layer.name, net.recorded[layer.name]["spikes"])


def energy_report(net, x, constants=None, ann_timesteps=1, input_kind="auto", batch_size=None):
    """Run ``net.forward(x, record=True)`` and count its synaptic operations.

    Parameters
    ----------
    net : snn_core.network.Network
    x : ndarray (T, batch, n_in)
        The network input (spikes, or real values counted as MACs).
    constants : EnergyConstants, optional
        pJ per AC / MAC / TrueNorth event.
    ann_timesteps : int
        1 (default): the dense ANN is run once per sample.
    input_kind : {"auto", "spikes", "real"}
    batch_size : int, optional
        Run the forward pass on chunks of this many samples (bounds memory);
        counts are accumulated over all samples.

    Returns
    -------
    EnergyReport
        ``net.recorded`` holds the last chunk's recordings afterwards.
    """
    x = np.asarray(x) if not isinstance(x, np.ndarray) else x
    if x.ndim != 3:
        raise ValueError(f"x: expected shape (T, batch, n_in), got {x.shape}")
    T, B = x.shape[:2]
    step = B if batch_size is None else max(1, int(batch_size))
    acc = _Accumulator(T)
    for s in range(0, B, step):
        xb = x[:, s:s + step]
        net.forward(xb, record=True)
        _accumulate_network(acc, net, xb, input_kind)
    return acc.report(EnergyConstants() if constants is None else constants, ann_timesteps)


class _Accumulator:
    """Sums over batches; per-sample numbers are produced by :meth:`report`."""

    def __init__(self, T):
        self.T = int(T)
        self.n = 0
        self.layers = {}  # index -> dict of totals
        self.spikes = {}  # name -> [spike total, neurons, samples*T... ]

    def add_layer(self, i, name, source, weight, presyn, input_kind):
        presyn = np.asarray(presyn)
        kind, _, (n_out, n_in) = _as_structure(weight)
        if presyn.ndim != 3 or presyn.shape[2] != n_in:
            raise ValueError(f"{name}: presynaptic activity must be (T, batch, {n_in}), got {presyn.shape}")
        if presyn.shape[0] != self.T:
            raise ValueError(f"{name}: presynaptic activity has T={presyn.shape[0]}, expected {self.T}")
        if input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind: expected one of {INPUT_KINDS}, got {input_kind!r}")
        fo = fan_out(weight)
        ops = layer_ops_per_step(presyn, fo)
        if input_kind == "auto":
            op = "AC" if is_binary(presyn) else "MAC"
        else:
            op = "AC" if input_kind == "spikes" else "MAC"
        rec = self.layers.get(i)
        if rec is None:
            rec = self.layers[i] = dict(
                name=name, type=type(weight).__name__ if _is_synaptic(weight)
                else ("sparse" if kind == "sparse" else "dense"),
                n_in=int(n_in), n_out=int(n_out), connections=int(fo.sum()),
                dense=int(getattr(weight, "unrolled_size", n_in * n_out)) if _is_synaptic(weight) else n_in * n_out,
                presynaptic=source, op=op, ac=np.zeros(self.T), mac=np.zeros(self.T), active=0.0, values=0)
        elif op != rec["op"]:
            rec["op"] = "AC+MAC"
        rec["ac" if op == "AC" else "mac"] += ops
        rec["active"] += float(np.count_nonzero(presyn))
        rec["values"] += presyn.size

    def add_samples(self, b):
        self.n += int(b)

    def add_spikes(self, name, s):
        s = np.asarray(s)
        tot = self.spikes.setdefault(name, [0.0, 0])
        tot[0] += float(s.sum(dtype=np.float64))
        tot[1] += s.size

    def report(self, c, ann_timesteps):
        ann_timesteps = int(ann_timesteps)
        if ann_timesteps < 1:
            raise ValueError(f"ann_timesteps: must be >= 1, got {ann_timesteps!r}")
        n = max(self.n, 1)
        layers, total_step = [], np.zeros(self.T)
        sops = macs = 0.0
        shapes, conns = [], 0
        for i in sorted(self.layers):
            r = self.layers[i]
            ac_step, mac_step = r["ac"] / n, r["mac"] / n
            s_, m_ = float(ac_step.sum()), float(mac_step.sum())
            sops, macs = sops + s_, macs + m_
            total_step += ac_step + mac_step
            shapes.append((r["dense"], 1))
            conns += r["connections"]
            layers.append(dict(
                name=r["name"], type=r["type"], n_in=r["n_in"], n_out=r["n_out"],
                connections=r["connections"], density=r["connections"] / r["dense"],
                presynaptic=r["presynaptic"], op=r["op"],
                presyn_rate=r["active"] / max(r["values"], 1),
                mean_fan_out=r["connections"] / r["n_in"],
                sops_per_sample=s_, macs_per_sample=m_, ops_per_step=ac_step + mac_step,
                ann_macs_per_sample=float(ann_timesteps * r["dense"]),
                energy_pj=s_ * c.e_ac_pj + m_ * c.e_mac_pj,
            ))
        a_macs = ann_macs(shapes, ann_timesteps)
        return EnergyReport(
            T=self.T, n_samples=self.n, layers=layers,
            sops_per_sample=sops, macs_per_sample=macs, synaptic_events_per_sample=sops + macs,
            ops_per_step=total_step, ann_timesteps=ann_timesteps,
            ann_macs_per_sample=a_macs, ann_flops_per_sample=2.0 * a_macs,
            ann_sparse_macs_per_sample=float(ann_timesteps * conns),
            snn_energy_pj=sops * c.e_ac_pj + macs * c.e_mac_pj,
            ann_energy_pj=a_macs * c.e_mac_pj,
            truenorth_energy_pj=(sops + macs) * c.e_event_pj,
            firing_rates={k: v[0] / max(v[1], 1) for k, v in self.spikes.items()},
            constants=c,
        )


# --------------------------------------------------------------------------
# text
# --------------------------------------------------------------------------
def _si(v, unit=""):
    """3 significant digits with an SI prefix: 1.27e6 -> '1.27 M'."""
    v = float(v)
    for f, p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= f:
            return f"{v / f:.3g} {p}{unit}"
    return f"{v:.3g} {unit}".rstrip()


def _energy(pj):
    """Picojoules in the most readable unit."""
    for f, u in ((1e6, "uJ"), (1e3, "nJ")):
        if abs(pj) >= f:
            return f"{pj / f:.3g} {u}"
    return f"{pj:.3g} pJ"


def format_report(report) -> str:
    """Human-readable table of an :class:`EnergyReport` (for the CLI)."""
    r, c = report, report.constants
    lines = [f"Synaptic operations per sample (T = {r.T} steps, averaged over {r.n_samples} samples)"]
    hdr = f"  {'layer':<12} {'shape (in->out)':<16} {'density':>8} {'input':<10} {'op':<4} " \
          f"{'in rate':>8} {'ops/sample':>11} {'ANN MACs':>10}"
    lines += [hdr, "  " + "-" * (len(hdr) - 2)]
    for L in r.layers:
        ops = L["sops_per_sample"] + L["macs_per_sample"]
        lines.append(f"  {L['name']:<12} {str(L['n_in']) + '->' + str(L['n_out']):<16} "
                     f"{100 * L['density']:7.2f}% {L['presynaptic']:<10} {L['op']:<4} "
                     f"{L['presyn_rate']:8.4f} {_si(ops):>11} {_si(L['ann_macs_per_sample']):>10}")
    lines.append("")
    lines.append(f"  SNN: {_si(r.sops_per_sample)} SOPs (AC) + {_si(r.macs_per_sample)} MACs per sample"
                 f" -> {_energy(r.snn_energy_pj)} at {c.e_ac_pj} pJ/AC, {c.e_mac_pj} pJ/MAC")
    lines.append(f"  TrueNorth-style: {_si(r.synaptic_events_per_sample)} events x {c.e_event_pj} pJ"
                 f" -> {_energy(r.truenorth_energy_pj)}")
    runs = "once" if r.ann_timesteps == 1 else f"{r.ann_timesteps} times"
    lines.append(f"  Dense ANN (run {runs}): {_si(r.ann_macs_per_sample)} MACs = {_si(r.ann_flops_per_sample)} FLOPs"
                 f" -> {_energy(r.ann_energy_pj)} at {c.e_mac_pj} pJ/MAC")
    if r.snn_energy_pj > 0:
        lines.append(f"  ANN / SNN energy ratio: {r.ann_energy_pj / r.snn_energy_pj:.3g}x")
    if r.firing_rates:
        rates = ", ".join(f"{k} {v:.4f}" for k, v in r.firing_rates.items())
        lines.append(f"  Firing rates (spikes / neuron / step): {rates}")
    return "\n".join(lines)
