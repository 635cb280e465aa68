"""HDF5 checkpoints: everything needed to evaluate, inspect or resume exactly.

Layout (format version 1)::

    /                  attrs: format="snn_core-checkpoint", format_version,
                              snn_core_version, created
    /config            attrs: json (the TrainConfig)
    /network/<layer>   CSR arrays indptr, indices, data (+ bias) for sparse
                       layers; weight (+ bias) for dense ones
    /best/<layer>      the same for the best-validation model
    /optimizer         attrs: iteration; /optimizer/<i>/<state> arrays
    /rewirer           the rewirer's state_dict (config, RNG, history)
    /trainer           attrs: epoch, iteration, best_val_accuracy, best_epoch,
                       train_seconds, metrics (json)

Nested dicts become groups, numpy arrays datasets, anything else a JSON
attribute, so the rewirer's and optimizer's ``state_dict`` are stored as they
are. Files are written to a temporary name in the same directory, flushed to
disk and renamed over the target: a crash or a full disk during a save leaves
the previous checkpoint intact. Checkpoints hold no device-specific data.
"""
from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import h5py
import numpy as np

FORMAT = "snn_core-checkpoint"
FORMAT_VERSION = 1


_SLASH = "\\"  # stands for "/" inside stored names


class CheckpointError(ValueError):
    """A file that is not a readable snn_core checkpoint of a known version."""


# --------------------------------------------------------------------------
# generic tree <-> HDF5
# --------------------------------------------------------------------------
def _write_tree(group, obj):
    for key, value in obj.items():
        key = str(key).replace("/", _SLASH)  # HDF5 would read "a/b" as a nested path
        if isinstance(value, dict):
            _write_tree(group.create_group(key), value)
        elif isinstance(value, list) and any(isinstance(v, (dict, np.ndarray)) for v in value):
            sub = group.create_group(key)
            sub.attrs["__list__"] = len(value)
            _write_tree(sub, {str(i): v for i, v in enumerate(value)})
        elif isinstance(value, np.ndarray):
            if value.dtype.kind in "US":
                group.create_dataset(key, data=value.astype(h5py.string_dtype()))
            else:
                group.create_dataset(key, data=value)
        else:
            group.attrs[key] = json.dumps(value, default=_json_default)


def _json_default(v):
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"cannot store {type(v).__name__} in a checkpoint")


def _read_tree(group):
    out = {}
    for key, value in group.attrs.items():
        if key != "__list__" and isinstance(value, str):  # non-string attrs are read explicitly
            out[key.replace(_SLASH, "/")] = json.loads(value)
    for key, item in group.items():
        key = key.replace(_SLASH, "/")
        if isinstance(item, h5py.Group):
            out[key] = _read_tree(item)
        else:
            arr = item[()]
            if item.dtype.kind == "O" or h5py.check_string_dtype(item.dtype) is not None:
                arr = np.asarray(item.asstr()[()], dtype=str)
            out[key] = arr
    if "__list__" in group.attrs:
        return [out[str(i)] for i in range(int(group.attrs["__list__"]))]
    return out


# --------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------
def save_checkpoint(path, trainer):
    """Atomically write ``trainer``'s complete state to ``path`` (HDF5)."""
    from . import __version__

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["snn_core_version"] = __version__
            f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
            f.create_group("config").attrs["json"] = json.dumps(trainer.config.to_dict())
            _write_tree(f.create_group("network"), trainer.network_state())
            if trainer.best_state is not None:
                _write_tree(f.create_group("best"), trainer.best_state)
            opt = trainer.optimizer.state_dict()
            g = f.create_group("optimizer")
            g.attrs["iteration"] = opt["iteration"]
            _write_tree(g, {str(i): st for i, st in enumerate(opt["state"])})
            _write_tree(f.create_group("rewirer"), trainer.rewirer.state_dict())
            t = f.create_group("trainer")
            for k in ("epoch", "iteration", "best_val_accuracy", "best_epoch", "train_seconds"):
                t.attrs[k] = getattr(trainer, k)
            t.attrs["metrics"] = json.dumps(trainer.metrics)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a process killed mid-save
            stale.unlink(missing_ok=True)
    except BaseException as e:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise OSError(e.errno, f"saving checkpoint {path} failed ({e.strerror or e}); "
                                   "the previous checkpoint, if any, is intact") from e
        if isinstance(e, Exception):
            raise RuntimeError(f"saving checkpoint {path} failed ({type(e).__name__}: {e}); "
                               "the previous checkpoint, if any, is intact") from e
        raise


