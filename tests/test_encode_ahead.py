"""EncodeAhead: spikes drawn on a background thread are the bits drawn on the calling thread."""
from __future__ import annotations

import functools
import os
import threading

import numpy as np
import pytest

from snn_core.data import EncodeAhead, bernoulli_encode, poisson_encode


def _batches(n=4, B=7, F=45, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random((B, F)).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("encode", [bernoulli_encode, functools.partial(poisson_encode, max_rate=400.0, dt=1e-3)])
def test_same_spikes_as_drawing_on_the_calling_thread(encode, dtype):
    xs, T = _batches(), 6
    ahead = EncodeAhead(encode, T, dtype=dtype)
    ahead.submit(xs[0], seed=10)
    for i in range(len(xs)):
        got = ahead.result()
        if i + 1 < len(xs):
            ahead.submit(xs[i + 1], seed=10 + i + 1)
        want = encode(xs[i], T, seed=10 + i, dtype=dtype)
        assert got.dtype == dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    ahead.close()


def test_rows_needed_later_are_drawn_with_the_same_bits():
    x, T, F = _batches(1)[0], 5, 45
    rng = np.random.default_rng(3)
    first = rng.random(F) < 0.4
    later = first.copy()
    later[~first] = rng.random(int((~first).sum())) < 0.5  # a rewiring made the network read more inputs
    later[np.flatnonzero(first)[:3]] = False  # and some no longer
    assert (later & ~first).any()
    ahead = EncodeAhead(bernoulli_encode, T)
    ahead.submit(x, seed=99, features=first)
    got = ahead.result(features=later)
    want = bernoulli_encode(x, T, seed=99, dtype=np.uint8)
    read = first | later
    np.testing.assert_array_equal(got[:, :, read], want[:, :, read])
    # the buffer was zeros: what was never drawn is still silent
    assert not got[:, :, ~read].any()
    # features=None at result: every row is drawn by then
    ahead.submit(x, seed=99, features=first)
    ahead.result()  # the other ring buffer
    ahead.submit(x, seed=99, features=first)
    np.testing.assert_array_equal(ahead.result(features=None), want)
    ahead.close()


def test_a_read_only_mask_is_kept_and_a_new_one_compared():
    """The network's mask (read-only, the same object until it changes) is neither copied nor compared; another
    mask at result, or a writable one at submit, is compared: rows missing then are drawn with the same bits."""
    x, T, F = _batches(1)[0], 5, 45
    calls = []

    def spy(x, T, **kw):
        calls.append(kw["features"])
        return bernoulli_encode(x, T, **kw)

    rng = np.random.default_rng(4)
    first = (rng.random(F) < 0.4).astype(np.uint8)
    first.flags.writeable = False
    ahead = EncodeAhead(spy, T)
    ahead.submit(x, seed=7, features=first)
    ahead.result(features=first)
    assert len(calls) == 1 and calls[0] is first  # kept as it is, nothing drawn late
    later = first | (rng.random(F) < 0.5).astype(np.uint8)  # a rewiring: a new mask object reads more inputs
    later.flags.writeable = False
    ahead.submit(x, seed=7, features=first)
    got = ahead.result(features=later)
    assert len(calls) == 3 and np.array_equal(calls[2], later.astype(bool) & ~first.astype(bool))
    want = bernoulli_encode(x, T, seed=7, dtype=np.uint8)
    np.testing.assert_array_equal(got[:, :, later == 1], want[:, :, later == 1])
    writable = first.copy()
    ahead.submit(x, seed=8, features=writable)
    writable[:] = 1  # the caller changes its mask: the submitted batch was drawn from a copy
    got = ahead.result(features=writable)  # compared: every row not drawn at submit is drawn now
    assert calls[3] is not writable and np.array_equal(calls[3], first.astype(bool))
    np.testing.assert_array_equal(got, bernoulli_encode(x, T, seed=8, dtype=np.uint8))
    ahead.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork only")
def test_a_forked_child_draws_the_pending_batch_itself():
    """A child forked while a batch was pending has no background thread: result draws the batch there, with the
    same bits, and the next submit starts the child's own thread; the parent's batch is untouched."""
    x, T = _batches(1)[0], 4
    want = bernoulli_encode(x, T, seed=3, dtype=np.uint8)
    ahead = EncodeAhead(bernoulli_encode, T)
    ahead.submit(x, seed=3)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report 1 on success, never return into pytest
        ok = 0
        try:
            got = ahead.result().copy()
            ahead.submit(x, seed=3)
            ok = int(np.array_equal(got, want) and np.array_equal(ahead.result(), want))
            ahead.close()
        finally:
            os.write(w, bytes([ok]))
            os._exit(0)
    os.close(w)
    import select
    import signal

    if select.select([r], [], [], 120)[0]:  # a child waiting for a thread it does not have would never answer
        status = os.read(r, 1)
    else:
        status = b"timed out"
        os.kill(pid, signal.SIGKILL)
    os.close(r)
    os.waitpid(pid, 0)
    np.testing.assert_array_equal(ahead.result(), want)
    ahead.close()
    assert status == b"\x01"


def test_two_buffers_alternate_so_the_batch_in_use_is_not_overwritten():
    xs, T = _batches(3), 4
    ahead = EncodeAhead(bernoulli_encode, T)
    ahead.submit(xs[0], seed=1)
    a = ahead.result()
    ahead.submit(xs[1], seed=2)
    kept = a.copy()
    b = ahead.result()
    assert b.base is not a.base
    np.testing.assert_array_equal(a, kept)  # drawing batch 1 left batch 0's spikes alone
    ahead.submit(xs[2], seed=3)
    assert ahead.result().base is a.base  # the batch after next reuses the first buffer
    ahead.close()


def test_draws_run_on_another_thread_with_the_serial_kernel():
    seen = []

    def spy(x, T, **kw):
        seen.append((threading.current_thread() is threading.main_thread(), kw["parallel"]))
        return bernoulli_encode(x, T, **kw)

    ahead = EncodeAhead(spy, 3)
    ahead.submit(_batches(1)[0], seed=5)
    ahead.result()
    ahead.close()
    assert seen == [(False, False)]


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling policies only")
def test_background_thread_runs_at_idle_priority():
    policies = []

    def spy(x, T, **kw):
        policies.append(os.sched_getscheduler(0))
        return bernoulli_encode(x, T, **kw)

    ahead = EncodeAhead(spy, 3)
    ahead.submit(_batches(1)[0], seed=5)
    ahead.result()
    ahead.close()
    assert policies == [os.SCHED_IDLE]
    assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the caller's own priority is untouched


def test_bad_use_is_a_clear_error_and_encoder_errors_reach_result():
    x = _batches(1)[0]
    ahead = EncodeAhead(bernoulli_encode, 4)
    with pytest.raises(RuntimeError, match="no batch was submitted"):
        ahead.result()
    with pytest.raises(TypeError, match="seed must be an int"):
        ahead.submit(x, seed=np.random.default_rng(0))
    with pytest.raises(ValueError, match="features must be a mask of shape"):
        ahead.submit(x, seed=0, features=np.ones(3, bool))
    with pytest.raises(ValueError, match="2-D"):
        ahead.submit(x[0], seed=0)
    ahead.submit(x, seed=0)
    with pytest.raises(RuntimeError, match="not taken yet"):
        ahead.submit(x, seed=1)
    ahead.result()
    bad = x.copy()
    bad[0, 0] = np.nan
    ahead.submit(bad, seed=0)
    with pytest.raises(ValueError, match="NaN"):
        ahead.result()
    ahead.submit(bad, seed=0)
    ahead.cancel()  # dropped: its error concerns nobody
    assert not ahead.pending
    ahead.close()
    with pytest.raises(TypeError, match="callable"):
        EncodeAhead("bernoulli", 4)
    with pytest.raises(ValueError, match="dtype must be uint8 or float32"):
        EncodeAhead(bernoulli_encode, 4, dtype=np.float64)
    ahead = EncodeAhead(bernoulli_encode, 4)
    ahead.submit(x, seed=0, features=np.ones(x.shape[1], bool))
    with pytest.raises(ValueError, match="features must be a mask of shape"):
        ahead.result(features=np.ones(3, bool))
    ahead.close()


def test_parallel_flag_gives_the_same_bits_and_is_checked():
    x = _batches(1, B=30, F=200)[0]
    want = bernoulli_encode(x, 8, seed=4, dtype=np.uint8)
    for parallel in (True, False):
        np.testing.assert_array_equal(bernoulli_encode(x, 8, seed=4, dtype=np.uint8, parallel=parallel), want)
        np.testing.assert_array_equal(poisson_encode(x, 8, seed=4, dtype=np.uint8, parallel=parallel), want)
    with pytest.raises(ValueError, match="parallel must be None, True or False"):
        bernoulli_encode(x, 8, seed=4, parallel="yes")


# ---------------------------------------------------------------------------
# the Trainer draws each batch ahead: the same training as drawing it in the step
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [
    dict(density=0.02),  # the network reads some inputs only; rewiring changes which
    dict(density=0.02, augment="shift", shift_pixels=2, batch_size=70),  # augmented; a smaller last batch
    dict(density=0.05, encoder="poisson", grow="gradient"),  # gradient growth: every input read at its events
])
def test_trainer_drawing_ahead_trains_the_same_bits(tmp_path, kw):
    from test_training import assert_trainers_identical, small_config

    from snn_core.training import Trainer

    a = Trainer(small_config(tmp_path / "a", **kw))
    assert a.encode_ahead
    masks = []
    taken = a._take_ahead

    def spy(order, start):
        masks.append(a.network.input_rows_needed())
        return taken(order, start)

    a._take_ahead = spy
    a.fit()
    b = Trainer(small_config(tmp_path / "b", **kw))
    b.encode_ahead = False
    b.fit()
    assert a.rewirer.n_events > 0 and len(masks) == a.iteration
    assert any(m is not None for m in masks)
    assert_trainers_identical(a, b)


class _StopAfter:
    """A progress bar that interrupts the epoch after ``n`` iterations (as Ctrl-C would)."""

    def __init__(self, n):
        self.n = n

    def update(self, k):
        self.n -= k
        if self.n <= 0:
            raise KeyboardInterrupt

    def set_postfix(self, **kw):
        pass


def test_an_interrupted_epoch_leaves_no_stale_batch(tmp_path):
    from test_training import assert_state_identical, small_config

    from snn_core.training import Trainer

    runs = []
    for ahead in (True, False):
        tr = Trainer(small_config(tmp_path / str(ahead), density=0.02))
        tr.encode_ahead = ahead
        with pytest.raises(KeyboardInterrupt):
            tr.train_epoch(progress=_StopAfter(3))
        assert tr._ahead is None or tr._ahead.pending == ahead  # the 4th batch was drawn ahead, never taken
        tr.epoch += 1  # the next epoch's order: a batch drawn for the old one would be wrong now
        tr.train_epoch()
        runs.append(tr)
    assert runs[0].iteration == runs[1].iteration
    assert_state_identical(runs[0].network_state(), runs[1].network_state())
