"""Standard image/frame augmentations as NumPy functions with an explicit ``np.random.Generator``.

(The bilinear :func:`affine` warp runs as a Numba loop by default; its NumPy
twin is ``backend="numpy"``.)

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
Digits (``--augment affine``): :func:`random_affine`, a small random
rotation, zoom and shift (float images only).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "affine",
    "augment_cifar",
    "augment_dvs",
    "channel_stats",
    "hflip",
    "normalize",
    "random_affine",
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


def affine(x, matrices, fill=0, backend: str = "numba") -> np.ndarray:
    """Warp each sample by its own 2x3 affine map, with bilinear interpolation.

    Output pixel (i, j) of sample n reads the input at ``A_n @ (i - cy, j - cx, 1)
    + (cy, cx)``, the image centre being ``(cy, cx) = ((H - 1) / 2, (W - 1) / 2)``,
    so ``A_n`` maps output to input coordinates (rows first) around the
    centre. Input pixels outside the image are ``fill``. The identity
    ``[[1, 0, 0], [0, 1, 0]]`` returns x exactly; an integer translation
    ``[[1, 0, dy], [0, 1, dx]]`` equals :func:`translate` by (dy, dx).

    Parameters
    ----------
    x : array_like
        (N, ..., H, W), floating point (the interpolation needs it).
    matrices : array_like
        (N, 2, 3) float.
    fill : scalar
        Value of the pixels that come from outside the image.
    backend : {"numba", "numpy"}
        The compiled loop (default) or its readable NumPy twin; they agree
        to float rounding (tests/test_augment_affine.py).
    """
    x = _batch(x)
    if x.dtype.kind != "f":
        raise ValueError(f"affine: expected a floating-point batch, got {x.dtype}")
    A = np.asarray(matrices, np.float64)
    if A.shape != (x.shape[0], 2, 3) or not np.isfinite(A).all():
        raise ValueError(f"matrices must be finite of shape ({x.shape[0]}, 2, 3), got {A.shape}")
    if backend == "numpy":
        return _affine_numpy(x, A, fill)
    if backend != "numba":
        raise ValueError(f"backend must be 'numba' or 'numpy', got {backend!r}")
    N, (H, W) = x.shape[0], x.shape[-2:]
    flat = np.ascontiguousarray(x).reshape(N, -1, H, W)
    out = np.empty_like(flat)
    _affine_numba(flat, A, x.dtype.type(fill), out)
    return out.reshape(x.shape)


def _affine_numpy(x, A, fill):
    N, (H, W) = x.shape[0], x.shape[-2:]
    cy, cx = (H - 1) / 2, (W - 1) / 2
    i, j = np.meshgrid(np.arange(H) - cy, np.arange(W) - cx, indexing="ij")
    # source coordinates of every output pixel, (N, H*W) each
    sy = A[:, 0, 0, None] * i.ravel() + A[:, 0, 1, None] * j.ravel() + A[:, 0, 2, None] + cy
    sx = A[:, 1, 0, None] * i.ravel() + A[:, 1, 1, None] * j.ravel() + A[:, 1, 2, None] + cx
    y0, x0 = np.floor(sy).astype(np.int64), np.floor(sx).astype(np.int64)
    fy, fx = (sy - y0).astype(x.dtype), (sx - x0).astype(x.dtype)
    # the middle axes (channels, time) share each sample's map; one extra pixel, index H*W, holds
    # ``fill`` and stands for everything outside the image
    flat = x.reshape(N, -1, H * W)
    flat = np.concatenate([flat, np.full(flat.shape[:2] + (1,), fill, x.dtype)], axis=2)
    rows = np.arange(N)[:, None]
    out = None
    for dy, dx, w in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = y0 + dy, x0 + dx
        idx = np.where((yy >= 0) & (yy < H) & (xx >= 0) & (xx < W), yy * W + xx, H * W)
        term = flat[rows, :, idx] * w[:, :, None]  # (N, H*W, middle)
        out = term if out is None else out + term
    return np.ascontiguousarray(np.moveaxis(out, 1, 2)).reshape(x.shape)


@numba.njit(cache=True, nogil=True)
def _affine_numba(x, A, fill, out):
    """The loop of :func:`_affine_numpy`: x, out (N, M, H, W); A (N, 2, 3) float64."""
    N, M, H, W = x.shape
    cy, cx = (H - 1) / 2, (W - 1) / 2
    one = x.dtype.type(1)
    for n in range(N):
        for i in range(H):
            for j in range(W):
                di, dj = i - cy, j - cx
                sy = A[n, 0, 0] * di + A[n, 0, 1] * dj + A[n, 0, 2] + cy
                sx = A[n, 1, 0] * di + A[n, 1, 1] * dj + A[n, 1, 2] + cx
                y0, x0 = int(np.floor(sy)), int(np.floor(sx))
                fy, fx = x.dtype.type(sy - y0), x.dtype.type(sx - x0)
                w00, w01 = (one - fy) * (one - fx), (one - fy) * fx
                w10, w11 = fy * (one - fx), fy * fx
                in_y0, in_y1 = 0 <= y0 < H, 0 <= y0 + 1 < H
                in_x0, in_x1 = 0 <= x0 < W, 0 <= x0 + 1 < W
                for m in range(M):
                    v00 = x[n, m, y0, x0] if in_y0 and in_x0 else fill
                    v01 = x[n, m, y0, x0 + 1] if in_y0 and in_x1 else fill
                    v10 = x[n, m, y0 + 1, x0] if in_y1 and in_x0 else fill
                    v11 = x[n, m, y0 + 1, x0 + 1] if in_y1 and in_x1 else fill
                    out[n, m, i, j] = w00 * v00 + w01 * v01 + w10 * v10 + w11 * v11


def random_affine(x, rng: np.random.Generator, degrees: float = 10.0, zoom: float = 0.1, shift: float = 2.0,
                  fill=0) -> np.ndarray:
    """:func:`affine` by a random rotation, zoom and translation per sample (MNIST-style augmentation).

    Per sample, uniformly: angle in ``[-degrees, degrees]``, scale in
    ``[1 - zoom, 1 + zoom]``, (dy, dx) in ``[-shift, shift]`` pixels (one
    ``rng.uniform`` draw of shape (N, 4)).
    """
    x = _batch(x)
    u = rng.uniform(-1.0, 1.0, size=(x.shape[0], 4))
    theta, scale = np.deg2rad(degrees) * u[:, 0], 1.0 + zoom * u[:, 1]
    c, s = np.cos(theta) / scale, np.sin(theta) / scale  # output -> input: the inverse rotation and zoom
    A = np.stack([np.stack([c, -s, shift * u[:, 2]], 1), np.stack([s, c, shift * u[:, 3]], 1)], 1)
    return affine(x, A, fill)


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
