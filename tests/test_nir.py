"""NIR export/import (snn_core.nir): exact round trips, an independent
simulation of the NIR equations, refusals, and the checkpoint path."""
from __future__ import annotations

import numpy as np
import pytest

nir = pytest.importorskip("nir", reason="the optional 'nir' package is not installed")

from snn_core import LIF, LIFParams, Linear, Network, Readout, SparseLinear, mlp  # noqa: E402
from snn_core.layers import Layer  # noqa: E402
from snn_core.nir import from_nir, read_nir, to_nir, write_nir  # noqa: E402


def _net(reset="hard", sparse=True, output="readout", bias=True, dtype=np.float32, seed=0):
    p = LIFParams(tau_m=3.0, dt=1.0, v_th=0.6, v_reset=-0.1 if reset == "hard" else 0.0, v_rest=0.05, R=1.3,
                  reset=reset, surrogate="sigmoid", surrogate_param=4.0)
    rng = np.random.default_rng(seed)
    sizes = [12, 9, 7, 4]
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if sparse:
            syn = SparseLinear(a, b, density=0.4, bias=bias, seed=rng, gain=2.5, dtype=dtype, name=f"fc{i+1}")
            syn.weight.data[:2] = 0.0  # explicit zero-weight connections (as right after a growth step)
        else:
            syn = Linear(a, b, bias=bias, seed=rng, gain=2.5, dtype=dtype, name=f"fc{i+1}")
            syn.weight_param.value[0, :3] = 0.0
        if bias:
            syn.bias.value[...] = rng.normal(0, 0.2, b)
        layers.append(syn)
        last = i == len(sizes) - 2
        cls = Readout if last and output == "readout" else LIF
        layers.append(cls(b, p, dtype=dtype, name="out" if last else f"lif{i+1}"))
    return Network(layers)


def _input(dtype=np.float32, T=11, batch=5, n=12, seed=1):
    return (np.random.default_rng(seed).random((T, batch, n)) < 0.35).astype(dtype)


def _structure(layer):
    if isinstance(layer, SparseLinear):
        w = layer.weight
        return type(layer), w.indptr.tolist(), w.indices.tolist(), w.data.tobytes()
    if isinstance(layer, Linear):
        return type(layer), layer.weight_param.value.tobytes()
    return type(layer), layer.params


def _assert_same(a, b, x):
    assert [l.name for l in a.layers] == [l.name for l in b.layers]
    for la, lb in zip(a.layers, b.layers):
        assert _structure(la) == _structure(lb), la.name
        if getattr(la, "bias", None) is not None or getattr(lb, "bias", None) is not None:
            assert la.bias.value.tobytes() == lb.bias.value.tobytes()
    ya = a.forward(x, record=True).copy()
    rec_a = {k: {kk: vv.copy() for kk, vv in v.items()} for k, v in a.recorded.items()}
    yb = b.forward(x, record=True)
    assert ya.tobytes() == yb.tobytes()  # bit-identical
    for name, rec in rec_a.items():
        for key, arr in rec.items():
            assert arr.tobytes() == b.recorded[name][key].tobytes(), (name, key)


LAYER_CASES = [
    pytest.param(reset, sparse, output, bias, dtype,
                 id=f"{reset}-{'sparse' if sparse else 'dense'}-{output}-{'bias' if bias else 'nobias'}-"
                    f"{np.dtype(dtype).name}")
    for reset in ("hard", "soft", "none")
    for sparse, output, bias, dtype in ((True, "readout", True, np.float32), (False, "lif", False, np.float32),
                                        (True, "lif", False, np.float64), (False, "readout", True, np.float64))
]


@pytest.mark.parametrize("reset,sparse,output,bias,dtype", LAYER_CASES)
@pytest.mark.parametrize("dt", [1.0, 1e-3])
def test_round_trip_is_bit_identical(reset, sparse, output, bias, dtype, dt):
    net = _net(reset, sparse, output, bias, dtype)
    x = _input(dtype)
    back = from_nir(to_nir(net, dt, allow_soft_reset=True), dt)
    _assert_same(net, back, x)
    if sparse:  # connectivity survives, explicit zero weights included
        for la, lb in zip(net.layers[0::2], back.layers[0::2]):
            assert lb.nnz == la.nnz and (la.weight.data == 0).sum() >= 2


