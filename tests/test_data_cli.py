"""``--data-dir`` for CIFAR-10/100 and DVS-CIFAR10 folders: detection, loading, the DVS frame cache,
the ``frames`` encoder, frame sequences in the Trainer, and ``snn-esl train`` on each kind of folder."""

import json

import numpy as np
import pytest

import snn_core.data.dvs as dvs_module
from snn_core.cli import main
from snn_core.config import TrainConfig
from snn_core.data import (
    Dataset,
    detect_data_dir,
    frame_cache_dir,
    frame_cache_name,
    frames_encode,
    get_encoder,
    hflip,
    load_cifar10_dvs,
    load_dataset,
    load_idx_dir,
    make_events,
    roll,
    write_aedat,
    write_cifar,
    write_idx,
)
from snn_core.training import Trainer

N_CLASSES = {"cifar10": 10, "cifar100": 100}


def _cifar(root, rng, name="cifar10", fmt="python", n_train=30, n_test=10):
    """Write a tiny CIFAR set into ``root``; returns (data folder, x_train, y_train, x_test, y_test)."""
    c = N_CLASSES[name]
    xtr = rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8)
    xte = rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8)
    ytr, yte = np.arange(n_train) % 3 * (c // 10 + 1), np.arange(n_test) % 3 * (c // 10 + 1)
    return write_cifar(root, name, fmt, xtr, ytr, xte, yte), xtr, ytr, xte, yte


def _dvs(root, rng, classes=("airplane", "bird", "cat"), per_class=10):
    """Write a tiny folder-per-class DVS set; returns {relative file: events}."""
    events = {}
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            n = int(rng.integers(40, 80))
            ev = make_events(np.sort(rng.integers(0, 100_000, n)), rng.integers(0, 128, n), rng.integers(0, 128, n),
                             rng.integers(0, 2, n))
            write_aedat(root / c / f"cifar10_{c}_{i}.aedat", ev)
            events[f"{c}/cifar10_{c}_{i}.aedat"] = ev
    return events


def _frames_dataset(rng, n=40, n_test=10, T=3, shape=(2, 8, 8)):
    """In-memory frame sequences (N, T, C*H*W) float32 counts, 2 classes."""
    F = int(np.prod(shape))
    x = rng.integers(0, 4, (n + n_test, T, F)).astype(np.float32)
    y = (np.arange(n + n_test) % 2).astype(np.uint8)
    return Dataset(x[:n], y[:n], x[n:], y[n:], "frames", "generated", shape[1:])


def _images_dataset(rng, n=40, n_test=10, F=64):
    x = rng.integers(0, 256, (n + n_test, F), dtype=np.uint8)
    y = (np.arange(n + n_test) % 2).astype(np.uint8)
    return Dataset(x[:n], y[:n], x[n:], y[n:], "images", "generated", (8, 8))


# --------------------------------------------------------------------------- detection and loading


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("fmt", ["python", "binary"])
def test_load_dataset_reads_a_cifar_folder(tmp_path, rng, name, fmt):
    folder, xtr, ytr, xte, yte = _cifar(tmp_path, rng, name, fmt)
    for root in (tmp_path, folder):  # the extraction folder or the data folder itself
        assert detect_data_dir(root) == name
        ds = load_dataset(root)
        assert ds.name == name and ds.source == str(folder.resolve()) and ds.image_shape == (32, 32)
        assert ds.x_train.shape == (30, 3 * 32 * 32) and ds.x_train.dtype == np.uint8
        assert ds.x_test.shape == (10, 3 * 32 * 32) and ds.n_features == 3072
        np.testing.assert_array_equal(ds.x_train, xtr.reshape(30, -1))  # channel-major: R plane, G plane, B plane
        np.testing.assert_array_equal(ds.x_test[3], np.concatenate([xte[3, c].ravel() for c in range(3)]))
        assert ds.y_train.dtype == np.uint8 and ds.y_train.tolist() == ytr.tolist()
        assert ds.y_test.tolist() == yte.tolist()


def test_idx_folder_loads_as_before(tmp_path, rng):
    x = rng.integers(0, 256, (20, 6, 6), dtype=np.uint8)
    y = (np.arange(20) % 4).astype(np.uint8)
    for stem, arr in (("train-images-idx3-ubyte", x[:15]), ("train-labels-idx1-ubyte", y[:15]),
                      ("t10k-images-idx3-ubyte", x[15:]), ("t10k-labels-idx1-ubyte", y[15:])):
        write_idx(tmp_path / stem, arr)
    assert detect_data_dir(tmp_path) == "idx"
    got, want = load_dataset(tmp_path), load_idx_dir(tmp_path)
    assert got.name == want.name and got.source == want.source and got.image_shape == (6, 6)
    for a, b in zip(got[:4], want[:4]):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype == np.uint8
    # a partial IDX folder keeps its precise error
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="missing MNIST file, looked for 't10k-labels-idx1-ubyte'"):
        load_dataset(tmp_path)


