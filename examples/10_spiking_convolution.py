# %% [markdown]
# # 10 — One spiking convolution, by hand
#
# A convolutional layer applies the *same small kernel* at every position of
# an image, at every time step. In `snn_core` the kernel tensor
# `(c_out, c_in, kh, kw)` is stored as a sparse matrix `(c_out, c_in*kh*kw)`
# (column `j = (ci*kh + ky)*kw + kx`), so a sparse convolution is a
# `SparseConv2d` that structure learning treats exactly like a sparse linear
# layer: prune, grow, remap — all unchanged.
#
# Activations stay `(T, batch, features)`; an image's features are its pixels
# flattened channel-major, `f = (c*H + y)*W + x` (`image.reshape(-1)`).
#
# We take a 5x5 input, a 3x3 kernel with 4 of its 9 weights present, and
# check every output current, every spike and every gradient against loops
# written out here. Then we train a small conv ESL-SNN on the embedded MNIST
# sample (`SNN_CORE_FAST=1`: a few hundred images).

# %%
import numpy as np

from _tutorial import FAST, FIG_DIR  # finds snn_core; the figure folder

from snn_core import LIF, LIFParams, viz
from snn_core.conv import SparseConv2d
from snn_core.data import load_embedded
from snn_core.config import TrainConfig
from snn_core.training import Trainer

np.set_printoptions(precision=3, suppress=True)

# %% [markdown]
# ## Step 1 — the input and the kernel
#
# Two time steps of 5x5 binary spikes, one sample. The kernel keeps 4 of its
# 9 positions (density 4/9): the others are *absent*, not zero-valued.

# %%
T, H, W = 2, 5, 5
spikes = np.zeros((T, 1, H * W), np.float32)
on = {0: [(0, 0), (1, 2), (2, 2), (3, 1), (4, 4)], 1: [(2, 2), (2, 3), (0, 4)]}
for t, pixels in on.items():
    for y, x in pixels:
        spikes[t, 0, y * W + x] = 1.0
kernel = np.array([[0.5, 0.0, 0.0],
                   [0.0, 1.0, -0.5],
                   [0.0, 0.25, 0.0]], np.float32)
present = kernel != 0
conv = SparseConv2d(1, 1, 3, stride=1, padding=0, input_size=(H, W),
                    weight=kernel.reshape(1, 1, 3, 3), dtype=np.float32, name="conv")
# a dense weight array: its nonzero entries become the connections
print("stored kernel entries (row = output channel, column j = ky*3 + kx):", conv.weight.indices, conv.weight.data)
assert conv.nnz == 4 and conv.geometry.oh == 3 and conv.geometry.ow == 3
for t in range(T):
    print(f"input spikes, step {t}:\n{spikes[t, 0].reshape(H, W).astype(int)}")

# %% [markdown]
# ## Step 2 — the output current, position by position
#
# `I[t, oy, ox] = sum over present (ky, kx) of w[ky, kx] * s[t, oy + ky, ox + kx]`
# (stride 1, no padding: a 3x3 output). On the `cpu` backend only the
# *spikes* cost work: each one is pushed through the kernel entries that
# read it.

# %%
current = np.asarray(conv.forward(spikes))              # (T, 1, 9)
for t in range(T):
    img = spikes[t, 0].reshape(H, W)
    by_hand = np.zeros((3, 3), np.float32)
    for oy in range(3):
        for ox in range(3):
            for ky in range(3):
                for kx in range(3):
                    if present[ky, kx]:
                        by_hand[oy, ox] += kernel[ky, kx] * img[oy + ky, ox + kx]
    print(f"current, step {t}:\n{current[t, 0].reshape(3, 3)}")
    assert np.allclose(current[t, 0].reshape(3, 3), by_hand)
print("OK currents == hand convolution")

# %% [markdown]
# ## Step 3 — spikes of the LIF neurons that receive it
#
# One LIF neuron per output position (9 neurons): `u[t] = 0.5 v[t-1] + 0.5 I[t]`
# with `tau_m = 2`, spike when `u >= v_th`, hard reset to 0. A threshold of
# 0.25 lets the strong positions fire.

# %%
lif = LIF(9, LIFParams(tau_m=2.0, v_th=0.25), name="lif")
out = np.asarray(lif.forward(current, record=True))
v = np.zeros(9, np.float32)
for t in range(T):
    u = 0.5 * v + 0.5 * current[t, 0]
    s = (u >= 0.25).astype(np.float32)
    v = u * (1 - s)
    print(f"step {t}: membrane {lif.recorded['u'][t, 0].reshape(3, 3).ravel()} -> spikes "
          f"{out[t, 0].astype(int).reshape(3, 3).tolist()}")
    assert np.array_equal(out[t, 0], s) and np.allclose(lif.recorded["u"][t, 0], u)
print("OK spikes == hand LIF steps")

