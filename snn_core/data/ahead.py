"""Drawing the next batch's spikes on a second core while the current batch trains.

At density 0.01 the 784-800-10 MLP spends about a fifth of a training step
in the Bernoulli draws and much of the rest in serial work (Python, small
kernels) that leaves the second core idle. :class:`EncodeAhead` draws batch
i + 1 on a background thread during batch i's forward, loss, backward and
optimizer step, so the step only waits for whatever is left of the draws.

Three rules keep it exact and out of the way:

* **Same bits.** The draws depend only on (seed, feature, step, sample), so
  the spikes are those of ``encode(x, T, seed=seed, features=...)`` on the
  calling thread. The seed must be an int: a Generator would be advanced in
  another order.
* **The rows needed when the batch is taken.** A batch is submitted with
  the input features the network reads at that moment; a rewiring before
  it is taken may make the network read others. :meth:`EncodeAhead.result`
  draws those rows then, with the same seed: the same bits as if they had
  been drawn with the rest (``features`` never changes the drawn rows).
* **Never in a parallel region's way.** The background thread draws with
  the serial kernel (``parallel=False``: no second parallel region, which
  Numba's work-queue layer does not allow and which would ask for more
  threads than cores) at the lowest scheduling priority (Linux
  ``SCHED_IDLE``): it runs only on a core that nothing else wants. At normal
  priority it took cores from the training step's parallel kernels, whose
  regions wait for their slowest thread: the 0.01 step ran 15-17% slower
  instead of 11-12% faster (docs/benchmarks.md, "Encoding ahead").
* **Cheap to hand over.** A step at density 0.01 takes well under a
  millisecond, so the handover itself shows: one thread fed by two queues
  (no executor, no futures), and the network's mask, read-only and the same
  object until it changes, is neither copied at submit nor compared at
  result. The three took less than half as long as with an executor and
  copies (docs/benchmarks.md, "The small step").
"""

from __future__ import annotations

import numbers
import os
import queue
import threading

import numpy as np

from .encoders import SPIKE_DTYPES

__all__ = ["EncodeAhead"]

_MASK_DTYPES = (np.dtype(bool), np.dtype(np.uint8))


