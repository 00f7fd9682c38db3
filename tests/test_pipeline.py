"""The Beam replay pipeline: in-process runner on a local archive and on the GCS emulator, Dataflow dry run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from recorder._reader import ArchiveReader
from recorder._storage import open_storage
from replayer.config import Selection, load_config
from replayer.run import run_replay
from tests.topology import recording
from tests.topology.network import block_non_loopback
from tests.topology.pubsub import create_guard_topic

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def loopback_only(monkeypatch):
    """Fail any connection or name lookup off loopback, with no variable hiding a credential lookup."""
    return block_non_loopback(monkeypatch)


@pytest.fixture
def loopback_only_no_gce(monkeypatch):
    """Like loopback_only, but with NO_GCE_CHECK set for code outside the sandbox (Beam's Dataflow client)."""
    attempts = block_non_loopback(monkeypatch)
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    return attempts


def test_local_archive_end_to_end(tmp_path, caplog, loopback_only):
    """The in-process runner replays a local archive with no network and never mentions Prism."""
    caplog.set_level(logging.DEBUG)
    recording.write_archive(str(tmp_path / "archive"))
    path = recording.write_config(tmp_path / "replay.toml", archive=str(tmp_path / "archive"),
                                  output=str(tmp_path / "out"), speed="20")
    result = run_replay(path)
    replayed = list(ArchiveReader(str(tmp_path / "out" / "archive")).read())
    assert recording.output_signature(replayed) == recording.output_signature(recording.production_events())
    assert result.run_meta["runner"] == "DirectRunner"
    assert result.run_meta["counters"]["files_read"] == 1
    assert result.run_meta["counters"]["processor_calls"] == 15
    pacing = result.run_meta["pacing"]
    assert pacing["releases"] == 6
    assert 0 <= pacing["p50_ms"] <= pacing["p99_ms"] <= pacing["max_ms"]
    assert result.run_meta["planned_duration_s"] == 0.2
    assert "prism" not in caplog.text.lower()
    assert loopback_only == []


def test_isolated_lanes_write_call_files(tmp_path):
    """Isolated mode writes one call-record file per (date, processor) lane."""
    recording.write_archive(str(tmp_path / "archive"))
    path = recording.write_config(tmp_path / "replay.toml", archive=str(tmp_path / "archive"),
                                  output=str(tmp_path / "out"), mode="isolated")
    result = run_replay(path)
    names = sorted(p.name for p in (tmp_path / "out" / "calls").iterdir())
    assert names == ["2024-03-09.box_scores.jsonl", "2024-03-09.orchestrator.jsonl",
                     "2024-03-09.player_stats.jsonl", "2024-03-09.predict.jsonl"]
    assert all(call["recorded_input"] for call in result.calls)
    lanes = json.loads((tmp_path / "out" / "lanes.json").read_text())
    assert [lane["lane"] for lane in lanes] == [name[:-len(".jsonl")] for name in names]


def test_damaged_file_counted(tmp_path):
    """A truncated archive file is skipped by the tolerant reader and counted in Beam metrics."""
    recording.write_archive(str(tmp_path / "archive"))
    phase2 = next((tmp_path / "archive" / "date=2024-03-09" / "phase=phase2").iterdir())
    data = phase2.read_bytes()
    phase2.write_bytes(data[: len(data) - 40])
    path = recording.write_config(tmp_path / "replay.toml", archive=str(tmp_path / "archive"),
                                  output=str(tmp_path / "out"))
    result = run_replay(path)
    assert result.run_meta["counters"]["damaged_files"] == 1
    assert len(result.run_meta["read"]["damaged"]) == 1


def test_gcs_emulator_end_to_end(gcs_bucket, tmp_path):
    """Archive and replay output on the GCS emulator, read and written through the storage layer."""
    from pipelines.replay import run_replay_pipeline

    archive = f"gs://{gcs_bucket}/archive"
    out_dir = f"gs://{gcs_bucket}/replay-out"
    recording.write_archive(archive)
    config = load_config(recording.write_config(tmp_path / "replay.toml", archive=archive, output=out_dir))
    outcome = run_replay_pipeline(config=config, selection=Selection(dates=(recording.DATE,), phases=config.phases),
                                  out_dir=out_dir)
    assert outcome.counters["records_read"] == 12
    replayed = list(ArchiveReader(f"{out_dir}/archive").read())
    assert recording.output_signature(replayed) == recording.output_signature(recording.production_events())
    storage = open_storage(out_dir)
    calls = storage.read_bytes(f"{out_dir}/calls/2024-03-09.jsonl").splitlines()
    assert len(calls) == 15


def test_dataflow_dry_run_builds_job(tmp_path, loopback_only_no_gce):
    """DataflowRunner accepts the pipeline for a 30-day range with --setup_file, offline, with --dry_run."""
    recording.write_archive(str(tmp_path / "archive"))
    path = recording.write_config(tmp_path / "replay.toml", archive=str(tmp_path / "archive"),
                                  output=str(tmp_path / "out"))
    result = run_replay(path, start_date="2024-03-01", end_date="2024-03-30", beam_args=[
        "--runner=DataflowRunner", "--project=replay-dry-run", "--region=us-central1", "--temp_location=gs://replay-dry-run/tmp",
        "--staging_location=gs://replay-dry-run/staging",
        f"--setup_file={PROJECT_ROOT / 'setup.py'}", "--dry_run=true"])
    assert result.run_meta["runner"] == "DataflowRunner"
    assert result.run_meta["pipeline_state"] == "DONE"
    assert len(result.run_meta["dates"]) == 30
    assert loopback_only_no_gce == []


def test_replay_publishes_nothing_to_emulator(pubsub_emulator, tmp_path, monkeypatch):
    """The Flask processor's real PublisherClient publishes nothing: an emulator subscription stays empty."""
    attempts = block_non_loopback(monkeypatch, keep_environment=True)
    monkeypatch.delenv("NO_GCE_CHECK", raising=False)
    # The topic player_stats publishes to, in the project it names.
    publisher, subscriber, topic, subscription = create_guard_topic("replay-local", "phase2-complete",
                                                                     "phase2-complete-guard")
    recording.write_archive(str(tmp_path / "archive"))
    path = recording.write_config(tmp_path / "replay.toml", archive=str(tmp_path / "archive"),
                                  output=str(tmp_path / "out"))
    result = run_replay(path)
    stats_outputs = [call for call in result.calls if call["processor"] == "player_stats"]
    assert [call["outputs"] for call in stats_outputs] == [1, 1, 1]
    response = subscriber.pull(subscription=subscription, max_messages=10, return_immediately=True, timeout=10)
    assert list(response.received_messages) == []
    assert attempts == []
    publisher.publish(topic, b"outside").result(timeout=10)
    response = subscriber.pull(subscription=subscription, max_messages=10, timeout=10)
    assert [m.message.data for m in response.received_messages] == [b"outside"]


def test_run_replay_on_gcs_emulator(gcs_bucket, tmp_path):
    """run_replay plans from and replays a gs:// archive on the emulator and writes the report locally."""
    archive = f"gs://{gcs_bucket}/archive"
    recording.write_archive(archive)
    path = recording.write_config(tmp_path / "replay.toml", archive=archive, output=str(tmp_path / "out"))
    result = run_replay(path, mode="isolated")
    replayed = list(ArchiveReader(str(tmp_path / "out" / "archive")).read())
    assert recording.output_signature(replayed) == recording.output_signature(recording.production_events())
    assert result.run_meta["archive"] == archive
    assert result.run_meta["read"]["files_read"] == 3
    assert (tmp_path / "out" / "report.json").is_file()


# --------------------------------------------------------------------------- command line


def _replay_cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the ``replay`` console script in-process; return (exit code, stdout, stderr)."""
    from replayer.cli import main

    capsys.readouterr()  # drop what fixtures printed before the command
    with pytest.raises(SystemExit) as exited:
        main(["--log-format", "json", *args])
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


@pytest.fixture
def topology_config(tmp_path):
    """A recorded topology day and its replay.toml (speed 20)."""
    recording.write_archive(str(tmp_path / "archive"))
    return recording.write_config(tmp_path / "replay.toml", archive=str(tmp_path / "archive"),
                                  output=str(tmp_path / "out"), speed="20")


def test_cli_dry_run_selection(capsys, topology_config, tmp_path):
    """--dry-run --json prints the plan for --phases, --date and --where; nothing runs."""
    code, out, _ = _replay_cli(capsys, "run", "--config", topology_config, "--dry-run", "--json",
                               "--phases", "2-3", "--date", "2024-03-09", "--where", "/game_id=g1")
    plan = json.loads(out)
    assert code == 0
    assert plan["phases"] == ["phase2", "phase3"]
    assert plan["dates"] == ["2024-03-09"]
    assert plan["entry_events"] == [{"phase": "phase2", "processor": "box_scores", "events": 1},
                                    {"phase": "phase2", "processor": "player_stats", "events": 1}]
    assert plan["speed"] == 20.0
    assert not (tmp_path / "out").exists()


def test_cli_dry_run_range_and_skips(capsys, topology_config):
    """--start-date/--end-date, --start-phase and --skip-phase shape an isolated plan."""
    code, out, _ = _replay_cli(capsys, "run", "--config", topology_config, "--dry-run", "--json",
                               "--mode", "isolated", "--start-date", "2024-03-08", "--end-date", "2024-03-09",
                               "--start-phase", "3", "--skip-phase", "phase4", "--speed", "1", "--max-gap", "1")
    plan = json.loads(out)
    assert code == 0
    assert plan["dates"] == ["2024-03-08", "2024-03-09"]
    assert plan["phases"] == ["phase3"]
    assert plan["entry_events"] == [{"phase": "phase3", "processor": "orchestrator", "events": 6}]
    assert plan["gaps_shortened"] == 2
    assert plan["planned_duration_s"] == 2.15


def test_cli_run_prints_plan_progress_and_summary(capsys, topology_config, tmp_path):
    """A run prints the planned duration first, progress lines on standard error, then the summary."""
    code, out, err = _replay_cli(capsys, "run", "--config", topology_config)
    assert code == 0
    assert out.index("planned duration 0.200 s") < out.index("pacing lateness p50")
    assert "lane 2024-03-09: 6/6 entry events released" in err
    assert f"output in {tmp_path / 'out'}" in out
    summary_row = next(line for line in out.splitlines() if line.startswith("phase4     predict"))
    assert summary_row.split()[2:4] == ["3", "3"]


def test_cli_beam_args_after_double_dash(capsys, topology_config, monkeypatch):
    """Arguments after -- reach Beam: DataflowRunner builds the job offline with --dry_run."""
    block_non_loopback(monkeypatch)
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    code, out, _ = _replay_cli(
        capsys, "run", "--config", topology_config, "--json", "--", "--runner=DataflowRunner",
        "--project=replay-dry-run", "--region=us-central1", "--temp_location=gs://replay-dry-run/tmp",
        f"--setup_file={PROJECT_ROOT / 'setup.py'}", "--dry_run=true")
    result = json.loads(out)
    assert code == 0
    assert result["run"]["runner"] == "DataflowRunner"
    assert result["run"]["pipeline_state"] == "DONE"


@pytest.mark.parametrize(("options", "expected"), [
    (["--date", "2024-13-01"], "error: option '--date' = '2024-13-01' is not a date; use YYYY-MM-DD"),
    (["--phases", "7"], "error: option '--phases' = '7' is not a configured phase"),
    (["--speed", "fast"], "error: option '--speed' 'fast' is not a number or 'max'"),
    (["--where", "game_id"], "error: option '--where' = 'game_id' is invalid"),
])
def test_cli_bad_option_one_line(capsys, topology_config, options, expected):
    """A bad option is one error line naming the value, exit code 2, no traceback."""
    code, _, err = _replay_cli(capsys, "run", "--config", topology_config, "--dry-run", *options)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2
    assert len(lines) == 1
    assert lines[0].startswith(expected)
    assert "Traceback" not in err


def test_cli_config_error_names_file_line_key(capsys, tmp_path):
    """An unknown key in replay.toml is one line naming the file, line, key and value."""
    path = recording.write_config(tmp_path / "replay.toml", archive=str(tmp_path / "archive"),
                                  output=str(tmp_path / "out"))
    text = Path(path).read_text().replace("[sandbox]", "[sandbox]\nclocks = \"wall\"")
    Path(path).write_text(text)
    code, _, err = _replay_cli(capsys, "run", "--config", path, "--dry-run")
    assert code == 2
    assert f"error: {path}:10: key 'sandbox.clocks' = 'wall' is not a known key" in err


def test_progress_uses_rich_on_terminal(monkeypatch):
    """On a terminal the progress is a rich bar on standard error."""
    import io

    from replayer._cli_run import _progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    listener, stop = _progress(json_output=False)
    listener("2024-03-09", 3, 6)
    listener("2024-03-09", 6, 6)
    stop()
    assert "lane 2024-03-09" in terminal.getvalue()
    assert "\x1b[" in terminal.getvalue()


def test_cli_strict_stops_at_damaged_file(capsys, topology_config, tmp_path):
    """--strict turns a truncated archive file into one error line naming it, before anything runs."""
    phase2 = next((tmp_path / "archive" / "date=2024-03-09" / "phase=phase2").iterdir())
    data = phase2.read_bytes()
    phase2.write_bytes(data[: len(data) - 40])
    code, _, err = _replay_cli(capsys, "run", "--config", topology_config, "--strict")
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2
    assert len(lines) == 1
    assert phase2.name in lines[0]
    assert not (tmp_path / "out").exists()


def test_cli_clock_wall(capsys, topology_config, tmp_path):
    """--clock wall overrides the file's recorded clock: processors see the real date."""
    code, _, _ = _replay_cli(capsys, "run", "--config", topology_config, "--clock", "wall", "--json")
    predictions = [event for event in ArchiveReader(str(tmp_path / "out" / "archive")).read()
                   if event.topic == "phase4-predictions"]
    assert len(predictions) == 3
    assert {json.loads(event.data)["seen_date"] for event in predictions} != {recording.DATE.isoformat()}
    # The predictions now differ from the recorded ones, so the report fails the run.
    assert code == 1
    assert json.loads((tmp_path / "out" / "run.json").read_text())["mode"] == "cascade"
