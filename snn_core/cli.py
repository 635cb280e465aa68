"""``snn-esl``: train, evaluate, inspect, sweep, plot, and export/import NIR.

Every training flag mirrors a :class:`~snn_core.config.TrainConfig` field
(``--t-iter`` sets ``t_iter``); ``--config FILE`` (TOML or JSON) sets many at
once, and flags given on the command line override the file. Errors print one
line naming the problem and exit non-zero (1; 130 when interrupted); only
``--debug`` shows a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from .config import TrainConfig


def _flag(name):
    return "--" + name.replace("_", "-")


def _name_value(text):
    """``"conv2=0.3"`` -> ``("conv2", 0.3)`` (argparse type of the dict-valued flags)."""
    name, sep, value = text.partition("=")
    try:
        if not (sep and name):
            raise ValueError
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got {text!r}") from None


class _DictAction(argparse.Action):
    """Collect ``NAME=VALUE`` pairs into a dict; a name given twice is an error, not a silent override."""

    def __call__(self, parser, namespace, values, option_string=None):
        names = [name for name, _ in values]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            parser.error(f"{option_string}: {', '.join(twice)} given more than once")
        setattr(namespace, self.dest, dict(values))


def _add_config_flags(p):
    g = p.add_argument_group("training configuration (TrainConfig fields; defaults = the main job)")
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        default = getattr(defaults, f.name)
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        # one source: the field's help sentence (argparse needs % doubled); a field declared without
        # config.option(...) has none, which tests/test_cli.py reports instead of breaking the CLI here
        text = f.metadata.get("help", "").replace("%", "%%") + f" (default: {shown})"
        kw = dict(dest=f.name, default=argparse.SUPPRESS, help=text)
        if f.type == "bool":
            g.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, **kw)
        elif f.name in ("hidden", "channels", "fc_hidden", "input_shape"):
            g.add_argument(_flag(f.name), type=int, nargs="+", metavar="N", **kw)
        elif f.type.startswith("dict"):
            g.add_argument(_flag(f.name), type=_name_value, nargs="+", metavar="NAME=D", action=_DictAction, **kw)
        else:
            base = f.type.split("|")[0].strip()
            conv = {"int": int, "float": float, "str": str}[base]
            g.add_argument(_flag(f.name), type=conv, metavar=base.upper(), **kw)


def _config_from_args(args, base=None):
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    cfg = TrainConfig.from_file(args.config, base) if getattr(args, "config", None) else base
    return TrainConfig.from_dict(overrides, cfg) if overrides or cfg is None else cfg


# --------------------------------------------------------------------------
# subcommands
# --------------------------------------------------------------------------
def cmd_train(args):
    """``snn-esl train``: train (or resume) and write the run directory."""
    from .profiling import format_layer_profile, format_profile
    from .training import Trainer, restore_trainer

    if args.resume:
        overrides = TrainConfig.read_file(args.config) if args.config else {}
        overrides |= {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
        TrainConfig.from_dict(overrides, TrainConfig())  # bad values fail before the checkpoint is read
        trainer = restore_trainer(args.resume, **overrides)  # writes beside the checkpoint unless --out-dir
        print(f"resumed {args.resume} at epoch {trainer.epoch}, iteration {trainer.iteration}")
    else:
        trainer = Trainer(_config_from_args(args))
    cfg, start_epoch = trainer.config, trainer.epoch
    print(f"data: {trainer.dataset_name} ({len(trainer.x_train)} train / {len(trainer.x_val)} val / "
          f"{len(trainer.x_test)} test), T={cfg.steps}, encoder={cfg.encoder}")
    for layer in trainer.network.modules():
        extra = f"  nnz={layer.nnz} density={layer.nnz / math.prod(layer.weight_shape):.4f}" \
            if hasattr(layer, "nnz") else ""
        print(f"  {layer.name:10s} {type(layer).__name__:13s} {layer.in_features:>6d} -> {layer.out_features:<6d}{extra}")
    if trainer.rewirer.enabled:
        print(f"rewiring: every {cfg.t_iter} iterations until {trainer.rewirer.t_end} "
              f"(zeta0={cfg.zeta0:.2f}, {cfg.prune}/{cfg.grow})")
    else:
        print(f"rewiring: off ({'static sparse' if cfg.sparse else 'dense layers'})")
    trainer.profiling = args.profile
    summary = trainer.fit(overwrite=args.overwrite)
    out = Path(cfg.out_dir)
    print(f"test accuracy {summary['test_accuracy']:.4f} (best val {summary['best_val_accuracy']:.4f} at epoch "
          f"{summary['best_epoch']}), density {summary['density']:.4f}, {summary['rewiring_events']} rewiring "
          f"events, {summary['train_seconds']:.1f}s training ({summary['train_samples_per_s']:.0f} samples/s)")
    print(f"wrote {out / 'summary.json'}, {out / 'best.h5'}, {out / 'last.h5'}")
    if args.profile:
        samples = len(trainer.x_train) * (trainer.epoch - start_epoch)
        print(f"where the time went ({trainer.epoch - start_epoch} epochs, device {cfg.device}):")
        if cfg.device == "cpu":
            print(_threads_line())
        print(format_profile(trainer.profiler.as_dict(samples)))
        print(format_layer_profile(trainer.layer_profiler))
    return 0


def _threads_line():
    """How the cpu kernels use the cores: threads, Numba's threading layer, the serial/parallel threshold."""
    import numba

    from .kernels import cpu as kernels

    layer = kernels.threading_layer()
    wait = f", OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}" if layer == "omp" else ""
    return (f"threads: {numba.get_num_threads()} ({layer} layer{wait}); a kernel runs in parallel above "
            f"{kernels.parallel_min_ns() / 1e3:g} us of estimated work")