@pytest.mark.parametrize("reset", ["hard", "soft", "none"])
def test_round_trip_through_a_file(reset, tmp_path):
    net = _net(reset)
    path = tmp_path / "net.nir"
    write_nir(net, path, 1e-3, allow_soft_reset=True)
    _assert_same(net, from_nir(nir.read(str(path)), 1e-3), _input())
    _assert_same(net, from_nir(path, 1e-3), _input())  # a path works too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.nir"]  # no temporary file left


def test_main_job_network_round_trip():
    net = mlp([784, 100, 10], density=0.1, seed=3, gain=2.0)
    x = _input(n=784, T=8, batch=3)
    _assert_same(net, from_nir(to_nir(net, 1e-3), 1e-3), x)


def test_graph_shape_and_parameters():
    net = _net("hard")
    g = to_nir(net, 1e-3)
    assert list(g.nodes) == ["input", "fc1", "lif1", "fc2", "lif2", "fc3", "out", "output"]
    assert g.edges == list(zip(list(g.nodes)[:-1], list(g.nodes)[1:]))
    fc1, lif1, out = g.nodes["fc1"], g.nodes["lif1"], g.nodes["out"]
    assert isinstance(fc1, nir.Affine) and isinstance(lif1, nir.LIF) and isinstance(out, nir.LI)
    W = net.layers[0].weight.toarray()
    assert np.array_equal(fc1.weight, W) and fc1.weight.shape == (9, 12)
    assert np.count_nonzero(fc1.weight) == net.layers[0].nnz - 2  # the two explicit zeros read as absent
    np.testing.assert_array_equal(lif1.tau, np.full(9, 3e-3))
    np.testing.assert_array_equal(lif1.r, np.full(9, 1.3))
    np.testing.assert_array_equal(lif1.v_leak, np.full(9, 0.05))
    np.testing.assert_array_equal(lif1.v_threshold, np.full(9, 0.6))
    np.testing.assert_array_equal(lif1.v_reset, np.full(9, -0.1))
    no_reset = to_nir(_net("none"), 1.0)
    assert isinstance(no_reset.nodes["lif1"], nir.LI) and isinstance(no_reset.nodes["lif1_threshold"], nir.Threshold)
    assert isinstance(to_nir(_net(bias=False), 1.0).nodes["fc1"], nir.Linear)


def _strip_metadata(graph):
    for node in graph.nodes.values():
        node.metadata = {}
    return graph


def test_nir_fields_alone_reproduce_a_hard_reset_network():
    """Without snn_core metadata (what another tool writes), hard reset at dt = p.dt is still exact."""
    net = _net("hard")
    for layer in net.layers[0::2]:
        layer.weight.data[layer.weight.data == 0] = 0.25  # no explicit zeros: structure is the nonzeros
    back = from_nir(_strip_metadata(to_nir(net, 1.0)), 1.0)
    x = _input()
    assert net.forward(x).tobytes() == back.forward(x).tobytes()
    assert all(type(l) is SparseLinear for l in back.layers[0::2])


def test_zeros_become_absent_connections_unless_told_otherwise():
    net = _net("hard")
    g = to_nir(net, 1.0)
    dropped = from_nir(g, 1.0, keep_zeros=False)
    for la, lb in zip(net.layers[0::2], dropped.layers[0::2]):
        assert lb.nnz == la.nnz - int((la.weight.data == 0).sum())
        assert np.array_equal(lb.weight.toarray(), la.weight.toarray())
    dense = from_nir(g, 1.0, keep_zeros=True)
    assert all(type(l) is Linear for l in dense.layers[0::2])
    assert np.array_equal(dense.layers[0].weight_param.value, net.layers[0].weight.toarray())
    stripped = from_nir(_strip_metadata(g), 1.0)  # foreign graph, default: zeros are absent
    assert stripped.layers[0].nnz == dropped.layers[0].nnz


