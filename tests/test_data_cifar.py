"""CIFAR-10/100 readers (pickle + binary), safe unpickling, malformed files, augmentations, archive download."""

import functools
import hashlib
import http.server
import io
import os
import pickle
import tarfile
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snn_core.data import (
    ARCHIVES,
    CIFAR10_MEAN,
    DataFormatError,
    augment_cifar,
    channel_stats,
    download_archives,
    hflip,
    load_cifar,
    load_cifar10,
    load_cifar100,
    normalize,
    random_crop,
    random_hflip,
    read_cifar_bin,
    read_cifar_pickle,
    translate,
    write_cifar,
)
from snn_core.data.cifar import CIFAR_LAYOUTS
from snn_core.data.download import Archive, ArchiveSet, md5sum

N_CLASSES = {"cifar10": 10, "cifar100": 100}


def _random_set(rng, name, n_train=12, n_test=5):
    c = N_CLASSES[name]
    return (rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8), rng.integers(0, c, n_train),
            rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8), rng.integers(0, c, n_test))


# --------------------------------------------------------------------------- readers


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("fmt", ["python", "binary"])
def test_write_read_round_trip(tmp_path, rng, name, fmt):
    xtr, ytr, xte, yte = _random_set(rng, name)
    folder = write_cifar(tmp_path, name, fmt, xtr, ytr, xte, yte)
    assert folder == tmp_path / CIFAR_LAYOUTS[(name, fmt)].folder
    for root in (tmp_path, folder):  # the extraction folder or the data folder itself
        ds = load_cifar(name, root)
        assert ds.fmt == fmt and ds.name == name
        assert ds.x_train.dtype == np.uint8 and ds.x_train.shape == (12, 3, 32, 32)
        assert ds.y_train.dtype == np.int64
        np.testing.assert_array_equal(ds.x_train, xtr)
        np.testing.assert_array_equal(ds.y_train, ytr)
        np.testing.assert_array_equal(ds.x_test, xte)
        np.testing.assert_array_equal(ds.y_test, yte)
        assert len(ds.classes) == N_CLASSES[name] and ds.classes[3] == "class3"
        if name == "cifar100":
            np.testing.assert_array_equal(ds.y_train_coarse, ytr // 5)
            np.testing.assert_array_equal(ds.y_test_coarse, yte // 5)
            assert len(ds.coarse_classes) == 20
        else:
            assert ds.y_train_coarse is None and ds.coarse_classes is None


def test_written_pickles_have_the_published_keys_and_types(tmp_path, rng):
    xtr, ytr, xte, yte = _random_set(rng, "cifar10")
    folder = write_cifar(tmp_path, "cifar10", "python", xtr, ytr, xte, yte)
    with open(folder / "data_batch_1", "rb") as fh:
        d = pickle.load(fh, encoding="bytes")  # how the published (Python 2) files must be read
    assert set(d) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert d[b"data"].dtype == np.uint8 and d[b"data"].shape == (3, 3072)  # 12 images over 5 batches: 3,3,2,2,2
    assert isinstance(d[b"labels"], list) and all(isinstance(v, int) for v in d[b"labels"])
    with open(folder / "batches.meta", "rb") as fh:
        meta = pickle.load(fh, encoding="bytes")
    assert meta[b"label_names"][0] == b"class0" and meta[b"num_vis"] == 3072
    folder100 = write_cifar(tmp_path, "cifar100", "python", *_random_set(rng, "cifar100"))
    with open(folder100 / "train", "rb") as fh:
        d = pickle.load(fh, encoding="bytes")
    assert {b"fine_labels", b"coarse_labels", b"data", b"filenames", b"batch_label"} == set(d)


def test_hand_made_binary_record_layout(tmp_path):
    # One CIFAR-100 record built byte by byte: coarse label, fine label, then R, G, B planes row-major.
    img = np.zeros((3, 32, 32), np.uint8)
    img[0, 0, 1] = 11   # red,   row 0, column 1 -> pixel byte 1
    img[1, 2, 0] = 22   # green, row 2, column 0 -> byte 1024 + 64
    img[2, 31, 31] = 33  # blue, last pixel     -> byte 3071
    rec = bytearray([7, 42]) + bytearray(3072)
    rec[2 + 1], rec[2 + 1024 + 64], rec[2 + 3071] = 11, 22, 33
    p = tmp_path / "train.bin"
    p.write_bytes(bytes(rec) * 2)
    x, (coarse, fine) = read_cifar_bin(p, n_label_bytes=2, n_classes=(20, 100))
    assert x.shape == (2, 3, 32, 32)
    np.testing.assert_array_equal(x[0], img)
    assert coarse.tolist() == [7, 7] and fine.tolist() == [42, 42]


def test_python3_pickle_with_str_keys_is_read(tmp_path):
    # A batch re-saved by Python 3 (str keys, bytes via _codecs.encode at protocol 2).
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072) % 251
    p = tmp_path / "data_batch_1"
    with open(p, "wb") as fh:
        pickle.dump({"data": data, "labels": [3, 9], "filenames": [b"a.png", b"b.png"]}, fh, protocol=2)
    x, (y,) = read_cifar_pickle(p)
    np.testing.assert_array_equal(x.reshape(2, -1), data)
    assert y.tolist() == [3, 9]


def test_auto_format_prefers_python_and_explicit_format(tmp_path, rng):
    a, b = _random_set(rng, "cifar10"), _random_set(rng, "cifar10")
    write_cifar(tmp_path, "cifar10", "python", *a)
    write_cifar(tmp_path, "cifar10", "binary", *b)
    np.testing.assert_array_equal(load_cifar10(tmp_path).x_train, a[0])
    np.testing.assert_array_equal(load_cifar10(tmp_path, fmt="binary").x_train, b[0])
    with pytest.raises(ValueError, match="fmt must be"):
        load_cifar10(tmp_path, fmt="png")


def test_missing_folder_and_files(tmp_path, rng):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        load_cifar10(tmp_path)
    folder = write_cifar(tmp_path, "cifar100", "binary", *_random_set(rng, "cifar100"))
    (folder / "test.bin").unlink()
    with pytest.raises(FileNotFoundError, match="test.bin"):
        load_cifar100(tmp_path)
    with pytest.raises(ValueError, match="unknown CIFAR set"):
        load_cifar("cifar1000", tmp_path)


def test_writer_needs_an_image_per_batch_file(tmp_path, rng):
    x, y, _, _ = _random_set(rng, "cifar10", n_train=4)
    with pytest.raises(ValueError, match="at least one image for each"):
        write_cifar(tmp_path, "cifar10", "binary", x, y, x, y)
    with pytest.raises(ValueError, match=r"uint8 \(N, 3, 32, 32\)"):
        write_cifar(tmp_path, "cifar10", "binary", x.astype(np.int16), y, x, y)
    assert not any(tmp_path.iterdir())


def test_writer_never_overwrites(tmp_path, rng):
    s = _random_set(rng, "cifar10")
    write_cifar(tmp_path, "cifar10", "binary", *s)
    before = (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").read_bytes()
    with pytest.raises(FileExistsError):
        write_cifar(tmp_path, "cifar10", "binary", *_random_set(rng, "cifar10"))
    assert (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-batches-bin"]  # no temp folder left


# --------------------------------------------------------------------------- malformed files


def _python10(tmp_path, rng):
    return write_cifar(tmp_path, "cifar10", "python", *_random_set(rng, "cifar10"))


def test_truncated_pickle_names_the_file(tmp_path, rng):
    folder = _python10(tmp_path, rng)
    p = folder / "data_batch_3"
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(DataFormatError, match=r"data_batch_3: truncated or corrupt pickle") as e:
        load_cifar10(tmp_path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("cut", [1, 3072, 5000])  # a cut at a record boundary is undetectable: no header
def test_truncated_binary_names_the_file(tmp_path, rng, cut):
    folder = write_cifar(tmp_path, "cifar10", "binary", *_random_set(rng, "cifar10"))
    p = folder / "data_batch_2.bin"
    p.write_bytes(p.read_bytes()[:-cut])
    with pytest.raises(DataFormatError, match=r"data_batch_2\.bin: \d+ bytes is not a whole number of 3073-byte"):
        load_cifar10(tmp_path)


def test_binary_label_out_of_range(tmp_path):
    p = tmp_path / "b.bin"
    p.write_bytes(bytes([3]) + bytes(3072) + bytes([10]) + bytes(3072))
    with pytest.raises(DataFormatError, match=r"b\.bin: record 1: label byte 0 is 10, expected 0\.\.9"):
        read_cifar_bin(p)
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(DataFormatError, match="empty.bin: 0 bytes"):
        read_cifar_bin(tmp_path / "empty.bin")


def _dump(path, obj):
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)
    return path


@pytest.mark.parametrize("obj, msg", [
    ([1, 2, 3], "expected a pickled dict, got list"),
    ({b"labels": [1]}, r"missing key\(s\) \['data'\]"),
    ({b"data": np.zeros((2, 3000), np.uint8), b"labels": [1, 2]}, r"'data' must be a uint8 array of shape \(N, 3072\)"),
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [1, 2]}, "got float32"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, "'labels' has 1 labels but 'data' has 2 images"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 10]}, r"'labels' out of range 0\.\.9"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": ["a", "b"]}, "'labels' must be a list of integers"),
])
def test_malformed_batch_content(tmp_path, obj, msg):
    p = _dump(tmp_path / "data_batch_1", obj)
    with pytest.raises(DataFormatError, match=msg) as e:
        read_cifar_pickle(p)
    assert str(e.value).startswith(str(p))


