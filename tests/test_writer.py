"""ArchiveWriter: partitions, rolling, file names, visibility, idempotent flush, threads."""

from __future__ import annotations

import datetime as dt
import re
import sys
import subprocess
import threading
from pathlib import Path

import fastavro
import pytest
from structlog.testing import capture_logs

from recorder._reader import read_event_file
from recorder._storage import LocalStorage
from recorder._writer import (
    CODECS,
    ArchiveWriter,
    CodecUnavailableError,
    WriterClosedError,
    WrittenFile,
    avro_datum,
    check_codec,
)
from schemas import Direction, RecordedEvent

FILE_NAME = re.compile(r"sdk-web-1-\d{8}T\d{12}Z-\d{6}\.avro")


def make_event(index: int = 0, **changes) -> RecordedEvent:
    fields = dict(
        event_id=f"m-{index}", logical_date=dt.date(2024, 3, 9), phase="phase2",
        direction=Direction.INPUT, publish_time=1_710_000_000_000_000 + index,
        data=b'{"n": %d}' % index, source="sdk", record_time=1_710_000_000_500_000,
        processor="proc", attributes={"k": "v"},
    )
    fields.update(changes)
    return RecordedEvent(**fields)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def archive_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*.avro"))


def new_writer(root: Path, **options) -> ArchiveWriter:
    options.setdefault("writer_id", "web-1")
    options.setdefault("source", "sdk")
    return ArchiveWriter(str(root), **options)


def test_avro_datum_matches_to_avro():
    """The writer's fast datum equals RecordedEvent.to_avro()."""
    event = make_event(3, topic="t", delivery_attempt=2, handling_micros=5, outcome="ack")
    assert avro_datum(event) == event.to_avro()


def test_file_name_and_partition(tmp_path):
    """A flushed file lands in date=/phase= with the documented name."""
    with new_writer(tmp_path) as writer:
        writer.write(make_event())
    files = archive_files(tmp_path)
    assert len(files) == 1
    assert files[0].parent == tmp_path / "date=2024-03-09" / "phase=phase2"
    assert FILE_NAME.fullmatch(files[0].name), files[0].name


def test_one_file_per_partition(tmp_path):
    """Events of two dates and two phases go to four files."""
    with new_writer(tmp_path) as writer:
        for day in (9, 10):
            for phase in ("phase2", "phase3"):
                writer.write(make_event(day, logical_date=dt.date(2024, 3, day), phase=phase))
    folders = sorted(str(path.parent.relative_to(tmp_path)) for path in archive_files(tmp_path))
    assert folders == ["date=2024-03-09/phase=phase2", "date=2024-03-09/phase=phase3",
                       "date=2024-03-10/phase=phase2", "date=2024-03-10/phase=phase3"]


def test_roll_by_record_count(tmp_path):
    """max_records=3 turns 7 events into files of 3, 3 and 1."""
    written: list[WrittenFile] = []
    with new_writer(tmp_path, max_records=3, on_written=written.append) as writer:
        for index in range(7):
            writer.write(make_event(index))
        assert [item.records for item in written] == [3, 3]
    assert [item.records for item in written] == [3, 3, 1]
    assert [len(list(fastavro.reader(open(path, "rb")))) for path in archive_files(tmp_path)] == [3, 3, 1]


def test_roll_by_bytes(tmp_path):
    """A buffer rolls once its estimated size reaches max_bytes."""
    written: list[WrittenFile] = []
    with new_writer(tmp_path, max_bytes=5000, on_written=written.append) as writer:
        for index in range(5):
            writer.write(make_event(index, data=b"x" * 2000))
        assert [item.records for item in written] == [3]
    assert [item.records for item in written] == [3, 2]


def test_roll_by_age_on_write(tmp_path):
    """A write to a buffer older than max_age_secs writes the file."""
    clock = FakeClock()
    written: list[WrittenFile] = []
    writer = new_writer(tmp_path, max_age_secs=10, clock=clock, on_written=written.append)
    writer.write(make_event(1))
    clock.now += 9
    writer.write(make_event(2))
    assert written == []
    clock.now += 1
    writer.write(make_event(3))
    assert [item.records for item in written] == [3]
    writer.close()


def test_roll_expired_writes_only_old_buffers(tmp_path):
    """roll_expired writes partitions past max_age_secs and keeps younger ones."""
    clock = FakeClock()
    writer = new_writer(tmp_path, max_age_secs=10, clock=clock)
    writer.write(make_event(1, phase="old"))
    clock.now += 6
    writer.write(make_event(2, phase="young"))
    clock.now += 5
    rolled = writer.roll_expired()
    assert [Path(item.uri).parent.name for item in rolled] == ["phase=old"]
    assert writer.buffered_events == 1
    writer.close()


def test_file_invisible_until_complete(tmp_path):
    """Before flush nothing is on disk; after it only complete files are listed."""
    writer = new_writer(tmp_path)
    for index in range(5):
        writer.write(make_event(index))
    assert archive_files(tmp_path) == []
    writer.flush()
    files = archive_files(tmp_path)
    assert len(files) == 1
    assert not [path for path in tmp_path.rglob("*") if path.is_file() and path.name.startswith(".")]
    writer.close()


