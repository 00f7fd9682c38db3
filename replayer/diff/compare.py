"""Field-level comparison of one recorded output with one replayed output.

:func:`compare_payloads` returns the differences as :class:`FieldDiff` rows
(JSON pointer, recorded text, replayed text, kind). The rules, per topic:

- identical bytes are equal without parsing;
- JSON has one number type, so ``42`` equals ``42.0`` and ``-0.0`` equals ``0.0``;
- ``NaN`` equals ``NaN`` but not ``null``; ``Infinity`` equals ``1e400``;
- two integer texts are compared exactly, whatever their size, and tolerance
  never applies to them;
- an integer and a float compare by exact value, so ``9007199254740993``
  differs from ``9007199254740992.0``;
- ``abs_tol``/``rel_tol`` apply when at least one side is a floating-point
  text and neither side is an integer beyond 2^53;
- numbers inside strings are strings;
- ignored paths are skipped, arrays at order-insensitive paths are compared
  as multisets of their items' canonical text;
- payloads that are not JSON are compared as bytes, and so are payloads
  nested deeper than ``MAX_DEPTH`` (128) levels; their difference carries a note.

Differing numbers are reported in their original text
(``10176718226607830673`` against ``10176718226607831000``), never re-rendered.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Callable, Mapping

from replayer.diff._paths import PatternState, escape_segment, to_pointer
from replayer.diff.canonical import (
    MAX_DEPTH,
    JsonFloat,
    NotJson,
    TooDeep,
    Renderer,
    canonical_text,
    parse_exact,
    parse_fast,
)
from replayer.diff.rules import TopicRules

try:
    import orjson
except ImportError:
    orjson = None

_SORT_KEYS = orjson.OPT_SORT_KEYS if orjson is not None else 0

KINDS = ("changed", "type_changed", "missing", "extra", "bytes")
_PREVIEW_CHARS = 200
_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
               int: "number", float: "number", JsonFloat: "number"}
_SCALAR_TYPES = (str, int, bool, type(None))
# Two values of one of these types that are == in Python are equal JSON values.
_EQUAL_BY_VALUE = frozenset((str, int, bool, type(None), float, JsonFloat))
_MAX_EXACT_FLOAT_INT = 2**53
# Relative slack added to abs_tol/rel_tol (documented in docs/report-format.md).
TOLERANCE_SLACK = 1e-12


@dataclasses.dataclass(frozen=True)
class FieldDiff:
    """One difference between a recorded and a replayed output.

    ``recorded`` and ``replayed`` are JSON texts with numbers as they were
    written (None when the field is absent on that side). For ``kind ==
    "bytes"`` they are previews of the raw payloads. ``part`` is ``data`` for
    the payload or ``attributes`` for a Pub/Sub attribute (``pointer`` is then
    ``/<attribute name>``). ``note`` explains a ``bytes`` difference of two
    payloads that are JSON but nest too deep to compare field by field.
    """

    pointer: str
    recorded: str | None
    replayed: str | None
    kind: str
    part: str = "data"
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used in report.json and diffs.jsonl (``note`` only when set)."""
        data = {"pointer": self.pointer, "part": self.part, "kind": self.kind,
                "recorded": self.recorded, "replayed": self.replayed}
        if self.note is not None:
            data["note"] = self.note
        return data


TOO_DEEP_NOTE = (f"a payload nests deeper than {MAX_DEPTH} levels, so the two were compared as bytes, "
                 "not field by field")


def _is_number(value: Any) -> bool:
    kind = type(value)
    return kind is int or kind is float or kind is JsonFloat


def numbers_equal(recorded: int | float, replayed: int | float, *, abs_tol: float, rel_tol: float) -> bool:
    """Compare two JSON numbers by the diff's rules (exact integers, NaN equal, tolerance for floats).

    An integer beyond 2^53 has no exact double, so it is compared exactly
    with the other side even when a tolerance is set: ``9007199254740993``
    differs from ``9007199254740992.0``.
    """
    if type(recorded) is int and type(replayed) is int:
        return recorded == replayed
    # Python compares an int with a float exactly, without rounding the int.
    if recorded == replayed:
        return True
    if recorded != recorded or replayed != replayed:
        return recorded != recorded and replayed != replayed
    if abs_tol == 0.0 and rel_tol == 0.0:
        return False
    if _is_big_int(recorded) or _is_big_int(replayed):
        return False
    left = float(recorded)
    right = float(replayed)
    if math.isinf(left) or math.isinf(right):
        return False
    larger = max(abs(left), abs(right))
    # The slack absorbs the rounding of decimal texts to binary floats, so the
    # documented boundary is kept: 1.0 against 1.1 with abs_tol 0.1 is equal
    # although 1.1 - 1.0 is 0.10000000000000009 in floating point.
    return abs(left - right) <= max(abs_tol, rel_tol * larger) + TOLERANCE_SLACK * larger


