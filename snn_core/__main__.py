"""``python -m snn_core`` is the ``snn-esl`` command."""
import sys

from .cli import main

sys.exit(main())
