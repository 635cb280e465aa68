"""Tests for snn_core.data.encoders."""

import numba
import numpy as np
import pytest

from snn_core.data import (
    bernoulli_encode,
    direct_encode,
    get_encoder,
    latency_encode,
    load_embedded,
    poisson_encode,
    to_float,
)

ALL = ["bernoulli", "poisson", "direct", "latency"]


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).random((6, 50), dtype=np.float32)


def _encode(name, x, T, **kw):
    if name in ("bernoulli", "poisson"):
        kw.setdefault("seed", 0)
    return get_encoder(name)(x, T, **kw)


@pytest.mark.parametrize("name", ALL)
def test_shape_dtype_layout(name, x):
    s = _encode(name, x, 7)
    B, F = x.shape
    assert s.shape == (7, B, F) and s.dtype == np.float32
    if name == "direct":  # one (F, 1, B) frame at every step: time stride 0 (see test_repeated_frame.py)
        assert s.strides == (0, 4, B * 4) and s.base is not None
        np.testing.assert_array_equal(s, np.broadcast_to(x, s.shape))
        return
    # indexes (T, B, F) but is a view of a C-contiguous (F, T, B) buffer
    base = s.base
    assert base is not None and base.shape == (F, 7, B) and base.flags.c_contiguous
    assert np.shares_memory(s, base)
    assert s.strides == (B * 4, 4, 7 * B * 4)
    np.testing.assert_array_equal(s.transpose(2, 0, 1), base)


@pytest.mark.parametrize("name", ALL)
def test_out_buffer_reuse(name, x):
    B, F = x.shape
    buf = np.full((F, 5, B), 3.0, dtype=np.float32)
    s = _encode(name, x, 5, out=buf)
    assert s.base is buf
    np.testing.assert_array_equal(s, _encode(name, x, 5))  # stale contents fully overwritten
    for bad in (np.empty((F, 5, B + 1), np.float32), np.empty((F, 5, B), np.float64),
                np.empty((5, B, F), np.float32), np.empty((B, 5, F), np.float32).transpose(2, 1, 0)):
        with pytest.raises(ValueError, match="out must be"):
            _encode(name, x, 5, out=bad)


@pytest.mark.parametrize("name", ["bernoulli", "poisson"])
def test_seeded_determinism(name, x):
    a = _encode(name, x, 20, seed=123)
    b = _encode(name, x, 20, seed=123)
    c = _encode(name, x, 20, seed=124)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert set(np.unique(a)) <= {0.0, 1.0}
    # a Generator advances: successive calls differ, but reproducibly so
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    a1, a2 = _encode(name, x, 20, seed=g1), _encode(name, x, 20, seed=g1)
    assert not np.array_equal(a1, a2)
    np.testing.assert_array_equal(a1, _encode(name, x, 20, seed=g2))


@pytest.mark.parametrize("shape, T", [((6, 50), 20), ((1, 1), 1), ((3, 784), 9), ((0, 5), 3), ((4, 0), 2)])
def test_numba_matches_numpy_reference(shape, T):
    x = np.random.default_rng(1).random(shape, dtype=np.float32)
    for seed in (0, 1, 2**63 + 7, -5):
        a = bernoulli_encode(x, T, seed=seed)
        b = bernoulli_encode(x, T, seed=seed, backend="numpy")
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)
        assert a.tobytes() == b.tobytes()
    for max_rate in (300.0, 3000.0):  # p = x * 0.3, and p = min(x * 3, 1)
        a = poisson_encode(x, T, max_rate=max_rate, seed=3)
        assert a.tobytes() == poisson_encode(x, T, max_rate=max_rate, seed=3, backend="numpy").tobytes()


