"""Kernel microbenchmarks at the protocol's first-layer size.

800 x 784 CSR weights at a few densities, N = T * batch = 8 * 100 columns of
Bernoulli-coded MNIST spikes (the first 100 training images, ~13% of the
input entries are spikes), feature-major layout. For each kernel the serial
and the parallel version (forced through ``cpu.PARALLEL_MIN_NS``) are timed,
all variants alternating within one process; medians of ``--reps`` rounds.
Also: the dense BLAS product the dense path uses (one BLAS thread), the LIF
and Adam kernels, and the streaming scatter-add ceiling (events/s) next to
the events/s the spike-driven kernels reach.

Usage::

    PYTHONPATH=. python benchmarks/bench_kernels.py [--reps 25] [--densities 0.1 0.01]
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit, limit_blas_threads, load_mnist, machine, scatter_ceiling  # noqa: E402

_TPC = limit_blas_threads()

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from snn_core.kernels import cpu  # noqa: E402
from snn_core.layers import SPIKE_LIST_RATE  # noqa: E402
from snn_core.neurons import LIFParams  # noqa: E402
from snn_core.sparse import fan_in_uniform, random_connectivity, transpose_structure  # noqa: E402

F32 = np.float32


def spikes(T=8, B=100, seed=0):
    x, _ = load_mnist(B)
    rng = np.random.default_rng(seed)
    X = (rng.random((784, T, B), dtype=F32) < x.T[:, None, :]).astype(F32)
    return X.reshape(784, T * B)


def alternate(fns, reps):
    """Median seconds per variant; variants alternate within each round (after 3 warm-up calls each)."""
    for f in fns.values():
        for _ in range(3):
            f()
    res = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            res[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in res.items()}


def with_mode(fn, parallel):
    def run():
        old = cpu.PARALLEL_MIN_NS
        cpu.PARALLEL_MIN_NS = 0.0 if parallel else math.inf
        try:
            fn()
        finally:
            cpu.PARALLEL_MIN_NS = old
    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=25)
    p.add_argument("--densities", type=float, nargs="+", default=[1.0, 0.1, 0.01])
    a = p.parse_args(argv)

    X = spikes()
    n_in, N = X.shape
    n_out = 800
    thr = max(1, int(N * SPIKE_LIST_RATE))
    X8, cnt, cols = np.empty(X.shape, np.uint8), np.empty(n_in, np.int32), np.empty(X.shape, np.int32)
    Xb = np.empty((n_in, (N + 15) // 16), np.uint16)
    cpu.spike_pack(X, X8, cnt, cols, thr, Xb)
    rng = np.random.default_rng(1)
    G = rng.normal(size=(n_out, N)).astype(F32)
    emit({"machine": machine(), "input_spike_rate": float(cnt.sum() / X.size), "silent_inputs": int((cnt == 0).sum()),
          "load_avg_1min": os.getloadavg()[0]})
    rows = []
    for d in a.densities:
        indptr, indices = random_connectivity(n_out, n_in, d, rng)
        data = fan_in_uniform(indptr, rng)
        t_indptr, t_indices, perm = transpose_structure(indptr, indices, n_in)
        W = np.zeros((n_out, n_in), F32)
        W[np.repeat(np.arange(n_out), np.diff(indptr)), indices] = data
        bias = np.zeros(n_out, F32)
        Y, GX = np.empty((n_out, N), F32), np.empty((n_in, N), F32)
        out, gb, rownz = np.empty(len(indices), F32), np.empty(n_out, F32), np.ones(n_out, np.uint8)
        events = int(np.dot(np.bincount(indices, minlength=n_in), cnt))
        fns = {"dense BLAS W @ X (1 thread)": lambda: np.matmul(W, X, out=Y),
               "dense BLAS G @ X.T (1 thread)": lambda: G @ X.T}
        for mode in ("serial", "parallel"):
            par = mode == "parallel"
            fns[f"spike_pack (+bits) [{mode}]"] = with_mode(lambda: cpu.spike_pack(X, X8, cnt, cols, thr, Xb), par)
            fns[f"csr_forward float X [{mode}]"] = with_mode(
                lambda: cpu.csr_forward(indptr, indices, data, bias, X, Y), par)
            fns[f"csr_forward_spikes uint8 [{mode}]"] = with_mode(
                lambda: cpu.csr_forward_spikes(indptr, indices, data, bias, X8, cnt, cols, thr, Y), par)
            fns[f"csr_forward_spikes bits [{mode}]"] = with_mode(
                lambda: cpu.csr_forward_spikes(indptr, indices, data, bias, X8, cnt, cols, thr, Y, Xb=Xb), par)
            fns[f"csr_grad_at float X [{mode}]"] = with_mode(
                lambda: cpu.csr_grad_at(indptr, indices, G, X, out, False), par)
            fns[f"csr_grad_spikes uint8 [{mode}]"] = with_mode(
                lambda: cpu.csr_grad_spikes(indptr, indices, X8, cnt, cols, thr, G, out, False, gb, rownz), par)
            fns[f"csr_grad_spikes bits [{mode}]"] = with_mode(
                lambda: cpu.csr_grad_spikes(indptr, indices, X8, cnt, cols, thr, G, out, False, gb, rownz, Xb=Xb),
                par)
            fns[f"csr_backward_input [{mode}]"] = with_mode(
                lambda: cpu.csr_backward_input_nz(t_indptr, t_indices, perm, data, G, rownz, GX), par)
        res = alternate(fns, a.reps)
        for name, sec in res.items():
            row = {"density": d, "kernel": name, "ms": sec * 1e3}
            if "spikes " in name:
                row["events_per_s"] = events / sec
            rows.append(row)
            emit(row)

    # neurons and optimizer (density-independent)
    F, T, B = 800, 8, 100
    I = rng.normal(0.3, 0.5, size=(F, T, B)).astype(F32)
    v0 = np.zeros((F, B), F32)
    u, s, vl, gI = np.empty_like(I), np.empty_like(I), np.empty_like(v0), np.empty_like(I)
    gs = rng.normal(size=I.shape).astype(F32)
    lif = LIFParams(tau_m=10.0, reset="soft").kernel_params(F32)
    w = rng.normal(size=62720).astype(F32)
    g, m, v = w.copy(), np.zeros_like(w), np.zeros_like(w)
    fns = {}
    for mode in ("serial", "parallel"):
        par = mode == "parallel"
        fns[f"lif_forward 800x8x100 [{mode}]"] = with_mode(lambda: cpu.lif_forward(I, v0, lif, u, s, vl), par)
        fns[f"lif_backward 800x8x100 [{mode}]"] = with_mode(
            lambda: cpu.lif_backward(gs, u, s, lif, gI), par)
        fns[f"adam_update 62720 [{mode}]"] = with_mode(
            lambda: cpu.adam_update(w, g, m, v, F32(1e-3), F32(0.9), F32(0.999), F32(1e-8), F32(0.1), F32(0.001),
                                    F32(0.0)), par)
    for name, sec in alternate(fns, a.reps).items():
        row = {"density": None, "kernel": name, "ms": sec * 1e3}
        rows.append(row)
        emit(row)
    ceil = scatter_ceiling()
    emit({"scatter_ceiling": ceil})

    print("\n# median ms (variants alternated within one process)")
    for d in a.densities + [None]:
        sel = [r for r in rows if r["density"] == d]
        if not sel:
            continue
        print(f"\n## density {d}" if d is not None else "\n## neurons / optimizer")
        for r in sel:
            ev = f"  {r['events_per_s'] / 1e6:7.0f} M events/s" if "events_per_s" in r else ""
            print(f"{r['kernel']:<40} {r['ms']:8.3f}{ev}")
    print(f"\n# input spike rate {cnt.sum() / X.size:.3f}, silent inputs {(cnt == 0).sum()} of {n_in}, "
          f"list threshold {thr} columns")
    print(f"\n# scatter-add ceiling: {ceil['events_per_s_1thread'] / 1e6:.0f} M events/s (1 thread), "
          f"{ceil['events_per_s_all_threads'] / 1e6:.0f} M events/s ({ceil['threads']} threads)")


if __name__ == "__main__":
    main()
