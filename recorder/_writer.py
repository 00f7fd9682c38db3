"""``ArchiveWriter``: buffers recorded events and writes them as Avro archive files.

Events are buffered per partition (logical date, phase). A partition's buffer
becomes one file when it reaches ``max_records`` events, ``max_bytes`` of
estimated datum size, or ``max_age_secs`` since its first event, or on
``flush()``/``close()``. Each file is encoded whole in memory and handed to
``Storage.write_new``, so it appears only when complete and never replaces
another file::

    <archive>/date=2024-03-09/phase=phase3/sdk-web-1-20240309T231501123456Z-000007.avro
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import re
import threading
import time
from typing import Callable, Iterable

import fastavro

from recorder._logging import get_logger
from recorder._storage import Storage, join_uri, open_storage
from schemas import (
    RECORDED_EVENT_SCHEMA,
    SCHEMA_VERSION,
    SOURCES,
    Direction,
    RecordedEvent,
    micros_to_datetime,
    now_micros,
)

log = get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class Codec:
    """An Avro block codec and the Python modules fastavro needs for it."""

    name: str
    modules: tuple[str, ...]  # any one of them is enough; empty: standard library
    package: str | None  # what to pip install when none of the modules is present


CODECS: dict[str, Codec] = {
    codec.name: codec
    for codec in (
        Codec("null", (), None),
        Codec("deflate", (), None),
        Codec("snappy", ("cramjam",), "cramjam"),
        Codec("zstandard", ("compression.zstd", "backports.zstd"), "backports.zstd"),
    )
}

# The default is zstandard with 256 KiB blocks (sync_interval). An archive
# keeps every message for as long as replays need it, so size matters as much
# as speed. On 1 KB JSON events (benchmarks/archive_bench.py, figures in
# docs/benchmarks.md) zstandard stores 6.0x less than the null codec and 5%
# more than deflate. In two runs on a shared 2-core machine, fastavro wrote it
# 1.5-2x and read it 1.1-2x faster than deflate. snappy writes at
# a similar speed but stores 1.7x as much as zstandard. Blocks of 256 KiB are
# within 0.2% of the size of 1 MiB blocks, 2% smaller than 64 KiB blocks and
# 12% smaller than fastavro's 16 KB default, and a reader holds about one
# block per open file in memory.
DEFAULT_CODEC = "zstandard"
DEFAULT_SYNC_INTERVAL_BYTES = 256 * 1024
DEFAULT_MAX_RECORDS = 100_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_AGE_SECS = 60.0

_WRITER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
# Encoded size of an event apart from its id, payload and attributes: longs,
# varint lengths, union indexes and typical phase/processor/topic names.
_FIXED_DATUM_BYTES = 160


class CodecUnavailableError(ValueError):
    """A codec is unknown or its library is not installed."""


class WriterClosedError(RuntimeError):
    """``write`` was called after ``close``."""


@dataclasses.dataclass(frozen=True)
class WrittenFile:
    """An archive file that is durably stored: its URI, record count, size and event ids."""

    uri: str
    records: int
    size_bytes: int
    event_ids: tuple[str, ...]


def check_codec(name: str) -> Codec:
    """Return the codec called ``name``; raise if it is unknown or its library is missing."""
    codec = CODECS.get(name)
    if codec is None:
        raise CodecUnavailableError(
            f"codec {name!r} is not supported; use one of {', '.join(CODECS)}"
        )
    if codec.modules and not any(_importable(module) for module in codec.modules):
        raise CodecUnavailableError(
            f"codec {name!r} needs the {codec.package!r} package, which is not installed; "
            f"pip install {codec.package}"
        )
    return codec


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


_EPOCH_ORDINAL = 719163  # datetime.date(1970, 1, 1).toordinal()


_DIRECTION_SYMBOLS = {direction: direction.value for direction in Direction}


def avro_datum(event: RecordedEvent) -> dict:
    """Return the same datum as ``event.to_avro()``, built from the instance dict (about 5x faster)."""
    datum = event.__dict__.copy()
    datum["logical_date"] = event.logical_date.toordinal() - _EPOCH_ORDINAL
    datum["direction"] = _DIRECTION_SYMBOLS[event.direction]
    return datum


def estimate_datum_bytes(event: RecordedEvent) -> int:
    """Estimate an event's encoded (uncompressed) Avro size in bytes, for rolling by size."""
    size = _FIXED_DATUM_BYTES + len(event.data) + len(event.event_id)
    attributes = event.attributes
    if attributes:
        # map() over the keys and values avoids a generator frame per item,
        # which was a third of the cost of write().
        size += sum(map(len, attributes)) + sum(map(len, attributes.values())) + 2 * len(attributes)
    return size


