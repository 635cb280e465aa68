# %% [markdown]
# # 01 — The LIF neuron, one Euler step at a time
#
# A leaky integrate-and-fire (LIF) neuron is a leaky capacitor with a
# threshold. Its membrane potential `v` obeys
#
# $$
# \tau_m \frac{dv}{dt} = -(v - v_{rest}) + R\, I(t)
# $$
#
# `snn_core` integrates this with **one explicit Euler step of size `dt`**
# per time step:
#
# $$
# \begin{array}{rcll}
# u[t] &=& v[t-1] + \frac{dt}{\tau_m}\big(-(v[t-1] - v_{rest}) + R\, I[t]\big) &\\
#      &=& \alpha\, v[t-1] + (1 - \alpha)\, v_{rest} + c\, I[t], & \alpha = 1 - dt/\tau_m \text{ (per-step decay)},\ c = R\, dt/\tau_m \text{ (input gain per step)}\\
# s[t] &=& H(u[t] - v_{th}) & \text{spike: 1 if } u \text{ reaches the threshold}\\
# v[t] &=& \operatorname{reset}(u[t], s[t]) & \text{hard, soft or no reset}
# \end{array}
# $$
#
# `u` is the membrane *before* the reset (what the threshold sees), `v` the
# membrane *after* it (where the next step starts). This tutorial
#
# 1. computes `alpha` and `c` for a few `dt`, `tau_m`;
# 2. drives one neuron with a constant current and prints `u, s, v` at every
#    step for the three reset modes;
# 3. redoes the same steps by hand and checks `lif_step` and the compiled
#    `LIF` layer against them;
# 4. compares the Euler membrane with the closed form (of the Euler
#    recurrence and of the continuous ODE);
# 5. draws the membrane traces (`examples/figures/01_*.png`).
#
# Run: `PYTHONPATH=. python examples/01_lif_neuron.py` (or open it as a notebook).

# %%
import numpy as np

from _tutorial import FIG_DIR  # finds snn_core; the figure folder
from matplotlib.figure import Figure

from snn_core import LIF, LIFParams, lif_step, viz

np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## Step 1 — `dt`, `tau_m` and the per-step decay `alpha`
#
# `alpha = 1 - dt/tau_m` is how much of the membrane survives one step
# without input. The library default is `tau_m = 2 dt`, i.e. `alpha = 0.5`.
# Explicit Euler is only stable (and non-oscillating) for `dt <= tau_m`;
# `LIFParams` rejects larger steps.

# %%
print("Step 1: per-step decay alpha = 1 - dt/tau_m and input gain c = R dt/tau_m (R = 1)")
print(f"  {'dt':>5} {'tau_m':>6} {'alpha':>7} {'c':>7}   exact decay exp(-dt/tau_m)")
for dt, tau_m in [(1.0, 1.0), (1.0, 2.0), (1.0, 4.0), (1.0, 10.0), (0.25, 4.0)]:
    p = LIFParams(tau_m=tau_m, dt=dt)
    print(f"  {dt:5.2f} {tau_m:6.1f} {p.alpha:7.4f} {p.c:7.4f}   {np.exp(-dt / tau_m):.4f}")
print(f"  library default: {LIFParams()}")
try:
    LIFParams(tau_m=1.0, dt=2.0)
except ValueError as e:
    print(f"  dt > tau_m is rejected: ValueError: {e}")

# %% [markdown]
# ## Step 2 — a constant current, step by step
#
# We take `tau_m = 4, dt = 1` (so `alpha = 0.75`, `c = 0.25`), `v_th = 1`,
# `v_rest = v_reset = 0` and a constant input current `I = 1.3`. Without a
# threshold the membrane would settle at `v_inf = v_rest + R I = 1.3`, above
# the threshold, so the neuron fires regularly. The three reset modes differ
# only after a spike:
#
# - **hard**: `v = v_reset` (here 0) — the membrane forgets everything;
# - **soft**: `v = u - v_th` — the overshoot above threshold is kept;
# - **none**: `v = u` — no reset; once above threshold it spikes every step.

# %%
T, I_CONST = 16, 1.3
MODES = ("hard", "soft", "none")
params = {m: LIFParams(tau_m=4.0, dt=1.0, reset=m) for m in MODES}
p = params["hard"]
print(f"\nStep 2: alpha = {p.alpha}, c = {p.c}, v_th = {p.v_th}, I = {I_CONST} at every step, v[-1] = 0")
print(f"  first step by hand: u[0] = alpha*v[-1] + c*I = {p.alpha}*0 + {p.c}*{I_CONST} = {p.c * I_CONST:.4f}"
      f" < v_th, so s[0] = 0 and v[0] = u[0]")

