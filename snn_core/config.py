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


@dataclass
class TrainConfig:
    """Everything that defines a training run; the defaults are the main job.

    Every field is also a ``snn-esl train`` flag (``t_iter`` -> ``--t-iter``)
    and a key of a TOML/JSON config file. Values are validated on creation
    (``ValueError`` naming the field); unknown keys are rejected by
    :meth:`from_dict` and :meth:`read_file`.
    """

    # data
    data_dir: str | None = None          # IDX directory; None -> $SNN_CORE_DATA or the embedded sample
    encoder: str = "bernoulli"           # bernoulli | poisson | direct | latency
    steps: int = 8                       # T, time steps per sample
    val_fraction: float = 0.1            # paper: 10% of the training set, drawn at random
    max_train: int | None = None         # use a random subset of N training samples (quick runs)
    # network
    model: str = "mlp"                   # mlp | convnet | vggsnn | resnet19 (snn_core.models)
    hidden: list = field(default_factory=lambda: [800])
    channels: list = field(default_factory=lambda: [32, 64])  # convnet: conv channels per block
    width: float = 1.0                   # vggsnn/resnet19: channel multiplier (small versions for laptops)
    input_shape: list | None = None      # conv models: [C, H, W]; None infers square 1/3/2-channel images
    dense_first: bool = True             # conv models: first sparse layer dense (global density stays exact)
    density: float = 0.1                 # target global connection density D
    init: str = "erdos_renyi"            # erdos_renyi | erk | uniform
    min_per_row: int = 0                 # >= 1: every output neuron gets at least this many inputs
    sparse: bool = True                  # False: dense Linear layers (density ignored)
    output: str = "readout"              # readout (membrane) | lif (spikes)
    loss: str = "ce_membrane"            # ce_membrane | ce_count | mse_rate | tet
    gain: float = 2.0                    # initial weight scale (x sqrt(3/fan_in)); 2 keeps hidden layers firing
    tau_m: float = 2.0                   # membrane time constant, in units of dt
    v_th: float = 1.0
    reset: str = "hard"                  # hard | soft | none
    detach_reset: bool = False
    surrogate: str = "rectangular"
    # optimisation
    epochs: int = 30
    batch_size: int = 100
    optimizer: str = "adam"              # adam | sgd
    lr: float = 0.01                     # paper: exponential decay 0.01 -> 0.0001
    lr_end: float = 0.0001
    schedule: str = "exponential"        # exponential | cosine | step | constant
    momentum: float = 0.9                # SGD only
    weight_decay: float = 0.0
    # structure learning
    rewiring: bool = True                # False: the static-sparse control
    t_iter: int = 100                    # paper: 1000 on full MNIST; scaled for the 3,600-sample default set
    zeta0: float = 0.3
    zeta_decay: str = "cosine"           # cosine | constant
    t_end_fraction: float = 0.75         # rewiring stops after this fraction of the iterations
    prune: str = "magnitude"             # magnitude | set | gradient
    grow: str = "random"                 # random | gradient | momentum
    new_weight: str = "zero"             # zero | random: initial weight of a grown connection
    new_weight_scale: float = 0.1        # "random": U(-s a, s a) with a the fan-in init bound
    snapshot_every: int | None = 1       # keep the connectivity mask every k events (plots); None: never
    # run
    seed: int = 0
    out_dir: str = "runs/esl"
    device: str = "cpu"                  # reference | cpu | cuda (snn_core.backends)
    quiet: bool = False
    threads: int | None = None           # Numba threads; None = all cores

    def __post_init__(self):
        self.validate()

    # -- validation --------------------------------------------------------
    def validate(self):
        """Raise ValueError naming the first field with an invalid value."""
        def need(cond, name, expected):
            if not cond:
                raise ValueError(f"{name}: expected {expected}, got {getattr(self, name)!r}")

        def choice(name, options):
            need(getattr(self, name) in options, name, f"one of {list(options)}")

        choice("encoder", ("bernoulli", "poisson", "direct", "latency"))
        need(isinstance(self.steps, int) and self.steps >= 1, "steps", "an integer >= 1")
        need(0 < self.val_fraction < 1, "val_fraction", "a fraction in (0, 1)")
        need(self.max_train is None or (isinstance(self.max_train, int) and self.max_train >= 10), "max_train", "None or an integer >= 10")
        need(isinstance(self.hidden, (list, tuple)) and all(isinstance(h, int) and h > 0 for h in self.hidden),
             "hidden", "a list of positive layer sizes")
        self.hidden = list(self.hidden)
        need(isinstance(self.density, (int, float)) and 0 < self.density <= 1, "density", "a value in (0, 1]")
        choice("init", ("erdos_renyi", "erk", "uniform"))
        choice("model", ("mlp", "convnet", "vggsnn", "resnet19"))
        need(isinstance(self.channels, (list, tuple)) and len(self.channels) >= 1
             and all(isinstance(c, int) and c > 0 for c in self.channels), "channels", "a list of positive channel counts")
        self.channels = list(self.channels)
        need(isinstance(self.width, (int, float)) and math.isfinite(self.width) and self.width > 0, "width", "a value > 0")
        need(self.input_shape is None or (isinstance(self.input_shape, (list, tuple)) and len(self.input_shape) == 3
             and all(isinstance(c, int) and c > 0 for c in self.input_shape)), "input_shape",
             "None or [channels, height, width]")
        if self.input_shape is not None:
            self.input_shape = list(self.input_shape)
        need(isinstance(self.min_per_row, int) and self.min_per_row >= 0, "min_per_row", "an integer >= 0")
        choice("output", ("readout", "lif", "linear"))
        choice("loss", ("ce_membrane", "ce_count", "mse_rate", "tet"))
        need(self.gain > 0, "gain", "> 0")
        choice("reset", ("hard", "soft", "none"))
        need(isinstance(self.epochs, int) and self.epochs >= 1, "epochs", "an integer >= 1")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", "an integer >= 1")
        choice("optimizer", ("adam", "sgd"))
        need(math.isfinite(self.lr) and self.lr > 0, "lr", "a finite value > 0")
        need(math.isfinite(self.lr_end) and self.lr_end > 0, "lr_end", "a finite value > 0")
        choice("schedule", ("exponential", "cosine", "step", "constant"))
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
        choice("device", ("reference", "cpu", "cuda"))
        need(self.threads is None or (isinstance(self.threads, int) and self.threads >= 1), "threads", "None or an integer >= 1")

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