# --------------------------------------------------------------------------
# against an independent implementation of the NIR equations
# --------------------------------------------------------------------------
def _simulate_nir(graph, x, dt):
    """Forward-Euler simulation of a NIR chain, written from the NIR node definitions only.

    LIF: tau dv/dt = (v_leak - v) + r I; spike z = 1 where v >= v_threshold,
    then v = v_reset there. LI: the same without spike/reset. Threshold:
    z = (v >= threshold). Affine: y = W x + b. v starts at v_leak.
    """
    order, name = [], "input"
    succ = dict(graph.edges)
    while succ[name] != "output":
        name = succ[name]
        order.append(graph.nodes[name])
    T = x.shape[0]
    h = x.astype(np.float64)
    for node in order:
        if isinstance(node, nir.Affine):
            h = np.einsum("oi,tbi->tbo", node.weight, h) + node.bias
        elif isinstance(node, nir.Linear):
            h = np.einsum("oi,tbi->tbo", node.weight, h)
        elif isinstance(node, nir.Threshold):
            h = (h >= node.threshold).astype(np.float64)
        elif isinstance(node, (nir.LIF, nir.LI)):
            v = np.broadcast_to(node.v_leak, h.shape[1:]).copy()
            out = np.empty_like(h)
            for t in range(T):
                v = v + dt / node.tau * ((node.v_leak - v) + node.r * h[t])
                if isinstance(node, nir.LIF):
                    z = (v >= node.v_threshold).astype(np.float64)
                    v = np.where(z > 0, node.v_reset, v)
                    out[t] = z
                else:
                    out[t] = v
            h = out
        else:
            raise AssertionError(type(node))
    return h


def _foreign_graph(rng, no_reset=False):
    """A small LIF network written with the nir package's own API (not snn_core's)."""
    W1 = rng.normal(0, 0.9, (6, 5)) * (rng.random((6, 5)) < 0.6)
    W2 = rng.normal(0, 0.9, (3, 6))
    n1 = 6
    hidden = [nir.LIF(tau=np.full(n1, 0.02), r=np.full(n1, 2.0), v_leak=np.full(n1, 0.1),
                      v_threshold=np.full(n1, 0.5), v_reset=np.full(n1, -0.2))]
    if no_reset:
        hidden = [nir.LI(tau=np.full(n1, 0.02), r=np.full(n1, 2.0), v_leak=np.full(n1, 0.1)),
                  nir.Threshold(threshold=np.full(n1, 0.5))]
    nodes = [nir.Affine(weight=W1, bias=rng.normal(0, 0.1, 6)), *hidden,
             nir.Linear(weight=W2), nir.LI(tau=np.full(3, 0.05), r=np.full(3, 0.5), v_leak=np.full(3, -0.05))]
    return nir.NIRGraph.from_list(*nodes)


@pytest.mark.parametrize("no_reset", [False, True], ids=["LIF", "LI+Threshold"])
def test_foreign_graph_matches_an_independent_simulation(no_reset, tmp_path):
    rng = np.random.default_rng(7)
    graph = _foreign_graph(rng, no_reset)
    nir.write(str(tmp_path / "foreign.nir"), graph)
    graph = nir.read(str(tmp_path / "foreign.nir"))
    dt = 1e-3
    x = (rng.random((40, 4, 5)) < 0.3).astype(np.float64)
    want = _simulate_nir(graph, x, dt)
    net = from_nir(graph, dt, dtype=np.float64)
    assert [type(l).__name__ for l in net.layers] == ["SparseLinear", "LIF", "SparseLinear", "Readout"]
    got = net.forward(x, record=True)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert net.recorded[net.layers[1].name]["spikes"].sum() > 0  # the hidden layer spikes (a meaningful check)
    # float32 layers: the same spikes, membranes within float32 rounding
    net32 = from_nir(graph, dt, dtype=np.float32)
    np.testing.assert_allclose(net32.forward(x.astype(np.float32)), want, rtol=1e-4, atol=1e-5)


