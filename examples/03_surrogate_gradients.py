# %% [markdown]
# # 03 — Surrogate gradients
#
# A spike is a step function of the membrane: `s = H(u - v_th)`. Its
# derivative is 0 everywhere except at the threshold, where it is infinite
# (a Dirac delta). Gradient descent through `H` therefore gets *no signal*:
# a small change of a weight almost never changes any spike, so `dL/dw = 0`.
#
# Surrogate-gradient training keeps `H` in the forward pass but uses a
# smooth bump `sigma'(x)` (the *surrogate*, `x = u - v_th`) in place of
# `dH/dx` in the backward pass. This tutorial
#
# 1. shows numerically that the spike count is a staircase in the weight;
# 2. tabulates the five surrogates of `snn_core` and draws them;
# 3. trains a one-neuron, one-weight "network" with SGD: with a surrogate the
#    gradient is non-zero and pushes the weight up until the neuron fires;
#    we check the engine's gradient against a closed form.
#
# Figures: `examples/figures/03_*.png`.

# %%
import numpy as np

from _tutorial import FAST, FIG_DIR  # finds snn_core; the figure folder
from matplotlib.figure import Figure

from snn_core import LIF, SURROGATES, LIFParams, Linear, Network, surrogate_numpy, viz


# %% [markdown]
# ## Step 1 — the Heaviside step has no useful derivative
#
# Finite differences of `H(x)` with step `h` are 0, except in the one
# interval that straddles the threshold, where they are `1/h` (→ ∞ as
# `h → 0`).
#
# In a network the same happens one level up. Take one LIF neuron (defaults:
# `alpha = 0.5`, `c = 0.5`, `v_th = 1`) driven through one weight `w` by an
# input that spikes at every step, `T = 10`. Its membrane approaches `w`
# (`u[t] = w (1 - 0.5^(t+1))`), so it is silent for `w < 1` and fires more
# as `w` grows — but the spike count only changes in jumps.

# %%
h = 1e-3
print("Step 1: finite differences (H(x + h) - H(x)) / h of the Heaviside step, h = 1e-3")
for x0 in (-0.5, -0.1, -0.0005, 0.0, 0.3):
    fd = ((x0 + h >= 0) - (x0 >= 0)) / h
    print(f"  x = {x0:+8.4f}: {fd:8.1f}")

T = 10
X_IN = np.ones((T, 1, 1))  # one input neuron spiking at every step, shape (T, batch, 1)


def one_neuron(w, params):
    """A 1 -> 1 network: Linear synapse with weight w, then one LIF neuron (float64)."""
    return Network([Linear(1, 1, bias=False, weight=[[w]], dtype=np.float64, name="syn"),
                    LIF(1, params, dtype=np.float64, name="lif")])


def spike_count(w, params=LIFParams()):
    return int(one_neuron(w, params).forward(X_IN).sum())


ws = np.round(np.arange(0.8, 2.01, 0.1), 2)
print(f"\n  spike count of the neuron over T = {T} steps as a function of w:")
print("   w     " + " ".join(f"{w:4.1f}" for w in ws))
print("   count " + " ".join(f"{spike_count(w):4d}" for w in ws))
c_hi, c_lo = spike_count(1.5 + 1e-4), spike_count(1.5)
print(f"  d(count)/dw by finite differences at w = 1.5: ({c_hi} - {c_lo}) / 1e-4 = {(c_hi - c_lo) / 1e-4}")

# %% [markdown]
# ## Step 2 — five surrogates
#
# `snn_core.surrogate.SURROGATES` maps each name to its kernel code and its
# default width/slope. All but `fast_sigmoid` integrate to 1 (like the delta
# they replace); `fast_sigmoid` integrates to `2/k`.
#
# | name | sigma'(x) | default |
# |---|---|---|
# | rectangular | `(1/a) 1[|x| < a/2]` | a = 1 |
# | triangle | `max(0, 1/g - |x|/g^2)` | g = 1 |
# | sigmoid | `k sig(kx)(1 - sig(kx))` | k = 4 |
# | arctan | `(alpha/2) / (1 + (pi/2 alpha x)^2)` | alpha = 2 |
# | fast_sigmoid | `1 / (1 + k|x|)^2` | k = 25 |

