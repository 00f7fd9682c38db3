"""``replay run --where``: the recorded side is narrowed to what the selected entry events led to.

Unit tests pin :func:`replayer.closure.causal_closure` on hand-made chains
(fan-in included); end-to-end tests replay one game of the test topology and
of the example NBA pipeline and expect a clean report whose counts are that
game's recorded counts.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
from pathlib import Path

import pytest

import replayer._cli_run  # noqa: F401  (adds the run command to the group)
from examples.nba import storage
from examples.nba.production import record_production_day, synthetic_payloads
from recorder._reader import ArchiveReader
from replayer.cli import main
from replayer.closure import causal_closure
from replayer.errors import ConfigError
from replayer.run import run_replay, summary_lines
from schemas import Direction, RecordedEvent
from tests.topology import recording

DAY = dt.date(2024, 3, 9)
NBA_DATE = "2024-01-15"
NBA_CONFIG = Path(__file__).resolve().parent.parent / "examples" / "nba" / "replay.toml"


# ------------------------------------------------------------------ causal_closure


def _event(event_id: str, direction: Direction, *, phase: str = "p", cause: str | None = None,
           game: str | None = None) -> RecordedEvent:
    data = json.dumps({"game_id": game}).encode() if game else b"{}"
    return RecordedEvent(event_id=event_id, logical_date=DAY, phase=phase, direction=direction, publish_time=0,
                         data=data, source="sdk", causation_id=cause)


def _ids(events) -> list[tuple[str, str]]:
    return [(event.event_id, event.direction.name) for event in events]


def _never(event) -> bool:
    return False


# in-a (phase a) -> out-a -> in-b (phase b, same id) -> out-b; in-x -> out-x is unrelated.
CHAIN = [
    _event("in-a", Direction.INPUT, phase="a"),
    _event("out-a", Direction.OUTPUT, phase="a", cause="in-a"),
    _event("out-a", Direction.INPUT, phase="b"),
    _event("out-b", Direction.OUTPUT, phase="b", cause="out-a"),
    _event("in-x", Direction.INPUT, phase="a"),
    _event("out-x", Direction.OUTPUT, phase="a", cause="in-x"),
]


def test_closure_follows_phases():
    """Transitive closure reaches the downstream delivery and its output, nothing unrelated."""
    kept = causal_closure(CHAIN, {"in-a"}, transitive=True, selects=_never)
    assert _ids(kept) == [("in-a", "INPUT"), ("out-a", "OUTPUT"), ("out-a", "INPUT"), ("out-b", "OUTPUT")]


def test_closure_isolated_one_hop():
    """Without transitivity only the selected inputs and their own outputs are kept."""
    kept = causal_closure(CHAIN, {"in-a", "out-a"}, transitive=False, selects=_never)
    assert _ids(kept) == [("in-a", "INPUT"), ("out-a", "OUTPUT"), ("out-a", "INPUT"), ("out-b", "OUTPUT")]
    kept = causal_closure(CHAIN, {"in-a"}, transitive=False, selects=_never)
    assert _ids(kept) == [("in-a", "INPUT"), ("out-a", "OUTPUT")]


def test_closure_fan_in_last_input():
    """A fan-in output belongs to the closure of its last input only, as its causation_id names."""
    events = [
        _event("r1", Direction.INPUT),
        _event("r2", Direction.INPUT),
        _event("trigger", Direction.OUTPUT, cause="r2"),
    ]
    assert _ids(causal_closure(events, {"r2"}, transitive=True, selects=_never)) == [
        ("r2", "INPUT"), ("trigger", "OUTPUT")]
    assert _ids(causal_closure(events, {"r1"}, transitive=True, selects=_never)) == [("r1", "INPUT")]


def test_closure_one_input_many_outputs():
    """An input that caused outputs for several games brings all of them in."""
    events = [_event("date-input", Direction.INPUT)] + [
        _event(f"trigger-{game}", Direction.OUTPUT, cause="date-input", game=game) for game in ("g1", "g2")]
    kept = causal_closure(events, {"date-input"}, transitive=True, selects=_never)
    assert [event.event_id for event in kept] == ["date-input", "trigger-g1", "trigger-g2"]


def test_closure_keeps_redeliveries():
    """Every recorded copy of a selected input is kept, so duplicates are still counted."""
    events = [_event("in-a", Direction.INPUT), _event("in-a", Direction.INPUT),
              _event("out-a", Direction.OUTPUT, cause="in-a")]
    assert len(causal_closure(events, {"in-a"}, transitive=True, selects=_never)) == 3


def test_closure_untraced_outputs():
    """An output without causation_id is kept when it matches the selection itself, and followed downstream."""
    events = [
        _event("t-g1", Direction.OUTPUT, phase="a", game="g1"),
        _event("t-g2", Direction.OUTPUT, phase="a", game="g2"),
        _event("t-g1", Direction.INPUT, phase="b", game="g1"),
        _event("t-g2", Direction.INPUT, phase="b", game="g2"),
    ]

    def selects(event) -> bool:
        return json.loads(event.data)["game_id"] == "g1"

    kept = causal_closure(events, set(), transitive=True, selects=selects)
    assert _ids(kept) == [("t-g1", "OUTPUT"), ("t-g1", "INPUT")]


# ------------------------------------------------------------------ the test topology


def _recorded_counts(events, keep) -> dict[tuple[str, str], tuple[int, int]]:
    """(recorded inputs, recorded outputs) per (phase, processor) of the events ``keep`` accepts."""
    inputs = collections.Counter((e.phase, e.processor) for e in events
                                 if e.direction is Direction.INPUT and keep(e))
    outputs = collections.Counter((e.phase, e.processor) for e in events
                                  if e.direction is Direction.OUTPUT and keep(e))
    return {key: (inputs[key], outputs[key]) for key in set(inputs) | set(outputs)}


def _report_counts(report) -> dict[tuple[str, str], tuple[int, int]]:
    return {(row["phase"], row["processor"]): (row["recorded_inputs"], row["recorded_outputs"])
            for row in report["validation"]["processors"] if row["recorded_inputs"] or row["recorded_outputs"]}


def _game_of(event) -> str | None:
    return json.loads(event.data).get("game_id")


@pytest.fixture(scope="module")
def topology_archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("topology") / "archive"
    events = recording.write_archive(str(path))
    return str(path), events


@pytest.mark.parametrize("mode", ["cascade", "isolated"])
def test_topology_one_game(topology_archive, tmp_path, mode):
    """--where /game_id=g2 compares only g2's chain: all identical, exit 0, g2's recorded counts."""
    archive, events = topology_archive
    config = recording.write_config(tmp_path / "replay.toml", archive=archive, output=str(tmp_path / "out"),
                                    mode=mode)
    result = run_replay(config, where=["/game_id=g2"])
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    expected = _recorded_counts(events, lambda event: _game_of(event) == "g2")
    assert result.exit_code == 0
    assert report["totals"]["identical"] == report["totals"]["recorded_outputs"] == 4
    assert report["totals"]["replayed_outputs"] == 4
    assert report["totals"]["missing"] == report["totals"]["extra"] == report["totals"]["changed"] == 0
    assert _report_counts(report) == expected
    assert report["validation"]["silent_processors"] == []
    assert result.run_meta["where"] == ["/game_id=g2"]
    assert result.run_meta["read"]["where_selected_records"] == sum(
        1 for event in events if _game_of(event) == "g2")


def test_topology_latency_narrowed(topology_archive, tmp_path):
    """Recorded latency counts only the selected game's inputs."""
    archive, _ = topology_archive
    config = recording.write_config(tmp_path / "replay.toml", archive=archive, output=str(tmp_path / "out"))
    run_replay(config, where=["/game_id=g1"])
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    rows = {(row["phase"], row["processor"]): row for row in report["latency"]["processors"]}
    assert rows[("phase2", "box_scores")]["recorded"]["count"] == 1
    assert rows[("phase3", "orchestrator")]["recorded"]["count"] == 2


