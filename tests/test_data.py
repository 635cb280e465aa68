"""Tests for snn_core.data: IDX I/O, dataset loaders, splits. No network access."""

import gzip
import hashlib
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from snn_core.data import (
    Dataset,
    IDXFormatError,
    load_dataset,
    load_embedded,
    load_idx_dir,
    read_idx,
    to_float,
    train_val_split,
    write_idx,
)
from snn_core.data import datasets as ds_mod
from snn_core.data.datasets import ChecksumError, _verify_sha256

FULL_MNIST = Path(__file__).resolve().parents[2] / "shared/data/mnist"
EMBEDDED_CONTENT_SHA256 = "7c27ac81e564660786fe267b29726f5e5e00a0c3a43c3c2e3e401ef80f109c82"


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_roundtrip(tmp_path, dtype, suffix):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    shape = (3, 4, 5)
    if info is not None:
        a = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    else:
        a = rng.standard_normal(shape).astype(dtype)
    path = tmp_path / f"a.idx{suffix}"
    write_idx(path, a)
    raw = path.read_bytes()
    assert raw.startswith(b"\x1f\x8b") == (suffix == ".gz")
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative
    assert b.shape == shape
    np.testing.assert_array_equal(a, b)
    assert b.flags.writeable


@pytest.mark.parametrize("shape", [(7,), (2, 3), (2, 3, 4), (1, 2, 3, 2), (0, 28, 28)])
def test_idx_roundtrip_ndim(tmp_path, shape):
    a = np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape)
    write_idx(tmp_path / "a", a)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), a)


def test_idx_multibyte_is_big_endian(tmp_path):
    write_idx(tmp_path / "a", np.array([1, 258], dtype=np.int16))
    assert (tmp_path / "a").read_bytes() == bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0, 1, 1, 2])


def test_gzip_detected_by_magic_not_name(tmp_path):
    a = np.arange(10, dtype=np.uint8)
    write_idx(tmp_path / "a.gz", a)
    (tmp_path / "a.gz").rename(tmp_path / "plain-name")
    write_idx(tmp_path / "raw", a)
    (tmp_path / "raw").rename(tmp_path / "raw.gz")
    np.testing.assert_array_equal(read_idx(tmp_path / "plain-name"), a)
    np.testing.assert_array_equal(read_idx(tmp_path / "raw.gz"), a)


def test_write_idx_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        write_idx(tmp_path / "a", np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="dimensions"):
        write_idx(tmp_path / "a", np.zeros((1,) * 5, dtype=np.uint8))


def _good_bytes():
    return bytes([0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(6))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x00", "bad magic"),
        (b"\x00\x00\x0a\x01\x00\x00\x00\x01\x00", "bad type code 0x0a"),
        (b"\x00\x00\x08\x00", "dimensions 0"),
        (b"\x00\x00\x08\x05" + b"\x00\x00\x00\x01" * 5 + b"\x00", "dimensions 5"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x01", "truncated header"),
        (b"\x00\x00", "too short"),
        (_good_bytes()[:-1], "truncated: expected 6 payload bytes for shape (2, 3), found 5"),
        (_good_bytes() + b"\x00", "trailing bytes: expected 6 payload bytes"),
        (bytes([0, 0, 0x0C, 1, 0, 0, 0, 2]) + b"\x00" * 7, "truncated: expected 8"),
    ],
    ids=["magic", "type", "ndim0", "ndim5", "header", "short", "truncated", "trailing", "int32-trunc"],
)
@pytest.mark.parametrize("compress", [False, True])
def test_idx_corruption(tmp_path, data, message, compress):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(IDXFormatError, match=message.replace("(", r"\(").replace(")", r"\)")) as ei:
        read_idx(path)
    assert str(path) in str(ei.value)
    assert isinstance(ei.value, ValueError)


@pytest.mark.parametrize("damage", ["cut", "flip", "garbage"])
def test_idx_corrupt_gzip(tmp_path, damage):
    good = gzip.compress(_good_bytes() * 50)
    if damage == "cut":
        bad = good[: len(good) // 2]
    elif damage == "flip":  # damage the CRC/size trailer
        bad = good[:-6] + bytes(b ^ 0xFF for b in good[-6:])
    else:
        bad = good[:10] + b"\xff" * 40
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(bad)
    with pytest.raises(IDXFormatError, match="corrupt gzip") as ei:
        read_idx(path)
    assert str(path) in str(ei.value)


def test_idx_sanity_good_bytes(tmp_path):
    (tmp_path / "a").write_bytes(_good_bytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), np.arange(6, dtype=np.uint8).reshape(2, 3))


# --------------------------------------------------------------------------- IDX directories

