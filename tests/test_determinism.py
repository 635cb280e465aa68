"""Same seed, same bits: whether the Numba kernels were just compiled or loaded from the cache.

The process that compiles the kernels used to differ from cache-loaded
processes in the last bits of the spike-driven weight gradient (fastmath
reductions, optimised differently in two compiled copies of the same
function; root cause in the docstring of :mod:`snn_core.kernels.cpu`). Here a
tiny training run (spike-driven path, rewiring, Adam) runs twice in fresh
subprocesses sharing one initially empty ``NUMBA_CACHE_DIR``: the first
compiles every kernel, the second loads them all; every parameter must agree
bit for bit.
"""
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import hashlib, numpy as np
from snn_core.config import TrainConfig
from snn_core.training import Trainer
cfg = TrainConfig(hidden=[64], max_train=300, epochs=2, batch_size=50, t_iter=3, quiet=True, threads=1, out_dir="unused")
t = Trainer(cfg)
t.fit(checkpoint_dir=False)
h = hashlib.sha256()
for p in t.network.parameters():
    h.update(p.name.encode()); h.update(p.value.tobytes())
assert t.network.layers[0]._cache[1] is not None, "fc1 did not take the spike-driven path"
print("DIGEST", h.hexdigest())
"""


def _run(cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), PYTHONPATH=str(ROOT), NUMBA_NUM_THREADS="1")
    env.pop("NUMBA_DISABLE_JIT", None)
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    return [line.split()[1] for line in r.stdout.splitlines() if line.startswith("DIGEST")][0]


def test_cold_and_warm_kernel_cache_give_identical_weights(tmp_path):
    cache = tmp_path / "numba-cache"
    cache.mkdir()
    cold = _run(cache)
    assert any(cache.rglob("*.nbi")), "the first run should have filled the kernel cache"
    n_files = len(list(cache.rglob("*.nbc")))
    warm = _run(cache)
    assert len(list(cache.rglob("*.nbc"))) == n_files, "the second run should only load cached kernels"
    assert cold == warm


@pytest.mark.parametrize("model", ["mlp", "convnet"])
def test_serial_and_parallel_kernels_train_to_identical_weights(model, monkeypatch):
    """Which version of a kernel runs (chosen by cpu.PARALLEL_MIN_NS) never changes a bit of the result.

    So the threshold (and ``SNN_CORE_PARALLEL_MIN_NS``, which sets it) is a
    speed setting only: a short training run (spike-driven paths, rewiring,
    Adam; for the conv net also batch norm, pooling and the event-driven
    convolution) with every kernel forced serial and then forced parallel
    must give the same weights.
    """
    from snn_core.config import TrainConfig
    from snn_core.kernels import cpu
    from snn_core.training import Trainer

    kw = dict(model=model, max_train=160, epochs=1, batch_size=40, t_iter=2, quiet=True, out_dir="unused")
    if model == "mlp":
        kw.update(hidden=[48])
    else:
        kw.update(channels=[4, 8], fc_hidden=[16], init="erk", encoder="direct", steps=2)
    digests = []
    for threshold in (math.inf, 0.0):
        monkeypatch.setattr(cpu, "PARALLEL_MIN_NS", threshold)
        t = Trainer(TrainConfig(**kw))
        t.fit(checkpoint_dir=False)
        digests.append([(p.name, p.value.tobytes()) for p in t.network.parameters()])
    assert digests[0] == digests[1]


def test_the_parallel_threshold_comes_from_the_environment_or_a_clear_error(monkeypatch):
    from snn_core.kernels import cpu

    monkeypatch.delenv("SNN_X_NS", raising=False)
    assert cpu._env_ns("SNN_X_NS", 3e6) == 3e6
    monkeypatch.setenv("SNN_X_NS", "2.5e5")
    assert cpu._env_ns("SNN_X_NS", 3e6) == 2.5e5
    for bad in ("fast", "-1", "nan"):
        monkeypatch.setenv("SNN_X_NS", bad)
        with pytest.raises(ValueError, match=f"SNN_X_NS: expected a number of nanoseconds >= 0, got '{bad}'"):
            cpu._env_ns("SNN_X_NS", 3e6)


def _adam_in_child(queue):
    """Runs in a forked child: which version would a large kernel take, and Adam's result."""
    import numpy as np

    from snn_core.kernels import cpu

    w, g, m, v = (np.linspace(-1, 1, 5000, dtype=np.float32) + k for k in range(4))
    cpu.adam_update(w, g, m, v, *(np.float32(x) for x in (1e-3, 0.9, 0.999, 1e-8, 0.5, 0.5, 0.0)))
    queue.put((cpu._parallel(1e12), w.tobytes()))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_child_forked_after_parallel_kernels_runs_them_serially(monkeypatch):
    """GNU OpenMP is not fork-safe: Numba terminates a forked child that starts a parallel region
    in a process whose OpenMP pool ran. So the parent runs a parallel kernel, then a forked child
    (multiprocessing's default on Linux before Python 3.14) must take the serial versions even with
    the threshold at 0, survive, and compute the same bits."""
    import multiprocessing

    import numpy as np

    from snn_core.kernels import cpu

    monkeypatch.setattr(cpu, "PARALLEL_MIN_NS", 0.0)
    assert cpu._parallel(1.0), "the parent should run the parallel version"
    w, g, m, v = (np.linspace(-1, 1, 5000, dtype=np.float32) + k for k in range(4))
    cpu.adam_update(w, g, m, v, *(np.float32(x) for x in (1e-3, 0.9, 0.999, 1e-8, 0.5, 0.5, 0.0)))
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_adam_in_child, args=(queue,))
    child.start()
    child.join(120)
    assert child.exitcode == 0, f"the forked child died (exit code {child.exitcode})"
    took_parallel, w_child = queue.get(timeout=10)
    assert took_parallel is False
    assert w_child == w.tobytes()


