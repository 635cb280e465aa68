"""Device-resident training on a CUDA GPU (numba-cuda).

:class:`DeviceNetwork` mirrors a host :class:`~snn_core.network.Network` on
the device: CSR structure (and its transpose), weights, biases, gradients
and the optimizer state (Adam moments / SGD momentum) are device arrays, and
so are the encoded input spikes, every activation and the loss gradient. A
training step (encode, forward, loss, BPTT, optimizer update) is a sequence
of kernel launches with **no host round trip**; only the per-step scalars
(learning rate, bias corrections, the encoder's 64-bit seed) go over as
kernel arguments.

The host network stays the authority outside device epochs:

- :meth:`DeviceNetwork.load_from_host` uploads weights, biases, structure
  and (optionally) optimizer state — at the start of every device epoch and
  evaluation, so anything done on the host in between (resuming from a
  checkpoint, ``load_network_state``) is picked up;
- :meth:`DeviceNetwork.to_network` copies weights, biases and optimizer
  state back into the host arrays in place — at the end of every device
  epoch, so checkpoints are always written from host arrays and stay
  device-independent (a network trained on a GPU evaluates, resumes and
  rewires on a CPU-only machine).

Rewiring is a documented host round trip per event
(:meth:`DeviceNetwork.rewire`): for each sparse layer the weights and the
weight's optimizer state (and, for the gradient rules, the weight gradient
or the layer's input and output gradients) are copied to the host, the
unchanged :class:`~snn_core.structure.Rewirer` runs there (same RNG, same
history, same invariants as on the CPU), and the new CSR arrays, their
transpose, the weights and the remapped optimizer state are copied back into
the same device buffers (the number of connections never changes). See
``docs/gpu.md`` for the cost.

Trainer integration: ``train_epoch_device(trainer, progress)`` and
``evaluate_device(trainer, x, y, batch_size)`` are drop-in equivalents of
``Trainer.train_epoch`` / ``Trainer.evaluate``: same shuffle, same encoder
seeds (hence bit-identical input spikes), same schedule and rewiring.

Everything here is float32 (the engine's default dtype). Importing this
module needs neither numba-cuda nor a GPU; creating a :class:`DeviceNetwork`
calls :func:`snn_core.backend.require_cuda` first.
"""
from __future__ import annotations

import time

import numpy as np

from .backend import require_cuda
from .layers import LIF, Linear, Readout, SparseLinear
from .optim import SGD, Adam
from .sparse import INDEX_DTYPE, transpose_structure

__all__ = ["DeviceNetwork", "train_step_device", "train_epoch_device", "evaluate_device", "device_state"]

#: how often (in steps) train_epoch_device reads the running loss back for the progress bar
PROGRESS_SYNC_EVERY = 50
_DENSE = object()  # structure key of a Linear layer (its full structure never changes)
#: device encoders; the others (latency) encode on the host and upload the spikes
DEVICE_ENCODERS = ("bernoulli", "poisson", "direct")


def _modules():
    require_cuda()
    from numba import cuda

    from .kernels import cuda as K

    return cuda, K


def _upload(cuda, dev, host):
    """Copy host -> device, reusing ``dev`` when it has the same shape (no reallocation)."""
    host = np.ascontiguousarray(host)
    if dev is not None and dev.shape == host.shape and dev.dtype == host.dtype:
        dev.copy_to_device(host)
        return dev
    return cuda.to_device(host)


def _download(dev, host):
    """Copy device -> host into the existing (C-contiguous) host array, in place."""
    if not host.flags.c_contiguous:
        raise RuntimeError("internal: host array is not C-contiguous")
    dev.copy_to_host(host.reshape(dev.shape))


