"""Numba kernels for the hot loops (CPU).

Layout convention, shared by every kernel here and by
:mod:`snn_core.kernels.reference`: activations are **feature-major**,
``(features, T, batch)`` C-contiguous, viewed as ``(features, N)`` with
``N = T * batch`` where a product does not care about time. A connection then
touches one contiguous row of ``N`` values, which the compiler vectorises;
the public API still indexes arrays as ``(T, batch, features)`` through
transposed views of these buffers (see :mod:`snn_core.layers`).

CSR matrices are passed as their three arrays ``indptr, indices`` (int32) and
``data`` (the float dtype of the activations). Scalars are cast to that dtype
by the callers so that float32 stays float32 (no silent upcast, no second
compile). Every kernel has a plain NumPy twin in ``reference.py``; the tests
compare them.

Serial or parallel. Starting a ``parallel=True`` region costs ~15-45 us
with the OpenMP layer and passive waiting (the default here, see the
comment at the imports) and 30-120 us with the work-queue layer, which Numba falls
back to without an OpenMP runtime. Every public kernel below is therefore a
thin Python function that estimates the work of the call and runs either
the ``prange`` version (``_<name>_par``) or the serial one (``_<name>_ser``)
of the same row function; the results are bit-identical (no kernel uses
fastmath, see "Determinism" below). Below ``PARALLEL_MIN_NS`` of estimated
serial work (50 us with OpenMP, 3 ms with the work-queue layer:
:data:`LAYER_MIN_NS`) the serial version runs, above it the parallel one: a
choice fixed by the shapes and the layer (and both versions give the same
bits), so runs are bit-reproducible. ``ADAPTIVE_PARALLEL`` (off by default)
instead picks the faster of the two by timing every call, see
:func:`pick_version`.

Spiking inputs. When a synaptic layer's input holds only 0 and 1 (spikes),
:func:`spike_pack` condenses it once per forward pass into ``X8`` (uint8,
4x smaller than float32), optionally 16-column bit words ``Xb``, a
per-input spike count ``cnt`` and, for the inputs that spike rarely
(``cnt < thr``), the list of their active columns ``cols[j, :cnt[j]]``.
The forward product and the weight gradient then skip silent inputs
altogether, walk the active-column list of rarely spiking inputs (cost
proportional to spikes) and stream the spike row of the others. With
``Xb``, one bit word is one vector mask and 16 columns of a connection cost
one masked vector add (LLVM IR intrinsics): the forward holds eight 16-column
vectors of an output row in registers while it walks all of the row's
connections (:func:`_make_madd_block`), the weight gradient loads each
16 columns of an output-gradient row once for four connections
(:func:`_dot16x4`). Without ``Xb``, uint8 rows with compare-and-select,
four connections per pass (:func:`csr_forward_spikes`,
:func:`csr_grad_spikes`). The same pack serves forward and backward.

Other measured choices: ``error_model="numpy"`` (Numba's default Python
error model puts a zero-division branch on every float division, which
stopped the Adam loop and the surrogate loops from vectorising); LIF loops
ordered neuron, step, sample with the per-sample carry in the output row so
that the sample loop vectorises; the LIF backward skips neurons whose output
gradient is zero at every step; row functions inlined into their loops and
given borrowed views of the arrays (:func:`borrow`), because an ordinary call
paid an atomic reference count per array per row (200-300 ns a row, more
than the work of a row at low density); uint8 row masks with which the
backward kernels skip gradient rows known to be zero (:func:`lif_backward`).

Parallel kernels write disjoint outputs per ``prange`` index (a row or a
neuron), never a shared accumulator, so they are race-free.

Determinism. No kernel is compiled with ``fastmath``. With it (``reassoc``
in particular) LLVM may reorder float sums however it likes, and it did so
differently in different compiled copies of the same function: Numba links a
callee (e.g. ``_dot4`` into ``_csr_grad_spikes_ser``) as a ``linkonce_odr``
copy that is optimised again inside the caller's module, and in the process
that compiles the kernels the JIT resolved the call to the callee's own,
separately optimised library, while a process that loads the caller from the
cache runs the caller's copy. The two copies summed in different orders, so
the first (compiling) run differed from cache-loaded runs in the last bits
of the weight gradient. Without fastmath every copy, the serial and the
parallel build, and every x86-64 CPU (AVX2 or AVX-512, Intel or AMD) compute
the float operations in the order the source states, so the results depend
on the inputs only. Vector speed is kept where it matters by writing the
vector width into the code (the bit-mask intrinsics, elementwise loops) rather
than letting the compiler reassociate.
"""
from __future__ import annotations

import os
import time

import numba
import numpy as np
from llvmlite import ir
from numba import prange
from numba.core import cgutils, ir_utils
from numba.core import types as nbtypes
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic, overload

# Threading layer: OpenMP first. A parallel region starts in ~15-45 us there
# (passive waiting) against 30-120 us with the work-queue layer (docs/benchmarks.md, "Both
# cores"), which is what lets every kernel of a training step above ~50 us
# use the second core. Its threads must not spin: with GNU OpenMP's default
# spin-waiting, two training processes on a 2-core machine ran 10x slower
# (each process's spinning thread took the core the other needed), so the
# waiting policy is passive unless the user set one. Without an OpenMP
# runtime Numba falls back to TBB, then to the work-queue layer (and the
# threshold follows, see parallel_min_ns). NUMBA_THREADING_LAYER and
# OMP_WAIT_POLICY in the environment still decide when set; libgomp reads
# the latter when Numba first loads it, after this import.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]
    numba.config.THREADING_LAYER = "default"
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

from ..surrogate import smooth_spike, surrogate_grad

# error_model="numpy": IEEE division (no ZeroDivisionError branch), which lets
# loops with a division vectorise (Adam 3x faster); no kernel divides by zero.
_jit = dict(cache=True, nogil=True, error_model="numpy")


@intrinsic
def borrow(typingctx, a):
    """``a`` without its reference-counting handle (meminfo): a borrowed view for the row loops.

    Every array passed to a row function costs an atomic increment and
    decrement of its reference count per call, even inlined: ~20 ns each on
    the Emerald Rapids guest, 200-300 ns per row for the 9-16 arrays a row
    takes, which was 0.2-0.3 ms per call of an 800-row serial kernel (more
    than many kernels' work at density 0.01). A view whose meminfo is null
    skips that count (Numba's ``NRT_incref`` returns at once on null), and
    with the row function inlined the count disappears altogether
    (docs/benchmarks.md, "Row-call overhead"). Safe only where the kernel's
    caller keeps ``a`` alive for the whole call and the view never leaves
    the kernel (not returned, not stored): how the ``_ser``/``_par``
    kernels below use it, one ``a = borrow(a)`` statement per array (Numba's
    alias analysis follows a plain assignment from ``borrow`` but not the
    unpacking of a tuple, see ``_borrow_aliases``). Not a kernel (a view of
    an array): no reference twin.
    """
    if not isinstance(a, nbtypes.Array):
        raise numba.TypingError(f"borrow takes an array, got {a}")

    def codegen(context, builder, sig, args):
        src = cgutils.create_struct_proxy(sig.args[0])(context, builder, value=args[0])
        view = cgutils.create_struct_proxy(sig.return_type)(context, builder)
        for field in ("parent", "nitems", "itemsize", "data", "shape", "strides"):
            setattr(view, field, getattr(src, field))
        view.meminfo = cgutils.get_null_value(view.meminfo.type)
        return view._getvalue()

    return a(a), codegen


def _borrow_aliases(lhs, args, alias_map, arg_aliases):
    """Numba alias-analysis hook: ``lhs = borrow(a)`` makes ``lhs`` an alias of ``a`` (and of the arguments ``a`` is)."""
    a = args[0].name
    if a in arg_aliases:
        arg_aliases.add(lhs)
    else:
        alias_map.setdefault(a, set()).add(lhs)
        alias_map.setdefault(lhs, set()).add(a)


# Tell Numba's alias analysis that a borrowed view *is* its argument. Without
# this, a parallel kernel's dead-code pass drops any store ``a[i] = v``
# indexed by the prange variable into a borrowed array that is not read again
# (it takes the view for a fresh local array): with Numba 0.68, ``cnt[j] = 0``
# in the prange body of a spike pack was never executed (caught by
# tests/test_forward_masks.py). The analysis sees through ``a = borrow(a)``
# but not through ``a, b = borrow(a), borrow(b)`` (a tuple is built and
# unpacked), hence one statement per array in every kernel.
ir_utils.alias_func_extensions[("borrow", __name__)] = _borrow_aliases


def _env_ns(name, default):
    """A non-negative number of nanoseconds from the environment variable ``name``, else ``default``."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= 0.0:
        raise ValueError(f"{name}: expected a number of nanoseconds >= 0, got {raw!r}")
    return value


#: Estimated serial run time (ns) from which a kernel runs in parallel, by
#: threading layer: a parallel region must save more than it costs to start
#: (OpenMP with passive waiting: ~15-45 us; the work-queue layer: 30-120 us,
#: and there, on the 2-core machines of docs/benchmarks.md, parallel calls
#: only paid off above ~3 ms of serial work). TBB is priced like OpenMP
#: (9-20 us measured) but not otherwise tuned.
LAYER_MIN_NS = {"omp": 50_000.0, "tbb": 50_000.0, "workqueue": 3_000_000.0}

#: The threshold in force: ``SNN_CORE_PARALLEL_MIN_NS`` from the environment
#: if set, else None until the first kernel call, which starts Numba's
#: threading layer and takes its entry of ``LAYER_MIN_NS``
#: (:func:`parallel_min_ns`). The choice depends only on shapes, nnz, spike
#: counts and the layer, and both builds of every kernel give the same bits
#: (tests/test_determinism.py), so it never changes a result.
PARALLEL_MIN_NS = _env_ns("SNN_CORE_PARALLEL_MIN_NS", None)

# Whether this process has started Numba's thread pool, and whether it is a
# child forked after its parent (or an ancestor) had. GNU OpenMP is not
# fork-safe: Numba terminates such a child when it starts a parallel region
# ("fork() called from a process already using GNU OpenMP"). Forked children
# (multiprocessing's default start method on Linux before Python 3.14)
# therefore run every kernel serially, with the same results; the fork hook
# sets the flag, so the kernels' hot path only reads it.
_pool_started = False
_forked_after_pool = False


def _after_fork_in_child():
    global _forked_after_pool
    _forked_after_pool = _forked_after_pool or _pool_started


if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


@numba.njit(parallel=True, cache=True, nogil=True)
def _start_threads(a):
    for i in prange(a.size):
        a[i] = i


def threading_layer():
    """The threading layer of the parallel kernels ('omp', 'tbb' or 'workqueue'), started if needed;
    None when Numba's JIT is disabled (``NUMBA_DISABLE_JIT=1``: no threads). Not a kernel: no twin."""
    global _pool_started
    if not _pool_started:
        _start_threads(np.zeros(2, np.int64))
        _pool_started = True
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel region has run: the JIT is disabled
        return None


def parallel_min_ns():
    """The serial/parallel threshold in ns (:data:`PARALLEL_MIN_NS`), resolved on first use (not a kernel: no twin)."""
    global PARALLEL_MIN_NS
    if PARALLEL_MIN_NS is None:
        PARALLEL_MIN_NS = LAYER_MIN_NS.get(threading_layer(), LAYER_MIN_NS["workqueue"])
    return PARALLEL_MIN_NS


