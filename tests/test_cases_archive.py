"""Archive reader against the shared failing cases and their whole kind of fault.

01: every Avro codec, an unknown codec, a missing codec library.
03: files cut short at every offset (header, block, sync marker), corrupt blocks.
05: one day written with two writer schemas.
10: redelivered messages recorded twice.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import subprocess
import sys
from pathlib import Path

import fastavro
import pytest

from recorder._reader import (
    BAD_SYNC,
    CORRUPT_BLOCK,
    EMPTY,
    MISSING_CODEC_LIBRARY,
    NOT_AVRO,
    SCHEMA_MISMATCH,
    TRUNCATED,
    UNKNOWN_CODEC,
    ArchiveReadError,
    ArchiveReader,
    read_datums,
    read_event_file,
)
from recorder._storage import LocalStorage
from recorder._writer import ArchiveWriter
from schemas import RECORDED_EVENT_SCHEMA, Direction, RecordedEvent, load_schema, parse_rfc3339_micros

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STORAGE = LocalStorage()
SYNC = b"0123456789abcdef"


def read_all(path: Path, **options):
    damaged = []
    schemas = []
    records = list(read_datums(STORAGE, str(path), on_damage=damaged.append,
                               on_writer_schema=schemas.append, **options))
    return records, damaged, schemas


# ------------------------------------------------------------------ case 01


@pytest.fixture(scope="module")
def weather(cases_dir):
    folder = cases_dir / "01-avro-codec-interop"
    expected = [json.loads(line) for line in (folder / "weather.json").read_text().splitlines() if line]
    return folder, expected


@pytest.mark.parametrize("name, codec", [
    ("weather.avro", "null"), ("weather-deflate.avro", "deflate"),
    ("weather-snappy.avro", "snappy"), ("weather-zstd.avro", "zstandard"),
])
def test_case01_codec_gives_expected_records(weather, name, codec):
    """Each interop codec file yields the five weather.json records in order."""
    folder, expected = weather
    with open(folder / name, "rb") as source:
        assert fastavro.reader(source).codec == codec
    records, damaged, _ = read_all(folder / name)
    assert records == expected
    assert damaged == []


def test_case01_sorted_file_same_multiset(weather):
    """weather-sorted.avro contains the same five records in another order."""
    folder, expected = weather
    records, damaged, _ = read_all(folder / "weather-sorted.avro")
    assert len(records) == 5
    assert records != expected
    key = lambda record: json.dumps(record, sort_keys=True)  # noqa: E731
    assert sorted(records, key=key) == sorted(expected, key=key)
    assert damaged == []


def test_case01_five_distinct_records(weather):
    """All five readable files together give 25 records, 5 distinct."""
    folder, _ = weather
    names = ["weather.avro", "weather-deflate.avro", "weather-snappy.avro",
             "weather-zstd.avro", "weather-sorted.avro"]
    records = [record for name in names for record in read_all(folder / name)[0]]
    assert len(records) == 25
    assert len({json.dumps(record, sort_keys=True) for record in records}) == 5


def test_case01_lzo_tolerant_names_codec(weather):
    """weather-lzo.avro yields no records and is reported with the codec 'lzo'."""
    folder, _ = weather
    records, damaged, _ = read_all(folder / "weather-lzo.avro")
    assert records == []
    (report,) = damaged
    assert report.kind == UNKNOWN_CODEC
    assert report.uri == str(folder / "weather-lzo.avro")
    assert "'lzo'" in report.reason
    assert report.records_recovered == 0


def test_case01_lzo_strict_error(weather):
    """In strict mode the error names the file and the codec."""
    folder, _ = weather
    with pytest.raises(ArchiveReadError) as caught:
        list(read_datums(STORAGE, str(folder / "weather-lzo.avro"), strict=True))
    assert "weather-lzo.avro" in str(caught.value)
    assert "'lzo'" in str(caught.value)


def test_case01_lzo_not_counted_in_partition(weather, tmp_path):
    """In a partition, the lzo file adds no records and is the one damaged file."""
    folder, _ = weather
    partition = tmp_path / "date=1950-01-01" / "phase=weather"
    partition.mkdir(parents=True)
    for name in ("weather.avro", "weather-lzo.avro"):
        (partition / name).write_bytes((folder / name).read_bytes())
    reader = ArchiveReader(str(tmp_path))
    assert list(reader.read()) == []  # test.Weather is not a RecordedEvent
    kinds = sorted(report.kind for report in reader.stats.damaged)
    assert kinds == [SCHEMA_MISMATCH, UNKNOWN_CODEC]
    assert reader.stats.records_read == 0


def test_case01_missing_codec_library(weather):
    """Without cramjam, the snappy file is reported naming the codec, the library and the file."""
    folder, _ = weather
    script = (
        "import sys; sys.modules['cramjam'] = None\n"
        "from recorder._reader import read_datums\n"
        "from recorder._storage import LocalStorage\n"
        "damaged = []\n"
        f"records = list(read_datums(LocalStorage(), {str(folder / 'weather-snappy.avro')!r}, "
        "on_damage=damaged.append))\n"
        "import json; print(json.dumps({'records': len(records), **damaged[0].to_dict()}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=PROJECT_ROOT, timeout=60)
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["records"] == 0
    assert report["kind"] == MISSING_CODEC_LIBRARY
    assert report["uri"].endswith("weather-snappy.avro")
    assert "'snappy'" in report["reason"]
    assert "cramjam" in report["reason"]


# ------------------------------------------------------------------ case 03


@pytest.fixture(scope="module")
def truncated(cases_dir):
    return cases_dir / "03-truncated-archive"


def test_case03_full_file(truncated):
    """full.avro gives 12 records and no damage."""
    records, damaged, _ = read_all(truncated / "full.avro")
    assert [record["message_id"] for record in records] == [f"9100000000{n:02d}" for n in range(12)]
    assert damaged == []


def test_case03_cut_mid_block(truncated):
    """trunc_mid_block.avro keeps 8 records and names block 3 as truncated."""
    records, damaged, _ = read_all(truncated / "trunc_mid_block.avro")
    assert [record["message_id"] for record in records] == [f"9100000000{n:02d}" for n in range(8)]
    (report,) = damaged
    assert report.kind == TRUNCATED
    assert report.block == 3
    assert report.records_recovered == 8
    assert "block 3" in report.reason
    assert report.offset_bytes == 715


def test_case03_missing_sync_keeps_last_block(truncated):
    """trunc_missing_sync.avro keeps all 12 records and is still flagged."""
    records, damaged, _ = read_all(truncated / "trunc_missing_sync.avro")
    assert len(records) == 12
    (report,) = damaged
    assert report.kind == BAD_SYNC
    assert report.block == 3
    assert report.records_recovered == 12


@pytest.mark.parametrize("name", ["trunc_mid_block.avro", "trunc_missing_sync.avro"])
def test_case03_strict_names_path(truncated, name):
    """strict=True raises with the file path in the message."""
    with pytest.raises(ArchiveReadError) as caught:
        list(read_datums(STORAGE, str(truncated / name), strict=True))
    assert str(truncated / name) in str(caught.value)


def _event(index: int) -> RecordedEvent:
    return RecordedEvent(
        event_id=f"e-{index}", logical_date=dt.date(2024, 3, 9), phase="phase3",
        direction=Direction.INPUT, publish_time=1_710_000_000_000_000 + index * 5_000_000,
        data=json.dumps({"seq": index, "game_id": "g-1001"}).encode(), source="sdk",
        record_time=1_710_000_000_000_001, processor="p", attributes={"k": "v"},
    )


def _three_block_file(codec: str) -> tuple[bytes, int, list[tuple[int, int]]]:
    """Return (file bytes, header end, [(block start, block data end)] for 3 blocks of 4)."""
    buffer = io.BytesIO()
    writer = fastavro.write.Writer(buffer, RECORDED_EVENT_SCHEMA, codec=codec, sync_marker=SYNC)
    for index in range(12):
        writer.write(_event(index).to_avro())
        if index % 4 == 3:
            writer.flush()
    data = buffer.getvalue()
    sync_ends = [i + 16 for i in range(len(data)) if data[i:i + 16] == SYNC]
    assert len(sync_ends) == 4
    blocks = [(sync_ends[k], sync_ends[k + 1] - 16) for k in range(3)]
    return data, sync_ends[0], blocks


@pytest.mark.parametrize("codec", ["null", "deflate", "snappy", "zstandard"])
def test_case03_cut_at_every_offset(tmp_path, codec):
    """Cut anywhere: nothing escapes, complete blocks are kept, the damage is located."""
    data, header_end, blocks = _three_block_file(codec)
    path = tmp_path / "cut.avro"
    for cut in range(len(data) + 1):
        path.write_bytes(data[:cut])
        damaged = []
        events = list(read_event_file(STORAGE, str(path), on_damage=damaged.append))
        # fastavro reads a snappy block's 4-byte CRC trailer without checking
        # it, so a cut inside the trailer still yields that block's records.
        trailer = 4 if codec == "snappy" else 0
        complete_blocks = sum(1 for _, data_end in blocks if data_end - trailer <= cut)
        assert len(events) == 4 * complete_blocks, cut
        assert events == [_event(n) for n in range(len(events))], cut
        at_boundary = cut == header_end or any(cut == data_end + 16 for _, data_end in blocks)
        if at_boundary:
            assert damaged == [], cut
            continue
        (report,) = damaged
        assert report.records_recovered == len(events), cut
        if cut == 0:
            assert report.kind == EMPTY
        elif cut < header_end:
            assert report.kind == TRUNCATED, (cut, report)
            assert report.block is None, (cut, report)
        else:
            block = next(k for k, (start, data_end) in enumerate(blocks, 1) if cut < data_end + 16)
            start, data_end = blocks[block - 1]
            assert report.block == block, (cut, report)
            assert report.kind == (TRUNCATED if cut < data_end else BAD_SYNC), (cut, report)


@pytest.mark.parametrize("codec", ["null", "deflate", "snappy", "zstandard"])
def test_case03_strict_cut_raises(tmp_path, codec):
    """In strict mode every damaging cut raises ArchiveReadError, never a library error."""
    data, header_end, blocks = _three_block_file(codec)
    path = tmp_path / "cut.avro"
    offsets = [0, header_end // 2, header_end + 1] + [
        point for start, data_end in blocks for point in (start + 1, (start + data_end) // 2, data_end + 8)]
    for cut in offsets:
        path.write_bytes(data[:cut])
        with pytest.raises(ArchiveReadError, match=str(path)):
            list(read_event_file(STORAGE, str(path), strict=True))


def test_case03_corrupt_sync_marker_mid_file(tmp_path):
    """A wrong sync marker after block 1 keeps block 1 and names the marker."""
    data, _, blocks = _three_block_file("deflate")
    corrupted = bytearray(data)
    corrupted[blocks[0][1] + 3] ^= 0xFF
    path = tmp_path / "sync.avro"
    path.write_bytes(bytes(corrupted))
    damaged = []
    events = list(read_event_file(STORAGE, str(path), on_damage=damaged.append))
    assert len(events) == 4
    (report,) = damaged
    assert (report.kind, report.block, report.offset_bytes) == (BAD_SYNC, 1, blocks[0][1])


def test_case03_corrupt_block_payload(tmp_path):
    """A block whose record count exceeds its bytes is named as corrupt block 2."""
    data, _, blocks = _three_block_file("null")
    corrupted = bytearray(data)
    start, _ = blocks[1]
    assert corrupted[start] == 8  # zig-zag varint of 4 records
    corrupted[start] = 10  # claims 5 records
    path = tmp_path / "corrupt.avro"
    path.write_bytes(bytes(corrupted))
    damaged = []
    events = list(read_event_file(STORAGE, str(path), on_damage=damaged.append))
    assert events == [_event(n) for n in range(8)]
    (report,) = damaged
    assert (report.kind, report.block, report.offset_bytes) == (CORRUPT_BLOCK, 2, start)
    assert report.records_recovered == 8


def test_case03_non_avro_file(tmp_path):
    """A JSON file in a partition is reported as not an Avro file."""
    path = tmp_path / "notes.avro"
    path.write_text('{"hello": "world"}')
    damaged = []
    assert list(read_event_file(STORAGE, str(path), on_damage=damaged.append)) == []
    assert damaged[0].kind == NOT_AVRO


# ------------------------------------------------------------------ case 05


@pytest.fixture(scope="module")
def evolution(cases_dir):
    folder = cases_dir / "05-schema-evolution-mixed-day"
    files = sorted((folder / "archive").rglob("*.avro"))
    return folder, files


def test_case05_uniform_records_with_defaults(evolution):
    """Both writer versions read through reader_v2.avsc into one shape with defaults."""
    folder, files = evolution
    reader_schema = json.loads((folder / "reader_v2.avsc").read_text())
    records = [record for path in files for record in read_all(path, reader_schema=reader_schema)[0]]
    assert [(r["message_id"], r["ordering_key"], r["delivery_attempt"]) for r in records] == [
        ("930000000001", None, 1), ("930000000002", None, 1),
        ("930000000003", "cust-42", 1), ("930000000004", None, 3)]
    assert all(set(record) == set(records[0]) for record in records)


def test_case05_two_writer_schemas(evolution):
    """The day shows two writer schema fingerprints."""
    _, files = evolution
    schemas = [schema for path in files for schema in read_all(path)[2]]
    assert len(schemas) == 2
    assert len(set(schemas)) == 2


def test_case05_nodefault_names_file_and_field(evolution):
    """Without a default, the v1 file fails naming the file and delivery_attempt; v2 reads."""
    folder, files = evolution
    reader_schema = json.loads((folder / "reader_v2_nodefault.avsc").read_text())
    v1, v2 = files
    with pytest.raises(ArchiveReadError) as caught:
        list(read_datums(STORAGE, str(v1), reader_schema=reader_schema, strict=True))
    assert str(v1) in str(caught.value)
    assert "delivery_attempt" in str(caught.value)
    records, damaged, _ = read_all(v1, reader_schema=reader_schema)
    assert records == []
    assert damaged[0].kind == SCHEMA_MISMATCH
    assert "delivery_attempt" in damaged[0].reason
    assert len(read_all(v2, reader_schema=reader_schema)[0]) == 2


def test_case05_own_schema_mixed_day(tmp_path):
    """Older, current and newer RecordedEvent writer schemas in one partition read uniformly."""
    partition = tmp_path / "date=2024-03-09" / "phase=phase3"
    partition.mkdir(parents=True)
    current = load_schema()
    older = copy.deepcopy(current)
    older["fields"] = [f for f in older["fields"] if f["name"] not in ("outcome", "handling_micros")]
    newer = copy.deepcopy(current)
    newer["fields"].append({"name": "region", "type": ["null", "string"], "default": None})
    for name, schema, index in (("a-old.avro", older, 1), ("b-cur.avro", current, 2), ("c-new.avro", newer, 3)):
        datum = {**_event(index).to_avro(), "region": "eu"}
        with open(partition / name, "wb") as target:
            fastavro.writer(target, fastavro.parse_schema(schema), [datum])
    reader = ArchiveReader(str(tmp_path))
    events = list(reader.read())
    assert events == [_event(1), _event(2), _event(3)]
    assert len(reader.stats.writer_schemas) == 3
    assert reader.stats.damaged == []


# ------------------------------------------------------------------ case 10


def _import_case10(cases_dir: Path, archive: Path) -> None:
    """Map case 10's ArchivedMessage files to RecordedEvents and write them with ArchiveWriter."""
    base = cases_dir / "10-redelivery-duplicates" / "archive" / "date=2024-03-09" / "phase=score"
    with ArchiveWriter(str(archive), writer_id="case10", source="import") as writer:
        for folder, direction in (("input", Direction.INPUT), ("output", Direction.OUTPUT)):
            for datum in read_datums(STORAGE, str(base / folder / "part-0000.avro"), strict=True):
                writer.write(RecordedEvent(
                    event_id=datum["message_id"], logical_date=dt.date(2024, 3, 9), phase="score",
                    direction=direction, processor="score", publish_time=datum["publish_time"],
                    record_time=datum["publish_time"], data=datum["data"],
                    attributes=datum["attributes"], source="import",
                    causation_id=datum["attributes"].get("source_message_id"),
                ))


