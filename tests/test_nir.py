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
    _assert_same_forward(a, b, x)


def _assert_same_forward(a, b, x):
    """Bit-identical outputs and recordings of every layer."""
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
    import inspect

    # snnTorch 1.0 takes no dt and fixes it at 1e-4 inside (hence dt = 1e-4 here); older releases took dt=
    kwargs = {"dt": 1e-4} if "dt" in inspect.signature(import_from_nir).parameters else {}
    model = import_from_nir(to_nir(net, 1e-4), **kwargs)
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


# --------------------------------------------------------------------------
# convolutional layers: Conv2d, AvgPool2d, Flatten, folded BatchNorm2d, residual blocks
# --------------------------------------------------------------------------
from snn_core.conv import (AvgPool2d, BatchNorm2d, Conv2d, Flatten, MaxPool2d, ResidualBlock,  # noqa: E402
                           SparseConv2d, fold_batchnorm)


def _conv_structure(layer):
    if isinstance(layer, SparseConv2d):
        return _structure(layer), layer.geometry
    if isinstance(layer, Conv2d):
        return type(layer), layer.weight_param.value.tobytes(), layer.geometry
    if isinstance(layer, AvgPool2d):
        return type(layer), layer.geometry
    if isinstance(layer, Flatten):
        return type(layer), layer.in_features
    return _structure(layer)


def _assert_same_modules(a, b, x):
    """Same layer types, names, geometry, connections, biases; bit-identical outputs and recordings."""
    ma, mb = a.modules(), b.modules()
    assert [l.name for l in ma] == [l.name for l in mb]
    assert [type(l) for l in a.layers] == [type(l) for l in b.layers]
    for la, lb in zip(ma, mb):
        assert _conv_structure(la) == _conv_structure(lb), la.name
        if getattr(la, "bias", None) is not None or getattr(lb, "bias", None) is not None:
            assert la.bias.value.tobytes() == lb.bias.value.tobytes(), la.name
    _assert_same_forward(a, b, x)


def _hidden(reset="hard"):
    return LIFParams(tau_m=3.0, dt=1.0, v_th=0.5, v_reset=-0.1 if reset == "hard" else 0.0, v_rest=0.02, R=1.2,
                     reset=reset)


def _conv_net(kind, reset="hard", bias=True, dtype=np.float32, stride=1, padding=1, seed=0):
    """1x8x8 -> conv 3x3 (4 channels) -> LIF -> AvgPool2 -> Flatten -> fc -> Readout."""
    p = _hidden(reset)
    rng = np.random.default_rng(seed)
    kw = dict(input_size=(8, 8), bias=bias, seed=rng, gain=2.5, dtype=dtype, name="conv1")
    conv = SparseConv2d(1, 4, 3, stride, padding, density=0.5, **kw) if kind == "sparse" \
        else Conv2d(1, 4, 3, stride, padding, **kw)
    if kind == "sparse":
        conv.weight.data[:3] = 0.0  # explicit zero-weight connections
    else:
        conv.weight_param.value[0, :2] = 0.0
    if bias:
        conv.bias.value[...] = rng.normal(0, 0.2, 4)
    g = conv.geometry
    pool = AvgPool2d(4, (g.oh, g.ow), 2, dtype=dtype, name="pool1")
    n = pool.out_features
    return Network([conv, LIF(conv.out_features, p, dtype=dtype, name="lif1"), pool, Flatten(n, dtype=dtype),
                    SparseLinear(n, 3, density=0.6, seed=rng, gain=2.0, dtype=dtype, name="fc"),
                    Readout(3, p, dtype=dtype, name="readout")])


def _images(n=64, T=6, batch=3, seed=2, dtype=np.float32):
    return (np.random.default_rng(seed).random((T, batch, n)) < 0.4).astype(dtype)


CONV_CASES = [pytest.param(kind, reset, bias, dtype, stride, padding,
                           id=f"{kind}-{reset}-{'bias' if bias else 'nobias'}-{np.dtype(dtype).name}-s{stride}p{padding}")
              for kind, reset, bias, dtype, stride, padding in (
                  ("sparse", "hard", True, np.float32, 1, 1), ("sparse", "none", False, np.float64, 1, 0),
                  ("dense", "hard", False, np.float32, 1, 1), ("dense", "none", True, np.float64, 1, 1),
                  ("sparse", "soft", True, np.float32, 2, 1), ("dense", "soft", False, np.float32, 2, 1))]


