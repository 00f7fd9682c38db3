"""``ArchiveReader``: lists archive partitions and streams their recorded events.

The archive is Hive-partitioned (``date=YYYY-MM-DD/phase=<phase>/``); every
file below a phase folder, at any depth, belongs to that partition. Each file
is decoded with its own embedded writer schema resolved against
``schemas.READER_SCHEMA``, so files from older and newer recorder versions
read as one shape.

Reading is tolerant by default. A truncated, corrupt, empty or non-Avro file,
an unknown codec or a missing codec library does not stop the read: the
records decoded before the damage are kept, and the file is named in
``ReadStats.damaged`` with the reason, the block and byte offset, and the
records recovered. ``strict=True`` raises :class:`ArchiveReadError` instead.
Duplicate events (at-least-once delivery records some messages twice) are
removed per partition by :func:`dedupe_key` and counted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import io
import json
import time
from typing import Any, BinaryIO, Callable, Iterable, Iterator

import fastavro
import fastavro.read
from fastavro.schema import fingerprint, to_parsing_canonical_form

from recorder._logging import get_logger
from recorder._storage import ObjectInfo, Storage, StorageError, join_uri, open_storage
from schemas import READER_SCHEMA, Direction, RecordedEvent, days_to_date

log = get_logger(__name__)

AVRO_MAGIC = b"Obj\x01"
SYNC_MARKER_BYTES = 16
DATE_FOLDER = "date="
PHASE_FOLDER = "phase="

# Damage kinds, the first word of every DamagedFile.reason.
EMPTY = "empty file"
NOT_AVRO = "not an Avro file"
TRUNCATED = "truncated"
BAD_SYNC = "bad sync marker"
CORRUPT_BLOCK = "corrupt block"
UNKNOWN_CODEC = "unknown codec"
MISSING_CODEC_LIBRARY = "missing codec library"
SCHEMA_MISMATCH = "schema mismatch"
CORRUPT = "corrupt"


class ArchiveReadError(StorageError):
    """A damaged archive file met in strict mode; the message names the file and the damage."""


@dataclasses.dataclass(frozen=True)
class DamagedFile:
    """An archive file the reader could not read to the end.

    ``block`` is the 1-based number of the damaged data block and
    ``offset_bytes`` the byte offset where it starts, when known.
    ``records_recovered`` counts the records decoded before the damage,
    which the reader kept.
    """

    uri: str
    reason: str
    records_recovered: int
    block: int | None
    offset_bytes: int | None = None
    kind: str = CORRUPT

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ReadStats:
    """Totals of a read: files, records (before dedupe), duplicates, damage, writer schemas.

    ``writer_schemas`` maps ``<full schema name>@<CRC-64-AVRO fingerprint>``
    to the number of files written with that schema.
    """

    files_read: int = 0
    records_read: int = 0
    duplicates_removed: int = 0
    damaged: list[DamagedFile] = dataclasses.field(default_factory=list)
    writer_schemas: dict[str, int] = dataclasses.field(default_factory=dict)
    duplicates_by_partition: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """False when a damaged file means some recorded events were not read."""
        return not self.damaged

    def to_dict(self) -> dict[str, Any]:
        """Return the stats as a JSON-ready dict."""
        return {
            "files_read": self.files_read,
            "records_read": self.records_read,
            "duplicates_removed": self.duplicates_removed,
            "duplicates_by_partition": dict(self.duplicates_by_partition),
            "damaged": [damaged.to_dict() for damaged in self.damaged],
            "writer_schemas": dict(self.writer_schemas),
            "complete": self.complete,
        }


@dataclasses.dataclass(frozen=True)
class Partition:
    """One (logical date, phase) folder of an archive and the files below it."""

    date: dt.date
    phase: str
    uri: str
    files: tuple[ObjectInfo, ...]

    @property
    def size_bytes(self) -> int:
        """Total size of the partition's files."""
        return sum(info.size for info in self.files)

    @property
    def key(self) -> str:
        """``YYYY-MM-DD/phase``, as used in reports."""
        return f"{self.date.isoformat()}/{self.phase}"


def dedupe_key(event: RecordedEvent) -> tuple:
    """Return the identity of an event: two records with the same key are one delivery.

    The publish time is not part of it, because Pub/Sub may redeliver a
    message under the same id with another publish time.
    """
    return (event.logical_date, event.phase, event.direction, event.processor, event.event_id)