def _lowest_priority():
    """Let the calling thread run only where no other thread wants the core (Linux ``SCHED_IDLE``)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # pid 0: this thread
    except (AttributeError, OSError):  # not Linux, or not permitted: normal priority, still correct
        pass


def _serve(jobs, done):
    """The background thread: run each job ``(encode, args, kwargs)`` of ``jobs``, put ``(spikes, error)`` in ``done``.

    Two queues and one thread instead of a ThreadPoolExecutor: a submit and
    its result cost ~3 us instead of ~10 (futures, their locks and
    conditions) on the Emerald Rapids guest, where a step at density 0.01
    takes 0.6-1 ms.
    """
    _lowest_priority()
    while True:
        job = jobs.get()
        if job is None:
            return
        encode, args, kwargs = job
        try:
            done.put((encode(*args, **kwargs), None))
        except BaseException as e:  # noqa: BLE001 - handed to the caller of result
            done.put((None, e))


class EncodeAhead:
    """Draws one batch ahead: :meth:`submit` the next batch, take the current one's spikes with :meth:`result`.

    Parameters
    ----------
    encode : callable
        A seeded spike encoder called as ``encode(x, T, seed=seed, out=buf,
        features=mask, dtype=dtype, parallel=False)``:
        :func:`~snn_core.data.bernoulli_encode`, :func:`~snn_core.data.poisson_encode`
        or a ``functools.partial`` of one.
    T : int
        Number of time steps.
    dtype : uint8 or float32
        The spikes' dtype (uint8: a quarter of the memory, see the encoders).

    The spikes returned by :meth:`result` are a (T, batch, features) view
    of one of two reused (features, T, batch) buffers per batch shape: they
    stay valid until the second :meth:`submit` after it (the batch after
    next is drawn into the same buffer). A training loop::

        ahead = EncodeAhead(bernoulli_encode, T)
        ahead.submit(x[0], seed=0, features=net.input_rows_needed())
        for i in range(n):
            needed = net.input_rows_needed()
            spikes = ahead.result(features=needed)
            if i + 1 < n:
                ahead.submit(x[i + 1], seed=i + 1, features=needed)
            ...  # forward, backward, optimizer step (rewiring) on spikes
        ahead.close()
    """

    def __init__(self, encode, T, dtype=np.uint8):
        if not callable(encode):
            raise TypeError(f"encode must be a spike encoder (callable), got {type(encode).__name__}")
        if np.dtype(dtype) not in SPIKE_DTYPES:
            raise ValueError(f"EncodeAhead: dtype must be uint8 or float32 (spikes), got {dtype!r}")
        self.encode, self.T, self.dtype = encode, T, np.dtype(dtype)
        self._thread = self._jobs = self._done = self._pid = None
        self._buffers = {}  # (features, T, batch) -> [two buffers, the next one to draw into]
        self._pending = None  # (x, seed, features drawn: the caller's read-only mask or a private copy, buffer)

    @property
    def pending(self):
        """Whether a submitted batch waits to be taken with :meth:`result`."""
        return self._pending is not None

    def _queue(self):
        # a forked child inherits the queues but not the thread: it would wait forever, so it makes its own
        if self._thread is None or self._pid != os.getpid():
            self._jobs, self._done = queue.SimpleQueue(), queue.SimpleQueue()
            self._thread = threading.Thread(target=_serve, args=(self._jobs, self._done), name="snn_core-encode",
                                            daemon=True)
            self._thread.start()
            self._pid = os.getpid()
        return self._jobs

    def _buffer(self, shape):
        ring = self._buffers.get(shape)
        if ring is None:  # zeros: rows that are never drawn hold spikes, never garbage
            ring = self._buffers[shape] = [[np.zeros(shape, self.dtype), np.zeros(shape, self.dtype)], 0]
        bufs, k = ring
        ring[1] = 1 - k
        return bufs[k]

    def submit(self, x, seed, features=None):
        """Start drawing the spikes of intensities ``x`` (batch, features) on the background thread.

        ``seed``: an int (same int, same spikes). ``features``: a bool/uint8
        mask of the input features to draw (e.g. ``Network.input_rows_needed()``),
        None for all. A writable mask is copied (the caller may change it);
        a read-only one, which is what ``Network.input_rows_needed`` returns,
        is kept as it is. Errors in x (NaN, outside [0, 1]) are raised by
        :meth:`result`.
        """
        if self._pending is not None:
            raise RuntimeError("EncodeAhead.submit: the submitted batch was not taken yet (call result first)")
        if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
            raise TypeError(f"EncodeAhead.submit: seed must be an int (rows drawn later use it again), "
                            f"got {type(seed).__name__}")
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"EncodeAhead.submit: x must be 2-D (batch, features), got shape {x.shape}")
        drawn = None
        if features is not None:
            if isinstance(features, np.ndarray) and not features.flags.writeable and features.dtype in _MASK_DTYPES:
                drawn = features
            else:
                drawn = np.array(features, dtype=bool)  # a copy: the caller's may change
            if drawn.shape != (x.shape[1],):
                raise ValueError(f"EncodeAhead.submit: features must be a mask of shape ({x.shape[1]},), one "
                                 f"entry per input feature, got {drawn.shape}")
        buf = self._buffer((x.shape[1], self.T, x.shape[0]))
        seed = int(seed)
        self._queue().put((self.encode, (x, self.T),
                           dict(seed=seed, out=buf, features=drawn, dtype=self.dtype, parallel=False)))
        self._pending = (x, seed, drawn, buf)

    def result(self, features=None):
        """The submitted batch's spikes, (T, batch, features); waits for the draws to finish.

        ``features``: the input features needed now (None: all). Those the
        submit's mask left out are drawn here, on this thread, with the same
        seed: the same bits as drawn together with the others. (The same
        read-only mask as at submit: nothing is left out, nothing compared.)
        """
        if self._pending is None:
            raise RuntimeError("EncodeAhead.result: no batch was submitted")
        x, seed, drawn, buf = self._pending
        self._pending = None
        if self._pid != os.getpid():  # submitted by the parent of this forked child: its thread is not here
            spikes = self.encode(x, self.T, seed=seed, out=buf, features=drawn, dtype=self.dtype)
        else:
            spikes, error = self._done.get()
            if error is not None:  # the encoder's own error
                raise error
        # the caller never holds a private copy: only its own read-only mask can be the very object drawn
        if drawn is not None and features is not drawn:
            needed = None if features is None else np.asarray(features, dtype=bool)
            if needed is not None and needed.shape != drawn.shape:
                raise ValueError(f"EncodeAhead.result: features must be a mask of shape {drawn.shape}, one entry "
                                 f"per input feature, got {needed.shape}")
            drawn = drawn.astype(bool, copy=False)
            missing = ~drawn if needed is None else needed & ~drawn
            if missing.any():
                self.encode(x, self.T, seed=seed, out=buf, features=missing, dtype=self.dtype)
        return spikes

    def cancel(self):
        """Drop a submitted batch that will not be taken (waits for its draws, so its buffer is free)."""
        if self._pending is not None:
            self._pending = None
            if self._pid == os.getpid():
                self._done.get()  # an error here concerns nobody: nobody takes this batch

    def close(self):
        """Cancel what is pending and stop the background thread (a later :meth:`submit` starts a new one)."""
        self.cancel()
        if self._thread is not None and self._pid == os.getpid():
            self._jobs.put(None)
            self._thread.join()
        self._thread = None
