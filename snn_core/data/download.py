"""Opt-in download of the CIFAR-10/100 and CIFAR10-DVS archives: published URLs, MD5 checks, safe extraction.

Nothing here runs unless called: the readers never download. Each data set in
:data:`ARCHIVES` lists its archive files with the URLs and MD5 sums their
publishers give (CIFAR: https://www.cs.toronto.edu/~kriz/cifar.html;
CIFAR10-DVS: figshare article 4724671, one zip per class). An archive is
streamed to a temporary file beside its destination, checked, and only then
renamed into place, so an interrupted or corrupt download never leaves a file
under the final name. Extraction goes through a temporary folder too (tar
members filtered with Python's ``"data"`` filter, zip members checked to stay
inside it) and never replaces an existing file or folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import NamedTuple

from .errors import ChecksumError

__all__ = ["ARCHIVES", "Archive", "ArchiveSet", "default_data_root", "download_archives", "fetch_verified",
           "file_digest", "md5sum", "verify_digest"]


class Archive(NamedTuple):
    """One published file: its name, the URLs to try in order, its MD5 (hex)."""

    filename: str
    urls: tuple
    md5: str


class ArchiveSet(NamedTuple):
    """A data set's archives, a one-line description, and how to read the result."""

    archives: tuple
    description: str
    reader: str


_TORONTO = "https://www.cs.toronto.edu/~kriz/"
_FIGSHARE = "https://ndownloader.figshare.com/files/"
_DVS = (  # class, figshare file id, md5
    ("airplane", 7712788, "0afd5c4bf9ae06af762a77b180354fdd"),
    ("automobile", 7712791, "8438dfeba3bc970c94962d995b1b9bdd"),
    ("bird", 7712794, "a9c207c91c55b9dc2002dc21c684d785"),
    ("cat", 7712812, "52c63c677c2b15fa5146a8daf4d56687"),
    ("deer", 7712815, "b6bf21f6c04d21ba4e23fc3e36c8a4a3"),
    ("dog", 7712818, "f379ebdf6703d16e0a690782e62639c3"),
    ("frog", 7712842, "cad6ed91214b1c7388a5f6ee56d08803"),
    ("horse", 7712851, "e7cbbf77bec584ffbf913f00e682782a"),
    ("ship", 7712836, "41c7bd7d6b251be82557c6cce9a7d5c9"),
    ("truck", 7712839, "89f3922fd147d9aeff89e76a2b0b70a7"),
)

#: name -> ArchiveSet. Keys are what ``download_archives`` (and the CLI) accept.
ARCHIVES = {
    "cifar10": ArchiveSet((Archive("cifar-10-python.tar.gz", (_TORONTO + "cifar-10-python.tar.gz",),
                                   "c58f30108f718f92721af3b95e74349a"),),
                          "CIFAR-10, python pickle batches (163 MB), 50,000 train / 10,000 test, 10 classes",
                          "snn_core.data.load_cifar10"),
    "cifar10-binary": ArchiveSet((Archive("cifar-10-binary.tar.gz", (_TORONTO + "cifar-10-binary.tar.gz",),
                                          "c32a1d4ab5d03f1284b67883e8d87530"),),
                                 "CIFAR-10, binary records (162 MB)", "snn_core.data.load_cifar10"),
    "cifar100": ArchiveSet((Archive("cifar-100-python.tar.gz", (_TORONTO + "cifar-100-python.tar.gz",),
                                    "eb9058c3a382ffc7106e4002c42a8d85"),),
                           "CIFAR-100, python pickles (161 MB), 100 fine / 20 coarse classes",
                           "snn_core.data.load_cifar100"),
    "cifar100-binary": ArchiveSet((Archive("cifar-100-binary.tar.gz", (_TORONTO + "cifar-100-binary.tar.gz",),
                                           "03b5dce01913d631647c71ecec9e9cb8"),),
                                  "CIFAR-100, binary records (161 MB)", "snn_core.data.load_cifar100"),
    "cifar10-dvs": ArchiveSet(tuple(Archive(f"{c}.zip", (f"{_FIGSHARE}{fid}",), md5) for c, fid, md5 in _DVS),
                              "CIFAR10-DVS, AEDAT 2.0 event recordings, 10 zips (about 6.5 GB unpacked), "
                              "1,000 per class", "snn_core.data.load_cifar10_dvs"),
}


