"""--augment affine: the bilinear warp against exact cases (identity, whole-pixel shifts, quarter turns,
half-pixel shifts), its random draws, and its use in the trainer."""
import numpy as np
import pytest

from snn_core.config import TrainConfig
from snn_core.data.augment import affine, random_affine, translate
from snn_core.training import Trainer


def _eye(n):
    return np.tile(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), (n, 1, 1))


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_identity_and_whole_pixel_shifts_are_exact(rng, backend):
    x = rng.random((5, 3, 2, 9, 11)).astype(np.float32)  # (N, T, C, H, W): frames share the map
    np.testing.assert_array_equal(affine(x, _eye(5), backend=backend), x)
    shifts = rng.integers(-3, 4, size=(5, 2))
    A = _eye(5)
    A[:, :, 2] = shifts
    for fill in (0.0, 0.5):
        np.testing.assert_array_equal(affine(x, A, fill, backend), translate(x, shifts, fill))


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_quarter_turn_about_the_centre(rng, backend):
    x = rng.random((3, 1, 8, 8)).astype(np.float32)
    quarter = np.tile(np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]), (3, 1, 1))  # 90 degrees
    np.testing.assert_allclose(affine(x, quarter, backend=backend), np.rot90(x, -1, axes=(2, 3)), atol=1e-6)


def test_half_pixel_shift_averages_neighbours_and_fills_outside(rng):
    x = rng.random((2, 1, 6, 5)).astype(np.float32)
    A = _eye(2)
    A[:, 0, 2] = 0.5  # read half a row further down
    out = affine(x, A, fill=1.0)
    np.testing.assert_allclose(out[:, :, :-1], (x[:, :, :-1] + x[:, :, 1:]) / 2, rtol=1e-6)
    np.testing.assert_allclose(out[:, :, -1], (x[:, :, -1] + 1.0) / 2, rtol=1e-6)


def test_random_affine_draws_one_map_per_sample(rng):
    x = np.repeat(rng.random((6, 1, 12, 12)).astype(np.float32), 2, axis=1)  # two equal channels
    np.testing.assert_array_equal(random_affine(x, rng, degrees=0, zoom=0, shift=0), x)
    a = random_affine(x, np.random.default_rng(1), degrees=15, zoom=0.1, shift=2)
    np.testing.assert_array_equal(a, random_affine(x, np.random.default_rng(1), degrees=15, zoom=0.1, shift=2))
    np.testing.assert_array_equal(a[:, 0], a[:, 1])  # the channels of a sample move together
    assert a.shape == x.shape and a.dtype == x.dtype
    assert all(not np.allclose(a[n], x[n]) for n in range(6))


@pytest.mark.parametrize("shape", [(4, 1, 28, 28), (3, 2, 2, 7, 10)])
def test_numba_kernel_matches_its_numpy_twin(rng, shape):
    x = rng.random(shape).astype(np.float32)
    A = _eye(shape[0]) + rng.normal(0, 0.3, (shape[0], 2, 3))
    A[:, :, 2] *= 10  # some maps send pixels far outside the image
    for fill in (0.0, 0.25):
        np.testing.assert_allclose(affine(x, A, fill), affine(x, A, fill, backend="numpy"), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="backend"):
        affine(x, A, backend="torch")


def test_affine_rejects_integer_images_and_bad_matrices(rng):
    with pytest.raises(ValueError, match="floating-point"):
        affine(np.zeros((2, 1, 4, 4), np.uint8), _eye(2))
    with pytest.raises(ValueError, match=r"shape \(2, 2, 3\)"):
        affine(np.zeros((2, 1, 4, 4), np.float32), _eye(3))
    bad = _eye(2)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        affine(np.zeros((2, 1, 4, 4), np.float32), bad)


def test_trainer_warps_training_batches_only(tmp_path):
    cfg = dict(max_train=400, hidden=[32], epochs=1, batch_size=50, quiet=True, seed=3)
    tr = Trainer(TrainConfig(**cfg, augment="affine", rotate_degrees=12.0, zoom=0.1, out_dir=str(tmp_path / "a")))
    x = tr.x_train[:16]
    a = tr.augment(x)
    assert a.shape == x.shape and a.dtype == x.dtype and not np.array_equal(a, x)
    np.testing.assert_array_equal(tr.augment(x), a)  # drawn from (seed, iteration)
    tr.iteration += 1
    assert not np.array_equal(tr.augment(x), a)
    plain = Trainer(TrainConfig(**cfg, out_dir=str(tmp_path / "p")))
    np.testing.assert_array_equal(tr.x_val, plain.x_val)  # validation images are never warped
    with pytest.raises(ValueError, match="zoom"):
        TrainConfig(augment="affine", zoom=1.0)
    with pytest.raises(ValueError, match="rotate_degrees"):
        TrainConfig(augment="affine", rotate_degrees=-1.0)
