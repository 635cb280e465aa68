"""Render the ``snn-esl`` argparse parser into ``docs/cli.md``.

The page is generated from :func:`snn_core.cli.build_parser` (every
subcommand, every flag, its value, default and help) plus the trailing
comments of the :class:`snn_core.config.TrainConfig` fields, which say what
each training flag means. ``tests/test_docs.py`` fails when ``docs/cli.md``
differs from what this script renders, so re-run it after changing the CLI
or the config::

    PYTHONPATH=. python tools/gen_cli_docs.py           # rewrite docs/cli.md
    PYTHONPATH=. python tools/gen_cli_docs.py --check   # exit 1 if it is stale

The output depends only on the parser, not on the terminal width or the
Python version's help formatter (tables are built from the parser's actions).
"""
from __future__ import annotations

import argparse
import inspect
import io
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "cli.md"
GENERATOR = "tools/gen_cli_docs.py"

#: meanings for TrainConfig fields whose line in config.py has no comment, and
#: for parser arguments without a help string ((subcommand, dest) -> text)
FIELD_NOTES = {
    "hidden": "sizes of the hidden LIF layers, e.g. `--hidden 800` or `--hidden 500 300`",
    "v_th": "firing threshold of the LIF neurons (membrane units)",
    "detach_reset": "treat the reset as a constant in BPTT (see bptt.md)",
    "surrogate": "surrogate derivative: {surrogates}",
    "epochs": "passes over the training split; the LR schedule and the end of rewiring are planned on it",
    "batch_size": "samples per mini-batch (paper: 100)",
    "lr_end": "final learning rate of the `exponential` / `cosine` schedules",
    "weight_decay": "L2 weight decay added to the weight gradients (not to biases)",
    "zeta0": "fraction of each layer's connections rewired at the first event (then decayed)",
    "seed": "one seed for the validation split, shuffling, spike encoding, initialisation and rewiring",
    "out_dir": "run directory: `summary.json`, `best.h5`, `last.h5`",
    "quiet": "no progress bars; print one plain line per epoch instead",
}
ARG_NOTES = {
    ("evaluate", "checkpoint"): "checkpoint file (`RUN_DIR/best.h5` or `RUN_DIR/last.h5`)",
    ("info", "checkpoint"): "checkpoint file (`RUN_DIR/best.h5` or `RUN_DIR/last.h5`)",
    ("plot", "run_dir"): "a directory written by `snn-esl train`, or a sweep folder (`sweep.json`)",
}


def config_field_comments():
    """TrainConfig field name -> its trailing ``# comment`` in snn_core/config.py."""
    from snn_core.config import TrainConfig

    src = inspect.getsource(TrainConfig)
    comments, last_field = {}, None
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.NEWLINE:
            last_field = None
        elif tok.type == tokenize.NAME and last_field is None and tok.start[1] == 4:
            last_field = tok.string  # first name at class-body indentation: a field (or def)
        elif tok.type == tokenize.COMMENT and last_field is not None:
            comments[last_field] = tok.string.lstrip("#").strip()
    return comments


def _cell(text):
    """Text safe inside a Markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _code(text):
    return f"`{text}`" if "`" not in str(text) else f"`` {text} ``"


def _value(action):
    """How the flag's value is written: METAVAR, N [N ...], or nothing for switches and positionals."""
    if action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction) or not action.option_strings:
        return ""
    metavar = action.metavar or (action.dest.upper() if action.option_strings else action.dest)
    if action.nargs == "+":
        return f"{metavar} [{metavar} ...]"
    if action.nargs == "*":
        return f"[{metavar} ...]"
    if action.nargs == "?":
        return f"[{metavar}]"
    return metavar


def _flags(action):
    if isinstance(action, argparse.BooleanOptionalAction):
        return " / ".join(_code(s) for s in action.option_strings)
    return ", ".join(_code(s) for s in action.option_strings) if action.option_strings else _code(action.metavar or action.dest)


