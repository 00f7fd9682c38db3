"""Field-level comparison of one recorded output with one replayed output.

:func:`compare_payloads` returns the differences as :class:`FieldDiff` rows
(JSON pointer, recorded text, replayed text, kind). The rules, per topic:

- identical bytes are equal without parsing;
- JSON has one number type, so ``42`` equals ``42.0`` and ``-0.0`` equals ``0.0``;
- ``NaN`` equals ``NaN`` but not ``null``; ``Infinity`` equals ``1e400``;
- two integer texts are compared exactly, whatever their size, and tolerance
  never applies to them; ``abs_tol``/``rel_tol`` apply when at least one side
  is a floating-point text;
- numbers inside strings are strings;
- ignored paths are skipped, arrays at order-insensitive paths are compared
  as multisets of their items' canonical text;
- payloads that are not JSON are compared as bytes.

Differing numbers are reported in their original text
(``10176718226607830673`` against ``10176718226607831000``), never re-rendered.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from replayer.diff._paths import PatternState, escape_segment, to_pointer
from replayer.diff.canonical import (
    JsonFloat,
    NotJson,
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

KINDS = ("changed", "type_changed", "missing", "extra", "bytes")
_PREVIEW_CHARS = 200
_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
               int: "number", float: "number", JsonFloat: "number"}
_SCALAR_TYPES = (str, int, bool, type(None))


@dataclasses.dataclass(frozen=True)
class FieldDiff:
    """One difference between a recorded and a replayed output.

    ``recorded`` and ``replayed`` are JSON texts with numbers as they were
    written (None when the field is absent on that side); for ``kind ==
    "bytes"`` they are previews of the raw payloads. ``part`` is ``data`` for
    the payload or ``attributes`` for a Pub/Sub attribute (``pointer`` is then
    ``/<attribute name>``).
    """

    pointer: str
    recorded: str | None
    replayed: str | None
    kind: str
    part: str = "data"

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used in report.json and diffs.jsonl."""
        return {"pointer": self.pointer, "part": self.part, "kind": self.kind,
                "recorded": self.recorded, "replayed": self.replayed}


def _is_number(value: Any) -> bool:
    kind = type(value)
    return kind is int or kind is float or kind is JsonFloat


def numbers_equal(recorded: int | float, replayed: int | float, *, abs_tol: float, rel_tol: float) -> bool:
    """Compare two JSON numbers by the diff's rules (exact integers, NaN equal, tolerance for floats)."""
    if type(recorded) is int and type(replayed) is int:
        return recorded == replayed
    left = _as_float(recorded)
    right = _as_float(replayed)
    if left == right:
        return True
    if left != left or right != right:
        return left != left and right != right
    if abs_tol == 0.0 and rel_tol == 0.0:
        return False
    if left in (float("inf"), float("-inf")) or right in (float("inf"), float("-inf")):
        return False
    return abs(left - right) <= max(abs_tol, rel_tol * max(abs(left), abs(right)))


def _as_float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:
        # An integer beyond the double range can only be compared to a float as infinite.
        return float("inf") if value > 0 else float("-inf")


class _Walker:
    """One recursive comparison of two parsed documents; collects FieldDiff rows."""

    def __init__(self, rules: TopicRules, *, exact: bool) -> None:
        self.abs_tol = rules.abs_tol
        self.rel_tol = rules.rel_tol
        self.renderer = Renderer()
        self.diffs: list[FieldDiff] = []
        # orjson can serialise plain trees only; exact trees hold JsonFloat.
        self.strict_dump = orjson.dumps if (orjson is not None and not exact) else None

    def same_subtree(self, left: Any, right: Any) -> bool:
        """Return True only when two containers are equal with JSON types respected.

        Python's ``==`` alone treats ``true`` as ``1``, so equality is confirmed
        on orjson's serialisation, which keeps the two apart.
        """
        if self.strict_dump is None or left != right:
            return False
        return self.strict_dump(left) == self.strict_dump(right)

    def add(self, path: tuple[str, ...], left: Any, right: Any, kind: str) -> None:
        render = self.renderer.render
        self.diffs.append(FieldDiff(
            pointer=to_pointer(path),
            recorded=None if left is _ABSENT else render(left),
            replayed=None if right is _ABSENT else render(right),
            kind=kind,
        ))

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
        kind = type(left)
        if kind is type(right):
            if kind in _SCALAR_TYPES:
                if left == right:
                    return
            elif kind is dict or kind is list:
                if self.same_subtree(left, right):
                    return
        self.walk(left, right, path, ignore, unordered)

    def walk_object(self, left: dict, right: dict, path: tuple[str, ...],
                    ignore: PatternState | None, unordered: PatternState | None) -> None:
        for key, left_value in left.items():
            child_ignore = ignore.step(key) if ignore is not None else None
            if child_ignore is not None and child_ignore.accepting:
                continue
            if key in right:
                child_unordered = unordered.step(key) if unordered is not None else None
                self.walk_child(left_value, right[key], path + (key,), child_ignore, child_unordered)
            else:
                self.add(path + (key,), left_value, _ABSENT, "missing")
        for key, right_value in right.items():
            if key in left:
                continue
            child_ignore = ignore.step(key) if ignore is not None else None
            if child_ignore is not None and child_ignore.accepting:
                continue
            self.add(path + (key,), _ABSENT, right_value, "extra")

    def walk_array(self, left: list, right: list, path: tuple[str, ...],
                   ignore: PatternState | None, unordered: PatternState | None) -> None:
        for index in range(max(len(left), len(right))):
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
                self.walk_child(left[index], right[index], path + (segment,), child_ignore, child_unordered)

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
            self.walk_child(left[left_index], right[right_index], path + (str(left_index),),
                            child_ignore, child_unordered)
        for _, left_index in left_over[len(right_over):]:
            self.add(path + (str(left_index),), left[left_index], _ABSENT, "missing")
        for _, right_index in right_over[len(left_over):]:
            self.add(path + (str(right_index),), _ABSENT, right[right_index], "extra")


_ABSENT = object()


def compare_documents(recorded: Any, replayed: Any, rules: TopicRules, *, exact: bool = True) -> list[FieldDiff]:
    """Compare two parsed JSON documents; ``exact`` says they come from the exact parser."""
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
    except NotJson:
        return [FieldDiff("", _preview(recorded), _preview(replayed), "bytes")]
    exact = left_exact or right_exact
    if exact and not (left_exact and right_exact):
        left, right, exact = parse_exact(recorded), parse_exact(replayed), True
    walker = _Walker(rules, exact=exact)
    walker.walk_child(left, right, (), root_ignore, rules.unordered.root)
    if walker.renderer.saw_plain_float:
        # A differing float was rendered from orjson's value: parse again to
        # report the numbers as they were written.
        walker = _Walker(rules, exact=True)
        walker.walk_child(parse_exact(recorded), parse_exact(replayed), (), root_ignore, rules.unordered.root)
    return walker.diffs


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
        kind = "missing" if right is None else "extra" if left is None else "changed"
        diffs.append(FieldDiff("/" + escape_segment(name), left, right, kind, part="attributes"))
    return diffs


def compare_events(recorded: Any, replayed: Any, rules: TopicRules) -> list[FieldDiff]:
    """Compare two RecordedEvent outputs: payload, then attributes."""
    diffs = compare_payloads(recorded.data, replayed.data, rules)
    diffs.extend(compare_attributes(recorded.attributes, replayed.attributes, rules))
    return diffs