def test_fold_r_moves_the_resistance_into_the_weights():
    graph = _foreign_graph(np.random.default_rng(3))
    x = (np.random.default_rng(4).random((30, 3, 5)) < 0.3).astype(np.float64)
    plain = from_nir(graph, 1e-3, dtype=np.float64)
    folded = from_nir(graph, 1e-3, dtype=np.float64, fold_r=True)
    assert all(l.params.R == 1.0 for l in folded.layers[1::2])
    np.testing.assert_allclose(folded.layers[0].weight.toarray(), 2.0 * plain.layers[0].weight.toarray())
    np.testing.assert_allclose(folded.forward(x), plain.forward(x), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------
# what cannot be expressed is refused, naming it
# --------------------------------------------------------------------------
class _Gain(Layer):
    def __init__(self, n):
        super().__init__()
        self.in_features = self.out_features = n
        self.name = "gain"


def test_export_refuses_unsupported_layers_and_modes():
    net = _net()
    with pytest.raises(ValueError, match=r"layer 'gain' \(_Gain\): no NIR mapping; supported layer types"):
        to_nir(Network(net.layers[:2] + [_Gain(9)]), 1.0)
    with pytest.raises(ValueError, match="soft reset .* has no NIR primitive.*allow_soft_reset"):
        to_nir(_net("soft"), 1.0)
    smooth = Network([SparseLinear(4, 3, seed=0), LIF(3, LIFParams(spike_fn="smooth"))])
    with pytest.raises(ValueError, match="smooth"):
        to_nir(smooth, 1.0)
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="dt: must be"):
            to_nir(net, bad)
    with pytest.raises(TypeError, match="dt: expected a real number"):
        to_nir(net, "1ms")
    with pytest.raises(TypeError, match="expected a snn_core Network"):
        to_nir(net.layers, 1.0)


def _lif(n, **kw):
    a = dict(tau=np.full(n, 0.02), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n))
    a.update(kw)
    return nir.LIF(**a)


@pytest.mark.parametrize("nodes,match", [
    (lambda: [nir.Conv2d(input_shape=(6, 6), weight=np.ones((2, 1, 3, 3)), stride=1, padding=0, dilation=2,
                         groups=1, bias=np.zeros(2))], r"dilation=\(2, 2\), groups=1; snn_core's convolutions have dilation 1"),
    (lambda: [nir.Conv2d(input_shape=(6, 6), weight=np.ones((2, 1, 3, 3)), stride=(1, 2), padding=0, dilation=1,
                         groups=1, bias=np.zeros(2))], r"stride=\(1, 2\); snn_core needs one integer for both axes"),
    (lambda: [nir.Conv2d(input_shape=(4, 4), weight=np.ones((2, 1, 3, 3)), stride=1, padding=0, dilation=1,
                         groups=1, bias=np.zeros(2)),
              nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))],
     r"\(SumPool2d\): cannot import: snn_core has no sum-pooling layer"),
    (lambda: [nir.Affine(weight=np.ones((3, 4)), bias=np.zeros(3)),
              nir.CubaLIF(tau_syn=np.ones(3), tau_mem=np.ones(3), r=np.ones(3), v_leak=np.zeros(3),
                          v_threshold=np.ones(3))], r"\(CubaLIF\): cannot import: .*synaptic-current"),
    (lambda: [nir.Affine(weight=np.ones((3, 4)), bias=np.zeros(3)), nir.Threshold(threshold=np.ones(3))],
     "Threshold is supported only directly after an LI"),
    (lambda: [nir.Affine(weight=np.ones((3, 4)), bias=np.zeros(3)), _lif(3, tau=np.array([0.02, 0.02, 0.03]))],
     r"tau differs between neurons \(0.02 .. 0.03\)"),
    (lambda: [nir.Affine(weight=np.ones((3, 4)), bias=np.zeros(3)), _lif(3, tau=np.full(3, 1e-4))],
     r"dt: must be <= tau_m"),
])
def test_import_refuses_what_snn_core_cannot_simulate(nodes, match):
    graph = nir.NIRGraph.from_list(*nodes(), type_check=False)
    with pytest.raises(ValueError, match=match):
        from_nir(graph, 1e-3)


