"""The engine learns: a toy spiking classification task to >= 95% held-out accuracy.

Four classes; each class fires a different random subset of 40 input neurons
at a high rate and the rest at a low rate, as Bernoulli spike trains. Training
and test samples are fresh draws (the test set is never seen in training), so
accuracy measures generalisation, not a memorised batch.
"""
import numpy as np
import pytest

from snn_core import Adam, LIFParams, ce_membrane, mlp, predict

N_IN, N_CLASSES, T = 40, 4, 8


def make_task(seed):
    rng = np.random.default_rng(seed)
    rates = np.full((N_CLASSES, N_IN), 0.1)
    for c in range(N_CLASSES):
        rates[c, rng.choice(N_IN, 10, replace=False)] = 0.6

    def sample(n, rng):
        y = rng.integers(0, N_CLASSES, n)
        x = (rng.random((T, n, N_IN)) < rates[y]).astype(np.float32)
        return x, y

    return sample


@pytest.mark.parametrize("sparse,density", [(False, 1.0), (True, 0.2)])
def test_network_learns_toy_task(sparse, density):
    sample = make_task(0)
    rng = np.random.default_rng(1)
    net = mlp([N_IN, 64, N_CLASSES], density=density, sparse=sparse, seed=2, gain=2.0,
              hidden=LIFParams(tau_m=2.0, reset="hard"))
    opt = Adam(net.parameters(), lr=5e-3)
    x_test, y_test = sample(500, np.random.default_rng(99))
    before = (predict(net.forward(x_test)) == y_test).mean()
    for _ in range(150):
        x, y = sample(32, rng)
        _, g = ce_membrane(net.forward(x), y)
        net.zero_grad()
        net.backward(g)
        opt.step()
    acc = (predict(net.forward(x_test)) == y_test).mean()
    assert before < 0.6, "task must not be solved by the untrained network"
    assert acc >= 0.95, f"held-out accuracy {acc:.3f}"
    if sparse:
        assert net.layers[0].nnz == round(0.2 * N_IN * 64)