def test_meta_with_wrong_class_count(tmp_path, rng):
    folder = _python10(tmp_path, rng)
    _dump(folder / "batches.meta", {b"label_names": [b"a", b"b"]})
    with pytest.raises(DataFormatError, match=r"batches\.meta: 2 class names, expected 10"):
        load_cifar10(tmp_path)


_FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _mutate(blob, cut, flips):
    b = bytearray(blob[:cut] if cut is not None else blob)
    for pos, val in flips:
        if b:
            b[pos % len(b)] = val
    return bytes(b)


@pytest.fixture(scope="module")
def small_batches(tmp_path_factory):
    rng = np.random.default_rng(5)
    root = tmp_path_factory.mktemp("fuzz")
    x, y = rng.integers(0, 256, (10, 3, 32, 32), dtype=np.uint8), np.arange(10) * 7 % 10
    py = write_cifar(root, "cifar10", "python", x, y, x[:1], y[:1])   # 2 images per training batch
    bn = write_cifar(root, "cifar100", "binary", x[:2], y[:2], x[:1], y[:1])
    return (py / "data_batch_1").read_bytes(), (bn / "train.bin").read_bytes()


@_FUZZ
@given(cut=st.none() | st.integers(0, 3300), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                            max_size=3))
def test_fuzzed_pickle_batch_reads_or_raises_data_format_error(tmp_path, small_batches, cut, flips):
    p = tmp_path / "data_batch_1"
    p.write_bytes(_mutate(small_batches[0], cut, flips))
    try:
        x, (y,) = read_cifar_pickle(p)
    except DataFormatError as e:
        assert str(e).startswith(str(p)) and "\n" not in str(e)
    else:
        assert x.dtype == np.uint8 and x.shape[1:] == (3, 32, 32) and y.shape == (x.shape[0],)


