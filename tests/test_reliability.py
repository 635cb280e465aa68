"""Nothing lost, nothing silently wrong (issue 13): every reproduction of the
probe as a test. Run folders and locks, checkpoint integrity, bounds checks
before compiled kernels, strict config typing, divergence, one-line errors.

Cold-vs-warm kernel determinism lives in test_determinism.py, the fuzz tests
of the readers in test_fuzz_readers.py.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

import snn_core
from snn_core import LIF, Readout, SparseLinear
from snn_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, seal
from snn_core.config import TrainConfig
from snn_core.data.datasets import MNIST_FILES
from snn_core.data.idx import write_idx
from snn_core.layers import Linear
from snn_core.runs import LOCK_NAME, RunDir, RunDirError
from snn_core.training import Trainer, TrainingDiverged, restore_trainer

REPO = Path(snn_core.__file__).resolve().parent.parent


def _config(out_dir, **kw):
    base = dict(max_train=200, hidden=[32], epochs=1, batch_size=60, t_iter=2, quiet=True, seed=7,
                out_dir=str(out_dir))
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished one-epoch run folder (best.h5, last.h5, summary.json)."""
    out = tmp_path_factory.mktemp("rel") / "run"
    Trainer(_config(out)).fit()
    return out


@pytest.fixture
def run_copy(run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def cli(*args, cwd=None, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="Agg")
    env.pop("SNN_CORE_DATA", None)
    return subprocess.run([sys.executable, "-m", "snn_core", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd or REPO.parent, timeout=timeout)


def one_line_error(proc, *needles):
    """Non-zero exit, no traceback, one line on stderr containing every needle."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def file_bytes(directory):
    return {p.name: p.read_bytes() for p in sorted(Path(directory).iterdir()) if p.is_file()}


# ---------------------------------------------------------------------------
# 1. two runs, one folder: lock naming the holder; temp files per process
# ---------------------------------------------------------------------------
def test_second_lock_on_a_folder_is_refused_naming_the_holder(tmp_path):
    with RunDir(tmp_path / "r"):
        with pytest.raises(RunDirError, match=rf"in use by another run \(pid {os.getpid()} on "):
            RunDir(tmp_path / "r").acquire()
    with RunDir(tmp_path / "r"):  # released on exit
        pass


_HOLD = textwrap.dedent("""
    import sys, time
    from snn_core.runs import RunDir
    with RunDir(sys.argv[1]):
        print("LOCKED", flush=True)
        time.sleep(120)
""")


def test_cli_train_into_a_folder_locked_by_another_process(tmp_path):
    out = tmp_path / "conc"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "LOCKED"
        proc = cli("train", "--hidden", 16, "--max-train", 100, "--epochs", 1, "--quiet", "--out-dir", out)
        one_line_error(proc, "in use by another run", f"pid {holder.pid}")
        assert not (out / "last.h5").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder died: its lock went with it, no stale lock blocks the folder
    with RunDir(out):
        pass


def test_save_leaves_other_processes_temp_files_alone(run_copy):
    tr = restore_trainer(run_copy / "last.h5")
    other = run_copy / ".last.h5.tmp-999999999"
    other.write_bytes(b"another process is writing this")
    save_checkpoint(run_copy / "last.h5", tr)
    assert other.read_bytes() == b"another process is writing this"
    # the lock holder removes leftovers (only dead processes can have left them)
    with RunDir(run_copy, continuing=True):
        assert not other.exists()


# ---------------------------------------------------------------------------
# 2. earlier runs are never overwritten silently
# ---------------------------------------------------------------------------
def test_folder_holding_another_run_is_refused(run_copy):
    before = file_bytes(run_copy)
    with pytest.raises(RunDirError, match="already holds a run .*--overwrite"):
        Trainer(_config(run_copy, seed=8)).fit()
    assert {k: v for k, v in file_bytes(run_copy).items() if k != LOCK_NAME} == \
        {k: v for k, v in before.items() if k != LOCK_NAME}


def test_overwrite_deletes_the_old_run_before_training(run_copy):
    tr = Trainer(_config(run_copy, seed=8))
    tr.network.layers[-2].weight.data *= 1e25  # fc2: the readout explodes at the first iteration
    with pytest.raises(TrainingDiverged):
        tr.fit(overwrite=True)
    # killed or failed early, the folder never mixes two runs
    assert not any((run_copy / n).exists() for n in ("best.h5", "last.h5", "summary.json"))


def test_same_trainer_continues_its_own_folder(tmp_path):
    tr = Trainer(_config(tmp_path / "r", epochs=2))
    tr.fit(epochs=1)
    tr.fit(epochs=2)  # its own files: no --overwrite needed
    assert load_checkpoint(tmp_path / "r" / "last.h5")["trainer"]["epoch"] == 2


def test_resume_of_a_copy_writes_beside_the_copy(run, tmp_path):
    original = file_bytes(run)
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    tr = restore_trainer(copy / "last.h5", epochs=2)
    assert Path(tr.config.out_dir) == copy
    tr.fit()
    assert load_checkpoint(copy / "last.h5")["trainer"]["epoch"] == 2
    assert file_bytes(run) == original


def test_resume_with_out_dir_writes_there_and_respects_other_runs(run, run_copy, tmp_path):
    original = file_bytes(run)
    tr = restore_trainer(run / "last.h5", epochs=2, out_dir=str(tmp_path / "new"))
    tr.fit()
    assert load_checkpoint(tmp_path / "new" / "last.h5")["trainer"]["epoch"] == 2
    assert file_bytes(run) == original
    with pytest.raises(RunDirError, match="already holds a run"):
        restore_trainer(run / "last.h5", epochs=2, out_dir=str(run_copy)).fit()


def test_cli_empty_out_dir_is_refused(tmp_path):
    one_line_error(cli("train", "--out-dir", "", "--epochs", 1, cwd=tmp_path), "out_dir")
    assert not any(tmp_path.iterdir())


def test_cli_refuses_an_existing_run_and_overwrite_replaces_it(run_copy):
    before = (run_copy / "last.h5").read_bytes()
    args = ("train", "--hidden", 32, "--max-train", 200, "--epochs", 1, "--batch-size", 60, "--quiet",
            "--out-dir", run_copy, "--seed", 9)
    one_line_error(cli(*args), "already holds a run", "--overwrite")
    assert (run_copy / "last.h5").read_bytes() == before
    proc = cli(*args, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert load_checkpoint(run_copy / "last.h5")["config"]["seed"] == 9


# ---------------------------------------------------------------------------
# 3. damaged checkpoints never load silently
# ---------------------------------------------------------------------------
def _flip_dataset_bytes(path, name, n=100, seed=0):
    with h5py.File(path, "r") as f:
        ds = f[name]
        offset, size = ds.id.get_offset(), ds.id.get_storage_size()
    assert offset is not None and size > 0
    raw = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    for pos in rng.choice(size, size=min(n, size), replace=False):
        raw[offset + pos] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_flipped_bytes_in_weights_are_detected(run_copy):
    _flip_dataset_bytes(run_copy / "best.h5", "best/fc1/data")
    with pytest.raises(CheckpointError, match="/best/fc1/data is damaged"):
        load_checkpoint(run_copy / "best.h5")
    one_line_error(cli("evaluate", run_copy / "best.h5"), "/best/fc1/data is damaged")


def test_edited_attribute_is_detected(run_copy):
    with h5py.File(run_copy / "last.h5", "r+") as f:
        cfg = json.loads(f["config"].attrs["json"])
        cfg["lr"] = 0.9
        f["config"].attrs["json"] = json.dumps(cfg)
    with pytest.raises(CheckpointError, match="/config is damaged"):
        load_checkpoint(run_copy / "last.h5")


@pytest.mark.parametrize("name", ["best/fc2/bias", "network/fc1/data", "optimizer/0/m"])
def test_nan_in_parameters_or_optimizer_state_is_refused(run_copy, name):
    path = run_copy / "best.h5"
    with h5py.File(path, "r+") as f:
        a = f[name][()]
        a[0] = np.nan
        f[name][...] = a
        seal(f)  # digests agree: the finite check itself must catch it
    with pytest.raises(CheckpointError, match=f"/{name} holds 1 NaN/Inf"):
        load_checkpoint(path)
    one_line_error(cli("train", "--resume", path, "--epochs", 2), "NaN/Inf")


def test_deleted_layer_group_is_an_error_not_a_fallback(run_copy):
    path = run_copy / "best.h5"
    with h5py.File(path, "r+") as f:
        del f["best/fc1"]
    with pytest.raises(CheckpointError, match="/best is damaged"):
        load_checkpoint(path)
    with h5py.File(path, "r+") as f:
        seal(f)  # even with consistent digests, a missing layer is never filled from /network
    with pytest.raises(CheckpointError, match="/best/fc1 is missing"):
        restore_trainer(path)


def test_info_on_damaged_metrics_is_one_line(run_copy):
    path = run_copy / "last.h5"
    with h5py.File(path, "r+") as f:
        f["trainer"].attrs["metrics"] = json.dumps({"epoch": [1]})  # keys missing
        seal(f)
    one_line_error(cli("info", path), "error")


# ---------------------------------------------------------------------------
# 4. out-of-bounds reads in compiled kernels: cheap checks before every call
# ---------------------------------------------------------------------------
def test_lif_backward_with_the_wrong_shape_raises():
    lif = LIF(8)
    lif.forward(np.ones((4, 3, 8), np.float32))
    with pytest.raises(ValueError, match=r"lif grad: expected the shape of the last forward output \(4, 3, 8\)"):
        lif.backward(np.ones((4, 53, 8), np.float32))
    ro = Readout(8)
    ro.forward(np.ones((4, 3, 8), np.float32))
    with pytest.raises(ValueError, match="readout grad"):
        ro.backward(np.ones((5, 3, 8), np.float32))


@pytest.mark.parametrize("cls", [SparseLinear, Linear])
def test_synapse_backward_with_wrong_shape_leaves_gradients_untouched(cls):
    layer = cls(20, 8, seed=0) if cls is Linear else cls(20, 8, density=0.5, seed=0)
    x = (np.random.default_rng(0).random((4, 3, 20)) < 0.5).astype(np.float32)
    layer.forward(x)
    layer.backward(np.ones((4, 3, 8), np.float32))
    params = layer.parameters()
    grads = [p.grad.copy() for p in params]
    with pytest.raises(ValueError, match="grad: expected the shape"):
        layer.backward(np.ones((4, 2, 8), np.float32))
    for p, g in zip(params, grads):
        assert np.array_equal(p.grad, g)


@pytest.mark.parametrize("indices, error", [([2**32 + 3], ValueError), ([3.7], TypeError), ([-1], ValueError),
                                            ([20], ValueError)])
def test_set_connections_validates_indices(indices, error):
    layer = SparseLinear(20, 1, density=0.1, seed=0)
    before = layer.weight.copy()
    with pytest.raises(error, match="indices"):
        layer.set_connections([0, 1], indices, [0.5])
    assert (layer.weight != before).nnz == 0
    layer.set_connections([0, 1], np.array([3], np.int64), [0.5])  # integers in range: fine
    assert layer.weight.indices.tolist() == [3]


def test_set_connections_keeps_copies_and_checks_the_weights():
    layer = SparseLinear(20, 2, density=0.1, seed=0)
    indptr, indices, data = np.array([0, 1, 2]), np.array([3, 5]), np.array([0.5, -0.5])
    layer.set_connections(indptr, indices, data)
    indices[0], data[0] = 4, 9.0  # the caller's arrays change later: the layer's do not
    assert layer.weight.indices.tolist() == [3, 5] and layer.weight.data.tolist() == [0.5, -0.5]
    assert layer.weight.dtype == np.float32 and layer.weight.indices.dtype == np.int32
    with pytest.raises(ValueError, match="4 weights for 2 connections"):
        layer.set_connections(indptr, [3, 5], np.ones((2, 2)))
    with pytest.raises(ValueError, match="not strictly increasing"):
        layer.set_connections([0, 2, 2], [5, 3], [1.0, 2.0])
    assert layer.weight.indices.tolist() == [3, 5]


@pytest.mark.parametrize("make", [lambda: LIF(-2), lambda: LIF(0), lambda: LIF(2.5), lambda: Readout(True),
                                  lambda: SparseLinear("20", 8), lambda: SparseLinear(20, -8),
                                  lambda: Linear(20.0, 8)])
def test_layer_sizes_must_be_positive_integers(make):
    with pytest.raises((TypeError, ValueError), match="expected a positive integer"):
        make()


# ---------------------------------------------------------------------------
# 5. strict config typing, every error names its field
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("key, value, message", [
    ("rewiring", "false", "rewiring: expected true or false"),
    ("epochs", True, "epochs: expected an integer"),
    ("seed", 1.5, "seed: expected an integer"),
    ("lr", "0.01", "lr: expected a number"),
    ("seed", -1, "seed: expected an integer in"),
    ("threads", 100000, "threads: expected None or an integer in"),
    ("hidden", [64.0], "hidden: expected a list of integers"),
    ("max_train", "100", "max_train: expected an integer or null"),
    ("quiet", 1, "quiet: expected true or false"),
    ("momentum", 1.5, "momentum"),
])
def test_config_file_values_are_typed_strictly(tmp_path, key, value, message):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({key: value}))
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_file(p)


def test_config_accepts_integers_for_floats():
    assert TrainConfig.from_dict({"lr": 1}).lr == 1.0 and isinstance(TrainConfig.from_dict({"lr": 1}).lr, float)


def test_cli_bad_values_are_one_line_naming_the_field(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"rewiring": "false"}))
    one_line_error(cli("train", "--config", p, "--out-dir", tmp_path / "o"), "rewiring")
    one_line_error(cli("train", "--seed", -1, "--out-dir", tmp_path / "o"), "seed")
    assert not (tmp_path / "o").exists()


def test_threads_beyond_the_machine_are_refused_before_training(tmp_path):
    import numba

    tr = Trainer(_config(tmp_path / "o", threads=numba.config.NUMBA_NUM_THREADS + 1))
    with pytest.raises(ValueError, match="threads: .* at most"):
        tr.fit()
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------
# 6. divergence stops the run at that iteration
# ---------------------------------------------------------------------------
def test_divergence_stops_at_the_iteration_and_keeps_the_last_good_checkpoint(tmp_path):
    tr = Trainer(_config(tmp_path, epochs=3))
    tr.fit(epochs=1)
    good = file_bytes(tmp_path)
    it = tr.iteration
    tr.network.layers[-2].weight.data *= 1e25  # fc2: explodes the loss at the next iteration
    with pytest.raises(TrainingDiverged, match=f"diverged at epoch 2, iteration {it}: loss"):
        tr.fit()
    assert tr.iteration == it
    assert {k: v for k, v in file_bytes(tmp_path).items() if k != LOCK_NAME} == \
        {k: v for k, v in good.items() if k != LOCK_NAME}


def test_nan_parameter_after_an_update_stops_the_run(tmp_path, monkeypatch):
    tr = Trainer(_config(tmp_path / "o"))
    real = tr.optimizer.step

    def poisoned_step():
        real()
        tr.network.layers[0].weight.data[0] = np.nan  # an update that produced NaN
    monkeypatch.setattr(tr.optimizer, "step", poisoned_step)
    with pytest.raises(TrainingDiverged, match="iteration 1: the update left fc1.weight: contains 1 NaN/Inf"):
        tr.fit()


def test_cli_diverging_run_exits_non_zero(tmp_path):
    proc = cli("train", "--optimizer", "sgd", "--lr", 1e30, "--lr-end", 1e30, "--hidden", 32, "--max-train", 200,
               "--epochs", 3, "--quiet", "--out-dir", tmp_path / "o")
    one_line_error(proc, "diverged at epoch 1, iteration")
    assert not (tmp_path / "o" / "summary.json").exists()


# ---------------------------------------------------------------------------
# 7. one line where one line is promised
# ---------------------------------------------------------------------------
def test_debug_shows_the_traceback(tmp_path):
    proc = cli("--debug", "info", tmp_path / "nothere.h5")
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    proc = cli("info", tmp_path / "nothere.h5", "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


@pytest.mark.parametrize("n", [0, -5])
def test_energy_samples_must_be_positive(run, n):
    proc = cli("evaluate", run / "best.h5", "--energy-samples", n)
    assert proc.returncode == 2 and "expected a positive integer" in proc.stderr


def test_sweep_rejects_a_bad_density_before_training(tmp_path):
    proc = cli("sweep", "--densities", 0.1, 5, "--epochs", 1, "--out-dir", tmp_path / "sw")
    one_line_error(proc, "--densities 5", "density")
    assert not (tmp_path / "sw").exists()


def _idx_dir(root, train_labels, n_test=20):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n = len(train_labels)
    arrays = {"train_images": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
              "train_labels": np.asarray(train_labels, np.uint8),
              "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_labels": (np.arange(n_test) % 10).astype(np.uint8)}
    for role, stem in MNIST_FILES.items():
        write_idx(root / stem, arrays[role])
    return root


@pytest.mark.parametrize("label", [0, 3])
def test_one_class_training_labels_are_refused(tmp_path, label):
    data = _idx_dir(tmp_path / "d", np.full(50, label))
    with pytest.raises(ValueError, match=f"training labels: all .* samples have class {label}"):
        Trainer(_config(tmp_path / "o", data_dir=str(data), max_train=None))


def test_empty_idx_file_is_a_clear_error(tmp_path):
    data = _idx_dir(tmp_path / "d", np.arange(20) % 10)
    write_idx(data / MNIST_FILES["train_images"], np.zeros((0, 28, 28), np.uint8))
    write_idx(data / MNIST_FILES["train_labels"], np.zeros(0, np.uint8))
    with pytest.raises(ValueError, match="no images"):
        Trainer(_config(tmp_path / "o", data_dir=str(data), max_train=None))


def test_disk_full_message_is_one_line(run_copy, monkeypatch):
    tr = restore_trainer(run_copy / "last.h5")

    def full(*a, **kw):
        raise OSError(28, "No space left on device\nHDF5-DIAG: Error detected in HDF5 (1.14.0):\n  #000: ...")
    monkeypatch.setattr(h5py, "File", full)
    with pytest.raises(OSError) as info:
        save_checkpoint(run_copy / "last.h5", tr)
    assert "\n" not in str(info.value) and "No space left on device" in str(info.value)


# ---------------------------------------------------------------------------
# 7. checkpoint interval: short epochs are saved every checkpoint_seconds and at the end
# ---------------------------------------------------------------------------
def _record_saves(monkeypatch):
    import snn_core.training as training

    saves, real = [], training.save_checkpoint

    def recording(path, trainer, copies=()):
        # the files in the order they are replaced: the copies first, then path
        saves.extend((Path(p).name, trainer.epoch) for p in [*copies, path])
        real(path, trainer, copies)
    monkeypatch.setattr(training, "save_checkpoint", recording)
    return saves


def test_checkpoints_every_epoch_with_checkpoint_seconds_zero(tmp_path, monkeypatch):
    saves = _record_saves(monkeypatch)
    tr = Trainer(_config(tmp_path, epochs=3, checkpoint_seconds=0))
    tr.fit()
    assert [e for name, e in saves if name == "last.h5"] == [1, 2, 3]
    assert tr.saved_epoch == 3


def test_long_interval_writes_once_at_the_end_with_the_best_model(tmp_path, monkeypatch):
    saves = _record_saves(monkeypatch)
    tr = Trainer(_config(tmp_path, epochs=3, checkpoint_seconds=1e6))
    tr.fit()
    assert saves == [("best.h5", 3), ("last.h5", 3)]  # best first, then last
    best = load_checkpoint(tmp_path / "best.h5")
    assert best["trainer"]["best_epoch"] == tr.best_epoch
    for name, state in tr.best_state.items():  # the best-validation weights, not the last epoch's
        for key, arr in state.items():
            np.testing.assert_array_equal(best["best"][name][key], arr)


def test_resume_after_an_interval_checkpoint_matches_an_uninterrupted_run(tmp_path):
    whole = Trainer(_config(tmp_path / "whole", epochs=2, checkpoint_seconds=1e6))
    whole.fit()
    part = Trainer(_config(tmp_path / "part", epochs=2, checkpoint_seconds=1e6))
    part.fit(epochs=1)  # the last epoch of a fit always writes
    resumed = restore_trainer(tmp_path / "part" / "last.h5")
    assert resumed.saved_epoch == 1
    resumed.fit()
    for p, q in zip(whole.network.parameters(), resumed.network.parameters()):
        np.testing.assert_array_equal(p.value, q.value)


def test_divergence_before_any_checkpoint_says_so(tmp_path):
    tr = Trainer(_config(tmp_path, epochs=3, checkpoint_seconds=1e6))
    tr.network.layers[-2].weight.data *= 1e25
    with pytest.raises(TrainingDiverged, match="no checkpoint was written"):
        tr.fit()
    assert not (tmp_path / "last.h5").exists()
