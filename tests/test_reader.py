"""ArchiveReader: partition selection, dedupe, tolerance, schema evolution, round trips."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
from pathlib import Path

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder._reader import (
    TRUNCATED,
    ArchiveReadError,
    ArchiveReader,
    dedupe_key,
    event_from_datum,
    read_event_file,
)
from recorder._storage import LocalStorage, join_uri
from recorder._writer import CODECS, ArchiveWriter
from schemas import Direction, RecordedEvent, load_schema


def make_event(index: int = 0, **changes) -> RecordedEvent:
    fields = dict(
        event_id=f"m-{index}", logical_date=dt.date(2024, 3, 9), phase="phase2",
        direction=Direction.INPUT, publish_time=1_710_000_000_000_000 + index,
        data=b'{"n": %d}' % index, source="sdk", record_time=1_710_000_000_500_000,
    )
    fields.update(changes)
    return RecordedEvent(**fields)


def write_archive(root: Path, events, **options) -> None:
    options.setdefault("writer_id", "t")
    options.setdefault("source", "sdk")
    with ArchiveWriter(str(root), **options) as writer:
        for event in events:
            writer.write(event)


@pytest.fixture
def three_day_archive(tmp_path):
    """Dates 9-11 March, phases phase2 and phase3, two events each."""
    events = [make_event(day * 10 + n, logical_date=dt.date(2024, 3, day), phase=phase)
              for day in (9, 10, 11) for phase in ("phase2", "phase3") for n in range(2)]
    write_archive(tmp_path, events)
    return tmp_path


def test_list_partitions_date_range(three_day_archive):
    """start/end dates are inclusive and partitions come sorted."""
    reader = ArchiveReader(str(three_day_archive))
    partitions = reader.list_partitions(start_date=dt.date(2024, 3, 10), end_date=dt.date(2024, 3, 11))
    assert [(p.date.day, p.phase) for p in partitions] == [
        (10, "phase2"), (10, "phase3"), (11, "phase2"), (11, "phase3")]


def test_list_partitions_phase_filter(three_day_archive):
    """phases= keeps only the named phases."""
    reader = ArchiveReader(str(three_day_archive))
    partitions = reader.list_partitions(phases=["phase3"])
    assert [(p.date.day, p.phase) for p in partitions] == [(9, "phase3"), (10, "phase3"), (11, "phase3")]


def test_list_partitions_ignores_foreign_folders(three_day_archive):
    """Folders that are not date=/phase= or start with _ are skipped."""
    (three_day_archive / "_staging" / "phase=x").mkdir(parents=True)
    (three_day_archive / "date=not-a-date").mkdir()
    (three_day_archive / "date=2024-03-09" / "notes").mkdir()
    assert len(ArchiveReader(str(three_day_archive)).list_partitions()) == 6


def test_start_after_end_rejected(three_day_archive):
    """A reversed range fails with both dates named."""
    with pytest.raises(ValueError, match="2024-03-11 is after end date 2024-03-09"):
        ArchiveReader(str(three_day_archive)).list_partitions(
            start_date=dt.date(2024, 3, 11), end_date=dt.date(2024, 3, 9))


def test_read_selected_dates_only(three_day_archive):
    """read() yields the events of the selected date and phase only."""
    events = list(ArchiveReader(str(three_day_archive)).read(
        start_date=dt.date(2024, 3, 10), end_date=dt.date(2024, 3, 10), phases=["phase2"]))
    assert sorted(event.event_id for event in events) == ["m-100", "m-101"]
    assert {event.logical_date for event in events} == {dt.date(2024, 3, 10)}


def test_files_below_phase_at_any_depth(tmp_path):
    """Files in subfolders of phase= belong to the partition."""
    write_archive(tmp_path / "tmp", [make_event(1)])
    (source,) = (tmp_path / "tmp").rglob("*.avro")
    target = tmp_path / "archive" / "date=2024-03-09" / "phase=phase2" / "input" / "part.avro"
    target.parent.mkdir(parents=True)
    target.write_bytes(source.read_bytes())
    assert [event.event_id for event in ArchiveReader(str(tmp_path / "archive")).read()] == ["m-1"]


def test_dedupe_removes_and_counts(tmp_path):
    """Duplicates by event id are removed per partition and counted."""
    events = [make_event(1), make_event(2), make_event(2), make_event(3),
              make_event(3, publish_time=1_710_000_000_012_000), make_event(4)]
    write_archive(tmp_path, events, max_records=4)
    reader = ArchiveReader(str(tmp_path))
    ids = [event.event_id for event in reader.read()]
    assert ids == ["m-1", "m-2", "m-3", "m-4"]
    assert reader.stats.records_read == 6
    assert reader.stats.duplicates_removed == 2
    assert reader.stats.duplicates_by_partition == {"2024-03-09/phase2": 2}


def test_dedupe_key_distinguishes_direction_and_processor(tmp_path):
    """The same id as INPUT and OUTPUT, or for two processors, is not a duplicate."""
    events = [make_event(1), make_event(1, direction=Direction.OUTPUT),
              make_event(1, processor="a"), make_event(1, processor="b")]
    write_archive(tmp_path, events)
    reader = ArchiveReader(str(tmp_path))
    assert len(list(reader.read())) == 4
    assert reader.stats.duplicates_removed == 0
    assert len({dedupe_key(event) for event in events}) == 4


def test_dedupe_off_keeps_all(tmp_path):
    """dedupe=False yields every record."""
    write_archive(tmp_path, [make_event(1), make_event(1)])
    reader = ArchiveReader(str(tmp_path), dedupe=False)
    assert len(list(reader.read())) == 2
    assert reader.stats.duplicates_removed == 0


def _cut_one_file(root: Path) -> Path:
    path = sorted(root.rglob("*.avro"))[0]
    data = path.read_bytes()
    path.chmod(0o644)
    path.write_bytes(data[: len(data) - 30])
    return path


def test_tolerant_read_reports_damage(tmp_path):
    """A truncated file is named in stats.damaged and the other files still read."""
    write_archive(tmp_path, [make_event(n) for n in range(6)], max_records=3)
    damaged_path = _cut_one_file(tmp_path)
    reader = ArchiveReader(str(tmp_path))
    events = list(reader.read())
    assert len(events) == 3
    (damaged,) = reader.stats.damaged
    assert damaged.uri.endswith(damaged_path.name)
    assert damaged.kind == TRUNCATED
    assert damaged.records_recovered == 0
    assert damaged.block == 1
    assert reader.stats.complete is False


def test_strict_read_raises_with_path(tmp_path):
    """strict=True raises ArchiveReadError naming the file."""
    write_archive(tmp_path, [make_event(n) for n in range(3)])
    damaged_path = _cut_one_file(tmp_path)
    with pytest.raises(ArchiveReadError, match="truncated") as caught:
        list(ArchiveReader(str(tmp_path), strict=True).read())
    assert str(damaged_path) in str(caught.value)


def test_writer_schema_counted(tmp_path):
    """stats.writer_schemas counts files per writer schema."""
    write_archive(tmp_path, [make_event(n) for n in range(4)], max_records=2)
    reader = ArchiveReader(str(tmp_path))
    list(reader.read())
    ((name, files),) = reader.stats.writer_schemas.items()
    assert name.startswith("pipeline_replay.v1.RecordedEvent@")
    assert files == 2


def _variant_schema(drop=(), add=()):
    schema = copy.deepcopy(load_schema())
    schema["fields"] = [field for field in schema["fields"] if field["name"] not in drop] + list(add)
    return schema


def _write_variant(path: Path, schema, datums) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as target:
        fastavro.writer(target, fastavro.parse_schema(schema), datums)


def test_older_writer_schema_gets_defaults(tmp_path):
    """A file written without later fields reads with those fields at their defaults."""
    dropped = ("content_type", "correlation_id", "causation_id", "delivery_attempt",
               "outcome", "handling_micros")
    datum = {key: value for key, value in make_event(1).to_avro().items() if key not in dropped}
    _write_variant(tmp_path / "date=2024-03-09" / "phase=phase2" / "old.avro",
                   _variant_schema(drop=dropped), [datum])
    reader = ArchiveReader(str(tmp_path))
    (event,) = list(reader.read())
    assert event.event_id == "m-1"
    assert event.delivery_attempt is None
    assert event.handling_micros is None
    assert event.publish_time == 1_710_000_000_000_001
    assert reader.stats.damaged == []


def test_newer_writer_schema_extra_field_ignored(tmp_path):
    """A file with an extra field reads as the current schema, the field dropped."""
    extra = {"name": "region", "type": "string", "default": ""}
    datum = {**make_event(2).to_avro(), "region": "us-east1"}
    _write_variant(tmp_path / "date=2024-03-09" / "phase=phase2" / "new.avro",
                   _variant_schema(add=[extra]), [datum])
    _write_variant(tmp_path / "date=2024-03-09" / "phase=phase2" / "cur.avro",
                   load_schema(), [make_event(3).to_avro()])
    reader = ArchiveReader(str(tmp_path))
    events = list(reader.read())
    assert [event.event_id for event in events] == ["m-3", "m-2"]
    assert events[1] == make_event(2)
    assert len(reader.stats.writer_schemas) == 2


def test_read_from_gcs(gcs_bucket):
    """The reader lists and reads an archive on the GCS emulator."""
    uri = f"gs://{gcs_bucket}/archive"
    with ArchiveWriter(uri, writer_id="g", source="sdk") as writer:
        for index in range(5):
            writer.write(make_event(index, phase="phase2" if index % 2 else "phase3"))
        writer.write(make_event(1, phase="phase2"))
    reader = ArchiveReader(uri)
    events = list(reader.read(phases=["phase2"]))
    assert sorted(event.event_id for event in events) == ["m-1", "m-3"]
    assert reader.stats.duplicates_removed == 1
    assert [p.uri for p in reader.list_partitions()] == [
        join_uri(uri, "date=2024-03-09", "phase=phase2"), join_uri(uri, "date=2024-03-09", "phase=phase3")]


# ------------------------------------------------------------- round trip

_text = st.text(max_size=20)
_optional_text = st.none() | _text
_micros = st.integers(min_value=-(2**63), max_value=2**63 - 1)

events_strategy = st.builds(
    RecordedEvent,
    event_id=st.text(min_size=1, max_size=30),
    logical_date=st.dates(),
    phase=st.from_regex(r"[a-z0-9][a-z0-9_-]{0,62}", fullmatch=True),
    direction=st.sampled_from(Direction),
    publish_time=_micros,
    record_time=_micros.filter(lambda value: value != 0),
    data=st.binary(max_size=300),
    source=st.sampled_from(["sdk", "push", "tap", "import", "replay"]),
    processor=_optional_text,
    topic=_optional_text,
    subscription=_optional_text,
    ordering_key=_optional_text,
    attributes=st.dictionaries(_text, _text, max_size=4),
    content_type=_optional_text,
    correlation_id=_optional_text,
    causation_id=_optional_text,
    delivery_attempt=st.none() | st.integers(min_value=-(2**31), max_value=2**31 - 1),
    outcome=_optional_text,
    handling_micros=st.none() | _micros,
)


@pytest.mark.parametrize("codec", sorted(CODECS))
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(events_strategy, min_size=1, max_size=5))
def test_round_trip_exact(tmp_path_factory, codec, events):
    """Any valid events survive ArchiveWriter -> read_event_file unchanged."""
    root = tmp_path_factory.mktemp("round-trip")
    with ArchiveWriter(str(root), writer_id="p", source="sdk", codec=codec) as writer:
        for event in events:
            writer.write(event)
    storage = LocalStorage()
    read_back = [event for path in sorted(root.rglob("*.avro"))
                 for event in read_event_file(storage, str(path), strict=True)]
    expected = sorted(events, key=lambda e: (e.logical_date, e.phase))
    assert sorted(read_back, key=lambda e: (e.logical_date, e.phase)) == expected


def test_event_from_fast_path_equals_validated():
    """The reader's fast path builds an event equal to the validated one, with proper types."""
    event = make_event(5, attributes={"a": "b"}, delivery_attempt=3)
    rebuilt = event_from_datum(event.to_avro())
    assert rebuilt == event
    assert isinstance(rebuilt.direction, Direction)
    assert type(rebuilt.logical_date) is dt.date


