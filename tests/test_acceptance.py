"""Acceptance on real data: 2024-01-15 recorded through the Pub/Sub emulator, replayed from GCS.

The day (11 games, 384 player lines) is recorded once per module by
``tests._nba_emulated.record_on_emulators`` on Google's Pub/Sub emulator,
with real topics and the phase 3 Flask service behind a real push
subscription. The recorder's push middleware records phase 3 and its SDK
records the callable phases. The archive, payloads and rows live on the GCS
emulator. Every replay below reads that archive and writes its output folder
locally.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from examples.nba import phase5, storage
from examples.nba._messages import TOPIC_PHASE1_COMPLETE, TOPICS
from examples.nba.production import SUBSCRIBERS, load_realdata
from recorder._reader import ArchiveReader
from recorder._storage import join_uri, open_storage
from replayer.run import run_replay
from schemas import Direction
from tests import _nba_emulated

pytestmark = pytest.mark.slow

GAME_DATE = "2024-01-15"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG = PROJECT_ROOT / "examples" / "nba" / "replay.toml"
PHASES = ("phase2", "phase3", "phase4", "phase5", "phase6")
CONFIGURED = {(subscriber.phase, subscriber.name) for subscriber in SUBSCRIBERS}
OUTPUT_TOPICS = tuple(topic for topic in TOPICS if topic != TOPIC_PHASE1_COMPLETE)
PREDICTION_FIELDS = ("projected_minutes", "predicted_points", "predicted_rebounds", "predicted_assists")


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def module_bucket(gcs_emulator):
    """A bucket on the GCS emulator that lives as long as this module's recording."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    client = gcs.Client(project="replay-test", credentials=AnonymousCredentials())
    name = "acceptance-nba-2024-01-15"
    if not client.bucket(name).exists():
        client.create_bucket(name)
    return name