def default_data_root(name: str) -> Path:
    """``$XDG_CACHE_HOME/snn_core/<name>``, or ``~/.cache/snn_core/<name>``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "snn_core" / name


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file (``"sha256"``, ``"md5"``, any ``hashlib`` name), read in chunks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()


def md5sum(path: str | os.PathLike) -> str:
    """Hex MD5 of a file, the checksum the CIFAR and CIFAR10-DVS publishers give."""
    return file_digest(path, "md5")


def verify_digest(path: str | os.PathLike, algorithm: str, expected: str) -> None:
    """Raise :class:`~snn_core.data.errors.ChecksumError` unless the file's digest equals ``expected`` (hex)."""
    actual = file_digest(path, algorithm)
    if actual != expected.lower():
        raise ChecksumError(f"{os.fspath(path)}: {algorithm} mismatch: expected {expected}, got {actual}")


def fetch_verified(url: str, dest: str | os.PathLike, algorithm: str, expected: str, timeout: float = 60.0) -> None:
    """Download ``url`` to ``dest`` only if its digest matches; atomic, nothing left behind on failure.

    The body is streamed into a temporary file in ``dest``'s folder, checked
    with :func:`verify_digest`, then renamed to ``dest`` (so an interrupted or
    corrupt download never leaves a plausible-looking file under the final
    name). ``url`` may be ``https://``, ``http://`` or ``file://``.

    Raises
    ------
    OSError
        The URL could not be read (``urllib.error.URLError`` is an OSError).
    ChecksumError
        The downloaded bytes have another digest.
    """
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                out.write(chunk)
        verify_digest(tmp, algorithm, expected)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _extract(archive: Path, root: Path) -> list[str]:
    """Unpack into a temporary folder under ``root``, then move each top-level entry into ``root``."""
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{archive.name}.extract."))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                base = tmp.resolve()
                for m in zf.namelist():
                    if not (tmp / m).resolve().is_relative_to(base):
                        raise OSError(f"{archive}: member {m!r} would be written outside the target folder")
                zf.extractall(tmp)
        else:
            with tarfile.open(archive, "r:*") as tf:
                tf.extractall(tmp, filter="data")
        entries = sorted(p.name for p in tmp.iterdir() if p.name != "__MACOSX")
        clash = [e for e in entries if (root / e).exists()]
        if clash:
            raise FileExistsError(f"{archive.name}: {', '.join(str(root / e) for e in clash)} already exist(s); "
                                  f"not overwriting (move them away to extract again)")
        for e in entries:
            os.replace(tmp / e, root / e)
        return entries
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise OSError(f"{archive}: cannot extract ({exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download_archives(name: str, root: str | os.PathLike | None = None, timeout: float = 60.0,
                      extract: bool = True) -> Path:
    """Download (opt-in; needs internet), verify and extract one data set of :data:`ARCHIVES`.

    An archive already in ``root`` with the right MD5 is not fetched again;
    one already extracted (marker file ``.<archive>.extracted``) is not
    extracted again.

    Parameters
    ----------
    name : str
        A key of :data:`ARCHIVES`: ``cifar10``, ``cifar10-binary``, ``cifar100``,
        ``cifar100-binary``, ``cifar10-dvs``.
    root : str or os.PathLike, optional
        Folder for archives and their contents; default :func:`default_data_root` ``(name)``.
    timeout : float
        Per-request socket timeout in seconds.
    extract : bool
        Unpack the archives into ``root`` (default) or only fetch them.

    Returns
    -------
    Path
        ``root``, ready for the reader named in ``ARCHIVES[name].reader``.

    Raises
    ------
    ValueError
        Unknown ``name``.
    OSError
        An archive could not be fetched with the right MD5 from any URL (one
        line naming the file, the URLs tried and why), could not be extracted,
        or its extraction would overwrite something (``FileExistsError``).
    """
    if name not in ARCHIVES:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(ARCHIVES)}")
    root = Path(root).expanduser() if root is not None else default_data_root(name)
    root.mkdir(parents=True, exist_ok=True)
    for arc in ARCHIVES[name].archives:
        dest = root / arc.filename
        if not (dest.is_file() and md5sum(dest) == arc.md5):  # already there and intact: keep it
            errors = []
            for url in arc.urls:
                try:
                    fetch_verified(url, dest, "md5", arc.md5, timeout)
                    break
                except (OSError, ValueError) as exc:  # URLError is an OSError; ChecksumError a ValueError
                    errors.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
            else:
                raise OSError(f"could not download {arc.filename} into {root} ({'; '.join(errors)}); without "
                              f"internet, fetch it elsewhere and copy it there (md5 {arc.md5})")
        marker = root / f".{arc.filename}.extracted"
        if extract and not marker.exists():
            entries = _extract(dest, root)
            marker.write_text("\n".join(entries) + "\n")
    return root