@pytest.mark.parametrize("env, layer, threshold", [
    ({"NUMBA_THREADING_LAYER": "workqueue"}, "workqueue", 3e6),
    ({"SNN_CORE_PARALLEL_MIN_NS": "1234"}, None, 1234.0),
    ({}, None, None),  # the default: the entry of the layer that loaded (OpenMP where Numba finds it)
])
def test_the_threshold_follows_the_threading_layer_unless_set(env, layer, threshold):
    """The serial/parallel threshold is resolved on first use from the layer Numba loaded (the
    work-queue layer's slow start keeps its 3 ms), or taken from SNN_CORE_PARALLEL_MIN_NS; the
    OpenMP waiting policy is passive unless the user chose one."""
    from snn_core.kernels import cpu

    code = ("import os; from snn_core.kernels import cpu; "
            "print(cpu.PARALLEL_MIN_NS, cpu.parallel_min_ns(), cpu.threading_layer(), os.environ['OMP_WAIT_POLICY'])")
    base = {k: v for k, v in os.environ.items()
            if k not in ("NUMBA_THREADING_LAYER", "SNN_CORE_PARALLEL_MIN_NS", "OMP_WAIT_POLICY")}
    for policy in (None, "active"):
        run_env = dict(base, PYTHONPATH=str(ROOT), **env)
        if policy:
            run_env["OMP_WAIT_POLICY"] = policy
        r = subprocess.run([sys.executable, "-c", code], env=run_env, cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        before, resolved, used, wait = r.stdout.split()
        assert before == ("None" if "SNN_CORE_PARALLEL_MIN_NS" not in env else str(threshold))
        assert float(resolved) == (threshold or cpu.LAYER_MIN_NS[used])
        if layer:
            assert used == layer
        assert wait == (policy or "passive")


def test_the_threshold_without_the_jit():
    """NUMBA_DISABLE_JIT=1 (debugging the kernels in Python) starts no threads: no layer, the slow one's threshold."""
    code = "from snn_core.kernels import cpu; print(cpu.parallel_min_ns(), cpu.threading_layer())"
    env = {k: v for k, v in os.environ.items() if k not in ("SNN_CORE_PARALLEL_MIN_NS", "NUMBA_THREADING_LAYER")}
    env.update(NUMBA_DISABLE_JIT="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["3000000.0", "None"]
