"""Reader and writer for the IDX file format used by MNIST.

Layout of an IDX file (all header integers big-endian)::

    bytes 0-1   0x00 0x00
    byte  2     type code (see ``IDX_TYPES``)
    byte  3     number of dimensions, ndim
    4*ndim      the size of each dimension, uint32 big-endian
    payload     prod(sizes) items of the given type, big-endian, C order

Files may be gzip-compressed; the reader recognises gzip by its magic bytes,
not by the file name, because mirrors and browsers do not rename consistently.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

__all__ = ["IDX_TYPES", "IDXFormatError", "read_idx", "write_idx"]

#: IDX type code -> big-endian NumPy dtype.
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_BY_KIND = {(dt.kind, dt.itemsize): code for code, dt in IDX_TYPES.items()}

_MAX_NDIM = 4
_GZIP_MAGIC = b"\x1f\x8b"


class IDXFormatError(ValueError):
    """An IDX file is malformed; the message names the file and the defect."""


def _fail(path, what: str) -> IDXFormatError:
    return IDXFormatError(f"{os.fspath(path)}: {what}")


def _read_bytes(path) -> bytes:
    with open(path, "rb") as fh:
        raw = fh.read()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        # BadGzipFile (an OSError), EOFError for a cut stream, zlib.error for
        # damaged deflate data: all mean the same thing to the caller.
        raise _fail(path, f"corrupt gzip stream ({exc})") from exc


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a NumPy array.

    Parameters
    ----------
    path : str or os.PathLike
        File to read. Gzip is detected from the first two bytes.

    Returns
    -------
    np.ndarray
        Writable, C-contiguous array in native byte order whose shape is the
        dimension sizes from the header and whose dtype is the IDX type
        (uint8, int8, int16, int32, float32 or float64).

    Raises
    ------
    IDXFormatError
        Bad magic, unknown type code, ndim outside 1..4, header shorter than
        announced, payload shorter or longer than the dimensions require, or
        a corrupt gzip stream. The message starts with the file path.
    FileNotFoundError
        ``path`` does not exist.
    """
    data = _read_bytes(path)
    if len(data) < 4:
        raise _fail(path, f"file too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise _fail(
            path, f"bad magic: first two bytes are {data[0]:#04x} {data[1]:#04x}, expected 0x00 0x00"
        )
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        valid = ", ".join(f"{c:#04x}" for c in IDX_TYPES)
        raise _fail(path, f"bad type code {code:#04x} (valid: {valid})")
    if not 1 <= ndim <= _MAX_NDIM:
        raise _fail(path, f"unsupported number of dimensions {ndim} (expected 1..{_MAX_NDIM})")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise _fail(
            path, f"truncated header: {ndim} dimension sizes need {header_len} bytes, found {len(data)}"
        )
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[code]
    expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
    found = len(data) - header_len
    if found < expected:
        raise _fail(path, f"truncated: expected {expected} payload bytes for shape {shape}, found {found}")
    if found > expected:
        raise _fail(
            path, f"trailing bytes: expected {expected} payload bytes for shape {shape}, found {found}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
    # astype copies: makes the result writable and native-endian in one pass.
    return arr.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array) -> None:
    """Write ``array`` as an IDX file; gzip-compressed if ``path`` ends in ``.gz``.

    Parameters
    ----------
    path : str or os.PathLike
        Destination. Written with gzip mtime 0 so the bytes are reproducible.
    array : array_like
        1- to 4-D array of dtype uint8, int8, int16, int32, float32 or float64
        (any byte order). Every dimension must fit in uint32.

    Raises
    ------
    ValueError
        Unsupported dtype, ndim or dimension size.
    """
    arr = np.asarray(array)
    code = _CODE_BY_KIND.get((arr.dtype.kind, arr.dtype.itemsize))
    if code is None:
        raise ValueError(
            f"{os.fspath(path)}: dtype {arr.dtype} has no IDX type "
            "(use uint8, int8, int16, int32, float32 or float64)"
        )
    if not 1 <= arr.ndim <= _MAX_NDIM:
        raise ValueError(f"{os.fspath(path)}: IDX needs 1..{_MAX_NDIM} dimensions, got shape {arr.shape}")
    if any(s >= 2**32 for s in arr.shape):
        raise ValueError(f"{os.fspath(path)}: dimension too large for IDX in shape {arr.shape}")
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    payload = np.ascontiguousarray(arr, dtype=IDX_TYPES[code]).tobytes()
    if Path(path).name.endswith(".gz"):
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as fh:
            fh.write(header)
            fh.write(payload)
    else:
        with open(path, "wb") as fh:
            fh.write(header)
            fh.write(payload)
