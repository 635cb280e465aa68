"""``python -m snn_core`` is the ``snn-esl`` command."""
import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while the modules load
    print("snn-esl: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