@pytest.mark.parametrize("kind,reset,bias,dtype,stride,padding", CONV_CASES)
def test_conv_round_trip_is_bit_identical(kind, reset, bias, dtype, stride, padding, tmp_path):
    net = _conv_net(kind, reset, bias, dtype, stride, padding)
    graph = to_nir(net, 1e-3, allow_soft_reset=True)
    conv = graph.nodes["conv1"]
    assert isinstance(conv, nir.Conv2d) and conv.weight.shape == (4, 1, 3, 3) and conv.weight.dtype == dtype
    assert tuple(conv.stride) == (stride, stride) and tuple(conv.padding) == (padding, padding)
    assert tuple(conv.input_shape) == (8, 8) and tuple(graph.nodes["input"].input_type["input"]) == (1, 8, 8)
    assert np.array_equal(conv.weight.reshape(4, -1), np.asarray(net.layers[0].weight.todense()
                                                                   if kind == "sparse" else net.layers[0].weight))
    assert graph.nodes["lif1"].tau.shape == tuple(graph.nodes["conv1"].output_type["output"])  # (C, H, W) neurons
    assert isinstance(graph.nodes["pool1"], nir.AvgPool2d) and list(graph.nodes["pool1"].kernel_size) == [2, 2]
    assert isinstance(graph.nodes["flatten"], nir.Flatten) and graph.nodes["flatten"].start_dim == 0
    x = _images(dtype=dtype)
    _assert_same_modules(net, from_nir(graph, 1e-3), x)
    write_nir(net, tmp_path / "conv.nir", 1e-3, allow_soft_reset=True)
    back = from_nir(tmp_path / "conv.nir", 1e-3)
    _assert_same_modules(net, back, x)
    if kind == "sparse":  # connectivity: nnz and positions (explicit zeros included)
        assert back.layers[0].nnz == net.layers[0].nnz
        assert back.layers[0].weight.indices.tobytes() == net.layers[0].weight.indices.tobytes()


def test_conv_zeros_become_absent_connections_unless_keep_zeros():
    net = _conv_net("sparse")
    graph = to_nir(net, 1e-3)
    for node in graph.nodes.values():
        node.metadata = {}  # a foreign graph: no snn_core metadata
    conv = from_nir(graph, 1e-3).layers[0]
    assert type(conv) is SparseConv2d and conv.nnz == net.layers[0].nnz - 3 == np.count_nonzero(graph.nodes["conv1"].weight)
    assert conv.bias is not None
    dense = from_nir(graph, 1e-3, keep_zeros=True).layers[0]
    assert type(dense) is Conv2d and dense.nnz == 4 * 9
    sparse = from_nir(to_nir(_conv_net("dense"), 1e-3), 1e-3, keep_zeros=False).layers[0]
    assert type(sparse) is SparseConv2d and sparse.nnz == 4 * 9 - 2
    nobias = _conv_net("sparse", bias=False)
    g2 = to_nir(nobias, 1e-3)
    assert not g2.nodes["conv1"].bias.any()  # NIR's Conv2d always has a bias: zeros
    for node in g2.nodes.values():
        node.metadata = {}
    assert from_nir(g2, 1e-3).layers[0].bias is None  # an all-zero bias is no bias


