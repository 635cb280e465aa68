"""Layers with explicit ``forward`` / ``backward``.

Every layer maps an array indexed ``(T, batch, features)`` to another, over
*all* T steps in one call: synapses are the same at every step, so a synaptic
layer handles the whole sequence at once, and a neuron layer runs its time
loop inside one compiled kernel. (A layer with recurrent connections would
own its time loop the same way; nothing else changes.)

Memory layout. Arrays index time-major, ``x[t, b, f]``, but the engine
*stores* them feature-major: outputs are transposed views of C-contiguous
``(features, T, batch)`` buffers, so a synapse touches one contiguous row of
``T * batch`` values. Any layout is accepted as input (a time-major array is
copied once into feature-major order); feeding a layer's output to the next
layer costs no copy. Encoders in :mod:`snn_core.data.encoders` produce
feature-major arrays directly.

Repeated frames. An input whose time axis has stride 0 (one frame shown at
every step, as :func:`~snn_core.data.encoders.direct_encode` returns it) is
computed once by the layers that are linear and memoryless per step
(``Linear``, ``SparseLinear`` and the convolutions): their output is that
one result copied to every step, and their weight gradient
``sum_t G[t] x^T`` is ``(sum_t G[t]) x^T``. The first layer of a
direct-coded network thus costs one step instead of T; the results are the
same up to float summation order.

The layer contract (what the network, optimizers and rewiring rely on):

- ``forward(x, record=False) -> y`` caches what ``backward`` needs on the
  instance (never on the class) and, with ``record=True``, leaves
  ``self.recorded`` (a dict of ``(T, batch, features)`` arrays);
- ``backward(grad_y) -> grad_x`` accumulates parameter gradients and returns
  the gradient w.r.t. the input (``None`` when ``need_input_grad`` is False);
- ``parameters()`` lists :class:`~snn_core.parameter.Parameter` objects;
- a layer whose ``takes_row_masks`` is True (``SparseLinear`` and ``LIF`` on
  a backend with ``row_masks``) also accepts ``backward(grad_y, live=None,
  mask_out=False)``: ``live`` (uint8, one entry per output feature) marks
  with 0 the features whose gradient rows are zero, which are then not read
  (their values may be anything); with ``mask_out=True`` rows of the
  returned gradient that are zero may be left unwritten, and
  ``input_grad_live`` says which (0) or is None when all were written.
  :meth:`~snn_core.network.Network.backward` passes these masks between
  neighbours that both take them, so that the rows of neurons without a path
  to the loss (e.g. hidden neurons without outgoing connections) cost
  nothing in BPTT; the gradients are the same bits as without masks;
- such a layer also accepts ``forward(x, record=False, live=None,
  live_in=None)``: ``live`` (uint8, one entry per output feature) marks
  with 0 the output rows that nothing reads, which are then not computed
  (left unwritten), and ``live_in`` marks with 0 the rows of ``x`` that hold
  no values (a masked forward of the layer before). ``input_rows_needed(live)``
  says which input rows the layer reads for the output rows ``live``.
  :meth:`~snn_core.network.Network.forward` (without ``record``) passes
  these masks down the layers, so that neurons whose spikes reach nothing
  (hidden neurons without outgoing connections) are not simulated: the
  network's output and every gradient are the same bits, and what such
  a neuron would have done is not known (with ``record=True`` every row is
  computed). A ``LIF`` whose last forward was masked marks the final
  membrane of the skipped neurons NaN in ``v_last``, and its ``backward``
  refuses a gradient for them that is not zero;
- ``in_features`` / ``out_features`` give the sizes for shape checks.

Backends. A layer computes through ``self.backend`` (see
:mod:`snn_core.backends`): it allocates through the backend, calls its
kernels and never imports a kernel module, so the same layer object runs on
``reference``, ``cpu`` and ``cuda``; ``layer.to(device)`` moves its
parameters. Its state is a dict of host arrays (``state_dict`` /
``load_state_dict``), the same on every backend.

Bad input raises ``TypeError`` (wrong type/dtype) or ``ValueError`` (shape,
non-finite values) naming the layer and what was expected.
"""
from __future__ import annotations

import numpy as np

from .backends import get_backend
from .backends.base import RecentShapes, host_feature_major
from .backends.cpu import SPIKE_LIST_RATE, SPIKE_PACK_MIN_FANOUT
from .neurons import LIFParams, reset_membrane
from .parameter import Parameter
from .sparse import canonical_csr, check_csr, csr_from_arrays, fan_in_uniform, random_connectivity, transpose_structure

FLOAT_DTYPES = (np.float32, np.float64)

__all__ = ["Layer", "Linear", "SparseLinear", "LIF", "Readout", "feature_major", "time_major", "check_finite",
           "SPIKE_LIST_RATE", "SPIKE_PACK_MIN_FANOUT"]


def _check_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype.type not in FLOAT_DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    return dtype


