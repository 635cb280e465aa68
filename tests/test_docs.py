"""The documentation runs, is generated from the code it describes, and builds.

- Every ```python fenced block of every ``docs/*.md`` page is executed, in
  page order, in one namespace per page, inside a temporary working directory
  with ``SNN_CORE_FAST=1`` (snippets are written to take seconds). A block
  fenced as ```python no-run, or whose previous non-blank line is
  ``<!-- no-run -->``, is skipped: keep that for code that needs hardware the
  test machine may lack (GPU).
- ``docs/cli.md`` and ``docs/api.md`` must equal what ``tools/gen_cli_docs.py``
  and ``tools/gen_api_docs.py`` render from the current code.
- If MkDocs is installed, ``mkdocs build --strict`` must succeed (every nav
  entry and link valid).
"""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))

_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)\s*(.*?)\s*$")


def python_blocks(text):
    """``[(line, code, skipped)]`` for every ```python fenced block of a Markdown page.

    ``line`` is the 1-based line of the opening fence. Other languages and
    unlabelled fences are ignored; fences nested deeper than the opening one
    are part of the block's text.
    """
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang, info = m.groups()
        start, body = i, []
        i += 1
        while i < len(lines):
            close = _FENCE.match(lines[i])
            if close and close.group(2).startswith(fence[0]) and len(close.group(2)) >= len(fence) \
                    and not close.group(3) and not close.group(4):
                break
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1
        if lang.lower() != "python":
            continue
        prev = next((lines[k].strip() for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        skipped = "no-run" in info.split() or prev == "<!-- no-run -->"
        blocks.append((start + 1, "\n".join(body) + "\n", skipped))
    return blocks


def test_block_parser_finds_fences_and_markers():
    page = "\n".join([
        "text", "```python", "a = 1", "```", "", "<!-- no-run -->", "", "```python", "gpu()", "```",
        "```python no-run", "gpu()", "```", "```bash", "ls", "```", "- item", "", "    ```python", "    b = a + 1",
        "    ```", "````markdown", "```python", "inner()", "```", "````",
    ])
    blocks = python_blocks(page)
    assert [(line, skipped) for line, _, skipped in blocks] == [(2, False), (8, True), (11, True), (19, False)]
    assert blocks[0][1] == "a = 1\n" and blocks[3][1] == "b = a + 1\n"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_python_blocks_run(page, tmp_path, monkeypatch):
    blocks = [b for b in python_blocks(page.read_text()) if not b[2]]
    if not blocks:
        pytest.skip(f"{page.name}: no runnable python blocks")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SNN_CORE_FAST", "1")
    monkeypatch.delenv("SNN_CORE_DATA", raising=False)  # snippets must see the embedded sample
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    for line, code, _ in blocks:
        try:
            exec(compile(code, f"docs/{page.name}:{line}", "exec"), namespace)
        except Exception:
            msg = f"docs/{page.name}, block at line {line} failed:\n{traceback.format_exc(limit=-3)}"
            pytest.fail(msg, pytrace=False)


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("tool,page", [("gen_cli_docs", "cli.md"), ("gen_api_docs", "api.md")])
def test_generated_pages_are_up_to_date(tool, page):
    rendered = _load_tool(tool).render()
    current = (DOCS / page).read_text()
    assert current == rendered, (f"docs/{page} is out of date with the code: run "
                                 f"`PYTHONPATH=. python tools/{tool}.py` and commit the result")


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    # (never pass --quiet: MkDocs 1.6 then stops counting warnings and --strict passes anyway)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