class _DevParam:
    """Device copy of one host Parameter: value, gradient and optimizer state (all 1-D)."""

    def __init__(self, host):
        self.host = host  # the Parameter object survives rewiring (its .value is replaced)
        self.value = None
        self.grad = None
        self.grad_is_zero = True
        self.state = {}
        self.opt_index = None

    def upload_value(self, cuda):
        v = self.host.value.reshape(-1)
        self.value = _upload(cuda, self.value, v)
        if self.grad is None or self.grad.shape != self.value.shape:
            self.grad = cuda.device_array(self.value.shape, np.float32)
            self.grad_is_zero = True

    def download_value(self):
        _download(self.value, self.host.value)

    def upload_state(self, cuda, optimizer):
        self.opt_index = None
        if optimizer is None:
            return
        try:
            self.opt_index = optimizer.index(self.host)
        except KeyError:
            return
        st = optimizer.state[self.opt_index]
        self.state = {k: _upload(cuda, self.state.get(k), arr.reshape(-1)) for k, arr in st.items()}

    def download_state(self, optimizer):
        if self.opt_index is None:
            return
        st = optimizer.state[self.opt_index]
        for k, dev in self.state.items():
            _download(dev, st[k])

    def download_grad(self):
        """Host gradient := device gradient (or mark it zero)."""
        if self.grad_is_zero:
            self.host.zero_grad()
            return
        _download(self.grad, self.host.grad)
        self.host.grad_is_zero = False


class _DevSynapse:
    """SparseLinear (CSR) or Linear (as a full CSR) on the device."""

    def __init__(self, layer, cuda, K):
        self.layer, self.cuda, self.K = layer, cuda, K
        self.sparse = isinstance(layer, SparseLinear)
        self.n_in, self.n_out = layer.in_features, layer.out_features
        self.weight = _DevParam(layer.weight_param if self.sparse else layer.weight)
        self.bias = _DevParam(layer.bias) if layer.bias is not None else None
        self.zero_bias = None if self.bias is not None else cuda.to_device(np.zeros(self.n_out, np.float32))
        self.struct = {}
        self._host_struct_key = None
        self._bufs = {}
        self.X = None
        self.retain_output_grad = False
        self.last_G = None

    @property
    def params(self):
        return [self.weight] + ([self.bias] if self.bias is not None else [])

    def host_structure(self):
        """(indptr, indices, t_indptr, t_indices, t_perm) on the host; for Linear, the full structure."""
        if self.sparse:
            w = self.layer.weight
            return (w.indptr, w.indices) + tuple(self.layer.transpose_structure())
        indptr = (np.arange(self.n_out + 1, dtype=np.int64) * self.n_in).astype(INDEX_DTYPE)
        indices = np.tile(np.arange(self.n_in, dtype=INDEX_DTYPE), self.n_out)
        return (indptr, indices) + tuple(transpose_structure(indptr, indices, self.n_in))

    def upload_structure(self, force=False):
        """CSR arrays and their transpose, host -> device (skipped if the host arrays are unchanged)."""
        # the host arrays themselves (not their id(), which a new array may reuse): rewiring and
        # load_network_state replace them with new objects
        key = (self.layer.weight.indptr, self.layer.weight.indices) if self.sparse else (_DENSE,)
        old = self._host_struct_key
        if force or old is None or len(old) != len(key) or any(a is not b for a, b in zip(old, key)):
            names = ("indptr", "indices", "t_indptr", "t_indices", "t_perm")
            for name, arr in zip(names, self.host_structure()):
                self.struct[name] = _upload(self.cuda, self.struct.get(name), np.asarray(arr, INDEX_DTYPE))
            self._host_struct_key = key

    def upload(self):
        self.upload_structure()
        for p in self.params:
            p.upload_value(self.cuda)

    def _buf(self, N):
        b = self._bufs.get(N)
        if b is None:
            if len(self._bufs) >= 4:
                self._bufs.clear()
            cuda = self.cuda
            b = self._bufs[N] = (cuda.device_array((self.n_out, N), np.float32),
                                 cuda.device_array((self.n_in, N), np.float32) if self.layer.need_input_grad else None)
        return b

    def forward(self, X, T, B):
        s = self.struct
        Y = self._buf(X.shape[1])[0]
        bias = self.bias.value if self.bias is not None else self.zero_bias
        self.K.csr_forward(s["indptr"], s["indices"], self.weight.value, bias, X, Y)
        self.X = X
        return Y

    def backward(self, G):
        K, s, w = self.K, self.struct, self.weight
        K.csr_grad_at(s["indptr"], s["indices"], G, self.X, w.grad, not w.grad_is_zero)
        w.grad_is_zero = False
        if self.bias is not None:
            K.bias_grad(G, self.bias.grad, not self.bias.grad_is_zero)
            self.bias.grad_is_zero = False
        self.last_G = G if self.retain_output_grad else None
        if not self.layer.need_input_grad:
            return None
        GX = self._buf(G.shape[1])[1]
        K.csr_backward_input(s["t_indptr"], s["t_indices"], s["t_perm"], w.value, G, GX)
        return GX