def test_case10_input_duplicates_removed(cases_dir, tmp_path):
    """Inputs: 6 records, 4 unique ids, 2 duplicates; m-3 keeps its first publish time."""
    _import_case10(cases_dir, tmp_path)
    reader = ArchiveReader(str(tmp_path))
    events = list(reader.read())
    inputs = [event for event in events if event.direction is Direction.INPUT]
    assert [event.event_id for event in inputs] == ["m-1", "m-2", "m-3", "m-4"]
    assert reader.stats.records_read == 11
    assert reader.stats.duplicates_removed == 2
    m3 = next(event for event in inputs if event.event_id == "m-3")
    assert m3.publish_time == parse_rfc3339_micros("2024-03-09T18:00:02.500000Z")


def test_case10_output_ids_all_distinct(cases_dir, tmp_path):
    """Outputs have 5 distinct ids; o-2b is a content duplicate the diff reports, not the reader."""
    _import_case10(cases_dir, tmp_path)
    outputs = [event for event in ArchiveReader(str(tmp_path)).read() if event.direction is Direction.OUTPUT]
    assert [event.event_id for event in outputs] == ["o-1", "o-2", "o-2b", "o-3", "o-4"]
    assert outputs[1].data == outputs[2].data
    assert outputs[1].causation_id == outputs[2].causation_id == "m-2"


