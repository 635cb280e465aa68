"""Shared helpers for the benchmark scripts (not part of the package).

Import this module *before* numpy when a script is a measuring process:
:func:`limit_blas_threads` must run before the BLAS library is loaded.
"""
from __future__ import annotations

import gzip
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: the workshop folder next to the repository (override with SNN_BENCH_SHARED, e.g. from a git worktree)
SHARED = os.environ.get("SNN_BENCH_SHARED") or os.path.join(os.path.dirname(REPO), "shared")
MNIST_DIR = os.path.join(SHARED, "data", "mnist")
PEER_SCRIPT = os.path.join(SHARED, "bench", "peer_snntorch.py")

#: BLAS threads of a measuring process: 1 (BLAS and Numba threads fight on 2 cores), or SNN_BENCH_BLAS_THREADS
#: (to check that the dense path is not held back by it)
BLAS_THREADS = os.environ.get("SNN_BENCH_BLAS_THREADS", "1")
BLAS_ENV = {k: BLAS_THREADS for k in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                                      "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")}


def limit_blas_threads():
    """``BLAS_THREADS`` BLAS threads, one by default (BLAS and Numba threads fight on 2 cores; see numba-notes).

    Sets the environment (effective only before numpy is imported) and, if
    threadpoolctl is importable, also limits an already loaded BLAS.
    """
    for k, v in BLAS_ENV.items():
        os.environ[k] = v
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(int(BLAS_THREADS), user_api="blas")


def peak_rss_mib():
    """Peak resident memory of this process in MiB.

    ``VmHWM`` of /proc/self/status (the high-water mark of this process's
    own address space). ``ru_maxrss`` is not used when VmHWM exists: Linux
    carries the parent's RSS at fork/exec into the child's ru_maxrss.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_mnist(n=400, data_dir=None):
    """The first ``n`` MNIST training images as float32 (n, 784) in [0, 1] and int64 labels.

    Reads the gzip IDX files directly (magic, dims, then raw uint8).
    """
    import numpy as np

    d = data_dir or MNIST_DIR
    with gzip.open(os.path.join(d, "train-images-idx3-ubyte.gz")) as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16)[: n * 784]
    with gzip.open(os.path.join(d, "train-labels-idx1-ubyte.gz")) as f:
        lab = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    return raw.reshape(n, 784).astype(np.float32) / np.float32(255.0), lab.astype(np.int64)


def machine():
    """CPU model, core count and numba threading facts for the report."""
    info = {"python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            if k.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket", "L2 cache",
                             "L3 cache", "Hypervisor vendor"):
                info[k.strip()] = v.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def emit(obj, stream=None):
    """One JSON object per line (flushed)."""
    print(json.dumps(obj), file=stream or sys.stdout, flush=True)


def timed(fn, n):
    """Wall time of ``n`` calls of fn (seconds)."""
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------
# The streaming scatter-add ceiling: how many synaptic events per second a
# core can apply at best (one float add at a random column of an L1-resident
# row, index and weight streamed from memory) - the unit of work of an
# event-driven synapse. A spike-driven kernel cannot beat this rate per event.
# --------------------------------------------------------------------------
def scatter_ceiling(n_events=1 << 18, rounds=16, width=800, reps=9):
    """Events/s of the scatter-add loop, 1 thread and all threads (median of reps).

    Each call applies ``rounds`` passes over a stream of ``n_events``
    (index, weight) pairs (2 MiB, L3-resident like the active-column lists
    of a spike kernel) to an 800-float row per thread.
    """
    import numba
    import numpy as np

    import snn_core.kernels.cpu  # noqa: F401  (selects the engine's threading layer first)

    ser, par = _scatter_kernels()
    rng = np.random.default_rng(0)
    idx = rng.integers(0, width, n_events).astype(np.int32)
    w = rng.random(n_events).astype(np.float32)
    nt = numba.get_num_threads()
    Y = np.zeros((nt, width), np.float32)
    ser(idx, w, Y[0], rounds)
    par(idx, w, Y, rounds)
    t1, tn = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        ser(idx, w, Y[0], rounds)
        t1.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        par(idx, w, Y, rounds)
        tn.append(time.perf_counter() - t0)
    total = n_events * rounds
    return {"events_per_s_1thread": total / statistics.median(t1),
            "events_per_s_all_threads": total / statistics.median(tn), "threads": nt}


_KERNELS = None


def _scatter_kernels():
    global _KERNELS
    if _KERNELS is None:
        import numba

        @numba.njit(nogil=True, cache=False)
        def ser(idx, w, y, rounds):
            for _ in range(rounds):
                for i in range(idx.shape[0]):
                    y[idx[i]] += w[i]

        @numba.njit(nogil=True, parallel=True, cache=False)
        def par(idx, w, Y, rounds):
            nt = Y.shape[0]
            n = idx.shape[0]
            for t in numba.prange(nt):  # each thread: its own row, its share of the stream
                y = Y[t]
                for _ in range(rounds):
                    for i in range(t * n // nt, (t + 1) * n // nt):
                        y[idx[i]] += w[i]

        _KERNELS = (ser, par)
    return _KERNELS
