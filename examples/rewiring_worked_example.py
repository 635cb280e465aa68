"""A 6 x 8 sparse layer through two rewiring events, printed before/after.

Plain script (no plotting): builds a tiny 8-6 spiking network at 50%
density, trains it with Adam on random spike data, and lets a Rewirer
(t_iter = 5, zeta0 = 0.3, cosine decay, t_end = 15, magnitude prune, random
grow, new weights 0) rewire it at iterations 5 and 10. For each event it
prints the 0/1 connection mask and the weights before and after, marking
pruned (x) and grown (+) positions, and the history record. Its output is
pasted in docs/structure-learning.md.

    PYTHONPATH=. python examples/rewiring_worked_example.py
"""
import numpy as np

from snn_core import Adam, ce_membrane, mlp
from snn_core.structure import Rewirer, position_keys, sparse_init


def dense(layer):
    """(mask, weights) as dense arrays: fine for a 6 x 8 toy, never for a real layer."""
    w = layer.weight
    mask = np.zeros(w.shape, int)
    vals = np.zeros(w.shape)
    rows = np.repeat(np.arange(w.shape[0]), np.diff(w.indptr))
    mask[rows, w.indices] = 1
    vals[rows, w.indices] = w.data
    return mask, vals


def show(title, mask, vals, marks=None):
    """Print mask and weights side by side; ``marks`` maps (row, col) -> 'x' or '+'."""
    marks = marks or {}
    print(title)
    print("  mask              weights")
    for r in range(mask.shape[0]):
        m = " ".join(marks.get((r, c), str(mask[r, c])) for c in range(mask.shape[1]))
        v = " ".join(f"{vals[r, c]:+5.2f}{marks.get((r, c), ' ')}" if mask[r, c] or (r, c) in marks else "   .  "
                     for c in range(mask.shape[1]))
        print(f"  {m}   {v}")
    print()


def main():
    net = mlp([8, 6], seed=0, gain=1.0)
    report = sparse_init(net, 0.5, method="uniform", seed=0)
    layer = net.layers[0]
    print(f"layer {report[0]['name']}: shape {report[0]['shape']}, nnz {report[0]['nnz']}, "
          f"density {report[0]['density']:.2f}\n")
    opt = Adam(net.parameters(), lr=0.05)
    rewirer = Rewirer(t_iter=5, zeta0=0.3, decay="cosine", t_end=15, seed=0)
    rng = np.random.default_rng(0)
    n_in = layer.in_features
    for it in range(1, 13):
        x = (rng.random((4, 16, 8)) < 0.5).astype(np.float32)
        y = rng.integers(0, 6, 16)
        _, g = ce_membrane(net.forward(x), y)
        net.zero_grad()
        net.backward(g)
        opt.step()
        if not rewirer.is_event(it):
            continue
        mask0, vals0 = dense(layer)
        m_before = opt.state[opt.index(layer.weight_param)]["m"].copy()
        records = rewirer.maybe_rewire(it, net, opt)
        ev = rewirer.last_events[layer.name]
        pruned = {(int(k // n_in), int(k % n_in)): "x" for k in ev["pruned_keys"]}
        grown = {(int(k // n_in), int(k % n_in)): "+" for k in ev["grown_keys"]}
        z = rewirer.zeta(it)
        print(f"=== event at iteration {it}: zeta = 0.3/2 * (1 + cos(pi * {it}/15)) = {z:.4f}, "
              f"n = round({z:.4f} * {layer.nnz}) = {ev['n']} ===\n")
        show("before (x = pruned by smallest |w|)", mask0, vals0, pruned)
        mask1, vals1 = dense(layer)
        show("after (+ = grown at a random empty position, weight 0)", mask1, vals1, grown)
        m_after = opt.state[opt.index(layer.weight_param)]["m"]
        src = ev["src"]
        print(f"  Adam m: kept entries keep theirs ({np.array_equal(m_after[src >= 0], m_before[src[src >= 0]])}), "
              f"grown entries start at 0 ({bool(np.all(m_after[src < 0] == 0))})")
        print(f"  nnz before {int(mask0.sum())}, after {int(mask1.sum())}")
        rec = records[0]
        print("  history record:", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in rec.items()})
        print()
    keys = position_keys(layer.weight.indptr, layer.weight.indices, n_in)
    init = rewirer.history.initial_keys(layer.name)
    print(f"after both events: {np.isin(keys, init).sum()} of {len(keys)} current connections sit at initial "
          f"positions; {len(rewirer.history.alive_initial_keys(layer.name))} initial connections never pruned")


if __name__ == "__main__":
    main()
