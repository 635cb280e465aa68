"""The CUDA device path: kernel parity with the CPU kernels, the device encoder,
a full device training step, rewiring through the host round trip, the
Trainer entry points, checkpoints, and the clear error without a GPU.

Runs on a real GPU or under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``
set before numba is imported, see tests/conftest.py); every size is tiny
because the simulator runs each GPU thread as a Python thread. Without
numba-cuda the module is skipped; without a GPU and without the simulator
only the "clear error" tests run.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("numba_cuda", reason="numba-cuda is not installed (pip install -e .[cuda])")

from snn_core.backend import cuda_available, cuda_status, require_cuda  # noqa: E402

HAVE_DEVICE = cuda_available()
needs_device = pytest.mark.skipif(not HAVE_DEVICE, reason=f"no CUDA device or simulator: {cuda_status()[1]}")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
F32 = np.float32


def _close(a, b, what, rtol=1e-5, atol=1e-6):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    scale = max(1.0, float(np.abs(b).max(initial=0.0)))
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol * scale, err_msg=what)


@pytest.fixture(scope="module")
def dev():
    if not HAVE_DEVICE:
        pytest.skip("no CUDA device or simulator")
    from numba import cuda

    from snn_core.kernels import cuda as K

    return cuda, K


# ---------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------
@needs_device
@pytest.mark.parametrize("reset,detach,sur,smooth", [(0, False, 0, 0), (0, True, 1, 0), (1, False, 2, 0),
                                                     (2, False, 3, 0), (1, False, 4, 1)])
def test_lif_parity(dev, reset, detach, sur, smooth):
    from snn_core.kernels import cpu

    cuda, K = dev
    rng = np.random.default_rng(reset * 10 + sur)
    F_, T, B = 4, 4, 3
    I = (rng.normal(size=(F_, T, B)) * 1.5 + 0.4).astype(F32)
    v0 = (rng.random((F_, B)) * 0.5).astype(F32)
    sc = dict(alpha=F32(0.6), k0=F32(0.02), c=F32(1.1), v_th=F32(1.0), v_reset=F32(0.1), p=F32(0.8))
    u, s, vl = np.empty_like(I), np.empty_like(I), np.empty((F_, B), F32)
    cpu.lif_forward(I, v0, sc["alpha"], sc["k0"], sc["c"], sc["v_th"], sc["v_reset"], reset, sur, sc["p"], smooth,
                    u, s, vl)
    du, ds, dvl = cuda.device_array_like(u), cuda.device_array_like(s), cuda.device_array_like(vl)
    K.lif_forward(cuda.to_device(I), cuda.to_device(v0), sc["alpha"], sc["k0"], sc["c"], sc["v_th"], sc["v_reset"],
                  reset, sur, sc["p"], smooth, du, ds, dvl)
    if smooth:
        _close(ds.copy_to_host(), s, "smooth spikes")
        _close(du.copy_to_host(), u, "u")
    else:
        assert 0 < s.mean() < 1, "test input should make some neurons spike"
        assert np.array_equal(ds.copy_to_host(), s), "spikes differ"
        assert np.array_equal(du.copy_to_host(), u), "membrane differs (must be bit-identical)"
        assert np.array_equal(dvl.copy_to_host(), vl), "final membrane differs"
    gs = rng.normal(size=I.shape).astype(F32)
    gI = np.empty_like(I)
    cpu.lif_backward(gs, u, s, sc["alpha"], sc["c"], sc["v_th"], sc["v_reset"], reset, detach, sur, sc["p"], gI)
    dgI = cuda.device_array_like(gI)
    K.lif_backward(cuda.to_device(gs), cuda.to_device(u), cuda.to_device(s), sc["alpha"], sc["c"], sc["v_th"],
                   sc["v_reset"], reset, detach, sur, sc["p"], dgI)
    _close(dgI.copy_to_host(), gI, "lif gI")


@needs_device
def test_readout_parity(dev):
    from snn_core.kernels import cpu

    cuda, K = dev
    rng = np.random.default_rng(1)
    I = rng.normal(size=(3, 4, 2)).astype(F32)
    v0 = rng.normal(size=(3, 2)).astype(F32)
    u = np.empty_like(I)
    cpu.readout_forward(I, v0, F32(0.7), F32(0.05), F32(0.9), u)
    du = cuda.device_array_like(u)
    K.readout_forward(cuda.to_device(I), cuda.to_device(v0), 0.7, 0.05, 0.9, du)
    assert np.array_equal(du.copy_to_host(), u)
    gu = rng.normal(size=I.shape).astype(F32)
    gI = np.empty_like(gu)
    cpu.readout_backward(gu, F32(0.7), F32(0.9), gI)
    dgI = cuda.device_array_like(gI)
    K.readout_backward(cuda.to_device(gu), 0.7, 0.9, dgI)
    _close(dgI.copy_to_host(), gI, "readout gI")


def _csr(rng, n_out, n_in, density):
    from snn_core.sparse import random_connectivity

    indptr, indices = random_connectivity(n_out, n_in, density, rng)
    return indptr, indices, rng.normal(size=len(indices)).astype(F32)


@needs_device
@pytest.mark.parametrize("spikes", [True, False])
def test_csr_kernels_parity(dev, spikes):
    from snn_core.kernels import reference as R
    from snn_core.sparse import transpose_structure

    cuda, K = dev
    rng = np.random.default_rng(2)
    n_out, n_in, N = 5, 6, 6
    indptr, indices, data = _csr(rng, n_out, n_in, 0.5)
    indptr[3:] = indptr[3:] - (indptr[3] - indptr[2])  # make row 2 empty ...
    indices = np.concatenate([indices[:indptr[2]], indices[indptr[2] + (indptr[3] - indptr[2]):]])
    keep = len(indices)
    indices, data = indices[:keep], data[:keep]
    indptr[-1] = keep
    bias = rng.normal(size=n_out).astype(F32)
    X = (rng.random((n_in, N)) < 0.4).astype(F32) if spikes else rng.normal(size=(n_in, N)).astype(F32)
    G = rng.normal(size=(n_out, N)).astype(F32)
    d = {k: cuda.to_device(v) for k, v in dict(indptr=indptr, indices=indices, data=data, bias=bias, X=X,
                                                G=G).items()}
    Y = cuda.device_array((n_out, N), F32)
    K.csr_forward(d["indptr"], d["indices"], d["data"], d["bias"], d["X"], Y)
    _close(Y.copy_to_host(), R.csr_forward(indptr, indices, data, bias, X), "csr_forward")
    t_indptr, t_indices, t_perm = transpose_structure(indptr, indices, n_in)
    GX = cuda.device_array((n_in, N), F32)
    K.csr_backward_input(cuda.to_device(t_indptr), cuda.to_device(t_indices), cuda.to_device(t_perm), d["data"],
                         d["G"], GX)
    _close(GX.copy_to_host(), R.csr_backward_input(indptr, indices, data, G, n_in), "csr_backward_input")
    gw = cuda.to_device(np.ones(len(indices), F32))
    K.csr_grad_at(d["indptr"], d["indices"], d["G"], d["X"], gw, accumulate=False)
    ref = R.csr_grad_at(indptr, indices, G, X)
    _close(gw.copy_to_host(), ref, "csr_grad_at")
    K.csr_grad_at(d["indptr"], d["indices"], d["G"], d["X"], gw, accumulate=True)
    _close(gw.copy_to_host(), 2 * ref, "csr_grad_at accumulate")
    gb = cuda.device_array(n_out, F32)
    K.bias_grad(d["G"], gb)
    _close(gb.copy_to_host(), G.sum(axis=1), "bias grad")


@needs_device
def test_optimizer_kernels_parity(dev):
    from snn_core.kernels import cpu

    cuda, K = dev
    rng = np.random.default_rng(3)
    n = 12
    w, g, m, v = (rng.normal(size=n).astype(F32) for _ in range(4))
    v = np.abs(v)
    args = (F32(0.01), F32(0.9), F32(0.999), F32(1e-8), F32(1 - 0.9 ** 3), F32(1 - 0.999 ** 3), F32(0.01))
    dw, dm, dv = cuda.to_device(w), cuda.to_device(m), cuda.to_device(v)
    K.adam_update(dw, cuda.to_device(g), dm, dv, *args)
    cpu.adam_update(w, g, m, v, *args)
    for a, b, name in ((dw, w, "w"), (dm, m, "m"), (dv, v, "v")):
        _close(a.copy_to_host(), b, f"adam {name}")
    for nesterov in (False, True):
        buf = rng.normal(size=n).astype(F32)
        dw, db = cuda.to_device(w), cuda.to_device(buf)
        K.sgd_update(dw, cuda.to_device(g), db, 0.05, 0.9, nesterov, 0.001)
        cpu.sgd_update(w, g, buf, F32(0.05), F32(0.9), nesterov, F32(0.001))
        _close(dw.copy_to_host(), w, "sgd w")
        _close(db.copy_to_host(), buf, "sgd buf")


@needs_device
@pytest.mark.parametrize("name", ["ce_membrane", "ce_count", "mse_rate", "tet"])
def test_loss_parity(dev, name):
    from snn_core import losses

    cuda, K = dev
    rng = np.random.default_rng(4)
    C, T, B = 3, 3, 4
    if name == "ce_count":
        O = (rng.random((C, T, B)) < 0.5).astype(F32)
    else:
        O = rng.normal(size=(C, T, B)).astype(F32)
    y = rng.integers(0, C, B).astype(np.int64)
    value, grad = losses.get_loss(name)(O.transpose(1, 2, 0), y)
    G = cuda.device_array((C, T, B), F32)
    lb, cb = cuda.device_array(B, np.float64), cuda.device_array(B, np.float64)
    K.loss_and_grad(name, cuda.to_device(O), cuda.to_device(y), cuda.to_device(np.arange(B)), lb, cb, G)
    assert abs(lb.copy_to_host().sum() - value) <= 1e-6 * max(1.0, abs(value))
    _close(G.copy_to_host().transpose(1, 2, 0), grad, f"{name} gradient")
    correct = losses.predict(O.transpose(1, 2, 0)) == y
    assert np.array_equal(cb.copy_to_host(), correct.astype(np.float64))
    acc = cuda.to_device(np.zeros(3))
    K.accumulate_loss(lb, cb, acc)
    K.accumulate_loss(lb, cb, acc)
    total, n_ok, seen = acc.copy_to_host()
    assert seen == 2 * B and n_ok == 2 * correct.sum()
    assert abs(total - 2 * B * value) <= 1e-6 * max(1.0, abs(total))


@needs_device
@pytest.mark.parametrize("seed", [0, 12345, 2**63 + 17])
def test_bernoulli_encoder_bit_identical(dev, seed):
    from snn_core.data.encoders import _stream_state, bernoulli_encode, poisson_encode

    cuda, K = dev
    rng = np.random.default_rng(5)
    x = rng.random((4, 5)).astype(F32)
    x[0, :2] = (0.0, 1.0)
    for T in (3, 8, 9):  # a partial 4-step word only, full words only, both
        cpu_spikes = bernoulli_encode(x, T, seed=seed).transpose(2, 0, 1)  # the (F, T, B) buffer
        assert np.array_equal(K.bernoulli_encode(x, T, seed=seed).copy_to_host(), cpu_spikes)
    # the trainer path: samples gathered by index from the uploaded set, poisson scale
    data = rng.random((7, 5)).astype(F32)
    idx = np.array([6, 2, 2, 0])
    out = cuda.device_array((5, 3, 4), F32)
    K.encode("poisson", cuda.to_device(data), cuda.to_device(idx), 3, _stream_state(seed), out, scale=0.5)
    ref = poisson_encode(data[idx], 3, max_rate=500.0, dt=1e-3, seed=seed).transpose(2, 0, 1)
    assert np.array_equal(out.copy_to_host(), ref)


# ---------------------------------------------------------------------------
# the device network
# ---------------------------------------------------------------------------
def _net(sparse=True, output="readout", density=0.6, seed=7):
    from snn_core.network import mlp
    from snn_core.neurons import LIFParams

    hidden = LIFParams(tau_m=2.0, reset="hard", surrogate="rectangular")
    return mlp([6, 5, 3], density=density, hidden=hidden, readout=hidden, output=output, sparse=sparse, seed=seed,
               gain=2.0)


def _opt(net, kind):
    from snn_core.optim import SGD, Adam

    if kind == "adam":
        return Adam(net.parameters(), lr=0.05, weight_decay=0.01)
    return SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)


def _batch(seed, T=3, B=4, F_=6, C=3):
    from snn_core.data.encoders import bernoulli_encode

    rng = np.random.default_rng(seed)
    x = rng.random((B, F_)).astype(F32)
    return bernoulli_encode(x, T, seed=seed), rng.integers(0, C, B).astype(np.int64)


def _cpu_step(net, opt, x, y, loss):
    from snn_core import losses

    out = net.forward(x)
    value, grad = losses.get_loss(loss)(out, y)
    net.zero_grad()
    net.backward(grad)
    opt.step()
    return out, value


def _compare_nets(host, dnet, what):
    dnet.to_network()
    for a, b in zip(host.parameters(), dnet.network.parameters()):
        _close(b.value, a.value, f"{what}: {a.name}")


@needs_device
@pytest.mark.parametrize("sparse,output,loss,opt_kind", [(True, "readout", "ce_membrane", "adam"),
                                                         (True, "lif", "ce_count", "sgd"),
                                                         (False, "readout", "ce_membrane", "adam")])
def test_device_training_step_matches_cpu(dev, sparse, output, loss, opt_kind):
    from snn_core.gpu import DeviceNetwork, train_step_device

    cuda, K = dev
    cpu_net, dev_net = _net(sparse, output), _net(sparse, output)
    cpu_opt, dev_opt = _opt(cpu_net, opt_kind), _opt(dev_net, opt_kind)
    dnet = DeviceNetwork.from_network(dev_net, dev_opt)
    for step in range(2):
        x, y = _batch(10 + step)
        out, value = _cpu_step(cpu_net, cpu_opt, x, y, loss)
        d_out, lb, _ = train_step_device(dnet, cuda.to_device(np.ascontiguousarray(x.transpose(2, 0, 1))),
                                         cuda.to_device(y), loss)
        _close(d_out.copy_to_host().transpose(1, 2, 0), out, f"output, step {step}")
        assert abs(lb.copy_to_host().sum() - value) <= 1e-5 * max(1.0, abs(value))
        assert dev_opt.iteration == cpu_opt.iteration == step + 1
    dnet.download_grads()
    for a, b in zip(cpu_net.parameters(), dev_net.parameters()):
        _close(b.grad, a.grad, f"gradient {a.name}")
    _compare_nets(cpu_net, dnet, "weights after 2 steps")
    for sa, sb in zip(cpu_opt.state, dev_opt.state):
        for k in sa:
            _close(sb[k], sa[k], f"optimizer state {k}")


@needs_device
@pytest.mark.parametrize("prune,grow", [("magnitude", "random"), ("gradient", "gradient"), ("set", "momentum")])
def test_device_rewiring_round_trip(dev, prune, grow):
    from snn_core.gpu import DeviceNetwork, train_step_device
    from snn_core.sparse import check_csr
    from snn_core.structure import Rewirer

    cuda, K = dev
    cpu_net, dev_net = _net(density=0.5), _net(density=0.5)
    cpu_opt, dev_opt = _opt(cpu_net, "adam"), _opt(dev_net, "adam")
    kw = dict(t_iter=1, zeta0=0.4, t_end=10, prune=prune, grow=grow, seed=11)
    cpu_rew, dev_rew = Rewirer(**kw), Rewirer(**kw)
    dnet = DeviceNetwork.from_network(dev_net, dev_opt)
    x, y = _batch(20)
    cpu_rew.prepare(1, cpu_net)
    _cpu_step(cpu_net, cpu_opt, x, y, "ce_membrane")
    cpu_rew.maybe_rewire(1, cpu_net, cpu_opt)

    dnet.set_retain_output_grad(dev_rew.needs_dense_grad(1))
    d_x = cuda.to_device(np.ascontiguousarray(x.transpose(2, 0, 1)))
    train_step_device(dnet, d_x, cuda.to_device(y), "ce_membrane")
    # no to_network() here: the event must fetch what it needs itself (host weights, biases, state are stale)
    dev_layers = {dl.layer.name: dl for dl in dnet.layers if hasattr(dl, "struct")}
    before = {l.name: (l.nnz, dev_layers[l.name].weight.state["m"].copy_to_host()) for l in dev_net.sparse_layers()}
    records = dnet.maybe_rewire(dev_rew, 1)
    assert records and dev_rew.n_events == 1
    dnet.to_network()
    for layer, cpu_layer in zip(dev_net.sparse_layers(), cpu_net.sparse_layers()):
        w = layer.weight
        nnz, m_before = before[layer.name]
        assert layer.nnz == nnz, "number of connections changed"
        check_csr(w.indptr, w.indices, w.shape)  # sorted, unique, in range
        ev = dev_rew.last_events.get(layer.name)
        if ev is not None:
            assert ev["n"] > 0
            src = ev["src"]
            st = dev_opt.state[dev_opt.index(layer.weight_param)]
            assert np.array_equal(st["m"][src >= 0], m_before[src[src >= 0]]), "kept connections lost their moments"
            assert not st["m"][src < 0].any() and not st["v"][src < 0].any(), "new connections must start at 0"
            assert not w.data[src < 0].any(), "grown connections start at weight 0"
        # the device structure equals the host's (CSR and its transpose)
        dl = dev_layers[layer.name]
        for name, arr in zip(("indptr", "indices", "t_indptr", "t_indices", "t_perm"), dl.host_structure()):
            assert np.array_equal(dl.struct[name].copy_to_host(), arr), f"device {name} is stale"
        # ... and the CPU rewirer made the same choices
        assert np.array_equal(w.indptr, cpu_layer.weight.indptr) and np.array_equal(w.indices,
                                                                                      cpu_layer.weight.indices)
    # training goes on identically after the event
    x2, y2 = _batch(21)
    _cpu_step(cpu_net, cpu_opt, x2, y2, "ce_membrane")
    train_step_device(dnet, cuda.to_device(np.ascontiguousarray(x2.transpose(2, 0, 1))), cuda.to_device(y2),
                      "ce_membrane")
    _compare_nets(cpu_net, dnet, "after rewiring + 1 step")


@needs_device
def test_device_network_rejects_float64_and_unknown_optimizer():
    from snn_core.gpu import DeviceNetwork
    from snn_core.network import mlp

    with pytest.raises(TypeError, match="float32 only"):
        DeviceNetwork.from_network(mlp([4, 3, 2], dtype=np.float64))

    class Other:
        pass

    with pytest.raises(TypeError, match="Adam and SGD"):
        DeviceNetwork.from_network(mlp([4, 3, 2]), Other())


# ---------------------------------------------------------------------------
# Trainer entry points and checkpoints
# ---------------------------------------------------------------------------
def _tiny_dataset():
    from snn_core.data.datasets import Dataset

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 26).astype(np.uint8)
    centres = rng.integers(0, 256, (3, 8))
    x = np.clip(centres[y] + rng.integers(-40, 40, (26, 8)), 0, 255).astype(np.uint8)
    return Dataset(x_train=x[:22], y_train=y[:22], x_test=x[22:], y_test=y[22:], name="tiny", source="test",
                   image_shape=(2, 4))


def _tiny_config(tmp_path, device, **kw):
    from snn_core.config import TrainConfig

    base = dict(hidden=[5], density=0.5, steps=3, batch_size=5, epochs=1, t_iter=2, zeta0=0.3, val_fraction=0.1,
                quiet=True, seed=5, out_dir=str(tmp_path), device=device)
    return TrainConfig(**(base | kw))


@needs_device
@pytest.mark.parametrize("kw", [dict(),
                                dict(loss="tet", optimizer="sgd", prune="set", grow="momentum"),
                                dict(encoder="poisson", sparse=False, output="lif", loss="ce_count")],
                         ids=["bernoulli-ce_membrane-adam", "tet-sgd-set-momentum", "poisson-dense-ce_count"])
def test_trainer_epoch_on_device_matches_cpu_and_checkpoints_load_on_cpu(dev, tmp_path, kw):
    from snn_core.checkpoint import restore_trainer, save_checkpoint
    from snn_core.gpu import evaluate_device, train_epoch_device
    from snn_core.training import Trainer

    data = _tiny_dataset()
    cpu_tr = Trainer(_tiny_config(tmp_path, "cpu", **kw), dataset=data)
    dev_tr = Trainer(_tiny_config(tmp_path, "cuda", **kw), dataset=data)
    cpu_loss, cpu_acc = cpu_tr.train_epoch()
    dev_loss, dev_acc = train_epoch_device(dev_tr)
    assert dev_tr.iteration == cpu_tr.iteration == 4
    assert dev_tr.rewirer.n_events == cpu_tr.rewirer.n_events == (1 if dev_tr.config.sparse else 0)
    assert dev_tr.optimizer.iteration == cpu_tr.optimizer.iteration == 4
    assert abs(dev_loss - cpu_loss) <= 1e-5 * max(1.0, abs(cpu_loss)) and dev_acc == cpu_acc
    sa, sb = cpu_tr.network_state(), dev_tr.network_state()
    for layer in sa:
        for k in sa[layer]:
            if k in ("indptr", "indices", "shape"):
                assert np.array_equal(sa[layer][k], sb[layer][k]), f"{layer}.{k}"
            else:
                _close(sb[layer][k], sa[layer][k], f"{layer}.{k}")
    acc_cpu, loss_cpu = cpu_tr.evaluate(cpu_tr.x_test, cpu_tr.y_test)
    acc_dev, loss_dev = evaluate_device(dev_tr, dev_tr.x_test, dev_tr.y_test)
    assert acc_dev == acc_cpu and abs(loss_dev - loss_cpu) <= 1e-5 * max(1.0, abs(loss_cpu))
    # the device-trained network, written from host arrays, loads and runs on the CPU
    path = tmp_path / "dev.h5"
    save_checkpoint(path, dev_tr)
    back = restore_trainer(path, dataset=data, device="cpu")
    assert back.config.device == "cpu" and back.iteration == dev_tr.iteration
    acc_back, loss_back = back.evaluate(back.x_test, back.y_test)
    assert acc_back == acc_dev and abs(loss_back - loss_dev) <= 1e-5 * max(1.0, abs(loss_dev))
    for sa_, sb_ in zip(back.optimizer.state, dev_tr.optimizer.state):
        for k in sa_:
            assert np.array_equal(sa_[k], sb_[k])
    back.train_epoch()  # and training continues on the CPU


@needs_device
def test_host_encoder_fallback_and_structure_refresh(dev, tmp_path):
    """A host-only encoder (latency) is encoded on the host and uploaded; a host-side structure change
    (load_network_state) reaches the device at the next load_from_host."""
    from snn_core.data.encoders import latency_encode
    from snn_core.gpu import device_state
    from snn_core.training import Trainer

    cuda, K = dev
    tr = Trainer(_tiny_config(tmp_path, "cuda"), dataset=_tiny_dataset())
    tr.config.encoder = "latency"
    tr.encode = lambda x, T, seed=None: latency_encode(x, T)  # the CPU latency encoder takes no seed
    st = device_state(tr)
    x_dev, _ = st.data(tr.x_train, tr.y_train)
    idx = np.array([3, 0, 7])
    out = st.encode(tr, tr.x_train, x_dev, idx, cuda.to_device(idx), (2, 0)).copy_to_host()
    assert np.array_equal(out, latency_encode(tr.x_train[idx], tr.config.steps).transpose(2, 0, 1))

    layer = tr.network.sparse_layers()[0]
    state = tr.network_state()
    s = state[layer.name]
    dense = np.zeros(tuple(s["shape"]), np.float32)
    rows = np.repeat(np.arange(len(s["indptr"]) - 1), np.diff(s["indptr"]))
    dense[rows, s["indices"]] = s["data"]
    flipped = dense[::-1].copy()  # a different structure with the same nnz
    from scipy import sparse as sp

    w = sp.csr_matrix(flipped)
    assert w.nnz == len(s["indices"]) and not (np.array_equal(w.indptr, s["indptr"])
                                                and np.array_equal(w.indices, s["indices"]))
    state[layer.name].update(indptr=w.indptr.astype(np.int32), indices=w.indices.astype(np.int32), data=w.data)
    tr.load_network_state(state)
    st.dnet.load_from_host()
    dl = next(d for d in st.dnet.layers if getattr(d, "layer", None) is layer)
    assert np.array_equal(dl.struct["indices"].copy_to_host(), layer.weight.indices)
    assert np.array_equal(dl.struct["t_perm"].copy_to_host(), layer.transpose_structure()[2])


# ---------------------------------------------------------------------------
# real-GPU compilation without a GPU (needs the toolkit extra: NVVM/NVRTC)
# ---------------------------------------------------------------------------
_PTX_CHECK = """
import sys
from numba import cuda, types as nt
import numba.cuda.dispatcher as _d

