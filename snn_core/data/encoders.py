"""Spike encoders: float32 intensities (batch, features) -> input trains (T, batch, features).

:func:`frames_encode` instead takes samples that already are sequences of T
frames (batch, T, features), such as integrated DVS events, and only changes
their layout.

Memory layout (all encoders)
----------------------------
The returned array indexes as ``(T, B, F)`` (time-major) but is a
*transposed view* of a C-contiguous ``(F, T, B)`` float32 buffer, i.e. it is
stored feature-major: ``spikes.base`` is that buffer and
``spikes.transpose(2, 0, 1)`` gives it back without copying. The engine's
kernels walk one input feature's (T, B) block at a time, so they consume this
layout without a copy. Pass ``out=`` (a C-contiguous float32 ``(F, T, B)``
array) to reuse a buffer across batches.

Spike dtype
-----------
The spike encoders (Bernoulli, Poisson, latency) also write uint8 spikes
(``dtype=np.uint8``, or a uint8 ``out``): the same 0/1 values in a quarter
of the memory. The network takes them as they are (``Network.forward``):
a first ``SparseLinear`` on the ``cpu`` backend packs them without a float
copy, other layers convert them, and the results are the same bits.

Random number generation
------------------------
Bernoulli/Poisson draws use a counter-based SplitMix64 stream with
``s = mix64(seed)``. The intensity ``p`` of input ``f`` of sample ``b`` is
the same at every step, so its ``T`` draws come from ``G = ceil(T / 4)``
64-bit words, each cut into four 16-bit uniforms::

    z[f, g, b] = mix64(s + ((f * G + g) * B + b + 1) * GAMMA)     # g < G
    u[f, t, b] = (z[f, t // 4, b] >> (16 * (t % 4))) & 0xFFFF      # in [0, 2**16)
    spike[f, t, b] = u[f, t, b] < round(p * 2**16)

i.e. word counter ``k = (f * G + g) * B + b`` is the linear index into an
``(F, G, B)`` array of words and lane ``t % 4`` of word ``t // 4`` decides
step ``t`` (lanes past ``T`` in the last word are unused). The threshold
``round(p * 2**16) = floor(p * 65536 + 0.5)`` (an integer in [0, 65536]) is
exact in float32, so the spike probability is ``p`` rounded to a multiple of
``2**-16`` (p = 0 never spikes, p = 1 always). Each draw depends only on
(seed, f, t, b, B, T), so the numba kernel gives identical results for any
thread count and serial/parallel choice, and :func:`_bernoulli_numpy`
reproduces it bit for bit. It also does not depend on which other features
are drawn: ``features=`` (draw only some inputs) leaves the drawn rows as
they are without it. (Every backend encodes on the host.)
"""

from __future__ import annotations

import numbers

import numba
import numpy as np
from numba.extending import overload

from ..kernels.cpu import borrow, pick_version
from .dvs import frames_to_sequence

__all__ = [
    "bernoulli_encode",
    "poisson_encode",
    "direct_encode",
    "latency_encode",
    "frames_encode",
    "get_encoder",
    "ENCODERS",
    "SPIKE_ENCODERS",
    "RANDOM_ENCODERS",
]

_MASK64 = (1 << 64) - 1
_GAMMA_INT = 0x9E3779B97F4A7C15
_M1_INT = 0xBF58476D1CE4E5B9
_M2_INT = 0x94D049BB133111EB
# np.uint64 globals are frozen as typed constants by numba, which keeps every
# operation below in uint64 (mixing with Python ints would promote to float64).
_GAMMA = np.uint64(_GAMMA_INT)
_M1 = np.uint64(_M1_INT)
_M2 = np.uint64(_M2_INT)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_ONE = np.uint64(1)


# --------------------------------------------------------------------------- RNG


