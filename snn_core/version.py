"""The package version (one place; ``snn_core.__version__`` and checkpoints read it)."""
__version__ = "0.1.0"