# ------------------------------------------------------------------ one file


def read_datums(
    storage: Storage,
    uri: str,
    *,
    reader_schema: Any = None,
    strict: bool = False,
    on_damage: Callable[[DamagedFile], None] | None = None,
    on_writer_schema: Callable[[str], None] | None = None,
) -> Iterator[dict]:
    """Yield the Avro datums of one file, resolved against ``reader_schema`` if given.

    ``reader_schema`` is a schema dict or parsed schema; None yields the
    datums in the file's own writer schema. Damage is passed to ``on_damage``
    (tolerant) or raised as :class:`ArchiveReadError` (``strict``) after the
    records decoded before it were yielded.
    """
    recovered = 0
    header: dict = {}
    with storage.open_read(uri) as source:
        try:
            stream, metadata, stripped_schema = _without_logical_types(source)
            if reader_schema is not None and _same_schema(stripped_schema, reader_schema):
                # Identical schemas need no resolution, and fastavro decodes
                # about twice as fast without a reader schema.
                reader = fastavro.reader(stream)
            else:
                reader = fastavro.reader(stream, reader_schema=reader_schema)
            header = {"codec": reader.codec, "writer_schema": _schema_name(reader.writer_schema),
                      "reader_schema": _schema_name(reader_schema)}
            if on_writer_schema is not None:
                on_writer_schema(writer_schema_key(metadata))
            for datum in reader:
                recovered += 1
                yield datum
        except Exception as error:  # fastavro and the codec libraries raise many types
            damaged = describe_damage(storage, uri, error, recovered, **header)
            if strict:
                raise ArchiveReadError(
                    f"archive file {uri!r} is damaged: {damaged.reason}; "
                    "read without --strict to skip it and keep the records before the damage"
                ) from error
            log.warning("archive.file_damaged", file=uri, reason=damaged.reason,
                        records=recovered, block=damaged.block)
            if on_damage is not None:
                on_damage(damaged)


# The Avro object container header, as the specification defines it.
_HEADER_SCHEMA = fastavro.parse_schema({
    "type": "record", "name": "org.apache.avro.file.Header",
    "fields": [
        {"name": "magic", "type": {"type": "fixed", "name": "Magic", "size": 4}},
        {"name": "meta", "type": {"type": "map", "values": "bytes"}},
        {"name": "sync", "type": {"type": "fixed", "name": "Sync", "size": 16}},
    ],
})


class _PrefixedStream(io.RawIOBase):
    """A read-only stream of ``prefix`` followed by the rest of ``source``."""

    def __init__(self, prefix: bytes, source: BinaryIO) -> None:
        super().__init__()
        self._prefix = prefix
        self._source = source
        self._position = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._position < len(self._prefix):
            end = len(self._prefix) if size < 0 else min(len(self._prefix), self._position + size)
            chunk = self._prefix[self._position:end]
            if size >= 0 and len(chunk) < size:
                chunk += self._source.read(size - len(chunk))
            elif size < 0:
                chunk += self._source.read()
        else:
            chunk = self._source.read(size)
        self._position += len(chunk)
        return chunk

    def tell(self) -> int:
        return self._position


def _strip_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _strip_logical_types(value) for key, value in node.items() if key != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical_types(item) for item in node]
    return node


def _without_logical_types(source: BinaryIO) -> tuple[BinaryIO, dict, bytes]:
    """Return ``source`` with its writer schema stripped of logical types, the metadata, that schema.

    fastavro applies the writer schema's logical types whatever the reader
    schema specifies, turning timestamp-micros into datetimes (and failing beyond
    year 9999). Without them the archive's times stay exact integer
    microseconds and no time is spent converting them back.
    """
    header = fastavro.schemaless_reader(source, _HEADER_SCHEMA, None)
    if header["magic"] != AVRO_MAGIC:
        raise ValueError(f"the first bytes are {header['magic']!r}, not the Avro magic {AVRO_MAGIC!r}")
    metadata = header["meta"]
    stripped = _stripped_schema(metadata.get("avro.schema", b""))
    prefix = io.BytesIO()
    fastavro.schemaless_writer(prefix, _HEADER_SCHEMA,
                               {**header, "meta": {**metadata, "avro.schema": stripped}})
    return _PrefixedStream(prefix.getvalue(), source), metadata, stripped