def _trainer_from_checkpoint(path, data_dir=None, device="cpu"):
    from .training import restore_trainer

    # checkpoints are device-independent: one trained on a GPU evaluates on the CPU
    overrides = {"quiet": True, "device": device}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    return restore_trainer(path, **overrides)


def cmd_evaluate(args):
    """``snn-esl evaluate CKPT``: test accuracy, firing rates, SOPs and energy."""
    from .energy import energy_report, format_report

    trainer = _trainer_from_checkpoint(args.checkpoint, args.data_dir, args.device)
    if trainer.best_state is not None and not args.last:
        trainer.load_network_state(trainer.best_state)
    acc, loss = trainer.evaluate(trainer.x_test, trainer.y_test)
    n = min(args.energy_samples, len(trainer.x_test))
    x = trainer._encode(trainer.x_test[:n], (3, 0))
    report = energy_report(trainer.network, x)
    print(f"checkpoint {args.checkpoint} ({'last' if args.last else 'best'} weights), {trainer.dataset_name} test set "
          f"({len(trainer.x_test)} samples)")
    print(f"test accuracy {acc:.4f}  loss {loss:.4f}")
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps({"test_accuracy": acc, "test_loss": loss, "energy": report}, indent=2,
                                              default=_jsonable))
    return 0


def _jsonable(o):
    import numpy as np

    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    raise TypeError(type(o).__name__)


def cmd_info(args):
    """``snn-esl info CKPT``: architecture, nnz/density per layer, turnover, metrics."""
    from .checkpoint import load_checkpoint

    ck = load_checkpoint(args.checkpoint)
    cfg, t = ck["config"], ck["trainer"]
    print(f"checkpoint {args.checkpoint} (format v{ck['format_version']})")
    if t["epoch"] == 0:  # e.g. imported from NIR: weights, no training history
        print(f"not trained here yet (0 of {cfg['epochs']} epochs; e.g. imported with snn-esl import)")
    else:
        print(f"trained {t['epoch']} of {cfg['epochs']} epochs, {t['iteration']} iterations, "
              f"best val {t['best_val_accuracy']:.4f} at epoch {t['best_epoch']}")
    print(f"config: model={cfg.get('model', 'mlp')} density={cfg['density']} init={cfg['init']} rewiring={cfg['rewiring']} t_iter={cfg['t_iter']} "
          f"zeta0={cfg['zeta0']} prune={cfg['prune']} grow={cfg['grow']} T={cfg['steps']} loss={cfg['loss']}")
    total_nnz = total = 0
    print(f"{'layer':10s} {'shape':>14s} {'nnz':>9s} {'density':>8s}")
    for name, s in ck["network"].items():
        if "indices" not in s and np.ndim(s.get("weight")) != 2:
            continue  # batch norm: per-channel scale and shift, no connections
        shape = tuple(int(v) for v in s["shape"])
        nnz = len(s["indices"]) if "indices" in s else s["weight"].size
        total_nnz += nnz
        total += shape[0] * shape[1]
        print(f"{name:10s} {str(shape):>14s} {nnz:>9d} {nnz / (shape[0] * shape[1]):>8.4f}")
    print(f"{'global':10s} {'':>14s} {total_nnz:>9d} {total_nnz / total:>8.4f}")
    _print_turnover(ck["rewirer"])
    m = t["metrics"]
    if m.get("epoch"):
        print("epoch  train_loss  train_acc  val_acc  density")
        for row in zip(m["epoch"], m["train_loss"], m["train_accuracy"], m["val_accuracy"], m["density"]):
            print(f"{row[0]:5d}  {row[1]:10.4f}  {row[2]:9.4f}  {row[3]:7.4f}  {row[4]:7.4f}")
    return 0


