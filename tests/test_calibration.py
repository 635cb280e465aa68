"""The serial/parallel threshold: how it is derived from measurements, stored, reused and overridden.

The measurement itself is replaced by given timings (no test here depends on
how fast this machine is); that the choice it makes never changes a result
is tests/test_determinism.py's job.
"""
import json
import math

import pytest

from snn_core.kernels import calibration as cal
from snn_core.kernels import cpu

MS = 1e-3


def rows(*triples):
    """(estimated ns, serial s, parallel s) rows as ``measure`` returns them."""
    return [tuple(map(float, t)) for t in triples]


def test_threshold_is_the_smallest_size_from_which_parallel_always_pays():
    r = rows((1e5, 0.1 * MS, 0.2 * MS), (2e5, 0.2 * MS, 0.15 * MS), (4e5, 0.4 * MS, 0.25 * MS), (8e5, 0.8 * MS, 0.4 * MS))
    assert cal.threshold_from(r) == 2e5  # 1.33x at 2e5 is enough (MIN_SPEEDUP 1.25)
    r2 = rows((1e5, 0.1 * MS, 0.2 * MS), (2e5, 0.2 * MS, 0.19 * MS), (4e5, 0.4 * MS, 0.25 * MS), (8e5, 0.8 * MS, 0.4 * MS))
    assert cal.threshold_from(r2) == 4e5  # 1.05x at 2e5 is not
    # a size in between where parallel did not pay: the threshold stays above it
    r3 = rows((1e5, 0.1 * MS, 0.05 * MS), (2e5, 0.2 * MS, 0.19 * MS), (4e5, 0.4 * MS, 0.25 * MS))
    assert cal.threshold_from(r3) == 4e5
    assert cal.threshold_from(rows((1e5, 0.1 * MS, 0.2 * MS), (3e6, 3 * MS, 2.9 * MS))) == cal.DEFAULT_NS
    # never above the default, even when only the largest size pays
    assert cal.threshold_from(rows((1e7, 10 * MS, 5 * MS))) == cal.DEFAULT_NS


def _forbid(*_):
    raise AssertionError("measured although it should not have")


def test_stored_result_is_reused_per_machine_and_thread_count(tmp_path, monkeypatch):
    monkeypatch.delenv(cal.ENV, raising=False)
    path = tmp_path / "parallel.json"
    path.write_text(json.dumps({cal.machine_key(2): {"threshold_ns": 250000.0}}))
    monkeypatch.setattr(cal, "measure", _forbid)
    assert cal.parallel_threshold_ns(None, None, None, (), threads=2, path=path) == 250000.0
    with pytest.raises(AssertionError, match="measured"):  # another thread count is another entry
        cal.parallel_threshold_ns(None, None, None, (), threads=4, path=path)


def test_a_paying_measurement_is_stored_and_a_non_paying_one_is_not(tmp_path, monkeypatch):
    monkeypatch.delenv(cal.ENV, raising=False)
    path = tmp_path / "sub" / "parallel.json"
    monkeypatch.setattr(cal, "measure", lambda *a: rows((1e5, 0.1 * MS, 0.2 * MS), (3e6, 3 * MS, 3 * MS)))
    assert cal.parallel_threshold_ns(None, None, None, (), threads=2, path=path) == cal.DEFAULT_NS
    assert not path.exists(), "a 'never pays' result must be measured again, not stored"
    monkeypatch.setattr(cal, "measure", lambda *a: rows((1e5, 0.1 * MS, 0.2 * MS), (4e5, 0.4 * MS, 0.2 * MS),
                                                        (3e6, 3 * MS, 1.5 * MS)))
    assert cal.parallel_threshold_ns(None, None, None, (), threads=2, path=path) == 4e5
    entry = json.loads(path.read_text())[cal.machine_key(2)]
    assert entry["threshold_ns"] == 4e5 and len(entry["measured"]) == 3
    monkeypatch.setattr(cal, "measure", _forbid)
    assert cal.parallel_threshold_ns(None, None, None, (), threads=2, path=path) == 4e5


def test_one_thread_never_runs_parallel_and_the_environment_overrides(tmp_path, monkeypatch):
    monkeypatch.delenv(cal.ENV, raising=False)
    monkeypatch.setattr(cal, "measure", _forbid)
    assert cal.parallel_threshold_ns(None, None, None, (), threads=1, path=tmp_path / "p.json") == math.inf
    monkeypatch.setenv(cal.ENV, "125000")
    assert cal.parallel_threshold_ns(None, None, None, (), threads=2, path=tmp_path / "p.json") == 125000.0
    monkeypatch.setenv(cal.ENV, "fast")
    with pytest.raises(ValueError, match="SNN_CORE_PARALLEL_MIN_NS: expected a number of nanoseconds, got 'fast'"):
        cal.parallel_threshold_ns(None, None, None, (), threads=2)


def test_a_corrupt_or_unwritable_store_costs_a_measurement_not_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv(cal.ENV, raising=False)
    path = tmp_path / "parallel.json"
    path.write_text("{not json")
    monkeypatch.setattr(cal, "measure", lambda *a: rows((2e5, 0.2 * MS, 0.1 * MS), (3e6, 3 * MS, 1.5 * MS)))
    assert cal.parallel_threshold_ns(None, None, None, (), threads=2, path=path) == 2e5
    assert json.loads(path.read_text())[cal.machine_key(2)]["threshold_ns"] == 2e5
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cal.parallel_threshold_ns(None, None, None, (), threads=2, path=blocker / "parallel.json") == 2e5


def test_the_kernels_use_the_fixed_value_or_the_measured_one(monkeypatch):
    monkeypatch.setattr(cpu, "PARALLEL_MIN_NS", 123.0)
    assert cpu.min_parallel_ns() == 123.0
    monkeypatch.setattr(cpu, "PARALLEL_MIN_NS", None)
    monkeypatch.setattr(cpu, "_CALIBRATED", {})
    seen = []

    def fake(ser, par, make_args, sizes, threads):
        args, est = make_args(sizes[0])
        ser(*args)  # the calibration kernel runs on the arguments it is given
        seen.append((ser, par, sizes, threads, est))
        return 5e5

    monkeypatch.setattr(cpu, "parallel_threshold_ns", fake)
    assert cpu.min_parallel_ns() == 5e5 and cpu.min_parallel_ns() == 5e5
    assert len(seen) == 1, "measured once per thread count and process"
    ser, par, sizes, threads, est = seen[0]
    assert (ser, par) == (cpu._csr_forward_ser, cpu._csr_forward_par) and threads >= 1
    assert est == (sizes[0] * 40 + sizes[0]) * 800 * cpu._NS_STREAM
    assert cpu._parallel(6e5) and not cpu._parallel(4e5)