def _default(action):
    if action.default is argparse.SUPPRESS or action.default is None or action.nargs == 0:
        return ""
    d = action.default
    if isinstance(d, list):
        return _code(" ".join(str(v) for v in d))
    return _code(d)


def _description(parser):
    """The parser's description without its leading "``prog``: " and with Markdown code spans."""
    d = parser.description.replace("``", "`")
    prefix = f"`{parser.prog}`: "
    return d[len(prefix):] if d.startswith(prefix) else d


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            return [(name, sub, helps.get(name, "")) for name, sub in action.choices.items()]
    return []


def _synopsis(prog, sub):
    parts = [prog, "[options]"]
    for a in sub._actions:
        if not a.option_strings and a.nargs != argparse.PARSER:
            parts.append(a.metavar or a.dest)
    return " ".join(parts)


def render():
    from snn_core.cli import build_parser
    from snn_core.config import TrainConfig

    from snn_core.surrogate import SURROGATES

    parser = build_parser()
    comments = config_field_comments()
    notes = {k: v.format(surrogates=", ".join(f"`{n}`" for n in SURROGATES)) for k, v in FIELD_NOTES.items()}
    config_fields = set(TrainConfig.field_names())
    defaults = TrainConfig()
    subs = _subparsers(parser)
    out = [
        "# CLI reference",
        "",
        f"<!-- Generated by {GENERATOR} from snn_core.cli.build_parser(); do not edit by hand. -->",
        "",
        f"`{parser.prog}` (also `python -m snn_core`): {_description(parser)}",
        "Every subcommand prints one line `snn-esl <command>: error: ...` and exits with",
        "status 1 on bad input (status 2 for a flag argparse cannot parse).",
        "",
        "| subcommand | what it does |",
        "|---|---|",
    ]
    for name, _, helptext in subs:
        out.append(f"| [`{name}`](#{name}) | {_cell(helptext)} |")
    out += [
        "",
        "Training flags mirror the fields of `snn_core.config.TrainConfig` one to one",
        "(`--t-iter` sets `t_iter`); `--config FILE` (TOML or JSON, unknown keys rejected)",
        "sets many at once and flags given on the command line override the file. A flag",
        "that is not given keeps the value from the file, or the `TrainConfig` default",
        "(the main job) shown in the *default* column.",
        "",
    ]
    for name, sub, helptext in subs:
        out += [f"## {name}", "", f"{helptext[0].upper() + helptext[1:]}." if helptext else "", "",
                "```text", _synopsis(f"{parser.prog} {name}", sub), "```", ""]
        for group in sub._action_groups:
            actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
            if not actions:
                continue
            title = {"positional arguments": "Arguments", "options": "Options",
                     "optional arguments": "Options"}.get(group.title, group.title[0].upper() + group.title[1:])
            out += [f"**{title}**", "", "| flag | value | default | meaning |", "|---|---|---|---|"]
            for a in actions:
                if a.dest in config_fields and a.default is argparse.SUPPRESS:
                    default = getattr(defaults, a.dest)
                    dflt = _code(" ".join(map(str, default)) if isinstance(default, list) else default) \
                        if default is not None else "`None`"
                    meaning = comments.get(a.dest) or notes.get(a.dest, "")
                    meaning = f"`TrainConfig.{a.dest}`" + (f": {meaning}" if meaning else "")
                else:
                    dflt, meaning = _default(a), a.help or ARG_NOTES.get((name, a.dest), "")
                out.append(f"| {_flags(a)} | {_cell(_code(_value(a)) if _value(a) else '')} | {_cell(dflt)} "
                           f"| {_cell(meaning)} |")
            out.append("")
    return "\n".join(line for line in out).rstrip("\n") + "\n"


def main(argv=None):
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/ itself, when loaded by path
    from _docgen import run

    return run(render, OUT, GENERATOR, "Render docs/cli.md from the snn-esl parser.", argv)


if __name__ == "__main__":
    sys.exit(main())
