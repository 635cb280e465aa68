"""Finite-difference checks of the complete hand-written BPTT.

The Heaviside spike has no useful derivative, so these tests switch the
layers to the test-only ``spike_fn="smooth"`` mode: the forward spike becomes
a smooth function whose exact derivative is the surrogate the backward pass
uses. Then the analytic gradient must equal the numerical one (float64).
"""
import itertools

import numpy as np
import pytest

from snn_core import LIF, LIFParams, Linear, Network, Readout, SparseLinear
from snn_core.kernels.reference import smooth_spike_numpy
from snn_core.losses import ce_count, ce_membrane, mse_rate, tet

T, B = 5, 3


def build(reset, detach, surrogate="sigmoid", output="readout", seed=0):
    p = LIFParams(tau_m=2.0, dt=1.0, v_th=0.6, v_reset=-0.1, reset=reset, detach_reset=detach,
                  surrogate=surrogate, spike_fn="smooth")
    rng = np.random.default_rng(seed)
    layers = [
        SparseLinear(6, 7, density=0.5, seed=rng, gain=2.0, dtype=np.float64, name="fc1"),
        LIF(7, p, dtype=np.float64, name="lif1"),
        Linear(7, 5, seed=rng, gain=2.0, dtype=np.float64, name="fc2"),
        LIF(5, p, dtype=np.float64, name="lif2"),
        SparseLinear(5, 4, density=0.7, seed=rng, gain=2.0, dtype=np.float64, name="fc3"),
    ]
    layers.append(Readout(4, p, dtype=np.float64) if output == "readout" else LIF(4, p, dtype=np.float64, name="lif3"))
    for layer in layers:  # non-zero biases so their gradients are exercised too
        for q in layer.parameters():
            if q.name.endswith("bias"):
                q.value[:] = rng.normal(0, 0.3, q.value.shape)
    return Network(layers)


def forward_frozen_reset(net, x, frozen):
    """Forward pass whose LIF resets use the spikes ``frozen`` (a constant).

    With ``detach_reset`` the backward pass treats the reset as a constant,
    so the function it differentiates is this one, not the plain forward:
    differentiating it numerically checks the detached gradient exactly.
    """
    h = x
    for layer in net.layers:
        if not isinstance(layer, LIF):
            h = layer.forward(h)
            continue
        p = layer.params
        v = np.full(h.shape[1:], p.v_rest)
        out = np.empty(h.shape)
        for t in range(h.shape[0]):
            u = p.alpha * v + (1 - p.alpha) * p.v_rest + p.c * h[t]
            s = smooth_spike_numpy(u - p.v_th, p.surrogate, p.surrogate_p)
            sr = frozen[layer.name][t]
            v = u * (1 - sr) + p.v_reset * sr if p.reset == "hard" else u - p.v_th * sr
            out[t] = s
        h = out
    return h


def numeric_grad(net, loss, x, y, param, idx, h=1e-6, frozen=None):
    def f():
        out = net.forward(x) if frozen is None else forward_frozen_reset(net, x, frozen)
        return loss(out, y)[0]

    old = param.value[idx]
    param.value[idx] = old + h
    lp = f()
    param.value[idx] = old - h
    lm = f()
    param.value[idx] = old
    return (lp - lm) / (2 * h)


def check(net, loss, seed=1, n_probe=12):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.5, size=(T, B, net.in_features))
    y = rng.integers(0, net.out_features, size=B)
    detached = any(isinstance(l, LIF) and l.params.detach_reset for l in net.layers)
    frozen = None
    if detached:
        net.forward(x, record=True)
        frozen = {name: rec["spikes"].copy() for name, rec in net.recorded.items() if "spikes" in rec}
    value, g = loss(net.forward(x), y)
    net.zero_grad()
    net.backward(g)
    assert np.isfinite(value)
    for p in net.parameters():
        analytic = p.grad.copy()
        flat = rng.choice(p.value.size, size=min(n_probe, p.value.size), replace=False)
        idxs = [np.unravel_index(i, p.value.shape) for i in flat]
        num = np.array([numeric_grad(net, loss, x, y, p, i, frozen=frozen) for i in idxs])
        ana = np.array([analytic[i] for i in idxs])
        scale = max(np.linalg.norm(num), np.linalg.norm(ana), 1e-8)
        assert np.linalg.norm(num) > 1e-6, f"{p.name}: gradient vanished, the check would be vacuous"
        rel = np.linalg.norm(num - ana) / scale
        assert rel < 1e-4, f"{p.name}: relative error {rel:.2e}"


@pytest.mark.parametrize("reset,detach", list(itertools.product(["hard", "soft"], [False, True])))
def test_bptt_matches_finite_differences(reset, detach):
    check(build(reset, detach), ce_membrane)


@pytest.mark.parametrize("loss", [ce_count, mse_rate, tet])
def test_bptt_spiking_output_losses(loss):
    check(build("soft", False, output="lif"), loss)


@pytest.mark.parametrize("surrogate", ["arctan", "fast_sigmoid"])
def test_bptt_other_surrogates(surrogate):
    check(build("hard", False, surrogate=surrogate), ce_membrane)


def test_reset_none_and_detach_change_the_gradient():
    """Detaching the reset must actually remove a gradient path."""
    rng = np.random.default_rng(3)
    x = rng.uniform(0.0, 1.5, size=(T, B, 6))
    y = rng.integers(0, 4, size=B)
    grads = []
    for detach in (False, True):
        net = build("hard", detach, seed=5)
        _, g = ce_membrane(net.forward(x), y)
        net.zero_grad()
        net.backward(g)
        grads.append(net.layers[0].weight_param.grad.copy())
    assert not np.allclose(grads[0], grads[1])


def test_gradients_accumulate_until_zero_grad():
    net = build("soft", False)
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1.5, size=(T, B, 6))
    y = rng.integers(0, 4, size=B)
    _, g = ce_membrane(net.forward(x), y)
    net.zero_grad()
    net.backward(g)
    once = [p.grad.copy() for p in net.parameters()]
    net.forward(x)
    net.backward(g)
    for p, g1 in zip(net.parameters(), once):
        np.testing.assert_allclose(p.grad, 2 * g1, rtol=1e-12, atol=1e-15)
