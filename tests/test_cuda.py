"""The CUDA kernels: parity with the CPU kernels, PTX compilation for a real
GPU, and the clear error without a GPU. (Training, rewiring and checkpoints
on the ``cuda`` backend run in tests/test_backends.py, the same tests as for
the other backends.)

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
from snn_core.neurons import NeuronKernelParams  # noqa: E402

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
    prm = NeuronKernelParams(alpha=F32(0.6), k0=F32(0.02), c=F32(1.1), v_th=F32(1.0), v_reset=F32(0.1), reset=reset,
                             detach=int(detach), surrogate=sur, surrogate_p=F32(0.8), smooth=smooth)
    u, s, vl = np.empty_like(I), np.empty_like(I), np.empty((F_, B), F32)
    cpu.lif_forward(I, v0, prm, u, s, vl)
    du, ds, dvl = cuda.device_array_like(u), cuda.device_array_like(s), cuda.device_array_like(vl)
    K.lif_forward(cuda.to_device(I), cuda.to_device(v0), prm, du, ds, dvl)
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
    cpu.lif_backward(gs, u, s, prm, gI)
    dgI = cuda.device_array_like(gI)
    K.lif_backward(cuda.to_device(gs), cuda.to_device(u), cuda.to_device(s), prm, dgI)
    _close(dgI.copy_to_host(), gI, "lif gI")


@needs_device
def test_readout_parity(dev):
    from snn_core.kernels import cpu

    cuda, K = dev
    rng = np.random.default_rng(1)
    I = rng.normal(size=(3, 4, 2)).astype(F32)
    v0 = rng.normal(size=(3, 2)).astype(F32)
    u = np.empty_like(I)
    prm = NeuronKernelParams(alpha=F32(0.7), k0=F32(0.05), c=F32(0.9), v_th=F32(1), v_reset=F32(0), reset=0, detach=0,
                             surrogate=0, surrogate_p=F32(1), smooth=0)
    cpu.readout_forward(I, v0, prm, u)
    du = cuda.device_array_like(u)
    K.readout_forward(cuda.to_device(I), cuda.to_device(v0), prm, du)
    assert np.array_equal(du.copy_to_host(), u)
    gu = rng.normal(size=I.shape).astype(F32)
    gI = np.empty_like(gu)
    cpu.readout_backward(gu, prm, gI)
    dgI = cuda.device_array_like(gI)
    K.readout_backward(cuda.to_device(gu), prm, dgI)
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
def test_dense_and_gain_kernels_parity(dev):
    from snn_core.backends import get_backend

    cuda, K = dev
    host = get_backend("cpu")  # the readable NumPy versions live in the base class
    rng = np.random.default_rng(5)
    W, X, G = (rng.normal(size=s).astype(F32) for s in ((4, 5), (5, 6), (4, 6)))
    bias, g = rng.normal(size=4).astype(F32), rng.normal(size=5).astype(F32)
    Y, dY = np.empty((4, 6), F32), cuda.device_array((4, 6), F32)
    host.dense_forward(W, bias, X, Y)
    K.dense_forward(cuda.to_device(W), cuda.to_device(bias), cuda.to_device(X), dY)
    _close(dY.copy_to_host(), Y, "dense_forward")
    gw, dgw = np.ones((4, 5), F32), cuda.to_device(np.ones((4, 5), F32))
    host.dense_grad(G, X, gw, True)
    K.dense_grad(cuda.to_device(G), cuda.to_device(X), dgw, True)
    _close(dgw.copy_to_host(), gw, "dense_grad accumulate")
    GX, dGX = np.empty((5, 6), F32), cuda.device_array((5, 6), F32)
    host.dense_backward_input(W, G, GX)
    K.dense_backward_input(cuda.to_device(W), cuda.to_device(G), dGX)
    _close(dGX.copy_to_host(), GX, "dense_backward_input")
    S, dS = np.empty((5, 6), F32), cuda.device_array((5, 6), F32)
    host.scale_rows(g, X, S)
    K.scale_rows(cuda.to_device(g), cuda.to_device(X), dS)
    _close(dS.copy_to_host(), S, "scale_rows")
    r, dr = np.empty(5, F32), cuda.device_array(5, F32)
    host.row_dot(GX, X, r, False)
    K.row_dot(cuda.to_device(GX), cuda.to_device(X), dr, False)
    _close(dr.copy_to_host(), r, "row_dot")



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

f32, f64, i64, b1 = nt.float32, nt.float64, nt.int64, nt.boolean
A = lambda t, nd: nt.Array(t, nd, "C")
A3, A2, A1, I1, D1 = A(f32, 3), A(f32, 2), A(f32, 1), A(nt.int32, 1), A(f64, 1)
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
    ("_dense_forward_k", (A2, A1, i64, A2, A2)),
    ("_dense_grad_k", (A2, A2, A2, i64)),
    ("_dense_backward_input_k", (A2, A2, A2)),
    ("_scale_rows_k", (A1, A2, A2)),
    ("_row_dot_k", (A2, A2, A1, i64)),
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
        import snn_core, snn_core.backends.cuda, snn_core.kernels.cuda
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
