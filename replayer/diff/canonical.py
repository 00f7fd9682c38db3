"""Exact JSON parsing, canonical text and value rendering for the diff.

Payloads are parsed so that no number changes on the way: integers stay
Python ints of any size, floating-point values become :class:`JsonFloat`
(a float that keeps its original text), and ``NaN``, ``Infinity`` and
``-Infinity`` are accepted. orjson is used only when it cannot lose anything:
it turns integers outside the 64-bit range into floats and rejects NaN, so
payloads with a run of 19 or more digits, and payloads orjson rejects, go to
the exact parser.
"""

from __future__ import annotations

import json
import math
from typing import Any

from replayer.diff._paths import PatternState

try:
    import orjson
except ImportError:  # the exact parser is complete on its own; orjson only makes it faster
    orjson = None

# Any integer with at most 18 digits fits a signed 64-bit int, which orjson keeps
# exact. Digit runs are found by mapping every digit to "0" and everything else
# to a space and searching for 19 zeros: about 10x faster than a regular
# expression, which re-scans each run of digits from every position.
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_LONG_DIGIT_RUN = b"0" * 19


# Payloads nested deeper than this are compared as bytes. The comparison, the
# canonical text and Python's own == on containers recurse once (or more) per
# level, and Python's recursion limit (1000 frames) would otherwise be hit at
# about 500 levels; real pipeline payloads nest a few levels.
MAX_DEPTH = 128


class NotJson(ValueError):
    """The payload is not a JSON document; it is compared as bytes."""


class TooDeep(NotJson):
    """The payload nests deeper than :data:`MAX_DEPTH` levels; it is compared as bytes."""


def _depth_exceeds(document: Any, limit: int) -> bool:
    """Return True when ``document`` nests more than ``limit`` arrays or objects; iterative, stops early."""
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        kind = type(value)
        if kind is dict:
            children = value.values()
        elif kind is list:
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if type(child) in (dict, list))
    return False


def _check_depth(data: bytes | str, document: Any) -> Any:
    # Counting brackets is fast in C and bounds the depth, so most payloads skip the walk.
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if data.count(b"[") + data.count(b"{") > MAX_DEPTH and _depth_exceeds(document, MAX_DEPTH):
        raise TooDeep(f"the payload nests deeper than {MAX_DEPTH} levels")
    return document


class JsonFloat(float):
    """A floating-point JSON number that remembers its original text (``42.0``, ``1e400``, ``NaN``)."""

    __slots__ = ("text",)

    def __new__(cls, text: str) -> "JsonFloat":
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __repr__(self) -> str:
        return self.text


def parse_exact(data: bytes | str) -> Any:
    """Parse JSON keeping big integers exact and float texts.

    Raise NotJson when it is not JSON, TooDeep (a NotJson) when it nests
    deeper than :data:`MAX_DEPTH` levels.
    """
    try:
        document = json.loads(data, parse_float=JsonFloat, parse_constant=JsonFloat)
    except RecursionError as error:
        raise TooDeep(f"the payload nests deeper than {MAX_DEPTH} levels") from error
    except (ValueError, UnicodeDecodeError) as error:
        raise NotJson(str(error)) from error
    return _check_depth(data, document)


def parse_fast(data: bytes) -> tuple[Any, bool]:
    """Parse JSON with orjson when that is lossless, else exactly.

    Returns ``(document, exact)``: ``exact`` is true when floats are
    :class:`JsonFloat` with their original text, false when they are plain
    floats from orjson (equal in value, text not kept).
    """
    if orjson is not None and _LONG_DIGIT_RUN not in data.translate(_DIGITS_AS_ZERO):
        try:
            return _check_depth(data, orjson.loads(data)), False
        except orjson.JSONDecodeError:
            pass  # NaN, Infinity, 1e400 or not JSON at all: the exact parser decides
    return parse_exact(data), True


def _int_or_non_finite_text(value: int | float) -> str | None:
    """Return the text of an int, NaN or an infinity, or None for a finite float."""
    if type(value) is int:
        return str(value)
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return None


def number_text(value: int | float) -> str:
    """Return the JSON text of a number: the original text when it is known."""
    text = getattr(value, "text", None)
    if text is not None:
        return text
    text = _int_or_non_finite_text(value)
    if text is not None:
        return text
    return repr(value)


class Renderer:
    """Renders values as JSON text with numbers in their original text.

    ``saw_plain_float`` is set when a float without its original text was
    rendered, so the caller can re-parse exactly and render again.
    """

    __slots__ = ("saw_plain_float",)

    def __init__(self) -> None:
        self.saw_plain_float = False

    def render(self, value: Any) -> str:
        """Return compact JSON text for ``value``."""
        kind = type(value)
        if kind is str:
            return json.dumps(value, ensure_ascii=False)
        if kind is bool or value is None:
            return json.dumps(value)
        if kind is int or kind is JsonFloat:
            return number_text(value)
        if kind is float:
            self.saw_plain_float = True
            return number_text(value)
        if kind is dict:
            items = (json.dumps(key, ensure_ascii=False) + ":" + self.render(item) for key, item in value.items())
            return "{" + ",".join(items) + "}"
        if kind is list:
            return "[" + ",".join(self.render(item) for item in value) + "]"
        return json.dumps(value, ensure_ascii=False, default=str)


def canonical_number(value: int | float) -> str:
    """Return one text per numeric value: ``42`` and ``42.0`` agree, ``-0.0`` is ``0``, NaN is ``NaN``."""
    text = _int_or_non_finite_text(value)
    if text is not None:
        return text
    if value == int(value):
        # The exact integer value, so a float agrees with the integer it equals
        # and with no other (1.0176718226607831e19 is 10176718226607831040).
        return str(int(value))
    return repr(float(value))


def canonical_text(value: Any, ignore: PatternState | None = None, unordered: PatternState | None = None) -> str:
    """Return a canonical text of ``value``: sorted keys, canonical numbers, ignored paths left out.

    Arrays at an order-insensitive path are sorted by their items' canonical
    text, so two arrays with the same items in another order agree.
    """
    if ignore is not None and ignore.accepting:
        return "~"
    kind = type(value)
    if kind is dict:
        parts = []
        for key in sorted(value):
            child_ignore = ignore.step(key) if ignore is not None else None
            if child_ignore is not None and child_ignore.accepting:
                continue
            child_unordered = unordered.step(key) if unordered is not None else None
            parts.append(json.dumps(key) + ":" + canonical_text(value[key], child_ignore, child_unordered))
        return "{" + ",".join(parts) + "}"
    if kind is list:
        items = []
        for index, item in enumerate(value):
            segment = str(index)
            child_ignore = ignore.step(segment) if ignore is not None else None
            child_unordered = unordered.step(segment) if unordered is not None else None
            items.append(canonical_text(item, child_ignore, child_unordered))
        if unordered is not None and unordered.accepting:
            items.sort()
        return "[" + ",".join(items) + "]"
    if kind is bool or value is None:
        return json.dumps(value)
    if kind is str:
        return json.dumps(value)
    return canonical_number(value)
