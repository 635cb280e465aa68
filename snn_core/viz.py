"""Figures for spiking networks and their evolving sparse structure.

Every function returns a :class:`matplotlib.figure.Figure` built with the
object-oriented API (``Figure()`` + an Agg canvas; pyplot is never imported),
so it works headless and from threads, and nothing is ever shown. Save with
:func:`save` (or ``fig.savefig``).

Conventions
-----------
- Arrays are time-major ``(T, batch, n)`` like everywhere in ``snn_core``;
  one sample is drawn (``sample=``). A ``(T, n)`` array is accepted too.
- Accuracies come as fractions in [0, 1] and are drawn in %; values already
  above 1 are assumed to be % and drawn as they are.
- Connectivity: rows are postsynaptic (output) neurons, columns presynaptic
  (input) neurons, as in the CSR weight ``(n_out, n_in)``. A layer larger
  than ``max_size`` in either direction is drawn *downsampled*: each pixel is
  a block of ``br x bc`` connections whose counts come straight from the CSR
  arrays (``np.bincount`` over block ids), so no array larger than
  ``max_size**2`` cells is ever built, whatever the layer size.
- Colours: Okabe-Ito (colour-blind safe). Structure changes use grey =
  present in both structures, orange = pruned, blue = grown throughout.
  Structure diffs compare two *masks*: a position pruned and regrown between
  the two snapshots counts as present in both.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

__all__ = [
    "spike_raster", "membrane_traces", "surrogate_curves", "input_encodings", "connectivity_matrix",
    "connectivity_diff", "density_turnover", "weight_histograms", "training_curves",
    "accuracy_vs_density", "sweep_summary", "structure_animation", "save", "OKABE_ITO", "KEPT", "PRUNED", "GROWN",
]

#: Okabe-Ito palette (black first is skipped for lines)
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
KEPT, PRUNED, GROWN = "#9A9A9A", "#E69F00", "#0072B2"
ABSENT = "#FFFFFF"
#: default largest image side (pixels = blocks) for connectivity figures
MAX_SIZE = 400


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def _figure(w, h):
    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


_OUTSIDE_FALLBACK = {  # matplotlib < 3.7 has no loc="outside ...": anchor at the figure edge instead
    "outside lower center": dict(loc="lower center", bbox_to_anchor=(0.5, 0.0)),
    "outside right upper": dict(loc="upper right", bbox_to_anchor=(1.0, 1.0)),
}


def _fig_legend(fig, loc, **kw):
    """Figure legend outside the axes (constrained layout makes room for it)."""
    try:
        return fig.legend(loc=loc, **kw)
    except ValueError:
        return fig.legend(**_OUTSIDE_FALLBACK[loc], **kw)


def save(fig, path, dpi=120):
    """Save ``fig`` to ``path`` (parent folders created); returns the path as str."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return str(path)


def _one_sample(a, sample, what):
    a = np.asarray(a)
    if a.ndim == 3:
        if not 0 <= sample < a.shape[1]:
            raise IndexError(f"{what}: sample {sample} out of range for batch size {a.shape[1]}")
        return a[:, sample, :]
    if a.ndim == 2:
        return a
    raise ValueError(f"{what}: expected shape (T, batch, n) or (T, n), got {a.shape}")


def _is_binary(a):
    return bool(np.all((a == 0) | (a == 1)))


def _to_percent(values):
    v = np.asarray(values, dtype=float)
    finite = v[np.isfinite(v)]
    return v * 100.0 if finite.size == 0 or finite.max() <= 1.0 + 1e-9 else v


def _float_array(seq):
    return np.array([np.nan if v is None else float(v) for v in seq], dtype=float)


def _integer_x(ax):
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _structure(s):
    """(indptr, indices) from a tuple, a scipy matrix or a SparseLinear-like object."""
    if hasattr(s, "weight") and hasattr(s.weight, "indptr"):
        s = s.weight
    if hasattr(s, "indptr") and hasattr(s, "indices"):
        return np.asarray(s.indptr), np.asarray(s.indices)
    indptr, indices = s[0], s[1]
    return np.asarray(indptr), np.asarray(indices)


def _block_factors(shape, max_size):
    n_out, n_in = int(shape[0]), int(shape[1])
    max_size = max(1, int(max_size))
    br, bc = max(1, math.ceil(n_out / max_size)), max(1, math.ceil(n_in / max_size))
    return br, bc, math.ceil(n_out / br), math.ceil(n_in / bc)


def _rows_of(indptr):
    return np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(np.asarray(indptr, np.int64)))


def _block_sum(rows, cols, br, bc, gr, gc, weights=None):
    """Per-block sums over entries at (rows, cols): a (gr, gc) float64 array."""
    ids = (np.asarray(rows, np.int64) // br) * gc + np.asarray(cols, np.int64) // bc
    return np.bincount(ids, weights=weights, minlength=gr * gc).reshape(gr, gc).astype(np.float64)


def _block_area(shape, br, bc, gr, gc):
    """Number of cells in each block (edge blocks can be smaller)."""
    h = np.minimum(br, shape[0] - np.arange(gr) * br)
    w = np.minimum(bc, shape[1] - np.arange(gc) * bc)
    return np.outer(h, w).astype(np.float64)


def _matrix_axes(ax, shape, br=1, bc=1):
    n_out, n_in = shape
    ax.set_xlabel("presynaptic neuron (input index)")
    ax.set_ylabel("postsynaptic neuron (output index)")
    ax.set_xlim(-0.5, n_in - 0.5)
    ax.set_ylim(n_out - 0.5, -0.5)
    if n_in <= 40 and n_out <= 40 and br == bc == 1:
        ax.set_xticks(np.arange(n_in))
        ax.set_yticks(np.arange(n_out))
        ax.set_xticks(np.arange(n_in + 1) - 0.5, minor=True)
        ax.set_yticks(np.arange(n_out + 1) - 0.5, minor=True)
        ax.grid(which="minor", color="#DDDDDD", linewidth=0.6)
        ax.tick_params(which="minor", length=0)
        if n_in > 20:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if n_out > 20:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _extent(shape, br, bc, gr, gc):
    return (-0.5, gc * bc - 0.5, gr * br - 0.5, -0.5)


def _aspect(shape):
    r = shape[0] / max(shape[1], 1)
    return "equal" if 0.25 <= r <= 4 else "auto"


def _block_note(shape, br, bc):
    return "" if br == bc == 1 else f"\n(downsampled: each pixel = block of {br}×{bc} neuron pairs)"


# --------------------------------------------------------------------------
# 1. spike raster
# --------------------------------------------------------------------------
def spike_raster(spikes, sample=0, title=None, max_neurons=None):
    """Raster plot of one sample's spikes, with the population count per step below.

    Parameters
    ----------
    spikes : ndarray (T, batch, n) or (T, n), values 0/1
    sample : int
        Which sample of the batch.
    title : str, optional
    max_neurons : int, optional
        Draw only neurons ``0 .. max_neurons-1`` (the count panel too).

    Returns
    -------
    Figure with 2 axes: raster (top), spikes per time step (bottom).
    """
    s = _one_sample(spikes, sample, "spikes")
    if max_neurons is not None:
        s = s[:, :int(max_neurons)]
    T, n = s.shape
    t, j = np.nonzero(s)
    fig = _figure(7.5, 5.0)
    ax, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw=dict(height_ratios=[3.2, 1]))
    ms = float(np.clip(300.0 / max(n, 1), 2.0, 12.0))
    ax.plot(t, j, linestyle="none", marker="|", markersize=ms, markeredgewidth=1.2, color="black")
    ax.set_ylim(n - 0.5, -0.5) if n <= 40 else ax.set_ylim(n, -1)
    ax.set_xlim(-0.5, T - 0.5)
    ax.set_ylabel("neuron index")
    if n <= 40:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    rate = len(t) / max(T * n, 1)
    shown = f" (first {n} neurons)" if max_neurons is not None else ""
    ax.set_title(title or f"Spike raster, sample {sample}{shown}\n{len(t)} spikes over {T} steps × {n} neurons "
                 f"= {rate:.3f} spikes per neuron per step", fontsize=10)
    counts = s.sum(axis=1)
    ax2.bar(np.arange(T), counts, width=0.8, color=OKABE_ITO[0])
    ax2.set_xlabel("time step")
    ax2.set_ylabel("spikes\nper step")
    _integer_x(ax2)
    ax2.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
    return fig


