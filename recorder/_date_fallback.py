"""Logical date resolution that reports when a bad date value was passed over.

``DateRule.resolve`` lets an unparseable date attribute or payload date
fall through to the date of the publish time. That keeps recording going,
but files the event under a date nobody requested, so the recorder and the
tap use :func:`find_bad_date_source` to learn about it and count it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
from typing import Any, Callable, Mapping

from recorder._logging import get_logger
from schemas import MISSING, DateRule, parse_date, resolve_pointer

log = get_logger(__name__)

# Bad values are logged only this long, so a payload cannot flood the log.
_MAX_LOGGED_VALUE_CHARS = 40


@dataclasses.dataclass(frozen=True)
class DateFallback:
    """A date source that held a bad value: ``source`` is ``attribute`` or ``pointer``."""

    source: str
    name: str
    value: Any


def find_bad_date_source(rule: DateRule, *, attributes: Mapping[str, str] | None,
                         data: bytes) -> DateFallback | None:
    """Return the first bad date source of ``rule`` when no source yields a date, else None.

    Mirrors ``DateRule.message_date``: the attribute is tried first, then the
    payload pointer. A bad attribute followed by a good payload date is not
    a fallback, because the event still gets a date from its content.
    """
    first_bad: DateFallback | None = None
    if rule.attribute and attributes and rule.attribute in attributes:
        value = attributes[rule.attribute]
        try:
            parse_date(value)
            return None
        except ValueError:
            first_bad = DateFallback("attribute", rule.attribute, value)
    if rule.json_pointer and data[:1] in (b"{", b"["):
        try:
            value = resolve_pointer(json.loads(data), rule.json_pointer)
        except (ValueError, RecursionError):
            value = MISSING
        if value is not MISSING:
            try:
                parse_date(value)
                return None
            except ValueError:
                first_bad = first_bad or DateFallback("pointer", rule.json_pointer, value)
    return first_bad


class DateFallbackLog:
    """Counts date fallbacks and logs them at most once per ``interval_secs``."""

    def __init__(self, *, area: str, interval_secs: float, clock: Callable[[], float]) -> None:
        self.event_name = f"{area}.date_fallback"
        self.interval_secs = interval_secs
        self.clock = clock
        self.count = 0
        self._lock = threading.Lock()
        self._last_logged: float | None = None
        self._suppressed = 0

    def report(self, fallback: DateFallback, date_used: dt.date, **ids: Any) -> None:
        """Count one fallback; log it unless one was logged less than the interval ago."""
        now = self.clock()
        with self._lock:
            self.count += 1
            if self._last_logged is not None and now - self._last_logged < self.interval_secs:
                self._suppressed += 1
                return
            self._last_logged = now
            suppressed, self._suppressed = self._suppressed, 0
        text = repr(fallback.value)
        if len(text) > _MAX_LOGGED_VALUE_CHARS:
            text = text[:_MAX_LOGGED_VALUE_CHARS] + "..."
        log.warning(self.event_name, source=fallback.source, name=fallback.name, value=text,
                    date=date_used.isoformat(), suppressed=suppressed, **ids)
