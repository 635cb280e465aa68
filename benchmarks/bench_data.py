"""Cost of the CIFAR / DVS-CIFAR10 data path; prints one JSON object per measurement.

Measured on generated data (no download): reading one AEDAT 2.0 recording of
``--events`` events (CIFAR10-DVS recordings hold roughly 10^5), integrating it
into T = 10 frames of 2 x 48 x 48, reading a 10,000-image CIFAR-10 batch in
both formats, and the per-batch augmentations (batch 64).

Usage::

    PYTHONPATH=. python benchmarks/bench_data.py [--events 100000] [--reps 20]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import emit, machine  # benchmarks/ is on sys.path when the script runs

from snn_core.data import (augment_cifar, augment_dvs, events_to_frames, load_cifar10, make_events, normalize,
                           read_aedat, write_aedat, write_cifar)


def median_ms(fn, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(1e3 * statistics.median(times), 3)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000, help="events in the generated recording")
    ap.add_argument("--reps", type=int, default=20, help="repetitions per measurement (median reported)")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    emit({"machine": machine()})
    with tempfile.TemporaryDirectory() as tmp:
        n = args.events
        ev = make_events(np.sort(rng.integers(0, 1_300_000, n)), rng.integers(0, 128, n), rng.integers(0, 128, n),
                         rng.integers(0, 2, n))
        path = Path(tmp) / "rec.aedat"
        write_aedat(path, ev)
        emit({"what": "read_aedat", "events": n, "ms": median_ms(lambda: read_aedat(path), args.reps)})
        emit({"what": "events_to_frames T=10 48x48", "events": n,
              "ms": median_ms(lambda: events_to_frames(ev, 10), args.reps)})
        x = rng.integers(0, 256, (10_005, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, 10_005)
        for fmt in ("python", "binary"):
            write_cifar(Path(tmp) / fmt, "cifar10", fmt, x[:10_000], y[:10_000], x[:5], y[:5])
            emit({"what": f"load_cifar10 {fmt}, 10,000 images", "ms":
                  median_ms(lambda: load_cifar10(Path(tmp) / fmt), max(3, args.reps // 4))})
    xb = x[:64]
    emit({"what": "normalize(augment_cifar) batch 64", "ms": median_ms(lambda: normalize(augment_cifar(xb, rng)),
                                                                          args.reps)})
    frames = rng.random((64, 10, 2, 48, 48)).astype(np.float32)
    emit({"what": "augment_dvs batch 64, T=10", "ms": median_ms(lambda: augment_dvs(frames, rng), args.reps)})


if __name__ == "__main__":
    main()
