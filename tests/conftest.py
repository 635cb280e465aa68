"""Shared test fixtures (keep minimal)."""
import numpy as np
import pytest


@pytest.fixture
def rng():
    """A fresh, deterministically seeded NumPy Generator per test."""
    return np.random.default_rng(12345)
