"""One engine on every backend: the same layers, Network, optimizers, Rewirer
and Trainer on ``reference`` (readable NumPy), ``cpu`` (Numba) and ``cuda``
(numba.cuda; under the CUDA simulator without a GPU, see conftest.py).

Kernel parity through the Backend interface, gradients, a training step,
rewiring invariants, moving a model and its optimizer, device-independent
state, a custom layer (the docs/design.md ``Gain``) and a one-epoch Trainer
run compared across backends. Shapes are tiny: the simulator runs every GPU
thread as Python.
"""
from __future__ import annotations

import numpy as np
import pytest

from snn_core import LIF, SGD, Adam, LIFParams, Network, Parameter, Readout, SparseLinear, ce_membrane, mlp
from snn_core.backend import cuda_available
from snn_core.backends import BACKENDS, get_backend
from snn_core.checkpoint import save_checkpoint
from snn_core.training import restore_trainer
from snn_core.config import TrainConfig
from snn_core.data.datasets import Dataset
from snn_core.kernels import reference as R
from snn_core.layers import Layer
from snn_core.structure import Rewirer
from snn_core.training import Trainer

F32 = np.float32
HAVE_CUDA = cuda_available()
DEVICES = [pytest.param(d, marks=pytest.mark.skipif(d == "cuda" and not HAVE_CUDA, reason="no CUDA device/simulator"))
           for d in BACKENDS]


def close(a, b, what, rtol=1e-5, atol=1e-6):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    scale = max(1.0, float(np.abs(b).max(initial=0.0)))
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol * scale, err_msg=what)


def test_get_backend_names_and_errors():
    assert get_backend("cpu").name == "cpu" and get_backend("reference").name == "reference"
    assert get_backend("cpu") is get_backend(get_backend("cpu"))
    with pytest.raises(ValueError, match=r"device: unknown backend 'tpu'"):
        get_backend("tpu")
    with pytest.raises(ValueError, match=r"device"):
        TrainConfig(device="gpu")


# ---------------------------------------------------------------------------
# kernels through the interface, against the readable twins
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reset,detach", [("hard", False), ("hard", True), ("soft", False), ("none", False)])
def test_neuron_kernels_match_reference(device, reset, detach):
    bk = get_backend(device)
    rng = np.random.default_rng(len(reset) + detach)
    prm = LIFParams(tau_m=3.0, v_reset=-0.1, reset=reset, detach_reset=detach, surrogate="sigmoid").kernel_params(F32)
    I = rng.normal(2.0, 1.5, size=(3, 5, 2)).astype(F32)
    v0 = rng.normal(0, 0.3, size=(3, 2)).astype(F32)
    u, s, vl = bk.empty(I.shape, F32), bk.empty(I.shape, F32), bk.empty((3, 2), F32)
    bk.lif_forward(bk.to_device(I), bk.to_device(v0), prm, u, s, vl)
    ur, sr, vr = R.lif_forward(I, v0, prm)
    assert np.array_equal(bk.to_host(s), sr) and 0 < sr.mean() < 1
    close(bk.to_host(u), ur, "u")
    close(bk.to_host(vl), vr, "v_last")
    gs = rng.normal(size=I.shape).astype(F32)
    gI = bk.empty(I.shape, F32)
    bk.lif_backward(bk.to_device(gs), bk.to_device(ur), bk.to_device(sr), prm, gI)
    close(bk.to_host(gI), R.lif_backward(gs, ur, sr, prm), "lif gI")
    bk.readout_forward(bk.to_device(I), bk.to_device(v0), prm, u)
    close(bk.to_host(u), R.readout_forward(I, v0, prm), "readout u")
    bk.readout_backward(bk.to_device(gs), prm, gI)
    close(bk.to_host(gI), R.readout_backward(gs, prm), "readout gI")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("spikes", [False, True])