class _DevNeurons:
    """LIF or Readout on the device (no parameters)."""

    params = ()

    def __init__(self, layer, cuda, K):
        self.layer, self.cuda, self.K = layer, cuda, K
        p, f = layer.params, np.float32
        self.F = layer.out_features
        # the host layer's own scalars (LIF._scalars): alpha, k0 = (1 - alpha) v_rest, c
        self.alpha, self.k0, self.c = f(p.alpha), f((1.0 - p.alpha) * p.v_rest), f(p.c)
        self.v_th, self.v_reset, self.sp = f(p.v_th), f(p.v_reset), f(p.surrogate_p)
        self.reset, self.sur, self.smooth = p.codes()
        self.detach = bool(p.detach_reset)
        self.v_rest = f(p.v_rest)
        self.is_lif = isinstance(layer, LIF)
        self._bufs = {}
        self._v0 = {}
        self.cache = None
        self._shape = None

    def upload(self):
        pass

    def _v0_for(self, B):
        v0 = self._v0.get(B)
        if v0 is None:
            v0 = self._v0[B] = self.cuda.to_device(np.full((self.F, B), self.v_rest, np.float32))
        return v0

    def _buf(self, T, B):
        b = self._bufs.get((T, B))
        if b is None:
            if len(self._bufs) >= 4:
                self._bufs.clear()
            cuda, shape = self.cuda, (self.F, T, B)
            b = self._bufs[(T, B)] = (cuda.device_array(shape, np.float32),  # output (spikes / membrane)
                                      cuda.device_array(shape, np.float32) if self.is_lif else None,  # u
                                      cuda.device_array(shape, np.float32),  # input gradient
                                      cuda.device_array((self.F, B), np.float32))  # final membrane
        return b

    def forward(self, I2, T, B):
        I = I2.reshape(self.F, T, B)
        out, u, _, v_last = self._buf(T, B)
        self._shape = (T, B)
        v0 = self._v0_for(B)
        if self.is_lif:
            self.K.lif_forward(I, v0, self.alpha, self.k0, self.c, self.v_th, self.v_reset, self.reset, self.sur,
                               self.sp, self.smooth, u, out, v_last)
            self.cache = (u, out)
        else:
            self.K.readout_forward(I, v0, self.alpha, self.k0, self.c, out)
            self.cache = True
        return out.reshape(self.F, T * B)

    def backward(self, G2):
        if self.cache is None:
            raise RuntimeError(f"{self.layer.name}: backward called before forward")
        T, B = self._shape
        g = G2.reshape(self.F, T, B)
        gI = self._buf(T, B)[2]
        if self.is_lif:
            u, s = self.cache
            self.K.lif_backward(g, u, s, self.alpha, self.c, self.v_th, self.v_reset, self.reset, self.detach,
                                self.sur, self.sp, gI)
        else:
            self.K.readout_backward(g, self.alpha, self.c, gI)
        return gI.reshape(self.F, T * B)