# ------------------------------------------------- ls / show / validate CLI


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    from replayer.cli import main

    with pytest.raises(SystemExit) as exited:
        main(args)
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


@pytest.fixture(params=["local", "gcs"])
def cli_archive(request, tmp_path):
    """An archive on local disk or the GCS emulator: 2 dates, 2 phases, inputs, outputs, one redelivery."""
    if request.param == "gcs":
        uri = f"gs://{request.getfixturevalue('gcs_bucket')}/cli"
    else:
        uri = str(tmp_path / "archive")
    events = [
        make_event(1, processor="p", attributes={"game_date": "2024-03-09"}),
        make_event(2, processor="p"),
        make_event(3, direction=Direction.OUTPUT, processor="p", causation_id="m-1"),
        make_event(4, phase="phase3", processor="q", data=b"\x00\xff not json"),
        make_event(5, logical_date=dt.date(2024, 3, 10)),
    ]
    write_archive(uri, events, writer_id="one")
    write_archive(uri, [make_event(1, processor="p", delivery_attempt=2)], writer_id="two")
    return uri


def test_cli_ls_json_counts(cli_archive, capsys):
    """`replay ls --json` lists each partition with files, bytes and deduplicated counts."""
    code, out, _ = run_cli(["ls", cli_archive, "--json"], capsys)
    assert code == 0
    document = json.loads(out)
    rows = {(row["date"], row["phase"]): row for row in document["partitions"]}
    assert sorted(rows) == [("2024-03-09", "phase2"), ("2024-03-09", "phase3"), ("2024-03-10", "phase2")]
    day = rows[("2024-03-09", "phase2")]
    assert (day["files"], day["inputs"], day["outputs"], day["events"], day["duplicates"]) == (2, 2, 1, 3, 1)
    assert day["size_bytes"] > 0
    assert day["damaged_files"] == 0
    assert rows[("2024-03-10", "phase2")]["events"] == 1
    assert document["read"]["duplicates_removed"] == 1