def test_independent_of_thread_count(x):
    ref = bernoulli_encode(x, 30, seed=9)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = bernoulli_encode(x, 30, seed=9)
    finally:
        numba.set_num_threads(old)
    np.testing.assert_array_equal(ref, one)


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
@pytest.mark.parametrize("T", [1, 7, 8])
@pytest.mark.parametrize("F", [31, 32, 97])  # tiles of 32 features: one short, one full, four with a rest of 1
def test_serial_parallel_and_threads_identical(T, F, dtype):
    from snn_core.data import encoders as E

    x = np.random.default_rng(3).random((13, F), dtype=np.float32)
    state = E._stream_state(4)
    ref = np.empty((F, T, 13), dtype)
    E._bernoulli_numpy(np.ascontiguousarray(x.T), state, ref)
    every = np.zeros(0, np.uint8)
    ser = np.full_like(ref, 7)
    assert E._bernoulli_ser(x, np.float32(1.0), state, every, ser) == 0
    assert ser.tobytes() == ref.tobytes()
    old = numba.get_num_threads()
    try:
        for n in sorted({1, old}):
            numba.set_num_threads(n)
            par = np.full_like(ref, 7)
            assert E._bernoulli_par(x, np.float32(1.0), state, every, par) == 0
            assert par.tobytes() == ref.tobytes()
    finally:
        numba.set_num_threads(old)


@pytest.mark.parametrize("name, backend", [("bernoulli", "numba"), ("bernoulli", "numpy"), ("poisson", "numba"),
                                           ("poisson", "numpy"), ("latency", None)])
@pytest.mark.parametrize("T", [1, 5, 8, 9])  # every count of lanes in the last 64-bit word
def test_uint8_spikes_are_the_float32_spikes(name, T, backend):
    x = np.random.default_rng(7).random((11, 70), dtype=np.float32)
    x[:, :3], x[:, 3:6] = 0, 1
    kw = {} if backend is None else {"backend": backend}
    features = (np.arange(70) % 3 != 0).astype(np.uint8)
    for feats in ((None, features) if name != "latency" else (None,)):
        if feats is not None:
            kw["features"] = feats
        f32 = _encode(name, x, T, **kw)
        u8 = _encode(name, x, T, dtype=np.uint8, **kw)
        assert u8.dtype == np.uint8 and u8.shape == f32.shape
        assert u8.base.flags.c_contiguous and u8.base.shape == (70, T, 11)  # the same feature-major layout
        if feats is not None:  # rows not drawn: zeros in a new buffer, in both dtypes
            assert not u8.base[features == 0].any()
        np.testing.assert_array_equal(u8, f32)
        buf = np.full((70, T, 11), 9, np.uint8)  # a uint8 out decides the dtype; drawn rows fully written
        out = _encode(name, x, T, out=buf, **kw)
        assert out.base is buf
        rows = slice(None) if feats is None else features == 1
        np.testing.assert_array_equal(buf[rows], u8.base[rows])


@pytest.mark.parametrize("name", ["bernoulli", "poisson", "latency"])
def test_spike_dtype_is_checked(name, x):
    B, F = x.shape
    for bad in (np.int16, np.float64, "spikes"):
        with pytest.raises(ValueError, match="dtype must be float32 or uint8"):
            _encode(name, x, 3, dtype=bad)
    with pytest.raises(ValueError, match="out must be a writable C-contiguous float32 array"):
        _encode(name, x, 3, out=np.empty((F, 3, B), np.uint8), dtype=np.float32)
    with pytest.raises(ValueError, match="out must be a writable C-contiguous uint8 array"):
        _encode(name, x, 3, out=np.empty((F, 3, B), np.float32), dtype=np.uint8)


def test_current_and_frame_encoders_keep_float32(x):
    B, F = x.shape
    with pytest.raises(ValueError, match="out must be a writable C-contiguous float32 array"):
        direct_encode(x, 3, out=np.empty((F, 3, B), np.uint8))
    with pytest.raises(ValueError, match="out must be a writable C-contiguous float32 array"):
        get_encoder("frames")(np.zeros((B, 3, F), np.float32), 3, out=np.empty((F, 3, B), np.uint8))


@pytest.mark.parametrize("version", ["_bernoulli_ser", "_bernoulli_par"])
def test_kernel_counts_every_bad_value(version):
    # NaN, below 0 and above 1 each count, in drawn and undrawn features alike, in any tile
    from snn_core.data import encoders as E

    x = np.random.default_rng(5).random((9, 70), dtype=np.float32)
    bad = [(0, 0, np.nan), (3, 31, -1e-7), (8, 32, 1.0 + 2**-23), (4, 69, np.inf), (5, 40, -np.inf)]
    for b, f, v in bad:
        x[b, f] = v
    features = np.ones(70, np.uint8)
    features[[0, 40]] = 0
    out = np.empty((70, 3, 9), np.float32)
    kernel = getattr(E, version)
    assert kernel(x, np.float32(1.0), E._stream_state(0), features, out) == len(bad)
    x[[b for b, _, _ in bad], [f for _, f, _ in bad]] = 0.5
    assert kernel(x, np.float32(1.0), E._stream_state(0), features, out) == 0


