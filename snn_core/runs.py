"""Run folders: one run per folder, held by an exclusive lock while it writes.

A run folder holds ``best.h5``, ``last.h5`` and ``summary.json`` (and
``figures/`` once plotted). :class:`RunDir` is what :meth:`Trainer.fit
<snn_core.training.Trainer.fit>` holds while it trains:

- **Lock.** ``.snn_core.lock`` in the folder is locked exclusively
  (``fcntl.flock``; the kernel drops the lock when the process ends, however
  it ends, so a killed run never leaves a stale lock). A second run into the
  same folder fails at once with :class:`RunDirError` naming the holder
  (pid, host, start time, command line), which the lock file records.
- **No silent overwrite.** A folder that already holds another run's files is
  refused unless ``overwrite=True`` (``--overwrite``); then the old run's
  files are deleted *before* training starts, so a new run killed early never
  leaves a mixture of two runs. A run that continues its own files (a resume
  from a checkpoint in this folder, or a second ``fit`` of the same Trainer)
  is not "another run".
- **Temporary files.** Writers put their temporary files next to the target
  under names that carry their pid (:func:`temp_path`); only the lock holder
  removes leftovers, which can then only come from dead processes.

POSIX only (``fcntl``); elsewhere the lock is skipped with a warning.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import warnings
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = ".snn_core.lock"
#: the files that make a folder a run folder (deleted by ``overwrite=True``)
RUN_FILES = ("best.h5", "last.h5", "summary.json")


class RunDirError(RuntimeError):
    """A run folder that is locked by another process, or holds another run."""


def check_out_dir(path) -> Path:
    """``path`` as a Path; rejects an empty name (it would write into the current folder)."""
    if path is None or str(path).strip() == "":
        raise ValueError("out_dir: empty path; give the folder for the run's files (e.g. runs/esl)")
    return Path(path)


def temp_path(path) -> Path:
    """A temporary name next to ``path`` owned by this process: ``.<name>.tmp-<pid>``."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def holds_run(directory) -> list:
    """Names of the run files present in ``directory`` (empty: not a run folder)."""
    directory = Path(directory)
    return [n for n in RUN_FILES if (directory / n).exists()]


def _holder(fh):
    try:
        fh.seek(0)
        info = json.loads(fh.read() or "{}")
        return (f"pid {info.get('pid', '?')} on {info.get('host', '?')}, started {info.get('started', '?')}, "
                f"command: {info.get('command', '?')}")
    except (OSError, ValueError):
        return "holder unknown"


class RunDir:
    """Exclusive use of a run folder; a context manager (``with RunDir(path): ...``).

    Parameters
    ----------
    path : str or Path
        The run folder (created with its parents).
    overwrite : bool
        Replace another run's files found in the folder (deleted on entry).
    continuing : bool
        The files in the folder are this run's own (resume, repeated ``fit``).
    """

    def __init__(self, path, overwrite=False, continuing=False):
        self.path = check_out_dir(path)
        self.overwrite, self.continuing = bool(overwrite), bool(continuing)
        self._fh = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    def acquire(self):
        """Create and lock the folder, check for another run, clean leftovers."""
        d = self.path
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OSError(f"output directory {d}: cannot create it ({e.strerror or e})") from None
        if not d.is_dir():
            raise NotADirectoryError(f"output directory {d}: exists and is not a folder")
        if not os.access(d, os.W_OK):
            raise PermissionError(f"output directory {d}: not writable")
        if fcntl is None:
            warnings.warn("run folder locking needs fcntl (POSIX); running without a lock", RuntimeWarning)
        else:
            fh = open(d / LOCK_NAME, "a+")
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _holder(fh)
                fh.close()
                raise RunDirError(f"output directory {d} is in use by another run ({holder}); wait for it to "
                                  "finish or choose another --out-dir") from None
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                                 "command": " ".join(sys.argv)}))
            fh.flush()
            self._fh = fh
        try:
            present = holds_run(d)
            if present and not self.continuing:
                if not self.overwrite:
                    raise RunDirError(f"output directory {d} already holds a run ({', '.join(present)}); pass "
                                      "--overwrite (overwrite=True) to replace it, --resume "
                                      f"{d / 'last.h5'} to continue it, or choose another --out-dir")
                for name in present:
                    (d / name).unlink()
            for stale in d.glob(".*.tmp-*"):  # we hold the lock: left by a process that died mid-write
                stale.unlink(missing_ok=True)
        except BaseException:
            self.release()
            raise

    def release(self):
        """Unlock (the lock file stays; an unlocked lock file means nothing)."""
        if self._fh is not None:
            try:
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            finally:
                self._fh.close()
                self._fh = None


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` atomically (temp file, fsync, rename)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
