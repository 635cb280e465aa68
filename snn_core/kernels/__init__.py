"""Compute kernels: ``cpu`` (Numba), ``reference`` (NumPy truth for tests)."""
