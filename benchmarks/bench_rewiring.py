"""Cost of one rewiring event; prints JSON.

Default case (the issue's): a 10,000 x 10,000 SparseLinear at 1% density
(10^6 connections) with Adam state, magnitude prune + random grow at
zeta = 0.3 (300,000 connections rewired), timed end to end
(``rewire_layer``: selection, growth, CSR merge, ``set_connections``
validation, optimizer remap) and per phase. Plus the gradient grow rule
(RigL) on a smaller layer, including the dense gradient ``dense_weight_grad``.

Usage::

    PYTHONPATH=. python benchmarks/bench_rewiring.py [--n 10000] [--density 0.01] [--reps 5]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import scipy.sparse as sp

from snn_core import Adam, SparseLinear
from snn_core.sparse import fan_in_uniform
from snn_core.structure import (grow_random, position_keys, prune_magnitude, random_structure, remove_connections,
                                rewire_csr, rewire_layer)


def make_layer(n_out, n_in, density, seed=0):
    rng = np.random.default_rng(seed)
    indptr, indices = random_structure(n_out, n_in, int(round(density * n_out * n_in)), rng)
    data = fan_in_uniform(indptr, rng)
    w = sp.csr_matrix((data, indices, indptr), shape=(n_out, n_in))
    return SparseLinear(n_in, n_out, bias=False, weight=w, name="bench")


def with_adam(layer, seed=0):
    opt = Adam(layer.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    for k in opt.state[0]:  # realistic non-zero moments so the remap moves real data
        opt.state[0][k][:] = rng.random(layer.nnz, dtype=np.float32)
    return opt


def median_time(fn, reps):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def bench_event(n, density, zeta, reps):
    layer = make_layer(n, n, density)
    opt = with_adam(layer)
    rng = np.random.default_rng(1)
    k = int(np.floor(zeta * layer.nnz + 0.5))
    med, times = median_time(lambda: rewire_layer(layer, k, rng, "magnitude", "random", optimizer=opt), reps)

    # phases, on the same layer (pure functions, no state change)
    w = layer.weight
    phase = {}
    phase["prune_magnitude"], _ = median_time(lambda: prune_magnitude(w.data, k), reps)
    idx = prune_magnitude(w.data, k)
    phase["remove_connections"], _ = median_time(lambda: remove_connections(w.indptr, w.indices, idx), reps)
    kp, ki, _ = remove_connections(w.indptr, w.indices, idx)
    phase["grow_random"], _ = median_time(lambda: grow_random(kp, ki, w.shape, k, rng), reps)
    g = grow_random(kp, ki, w.shape, k, rng)
    z = np.zeros(k, w.data.dtype)
    phase["rewire_csr"], _ = median_time(
        lambda: rewire_csr(w.indptr, w.indices, w.data, w.shape, idx, g // n, g % n, z), reps)
    ip, ii, dd, src = rewire_csr(w.indptr, w.indices, w.data, w.shape, idx, g // n, g % n, z)
    phase["optimizer_remap"], _ = median_time(lambda: opt.remap(layer.weight_param, src[: layer.nnz]), reps)
    phase["position_keys"], _ = median_time(lambda: position_keys(w.indptr, w.indices, n), reps)
    return {"shape": [n, n], "density": density, "nnz": layer.nnz, "zeta": zeta, "n_rewired": k,
            "event_median_s": med, "event_times_s": times, "phase_median_s": phase}


def bench_gradient(n, density, zeta, reps, T=4, batch=16):
    layer = make_layer(n, n, density, seed=2)
    opt = with_adam(layer)
    rng = np.random.default_rng(3)
    x = (rng.random((T, batch, n)) < 0.2).astype(np.float32)
    k = int(np.floor(zeta * layer.nnz + 0.5))
    dense_t, event_t = [], []
    for _ in range(reps):
        layer.retain_output_grad = True
        y = layer.forward(x)
        layer.backward(np.ones_like(y) / y.size)
        t = time.perf_counter()
        dg = layer.dense_weight_grad()
        t1 = time.perf_counter()
        rewire_layer(layer, k, rng, "magnitude", "gradient", optimizer=opt, dense_grad=dg)
        t2 = time.perf_counter()
        del dg
        dense_t.append(t1 - t)
        event_t.append(t2 - t1)
    return {"shape": [n, n], "density": density, "nnz": layer.nnz, "zeta": zeta, "n_rewired": k,
            "T_x_batch": T * batch, "dense_weight_grad_median_s": statistics.median(dense_t),
            "event_median_s": statistics.median(event_t),
            "total_median_s": statistics.median([a + b for a, b in zip(dense_t, event_t)])}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--density", type=float, default=0.01)
    ap.add_argument("--zeta", type=float, default=0.3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--grad-n", type=int, default=2000)
    ap.add_argument("--grad-density", type=float, default=0.05)
    args = ap.parse_args(argv)
    out = {"machine": {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(),
                       "processor": platform.processor() or platform.machine()},
           "magnitude_random": bench_event(args.n, args.density, args.zeta, args.reps),
           "magnitude_gradient": bench_gradient(args.grad_n, args.grad_density, args.zeta, args.reps)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
