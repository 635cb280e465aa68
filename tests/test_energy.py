"""Synaptic-operation counting on hand-built networks whose counts are worked out below."""
import numpy as np
import pytest
import scipy.sparse as sp

from snn_core.energy import (EnergyConstants, energy_from_arrays, energy_from_network, energy_report, fan_out,
                             format_report, is_binary, layer_ops_per_step)
from snn_core.layers import LIF, Linear, Readout, SparseLinear
from snn_core.network import Network, mlp
from snn_core.neurons import LIFParams

# ---------------------------------------------------------------------------
# The hand-built case
#
# Layer fc1: 3 inputs -> 2 outputs, connections (row = output, col = input)
#     W1 = [[1, 0, 1],
#           [1, 1, 0]]
#   fan-out (connections per column): input0 -> 2, input1 -> 1, input2 -> 1
#
# Input spikes x, T = 3 steps, batch = 2:
#          sample 0     sample 1
#   t=0    [1, 0, 1]    [0, 1, 0]
#   t=1    [0, 0, 0]    [1, 0, 1]
#   t=2    [1, 1, 0]    [0, 0, 1]
#
# fc1 SOPs per step (sum over the batch of spikes x fan-out):
#   t=0: (2 + 1) + (1)     = 4
#   t=1: 0       + (2 + 1) = 3
#   t=2: (2 + 1) + (1)     = 4
#   total 11 -> 5.5 per sample; per step per sample [2, 1.5, 2]
#
# LIF with per-step decay 0 and input gain 1 (LIFParams.from_decay(0)):
# u[t] = I[t], spike iff I[t] >= 1. With W1 = 1 and no bias:
#   out0 = x0 + x2, out1 = x0 + x1, so out0 fires iff x0 or x2, out1 iff x0 or x1:
#          sample 0   sample 1
#   t=0    [1, 1]     [0, 1]
#   t=1    [0, 0]     [1, 1]
#   t=2    [1, 1]     [1, 0]
#   8 spikes over 3 steps x 2 samples x 2 neurons -> firing rate 8/12
#
# Layer fc2: 2 -> 3, W2 = [[1, 1],
#                          [1, 0],
#                          [1, 0]]   fan-out: neuron0 -> 3, neuron1 -> 1
# fc2 SOPs per step:
#   t=0: (3 + 1) + (1)     = 5
#   t=1: 0       + (3 + 1) = 4
#   t=2: (3 + 1) + (3)     = 7
#   total 16 -> 8 per sample; per step per sample [2.5, 2, 3.5]
#
# Network total: 5.5 + 8 = 13.5 SOPs per sample -> 13.5 * 0.9 pJ = 12.15 pJ.
# Dense equivalent: 3*2 + 2*3 = 12 MACs, 24 FLOPs per sample.
# ---------------------------------------------------------------------------
X = np.array([
    [[1, 0, 1], [0, 1, 0]],
    [[0, 0, 0], [1, 0, 1]],
    [[1, 1, 0], [0, 0, 1]],
], dtype=np.float32)
W1 = np.array([[1, 0, 1], [1, 1, 0]], dtype=np.float32)
W2 = np.array([[1, 1], [1, 0], [1, 0]], dtype=np.float32)
S_LIF = np.array([
    [[1, 1], [0, 1]],
    [[0, 0], [1, 1]],
    [[1, 1], [1, 0]],
], dtype=np.float32)


def hand_net():
    return Network([
        SparseLinear(3, 2, weight=sp.csr_matrix(W1), bias=False, dtype=np.float32, name="fc1"),
        LIF(2, LIFParams.from_decay(0.0), name="lif1"),
        SparseLinear(2, 3, weight=sp.csr_matrix(W2), bias=False, dtype=np.float32, name="fc2"),
        Readout(3, name="readout"),
    ])


