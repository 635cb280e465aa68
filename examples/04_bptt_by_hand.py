# %% [markdown]
# # 04 — Backpropagation through time, by hand
#
# The smallest network that has everything: 2 inputs → 2 LIF neurons → 1
# non-spiking readout, `T = 3` steps, one sample, float64.
#
#     I[t] = W1 x[t]                                   (2,)   synapses fc1
#     u[t] = alpha v[t-1] + c I[t]                      (2,)   LIF, v[-1] = 0
#     s[t] = H(u[t] - v_th)                             (2,)
#     v[t] = u[t] (1 - s[t]) + v_reset s[t]             (2,)   hard reset
#     J[t] = W2 s[t]                                    (1,)   synapses fc2
#     o[t] = alpha o[t-1] + c J[t]                      (1,)   readout, o[-1] = 0
#     L    = (mean_t o[t] - y)^2                              (mse_rate loss)
#
# We compute every forward and backward intermediate with plain NumPy in
# this script, print them, and check the engine (`network.backward`)
# against them. Then we switch to the test-only *smooth* spike
# (`LIFParams(spike_fn="smooth", surrogate="sigmoid")`, where the forward
# spike is `sigmoid(k (u - v_th))` and its exact derivative is the
# surrogate) and check the engine against finite differences.
#
# Backward recurrences (derived below, step 4):
#
#     readout:  G[t]   = dL/do[t] + alpha G[t+1]           dL/dJ[t] = c G[t]
#     fc2:      dL/dW2 = sum_t dL/dJ[t] s[t]^T             dL/ds[t] = W2^T dL/dJ[t]
#     LIF:      gv[t]  = alpha * dL/du[t+1]                (dL/dv[t], the carry; 0 at t = T-1)
#               dL/du[t] = (dL/ds[t] + gv[t] (v_reset - u[t])) sigma'(u[t] - v_th) + gv[t] (1 - s[t])
#               dL/dI[t] = c dL/du[t]
#     fc1:      dL/dW1 = sum_t dL/dI[t] x[t]^T

# %%
import numpy as np

from _tutorial import FIG_DIR  # finds snn_core; the figure folder
from matplotlib.figure import Figure

from snn_core import LIF, LIFParams, Linear, Network, Readout, SparseLinear, mse_rate, surrogate_numpy, viz
from snn_core.kernels.reference import smooth_spike_numpy

np.set_printoptions(precision=5, suppress=True, floatmode="fixed")


def vec(a):
    return np.array2string(np.asarray(a, dtype=float), precision=5, floatmode="fixed", sign=" ")


# %% [markdown]
# ## Step 1 — the numbers
#
# Default neuron parameters: `tau_m = 2 dt` so `alpha = 0.5` and `c = 0.5`,
# `v_th = 1`, `v_reset = 0`, hard reset, and the rectangular surrogate
# `sigma'(x) = 1` for `|x| < 0.5`, else 0. The reset is *not* detached
# (`detach_reset=False`), so gradient also flows through `s` into `v`.

# %%
T = 3
x = np.array([[1.0, 1.0],
              [0.0, 1.0],
              [1.0, 0.0]])            # x[t] = input spikes at step t
W1 = np.array([[1.5, 0.8],
               [0.6, 1.2]])           # fc1: (n_out, n_in) = (2, 2)
W2 = np.array([[1.0, -0.5]])          # fc2: (1, 2)
y = 1.0                               # target mean readout
P = LIFParams()                       # heaviside spike, rectangular surrogate
print(f"Step 1: alpha = {P.alpha}, c = {P.c}, v_th = {P.v_th}, v_reset = {P.v_reset}, reset = {P.reset}, "
      f"surrogate = {P.surrogate} (width {P.surrogate_p}), detach_reset = {P.detach_reset}")
print(f"  x =\n{x}\n  W1 =\n{W1}\n  W2 = {W2}\n  target y = {y}")


# %% [markdown]
# ## Step 2 — forward pass by hand
#
# One loop over time; everything is kept for the backward pass.

# %%
def spike_fn(p):
    """Forward spike function and its (surrogate) derivative for parameters p."""
    if p.spike_fn == "smooth":
        fwd = lambda z: smooth_spike_numpy(z, p.surrogate, p.surrogate_p)  # noqa: E731
    else:
        fwd = lambda z: (z >= 0).astype(float)  # noqa: E731
    return fwd, lambda z: surrogate_numpy(p.surrogate, z, p.surrogate_p)