@dataclasses.dataclass
class _Buffer:
    """Events waiting to become one file of one partition."""

    opened_at: float
    # Events, not datums: datums are built while encoding and freed at once,
    # so a large buffer does not make the garbage collector scan them.
    events: list = dataclasses.field(default_factory=list)
    size_bytes: int = 0


@dataclasses.dataclass(frozen=True)
class _Batch:
    """A detached buffer with the file name it will be written under."""

    uri: str
    date: str
    phase: str
    events: list


class ArchiveWriter:
    """Buffered, thread-safe writer of archive files; also a context manager.

    Files use ``codec`` (default zstandard) in blocks of ``sync_interval``
    bytes (default 256 KiB): on 1 KB JSON payloads that is 6x smaller than
    uncompressed Avro, 5% larger than deflate and faster than deflate to
    write and read (measurements beside ``DEFAULT_CODEC``).

    ``write`` only appends to a buffer unless that buffer is full, in which
    case the calling thread encodes and uploads the file (other threads keep
    buffering meanwhile). ``flush`` writes every buffer and waits for uploads
    other threads started, so when it returns every event written before the
    call is durable. A file whose upload fails raises from ``write``/``flush``
    and its events are kept for the next ``flush``.
    """

    def __init__(
        self,
        archive_uri: str,
        *,
        writer_id: str,
        source: str,
        codec: str = DEFAULT_CODEC,
        max_records: int = DEFAULT_MAX_RECORDS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_age_secs: float = DEFAULT_MAX_AGE_SECS,
        sync_interval: int = DEFAULT_SYNC_INTERVAL_BYTES,
        on_written: Callable[[WrittenFile], None] | None = None,
        storage: Storage | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(writer_id, str) or not _WRITER_ID.fullmatch(writer_id):
            raise ValueError(
                f"writer_id {writer_id!r} is invalid; use 1-63 letters, digits, '_' or '-' "
                "(it becomes part of every file name), e.g. 'web-1'"
            )
        if source not in SOURCES:
            raise ValueError(f"source {source!r} is invalid; use one of {', '.join(SOURCES)}")
        for name, value in (("max_records", max_records), ("max_bytes", max_bytes),
                            ("sync_interval", sync_interval)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(max_age_secs, (int, float)) or max_age_secs <= 0:
            raise ValueError(f"max_age_secs must be a positive number of seconds, got {max_age_secs!r}")
        self.archive_uri = archive_uri
        self.writer_id = writer_id
        self.source = source
        self.codec = check_codec(codec).name
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_age_secs = float(max_age_secs)
        self.sync_interval = sync_interval
        self._on_written = on_written
        self._storage = storage if storage is not None else open_storage(archive_uri)
        self._clock = clock
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # signalled when an upload ends
        self._uploads_in_flight = 0
        self._buffers: dict[tuple, _Buffer] = {}
        self._failed: list[_Batch] = []
        self._sequence = 0
        self._closed = False
        self._metadata = {
            "pipeline_replay.schema_version": str(SCHEMA_VERSION),
            "pipeline_replay.writer_id": writer_id,
        }

    # ------------------------------------------------------------------ public

    def write(self, event: RecordedEvent) -> None:
        """Buffer ``event``; write its partition's file when the buffer is full or old."""
        if not isinstance(event, RecordedEvent):
            raise TypeError(f"write() takes a RecordedEvent, got {type(event).__name__}")
        size = estimate_datum_bytes(event)
        key = (event.logical_date, event.phase)
        with self._lock:
            if self._closed:
                raise WriterClosedError(
                    f"archive writer {self.writer_id!r} is closed; create a new ArchiveWriter"
                )
            buffer = self._buffers.get(key)
            now = self._clock()
            if buffer is None:
                buffer = self._buffers[key] = _Buffer(opened_at=now)
            buffer.events.append(event)
            buffer.size_bytes += size
            if (len(buffer.events) < self.max_records and buffer.size_bytes < self.max_bytes
                    and now - buffer.opened_at < self.max_age_secs):
                return
            batches = [self._detach(key)]
            self._uploads_in_flight += 1
        self._write_batches(batches)

    def roll_expired(self) -> list[WrittenFile]:
        """Write the buffers older than ``max_age_secs``; for a periodic flusher."""
        with self._lock:
            now = self._clock()
            expired = [key for key, buffer in self._buffers.items()
                       if now - buffer.opened_at >= self.max_age_secs]
            batches = [self._detach(key) for key in expired]
            if not batches:
                return []
            self._uploads_in_flight += 1
        return self._write_batches(batches)

    def flush(self) -> list[WrittenFile]:
        """Write every buffered event durably and return the new files; safe to repeat."""
        with self._lock:
            batches = self._failed + [self._detach(key) for key in list(self._buffers)]
            self._failed = []
            self._uploads_in_flight += 1
        written = self._write_batches(batches)
        with self._lock:
            # Uploads started by other threads' write() hold events that were
            # written before this flush; wait for them to be durable too.
            while self._uploads_in_flight:
                self._idle.wait()
        return written

    def close(self) -> list[WrittenFile]:
        """Flush, then reject further writes; safe to repeat."""
        with self._lock:
            self._closed = True
        return self.flush()

    @property
    def buffered_events(self) -> int:
        """Events buffered and not yet written."""
        with self._lock:
            return sum(len(buffer.events) for buffer in self._buffers.values()) + sum(
                len(batch.events) for batch in self._failed)

    def __enter__(self) -> "ArchiveWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ----------------------------------------------------------------- private

    def _detach(self, key: tuple) -> _Batch:
        # Called with the lock held: the sequence number makes names unique
        # within this writer, the timestamp across restarts of the same id.
        buffer = self._buffers.pop(key)
        logical_date, phase = key
        self._sequence += 1
        stamp = micros_to_datetime(now_micros()).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{self.source}-{self.writer_id}-{stamp}-{self._sequence:06d}.avro"
        date = logical_date.isoformat()
        uri = join_uri(self.archive_uri, f"date={date}", f"phase={phase}", name)
        return _Batch(uri, date, phase, buffer.events)

    def _write_batches(self, batches: Iterable[_Batch]) -> list[WrittenFile]:
        """Encode and store ``batches``; the caller has counted one upload in flight."""
        written: list[WrittenFile] = []
        pending = list(batches)
        try:
            while pending:
                batch = pending[0]
                written.append(self._write_file(batch))
                pending.pop(0)
        except BaseException:
            with self._lock:
                self._failed.extend(pending)  # kept for the next flush
            raise
        finally:
            with self._lock:
                self._uploads_in_flight -= 1
                self._idle.notify_all()
        if self._on_written is not None:
            for written_file in written:
                self._on_written(written_file)
        return written

    def _write_file(self, batch: _Batch) -> WrittenFile:
        started = time.perf_counter()
        buffer = io.BytesIO()
        datums = map(avro_datum, batch.events)
        fastavro.writer(buffer, RECORDED_EVENT_SCHEMA, datums, codec=self.codec,
                        sync_interval=self.sync_interval, metadata=self._metadata)
        data = buffer.getvalue()
        self._storage.write_new(batch.uri, data)
        records = len(batch.events)
        log.info("archive.file_written", archive=self.archive_uri, date=batch.date,
                 phase=batch.phase, file=batch.uri, records=records,
                 size_bytes=len(data), elapsed_s=round(time.perf_counter() - started, 4))
        return WrittenFile(batch.uri, records, len(data), tuple(event.event_id for event in batch.events))