def _conv_ref(x, W, b, stride, pad):
    """Textbook cross-correlation of (N, C, H, W) images with (c_out, c_in, kh, kw) kernels (PyTorch's Conv2d)."""
    N, C, H, Wd = x.shape
    co, _, kh, kw = W.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (H + 2 * pad - kh) // stride + 1, (Wd + 2 * pad - kw) // stride + 1
    out = np.zeros((N, co, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[:, :, i, j] = np.einsum("ncyx,ocyx->no", patch, W)
    return out + b[None, :, None, None]


def test_foreign_conv_graph_matches_an_independent_simulation():
    """A conv graph written with the nir package's own API (torch layout: (C, H, W), no batch axis,
    cross-correlation, C-order flatten) against a NumPy simulation of the NIR equations."""
    rng = np.random.default_rng(5)
    dt, tau, thr = 1e-3, 4e-3, 0.6
    W1 = rng.normal(0, 0.6, (3, 2, 3, 3)) * (rng.random((3, 2, 3, 3)) < 0.6)
    b1 = rng.normal(0, 0.1, 3)
    W2 = rng.normal(0, 0.5, (4, 3 * 3 * 3))
    shape = (3, 6, 6)
    nodes = {"input": nir.Input(input_type={"input": np.array([2, 6, 6])}),
             "c": nir.Conv2d(input_shape=(6, 6), weight=W1, stride=1, padding=1, dilation=1, groups=1, bias=b1),
             "n": nir.LIF(tau=np.full(shape, tau), r=np.ones(shape), v_leak=np.zeros(shape),
                          v_threshold=np.full(shape, thr), v_reset=np.zeros(shape)),
             "p": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
             "f": nir.Flatten(input_type={"input": np.array([3, 3, 3])}, start_dim=0, end_dim=-1),
             "a": nir.Affine(weight=W2, bias=np.zeros(4)),
             "o": nir.LI(tau=np.full(4, tau), r=np.ones(4), v_leak=np.zeros(4)),
             "output": nir.Output(output_type={"output": np.array([4])})}
    names = list(nodes)
    graph = nir.NIRGraph(nodes=nodes, edges=list(zip(names[:-1], names[1:])))
    net = from_nir(graph, dt, dtype=np.float64)
    assert [type(l).__name__ for l in net.layers] == ["SparseConv2d", "LIF", "AvgPool2d", "Flatten", "SparseLinear",
                                                      "Readout"]
    T, B = 8, 3
    x = (rng.random((T, B, 2 * 36)) < 0.5).astype(np.float64)
    ours = net.forward(x)
    v, u_out = np.zeros((B,) + shape), np.zeros((B, 4))
    k = dt / tau
    for t in range(T):
        img = x[t].reshape(B, 2, 6, 6)  # channel-major features = NIR's (C, H, W)
        u = v + k * (-v + _conv_ref(img, W1, b1, 1, 1))
        s = (u >= thr).astype(np.float64)
        v = np.where(s > 0, 0.0, u)
        pooled = s.reshape(B, 3, 3, 2, 3, 2).mean(axis=(3, 5))
        u_out = u_out + k * (-u_out + pooled.reshape(B, -1) @ W2.T)
        np.testing.assert_allclose(ours[t], u_out, rtol=1e-10, atol=1e-12)


def _bn(c, size, rng, dtype=np.float32, name="bn1"):
    bn = BatchNorm2d(c, size, dtype=dtype, name=name)
    bn.gamma.value[...] = rng.uniform(0.5, 1.5, c)
    bn.beta.value[...] = rng.normal(0, 0.2, c)
    bn.running_mean, bn.running_var = rng.normal(0, 0.3, c), rng.uniform(0.5, 2.0, c)
    return bn


def test_batchnorm_is_folded_with_its_running_statistics():
    rng = np.random.default_rng(3)
    p = _hidden()
    conv = SparseConv2d(1, 4, 3, 1, 1, density=0.5, input_size=(8, 8), seed=0, gain=2.5, name="conv1")
    bn = _bn(4, (8, 8), rng)
    tail = lambda: [LIF(256, p, name="lif1"), AvgPool2d(4, (8, 8), 2, name="pool1"), Flatten(64),  # noqa: E731
                    Linear(64, 3, seed=1, gain=2.0, name="fc"), Readout(3, p, name="readout")]
    net = Network([conv, bn] + tail())  # a fresh Network is in training mode: export still uses running stats
    graph = to_nir(net, 1e-3)
    assert "bn1" not in graph.nodes and graph.nodes["conv1"].metadata["snn_core_folded_batchnorm"] == "bn1"
    back = from_nir(graph, 1e-3)
    assert [type(l) for l in back.layers][:2] == [SparseConv2d, LIF]
    folded = Network([fold_batchnorm(conv, bn)] + tail())
    x = _images()
    _assert_same_modules(folded, back, x)  # exactly conv.fold_batchnorm's convolution, connections unchanged
    assert back.layers[0].weight.indices.tobytes() == conv.weight.indices.tobytes()
    net.eval()
    np.testing.assert_allclose(back.forward(x)[:, :, :], net.forward(x), rtol=1e-4, atol=1e-5)


def _block_net(identity, reset="hard", dtype=np.float64):
    """conv -> LIF -> block(conv-LIF-conv [+ 1x1 stride-2 conv shortcut]) -> LIF -> pool -> flatten -> fc -> LI."""
    p = _hidden(reset)
    rng = np.random.default_rng(4)
    c = lambda ci, co, k, s, pad, size, name: SparseConv2d(ci, co, k, s, pad, density=0.6, input_size=size,  # noqa
                                                            bias=True, seed=rng, gain=2.0, dtype=dtype, name=name)
    stem = c(1, 3, 3, 1, 1, (8, 8), "conv0")
    st = 1 if identity else 2
    side = 8 // st
    main = [c(3, 3 if identity else 4, 3, st, 1, (8, 8), "conv1"), LIF(side * side * (3 if identity else 4), p,
                                                                     dtype=dtype, name="lif1"),
            c(3 if identity else 4, 3 if identity else 4, 3, 1, 1, (side, side), "conv2")]
    shortcut = None if identity else [Conv2d(3, 4, 1, 2, 0, input_size=(8, 8), bias=False, seed=rng, dtype=dtype,
                                             name="down")]
    ch = 3 if identity else 4
    n = ch * side * side
    block = ResidualBlock(main, shortcut, name="layer1.0")
    pool = AvgPool2d(ch, (side, side), side, dtype=dtype, name="avgpool")
    return Network([stem, LIF(3 * 64, p, dtype=dtype, name="lif0"), block, LIF(n, p, dtype=dtype, name="lif"), pool,
                    Flatten(ch, dtype=dtype), Linear(ch, 3, seed=rng, gain=2.0, dtype=dtype, name="fc"),
                    Readout(3, p, dtype=dtype, name="readout")])


@pytest.mark.parametrize("identity", [True, False], ids=["identity", "downsample"])
@pytest.mark.parametrize("reset", ["hard", "none"])
def test_residual_block_is_exported_as_branches_summed_by_fan_in(identity, reset, tmp_path):
    net = _block_net(identity, reset)
    graph = write_nir(net, tmp_path / "res.nir", 1e-3)
    lif0 = "lif0" if reset == "hard" else "lif0_threshold"  # a no-reset LIF is LI -> Threshold
    into = sorted(a for a, b in graph.edges if b == "lif")
    assert into == (["layer1_0_conv2", lif0] if identity else ["layer1_0_conv2", "layer1_0_down"])
    out_of_lif0 = sorted(b for a, b in graph.edges if a == lif0)
    assert out_of_lif0 == (["layer1_0_conv1", "lif"] if identity else ["layer1_0_conv1", "layer1_0_down"])
    assert all("." not in name for name in graph.nodes)  # torch-based readers forbid dots in module names
    x = _images(dtype=np.float64)
    for back in (from_nir(graph, 1e-3), from_nir(tmp_path / "res.nir", 1e-3)):
        assert isinstance(back.layers[2], ResidualBlock) and (back.layers[2].shortcut is None) == identity
        _assert_same_modules(net, back, x)
    graph = to_nir(net, 1.0)  # dt = the layers' own step: tau_m is exact without the metadata
    for node in graph.nodes.values():  # without metadata: the longer branch is the main one
        node.metadata = {}
    bare = from_nir(graph, 1.0)
    assert isinstance(bare.layers[2], ResidualBlock) and len(bare.layers[2].main) == 3
    assert (bare.layers[2].shortcut is None) == identity and bare.layers[2].name == "block1"
    # fc imports as SparseLinear without the metadata (zeros = no connection): another summation order
    np.testing.assert_allclose(bare.forward(x), net.forward(x), rtol=1e-12, atol=1e-12)


def test_conv_export_refusals_name_the_layer():
    rng = np.random.default_rng(0)
    p = _hidden()
    mp = Network([SparseConv2d(1, 2, 3, 1, 1, input_size=(4, 4), seed=0, name="conv1"), LIF(32, p),
                  MaxPool2d(2, (4, 4), 2, name="pool1")])
    with pytest.raises(ValueError, match=r"layer 'pool1' \(MaxPool2d\): NIR 1.0 has no max-pooling node"):
        to_nir(mp, 1e-3)
    lone = Network([AvgPool2d(1, (4, 4), 2, name="pool"), _bn(1, (2, 2), rng, name="bn"), LIF(4, p)])
    with pytest.raises(ValueError, match=r"layer 'bn' \(BatchNorm2d\): batch norm is exported folded into the conv"):
        to_nir(lone, 1e-3)
    rect = Network([SparseConv2d(1, 2, (3, 1), input_size=(4, 4), seed=0, name="rect")])
    with pytest.raises(ValueError, match=r"layer 'rect': kernel 3x1 is not square"):
        to_nir(rect, 1e-3)
    mk = lambda name: ResidualBlock([SparseConv2d(1, 1, 3, 1, 1, input_size=(4, 4), seed=0, name="c")], name=name)  # noqa
    with pytest.raises(ValueError, match=r"layer 'b2' \(ResidualBlock\): follows another residual block directly"):
        to_nir(Network([mk("b1"), mk("b2")]), 1e-3)
    nested = ResidualBlock([mk("inner")], name="outer")
    with pytest.raises(ValueError, match=r"a residual block inside another block's branch"):
        to_nir(Network([nested]), 1e-3)


def test_conv_import_refusals_name_the_node():
    def graph(*nodes, shape=(1, 4, 4)):
        d = {"input": nir.Input(input_type={"input": np.array(shape)})}
        d.update({f"n{i}": n for i, n in enumerate(nodes)})
        d["output"] = nir.Output(output_type={"output": np.array([1])})
        names = list(d)
        return nir.NIRGraph(nodes=d, edges=list(zip(names[:-1], names[1:])), type_check=False)

    pool = nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([1, 1]), padding=np.array([0, 0]))
    with pytest.raises(ValueError, match=r"node 'n0': .*non-overlapping windows"):
        from_nir(graph(pool), 1e-3)
    flat = nir.Flatten(input_type={"input": np.array([1, 4, 4])}, start_dim=1, end_dim=-1)
    with pytest.raises(ValueError, match=r"node 'n0': Flatten\(start_dim=1, end_dim=-1\) of \(1, 4, 4\) gives shape "
                                         r"\(1, 16\); only flattening everything"):
        from_nir(graph(flat), 1e-3)
    conv = nir.Conv2d(input_shape=(4, 4), weight=np.ones((2, 3, 3, 3)), stride=1, padding=1, dilation=1, groups=1,
                      bias=np.zeros(2))
    with pytest.raises(ValueError, match=r"node 'n0': expects 3 input channels, gets a \(1, 4, 4\) input"):
        from_nir(graph(conv), 1e-3)


def test_cli_exports_a_convnet_checkpoint_and_explains_that_conv_import_is_api_only(tmp_path):
    from snn_core.checkpoint import save_checkpoint
    from snn_core.config import TrainConfig
    from snn_core.training import Trainer
    from test_cli import run_cli

    cfg = TrainConfig(model="convnet", channels=[2, 3], encoder="direct", steps=2, density=0.3, init="uniform",
                      quiet=True, max_train=40, out_dir=str(tmp_path / "run"))
    trainer = Trainer(cfg)
    (tmp_path / "run").mkdir()
    save_checkpoint(tmp_path / "run" / "last.h5", trainer)
    r = run_cli("export", tmp_path / "run" / "last.h5", "--last", "--nir", tmp_path / "conv.nir", "--dt", "1e-3")
    assert r.returncode == 0, r.stderr
    assert "conv1            Conv2d" in r.stdout and "pool2            AvgPool2d" in r.stdout
    net = trainer.network.eval()
    back = from_nir(tmp_path / "conv.nir", 1e-3)
    assert [l.name for l in back.layers] == [l.name for l in net.layers if not isinstance(l, BatchNorm2d)]
    x = trainer._encode(trainer.x_test[:4], (3, 0))
    np.testing.assert_allclose(back.forward(x), net.forward(x), rtol=1e-4, atol=1e-5)
    r = run_cli("import", tmp_path / "conv.nir", "--dt", "1e-3", "--out-dir", tmp_path / "imp")
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "convolutional graphs import through the Python API only" in r.stderr
    assert not (tmp_path / "imp").exists()


@pytest.mark.parametrize("model", ["convnet", "vggsnn", "resnet19"])
def test_model_builders_export_and_read_back(model, tmp_path):
    """The conv models (BN folded): connections survive, outputs match evaluation mode, a second round trip is exact."""
    from snn_core.models import convnet, resnet19, vggsnn

    shape = {"convnet": (1, 8, 8), "vggsnn": (2, 16, 16), "resnet19": (3, 8, 8)}[model]
    build = {"convnet": lambda: convnet(shape, 3, channels=(2, 3), density=0.4),
             "vggsnn": lambda: vggsnn(shape, 3, width=1 / 16, density=0.4),
             "resnet19": lambda: resnet19(shape, 3, width=1 / 16, density=0.4)}[model]
    net = build().eval()
    write_nir(net, tmp_path / "m.nir", 1e-3)
    back = from_nir(tmp_path / "m.nir", 1e-3)
    synaptic = lambda n: [(l.name, l.nnz, l.weight.indices.tobytes() if hasattr(l.weight, "indices") else None)  # noqa
                          for l in n.modules() if hasattr(l, "weight_param")]
    assert synaptic(back) == synaptic(net)
    assert not any(isinstance(l, BatchNorm2d) for l in back.modules())
    x = _images(int(np.prod(shape)), T=4, batch=2)
    np.testing.assert_allclose(back.forward(x), net.forward(x), rtol=1e-4, atol=1e-4)
    _assert_same_modules(back, from_nir(to_nir(back, 1e-3), 1e-3), x)