@pytest.fixture(scope="module")
def recording(pubsub_emulator, module_bucket, realdata_dir):
    """The real day recorded once through the emulators; NBA_DATA_ROOT points at its data root."""
    run = _nba_emulated.record_on_emulators(
        bucket=module_bucket, game_date=GAME_DATE, payloads=load_realdata(realdata_dir, GAME_DATE),
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(storage.DATA_ROOT_ENV, run.data_root)
        patch.delenv(storage.DATASET_PREFIX_ENV, raising=False)
        patch.delenv(storage.GCS_PREFIX_ENV, raising=False)
        yield run


@pytest.fixture(scope="module")
def recorded_events(recording):
    """Every recorded event, duplicates kept."""
    return list(ArchiveReader(recording.archive_uri, dedupe=False).read())


@pytest.fixture(scope="module")
def recorded_outputs(recorded_events):
    """Recorded OUTPUT events with their decoded payloads."""
    return [(event, json.loads(event.data)) for event in recorded_events if event.direction is Direction.OUTPUT]


def _replay(recording, out_dir: Path, config: Path = CONFIG, **overrides):
    result = run_replay(config, archive=recording.archive_uri, date=GAME_DATE, output=str(out_dir), **overrides)
    report = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    entries = [json.loads(line) for line in (out_dir / "diffs.jsonl").read_text(encoding="utf-8").splitlines()]
    return result, report, entries


def _variant_config(tmp_path: Path, original: str, replacement: str) -> Path:
    """Write replay.toml with one processor target replaced; the rest of the file is unchanged."""
    text = CONFIG.read_text(encoding="utf-8")
    line = f'target = "{original}"'
    assert text.count(line) == 1, f"replay.toml no longer has exactly one {line!r}"
    path = tmp_path / "replay.toml"
    path.write_text(text.replace(line, f'target = "{replacement}"'), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cascade_runs(recording, tmp_path_factory):
    """Cascade replays of phases 2-6 at max speed and at 10x, keyed by speed."""
    runs = {}
    for speed in ("max", "10"):
        out_dir = tmp_path_factory.mktemp(f"cascade-{speed}") / "out"
        runs[speed] = (*_replay(recording, out_dir, mode="cascade", phases="2-6", speed=speed), out_dir)
    return runs


def _replayed_events(out_dir: Path):
    return list(ArchiveReader(str(out_dir / "archive"), dedupe=False).read())


def _topic(report, topic):
    matches = [item for item in report["topics"] if item["topic"] == topic]
    assert len(matches) == 1, f"report has {len(matches)} entries for topic {topic}"
    return matches[0]


def _validation_rows(report):
    return {(row["phase"], row["processor"]): row for row in report["validation"]["processors"]}


# ------------------------------------------------------------------ the recording itself


def test_recording_complete(recording, recorded_events):
    """The emulated production day ran every phase, lost nothing and failed only the planned attempt."""
    assert recording.dropped == 0
    assert recording.games == 11
    assert recording.player_lines == 384
    assert [name for name, _, _ in recording.failures] == [_nba_emulated.REDELIVERED_PROCESSOR]
    assert "MissingInputDataError" in recording.failures[0][2]
    assert recording.published[TOPIC_PHASE1_COMPLETE] == 2
    assert recording.published["nba-phase3-trigger"] == 11
    assert recording.published["nba-phase6-export-complete"] == 11
    assert recording.recorded == len(recorded_events)
    assert {event.phase for event in recorded_events} == set(PHASES)


def test_recording_sources(recorded_events):
    """The Flask phase is recorded by the push middleware, every other processor by the SDK."""
    sources = {(event.processor, event.source) for event in recorded_events}
    assert {source for processor, source in sources if processor == "analytics"} == {"push"}
    assert {source for processor, source in sources if processor != "analytics"} == {"sdk"}


def test_recording_outputs_match_emulator(recording, recorded_outputs):
    """Recorded OUTPUT events per topic equal what the emulator's audit subscriptions received."""
    recorded = Counter(event.topic for event, _ in recorded_outputs)
    for topic in OUTPUT_TOPICS:
        assert recorded[topic] == recording.published[topic], topic


# ------------------------------------------------------------------ 1. cascade at max and at 10x


@pytest.mark.parametrize("speed", ["max", "10"])
def test_cascade_identical(cascade_runs, recording, speed):
    """Every replayed output of phases 2-6 is identical to its recorded output."""
    result, report, entries = cascade_runs[speed][:3]
    assert result.exit_code == 0
    assert report["passed"] is True
    assert entries == []
    totals = report["totals"]
    for category in ("changed", "missing", "extra", "duplicate_recorded", "duplicate_replayed",
                     "unmatchable_recorded", "unmatchable_replayed"):
        assert totals[category] == 0, category
    expected = sum(recording.published[topic] for topic in OUTPUT_TOPICS)
    assert totals["identical"] == totals["recorded_outputs"] == totals["replayed_outputs"] == expected


@pytest.mark.parametrize("speed", ["max", "10"])
def test_cascade_counts_per_topic(cascade_runs, recording, speed):
    """Per topic, identical outputs equal the messages the emulator saw in production."""
    report = cascade_runs[speed][1]
    for topic in OUTPUT_TOPICS:
        counts = _topic(report, topic)["counts"]
        assert counts["identical"] == recording.published[topic], topic
        assert counts["replayed_outputs"] == recording.published[topic], topic


@pytest.mark.parametrize("speed", ["max", "10"])
def test_cascade_counts_per_processor(cascade_runs, speed):
    """Per phase and processor, replayed calls and outputs equal the recorded ones, with no duplicates."""
    rows = _validation_rows(cascade_runs[speed][1])
    assert set(rows) == CONFIGURED
    for key, row in rows.items():
        assert row["replayed_calls"] == row["recorded_inputs"], key
        assert row["replayed_outputs"] == row["recorded_outputs"], key
        assert row["replayed_output_duplicates"] == 0, key
        assert row["recorded_output_duplicates"] == 0, key
        assert row["errors"] == {}, key


@pytest.mark.parametrize("speed", ["max", "10"])
def test_cascade_latency_reported(cascade_runs, speed):
    """Latency is reported, recorded and replayed, for every phase and every processor."""
    result, report = cascade_runs[speed][:2]
    latency = report["latency"]
    rows = {(row["phase"], row["processor"]): row for row in latency["processors"]}
    assert set(rows) == CONFIGURED
    calls = Counter((call["phase"], call["processor"]) for call in result.calls)
    for key, row in rows.items():
        assert row["recorded"]["count"] > 0, key
        assert row["replayed"]["count"] == calls[key], key
        assert row["replayed"]["max_ms"] >= row["replayed"]["p50_ms"], key
        assert row["replayed"]["p50_ms"] > 0, key
    phases = {row["phase"]: row for row in latency["phases"]}
    assert tuple(phases) == PHASES
    for phase, row in phases.items():
        assert row["recorded"]["count"] > 0, phase
        assert row["replayed"]["count"] > 0, phase
    [end_to_end] = latency["end_to_end"]
    assert end_to_end["logical_date"] == GAME_DATE
    assert end_to_end["recorded_s"] > 0
    assert end_to_end["replayed_s"] > 0


def test_cascade_pacing_plan(cascade_runs, recorded_events):
    """At 10x the planned duration is a tenth of the recorded gap between the phase 2 inputs; at max it is 0."""
    entry_times = sorted({event.publish_time for event in recorded_events
                          if event.phase == "phase2" and event.direction is Direction.INPUT})
    assert len(entry_times) == 2
    recorded_gap_s = (entry_times[1] - entry_times[0]) / 1e6
    assert recorded_gap_s > 0
    assert cascade_runs["max"][1]["run"]["speed"] == "max"
    assert cascade_runs["max"][1]["run"]["planned_duration_s"] == 0
    assert cascade_runs["10"][1]["run"]["speed"] == 10.0
    assert cascade_runs["10"][1]["run"]["planned_duration_s"] == pytest.approx(recorded_gap_s / 10, abs=1e-5)


def test_cascade_writes_under_prefixes(cascade_runs, recording):
    """Replayed rows land under DATASET_PREFIX and exports under GCS_PREFIX, with the digests the messages carry."""
    out_dir = cascade_runs["max"][3]
    gcs = open_storage(recording.data_root)
    checked = Counter()
    for event in _replayed_events(out_dir):
        message = json.loads(event.data)
        for field, prefix in (("rows_object", "test_"), ("export_path", "test/")):
            if field not in message:
                continue
            uri = join_uri(recording.data_root, prefix + message[field])
            assert gcs.exists(uri), uri
            content = json.loads(gcs.read_bytes(uri))
            assert storage.content_digest(content) == message["content_sha256"], uri
            checked[(event.topic, field)] += 1
    assert checked[("nba-phase2-raw-complete", "rows_object")] == 2
    assert checked[("nba-phase3-analytics-complete", "rows_object")] == 22
    assert checked[("nba-phase4-precompute-complete", "rows_object")] == 11
    assert checked[("nba-phase6-export-trigger", "rows_object")] == 11
    assert checked[("nba-phase6-export-complete", "export_path")] == 11


# ------------------------------------------------------------------ 2. a changed phase 5 formula


def _expected_prediction_changes(recorded_outputs):
    """Per player id: the prediction fields the capped model changes, as (recorded, replayed) pairs."""
    expected = {}
    for event, message in recorded_outputs:
        if event.topic != "nba-phase4-precompute-complete":
            continue
        for features in storage.read_rows(message["rows_object"]):
            if features["games_played"] == 0:
                continue
            before = phase5.predict_player(features, phase5.DEFAULT_MODEL)
            after = phase5.predict_player(features, _nba_emulated.capped_minutes_model)
            fields = {f"/{name}": (before[name], after[name]) for name in PREDICTION_FIELDS
                      if before[name] != after[name]}
            if fields:
                expected[features["player_id"]] = (features["game_id"], fields)
    return expected


@pytest.fixture(scope="module")
def capped_formula_run(recording, tmp_path_factory):
    """A cascade replay with phase 5's projected minutes capped lower than in production."""
    folder = tmp_path_factory.mktemp("capped-formula")
    config = _variant_config(folder, "examples.nba.phase5:process_predictions",
                             "tests._nba_emulated:process_predictions_capped")
    return _replay(recording, folder / "out", config, mode="cascade", phases="2-6")


def test_changed_formula_reported(capped_formula_run, recorded_outputs):
    """A capped projected-minutes formula changes exactly the prediction fields of the players above the cap."""
    result, report, entries = capped_formula_run
    expected = _expected_prediction_changes(recorded_outputs)
    played = sum(1 for event, _ in recorded_outputs if event.topic == "nba-phase5-predictions-complete")
    assert len(expected) > 0, "the cap must change the predictions of some players"
    assert len(expected) < played, "the cap must leave the predictions of some players unchanged"

    assert result.exit_code != 0
    assert report["exit_code"] == 1
    changed = [entry for entry in entries if entry["topic"] == "nba-phase5-predictions-complete"]
    assert {entry["category"] for entry in changed} == {"changed"}
    recorded_by_id = {event.event_id: message for event, message in recorded_outputs}
    reported = {}
    for entry in changed:
        player_id = recorded_by_id[entry["recorded_event_id"]]["player_id"]
        # Field diffs carry each value as its canonical JSON text.
        reported[player_id] = {diff["pointer"]: (json.loads(diff["recorded"]), json.loads(diff["replayed"]))
                               for diff in entry["diffs"]}
    assert reported == {player_id: fields for player_id, (_, fields) in expected.items()}
    for fields in reported.values():
        assert fields["/projected_minutes"][1] == _nba_emulated.CAPPED_MINUTES


def test_changed_formula_downstream(capped_formula_run, recorded_outputs):
    """Only the changed players' games change downstream, in their row digests; everything else is identical."""
    _, report, entries = capped_formula_run
    changed_games = {game_id for game_id, _ in _expected_prediction_changes(recorded_outputs).values()}
    recorded_by_id = {event.event_id: message for event, message in recorded_outputs}

    assert {entry["category"] for entry in entries} == {"changed"}
    by_topic = {}
    for entry in entries:
        by_topic.setdefault(entry["topic"], []).append(entry)
    assert set(by_topic) == {"nba-phase5-predictions-complete", "nba-phase6-export-trigger",
                             "nba-phase6-export-complete"}
    for topic in ("nba-phase6-export-trigger", "nba-phase6-export-complete"):
        games = {recorded_by_id[entry["recorded_event_id"]]["game_id"] for entry in by_topic[topic]}
        assert games == changed_games, topic
    for entry in by_topic["nba-phase6-export-trigger"]:
        assert {diff["pointer"] for diff in entry["diffs"]} == {"/rows_object", "/content_sha256"}
    for entry in by_topic["nba-phase6-export-complete"]:
        pointers = {diff["pointer"] for diff in entry["diffs"]}
        assert {"/export_path", "/content_sha256"} <= pointers <= {"/export_path", "/content_sha256",
                                                                    "/metadata/size_bytes"}
    failed = {(check["name"], check["scope"].get("topic")) for check in report["checks"] if check["status"] == "fail"}
    assert failed == {("changed_ratio", topic) for topic in by_topic}


# ------------------------------------------------------------------ 3. a recorded redelivery


def test_redelivery_validated(recording, capsys):
    """``replay validate`` reports the redelivered phase 2 message as the archive's one duplicate."""
    from replayer.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["validate", recording.archive_uri, "--json"])
    assert exited.value.code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["duplicates"] == 1
    duplicated = [group for group in result["groups"] if group["duplicates"]]
    assert [(group["phase"], group["direction"], group["processor"]) for group in duplicated] == [
        ("phase2", "INPUT", _nba_emulated.REDELIVERED_PROCESSOR)]
    assert (duplicated[0]["records"], duplicated[0]["unique"]) == (2, 1)


def test_redelivery_removed_by_default(cascade_runs, recorded_events, recording):
    """Without re-sending, the replay counts the removed duplicate and calls the processor once."""
    report = cascade_runs["max"][1]
    copies = [event for event in recorded_events if event.event_id == recording.redelivered_message_id]
    assert sorted(event.outcome for event in copies) == ["ack", "error:MissingInputDataError"]
    assert {(event.phase, event.direction, event.processor) for event in copies} == {
        ("phase2", Direction.INPUT, _nba_emulated.REDELIVERED_PROCESSOR)}
    assert report["validation"]["archive_duplicates_removed"] == 1
    row = _validation_rows(report)[("phase2", _nba_emulated.REDELIVERED_PROCESSOR)]
    assert row["replayed_calls"] == 1


def test_redelivery_resent_duplicates(recording, tmp_path):
    """Re-sending redeliveries makes the non-idempotent phase 2 processor publish a duplicate output."""
    result, report, entries = _replay(recording, tmp_path / "out", mode="cascade", phases="2-6",
                                      resend_redeliveries=True)
    assert result.exit_code != 0
    duplicates = [entry for entry in entries if entry["category"] == "duplicate"]
    assert [(entry["phase"], entry["topic"], entry["side"]) for entry in duplicates] == [
        ("phase2", "nba-phase2-raw-complete", "replayed")]
    assert "BdlBoxScoresProcessor" in duplicates[0]["key"]
    assert [entry for entry in entries if entry["category"] != "duplicate"] == []

    rows = _validation_rows(report)
    redelivered = rows[("phase2", _nba_emulated.REDELIVERED_PROCESSOR)]
    assert redelivered["recorded_input_records"] == 2
    assert redelivered["recorded_input_duplicates"] == 1
    assert redelivered["replayed_calls"] == 2
    assert redelivered["replayed_output_duplicates"] == 1
    for key, row in rows.items():
        if key != ("phase2", _nba_emulated.REDELIVERED_PROCESSOR):
            assert row["replayed_output_duplicates"] == 0, key
    # The fan-in orchestrator is idempotent: the late third report triggers nothing more.
    orchestrator = rows[("phase3", "orchestrator_phase2_to_3")]
    assert (orchestrator["replayed_calls"], orchestrator["replayed_outputs"]) == (3, 11)
    failed = [(check["name"], check["scope"].get("topic")) for check in report["checks"] if check["status"] == "fail"]
    assert failed == [("duplicates", "nba-phase2-raw-complete")]


# ------------------------------------------------------------------ 4. phase 3 raises for one game


def test_failing_game_missing_downstream(recording, recorded_outputs, tmp_path):
    """A phase 3 failure for one game leaves that game's downstream outputs missing, the other ten identical."""
    config = _variant_config(tmp_path, "examples.nba.phase3_app:app", "tests._nba_emulated:failing_phase3_app")
    result, report, entries = _replay(recording, tmp_path / "out", config, mode="cascade", phases="2-6")
    failing = _nba_emulated.FAILING_GAME_ID
    assert result.exit_code != 0

    failed_calls = [call for call in result.calls if call["category"]]
    assert len(failed_calls) == 1
    call = failed_calls[0]
    # Flask returns a 500 for the exception. Like the recorder, the replay names the exception.
    assert (call["phase"], call["processor"], call["category"], call["outcome"]) == (
        "phase3", "analytics", "processor_exception", "error:GameFailure")
    assert call["status"] == 500
    triggers = {event.event_id: json.loads(event.data) for event in _replayed_events(tmp_path / "out")
                if event.topic == "nba-phase3-trigger"}
    assert triggers[call["input_event_id"]]["game_id"] == failing
    analytics = _validation_rows(report)[("phase3", "analytics")]
    assert analytics["errors"] == {"processor_exception": 1}
    # The failed call fails the run on its own, besides the missing outputs it causes.
    failed_errors = [(check["scope"]["phase"], check["scope"]["processor"], check["value"])
                     for check in report["checks"] if check["name"] == "errors" and check["status"] == "fail"]
    assert failed_errors == [("phase3", "analytics", 1)]

    downstream = [(event, message) for event, message in recorded_outputs
                  if event.topic != "nba-phase3-trigger" and event.phase != "phase2"]
    expected_missing = Counter(event.topic for event, message in downstream if message["game_id"] == failing)
    expected_identical = Counter(event.topic for event, message in downstream if message["game_id"] != failing)
    assert expected_missing["nba-phase5-predictions-complete"] > 0
    assert {entry["category"] for entry in entries} == {"missing"}
    assert Counter(entry["topic"] for entry in entries) == expected_missing
    recorded_by_id = {event.event_id: message for event, message in recorded_outputs}
    assert {recorded_by_id[entry["recorded_event_id"]]["game_id"] for entry in entries} == {failing}
    # Each missing output names the failed call it traces back to, with the error category.
    for entry in entries:
        assert entry["reason"].startswith("processor_exception: the replayed call of phase3/analytics "), entry
        assert call["input_event_id"] in entry["reason"]
        assert f"GameFailure: analytics variant fails game {failing}" in entry["reason"]
    for topic, count in expected_identical.items():
        counts = _topic(report, topic)["counts"]
        assert counts["identical"] == count, topic
        assert counts["changed"] == counts["extra"] == 0, topic
    assert _topic(report, "nba-phase3-trigger")["counts"]["identical"] == 11


# ------------------------------------------------------------------ 5. phase 4 isolated vs in cascade


def _canonical_outputs(events, phase):
    """Outputs of ``phase`` by (topic, game, processor), without the fields that differ per run."""
    outputs = {}
    for event in events:
        if event.phase != phase:
            continue
        message = json.loads(event.data)
        key = (event.topic, message["game_id"], message["processor_name"])
        assert key not in outputs, f"duplicate output {key}"
        del message["execution_id"], message["timestamp"], message["metadata"]["duration_seconds"]
        outputs[key] = message
    return outputs


def test_isolated_phase4_same_as_cascade(recording, cascade_runs, tmp_path):
    """Phase 4 replayed alone from its recorded inputs produces the same outputs as in the cascade."""
    result, report, entries = _replay(recording, tmp_path / "out", mode="isolated", phases="4")
    assert result.exit_code == 0
    assert entries == []
    assert report["run"]["phases"] == ["phase4"]
    assert {(call["phase"], call["recorded_input"]) for call in result.calls} == {("phase4", True)}

    isolated = _canonical_outputs(_replayed_events(tmp_path / "out"), "phase4")
    in_cascade = _canonical_outputs(_replayed_events(cascade_runs["max"][3]), "phase4")
    assert len(isolated) == 22
    assert isolated == in_cascade
    cascade_rows = _validation_rows(cascade_runs["max"][1])
    for key, row in _validation_rows(report).items():
        assert key[0] == "phase4"
        assert (row["replayed_calls"], row["replayed_outputs"]) == (
            cascade_rows[key]["replayed_calls"], cascade_rows[key]["replayed_outputs"]), key
