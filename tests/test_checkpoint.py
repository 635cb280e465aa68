"""HDF5 checkpoints: round trip, corrupt/foreign/newer files, atomic saves
(failure midway, process killed midway) and device independence."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

import snn_core
from snn_core.checkpoint import FORMAT, FORMAT_VERSION, CheckpointError, load_checkpoint, save_checkpoint, seal
from snn_core.config import TrainConfig
from snn_core.training import Trainer, restore_trainer

REPO = Path(snn_core.__file__).resolve().parent.parent


def _config(out_dir, **kw):
    base = dict(max_train=300, hidden=[64], epochs=2, batch_size=50, t_iter=2, quiet=True, seed=5,
                out_dir=str(out_dir))
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A trainer after one epoch (rewiring happened), with last.h5/best.h5 written."""
    out = tmp_path_factory.mktemp("ckpt_run")
    tr = Trainer(_config(out))
    tr.fit(epochs=1)
    assert tr.rewirer.n_events >= 1
    return tr, out / "last.h5"


@pytest.fixture
def ckpt(trained, tmp_path):
    """A private copy of the trained run's last.h5."""
    tr, last = trained
    p = tmp_path / "last.h5"
    shutil.copyfile(last, p)
    return p


def _temp_files(directory):
    return sorted(p.name for p in Path(directory).iterdir() if ".tmp" in p.name)


# ---------------------------------------------------------------------------
# round trip
# ---------------------------------------------------------------------------
def test_round_trip(trained, tmp_path):
    tr, _ = trained
    path = tmp_path / "rt.h5"
    save_checkpoint(path, tr)
    ck = load_checkpoint(path)
    assert ck["format_version"] == FORMAT_VERSION == 2
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == FORMAT
        assert int(f.attrs["format_version"]) == FORMAT_VERSION
        assert f.attrs["snn_core_version"] == snn_core.__version__
    assert ck["config"] == tr.config.to_dict()
    assert TrainConfig.from_dict(ck["config"]) == tr.config
    # network (CSR arrays, dtypes included) and best model
    state = tr.network_state()
    assert ck["network"].keys() == state.keys()
    for layer, arrays in state.items():
        assert ck["network"][layer].keys() == arrays.keys()
        for k, v in arrays.items():
            got = ck["network"][layer][k]
            assert got.dtype == v.dtype, f"{layer}.{k}"
            np.testing.assert_array_equal(got, v, err_msg=f"{layer}.{k}")
    assert ck["best"] is not None
    for layer, arrays in tr.best_state.items():
        for k, v in arrays.items():
            np.testing.assert_array_equal(ck["best"][layer][k], v)
    # optimizer
    opt = tr.optimizer.state_dict()
    assert ck["optimizer"]["iteration"] == opt["iteration"] == tr.iteration
    assert len(ck["optimizer"]["state"]) == len(opt["state"])
    for a, b in zip(ck["optimizer"]["state"], opt["state"]):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype
            np.testing.assert_array_equal(a[k], b[k])
    # rewirer
    rw = tr.rewirer.state_dict()
    assert ck["rewirer"]["meta"] == json.loads(json.dumps(rw["meta"]))
    assert ck["rewirer"]["arrays"].keys() == rw["arrays"].keys()
    for k, v in rw["arrays"].items():
        np.testing.assert_array_equal(ck["rewirer"]["arrays"][k], v, err_msg=k)
    # trainer bookkeeping
    t = ck["trainer"]
    assert (t["epoch"], t["iteration"], t["best_epoch"]) == (tr.epoch, tr.iteration, tr.best_epoch)
    assert t["best_val_accuracy"] == tr.best_val_accuracy
    assert t["train_seconds"] == tr.train_seconds
    assert t["metrics"] == tr.metrics


