# %% [markdown]
# # 06 — Rewiring up close
#
# ESL-SNNs keep every layer at a fixed number of connections but change
# *which* connections exist: every `t_iter` training iterations a fraction
# `zeta(t)` of each layer's connections is **pruned** (the smallest `|w|`)
# and the same number is **grown** at empty positions drawn at random, with
# weight 0. `zeta` decays with a cosine from `zeta0 = 0.3` to 0 at `t_end`:
#
#     zeta(t) = zeta0 / 2 * (1 + cos(pi t / t_end)),     n = round(zeta(t) * nnz)
#
# We watch one small layer (8 output neurons x 12 inputs, 30% density = 29
# connections) through one hand-driven event (`rewire_layer`) and then five
# scheduled events of a `Rewirer` during a few Adam steps, printing what was
# pruned and grown, and drawing the changes (`examples/figures/06_*`).

# %%
import numpy as np

from _tutorial import FIG_DIR  # finds snn_core; the figure folder
from snn_core import Adam, ce_membrane, mlp, viz
from snn_core.structure import Rewirer, position_keys, rewire_layer, zeta_schedule



def show(layer, marks=None, title=""):
    """Print the 0/1 mask and the weights of a small layer; marks: {(row, col): char}."""
    marks = marks or {}
    w = layer.weight
    n_out, n_in = w.shape
    rows = np.repeat(np.arange(n_out), np.diff(w.indptr))
    vals = {(int(r), int(c)): float(d) for r, c, d in zip(rows, w.indices, w.data)}
    print(f"  {title}")
    print("  mask (cols = inputs)        weights")
    for r in range(n_out):
        m = "".join(marks.get((r, c), "#" if (r, c) in vals else ".") for c in range(n_in))
        v = " ".join(f"{vals[(r, c)]:+.2f}" if (r, c) in vals else "  .  " for c in range(n_in))
        print(f"  row {r}: {m}    {v}")


