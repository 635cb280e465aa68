"""Figures: right type and layout on tiny inputs, valid PNG/GIF files, bounded memory on big layers."""
import subprocess
import sys
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.sparse as sp
from matplotlib.figure import Figure
from PIL import Image

from snn_core import viz
from snn_core.surrogate import SURROGATES, surrogate_numpy


def check_png(fig, path):
    """Save ``fig`` and check the file is a valid, non-empty PNG."""
    out = viz.save(fig, path, dpi=50)
    with Image.open(out) as im:
        im.verify()
    with Image.open(out) as im:
        assert im.format == "PNG"
        w, h = im.size
        assert w > 50 and h > 50
        assert len(np.unique(np.asarray(im.convert("L")))) > 1  # not a blank image


def csr(mask):
    m = sp.csr_matrix(np.asarray(mask, dtype=np.float32))
    return m.indptr, m.indices


def random_csr(n_out, n_in, nnz, seed):
    """Random CSR structure with about ``nnz`` connections, built without a dense mask."""
    rng = np.random.default_rng(seed)
    keys = np.unique(rng.integers(0, n_out * n_in, size=nnz, dtype=np.int64))
    rows, cols = keys // n_in, (keys % n_in).astype(np.int32)
    indptr = np.zeros(n_out + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n_out), out=indptr[1:])
    return indptr, cols


@pytest.fixture
def spikes(rng):
    return (rng.random((6, 2, 5)) < 0.4).astype(np.float32)


def test_spike_raster(spikes, tmp_path):
    fig = viz.spike_raster(spikes, sample=1)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    raster = fig.axes[0].lines[0]
    assert len(raster.get_xdata()) == int(spikes[:, 1].sum())
    bars = fig.axes[1].patches
    assert len(bars) == 6
    np.testing.assert_array_equal([b.get_height() for b in bars], spikes[:, 1].sum(axis=1))
    check_png(fig, tmp_path / "sub" / "raster.png")
    # (T, n) input and max_neurons
    fig = viz.spike_raster(spikes[:, 0], max_neurons=3, title="custom")
    assert fig.axes[0].get_title() == "custom"
    assert len(fig.axes[0].lines[0].get_xdata()) == int(spikes[:, 0, :3].sum())


def test_membrane_traces(tmp_path):
    u = np.array([0.5, 1.2, 0.3, 1.0, 0.9], np.float32)[:, None, None] * np.ones((1, 1, 4), np.float32)
    s = (u >= 1.0).astype(np.float32)
    fig = viz.membrane_traces(u, s, neurons=(0, 2))
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    star = [ln for ln in ax.lines if ln.get_marker() == "*"]
    assert len(star) == 1 and list(star[0].get_xdata()) == [1, 3]  # spikes at steps 1 and 3
    assert any(np.allclose(ln.get_ydata(), 1.0) for ln in ax.lines)  # threshold line
    assert len(ax.collections) == 1  # the two reset segments
    assert fig.legends  # one legend for the whole figure
    check_png(fig, tmp_path / "membrane.png")
    assert any(ln.get_linestyle() == ":" for ln in ax.lines)  # v_reset line without v=
    assert any("v_reset" in t.get_text() for t in fig.legends[0].get_texts())
    # spikes inferred; neurons=None picks the most active ones
    fig = viz.membrane_traces(u[:, 0], neurons=None)
    assert len(fig.axes) == 3


def test_membrane_traces_with_v_has_no_reset_level(tmp_path):
    # soft reset: after a spike the membrane keeps u - v_th, which is not a fixed "reset level"
    u = np.array([0.5, 1.2, 0.7, 1.3, 0.9], np.float32)[:, None, None] * np.ones((1, 1, 2), np.float32)
    s = (u >= 1.0).astype(np.float32)
    v = u - s  # soft reset
    fig = viz.membrane_traces(u, s, v=v, v_reset=-0.5, neurons=(0, 1))
    for ax in fig.axes:
        assert not any(ln.get_linestyle() == ":" for ln in ax.lines)  # no dotted v_reset line
        assert not any(np.allclose(ln.get_ydata(), -0.5) for ln in ax.lines)
        seg = ax.collections[0].get_segments()  # drops go to v, not to v_reset
        np.testing.assert_allclose(sorted(min(p[:, 1]) for p in seg), [0.2, 0.3], rtol=1e-6)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert not any("reset level" in lab or "v_reset" in lab for lab in labels)
    check_png(fig, tmp_path / "membrane_soft.png")


