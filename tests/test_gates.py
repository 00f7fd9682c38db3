"""Gates of `replay run` and `replay diff`: what must fail a run, and what must be rejected before it starts.

Each of these used to pass silently or end in an "unexpected" error: a
failed call, a damaged archive file, a diff that compares nothing, a bad
number, an unreadable config, an output folder that overlaps the archive, and
a selection without entry events. Every test here pins the exit code and the
message.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import replayer._cli_diff  # noqa: F401  (adds the diff command to the group)
import replayer._cli_run  # noqa: F401  (adds the run command to the group)
from recorder._writer import ArchiveWriter
from replayer.cli import main
from replayer.run import run_replay
from schemas import Direction, RecordedEvent

DAY = dt.date(2024, 1, 15)
T0 = 1_705_312_800_000_000
THIS_MODULE = __name__


# --- processors named by the configs below ---------------------------------------


def echo(message, ctx):
    ctx.publish("out-topic", message.data, **message.attributes)


def boom(message, ctx):
    raise RuntimeError("boom")


# --- helpers -----------------------------------------------------------------------


def _event(event_id: str, direction: Direction, *, cause: str | None = None) -> RecordedEvent:
    return RecordedEvent(
        event_id=event_id, logical_date=DAY, phase="p1", direction=direction, processor="echo",
        topic="in-topic" if direction is Direction.INPUT else "out-topic",
        publish_time=T0 + int(event_id[-1]) * 1000, data=json.dumps({"n": event_id[-1]}).encode(), source="sdk",
        causation_id=cause, handling_micros=1_000 if direction is Direction.INPUT else None,
        outcome="ack" if direction is Direction.INPUT else None,
    )


def _write_archive(path: Path) -> str:
    """Two recorded inputs of phase p1 and the output each one caused."""
    with ArchiveWriter(str(path), writer_id="gates", source="sdk") as writer:
        for index in (1, 2):
            writer.write(_event(f"m{index}", Direction.INPUT))
            writer.write(_event(f"o{index}", Direction.OUTPUT, cause=f"m{index}"))
    return str(path)


@pytest.fixture
def archive(tmp_path) -> str:
    return _write_archive(tmp_path / "archive")


def _config(folder: Path, archive: str, processor: str = f'adapter = "callable"\ntarget = "{THIS_MODULE}:echo"',
            extra: str = "") -> str:
    path = folder / "replay.toml"
    path.write_text(
        f'phases = ["p1"]\nterminal_topics = ["out-topic"]\n[archive]\nuri = "{archive}"\n'
        f'[replay]\nspeed = "max"\noutput = "{folder / "out"}"\n'
        f'[[processors]]\nname = "echo"\nphase = "p1"\n{processor}\nsubscribes = ["in-topic"]\ntimeout_s = 1\n'
        f"{extra}")
    return str(path)


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(args)
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def _failed(document: dict) -> list[tuple[str, dict]]:
    return [(check["name"], check["scope"]) for check in document["checks"] if check["status"] == "fail"]


def _closed_port() -> int:
    """Return a loopback port with no listener (bound once, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- A. failed calls fail the run -------------------------------------------------------


def test_raising_processor_fails_run(tmp_path, archive, capsys):
    """Every call raising fails the errors check, in the summary, report.json, report.html and JUnit."""
    config = _config(tmp_path, archive, f'adapter = "callable"\ntarget = "{THIS_MODULE}:boom"')
    junit = tmp_path / "junit.xml"
    code, out, err = _cli(["run", "--config", config, "--junit-xml", str(junit)], capsys)
    assert code == 1, err

    document = json.loads((tmp_path / "out" / "report.json").read_text())
    # The outputs are missing because every call failed; the errors check names the cause.
    assert ("errors", {"phase": "p1", "processor": "echo"}) in _failed(document)
    [check] = [item for item in document["checks"] if item["name"] == "errors"]
    assert (check["value"], check["limit"]) == (2, 0)
    assert "2 of 2 calls failed (processor_exception 2)" in check["message"]

    assert "processor_exception 2" in out
    assert "failed calls: 2 (processor_exception 2)" in out
    assert "FAIL" in out
    assert "failed calls" in (tmp_path / "out" / "report.html").read_text()
    cases = {case.get("name"): case for case in ET.parse(junit).getroot().iter("testcase")}
    assert cases["errors echo"].find("failure") is not None


def test_refused_http_service_fails_run(tmp_path, archive):
    """An http service that refuses every connection fails the run instead of passing it."""
    config = _config(tmp_path, archive, f'adapter = "http"\nurl = "http://127.0.0.1:{_closed_port()}/"')
    result = run_replay(config)
    assert result.exit_code == 1
    document = json.loads((tmp_path / "out" / "report.json").read_text())
    [check] = [item for item in document["checks"] if item["name"] == "errors"]
    assert (check["status"], check["value"]) == ("fail", 2)


def test_max_errors_accepts_failures(tmp_path, archive):
    """[thresholds] max_errors raises the limit; the failures stay counted in the check."""
    config = _config(tmp_path, archive, f'adapter = "callable"\ntarget = "{THIS_MODULE}:boom"',
                     extra="[thresholds]\nmax_errors = 2\nmax_missing = 2\n")
    result = run_replay(config)
    assert result.exit_code == 0
    [check] = [item for item in result.report.checks if item.name == "errors"]
    assert (check.status, check.value, check.limit) == ("ok", 2, 2)


def test_clean_run_errors_check_passes(tmp_path, archive):
    """A run whose calls all ack passes, with an errors check of 0 for the processor."""
    result = run_replay(_config(tmp_path, archive))
    assert result.exit_code == 0, [check.message for check in result.report.failed_checks]
    [check] = [item for item in result.report.checks if item.name == "errors"]
    assert (check.status, check.value) == ("ok", 0)


# --- B. damaged archive files ---------------------------------------------------------


def _damage(archive: str) -> Path:
    junk = Path(archive) / f"date={DAY.isoformat()}" / "phase=p1" / "junk.avro"
    junk.write_bytes(b"not an avro file")
    return junk


def test_damaged_file_fails_run(tmp_path, archive, capsys):
    """A damaged archive file fails the damaged_files check and is named in the terminal summary."""
    junk = _damage(archive)
    code, out, err = _cli(["run", "--config", _config(tmp_path, archive)], capsys)
    assert code == 1, err
    document = json.loads((tmp_path / "out" / "report.json").read_text())
    assert _failed(document) == [("damaged_files", {})]
    assert "damaged archive files skipped: 1" in out
    assert junk.name in out


def test_damaged_files_allowed(tmp_path, archive):
    """max_damaged_files = 1 accepts one damaged file; the check still counts it."""
    _damage(archive)
    result = run_replay(_config(tmp_path, archive, extra="[thresholds]\nmax_damaged_files = 1\n"))
    assert result.exit_code == 0
    [check] = [item for item in result.report.checks if item.name == "damaged_files"]
    assert (check.status, check.value) == ("ok", 1)


def test_diff_damaged_file_fails(tmp_path, archive, capsys):
    """`replay diff` fails on a damaged file of either archive."""
    damaged = _write_archive(tmp_path / "damaged")
    _damage(damaged)
    code, out, err = _cli(["diff", archive, damaged, "--json"], capsys)
    assert code == 1, err
    assert _failed(json.loads(out)) == [("damaged_files", {})]


def test_diff_strict_stops_at_damage(tmp_path, archive, capsys):
    """`replay diff --strict` stops at the damaged file with one error line naming it."""
    damaged = _write_archive(tmp_path / "damaged")
    junk = _damage(damaged)
    code, out, err = _cli(["diff", archive, damaged, "--strict"], capsys)
    assert code == 2
    assert out == ""
    assert f"error: archive file '{junk}' is damaged" in err


# --- C. a diff that compares nothing ---------------------------------------------------


@pytest.mark.parametrize("option, named", [
    (["--date", "2030-01-01"], "--date 2030-01-01"),
    (["--phase", "nosuch"], "--phase nosuch"),
    (["--start-date", "2030-01-01", "--end-date", "2030-01-02"], "--start-date 2030-01-01 --end-date 2030-01-02"),
])
def test_diff_without_partitions_rejected(tmp_path, archive, capsys, option, named):
    """A selection with no partition in A or B is an input error naming the selection."""
    other = _write_archive(tmp_path / "other")
    code, out, err = _cli(["diff", archive, other, *option], capsys)
    assert code == 2
    assert out == ""
    assert f"error: no partition matches {named} in A or B" in err
    assert "has dates 2024-01-15 and phases p1" in err


def test_diff_phase_not_in_config(tmp_path, archive, capsys):
    """With --config, a --phase that is not one of its phases is rejected naming them."""
    config = _config(tmp_path, archive)
    code, _, err = _cli(["diff", archive, archive, "--config", config, "--phase", "p9"], capsys)
    assert code == 2
    assert "--phase 'p9' is not a phase of" in err
    assert "its phases are p1" in err


# --- D. diff --config is validated like replay run's ---------------------------------------


@pytest.mark.parametrize("text, expected", [
    ('bogus = 1\n[diff]\nabs_tol = 0.1\n', "replay.toml:1: key 'bogus' = 1 is not a known key"),
    ('[replay]\nspeed = "fast"\n', "replay.toml:2: key 'replay.speed' = 'fast' is invalid"),
    ('phases = ["p1"]\n[thresholds.latency.p9]\nwarn_s = 1.0\n',
     "replay.toml:2: invalid value {'warn_s': 1.0} for 'thresholds.latency.p9': 'p9' is not a configured phase"),
    ('[thresholds]\nmax_errors = -1\n', "replay.toml:2: invalid value -1 for 'thresholds.max_errors'"),
])
def test_diff_config_validated(tmp_path, archive, capsys, text, expected):
    """`replay diff --config` rejects what `replay run` rejects, with the file and line."""
    config = tmp_path / "replay.toml"
    config.write_text(text)
    code, out, err = _cli(["diff", archive, archive, "--config", str(config)], capsys)
    assert code == 2
    assert out == ""
    assert expected in err


def test_diff_config_non_utf8(tmp_path, archive, capsys):
    """A non-UTF-8 --config is one error line naming the file."""
    config = tmp_path / "replay.toml"
    config.write_bytes(b"[diff]\nabs_tol = 0.1 # caf\xe9\n")
    code, _, err = _cli(["diff", archive, archive, "--config", str(config)], capsys)
    assert code == 2
    assert f"error: {config}: not UTF-8 text (byte 0xe9 at offset 26)" in err
    assert "unexpected" not in err


# --- E, F. bad numbers and unreadable configs in `replay run` ----------------------------------


@pytest.mark.parametrize("option, expected", [
    (["--speed", "1e-300"], "option '--speed' '1e-300' must be a number from 0.001 to 1e+06"),
    (["--speed", "nan"], "option '--speed' 'nan' must be a number from 0.001 to 1e+06"),
    (["--max-gap", "nan"], "option '--max-gap' = nan must be a finite number of seconds >= 0"),
    (["--max-gap", "inf", "--speed", "1"], "option '--max-gap' = inf must be a finite number of seconds >= 0"),
])
def test_run_extreme_numbers_rejected(tmp_path, archive, capsys, option, expected):
    """Non-finite and out-of-range numbers are exit code 2 naming the option, not an unexpected error."""
    code, _, err = _cli(["run", "--config", _config(tmp_path, archive), "--dry-run", *option], capsys)
    assert code == 2
    assert expected in err
    assert "unexpected" not in err


def test_run_config_folder(tmp_path, capsys):
    """--config naming a folder is rejected as a folder."""
    code, _, err = _cli(["run", "--config", str(tmp_path), "--dry-run"], capsys)
    assert code == 2
    assert f"error: replay configuration {str(tmp_path)!r} is a folder, not a file" in err


def test_run_config_non_utf8(tmp_path, archive, capsys):
    """A non-UTF-8 replay.toml is one line naming the file."""
    path = Path(_config(tmp_path, archive))
    path.write_bytes(path.read_bytes() + b"# \xff\n")
    code, _, err = _cli(["run", "--config", str(path), "--dry-run"], capsys)
    assert code == 2
    assert f"error: {path}: not UTF-8 text (byte 0xff" in err


def test_diff_output_under_file_checked_first(tmp_path, capsys):
    """--output under a file fails before the archives are read (here they do not even exist)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _cli(["diff", str(tmp_path / "no-a"), str(tmp_path / "no-b"), "--output",
                         str(blocker / "report")], capsys)
    assert code == 2
    assert f"lies under the file {str(blocker)!r}" in err


# --- G. output folders that overlap the archive -------------------------------------------------


def _files(folder: str) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in Path(folder).rglob("*"))


def test_output_inside_archive_rejected(tmp_path, archive, capsys):
    """An output folder inside the archive is rejected before anything runs; the archive is unchanged."""
    before = _files(archive)
    inside = Path(archive) / f"date={DAY.isoformat()}" / "phase=p1" / "out"
    code, out, err = _cli(["run", "--config", _config(tmp_path, archive), "--output", str(inside)], capsys)
    assert code == 2
    assert f"is inside the archive {archive!r}" in err
    assert _files(archive) == before
    assert out == ""


def test_archive_inside_output_rejected(tmp_path, archive, capsys):
    """An output folder that contains the archive is rejected."""
    code, _, err = _cli(["run", "--config", _config(tmp_path, archive), "--output", str(tmp_path)], capsys)
    assert code == 2
    assert f"contains the archive {archive!r}" in err


def test_output_file_rejected_before_run(tmp_path, archive, capsys):
    """An --output that is a file is rejected before the processors run."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out, err = _cli(["run", "--config", _config(tmp_path, archive), "--output", str(blocker)], capsys)
    assert code == 2
    assert f"option '--output' = {str(blocker)!r} is a file, not a folder" in err
    assert "Traceback" not in err
    assert out == ""


# --- H. selections without entry events -------------------------------------------------------


def test_where_invalid_pointer_rejected(tmp_path, archive, capsys):
    """--where with an invalid JSON pointer is rejected naming the pointer."""
    code, _, err = _cli(["run", "--config", _config(tmp_path, archive), "--where", "/bad~pointer=x", "--dry-run"],
                        capsys)
    assert code == 2
    assert "option '--where' = '/bad~pointer=x' is invalid: '/bad~pointer' is not a valid JSON pointer" in err


def test_dry_run_without_entry_events_warns(tmp_path, archive, capsys):
    """A dry run of a date without data exits 0 but prints a warning naming the date."""
    code, out, _ = _cli(["run", "--config", _config(tmp_path, archive), "--date", "2030-01-01", "--dry-run"],
                        capsys)
    assert code == 0
    assert "warning: nothing to replay" in out
    assert "on 2030-01-01" in out


def test_run_without_entry_events_rejected(tmp_path, archive, capsys):
    """A run of a date without data is exit code 2 naming the date, and writes nothing."""
    code, out, err = _cli(["run", "--config", _config(tmp_path, archive), "--date", "2030-01-01"], capsys)
    assert code == 2
    assert "error: nothing to replay:" in err
    assert "contains no recorded input of p1 (the entry phase in cascade mode) on 2030-01-01" in err
    assert not (tmp_path / "out").exists()
    assert out == ""


def test_damaged_entry_file_still_reported(tmp_path, archive):
    """When damage removed every entry event, the run goes on and fails the damaged_files check, not exit 2."""
    [only] = (Path(archive) / f"date={DAY.isoformat()}" / "phase=p1").iterdir()
    only.write_bytes(b"Obj\x01 cut short")
    result = run_replay(_config(tmp_path, archive))
    assert result.exit_code == 1
    # The processor never got a call, so it is also reported as silent.
    assert [check.name for check in result.report.failed_checks] == ["silent_processors", "damaged_files"]
