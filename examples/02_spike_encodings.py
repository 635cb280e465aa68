# %% [markdown]
# # 02 — Turning an image into spikes
#
# A spiking network consumes a sequence of `T` input frames. The four
# encoders of `snn_core.data` turn one image (784 intensities in [0, 1])
# into an array indexed `(T, batch, 784)`:
#
# | encoder | at each step, pixel `j` emits | spikes over `T` steps |
# |---|---|---|
# | `bernoulli_encode` | a spike with probability `x_j` | about `T x_j` (random) |
# | `poisson_encode` | a spike with probability `min(x_j * max_rate * dt, 1)` | about `T x_j max_rate dt` |
# | `direct_encode` | the real value `x_j` itself (a current, not a spike) | — |
# | `latency_encode` | one spike, at step `round((1 - x_j)(T - 1))`, if `x_j > threshold` | exactly 1 or 0 |
#
# We put one embedded MNIST test digit through all four, print how many
# spikes come out (and check the numbers against what we expect), look at a
# few individual pixels, and draw `examples/figures/02_input_encodings.png`.

# %%
import numpy as np

from _tutorial import FIG_DIR  # finds snn_core; the figure folder
from snn_core import viz
from snn_core.data import (bernoulli_encode, direct_encode, latency_encode, load_embedded, poisson_encode,
                           to_float)


# %% [markdown]
# ## Step 1 — one digit as intensities
#
# The embedded sample is 5,000 real MNIST digits (4,000 train / 1,000 test)
# stored as uint8 grey levels 0..255. `to_float` divides by 255. The
# encoders take a *batch*: shape `(batch, features)`, here `(1, 784)`.

# %%
data = load_embedded()
idx = int(np.flatnonzero(data.y_test == 3)[0])  # the first "3" of the test set
x = to_float(data.x_test[idx:idx + 1])         # (1, 784) float32 in [0, 1]
print(f"Step 1: dataset {data.name}: train {data.x_train.shape}, test {data.x_test.shape}")
print(f"  test image {idx}, label {data.y_test[idx]}; x.shape = {x.shape}, dtype {x.dtype}")
print(f"  pixels > 0: {(x > 0).sum()} of 784; pixels == 1.0: {(x == 1).sum()}; sum of intensities {x.sum():.2f}")
img = x[0].reshape(28, 28)
print("  the digit (# >= 0.5, + > 0, . = 0), rows 4..23:")
for r in range(4, 24):
    print("   ", "".join("#" if v >= 0.5 else "+" if v > 0 else "." for v in img[r]))

# %% [markdown]
# ## Step 2 — encode with all four encoders
#
# `T = 20` steps. Bernoulli and Poisson are random: a fixed integer `seed`
# gives the same spikes every time. With the Poisson defaults
# (`max_rate = 1000 Hz`, `dt = 1 ms`) the spike probability is exactly `x`,
# and Poisson equals Bernoulli; we use `max_rate = 200 Hz` so that a white
# pixel spikes with probability 0.2 per step.

# %%
T, SEED = 20, 0
enc = {
    "bernoulli": bernoulli_encode(x, T, seed=SEED),
    "poisson (200 Hz)": poisson_encode(x, T, max_rate=200.0, dt=1e-3, seed=SEED),
    "direct": direct_encode(x, T),
    "latency": latency_encode(x, T, threshold=0.1),
}
print(f"\nStep 2: T = {T} steps")
for name, s in enc.items():
    kind = "0/1 spikes" if np.all((s == 0) | (s == 1)) else "real values"
    print(f"  {name:<17} shape {s.shape} ({kind}); stored feature-major: s.base.shape = {s.base.shape}")

# %% [markdown]
# ## Step 3 — spike counts: observed vs. expected
#
# - Bernoulli: each of the `784 x T` draws is a coin with probability `x_j`,
#   so the expected total is `T * sum_j x_j` (standard deviation
#   `sqrt(T * sum_j x_j (1 - x_j))`).
# - Poisson (200 Hz, 1 ms): the same with `p_j = 0.2 x_j`.
# - Direct: no spikes; each step carries the whole image, `sum_j x_j` per step.
# - Latency: exactly one spike per pixel above the threshold.

