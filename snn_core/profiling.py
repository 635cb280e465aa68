"""Where a training run's time goes: wall-clock seconds per named phase.

``snn-esl train --profile`` and ``Trainer(..., profile=True)`` time every
phase of the real training loop (encoding, forward, loss, backward,
optimizer step, rewiring, the per-step finite check, bookkeeping and the
progress bar, validation, checkpoints) and report them next to the part that
the throughput benchmark measures (encode + forward + loss + backward +
optimizer, ``benchmarks/bench_train.py``), so the trainer's overhead over
the benchmark loop is one number.

A disabled :class:`PhaseTimer` (the default) costs one method call and a
shared no-op context manager per phase; an enabled one calls the backend's
``synchronize`` at the end of every phase, because a GPU kernel launch
returns before the kernel has run and its time would otherwise be charged
to whichever phase next waits for the device.
"""
from __future__ import annotations

import contextlib
import time

__all__ = ["PhaseTimer", "KERNEL_LOOP_PHASES", "format_profile", "layer_report", "format_layer_profile"]

#: the phases that ``benchmarks/bench_train.py`` times as its training loop
KERNEL_LOOP_PHASES = ("encode", "forward", "loss", "backward", "optimizer")

_NO_OP = contextlib.nullcontext()


class PhaseTimer:
    """Accumulates wall-clock seconds and call counts per phase name.

    Parameters
    ----------
    enabled : bool
        False: ``timer(name)`` is a no-op (nothing is measured).
    synchronize : callable or None
        Called before a phase's clock is read at its end (a device
        backend's ``synchronize``), so asynchronous work is charged to
        the phase that launched it.

    Examples
    --------
    >>> timer = PhaseTimer()
    >>> with timer("forward"):
    ...     pass
    >>> timer.calls["forward"]
    1
    """

    def __init__(self, enabled=True, synchronize=None):
        self.enabled = bool(enabled)
        self.synchronize = synchronize
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._open = []  # (name, start) of the phases entered and not yet left, innermost last
        self._next = None

    def __call__(self, name):
        if not self.enabled:
            return _NO_OP
        # the timer is its own context manager (phases nest: a stack of open ones): a generator-based
        # one cost twice as much, ~2 us a phase, most of it outside the phase and so charged to "other"
        self._next = name
        return self

    def __enter__(self):
        self._open.append((self._next, time.perf_counter()))
        return self

    def __exit__(self, *exc):
        if self.synchronize is not None:
            self.synchronize()
        t1 = time.perf_counter()
        name, t0 = self._open.pop()
        self.add(name, t1 - t0)
        return False

    def add(self, name, seconds, calls=1):
        """Charge ``seconds`` (and ``calls`` calls) to phase ``name``."""
        self.seconds[name] = self.seconds.get(name, 0.0) + float(seconds)
        self.calls[name] = self.calls.get(name, 0) + int(calls)

    def total(self, names=None):
        """Seconds summed over ``names`` (default: every phase)."""
        names = self.seconds if names is None else names
        return sum(self.seconds.get(n, 0.0) for n in names)

    def as_dict(self, samples=None):
        """JSON-ready report: per phase seconds, calls and share of the total;
        with ``samples`` (training samples processed), the samples/s of the
        benchmark's kernel loop and of the whole run, and the overhead."""
        whole = self.total()
        out = {"phases": {n: {"seconds": s, "calls": self.calls[n], "share": s / whole if whole else 0.0}
                          for n, s in sorted(self.seconds.items(), key=lambda kv: -kv[1])},
               "total_seconds": whole}
        kernel = self.total(KERNEL_LOOP_PHASES)
        out["kernel_loop_seconds"] = kernel
        if samples and kernel > 0 and whole > 0:
            out["kernel_loop_samples_per_s"] = samples / kernel
            out["whole_run_samples_per_s"] = samples / whole
            # how much slower the run is than the benchmark's loop on the same batches
            out["overhead"] = whole / kernel - 1.0
        return out


def format_profile(report):
    """The table ``snn-esl train --profile`` prints, from :meth:`PhaseTimer.as_dict`."""
    lines = [f"{'phase':<22s} {'seconds':>9s} {'share':>7s} {'calls':>8s} {'ms/call':>9s}"]
    for name, p in report["phases"].items():
        marker = "*" if name in KERNEL_LOOP_PHASES else " "
        lines.append(f"{marker}{name:<21s} {p['seconds']:9.2f} {100 * p['share']:6.1f}% {p['calls']:8d} "
                     f"{1000 * p['seconds'] / max(p['calls'], 1):9.3f}")
    lines.append(f"{'total':<22s} {report['total_seconds']:9.2f}")
    if "overhead" in report:
        lines.append(f"* = the benchmark's training loop (encode, forward, loss, backward, optimizer): "
                     f"{report['kernel_loop_samples_per_s']:.0f} samples/s; whole run incl. validation and "
                     f"checkpoints: {report['whole_run_samples_per_s']:.0f} samples/s "
                     f"(overhead {100 * report['overhead']:.1f}%)")
    return "\n".join(lines)


def layer_report(timer):
    """Per-layer rows from a timer fed by ``Network.forward/backward(..., timer=)``.

    Phases are named ``"<layer> forward"`` and ``"<layer> backward"``.
    Returns a list of dicts (``layer``, ``forward_ms``, ``backward_ms``
    per call, ``seconds`` and ``share`` of all layer time), in the order the
    layers first ran; empty when nothing was timed.
    """
    rows = {}
    for name, seconds in timer.seconds.items():
        layer, _, direction = name.rpartition(" ")
        r = rows.setdefault(layer, {"layer": layer, "forward_ms": 0.0, "backward_ms": 0.0, "seconds": 0.0})
        r[f"{direction}_ms"] = 1000.0 * seconds / max(timer.calls[name], 1)
        r["seconds"] += seconds
    whole = sum(r["seconds"] for r in rows.values())
    for r in rows.values():
        r["share"] = r["seconds"] / whole if whole else 0.0
    return list(rows.values())


def format_layer_profile(timer):
    """The per-layer table ``snn-esl train --profile`` prints after the phase table."""
    rows = layer_report(timer)
    if not rows:
        return ""
    lines = [f"{'layer':<22s} {'fwd ms':>9s} {'bwd ms':>9s} {'share':>7s}   (per batch; share of forward+backward)"]
    for r in rows:
        lines.append(f" {r['layer']:<21s} {r['forward_ms']:9.2f} {r['backward_ms']:9.2f} {100 * r['share']:6.1f}%")
    return "\n".join(lines)
