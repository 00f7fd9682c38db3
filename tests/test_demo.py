"""``replay demo`` end to end through the CLI, its folder rules and its option errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from examples.nba import demo
from recorder._reader import ArchiveReader
from replayer.errors import ConfigError

PHASES = ("phase2", "phase3", "phase4", "phase5", "phase6")
FAST = ("--speed", "max", "--games", "3")
# Variables the example pipeline or the logging read; a test run must not inherit them.
_SCRUBBED_ENV = ("NBA_DATA_ROOT", "DATASET_PREFIX", "GCS_PREFIX", "REPLAY_LOG_LEVEL")


def run_cli(cwd: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``replay ARGS`` in a new process from ``cwd``, as a user would."""
    env = {name: value for name, value in os.environ.items() if name not in _SCRUBBED_ENV}
    project_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [project_root, env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", "from replayer.cli import main; main()", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )


def archive_event_count(archive: Path) -> int:
    return sum(1 for _ in ArchiveReader(str(archive), dedupe=False).read())


@pytest.fixture(scope="module")
def first_demo(tmp_path_factory):
    """One demo run in an empty folder with fast settings; returns (folder, completed process)."""
    folder = tmp_path_factory.mktemp("demo")
    completed = run_cli(folder, "demo", *FAST, "--no-progress")
    return folder, completed


def test_demo_exits_zero(first_demo):
    """The demo on a fresh folder exits 0 and ends with the path of report.html."""
    folder, completed = first_demo
    assert completed.returncode == 0, completed.stderr[-2000:]
    last_line = completed.stdout.strip().splitlines()[-1]
    assert last_line == f"report: {folder.resolve() / 'replay-output' / 'report.html'}"
    assert (folder / "replay-output" / "report.html").stat().st_size > 0


def test_demo_report_identical(first_demo):
    """report.json reports every replayed output is identical, with outputs in every phase 2-6."""
    folder, completed = first_demo
    assert completed.returncode == 0, completed.stderr[-2000:]
    report = json.loads((folder / "replay-output" / "report.json").read_text())
    totals = report["totals"]
    assert report["passed"] is True
    assert totals["identical"] == totals["recorded_outputs"] == totals["replayed_outputs"]
    assert totals["changed"] == totals["missing"] == totals["extra"] == 0
    outputs_per_phase = {phase: 0 for phase in PHASES}
    for topic in report["topics"]:
        outputs_per_phase[topic["phase"]] += topic["counts"]["replayed_outputs"]
    for phase in PHASES:
        assert outputs_per_phase[phase] > 0, phase
    calls_per_phase = {phase: 0 for phase in PHASES}
    for row in report["validation"]["processors"]:
        calls_per_phase[row["phase"]] += row["replayed_calls"]
    for phase in PHASES:
        assert calls_per_phase[phase] > 0, phase


def test_demo_writes_only_its_folders(first_demo):
    """The demo creates exactly its three folders in the current folder, each with a marker."""
    folder, _ = first_demo
    assert sorted(path.name for path in folder.iterdir()) == ["demo-archive", "nba-data", "replay-output"]
    for name in ("demo-archive", "nba-data", "replay-output"):
        marker = json.loads((folder / name / demo.MARKER_NAME).read_text())
        assert marker["written_by"] == "replay demo"
        assert marker["files"], name


def test_demo_no_progress_lines(first_demo):
    """--no-progress prints no progress lines."""
    _, completed = first_demo
    assert "entry events released" not in completed.stderr


def test_demo_rerun_replaces(first_demo):
    """A rerun in the same folder replaces the previous demo's files instead of adding to them."""
    folder, completed = first_demo
    assert completed.returncode == 0, completed.stderr[-2000:]
    recorded_before = archive_event_count(folder / "demo-archive")
    rerun = run_cli(folder, "demo", *FAST)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "replaced the previous demo's" in rerun.stdout
    assert archive_event_count(folder / "demo-archive") == recorded_before
    report = json.loads((folder / "replay-output" / "report.json").read_text())
    assert report["passed"] is True
    # Without --no-progress and without a terminal, progress comes as plain lines.
    assert "entry events released" in rerun.stderr


def test_demo_json_default_speed(tmp_path):
    """--json prints one document; at the default 60x the replay waits for the recorded gap."""
    completed = run_cli(tmp_path, "demo", "--games", "2", "--seed", "5", "--json")
    assert completed.returncode == 0, completed.stderr[-2000:]
    document = json.loads(completed.stdout)
    assert document["exit_code"] == 0
    assert document["speed"] == 60.0
    assert document["planned_duration_s"] > 0
    assert document["max_gap_s"] is None
    assert document["totals"]["identical"] == document["totals"]["recorded_outputs"]
    assert document["totals"]["recorded_outputs"] > 0
    assert Path(document["report_html"]).is_file()
    assert Path(document["report_html"]).parent == (tmp_path / "replay-output").resolve()


def test_demo_rejects_foreign_output(tmp_path):
    """An existing output folder the demo did not write is left alone and named in a one-line error."""
    foreign = tmp_path / "replay-output"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    completed = run_cli(tmp_path, "demo", *FAST, "--no-progress")
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert "./replay-output" in lines[0]
    assert "--output" in lines[0]
    assert (foreign / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "demo-archive").exists()


@pytest.mark.parametrize("args, expected", [
    (("--games", "0"), "--games"),
    (("--games", "many"), "--games"),
    (("--speed", "fast"), "--speed"),
    (("--speed", "-2"), "--speed"),
    (("--date", "2024-02-30"), "--date"),
    (("--max-gap", "-1"), "--max-gap"),
    (("--archive", "gs://bucket/archive"), "--archive"),
    (("--archive", "."), "--archive"),
    (("--output", "demo-archive/out"), "--output"),
    (("--bogus",), "--bogus"),
])
def test_demo_bad_option(tmp_path, args, expected):
    """A bad option gives one error line naming it, exit code 2, and writes nothing."""
    completed = run_cli(tmp_path, "demo", *args)
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("error: ")
    assert expected in lines[0]
    assert list(tmp_path.iterdir()) == []


def _make_previous_demo(root: Path, name: str, files: dict[str, str]) -> Path:
    folder = root / name
    for relative, text in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text)
    listed = sorted(files)
    (folder / demo.MARKER_NAME).write_text(json.dumps({"written_by": "replay demo", "files": listed}))
    return folder


