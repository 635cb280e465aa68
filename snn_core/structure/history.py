"""What every rewiring event did, and how much of the structure has turned over.

Connections are identified by their flat position key ``row * n_in + col``
(int64). Per layer the history keeps three sorted key arrays, O(nnz) each:

- ``initial``: the connections when the layer was first seen (before any event);
- ``alive_initial``: the initial connections never pruned since;
- ``ever_grown``: every distinct position grown at some event.

Per event and layer it records (all plain numbers):

``iteration, layer, zeta, n_pruned, n_grown, nnz, density``
    what happened; ``density = nnz / (n_out * n_in)``.
``frac_initial_kept``
    ``|alive_initial| / |initial|``: fraction of the initial connections still
    present *without ever having been pruned* (a position pruned and grown
    back later is a new connection: its weight restarted at 0).
``frac_grown``
    fraction of the *current* connections that were grown at some event
    (``1 - frac_initial_kept * |initial| / nnz`` since nnz is preserved:
    every current connection is either an untouched initial one or grown).
``n_ever_grown``
    number of distinct positions ever grown (a position grown twice counts once).
``frac_explored``
    ``|initial U ever_grown| / (n_out * n_in)``: fraction of all possible
    positions that have been a connection at some time.

Optional mask snapshots (CSR ``indptr``/``indices``) are kept at
registration (iteration 0 by convention: the initial structure) and after
every ``snapshot_every``-th event of a layer.
"""
from __future__ import annotations

import numpy as np

from ..kernels import cpu as K
from .init import in_sorted, position_keys

#: per-event columns, in order, with their dtypes
COLUMNS = {"iteration": np.int64, "zeta": np.float64, "n_pruned": np.int64, "n_grown": np.int64,
           "nnz": np.int64, "density": np.float64, "frac_initial_kept": np.float64,
           "frac_grown": np.float64, "n_ever_grown": np.int64, "frac_explored": np.float64}

_VERSION = 1


class _LayerTrack:
    """Turnover bookkeeping of one layer (sorted int64 key arrays)."""

    def __init__(self, shape, initial):
        self.shape = (int(shape[0]), int(shape[1]))
        self.initial = initial
        self.alive_initial = initial.copy()
        self.ever_grown = np.empty(0, np.int64)
        self.n_grown_initial = 0  # |ever_grown & initial|, kept up to date by record()
        self.n_events = 0
        self.snapshots = []  # (iteration, indptr, indices)


def _sorted_keys(keys, what):
    """``keys`` as a contiguous int64 array, checked to be strictly increasing (ValueError otherwise)."""
    keys = np.ascontiguousarray(keys, np.int64).reshape(-1)
    if len(keys) > 1 and np.any(keys[1:] <= keys[:-1]):
        raise ValueError(f"{what}: expected sorted, distinct keys")
    return keys


