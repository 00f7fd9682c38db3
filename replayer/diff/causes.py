"""Cause of a recorded output missing from a replay: the failed replayed call upstream of it.

A recorded OUTPUT's ``causation_id`` is the event id of the INPUT that caused
it, and that input's id is the id of the upstream OUTPUT delivered as it,
because Pub/Sub keeps a message's id from publisher to subscriber. Following
these ids back through the recording reaches an input the replay delivered:
an entry event (the call record names its recorded id) or a recorded output
matched to a replayed one (the call record names the replayed id). When
that call failed, :func:`explain_missing` puts its category into the
``reason`` of the missing entry.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

from replayer.diff.match import MatchEntry, MatchResult
from schemas import Direction, RecordedEvent


def _describe(call: Mapping[str, Any]) -> str:
    if call.get("error"):
        detail = call["error"]
    elif call.get("status") is not None:
        detail = f"HTTP {call['status']}"
    else:
        detail = call.get("outcome") or "no detail"
    return (f"{call['category']}: the replayed call of {call.get('phase')}/{call.get('processor')} "
            f"on input {call.get('input_event_id')} failed ({detail})")


def explain_missing(match: MatchResult, recorded: Iterable[RecordedEvent],
                    calls: Iterable[Mapping[str, Any]]) -> MatchResult:
    """Return ``match`` with each missing entry's ``reason`` naming the failed call upstream of it, if any."""
    failed = {call["input_event_id"]: call for call in calls if call.get("category") and call.get("input_event_id")}
    if not failed:
        return match
    causes = {event.event_id: event.causation_id for event in recorded
              if event.direction is Direction.OUTPUT and event.causation_id}
    replayed_of = {recorded_id: replayed_id for replayed_id, recorded_id in match.pairs.items()}

    def failed_call(event_id: str | None) -> Mapping[str, Any] | None:
        seen: set[str] = set()
        current = causes.get(event_id) if event_id else None
        while current is not None and current not in seen:
            seen.add(current)
            delivered = replayed_of.get(current, current)
            if delivered in failed:
                return failed[delivered]
            if current in replayed_of:
                return None  # the replay delivered this input, and its call did not fail
            current = causes.get(current)
        return None

    def explain(entry: MatchEntry) -> MatchEntry:
        if entry.category != "missing" or entry.reason is not None:
            return entry
        call = failed_call(entry.recorded_event_id)
        return entry if call is None else dataclasses.replace(entry, reason=_describe(call))

    groups = tuple(dataclasses.replace(group, entries=tuple(explain(entry) for entry in group.entries))
                   for group in match.groups)
    return dataclasses.replace(match, groups=groups)