def test_topology_fan_in_partial_selection(topology_archive, tmp_path):
    """Selecting one of a fan-in's inputs: the recorded trigger came from the other, so it is left out."""
    archive, _ = topology_archive
    config = recording.write_config(tmp_path / "replay.toml", archive=archive, output=str(tmp_path / "out"))
    # From phase 3, the orchestrator's entry events are phase 2 reports; box_scores never reported last.
    result = run_replay(config, phases="3-4", where=["processor=box_scores"])
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert result.exit_code == 0
    assert _report_counts(report) == {("phase3", "orchestrator"): (3, 0)}
    assert report["totals"]["recorded_outputs"] == report["totals"]["replayed_outputs"] == 0


def test_where_selecting_nothing(topology_archive, tmp_path):
    """A --where that no entry event matches is an error naming the clause and the entry phase."""
    archive, _ = topology_archive
    config = recording.write_config(tmp_path / "replay.toml", archive=archive, output=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match=r"--where /game_id=g9 selects no entry event: no recorded input "
                                          r"of phase2 on 2024-03-09 has that value"):
        run_replay(config, where=["/game_id=g9"])
    assert not (tmp_path / "out").exists()


def test_cli_where_exit_zero(topology_archive, tmp_path, capsys):
    """`replay run --where` exits 0 when the selected game replays identically."""
    archive, _ = topology_archive
    config = recording.write_config(tmp_path / "replay.toml", archive=archive, output=str(tmp_path / "out"))
    with pytest.raises(SystemExit) as exited:
        main(["run", "--config", config, "--where", "/game_id=g3"])
    out = capsys.readouterr().out
    assert exited.value.code == 0, out
    assert "PASS" in out


