"""Latency per phase and processor, recorded against replayed, checked against thresholds.

Recorded handling time comes from the recorded INPUT events'
``handling_micros`` (first delivery of each event id) when the recorder
measured it. Otherwise it comes from causation pairs: the first output's
publish time minus the input's first publish time, so a redelivery or a
duplicate output never stretches or shortens it. Replayed handling time comes from the replay's
call records. In cascade mode :func:`end_to_end` measures, per date, the span
from the first recorded entry input to the last output on each side.
:class:`EndToEnd` documents what the replayed span is, which is not the
replay's wall time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any, Iterable, Mapping, Sequence

from replayer.diff.rules import LatencyThreshold, Thresholds
from schemas import Direction, RecordedEvent

OK = "ok"
WARN = "warn"
CRITICAL = "critical"
NO_DATA = "no_data"


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Count and distribution of handling times, in milliseconds."""

    count: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    mean_ms: float
    total_ms: float

    def statistic_ms(self, name: str) -> float:
        """Return the statistic named in a threshold (p50, p95, max or mean)."""
        return getattr(self, f"{name}_ms")

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used in report.json."""
        return {name: round(value, 3) if isinstance(value, float) else value
                for name, value in dataclasses.asdict(self).items()}


def _percentile(ordered: Sequence[int], fraction: float) -> float:
    # Linear interpolation between closest ranks.
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_stats(values_micros: Iterable[int]) -> LatencyStats | None:
    """Summarise handling times given in microseconds; None when there are none."""
    ordered = sorted(values_micros)
    if not ordered:
        return None
    total = sum(ordered)
    return LatencyStats(
        count=len(ordered),
        p50_ms=_percentile(ordered, 0.50) / 1000,
        p95_ms=_percentile(ordered, 0.95) / 1000,
        max_ms=ordered[-1] / 1000,
        mean_ms=total / len(ordered) / 1000,
        total_ms=total / 1000,
    )


@dataclasses.dataclass(frozen=True)
class LatencyRow:
    """One phase and processor: recorded and replayed handling time and the threshold verdict.

    ``recorded_source`` is ``handling_micros`` or ``causation`` (how the
    recorded figures were derived) or None when nothing was recorded.
    """

    phase: str
    processor: str | None
    recorded: LatencyStats | None
    recorded_source: str | None
    replayed: LatencyStats | None
    threshold: LatencyThreshold
    status: str

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used in report.json."""
        return {
            "phase": self.phase,
            "processor": self.processor,
            "recorded": self.recorded.to_dict() if self.recorded else None,
            "recorded_source": self.recorded_source,
            "replayed": self.replayed.to_dict() if self.replayed else None,
            "threshold": dataclasses.asdict(self.threshold),
            "status": self.status,
        }