# %%
trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 calls it trapz
xs = np.array([-1.0, -0.7, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0])
grid = np.linspace(-200, 200, 2_000_001)
print("\nStep 2: sigma'(x) at a few distances x = u - v_th from the threshold")
print(f"  {'surrogate':<13} {'param':>5} | " + " ".join(f"{x:+6.2f}" for x in xs) + " | integral")
for name, (_, param) in SURROGATES.items():
    vals = surrogate_numpy(name, xs)
    integral = trapezoid(surrogate_numpy(name, grid), grid)
    print(f"  {name:<13} {param:5g} | " + " ".join(f"{v:6.3f}" for v in vals) + f" | {integral:.3f}")
print("  (the arctan tails decay like 1/x^2, so its integral over [-200, 200] is just below 1;"
      " fast_sigmoid: 2/k = 0.08)")
fig = viz.surrogate_curves()
print("  wrote", viz.save(fig, FIG_DIR / "03_surrogate_curves.png"))

# %% [markdown]
# ## Step 3 — a gradient where there was none
#
# Goal: make the neuron fire `target = 3` spikes in `T = 10` steps. Loss
# `L = 0.5 (count - target)^2` with `count = sum_t s[t]`, so
# `dL/ds[t] = count - target` at every step.
#
# We start at `w = 0.3`: the membrane never gets above 0.3, far from the
# threshold, and the neuron is silent. With the true derivative of `H`,
# `dL/dw = 0` and nothing would ever change.
#
# We use `detach_reset=True` (the reset is treated as a constant in the
# backward pass, an option of `LIFParams`), so that while the neuron is
# silent the gradient has a short closed form (tutorial 04 does full BPTT):
#
#     du[t]/dw = u[t] / w                           (u[t] = w (1 - alpha^(t+1)))
#     dL/dw    = (count - target) * sum_t sigma'(u[t] - v_th) * u[t] / w
#
# The rectangular surrogate (non-zero only for `|u - v_th| < 0.5`) still
# gives exactly 0 here — a "dead" neuron — whereas surrogates with wider
# support give a gradient.

# %%
TARGET, W0 = 3, 0.3


def loss_and_grad(w, params):
    """Forward, loss, engine backward: (loss, dL/dw, count, recorded u)."""
    net = one_neuron(w, params)
    s = net.forward(X_IN, record=True)
    count = s.sum()
    loss = 0.5 * (count - TARGET) ** 2
    net.zero_grad()
    net.backward(np.full_like(s, count - TARGET))  # dL/ds[t] for every t
    return loss, float(net.layers[0].weight_param.grad[0, 0]), int(count), net.recorded["lif"]["u"][:, 0, 0].copy()


print(f"\nStep 3: w = {W0}, target {TARGET} spikes; gradient dL/dw from network.backward with each surrogate")
for name in SURROGATES:
    p = LIFParams(surrogate=name, detach_reset=True)
    loss, g, count, u = loss_and_grad(W0, p)
    closed = (count - TARGET) * np.sum(surrogate_numpy(name, u - p.v_th) * u / W0) + 0.0  # + 0.0: no "-0.0"
    assert np.isclose(g, closed, rtol=1e-10, atol=1e-14), (name, g, closed)
    print(f"  {name:<13} count {count}, max u {u.max():.3f}, dL/dw = {g:+9.5f}   "
          f"closed form {closed:+9.5f}  OK")

# %% [markdown]
# ## Step 4 — a few SGD steps
#
# `w <- w - lr * dL/dw` with `lr = 0.02` and the arctan surrogate. Each step
# raises `w`, the membrane climbs towards the threshold, and after a few
# steps the neuron fires. Once `count == target` the loss and its gradient
# are 0 and SGD stops moving.

