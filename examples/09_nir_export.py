# %% [markdown]
# # 09 — From training to neuromorphic hardware: NIR export
#
# The point of a sparse SNN is to run it where its sparsity pays: on a
# neuromorphic chip that spends energy per synaptic event. The field's
# interchange format for getting a trained network there is
# [NIR](https://neuroir.org) (the `nir` package, `pip install "snn_core[nir]"`),
# read by snnTorch, Norse, Rockpool, Sinabs, Lava, SpiNNaker2, Xylo, ...
#
# We train the main job (784-800-10 at 10% density; shortened: 2 epochs,
# `SNN_CORE_FAST=1`: 1 epoch on 500 images), export it with
# `snn_core.nir.write_nir` (the CLI equivalent is
# `snn-esl export runs/esl --nir model.nir --dt 1e-3`), and look at what the
# file holds: nodes, edges, shapes, sparsity, neuron parameters, and the
# discretisation a hardware target must use to reproduce our numbers. Then we
# read the file back and check that the network is bit-identical. The full
# mapping and its limits are on the docs page *NIR* (`docs/nir.md`).

# %%
import tempfile
from pathlib import Path

import numpy as np

from _tutorial import FAST, FIG_DIR  # finds snn_core; the figure folder
from matplotlib.figure import Figure

import nir
from snn_core.config import TrainConfig
from snn_core.data import bernoulli_encode, load_embedded, to_float
from snn_core.nir import describe, format_graph, from_nir, write_nir
from snn_core.training import Trainer

EPOCHS = 1 if FAST else 2
MAX_TRAIN = 500 if FAST else None
DT = 1e-3          # one time step lasts 1 ms on the target: time constants are written in seconds
data = load_embedded()

# %% [markdown]
# ## Step 1 — train the main job

# %%
cfg = TrainConfig(epochs=EPOCHS, max_train=MAX_TRAIN, t_iter=25, quiet=True, seed=0,
                  out_dir=str(Path(tempfile.gettempdir()) / "snn_core_examples" / "09"))
trainer = Trainer(cfg, dataset=data)
summary = trainer.fit(checkpoint_dir=False)
net = trainer.network
print(f"test accuracy {summary['test_accuracy']:.4f}, density {summary['density']:.4f}")

# %% [markdown]
# ## Step 2 — export and look at the graph
#
# Each layer becomes one node: `SparseLinear` -> `Affine` (the dense weight
# matrix NIR expects, a zero wherever there is no connection, plus the
# bias), `LIF` -> `LIF`, the readout -> `LI` (a leaky integrator). `tau` is
# `tau_m` in seconds: `tau_m = 2` steps of 1 ms = 0.002 s.

# %%
work = Path(tempfile.mkdtemp(prefix="snn_core_09_"))
path = work / "esl_mnist.nir"
graph = write_nir(net, path, DT)
print(format_graph(graph))
n_bytes = path.stat().st_size
dense_bytes = sum(np.asarray(n.weight).nbytes for n in graph.nodes.values() if hasattr(n, "weight"))
print(f"\nfile {path.name}: {n_bytes / 1e6:.2f} MB (gzip-compressed HDF5); the dense float32 weight "
      f"matrices alone are {dense_bytes / 1e6:.2f} MB")

# %% [markdown]
# ## Step 3 — what a hardware target receives
#
# A toolchain (a chip's mapper) walks the edges from `input` to `output` and
# gets, per node, plain arrays. For the synapses it places only the nonzero
# entries (that is where the energy argument lives); for the neurons it
# needs `tau, r, v_leak, v_threshold, v_reset` and **a discretisation**: NIR is
# continuous-time, and our numbers come from one explicit Euler step per time
# step (the graph's metadata says so too):
#
#     u[t] = v[t-1] + dt/tau * ((v_leak - v[t-1]) + r * (W x[t] + b))
#     s[t] = u[t] >= v_threshold;   v[t] = v_reset where s[t] else u[t]
#
# so the per-step decay is `1 - dt/tau = 0.5`. A target that integrates
# exactly would use `exp(-dt/tau) = 0.607` instead and get different spikes.

# %%
rows = describe(graph)
for r in rows:
    if "nnz" in r:
        print(f"{r['name']}: {r['out'][0]} x {r['in'][0]} matrix, {r['nnz']} synapses to place "
              f"({r['density']:.1%} of {r['out'][0] * r['in'][0]})")
    elif "tau" in r:
        print(f"{r['name']}: {r['out'][0]} {r['type']} neurons, tau={r['tau']:g} s, per-step decay "
              f"1 - dt/tau = {1 - DT / r['tau']:.3f} (exact integration would give {np.exp(-DT / r['tau']):.3f})")
print("graph metadata:", {k: v for k, v in graph.metadata.items() if k.endswith("discretisation")})

# %% [markdown]
# ## Step 4 — read it back: bit-identical
#
# `nir.read` is the `nir` package's own reader; `from_nir` turns the graph
# into a snn_core network (zeros become absent connections; the snn_core
# metadata restores connections whose trained weight is exactly zero).

# %%
back = from_nir(nir.read(str(path)), DT)
x = bernoulli_encode(to_float(data.x_test[:20]), 8, seed=0)  # (T, batch, 784) spikes
same = np.array_equal(net.forward(x), back.forward(x))
same_structure = all(a.nnz == b.nnz and np.array_equal(a.weight.indices, b.weight.indices)
                     for a, b in zip(net.sparse_layers(), back.sparse_layers()))
assert same and same_structure
print("OK the network read back from the NIR file gives bit-identical outputs and the same connections")

# %% [markdown]
# ## Step 5 — a picture of what is shipped
#
# Left: per synaptic node, the synapses a chip must place vs the entries of
# the dense matrix in the file. Right: the `fc1` weight matrix as stored in
# the file (first 100 hidden neurons): most entries are the zeros of absent
# connections.

# %%
fig = Figure(figsize=(10, 3.8))
ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 2]})
syn = [r for r in rows if "nnz" in r]
names = [r["name"] for r in syn]
ax1.bar(names, [r["out"][0] * r["in"][0] for r in syn], color="0.85", label="dense matrix entries")
ax1.bar(names, [r["nnz"] for r in syn], color="C0", label="synapses (nonzero)")
ax1.set_yscale("log")
ax1.set_title("what a chip places")
ax1.legend(fontsize=8)
W = np.asarray(graph.nodes["fc1"].weight)[:100]
lim = np.abs(W).max() or 1.0
ax2.imshow(np.where(W == 0, np.nan, W), aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
ax2.set_facecolor("0.92")
ax2.set_xlabel("input pixel")
ax2.set_ylabel("hidden neuron")
ax2.set_title("fc1 in the NIR file (grey: no connection)")
fig.tight_layout()
fig.savefig(FIG_DIR / "09_nir_export.png", dpi=110)
print(f"wrote {FIG_DIR / '09_nir_export.png'}")

# %%
import shutil

shutil.rmtree(work)  # the exported file was only for this tutorial
