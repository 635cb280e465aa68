"""Sweeps: a grid of training runs executed as tasks on dask.distributed.

A sweep is a base :class:`~snn_core.config.TrainConfig` and a *grid*: for
every grid key (any TrainConfig field: ``density``, ``seed``, ``rewiring``,
``prune``, ``grow``, ``data_dir``, ``hidden``, ...) a list of values. The
runs are the Cartesian product, plus (optionally) one dense baseline per
combination of the keys that matter to a dense network. Each run trains in
its own folder ``SWEEP_DIR/<name>`` through the ordinary path (a new
:class:`~snn_core.training.Trainer`, or :func:`~snn_core.training.restore_trainer`
from the folder's ``last.h5``), so a sweep folder is a set of ordinary run
folders plus ``sweep.json`` / ``sweep.csv`` / ``runs.csv``.

Where the runs execute is Dask's business: an in-process ``LocalCluster``
(one single-threaded worker process per core) or any scheduler address.
A task is idempotent: a run whose ``summary.json`` is complete is skipped, a
run with a ``last.h5`` resumes from it, so Dask may retry a task whose worker
died and a re-run of a finished sweep trains nothing.
"""
from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import TrainConfig

# grid keys that do not change a dense network (it has no sparsity structure)
SPARSE_ONLY_KEYS = ("density", "rewiring", "init", "min_per_row", "t_iter", "zeta0", "zeta_decay", "t_end_fraction",
                    "prune", "grow", "new_weight", "new_weight_scale", "sparse")
# config fields that say how a run executes, not what it computes
EXECUTION_KEYS = ("out_dir", "quiet", "threads", "device", "snapshot_every", "checkpoint_seconds")
# the metrics one run contributes to the tables
METRICS = ("test_accuracy", "best_val_accuracy", "density", "train_seconds", "initial_kept", "explored")
DEFAULT_GRID = {"density": [0.01, 0.05, 0.1, 0.2], "rewiring": [True, False], "seed": [0]}


@dataclass
class Sweep:
    """What a sweep runs: the shared config, the grid and whether to add dense baselines.

    Attributes
    ----------
    base : TrainConfig
        Values shared by every run (``out_dir`` is the sweep folder).
    grid : dict of str -> list
        TrainConfig field -> values, in the order the runs are listed.
    dense : bool
        Also train a dense network (``sparse=False``) per combination of the
        grid keys that matter to it (seed, data_dir, hidden, ...).
    """

    base: TrainConfig = field(default_factory=TrainConfig)
    grid: dict = field(default_factory=lambda: dict(DEFAULT_GRID))
    dense: bool = True

    def __post_init__(self):
        unknown = sorted(set(self.grid) - set(TrainConfig.field_names()))
        if unknown:
            raise ValueError(f"grid: unknown key(s) {unknown}; grid keys are TrainConfig fields "
                             f"{TrainConfig.field_names()}")
        for k in ("out_dir", "quiet", "threads"):
            if k in self.grid:
                raise ValueError(f"grid: {k} cannot vary within a sweep")
        for k, v in self.grid.items():
            if not isinstance(v, (list, tuple)) or not v:
                raise ValueError(f"grid: {k} must be a non-empty list of values, got {v!r}")
            if len({json.dumps(x) for x in v}) != len(v):
                raise ValueError(f"grid: {k} lists a value twice: {v!r}")
        self.grid = {k: list(v) for k, v in self.grid.items()}

    def runs(self):
        """Every run of the sweep: a list of ``(name, TrainConfig)``, names unique.

        Invalid values (``density = 2``, ``grow = "sideways"``) raise
        ValueError naming the field before anything runs.
        """
        keys = list(self.grid)
        varying = [k for k in keys if len(self.grid[k]) > 1]
        out, seen = [], set()
        combos = [dict(zip(keys, vals)) for vals in itertools.product(*(self.grid[k] for k in keys))]
        if not self.base.sparse or self.grid.get("sparse") == [False]:  # a sweep of dense networks only
            combos, dense = [], True
        else:
            dense = self.dense
        for values in combos:
            if values.get("sparse") is False:
                continue  # dense runs come from the dense baseline below
            out.append(self._run(values, varying))
        if dense:
            dense_keys = [k for k in keys if k not in SPARSE_ONLY_KEYS]
            for vals in itertools.product(*(self.grid[k] for k in dense_keys)):
                values = dict(zip(dense_keys, vals)) | {"sparse": False, "density": 1.0, "rewiring": False}
                out.append(self._run(values, varying))
        for name, _ in out:
            if name in seen:
                raise ValueError(f"grid: two runs would share the folder {name!r}; give distinct values")
            seen.add(name)
        return out

    def _run(self, values, varying):
        name = run_name(values, varying)
        overrides = dict(values) | {"out_dir": str(Path(self.base.out_dir) / name), "quiet": True}
        return name, TrainConfig.from_dict(overrides, self.base)

    # -- files ---------------------------------------------------------------
    @classmethod
    def read_file(cls, path):
        """``(base, grid, dense)`` mappings from a TOML/JSON sweep file.

        The file has up to three top-level entries: ``base`` (a table of
        TrainConfig fields shared by every run), ``grid`` (a table of
        TrainConfig field -> list of values) and ``dense`` (true/false).
        """
        path = Path(path)
        d = _read_mapping(path)
        unknown = sorted(set(d) - {"base", "grid", "dense"})
        if unknown:
            raise ValueError(f"sweep file {path}: unknown top-level key(s) {unknown}; expected [base], [grid], dense")
        base, grid = d.get("base", {}), d.get("grid", {})
        if not isinstance(base, dict) or not isinstance(grid, dict):
            raise ValueError(f"sweep file {path}: base and grid must be tables")
        dense = d.get("dense", None)
        if dense is not None and not isinstance(dense, bool):
            raise ValueError(f"sweep file {path}: dense must be true or false, got {dense!r}")
        return base, grid, dense


