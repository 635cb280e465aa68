# %% [markdown]
# # 08 — Energy: synaptic operations (SOPs) vs. FLOPs
#
# A spiking network only works when a spike arrives: each presynaptic spike
# adds one weight per *outgoing connection* of its neuron — one accumulate
# (AC), no multiplication. So the synaptic work of layer `l` is
#
#     SOPs_l = sum over t, j of  1[a_j[t] != 0] * fan_out_j
#
# (`a` = the layer's input, `fan_out_j` = the actual number of connections
# leaving input `j`). Sparsity helps twice: fewer spikes *and* fewer
# connections per spike. A dense ANN of the same shape instead does every
# multiply-accumulate (MAC) once per sample: `sum_l n_in n_out` MACs,
# `FLOPs = 2 MACs`.
#
# `snn_core.energy.energy_report(net, x)` runs `net.forward(x, record=True)`
# and counts all of this per sample, with 45 nm energy estimates
# (0.9 pJ per AC, 4.6 pJ per MAC; TrueNorth: 26 pJ per synaptic event).
#
# We train the paper's 784-800-10 network briefly at 10% density and dense
# (shortened: 2 epochs each, 1 epoch on 500 images with `SNN_CORE_FAST=1`),
# count their operations on test digits, check one layer by hand, and
# separate the two effects of sparsity (`examples/figures/08_energy.png`).

# %%
import tempfile
from pathlib import Path

import numpy as np

from _tutorial import FAST, FIG_DIR  # finds snn_core; the figure folder
from matplotlib.figure import Figure

from snn_core import viz
from snn_core.config import TrainConfig
from snn_core.data import bernoulli_encode, direct_encode, load_embedded
from snn_core.energy import energy_from_arrays, energy_report, fan_out, format_report
from snn_core.training import Trainer


EPOCHS = 1 if FAST else 2
MAX_TRAIN = 500 if FAST else None
N_TEST = 50 if FAST else 200       # test digits the operations are averaged over
T = 8                              # time steps (the TrainConfig default)
data = load_embedded()

# %% [markdown]
# ## Step 1 — two trained networks
#
# Same seed and settings; one at a global 10% density (Erdős–Rényi: fc1
# 8.85%, the 800 → 10 readout dense), one dense.

# %%
def train(**kw):
    cfg = TrainConfig(epochs=EPOCHS, max_train=MAX_TRAIN, t_iter=25, quiet=True, seed=0,
                      out_dir=str(Path(tempfile.gettempdir()) / "snn_core_examples" / "08"), **kw)
    trainer = Trainer(cfg, dataset=data)
    summary = trainer.fit(checkpoint_dir=False)  # no checkpoints: out_dir is never created
    return trainer, summary


print(f"Step 1: training 784-800-10 for {EPOCHS} epoch(s) ({'FAST' if FAST else 'default'} mode)")
sparse_tr, s_sparse = train(density=0.1)
dense_tr, s_dense = train(sparse=False)
print(f"  sparse 10%: test accuracy {100 * s_sparse['test_accuracy']:.1f}%; "
      f"dense: {100 * s_dense['test_accuracy']:.1f}%")

# %% [markdown]
# ## Step 2 — the energy report of the sparse network
#
# The input is `N_TEST` test digits, Bernoulli-encoded with `T = 8` steps
# like during training. Both synaptic layers receive spikes (the pixels'
# Bernoulli spikes, then the hidden LIF spikes), so every operation is an
# AC. The readout is a non-spiking integrator: its membrane updates are
# neuron work, not synaptic work, and are not counted.