def test_cli_ls_date_and_phase_filter(cli_archive, capsys):
    """--date and --phase narrow the listing; the table names the partition."""
    code, out, _ = run_cli(["ls", cli_archive, "--date", "2024-03-09", "--phase", "phase3"], capsys)
    assert code == 0
    assert "phase3" in out
    assert "phase2" not in out
    assert "2024-03-10" not in out


def test_cli_show_json_lines(cli_archive, capsys):
    """`replay show` prints deduplicated events; JSON payloads decoded, others base64."""
    code, out, _ = run_cli(["show", cli_archive, "--date", "2024-03-09"], capsys)
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert sorted(line["event_id"] for line in lines) == ["m-1", "m-2", "m-3", "m-4"]
    by_id = {line["event_id"]: line for line in lines}
    assert by_id["m-1"]["data"] == {"n": 1}
    assert by_id["m-1"]["publish_time"] == "2024-03-09T16:00:00.000001Z"
    assert by_id["m-3"]["direction"] == "OUTPUT"
    assert by_id["m-3"]["causation_id"] == "m-1"
    assert base64.b64decode(by_id["m-4"]["data_base64"]) == b"\x00\xff not json"


def test_cli_show_filters_and_duplicates(cli_archive, capsys):
    """--direction, --processor and --keep-duplicates select what is printed."""
    code, out, _ = run_cli(["show", cli_archive, "--date", "2024-03-09", "--phase", "phase2",
                            "--direction", "input", "--keep-duplicates"], capsys)
    assert code == 0
    assert sorted(json.loads(line)["event_id"] for line in out.splitlines()) == ["m-1", "m-1", "m-2"]
    code, out, _ = run_cli(["show", cli_archive, "--date", "2024-03-09", "--processor", "q"], capsys)
    assert [json.loads(line)["event_id"] for line in out.splitlines()] == ["m-4"]


