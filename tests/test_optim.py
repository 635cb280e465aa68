"""Optimizers against hand-written NumPy updates; state remapping and
checkpoints; learning-rate schedules; argument validation."""
import math

import numpy as np
import pytest

from snn_core.layers import SparseLinear
from snn_core.optim import SGD, Adam, Constant, CosineDecay, ExponentialDecay, StepDecay, make_schedule
from snn_core.parameter import Parameter

F32 = np.float32


def _params(seed=0):
    """A dense weight (decayed), a CSR data array (decayed) and a bias (not decayed)."""
    rng = np.random.default_rng(seed)
    dense = Parameter(rng.normal(size=(6, 5)).astype(F32), "dense.weight")
    sl = SparseLinear(20, 15, density=0.1, seed=seed, name="sparse")
    sparse = sl.weight_param
    assert sparse.value.ndim == 1 and sparse.value is sl.weight.data
    bias = Parameter(rng.normal(size=4).astype(F32), "bias", decay=False)
    return [dense, sparse, bias], sl


def _grads(params, rng):
    return [rng.normal(size=p.value.shape).astype(F32) for p in params]


class RefSGD:
    """Hand-written SGD: PyTorch conventions (buf = mu buf + g; nesterov uses g + mu buf)."""

    def __init__(self, values, lr, momentum=0.0, nesterov=False, wd=0.0, decays=None):
        self.w = [v.astype(np.float64) for v in values]
        self.buf = [np.zeros_like(w) for w in self.w]
        self.lr, self.mu, self.nesterov, self.wd = lr, momentum, nesterov, wd
        self.decays = decays or [True] * len(values)
        self.it = 0

    def step(self, grads):
        lr = self.lr(self.it) if callable(self.lr) else self.lr
        for i, g in enumerate(grads):
            g = g.astype(np.float64) + (self.wd * self.w[i] if self.decays[i] else 0.0)
            if self.mu:
                self.buf[i] = self.mu * self.buf[i] + g
                d = g + self.mu * self.buf[i] if self.nesterov else self.buf[i]
            else:
                d = g
            self.w[i] = self.w[i] - lr * d
        self.it += 1


class RefAdam:
    """Hand-written Adam with bias correction and L2 decay added to the gradient."""

    def __init__(self, values, lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0, decays=None):
        self.w = [v.astype(np.float64) for v in values]
        self.m = [np.zeros_like(w) for w in self.w]
        self.v = [np.zeros_like(w) for w in self.w]
        self.lr, self.b1, self.b2, self.eps, self.wd = lr, b1, b2, eps, wd
        self.decays = decays or [True] * len(values)
        self.t = 0

    def step(self, grads):
        lr = self.lr(self.t) if callable(self.lr) else self.lr
        self.t += 1
        for i, g in enumerate(grads):
            g = g.astype(np.float64) + (self.wd * self.w[i] if self.decays[i] else 0.0)
            self.m[i] = self.b1 * self.m[i] + (1 - self.b1) * g
            self.v[i] = self.b2 * self.v[i] + (1 - self.b2) * g * g
            mhat = self.m[i] / (1 - self.b1 ** self.t)
            vhat = self.v[i] / (1 - self.b2 ** self.t)
            self.w[i] = self.w[i] - lr * mhat / (np.sqrt(vhat) + self.eps)


def _run(opt, ref, params, steps, seed=1):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        grads = _grads(params, rng)
        opt.zero_grad()
        for p, g in zip(params, grads):
            p.accumulate(g)
        opt.step()
        ref.step(grads)
        for p, w in zip(params, ref.w):
            assert p.value.dtype == F32
            np.testing.assert_allclose(p.value, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True), (0.5, True)])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_sgd_matches_hand_written(momentum, nesterov, wd):
    params, _ = _params()
    decays = [p.decay for p in params]
    assert decays == [True, True, False]
    opt = SGD(params, lr=0.05, momentum=momentum, nesterov=nesterov, weight_decay=wd)
    ref = RefSGD([p.value for p in params], 0.05, momentum, nesterov, wd, decays)
    _run(opt, ref, params, steps=6)
    assert opt.iteration == 6