def _print_turnover(rewirer_state):
    from .structure import Rewirer

    arrays = Rewirer.from_state_dict(rewirer_state).history.as_arrays()
    if len(arrays["iteration"]) == 0:
        print("rewiring: no events")
        return
    print(f"rewiring: {len(arrays['iteration'])} layer events, last at iteration {int(arrays['iteration'].max())}")
    layers = arrays["layer"]
    for name in dict.fromkeys(layers.tolist()):
        sel = layers == name
        last = {k: v[sel][-1] for k, v in arrays.items() if k not in ("layer",)}
        print(f"  {name}: {int(sel.sum())} events, {int(arrays['n_grown'][sel].sum())} connections regrown in total; "
              f"density {last['density']:.4f}, initial connections kept {last['frac_initial_kept']:.1%}, "
              f"current connections grown by rewiring {last['frac_grown']:.1%}, positions explored "
              f"{last['frac_explored']:.1%}")


def cmd_sweep(args):
    """``snn-esl sweep``: a grid of runs on Dask (local cluster or ``--scheduler``), aggregated over seeds."""
    from .sweep import DEFAULT_GRID, Sweep, format_table, run_sweep

    base_file, grid, dense = Sweep.read_file(args.grid) if args.grid else ({}, {}, None)
    grid = dict(DEFAULT_GRID) | grid if not args.grid else grid
    # a sweep's own defaults: its folder, and one Numba thread per run (one run per core)
    base_cfg = TrainConfig.from_dict({"out_dir": "runs/sweep", "threads": 1} | base_file)
    base_cfg = _config_from_args(args, base_cfg)
    for d in args.densities or ():  # name the flag and the value, before anything is built or trained
        try:
            TrainConfig.from_dict({"density": d})
        except ValueError as e:
            raise ValueError(f"--densities {d:g}: {e}") from None
    flags = {"density": args.densities, "seed": args.seeds, "prune": args.prune_rules, "grow": args.grow_rules,
             "data_dir": args.data_dirs,
             "rewiring": None if args.modes is None else [m == "esl" for m in dict.fromkeys(args.modes)],
             "hidden": None if args.models is None else [_model(m) for m in args.models]}
    for k, v in flags.items():
        if v is not None:
            grid[k] = list(v)
    for k in [k for k in grid if hasattr(args, k)]:  # a single-value flag (--seed 3) fixes that key
        del grid[k]
    if args.dense is not None:
        dense = args.dense
    sweep = Sweep(base=base_cfg, grid=grid, dense=True if dense is None else dense)
    runs = sweep.runs()
    if args.dry_run:
        for name, cfg in runs:
            print(f"{name:32s} {cfg.out_dir}")
        print(f"{len(runs)} runs")
        return 0
    if args.collect:
        from .sweep import collect_results

        result, missing = collect_results(sweep)
        print(format_table(result))
        print(f"{len(runs) - len(missing)} of {len(runs)} runs finished" +
              (f"; not yet: {', '.join(missing)}" if missing else ""))
        print(f"wrote {Path(base_cfg.out_dir) / 'sweep.json'}")
        return 0
    where = args.scheduler or f"a local cluster ({args.workers or os.cpu_count()} workers)"
    print(f"sweep {base_cfg.out_dir}: {len(runs)} runs on {where}", flush=True)
    result, failures = run_sweep(sweep, scheduler=args.scheduler, n_workers=args.workers, retries=args.retries,
                                 progress=not args.no_progress,
                                 log=lambda line: print(line, flush=True))
    print()
    print(format_table(result))
    out = Path(base_cfg.out_dir)
    print(f"wrote {out / 'sweep.json'}, {out / 'sweep.csv'}, {out / 'runs.csv'}")
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(runs)} runs failed (first: {failures[0][0]}: {failures[0][1]}); "
                           f"re-run the same command to retry them")
    return 0