# ------------------------------------------------------------------ the example NBA pipeline


@pytest.fixture(scope="module")
def nba_day(tmp_path_factory):
    """A synthetic three-game day of the example pipeline recorded into a local archive."""
    root = tmp_path_factory.mktemp("nba")
    payloads = synthetic_payloads(NBA_DATE, n_games=3, seed=0)
    run = record_production_day(archive_uri=str(root / "archive"), game_date=NBA_DATE,
                                data_root=str(root / "data"), payloads=payloads, writer_id="where-test")
    assert not run.failures
    assert not run.dropped
    events = list(ArchiveReader(str(root / "archive")).read())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(storage.DATA_ROOT_ENV, str(root / "data"))
        patch.delenv(storage.DATASET_PREFIX_ENV, raising=False)
        patch.delenv(storage.GCS_PREFIX_ENV, raising=False)
        yield root, events


def _games(events) -> list[str]:
    return sorted({game for event in events if (game := _game_of(event))})


# In isolated mode the phase 2 to 3 orchestrator gets no entry event: its inputs
# are per date, without a game_id, so its recorded trigger for the game is not compared.
@pytest.mark.parametrize(("mode", "phases", "unselected"), [
    ("cascade", "4-6", ()),
    ("isolated", "3-6", ("orchestrator_phase2_to_3",)),
])
def test_nba_one_game(nba_day, tmp_path, mode, phases, unselected):
    """One NBA game replayed with --where: exit 0, all identical, counts equal that game's recorded counts."""
    root, events = nba_day
    games = _games(events)
    assert len(games) == 3
    game = games[1]
    out = tmp_path / "out"
    result = run_replay(NBA_CONFIG, archive=str(root / "archive"), date=NBA_DATE, output=str(out), mode=mode,
                        phases=phases, where=[f"/game_id={game}"])
    report = json.loads((out / "report.json").read_text())
    selected_phases = {"4-6": ("phase4", "phase5", "phase6"), "3-6": ("phase3", "phase4", "phase5", "phase6")}
    expected = _recorded_counts(events, lambda event: event.phase in selected_phases[phases]
                                and event.processor not in unselected and _game_of(event) == game)
    totals = report["totals"]
    assert result.exit_code == 0
    assert totals["identical"] == totals["recorded_outputs"] == totals["replayed_outputs"]
    assert totals["recorded_outputs"] == sum(outputs for _, outputs in expected.values())
    assert totals["missing"] == totals["extra"] == totals["changed"] == 0
    assert _report_counts(report) == expected
    assert sum(row["inputs"] for row in result.summary) == sum(inputs for inputs, _ in expected.values())


def test_nba_summary_aligned(nba_day, tmp_path):
    """The end-of-run table keeps its columns aligned with processor names over 20 characters."""
    root, _ = nba_day
    result = run_replay(NBA_CONFIG, archive=str(root / "archive"), date=NBA_DATE, output=str(tmp_path / "out"),
                        phases="4-6")
    lines = summary_lines(result.summary)
    assert any(len(row["processor"]) > 20 for row in result.summary)
    header = lines[0]
    # Right-aligned columns end at the same offset in every line.
    for column in ("inputs", "outputs", "timeout", "late_p99_ms"):
        end = header.index(column) + len(column)
        for line in lines[1:]:
            assert line[end - 1] != " ", (column, line)
            assert end == len(line) or line[end] == " ", (column, line)
    processor_start = header.index("processor")
    for line, row in zip(lines[1:], result.summary):
        assert line[processor_start:].startswith(row["processor"] + " ")
