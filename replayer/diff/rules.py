"""Diff rules and report thresholds: the ``[diff]`` and ``[thresholds]`` tables of ``replay.toml``.

``parse_diff_rules`` and ``parse_thresholds`` turn the parsed TOML tables into
frozen :class:`DiffRules` and :class:`Thresholds`. Unknown keys and bad values
raise :class:`replayer.errors.ConfigError` naming the file, the key and the
value. :meth:`DiffRules.for_topic` compiles the rules that apply to one topic
(global rules plus that topic's overrides) into a :class:`TopicRules`.
"""

from __future__ import annotations

import dataclasses
import math
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from replayer.diff._paths import PathPattern, PatternSet, compile_patterns, parse_pattern
from replayer.errors import ConfigError
from schemas import split_pointer

MATCH_STRATEGIES = ("auto", "causation", "content")
LATENCY_STATISTICS = ("p50", "p95", "max", "mean")
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclasses.dataclass(frozen=True)
class TopicOverride:
    """Rules for one topic, from ``[diff.topics."<topic>"]``; unset fields use the global rules.

    ``ignore``, ``unordered`` and ``ignore_attributes`` are added to the global lists.
    """

    keys: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    unordered: tuple[str, ...] = ()
    abs_tol: float | None = None
    rel_tol: float | None = None
    compare_attributes: bool | None = None
    ignore_attributes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class TopicRules:
    """The compiled rules for one topic, as the comparison and the matching use them."""

    topic: str | None
    keys: tuple[str, ...]
    key_parts: tuple[tuple[str, ...], ...]
    ignore: PatternSet
    unordered: PatternSet
    abs_tol: float
    rel_tol: float
    compare_attributes: bool
    ignore_attributes: frozenset[str]
    match: str

    @property
    def has_tolerance(self) -> bool:
        """Whether float values may differ by a configured tolerance."""
        return self.abs_tol > 0.0 or self.rel_tol > 0.0


@dataclasses.dataclass(frozen=True)
class DiffRules:
    """Rules for matching replayed outputs to recorded outputs and comparing them.

    ``keys`` maps a topic to the JSON pointers whose values identify an output.
    ``ignore`` and ``unordered`` are path patterns (``/a/b``, ``/plays/*/ts``
    where ``*`` is one level, ``**/execution_id`` where ``**`` is any depth).
    ``abs_tol`` and ``rel_tol`` apply to floating-point values only. ``match``
    picks the strategy for topics without keys (``auto`` uses causation when
    the causation ids of both sides overlap, else content).
    """

    keys: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    ignore: tuple[str, ...] = ()
    abs_tol: float = 0.0
    rel_tol: float = 0.0
    unordered: tuple[str, ...] = ()
    match: str = "auto"
    compare_attributes: bool = True
    ignore_attributes: tuple[str, ...] = ()
    topics: Mapping[str, TopicOverride] = dataclasses.field(default_factory=dict)
    _compiled: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def for_topic(self, topic: str | None) -> TopicRules:
        """Return the compiled rules for ``topic`` (cached per topic)."""
        compiled = self._compiled.get(topic)
        if compiled is None:
            compiled = self._compile(topic)
            self._compiled[topic] = compiled
        return compiled

    def _compile(self, topic: str | None) -> TopicRules:
        # Events without a topic share the empty-name entry of ``topics`` and ``keys``.
        override = self.topics.get(topic or "") or TopicOverride()
        keys = override.keys if override.keys is not None else self.keys.get(topic or "", ())
        return TopicRules(
            topic=topic,
            keys=tuple(keys),
            key_parts=tuple(tuple(split_pointer(pointer)) for pointer in keys),
            ignore=compile_patterns([*self.ignore, *override.ignore]),
            unordered=compile_patterns([*self.unordered, *override.unordered]),
            abs_tol=self.abs_tol if override.abs_tol is None else override.abs_tol,
            rel_tol=self.rel_tol if override.rel_tol is None else override.rel_tol,
            compare_attributes=(
                self.compare_attributes if override.compare_attributes is None
                else override.compare_attributes
            ),
            ignore_attributes=frozenset([*self.ignore_attributes, *override.ignore_attributes]),
            match=self.match,
        )

    def with_topic_ignores(
        self,
        ignores: Mapping[str, Iterable[str]],
        attributes: Mapping[str, Iterable[str]] = _EMPTY,
    ) -> "DiffRules":
        """Return new rules that also ignore the given paths and attributes per topic.

        Noise learning uses this to leave non-deterministic fields out of the
        golden comparison.
        """
        topics = dict(self.topics)
        for topic in set(ignores) | set(attributes):
            current = topics.get(topic) or TopicOverride()
            topics[topic] = dataclasses.replace(
                current,
                ignore=current.ignore + tuple(ignores.get(topic, ())),
                ignore_attributes=current.ignore_attributes + tuple(attributes.get(topic, ())),
            )
        return dataclasses.replace(self, topics=MappingProxyType(topics), _compiled={})