def forward_by_hand(W1, W2, p, verbose=False):
    H, _ = spike_fn(p)
    f = {k: np.zeros((T, 2)) for k in ("I", "u", "s", "v")}
    f["J"], f["o"] = np.zeros((T, 1)), np.zeros((T, 1))
    v, o = np.zeros(2), np.zeros(1)
    for t in range(T):
        I = W1 @ x[t]
        u = p.alpha * v + (1 - p.alpha) * p.v_rest + p.c * I
        s = H(u - p.v_th)
        v = u * (1 - s) + p.v_reset * s          # hard reset (smooth s: a smooth blend)
        J = W2 @ s
        o = p.alpha * o + p.c * J
        for k, val in zip(("I", "u", "s", "v", "J", "o"), (I, u, s, v, J, o)):
            f[k][t] = val
        if verbose:
            print(f"  t={t}: I = W1 x = {vec(I)}   u = {p.alpha}*v + {p.c}*I = {vec(u)}   s = {vec(s)}   "
                  f"v = {vec(v)}")
            print(f"       J = W2 s = {vec(J)}   o = {p.alpha}*o + {p.c}*J = {vec(o)}")
    mean_o = f["o"].mean()
    f["L"] = (mean_o - y) ** 2
    if verbose:
        print(f"  mean_t o = {mean_o:.5f};  L = (mean_t o - y)^2 = ({mean_o:.5f} - {y})^2 = {f['L']:.6f}")
    return f


print("\nStep 2: forward pass by hand")
fwd = forward_by_hand(W1, W2, P, verbose=True)


# %% [markdown]
# ## Step 3 — backward pass by hand
#
# Walk backwards through time. Two carries run from `t+1` to `t`:
# `G` for the readout (its membrane leaks into the next step) and `gv`,
# the gradient that reaches the LIF post-reset membrane `v[t]` because
# `u[t+1] = alpha v[t] + ...`.
#
# Where each term of `dL/du` comes from (hard reset `v = u (1 - s) + v_reset s`):
#
# - `dL/ds[t] * sigma'`: the spike went to fc2 (and so to the loss);
# - `gv * (v_reset - u) * sigma'`: the spike also reset the membrane (`dv/ds = v_reset - u`);
# - `gv * (1 - s)`: the membrane carries on to the next step unless it was reset (`dv/du = 1 - s`).

# %%
def backward_by_hand(f, W2, p, verbose=False):
    _, dH = spike_fn(p)
    b = {}
    dL_do = np.full((T, 1), 2 * (f["o"].mean() - y) / T)   # d/do[t] of (mean_t o - y)^2
    G, carry = np.zeros((T, 1)), np.zeros(1)
    for t in reversed(range(T)):                             # readout: leaky integrator
        carry = dL_do[t] + p.alpha * carry
        G[t] = carry
    dL_dJ = p.c * G
    dW2 = sum(np.outer(dL_dJ[t], f["s"][t]) for t in range(T))
    dL_ds = dL_dJ @ W2                                       # (T, 2): W2^T dL/dJ[t] per step
    if verbose:
        print(f"  dL/do[t] = 2 (mean o - y) / T = {dL_do[0, 0]:.5f} at every t")
        for t in range(T):
            print(f"  t={t}: readout carry G = dL/do[t] + alpha G[t+1] = {G[t, 0]: .5f}   dL/dJ = c G = "
                  f"{dL_dJ[t, 0]: .5f}   dL/ds = W2^T dL/dJ = {vec(dL_ds[t])}")
        print(f"  dL/dW2 = sum_t dL/dJ[t] s[t]^T = {vec(dW2[0])}")
    gv = np.zeros(2)  # dL/dv[T-1] = 0: nothing after the last step
    sig = dH(f["u"] - p.v_th)
    b["gu"], b["gI"], b["gv"] = np.zeros((T, 2)), np.zeros((T, 2)), np.zeros((T, 2))
    for t in reversed(range(T)):
        u, s = f["u"][t], f["s"][t]
        reset_path = 0.0 if p.detach_reset else gv * (p.v_reset - u)
        gs_tot = dL_ds[t] + reset_path                       # spike -> readout, and spike -> reset
        gu = gs_tot * sig[t] + gv * (1 - s)
        b["gv"][t], b["gu"][t], b["gI"][t] = gv, gu, p.c * gu
        if verbose:
            print(f"  t={t}: dL/dv carry = {vec(gv)}   sigma'(u - v_th) = {vec(sig[t])}\n"
                  f"       dL/ds total = dL/ds + carry*(v_reset - u) = {vec(gs_tot)}\n"
                  f"       dL/du = dL/ds total * sigma' + carry*(1 - s) = {vec(gu)}   "
                  f"dL/dI = c dL/du = {vec(p.c * gu)}")
        gv = p.alpha * gu                                     # u[t] = alpha v[t-1] + ...
    dW1 = sum(np.outer(b["gI"][t], x[t]) for t in range(T))
    if verbose:
        print(f"  dL/dW1 = sum_t dL/dI[t] x[t]^T =\n{dW1}")
    b["dW1"], b["dW2"] = dW1, dW2
    return b


