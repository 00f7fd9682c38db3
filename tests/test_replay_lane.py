"""The lane executor and run_replay on the test topology: modes, failures, filters, redeliveries."""

from __future__ import annotations

import datetime as dt
import json

import fastavro
import pytest

from recorder._reader import ArchiveReader
from recorder._writer import ArchiveWriter
from replayer.config import Selection, apply_overrides, load_config, parse_where
from replayer.lane import LaneExecutor, replay_event_id, route_entry_event
from replayer.pacing import ManualClock
from replayer.run import run_replay
from schemas import Direction, RecordedEvent, datetime_to_micros
from tests.topology import processors, recording


def _run_lanes(config, events, *, where=()):
    selection = Selection(dates=(recording.DATE,), phases=config.phases, where=tuple(where))
    lanes: dict[str, list] = {}
    for event in events:
        for lane, delivery in route_entry_event(event, config=config, selection=selection):
            lanes.setdefault(lane, []).append(delivery)
    executor = LaneExecutor(config, selection, clock=ManualClock())
    results = [executor.run(lane, items, logical_date=recording.DATE) for lane, items in sorted(lanes.items())]
    executor.close()
    return results


def _config(tmp_path, **options):
    path = recording.write_config(tmp_path / "replay.toml", archive=str(tmp_path / "archive"),
                                  output=str(tmp_path / "out"), **options)
    return load_config(path)


@pytest.mark.parametrize("mode", ["cascade", "isolated"])
def test_mode_reproduces_recorded_outputs(tmp_path, mode):
    """Both modes reproduce every recorded output of the three phases."""
    results = _run_lanes(_config(tmp_path, mode=mode), recording.production_events())
    outputs = [event for result in results for event in result.outputs]
    assert recording.output_signature(outputs) == recording.output_signature(recording.production_events())
    assert len(results) == (1 if mode == "cascade" else 4)


def test_cascade_routes_outputs_with_causation(tmp_path):
    """In cascade mode phase3 and phase4 receive replayed outputs, linked by causation ids."""
    [result] = _run_lanes(_config(tmp_path), recording.production_events())
    by_id = {event.event_id: event for event in result.outputs}
    prediction = next(e for e in result.outputs if e.topic == "phase4-predictions" and b'"g1"' in e.data)
    trigger = by_id[prediction.causation_id]
    assert trigger.topic == "phase3-trigger"
    report = by_id[trigger.causation_id]
    assert report.processor == "player_stats"
    assert report.causation_id == "m-g1"
    assert report.event_id == replay_event_id("m-g1", "player_stats", 0)
    routed = [call for call in result.calls if not call["recorded_input"]]
    assert {call["processor"] for call in routed} == {"orchestrator", "predict"}
    assert all(call["lateness_micros"] is None for call in routed)


@pytest.mark.parametrize(("speed", "max_gap_s", "offsets_s"), [
    ("1", None, [0, 0, 2, 2, 4, 4]),
    ("10", None, [0, 0, 0.2, 0.2, 0.4, 0.4]),
    ("1", 0.5, [0, 0, 0.5, 0.5, 1.0, 1.0]),
])
def test_lane_release_schedule(tmp_path, speed, max_gap_s, offsets_s):
    """On an injected clock entry events are released at publish offset / speed, gaps capped, ties by id."""
    config = apply_overrides(_config(tmp_path, speed=speed), max_gap_s=max_gap_s)
    selection = Selection(dates=(recording.DATE,), phases=config.phases)
    deliveries = [delivery for event in recording.production_events()
                  for _, delivery in route_entry_event(event, config=config, selection=selection)]
    clock = ManualClock(start_micros=1_000_000)
    executor = LaneExecutor(config, selection, clock=clock)
    result = executor.run("2024-03-09", list(reversed(deliveries)), logical_date=recording.DATE)
    executor.close()
    entries = [call for call in result.calls if call["recorded_input"]]
    assert [call["scheduled_offset_micros"] for call in entries] == [round(s * 1e6) for s in offsets_s]
    assert [(call["input_event_id"], call["processor"]) for call in entries] == [
        (f"m-{game}", processor) for game in ("g1", "g2", "g3") for processor in ("box_scores", "player_stats")]
    assert clock.sleeps == [1_000_000 + round(s * 1e6) for s in sorted(set(offsets_s)) if s > 0]
    assert result.planned_duration_micros == round(offsets_s[-1] * 1e6)
    assert result.lateness.releases == 6


def test_output_events_are_replay_outputs(tmp_path):
    """Replayed outputs are OUTPUT events of the publishing processor with source replay."""
    [result] = _run_lanes(_config(tmp_path), recording.production_events())
    for event in result.outputs:
        assert event.source == "replay"
        assert event.direction is Direction.OUTPUT
        assert event.publish_time >= recording.T0
        assert event.logical_date == recording.DATE


