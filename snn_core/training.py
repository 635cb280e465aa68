"""Trainer: epochs of mini-batches, LR schedule, rewiring, validation, checkpoints.

One :class:`Trainer` serves the Python API and the ``snn-esl`` command. It is
deterministic: every random choice derives from ``config.seed`` and a
position in training (the epoch for the shuffle, the iteration for spike
encoding, the rewirer's own saved generator), so the same seed and config give
bit-identical weights, and a run resumed from a checkpoint continues exactly
as if it had never stopped, whether the Numba kernels were just compiled or
loaded from the cache (docs/guarantees.md).

A run stops at the first iteration whose loss is not finite or exceeds
``DIVERGENCE_LOSS``, or whose update leaves a NaN/Inf in a parameter
(:class:`TrainingDiverged`); the checkpoints of the last completed epoch stay
as they were.
"""
from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import losses
from .backends import get_backend
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data.augment import augment_cifar, augment_dvs, random_affine, random_crop
from .data.datasets import load_dataset, to_float, train_val_split
from .data.ahead import EncodeAhead
from .data.encoders import RANDOM_ENCODERS, SPIKE_ENCODERS, get_encoder
from .models import IO_LAYERS, convnet, resnet19, vggsnn
from .network import mlp
from .neurons import LIFParams
from .optim import SGD, Adam, make_schedule
from .profiling import PhaseTimer
from .runs import RunDir, atomic_write_text
from .sparse import check_csr
from .structure import Rewirer, mlp_densities, sparse_init


#: a mini-batch loss above this stops the run as diverged (the losses of
#: :mod:`snn_core.losses` start near log(classes) or below 1 and fall)
DIVERGENCE_LOSS = 1e4


class TrainingDiverged(RuntimeError):
    """The loss became non-finite or exploded, or a parameter became NaN/Inf."""


def _seed(*keys):
    """A 32-bit seed derived from integers (stateless: same keys, same seed)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def input_shape(config: TrainConfig, n_in: int):
    """(channels, height, width) of the flattened images: ``config.input_shape``, else inferred.

    Inferred for square images with 1 (MNIST), 3 (CIFAR) or 2 (DVS) channels.
    """
    if config.input_shape is not None:
        shape = tuple(config.input_shape)
        if math.prod(shape) != n_in:
            raise ValueError(f"input_shape: {list(shape)} has {math.prod(shape)} features, the data {n_in}")
        return shape
    for c in (1, 3, 2):
        side = math.isqrt(n_in // c)
        if c * side * side == n_in:
            return (c, side, side)
    raise ValueError(f"input_shape: cannot infer (channels, height, width) of {n_in} features; set input_shape")


def _natural_key(name):
    """Sort key that puts "fc2" before "fc10"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def state_io_sizes(config: TrainConfig, state):
    """(input features, classes) of the network whose :func:`network_state` is ``state``.

    Found by layer name, never by the order of ``state`` (a checkpoint of an
    earlier release lists its layers alphabetically: ``fc`` before ``fc1``).
    Conv models: through the layers :data:`snn_core.models.IO_LAYERS` names
    (``config.input_shape`` when it is set); MLPs: the first and last
    synaptic layer in name order (``fc1`` ... ``fcN``).
    """
    shapes = {name: tuple(int(v) for v in s["shape"]) for name, s in state.items()
              if isinstance(s, dict) and "shape" in s}
    if config.model == "mlp":
        names = sorted(shapes, key=_natural_key)
        return shapes[names[0]][1], shapes[names[-1]][0]
    conv, bn, out = IO_LAYERS[config.model]
    if config.input_shape is not None:
        return math.prod(config.input_shape), shapes[out][0]
    return shapes[conv][1] // 9 * shapes[bn][1], shapes[out][0]  # 3x3 kernel: 9 columns per input channel


def build_network(config: TrainConfig, n_in: int, n_classes: int):
    """The network described by ``config`` (sparse layers initialised by ``config.init``)."""
    hidden = LIFParams(tau_m=config.tau_m, v_th=config.v_th, reset=config.reset,
                       detach_reset=config.detach_reset, surrogate=config.surrogate)
    if config.model != "mlp":
        kw = dict(n_classes=n_classes, density=config.density, sparse=config.sparse, init=config.init,
                  dense_first=config.dense_first, output=config.output, hidden=hidden, readout=hidden,
                  seed=config.seed, gain=config.gain, layer_density=config.layer_density)
        shape = input_shape(config, n_in)
        if config.model == "convnet":
            return convnet(shape, channels=config.channels, fc_hidden=config.fc_hidden, pool=config.pool, **kw)
        return {"vggsnn": vggsnn, "resnet19": resnet19}[config.model](shape, width=config.width, **kw)
    sizes = [n_in, *config.hidden, n_classes]
    # per-layer densities with exact connection counts summing to D x total
    densities = (mlp_densities(sizes, config.density, method=config.init, min_per_row=config.min_per_row)
                 if config.sparse else None)
    net = mlp(sizes, densities=densities, hidden=hidden, readout=hidden, output=config.output,
              sparse=config.sparse, seed=config.seed, gain=config.gain)
    if config.sparse and (config.min_per_row or config.layer_density):  # re-draw: row minimum, fixed densities
        sparse_init(net, config.density, method=config.init, seed=config.seed, gain=config.gain,
                    min_per_row=config.min_per_row, layer_density=config.layer_density)
    return net


def network_state(network):
    """Host copies of every layer's arrays: ``network.state_dict()``.

    ``{layer name: {"indptr", "indices", "data" | "weight", "shape", "bias"}}``:
    CSR arrays for sparse layers, the dense matrix for dense ones; neuron
    layers hold no arrays (their parameters come from the config).
    """
    return network.state_dict()