print("\nStep 3: backward pass by hand")
bwd = backward_by_hand(fwd, W2, P, verbose=True)


# %% [markdown]
# ## Step 4 — the engine does the same
#
# Build the network from `snn_core` layers (dense `Linear` synapses without
# bias, float64), run `forward(record=True)` and compare every recorded
# array; compute the loss with `mse_rate` and call `network.backward`.
# The gradient arrays sit in `layer.weight_param.grad`.

# %%
def build(p, sparse=False):
    def syn(n_in, n_out, w, name):
        cls = SparseLinear if sparse else Linear  # SparseLinear stores the same weights as CSR
        return cls(n_in, n_out, bias=False, weight=w, dtype=np.float64, name=name)

    return Network([syn(2, 2, W1, "fc1"), LIF(2, p, dtype=np.float64, name="lif"),
                    syn(2, 1, W2, "fc2"), Readout(1, p, dtype=np.float64, name="readout")])


def engine(p, sparse=False):
    net = build(p, sparse)
    out = net.forward(x[:, None, :], record=True)      # (T, batch=1, 2) -> (T, 1, 1)
    loss, grad = mse_rate(out, np.array([0]), on=y)     # one class; its target rate is y
    net.zero_grad()
    net.backward(grad)
    return net, out, loss, grad


print("\nStep 4: the engine")
net, out, loss, grad = engine(P)
rec = net.recorded
I_engine = net.layers[0].forward(x[:, None, :])[:, 0]  # synaptic layers record nothing: rerun fc1 alone
assert np.allclose(I_engine, fwd["I"], rtol=1e-12)
print(f"  OK forward I (fc1 output) engine == hand: {vec(I_engine.ravel())}")

checks = [("u", rec["lif"]["u"][:, 0], fwd["u"]),
          ("s", rec["lif"]["spikes"][:, 0], fwd["s"]), ("v", rec["lif"]["v"][:, 0], fwd["v"]),
          ("o (readout)", out[:, 0], fwd["o"])]
for name, got, want in checks:
    assert np.allclose(got, want, rtol=1e-12, atol=1e-12), name
    print(f"  OK forward {name:<14} engine == hand: {vec(got.ravel())}")
assert np.isclose(loss, fwd["L"], rtol=1e-12)
print(f"  OK loss: mse_rate = {loss:.6f} == hand {fwd['L']:.6f}")
assert np.allclose(grad[:, 0, 0], 2 * (fwd["o"].mean() - y) / T)
print(f"  OK dL/do from mse_rate: {vec(grad[:, 0, 0])}")
g1, g2 = net.layers[0].weight_param.grad, net.layers[2].weight_param.grad
assert np.allclose(g1, bwd["dW1"], rtol=1e-12, atol=1e-14)
assert np.allclose(g2, bwd["dW2"], rtol=1e-12, atol=1e-14)
print(f"  OK dL/dW1 engine == hand: {vec(g1.ravel())}")
print(f"  OK dL/dW2 engine == hand: {vec(g2.ravel())}")

# the same network with CSR synapses: gradients only at the stored connections (here all 4 / 2)
snet, *_ = engine(P, sparse=True)
s1 = snet.layers[0]
dense_g1 = np.zeros((2, 2))
dense_g1[np.repeat(np.arange(2), np.diff(s1.weight.indptr)), s1.weight.indices] = s1.weight_param.grad
assert np.allclose(dense_g1, bwd["dW1"], rtol=1e-12, atol=1e-14)
print("  OK SparseLinear (CSR) synapses give the same dL/dW1 (weight_param.grad is aligned with weight.data)")

# what the reset path contributes: detach it and the gradient changes
P_det = LIFParams(detach_reset=True)
net_d, *_ = engine(P_det)
bwd_d = backward_by_hand(forward_by_hand(W1, W2, P_det), W2, P_det)
assert np.allclose(net_d.layers[0].weight_param.grad, bwd_d["dW1"], rtol=1e-12, atol=1e-14)
print(f"  OK detach_reset=True (drop the carry*(v_reset - u) term): dL/dW1 = {vec(bwd_d['dW1'].ravel())} "
      f"(engine == hand)")