# %%
print("\nStep 3: spike counts")
for name, p in (("bernoulli", x), ("poisson (200 Hz)", np.minimum(x * 0.2, 1.0))):
    s = enc[name]
    mean, std = T * p.sum(), np.sqrt(T * (p * (1 - p)).sum())
    z = (s.sum() - mean) / std
    print(f"  {name:<17} {int(s.sum()):5d} spikes; expected T*sum(p) = {mean:7.1f} +- {std:4.1f}  (z = {z:+.2f})")
    assert abs(z) < 5
    per_step = s[:, 0, :].sum(axis=1).astype(int)
    print(f"  {'':<17} spikes per step: {per_step.tolist()}")
sub = bool(np.all(enc["poisson (200 Hz)"] <= enc["bernoulli"]))
print(f"  same seed -> same uniform draws u: Bernoulli spikes where u < x, Poisson where u < 0.2 x, so every "
      f"Poisson spike is also a Bernoulli spike: {sub}")
d = enc["direct"]
print(f"  {'direct':<17} no spikes: every step is the image itself, d[t] == x for all t: "
      f"{bool(np.all(d == x[None]))}; sum per step = {d[0].sum():.2f}")
lat = enc["latency"]
n_above = int((x > 0.1).sum())
print(f"  {'latency':<17} {int(lat.sum()):5d} spikes = pixels above threshold 0.1 ({n_above}); "
      f"max spikes per pixel = {int(lat.sum(axis=0).max())}")
assert int(lat.sum()) == n_above
first_step = lat[:, 0, :].argmax(axis=0)
print(f"  {'':<17} spikes per step: {lat[:, 0, :].sum(axis=1).astype(int).tolist()}")

# %% [markdown]
# ## Step 4 — a few individual pixels
#
# Follow four pixels (one white, one mid-grey, one faint, one black) through
# every encoder: their spike trains over the 20 steps, `|` = spike.

# %%
flat = x[0]
picks = {"white": int(np.flatnonzero(flat == 1.0)[0]),
         "mid-grey": int(np.argmin(np.abs(flat - 0.5))),
         "faint": int(np.argmin(np.where(flat > 0, np.abs(flat - 0.15), 9))),
         "black": int(np.flatnonzero(flat == 0)[0])}
print("\nStep 4: single pixels (| = spike, . = none)")
for label, j in picks.items():
    xj = float(flat[j])
    print(f"  pixel {j:3d} ({label}, row {j // 28}, col {j % 28}), x = {xj:.3f}")
    for name, pj in (("bernoulli", xj), ("poisson (200 Hz)", min(0.2 * xj, 1.0)), ("latency", None)):
        train = enc[name][:, 0, j]
        expect = f"(expected T*p = {T * pj:.1f})" if pj is not None else "(always exactly 1 if x > 0.1)"
        print(f"    {name:<17} {''.join('|' if v else '.' for v in train)}  {int(train.sum()):2d} spike(s) {expect}")
    if xj > 0.1:
        print(f"    {'':<17} latency step = round((1 - x)(T - 1)) = round({(1 - xj) * (T - 1):.2f}) = "
              f"{int(np.rint((1 - xj) * (T - 1)))}; observed {int(first_step[j])}")
    print(f"    {'direct':<17} {enc['direct'][0, 0, j]:.3f} at every step")
# one seed is one random draw: a single pixel can be far from its expectation
j = picks["mid-grey"]
counts = [int(bernoulli_encode(x, T, seed=k)[:, 0, j].sum()) for k in range(200)]
print(f"  mid-grey pixel {j}, Bernoulli over 200 seeds: mean {np.mean(counts):.2f} spikes "
      f"(expected {T * flat[j]:.2f}), min {min(counts)}, max {max(counts)}; seed {SEED} gave {counts[SEED]}")

# %% [markdown]
# ## Step 5 — the figure
#
# `viz.input_encodings` shows the image, then per encoder a raster (pixel
# index vs. time; the real-valued direct input as a grey-level image) and
# the number of spikes of each pixel, laid out like the image.

# %%
fig = viz.input_encodings(x[0], enc)
print("\nStep 5: wrote", viz.save(fig, FIG_DIR / "02_input_encodings.png"))