def test_cli_validate_json_groups(cli_archive, capsys):
    """`replay validate --json` counts records, unique events and duplicates per group."""
    code, out, _ = run_cli(["validate", cli_archive, "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["ok"] is True
    assert (result["partitions"], result["files"], result["records"]) == (3, 4, 6)
    assert (result["unique_events"], result["duplicates"]) == (5, 1)
    groups = {(g["date"], g["phase"], g["direction"], g["processor"]): g for g in result["groups"]}
    assert groups[("2024-03-09", "phase2", "INPUT", "p")] == {
        "date": "2024-03-09", "phase": "phase2", "direction": "INPUT", "processor": "p",
        "records": 3, "unique": 2, "duplicates": 1}
    assert groups[("2024-03-09", "phase2", "OUTPUT", "p")]["records"] == 1
    assert groups[("2024-03-10", "phase2", "INPUT", None)]["records"] == 1
    assert result["damaged"] == []
    assert sum(result["writer_schemas"].values()) == 4


def test_cli_validate_text_warns_duplicates(cli_archive, capsys):
    """The text report warns about duplicates and ends with archive OK."""
    code, out, _ = run_cli(["validate", cli_archive], capsys)
    assert code == 0
    assert "warning: 1 duplicate deliveries" in out
    assert out.strip().endswith("archive OK")


def test_cli_validate_no_partitions_exit_1(cli_archive, capsys):
    """A selection with no partition is reported and exits 1."""
    code, out, _ = run_cli(["validate", cli_archive, "--date", "2030-01-01"], capsys)
    assert code == 1
    assert "no partitions" in out


@pytest.mark.parametrize("args, expected", [
    (["ls", "{archive}", "--date", "2024-3-9"], "'2024-3-9' is not a date"),
    (["ls", "{archive}", "--start-date", "2024-03-10", "--end-date", "2024-03-09"], "swap them"),
    (["validate", "{missing}"], "does not exist"),
])
def test_cli_errors_one_line(tmp_path, capsys, args, expected):
    """Bad options and missing archives give one error line with exit 2 and no traceback."""
    write_archive(tmp_path / "archive", [make_event(1)])
    capsys.readouterr()  # drop the writer's log lines
    args = [arg.format(archive=tmp_path / "archive", missing=tmp_path / "missing") for arg in args]
    code, _, err = run_cli(args, capsys)
    assert code == 2
    assert err.startswith("error: ")
    assert expected in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("log_format, is_json", [("json", True), ("console", False)])
def test_cli_log_format(tmp_path, log_format, is_json):
    """Logs on standard error are JSON with a Cloud Logging severity, or readable console lines."""
    import subprocess
    import sys

    write_archive(tmp_path / "archive", [make_event(1)])
    # An empty file makes the reader log a warning.
    (tmp_path / "archive" / "date=2024-03-09" / "phase=phase2" / "empty.avro").write_bytes(b"")
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", "from replayer.cli import main; main()", "--log-format", log_format,
         "ls", str(tmp_path / "archive"), "--json"],
        capture_output=True, text=True, cwd=root, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["partitions"][0]["events"] == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert any("archive.file_damaged" in line for line in lines)
    if is_json:
        # The CLI's own one-line warning is plain text; log lines are JSON.
        records = [json.loads(line) for line in lines if not line.startswith("warning: ")]
        damaged = next(record for record in records if record["event"] == "archive.file_damaged")
        assert damaged["severity"] == "WARNING"
        assert damaged["file"].endswith("empty.avro")
    else:
        assert not any(line.startswith("{") for line in lines)