def test_surrogate_curves(tmp_path):
    fig = viz.surrogate_curves()
    names = list(SURROGATES)
    assert len(fig.axes) == len(names) + 1
    x = np.linspace(-2, 2, 401)
    for ax, name in zip(fig.axes, names):
        assert name in ax.get_title()
        assert len(ax.lines) == 2  # H(x) and sigma'(x)
        np.testing.assert_allclose(ax.lines[1].get_ydata(), surrogate_numpy(name, x))
    assert len(fig.axes[-1].lines) == len(names) + 1
    check_png(fig, tmp_path / "surr.png")
    fig = viz.surrogate_curves(["triangle"], x=np.linspace(-1, 1, 11), params={"triangle": 0.5})
    assert len(fig.axes) == 2
    assert "0.5" in fig.axes[0].get_title()


def test_input_encodings(rng, tmp_path):
    img = rng.random((6, 6)).astype(np.float32)
    rate = (rng.random((5, 36)) < img.ravel()).astype(np.float32)
    direct = np.repeat(img.ravel()[None, None], 5, axis=0)  # (T, 1, n) real-valued
    fig = viz.input_encodings(img, {"rate": rate, "direct": direct})
    assert len(fig.axes) == 1 + 3 * 2  # image + (raster, count image, colour bar) per encoding
    counts = fig.axes[2].images[0].get_array()
    np.testing.assert_array_equal(counts, rate.sum(axis=0).reshape(6, 6))
    check_png(fig, tmp_path / "enc.png")
    with pytest.raises(ValueError):
        viz.input_encodings(img.ravel()[:35], {"x": rate[:, :35]})


def test_connectivity_matrix_small(tmp_path):
    mask = np.array([[1, 0, 1], [1, 1, 0]])
    indptr, indices = csr(mask)
    fig = viz.connectivity_matrix(indptr, indices, (2, 3))
    assert len(fig.axes) == 1
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), mask)
    assert "4 connections" in fig.axes[0].get_title()
    check_png(fig, tmp_path / "mask.png")
    data = np.array([0.5, -1.0, 0.25, 2.0])
    fig = viz.connectivity_matrix(indptr, indices, (2, 3), data=data)
    assert len(fig.axes) == 2  # matrix + colour bar
    img = fig.axes[0].images[0].get_array()
    assert img[0, 1] is np.ma.masked  # no connection
    assert img[0, 0] == 0.5 and img[1, 1] == 2.0
    check_png(fig, tmp_path / "weights.png")


def test_connectivity_matrix_downsampled_block_density(tmp_path):
    # 40 x 60 layer drawn at max_size 10 -> blocks of 4 x 6; first block full, everything else empty
    mask = np.zeros((40, 60))
    mask[:4, :6] = 1
    mask[39, 59] = 1
    indptr, indices = csr(mask)
    fig = viz.connectivity_matrix(indptr, indices, (40, 60), max_size=10)
    img = fig.axes[0].images[0].get_array()
    assert img.shape == (10, 10)
    assert img[0, 0] == 1.0 and img[-1, -1] == pytest.approx(1 / 24) and img.sum() == pytest.approx(1 + 1 / 24)
    assert "4×6" in fig.axes[0].get_title()
    check_png(fig, tmp_path / "blocks.png")


def test_big_layer_is_fast_and_memory_bounded(tmp_path):
    n = 10_000
    indptr, indices = random_csr(n, n, 100_000, seed=0)  # 0.1% density
    data = np.random.default_rng(1).normal(size=len(indices))
    tracemalloc.start()
    try:
        fig = viz.connectivity_matrix(indptr, indices, (n, n), max_size=200)
        fig2 = viz.connectivity_matrix(indptr, indices, (n, n), data=data, max_size=200)
        fig3 = viz.connectivity_diff((indptr, indices), random_csr(n, n, 100_000, seed=2), (n, n), max_size=200)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # a dense 10k x 10k mask would be 100 MB (bool) / 800 MB (float64); O(nnz + max_size^2) stays tiny
    assert peak < 30e6, peak
    for f in (fig, fig2):
        assert max(f.axes[0].images[0].get_array().shape) <= 200
    assert len(fig3.axes) == 6  # kept / pruned / grown panels + their colour bars
    check_png(fig3, tmp_path / "big_diff.png")