def test_a_pickle_error_of_several_lines_is_reported_on_one(tmp_path):
    """pickle's own message for a persistent id spans two lines; the reader's error stays one line (found by the
    fuzz test above)."""
    p = tmp_path / "data_batch_1"
    p.write_bytes(b"\x80\x02K\x01Q.")  # push 1, then a persistent-id load that nothing resolves
    with pytest.raises(DataFormatError, match="truncated or corrupt pickle .*persistent id") as err:
        read_cifar_pickle(p)
    assert str(err.value).startswith(str(p)) and "\n" not in str(err.value)


@_FUZZ
@given(cut=st.none() | st.integers(0, 7000), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                            max_size=3))
def test_fuzzed_binary_batch_reads_or_raises_data_format_error(tmp_path, small_batches, cut, flips):
    p = tmp_path / "train.bin"
    p.write_bytes(_mutate(small_batches[1], cut, flips))
    try:
        x, (coarse, fine) = read_cifar_bin(p, 2, (20, 100))
    except DataFormatError as e:
        assert str(e).startswith(str(p))
    else:
        assert x.shape[0] == coarse.shape[0] == fine.shape[0] and fine.max() < 100 and coarse.max() < 20


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_restricted_unpickler_refuses_arbitrary_globals(tmp_path):
    marker = str(tmp_path / "pwned")
    p = _dump(tmp_path / "data_batch_1", {b"data": np.zeros((1, 3072), np.uint8), b"labels": [_Evil(marker)]})
    assert pickle.loads(p.read_bytes(), encoding="bytes") is not None and os.path.isdir(marker)  # plain pickle runs it
    os.rmdir(marker)
    with pytest.raises(DataFormatError, match=r"forbidden global (posix|nt|os)\.mkdir"):
        read_cifar_pickle(p)
    assert not os.path.exists(marker)  # ... the reader does not


