"""Import of existing message archives into this project's archive format.

Formats (``IMPORT_FORMATS``):

- ``dataflow-avro``: files of Google's Dataflow "Pub/Sub to Avro files on
  Cloud Storage" template, records ``{message: bytes, attributes: map,
  timestamp: long epoch milliseconds}``. They carry no message id, so the
  event id is ``import-`` + SHA-256 of (data, attributes, timestamp): the
  same message imported twice, from the same or another file, gets the same
  id and the archive reader keeps one. Two distinct messages with identical
  data, attributes and millisecond timestamp also collapse into one.
- ``gcs-subscription-avro``: files of a Pub/Sub Cloud Storage subscription.
  With ``write_metadata`` the records hold ``subscription_name``,
  ``message_id``, ``publish_time``, ``attributes`` and ``data``; without it,
  only ``data``, so the event id is derived from the file name, the record
  number and the data, and the publish time must be given
  (``default_publish_time``).
- ``case-archive``: records with ``message_id``, ``publish_time``, ``data``,
  ``attributes`` and optional ``ordering_key`` and ``delivery_attempt``
  (e.g. ``replaytest.archive.ArchivedMessage``).
- ``jsonl``: one JSON object per line with ``message_id`` (or ``event_id``),
  ``data``, ``attributes``, ``publish_time`` (RFC 3339) and optional
  ``ordering_key``/``delivery_attempt``. ``data`` is a JSON object or array
  (stored as compact JSON), or a string: standard base64 when
  ``data_encoding`` is ``base64``, UTF-8 text when ``text``, and with
  ``auto`` base64 only if it decodes strictly and re-encodes to the same
  string.
- ``auto``: picks one of the Avro formats from each file's writer schema.

Timestamps in Avro files are read as the writer schema declares them
(``timestamp-millis``, ``timestamp-micros``, a plain long in the format's
unit, or an RFC 3339 string). Bad records are skipped and reported with
their file and 1-based record or line number.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import dataclasses
import datetime as dt
import hashlib
import io
import json
from typing import Any, Callable, Iterator, Mapping

import fastavro

from recorder._logging import get_logger
from recorder._redaction import RedactionRules
from schemas import (
    DateRule,
    Direction,
    RecordedEvent,
    datetime_to_micros,
    parse_rfc3339_micros,
)

log = get_logger(__name__)

AVRO_MAGIC = b"Obj\x01"
IMPORT_FORMATS = ("auto", "dataflow-avro", "gcs-subscription-avro", "case-archive", "jsonl")
DATA_ENCODINGS = ("auto", "base64", "text")


class ImportSourceError(ValueError):
    """An import option or source is invalid."""


@dataclasses.dataclass(frozen=True)
class ImportMapping:
    """Target of imported messages: phase, direction, processor, topic, subscription, date rule."""

    phase: str
    direction: Direction
    processor: str | None = None
    topic: str | None = None
    subscription: str | None = None
    date_rule: DateRule = DateRule()
    logical_date: dt.date | None = None
    redaction: RedactionRules = RedactionRules()

    def __post_init__(self) -> None:
        from schemas._event import PHASE_PATTERN

        if not isinstance(self.phase, str) or not PHASE_PATTERN.fullmatch(self.phase):
            raise ImportSourceError(
                f"phase {self.phase!r} is invalid; use lower-case letters, digits, '_' and '-'"
            )


@dataclasses.dataclass(frozen=True)
class BadRecord:
    """A record that was skipped: its file, 1-based record or line number, and why."""

    file: str
    record: int
    reason: str


@dataclasses.dataclass(frozen=True)
class ImportResult:
    """Outcome of an import: counts, skipped records and the archive files written."""

    files: int
    records_read: int
    imported: int
    bad: tuple[BadRecord, ...]
    written: tuple[str, ...]


@dataclasses.dataclass
class _Message:
    message_id: str | None
    data: bytes
    attributes: dict[str, str]
    publish_time: int | None
    ordering_key: str | None = None
    delivery_attempt: int | None = None
    subscription: str | None = None


class _BadRecordError(ValueError):
    pass


def content_event_id(data: bytes, attributes: Mapping[str, str], timestamp: int) -> str:
    """Return ``import-`` + SHA-256 of a message's content, independent of the file it is in."""
    digest = hashlib.sha256()
    digest.update(len(data).to_bytes(8, "big"))
    digest.update(data)
    digest.update(json.dumps(dict(attributes), sort_keys=True, separators=(",", ":")).encode())
    digest.update(b"\0" + str(timestamp).encode())
    return "import-" + digest.hexdigest()[:40]