# ------------------------------------------- every damage kind through the CLI


def _damaged_partition_files(cases_dir: Path) -> dict[str, tuple[bytes, str | None, int, int | None]]:
    """Return name -> (file bytes, damage kind or None, records read from it, damaged block)."""
    data, _, blocks = _three_block_file("deflate")
    bad_sync = bytearray(data)
    bad_sync[blocks[0][1] + 3] ^= 0xFF
    corrupt = bytearray(_three_block_file("null")[0])
    null_blocks = _three_block_file("null")[2]
    corrupt[null_blocks[1][0]] = 10  # block 2 claims 5 records but holds 4
    weather = cases_dir / "01-avro-codec-interop"
    return {
        "a-complete.avro": (data, None, 12, None),
        "b-cut-mid-block.avro": (data[:blocks[1][0] + 9], TRUNCATED, 4, 2),
        "c-bad-sync.avro": (bytes(bad_sync), BAD_SYNC, 4, 1),
        "d-corrupt-block.avro": (bytes(corrupt), CORRUPT_BLOCK, 8, 2),
        "e-empty.avro": (b"", EMPTY, 0, None),
        "f-notes.avro": (b'{"hello": "world"}', NOT_AVRO, 0, None),
        "g-weather-lzo.avro": ((weather / "weather-lzo.avro").read_bytes(), UNKNOWN_CODEC, 0, None),
        "h-weather.avro": ((weather / "weather.avro").read_bytes(), SCHEMA_MISMATCH, 0, None),
    }