def test_restricted_unpickler_refuses_object_arrays_and_subclasses(tmp_path):
    p = _dump(tmp_path / "obj", {b"data": np.array([1, "x"], dtype=object), b"labels": [0]})
    with pytest.raises(DataFormatError, match="object arrays are not allowed"):
        read_cifar_pickle(p)
    p = _dump(tmp_path / "masked", {b"data": np.ma.masked_array(np.zeros((1, 3072), np.uint8)), b"labels": [0]})
    with pytest.raises(DataFormatError, match="forbidden global numpy.ma"):
        read_cifar_pickle(p)


# --------------------------------------------------------------------------- augmentations


def test_translate_zero_shift_is_identity_and_matches_pad_crop(rng):
    x = rng.integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    np.testing.assert_array_equal(translate(x, np.zeros((6, 2), int)), x)
    np.testing.assert_array_equal(random_crop(x, rng, padding=0), x)
    shifts = rng.integers(-4, 5, size=(6, 2))
    out = translate(x, shifts)
    padded = np.pad(x, ((0, 0), (0, 0), (4, 4), (4, 4)))
    for n, (dy, dx) in enumerate(shifts):  # pad by 4, crop at offset (4 + dy, 4 + dx)
        np.testing.assert_array_equal(out[n], padded[n, :, 4 + dy:36 + dy, 4 + dx:36 + dx])


def test_random_crop_is_a_padded_crop_within_range(rng):
    x = rng.integers(1, 256, (20, 3, 32, 32), dtype=np.uint8)  # no zeros, so the padding is visible
    out = random_crop(x, rng, padding=4)
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = np.pad(x, ((0, 0), (0, 0), (4, 4), (4, 4)))
    for n in range(20):
        offsets = [(i, j) for i in range(9) for j in range(9)
                   if np.array_equal(out[n], padded[n, :, i:i + 32, j:j + 32])]
        assert len(offsets) == 1


def test_flip_twice_is_identity_and_random_flip_is_per_sample(rng):
    x = rng.integers(0, 256, (30, 3, 32, 32), dtype=np.uint8)
    x0 = x.copy()
    np.testing.assert_array_equal(hflip(hflip(x)), x)
    np.testing.assert_array_equal(hflip(x)[:, :, :, 0], x[:, :, :, -1])
    out = random_hflip(x, rng)
    flipped = [np.array_equal(out[n], x[n, :, :, ::-1]) for n in range(30)]
    kept = [np.array_equal(out[n], x[n]) for n in range(30)]
    assert all(f or k for f, k in zip(flipped, kept)) and 0 < sum(flipped) < 30
    np.testing.assert_array_equal(random_hflip(x, rng, p=0.0), x)
    np.testing.assert_array_equal(random_hflip(x, rng, p=1.0), hflip(x))
    np.testing.assert_array_equal(x, x0)  # inputs untouched


