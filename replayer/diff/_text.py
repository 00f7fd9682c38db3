"""Making untrusted text (topics, event ids, payload previews) safe for each report file.

Names and values in a report come from recorded messages, so they may hold
control characters. Each output gets them in a form it can carry.
``visible`` turns them into ``\\u001b``-style text for HTML and the terminal,
because an escape sequence in a terminal could move the cursor or change the
title. ``xml_text`` does the same for the characters XML 1.0 cannot contain.
"""

from __future__ import annotations

import re

# C0 controls except tab and newline, DEL, C1 controls, lone surrogates and the
# two noncharacters U+FFFE and U+FFFF: none of them is meant to be seen.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
# Characters XML 1.0 forbids: the C0 controls except tab, newline and carriage
# return, lone surrogates, U+FFFE and U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Line separators that str.splitlines() and some JSON readers treat as line ends.
_LINE_BREAKS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}


def _code(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def visible(text: str) -> str:
    """Return ``text`` with every control character written as ``\\uXXXX`` text."""
    return _CONTROL.sub(_code, text)


def xml_text(text: str) -> str:
    """Return ``text`` with the characters XML 1.0 forbids written as ``\\uXXXX`` text."""
    return _NOT_XML.sub(_code, text)


def one_line_json(text: str) -> str:
    """Escape U+2028, U+2029 and U+0085 in a JSON text, so it stays one line for every line splitter.

    JSON written with ``ensure_ascii=False`` keeps these characters raw inside
    strings; the escape is the same string value to a JSON parser.
    """
    for raw, escaped in _LINE_BREAKS.items():
        if raw in text:
            text = text.replace(raw, escaped)
    return text