@pytest.mark.parametrize("wd", [0.0, 0.05])
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.9)])
def test_adam_matches_hand_written(wd, betas):
    params, _ = _params(1)
    opt = Adam(params, lr=0.01, betas=betas, eps=1e-6, weight_decay=wd)
    ref = RefAdam([p.value for p in params], 0.01, betas[0], betas[1], 1e-6, wd, [p.decay for p in params])
    _run(opt, ref, params, steps=7)


def test_first_adam_step_moves_each_weight_by_lr():
    # bias-corrected first step: m_hat = g, v_hat = g^2 -> step = lr * sign(g) (eps tiny)
    p = Parameter(np.zeros(5, F32), "w")
    p.accumulate(np.array([3.0, -0.2, 1e-3, -50.0, 1.0], F32))
    Adam([p], lr=0.1, eps=1e-12).step()
    np.testing.assert_allclose(p.value, [-0.1, 0.1, -0.1, 0.1, -0.1], rtol=1e-5)


def test_schedule_drives_lr():
    params, _ = _params(2)
    sched = StepDecay(0.1, step_size=2, gamma=0.5)
    lrs = [0.1, 0.1, 0.05, 0.05, 0.025]
    opt = SGD(params, lr=sched, momentum=0.9)
    ref = RefSGD([p.value for p in params], lambda it: lrs[it], 0.9, False, 0.0)
    seen = []
    rng = np.random.default_rng(3)
    for _ in range(5):
        seen.append(opt.lr)
        grads = _grads(params, rng)
        opt.zero_grad()
        for p, g in zip(params, grads):
            p.accumulate(g)
        opt.step()
        ref.step(grads)
    assert seen == pytest.approx(lrs)
    for p, w in zip(params, ref.w):
        np.testing.assert_allclose(p.value, w, rtol=1e-5, atol=1e-6)
    params2, _ = _params(2)
    aopt = Adam(params2, lr=ExponentialDecay(0.01, 0.0001, 4))
    assert aopt.lr == pytest.approx(0.01)


@pytest.mark.parametrize("make", [lambda ps: SGD(ps, lr=0.1, weight_decay=0.5),
                                  lambda ps: SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.5),
                                  lambda ps: Adam(ps, lr=0.1, weight_decay=0.5)], ids=["sgd", "sgd_momentum", "adam"])
def test_weight_decay_not_applied_to_bias(make):
    # zero gradients: only weight decay can move a parameter
    w = Parameter(np.full(3, 2.0, F32), "w")
    b = Parameter(np.full(3, 2.0, F32), "b", decay=False)
    opt = make([w, b])
    for _ in range(3):
        opt.step()
    np.testing.assert_array_equal(b.value, 2.0)
    assert np.all(w.value < 2.0)


def test_zeroed_gradient_is_not_reused():
    p = Parameter(np.ones(4, F32), "w")
    opt = SGD([p], lr=0.5)
    p.accumulate(np.ones(4, F32))
    opt.step()
    np.testing.assert_allclose(p.value, 0.5)
    opt.zero_grad()  # lazy: the array still holds the old gradient
    opt.step()
    np.testing.assert_allclose(p.value, 0.5)
    # accumulation adds until zero_grad
    p.accumulate(np.ones(4, F32))
    p.accumulate(np.ones(4, F32))
    opt.step()
    np.testing.assert_allclose(p.value, 0.5 - 0.5 * 2)


def test_updates_are_in_place_on_csr_data():
    params, sl = _params(4)
    sparse = params[1]
    before = sl.weight.data.copy()
    opt = Adam(params, lr=0.01)
    sparse.accumulate(np.ones_like(sparse.value))
    opt.step()
    assert sl.weight.data is sparse.value
    np.testing.assert_allclose(sl.weight.data, before - 0.01, rtol=1e-4)
    # the layer's forward uses the updated weights
    x = np.ones((1, 1, 20), F32)
    dense = sl.weight.toarray()
    np.testing.assert_allclose(sl.forward(x)[0, 0], dense.sum(axis=1), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------
# remap after rewiring
# --------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda ps: Adam(ps, lr=0.01), lambda ps: SGD(ps, lr=0.01, momentum=0.9)],
                         ids=["adam", "sgd_momentum"])