# ---------------------------------------------------------------------- field readers


def _timestamp_micros(value: Any, *, logical_type: str | None, plain_unit: str, field: str) -> int:
    if isinstance(value, dt.datetime):
        return datetime_to_micros(value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc))
    if isinstance(value, str):
        return parse_rfc3339_micros(value)
    if isinstance(value, int) and not isinstance(value, bool):
        unit = {"timestamp-millis": "millis", "timestamp-micros": "micros"}.get(logical_type or "", plain_unit)
        return value * 1000 if unit == "millis" else value
    raise _BadRecordError(f"field {field!r} is not a timestamp: {value!r}")


def _attributes(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(key, str) and isinstance(item, str) for key, item in value.items()
    ):
        raise _BadRecordError(f"'attributes' must map strings to strings, got {value!r:.80}")
    return dict(value)


def _bytes(value: Any, field: str) -> bytes:
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise _BadRecordError(f"field {field!r} is not bytes: {type(value).__name__}")


def _field_logical_types(schema: Any) -> dict[str, str | None]:
    types: dict[str, str | None] = {}
    for field in (schema or {}).get("fields", []):
        kind = field.get("type")
        if isinstance(kind, list):
            kind = next((item for item in kind if item != "null"), None)
        types[field["name"]] = kind.get("logicalType") if isinstance(kind, dict) else None
    return types


def detect_avro_format(schema: Mapping[str, Any]) -> str:
    """Return the import format matching an Avro writer schema; raise if none does."""
    names = {field["name"] for field in schema.get("fields", [])}
    if {"message", "timestamp"} <= names:
        return "dataflow-avro"
    if "subscription_name" in names or names == {"data"}:
        return "gcs-subscription-avro"
    if {"message_id", "publish_time", "data"} <= names:
        return "case-archive"
    raise ImportSourceError(
        f"Avro fields {sorted(names)} match no import format; expected the Dataflow template "
        "(message, attributes, timestamp), a Cloud Storage subscription (data, with optional "
        "subscription_name, message_id, publish_time, attributes) or message_id/publish_time/data"
    )


def _dataflow_message(record: Mapping, number: int, file: str, types: dict, fallback: int | None) -> _Message:
    data = _bytes(record.get("message"), "message")
    attributes = _attributes(record.get("attributes"))
    if record.get("timestamp") is None:
        raise _BadRecordError("field 'timestamp' is missing")
    timestamp = _timestamp_micros(record["timestamp"], logical_type=types.get("timestamp"),
                                  plain_unit="millis", field="timestamp")
    return _Message(content_event_id(data, attributes, timestamp), data, attributes, timestamp)


def _gcs_subscription_message(record: Mapping, number: int, file: str, types: dict,
                              fallback: int | None) -> _Message:
    data = _bytes(record.get("data"), "data")
    attributes = _attributes(record.get("attributes"))
    message_id = record.get("message_id")
    if record.get("publish_time") is not None:
        publish_time = _timestamp_micros(record["publish_time"], logical_type=types.get("publish_time"),
                                         plain_unit="micros", field="publish_time")
    elif fallback is not None:
        publish_time = fallback
    else:
        raise _BadRecordError(
            "record has no publish_time (file written without metadata); pass a default publish time"
        )
    if not message_id:
        digest = hashlib.sha256(f"{file.rsplit('/', 1)[-1]}\0{number}\0".encode() + data)
        message_id = "import-" + digest.hexdigest()[:40]
    subscription = record.get("subscription_name")
    return _Message(str(message_id), data, attributes, publish_time,
                    subscription=subscription.rsplit("/", 1)[-1] if subscription else None)