def _read_mapping(path):
    if not path.is_file():
        raise FileNotFoundError(f"sweep file {path}: not found")
    if path.suffix not in (".toml", ".json"):
        raise ValueError(f"sweep file {path}: expected a .toml or .json file")
    try:
        if path.suffix == ".json":
            d = json.loads(path.read_text())
        else:
            import tomllib

            d = tomllib.loads(path.read_text())
    except ModuleNotFoundError:
        raise ValueError("TOML sweep files need Python >= 3.11 (tomllib); use JSON") from None
    except ValueError as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ValueError(f"sweep file {path}: cannot parse: {e}") from None
    if not isinstance(d, dict):
        raise ValueError(f"sweep file {path}: expected a table/object at the top level")
    return d


def run_name(values, varying=()):
    """Folder name of a run: ``d0.01-esl-s0``, ``dense-s2``, plus ``key-value`` for other varying keys."""
    parts = []
    if values.get("sparse") is False:
        parts.append("dense")
    else:
        if "density" in values:
            parts.append(f"d{values['density']:g}")
        if "rewiring" in values:
            parts.append("esl" if values["rewiring"] else "static")
    for k, v in values.items():
        if k in ("density", "rewiring", "sparse", "seed") or (k not in varying):
            continue
        if k == "hidden":
            v = "x".join(str(h) for h in v)
        elif k == "data_dir":
            v = Path(str(v)).name or "data"
        parts.append(f"{k.replace('_', '')}-{v}")
    if "seed" in values:
        parts.append(f"s{values['seed']}")
    name = "-".join(str(p) for p in parts) or "run"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# --------------------------------------------------------------------------