# Serial costs per element (ns), measured on the 2-core AMD EPYC (Zen 4) of
# docs/benchmarks.md; only their order of magnitude matters. The LIF costs are
# those of populations too large for the caches (the conv job's 25,088 x 2 x
# 64 maps: 1.5 and 2.1 ns on the Emerald Rapids guest), where a second core
# adds memory bandwidth; with the work-queue layer's 3 ms threshold such a
# layer runs in parallel while the MLP's cache-sized ones (800 x 8 x 100:
# about 1 ms) stay serial, with OpenMP's 50 us both run in parallel.
_NS_LIF_FWD = 1.5      # one (neuron, step, sample) of the LIF/readout forward
_NS_LIF_BWD = 2.0      # one (neuron, step, sample) of the LIF/readout backward
_NS_STREAM = 0.06      # one float of a vectorised multiply-add over a row
_NS_EVENT = 0.65       # one scattered/gathered spike event
_NS_PACK = 0.3         # one float element of spike_pack (0.3 serial on the Emerald Rapids guest, MNIST input)
_NS_PACK_BYTES = 0.1   # one uint8 element, read 8 at a time: 0.06 serial there with the input in cache, more
                       # when another core just wrote it (the encoder drawing ahead); half the MNIST input
                       # (density 0.01) then packs serially, all of it in parallel
_NS_UPDATE = 0.6       # one optimizer element
# _NS_STREAM when the rows a kernel gathers (one per connection) come from an
# operand larger than L2 (half of 2 MiB): the conv job's fc1 reads 3.2 MB of
# pooled maps at 0.4 ns per multiply-add on the Emerald Rapids guest, so it
# runs in parallel
_NS_GATHER_FAR = 0.4
_L2_BYTES = 1 << 20


def _ns_stream(gathered):
    """Serial ns per multiply-add of a row kernel whose rows are gathered from the array ``gathered``."""
    return _NS_GATHER_FAR if gathered.nbytes > _L2_BYTES else _NS_STREAM


# _NS_LIF_NEAR when the rows a neuron kernel touches fit in L2 (half of
# 2 MiB, as for the gathers above): the 74 neurons that the MLP computes at
# density 0.01 (74 x 8 x 100, 0.7 MB) took 37 us serial forward (then with
# the NaN fill of the skipped rows) and 28 us backward on the Emerald
# Rapids guest, 48 and 39 us in parallel. Priced so, such a population
# always stays serial (1 MiB / 12 bytes at 0.4 ns: 35 us); a larger one
# runs in parallel (200 rows, 1.9 MB: 155 us serial, 68 us parallel).
_NS_LIF_NEAR = 0.4


def _ns_neurons(elements, bytes_per_element, far_ns):
    """Serial ns of a neuron kernel visiting ``elements`` (neuron, step, sample) entries of its arrays."""
    return elements * (far_ns if elements * bytes_per_element > _L2_BYTES else _NS_LIF_NEAR)


#: Above PARALLEL_MIN_NS, choose between the serial and the parallel version
#: by their measured speed (per kernel, exponential average of run time per
#: estimated ns, the other version re-timed every ``_EXPLORE`` calls). On an
#: idle machine the parallel one wins for large kernels; when other processes
#: keep the second core busy, a parallel region waits for a descheduled
#: thread and the serial one wins. Results agree to rounding (same row
#: code). False (the default) always takes the parallel version above the
#: threshold; PARALLEL_MIN_NS = 0 (tests) also forces the parallel version.
#: Off by default: it costs timing calls on every kernel call; turn it on
#: for speed on a machine whose load changes during a run.
ADAPTIVE_PARALLEL = False
_EXPLORE = 32


def _parallel(ns):
    global _pool_started
    if ns < parallel_min_ns() or _forked_after_pool:
        return False
    _pool_started = True  # the parallel kernel about to run starts it
    return True


class _Choice:
    """Timing state of one kernel: per version, samples seen and average cost."""

    __slots__ = ("n", "cost", "calls")

    def __init__(self):
        self.n = [0, 0]
        self.cost = [0.0, 0.0]
        self.calls = 0


_CHOICES = {}


class _Timed:
    __slots__ = ("fn", "choice", "v", "ns")

    def __init__(self, fn, choice, v, ns):
        self.fn, self.choice, self.v, self.ns = fn, choice, v, ns

    def __call__(self, *args):
        t0 = time.perf_counter()
        r = self.fn(*args)
        x = (time.perf_counter() - t0) * 1e9 / self.ns
        c, v = self.choice, self.v
        c.n[v] += 1
        if c.n[v] == 2:  # the first call may include loading the compiled code
            c.cost[v] = x
        elif c.n[v] > 2:
            c.cost[v] = 0.75 * c.cost[v] + 0.25 * x
        return r


def pick_version(ser, par, ns):
    """The version of a kernel to run for an estimated serial cost of ``ns`` (not a kernel: no twin)."""
    if not _parallel(ns):
        return ser
    if not ADAPTIVE_PARALLEL or PARALLEL_MIN_NS <= 0.0:
        return par
    c = _CHOICES.get(ser)
    if c is None:
        c = _CHOICES[ser] = _Choice()
    c.calls += 1
    if c.n[0] < 2 or c.n[1] < 2:
        v = 0 if c.n[0] <= c.n[1] else 1
    else:
        v = 0 if c.cost[0] <= c.cost[1] else 1
        if c.calls % _EXPLORE == 0:
            v = 1 - v
    return _Timed(par if v else ser, c, v, max(ns, 1.0))


_ALL_ROWS = np.zeros(0, np.uint8)  # "no row mask": every row is live, every output row is written


def _row_mask(mask, n, what):
    """``mask`` (uint8, n) as the kernels take it, or the empty "no mask" array for None."""
    if mask is None:
        return _ALL_ROWS
    if mask.dtype != np.uint8 or mask.shape != (n,):
        raise ValueError(f"{what}: expected a uint8 row mask of shape ({n},), got {mask.dtype} {mask.shape}")
    return mask


def _live_work(n_rows, live):
    """The fraction of rows a masked kernel visits (for its serial/parallel choice)."""
    if live is None or n_rows == 0:
        return 1.0
    return max(1, int(np.count_nonzero(live))) / n_rows


# --------------------------------------------------------------------------
# LIF and readout over all T steps in one call
# --------------------------------------------------------------------------
# Loop order f, t, b: for one neuron f the carry (the membrane of the B
# samples) lives in v_out[f, :] and every inner loop runs over the B
# contiguous samples of one step, which the compiler vectorises. Each step
# is two loops: the membrane update into u_out, then the spikes and the
# reset read back from u_out. (One loop doing both, reading and writing
# v_out among three other arrays, ran 1.3-1.4x slower on the Emerald Rapids
# guest, docs/benchmarks.md, "Encoding ahead, and a faster LIF forward".) No fastmath: the arithmetic is the
# reference's, operation for operation; u has the layer's dtype (so have
# alpha, k0 and c), so reading it back from u_out changes no bit.
@numba.njit(inline="always", **_jit)
def _lif_forward_row(f, I, v0, alpha, k0, c, v_th, v_reset, reset, sur, p, smooth, u_out, s_out, v_out):
    T, B = I.shape[1], I.shape[2]
    one = s_out.dtype.type(1.0)
    zero = s_out.dtype.type(0.0)
    for b in range(B):
        v_out[f, b] = v0[f, b]
    for t in range(T):
        for b in range(B):
            u_out[f, t, b] = alpha * v_out[f, b] + k0 + c * I[f, t, b]
        if smooth:
            for b in range(B):
                u = u_out[f, t, b]
                sm = s_out.dtype.type(smooth_spike(u - v_th, sur, p))
                s_out[f, t, b] = sm
                if reset == 0:
                    v_out[f, b] = u * (one - sm) + v_reset * sm
                elif reset == 1:
                    v_out[f, b] = u - v_th * sm
                else:
                    v_out[f, b] = u
        elif reset == 0:
            for b in range(B):
                u = u_out[f, t, b]
                sp = u >= v_th
                s_out[f, t, b] = one if sp else zero
                v_out[f, b] = v_reset if sp else u
        elif reset == 1:
            for b in range(B):
                u = u_out[f, t, b]
                sp = u >= v_th
                s_out[f, t, b] = one if sp else zero
                v_out[f, b] = u - v_th if sp else u
        else:
            for b in range(B):
                u = u_out[f, t, b]
                s_out[f, t, b] = one if u >= v_th else zero
                v_out[f, b] = u


@numba.njit(inline="always", **_jit)
def _lif_forward_live_row(f, I, v0, alpha, k0, c, v_th, v_reset, reset, sur, p, smooth, u_out, s_out, v_out, live):
    if live.size == 0 or live[f]:
        _lif_forward_row(f, I, v0, alpha, k0, c, v_th, v_reset, reset, sur, p, smooth, u_out, s_out, v_out)
    # else not computed: rows f of u_out, s_out and v_out keep whatever they held (the layer's v_last
    # marks them NaN when read: filling them here took ~18 us a call for the 726 rows the MLP skips at 0.01)


@numba.njit(parallel=True, **_jit)
def _lif_forward_par(I, v0, alpha, k0, c, v_th, v_reset, reset, sur, p, smooth, u_out, s_out, v_out, live):
    I = borrow(I)
    v0 = borrow(v0)
    u_out = borrow(u_out)
    s_out = borrow(s_out)
    v_out = borrow(v_out)
    live = borrow(live)
    for f in prange(I.shape[0]):
        _lif_forward_live_row(f, I, v0, alpha, k0, c, v_th, v_reset, reset, sur, p, smooth, u_out, s_out, v_out,
                              live)


@numba.njit(**_jit)
def _lif_forward_ser(I, v0, alpha, k0, c, v_th, v_reset, reset, sur, p, smooth, u_out, s_out, v_out, live):
    I = borrow(I)
    v0 = borrow(v0)
    u_out = borrow(u_out)
    s_out = borrow(s_out)
    v_out = borrow(v_out)
    live = borrow(live)
    for f in range(I.shape[0]):
        _lif_forward_live_row(f, I, v0, alpha, k0, c, v_th, v_reset, reset, sur, p, smooth, u_out, s_out, v_out,
                              live)


def lif_forward(I, v0, prm, u_out, s_out, v_out, live=None):
    """Euler-integrate a LIF population over T steps. Readable twin: :func:`snn_core.kernels.reference.lif_forward`.

    I : (F, T, B) input current; v0 : (F, B) initial membrane; prm : a
    :class:`snn_core.neurons.NeuronKernelParams` record (``alpha = 1 - dt/tau_m``,
    ``k0 = (1 - alpha) v_rest``, ``c = R dt/tau_m``, ``reset`` code, surrogate
    code and parameter, used only when ``smooth`` = 1, the test-only
    differentiable spike). Writes u_out (pre-reset membrane), s_out (spikes),
    v_out (final v, (F, B)). The record is unpacked here, once, into the
    compiled row kernels.

    Row mask (uint8, one entry per neuron; what ``Network.forward`` passes
    so that neurons whose output nothing reads cost nothing): only the
    neurons with ``live[f] != 0`` are integrated; the rows of the others in
    ``u_out``, ``s_out`` and ``v_out`` are left unwritten. The rows computed
    are the same bits as without a mask.
    """
    F = I.shape[0]
    live_k = _row_mask(live, F, "lif_forward live")
    k = pick_version(_lif_forward_ser, _lif_forward_par, _ns_neurons(I.size * _live_work(F, live), 12, _NS_LIF_FWD))
    k(I, v0, prm.alpha, prm.k0, prm.c, prm.v_th, prm.v_reset, prm.reset, prm.surrogate, prm.surrogate_p, prm.smooth,
      u_out, s_out, v_out, live_k)


@numba.njit(**_jit)
def _surrogate_row(f, u, v_th, sur, p, out):
    """out[f] = sigma'(u[f] - v_th); one loop per surrogate so that each vectorises."""
    T, B = u.shape[1], u.shape[2]
    ft = out.dtype.type
    if sur == 0:
        for t in range(T):
            for b in range(B):
                out[f, t, b] = ft(surrogate_grad(u[f, t, b] - v_th, 0, p))
    elif sur == 1:
        for t in range(T):
            for b in range(B):
                out[f, t, b] = ft(surrogate_grad(u[f, t, b] - v_th, 1, p))
    elif sur == 2:
        for t in range(T):
            for b in range(B):
                out[f, t, b] = ft(surrogate_grad(u[f, t, b] - v_th, 2, p))
    elif sur == 3:
        for t in range(T):
            for b in range(B):
                out[f, t, b] = ft(surrogate_grad(u[f, t, b] - v_th, 3, p))
    else:
        for t in range(T):
            for b in range(B):
                out[f, t, b] = ft(surrogate_grad(u[f, t, b] - v_th, 4, p))