def _trivial(a):
    a[0] = 1.0
try:
    cuda.compile_ptx(_trivial, (nt.float32[::1],), cc=(9, 0))
except Exception as e:  # no NVVM/NVRTC: nothing to check here
    print("NO-TOOLKIT", type(e).__name__, str(e)[:200])
    sys.exit(0)

class _Dev:  # device functions ask the current device for its compute capability
    compute_capability = (9, 0)
_d.get_current_device = lambda: _Dev()
from snn_core.kernels import cuda as K

f32, f64, i64, u64, b1 = nt.float32, nt.float64, nt.int64, nt.uint64, nt.boolean
A = lambda t, nd: nt.Array(t, nd, "C")
A3, A2, A1, I1, L1, D1 = A(f32, 3), A(f32, 2), A(f32, 1), A(nt.int32, 1), A(i64, 1), A(f64, 1)
sigs = [
    ("_lif_forward_k", (A3, A2, f32, f32, f32, f32, f32, i64, i64, f32, i64, A3, A3, A2)),
    ("_lif_backward_k", (A3, A3, A3, f32, f32, f32, f32, i64, i64, i64, f32, A3)),
    ("_readout_forward_k", (A3, A2, f32, f32, f32, A3)),
    ("_readout_backward_k", (A3, f32, f32, A3)),
    ("_csr_forward_k", (I1, I1, A1, A1, A2, A2)),
    ("_csr_backward_input_k", (I1, I1, I1, A1, A2, A2)),
    ("_csr_grad_at_k", (I1, I1, A2, A2, A1, i64)),
    ("_bias_grad_k", (A2, A1, i64)),
    ("_adam_k", (A1, A1, A1, A1, f32, f32, f32, f32, f32, f32, f32)),
    ("_sgd_k", (A1, A1, A1, f32, f32, b1, f32)),
    ("_fill_k", (A1, f32)), ("_fill_k", (D1, f64)),
    ("_ce_k", (A3, L1, L1, i64, D1, D1, A3)),
    ("_mse_rate_k", (A3, L1, L1, f64, f64, D1, D1, A3)),
    ("_tet_k", (A3, L1, L1, f64, f64, D1, D1, A3)),
    ("_reduce_k", (D1, D1, D1)),
    ("_bernoulli_k", (A2, L1, i64, f32, u64, A3)),
    ("_direct_k", (A2, L1, A3)),
]
for name, sig in sigs:
    ptx, _ = cuda.compile_ptx(getattr(K, name).py_func, sig, cc=(9, 0))
    if name in ("_lif_forward_k", "_readout_forward_k"):  # the membrane update must not be contracted
        assert "mul.rn.f32" in ptx and "add.rn.f32" in ptx, name
