"""Data: MNIST loading (embedded sample, IDX directories, download), spike encoders,
CIFAR-10/100 and DVS-CIFAR10 readers, augmentations and archive downloads.

Images are uint8 (N, C*H*W) rows (784 columns for MNIST); :func:`to_float`
gives float32 [0, 1]; the encoders turn (batch, features) intensities into
float32 (T, batch, features) spike trains stored feature-major (see
:mod:`snn_core.data.encoders`). DVS folders give float32 (N, T, features)
frame sequences, which the ``frames`` encoder only lays out.
:func:`load_dataset` reads IDX, CIFAR and DVS folders alike.
"""

from .ahead import EncodeAhead
from .aedat import EVENT_DTYPE, make_events, read_aedat, write_aedat
from .augment import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    affine,
    augment_cifar,
    augment_dvs,
    channel_stats,
    hflip,
    normalize,
    random_affine,
    random_crop,
    random_hflip,
    random_roll,
    roll,
    translate,
)
from .cifar import (
    ImageDataset,
    find_cifar,
    load_cifar,
    load_cifar10,
    load_cifar100,
    read_cifar_bin,
    read_cifar_pickle,
    write_cifar,
)
from .datasets import (
    ChecksumError,
    Dataset,
    detect_data_dir,
    download_mnist,
    frame_cache_dir,
    load_cifar_dir,
    load_data_dir,
    load_dataset,
    load_dvs_dir,
    load_embedded,
    load_idx_dir,
    to_float,
    train_val_split,
)
from .download import ARCHIVES, download_archives
from .dvs import (
    CIFAR10_DVS_CLASSES,
    FrameDataset,
    events_to_frames,
    frame_cache_name,
    frames_to_sequence,
    list_recordings,
    load_cifar10_dvs,
    split_per_class,
)
from .encoders import (
    ENCODERS,
    bernoulli_encode,
    direct_encode,
    frames_encode,
    get_encoder,
    latency_encode,
    poisson_encode,
)
from .errors import DataFormatError
from .idx import IDXFormatError, read_idx, write_idx

__all__ = [
    "affine",
    "ARCHIVES",
    "augment_cifar",
    "augment_dvs",
    "bernoulli_encode",
    "channel_stats",
    "ChecksumError",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "CIFAR10_DVS_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DataFormatError",
    "Dataset",
    "detect_data_dir",
    "direct_encode",
    "download_archives",
    "download_mnist",
    "EncodeAhead",
    "ENCODERS",
    "EVENT_DTYPE",
    "events_to_frames",
    "find_cifar",
    "frame_cache_dir",
    "frame_cache_name",
    "FrameDataset",
    "frames_encode",
    "frames_to_sequence",
    "get_encoder",
    "hflip",
    "IDXFormatError",
    "ImageDataset",
    "latency_encode",
    "list_recordings",
    "load_cifar",
    "load_cifar10",
    "load_cifar100",
    "load_cifar10_dvs",
    "load_cifar_dir",
    "load_data_dir",
    "load_dataset",
    "load_dvs_dir",
    "load_embedded",
    "load_idx_dir",
    "make_events",
    "normalize",
    "poisson_encode",
    "random_affine",
    "random_crop",
    "random_hflip",
    "random_roll",
    "read_aedat",
    "read_cifar_bin",
    "read_cifar_pickle",
    "read_idx",
    "roll",
    "split_per_class",
    "to_float",
    "train_val_split",
    "translate",
    "write_aedat",
    "write_cifar",
    "write_idx",
]
