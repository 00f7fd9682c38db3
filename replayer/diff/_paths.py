"""Path patterns for ignored and order-insensitive JSON paths.

A pattern is a JSON pointer whose segments may be wildcards: ``*`` matches
exactly one level (an object key or an array index) and ``**`` matches any
number of levels, including none. ``/metadata/duration_seconds``,
``/plays/*/ts`` and ``**/execution_id`` are patterns; the empty pattern
matches the whole payload. A :class:`PatternSet` compiles patterns into a
small automaton walked one segment at a time alongside the comparison, so a
subtree that no pattern can reach costs nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

# Transitions are cached per state. A payload with many distinct keys under a
# wildcard could grow a cache without bound, so it is cleared past this size.
_MAX_CACHED_TRANSITIONS = 4096


@dataclasses.dataclass(frozen=True)
class PathPattern:
    """One parsed pattern: its text and its segments (``*`` and ``**`` are wildcards)."""

    text: str
    segments: tuple[str, ...]


def parse_pattern(text: str) -> PathPattern:
    """Parse ``/a/*/b`` or ``**/b`` into a PathPattern; raise ValueError on a bad pattern."""
    if not isinstance(text, str):
        raise ValueError(f"path pattern {text!r} must be a string")
    if text == "":
        return PathPattern(text, ())
    if text.startswith("/"):
        raw = text[1:].split("/")
    elif text == "**" or text.startswith("**/"):
        raw = text.split("/")
    else:
        raise ValueError(
            f"path pattern {text!r} must start with '/' or '**/', e.g. '/plays/*/ts' or '**/execution_id'"
        )
    segments = []
    for part in raw:
        if "*" in part and part not in ("*", "**"):
            raise ValueError(
                f"path pattern {text!r} has a partial wildcard {part!r}; "
                "'*' and '**' must be whole segments"
            )
        segments.append(part.replace("~1", "/").replace("~0", "~"))
    return PathPattern(text, tuple(segments))


class PatternState:
    """A set of positions in the patterns, reached by the path walked so far."""

    __slots__ = ("_owner", "positions", "accepting", "_next")

    def __init__(self, owner: "PatternSet", positions: frozenset[tuple[int, int]]) -> None:
        self._owner = owner
        self.positions = positions
        self.accepting = any(pos == len(owner.segments[index]) for index, pos in positions)
        self._next: dict[str, PatternState | None] = {}

    def step(self, key: str) -> "PatternState | None":
        """Return the state after descending into ``key``, or None when no pattern can match below."""
        try:
            return self._next[key]
        except KeyError:
            pass
        if len(self._next) >= _MAX_CACHED_TRANSITIONS:
            self._next.clear()
        state = self._owner._advance(self.positions, key)
        self._next[key] = state
        return state


class PatternSet:
    """Compiled path patterns; ``root`` is the state at the payload root (None when empty)."""

    def __init__(self, patterns: Iterable[PathPattern]) -> None:
        self.patterns = tuple(patterns)
        self.segments = tuple(pattern.segments for pattern in self.patterns)
        self.texts = tuple(pattern.text for pattern in self.patterns)
        self._states: dict[frozenset[tuple[int, int]], PatternState] = {}
        self.root = self._state({(index, 0) for index in range(len(self.patterns))}) if self.patterns else None

    def _closure(self, positions: set[tuple[int, int]]) -> frozenset[tuple[int, int]]:
        # "**" also matches zero levels, so a position before it implies the one after it.
        pending = list(positions)
        closed = set(positions)
        while pending:
            index, pos = pending.pop()
            segments = self.segments[index]
            if pos < len(segments) and segments[pos] == "**" and (index, pos + 1) not in closed:
                closed.add((index, pos + 1))
                pending.append((index, pos + 1))
        return frozenset(closed)

    def _state(self, positions: set[tuple[int, int]]) -> PatternState | None:
        if not positions:
            return None
        closed = self._closure(positions)
        state = self._states.get(closed)
        if state is None:
            state = PatternState(self, closed)
            self._states[closed] = state
        return state

    def _advance(self, positions: frozenset[tuple[int, int]], key: str) -> PatternState | None:
        moved: set[tuple[int, int]] = set()
        for index, pos in positions:
            segments = self.segments[index]
            if pos >= len(segments):
                continue
            segment = segments[pos]
            if segment == "**":
                moved.add((index, pos))
            elif segment == "*" or segment == key:
                moved.add((index, pos + 1))
        return self._state(moved)

    def matches(self, parts: Iterable[str]) -> bool:
        """Return whether the path given as pointer segments matches a pattern."""
        state = self.root
        if state is None:
            return False
        if state.accepting:
            return True
        for part in parts:
            state = state.step(part)
            if state is None:
                return False
            if state.accepting:
                return True
        return False

    def __bool__(self) -> bool:
        return bool(self.patterns)


def compile_patterns(texts: Iterable[str]) -> PatternSet:
    """Parse and compile pattern texts (duplicates removed, order kept)."""
    seen: dict[str, None] = dict.fromkeys(texts)
    return PatternSet(parse_pattern(text) for text in seen)


def escape_segment(segment: str) -> str:
    """Escape one JSON pointer segment (RFC 6901: ``~`` as ``~0``, ``/`` as ``~1``)."""
    if "~" in segment or "/" in segment:
        return segment.replace("~", "~0").replace("/", "~1")
    return segment


def to_pointer(parts: Iterable[str]) -> str:
    """Join path segments into a JSON pointer."""
    return "".join("/" + escape_segment(part) for part in parts)
