"""Training/inference throughput of the engine vs its dense path vs snnTorch.

Implements ``shared/bench/PROTOCOL.md``: MNIST 784-800-10, first 400
training images cycled in batches of 100, Bernoulli rate coding redrawn at
each of T = 8 steps (the engine's ``bernoulli_encode``; as the Trainer
does, it draws only the input pixels that the forward reads, i.e. those
with a connection into a hidden neuron whose spikes reach the output:
``features=net.input_rows_needed()``, half of them at d = 0.01; and, as
the Trainer does, the sparse engine gets uint8 spikes, which its first layer
packs as they are, while the dense engine gets float32 spikes, its fastest
input: uint8 would cost it a conversion), LIF hidden and
output layers (``LIFParams.from_decay(0.9, reset="soft")``: beta 0.9,
threshold 1, soft reset, rectangular surrogate), bias on, Adam lr 1e-3, both
weight matrices at density d.

Loss: the engine has no combined "spike count + time-averaged membrane"
cross-entropy, so the engine runs use ``ce_count`` on the LIF output (the
same cost: one reduction over T of a (T, 100, 10) array); the peer script
uses the protocol's combined loss.

Engines (each configuration in its own process, so peak RSS is per
configuration; run alternately A B C A B C ... and summarised by medians):

- ``sparse``: ``mlp(..., sparse=True, output="lif")`` - CSR synapses, the
  spike-driven kernels;
- ``dense``: ``mlp(..., sparse=False, output="lif")`` - BLAS matmuls; the
  same random connectivity is imposed as a mask (weights multiplied by it at
  the start and after every optimizer step, as a dense library trains a
  sparse network); at d = 1 there is no mask;
- ``peer``: ``shared/bench/peer_snntorch.py`` (snnTorch + PyTorch), run by
  ``--peer-python`` (default: this interpreter if it can import torch and
  snntorch, else skipped with a note).

Per run: training samples/s over ``--iters`` iterations after ``--warmup``
(encode + forward + BPTT + Adam, no rewiring), inference samples/s (encode
+ forward), peak RSS, and synaptic events per second: forward events are the
(connection, presynaptic spike) pairs of all synaptic layers, and the
weight gradient visits the same pairs, so events/s = 2 * forward events *
iterations/s. Printed next to the streaming scatter-add ceiling (events/s a
core applies at best, see ``_common.scatter_ceiling``).

BLAS is limited to one thread in the engine processes (BLAS and Numba threads
fight on two cores). The peer keeps PyTorch's default threads.

Usage::

    PYTHONPATH=. python benchmarks/bench_train.py                 # full: 5 densities x 3 engines x 3 repeats
    PYTHONPATH=. python benchmarks/bench_train.py --quick         # short smoke run
    PYTHONPATH=. python benchmarks/bench_train.py --peer-python /tmp/peer/bin/python --repeats 5
    PYTHONPATH=. python benchmarks/bench_train.py --scale         # 784-10000-10000-10 at 1%
    PYTHONPATH=. python benchmarks/bench_train.py --profile --densities 0.1 0.01 --iters 50
    PYTHONPATH=. python benchmarks/bench_train.py --profile --kernels --densities 0.1 0.01 --iters 300
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (BLAS_ENV, PEER_SCRIPT, REPO, emit, limit_blas_threads, load_mnist, machine, med,  # noqa: E402
                     peak_rss_mib, scatter_ceiling)

if "--worker" in sys.argv:  # a measuring process: one BLAS thread, set before numpy loads
    _TPC = limit_blas_threads()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

DENSITIES = (1.0, 0.2, 0.1, 0.05, 0.01)
SIZES = (784, 800, 10)


# --------------------------------------------------------------------------
# Worker: one configuration in this process
# --------------------------------------------------------------------------
def _network(engine, density, sizes, seed=0):
    import numpy as np

    from snn_core import LIFParams, Linear, mlp
    from snn_core.sparse import random_connectivity

    p = LIFParams.from_decay(0.9, reset="soft")
    net = mlp(list(sizes), density=density, hidden=p, readout=p, output="lif", sparse=engine == "sparse", seed=seed)
    masks = []
    if engine == "dense" and density < 1.0:
        rng = np.random.default_rng(seed + 1)
        for layer in net.layers:
            if isinstance(layer, Linear):
                indptr, indices = random_connectivity(layer.out_features, layer.in_features, density, rng)
                m = np.zeros((layer.out_features, layer.in_features), layer.dtype)
                rows = np.repeat(np.arange(layer.out_features), np.diff(indptr))
                m[rows, indices] = 1
                layer.weight_param.value *= m
                masks.append((layer.weight_param.value, m))
    return net, masks


def _fanout(layer):
    import numpy as np

    from snn_core import Linear, SparseLinear

    if isinstance(layer, SparseLinear):
        return np.bincount(layer.weight.indices, minlength=layer.in_features)
    if isinstance(layer, Linear):
        return np.count_nonzero(layer.weight_param.value, axis=0)
    return None


def forward_events(net, X):
    """(connection, presynaptic spike) pairs of one forward pass."""
    import numpy as np

    ev, h = 0, X
    for layer in net.layers:
        fo = _fanout(layer)
        if fo is not None:
            spikes = np.count_nonzero(h, axis=(0, 1))  # per input feature
            ev += int(np.dot(fo.astype(np.int64), spikes))
        h = layer.forward(h)
    return ev


def run_worker(a):
    import numpy as np

    from snn_core import Adam, ce_count
    from snn_core.data import EncodeAhead
    from snn_core.data.encoders import bernoulli_encode
    from snn_core.kernels import cpu

    T, B = a.steps, a.batch
    images, labels = load_mnist(4 * B)
    net, masks = _network(a.engine, a.density, SIZES)
    opt = Adam(net.parameters(), lr=1e-3)
    spike_dtype = np.uint8 if a.engine == "sparse" else np.float32
    buf = np.zeros((SIZES[0], T, B), spike_dtype)
    # as the Trainer: batch i + 1 is drawn on the other core while batch i trains (seed = iteration)
    ahead = EncodeAhead(bernoulli_encode, T, dtype=spike_dtype) if a.encode_ahead else None
    last = a.warmup + a.iters

    def encode(i, every_input=False):
        k = i % 4
        x, y = images[k * B:(k + 1) * B], labels[k * B:(k + 1) * B]
        if ahead is None or every_input:
            features = None if every_input else net.input_rows_needed()
            return bernoulli_encode(x, T, seed=i, out=buf, features=features), y
        needed = net.input_rows_needed()  # the same for this batch and the next until the forward
        if not ahead.pending:
            ahead.submit(x, seed=i, features=needed)
        spikes = ahead.result(features=needed)
        if i + 1 < last:
            k = (i + 1) % 4
            ahead.submit(images[k * B:(k + 1) * B], seed=i + 1, features=needed)
        return spikes, y

    def train_step(i):
        x, y = encode(i)
        _, g = ce_count(net.forward(x), y)
        net.zero_grad()
        net.backward(g)
        opt.step()
        for w, m in masks:
            w *= m

    def infer_step(i):
        x, _ = encode(i)
        net.forward(x)

    for i in range(a.warmup):
        train_step(i)
    t0 = time.perf_counter()
    for i in range(a.iters):
        train_step(a.warmup + i)
    t_train = time.perf_counter() - t0
    for i in range(a.warmup):
        infer_step(i)
    t0 = time.perf_counter()
    for i in range(a.iters):
        infer_step(a.warmup + i)
    t_infer = time.perf_counter() - t0
    if ahead is not None:
        ahead.close()
    ev = np.mean([forward_events(net, encode(i, every_input=True)[0]) for i in range(4)])
    iters_per_s = a.iters / t_train
    emit({
        "engine": "snn_core-" + a.engine, "density": a.density, "steps": T, "batch": B, "iters": a.iters,
        "train_samples_per_s": B * iters_per_s, "infer_samples_per_s": B * a.iters / t_infer,
        "peak_rss_mib": peak_rss_mib(), "forward_events_per_iter": ev,
        "syn_events_per_s": 2 * ev * iters_per_s,
        "connections": int(sum(_fanout(l).sum() for l in net.layers if _fanout(l) is not None)),
        "loss": "ce_count", "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "parallel_min_ns": cpu.parallel_min_ns(), "threading_layer": cpu.threading_layer(),
        "encode_ahead": bool(a.encode_ahead), "load_avg_1min": os.getloadavg()[0],
    })


def run_scale_worker(a):
    """784-10000-10000-10 at 1%: a few training iterations and one rewiring event."""
    import numpy as np

    from snn_core import Adam, ce_count
    from snn_core.data.encoders import bernoulli_encode

    T, B = a.steps, a.batch
    sizes = (784, 10000, 10000, 10)
    images, labels = load_mnist(4 * B)
    t0 = time.perf_counter()
    net, _ = _network("sparse", 0.01, sizes)
    t_build = time.perf_counter() - t0
    opt = Adam(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    buf = np.zeros((784, T, B), np.uint8)
    try:
        from snn_core.structure import Rewirer
    except ImportError:
        Rewirer = None
    times, rewire_s, note = [], None, None
    n_iter = max(2, a.scale_iters)
    rewirer = None
    if Rewirer is not None:
        event_at = n_iter // 2
        rewirer = Rewirer(t_iter=event_at, zeta0=0.3, t_end=event_at + 1, seed=0)
    else:
        note = "snn_core.structure not importable: no rewiring event"
    for it in range(1, n_iter + 1):
        k = it % 4
        t0 = time.perf_counter()
        x = bernoulli_encode(images[k * B:(k + 1) * B], T, seed=rng, out=buf, features=net.input_rows_needed())
        _, g = ce_count(net.forward(x), labels[k * B:(k + 1) * B])
        net.zero_grad()
        net.backward(g)
        opt.step()
        times.append(time.perf_counter() - t0)
        if rewirer is not None and rewirer.is_event(it):
            t0 = time.perf_counter()
            rewirer.maybe_rewire(it, net, opt)
            rewire_s = time.perf_counter() - t0
    emit({
        "engine": "snn_core-sparse", "case": "scale", "sizes": sizes, "density": 0.01, "steps": T, "batch": B,
        "nnz": int(sum(l.nnz for l in net.sparse_layers())), "build_s": t_build,
        "iter_s": times, "train_samples_per_s_after_first": B / med(times[1:]),
        "rewire_event_s": rewire_s, "note": note, "peak_rss_mib": peak_rss_mib(),
        "load_avg_1min": os.getloadavg()[0],
    })


def run_profile_worker(a):
    """Where one training iteration of the sparse engine spends its time.

    Times every stage (encoding, input check, each layer's forward and
    backward, loss, Adam) inside real training iterations, the densities
    alternating iteration by iteration in one process; medians in ms and
    the fraction of the iteration. ``--cpu-time`` measures process CPU time
    instead of wall time (robust to other processes taking the cores).
    ``--kernels`` also times every call of a ``kernels/cpu.py`` kernel (wrapped
    in a timer for this run) and prints each kernel's time per iteration,
    their sum, and what is left of the iteration besides them and encoding:
    Python, Numba dispatch and NumPy glue.
    """
    import numpy as np

    from snn_core import Adam, ce_count
    from snn_core.data.encoders import bernoulli_encode
    T, B = a.steps, a.batch
    images, labels = load_mnist(4 * B)
    clock = time.process_time if a.cpu_time else time.perf_counter
    nets = {d: _network("sparse", d, SIZES)[0] for d in a.densities}
    opts = {d: Adam(nets[d].parameters(), lr=1e-3) for d in a.densities}
    bufs = {d: np.zeros((SIZES[0], T, B), np.uint8) for d in a.densities}
    rng = np.random.default_rng(0)
    acc = {d: {} for d in a.densities}
    kernel_time = {}  # kernel name -> seconds in the current iteration
    if a.kernels:
        _time_kernels(kernel_time, clock)

    def timed_call(d, key, fn, *args):
        t0 = clock()
        r = fn(*args)
        acc[d].setdefault(key, []).append(clock() - t0)
        return r

    @contextlib.contextmanager
    def phase_timer(d, key):  # the timer of Network.forward and backward
        t0 = clock()
        yield
        acc[d].setdefault(key, []).append(clock() - t0)

    def iteration(d, i):
        net, k = nets[d], i % 4
        t0 = clock()
        x = timed_call(d, "encode", lambda: bernoulli_encode(images[k * B:(k + 1) * B], T, seed=rng, out=bufs[d],
                                                             features=net.input_rows_needed()))
        # through Network.forward and backward, as training runs them: the layers pass row masks to each other
        # there (the input check, a pass over x only when packing did not check it, counts in TOTAL only)
        h = net.forward(x, timer=lambda phase: phase_timer(d, "forward " + phase.rsplit(" ", 1)[0]))
        _, g = timed_call(d, "loss ce_count", ce_count, h, labels[k * B:(k + 1) * B])
        net.zero_grad()
        net.backward(g, timer=lambda phase: phase_timer(d, "backward " + phase.rsplit(" ", 1)[0]))
        timed_call(d, "adam", opts[d].step)
        acc[d].setdefault("TOTAL", []).append(clock() - t0)
        if a.kernels:
            for name, seconds in kernel_time.items():
                acc[d].setdefault("kernel " + name, []).append(seconds)
            acc[d].setdefault("kernels, all", []).append(sum(kernel_time.values()))
            acc[d].setdefault("rest: Python, dispatch, glue", []).append(
                acc[d]["TOTAL"][-1] - acc[d]["encode"][-1] - sum(kernel_time.values()))
            kernel_time.clear()

    for i in range(a.warmup):
        for d in a.densities:
            iteration(d, i)
    for d in a.densities:
        acc[d].clear()
    for i in range(a.iters):
        for d in a.densities:
            iteration(d, i)
    keys = list(dict.fromkeys(k for d in a.densities for k in acc[d]))  # a kernel may run at one density only
    keys.sort(key=lambda k: (k.startswith("kernel"), k.startswith("kernels") or k.startswith("rest")))
    res = {d: {k: 1e3 * med(acc[d][k]) if k in acc[d] else 0.0 for k in keys} for d in a.densities}
    emit({"profile": res, "clock": "process_time" if a.cpu_time else "perf_counter",
          "load_avg_1min": os.getloadavg()[0]})
    print(f"\n# median ms per iteration stage ({'CPU' if a.cpu_time else 'wall'} time), share of the iteration")
    print(f"{'stage':<32}" + "".join(f"{'d=' + str(d):>18}" for d in a.densities))
    for k in keys:
        print(f"{k:<32}" + "".join(f"{res[d][k]:>9.3f} ({100 * res[d][k] / res[d]['TOTAL']:4.0f}%)"
                                     for d in a.densities))


def _time_kernels(kernel_time, clock):
    """Wrap every public kernel of ``snn_core.kernels.cpu`` so that its calls add their time to ``kernel_time``.

    The backends look kernels up on the module at each call, so the wrappers
    see every call; the serial/parallel chooser and the cost models are not kernels.
    """
    import functools

    from snn_core.kernels import cpu as K

    helpers = {"pick_version", "parallel_min_ns", "threading_layer", "spike_work_ns", "borrow"}
    for name, fn in list(vars(K).items()):
        if name.startswith("_") or name in helpers or not callable(fn) or getattr(fn, "__module__", "") != K.__name__:
            continue

        def timed(*args, _fn=fn, _name=name, **kw):
            t0 = clock()
            try:
                return _fn(*args, **kw)
            finally:
                kernel_time[_name] = kernel_time.get(_name, 0.0) + clock() - t0

        setattr(K, name, functools.wraps(fn)(timed))


# --------------------------------------------------------------------------
# Orchestrator: alternate engines in separate processes
# --------------------------------------------------------------------------
def _peer_python(arg):
    if arg == "none":
        return None, "peer disabled (--peer-python none)"
    cand = arg or sys.executable
    probe = subprocess.run([cand, "-c", "import torch, snntorch"], capture_output=True, text=True)
    if probe.returncode == 0:
        return cand, None
    if arg:
        return None, f"--peer-python {arg}: cannot import torch/snntorch ({probe.stderr.strip().splitlines()[-1:]})"
    return None, ("peer skipped: torch/snntorch not importable here; install them in a separate venv and pass "
                  "--peer-python (see benchmarks/README.md)")


def _run(cmd, env, timeout):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(lines[-1])


# Runs the peer script unchanged, then reports its VmHWM (its own ru_maxrss
# includes the parent's RSS at fork time).
_PEER_WRAP = """import json, runpy, sys
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(json.dumps({"vmhwm_mib": int(line.split()[1]) / 1024.0}))
"""


def _run_peer(cmd, env, timeout):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    objs = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
    runs = [o for o in objs if "train_samples_per_s" in o]
    if out.returncode != 0 or not runs:
        raise RuntimeError(f"peer failed ({out.returncode}):\n{out.stderr[-2000:]}")
    r = runs[-1]
    hwm = [o["vmhwm_mib"] for o in objs if "vmhwm_mib" in o]
    if hwm:
        r["peak_rss_mib_reported"] = r.get("peak_rss_mib")
        r["peak_rss_mib"] = hwm[-1]
    return r


def orchestrate(a):
    engines = ["sparse", "dense"] + (["dense-mt"] if a.dense_mt else [])
    peer, note = _peer_python(a.peer_python)
    if peer:
        engines.append("peer")
    if note:
        print(f"# {note}", flush=True)
    env = dict(os.environ)
    env.update(BLAS_ENV)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    # dense-mt: the dense path with a BLAS thread per core (is it held back by the one-thread rule?)
    ncores = str(os.cpu_count() or 1)
    env_mt = dict(env, SNN_BENCH_BLAS_THREADS=ncores, **{k: ncores for k in BLAS_ENV})
    peer_env = {k: v for k, v in os.environ.items() if k not in BLAS_ENV}
    peer_env["PYTHONPATH"] = ""
    me = os.path.abspath(__file__)
    # everything that imports numpy/numba runs in a child: the orchestrator
    # stays small, because a child's ru_maxrss (used by the peer script)
    # starts from the parent's RSS at fork
    ceil = _run([sys.executable, me, "--worker", "--ceiling"], env, a.timeout)
    emit({"machine": machine(), "scatter_ceiling": ceil})
    results = []
    for rep in range(a.repeats):
        for d in a.densities:
            for eng in engines:
                if eng == "peer":
                    cmd = [peer, "-c", _PEER_WRAP, PEER_SCRIPT, "--density", str(d), "--iters", str(a.iters),
                           "--warmup", str(a.warmup), "--steps", str(a.steps), "--batch", str(a.batch)]
                    r = _run_peer(cmd, peer_env, a.timeout)
                    r["engine_kind"] = "peer"
                else:
                    cmd = [sys.executable, me, "--worker", "--engine", eng.replace("-mt", ""), "--density", str(d),
                           "--iters", str(a.iters), "--warmup", str(a.warmup), "--steps", str(a.steps),
                           "--batch", str(a.batch)] + ([] if a.encode_ahead else ["--no-encode-ahead"])
                    r = _run(cmd, env_mt if eng == "dense-mt" else env, a.timeout)
                    r["engine_kind"] = eng
                r["repeat"] = rep
                emit(r)
                results.append(r)
    summary(results, a.densities, engines, ceil)
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"machine": machine(), "scatter_ceiling": ceil, "runs": results}, f, indent=1)


def _get(results, eng, d, key):
    return {r["repeat"]: r.get(key) for r in results if r["engine_kind"] == eng and r["density"] == d}


def _ratio(num, den):
    """Median over repeats of per-repeat ratios (the runs of one repeat were adjacent in time)."""
    rs = [num[k] / den[k] for k in num if k in den and num[k] and den[k]]
    return med(rs)


def summary(results, densities, engines, ceil):
    print("\n# medians over repeats (engines alternated in separate processes)")
    hdr = f"{'density':>7} {'engine':>7} {'train/s':>9} {'infer/s':>9} {'RSS MiB':>8} {'Mevents/s':>10}"
    print(hdr)
    for d in densities:
        for eng in engines:
            tr = med(_get(results, eng, d, "train_samples_per_s").values())
            inf = med(_get(results, eng, d, "infer_samples_per_s").values())
            rss = med(_get(results, eng, d, "peak_rss_mib").values())
            ev = med(_get(results, eng, d, "syn_events_per_s").values())
            f = lambda v, w, p: f"{v:>{w}.{p}f}" if v is not None else f"{'n/a':>{w}}"  # noqa: E731
            print(f"{d:>7} {eng:>7} {f(tr, 9, 0)} {f(inf, 9, 0)} {f(rss, 8, 0)} {f(ev and ev / 1e6, 10, 1)}")
    print(f"\n# scatter-add ceiling: {ceil['events_per_s_1thread'] / 1e6:.0f} M events/s (1 thread), "
          f"{ceil['events_per_s_all_threads'] / 1e6:.0f} M events/s ({ceil['threads']} threads)")
    print("\n# ratios (median of per-repeat ratios)")
    print(f"{'density':>7} {'train sparse/dense':>19} {'train sparse/peer':>18} {'infer sparse/dense':>19}")
    for d in densities:
        s_tr = _get(results, "sparse", d, "train_samples_per_s")
        s_in = _get(results, "sparse", d, "infer_samples_per_s")
        r1 = _ratio(s_tr, _get(results, "dense", d, "train_samples_per_s"))
        r2 = _ratio(s_tr, _get(results, "peer", d, "train_samples_per_s")) if "peer" in engines else None
        r3 = _ratio(s_in, _get(results, "dense", d, "infer_samples_per_s"))
        f = lambda v, w: f"{v:>{w}.2f}" if v is not None else f"{'n/a':>{w}}"  # noqa: E731
        print(f"{d:>7} {f(r1, 19)} {f(r2, 18)} {f(r3, 19)}")
        if "dense-mt" in engines:
            print(f"{'':>7} {f(_ratio(s_tr, _get(results, 'dense-mt', d, 'train_samples_per_s')), 19)} {'':>18} "
                  f"{f(_ratio(s_in, _get(results, 'dense-mt', d, 'infer_samples_per_s')), 19)}"
                  "   (vs dense-mt: BLAS on every core)")
    if 0.01 in densities and 0.1 in densities:
        r = _ratio(_get(results, "sparse", 0.01, "train_samples_per_s"), _get(results, "sparse", 0.1,
                                                                              "train_samples_per_s"))
        print(f"\n# sparse train speed, density 0.01 / density 0.1: {r:.2f}x")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short run: 10 iterations, 1 repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--densities", type=float, nargs="+", default=list(DENSITIES))
    p.add_argument("--peer-python", default=None,
                   help="interpreter with torch + snntorch ('none' to skip; default: this one if it has them)")
    p.add_argument("--scale", action="store_true", help="the 784-10000-10000-10 at 1%% case instead")
    p.add_argument("--scale-iters", type=int, default=4)
    p.add_argument("--profile", action="store_true",
                   help="time each stage of a sparse training iteration (densities alternate in one process)")
    p.add_argument("--cpu-time", action="store_true", help="with --profile: process CPU time instead of wall time")
    p.add_argument("--kernels", action="store_true",
                   help="with --profile: also time every kernels/cpu.py call, and the rest (Python, dispatch)")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--json-out", default=None, help="also write every run to this JSON file")
    p.add_argument("--encode-ahead", action=argparse.BooleanOptionalAction, default=True,
                   help="draw the next batch's spikes on a background thread while a batch trains, as the "
                        "Trainer does (default); --no-encode-ahead draws each batch in the step")
    p.add_argument("--dense-mt", action="store_true",
                   help="also run the dense path with a BLAS thread per core ('dense-mt'; default: one BLAS thread)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ceiling", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--engine", default="sparse", help=argparse.SUPPRESS)
    p.add_argument("--density", type=float, default=0.1, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.quick:
        a.iters, a.warmup, a.repeats, a.scale_iters = 10, 2, 1, 3
    if a.worker and a.ceiling:
        emit(scatter_ceiling())
    elif a.worker and a.profile:
        run_profile_worker(a)
    elif a.worker:
        (run_scale_worker if a.scale else run_worker)(a)
    elif a.profile:
        env = dict(os.environ)
        env.update(BLAS_ENV)
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--profile", "--iters", str(a.iters),
               "--warmup", str(a.warmup), "--steps", str(a.steps), "--batch", str(a.batch), "--densities",
               *map(str, a.densities)] + (["--cpu-time"] if a.cpu_time else []) + (["--kernels"] if a.kernels else [])
        out = subprocess.run(cmd, env=env, text=True, timeout=a.timeout)
        sys.exit(out.returncode)
    elif a.scale:
        env = dict(os.environ)
        env.update(BLAS_ENV)
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--scale", "--scale-iters", str(a.scale_iters),
               "--steps", str(a.steps), "--batch", str(a.batch)]
        r = _run(cmd, env, a.timeout)
        emit(r)
        ok = r["peak_rss_mib"] < 2048
        print(f"\n# scale case: {r['nnz']} connections, iterations {['%.2f s' % t for t in r['iter_s']]}, "
              f"rewiring event {r['rewire_event_s'] and '%.2f s' % r['rewire_event_s']}, "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB ({'under' if ok else 'OVER'} 2 GB)")
    else:
        orchestrate(a)


if __name__ == "__main__":
    main()
