"""Render the API reference ``docs/api.md`` from the package's docstrings.

For every public module (listed in ``MODULES``) the page shows the module
docstring, then each public name: its signature, the first paragraph of its
docstring as prose and the rest of the docstring verbatim in a text block.
Public names are the module's ``__all__`` when it has one, otherwise every
function and class *defined in* the module and every module-level UPPERCASE
constant whose name does not start with ``_``. Classes list their own public
methods and properties; dataclasses get a table of their fields (with the
trailing ``# comment`` of each field line, when there is one). Constants are
documented by the ``#:`` comment lines just above their assignment.

``tests/test_docs.py`` fails when ``docs/api.md`` differs from what this
script renders, so re-run it after changing a docstring or a signature::

    PYTHONPATH=. python tools/gen_api_docs.py           # rewrite docs/api.md
    PYTHONPATH=. python tools/gen_api_docs.py --check   # exit 1 if it is stale
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import io
import re
import sys
import textwrap
import tokenize
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "api.md"
GENERATOR = "tools/gen_api_docs.py"

#: documented modules, in page order; packages whose ``__all__`` only
#: re-exports names get a table pointing to where each name is defined
MODULES = [
    "snn_core",
    "snn_core.neurons",
    "snn_core.surrogate",
    "snn_core.parameter",
    "snn_core.sparse",
    "snn_core.geometry",
    "snn_core.layers",
    "snn_core.conv",
    "snn_core.network",
    "snn_core.models",
    "snn_core.losses",
    "snn_core.optim",
    "snn_core.structure",
    "snn_core.structure.init",
    "snn_core.structure.rewiring",
    "snn_core.structure.history",
    "snn_core.data",
    "snn_core.data.idx",
    "snn_core.data.datasets",
    "snn_core.data.encoders",
    "snn_core.config",
    "snn_core.training",
    "snn_core.checkpoint",
    "snn_core.energy",
    "snn_core.viz",
    "snn_core.plots",
    "snn_core.nir",
    "snn_core.cli",
    "snn_core.backend",
    "snn_core.backends",
    "snn_core.backends.base",
    "snn_core.backends.reference",
    "snn_core.backends.cpu",
    "snn_core.backends.cuda",
    "snn_core.kernels.reference",
    "snn_core.kernels.cpu",
]

_MAX_VALUE = 160  # characters of a constant's value shown before "..."
_WRAP = 100  # signatures longer than this get one parameter per line


# --------------------------------------------------------------------------
# formatting helpers
# --------------------------------------------------------------------------
def fmt_value(v, depth=0):
    """A short, deterministic repr (types by qualified name, arrays by shape)."""
    if isinstance(v, type):
        mod = v.__module__
        return v.__qualname__ if mod == "builtins" else f"{mod}.{v.__qualname__}"
    if isinstance(v, np.ndarray):
        return f"array(shape={v.shape}, dtype={v.dtype})"
    if isinstance(v, np.dtype):
        return f"dtype('{v.str}')"
    if isinstance(v, np.generic):
        return repr(v.item())
    if depth < 3 and isinstance(v, dict):
        return "{" + ", ".join(f"{fmt_value(k, depth + 1)}: {fmt_value(x, depth + 1)}" for k, x in v.items()) + "}"
    if depth < 3 and isinstance(v, (list, tuple)):
        inner = ", ".join(fmt_value(x, depth + 1) for x in v)
        return f"[{inner}]" if isinstance(v, list) else f"({inner}{',' if len(v) == 1 else ''})"
    if callable(v) and hasattr(v, "__qualname__"):
        return f"{getattr(v, '__module__', '?')}.{v.__qualname__}"
    r = repr(v)
    return re.sub(r" at 0x[0-9a-f]+", "", r)


def _short(text, n=_MAX_VALUE):
    return text if len(text) <= n else text[: n - 3] + "..."


def signature(obj, name, strip_self=False):
    """``name(a, b=1, *, c=None)`` with readable defaults and string annotations unquoted."""
    func = getattr(obj, "py_func", obj)  # numba dispatchers
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return f"{name}(...)"
    parts, star_done = [], False
    params = list(sig.parameters.values())
    if params and params[0].name in ("self", "cls") and (inspect.isclass(obj) or strip_self):
        params = params[1:]
    for i, p in enumerate(params):
        if p.kind is p.KEYWORD_ONLY and not star_done:
            parts.append("*")
            star_done = True
        if p.kind is p.VAR_POSITIONAL:
            star_done = True
            s = f"*{p.name}"
        elif p.kind is p.VAR_KEYWORD:
            s = f"**{p.name}"
        else:
            s = p.name
        if p.annotation is not p.empty:
            ann = p.annotation.strip("\x27\"") if isinstance(p.annotation, str) else fmt_value(p.annotation)
            s += f": {ann}"
        if p.default is not p.empty:
            s += (" = " if p.annotation is not p.empty else "=") + _short(fmt_value(p.default), 60)
        parts.append(s)
        if p.kind is p.POSITIONAL_ONLY and (i + 1 == len(params) or params[i + 1].kind is not p.POSITIONAL_ONLY):
            parts.append("/")
    ret = ""
    if sig.return_annotation is not sig.empty and not inspect.isclass(obj):
        ra = sig.return_annotation
        ret = f" -> {ra.strip(chr(39) + chr(34)) if isinstance(ra, str) else fmt_value(ra)}"
    one_line = f"{name}({', '.join(parts)}){ret}"
    if len(one_line) <= _WRAP:
        return one_line
    return f"{name}(\n" + "".join(f"    {x},\n" for x in parts) + f"){ret}"


_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj):`~?([^`]+)`")


def prose(text):
    """A docstring paragraph as Markdown: RST roles and ``literals`` become code spans."""
    text = _ROLE.sub(lambda m: "``" + m.group(1).split(".")[-1] + "``" if m.group(0).count("~") else
                     "``" + m.group(1) + "``", text)
    out, pos = [], 0
    for m in re.finditer(r"``(.+?)``|`([^`]+)`", text, flags=re.S):
        out.append(_escape(text[pos:m.start()]))
        code = (m.group(1) or m.group(2)).replace("\n", " ")
        out.append(f"`` {code} ``" if "`" in code else f"`{code}`")
        pos = m.end()
    out.append(_escape(text[pos:]))
    return " ".join("".join(out).split())


def _escape(s):
    for ch in ("\\", "*", "_", "<", ">", "[", "]", "#", "|"):
        s = s.replace(ch, "\\" + ch)
    return s


def split_doc(doc):
    """(first paragraph, rest) of a cleaned docstring."""
    doc = inspect.cleandoc(doc or "").strip()
    if not doc:
        return "", ""
    parts = re.split(r"\n\s*\n", doc, maxsplit=1)
    return parts[0], parts[1].strip("\n") if len(parts) > 1 else ""


def doc_block(doc, level_note=""):
    """Markdown for a docstring: first paragraph as prose, the rest in a text block."""
    first, rest = split_doc(doc)
    if not first:
        return ["*(no docstring)*", ""]
    lines = [prose(first), ""]
    if rest:
        lines += ["```text", rest, "```", ""]
    return lines


def own_doc(obj):
    """The object's own docstring (not one inherited, not a dataclass's generated one)."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and doc and doc.startswith(obj.__name__ + "("):
        return None
    return doc


# --------------------------------------------------------------------------
# source introspection
# --------------------------------------------------------------------------
def constant_comments(module):
    """Public UPPERCASE module constants -> their ``#:`` doc comment (in source order)."""
    try:
        src = inspect.getsource(module)
    except (OSError, TypeError):
        return {}
    lines = src.splitlines()
    out = {}
    for node in ast.parse(src).body:
        targets = []
        if isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            targets = [node.target.id]
        for name in targets:
            if name.startswith("_") or not name.isupper():
                continue
            comment, i = [], node.lineno - 2
            while i >= 0 and lines[i].lstrip().startswith("#:"):
                comment.insert(0, lines[i].lstrip()[2:].strip())
                i -= 1
            out[name] = " ".join(comment)
    return out


def field_comments(cls):
    """Dataclass field -> trailing ``# comment`` on its line in the class source."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments, field = {}, None
    for tok in tokenize.generate_tokens(io.StringIO(textwrap.dedent(src)).readline):
        if tok.type == tokenize.NEWLINE:
            field = None
        elif tok.type == tokenize.NAME and field is None and tok.start[1] == 4:
            field = tok.string
        elif tok.type == tokenize.COMMENT and field is not None:
            comments[field] = tok.string.lstrip("#").strip()
    return comments


def defined_here(obj, module):
    target = getattr(obj, "py_func", obj)
    return getattr(target, "__module__", None) == module.__name__


def public_names(module):
    """(names, reexport) for a module: ``__all__`` or what it defines."""
    if hasattr(module, "__all__"):
        names = [n for n in module.__all__ if not n.startswith("__")]
        reexport = all(not defined_here(getattr(module, n), module) and not _is_constant_of(module, n)
                       for n in names)
        return names, reexport
    consts = list(constant_comments(module))
    order = {}
    for name, obj in vars(module).items():
        if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj) or hasattr(obj, "py_func")):
            continue
        if defined_here(obj, module):
            order[name] = _lineno(obj)
    funcs = sorted(order, key=order.get)
    return consts + funcs, False


def _is_constant_of(module, name):
    return name in constant_comments(module)


def _lineno(obj):
    try:
        return inspect.getsourcelines(getattr(obj, "py_func", obj))[1]
    except (OSError, TypeError):
        return 0


def where_defined(obj, fallback):
    target = getattr(obj, "py_func", obj)
    mod = getattr(target, "__module__", None)
    return mod if mod and mod.startswith("snn_core") else fallback


# --------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------
def render_constant(module, name, comment):
    value = getattr(module, name)
    lines = [f"### `{name}` {{#{module.__name__}.{name}}}", "", "```text",
             f"{name} = {_short(fmt_value(value))}", "```", ""]
    if comment:
        lines += [prose(comment), ""]
    return lines


def render_function(module, name, obj, level="###", qual=None):
    qual = qual or name
    lines = [f"{level} `{qual}` {{#{module.__name__}.{qual}}}", "", "```text", signature(obj, name), "```", ""]
    func = getattr(obj, "py_func", obj)
    return lines + doc_block(func.__doc__)


def _class_members(cls):
    """Public methods/properties defined in ``cls`` itself, in source order."""
    members, seen = [], {}
    for name, raw in cls.__dict__.items():
        if inspect.isfunction(raw) and id(raw) in seen:
            members.append((name, seen[id(raw)], "alias"))
            continue
        if inspect.isfunction(raw):
            seen[id(raw)] = name
        if name.startswith("_") and name != "__call__":
            continue
        if isinstance(raw, (staticmethod, classmethod)):
            members.append((name, raw.__func__, "classmethod" if isinstance(raw, classmethod) else "staticmethod"))
        elif isinstance(raw, property):
            members.append((name, raw, "property"))
        elif inspect.isfunction(raw):
            if name == "__call__" and raw.__doc__ is None:
                continue
            members.append((name, raw, "method"))
    return members


def render_class(module, name, cls):
    lines = [f"### `{name}` {{#{module.__name__}.{name}}}", ""]
    bases = [b for b in cls.__bases__ if b is not object]
    sig = signature(cls, name)
    lines += ["```text", f"class {sig}", "```", ""]
    if bases:
        lines += ["Bases: " + ", ".join(f"`{fmt_value(b)}`" for b in bases), ""]
    doc = own_doc(cls)
    if doc or not dataclasses.is_dataclass(cls):
        lines += doc_block(doc)
    else:
        lines += ["Fields, with the comment on each field's line in the source:", ""]
    if dataclasses.is_dataclass(cls) and not doc:
        comments = field_comments(cls)
        lines += ["| field | type | default | note |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default = fmt_value(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                default = fmt_value(f.default_factory())
            else:
                default = ""
            typ = f.type if isinstance(f.type, str) else fmt_value(f.type)
            # a pipe inside a code span does not split a cell (Python-Markdown); in text it must be escaped
            lines.append(f"| `{f.name}` | `{typ}` | {('`' + default + '`') if default else ''} "
                         f"| {comments.get(f.name, '').replace('|', chr(92) + '|')} |")
        lines.append("")
    for mname, member, kind in _class_members(cls):
        qual = f"{name}.{mname}"
        base = _overridden(cls, mname)
        if kind in ("method", "property") and member.__doc__ is None and base is not None:
            target = f"{base.__module__}.{base.__name__}.{mname}"
            lines += [f"#### `{qual}` {{#{module.__name__}.{qual}}}", "",
                      f"Implements [`{base.__name__}.{mname}`](#{target}) (see there and the class docstring).", ""]
            continue
        if kind == "alias":
            lines += [f"#### `{qual}` {{#{module.__name__}.{qual}}}", "",
                      f"Alias of [`{name}.{member}`](#{module.__name__}.{name}.{member}).", ""]
        elif kind == "property":
            lines += [f"#### `{qual}` {{#{module.__name__}.{qual}}}", "", "*property*", ""]
            lines += doc_block(member.__doc__)
        else:
            lines += [f"#### `{qual}` {{#{module.__name__}.{qual}}}", "", "```text",
                      ("@classmethod\n" if kind == "classmethod" else "@staticmethod\n" if kind == "staticmethod"
                       else "") + signature(member, mname, strip_self=kind != "staticmethod"), "```", ""]
            lines += doc_block(member.__doc__)
    return lines


def _overridden(cls, name):
    """The first documented snn_core base class that also defines ``name``, else None."""
    for base in cls.__mro__[1:]:
        if name in base.__dict__ and base.__module__ in MODULES:
            return base
    return None


def module_anchor(name):
    return name.replace(".", "-")


def render_module(modname):
    module = importlib.import_module(modname)
    names, reexport = public_names(module)
    lines = [f"## `{modname}` {{#{module_anchor(modname)}}}", ""]
    lines += doc_block(module.__doc__)
    if reexport:
        lines += ["Re-exports (documented where they are defined):", "", "| name | defined in |", "|---|---|"]
        for n in names:
            obj = getattr(module, n)
            home = where_defined(obj, modname)
            if home == modname or home not in MODULES:
                home = _owner_module(n, modname)
            link = f"[`{n}`](#{home}.{n})" if home in MODULES else f"`{n}`"
            lines.append(f"| {link} | [`{home}`](#{module_anchor(home)}) |")
        lines.append("")
        return lines
    consts = constant_comments(module)
    for n in names:
        obj = getattr(module, n)
        if n in consts or not (callable(obj)):
            lines += render_constant(module, n, consts.get(n, ""))
        elif inspect.isclass(obj):
            lines += render_class(module, n, obj)
        else:
            lines += render_function(module, n, obj)
    return lines


def _owner_module(name, fallback):
    """The documented module that defines ``name`` (constants have no __module__)."""
    for m in MODULES:
        if m == fallback or not m.startswith(fallback + "."):
            continue
        mod = importlib.import_module(m)
        if name in vars(mod) and (name in constant_comments(mod) or defined_here(vars(mod)[name], mod)):
            return m
    for m in MODULES:
        mod = importlib.import_module(m)
        if name in vars(mod) and (name in constant_comments(mod) or defined_here(vars(mod)[name], mod)):
            return m
    return fallback


def render():
    out = [
        "# API reference",
        "",
        f"<!-- Generated by {GENERATOR} from the docstrings; do not edit by hand. -->",
        "",
        "Every public module, function, class and constant of `snn_core`, generated from the",
        "docstrings: the signature, the first paragraph of the docstring and the rest of it",
        "verbatim. Arrays are indexed time-major `(T, batch, features)` and are float32",
        "unless stated otherwise (see [Concepts](concepts.md)).",
        "",
        "| module | first line |",
        "|---|---|",
    ]
    for m in MODULES:
        first = split_doc(importlib.import_module(m).__doc__)[0]
        out.append(f"| [`{m}`](#{module_anchor(m)}) | {prose(first)} |")
    out.append("")
    for m in MODULES:
        out += render_module(m)
    text = "\n".join(out)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.rstrip("\n") + "\n"


def main(argv=None):
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/ itself, when loaded by path
    from _docgen import run

    return run(render, OUT, GENERATOR, "Render docs/api.md from the snn_core docstrings.", argv)


if __name__ == "__main__":
    sys.exit(main())
