"""Tutorials as pages: run each ``examples/NN_*.py`` cell by cell and render it.

A tutorial is a percent-cell script (``# %%`` starts a code cell,
``# %% [markdown]`` a Markdown cell whose lines start with ``# ``). For the
site, each script is executed in a fresh Python process (a crash or a stray
global cannot affect the build or another tutorial), one cell at a time in one
namespace; the runner records each code cell's printed output and the figure
files it wrote into ``$SNN_CORE_FIGURES``. :func:`render_page` turns that into
Markdown (prose, code, output, figures) and :func:`notebook` into a Jupyter
notebook (nbformat 4) for download.

Results are cached under ``.cache/docs-tutorials/`` keyed on the script, the
shared ``examples/_tutorial.py``, every ``snn_core`` source file and the mode,
so rebuilding the site without code changes does not retrain anything.

Command line (used by :func:`execute`, not by people)::

    python tools/docsite/tutorials.py SCRIPT OUT_JSON
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CACHE = ROOT / ".cache" / "docs-tutorials"
#: wall-clock limit per tutorial; the slowest (07, default mode) takes a few minutes on 2 cores
TIMEOUT_S = 1200

_MARKER = re.compile(r"^# %%(?P<rest>.*)$")
_TUTORIAL_IMPORT = re.compile(r"^from _tutorial import (?P<names>[\w, ]+?)\s*(#.*)?$", re.M)


@dataclass
class Cell:
    """One cell of a percent script: ``kind`` is ``"markdown"`` or ``"code"``."""

    kind: str
    source: str
    output: str = ""
    figures: list = field(default_factory=list)


def parse_cells(text: str) -> list[Cell]:
    """The cells of a percent-cell script, in order, blank edges stripped.

    Text before the first marker is a code cell (if not blank). Markdown cell
    lines lose their leading ``# `` (or a lone ``#`` for an empty line).
    """
    cells, kind, lines = [], "code", []

    def flush():
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in body.splitlines())
        if body.strip():
            cells.append(Cell(kind, body))

    for line in text.splitlines():
        m = _MARKER.match(line)
        if m:
            flush()
            kind, lines = ("markdown" if "[markdown]" in m.group("rest") else "code"), []
        else:
            lines.append(line)
    flush()
    return cells


# --------------------------------------------------------------------------- execution


def _figure_state(folder: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir() if p.is_file()}


def run_cells(script: Path, fig_dir: Path) -> tuple[list[Cell], float, str | None]:
    """Execute ``script`` cell by cell in this process (the runner side).

    Returns the cells with ``output`` and ``figures`` filled in, the seconds it
    took, and the formatted traceback of the cell that failed (``None`` if all
    ran). Output of stdout and stderr is captured together, in order.
    """
    cells = parse_cells(script.read_text())
    sys.path.insert(0, str(script.parent))  # `from _tutorial import ...`, as when run as a script
    namespace = {"__name__": "__main__", "__file__": str(script)}
    fig_dir.mkdir(parents=True, exist_ok=True)
    t0, error = time.perf_counter(), None
    for i, cell in enumerate(cells):
        if cell.kind != "code":
            continue
        before, buf = _figure_state(fig_dir), io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            try:
                exec(compile(cell.source, f"{script.name} (cell {i + 1})", "exec"), namespace)
            except BaseException:  # noqa: BLE001 - reported, and the page build fails
                error = traceback.format_exc()
        after = _figure_state(fig_dir)
        cell.output = buf.getvalue()
        cell.figures = sorted(n for n, s in after.items() if before.get(n) != s)
        if error:
            break
    return cells, time.perf_counter() - t0, error


def _source_hash(script: Path, fast: bool) -> str:
    h = hashlib.sha256(f"fast={fast}\n".encode())
    for p in [script, EXAMPLES / "_tutorial.py", Path(__file__)] + sorted((ROOT / "snn_core").rglob("*.py")):
        h.update(p.relative_to(ROOT).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


@dataclass
class Result:
    """An executed tutorial: its cells, figure files and how it was run."""

    script: Path
    cells: list
    figures: dict  # file name -> bytes
    seconds: float
    fast: bool


def execute(script: Path, fast: bool) -> Result:
    """Run ``script`` in a fresh process (or take it from the cache).

    Raises
    ------
    RuntimeError
        The script failed or timed out; the message holds its traceback.
    """
    key = CACHE / f"{script.stem}-{_source_hash(script, fast)}"
    if not (key / "result.json").is_file():
        with tempfile.TemporaryDirectory(prefix="snn-docs-") as tmp:
            tmp = Path(tmp)
            out_json, figs = tmp / "result.json", tmp / "figures"
            env = dict(os.environ, MPLBACKEND="Agg", SNN_CORE_FIGURES=str(figs),
                       SNN_CORE_FAST="1" if fast else "0",
                       PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
            env.pop("SNN_CORE_DATA", None)  # the tutorials document the embedded sample
            try:
                proc = subprocess.run([sys.executable, __file__, str(script), str(out_json)], cwd=tmp, env=env,
                                      capture_output=True, text=True, timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"{script.name}: did not finish within {TIMEOUT_S} s") from None
            if proc.returncode != 0:
                raise RuntimeError(f"{script.name} failed while building the docs:\n{proc.stdout[-4000:]}"
                                   f"{proc.stderr[-4000:]}")
            # fill the cache atomically: a killed build never leaves half an entry
            staging = Path(tempfile.mkdtemp(prefix=f".{key.name}.", dir=_mkdir(CACHE)))
            shutil.copy(out_json, staging / "result.json")
            if figs.is_dir():
                shutil.copytree(figs, staging / "figures")
            for old in CACHE.glob(f"{script.stem}-*"):  # stale entries of this script
                shutil.rmtree(old, ignore_errors=True)
            staging.rename(key)
    data = json.loads((key / "result.json").read_text())
    cells = [Cell(**c) for c in data["cells"]]
    folder = key / "figures"
    figures = {n: (folder / n).read_bytes() for c in cells for n in c.figures}
    return Result(script, cells, figures, data["seconds"], fast)


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


# --------------------------------------------------------------------------- rendering


def _fence(text: str, lang: str) -> str:
    ticks = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
    return f"{ticks}{lang}\n{text.rstrip()}\n{ticks}"


def title_of(script: Path) -> str:
    """The first Markdown heading of the script (``"01 — The LIF neuron..."``)."""
    for cell in parse_cells(script.read_text()):
        if cell.kind == "markdown":
            m = re.search(r"^#\s+(.+)$", cell.source, re.M)
            if m:
                return m.group(1).strip()
    return script.stem


def render_page(result: Result, fig_prefix: str = "figures/") -> str:
    """Markdown for one executed tutorial: prose, code, output, figures."""
    name = result.script.name
    mode = ("in **fast mode** (`SNN_CORE_FAST=1`: the slow tutorials shrink their training budgets, so their "
            "accuracies are not meaningful; run the script yourself for the full numbers)"
            if result.fast else "in its default mode")
    out = []
    for i, cell in enumerate(result.cells):
        if cell.kind == "markdown":
            out.append(cell.source)
            if i == 0:  # right under the title
                out.append(
                    f'!!! info "Run while this site was built"\n'
                    f"    Everything below was executed from `examples/{name}` when the site was built, "
                    f"{mode}; it took {result.seconds:.0f} s. "
                    f"Download it as a [notebook]({result.script.stem}.ipynb) or as the "
                    f"[script]({name}) (`python examples/{name}` in a checkout).")
            continue
        out.append(_fence(cell.source, "python"))
        if cell.output.strip():
            out.append('<div class="tutorial-output" markdown>\n\n' + _fence(cell.output.rstrip(), "text")
                       + "\n\n</div>")
        for fig in cell.figures:
            out.append(f"![{fig}]({fig_prefix}{fig})")
    return "\n\n".join(out) + "\n"


def _standalone_setup(m: re.Match) -> str:
    """What ``from _tutorial import ...`` provides, inline, so a downloaded notebook runs anywhere."""
    names = {n.strip() for n in m.group("names").split(",")}
    lines = ["import os", "from pathlib import Path"]
    if "FAST" in names:
        lines.append('FAST = os.environ.get("SNN_CORE_FAST", "") not in ("", "0")  # shrink the slow budgets')
    if "FIG_DIR" in names:
        lines.append('FIG_DIR = Path(os.environ.get("SNN_CORE_FIGURES") or "figures")  # where figures go')
        lines.append("FIG_DIR.mkdir(parents=True, exist_ok=True)")
    return "\n".join(lines)


def notebook(result: Result) -> str:
    """The tutorial as an nbformat-4 notebook (JSON text) with its printed output.

    The ``from _tutorial import ...`` line becomes the few lines it stands for,
    so the notebook needs only an installed ``snn_core``.
    """
    cells = []
    for cell in result.cells:
        src = cell.source
        if cell.kind == "markdown":
            cells.append({"cell_type": "markdown", "metadata": {}, "source": src.splitlines(keepends=True)})
            continue
        src = _TUTORIAL_IMPORT.sub(_standalone_setup, src)
        outputs = [{"output_type": "stream", "name": "stdout", "text": cell.output.splitlines(keepends=True)}] \
            if cell.output else []
        cells.append({"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": outputs,
                      "source": src.splitlines(keepends=True)})
    nb = {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                     "name": "python3"},
                                      "language_info": {"name": "python"}},
          "nbformat": 4, "nbformat_minor": 4}
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def scripts() -> list[Path]:
    """The numbered tutorials, in order."""
    return sorted(EXAMPLES.glob("[0-9][0-9]_*.py"))


def _main(argv) -> int:
    script, out_json = Path(argv[0]).resolve(), Path(argv[1])
    fig_dir = Path(os.environ["SNN_CORE_FIGURES"])
    cells, seconds, error = run_cells(script, fig_dir)
    if error:
        ran = "".join(c.output for c in cells if c.kind == "code")
        print(ran[-3000:], file=sys.stderr)
        print(error, file=sys.stderr)
        return 1
    out_json.write_text(json.dumps({"cells": [c.__dict__ for c in cells], "seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