def _is_big_int(value: int | float) -> bool:
    return type(value) is int and abs(value) > _MAX_EXACT_FLOAT_INT


class _Walker:
    """One recursive comparison of two parsed documents; collects FieldDiff rows."""

    def __init__(self, rules: TopicRules, *, exact: bool, may_hold_booleans: bool = True) -> None:
        self.abs_tol = rules.abs_tol
        self.rel_tol = rules.rel_tol
        self.renderer = Renderer()
        self.diffs: list[FieldDiff] = []
        # orjson can serialise plain trees only; exact trees hold JsonFloat.
        self.strict_dump = orjson.dumps if (orjson is not None and not exact) else None
        self.may_hold_booleans = may_hold_booleans
        # Differences whose values held floats without their original text: (index
        # in diffs, recorded path, replayed path, recorded affected, replayed affected).
        self.plain_floats: list[tuple[int, tuple[str, ...], tuple[str, ...], bool, bool]] = []
        # In order-insensitive arrays an item is reported at its recorded index;
        # this maps that item's path to its index on the replayed side.
        self.replayed_index: dict[tuple[str, ...], str] = {}

    def equal_containers(self, left: Any, right: Any) -> bool:
        """Return True only when two containers that are ``==`` in Python are also equal as JSON.

        Python's ``==`` treats ``true`` as ``1``. Without booleans in the
        payloads ``==`` is enough. Otherwise equality is confirmed on orjson's
        serialisation with sorted keys, which keeps the two apart.
        """
        if not self.may_hold_booleans:
            return True
        if self.strict_dump is None:
            return False
        return self.strict_dump(left, option=_SORT_KEYS) == self.strict_dump(right, option=_SORT_KEYS)

    def is_equal(self, left: Any, right: Any) -> bool:
        """Return True when two values are certainly equal by the diff's rules, without walking them."""
        kind = type(left)
        if kind is not type(right) or left != right:
            return False
        return kind in _EQUAL_BY_VALUE or self.equal_containers(left, right)

    def add(self, path: tuple[str, ...], left: Any, right: Any, kind: str,
            right_path: tuple[str, ...] | None = None) -> None:
        renderer = self.renderer
        renderer.saw_plain_float = False
        recorded = None if left is _ABSENT else renderer.render(left)
        left_plain = renderer.saw_plain_float
        renderer.saw_plain_float = False
        replayed = None if right is _ABSENT else renderer.render(right)
        right_plain = renderer.saw_plain_float
        if left_plain or right_plain:
            if right_path is None:
                right_path = self.replayed_path(path)
            self.plain_floats.append((len(self.diffs), path, right_path, left_plain, right_plain))
        self.diffs.append(FieldDiff(pointer=to_pointer(path), recorded=recorded, replayed=replayed, kind=kind))

    def replayed_path(self, path: tuple[str, ...]) -> tuple[str, ...]:
        """Return ``path`` with order-insensitive array indices mapped to the replayed side."""
        if not self.replayed_index:
            return path
        return tuple(self.replayed_index.get(path[:depth + 1], segment) for depth, segment in enumerate(path))

    def render_original_numbers(self, recorded: Callable[[tuple[str, ...]], str],
                                replayed: Callable[[tuple[str, ...]], str]) -> None:
        """Render again the values that held floats without their text.

        ``recorded`` and ``replayed`` each return the text of the value at a path on their side.
        """
        for index, left_path, right_path, left_plain, right_plain in self.plain_floats:
            diff = self.diffs[index]
            self.diffs[index] = dataclasses.replace(
                diff,
                recorded=recorded(left_path) if left_plain else diff.recorded,
                replayed=replayed(right_path) if right_plain else diff.replayed,
            )

    def walk(self, left: Any, right: Any, path: tuple[str, ...],
             ignore: PatternState | None, unordered: PatternState | None) -> None:
        left_type = type(left)
        right_type = type(right)
        if left_type is dict and right_type is dict:
            self.walk_object(left, right, path, ignore, unordered)
        elif left_type is list and right_type is list:
            if unordered is not None and unordered.accepting:
                self.walk_unordered(left, right, path, ignore, unordered)
            else:
                self.walk_array(left, right, path, ignore, unordered)
        elif _is_number(left) and _is_number(right):
            if not numbers_equal(left, right, abs_tol=self.abs_tol, rel_tol=self.rel_tol):
                self.add(path, left, right, "changed")
        elif left_type is right_type or (left_type in _SCALAR_TYPES and right_type in _SCALAR_TYPES
                                         and _JSON_TYPES[left_type] == _JSON_TYPES[right_type]):
            if left != right:
                self.add(path, left, right, "changed")
        else:
            self.add(path, left, right, "type_changed")

    def walk_child(self, left: Any, right: Any, path: tuple[str, ...],
                   ignore: PatternState | None, unordered: PatternState | None) -> None:
        if not self.is_equal(left, right):
            self.walk(left, right, path, ignore, unordered)

    def walk_object(self, left: dict, right: dict, path: tuple[str, ...],
                    ignore: PatternState | None, unordered: PatternState | None) -> None:
        # Equal values are skipped before their ignore state is computed, since
        # an equal value has no difference to ignore.
        is_equal = self.is_equal
        for key, left_value in left.items():
            right_value = right.get(key, _ABSENT)
            if right_value is not _ABSENT and is_equal(left_value, right_value):
                continue
            child_ignore = ignore.step(key) if ignore is not None else None
            if child_ignore is not None and child_ignore.accepting:
                continue
            if right_value is _ABSENT:
                self.add(path + (key,), left_value, _ABSENT, "missing")
            else:
                child_unordered = unordered.step(key) if unordered is not None else None
                self.walk(left_value, right_value, path + (key,), child_ignore, child_unordered)
        for key, right_value in right.items():
            if key in left:
                continue
            child_ignore = ignore.step(key) if ignore is not None else None
            if child_ignore is not None and child_ignore.accepting:
                continue
            self.add(path + (key,), _ABSENT, right_value, "extra")

    def walk_array(self, left: list, right: list, path: tuple[str, ...],
                   ignore: PatternState | None, unordered: PatternState | None) -> None:
        is_equal = self.is_equal
        shared = min(len(left), len(right))
        for index in range(max(len(left), len(right))):
            if index < shared and is_equal(left[index], right[index]):
                continue
            segment = str(index)
            child_ignore = ignore.step(segment) if ignore is not None else None
            if child_ignore is not None and child_ignore.accepting:
                continue
            if index >= len(right):
                self.add(path + (segment,), left[index], _ABSENT, "missing")
            elif index >= len(left):
                self.add(path + (segment,), _ABSENT, right[index], "extra")
            else:
                child_unordered = unordered.step(segment) if unordered is not None else None
                self.walk(left[index], right[index], path + (segment,), child_ignore, child_unordered)

    def walk_unordered(self, left: list, right: list, path: tuple[str, ...],
                       ignore: PatternState | None, unordered: PatternState) -> None:
        def states(index: int) -> tuple[PatternState | None, PatternState | None]:
            segment = str(index)
            return (ignore.step(segment) if ignore is not None else None, unordered.step(segment))

        # Multiset match on canonical text; what is left is paired in canonical
        # order (close items sort together) and compared field by field.
        left_texts = [canonical_text(item, *states(index)) for index, item in enumerate(left)]
        pending: dict[str, list[int]] = {}
        for index, item in enumerate(right):
            pending.setdefault(canonical_text(item, *states(index)), []).append(index)
        left_over = []
        for index, text in enumerate(left_texts):
            matches = pending.get(text)
            if matches:
                matches.pop(0)
            else:
                left_over.append((text, index))
        right_over = sorted((text, index) for text, indexes in pending.items() for index in indexes)
        left_over.sort()
        for (_, left_index), (_, right_index) in zip(left_over, right_over):
            child_ignore, child_unordered = states(left_index)
            if left_index != right_index:
                self.replayed_index[path + (str(left_index),)] = str(right_index)
            self.walk_child(left[left_index], right[right_index], path + (str(left_index),),
                            child_ignore, child_unordered)
        for _, left_index in left_over[len(right_over):]:
            self.add(path + (str(left_index),), left[left_index], _ABSENT, "missing")
        for _, right_index in right_over[len(left_over):]:
            # Extra items are reported at their replayed index.
            self.add(path + (str(right_index),), _ABSENT, right[right_index], "extra",
                     right_path=self.replayed_path(path) + (str(right_index),))


