# %% [markdown]
# # 05 — Sparse connectivity: CSR, Erdős–Rényi densities, memory
#
# A sparse layer stores only the connections that exist. `SparseLinear`
# keeps its weight matrix `W` (shape `(n_out, n_in)`: rows are output
# neurons, columns are inputs) in **CSR** (compressed sparse row) form:
#
# - `data[k]`    — the weight of the k-th stored connection;
# - `indices[k]` — its column, i.e. which *input* it comes from;
# - `indptr[r]:indptr[r+1]` — the slice of `data`/`indices` that belongs to
#   row `r`, i.e. the inputs of *output neuron* `r` (its fan-in).
#
# This tutorial takes a 6 → 4 layer apart, computes `W x` with the three
# arrays by hand, tabulates the Erdős–Rényi per-layer densities of the
# paper's 784-800-10 network at several global densities, compares CSR and
# dense memory, and draws connectivity matrices (`examples/figures/05_*.png`).

# %%
import numpy as np

from _tutorial import FIG_DIR  # finds snn_core; the figure folder
from snn_core import SparseLinear, viz
from snn_core.structure import connection_counts, erdos_renyi_densities, mlp_densities

np.set_printoptions(precision=3, suppress=True, linewidth=110)

# %% [markdown]
# ## Step 1 — anatomy of a small CSR layer
#
# `SparseLinear(6, 4, density=0.4)` places exactly `round(0.4 * 4 * 6) = 10`
# connections uniformly at random, with weights `U(-a, a)`,
# `a = sqrt(3 / fan_in)` per output neuron.

# %%
layer = SparseLinear(6, 4, density=0.4, seed=1, name="small")
W = layer.weight  # a scipy.sparse.csr_matrix; W.data is the trainable array (layer.weight_param.value)
print(f"Step 1: {layer.name}: shape (n_out, n_in) = {W.shape}, nnz = round(0.4 x 24) = round(9.6) = {layer.nnz}, "
      f"actual density {layer.nnz}/24 = {layer.density:.3f}")
print(f"  indptr  = {W.indptr}   (length n_out + 1 = {len(W.indptr)})")
print(f"  indices = {W.indices}   (length nnz)")
print(f"  data    = {W.data}")
print(f"  W.data is layer.weight_param.value: {W.data is layer.weight_param.value}")
print("\n  row r = output neuron r; its connections are data/indices[indptr[r]:indptr[r+1]]:")
for r in range(W.shape[0]):
    a, b = W.indptr[r], W.indptr[r + 1]
    conns = ", ".join(f"input {j} (w = {w:+.3f})" for j, w in zip(W.indices[a:b], W.data[a:b]))
    print(f"  row {r}: indptr[{r}]:indptr[{r + 1}] = {a}:{b} -> fan-in {b - a}: {conns or 'none'}")
print("\n  the same matrix dense (0 = no connection):")
print(W.toarray())
fan_out = np.bincount(W.indices, minlength=W.shape[1])
print(f"  fan-out of each input (connections per column) = np.bincount(indices) = {fan_out}")

# %% [markdown]
# ## Step 2 — `I = W x` from the three arrays
#
# For each output row, add the weights of the inputs that are active. With
# spike inputs (0/1) that is just *adding a weight per spike* — no
# multiplication, which is where the energy saving of SNNs comes from
# (tutorial 08). The work is proportional to the number of connections.

# %%
x = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0], dtype=np.float32)  # inputs 0, 2, 3 spike
I_hand = np.zeros(W.shape[0], np.float32)
ops = 0
for r in range(W.shape[0]):
    for k in range(W.indptr[r], W.indptr[r + 1]):
        I_hand[r] += W.data[k] * x[W.indices[k]]
        ops += int(x[W.indices[k]] != 0)
I_engine = layer.forward(x[None, None, :])[0, 0]  # (T=1, batch=1, 6) -> (1, 1, 4); bias starts at 0
print(f"\nStep 2: x = {x}")
print(f"  I by hand (loop over CSR rows) = {I_hand}")
print(f"  I from layer.forward           = {I_engine}")
print(f"  I from the dense matrix W @ x  = {W.toarray() @ x}")
assert np.allclose(I_hand, I_engine, atol=1e-6) and np.allclose(I_hand, W.toarray() @ x, atol=1e-6)
print(f"  OK all three agree; synaptic operations (one add per spike per outgoing connection): {ops} "
      f"= sum of fan-outs of the active inputs {fan_out[x > 0].tolist()}")