@pytest.mark.parametrize("encode", ["bernoulli", "poisson"])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_feature_mask_draws_only_the_marked_features(encode, backend, x):
    kw = {"max_rate": 300.0} if encode == "poisson" else {}
    fn = get_encoder(encode)
    B, F = x.shape
    features = np.random.default_rng(2).random(F) < 0.4
    whole = fn(x, 9, seed=11, backend=backend, **kw)
    buf = np.full((F, 9, B), 7.0, np.float32)
    part = fn(x, 9, seed=11, out=buf, features=features, backend=backend, **kw)
    assert part.base is buf
    np.testing.assert_array_equal(part[..., features], whole[..., features])  # the same bits as without a mask
    assert np.all(buf[~features] == 7.0)  # the other rows are not written
    fresh = fn(x, 9, seed=11, features=features.astype(np.uint8), backend=backend, **kw)
    np.testing.assert_array_equal(fresh[..., features], whole[..., features])
    assert not fresh[..., ~features].any()  # zeros in a new buffer


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_feature_mask_still_checks_every_value(backend, x):
    bad = x.copy()
    features = np.ones(x.shape[1], bool)
    features[7] = False
    bad[2, 7] = np.nan  # in a feature that is not drawn
    with pytest.raises(ValueError, match="x contains NaN"):
        bernoulli_encode(bad, 4, seed=0, features=features, backend=backend)
    bad[2, 7] = 1.5
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\], got min 0\.\d+, max 1\.5"):
        bernoulli_encode(bad, 4, seed=0, features=features, backend=backend)


@pytest.mark.parametrize("features", [np.ones(49, bool), np.ones((50, 1), bool), np.ones(50, np.int64),
                                      np.ones(50, np.float32), [1] * 50])
def test_bad_feature_mask_is_refused(features, x):
    with pytest.raises(ValueError, match=r"features must be a bool or uint8 mask of shape \(50,\)"):
        bernoulli_encode(x, 4, seed=0, features=features)


def test_bernoulli_16bit_threshold_ends():
    # spike iff a 16-bit uniform < round(p * 2**16): p below 2**-17 never spikes,
    # p at or above 1 - 2**-17 always does, one notch above 0 does sometimes
    p = np.array([[0.0, 2.0**-17 * 0.999, 2.0**-16, 1.0 - 2.0**-17, 1.0]], dtype=np.float32)
    s = bernoulli_encode(np.repeat(p, 64, axis=0), 4096, seed=0)
    counts = s.sum(axis=(0, 1), dtype=np.float64)
    assert counts[0] == 0 and counts[1] == 0 and counts[-1] == counts[-2] == 64 * 4096
    assert 0 < counts[2] < 64 * 4096 * 4 / 65536


def test_bernoulli_empirical_rate():
    p = np.array([[0.0, 1e-3, 0.1, 0.25, 0.5, 0.77, 0.9, 0.999, 1.0]], dtype=np.float32)
    p = np.repeat(p, 20, axis=0)  # batch 20
    T = 10_000
    n = T * p.shape[0]  # 200,000 draws per intensity
    for seed in (0, 1):
        rate = bernoulli_encode(p, T, seed=seed).mean(axis=(0, 1), dtype=np.float64)
        q = p[0].astype(np.float64)
        tol = 6.0 * np.sqrt(q * (1 - q) / n)
        assert np.all(np.abs(rate - q) <= tol), (rate, q, tol)
        assert rate[0] == 0.0 and rate[-1] == 1.0  # exact at the ends