def test_import_refuses_branches_cycles_and_bad_input(tmp_path):
    a = nir.Affine(weight=np.ones((3, 4)), bias=np.zeros(3))
    b, c = _lif(3), _lif(3)
    branching = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([4])}), "a": a, "b": b, "c": c,
                                    "output": nir.Output(output_type={"output": np.array([3])})},
                             edges=[("input", "a"), ("a", "b"), ("a", "c"), ("b", "output")], type_check=False)
    with pytest.raises(ValueError, match="'a' feeds several nodes"):
        from_nir(branching, 1e-3)
    cycle = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([4])}), "a": a, "b": b,
                                "output": nir.Output(output_type={"output": np.array([3])})},
                         edges=[("input", "a"), ("a", "b"), ("b", "a")], type_check=False)
    with pytest.raises(ValueError, match="several inputs|cycle"):
        from_nir(cycle, 1e-3)
    with pytest.raises(TypeError, match="expected a nir.NIRGraph"):
        from_nir({"nodes": {}}, 1e-3)
    junk = tmp_path / "junk.nir"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="not a readable NIR graph"):
        read_nir(junk)
    with pytest.raises(FileNotFoundError, match="no such file"):
        from_nir(tmp_path / "missing.nir", 1e-3)


# --------------------------------------------------------------------------
# checkpoints: an imported network becomes a Trainer and restores exactly
# --------------------------------------------------------------------------
def test_imported_network_becomes_a_checkpoint_that_restores(tmp_path):
    from snn_core.checkpoint import save_checkpoint
    from snn_core.training import network_from_checkpoint, restore_trainer
    from snn_core.config import TrainConfig
    from snn_core.training import Trainer, adopt_network

    src = mlp([784, 30, 10], density=0.2, seed=5, gain=2.0)
    graph = to_nir(src, 1e-3)
    net = from_nir(graph, 1e-3, fold_r=True)
    config = adopt_network(net, TrainConfig(out_dir=str(tmp_path), quiet=True, max_train=50))
    assert (config.hidden, config.sparse, config.output, config.tau_m) == ([30], True, "readout", 2.0)
    trainer = Trainer(config, network=net)
    save_checkpoint(tmp_path / "last.h5", trainer)
    x = _input(n=784, T=8, batch=3)
    restored = restore_trainer(tmp_path / "last.h5", quiet=True)
    assert src.forward(x).tobytes() == restored.network.forward(x).tobytes()
    loaded, cfg = network_from_checkpoint(tmp_path)
    assert loaded.forward(x).tobytes() == src.forward(x).tobytes() and cfg["hidden"] == [30]
    restored.fit(epochs=1, checkpoint_dir=False)  # fine-tuning runs (with rewiring on the imported structure)
    assert restored.epoch == 1


def test_adopt_network_refuses_what_a_config_cannot_describe():
    from snn_core.training import Trainer, adopt_network

    graph = _foreign_graph(np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"R=2; a TrainConfig fixes R=1 \(from_nir\(\.\.\., fold_r=True\)"):
        adopt_network(from_nir(graph, 1e-3, dtype=np.float32))
    with pytest.raises(ValueError, match="v_rest=0.1; a TrainConfig fixes v_rest=0"):
        adopt_network(from_nir(graph, 1e-3, dtype=np.float32, fold_r=True))
    with pytest.raises(ValueError, match="not float32"):
        adopt_network(from_nir(graph, 1e-3, dtype=np.float64))
    with pytest.raises(ValueError, match="a TrainConfig describes synapses -> LIF"):
        adopt_network(Network([LIF(4), SparseLinear(4, 3, seed=0)]))
    with pytest.raises(ValueError, match=r"takes 12 inputs .* the data \(mnist_5k\) has 784 features"):
        net = _net()
        for layer in net.layers[1::2]:
            layer.params = LIFParams(tau_m=3.0)
        Trainer(adopt_network(net), network=net)


def test_snntorch_loads_our_graph_with_the_same_spike_counts():
    """Optional cross-check (skipped unless snntorch is installed; never a dependency).

    snnTorch's ``import_from_nir(graph, dt)`` turns a NIR ``LIF`` into
    ``Leaky(beta = 1 - dt/tau, threshold = v_th / (r dt/tau), reset to zero,
    no reset delay)``: the same Euler recurrence as ours (it has no ``LI``,
    so the output layer is spiking here).
    """
    pytest.importorskip("snntorch", reason="snntorch is not installed (optional cross-check)")
    torch = pytest.importorskip("torch")
    from snntorch.import_nir import import_from_nir

    p = LIFParams.from_decay(0.9, v_th=1.0, reset="hard")
    net = mlp([10, 8, 4], density=0.6, hidden=p, readout=p, output="lif", seed=2, gain=3.0)
    x = _input(n=10, T=20, batch=2)
    ours = net.forward(x).sum(axis=0)
    model = import_from_nir(to_nir(net, 1e-4), dt=1e-4)
    counts, state = 0, None
    with torch.no_grad():
        for t in range(x.shape[0]):
            inp = torch.from_numpy(np.ascontiguousarray(x[t]))
            res = model(inp) if state is None else model(inp, state)
            if isinstance(res, tuple):  # nirtorch graph modules return (output, state)
                res, state = res[0], res[1]
            counts = counts + res.numpy()
    assert ours.sum() > 0
    assert np.array_equal(counts, ours)


