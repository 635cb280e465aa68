"""From what size a parallel kernel pays on this machine: measured once, stored, reused.

Every dispatching kernel of :mod:`snn_core.kernels.cpu` has a serial and a
``prange`` build of the same row function. The two give the same bits
(``tests/test_determinism.py`` trains with each and compares every weight),
so which one runs changes the speed only, never a result. Where the
parallel build starts to pay is a property of the machine, not of the
code: the cost of waking the worker threads, and whether the other cores are
there when the region starts. On the 2-vCPU Zen 4 guest where the engine was
first tuned, regions of ~1 ms did not get the second core, so the fixed
threshold was 3 ms of estimated serial work; on a 2-vCPU Emerald Rapids
guest, kernels of 0.4 ms ran twice as fast in parallel, so that threshold
left half the machine idle in every kernel of the MNIST network.

:func:`parallel_threshold_ns` measures it: one of the engine's own kernels
(passed in by the caller) at sizes from ~50 us to ~3 ms of estimated work,
serial and parallel interleaved, the minimum of several calls each. The
threshold is the smallest size from which the parallel build is at least
:data:`MIN_SPEEDUP` times faster at that size and at every larger one, in the
units of the callers' work estimates; :data:`DEFAULT_NS` when it never is
(one thread, or a second core that does not show up). The result is stored in
``$XDG_CACHE_HOME/snn_core/parallel.json`` (``~/.cache`` by default) under a
key made of the CPU model, the thread count and the Numba version, so each
machine measures once (about 0.2 s). Only a threshold below the default is
stored: "parallel never paid" may just mean that other processes held the
cores during the measurement, so that machine measures again in its next
process (and keeps the conservative default meanwhile). A stored value can
be wrong the other way only if the machine later gets busier; delete the
file to measure again. ``SNN_CORE_PARALLEL_MIN_NS`` in the environment skips
all of this and fixes the threshold.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numba

#: the threshold when parallel never pays (and the value before calibration existed)
DEFAULT_NS = 3_000_000.0
#: the parallel build must beat the serial one by this factor to count as paying
MIN_SPEEDUP = 1.25
#: how often each size is timed per build (the minimum is kept)
REPEATS = 7
#: bump when the procedure changes, so that stored results are measured again
VERSION = 1
ENV = "SNN_CORE_PARALLEL_MIN_NS"


def cache_file() -> Path:
    """``$XDG_CACHE_HOME/snn_core/parallel.json``, or ``~/.cache/snn_core/parallel.json``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "snn_core" / "parallel.json"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_key(threads: int) -> str:
    return f"v{VERSION} | {cpu_model()} | {threads} threads | numba {numba.__version__}"


def measure(serial, parallel, make_args, sizes):
    """Per size: (estimated ns, best serial s, best parallel s); ``make_args(size) -> (args, estimated ns)``.

    The builds alternate call by call, so a slow minute hits both alike.
    """
    rows = []
    for size in sizes:
        args, est = make_args(size)
        serial(*args)
        parallel(*args)  # compiled / loaded and the threads started before timing
        best = [float("inf"), float("inf")]
        for _ in range(REPEATS):
            for i, fn in enumerate((serial, parallel)):
                t0 = time.perf_counter()
                fn(*args)
                best[i] = min(best[i], time.perf_counter() - t0)
        rows.append((float(est), best[0], best[1]))
    return rows


def threshold_from(rows):
    """The smallest estimated ns from which every measured size ran >= MIN_SPEEDUP faster in parallel."""
    threshold = DEFAULT_NS
    for est, t_ser, t_par in sorted(rows, reverse=True):
        if t_ser < MIN_SPEEDUP * t_par:
            break
        threshold = min(threshold, est)
    return threshold


def _load(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _store(path, key, value):
    """Add one entry to the JSON file atomically; a read-only cache folder only costs a measurement per process."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _load(path)
        data[key] = value
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass


def parallel_threshold_ns(serial, parallel, make_args, sizes, threads=None, path=None):
    """Estimated serial ns from which the parallel build of a kernel runs (see the module docstring).

    ``serial`` / ``parallel``: the two builds of one kernel; ``make_args(size)``
    returns its arguments for a problem of that size and the callers' work
    estimate of it (ns); ``sizes`` should span ~50 us to ~3 ms of estimated
    work. Reads ``SNN_CORE_PARALLEL_MIN_NS`` first, then the stored result
    for this machine and thread count; otherwise measures and stores it.
    """
    fixed = os.environ.get(ENV)
    if fixed:
        try:
            return float(fixed)
        except ValueError:
            raise ValueError(f"{ENV}: expected a number of nanoseconds, got {fixed!r}") from None
    threads = numba.get_num_threads() if threads is None else int(threads)
    if threads < 2:
        return float("inf")  # a parallel region on one thread only adds its launch
    path = cache_file() if path is None else Path(path)
    key = machine_key(threads)
    stored = _load(path).get(key)
    if isinstance(stored, dict) and isinstance(stored.get("threshold_ns"), (int, float)):
        return float(stored["threshold_ns"])
    rows = measure(serial, parallel, make_args, sizes)
    value = threshold_from(rows)
    if value < DEFAULT_NS:  # "never pays" may only mean the machine was busy: measured again next process
        _store(path, key, {"threshold_ns": value, "measured": [[e, s, p] for e, s, p in rows],
                           "when": time.strftime("%Y-%m-%d %H:%M:%S")})
    return value