def test_poisson(x):
    np.testing.assert_array_equal(poisson_encode(x, 10, seed=3), bernoulli_encode(x, 10, seed=3))
    # p = x * 200 Hz * 1 ms = x / 5; p = min(x * 4, 1) saturates
    ones = np.ones((1, 4), dtype=np.float32)
    assert poisson_encode(ones, 50, max_rate=4000.0, seed=0).min() == 1.0
    assert poisson_encode(ones * 0, 50, max_rate=4000.0, seed=0).max() == 0.0
    r = poisson_encode(np.full((100, 10), 0.5, np.float32), 400, max_rate=200.0, dt=1e-3, seed=0).mean()
    assert abs(r - 0.1) < 6 * np.sqrt(0.1 * 0.9 / 400_000)
    with pytest.raises(ValueError, match="max_rate"):
        poisson_encode(x, 5, max_rate=-1.0)
    with pytest.raises(ValueError, match="dt"):
        poisson_encode(x, 5, dt=0.0)


def test_direct(x):
    s = direct_encode(x, 6)
    for t in range(6):
        np.testing.assert_array_equal(s[t], x)
    # any finite current is allowed (e.g. standardised inputs)
    z = np.array([[-2.5, 3.0]], dtype=np.float64)
    np.testing.assert_array_equal(direct_encode(z, 2)[1], z.astype(np.float32))
    with pytest.raises(ValueError, match="inf"):
        direct_encode(np.array([[np.inf]]), 2)


@pytest.mark.parametrize("T", [1, 2, 10, 25])
@pytest.mark.parametrize("mapping, threshold", [("linear", 0.0), ("linear", 0.3), ("log", 0.1)])
def test_latency(T, mapping, threshold):
    grid = np.linspace(0, 1, 301, dtype=np.float32)
    x = np.stack([grid, grid[::-1]])  # (2, 301)
    s = latency_encode(x, T, threshold=threshold, mapping=mapping)
    assert s.shape == (T, 2, 301)
    counts = s.sum(axis=0)
    assert counts.max() <= 1.0
    assert np.all(counts[x <= threshold] == 0)
    t_first = np.where(counts > 0, s.argmax(axis=0), T)  # T = never
    # brighter inputs spike no later (silent counts as latest)
    order = np.argsort(x.ravel(), kind="stable")
    assert np.all(np.diff(t_first.ravel()[order]) <= 0)
    if mapping == "linear":
        assert counts[x > threshold].min() == 1.0  # every supra-threshold input spikes
        assert t_first[0, -1] == 0  # x == 1 fires first
        expected = np.rint((1 - x) * (T - 1))
        np.testing.assert_array_equal(t_first[x > threshold], expected[x > threshold])


def test_latency_rejects_bad_options(x):
    with pytest.raises(ValueError, match="threshold > 0"):
        latency_encode(x, 5, mapping="log")
    with pytest.raises(ValueError, match="mapping"):
        latency_encode(x, 5, mapping="cubic")
    with pytest.raises(ValueError, match="threshold"):
        latency_encode(x, 5, threshold=1.0)


@pytest.mark.parametrize("name", ALL)
def test_bad_inputs(name, x):
    with pytest.raises(ValueError, match=r"\(50,\)"):
        _encode(name, x[0], 4)
    with pytest.raises(ValueError, match=r"\(6, 50, 1\)"):
        _encode(name, x[..., None], 4)
    for T in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="T"):
            _encode(name, x, T)
    nan = x.copy()
    nan[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _encode(name, nan, 4)
    if name != "direct":
        for bad in (x + 1.0, x - 0.5, (x * 255).astype(np.uint8)):
            with pytest.raises(ValueError, match=r"\[0, 1\]"):
                _encode(name, bad, 4)


def test_bad_seed(x):
    with pytest.raises(TypeError):
        bernoulli_encode(x, 3, seed="abc")
    with pytest.raises(ValueError, match="backend"):
        bernoulli_encode(x, 3, seed=0, backend="cuda")


def test_get_encoder():
    assert get_encoder("bernoulli") is bernoulli_encode
    assert get_encoder("Latency") is latency_encode
    with pytest.raises(ValueError, match="bernoulli, poisson, direct, latency"):
        get_encoder("rank-order")


def test_encode_embedded_mnist_batch():
    xb = to_float(load_embedded().x_test[:32])
    s = bernoulli_encode(xb, 8, seed=0)
    assert s.shape == (8, 32, 784)
    assert abs(s.mean() - xb.mean()) < 0.01