def test_raising_processor_reported_and_day_goes_on(tmp_path):
    """A processor raising for one game is reported; the other games are replayed through phase4."""
    config = _config(tmp_path, box_scores_target="tests.topology.processors:box_scores_raising")
    [result] = _run_lanes(config, recording.production_events())
    failed = [call for call in result.calls if call["category"]]
    assert [(c["processor"], c["input_event_id"], c["outcome"]) for c in failed] == [
        ("box_scores", "m-g2", "error:ValueError")]
    assert failed[0]["category"] == "processor_exception"
    assert failed[0]["error"] == "ValueError: cannot handle overtime periods"
    predictions = sorted(json.loads(e.data)["game_id"] for e in result.outputs if e.topic == "phase4-predictions")
    assert predictions == ["g1", "g3"]


def test_hanging_processor_times_out(tmp_path):
    """A processor that hangs times out after timeout_s and the rest is replayed."""
    processors.release_hang.clear()
    config = _config(tmp_path, box_scores_target="tests.topology.processors:box_scores_hanging", timeout_s=0.3)
    try:
        [result] = _run_lanes(config, recording.production_events())
    finally:
        processors.release_hang.set()
    timeouts = [call for call in result.calls if call["category"] == "timeout"]
    assert [call["input_event_id"] for call in timeouts] == ["m-g2"]
    assert timeouts[0]["handling_micros"] == 300_000
    assert result.abandoned_calls == 1
    assert b"late" not in [event.data for event in result.outputs]
    assert len([e for e in result.outputs if e.topic == "phase4-predictions"]) == 2


def test_missing_input_data_category(tmp_path):
    """FileNotFoundError from a processor is reported as missing input data."""
    config = _config(tmp_path, box_scores_target="tests.topology.processors:box_scores_missing_data")
    [result] = _run_lanes(config, recording.production_events())
    missing = [call for call in result.calls if call["category"] == "missing_input_data"]
    assert [(call["input_event_id"], call["outcome"]) for call in missing] == [("m-g3", "error:FileNotFoundError")]


def test_where_selects_one_game(tmp_path):
    """--where on an entry attribute-free payload pointer replays only that game's chain."""
    [result] = _run_lanes(_config(tmp_path), recording.production_events(), where=[parse_where("/game_id=g3")])
    games = {json.loads(event.data)["game_id"] for event in result.outputs}
    assert games == {"g3"}
    assert len(result.outputs) == 4


def test_stateful_state_is_per_lane(tmp_path):
    """The orchestrator's state starts empty in every lane, so two runs give the same outputs."""
    config = _config(tmp_path)
    first = _run_lanes(config, recording.production_events())[0].outputs
    second = _run_lanes(config, recording.production_events())[0].outputs
    assert [e.event_id for e in first] == [e.event_id for e in second]
    assert len([e for e in second if e.topic == "phase3-trigger"]) == 3


def test_run_replay_writes_outputs(tmp_path):
    """run_replay writes the replay archive, call records and run.json."""
    recording.write_archive(str(tmp_path / "archive"))
    result = run_replay(str(recording.write_config(tmp_path / "replay.toml", archive=str(tmp_path / "archive"),
                                                   output=str(tmp_path / "out"))))
    replayed = list(ArchiveReader(str(tmp_path / "out" / "archive")).read())
    assert recording.output_signature(replayed) == recording.output_signature(recording.production_events())
    assert {event.source for event in replayed} == {"replay"}
    run_json = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run_json["mode"] == "cascade"
    assert run_json["dates"] == ["2024-03-09"]
    assert run_json["pacing"]["releases"] == 6
    assert len(result.calls) == 15
    assert result.exit_code == 0
    summary = {(row["phase"], row["processor"]): row for row in result.summary}
    assert summary[("phase3", "orchestrator")]["inputs"] == 6
    assert summary[("phase4", "predict")]["outputs"] == 3


def test_run_replay_rejects_used_output(tmp_path):
    """A second run into the same output folder is rejected before anything runs."""
    from replayer.errors import ConfigError

    recording.write_archive(str(tmp_path / "archive"))
    path = recording.write_config(tmp_path / "replay.toml", archive=str(tmp_path / "archive"),
                                  output=str(tmp_path / "out"))
    run_replay(path, phases="2")
    with pytest.raises(ConfigError, match="already contains a replay"):
        run_replay(path, phases="2")


def test_run_replay_rejects_unsubscribed_topic(tmp_path):
    """A cascade over phases whose recorded outputs reach no subscriber is rejected before running."""
    from replayer.errors import ConfigError

    recording.write_archive(str(tmp_path / "archive"))
    path = recording.write_config(tmp_path / "replay.toml", archive=str(tmp_path / "archive"),
                                  output=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match="topic 'phase2-complete' of phase 'phase2' is read by phase 'phase3'"):
        run_replay(path, phases="phase2,phase4")
    assert not (tmp_path / "out").exists()


def test_run_replay_ends_at_last_phase(tmp_path):
    """A cascade over phases 2-3 ends there: phase3's trigger topic needs no selected subscriber."""
    recording.write_archive(str(tmp_path / "archive"))
    path = recording.write_config(tmp_path / "replay.toml", archive=str(tmp_path / "archive"),
                                  output=str(tmp_path / "out"))
    result = run_replay(path, phases="2-3", dry_run=True)
    assert result.plan.selection.phases == ("phase2", "phase3")


