"""Sparse spiking convolution vs the engine's dense convolution on the same spikes.

One 3x3 convolution, 64 -> 64 channels on 16x16 maps (padding 1), N = T * batch
= 4 * 16 columns of Bernoulli spikes at ``--rate`` (default 0.1: each input
pixel spikes in 10% of the columns). For each density the sparse layer
(``SparseConv2d``, cpu backend: event-driven kernels, cost ~ connections x
spikes) and the dense layer (``Conv2d``: im2col + one BLAS GEMM, one BLAS
thread) run forward, weight gradient and input gradient on the same input and
output gradient (nonzero in ``--grad-rate`` of its entries, as a surrogate
gradient is), both passed as the feature-major views layers hand each
other inside a network; medians of ``--reps`` alternating rounds, Numba threads as set
by NUMBA_NUM_THREADS (the table in docs/benchmarks.md uses 1).

Usage::

    NUMBA_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_conv.py [--reps 15] [--densities 0.1 0.01]
    # conv2 of the conv job (docs/results.md): 32 -> 128 channels, 14x14, T = 2, batch 64,
    # pooled spikes in 15% of the inputs, a dense gradient (arctan surrogate, batch norm)
    NUMBA_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_conv.py --in-channels 32 --channels 128 --size 14 \
        --steps 2 --batch 64 --rate 0.15 --grad-rate 1 --densities 0.1088
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit, limit_blas_threads, machine, med  # noqa: E402

_TPC = limit_blas_threads()

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from snn_core.conv import Conv2d, SparseConv2d  # noqa: E402


def step_time(layer, x, g):
    """Seconds of one forward + backward (weight and input gradient)."""
    t0 = time.perf_counter()
    layer.forward(x)
    layer.weight_param.zero_grad()
    layer.backward(g)
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15, help="timed rounds per layer (medians reported)")
    ap.add_argument("--densities", type=float, nargs="+", default=[0.1, 0.01], help="kernel densities of the sparse layer")
    ap.add_argument("--rate", type=float, default=0.1, help="fraction of input entries that are spikes")
    ap.add_argument("--grad-rate", type=float, default=0.2,
                    help="fraction of nonzero output-gradient entries (a surrogate gradient is zero away from threshold)")
    ap.add_argument("--channels", type=int, default=64, help="output channels (and input channels unless --in-channels)")
    ap.add_argument("--in-channels", type=int, default=None, help="input channels (default: --channels)")
    ap.add_argument("--size", type=int, default=16, help="height = width of the maps")
    ap.add_argument("--steps", type=int, default=4, help="time steps T")
    ap.add_argument("--batch", type=int, default=16, help="batch size B (N = T * B columns)")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    c, s, T, B = args.channels, args.size, args.steps, args.batch
    c_in = c if args.in_channels is None else args.in_channels
    kw = dict(input_size=(s, s), padding=1, seed=0)
    dense = Conv2d(c_in, c, 3, **kw)
    layers = {"dense": dense}
    for d in args.densities:
        layers[f"sparse {d:g}"] = SparseConv2d(c_in, c, 3, density=d, **kw)
    for layer in layers.values():
        layer.need_input_grad = True
    # as inside a network: the (T, B, F) views of feature-major (F, T, B) buffers that the layers
    # pass each other (a time-major array would add one transpose copy per call to both layers)
    x = (rng.random((dense.in_features, T, B)) < args.rate).astype(np.float32).transpose(1, 2, 0)
    g = (rng.standard_normal((dense.out_features, T, B))
         * (rng.random((dense.out_features, T, B)) < args.grad_rate)).astype(np.float32).transpose(1, 2, 0)
    times = {k: [] for k in layers}
    for layer in layers.values():  # compile / warm up
        step_time(layer, x, g)
    for _ in range(args.reps):
        for k, layer in layers.items():
            times[k].append(step_time(layer, x, g))
    base = med(times["dense"])
    emit({"machine": machine(), "threads": os.environ.get("NUMBA_NUM_THREADS", "all"), "rate": args.rate,
          "grad_rate": args.grad_rate,
          "shape": f"{c_in}x{s}x{s} -> {c}x{s}x{s}, 3x3, N={T * B}"})
    print("| layer | connections | forward+backward (ms) | speed-up vs dense |")
    print("|---|---|---|---|")
    for k, layer in layers.items():
        m = med(times[k])
        print(f"| {k} | {layer.nnz:,} | {m * 1e3:.2f} | {base / m:.1f}x |")


if __name__ == "__main__":
    main()