# %% [markdown]
# ## Step 3 — Erdős–Rényi densities for 784-800-10
#
# One global density `D` is split among layers (SET's Erdős–Rényi rule):
#
#     p_k = min(1, eps * (n_in + n_out) / (n_in * n_out))
#
# with one `eps` solved so that the network holds `D x (all possible
# connections)`. Small layers get a *higher* density. The 800 → 10 readout
# layer has only 8,000 possible connections and becomes fully dense from
# about D = 3.7% on; `eps` is then re-solved for the remaining layer.

# %%
sizes = [784, 800, 10]
shapes = [(800, 784), (10, 800)]
total = sum(o * i for o, i in shapes)
scale = [(o + i) / (o * i) for o, i in shapes]
print(f"\nStep 3: 784-800-10 has {shapes[0][0] * shapes[0][1]:,} + {shapes[1][0] * shapes[1][1]:,} = "
      f"{total:,} possible connections; ER scale (n_in + n_out)/(n_in n_out) = {scale[0]:.5f} (fc1), "
      f"{scale[1]:.5f} (fc2)")
print(f"  {'D':>6} | {'eps':>7} | {'p_fc1':>7} {'p_fc2':>7} | {'nnz fc1':>8} {'nnz fc2':>7} {'total':>8} "
      f"| {'D x total':>9}")
DENSITIES = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
for D in DENSITIES:
    p1, p2 = erdos_renyi_densities(shapes, D)
    n1, n2 = connection_counts(shapes, D)
    eps = f"{p1 / scale[0]:7.2f}" if p1 < 1 else "    -  "  # fc1 is not capped below D = 1
    print(f"  {D:6.2f} | {eps} | {p1:7.4f} {p2:7.4f} | {n1:8,d} {n2:7,d} {n1 + n2:8,d} | {D * total:9,.0f}")
    assert n1 + n2 == round(D * total)
print(f"  OK every row holds exactly round(D x total) connections; mlp_densities(sizes, 0.1) = "
      f"{[round(d, 5) for d in mlp_densities(sizes, 0.1)]} is what Trainer passes to mlp(...)")

# %% [markdown]
# ## Step 4 — memory: CSR vs. dense
#
# A dense float32 layer costs `4 n_out n_in` bytes whatever its density.
# CSR costs `4 nnz` (data, float32) `+ 4 nnz` (indices, int32) `+ 4 (n_out + 1)`
# (indptr): 8 bytes per connection, so it wins below 50% density. (Training
# adds a gradient and two Adam moments per weight: the same ratio.)

# %%
print("\nStep 4: memory of fc1 (800 x 784) built as SparseLinear at several densities")
print(f"  {'density':>8} {'nnz':>8} | {'data':>9} {'indices':>9} {'indptr':>7} {'CSR total':>10} | "
      f"{'dense':>9} | CSR/dense")
dense_bytes = 800 * 784 * 4
for d in (0.01, 0.05, 0.1, 0.25, 0.5, 1.0):
    fc1 = SparseLinear(784, 800, density=d, seed=0)
    w = fc1.weight
    csr = w.data.nbytes + w.indices.nbytes + w.indptr.nbytes
    assert csr == 8 * fc1.nnz + 4 * 801
    print(f"  {d:8.2f} {fc1.nnz:8,d} | {w.data.nbytes:9,d} {w.indices.nbytes:9,d} {w.indptr.nbytes:7,d} "
          f"{csr:10,d} | {dense_bytes:9,d} | {csr / dense_bytes:8.3f}")
print("  OK CSR bytes = 8 nnz + 4 (n_out + 1); break-even with dense at density 0.5")

# %% [markdown]
# ## Step 5 — figures
#
# `viz.connectivity_matrix` draws a layer as an image: rows = output
# neurons, columns = inputs. For the small layer every cell is one possible
# connection (coloured by weight, outlined when it exists). For fc1 (800 x
# 784) the image is downsampled: each pixel is a block of neuron pairs,
# coloured by the fraction of its possible connections that exist.

# %%
fig = viz.connectivity_matrix(W.indptr, W.indices, W.shape, data=W.data,
                              title=f"SparseLinear(6, 4, density=0.4): {layer.nnz} connections\n"
                                    "colour = weight, outlined = connection exists, grey = none")
print("\nStep 5: wrote", viz.save(fig, FIG_DIR / "05_small_layer_weights.png"))

d_fc1 = mlp_densities(sizes, 0.1)[0]
fc1 = SparseLinear(784, 800, density=d_fc1, seed=0, name="fc1")
w = fc1.weight
fig = viz.connectivity_matrix(w.indptr, w.indices, w.shape, max_size=200)
print(f"  fc1 of 784-800-10 at D = 10%: density {fc1.density:.4f} ({fc1.nnz:,} connections)")
print("  wrote", viz.save(fig, FIG_DIR / "05_fc1_density_blocks.png"))
