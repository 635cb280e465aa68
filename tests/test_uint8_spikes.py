"""uint8 (and bool) spikes as network input: the same bits as their float32 values, on every backend.

A first ``SparseLinear`` on the ``cpu`` backend packs a 0/1 uint8 input as it
is (it is its own uint8 copy); every other layer and backend converts it.
Counts (values above 1) take the float path, as float counts do. The input
is never written, gradients stay float only, and the Trainer's uint8 spikes
train the same weights as float32 spikes.
"""
from __future__ import annotations

import numpy as np
import pytest

from snn_core import LIFParams, ce_count, mlp
from snn_core.backend import cuda_available
from snn_core.backends import BACKENDS
from snn_core.data import bernoulli_encode
from snn_core.models import convnet
from snn_core.training import Trainer
from test_training import assert_trainers_identical, small_config

DEVICES = [pytest.param(d, marks=pytest.mark.skipif(d == "cuda" and not cuda_available(), reason="no CUDA"))
           for d in BACKENDS]
SOFT = LIFParams.from_decay(0.9, reset="soft")


def _run(net, x, y):
    """Output, every parameter gradient and the input-rows mask of one forward/backward, as host arrays."""
    host = net.backend.to_host
    out = np.array(host(net.forward(x)))
    _, g = ce_count(out, y)
    net.zero_grad()
    net.backward(g)
    return out, [np.array(host(p.grad)) for p in net.parameters()]


