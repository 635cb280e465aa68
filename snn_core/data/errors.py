"""The exception types of the data readers and downloads.

Every malformed input file (truncated pickle or binary batch, wrong record
size, forbidden pickle content, bad AEDAT header, odd byte count, labels out
of range, a class folder without recordings) raises :class:`DataFormatError`
with a one-line message that starts with the offending file's path. It derives
from ``ValueError`` so that the command line reports it as a user error
(one line, no traceback), like every other bad-input error of snn_core.
"""

from __future__ import annotations

import os

__all__ = ["ChecksumError", "DataFormatError", "format_error"]


class DataFormatError(ValueError):
    """A data file is malformed; the message names the file and the problem."""


class ChecksumError(ValueError):
    """A downloaded file does not have the expected checksum (sha256 or MD5)."""


def format_error(path: str | os.PathLike, problem: str) -> DataFormatError:
    """``DataFormatError("<path>: <problem>")``, the single message format of the readers, on one line.

    A problem that quotes another library's message (e.g. pickle's, which
    may span lines) has its line breaks folded into spaces.
    """
    return DataFormatError(f"{os.fspath(path)}: {' '.join(problem.split())}")
