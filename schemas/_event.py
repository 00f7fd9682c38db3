"""``RecordedEvent``: one archived message, validated on construction.

Timestamps are integer microseconds since the Unix epoch, UTC. They never pass
through float seconds: a float cannot hold 23:59:59.999999 of a recent day
exactly, and rounding it up moves the event into the next logical date.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
import time
import uuid
from typing import Any, Mapping

SOURCES = ("sdk", "push", "tap", "import", "replay")
PHASE_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MICROSECOND = dt.timedelta(microseconds=1)
# Value ranges of the Avro primitive types: int is 32-bit, long 64-bit, both signed.
AVRO_INT_RANGE = (-(2**31), 2**31 - 1)
AVRO_LONG_RANGE = (-(2**63), 2**63 - 1)
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"([Zz]|[+-]\d{2}:\d{2})"
)


class EventValidationError(ValueError):
    """A field of a recorded event has a value the archive format does not allow."""


class Direction(str, enum.Enum):
    """Whether a message was seen arriving at a phase or leaving it."""

    INPUT = "INPUT"
    OUTPUT = "OUTPUT"


def now_micros() -> int:
    """Return the current UTC time in integer microseconds."""
    return time.time_ns() // 1000


def new_event_id() -> str:
    """Return a fresh unique id for an event that has no Pub/Sub message id."""
    return uuid.uuid4().hex


def datetime_to_micros(value: dt.datetime) -> int:
    """Convert a timezone-aware datetime to epoch microseconds without floats."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise EventValidationError(
            f"timestamp {value!r} has no time zone; pass an aware datetime "
            "(for example with tzinfo=datetime.timezone.utc)"
        )
    return (value - EPOCH) // _MICROSECOND


def micros_to_datetime(micros: int) -> dt.datetime:
    """Convert epoch microseconds to an aware UTC datetime, exactly."""
    return EPOCH + dt.timedelta(microseconds=micros)


def micros_to_rfc3339(micros: int) -> str:
    """Format epoch microseconds as RFC 3339 UTC with a ``Z`` suffix."""
    text = micros_to_datetime(micros).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return text + "Z"


def parse_rfc3339_micros(text: str) -> int:
    """Parse an RFC 3339 timestamp (``...Z`` or an offset) to epoch microseconds.

    Fractions beyond microseconds (Pub/Sub sends up to nanoseconds) are cut,
    not rounded, so a message never moves into the next second or day.
    """
    match = _RFC3339.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise EventValidationError(
            f"timestamp {text!r} is not RFC 3339; expected e.g. 2024-01-15T23:59:59.123456Z"
        )
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micros = int((fraction or "").ljust(6, "0")[:6])
    offset = dt.timedelta(0)
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        offset = sign * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    try:
        naive = dt.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    except ValueError as error:
        raise EventValidationError(f"timestamp {text!r} is not a valid date: {error}") from error
    aware = naive.replace(tzinfo=dt.timezone(offset))
    return datetime_to_micros(aware) + micros


def _check_range(name: str, value: int, bounds: tuple[int, int], avro_type: str) -> None:
    low, high = bounds
    if not low <= value <= high:
        raise EventValidationError(
            f"field {name!r} is {value!r}, outside the Avro {avro_type} range {low} to {high}"
        )


