"""Which compute device is usable: CPU always, CUDA when numba-cuda finds a GPU.

Nothing here imports ``numba.cuda`` at ``import snn_core`` time: the probe
runs only when :func:`cuda_available` / :func:`require_cuda` are called, so
CPU-only installs (without the ``numba-cuda`` package) are unaffected.

The CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, set before numba is first
imported) counts as an available device: that is how the device path is
tested on machines without a GPU (see ``docs/gpu.md``).
"""
from __future__ import annotations

import importlib.util
import re

INSTALL_HINT = ("install with pip install -e .[cuda] on a machine with an NVIDIA driver, "
                "or use device='cpu'")


def _one_line(text):
    text = re.sub(r"\s+", " ", str(text)).strip(" :.")
    return text or "unknown reason"


def cuda_status():
    """``(available, detail)``: whether the CUDA device path can run, and why not / which device.

    ``detail`` names the device (or "CUDA simulator") when available, else the
    reason: numba-cuda missing, no driver, no GPU, no NVVM (toolkit) found.
    """
    if importlib.util.find_spec("numba_cuda") is None:
        return False, "the numba-cuda package is not installed"
    try:
        import numba

        from numba import cuda
    except Exception as e:  # a broken or incompatible numba-cuda install
        return False, f"numba.cuda cannot be imported ({type(e).__name__}: {_one_line(e)})"
    if numba.config.ENABLE_CUDASIM:
        return True, "CUDA simulator (NUMBA_ENABLE_CUDASIM=1)"
    try:
        if cuda.is_available():
            dev = cuda.get_current_device()
            name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
            return True, f"{name} (compute capability {dev.compute_capability[0]}.{dev.compute_capability[1]})"
    except Exception as e:
        return False, _one_line(e)
    # find out why: the driver's own error is the most precise reason
    try:
        cuda.current_context()
    except Exception as e:
        return False, _one_line(e)
    try:
        from numba.cuda.cudadrv import nvvm

        if not nvvm.is_available():
            return False, ("a GPU was found but not the CUDA compiler library NVVM (numba-cuda was installed "
                           "without its toolkit extra)")
    except Exception as e:
        return False, _one_line(e)
    return False, "numba.cuda reports no usable CUDA device"


def cuda_available() -> bool:
    """True when the device path can run (a CUDA GPU, or the CUDA simulator)."""
    return cuda_status()[0]


def require_cuda():
    """Raise a clear RuntimeError unless the CUDA device path can run; returns the device description."""
    ok, detail = cuda_status()
    if not ok:
        raise RuntimeError(f"device='cuda' requested but no CUDA GPU is available: {detail}; {INSTALL_HINT}")
    return detail


def using_simulator() -> bool:
    """True when numba's CUDA simulator is enabled (kernels run as Python)."""
    import numba

    return bool(numba.config.ENABLE_CUDASIM)