# %%
LR, SUR = 0.02, "arctan"
p = LIFParams(surrogate=SUR, detach_reset=True)
w = W0
path = []  # (w, count, u) per SGD step
print(f"\nStep 4: SGD, lr = {LR}, surrogate {SUR}")
print(f"  {'step':>4} {'w':>8} {'max u':>7} {'spikes':>6} {'loss':>6} {'dL/dw':>9}   spike train")
for step in range(8):
    loss, g, count, u = loss_and_grad(w, p)
    path.append((w, count, u))
    train = "".join("|" if v >= p.v_th else "." for v in u)
    print(f"  {step:4d} {w:8.4f} {u.max():7.3f} {count:6d} {loss:6.1f} {g:+9.4f}   {train}")
    if loss == 0:
        break
    w = w - LR * g
first_fire = next(k for k, (_, c, _) in enumerate(path) if c > 0)
print(f"  the neuron first fires at SGD step {first_fire} (w = {path[first_fire][0]:.4f}); "
      f"target reached at step {len(path) - 1}")

print("\n  same start, lr = 0.02, steps until count == 3 for every surrogate (max 40):")
for name in SURROGATES:
    q, wk, n = LIFParams(surrogate=name, detach_reset=True), W0, None
    for k in range(40):
        loss, g, _, _ = loss_and_grad(wk, q)
        if loss == 0:
            n = k
            break
        wk -= LR * g
    print(f"  {name:<13} {'never (gradient ' + format(g, '.2g') + ')' if n is None else str(n) + ' steps'}"
          f"   final w = {wk:.4f}")

# %% [markdown]
# ## Step 5 — figures
#
# The membrane over the 10 time steps at each SGD step (each panel is one
# SGD step), and the staircase of the spike count with the SGD path on it.

# %%
u_steps = np.stack([u for _, _, u in path], axis=1)  # (T, n_steps): one "neuron" per SGD step
show = sorted({0, max(first_fire - 1, 0), first_fire, len(path) - 1})
fig = viz.membrane_traces(u_steps, v_th=p.v_th, v_reset=p.v_reset, neurons=show)
for ax, k in zip(fig.axes, show):
    wk, ck, _ = path[k]
    ax.set_title(f"SGD step {k}: w = {wk:.3f}, {ck} spike{'s' if ck != 1 else ''}", fontsize=10, loc="left")
fig.suptitle(f"One neuron during SGD (surrogate {SUR}, lr = {LR}, target {TARGET} spikes in T = {T} steps)",
             fontsize=11)
print("\nStep 5: wrote", viz.save(fig, FIG_DIR / "03_sgd_membrane.png"))

w_grid = np.linspace(0.0, 2.0, 101 if FAST else 401)  # FAST (test) mode: a coarser staircase
counts = np.array([spike_count(wv, p) for wv in w_grid])
fig = Figure(figsize=(7.0, 4.0), layout="constrained")
ax = fig.add_subplot()
ax.step(w_grid, counts, where="post", color="black", label="spike count (forward pass, Heaviside)")
ax.axhline(TARGET, color=viz.OKABE_ITO[3], linestyle="--", label=f"target = {TARGET}")
pw = [wk for wk, _, _ in path]
pc = [ck for _, ck, _ in path]
ax.plot(pw, pc, marker="o", linestyle="none", color=viz.OKABE_ITO[0], label="SGD iterates (step 0, 1, ...)")
for k, (wk, ck) in enumerate(zip(pw, pc)):
    ax.annotate(str(k), (wk, ck), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
ax.set_xlabel("weight w")
ax.set_ylabel(f"spikes in T = {T} steps")
ax.set_title("The spike count is a staircase in w: zero derivative almost everywhere.\n"
             "Yet the surrogate gradient pushes w towards firing while the neuron is still silent.", fontsize=10)
ax.legend(fontsize=8, loc="upper left")
ax.grid(alpha=0.3)
print("  wrote", viz.save(fig, FIG_DIR / "03_count_staircase.png"))
