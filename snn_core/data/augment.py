"""Standard image/frame augmentations as pure NumPy functions with an explicit ``np.random.Generator``.

All functions take a batch whose last two axes are (H, W): CIFAR images
(N, 3, 32, 32), DVS frames (N, T, 2, H, W). They never modify their input and
return a new array of the same shape and dtype. A transform draws one random
choice **per sample** (the same for all of a sample's channels and time
steps), so a DVS recording moves as a whole. Same generator state -> same
output.

CIFAR (the usual recipe, torchvision's ``RandomCrop(32, padding=4)`` then
``RandomHorizontalFlip()``): :func:`augment_cifar`. DVS-CIFAR10 (the TET
recipe: flip with probability 0.5, then a circular roll by up to ±5 pixels in
each direction): :func:`augment_dvs`. Then :func:`normalize` with the
per-channel statistics below for CIFAR (DVS counts are used as they are).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "augment_cifar",
    "augment_dvs",
    "channel_stats",
    "hflip",
    "normalize",
    "random_crop",
    "random_hflip",
    "random_roll",
    "roll",
    "translate",
]

#: Per-channel (R, G, B) mean and standard deviation of the 50,000 CIFAR-10
#: training images scaled to [0, 1], over all pixels (what :func:`channel_stats`
#: returns on that set). Many reference codes, TET's included, use the older
#: std (0.2023, 0.1994, 0.2010) (std of a smaller statistic); pass it to
#: :func:`normalize` to match them exactly.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
#: The same statistics for the 50,000 CIFAR-100 training images.
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def _batch(x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim < 3:
        raise ValueError(f"expected a batch (N, ..., H, W), got shape {x.shape}")
    return x


def _shifts(shifts, n: int) -> np.ndarray:
    s = np.asarray(shifts)
    if s.shape != (n, 2) or s.dtype.kind not in "iu":
        raise ValueError(f"shifts must be integers of shape ({n}, 2) (dy, dx per sample), got {s.dtype} {s.shape}")
    return s.astype(np.int64)


def translate(x, shifts, fill=0) -> np.ndarray:
    """Shift each sample by whole pixels, filling uncovered pixels with ``fill``.

    ``out[n, ..., i, j] = x[n, ..., i + dy_n, j + dx_n]`` where inside the
    image, else ``fill``. Shift (0, 0) is the identity; shifts in ``[-p, p]``
    are exactly "pad by p, crop at offset (p + dy, p + dx)".

    Parameters
    ----------
    x : array_like
        (N, ..., H, W).
    shifts : array_like
        Integer (N, 2): (dy, dx) per sample.
    fill : scalar
        Value of the padding.
    """
    x = _batch(x)
    s = _shifts(shifts, x.shape[0])
    H, W = x.shape[-2:]
    P = int(np.abs(s).max(initial=0))
    pad = [(0, 0)] * (x.ndim - 2) + [(P, P), (P, P)]
    xp = np.pad(x, pad, constant_values=fill)
    out = np.empty_like(x)
    for n, (dy, dx) in enumerate(s):
        out[n] = xp[n, ..., P + dy:P + dy + H, P + dx:P + dx + W]
    return out


def random_crop(x, rng: np.random.Generator, padding: int = 4, fill=0) -> np.ndarray:
    """Zero-pad by ``padding`` and crop back to (H, W) at a uniformly random offset per sample.

    Equals :func:`translate` with (dy, dx) drawn uniformly from
    ``[-padding, padding]`` (``rng.integers``, one (N, 2) draw).
    """
    x = _batch(x)
    return translate(x, rng.integers(-padding, padding + 1, size=(x.shape[0], 2)), fill)


def hflip(x) -> np.ndarray:
    """Mirror every sample left-right (last axis). ``hflip(hflip(x)) == x``."""
    return np.ascontiguousarray(_batch(x)[..., ::-1])


def random_hflip(x, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Mirror each sample left-right with probability ``p`` (one ``rng.random(N)`` draw)."""
    x = _batch(x)
    flip = rng.random(x.shape[0]) < p
    out = x.copy()
    out[flip] = x[flip][..., ::-1]
    return out


def roll(x, shifts) -> np.ndarray:
    """Circularly shift each sample by (dy, dx) pixels (``np.roll`` on the last two axes; nothing is lost)."""
    x = _batch(x)
    s = _shifts(shifts, x.shape[0])
    out = np.empty_like(x)
    for n, (dy, dx) in enumerate(s):
        out[n] = np.roll(x[n], (int(dy), int(dx)), axis=(-2, -1))
    return out


def random_roll(x, rng: np.random.Generator, max_shift: int = 5) -> np.ndarray:
    """:func:`roll` by (dy, dx) drawn uniformly from ``[-max_shift, max_shift]`` per sample (TET: 5)."""
    x = _batch(x)
    return roll(x, rng.integers(-max_shift, max_shift + 1, size=(x.shape[0], 2)))


def augment_cifar(x, rng: np.random.Generator, padding: int = 4) -> np.ndarray:
    """Training augmentation for CIFAR: :func:`random_crop` (padding 4) then :func:`random_hflip`."""
    return random_hflip(random_crop(x, rng, padding), rng)


def augment_dvs(x, rng: np.random.Generator, max_shift: int = 5) -> np.ndarray:
    """Training augmentation for DVS frames (TET): :func:`random_hflip` then :func:`random_roll` (±5 px)."""
    return random_roll(random_hflip(x, rng), rng, max_shift)


def normalize(x, mean=CIFAR10_MEAN, std=CIFAR10_STD, scale: float = 255.0) -> np.ndarray:
    """Per-channel standardisation: ``(x / scale - mean[c]) / std[c]`` as float32.

    Parameters
    ----------
    x : array_like
        (N, C, H, W) (uint8 images: ``scale=255``).
    mean, std : sequence of float
        One value per channel C (axis -3).
    """
    x = _batch(x)
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    C = x.shape[-3]
    if mean.shape != (C,) or std.shape != (C,) or not (std > 0).all():
        raise ValueError(f"mean and std need {C} values (std > 0), got {mean.tolist()} and {std.tolist()}")
    y = x.astype(np.float32) / np.float32(scale)
    return (y - mean[:, None, None]) / std[:, None, None]


def channel_stats(x, scale: float = 255.0, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of ``x / scale`` over samples and pixels (float64, chunked).

    Parameters
    ----------
    x : array_like
        (N, C, H, W).

    Returns
    -------
    (mean, std) : tuple of float64 (C,) arrays
    """
    x = _batch(x)
    C = x.shape[1]
    s = np.zeros(C)
    s2 = np.zeros(C)
    for i in range(0, x.shape[0], chunk):
        b = x[i:i + chunk].astype(np.float64) / scale
        s += b.sum(axis=(0, 2, 3))
        s2 += np.square(b).sum(axis=(0, 2, 3))
    m = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / m
    return mean, np.sqrt(np.maximum(s2 / m - mean ** 2, 0.0))
