"""What a parallel region costs to start, per Numba threading layer, and what two processes do to each other.

Two measurements behind the engine's threading choice (docs/benchmarks.md,
"Both cores: the OpenMP layer with passive waiting"):

1. ``start``: a trivial two-iteration ``prange`` kernel called ``--calls``
   times, each call after ``GAP`` microseconds of busy serial work (the
   serial kernels between two parallel ones in a training step); median and
   90th percentile per call, in a fresh process per layer/waiting policy.
2. ``--contention``: ``bench_train.py --profile`` (ms per training
   iteration) run alone and then as two processes at once, per setting.

Usage::

    PYTHONPATH=. python benchmarks/bench_threads.py [--gaps 0 200 2000] [--contention]

Settings are environment variables of the measured processes, so they act
before Numba or libgomp read them.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import REPO, emit, machine  # noqa: E402

#: name -> environment of one measured setting
START_SETTINGS = {
    "workqueue": {"NUMBA_THREADING_LAYER": "workqueue"},
    "omp, spinning wait": {"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "active"},
    "omp, passive wait (the engine's default)": {"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "passive"},
}
CONTENTION_SETTINGS = {
    "workqueue, 3 ms": {"NUMBA_THREADING_LAYER": "workqueue"},
    "omp spinning, 50 us": {"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "active"},
    "omp passive, 50 us (default)": {"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "passive"},
}

START_CODE = r"""
import json, sys, time
import numpy as np
import numba
from numba import njit, prange

@njit(parallel=True)
def region(a):
    for i in prange(a.shape[0]):
        a[i] += 1.0

gap, calls = float(sys.argv[1]) * 1e-6, int(sys.argv[2])
a = np.zeros(2)
region(a)
ts = np.empty(calls)
for k in range(calls):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < gap:  # serial work between two regions
        pass
    t1 = time.perf_counter()
    region(a)
    ts[k] = time.perf_counter() - t1
print(json.dumps({"layer": numba.threading_layer(), "median_us": float(np.median(ts) * 1e6),
                  "p90_us": float(np.percentile(ts, 90) * 1e6)}))
"""


def _env(extra):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY")}
    env.update(extra, PYTHONPATH=REPO)
    return env


def start_costs(gaps, calls):
    for name, extra in START_SETTINGS.items():
        for gap in gaps:
            r = subprocess.run([sys.executable, "-c", START_CODE, str(gap), str(calls)], env=_env(extra),
                               capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                emit({"setting": name, "gap_us": gap, "error": r.stderr.strip().splitlines()[-1:]})
                continue
            emit(dict(json.loads(r.stdout), setting=name, gap_us=gap))


def _profile_cmd(iters):
    return [sys.executable, os.path.join(HERE, "bench_train.py"), "--profile", "--densities", "0.1", "0.01",
            "--iters", str(iters)]


def _totals(stdout):
    """ms per iteration at each density, from bench_train.py's JSON profile line."""
    prof = [json.loads(ln)["profile"] for ln in stdout.splitlines() if ln.startswith('{"profile"')][-1]
    return [round(prof[d]["TOTAL"], 3) for d in ("0.1", "0.01")]


def contention(iters):
    for name, extra in CONTENTION_SETTINGS.items():
        alone = subprocess.run(_profile_cmd(iters), env=_env(extra), capture_output=True, text=True, timeout=900)
        pair = [subprocess.Popen(_profile_cmd(iters), env=_env(extra), stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=900)[0] for p in pair]
        emit({"setting": name, "alone_ms_per_iter": _totals(alone.stdout),
              "two_processes_ms_per_iter": [_totals(o) for o in outs], "densities": [0.1, 0.01]})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gaps", type=float, nargs="+", default=[0.0, 200.0, 2000.0],
                    help="microseconds of serial work before each region")
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--contention", action="store_true", help="also the two-process bench_train --profile runs")
    ap.add_argument("--iters", type=int, default=100, help="iterations of each --contention profile")
    a = ap.parse_args(argv)
    emit({"machine": machine()})
    start_costs(a.gaps, a.calls)
    if a.contention:
        contention(a.iters)


if __name__ == "__main__":
    main()