@dataclasses.dataclass(frozen=True)
class LatencyThreshold:
    """Warn and critical limits, in seconds, for one latency statistic of each processor."""

    warn_s: float | None = None
    critical_s: float | None = None
    statistic: str = "p95"


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Limits that make a report fail (exit code 1); each applies per phase and topic.

    Duplicates count duplicate outputs produced by the replay (the candidate
    side); duplicates already in the recording are reported but do not fail it.
    ``max_errors`` limits the failed calls (any error category) of each phase
    and processor. ``max_damaged_files`` limits the damaged archive files the
    reader skipped in the whole run (both archives for ``replay diff``).
    """

    max_changed_ratio: float = 0.0
    max_missing: int = 0
    max_extra: int = 0
    max_duplicates: int = 0
    max_unmatchable: int = 0
    max_silent_processors: int = 0
    max_errors: int = 0
    max_damaged_files: int = 0
    latency_default: LatencyThreshold = LatencyThreshold()
    latency: Mapping[str, LatencyThreshold] = dataclasses.field(default_factory=dict)
    end_to_end: LatencyThreshold = LatencyThreshold(statistic="max")

    def latency_for(self, phase: str) -> LatencyThreshold:
        """Return the latency limits of ``phase``, or the default limits."""
        return self.latency.get(phase, self.latency_default)


# --- parsing -----------------------------------------------------------------

_DIFF_KEYS = {
    "keys", "ignore", "abs_tol", "rel_tol", "unordered", "match",
    "compare_attributes", "ignore_attributes", "topics",
}
_TOPIC_KEYS = {
    "keys", "ignore", "unordered", "abs_tol", "rel_tol", "compare_attributes", "ignore_attributes",
}
_THRESHOLD_COUNTS = (
    "max_missing", "max_extra", "max_duplicates", "max_unmatchable", "max_silent_processors", "max_errors",
    "max_damaged_files",
)
_THRESHOLD_KEYS = {"max_changed_ratio", *_THRESHOLD_COUNTS, "latency", "end_to_end"}
_LATENCY_KEYS = {"warn_s", "critical_s", "statistic"}


def _error(file: str | None, key: str, value: Any, fix: str) -> ConfigError:
    where = f"{file}: " if file else ""
    return ConfigError(f"{where}invalid value {value!r} for {key!r}: {fix}", key=key)


def _reject_unknown(table: Mapping[str, Any], allowed: set[str], prefix: str, file: str | None) -> None:
    for name in table:
        if name not in allowed:
            where = f"{file}: " if file else ""
            raise ConfigError(
                f"{where}unknown key {prefix + name!r}; allowed keys are {', '.join(sorted(allowed))}",
                key=prefix + name,
            )


def _table(value: Any, key: str, file: str | None) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _error(file, key, value, "expected a table")
    return value


def _tolerance(value: Any, key: str, file: str | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise _error(file, key, value, "expected a finite number >= 0, e.g. 1e-9")
    return float(value)


def _string_list(value: Any, key: str, file: str | None) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise _error(file, key, value, 'expected a list of strings, e.g. ["/a/b"]')
    return tuple(value)


def _patterns(value: Any, key: str, file: str | None) -> tuple[str, ...]:
    patterns = _string_list(value, key, file)
    for pattern in patterns:
        try:
            parse_pattern(pattern)
        except ValueError as error:
            raise _error(file, key, pattern, str(error)) from error
    return patterns


def _pointers(value: Any, key: str, file: str | None) -> tuple[str, ...]:
    pointers = _string_list(value, key, file)
    if not pointers:
        raise _error(file, key, value, 'expected at least one JSON pointer, e.g. ["/game_date"]')
    for pointer in pointers:
        try:
            parts = split_pointer(pointer)
        except ValueError as error:
            raise _error(file, key, pointer, str(error)) from error
        if not parts or any("*" in part for part in parts):
            raise _error(file, key, pointer, "a match key is one JSON pointer without wildcards, e.g. '/player_id'")
    return pointers


def _bool(value: Any, key: str, file: str | None) -> bool:
    if not isinstance(value, bool):
        raise _error(file, key, value, "expected true or false")
    return value


def _parse_keys(value: Any, key: str, file: str | None) -> dict[str, tuple[str, ...]]:
    table = _table(value, key, file)
    return {topic: _pointers(pointers, f"{key}.{topic}", file) for topic, pointers in table.items()}


def _parse_shared_rules(table: Mapping[str, Any], prefix: str, file: str | None) -> dict[str, Any]:
    """Parse the keys that ``[diff]`` and ``[diff.topics.NAME]`` both accept, except ``keys``."""
    fields: dict[str, Any] = {}
    for name in ("ignore", "unordered"):
        if name in table:
            fields[name] = _patterns(table[name], prefix + name, file)
    for name in ("abs_tol", "rel_tol"):
        if name in table:
            fields[name] = _tolerance(table[name], prefix + name, file)
    if "compare_attributes" in table:
        fields["compare_attributes"] = _bool(table["compare_attributes"], prefix + "compare_attributes", file)
    if "ignore_attributes" in table:
        fields["ignore_attributes"] = _string_list(table["ignore_attributes"], prefix + "ignore_attributes", file)
    return fields


def _parse_topic(topic: str, value: Any, file: str | None) -> TopicOverride:
    prefix = f"diff.topics.{topic}."
    table = _table(value, prefix[:-1], file)
    _reject_unknown(table, _TOPIC_KEYS, prefix, file)
    fields = _parse_shared_rules(table, prefix, file)
    if "keys" in table:
        fields["keys"] = _pointers(table["keys"], prefix + "keys", file)
    return TopicOverride(**fields)


def parse_diff_rules(table: Mapping[str, Any] | None, *, file: str | None = None) -> DiffRules:
    """Parse the ``[diff]`` table; raise ConfigError naming ``file``, the key and the value."""
    if table is None:
        return DiffRules()
    table = _table(table, "diff", file)
    _reject_unknown(table, _DIFF_KEYS, "diff.", file)
    fields = _parse_shared_rules(table, "diff.", file)
    if "keys" in table:
        fields["keys"] = MappingProxyType(_parse_keys(table["keys"], "diff.keys", file))
    if "match" in table:
        if table["match"] not in MATCH_STRATEGIES:
            raise _error(file, "diff.match", table["match"], f"expected one of {', '.join(MATCH_STRATEGIES)}")
        fields["match"] = table["match"]
    if "topics" in table:
        topics = _table(table["topics"], "diff.topics", file)
        fields["topics"] = MappingProxyType(
            {topic: _parse_topic(topic, value, file) for topic, value in topics.items()}
        )
    return DiffRules(**fields)


def _seconds(value: Any, key: str, file: str | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise _error(file, key, value, "expected a number of seconds > 0, e.g. 5.0")
    return float(value)


def _parse_latency(
    value: Any, key: str, file: str | None, default: LatencyThreshold, *, allowed: set[str] = _LATENCY_KEYS
) -> LatencyThreshold:
    table = _table(value, key, file)
    _reject_unknown(table, allowed, key + ".", file)
    warn_s = _seconds(table["warn_s"], key + ".warn_s", file) if "warn_s" in table else default.warn_s
    critical_s = (
        _seconds(table["critical_s"], key + ".critical_s", file) if "critical_s" in table else default.critical_s
    )
    statistic = table.get("statistic", default.statistic)
    if statistic not in LATENCY_STATISTICS:
        raise _error(file, key + ".statistic", statistic, f"expected one of {', '.join(LATENCY_STATISTICS)}")
    if warn_s is not None and critical_s is not None and warn_s > critical_s:
        raise _error(file, key + ".warn_s", warn_s, f"warn_s must not exceed critical_s ({critical_s})")
    return LatencyThreshold(warn_s=warn_s, critical_s=critical_s, statistic=statistic)


def parse_thresholds(table: Mapping[str, Any] | None, *, file: str | None = None,
                     phases: Iterable[str] | None = None) -> Thresholds:
    """Parse the ``[thresholds]`` table; raise ConfigError naming ``file``, the key and the value.

    ``[thresholds.latency]`` contains default ``warn_s``/``critical_s``/``statistic``
    values and one sub-table per phase (``[thresholds.latency.phase3]``). With
    ``phases`` (the configured phase order) a sub-table for any other phase is
    rejected, since its limits would never apply.
    """
    if table is None:
        return Thresholds()
    table = _table(table, "thresholds", file)
    _reject_unknown(table, _THRESHOLD_KEYS, "thresholds.", file)
    fields: dict[str, Any] = {}
    if "max_changed_ratio" in table:
        ratio = table["max_changed_ratio"]
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
            raise _error(file, "thresholds.max_changed_ratio", ratio, "expected a number from 0.0 to 1.0")
        fields["max_changed_ratio"] = float(ratio)
    for name in _THRESHOLD_COUNTS:
        if name in table:
            count = table[name]
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise _error(file, f"thresholds.{name}", count, "expected an integer >= 0")
            fields[name] = count
    if "latency" in table:
        latency = _table(table["latency"], "thresholds.latency", file)
        defaults = {name: value for name, value in latency.items() if not isinstance(value, Mapping)}
        default = _parse_latency(defaults, "thresholds.latency", file, LatencyThreshold())
        per_phase = {
            phase: _parse_latency(value, f"thresholds.latency.{phase}", file, default)
            for phase, value in latency.items()
            if isinstance(value, Mapping)
        }
        known = None if phases is None else list(phases)
        unknown = [phase for phase in per_phase if known is not None and phase not in known]
        if unknown:
            raise _error(file, f"thresholds.latency.{unknown[0]}", dict(latency[unknown[0]]),
                         f"{unknown[0]!r} is not a configured phase; phases are {', '.join(known)}, "
                         "so rename the table to one of them or remove it")
        fields["latency_default"] = default
        fields["latency"] = MappingProxyType(per_phase)
    if "end_to_end" in table:
        fields["end_to_end"] = _parse_latency(
            table["end_to_end"], "thresholds.end_to_end", file, LatencyThreshold(statistic="max"),
            allowed={"warn_s", "critical_s"},
        )
    return Thresholds(**fields)


__all__ = [
    "DiffRules",
    "LatencyThreshold",
    "PathPattern",
    "Thresholds",
    "TopicOverride",
    "TopicRules",
    "parse_diff_rules",
    "parse_thresholds",
]