@pytest.fixture(params=["local", "gcs"])
def damaged_archive(request, tmp_path, cases_dir):
    """One partition holding a complete file and one file of every damage kind, locally or on GCS."""
    from recorder._storage import join_uri, open_storage

    if request.param == "gcs":
        archive = f"gs://{request.getfixturevalue('gcs_bucket')}/damaged"
    else:
        archive = str(tmp_path / "archive")
        (tmp_path / "archive").mkdir()
    storage = open_storage(archive)
    files = _damaged_partition_files(cases_dir)
    uris = {}
    for name, (content, *_rest) in files.items():
        uris[name] = join_uri(archive, "date=2024-03-09", "phase=phase3", name)
        storage.write_new(uris[name], content)
    return archive, files, uris


def test_validate_cli_names_every_damage_kind(damaged_archive, capsys):
    """`replay validate --json` names each damaged file with its kind, block and records recovered."""
    from replayer.cli import main

    archive, files, uris = damaged_archive
    with pytest.raises(SystemExit) as exited:
        main(["validate", archive, "--json"])
    assert exited.value.code == 1
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is False
    reports = {report["uri"]: report for report in result["damaged"]}
    damaged_names = sorted(name for name, (_, kind, _, _) in files.items() if kind)
    assert sorted(reports) == sorted(uris[name] for name in damaged_names)
    for name in damaged_names:
        _, kind, records, block = files[name]
        report = reports[uris[name]]
        assert report["kind"] == kind, name
        assert report["records_recovered"] == records, name
        assert report["block"] == block, name
    # Every readable record is counted; the same 12 ids recur in the damaged copies.
    assert result["records"] == 12 + 4 + 4 + 8
    assert result["unique_events"] == 12
    assert result["duplicates"] == 16