def test_folders_previous_demo(tmp_path):
    """Folders containing only files their marker lists are marked for replacement."""
    for name in ("demo-archive", "nba-data", "replay-output"):
        _make_previous_demo(tmp_path, name, {"a/b.json": "{}"})
    folders = demo.plan_folders(demo.DemoOptions(), cwd=tmp_path)
    assert [folder.state for folder in folders] == ["previous_demo"] * 3
    assert [folder.previous_files for folder in folders] == [1, 1, 1]


def test_folders_unlisted_file(tmp_path):
    """A file the previous demo did not write makes the folder unusable."""
    folder = _make_previous_demo(tmp_path, "nba-data", {"a/b.json": "{}"})
    (folder / "a" / "added.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"contains 'a/added.json'.*--data-root"):
        demo.plan_folders(demo.DemoOptions(), cwd=tmp_path)


def test_folders_replay_sandbox_output(tmp_path):
    """Rows and exports that later replays wrote under the test prefixes do not block a rerun."""
    folder = _make_previous_demo(tmp_path, "nba-data", {"nba_raw/t/2024-01-15/a.json": "{}"})
    for relative in ("test/exports/predictions/2024-01-15/p.json", "test_nba_analytics/t/2024-01-15/r.json"):
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text("{}")
    states = {folder.role: folder.state for folder in demo.plan_folders(demo.DemoOptions(), cwd=tmp_path)}
    assert states["data_root"] == "previous_demo"


def test_folders_foreign_files_counted(tmp_path):
    """The error names the first foreign file and how many more there are."""
    folder = _make_previous_demo(tmp_path, "nba-data", {"a/b.json": "{}"})
    for name in ("x.json", "y.json", "z.json"):
        (folder / name).write_text("{}")
    with pytest.raises(ConfigError, match=r"contains 'x.json' and 2 more files"):
        demo.plan_folders(demo.DemoOptions(), cwd=tmp_path)


def test_folders_interrupted_demo(tmp_path):
    """A marker without a file list (a demo that stopped early) still lets a rerun replace the folder."""
    folder = tmp_path / "replay-output"
    (folder / "calls").mkdir(parents=True)
    (folder / "calls" / "x.jsonl").write_text("")
    (folder / demo.MARKER_NAME).write_text(json.dumps({"written_by": "replay demo", "files": None}))
    states = {folder.role: folder.state for folder in demo.plan_folders(demo.DemoOptions(), cwd=tmp_path)}
    assert states == {"archive": "new", "data_root": "new", "output": "previous_demo"}


def test_folders_empty_existing(tmp_path):
    """An existing empty folder is used as a new one."""
    (tmp_path / "demo-archive").mkdir()
    states = [folder.state for folder in demo.plan_folders(demo.DemoOptions(), cwd=tmp_path)]
    assert states == ["new", "new", "new"]


@pytest.mark.parametrize("planned_s, lanes, speed, expected", [
    (5.45, {"2024-01-15": 2}, 60.0, None),
    (327.0, {"2024-01-15": 2}, 1.0, demo.REPLAY_BUDGET_S),
    (327.0, {"2024-01-15": 3}, 2.0, demo.REPLAY_BUDGET_S * 2.0 / 2),
    (400.0, {"2024-01-15": 2}, None, None),
])
def test_gap_cap(planned_s, lanes, speed, expected):
    """Idle gaps are capped only when the planned wait exceeds the budget, to fit it."""
    plan = types.SimpleNamespace(planned_duration_s=planned_s, lanes=lanes)
    assert demo._gap_cap(plan, speed) == expected
