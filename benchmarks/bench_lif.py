"""LIF layer kernels at the shapes that matter: the MLP's hidden layer and the conv job's first LIF layer.

Times ``snn_core.kernels.cpu.lif_forward`` and ``lif_backward`` (hard reset,
rectangular surrogate: the defaults) on random currents, the output
gradient nonzero in 30% of its entries (as after a spiking layer whose
surrogate is zero away from threshold). Prints the minimum over ``--reps``
calls, the statistic least disturbed by other processes on a shared VM.

The kernels are imported from whatever ``snn_core`` is on ``PYTHONPATH``,
so the same script compares two trees (alternate the runs)::

    git worktree add /tmp/old 2331428
    PYTHONPATH=/tmp/old python benchmarks/bench_lif.py
    PYTHONPATH=. python benchmarks/bench_lif.py
"""
from __future__ import annotations

import argparse
import timeit

import numba
import numpy as np

SHAPES = {"mlp hidden 800 x 8 x 100": (800, 8, 100), "conv job lif1 25088 x 4 x 64": (25088, 4, 64)}


def best_ms(fn, reps):
    fn()  # compile or load, and warm the caches
    return 1e3 * min(timeit.repeat(fn, number=1, repeat=reps))


def main(argv=None):
    from snn_core.kernels import cpu
    from snn_core.layers import LIF

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=30)
    args = p.parse_args(argv)
    print(f"snn_core from {cpu.__file__}, {numba.get_num_threads()} Numba threads")
    for name, (F, T, B) in SHAPES.items():
        rng = np.random.default_rng(0)
        current = rng.normal(0.5, 1.0, (F, T, B)).astype(np.float32)
        grad = (rng.normal(0.0, 1.0, (F, T, B)) * (rng.random((F, T, B)) < 0.3)).astype(np.float32)
        prm = LIF(F).kernel_params
        u, s, g_in = (np.empty_like(current) for _ in range(3))
        v0, v_last = np.zeros((F, B), np.float32), np.empty((F, B), np.float32)
        fwd = best_ms(lambda: cpu.lif_forward(current, v0, prm, u, s, v_last), args.reps)
        bwd = best_ms(lambda: cpu.lif_backward(grad, u, s, prm, g_in), args.reps)
        print(f"{name:30s} forward {fwd:8.3f} ms   backward {bwd:8.3f} ms")


if __name__ == "__main__":
    main()
