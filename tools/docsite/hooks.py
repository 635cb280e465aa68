"""MkDocs hooks (named in ``mkdocs.yml``): generated pages, figures and math.

- ``on_config``: one Tutorials nav entry per ``examples/NN_*.py``.
- ``on_files``: adds the generated files: ``cli.md`` (from the argparse
  parser), ``figures/*.png`` (:mod:`docsite.figures`) and, per tutorial,
  ``tutorials/NN_name.md`` with its executed output, its figures, the
  ``.ipynb`` and the ``.py`` (:mod:`docsite.tutorials`).
- ``on_page_markdown``: fills ``<!-- tutorial-list -->`` on the tutorials index.
- ``on_page_content``: TeX -> MathML (:mod:`docsite.mathml`); Sphinx roles
  left in docstrings (``:func:`` ...) are dropped on the API page.

The build runs the tutorials in their default mode unless ``SNN_CORE_FAST=1``
is set (CI and the tests set it; the pages then say so).
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/, for `docsite`
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for `snn_core`

from docsite import cli_page, figures, mathml, tutorials  # noqa: E402

_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|obj|exc):(?=<code>|<a |`)")
_CODE = re.compile(r"<code>(.*?)</code>", re.S)


def _clean_reST(page_html: str) -> str:
    """Sphinx roles and reST double backticks that mkdocstrings leaves in type cells, as plain code."""
    page_html = _ROLE.sub("", page_html)
    return _CODE.sub(lambda m: "<code>" + m.group(1).replace("``", "").replace("`", "") + "</code>", page_html)


def _fast() -> bool:
    return os.environ.get("SNN_CORE_FAST", "") not in ("", "0")


def on_config(config):
    for section in config["nav"]:
        if isinstance(section, dict) and "Tutorials" in section:
            entries = section["Tutorials"]
            known = {next(iter(e.values())) if isinstance(e, dict) else e for e in entries}
            for script in tutorials.scripts():
                uri = f"tutorials/{script.stem}.md"
                if uri not in known:
                    entries.append({tutorials.title_of(script): uri})
    return config


def _add(files, config, uri, content):
    files.append(File.generated(config, uri, content=content))


def on_files(files, config):
    _add(files, config, "cli.md", cli_page.render())
    for uri, draw in figures.FIGURES.items():
        _add(files, config, uri, draw())
    fast = _fast()
    for script in tutorials.scripts():
        try:
            result = tutorials.execute(script, fast)
        except RuntimeError as exc:
            raise PluginError(str(exc)) from None
        _add(files, config, f"tutorials/{script.stem}.md", tutorials.render_page(result))
        _add(files, config, f"tutorials/{script.stem}.ipynb", tutorials.notebook(result))
        _add(files, config, f"tutorials/{script.name}", script.read_bytes())
        for name, data in result.figures.items():
            _add(files, config, f"tutorials/figures/{name}", data)
    return files


def on_page_markdown(markdown, page, config, files):
    if "<!-- tutorial-list -->" in markdown:
        rows = ["| tutorial | script |", "|---|---|"]
        for script in tutorials.scripts():
            rows.append(f"| [{tutorials.title_of(script)}]({script.stem}.md) | `examples/{script.name}` |")
        markdown = markdown.replace("<!-- tutorial-list -->", "\n".join(rows))
    return markdown


def on_page_content(html, page, config, files):
    try:
        html = mathml.render_math(html, where=page.file.src_uri)
    except mathml.MathError as exc:  # one clear line instead of a traceback
        raise PluginError(str(exc)) from None
    if page.file.src_uri.startswith("api"):
        html = _clean_reST(html)
    return html
