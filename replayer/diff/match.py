"""Pairing of replayed outputs with recorded outputs, per logical date, phase and topic.

Each output is given a match key by the first strategy that applies:

- ``keys``: the topic has configured key pointers; the key is their values.
  An output whose payload is not JSON or lacks a key pointer is
  ``unmatchable`` and is never paired.
- ``causation``: the processor, the input that caused the output, and the
  output's position among that input's outputs on the topic (publish order).
  In cascade runs a replayed input is a replayed output of an earlier phase.
  Its id is translated into that of the recorded output it was paired with,
  because that is the id the recorded later phase saw.
- ``content``: the canonical payload (ignored paths left out) and attributes.

Every key ends in one category: ``identical``, ``changed``, ``missing``,
``extra``, ``duplicate`` (a second output with the same key on one side,
which never counts as missing or extra) or ``unmatchable``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

from replayer.diff.canonical import NotJson, TooDeep, canonical_text, parse_fast
from replayer.diff.compare import FieldDiff, compare_events
from replayer.diff.rules import DiffRules, TopicRules
from schemas import MISSING, RecordedEvent, resolve_pointer

CATEGORIES = ("identical", "changed", "missing", "extra", "duplicate", "unmatchable")
RECORDED = "recorded"
REPLAYED = "replayed"


@dataclasses.dataclass(frozen=True)
class MatchEntry:
    """The outcome for one key (or one output, for duplicates and unmatchable outputs).

    ``side`` names the side a duplicate or unmatchable output is on.
    ``duplicate_of`` is the event id of the first output with the same key.
    ``reason`` explains why an output is unmatchable, or names the failed replayed
    call upstream of a missing output (see :mod:`replayer.diff.causes`).
    """

    category: str
    logical_date: dt.date
    phase: str
    topic: str | None
    key: str
    recorded_event_id: str | None = None
    replayed_event_id: str | None = None
    diffs: tuple[FieldDiff, ...] = ()
    side: str | None = None
    duplicate_of: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used in report.json and diffs.jsonl."""
        return {
            "category": self.category,
            "logical_date": self.logical_date.isoformat(),
            "phase": self.phase,
            "topic": self.topic,
            "key": self.key,
            "recorded_event_id": self.recorded_event_id,
            "replayed_event_id": self.replayed_event_id,
            "side": self.side,
            "duplicate_of": self.duplicate_of,
            "reason": self.reason,
            "diffs": [diff.to_dict() for diff in self.diffs],
        }


