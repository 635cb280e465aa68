"""What a kernel pays per row for calling its row function (docs/benchmarks.md, "Row-call overhead").

Every cpu kernel loops over rows and calls a row function shared by its
serial and parallel versions. Numba passes each array argument with an
atomic reference-count increment and decrement per call; this script times a
loop over ``--rows`` rows whose row function takes 9 arrays and does almost
nothing, in the variants the kernels could use:

- called / inlined (``inline="always"``), serial and ``prange``;
- inlined on borrowed views (:func:`snn_core.kernels.cpu.borrow`: no
  reference count), which is what ``kernels/cpu.py`` does;
- the same loop written out without a function, for scale.

Usage::

    PYTHONPATH=. python benchmarks/bench_rowcall.py
    PYTHONPATH=. python benchmarks/bench_rowcall.py --rows 8000 --repeats 300
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit, machine, med  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

from snn_core.kernels.cpu import borrow  # noqa: E402

_jit = dict(nogil=True, error_model="numpy")


def _body(r, a, b, c, d, e, f, g, h, live):
    if live[r]:
        a[r] += b[r] + c[r] + d[r] + e[r] + f[r] + g[r] + h[r]


row_called = numba.njit(**_jit)(_body)
row_inlined = numba.njit(inline="always", **_jit)(_body)


@numba.njit(**_jit)
def serial_called(a, b, c, d, e, f, g, h, live):
    for r in range(a.shape[0]):
        row_called(r, a, b, c, d, e, f, g, h, live)


@numba.njit(**_jit)
def serial_inlined(a, b, c, d, e, f, g, h, live):
    for r in range(a.shape[0]):
        row_inlined(r, a, b, c, d, e, f, g, h, live)


@numba.njit(**_jit)
def serial_inlined_borrowed(a, b, c, d, e, f, g, h, live):
    a, b, c, d, e, f, g, h, live = (borrow(a), borrow(b), borrow(c), borrow(d), borrow(e), borrow(f), borrow(g),
                                    borrow(h), borrow(live))
    for r in range(a.shape[0]):
        row_inlined(r, a, b, c, d, e, f, g, h, live)


@numba.njit(parallel=True, **_jit)
def parallel_called(a, b, c, d, e, f, g, h, live):
    for r in numba.prange(a.shape[0]):
        row_called(r, a, b, c, d, e, f, g, h, live)


@numba.njit(parallel=True, **_jit)
def parallel_inlined(a, b, c, d, e, f, g, h, live):
    for r in numba.prange(a.shape[0]):
        row_inlined(r, a, b, c, d, e, f, g, h, live)


@numba.njit(**_jit)
def written_out(a, b, c, d, e, f, g, h, live):
    for r in range(a.shape[0]):
        if live[r]:
            a[r] += b[r] + c[r] + d[r] + e[r] + f[r] + g[r] + h[r]


VARIANTS = (serial_called, serial_inlined, serial_inlined_borrowed, parallel_called, parallel_inlined, written_out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=8000)
    ap.add_argument("--repeats", type=int, default=200)
    a = ap.parse_args(argv)
    arrays = [np.ones(a.rows, np.float32) for _ in range(8)]
    live = np.zeros(a.rows, np.uint8)  # rows with nothing to do: what is left is the call
    emit({"machine": machine(), "threads": numba.get_num_threads()})
    print(f"{'variant':<26}{'ns per row':>12}")
    for fn in VARIANTS:
        fn(*arrays, live)  # compile
        times = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            fn(*arrays, live)
            times.append(time.perf_counter() - t0)
        ns = 1e9 * med(times) / a.rows
        emit({"variant": fn.__name__, "ns_per_row": ns, "rows": a.rows})
        print(f"{fn.__name__:<26}{ns:>12.1f}")


if __name__ == "__main__":
    main()