# %%
x_img = data.x_test[:: len(data.x_test) // N_TEST][:N_TEST].astype(np.float32) / 255.0  # all 10 classes
x = bernoulli_encode(x_img, T, seed=123)
net = sparse_tr.network
rep = energy_report(net, x)
print(f"\nStep 2: energy_report(net, x) with x.shape = {x.shape} (T, batch, inputs)")
print(format_report(rep))
print("\n  per layer:")
for L in rep.layers:
    steps = " ".join(f"{v:7.0f}" for v in L["ops_per_step"])
    print(f"  {L['name']}: {L['connections']:,} connections, mean fan-out {L['mean_fan_out']:.1f}, "
          f"input active {100 * L['presyn_rate']:.2f}% of (step, input) pairs -> {L['sops_per_sample']:,.0f} SOPs "
          f"per sample\n        per time step: {steps}")

# %% [markdown]
# ## Step 3 — the same count by hand
#
# For fc1 the presynaptic activity is the input `x`; the fan-out of pixel
# `j` is the number of stored connections in column `j` of the CSR weight,
# `np.bincount(indices)`. For fc2 the activity is the recorded spikes of
# the hidden LIF layer.

# %%
fc1, fc2 = net.layers[0], net.layers[2]
fo1 = np.bincount(fc1.weight.indices, minlength=784)
assert np.array_equal(fo1, fan_out(fc1))
spikes_in = (x != 0).sum(axis=(0, 1))            # per input pixel, summed over steps and samples
sops_fc1 = float(spikes_in @ fo1) / N_TEST
hidden = net.recorded["lif1"]["spikes"]           # (T, batch, 800), from the report's forward pass
sops_fc2 = float((hidden != 0).sum(axis=(0, 1)) @ fan_out(fc2)) / N_TEST
print("\nStep 3: by hand")
print(f"  fc1: {int(spikes_in.sum()):,} input spikes x their fan-out / {N_TEST} samples = {sops_fc1:,.1f} "
      f"(report {rep.layers[0]['sops_per_sample']:,.1f})")
print(f"  fc2: {int(hidden.sum()):,} hidden spikes x fan-out {fan_out(fc2).mean():g} / {N_TEST} samples = {sops_fc2:,.1f} "
      f"(report {rep.layers[1]['sops_per_sample']:,.1f})")
assert np.isclose(sops_fc1, rep.layers[0]["sops_per_sample"]) and np.isclose(sops_fc2, rep.layers[1]["sops_per_sample"])
e = rep.sops_per_sample * 0.9
print(f"  OK; energy = {rep.sops_per_sample:,.0f} SOPs x 0.9 pJ = {e:,.0f} pJ = {e / 1e3:.1f} nJ per sample")
ann = 784 * 800 + 800 * 10
print(f"  dense ANN: 784*800 + 800*10 = {ann:,} MACs = {2 * ann:,} FLOPs -> {ann * 4.6 / 1e3:,.0f} nJ at 4.6 pJ/MAC")

# %% [markdown]
# ## Step 4 — sparse vs. dense, and where the saving comes from
#
# Three SNN numbers:
#
# 1. the trained sparse network;
# 2. the trained dense network (its own spikes, every connection present);
# 3. *the sparse network's spikes with every connection present*
#    (`energy_from_arrays` with dense weights): the same activity, dense
#    structure. 1 vs. 3 is the saving from the structure alone, 3 vs. 2 the
#    difference in activity.

# %%
rep_dense = energy_report(dense_tr.network, x)
print("\nStep 4: the dense network")
print(format_report(rep_dense))
rep_cf = energy_from_arrays([np.empty((800, 784)), np.empty((10, 800))], [x, hidden], names=["fc1", "fc2"],
                            spikes={"lif1": hidden})
print(f"\n  {'':<44} {'fc1 SOPs':>10} {'fc2 SOPs':>9} {'total':>10} {'energy':>9} {'hidden rate':>11}")
table = [("1. sparse 10% (trained)", rep), ("2. dense (trained)", rep_dense),
         ("3. sparse net's spikes, all connections", rep_cf)]
for label, r in table:
    rate = next(iter(r.firing_rates.values()))
    print(f"  {label:<44} {r.layers[0]['sops_per_sample']:10,.0f} {r.layers[1]['sops_per_sample']:9,.0f} "
          f"{r.sops_per_sample:10,.0f} {r.snn_energy_pj / 1e3:7.1f} nJ {rate:11.4f}")
print(f"  dense ANN (run once per sample){'':<13} {rep.ann_macs_per_sample:,.0f} MACs = "
      f"{rep.ann_flops_per_sample:,.0f} FLOPs -> {rep.ann_energy_pj / 1e3:,.0f} nJ")
print(f"  structure alone (1 vs 3): {rep_cf.sops_per_sample / rep.sops_per_sample:.1f}x fewer SOPs; "
      f"ANN / sparse SNN energy: {rep.ann_energy_pj / rep.snn_energy_pj:.1f}x; "
      f"ANN / dense SNN: {rep_dense.ann_energy_pj / rep_dense.snn_energy_pj:.1f}x")

# %% [markdown]
# ## Step 5 — two other conventions
#
# - **Direct (current) coding** feeds the real pixel values at every step:
#   fc1's input is not binary, so each non-zero pixel costs a MAC per
#   connection (the report marks the layer `MAC`).
# - **`ann_timesteps=T`** charges the dense ANN once per time step — what
#   simulating a dense network step by step on a GPU costs (the paper's
#   "FLOPs on GPU" view) instead of one static forward pass.

# %%
rep_direct = energy_report(net, direct_encode(x_img, T))
rep_gpu = energy_report(net, x, ann_timesteps=T)
print("\nStep 5: direct coding into the sparse network")
print(format_report(rep_direct))
# rep_gpu counts the same Bernoulli-coded sparse SNN as `rep` (step 2); say which SNN each ratio divides by
assert np.isclose(rep_gpu.snn_energy_pj, rep.snn_energy_pj)
print(f"\n  with ann_timesteps = T = {T}: dense ANN {rep_gpu.ann_flops_per_sample:,.0f} FLOPs per sample "
      f"-> {rep_gpu.ann_energy_pj / 1e3:,.0f} nJ, which is {rep_gpu.ann_energy_pj / rep.snn_energy_pj:.0f}x the "
      f"spike-coded sparse SNN of step 2 ({rep.snn_energy_pj / 1e3:.1f} nJ) and "
      f"{rep_gpu.ann_energy_pj / rep_direct.snn_energy_pj:.0f}x the direct-coded one above "
      f"({rep_direct.snn_energy_pj / 1e3:.1f} nJ)")

# %% [markdown]
# ## Step 6 — figure
#
# Left: synaptic operations per sample and layer (log scale). Right:
# estimated energy per sample.

# %%
fig = Figure(figsize=(11.0, 4.4), layout="constrained")
ax1, ax2 = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[1.3, 1]))
bars = [("sparse 10% SNN\n(ACs)", [L["sops_per_sample"] for L in rep.layers]),
        ("dense SNN\n(ACs)", [L["sops_per_sample"] for L in rep_dense.layers]),
        ("sparse net's spikes,\nall connections (ACs)", [L["sops_per_sample"] for L in rep_cf.layers]),
        ("dense ANN\n(MACs)", [L["ann_macs_per_sample"] for L in rep.layers])]