def _model(text):
    try:
        sizes = [int(h) for h in str(text).split(",")]
    except ValueError:
        raise ValueError(f"--models: expected hidden sizes like 800 or 400,400, got {text!r}") from None
    return sizes


def cmd_data(args):
    """``snn-esl data download NAME``: fetch a data set's IDX files or archives, checksummed."""
    from .data.datasets import DATASETS, download_dataset
    from .data.download import ARCHIVES, download_archives

    if args.data_command == "list":
        for name, src in DATASETS.items():
            print(f"{name:14s} {src.description}")
        for name in ARCHIVES:
            print(f"{name:14s} archive, md5-checked (see the CIFAR and DVS data page)")
        return 0
    if args.name in ARCHIVES:  # CIFAR-10/100 and DVS-CIFAR10: published archives, md5-checked, extracted
        print(f"downloading {args.name} ...", flush=True)
        root = download_archives(args.name, args.dir, timeout=args.timeout)
        print(f"{args.name}: md5 verified and extracted in {root}")
        frames = " --encoder frames --steps 10" if args.name == "cifar10-dvs" else ""
        print(f"train on it with: snn-esl train --data-dir {root}{frames}")
        return 0
    print(f"downloading {args.name} ({DATASETS[args.name].description}) ...", flush=True)
    root = download_dataset(args.name, args.dir, timeout=args.timeout)
    print(f"{args.name}: {len(DATASETS[args.name].files)} files, sha256 verified, in {root}")
    print(f"train on it with: snn-esl train --data-dir {root}")
    return 0


def cmd_plot(args):
    """``snn-esl plot RUN_DIR``: write every figure that applies to the run."""
    from .plots import plot_run

    written = plot_run(args.run_dir, out_dir=args.out)
    for p in written:
        print(p)
    return 0


def cmd_export(args):
    """``snn-esl export RUN_OR_CKPT --nir OUT --dt DT``: the trained network as a NIR graph."""
    from .training import network_from_checkpoint
    from .nir import format_graph, write_nir

    out = Path(args.nir)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    net, _ = network_from_checkpoint(args.source, last=args.last)
    graph = write_nir(net, out, args.dt, allow_soft_reset=args.allow_soft_reset)
    print(f"{args.source} ({'last' if args.last else 'best'} weights), one time step = {args.dt:g} time units")
    print(format_graph(graph))
    print(f"wrote {out}")
    return 0


def cmd_import(args):
    """``snn-esl import IN.nir --dt DT --out-dir DIR``: a NIR graph as a checkpoint to evaluate or fine-tune."""
    from .checkpoint import save_checkpoint
    from .nir import from_nir
    from .training import Trainer, adopt_network

    out = Path(args.out_dir)
    ckpt = out / "last.h5"
    if ckpt.exists() and not args.force:
        raise FileExistsError(f"{ckpt} exists; pass --force to replace it (or choose another --out-dir)")
    net = from_nir(args.nir_file, args.dt, keep_zeros=True if args.keep_zeros else None, dtype="float32",
                   fold_r=True)
    base = TrainConfig(out_dir=str(out), data_dir=args.data_dir, quiet=True)
    config = adopt_network(net, base)
    trainer = Trainer(config, network=net)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(ckpt, trainer)
    print(f"imported {args.nir_file} (one time step = {args.dt:g} time units) for {trainer.dataset_name}:")
    for layer in net.layers:
        extra = f"  nnz={layer.nnz} density={layer.density:.4f}" if isinstance(getattr(layer, "density", None), float) \
            else ""
        print(f"  {layer.name:10s} {type(layer).__name__:13s} {layer.in_features:>6d} -> {layer.out_features:<6d}{extra}")
    print(f"config: hidden={config.hidden} sparse={config.sparse} output={config.output} tau_m={config.tau_m:g} "
          f"v_th={config.v_th:g} reset={config.reset} loss={config.loss}")
    print(f"wrote {ckpt}; next: snn-esl evaluate {ckpt}, or fine-tune: snn-esl train --resume {ckpt} --epochs N")
    return 0


