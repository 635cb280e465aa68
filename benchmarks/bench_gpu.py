"""Training throughput of the backends (``--device cuda``, ``cpu`` or ``reference``).

Protocol: ``shared/bench/PROTOCOL.md`` — MNIST 784-800-10, the first 400
training images cycled in batches (for batch 1000 the 400 images are cycled
with wrap-around), Bernoulli rate coding redrawn at every one of T = 8 steps
(encoded on the host and uploaded by the first layer), LIF
hidden and output layers (``LIFParams.from_decay(0.9, reset="soft")``: beta
0.9, threshold 1, soft reset), bias on, Adam lr 1e-3, both weight matrices
at density d. Loss ``ce_count`` on the LIF output (as ``bench_train.py``;
same cost as the protocol's combined loss). Measured: training samples/s
over ``--iters`` iterations after ``--warmup`` (encode + upload + forward +
host loss + BPTT + Adam, synchronised before the clock stops; no
rewiring), then separately the wall time of one rewiring event (the same
``Rewirer``; on a device a host round trip, zeta = 0.3), the process's peak
RSS and the device memory in use.

Defaults: batch 100 and 1000, densities 1.0 / 0.1 / 0.01, one process per
configuration. ``--device cpu`` runs the same protocol on the host engine
(the same script, so CPU and GPU figures come from one harness).

Usage::

    PYTHONPATH=. python benchmarks/bench_gpu.py --device cuda
    PYTHONPATH=. python benchmarks/bench_gpu.py --device cuda --batches 100 --densities 0.1 --iters 100
    PYTHONPATH=. python benchmarks/bench_gpu.py --device cpu --batches 100
    NUMBA_ENABLE_CUDASIM=1 PYTHONPATH=. python benchmarks/bench_gpu.py --smoke   # checks the script only

Prints one JSON object per line. Exits with status 2 and a one-line message
when ``--device cuda`` is asked for on a machine without a usable GPU, or
under the CUDA simulator (whose timings mean nothing) unless ``--smoke``.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import BLAS_ENV, REPO, emit, limit_blas_threads, load_mnist, machine, peak_rss_mib  # noqa: E402

limit_blas_threads()

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

DENSITIES = (1.0, 0.1, 0.01)
BATCHES = (100, 1000)
SIZES = (784, 800, 10)
SMOKE_SIZES = (12, 8, 3)


def _fail(msg):
    print(f"bench_gpu: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def _check_device(a):
    if a.device != "cuda":
        return None
    from snn_core.backend import require_cuda, using_simulator

    try:
        detail = require_cuda()
    except RuntimeError as e:
        _fail(str(e))
    if using_simulator() and not a.smoke:
        _fail("the CUDA simulator is enabled (NUMBA_ENABLE_CUDASIM=1): its timings are meaningless; unset it on a "
              "GPU machine, or pass --smoke to only check that the script runs")
    return detail


def _data(n_images, sizes, smoke):
    import numpy as np

    if smoke:  # no MNIST needed: random intensities of the smoke network's input size
        rng = np.random.default_rng(0)
        return rng.random((n_images, sizes[0])).astype(np.float32), rng.integers(0, sizes[-1], n_images)
    return load_mnist(n_images)


def run_worker(a):
    import numpy as np

    from snn_core import Adam, LIFParams, ce_count, mlp
    from snn_core.data.encoders import bernoulli_encode
    from snn_core.structure import Rewirer

    detail = _check_device(a)
    sizes = SMOKE_SIZES if a.smoke else SIZES
    T, B = a.steps, a.batch
    images, labels = _data(400, sizes, a.smoke)
    n = len(images)
    p = LIFParams.from_decay(0.9, reset="soft")
    net = mlp(list(sizes), density=a.density, hidden=p, readout=p, output="lif", sparse=True, seed=0)
    opt = Adam(net.parameters(), lr=1e-3)
    batches = [np.arange(k * B, (k + 1) * B) % n for k in range(4)]  # wrap-around for B > n
    rec = {"engine": f"snn_core-{a.device}", "density": a.density, "steps": T, "batch": B, "iters": a.iters,
           "sizes": list(sizes), "loss": "ce_count", "nnz": int(sum(l.nnz for l in net.sparse_layers()))}

    net.to(a.device)  # the same network, optimizer and Rewirer on every backend
    bk = net.backend
    buf = np.empty((sizes[0], T, B), np.float32)
    if detail is not None:
        rec["device_name"] = detail

    def train_step(i):
        x = bernoulli_encode(images[batches[i % 4]], T, seed=i, out=buf)  # host encoder; the first layer uploads
        _, g = ce_count(bk.to_host(net.forward(x)), labels[batches[i % 4]])
        net.zero_grad()
        net.backward(g)
        opt.step()

    def sync():
        bk.synchronize()

    def rewire_event():  # on a device: a measured host round trip through the same Rewirer
        rew = Rewirer(t_iter=1, zeta0=0.3, decay="constant", t_end=2, seed=0)
        sync()
        t0 = time.perf_counter()
        rew.rewire(1, net, opt)
        sync()
        return time.perf_counter() - t0

    for i in range(a.warmup):
        train_step(i)
    sync()
    t0 = time.perf_counter()
    for i in range(a.iters):
        train_step(a.warmup + i)
    sync()
    t_train = time.perf_counter() - t0
    rec["train_samples_per_s"] = B * a.iters / t_train
    rec["iter_ms"] = 1e3 * t_train / a.iters
    rec["rewire_event_s"] = rewire_event() if a.density < 1.0 else None  # a dense layer is never rewired
    rec["peak_rss_mib"] = peak_rss_mib()
    if a.device == "cuda":
        from numba import cuda

        try:
            free, total = cuda.current_context().get_memory_info()
            used = (total - free) / 2**20
            rec["device_mem_used_mib"] = used if np.isfinite(used) else None  # the simulator reports NaN
        except Exception:
            rec["device_mem_used_mib"] = None
    rec["load_avg_1min"] = os.getloadavg()[0]
    emit(rec)


def _run(cmd, env, timeout):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if out.returncode == 2:
        _fail(out.stderr.strip().splitlines()[-1].removeprefix("bench_gpu: "))
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu", "reference"), default="cuda",
                   help="backend to measure (reference is slow: use small --iters)")
    p.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    p.add_argument("--densities", type=float, nargs="+", default=list(DENSITIES))
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--smoke", action="store_true",
                   help="tiny network (12-8-3), batch 4, 2 iterations: checks the script (simulator allowed)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=100, help=argparse.SUPPRESS)
    p.add_argument("--density", type=float, default=0.1, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.smoke:
        a.batches, a.iters, a.warmup, a.steps = [4], 2, 1, 3
        a.densities = [d for d in a.densities if d < 1.0][:1] or [0.5]
    if a.worker:
        run_worker(a)
        return
    _check_device(a)  # fail fast, with the clear message, before spawning workers
    emit({"machine": machine(), "device": a.device})
    env = dict(os.environ)
    env.update(BLAS_ENV)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    me = os.path.abspath(__file__)
    for rep in range(a.repeats):
        for B in a.batches:
            for d in a.densities:
                cmd = [sys.executable, me, "--worker", "--device", a.device, "--batch", str(B), "--density", str(d),
                       "--iters", str(a.iters), "--warmup", str(a.warmup), "--steps", str(a.steps)]
                if a.smoke:
                    cmd.append("--smoke")
                r = _run(cmd, env, a.timeout)
                r["repeat"] = rep
                emit(r)


if __name__ == "__main__":
    main()