class DeviceNetwork:
    """A host :class:`~snn_core.network.Network` (and its optimizer) mirrored on the CUDA device.

    Supported layers: SparseLinear, Linear (stored as a full CSR), LIF,
    Readout; float32 only. Supported optimizers: :class:`~snn_core.optim.Adam`,
    :class:`~snn_core.optim.SGD` (the host optimizer object keeps the
    hyper-parameters, the schedule and the iteration counter; its state
    arrays are refreshed by :meth:`to_network`).

    Usage::

        dnet = DeviceNetwork.from_network(net, opt)
        x = kernels.cuda.bernoulli_encode(images, T, seed)      # (F, T, B) on the device
        out = dnet.forward(x)                                    # (C, T, B) on the device
        G, loss_b, correct_b = dnet.loss("ce_membrane", out, y_dev)
        dnet.zero_grad(); dnet.backward(G); dnet.step()
        dnet.to_network()                                        # host arrays up to date
    """

    def __init__(self, network, optimizer=None):
        cuda, K = _modules()
        self.cuda, self.K = cuda, K
        self.network, self.optimizer = network, optimizer
        if optimizer is not None and not isinstance(optimizer, (Adam, SGD)):
            raise TypeError(f"optimizer: the device path supports Adam and SGD, got {type(optimizer).__name__}")
        layers = []
        for layer in network.layers:
            dtype = getattr(layer, "dtype", np.dtype(np.float32))
            if np.dtype(dtype) != np.float32:
                raise TypeError(f"{layer.name}: the device path is float32 only, got {np.dtype(dtype)}")
            if isinstance(layer, (SparseLinear, Linear)):
                layers.append(_DevSynapse(layer, cuda, K))
            elif isinstance(layer, (LIF, Readout)):
                layers.append(_DevNeurons(layer, cuda, K))
            else:
                raise TypeError(f"{layer.name}: layer type {type(layer).__name__} has no device implementation")
        self.layers = layers
        self.params = [p for dl in layers for p in dl.params]
        self._loss_bufs = {}
        self._aranges = {}
        self.load_from_host(optimizer=True)

    @classmethod
    def from_network(cls, network, optimizer=None):
        """Copy ``network`` (CSR arrays, weights, biases) and ``optimizer``'s state to the device."""
        return cls(network, optimizer)

    # -- host <-> device -------------------------------------------------------
    def load_from_host(self, optimizer=True):
        """Upload the host's weights, biases and structure (and the optimizer state).

        Device buffers are reused when sizes match; the CSR structure is
        re-uploaded only when the host layer's arrays changed (rewiring,
        ``load_network_state``).
        """
        for dl in self.layers:
            dl.upload()
        if optimizer and self.optimizer is not None:
            for p in self.params:
                p.upload_state(self.cuda, self.optimizer)
        return self

    def to_network(self):
        """Copy weights, biases and optimizer state into the host arrays (in place); returns the network."""
        for p in self.params:
            p.download_value()
            if self.optimizer is not None:
                p.download_state(self.optimizer)
        return self.network

    def download_grads(self):
        """Copy the device gradients into the host Parameters' ``grad`` (tests, gradient rules)."""
        for p in self.params:
            p.download_grad()

    # -- compute ---------------------------------------------------------------
    def forward(self, x):
        """Run every layer over all T steps. ``x``: device (F_in, T, B) float32; returns (C, T, B)."""
        F, T, B = x.shape
        if F != self.network.in_features:
            raise ValueError(f"device input: expected {self.network.in_features} features, got shape {x.shape}")
        h = x.reshape(F, T * B)
        for dl in self.layers:
            h = dl.forward(h, T, B)
        return h.reshape(self.network.out_features, T, B)

    def forward_host(self, x):
        """Convenience: host (T, B, F) in, host (T, B, C) out (copies both ways)."""
        x = np.asarray(x, np.float32)
        out = self.forward(self.cuda.to_device(np.ascontiguousarray(x.transpose(2, 0, 1))))
        return out.copy_to_host().transpose(1, 2, 0)

    def backward(self, grad):
        """BPTT from dL/d(output), a device (C, T, B) array: fills every parameter's device gradient."""
        C, T, B = grad.shape
        g = grad.reshape(C, T * B)
        for dl in reversed(self.layers):
            g = dl.backward(g)
            if g is None:
                break

    def zero_grad(self):
        for p in self.params:
            p.grad_is_zero = True

    def set_retain_output_grad(self, flag):
        """Keep each sparse layer's output gradient of the next backward (grow='gradient' events)."""
        for dl in self.layers:
            if isinstance(dl, _DevSynapse) and dl.sparse:
                dl.retain_output_grad = bool(flag)

    def step(self):
        """One optimizer step on the device (same arithmetic as the host Adam/SGD.step)."""
        opt, K, f = self.optimizer, self.K, np.float32
        if opt is None:
            raise RuntimeError("DeviceNetwork.step: no optimizer was given to from_network")
        lr = opt.lr
        for p in self.params:
            if p.opt_index is None:
                continue
            if p.grad_is_zero:
                K.fill(p.grad, 0.0)
            wd = opt.weight_decay if p.host.decay else 0.0
            if isinstance(opt, Adam):
                b1, b2 = opt.betas
                t = opt.iteration + 1
                K.adam_update(p.value, p.grad, p.state["m"], p.state["v"], f(lr), f(b1), f(b2), f(opt.eps),
                              f(1 - b1 ** t), f(1 - b2 ** t), f(wd))
            else:
                buf = p.state["momentum"] if opt.momentum else p.grad
                K.sgd_update(p.value, p.grad, buf, f(lr), f(opt.momentum), opt.nesterov, f(wd))
        opt.iteration += 1

    def arange(self, n):
        a = self._aranges.get(n)
        if a is None:
            a = self._aranges[n] = self.cuda.to_device(np.arange(n, dtype=np.int64))
        return a

    def loss(self, name, out, labels, idx=None, **kw):
        """(G, loss_b, correct_b) on the device for the loss ``name`` (see kernels.cuda.loss_and_grad).

        ``labels``: int64 device array; sample b's label is ``labels[idx[b]]``
        (``idx`` defaults to 0..B-1). ``loss_b.sum()`` is the batch loss.
        """
        C, T, B = out.shape
        bufs = self._loss_bufs.get((C, T, B))
        if bufs is None:
            if len(self._loss_bufs) >= 4:
                self._loss_bufs.clear()
            cuda = self.cuda
            bufs = self._loss_bufs[(C, T, B)] = (cuda.device_array((C, T, B), np.float32),
                                                 cuda.device_array(B, np.float64), cuda.device_array(B, np.float64))
        G, loss_b, correct_b = bufs
        self.K.loss_and_grad(name, out, labels, self.arange(B) if idx is None else idx, loss_b, correct_b, G, **kw)
        return G, loss_b, correct_b

    # -- rewiring (host round trip) --------------------------------------------
    def maybe_rewire(self, rewirer, iteration):
        """:meth:`rewire` if ``iteration`` is one of ``rewirer``'s events; returns the event records."""
        if not rewirer.is_event(iteration):
            return []
        return self.rewire(rewirer, iteration)

    def rewire(self, rewirer, iteration, zeta=None):
        """One rewiring event through the host (see the module docstring).

        Down: each sparse layer's weights and weight optimizer state (plus the
        weight gradient for prune='gradient', the layer's input and output
        gradients for grow='gradient'). Host: ``rewirer.rewire`` on the host
        network and optimizer. Up: for every rewired layer, the new CSR
        arrays, their transpose, the weights and the remapped optimizer state,
        into the existing device buffers; its gradient is reset.
        """
        opt = self.optimizer
        syns = [dl for dl in self.layers if isinstance(dl, _DevSynapse) and dl.sparse]
        injected = []
        for dl in syns:
            dl.weight.download_value()
            if opt is not None:
                dl.weight.download_state(opt)
            if rewirer.prune == "gradient":
                dl.weight.download_grad()
            if rewirer.grow == "gradient":
                if dl.last_G is None:
                    raise RuntimeError(f"{dl.layer.name}: grow='gradient' needs the output gradient of this "
                                       "iteration: call set_retain_output_grad(rewirer.needs_dense_grad(it)) "
                                       "before the forward pass")
                # what SparseLinear.dense_weight_grad reads: the retained output gradient and the input
                dl.layer._last_output_grad = dl.last_G.copy_to_host()
                dl.layer._cache = (dl.X.copy_to_host(), None, None)
                injected.append(dl)
                dl.last_G = None
        try:
            records = rewirer.rewire(iteration, self.network, opt, zeta)
        finally:
            for dl in injected:
                dl.layer._cache = None
                dl.layer._last_output_grad = None
        for dl in syns:
            if dl.layer.name not in rewirer.last_events:
                continue  # untouched (e.g. a fully dense layer)
            # only what the event changed: the bias and its state stay as they are on the device
            dl.upload_structure(force=True)
            dl.weight.upload_value(self.cuda)
            if opt is not None:
                dl.weight.upload_state(self.cuda, opt)
            dl.weight.grad_is_zero = True
        return records


