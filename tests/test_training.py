"""Trainer end to end: determinism, exact resume, static/dense controls, the
validation split, summary.json, divergence handling and bad input.

Every run is tiny (a few hundred samples, one 64-neuron hidden layer, 1-2
epochs) so the whole file runs in seconds.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from snn_core.checkpoint import load_checkpoint, save_checkpoint
from snn_core.training import restore_trainer
from snn_core.config import TrainConfig
from snn_core.data.datasets import MNIST_FILES, Dataset
from snn_core.data.idx import write_idx
from snn_core.layers import SparseLinear
from snn_core.training import TrainingDiverged, Trainer, _seed

TIMING = ("epoch_seconds", "samples_per_s")


def small_config(out_dir, **kw):
    """A run of 16 iterations (360 train samples, batch 50, 2 epochs) with
    rewiring every 3 iterations until iteration 12 -> 3 events."""
    base = dict(max_train=400, hidden=[64], epochs=2, batch_size=50, t_iter=3, quiet=True, seed=3,
                out_dir=str(out_dir))
    base.update(kw)
    return TrainConfig(**base)


# ---------------------------------------------------------------------------
# comparison helpers
# ---------------------------------------------------------------------------
def assert_arrays_identical(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} != {b.dtype}"
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    # bitwise: compare the raw bytes, so -0.0 vs 0.0 or NaN payloads count too
    assert a.tobytes() == b.tobytes(), f"{what}: values differ"


def assert_state_identical(sa, sb, what="network"):
    assert sa.keys() == sb.keys(), f"{what}: layers {sorted(sa)} != {sorted(sb)}"
    for layer in sa:
        assert sa[layer].keys() == sb[layer].keys(), f"{what}.{layer}: keys differ"
        for k in sa[layer]:
            assert_arrays_identical(sa[layer][k], sb[layer][k], f"{what}.{layer}.{k}")


def assert_metrics_equal(ma, mb, skip=TIMING):
    assert ma.keys() == mb.keys()
    for k in ma:
        if k in skip:
            continue
        assert list(ma[k]) == list(mb[k]), f"metrics[{k!r}]: {ma[k]} != {mb[k]}"


def assert_history_identical(ra, rb):
    ha, hb = ra.history.as_arrays(), rb.history.as_arrays()
    assert ha.keys() == hb.keys()
    for k in ha:
        assert_arrays_identical(ha[k], hb[k], f"rewirer history column {k!r}")
    assert ra.history.layer_names == rb.history.layer_names
    for name in ra.history.layer_names:
        snaps_a, snaps_b = ra.history.snapshots(name), rb.history.snapshots(name)
        assert len(snaps_a) == len(snaps_b), f"{name}: number of snapshots differs"
        for (ia, pa, xa), (ib, pb, xb) in zip(snaps_a, snaps_b):
            assert ia == ib
            assert_arrays_identical(pa, pb, f"{name} snapshot {ia} indptr")
            assert_arrays_identical(xa, xb, f"{name} snapshot {ia} indices")


def assert_trainers_identical(a: Trainer, b: Trainer):
    assert (a.epoch, a.iteration) == (b.epoch, b.iteration)
    assert_state_identical(a.network_state(), b.network_state())
    # optimizer: step counter and every state array (Adam m and v per parameter)
    assert a.optimizer.iteration == b.optimizer.iteration
    assert len(a.optimizer.state) == len(b.optimizer.state)
    for i, (sa, sb) in enumerate(zip(a.optimizer.state, b.optimizer.state)):
        assert sa.keys() == sb.keys()
        for k in sa:
            assert_arrays_identical(sa[k], sb[k], f"optimizer.state[{i}][{k!r}]")
    # rewirer: events, RNG and the whole history
    assert a.rewirer.n_events == b.rewirer.n_events
    assert a.rewirer.rng.bit_generator.state == b.rewirer.rng.bit_generator.state
    assert_history_identical(a.rewirer, b.rewirer)
    assert_metrics_equal(a.metrics, b.metrics)
    assert (a.best_val_accuracy, a.best_epoch) == (b.best_val_accuracy, b.best_epoch)
    assert (a.best_state is None) == (b.best_state is None)
    if a.best_state is not None:
        assert_state_identical(a.best_state, b.best_state, "best_state")


# ---------------------------------------------------------------------------
# determinism and exact resume
# ---------------------------------------------------------------------------
def test_same_seed_same_config_is_bit_identical(tmp_path):
    runs = []
    for name in ("a", "b"):
        tr = Trainer(small_config(tmp_path / name))
        summary = tr.fit(checkpoint_dir=False)
        runs.append((tr, summary))
    (a, sa), (b, sb) = runs
    assert a.rewirer.n_events >= 1, "the test must exercise rewiring"
    assert a.epoch == 2
    assert_trainers_identical(a, b)
    for k in ("test_accuracy", "test_loss", "best_val_accuracy", "best_epoch", "density", "layers",
              "rewiring_events", "iterations"):
        assert sa[k] == sb[k], k


def test_different_seed_differs(tmp_path):
    a = Trainer(small_config(tmp_path, epochs=1, seed=1))
    b = Trainer(small_config(tmp_path, epochs=1, seed=2))
    sa, sb = a.network_state(), b.network_state()
    assert not np.array_equal(sa["fc1"]["indices"], sb["fc1"]["indices"])


@pytest.mark.parametrize("variant", [
    dict(grow="random"),
    dict(grow="gradient"),
    dict(grow="momentum"),
    dict(grow="gradient", prune="gradient"),
    dict(prune="set", optimizer="sgd", schedule="cosine"),
    dict(augment="shift"),
], ids=["random", "gradient", "momentum", "gradient-gradient", "set-sgd", "augment-shift"])
def test_resume_is_exact(tmp_path, variant):
    a = Trainer(small_config(tmp_path / "a", **variant))
    a.fit(checkpoint_dir=False)
    assert a.rewirer.n_events >= 2

    b = Trainer(small_config(tmp_path / "b", **variant))
    b.fit(epochs=1)
    assert b.epoch == 1
    last = tmp_path / "b" / "last.h5"
    assert last.is_file()
    events_at_stop = b.rewirer.n_events
    assert 1 <= events_at_stop < a.rewirer.n_events, "rewiring must happen both before and after the stop"
    del b
    b = restore_trainer(last)
    assert (b.epoch, b.iteration) == (1, 8)
    b.fit()
    assert b.epoch == 2
    assert_trainers_identical(a, b)


def test_restore_without_training_reproduces_saved_state(tmp_path):
    tr = Trainer(small_config(tmp_path))
    tr.fit(epochs=1)
    back = restore_trainer(tmp_path / "last.h5")
    assert_trainers_identical(tr, back)
    assert back.config == tr.config


def test_shift_augmentation_translates_training_batches_only(tmp_path):
    from snn_core.data.augment import translate
    tr = Trainer(small_config(tmp_path, augment="shift", shift_pixels=2))
    x = tr.x_train[:16]
    imgs = x.reshape(-1, 28, 28)
    a = tr.augment(x)
    assert a.shape == x.shape and a.dtype == x.dtype and not np.array_equal(a, x)
    shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
    for n in range(len(x)):  # every sample is its image moved by some (dy, dx) within +-2 pixels
        assert any(np.array_equal(a[n].reshape(28, 28), translate(imgs[n:n + 1], [s])[0]) for s in shifts), n
    np.testing.assert_array_equal(tr.augment(x), a)  # drawn from (seed, iteration): the same again
    tr.iteration += 1
    assert not np.array_equal(tr.augment(x), a)  # and new draws at the next iteration
    plain = Trainer(small_config(tmp_path / "plain"))
    np.testing.assert_array_equal(plain.augment(x), x)
    np.testing.assert_array_equal(tr.x_val, plain.x_val)  # validation and test images are never augmented
    tr.fit(checkpoint_dir=False)
    plain.fit(checkpoint_dir=False)
    assert not np.array_equal(tr.network_state()["fc1"]["data"], plain.network_state()["fc1"]["data"])


def test_augment_needs_an_image_shape(tmp_path):
    ds = Dataset(np.zeros((40, 10), np.uint8), np.arange(40) % 2, np.zeros((10, 10), np.uint8), np.arange(10) % 2,
                 "ten-feature", "test")
    with pytest.raises(ValueError, match="input_shape"):
        Trainer(small_config(tmp_path, augment="shift", max_train=None), dataset=ds)


# ---------------------------------------------------------------------------
# controls
# ---------------------------------------------------------------------------
def test_static_sparse_structure_never_changes(tmp_path):
    tr = Trainer(small_config(tmp_path, rewiring=False))
    assert not tr.rewirer.enabled
    before = tr.network_state()
    tr.fit(checkpoint_dir=False)
    after = tr.network_state()
    assert tr.rewirer.n_events == 0
    assert len(tr.rewirer.history.as_arrays()["iteration"]) == 0
    for name, s in before.items():
        if "indptr" in s:
            assert_arrays_identical(s["indptr"], after[name]["indptr"], f"{name}.indptr")
            assert_arrays_identical(s["indices"], after[name]["indices"], f"{name}.indices")
            assert not np.array_equal(s["data"], after[name]["data"]), f"{name}: weights did not train"
    assert all(d == pytest.approx(tr.metrics["density"][0]) for d in tr.metrics["density"])


def test_dense_network_trains(tmp_path):
    tr = Trainer(small_config(tmp_path, sparse=False))
    assert not tr.network.sparse_layers()
    before = tr.network_state()
    summary = tr.fit()
    assert tr.rewirer.n_events == 0
    assert summary["density"] == pytest.approx(1.0)
    assert all(layer["density"] == pytest.approx(1.0) for layer in summary["layers"])
    after = tr.network_state()
    for name, s in before.items():
        assert "weight" in s
        assert np.isfinite(after[name]["weight"]).all()
        assert not np.array_equal(s["weight"], after[name]["weight"]), f"{name}: weights did not train"
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert (tmp_path / "last.h5").is_file() and (tmp_path / "best.h5").is_file()
    # dense checkpoints restore too
    back = restore_trainer(tmp_path / "last.h5")
    assert_state_identical(tr.network_state(), back.network_state())


# ---------------------------------------------------------------------------
# validation split, best epoch, summary.json
# ---------------------------------------------------------------------------
def _indexed_dataset(n_train=200, n_test=50, n_features=784, n_classes=10):
    """Images whose first two pixels spell out the row index (to identify rows)."""
    def make(n, offset):
        x = np.zeros((n, n_features), np.uint8)
        idx = np.arange(n) + offset
        x[:, 0], x[:, 1] = idx % 256, idx // 256
        x[:, 2:] = np.random.default_rng(offset).integers(0, 256, (n, n_features - 2), dtype=np.uint8)
        y = (np.arange(n) % n_classes).astype(np.uint8)
        return x, y

    xtr, ytr = make(n_train, 0)
    xte, yte = make(n_test, 10_000)
    return Dataset(x_train=xtr, y_train=ytr, x_test=xte, y_test=yte, name="indexed", source="test")


def _row_ids(x_float):
    px = np.rint(x_float[:, :2] * 255).astype(np.int64)
    return px[:, 0] + 256 * px[:, 1]


def test_validation_split_is_ten_percent_and_disjoint(tmp_path):
    ds = _indexed_dataset(n_train=200)
    tr = Trainer(small_config(tmp_path, max_train=None, epochs=1), dataset=ds)
    tr_ids, va_ids = _row_ids(tr.x_train), _row_ids(tr.x_val)
    assert len(va_ids) == 20 and len(tr_ids) == 180
    assert len(set(va_ids)) == 20 and len(set(tr_ids)) == 180
    assert not set(tr_ids) & set(va_ids)
    assert set(tr_ids) | set(va_ids) == set(range(200))
    # random, not the last 10% of the file
    assert set(va_ids) != set(range(180, 200))
    # labels follow their images
    np.testing.assert_array_equal(tr.y_train, tr_ids % 10)
    np.testing.assert_array_equal(tr.y_val, va_ids % 10)
    # the test set is untouched
    np.testing.assert_array_equal(_row_ids(tr.x_test), np.arange(50) + 10_000)


def test_validation_split_with_max_train(tmp_path):
    tr = Trainer(small_config(tmp_path, max_train=300, epochs=1))
    assert len(tr.x_val) == 30 and len(tr.x_train) == 270


def test_summary_json_and_best_epoch(tmp_path):
    tr = Trainer(small_config(tmp_path, epochs=3))
    summary = tr.fit()
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for key in ("test_accuracy", "best_val_accuracy", "best_epoch", "density", "layers", "rewiring_events",
                "train_seconds", "train_samples_per_s", "config"):
        assert key in on_disk, key
    assert on_disk["rewiring_events"] == tr.rewirer.n_events >= 1
    assert on_disk["config"] == tr.config.to_dict()
    assert TrainConfig.from_dict(on_disk["config"]) == tr.config
    assert on_disk["train_seconds"] > 0 and on_disk["train_samples_per_s"] > 0
    assert 0.0 <= on_disk["test_accuracy"] <= 1.0
    # layers: name, shape, nnz, density; global density = sum nnz / sum sizes
    names = [layer.name for layer in tr.network.layers if isinstance(layer, SparseLinear)]
    assert [layer["name"] for layer in on_disk["layers"]] == names
    nnz = sizes = 0
    for entry, layer in zip(on_disk["layers"], tr.network.sparse_layers()):
        assert entry["shape"] == [layer.out_features, layer.in_features]
        assert entry["nnz"] == layer.nnz
        assert entry["density"] == pytest.approx(layer.nnz / (layer.out_features * layer.in_features))
        nnz += entry["nnz"]
        sizes += entry["shape"][0] * entry["shape"][1]
    assert on_disk["density"] == pytest.approx(nnz / sizes, rel=1e-12)
    assert on_disk["density"] == pytest.approx(tr.config.density, abs=0.002)  # exact counts at the target
    # best epoch / best val agree with the per-epoch metrics
    val = on_disk["metrics"]["val_accuracy"]
    assert len(val) == 3 and on_disk["metrics"]["epoch"] == [1, 2, 3]
    assert on_disk["best_val_accuracy"] == max(val)
    assert on_disk["best_epoch"] == int(np.argmax(val)) + 1  # first epoch reaching the max
    assert summary["best_epoch"] == on_disk["best_epoch"]
    # best.h5 holds the best epoch's weights
    best = load_checkpoint(tmp_path / "best.h5")
    assert best["trainer"]["epoch"] == on_disk["best_epoch"]
    assert_state_identical(best["network"], tr.best_state)
    # the summary's test accuracy is the best-validation model's
    back = restore_trainer(tmp_path / "last.h5")
    back.load_network_state(back.best_state)
    acc, _ = back.evaluate(back.x_test, back.y_test)
    assert acc == on_disk["test_accuracy"]


# ---------------------------------------------------------------------------
# divergence
# ---------------------------------------------------------------------------
def test_nan_weights_raise_and_keep_last_good_checkpoint(tmp_path):
    tr = Trainer(small_config(tmp_path))
    tr.fit(epochs=1)
    last, best = tmp_path / "last.h5", tmp_path / "best.h5"
    good_last, good_best = last.read_bytes(), best.read_bytes()
    w = tr.network.layers[0].weight.data
    w[: len(w) // 2] = np.nan
    with pytest.raises(ValueError, match="NaN/Inf"):
        tr.fit()
    assert last.read_bytes() == good_last
    assert best.read_bytes() == good_best
    assert load_checkpoint(last)["trainer"]["epoch"] == 1
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_huge_learning_rate_diverges_with_clear_error(tmp_path):
    # plain SGD with an absurd step overflows float32 weights to Inf
    tr = Trainer(small_config(tmp_path, optimizer="sgd", momentum=0.0, lr=1e38, lr_end=1e38,
                              schedule="constant", epochs=1))
    with pytest.raises(TrainingDiverged, match="diverged at epoch 1, iteration 1: loss"):
        tr.fit()
    assert not (tmp_path / "last.h5").exists()


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------
def _write_idx_dir(root, n_train=40, n_test=20, hw=(28, 28), label_max=9, skip=()):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, *hw), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % (label_max + 1)).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, *hw), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % (label_max + 1)).astype(np.uint8),
    }
    for role, stem in MNIST_FILES.items():
        if role not in skip:
            write_idx(root / stem, arrays[role])
    return root


def test_missing_data_dir(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        Trainer(small_config(tmp_path, data_dir=str(missing)))


def test_missing_file_in_data_dir(tmp_path):
    d = _write_idx_dir(tmp_path / "idx", skip=("test_labels",))
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        Trainer(small_config(tmp_path, data_dir=str(d)))


def test_idx_dir_trains(tmp_path):
    d = _write_idx_dir(tmp_path / "idx", n_train=60, hw=(28, 28))
    tr = Trainer(small_config(tmp_path / "run", data_dir=str(d), max_train=None, epochs=1))
    assert tr.dataset_name == "idx" and len(tr.x_train) == 54  # named after its directory and len(tr.x_val) == 6
    tr.fit()
    assert (tmp_path / "run" / "last.h5").is_file()


def test_labels_out_of_range(tmp_path):
    d = _write_idx_dir(tmp_path / "idx", label_max=12)
    with pytest.raises(ValueError, match=r"out of range.*12"):
        Trainer(small_config(tmp_path, data_dir=str(d)))


def test_image_size_mismatch_between_checkpoint_and_data(tmp_path):
    tr = Trainer(small_config(tmp_path / "run"))
    tr.fit(epochs=1)
    d = _write_idx_dir(tmp_path / "idx10", hw=(10, 10))
    with pytest.raises(ValueError, match="features") as e:
        restore_trainer(tmp_path / "run" / "last.h5", data_dir=str(d))
    assert "784" in str(e.value) and "100" in str(e.value)


def test_output_dir_that_cannot_be_created(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    out = afile / "sub"
    tr = Trainer(small_config(out, epochs=1))
    with pytest.raises(OSError, match="output directory") as e:
        tr.fit()
    assert str(out) in str(e.value)
    assert tr.epoch == 0, "must fail before training, not after an epoch of work"
    # out_dir itself being a regular file
    tr = Trainer(small_config(afile, epochs=1))
    with pytest.raises(OSError, match="output directory"):
        tr.fit()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_output_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        tr = Trainer(small_config(ro, epochs=1))
        with pytest.raises(PermissionError, match="not writable"):
            tr.fit()
    finally:
        ro.chmod(0o700)


def test_unknown_config_key():
    with pytest.raises(ValueError, match="bogus"):
        TrainConfig.from_dict({"bogus": 1})
    with pytest.raises(TypeError):
        TrainConfig(bogus=1)


@pytest.mark.parametrize("key, value", [
    ("density", 0), ("density", 0.0), ("density", 1.5), ("density", -0.1),
    ("zeta0", 1), ("zeta0", 1.0), ("zeta0", -0.1),
    ("t_iter", 0), ("t_iter", -3), ("t_iter", 2.5),
    ("prune", "largest"), ("grow", "magic"),
    ("epochs", 0), ("val_fraction", 0.0), ("val_fraction", 1.0), ("lr", float("nan")),
    ("hidden", [0]), ("hidden", [64, -1]), ("hidden", 64), ("fc_hidden", [0]), ("fc_hidden", 256), ("fc_hidden", [True]),
    ("encoder", "morse"), ("device", "tpu"), ("max_train", 5), ("pool", "median"),
    ("layer_density", {"conv2": 0}), ("layer_density", {"conv2": 1.5}), ("layer_density", {"conv2": True}),
    ("layer_density", ["conv2", 0.3]), ("layer_density", {"": 0.3}),
])
def test_bad_config_values_are_rejected(key, value):
    with pytest.raises(ValueError, match=key):
        TrainConfig.from_dict({key: value})


def test_good_config_edge_values():
    TrainConfig(density=1.0, zeta0=0.0, t_iter=1)
    assert TrainConfig.from_dict({"density": 1}).density == 1.0  # JSON/TOML int for a float


def test_class_count_mismatch_between_checkpoint_and_data(tmp_path):
    from snn_core.data.datasets import load_embedded

    full = load_embedded()
    tr_mask, te_mask = full.y_train < 5, full.y_test < 5
    five = Dataset(full.x_train[tr_mask], full.y_train[tr_mask], full.x_test[te_mask], full.y_test[te_mask],
                   name="five", source="test")
    tr = Trainer(small_config(tmp_path, epochs=1, max_train=200), dataset=five)
    assert tr.network.out_features == 5
    tr.fit()
    with pytest.raises(ValueError) as e:
        restore_trainer(tmp_path / "last.h5", dataset=full)
    msg = str(e.value)
    assert "fc2" in msg or "classes" in msg
    assert "np.int64" not in msg, f"numpy scalar reprs leak into the message: {msg}"


def test_min_per_row_guarantees_every_output_neuron_an_input(tmp_path):
    # 0.05% of 784x64 + 64x10 is 26 connections: fewer than the 64 hidden neurons
    with pytest.raises(ValueError, match="min_per_row"):
        Trainer(small_config(tmp_path, density=0.0005))
    tr = Trainer(small_config(tmp_path, density=0.0005, min_per_row=1))
    for layer in tr.network.sparse_layers():
        assert np.diff(layer.weight.indptr).min() >= 1, layer.name


def test_kept_validation_spikes_change_nothing(tmp_path, monkeypatch):
    # The validation set's spikes are drawn once and kept (below VAL_SPIKES_BYTES); a run that draws them
    # again after every epoch, as the masks of the inputs read change with rewiring, ends in the same bits
    kw = dict(density=0.02, epochs=3, val_fraction=0.6, batch_size=40)  # 240 validation images: 2 batches
    a = Trainer(small_config(tmp_path / "a", **kw))
    a.fit()
    kept = a._val_spikes[2]
    assert len(kept) == math.ceil(len(a.x_val) / a.eval_batch_size()) > 1
    monkeypatch.setattr(Trainer, "VAL_SPIKES_BYTES", 0)
    b = Trainer(small_config(tmp_path / "b", **kw))
    b.fit()
    assert "_val_spikes" not in vars(b)
    assert_trainers_identical(a, b)
    assert_metrics_equal(a.metrics, b.metrics)
    assert a.evaluate(a.x_val, a.y_val) == b.evaluate(b.x_val, b.y_val)
    # kept spikes are not drawn again; other sets (the test set) are never kept
    monkeypatch.setattr(a, "encode", lambda *args, **kw: pytest.fail("validation spikes drawn again"))
    a.evaluate(a.x_val, a.y_val)
    monkeypatch.undo()
    a.evaluate(a.x_test, a.y_test)
    assert a._val_spikes[2] is kept and a._val_spikes[0] is a.x_val


def test_encoding_only_the_inputs_read_changes_nothing(tmp_path, monkeypatch):
    # At density 0.02 many pixels have no connection into a hidden neuron that reaches the output; the
    # trainer then draws only the inputs the forward reads. A run that draws every input (the network
    # says it reads them all) must end in the same bits: weights, optimizer state, metrics, rewiring.
    from snn_core.network import Network

    kw = dict(density=0.02, epochs=2)
    a = Trainer(small_config(tmp_path / "a", **kw))
    read = a.network.input_rows_needed()
    assert read is not None and 0 < read.sum() < read.size  # the case under test: some inputs are not read
    a.fit()
    drawn = []
    original = Network.input_rows_needed

    def every_input(self):
        drawn.append(original(self))
        return None

    monkeypatch.setattr(Network, "input_rows_needed", every_input)
    b = Trainer(small_config(tmp_path / "b", **kw))
    b.fit()
    assert drawn and any(m is not None for m in drawn)  # b would have skipped inputs
    assert_trainers_identical(a, b)
    assert_metrics_equal(a.metrics, b.metrics)
    # spikes asked for without a forward (plots, energy reports) are every input's, whatever the buffer held
    monkeypatch.setattr(Network, "input_rows_needed", original)
    x = a._encode(a.x_test[:50], (3, 0), for_forward=True).copy()
    full = a._encode(a.x_test[:50], (3, 0))
    np.testing.assert_array_equal(full, a.encode(a.x_test[:50], a.config.steps, seed=_seed(a.config.seed, 3, 0)))
    rows = a.network.input_rows_needed().view(bool)
    np.testing.assert_array_equal(x[..., rows], full[..., rows])