def _case_archive_message(record: Mapping, number: int, file: str, types: dict,
                          fallback: int | None) -> _Message:
    if not record.get("message_id"):
        raise _BadRecordError("field 'message_id' is missing or empty")
    if record.get("publish_time") is None:
        raise _BadRecordError("field 'publish_time' is missing")
    return _Message(
        message_id=str(record["message_id"]),
        data=_bytes(record.get("data"), "data"),
        attributes=_attributes(record.get("attributes")),
        publish_time=_timestamp_micros(record["publish_time"], logical_type=types.get("publish_time"),
                                       plain_unit="micros", field="publish_time"),
        ordering_key=record.get("ordering_key") or None,
        delivery_attempt=record.get("delivery_attempt"),
    )


_AVRO_READERS: dict[str, Callable[..., _Message]] = {
    "dataflow-avro": _dataflow_message,
    "gcs-subscription-avro": _gcs_subscription_message,
    "case-archive": _case_archive_message,
}


def _decode_json_data(value: Any, encoding: str) -> bytes:
    if value is None:
        return b""
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if not isinstance(value, str):
        raise _BadRecordError(f"'data' must be a string, object or array, got {type(value).__name__}")
    if encoding == "text":
        return value.encode("utf-8")
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        if encoding == "base64":
            raise _BadRecordError(f"'data' is not standard base64: {error}") from error
        return value.encode("utf-8")
    if encoding == "auto" and base64.b64encode(decoded).decode("ascii") != value:
        return value.encode("utf-8")
    return decoded


# Binary detection looks at the start of a file only, as `file` and git do.
_TEXT_SNIFF_BYTES = 8192


def _not_text_problem(raw: bytes) -> str | None:
    """Return why ``raw`` cannot be JSON lines when it is an Avro or other binary file, else None."""
    if raw.startswith(AVRO_MAGIC):
        return ("file is an Avro container file, not JSON lines; import it with --format auto "
                "or the matching Avro format")
    head = raw[:_TEXT_SNIFF_BYTES]
    try:
        # final=False: a multi-byte character cut at the sniff limit is not an error.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as error:
        return f"file is binary, not UTF-8 JSON lines (invalid UTF-8 at byte {error.start})"
    if b"\0" in head:
        return "file is binary, not JSON lines (it contains NUL bytes)"
    return None


def _jsonl_message(line: str, encoding: str) -> _Message:
    try:
        record = json.loads(line)
    except ValueError as error:
        raise _BadRecordError(f"line is not JSON: {error}") from error
    if not isinstance(record, dict):
        raise _BadRecordError("line is not a JSON object")
    encoding = record.get("data_encoding", encoding)
    if encoding not in DATA_ENCODINGS:
        raise _BadRecordError(f"data_encoding {encoding!r} is not one of {', '.join(DATA_ENCODINGS)}")
    data = _decode_json_data(record.get("data"), encoding)
    attributes = _attributes(record.get("attributes"))
    published = record.get("publish_time", record.get("publishTime"))
    if published is None:
        raise _BadRecordError("field 'publish_time' is missing")
    try:
        publish_time = (parse_rfc3339_micros(published) if isinstance(published, str)
                        else _timestamp_micros(published, logical_type=None, plain_unit="micros",
                                               field="publish_time"))
    except ValueError as error:
        raise _BadRecordError(str(error)) from error
    message_id = record.get("message_id") or record.get("event_id") or record.get("messageId")
    attempt = record.get("delivery_attempt")
    if attempt is not None and not isinstance(attempt, int):
        raise _BadRecordError(f"'delivery_attempt' must be an integer, got {attempt!r}")
    return _Message(
        message_id=str(message_id) if message_id else content_event_id(data, attributes, publish_time),
        data=data, attributes=attributes, publish_time=publish_time,
        ordering_key=record.get("ordering_key") or record.get("orderingKey") or None,
        delivery_attempt=attempt,
    )


# ---------------------------------------------------------------------- reading sources