def test_flush_and_close_idempotent(tmp_path):
    """Repeated flush/close write nothing new and raise nothing."""
    writer = new_writer(tmp_path)
    writer.write(make_event())
    assert len(writer.flush()) == 1
    assert writer.flush() == []
    assert writer.close() == []
    assert writer.close() == []
    assert len(archive_files(tmp_path)) == 1


def test_write_after_close_raises(tmp_path):
    """write() after close() raises WriterClosedError naming the writer."""
    writer = new_writer(tmp_path)
    writer.close()
    with pytest.raises(WriterClosedError, match="'web-1' is closed"):
        writer.write(make_event())


def test_written_file_reports_ids_and_size(tmp_path):
    """WrittenFile carries the event ids in order and the stored size."""
    with new_writer(tmp_path) as writer:
        for index in range(3):
            writer.write(make_event(index))
        (written,) = writer.flush()
    assert written.event_ids == ("m-0", "m-1", "m-2")
    assert written.size_bytes == Path(written.uri).stat().st_size


def test_sequence_numbers_increase(tmp_path):
    """Each file of one writer gets the next sequence number."""
    with new_writer(tmp_path, max_records=1) as writer:
        for index in range(3):
            writer.write(make_event(index))
    sequences = [int(path.stem.rsplit("-", 1)[1]) for path in archive_files(tmp_path)]
    assert sorted(sequences) == [1, 2, 3]


def test_thread_safety_no_event_lost(tmp_path):
    """Eight threads writing 500 events each lose and duplicate nothing."""
    writer = new_writer(tmp_path, max_records=97)

    def produce(thread_index):
        for index in range(500):
            writer.write(make_event(thread_index * 1000 + index,
                                    phase="phase2" if index % 2 else "phase3"))

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    storage = LocalStorage()
    ids = [event.event_id for path in archive_files(tmp_path)
           for event in read_event_file(storage, str(path))]
    assert len(ids) == 4000
    assert len(set(ids)) == 4000


def test_flush_waits_for_other_threads_uploads(tmp_path):
    """Events written before flush() returns are on disk, even if another thread rolled them."""
    writer = new_writer(tmp_path, max_records=50)
    done = threading.Event()

    def produce():
        for index in range(1000):
            writer.write(make_event(index))
        done.set()

    thread = threading.Thread(target=produce)
    thread.start()
    thread.join()
    writer.flush()
    storage = LocalStorage()
    total = sum(1 for path in archive_files(tmp_path) for _ in read_event_file(storage, str(path)))
    assert total == 1000
    writer.close()


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_codec_in_file_header(tmp_path, codec):
    """The chosen codec is what the file header names."""
    with new_writer(tmp_path, codec=codec) as writer:
        writer.write(make_event())
    (path,) = archive_files(tmp_path)
    with open(path, "rb") as source:
        assert fastavro.reader(source).codec == codec


def test_unknown_codec_rejected():
    """An unknown codec name lists the supported ones."""
    with pytest.raises(CodecUnavailableError, match="'lzo' is not supported; use one of null, deflate"):
        check_codec("lzo")


def test_missing_codec_library_named():
    """Without cramjam, choosing snappy names the codec and the package to install."""
    script = (
        "import sys; sys.modules['cramjam'] = None\n"
        "from recorder._writer import check_codec\n"
        "try:\n    check_codec('snappy')\nexcept ValueError as error:\n    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent, timeout=60)
    assert "codec 'snappy' needs the 'cramjam' package" in result.stdout, result.stderr
    assert "pip install cramjam" in result.stdout


@pytest.mark.parametrize("option, value", [
    ("writer_id", "a/b"), ("writer_id", ""), ("source", "kafka"), ("max_records", 0),
    ("max_bytes", -1), ("max_age_secs", 0), ("sync_interval", 0),
])
def test_invalid_options_named(tmp_path, option, value):
    """Bad constructor options fail with the option and value in the message."""
    options = {"writer_id": "w", "source": "sdk", option: value}
    with pytest.raises(ValueError) as caught:
        ArchiveWriter(str(tmp_path), **options)
    assert option in str(caught.value)
    assert repr(value) in str(caught.value)


def test_failed_upload_kept_for_next_flush(tmp_path):
    """When the archive folder cannot be written, events stay buffered for a later flush."""
    blocker = tmp_path / "archive"
    blocker.write_text("a file where the archive folder should be")
    writer = new_writer(blocker)
    writer.write(make_event())
    with pytest.raises(Exception, match="cannot create folder"):
        writer.flush()
    assert writer.buffered_events == 1
    blocker.unlink()
    assert len(writer.flush()) == 1
    assert writer.buffered_events == 0


def test_file_written_log_event(tmp_path):
    """Each file logs archive.file_written with the standard keys."""
    with capture_logs() as logs, new_writer(tmp_path) as writer:
        writer.write(make_event())
    (entry,) = [log for log in logs if log["event"] == "archive.file_written"]
    assert entry["records"] == 1
    assert entry["date"] == "2024-03-09"
    assert entry["phase"] == "phase2"
    assert {"archive", "file", "elapsed_s"} <= set(entry)