def test_save_leaves_no_temp_files_and_overwrites(trained, tmp_path):
    tr, _ = trained
    path = tmp_path / "x.h5"
    save_checkpoint(path, tr)
    save_checkpoint(path, tr)  # over an existing file
    assert _temp_files(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.h5"]
    load_checkpoint(path)


def test_copies_are_the_same_file_replaced_before_the_path(trained, tmp_path, monkeypatch):
    tr, _ = trained
    replaced, real = [], os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append(Path(b).name), real(a, b)))
    save_checkpoint(tmp_path / "last.h5", tr, copies=[tmp_path / "best.h5"])
    monkeypatch.undo()
    assert replaced == ["best.h5", "last.h5"]  # a crash between the two leaves last.h5 the older
    assert (tmp_path / "best.h5").read_bytes() == (tmp_path / "last.h5").read_bytes()
    assert load_checkpoint(tmp_path / "best.h5")["trainer"]["epoch"] == tr.epoch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.h5", "last.h5"]
    with pytest.raises(ValueError, match="copies must name other files"):
        save_checkpoint(tmp_path / "last.h5", tr, copies=[tmp_path / "." / "last.h5"])


def test_a_failed_copy_keeps_the_previous_files_and_leaves_no_temp_file(trained, ckpt, monkeypatch):
    tr, _ = trained
    before = ckpt.read_bytes()
    best = ckpt.with_name("best.h5")
    best.write_bytes(before)

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", full)
    with pytest.raises(OSError, match=f"saving checkpoint {best} failed .*intact"):
        save_checkpoint(ckpt, tr, copies=[best])
    monkeypatch.undo()
    assert ckpt.read_bytes() == before and best.read_bytes() == before
    assert _temp_files(ckpt.parent) == []


def test_save_accepts_str_path(trained, tmp_path):
    tr, _ = trained
    save_checkpoint(str(tmp_path / "s.h5"), tr)
    assert load_checkpoint(str(tmp_path / "s.h5"))["trainer"]["epoch"] == tr.epoch


# ---------------------------------------------------------------------------
# corrupt, foreign, newer, missing
# ---------------------------------------------------------------------------
def test_truncated_checkpoint(ckpt):
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(ckpt)
    assert str(ckpt) in str(e.value)
    with pytest.raises(CheckpointError):
        restore_trainer(ckpt)


@pytest.mark.parametrize("keep", [0, 100, 2048])
def test_heavily_truncated_checkpoint(ckpt, keep):
    ckpt.write_bytes(ckpt.read_bytes()[:keep])
    with pytest.raises(CheckpointError, match="checkpoint"):
        load_checkpoint(ckpt)


def test_random_bytes(tmp_path):
    p = tmp_path / "noise.h5"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p)
    assert str(p) in str(e.value)


def test_corrupted_middle_bytes(ckpt):
    # flip a block in the middle of the file: any error must still be a CheckpointError
    data = bytearray(ckpt.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 4096] = bytes(4096)
    data[4096:4096 + 512] = b"\xff" * 512
    ckpt.write_bytes(bytes(data))
    try:
        load_checkpoint(ckpt)
    except CheckpointError as e:
        assert str(ckpt) in str(e)


def test_foreign_hdf5_file(tmp_path):
    p = tmp_path / "foreign.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("weights", data=np.arange(10))
        f.attrs["format_version"] = 1
    with pytest.raises(CheckpointError, match="not an snn_core checkpoint"):
        load_checkpoint(p)


def test_newer_format_version(ckpt):
    with h5py.File(ckpt, "r+") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(CheckpointError, match="newer") as e:
        load_checkpoint(ckpt)
    assert "99" in str(e.value)
    with pytest.raises(CheckpointError, match="newer"):
        restore_trainer(ckpt)


def test_missing_group(ckpt):
    with h5py.File(ckpt, "r+") as f:
        del f["rewirer"]
    with pytest.raises(CheckpointError, match="rewirer"):
        load_checkpoint(ckpt)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere"):
        load_checkpoint(tmp_path / "nothere.h5")
    with pytest.raises(FileNotFoundError):
        restore_trainer(tmp_path / "nothere.h5")


def test_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises((FileNotFoundError, CheckpointError)):
        load_checkpoint(tmp_path)