def test_connectivity_diff_small(tmp_path):
    before = csr([[1, 1, 0], [0, 1, 0]])
    after = csr([[1, 0, 1], [0, 1, 1]])
    # present in both: (0,0), (1,1); pruned: (0,1); grown: (0,2), (1,2)
    fig = viz.connectivity_diff(before, after, (2, 3))
    assert len(fig.axes) == 1
    code = fig.axes[0].images[0].get_array()
    np.testing.assert_array_equal(code, [[1, 2, 3], [0, 1, 3]])  # 0 none, 1 in both, 2 pruned, 3 grown
    assert "present in both 2 · pruned 1 · grown 2" in fig.axes[0].get_title()
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[:3] == ["present in both (2)", "pruned (1)", "grown (2)"]
    assert not any("kept" in lab for lab in labels)
    check_png(fig, tmp_path / "diff.png")
    # scipy matrices are accepted as well
    fig = viz.connectivity_diff(sp.csr_matrix(np.eye(2)), sp.csr_matrix(np.eye(2)[::-1]), (2, 2))
    assert "present in both 0 · pruned 2 · grown 2" in fig.axes[0].get_title()


def test_connectivity_diff_pruned_and_regrown_counts_as_present_in_both(tmp_path):
    # masks are compared: (0,1) pruned at one event and regrown at a later one is in both snapshots
    before = csr([[1, 1, 0], [0, 1, 0]])
    after = csr([[1, 1, 0], [0, 0, 1]])  # only (1,1) -> (1,2) changed between the snapshots
    fig = viz.connectivity_diff(before, after, (2, 3))
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), [[1, 1, 0], [0, 2, 3]])
    assert "present in both 2 · pruned 1 · grown 1" in fig.axes[0].get_title()
    assert "pruned and regrown between the snapshots counts as present in both" in \
        " ".join(viz.connectivity_diff.__doc__.split())
    # downsampled: the three panels are titled by category
    n = 300
    fig = viz.connectivity_diff(random_csr(n, n, 2000, 0), random_csr(n, n, 2000, 1), (n, n), max_size=50)
    assert fig.axes[0].get_title().startswith("present in both: ")
    assert [t.get_text().split(" (")[0] for t in fig.legends[0].get_texts()] == \
        ["present in both", "pruned", "grown"]
    check_png(fig, tmp_path / "diff_blocks.png")


def history(n_events=4, layers=("fc1", "fc2")):
    h = {k: [] for k in ("iteration", "layer", "zeta", "n_pruned", "n_grown", "density", "initial_fraction",
                         "rewired_fraction")}
    for L, nnz in zip(layers, (1000, 20)):
        for e in range(n_events):
            z = 0.15 * (1 + np.cos(np.pi * e / n_events))
            h["iteration"].append(1000 * (e + 1))
            h["layer"].append(L)
            h["zeta"].append(z)
            h["n_pruned"].append(int(z * nnz))
            h["n_grown"].append(int(z * nnz))
            h["density"].append(0.1)
            h["initial_fraction"].append(0.7 ** (e + 1))
            h["rewired_fraction"].append(1 - 0.7 ** (e + 1))
    return {k: np.array(v) for k, v in h.items()}


def test_density_turnover(tmp_path):
    fig = viz.density_turnover(history())
    assert len(fig.axes) == 4
    dens = fig.axes[0]
    assert len(dens.lines) == 2  # one per layer
    np.testing.assert_allclose(dens.lines[0].get_ydata(), 10.0)  # drawn in %
    # pruned = grown at every event (density is preserved): one curve per layer
    assert len(fig.axes[1].lines) == 2
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert labels == ["fc1: rewired per event (pruned = grown)", "fc2: rewired per event (pruned = grown)"]
    # pruned != grown: pruned + grown per layer
    h = history()
    h["n_grown"] = h["n_grown"] + 1
    assert len(viz.density_turnover(h).axes[1].lines) == 4
    assert len(fig.axes[2].lines) == 1  # same zeta for every layer -> drawn once
    check_png(fig, tmp_path / "hist.png")
    # tolerant: only some keys, no layer / iteration column
    fig = viz.density_turnover({"density": np.array([0.1, 0.1, 0.1])})
    assert len(fig.axes) == 1
    assert fig.axes[0].get_xlabel() == "rewiring event"
    h = history()
    fig = viz.density_turnover({k: h[k] for k in ("iteration", "layer", "n_pruned", "rewired_fraction")})
    assert len(fig.axes) == 2
    fig = viz.density_turnover({})
    assert isinstance(fig, Figure)