def test_synapse_and_optimizer_kernels_match_reference(device, spikes):
    from snn_core.sparse import random_connectivity, transpose_structure

    bk = get_backend(device)
    rng = np.random.default_rng(7 + spikes)
    n_out, n_in, N = 5, 8, 6
    indptr, indices = random_connectivity(n_out, n_in, 0.6, rng)
    data = rng.normal(size=len(indices)).astype(F32)
    bias = rng.normal(size=n_out).astype(F32)
    X = (rng.random((n_in, N)) < 0.4).astype(F32) if spikes else rng.normal(size=(n_in, N)).astype(F32)
    G = rng.normal(size=(n_out, N)).astype(F32)
    G[1] = 0.0  # a row without gradient (cpu skips it)
    d = {k: bk.to_device(v) for k, v in dict(indptr=indptr, indices=indices, data=data, bias=bias, X=X, G=G).items()}
    scratch = {}
    pack = bk.pack_spikes(d["X"], n_out, len(indices), scratch, True if spikes else None)
    assert (pack is not None) == (spikes and device == "cpu")  # packing is a cpu capability
    Y = bk.empty((n_out, N), F32)
    bk.csr_forward(d["indptr"], d["indices"], d["data"], d["bias"], d["X"], Y, pack, scratch)
    close(bk.to_host(Y), R.csr_forward(indptr, indices, data, bias, X), "csr_forward")
    gw, gb = bk.to_device(np.ones(len(indices), F32)), bk.empty(n_out, F32)
    rownz = bk.csr_grad(d["indptr"], d["indices"], d["G"], d["X"], gw, True, gb, pack, scratch)
    close(bk.to_host(gw), 1 + R.csr_grad_at(indptr, indices, G, X), "csr_grad accumulate")
    close(bk.to_host(gb), G.sum(axis=1), "bias grad")
    t = [bk.to_device(a) for a in transpose_structure(indptr, indices, n_in)]
    GX = bk.empty((n_in, N), F32)
    bk.csr_backward_input(*t, d["data"], d["G"], GX, rownz)
    close(bk.to_host(GX), R.csr_backward_input(indptr, indices, data, G, n_in), "csr_backward_input")
    w, g, m, v = (rng.normal(size=9).astype(F32) for _ in range(4))
    v = np.abs(v)
    args = (F32(0.01), F32(0.9), F32(0.999), F32(1e-8), F32(1 - 0.9 ** 2), F32(1 - 0.999 ** 2), F32(0.01))
    dw, dm, dv = bk.to_device(w.copy()), bk.to_device(m.copy()), bk.to_device(v.copy())
    bk.adam_update(dw, bk.to_device(g), dm, dv, *args)
    for got, want, name in zip((dw, dm, dv), R.adam_update(w, g, m, v, *args), "wmv"):
        close(bk.to_host(got), want, f"adam {name}")
    dw, db = bk.to_device(w.copy()), bk.to_device(m.copy())
    bk.sgd_update(dw, bk.to_device(g), db, F32(0.05), F32(0.9), True, F32(0.001))
    for got, want, name in zip((dw, db), R.sgd_update(w, g, m, F32(0.05), F32(0.9), True, F32(0.001)), ("w", "buf")):
        close(bk.to_host(got), want, f"sgd {name}")


def test_every_compiled_kernel_names_its_readable_twin():
    """Each public cpu/cuda kernel's docstring says "Readable twin:" and the twin exists."""
    import importlib
    import re

    from snn_core.backends.base import Backend

    modules = ["snn_core.kernels.cpu", "snn_core.kernels.conv_cpu"] + (
        ["snn_core.kernels.cuda", "snn_core.kernels.conv_cuda"] if HAVE_CUDA else [])
    # the serial/parallel choice: the chooser, its threshold and layer, its cost models; the borrowed-view helper;
    # the error the cross-entropy kernel raises for labels out of range (shared with the losses)
    no_twin = {"pick_version", "parallel_min_ns", "threading_layer", "spike_work_ns", "rows_ns", "borrow",
               "label_range_error"}
    for name in modules:
        mod = importlib.import_module(name)
        for fn_name, fn in vars(mod).items():
            if fn_name.startswith("_") or not callable(fn) or getattr(fn, "__module__", "") != name:
                continue
            doc = fn.__doc__ or ""
            if fn_name in no_twin:
                assert "no reference twin" in doc or "no twin" in doc, fn_name
                continue
            m = re.search(r"Readable twin: (?::func:`snn_core\.kernels\.reference\.(\w+)`|"
                          r":meth:`snn_core\.backends\.base\.Backend\.(\w+)`|``[^`]+``)", doc)
            assert m, f"{name}.{fn_name}: docstring does not name its readable twin"
            if m.group(1):
                assert hasattr(R, m.group(1)), f"{name}.{fn_name}: twin reference.{m.group(1)} does not exist"
            if m.group(2):
                assert hasattr(Backend, m.group(2)), f"{name}.{fn_name}: twin Backend.{m.group(2)} does not exist"


