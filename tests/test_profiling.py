"""The phase profiler of the training loop (``snn-esl train --profile``).

No timing assertions: the tests check what is counted and how the report's
numbers follow from the recorded seconds, and that profiling changes no
result.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import snn_core
from snn_core.config import TrainConfig
from snn_core.profiling import KERNEL_LOOP_PHASES, PhaseTimer, format_layer_profile, format_profile, layer_report
from snn_core.training import Trainer

REPO = Path(snn_core.__file__).resolve().parent.parent


def _config(**kw):
    base = dict(max_train=240, hidden=[32], epochs=2, batch_size=60, t_iter=2, quiet=True, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_disabled_timer_measures_nothing():
    timer = PhaseTimer(enabled=False)
    with timer("forward"):
        pass
    assert timer.seconds == {} and timer.calls == {}


def test_phases_nest_and_a_failing_phase_is_still_charged(monkeypatch):
    clock = iter([0.0, 1.0, 3.0, 6.0, 10.0, 15.0])
    monkeypatch.setattr("snn_core.profiling.time.perf_counter", lambda: next(clock))
    timer = PhaseTimer()
    with timer("outer"):          # 0 .. 6
        with timer("inner"):      # 1 .. 3
            pass
    with pytest.raises(KeyError):
        with timer("failing"):    # 10 .. 15, then the error goes on
            raise KeyError("x")
    assert timer.seconds == {"inner": 2.0, "outer": 6.0, "failing": 5.0}
    assert timer.calls == {"inner": 1, "outer": 1, "failing": 1}


def _timer_with(entries):
    """A PhaseTimer holding known (phase, seconds, calls) entries, in order."""
    timer = PhaseTimer()
    for name, seconds, calls in entries:
        timer.add(name, seconds, calls=calls)
    return timer


def test_report_arithmetic_from_known_seconds():
    timer = _timer_with([("forward", 2.0, 10), ("backward", 4.0, 10), ("encode", 1.0, 10), ("loss", 0.5, 10),
                         ("optimizer", 0.5, 10), ("validation", 1.0, 2), ("checkpoints", 1.0, 2)])
    r = timer.as_dict(samples=800)
    assert r["kernel_loop_seconds"] == pytest.approx(8.0)
    assert r["total_seconds"] == pytest.approx(10.0)
    assert r["kernel_loop_samples_per_s"] == pytest.approx(100.0)
    assert r["whole_run_samples_per_s"] == pytest.approx(80.0)
    assert r["overhead"] == pytest.approx(0.25)
    assert list(r["phases"])[0] == "backward"  # largest first
    assert r["phases"]["validation"]["share"] == pytest.approx(0.1)
    text = format_profile(r)
    assert "overhead 25.0%" in text and "*backward" in text and " validation" in text


def test_layer_report_groups_forward_and_backward_per_layer():
    timer = _timer_with([("fc1 forward", 0.2, 10), ("lif1 forward", 0.1, 10), ("lif1 backward", 0.3, 10),
                         ("fc1 backward", 0.4, 10)])
    rows = layer_report(timer)
    assert [r["layer"] for r in rows] == ["fc1", "lif1"]  # the order the layers first ran
    assert rows[0]["forward_ms"] == pytest.approx(20.0) and rows[0]["backward_ms"] == pytest.approx(40.0)
    assert rows[0]["share"] == pytest.approx(0.6) and rows[1]["share"] == pytest.approx(0.4)
    text = format_layer_profile(timer)
    assert "fc1" in text and "60.0%" in text
    assert layer_report(PhaseTimer()) == [] and format_layer_profile(PhaseTimer()) == ""


def test_network_timer_charges_each_top_level_layer():
    from snn_core.network import mlp

    net = mlp([6, 5, 3], density=1.0, seed=0)
    x = np.ones((2, 4, 6), np.float32)
    plain = net.forward(x)
    timer = PhaseTimer()
    timed = net.forward(x, timer=timer)
    np.testing.assert_array_equal(plain, timed)
    net.backward(np.ones_like(timed), timer=timer)
    assert set(timer.calls) == {f"{m.name} {d}" for m in net.layers for d in ("forward", "backward")}


def test_synchronize_is_called_at_the_end_of_every_phase():
    calls = []
    timer = PhaseTimer(synchronize=lambda: calls.append(1))
    for name in ("a", "b", "a"):
        with timer(name):
            pass
    assert len(calls) == 3 and timer.calls == {"a": 2, "b": 1}


def test_profiled_fit_counts_every_phase_and_changes_no_result():
    plain = Trainer(_config())
    plain.fit(checkpoint_dir=False)
    profiled = Trainer(_config(), profile=True)
    profiled.fit(checkpoint_dir=False)
    for p, q in zip(plain.network.parameters(), profiled.network.parameters()):
        np.testing.assert_array_equal(p.value, q.value)
    calls = profiled.profiler.calls
    iterations = profiled.iteration
    for phase in (*KERNEL_LOOP_PHASES, "finite check", "bookkeeping"):
        assert calls[phase] == iterations, phase
    assert calls["rewiring"] == 2 * iterations  # prepare before, maybe_rewire after every step
    assert calls["validation"] == calls["checkpoints"] == calls["other"] == 2  # once per epoch
    assert plain.profiler.calls == {} and plain.layer_profiler.calls == {}  # off by default
    names = [layer.name for layer in profiled.network.layers]
    assert set(profiled.layer_profiler.calls) == {f"{n} {d}" for n in names for d in ("forward", "backward")}
    assert set(profiled.layer_profiler.calls.values()) == {iterations}
    # the layers' time lies inside the forward and backward phases
    assert profiled.layer_profiler.total() <= profiled.profiler.total(("forward", "backward"))
    r = profiled.profiler.as_dict(samples=len(profiled.x_train) * 2)
    assert r["total_seconds"] >= r["kernel_loop_seconds"] > 0


def test_cli_train_profile_prints_where_the_time_went(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="Agg")
    env.pop("SNN_CORE_DATA", None)
    env.pop("SNN_CORE_PARALLEL_MIN_NS", None)  # the threshold of the layer, checked below
    proc = subprocess.run([sys.executable, "-m", "snn_core", "train", "--profile", "--max-train", "200",
                           "--hidden", "32", "--epochs", "1", "--quiet", "--out-dir", str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "where the time went (1 epochs, device cpu)" in proc.stdout
    from snn_core.kernels import cpu

    layer = cpu.threading_layer()  # the same layer and threshold the child process resolved
    assert f"({layer} layer" in proc.stdout
    assert f"a kernel runs in parallel above {cpu.LAYER_MIN_NS[layer] / 1e3:g} us" in proc.stdout
    for phase in ("*forward", "*backward", " validation", " checkpoints"):
        assert phase in proc.stdout, phase
    assert "overhead" in proc.stdout
    assert "fwd ms" in proc.stdout and " lif1 " in proc.stdout  # the per-layer table
