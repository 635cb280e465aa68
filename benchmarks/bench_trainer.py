"""Trainer overhead: ``snn-esl train`` vs the benchmark loop on the same network and data.

Builds the Trainer of a configuration (default: the main job, embedded
sample), then, in one process and alternately for ``--repeats`` rounds:

- **benchmark loop**: ``bench_train.py``'s training step (encode, forward,
  loss, zero_grad, backward, optimizer step) over the trainer's own training
  data in shuffled batches, on a copy of its untrained network with a fresh
  Adam at the configuration's learning rate: nothing else;
- **trainer**: ``Trainer.fit`` for ``--epochs`` epochs with everything the
  command does (shuffling, rewiring, the per-step NaN check, validation
  every epoch, checkpoints into a temporary folder, accuracy bookkeeping),
  ``--progress`` adds the progress bars.

Both count training samples per second of wall time; the ratio is the
trainer's overhead. The trainer runs with its phase profile on, which
also reports the overhead of the whole run over its own kernel phases
(the same batches, hence the same spike counts). The first round is an
unreported warm-up. Results: docs/benchmarks.md ("Trainer overhead").

Usage::

    PYTHONPATH=. python benchmarks/bench_trainer.py                       # main job, 10 epochs x 3 rounds
    PYTHONPATH=. python benchmarks/bench_trainer.py --data-dir ../shared/data/mnist --epochs 1 --repeats 2
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _common import emit, machine  # noqa: E402


def benchmark_loop(trainer, iters):
    """Samples/s of the bare training step on a copy of the trainer's (untrained) network.

    Adam at the configuration's learning rate, so that the copy's spike
    rates, which set the kernels' cost, evolve as in the trainer's run."""
    import numpy as np

    from snn_core import Adam

    net = copy.deepcopy(trainer.network)
    opt = Adam(net.parameters(), lr=trainer.config.lr)
    cfg, n = trainer.config, len(trainer.x_train)
    buf = np.empty((trainer.x_train.shape[1], cfg.steps, cfg.batch_size), np.float32)
    # shuffled batches as in training: files may be sorted by class (the embedded sample is), and
    # one-class batches would train the copy into other spike rates, i.e. other kernel costs
    order = np.random.default_rng(0).permutation(n)
    done = 0
    t0 = time.perf_counter()
    for i in range(iters):
        start = (i * cfg.batch_size) % (n - cfg.batch_size + 1)
        idx = order[start:start + cfg.batch_size]
        xb, yb = trainer.x_train[idx], trainer.y_train[idx]
        x = trainer.encode(xb, cfg.steps, seed=i, out=buf)  # the trainer's encoder (main job: Bernoulli)
        _, g = trainer.loss_fn(net.forward(x), yb)
        net.zero_grad()
        net.backward(g)
        opt.step()
        done += len(yb)
    return done / (time.perf_counter() - t0)


def trainer_run(trainer, epochs):
    """(samples/s of ``Trainer.fit`` in wall time, the overhead its own phase profile reports).

    The profile's overhead compares the whole run with the kernel phases of
    the *same* run (same batches, schedule, rewiring, spike counts); the
    bare loop above trains another network state, so the two measures differ
    when spike counts drift apart (docs/benchmarks.md, "Trainer overhead").
    """
    trainer.profiling = True
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        trainer.fit(checkpoint_dir=out)
        wall = time.perf_counter() - t0
    samples = len(trainer.x_train) * epochs
    return samples / wall, trainer.profiler.as_dict(samples)["overhead"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--progress", action="store_true", help="with progress bars (the command's default)")
    a = p.parse_args()

    import dataclasses

    from snn_core.config import TrainConfig
    from snn_core.training import Trainer

    config = TrainConfig(data_dir=a.data_dir, epochs=a.epochs, quiet=not a.progress)
    rows = []
    for r in range(a.repeats + 1):
        trainer = Trainer(config)
        iters = trainer.iters_per_epoch * a.epochs
        if r % 2:  # alternate the order: A B, B A, ...
            bench = benchmark_loop(trainer, iters)
            whole, profiled = trainer_run(trainer, a.epochs)
        else:
            whole, profiled = trainer_run(trainer, a.epochs)
            bench = benchmark_loop(Trainer(config), iters)
        if r == 0:
            continue  # warm-up round: kernel compilation / cache loading
        rows.append({"round": r, "trainer_samples_per_s": whole, "bench_loop_samples_per_s": bench,
                     "overhead": bench / whole - 1.0, "profile_overhead": profiled})
        emit(rows[-1])
    med = statistics.median(x["overhead"] for x in rows)
    print(f"# {machine()}")
    print(f"# config: {dataclasses.asdict(config) | {'epochs': a.epochs}}")
    print(f"# trainer {statistics.median(x['trainer_samples_per_s'] for x in rows):.0f} samples/s, "
          f"benchmark loop {statistics.median(x['bench_loop_samples_per_s'] for x in rows):.0f} samples/s, "
          f"median overhead {100 * med:.1f}%; the trainer's own profile: median overhead "
          f"{100 * statistics.median(x['profile_overhead'] for x in rows):.1f}% over its kernel phases")


if __name__ == "__main__":
    main()