# one run (executes on a Dask worker)
# --------------------------------------------------------------------------
def summary_is_complete(run_dir, config):
    """True if ``run_dir/summary.json`` records the finished run ``config`` describes.

    Raises ValueError if the folder holds a finished run of a *different*
    configuration (a sweep never overwrites another run's results).
    """
    path = Path(run_dir) / "summary.json"
    try:
        s = json.loads(path.read_text())
        saved = s["config"]
        epochs = int(s["epochs"])
        float(s["test_accuracy"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    check_same_run(saved, config, path)
    return epochs >= config.epochs


def check_same_run(saved, config, where):
    """Raise ValueError if the config dict ``saved`` (from ``where``) is another run than ``config``.

    Execution settings (out_dir, threads, ...) and ``epochs`` (a longer run
    continues a shorter one) may differ; a field missing from ``saved`` (added
    to TrainConfig later) counts as its default.
    """
    mine = config.to_dict()
    # a field added to TrainConfig after the run was saved had its default value then
    defaults = TrainConfig().to_dict()
    differ = sorted(k for k in mine if k not in EXECUTION_KEYS and k != "epochs"
                    and saved.get(k, defaults[k]) != mine[k])
    if differ:
        raise ValueError(f"{where}: belongs to a run with different {', '.join(differ)} "
                         f"({', '.join(f'{saved.get(k)!r} vs {mine[k]!r}' for k in differ[:3])}); "
                         f"use a new sweep folder")


def train_run(config_dict):
    """Train (or resume, or skip) one run; returns its result row (a dict).

    ``config_dict`` is ``TrainConfig.to_dict()`` with ``out_dir`` the run's
    folder. A complete ``summary.json`` there means nothing to do; a
    ``last.h5`` means resume from it (exactly, via
    :func:`~snn_core.training.restore_trainer`); otherwise train from
    scratch. The row holds ``status`` ("skipped", "resumed" or "trained"),
    the run's metrics and its ``config``.
    """
    config = TrainConfig.from_dict(config_dict)
    if config.threads:  # before the first kernel call: one Numba thread per worker by default
        import numba

        numba.set_num_threads(min(config.threads, numba.config.NUMBA_NUM_THREADS))
    out = Path(config.out_dir)
    t0 = time.perf_counter()
    if summary_is_complete(out, config):
        status = "skipped"
    else:
        from .checkpoint import CheckpointError, load_checkpoint
        from .training import Trainer, restore_trainer

        trainer = None
        if (out / "last.h5").is_file():
            try:
                saved = load_checkpoint(out / "last.h5")["config"]
            except (CheckpointError, OSError, KeyError) as e:
                raise ValueError(f"run folder {out}: last.h5 cannot be resumed ({e}); delete it to start over") \
                    from None
            check_same_run(saved, config, out / "last.h5")
            trainer = restore_trainer(out / "last.h5", **{k: v for k, v in config.to_dict().items()
                                                          if k not in ("hidden", "sparse", "output", "steps")})
            status = "resumed"
        else:
            trainer = Trainer(config)
            status = "trained"
        # a fresh start may replace what an attempt killed before its first last.h5 left (best.h5 alone);
        # a folder with a summary.json of another configuration is still refused by fit
        overwrite = status == "trained" and not (out / "summary.json").exists()
        # the per-epoch lines of a quiet run go to the run's own log, not the worker's terminal
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "train.log", "a") as log, contextlib.redirect_stdout(log):
            # which process did what: a run retried after its worker died shows two lines
            print(f"{'resumed' if status == 'resumed' else 'started'} at epoch {trainer.epoch} by pid {os.getpid()} on {socket.gethostname()} "
                  f"({time.strftime('%Y-%m-%d %H:%M:%S')})", flush=True)
            trainer.fit(overwrite=overwrite)
    row = result_row(out)
    row["status"] = status
    row["wall_seconds"] = time.perf_counter() - t0
    return row


def result_row(run_dir):
    """Metrics of a finished run folder: summary.json plus turnover from last.h5.

    ``initial_kept``: fraction of the initial connections never pruned;
    ``explored``: fraction of all possible positions ever connected; both
    over all sparse layers (connection- and position-weighted), NaN for a
    run without rewiring events.
    """
    run_dir = Path(run_dir)
    s = json.loads((run_dir / "summary.json").read_text())
    kept = explored = math.nan
    if s.get("rewiring_events"):
        from .checkpoint import load_checkpoint
        from .structure import Rewirer

        hist = Rewirer.from_state_dict(load_checkpoint(run_dir / "last.h5")["rewirer"]).history
        arrays = hist.as_arrays()
        k_num = k_den = e_num = e_den = 0.0
        for layer in hist.layer_names:
            sel = arrays["layer"] == layer
            if not sel.any():
                continue
            nnz = float(arrays["nnz"][sel][-1])
            size = nnz / float(arrays["density"][sel][-1])
            k_num += float(arrays["frac_initial_kept"][sel][-1]) * nnz
            k_den += nnz
            e_num += float(arrays["frac_explored"][sel][-1]) * size
            e_den += size
        if k_den:
            kept, explored = k_num / k_den, e_num / e_den
    cfg = s["config"]
    return {"run": run_dir.name, "test_accuracy": s["test_accuracy"], "best_val_accuracy": s["best_val_accuracy"],
            "best_epoch": s["best_epoch"], "density": s["density"], "epochs": s["epochs"],
            "rewiring_events": s["rewiring_events"], "train_seconds": s["train_seconds"],
            "initial_kept": kept, "explored": explored, "dataset": s.get("dataset"), "config": cfg}


# --------------------------------------------------------------------------
# aggregation
# --------------------------------------------------------------------------
def configuration_of(row, grid_keys):
    """The grid values of a run except the seed (what seeds are averaged over)."""
    cfg = row["config"]
    keys = [k for k in grid_keys if k not in ("seed", "sparse", "density", "rewiring")]
    d = {"sparse": cfg["sparse"], "density": cfg["density"], "rewiring": cfg["rewiring"]} | {k: cfg[k] for k in keys}
    if not cfg["sparse"]:
        d = {k: v for k, v in d.items() if k not in SPARSE_ONLY_KEYS or k == "sparse"}
        d["density"], d["rewiring"] = 1.0, False
    return d


def mean_std(values):
    """``(mean, sample std, n)`` of the finite values; std is NaN for n < 2."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    n = len(v)
    if n == 0:
        return math.nan, math.nan, 0
    m = sum(v) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (n - 1)) if n > 1 else math.nan
    return m, sd, n


def aggregate(rows, grid_keys):
    """Per configuration (grid values except seed): mean, std and n of every metric.

    Returns a list of dicts with the configuration's grid values, ``label``
    (``ESL``, ``static`` or ``dense``), ``n``, ``seeds`` and, per metric
    ``m``, ``m_mean``, ``m_std`` (sample std, ddof=1) and ``m_sem``.
    """
    groups = {}
    for r in rows:
        conf = configuration_of(r, grid_keys)
        groups.setdefault(json.dumps(conf, sort_keys=True), (conf, []))[1].append(r)
    out = []
    for conf, rs in groups.values():
        a = dict(conf)
        a["label"] = "dense" if not conf["sparse"] else ("ESL" if conf["rewiring"] else "static")
        a["n"] = len(rs)
        a["seeds"] = sorted(r["config"]["seed"] for r in rs)
        a["runs"] = [r["run"] for r in rs]
        for m in METRICS:
            mean, sd, n = mean_std(r[m] for r in rs)
            a[f"{m}_mean"], a[f"{m}_std"] = mean, sd
            a[f"{m}_sem"] = sd / math.sqrt(n) if n > 1 else math.nan
        out.append(a)
    return out


def compare_esl_static(configs):
    """ESL minus static test accuracy per configuration that has both.

    Returns dicts with the configuration (without ``rewiring``), ``diff``
    (mean ESL - mean static), ``se`` (standard error of the difference,
    ``sqrt(sem_esl**2 + sem_static**2)``) and ``z = diff / se`` (NaN when
    either side has fewer than 2 seeds).
    """
    def key(c):
        return json.dumps({k: v for k, v in c.items() if k not in _AGG_FIELDS and k != "rewiring"}, sort_keys=True)

    static = {key(c): c for c in configs if c["label"] == "static"}
    out = []
    for c in configs:
        s = static.get(key(c)) if c["label"] == "ESL" else None
        if s is None:
            continue
        diff = c["test_accuracy_mean"] - s["test_accuracy_mean"]
        se = math.sqrt(c["test_accuracy_sem"] ** 2 + s["test_accuracy_sem"] ** 2)
        out.append({k: v for k, v in c.items() if k not in _AGG_FIELDS and k != "rewiring"}
                   | {"esl": c["test_accuracy_mean"], "static": s["test_accuracy_mean"], "diff": diff, "se": se,
                      "z": diff / se if se > 0 else math.nan, "n_esl": c["n"], "n_static": s["n"]})
    return out


_AGG_FIELDS = {"label", "n", "seeds", "runs"} | {f"{m}_{s}" for m in METRICS for s in ("mean", "std", "sem")}


def write_results(sweep_dir, rows, grid_keys, extra=None):
    """Write ``sweep.json``, ``sweep.csv`` (per configuration) and ``runs.csv`` (per run), atomically.

    Returns the aggregate dict written to ``sweep.json``.
    """
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    configs = aggregate(rows, grid_keys)
    result = {"format": "snn_core.sweep/1", "grid_keys": list(grid_keys), "configurations": configs,
              "esl_vs_static": compare_esl_static(configs), "runs": rows} | (extra or {})
    _atomic_write(sweep_dir / "sweep.json", json.dumps(_nan_to_none(result), indent=2))
    _atomic_write(sweep_dir / "sweep.csv", _csv([{k: v for k, v in c.items() if k != "runs"} for c in configs]))
    _atomic_write(sweep_dir / "runs.csv", _csv([{k: v for k, v in r.items() if k != "config"}
                                                | {g: r["config"][g] for g in grid_keys} for r in rows]))
    return result


def _nan_to_none(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _nan_to_none(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_nan_to_none(v) for v in o]
    return o


def _csv(dict_rows):
    cols = list(dict.fromkeys(k for r in dict_rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in dict_rows:
        w.writerow({k: (" ".join(map(str, v)) if isinstance(v, list) else
                        "" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()})
    return buf.getvalue()


def _atomic_write(path, text):
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_results(sweep_dir):
    """The ``sweep.json`` of a sweep folder (NaN where the file has null)."""
    path = Path(sweep_dir) / "sweep.json"
    d = json.loads(path.read_text())
    if not isinstance(d, dict) or "configurations" not in d:
        raise ValueError(f"{path}: not a sweep result of this version (no 'configurations'); re-run the sweep")
    for c in d["configurations"]:
        for k, v in c.items():
            if v is None and k.endswith(("_mean", "_std", "_sem")):
                c[k] = math.nan
    return d


# --------------------------------------------------------------------------
# execution on Dask
# --------------------------------------------------------------------------
def local_cluster(n_workers=None):
    """An in-process LocalCluster: one single-threaded worker process per core.

    Workers get 1 OpenMP/BLAS thread, and each run calls
    ``numba.set_num_threads(config.threads)`` (1 in a sweep), so that
    ``n_workers`` runs share the cores instead of oversubscribing them.

    Decision: the workers' ``NUMBA_NUM_THREADS`` is left alone. A spawned
    worker re-imports the parent's main module (``snn_core.cli``, hence
    Numba) *before* the cluster's environment is applied, so Numba would
    read one thread count at import and another at its next compilation,
    and refuse to compile ("Cannot set NUMBA_NUM_THREADS to a different
    value once the threads have been launched"): every run failed on a
    machine whose Numba cache was cold.
    """
    import logging

    from distributed import LocalCluster

    n = n_workers or os.cpu_count() or 1
    one = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    return LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                        silence_logs=logging.ERROR, env=one)


def run_sweep(sweep, scheduler=None, n_workers=None, retries=2, progress=True, log=print):
    """Run every run of ``sweep`` on Dask and write the aggregated results.

    Parameters
    ----------
    sweep : Sweep
    scheduler : str, optional
        Address of a running scheduler (``tcp://HOST:PORT``); None starts a
        :func:`local_cluster` for the duration of the sweep.
    n_workers : int, optional
        Size of the local cluster (default: one per core).
    retries : int
        Extra attempts for a run that raised (a worker that *died* is handled
        by the scheduler, which reschedules its task on another worker).
    progress : bool
        A tqdm bar over runs.
    log : callable
        Receives one line per finished or failed run.

    Returns
    -------
    (result, failures): the dict written to ``sweep.json`` and a list of
    ``(run name, error message)`` for runs that failed after all retries.
    """
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise RuntimeError("sweeps run on dask.distributed, which is not installed: "
                           "pip install 'snn_core[sweep]'") from None
    from tqdm.auto import tqdm

    runs = sweep.runs()
    sweep_dir = Path(sweep.base.out_dir)
    cluster = None
    if scheduler is None:
        cluster = local_cluster(n_workers)
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as e:
            raise OSError(f"scheduler {scheduler}: cannot connect ({e})") from None
    try:
        futures = {}
        # the most expensive runs (dense, then high density) first, so the sweep ends with short
        # tasks; explicit priorities because Dask does not promise submission order
        order = sorted(runs, key=lambda r: -(r[1].density if r[1].sparse else 2.0))
        for i, (name, cfg) in enumerate(order):
            f = client.submit(train_run, cfg.to_dict(), key=f"snn-esl-run-{name}-{_token(cfg)}", retries=retries,
                              pure=False, priority=len(order) - i)
            futures[f] = name
        rows, failures = {}, []
        bar = tqdm(total=len(runs), desc="runs", unit="run", disable=not progress)
        for f in as_completed(futures):
            name = futures[f]
            try:
                row = f.result()
            except Exception as e:  # noqa: BLE001 - any task error is reported, the sweep goes on
                failures.append((name, f"{type(e).__name__}: {e}"))
                log(f"FAILED {name}: {type(e).__name__}: {e}")
            else:
                rows[name] = row
                log(f"{row['status']:8s} {name}: test {row['test_accuracy']:.4f} "
                    f"({row['train_seconds']:.0f} s training)")
            bar.update(1)
        bar.close()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    ordered = [rows[n] for n, _ in runs if n in rows]
    result = write_results(sweep_dir, ordered, list(sweep.grid),
                           extra={"grid": sweep.grid, "dense": sweep.dense,
                                  "base": {k: v for k, v in sweep.base.to_dict().items() if k != "quiet"},
                                  "failed": [{"run": n, "error": e} for n, e in failures]})
    return result, failures


def collect_results(sweep):
    """Write the tables from the runs of ``sweep`` that are finished; train nothing.

    For a sweep that is still running or was interrupted (on a filesystem
    this process sees). Returns ``(result, missing)``: the dict written to
    ``sweep.json`` (its ``missing`` lists the unfinished runs) and their names.
    """
    rows, missing = [], []
    for name, cfg in sweep.runs():
        if summary_is_complete(cfg.out_dir, cfg):
            rows.append(result_row(cfg.out_dir) | {"status": "collected"})
        else:
            missing.append(name)
    result = write_results(sweep.base.out_dir, rows, list(sweep.grid),
                           extra={"grid": sweep.grid, "dense": sweep.dense,
                                  "base": {k: v for k, v in sweep.base.to_dict().items() if k != "quiet"},
                                  "failed": [], "missing": missing})
    return result, missing


def _token(cfg):
    import hashlib

    return hashlib.sha1(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:10]


def format_table(result):
    """A text table of the configurations: mean ± std (n) of test accuracy."""
    keys = [k for k in result["grid_keys"] if k not in ("seed", "density", "rewiring")]
    head = f"{'configuration':22s} {'density':>8s} " + "".join(f"{k:>12s} " for k in keys) + \
        f"{'test acc (mean ± std)':>24s} {'n':>3s}"
    lines = [head]
    for c in result["configurations"]:
        sd = _f(c["test_accuracy_std"])
        acc = f"{100 * _f(c['test_accuracy_mean']):.2f} ± {'–' if math.isnan(sd) else f'{100 * sd:.2f}'} %"
        extra = "".join(f"{str(c.get(k, '')):>12s} " for k in keys)
        lines.append(f"{c['label']:22s} {_f(c['density_mean']):8.4f} {extra}{acc:>24s} {c['n']:>3d}")
    comps = result.get("esl_vs_static") or []
    if comps:
        lines.append("")
        lines.append(f"{'ESL - static':22s} {'density':>8s} {'diff (points)':>14s} {'SE':>6s} {'z':>6s}")
        for c in comps:
            lines.append(f"{'':22s} {c.get('density', float('nan')):8g} {100 * _f(c['diff']):+14.2f} "
                         f"{100 * _f(c['se']):6.2f} {_f(c['z']):6.1f}")
    return "\n".join(lines)


def _f(v):
    return math.nan if v is None else float(v)
