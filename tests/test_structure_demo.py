"""Rewiring finds the useful inputs and beats the static sparse control.

Task: 40 Bernoulli spike inputs over T = 8 steps, two classes. Only inputs
0..7 carry the class, each weakly (rate 0.5 +- 0.15, sign alternating
between inputs and flipped between classes); inputs 8..39 fire at rate 0.3
whatever the class. A 40-30-2 LIF network at 8% global density
(Erdős–Rényi split; about 86 first-layer connections, ~20% of them from
useful inputs at random) is trained with Adam on fresh batches.

Because every useful input is weak, the network needs many connections from
them; rewiring (magnitude prune, random grow) drops the weak ones, which end
up being mostly from noise inputs, and lets new ones from useful inputs prove
themselves. The static control is the *same* initial network, data stream
and seed with ``Rewirer(enabled=False)``. Evaluated on 1000 held-out samples.
"""
import numpy as np
import pytest

from snn_core import Adam, ce_membrane, mlp, predict
from snn_core.structure import Rewirer, sparse_init

N_IN, N_USEFUL, T = 40, 8, 8
DELTA, DENSITY, ITERS = 0.15, 0.08, 600


def sample(n, rng):
    y = rng.integers(0, 2, n)
    rates = np.full((n, N_IN), 0.3)
    pattern = np.where(np.arange(N_USEFUL) % 2 == 0, 1.0, -1.0)
    sign = np.where(y == 0, 1.0, -1.0)[:, None]
    rates[:, :N_USEFUL] = 0.5 + DELTA * sign * pattern
    return (rng.random((T, n, N_IN)) < rates).astype(np.float32), y


def useful_connections(net):
    return int((net.layers[0].weight.indices < N_USEFUL).sum())


def train(seed, rewire):
    net = mlp([N_IN, 30, 2], seed=seed, gain=2.0)
    sparse_init(net, DENSITY, seed=seed, gain=2.0)
    useful0 = useful_connections(net)
    opt = Adam(net.parameters(), lr=5e-3)
    rewirer = Rewirer(t_iter=10, zeta0=0.5, n_iterations=ITERS, seed=seed, enabled=rewire)
    rng = np.random.default_rng(seed + 100)
    for it in range(1, ITERS + 1):
        x, y = sample(32, rng)
        _, g = ce_membrane(net.forward(x), y)
        net.zero_grad()
        net.backward(g)
        opt.step()
        rewirer.maybe_rewire(it, net, opt)
    x, y = sample(1000, np.random.default_rng(999))
    out = net.forward(x)
    loss, _ = ce_membrane(out, y)
    acc = float((predict(out) == y).mean())
    return {"useful0": useful0, "useful": useful_connections(net), "loss": loss, "acc": acc,
            "nnz": [l.nnz for l in net.sparse_layers()], "events": rewirer.n_events, "history": rewirer.history}


@pytest.mark.parametrize("seed", [0, 1])
def test_rewiring_moves_connections_to_useful_inputs_and_beats_static(seed):
    static = train(seed, rewire=False)
    rewired = train(seed, rewire=True)
    # same start, same density throughout
    assert static["useful0"] == rewired["useful0"]
    assert static["nnz"] == rewired["nnz"]
    assert static["events"] == 0 and rewired["events"] == 44  # events at 10, 20, ..., 440 (t_end = 450)
    assert static["useful"] == static["useful0"]
    # connections moved onto the useful inputs (~20% of them at random)
    assert rewired["useful"] >= 1.3 * rewired["useful0"], rewired
    h = rewired["history"].as_arrays("fc1")
    assert h["frac_grown"][-1] > 0.2  # a real part of the first layer was rewired
    # and the rewired network generalises better than the static sparse control
    assert rewired["loss"] < static["loss"] - 0.03, (rewired["loss"], static["loss"])
    assert rewired["acc"] > static["acc"], (rewired["acc"], static["acc"])