def test_load_dataset_reads_a_dvs_folder(tmp_path, rng):
    events = _dvs(tmp_path / "dvs", rng)
    assert detect_data_dir(tmp_path / "dvs") == "dvs"
    ds = load_dataset(tmp_path / "dvs", steps=3)
    assert ds.name == "dvs" and ds.image_shape == (48, 48) and ds.n_features == 2 * 48 * 48
    assert ds.x_train.shape == (27, 3, 2 * 48 * 48) and ds.x_test.shape == (3, 3, 2 * 48 * 48)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.uint8
    assert np.bincount(ds.y_train).tolist() == [9, 9, 9] and ds.y_test.tolist() == [0, 1, 2]
    ref = load_cifar10_dvs(tmp_path / "dvs", T=3, classes=None)
    np.testing.assert_array_equal(ds.x_train, ref.x_train.reshape(27, 3, -1))
    # event counts as integrated, not rescaled: each sample sums to its number of events
    for i, f in enumerate(ref.files_train):
        assert ds.x_train[i].sum() == events[f].size
    with pytest.raises(ValueError, match="DVS folder .* pass steps=T"):
        load_dataset(tmp_path / "dvs")


def test_published_dvs_class_folders_keep_their_label_order(tmp_path, rng):
    from snn_core.data import CIFAR10_DVS_CLASSES

    _dvs(tmp_path, rng, classes=CIFAR10_DVS_CLASSES[::-1], per_class=2)
    (tmp_path / "notes").mkdir()  # another folder next to the ten published ones is ignored
    ds = load_dataset(tmp_path, steps=2)
    assert ds.name == "cifar10-dvs" and ds.y_train.tolist() == np.repeat(np.arange(10), 2).tolist()
    assert ds.x_test.shape == (0, 2, 2 * 48 * 48)  # 2 per class: ceil(0.9 * 2) = 2 train, none left to test


