"""One frame shown at every step (direct coding): the synaptic layers compute it once.

``direct_encode`` returns a stride-0 time axis; ``Linear``, ``SparseLinear``,
``Conv2d`` and ``SparseConv2d`` then compute one step and copy it to all. Everything
they return or accumulate must equal the same layer fed the T materialised
copies: outputs, weight and bias gradients, input gradients, the retained
output gradient of gradient-based growth, and a whole network's loss and
gradients.
"""
from __future__ import annotations

import numpy as np
import pytest

from snn_core import LIF, Linear, Network, Readout, SparseLinear, ce_membrane
from snn_core.conv import AvgPool2d, BatchNorm2d, Conv2d, Flatten, SparseConv2d
from snn_core.data import direct_encode

HOST = ["reference", "cpu"]


def _layers():
    return {
        "linear": lambda: Linear(12, 5, bias=True, seed=1),
        "sparse": lambda: SparseLinear(12, 5, density=0.5, bias=True, seed=1),
        "conv": lambda: Conv2d(3, 4, 3, 1, 1, input_size=(2, 2), bias=True, seed=1),
        "sparse_conv": lambda: SparseConv2d(3, 4, 3, 1, 1, density=0.6, input_size=(2, 2), bias=True, seed=1),
    }


def test_direct_encode_is_one_read_only_frame_repeated(rng):
    x = rng.random((4, 7))
    s = direct_encode(x, 5)
    assert s.shape == (5, 4, 7) and s.strides[0] == 0 and not s.flags.writeable
    np.testing.assert_array_equal(s, np.broadcast_to(x.astype(np.float32), (5, 4, 7)))
    buf = np.empty((7, 5, 4), np.float32)  # with out=: the T copies, written into out
    s2 = direct_encode(x, 5, out=buf)
    assert s2.strides[0] != 0 and np.shares_memory(s2, buf)
    np.testing.assert_array_equal(s2, s)


@pytest.mark.parametrize("device", HOST)
@pytest.mark.parametrize("kind", ["linear", "sparse", "conv", "sparse_conv"])
def test_repeated_frame_matches_materialised_copies(kind, device, rng):
    T, B = 4, 3
    make = _layers()[kind]
    once, full = make().to(device), make().to(device)
    for layer in (once, full):
        layer.need_input_grad = True
        if hasattr(layer, "retain_output_grad"):
            layer.retain_output_grad = True
    x = direct_encode(rng.random((B, once.in_features)) * (rng.random((B, once.in_features)) < 0.7), T)
    y_once, y_full = once.forward(x), full.forward(np.ascontiguousarray(x))
    assert (once.frame_repeats, full.frame_repeats) == (T, 1), "the repeated frame was computed T times"
    np.testing.assert_allclose(y_once, y_full, rtol=1e-6, atol=1e-6)
    g = rng.standard_normal(y_full.shape).astype(np.float32)
    gx_once, gx_full = once.backward(g), full.backward(g)
    np.testing.assert_allclose(gx_once, gx_full, rtol=1e-5, atol=1e-6)
    for p, q in zip(once.parameters(), full.parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-5, atol=1e-5, err_msg=p.name)
    if hasattr(once, "dense_weight_grad"):  # gradient-based growth reads the retained gradient
        np.testing.assert_allclose(once.dense_weight_grad(), full.dense_weight_grad(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", HOST)
def test_direct_coded_conv_network_loss_and_gradients_match(device, rng):
    def net():
        return Network([SparseConv2d(1, 3, 3, 1, 1, density=0.7, input_size=(6, 6), seed=2, name="c1"),
                        BatchNorm2d(3, (6, 6), name="bn1"), LIF(108, name="lif1"),
                        AvgPool2d(3, (6, 6), 2, name="p1"), Flatten(27),
                        SparseLinear(27, 4, density=0.6, seed=3, name="fc"), Readout(4)]).to(device)
    a, b = net(), net()
    x = direct_encode(rng.random((5, 36)), 3)
    y = rng.integers(0, 4, 5)
    losses = []
    for n, inp in ((a, x), (b, np.ascontiguousarray(x))):
        out = n.forward(inp)
        loss, grad = ce_membrane(out, y)
        n.backward(grad)
        losses.append(loss)
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6, err_msg=p.name)


@pytest.mark.parametrize("device", ["reference", "cpu"])
@pytest.mark.parametrize("T", [2, 3, 8])
def test_time_sum_adds_the_steps_in_order_bit_for_bit(device, T, rng):
    """The gradient of a repeated frame: every backend's time_sum equals NumPy's sum over time exactly
    (values spanning six decades, so a different order of additions would show)."""
    from snn_core.backends import get_backend
    from snn_core.kernels import reference as R

    G3 = (rng.standard_normal((37, T, 11)) * 10.0 ** rng.uniform(-3, 3, (37, T, 11))).astype(np.float32)
    out = np.empty((37, 11), np.float32)
    get_backend(device).time_sum(G3, out)
    np.testing.assert_array_equal(out, R.time_sum(G3))
    np.testing.assert_array_equal(out, G3.sum(axis=1))
    sequential = G3[:, 0].copy()
    for t in range(1, T):
        sequential += G3[:, t]
    np.testing.assert_array_equal(out, sequential)