_ABSENT = object()


def _resolve(document: Any, path: tuple[str, ...]) -> Any:
    for segment in path:
        document = document[int(segment)] if type(document) is list else document[segment]
    return document


def compare_documents(recorded: Any, replayed: Any, rules: TopicRules, *, exact: bool = True) -> list[FieldDiff]:
    """Compare two parsed JSON documents; ``exact`` is true when they come from the exact parser."""
    root_ignore = rules.ignore.root
    if root_ignore is not None and root_ignore.accepting:
        return []
    walker = _Walker(rules, exact=exact)
    walker.walk_child(recorded, replayed, (), root_ignore, rules.unordered.root)
    return walker.diffs


def _preview(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = "0x" + data[:_PREVIEW_CHARS // 2].hex()
        return text + (f"... ({len(data)} bytes)" if len(data) > _PREVIEW_CHARS // 2 else "")
    if len(text) > _PREVIEW_CHARS:
        return text[:_PREVIEW_CHARS] + f"... ({len(data)} bytes)"
    return text


def compare_payloads(recorded: bytes, replayed: bytes, rules: TopicRules) -> list[FieldDiff]:
    """Compare two payloads by the rules of their topic; an empty list means equal."""
    if recorded == replayed:
        return []
    root_ignore = rules.ignore.root
    if root_ignore is not None and root_ignore.accepting:
        return []
    try:
        left, left_exact = parse_fast(recorded)
        right, right_exact = parse_fast(replayed)
    except TooDeep:
        return [FieldDiff("", _preview(recorded), _preview(replayed), "bytes", note=TOO_DEEP_NOTE)]
    except NotJson:
        return [FieldDiff("", _preview(recorded), _preview(replayed), "bytes")]
    exact = left_exact or right_exact
    if exact and not (left_exact and right_exact):
        left, right, exact = parse_exact(recorded), parse_exact(replayed), True
    # Without a true or false anywhere, Python's == is JSON equality on orjson's trees.
    may_hold_booleans = (b"true" in recorded or b"false" in recorded
                         or b"true" in replayed or b"false" in replayed)
    walker = _Walker(rules, exact=exact, may_hold_booleans=may_hold_booleans)
    walker.walk_child(left, right, (), root_ignore, rules.unordered.root)
    if walker.plain_floats:
        # A differing float was rendered from orjson's value, which has lost its
        # text (1.50, 1e2): find the numbers as they were written.
        walker.render_original_numbers(_original_text_at(recorded, left), _original_text_at(replayed, right))
    return walker.diffs


def _original_text_at(data: bytes, document: Any) -> Callable[[tuple[str, ...]], str]:
    """Return a function rendering the value at a path with its numbers as written in ``data``.

    If orjson writes the parsed document back as exactly ``data``, every
    number in ``data`` is written the way orjson writes it. Then orjson renders
    the original text without a second parse. The spaces that ``json.dumps``
    puts after ``,`` and ``:`` are dropped before this check. Otherwise
    ``data`` is parsed again by the exact parser, which keeps each float's text.
    """
    written = orjson.dumps(document)
    stripped = data.strip()
    if written == stripped or written == stripped.replace(b", ", b",").replace(b": ", b":"):
        return lambda path: orjson.dumps(_resolve(document, path)).decode()
    exact = parse_exact(data)
    render = Renderer().render
    return lambda path: render(_resolve(exact, path))


def _json_string(value: str | None) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def compare_attributes(recorded: Mapping[str, str], replayed: Mapping[str, str],
                       rules: TopicRules) -> list[FieldDiff]:
    """Compare Pub/Sub attributes (strings), skipping the topic's ignored attribute names."""
    if not rules.compare_attributes or recorded == replayed:
        return []
    diffs = []
    ignored = rules.ignore_attributes
    for name in sorted(set(recorded) | set(replayed)):
        if name in ignored:
            continue
        left = recorded.get(name)
        right = replayed.get(name)
        if left == right:
            continue
        if right is None:
            kind = "missing"
        elif left is None:
            kind = "extra"
        else:
            kind = "changed"
        # JSON texts like payload values, so "1" (a string) reads as a string.
        diffs.append(FieldDiff("/" + escape_segment(name), _json_string(left), _json_string(right), kind,
                               part="attributes"))
    return diffs


def compare_events(recorded: Any, replayed: Any, rules: TopicRules) -> list[FieldDiff]:
    """Compare two RecordedEvent outputs: payload, then attributes."""
    diffs = compare_payloads(recorded.data, replayed.data, rules)
    diffs.extend(compare_attributes(recorded.attributes, replayed.attributes, rules))
    return diffs