def test_remap_keeps_kept_zeros_new_drops_pruned(make):
    rng = np.random.default_rng(5)
    p = Parameter(rng.normal(size=6).astype(F32), "w")
    other = Parameter(rng.normal(size=3).astype(F32), "other")
    opt = make([other, p])
    for _ in range(3):
        p.accumulate(rng.normal(size=6).astype(F32))
        other.accumulate(rng.normal(size=3).astype(F32))
        opt.step()
        opt.zero_grad()
    old = {k: v.copy() for k, v in opt.state[1].items()}
    other_state = {k: v.copy() for k, v in opt.state[0].items()}
    assert old and all(np.all(v != 0) for v in old.values())
    # new layout: old connections 4, 0, 5 kept (2 positions grown), 1, 2, 3 pruned
    src = np.array([4, -1, 0, -1, 5])
    p.replace(np.zeros(5, F32))
    opt.remap(p, src)
    for k, v in opt.state[1].items():
        assert v.shape == (5,) and v.dtype == F32
        np.testing.assert_array_equal(v, [old[k][4], 0.0, old[k][0], 0.0, old[k][5]])
    for k, v in opt.state[0].items():  # other parameters untouched
        np.testing.assert_array_equal(v, other_state[k])
    # the optimizer keeps working on the new layout
    p.accumulate(np.ones(5, F32))
    opt.step()
    assert np.all(np.isfinite(p.value)) and np.all(p.value != 0)


def test_remap_then_step_matches_hand_written():
    rng = np.random.default_rng(6)
    p = Parameter(rng.normal(size=5).astype(F32), "w")
    opt = SGD([p], lr=0.1, momentum=0.5)
    g1 = rng.normal(size=5).astype(F32)
    p.accumulate(g1)
    opt.step()
    buf = g1.astype(np.float64)  # after one step from zero
    src = np.array([2, -1, 4])
    new_w = np.array([p.value[2], 0.0, p.value[4]], F32)
    p.replace(new_w.copy())
    opt.remap(p, src)
    g2 = rng.normal(size=3).astype(F32)
    p.accumulate(g2)
    opt.step()
    buf2 = 0.5 * np.array([buf[2], 0.0, buf[4]]) + g2
    np.testing.assert_allclose(p.value, new_w - 0.1 * buf2, rtol=1e-6)


def test_remap_unknown_parameter():
    p = Parameter(np.zeros(3, F32), "w")
    opt = Adam([p])
    with pytest.raises(KeyError):
        opt.remap(Parameter(np.zeros(3, F32), "w"), np.arange(3))


# --------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda ps: Adam(ps, lr=0.01, weight_decay=0.01),
                                  lambda ps: SGD(ps, lr=0.05, momentum=0.9, nesterov=True)], ids=["adam", "sgd_nesterov"])
def test_state_dict_round_trip(make):
    params_a, _ = _params(7)
    opt_a = make(params_a)
    rng = np.random.default_rng(8)
    for _ in range(3):
        for p, g in zip(params_a, _grads(params_a, rng)):
            p.accumulate(g)
        opt_a.step()
        opt_a.zero_grad()
    sd = opt_a.state_dict()
    assert sd["iteration"] == 3

    params_b = [Parameter(p.value.copy(), p.name, p.decay) for p in params_a]
    opt_b = make(params_b)
    opt_b.load_state_dict(sd)
    assert opt_b.iteration == 3
    grads = _grads(params_a, rng)
    for pa, pb, g in zip(params_a, params_b, grads):
        pa.accumulate(g)
        pb.accumulate(g)
    opt_a.step()
    opt_b.step()
    for pa, pb in zip(params_a, params_b):
        np.testing.assert_array_equal(pa.value, pb.value)
    for sa, sb in zip(opt_a.state, opt_b.state):
        assert sa.keys() == sb.keys()
        for k in sa:
            np.testing.assert_array_equal(sa[k], sb[k])


