"""Convolutional layers: kernel parity on every backend, finite-difference
gradients (float64, smooth spikes), recording, state, rewiring, ERK and the
VGGSNN / ResNet19 / convnet builders. Shapes are tiny (the CUDA simulator runs
every thread as Python)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from snn_core import LIF, Adam, LIFParams, Network, Readout, SparseLinear, ce_membrane
from snn_core.backend import cuda_available
from snn_core.backends import BACKENDS, get_backend
from snn_core.conv import AvgPool2d, BatchNorm2d, Conv2d, Flatten, MaxPool2d, ResidualBlock, SparseConv2d
from snn_core.geometry import conv_geometry, pool_geometry
from snn_core.kernels import reference as R
from snn_core.losses import tet
from snn_core.models import RESNET19_STAGES, VGGSNN_LAYERS, convnet, resnet19, vggsnn
from snn_core.structure import Rewirer, sparse_init
from snn_core.structure.init import connection_counts, dense_first_counts, fixed_density_counts

HAVE_CUDA = cuda_available()
DEVICES = [pytest.param(d, marks=pytest.mark.skipif(d == "cuda" and not HAVE_CUDA, reason="no CUDA device/simulator"))
           for d in BACKENDS]
GEOMS = [(2, 3, (5, 6), 3, 1, 1), (3, 4, (7, 7), 3, 2, 1), (2, 2, (6, 5), 1, 2, 0), (1, 2, (5, 5), (3, 2), 1, 0)]


def close(a, b, what, rtol=1e-4, atol=1e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, f"{what}: shapes {a.shape} vs {b.shape}"
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=what)


def _conv_case(rng, geom, density=0.5, rate=0.3, N=6):
    c_in, c_out, size, k, s, p = geom
    layer = SparseConv2d(c_in, c_out, k, s, p, density=density, input_size=size, bias=True, seed=1)
    X = ((rng.random((layer.in_features, N)) < rate) * rng.random((layer.in_features, N))).astype(np.float32)
    G = (rng.standard_normal((layer.out_features, N)) * (rng.random((layer.out_features, N)) < 0.5)).astype(np.float32)
    return layer, X, G


# ---------------------------------------------------------------------------
# kernels through the Backend interface vs the readable twins
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("geom", GEOMS)
@pytest.mark.parametrize("rate", [0.04, 0.5])  # cpu: event-driven path and row path
def test_sparse_conv_kernels_match_reference(device, geom, rate, rng):
    if device == "cuda" and geom != GEOMS[1]:
        pytest.skip("the simulator is slow: one geometry (stride 2, padding) on cuda")
    layer, X, G = _conv_case(rng, geom, rate=rate)
    bk, g, w = get_backend(device), layer.geometry, layer.weight
    tr = [bk.to_device(a) for a in layer.transpose_structure()]
    ip, ix, data = bk.to_device(w.indptr), bk.to_device(w.indices), bk.to_device(w.data)
    bias = rng.standard_normal(g.c_out).astype(np.float32)
    Xd, Gd = bk.to_device(X), bk.to_device(G)
    Y, out, gb = bk.empty((g.out_features, 6), np.float32), bk.empty(w.nnz, np.float32), bk.empty(g.c_out, np.float32)
    GX = bk.empty((g.in_features, 6), np.float32)
    scratch = {}
    bk.conv_forward(g, ip, ix, *tr, data, bk.to_device(bias), Xd, Y, scratch)
    bk.conv_grad(g, ip, ix, *tr, Gd, Xd, out, False, gb, scratch)
    bk.conv_backward_input(g, ip, ix, *tr, data, Gd, GX)
    close(bk.to_host(Y), R.conv_forward(w.indptr, w.indices, w.data, bias, X, g), "forward")
    close(bk.to_host(out), R.conv_grad_at(w.indptr, w.indices, G, X, g), "weight grad")
    close(bk.to_host(gb), R.channel_sum(G, g), "bias grad")
    close(bk.to_host(GX), R.conv_backward_input(w.indptr, w.indices, w.data, G, g), "input grad")
    bk.conv_grad(g, ip, ix, *tr, Gd, Xd, out, True, gb, {})  # accumulate adds
    close(bk.to_host(out), 2 * R.conv_grad_at(w.indptr, w.indices, G, X, g), "accumulated weight grad")


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("geom", GEOMS + [(3, 5, (9, 8), 5, 1, 2), (4, 3, (11, 7), 3, 3, 1), (2, 13, (7, 6), 3, 1, 1)])
def test_row_path_tiles_give_the_untiled_result_bit_for_bit(geom, parallel, rng, monkeypatch):
    """The cpu row kernels walk bands of image rows (TILE_BYTES); every band size must give the same bits
    as one band over the whole image (each output keeps its order of terms) and match the twin. The last
    geometry has 13 output channels: its kernel columns hold enough connections for the four-at-a-time
    input-gradient loop."""
    import snn_core.kernels.conv_cpu as KC
    import snn_core.kernels.cpu as K

    monkeypatch.setattr(K, "PARALLEL_MIN_NS", 0.0 if parallel else float("inf"))

    layer, X, G = _conv_case(rng, geom, rate=0.6, N=5)
    G = rng.standard_normal(G.shape).astype(np.float32)  # dense: the input gradient takes the row path too
    g, w = layer.geometry, layer.weight
    tr = layer.transpose_structure()
    bias = rng.standard_normal(g.c_out).astype(np.float32)

    def run():
        Y, out = np.empty((g.out_features, 5), np.float32), np.empty(w.nnz, np.float32)
        GX = np.empty((g.in_features, 5), np.float32)
        assert KC.conv_forward(w.indptr, w.indices, w.data, *tr, bias, X, Y, g) is None  # the row path
        KC.conv_grad_at(w.indptr, w.indices, *tr, G, X, None, out, False, g)
        KC.conv_backward_input(w.indptr, w.indices, w.data, *tr, G, GX, g)
        return Y, out, GX

    whole = run()
    for tile_bytes in (1, 4 * 5 * g.w * g.c_in * (g.kh + g.stride), 4 * 5 * g.w * g.c_in * (g.kh + 3 * g.stride)):
        monkeypatch.setattr(KC, "TILE_BYTES", tile_bytes)
        for a, b, what in zip(run(), whole, ("forward", "weight grad", "input grad")):
            np.testing.assert_array_equal(a, b, err_msg=f"{what}, TILE_BYTES={tile_bytes}")
    close(whole[0], R.conv_forward(w.indptr, w.indices, w.data, bias, X, g), "forward")
    close(whole[1], R.conv_grad_at(w.indptr, w.indices, G, X, g), "weight grad")
    close(whole[2], R.conv_backward_input(w.indptr, w.indices, w.data, G, g), "input grad")


def test_reference_conv_is_the_textbook_convolution(rng):
    """im2col/col2im twins against a direct 7-loop convolution and its adjoint identity."""
    g = conv_geometry(2, 3, (5, 4), 3, 2, 1)
    X = rng.standard_normal((g.in_features, 2))
    W = rng.standard_normal((g.c_out, g.kernel_cols))
    Y = R.dense_conv_forward(W, None, X, g)
    x4, w4 = X.reshape(g.c_in, g.h, g.w, 2), W.reshape(g.c_out, g.c_in, g.kh, g.kw)
    want = np.zeros((g.c_out, g.oh, g.ow, 2))
    for co in range(g.c_out):
        for oy in range(g.oh):
            for ox in range(g.ow):
                for ci in range(g.c_in):
                    for ky in range(g.kh):
                        for kx in range(g.kw):
                            iy, ix = oy * g.stride - g.pad + ky, ox * g.stride - g.pad + kx
                            if 0 <= iy < g.h and 0 <= ix < g.w:
                                want[co, oy, ox] += w4[co, ci, ky, kx] * x4[ci, iy, ix]
    close(Y, want.reshape(g.out_features, 2), "conv", rtol=1e-12, atol=1e-12)
    G = rng.standard_normal((g.out_features, 2))
    # <conv(X), G> = <X, conv^T(G)> = <W, dW(G, X)>
    assert np.isclose((Y * G).sum(), (X * R.dense_conv_backward_input(W, G, g)).sum())
    assert np.isclose((Y * G).sum(), (W * R.dense_conv_grad(G, X, g)).sum())


@pytest.mark.parametrize("device", DEVICES)
def test_dense_conv_pool_bn_add_kernels_match_reference(device, rng):
    bk = get_backend(device)
    g = conv_geometry(2, 3, (4, 4), 3, 1, 1)
    X = rng.standard_normal((g.in_features, 4)).astype(np.float32)
    G = rng.standard_normal((g.out_features, 4)).astype(np.float32)
    W = rng.standard_normal((g.c_out, g.kernel_cols)).astype(np.float32)
    b = rng.standard_normal(g.c_out).astype(np.float32)
    Y, dW, GX = bk.empty((g.out_features, 4), np.float32), bk.empty(W.shape, np.float32), bk.empty(X.shape, np.float32)
    bk.dense_conv_forward(g, bk.to_device(W), bk.to_device(b), bk.to_device(X), Y)
    bk.dense_conv_grad(g, bk.to_device(G), bk.to_device(X), dW, False)
    bk.dense_conv_backward_input(g, bk.to_device(W), bk.to_device(G), GX)
    close(bk.to_host(Y), R.dense_conv_forward(W, b, X, g), "dense forward")
    close(bk.to_host(dW), R.dense_conv_grad(G, X, g), "dense weight grad")
    close(bk.to_host(GX), R.dense_conv_backward_input(W, G, g), "dense input grad")

    for pg in (pool_geometry(2, (4, 6), 2), pool_geometry(3, (6, 6), 3), pool_geometry(2, (3, 3), 3)):
        Xp = rng.standard_normal((pg.in_features, 3)).astype(np.float32)
        Gp = rng.standard_normal((pg.out_features, 3)).astype(np.float32)
        Yp, GXp = bk.empty((pg.out_features, 3), np.float32), bk.empty(Xp.shape, np.float32)
        bk.avgpool_forward(pg, bk.to_device(Xp), Yp)
        bk.avgpool_backward(pg, bk.to_device(Gp), GXp)
        close(bk.to_host(Yp), R.avgpool_forward(Xp, pg), "avgpool")
        close(bk.to_host(GXp), R.avgpool_backward(Gp, pg), "avgpool backward")
        arg = bk.empty((pg.out_features, 3), np.uint8)
        bk.maxpool_forward(pg, bk.to_device(Xp), Yp, arg)
        bk.maxpool_backward(pg, bk.to_device(Gp), arg, GXp)
        want_y, want_arg = R.maxpool_forward(Xp, pg)
        close(bk.to_host(Yp), want_y, "maxpool")
        assert np.array_equal(bk.to_host(arg), want_arg)
        close(bk.to_host(GXp), R.maxpool_backward(Gp, want_arg, pg), "maxpool backward")
        Sp = (Xp > 0.3).astype(np.float32)  # spikes: ties in most windows, the first max must win
        bk.maxpool_forward(pg, bk.to_device(Sp), Yp, arg)
        want_y, want_arg = R.maxpool_forward(Sp, pg)
        assert np.array_equal(bk.to_host(Yp), want_y) and np.array_equal(bk.to_host(arg), want_arg)

    Xc = (rng.standard_normal((3, 40)) * 2 + 1).astype(np.float32)
    Gc = rng.standard_normal((3, 40)).astype(np.float32)
    mean, var = bk.empty(3, np.float32), bk.empty(3, np.float32)
    bk.bn_stats(bk.to_device(Xc), mean, var)
    m, v = R.bn_stats(Xc)
    close(bk.to_host(mean), m, "bn mean")
    close(bk.to_host(var), v, "bn var")
    invstd, gamma = (1 / np.sqrt(v + 1e-5)).astype(np.float32), rng.random(3).astype(np.float32) + 0.5
    out = bk.empty((3, 40), np.float32)
    bk.bn_apply(bk.to_device(Xc), bk.to_device(gamma), bk.to_device(-gamma), out)
    close(bk.to_host(out), R.bn_apply(Xc, gamma, -gamma), "bn apply")
    gg, gbt = bk.empty(3, np.float32), bk.empty(3, np.float32)
    bk.bn_backward(bk.to_device(Gc), bk.to_device(Xc), bk.to_device(m.astype(np.float32)), bk.to_device(invstd),
                   bk.to_device(gamma), out, gg, gbt, False)
    for got, want, what in zip((out, gg, gbt), R.bn_backward(Gc, Xc, m.astype(np.float32), invstd, gamma),
                               ("bn dX", "bn dgamma", "bn dbeta")):
        close(bk.to_host(got), want, what, rtol=1e-3, atol=1e-4)
    s = bk.empty((3, 40), np.float32)
    bk.add(bk.to_device(Xc), bk.to_device(Gc), s)
    close(bk.to_host(s), Xc + Gc, "add")


# ---------------------------------------------------------------------------
# finite differences (float64, smooth spikes) for every new layer and a small net
# ---------------------------------------------------------------------------
SMOOTH = LIFParams(tau_m=2.0, v_th=0.5, surrogate="sigmoid", spike_fn="smooth")


def _fd_check(net, x, loss_fn, rng, n_probe=4, h=1e-6, check_input=True):
    """Every parameter (a few probed entries) and the input against central differences."""
    net.layers[0].need_input_grad = check_input
    def total(xx):
        return loss_fn(np.asarray(net.forward(xx)))[0]
    value, g = loss_fn(np.asarray(net.forward(x)))
    net.zero_grad()
    net.backward(g)
    for p in net.parameters():
        grad = p.grad.copy()
        for idx in rng.choice(p.value.size, size=min(n_probe, p.value.size), replace=False):
            old = p.value.flat[idx]
            p.value.flat[idx] = old + h
            up = total(x)
            p.value.flat[idx] = old - h
            down = total(x)
            p.value.flat[idx] = old
            num = (up - down) / (2 * h)
            assert abs(num - grad.flat[idx]) <= 1e-5 + 1e-4 * abs(num), f"{p.name}[{idx}]: {grad.flat[idx]} vs {num}"


def _input_fd(layer, x, rng, h=1e-6):
    """dL/dx of a single layer (L = <y, R>) against central differences."""
    layer.need_input_grad = True
    y = np.asarray(layer.forward(x))
    Rw = rng.standard_normal(y.shape)
    for p in layer.parameters():
        p.zero_grad()
    gx = np.asarray(layer.backward(Rw)).copy()
    for idx in rng.choice(x.size, size=5, replace=False):
        xp, xm = x.copy(), x.copy()
        xp.flat[idx] += h
        xm.flat[idx] -= h
        num = ((np.asarray(layer.forward(xp)) - np.asarray(layer.forward(xm))) * Rw).sum() / (2 * h)
        assert abs(num - gx.flat[idx]) <= 1e-6 + 1e-5 * abs(num), f"{layer.name} dx[{idx}]: {gx.flat[idx]} vs {num}"


def _layers_under_test():
    f64 = np.float64
    return [
        SparseConv2d(2, 3, 3, 1, 1, density=0.6, input_size=(4, 5), bias=True, seed=0, dtype=f64, name="sconv"),
        SparseConv2d(2, 3, 3, 2, 1, density=0.6, input_size=(5, 5), bias=False, seed=0, dtype=f64, name="sconv_s2"),
        Conv2d(2, 3, (3, 2), 1, 0, input_size=(4, 5), bias=True, seed=0, dtype=f64, name="dconv"),
        AvgPool2d(2, (4, 6), 2, dtype=f64, name="avg"),
        MaxPool2d(2, (4, 6), 2, dtype=f64, name="max"),
        BatchNorm2d(2, (3, 4), dtype=f64, name="bn"),
    ]


@pytest.mark.parametrize("device", ["reference", "cpu"])
@pytest.mark.parametrize("which", range(6))
def test_every_conv_layer_input_and_parameter_gradients(device, which, rng):
    layer = _layers_under_test()[which].to(device)
    x = rng.standard_normal((2, 3, layer.in_features))
    _input_fd(layer, x, rng)
    if layer.parameters():
        Rw = rng.standard_normal((2, 3, layer.out_features))
        _fd_check(Network([Flatten(layer.in_features, dtype=np.float64).to(device), layer]), x,
                  lambda o: (float((o * Rw).sum()), Rw), rng, check_input=False)


@pytest.mark.parametrize("device", ["reference", "cpu"])
def test_residual_block_gradients(device, rng):
    f64 = np.float64
    main = [SparseConv2d(2, 3, 3, 2, 1, density=0.7, input_size=(4, 4), seed=1, dtype=f64, name="c1"),
            BatchNorm2d(3, (2, 2), dtype=f64, name="b1"), LIF(12, SMOOTH, dtype=f64, name="l1"),
            SparseConv2d(3, 3, 3, 1, 1, density=0.7, input_size=(2, 2), seed=2, dtype=f64, name="c2")]
    short = [SparseConv2d(2, 3, 1, 2, 0, density=1.0, input_size=(4, 4), seed=3, dtype=f64, name="down")]
    block = ResidualBlock(main, short, name="blk").to(device)
    assert [l.name for l in block.children] == ["blk.c1", "blk.b1", "blk.l1", "blk.c2", "blk.down"]
    x = rng.standard_normal((3, 2, 32))
    _input_fd(block, x, rng)
    ident = ResidualBlock([Conv2d(2, 2, 3, 1, 1, input_size=(2, 2), seed=0, dtype=f64, name="c")], name="id").to(device)
    x2 = rng.standard_normal((2, 2, 8))
    _input_fd(ident, x2, rng)
    Rw = rng.standard_normal((3, 2, 12))
    _fd_check(Network([Flatten(32, dtype=f64).to(device), block]), x, lambda o: (float((o * Rw).sum()), Rw), rng)


@pytest.mark.parametrize("device", ["reference", "cpu"])
def test_small_conv_network_end_to_end_gradients(device, rng):
    f64 = np.float64
    layers = [SparseConv2d(1, 3, 3, 1, 1, density=0.8, input_size=(6, 6), seed=1, dtype=f64, name="c1"),
              BatchNorm2d(3, (6, 6), dtype=f64, name="bn1"), LIF(108, SMOOTH, dtype=f64, name="l1"),
              AvgPool2d(3, (6, 6), 2, dtype=f64, name="p1"),
              SparseConv2d(3, 4, 3, 1, 1, density=0.5, input_size=(3, 3), bias=True, seed=2, dtype=f64, name="c2"),
              LIF(36, SMOOTH, dtype=f64, name="l2"), MaxPool2d(4, (3, 3), 3, dtype=f64, name="p2"),
              Flatten(4, dtype=f64), SparseLinear(4, 3, density=1.0, seed=3, gain=2.0, dtype=f64, name="fc"),
              Readout(3, SMOOTH, dtype=f64)]
    net = Network(layers).to(device)
    x = rng.random((4, 2, 36)) * 2
    y = np.array([0, 2])
    _fd_check(net, x, lambda o: ce_membrane(o, y), rng, n_probe=3)


# ---------------------------------------------------------------------------
# layer contract: recording, state, devices, errors
# ---------------------------------------------------------------------------
def test_record_state_dict_and_devices(rng, tmp_path):
    net = convnet((1, 8, 8), n_classes=3, channels=(2, 4), density=0.5, seed=0)
    x = rng.random((3, 4, 64)).astype(np.float32)
    out = np.asarray(net.forward(x, record=True))
    rec = net.recorded
    assert rec["conv1"]["current"].shape == (3, 4, 2 * 64) and rec["lif1"]["spikes"].shape == (3, 4, 128)
    assert rec["pool1"]["pooled"].shape == (3, 4, 32) and rec["bn1"]["normalized"].shape == (3, 4, 128)
    state = net.state_dict()
    assert set(state["bn1"]) >= {"weight", "bias", "running_mean", "running_var"}
    assert tuple(state["conv2"]["shape"]) == (4, 18)
    twin = convnet((1, 8, 8), n_classes=3, channels=(2, 4), density=0.5, seed=7)
    assert not np.allclose(np.asarray(twin.forward(x)), out)
    twin.load_state_dict(state)
    np.testing.assert_array_equal(np.asarray(twin.forward(x)), out)
    net.eval()
    twin.eval()
    np.testing.assert_array_equal(np.asarray(twin.forward(x)), np.asarray(net.forward(x)))
    ref = twin.to("reference")
    np.testing.assert_allclose(np.asarray(ref.forward(x)), np.asarray(net.forward(x)), rtol=1e-4, atol=1e-4)
    bad = dict(state["bn1"], running_mean=np.zeros(5))
    with pytest.raises(ValueError, match="bn1.running_mean"):
        twin.layers[1].load_state_dict(bad)


def test_batchnorm_uses_batch_statistics_in_training_and_running_ones_in_eval(rng):
    bn = BatchNorm2d(2, (2, 2), momentum=0.5)
    x = (rng.standard_normal((3, 5, 8)) * 3 + 2).astype(np.float32)
    y = np.asarray(bn.forward(x)).transpose(2, 0, 1).reshape(2, -1)
    np.testing.assert_allclose(y.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=1), 1, atol=1e-3)
    xc = x.transpose(2, 0, 1).reshape(2, -1)
    np.testing.assert_allclose(bn.running_mean, 0.5 * xc.mean(axis=1), rtol=1e-5)
    bn.training = False
    ye = np.asarray(bn.forward(x)).transpose(2, 0, 1).reshape(2, -1)
    want = (xc - bn.running_mean[:, None]) / np.sqrt(bn.running_var[:, None] + bn.eps)
    np.testing.assert_allclose(ye, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sparse", [True, False])
def test_fold_batchnorm_matches_conv_then_bn_in_eval_mode(sparse, rng):
    from snn_core.conv import fold_batchnorm

    cls = SparseConv2d if sparse else Conv2d
    kw = dict(density=0.5) if sparse else {}
    conv = cls(2, 3, 3, 2, 1, input_size=(6, 6), bias=True, seed=0, dtype=np.float64, **kw)
    conv.bias.value[:] = rng.standard_normal(3)
    bn = BatchNorm2d(3, (3, 3), momentum=1.0, dtype=np.float64)
    bn.gamma.value[:], bn.beta.value[:] = rng.random(3) + 0.5, rng.standard_normal(3)
    x = rng.random((2, 4, 72))
    bn.forward(conv.forward(x))  # momentum 1: running statistics = this batch's
    bn.training = False
    folded = fold_batchnorm(conv, bn)
    np.testing.assert_allclose(np.asarray(folded.forward(x)), np.asarray(bn.forward(conv.forward(x))), atol=1e-10)
    if sparse:
        assert folded.nnz == conv.nnz and np.array_equal(folded.weight.indices, conv.weight.indices)
    with pytest.raises(ValueError, match="does not normalise"):
        fold_batchnorm(conv, BatchNorm2d(4, (3, 3)))


def test_bad_shapes_give_one_line_errors():
    with pytest.raises(ValueError, match="input_size"):
        SparseConv2d(1, 2, 3)
    with pytest.raises(ValueError, match="does not fit"):
        SparseConv2d(1, 2, 5, input_size=(3, 3))
    with pytest.raises(ValueError, match="must divide"):
        AvgPool2d(2, (5, 4), 2)
    with pytest.raises(ValueError, match="shortcut"):
        ResidualBlock([Conv2d(1, 2, 3, 2, 1, input_size=(4, 4))])
    conv = SparseConv2d(2, 3, 3, input_size=(4, 4), padding=1)
    with pytest.raises(ValueError, match="features"):
        conv.forward(np.zeros((2, 1, 31), np.float32))
    with pytest.raises(ValueError, match="shape"):
        conv.load_state_dict(dict(conv.state_dict(), shape=np.array([3, 17])))


# ---------------------------------------------------------------------------
# structure learning on conv layers
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("grow", ["random", "gradient", "momentum"])
def test_rewiring_conv_layers_keeps_invariants(grow, rng):
    net = convnet((1, 8, 8), n_classes=3, channels=(3, 6), density=0.3, seed=0)
    opt = Adam(net.parameters(), lr=0.01)
    rew = Rewirer(t_iter=2, zeta0=0.3, t_end=10, grow=grow, seed=0)
    x = rng.random((3, 4, 64)).astype(np.float32)
    y = rng.integers(0, 3, 4)
    before = {l.name: l.nnz for l in net.sparse_layers()}
    assert "conv2" in before
    for it in range(1, 5):
        rew.prepare(it, net)
        loss, g = ce_membrane(np.asarray(net.forward(x)), y)
        net.zero_grad()
        net.backward(g)
        if grow == "gradient" and rew.is_event(it):
            conv = net.layers[4]
            dense = conv.dense_weight_grad()
            conv.retain_output_grad = True
            net.backward(g)  # once more to compare the dense gradient at the connections
            w = conv.weight
            rows = np.repeat(np.arange(w.shape[0]), np.diff(w.indptr))
            np.testing.assert_allclose(dense[rows, w.indices], conv.weight_param.grad / 2, rtol=1e-4, atol=1e-6)
        opt.step()
        rew.maybe_rewire(it, net, opt)
    assert rew.n_events == 2
    for layer in net.sparse_layers():
        assert layer.nnz == before[layer.name]
        w = layer.weight
        assert w.has_canonical_format and w.shape == layer.weight_shape
    conv = net.layers[4]
    assert rew.history.records and any(r["layer"] == "conv2" for r in rew.history.records)
    assert np.isfinite(np.asarray(net.forward(x))).all()


def test_erk_and_dense_first_counts_are_exact():
    shapes = [(16, 3, 3, 3), (32, 16, 3, 3), (32, 32, 3, 3), (10, 512)]
    total = sum(math.prod(s) for s in shapes)
    counts = connection_counts(shapes, 0.1, "erk")
    assert sum(counts) == round(0.1 * total)
    dens = [c / math.prod(s) for c, s in zip(counts, shapes)]
    assert dens[0] > dens[2]  # RigL: small layers denser
    df = dense_first_counts(shapes, 0.1, "uniform")
    assert df[0] == math.prod(shapes[0]) and sum(df) == round(0.1 * total)
    net = resnet19((3, 8, 8), width=1 / 16, density=0.2, init="erk", seed=0)
    layers = net.sparse_layers()
    possible = sum(math.prod(l.weight_shape) for l in layers)
    assert sum(l.nnz for l in layers) == round(0.2 * possible)
    with pytest.raises(ValueError, match="leaves nothing for the other layers"):
        dense_first_counts([(1000, 10), (2, 2)], 0.1)


def test_fixed_density_counts_hold_the_named_layers_and_the_total():
    shapes = [(32, 1, 3, 3), (128, 32, 3, 3), (256, 6272), (10, 256)]
    sizes = [math.prod(s) for s in shapes]
    c = fixed_density_counts(shapes, 0.1, {0: 1.0, 1: 0.3}, "erk")
    assert c[0] == sizes[0] and c[1] == round(0.3 * sizes[1]) and sum(c) == round(0.1 * sum(sizes))
    free = [k / z for k, z in zip(c[2:], sizes[2:])]
    erk = connection_counts(shapes[2:], (sum(c[2:])) / sum(sizes[2:]), "erk")
    assert abs(c[2] - erk[0]) <= 1 and free[1] > free[0]  # the rest spread by ERK: the small layer denser
    with pytest.raises(ValueError, match="out of range"):
        fixed_density_counts(shapes, 0.1, {4: 0.5})
    with pytest.raises(ValueError, match=r"only 25 connection\(s\) for 256 output neurons"):
        fixed_density_counts(shapes, 0.1, {2: 25 / (256 * 6272)})
    with pytest.raises(ValueError, match="leaves nothing"):
        fixed_density_counts(shapes, 0.1, {2: 0.5})  # 0.5 of fc1 alone is over the 10% budget
    with pytest.raises(ValueError, match="leaves nothing"):
        fixed_density_counts(shapes, 1.0, dict.fromkeys(range(4), 1.0))  # nothing left to share


def test_convnet_layer_density_overrides_erk_and_dense_first():
    kw = dict(channels=(4, 8), fc_hidden=(16,), density=0.2, init="erk", seed=0)
    net = convnet((1, 12, 12), **kw, layer_density={"conv2": 0.5, "conv1": 0.5})
    layers = {l.name: l for l in net.sparse_layers()}
    assert layers["conv2"].nnz == round(0.5 * 8 * 4 * 9) and layers["conv1"].nnz == round(0.5 * 4 * 9)
    possible = sum(math.prod(l.weight_shape) for l in layers.values())
    assert sum(l.nnz for l in layers.values()) == round(0.2 * possible)
    plain = {l.name: l.nnz for l in convnet((1, 12, 12), **kw).sparse_layers()}
    assert plain["conv1"] == 4 * 9 and plain["conv2"] != layers["conv2"].nnz  # dense_first, ERK otherwise
    with pytest.raises(ValueError, match="'conv3' is not a sparse layer"):
        convnet((1, 12, 12), **kw, layer_density={"conv3": 0.5})


# ---------------------------------------------------------------------------
# the paper's models
# ---------------------------------------------------------------------------
def test_model_layer_lists():
    v = vggsnn((2, 48, 48), n_classes=10, width=1.0, sparse=False)
    convs = [l for l in v.modules() if isinstance(l, Conv2d)]
    assert [c.geometry.c_out for c in convs] == [c for c in VGGSNN_LAYERS if c != "A"]
    assert sum(isinstance(l, AvgPool2d) for l in v.layers) == 4
    assert v.layers[-1].name == "fc" and v.layers[-1].in_features == 512 * 3 * 3
    r = resnet19((3, 32, 32), n_classes=100, width=1.0, sparse=True, density=0.1)
    mods = r.modules()
    main_convs = [l for l in mods if isinstance(l, SparseConv2d) and not l.name.endswith("down")]
    fcs = [l for l in mods if type(l) is SparseLinear]
    assert len(main_convs) + len(fcs) == 19  # ResNet19: 17 convolutions + 2 linear layers
    assert [sum(1 for l in r.layers if isinstance(l, ResidualBlock) and l.name.startswith(f"layer{s}"))
            for s in (1, 2, 3)] == [b for _, b, _ in RESNET19_STAGES]
    assert main_convs[-1].geometry.c_out == 512 and main_convs[-1].geometry.oh == 8
    assert fcs[0].weight_shape == (256, 512) and fcs[1].weight_shape == (100, 256)
    c = convnet((1, 28, 28), channels=(4, 8), fc_hidden=(32, 16), density=0.2, init="erk")
    names = [l.name for l in c.layers[c.layers.index(next(l for l in c.layers if isinstance(l, Flatten))) + 1:]]
    assert names == ["fc1", "lif_fc1", "fc2", "lif_fc2", "fc", "readout"]
    assert [l.weight_shape for l in c.sparse_layers()][-3:] == [(32, 8 * 7 * 7), (16, 32), (10, 16)]
    total = sum(l.weight_shape[0] * l.weight_shape[1] for l in c.sparse_layers())
    assert sum(l.nnz for l in c.sparse_layers()) == round(0.2 * total)  # the global density stays exact


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("model", ["vggsnn", "resnet19"])
def test_models_build_train_a_step_and_rewire_on_every_backend(model, device, rng):
    small = device == "cuda"  # the simulator runs every thread as Python: one column (T = batch = 1)
    width = 1 / 64 if small else 1 / 32
    if model == "vggsnn":
        net = vggsnn((2, 16, 16), n_classes=3, width=width, density=0.3, seed=0)
    else:
        net = resnet19((3, 8, 8), n_classes=3, width=width, density=0.3, seed=0)
    net.to(device)
    T, B = (1, 1) if small else (2, 2)
    x = rng.random((T, B, net.in_features)).astype(np.float32)
    y = np.array([0, 2])[:B]
    opt = Adam(net.parameters(), lr=0.01)
    rew = Rewirer(t_iter=1, zeta0=0.2, t_end=10, seed=0)
    nnz = [l.nnz for l in net.sparse_layers()]
    w0 = net.state_dict()
    loss, g = tet(net.backend.to_host(net.forward(x)), y)
    net.zero_grad()
    net.backward(g)
    opt.step()
    ev = rew.maybe_rewire(1, net, opt)
    assert len(ev) >= 1 and [l.nnz for l in net.sparse_layers()] == nnz
    moved = [k for k, v in net.state_dict().items() if "data" in v and not np.array_equal(v["data"], w0[k]["data"])]
    assert moved
    assert np.isfinite(net.backend.to_host(net.forward(x))).all() and math.isfinite(loss)


# ---------------------------------------------------------------------------
# the Trainer, checkpoints, plots and the command line with conv models
# ---------------------------------------------------------------------------
def _tiny_images(seed=0, n=60, n_test=20, side=8):
    from snn_core.data.datasets import Dataset

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n + n_test).astype(np.uint8)
    x = (rng.random((n + n_test, side * side)) * 60).astype(np.uint8)
    for c in range(3):  # class c brightens its own rows
        x[y == c, c * 16:(c + 1) * 16] += 180
    return Dataset(x[:n], y[:n], x[n:], y[n:], "tiny", "test", (side, side))


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_trainer_checkpoint_and_plots_with_a_conv_model(tmp_path, pool):
    from snn_core.config import TrainConfig
    from snn_core.training import Trainer, restore_trainer

    cfg = TrainConfig(model="convnet", channels=[3, 6], encoder="direct", steps=3, density=0.3, init="uniform",
                      epochs=2, batch_size=10, t_iter=2, quiet=True, seed=1, lr=0.02, out_dir=str(tmp_path / "run"),
                      pool=pool)
    ds = _tiny_images()
    tr = Trainer(cfg, ds)
    pooling = {"avg": "AvgPool2d", "max": "MaxPool2d"}[pool]
    assert [type(l).__name__ for l in tr.network.layers][:4] == ["SparseConv2d", "BatchNorm2d", "LIF", pooling]
    summary = tr.fit()
    possible = sum(math.prod(l.weight_shape) for l in tr.network.sparse_layers())
    assert sum(l.nnz for l in tr.network.sparse_layers()) == round(0.3 * possible)
    assert summary["rewiring_events"] >= 2
    assert {d["name"] for d in summary["layers"]} == {"conv1", "conv2", "fc"}
    back = restore_trainer(tmp_path / "run" / "last.h5", dataset=ds, quiet=True)
    x = back._encode(back.x_test[:5], (3, 0))
    tr.network.load_state_dict(back.network.state_dict())
    tr.network.eval(), back.network.eval()
    np.testing.assert_array_equal(np.asarray(back.network.forward(x)), np.asarray(tr.network.forward(x)))


@pytest.mark.parametrize("model, kw", [
    ("convnet", dict(channels=[3, 6], fc_hidden=[12])),  # "fc" sorts before "fc1": read by position, 12 classes
    ("resnet19", dict(width=1 / 32)),  # "layer4..." sorts last
    ("vggsnn", dict(width=1 / 32)),  # "bn1" sorts first: 16 x 16 pixels, not 3 x 16 x 16 features
])
def test_checkpoints_of_every_conv_model_evaluate_and_resume(tmp_path, model, kw):
    from snn_core.config import TrainConfig
    from snn_core.data.datasets import Dataset
    from snn_core.training import Trainer, network_from_checkpoint, restore_trainer

    rng = np.random.default_rng(0)
    side = 16
    y = rng.integers(0, 3, 40).astype(np.uint8)
    img = rng.integers(0, 255, (40, 3 * side * side)).astype(np.uint8)
    ds = Dataset(img[:30], y[:30], img[30:], y[30:], "cifar-like", "generated", (side, side))
    cfg = TrainConfig(model=model, encoder="direct", steps=2, density=0.3, init="erk", epochs=1, batch_size=10,
                      t_iter=2, quiet=True, out_dir=str(tmp_path / "run"), **kw)
    tr = Trainer(cfg, ds)
    tr.fit()
    net, _ = network_from_checkpoint(tmp_path / "run" / "last.h5", last=True)
    assert (net.in_features, net.out_features) == (3 * side * side, 3)
    x = tr._encode(tr.x_test[:4], (3, 0))
    tr.network.eval(), net.eval()
    np.testing.assert_array_equal(np.asarray(net.forward(x)), np.asarray(tr.network.forward(x)))
    back = restore_trainer(tmp_path / "run" / "last.h5", dataset=ds, quiet=True, epochs=2)
    assert back.epoch == 1 and back.fit()["epochs"] == 2
    other = Dataset(img[:30, :side * side], y[:30], img[30:, :side * side], y[30:], "gray", "generated", (side, side))
    with pytest.raises(ValueError, match=f"takes {3 * side * side} input features, the data .gray. has {side * side}"):
        restore_trainer(tmp_path / "run" / "last.h5", dataset=other, quiet=True)


def test_state_io_sizes_finds_layers_by_name_in_a_file_that_lists_them_alphabetically():
    """Checkpoints of earlier releases list the layers by name; the sizes must not depend on that order."""
    from snn_core.config import TrainConfig
    from snn_core.models import IO_LAYERS
    from snn_core.network import mlp
    from snn_core.training import state_io_sizes

    for model, build in (("convnet", convnet), ("vggsnn", vggsnn), ("resnet19", resnet19)):  # the table is true
        net = (build((2, 16, 16), 5, width=1 / 32, density=0.5) if model != "convnet"
               else build((2, 16, 16), 5, fc_hidden=(9,), density=0.5))
        conv, bn, out = IO_LAYERS[model]
        layers = {l.name: l for l in net.modules()}
        assert net.sparse_layers()[0] is layers[conv] and net.sparse_layers()[-1] is layers[out], model
        assert isinstance(layers[bn], BatchNorm2d) and layers[conv].geometry.kernel_cols == 2 * 9, model
        assert state_io_sizes(TrainConfig(model=model), dict(sorted(net.state_dict().items()))) == (512, 5)
    net = convnet((1, 12, 12), 7, channels=(4, 8), fc_hidden=(20,))
    alphabetical = dict(sorted(net.state_dict().items()))
    assert list(alphabetical)[-1] == "fc1"
    assert state_io_sizes(TrainConfig(model="convnet"), alphabetical) == (144, 7)
    assert state_io_sizes(TrainConfig(model="convnet", input_shape=[1, 12, 12]), alphabetical) == (144, 7)
    sizes = [5] + [3] * 10 + [2]  # eleven layers: "fc10" and "fc11" sort before "fc2"
    deep = dict(sorted(mlp(sizes).state_dict().items()))
    assert list(deep)[:3] == ["fc1", "fc10", "fc11"]
    assert state_io_sizes(TrainConfig(model="mlp", hidden=[3] * 10), deep) == (5, 2)


def test_eval_batch_size_bounds_the_widest_output_and_does_not_change_the_accuracy():
    from snn_core.config import TrainConfig
    from snn_core.training import Trainer

    ds = _tiny_images()
    common = dict(model="convnet", channels=[3, 6], encoder="direct", density=0.3, init="uniform", quiet=True)
    tr = Trainer(TrainConfig(**common, steps=3, batch_size=10), ds)
    assert tr.eval_batch_size() == 200  # 3x8x8 maps x 3 steps: 2.3 KB per sample
    tr.EVAL_BATCH_BYTES = 3 * 8 * 8 * 3 * 4 * 40  # room for 40 samples
    assert tr.eval_batch_size() == 40
    tr.EVAL_BATCH_BYTES = 1
    assert tr.eval_batch_size() == 10  # never below the training batch
    # batch norm in eval mode and direct coding: every sample is independent of its batch
    assert tr.evaluate(ds.x_test, ds.y_test, 7)[0] == tr.evaluate(ds.x_test, ds.y_test, 40)[0]


def test_kernel_grid_puts_every_kernel_in_its_tile():
    from snn_core.viz import kernel_grid

    layer = SparseConv2d(2, 3, (2, 3), density=0.5, input_size=(4, 4), seed=0)
    w = layer.weight
    indptr, indices, shape, data = kernel_grid(w.indptr, w.indices, layer.kernel_shape, w.data)
    assert shape == (6, 6)
    grid = np.zeros(shape)
    rows = np.repeat(np.arange(shape[0]), np.diff(indptr))
    grid[rows, indices] = data
    k4 = w.toarray().reshape(3, 2, 2, 3)
    for co in range(3):
        for ci in range(2):
            np.testing.assert_array_equal(grid[co * 2:(co + 1) * 2, ci * 3:(ci + 1) * 3], k4[co, ci])


def test_cli_trains_a_conv_model_and_rejects_bad_shapes(tmp_path, capsys):
    from snn_core.cli import main
    from snn_core.data.idx import write_idx

    ds = _tiny_images(n=40, n_test=10)
    d = tmp_path / "data"
    d.mkdir()
    for name, arr in (("train-images-idx3-ubyte", ds.x_train.reshape(-1, 8, 8)), ("train-labels-idx1-ubyte", ds.y_train),
                      ("t10k-images-idx3-ubyte", ds.x_test.reshape(-1, 8, 8)), ("t10k-labels-idx1-ubyte", ds.y_test)):
        write_idx(d / name, arr)
    args = ["train", "--model", "convnet", "--channels", "2", "4", "--data-dir", str(d), "--encoder", "direct",
            "--steps", "2", "--density", "0.4", "--init", "uniform", "--epochs", "2", "--batch-size", "10", "--t-iter", "1",
            "--quiet", "--out-dir", str(tmp_path / "run")]
    assert main(args) in (0, None)
    assert "SparseConv2d" in capsys.readouterr().out
    assert main(["plot", str(tmp_path / "run"), "--out", str(tmp_path / "fig")]) in (0, None)
    assert (tmp_path / "fig" / "structure_conv2.gif").is_file()  # the rewiring GIF, one tile per kernel
    try:
        code = main(args[:-2] + ["--input-shape", "3", "8", "8", "--out-dir", str(tmp_path / "run2")])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code not in (0, None) and "input_shape: [3, 8, 8] has 192 features, the data 64" in err
    assert "Traceback" not in err


def test_reduced_vggsnn_trains_a_few_epochs_with_tet_on_generated_cifar_like_images(tmp_path):
    """The full path of the paper-scale runs at toy size: 3x16x16 colour images, VGGSNN at 1/32 width,
    TET loss on the per-step linear output, ERK at 20%, rewiring, checkpoints, best-validation test."""
    from snn_core.config import TrainConfig
    from snn_core.data.datasets import Dataset
    from snn_core.training import Trainer

    rng = np.random.default_rng(0)
    n, side = 90, 16
    y = rng.integers(0, 3, n + 30).astype(np.uint8)
    img = rng.integers(0, 90, (n + 30, 3, side, side)).astype(np.uint8)
    for c in range(3):  # class c: a bright colour channel
        img[y == c, c] += 150
    ds = Dataset(img[:n].reshape(n, -1), y[:n], img[n:].reshape(30, -1), y[n:], "cifar-like", "generated", (side, side))
    cfg = TrainConfig(model="vggsnn", width=1 / 32, input_shape=[3, side, side], encoder="direct", steps=2,
                      loss="tet", output="linear", density=0.2, init="erk", dense_first=False, epochs=3,
                      batch_size=15, lr=0.01, t_iter=3, quiet=True, seed=0, out_dir=str(tmp_path / "vgg"))
    tr = Trainer(cfg, ds)
    assert sum(isinstance(l, SparseConv2d) for l in tr.network.modules()) == 8
    summary = tr.fit()
    assert summary["rewiring_events"] >= 3 and (tmp_path / "vgg" / "best.h5").is_file()
    possible = sum(math.prod(l.weight_shape) for l in tr.network.sparse_layers())
    assert sum(l.nnz for l in tr.network.sparse_layers()) == round(0.2 * possible)
    assert tr.metrics["train_loss"][-1] < tr.metrics["train_loss"][0]


def test_set_connections_checks_kernel_columns_not_input_features():
    """A deep layer of a small image has fewer input features (c_in*h*w) than kernel columns (c_in*kh*kw)."""
    layer = SparseConv2d(8, 4, 3, 1, 1, density=0.5, input_size=(2, 2), seed=0)
    assert layer.in_features == 32 < layer.geometry.kernel_cols == 72
    indptr = np.array([0, 1, 1, 1, 2])
    layer.set_connections(indptr, np.array([71, 40]), np.array([0.5, -0.5], np.float32))
    assert layer.weight.toarray()[0, 71] == 0.5 and layer.nnz == 2
    with pytest.raises(ValueError, match=r"index 72 out of range \[0, 71\]"):
        layer.set_connections(indptr, np.array([72, 40]), np.array([0.5, -0.5], np.float32))
    net = resnet19((3, 8, 8), 3, width=1 / 16, density=0.4)  # layer3 at 2x2: failed before
    assert all(l.nnz > 0 for l in net.sparse_layers())
