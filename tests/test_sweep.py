"""Sweeps on dask.distributed: grid expansion, aggregation, resume/skip, a local
cluster through the CLI, and a real `dask scheduler` + two `dask worker`
processes with one worker killed mid-sweep."""
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from snn_core.config import TrainConfig
from snn_core.sweep import (Sweep, aggregate, check_same_run, compare_esl_static, load_results, mean_std, run_name,
                            summary_is_complete, train_run)

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(hidden=[32], max_train=300, batch_size=30, epochs=2, t_iter=2, quiet=True)


def cli(*args, timeout=300):
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "snn_core", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def one_line_error(proc, *words):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words), proc.stderr
    return err[0]


# ---------------------------------------------------------------------------
# the grid
# ---------------------------------------------------------------------------
def test_grid_runs_names_and_dense_baselines(tmp_path):
    base = TrainConfig(out_dir=str(tmp_path), **TINY)
    sw = Sweep(base, {"density": [0.1, 0.5], "rewiring": [True, False], "seed": [0, 1]}, dense=True)
    runs = sw.runs()
    names = [n for n, _ in runs]
    assert names == ["d0.1-esl-s0", "d0.1-esl-s1", "d0.1-static-s0", "d0.1-static-s1",
                     "d0.5-esl-s0", "d0.5-esl-s1", "d0.5-static-s0", "d0.5-static-s1", "dense-s0", "dense-s1"]
    for name, cfg in runs:
        assert cfg.out_dir == str(tmp_path / name) and cfg.quiet
        assert cfg.hidden == [32] and cfg.epochs == 2  # the base reaches every run
        if name.startswith("dense"):
            assert not cfg.sparse and cfg.density == 1.0 and not cfg.rewiring
        else:
            assert cfg.sparse and cfg.density == float(name.split("-")[0][1:])
            assert cfg.rewiring == ("-esl-" in name)
        assert cfg.seed == int(name[-1])
    assert len(Sweep(base, {"density": [0.1], "seed": [0]}, dense=False).runs()) == 1


def test_grid_other_axes_name_runs_and_dense_ignores_sparse_only_keys(tmp_path):
    base = TrainConfig(out_dir=str(tmp_path), **TINY)
    sw = Sweep(base, {"density": [0.1], "rewiring": [True], "grow": ["random", "gradient"],
                      "hidden": [[32], [16, 16]], "seed": [3]})
    names = [n for n, _ in sw.runs()]
    assert names == ["d0.1-esl-grow-random-hidden-32-s3", "d0.1-esl-grow-random-hidden-16x16-s3",
                     "d0.1-esl-grow-gradient-hidden-32-s3", "d0.1-esl-grow-gradient-hidden-16x16-s3",
                     "dense-hidden-32-s3", "dense-hidden-16x16-s3"]  # one dense run per model, not per grow rule
    cfgs = dict(sw.runs())
    assert cfgs["d0.1-esl-grow-gradient-hidden-16x16-s3"].grow == "gradient"
    assert cfgs["dense-hidden-16x16-s3"].hidden == [16, 16]
    assert run_name({"data_dir": "/data/fashion/", "seed": 0}, ["data_dir"]) == "datadir-fashion-s0"


@pytest.mark.parametrize("grid, words", [
    ({"densty": [0.1]}, ["densty"]),
    ({"density": [2.0]}, ["density"]),
    ({"grow": ["sideways"]}, ["grow"]),
    ({"density": []}, ["density", "non-empty"]),
    ({"seed": 0}, ["seed", "list"]),
    ({"seed": [1, 1]}, ["seed", "twice"]),
    ({"out_dir": ["a", "b"]}, ["out_dir"]),
])
def test_grid_errors_name_the_key(tmp_path, grid, words):
    with pytest.raises(ValueError) as e:
        Sweep(TrainConfig(out_dir=str(tmp_path)), grid).runs()
    assert all(w in str(e.value) for w in words), str(e.value)


def test_sweep_file(tmp_path):
    f = tmp_path / "grid.toml"
    f.write_text('dense = false\n[base]\nepochs = 3\nhidden = [32]\n[grid]\ndensity = [0.05, 0.1]\nseed = [0, 1, 2]\n')
    base, grid, dense = Sweep.read_file(f)
    assert base == {"epochs": 3, "hidden": [32]} and grid == {"density": [0.05, 0.1], "seed": [0, 1, 2]}
    assert dense is False
    bad = tmp_path / "bad.toml"
    bad.write_text("[grids]\ndensity = [0.1]\n")
    with pytest.raises(ValueError, match="grids"):
        Sweep.read_file(bad)
    with pytest.raises(FileNotFoundError, match="nothere"):
        Sweep.read_file(tmp_path / "nothere.toml")


