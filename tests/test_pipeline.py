"""The Beam replay pipeline: in-process runner on a local archive and on the GCS emulator, Dataflow dry run."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest

from recorder._reader import ArchiveReader
from recorder._storage import open_storage
from replayer.config import Selection, load_config
from replayer.run import run_replay
from tests.topology import recording

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def loopback_only(monkeypatch):
    """Fail any connection to a non-loopback address and list the attempts."""
    attempts: list = []
    real_connect = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and not (host.startswith("127.") or host in ("localhost", "::1")) \
                and self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise OSError(f"test forbids network access to {address!r}")
        return real_connect(self, address)

    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        # A name lookup already sends a query to a resolver off this machine.
        if isinstance(host, str) and host not in ("localhost", "::1") and not host.startswith("127."):
            attempts.append(host)
            raise socket.gaierror(f"test forbids resolving {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    # google-auth would otherwise probe the GCE metadata server for credentials.
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
    assert result.run_meta["pacing"]["releases"] == 6
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


def test_dataflow_dry_run_builds_job(tmp_path, loopback_only):
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
    assert loopback_only == []