def read_source(
    uri: str,
    raw: bytes,
    *,
    format: str,
    data_encoding: str = "auto",
    default_publish_time: int | None = None,
) -> Iterator[tuple[int, _Message | BadRecord]]:
    """Yield ``(number, message or BadRecord)`` for each record of one source file."""
    if format == "jsonl":
        problem = _not_text_problem(raw)
        if problem is not None:
            yield 0, BadRecord(uri, 0, problem)
            return
        for number, line in enumerate(raw.decode("utf-8", "replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield number, _jsonl_message(line, data_encoding)
            except _BadRecordError as error:
                yield number, BadRecord(uri, number, str(error))
        return
    try:
        reader = fastavro.reader(io.BytesIO(raw))
    except Exception as error:  # fastavro raises several types for a bad header
        yield 0, BadRecord(uri, 0, f"not an Avro file: {type(error).__name__}: {error}")
        return
    schema = reader.writer_schema
    try:
        file_format = detect_avro_format(schema) if format == "auto" else format
    except ImportSourceError as error:
        yield 0, BadRecord(uri, 0, str(error))
        return
    convert = _AVRO_READERS[file_format]
    types = _field_logical_types(schema)
    number = 0
    try:
        for number, record in enumerate(reader, start=1):
            try:
                yield number, convert(record, number, uri, types, default_publish_time)
            except (_BadRecordError, ValueError, TypeError) as error:
                yield number, BadRecord(uri, number, str(error))
    except Exception as error:
        yield number + 1, BadRecord(
            uri, number + 1, f"file is damaged after record {number}: {type(error).__name__}: {error}")


def _to_event(message: _Message, mapping: ImportMapping) -> RecordedEvent:
    logical_date = mapping.date_rule.resolve(
        publish_time=message.publish_time, attributes=message.attributes, data=message.data,
        explicit=mapping.logical_date)
    data, attributes = mapping.redaction.apply(message.data, message.attributes)
    return RecordedEvent(
        event_id=message.message_id,
        logical_date=logical_date,
        phase=mapping.phase,
        direction=mapping.direction,
        processor=mapping.processor,
        topic=mapping.topic,
        subscription=mapping.subscription or message.subscription,
        publish_time=message.publish_time,
        ordering_key=message.ordering_key,
        attributes=attributes,
        data=data,
        delivery_attempt=message.delivery_attempt,
        source="import",
    )


def import_files(
    sources: list[str],
    *,
    archive_uri: str,
    mapping: ImportMapping,
    format: str = "auto",
    data_encoding: str = "auto",
    default_publish_time: int | None = None,
    writer_id: str | None = None,
    codec: str | None = None,
) -> ImportResult:
    """Convert ``sources`` (local paths or ``gs://`` URIs; folders are read recursively) into the archive."""
    from recorder._sdk import _default_writer_id
    from recorder._storage import open_storage
    from recorder._writer import ArchiveWriter

    if format not in IMPORT_FORMATS:
        raise ImportSourceError(f"import format {format!r} is not one of {', '.join(IMPORT_FORMATS)}")
    if format == "jsonl" and data_encoding not in DATA_ENCODINGS:
        raise ImportSourceError(f"data encoding {data_encoding!r} is not one of {', '.join(DATA_ENCODINGS)}")
    options: dict[str, Any] = {"writer_id": writer_id or _default_writer_id(), "source": "import"}
    if codec:
        options["codec"] = codec
    bad: list[BadRecord] = []
    files = records_read = imported = 0
    written: list[str] = []
    options["on_written"] = lambda item: written.append(item.uri)
    with ArchiveWriter(archive_uri, **options) as writer:
        for source in sources:
            storage = open_storage(source)
            for uri in _source_files(storage, source):
                files += 1
                raw = storage.read_bytes(uri)
                for number, item in read_source(uri, raw, format=format, data_encoding=data_encoding,
                                                default_publish_time=default_publish_time):
                    if number > 0:
                        records_read += 1
                    if isinstance(item, BadRecord):
                        bad.append(item)
                        continue
                    try:
                        writer.write(_to_event(item, mapping))
                    except ValueError as error:
                        bad.append(BadRecord(uri, number, str(error)))
                        continue
                    imported += 1
                log.info("import.file_read", archive=archive_uri, file=uri, records=imported)
        writer.flush()
    for item in bad:
        log.warning("import.record_skipped", file=item.file, record=item.record, reason=item.reason)
    return ImportResult(files=files, records_read=records_read,
                        imported=imported, bad=tuple(bad), written=tuple(written))


def _source_files(storage: Any, source: str) -> list[str]:
    from recorder._storage import LocalStorage, local_path

    if isinstance(storage, LocalStorage):
        if local_path(source).is_file():
            return [source]
    elif storage.exists(source):
        return [source]
    listed = [info.uri for info in storage.list(source)]
    if not listed:
        raise ImportSourceError(f"import source {source!r} has no files; check the path")
    return listed