print("COMPILED", len(sigs))
"""


def test_kernels_compile_for_a_real_gpu():
    """Every kernel type-checks and compiles to PTX for compute capability 9.0 (needs numba-cuda's toolkit
    extra, not a GPU; skipped without it). The simulator compiles nothing, so this is the check it cannot do."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", _PTX_CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    if "NO-TOOLKIT" in r.stdout:
        pytest.skip("no CUDA toolkit (NVVM/NVRTC) to compile with: pip install -e .[cuda]")
    assert "COMPILED" in r.stdout, r.stdout


# ---------------------------------------------------------------------------
# the clear error without a GPU
# ---------------------------------------------------------------------------
def test_require_cuda_without_gpu_raises_clear_error():
    """No simulator, no visible GPU (CUDA_VISIBLE_DEVICES=''): require_cuda and Trainer(device='cuda') fail clearly,
    while importing the package and the CUDA modules still works."""
    code = textwrap.dedent("""
        import snn_core, snn_core.gpu, snn_core.kernels.cuda
        from snn_core.backend import cuda_available, require_cuda
        assert not cuda_available()
        try:
            require_cuda()
        except RuntimeError as e:
            print("ERR1", e)
        from snn_core.config import TrainConfig
        from snn_core.training import Trainer
        try:
            Trainer(TrainConfig(device="cuda", quiet=True))
        except RuntimeError as e:
            print("ERR2", e)
    """)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [l for l in r.stdout.splitlines() if l.startswith("ERR")]
    assert [l[:4] for l in lines] == ["ERR1", "ERR2"], r.stdout
    for line in lines:
        assert "device='cuda' requested but no CUDA GPU is available:" in line
        assert "pip install -e .[cuda]" in line and "device='cpu'" in line


def test_require_cuda_without_numba_cuda(monkeypatch):
    import importlib.util

    from snn_core import backend

    real = importlib.util.find_spec
    monkeypatch.setattr(backend.importlib.util, "find_spec",
                        lambda name, *a: None if name == "numba_cuda" else real(name, *a))
    assert backend.cuda_status() == (False, "the numba-cuda package is not installed")
    with pytest.raises(RuntimeError, match=r"no CUDA GPU is available: the numba-cuda package is not installed"):
        require_cuda()