def real_history():
    """``RewiringHistory.as_arrays()`` of a few random, density-preserving events on two layers."""
    from snn_core.structure.history import RewiringHistory

    rng = np.random.default_rng(0)
    hist = RewiringHistory()
    masks = {"fc1": rng.random((20, 30)) < 0.1, "fc2": rng.random((5, 20)) < 0.3}
    for name, m in masks.items():
        hist.register(name, m.shape, *csr(m))
    for e in range(1, 6):
        for name, m in masks.items():
            flat = m.ravel()
            on, off = np.flatnonzero(flat), np.flatnonzero(~flat)
            k = max(1, len(on) // (2 * e))
            pruned, grown = np.sort(rng.choice(on, k, replace=False)), np.sort(rng.choice(off, k, replace=False))
            flat[pruned], flat[grown] = False, True
            hist.record(100 * e, name, k / len(on), pruned, grown, *csr(m))
    return hist.as_arrays()


def test_density_turnover_library_columns(tmp_path):
    h = real_history()
    assert {"frac_initial_kept", "frac_grown", "frac_explored", "n_ever_grown", "nnz"} <= set(h)
    assert not {"initial_fraction", "rewired_fraction"} & set(h)
    fig = viz.density_turnover(h)
    assert len(fig.axes) == 5  # density, turnover, zeta, initial vs. grown, explored
    frac, explored = fig.axes[3], fig.axes[4]
    assert len(frac.lines) == 4  # initial never pruned + grown, per layer
    fc1 = h["layer"] == "fc1"
    np.testing.assert_allclose(frac.lines[0].get_ydata(), 100 * h["frac_initial_kept"][fc1])
    np.testing.assert_allclose(frac.lines[2].get_ydata(), 100 * h["frac_grown"][fc1])
    labels = [t.get_text() for t in frac.get_legend().get_texts()]
    assert "fc1: initial, never pruned (% of initial)" in labels and "fc1: grown at some event (% of current)" in labels
    np.testing.assert_allclose(explored.lines[0].get_ydata(), 100 * h["frac_explored"][fc1])
    assert explored.get_title() == "positions explored"
    assert len(fig.axes[1].lines) == 2  # pruned = grown: one curve per layer
    for ax in fig.axes:  # integer ticks on the iteration axes
        assert ax.get_xlabel() == "training iteration"
        ticks = ax.get_xticks()
        np.testing.assert_array_equal(ticks, np.round(ticks))
    check_png(fig, tmp_path / "hist_library.png")
    # the old names are aliases of the new ones: same curves
    old = {k: v for k, v in h.items() if k not in ("frac_initial_kept", "frac_grown", "frac_explored")}
    old["initial_fraction"], old["rewired_fraction"] = h["frac_initial_kept"], h["frac_grown"]
    fig2 = viz.density_turnover(old)
    assert len(fig2.axes) == 4
    for a, b in zip(fig2.axes[3].lines, frac.lines):
        np.testing.assert_allclose(a.get_ydata(), b.get_ydata())
    # only a few events: event axis still gets integer ticks
    fig = viz.density_turnover({"n_pruned": np.array([3, 2]), "n_grown": np.array([3, 2])})
    ticks = fig.axes[0].get_xticks()
    np.testing.assert_array_equal(ticks, np.round(ticks))
    assert fig.axes[0].get_title() == "turnover: connections rewired per event"


def test_weight_histograms(rng, tmp_path):
    snaps = [(f"epoch {e}", rng.normal(0, 0.1 * (e + 1), 200)) for e in range(3)]
    fig = viz.weight_histograms(snaps)
    assert len(fig.axes) == 1
    assert len(fig.axes[0].patches) == 3  # one step outline per snapshot
    assert len(fig.axes[0].get_legend().get_texts()) == 3
    check_png(fig, tmp_path / "w.png")
    assert fig.axes[0].get_title() == "Weight distributions"  # no claim about *when* the weights were taken
    fig = viz.weight_histograms(snaps, mode="multiples", log=True, title="Final weights")
    assert len(fig.axes) == 3
    assert fig._suptitle.get_text() == "Final weights"
    with pytest.raises(ValueError):
        viz.weight_histograms(snaps, mode="bogus")


def test_training_curves(tmp_path):
    m = {"epoch": [1, 2, 3], "train_loss": [2.0, 1.0, 0.5], "val_loss": [2.1, 1.2, 0.7],
         "train_accuracy": [0.5, 0.8, 0.9], "val_accuracy": [0.45, 0.85, 0.8],
         "test_accuracy": [None, None, 0.79], "lr": [0.01, 0.005, 0.0025]}
    fig = viz.training_curves(m)
    assert len(fig.axes) == 3
    acc = fig.axes[1]
    assert acc.get_ylabel() == "accuracy (%)"
    np.testing.assert_allclose(acc.lines[0].get_ydata(), [50, 80, 90])
    best = [t.get_text() for t in acc.get_legend().get_texts() if t.get_text().startswith("best val")]
    assert best and "85.00% (epoch 2)" in best[0]
    assert fig.axes[2].get_yscale() == "log"
    check_png(fig, tmp_path / "curves.png")
    fig = viz.training_curves({"train_loss": [3, 2, 1]})
    assert len(fig.axes) == 1 and fig.axes[0].get_xlabel() == "epoch"


def test_accuracy_vs_density(tmp_path):
    rows = [dict(density=d, rewiring=r, sparse=True, test_accuracy=0.9 + 0.05 * d + 0.01 * r + 0.001 * s)
            for d in (0.01, 0.1, 0.5) for r in (True, False) for s in range(2)]
    rows += [dict(density=1.0, rewiring=False, sparse=False, test_accuracy=0.98)]
    fig = viz.accuracy_vs_density(rows)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(lab.startswith("ESL") for lab in labels) and any(lab.startswith("static") for lab in labels)
    assert any("dense baseline 98.00%" in lab for lab in labels)
    dense_line = [ln for ln in ax.lines if ln.get_linestyle() == "--"][0]
    np.testing.assert_allclose(dense_line.get_ydata(), 98.0)
    # a tick at every plotted density and at 100% (the dense reference), labelled in %
    fig.canvas.draw()
    np.testing.assert_allclose(ax.get_xticks(), [0.01, 0.1, 0.5, 1.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1%", "10%", "50%", "100%"]
    assert not any(t.get_text() for t in ax.get_xticklabels(minor=True))
    check_png(fig, tmp_path / "acc.png")


def test_structure_animation(rng, tmp_path):
    shape = (6, 8)
    snaps = []
    for it in range(4):
        m = (rng.random(shape) < 0.3).astype(float)
        snaps.append((it * 1000,) + csr(m))
    path = viz.structure_animation(snaps, shape, tmp_path / "gif" / "anim.gif", fps=5)
    with Image.open(path) as im:
        assert im.format == "GIF"
        assert im.n_frames == 4
        assert max(im.size) <= 800
    # big layer: downsampled frames stay small
    n = 3000
    big = [(0,) + random_csr(n, n, 9000, 0), (1000,) + random_csr(n, n, 9000, 1)]
    path = viz.structure_animation(big, (n, n), tmp_path / "big.gif", max_size=50, dpi=50)
    with Image.open(path) as im:
        assert im.n_frames == 2
        assert max(im.size) <= 600


def test_figures_in_threads(spikes):
    with ThreadPoolExecutor(2) as ex:
        figs = list(ex.map(lambda s: viz.spike_raster(spikes, sample=s), [0, 1]))
    for f in figs:
        f.canvas.draw()
        assert isinstance(f, Figure)


def test_no_pyplot_import():
    code = "import sys, snn_core.viz; assert 'matplotlib.pyplot' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sweep_summary(tmp_path):
    from snn_core.sweep import aggregate

    def row(d, r, s, acc, sparse=True):
        from snn_core.config import TrainConfig

        cfg = TrainConfig(density=d if sparse else 1.0, rewiring=r, seed=s, sparse=sparse).to_dict()
        kept = 0.6 + 0.1 * s if r else float("nan")
        return {"run": f"{d}{r}{s}", "test_accuracy": acc, "best_val_accuracy": acc, "density": d,
                "train_seconds": 1.0, "initial_kept": kept, "explored": kept / 4, "config": cfg}

    rows = [row(d, r, s, 0.9 + 0.05 * d + 0.01 * r + 0.01 * s) for d in (0.01, 0.1) for r in (True, False)
            for s in range(3)] + [row(1.0, False, s, 0.97 + 0.01 * s, sparse=False) for s in range(3)]
    fig = viz.sweep_summary(aggregate(rows, ["density", "rewiring", "seed"]))
    ax, tx = fig.axes
    assert ax.get_xscale() == "log" and tx.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(labels) == ["ESL", "dense 98.00% ± 1.00", "static"]
    # error bars: mean ± sample std over the 3 seeds (0.01 apart: std 1 point)
    esl = ax.containers[0]
    np.testing.assert_allclose(esl.lines[0].get_ydata(), [100 * (0.9005 + 0.01 + 0.01), 100 * (0.905 + 0.02)])
    segs = esl.lines[2][0].get_segments()
    np.testing.assert_allclose([s[1][1] - s[0][1] for s in segs], [2.0, 2.0])
    # turnover of the ESL runs only: initial kept 70% (mean of 60, 70, 80), explored 17.5%
    np.testing.assert_allclose(tx.lines[0].get_ydata(), [70.0, 70.0])
    np.testing.assert_allclose(tx.lines[1].get_ydata(), [17.5, 17.5])
    check_png(fig, tmp_path / "sweep.png")
