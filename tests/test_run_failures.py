"""How ``replay run`` fails: closed, in one line, with the launcher left as it was.

Callable processors run in the launcher's process, so a processor can break
what the launcher does after the run (its imports, its environment), and a
Ctrl-C reaches the launcher through Beam, which wraps it in a RuntimeError.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

import pytest

import replayer._cli_run  # noqa: F401  (adds the run command to the group)
from replayer.cli import main
from replayer.errors import ReplayError
from replayer.run import interrupted_by_user, run_replay
from tests.topology import recording
from tests.topology.processors import box_scores

HERE = "tests.test_run_failures"


# ------------------------------------------------------------------ processors that misbehave


def hide_json_module(message, ctx):
    """Works, then makes ``import json`` fail for everything imported later in the process."""
    box_scores(message, ctx)
    sys.modules["json"] = None


def change_environment(message, ctx):
    """Adds, changes and removes variables that replay.toml does not configure."""
    box_scores(message, ctx)
    os.environ["REPLAY_TEST_ADDED"] = "1"
    os.environ["REPLAY_TEST_CHANGED"] = "by-processor"
    os.environ.pop("REPLAY_TEST_REMOVED", None)


_pressed = threading.Event()


def press_ctrl_c(message, ctx):
    """Sends SIGINT to the process once, as Ctrl-C in a terminal does, then keeps working a while."""
    box_scores(message, ctx)
    if not _pressed.is_set():
        _pressed.set()
        signal.raise_signal(signal.SIGINT)
        # Long enough for the main thread to take the signal while the lane still runs.
        threading.Event().wait(2)


# ------------------------------------------------------------------ fixtures and helpers


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("failures") / "archive"
    recording.write_archive(str(path))
    return str(path)


def _config(tmp_path, archive: str, processor: str) -> str:
    return recording.write_config(tmp_path / "replay.toml", archive=archive, output=str(tmp_path / "out"),
                                  box_scores_target=f"{HERE}:{processor}")


def _wait_for_lane_threads() -> None:
    # An interrupted lane's runner thread finishes its calls on its own; let it end before the next test.
    for thread in threading.enumerate():
        if thread.name == "replay-lane":
            thread.join(timeout=30)


# ------------------------------------------------------------------ the report step fails closed


def test_broken_report_import_is_error(archive, tmp_path, monkeypatch):
    """A processor that blocks ``import json`` makes the run fail naming json, not exit 0 without a report."""
    monkeypatch.setitem(sys.modules, "json", json)  # put back when the test ends
    for name in [name for name in sys.modules if name == "replayer.diff" or name.startswith("replayer.diff.")]:
        monkeypatch.delitem(sys.modules, name)  # imported again after the run, as in a fresh launcher
    with pytest.raises(ReplayError) as caught:
        run_replay(_config(tmp_path, archive, "hide_json_module"))
    assert caught.value.exit_code != 0
    assert "module 'json'" in str(caught.value)
    assert "sys.modules" in str(caught.value)
    assert not (tmp_path / "out" / "report.json").exists()


def test_cli_report_import_broken_exits_non_zero(archive, tmp_path, monkeypatch, capsys):
    """The CLI prints that failure as one error line and exits non-zero."""
    monkeypatch.setitem(sys.modules, "json", json)
    for name in [name for name in sys.modules if name == "replayer.diff" or name.startswith("replayer.diff.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(SystemExit) as exited:
        main(["run", "--config", _config(tmp_path, archive, "hide_json_module")])
    err = capsys.readouterr().err
    assert exited.value.code not in (0, None)
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        line for line in err.splitlines() if "could not be built" in line]
    assert "Traceback" not in err


def test_environment_restored_after_run(archive, tmp_path, monkeypatch):
    """Variables a processor adds, changes or removes are as before once run_replay returns."""
    monkeypatch.delenv("REPLAY_TEST_ADDED", raising=False)
    monkeypatch.setenv("REPLAY_TEST_CHANGED", "launcher")
    monkeypatch.setenv("REPLAY_TEST_REMOVED", "launcher")
    before = dict(os.environ)
    result = run_replay(_config(tmp_path, archive, "change_environment"))
    assert result.report is not None
    assert dict(os.environ) == before
    # The processor did run and change them: its calls all succeeded.
    assert all(call["category"] is None for call in result.calls if call["processor"] == "box_scores")


# ------------------------------------------------------------------ Ctrl-C


def test_interrupt_detected_through_beam_wrapping():
    """Beam's RuntimeError around a KeyboardInterrupt counts as an interrupt; other RuntimeErrors do not."""
    try:
        try:
            raise KeyboardInterrupt()
        except KeyboardInterrupt:
            raise RuntimeError("KeyboardInterrupt [while running 'ReplayLanes']")
    except RuntimeError as error:
        wrapped = error
    assert interrupted_by_user(wrapped)
    assert interrupted_by_user(RuntimeError("KeyboardInterrupt [while running 'X']"))
    assert not interrupted_by_user(RuntimeError("ValueError: bad [while running 'X']"))
    assert not interrupted_by_user(ValueError("KeyboardInterrupt"))


def test_ctrl_c_prints_one_line(archive, tmp_path, capsys, caplog):
    """SIGINT during a run: exit 130, one line naming the output folder, no traceback (Beam's included)."""
    _pressed.clear()
    try:
        with pytest.raises(SystemExit) as exited:
            main(["run", "--config", _config(tmp_path, archive, "press_ctrl_c")])
    finally:
        _wait_for_lane_threads()
    assert _pressed.is_set()
    err = capsys.readouterr().err
    assert exited.value.code == 130, err
    lines = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert lines and str(tmp_path / "out") in lines[0], err
    assert "Traceback" not in err
    assert "error:" not in err
    assert not [record for record in caplog.records if record.exc_info], [r.getMessage() for r in caplog.records]
