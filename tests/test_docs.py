"""The documentation runs, is generated from the code it describes, and builds.

- Every ```python fenced block of every ``docs/*.md`` page is executed, in
  page order, in one namespace per page, inside a temporary working directory
  with ``SNN_CORE_FAST=1`` (snippets are written to take seconds). A block
  fenced as ```python no-run, or whose previous non-blank line is
  ``<!-- no-run -->``, is skipped: keep that for code that needs hardware the
  test machine may lack (GPU).
- The build-time parts of the site (``tools/docsite/``) do what they say:
  TeX becomes MathML (and TeX it cannot render fails the build), percent
  scripts become pages and notebooks with their output and figures, the CLI
  page lists every flag with its sentence.
- No page, README or example refers to the developers' ``../shared`` folder.
- If MkDocs is installed, ``mkdocs build --strict`` must succeed (every nav
  entry and link valid); the tutorials then run in fast mode
  (``SNN_CORE_FAST=1``). ``tests/test_site_browser.py`` opens the result in
  Chromium.
"""
from __future__ import annotations

import json
import os
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


sys.path.insert(0, str(ROOT / "tools"))
from docsite import cli_page, mathml, tutorials  # noqa: E402


# --------------------------------------------------------------------------- math


def test_tex_becomes_mathml():
    out = mathml.tex_to_mathml(r"\frac{\partial L}{\partial u[t]} = \alpha\, g_u[t+1]", display=True)
    assert out.startswith("<math") and 'display="block"' in out
    assert "<mfrac>" in out and "&#x003B1;" in out and "<msub>" in out  # fraction, alpha, subscript


@pytest.mark.parametrize("tex", [r"\begin{aligned} a &= b \end{aligned}", r"\arg\max_c x", r"\frac{1}{"])
def test_tex_that_cannot_render_fails_loudly(tex):
    with pytest.raises(mathml.MathError, match="cannot render"):
        mathml.tex_to_mathml(tex, display=False)


def test_render_math_replaces_wrappers_and_decodes_entities():
    page = ('<p>x <span class="arithmatex">\\(a &lt; b\\)</span> y</p>'
            '<div class="arithmatex">\\[ \\sum_t s[t] \\]</div>')
    out = mathml.render_math(page)
    assert "arithmatex" not in out and "\\(" not in out and "\\[" not in out
    assert out.count("<math") == 2 and "<mo>&#x0003C;</mo>" in out  # "&lt;" decoded, then a MathML operator
    assert '<div class="math-display"><math' in out


# --------------------------------------------------------------------------- tutorials


SCRIPT = """# %% [markdown]
# # 99 — A test tutorial
#
# Some *prose*.

# %%
from _tutorial import FAST, FIG_DIR
x = 6 * 7
print("x =", x)

# %% [markdown]
# ## A figure

# %%
from matplotlib.figure import Figure
fig = Figure()
fig.add_subplot().plot([0, 1], [x, 0])
fig.savefig(FIG_DIR / "99_line.png")
print("fast" if FAST else "slow")
"""


def test_parse_cells():
    cells = tutorials.parse_cells(SCRIPT)
    assert [c.kind for c in cells] == ["markdown", "code", "markdown", "code"]
    assert cells[0].source == "# 99 — A test tutorial\n\nSome *prose*."
    assert cells[1].source.startswith("from _tutorial import") and cells[1].source.endswith('print("x =", x)')


