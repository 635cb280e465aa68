"""Shared set-up of the numbered tutorials: where snn_core and the figures are.

Each tutorial starts with ``from _tutorial import FAST, FIG_DIR``; that works
when a script is run as ``python examples/NN_name.py`` (its folder is on the
path) and in a notebook opened in ``examples/`` (the working directory is).
"""
import os
import sys
from pathlib import Path

try:
    HERE = Path(__file__).resolve().parent
except NameError:  # executed inside a notebook: the working directory is examples/
    HERE = Path.cwd()

try:
    import snn_core  # noqa: F401
except ImportError:  # not installed and no PYTHONPATH: use the repository this folder lives in
    sys.path.insert(0, str(HERE.parent))

#: SNN_CORE_FAST=1 (the test suite) shrinks the slow tutorials' budgets
FAST = os.environ.get("SNN_CORE_FAST", "") not in ("", "0")
#: figures go to $SNN_CORE_FIGURES, else examples/figures/
FIG_DIR = Path(os.environ.get("SNN_CORE_FIGURES") or HERE / "figures")
FIG_DIR.mkdir(parents=True, exist_ok=True)