def test_augment_cifar_deterministic_with_seed(rng):
    x = rng.integers(0, 256, (8, 3, 32, 32), dtype=np.uint8)
    a = augment_cifar(x, np.random.default_rng(7))
    b = augment_cifar(x, np.random.default_rng(7))
    c = augment_cifar(x, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert a.shape == x.shape and a.dtype == np.uint8 and not np.array_equal(a, c)


def test_normalize_and_channel_stats(rng):
    x = (rng.random((50, 3, 8, 8)) * np.array([100, 200, 255])[None, :, None, None]).astype(np.uint8)
    mean, std = channel_stats(x, chunk=7)
    ref = x.astype(np.float64) / 255
    np.testing.assert_allclose(mean, ref.mean(axis=(0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(std, ref.std(axis=(0, 2, 3)), rtol=1e-8)
    z = normalize(x, mean, std)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, atol=1e-4)
    np.testing.assert_allclose(normalize(x)[:, 0], (x[:, 0] / 255 - CIFAR10_MEAN[0]) / 0.2470, rtol=1e-5)
    with pytest.raises(ValueError, match="mean and std need 3 values"):
        normalize(x, (0.5,), (0.5,))


# --------------------------------------------------------------------------- download


def _tar_of_folder(src, dest):
    with tarfile.open(dest, "w:gz") as tf:
        tf.add(src, arcname=src.name)
    return dest


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _serve_folder(folder):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture
def cifar_archive(tmp_path, rng):
    src = tmp_path / "src"
    data = _random_set(rng, "cifar10")
    folder = write_cifar(src, "cifar10", "python", *data)
    tgz = _tar_of_folder(folder, tmp_path / "cifar-10-python.tar.gz")
    return tgz, data


def test_registry_lists_the_published_archives():
    assert ARCHIVES["cifar10"].archives[0].md5 == "c58f30108f718f92721af3b95e74349a"
    assert ARCHIVES["cifar100"].archives[0].urls == ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",)
    assert len(ARCHIVES["cifar10-dvs"].archives) == 10
    for s in ARCHIVES.values():
        for a in s.archives:
            assert len(a.md5) == 32 and all(u.startswith("https://") for u in a.urls)


def test_download_from_local_http_server_then_load(tmp_path, cifar_archive, monkeypatch):
    tgz, data = cifar_archive
    srv = _serve_folder(tgz.parent)
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/{tgz.name}"
        monkeypatch.setitem(ARCHIVES, "cifar10", ArchiveSet((Archive(tgz.name, (url,), md5sum(tgz)),), "t", "r"))
        root = download_archives("cifar10", tmp_path / "cache")
    finally:
        srv.shutdown()
    np.testing.assert_array_equal(load_cifar10(root).x_train, data[0])
    assert (root / tgz.name).is_file() and (root / f".{tgz.name}.extracted").is_file()
    # Second call: archive verified, nothing fetched (the server is gone) or extracted again.
    assert download_archives("cifar10", root) == root


def test_download_checksum_mismatch_leaves_nothing(tmp_path, cifar_archive, monkeypatch):
    tgz, _ = cifar_archive
    monkeypatch.setitem(ARCHIVES, "cifar10", ArchiveSet((Archive(tgz.name, (tgz.as_uri(),), "0" * 32),), "t", "r"))
    with pytest.raises(OSError, match=r"could not download cifar-10-python\.tar\.gz .*md5 mismatch") as e:
        download_archives("cifar10", tmp_path / "cache")
    assert "\n" not in str(e.value)
    assert list((tmp_path / "cache").iterdir()) == []


def test_download_offline_is_one_clear_line(tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"
    monkeypatch.setitem(ARCHIVES, "cifar10", ArchiveSet((Archive("cifar-10-python.tar.gz", (url,), "0" * 32),),
                                                        "t", "r"))
    with pytest.raises(OSError, match="could not download cifar-10-python.tar.gz .* without internet") as e:
        download_archives("cifar10", tmp_path, timeout=5)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="unknown data set 'imagenet'"):
        download_archives("imagenet", tmp_path)


def test_extraction_never_overwrites(tmp_path, cifar_archive, monkeypatch):
    tgz, _ = cifar_archive
    root = tmp_path / "cache"
    (root / "cifar-10-batches-py").mkdir(parents=True)
    (root / "cifar-10-batches-py" / "mine.txt").write_text("keep")
    monkeypatch.setitem(ARCHIVES, "cifar10", ArchiveSet((Archive(tgz.name, (tgz.as_uri(),), md5sum(tgz)),), "t", "r"))
    with pytest.raises(FileExistsError, match="cifar-10-batches-py already exist"):
        download_archives("cifar10", root)
    assert (root / "cifar-10-batches-py" / "mine.txt").read_text() == "keep"
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py", tgz.name]  # no temp folder left


def test_extraction_refuses_paths_outside(tmp_path, monkeypatch):
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tf:
        info = tarfile.TarInfo("../escaped.txt")
        payload = b"x"
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    monkeypatch.setitem(ARCHIVES, "cifar10", ArchiveSet((Archive(bad.name, (bad.as_uri(),), md5sum(bad)),), "t", "r"))
    with pytest.raises(OSError, match="cannot extract"):
        download_archives("cifar10", tmp_path / "cache")
    assert not (tmp_path / "escaped.txt").exists()


def test_md5sum_matches_hashlib(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc" * 1000)
    assert md5sum(p) == hashlib.md5(b"abc" * 1000).hexdigest()