# --------------------------------------------------------------------------
# the command line: import -> info / evaluate / plot / export / train --resume
# --------------------------------------------------------------------------
def test_cli_import_export_and_the_checkpoint_commands(tmp_path):
    from test_cli import run_cli

    src = mlp([784, 20, 10], density=0.2, seed=4, gain=2.0)
    write_nir(src, tmp_path / "src.nir", 1e-3)
    imp = tmp_path / "imp"
    r = run_cli("import", tmp_path / "src.nir", "--dt", "1e-3", "--out-dir", imp)
    assert r.returncode == 0, r.stderr
    assert "fc1        SparseLinear     784 -> 20" in r.stdout and f"wrote {imp / 'last.h5'}" in r.stdout
    r = run_cli("import", tmp_path / "src.nir", "--dt", "1e-3", "--out-dir", imp)  # nothing overwritten silently
    assert r.returncode == 1 and "exists; pass --force" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("info", imp / "last.h5")
    assert r.returncode == 0 and "not trained here yet" in r.stdout and "rewiring: no events" in r.stdout
    r = run_cli("evaluate", imp / "last.h5", "--energy-samples", "5")
    assert r.returncode == 0 and "test accuracy" in r.stdout, r.stderr
    r = run_cli("plot", imp, "--out", tmp_path / "fig")
    assert r.returncode == 0, r.stderr
    figs = sorted(p.name for p in (tmp_path / "fig").iterdir())
    assert "connectivity_fc1.png" in figs and "raster_lif1.png" in figs and "training_curves.png" not in figs
    r = run_cli("export", imp, "--nir", tmp_path / "back.nir", "--dt", "1e-3")
    assert r.returncode == 0 and "fc1              Affine" in r.stdout, r.stderr
    back, orig = nir.read(str(tmp_path / "back.nir")), to_nir(src, 1e-3)
    for name in ("fc1", "fc2"):
        assert np.array_equal(back.nodes[name].weight, orig.nodes[name].weight)
        assert np.array_equal(back.nodes[name].bias, orig.nodes[name].bias)
    np.testing.assert_array_equal(back.nodes["lif1"].tau, orig.nodes["lif1"].tau)
    r = run_cli("train", "--resume", imp / "last.h5", "--epochs", "1", "--max-train", "60", "--quiet")
    assert r.returncode == 0 and "resumed" in r.stdout and "test accuracy" in r.stdout, r.stderr


def test_cli_refusals_are_one_line(tmp_path):
    from test_cli import run_cli

    (tmp_path / "junk.nir").write_bytes(b"not a NIR file")
    r = run_cli("import", tmp_path / "junk.nir", "--dt", "1e-3", "--out-dir", tmp_path / "o")
    assert r.returncode == 1 and "not a readable NIR graph" in r.stderr and "Traceback" not in r.stderr
    write_nir(_net(), tmp_path / "small.nir", 1e-3)  # R = 1.3 folds; v_rest = 0.05 cannot be a TrainConfig
    r = run_cli("import", tmp_path / "small.nir", "--dt", "1e-3", "--out-dir", tmp_path / "o")
    assert r.returncode == 1 and "v_rest=0.05; a TrainConfig fixes v_rest=0" in r.stderr
    assert not (tmp_path / "o").exists()
    r = run_cli("export", tmp_path / "nowhere", "--nir", tmp_path / "x.nir", "--dt", "1e-3")
    assert r.returncode == 1 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("import", tmp_path / "small.nir", "--out-dir", tmp_path / "o")
    assert r.returncode == 2 and "--dt" in r.stderr  # required: there is no universal time unit