@functools.lru_cache(maxsize=256)
def _stripped_schema(raw_schema: bytes) -> bytes:
    if b"logicalType" not in raw_schema:
        return raw_schema
    return json.dumps(_strip_logical_types(json.loads(raw_schema))).encode()


@functools.lru_cache(maxsize=256)
def _canonical_form(raw_schema: bytes) -> str | None:
    try:
        return to_parsing_canonical_form(json.loads(raw_schema))
    except (ValueError, TypeError, AttributeError, KeyError):
        return None


_reader_forms: dict[int, tuple[Any, str]] = {}


def _same_schema(stripped_writer_schema: bytes, reader_schema: Any) -> bool:
    cached = _reader_forms.get(id(reader_schema))
    if cached is None or cached[0] is not reader_schema:
        cached = (reader_schema, to_parsing_canonical_form(reader_schema))
        _reader_forms[id(reader_schema)] = cached  # keeps the schema alive, so ids stay unique
    return _canonical_form(stripped_writer_schema) == cached[1]


def read_event_file(
    storage: Storage,
    uri: str,
    *,
    strict: bool = False,
    on_damage: Callable[[DamagedFile], None] | None = None,
    on_writer_schema: Callable[[str], None] | None = None,
) -> Iterator[RecordedEvent]:
    """Yield the recorded events of one archive file (for the CLI and Beam DoFns)."""
    for datum in read_datums(storage, uri, reader_schema=READER_SCHEMA, strict=strict,
                             on_damage=on_damage, on_writer_schema=on_writer_schema):
        yield event_from_datum(datum)


_DIRECTIONS = {direction.value: direction for direction in Direction}
_new_object = object.__new__
_date_from_days = functools.lru_cache(maxsize=4096)(days_to_date)


def event_from_datum(datum: dict) -> RecordedEvent:
    """Build a RecordedEvent from a ``READER_SCHEMA`` datum without re-validating it.

    Schema resolution already guarantees every field's type, and the event's
    own checks cost more than decoding it, so this fills the frozen
    dataclass directly. ``datum`` is consumed (its values are reused).
    """
    datum["logical_date"] = _date_from_days(datum["logical_date"])
    datum["direction"] = _DIRECTIONS[datum["direction"]]
    event = _new_object(RecordedEvent)
    event.__dict__.update(datum)
    return event


@functools.lru_cache(maxsize=256)
def _schema_key(raw_schema: str) -> str:
    schema = json.loads(raw_schema)
    name = schema.get("name", "?") if isinstance(schema, dict) else str(schema)
    namespace = schema.get("namespace") if isinstance(schema, dict) else None
    if namespace and "." not in name:
        name = f"{namespace}.{name}"
    return f"{name}@{fingerprint(to_parsing_canonical_form(schema), 'CRC-64-AVRO')}"


def writer_schema_key(metadata: dict) -> str:
    """Return ``<full name>@<fingerprint>`` of a file's writer schema from its header metadata."""
    raw = metadata.get("avro.schema", "")
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        return _schema_key(raw)
    except (ValueError, TypeError, AttributeError):
        return "unparseable-schema"


# ---------------------------------------------------------- damage location


def _schema_name(schema: Any) -> str | None:
    if isinstance(schema, dict):
        return schema.get("name")
    return None if schema is None else str(schema)[:80]


