"""Pacing: turns recorded publish times into an absolute release schedule.

Entry events are ordered by publish time (ties by event id, events of one
ordering key kept in their recorded order), never by archive position. At
speed ``s`` an event published ``t`` seconds after the first is released
``t / s`` seconds after the replay starts; ``None`` speed releases at once.
An optional cap shortens idle gaps. The schedule is anchored to the start, so
a slow processor call never pushes later releases back. Instead, how late
each release was is measured (:class:`LatenessStats`).

Clocks are injected (``now_micros()``, ``sleep_until(deadline_micros)``), so
tests drive an exact :class:`ManualClock`; :class:`MonotonicClock` sleeps until
shortly before a deadline and then spins briefly.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Generic, Iterable, Protocol, Sequence, TypeVar

T = TypeVar("T")

#: MonotonicClock sleeps until this long before a deadline, then spins.
DEFAULT_SPIN_MICROS = 500


class Clock(Protocol):
    """A monotonic clock in integer microseconds that can wait for a deadline."""

    def now_micros(self) -> int: ...

    def sleep_until(self, deadline_micros: int) -> None: ...


class MonotonicClock:
    """The real clock: ``time.perf_counter_ns``, sleep then a short final spin.

    ``time.sleep`` alone wakes up about 0.1-0.3 ms late on an idle core.
    Spinning the last ``spin_micros`` brings a release within a few
    microseconds, but a spin competes for the core when the machine is busy,
    so it stays short.
    """

    def __init__(self, *, spin_micros: int = DEFAULT_SPIN_MICROS) -> None:
        self.spin_micros = spin_micros

    def now_micros(self) -> int:
        return time.perf_counter_ns() // 1000

    def sleep_until(self, deadline_micros: int) -> None:
        remaining = deadline_micros - self.now_micros()
        if remaining > self.spin_micros:
            time.sleep((remaining - self.spin_micros) / 1e6)
        while self.now_micros() < deadline_micros:
            pass


class ManualClock:
    """A clock that moves only when advanced: ``sleep_until`` jumps to the deadline."""

    def __init__(self, start_micros: int = 0) -> None:
        self._now = start_micros
        self.sleeps: list[int] = []

    def now_micros(self) -> int:
        return self._now

    def sleep_until(self, deadline_micros: int) -> None:
        self.sleeps.append(deadline_micros)
        self._now = max(self._now, deadline_micros)

    def advance(self, micros: int) -> None:
        """Move the clock forward, as a processor call that took ``micros`` would."""
        self._now += micros


@dataclasses.dataclass(frozen=True)
class Release(Generic[T]):
    """One scheduled entry event: ``offset_micros`` after the replay start."""

    item: T
    offset_micros: int
    publish_time: int


@dataclasses.dataclass(frozen=True)
class Schedule(Generic[T]):
    """An absolute release schedule and what planning it found.

    ``planned_duration_micros`` is the offset of the last release;
    ``gaps_shortened`` counts idle gaps cut to ``max_gap_s``.
    """

    releases: tuple[Release[T], ...]
    speed: float | None
    max_gap_s: float | None
    planned_duration_micros: int
    gaps_shortened: int

    @property
    def planned_duration_s(self) -> float:
        return self.planned_duration_micros / 1e6


def order_events(items: Iterable[T], *, publish_time: Callable[[T], int], event_id: Callable[[T], str],
                 ordering_key: Callable[[T], str | None] = lambda _: None) -> list[T]:
    """Sort by (publish time, event id), keeping each ordering key's events in input order.

    Within one ordering key Pub/Sub delivers in publish order. When two of its
    events share a publish time, the event id would be an arbitrary
    tie-break, so their recorded order is kept instead.
    """
    indexed = list(enumerate(items))
    ordered = sorted(indexed, key=lambda pair: (publish_time(pair[1]), event_id(pair[1])))
    by_key: dict[str, list[int]] = {}
    for slot, (_, item) in enumerate(ordered):
        key = ordering_key(item)
        if key:
            by_key.setdefault(key, []).append(slot)
    for slots in by_key.values():
        members = sorted((ordered[slot] for slot in slots), key=lambda pair: (publish_time(pair[1]), pair[0]))
        for slot, member in zip(slots, members):
            ordered[slot] = member
    return [item for _, item in ordered]


def plan_schedule(items: Iterable[T], *, publish_time: Callable[[T], int], event_id: Callable[[T], str],
                  ordering_key: Callable[[T], str | None] = lambda _: None, speed: float | None = 1.0,
                  max_gap_s: float | None = None) -> Schedule[T]:
    """Order ``items`` and give each its release offset from the replay start."""
    if speed is not None and not speed > 0:
        raise ValueError(f"speed {speed!r} must be positive, or None for as fast as possible")
    if max_gap_s is not None and max_gap_s < 0:
        raise ValueError(f"max_gap_s {max_gap_s!r} must be >= 0")
    ordered = order_events(items, publish_time=publish_time, event_id=event_id, ordering_key=ordering_key)
    max_gap_micros = None if max_gap_s is None else round(max_gap_s * 1e6)
    releases: list[Release[T]] = []
    recorded_offset = 0
    gaps_shortened = 0
    previous_time: int | None = None
    for item in ordered:
        current = publish_time(item)
        if previous_time is not None:
            gap = max(0, current - previous_time)
            if max_gap_micros is not None and gap > max_gap_micros:
                gap = max_gap_micros
                gaps_shortened += 1
            recorded_offset += gap
        previous_time = current
        offset = 0 if speed is None else round(recorded_offset / speed)
        releases.append(Release(item=item, offset_micros=offset, publish_time=current))
    duration = releases[-1].offset_micros if releases else 0
    return Schedule(releases=tuple(releases), speed=speed, max_gap_s=max_gap_s,
                    planned_duration_micros=duration, gaps_shortened=gaps_shortened)


def count_out_of_order(publish_times: Iterable[int]) -> int:
    """Count events published before an event that precedes them in archive order."""
    latest: int | None = None
    count = 0
    for value in publish_times:
        if latest is not None and value < latest:
            count += 1
        else:
            latest = value
    return count


@dataclasses.dataclass(frozen=True)
class LatenessStats:
    """How late releases were against the schedule, in milliseconds."""

    releases: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values`` (0.0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def lateness_stats(lateness_micros: Iterable[int]) -> LatenessStats:
    """Summarise per-release lateness (microseconds) as p50/p99/max milliseconds."""
    values = [max(0, v) / 1000 for v in lateness_micros]
    return LatenessStats(releases=len(values), p50_ms=round(percentile(values, 0.50), 3),
                         p99_ms=round(percentile(values, 0.99), 3),
                         max_ms=round(max(values, default=0.0), 3))


class Pacer:
    """Releases scheduled items on an injected clock, measuring lateness.

    The first :meth:`wait_for` anchors the schedule to the clock's current time
    (unless ``start_micros`` is given); each deadline is start + offset.
    """

    def __init__(self, clock: Clock, *, start_micros: int | None = None, paced: bool = True) -> None:
        self.clock = clock
        self.start_micros = start_micros
        self.paced = paced
        self.lateness_micros: list[int] = []

    def wait_micros(self, offset_micros: int) -> int:
        """Return how long :meth:`wait_for` would wait for ``offset_micros`` now (0 when unpaced or due)."""
        if not self.paced:
            return 0
        start = self.clock.now_micros() if self.start_micros is None else self.start_micros
        return max(0, start + offset_micros - self.clock.now_micros())

    def wait_for(self, offset_micros: int) -> int:
        """Wait until ``offset_micros`` after the start; return how late (micros) the release is.

        Unpaced (speed ``max``) releases never wait and are never late,
        because there is no schedule to be late against.
        """
        if not self.paced:
            self.lateness_micros.append(0)
            return 0
        if self.start_micros is None:
            self.start_micros = self.clock.now_micros()
        deadline = self.start_micros + offset_micros
        if self.clock.now_micros() < deadline:
            self.clock.sleep_until(deadline)
        late = max(0, self.clock.now_micros() - deadline)
        self.lateness_micros.append(late)
        return late

    def stats(self) -> LatenessStats:
        return lateness_stats(self.lateness_micros)
