"""Logical date resolution: which business date a message belongs to.

In order: an explicit date, a configured attribute, a configured JSON pointer
into the payload, or the publish time converted to a configured IANA time
zone. NBA games that end after midnight UTC belong to the previous US date,
which is why the time zone matters.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import zoneinfo
from typing import Any, Mapping

from schemas._event import EventValidationError, micros_to_datetime
from schemas._pointer import MISSING, resolve_pointer, split_pointer

_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


def date_to_days(value: dt.date) -> int:
    """Days since 1970-01-01 (the Avro ``date`` logical type)."""
    return value.toordinal() - _EPOCH_ORDINAL


def days_to_date(days: int) -> dt.date:
    """Inverse of :func:`date_to_days`."""
    return dt.date.fromordinal(days + _EPOCH_ORDINAL)


def parse_date(value: Any, *, field: str = "date") -> dt.date:
    """Parse ``YYYY-MM-DD`` (or the date part of an ISO timestamp) to a date."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and len(value) >= 10:
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            pass
    raise EventValidationError(
        f"{field} {value!r} is not a date; expected YYYY-MM-DD, e.g. 2024-01-15"
    )


@dataclasses.dataclass(frozen=True)
class DateRule:
    """How to find an event's logical date.

    ``attribute`` names a Pub/Sub attribute, ``json_pointer`` a field of a JSON
    payload; ``time_zone`` is the IANA zone whose calendar date of the publish
    time is the fallback.
    """

    attribute: str | None = None
    json_pointer: str | None = None
    time_zone: str = "UTC"

    def __post_init__(self) -> None:
        try:
            zoneinfo.ZoneInfo(self.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
            raise EventValidationError(
                f"time zone {self.time_zone!r} is not an IANA zone name; use e.g. "
                "'America/New_York' or 'UTC'"
            ) from error
        if self.json_pointer is not None:
            try:
                split_pointer(self.json_pointer)
            except ValueError as error:
                raise EventValidationError(str(error)) from error

    def resolve(
        self,
        *,
        publish_time: int,
        attributes: Mapping[str, str] | None = None,
        data: bytes = b"",
        explicit: dt.date | str | None = None,
    ) -> dt.date:
        """Return the logical date; bad values in a source fall through to the next one."""
        if explicit is not None:
            return parse_date(explicit, field="explicit logical date")
        date = self.message_date(attributes=attributes, data=data)
        if date is not None:
            return date
        zone = zoneinfo.ZoneInfo(self.time_zone)
        return micros_to_datetime(publish_time).astimezone(zone).date()

    def message_date(
        self,
        *,
        attributes: Mapping[str, str] | None = None,
        data: bytes = b"",
    ) -> dt.date | None:
        """Return the date from the attribute, else the JSON pointer, or None if neither has one.

        A bad value is skipped so the next source is tried. A payload nested too
        deeply for ``json.loads`` counts as having no pointer value.
        """
        if self.attribute and attributes and self.attribute in attributes:
            try:
                return parse_date(attributes[self.attribute], field=f"attribute {self.attribute!r}")
            except EventValidationError:
                pass
        if self.json_pointer and data[:1] in (b"{", b"["):
            try:
                value = resolve_pointer(json.loads(data), self.json_pointer)
            except (ValueError, RecursionError):
                value = MISSING
            if value is not MISSING:
                try:
                    return parse_date(value, field=f"payload field {self.json_pointer!r}")
                except EventValidationError:
                    pass
        return None