def _shorten(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[:limit] + "..."


def describe_damage(storage: Storage, uri: str, error: Exception, recovered: int, *,
                    codec: str | None = None, writer_schema: str | None = None,
                    reader_schema: str | None = None) -> DamagedFile:
    """Classify a read failure and locate it (block number and byte offset)."""
    message = _shorten(str(error) or type(error).__name__)
    if isinstance(error, fastavro.read.SchemaResolutionError):
        if message.startswith("Schema mismatch"):
            # fastavro prints both whole schemas here; the names are enough.
            message = f"record {writer_schema!r} cannot be read as {reader_schema!r}"
        return DamagedFile(uri, f"{SCHEMA_MISMATCH}: the file's writer schema does not resolve "
                           f"to the reader schema: {message}", recovered, None, None, SCHEMA_MISMATCH)
    if codec is not None and codec not in fastavro.read.BLOCK_READERS:
        return DamagedFile(
            uri, f"{UNKNOWN_CODEC}: the file header names codec {codec!r}, which is not an "
            f"Avro codec this reader supports ({', '.join(sorted(fastavro.read.BLOCK_READERS))})",
            recovered, None, None, UNKNOWN_CODEC)
    if "you need to install" in message:
        return DamagedFile(uri, f"{MISSING_CODEC_LIBRARY}: codec {codec!r} needs a library that "
                           f"is not installed: {message}", recovered, None, None,
                           MISSING_CODEC_LIBRARY)
    try:
        data = storage.read_bytes(uri)
    except StorageError:
        data = None
    if data is None:
        return DamagedFile(uri, f"{CORRUPT}: {type(error).__name__}: {message}", recovered, None)
    kind, detail, block, offset = locate_damage(data, recovered)
    if kind == CORRUPT:
        detail = f"{type(error).__name__}: {message}" + (f" ({detail})" if detail else "")
    elif kind == CORRUPT_BLOCK:
        detail = f"{detail}: {type(error).__name__}: {message}"
    return DamagedFile(uri, f"{kind}: {detail}", recovered, block, offset, kind)


class _Cursor:
    """Reads Avro varints from bytes; raises EOFError at the end."""

    def __init__(self, data: bytes, position: int = 0) -> None:
        self.data = data
        self.position = position

    def read_long(self) -> int:
        shift = 0
        result = 0
        while True:
            if self.position >= len(self.data):
                raise EOFError("varint cut short")
            byte = self.data[self.position]
            self.position += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return (result >> 1) ^ -(result & 1)  # zig-zag decoding
            shift += 7

    def skip(self, size: int) -> None:
        if size < 0 or self.position + size > len(self.data):
            raise EOFError("bytes cut short")
        self.position += size


def _skip_header(cursor: _Cursor) -> bytes:
    """Skip the magic and metadata map; return the sync marker."""
    cursor.skip(len(AVRO_MAGIC))
    while True:
        count = cursor.read_long()
        if count == 0:
            break
        if count < 0:  # a negative count is followed by the block's size in bytes
            cursor.read_long()
            count = -count
        for _ in range(count):
            cursor.skip(cursor.read_long())  # key
            cursor.skip(cursor.read_long())  # value
    start = cursor.position
    cursor.skip(SYNC_MARKER_BYTES)
    return cursor.data[start:cursor.position]


# NOTE: fastavro 1.13 reads the CRC32 trailer of snappy blocks without checking
# it, so a snappy block with changed bytes that still decompresses yields
# wrong records without any error.
def locate_damage(data: bytes, recovered: int) -> tuple[str, str, int | None, int | None]:
    """Walk an Avro file's blocks and return (kind, detail, block, offset) of the first damage.

    fastavro yields a block's records only once the whole block is decoded
    and checks the sync marker after them, so the damage is the first block
    whose bytes are missing, whose records were not all yielded, or whose
    sync marker is wrong.
    """
    if not data:
        return EMPTY, "the file has no bytes", None, None
    if not data.startswith(AVRO_MAGIC):
        if len(data) < len(AVRO_MAGIC) and AVRO_MAGIC.startswith(data):
            return TRUNCATED, "the file ends inside the header (byte offset 0)", None, 0
        return NOT_AVRO, f"the first bytes are {data[:4]!r}, not the Avro magic {AVRO_MAGIC!r}", None, 0
    cursor = _Cursor(data)
    try:
        sync = _skip_header(cursor)
    except EOFError:
        return TRUNCATED, "the file ends inside the header (byte offset 0)", None, 0
    records_before = 0
    block = 0
    while cursor.position < len(data):
        block += 1
        start = cursor.position
        try:
            count = cursor.read_long()
            size = cursor.read_long()
            cursor.skip(size)
        except EOFError:
            return (TRUNCATED, f"the file ends inside block {block} (byte offset {start})",
                    block, start)
        if records_before + count > recovered:
            return (CORRUPT_BLOCK, f"block {block} (byte offset {start}) could not be decoded",
                    block, start)
        records_before += count
        marker_at = cursor.position
        marker = data[marker_at:marker_at + SYNC_MARKER_BYTES]
        if marker != sync:
            state = "cut short" if len(marker) < SYNC_MARKER_BYTES else "wrong"
            return (BAD_SYNC, f"the sync marker after block {block} (byte offset {marker_at}) "
                    f"is {state}", block, marker_at)
        cursor.position += SYNC_MARKER_BYTES
    return CORRUPT, "", None, None


# ---------------------------------------------------------------- archive


def _parse_date_folder(name: str) -> dt.date | None:
    if not name.startswith(DATE_FOLDER):
        return None
    try:
        return dt.date.fromisoformat(name[len(DATE_FOLDER):])
    except ValueError:
        return None


class ArchiveReader:
    """Reads an archive's partitions for a date range and phases.

    Memory stays flat: events stream file by file, and the set of seen
    dedupe keys lives only while its partition is read. ``stats`` contains the
    totals of every read so far.
    """

    def __init__(self, archive_uri: str, *, strict: bool = False, dedupe: bool = True,
                 storage: Storage | None = None) -> None:
        self.archive_uri = archive_uri
        self.strict = strict
        self.dedupe = dedupe
        self.storage = storage if storage is not None else open_storage(archive_uri)
        self.stats = ReadStats()

    def list_partitions(self, *, start_date: dt.date | None = None, end_date: dt.date | None = None,
                        phases: Iterable[str] | None = None) -> list[Partition]:
        """Return the partitions in ``[start_date, end_date]`` (inclusive) for ``phases``, by date then phase."""
        if start_date is not None and end_date is not None and start_date > end_date:
            raise ValueError(
                f"start date {start_date.isoformat()} is after end date {end_date.isoformat()}; "
                "swap them or pass one date"
            )
        wanted_phases = None if phases is None else set(phases)
        partitions = []
        for date_name in self.storage.list_dirs(self.archive_uri):
            date = _parse_date_folder(date_name)
            if date is None:
                continue
            if (start_date and date < start_date) or (end_date and date > end_date):
                continue
            date_uri = join_uri(self.archive_uri, date_name)
            for phase_name in self.storage.list_dirs(date_uri):
                if not phase_name.startswith(PHASE_FOLDER):
                    continue
                phase = phase_name[len(PHASE_FOLDER):]
                if wanted_phases is not None and phase not in wanted_phases:
                    continue
                uri = join_uri(date_uri, phase_name)
                partitions.append(Partition(date, phase, uri, tuple(self.storage.list(uri))))
        return partitions

    def read(self, *, start_date: dt.date | None = None, end_date: dt.date | None = None,
             phases: Iterable[str] | None = None) -> Iterator[RecordedEvent]:
        """Yield the events of the selected partitions, duplicates removed unless ``dedupe=False``."""
        partitions = self.list_partitions(start_date=start_date, end_date=end_date, phases=phases)
        started = time.perf_counter()
        before = (self.stats.records_read, self.stats.duplicates_removed)
        log.info("archive.read_started", archive=self.archive_uri, partitions=len(partitions))
        for partition in partitions:
            yield from self.read_partition(partition)
        log.info("archive.read_finished", archive=self.archive_uri, partitions=len(partitions),
                 records=self.stats.records_read - before[0],
                 duplicates=self.stats.duplicates_removed - before[1],
                 damaged=len(self.stats.damaged), elapsed_s=round(time.perf_counter() - started, 3))

    def read_partition(self, partition: Partition) -> Iterator[RecordedEvent]:
        """Yield one partition's events in file order, duplicates removed unless ``dedupe=False``."""
        stats = self.stats
        seen: set = set()
        duplicates = 0
        for info in partition.files:
            stats.files_read += 1
            events = read_event_file(self.storage, info.uri, strict=self.strict,
                                     on_damage=stats.damaged.append,
                                     on_writer_schema=self._count_schema)
            if not self.dedupe:
                for event in events:
                    stats.records_read += 1
                    yield event
                continue
            for event in events:
                stats.records_read += 1
                # Date and phase are the partition's, so the rest of the
                # dedupe key identifies the event within it.
                key = (event.direction, event.processor, event.event_id)
                if key in seen:
                    duplicates += 1
                    continue
                seen.add(key)
                yield event
        if duplicates:
            stats.duplicates_removed += duplicates
            stats.duplicates_by_partition[partition.key] = (
                stats.duplicates_by_partition.get(partition.key, 0) + duplicates)

    def _count_schema(self, key: str) -> None:
        self.stats.writer_schemas[key] = self.stats.writer_schemas.get(key, 0) + 1