@dataclasses.dataclass(frozen=True)
class MatchCounts:
    """Counts of one topic (or a total); duplicates and unmatchable outputs per side."""

    identical: int = 0
    changed: int = 0
    missing: int = 0
    extra: int = 0
    duplicate_recorded: int = 0
    duplicate_replayed: int = 0
    unmatchable_recorded: int = 0
    unmatchable_replayed: int = 0
    recorded_outputs: int = 0
    replayed_outputs: int = 0

    @property
    def matched(self) -> int:
        """Keys present on both sides (identical or changed)."""
        return self.identical + self.changed

    @property
    def changed_ratio(self) -> float:
        """Changed keys over matched keys (0.0 when nothing matched)."""
        return self.changed / self.matched if self.matched else 0.0

    def __add__(self, other: "MatchCounts") -> "MatchCounts":
        return MatchCounts(**{
            field.name: getattr(self, field.name) + getattr(other, field.name)
            for field in dataclasses.fields(self)
        })

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used in report.json."""
        data = dataclasses.asdict(self)
        data["changed_ratio"] = round(self.changed_ratio, 6)
        return data


@dataclasses.dataclass(frozen=True)
class TopicMatch:
    """Matching result of one (logical date, phase, topic) group."""

    logical_date: dt.date
    phase: str
    topic: str | None
    strategy: str
    entries: tuple[MatchEntry, ...]
    counts: MatchCounts


@dataclasses.dataclass(frozen=True)
class MatchResult:
    """All groups, plus the replayed-to-recorded event id pairs that were matched."""

    groups: tuple[TopicMatch, ...]
    pairs: Mapping[str, str]

    @property
    def counts(self) -> MatchCounts:
        """Totals over every group."""
        total = MatchCounts()
        for group in self.groups:
            total = total + group.counts
        return total

    def entries(self, *, include_identical: bool = False) -> Iterable[MatchEntry]:
        """Iterate over entries of every group, identical ones only on request."""
        for group in self.groups:
            for entry in group.entries:
                if include_identical or entry.category != "identical":
                    yield entry


_GroupKey = tuple[dt.date, str, str]


def _group(events: Iterable[RecordedEvent]) -> dict[_GroupKey, list[RecordedEvent]]:
    groups: dict[_GroupKey, list[RecordedEvent]] = {}
    for event in events:
        groups.setdefault((event.logical_date, event.phase, event.topic or ""), []).append(event)
    return groups


class _Fingerprints:
    """Canonical content per output, computed once (content keys and duplicate checks)."""

    def __init__(self, rules: TopicRules) -> None:
        self.rules = rules
        self._cache: dict[int, str] = {}

    def __call__(self, event: RecordedEvent) -> str:
        cached = self._cache.get(id(event))
        if cached is not None:
            return cached
        try:
            document, _ = parse_fast(event.data)
            payload = canonical_text(document, self.rules.ignore.root, self.rules.unordered.root)
        except NotJson:
            payload = "bytes:" + hashlib.sha256(event.data).hexdigest()
        if self.rules.compare_attributes:
            attributes = {
                name: value for name, value in event.attributes.items()
                if name not in self.rules.ignore_attributes
            }
            payload += "|" + json.dumps(attributes, sort_keys=True)
        self._cache[id(event)] = payload
        return payload


def _key_by_pointers(event: RecordedEvent, rules: TopicRules) -> tuple[str | None, str | None]:
    """Return ``(key, None)`` or ``(None, reason)`` for a topic with configured keys."""
    try:
        document, _ = parse_fast(event.data)
    except TooDeep as error:
        return None, f"{error}, so the configured key pointers are not read"
    except NotJson:
        return None, "payload is not JSON, so the configured key pointers cannot be read"
    values = []
    for pointer, parts in zip(rules.keys, rules.key_parts):
        value = resolve_pointer(document, list(parts))
        if value is MISSING:
            return None, f"key pointer {pointer} is absent from the payload"
        values.append(f"{pointer}={canonical_text(value)}")
    return ", ".join(values), None


def _choose_strategy(rules: TopicRules, recorded: list[RecordedEvent], replayed: list[RecordedEvent],
                     translate: Mapping[str, str]) -> str:
    if rules.keys:
        return "keys"
    if rules.match != "auto":
        return rules.match
    everything = recorded + replayed
    if not everything or any(event.causation_id is None for event in everything):
        return "content"
    if not recorded or not replayed:
        return "causation"
    recorded_causes = {event.causation_id for event in recorded}
    replayed_causes = {translate.get(event.causation_id, event.causation_id) for event in replayed}
    return "causation" if recorded_causes & replayed_causes else "content"


def _by_publish_order(events: list[RecordedEvent]) -> list[RecordedEvent]:
    # Stable: outputs of one call share a simulated publish time in a replay,
    # and then the archive order is their publish order.
    return sorted(events, key=lambda event: event.publish_time)


class _GroupMatcher:
    """Matches one (date, phase, topic) group."""

    def __init__(self, key: _GroupKey, rules: TopicRules, translate: dict[str, str]) -> None:
        self.logical_date, self.phase, topic = key
        self.topic = topic or None
        self.rules = rules
        self.translate = translate
        self.fingerprint = _Fingerprints(rules)
        self.entries: list[MatchEntry] = []

    def entry(self, category: str, key: str, **fields: Any) -> None:
        self.entries.append(MatchEntry(category, self.logical_date, self.phase, self.topic, key, **fields))

    def keyed(self, events: list[RecordedEvent], side: str, strategy: str) -> dict[str, list[RecordedEvent]]:
        keyed: dict[str, list[RecordedEvent]] = {}
        for event in _by_publish_order(events):
            if strategy == "keys":
                key, reason = _key_by_pointers(event, self.rules)
                if key is None:
                    self.entry("unmatchable", event.event_id, side=side, reason=reason,
                               **{f"{side}_event_id": event.event_id})
                    continue
            elif strategy == "causation":
                cause = event.causation_id
                if side == REPLAYED:
                    cause = self.translate.get(cause, cause)
                key = f"processor={event.processor} causation={cause}"
            else:
                key = "content sha256:" + hashlib.sha256(self.fingerprint(event).encode()).hexdigest()[:16]
            keyed.setdefault(key, []).append(event)
        return keyed

    def run(self, recorded: list[RecordedEvent], replayed: list[RecordedEvent], strategy: str) -> TopicMatch:
        recorded_keys = self.keyed(recorded, RECORDED, strategy)
        replayed_keys = self.keyed(replayed, REPLAYED, strategy)
        for key in list(recorded_keys) + [key for key in replayed_keys if key not in recorded_keys]:
            left = recorded_keys.get(key, [])
            right = replayed_keys.get(key, [])
            if strategy == "keys":
                self.match_first(key, left, right)
            else:
                self.match_in_order(key, left, right, numbered=strategy == "causation")
        counts = Counter()
        for entry in self.entries:
            suffix = f"_{entry.side}" if entry.category in ("duplicate", "unmatchable") else ""
            counts[entry.category + suffix] += 1
        return TopicMatch(
            logical_date=self.logical_date, phase=self.phase, topic=self.topic, strategy=strategy,
            entries=tuple(self.entries),
            counts=MatchCounts(recorded_outputs=len(recorded), replayed_outputs=len(replayed), **counts),
        )

    def pair(self, key: str, recorded: RecordedEvent, replayed: RecordedEvent) -> None:
        diffs = tuple(compare_events(recorded, replayed, self.rules))
        self.entry("changed" if diffs else "identical", key, recorded_event_id=recorded.event_id,
                   replayed_event_id=replayed.event_id, diffs=diffs)
        self.translate[replayed.event_id] = recorded.event_id

    def match_first(self, key: str, left: list[RecordedEvent], right: list[RecordedEvent]) -> None:
        if left and right:
            self.pair(key, left[0], right[0])
        elif left:
            self.entry("missing", key, recorded_event_id=left[0].event_id)
        else:
            self.entry("extra", key, replayed_event_id=right[0].event_id)
        for side, events in ((RECORDED, left), (REPLAYED, right)):
            for event in events[1:]:
                self.entry("duplicate", key, side=side, duplicate_of=events[0].event_id,
                           **{f"{side}_event_id": event.event_id})

    def match_in_order(self, key: str, left: list[RecordedEvent], right: list[RecordedEvent],
                       *, numbered: bool) -> None:
        for ordinal, (recorded, replayed) in enumerate(zip(left, right)):
            self.pair(f"{key} #{ordinal}" if numbered else key, recorded, replayed)
        shared = min(len(left), len(right))
        for side, events in ((RECORDED, left), (REPLAYED, right)):
            if len(events) <= shared:
                continue
            first_copies = self.first_copies(events)
            for ordinal in range(shared, len(events)):
                event = events[ordinal]
                label = f"{key} #{ordinal}" if numbered else key
                first = first_copies[ordinal]
                if first is not None:
                    self.entry("duplicate", label, side=side, duplicate_of=first.event_id,
                               **{f"{side}_event_id": event.event_id})
                elif side == RECORDED:
                    self.entry("missing", label, recorded_event_id=event.event_id)
                else:
                    self.entry("extra", label, replayed_event_id=event.event_id)

    def first_copies(self, events: Sequence[RecordedEvent]) -> list[RecordedEvent | None]:
        """For each output, the first earlier output on the same side with the same content, or None.

        One pass with a dictionary by canonical content, so a call that
        published many outputs costs linear time, not quadratic.
        """
        first_by_content: dict[str, RecordedEvent] = {}
        copies: list[RecordedEvent | None] = []
        for event in events:
            content = self.fingerprint(event)
            copies.append(first_by_content.get(content))
            first_by_content.setdefault(content, event)
        return copies


def match_outputs(
    recorded: Iterable[RecordedEvent],
    replayed: Iterable[RecordedEvent],
    rules: DiffRules,
    *,
    phase_order: Sequence[str] = (),
    causation_map: Mapping[str, str] | None = None,
) -> MatchResult:
    """Pair replayed outputs with recorded outputs per (logical date, phase, topic).

    Groups are matched in ``phase_order`` (phases not listed follow in name
    order), so pairs found in an earlier phase translate the causation ids of
    later phases in cascade runs. ``causation_map`` seeds that translation
    (replayed event id to recorded event id).
    """
    recorded_groups = _group(recorded)
    replayed_groups = _group(replayed)
    rank = {phase: index for index, phase in enumerate(phase_order)}
    keys = sorted(
        set(recorded_groups) | set(replayed_groups),
        key=lambda key: (rank.get(key[1], len(rank)), key[1], key[0], key[2]),
    )
    translate: dict[str, str] = dict(causation_map or {})
    groups = []
    for key in keys:
        left = recorded_groups.get(key, [])
        right = replayed_groups.get(key, [])
        topic_rules = rules.for_topic(key[2] or None)
        strategy = _choose_strategy(topic_rules, left, right, translate)
        groups.append(_GroupMatcher(key, topic_rules, translate).run(left, right, strategy))
    return MatchResult(groups=tuple(groups), pairs=translate)