# %% [markdown]
# ## Step 5 — finite differences need a smooth spike
#
# With the Heaviside spike the loss is piecewise constant in the weights:
# finite differences give 0 (or a jump), never the surrogate gradient. The
# test-only mode `spike_fn="smooth"` replaces the forward spike by a smooth
# function whose exact derivative *is* the surrogate (for `sigmoid`:
# `s = sigmoid(k (u - v_th))`, `k = 4`). Then the backward pass computes the
# true gradient of the forward pass, and central differences
# `(L(w + eps) - L(w - eps)) / (2 eps)` must agree to ~1e-9.

# %%
print("\nStep 5: smooth spike (spike_fn='smooth', surrogate='sigmoid'), finite differences")
PS = LIFParams(spike_fn="smooth", surrogate="sigmoid")
fwd_s = forward_by_hand(W1, W2, PS, verbose=True)
bwd_s = backward_by_hand(fwd_s, W2, PS)
net_s, out_s, loss_s, _ = engine(PS)
assert np.isclose(loss_s, fwd_s["L"], rtol=1e-12)
assert np.allclose(net_s.layers[0].weight_param.grad, bwd_s["dW1"], rtol=1e-12, atol=1e-14)
assert np.allclose(net_s.layers[2].weight_param.grad, bwd_s["dW2"], rtol=1e-12, atol=1e-14)
print("  OK smooth mode: engine forward and gradients == hand computation")

# a Heaviside network's loss does not move under a small weight change
net_h = build(P)
base = mse_rate(net_h.forward(x[:, None, :]), np.array([0]), on=y)[0]
net_h.layers[0].weight_param.value[0, 0] += 1e-6
bumped = mse_rate(net_h.forward(x[:, None, :]), np.array([0]), on=y)[0]
print(f"  (Heaviside: L(W1[0,0] + 1e-6) - L = {bumped - base:.1e}: no finite-difference signal, "
      f"while the surrogate gradient is {bwd['dW1'][0, 0]:+.5f})")

EPS = 1e-6
rows = []
for li, name in ((0, "W1"), (2, "W2")):
    wv = net_s.layers[li].weight_param.value
    g_engine = net_s.layers[li].weight_param.grad
    for idx in np.ndindex(wv.shape):
        probe = build(PS)
        wp = probe.layers[li].weight_param.value
        w0 = wp[idx]
        wp[idx] = w0 + EPS
        lp = mse_rate(probe.forward(x[:, None, :]), np.array([0]), on=y)[0]
        wp[idx] = w0 - EPS
        lm = mse_rate(probe.forward(x[:, None, :]), np.array([0]), on=y)[0]
        fd = (lp - lm) / (2 * EPS)
        g = g_engine[idx]
        rel = abs(fd - g) / max(abs(fd), abs(g), 1e-30)
        rows.append((f"{name}{list(idx)}", g, fd, rel))
print(f"  {'weight':<10} {'backward':>13} {'finite diff':>13} {'rel. error':>11}")
for nm, g, fd, rel in rows:
    print(f"  {nm:<10} {g:+13.8f} {fd:+13.8f} {rel:11.2e}")
worst = max(r[3] for r in rows)
assert worst < 1e-6, worst
print(f"  OK finite differences agree with network.backward: max relative error {worst:.1e} < 1e-6")

# %% [markdown]
# ## Step 6 — a picture of the unrolled computation
#
# Forward values (top) and backward gradients `dL/du` (bottom) of the two
# LIF neurons at each step, Heaviside case: the gradient flows only where
# the surrogate window is open (`|u - v_th| < 0.5`) or the carry continues.

# %%
fig = Figure(figsize=(9.5, 5.2), layout="constrained")
ax1, ax2 = fig.subplots(2, 1, sharex=True)
ts = np.arange(T)
for n, col in zip(range(2), viz.OKABE_ITO):
    ax1.plot(ts, fwd["u"][:, n], marker="o", linestyle=":", color=col, label=f"u, LIF neuron {n}")
    spk = fwd["s"][:, n] > 0
    ax1.plot(ts[spk], fwd["u"][spk, n], linestyle="none", marker="*", markersize=14, color=col,
             markeredgecolor="black", label=f"spike of neuron {n}")
    ax2.bar(ts + (n - 0.5) * 0.35, bwd["gu"][:, n], width=0.33, color=col, label=f"dL/du, neuron {n}")