def keys_to_rc(keys, n_in):
    return [(int(k // n_in), int(k % n_in)) for k in keys]


# %% [markdown]
# ## Step 1 — a small sparse network
#
# `mlp([12, 8], density=0.3)` is one `SparseLinear` (12 → 8) followed by a
# non-spiking readout of 8 neurons. We train it for a few Adam steps on
# random spike inputs and random labels: the task is meaningless, but the
# weights move, which is all rewiring needs.

# %%
N_IN, N_OUT, DENSITY, T, BATCH = 12, 8, 0.3, 4, 16
net = mlp([N_IN, N_OUT], density=DENSITY, seed=0, gain=1.0)
layer = net.layers[0]
opt = Adam(net.parameters(), lr=0.05)
rng = np.random.default_rng(0)


def train_steps(n):
    for _ in range(n):
        x = (rng.random((T, BATCH, N_IN)) < 0.5).astype(np.float32)
        y = rng.integers(0, N_OUT, BATCH)
        _, g = ce_membrane(net.forward(x), y)
        net.zero_grad()
        net.backward(g)
        opt.step()


train_steps(5)
print(f"Step 1: layer {layer.name}: shape {layer.weight.shape}, nnz = round({DENSITY} x {N_IN * N_OUT}) = "
      f"{layer.nnz}; after 5 Adam steps:")
show(layer, title="# = connection, . = empty")

# %% [markdown]
# ## Step 2 — one event by hand with `rewire_layer`
#
# Prune the `n = 6` connections with the smallest `|w|`, grow 6 at random
# empty positions (of the structure *after* pruning, so a just-pruned
# position could come back, as a new connection). In the mask below `x`
# marks a pruned connection and `+` a grown one.

# %%
n = 6
w = layer.weight
order = np.argsort(np.abs(w.data), kind="stable")
rows = np.repeat(np.arange(N_OUT), np.diff(w.indptr))
print(f"\nStep 2: rewire_layer(layer, n={n}): the {n} smallest |w| of the {layer.nnz} connections")
for rank, k in enumerate(order[:n + 2]):
    tag = "prune" if rank < n else "keep (next smallest)"
    print(f"  |w| rank {rank}: (row {rows[k]}, col {w.indices[k]:2d}) w = {w.data[k]:+.4f}  -> {tag}")
expected = sorted(position_keys(w.indptr, w.indices, N_IN)[order[:n]].tolist())
m_before = opt.state[opt.index(layer.weight_param)]["m"].copy()
nnz_before = layer.nnz
ev = rewire_layer(layer, n, np.random.default_rng(1), prune="magnitude", grow="random", optimizer=opt)
assert sorted(ev["pruned_keys"].tolist()) == expected
pruned, grown = keys_to_rc(ev["pruned_keys"], N_IN), keys_to_rc(ev["grown_keys"], N_IN)
print(f"  OK pruned = the {n} smallest |w|: {pruned}")
print(f"     grown (random empty positions, weight 0): {grown}")
for rc in sorted(set(pruned) & set(grown)):
    print(f"     {rc} was pruned and drawn again: it comes back as a *new* connection (weight 0, fresh Adam state)")
marks = {rc: "x" for rc in pruned} | {rc: "+" for rc in grown}
show(layer, marks, title="after the event (x = pruned, + = grown)")
src = ev["src"]
m_after = opt.state[opt.index(layer.weight_param)]["m"]
print(f"  nnz before {nnz_before} -> after {layer.nnz} (unchanged); "
      f"src (old data index of each new entry, -1 = grown) = {src.tolist()}")
assert np.array_equal(m_after[src >= 0], m_before[src[src >= 0]]) and np.all(m_after[src < 0] == 0)
print("  OK Adam state was remapped: kept connections keep their moment m, grown ones start at 0")

# %% [markdown]
# ## Step 3 — a schedule of events with `Rewirer`
#
# `Rewirer(t_iter=5, zeta0=0.3, t_end=30)` rewires at iterations 5, 10, 15,
# 20 and 25 (events need `0 < t < t_end` and `t % t_iter == 0`). The training
# loop calls `rewirer.maybe_rewire(iteration, net, opt)` after every
# `opt.step()`. `snapshot_every=1` keeps the structure after each event for
# the figures. Turnover columns of the history:
#
# - `frac_initial_kept`: initial connections never pruned so far;
# - `frac_grown`: current connections that were grown at some event;
# - `frac_explored`: positions (of all 96) that have ever been a connection.

# %%
T_ITER, T_END = 5, 30
rewirer = Rewirer(t_iter=T_ITER, zeta0=0.3, decay="cosine", t_end=T_END, seed=0, snapshot_every=1)
print(f"\nStep 3: zeta schedule (zeta0 = 0.3, t_end = {T_END}): n = round(zeta x {layer.nnz}), half up")
for t in range(T_ITER, T_END, T_ITER):
    z = zeta_schedule(t, 0.3, T_END)
    print(f"  t = {t:2d}: zeta = 0.15 (1 + cos(pi {t}/{T_END})) = {z:.4f} -> n = {int(np.floor(z * layer.nnz + 0.5))}")

LAST = (T_END - 1) // T_ITER * T_ITER  # the last event; we stop right after it
# the history's "initial" structure is the one it first sees: the layer as it is now (after step 2)
rewirer.history.register(layer.name, layer.weight.shape, layer.weight.indptr, layer.weight.indices)
for it in range(1, LAST + 1):
    train_steps(1)
    if not rewirer.is_event(it):
        continue
    w = layer.weight
    absw = np.sort(np.abs(w.data))
    records = rewirer.maybe_rewire(it, net, opt)
    ev, rec = rewirer.last_events[layer.name], records[0]
    pruned, grown = keys_to_rc(ev["pruned_keys"], N_IN), keys_to_rc(ev["grown_keys"], N_IN)
    cut = absw[ev["n"] - 1] if ev["n"] else float("nan")
    print(f"\n  event at iteration {it}: zeta = {rec['zeta']:.4f}, n = {ev['n']} "
          f"(pruned every |w| <= {cut:.4f}; the next |w| is {absw[ev['n']]:.4f})")
    print(f"    pruned: {pruned}")
    print(f"    grown:  {grown}")
    print(f"    nnz {rec['nnz']} (density {rec['density']:.3f}); frac_initial_kept {rec['frac_initial_kept']:.3f}, "
          f"frac_grown {rec['frac_grown']:.3f}, frac_explored {rec['frac_explored']:.3f} "
          f"({rec['n_ever_grown']} distinct positions ever grown)")
    for rc in sorted(set(pruned) & set(grown)):
        print(f"    {rc} was pruned and grown back in the same event (a new connection, weight 0)")
    assert rec["nnz"] == 29 and rec["n_pruned"] == rec["n_grown"] == ev["n"]
marks = {rc: "+" for rc in grown} | {rc: "x" for rc in pruned if rc not in set(grown)}
print()
show(layer, marks, title=f"right after the last event (iteration {LAST}; x = pruned, + = grown with weight 0)")
print(f"  OK {rewirer.n_events} events, nnz stayed {layer.nnz} throughout")

# %% [markdown]
# ## Step 4 — figures
#
# - `06_diff_first_event.png` / `06_diff_initial_vs_final.png`:
#   `viz.connectivity_diff` colours each position: grey = present in both, orange =
#   pruned, blue = grown;
# - `06_structure.gif`: `viz.structure_animation`, one frame per snapshot
#   (frame 1 = the structure when the history started, frame k = the changes
#   of event k-1);
# - `06_density_turnover.png`: `viz.density_turnover`, the history per event
#   (pruned and grown are always equal, so one curve shows both).
#
# A structure diff compares two *masks*: a position that is a connection in
# both counts as "present in both" even if it was pruned and re-grown in between (or in
# the same event), so its counts can be smaller than the event's `n`.

# %%
snaps = rewirer.history.snapshots(layer.name)  # [(iteration, indptr, indices), ...], iteration 0 = start
shape = layer.weight.shape
(_, p0, i0), (it1, p1, i1), (itN, pN, iN) = snaps[0], snaps[1], snaps[-1]
print("\nStep 4: figures")
fig = viz.connectivity_diff((p0, i0), (p1, i1), shape, title=f"{layer.name}: before vs. after the event at "
                                                               f"iteration {it1}")
print("  wrote", viz.save(fig, FIG_DIR / "06_diff_first_event.png"))
fig = viz.connectivity_diff((p0, i0), (pN, iN), shape,
                            title=f"{layer.name}: start of the schedule vs. after {len(snaps) - 1} events "
                                  f"(iteration {itN})")
print("  wrote", viz.save(fig, FIG_DIR / "06_diff_initial_vs_final.png"))
hist = rewirer.history
n_never = len(hist.alive_initial_keys(layer.name))
print(f"  note: a diff compares masks. Of the {layer.nnz} initial connections {n_never} were never pruned; "
      f"the diff shows more as 'present in both' because some were pruned and grown back later.")
for (ita, pa, ia), (itb, pb, ib) in zip(snaps[:-1], snaps[1:]):
    ka, kb = position_keys(pa, ia, N_IN), position_keys(pb, ib, N_IN)
    rec = next(r for r in hist.records if r["iteration"] == itb)
    print(f"  event {itb:2d}: n = {rec['n_pruned']}, mask diff shows pruned {np.setdiff1d(ka, kb).size}, "
          f"grown {np.setdiff1d(kb, ka).size}")
print("  wrote", viz.structure_animation(snaps, shape, FIG_DIR / "06_structure.gif", fps=1, layer_name=layer.name))
fig = viz.density_turnover(rewirer.history.as_arrays())
print("  wrote", viz.save(fig, FIG_DIR / "06_density_turnover.png"))