@numba.njit(inline="always", **_jit)
def _sigma(u, stored, rect, v_th, half, inv, zero):
    """sigma'(u - v_th): the rectangular surrogate inline (1/p where |u - v_th| < p/2), else the value
    ``stored`` by :func:`_surrogate_row` (inlined, so the BPTT loops stay vectorised)."""
    if rect:
        return inv if abs(u - v_th) < half else zero
    return stored


@numba.njit(inline="always", **_jit)
def _lif_backward_row(f, gs, u, s, alpha, c, v_th, v_reset, reset, detach, sur, p, gI, live, live_out):
    T, B = gs.shape[1], gs.shape[2]
    one = gI.dtype.type(1.0)
    zero = gI.dtype.type(0.0)
    # A neuron whose output gradient is zero at every step (e.g. one without
    # outgoing connections) gets a zero input gradient: skip u, s entirely.
    # A row marked dead in ``live`` is zero by the caller's word (not read);
    # with ``live_out`` a zero result row is marked there instead of written.
    nz = 0
    if live.size == 0 or live[f]:
        for t in range(T):
            for b in range(B):
                nz += gs[f, t, b] != zero
            if nz:
                break
    if live_out.size:
        live_out[f] = nz != 0
    if nz == 0:
        if live_out.size == 0:
            for t in range(T):
                for b in range(B):
                    gI[f, t, b] = zero
        return
    # Pass 1, backwards in time: gI[f, t] <- gu[t] (unscaled; gv = alpha *
    # gu[t+1] is read back from gI[f, t+1]); pass 2: gI[f] *= c. Each inner
    # loop writes one contiguous row and has no branch that the compiler
    # cannot turn into a select, so it vectorises. The rectangular surrogate
    # (the default) is computed inline, a compare and a select; any other
    # surrogate is first written into gI[f] by its own loop and read back
    # (a call inside the BPTT loop would stop it vectorising: 5x slower).
    ft = gI.dtype.type
    rect = sur == 0
    if not rect:
        _surrogate_row(f, u, v_th, sur, p, gI)
    half, inv = ft(0.5) * p, ft(1.0 / p)  # the rectangular surrogate's bounds, as surrogate_grad (bit for bit)
    for b in range(B):
        sg = _sigma(u[f, T - 1, b], gI[f, T - 1, b], rect, v_th, half, inv, zero)
        gI[f, T - 1, b] = gs[f, T - 1, b] * sg
    if reset == 0:
        for tt in range(1, T):
            t = T - 1 - tt
            if detach:
                for b in range(B):
                    gv = alpha * gI[f, t + 1, b]
                    sg = _sigma(u[f, t, b], gI[f, t, b], rect, v_th, half, inv, zero)
                    gI[f, t, b] = gs[f, t, b] * sg + gv * (one - s[f, t, b])
            else:
                for b in range(B):
                    gv = alpha * gI[f, t + 1, b]
                    sg = _sigma(u[f, t, b], gI[f, t, b], rect, v_th, half, inv, zero)
                    g_s = gs[f, t, b] + gv * (v_reset - u[f, t, b])
                    gI[f, t, b] = g_s * sg + gv * (one - s[f, t, b])
    else:
        dvds = -v_th if reset == 1 else zero
        for tt in range(1, T):
            t = T - 1 - tt
            if detach:
                for b in range(B):
                    gv = alpha * gI[f, t + 1, b]
                    sg = _sigma(u[f, t, b], gI[f, t, b], rect, v_th, half, inv, zero)
                    gI[f, t, b] = gs[f, t, b] * sg + gv * one
            else:
                for b in range(B):
                    gv = alpha * gI[f, t + 1, b]
                    sg = _sigma(u[f, t, b], gI[f, t, b], rect, v_th, half, inv, zero)
                    g_s = gs[f, t, b] + gv * dvds
                    gI[f, t, b] = g_s * sg + gv * one
    for t in range(T):
        for b in range(B):
            gI[f, t, b] = c * gI[f, t, b]


@numba.njit(parallel=True, **_jit)
def _lif_backward_par(gs, u, s, alpha, c, v_th, v_reset, reset, detach, sur, p, gI, live, live_out):
    gs = borrow(gs)
    u = borrow(u)
    s = borrow(s)
    gI = borrow(gI)
    live = borrow(live)
    live_out = borrow(live_out)
    for f in prange(gs.shape[0]):
        _lif_backward_row(f, gs, u, s, alpha, c, v_th, v_reset, reset, detach, sur, p, gI, live, live_out)


@numba.njit(**_jit)
def _lif_backward_ser(gs, u, s, alpha, c, v_th, v_reset, reset, detach, sur, p, gI, live, live_out):
    gs = borrow(gs)
    u = borrow(u)
    s = borrow(s)
    gI = borrow(gI)
    live = borrow(live)
    live_out = borrow(live_out)
    for f in range(gs.shape[0]):
        _lif_backward_row(f, gs, u, s, alpha, c, v_th, v_reset, reset, detach, sur, p, gI, live, live_out)


def lif_backward(gs, u, s, prm, gI, live=None, live_out=None):
    """BPTT through a LIF population: dL/dI from dL/ds (all (F, T, B)); ``prm`` as in :func:`lif_forward`.

    Readable twin: :func:`snn_core.kernels.reference.lif_backward`.

    With ``gv`` the gradient reaching the post-reset membrane v[t] from step
    t+1 (``gv = alpha * gu[t+1]``, zero after the last step)::

        gs_tot = gs[t] + gv * dv/ds      (dv/ds = v_reset - u | -v_th | 0; 0 if detach)
        gu[t]  = gs_tot * sigma'(u[t] - v_th) + gv * dv/du   (dv/du = 1 - s | 1 | 1)
        gI[t]  = c * gu[t]

    ``s`` is read only for the hard reset. Neurons whose ``gs`` is zero at
    every step are skipped (their ``gI`` is zero).

    Row masks (uint8, one entry per neuron; what ``Network.backward`` passes
    between layers so that the rows of neurons without a gradient path are
    neither read nor written): ``live[f] == 0`` says that ``gs[f]`` is zero
    (it is not read); when ``live_out`` is given, a zero row of ``gI`` is
    left unwritten and ``live_out[f]`` is set to 0 (1 for a written row).
    Without ``live_out`` every row of ``gI`` is written.
    """
    F = gs.shape[0]
    live_k, out_k = _row_mask(live, F, "lif_backward live"), _row_mask(live_out, F, "lif_backward live_out")
    k = pick_version(_lif_backward_ser, _lif_backward_par, _ns_neurons(gs.size * _live_work(F, live), 16, _NS_LIF_BWD))
    k(gs, u, s, prm.alpha, prm.c, prm.v_th, prm.v_reset, prm.reset, bool(prm.detach), prm.surrogate, prm.surrogate_p,
      gI, live_k, out_k)


@numba.njit(inline="always", **_jit)
def _readout_forward_row(f, I, v0, alpha, k0, c, u_out):
    T, B = I.shape[1], I.shape[2]
    for b in range(B):
        u_out[f, 0, b] = alpha * v0[f, b] + k0 + c * I[f, 0, b]
    for t in range(1, T):
        for b in range(B):
            u_out[f, t, b] = alpha * u_out[f, t - 1, b] + k0 + c * I[f, t, b]


@numba.njit(parallel=True, **_jit)
def _readout_forward_par(I, v0, alpha, k0, c, u_out):
    I = borrow(I)
    v0 = borrow(v0)
    u_out = borrow(u_out)
    for f in prange(I.shape[0]):
        _readout_forward_row(f, I, v0, alpha, k0, c, u_out)


@numba.njit(**_jit)
def _readout_forward_ser(I, v0, alpha, k0, c, u_out):
    I = borrow(I)
    v0 = borrow(v0)
    u_out = borrow(u_out)
    for f in range(I.shape[0]):
        _readout_forward_row(f, I, v0, alpha, k0, c, u_out)


def readout_forward(I, v0, prm, u_out):
    """Leaky integrator over T steps: u[t] = alpha u[t-1] + k0 + c I[t] (``prm``: only alpha, k0, c are read).

    Readable twin: :func:`snn_core.kernels.reference.readout_forward`.
    """
    k = pick_version(_readout_forward_ser, _readout_forward_par, I.size * _NS_LIF_FWD)
    k(I, v0, prm.alpha, prm.k0, prm.c, u_out)


@numba.njit(inline="always", **_jit)
def _readout_backward_row(f, gu, alpha, c, gI):
    T, B = gu.shape[1], gu.shape[2]
    for b in range(B):
        gI[f, T - 1, b] = gu[f, T - 1, b]
    for tt in range(1, T):
        t = T - 1 - tt
        for b in range(B):
            gI[f, t, b] = gu[f, t, b] + alpha * gI[f, t + 1, b]
    for t in range(T):
        for b in range(B):
            gI[f, t, b] *= c


@numba.njit(parallel=True, **_jit)
def _readout_backward_par(gu, alpha, c, gI):
    gu = borrow(gu)
    gI = borrow(gI)
    for f in prange(gu.shape[0]):
        _readout_backward_row(f, gu, alpha, c, gI)


@numba.njit(**_jit)
def _readout_backward_ser(gu, alpha, c, gI):
    gu = borrow(gu)
    gI = borrow(gI)
    for f in range(gu.shape[0]):
        _readout_backward_row(f, gu, alpha, c, gI)


def readout_backward(gu, prm, gI):
    """BPTT through the leaky integrator: gu_tot[t] = gu[t] + alpha gu_tot[t+1]; gI = c gu_tot.

    Readable twin: :func:`snn_core.kernels.reference.readout_backward`.
    """
    k = pick_version(_readout_backward_ser, _readout_backward_par, gu.size * _NS_LIF_FWD)
    k(gu, prm.alpha, prm.c, gI)


# --------------------------------------------------------------------------
# Sum over time of a repeated frame's output gradient
# --------------------------------------------------------------------------
@numba.njit(inline="always", **_jit)
def _time_sum_row(f, G3, out):
    T, B = G3.shape[1], G3.shape[2]
    for b in range(B):
        out[f, b] = G3[f, 0, b]
    for t in range(1, T):  # the steps in order, as NumPy's sum over a non-contiguous axis: the same bits
        for b in range(B):
            out[f, b] += G3[f, t, b]


@numba.njit(parallel=True, **_jit)
def _time_sum_par(G3, out):
    G3 = borrow(G3)
    out = borrow(out)
    for f in prange(G3.shape[0]):
        _time_sum_row(f, G3, out)


@numba.njit(**_jit)
def _time_sum_ser(G3, out):
    G3 = borrow(G3)
    out = borrow(out)
    for f in range(G3.shape[0]):
        _time_sum_row(f, G3, out)


def time_sum(G3, out):
    """out (F, B) = G3 (F, T, B) summed over the T steps in order.

    NumPy's ``G3.sum(axis=1)`` over this short middle axis took 8.5 ms for the
    conv job's first layer (25,088 x 2 x 64), this loop one pass.

    Readable twin: :func:`snn_core.kernels.reference.time_sum`.
    """
    k = pick_version(_time_sum_ser, _time_sum_par, G3.size * _NS_STREAM)
    k(G3, out)


# --------------------------------------------------------------------------
# Sparse synapses: CSR weights (n_out, n_in) times feature-major activations
# --------------------------------------------------------------------------
# Dense-row kernels handle four connections per pass over the output row:
# one load/store of Y[r, n] per four multiply-adds instead of per one (the
# single-connection loop is bound by those stores).
@numba.njit(inline="always", **_jit)
def _csr_forward_row(r, indptr, indices, data, bias, X, Y):
    N = Y.shape[1]
    for n in range(N):
        Y[r, n] = bias[r]
    k = indptr[r]
    e = indptr[r + 1]
    while k + 4 <= e:
        w0, w1, w2, w3 = data[k], data[k + 1], data[k + 2], data[k + 3]
        j0, j1, j2, j3 = indices[k], indices[k + 1], indices[k + 2], indices[k + 3]
        for n in range(N):
            Y[r, n] += (w0 * X[j0, n] + w1 * X[j1, n]) + (w2 * X[j2, n] + w3 * X[j3, n])
        k += 4
    while k < e:
        w0 = data[k]
        j0 = indices[k]
        for n in range(N):
            Y[r, n] += w0 * X[j0, n]
        k += 1