# --------------------------------------------------------------------------
# 2. membrane traces
# --------------------------------------------------------------------------
def membrane_traces(u, spikes=None, v_th=1.0, v_reset=0.0, neurons=(0, 1, 2), sample=0, v=None):
    """Membrane potential of a few neurons over time, with threshold, spikes and resets.

    Parameters
    ----------
    u : ndarray (T, batch, n) or (T, n)
        Membrane *before* reset (what the threshold sees; LIF ``recorded["u"]``).
    spikes : ndarray like ``u``, optional
        Spikes; inferred as ``u >= v_th`` if omitted.
    v_th, v_reset : float
        Threshold and reset level. ``v_reset`` is only used when ``v`` is
        None (hard reset assumed): it is then drawn as a dotted line and the
        trace drops to it after each spike.
    neurons : sequence of int, or None
        None picks the three neurons that spike most in this sample.
    sample : int
    v : ndarray like ``u``, optional
        Membrane *after* reset (``recorded["v"]``); the trace drops to it
        after each spike (right for any reset: hard, soft or none), and no
        ``v_reset`` line is drawn.

    Returns
    -------
    Figure with one axes per neuron (stacked, shared time axis). Each step
    shows the integrated value ``u[t]`` (dot); after a spike (star) the
    trace drops to the reset value (dashed vertical segment) from which the
    next step integrates.
    """
    uu = _one_sample(u, sample, "u")
    ss = (uu >= v_th).astype(float) if spikes is None else _one_sample(spikes, sample, "spikes")
    vv = None if v is None else _one_sample(v, sample, "v")
    if neurons is None:  # the three most active neurons of this sample
        neurons = sorted(np.argsort(-ss.sum(axis=0), kind="stable")[:3].tolist())
    neurons = [int(k) for k in np.atleast_1d(neurons)]
    for k in neurons:
        if not 0 <= k < uu.shape[1]:
            raise IndexError(f"neurons: index {k} out of range for {uu.shape[1]} neurons")
    T = uu.shape[0]
    fig = _figure(7.5, 1.2 + 1.9 * len(neurons))
    axes = np.atleast_1d(fig.subplots(len(neurons), 1, sharex=True, squeeze=False)[:, 0])
    floor = v_reset if vv is None else float(np.min(vv[:, neurons]))
    lo = min(float(np.min(uu[:, neurons])), floor, 0.0)
    hi = max(float(np.max(uu[:, neurons])), v_th)
    pad = 0.12 * (hi - lo or 1.0)
    for ax, k in zip(axes, neurons):
        xs, ys = [], []
        spk = np.flatnonzero(ss[:, k] > 0)
        for t in range(T):
            xs.append(t)
            ys.append(uu[t, k])
            if ss[t, k] > 0:  # break the line: the drop is drawn as the dashed "reset" segment
                xs += [t, t]
                ys += [np.nan, vv[t, k] if vv is not None else v_reset]
        ax.plot(xs, ys, color=OKABE_ITO[0], linewidth=1.4, zorder=2)
        ax.plot(np.arange(T), uu[:, k], linestyle="none", marker="o", markersize=3.5, color=OKABE_ITO[0], zorder=3)
        ax.axhline(v_th, color=OKABE_ITO[3], linestyle="--", linewidth=1.2, zorder=1)
        if vv is None:  # with v given the reset target is in the data (soft / no reset: no single level)
            ax.axhline(v_reset, color="0.45", linestyle=":", linewidth=1.2, zorder=1)
        if len(spk):
            after = vv[spk, k] if vv is not None else np.full(len(spk), v_reset)
            ax.vlines(spk, after, uu[spk, k], colors="0.35", linestyles="--", linewidth=1.0, zorder=2)
            ax.plot(spk, uu[spk, k], linestyle="none", marker="*", markersize=11, color=PRUNED,
                    markeredgecolor="black", markeredgewidth=0.5, zorder=4)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_ylabel("membrane\npotential (a.u.)")
        ax.set_title(f"neuron {k}: {len(spk)} spike{'s' if len(spk) != 1 else ''}", fontsize=10, loc="left")
    axes[-1].set_xlabel("time step")
    axes[-1].set_xlim(-0.5, T - 0.5)
    _integer_x(axes[-1])
    handles = [
        Line2D([], [], color=OKABE_ITO[0], marker="o", markersize=4, label="membrane u (before reset)"),
        Line2D([], [], color=OKABE_ITO[3], linestyle="--", label=f"threshold v_th = {v_th:g}"),
        Line2D([], [], linestyle="none", marker="*", markersize=11, color=PRUNED, markeredgecolor="black",
               markeredgewidth=0.5, label="spike (u ≥ v_th)"),
        Line2D([], [], color="0.35", linestyle="--",
               label="reset after spike" if vv is None else "reset after spike (to v)"),
    ]
    if vv is None:
        handles.insert(2, Line2D([], [], color="0.45", linestyle=":", label=f"reset level v_reset = {v_reset:g}"))
    _fig_legend(fig, handles=handles, loc="outside lower center", ncols=3, fontsize=8.5, frameon=False)
    fig.suptitle(f"LIF membrane traces, sample {sample}", fontsize=11)
    return fig


# --------------------------------------------------------------------------
# 3. surrogate gradients
# --------------------------------------------------------------------------
_PARAM_SYMBOL = {"rectangular": "a", "triangle": "γ", "sigmoid": "k", "arctan": "α", "fast_sigmoid": "k"}


