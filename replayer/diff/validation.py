"""Validation of a replay: counts, duplicates, silent processors and damaged files.

Per phase and processor: recorded inputs (records, unique event ids,
duplicates), recorded outputs, replayed calls and outputs, duplicate outputs
by match key on each side, and replay errors by category. Across the run:
archive duplicates (removed by the reader, and found in the events given),
expected processors that never reported, and damaged archive files skipped.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

from replayer.diff.match import RECORDED, REPLAYED, MatchResult
from schemas import Direction, RecordedEvent


def dedupe_key(event: RecordedEvent) -> tuple:
    """Return the identity the archive reader de-duplicates by (same tuple as the reader's)."""
    return (event.logical_date, event.phase, event.direction, event.processor, event.event_id)


def dedupe_events(events: Iterable[RecordedEvent]) -> tuple[list[RecordedEvent], int]:
    """Keep the first copy of each event (by :func:`dedupe_key`); return them and the count removed."""
    seen: set[tuple] = set()
    kept = []
    removed = 0
    for event in events:
        key = dedupe_key(event)
        if key in seen:
            removed += 1
            continue
        seen.add(key)
        kept.append(event)
    return kept, removed


@dataclasses.dataclass(frozen=True)
class ProcessorCounts:
    """Counts of one phase and processor (``processor`` is None for events that name none)."""

    phase: str
    processor: str | None
    recorded_input_records: int = 0
    recorded_inputs: int = 0
    recorded_input_duplicates: int = 0
    recorded_outputs: int = 0
    recorded_output_duplicates: int = 0
    replayed_calls: int = 0
    replayed_outputs: int = 0
    replayed_output_duplicates: int = 0
    errors: Mapping[str, int] = dataclasses.field(default_factory=dict)
    expected: bool = False
    silent: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used in report.json."""
        data = dataclasses.asdict(self)
        data["errors"] = dict(self.errors)
        return data


@dataclasses.dataclass(frozen=True)
class Validation:
    """Run-wide validation results.

    ``archive_duplicates_removed`` comes from the archive reader's statistics.
    ``archive_duplicates_found`` counts duplicate event ids in the events the
    report was given (zero when the reader already removed them).
    """

    rows: tuple[ProcessorCounts, ...]
    archive_duplicates_removed: int
    archive_duplicates_found: int
    damaged_files: tuple[Mapping[str, Any], ...]
    silent_processors: tuple[tuple[str, str], ...]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used in report.json."""
        return {
            "processors": [row.to_dict() for row in self.rows],
            "archive_duplicates_removed": self.archive_duplicates_removed,
            "archive_duplicates_found": self.archive_duplicates_found,
            "damaged_files": [dict(item) for item in self.damaged_files],
            "silent_processors": [{"phase": phase, "processor": name} for phase, name in self.silent_processors],
        }


def config_value(source: Any, name: str, default: Any = None) -> Any:
    """Read ``name`` from a config object or a mapping (the replay config may be either)."""
    if source is None:
        return default
    if isinstance(source, Mapping):
        return source.get(name, default)
    return getattr(source, name, default)


def expected_processors(config: Any, phases: Iterable[str] | None) -> list[tuple[str, str]]:
    """Return (phase, name) of configured processors marked ``expected`` in the replayed phases."""
    selected = set(phases) if phases else None
    result = []
    for processor in config_value(config, "processors", None) or ():
        phase = config_value(processor, "phase")
        if config_value(processor, "expected", False) and (selected is None or phase in selected):
            result.append((phase, config_value(processor, "name")))
    return result


def _count_by_processor(events: Iterable[RecordedEvent]) -> Counter:
    return Counter((event.phase, event.processor) for event in events)


def validate(
    *,
    recorded_events: Sequence[RecordedEvent],
    replayed_events: Sequence[RecordedEvent] = (),
    calls: Sequence[Mapping[str, Any]] = (),
    match: MatchResult | None = None,
    run_meta: Mapping[str, Any] | None = None,
    config: Any = None,
    phases: Sequence[str] | None = None,
) -> Validation:
    """Count records, duplicates and silent processors per phase and processor.

    ``recorded_events`` may still contain duplicates (they are counted here);
    ``match`` supplies duplicate outputs by match key.
    """
    inputs = [event for event in recorded_events if event.direction is Direction.INPUT]
    outputs = [event for event in recorded_events if event.direction is Direction.OUTPUT]
    unique_inputs, _ = dedupe_events(inputs)
    unique_outputs, output_copies = dedupe_events(outputs)
    input_records = _count_by_processor(inputs)
    input_unique = _count_by_processor(unique_inputs)
    recorded_outputs = _count_by_processor(unique_outputs)
    replayed_outputs = _count_by_processor(replayed_events)
    calls_by_processor = Counter((call.get("phase") or "", call.get("processor")) for call in calls)
    errors: dict[tuple[str, str | None], Counter] = {}
    for call in calls:
        if call.get("category"):
            key = (call.get("phase") or "", call.get("processor"))
            errors.setdefault(key, Counter())[call["category"]] += 1

    duplicates = Counter()
    if match is not None:
        processor_of = {(RECORDED, event.event_id): (event.phase, event.processor) for event in unique_outputs}
        processor_of.update({(REPLAYED, event.event_id): (event.phase, event.processor) for event in replayed_events})
        for entry in match.entries():
            if entry.category == "duplicate":
                event_id = entry.recorded_event_id if entry.side == RECORDED else entry.replayed_event_id
                phase_processor = processor_of.get((entry.side, event_id), (entry.phase, None))
                duplicates[(entry.side, *phase_processor)] += 1

    expected = expected_processors(config, phases)
    # With --where the recording is narrowed to what the selected entry events
    # led to, so a processor is expected to report only when it has recorded inputs there.
    narrowed = bool(config_value(run_meta, "where", None))
    keys = (set(input_records) | set(recorded_outputs) | set(replayed_outputs)
            | set(calls_by_processor) | set(expected))
    rows = []
    silent = []
    for phase, processor in sorted(keys, key=lambda key: (key[0], str(key[1]))):
        key = (phase, processor)
        is_expected = key in expected and (not narrowed or input_records[key] > 0)
        is_silent = is_expected and not calls_by_processor[key] and not replayed_outputs[key]
        if is_silent:
            silent.append(key)
        rows.append(ProcessorCounts(
            phase=phase,
            processor=processor,
            recorded_input_records=input_records[key],
            recorded_inputs=input_unique[key],
            recorded_input_duplicates=input_records[key] - input_unique[key],
            recorded_outputs=recorded_outputs[key],
            recorded_output_duplicates=duplicates[(RECORDED, phase, processor)],
            replayed_calls=calls_by_processor[key],
            replayed_outputs=replayed_outputs[key],
            replayed_output_duplicates=duplicates[(REPLAYED, phase, processor)],
            errors=dict(errors.get(key, {})),
            expected=is_expected,
            silent=is_silent,
        ))

    read_stats = config_value(run_meta, "read", None) or {}
    return Validation(
        rows=tuple(rows),
        archive_duplicates_removed=int(read_stats.get("duplicates_removed", 0) or 0),
        archive_duplicates_found=(len(inputs) - len(unique_inputs)) + output_copies,
        damaged_files=tuple(_damaged(item) for item in read_stats.get("damaged", ()) or ()),
        silent_processors=tuple(silent),
    )


def _damaged(item: Any) -> Mapping[str, Any]:
    if isinstance(item, Mapping):
        return dict(item)
    if dataclasses.is_dataclass(item):
        return dataclasses.asdict(item)
    return {"uri": str(item)}