@numba.njit(parallel=True, **_jit)
def _csr_forward_par(indptr, indices, data, bias, X, Y, live):
    indptr = borrow(indptr)
    indices = borrow(indices)
    data = borrow(data)
    bias = borrow(bias)
    X = borrow(X)
    Y = borrow(Y)
    live = borrow(live)
    for r in prange(Y.shape[0]):
        if live.size == 0 or live[r]:
            _csr_forward_row(r, indptr, indices, data, bias, X, Y)


@numba.njit(**_jit)
def _csr_forward_ser(indptr, indices, data, bias, X, Y, live):
    indptr = borrow(indptr)
    indices = borrow(indices)
    data = borrow(data)
    bias = borrow(bias)
    X = borrow(X)
    Y = borrow(Y)
    live = borrow(live)
    for r in range(Y.shape[0]):
        if live.size == 0 or live[r]:
            _csr_forward_row(r, indptr, indices, data, bias, X, Y)


def csr_forward(indptr, indices, data, bias, X, Y, live=None):
    """Y[r, :] = bias[r] + sum_k data[k] * X[indices[k], :] over row r.

    X : (n_in, N), Y : (n_out, N). Each connection streams one contiguous
    row of N columns (all T steps of the batch at once). ``live`` (uint8,
    n_out; see :func:`lif_forward`): only the rows with ``live[r] != 0`` are
    computed, the others are left unwritten (and only the inputs of the
    computed rows are read).

    Readable twin: :func:`snn_core.kernels.reference.csr_forward`.
    """
    ns = (len(indices) + Y.shape[0]) * Y.shape[1] * _ns_stream(X) * _live_work(Y.shape[0], live)
    k = pick_version(_csr_forward_ser, _csr_forward_par, ns)
    k(indptr, indices, data, bias, X, Y, _row_mask(live, Y.shape[0], "csr_forward live"))


@numba.njit(**_jit)
def _row_sum_nz(r, G, gb, rownz):
    """gb[r] = sum_n G[r, n]; rownz[r] = 1 if any G[r, n] != 0. Returns rownz[r].

    The sum runs in eight independent lanes (columns n = 8 q + l) combined by
    a fixed tree: the order of the additions is written here, so it is the
    same in every compiled copy and on every CPU, and the compiler can still
    vectorise the lanes (a single running sum without fastmath would wait for
    every addition's latency: 3x slower, measured on 800 x 800).
    """
    N = G.shape[1]
    zero = G.dtype.type(0.0)
    nz = 0
    for n in range(N):  # an integer count: any order gives the same result
        nz += G[r, n] != zero
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = zero
    n = 0
    while n + 8 <= N:
        a0 += G[r, n]
        a1 += G[r, n + 1]
        a2 += G[r, n + 2]
        a3 += G[r, n + 3]
        a4 += G[r, n + 4]
        a5 += G[r, n + 5]
        a6 += G[r, n + 6]
        a7 += G[r, n + 7]
        n += 8
    while n < N:
        a0 += G[r, n]
        n += 1
    gb[r] = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
    rownz[r] = 1 if nz else 0
    return nz != 0


@numba.njit(inline="always", **_jit)
def _dead_row(r, G, gb, rownz, live):
    """True (and gb[r] = 0, rownz[r] = 0) when the mask says row r of G is zero; it is then not read."""
    if live.size == 0 or live[r]:
        return False
    gb[r] = G.dtype.type(0.0)
    rownz[r] = 0
    return True


@numba.njit(inline="always", **_jit)
def _csr_grad_dense_row(r, indptr, indices, G, X, out, accumulate, gb, rownz, live):
    N = G.shape[1]
    zero = G.dtype.type(0.0)
    k = indptr[r]
    e = indptr[r + 1]
    if _dead_row(r, G, gb, rownz, live) or not _row_sum_nz(r, G, gb, rownz):
        if not accumulate:
            for kk in range(k, e):
                out[kk] = zero
        return
    while k + 4 <= e:
        j0, j1, j2, j3 = indices[k], indices[k + 1], indices[k + 2], indices[k + 3]
        a0 = zero
        a1 = zero
        a2 = zero
        a3 = zero
        for n in range(N):
            g = G[r, n]
            a0 += g * X[j0, n]
            a1 += g * X[j1, n]
            a2 += g * X[j2, n]
            a3 += g * X[j3, n]
        if accumulate:
            out[k] += a0
            out[k + 1] += a1
            out[k + 2] += a2
            out[k + 3] += a3
        else:
            out[k] = a0
            out[k + 1] = a1
            out[k + 2] = a2
            out[k + 3] = a3
        k += 4
    while k < e:
        j0 = indices[k]
        a0 = zero
        for n in range(N):
            a0 += G[r, n] * X[j0, n]
        if accumulate:
            out[k] += a0
        else:
            out[k] = a0
        k += 1


@numba.njit(parallel=True, **_jit)
def _csr_grad_dense_par(indptr, indices, G, X, out, accumulate, gb, rownz, live):
    indptr = borrow(indptr)
    indices = borrow(indices)
    G = borrow(G)
    X = borrow(X)
    out = borrow(out)
    gb = borrow(gb)
    rownz = borrow(rownz)
    live = borrow(live)
    for r in prange(G.shape[0]):
        _csr_grad_dense_row(r, indptr, indices, G, X, out, accumulate, gb, rownz, live)


@numba.njit(**_jit)
def _csr_grad_dense_ser(indptr, indices, G, X, out, accumulate, gb, rownz, live):
    indptr = borrow(indptr)
    indices = borrow(indices)
    G = borrow(G)
    X = borrow(X)
    out = borrow(out)
    gb = borrow(gb)
    rownz = borrow(rownz)
    live = borrow(live)
    for r in range(G.shape[0]):
        _csr_grad_dense_row(r, indptr, indices, G, X, out, accumulate, gb, rownz, live)


def csr_grad_dense(indptr, indices, G, X, out, accumulate, gb, rownz, live=None):
    """:func:`csr_grad_at` plus, in the same pass over G, the bias gradient
    ``gb[r] = sum_n G[r, n]`` and ``rownz[r] = any(G[r, :] != 0)`` (uint8).

    Rows of G that are entirely zero skip their connections (gradient 0).
    ``live`` (uint8, n_out, optional): ``live[r] == 0`` says that G[r] is
    zero; such a row is not read (as :func:`lif_backward`'s row masks).

    Readable twin: :func:`snn_core.kernels.reference.csr_grad_dense`.
    """
    ns = (len(indices) + G.shape[0]) * G.shape[1] * _ns_stream(X) * _live_work(G.shape[0], live)
    k = pick_version(_csr_grad_dense_ser, _csr_grad_dense_par, ns)
    k(indptr, indices, G, X, out, accumulate, gb, rownz, _row_mask(live, G.shape[0], "csr_grad_dense live"))


def csr_grad_at(indptr, indices, G, X, out, accumulate):
    """dL/dW only at existing connections: out[k] (+)= G[r, :] . X[indices[k], :].

    G : (n_out, N) output gradient, X : (n_in, N) layer input. Never builds
    the dense n_out x n_in gradient.

    Readable twin: :func:`snn_core.kernels.reference.csr_grad_at`.
    """
    n_out = G.shape[0]
    csr_grad_dense(indptr, indices, G, X, out, accumulate, np.empty(n_out, G.dtype), np.empty(n_out, np.uint8))


@numba.njit(inline="always", **_jit)
def _csr_backward_input_row(j, t_indptr, t_indices, t_perm, data, G, rownz, GX, live_out):
    N = GX.shape[1]
    zero = GX.dtype.type(0.0)
    if live_out.size:  # a row with no connection from a nonzero row of G is zero: marked, not written
        live = 0
        for k in range(t_indptr[j], t_indptr[j + 1]):
            live |= rownz[t_indices[k]]
        live_out[j] = live
        if not live:
            return
    for n in range(N):
        GX[j, n] = zero
    # connections from rows of G that are entirely zero contribute nothing
    q = 0
    r0 = r1 = r2 = r3 = 0
    w0 = w1 = w2 = w3 = zero
    for k in range(t_indptr[j], t_indptr[j + 1]):
        r = t_indices[k]
        if not rownz[r]:
            continue
        w = data[t_perm[k]]
        if q == 0:
            r0, w0 = r, w
        elif q == 1:
            r1, w1 = r, w
        elif q == 2:
            r2, w2 = r, w
        else:
            r3, w3 = r, w
        q += 1
        if q == 4:
            for n in range(N):
                GX[j, n] += (w0 * G[r0, n] + w1 * G[r1, n]) + (w2 * G[r2, n] + w3 * G[r3, n])
            q = 0
    if q > 0:
        if q < 2:
            r1, w1 = r0, zero
        if q < 3:
            r2, w2 = r0, zero
        r3, w3 = r0, zero
        for n in range(N):
            GX[j, n] += (w0 * G[r0, n] + w1 * G[r1, n]) + (w2 * G[r2, n] + w3 * G[r3, n])


@numba.njit(parallel=True, **_jit)
def _csr_backward_input_par(t_indptr, t_indices, t_perm, data, G, rownz, GX, live_out):
    t_indptr = borrow(t_indptr)
    t_indices = borrow(t_indices)
    t_perm = borrow(t_perm)
    data = borrow(data)
    G = borrow(G)
    rownz = borrow(rownz)
    GX = borrow(GX)
    live_out = borrow(live_out)
    for j in prange(GX.shape[0]):
        _csr_backward_input_row(j, t_indptr, t_indices, t_perm, data, G, rownz, GX, live_out)


@numba.njit(**_jit)
def _csr_backward_input_ser(t_indptr, t_indices, t_perm, data, G, rownz, GX, live_out):
    t_indptr = borrow(t_indptr)
    t_indices = borrow(t_indices)
    t_perm = borrow(t_perm)
    data = borrow(data)
    G = borrow(G)
    rownz = borrow(rownz)
    GX = borrow(GX)
    live_out = borrow(live_out)
    for j in range(GX.shape[0]):
        _csr_backward_input_row(j, t_indptr, t_indices, t_perm, data, G, rownz, GX, live_out)


def csr_backward_input_nz(t_indptr, t_indices, t_perm, data, G, rownz, GX, live_out=None):
    """:func:`csr_backward_input` skipping rows r of G with ``rownz[r] == 0``.

    ``rownz`` (uint8, n_out) must be 1 wherever G[r, :] has a nonzero
    (:func:`csr_grad_dense` / :func:`csr_grad_spikes` produce it).
    ``live_out`` (uint8, n_in, optional): rows j of GX without a connection
    from a row with ``rownz`` 1 are then left unwritten and marked 0 there
    (1 for a written row), as :func:`lif_backward`'s ``live_out``.

    Readable twin: :func:`snn_core.kernels.reference.csr_backward_input_nz`.
    """
    ns = (len(t_indices) + GX.shape[0]) * GX.shape[1] * _ns_stream(G)
    k = pick_version(_csr_backward_input_ser, _csr_backward_input_par, ns)
    k(t_indptr, t_indices, t_perm, data, G, rownz, GX, _row_mask(live_out, GX.shape[0], "csr_backward_input live_out"))


def csr_backward_input(t_indptr, t_indices, t_perm, data, G, GX):
    """GX = W^T G through the transposed structure (CSC of W).

    t_indptr/t_indices/t_perm describe W^T: column j of W holds the entries
    ``data[t_perm[k]]`` at rows ``t_indices[k]`` for k in
    ``t_indptr[j]:t_indptr[j+1]``. Parallel over inputs j: each thread owns
    one output row, so there is no race.

    Readable twin: :func:`snn_core.kernels.reference.csr_backward_input_t`.
    """
    csr_backward_input_nz(t_indptr, t_indices, t_perm, data, G, np.ones(G.shape[0], np.uint8), GX)