def test_validate_cli_text_lists_damage(damaged_archive, capsys):
    """The text report has one DAMAGED line per damaged file and ends INCOMPLETE."""
    from replayer.cli import main

    archive, files, uris = damaged_archive
    with pytest.raises(SystemExit) as exited:
        main(["validate", archive])
    assert exited.value.code == 1
    out = capsys.readouterr().out
    damaged_lines = [line for line in out.splitlines() if line.startswith("DAMAGED ")]
    assert len(damaged_lines) == 7
    for name, (_, kind, records, _) in files.items():
        if kind:
            (line,) = [line for line in damaged_lines if line.startswith(f"DAMAGED {uris[name]}:")]
            assert line.endswith(f"{records} records recovered"), line
    assert out.strip().endswith("archive INCOMPLETE: 7 damaged files")


def test_ls_cli_counts_recovered_records(damaged_archive, capsys):
    """`replay ls --json` counts only readable records and the damaged files of the partition."""
    from replayer.cli import main

    archive, _, _ = damaged_archive
    with pytest.raises(SystemExit) as exited:
        main(["ls", archive, "--json"])
    assert exited.value.code == 0
    captured = capsys.readouterr()
    (row,) = json.loads(captured.out)["partitions"]
    assert (row["files"], row["events"], row["duplicates"], row["damaged_files"]) == (8, 12, 16, 7)
    assert captured.err.count("warning: skipped damage in ") == 7


