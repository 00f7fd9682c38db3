"""The example NBA pipeline on the real 2024-01-15 payloads and on synthetic game days."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from examples.nba import generator, orchestrators, phase2, phase3, phase4, phase5, storage
from examples.nba.production import SUBSCRIBERS, load_realdata, record_production_day, synthetic_payloads
from replayer.adapters import Message, ProcessorContext

GAME_DATE = "2024-01-15"


@pytest.fixture(scope="module")
def real_payloads(realdata_dir):
    return load_realdata(realdata_dir, GAME_DATE)


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    monkeypatch.setenv(storage.DATA_ROOT_ENV, str(root))
    monkeypatch.delenv(storage.DATASET_PREFIX_ENV, raising=False)
    monkeypatch.delenv(storage.GCS_PREFIX_ENV, raising=False)
    return root


class Capture:
    """Collects what a callable processor publishes through ``ctx.publish``."""

    def __init__(self):
        self.messages = []

    def __call__(self, topic, data, attributes, ordering_key, content_type):
        self.messages.append((topic, json.loads(data), dict(attributes)))
        return str(len(self.messages))


def call(processor, payload, *, state=None, message_id="1"):
    capture = Capture()
    data = json.dumps(payload).encode()
    message = Message(message_id=message_id, data=data, attributes={"game_date": GAME_DATE}, publish_time=0)
    ctx = ProcessorContext(publisher=capture, state={} if state is None else state,
                           logical_date=dt.date(2024, 1, 15), processor="test", phase="test")
    processor(message, ctx)
    return capture.messages


def test_bdl_parser_real_lines(real_payloads):
    """Every one of the 384 real player lines becomes a row, in 11 games."""
    rows = phase2.parse_bdl_box_scores(real_payloads.box_scores, game_date=GAME_DATE)
    assert len(rows) == 384
    assert len({row["game_code"] for row in rows}) == 11
    assert all(row["player_id"] for row in rows)
    assert all(row["team_abbr"] != row["opponent_abbr"] for row in rows)


def test_scoreboard_parser_real_games(real_payloads):
    """scoreboardV2 gives 11 games whose codes match the box score games."""
    games = phase2.parse_scoreboard_v2(real_payloads.scoreboard, game_date=GAME_DATE)
    box_codes = {row["game_code"] for row in phase2.parse_bdl_box_scores(real_payloads.box_scores, game_date=GAME_DATE)}
    assert len(games) == 11
    assert {game["game_code"] for game in games} == box_codes
    houston = next(game for game in games if game["game_code"] == "20240115/HOUPHI")
    assert (houston["home_pts"], houston["visitor_pts"]) == (124, 115)


def test_scoreboard_parser_missing_set():
    """A payload without a GameHeader set is rejected with the set's name."""
    with pytest.raises(phase2.PayloadFormatError, match="GameHeader"):
        phase2.parse_scoreboard_v2({"resultSets": [{"name": "LineScore", "headers": [], "rowSet": []}]},
                                   game_date=GAME_DATE)


@pytest.mark.parametrize("text, minutes", [("28", 28.0), ("00", 0.0), ("32:15", 32.25), ("", 0.0), (None, 0.0)])
def test_parse_minutes(text, minutes):
    """BallDontLie minute strings convert to float minutes."""
    assert phase3.parse_minutes(text) == minutes


def test_parse_minutes_rejects_garbage():
    """A minutes value that is not MM or MM:SS names the value."""
    with pytest.raises(phase3.MinutesFormatError, match="'ab'"):
        phase3.parse_minutes("ab")


def test_team_points_match_line_score(real_payloads):
    """Summed player points equal NBA.com's final score for all 22 real team lines."""
    rows = phase2.parse_bdl_box_scores(real_payloads.box_scores, game_date=GAME_DATE)
    games = phase2.parse_scoreboard_v2(real_payloads.scoreboard, game_date=GAME_DATE)
    teams = [team for game in games
             for team in phase3.team_game_summaries(phase3.player_game_summaries(rows, game), game)]
    assert len(teams) == 22
    mismatched = [(team["game_id"], team["team_abbr"]) for team in teams if not team["points_match_line_score"]]
    assert mismatched == []


