"""Shared test set-up and fixtures (keep minimal)."""
import glob
import os

# Before numba is first imported (snn_core imports it): without a GPU, run the
# CUDA tests under numba's simulator. An explicit setting is respected.
if "NUMBA_ENABLE_CUDASIM" not in os.environ and not glob.glob("/dev/nvidia[0-9]*"):
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import numpy as np
import pytest


@pytest.fixture
def rng():
    """A fresh, deterministically seeded NumPy Generator per test."""
    return np.random.default_rng(12345)
