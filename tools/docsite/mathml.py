"""TeX -> MathML at build time, so math renders offline without JavaScript.

``pymdownx.arithmatex`` (``generic: true``) wraps every ``$...$`` and
``$$...$$`` of a page in ``<span class="arithmatex">\\(...\\)</span>`` or
``<div class="arithmatex">\\[...\\]</div>``; :func:`render_math` replaces each
wrapper with the MathML that ``latex2mathml`` produces. Browsers render MathML
Core natively (Chromium >= 109, Firefox, Safari), so the built site needs no
math library and no network. TeX that ``latex2mathml`` does not understand
(it leaves the backslash or ``&`` as a bare identifier) fails the build with
the page and the formula, instead of showing garbage to a reader.
"""
from __future__ import annotations

import html
import re

from latex2mathml.converter import convert

_WRAPPED = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">\s*(?:\\\((?P<inline>.*?)\\\)|\\\[(?P<display>.*?)\\\])\s*</(?P=tag)>',
    re.S)
#: what latex2mathml emits for a command or alignment it cannot translate
_UNTRANSLATED = re.compile(r"<mi>(\\|&amp;|&)</mi>|<mi>\\[A-Za-z]+</mi>")


class MathError(ValueError):
    """A formula that cannot be rendered to MathML."""


def tex_to_mathml(tex: str, display: bool) -> str:
    """One TeX formula (without delimiters) as a ``<math>`` element.

    Parameters
    ----------
    tex : str
        The formula, HTML entities already decoded.
    display : bool
        Block (centred, own line) instead of inline.

    Raises
    ------
    MathError
        ``latex2mathml`` fails or leaves part of the formula untranslated.
    """
    try:
        out = convert(tex, display="block" if display else "inline")
    except Exception as exc:  # latex2mathml raises many exception types
        raise MathError(f"cannot render {tex!r}: {exc}") from None
    bad = _UNTRANSLATED.search(out)
    if bad:
        raise MathError(f"cannot render {tex!r}: {bad.group(0)} left untranslated "
                        "(use \\begin{array} instead of aligned, \\prime instead of ')")
    return out


def render_math(page_html: str, where: str = "page") -> str:
    """Replace every arithmatex wrapper in ``page_html`` with MathML.

    Raises
    ------
    MathError
        Naming ``where`` and the formula.
    """
    def sub(m):
        display = m.group("display") is not None
        tex = html.unescape(m.group("display") if display else m.group("inline"))
        try:
            math = tex_to_mathml(tex, display)
        except MathError as exc:
            raise MathError(f"{where}: {exc}") from None
        return f'<div class="math-display">{math}</div>' if display else math

    return _WRAPPED.sub(sub, page_html)