STEMS = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def _make_dir(root, n_train=12, n_test=5, gz=(False, True, True, False), n_classes=10, **override):
    rng = np.random.default_rng(1)
    arrays = {
        STEMS[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        STEMS[1]: (np.arange(n_train) % n_classes).astype(np.uint8),
        STEMS[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        STEMS[3]: (np.arange(n_test) % n_classes).astype(np.uint8),
    }
    arrays.update(override)
    root.mkdir(exist_ok=True)
    for (stem, a), z in zip(arrays.items(), gz):
        write_idx(root / (stem + (".gz" if z else "")), a)
    return arrays


def test_load_idx_dir(tmp_path):
    arrays = _make_dir(tmp_path)
    ds = load_idx_dir(tmp_path)
    assert isinstance(ds, Dataset)
    assert ds.x_train.shape == (12, 784) and ds.x_test.shape == (5, 784)
    assert ds.x_train.dtype == ds.y_train.dtype == ds.x_test.dtype == ds.y_test.dtype == np.uint8
    np.testing.assert_array_equal(ds.x_train, arrays[STEMS[0]].reshape(12, 784))
    np.testing.assert_array_equal(ds.y_test, arrays[STEMS[3]])
    assert ds.image_shape == (28, 28) and ds.n_features == 784
    assert ds.source == str(tmp_path.resolve())


def test_load_idx_dir_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_idx_dir(tmp_path / "nope")


def test_load_idx_dir_missing_file(tmp_path):
    _make_dir(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as ei:
        load_idx_dir(tmp_path)
    msg = str(ei.value)
    assert str(tmp_path) in msg
    assert "'t10k-images-idx3-ubyte'" in msg and "'t10k-images-idx3-ubyte.gz'" in msg


def test_load_idx_dir_label_range(tmp_path):
    _make_dir(tmp_path, **{STEMS[1]: np.array([0, 1, 10, 2] * 3, dtype=np.uint8)})
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*out of range 0\.\.9.*\[10\]"):
        load_idx_dir(tmp_path)
    # the same file is fine with more classes
    assert load_idx_dir(tmp_path, n_classes=11).y_train.max() == 10


def test_load_idx_dir_count_mismatch(tmp_path):
    _make_dir(tmp_path, **{STEMS[3]: np.zeros(4, dtype=np.uint8)})
    with pytest.raises(ValueError, match="5 images.*4 labels") as ei:
        load_idx_dir(tmp_path)
    assert "t10k-images-idx3-ubyte" in str(ei.value) and "t10k-labels-idx1-ubyte" in str(ei.value)


def test_load_idx_dir_images_not_3d(tmp_path):
    _make_dir(tmp_path, **{STEMS[0]: np.zeros((12, 784), dtype=np.uint8)})
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*3-D.*\(12, 784\)"):
        load_idx_dir(tmp_path)


def test_load_idx_dir_corrupt_file_names_it(tmp_path):
    _make_dir(tmp_path)
    p = tmp_path / "train-labels-idx1-ubyte.gz"
    p.write_bytes(p.read_bytes()[:-3])
    with pytest.raises(IDXFormatError, match="train-labels-idx1-ubyte.gz"):
        load_idx_dir(tmp_path)


# --------------------------------------------------------------------------- embedded sample


@pytest.fixture(scope="module")
def embedded():
    return load_embedded()


def test_embedded_shapes_and_values(embedded):
    e = embedded
    assert e.x_train.shape == (4000, 784) and e.y_train.shape == (4000,)
    assert e.x_test.shape == (1000, 784) and e.y_test.shape == (1000,)
    for a in e[:4]:
        assert a.dtype == np.uint8
    assert e.image_shape == (28, 28) and e.name == "mnist_5k"
    np.testing.assert_array_equal(np.bincount(e.y_train, minlength=10), [400] * 10)
    np.testing.assert_array_equal(np.bincount(e.y_test, minlength=10), [100] * 10)
    for x in (e.x_train, e.x_test):
        assert x.min() == 0 and x.max() == 255
        assert (x.sum(axis=1) > 0).all()  # no blank images
        # MNIST digits are centred: the border is mostly background
        assert x.reshape(-1, 28, 28)[:, 0, :].mean() < 1.0


def test_embedded_train_test_disjoint(embedded):
    e = embedded
    rows = np.concatenate([e.x_train, e.x_test])
    assert np.unique(rows, axis=0).shape[0] == 5000  # no identical rows at all
    tr = {r.tobytes() for r in e.x_train}
    assert not any(r.tobytes() in tr for r in e.x_test)


def test_embedded_content_digest(embedded):
    h = hashlib.sha256()
    for k in ("x_train", "y_train", "x_test", "y_test"):
        a = np.ascontiguousarray(getattr(embedded, k))
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    assert h.hexdigest() == EMBEDDED_CONTENT_SHA256


def test_embedded_returns_fresh_arrays():
    a, b = load_embedded(), load_embedded()
    a.x_train[0, 0] = 7
    assert b.x_train[0, 0] == 0


# --------------------------------------------------------------------------- dispatch / download helpers


def test_load_dataset_dispatch(tmp_path, monkeypatch):
    _make_dir(tmp_path / "a")
    _make_dir(tmp_path / "b", n_train=20)
    monkeypatch.delenv("SNN_CORE_DATA", raising=False)
    assert load_dataset().name == "mnist_5k"
    assert load_dataset(tmp_path / "a").x_train.shape[0] == 12
    monkeypatch.setenv("SNN_CORE_DATA", str(tmp_path / "b"))
    assert load_dataset().x_train.shape[0] == 20
    assert load_dataset(tmp_path / "a").x_train.shape[0] == 12  # explicit dir wins
    monkeypatch.setenv("SNN_CORE_DATA", "")
    calls = []
    monkeypatch.setattr(ds_mod, "download_mnist", lambda *a, **k: calls.append(1) or "dl")
    assert load_dataset(download=True) == "dl" and calls == [1]


def test_verify_sha256(tmp_path):
    p = tmp_path / "f.gz"
    p.write_bytes(b"hello mnist")
    good = hashlib.sha256(b"hello mnist").hexdigest()
    _verify_sha256(p, good)
    _verify_sha256(p, good.upper())
    with pytest.raises(ChecksumError, match="sha256 mismatch") as ei:
        _verify_sha256(p, "0" * 64)
    assert str(p) in str(ei.value) and good in str(ei.value)
    assert isinstance(ei.value, ValueError)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert ds_mod.default_cache_dir() == tmp_path / "snn_core" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert ds_mod.default_cache_dir() == Path.home() / ".cache" / "snn_core" / "mnist"


def test_download_uses_valid_cache_without_network(tmp_path, monkeypatch):
    """Files already cached with matching sha256 are not fetched again."""
    arrays = _make_dir(tmp_path, gz=(True,) * 4)
    fake = {s + ".gz": hashlib.sha256((tmp_path / (s + ".gz")).read_bytes()).hexdigest() for s in STEMS}
    monkeypatch.setitem(ds_mod.DATASETS, "mnist", ds_mod.DatasetSource(fake, ds_mod.MNIST_MIRRORS, "fake"))

    def no_network(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    ds = ds_mod.download_mnist(tmp_path)
    np.testing.assert_array_equal(ds.y_train, arrays[STEMS[1]])


def test_download_reports_all_mirror_failures(tmp_path, monkeypatch):
    def refuse(url, timeout):
        raise OSError(f"refused {url}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(OSError, match="(?s)ossci-datasets.*cvdf-datasets"):
        ds_mod.download_mnist(tmp_path)
    assert not list(tmp_path.iterdir())  # no partial files left behind


# --------------------------------------------------------------------------- split / float


def test_train_val_split():
    tr, va = train_val_split(1000, 0.1, seed=3)
    assert len(va) == 100 and len(tr) == 900
    assert np.intersect1d(tr, va).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va])), np.arange(1000))
    tr2, va2 = train_val_split(1000, 0.1, seed=3)
    np.testing.assert_array_equal(va, va2)
    np.testing.assert_array_equal(tr, tr2)
    _, va3 = train_val_split(1000, 0.1, seed=4)
    assert not np.array_equal(va, va3)
    # random, not a contiguous tail
    assert va.max() - va.min() > 500
    assert train_val_split(10, 0.0)[1].size == 0
    with pytest.raises(ValueError):
        train_val_split(10, 1.0)
    with pytest.raises(ValueError):
        train_val_split(-1)


def test_to_float():
    imgs = np.array([[[0, 255], [51, 1]]], dtype=np.uint8)
    f = to_float(imgs)
    assert f.dtype == np.float32 and f.shape == (1, 4)
    np.testing.assert_array_equal(f, np.array([[0, 1, 0.2, 1 / 255]], dtype=np.float32))
    assert to_float(imgs.reshape(1, 4)).shape == (1, 4)
    with pytest.raises(ValueError, match="uint8"):
        to_float(f)
    with pytest.raises(ValueError, match="shape"):
        to_float(np.zeros(4, dtype=np.uint8))


# --------------------------------------------------------------------------- full MNIST (optional)


@pytest.mark.skipif(not FULL_MNIST.is_dir(), reason=f"full MNIST not present at {FULL_MNIST}")
def test_full_mnist_if_present():
    ds = load_idx_dir(FULL_MNIST)
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    assert ds.y_train.shape == (60000,) and ds.y_test.shape == (10000,)
    assert set(np.unique(ds.y_train)) == set(range(10))
    assert abs(to_float(ds.x_train[:10000]).mean() - 0.1307) < 0.01
