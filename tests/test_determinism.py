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
