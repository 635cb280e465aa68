"""CIFAR-10 and CIFAR-100 in both published formats: python pickle batches and binary records.

The archives from https://www.cs.toronto.edu/~kriz/cifar.html unpack to one
folder each (layouts in :data:`CIFAR_LAYOUTS`):

==================== ===================================================== ===============================
folder               files                                                 per image
==================== ===================================================== ===============================
cifar-10-batches-py  data_batch_1..5, test_batch, batches.meta (pickles)   row of ``data`` + ``labels[i]``
cifar-10-batches-bin data_batch_1..5.bin, test_batch.bin, batches.meta.txt 1 label byte + 3072 pixel bytes
cifar-100-python     train, test, meta (pickles)                           ``fine_labels``, ``coarse_labels``
cifar-100-binary     train.bin, test.bin, {coarse,fine}_label_names.txt    coarse byte + fine byte + 3072
==================== ===================================================== ===============================

3072 pixel bytes = 1024 red, 1024 green, 1024 blue values, each plane a
row-major 32x32 image, so a row reshapes directly to (3, 32, 32).

The pickles were written by Python 2 (protocol 2, ``str`` keys that Python 3
reads as ``bytes``) and hold a NumPy uint8 array. They are read with a
restricted unpickler that resolves exactly three globals, NumPy's array
reconstruction (checked to build a plain ``ndarray``), ``numpy.ndarray`` and
``numpy.dtype`` (refusing object dtypes); any other class or function in a
file is refused with :class:`~snn_core.data.errors.DataFormatError`, so a
tampered batch cannot run code.
"""

from __future__ import annotations

import codecs
import os
import pickle
import shutil
import struct
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import format_error

__all__ = [
    "CIFAR_LAYOUTS",
    "ImageDataset",
    "find_cifar",
    "load_cifar",
    "load_cifar10",
    "load_cifar100",
    "read_cifar_bin",
    "read_cifar_pickle",
    "write_cifar",
]

IMAGE_SHAPE = (3, 32, 32)
_PIXELS = 3 * 32 * 32


class _Layout(NamedTuple):
    folder: str
    train: tuple
    test: tuple
    meta: tuple          # pickle: one file; bin: fine (or only) names file, then coarse names file
    n_classes: int
    n_coarse: int        # 0 for CIFAR-10