trace = {}  # mode -> (u, s, v), each (T,)
for mode in MODES:
    v = np.zeros((1, 1))
    rows = []
    for t in range(T):
        u, s, v = lif_step(v, np.full((1, 1), I_CONST), params[mode])
        rows.append((u[0, 0], s[0, 0], v[0, 0]))
    trace[mode] = tuple(np.array(col) for col in zip(*rows))

print(f"\n  {'t':>3} | " + " | ".join(f"{m + ': u':>8} {'s':>2} {'v':>7}" for m in MODES))
for t in range(T):
    cells = [f"{trace[m][0][t]:8.4f} {int(trace[m][1][t]):2d} {trace[m][2][t]:7.4f}" for m in MODES]
    print(f"  {t:3d} | " + " | ".join(cells))
for m in MODES:
    print(f"  {m:>4} reset: {int(trace[m][1].sum())} spikes, at steps {np.flatnonzero(trace[m][1]).tolist()}")

# %% [markdown]
# ## Step 3 — the same numbers by hand, and from the compiled layer
#
# The update is three lines of arithmetic. We redo it with plain Python
# floats and compare; then we run the compiled `LIF` layer (the one the
# networks use, a Numba kernel over all `T` steps at once) with
# `record=True`, which keeps `u`, `v` and the spikes.

# %%
print("\nStep 3: hand computation vs lif_step vs the compiled LIF layer")
for mode in MODES:
    q = params[mode]
    v, hand = 0.0, []
    for t in range(T):
        u = q.alpha * v + (1 - q.alpha) * q.v_rest + q.c * I_CONST
        s = 1.0 if u >= q.v_th else 0.0
        if mode == "hard":
            v = u * (1 - s) + q.v_reset * s
        elif mode == "soft":
            v = u - q.v_th * s
        else:
            v = u
        hand.append((u, s, v))
    hand = tuple(np.array(col) for col in zip(*hand))
    for name, a, b in zip("usv", hand, trace[mode]):
        assert np.allclose(a, b, atol=1e-12), (mode, name)
    print(f"  OK {mode:>4} reset: hand-computed u, s, v == lif_step for all {T} steps")

# The layer takes currents shaped (T, batch, neurons); one neuron per reset mode
# would need three layers (the reset is a layer parameter), so run each separately.
layer_rec = {}
for mode in MODES:
    layer = LIF(1, params[mode], dtype=np.float64)
    spikes = layer.forward(np.full((T, 1, 1), I_CONST), record=True)
    rec = layer.recorded
    layer_rec[mode] = rec
    assert np.allclose(rec["u"][:, 0, 0], trace[mode][0])
    assert np.allclose(rec["v"][:, 0, 0], trace[mode][2])
    assert np.array_equal(spikes[:, 0, 0], trace[mode][1])
    print(f"  OK {mode:>4} reset: LIF layer recorded u, v, spikes == lif_step "
          f"(recorded arrays have shape (T, batch, n) = {rec['u'].shape})")

# %% [markdown]
# ## Step 4 — closed forms
#
# Until the first spike the recurrence `u[t] = alpha u[t-1] + c I` is a
# geometric series, so with `v[-1] = v_rest = 0`
#
#     u[t] = v_inf * (1 - alpha^(t+1)),   v_inf = R I
#
# (step `t` is the `(t+1)`-th Euler step). The first spike is at the first
# `t` with `u[t] >= v_th`:  `t + 1 >= ln(1 - v_th/v_inf) / ln(alpha)`.
#
# The *continuous* ODE has `v(t) = v_inf (1 - exp(-t/tau_m))` and first
# reaches threshold at `t* = tau_m ln(v_inf / (v_inf - v_th))`. Euler with
# `dt = 1` decays by `0.75` per step instead of `exp(-0.25) = 0.7788`, so it
# charges a bit faster; a smaller `dt` brings it closer.

# %%
print("\nStep 4: closed form of the Euler recurrence (before the first spike)")
v_inf = p.R * I_CONST
k = np.arange(T)
closed = v_inf * (1 - p.alpha ** (k + 1))
first = int(np.flatnonzero(trace["hard"][1])[0])
print(f"  {'t':>3} {'Euler u[t]':>11} {'v_inf(1-alpha^(t+1))':>21} {'ODE v((t+1) dt)':>16}")
for t in range(first + 1):
    ode = v_inf * (1 - np.exp(-(t + 1) * p.dt / p.tau_m))
    print(f"  {t:3d} {trace['hard'][0][t]:11.4f} {closed[t]:21.4f} {ode:16.4f}")
