"""The figures of the Learn and Results pages, drawn by code while the site builds.

Each function returns PNG bytes; :data:`FIGURES` maps the site path a page
links to (``figures/<name>.png``) to the function that draws it. They use the
public API (``snn_core.LIF``, ``snn_core.viz``) so a figure is what the engine
does, not a drawing of what it should do. The rewiring animation comes from
tutorial 06 (``tutorials/figures/06_structure.gif``), which the build runs anyway.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _png(fig, dpi=110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def lif_traces() -> bytes:
    """Three LIF neurons (hard reset, tau_m = 2 dt) driven by constant currents of growing size."""
    from snn_core import LIF, viz

    T, currents = 24, np.array([0.8, 1.3, 2.5], np.float32)
    layer = LIF(3)
    x = np.broadcast_to(currents, (T, 1, 3)).astype(np.float32)
    layer.forward(x.copy(), record=True)
    rec = layer.recorded
    fig = viz.membrane_traces(rec["u"], rec["spikes"], v_th=1.0, neurons=(0, 1, 2), v=rec["v"])
    fig.suptitle("LIF membranes for constant input currents I = 0.8, 1.3, 2.5 (hard reset, alpha = 0.5)")
    return _png(fig)


def surrogate_shapes() -> bytes:
    """Every surrogate derivative next to the Heaviside step it stands in for."""
    from snn_core import viz

    return _png(viz.surrogate_curves())


def bptt_graph(steps: int = 4) -> bytes:
    """The unrolled computation graph of one LIF neuron over ``steps`` steps.

    Nodes are the quantities the kernels store (``I[t]``, ``u[t]``, ``s[t]``,
    ``v[t]``); black arrows are the forward pass, red dashed arrows the
    gradients BPTT sends back (``gu[t]`` receives from ``s[t]`` and, through
    ``v[t]``, from ``u[t+1]``).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch

    fig = Figure(figsize=(2.6 * steps + 1.2, 4.6), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xlim(-0.9, 2.6 * steps - 0.4)
    ax.set_ylim(-0.7, 3.8)
    ax.axis("off")
    rows = {"I": 0.0, "u": 1.2, "s": 2.4, "v": 1.2}
    pos = {}
    for t in range(steps):
        x0 = 2.6 * t
        pos[("I", t)], pos[("u", t)] = (x0, rows["I"]), (x0, rows["u"])
        pos[("s", t)], pos[("v", t)] = (x0, rows["s"]), (x0 + 1.2, rows["v"])
    pos[("L", 0)] = (1.3 * steps - 0.6, 3.5)
    colors = {"I": "#CCE5FF", "u": "#FFE8CC", "s": "#D6F5D6", "v": "#FFE8CC", "L": "#EEEEEE"}
    for (kind, t), (x, y) in pos.items():
        label = "L" if kind == "L" else f"{kind}[{t}]"
        ax.text(x, y, label, ha="center", va="center", fontsize=11, zorder=3,
                bbox=dict(boxstyle="round,pad=0.35", fc=colors[kind], ec="0.3"))

    def arrow(a, b, backward=False, rad=0.0, label=None, dx=0.0, dy=0.12):
        (x1, y1), (x2, y2) = pos[a], pos[b]
        if backward:
            (x1, y1), (x2, y2) = (x2, y2), (x1, y1)
        style = dict(color="#C0392B", linestyle="--", lw=1.3) if backward else dict(color="0.15", lw=1.4)
        ax.add_patch(FancyArrowPatch((x1, y1), (x2, y2), arrowstyle="-|>", mutation_scale=13, shrinkA=17,
                                     shrinkB=17, connectionstyle=f"arc3,rad={rad}", zorder=2, **style))
        if label:
            ax.text((x1 + x2) / 2 + dx, (y1 + y2) / 2 + dy, label, fontsize=10, ha="center", va="center",
                    color=style["color"])

    for t in range(steps):
        first = t == 0
        arrow(("I", t), ("u", t), label=r"$c$" if first else None, dx=0.18, dy=0.0)
        arrow(("u", t), ("s", t), label=r"$H(u-v_{th})$" if first else None, dx=0.62, dy=0.1)
        arrow(("u", t), ("v", t), rad=0.3, label="reset" if first else None, dx=0.0, dy=-0.42)
        arrow(("s", t), ("v", t), rad=-0.15)
        if t + 1 < steps:
            arrow(("v", t), ("u", t + 1), label=r"$\alpha$" if first else None, dx=0.0, dy=-0.2)
        arrow(("s", t), ("L", 0), rad=0.0)
        # backward: gradient flows against the arrows; the surrogate sigma' replaces dH/du
        arrow(("u", t), ("s", t), backward=True, rad=0.35, label=r"$\sigma'$" if first else None, dx=-0.5,
              dy=0.0)
        if t + 1 < steps:
            arrow(("v", t), ("u", t + 1), backward=True, rad=0.35,
                  label=r"$\alpha\,g_u[t{+}1]$" if first else None, dx=0.0, dy=0.42)
    ax.plot([], [], color="0.15", lw=1.4, label="forward")
    ax.plot([], [], color="#C0392B", ls="--", lw=1.3, label="backward (BPTT)")
    ax.legend(loc="lower right", frameon=False)
    ax.set_title(f"One LIF neuron unrolled over T = {steps} steps: forward and backward", fontsize=11)
    return _png(fig)


def measured_sweep(page: Path = ROOT / "docs" / "results.md") -> list[dict]:
    """The rows of the measured density-sweep table on the Results page (one source for table and figure).

    The table is the first one after the ``<!-- measured: sweep -->`` marker;
    columns ``run | density | rewiring | best val acc | test acc | ...``.
    """
    text = page.read_text()
    start = text.index("<!-- measured: sweep -->")
    rows = []
    for line in text[start:].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and re.fullmatch(r"[0-9.]+", cells[1] or "x") and re.fullmatch(r"[0-9.]+", cells[4]):
            rows.append({"run": cells[0], "density": float(cells[1]), "rewiring": cells[2] == "yes",
                         "sparse": cells[0] != "dense", "test_accuracy": float(cells[4])})
        elif rows and not line.strip():
            break
    if not rows:
        raise ValueError(f"{page}: no rows in the table after <!-- measured: sweep -->")
    return rows


def accuracy_vs_density() -> bytes:
    """Test accuracy over density for ESL, static sparse and dense, from the Results table."""
    from snn_core import viz

    return _png(viz.accuracy_vs_density(measured_sweep(), title="Embedded MNIST sample: test accuracy vs. density"))


#: site path -> drawing function
FIGURES = {
    "figures/lif_traces.png": lif_traces,
    "figures/surrogate_shapes.png": surrogate_shapes,
    "figures/bptt_graph.png": bptt_graph,
    "figures/accuracy_vs_density.png": accuracy_vs_density,
}