def _check_optional_str(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise EventValidationError(f"field {name!r} must be a string or None, got {value!r}")


@dataclasses.dataclass(frozen=True)
class RecordedEvent:
    """One message seen by one phase in one direction (Avro schema v1).

    ``publish_time`` and ``record_time`` are epoch microseconds (UTC);
    ``handling_micros`` is the processor's handling time for an INPUT.
    """

    event_id: str
    logical_date: dt.date
    phase: str
    direction: Direction
    publish_time: int
    data: bytes
    source: str
    record_time: int = 0
    processor: str | None = None
    topic: str | None = None
    subscription: str | None = None
    ordering_key: str | None = None
    attributes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    content_type: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    delivery_attempt: int | None = None
    outcome: str | None = None
    handling_micros: int | None = None
    schema_version: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.event_id, str) or not self.event_id:
            raise EventValidationError(f"field 'event_id' must be a non-empty string, got {self.event_id!r}")
        if not isinstance(self.logical_date, dt.date) or isinstance(self.logical_date, dt.datetime):
            raise EventValidationError(
                f"field 'logical_date' must be a datetime.date, got {self.logical_date!r}"
            )
        if not isinstance(self.phase, str) or not PHASE_PATTERN.fullmatch(self.phase):
            raise EventValidationError(
                f"phase {self.phase!r} is not a valid phase name; use lower-case letters, "
                "digits, '_' and '-', starting with a letter or digit, at most 63 characters"
            )
        if not isinstance(self.direction, Direction):
            try:
                object.__setattr__(self, "direction", Direction(self.direction))
            except ValueError as error:
                raise EventValidationError(
                    f"direction {self.direction!r} is not INPUT or OUTPUT"
                ) from error
        for name in ("publish_time", "record_time"):
            value = getattr(self, name)
            if isinstance(value, dt.datetime):
                object.__setattr__(self, name, datetime_to_micros(value))
            elif not isinstance(value, int) or isinstance(value, bool):
                raise EventValidationError(
                    f"field {name!r} must be epoch microseconds (int) or an aware datetime, got {value!r}"
                )
            _check_range(name, getattr(self, name), AVRO_LONG_RANGE, "long")
        if self.record_time == 0:
            object.__setattr__(self, "record_time", now_micros())
        if isinstance(self.data, (bytearray, memoryview)):
            object.__setattr__(self, "data", bytes(self.data))
        if not isinstance(self.data, bytes):
            raise EventValidationError(f"field 'data' must be bytes, got {type(self.data).__name__}")
        if self.source not in SOURCES:
            raise EventValidationError(f"source {self.source!r} is not one of {', '.join(SOURCES)}")
        attributes = self.attributes
        if not isinstance(attributes, Mapping) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in attributes.items()
        ):
            raise EventValidationError(
                f"field 'attributes' must map str to str, got {attributes!r}"
            )
        if not isinstance(attributes, dict):
            object.__setattr__(self, "attributes", dict(attributes))
        for name in (
            "processor", "topic", "subscription", "ordering_key",
            "content_type", "correlation_id", "causation_id", "outcome",
        ):
            _check_optional_str(name, getattr(self, name))
        for name in ("delivery_attempt", "handling_micros"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise EventValidationError(f"field {name!r} must be an int or None, got {value!r}")
        if self.delivery_attempt is not None:
            _check_range("delivery_attempt", self.delivery_attempt, AVRO_INT_RANGE, "int")
        if self.handling_micros is not None:
            _check_range("handling_micros", self.handling_micros, AVRO_LONG_RANGE, "long")
        if not isinstance(self.schema_version, int) or isinstance(self.schema_version, bool):
            raise EventValidationError(f"field 'schema_version' must be an int, got {self.schema_version!r}")
        _check_range("schema_version", self.schema_version, AVRO_INT_RANGE, "int")

    @property
    def publish_datetime(self) -> dt.datetime:
        """The publish time as an aware UTC datetime."""
        return micros_to_datetime(self.publish_time)

    def replace(self, **changes: Any) -> "RecordedEvent":
        """Return a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_avro(self) -> dict[str, Any]:
        """Return the Avro datum for this event (raw longs, epoch days)."""
        from schemas._dates import date_to_days

        return {
            "schema_version": self.schema_version,
            "event_id": self.event_id,
            "logical_date": date_to_days(self.logical_date),
            "phase": self.phase,
            "direction": self.direction.value,
            "processor": self.processor,
            "topic": self.topic,
            "subscription": self.subscription,
            "publish_time": self.publish_time,
            "record_time": self.record_time,
            "ordering_key": self.ordering_key,
            "attributes": self.attributes,
            "data": self.data,
            "content_type": self.content_type,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "delivery_attempt": self.delivery_attempt,
            "outcome": self.outcome,
            "handling_micros": self.handling_micros,
            "source": self.source,
        }

    @classmethod
    def from_avro(cls, datum: Mapping[str, Any]) -> "RecordedEvent":
        """Build an event from a datum read with ``schemas.READER_SCHEMA``."""
        from schemas._dates import days_to_date

        return cls(
            event_id=datum["event_id"],
            logical_date=days_to_date(datum["logical_date"]),
            phase=datum["phase"],
            direction=Direction(datum["direction"]),
            processor=datum.get("processor"),
            topic=datum.get("topic"),
            subscription=datum.get("subscription"),
            publish_time=datum["publish_time"],
            record_time=datum["record_time"],
            ordering_key=datum.get("ordering_key"),
            attributes=datum.get("attributes") or {},
            data=datum["data"],
            content_type=datum.get("content_type"),
            correlation_id=datum.get("correlation_id"),
            causation_id=datum.get("causation_id"),
            delivery_attempt=datum.get("delivery_attempt"),
            outcome=datum.get("outcome"),
            handling_micros=datum.get("handling_micros"),
            source=datum["source"],
            schema_version=datum.get("schema_version", 1),
        )