# --------------------------------------------------------------------------
# Training / evaluation entry points
# --------------------------------------------------------------------------
def train_step_device(dnet, x, labels, loss="ce_membrane", idx=None, acc=None):
    """One optimizer step entirely on the device: forward, loss + gradient, BPTT, Adam/SGD.

    x : device (F, T, B) input spikes; labels : device int64 labels (of the
    batch, or of the whole set with ``idx`` the batch's sample indices).
    ``acc`` (device float64 (3,)) accumulates (loss * B, #correct, B) without
    a host sync. Returns the device arrays (out, loss_b, correct_b).
    """
    out = dnet.forward(x)
    G, loss_b, correct_b = dnet.loss(loss, out, labels, idx)
    if acc is not None:
        dnet.K.accumulate_loss(loss_b, correct_b, acc)
    dnet.zero_grad()
    dnet.backward(G)
    dnet.step()
    return out, loss_b, correct_b


class _TrainerDevice:
    """Per-Trainer device state: the DeviceNetwork, the uploaded data, reusable buffers."""

    def __init__(self, trainer):
        cuda, K = _modules()
        self.cuda, self.K = cuda, K
        self.dnet = DeviceNetwork(trainer.network, trainer.optimizer)
        self.network, self.optimizer = trainer.network, trainer.optimizer
        self._data = {}
        self._x_bufs = {}
        self.acc = cuda.device_array(3, np.float64)

    def data(self, x, y):
        """Device copies of a host set (x float32 (n, F), y int labels), uploaded once and cached."""
        hit = self._data.get(id(x))
        if hit is not None and hit[0] is x and hit[1] is y:
            return hit[2], hit[3]
        if len(self._data) >= 4:
            self._data.clear()
        d_x = self.cuda.to_device(np.ascontiguousarray(x, np.float32))
        d_y = self.cuda.to_device(np.asarray(y, np.int64))
        self._data[id(x)] = (x, y, d_x, d_y)
        return d_x, d_y

    def encode(self, trainer, x_host, x_dev, idx_host, idx_dev, key):
        """Input spikes of the samples idx, with the CPU trainer's seed for ``key``: (F, T, B) device array."""
        from .data.encoders import _stream_state
        from .training import _seed

        cfg = trainer.config
        T, B, F = cfg.steps, len(idx_host), x_host.shape[1]
        out = self._x_bufs.get((T, B))
        if out is None:
            if len(self._x_bufs) >= 4:
                self._x_bufs.clear()
            out = self._x_bufs[(T, B)] = self.cuda.device_array((F, T, B), np.float32)
        seed = _seed(cfg.seed, *key)
        if cfg.encoder in DEVICE_ENCODERS:
            # poisson_encode's defaults (max_rate 1000 Hz, dt 1 ms) give p = x, as in the CPU trainer
            scale = float(1000.0) * float(1e-3) if cfg.encoder == "poisson" else 1.0
            self.K.encode(cfg.encoder, x_dev, idx_dev, T, _stream_state(seed), out, scale)
        else:  # host encoder (latency): one upload of the spikes per batch
            spikes = trainer._encode(x_host[idx_host], key)  # (T, B, F) view of an (F, T, B) buffer
            out.copy_to_device(np.ascontiguousarray(spikes.transpose(2, 0, 1)))
        return out