# ---------------------------------------------------------------------------
# atomicity
# ---------------------------------------------------------------------------
def test_disk_full_midway_keeps_previous_checkpoint(trained, ckpt, monkeypatch):
    tr, _ = trained
    before = ckpt.read_bytes()
    calls = {"n": 0}
    real = h5py.Group.create_dataset

    def failing(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] > 3:  # the network's first arrays are written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **kw)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    with pytest.raises(OSError) as e:
        save_checkpoint(ckpt, tr)
    monkeypatch.undo()
    assert calls["n"] > 3
    msg = str(e.value)
    assert "intact" in msg and str(ckpt) in msg and "No space left" in msg
    assert e.value.errno == errno.ENOSPC
    assert ckpt.read_bytes() == before
    assert _temp_files(ckpt.parent) == []
    assert load_checkpoint(ckpt)["trainer"]["epoch"] == tr.epoch


def test_exception_in_state_dict_keeps_previous_checkpoint(trained, ckpt, monkeypatch):
    tr, _ = trained
    before = ckpt.read_bytes()

    def boom():
        raise RuntimeError("rewirer exploded")

    monkeypatch.setattr(tr.rewirer, "state_dict", boom)
    with pytest.raises(RuntimeError, match="rewirer exploded"):
        save_checkpoint(ckpt, tr)
    monkeypatch.undo()
    assert ckpt.read_bytes() == before
    assert _temp_files(ckpt.parent) == []


def test_failure_writing_new_file_leaves_nothing(trained, tmp_path, monkeypatch):
    tr, _ = trained
    monkeypatch.setattr(tr.rewirer, "state_dict", lambda: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError, match="intact"):
        save_checkpoint(tmp_path / "new.h5", tr)
    assert list(tmp_path.iterdir()) == []