ax1.plot(ts, fwd["o"][:, 0], marker="s", linestyle=":", color="black", label="readout o")
ax1.axhline(P.v_th, color=viz.OKABE_ITO[3], linestyle="--", linewidth=1, label="v_th")
ax1.axhspan(P.v_th - 0.5, P.v_th + 0.5, color="0.9", zorder=0, label="surrogate window |u - v_th| < 0.5")
ax1.set_ylabel("membrane (a.u.)")
ax1.set_title("forward: membranes u[t] (before reset) and the readout", fontsize=10)
ax1.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
ax2.axhline(0, color="0.5", linewidth=0.8)
ax2.set_ylabel("dL/du[t]")
ax2.set_xlabel("time step t")
ax2.set_xticks(ts)
ax2.set_title("backward: gradient reaching each membrane (computed by hand == engine)", fontsize=10)
ax2.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
fig.suptitle("BPTT on 2 inputs -> 2 LIF -> 1 readout, T = 3")
print("\nStep 6: wrote", viz.save(fig, FIG_DIR / "04_bptt_unrolled.png"))

# %% [markdown]
# ## Step 7 — step into the engine's own backward
#
# The engine runs on a *backend* (see docs/design.md, "Backends"). The
# `reference` backend is plain NumPy, written to be read:
# `snn_core/kernels/reference.py` holds `lif_forward` and, right below it,
# `lif_backward`, the recurrence of step 3 line by line. Its `trace` hook
# is called at every step of that recurrence with the local carries, so we
# can print them (or put a `breakpoint()` in the hook) while the engine runs.
#
# First the toy network of step 4, moved to the reference backend with
# `net.to("reference")`: the carries the engine prints are the ones we
# computed by hand. Then a real training run (`Trainer` with
# `device="reference"`) on a few MNIST images: we print the carries of the
# first iteration's LIF backward, and the run trains exactly like `cpu`.

# %%
from snn_core.backends import get_backend  # noqa: E402
from snn_core.config import TrainConfig  # noqa: E402
from snn_core.training import Trainer  # noqa: E402

print("\nStep 7: the reference backend's LIF backward, traced")
ref = get_backend("reference")
seen = {}


def show_carries(t, gv, gs_tot, sg, gu, gI):
    """Called by kernels.reference.lif_backward at every step t (arrays (neurons, batch))."""
    seen[t] = gu[:, 0].copy()
    print(f"  t={t}: carry gv = dL/dv[t] = {vec(gv[:, 0])}   dL/ds total = {vec(gs_tot[:, 0])}   "
          f"dL/du[t] = {vec(gu[:, 0])}")


ref.trace = show_carries
net_r = build(P).to("reference")
out_r = net_r.forward(x[:, None, :])
net_r.zero_grad()
net_r.backward(mse_rate(out_r, np.array([0]), on=y)[1])
for t in range(T):
    assert np.allclose(seen[t], bwd["gu"][t], rtol=1e-12, atol=1e-14), t
print("  OK the reference backend's carries == the hand computation of step 3")

calls = []


def first_iteration_only(**carries):
    if len(calls) < cfg["steps"]:  # the first LIF backward of the run: T steps, last to first
        calls.append(carries["t"])
        g = carries["gu"]
        print(f"  iteration 1, t={carries['t']}: mean |dL/du| = {np.abs(g).mean():.2e} over "
              f"{g.shape[0]} neurons x {g.shape[1]} samples, mean |carry gv| = {np.abs(carries['gv']).mean():.2e}")


ref.trace = first_iteration_only
cfg = dict(hidden=[32], max_train=100, batch_size=20, steps=5, epochs=1, t_iter=1, quiet=True, seed=1,
           val_fraction=0.2, out_dir=str(FIG_DIR))
run_ref = Trainer(TrainConfig(device="reference", **cfg))
run_ref.fit(checkpoint_dir=False)
ref.trace = None
run_cpu = Trainer(TrainConfig(device="cpu", **cfg))
run_cpu.fit(checkpoint_dir=False)
loss_ref, loss_cpu = run_ref.metrics["train_loss"][0], run_cpu.metrics["train_loss"][0]
assert calls == list(range(cfg["steps"]))[::-1] and np.isclose(loss_ref, loss_cpu, rtol=1e-4)
assert run_ref.rewirer.n_events == run_cpu.rewirer.n_events > 0
print(f"  OK a real run on the reference backend: train loss {loss_ref:.5f} (cpu: {loss_cpu:.5f}), "
      f"{run_ref.rewirer.n_events} rewiring events")