width = 0.2
for i, (label, vals) in enumerate(bars):
    pos = np.arange(2) + (i - 1.5) * width
    ax1.bar(pos, vals, width=width * 0.95, color=viz.OKABE_ITO[i], label=label.replace("\n", " "))
    for p_, v in zip(pos, vals):
        ax1.text(p_, v * 1.1, f"{v:,.0f}", ha="center", va="bottom", fontsize=7, rotation=90)
ax1.set_yscale("log")
ax1.set_ylim(top=max(max(v) for _, v in bars) * 20)
ax1.set_xticks(np.arange(2), ["fc1 (784 -> 800)", "fc2 (800 -> 10)"])
ax1.set_ylabel("operations per sample (log scale)")
ax1.set_title(f"Synaptic operations per sample (T = {T}, {N_TEST} test digits)", fontsize=10)
ax1.legend(fontsize=7.5, loc="upper right")
ax1.grid(axis="y", alpha=0.3, which="both")
energies = [("sparse 10% SNN", rep.snn_energy_pj), ("dense SNN", rep_dense.snn_energy_pj),
            ("dense ANN", rep.ann_energy_pj), ("sparse SNN on\nTrueNorth (26 pJ/event)", rep.truenorth_energy_pj)]
cols = [viz.OKABE_ITO[0], viz.OKABE_ITO[1], viz.OKABE_ITO[3], viz.OKABE_ITO[4]]
ax2.barh(np.arange(len(energies)), [v / 1e3 for _, v in energies], color=cols)
for i, (_, v) in enumerate(energies):
    ax2.text(v / 1e3, i, f" {v / 1e3:,.0f} nJ", va="center", fontsize=8)
ax2.set_yticks(np.arange(len(energies)), [lab for lab, _ in energies], fontsize=8)
ax2.invert_yaxis()
ax2.set_xlim(right=max(v for _, v in energies) / 1e3 * 1.3)
ax2.set_xlabel("energy per sample (nJ)")
ax2.set_title("Estimated energy (45 nm: 0.9 pJ/AC, 4.6 pJ/MAC)", fontsize=10)
fig.suptitle("784-800-10: spiking sparse vs. dense vs. ANN")
print("\nStep 6: wrote", viz.save(fig, FIG_DIR / "08_energy.png"))