class RewiringHistory:
    """Event log and turnover of a :class:`~snn_core.structure.rewiring.Rewirer`.

    Parameters
    ----------
    snapshot_every : int or None
        Keep the CSR structure after every k-th event of each layer (and the
        initial one). None: no snapshots.

    Attributes
    ----------
    records : list of dict, one per (event, layer), keys ``layer`` and :data:`COLUMNS`.
    """

    def __init__(self, snapshot_every=None):
        self.snapshot_every = snapshot_every
        self.records = []
        self._layers = {}  # name -> _LayerTrack, in registration order

    def __len__(self):
        return len(self.records)

    @property
    def layer_names(self):
        return list(self._layers)

    def register(self, name, shape, indptr, indices):
        """Remember a layer's initial structure (no-op if ``name`` is known)."""
        if name in self._layers:
            return
        track = _LayerTrack(shape, position_keys(indptr, indices, shape[1]))
        if self.snapshot_every:
            track.snapshots.append((0, np.array(indptr, np.int32), np.array(indices, np.int32)))
        self._layers[name] = track

    def record(self, iteration, name, zeta, pruned_keys, grown_keys, indptr, indices):
        """Log one event on layer ``name`` and update its turnover.

        ``pruned_keys`` / ``grown_keys``: sorted int64 flat keys of the
        connections removed / added; ``indptr, indices``: the structure after
        the event. Returns the record dict. O(k log nnz + nnz) for k rewired
        connections: the searches go over the event's keys, not over the
        structure (an event on the main job's 784 x 800 layer spent 14 of its
        25 ms here when every key of the structure was searched).

        Structure changes only through events, so every current connection
        is an initial one never pruned (``alive_initial``) or was grown at
        some event, never both: the fraction grown is ``1 - |alive_initial| / nnz``.
        """
        t = self._layers[name]
        n_out, n_in = t.shape
        pruned, grown = _sorted_keys(pruned_keys, "pruned_keys"), _sorted_keys(grown_keys, "grown_keys")
        # every key array here is sorted: merge walks (kernels.cpu), no binary searches
        t.alive_initial = t.alive_initial[~K.sorted_member(t.alive_initial, pruned)]
        new = grown[~K.sorted_member(grown, t.ever_grown)]  # positions grown for the first time (sorted)
        t.ever_grown = K.sorted_merge(t.ever_grown, new)
        t.n_grown_initial += int(np.count_nonzero(K.sorted_member(new, t.initial)))
        t.n_events += 1
        nnz = int(indptr[-1])
        explored = len(t.initial) + len(t.ever_grown) - t.n_grown_initial
        rec = {"iteration": int(iteration), "layer": name, "zeta": float(zeta), "n_pruned": len(pruned_keys),
               "n_grown": len(grown_keys), "nnz": nnz, "density": nnz / (n_out * n_in),
               "frac_initial_kept": len(t.alive_initial) / max(len(t.initial), 1),
               "frac_grown": (nnz - len(t.alive_initial)) / nnz if nnz else 0.0,
               "n_ever_grown": len(t.ever_grown), "frac_explored": explored / (n_out * n_in)}
        self.records.append(rec)
        if self.snapshot_every and t.n_events % self.snapshot_every == 0:
            t.snapshots.append((int(iteration), np.array(indptr, np.int32), np.array(indices, np.int32)))
        return rec

    # -- access ------------------------------------------------------------
    def as_arrays(self, layer=None):
        """Columns as numpy arrays (one entry per event and layer), for plotting.

        ``layer``: keep only that layer's events. The ``layer`` column is a
        numpy string array.
        """
        recs = [r for r in self.records if layer is None or r["layer"] == layer]
        out = {k: np.array([r[k] for r in recs], dtype) for k, dtype in COLUMNS.items()}
        out["layer"] = np.array([r["layer"] for r in recs], dtype=str)
        return out

    def snapshots(self, layer):
        """List of ``(iteration, indptr, indices)`` kept for ``layer`` (iteration 0 = initial)."""
        return list(self._layers[layer].snapshots)

    def initial_keys(self, layer):
        return self._layers[layer].initial.copy()

    def ever_grown_keys(self, layer):
        return self._layers[layer].ever_grown.copy()

    def alive_initial_keys(self, layer):
        return self._layers[layer].alive_initial.copy()

    # -- serialisation -----------------------------------------------------
    def to_dict(self):
        """``{"meta": JSON-able dict, "arrays": {path: ndarray}}`` (HDF5-friendly).

        Array paths: ``events/<column>`` (``events/layer`` is an int32 index
        into ``meta["layers"]``); per layer i: ``layers/<i>/initial``,
        ``layers/<i>/alive_initial``, ``layers/<i>/ever_grown`` and, with
        snapshots, ``layers/<i>/snapshot_iteration`` (k,),
        ``layers/<i>/snapshot_indptr`` (k, n_out + 1), ``layers/<i>/snapshot_indices``
        (all k concatenated) and ``layers/<i>/snapshot_offsets`` (k + 1,).
        """
        names = list(self._layers)
        index = {n: i for i, n in enumerate(names)}
        arrays = {f"events/{k}": np.array([r[k] for r in self.records], dtype) for k, dtype in COLUMNS.items()}
        arrays["events/layer"] = np.array([index[r["layer"]] for r in self.records], np.int32)
        for i, name in enumerate(names):
            t = self._layers[name]
            arrays[f"layers/{i}/initial"] = t.initial
            arrays[f"layers/{i}/alive_initial"] = t.alive_initial
            arrays[f"layers/{i}/ever_grown"] = t.ever_grown
            if self.snapshot_every:
                snaps = t.snapshots
                arrays[f"layers/{i}/snapshot_iteration"] = np.array([s[0] for s in snaps], np.int64)
                arrays[f"layers/{i}/snapshot_indptr"] = (np.stack([s[1] for s in snaps]) if snaps
                                                         else np.zeros((0, t.shape[0] + 1), np.int32))
                arrays[f"layers/{i}/snapshot_indices"] = (np.concatenate([s[2] for s in snaps]) if snaps
                                                          else np.zeros(0, np.int32))
                arrays[f"layers/{i}/snapshot_offsets"] = np.cumsum([0] + [len(s[2]) for s in snaps]).astype(np.int64)
        meta = {"version": _VERSION, "snapshot_every": self.snapshot_every, "layers": names,
                "shapes": [list(self._layers[n].shape) for n in names],
                "layer_events": [self._layers[n].n_events for n in names]}
        return {"meta": meta, "arrays": arrays}

    @classmethod
    def from_dict(cls, d):
        """Rebuild from :meth:`to_dict` output (arrays may come back as any array-likes)."""
        meta, arrays = d["meta"], d["arrays"]
        if meta.get("version") != _VERSION:
            raise ValueError(f"history: unsupported version {meta.get('version')!r} (expected {_VERSION})")
        h = cls(snapshot_every=meta["snapshot_every"])
        names = list(meta["layers"])
        for i, (name, shape, n_ev) in enumerate(zip(names, meta["shapes"], meta["layer_events"])):
            t = _LayerTrack(shape, np.asarray(arrays[f"layers/{i}/initial"], np.int64))
            t.alive_initial = np.asarray(arrays[f"layers/{i}/alive_initial"], np.int64)
            t.ever_grown = np.asarray(arrays[f"layers/{i}/ever_grown"], np.int64)
            t.n_grown_initial = int(in_sorted(t.ever_grown, t.initial).sum())
            t.n_events = int(n_ev)
            if h.snapshot_every:
                its = np.asarray(arrays[f"layers/{i}/snapshot_iteration"], np.int64)
                ptr = np.asarray(arrays[f"layers/{i}/snapshot_indptr"], np.int32)
                idx = np.asarray(arrays[f"layers/{i}/snapshot_indices"], np.int32)
                off = np.asarray(arrays[f"layers/{i}/snapshot_offsets"], np.int64)
                t.snapshots = [(int(its[k]), ptr[k].copy(), idx[off[k]:off[k + 1]].copy()) for k in range(len(its))]
            h._layers[name] = t
        ev = {k: np.asarray(arrays[f"events/{k}"]) for k in COLUMNS}
        layer_idx = np.asarray(arrays["events/layer"])
        for j in range(len(layer_idx)):  # same key order as record()
            rec = {"iteration": int(ev["iteration"][j]), "layer": names[int(layer_idx[j])]}
            for k, dtype in COLUMNS.items():
                if k != "iteration":
                    rec[k] = float(ev[k][j]) if dtype is np.float64 else int(ev[k][j])
            h.records.append(rec)
        return h