def _fsync_dir(directory):
    """Make the rename itself durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path):
    """Read a checkpoint into plain Python objects (validating the format).

    Returns a dict with keys ``config`` (dict), ``network``, ``best`` (or
    None), ``optimizer`` ({"iteration", "state"}), ``rewirer``, ``trainer``.
    Raises :class:`CheckpointError` for a corrupt, truncated, foreign or
    newer-format file, FileNotFoundError if it does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise CheckpointError(f"checkpoint {path}: not a readable HDF5 file (corrupt or truncated?): {e}") from None
    try:
        with f:
            if f.attrs.get("format") != FORMAT:
                raise CheckpointError(f"checkpoint {path}: not an snn_core checkpoint (no '{FORMAT}' marker)")
            version = int(f.attrs.get("format_version", -1))
            if version > FORMAT_VERSION:
                raise CheckpointError(
                    f"checkpoint {path}: format version {version} is newer than this snn_core reads "
                    f"({FORMAT_VERSION}); upgrade snn_core")
            if version < 1:
                raise CheckpointError(f"checkpoint {path}: invalid format version {version}")
            for group in ("config", "network", "optimizer", "rewirer", "trainer"):
                if group not in f:
                    raise CheckpointError(f"checkpoint {path}: missing group '/{group}' (incomplete file)")
            opt = f["optimizer"]
            state = _read_tree(opt)
            return {
                "config": json.loads(f["config"].attrs["json"]),
                "network": _read_tree(f["network"]),
                "best": _read_tree(f["best"]) if "best" in f else None,
                "optimizer": {"iteration": int(opt.attrs["iteration"]),
                              "state": [state[str(i)] for i in range(len(state))]},
                "rewirer": _read_tree(f["rewirer"]),
                "trainer": {k: (json.loads(v) if k == "metrics" else v.item() if hasattr(v, "item") else v)
                            for k, v in f["trainer"].attrs.items()},
                "format_version": version,
            }
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {path}: unreadable content ({type(e).__name__}: {e})") from None


def restore_trainer(path, dataset=None, **overrides):
    """A :class:`~snn_core.training.Trainer` in exactly the state saved at ``path``.

    ``overrides`` change config values (e.g. ``epochs=10`` to train longer,
    ``quiet=True``); changing the architecture is rejected.
    """
    ck = load_checkpoint(path)
    try:
        return _restore(path, ck, dataset, overrides)
    except (KeyError, IndexError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path}: incomplete or damaged ({type(e).__name__}: {e})") from None


def _restore(path, ck, dataset, overrides):
    from .config import TrainConfig
    from .sparse import check_csr
    from .training import Trainer

    arch = ("hidden", "sparse", "output", "steps")
    for k in overrides:
        if k in arch and overrides[k] != ck["config"].get(k):
            raise ValueError(f"{k}: cannot change the architecture of a checkpoint ({ck['config'].get(k)!r} "
                             f"-> {overrides[k]!r})")
    config = TrainConfig.from_dict(ck["config"] | overrides)
    # the LR schedule and the end of rewiring are planned on config.epochs:
    # resuming with the same config continues bit-identically; raising
    # 'epochs' re-plans both over the longer run (documented in docs/howto.md)
    trainer = Trainer(config, dataset=dataset)
    shapes = [tuple(int(v) for v in s["shape"]) for s in ck["network"].values()]
    if trainer.x_train.shape[1] != shapes[0][1]:
        raise ValueError(f"data: the checkpoint's network takes {shapes[0][1]} input features, the data "
                         f"({trainer.dataset_name}) has {trainer.x_train.shape[1]}")
    if trainer.n_classes != shapes[-1][0]:
        raise ValueError(f"data: the checkpoint classifies {shapes[-1][0]} classes, the data "
                         f"({trainer.dataset_name}) has {trainer.n_classes}")
    for state in (ck["network"], ck["best"] or {}):
        for layer in trainer.network.layers:
            saved = state.get(layer.name)
            if saved is None:
                continue
            shape = tuple(int(v) for v in saved["shape"])
            if shape != (layer.out_features, layer.in_features):
                raise ValueError(f"checkpoint {path}: layer {layer.name} has shape {shape}, the config "
                                 f"builds {(layer.out_features, layer.in_features)}")
            try:
                if "indptr" in saved:
                    check_csr(np.asarray(saved["indptr"]), np.asarray(saved["indices"]), shape)
                    if len(saved["data"]) != len(saved["indices"]):
                        raise ValueError("data and indices differ in length")
                elif saved["weight"].shape != shape:
                    raise ValueError(f"weight shape {saved['weight'].shape}")
            except ValueError as e:
                raise CheckpointError(f"checkpoint {path}: layer {layer.name} is damaged ({e})") from None
    trainer.load_network_state(ck["network"])
    trainer.optimizer.load_state_dict(ck["optimizer"])
    # the saved rewirer brings its generator, history and event count; its
    # schedule and rules follow the (possibly overridden) config, like the LR
    plan = trainer.rewirer.config()
    trainer.rewirer.load_state_dict(ck["rewirer"])
    for key in ("t_iter", "zeta0", "decay", "t_end", "prune", "grow", "new_weight", "new_weight_scale", "enabled"):
        setattr(trainer.rewirer, key, plan[key])
    t = ck["trainer"]
    trainer.epoch, trainer.iteration = int(t["epoch"]), int(t["iteration"])
    trainer.best_val_accuracy, trainer.best_epoch = float(t["best_val_accuracy"]), int(t["best_epoch"])
    trainer.train_seconds = float(t["train_seconds"])
    trainer.metrics = {k: list(v) for k, v in t["metrics"].items()}
    trainer.best_state = ck["best"]
    return trainer


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
    from .config import TrainConfig
    from .training import build_network, load_network_state

    path = Path(path)
    if path.is_dir():
        if not (path / "last.h5").is_file():
            raise FileNotFoundError(f"run directory {path}: no last.h5 checkpoint")
        path = path / "last.h5"
    ck = load_checkpoint(path)
    try:
        config = TrainConfig.from_dict(ck["config"])
        state = ck["network"] if last or ck["best"] is None else ck["best"]
        shapes = [tuple(int(v) for v in s["shape"]) for s in state.values()]
        net = build_network(config, shapes[0][1], shapes[-1][0])
        load_network_state(net, state)
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: incomplete or damaged ({type(e).__name__}: {e})") from None
    return net, ck["config"]