def load_network_state(network, state):
    """Put arrays from :func:`network_state` (or a checkpoint) back into ``network``'s layers (matched by name)."""
    network.load_state_dict(state)


def adopt_network(network, base=None):
    """Describe a network built elsewhere (e.g. imported from NIR) as a :class:`TrainConfig`.

    ``Trainer(config, network=network)`` then trains it, and its checkpoints
    restore like any other. The network must have the shape
    :func:`build_network` builds: ``synapses -> LIF -> ... -> synapses ->
    Readout | LIF`` with all synapses ``SparseLinear`` or all ``Linear``,
    every neuron layer with ``R = 1`` and ``v_rest = v_reset = 0``, and one
    ``tau_m / dt``, ``v_th``, reset mode and surrogate shared by all of them
    (the readout only needs the same ``tau_m / dt``). Anything else raises
    ValueError naming the layer and the parameter; so do convolutional
    layers (a config's conv models have batch norm, which NIR holds folded
    into the convolutions: conv graphs are imported with the Python API).

    The network is adapted in place so that it *is* what the config builds:
    layers (and parameters) are renamed ``fc1, lif1, ..., readout``, missing
    biases become zero biases, and neuron parameters are replaced by the
    config's (``tau_m`` in units of ``dt``; the same per-step decay up to
    float rounding).

    Parameters
    ----------
    network : Network
    base : TrainConfig, optional
        Values of the fields that do not describe the network (data,
        optimisation, rewiring, output directory). ``loss`` becomes
        ``ce_count`` for a spiking output unless ``base`` sets another
        spike-based loss.

    Returns
    -------
    TrainConfig
    """
    import dataclasses

    from .layers import LIF, Linear, Readout, SparseLinear
    from .parameter import Parameter

    from .conv import BatchNorm2d, Flatten, ResidualBlock

    layers = network.layers
    conv = [l.name for l in layers if isinstance(l, (BatchNorm2d, Flatten, ResidualBlock)) or hasattr(l, "geometry")]
    if conv:
        raise ValueError(f"network: convolutional layers {conv}; a TrainConfig's conv models (convnet, vggsnn, "
                         "resnet19) have batch norm, which a NIR graph holds folded into the convolutions, so "
                         "convolutional graphs import through the Python API only (snn_core.nir.from_nir)")
    bad_dtype = [l.name for l in layers if l.dtype != np.float32]
    if bad_dtype:
        raise ValueError(f"network: layers {bad_dtype} are not float32; the Trainer trains float32 networks")
    syn, neu = layers[0::2], layers[1::2]
    shape_msg = ("a TrainConfig describes synapses -> LIF -> ... -> synapses -> Readout|LIF with all synapses "
                 "SparseLinear or all Linear; build other architectures with the Python API")
    if len(layers) % 2 or not syn:
        raise ValueError(f"network: {len(layers)} layers; {shape_msg}")
    kinds = {type(l) for l in syn}
    if not (kinds <= {SparseLinear} or kinds <= {Linear}):
        raise ValueError(f"network: synaptic layers {[f'{l.name} ({type(l).__name__})' for l in syn]}; {shape_msg}")
    for i, layer in enumerate(neu):
        last = i == len(neu) - 1
        if not (type(layer) is LIF or (last and type(layer) is Readout)):
            raise ValueError(f"network: layer {layer.name!r} ({type(layer).__name__}) at position {2 * i + 1}; {shape_msg}")
    ref = neu[0].params
    for layer in neu:
        p = layer.params
        for field, want in (("R", 1.0), ("v_rest", 0.0)) + ((("v_reset", 0.0),) if type(layer) is LIF else ()):
            if getattr(p, field) != want:
                raise ValueError(f"layer {layer.name!r}: {field}={getattr(p, field):g}; a TrainConfig fixes {field}={want:g}"
                                 + (" (from_nir(..., fold_r=True) moves r into the weights)" if field == "R" else ""))
        if not math.isclose(p.tau_m / p.dt, ref.tau_m / ref.dt, rel_tol=1e-12):
            raise ValueError(f"layer {layer.name!r}: tau_m/dt={p.tau_m / p.dt:g} differs from {neu[0].name!r} "
                             f"({ref.tau_m / ref.dt:g}); a TrainConfig has one tau_m for all neuron layers")
        if type(layer) is LIF:
            lif_ref = next(l.params for l in neu if type(l) is LIF)
            for field in ("v_th", "reset", "detach_reset", "surrogate", "surrogate_param", "spike_fn"):
                if getattr(p, field) != getattr(lif_ref, field):
                    raise ValueError(f"layer {layer.name!r}: {field}={getattr(p, field)!r} differs from the other "
                                     f"LIF layers ({getattr(lif_ref, field)!r}); a TrainConfig has one value")
    lif = next((l.params for l in neu if type(l) is LIF), ref)
    if lif.surrogate_param is not None or lif.spike_fn != "heaviside":
        raise ValueError("network: surrogate_param / spike_fn other than the defaults cannot be put in a TrainConfig")
    output = "readout" if type(neu[-1]) is Readout else "lif"
    total = sum(l.in_features * l.out_features for l in syn)
    fields = dict(hidden=[l.out_features for l in neu[:-1]], sparse=kinds <= {SparseLinear}, output=output,
                  tau_m=float(f"{ref.tau_m / ref.dt:.12g}"), v_th=lif.v_th, reset=lif.reset,
                  detach_reset=lif.detach_reset, surrogate=lif.surrogate,
                  density=sum(l.nnz for l in syn) / total if kinds <= {SparseLinear} else 1.0)
    if output == "lif" and (base is None or base.loss == "ce_membrane"):
        fields["loss"] = "ce_count"
    config = TrainConfig.from_dict(fields, base)
    built = build_network(config, network.in_features, network.out_features)
    for layer, want in zip(layers, built.layers):
        layer.name = want.name
        if hasattr(want, "params"):
            layer.params = dataclasses.replace(want.params)
        elif layer.bias is None:
            layer.bias = Parameter(np.zeros(layer.out_features, layer.dtype), "bias", decay=False)
        for p in layer.parameters():
            p.name = f"{layer.name}.{p.name.rsplit('.', 1)[-1]}"
    return config


