"""``snn-esl plot RUN_DIR``: every figure that applies to a run directory.

A run directory holds what ``snn-esl train`` wrote (``summary.json``,
``best.h5``, ``last.h5``) or what ``snn-esl sweep`` wrote (``sweep.json``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import viz

def plot_run(run_dir, out_dir=None, sample_index=0):
    """Write PNGs (and a GIF) for ``run_dir``; returns the list of paths written."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run directory {run}: not found")
    out = Path(out_dir) if out_dir else run / "figures"
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, name):
        written.append(viz.save(fig, out / name))

    if (run / "sweep.json").is_file():
        from .sweep import load_results

        save(viz.sweep_summary(load_results(run)["configurations"]), "accuracy_vs_density.png")
    ckpt = run / "last.h5"
    summary = run / "summary.json"
    if summary.is_file():
        save(viz.training_curves(json.loads(summary.read_text())["metrics"]), "training_curves.png")
    if not ckpt.is_file():
        if not written:
            raise FileNotFoundError(f"run directory {run}: no summary.json, last.h5 or sweep.json to plot")
        return written

    from .training import restore_trainer

    trainer = restore_trainer(ckpt, quiet=True, device="cpu")
    if not summary.is_file() and trainer.metrics["epoch"]:  # none for an imported network (snn-esl import)
        save(viz.training_curves(trainer.metrics), "training_curves.png")
    history = trainer.rewirer.history
    if len(history):
        save(viz.density_turnover(history.as_arrays()), "density_turnover.png")
    for layer in trainer.network.sparse_layers():
        w = layer.weight
        ks = getattr(layer, "kernel_shape", None)  # convolutions: show each kernel as a kh x kw tile

        def lay(indptr, indices, data=None):
            return viz.kernel_grid(indptr, indices, ks, data) if ks else (indptr, indices, w.shape) + (
                () if data is None else (data,))

        indptr, indices, shape, data = lay(w.indptr, w.indices, w.data)
        save(viz.connectivity_matrix(indptr, indices, shape, data=data, title=f"{layer.name}: final weights"
                                     + (" (one tile per kernel)" if ks else "")), f"connectivity_{layer.name}.png")
        snaps = history.snapshots(layer.name) if layer.name in history.layer_names else []
        if len(snaps) >= 2:
            snaps = [(it,) + lay(p, i)[:2] for it, p, i in snaps]
            (_, p0, i0), (_, p1, i1) = snaps[0], snaps[-1]
            save(viz.connectivity_diff((p0, i0), (p1, i1), shape,
                                       title=f"{layer.name}: initial vs last snapshot"), f"rewiring_diff_{layer.name}.png")
            written.append(viz.structure_animation(snaps, shape, out / f"structure_{layer.name}.gif",
                                                   layer_name=layer.name))
    save(viz.weight_histograms([(layer.name, layer.weight_param.value) for layer in trainer.network.modules()
                                if hasattr(layer, "weight_param")], mode="multiples",
                                title="Final weights of each layer (end of training)"), "weight_histograms.png")
    # one test digit through the trained network: what the neurons did
    x = trainer._encode(trainer.x_test[sample_index:sample_index + 1], (3, 0))
    trainer.network.forward(x, record=True)
    for name, rec in trainer.network.recorded.items():
        if "spikes" in rec:
            save(viz.spike_raster(rec["spikes"], title=f"{name}: spikes for test sample {sample_index}"),
                 f"raster_{name}.png")
            layer = next(l for l in trainer.network.modules() if l.name == name)
            save(viz.membrane_traces(rec["u"], rec["spikes"], v_th=layer.params.v_th, v_reset=layer.params.v_reset,
                                     neurons=_varied_neurons(rec["spikes"][:, 0]), v=rec["v"]),
                 f"membrane_{name}.png")
    return written


def _varied_neurons(spikes, k=3):
    """``k`` neurons whose spike counts spread over the range (not k saturated ones).

    spikes: (T, n) of one sample. Prefers neurons that fire sometimes but not
    at every step, whose traces show both integration and reset.
    """
    counts = spikes.sum(axis=0)
    T = spikes.shape[0]
    partial = np.flatnonzero((counts > 0) & (counts < T))
    pool = partial if len(partial) >= k else np.arange(len(counts))
    order = pool[np.argsort(counts[pool], kind="stable")]
    picks = order[np.linspace(0, len(order) - 1, k).round().astype(int)]
    return tuple(int(i) for i in dict.fromkeys(picks.tolist()))