#: (dataset, format) -> folder, train/test files, metadata files, class counts.
CIFAR_LAYOUTS = {
    ("cifar10", "python"): _Layout("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                                   ("test_batch",), ("batches.meta",), 10, 0),
    ("cifar10", "binary"): _Layout("cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
                                   ("test_batch.bin",), ("batches.meta.txt",), 10, 0),
    ("cifar100", "python"): _Layout("cifar-100-python", ("train",), ("test",), ("meta",), 100, 20),
    ("cifar100", "binary"): _Layout("cifar-100-binary", ("train.bin",), ("test.bin",),
                                    ("fine_label_names.txt", "coarse_label_names.txt"), 100, 20),
}
FORMATS = ("python", "binary")


class ImageDataset(NamedTuple):
    """A train/test set of colour images.

    Attributes
    ----------
    x_train, x_test : np.ndarray
        uint8 (N, 3, 32, 32), channels R, G, B, values 0..255.
    y_train, y_test : np.ndarray
        int64 (N,) class labels 0..len(classes)-1 (CIFAR-100: the fine labels).
    classes : tuple of str
        Class names, indexed by label.
    name : str
        ``"cifar10"`` or ``"cifar100"``.
    source : str
        The folder the files were read from.
    fmt : str
        ``"python"`` (pickle batches) or ``"binary"``.
    y_train_coarse, y_test_coarse : np.ndarray or None
        CIFAR-100 only: int64 (N,) superclass labels 0..19.
    coarse_classes : tuple of str or None
        CIFAR-100 only: the 20 superclass names.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple
    name: str
    source: str
    fmt: str
    y_train_coarse: np.ndarray | None = None
    y_test_coarse: np.ndarray | None = None
    coarse_classes: tuple | None = None


# --------------------------------------------------------------------------- safe unpickling


def _new_array(subtype, shape, typecode):
    # Stands in for numpy's ndarray reconstructor: an empty plain ndarray whose
    # shape, dtype and contents the pickle's BUILD opcode then sets via
    # ndarray.__setstate__ (which checks them against the raw bytes). The shape
    # argument (always (0,) from NumPy) is ignored so a corrupt file cannot
    # make us allocate a huge array.
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"array subtype {subtype!r} is not allowed")
    return np.ndarray((0,), dtype=np.uint8)


def _plain_dtype(spec, align=False, copy=True):
    dt = np.dtype(spec.decode("ascii") if isinstance(spec, bytes) else spec)
    if dt.hasobject:
        raise pickle.UnpicklingError("object arrays are not allowed")
    return dt


def _latin1_bytes(text, encoding="latin-1"):
    # How Python 3 pickles bytes at protocol 2 (files re-saved by Python 3).
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not allowed")
    return codecs.encode(text, "latin-1")


_ALLOWED_GLOBALS = {
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy.core.multiarray", "_reconstruct"): _new_array,
    ("numpy._core.multiarray", "_reconstruct"): _new_array,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _plain_dtype,
}


class _Py2Pickler(pickle._Pickler):
    """Protocol-2 pickler that writes ``bytes`` as Python 2 ``str`` (BINSTRING), as the published files do."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _dump_py2(obj, path: Path) -> None:
    with open(path, "wb") as fh:
        _Py2Pickler(fh, protocol=2).dump(obj)


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in :data:`_ALLOWED_GLOBALS`; builtin containers need none."""

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name} (only NumPy arrays, "
                                         f"lists, dicts, numbers and strings are allowed)") from None


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            obj = _RestrictedUnpickler(fh, encoding="bytes").load()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise format_error(path, f"cannot read: {exc.strerror or exc}") from None
    except Exception as exc:  # EOFError, UnpicklingError, ValueError from __setstate__, ...
        raise format_error(path, f"truncated or corrupt pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise format_error(path, f"expected a pickled dict, got {type(obj).__name__}")
    # Python 2 str keys arrive as bytes; a re-pickled (Python 3) file has str keys.
    return {(k.decode("latin-1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _names(path: Path, value, key: str) -> tuple:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (bytes, str)) for v in value):
        raise format_error(path, f"{key!r} must be a list of strings")
    return tuple(v.decode("utf-8") if isinstance(v, bytes) else v for v in value)


def _labels(path: Path, value, key: str, n: int, n_classes: int) -> np.ndarray:
    try:
        y = np.asarray(value)
    except Exception:
        y = np.asarray([], dtype=object)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise format_error(path, f"{key!r} must be a list of integers")
    if y.shape[0] != n:
        raise format_error(path, f"{key!r} has {y.shape[0]} labels but 'data' has {n} images")
    if n and (y.min() < 0 or y.max() >= n_classes):
        raise format_error(path, f"{key!r} out of range 0..{n_classes - 1}: found {int(y.min())}..{int(y.max())}")
    return y.astype(np.int64)


def read_cifar_pickle(path: str | os.PathLike, label_keys=("labels",), n_classes=(10,)) -> tuple:
    """Read one python-format batch (e.g. ``data_batch_1`` or CIFAR-100 ``train``).

    Parameters
    ----------
    path : str or os.PathLike
        The pickle file.
    label_keys : sequence of str
        Label lists to return: ``("labels",)`` for CIFAR-10,
        ``("fine_labels", "coarse_labels")`` for CIFAR-100.
    n_classes : sequence of int
        Number of classes of each label list (labels are range-checked).

    Returns
    -------
    (images, labels) : tuple
        ``images`` uint8 (N, 3, 32, 32); ``labels`` a tuple of int64 (N,)
        arrays, one per ``label_keys``.

    Raises
    ------
    FileNotFoundError
        No such file.
    DataFormatError
        Truncated or corrupt pickle, a forbidden global, missing keys, ``data``
        not uint8 (N, 3072), label count or range wrong.
    """
    path = Path(path)
    d = _unpickle(path)
    missing = [k for k in ("data", *label_keys) if k not in d]
    if missing:
        raise format_error(path, f"missing key(s) {missing} (has {sorted(d)})")
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise format_error(path, f"'data' must be a uint8 array of shape (N, {_PIXELS}), got {got}")
    n = data.shape[0]
    labels = tuple(_labels(path, d[k], k, n, c) for k, c in zip(label_keys, n_classes))
    return np.ascontiguousarray(data).reshape(n, *IMAGE_SHAPE), labels


def read_cifar_bin(path: str | os.PathLike, n_label_bytes: int = 1, n_classes=(10,)) -> tuple:
    """Read one binary-format batch (e.g. ``data_batch_1.bin`` or CIFAR-100 ``train.bin``).

    Parameters
    ----------
    path : str or os.PathLike
        File of fixed-size records: ``n_label_bytes`` label bytes then 3072
        pixel bytes (CIFAR-10: 1 label byte; CIFAR-100: coarse then fine).
    n_label_bytes : int
        1 (CIFAR-10) or 2 (CIFAR-100).
    n_classes : sequence of int
        Number of classes of each label byte, in file order (CIFAR-100: (20, 100)).

    Returns
    -------
    (images, labels) : tuple
        ``images`` uint8 (N, 3, 32, 32); ``labels`` a tuple of int64 (N,)
        arrays in file order (CIFAR-100: coarse, fine).

    Raises
    ------
    FileNotFoundError
        No such file.
    DataFormatError
        Empty file, size not a multiple of the record size, label out of range.
    """
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)
    rec = n_label_bytes + _PIXELS
    if raw.size == 0 or raw.size % rec:
        raise format_error(path, f"{raw.size} bytes is not a whole number of {rec}-byte records "
                                 f"({n_label_bytes} label byte(s) + {_PIXELS} pixels); truncated or wrong format")
    recs = raw.reshape(-1, rec)
    labels = []
    for j, c in enumerate(n_classes):
        y = recs[:, j].astype(np.int64)
        if y.max() >= c:
            bad = int(np.argmax(y >= c))
            raise format_error(path, f"record {bad}: label byte {j} is {int(y[bad])}, expected 0..{c - 1}")
        labels.append(y)
    images = np.ascontiguousarray(recs[:, n_label_bytes:]).reshape(-1, *IMAGE_SHAPE)
    return images, tuple(labels)


def _read_names_txt(path: Path) -> tuple:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise format_error(path, "class names file is not UTF-8 text") from None
    return tuple(line.strip() for line in text.splitlines() if line.strip())


# --------------------------------------------------------------------------- folders


def _find_folder(root: Path, name: str, fmt: str) -> tuple[Path, str]:
    fmts = FORMATS if fmt == "auto" else (fmt,)
    if fmt not in (*FORMATS, "auto"):
        raise ValueError(f"fmt must be 'python', 'binary' or 'auto', got {fmt!r}")
    for f in fmts:
        lay = CIFAR_LAYOUTS[(name, f)]
        for cand in (root / lay.folder, root):
            if (cand / lay.train[0]).is_file():
                return cand, f
    looked = ", ".join(str(root / CIFAR_LAYOUTS[(name, f)].folder) for f in fmts)
    raise FileNotFoundError(f"no {name} data under {root}: looked for {looked} (or the batch files directly in "
                            f"{root}); download with snn_core.data.download_archives({name!r})")


def find_cifar(root: str | os.PathLike) -> tuple[str, str] | None:
    """Which CIFAR set a folder holds, from file names alone (nothing is read).

    A set is found the way :func:`load_cifar` looks for it: its first
    training file (``data_batch_1``, ``data_batch_1.bin``, ``train`` or
    ``train.bin``) in the data folder of a layout of :data:`CIFAR_LAYOUTS`
    under ``root`` or directly in ``root``.

    Parameters
    ----------
    root : str or os.PathLike
        The folder an archive was extracted into, or the data folder itself.

    Returns
    -------
    (name, fmt) or None
        ``("cifar10" | "cifar100", "python" | "binary")``; python when both
        formats are there (as ``fmt="auto"``); None when there is no CIFAR data.

    Raises
    ------
    ValueError
        ``root`` holds both CIFAR-10 and CIFAR-100 data (which one is meant?).
    """
    root = Path(root).expanduser()
    found = {}
    for (name, fmt), lay in CIFAR_LAYOUTS.items():
        if name not in found and any((c / lay.train[0]).is_file() for c in (root / lay.folder, root)):
            found[name] = fmt  # FORMATS order: python first
    if len(found) > 1:
        raise ValueError(f"{root}: holds both CIFAR-10 and CIFAR-100 data; pass the data folder of one of them "
                         f"(e.g. {root / CIFAR_LAYOUTS[('cifar10', found['cifar10'])].folder})")
    return next(iter(found.items()), None)


def _need(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"missing file {path}")
    return path


def load_cifar(name: str, root: str | os.PathLike, fmt: str = "auto") -> ImageDataset:
    """Load CIFAR-10 or CIFAR-100 from an extracted archive.

    Parameters
    ----------
    name : str
        ``"cifar10"`` or ``"cifar100"``.
    root : str or os.PathLike
        The folder the archive was extracted into (holding e.g.
        ``cifar-10-batches-py``), or that data folder itself.
    fmt : str
        ``"python"``, ``"binary"`` or ``"auto"`` (python if present, else binary).

    Returns
    -------
    ImageDataset
        CIFAR-10: 50,000 train / 10,000 test; CIFAR-100 the same with fine
        labels in ``y_*`` and superclasses in ``y_*_coarse``.

    Raises
    ------
    FileNotFoundError
        No data folder, or one of its files missing.
    DataFormatError
        Any file malformed (the message names it), or metadata that does not
        match the number of classes.
    """
    if name not in ("cifar10", "cifar100"):
        raise ValueError(f"unknown CIFAR set {name!r}; expected 'cifar10' or 'cifar100'")
    folder, fmt = _find_folder(Path(root).expanduser(), name, fmt)
    lay = CIFAR_LAYOUTS[(name, fmt)]
    meta = [_need(folder / m) for m in lay.meta]
    if fmt == "python":
        m = _unpickle(meta[0])
        key = "label_names" if name == "cifar10" else "fine_label_names"
        if key not in m:
            raise format_error(meta[0], f"missing key {key!r}")
        classes = _names(meta[0], m[key], key)
        coarse = _names(meta[0], m.get("coarse_label_names"), "coarse_label_names") if lay.n_coarse else None
        keys = ("labels",) if name == "cifar10" else ("fine_labels", "coarse_labels")
        ncls = (lay.n_classes,) if name == "cifar10" else (lay.n_classes, lay.n_coarse)

        def read(p):
            x, ys = read_cifar_pickle(p, keys, ncls)
            return x, ys[0], (ys[1] if lay.n_coarse else None)
    else:
        classes = _read_names_txt(meta[0])
        coarse = _read_names_txt(meta[1]) if lay.n_coarse else None
        nbytes = 1 if name == "cifar10" else 2
        ncls = (lay.n_classes,) if name == "cifar10" else (lay.n_coarse, lay.n_classes)

        def read(p):
            x, ys = read_cifar_bin(p, nbytes, ncls)
            return (x, ys[0], None) if nbytes == 1 else (x, ys[1], ys[0])
    if len(classes) != lay.n_classes:
        raise format_error(meta[0], f"{len(classes)} class names, expected {lay.n_classes}")
    if lay.n_coarse and len(coarse) != lay.n_coarse:
        raise format_error(meta[-1], f"{len(coarse)} superclass names, expected {lay.n_coarse}")

    def split(files):
        parts = [read(_need(folder / f)) for f in files]
        xs, ys, cs = zip(*parts)
        return np.concatenate(xs), np.concatenate(ys), (np.concatenate(cs) if lay.n_coarse else None)

    xtr, ytr, ctr = split(lay.train)
    xte, yte, cte = split(lay.test)
    return ImageDataset(xtr, ytr, xte, yte, classes, name, str(folder.resolve()), fmt, ctr, cte, coarse)


def load_cifar10(root: str | os.PathLike, fmt: str = "auto") -> ImageDataset:
    """:func:`load_cifar` ``("cifar10", root, fmt)``."""
    return load_cifar("cifar10", root, fmt)


def load_cifar100(root: str | os.PathLike, fmt: str = "auto") -> ImageDataset:
    """:func:`load_cifar` ``("cifar100", root, fmt)``: fine labels in ``y_*``, superclasses in ``y_*_coarse``."""
    return load_cifar("cifar100", root, fmt)


# --------------------------------------------------------------------------- writer


def _check_images(x, y, n_classes, what):
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"{what} images must be uint8 (N, 3, 32, 32), got {x.dtype} {x.shape}")
    y = np.asarray(y)
    if y.shape != (x.shape[0],) or y.dtype.kind not in "iu" or (y.size and (y.min() < 0 or y.max() >= n_classes)):
        raise ValueError(f"{what} labels must be {x.shape[0]} integers in 0..{n_classes - 1}")
    return x, y


def write_cifar(root: str | os.PathLike, name: str, fmt: str, x_train, y_train, x_test, y_test,
                classes=None, y_train_coarse=None, y_test_coarse=None, coarse_classes=None) -> Path:
    """Write a data set in the published CIFAR layout (for tests and generated data).

    The files are byte-compatible with the originals: pickles with protocol 2,
    ``bytes`` keys and a uint8 ``data`` array; binary records as published.
    CIFAR-10 training data is split into 5 batches (``np.array_split``).

    Parameters
    ----------
    root : str or os.PathLike
        Parent folder; the data folder (e.g. ``cifar-10-batches-py``) is
        created in it and must not exist yet.
    name, fmt : str
        ``"cifar10"``/``"cifar100"`` and ``"python"``/``"binary"``.
    x_train, x_test : array_like
        uint8 (N, 3, 32, 32).
    y_train, y_test : array_like
        Integer labels (fine labels for CIFAR-100).
    classes, coarse_classes : sequence of str, optional
        Default ``class0, class1, ...`` / ``super0, ...``.
    y_train_coarse, y_test_coarse : array_like, optional
        CIFAR-100 superclass labels; default ``fine // 5``.

    Returns
    -------
    Path
        The data folder, ready for :func:`load_cifar`.

    Raises
    ------
    FileExistsError
        The data folder exists (nothing is overwritten).
    ValueError
        Images not uint8 (N, 3, 32, 32), labels out of range, or fewer images
        than batch files (CIFAR-10 needs at least 5 training images).
    """
    lay = CIFAR_LAYOUTS[(name, fmt)]
    x_train, y_train = _check_images(x_train, y_train, lay.n_classes, "train")
    x_test, y_test = _check_images(x_test, y_test, lay.n_classes, "test")
    classes = tuple(classes) if classes is not None else tuple(f"class{i}" for i in range(lay.n_classes))
    if lay.n_coarse:
        coarse_classes = tuple(coarse_classes) if coarse_classes is not None else tuple(
            f"super{i}" for i in range(lay.n_coarse))
        y_train_coarse = np.asarray(y_train // 5 if y_train_coarse is None else y_train_coarse)
        y_test_coarse = np.asarray(y_test // 5 if y_test_coarse is None else y_test_coarse)
    if len(x_train) < len(lay.train) or len(x_test) < len(lay.test):
        raise ValueError(f"{name} has {len(lay.train)} training batch file(s) and {len(lay.test)} test file(s); "
                         f"give at least one image for each (got {len(x_train)} train, {len(x_test)} test)")
    root = Path(root).expanduser()
    final = root / lay.folder
    if final.exists():
        raise FileExistsError(f"{final} exists; not overwriting it")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{lay.folder}."))
    try:
        n_parts = len(lay.train)
        parts = [("train", p) for p in np.array_split(np.arange(len(y_train)), n_parts)]
        parts.append(("test", np.arange(len(y_test))))
        files = (*lay.train, *lay.test)
        for fname, (split, idx) in zip(files, parts):
            x = (x_train if split == "train" else x_test)[idx]
            y = (y_train if split == "train" else y_test)[idx]
            c = None if not lay.n_coarse else (y_train_coarse if split == "train" else y_test_coarse)[idx]
            if fmt == "python":
                d = {b"batch_label": f"{split} batch".encode(), b"data": x.reshape(len(x), _PIXELS),
                     b"filenames": [f"img_{i}.png".encode() for i in idx]}
                if lay.n_coarse:
                    d[b"fine_labels"], d[b"coarse_labels"] = [int(v) for v in y], [int(v) for v in c]
                else:
                    d[b"labels"] = [int(v) for v in y]
                _dump_py2(d, tmp / fname)
            else:
                lab = [y[:, None]] if not lay.n_coarse else [c[:, None], y[:, None]]
                np.concatenate([*(v.astype(np.uint8) for v in lab), x.reshape(len(x), -1)], axis=1).tofile(tmp / fname)
        if fmt == "python":
            meta = ({b"label_names": [s.encode() for s in classes], b"num_cases_per_batch": len(parts[0][1]),
                     b"num_vis": _PIXELS} if not lay.n_coarse else
                    {b"fine_label_names": [s.encode() for s in classes],
                     b"coarse_label_names": [s.encode() for s in coarse_classes]})
            _dump_py2(meta, tmp / lay.meta[0])
        else:
            (tmp / lay.meta[0]).write_text("\n".join(classes) + "\n", encoding="utf-8")
            if lay.n_coarse:
                (tmp / lay.meta[1]).write_text("\n".join(coarse_classes) + "\n", encoding="utf-8")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