def surrogate_curves(names=None, x=np.linspace(-2, 2, 401), params=None):
    """Each surrogate derivative sigma'(x) next to the Heaviside step it replaces.

    Parameters
    ----------
    names : list of str, optional
        Surrogates to draw (default: all of ``snn_core.surrogate.SURROGATES``).
    x : ndarray
        Distance to threshold ``u - v_th``.
    params : dict name -> float, optional
        Width/slope per surrogate (default: each surrogate's default).

    Returns
    -------
    Figure with ``len(names) + 1`` axes: one per surrogate, then all overlaid.
    """
    from .surrogate import SURROGATES, surrogate_numpy

    names = list(SURROGATES) if names is None else list(names)
    params = params or {}
    x = np.asarray(x, dtype=float)
    n = len(names) + 1
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = _figure(3.6 * ncols, 3.0 * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.remove()
    heav = (x >= 0).astype(float)
    curves = []
    for i, (ax, name) in enumerate(zip(axes, names)):
        p = params.get(name, SURROGATES[name][1] if name in SURROGATES else None)
        y = surrogate_numpy(name, x, p)
        col = OKABE_ITO[i % 7]
        curves.append((name, p, y, col))
        ax.plot(x, heav, color="0.55", linestyle="--", linewidth=1.3, label="H(x): forward spike")
        ax.plot(x, y, color=col, linewidth=2.0, label="σ'(x): backward surrogate")
        ax.fill_between(x, 0, y, color=col, alpha=0.15)
        ax.set_title(f"{name} ({_PARAM_SYMBOL.get(name, 'p')} = {p:g})")
        ax.set_xlabel("x = u − v_th (a.u.)")
        ax.set_ylabel("value")
        ax.set_ylim(-0.05, max(1.15, float(y.max()) * 1.1))
    handles = [Line2D([], [], color="0.55", linestyle="--", label="H(x): Heaviside step, used in the forward pass"),
               Line2D([], [], color="0.2", linewidth=2,
                      label="σ'(x): surrogate derivative, replaces dH/dx in the backward pass")]
    _fig_legend(fig, handles=handles, loc="outside lower center", ncols=2, fontsize=9, frameon=False)
    ax = axes[len(names)]
    ax.plot(x, heav, color="0.55", linestyle="--", linewidth=1.3, label="H(x)")
    for name, p, y, col in curves:
        ax.plot(x, y, color=col, linewidth=1.6, label=name)
    ax.set_title("all surrogates overlaid")
    ax.set_xlabel("x = u − v_th (a.u.)")
    ax.set_ylabel("σ'(x)")
    top = max([1.0] + [float(c[2].max()) for c in curves])
    ax.set_ylim(-0.05, top * 1.55)
    ax.legend(fontsize=7.5, loc="upper center", ncols=3, columnspacing=0.8, handlelength=1.5)
    fig.suptitle("Surrogate derivatives of the spike function (default parameters)")
    return fig


# --------------------------------------------------------------------------
# 4. input encodings
# --------------------------------------------------------------------------
def input_encodings(image, encodings, image_shape=None):
    """A digit and, per encoding, its spike raster and per-pixel spike count.

    Parameters
    ----------
    image : ndarray (28, 28) or (784,), intensities in [0, 1]
    encodings : dict name -> ndarray (T, n_features) or (T, batch, n_features)
        Encoded trains of this image (sample 0 is drawn when batched).
    image_shape : (h, w), optional
        Default: the image's own 2-D shape, or square for a flat image.

    Returns
    -------
    Figure with ``1 + 3 * len(encodings)`` axes: the image, then per
    encoding a raster, a count image and its colour bar.
    """
    img = np.asarray(image, dtype=float)
    if image_shape is None:
        if img.ndim == 2:
            image_shape = img.shape
        else:
            side = int(round(math.sqrt(img.size)))
            if side * side != img.size:
                raise ValueError(f"image: cannot infer a square shape from {img.size} pixels; pass image_shape")
            image_shape = (side, side)
    img = img.reshape(image_shape)
    n_enc = max(1, len(encodings))
    fig = _figure(11.0, 0.6 + 2.6 * n_enc)
    gs = fig.add_gridspec(n_enc, 3, width_ratios=[1.0, 2.4, 1.15])
    ax0 = fig.add_subplot(gs[:, 0] if n_enc > 1 else gs[0, 0])
    ax0.imshow(img, cmap="gray", vmin=0, vmax=1 if img.max() <= 1 else None, interpolation="nearest")
    ax0.set_title("input image\n(white = intensity 1)")
    ax0.set_xticks([])
    ax0.set_yticks([])
    n_pix = img.size
    for r, (name, enc) in enumerate(encodings.items()):
        s = _one_sample(enc, 0, f"encodings[{name!r}]")
        if s.shape[1] != n_pix:
            raise ValueError(f"encodings[{name!r}]: expected {n_pix} features, got {s.shape[1]}")
        T = s.shape[0]
        binary = _is_binary(s)
        ax = fig.add_subplot(gs[r, 1])
        if binary:
            t, j = np.nonzero(s)
            ax.plot(t, j, linestyle="none", marker="|", markersize=2.5, markeredgewidth=0.8, color="black")
            ax.set_ylim(n_pix, -1)
            ax.set_title(f"{name}: spike raster ({int(s.sum())} spikes, T = {T})", fontsize=10)
        else:
            ax.imshow(s.T, aspect="auto", cmap="gray_r", interpolation="nearest",
                      extent=(-0.5, T - 0.5, n_pix - 0.5, -0.5))
            ax.set_title(f"{name}: real-valued input (darker = larger), T = {T}", fontsize=10)
        ax.set_xlim(-0.5, T - 0.5)
        ax.set_ylabel("pixel index\n(row-major)")
        ax.set_xlabel("time step")
        _integer_x(ax)
        axc = fig.add_subplot(gs[r, 2])
        counts = s.sum(axis=0).reshape(image_shape)
        im = axc.imshow(counts, cmap="viridis", interpolation="nearest")
        axc.set_xticks([])
        axc.set_yticks([])
        axc.set_title("spikes per pixel" if binary else "input summed over time", fontsize=10)
        cb = fig.colorbar(im, ax=axc, shrink=0.9)
        cb.set_label(f"spike count over {T} steps" if binary else f"sum over {T} steps")
        if binary:
            cb.locator = MaxNLocator(integer=True)
            cb.update_ticks()
    fig.suptitle("Input encodings of one image", fontsize=12)
    return fig


# --------------------------------------------------------------------------
# 5. connectivity matrix
# --------------------------------------------------------------------------
def connectivity_matrix(indptr, indices, shape, data=None, max_size=MAX_SIZE, title=None):
    """Image of a layer's connections (0/1 mask, or signed weights with ``data``).

    Parameters
    ----------
    indptr, indices : CSR structure of the (n_out, n_in) weight
    shape : (n_out, n_in)
    data : ndarray (nnz,), optional
        Weights at the connections: drawn with a diverging colour map
        (absent connections light grey).
    max_size : int
        Largest image side. Bigger layers are downsampled by blocks: the
        pixel shows the fraction of the block's possible connections that
        exist (or, with ``data``, their mean weight). Never builds an array
        with more than ``max_size**2`` cells.

    Returns
    -------
    Figure with 2 axes (matrix and colour bar) or 1 for a small 0/1 mask.
    """
    indptr, indices = np.asarray(indptr), np.asarray(indices)
    shape = (int(shape[0]), int(shape[1]))
    nnz = len(indices)
    br, bc, gr, gc = _block_factors(shape, max_size)
    rows = _rows_of(indptr)
    density = nnz / max(shape[0] * shape[1], 1)
    w, h = _matrix_figsize(shape, 1, extra=0.0 if (data is None and br == bc == 1) else 1.2)
    fig = _figure(max(w, 6.2), h)
    ax = fig.add_subplot()
    ext = _extent(shape, br, bc, gr, gc)
    interp = "nearest" if max(gr, gc) <= 200 else "antialiased"
    if data is None:
        counts = _block_sum(rows, indices, br, bc, gr, gc)
        if br == bc == 1:
            cmap = mcolors.ListedColormap([ABSENT, "black"])
            ax.imshow(counts, cmap=cmap, vmin=0, vmax=1, extent=ext, aspect=_aspect(shape), interpolation=interp)
            _fig_legend(fig, handles=[Patch(facecolor="black", label="connection present"),
                                Patch(facecolor=ABSENT, edgecolor="0.5", label="no connection")],
                       loc="outside lower center", ncols=2, fontsize=9, frameon=False)
            what = "0/1 mask"
        else:
            frac = counts / _block_area(shape, br, bc, gr, gc)
            im = ax.imshow(frac, cmap="viridis", vmin=0, extent=ext, aspect=_aspect(shape), interpolation=interp)
            fig.colorbar(im, ax=ax, shrink=0.85).set_label("fraction of possible connections present")
            what = "connection density per block"
    else:
        data = np.asarray(data, dtype=float)
        if data.shape != (nnz,):
            raise ValueError(f"data: expected {nnz} values (one per connection), got shape {data.shape}")
        counts = _block_sum(rows, indices, br, bc, gr, gc)
        sums = _block_sum(rows, indices, br, bc, gr, gc, weights=data)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        img = np.ma.masked_invalid(mean)
        vmax = float(np.nanmax(np.abs(mean))) if np.isfinite(mean).any() else 1.0
        vmax = vmax or 1.0
        cmap = mcolors.LinearSegmentedColormap.from_list("w", ["#2166AC", "#F7F7F7", "#B2182B"]).with_extremes(
            bad="#E4E4E4")
        im = ax.imshow(img, cmap=cmap, vmin=-vmax, vmax=vmax, extent=ext, aspect=_aspect(shape), interpolation=interp)
        fig.colorbar(im, ax=ax, shrink=0.85).set_label(
            "weight (a.u.)" if br == bc == 1 else "mean weight of block's connections (a.u.)")
        what = "weights (grey = no connection)" if br == bc == 1 else "mean weight per block\n(grey = empty block)"
        if br == bc == 1 and shape[0] <= 40 and shape[1] <= 40:
            # outline every connection so that a weight near 0 is not mistaken for "no connection"
            h = 0.44
            verts = [[(c - h, r - h), (c + h, r - h), (c + h, r + h), (c - h, r + h)] for r, c in zip(rows, indices)]
            ax.add_collection(PolyCollection(verts, facecolors="none", edgecolors="0.15", linewidths=1.0))
            what = "weights\n(outlined cells = connections, grey = no connection)"
    _matrix_axes(ax, shape, br, bc)
    ax.set_title(title or f"Connectivity {shape[0]}×{shape[1]} (outputs × inputs), density {100 * density:.3g}%\n"
                 f"{nnz:,} connections — {what}{_block_note(shape, br, bc)}", fontsize=10)
    return fig


def _matrix_figsize(shape, n_panels, extra=0.0):
    r = shape[0] / max(shape[1], 1)
    if _aspect(shape) == "equal":
        w = 4.6 if r >= 1 else 5.6
        h = max(3.0, min(6.0, w * r)) + 1.0
    else:
        w, h = 6.5, 3.6 if r < 1 else 6.5
    return w * n_panels + extra, h


def _blocks_figsize(shape, width):
    """Size of the three-panel (present in both / pruned / grown) view: panels plus titles and colour bars."""
    r = shape[0] / max(shape[1], 1)
    panel = (width - 0.8) / 3
    return width, panel * (r if _aspect(shape) == "equal" else 0.6) + 2.6


# --------------------------------------------------------------------------
# 6. connectivity diff
# --------------------------------------------------------------------------
def _keys(indptr, indices, n_in):
    return _rows_of(indptr) * int(n_in) + np.asarray(indices, np.int64)


def _diff_data(before, after, shape, max_size):
    """Classify connections and reduce them to what the figure draws."""
    shape = (int(shape[0]), int(shape[1]))
    kb = _keys(*_structure(before), shape[1])
    ka = _keys(*_structure(after), shape[1])
    kb.sort()
    ka.sort()
    in_after = np.isin(kb, ka, assume_unique=True)
    both, pruned = kb[in_after], kb[~in_after]  # "both": in both masks (maybe pruned and regrown in between)
    grown = ka[~np.isin(ka, kb, assume_unique=True)]
    br, bc, gr, gc = _block_factors(shape, max_size)
    d = dict(shape=shape, br=br, bc=bc, gr=gr, gc=gc,
             counts=dict(both=len(both), pruned=len(pruned), grown=len(grown)))
    if br == bc == 1:
        code = np.zeros(gr * gc, np.uint8)
        code[both] = 1
        code[pruned] = 2
        code[grown] = 3
        d["mode"], d["code"] = "cells", code.reshape(gr, gc)
    else:
        d["mode"] = "blocks"
        d["blocks"] = {name: _block_sum(k // shape[1], k % shape[1], br, bc, gr, gc)
                       for name, k in (("both", both), ("pruned", pruned), ("grown", grown))}
    return d


_DIFF_KINDS = ("both", "pruned", "grown")
#: how each diff category is labelled in figures
_DIFF_LABELS = {"both": "present in both", "pruned": "pruned", "grown": "grown"}
#: colour-bar labels of the downsampled view
_DIFF_BLOCK_LABELS = {"both": "connections present in both", "pruned": "pruned connections",
                      "grown": "grown connections"}
_DIFF_COLORS = {"both": KEPT, "pruned": PRUNED, "grown": GROWN}


#: darker end of the white -> colour ramps of the downsampled view (light grey is too faint there)
_RAMP_END = {"both": "#4D4D4D", "pruned": PRUNED, "grown": GROWN}


def _diff_legend_handles(counts, colors=_DIFF_COLORS):
    return [Patch(facecolor=colors[k], edgecolor="0.3", label=f"{_DIFF_LABELS[k]} ({counts[k]:,})")
            for k in _DIFF_KINDS]


def _draw_diff(fig, d, title, vmax=None, colorbars=True):
    shape, c = d["shape"], d["counts"]
    head = (f"{title}\n" if title else "") + " · ".join(f"{_DIFF_LABELS[k]} {c[k]:,}" for k in _DIFF_KINDS)
    if d["mode"] == "cells":
        ax = fig.add_subplot()
        cmap = mcolors.ListedColormap([ABSENT, KEPT, PRUNED, GROWN])
        ax.imshow(d["code"], cmap=cmap, vmin=-0.5, vmax=3.5, interpolation="nearest",
                  extent=_extent(shape, 1, 1, d["gr"], d["gc"]), aspect=_aspect(shape))
        _matrix_axes(ax, shape)
        handles = _diff_legend_handles(c) + [Patch(facecolor=ABSENT, edgecolor="0.3", label="no connection")]
        _fig_legend(fig, handles=handles, loc="outside right upper", fontsize=8.5, frameon=False)
        ax.set_title(head, fontsize=10)
        return [ax]
    axes = fig.subplots(1, 3, sharex=True, sharey=True)
    ext = _extent(shape, d["br"], d["bc"], d["gr"], d["gc"])
    for ax, name in zip(axes, _DIFF_KINDS):
        g = d["blocks"][name]
        vm = (vmax or {}).get(name) or max(float(g.max()), 1.0)
        cmap = mcolors.LinearSegmentedColormap.from_list(name, ["#FFFFFF", _RAMP_END[name]])
        im = ax.imshow(g, cmap=cmap, vmin=0, vmax=vm, extent=ext, aspect=_aspect(shape),
                       interpolation="nearest" if max(d["gr"], d["gc"]) <= 200 else "antialiased")
        _matrix_axes(ax, shape, d["br"], d["bc"])
        ax.set_title(f"{_DIFF_LABELS[name]}: {c[name]:,}", color="black", fontsize=10)
        if ax is not axes[0]:
            ax.set_ylabel("")
        if colorbars:
            cb = fig.colorbar(im, ax=ax, shrink=0.8, location="bottom")
            cb.set_label(f"{_DIFF_BLOCK_LABELS[name]} per {d['br']}×{d['bc']} block")
            cb.locator = MaxNLocator(integer=True)
            cb.update_ticks()
    _fig_legend(fig, handles=_diff_legend_handles(c, _RAMP_END), loc="outside lower center", ncols=3, fontsize=9,
               frameon=False)
    fig.suptitle(head + _block_note(shape, d["br"], d["bc"]), fontsize=10)
    return list(axes)


def connectivity_diff(before, after, shape, max_size=200, title=None):
    """Connections present in both, pruned and grown between two structures of one layer.

    The two structures are compared as *masks*: a position pruned and
    regrown between the snapshots counts as present in both (although its
    weight restarted from 0), so the pruned / grown counts can be smaller
    than the totals of the events in between.

    Parameters
    ----------
    before, after : (indptr, indices) (or scipy CSR matrices / SparseLinear layers)
    shape : (n_out, n_in)
    max_size : int
        Layers larger than this in either direction are downsampled: three
        panels (present in both / pruned / grown) show connections per block, in the
        category's colour.
    title : str, optional
        First title line (the counts are always shown).

    Returns
    -------
    Figure: 1 axes (each connection coloured grey = present in both,
    orange = pruned, blue = grown) for a small layer; 3 axes + 3 colour bars
    when downsampled.
    """
    d = _diff_data(before, after, shape, max_size)
    if d["mode"] == "cells":
        w, h = _matrix_figsize(d["shape"], 1, extra=1.8)
    else:
        w, h = _blocks_figsize(d["shape"], 12.0)
    fig = _figure(w, h)
    _draw_diff(fig, d, title or "Structure change")
    return fig


# --------------------------------------------------------------------------
# 7. density and turnover
# --------------------------------------------------------------------------
#: old column names of the turnover fractions -> the names ``RewiringHistory.as_arrays()`` uses
_HISTORY_ALIASES = {"initial_fraction": "frac_initial_kept", "rewired_fraction": "frac_grown"}


def density_turnover(history_arrays):
    """Per-layer density and turnover over training, from a rewiring history.

    Parameters
    ----------
    history_arrays : dict of equal-length arrays
        One entry per (rewiring event, layer), e.g.
        ``RewiringHistory.as_arrays()``. Keys used when present:
        ``iteration``, ``layer``, ``zeta``, ``n_pruned``, ``n_grown``,
        ``density``, ``frac_initial_kept`` (fraction of the initial
        connections never pruned), ``frac_grown`` (fraction of the current
        connections grown at some event) and ``frac_explored`` (fraction of
        all possible positions that have ever been a connection). The old
        names ``initial_fraction`` / ``rewired_fraction`` are accepted for
        ``frac_initial_kept`` / ``frac_grown``; other keys (``nnz``,
        ``n_ever_grown``, ...) are ignored.

    Returns
    -------
    Figure with one axes per group present, in this order: density;
    connections rewired per event (one curve per layer when pruned = grown,
    as rewiring preserves density; else pruned solid / grown dashed);
    rewiring fraction zeta; initial never pruned vs. grown connections;
    positions explored. Iteration axes have integer ticks.
    """
    h = {k: np.asarray(v) for k, v in history_arrays.items()}
    for old, new in _HISTORY_ALIASES.items():
        if old in h and new not in h:
            h[new] = h[old]
    n = max((len(v) for v in h.values()), default=0)
    it = h["iteration"].astype(float) if "iteration" in h else np.arange(n, dtype=float)
    layer = h["layer"].astype(str) if "layer" in h else np.full(n, "all layers")
    names = list(dict.fromkeys(layer.tolist()))
    color = {nm: OKABE_ITO[i % 7] for i, nm in enumerate(names)}
    xlabel = "training iteration" if "iteration" in h else "rewiring event"
    panels = []
    if "density" in h:
        panels.append("density")
    if "n_pruned" in h or "n_grown" in h:
        panels.append("turnover")
    if "zeta" in h:
        panels.append("zeta")
    if "frac_initial_kept" in h or "frac_grown" in h:
        panels.append("fractions")
    if "frac_explored" in h:
        panels.append("explored")
    if not panels:
        fig = _figure(5, 3)
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no rewiring history to plot", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    ncols = 1 if len(panels) == 1 else 2 if len(panels) <= 4 else 3
    nrows = math.ceil(len(panels) / ncols)
    fig = _figure(5.2 * ncols, 3.4 * nrows + 0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True).ravel()
    for ax in axes[len(panels):]:
        ax.remove()
    many = n > 60

    def series(key):
        for nm in names:
            m = layer == nm
            o = np.argsort(it[m], kind="stable")
            yield nm, it[m][o], h[key][m].astype(float)[o]

    mk = dict(marker=None if many else "o", markersize=4)
    for ax, p in zip(axes, panels):
        if p == "density":
            top = 0.0
            for nm, x, y in series("density"):
                ax.plot(x, 100 * y, color=color[nm], label=nm, **mk)
                top = max(top, float(np.nanmax(100 * y)) if len(y) else 0.0)
            ax.set_ylim(0, top * 1.25 or 1)
            ax.set_ylabel("connection density\n(% of possible)")
            ax.set_title("density per layer")
        elif p == "turnover":
            pos = np.concatenate([h[k].astype(float) for k in ("n_pruned", "n_grown") if k in h])
            pos = pos[np.isfinite(pos) & (pos > 0)]
            # layers of very different sizes: log scale keeps the small ones visible
            use_log = len(names) > 1 and pos.size > 0 and pos.max() / pos.min() > 30
            pruned = {nm: (x, y) for nm, x, y in series("n_pruned")} if "n_pruned" in h else {}
            grown = {nm: (x, y) for nm, x, y in series("n_grown")} if "n_grown" in h else {}
            # rewiring preserves density: pruned = grown at every event, drawn as one curve
            equal = {nm: nm in pruned and nm in grown and np.array_equal(pruned[nm][1], grown[nm][1])
                     for nm in names}
            for nm in names:
                if equal[nm]:
                    curves = [(pruned[nm], "-", "o", 5, None, "rewired per event (pruned = grown)")]
                else:
                    curves = []
                    if nm in pruned:
                        curves.append((pruned[nm], "-", "o", 5, None, "pruned"))
                    if nm in grown:
                        curves.append((grown[nm], "--", "s", 7, "white", "grown"))
                for (x, y), ls, marker, ms, mfc, lab in curves:
                    if use_log:
                        y = np.where(y > 0, y, np.nan)
                    ax.plot(x, y, color=color[nm], linestyle=ls, label=f"{nm}: {lab}",
                            marker=None if many else marker, markersize=ms, markerfacecolor=mfc or color[nm])
            if use_log:
                ax.set_yscale("log")
                ax.set_ylabel("connections per\nrewiring event (log scale)")
            else:
                ax.set_ylim(bottom=0)
                ax.set_ylabel("connections per\nrewiring event")
            ax.set_title("turnover: connections rewired per event" if all(equal.values())
                         else "turnover: pruned (solid) / grown (dashed)")
        elif p == "zeta":
            curves = list(series("zeta"))
            same = len(curves) > 1 and all(len(c[1]) == len(curves[0][1]) and np.allclose(c[1], curves[0][1])
                                           and np.allclose(c[2], curves[0][2]) for c in curves)
            for nm, x, y in (curves[:1] if same else curves):
                ax.plot(x, y, color="black" if same else color[nm], label="all layers" if same else nm, **mk)
            ax.set_ylim(bottom=0)
            ax.set_ylabel("ζ (fraction of\nconnections rewired)")
            ax.set_title("rewiring fraction ζ per event")
        elif p == "fractions":
            for key, ls, lab in (("frac_initial_kept", "-", "initial, never pruned (% of initial)"),
                                 ("frac_grown", "--", "grown at some event (% of current)")):
                if key not in h:
                    continue
                for nm, x, y in series(key):
                    ax.plot(x, 100 * y, color=color[nm], linestyle=ls, label=f"{nm}: {lab}", **mk)
            ax.set_ylim(-2, 102)
            ax.set_ylabel("% of connections")
            ax.set_title("initial vs. grown connections")
        else:  # explored
            top = 0.0
            for nm, x, y in series("frac_explored"):
                ax.plot(x, 100 * y, color=color[nm], label=f"{nm}: ever a connection", **mk)
                top = max(top, float(np.nanmax(100 * y)) if len(y) else 0.0)
            if "density" in h:  # explored starts at the density and can only grow
                for nm, x, y in series("density"):
                    ax.plot(x, 100 * y, color=color[nm], linestyle=":", linewidth=1.2,
                            label=f"{nm}: current density")
            ax.set_ylim(0, top * 1.25 or 1)
            ax.set_ylabel("% of all possible\npositions")
            ax.set_title("positions explored")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[:len(panels)]:
        ax.set_xlabel(xlabel)
        ax.xaxis.set_tick_params(labelbottom=True)
        _integer_x(ax)
    fig.suptitle("Evolution of the sparse structure during training")
    return fig


# --------------------------------------------------------------------------
# 8. weight histograms
# --------------------------------------------------------------------------
def weight_histograms(snapshots, bins=60, mode="overlay", log=False, title="Weight distributions"):
    """Weight distributions of several snapshots (layers, or points of training).

    Parameters
    ----------
    snapshots : list of (label, weights 1-D array)
    bins : int
        Number of shared bins over the range of all snapshots.
    mode : {"overlay", "multiples"}
        All histograms as coloured steps on one axes (early = dark, late =
        light), or one small panel each, sharing the x axis.
    log : bool
        Log-scale counts.
    title : str
        Figure title; say what the snapshots are (e.g. "over training" only
        when they are taken at several points of training).

    Returns
    -------
    Figure with 1 axes (overlay) or ``len(snapshots)`` axes (multiples).
    """
    if mode not in ("overlay", "multiples"):
        raise ValueError(f"mode: expected 'overlay' or 'multiples', got {mode!r}")
    snaps = [(str(lab), np.asarray(w, dtype=float).ravel()) for lab, w in snapshots]
    if not snaps:
        raise ValueError("snapshots: expected at least one (label, weights) pair")
    allw = np.concatenate([w for _, w in snaps]) if snaps else np.zeros(1)
    allw = allw[np.isfinite(allw)]
    lo, hi = (float(allw.min()), float(allw.max())) if allw.size else (-1.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, int(bins) + 1)
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    cols = [cmap(0.85 * i / max(len(snaps) - 1, 1)) for i in range(len(snaps))]

    def label(lab, w):
        return f"{lab} (n = {w.size:,}, std {w.std():.3g})" if w.size else f"{lab} (empty)"

    if mode == "overlay":
        fig = _figure(7.0, 4.2)
        ax = fig.add_subplot()
        for (lab, w), c in zip(snaps, cols):
            ax.hist(w, bins=edges, histtype="step", color=c, linewidth=1.6, label=label(lab, w), log=log)
        ax.set_xlabel("weight value (a.u.)")
        ax.set_ylabel("number of connections")
        ax.legend(fontsize=8, title="snapshot (dark = early)", title_fontsize=8)
        ax.set_title(title)
        ax.axvline(0, color="0.6", linewidth=0.8, zorder=0)
        return fig
    fig = _figure(6.5, 0.8 + 1.5 * len(snaps))
    axes = fig.subplots(len(snaps), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (lab, w), c in zip(axes, snaps, cols):
        ax.hist(w, bins=edges, color=c, log=log)
        ax.set_title(label(lab, w), fontsize=9, loc="left")
        ax.set_ylabel("connections")
        ax.axvline(0, color="0.6", linewidth=0.8, zorder=0)
    axes[-1].set_xlabel("weight value (a.u.)")
    fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------
# 9. training curves
# --------------------------------------------------------------------------
def training_curves(metrics, title="Training curves"):
    """Loss, accuracy (%) and learning rate per epoch; whichever keys exist.

    Parameters
    ----------
    metrics : dict of lists
        ``epoch`` (x axis; 1, 2, ... if absent), keys ending in ``loss``,
        keys containing ``acc`` (fractions 0..1, drawn in %), ``lr``.
        ``None`` / NaN entries are skipped. With ``val_accuracy`` the epoch
        of best validation accuracy is marked (the model the paper reports).

    Returns
    -------
    Figure with one axes per group present (loss, accuracy, learning rate).
    """
    m = {k: _float_array(v) for k, v in metrics.items() if k != "epoch" and v is not None and len(v)}
    n = max((len(v) for v in m.values()), default=0)
    ep = np.asarray(metrics.get("epoch", []), dtype=float)
    if len(ep) != n:
        ep = np.arange(1, n + 1, dtype=float)
    loss_keys = [k for k in m if k.lower().endswith("loss")]
    acc_keys = [k for k in m if "acc" in k.lower()]
    lr_keys = [k for k in m if k.lower() in ("lr", "learning_rate")]
    groups = [g for g in (("loss", loss_keys), ("accuracy", acc_keys), ("lr", lr_keys)) if g[1]]
    fig = _figure(4.4 * max(len(groups), 1) + 0.4, 3.8)
    if not groups:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no metrics to plot", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    axes = np.atleast_1d(fig.subplots(1, len(groups), squeeze=False)[0])
    style = {"train": ("-", OKABE_ITO[0]), "val": ("--", OKABE_ITO[1]), "test": (":", OKABE_ITO[2])}

    def look(k, i):
        for pre, (ls, c) in style.items():
            if k.lower().startswith(pre):
                return ls, c
        return "-", OKABE_ITO[3 + i % 4]

    for ax, (g, keys) in zip(axes, groups):
        for i, k in enumerate(keys):
            y = m[k]
            x = ep[:len(y)]
            if g == "accuracy":
                y = _to_percent(y)
            ok = np.isfinite(y)
            ls, c = look(k, i)
            ax.plot(x[ok], y[ok], linestyle=ls if ok.sum() > 1 else "none", color=c,
                    marker="o" if ok.sum() <= 30 else None, markersize=4,
                    label="learning rate" if g == "lr" else k.replace("_", " "))
        if g == "loss":
            ax.set_ylabel("loss")
            ax.set_title("loss")
        elif g == "accuracy":
            ax.set_ylabel("accuracy (%)")
            ax.set_title("accuracy")
            if "val_accuracy" in m and np.isfinite(m["val_accuracy"]).any():
                va = _to_percent(m["val_accuracy"])
                b = int(np.nanargmax(va))
                note = f"best val {va[b]:.2f}% (epoch {ep[b]:g})"
                if "test_accuracy" in m and b < len(m["test_accuracy"]) and np.isfinite(m["test_accuracy"][b]):
                    note += f"\ntest there: {_to_percent(m['test_accuracy'])[b]:.2f}%"
                ax.axvline(ep[b], color="0.5", linestyle="-.", linewidth=1, label=note)
        else:
            ax.set_ylabel("learning rate")
            ax.set_title("learning-rate schedule")
            if np.nanmin(m[keys[0]]) > 0:
                ax.set_yscale("log")
        ax.set_xlabel("epoch")
        if len(ep) <= 30:
            _integer_x(ax)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------
# 10. accuracy vs density
# --------------------------------------------------------------------------
def accuracy_vs_density(rows, title="Test accuracy vs. connection density"):
    """ESL (rewiring) vs. static sparse vs. dense, over density (log axis).

    Parameters
    ----------
    rows : list of dict
        ``density`` (fraction), ``rewiring`` (bool), ``sparse`` (bool; False =
        dense baseline), ``test_accuracy`` (fraction). Several rows with the
        same settings (seeds) are averaged; error bars show min-max.

    Returns
    -------
    Figure with 1 axes; log x axis with a tick (in %) at every plotted
    density and at 100% (the dense reference).
    """
    fig = _figure(6.8, 4.4)
    ax = fig.add_subplot()
    groups, dense = {}, []
    for r in rows:
        acc = r.get("test_accuracy")
        if acc is None or not np.isfinite(acc):
            continue
        if not r.get("sparse", True):
            dense.append(float(acc))
            continue
        key = "ESL (rewiring)" if r.get("rewiring", False) else "static sparse (no rewiring)"
        groups.setdefault(key, {}).setdefault(float(r["density"]), []).append(float(acc))
    allacc = [a for g in groups.values() for v in g.values() for a in v] + dense
    scale = 100.0 if (not allacc or max(allacc) <= 1.0 + 1e-9) else 1.0
    dens_all = []
    colors = {"ESL (rewiring)": OKABE_ITO[0], "static sparse (no rewiring)": OKABE_ITO[1]}
    markers = {"ESL (rewiring)": "o", "static sparse (no rewiring)": "s"}
    for key in ("ESL (rewiring)", "static sparse (no rewiring)"):
        if key not in groups:
            continue
        ds = np.array(sorted(groups[key]))
        vals = [np.array(groups[key][d]) * scale for d in ds]
        mean = np.array([v.mean() for v in vals])
        err = np.array([[v.mean() - v.min(), v.max() - v.mean()] for v in vals]).T
        nseed = max(len(v) for v in vals)
        label = key + (f" (mean, min–max of ≤{nseed} runs)" if nseed > 1 else "")
        ax.errorbar(ds, mean, yerr=err if nseed > 1 else None, color=colors[key], marker=markers[key],
                    capsize=3, linewidth=1.8, label=label)
        dens_all.extend(ds)
    if dense:
        d = np.array(dense) * scale
        ax.axhline(d.mean(), color="black", linestyle="--", linewidth=1.3, label=f"dense baseline {d.mean():.2f}%")
        if len(d) > 1:
            ax.axhspan(d.min(), d.max(), color="0.85", zorder=0)
    ax.set_xscale("log")
    if dens_all:
        ticks = sorted(set(float(x) for x in dens_all) | {1.0})  # every plotted density + the dense reference
        ax.set_xlim(ticks[0] / 1.6, ticks[-1] * 1.6)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_formatter(NullFormatter())  # log axes label some minor ticks: only ours
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.3g}%"))
    ax.set_xlabel("connection density (% of possible connections, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    return fig

def sweep_summary(configurations, title="Test accuracy vs. connection density"):
    """Aggregated sweep: accuracy vs density with error bars, and turnover.

    Parameters
    ----------
    configurations : list of dict
        The ``configurations`` of a ``sweep.json`` (:func:`snn_core.sweep.aggregate`):
        ``label`` ("ESL", "static" or "dense"), ``density_mean`` (fraction),
        ``test_accuracy_mean`` / ``_std`` (fractions), ``n`` (seeds),
        ``initial_kept_mean`` / ``explored_mean`` (fractions, NaN without
        rewiring) and any other grid values (one line per combination of them,
        e.g. per grow rule).

    Returns
    -------
    Figure with 2 axes: left, test accuracy (%) vs density (log x; error bars
    = sample std over seeds; dense as a line with a ±std band); right, for
    every ESL line, the initial connections never pruned and the positions
    ever explored (% , log x).
    """
    skip = {"label", "n", "seeds", "runs", "sparse", "density", "rewiring"}
    fig = _figure(11.5, 4.4)
    ax, tx = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    series = {}
    for c in configurations:
        other = {k: v for k, v in c.items() if k not in skip and not k.endswith(("_mean", "_std", "_sem"))}
        name = c["label"] + "".join(f", {k} {v}" for k, v in other.items())
        series.setdefault((c["label"], name), []).append(c)
    dens_all, nmax = [], max([c["n"] for c in configurations] or [1])
    markers = {"ESL": "o", "static": "s"}
    sparse_series = [k for k in series if k[0] != "dense"]
    sparse_series.sort(key=lambda k: (k[0] != "ESL", k[1]))
    for i, key in enumerate(sparse_series):
        cs = sorted(series[key], key=lambda c: c["density_mean"])
        d = np.array([c["density_mean"] for c in cs])
        m = 100 * np.array([c["test_accuracy_mean"] for c in cs], dtype=float)
        e = 100 * np.nan_to_num(np.array([c["test_accuracy_std"] for c in cs], dtype=float))
        color = OKABE_ITO[i % 7]
        ax.errorbar(d, m, yerr=e, color=color, marker=markers.get(key[0], "^"), capsize=3, linewidth=1.6,
                    label=key[1])
        dens_all.extend(d)
        kept = 100 * np.array([c.get("initial_kept_mean", math.nan) for c in cs], dtype=float)
        expl = 100 * np.array([c.get("explored_mean", math.nan) for c in cs], dtype=float)
        if key[0] == "ESL" and np.isfinite(kept).any():
            tx.plot(d, kept, color=color, marker="o", linewidth=1.6, label=f"{key[1]}: initial connections kept")
            tx.plot(d, expl, color=color, marker="^", linestyle="--", linewidth=1.3,
                    label=f"{key[1]}: positions explored")
    for j, key in enumerate(k for k in series if k[0] == "dense"):
        for c in series[key]:
            mu, sd = 100 * c["test_accuracy_mean"], 100 * (np.nan_to_num(c["test_accuracy_std"]))
            ax.axhline(mu, color="black", linestyle=("--", ":", "-.")[j % 3], linewidth=1.2,
                       label=f"{key[1]} {mu:.2f}%" + (f" ± {sd:.2f}" if sd else ""))
            if sd:
                ax.axhspan(mu - sd, mu + sd, color="0.85", zorder=0)
    for a in (ax, tx):
        a.set_xscale("log")
        if dens_all:
            ticks = sorted(set(float(x) for x in dens_all))
            a.set_xlim(ticks[0] / 1.4, ticks[-1] * 1.4)
            a.xaxis.set_major_locator(FixedLocator(ticks))
            a.xaxis.set_minor_formatter(NullFormatter())
        a.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.3g}%"))
        a.set_xlabel("connection density (log scale)")
        a.grid(alpha=0.3, which="both")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title + (f"\n(mean ± std over {nmax} seeds)" if nmax > 1 else ""), fontsize=10)
    tx.set_ylabel("% (ESL runs, mean over seeds)")
    tx.set_title("Turnover at the end of training", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    if tx.get_legend_handles_labels()[0]:
        tx.legend(fontsize=7, loc="best")
    else:
        tx.text(0.5, 0.5, "no rewiring events", ha="center", va="center", transform=tx.transAxes)
    return fig


# --------------------------------------------------------------------------
# 11. structure animation
# --------------------------------------------------------------------------
def structure_animation(snapshots, shape, path, fps=4, max_size=120, dpi=80, layer_name=None):
    """GIF of a layer's mask across rewiring events.

    Parameters
    ----------
    snapshots : list of (iteration, indptr, indices)
        The structure at successive rewiring events (first = initial).
    shape : (n_out, n_in)
    path : str or Path
        Output .gif (parent folders created).
    fps : float
        Frames per second.
    max_size : int
        Largest image side; bigger layers are downsampled (three panels:
        present in both / pruned / grown per block), keeping frames small.
    dpi : int
    layer_name : str, optional
        Shown in the frame titles.

    Returns
    -------
    str : ``path``. The GIF has one frame per snapshot; frame 0 shows the
    initial structure (all "present in both"), frame k the connections
    present in both snapshot k-1 and k, pruned and grown since snapshot k-1.
    Masks are compared, so a position pruned and regrown between two
    snapshots counts as present in both.
    """
    from matplotlib.animation import FuncAnimation, PillowWriter

    snaps = list(snapshots)
    if not snaps:
        raise ValueError("snapshots: expected at least one (iteration, indptr, indices)")
    datas = []
    for k, (itn, indptr, indices) in enumerate(snaps):
        prev = snaps[k - 1] if k else snaps[0]
        datas.append((itn, _diff_data((prev[1], prev[2]), (indptr, indices), shape, max_size)))
    vmax = None
    if datas[0][1]["mode"] == "blocks":
        vmax = {name: max(max(float(d["blocks"][name].max()) for _, d in datas), 1.0)
                for name in _DIFF_KINDS}
        w, h = _blocks_figsize(datas[0][1]["shape"], 10.0)
    else:
        w, h = _matrix_figsize(datas[0][1]["shape"], 1, extra=1.8)
    fig = _figure(w, h)
    who = f"{layer_name}: " if layer_name else ""

    def draw(k):
        fig.clear()
        itn, d = datas[k]
        what = "initial structure" if k == 0 else f"changes since iteration {datas[k - 1][0]}"
        _draw_diff(fig, d, f"{who}iteration {itn} — {what} (frame {k + 1}/{len(datas)})", vmax=vmax)
        return []

    anim = FuncAnimation(fig, draw, frames=len(datas), init_func=lambda: draw(0), blit=False, repeat=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    anim.save(str(path), writer=PillowWriter(fps=fps), dpi=dpi)
    return str(path)


def kernel_grid(indptr, indices, kernel_shape, data=None):
    """Re-lay a conv kernel matrix (c_out, c_in*kh*kw) as a grid of kernels, for the structure plots.

    Connection ``(co, (ci*kh + ky)*kw + kx)`` goes to pixel ``(co*kh + ky, ci*kw + kx)``:
    every ``kh x kw`` tile is one kernel (row of tiles = output channel,
    column = input channel), so the connectivity figures and the rewiring GIF
    show kernels. Returns ``(indptr, indices, shape)`` (+ ``data`` reordered
    when given) of a canonical CSR of shape ``(c_out*kh, c_in*kw)``.
    """
    c_out, c_in, kh, kw = (int(v) for v in kernel_shape)
    indptr, indices = np.asarray(indptr), np.asarray(indices)
    rows = np.repeat(np.arange(c_out), np.diff(indptr))
    ci, r = np.divmod(indices, kh * kw)
    ky, kx = np.divmod(r, kw)
    new_r, new_c = rows * kh + ky, ci * kw + kx
    order = np.lexsort((new_c, new_r))
    shape = (c_out * kh, c_in * kw)
    new_ptr = np.zeros(shape[0] + 1, np.int64)
    np.cumsum(np.bincount(new_r, minlength=shape[0]), out=new_ptr[1:])
    out = (new_ptr.astype(np.int32), new_c[order].astype(np.int32), shape)
    if data is not None:
        return out + (np.asarray(data)[order],)
    return out