def check_size(n, what):
    """``n`` as an int >= 1; a bool, float, string or smaller value is an error naming ``what``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{what}: expected a positive integer, got {n!r} ({type(n).__name__})")
    if n < 1:
        raise ValueError(f"{what}: expected a positive integer, got {n}")
    return int(n)


def check_grad_shape(grad_y, out_shape, where):
    """The gradient of an output must have the output's shape ``(T, batch, features)``.

    Called before any kernel or parameter gradient sees ``grad_y``: the
    compiled kernels index by the cached forward shapes and do not check
    bounds.
    """
    shape = getattr(grad_y, "shape", None)
    if shape is not None and tuple(shape) != tuple(out_shape):
        raise ValueError(f"{where}: expected the shape of the last forward output {tuple(out_shape)}, got "
                         f"{tuple(shape)}")


def check_grad_columns(grad_y, n_columns, where):
    """``grad_y`` (T, batch, F) must have ``T * batch == n_columns``, the columns of the last forward input."""
    shape = getattr(grad_y, "shape", None)
    if shape is not None and len(shape) == 3 and shape[0] * shape[1] != n_columns:
        raise ValueError(f"{where}: expected the shape of the last forward output (T * batch = {n_columns}), got "
                         f"{tuple(shape)}")


def check_index_array(a, what, upper):
    """``a`` as int32 after checking it holds integers in ``[0, upper]``.

    A float (``3.7``), a value beyond int32 (``2**32 + 3``) or a negative
    one is an error, never a silent cast to another index.
    """
    arr = np.asarray(a)
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"{what}: expected integer indices, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{what}: expected a 1-d array, got shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() > upper):
        bad = arr.min() if arr.min() < 0 else arr.max()
        raise ValueError(f"{what}: index {bad} out of range [0, {upper}]")
    return arr.astype(np.int32)


#: validate a host ``(T, batch, F)`` array and return its (F, T, B) C-contiguous buffer
feature_major = host_feature_major


def time_major(buf):
    """View a feature-major (F, T, B) host buffer as (T, B, F)."""
    return buf.transpose(1, 2, 0)


def check_finite(arr, what):
    """Raise ValueError if host array ``arr`` holds NaN or Inf (one cheap pass over the raw bits)."""
    n_bad = get_backend("cpu").nonfinite_count(np.asarray(arr))
    if n_bad:
        raise ValueError(f"{what}: contains {n_bad} NaN/Inf value(s)")


class Layer:
    """Base class: see the module docstring for the contract.

    Attributes
    ----------
    backend : snn_core.backends.Backend
        Where the layer's arrays live and which kernels run (default ``cpu``);
        change it with :meth:`to`.
    """

    in_features: int
    out_features: int
    name: str = ""
    #: False for the first layer, whose input (the data) needs no gradient
    need_input_grad: bool = True
    #: True when every output value is exactly 0 or 1 (a spiking layer);
    #: the next synaptic layer may then take its spike-driven path
    emits_spikes: bool = False
    #: the key of ``recorded`` that holds the layer's output (neurons: "spikes" or "u"; None: not recorded)
    output_key = None
    #: training mode (batch statistics in batch norm); ``Network.train()`` / ``eval()`` set it
    training: bool = True
    #: synaptic layers: T when the last forward computed one repeated input frame once, else 1
    frame_repeats: int = 1
    #: True for layers whose forward may pack a 0/1 input into spike form, checking every value on the way
    #: (and changing no state); ``input_was_spikes`` then says whether the last input passed
    packs_spikes: bool = False
    input_was_spikes: bool = False
    #: True when ``backward`` takes row masks (see the module docstring); the mask of the last
    #: ``backward(..., mask_out=True)``'s returned gradient, or None when every row was written
    takes_row_masks: bool = False
    input_grad_live = None

    def __init__(self):
        self.recorded = {}
        self._cache = None
        self.backend = get_backend("cpu")

    def parameters(self):
        """Trainable :class:`~snn_core.parameter.Parameter` objects (none for neurons)."""
        return []

    def forward(self, x, record=False):
        """Map ``x`` (T, batch, in_features) to (T, batch, out_features) over all steps."""
        raise NotImplementedError

    def backward(self, grad_y):
        """Accumulate parameter gradients from dL/dy; return dL/dx (or None)."""
        raise NotImplementedError

    def split_repeated_frame(self, x):
        """``(x[:1], T)`` when ``x`` (T, batch, F) shows one frame at every step (time stride 0), else ``(x, 1)``.

        Only host backends take the shortcut (a device copy is materialised
        anyway). Sets :attr:`frame_repeats`.
        """
        reps = 1
        if (self.backend.is_host and isinstance(x, np.ndarray) and x.ndim == 3 and x.shape[0] > 1
                and x.strides[0] == 0):
            x, reps = x[:1], x.shape[0]
        self.frame_repeats = reps
        return x, reps

    def repeat_frame(self, Y, repeats):
        """Time-major output from the feature-major result ``Y`` (F, 1, B) of a frame computed once.

        The frame is copied to every step of a pooled (F, T, B) buffer, so the
        next layer gets an ordinary output (a copy costs far less than a step).
        """
        if repeats == 1:
            return self.backend.time_major(Y)
        full = self.buffer((Y.shape[0], repeats, Y.shape[2]))
        full[...] = Y
        return self.backend.time_major(full)

    def frame_gradient(self, G3, repeats):
        """dL/d(one repeated frame's output): ``G3`` (F, T, B) summed over time as (F, B); (F, T*B) if not repeated."""
        F, T, B = G3.shape
        if repeats == 1:
            return G3.reshape(F, T * B)
        out = self.buffer((F, B))
        self.backend.time_sum(G3, out)
        return out

    def input_rows_needed(self, live=None):
        """The input features whose values ``forward`` reads when only the output rows ``live`` are wanted.

        A uint8 mask (1 = read) or None for all of them; ``live`` is such a
        mask of output features (None: all). Layers that take row masks say
        which inputs they can do without; the default reads every input.
        A layer whose answer depends on more than ``takes_row_masks`` says
        what in :attr:`row_mask_key`.
        """
        return None

    @property
    def row_mask_key(self):
        """The objects that :attr:`takes_row_masks` and :meth:`input_rows_needed` depend on, as a tuple.

        ``Network`` keeps its row masks until an entry of some layer's key is
        another object than before (compared with ``is``), so a layer whose
        masks follow its state returns that state's objects here (a sparse
        layer: its connection structure, which rewiring replaces).
        """
        return (self.takes_row_masks,)

    def _check_forward_masks(self, live, live_in, record):
        """Check a forward's row masks (see the module docstring)."""
        if live is None and live_in is None:
            return
        if not self.takes_row_masks:
            raise ValueError(f"{self.name}: forward takes no row masks here (takes_row_masks is False)")
        if record:
            raise ValueError(f"{self.name}: record=True computes every row; it takes no row masks")

    def _row_mask_args(self, live, mask_out):
        """Check a backward's row-mask arguments; the uint8 mask for the returned gradient (or None)."""
        if (live is not None or mask_out) and not self.takes_row_masks:
            raise ValueError(f"{self.name}: backward takes no row masks here (takes_row_masks is False)")
        self.input_grad_live = None
        if not mask_out:
            return None
        buf = self.__dict__.get("_live_in")
        if buf is None or buf.shape[0] != self.in_features:
            buf = self._live_in = np.empty(self.in_features, np.uint8)
        return buf

    def buffer(self, shape):
        """An output buffer of the layer's backend and dtype from its pool (reused once unreferenced)."""
        pool = self.__dict__.get("_buffers")
        if pool is None:
            pool = self._buffers = self.backend.pool()
        return pool.get(shape, self.dtype)

    def reset_state(self):
        """Forget cached activations, recordings and pooled buffers (state never carries across calls)."""
        self._cache = None
        self.recorded = {}
        self.__dict__.pop("_buffers", None)

    def to(self, device):
        """Move the layer to backend ``device`` ("reference", "cpu", "cuda" or a Backend); returns self.

        Parameter values move (gradients restart at zero); caches are dropped.
        An optimizer's state follows its parameters at its next step.
        """
        bk = get_backend(device)
        if bk is self.backend:
            return self
        bk.check_dtype(getattr(self, "dtype", np.float32), self.name or type(self).__name__)
        host = self.state_dict()
        old, self.backend = self.backend, bk
        for p in self.parameters():
            p.device = bk.name
            p.replace(bk.to_device(old.to_host(p.value)), grad=bk.zeros(p.value.shape, p.value.dtype))
        self.reset_state()
        self._moved(host)
        return self

    def _moved(self, host_state):
        """Hook for layers with more device state than their parameters (called by :meth:`to`)."""

    def state_dict(self):
        """The layer's arrays as host copies: ``{short parameter name: array}`` plus ``shape`` (n_out, n_in).

        Neuron layers (no parameters) return ``{}``.
        """
        params = self.parameters()
        if not params:
            return {}
        d = {p.name.rsplit(".", 1)[-1]: np.array(self.backend.to_host(p.value), copy=True) for p in params}
        d["shape"] = np.array(self.weight_shape)
        return d

    def load_state_dict(self, state):
        """Put arrays from :meth:`state_dict` back (shapes checked; ValueError naming the array)."""
        for p in self.parameters():
            key = p.name.rsplit(".", 1)[-1]
            if key not in state:
                raise ValueError(f"{self.name}: state has no {key!r} array")
            arr = np.asarray(state[key])
            if arr.shape != p.value.shape:
                raise ValueError(f"{self.name}.{key}: expected shape {p.value.shape}, got {arr.shape}")
            check_finite(arr, f"{self.name}.{key}")
            p.replace(self.backend.to_device(np.array(arr, dtype=p.value.dtype, order="C", copy=True)),
                      grad=self.backend.zeros(p.value.shape, p.value.dtype))

    @property
    def weight_shape(self):
        """Shape of the weight matrix: ``(out_features, in_features)`` (a convolution: its kernel matrix)."""
        return (self.out_features, self.in_features)

    def _needs_cache(self):
        if self._cache is None:
            raise RuntimeError(f"{self.name or type(self).__name__}: backward called before forward")
        return self._cache

    def __repr__(self):
        return f"{type(self).__name__}({self.in_features} -> {self.out_features})"


# --------------------------------------------------------------------------
# Synapses
# --------------------------------------------------------------------------
class Linear(Layer):
    """Dense synapses ``I[t] = W x[t] + b``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    seed : int or numpy.random.Generator
    gain : float
        Initial weights U(-a, a), ``a = gain * sqrt(3 / in_features)``.
    dtype : float32 (default) or float64
    weight : ndarray (out_features, in_features), optional
        Initial weights instead of the random ones.

    Attributes
    ----------
    weight : ndarray (out_features, in_features)
        The weight matrix, as on :class:`SparseLinear` (there a CSR matrix): on
        a host backend the trained array itself, on a device a host copy.
    weight_param, bias : Parameter
    """

    def __init__(self, in_features, out_features, bias=True, seed=None, gain=1.0, dtype=np.float32, weight=None, name="linear"):
        super().__init__()
        self.dtype = _check_dtype(dtype)
        self.in_features = check_size(in_features, f"{name}.in_features")
        self.out_features, self.name = check_size(out_features, f"{name}.out_features"), name
        rng = np.random.default_rng(seed)
        if weight is None:
            a = gain * np.sqrt(3.0 / in_features)
            weight = rng.uniform(-a, a, size=(out_features, in_features))
        weight = np.array(weight, dtype=self.dtype, order="C", copy=True)  # never alias the caller's array
        if weight.shape != (self.out_features, self.in_features):
            raise ValueError(f"{name}.weight: expected shape {(out_features, in_features)}, got {weight.shape}")
        check_finite(weight, f"{name}.weight")
        self.weight_param = Parameter(weight, f"{name}.weight")
        self.bias = Parameter(np.zeros(out_features, self.dtype), f"{name}.bias", decay=False) if bias else None

    @property
    def weight(self):
        """The weight matrix (n_out, n_in): the live array on a host backend, a host copy on a device."""
        return self.backend.to_host(self.weight_param.value)

    def parameters(self):
        """``[weight_param, bias]`` (bias omitted when ``bias=False``)."""
        return [self.weight_param] + ([self.bias] if self.bias is not None else [])

    @property
    def nnz(self):
        """Number of connections: every weight of a dense layer."""
        return self.in_features * self.out_features

    def forward(self, x, record=False):
        bk = self.backend
        x, reps = self.split_repeated_frame(x)
        X3 = bk.feature_major(x, self.in_features, self.dtype, f"{self.name} input", spikes=self.dtype)
        F, T, B = X3.shape
        X = X3.reshape(F, T * B)
        Y = self.buffer((self.out_features, T, B))
        bk.dense_forward(self.weight_param.value, None if self.bias is None else self.bias.value, X,
                         Y.reshape(self.out_features, T * B))
        self._cache = (X, reps)
        out = self.repeat_frame(Y, reps)
        self.recorded = {"current": out} if record else {}
        return out

    def backward(self, grad_y):
        X, reps = self._needs_cache()
        check_grad_columns(grad_y, X.shape[1] * reps, f"{self.name} grad")  # before any gradient is touched
        bk = self.backend
        G3 = bk.feature_major(grad_y, self.out_features, self.dtype, f"{self.name} grad")
        _, T, B = G3.shape
        G = G3.reshape(self.out_features, T * B)
        Gw = self.frame_gradient(G3, reps)
        w = self.weight_param
        bk.dense_grad(Gw, X, w.grad, not w.grad_is_zero)
        w.grad_is_zero = False
        if self.bias is not None:
            bk.row_sum(Gw, self.bias.grad, not self.bias.grad_is_zero)
            self.bias.grad_is_zero = False
        if not self.need_input_grad:
            return None
        GX = self.buffer((self.in_features, T, B))
        bk.dense_backward_input(w.value, G, GX.reshape(self.in_features, T * B))
        return bk.time_major(GX)


class SparseLinear(Layer):
    """Sparse synapses ``I[t] = W x[t] + b`` with W a CSR matrix (n_out, n_in).

    Only existing connections cost time or memory: the forward product, the
    weight gradient (computed only at the connections, never as a dense
    ``n_out x n_in`` array) and the input gradient (through the transposed
    structure) are all O(nnz * T * batch).

    Parameters
    ----------
    in_features, out_features : int
    density : float in (0, 1]
        Fraction of the ``n_out * n_in`` possible connections present,
        placed uniformly at random (exactly ``round(density * n_out * n_in)``).
    bias : bool
    seed : int or numpy.random.Generator
    gain : float
        Weights U(-a, a) with ``a = gain * sqrt(3 / fan_in)`` where ``fan_in``
        is each output neuron's actual number of connections.
    dtype : float32 (default) or float64
    weight : scipy.sparse matrix or dense array (out_features, in_features), optional
        Use this structure and these values instead (every stored entry is a
        connection, explicit zeros included).

    Attributes
    ----------
    weight : scipy.sparse.csr_matrix
        Canonical CSR (int32 sorted indices, no duplicates). On a host backend
        ``weight.data`` is the same array as ``weight_param.value`` (the
        trained values); on a device it is a host snapshot (change the layer
        through ``set_connections`` / ``load_state_dict``).
    weight_param, bias : Parameter
    spike_input : None, True or False
        Spike-driven path (a backend capability: ``cpu`` has it). With an
        input of only 0/1 values (spikes, as LIF layers and the Bernoulli
        encoder produce) the forward product and the weight gradient cost
        O(connections x spikes) instead of O(nnz * T * batch): the input is
        packed once per forward and the pack is reused by backward. None
        (default): used whenever the layer has at least
        ``SPIKE_PACK_MIN_FANOUT`` connections per input and the input turns
        out to be binary; True: pack regardless of fan-out; False: never.
        Results equal the plain path up to float rounding.
    """

    packs_spikes = True
    _input_live = None  # the last forward's live_in (rows of its input that held no values), or None

    def __init__(self, in_features, out_features, density=1.0, bias=True, seed=None, gain=1.0,
                 dtype=np.float32, weight=None, name="sparse_linear"):
        super().__init__()
        self.dtype = _check_dtype(dtype)
        self.in_features = check_size(in_features, f"{name}.in_features")
        self.out_features, self.name = check_size(out_features, f"{name}.out_features"), name
        rng = np.random.default_rng(seed)
        if weight is None:
            indptr, indices = random_connectivity(self.out_features, self.in_features, density, rng)
            data = fan_in_uniform(indptr, rng, gain, self.dtype)
            weight = csr_from_arrays(indptr, indices, data, (self.out_features, self.in_features))
        weight = canonical_csr(weight, self.dtype)
        if weight.shape != (self.out_features, self.in_features):
            raise ValueError(f"{name}.weight: expected shape {(self.out_features, self.in_features)}, got {weight.shape}")
        self.weight_param = Parameter(weight.data, f"{name}.weight")
        self.bias = Parameter(np.zeros(out_features, self.dtype), f"{name}.bias", decay=False) if bias else None
        self._set_weight(weight)
        #: set True (e.g. by gradient-based growth) to keep the output gradient
        #: of the next backward so that :meth:`dense_weight_grad` can run
        self.retain_output_grad = False
        self._last_output_grad = None
        #: spike-driven path: None = use it whenever the input holds only 0/1
        #: (checked for free while packing), False = never, True = pack even
        #: when the layer has few connections per input
        self.spike_input = None
        self._scratch = {}

    # -- structure ---------------------------------------------------------
    def _set_weight(self, weight):
        """Install canonical host CSR ``weight`` (structure and values) on the layer's backend."""
        check_finite(weight.data, f"{self.name}.weight")
        bk = self.backend
        value = bk.to_device(weight.data)
        self.weight_param.replace(value, grad=bk.zeros(value.shape, value.dtype))
        if bk.is_host:
            weight.data = value  # the CSR's data *is* the trained array
        self._csr = weight
        self._struct = (bk.to_device(weight.indptr), bk.to_device(weight.indices))
        self._transpose = None
        self._dev_transpose = None
        self._zeros = None

    @property
    def weight(self):
        """The canonical CSR matrix (live on a host backend, a host snapshot on a device)."""
        if self.backend.is_host:
            return self._csr
        w = self._csr
        return csr_from_arrays(w.indptr, w.indices, self.backend.to_host(self.weight_param.value), w.shape)

    def set_connections(self, indptr, indices, data):
        """Replace the structure and values (used by rewiring).

        The arrays must already be canonical (validated here). Gradients are
        reset; the caller remaps optimizer state.
        """
        # columns of the weight matrix: in_features here, a convolution's c_in*kh*kw (SparseConv2d)
        # check_index_array returns int32 copies: the layer owns all three arrays
        indices = check_index_array(indices, f"{self.name}.set_connections indices", self._csr.shape[1] - 1)
        indptr = check_index_array(indptr, f"{self.name}.set_connections indptr", len(indices))
        data = np.array(data, self.dtype)
        if data.ndim != 1 or len(data) != len(indices):
            raise ValueError(f"{self.name}: {data.size} weights for {len(indices)} connections")
        check_csr(indptr, indices, self._csr.shape)  # canonical: in range, sorted, distinct within rows
        self._set_weight(csr_from_arrays(indptr, indices, data, self._csr.shape))  # canonical_csr would check again

    def _moved(self, host_state):
        self._scratch = {}
        self._set_weight(csr_from_arrays(self._csr.indptr, self._csr.indices,
                                         np.array(host_state["data"], self.dtype), self._csr.shape))

    def state_dict(self):
        """Host copies: ``indptr``, ``indices``, ``data`` (+ ``bias``) and ``shape`` (n_out, n_in)."""
        w = self.weight
        d = {"indptr": w.indptr.copy(), "indices": w.indices.copy(), "data": np.array(w.data, copy=True),
             "shape": np.array(self.weight_shape)}
        if self.bias is not None:
            d["bias"] = np.array(self.backend.to_host(self.bias.value), copy=True)
        return d

    def load_state_dict(self, state):
        """Install a :meth:`state_dict` (structure validated: ValueError naming the problem)."""
        shape = tuple(int(v) for v in state.get("shape", self.weight_shape))
        if shape != self.weight_shape:
            raise ValueError(f"{self.name}: state has shape {shape}, the layer {self.weight_shape}")
        for key in ("indptr", "indices", "data"):
            if key not in state:
                raise ValueError(f"{self.name}: state has no {key!r} array")
        self.set_connections(state["indptr"], state["indices"], state["data"])
        if self.bias is not None and "bias" in state:
            b = np.asarray(state["bias"], self.dtype)
            if b.shape != self.bias.value.shape:
                raise ValueError(f"{self.name}.bias: expected shape {self.bias.value.shape}, got {b.shape}")
            check_finite(b, f"{self.name}.bias")
            self.bias.replace(self.backend.to_device(b.copy()), grad=self.backend.zeros(b.shape, b.dtype))

    @property
    def weight_shape(self):
        """Shape of the CSR weight matrix (rows, columns)."""
        return tuple(self._csr.shape)

    @property
    def nnz(self):
        """Number of existing connections (stored CSR entries, zeros included)."""
        return self._csr.nnz

    @property
    def density(self):
        """``nnz / (rows * columns)`` of the weight matrix."""
        return self._csr.nnz / (self._csr.shape[0] * self._csr.shape[1])

    def transpose_structure(self):
        """Cached host (t_indptr, t_indices, perm) of W^T; rebuilt after rewiring."""
        if self._transpose is None:
            self._transpose = transpose_structure(self._csr.indptr, self._csr.indices, self._csr.shape[1])
        return self._transpose

    def _backend_transpose(self):
        if self._dev_transpose is None:
            self._dev_transpose = tuple(self.backend.to_device(a) for a in self.transpose_structure())
        return self._dev_transpose

    def parameters(self):
        return [self.weight_param] + ([self.bias] if self.bias is not None else [])

    # -- compute -----------------------------------------------------------
    def _bias_or_zeros(self):
        if self.bias is not None:
            return self.bias.value
        if self._zeros is None:
            self._zeros = self.backend.zeros(self._csr.shape[0], self.dtype)
        return self._zeros

    def forward(self, x, record=False, live=None, live_in=None):
        self._check_forward_masks(live, live_in, record)
        bk = self.backend
        x, reps = self.split_repeated_frame(x)
        # uint8/bool spikes stay one byte per value where the backend packs them as they are
        X3 = bk.feature_major(x, self.in_features, self.dtype, f"{self.name} input",
                              spikes=np.uint8 if bk.packs_uint8 else self.dtype)
        F, T, B = X3.shape
        X = X3.reshape(F, T * B)
        indptr, indices = self._struct
        Y = self.buffer((self.out_features, T, B))
        pack_masks = {} if live_in is None else {"live": live_in}
        pack = bk.pack_spikes(X, self.out_features, self.nnz, self._scratch, self.spike_input, **pack_masks)
        self.input_was_spikes = pack is not None
        if pack is None and X.dtype != self.dtype:  # uint8 not packed (counts, or too few connections): as floats
            X = X.astype(self.dtype)
        masks = {} if live is None else {"live": live}
        bk.csr_forward(indptr, indices, self.weight_param.value, self._bias_or_zeros(), X,
                       Y.reshape(self.out_features, T * B), pack, self._scratch, **masks)
        self._cache = (X, pack, reps)
        self._input_live = live_in  # rows of X that hold no values (dense_weight_grad)
        out = self.repeat_frame(Y, reps)
        self.recorded = {"current": out} if record else {}  # the input current I[t] of the next layer
        return out

    @property
    def takes_row_masks(self):
        """True on a backend with row masks, unless the output gradient is retained (it must then be whole,
        and so must the input, which :meth:`dense_weight_grad` multiplies with it)."""
        return self.backend.row_masks and not self.retain_output_grad

    @property
    def row_mask_key(self):
        """``(takes_row_masks, the CSR structure)``: every change of connections installs a new structure."""
        return (self.takes_row_masks, self._csr)

    def input_rows_needed(self, live=None):
        """Inputs with at least one connection into an output row of ``live`` (uint8; None: all inputs are).

        Computed at each call: ``Network`` keeps the result until
        :attr:`row_mask_key` changes (rewiring installs a new structure).
        """
        indptr, indices = self._csr.indptr, self._csr.indices
        if live is not None:
            indices = indices[np.repeat(np.asarray(live, bool), np.diff(indptr))]
        read = np.zeros(self._csr.shape[1], np.uint8)
        read[indices] = 1
        return None if read.all() else read

    def backward(self, grad_y, live=None, mask_out=False):
        X, pack, reps = self._needs_cache()
        check_grad_columns(grad_y, X.shape[1] * reps, f"{self.name} grad")  # before any gradient is touched
        live_in = self._row_mask_args(live, mask_out)
        bk = self.backend
        G3 = bk.feature_major(grad_y, self.out_features, self.dtype, f"{self.name} grad")
        _, T, B = G3.shape
        G = G3.reshape(self.out_features, T * B)
        Gw = self.frame_gradient(G3, reps)
        indptr, indices = self._struct
        p = self.weight_param
        gb = self._scratch.get("gb")
        if gb is None or gb.shape[0] != self.out_features:
            gb = self._scratch["gb"] = bk.empty(self.out_features, self.dtype)
        masks = {} if live is None else {"live": live}
        rownz = bk.csr_grad(indptr, indices, Gw, X, p.grad, not p.grad_is_zero, gb, pack, self._scratch, **masks)
        if reps > 1:  # a row of G summed over time may cancel to zero: the input gradient reads all live rows
            rownz = live
        p.grad_is_zero = False
        if self.bias is not None:
            if self.bias.grad_is_zero:  # swap buffers instead of copying: gb becomes the gradient
                self.bias.grad, self._scratch["gb"] = gb, self.bias.grad
                self.bias.grad_is_zero = False
            else:  # accumulating over several backwards (rare): add the row sums again
                if live is not None:  # rows marked zero may hold stale values: make them the zeros they stand for
                    Gw[live == 0] = 0
                bk.row_sum(Gw, self.bias.grad, True)
        if self.retain_output_grad:
            self._last_output_grad = Gw
        if not self.need_input_grad:
            return None
        t_indptr, t_indices, perm = self._backend_transpose()
        GX = self.buffer((self.in_features, T, B))
        masks = {} if live_in is None else {"live_out": live_in}
        bk.csr_backward_input(t_indptr, t_indices, perm, p.value, G, GX.reshape(self.in_features, T * B), rownz,
                              **masks)
        self.input_grad_live = live_in
        return bk.time_major(GX)

    def dense_weight_grad(self):
        """dL/dW at *every* position (n_out, n_in) from the last backward, as a host array.

        The only place a dense-sized gradient exists (gradient-based growth at
        rewiring iterations). Requires ``retain_output_grad = True`` before
        that backward; the retained gradient is released here.
        """
        if self._last_output_grad is None or self._cache is None:
            raise RuntimeError(f"{self.name}: set retain_output_grad=True and run forward/backward first")
        if self._input_live is not None:
            raise RuntimeError(f"{self.name}: the last forward's input was masked (rows without connections were not "
                               "computed); set retain_output_grad=True before the forward")
        G, X = self.backend.to_host(self._last_output_grad), self.backend.to_host(self._cache[0])
        self._last_output_grad = None
        return G @ X.T.astype(G.dtype, copy=False)  # a packed uint8 input is kept as it came


# --------------------------------------------------------------------------
# Neurons
# --------------------------------------------------------------------------
class _Neurons(Layer):
    def __init__(self, n, params=None, dtype=np.float32, name="lif"):
        super().__init__()
        self.params = LIFParams() if params is None else params
        if not isinstance(self.params, LIFParams):
            raise TypeError(f"{name}.params: expected LIFParams, got {type(self.params).__name__}")
        self.dtype = _check_dtype(dtype)
        self.in_features = self.out_features = check_size(n, f"{name}.n")
        self.name = name

    def reset_state(self):
        super().reset_state()
        self.__dict__.pop("_rest", None)

    @property
    def kernel_params(self):
        """The :class:`~snn_core.neurons.NeuronKernelParams` record the kernels get (``params`` in ``dtype``)."""
        # built once per (params, dtype): LIFParams is frozen, so the same object means the same record
        # (building it took ~10 us, twice per layer and training step)
        cached = self.__dict__.get("_kernel_params")
        if cached is None or cached[0] is not self.params or cached[1] != self.dtype:
            cached = self._kernel_params = (self.params, self.dtype, self.params.kernel_params(self.dtype))
        return cached[2]

    def _initial(self, v0, batch):
        bk = self.backend
        if v0 is None:
            # every call without v0 starts at rest: one filled buffer, kept (the kernels only read it),
            # instead of a fresh multi-MB array per call (a page fault per 4 KiB page when filled)
            rest = self.__dict__.get("_rest")
            if rest is None:
                rest = self._rest = RecentShapes()
            key = (self.out_features, batch, self.params.v_rest, np.dtype(self.dtype), bk.name)
            return rest.get(key, lambda k: bk.full(k[:2], k[2], k[3]))
        v0 = np.asarray(v0)
        if v0.shape != (batch, self.out_features):
            raise ValueError(f"{self.name} v0: expected shape {(batch, self.out_features)}, got {v0.shape}")
        return bk.to_device(np.ascontiguousarray(v0.T, dtype=self.dtype))

    def __repr__(self):
        return f"{type(self).__name__}({self.out_features}, {self.params})"


class LIF(_Neurons):
    """A population of LIF neurons (Euler step in :mod:`snn_core.neurons`).

    ``forward(I)`` maps input currents ``(T, batch, n)`` to spikes of the
    same shape (values 0/1 in the layer's dtype). The membrane starts at
    ``v_rest`` at every call unless ``v0`` (batch, n) is given: no state leaks
    between batches or between networks. After ``forward(..., record=True)``,
    ``recorded`` holds ``u`` (membrane before reset, what the threshold
    sees), ``v`` (after reset) and ``spikes``, each ``(T, batch, n)`` host
    arrays. ``v_last`` is the final membrane (batch, n) of the last call
    (NaN for the neurons a row-masked forward skipped: the module docstring).
    """

    output_key = "spikes"
    # the last call's final membrane: the backend's array, and its host copy once read (see v_last)
    _v_last = _v_last_host = None
    _forward_live = None  # the last forward's row mask (neurons computed), or None: all were

    @property
    def emits_spikes(self):
        """True: outputs are exactly 0/1 (False in the test-only smooth mode)."""
        return self.params.spike_fn == "heaviside"

    def forward(self, x, record=False, v0=None, live=None, live_in=None):
        self._check_forward_masks(live, live_in, record)
        if live_in is not None and live is not live_in and (live is None or np.any(live > live_in)):
            raise ValueError(f"{self.name}: live must mark only neurons whose input rows live_in marks")
        bk = self.backend
        I = bk.feature_major(x, self.in_features, self.dtype, f"{self.name} input", spikes=self.dtype)
        F, T, B = I.shape
        prm = self.kernel_params
        # u is internal (kept for backward) and reused across calls unless it
        # is recorded; the returned spikes and v_last come from the buffer pool,
        # which never hands out an array that a caller still holds.
        u = bk.empty(I.shape, self.dtype) if record else self._scratch_u(I.shape)
        self._v_last = self._v_last_host = None  # the pool may reuse the last call's buffer unless a caller holds it
        s, v_last = self.buffer(I.shape), self.buffer((F, B))
        if live is None:
            bk.lif_forward(I, self._initial(v0, B), prm, u, s, v_last)
        else:  # only the neurons whose spikes something reads (the module docstring)
            bk.lif_forward(I, self._initial(v0, B), prm, u, s, v_last, live)
        self._cache = (u, s)
        self._forward_live = live
        # kept where the kernel wrote it: on a device backend, copying it to
        # the host here would wait for the device at every step of every LIF
        # layer, although nothing in training reads it (see the v_last property)
        self._v_last = v_last
        if record:
            uh, sh = bk.to_host(u), bk.to_host(s)  # host backends: the arrays themselves, no copy
            v = reset_membrane(uh, sh, prm)
            self.recorded = {"u": time_major(uh), "v": time_major(v), "spikes": time_major(sh)}
        return bk.time_major(s)

    @property
    def v_last(self):
        """The final membrane (batch, n) of the last forward call, a host array.

        None before the first call and after :meth:`reset_state` (or
        :meth:`to`). On the ``cuda`` backend it is copied from the device
        when first read after a call, not by ``forward`` itself.
        """
        if self._v_last_host is None and self._v_last is not None:
            v = self.backend.to_host(self._v_last)
            if self._forward_live is not None:  # rows the kernel left unwritten: not computed
                v[self._forward_live == 0] = np.nan
            self._v_last_host = v.T
        return self._v_last_host

    def _scratch_u(self, shape):
        bufs = self.__dict__.get("_u_bufs")  # one per batch shape: training and evaluation alternate
        if bufs is None:
            bufs = self._u_bufs = RecentShapes()
        return bufs.get(shape, lambda sh: self.backend.empty(sh, self.dtype))

    def reset_state(self):
        super().reset_state()
        self.__dict__.pop("_u_bufs", None)
        self._v_last = self._v_last_host = None  # of the backend the layer may be leaving (see to)
        self._forward_live = None

    @property
    def takes_row_masks(self):
        """True on a backend with row masks (see the module docstring)."""
        return self.backend.row_masks

    def input_rows_needed(self, live=None):
        """``live`` itself: neuron f reads only its own input row f."""
        return live

    def backward(self, grad_y, live=None, mask_out=False):
        u, s = self._needs_cache()
        check_grad_shape(grad_y, (u.shape[1], u.shape[2], u.shape[0]), f"{self.name} grad")
        live_in = self._row_mask_args(live, mask_out)
        bk = self.backend
        gs = bk.feature_major(grad_y, self.out_features, self.dtype, f"{self.name} grad")
        skipped = self._forward_live
        if skipped is not None:  # the last forward did not simulate some neurons: their gradient must be zero
            if live is None:  # a call of its own (Network.backward passes masks): check those rows
                if np.any(bk.to_host(gs)[skipped == 0]):
                    raise ValueError(f"{self.name}: gradient for neurons the last forward did not compute (it was "
                                     "row-masked: Network.forward without record); run forward with record=True")
                live = skipped
            elif np.any(live > skipped):
                raise ValueError(f"{self.name}: live marks neurons the last forward did not compute")
        gI = self.buffer(gs.shape)
        if live is None and live_in is None:
            bk.lif_backward(gs, u, s, self.kernel_params, gI)
        else:
            bk.lif_backward(gs, u, s, self.kernel_params, gI, live, live_in)
        self.input_grad_live = live_in
        return bk.time_major(gI)


class Readout(_Neurons):
    """Non-spiking leaky integrator: the LIF membrane without threshold/reset.

    ``forward(I)`` returns the membrane ``u`` at every step, ``(T, batch, n)``,
    for membrane-based losses (e.g. cross-entropy on its time average).
    """

    output_key = "u"

    def __init__(self, n, params=None, dtype=np.float32, name="readout"):
        super().__init__(n, params, dtype, name)

    def forward(self, x, record=False, v0=None):
        bk = self.backend
        I = bk.feature_major(x, self.in_features, self.dtype, f"{self.name} input", spikes=self.dtype)
        u = self.buffer(I.shape)
        bk.readout_forward(I, self._initial(v0, I.shape[2]), self.kernel_params, u)
        self._cache = (u.shape[1], u.shape[2], u.shape[0])  # the output shape, for backward's check
        out = bk.time_major(u)
        if record:
            self.recorded = {"u": time_major(bk.to_host(u))}
        return out

    def backward(self, grad_y):
        check_grad_shape(grad_y, self._needs_cache(), f"{self.name} grad")
        bk = self.backend
        gu = bk.feature_major(grad_y, self.out_features, self.dtype, f"{self.name} grad")
        gI = self.buffer(gu.shape)
        bk.readout_backward(gu, self.kernel_params, gI)
        return bk.time_major(gI)