# --------------------------------------------------------------------------
# Bit-mask intrinsics (16 columns per mask word)
# --------------------------------------------------------------------------
# A 16-bit word of spike bits maps onto a vector mask register; a masked
# vector add then applies 16 columns of one connection in one instruction
# (no compare or blend), which is the inner operation of the spike kernels
# on inputs that spike often. These intrinsics emit that LLVM IR; they need
# C-contiguous rows (checked at typing), any float dtype.
_I32 = ir.IntType(32)
_SPLAT16 = ir.Constant(ir.VectorType(_I32, 16), [0] * 16)


def _c_array(ty, ndim, dtype=None):
    return (isinstance(ty, nbtypes.Array) and ty.ndim == ndim and ty.layout == "C"
            and (dtype is None or ty.dtype == dtype))


def _item_ptr(context, builder, aryty, ary, idx, idxty):
    arr = context.make_array(aryty)(context, builder, ary)
    idx = [context.cast(builder, v, t, nbtypes.intp) for v, t in zip(idx, idxty)]
    return cgutils.get_item_pointer(context, builder, aryty, arr, idx, wraparound=False)


def _splat(builder, x, vty):
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), x, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, v, _SPLAT16)


def _mask16(builder, word_ptr):
    return builder.bitcast(builder.load(word_ptr), ir.VectorType(ir.IntType(1), 16))


def _fma_fn(builder, vty):
    name = "llvm.fma.v16f32" if vty.element == ir.FloatType() else "llvm.fma.v16f64"
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty, vty, vty]), name)


@intrinsic
def _bits16(typingctx, X8, j, n0):
    """uint16 word: bit q = (X8[j, n0 + q] != 0), q < 16."""
    if not _c_array(X8, 2, nbtypes.uint8):
        return None
    sig = nbtypes.uint16(X8, j, n0)

    def codegen(context, builder, signature, args):
        p = _item_ptr(context, builder, signature.args[0], args[0], args[1:], signature.args[1:])
        v = builder.load(builder.bitcast(p, ir.VectorType(ir.IntType(8), 16).as_pointer()), align=1)
        m = builder.icmp_unsigned("!=", v, ir.Constant(ir.VectorType(ir.IntType(8), 16), [0] * 16))
        return builder.bitcast(m, ir.IntType(16))
    return sig, codegen


def _counting_loop(builder, name, start, end, init):
    """Open the IR loop ``for k in range(start, end)`` carrying the values ``init``; the builder is left in its body.

    Returns ``(k, carried, close)``: ``carried`` are the loop's phis (the
    values at the top of an iteration); ``close(new_values)`` ends the body
    with ``k + 1`` and the new values and leaves the builder after the loop,
    where ``carried`` hold the final values.
    """
    entry = builder.block
    head = builder.append_basic_block(f"{name}_head")
    body = builder.append_basic_block(f"{name}_body")
    done = builder.append_basic_block(f"{name}_done")
    builder.branch(head)
    builder.position_at_end(head)
    k = builder.phi(start.type)
    carried = [builder.phi(v.type) for v in init]
    k.add_incoming(start, entry)
    for p, v in zip(carried, init):
        p.add_incoming(v, entry)
    builder.cbranch(builder.icmp_signed("<", k, end), body, done)
    builder.position_at_end(body)

    def close(new_values):
        k_next = builder.add(k, ir.Constant(k.type, 1))
        last = builder.block
        builder.branch(head)
        k.add_incoming(k_next, last)
        for p, v in zip(carried, new_values):
            p.add_incoming(v, last)
        builder.position_at_end(done)
    return k, carried, close


def _make_madd_block(nb):
    """An intrinsic ``Y[r, 16 wb : 16 (wb + nb)] += data[k]`` on the spiking columns of ``indices[k]``, k in ks[q0:q1].

    The ``nb`` output vectors (16 columns each) stay in registers while the
    loop walks the connections: per connection one weight broadcast, ``nb``
    mask loads (bit words ``Xb[indices[k], wb : wb + nb]``) and ``nb``
    masked adds, and Y is loaded and stored once per call instead of once
    per connection. Each vector receives the connections in ks order, one
    add at a time, so the sums are those of the plain loop. The ``nb``
    independent vectors hide the add latency; even vectors use plain adds,
    odd ones fma(w, one, y) (``one`` = 1 passed at run time so that it is
    not folded): the two run on different pipes on some CPUs.
    """
    @intrinsic
    def madd_block(typingctx, Y, r, wb, Xb, ks, q0, q1, indices, data, one):
        if not (_c_array(Y, 2) and isinstance(Y.dtype, nbtypes.Float) and _c_array(Xb, 2, nbtypes.uint16)
                and isinstance(ks, nbtypes.Array) and isinstance(indices, nbtypes.Array)
                and isinstance(data, nbtypes.Array) and data.dtype == Y.dtype):
            return None
        sig = nbtypes.void(Y, r, wb, Xb, ks, q0, q1, indices, data, one)

        def codegen(context, builder, signature, args):
            a, t = args, signature.args
            ip = nbtypes.intp
            intp = context.get_value_type(ip)
            vty = ir.VectorType(context.get_value_type(t[0].dtype), 16)

            def const(i):
                return ir.Constant(intp, i)

            def load_at(pos, idx):  # element of a 1-d array argument, as intp when integer
                v = builder.load(_item_ptr(context, builder, t[pos], a[pos], [idx], [ip]))
                return context.cast(builder, v, t[pos].dtype, ip) if isinstance(t[pos].dtype, nbtypes.Integer) else v

            wb_ = context.cast(builder, a[2], t[2], ip)
            yp = builder.bitcast(_item_ptr(context, builder, t[0], a[0], [a[1], builder.mul(wb_, const(16))],
                                           [t[1], ip]), vty.as_pointer())
            fma = _fma_fn(builder, vty)
            onev = _splat(builder, a[9], vty)
            q_first = context.cast(builder, a[5], t[5], ip)
            q_end = context.cast(builder, a[6], t[6], ip)
            init = [builder.load(builder.gep(yp, [const(i)]), align=4) for i in range(nb)]
            q, acc, close = _counting_loop(builder, "block", q_first, q_end, init)
            k = load_at(4, q)
            wv = _splat(builder, load_at(8, k), vty)
            xrow = _item_ptr(context, builder, t[3], a[3], [load_at(7, k), wb_], [ip, ip])
            new = []
            for i in range(nb):
                s = builder.fadd(acc[i], wv) if i % 2 == 0 else builder.call(fma, [wv, onev, acc[i]])
                new.append(builder.select(_mask16(builder, builder.gep(xrow, [const(i)])), s, acc[i]))
            close(new)
            for i in range(nb):
                builder.store(acc[i], builder.gep(yp, [const(i)]), align=4)
            return context.get_dummy_value()
        return sig, codegen
    return madd_block


_madd_block8, _madd_block4, _madd_block2, _madd_block1 = (_make_madd_block(nb) for nb in (8, 4, 2, 1))


@intrinsic
def _dot16x4(typingctx, G, r, Xb, nw, j0, j1, j2, j3, one):
    """For i = 0..3: sum of G[r, n] over n < 16 * nw whose bit is set in row j_i of Xb.

    One loop over the nw mask words; G[r, 16w:16w+16] is loaded once per
    word and added, masked, into four vector accumulators (two sets, for
    even and odd words, so that the adds of consecutive words overlap).
    """
    if not (_c_array(G, 2) and isinstance(G.dtype, nbtypes.Float) and _c_array(Xb, 2, nbtypes.uint16)):
        return None
    sig = nbtypes.UniTuple(G.dtype, 4)(G, r, Xb, nw, j0, j1, j2, j3, one)

    def codegen(context, builder, signature, args):
        a, t = args, signature.args
        ety = context.get_value_type(t[0].dtype)
        vty = ir.VectorType(ety, 16)
        intp = context.get_value_type(nbtypes.intp)
        zero_i = ir.Constant(intp, 0)
        g0 = builder.bitcast(_item_ptr(context, builder, t[0], a[0], [a[1], zero_i], [t[1], nbtypes.intp]),
                             vty.as_pointer())
        xps = [_item_ptr(context, builder, t[2], a[2], [a[4 + i], zero_i], [t[4 + i], nbtypes.intp])
               for i in range(4)]
        nw = context.cast(builder, a[3], t[3], nbtypes.intp)
        fma = _fma_fn(builder, vty)
        onev = _splat(builder, a[8], vty)
        zv = ir.Constant(vty, [0.0] * 16)
        npairs = builder.sdiv(nw, ir.Constant(intp, 2))

        k, acc, close = _counting_loop(builder, "dot", zero_i, npairs, [zv] * 8)

        def step(accs, w):
            g = builder.load(builder.gep(g0, [w]), align=4)
            out = []
            for i in range(4):
                m = _mask16(builder, builder.gep(xps[i], [w]))
                s = builder.fadd(accs[i], g) if i % 2 == 0 else builder.call(fma, [g, onev, accs[i]])
                out.append(builder.select(m, s, accs[i]))
            return out

        w0 = builder.mul(k, ir.Constant(intp, 2))
        even = step(acc[:4], w0)
        odd = step(acc[4:], builder.add(w0, ir.Constant(intp, 1)))
        close(even + odd)
        done = builder.block
        # odd word count: one more word into the even set
        last = builder.sub(nw, ir.Constant(intp, 1))
        with builder.if_then(builder.icmp_signed("==", builder.srem(nw, ir.Constant(intp, 2)),
                                                 ir.Constant(intp, 1))):
            tail = step(acc[:4], last)
            tail_block = builder.block
        phis = []
        for i in range(4):  # all phi nodes first, at the top of the block
            phi = builder.phi(vty)
            phi.add_incoming(tail[i], tail_block)
            phi.add_incoming(acc[i], done)
            phis.append(phi)
        merged = [builder.fadd(phis[i], acc[4 + i]) for i in range(4)]
        sums = []
        for v in merged:  # horizontal sum: halve the vector four times
            width = 16
            while width > 1:
                width //= 2
                lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, width), list(range(width))))
                hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, width),
                                                              list(range(width, 2 * width))))
                v = builder.fadd(lo, hi)
            sums.append(builder.extract_element(v, ir.Constant(_I32, 0)))
        return context.make_tuple(builder, signature.return_type, sums)
    return sig, codegen


# --------------------------------------------------------------------------
# Spiking inputs: pack once, then cost follows connections x spikes
# --------------------------------------------------------------------------
@numba.njit(inline="always", **_jit)
def _count_row_floats(j, X, X8):
    """(active columns, entries neither 0 nor 1) of row j of a float X; writes X8[j] = X[j] != 0."""
    zero = X.dtype.type(0.0)
    one = X.dtype.type(1.0)
    c = 0
    bad = 0
    for n in range(X.shape[1]):
        x = X[j, n]
        a = x != zero
        bad += a & (x != one)
        X8[j, n] = a
        c += a
    return c, bad


@intrinsic
def _popcount(typingctx, w):
    """Number of set bits of a uint64 (one instruction)."""
    if w != nbtypes.uint64:
        return None

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, [i64]), "llvm.ctpop.i64")
        return builder.call(fn, args)
    return nbtypes.int64(w), codegen


_BYTES_LOW = np.uint64(0x0101010101010101)


@numba.njit(inline="always", **_jit)
def _count_row_bytes(j, X, X8):
    """:func:`_count_row_floats` for a C-contiguous uint8 X, 8 entries per 64-bit word: the OR of all
    words has no bit above a byte's lowest when every entry is 0 or 1, and then a word's set bits are its
    spikes. Only a row that holds another value is read again, to count those. X8 is X itself (nothing
    written) or a copy made here. (One byte at a time, the widening sum took 3-4x as long.)"""
    N = X.shape[1]
    n8 = N - N % 8
    c = 0
    seen = np.uint64(0)
    W = X[j, :n8].view(np.uint64)
    for q in range(W.shape[0]):
        w = W[q]
        c += _popcount(w)
        seen |= w
    for n in range(n8, N):
        x = X[j, n]
        c += x != 0
        seen |= np.uint64(x)
    bad = 0
    if seen & ~_BYTES_LOW:
        for n in range(N):
            bad += X[j, n] > 1
    if X8.ctypes.data != X.ctypes.data:
        for n in range(N):
            X8[j, n] = X[j, n]
    return c, bad