class Trainer:
    """Train a spiking MLP with evolutionary structure learning.

    Parameters
    ----------
    config : TrainConfig
    dataset : snn_core.data.datasets.Dataset, optional
        Defaults to ``load_dataset(config.data_dir, steps=config.steps)``
        (embedded sample if None). Static images (uint8 (N, features)) need
        an encoder other than ``"frames"``; frame sequences (float (N, T,
        features), e.g. a DVS folder) need ``encoder="frames"`` and
        ``steps == T`` (ValueError otherwise).
    network : Network, optional
        Train this network instead of a fresh one (e.g. one imported from
        NIR, made to fit a config by :func:`adopt_network`). It must be what
        ``build_network(config, ...)`` builds up to the weights (layer types,
        names, sizes, neuron parameters), so that checkpoints restore it;
        ValueError otherwise.
    profile : bool
        Time every phase of the loop into ``self.profiler`` and every
        top-level layer's forward and backward into ``self.layer_profiler``
        (:class:`~snn_core.profiling.PhaseTimer`; ``snn-esl train --profile``;
        switch both later with ``trainer.profiling = True``).

    Attributes
    ----------
    network, optimizer, rewirer
    epoch : int            completed epochs
    iteration : int        completed optimizer steps
    metrics : dict of lists, one entry per completed epoch
    """

    def __init__(self, config: TrainConfig, dataset=None, network=None, profile=False):
        self.config = config
        backend = get_backend(config.device)  # fails early, in one line, when the device is unusable
        data = dataset if dataset is not None else load_dataset(config.data_dir, steps=config.steps)
        self.dataset_name = getattr(data, "name", "custom")
        check_inputs(data, config, self.dataset_name)
        x_train, y_train = data.x_train, data.y_train
        if config.max_train is not None and config.max_train < len(x_train):
            # a random subset: files may be ordered by class (the embedded sample is)
            keep = np.sort(np.random.default_rng(_seed(config.seed, 4)).permutation(len(x_train))[: config.max_train])
            x_train, y_train = x_train[keep], y_train[keep]
        check_labels(y_train, "training labels")
        check_labels(data.y_test, "test labels")
        self.n_classes = int(max(y_train.max(), data.y_test.max())) + 1
        tr, va = train_val_split(len(x_train), config.val_fraction, seed=config.seed)
        self.x_train, self.y_train = as_inputs(x_train[tr]), y_train[tr].astype(np.int64)
        self.x_val, self.y_val = as_inputs(x_train[va]), y_train[va].astype(np.int64)
        self.x_test, self.y_test = as_inputs(data.x_test), data.y_test.astype(np.int64)
        n_in = self.x_train.shape[-1]  # features of one image, or of one frame of a sequence
        #: (C, H, W) of the images (or frames) that --augment transforms (None: no augmentation)
        self.image_shape = input_shape(config, n_in) if config.augment != "none" else None
        self.network = build_network(config, n_in, self.n_classes)
        if network is not None:
            self.network = _check_network(network, self.network, self.dataset_name)
        self.network.to(backend)
        self.encode = get_encoder(config.encoder)
        # the spike encoders draw uint8 spikes: a quarter of float32's memory (kept validation spikes, the
        # reused buffers), and a first SparseLinear on the cpu backend packs them without a float copy
        # (docs/benchmarks.md, "uint8 spikes"); every layer gives the same bits as for float32 spikes
        self._spike_dtype = np.uint8 if config.encoder in SPIKE_ENCODERS else np.float32
        self._encode_buffers = {}
        #: draw the next training batch's spikes on a background thread while a batch trains (the random
        #: encoders; the same spikes as drawn in the step: docs/benchmarks.md, "Encoding ahead")
        self.encode_ahead = config.encoder in RANDOM_ENCODERS
        self._ahead = None
        self.loss_fn = losses.get_loss(config.loss)
        self.iters_per_epoch = math.ceil(len(self.x_train) / config.batch_size)
        self.planned_iterations = self.iters_per_epoch * config.epochs
        schedule = make_schedule(config.schedule, config.lr, config.lr_end, self.planned_iterations,
                                 step_size=max(1, self.planned_iterations // 3))
        params = self.network.parameters()
        if config.optimizer == "adam":
            self.optimizer = Adam(params, lr=schedule, weight_decay=config.weight_decay)
        else:
            self.optimizer = SGD(params, lr=schedule, momentum=config.momentum, weight_decay=config.weight_decay)
        self.rewirer = Rewirer(
            t_iter=config.t_iter, zeta0=config.zeta0, decay=config.zeta_decay,
            t_end=max(1, int(config.t_end_fraction * self.planned_iterations)), prune=config.prune,
            grow=config.grow, seed=config.seed, enabled=config.rewiring and config.sparse,
            new_weight=config.new_weight, new_weight_scale=config.new_weight_scale,
            snapshot_every=config.snapshot_every,
        )
        for layer in self.network.sparse_layers():  # turnover is measured against the initial structure
            w = layer.weight
            self.rewirer.history.register(layer.name, w.shape, w.indptr, w.indices)
        self.epoch = 0
        self.iteration = 0
        self.metrics = {k: [] for k in ("epoch", "train_loss", "train_accuracy", "val_accuracy", "lr",
                                        "density", "epoch_seconds", "samples_per_s")}
        self.best_val_accuracy = -1.0
        self.best_epoch = 0
        self.best_state = None
        self.train_seconds = 0.0
        #: the folder whose run files are this trainer's own (set by fit and by restore_trainer)
        self.run_dir = None
        #: the epoch of the newest checkpoint this trainer wrote or was restored from (None: none)
        self.saved_epoch = None
        #: seconds per phase of the training loop; enabled by ``profile=True`` or ``snn-esl train --profile``
        self.profiler = PhaseTimer(enabled=profile, synchronize=backend.synchronize)
        #: seconds per top-level layer, forward and backward, inside the profiled "forward" and "backward" phases
        self.layer_profiler = PhaseTimer(enabled=profile, synchronize=backend.synchronize)

    @property
    def profiling(self):
        """Whether the training loop is timed per phase and per layer (``snn-esl train --profile``)."""
        return self.profiler.enabled

    @profiling.setter
    def profiling(self, on):
        self.profiler.enabled = self.layer_profiler.enabled = bool(on)

    # -- one pass --------------------------------------------------------------
    def _encode(self, x, key, for_forward=False):
        """Encode a batch: x (batch, features) images or (batch, T, features) frames -> (T, batch, features).

        ``for_forward=True``: the spikes are for a ``network.forward`` without
        ``record``, so only the input features it reads are drawn
        (:meth:`~snn_core.network.Network.input_rows_needed`).
        """
        if self.config.encoder == "direct":  # deterministic codes take no seed
            return self.encode(x, self.config.steps)
        if self.config.encoder == "latency":
            return self.encode(x, self.config.steps, dtype=self._spike_dtype)
        # one reused (F, T, B) buffer per batch shape: a fresh 2.5 MB array per
        # batch costs page faults. Safe because a batch's spikes are dead once
        # its backward is done and the next batch is encoded.
        shape = (x.shape[-1], self.config.steps, x.shape[0])
        buf = self._encode_buffers.get(shape)
        if buf is None:  # zeros: rows that are not drawn (below) hold spikes, never garbage
            buf = self._encode_buffers[shape] = np.zeros(shape, self._spike_dtype)
        if self.config.encoder == "frames":  # the frames as they are: nothing drawn
            return self.encode(x, self.config.steps, out=buf)
        # for a forward only the input features it reads are drawn (half of MNIST's pixels at density
        # 0.01): the others keep an earlier batch's spikes, which no output and no gradient depends on
        features = self.network.input_rows_needed() if for_forward else None
        return self.encode(x, self.config.steps, seed=_seed(self.config.seed, *key), out=buf, features=features)

    def augment(self, x, iteration=None):
        """The training augmentation (``config.augment``) of the batch of ``iteration`` (default: the next
        optimizer step's, ``self.iteration``), else x itself.

        x is (batch, features) images or (batch, T, features) frame
        sequences; every image is viewed as ``self.image_shape`` (C, H, W),
        and all frames of one sample get the same flip and shift. Its random
        draws come from (seed, iteration) alone, so a resumed run sees the
        same augmented batches as an uninterrupted one.
        """
        kind = self.config.augment
        if kind == "none":
            return x
        rng = np.random.default_rng(_seed(self.config.seed, 3, self.iteration if iteration is None else iteration))
        # (B, C, H, W) or (B, T, C, H, W): the transforms draw once per sample (axis 0)
        # and move the last two axes, so a sample's frames move together
        images = x.reshape(x.shape[:-1] + tuple(self.image_shape))
        if kind == "shift":
            out = random_crop(images, rng, padding=self.config.shift_pixels)
        elif kind == "affine":
            cfg = self.config
            out = random_affine(images, rng, cfg.rotate_degrees, cfg.zoom, cfg.shift_pixels)
        elif kind == "cifar":
            out = augment_cifar(images, rng)
        else:
            out = augment_dvs(images, rng)
        return out.reshape(x.shape)

    def train_epoch(self, progress=None):
        """One epoch over the shuffled training set; returns (loss, accuracy).

        The same loop on every backend: inputs are encoded on the host and
        uploaded by the first layer, the loss runs on the host on the
        output (T, batch, classes) (a small copy on a device backend).
        """
        cfg, net, opt = self.config, self.network, self.optimizer
        to_host = net.backend.to_host
        order = np.random.default_rng(_seed(cfg.seed, 1, self.epoch)).permutation(len(self.x_train))
        total_loss, correct, seen, t0 = 0.0, 0, 0, time.perf_counter()
        timed = self.profiler  # a no-op unless profiling (snn-esl train --profile)
        per_layer = self.layer_profiler if self.layer_profiler.enabled else None
        if self._ahead is not None:  # a batch drawn ahead by an epoch that stopped early is not this epoch's
            self._ahead.cancel()
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            with timed("rewiring"):  # first: it decides which inputs the forward reads, and so are encoded
                self.rewirer.prepare(self.iteration + 1, net)
            with timed("encode"):
                if self.encode_ahead:
                    x = self._take_ahead(order, start)
                else:
                    x = self._encode(self.augment(self.x_train[idx]), (2, self.iteration), for_forward=True)
                y = self.y_train[idx]
            with timed("forward"):
                out = to_host(net.forward(x, timer=per_layer))
            with timed("loss"):
                value, grad = self.loss_fn(out, y)
                self._check_diverged(value, "loss")
            with timed("backward"):
                net.zero_grad()
                net.backward(grad, timer=per_layer)
            with timed("optimizer"):
                opt.step()
            self.iteration += 1
            with timed("finite check"):
                self._check_diverged(value, "parameters")
            with timed("rewiring"):
                self.rewirer.maybe_rewire(self.iteration, net, opt)
            with timed("bookkeeping"):
                total_loss += value * len(idx)
                correct += losses.count_correct(out, y)
                seen += len(idx)
            if progress is not None:
                with timed("progress bar"):
                    progress.update(1)
                    progress.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}",
                                         density=f"{self.global_density():.3f}",
                                         sps=f"{seen / (time.perf_counter() - t0):.0f}", refresh=False)
        return total_loss / seen, correct / seen

    def _take_ahead(self, order, start):
        """The spikes of the batch ``order[start:...]`` (drawn during the previous step); submits the next one.

        The batch of optimizer step i is drawn with the seed (config.seed, 2,
        i), as :meth:`_encode` would draw it, for the input features the
        network reads when it is taken (:class:`~snn_core.data.EncodeAhead`).
        """
        cfg = self.config
        if self._ahead is None:
            self._ahead = EncodeAhead(self.encode, cfg.steps, dtype=self._spike_dtype)
        ahead, bs = self._ahead, cfg.batch_size
        needed = self.network.input_rows_needed()  # until this step's forward, for this batch and the next

        def submit(idx, iteration):
            ahead.submit(self.augment(self.x_train[idx], iteration), _seed(cfg.seed, 2, iteration), features=needed)

        if not ahead.pending:  # an epoch's first batch (train_epoch cancels one an interrupted epoch left)
            submit(order[start:start + bs], self.iteration)
        x = ahead.result(features=needed)
        if start + bs < len(order):
            submit(order[start + bs:start + 2 * bs], self.iteration + 1)
        return x

    def _check_diverged(self, loss, what):
        """Raise :class:`TrainingDiverged` at a non-finite/exploding loss or a NaN/Inf parameter."""
        if what == "loss":
            if math.isfinite(loss) and loss <= DIVERGENCE_LOSS:
                return
            why = f"loss {loss:.4g}" + ("" if not math.isfinite(loss) else f" > {DIVERGENCE_LOSS:g}")
        else:
            try:
                self.network.check_finite()
                return
            except ValueError as e:
                why = f"the update left {e}"
        raise TrainingDiverged(
            f"training diverged at epoch {self.epoch + 1}, iteration {self.iteration}: {why}; stopped (lower "
            f"--lr?); " + ("no checkpoint was written" if self.saved_epoch is None else
                             f"the checkpoints of epoch {self.saved_epoch} are kept as they were"))

    #: evaluation batches hold at most this many bytes in their largest layer output
    EVAL_BATCH_BYTES = 8 << 20

    def eval_batch_size(self):
        """Batch size of :meth:`evaluate`: as large as 200 while the largest layer output stays within 8 MiB.

        Larger batches mean fewer calls, but once a layer's output outgrows
        the caches the forward slows per sample (the conv job's 32x28x28
        maps, T = 2: 2.0x slower per image at batch 200 than at 64). Never
        below the training batch size. The 784-800-10 main job (T = 8) gets 200.
        """
        widest = max(getattr(m, "out_features", 0) for m in self.network.modules())
        per_sample = widest * self.config.steps * np.dtype(np.float32).itemsize
        return max(self.config.batch_size, min(200, self.EVAL_BATCH_BYTES // max(per_sample, 1)))

    #: the validation set's spikes are drawn once and kept while they take at most this many bytes
    #: (uint8 spikes of full MNIST's 6,000 validation images at T = 8: 38 MB, a quarter of its float32 training images)
    VAL_SPIKES_BYTES = 256 << 20

    def evaluate(self, x, y, batch_size=None):
        """Top-1 accuracy and mean loss on float images x (N, features) or frames (N, T, features), labels y.

        Evaluation batch b (``batch_size``, default :meth:`eval_batch_size`)
        is encoded with the seed (config.seed, 3, b), so every evaluation of
        the same set draws the same spikes. For ``self.x_val``, evaluated
        after every epoch, they are drawn once and kept while they take at
        most :attr:`VAL_SPIKES_BYTES` (uint8; the main job's 400 images:
        2.5 MB, full MNIST's 6,000: 38 MB); larger sets are drawn again at
        every evaluation, with the same bits.
        """
        to_host = self.network.backend.to_host
        bs = batch_size or self.eval_batch_size()
        kept = self._kept_spikes(x, bs)
        correct, total_loss = 0, 0.0
        self.network.eval()  # running statistics in batch norm
        try:
            for b, start in enumerate(range(0, len(x), bs)):
                xb, yb = x[start:start + bs], y[start:start + bs]
                if kept is None:
                    spikes = self._encode(xb, (3, b), for_forward=True)
                elif b in kept:
                    spikes = kept[b]
                else:  # every feature, in an array of its own: later forwards may read other inputs
                    spikes = kept[b] = self.encode(xb, self.config.steps, seed=_seed(self.config.seed, 3, b),
                                                   dtype=self._spike_dtype)
                out = to_host(self.network.forward(spikes))
                value, _ = self.loss_fn(out, yb)
                total_loss += value * len(xb)
                correct += losses.count_correct(out, yb)
        finally:
            self.network.train()
        return correct / len(x), total_loss / len(x)

    def _kept_spikes(self, x, batch_size):
        """The dict {batch index: spikes} kept for evaluating ``x`` in batches of ``batch_size``, or None
        when x is not the validation set, its encoder draws nothing, or its spikes would be too large."""
        if x is not self.x_val or self.config.encoder in ("direct", "latency", "frames"):
            return None
        kept = self.__dict__.get("_val_spikes")
        if kept is None or kept[0] is not x or kept[1] != batch_size:
            size = x.shape[0] * x.shape[-1] * self.config.steps * np.dtype(self._spike_dtype).itemsize
            if size > self.VAL_SPIKES_BYTES:
                return None
            kept = self._val_spikes = (x, batch_size, {})
        return kept[2]

    # -- the loop ----------------------------------------------------------------
    def fit(self, epochs=None, checkpoint_dir=None, overwrite=False):
        """Train until ``epochs`` epochs are complete (default: config.epochs).

        Writes ``last.h5`` (atomically) into ``checkpoint_dir`` (default
        config.out_dir) at the end of an epoch once ``config.checkpoint_seconds``
        have passed since the last write, and after the last epoch; ``best.h5``
        with it when validation accuracy improved since then.
        ``checkpoint_dir=False`` writes nothing. Returns the summary dict.

        The folder is locked for the run (:class:`~snn_core.runs.RunDir`): a
        folder used by another process, or holding another run's files, is
        refused (``overwrite=True`` deletes the other run's files first). A
        folder holding this trainer's own files (it resumed from there, or
        an earlier ``fit`` wrote them) is continued. Raises
        :class:`TrainingDiverged` when training diverges.
        """
        cfg = self.config
        epochs = cfg.epochs if epochs is None else epochs
        if cfg.threads:
            import numba

            if cfg.threads > numba.config.NUMBA_NUM_THREADS:
                raise ValueError(f"threads: {cfg.threads} requested, this machine allows at most "
                                 f"{numba.config.NUMBA_NUM_THREADS} (NUMBA_NUM_THREADS)")
            numba.set_num_threads(cfg.threads)
        if checkpoint_dir is False:
            return self._fit(epochs, None)
        out = Path(cfg.out_dir if checkpoint_dir is None else checkpoint_dir)
        continuing = self.run_dir is not None and Path(self.run_dir).resolve() == out.resolve()
        with RunDir(out, overwrite=overwrite, continuing=continuing):
            self.run_dir = out
            return self._fit(epochs, out)

    def _fit(self, epochs, out):
        cfg = self.config
        self.network.check_finite()  # damaged weights are an error, not a "diverged" run
        last_save, best_unsaved = time.perf_counter(), False
        ebar = tqdm(total=epochs, initial=self.epoch, desc="epochs", unit="ep", disable=cfg.quiet, position=0)
        while self.epoch < epochs:
            bbar = tqdm(total=self.iters_per_epoch, desc=f"epoch {self.epoch + 1}", unit="batch",
                        disable=cfg.quiet, leave=False, position=1)
            t0, profiled = time.perf_counter(), self.profiler.total()
            lr = self.optimizer.lr
            train_loss, train_acc = self.train_epoch(None if cfg.quiet else bbar)  # a disabled bar still formats
            seconds = time.perf_counter() - t0
            bbar.close()
            with self.profiler("validation"):
                self.network.check_finite()
                val_acc, _ = self.evaluate(self.x_val, self.y_val)
            self.train_seconds += seconds
            self.epoch += 1
            for k, v in (("epoch", self.epoch), ("train_loss", train_loss), ("train_accuracy", train_acc),
                         ("val_accuracy", val_acc), ("lr", lr), ("density", self.global_density()),
                         ("epoch_seconds", seconds), ("samples_per_s", len(self.x_train) / seconds)):
                self.metrics[k].append(v)
            with self.profiler("checkpoints"):
                if val_acc > self.best_val_accuracy:
                    self.best_val_accuracy, self.best_epoch = val_acc, self.epoch
                    self.best_state = self.network_state()
                    best_unsaved = True
                # writing both files costs ~0.1 s: after every epoch of a short run that is 10-20% of
                # its time, so short epochs are checkpointed every checkpoint_seconds (and at the end)
                due = (self.epoch == epochs or cfg.checkpoint_seconds == 0
                       or time.perf_counter() - last_save >= cfg.checkpoint_seconds)
                if out is not None and due:
                    # both files hold this moment's state: best.h5 is a copy of last.h5, replaced first
                    # (a crash between the two leaves last.h5 the older)
                    save_checkpoint(out / "last.h5", self, copies=[out / "best.h5"] if best_unsaved else [])
                    best_unsaved = False
                    last_save, self.saved_epoch = time.perf_counter(), self.epoch
            ebar.update(1)
            ebar.set_postfix(loss=f"{train_loss:.3f}", train=f"{train_acc:.3f}", val=f"{val_acc:.3f}",
                             best=f"{self.best_val_accuracy:.3f}", refresh=False)
            if cfg.quiet:
                print(f"epoch {self.epoch}/{epochs} loss {train_loss:.4f} train {train_acc:.4f} "
                      f"val {val_acc:.4f} density {self.global_density():.4f} "
                      f"rewiring events {self.rewirer.n_events} {seconds:.1f}s", flush=True)
            if self.profiler.enabled:  # what no phase covers: epoch bar, metrics, printing
                self.profiler.add("other", time.perf_counter() - t0 - (self.profiler.total() - profiled))
        ebar.close()
        summary = self.summary()
        if out is not None:
            atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
        return summary

    # -- state -------------------------------------------------------------------
    def global_density(self):
        """Connections present / connections possible, over all synaptic layers."""
        layers = [l for l in self.network.modules() if hasattr(l, "nnz")]
        return sum(l.nnz for l in layers) / sum(math.prod(l.weight_shape) for l in layers)

    def network_state(self):
        """Host copies of every layer's arrays (see :func:`network_state`)."""
        return network_state(self.network)

    def load_network_state(self, state):
        """Put arrays from :meth:`network_state` (or a checkpoint) back into the layers."""
        load_network_state(self.network, state)

    #: trainer counters saved with a checkpoint (see :meth:`state_dict`)
    COUNTERS = ("epoch", "iteration", "best_val_accuracy", "best_epoch", "train_seconds")

    def state_dict(self):
        """Everything needed to resume exactly, as plain dicts of host arrays and numbers.

        Keys: ``config`` (dict), ``network``, ``best`` (or None),
        ``optimizer``, ``rewirer``, ``trainer`` (counters and ``metrics``).
        Device-independent: a state saved on ``cuda`` loads on ``cpu``.
        """
        counters = {k: getattr(self, k) for k in self.COUNTERS}
        return {"config": self.config.to_dict(), "network": self.network_state(), "best": self.best_state,
                "optimizer": self.optimizer.state_dict(), "rewirer": self.rewirer.state_dict(),
                "trainer": counters | {"metrics": self.metrics}}

    def load_state_dict(self, state):
        """Restore :meth:`state_dict` output into this trainer (built from the same architecture).

        The network (and best model) are checked layer by layer (ValueError
        naming the layer); the rewirer keeps this trainer's schedule and
        rules (they follow the config, like the learning rate) and takes the
        saved generator, history and event count.
        """
        for group in ("network", "best"):  # a missing layer is damage, never "keep the other copy"
            if state.get(group) is None:
                continue
            for layer in self.network.modules():  # residual blocks: their layers
                if layer.parameters() and layer.name not in state[group]:
                    raise ValueError(f"/{group}/{layer.name} is missing (incomplete or damaged file)")
        for name, saved in (state.get("best") or {}).items():  # validate before changing anything
            layer = next((l for l in self.network.modules() if l.name == name), None)
            if layer is not None and hasattr(layer, "weight_shape"):
                shape = tuple(int(v) for v in saved.get("shape", layer.weight_shape))
                if shape != tuple(layer.weight_shape):
                    raise ValueError(f"best model: layer {name} has shape {shape}, the network "
                                     f"{tuple(layer.weight_shape)}")
                if "indptr" in saved:
                    check_csr(np.asarray(saved["indptr"]), np.asarray(saved["indices"]), shape)
                    if len(saved["data"]) != len(saved["indices"]):
                        raise ValueError(f"best model: layer {name}: data and indices differ in length")
        self.load_network_state(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        plan = self.rewirer.config()
        self.rewirer.load_state_dict(state["rewirer"])
        for key in ("t_iter", "zeta0", "decay", "t_end", "prune", "grow", "new_weight", "new_weight_scale", "enabled"):
            setattr(self.rewirer, key, plan[key])
        t = state["trainer"]
        self.epoch, self.iteration = int(t["epoch"]), int(t["iteration"])
        self.best_val_accuracy, self.best_epoch = float(t["best_val_accuracy"]), int(t["best_epoch"])
        self.train_seconds = float(t["train_seconds"])
        self.metrics = {k: list(v) for k, v in t["metrics"].items()}
        self.best_state = state.get("best")

    def summary(self):
        """Results of the run (what ``summary.json`` holds)."""
        current = self.network_state()
        if self.best_state is not None:
            self.load_network_state(self.best_state)
        test_acc, test_loss = self.evaluate(self.x_test, self.y_test)
        layers = [{"name": l.name, "shape": list(l.weight_shape), "nnz": int(l.nnz),
                   "density": l.nnz / math.prod(l.weight_shape)}
                  for l in self.network.modules() if hasattr(l, "nnz")]
        self.load_network_state(current)
        n_samples = self.epoch * len(self.x_train)
        return {
            "test_accuracy": test_acc, "test_loss": test_loss,
            "best_val_accuracy": self.best_val_accuracy, "best_epoch": self.best_epoch,
            "density": self.global_density(), "layers": layers,
            "rewiring_events": self.rewirer.n_events, "epochs": self.epoch, "iterations": self.iteration,
            "train_seconds": self.train_seconds,
            "train_samples_per_s": n_samples / self.train_seconds if self.train_seconds else 0.0,
            "dataset": self.dataset_name, "n_train": len(self.x_train), "n_val": len(self.x_val),
            "n_test": len(self.x_test), "metrics": self.metrics, "config": self.config.to_dict(),
        }


def is_frames(x) -> bool:
    """Does x hold frame sequences (N, T, features), not static images (uint8 (N, features))?

    Frames are 3-D and not uint8 (DVS event counts are float32); uint8
    arrays are images, flattened by :func:`~snn_core.data.datasets.to_float`
    whatever their number of axes, as before frame data existed.
    """
    x = np.asarray(x)
    return x.ndim == 3 and x.dtype != np.uint8


def check_inputs(data, config, name):
    """Raise one-line ValueError unless the data's kind (images or frames) fits ``config.encoder`` and ``steps``."""
    frames = is_frames(data.x_train)
    if frames != is_frames(data.x_test):
        raise ValueError(f"data ({name}): x_train is {data.x_train.shape} {data.x_train.dtype} but x_test is "
                         f"{data.x_test.shape} {data.x_test.dtype}; both must be images or both frame sequences")
    if frames and config.encoder != "frames":
        raise ValueError(f"encoder: the data ({name}) are frame sequences (N, T, features) = {data.x_train.shape}; "
                         f"train them with --encoder frames, not {config.encoder!r}")
    if not frames and config.encoder == "frames":
        raise ValueError(f"encoder: 'frames' needs frame sequences (N, T, features), e.g. a DVS folder; the data "
                         f"({name}) are static images {data.x_train.shape}: use bernoulli, poisson, direct or latency")
    if frames and data.x_train.shape[1] != config.steps:
        raise ValueError(f"steps: {config.steps}, but the data ({name}) have {data.x_train.shape[1]} frames per "
                         f"sample; set --steps {data.x_train.shape[1]}")


def as_inputs(x):
    """Trainer inputs: uint8 images -> float32 [0, 1] (N, features) (``to_float``); frames -> float32 (N, T, F) unscaled."""
    if is_frames(x):
        return np.ascontiguousarray(x, dtype=np.float32)
    return to_float(x)


def check_labels(y, what):
    """Class labels must be non-negative integers covering at least two classes."""
    y = np.asarray(y)
    if y.size == 0:
        raise ValueError(f"{what}: no samples")
    if y.dtype.kind not in "iu":
        raise ValueError(f"{what}: expected integer class labels, got dtype {y.dtype}")
    if y.min() < 0:
        raise ValueError(f"{what}: negative class label {int(y.min())}")
    classes = np.unique(y)
    if what == "training labels" and len(classes) < 2:
        raise ValueError(f"{what}: all {y.size} samples have class {int(classes[0])}; a classifier needs "
                         "samples of at least 2 classes")


def network_from_checkpoint(path, last=False):
    """The trained :class:`~snn_core.network.Network` in a checkpoint, without loading any data.

    Parameters
    ----------
    path : str or Path
        A checkpoint file, or a run directory (its ``last.h5``).
    last : bool
        The last weights instead of the best-validation ones (which are
        used when the checkpoint has them, as ``snn-esl evaluate`` does).

    Returns
    -------
    (Network, dict)
        The network and the checkpoint's config dict.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "last.h5").is_file():
            raise FileNotFoundError(f"run directory {path}: no last.h5 checkpoint")
        path = path / "last.h5"
    ck = load_checkpoint(path)
    try:
        config = TrainConfig.from_dict(ck["config"])
        state = ck["network"] if last or ck["best"] is None else ck["best"]
        net = build_network(config, *state_io_sizes(config, state))
        load_network_state(net, state)
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: incomplete or damaged ({type(e).__name__}: {e})") from None
    return net, ck["config"]


def _check_network(network, built, dataset_name):
    """``network`` if it matches ``built`` (the config's network) in everything but the weights."""
    if (network.in_features, network.out_features) != (built.in_features, built.out_features):
        raise ValueError(f"network: takes {network.in_features} inputs and gives {network.out_features} outputs; the "
                         f"data ({dataset_name}) has {built.in_features} features and {built.out_features} classes")
    if len(network.layers) != len(built.layers):
        raise ValueError(f"network: {len(network.layers)} layers, the config builds {len(built.layers)}")
    for have, want in zip(network.layers, built.layers):
        same = (type(have) is type(want) and have.name == want.name and have.dtype == want.dtype
                and (have.in_features, have.out_features) == (want.in_features, want.out_features)
                and getattr(have, "params", None) == getattr(want, "params", None)
                and [p.name for p in have.parameters()] == [p.name for p in want.parameters()])
        if not same:
            raise ValueError(f"network: layer {have.name!r} ({type(have).__name__}) differs from the config's "
                             f"{want.name!r} ({type(want).__name__}); describe it with adopt_network(network)")
    return network


def restore_trainer(path, dataset=None, **overrides):
    """A :class:`Trainer` in exactly the state saved at ``path`` (a :mod:`snn_core.checkpoint` file).

    ``overrides`` change config values (e.g. ``epochs=10`` to train longer,
    ``quiet=True``, ``device="cuda"``: checkpoints are device-independent);
    changing the architecture is rejected. Unless ``out_dir`` is
    overridden, the resumed run writes beside the checkpoint (its folder, not
    the folder recorded in the file, which may be another run's or a copy's
    original).
    """
    overrides = dict(overrides)
    overrides.setdefault("out_dir", str(Path(path).parent))
    ck = load_checkpoint(path)
    try:
        trainer = _restore(path, ck, dataset, overrides)
        trainer.run_dir = Path(path).parent  # its files are this run's own: continuing there is no overwrite
        trainer.saved_epoch = trainer.epoch
        return trainer
    except (KeyError, IndexError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path}: incomplete or damaged ({type(e).__name__}: {e})") from None


def _restore(path, ck, dataset, overrides):
    arch = ("model", "hidden", "channels", "fc_hidden", "width", "input_shape", "sparse", "output", "steps")
    for k in overrides:
        if k in arch and overrides[k] != ck["config"].get(k):
            raise ValueError(f"{k}: cannot change the architecture of a checkpoint ({ck['config'].get(k)!r} "
                             f"-> {overrides[k]!r})")
    config = TrainConfig.from_dict(ck["config"] | overrides)
    # the LR schedule and the end of rewiring are planned on config.epochs:
    # resuming with the same config continues bit-identically; raising
    # 'epochs' re-plans both over the longer run (documented in docs/howto.md)
    trainer = Trainer(config, dataset=dataset)
    n_in, n_classes = state_io_sizes(config, ck["network"])
    if trainer.x_train.shape[-1] != n_in:
        raise ValueError(f"data: the checkpoint's network takes {n_in} input features, the data "
                         f"({trainer.dataset_name}) has {trainer.x_train.shape[-1]}")
    if trainer.n_classes != n_classes:
        raise ValueError(f"data: the checkpoint classifies {n_classes} classes, the data "
                         f"({trainer.dataset_name}) has {trainer.n_classes}")
    try:
        trainer.load_state_dict(ck)
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path}: {e}") from None
    return trainer