@pytest.mark.parametrize("make", [lambda ps: Adam(ps, lr=0.01), lambda ps: SGD(ps, lr=0.05, momentum=0.9)],
                         ids=["adam", "sgd_momentum"])
def test_load_state_dict_does_not_alias_checkpoint(make):
    # The same checkpoint loaded into two optimizers must give two independent
    # optimizers (and leave the checkpoint itself unchanged when they step).
    rng = np.random.default_rng(10)
    p0 = Parameter(rng.normal(size=8).astype(F32), "w")
    opt0 = make([p0])
    p0.accumulate(rng.normal(size=8).astype(F32))
    opt0.step()
    sd = opt0.state_dict()
    snapshot = [{k: v.copy() for k, v in st.items()} for st in sd["state"]]
    opt0.step()  # state_dict() copies, so this must not touch sd
    for st, snap in zip(sd["state"], snapshot):
        for k in snap:
            np.testing.assert_array_equal(st[k], snap[k])

    pb = Parameter(p0.value.copy(), "w")
    pc = Parameter(p0.value.copy(), "w")
    opt_b, opt_c = make([pb]), make([pc])
    opt_b.load_state_dict(sd)
    opt_c.load_state_dict(sd)
    g = rng.normal(size=8).astype(F32)
    pb.accumulate(g)
    pc.accumulate(g)
    opt_b.step()
    for st, snap in zip(sd["state"], snapshot):
        for k in snap:
            np.testing.assert_array_equal(st[k], snap[k],
                                          err_msg=f"stepping a loaded optimizer changed checkpoint {k!r}")
    opt_c.step()
    np.testing.assert_array_equal(pb.value, pc.value)


def test_load_state_dict_errors():
    params, _ = _params(9)
    opt = Adam(params)
    sd = opt.state_dict()
    bad = {"iteration": 0, "state": [dict(st) for st in sd["state"]]}
    bad["state"][1] = {k: np.zeros(len(v) + 1, F32) for k, v in sd["state"][1].items()}
    with pytest.raises(ValueError, match=r"sparse\.weight.*shape"):
        opt.load_state_dict(bad)
    with pytest.raises(ValueError, match="2"):
        opt.load_state_dict({"iteration": 0, "state": sd["state"][:2]})


def test_load_state_dict_missing_state_rejected():
    # Loading a checkpoint that lacks a state array (e.g. saved by SGD without
    # momentum) into SGD with momentum must fail loudly, not silently run a
    # corrupted update.
    p = Parameter(np.ones(4, F32), "w")
    opt = SGD([p], lr=0.1, momentum=0.9)
    with pytest.raises((ValueError, KeyError)):
        opt.load_state_dict({"iteration": 0, "state": [{}]})


# --------------------------------------------------------------------------
# schedules
# --------------------------------------------------------------------------
def test_exponential_decay():
    n = 1000
    s = ExponentialDecay(0.01, 0.0001, n)
    assert s(0) == pytest.approx(0.01, rel=1e-12)
    assert s(n // 2) == pytest.approx(0.001, rel=1e-12)
    assert s(n // 4) == pytest.approx(0.01 * 10 ** -0.5, rel=1e-12)
    assert s(n) == pytest.approx(0.0001, rel=1e-12)
    assert s(n + 1) == pytest.approx(0.0001, rel=1e-12)
    assert s(10 * n) == pytest.approx(0.0001, rel=1e-12)
    vals = [s(i) for i in range(0, n + 1, 50)]
    assert all(a > b for a, b in zip(vals, vals[1:]))


def test_cosine_decay():
    s = CosineDecay(0.1, 0.01, 100)
    assert s(0) == pytest.approx(0.1)
    assert s(50) == pytest.approx(0.055)
    assert s(25) == pytest.approx(0.01 + 0.09 * (1 + math.sqrt(0.5)) / 2)
    assert s(100) == pytest.approx(0.01)
    assert s(1000) == pytest.approx(0.01)
    s0 = CosineDecay(0.2, 0.0, 10)
    assert s0(10) == pytest.approx(0.0, abs=1e-15) and s0(5) == pytest.approx(0.1)


def test_step_decay():
    s = StepDecay(0.1, 3, gamma=0.5)
    assert [s(i) for i in range(8)] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025])
    assert StepDecay(0.1, 2)(4) == pytest.approx(0.001)  # default gamma 0.1