def test_hand_built_sops():
    net = hand_net()
    net.forward(X, record=True)
    # the LIF spikes are exactly the hand-derived ones above
    np.testing.assert_array_equal(net.recorded["lif1"]["spikes"], S_LIF)
    rep = energy_from_network(net, X)
    fc1, fc2 = rep.layers
    assert (fc1["name"], fc1["presynaptic"], fc1["op"]) == ("fc1", "input", "AC")
    assert (fc2["name"], fc2["presynaptic"], fc2["op"]) == ("fc2", "lif1", "AC")
    assert fc1["sops_per_sample"] == 5.5
    assert fc2["sops_per_sample"] == 8.0
    np.testing.assert_array_equal(fc1["ops_per_step"], [2.0, 1.5, 2.0])
    np.testing.assert_array_equal(fc2["ops_per_step"], [2.5, 2.0, 3.5])
    np.testing.assert_array_equal(rep.ops_per_step, [4.5, 3.5, 5.5])
    assert rep.sops_per_sample == 13.5
    assert rep.macs_per_sample == 0.0
    assert rep["sops_per_sample"] == 13.5  # dict-style access
    assert rep.snn_energy_pj == pytest.approx(13.5 * 0.9)
    assert rep.truenorth_energy_pj == pytest.approx(13.5 * 26.0)
    assert rep.ann_macs_per_sample == 12
    assert rep.ann_flops_per_sample == 24
    assert rep.ann_energy_pj == pytest.approx(12 * 4.6)
    assert rep.ann_sparse_macs_per_sample == 4 + 4  # connections of fc1 + fc2
    assert rep.firing_rates == {"lif1": pytest.approx(8 / 12)}
    assert (rep.T, rep.n_samples) == (3, 2)
    assert fc1["connections"] == 4 and fc1["density"] == pytest.approx(4 / 6)
    assert fc1["presyn_rate"] == pytest.approx(8 / 18)  # 8 input spikes in 3*2*3 slots


def test_energy_report_runs_forward_and_chunks():
    full = energy_report(hand_net(), X)
    assert full.sops_per_sample == 13.5
    chunked = energy_report(hand_net(), X, batch_size=1)
    assert chunked.sops_per_sample == 13.5
    assert chunked.n_samples == 2
    np.testing.assert_array_equal(chunked.layers[1]["ops_per_step"], [2.5, 2.0, 3.5])
    assert chunked.firing_rates["lif1"] == pytest.approx(8 / 12)


def test_explicit_arrays_match_network():
    rep = energy_from_arrays([sp.csr_matrix(W1), sp.csr_matrix(W2)], [X, S_LIF], names=["fc1", "fc2"],
                             spikes={"lif1": S_LIF})
    assert rep.sops_per_sample == 13.5
    assert [L["presynaptic"] for L in rep.layers] == ["input", "fc1"]
    assert rep.firing_rates["lif1"] == pytest.approx(8 / 12)
    # (indptr, indices, shape) tuples work too
    w1 = sp.csr_matrix(W1)
    rep2 = energy_from_arrays([(w1.indptr, w1.indices, w1.shape)], [X])
    assert rep2.sops_per_sample == 5.5


def test_custom_constants():
    rep = energy_report(hand_net(), X, constants=EnergyConstants(e_ac_pj=1.0, e_mac_pj=2.0, e_event_pj=3.0))
    assert rep.snn_energy_pj == pytest.approx(13.5)
    assert rep.ann_energy_pj == pytest.approx(24.0)
    assert rep.truenorth_energy_pj == pytest.approx(40.5)
    with pytest.raises(ValueError):
        EnergyConstants(e_ac_pj=-1.0)


def test_dense_linear_fan_out_is_n_out():
    # dense Linear 3 -> 2 as first layer: every input spike reaches both outputs (fan-out 2),
    # even where the weight is 0. Input spikes per step (both samples): 3, 2, 3 -> 8 spikes
    # -> 16 ops -> 8 per sample; per step per sample 3*2/2, 2*2/2, 3*2/2 = [3, 2, 3].
    lin = Linear(3, 2, weight=np.array([[1, 0, 1], [1, 1, 0]], np.float32), bias=False, name="fc1")
    net = Network([lin, LIF(2, LIFParams.from_decay(0.0), name="lif1")])
    np.testing.assert_array_equal(fan_out(lin), [2, 2, 2])
    rep = energy_report(net, X)
    assert rep.layers[0]["type"] == "Linear"
    assert rep.sops_per_sample == 8.0
    np.testing.assert_array_equal(rep.layers[0]["ops_per_step"], [3.0, 2.0, 3.0])
    assert rep.ann_flops_per_sample == 2 * 6


