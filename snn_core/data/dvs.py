"""DVS-CIFAR10: event streams -> T frames of 2 polarity channels, and the folder-per-class reader.

Frame integration (:func:`events_to_frames`) follows the setup the TET
reference code uses for CIFAR10-DVS (spikingjelly's ``frames_number=T,
split_by='number'``): the N events of a recording, in file order, are cut into
T consecutive slices of ``N // T`` events (the last slice also takes the
``N % T`` remainder), and each slice is counted per (polarity, y, x) pixel.
``split_by="time"`` instead cuts the span ``[t_first, t_last]`` into T equal
time windows (the last one closed).

Downsampling 128x128 -> 48x48 maps every event to the output pixel
``(y * 48 // 128, x * 48 // 128)`` before counting, so each output pixel sums
the events of a 2- or 3-pixel-wide block and **every event is kept exactly
once**. (TET resizes integrated frames with bilinear interpolation, which
blurs and does not conserve counts; see docs/data.md.)

Reading a 10,000-recording set takes minutes, so :func:`load_cifar10_dvs`
can keep the integrated frames in an ``.npz`` cache (``cache_dir``): one file
per (T, frame size, split_by, train fraction, dtype), written atomically and
used again only while the folder lists the same recordings with the same
sizes (:func:`frame_cache_name`).
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from .aedat import SENSOR_SIZE, read_aedat
from .errors import format_error

__all__ = ["CIFAR10_DVS_CLASSES", "FrameDataset", "events_to_frames", "frame_cache_name", "frames_to_sequence",
           "list_recordings", "load_cifar10_dvs", "split_per_class"]

#: Class folders of the published CIFAR10-DVS archive, in label order.
CIFAR10_DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SPLITS = ("number", "time")


def _segment_ids(events: np.ndarray, T: int, split_by: str) -> np.ndarray:
    n = events.shape[0]
    if split_by == "number":
        per = n // T
        if per == 0:  # fewer events than frames: every slice is empty but the last, which takes the remainder
            return np.full(n, T - 1, dtype=np.int64)
        return np.minimum(np.arange(n, dtype=np.int64) // per, T - 1)
    t = events["t"].astype(np.int64)
    t0, t1 = int(t.min()), int(t.max())
    if t1 == t0:
        return np.zeros(n, dtype=np.int64)
    # frame k holds t0 + k*span/T <= t < t0 + (k+1)*span/T; integer arithmetic, no float rounding
    return np.minimum((t - t0) * T // (t1 - t0), T - 1)


def events_to_frames(events: np.ndarray, T: int, sensor_size=SENSOR_SIZE, out_size=(48, 48),
                     split_by: str = "number", dtype=np.float32) -> np.ndarray:
    """Integrate an event stream into T count frames with 2 polarity channels.

    Parameters
    ----------
    events : np.ndarray
        Structured (N,) :data:`~snn_core.data.aedat.EVENT_DTYPE` (fields t, x, y, p).
    T : int
        Number of frames (>= 1).
    sensor_size : (int, int)
        (H, W) the coordinates refer to; events outside are an error.
    out_size : (int, int) or None
        (H', W') after downsampling by coordinate binning (each output pixel
        counts the events of a block of input pixels; totals are conserved);
        ``None`` keeps ``sensor_size``.
    split_by : str
        ``"number"`` (equal event counts per frame, the TET setup) or ``"time"``
        (equal time windows).
    dtype : numpy dtype
        Of the returned counts.

    Returns
    -------
    np.ndarray
        (T, 2, H', W') event counts; channel 0 = polarity 0, channel 1 =
        polarity 1. The sum over everything equals N.
    """
    T = int(T)
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if split_by not in SPLITS:
        raise ValueError(f"split_by must be 'number' or 'time', got {split_by!r}")
    if events.dtype.names is None or not {"t", "x", "y", "p"} <= set(events.dtype.names):
        raise TypeError("events must be a structured array with fields t, x, y, p (see aedat.EVENT_DTYPE)")
    H, W = (int(s) for s in sensor_size)
    Ho, Wo = (H, W) if out_size is None else (int(s) for s in out_size)
    if not (0 < Ho <= H and 0 < Wo <= W):
        raise ValueError(f"out_size {out_size} must lie in 1..{sensor_size}")
    frames = np.zeros((T, 2, Ho, Wo), dtype=np.int64)
    n = events.shape[0]
    if n:
        x, y, p = (events[k].astype(np.int64) for k in ("x", "y", "p"))
        if x.min() < 0 or x.max() >= W or y.min() < 0 or y.max() >= H or not np.isin(p, (0, 1)).all():
            raise ValueError(f"events outside the sensor: need 0 <= x < {W}, 0 <= y < {H}, p in {{0, 1}}")
        frame = _segment_ids(events, T, split_by)
        flat = ((frame * 2 + p) * Ho + y * Ho // H) * Wo + x * Wo // W
        frames = np.bincount(flat, minlength=frames.size).reshape(frames.shape)
    return frames.astype(dtype)


def frames_to_sequence(frames, dtype=np.float32, out=None) -> np.ndarray:
    """A batch of frame stacks -> the engine's time-major network input.

    Parameters
    ----------
    frames : array_like
        (B, T, C, H, W), e.g. a batch of ``FrameDataset.x_train``.
    dtype : numpy dtype
        Of the result (float32 for the engine's float32 layers).
    out : np.ndarray, optional
        Reused buffer: C-contiguous, writable, ``dtype``, shape (C*H*W, T, B).

    Returns
    -------
    np.ndarray
        (T, B, C*H*W) with ``out[t, b] == frames[b, t].ravel()`` (channel-major
        features: c, then y, then x), a view of a C-contiguous feature-major
        (C*H*W, T, B) buffer (``out`` if given), the layout the layers and
        encoders use, so the first layer takes it without a copy.
    """
    x = np.asarray(frames)
    if x.ndim != 5:
        raise ValueError(f"frames must be (B, T, C, H, W), got shape {x.shape}")
    B, T = x.shape[:2]
    shape = (int(np.prod(x.shape[2:])), T, B)
    if out is None:
        buf = np.empty(shape, dtype=dtype)
    elif (isinstance(out, np.ndarray) and out.shape == shape and out.dtype == np.dtype(dtype)
          and out.flags.c_contiguous and out.flags.writeable):
        buf = out
    else:
        got = f"{out.shape} {out.dtype}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"out must be a writable C-contiguous {np.dtype(dtype)} array of shape (C*H*W, T, B) = "
                         f"{shape}, got {got}")
    buf[...] = x.reshape(B, T, -1).transpose(2, 1, 0)
    return buf.transpose(1, 2, 0)


def split_per_class(labels: np.ndarray, train_fraction: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic per-class split: in each class, the first ``ceil(f * n_c)`` samples train, the rest test.

    "First" is the order of ``labels`` (the reader sorts file names), as in
    spikingjelly's ``split_to_train_test_set`` that the TET setup uses (9:1).

    Returns
    -------
    (train_idx, test_idx) : tuple of int64 arrays
        Sorted, disjoint, covering ``0..len(labels)-1``.
    """
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    labels = np.asarray(labels)
    train = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        train.append(idx[:math.ceil(len(idx) * train_fraction)])
    train_idx = np.sort(np.concatenate(train)) if train else np.zeros(0, np.int64)
    test_idx = np.setdiff1d(np.arange(len(labels)), train_idx)
    return train_idx.astype(np.int64), test_idx.astype(np.int64)


class FrameDataset(NamedTuple):
    """Event-camera samples integrated into frames.

    Attributes
    ----------
    x_train, x_test : np.ndarray
        (N, T, 2, H, W) event counts (dtype as requested, float32 by default).
    y_train, y_test : np.ndarray
        int64 (N,) labels.
    classes : tuple of str
        Class names (the class folder names), indexed by label.
    files_train, files_test : tuple of str
        The recording each sample came from (relative to the root).
    name, source : str
        ``"cifar10-dvs"`` and the root folder.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple
    files_train: tuple
    files_test: tuple
    name: str
    source: str


def list_recordings(root: str | os.PathLike, classes=CIFAR10_DVS_CLASSES,
                    suffix: str = ".aedat") -> tuple[list[Path], np.ndarray, tuple]:
    """The recordings of a folder-per-class set, in the order :func:`load_cifar10_dvs` reads them.

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding the class folders.
    classes : sequence of str or None
        Class folder names in label order; ``None``: every sub-folder whose
        name does not start with ``.``, sorted.
    suffix : str
        File name ending of a recording.

    Returns
    -------
    (files, labels, classes) : tuple
        ``files`` list of Path (per class, sorted by name), ``labels`` int64
        (N,), ``classes`` tuple of str.

    Raises
    ------
    FileNotFoundError
        No class folders, or a named class folder missing.
    DataFormatError
        A class folder without recordings.
    """
    root = Path(root)
    if classes is None:
        classes = tuple(sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")))
        if not classes:
            raise FileNotFoundError(f"no class folders in {root} (expected e.g. {root / 'airplane'}/*{suffix})")
    files, labels = [], []
    for label, cls in enumerate(classes):
        folder = root / cls
        if not folder.is_dir():
            raise FileNotFoundError(f"missing class folder {folder}")
        found = sorted(folder.glob(f"*{suffix}"), key=lambda p: p.name)  # lexicographic, as torchvision's DatasetFolder
        if not found:
            raise format_error(folder, f"class folder holds no *{suffix} recordings")
        files += found
        labels += [label] * len(found)
    return files, np.asarray(labels, np.int64), tuple(classes)


#: Version of the frame cache file layout; a file of another version is rebuilt.
CACHE_VERSION = 1
_CACHE_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def frame_cache_name(T: int, out_size=(48, 48), split_by: str = "number", train_fraction: float = 0.9,
                     dtype=np.float32) -> str:
    """File name of the frame cache for one setting, e.g. ``frames_T10_48x48_number_train0.9_float32.npz``.

    Every setting that changes the frames or the split is in the name, so a
    different T (or size, split, dtype) never reads another setting's file.
    """
    h, w = SENSOR_SIZE if out_size is None else out_size
    return f"frames_T{int(T)}_{int(h)}x{int(w)}_{split_by}_train{train_fraction:g}_{np.dtype(dtype).name}.npz"


def _listing(root: Path, files) -> tuple[np.ndarray, np.ndarray]:
    """(relative posix paths as a str array, int64 sizes in bytes) of the recordings: what a cache must match."""
    rel = np.array([f.relative_to(root).as_posix() for f in files])
    sizes = np.array([f.stat().st_size for f in files], dtype=np.int64)
    return rel, sizes


def _read_cache(path: Path, root: Path, rel, sizes, classes: tuple, shape: tuple, dtype):
    """The cached :class:`FrameDataset` if ``path`` holds one for exactly these recordings, else None.

    ``shape`` is (T, 2, H, W) of one sample. A missing, damaged, older or
    stale file (other recordings, sizes or classes) gives None: the caller
    reads the recordings again and rewrites it.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            if (int(z["version"]) != CACHE_VERSION or z["files"].tolist() != rel.tolist()
                    or not np.array_equal(z["sizes"], sizes) or tuple(z["classes"].tolist()) != classes):
                return None
            arrays = {k: z[k] for k in _CACHE_ARRAYS}
            files_train, files_test = tuple(z["files_train"].tolist()), tuple(z["files_test"].tolist())
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile):
        return None  # FileNotFoundError included: no cache yet
    for k in ("x_train", "x_test"):
        if arrays[k].shape[1:] != shape or arrays[k].dtype != np.dtype(dtype):
            return None
    if len(files_train) + len(files_test) != len(rel) or len(arrays["x_train"]) != len(files_train):
        return None
    return FrameDataset(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], classes,
                        files_train, files_test, "cifar10-dvs", str(root.resolve()))


