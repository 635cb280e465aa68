"""Training configuration: one flat dataclass, loadable from TOML/JSON and flags.

Unknown keys are rejected (a typo must not silently fall back to a default).
The defaults are the main job: the paper's 784-800-10 ESL-SNN at 10% density
on the embedded MNIST sample, sized to finish in well under 3 minutes on a
2-core laptop with at least 5 rewiring events.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None


#: more Numba threads than this is a typo, whatever the machine
MAX_THREADS = 1024


def option(default, help, *, factory=None):
    """A :class:`TrainConfig` field with its one-sentence ``help``.

    The sentence is the single source of the ``snn-esl train --help`` text and
    of the CLI reference page (``field.metadata["help"]``).
    """
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything that defines a training run; the defaults are the main job.

    Every field is also a ``snn-esl train`` flag (``t_iter`` -> ``--t-iter``)
    and a key of a TOML/JSON config file. Values are validated on creation
    (``ValueError`` naming the field); unknown keys are rejected by
    :meth:`from_dict` and :meth:`read_file`.
    """

    # data
    data_dir: str | None = option(None, "data folder: the four MNIST-format IDX files, CIFAR-10/100 batches (python "
                                        "or binary) or DVS-CIFAR10 class folders of .aedat recordings (see `snn-esl "
                                        "data download`); unset: $SNN_CORE_DATA if set, else the embedded "
                                        "5,000-digit sample")
    encoder: str = option("bernoulli", "how pixel intensities become input spikes: bernoulli | poisson | direct | "
                                       "latency | frames (DVS data: one integrated event frame per step, as "
                                       "recorded)")
    steps: int = option(8, "number of time steps T each sample is presented for (DVS data: the number of frames "
                           "each recording is integrated into)")
    val_fraction: float = option(0.1, "fraction of the training set held out at random for validation (paper: 10%)")
    max_train: int | None = option(None, "train on a random subset of this many training samples (quick runs); "
                                         "unset: all")
    augment: str = option("none", "training-time augmentation of every batch (never of validation or test "
                                  "images): none | shift (random translation by up to --shift-pixels in each "
                                  "direction, zero fill) | cifar (random crop with 4-pixel padding, then horizontal "
                                  "flip) | dvs (horizontal flip, then roll by up to 5 pixels) | affine (random "
                                  "rotation by up to --rotate-degrees, zoom by up to --zoom and translation by up to "
                                  "--shift-pixels, bilinear, zero fill)")
    shift_pixels: int = option(2, "--augment shift and affine: the largest translation in pixels")
    rotate_degrees: float = option(10.0, "--augment affine: the largest rotation, in degrees either way")
    zoom: float = option(0.1, "--augment affine: the largest relative change of scale (0.1: from 0.9x to 1.1x)")
    # network
    model: str = option("mlp", "network family: mlp | convnet | vggsnn | resnet19 (builders in snn_core.models)")
    hidden: list = option(None, "sizes of the hidden LIF layers, e.g. `--hidden 800` or `--hidden 500 300`",
                          factory=lambda: [800])
    channels: list = option(None, "convnet only: output channels of each conv block, e.g. `--channels 32 64`",
                            factory=lambda: [32, 64])
    fc_hidden: list = option(None, "convnet only: sizes of hidden fully-connected LIF layers between the last conv "
                                   "block and the output, e.g. `--fc-hidden 256`; none: a linear classifier",
                             factory=list)
    pool: str = option("avg", "convnet only: pooling after each conv block: avg (average of the spikes, 2x2) | max "
                              "(a spike if any in the window; NIR export needs avg)")
    width: float = option(1.0, "vggsnn/resnet19 only: channel multiplier (e.g. 0.25 for a laptop-sized version)")
    input_shape: list | None = option(None, "conv models only: input image shape C H W; unset: inferred for square "
                                            "1-, 2- or 3-channel images")
    dense_first: bool = option(True, "conv models only: keep the first sparse layer dense (the global density "
                                     "stays exact)")
    layer_density: dict | None = option(None, "sparse models only: hold these sparse layers at a fixed density, "
                                        "e.g. `--layer-density conv2=0.3` (layer names as printed at the start of "
                                        "training); the other sparse layers share the rest of the budget by --init, so "
                                        "the global density stays exactly --density")
    density: float = option(0.1, "target global connection density D of the sparse network (connections / possible"
                                 " connections)")
    init: str = option("erdos_renyi", "how the sparse layers' initial connections are drawn: erdos_renyi "
                                      "(per-layer density from one global scale) | erk (Erdős–Rényi-kernel, for conv layers) | uniform (every layer at D)")
    min_per_row: int = option(0, "if >= 1, every output neuron gets at least this many inputs at initialisation")
    sparse: bool = option(True, "use sparse CSR layers; --no-sparse trains dense Linear layers instead (density is"
                                " then ignored)")
    output: str = option("readout", "output layer: readout (leaky membrane, no spikes) | lif (spiking neurons)")
    loss: str = option("ce_membrane", "loss: ce_membrane (cross-entropy of the mean membrane) | ce_count (of spike"
                                      " counts) | mse_rate | tet")
    gain: float = option(2.0, "initial weight scale, in units of sqrt(3/fan_in); 2 keeps the hidden layers firing")
    tau_m: float = option(2.0, "membrane time constant of the LIF neurons, in units of the time step dt")
    v_th: float = option(1.0, "firing threshold of the LIF neurons, in membrane units")
    reset: str = option("hard", "what a spike does to the membrane: hard (set to v_reset) | soft (subtract v_th) |"
                                " none")
    detach_reset: bool = option(False, "treat the reset as a constant in BPTT (no gradient through it; see the "
                                       "BPTT page)")
    surrogate: str = option("rectangular", "surrogate derivative of the spike used in BPTT: rectangular | "
                                           "triangle | sigmoid | arctan | fast_sigmoid")
    # optimisation
    epochs: int = option(30, "passes over the training split; the LR schedule and the end of rewiring are planned "
                             "on it")
    batch_size: int = option(100, "samples per mini-batch (paper: 100)")
    optimizer: str = option("adam", "optimizer: adam | sgd")
    lr: float = option(0.01, "initial learning rate (paper: 0.01, decayed exponentially to 0.0001)")
    lr_end: float = option(0.0001, "final learning rate of the exponential and cosine schedules")
    schedule: str = option("exponential", "learning-rate schedule over the run: exponential | cosine | step | "
                                          "constant")
    momentum: float = option(0.9, "momentum of SGD (ignored by Adam)")
    weight_decay: float = option(0.0, "L2 weight decay added to the weight gradients (never to biases)")
    # structure learning
    rewiring: bool = option(True, "prune and regrow connections during training (ESL); --no-rewiring gives the "
                                  "static-sparse control")
    t_iter: int = option(100, "iterations between rewiring events (paper: 1000 on full MNIST; 100 suits the "
                              "3,600-sample default set)")
    zeta0: float = option(0.3, "fraction of each layer's connections rewired at the first event (then decayed)")
    zeta_decay: str = option("cosine", "how the rewired fraction decays over the events: cosine | constant")
    t_end_fraction: float = option(0.75, "rewiring stops after this fraction of all training iterations")
    prune: str = option("magnitude", "which connections are removed at an event: magnitude (smallest |w|) | set "
                                     "(smallest positive and negative) | gradient")
    grow: str = option("random", "where new connections are grown: random | gradient (largest |dL/dw|, RigL) | "
                                 "momentum")
    new_weight: str = option("zero", "initial weight of a grown connection: zero | random")
    new_weight_scale: float = option(0.1, "with --new-weight random: grown weights are U(-s a, s a), a = the "
                                          "fan-in init bound")
    snapshot_every: int | None = option(1, "keep the connectivity mask every k-th rewiring event, for plots; unset"
                                           " in a config file (null): never")
    # run
    seed: int = option(0, "one seed for the validation split, shuffling, spike encoding, initialisation and "
                          "rewiring")
    out_dir: str = option("runs/esl", "run directory to write summary.json, best.h5 and last.h5 into")
    checkpoint_seconds: float = option(30.0, "write last.h5 (and best.h5, if the best model changed) at the end of "
                                             "an epoch only when this many seconds passed since the last write, "
                                             "and after the last epoch; 0: after every epoch. A crash loses at "
                                             "most this much training plus one epoch")
    device: str = option("cpu", "where training runs: reference (plain NumPy, slow) | cpu (Numba) | cuda (needs "
                                "numba-cuda and an NVIDIA GPU)")
    quiet: bool = option(False, "no progress bars; print one plain line per epoch instead")
    threads: int | None = option(None, "number of Numba threads; unset: all cores")

    def __post_init__(self):
        self.validate()

    # -- validation --------------------------------------------------------
    def validate(self):
        """Raise ValueError naming the first field with an invalid value.

        Types are strict: a bool field takes only true/false, an int field
        only integers (not 1.5, not true, not "3"), a float field numbers
        (integers are converted), a str field strings; ``None`` only where
        the field allows it.
        """
        self._check_types()

        def need(cond, name, expected):
            if not cond:
                raise ValueError(f"{name}: expected {expected}, got {getattr(self, name)!r}")

        def choice(name, options):
            need(getattr(self, name) in options, name, f"one of {list(options)}")

        choice("encoder", ("bernoulli", "poisson", "direct", "latency", "frames"))
        choice("augment", ("none", "shift", "cifar", "dvs", "affine"))
        need(self.shift_pixels >= 1, "shift_pixels", "an integer >= 1")
        need(math.isfinite(self.rotate_degrees) and 0 <= self.rotate_degrees <= 180, "rotate_degrees",
             "a value in [0, 180]")
        need(math.isfinite(self.zoom) and 0 <= self.zoom < 1, "zoom", "a value in [0, 1)")
        need(isinstance(self.steps, int) and self.steps >= 1, "steps", "an integer >= 1")
        need(0 < self.val_fraction < 1, "val_fraction", "a fraction in (0, 1)")
        need(self.max_train is None or (isinstance(self.max_train, int) and self.max_train >= 10), "max_train", "None or an integer >= 10")
        need(isinstance(self.hidden, (list, tuple)) and all(isinstance(h, int) and h > 0 for h in self.hidden),
             "hidden", "a list of positive layer sizes")
        self.hidden = list(self.hidden)
        need(isinstance(self.density, (int, float)) and 0 < self.density <= 1, "density", "a value in (0, 1]")
        choice("init", ("erdos_renyi", "erk", "uniform"))
        choice("model", ("mlp", "convnet", "vggsnn", "resnet19"))
        choice("pool", ("avg", "max"))
        need(isinstance(self.channels, (list, tuple)) and len(self.channels) >= 1
             and all(isinstance(c, int) and c > 0 for c in self.channels), "channels", "a list of positive channel counts")
        self.channels = list(self.channels)
        need(isinstance(self.fc_hidden, (list, tuple))
             and all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in self.fc_hidden), "fc_hidden",
             "a list of positive layer sizes (may be empty)")
        self.fc_hidden = list(self.fc_hidden)
        need(isinstance(self.width, (int, float)) and math.isfinite(self.width) and self.width > 0, "width", "a value > 0")
        need(self.input_shape is None or (isinstance(self.input_shape, (list, tuple)) and len(self.input_shape) == 3
             and all(isinstance(c, int) and c > 0 for c in self.input_shape)), "input_shape",
             "None or [channels, height, width]")
        if self.input_shape is not None:
            self.input_shape = list(self.input_shape)
        need(self.layer_density is None or (isinstance(self.layer_density, dict) and all(
            isinstance(k, str) and k and isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1
            for k, v in self.layer_density.items())), "layer_density", "None or {layer name: density in (0, 1]}")
        if self.layer_density is not None:
            self.layer_density = {k: float(v) for k, v in self.layer_density.items()}
        need(isinstance(self.min_per_row, int) and self.min_per_row >= 0, "min_per_row", "an integer >= 0")
        choice("output", ("readout", "lif", "linear"))
        choice("loss", ("ce_membrane", "ce_count", "mse_rate", "tet"))
        need(math.isfinite(self.gain) and self.gain > 0, "gain", "a finite value > 0")
        need(math.isfinite(self.tau_m) and self.tau_m > 0, "tau_m", "a finite value > 0")
        need(math.isfinite(self.v_th) and self.v_th > 0, "v_th", "a finite value > 0")
        choice("reset", ("hard", "soft", "none"))
        need(isinstance(self.epochs, int) and self.epochs >= 1, "epochs", "an integer >= 1")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", "an integer >= 1")
        choice("optimizer", ("adam", "sgd"))
        need(math.isfinite(self.lr) and self.lr > 0, "lr", "a finite value > 0")
        need(math.isfinite(self.lr_end) and self.lr_end > 0, "lr_end", "a finite value > 0")
        choice("schedule", ("exponential", "cosine", "step", "constant"))
        need(0 <= self.momentum < 1, "momentum", "a value in [0, 1)")
        need(math.isfinite(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "a finite value >= 0")
        need(isinstance(self.t_iter, int) and self.t_iter >= 1, "t_iter", "an integer >= 1")
        need(0 <= self.zeta0 < 1, "zeta0", "a value in [0, 1)")
        choice("zeta_decay", ("cosine", "constant"))
        need(0 < self.t_end_fraction <= 1, "t_end_fraction", "a value in (0, 1]")
        choice("prune", ("magnitude", "set", "gradient"))
        choice("grow", ("random", "gradient", "momentum"))
        choice("new_weight", ("zero", "random"))
        need(math.isfinite(self.new_weight_scale) and self.new_weight_scale >= 0, "new_weight_scale",
             "a finite value >= 0")
        need(self.snapshot_every is None or (isinstance(self.snapshot_every, int) and self.snapshot_every >= 1),
             "snapshot_every", "None or an integer >= 1")
        need(0 <= self.seed < 2**32, "seed", "an integer in [0, 2**32)")
        need(math.isfinite(self.checkpoint_seconds) and self.checkpoint_seconds >= 0, "checkpoint_seconds",
             "a finite number of seconds >= 0")
        need(self.out_dir.strip() != "", "out_dir", "a folder name (an empty path would write into the current folder)")
        need(self.data_dir is None or self.data_dir.strip() != "", "data_dir", "None or a folder name")
        choice("device", ("reference", "cpu", "cuda"))
        need(self.threads is None or 1 <= self.threads <= MAX_THREADS, "threads", f"None or an integer in [1, {MAX_THREADS}]")

    def _check_types(self):
        for f in dataclasses.fields(self):
            value, optional = getattr(self, f.name), "None" in f.type
            base = f.type.split("|")[0].strip()
            if value is None and optional:
                continue
            if base == "bool":
                ok, kind = isinstance(value, bool), "true or false"
            elif base == "int":
                ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
            elif base == "float":
                ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
                if ok:
                    setattr(self, f.name, float(value))
            elif base == "str":
                ok, kind = isinstance(value, str), "a string"
            elif base == "dict":
                ok, kind = isinstance(value, dict), "a table {name: value}"
            else:  # hidden: a list of layer sizes
                ok = isinstance(value, (list, tuple)) and all(isinstance(h, int) and not isinstance(h, bool)
                                                               for h in value)
                kind = "a list of integers"
            if not ok:
                raise ValueError(f"{f.name}: expected {kind}{' or null' if optional else ''}, got {value!r} "
                                 f"({type(value).__name__})")

    # -- (de)serialisation -------------------------------------------------
    def to_dict(self):
        """The config as a plain JSON-able dict."""
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls):
        """Names of all fields (the valid config keys)."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d, base=None):
        """Config from a mapping; unknown keys raise ValueError naming them."""
        unknown = sorted(set(d) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"config: unknown key(s) {unknown}; valid keys are {cls.field_names()}")
        merged = (base.to_dict() if base is not None else {}) | dict(d)
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for k, v in merged.items():  # JSON/TOML give ints for floats like 1; accept them
            if types[k] == "float" and isinstance(v, int) and not isinstance(v, bool):
                merged[k] = float(v)
        return cls(**merged)

    @classmethod
    def from_file(cls, path, base=None):
        """Load a ``.toml`` or ``.json`` config file."""
        return cls.from_dict(cls.read_file(path), base)

    @classmethod
    def read_file(cls, path):
        """The mapping in a ``.toml`` or ``.json`` config file (keys checked, values not yet)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path}: not found")
        text = path.read_bytes()
        try:
            if path.suffix == ".toml":
                if tomllib is None:
                    raise ValueError("TOML configs need Python >= 3.11 (tomllib); use JSON")
                d = tomllib.loads(text.decode())
            elif path.suffix == ".json":
                d = json.loads(text)
            else:
                raise ValueError(f"config file {path}: expected a .toml or .json file")
        except (tomllib.TOMLDecodeError if tomllib else ValueError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"config file {path}: cannot parse: {e}") from None
        if not isinstance(d, dict):
            raise ValueError(f"config file {path}: expected a table/object at the top level")
        unknown = sorted(set(d) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"config file {path}: unknown key(s) {unknown}; valid keys are {cls.field_names()}")
        return d