def _mix64_int(z: int) -> int:
    """SplitMix64 finaliser on a Python int (used once per call to hash the seed)."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * _M1_INT) & _MASK64
    z = ((z ^ (z >> 27)) * _M2_INT) & _MASK64
    return z ^ (z >> 31)


def _stream_state(seed) -> np.uint64:
    """Map ``seed`` (None, int or np.random.Generator) to a uint64 stream state.

    A Generator is advanced by one draw, so repeated calls with the same
    Generator give fresh spikes; an int always gives the same spikes.
    """
    if seed is None:
        seed = np.random.default_rng()
    if isinstance(seed, np.random.Generator):
        raw = int(seed.integers(0, 2**64, dtype=np.uint64))
    elif isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        raw = int(seed)
    else:
        raise TypeError(f"seed must be None, an int or a numpy Generator, got {type(seed).__name__}")
    # Hashing the seed decorrelates streams of nearby seeds (0, 1, 2, ...).
    return np.uint64(_mix64_int(raw))


@numba.njit(cache=True, inline="always")
def _mix64(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


_MASK16 = np.uint64(0xFFFF)
_S16, _S32, _S48 = np.uint64(16), np.uint64(32), np.uint64(48)
_SCALE16 = np.float32(65536.0)
_HALF = np.float32(0.5)
#: Estimated serial cost (ns) of one output element of the Bernoulli kernel
#: (a quarter of a hash, a compare and a float32 store); picks serial/parallel.
_NS_BERNOULLI = 0.2
#: Input features per tile of the Bernoulli kernel. A tile's intensities are
#: transposed from the (batch, features) input into a (32, batch) block: each
#: sample's 32 features are two cache lines, and the block (12.5 KB at batch
#: 100) stays in L1 while its rows are drawn. Transposing tile by tile inside
#: the kernel replaced a separate NumPy transpose and min/max pass that cost
#: 0.09-0.12 ms per 100 MNIST images in the training loop; 16 and 64 measured
#: slower (docs/benchmarks.md, "An encoder that draws only what is read").
_TILE = 32


@numba.njit(cache=True, inline="always")
def _threshold16(p):
    """round(p * 2**16) as uint64 in [0, 65536]; exact in float32 for p in [0, 1]."""
    return np.uint64(p * _SCALE16 + _HALF)


@numba.njit(cache=True, nogil=True, inline="always")
def _bernoulli_row(f, p, state, out):
    """Draws of one input feature f with intensities p (B,): out[f, t, b] for all t, b (module docstring)."""
    T, B = out.shape[1], out.shape[2]
    G = (T + 3) // 4
    one = np.float32(1.0)
    zero = np.float32(0.0)
    for g in range(T // 4):  # full words: four steps each
        base = np.uint64((f * G + g) * B) + _ONE
        t = 4 * g
        for b in range(B):
            th = _threshold16(p[b])
            z = _mix64(state + (base + np.uint64(b)) * _GAMMA)
            out[f, t, b] = one if (z & _MASK16) < th else zero
            out[f, t + 1, b] = one if ((z >> _S16) & _MASK16) < th else zero
            out[f, t + 2, b] = one if ((z >> _S32) & _MASK16) < th else zero
            out[f, t + 3, b] = one if (z >> _S48) < th else zero
    if T % 4:  # last word, first T % 4 lanes used
        g = T // 4
        base = np.uint64((f * G + g) * B) + _ONE
        for b in range(B):
            th = _threshold16(p[b])
            z = _mix64(state + (base + np.uint64(b)) * _GAMMA)
            for t in range(4 * g, T):
                out[f, t, b] = one if (z & _MASK16) < th else zero
                z >>= _S16


_LOW32 = np.uint64(0xFFFFFFFF)
_MASK16_32 = np.uint32(0xFFFF)
_U32_0, _U32_16 = np.uint32(0), np.uint32(16)


@numba.njit(cache=True, nogil=True, inline="always")
def _lane_bytes(out, f, t, w, shift, th):
    """out[f, t, :] = the 16-bit uniforms at bit ``shift`` of the uint32 half-words ``w`` (B,) below ``th`` (B,)."""
    for b in range(out.shape[2]):
        out[f, t, b] = ((w[b] >> shift) & _MASK16_32) < th[b]


@numba.njit(cache=True, nogil=True, inline="always")
def _bernoulli_row_bytes(f, p, state, out, th, lo, hi):
    """:func:`_bernoulli_row` for a uint8 ``out`` (same draws). All B words of a step group are hashed
    first, their halves kept in ``lo`` and ``hi`` (uint32, B), then each lane is compared for all B
    samples (thresholds in ``th``, uint32). In this order the compares and byte stores vectorise, and
    32-bit lanes compare twice as many samples per instruction as the 64-bit words (20-28% faster rows
    than comparing the words, docs/benchmarks.md; the float loop's order ran 1.6-1.9x slower)."""
    T, B = out.shape[1], out.shape[2]
    G = (T + 3) // 4
    for b in range(B):
        th[b] = np.uint32(_threshold16(p[b]))
    for g in range(G):
        base = np.uint64((f * G + g) * B) + _ONE
        for b in range(B):
            z = _mix64(state + (base + np.uint64(b)) * _GAMMA)
            lo[b] = np.uint32(z & _LOW32)
            hi[b] = np.uint32(z >> _S32)
        t, lanes = 4 * g, min(4, T - 4 * g)
        _lane_bytes(out, f, t, lo, _U32_0, th)
        if lanes > 1:
            _lane_bytes(out, f, t + 1, lo, _U32_16, th)
        if lanes > 2:
            _lane_bytes(out, f, t + 2, hi, _U32_0, th)
        if lanes > 3:
            _lane_bytes(out, f, t + 3, hi, _U32_16, th)


def _draw_row(f, p, state, out, scratch, j):
    """Row f of the draws into ``out``: :func:`_bernoulli_row` (float) or :func:`_bernoulli_row_bytes`
    (uint8, with tile j's ``scratch[j]``), chosen when Numba compiles the caller for out's dtype (so each
    version keeps its own loop)."""
    raise NotImplementedError("compiled code only")


@overload(_draw_row, inline="always")
def _draw_row_for(f, p, state, out, scratch, j):
    if out.dtype == numba.types.uint8:
        return lambda f, p, state, out, scratch, j: _bernoulli_row_bytes(f, p, state, out, scratch[j, 0],
                                                                         scratch[j, 1], scratch[j, 2])
    return lambda f, p, state, out, scratch, j: _bernoulli_row(f, p, state, out)


@numba.njit(cache=True, nogil=True, inline="always")
def _bernoulli_tile(j, x, scale, state, features, out, scratch):
    """Tile j (features 32j ... 32j + 31) of :func:`_bernoulli_kernel`; returns how many of its
    intensities lie outside [0, 1] (NaN included). ``scratch[j]``: (3, B) uint32 of the uint8 rows."""
    B, F = x.shape
    f0 = j * _TILE
    n = min(_TILE, F - f0)
    p = np.empty((_TILE, B), np.float32)
    for b in range(B):
        for k in range(n):
            p[k, b] = x[b, f0 + k]
    one = np.float32(1.0)
    inside = 0
    for k in range(n):
        for b in range(B):
            v = p[k, b]
            inside += (v >= 0) & (v <= 1)  # NaN fails both
            p[k, b] = min(v * scale, one)  # poisson_encode's p = min(x * rate * dt, 1), in float32
    for k in range(n):
        if features.size == 0 or features[f0 + k]:
            _draw_row(f0 + k, p[k], state, out, scratch, j)
    return n * B - inside


@numba.njit(cache=True, nogil=True)
def _bernoulli_ser(x, scale, state, features, out):
    x = borrow(x)  # no reference counting per tile (see kernels.cpu.borrow)
    out = borrow(out)
    features = borrow(features)
    n_tiles = (x.shape[1] + _TILE - 1) // _TILE
    scratch = np.empty((n_tiles if out.itemsize == 1 else 0, 3, x.shape[0]), np.uint32)  # owned: not borrowed
    bad = 0
    for j in range(n_tiles):
        bad += _bernoulli_tile(j, x, scale, state, features, out, scratch)
    return bad


@numba.njit(cache=True, nogil=True, parallel=True)
def _bernoulli_par(x, scale, state, features, out):
    x = borrow(x)
    out = borrow(out)
    features = borrow(features)
    n_tiles = (x.shape[1] + _TILE - 1) // _TILE
    scratch = np.empty((n_tiles if out.itemsize == 1 else 0, 3, x.shape[0]), np.uint32)  # owned: not borrowed
    bad = 0
    for j in numba.prange(n_tiles):
        bad += _bernoulli_tile(j, x, scale, state, features, out, scratch)
    return bad


def _bernoulli_kernel(x, scale, state, features, out, parallel=None):
    """Draw ``out`` (F, T, B), float32 or uint8, from float32 intensities ``x`` (B, F) times ``scale`` (capped at 1).

    Only the rows f with ``features[f] != 0`` are written (an empty
    ``features``: every row). Returns the number of values of ``x`` outside
    [0, 1] or NaN, all of ``x`` counted; nonzero means ``out`` holds nothing
    meaningful. Serial or parallel over tiles of features by estimated work,
    or as ``parallel`` (True/False) says (identical results either way).
    Readable twin: :func:`_bernoulli_numpy` on ``min(x.T * scale, 1)``.
    """
    if parallel is False:
        kernel = _bernoulli_ser
    else:  # True: as if the work were endless, so still serial where no parallel region may start (a forked child)
        rows = out.shape[0] if features.size == 0 else int(np.count_nonzero(features))
        work = np.inf if parallel else rows * out.shape[1] * out.shape[2] * _NS_BERNOULLI
        kernel = pick_version(_bernoulli_ser, _bernoulli_par, work)
    return kernel(x, np.float32(scale), state, features, out)


def _bernoulli_numpy(p_fb: np.ndarray, state: np.uint64, out: np.ndarray) -> None:
    """Plain NumPy reference for :func:`_bernoulli_kernel`: every row of ``out`` (F, T, B) drawn from
    intensities ``p_fb`` (F, B) (same draws, bit-identical)."""
    F, T, B = out.shape
    G = (T + 3) // 4
    k = np.arange(1, F * G * B + 1, dtype=np.uint64).reshape(F, G, 1, B)
    z = state + k * _GAMMA  # uint64 arrays wrap modulo 2**64, as intended
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    z ^= z >> _S31
    lanes = np.array([0, 16, 32, 48], dtype=np.uint64).reshape(1, 1, 4, 1)
    u16 = ((z >> lanes) & _MASK16).reshape(F, 4 * G, B)[:, :T]  # lane l of word g is step 4g + l
    th = (p_fb * _SCALE16 + _HALF).astype(np.uint64)  # round(p * 2**16), exact in float32
    np.less(u16, th[:, None, :], out=out, casting="unsafe")


# --------------------------------------------------------------------------- validation


def _check_T(T) -> int:
    if not isinstance(T, numbers.Integral) or isinstance(T, bool) or T < 1:
        raise ValueError(f"T (number of time steps) must be an integer >= 1, got {T!r}")
    return int(T)


def _as_rows(x) -> np.ndarray:
    """Validate x's shape and dtype; return it as float32 (batch, features), C-contiguous (no copy if it was)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (batch, features), got shape {x.shape}")
    if x.dtype.kind not in "fiub":
        raise ValueError(f"x must be numeric, got dtype {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _check_values(x: np.ndarray, unit_range: bool = True) -> None:
    """Raise ValueError naming the problem if float32 x holds NaN, or values outside [0, 1] (or inf)."""
    if not x.size:
        return
    lo, hi = float(x.min()), float(x.max())  # NaN propagates through min/max
    if np.isnan(lo) or np.isnan(hi):
        raise ValueError("x contains NaN")
    if unit_range and (lo < 0.0 or hi > 1.0):
        raise ValueError(
            f"x must lie in [0, 1], got min {lo:g}, max {hi:g} (uint8 images: use to_float first)"
        )
    if not unit_range and not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("x contains inf")


def _as_batch(x, unit_range: bool = True) -> np.ndarray:
    """Validate x and return it as float32 (F, B) C-contiguous (feature-major, like the output)."""
    x = _as_rows(x)
    _check_values(x, unit_range)
    return np.ascontiguousarray(x.T)


_EVERY_FEATURE = np.zeros(0, np.uint8)  # "no feature mask": the kernel draws every row


def _feature_mask(features, F: int) -> np.ndarray:
    """``features`` as the kernel takes it: uint8 (F,) (1 = draw), or the empty array for None (all)."""
    if features is None:
        return _EVERY_FEATURE
    m = np.asarray(features)
    if m.shape != (F,) or m.dtype not in (np.bool_, np.uint8):
        raise ValueError(f"features must be a bool or uint8 mask of shape ({F},), one entry per input "
                         f"feature, got {m.shape} {m.dtype}")
    return np.ascontiguousarray(m).view(np.uint8)


#: what the spike encoders write: float32 (the layers' dtype) or uint8 (the same 0/1 in one byte)
SPIKE_DTYPES = (np.dtype(np.float32), np.dtype(np.uint8))


def _spike_dtype(dtype, out) -> np.dtype:
    """The spike encoders' output dtype: ``dtype`` (float32 or uint8), else out's, else float32."""
    if dtype is None:
        return out.dtype if isinstance(out, np.ndarray) and out.dtype in SPIKE_DTYPES else SPIKE_DTYPES[0]
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in SPIKE_DTYPES:
        raise ValueError(f"dtype must be float32 or uint8 (spikes), got {dtype!r}")
    return dt


def _out_buffer(out, F: int, T: int, B: int, dtype=np.float32) -> np.ndarray:
    if out is None:
        return np.empty((F, T, B), dtype=dtype)
    if (
        not isinstance(out, np.ndarray)
        or out.shape != (F, T, B)
        or out.dtype != dtype
        or not out.flags.c_contiguous
        or not out.flags.writeable
    ):
        got = f"{out.shape} {out.dtype}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(
            f"out must be a writable C-contiguous {np.dtype(dtype)} array of shape (F, T, B) = {(F, T, B)}, got {got}"
        )
    return out


def _view(buf: np.ndarray) -> np.ndarray:
    return buf.transpose(1, 2, 0)


# --------------------------------------------------------------------------- encoders


def _bernoulli(x, T, scale: float, seed, out, backend: str, features, dtype, parallel) -> np.ndarray:
    """Draw spikes with p = min(x * scale, 1) into ``out`` (or a new buffer); see :func:`bernoulli_encode`."""
    x = _as_rows(x)
    B, F = x.shape
    T = _check_T(T)
    dtype = _spike_dtype(dtype, out)
    mask = _feature_mask(features, F)
    if out is None and mask.size:  # the rows not drawn are zeros in a new buffer
        buf = np.zeros((F, T, B), dtype)
    else:
        buf = _out_buffer(out, F, T, B, dtype)
    state = _stream_state(seed)
    if backend == "numba":
        # the kernel checks every value on its way (one pass over x instead of three); only a
        # failed check pays for the NumPy one, for its message
        if buf.size and _bernoulli_kernel(x, scale, state, mask, buf, parallel):
            _check_values(x)
    elif backend == "numpy":
        p = _as_batch(x)
        if scale != 1.0:
            p = np.minimum(p * np.float32(scale), np.float32(1.0))
        if mask.size:
            rows = mask.view(bool)
            drawn = np.empty_like(buf)
            _bernoulli_numpy(p, state, drawn)
            buf[rows] = drawn[rows]
        else:
            _bernoulli_numpy(p, state, buf)
    else:
        raise ValueError(f"backend must be 'numba' or 'numpy', got {backend!r}")
    return _view(buf)


def _check_parallel(parallel):
    if parallel is not None and not isinstance(parallel, (bool, np.bool_)):
        raise ValueError(f"parallel must be None, True or False, got {parallel!r}")
    return parallel


def bernoulli_encode(x, T: int, seed=None, out=None, backend: str = "numba", features=None,
                     dtype=None, parallel=None) -> np.ndarray:
    """Rate coding: at every step each input spikes with probability equal to its intensity
    (rounded to a multiple of 2**-16; see the module docstring).

    Parameters
    ----------
    x : array_like
        (batch, features) intensities in [0, 1] (e.g. :func:`~snn_core.data.to_float` output).
    T : int
        Number of time steps, >= 1.
    seed : None, int or np.random.Generator
        Same int -> identical spikes (for any numba thread count). A Generator
        is advanced by one draw per call. None -> fresh OS entropy.
    out : np.ndarray, optional
        Reused buffer, C-contiguous float32 or uint8 of shape (features, T, batch).
    backend : {"numba", "numpy"}
        Compiled kernel (serial or parallel by size), or the slower NumPy
        reference; bit-identical.
    features : bool or uint8 array (features,), optional
        Draw only the input features marked 1; the rows of the others are
        not written (zeros in a new buffer; with ``out``, what it held).
        The drawn rows are the same bits as without a mask. Give the mask of
        :meth:`~snn_core.network.Network.input_rows_needed` and the inputs
        that no connection reads cost nothing (the ``Trainer`` does). Every
        value of x is still checked.
    dtype : None, float32 or uint8
        The spikes' dtype; None: out's, or float32 without ``out``. uint8
        spikes take a quarter of the memory and go into ``Network.forward``
        as they are (module docstring, "Spike dtype").
    parallel : None, True or False
        The numba kernel on every core or one: None chooses by size, True
        takes the parallel kernel wherever one may run, False always draws
        on the calling thread alone (what a background thread must do: see
        :class:`~snn_core.data.EncodeAhead`). Same bits either way.

    Returns
    -------
    np.ndarray
        float32 (or uint8) spikes in {0, 1}, indexing (T, batch, features),
        stored feature-major: a transposed view of the (features, T, batch)
        buffer (``out`` if given). See the module docstring.

    Raises
    ------
    ValueError
        x not 2-D, outside [0, 1] or NaN; T < 1; bad ``out``, ``features``
        or ``dtype`` (or ``out`` of another dtype than ``dtype``). (The
        range is checked while drawing: after this error ``out`` may hold
        partly drawn spikes.)
    """
    return _bernoulli(x, T, 1.0, seed, out, backend, features, dtype, _check_parallel(parallel))


def poisson_encode(
    x, T: int, max_rate: float = 1000.0, dt: float = 1e-3, seed=None, out=None, backend: str = "numba",
    features=None, dtype=None, parallel=None,
) -> np.ndarray:
    """Poisson rate coding: Bernoulli spikes with p = min(x * max_rate * dt, 1) per step.

    Parameters
    ----------
    x : array_like
        (batch, features) intensities in [0, 1]; 1 maps to ``max_rate``.
    T : int
        Number of time steps, >= 1.
    max_rate : float
        Firing rate in Hz of an input with intensity 1 (>= 0).
    dt : float
        Step length in seconds (> 0). With the defaults p == x, and the
        result equals :func:`bernoulli_encode` for the same seed.
    seed, out, backend, features, dtype, parallel
        As in :func:`bernoulli_encode`.

    Returns
    -------
    np.ndarray
        float32 (or uint8) (T, batch, features) view of a feature-major (features, T, batch) buffer.
    """
    if not (max_rate >= 0.0 and np.isfinite(max_rate)):
        raise ValueError(f"max_rate must be finite and >= 0 Hz, got {max_rate}")
    if not (dt > 0.0 and np.isfinite(dt)):
        raise ValueError(f"dt must be finite and > 0 s, got {dt}")
    return _bernoulli(x, T, float(max_rate) * float(dt), seed, out, backend, features, dtype,
                      _check_parallel(parallel))


def direct_encode(x, T: int, out=None) -> np.ndarray:
    """Direct (current) coding: the analog input is presented unchanged at every step.

    Parameters
    ----------
    x : array_like
        (batch, features), any finite real values (typically intensities in [0, 1]).
    T : int
        Number of time steps, >= 1.
    out : np.ndarray, optional
        Reused C-contiguous float32 (features, T, batch) buffer, filled with
        the T copies.

    Returns
    -------
    np.ndarray
        float32 (T, batch, features), ``result[t] == x`` for every t. With
        ``out``: a view of ``out``. Without: a read-only view that shows one
        (features, 1, batch) frame at every step (time stride 0), which the
        synaptic layers (``Linear``, ``SparseLinear``, the convolutions)
        compute once instead of T times; copy it to write into it.
    """
    xt = _as_batch(x, unit_range=False)
    T = _check_T(T)
    if out is None:
        frame = _view(_out_buffer(None, xt.shape[0], 1, xt.shape[1]))
        frame[0] = xt.T
        return np.broadcast_to(frame, (T,) + frame.shape[1:])
    buf = _out_buffer(out, xt.shape[0], T, xt.shape[1])
    buf[...] = xt[:, None, :]
    return _view(buf)


def latency_encode(
    x, T: int, threshold: float = 0.0, mapping: str = "linear", tau: float = 5.0, out=None, dtype=None
) -> np.ndarray:
    """Time-to-first-spike coding: each input above ``threshold`` spikes exactly once,
    brighter inputs earlier; inputs at or below ``threshold`` never spike.

    Spike step (rounded to nearest, ties to even; brighter never later):

    - ``mapping="linear"``: ``t = round((1 - x) * (T - 1))``; x = 1 fires at
      step 0, x -> threshold fires near step T - 1.
    - ``mapping="log"``: RC-charging time ``t = round(tau * ln(x / (x - threshold)))``
      (needs threshold > 0); inputs whose t would exceed T - 1 do not spike.

    Parameters
    ----------
    x : array_like
        (batch, features) intensities in [0, 1].
    T : int
        Number of time steps, >= 1.
    threshold : float
        Inputs with x <= threshold stay silent. In [0, 1).
    mapping : {"linear", "log"}
    tau : float
        Time constant in steps for ``mapping="log"`` (> 0).
    out : np.ndarray, optional
        Reused C-contiguous float32 or uint8 (features, T, batch) buffer (zeroed here).
    dtype : None, float32 or uint8
        As in :func:`bernoulli_encode`.

    Returns
    -------
    np.ndarray
        float32 (or uint8) spikes in {0, 1}, (T, batch, features) view of a
        feature-major (features, T, batch) buffer; at most one spike per
        (batch, feature).
    """
    xt = _as_batch(x)
    T = _check_T(T)
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    fire = xt > np.float32(threshold)
    if mapping == "linear":
        steps = np.rint((np.float32(1.0) - xt) * np.float32(T - 1))
    elif mapping == "log":
        if threshold <= 0.0:
            raise ValueError("mapping='log' needs threshold > 0")
        if not tau > 0.0:
            raise ValueError(f"tau must be > 0, got {tau}")
        # ln(x / (x - th)) written as log1p(th / (x - th)) in float64: each
        # step is monotone in x, so rounding cannot make a brighter input later.
        with np.errstate(divide="ignore", invalid="ignore"):
            steps = np.rint(tau * np.log1p(threshold / (xt.astype(np.float64) - threshold)))
        fire &= steps <= T - 1
    else:
        raise ValueError(f"mapping must be 'linear' or 'log', got {mapping!r}")
    buf = _out_buffer(out, xt.shape[0], T, xt.shape[1], _spike_dtype(dtype, out))
    buf.fill(0)
    f_idx, b_idx = np.nonzero(fire)
    buf[f_idx, steps[f_idx, b_idx].astype(np.intp), b_idx] = 1
    return _view(buf)


def frames_encode(x, T: int, out=None) -> np.ndarray:
    """Frame sequences (event-camera frames, e.g. DVS-CIFAR10) presented one frame per step, unchanged.

    The samples already have their T steps (:func:`~snn_core.data.dvs.events_to_frames`
    counts); nothing is drawn or rescaled. Uses
    :func:`~snn_core.data.dvs.frames_to_sequence`.

    Parameters
    ----------
    x : array_like
        (batch, T, features): one flattened frame per step, any finite values
        (event counts are fed as they are).
    T : int
        Number of time steps; must equal ``x.shape[1]``.
    out : np.ndarray, optional
        Reused C-contiguous float32 (features, T, batch) buffer.

    Returns
    -------
    np.ndarray
        float32 (T, batch, features), ``result[t, b] == x[b, t]``: a view of
        a feature-major (features, T, batch) buffer (``out`` if given).

    Raises
    ------
    ValueError
        x not 3-D numeric, NaN or inf in x, T < 1, ``x.shape[1] != T``, bad ``out``.
    """
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"frames encoder: x must be 3-D (batch, T, features), got shape {x.shape}")
    if x.dtype.kind not in "fiub":
        raise ValueError(f"frames encoder: x must be numeric, got dtype {x.dtype}")
    T = _check_T(T)
    if x.shape[1] != T:
        raise ValueError(f"frames encoder: the samples have {x.shape[1]} frames but T (steps) is {T}; "
                         f"integrate the events into {T} frames or set steps to {x.shape[1]}")
    if x.size and x.dtype.kind == "f" and not (np.isfinite(x.min()) and np.isfinite(x.max())):
        raise ValueError("frames encoder: x contains NaN or inf")
    B, F = x.shape[0], x.shape[2]
    buf = None if out is None else _out_buffer(out, F, T, B)
    return frames_to_sequence(x.reshape(B, T, F, 1, 1), np.float32, out=buf)


#: the encoders that draw spikes and so also write uint8 (``dtype=np.uint8``)
SPIKE_ENCODERS = ("bernoulli", "poisson", "latency")
#: the random ones among them: they take ``seed``, ``features`` and ``parallel`` (what
#: :class:`~snn_core.data.EncodeAhead` calls)
RANDOM_ENCODERS = ("bernoulli", "poisson")

ENCODERS = {
    "bernoulli": bernoulli_encode,
    "poisson": poisson_encode,
    "direct": direct_encode,
    "latency": latency_encode,
    "frames": frames_encode,
}


def get_encoder(name: str):
    """Encoder function by name: ``"bernoulli"``, ``"poisson"``, ``"direct"``, ``"latency"`` or ``"frames"``.

    Every encoder takes ``(x, T, **options)`` and returns float32 (T, batch,
    features) stored feature-major; ``x`` is (batch, features) for the first
    four and (batch, T, features) frame sequences for ``"frames"``. The
    spike encoders (:data:`SPIKE_ENCODERS`) also take ``dtype=np.uint8``.
    """
    try:
        return ENCODERS[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown encoder {name!r}; valid names: {', '.join(ENCODERS)}") from None
