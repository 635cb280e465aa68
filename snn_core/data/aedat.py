"""AEDAT 2.0 event files as published for CIFAR10-DVS (DVS128 address layout).

File layout (jAER "AER-DAT2.0")::

    header   ASCII lines, each starting with '#' and ending in '\\r\\n';
             the first one is the version line '#!AER-DAT2.0'
    events   8 bytes each, big-endian: uint32 address, uint32 timestamp (microseconds)

Address bits of the DVS128 sensor the CIFAR10-DVS recordings use::

    bit 0      polarity (1 = OFF, 0 = ON in jAER terms)
    bits 1-7   x_raw, 0..127
    bits 8-14  y_raw, 0..127
    bit 15     external-event flag (unused by CIFAR10-DVS)

:func:`read_aedat` returns events in the orientation the community readers
(spikingjelly, and through it the TET reference code) use for CIFAR10-DVS, so
that images come out upright and frames match theirs::

    x = 127 - y_raw,   y = 127 - x_raw,   p = 1 - polarity_bit

(``raw=True`` returns ``x_raw, y_raw`` and the polarity bit unchanged). AEDAT
3.x and 4.x use a different, packet-based little-endian layout; they are
refused with a clear error rather than misread.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import format_error

__all__ = ["EVENT_DTYPE", "SENSOR_SIZE", "make_events", "read_aedat", "write_aedat"]

#: One event: timestamp (microseconds), x (column), y (row), polarity 0/1.
EVENT_DTYPE = np.dtype([("t", np.int64), ("x", np.int16), ("y", np.int16), ("p", np.int8)])
#: (height, width) of the DVS128 sensor.
SENSOR_SIZE = (128, 128)
_VERSION_PREFIX = b"#!AER-DAT"
_MAX_HEADER = 1 << 20  # a header larger than 1 MiB means the file is not AEDAT


def make_events(t, x, y, p) -> np.ndarray:
    """Pack equal-length arrays into a structured :data:`EVENT_DTYPE` array of shape (N,)."""
    t, x, y, p = (np.asarray(a).ravel() for a in (t, x, y, p))
    if not (t.size == x.size == y.size == p.size):
        raise ValueError(f"t, x, y, p must have the same length, got {t.size}, {x.size}, {y.size}, {p.size}")
    ev = np.empty(t.size, EVENT_DTYPE)
    ev["t"], ev["x"], ev["y"], ev["p"] = t, x, y, p
    return ev


def _split_header(path: Path, blob: bytes) -> tuple[list[str], int]:
    if not blob.startswith(b"#"):
        raise format_error(path, f"no AEDAT header: the file must start with a '{_VERSION_PREFIX.decode()}2.0' line")
    lines, pos = [], 0
    while pos < len(blob) and blob[pos:pos + 1] == b"#":
        end = blob.find(b"\n", pos)
        if end < 0 or end > _MAX_HEADER:
            raise format_error(path, "unterminated AEDAT header line (truncated file?)")
        try:
            lines.append(blob[pos:end].decode("ascii").rstrip("\r"))
        except UnicodeDecodeError:
            raise format_error(path, f"AEDAT header line {len(lines) + 1} is not ASCII text") from None
        pos = end + 1
    version = lines[0][len(_VERSION_PREFIX):].strip() if lines[0].encode().startswith(_VERSION_PREFIX) else None
    if version is None:
        raise format_error(path, f"first header line is {lines[0][:40]!r}, expected '#!AER-DAT2.0'")
    if not version.startswith("2."):
        raise format_error(path, f"AEDAT version {version} is not supported (only 2.0, the format of the published "
                                 f"CIFAR10-DVS recordings; 3.x/4.x use a packet layout)")
    return lines, pos


def read_aedat(path: str | os.PathLike, raw: bool = False) -> tuple[np.ndarray, list[str]]:
    """Read an AEDAT 2.0 recording of the DVS128 sensor.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.aedat`` file.
    raw : bool
        False (default): CIFAR10-DVS orientation (see the module docstring).
        True: the address fields as stored (``x_raw``, ``y_raw``, polarity bit).

    Returns
    -------
    (events, header) : tuple
        ``events`` structured (N,) :data:`EVENT_DTYPE` in file order, ``t`` in
        microseconds, ``x``, ``y`` in 0..127, ``p`` in {0, 1}; ``header`` the
        header lines without their line ends.

    Raises
    ------
    FileNotFoundError
        No such file.
    DataFormatError
        No or non-ASCII header, a version other than 2.x, or an event section
        whose byte count is not a multiple of 8 (the message gives the count).
    """
    path = Path(path)
    blob = path.read_bytes()
    header, start = _split_header(path, blob)
    n_bytes = len(blob) - start
    if n_bytes % 8:
        raise format_error(path, f"{n_bytes} bytes of events after the header is not a multiple of 8 "
                                 f"(4-byte address + 4-byte timestamp); truncated file?")
    words = np.frombuffer(blob, dtype=">u4", offset=start).reshape(-1, 2)
    addr, ts = words[:, 0], words[:, 1]
    pol = (addr & 1).astype(np.int8)
    x_raw = ((addr >> 1) & 0x7F).astype(np.int16)
    y_raw = ((addr >> 8) & 0x7F).astype(np.int16)
    if raw:
        return make_events(ts, x_raw, y_raw, pol), header
    return make_events(ts, 127 - y_raw, 127 - x_raw, 1 - pol), header


def write_aedat(path: str | os.PathLike, events: np.ndarray, raw: bool = False,
                header: tuple = ("# This is a raw AE data file - do not edit",
                                 "# Data format is int32 address, int32 timestamp (8 bytes total)")) -> None:
    """Write events as an AEDAT 2.0 file that :func:`read_aedat` (and jAER) reads back exactly.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; written atomically (temporary file, then rename).
    events : np.ndarray
        Structured :data:`EVENT_DTYPE` (N,), in the orientation given by ``raw``.
    raw : bool
        As in :func:`read_aedat`.
    header : sequence of str
        Header lines after ``#!AER-DAT2.0``; each must start with '#'.
    """
    path = Path(path)
    x, y, p, t = (np.asarray(events[k], np.int64) for k in ("x", "y", "p", "t"))
    if not raw:
        x, y, p = 127 - y, 127 - x, 1 - p  # invert the CIFAR10-DVS orientation
    if x.size and (x.min() < 0 or x.max() > 127 or y.min() < 0 or y.max() > 127 or not np.isin(p, (0, 1)).all()):
        raise ValueError("events must have x, y in 0..127 and p in {0, 1}")
    if t.size and (t.min() < 0 or t.max() >= 1 << 32):
        raise ValueError("timestamps must fit an unsigned 32-bit integer (microseconds)")
    if any(not h.startswith("#") for h in header):
        raise ValueError("every AEDAT header line must start with '#'")
    words = np.empty((x.size, 2), ">u4")
    words[:, 0] = p | (x << 1) | (y << 8)
    words[:, 1] = t
    text = "".join(line + "\r\n" for line in ("#!AER-DAT2.0", *header)).encode("ascii")
    tmp = path.with_name(f".{path.name}.part")
    try:
        with open(tmp, "wb") as fh:
            fh.write(text)
            fh.write(words.tobytes())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