def test_a_folder_that_is_neither_is_one_clear_error(tmp_path, rng, capsys):
    (tmp_path / "readme.txt").write_text("hello")
    (tmp_path / "empty_class").mkdir()  # a sub-folder without recordings is no DVS set
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.aedat").write_bytes(b"")  # hidden folders never count
    with pytest.raises(FileNotFoundError) as e:
        load_dataset(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{tmp_path}: no training data found")
    for expected in ("IDX files", "CIFAR-10/100 batches", "DVS class folders"):
        assert expected in msg
    with pytest.raises(FileNotFoundError, match="data folder not found: .*nowhere"):
        load_dataset(tmp_path / "nowhere")
    both = tmp_path / "both"
    _cifar(both, rng, "cifar10", "binary")
    _cifar(both, rng, "cifar100", "python")
    with pytest.raises(ValueError, match="holds both CIFAR-10 and CIFAR-100"):
        load_dataset(both)
    # through the command line: one line on stderr, exit 1
    code = main(["train", "--data-dir", str(tmp_path), "--epochs", "1", "--quiet", "--out-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "no training data found" in err and "Traceback" not in err


# --------------------------------------------------------------------------- DVS frame cache


def test_dvs_cache_is_written_once_reused_and_keyed_on_T(tmp_path, rng, monkeypatch):
    root = tmp_path / "dvs"
    _dvs(root, rng)
    first = load_dataset(root, steps=3)
    cache = root / ".snn_cache" / frame_cache_name(3, (48, 48), "number", 0.9, np.float32)
    assert frame_cache_dir(root) == root / ".snn_cache" and cache.is_file()
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # no temporary file left
    stamp = cache.stat().st_mtime_ns

    def no_reading(path, raw=False):
        raise AssertionError(f"read {path}")

    monkeypatch.setattr(dvs_module, "read_aedat", no_reading)
    again = load_dataset(root, steps=3)  # from the cache: no recording is read
    for a, b in zip(first[:4], again[:4]):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    assert again.name == first.name and again.source == first.source and cache.stat().st_mtime_ns == stamp
    with pytest.raises(AssertionError, match="read"):
        load_dataset(root, steps=2)  # another T never reads the T=3 file
    monkeypatch.undo()
    two = load_dataset(root, steps=2)
    assert two.x_train.shape[1] == 2 and (cache.parent / frame_cache_name(2)).is_file()
    np.testing.assert_array_equal(two.x_train.sum(axis=(1, 2)), first.x_train.sum(axis=(1, 2)))


def test_dvs_cache_is_rebuilt_when_stale_or_damaged(tmp_path, rng, monkeypatch):
    root = tmp_path / "dvs"
    _dvs(root, rng, classes=("a", "b"), per_class=5)
    load_dataset(root, steps=2)
    cache = frame_cache_dir(root) / frame_cache_name(2)
    calls = []
    real = dvs_module.read_aedat

    def counting(path, raw=False):
        calls.append(path.name)
        return real(path, raw)

    monkeypatch.setattr(dvs_module, "read_aedat", counting)
    write_aedat(root / "a" / "new.aedat", make_events([0, 1], [3, 4], [5, 6], [0, 1]))  # one more recording
    ds = load_dataset(root, steps=2)
    assert len(calls) == 11 and len(ds.x_train) + len(ds.x_test) == 11
    calls.clear()
    cache.write_bytes(cache.read_bytes()[:100])  # truncated: read again and rewritten
    assert len(load_dataset(root, steps=2).x_train) == len(ds.x_train) and len(calls) == 11
    calls.clear()
    load_dataset(root, steps=2)
    assert calls == []


def test_frame_cache_goes_to_the_user_cache_when_the_folder_is_read_only(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr("os.access", lambda path, mode: False)
    where = frame_cache_dir(tmp_path / "data")
    assert where.parent == tmp_path / "xdg" / "snn_core" / "dvs-frames" and len(where.name) == 16


# --------------------------------------------------------------------------- the frames encoder


def test_frames_encoder_layout_and_T_check(rng):
    x = rng.random((4, 3, 10), dtype=np.float32) * 5  # (batch, T, features), counts need not be in [0, 1]
    assert get_encoder("frames") is frames_encode
    s = frames_encode(x, 3)
    assert s.shape == (3, 4, 10) and s.dtype == np.float32
    for t in range(3):
        np.testing.assert_array_equal(s[t], x[:, t])
    base = s.base
    assert base.shape == (10, 3, 4) and base.flags.c_contiguous  # feature-major (features, T, batch)
    np.testing.assert_array_equal(s.transpose(2, 0, 1), base)
    buf = np.full((10, 3, 4), 7.0, np.float32)
    assert frames_encode(x, 3, out=buf).base is buf
    np.testing.assert_array_equal(buf, base)
    with pytest.raises(ValueError, match="samples have 3 frames but T \\(steps\\) is 5"):
        frames_encode(x, 5)
    with pytest.raises(ValueError, match="3-D \\(batch, T, features\\)"):
        frames_encode(x[:, 0], 3)
    with pytest.raises(ValueError, match="out must be"):
        frames_encode(x, 3, out=np.empty((4, 3, 10), np.float32))
    bad = x.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        frames_encode(bad, 3)
    assert TrainConfig(encoder="frames").encoder == "frames"
    with pytest.raises(ValueError, match="encoder: expected one of .*'frames'"):
        TrainConfig(encoder="frame")


# --------------------------------------------------------------------------- the Trainer on frame sequences


def test_trainer_rejects_mismatched_data_and_encoder(rng):
    frames, images = _frames_dataset(rng), _images_dataset(rng)
    cfg = dict(hidden=[8], epochs=1, quiet=True)
    with pytest.raises(ValueError, match="frame sequences .* --encoder frames, not 'bernoulli'") as e:
        Trainer(TrainConfig(steps=3, **cfg), dataset=frames)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="'frames' needs frame sequences .* static images"):
        Trainer(TrainConfig(encoder="frames", steps=3, **cfg), dataset=images)
    with pytest.raises(ValueError, match="steps: 5, but the data \\(frames\\) have 3 frames per sample"):
        Trainer(TrainConfig(encoder="frames", steps=5, **cfg), dataset=frames)


def test_trainer_keeps_frames_as_counts_and_splits_them(rng):
    ds = _frames_dataset(rng, n=40)
    tr = Trainer(TrainConfig(encoder="frames", steps=3, hidden=[8], epochs=1, max_train=30, quiet=True), dataset=ds)
    assert tr.x_train.shape == (27, 3, 128) and tr.x_val.shape == (3, 3, 128) and tr.x_test.shape == (10, 3, 128)
    assert tr.x_train.dtype == np.float32 and tr.x_train.max() == 3.0  # counts, not divided by 255
    assert tr.network.in_features == 128
    rows = {r.tobytes() for r in ds.x_train}
    assert all(r.tobytes() in rows for r in np.concatenate([tr.x_train, tr.x_val]))
    enc = tr._encode(tr.x_test[:4], (3, 0))
    np.testing.assert_array_equal(enc, tr.x_test[:4].transpose(1, 0, 2))
    acc, loss = tr.evaluate(tr.x_test, tr.y_test)
    assert 0.0 <= acc <= 1.0 and np.isfinite(loss)


def _same_flip_and_roll(before, after, max_shift=5):
    """The (flip, dy, dx) that maps every frame of ``before`` (T, C, H, W) to ``after``, or None."""
    for flip in (False, True):
        src = hflip(before[None])[0] if flip else before
        for dy in range(-max_shift, max_shift + 1):
            for dx in range(-max_shift, max_shift + 1):
                if np.array_equal(roll(src[None], [[dy, dx]])[0], after):
                    return flip, dy, dx
    return None


def test_augment_dvs_moves_all_frames_of_a_sample_together(rng):
    ds = _frames_dataset(rng, n=40, T=3, shape=(2, 12, 12))
    ds = ds._replace(x_train=rng.random(ds.x_train.shape, dtype=np.float32))  # every pixel distinct
    tr = Trainer(TrainConfig(encoder="frames", steps=3, augment="dvs", hidden=[8], epochs=1, quiet=True), dataset=ds)
    assert tr.image_shape == (2, 12, 12)
    batch = tr.x_train[:8]
    out = tr.augment(batch)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    before, after = batch.reshape(8, 3, 2, 12, 12), out.reshape(8, 3, 2, 12, 12)
    moves = [_same_flip_and_roll(before[b], after[b]) for b in range(8)]
    assert None not in moves  # one flip and one shift for all T frames (and both channels) of a sample
    assert any(m != (False, 0, 0) for m in moves)
    np.testing.assert_array_equal(np.sort(after, axis=None), np.sort(before, axis=None))  # a roll loses nothing


# --------------------------------------------------------------------------- snn-esl train


def _train(tmp_path, data, *extra):
    out = tmp_path / "run"
    code = main(["train", "--data-dir", str(data), "--epochs", "1", "--batch-size", "10", "--t-iter", "1",
                 "--quiet", "--out-dir", str(out), *extra])
    assert code in (0, None)
    return out, json.loads((out / "summary.json").read_text())


def test_cli_trains_on_a_cifar10_folder(tmp_path, rng, capsys):
    _cifar(tmp_path / "cifar", rng, "cifar10", "python")
    out, s = _train(tmp_path, tmp_path / "cifar", "--model", "convnet", "--channels", "2", "4", "--input-shape",
                    "3", "32", "32", "--encoder", "direct", "--steps", "2", "--augment", "cifar", "--density", "0.4",
                    "--init", "uniform", "--max-train", "20")
    assert s["dataset"] == "cifar10" and s["n_train"] + s["n_val"] == 20 and s["n_test"] == 10
    assert s["config"]["augment"] == "cifar" and s["epochs"] == 1 and (out / "best.h5").is_file()
    assert "data: cifar10 (18 train / 2 val / 10 test)" in capsys.readouterr().out


def test_cli_trains_on_a_cifar100_binary_folder(tmp_path, rng):
    folder, *_ = _cifar(tmp_path / "cifar100", rng, "cifar100", "binary")
    _, s = _train(tmp_path, folder, "--hidden", "16", "--encoder", "direct", "--steps", "2")
    assert s["dataset"] == "cifar100" and s["layers"][0]["shape"] == [16, 3072]
    assert s["layers"][-1]["shape"][0] == 23  # labels 0, 11, 22: the largest label + 1 classes


def test_cli_trains_on_a_dvs_folder_and_evaluates_the_run(tmp_path, rng, capsys):
    _dvs(tmp_path / "dvs", rng)
    args = ["--hidden", "16", "--encoder", "frames", "--steps", "3", "--augment", "dvs"]
    out, s = _train(tmp_path, tmp_path / "dvs", *args)
    assert s["dataset"] == "dvs" and s["n_train"] + s["n_val"] == 27 and s["n_test"] == 3
    assert s["layers"][0]["shape"] == [16, 2 * 48 * 48] and s["config"]["encoder"] == "frames"
    assert "T=3, encoder=frames" in capsys.readouterr().out
    assert (tmp_path / "dvs" / ".snn_cache" / frame_cache_name(3)).is_file()
    assert main(["evaluate", str(out / "best.h5"), "--energy-samples", "3"]) in (0, None)  # reads the cache
    assert "test accuracy" in capsys.readouterr().out
    # the default encoder on frame data: one line naming the fix
    code = main(["train", "--data-dir", str(tmp_path / "dvs"), "--steps", "3", "--quiet",
                 "--out-dir", str(tmp_path / "run2")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "--encoder frames" in err