def test_constant():
    s = Constant(0.3)
    assert s(0) == s(10 ** 6) == 0.3
    opt = SGD([Parameter(np.zeros(2, F32), "w")], lr=0.3)
    assert opt.lr == 0.3


def test_make_schedule():
    assert isinstance(make_schedule("constant", 0.1), Constant)
    e = make_schedule("exponential", 0.01, lr_end=0.0001, n_iters=10)
    assert isinstance(e, ExponentialDecay) and e(5) == pytest.approx(0.001)
    c = make_schedule("cosine", 0.1, n_iters=10)
    assert isinstance(c, CosineDecay) and c(10) == pytest.approx(0.0, abs=1e-15) and c(5) == pytest.approx(0.05)
    c2 = make_schedule("cosine", 0.1, lr_end=0.02, n_iters=10)
    assert c2(10) == pytest.approx(0.02)
    st = make_schedule("step", 0.1, step_size=5, gamma=0.5)
    assert isinstance(st, StepDecay) and st(5) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="schedule.*'linear'"):
        make_schedule("linear", 0.1)
    with pytest.raises(ValueError, match="lr_end"):
        make_schedule("exponential", 0.1, n_iters=10)
    with pytest.raises(ValueError, match="n_iters"):
        make_schedule("exponential", 0.1, lr_end=0.01)
    with pytest.raises(ValueError, match="step_size"):
        make_schedule("step", 0.1)


@pytest.mark.parametrize("build, match", [
    (lambda: ExponentialDecay(0.0, 0.001, 10), "lr0"),
    (lambda: ExponentialDecay(0.01, 0.0, 10), "lr_end"),
    (lambda: ExponentialDecay(0.01, 0.001, 0), "n_iters"),
    (lambda: ExponentialDecay(0.01, 0.001, 10.5), "n_iters"),
    (lambda: CosineDecay(-0.1, 0.0, 10), "lr0"),
    (lambda: CosineDecay(0.1, -0.01, 10), "lr_end"),
    (lambda: StepDecay(0.1, 0), "step_size"),
    (lambda: StepDecay(0.1, 2, gamma=0.0), "gamma"),
    (lambda: StepDecay(0.1, 2, gamma=1.5), "gamma"),
    (lambda: Constant(math.nan), "lr"),
])
def test_schedule_validation(build, match):
    with pytest.raises(ValueError, match=match):
        build()


# --------------------------------------------------------------------------
# optimizer argument validation
# --------------------------------------------------------------------------
def _p():
    return [Parameter(np.zeros(3, F32), "w")]


@pytest.mark.parametrize("build, match", [
    (lambda: SGD(_p(), lr=0.0), "lr"),
    (lambda: SGD(_p(), lr=-0.1), "lr"),
    (lambda: SGD(_p(), lr=math.inf), "lr"),
    (lambda: SGD(_p(), lr=math.nan), "lr"),
    (lambda: Adam(_p(), lr=0.0), "lr"),
    (lambda: SGD(_p(), lr=0.1, momentum=1.0), "momentum"),
    (lambda: SGD(_p(), lr=0.1, momentum=-0.1), "momentum"),
    (lambda: SGD(_p(), lr=0.1, nesterov=True), "nesterov"),
    (lambda: SGD(_p(), lr=0.1, weight_decay=-1e-4), "weight_decay"),
    (lambda: SGD(_p(), lr=0.1, weight_decay=math.nan), "weight_decay"),
    (lambda: Adam(_p(), betas=(1.0, 0.999)), "betas"),
    (lambda: Adam(_p(), betas=(0.9, 1.0)), "betas"),
    (lambda: Adam(_p(), betas=(-0.1, 0.999)), "betas"),
    (lambda: Adam(_p(), eps=0.0), "eps"),
    (lambda: Adam(_p(), weight_decay=-1.0), "weight_decay"),
])
def test_optimizer_validation(build, match):
    with pytest.raises(ValueError, match=match):
        build()
