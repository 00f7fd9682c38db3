"""Redelivered inputs and a duplicate output in a recording: validation, latency and diff."""

from __future__ import annotations

import dataclasses
import json

import fastavro
import pytest

from replayer.diff import DiffRules, latency_rows, match_outputs, parse_thresholds, validate
from replayer.diff.latency import recorded_latencies
from schemas import Direction, RecordedEvent, parse_date
from tests.topology.recording import CASE10_TOML

PARTITION = "10-redelivery-duplicates/archive/date=2024-03-09/phase=score"


def _events(cases_dir, folder: str, direction: Direction) -> list[RecordedEvent]:
    """Map the case's stand-in records to RecordedEvent (message_id is the event id)."""
    with open(cases_dir / PARTITION / folder / "part-0000.avro", "rb") as handle:
        records = list(fastavro.reader(handle))
    events = []
    for record in records:
        attributes = dict(record["attributes"])
        publish = record["publish_time"]
        events.append(RecordedEvent(
            event_id=record["message_id"], logical_date=parse_date("2024-03-09"), phase="score",
            direction=direction, publish_time=publish, record_time=publish, data=record["data"],
            source="import", processor="score", topic="scores-out" if direction is Direction.OUTPUT else "scores",
            attributes=attributes, causation_id=attributes.pop("source_message_id", None),
        ))
    return events


@pytest.fixture
def recording(cases_dir):
    return _events(cases_dir, "input", Direction.INPUT) + _events(cases_dir, "output", Direction.OUTPUT)


def _replayed(recording, totals):
    """Replayed outputs for the inputs in order, with the given running totals."""
    inputs = []
    for event in recording:
        if event.direction is Direction.INPUT and event.event_id not in [e.event_id for e in inputs]:
            inputs.append(event)
    return [
        RecordedEvent(event_id=f"r-{event.event_id}", logical_date=event.logical_date, phase="score",
                      direction=Direction.OUTPUT, publish_time=event.publish_time, source="replay",
                      processor="score", topic="scores-out", causation_id=event.event_id,
                      data=json.dumps({"game": json.loads(event.data)["game"], "total": total},
                                      separators=(",", ":")).encode())
        for event, total in zip(inputs, totals)
    ]


def test_input_duplicates_counted(recording):
    """Inputs: 6 records, 4 unique message ids, 2 duplicates (keyed by message id only)."""
    [row] = validate(recorded_events=recording).rows
    assert (row.recorded_input_records, row.recorded_inputs, row.recorded_input_duplicates) == (6, 4, 2)


def test_output_duplicate_counted(recording):
    """Outputs: 5 records, 1 duplicate by match key (o-2b repeats o-2)."""
    outputs = [event for event in recording if event.direction is Direction.OUTPUT]
    match = match_outputs(outputs, [], DiffRules())
    [row] = validate(recorded_events=recording, match=match).rows
    assert (row.recorded_outputs, row.recorded_output_duplicates) == (5, 1)
    [duplicate] = [entry for entry in match.entries() if entry.category == "duplicate"]
    assert (duplicate.recorded_event_id, duplicate.duplicate_of) == ("o-2b", "o-2")


def test_archive_duplicates_found(recording):
    """The two redelivered input records are counted as archive duplicates."""
    assert validate(recorded_events=recording).archive_duplicates_found == 2


