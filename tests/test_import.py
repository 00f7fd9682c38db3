"""``replay import``: Dataflow "Pub/Sub to Avro" files, Cloud Storage subscription files, JSON lines.

Source files are written here with the writer schemas those producers use,
then imported into a local archive and read back through ``ArchiveReader``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import fastavro
import pytest

from recorder._import import ImportMapping, ImportSourceError, import_files
from recorder._reader import ArchiveReader
from replayer.cli import main
from schemas import Direction, parse_rfc3339_micros

# The record the Dataflow template writes (AvroPubsubMessageRecord):
# payload bytes, attributes, and the publish time in epoch milliseconds.
DATAFLOW_SCHEMA = {
    "type": "record", "name": "AvroPubsubMessageRecord", "namespace": "com.google.cloud.teleport.avro",
    "fields": [
        {"name": "message", "type": "bytes"},
        {"name": "attributes", "type": {"type": "map", "values": "string"}},
        {"name": "timestamp", "type": "long"},
    ],
}

# A Cloud Storage subscription with write_metadata gives subscription, message
# id and publish time their own fields and puts other properties into attributes.
GCS_METADATA_SCHEMA = {
    "type": "record", "name": "PubsubMessage",
    "fields": [
        {"name": "subscription_name", "type": "string"},
        {"name": "message_id", "type": "string"},
        {"name": "publish_time", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "attributes", "type": {"type": "map", "values": "string"}},
        {"name": "data", "type": "bytes"},
    ],
}

# Without write_metadata the file contains only the payload.
GCS_DATA_ONLY_SCHEMA = {"type": "record", "name": "PubsubMessage", "fields": [{"name": "data", "type": "bytes"}]}

BASE_MILLIS = 1_710_025_200_000  # 2024-03-09T23:00:00Z


def write_avro(path: Path, schema: dict, records: list[dict], codec: str = "null") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as target:
        fastavro.writer(target, fastavro.parse_schema(schema), records, codec=codec)
    return path


def dataflow_records(count: int, *, start: int = 0) -> list[dict]:
    return [{"message": json.dumps({"n": n}).encode(), "attributes": {"n": str(n)},
             "timestamp": BASE_MILLIS + n} for n in range(start, start + count)]


def mapping(**changes) -> ImportMapping:
    values = dict(phase="phase3", direction=Direction.INPUT, processor="analytics", topic="scores")
    values.update(changes)
    return ImportMapping(**values)


def read_archive(archive: Path, **options) -> tuple[list, ArchiveReader]:
    reader = ArchiveReader(str(archive), **options)
    return list(reader.read()), reader


# ------------------------------------------------------------ Dataflow template


def test_dataflow_file_imported(tmp_path):
    """Payload, attributes and millisecond timestamps become events with microsecond publish times."""
    source = write_avro(tmp_path / "in" / "output-00000-of-00001.avro", DATAFLOW_SCHEMA, dataflow_records(5))
    result = import_files([str(source)], archive_uri=str(tmp_path / "archive"), mapping=mapping(),
                          writer_id="imp")
    assert (result.files, result.records_read, result.imported, result.bad) == (1, 5, 5, ())
    events, _ = read_archive(tmp_path / "archive")
    assert sorted(json.loads(event.data)["n"] for event in events) == [0, 1, 2, 3, 4]
    for event in events:
        n = int(event.attributes["n"])
        assert event.publish_time == (BASE_MILLIS + n) * 1000
        assert event.source == "import"
        assert event.phase == "phase3"
        assert event.direction is Direction.INPUT
        assert event.processor == "analytics"
        assert event.topic == "scores"
        assert event.event_id.startswith("import-")
        assert event.logical_date == dt.date(2024, 3, 9)


def test_dataflow_ids_stable_across_files(tmp_path):
    """The same message in two overlapping files gets one id, so the reader keeps one copy."""
    write_avro(tmp_path / "in" / "a.avro", DATAFLOW_SCHEMA, dataflow_records(6), codec="deflate")
    write_avro(tmp_path / "in" / "b.avro", DATAFLOW_SCHEMA, dataflow_records(6, start=3))
    result = import_files([str(tmp_path / "in")], archive_uri=str(tmp_path / "archive"), mapping=mapping(),
                          writer_id="imp")
    assert result.files == 2
    assert result.imported == 12
    events, reader = read_archive(tmp_path / "archive")
    assert sorted(int(event.attributes["n"]) for event in events) == list(range(9))
    assert reader.stats.duplicates_removed == 3


def test_dataflow_reimport_adds_only_duplicates(tmp_path):
    """Importing the same file twice leaves the deduplicated archive unchanged."""
    source = write_avro(tmp_path / "in.avro", DATAFLOW_SCHEMA, dataflow_records(4))
    for writer_id in ("first", "second"):
        import_files([str(source)], archive_uri=str(tmp_path / "archive"), mapping=mapping(),
                     writer_id=writer_id)
    events, reader = read_archive(tmp_path / "archive")
    assert len(events) == 4
    assert reader.stats.records_read == 8
    assert reader.stats.duplicates_removed == 4


def test_dataflow_distinct_timestamps_keep_distinct_ids(tmp_path):
    """Equal payloads published at different milliseconds stay separate events."""
    records = [{"message": b"same", "attributes": {}, "timestamp": BASE_MILLIS + n} for n in range(3)]
    source = write_avro(tmp_path / "in.avro", DATAFLOW_SCHEMA, records)
    import_files([str(source)], archive_uri=str(tmp_path / "archive"), mapping=mapping(), writer_id="imp")
    events, _ = read_archive(tmp_path / "archive")
    assert len({event.event_id for event in events}) == 3


def test_dataflow_logical_date_from_time_zone(tmp_path):
    """23:00 UTC on March 9 is March 9 in New York, and 05:00 UTC on March 10 is midnight March 10."""
    from schemas import DateRule

    records = [{"message": b"{}", "attributes": {}, "timestamp": BASE_MILLIS},
               {"message": b"{}", "attributes": {}, "timestamp": BASE_MILLIS + 6 * 3600 * 1000}]
    source = write_avro(tmp_path / "in.avro", DATAFLOW_SCHEMA, records)
    import_files([str(source)], archive_uri=str(tmp_path / "archive"), writer_id="imp",
                 mapping=mapping(date_rule=DateRule(time_zone="America/New_York")))
    events, _ = read_archive(tmp_path / "archive")
    assert sorted(event.logical_date for event in events) == [dt.date(2024, 3, 9), dt.date(2024, 3, 10)]


# --------------------------------------------------- Cloud Storage subscription


def test_gcs_subscription_with_metadata(tmp_path):
    """Message ids, microsecond publish times, attributes and the subscription name are kept."""
    publish = parse_rfc3339_micros("2024-03-09T23:59:59.999999Z")
    records = [{"subscription_name": "projects/p/subscriptions/scores-archive", "message_id": f"91{n}",
                "publish_time": dt.datetime(2024, 3, 9, 23, 59, 59, 999999, tzinfo=dt.timezone.utc),
                "attributes": {"game_date": "2024-03-09", "n": str(n)}, "data": b'{"n": %d}' % n}
               for n in range(3)]
    source = write_avro(tmp_path / "sub" / "2024-03-09T23:59:59+00:00_abcd.avro", GCS_METADATA_SCHEMA, records,
                        codec="snappy")
    result = import_files([str(tmp_path / "sub")], archive_uri=str(tmp_path / "archive"),
                          mapping=mapping(subscription=None), writer_id="imp")
    assert result.bad == ()
    events, _ = read_archive(tmp_path / "archive")
    assert sorted(event.event_id for event in events) == ["910", "911", "912"]
    for event in events:
        assert event.publish_time == publish
        assert event.subscription == "scores-archive"
        assert event.attributes["game_date"] == "2024-03-09"
        assert event.data == b'{"n": %s}' % event.attributes["n"].encode()
    assert source.exists()


def test_data_only_needs_publish_time(tmp_path):
    """Data-only records are skipped and named unless a default publish time is given."""
    source = write_avro(tmp_path / "plain.avro", GCS_DATA_ONLY_SCHEMA, [{"data": b"a"}, {"data": b"b"}])
    result = import_files([str(source)], archive_uri=str(tmp_path / "archive"), mapping=mapping(),
                          writer_id="imp")
    assert result.imported == 0
    assert [(bad.file, bad.record) for bad in result.bad] == [(str(source), 1), (str(source), 2)]
    assert all("publish time" in bad.reason for bad in result.bad)


def test_data_only_records_imported(tmp_path):
    """With a default publish time, data-only records get ids from file name, record number and data."""
    default = parse_rfc3339_micros("2024-03-09T12:00:00Z")
    source = write_avro(tmp_path / "plain.avro", GCS_DATA_ONLY_SCHEMA,
                        [{"data": b"same"}, {"data": b"same"}, {"data": b"other"}])
    for writer_id in ("first", "again"):
        import_files([str(source)], archive_uri=str(tmp_path / "archive"), mapping=mapping(),
                     writer_id=writer_id, default_publish_time=default)
    events, reader = read_archive(tmp_path / "archive")
    assert [event.data for event in events] == [b"same", b"same", b"other"]
    assert all(event.publish_time == default for event in events)
    assert reader.stats.duplicates_removed == 3


def test_unknown_avro_schema_reported(tmp_path):
    """An Avro file of no known format is reported with the fields it has."""
    schema = {"type": "record", "name": "Other", "fields": [{"name": "x", "type": "int"}]}
    source = write_avro(tmp_path / "other.avro", schema, [{"x": 1}])
    result = import_files([str(source)], archive_uri=str(tmp_path / "archive"), mapping=mapping(),
                          writer_id="imp")
    (bad,) = result.bad
    assert bad.file == str(source)
    assert "['x']" in bad.reason


# ----------------------------------------------------------------- JSON lines


def test_jsonl_data_encodings(tmp_path):
    """Base64 strings are decoded, objects stored as compact JSON, plain text kept as UTF-8."""
    lines = [
        {"message_id": "j-1", "publish_time": "2024-03-09T18:00:00Z",
         "data": base64.b64encode(b'{"a": 1}').decode(), "attributes": {"k": "v"}, "ordering_key": "g-1"},
        {"message_id": "j-2", "publish_time": "2024-03-09T18:00:01.5Z", "data": {"b": [1, 2]}},
        {"message_id": "j-3", "publish_time": "2024-03-09T18:00:02Z", "data": "plain text!"},
    ]
    source = tmp_path / "messages.jsonl"
    source.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    result = import_files([str(source)], archive_uri=str(tmp_path / "archive"), mapping=mapping(),
                          format="jsonl", writer_id="imp")
    assert result.bad == ()
    events = {event.event_id: event for event in read_archive(tmp_path / "archive")[0]}
    assert events["j-1"].data == b'{"a": 1}'
    assert events["j-1"].attributes == {"k": "v"}
    assert events["j-1"].ordering_key == "g-1"
    assert events["j-2"].data == b'{"b":[1,2]}'
    assert events["j-2"].publish_time == parse_rfc3339_micros("2024-03-09T18:00:01.500000Z")
    assert events["j-3"].data == b"plain text!"


def test_jsonl_bad_lines_named(tmp_path):
    """Lines that are not JSON or lack a publish time are skipped with their line numbers."""
    source = tmp_path / "messages.jsonl"
    source.write_text('{"message_id": "ok", "publish_time": "2024-03-09T18:00:00Z", "data": "eA=="}\n'
                      "not json\n"
                      "\n"
                      '{"message_id": "late", "data": "eA=="}\n')
    result = import_files([str(source)], archive_uri=str(tmp_path / "archive"), mapping=mapping(),
                          format="jsonl", writer_id="imp")
    assert result.imported == 1
    assert [bad.record for bad in result.bad] == [2, 4]
    assert "not JSON" in result.bad[0].reason
    assert "publish_time" in result.bad[1].reason


def test_missing_source_rejected(tmp_path):
    """A source path with no files raises naming the path."""
    with pytest.raises(ImportSourceError, match="nothing-here"):
        import_files([str(tmp_path / "nothing-here")], archive_uri=str(tmp_path / "archive"),
                     mapping=mapping(), writer_id="imp")


# ------------------------------------------------------------------------ CLI


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(args)
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


# One valid JSON-lines message; "eA==" is base64 for b"x".
JSONL_MESSAGE = '{"message_id": "a", "publish_time": "2024-03-09T18:00:00Z", "data": "eA=="}\n'


def run_jsonl_import(source, tmp_path, capsys, *options: str) -> tuple[int, str, str]:
    """Run `replay import` on a JSON-lines file as phase2 INPUT, with extra CLI options."""
    return run_cli(["import", str(source), "--archive", str(tmp_path / "archive"), "--format", "jsonl",
                    "--phase", "phase2", "--direction", "INPUT", *options], capsys)


def test_cli_import_auto_detects_formats(tmp_path, capsys):
    """`replay import --json` reads Dataflow and subscription files from one folder."""
    write_avro(tmp_path / "in" / "dataflow.avro", DATAFLOW_SCHEMA, dataflow_records(3))
    write_avro(tmp_path / "in" / "sub.avro", GCS_METADATA_SCHEMA, [{
        "subscription_name": "projects/p/subscriptions/s-archive", "message_id": "77",
        "publish_time": dt.datetime(2024, 3, 9, 20, tzinfo=dt.timezone.utc), "attributes": {}, "data": b"{}"}])
    code, out, _ = run_cli(["import", str(tmp_path / "in"), "--archive", str(tmp_path / "archive"),
                            "--phase", "phase2", "--direction", "output", "--writer-id", "cli", "--json"],
                           capsys)
    assert code == 0
    result = json.loads(out)
    assert (result["files"], result["imported"], result["bad"]) == (2, 4, [])
    events, _ = read_archive(tmp_path / "archive")
    assert len(events) == 4
    assert all(event.direction is Direction.OUTPUT for event in events)


def test_cli_import_skipped_exit_1(tmp_path, capsys):
    """Skipped records make the exit status 1 and are listed with file and line."""
    source = tmp_path / "m.jsonl"
    source.write_text(JSONL_MESSAGE + "broken\n")
    code, out, err = run_jsonl_import(source, tmp_path, capsys, "--writer-id", "cli")
    assert code == 1
    assert "imported 1 of 2 records" in out
    assert f"skipped {source} record 2" in err


def test_cli_import_bad_phase_one_line(tmp_path, capsys):
    """An invalid phase is one error line naming the value, with no traceback."""
    source = write_avro(tmp_path / "in.avro", DATAFLOW_SCHEMA, dataflow_records(1))
    code, _, err = run_cli(["import", str(source), "--archive", str(tmp_path / "archive"),
                            "--phase", "Phase 3", "--direction", "INPUT"], capsys)
    assert code == 2
    assert "'Phase 3'" in err
    assert "Traceback" not in err


def test_jsonl_attempt_out_of_range_skipped(tmp_path):
    """A delivery_attempt outside the Avro int range skips only that line, named with file and line."""
    source = tmp_path / "messages.jsonl"
    lines = [{"message_id": name, "publish_time": "2024-03-09T18:00:00Z", "data": {"n": 1}}
             for name in ("a", "b", "c")]
    lines[1]["delivery_attempt"] = 2**40
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = import_files([str(source)], archive_uri=str(tmp_path / "archive"), mapping=mapping(),
                          format="jsonl", writer_id="imp")
    assert result.imported == 2
    assert [(bad.file, bad.record) for bad in result.bad] == [(str(source), 2)]
    assert "delivery_attempt" in result.bad[0].reason
    events, _ = read_archive(tmp_path / "archive")
    assert sorted(event.event_id for event in events) == ["a", "c"]


def test_jsonl_on_avro_reported_once(tmp_path):
    """An Avro file imported as JSON lines is one bad record saying it is Avro, not one per line."""
    source = write_avro(tmp_path / "in.avro", DATAFLOW_SCHEMA, dataflow_records(50))
    result = import_files([str(source)], archive_uri=str(tmp_path / "archive"), mapping=mapping(),
                          format="jsonl", writer_id="imp")
    assert result.imported == 0
    assert len(result.bad) == 1
    assert "Avro" in result.bad[0].reason


def test_jsonl_on_binary_reported_once(tmp_path):
    """A binary file imported as JSON lines is one bad record saying it is binary."""
    source = tmp_path / "blob.jsonl"
    source.write_bytes(b"\xff\xfe\x00garbage\n" * 20)
    result = import_files([str(source)], archive_uri=str(tmp_path / "archive"), mapping=mapping(),
                          format="jsonl", writer_id="imp")
    assert len(result.bad) == 1
    assert "binary" in result.bad[0].reason


def test_cli_import_unknown_codec_one_line(tmp_path, capsys):
    """--codec lzma is one error line naming the value and the valid codecs, exit status 2."""
    source = tmp_path / "m.jsonl"
    source.write_text(JSONL_MESSAGE)
    code, _, err = run_jsonl_import(source, tmp_path, capsys, "--codec", "lzma")
    assert code == 2
    assert "'lzma'" in err
    assert "zstandard" in err
    assert "unexpected" not in err
    assert len(err.strip().splitlines()) == 1
