"""``snn-esl``: train, evaluate, inspect, sweep, plot, and export/import NIR.

Every training flag mirrors a :class:`~snn_core.config.TrainConfig` field
(``--t-iter`` sets ``t_iter``); ``--config FILE`` (TOML or JSON) sets many at
once, and flags given on the command line override the file. Errors print one
line naming the problem and exit non-zero.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np

from .config import TrainConfig


def _flag(name):
    return "--" + name.replace("_", "-")


def _add_config_flags(p):
    g = p.add_argument_group("training configuration (TrainConfig fields; defaults = the main job)")
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        default = getattr(defaults, f.name)
        kw = dict(dest=f.name, default=argparse.SUPPRESS, help=f"default: {default!r}")
        if f.type == "bool":
            g.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, **kw)
        elif f.name in ("hidden", "channels", "input_shape"):
            g.add_argument(_flag(f.name), type=int, nargs="+", metavar="N", **kw)
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
    from .training import Trainer, restore_trainer

    if args.resume:
        overrides = TrainConfig.read_file(args.config) if args.config else {}
        overrides |= {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
        trainer = restore_trainer(args.resume, **overrides)
        print(f"resumed {args.resume} at epoch {trainer.epoch}, iteration {trainer.iteration}")
    else:
        trainer = Trainer(_config_from_args(args))
    cfg = trainer.config
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
    summary = trainer.fit()
    out = Path(cfg.out_dir)
    print(f"test accuracy {summary['test_accuracy']:.4f} (best val {summary['best_val_accuracy']:.4f} at epoch "
          f"{summary['best_epoch']}), density {summary['density']:.4f}, {summary['rewiring_events']} rewiring "
          f"events, {summary['train_seconds']:.1f}s training ({summary['train_samples_per_s']:.0f} samples/s)")
    print(f"wrote {out / 'summary.json'}, {out / 'best.h5'}, {out / 'last.h5'}")
    return 0


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
    """``snn-esl sweep``: several densities with rewiring on and off, plus dense; one table."""
    from .training import Trainer

    base = _config_from_args(args)
    out = Path(base.out_dir)
    rows = []
    runs = [(d, r) for d in args.densities for r in (True, False)]
    if not args.no_dense:
        runs.append((1.0, None))
    for density, rewiring in runs:
        if rewiring is None:
            name, cfg = "dense", TrainConfig.from_dict({"sparse": False, "density": 1.0, "rewiring": False,
                                                        "out_dir": str(out / "dense")}, base)
        else:
            name = f"d{density:g}-{'esl' if rewiring else 'static'}"
            cfg = TrainConfig.from_dict({"density": density, "rewiring": rewiring, "out_dir": str(out / name)}, base)
        print(f"== {name}", flush=True)
        s = Trainer(cfg).fit()
        rows.append({"run": name, "density": s["density"], "target_density": density, "sparse": cfg.sparse,
                     "rewiring": bool(rewiring), "test_accuracy": s["test_accuracy"],
                     "best_val_accuracy": s["best_val_accuracy"], "train_seconds": s["train_seconds"]})
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(rows, indent=2))
    print(f"\n{'run':18s} {'density':>8s} {'rewiring':>8s} {'val acc':>8s} {'test acc':>8s} {'seconds':>8s}")
    for r in rows:
        print(f"{r['run']:18s} {r['density']:8.4f} {str(r['rewiring']):>8s} {r['best_val_accuracy']:8.4f} "
              f"{r['test_accuracy']:8.4f} {r['train_seconds']:8.1f}")
    print(f"wrote {out / 'sweep.json'}")
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
    """The argparse parser of ``snn-esl`` (also used to generate docs/cli.md)."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(prog="snn-esl", formatter_class=fmt,
                                description="Train, evaluate, inspect, sweep and plot ESL-SNNs "
                                            "(sparse spiking networks with evolutionary structure learning).")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", formatter_class=fmt, help="train an ESL-SNN (no arguments: the main job on the embedded MNIST sample)")
    t.add_argument("--config", help="TOML or JSON file with TrainConfig fields")
    t.add_argument("--resume", metavar="CKPT", help="continue exactly from a checkpoint (e.g. RUN_DIR/last.h5)")
    _add_config_flags(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", formatter_class=fmt, help="test accuracy, firing rates, SOPs and energy of a checkpoint")
    e.add_argument("checkpoint")
    e.add_argument("--data-dir", help="evaluate on this IDX directory instead of the training data")
    e.add_argument("--last", action="store_true", help="use the last weights instead of the best-validation ones")
    e.add_argument("--energy-samples", type=int, default=200, help="test samples used for SOP counting")
    e.add_argument("--json", help="also write the results to this JSON file")
    e.add_argument("--device", choices=("reference", "cpu", "cuda"), default="cpu", help="backend to evaluate on: readable NumPy, Numba CPU kernels or a CUDA GPU")
    e.set_defaults(func=cmd_evaluate)

    i = sub.add_parser("info", formatter_class=fmt, help="architecture, per-layer nnz/density, turnover and metrics of a checkpoint")
    i.add_argument("checkpoint")
    i.set_defaults(func=cmd_info)

    s = sub.add_parser("sweep", formatter_class=fmt, help="train at several densities with rewiring on and off (+ dense), one table")
    s.add_argument("--densities", type=float, nargs="+", default=[0.01, 0.05, 0.1, 0.2],
                   help="target global densities to train, each with rewiring on and off")
    s.add_argument("--no-dense", action="store_true", help="skip the dense baseline")
    s.add_argument("--config", help="TOML or JSON file with TrainConfig fields")
    _add_config_flags(s)
    s.set_defaults(func=cmd_sweep)

    pl = sub.add_parser("plot", formatter_class=fmt, help="write PNG figures (training curves, rewiring history, ...) of a run directory")
    pl.add_argument("run_dir")
    pl.add_argument("--out", help="directory for the PNGs (default RUN_DIR/figures)")
    pl.set_defaults(func=cmd_plot)

    x = sub.add_parser("export", formatter_class=fmt, help="write a trained network as a NIR graph (for neuromorphic hardware and other SNN libraries)")
    x.add_argument("source", metavar="RUN_OR_CHECKPOINT", help="a run directory (its last.h5) or a checkpoint file")
    x.add_argument("--nir", required=True, metavar="OUT", help="the NIR file to write (HDF5, e.g. model.nir)")
    x.add_argument("--dt", type=float, required=True, help="duration of one time step in the graph's time unit (seconds for most hardware)")
    x.add_argument("--last", action="store_true", help="export the last weights instead of the best-validation ones")
    x.add_argument("--allow-soft-reset", action="store_true", help="export soft-reset LIF layers as NIR LIF with the reset mode in node metadata (other tools reset to v_reset)")
    x.add_argument("--force", action="store_true", help="replace OUT if it exists")
    x.set_defaults(func=cmd_export)

    m = sub.add_parser("import", formatter_class=fmt, help="turn a NIR graph into a checkpoint that evaluate, info, plot and train --resume accept")
    m.add_argument("nir_file", metavar="IN.nir", help="the NIR file to read")
    m.add_argument("--dt", type=float, required=True, help="duration of one time step in the graph's time unit (each step is one Euler step of this size)")
    m.add_argument("--out-dir", required=True, help="directory for the checkpoint (DIR/last.h5)")
    m.add_argument("--data-dir", help="IDX directory the network is evaluated and fine-tuned on (default: the embedded MNIST sample)")
    m.add_argument("--keep-zeros", action="store_true", help="make every weight-matrix entry a connection (dense layers) instead of zeros = absent connections")
    m.add_argument("--force", action="store_true", help="replace an existing DIR/last.h5")
    m.set_defaults(func=cmd_import)
    return p


def main(argv=None):
    """Entry point of ``snn-esl``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("snn-esl: interrupted; the last completed epoch's checkpoint is intact", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, RuntimeError, ImportError) as e:
        print(f"snn-esl {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