def test_validate_strict_names_damaged_file(damaged_archive, capsys):
    """With --strict the first damaged file stops validation with one error line naming it."""
    from replayer.cli import main

    archive, _, uris = damaged_archive
    with pytest.raises(SystemExit) as exited:
        main(["validate", archive, "--strict"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ")
    assert uris["b-cut-mid-block.avro"] in err


# ------------------------------------------------------- validate: layout findings


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    from replayer.cli import main

    with pytest.raises(SystemExit) as exited:
        main(args)
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def _write_day(archive: Path, day: dt.date, phase: str = "phase2", count: int = 2) -> None:
    with ArchiveWriter(str(archive), writer_id="layout", source="sdk") as writer:
        for index in range(count):
            writer.write(RecordedEvent(
                event_id=f"{day.isoformat()}-{index}", logical_date=day, phase=phase,
                direction=Direction.INPUT, processor="proc", publish_time=1_705_312_800_000_000,
                data=b"{}", source="sdk"))


def test_validate_reports_misplaced_records(tmp_path, capsys):
    """Records whose logical date differs from their date= folder fail validation, named by partition."""
    _write_day(tmp_path, dt.date(2024, 1, 15))
    _write_day(tmp_path, dt.date(2024, 1, 16))
    moved_from = tmp_path / "date=2024-01-16" / "phase=phase2"
    moved_to = tmp_path / "date=2024-01-15" / "phase=phase2"
    for path in moved_from.iterdir():
        path.rename(moved_to / ("moved-" + path.name))
    code, out, _ = run_cli(["validate", str(tmp_path), "--json"], capsys)
    result = json.loads(out)
    assert code == 1
    assert result["ok"] is False
    (entry,) = result["misplaced"]
    assert entry["partition"] == "2024-01-15/phase2"
    assert entry["records"] == 2
    assert entry["logical_dates"] == ["2024-01-16"]
    code, out, _ = run_cli(["validate", str(tmp_path)], capsys)
    assert "MISPLACED 2 records in partition 2024-01-15/phase2" in out


def test_validate_warns_about_skipped_folders(tmp_path, capsys):
    """Folders the reader skips and phase folders with invalid names are listed as warnings."""
    _write_day(tmp_path, dt.date(2024, 1, 15))
    for folder in ("notadate", "date=2024-13-45/phase=phase2", "date=2024-01-15/garbage",
                   "date=2024-01-15/phase=UPPER"):
        (tmp_path / folder).mkdir(parents=True)
    code, out, _ = run_cli(["validate", str(tmp_path), "--json"], capsys)
    result = json.loads(out)
    reasons = {Path(warning["uri"]).relative_to(tmp_path).as_posix(): warning["reason"]
               for warning in result["folder_warnings"]}
    assert code == 0
    assert set(reasons) == {"notadate", "date=2024-13-45", "date=2024-01-15/garbage",
                            "date=2024-01-15/phase=UPPER"}
    assert "not a valid phase name" in reasons["date=2024-01-15/phase=UPPER"]
    code, out, _ = run_cli(["validate", str(tmp_path)], capsys)
    assert out.count("warning:") == 4


def test_validate_suggests_import_for_foreign_avro(cases_dir, capsys):
    """Files in the case-archive format are reported with the replay import command that converts them."""
    archive = cases_dir / "05-schema-evolution-mixed-day" / "archive"
    code, out, _ = run_cli(["validate", str(archive)], capsys)
    assert code == 1
    assert "replay import --format case-archive" in out
    code, out, _ = run_cli(["validate", str(archive), "--json"], capsys)
    assert set(json.loads(out)["import_suggestions"].values()) == {"case-archive"}


def test_ls_and_show_note_no_match(tmp_path, capsys):
    """ls and show print a note on standard error when the selection matches nothing."""
    _write_day(tmp_path, dt.date(2024, 1, 15))
    code, out, err = run_cli(["ls", str(tmp_path), "--date", "2030-01-01", "--json"], capsys)
    assert code == 0
    assert json.loads(out)["partitions"] == []
    assert "no partitions" in err
    code, out, err = run_cli(["show", str(tmp_path), "--date", "2024-01-15", "--processor", "other"], capsys)
    assert code == 0
    assert out == ""
    assert "no events" in err
    assert "processor other" in err