# --------------------------------------------------------------------------
def build_parser():
    """The argparse parser of ``snn-esl`` (the docs site renders its CLI page from it)."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(prog="snn-esl", formatter_class=fmt,
                                description="Train, evaluate, inspect, sweep and plot ESL-SNNs "
                                            "(sparse spiking networks with evolutionary structure learning).")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)
    debug = argparse.ArgumentParser(add_help=False)  # --debug is also accepted after the subcommand
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of an error")

    t = sub.add_parser("train", formatter_class=fmt, parents=[debug], help="train an ESL-SNN (no arguments: the main job on the embedded MNIST sample)")
    t.add_argument("--config", help="TOML or JSON file with TrainConfig fields; flags given on the command line "
                                    "override it")
    t.add_argument("--resume", metavar="CKPT", help="continue exactly from a checkpoint (e.g. RUN_DIR/last.h5); "
                                                    "writes beside it unless --out-dir is given")
    t.add_argument("--overwrite", action="store_true",
                   help="replace the run files (best.h5, last.h5, summary.json) of another run in --out-dir")
    t.add_argument("--profile", action="store_true",
                   help="time every phase of training (encoding, forward, backward, optimizer, rewiring, "
                        "validation, checkpoints, ...) and print where the time went")
    _add_config_flags(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", formatter_class=fmt, parents=[debug], help="test accuracy, firing rates, SOPs and energy of a checkpoint")
    e.add_argument("checkpoint", help="checkpoint file written by training (RUN_DIR/best.h5 or RUN_DIR/last.h5)")
    e.add_argument("--data-dir", help="evaluate on this data folder (IDX, CIFAR or DVS, as train's --data-dir) "
                                      "instead of the training data")
    e.add_argument("--last", action="store_true", help="use the last weights instead of the best-validation ones")
    e.add_argument("--energy-samples", type=_positive_int, default=200,
                   help="number of test samples whose spikes are counted for the SOP and energy estimate")
    e.add_argument("--json", help="also write the results to this JSON file")
    e.add_argument("--device", choices=("reference", "cpu", "cuda"), default="cpu", help="backend to evaluate on: readable NumPy, Numba CPU kernels or a CUDA GPU")
    e.set_defaults(func=cmd_evaluate)

    i = sub.add_parser("info", formatter_class=fmt, parents=[debug], help="architecture, per-layer nnz/density, turnover and metrics of a checkpoint")
    i.add_argument("checkpoint", help="checkpoint file written by training (RUN_DIR/best.h5 or RUN_DIR/last.h5)")
    i.set_defaults(func=cmd_info)

    s = sub.add_parser("sweep", formatter_class=fmt, parents=[debug],
                       help="run a grid of trainings (densities x seeds x rules ...) on Dask; mean ± std over seeds")
    s.add_argument("--grid", metavar="FILE", help="TOML or JSON sweep file with [base] (shared TrainConfig fields), "
                                                   "[grid] (field = list of values) and dense = true/false")
    s.add_argument("--densities", type=float, nargs="+", metavar="D",
                   help="target global densities (default 0.01 0.05 0.1 0.2 without --grid)")
    s.add_argument("--seeds", type=int, nargs="+", metavar="N", help="seeds of every configuration (default 0)")
    s.add_argument("--modes", choices=("esl", "static"), nargs="+",
                   help="train with rewiring (esl), without (static) or both (default both)")
    s.add_argument("--prune-rules", choices=("magnitude", "set", "gradient"), nargs="+",
                   help="prune rules to compare (unset: the config's prune)")
    s.add_argument("--grow-rules", choices=("random", "gradient", "momentum"), nargs="+",
                   help="grow rules to compare (unset: the config's grow)")
    s.add_argument("--data-dirs", nargs="+", metavar="DIR", help="data folders to compare (IDX, CIFAR or DVS, as "
                                                                  "train's --data-dir)")
    s.add_argument("--models", nargs="+", metavar="H", help="hidden layer sizes to compare, e.g. 800 400,400")
    s.add_argument("--dense", action=argparse.BooleanOptionalAction, default=None,
                   help="also train a dense baseline per seed (default yes)")
    s.add_argument("--scheduler", metavar="ADDR",
                   help="address of a running Dask scheduler (tcp://HOST:PORT); unset: a local cluster")
    s.add_argument("--workers", type=int, metavar="N",
                   help="worker processes of the local cluster (unset: one per core)")
    s.add_argument("--retries", type=int, default=2, help="extra attempts for a run that raised an error")
    s.add_argument("--dry-run", action="store_true", help="list the runs and their folders, train nothing")
    s.add_argument("--collect", action="store_true",
                   help="write the tables from the runs already finished, train nothing (a running or interrupted sweep)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar over runs")
    s.add_argument("--config", help="TOML or JSON file with TrainConfig fields shared by every run")
    _add_config_flags(s)
    s.set_defaults(func=cmd_sweep)

    pl = sub.add_parser("plot", formatter_class=fmt, parents=[debug], help="write PNG figures (training curves, rewiring history, ...) of a run directory")
    pl.add_argument("run_dir", help="a directory written by `snn-esl train` or `snn-esl sweep`")
    pl.add_argument("--out", help="directory for the PNGs (default RUN_DIR/figures)")
    pl.set_defaults(func=cmd_plot)

    from .data.datasets import DATASETS
    from .data.download import ARCHIVES

    d = sub.add_parser("data", formatter_class=fmt, help="download a public data set: MNIST-style IDX, CIFAR or DVS-CIFAR10 (opt-in; needs "
                                                         "internet) for use with --data-dir")
    dsub = d.add_subparsers(dest="data_command", required=True)
    dl = dsub.add_parser("download", formatter_class=fmt, parents=[debug],
                         help="fetch a data set's files, verify their checksums and print the directory")
    dl.add_argument("name", choices=list(DATASETS) + list(ARCHIVES), help="which data set to download")
    dl.add_argument("--dir", metavar="DIR",
                    help="where to put the files; unset: ~/.cache/snn_core/NAME (or $XDG_CACHE_HOME/snn_core/NAME)")
    dl.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each server before giving up")
    dl.set_defaults(func=cmd_data)
    ls = dsub.add_parser("list", formatter_class=fmt, parents=[debug], help="list the data sets `data download` knows")
    ls.set_defaults(func=cmd_data)

    x = sub.add_parser("export", formatter_class=fmt, parents=[debug], help="write a trained network as a NIR graph (for neuromorphic hardware and other SNN libraries)")
    x.add_argument("source", metavar="RUN_OR_CHECKPOINT", help="a run directory (its last.h5) or a checkpoint file")
    x.add_argument("--nir", required=True, metavar="OUT", help="the NIR file to write (HDF5, e.g. model.nir)")
    x.add_argument("--dt", type=float, required=True, help="duration of one time step in the graph's time unit (seconds for most hardware)")
    x.add_argument("--last", action="store_true", help="export the last weights instead of the best-validation ones")
    x.add_argument("--allow-soft-reset", action="store_true", help="export soft-reset LIF layers as NIR LIF with the reset mode in node metadata (other tools reset to v_reset)")
    x.add_argument("--force", action="store_true", help="replace OUT if it exists")
    x.set_defaults(func=cmd_export)

    m = sub.add_parser("import", formatter_class=fmt, parents=[debug], help="turn a NIR graph into a checkpoint that evaluate, info, plot and train --resume accept")
    m.add_argument("nir_file", metavar="IN.nir", help="the NIR file to read")
    m.add_argument("--dt", type=float, required=True, help="duration of one time step in the graph's time unit (each step is one Euler step of this size)")
    m.add_argument("--out-dir", required=True, help="directory for the checkpoint (DIR/last.h5)")
    m.add_argument("--data-dir", help="data folder the network is evaluated and fine-tuned on (IDX, CIFAR or DVS, "
                                      "as train's --data-dir; unset: the embedded MNIST sample)")
    m.add_argument("--keep-zeros", action="store_true", help="make every weight-matrix entry a connection (dense layers) instead of zeros = absent connections")
    m.add_argument("--force", action="store_true", help="replace an existing DIR/last.h5")
    m.set_defaults(func=cmd_import)
    return p


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _one_line(e):
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def main(argv=None):
    """Entry point of ``snn-esl``; returns the exit status.

    Every error is one line on stderr (exit 1); ``--debug`` re-raises it with
    its traceback. Ctrl-C exits 130.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        debug = args.debug
    except KeyboardInterrupt:
        print("snn-esl: interrupted", file=sys.stderr)
        return 130
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("snn-esl: interrupted; checkpoints already written are intact", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        expected = isinstance(e, (ValueError, TypeError, OSError, RuntimeError, ImportError))
        hint = "" if expected else f" ({type(e).__name__}; an internal error: rerun with --debug and report it)"
        print(f"snn-esl {args.command}: error: {_one_line(e)}{hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