def _count_row(j, X, X8):
    """Count and check row j of X, copy it to X8: by X's dtype (chosen when Numba compiles the caller)."""
    raise NotImplementedError("compiled code only")


@overload(_count_row, inline="always")
def _count_row_for(j, X, X8):
    if X.dtype == nbtypes.uint8:
        return lambda j, X, X8: _count_row_bytes(j, X, X8)
    return lambda j, X, X8: _count_row_floats(j, X, X8)


@numba.njit(inline="always", **_jit)
def _spike_pack_row(j, X, X8, cnt, cols, thr, Xb, use_bits):
    N = X.shape[1]
    c, bad = _count_row(j, X, X8)
    cnt[j] = c
    if use_bits:  # 16 columns per uint16 word; the last word is zero-padded
        nw = N // 16
        for wi in range(nw):
            Xb[j, wi] = _bits16(X8, j, wi * 16)
        if N % 16:
            word = 0
            for q in range(N - nw * 16):
                word |= np.int64(X8[j, nw * 16 + q]) << q
            Xb[j, nw] = word
    if 0 < c < thr:
        # active columns, 8 at a time: skip all-silent groups with one
        # 64-bit test, then walk the set bytes with trailing-zero counts
        i = 0
        n0 = 0
        if N >= 8:
            W = X8[j, : N - N % 8].view(np.uint64)
            for q in range(W.shape[0]):
                w = W[q]
                while w:
                    cols[j, i] = n0 + (trailing_zeros(w) >> 3)
                    i += 1
                    w &= w - np.uint64(1)
                n0 += 8
        for n in range(n0, N):
            if X8[j, n]:
                cols[j, i] = n
                i += 1
    return bad


@numba.njit(inline="always", **_jit)
def _spike_pack_live_row(j, X, X8, cnt, cols, thr, Xb, use_bits, live):
    if live.size == 0 or live[j]:
        return _spike_pack_row(j, X, X8, cnt, cols, thr, Xb, use_bits)
    cnt[j] = 0  # not read: packed as a silent input, whose connections (it has none) cost nothing
    return 0


@numba.njit(parallel=True, **_jit)
def _spike_pack_par(X, X8, cnt, cols, thr, Xb, use_bits, live):
    X = borrow(X)
    X8 = borrow(X8)
    cnt = borrow(cnt)
    cols = borrow(cols)
    Xb = borrow(Xb)
    live = borrow(live)
    bad = 0
    for j in prange(X.shape[0]):
        bad += _spike_pack_live_row(j, X, X8, cnt, cols, thr, Xb, use_bits, live)
    return bad


@numba.njit(**_jit)
def _spike_pack_ser(X, X8, cnt, cols, thr, Xb, use_bits, live):
    X = borrow(X)
    X8 = borrow(X8)
    cnt = borrow(cnt)
    cols = borrow(cols)
    Xb = borrow(Xb)
    live = borrow(live)
    bad = 0
    for j in range(X.shape[0]):
        bad += _spike_pack_live_row(j, X, X8, cnt, cols, thr, Xb, use_bits, live)
    return bad


_NO_BITS = np.zeros((1, 1), np.uint16)


def _c(a):
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def spike_pack(X, X8, cnt, cols, thr, Xb=None, live=None):
    """Condense a spike matrix X (n_in, N) for the spike-driven kernels.

    Writes X8[j, n] = (X[j, n] != 0) (uint8), cnt[j] = number of active
    columns of row j and, for rows with ``0 < cnt[j] < thr``, their sorted
    active columns in ``cols[j, :cnt[j]]`` (int32, other entries undefined).
    X may be uint8 (read 8 entries at a time), and ``X8`` may then be a C-contiguous ``X``
    itself: X is only read (a 0/1 X is its own X8). With ``Xb`` (uint16,
    (n_in, ceil(N / 16)), C-contiguous) also the bit words: bit q of
    Xb[j, w] is X8[j, 16 w + q] (padding bits 0).
    Returns the number of entries that are neither 0 nor 1 (NaN included):
    if it is not 0, X is not a spike matrix and the packed arrays must not
    be used. ``live`` (uint8, n_in): rows with ``live[j] == 0`` are not read
    (their values may be anything, e.g. rows a masked forward left
    unwritten) and are packed as silent (cnt 0, nothing else written).

    Readable twin: :func:`snn_core.kernels.reference.spike_pack`.
    """
    use_bits = Xb is not None
    live_k = _row_mask(live, X.shape[0], "spike_pack live")
    if X8 is X and not (X.dtype == np.uint8 and X.flags.c_contiguous):
        raise ValueError(f"spike_pack: X8 may be X only for a C-contiguous uint8 X, got {X.dtype}")
    if X.dtype == np.uint8:
        X = _c(X)  # read by 64-bit words
    ns_el = _NS_PACK_BYTES if X.dtype == np.uint8 else _NS_PACK
    k = pick_version(_spike_pack_ser, _spike_pack_par, X.size * ns_el * _live_work(X.shape[0], live))
    if X8.flags.c_contiguous:
        return int(k(X, X8, cnt, cols, thr, Xb if use_bits else _NO_BITS, use_bits, live_k))
    tmp = np.empty(X8.shape, np.uint8)
    n_bad = int(k(X, tmp, cnt, cols, thr, Xb if use_bits else _NO_BITS, use_bits, live_k))
    X8[...] = tmp
    return n_bad


@numba.njit(**_jit)
def _add4_u8(r, Y, X8, n0, j0, j1, j2, j3, w0, w1, w2, w3):
    """Y[r, n] += sum of the w_i whose input j_i spiked at column n >= n0 (uint8 rows)."""
    zero = Y.dtype.type(0.0)
    for n in range(n0, Y.shape[1]):
        Y[r, n] += ((w0 if X8[j0, n] else zero) + (w1 if X8[j1, n] else zero)) + (
            (w2 if X8[j2, n] else zero) + (w3 if X8[j3, n] else zero))


@numba.njit(**_jit)
def _stream_bits(r, Y, X8, Xb, ks, q0, q1, indices, data, one):
    """Y[r, n] += data[k] for the connections k in ks[q0:q1] whose input spiked at column n (bit words)."""
    N = Y.shape[1]
    nw = N // 16
    wb = 0
    while wb + 8 <= nw:  # eight 16-column vectors of the row at a time, all connections each
        _madd_block8(Y, r, wb, Xb, ks, q0, q1, indices, data, one)
        wb += 8
    if wb + 4 <= nw:
        _madd_block4(Y, r, wb, Xb, ks, q0, q1, indices, data, one)
        wb += 4
    if wb + 2 <= nw:
        _madd_block2(Y, r, wb, Xb, ks, q0, q1, indices, data, one)
        wb += 2
    if wb < nw:
        _madd_block1(Y, r, wb, Xb, ks, q0, q1, indices, data, one)
    if nw * 16 < N:  # the last N % 16 columns, from the uint8 rows
        _stream_u8(r, Y, X8, ks, q0, q1, indices, data, nw * 16)


@numba.njit(**_jit)
def _stream_u8(r, Y, X8, ks, q0, q1, indices, data, n0):
    """Y[r, n] += data[k] for the connections k in ks[q0:q1] whose input spiked at column n >= n0 (uint8 rows).

    Four connections a pass (their four terms summed pairwise, then added),
    a remainder of two or three as one padded group, a single one alone.
    """
    zero = Y.dtype.type(0.0)
    q = q0
    while q + 4 <= q1:
        k0, k1, k2, k3 = ks[q], ks[q + 1], ks[q + 2], ks[q + 3]
        _add4_u8(r, Y, X8, n0, indices[k0], indices[k1], indices[k2], indices[k3],
                 data[k0], data[k1], data[k2], data[k3])
        q += 4
    rem = q1 - q
    if rem == 1:
        k0 = ks[q]
        j0, w0 = indices[k0], data[k0]
        for n in range(n0, Y.shape[1]):
            Y[r, n] += w0 if X8[j0, n] else zero
    elif rem > 1:  # pad the group with zero weights
        k0, k1 = ks[q], ks[q + 1]
        k2 = ks[q + 2] if rem == 3 else k0
        w2 = data[k2] if rem == 3 else zero
        _add4_u8(r, Y, X8, n0, indices[k0], indices[k1], indices[k2], indices[k0], data[k0], data[k1], w2, zero)


@numba.njit(**_jit)
def _split_row(kb, ke, indices, cnt, thr, ks):
    """Branch-free split of the connections kb..ke-1 by their input's spike count.

    ks[kb : kb + nd] <- connections whose input has cnt >= thr (streamed),
    ks[nnz + kb : nnz + kb + nl] <- those with 0 < cnt < thr (listed);
    silent inputs are dropped. Returns (nd, nl). A row owns its segment of
    ks, so rows can run in parallel.
    """
    nnz = indices.shape[0]
    nd = 0
    nl = 0
    for k in range(kb, ke):
        m = cnt[indices[k]]
        ks[kb + nd] = k
        nd += m >= thr
        ks[nnz + kb + nl] = k
        nl += (m > 0) & (m < thr)
    return nd, nl


@numba.njit(inline="always", **_jit)
def _csr_forward_spikes_row(r, indptr, indices, data, bias, X8, cnt, cols, thr, Y, Xb, use_bits, one, ks):
    nnz = indices.shape[0]
    kb = indptr[r]
    nd, nl = _split_row(kb, indptr[r + 1], indices, cnt, thr, ks)
    for n in range(Y.shape[1]):
        Y[r, n] = bias[r]
    if use_bits:  # frequently spiking inputs: masked vector adds, the row's vectors held in registers
        _stream_bits(r, Y, X8, Xb, ks, kb, kb + nd, indices, data, one)
    else:  # uint8 rows, four connections a pass
        _stream_u8(r, Y, X8, ks, kb, kb + nd, indices, data, 0)
    for i in range(nl):  # rarely spiking inputs: one add per spike
        k = ks[nnz + kb + i]
        j, w = indices[k], data[k]
        for c in range(cnt[j]):
            Y[r, cols[j, c]] += w


@numba.njit(parallel=True, **_jit)
def _csr_forward_spikes_par(indptr, indices, data, bias, X8, cnt, cols, thr, Y, Xb, use_bits, one, ks, live):
    indptr = borrow(indptr)
    indices = borrow(indices)
    data = borrow(data)
    bias = borrow(bias)
    X8 = borrow(X8)
    cnt = borrow(cnt)
    cols = borrow(cols)
    Y = borrow(Y)
    Xb = borrow(Xb)
    ks = borrow(ks)
    live = borrow(live)
    for r in prange(Y.shape[0]):
        if live.size == 0 or live[r]:
            _csr_forward_spikes_row(r, indptr, indices, data, bias, X8, cnt, cols, thr, Y, Xb, use_bits, one, ks)


@numba.njit(**_jit)
def _csr_forward_spikes_ser(indptr, indices, data, bias, X8, cnt, cols, thr, Y, Xb, use_bits, one, ks, live):
    indptr = borrow(indptr)
    indices = borrow(indices)
    data = borrow(data)
    bias = borrow(bias)
    X8 = borrow(X8)
    cnt = borrow(cnt)
    cols = borrow(cols)
    Y = borrow(Y)
    Xb = borrow(Xb)
    ks = borrow(ks)
    live = borrow(live)
    for r in range(Y.shape[0]):
        if live.size == 0 or live[r]:
            _csr_forward_spikes_row(r, indptr, indices, data, bias, X8, cnt, cols, thr, Y, Xb, use_bits, one, ks)


def _split_scratch(scratch, nnz):
    if scratch is not None and scratch.dtype == np.int32 and scratch.size >= 2 * nnz:
        return scratch
    return np.empty(max(2 * nnz, 1), np.int32)


