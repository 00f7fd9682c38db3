"""Hints a newcomer needs from the CLI: missing extras, counts in the plan, quiet Google warnings, diff without --config."""

from __future__ import annotations

import datetime as dt
import importlib.abc
import json
import sys
import textwrap
import warnings

import pytest

import replayer._cli_diff  # noqa: F401  (adds the diff command to the group)
from recorder._writer import ArchiveWriter
from replayer._cli_diff import NO_CONFIG_HINT
from replayer._cli_run import _progress
from replayer.cli import main
from replayer.config import Selection, load_config, parse_config
from replayer.errors import ConfigError, MissingExtraError
from replayer.run import ReplayPlan, plan_lines
from schemas import Direction, RecordedEvent
from tests.conftest import PROJECT_ROOT
from tests.topology import recording

DAY = dt.date(2024, 3, 9)
INSTALL_REPLAY = "install the replay extra: pip install 'pipeline-replay[replay]' (from a clone: pip install '.[replay]')"


class _BlockedModule(importlib.abc.MetaPathFinder):
    """Import finder that fails on one top-level module as if it were not installed."""

    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.name:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


@pytest.fixture
def block_module(monkeypatch):
    """Return a function that makes ``import NAME`` fail with ModuleNotFoundError until the test ends."""
    def block(name: str) -> None:
        monkeypatch.delitem(sys.modules, name, raising=False)
        monkeypatch.setattr(sys, "meta_path", [_BlockedModule(name), *sys.meta_path])

    return block


def _exit(args, capsys):
    with pytest.raises(SystemExit) as exited:
        main(args)
    return exited.value.code, capsys.readouterr()


# --- a target that needs an extra ------------------------------------------------------


def test_run_without_flask_names_extra(block_module, monkeypatch, tmp_path, capsys):
    """`replay run` on the NBA example without flask names the processor, its line and the replay extra."""
    monkeypatch.chdir(PROJECT_ROOT)
    monkeypatch.delitem(sys.modules, "examples.nba.phase3_app", raising=False)
    block_module("flask")
    config = "examples/nba/replay.toml"
    line = (PROJECT_ROOT / config).read_text().splitlines().index('target = "examples.nba.phase3_app:app"') + 1

    code, captured = _exit(["run", "--config", config, "--date", "2024-01-15", "--output", str(tmp_path / "out")],
                           capsys)

    assert code == 2
    assert captured.err == (
        f"error: {config}:{line}: processor 'analytics' (4th [[processors]] table): key 'target' = "
        "'examples.nba.phase3_app:app' cannot be imported: importing 'examples.nba.phase3_app' failed with "
        f"ModuleNotFoundError: No module named 'flask'; {INSTALL_REPLAY}\n"
    )
    assert not (tmp_path / "out").exists()


def _config_with_target(tmp_path, body: str):
    (tmp_path / "proc.py").write_text(body)
    path = tmp_path / "replay.toml"
    path.write_text(textwrap.dedent("""\
        phases = ["phase2"]
        [archive]
        uri = "./archive"
        [[processors]]
        name = "scores"
        phase = "phase2"
        adapter = "callable"
        target = "proc.py:process"
        subscribes = ["games"]
        """))
    return path


@pytest.mark.parametrize("module", ["apache_beam", "flask", "requests", "time_machine"])
def test_target_missing_extra_module(block_module, tmp_path, module):
    """A target whose import stops at a module of the replay extra ends its error with the install command."""
    path = _config_with_target(tmp_path, f"import {module}\n\n\ndef process(message, ctx):\n    return None\n")
    block_module(module)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert f"{path}:8: processor 'scores' (1st [[processors]] table): key 'target' = 'proc.py:process'" in message
    assert f"ModuleNotFoundError: No module named '{module}'; {INSTALL_REPLAY}" in message
    assert message.endswith(INSTALL_REPLAY)


