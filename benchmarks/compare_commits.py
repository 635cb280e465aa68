"""Before/after training throughput: ``bench_train.py`` of an old commit vs this tree, alternating.

The old commit is exported with ``git archive`` into a temporary directory
(nothing in the repository changes), next to a link to the data folder that
``bench_train.py`` reads. Then, round after round, every configuration
(engine x density) runs once in each tree as its own ``bench_train.py
--worker`` process, in the order old, new in even rounds and new, old in odd
ones, so a drift in machine load hits both sides alike. Each tree runs its
own benchmark script (the protocol is the same; the scripts differ only in
the API they call). A first, unreported round compiles both trees' Numba
kernels into their caches.

Reported per configuration: the median train and inference samples/s of
each tree and the ratio new / old of the medians (the median of per-round
ratios is printed too). A ratio below 0.95 is a regression of more than 5%.

Usage::

    PYTHONPATH=. python benchmarks/compare_commits.py                        # 205f266 vs this tree
    PYTHONPATH=. python benchmarks/compare_commits.py --old 205f266 --rounds 5 --densities 0.1 0.01
    PYTHONPATH=. python benchmarks/compare_commits.py --json-out compare.json
    SNN_BENCH_SHARED=/path/to/shared PYTHONPATH=. python benchmarks/compare_commits.py   # from a git worktree

Prints one JSON line per run, then a table.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import BLAS_ENV, REPO, SHARED, emit, machine, med  # noqa: E402

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402

ENGINES = ("sparse", "dense")
DENSITIES = (1.0, 0.1, 0.01)


def export_tree(commit, root):
    """``git archive commit`` into ``root/tree``; ``root/shared`` links the data folder bench_train.py reads."""
    tree = os.path.join(root, "tree")
    os.makedirs(tree)
    archive = subprocess.run(["git", "-C", REPO, "archive", "--format=tar", commit], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", tree], input=archive.stdout, check=True)
    if os.path.isdir(SHARED):  # the old _common.py looks for ../shared next to its tree
        os.symlink(os.path.abspath(SHARED), os.path.join(root, "shared"))
    return tree


def run_worker(tree, engine, density, a):
    env = dict(os.environ)
    env.update(BLAS_ENV)
    env["PYTHONPATH"] = tree
    cmd = [sys.executable, os.path.join(tree, "benchmarks", "bench_train.py"), "--worker", "--engine", engine,
           "--density", str(density), "--iters", str(a.iters), "--warmup", str(a.warmup), "--steps", str(a.steps),
           "--batch", str(a.batch)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=a.timeout, cwd=tree)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", default="205f266", help="commit to compare against (default: the last pre-backends commit)")
    p.add_argument("--rounds", type=int, default=3, help="measured rounds (each runs every configuration in both trees)")
    p.add_argument("--densities", type=float, nargs="+", default=list(DENSITIES), help="weight densities to run")
    p.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES, help="bench_train.py engines")
    p.add_argument("--iters", type=int, default=30, help="timed iterations per run")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations per run")
    p.add_argument("--steps", type=int, default=8, help="time steps T")
    p.add_argument("--batch", type=int, default=100, help="batch size")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per worker process")
    p.add_argument("--json-out", default=None, help="also write every run to this JSON file")
    a = p.parse_args(argv)
    emit({"machine": machine(), "old": a.old, "new": "working tree"})
    results = []
    with tempfile.TemporaryDirectory(prefix="snn-bench-old-") as root:
        trees = {"old": export_tree(a.old, root), "new": REPO}
        configs = [(e, d) for d in a.densities for e in a.engines]
        for rnd in range(-1, a.rounds):  # round -1 fills both Numba caches and is not reported
            for engine, density in configs:
                order = ("old", "new") if rnd % 2 == 0 else ("new", "old")
                for side in order:
                    r = run_worker(trees[side], engine, density, a)
                    if rnd < 0:
                        continue
                    r.update(side=side, round=rnd, engine_kind=engine)
                    emit(r)
                    results.append(r)
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(results, f, indent=1)
    print("\n| engine | density | train old | train new | ratio | infer old | infer new | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    worst = None
    for engine, density in [(e, d) for d in a.densities for e in a.engines]:
        rs = [r for r in results if r["engine_kind"] == engine and r["density"] == density]
        row = [engine, f"{density:g}"]
        for key in ("train_samples_per_s", "infer_samples_per_s"):
            old = med([r[key] for r in rs if r["side"] == "old"])
            new = med([r[key] for r in rs if r["side"] == "new"])
            ratio = new / old
            worst = ratio if worst is None else min(worst, ratio)
            row += [f"{old:,.0f}", f"{new:,.0f}", f"{ratio:.3f}"]
        print("| " + " | ".join(row) + " |")
    print(f"\nworst ratio new/old: {worst:.3f} ({'no' if worst >= 0.95 else 'a'} regression beyond 5%)")


if __name__ == "__main__":
    main()