def spike_work_ns(indptr_len, nnz, n_in, N, n_spikes):
    """Rough serial cost (ns) of a spike-driven product (for the serial/parallel choice).

    Not a kernel (a cost model): no reference twin.
    """
    rate = n_spikes / max(1, n_in * N)
    return (indptr_len * N + nnz * N * min(1.0, 4.0 * rate)) * _NS_STREAM + nnz * rate * N * _NS_EVENT * 0.25


def csr_forward_spikes(indptr, indices, data, bias, X8, cnt, cols, thr, Y, work_ns=None, Xb=None, scratch=None,
                       live=None):
    """Y = W X + bias for a spike matrix X given as :func:`spike_pack` output.

    Connections from silent inputs (cnt 0) cost nothing, those from inputs
    with ``cnt < thr`` add their weight at each active column, the others
    stream their spike row, four connections per pass over Y[r, :]: as bit
    words with masked vector adds when ``Xb`` is given, else as uint8.
    ``scratch``: optional int32 array of at least 2 * nnz entries (reused
    by callers to avoid an allocation per call). ``live`` (uint8, n_out):
    only rows with ``live[r] != 0`` are computed, as in :func:`csr_forward`.

    Readable twin: :func:`snn_core.kernels.reference.csr_forward_spikes`.
    """
    if work_ns is None:
        work_ns = spike_work_ns(Y.shape[0], len(indices), X8.shape[0], Y.shape[1], int(cnt.sum()))
    live_k = _row_mask(live, Y.shape[0], "csr_forward_spikes live")
    k = pick_version(_csr_forward_spikes_ser, _csr_forward_spikes_par, work_ns * _live_work(Y.shape[0], live))
    use_bits = Xb is not None
    out = Y if Y.flags.c_contiguous else np.empty(Y.shape, Y.dtype)
    k(indptr, indices, data, bias, _c(X8), cnt, cols, thr, out, Xb if use_bits else _NO_BITS, use_bits,
      Y.dtype.type(1.0), _split_scratch(scratch, len(indices)), live_k)
    if out is not Y:
        Y[...] = out


@numba.njit(**_jit)
def _dot4_u8(r, G, X8, n0, j0, j1, j2, j3):
    """Sums of G[r, n] over the columns n >= n0 where input j_i spiked (uint8 rows)."""
    zero = G.dtype.type(0.0)
    a0 = zero
    a1 = zero
    a2 = zero
    a3 = zero
    for n in range(n0, G.shape[1]):
        g = G[r, n]
        a0 += g if X8[j0, n] else zero
        a1 += g if X8[j1, n] else zero
        a2 += g if X8[j2, n] else zero
        a3 += g if X8[j3, n] else zero
    return a0, a1, a2, a3


@numba.njit(**_jit)
def _dot4(r, G, X8, Xb, use_bits, one, j0, j1, j2, j3):
    """Sums of G[r, n] over the columns n where input j_i spiked, i = 0..3."""
    if not use_bits:
        return _dot4_u8(r, G, X8, 0, j0, j1, j2, j3)
    nw = G.shape[1] // 16
    a0, a1, a2, a3 = _dot16x4(G, r, Xb, nw, j0, j1, j2, j3, one)
    if nw * 16 < G.shape[1]:
        b0, b1, b2, b3 = _dot4_u8(r, G, X8, nw * 16, j0, j1, j2, j3)
        a0 += b0
        a1 += b1
        a2 += b2
        a3 += b3
    return a0, a1, a2, a3


@numba.njit(**_jit)
def _put(out, k, a, accumulate):
    if accumulate:
        out[k] += a
    else:
        out[k] = a


@numba.njit(inline="always", **_jit)
def _csr_grad_spikes_row(r, indptr, indices, X8, cnt, cols, thr, G, out, accumulate, gb, rownz, Xb, use_bits, one,
                         ks, live):
    zero = G.dtype.type(0.0)
    nnz = indices.shape[0]
    kb = indptr[r]
    ke = indptr[r + 1]
    if _dead_row(r, G, gb, rownz, live) or not _row_sum_nz(r, G, gb, rownz):
        if not accumulate:
            for k in range(kb, ke):
                out[k] = zero
        return
    if not accumulate:  # silent inputs get 0; the others are written below
        for k in range(kb, ke):
            out[k] = zero
    nd, nl = _split_row(kb, ke, indices, cnt, thr, ks)
    q = 0
    while q + 4 <= nd:  # frequently spiking inputs: stream rows, four connections a pass
        k0, k1, k2, k3 = ks[kb + q], ks[kb + q + 1], ks[kb + q + 2], ks[kb + q + 3]
        a0, a1, a2, a3 = _dot4(r, G, X8, Xb, use_bits, one, indices[k0], indices[k1], indices[k2], indices[k3])
        _put(out, k0, a0, accumulate)
        _put(out, k1, a1, accumulate)
        _put(out, k2, a2, accumulate)
        _put(out, k3, a3, accumulate)
        q += 4
    rem = nd - q
    if rem == 1:
        k0 = ks[kb + q]
        j0 = indices[k0]
        a0 = zero
        for n in range(G.shape[1]):
            a0 += G[r, n] if X8[j0, n] else zero
        _put(out, k0, a0, accumulate)
    elif rem > 1:  # pad the group with its first input and drop the padding
        k0, k1 = ks[kb + q], ks[kb + q + 1]
        k2 = ks[kb + q + 2] if rem == 3 else k0
        a0, a1, a2, a3 = _dot4(r, G, X8, Xb, use_bits, one, indices[k0], indices[k1], indices[k2], indices[k0])
        _put(out, k0, a0, accumulate)
        _put(out, k1, a1, accumulate)
        if rem == 3:
            _put(out, k2, a2, accumulate)
    for i in range(nl):  # rarely spiking inputs: gather G at their active columns
        k = ks[nnz + kb + i]
        j = indices[k]
        m = cnt[j]
        a0 = zero
        a1 = zero
        c = 0
        while c + 2 <= m:
            a0 += G[r, cols[j, c]]
            a1 += G[r, cols[j, c + 1]]
            c += 2
        if c < m:
            a0 += G[r, cols[j, c]]
        _put(out, k, a0 + a1, accumulate)


@numba.njit(parallel=True, **_jit)
def _csr_grad_spikes_par(indptr, indices, X8, cnt, cols, thr, G, out, accumulate, gb, rownz, Xb, use_bits, one, ks,
                         live):
    indptr = borrow(indptr)
    indices = borrow(indices)
    X8 = borrow(X8)
    cnt = borrow(cnt)
    cols = borrow(cols)
    G = borrow(G)
    out = borrow(out)
    gb = borrow(gb)
    rownz = borrow(rownz)
    Xb = borrow(Xb)
    ks = borrow(ks)
    live = borrow(live)
    for r in prange(G.shape[0]):
        _csr_grad_spikes_row(r, indptr, indices, X8, cnt, cols, thr, G, out, accumulate, gb, rownz, Xb, use_bits,
                             one, ks, live)


@numba.njit(**_jit)
def _csr_grad_spikes_ser(indptr, indices, X8, cnt, cols, thr, G, out, accumulate, gb, rownz, Xb, use_bits, one, ks,
                         live):
    indptr = borrow(indptr)
    indices = borrow(indices)
    X8 = borrow(X8)
    cnt = borrow(cnt)
    cols = borrow(cols)
    G = borrow(G)
    out = borrow(out)
    gb = borrow(gb)
    rownz = borrow(rownz)
    Xb = borrow(Xb)
    ks = borrow(ks)
    live = borrow(live)
    for r in range(G.shape[0]):
        _csr_grad_spikes_row(r, indptr, indices, X8, cnt, cols, thr, G, out, accumulate, gb, rownz, Xb, use_bits,
                             one, ks, live)


def csr_grad_spikes(indptr, indices, X8, cnt, cols, thr, G, out, accumulate, gb, rownz, work_ns=None, Xb=None,
                    scratch=None, live=None):
    """Weight gradient at the connections for a packed spike input.

    out[k] (+)= sum over the active columns n of input j = indices[k] of
    G[r, n]; also gb[r] = sum_n G[r, n] (bias gradient) and rownz[r] =
    any(G[r] != 0) from the same pass over G. Rows of G that are all zero
    and silent inputs are skipped; ``Xb`` (bit words) and ``scratch`` as in
    :func:`csr_forward_spikes`; ``live`` as in :func:`csr_grad_dense`.

    Readable twin: :func:`snn_core.kernels.reference.csr_grad_spikes`.
    """
    if work_ns is None:
        work_ns = spike_work_ns(G.shape[0], len(indices), X8.shape[0], G.shape[1], int(cnt.sum()))
    k = pick_version(_csr_grad_spikes_ser, _csr_grad_spikes_par, work_ns * _live_work(G.shape[0], live))
    use_bits = Xb is not None
    k(indptr, indices, _c(X8), cnt, cols, thr, _c(G), out, accumulate, gb, rownz, Xb if use_bits else _NO_BITS,
      use_bits, G.dtype.type(1.0), _split_scratch(scratch, len(indices)),
      _row_mask(live, G.shape[0], "csr_grad_spikes live"))


# --------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------
@numba.njit(**_jit)
def _count_nonfinite(bits, expo):
    """Number of IEEE values whose exponent bits are all ones (Inf or NaN).

    Works on the raw bits (uint32/uint64 view) so that it vectorises without
    fastmath, which would assume there are no NaN/Inf to find.
    """
    c = 0
    for i in range(bits.size):
        c += (bits[i] & expo) == expo
    return c


_EXPO = {np.dtype(np.float32): (np.uint32, np.uint32(0x7F800000)),
         np.dtype(np.float64): (np.uint64, np.uint64(0x7FF0000000000000))}


def nonfinite_count(arr):
    """Number of NaN/Inf entries of a float32/float64 array (any layout).

    Used by :func:`snn_core.layers.check_finite`.

    Readable twin: :func:`snn_core.kernels.reference.count_nonfinite`.
    """
    utype, expo = _EXPO[arr.dtype]
    flat = arr.ravel(order="K")  # a view whenever arr is contiguous in some axis order
    return int(_count_nonfinite(flat.view(utype), expo))


# --------------------------------------------------------------------------
# Optimizer updates (in place, one pass, O(n))
# --------------------------------------------------------------------------
# One element per call, inlined into both loops: a prange body that calls a
# span function (a loop over i0..i1) did not vectorise (scalar sqrt and
# division, 3x slower than the serial loop on the Emerald Rapids guest),
# while a prange over the elements themselves does.
@numba.njit(inline="always", **_jit)
def _adam_elem(i, w, g, m, v, lr, b1, b2, eps, bc1, bc2, wd):
    gi = g[i] + wd * w[i]
    m[i] = b1 * m[i] + (1 - b1) * gi
    v[i] = b2 * v[i] + (1 - b2) * gi * gi
    w[i] -= lr * (m[i] / bc1) / (np.sqrt(v[i] / bc2) + eps)


@numba.njit(parallel=True, **_jit)
def _adam_par(w, g, m, v, lr, b1, b2, eps, bc1, bc2, wd):
    for i in prange(w.size):
        _adam_elem(i, w, g, m, v, lr, b1, b2, eps, bc1, bc2, wd)


@numba.njit(**_jit)
def _adam_ser(w, g, m, v, lr, b1, b2, eps, bc1, bc2, wd):
    for i in range(w.size):
        _adam_elem(i, w, g, m, v, lr, b1, b2, eps, bc1, bc2, wd)


def adam_update(w, g, m, v, lr, b1, b2, eps, bc1, bc2, wd):
    """Adam (L2 weight decay added to the gradient), bias-corrected.

    Readable twin: :func:`snn_core.kernels.reference.adam_update`.
    """
    k = pick_version(_adam_ser, _adam_par, w.size * _NS_UPDATE)
    k(w, g, m, v, lr, b1, b2, eps, bc1, bc2, wd)