def test_phase2_publishes_counts_and_digest(real_payloads, data_root, tmp_path):
    """The box score processor writes 384 rows and publishes their count and digest."""
    payload_path = tmp_path / "bdl.json"
    payload_path.write_text(json.dumps(real_payloads.box_scores))
    published = call(phase2.process_bdl_boxscores, {
        "scraper_name": "bdl_box_scores", "game_date": GAME_DATE, "gcs_path": str(payload_path),
        "status": "success", "execution_id": "scraper_1", "correlation_id": "c1",
    })
    assert [topic for topic, _, _ in published] == ["nba-phase2-raw-complete"]
    message = published[0][1]
    rows = storage.read_rows(message["rows_object"])
    assert message["record_count"] == len(rows) == 384
    assert message["content_sha256"] == storage.content_digest(rows)
    assert len(message["games"]) == 11


def test_phase2_missing_payload(data_root, tmp_path):
    """A phase 1 message naming a missing payload raises a FileNotFoundError subclass."""
    with pytest.raises(FileNotFoundError):
        call(phase2.process_bdl_boxscores, {
            "scraper_name": "bdl_box_scores", "game_date": GAME_DATE,
            "gcs_path": str(tmp_path / "absent.json"), "status": "success",
        })


def _phase2_reports(real_payloads, tmp_path):
    reports = []
    for name, processor, payload in (
        ("bdl_box_scores", phase2.process_bdl_boxscores, real_payloads.box_scores),
        ("nbac_scoreboard_v2", phase2.process_nbac_scoreboard, real_payloads.scoreboard),
    ):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(payload))
        reports += call(processor, {"scraper_name": name, "game_date": GAME_DATE, "gcs_path": str(path),
                                    "status": "success", "correlation_id": "c1"})
    return [message for _, message, _ in reports]


def test_orchestrator_waits_for_all(real_payloads, data_root, tmp_path):
    """The 2->3 orchestrator publishes nothing until both phase 2 processors reported."""
    box_scores, scoreboard = _phase2_reports(real_payloads, tmp_path)
    state = {}
    assert call(orchestrators.orchestrate_phase2_to_3, box_scores, state=state) == []
    triggers = call(orchestrators.orchestrate_phase2_to_3, scoreboard, state=state)
    assert len(triggers) == 11
    assert {message["game_id"] for _, message, _ in triggers} == set(scoreboard["game_ids"])


def test_orchestrator_triggers_once(real_payloads, data_root, tmp_path):
    """A redelivered phase 2 report after the trigger publishes nothing more."""
    box_scores, scoreboard = _phase2_reports(real_payloads, tmp_path)
    state = {}
    call(orchestrators.orchestrate_phase2_to_3, box_scores, state=state)
    call(orchestrators.orchestrate_phase2_to_3, scoreboard, state=state)
    assert call(orchestrators.orchestrate_phase2_to_3, box_scores, state=state) == []


def test_orchestrator_ignores_failed_report(real_payloads, data_root, tmp_path):
    """A failed phase 2 report does not count towards completeness."""
    box_scores, scoreboard = _phase2_reports(real_payloads, tmp_path)
    state = {}
    call(orchestrators.orchestrate_phase2_to_3, {**box_scores, "status": "failed"}, state=state)
    assert call(orchestrators.orchestrate_phase2_to_3, scoreboard, state=state) == []


def test_features_and_predictions(real_payloads):
    """Features and predictions cover every player who played, with finite numbers."""
    rows = phase2.parse_bdl_box_scores(real_payloads.box_scores, game_date=GAME_DATE)
    game = phase2.parse_scoreboard_v2(real_payloads.scoreboard, game_date=GAME_DATE)[0]
    summaries = phase3.player_game_summaries(rows, game)
    features = phase4.player_features(summaries)
    predictions = phase5.predict_game(features)
    assert len(features) == len(summaries)
    assert len(predictions) == sum(1 for row in summaries if row["played"])
    assert all(0 <= row["predicted_points"] < 80 for row in predictions)