def test_non_binary_input_counts_macs():
    # real-valued input into fc1 (fan-out 2, 1, 1), T = 2, batch 1:
    #   t=0 [0.5, 0, 0.2] -> nonzero inputs 0 and 2 -> 2 + 1 = 3 MACs
    #   t=1 [0, 0.7, 0]   -> input 1              -> 1 MAC
    # 4 MACs per sample, no ACs; energy 4 * 4.6 pJ.
    x = np.array([[[0.5, 0.0, 0.2]], [[0.0, 0.7, 0.0]]], np.float32)
    net = Network([SparseLinear(3, 2, weight=sp.csr_matrix(W1), bias=False, name="fc1"), Readout(2)])
    rep = energy_report(net, x)
    assert rep.layers[0]["op"] == "MAC"
    assert rep.macs_per_sample == 4.0
    assert rep.sops_per_sample == 0.0
    assert rep.synaptic_events_per_sample == 4.0
    assert rep.snn_energy_pj == pytest.approx(4 * 4.6)
    assert rep.truenorth_energy_pj == pytest.approx(4 * 26.0)
    # a graded "spike" value (2.0) is not binary -> MAC as well
    assert not is_binary(np.array([0.0, 2.0]))
    assert is_binary(np.array([0.0, 1.0, 1.0]))


def test_input_kind_override():
    rep = energy_report(hand_net(), X, input_kind="real")
    assert rep.macs_per_sample == 13.5 and rep.sops_per_sample == 0.0
    rep = energy_report(hand_net(), X * 0.5, input_kind="spikes")  # 0.5 still counts as an event
    assert rep.layers[0]["op"] == "AC"
    assert rep.layers[0]["sops_per_sample"] == 5.5
    with pytest.raises(ValueError):
        energy_report(hand_net(), X, input_kind="bogus")


def test_fan_out_counts_stored_connections_including_explicit_zeros():
    # column 1 holds one stored connection whose weight is 0 (a freshly grown synapse): it counts
    w = sp.csr_matrix((np.array([0.3, 0.0, -0.2], np.float32), np.array([0, 1, 0]), np.array([0, 2, 3])),
                      shape=(2, 3))
    np.testing.assert_array_equal(fan_out(w), [2, 1, 0])
    layer = SparseLinear(3, 2, weight=w, name="fc")
    np.testing.assert_array_equal(fan_out(layer), [2, 1, 0])
    np.testing.assert_array_equal(fan_out(np.zeros((4, 3))), [4, 4, 4])
    ops = layer_ops_per_step(np.ones((2, 1, 3), np.float32), fan_out(layer))
    np.testing.assert_array_equal(ops, [3.0, 3.0])


def test_ann_flops_784_800_10():
    net = mlp([784, 800, 10], density=0.01, seed=0)
    x = np.zeros((2, 1, 784), np.float32)
    x[0, 0, :10] = 1.0
    rep = energy_report(net, x)
    assert rep.ann_macs_per_sample == 784 * 800 + 800 * 10
    assert rep.ann_flops_per_sample == 2 * (784 * 800 + 800 * 10) == 1_270_400
    rep_t = energy_report(net, x, ann_timesteps=2)
    assert rep_t.ann_flops_per_sample == 2 * 2 * (784 * 800 + 800 * 10)
    assert rep_t.ann_timesteps == 2
    # the SOPs of fc1 are the 10 input spikes times their actual fan-out
    fo = fan_out(net.layers[0])
    assert rep.layers[0]["sops_per_sample"] == fo[:10].sum()
    with pytest.raises(ValueError):
        energy_report(net, x, ann_timesteps=0)


def test_firing_rates_multiple_lif_layers():
    net = mlp([5, 4, 3], density=1.0, output="lif", seed=1)
    x = (np.random.default_rng(0).random((4, 3, 5)) < 0.5).astype(np.float32)
    rep = energy_report(net, x)
    for name in ("lif1", "lif2"):
        assert rep.firing_rates[name] == pytest.approx(net.recorded[name]["spikes"].mean())
    # the output LIF's spikes drive no synapse: only fc1 and fc2 are counted
    assert [L["name"] for L in rep.layers] == ["fc1", "fc2"]
    expected = (x.sum(axis=(0, 1)) @ fan_out(net.layers[0]) +
                net.recorded["lif1"]["spikes"].sum(axis=(0, 1)) @ fan_out(net.layers[2])) / 3
    assert rep.sops_per_sample == pytest.approx(expected)


def test_errors_and_report_text():
    net = hand_net()
    net.forward(X)  # not recorded
    with pytest.raises(ValueError, match="record=True"):
        energy_from_network(net, X)
    with pytest.raises(ValueError):
        energy_from_arrays([sp.csr_matrix(W1)], [np.zeros((3, 2, 4), np.float32)])
    rep = energy_report(hand_net(), X)
    text = format_report(rep)
    for s in ("fc1", "fc2", "SOPs", "FLOPs", "TrueNorth", "lif1"):
        assert s in text
    d = rep.to_dict()
    assert d["sops_per_sample"] == 13.5 and d["layers"][0]["ops_per_step"] == [2.0, 1.5, 2.0]