def test_recorded_latency_first_delivery(recording):
    """Latency per input runs from its first delivery to its first output."""
    values, source = recorded_latencies(recording)[("score", "score")]
    assert source == "causation"
    assert sorted(value // 1000 for value in values) == [100, 100, 250, 400]


def test_recorded_latency_summary(recording):
    """n=4, max 400 ms, mean 212.5 ms, total 850 ms."""
    [row] = latency_rows(recording, [], parse_thresholds(None))
    stats = row.recorded
    assert (stats.count, stats.max_ms, stats.mean_ms, stats.total_ms) == (4, 400.0, 212.5, 850.0)


def test_measured_handling_preferred(recording):
    """handling_micros on the inputs is used instead of causation pairs when recorded."""
    measured = [dataclasses.replace(event, handling_micros=7000) if event.direction is Direction.INPUT else event
                for event in recording]
    values, source = recorded_latencies(measured)[("score", "score")]
    assert (source, sorted(set(values)), len(values)) == ("handling_micros", [7000], 4)


def test_dedup_replay_diff(recording):
    """De-duplicated replay (totals 3, 5, 1, 4): 4 identical, o-2b a recorded duplicate, nothing missing."""
    outputs = [event for event in recording if event.direction is Direction.OUTPUT]
    counts = match_outputs(outputs, _replayed(recording, [3, 5, 1, 4]), DiffRules()).counts
    assert (counts.identical, counts.changed, counts.missing, counts.extra) == (4, 0, 0, 0)
    assert counts.duplicate_recorded == 1


def test_resend_replay_diff(recording):
    """Redeliveries re-sent (6 deliveries): m-2 one match + one changed (7 vs 5), m-3 one extra, m-4 changed."""
    outputs = [event for event in recording if event.direction is Direction.OUTPUT]
    deliveries = [event for event in recording if event.direction is Direction.INPUT]
    totals = [3, 5, 7, 1, 2, 5]
    replayed = [
        RecordedEvent(event_id=f"r-{index}", logical_date=event.logical_date, phase="score",
                      direction=Direction.OUTPUT, publish_time=event.publish_time, source="replay",
                      processor="score", topic="scores-out", causation_id=event.event_id,
                      data=json.dumps({"game": json.loads(event.data)["game"], "total": total},
                                      separators=(",", ":")).encode())
        for index, (event, total) in enumerate(zip(deliveries, totals))
    ]
    result = match_outputs(outputs, replayed, DiffRules())
    counts = result.counts
    assert (counts.identical, counts.changed, counts.extra, counts.missing) == (3, 2, 1, 0)
    changed = {entry.recorded_event_id: entry.diffs[0] for entry in result.entries() if entry.category == "changed"}
    assert (changed["o-2b"].recorded, changed["o-2b"].replayed) == ("5", "7")
    assert (changed["o-4"].recorded, changed["o-4"].replayed) == ("4", "5")


# --- the same recording replayed by run_replay: the report's view of it ----------


def _replay_case(cases_dir, tmp_path, *, resend: bool) -> tuple[int, dict]:
    """Write the case's inputs and outputs as a product archive, replay it and return the report."""
    from recorder._writer import ArchiveWriter
    from replayer.run import run_replay

    events = [dataclasses.replace(event, processor="totals",
                                  topic="score-totals" if event.direction is Direction.OUTPUT else "scores")
              for event in _events(cases_dir, "input", Direction.INPUT) + _events(cases_dir, "output",
                                                                                  Direction.OUTPUT)]
    with ArchiveWriter(str(tmp_path / "archive"), writer_id="case10", source="import") as writer:
        for event in events:
            writer.write(event)
    config = tmp_path / "replay.toml"
    config.write_text(CASE10_TOML.format(archive=tmp_path / "archive", output=tmp_path / "out",
                                         resend=str(resend).lower()))
    result = run_replay(str(config))
    return result.exit_code, json.loads((tmp_path / "out" / "report.json").read_text())


def test_replayed_report_dedup(cases_dir, tmp_path):
    """De-duplicated replay: 4 identical, o-2b a recorded duplicate, redeliveries counted, exit code 0."""
    exit_code, document = _replay_case(cases_dir, tmp_path, resend=False)
    totals = document["totals"]
    assert (totals["identical"], totals["changed"], totals["missing"], totals["extra"]) == (4, 0, 0, 0)
    assert (totals["duplicate_recorded"], totals["duplicate_replayed"]) == (1, 0)
    assert exit_code == 0
    validation = document["validation"]
    assert validation["archive_duplicates_removed"] == 2
    [row] = validation["processors"]
    assert (row["recorded_inputs"], row["recorded_outputs"], row["replayed_calls"]) == (4, 5, 4)
    assert (row["recorded_output_duplicates"], row["replayed_output_duplicates"]) == (1, 0)


def test_replayed_report_latency_first_delivery(cases_dir, tmp_path):
    """The report's recorded latency uses first deliveries and first outputs: n=4, max 400 ms, total 850 ms."""
    _, document = _replay_case(cases_dir, tmp_path, resend=False)
    [row] = document["latency"]["processors"]
    assert row["recorded_source"] == "causation"
    assert (row["recorded"]["count"], row["recorded"]["max_ms"], row["recorded"]["total_ms"]) == (4, 400.0, 850.0)
    assert row["recorded"]["mean_ms"] == 212.5
    assert row["replayed"]["count"] == 4


def test_replayed_report_resend(cases_dir, tmp_path):
    """Re-sent redeliveries expose the non-idempotent processor: changed and extra outputs, exit code 1."""
    exit_code, document = _replay_case(cases_dir, tmp_path, resend=True)
    totals = document["totals"]
    assert (totals["identical"], totals["changed"], totals["extra"], totals["missing"]) == (3, 2, 1, 0)
    assert exit_code == 1
    [row] = document["validation"]["processors"]
    assert (row["recorded_input_records"], row["recorded_inputs"], row["recorded_input_duplicates"]) == (6, 4, 2)
    assert row["replayed_calls"] == 6