# %% [markdown]
# ## Step 4 — gradients
#
# Take the loss `L = sum_t,pos R[t, pos] * I[t, pos]` for a fixed `R`. Then
#
# - `dL/dw[ky, kx] = sum over t, oy, ox of R[t, oy, ox] * s[t, oy + ky, ox + kx]`,
#   computed **only for the 4 present weights** (the gradient lives on the
#   connections, aligned with `weight.data`);
# - `dL/ds[t, iy, ix] = sum of R[t, oy, ox] * w[ky, kx]` over the (present)
#   kernel entries that read pixel `(iy, ix)`.

# %%
rng = np.random.default_rng(0)
R = rng.integers(-2, 3, size=(T, 1, 9)).astype(np.float32)
conv.need_input_grad = True
conv.weight_param.zero_grad()
grad_in = np.asarray(conv.backward(R))
gw_hand = np.zeros((3, 3), np.float32)   # at every kernel position (used again for growth below)
gx_hand = np.zeros((T, H, W), np.float32)
for t in range(T):
    img, r = spikes[t, 0].reshape(H, W), R[t, 0].reshape(3, 3)
    for oy in range(3):
        for ox in range(3):
            for ky in range(3):
                for kx in range(3):
                    gw_hand[ky, kx] += r[oy, ox] * img[oy + ky, ox + kx]
                    if present[ky, kx]:
                        gx_hand[t, oy + ky, ox + kx] += r[oy, ox] * kernel[ky, kx]
cols = conv.weight.indices
print("dL/dw at the connections:", conv.weight_param.grad, " by hand:", gw_hand.ravel()[cols])
assert np.allclose(conv.weight_param.grad, gw_hand.ravel()[cols])
for t in range(T):
    print(f"dL/ds, step {t}:\n{grad_in[t, 0].reshape(H, W)}")
    assert np.allclose(grad_in[t, 0].reshape(H, W), gx_hand[t])
print("OK gradients == hand computation")

# %% [markdown]
# Gradient-based growth needs the gradient at the *absent* positions too:
# `dense_weight_grad()` computes it once, at a rewiring event, from the
# retained output gradient. At the present positions it equals the gradient above.

# %%
conv.retain_output_grad = True
conv.forward(spikes)
conv.weight_param.zero_grad()
conv.backward(R)
dense = conv.dense_weight_grad().reshape(3, 3)
print("dense dL/dw (absent positions included):\n", dense)
assert np.allclose(dense, gw_hand)

# %% [markdown]
# ## Step 5 — a conv ESL-SNN on MNIST digits
#
# `snn-esl train --model convnet` builds two blocks of
# conv3x3 -> batch norm through time -> LIF -> 2x2 average pooling, then a
# sparse classifier and a readout. The first conv stays dense
# (`dense_first`, 9 weights per channel from a single input channel); the
# others share the rest of the budget, and the rewiring rules act on the
# conv kernels exactly as on linear layers. The full MNIST job (10% density,
# 32/64 channels) is in `docs/results.md`; here a tiny version (8/16
# channels, 20% density) on the embedded sample.

# %%
cfg = TrainConfig(model="convnet", channels=[8, 16], encoder="direct", steps=4,
                  density=0.2, init="uniform", batch_size=25, lr=0.01, lr_end=0.001,
                  epochs=2 if FAST else 3, max_train=500 if FAST else None, t_iter=5 if FAST else 40,
                  quiet=True, out_dir=str(FIG_DIR / "10_run"))
trainer = Trainer(cfg, load_embedded())
summary = trainer.fit(checkpoint_dir=False)
convs = [l for l in trainer.network.sparse_layers() if hasattr(l, "geometry")]
print(f"test accuracy {summary['test_accuracy']:.3f}, global density {summary['density']:.4f}, "
      f"{summary['rewiring_events']} rewiring events")
for layer in trainer.network.sparse_layers():
    print(f"  {layer.name:6s} {type(layer).__name__:13s} kernel matrix {layer.weight_shape}, nnz {layer.nnz}")
assert abs(summary["density"] - 0.2) < 1e-3 and summary["rewiring_events"] >= 1
assert summary["test_accuracy"] > (0.25 if FAST else 0.7)  # chance: 0.1

# %% [markdown]
# The kernels of `conv2` before and after training, one 3x3 tile per
# (output channel, input channel): kept connections grey, pruned orange,
# grown blue (`snn-esl plot` draws the same view and a GIF of every event).

# %%
conv2 = trainer.network.layers[4]
snaps = trainer.rewirer.history.snapshots("conv2")
(_, p0, i0), (_, p1, i1) = snaps[0], snaps[-1]
a = viz.kernel_grid(p0, i0, conv2.kernel_shape)
b = viz.kernel_grid(p1, i1, conv2.kernel_shape)
fig = viz.connectivity_diff(a[:2], b[:2], a[2], title="conv2 kernels: initial vs last rewiring event")
print("wrote", viz.save(fig, FIG_DIR / "10_conv2_kernels.png"))
