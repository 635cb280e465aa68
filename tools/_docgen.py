"""The command line shared by the page generators: write the page, or --check it."""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(render, out: Path, generator: str, description: str, argv=None) -> int:
    """Write ``render()`` to ``out``; with ``--check``, exit 1 if ``out`` differs."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--check", action="store_true", help=f"exit 1 if {out.relative_to(ROOT)} is not up to date")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        if (out.read_text() if out.is_file() else "") != text:
            print(f"{out.relative_to(ROOT)} is stale: run PYTHONPATH=. python {generator}", file=sys.stderr)
            return 1
        return 0
    out.write_text(text)
    print(f"wrote {out.relative_to(ROOT)}")
    return 0