def test_dry_run_plans_without_running(tmp_path):
    """A dry run reports entry events and the planned duration and writes nothing."""
    recording.write_archive(str(tmp_path / "archive"))
    path = recording.write_config(tmp_path / "replay.toml", archive=str(tmp_path / "archive"),
                                  output=str(tmp_path / "out"), speed="1")
    plan = run_replay(path, dry_run=True).plan.describe()
    assert plan["planned_duration_s"] == 4.0
    assert plan["entry_events"] == [{"phase": "phase2", "processor": "box_scores", "events": 3},
                                    {"phase": "phase2", "processor": "player_stats", "events": 3}]
    assert not (tmp_path / "out").exists()


def _case10_archive(cases_dir, archive: str) -> None:
    path = cases_dir / "10-redelivery-duplicates" / "archive" / "date=2024-03-09" / "phase=score" / "input"
    with open(path / "part-0000.avro", "rb") as handle, \
            ArchiveWriter(archive, writer_id="case10", source="import") as writer:
        for record in fastavro.reader(handle):
            writer.write(RecordedEvent(
                event_id=record["message_id"], logical_date=dt.date(2024, 3, 9), phase="score",
                direction=Direction.INPUT, processor="totals", topic="scores",
                publish_time=datetime_to_micros(record["publish_time"]), data=record["data"], source="import"))


@pytest.mark.parametrize(("resend", "expected"), [
    ("false", [("g1", 3), ("g1", 5), ("g2", 1), ("g2", 4)]),
    ("true", [("g1", 3), ("g1", 5), ("g1", 7), ("g2", 1), ("g2", 2), ("g2", 5)]),
])
def test_redeliveries(cases_dir, tmp_path, resend, expected):
    """Deduped replay sends each message once; resend mode replays the redeliveries as recorded."""
    _case10_archive(cases_dir, str(tmp_path / "archive"))
    path = tmp_path / "replay.toml"
    path.write_text(recording.CASE10_TOML.format(archive=tmp_path / "archive", output=tmp_path / "out", resend=resend))
    result = run_replay(str(path))
    replayed = list(ArchiveReader(str(tmp_path / "out" / "archive"), dedupe=False).read())
    totals = sorted((json.loads(e.data)["game"], json.loads(e.data)["total"]) for e in replayed)
    assert totals == expected
    assert len(result.calls) == len(expected)


MERGED_TOML = """
phases = ["phase2", "phase3"]
[archive]
uri = "{archive}"
[replay]
speed = "max"
output = "{output}"
""" + recording.ORCHESTRATOR_TABLE + """\
[[processors]]
name = "predict"
phase = "phase3"
adapter = "callable"
target = "tests.topology.processors:predict"
subscribes = ["phase3-trigger"]
""" + recording.BOX_SCORES_TABLE


def test_cascade_start_skips_replayed_topics(tmp_path):
    """A cascade starting at a phase whose orchestrator feeds its second processor delivers each trigger once."""
    import dataclasses

    events = [dataclasses.replace(event, phase="phase3") if event.phase == "phase4" else event
              for event in recording.production_events()]
    with ArchiveWriter(str(tmp_path / "archive"), writer_id="merged", source="sdk") as writer:
        for event in events:
            writer.write(event)
    path = tmp_path / "replay.toml"
    path.write_text(MERGED_TOML.format(archive=tmp_path / "archive", output=tmp_path / "out"))
    result = run_replay(str(path), start_phase="phase3")
    summary = {row["processor"]: row for row in result.summary}
    assert summary["orchestrator"]["recorded_inputs"] == 6
    assert summary["predict"]["inputs"] == 3
    assert summary["predict"]["recorded_inputs"] == 0
    assert result.plan.entries == {("phase3", "orchestrator"): 6}
    isolated = run_replay(str(path), start_phase="phase3", mode="isolated", output=str(tmp_path / "iso"))
    assert {row["processor"]: row["recorded_inputs"] for row in isolated.summary} == {
        "orchestrator": 6, "predict": 3}


def test_long_wait_is_logged(tmp_path):
    """A paced wait of 10 s or more for the next entry event is logged with the lane and the wait."""
    from structlog.testing import capture_logs

    config = _config(tmp_path, speed="0.2")
    selection = Selection(dates=(recording.DATE,), phases=config.phases)
    deliveries = [delivery for event in recording.production_events()
                  for _, delivery in route_entry_event(event, config=config, selection=selection)]
    executor = LaneExecutor(config, selection, clock=ManualClock())
    with capture_logs() as logs:
        executor.run("2024-03-09", deliveries, logical_date=recording.DATE)
    executor.close()
    waits = [(entry["released"], entry["wait_s"]) for entry in logs if entry["event"] == "replay.waiting"]
    assert waits == [(2, 10.0), (4, 10.0)]