def _write_cache(path: Path, ds: FrameDataset, rel, sizes) -> None:
    """Write ``ds`` and the listing it was read from to ``path`` atomically (temporary file, then os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, version=np.int64(CACHE_VERSION), files=rel, sizes=sizes, classes=np.array(ds.classes),
                     files_train=np.array(ds.files_train, dtype=str), files_test=np.array(ds.files_test, dtype=str),
                     **{k: getattr(ds, k) for k in _CACHE_ARRAYS})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_cifar10_dvs(root: str | os.PathLike, T: int = 10, out_size=(48, 48), split_by: str = "number",
                     train_fraction: float = 0.9, classes=CIFAR10_DVS_CLASSES, dtype=np.float32,
                     reader: Callable | None = None, suffix: str = ".aedat",
                     cache_dir: str | os.PathLike | None = None) -> FrameDataset:
    """Read a folder-per-class event data set (CIFAR10-DVS layout) into frames with a 9:1 split.

    Layout: ``root/<class>/<recording>.aedat`` (the published zips extract to
    ``airplane/cifar10_airplane_0.aedat`` ...). Labels follow ``classes``;
    within a class the files are sorted by name and split with
    :func:`split_per_class`. Every recording is read (a 10,000-file set takes
    minutes), unless ``cache_dir`` holds the frames of an earlier call.

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding the class folders.
    T, out_size, split_by, dtype
        See :func:`events_to_frames` (TET: T = 10, 48x48, by number).
    train_fraction : float
        Per-class training share (TET: 0.9).
    classes : sequence of str or None
        Class folder names in label order; ``None``: all sub-folders, sorted.
    reader : callable, optional
        ``path -> events`` (structured, fields t, x, y, p, 128x128 sensor),
        e.g. a wrapper around ``tonic`` or ``expelliarmus`` for other formats;
        default :func:`~snn_core.data.aedat.read_aedat`.
    suffix : str
        File name ending of a recording.
    cache_dir : str or os.PathLike, optional
        Keep the frames in ``cache_dir /`` :func:`frame_cache_name` (an
        uncompressed ``.npz``, written atomically) and use that file instead
        of the recordings while the folder lists the same recordings (names,
        order, sizes) and classes. The cache does not know ``reader``: use one
        folder per reader. None: no cache.

    Returns
    -------
    FrameDataset
        ``x_*`` (N, T, 2, H', W').

    Raises
    ------
    FileNotFoundError
        Root or a class folder missing.
    DataFormatError
        A class folder without recordings, or a malformed recording (the
        message names the file).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"DVS data folder not found: {root}")
    files, labels, classes = list_recordings(root, classes, suffix)
    out_hw = SENSOR_SIZE if out_size is None else tuple(int(s) for s in out_size)
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir).expanduser() / frame_cache_name(T, out_size, split_by, train_fraction, dtype)
        rel_all, sizes = _listing(root, files)
        hit = _read_cache(cache, root, rel_all, sizes, classes, (int(T), 2, *out_hw), dtype)
        if hit is not None:
            return hit
    read = reader if reader is not None else (lambda p: read_aedat(p)[0])
    x = np.empty((len(files), int(T), 2, *out_hw), dtype=dtype)
    for i, f in enumerate(files):
        ev = read(f)
        try:
            x[i] = events_to_frames(ev, T, SENSOR_SIZE, out_size, split_by, dtype)
        except (ValueError, TypeError) as exc:
            raise format_error(f, str(exc)) from None
    tr, te = split_per_class(labels, train_fraction)
    rel = tuple(str(f.relative_to(root)) for f in files)
    ds = FrameDataset(x[tr], labels[tr], x[te], labels[te], classes,
                      tuple(rel[i] for i in tr), tuple(rel[i] for i in te), "cifar10-dvs", str(root.resolve()))
    if cache is not None:
        try:
            _write_cache(cache, ds, rel_all, sizes)
        except OSError as exc:
            warnings.warn(f"{cache}: could not write the frame cache ({exc.strerror or exc}); the frames are not "
                          f"cached", stacklevel=2)
    return ds
