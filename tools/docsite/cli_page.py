"""The CLI reference page, rendered from the ``snn-esl`` argparse parser at build time.

One source: every flag's sentence is the ``help=`` of its argparse argument
(for training flags, the ``help`` metadata of the
:class:`snn_core.config.TrainConfig` field), which is also what
``snn-esl ... --help`` prints. A new subcommand or flag appears on the page by
itself; ``tests/test_cli.py`` checks that every argument has a sentence.
"""
from __future__ import annotations

import argparse
import re

_DEFAULT_SUFFIX = re.compile(r"\s*\(default: [^()]*\)$")


def _cell(text) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _code(text) -> str:
    return f"`{text}`" if "`" not in str(text) else f"`` {text} ``"


def _value(action) -> str:
    """How the flag's value is written: METAVAR, N [N ...], or nothing for switches and positionals."""
    if action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction) or not action.option_strings:
        return ""
    metavar = action.metavar or action.dest.upper()
    return {"+": f"{metavar} [{metavar} ...]", "*": f"[{metavar} ...]", "?": f"[{metavar}]"}.get(action.nargs, metavar)


def _flags(action) -> str:
    if action.option_strings:
        sep = " / " if isinstance(action, argparse.BooleanOptionalAction) else ", "
        return sep.join(_code(s) for s in action.option_strings)
    return _code(action.dest) + (" (one of " + ", ".join(_code(c) for c in action.choices) + ")"
                                 if action.choices else "")


def _default(action, config_defaults) -> str:
    if action.default is argparse.SUPPRESS:
        if action.dest not in config_defaults:
            return ""
        d = config_defaults[action.dest]
    else:
        d = action.default
    if d is None or action.nargs == 0 or not action.option_strings:
        return ""
    return _code(" ".join(map(str, d)) if isinstance(d, list) else d)


def _help(action) -> str:
    """The sentence, without the "(default: ...)" that --help appends (the table has a column for it)."""
    return _DEFAULT_SUFFIX.sub("", (action.help or "").replace("%%", "%"))


def subcommands(parser, prefix=()):
    """``[(path, parser, help)]`` for every (nested) subcommand, depth first."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                path = prefix + (name,)
                nested = subcommands(sub, path)
                out.append((path, sub, helps.get(name, ""), bool(nested)))
                out += nested
    return out


def _synopsis(prog, sub) -> str:
    parts = [prog, "[options]"]
    for a in sub._actions:
        if not a.option_strings and a.nargs != argparse.PARSER:
            parts.append(a.metavar or a.dest.upper())
    return " ".join(parts)


def _sentence(text) -> str:
    return (text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")) if text else ""


def render() -> str:
    """Markdown of ``docs/cli.md``."""
    import dataclasses

    from snn_core.cli import build_parser
    from snn_core.config import TrainConfig

    parser = build_parser()
    defaults = {f.name: getattr(TrainConfig(), f.name) for f in dataclasses.fields(TrainConfig)}
    subs = subcommands(parser)
    out = [
        "# CLI reference",
        "",
        "<!-- Generated while the site builds (tools/docsite/cli_page.py) from snn_core.cli.build_parser(). -->",
        "",
        f"`{parser.prog}` (also `python -m snn_core`): {parser.description}",
        "Every subcommand prints one line `snn-esl <command>: error: ...` and exits with",
        "status 1 on bad input (status 2 for a flag argparse cannot parse). The sentences",
        "below are the ones `snn-esl <command> --help` prints.",
        "",
        "| subcommand | what it does |",
        "|---|---|",
    ]
    for path, _, helptext, _ in subs:
        anchor = "-".join(path)
        out.append(f"| [`{' '.join(path)}`](#{anchor}) | {_cell(helptext)} |")
    out += [
        "",
        "Training flags mirror the fields of `snn_core.config.TrainConfig` one to one",
        "(`--t-iter` sets `t_iter`); `--config FILE` (TOML or JSON, unknown keys rejected)",
        "sets many at once and flags given on the command line override the file. A flag",
        "that is not given keeps the value from the file, or the `TrainConfig` default",
        "(the main job) shown in the *default* column.",
        "",
    ]
    for path, sub, helptext, has_children in subs:
        out += [f"## {' '.join(path)} {{#{'-'.join(path)}}}", "", _sentence(helptext), ""]
        if has_children:
            continue
        out += ["```text", _synopsis(f"{parser.prog} {' '.join(path)}", sub), "```", ""]
        for group in sub._action_groups:
            actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
            if not actions:
                continue
            title = {"positional arguments": "Arguments", "options": "Options",
                     "optional arguments": "Options"}.get(group.title, _sentence(group.title)[:-1])
            out += [f"**{title}**", "", "| flag | value | default | meaning |", "|---|---|---|---|"]
            for a in actions:
                value = _code(_value(a)) if _value(a) else ""
                out.append(f"| {_cell(_flags(a))} | {_cell(value)} | {_cell(_default(a, defaults))} "
                           f"| {_cell(_help(a))} |")
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"