def device_state(trainer):
    """The trainer's cached device state (created on first use; rebuilt if its network/optimizer changed)."""
    st = trainer.__dict__.get("_device_state")
    if st is None or st.network is not trainer.network or st.optimizer is not trainer.optimizer:
        st = trainer.__dict__["_device_state"] = _TrainerDevice(trainer)
    return st


def train_epoch_device(trainer, progress=None):
    """Device twin of :meth:`snn_core.training.Trainer.train_epoch`; returns (loss, accuracy).

    Same shuffle, encoder seeds, LR schedule and rewiring events as the CPU
    epoch. Host -> device upload of the whole state at the start, device ->
    host copy at the end (so ``fit`` checks, evaluates and checkpoints host
    arrays); in between only the rewiring events touch the host.
    """
    from .training import _seed

    st = device_state(trainer)
    cuda, K, dnet = st.cuda, st.K, st.dnet
    cfg, rew = trainer.config, trainer.rewirer
    dnet.load_from_host(optimizer=True)
    x_dev, y_dev = st.data(trainer.x_train, trainer.y_train)
    n = len(trainer.x_train)
    order = np.random.default_rng(_seed(cfg.seed, 1, trainer.epoch)).permutation(n)
    d_order = cuda.to_device(order.astype(np.int64))
    K.fill(st.acc, 0.0)
    t0, steps = time.perf_counter(), 0
    for start in range(0, n, cfg.batch_size):
        stop = min(start + cfg.batch_size, n)
        idx = d_order[start:stop]
        x = st.encode(trainer, trainer.x_train, x_dev, order[start:stop], idx, (2, trainer.iteration))
        it = trainer.iteration + 1
        rew.prepare(it, trainer.network)  # host flags, as on the CPU (harmless here)
        dnet.set_retain_output_grad(rew.needs_dense_grad(it))
        train_step_device(dnet, x, y_dev, cfg.loss, idx, st.acc)
        trainer.iteration += 1
        dnet.maybe_rewire(rew, trainer.iteration)
        steps += 1
        if progress is not None:
            progress.update(1)
            if steps % PROGRESS_SYNC_EVERY == 1 or stop == n:  # a 24-byte read (a sync) now and then
                total, correct, seen = st.acc.copy_to_host()
                progress.set_postfix(loss=f"{total / seen:.3f}", acc=f"{correct / seen:.3f}",
                                     density=f"{trainer.global_density():.3f}",
                                     sps=f"{seen / (time.perf_counter() - t0):.0f}", refresh=False)
    dnet.set_retain_output_grad(False)
    dnet.to_network()
    total, correct, seen = (float(v) for v in st.acc.copy_to_host())
    return total / seen, correct / seen


def evaluate_device(trainer, x, y, batch_size=None):
    """Device twin of :meth:`snn_core.training.Trainer.evaluate`: (accuracy, mean loss).

    Uploads the host weights first (the host is the authority between
    epochs), then encodes with the CPU evaluation seeds.
    """
    st = device_state(trainer)
    K, dnet, cfg = st.K, st.dnet, trainer.config
    dnet.load_from_host(optimizer=False)
    x_dev, y_dev = st.data(x, y)
    bs = batch_size or max(cfg.batch_size, 200)
    ar = dnet.arange(len(x))
    host_ar = np.arange(len(x))
    K.fill(st.acc, 0.0)
    for b, start in enumerate(range(0, len(x), bs)):
        stop = min(start + bs, len(x))
        xb = st.encode(trainer, x, x_dev, host_ar[start:stop], ar[start:stop], (3, b))
        out = dnet.forward(xb)
        _, loss_b, correct_b = dnet.loss(cfg.loss, out, y_dev, ar[start:stop])
        K.accumulate_loss(loss_b, correct_b, st.acc)
    total, correct, _ = (float(v) for v in st.acc.copy_to_host())
    return correct / len(x), total / len(x)
