"""Fuzzing the two file readers with truncations and byte flips (hypothesis).

The documented contract:

- :func:`snn_core.checkpoint.load_checkpoint`: a damaged file raises
  :class:`~snn_core.checkpoint.CheckpointError` and nothing else; if it
  loads, every array and value equals the undamaged file's (the flip hit
  unused bytes). Never a silently different model.
- :func:`snn_core.data.idx.read_idx`: a damaged file raises
  :class:`~snn_core.data.idx.IDXFormatError` and nothing else. A gzip file
  that loads equals the original (gzip's CRC-32 covers the data). A raw IDX
  file has no checksum, so a flip inside the pixel payload cannot be seen;
  what must hold is that the header is never misread: a raw file that loads
  has the original shape and dtype and differs at most at the flipped
  payload bytes, and a flipped header is either an error or another valid
  header for exactly the bytes present (e.g. type 0x08 uint8 -> 0x09
  int8; the dataset loader then refuses non-uint8 images).

Examples are derandomised (the same cases in every CI run).
"""
from __future__ import annotations

import gzip
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snn_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from snn_core.config import TrainConfig
from snn_core.data.idx import IDXFormatError, read_idx, write_idx
from snn_core.training import Trainer

SETTINGS = dict(max_examples=80, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def flips(n_bytes):
    """A list of (position, non-zero xor mask) pairs."""
    return st.lists(st.tuples(st.integers(0, n_bytes - 1), st.integers(1, 255)), min_size=1, max_size=8)


def apply_flips(raw, pairs):
    out = bytearray(raw)
    for pos, mask in pairs:
        out[pos] ^= mask
    return bytes(out)


def same(a, b):
    """Deep equality of loaded checkpoints: same keys, same values, arrays equal bit for bit."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
                and (a.tobytes() == b.tobytes() if a.dtype.kind != "U" else np.array_equal(a, b)))
    return type(a) is type(b) and a == b


# ---------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz")
    cfg = TrainConfig(max_train=100, hidden=[8], epochs=1, batch_size=50, t_iter=1, quiet=True, seed=1,
                      out_dir=str(out / "run"))
    tr = Trainer(cfg)
    tr.fit()
    path = out / "run" / "last.h5"
    return path.read_bytes(), load_checkpoint(path), out


def _load_damaged(raw, out):
    path = out / "damaged.h5"
    path.write_bytes(raw)
    return load_checkpoint(path)


def test_checkpoint_fixture_is_small(checkpoint):
    raw, _, _ = checkpoint
    assert len(raw) < 200_000  # keeps the fuzzing below fast


@settings(**SETTINGS)
@given(data=st.data())
def test_truncated_checkpoint_never_loads(checkpoint, data):
    raw, _, out = checkpoint
    keep = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(CheckpointError):
        _load_damaged(raw[:keep], out)


@settings(**SETTINGS)
@given(data=st.data())
def test_flipped_checkpoint_is_an_error_or_unchanged(checkpoint, data):
    raw, original, out = checkpoint
    pairs = data.draw(flips(len(raw)))
    try:
        loaded = _load_damaged(apply_flips(raw, pairs), out)
    except CheckpointError:
        return
    assert same(loaded, original), f"flips {pairs} changed the content silently"


def test_flips_inside_array_data_are_always_caught(checkpoint):
    """Beyond random positions: every dataset of the file, damaged in its stored bytes."""
    import h5py

    raw, _, out = checkpoint
    path = out / "probe.h5"
    path.write_bytes(raw)
    spans = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: spans.append((name, obj.id.get_offset(), obj.id.get_storage_size()))
                     if isinstance(obj, h5py.Dataset) and obj.id.get_offset() is not None
                     and obj.id.get_storage_size() else None)
    assert len(spans) >= 6
    for name, offset, size in spans:
        with pytest.raises(CheckpointError, match=re.escape(name.split("/")[-1])):
            _load_damaged(apply_flips(raw, [(offset + size // 2, 0x10)]), out)


# ---------------------------------------------------------------------------
# IDX
# ---------------------------------------------------------------------------
IMAGES = np.random.default_rng(0).integers(0, 256, (6, 5, 4), dtype=np.uint8)


@pytest.fixture(scope="module")
def idx_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("idx")
    write_idx(d / "a.idx", IMAGES)
    write_idx(d / "a.idx.gz", IMAGES)
    return (d / "a.idx").read_bytes(), (d / "a.idx.gz").read_bytes(), d


def _read(raw, d, name="damaged"):
    p = d / name
    p.write_bytes(raw)
    return read_idx(p)


@settings(**SETTINGS)
@given(data=st.data())
@pytest.mark.parametrize("kind", ["raw", "gzip"])
def test_truncated_idx_never_loads(idx_files, kind, data):
    raw = idx_files[0] if kind == "raw" else idx_files[1]
    keep = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(IDXFormatError):
        _read(raw[:keep], idx_files[2])


@settings(**SETTINGS)
@given(data=st.data())
def test_flipped_gzip_idx_is_an_error_or_unchanged(idx_files, data):
    raw = idx_files[1]
    pairs = data.draw(flips(len(raw)))
    damaged = apply_flips(raw, pairs)
    if damaged[:2] != b"\x1f\x8b":
        return  # no longer gzip: read as a raw IDX file (covered below)
    try:
        arr = _read(damaged, idx_files[2])
    except IDXFormatError:
        return
    assert arr.dtype == IMAGES.dtype and np.array_equal(arr, IMAGES), f"flips {pairs} changed the data silently"


@settings(**SETTINGS)
@given(data=st.data())
def test_flipped_raw_idx_never_misreads_the_header(idx_files, data):
    raw = idx_files[0]
    pairs = data.draw(flips(len(raw)))
    try:
        arr = _read(apply_flips(raw, pairs), idx_files[2])
    except IDXFormatError:
        return
    header = 4 + 4 * IMAGES.ndim
    assert arr.nbytes == len(raw) - header  # never reads past or short of the payload
    if all(pos >= header for pos, _ in pairs):  # payload only: same header, differences only where flipped
        assert arr.shape == IMAGES.shape and arr.dtype == IMAGES.dtype
        changed = set(np.flatnonzero(arr.ravel() != IMAGES.ravel()).tolist())
        assert changed <= {pos - header for pos, _ in pairs}


def test_gzip_fixture_is_gzip(idx_files):
    assert gzip.decompress(idx_files[1]) == idx_files[0]