def test_interrupt_midway_keeps_previous_checkpoint(trained, ckpt, monkeypatch):
    tr, _ = trained
    before = ckpt.read_bytes()

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(tr.rewirer, "state_dict", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(ckpt, tr)
    monkeypatch.undo()
    assert ckpt.read_bytes() == before
    assert _temp_files(ckpt.parent) == []


_KILL_CHILD = textwrap.dedent("""
    import os, signal, sys
    import h5py
    from snn_core.checkpoint import save_checkpoint
    from snn_core.training import restore_trainer

    path = sys.argv[1]
    tr = restore_trainer(path)
    tr.fit(epochs=2, checkpoint_dir=False)   # newer state than the file holds
    real = h5py.Group.create_dataset
    n = [0]

    def dying(self, *a, **kw):
        n[0] += 1
        if n[0] > 5:                         # killed after part of the new file is written
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, *a, **kw)

    h5py.Group.create_dataset = dying
    print("saving", flush=True)
    save_checkpoint(path, tr)
    print("NOT KILLED", flush=True)
""")


def test_process_killed_during_save_keeps_previous_checkpoint(ckpt):
    before = ckpt.read_bytes()
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _KILL_CHILD, str(ckpt)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert "saving" in proc.stdout, proc.stderr
    assert "NOT KILLED" not in proc.stdout
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
    assert ckpt.read_bytes() == before
    ck = load_checkpoint(ckpt)
    assert ck["trainer"]["epoch"] == 1
    # the killed process's half-written temp file is the only debris; it never shadows the checkpoint
    leftovers = _temp_files(ckpt.parent)
    assert all(name.startswith(".last.h5.tmp") for name in leftovers)
    restore_trainer(ckpt)


# ---------------------------------------------------------------------------
# device independence
# ---------------------------------------------------------------------------
def test_checkpoint_holds_no_device_data(ckpt):
    ck = load_checkpoint(ckpt)
    assert ck["config"]["device"] == "cpu"

    def walk(tree, where):
        if isinstance(tree, dict):
            for k, v in tree.items():
                walk(v, f"{where}/{k}")
        elif isinstance(tree, list):
            for i, v in enumerate(tree):
                walk(v, f"{where}/{i}")
        elif hasattr(tree, "dtype"):
            assert isinstance(tree, np.ndarray), f"{where}: {type(tree)} is not a host numpy array"

    walk({k: v for k, v in ck.items()}, "")


_CPU_ONLY_CHILD = textwrap.dedent("""
    import sys
    from snn_core.checkpoint import load_checkpoint
    from snn_core.training import restore_trainer
    ck = load_checkpoint(sys.argv[1])
    tr = restore_trainer(sys.argv[1], quiet=True)
    acc, _ = tr.evaluate(tr.x_test[:50], tr.y_test[:50])
    print("OK", tr.config.device, ck["config"]["device"], acc)
""")


def test_checkpoint_loads_without_gpu(ckpt):
    env = dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="", NUMBA_DISABLE_CUDA="1")
    proc = subprocess.run([sys.executable, "-c", _CPU_ONLY_CHILD, str(ckpt)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("OK cpu cpu")


def test_cuda_checkpoint_loads_on_cpu(ckpt):
    # a checkpoint written by a GPU run: only the config's device field differs
    with h5py.File(ckpt, "r+") as f:
        cfg = json.loads(f["config"].attrs["json"])
        cfg["device"] = "cuda"
        f["config"].attrs["json"] = json.dumps(cfg)
        seal(f)  # as the GPU run wrote it
    ck = load_checkpoint(ckpt)  # reading needs no GPU
    assert ck["config"]["device"] == "cuda"
    tr = restore_trainer(ckpt, device="cpu")
    assert tr.config.device == "cpu"
    assert tr.epoch == 1


# ---------------------------------------------------------------------------
# damaged content inside a well-formed HDF5 file
# ---------------------------------------------------------------------------
_RESTORE_CHILD = textwrap.dedent("""
    import sys
    from snn_core.training import restore_trainer
    try:
        restore_trainer(sys.argv[1], quiet=True)
    except Exception as e:
        print("RAISED", type(e).__name__, isinstance(e, ValueError), str(e)[:300], flush=True)
        sys.exit(0)
    print("LOADED", flush=True)
""")


@pytest.mark.parametrize("group", ["network", "best"])
def test_corrupt_csr_indptr_is_a_clean_error(ckpt, group):
    # a damaged indptr (one entry past nnz) must give a ValueError/CheckpointError, not a
    # C++ exception from scipy followed by heap corruption that aborts the interpreter.
    # Run in a child process because the failure mode is a crash.
    with h5py.File(ckpt, "r+") as f:
        d = f[f"{group}/fc1/indptr"]
        a = d[()]
        a[3] = a[-1] + 100
        d[...] = a
        seal(f)  # valid digests: the structure check itself must catch it
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", _RESTORE_CHILD, str(ckpt)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, f"restore crashed the interpreter (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
    assert proc.stdout.startswith("RAISED"), proc.stdout
    _, name, is_value_error, *_ = proc.stdout.split(maxsplit=3)
    assert is_value_error == "True", f"{name} is not a ValueError/CheckpointError: {proc.stdout}"


def test_inconsistent_array_lengths_are_value_errors(ckpt):
    with h5py.File(ckpt, "r+") as f:
        a = f["network/fc1/data"][()]
        del f["network/fc1/data"]
        f["network/fc1/data"] = a[:-3]
        seal(f)
    with pytest.raises(ValueError):
        restore_trainer(ckpt)


def test_optimizer_state_of_wrong_size_is_rejected(ckpt):
    with h5py.File(ckpt, "r+") as f:
        g = f["optimizer/0"]
        k = next(iter(g.keys()))
        a = g[k][()]
        del g[k]
        g[k] = a[:-1]
        seal(f)  # consistent digests: the size check itself must catch it
    with pytest.raises(ValueError, match="optimizer state"):
        restore_trainer(ckpt)


@pytest.mark.parametrize("attr", ["epoch", "metrics", "best_val_accuracy"])
def test_missing_trainer_attribute_is_checkpoint_error(ckpt, attr):
    # an incomplete /trainer group is a damaged checkpoint: CheckpointError naming the file
    # (a bare KeyError escapes the CLI's error handling as a traceback)
    with h5py.File(ckpt, "r+") as f:
        del f["trainer"].attrs[attr]
    with pytest.raises(CheckpointError) as e:
        restore_trainer(ckpt)
    assert str(ckpt) in str(e.value)


def test_missing_network_array_is_checkpoint_error(ckpt):
    with h5py.File(ckpt, "r+") as f:
        del f["network/fc1/indices"]
    with pytest.raises(CheckpointError) as e:
        restore_trainer(ckpt)
    assert str(ckpt) in str(e.value)
