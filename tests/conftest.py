"""Shared test set-up and fixtures (keep minimal)."""
import glob
import math
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


@pytest.fixture(params=["serial", "parallel"])
def mode(request, monkeypatch):
    """Force the serial or the parallel version of every dispatching kernel of ``kernels/cpu.py``."""
    from snn_core.kernels import cpu

    assert hasattr(cpu, "PARALLEL_MIN_NS"), "kernels/cpu.py no longer has PARALLEL_MIN_NS: update this fixture"
    monkeypatch.setattr(cpu, "PARALLEL_MIN_NS", math.inf if request.param == "serial" else 0.0)
    return request.param