def test_prediction_model_changes_output(real_payloads):
    """A different model coefficient changes the predicted points."""
    rows = phase2.parse_bdl_box_scores(real_payloads.box_scores, game_date=GAME_DATE)
    game = phase2.parse_scoreboard_v2(real_payloads.scoreboard, game_date=GAME_DATE)[0]
    features = phase4.player_features(phase3.player_game_summaries(rows, game))
    changed = phase5.PredictionModel(version="v2", league_points_per_min=0.6)
    base = {row["player_id"]: row["predicted_points"] for row in phase5.predict_game(features)}
    other = {row["player_id"]: row["predicted_points"] for row in phase5.predict_game(features, changed)}
    assert base.keys() == other.keys()
    assert base != other


def test_dataset_prefix_redirects_writes(data_root, monkeypatch):
    """With DATASET_PREFIX=test_ rows land under test_nba_raw, never under nba_raw."""
    monkeypatch.setenv(storage.DATASET_PREFIX_ENV, "test_")
    written = storage.write_rows(dataset="nba_raw", table="t", game_date=GAME_DATE, name="x", rows=[{"a": 1}])
    assert written.relative_path.startswith("nba_raw/t/")
    assert (data_root / ("test_" + written.relative_path)).is_file()
    assert not (data_root / "nba_raw").exists()


def test_gcs_prefix_redirects_exports(data_root, monkeypatch):
    """With GCS_PREFIX=test/ exports land under test/exports."""
    monkeypatch.setenv(storage.GCS_PREFIX_ENV, "test/")
    written = storage.write_export(kind="predictions", game_date=GAME_DATE, name="g", document={"players": []})
    assert (data_root / "test" / written.relative_path).is_file()
    assert not (data_root / "exports").exists()


def test_prefixed_read_falls_back(data_root, monkeypatch):
    """A prefixed reader finds production rows named by their digest."""
    written = storage.write_rows(dataset="nba_raw", table="t", game_date=GAME_DATE, name="x", rows=[{"a": 1}])
    monkeypatch.setenv(storage.DATASET_PREFIX_ENV, "test_")
    assert storage.read_rows(written.relative_path) == [{"a": 1}]


def test_rewrite_same_rows_is_noop(data_root):
    """Writing identical rows twice keeps one object and reports it as existing."""
    first = storage.write_rows(dataset="nba_raw", table="t", game_date=GAME_DATE, name="x", rows=[{"a": 1}])
    second = storage.write_rows(dataset="nba_raw", table="t", game_date=GAME_DATE, name="x", rows=[{"a": 1}])
    assert first.created
    assert not second.created
    assert first.uri == second.uri


def test_generator_deterministic():
    """The same seed gives identical payloads; another seed different ones."""
    first = generator.generate_game_day(GAME_DATE, n_games=5, seed=3)
    again = generator.generate_game_day(GAME_DATE, n_games=5, seed=3)
    other = generator.generate_game_day(GAME_DATE, n_games=5, seed=4)
    assert json.dumps(first.box_scores) == json.dumps(again.box_scores)
    assert json.dumps(first.scoreboard) == json.dumps(again.scoreboard)
    assert json.dumps(first.box_scores) != json.dumps(other.box_scores)


def test_generator_matches_real_keys(real_payloads):
    """Synthetic payloads use the real payloads' keys, result sets and headers."""
    day = generator.generate_game_day(GAME_DATE, n_games=4, seed=1)
    real_game, game = real_payloads.box_scores["data"][0], day.box_scores["data"][0]
    assert game.keys() == real_game.keys()
    assert game["home_team"].keys() == real_game["home_team"].keys()
    assert game["home_team"]["players"][0].keys() == real_game["home_team"]["players"][0].keys()
    assert game["home_team"]["players"][0]["player"].keys() == real_game["home_team"]["players"][0]["player"].keys()
    real_sets = {rs["name"]: rs["headers"] for rs in real_payloads.scoreboard["resultSets"]}
    sets = {rs["name"]: rs["headers"] for rs in day.scoreboard["resultSets"]}
    assert sets == real_sets