# ---------------------------------------------------------------------------
# aggregation (known small cases)
# ---------------------------------------------------------------------------
def _row(density, rewiring, seed, acc, sparse=True, kept=math.nan):
    cfg = TrainConfig(density=density if sparse else 1.0, rewiring=rewiring, seed=seed, sparse=sparse).to_dict()
    return {"run": f"{density}-{rewiring}-{seed}", "test_accuracy": acc, "best_val_accuracy": acc - 0.01,
            "density": density, "train_seconds": 1.0, "initial_kept": kept, "explored": kept / 2, "config": cfg}


def test_mean_std():
    m, sd, n = mean_std([0.90, 0.92, 0.94, None, math.nan])
    assert (m, n) == (pytest.approx(0.92), 3) and sd == pytest.approx(0.02)
    m, sd, n = mean_std([0.5])
    assert m == 0.5 and math.isnan(sd) and n == 1


def test_aggregate_and_compare():
    rows = [_row(0.1, True, 0, 0.90, kept=0.8), _row(0.1, True, 1, 0.92, kept=0.6), _row(0.1, True, 2, 0.94, kept=0.7),
            _row(0.1, False, 0, 0.89), _row(0.1, False, 1, 0.90), _row(0.1, False, 2, 0.91),
            _row(1.0, False, 0, 0.95, sparse=False), _row(1.0, False, 1, 0.97, sparse=False)]
    configs = aggregate(rows, ["density", "rewiring", "seed"])
    by = {c["label"]: c for c in configs}
    assert set(by) == {"ESL", "static", "dense"}
    esl, static, dense = by["ESL"], by["static"], by["dense"]
    assert esl["n"] == 3 and esl["seeds"] == [0, 1, 2]
    assert esl["test_accuracy_mean"] == pytest.approx(0.92) and esl["test_accuracy_std"] == pytest.approx(0.02)
    assert esl["test_accuracy_sem"] == pytest.approx(0.02 / math.sqrt(3))
    assert esl["initial_kept_mean"] == pytest.approx(0.7)
    assert math.isnan(static["initial_kept_mean"])  # no rewiring: no turnover
    assert dense["n"] == 2 and dense["test_accuracy_mean"] == pytest.approx(0.96) and dense["density"] == 1.0
    (cmp,) = compare_esl_static(configs)
    se = math.sqrt(0.02 ** 2 / 3 + 0.01 ** 2 / 3)
    assert cmp["diff"] == pytest.approx(0.02) and cmp["se"] == pytest.approx(se) and cmp["z"] == pytest.approx(0.02 / se)


# ---------------------------------------------------------------------------
# one run: skip, resume, refuse another run's folder (in this process)
# ---------------------------------------------------------------------------
@pytest.fixture
def keep_numba_threads():
    import numba

    n = numba.get_num_threads()
    yield
    numba.set_num_threads(n)


def test_train_run_trains_resumes_and_skips(tmp_path, keep_numba_threads):
    from snn_core.training import Trainer

    cfg = TrainConfig(out_dir=str(tmp_path / "run"), density=0.2, threads=1, **TINY)
    # an interrupted run: 1 of 2 epochs done, last.h5 written
    Trainer(cfg).fit(epochs=1)
    (tmp_path / "run" / "summary.json").unlink()  # killed before the end: no summary
    assert (tmp_path / "run" / "last.h5").is_file()
    first = json.loads(json.dumps(train_run(cfg.to_dict())))
    assert first["status"] == "resumed" and first["epochs"] == 2
    log = (tmp_path / "run" / "train.log").read_text()
    assert "resumed at epoch 1 by pid" in log and "epoch 2/2" in log and "epoch 1/2" not in log
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(summary["metrics"]["epoch"]) == 2 and summary["rewiring_events"] >= 1
    assert 0 <= first["initial_kept"] <= 1 and 0 < first["explored"] <= 1
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()}
    again = train_run(cfg.to_dict())
    assert again["status"] == "skipped" and again["test_accuracy"] == first["test_accuracy"]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()} == mtimes  # nothing written
    # the same folder for a different configuration: refused, nothing lost
    other = TrainConfig.from_dict({"density": 0.3}, cfg)
    with pytest.raises(ValueError, match="density"):
        train_run(other.to_dict())
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()} == mtimes
    # more epochs than the finished run: not complete, it continues
    assert not summary_is_complete(tmp_path / "run", TrainConfig.from_dict({"epochs": 3}, cfg))


