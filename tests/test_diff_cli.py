"""``replay diff A B`` on two local archives."""

from __future__ import annotations

import datetime as dt
import json
import xml.etree.ElementTree as ET

import pytest

import replayer._cli_diff  # noqa: F401  (adds the diff command to the group)
from recorder._writer import ArchiveWriter
from replayer.cli import main
from schemas import Direction, RecordedEvent

DAY = dt.date(2024, 3, 9)


def _event(event_id, direction, payload, *, cause=None, phase="phase3", at_ms=0, source="sdk"):
    return RecordedEvent(event_id=event_id, logical_date=DAY, phase=phase, direction=direction,
                         publish_time=1_710_000_000_000_000 + at_ms * 1000, data=json.dumps(payload).encode(),
                         source=source, processor="scorer", topic="scores" if direction is Direction.OUTPUT
                         else "games", causation_id=cause, handling_micros=50_000 if cause is None else None)


def _archive(path, events, source):
    with ArchiveWriter(str(path), writer_id="test", source=source) as writer:
        for item in events:
            writer.write(item)
    return str(path)


@pytest.fixture
def archives(tmp_path):
    inputs = [_event(f"m{index}", Direction.INPUT, {"g": index}) for index in range(3)]
    baseline = inputs + [_event(f"o{index}", Direction.OUTPUT, {"g": index, "pts": index}, cause=f"m{index}",
                                at_ms=50) for index in range(3)]
    candidate = [_event(f"r{index}", Direction.OUTPUT, {"g": index, "pts": index if index else 9},
                        cause=f"m{index}", source="replay") for index in range(3)]
    same = [_event(f"s{index}", Direction.OUTPUT, {"g": index, "pts": index}, cause=f"m{index}", source="replay")
            for index in range(3)]
    return (_archive(tmp_path / "a", baseline, "sdk"), _archive(tmp_path / "b", candidate, "replay"),
            _archive(tmp_path / "c", same, "replay"), tmp_path)


def _run(args, capsys):
    with pytest.raises(SystemExit) as exited:
        main(args)
    return exited.value.code, capsys.readouterr()


def test_diff_identical_exit_zero(archives, capsys):
    """Two archives with the same outputs pass with exit code 0."""
    baseline, _, same, _ = archives
    code, captured = _run(["diff", baseline, same, "--date", "2024-03-09"], capsys)
    assert code == 0, captured.err
    assert "PASS" in captured.out


def test_diff_changed_exit_one(archives, capsys):
    """A changed output fails with exit code 1 and writes the report files."""
    baseline, candidate, _, folder = archives
    out = folder / "report"
    code, captured = _run(["diff", baseline, candidate, "--output", str(out), "--junit-xml",
                           str(folder / "junit.xml")], capsys)
    assert code == 1, captured.err
    document = json.loads((out / "report.json").read_text())
    assert (document["totals"]["changed"], document["totals"]["identical"]) == (1, 2)
    assert (out / "report.html").exists()
    assert (out / "diffs.jsonl").exists()
    assert ET.parse(folder / "junit.xml").getroot().get("failures") == "1"


def test_diff_json_output(archives, capsys):
    """--json prints report.json to standard output."""
    baseline, candidate, _, _ = archives
    code, captured = _run(["diff", baseline, candidate, "--json"], capsys)
    document = json.loads(captured.out)
    assert (code, document["report_version"], document["run"]["mode"]) == (1, 1, "diff")


def test_diff_config_tolerance(archives, capsys, tmp_path):
    """A replay.toml with max_changed_ratio 0.5 lets one change of three pass."""
    baseline, candidate, _, _ = archives
    config = tmp_path / "replay.toml"
    config.write_text("[thresholds]\nmax_changed_ratio = 0.5\n")
    code, captured = _run(["diff", baseline, candidate, "--config", str(config)], capsys)
    assert code == 0, captured.out


def test_diff_bad_config_key(archives, capsys, tmp_path):
    """An unknown [diff] key is reported in one line naming the file and key, exit code 2."""
    baseline, candidate, _, _ = archives
    config = tmp_path / "replay.toml"
    config.write_text("[diff]\nignored = ['/a']\n")
    code, captured = _run(["diff", baseline, candidate, "--config", str(config)], capsys)
    assert code == 2
    assert "diff.ignored" in captured.err
    assert "replay.toml" in captured.err


def test_diff_bad_date(archives, capsys):
    """A malformed --date is rejected with exit code 2."""
    baseline, candidate, _, _ = archives
    code, captured = _run(["diff", baseline, candidate, "--date", "09/03/2024"], capsys)
    assert code == 2
    assert "YYYY-MM-DD" in captured.err


def test_diff_strict_clean_archives(archives, capsys):
    """--strict reads undamaged archives as usual and passes identical outputs."""
    baseline, _, same, _ = archives
    code, captured = _run(["diff", baseline, same, "--strict", "--json"], capsys)
    assert code == 0, captured.err
    document = json.loads(captured.out)
    assert document["validation"]["damaged_files"] == []
    assert [check["status"] for check in document["checks"] if check["name"] == "damaged_files"] == ["ok"]