def test_generator_consistent_scores():
    """Synthetic team scores equal the players' points and the line score, with no ties."""
    day = generator.generate_game_day(GAME_DATE, n_games=15, seed=2)
    rows = phase2.parse_bdl_box_scores(day.box_scores, game_date=GAME_DATE)
    games = phase2.parse_scoreboard_v2(day.scoreboard, game_date=GAME_DATE)
    assert len(games) == 15
    for game in games:
        teams = phase3.team_game_summaries(phase3.player_game_summaries(rows, game), game)
        assert all(team["points_match_line_score"] for team in teams)
        assert game["home_pts"] != game["visitor_pts"]
    per_team = Counter((row["game_code"], row["team_abbr"]) for row in rows)
    assert all(13 <= count <= 15 for count in per_team.values())


def test_production_subscribers_match_toml():
    """The production bus routes exactly the processors replay.toml declares."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    config = tomllib.loads((Path(generator.__file__).parent / "replay.toml").read_text())
    declared = {(p["name"], p["phase"], p["subscribes"][0], (p.get("filter") or {}).get("equals"))
                for p in config["processors"]}
    routed = {(s.name, s.phase, s.topic, s.filter_equals) for s in SUBSCRIBERS}
    assert routed == declared


@pytest.fixture(scope="module")
def recorded_day(realdata_dir, tmp_path_factory):
    from recorder._reader import ArchiveReader

    folder = tmp_path_factory.mktemp("production")
    run = record_production_day(
        archive_uri=str(folder / "archive"), game_date=GAME_DATE, data_root=str(folder / "data"),
        payloads=load_realdata(realdata_dir, GAME_DATE), run_label="test",
    )
    events = list(ArchiveReader(str(folder / "archive")).read())
    return run, events


def test_production_records_every_phase(recorded_day):
    """Every phase 2-6 has recorded INPUT and OUTPUT events and nothing failed."""
    run, events = recorded_day
    assert run.failures == ()
    seen = {(event.phase, event.direction.value) for event in events}
    for phase in ("phase2", "phase3", "phase4", "phase5", "phase6"):
        assert (phase, "INPUT") in seen
        assert (phase, "OUTPUT") in seen


def test_production_outputs_have_causation(recorded_day):
    """Every OUTPUT's causation id is a recorded INPUT of the same phase and processor."""
    _, events = recorded_day
    inputs = {(event.phase, event.processor, event.event_id) for event in events if event.direction.value == "INPUT"}
    outputs = [event for event in events if event.direction.value == "OUTPUT"]
    assert outputs
    assert all((event.phase, event.processor, event.causation_id) in inputs for event in outputs)


def test_production_counts(recorded_day):
    """The real day records 11 games' triggers and one prediction per player who played."""
    run, events = recorded_day
    outputs = Counter(event.topic for event in events if event.direction.value == "OUTPUT")
    assert outputs["nba-phase3-trigger"] == 11
    assert outputs["nba-phase6-export-complete"] == 11
    assert outputs["nba-phase5-predictions-complete"] == run.published["nba-phase5-predictions-complete"]
    assert run.player_lines == 384


def test_production_push_source(recorded_day):
    """The Flask phase is recorded by the push middleware."""
    _, events = recorded_day
    sources = {event.source for event in events if event.processor == "analytics"}
    assert sources == {"push"}


def test_production_time_gaps(recorded_day):
    """Phase 2 inputs arrive minutes apart in the early morning after the game date."""
    _, events = recorded_day
    phase2_inputs = sorted(event.publish_time for event in events
                           if event.phase == "phase2" and event.direction.value == "INPUT")
    first = dt.datetime.fromtimestamp(phase2_inputs[0] / 1e6, dt.timezone.utc)
    assert first.date() == dt.date(2024, 1, 16)
    assert phase2_inputs[-1] - phase2_inputs[0] >= 60_000_000
    by_phase = defaultdict(list)
    for event in events:
        by_phase[event.phase].append(event.publish_time)
    assert min(by_phase["phase6"]) > max(by_phase["phase2"])


def test_production_logical_date(recorded_day):
    """Events published on the next UTC day belong to the game date."""
    _, events = recorded_day
    assert {event.logical_date for event in events} == {dt.date(2024, 1, 15)}


