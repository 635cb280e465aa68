"""HDF5 checkpoints: everything needed to evaluate, inspect or resume exactly.

Layout (format version 2)::

    /                  attrs: format="snn_core-checkpoint", format_version,
                              snn_core_version, created
    /config            attrs: json (the TrainConfig)
    /network/<layer>   CSR arrays indptr, indices, data (+ bias) for sparse
                       layers; weight (+ bias) for dense ones; members in
                       network order (older files list them by name, so
                       readers find layers by name, never by position)
    /best/<layer>      the same for the best-validation model
    /optimizer         attrs: iteration; /optimizer/<i>/<state> arrays
    /rewirer           the rewirer's state_dict (config, RNG, history)
    /trainer           attrs: epoch, iteration, best_val_accuracy, best_epoch,
                       train_seconds, metrics (json)

This module only serialises dicts: ``save_checkpoint`` writes
``trainer.state_dict()`` (any object with that method) and ``load_checkpoint``
returns the same dict; :func:`snn_core.training.restore_trainer` builds a
Trainer from it. Nested dicts become groups, numpy arrays datasets, anything else a JSON
attribute, so the rewirer's and optimizer's ``state_dict`` are stored as they
are. Files are written to a temporary name in the same directory, flushed to
disk and renamed over the target: a crash or a full disk during a save leaves
the previous checkpoint intact. Checkpoints hold no device-specific data.

Integrity (format version 2). Before the file is closed every object gets a
``__digest__`` attribute (:func:`seal`): a dataset the SHA-256 of its dtype,
shape and bytes, a group the SHA-256 of its other attributes and the names
of its members. :func:`load_checkpoint` verifies every digest
(:func:`verify`), so a flipped byte, a truncated array, an edited attribute
or a deleted group or dataset is a :class:`CheckpointError` naming the
object, never a silently different model; it then checks that every
parameter and optimizer state array is finite (:func:`check_finite_tree`).
Version-1 files (no digests) still load, unverified.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np

from .version import __version__

FORMAT = "snn_core-checkpoint"
FORMAT_VERSION = 2
DIGEST = "__digest__"


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
        if key not in ("__list__", DIGEST) and isinstance(value, str):  # non-string attrs are read explicitly
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
def save_checkpoint(path, trainer, copies=()):
    """Atomically write ``trainer.state_dict()`` (a Trainer's complete state) to ``path`` (HDF5).

    ``copies``: more paths that get the same file, byte for byte, each
    replaced atomically and in the order given, before ``path`` is. The
    Trainer saves best.h5 with last.h5 this way: both hold the trainer's
    state at that moment, so it is serialised and sealed once (half the
    cost of two saves, ~50 ms for the main job).
    """
    from .runs import temp_path

    path = Path(path)
    copies = [Path(c) for c in copies]
    if any(c.resolve() == path.resolve() for c in copies):
        raise ValueError(f"saving checkpoint {path}: copies must name other files")
    current, temps = path, [temp_path(path)]
    try:
        with h5py.File(temps[0], "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["snn_core_version"] = __version__
            f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
            _write_state(f, trainer.state_dict())
            seal(f)
        _fsync_file(temps[0])
        for current in copies:
            temps.append(temp_path(current))
            shutil.copyfile(temps[0], temps[-1])
            _fsync_file(temps[-1])
            os.replace(temps[-1], current)
            _fsync_dir(current.parent)
        current = path
        os.replace(temps[0], path)
        _fsync_dir(path.parent)
        # temporary files of other processes are left alone: the run folder's
        # lock holder removes those of dead processes (snn_core.runs)
    except BaseException as e:
        for tmp in temps:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
        if isinstance(e, OSError):
            why = str(e.strerror or e).strip().splitlines()[0] if str(e.strerror or e).strip() else type(e).__name__
            raise OSError(e.errno, f"saving checkpoint {current} failed ({why}); "
                                   "the previous checkpoint, if any, is intact") from e
        if isinstance(e, Exception):
            raise RuntimeError(f"saving checkpoint {current} failed ({type(e).__name__}: {e}); "
                               "the previous checkpoint, if any, is intact") from e
        raise


# --------------------------------------------------------------------------
# integrity: digests of every object, finite values
# --------------------------------------------------------------------------
def _canonical(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.item() if isinstance(value, np.generic) else value


def _object_digest(obj):
    """SHA-256 (hex) of a dataset's dtype, shape and bytes, or of a group's attributes and member names."""
    h = hashlib.sha256()
    if isinstance(obj, h5py.Dataset):
        h.update(f"dataset {obj.dtype.str if obj.dtype.kind != 'O' else 'str'} {obj.shape}".encode())
        if h5py.check_string_dtype(obj.dtype) is not None:
            for item in np.ravel(obj.asstr()[()]):
                h.update(item.encode() + b"\0")
        else:
            h.update(np.ascontiguousarray(obj[()]).tobytes())
    else:
        h.update(f"group {sorted(obj.keys())}".encode())
    attrs = {k: _canonical(v) for k, v in obj.attrs.items() if k != DIGEST}
    h.update(json.dumps(attrs, sort_keys=True, default=str).encode())
    return h.hexdigest()


def seal(f):
    """Give every group and dataset of the open file ``f`` its ``__digest__`` attribute."""
    objects = [f]
    f.visititems(lambda name, obj: objects.append(obj))
    for obj in objects:  # a group's digest covers member names, not members: any order works
        obj.attrs[DIGEST] = _object_digest(obj)


def verify(f, path):
    """Check every object's digest; raise :class:`CheckpointError` naming the first damaged one."""
    bad = []

    def check(name, obj):
        stored = obj.attrs.get(DIGEST)
        if stored is None or _canonical(stored) != _object_digest(obj):
            bad.append(name)
            return True  # stop visiting
        return None

    if check("/", f) is None:
        f.visititems(lambda name, obj: check("/" + name, obj))
    if bad:
        raise CheckpointError(f"checkpoint {path}: {bad[0]} is damaged (checksum mismatch or missing); "
                              "the file cannot be trusted")


def check_finite_tree(tree, where, path):
    """Raise :class:`CheckpointError` if any float array in the nested dict/list ``tree`` holds NaN/Inf."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        if isinstance(value, (dict, list)):
            check_finite_tree(value, f"{where}/{key}", path)
        elif isinstance(value, np.ndarray) and value.dtype.kind in "fc":
            n_bad = int(value.size - np.count_nonzero(np.isfinite(value)))
            if n_bad:
                raise CheckpointError(f"checkpoint {path}: {where}/{key} holds {n_bad} NaN/Inf value(s)")


def _write_state(f, state):
    """Write a ``Trainer.state_dict()`` into the open file ``f`` (layout of the module docstring)."""
    f.create_group("config").attrs["json"] = json.dumps(state["config"])
    # layers in network order (HDF5 lists a group's members by name unless told to keep creation order)
    _write_tree(f.create_group("network", track_order=True), state["network"])
    if state["best"] is not None:
        _write_tree(f.create_group("best", track_order=True), state["best"])
    opt = state["optimizer"]
    g = f.create_group("optimizer")
    g.attrs["iteration"] = opt["iteration"]
    _write_tree(g, {str(i): st for i, st in enumerate(opt["state"])})
    _write_tree(f.create_group("rewirer"), state["rewirer"])
    t = f.create_group("trainer")
    for k, v in state["trainer"].items():
        t.attrs[k] = json.dumps(v) if k == "metrics" else v


def _fsync_file(path):
    """Flush a written file's data to disk before it is renamed over an older one."""
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


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
            if version >= 2 or DIGEST in f.attrs:
                verify(f, path)
            opt = f["optimizer"]
            state = _read_tree(opt)
            ck = {
                "config": json.loads(f["config"].attrs["json"]),
                "network": _read_tree(f["network"]),
                "best": _read_tree(f["best"]) if "best" in f else None,
                "optimizer": {"iteration": int(opt.attrs["iteration"]),
                              "state": [state[str(i)] for i in range(len(state))]},
                "rewirer": _read_tree(f["rewirer"]),
                "trainer": {k: (json.loads(v) if k == "metrics" else v.item() if hasattr(v, "item") else v)
                            for k, v in f["trainer"].attrs.items() if k != DIGEST},
                "format_version": version,
            }
        check_finite_tree({"network": ck["network"], "best": ck["best"] or {}, "optimizer": ck["optimizer"]["state"]},
                          "", path)
        return ck
    except CheckpointError:
        raise
    except Exception as e:  # h5py reports damaged metadata as OSError, KeyError, TypeError, ...
        why = (str(e).strip().splitlines() or [""])[0]
        raise CheckpointError(f"checkpoint {path}: unreadable content ({type(e).__name__}: {why})") from None