# ---------------------------------------------------------------------------
# networks: gradients, a training step, moving model and optimizer
# ---------------------------------------------------------------------------
def _batch(seed=0, T=4, B=3, n=10, classes=3):
    rng = np.random.default_rng(seed)
    return (rng.random((T, B, n)) < 0.4).astype(F32), rng.integers(0, classes, B)


def _steps(net, opt, x, y, n):
    losses = []
    for _ in range(n):
        out = net.backend.to_host(net.forward(x))
        loss, g = ce_membrane(out, y)
        net.zero_grad()
        net.backward(g)
        opt.step()
        losses.append(loss)
    return losses


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sparse", [True, False])
def test_gradients_and_training_step_match_cpu(device, sparse):
    x, y = _batch()
    nets = {d: mlp([10, 7, 3], density=0.5, sparse=sparse, seed=1).to(d) for d in ("cpu", device)}
    grads = {}
    for d, net in nets.items():
        out = net.forward(x)
        assert out.shape == (4, 3, 3)
        _, g = ce_membrane(net.backend.to_host(out), y)
        net.zero_grad()
        net.backward(g)
        grads[d] = [net.layers[i].backend.to_host(p.grad) for i in range(len(net.layers))
                    for p in net.layers[i].parameters()]
    for a, b in zip(grads[device], grads["cpu"]):
        close(a, b, f"{device} gradient", atol=1e-5)
    losses = {d: _steps(net, SGD(net.parameters(), lr=0.2, momentum=0.9), x, y, 3) for d, net in nets.items()}
    close(losses[device], losses["cpu"], "losses", atol=1e-5)
    sa, sb = nets[device].state_dict(), nets["cpu"].state_dict()
    for name in sb:
        for k in sb[name]:
            close(sa[name][k], sb[name][k], f"{name}.{k}", atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_lif_forward_leaves_v_last_on_the_backend_until_read(device, monkeypatch):
    """LIF.forward copies nothing to the host (on cuda a copy would wait for the device at every
    step); v_last is copied when read, once per call, and equals the reference's final membrane."""
    rng = np.random.default_rng(5)
    prm = LIFParams(tau_m=3.0, reset="soft")
    x = rng.normal(1.0, 1.0, size=(4, 3, 6)).astype(F32)
    layer = LIF(6, prm).to(device)
    copies = []
    real = layer.backend.to_host
    monkeypatch.setattr(layer.backend, "to_host", lambda a: copies.append(a.shape) or real(a))
    out = layer.forward(x)
    assert copies == []
    v = layer.v_last
    assert copies == [(6, 3)] and layer.v_last is v  # one copy, cached until the next call
    _, _, vr = R.lif_forward(np.ascontiguousarray(x.transpose(2, 0, 1)), np.zeros((6, 3), F32),
                             prm.kernel_params(F32))
    close(v, vr.T, "v_last")
    assert np.array_equal(real(out), real(layer.forward(x)))  # the same spikes from the same input
    assert layer.v_last is not v  # a new call, a new v_last
    layer.reset_state()
    assert layer.v_last is None


@pytest.mark.parametrize("device", DEVICES)
def test_to_moves_model_and_optimizer_state(device):
    """Two steps on cpu, move, two more steps == four steps on cpu (Adam moments and step count follow)."""
    x, y = _batch(1)
    a = mlp([10, 7, 3], density=0.5, seed=2)
    b = mlp([10, 7, 3], density=0.5, seed=2)
    oa, ob = Adam(a.parameters(), lr=0.01, eps=1e-3), Adam(b.parameters(), lr=0.01, eps=1e-3)
    _steps(a, oa, x, y, 4)
    _steps(b, ob, x, y, 2)
    b.to(device)
    assert b.device == device and all(layer.backend.name == device for layer in b.layers)
    _steps(b, ob, x, y, 2)
    assert ob.state_devices == [device] * len(ob.params) and ob.iteration == 4
    sa, sb = a.state_dict(), b.state_dict()
    for name in sa:
        for k in sa[name]:
            close(sb[name][k], sa[name][k], f"{name}.{k}", atol=1e-5)
    opt_a, opt_b = oa.state_dict(), ob.state_dict()
    for sta, stb in zip(opt_a["state"], opt_b["state"]):
        for k in sta:
            assert isinstance(stb[k], np.ndarray)  # state_dict is host arrays on every backend
            close(stb[k], sta[k], f"adam {k}", atol=1e-5)
    b.to("cpu")
    close(b.layers[0].weight.toarray(), a.layers[0].weight.toarray(), "weights back on cpu", atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("prune,grow", [("magnitude", "random"), ("gradient", "gradient"), ("set", "momentum")])
def test_rewiring_invariants_and_structure_match_cpu(device, prune, grow):
    x, y = _batch(2, n=12)
    runs = {}
    for d in ("cpu", device):
        net = mlp([12, 8, 3], density=0.4, seed=3).to(d)
        opt = Adam(net.parameters(), lr=0.01, eps=1e-3)
        rew = Rewirer(t_iter=2, zeta0=0.3, t_end=100, prune=prune, grow=grow, seed=5)
        nnz0 = [layer.nnz for layer in net.sparse_layers()]
        for it in range(1, 5):
            rew.prepare(it, net)
            _steps(net, opt, x, y, 1)
            rew.maybe_rewire(it, net, opt)
        assert rew.n_events == 2
        for layer, n0 in zip(net.sparse_layers(), nnz0):
            w = layer.weight
            assert layer.nnz == n0 == w.nnz  # rewiring keeps the number of connections
            assert np.all(np.diff(w.indptr) >= 0) and w.has_sorted_indices
            for st in opt.host_state(layer.weight_param).values():
                assert st.shape == (layer.nnz,)
        runs[d] = net
    for la, lb in zip(runs[device].sparse_layers(), runs["cpu"].sparse_layers()):
        assert np.array_equal(la.weight.indptr, lb.weight.indptr) and np.array_equal(la.weight.indices, lb.weight.indices)
        close(la.weight.data, lb.weight.data, "weights after rewiring", atol=1e-5)


# ---------------------------------------------------------------------------
# a custom layer: the Gain example of docs/design.md
# ---------------------------------------------------------------------------
class Gain(Layer):
    """y[t, b, f] = g[f] * x[t, b, f] (the docs/design.md example, through backend kernels)."""

    def __init__(self, n, dtype=np.float32, name="gain"):
        super().__init__()
        self.in_features = self.out_features = n
        self.dtype, self.name = np.dtype(dtype), name
        self.gain = Parameter(np.ones(n, dtype), f"{name}.weight", decay=False)

    def parameters(self):
        return [self.gain]

    def forward(self, x, record=False):
        bk = self.backend
        X = bk.feature_major(x, self.in_features, self.dtype, f"{self.name} input")
        F, T, B = X.shape
        Y = self.buffer((F, T, B))
        bk.scale_rows(self.gain.value, X.reshape(F, T * B), Y.reshape(F, T * B))
        self._cache = X
        return bk.time_major(Y)

    def backward(self, grad_y):
        X = self._needs_cache()
        bk = self.backend
        G = bk.feature_major(grad_y, self.out_features, self.dtype, f"{self.name} grad")
        F, T, B = G.shape
        bk.row_dot(G.reshape(F, T * B), X.reshape(F, T * B), self.gain.grad, not self.gain.grad_is_zero)
        self.gain.grad_is_zero = False
        if not self.need_input_grad:
            return None
        GX = self.buffer((F, T, B))
        bk.scale_rows(self.gain.value, G.reshape(F, T * B), GX.reshape(F, T * B))
        return bk.time_major(GX)


def _gain_net(seed=1):
    return Network([SparseLinear(10, 6, density=0.5, seed=seed, name="fc1"), Gain(6), LIF(6, name="lif1"),
                    SparseLinear(6, 3, density=0.7, seed=seed + 1, name="fc2"), Readout(3)])


@pytest.mark.parametrize("device", DEVICES)
def test_custom_gain_layer_trains_saves_loads_and_runs_on_every_backend(device, tmp_path):
    x, y = _batch(3)
    ref_net = _gain_net()
    ref_losses = _steps(ref_net, SGD(ref_net.parameters(), lr=0.5), x, y, 4)
    net = _gain_net().to(device)
    losses = _steps(net, SGD(net.parameters(), lr=0.5), x, y, 4)
    close(losses, ref_losses, "Gain losses", atol=1e-5)
    assert losses[-1] < losses[0] and not np.allclose(net.state_dict()["gain"]["weight"], 1)
    # save (host arrays, any backend) and load into a fresh network on another backend
    state = net.state_dict()
    np.savez(tmp_path / "gain.npz", **{f"{l}/{k}": v for l, d in state.items() for k, v in d.items()})
    with np.load(tmp_path / "gain.npz") as f:
        loaded = {}
        for key in f.files:
            layer, k = key.split("/")
            loaded.setdefault(layer, {})[k] = f[key]
    for other in ("cpu", device):
        fresh = _gain_net(seed=9).to(other)
        fresh.load_state_dict(loaded)
        close(fresh.backend.to_host(fresh.forward(x)), net.backend.to_host(net.forward(x)), f"Gain on {other}",
              atol=1e-5)


def test_network_refuses_layers_on_different_backends():
    with pytest.raises(ValueError, match=r"layers: on different backends \['cpu', 'reference'\]"):
        Network([SparseLinear(4, 3, density=0.5).to("reference"), LIF(3)])


def test_layer_state_dict_rejects_bad_shapes():
    net = _gain_net()
    bad = net.state_dict()
    bad["gain"]["weight"] = np.ones(5, F32)
    with pytest.raises(ValueError, match=r"gain\.weight: expected shape \(6,\), got \(5,\)"):
        net.load_state_dict(bad)
    bad = net.state_dict()
    bad["fc1"]["indices"] = bad["fc1"]["indices"][::-1].copy()
    with pytest.raises(ValueError, match=r"CSR"):
        net.load_state_dict(bad)


def test_cuda_backend_is_float32_only():
    if not HAVE_CUDA:
        pytest.skip("no CUDA device/simulator")
    net = mlp([4, 3, 2], dtype=np.float64)
    with pytest.raises(TypeError, match=r"fc1: the cuda backend computes in float32, not float64"):
        net.to("cuda")


# ---------------------------------------------------------------------------
# the Trainer on every backend
# ---------------------------------------------------------------------------
def _tiny_data(seed=0, n=60, n_test=20, side=6):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n + n_test).astype(np.uint8)
    x = (rng.random((n + n_test, side * side)) * 80).astype(np.uint8)
    for c in range(3):  # class c brightens its own band of pixels: learnable in one epoch
        x[y == c, c * 12:(c + 1) * 12] += 150
    return Dataset(x[:n], y[:n], x[n:], y[n:], "tiny", "test", (side, side))


def _tiny_config(device, out_dir, **kw):
    base = dict(hidden=[10], density=0.4, epochs=1, batch_size=10, steps=4, t_iter=2, zeta0=0.3, quiet=True, seed=4,
                val_fraction=0.2, device=device, out_dir=str(out_dir), lr=0.05)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("device", DEVICES)
def test_trainer_one_epoch_matches_cpu(device, tmp_path):
    """The same Trainer loop: weights, structure after rewiring events and metrics agree with cpu."""
    data = _tiny_data()
    ta = Trainer(_tiny_config("cpu", tmp_path / "a"), dataset=data)
    tb = Trainer(_tiny_config(device, tmp_path / "b"), dataset=data)
    assert tb.network.device == device
    sa, sb = ta.fit(checkpoint_dir=False), tb.fit(checkpoint_dir=False)
    assert ta.rewirer.n_events == tb.rewirer.n_events > 0
    for k in ("train_loss", "train_accuracy", "val_accuracy", "density"):
        close(tb.metrics[k], ta.metrics[k], k, atol=1e-4)
    assert sa["test_accuracy"] == sb["test_accuracy"]
    na, nb = ta.network_state(), tb.network_state()
    for name in na:
        for k in ("indptr", "indices"):
            assert np.array_equal(na[name][k], nb[name][k]), f"{name}.{k} differs after rewiring"
        close(nb[name]["data"], na[name]["data"], f"{name} weights", atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_checkpoints_are_device_independent(device, tmp_path):
    data = _tiny_data(1)
    t = Trainer(_tiny_config(device, tmp_path), dataset=data)
    t.fit()
    for other in ("cpu", device):
        r = restore_trainer(tmp_path / "last.h5", dataset=data, device=other)
        assert r.network.device == other and r.epoch == 1 and r.iteration == t.iteration
        state, saved = r.network_state(), t.network_state()
        for name in saved:
            for k in saved[name]:
                assert np.array_equal(state[name][k], saved[name][k]), f"{name}.{k}"
        acc_r, _ = r.evaluate(r.x_test, r.y_test)
        acc_t, _ = t.evaluate(t.x_test, t.y_test)
        assert acc_r == acc_t
    # a checkpoint written from a trainer on this backend equals one written on cpu after loading
    save_checkpoint(tmp_path / "again.h5", r)
    again = restore_trainer(tmp_path / "again.h5", dataset=data, device="cpu")
    assert again.optimizer.iteration == t.optimizer.iteration