def test_run_render_and_notebook(tmp_path, monkeypatch):
    ex = tmp_path / "examples"
    ex.mkdir()
    (ex / "_tutorial.py").write_text((ROOT / "examples" / "_tutorial.py").read_text())
    script = ex / "99_test.py"
    script.write_text(SCRIPT)
    figs = tmp_path / "figs"
    monkeypatch.setenv("SNN_CORE_FIGURES", str(figs))
    monkeypatch.setenv("SNN_CORE_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.syspath_prepend(str(ex))
    monkeypatch.delitem(sys.modules, "_tutorial", raising=False)
    cells, seconds, error = tutorials.run_cells(script, figs)
    assert error is None and seconds >= 0
    assert cells[1].output == "x = 42\n" and cells[1].figures == []
    assert cells[3].output == "fast\n" and cells[3].figures == ["99_line.png"]
    result = tutorials.Result(script, cells, {"99_line.png": (figs / "99_line.png").read_bytes()}, seconds, True)
    page = tutorials.render_page(result)
    assert "```python\nfrom _tutorial import" in page and "```text\nx = 42\n```" in page
    assert "![99_line.png](figures/99_line.png)" in page and "fast mode" in page
    assert "(99_test.ipynb)" in page and page.index("Run while this site was built") < page.index("## A figure")
    nb = json.loads(tutorials.notebook(result))
    assert nb["nbformat"] == 4 and [c["cell_type"] for c in nb["cells"]] == ["markdown", "code", "markdown", "code"]
    code = "".join(nb["cells"][1]["source"])
    assert "_tutorial" not in code and "FAST = " in code and "FIG_DIR = " in code  # runs without examples/
    assert nb["cells"][1]["outputs"][0]["text"] == ["x = 42\n"]
    ns = {}
    exec(compile(code, "nb", "exec"), ns)  # the inlined set-up really defines what the import did
    assert ns["x"] == 42 and ns["FAST"] is True and ns["FIG_DIR"].is_dir()


def test_a_failing_cell_is_reported(tmp_path):
    script = tmp_path / "98_bad.py"
    script.write_text("# %%\nprint('before')\n# %%\n1 / 0\n# %%\nprint('never')\n")
    cells, _, error = tutorials.run_cells(script, tmp_path / "f")
    assert "ZeroDivisionError" in error and cells[0].output == "before\n" and cells[2].output == ""


def test_every_tutorial_has_a_title():
    for script in tutorials.scripts():
        assert re.match(r"\d\d — ", tutorials.title_of(script)), script.name


# --------------------------------------------------------------------------- CLI page, paths


def test_cli_page_lists_every_flag_with_its_sentence():
    import argparse

    from snn_core.cli import build_parser

    page = cli_page.render()
    for path, sub, _, _ in cli_page.subcommands(build_parser()):
        head = f"## {' '.join(path)} "
        assert head in page
        section = page.split(head, 1)[1].split("\n## ", 1)[0]
        for a in sub._actions:
            if a.option_strings and not isinstance(a, argparse._HelpAction):
                row = next((ln for ln in section.splitlines() if ln.startswith(f"| `{a.option_strings[0]}`")), None)
                assert row is not None, f"{path}: {a.option_strings[0]} missing from the CLI page"
                assert cli_page._help(a) in row.replace("\\|", "|")
    assert "default: " not in page.split("| flag |", 1)[1]  # defaults have their own column


def test_api_page_cleans_sphinx_roles_left_in_type_cells():
    pytest.importorskip("mkdocs")
    from docsite import hooks

    html = ('<td><code>int, see :func:`connection_counts`</code></td>'
            '<p>see :class:<code>Rewirer</code></p><td><code>``row * n_in``, ``src``</code></td>')
    assert hooks._clean_reST(html) == ('<td><code>int, see connection_counts</code></td>'
                                       '<p>see <code>Rewirer</code></p><td><code>row * n_in, src</code></td>')


def test_no_page_points_into_the_developers_workshop():
    texts = [ROOT / "README.md"] + sorted(DOCS.rglob("*.md")) + sorted((ROOT / "examples").glob("*.py"))
    for path in texts:
        text = path.read_text()
        assert "../shared" not in text and "shared/docs" not in text and "shared/bench" not in text \
            and "shared/data" not in text, f"{path.relative_to(ROOT)} refers to the ../shared workshop"


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    env = dict(os.environ, SNN_CORE_FAST="1", NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)
    # (never pass --quiet: MkDocs 1.6 then stops counting warnings and --strict passes anyway)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    site = tmp_path / "site"
    for script in tutorials.scripts():  # every tutorial became a page with a notebook next to it
        assert (site / "tutorials" / script.stem / "index.html").is_file()
        assert json.loads((site / "tutorials" / f"{script.stem}.ipynb").read_text())["nbformat"] == 4
    assert "<math" in (site / "bptt" / "index.html").read_text()
    for fig in ("lif_traces", "surrogate_shapes", "bptt_graph", "accuracy_vs_density"):
        assert (site / "figures" / f"{fig}.png").stat().st_size > 5000