def _same(a, b):
    assert np.array_equal(a[0], b[0])
    assert len(a[1]) == len(b[1]) and all(np.array_equal(p, q) for p, q in zip(a[1], b[1]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sparse, density", [(True, 0.1), (True, 0.3), (True, 1.0), (False, 0.3)])
def test_uint8_and_bool_spikes_give_the_float32_bits(device, sparse, density):
    # 0.1: 3 connections per input, below the packing fan-out (4): the uint8 input is converted;
    # 0.3 and 1.0: packed as it is on cpu. Dense layers always convert.
    rng = np.random.default_rng(0)
    x = rng.random((5, 6, 40)) < 0.3
    y = rng.integers(0, 4, 6)
    runs = {}
    for dtype in (np.float32, np.uint8, np.bool_):
        net = mlp([40, 30, 4], density=density, hidden=SOFT, readout=SOFT, output="lif", sparse=sparse, seed=1,
                  gain=3.0)
        runs[dtype] = _run(net.to(device), x.astype(dtype), y)
        if device == "cpu" and sparse:
            assert net.layers[0].input_was_spikes == (density > 0.1)
    assert all(np.abs(g).sum() > 0 for g in runs[np.float32][1])  # real gradients, not all zeros
    _same(runs[np.uint8], runs[np.float32])
    _same(runs[np.bool_], runs[np.float32])


def test_encoder_uint8_spikes_train_like_float32_spikes(mode):
    # the Trainer's path: only the inputs read are drawn, into a reused buffer; several Adam steps
    from snn_core import Adam

    rng = np.random.default_rng(2)
    images, labels = rng.random((60, 50), dtype=np.float32), rng.integers(0, 5, 60)
    nets = {}
    for dtype in (np.float32, np.uint8):
        net = mlp([50, 40, 5], density=0.2, hidden=SOFT, readout=SOFT, output="lif", sparse=True, seed=3)
        opt = Adam(net.parameters(), lr=1e-2)
        buf = np.zeros((50, 6, 20), dtype)
        for i in range(6):
            k = i % 3
            x = bernoulli_encode(images[20 * k:20 * k + 20], 6, seed=i, out=buf, features=net.input_rows_needed())
            _, g = ce_count(net.forward(x), labels[20 * k:20 * k + 20])
            net.zero_grad()
            net.backward(g)
            opt.step()
        nets[dtype] = net
    assert nets[np.uint8].layers[0].input_was_spikes  # the uint8 input was packed, not converted
    for p, q in zip(nets[np.float32].parameters(), nets[np.uint8].parameters()):
        assert np.array_equal(p.value, q.value)


def test_uint8_counts_are_read_as_their_values_and_left_as_they_are(mode):
    # values above 1 are not spikes: the layer takes them as floats, as it would float counts
    rng = np.random.default_rng(4)
    x = rng.integers(0, 4, (4, 5, 30)).astype(np.uint8)
    keep = x.copy()
    y = rng.integers(0, 3, 5)
    runs = {}
    for dtype in (np.float32, np.uint8):
        net = mlp([30, 20, 3], density=0.5, hidden=SOFT, readout=SOFT, output="lif", sparse=True, seed=2)
        runs[dtype] = _run(net, x.astype(dtype), y)
        assert not net.layers[0].input_was_spikes
    _same(runs[np.uint8], runs[np.float32])
    np.testing.assert_array_equal(x, keep)


def test_packed_uint8_input_is_only_read(mode):
    x = (np.random.default_rng(5).random((30, 4, 6)) < 0.4).astype(np.uint8)  # (F, T, B) buffer
    keep = x.copy()
    net = mlp([30, 20, 3], density=0.5, hidden=SOFT, readout=SOFT, output="lif", sparse=True, seed=2)
    _run(net, x.transpose(1, 2, 0), np.zeros(6, int))
    assert net.layers[0].input_was_spikes
    np.testing.assert_array_equal(x, keep)


def test_dense_weight_grad_of_a_uint8_input():
    rng = np.random.default_rng(6)
    x = rng.random((4, 5, 30)) < 0.4
    grads = []
    for dtype in (np.float32, np.uint8):
        net = mlp([30, 20, 3], density=0.5, hidden=SOFT, readout=SOFT, output="lif", sparse=True, seed=2)
        net.layers[0].retain_output_grad = True
        _run(net, x.astype(dtype), np.zeros(5, int))
        grads.append(net.layers[0].dense_weight_grad())
    assert grads[1].dtype == np.float32
    np.testing.assert_array_equal(grads[0], grads[1])


def test_uint8_spikes_into_a_convolutional_network():
    rng = np.random.default_rng(7)
    x = rng.random((2, 3, 1 * 8 * 8)) < 0.3
    y = rng.integers(0, 4, 3)
    runs = []
    for dtype in (np.float32, np.uint8):
        net = convnet(input_shape=(1, 8, 8), n_classes=4, channels=(4, 4), density=0.5, seed=0)
        runs.append(_run(net, x.astype(dtype), y))
    _same(runs[1], runs[0])


def test_other_input_dtypes_and_uint8_gradients_are_refused():
    net = mlp([10, 8, 3], density=0.5, sparse=True, seed=0)
    with pytest.raises(TypeError, match=r"expected dtype float32 or uint8/bool spikes, got int16"):
        net.forward(np.zeros((2, 3, 10), np.int16))
    out = net.forward(np.zeros((2, 3, 10), np.uint8))
    with pytest.raises(TypeError, match=r"grad: expected dtype float32, got uint8"):
        net.backward(np.zeros(out.shape, np.uint8))


def test_trainer_draws_uint8_spikes_and_trains_the_float32_bits(tmp_path, monkeypatch):
    kw = dict(density=0.05, epochs=2, val_fraction=0.5, batch_size=40)
    a = Trainer(small_config(tmp_path / "a", **kw))
    a.fit()
    assert all(buf.dtype == np.uint8 for buf in a._encode_buffers.values())
    kept = a._val_spikes[2]
    assert kept and all(s.dtype == np.uint8 for s in kept.values())
    b = Trainer(small_config(tmp_path / "b", **kw))
    monkeypatch.setattr(b, "_spike_dtype", np.float32)
    b.fit()
    assert all(buf.dtype == np.float32 for buf in b._encode_buffers.values())
    assert_trainers_identical(a, b)
