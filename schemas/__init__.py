"""The recorded-event archive format: Avro schema v1 and its Python model.

``RECORDED_EVENT_SCHEMA`` is the parsed writer schema every archive file is
written with; ``READER_SCHEMA`` is the same schema with its logical types
removed, so timestamps come back as exact integer microseconds and dates as
integer days, never through ``datetime`` or float seconds.
"""

from schemas._event import (
    Direction,
    EventValidationError,
    RecordedEvent,
    SOURCES,
    datetime_to_micros,
    micros_to_datetime,
    micros_to_rfc3339,
    new_event_id,
    now_micros,
    parse_rfc3339_micros,
)
from schemas._dates import DateRule, date_to_days, days_to_date, parse_date
from schemas._pointer import MISSING, resolve_pointer, split_pointer
from schemas._loader import (
    READER_SCHEMA,
    RECORDED_EVENT_SCHEMA,
    SCHEMA_PATH,
    SCHEMA_VERSION,
    load_schema,
)

__all__ = [
    "DateRule",
    "MISSING",
    "Direction",
    "EventValidationError",
    "READER_SCHEMA",
    "RECORDED_EVENT_SCHEMA",
    "RecordedEvent",
    "SCHEMA_PATH",
    "SCHEMA_VERSION",
    "SOURCES",
    "date_to_days",
    "datetime_to_micros",
    "days_to_date",
    "load_schema",
    "micros_to_datetime",
    "micros_to_rfc3339",
    "new_event_id",
    "now_micros",
    "parse_date",
    "parse_rfc3339_micros",
    "resolve_pointer",
    "split_pointer",
]