@dataclasses.dataclass(frozen=True)
class EndToEnd:
    """Span of one logical date from its first entry input to its last output, in seconds (3 decimals).

    Both spans start at the publish time of the date's first recorded INPUT of
    the entry phase. ``recorded_s`` ends at the last recorded OUTPUT's publish
    time, so it contains production's Pub/Sub delivery, queueing and
    scheduling delays. ``replayed_s`` ends at the last replayed OUTPUT's
    publish time, and the lane sets a replayed output's publish time to that
    of the message the call received plus the call's time until the publish.
    So it is the recorded offset of the entry event that started the chain
    plus the replayed handling times along the chain. It is not the wall time
    the replay took (``run.elapsed_s``), it leaves out delivery and queueing,
    and pacing (``--speed``) does not change it. ``threshold`` is checked
    against ``replayed_s``.
    """

    logical_date: dt.date
    recorded_s: float | None
    replayed_s: float | None
    threshold: LatencyThreshold
    status: str

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used in report.json."""
        return {
            "logical_date": self.logical_date.isoformat(),
            "recorded_s": self.recorded_s,
            "replayed_s": self.replayed_s,
            "threshold": {"warn_s": self.threshold.warn_s, "critical_s": self.threshold.critical_s},
            "status": self.status,
        }


def judge(value_s: float | None, threshold: LatencyThreshold) -> str:
    """Return ok, warn or critical for a value in seconds (no_data when there is none)."""
    if value_s is None:
        return NO_DATA
    if threshold.critical_s is not None and value_s > threshold.critical_s:
        return CRITICAL
    if threshold.warn_s is not None and value_s > threshold.warn_s:
        return WARN
    return OK


def _first_deliveries(inputs: Iterable[RecordedEvent]) -> dict[tuple[str, str | None, str], RecordedEvent]:
    first: dict[tuple[str, str | None, str], RecordedEvent] = {}
    for event in inputs:
        key = (event.phase, event.processor, event.event_id)
        current = first.get(key)
        if current is None or (event.publish_time, event.record_time) < (current.publish_time, current.record_time):
            first[key] = event
    return first


def recorded_latencies(events: Iterable[RecordedEvent]) -> dict[tuple[str, str | None], tuple[list[int], str]]:
    """Return recorded handling times (micros) and their source per (phase, processor)."""
    inputs = []
    first_output: dict[tuple[str, str | None, str], int] = {}
    for event in events:
        if event.direction is Direction.INPUT:
            inputs.append(event)
        elif event.causation_id is not None:
            key = (event.phase, event.processor, event.causation_id)
            if key not in first_output or event.publish_time < first_output[key]:
                first_output[key] = event.publish_time
    measured: dict[tuple[str, str | None], list[int]] = {}
    derived: dict[tuple[str, str | None], list[int]] = {}
    for (phase, processor, event_id), event in _first_deliveries(inputs).items():
        if event.handling_micros is not None:
            measured.setdefault((phase, processor), []).append(event.handling_micros)
        output_time = first_output.get((phase, processor, event_id))
        if output_time is not None:
            derived.setdefault((phase, processor), []).append(output_time - event.publish_time)
    result: dict[tuple[str, str | None], tuple[list[int], str]] = {}
    for key in set(measured) | set(derived):
        if key in measured:
            result[key] = (measured[key], "handling_micros")
        else:
            result[key] = (derived[key], "causation")
    return result


def replayed_latencies(calls: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str | None], list[int]]:
    """Return replayed handling times (micros) per (phase, processor) from call records."""
    result: dict[tuple[str, str | None], list[int]] = {}
    for call in calls:
        micros = call.get("handling_micros")
        if isinstance(micros, int) and not isinstance(micros, bool):
            result.setdefault((call.get("phase") or "", call.get("processor")), []).append(micros)
    return result


def latency_rows(recorded_events: Iterable[RecordedEvent], calls: Iterable[Mapping[str, Any]],
                 thresholds: Thresholds) -> list[LatencyRow]:
    """Build one row per phase and processor seen in the recording or the replay."""
    recorded = recorded_latencies(recorded_events)
    replayed = replayed_latencies(calls)
    rows = []
    for phase, processor in sorted(set(recorded) | set(replayed), key=lambda key: (key[0], str(key[1]))):
        recorded_values, source = recorded.get((phase, processor), ([], None))
        replayed_stats = latency_stats(replayed.get((phase, processor), []))
        threshold = thresholds.latency_for(phase)
        value_s = replayed_stats.statistic_ms(threshold.statistic) / 1000 if replayed_stats else None
        rows.append(LatencyRow(
            phase=phase,
            processor=processor,
            recorded=latency_stats(recorded_values),
            recorded_source=source,
            replayed=replayed_stats,
            threshold=threshold,
            status=judge(value_s, threshold),
        ))
    return rows


def end_to_end(recorded_events: Sequence[RecordedEvent], replayed_events: Sequence[RecordedEvent],
               *, entry_phase: str, thresholds: Thresholds) -> list[EndToEnd]:
    """Per logical date: first recorded entry input to the last recorded and the last replayed output.

    The spans are rounded to milliseconds before the threshold is applied,
    so the status agrees with the number the report prints.
    """
    entry: dict[dt.date, int] = {}
    last_recorded: dict[dt.date, int] = {}
    last_replayed: dict[dt.date, int] = {}
    for event in recorded_events:
        day = event.logical_date
        if event.direction is Direction.INPUT and event.phase == entry_phase:
            entry[day] = min(entry.get(day, event.publish_time), event.publish_time)
        elif event.direction is Direction.OUTPUT:
            last_recorded[day] = max(last_recorded.get(day, event.publish_time), event.publish_time)
    for event in replayed_events:
        day = event.logical_date
        last_replayed[day] = max(last_replayed.get(day, event.publish_time), event.publish_time)
    rows = []
    for day in sorted(entry):
        start = entry[day]
        recorded_s = round((last_recorded[day] - start) / 1e6, 3) if day in last_recorded else None
        replayed_s = round((last_replayed[day] - start) / 1e6, 3) if day in last_replayed else None
        rows.append(EndToEnd(day, recorded_s, replayed_s, thresholds.end_to_end,
                             judge(replayed_s, thresholds.end_to_end)))
    return rows