assert np.allclose(trace["hard"][0][: first + 1], closed[: first + 1])
n_steps = np.log(1 - p.v_th / v_inf) / np.log(p.alpha)
t_star = p.tau_m * np.log(v_inf / (v_inf - p.v_th))
print(f"  OK Euler matches its closed form; predicted first spike: t + 1 >= {n_steps:.3f} "
      f"-> step t = {int(np.ceil(n_steps)) - 1} (observed {first})")
print(f"  continuous ODE reaches threshold at t* = tau_m ln(v_inf/(v_inf - v_th)) = {t_star:.3f} time units"
      f" (Euler, dt = 1: after {first + 1} steps)")

# how the Euler solution approaches the ODE as dt shrinks (no threshold, first 8 time units)
t_end = 8.0
t_fine = np.linspace(0, t_end, 200)
euler = {}
for dt in (1.0, 0.5, 0.1):
    q = LIFParams(tau_m=4.0, dt=dt, reset="none", v_th=1e9)  # threshold out of reach: pure leaky integration
    n = int(round(t_end / dt))
    v, us = np.zeros((1, 1)), [0.0]
    for _ in range(n):
        _, _, v = lif_step(v, np.full((1, 1), I_CONST), q)
        us.append(v[0, 0])
    euler[dt] = (np.arange(n + 1) * dt, np.array(us))
    err = abs(us[-1] - v_inf * (1 - np.exp(-t_end / 4.0)))
    print(f"  dt = {dt:4.2f}: Euler v({t_end:g}) = {us[-1]:.4f}, ODE {v_inf * (1 - np.exp(-t_end / 4.0)):.4f}, "
          f"error {err:.4f}")

# %% [markdown]
# ## Step 5 — figures
#
# `viz.membrane_traces` draws `u` at every step (dots), the threshold, the
# spikes (stars) and the drop to the post-reset value (dashed). We pass the
# recorded `v` so that the soft reset is drawn at `u - v_th`, not at 0.

# %%
u_all = np.stack([layer_rec[m]["u"][:, 0, 0] for m in MODES], axis=1)        # (T, 3)
v_all = np.stack([layer_rec[m]["v"][:, 0, 0] for m in MODES], axis=1)
s_all = np.stack([layer_rec[m]["spikes"][:, 0, 0] for m in MODES], axis=1)
fig = viz.membrane_traces(u_all, s_all, v_th=p.v_th, v_reset=p.v_reset, neurons=(0, 1, 2), v=v_all)
RULE = {"hard": "hard reset: v = v_reset = 0 after a spike", "soft": "soft reset: v = u - v_th after a spike",
        "none": "no reset: v = u (spikes every step once above threshold)"}
for ax, m in zip(fig.axes, MODES):  # the panels are "neuron 0, 1, 2": name them after the reset mode
    n_spk = int(s_all[:, MODES.index(m)].sum())
    ax.set_title(f"{RULE[m]} — {n_spk} spikes", fontsize=10, loc="left")
fig.suptitle(f"One LIF neuron, constant input current I = {I_CONST} (tau_m = 4, dt = 1), three reset modes",
             fontsize=11)
print("\nStep 5: figures")
print("  wrote", viz.save(fig, FIG_DIR / "01_lif_reset_modes.png"))

fig = Figure(figsize=(7.0, 4.0), layout="constrained")
ax = fig.add_subplot()
for (dt, (tt, us)), col in zip(euler.items(), viz.OKABE_ITO):
    ax.plot(tt, us, marker="o" if dt >= 0.5 else None, markersize=4, linewidth=1.5 if dt >= 0.5 else 3,
            color=col, label=f"Euler, dt = {dt:g} (alpha = {1 - dt / 4:.3f})")
ax.plot(t_fine, v_inf * (1 - np.exp(-t_fine / 4.0)), color="black", linestyle="--", linewidth=1.3,
        label="exact ODE solution v_inf (1 - exp(-t/tau_m))", zorder=5)
ax.axhline(v_inf, color="0.5", linestyle=":", label=f"v_inf = R I = {v_inf:g}")
ax.axhline(p.v_th, color=viz.OKABE_ITO[3], linestyle="--", label="v_th = 1 (for reference; no reset here)")
ax.set_xlabel("time (same units as tau_m = 4)")
ax.set_ylabel("membrane potential (a.u.)")
ax.set_title("Leaky integration of a constant current: Euler steps vs. the exact solution")
ax.legend(fontsize=8, loc="lower right")
ax.grid(alpha=0.3)
print("  wrote", viz.save(fig, FIG_DIR / "01_euler_vs_exact.png"))