def test_check_same_run_ignores_execution_settings():
    cfg = TrainConfig(density=0.1)
    check_same_run(TrainConfig(density=0.1, out_dir="elsewhere", threads=4, quiet=True).to_dict(), cfg, "x")
    with pytest.raises(ValueError, match="grow"):
        check_same_run(TrainConfig(density=0.1, grow="gradient").to_dict(), cfg, "x")


# ---------------------------------------------------------------------------
# the CLI on a local cluster
# ---------------------------------------------------------------------------
TINY_FLAGS = ["--hidden", 32, "--max-train", 300, "--batch-size", 30, "--epochs", 2, "--t-iter", 2]


def test_cli_local_cluster_sweep_aggregates_reruns_nothing_and_plots(tmp_path):
    out = tmp_path / "sw"
    proc = ok(cli("sweep", "--densities", 0.1, 0.5, "--seeds", 0, 1, *TINY_FLAGS, "--workers", 2,
                  "--out-dir", out, "--no-progress"))
    assert "10 runs on a local cluster (2 workers)" in proc.stdout
    res = load_results(out)
    names = [r["run"] for r in res["runs"]]
    assert sorted(names) == sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(names) == 10 and all(r["status"] == "trained" for r in res["runs"])
    for r in res["runs"]:  # every row is its run folder's summary
        s = json.loads((out / r["run"] / "summary.json").read_text())
        assert r["test_accuracy"] == s["test_accuracy"] and s["epochs"] == 2
        assert s["config"]["threads"] == 1  # one Numba thread per worker
        if "-esl-" in r["run"]:
            assert s["rewiring_events"] >= 1 and 0 < r["explored"] <= 1
        else:
            assert s["rewiring_events"] == 0
    for c in res["configurations"]:
        accs = [json.loads((out / n / "summary.json").read_text())["test_accuracy"] for n in c["runs"]]
        assert c["n"] == 2 and c["seeds"] == [0, 1]
        assert c["test_accuracy_mean"] == pytest.approx(sum(accs) / 2)
        assert c["test_accuracy_std"] == pytest.approx(abs(accs[0] - accs[1]) / math.sqrt(2))
    assert sorted(c["label"] for c in res["configurations"]) == ["ESL", "ESL", "dense", "static", "static"]
    assert len(res["esl_vs_static"]) == 2
    csv_lines = (out / "sweep.csv").read_text().splitlines()
    assert len(csv_lines) == 6 and "test_accuracy_mean" in csv_lines[0]
    assert len((out / "runs.csv").read_text().splitlines()) == 11
    # a re-run does no work: every run skipped, no run file touched
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*/*")}
    proc = ok(cli("sweep", "--densities", 0.1, 0.5, "--seeds", 0, 1, *TINY_FLAGS, "--workers", 2,
                  "--out-dir", out, "--no-progress"))
    assert {r["status"] for r in load_results(out)["runs"]} == {"skipped"}
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*")} == mtimes
    # --collect: the same tables from the finished folders, nothing trained
    before = load_results(out)["configurations"]
    proc = ok(cli("sweep", "--densities", 0.1, 0.5, 0.7, "--seeds", 0, 1, *TINY_FLAGS, "--out-dir", out, "--collect"))
    assert "10 of 14 runs finished; not yet: d0.7-esl-s0, d0.7-esl-s1, d0.7-static-s0, d0.7-static-s1" in proc.stdout
    res = load_results(out)
    assert {r["status"] for r in res["runs"]} == {"collected"} and len(res["missing"]) == 4
    assert [c["test_accuracy_mean"] for c in res["configurations"]] == [c["test_accuracy_mean"] for c in before]
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*")} == mtimes
    # the sweep folder plots
    ok(cli("plot", out))
    from PIL import Image

    with Image.open(out / "figures" / "accuracy_vs_density.png") as im:
        im.verify()


def test_cli_sweep_dry_run_and_errors(tmp_path):
    f = tmp_path / "grid.toml"
    f.write_text(f'[base]\nepochs = 1\nout_dir = "{(tmp_path / "sw").as_posix()}"\n'
                 '[grid]\ndensity = [0.05]\ngrow = ["random", "momentum"]\nseed = [0, 1]\n')
    proc = ok(cli("sweep", "--grid", f, "--no-dense", "--dry-run"))
    lines = proc.stdout.splitlines()
    assert lines[-1] == "4 runs" and lines[0].split()[0] == "d0.05-grow-random-s0"
    assert not (tmp_path / "sw").exists()  # a dry run writes nothing
    proc = ok(cli("sweep", "--grid", f, "--seeds", 5, "--dry-run"))  # a flag replaces the file's axis
    assert proc.stdout.splitlines()[-1] == "3 runs" and "dense-s5" in proc.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[grid]\ndensity = [0.1, 3]\n")
    one_line_error(cli("sweep", "--grid", bad, "--dry-run"), "density")
    one_line_error(cli("sweep", "--models", "32,x", "--dry-run"), "--models")
    one_line_error(cli("sweep", "--grid", tmp_path / "none.toml"), "none.toml")


# ---------------------------------------------------------------------------
# a real scheduler and two workers; one worker is killed mid-sweep
# ---------------------------------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(cond, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_dask_scheduler_two_workers_survives_a_killed_worker(tmp_path):
    dask = Path(sys.executable).with_name("dask")
    if not dask.is_file():
        pytest.skip("the dask command is not installed")
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    env = os.environ | {"PYTHONPATH": str(ROOT), "NUMBA_NUM_THREADS": "1"}
    procs = []

    def start(*args, log):
        p = subprocess.Popen([str(dask), *args], stdout=open(tmp_path / log, "w"), stderr=subprocess.STDOUT, env=env,
                             cwd=tmp_path, start_new_session=True)
        procs.append(p)
        return p

    out = tmp_path / "sw"
    flags = ["--densities", 0.2, 0.5, "--seeds", 0, 1, "--hidden", 64, "--max-train", 1500, "--batch-size", 50,
             "--epochs", 4, "--t-iter", 5, "--out-dir", out, "--no-progress", "--scheduler", addr]
    try:
        start("scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard", log="scheduler.log")
        workers = [start("worker", addr, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", f"w{i}",
                         log=f"worker{i}.log") for i in range(2)]
        client = subprocess.Popen([sys.executable, "-m", "snn_core", "sweep", *map(str, flags)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                                  start_new_session=True)
        procs.append(client)

        # a run in progress: last.h5 written (epoch 1 done), no summary yet; its log names the worker's pid
        def running():
            for log in out.glob("*/train.log"):
                if (log.parent / "last.h5").is_file() and not (log.parent / "summary.json").exists():
                    return log.parent
            return None

        _wait_for(lambda: running() is not None or client.poll() is not None, 240, "a run in progress")
        assert client.poll() is None, client.communicate()
        victim_dir = running()
        pid = int(victim_dir.joinpath("train.log").read_text().split(" by pid ")[1].split()[0])
        victim = next(w for w in workers if w.pid == pid)
        victim.send_signal(signal.SIGKILL)  # the worker dies mid-run, no clean-up
        victim.wait(10)
        stdout, stderr = client.communicate(timeout=300)
        assert client.returncode == 0, stdout[-3000:] + stderr[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
    res = load_results(out)
    assert len(res["runs"]) == 10 and not res["failed"]
    for r in res["runs"]:
        s = json.loads((out / r["run"] / "summary.json").read_text())
        assert s["epochs"] == 4 and len(s["metrics"]["epoch"]) == 4 and r["test_accuracy"] == s["test_accuracy"]
        assert s["config"]["density"] == pytest.approx(1.0 if r["run"].startswith("dense") else
                                                       float(r["run"].split("-")[0][1:]))
    # the killed run was retried on the surviving worker and resumed from its checkpoint
    victim_row = next(r for r in res["runs"] if r["run"] == victim_dir.name)
    assert victim_row["status"] == "resumed", victim_row
    log = (victim_dir / "train.log").read_text()
    assert f"by pid {pid}" in log and "resumed at epoch" in log
    assert len(json.loads((victim_dir / "summary.json").read_text())["metrics"]["val_accuracy"]) == 4


_COMPILE_IN_A_WORKER = '''
import sys
import numba  # imported by the main module, as snn_core.cli does: a spawned worker re-imports it first

from distributed import Client

from snn_core.sweep import local_cluster


def compile_fresh():
    numba.set_num_threads(1)           # what train_run does: the thread pool is now launched
    return numba.njit(lambda v: v + 1)(41)   # a kernel compiled in the worker (a cold cache)


if __name__ == "__main__":
    with local_cluster(1) as cluster, Client(cluster) as client:
        print("result", client.submit(compile_fresh).result())
'''


def test_local_cluster_workers_can_compile_kernels(tmp_path):
    """A worker must be able to compile (first run on a machine, or after an upgrade).

    Regression: the cluster used to set NUMBA_NUM_THREADS=1 in the workers'
    environment after they had imported Numba with the default, so the first
    compilation in a worker raised "Cannot set NUMBA_NUM_THREADS to a different
    value" and every run of a cold-cache sweep failed.
    """
    script = tmp_path / "compile_in_worker.py"
    script.write_text(_COMPILE_IN_A_WORKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    env.pop("NUMBA_NUM_THREADS", None)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "result 42" in r.stdout
