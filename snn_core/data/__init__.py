"""Data: MNIST loading (embedded sample, IDX directories, download) and spike encoders.

Images are uint8 (N, 784) rows; :func:`to_float` gives float32 [0, 1]; the
encoders turn (batch, features) intensities into float32 (T, batch, features)
spike trains stored feature-major (see :mod:`snn_core.data.encoders`).
"""

from .datasets import (
    ChecksumError,
    Dataset,
    download_mnist,
    load_dataset,
    load_embedded,
    load_idx_dir,
    to_float,
    train_val_split,
)
from .encoders import (
    ENCODERS,
    bernoulli_encode,
    direct_encode,
    get_encoder,
    latency_encode,
    poisson_encode,
)
from .idx import IDXFormatError, read_idx, write_idx

__all__ = [
    "ChecksumError",
    "Dataset",
    "ENCODERS",
    "IDXFormatError",
    "bernoulli_encode",
    "direct_encode",
    "download_mnist",
    "get_encoder",
    "latency_encode",
    "load_dataset",
    "load_embedded",
    "load_idx_dir",
    "poisson_encode",
    "read_idx",
    "to_float",
    "train_val_split",
    "write_idx",
]