def test_production_synthetic_day(tmp_path):
    """A synthetic day records a prediction per player who played and no failures."""
    run = record_production_day(
        archive_uri=str(tmp_path / "archive"), game_date="2024-02-01", data_root=str(tmp_path / "data"),
        payloads=synthetic_payloads("2024-02-01", n_games=3, seed=0), run_label="synthetic",
    )
    assert run.failures == ()
    assert run.published["nba-phase6-export-complete"] == 3
    assert run.recorded > 0
    assert run.dropped == 0


def _run_chain(real_payloads, tmp_path):
    """Run every processor of phases 2-6 once, in order, on the real day; return each topic's messages."""
    from examples.nba import phase6

    published = defaultdict(list)
    reports = _phase2_reports(real_payloads, tmp_path)
    published["nba-phase2-raw-complete"] = reports
    state = {}
    triggers = [message for report in reports
                for _, message, _ in call(orchestrators.orchestrate_phase2_to_3, report, state=state)]
    published["nba-phase3-trigger"] = triggers
    state = {}
    for trigger in triggers:
        for message in phase3.summarize_game(trigger).messages:
            published["nba-phase3-analytics-complete"].append(message)
            for topic, output, _ in call(orchestrators.orchestrate_phase3_to_4, message, state=state):
                published[topic].append(output)
    for trigger in published["nba-phase4-trigger"]:
        for topic, output, _ in call(phase4.process_player_features, trigger):
            published[topic].append(output)
    for features_done in published["nba-phase4-precompute-complete"]:
        for topic, output, _ in call(phase5.process_predictions, features_done):
            published[topic].append(output)
    for export_trigger in published["nba-phase6-export-trigger"]:
        for topic, output, _ in call(phase6.process_export, export_trigger):
            published[topic].append(output)
    return published


def test_prefixes_redirect_every_write(real_payloads, data_root, tmp_path, monkeypatch):
    """With DATASET_PREFIX and GCS_PREFIX set, phases 2-6 write only under the prefixed datasets and exports."""
    monkeypatch.setenv(storage.DATASET_PREFIX_ENV, "test_")
    monkeypatch.setenv(storage.GCS_PREFIX_ENV, "test/")
    published = _run_chain(real_payloads, tmp_path)
    assert len(published["nba-phase6-export-complete"]) == 11
    written = {path.relative_to(data_root).parts[0] for path in data_root.rglob("*") if path.is_file()}
    assert written == {"test_nba_raw", "test_nba_analytics", "test_nba_precompute", "test_nba_predictions", "test"}
    assert {path.relative_to(data_root / "test").parts[0] for path in (data_root / "test").rglob("*.json")} == {
        "exports"}


def test_messages_carry_counts_and_digests(real_payloads, data_root, tmp_path):
    """Every message naming stored rows or an export carries their record count and content digest."""
    published = _run_chain(real_payloads, tmp_path)
    checked = Counter()
    for topic, messages in published.items():
        for message in messages:
            for field in ("rows_object", "export_path"):
                if field not in message:
                    continue
                if field == "rows_object":
                    content = storage.read_rows(message[field])
                    records = len(content)
                else:
                    content = json.loads((data_root / message[field]).read_text())
                    records = len(content["players"])
                assert message["content_sha256"] == storage.content_digest(content), (topic, field)
                assert message["record_count"] == records, (topic, field)
                checked[topic] += 1
    assert checked == {
        "nba-phase2-raw-complete": 2, "nba-phase3-analytics-complete": 22, "nba-phase4-precompute-complete": 11,
        "nba-phase6-export-trigger": 11, "nba-phase6-export-complete": 11,
    }
    # Phase 5 publishes each player's prediction row itself.
    predictions = published["nba-phase5-predictions-complete"]
    assert len(predictions) == sum(len(storage.read_rows(m["rows_object"])) for m in published["nba-phase6-export-trigger"])
    assert all(isinstance(m["predicted_points"], float) for m in predictions)
    assert all(m["record_count"] == 1 for m in predictions)