@numba.njit(inline="always", **_jit)
def _sgd_elem(i, w, g, buf, lr, momentum, nesterov, wd):
    gi = g[i] + wd * w[i]
    if momentum != 0:
        buf[i] = momentum * buf[i] + gi
        gi = gi + momentum * buf[i] if nesterov else buf[i]
    w[i] -= lr * gi


@numba.njit(parallel=True, **_jit)
def _sgd_par(w, g, buf, lr, momentum, nesterov, wd):
    for i in prange(w.size):
        _sgd_elem(i, w, g, buf, lr, momentum, nesterov, wd)


@numba.njit(**_jit)
def _sgd_ser(w, g, buf, lr, momentum, nesterov, wd):
    for i in range(w.size):
        _sgd_elem(i, w, g, buf, lr, momentum, nesterov, wd)


def sgd_update(w, g, buf, lr, momentum, nesterov, wd):
    """SGD with optional (Nesterov) momentum and L2 weight decay.

    Readable twin: :func:`snn_core.kernels.reference.sgd_update`.
    """
    k = pick_version(_sgd_ser, _sgd_par, w.size * _NS_UPDATE)
    k(w, g, buf, lr, momentum, nesterov, wd)


# --------------------------------------------------------------------------
# Softmax cross-entropy of a time-summed output (ce_count, ce_membrane)
# --------------------------------------------------------------------------
# The losses act on 10 x 100 values, where NumPy's ~20 calls (each a few
# microseconds, 3-4 times that in a training step, after the multi-MB
# kernels have taken the caches) cost more than the arithmetic: one compiled
# call instead, over the feature-major (classes, T, batch) buffer that the
# output layer wrote, so that every inner loop runs over contiguous samples.
# One exp per logit (a scalar exp costs ~9 ns here, NumPy's vectorised one
# ~2 ns): the softmax is e / sum(e) where the twin writes exp(log softmax),
# equal up to float64 rounding, which the float32 gradient does not see
# (tests/test_losses.py compares them).
@numba.njit(inline="always", **_jit)
def _class_time_sum(O, c, acc):
    """acc[b] = sum over t of O[c, t, b], added step by step in O's dtype (the loss and the predictions)."""
    for b in range(O.shape[2]):
        acc[b] = O[c, 0, b]
    for t in range(1, O.shape[1]):
        for b in range(O.shape[2]):
            acc[b] += O[c, t, b]


@numba.njit(**_jit)
def _softmax_ce_fm(O, y, mean, g_out):
    C, T, B = O.shape
    for b in range(B):  # labels outside [0, C): nothing computed, nothing written (the caller raises)
        if y[b] < 0 or y[b] >= C:
            return np.nan, True
    acc = np.empty(B, O.dtype)
    e = np.empty((C, B), np.float64)
    for c in range(C):  # the logits: sums over time in O's dtype, step by step (as NumPy sums over T)
        _class_time_sum(O, c, acc)
        for b in range(B):
            e[c, b] = np.float64(acc[b] / O.dtype.type(T) if mean else acc[b])
    m = e[0].copy()  # per sample: the largest logit, then e = exp(z - m) and its sum s
    for c in range(1, C):
        for b in range(B):
            m[b] = max(m[b], e[c, b])
    value = 0.0
    for b in range(B):
        value -= e[y[b], b] - m[b]
    s = np.zeros(B, np.float64)
    for c in range(C):
        for b in range(B):
            e[c, b] = np.exp(e[c, b] - m[b])
            s[b] += e[c, b]
    for b in range(B):
        value += np.log(s[b])  # loss of sample b: log s - (z_y - m)
    scale = 1.0 / B
    for c in range(C):
        for b in range(B):
            g = e[c, b] / s[b] - (1.0 if y[b] == c else 0.0)
            acc[b] = O.dtype.type(g / B / T if mean else g / B)
        for t in range(T):  # dL/dO[t] is the same at every step
            for b in range(B):
                g_out[c, t, b] = acc[b]
    return value * scale, False


def softmax_ce_time(O, y, mean, g_out):
    """Mean softmax cross-entropy of the logits ``sum_t O[t]`` (``mean``: ``mean_t O[t]``) and its gradient.

    O : (C, T, B) float32/float64, C-contiguous: the output stored
    feature-major, ``O[c, t, b]`` is class c of sample b at step t; y : (B,)
    int64 class indices in [0, C) (ValueError naming their range otherwise,
    checked in the same call); g_out : (C, T, B), O's dtype, C-contiguous,
    overwritten with dL/dO (the same at every step). Returns the loss, a
    float. The softmax runs in float64.

    Readable twin: :func:`snn_core.kernels.reference.softmax_ce_time`.
    """
    value, bad_labels = _softmax_ce_fm(O, y, bool(mean), g_out)
    if bad_labels:
        raise label_range_error(y, O.shape[0])
    return float(value)


def label_range_error(y, C):
    """The ValueError for class labels ``y`` outside [0, C) (not a kernel: no twin)."""
    return ValueError(f"labels: must be in [0, {C}), got range [{y.min()}, {y.max()}]")


# The predicted classes of a training batch, next to the loss: NumPy's sum and
# argmax over the (T, batch, classes) view cost 11 us alone and 50-70 us in the
# training loop (the multi-MB kernels before them have taken the caches), the
# loop below 1-2 us. The sums run step by step in O's dtype, as in the loss.
@numba.njit(**_jit)
def _predict_fm(O, out):
    C, T, B = O.shape
    acc = np.empty(B, O.dtype)
    best = np.empty(B, O.dtype)
    for c in range(C):
        _class_time_sum(O, c, acc)
        for b in range(B):  # the first largest sum wins; a NaN sum wins at once and stays (as np.argmax)
            if c == 0 or (best[b] == best[b] and (acc[b] > best[b] or acc[b] != acc[b])):
                best[b] = acc[b]
                out[b] = c


def predict_time(O):
    """Per sample, the class with the largest sum over time: (B,) int64.

    O : (C, T, B) float32/float64, C-contiguous, feature-major like the
    loss kernel's input, with C >= 1 and T >= 1. The sums run step by step
    in O's dtype; ties go to the lower class and a NaN sum wins, as in
    ``np.argmax``.

    Readable twin: :func:`snn_core.kernels.reference.predict_time`.
    """
    out = np.empty(O.shape[2], np.int64)
    _predict_fm(O, out)
    return out


@numba.njit(**_jit)
def _count_correct_fm(O, y):
    pred = np.empty(O.shape[2], np.int64)
    _predict_fm(O, pred)
    n = 0
    for b in range(pred.shape[0]):
        n += pred[b] == y[b]
    return n


def count_correct(O, y):
    """How many samples b have ``predict_time(O)[b] == y[b]``: an int.

    O as in :func:`predict_time`; y : (B,) int64. One compiled call (the
    training loop counts its correct predictions after every step).

    Readable twin: :func:`snn_core.kernels.reference.count_correct`.
    """
    return int(_count_correct_fm(O, y))


# --------------------------------------------------------------------------
# Rewiring: removing and merging connections of a canonical CSR in one pass
# --------------------------------------------------------------------------
# An event on the main job's 784 x 800 layer (55,520 connections, ~11,000
# rewired) spent 4.9 of its 12 ms in NumPy's version of these two steps
# (flat keys, masks, searchsorted, bincount: a dozen passes over nnz-long
# arrays); one pass each costs ~0.1 ms.
@numba.njit(**_jit)
def _csr_remove(indptr, indices, keep, out_indptr, out_indices):
    k = 0
    for r in range(indptr.shape[0] - 1):
        out_indptr[r] = k
        for e in range(indptr[r], indptr[r + 1]):
            if keep[e]:
                out_indices[k] = indices[e]
                k += 1
    out_indptr[indptr.shape[0] - 1] = k


def csr_remove(indptr, indices, keep):
    """The CSR structure of the entries with ``keep[e]`` True: (indptr, indices), both int32.

    indptr (n_out + 1,), indices (nnz,) int32; keep (nnz,) bool.

    Readable twin: :func:`snn_core.kernels.reference.csr_remove`.
    """
    out_indptr = np.empty(len(indptr), np.int32)
    out_indices = np.empty(int(np.count_nonzero(keep)), np.int32)
    _csr_remove(indptr, indices, keep, out_indptr, out_indices)
    return out_indptr, out_indices


@numba.njit(**_jit)
def _csr_merge(indptr, indices, data, keep, new_keys, new_values, n_in,
               out_indptr, out_indices, out_data, src):
    m = new_keys.shape[0]
    j = 0  # the next new entry
    k = 0  # the next output entry
    for r in range(indptr.shape[0] - 1):
        out_indptr[r] = k
        base = np.int64(r) * n_in
        for e in range(indptr[r], indptr[r + 1]):
            if not keep[e]:
                continue
            key = base + indices[e]
            while j < m and new_keys[j] < key:  # new entries before this kept one
                out_indices[k] = new_keys[j] - base
                out_data[k] = new_values[j]
                src[k] = -1
                j += 1
                k += 1
            if j < m and new_keys[j] == key:
                return False  # a new position is a kept connection
            out_indices[k] = indices[e]
            out_data[k] = data[e]
            src[k] = e
            k += 1
        while j < m and new_keys[j] < base + n_in:  # new entries after the row's last kept one
            out_indices[k] = new_keys[j] - base
            out_data[k] = new_values[j]
            src[k] = -1
            j += 1
            k += 1
    out_indptr[indptr.shape[0] - 1] = k
    return True


def csr_merge(indptr, indices, data, keep, new_keys, new_values, n_in):
    """Merge the kept entries of a canonical CSR with new ones: (indptr, indices, data, src), or None.

    indptr (n_out + 1,), indices (nnz,) int32, data (nnz,); keep (nnz,)
    bool; new_keys (m,) int64 flat positions ``row * n_in + col``, sorted,
    distinct and inside the matrix; new_values (m,) data's dtype. Returns
    the canonical CSR of the kept and new entries (int32 structure) and
    ``src`` (int64): the old data index of every entry, -1 for a new one.
    None when a new position is a kept connection.

    Readable twin: :func:`snn_core.kernels.reference.csr_merge`.
    """
    total = int(np.count_nonzero(keep)) + len(new_keys)
    out_indptr = np.empty(len(indptr), np.int32)
    out_indices = np.empty(total, np.int32)
    out_data = np.empty(total, data.dtype)
    src = np.empty(total, np.int64)
    if not _csr_merge(indptr, indices, data, keep, new_keys, new_values, np.int64(n_in),
                      out_indptr, out_indices, out_data, src):
        return None
    return out_indptr, out_indices, out_data, src


# --------------------------------------------------------------------------
# Sorted key sets (the rewiring history's turnover)
# --------------------------------------------------------------------------
# Binary searches of ~11,000 keys in 55,000-100,000 cost 0.3-0.5 ms each
# (a cache miss per probe); both arrays are sorted, so one merge walk does it.
@numba.njit(**_jit)
def _sorted_member(a, b, out):
    j = 0
    for i in range(a.shape[0]):
        while j < b.shape[0] and b[j] < a[i]:
            j += 1
        out[i] = j < b.shape[0] and b[j] == a[i]


def sorted_member(a, b):
    """Which entries of ``a`` occur in ``b``: a bool array like a.

    a, b : 1-D int64, each sorted ascending (not checked here).

    Readable twin: :func:`snn_core.kernels.reference.sorted_member`.
    """
    out = np.empty(len(a), np.bool_)
    _sorted_member(a, b, out)
    return out


@numba.njit(**_jit)
def _sorted_merge(a, b, out):
    i = j = 0
    for k in range(out.shape[0]):
        if j == b.shape[0] or (i < a.shape[0] and a[i] <= b[j]):
            out[k] = a[i]
            i += 1
        else:
            out[k] = b[j]
            j += 1


def sorted_merge(a, b):
    """The entries of ``a`` and ``b`` in one sorted array (length len(a) + len(b)).

    a, b : 1-D int64, each sorted ascending (not checked here).

    Readable twin: :func:`snn_core.kernels.reference.sorted_merge`.
    """
    out = np.empty(len(a) + len(b), np.int64)
    _sorted_merge(a, b, out)
    return out