def test_target_missing_other_module_no_hint(tmp_path):
    """A module that no extra provides gets no install command, since installing an extra would not help."""
    path = _config_with_target(tmp_path, "import no_such_module_for_replay_tests\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.endswith("No module named 'no_such_module_for_replay_tests'")
    assert "pip install" not in message


def test_missing_extra_error_names_both_commands():
    """MissingExtraError names the package, the extra, and the commands for an index and a clone."""
    assert str(MissingExtraError("apache-beam", "replay")) == (
        f"this command needs apache-beam, which is not installed; {INSTALL_REPLAY}")


# --- counts in the plan and the progress lines ------------------------------------------


PLAN_CONFIG = """\
phases = ["phase2", "phase3"]
[archive]
uri = "./archive"
""" + recording.BOX_SCORES_TABLE


def _plan(*, entries, gaps, out_of_order, dates=(DAY,), phases=("phase2",), damaged=0):
    config = parse_config(PLAN_CONFIG, import_targets=False)
    return ReplayPlan(
        config=config, selection=Selection(dates=dates, phases=phases),
        lanes={DAY.isoformat(): entries} if entries else {},
        entries={("phase2", "box_scores"): entries} if entries else {},
        planned_duration_s=0.0, gaps_shortened=gaps, out_of_order=out_of_order, recorded_events=(),
        read_stats={"damaged": [{"uri": f"f{index}.avro"} for index in range(damaged)]},
    )


def test_plan_lines_singular():
    """One of each is written in the singular: 1 entry event, 1 gap, 1 event, one date and phase."""
    assert plan_lines(_plan(entries=1, gaps=1, out_of_order=1)) == [
        "mode cascade, speed max, date 2024-03-09, phase phase2",
        "  phase2/box_scores: 1 entry event",
        "planned duration 0.000 s (1 gap shortened, 1 event out of time order in the archive)",
    ]


def test_plan_lines_plural():
    """Other counts, zero included, are written in the plural."""
    assert plan_lines(_plan(entries=2, gaps=0, out_of_order=3, dates=(DAY, DAY + dt.timedelta(days=1)),
                            phases=("phase2", "phase3"))) == [
        "mode cascade, speed max, dates 2024-03-09, 2024-03-10, phases phase2, phase3",
        "  phase2/box_scores: 2 entry events",
        "planned duration 0.000 s (0 gaps shortened, 3 events out of time order in the archive)",
    ]


@pytest.mark.parametrize("damaged, expected", [(1, "; 1 damaged archive file was skipped"),
                                               (2, "; 2 damaged archive files were skipped")])
def test_plan_lines_damaged_files(damaged, expected):
    """The warning of an empty plan counts the damaged files skipped in the right number."""
    warning = plan_lines(_plan(entries=0, gaps=0, out_of_order=0, damaged=damaged))[-1]
    assert warning.startswith("warning: nothing to replay: ")
    assert warning.endswith(expected)


def test_progress_line_singular(capsys):
    """Without a terminal, a lane of one entry event reports '1/1 entry event released'."""
    listener, close = _progress(json_output=False)
    listener("2024-03-09", 1, 1)
    listener("2024-03-10", 2, 2)
    close()
    assert capsys.readouterr().err.splitlines() == ["lane 2024-03-09: 1/1 entry event released",
                                                    "lane 2024-03-10: 2/2 entry events released"]


# --- google-api-core's Python end-of-support warnings --------------------------------------


def _support_dates():
    """Dates on which google-api-core warns about the running Python: deprecated, past end of life, unsupported."""
    from google.api_core import _python_version_support as support

    info = support.PYTHON_VERSION_INFO[sys.version_info[:2]]
    end_of_life = info.python_eol + support.EOL_GRACE_PERIOD
    return [info.python_eol - dt.timedelta(days=30), end_of_life, end_of_life + dt.timedelta(days=30)]


def test_main_silences_python_support_warnings(capsys):
    """After main() starts, google-api-core's end-of-support FutureWarnings are ignored, other ones are not."""
    pytest.importorskip("google.api_core._python_version_support")
    from google.api_core import _python_version_support as support

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for today in _support_dates():
            support.check_python_version("google.api_core", today=today)
        before = [str(item.message) for item in caught]
        with pytest.raises(SystemExit):
            main(["--help"])
        caught.clear()
        for today in _support_dates():
            support.check_python_version("google.api_core", today=today)
        warnings.warn_explicit("another FutureWarning", FutureWarning, "x.py", 1,
                               module="google.api_core.other")
        after = [str(item.message) for item in caught]
    capsys.readouterr()

    assert len(before) == 3
    assert all(text.startswith("You are using a") for text in before)
    assert after == ["another FutureWarning"]


# --- replay diff without --config -----------------------------------------------------------


def _output(event_id, payload):
    # No causation id, so 'auto' matching falls back to content.
    return RecordedEvent(event_id=event_id, logical_date=DAY, phase="phase3", direction=Direction.OUTPUT,
                         publish_time=1_710_000_000_000_000, data=json.dumps(payload).encode(), source="sdk",
                         processor="scorer", topic="scores")


def _archive(path, events):
    with ArchiveWriter(str(path), writer_id="test", source="sdk") as writer:
        for event in events:
            writer.write(event)
    return str(path)


@pytest.fixture
def run_stamped(tmp_path):
    """Two archives whose outputs differ only in an execution_id, like two runs of the same code."""
    baseline = _archive(tmp_path / "a", [_output(f"a{n}", {"g": n, "execution_id": f"a-{n}"}) for n in range(2)])
    candidate = _archive(tmp_path / "b", [_output(f"b{n}", {"g": n, "execution_id": f"b-{n}"}) for n in range(2)])
    return baseline, candidate, tmp_path


def test_diff_without_config_hints(run_stamped, capsys):
    """Without --config, outputs left missing and extra by content matching get one hint line on stderr."""
    baseline, candidate, _ = run_stamped
    code, captured = _exit(["diff", baseline, candidate], capsys)
    assert code == 1
    assert "FAIL" in captured.out
    assert captured.err.splitlines().count(NO_CONFIG_HINT) == 1
    assert NO_CONFIG_HINT not in captured.out


def test_diff_with_config_no_hint(run_stamped, capsys):
    """With --config ignoring the varying field the outputs match and no hint is printed."""
    baseline, candidate, tmp_path = run_stamped
    config = tmp_path / "replay.toml"
    config.write_text('[diff]\nignore = ["/execution_id"]\n')
    code, captured = _exit(["diff", baseline, candidate, "--config", str(config)], capsys)
    assert code == 0, captured.out
    assert NO_CONFIG_HINT not in captured.err


def test_diff_without_config_identical_no_hint(run_stamped, capsys):
    """Without --config but with every output matched, the hint stays out."""
    baseline, _, _ = run_stamped
    code, captured = _exit(["diff", baseline, baseline], capsys)
    assert code == 0, captured.out
    assert NO_CONFIG_HINT not in captured.err
