"""Pacing: publish-time order, absolute schedule, speed, idle-gap cap, lateness."""

from __future__ import annotations

import dataclasses

import fastavro
import pytest

from replayer.pacing import (
    ManualClock,
    MonotonicClock,
    Pacer,
    count_out_of_order,
    lateness_stats,
    order_events,
    plan_schedule,
)
from schemas import datetime_to_micros


@dataclasses.dataclass(frozen=True)
class Archived:
    message_id: str
    publish_time: int
    ordering_key: str | None = None


def _read_case(cases_dir, name: str) -> list[Archived]:
    with open(cases_dir / "12-replay-pacing-out-of-order" / name, "rb") as handle:
        return [Archived(r["message_id"], datetime_to_micros(r["publish_time"]), r["ordering_key"])
                for r in fastavro.reader(handle)]


def _plan(items, **options):
    return plan_schedule(items, publish_time=lambda a: a.publish_time, event_id=lambda a: a.message_id,
                         ordering_key=lambda a: a.ordering_key, **options)


def _run(schedule, clock):
    pacer = Pacer(clock)
    sent = []
    for release in schedule.releases:
        pacer.wait_for(release.offset_micros)
        sent.append((release.item.message_id, clock.now_micros() - pacer.start_micros))
    return sent


def test_pace_case_at_1x(cases_dir):
    """pace.avro at 1x releases in publish order at 0, 1, 2, 4, 5, 9 s."""
    schedule = _plan(_read_case(cases_dir, "pace.avro"), speed=1.0)
    sent = _run(schedule, ManualClock(start_micros=5_000_000))
    assert sent == [("p-a", 0), ("p-b", 1_000_000), ("p-c", 2_000_000), ("p-d", 4_000_000),
                    ("p-e", 5_000_000), ("p-f", 9_000_000)]
    assert schedule.planned_duration_s == 9.0


def test_pace_case_at_10x(cases_dir):
    """pace.avro at 10x releases at 0, 0.1, 0.2, 0.4, 0.5, 0.9 s."""
    schedule = _plan(_read_case(cases_dir, "pace.avro"), speed=10.0)
    sent = _run(schedule, ManualClock())
    assert [offset for _, offset in sent] == [0, 100_000, 200_000, 400_000, 500_000, 900_000]
    assert [name for name, _ in sent] == ["p-a", "p-b", "p-c", "p-d", "p-e", "p-f"]


def test_out_of_order_count(cases_dir):
    """pace.avro has two events out of time order in archive order (p-b, p-d)."""
    events = _read_case(cases_dir, "pace.avro")
    assert count_out_of_order(e.publish_time for e in events) == 2
    assert count_out_of_order(e.publish_time for e in _read_case(cases_dir, "gap.avro")) == 0


@pytest.mark.parametrize(("speed", "expected_s"), [(1.0, 21601.0), (10.0, 2160.1)])
def test_gap_planned_duration(cases_dir, speed, expected_s):
    """gap.avro plans 21601 s at 1x and 2160.1 s at 10x."""
    schedule = _plan(_read_case(cases_dir, "gap.avro"), speed=speed)
    assert schedule.planned_duration_s == pytest.approx(expected_s, abs=1e-6)
    assert schedule.gaps_shortened == 0


def test_max_gap_caps_idle_period(cases_dir):
    """A 5 s gap cap makes gap.avro take 6 s at 1x and counts the shortened gap."""
    schedule = _plan(_read_case(cases_dir, "gap.avro"), speed=1.0, max_gap_s=5)
    assert [r.offset_micros for r in schedule.releases] == [0, 1_000_000, 6_000_000]
    assert schedule.planned_duration_s == 6.0
    assert schedule.gaps_shortened == 1


def test_max_speed_releases_at_once(cases_dir):
    """Speed max gives every release offset 0 and a zero planned duration."""
    schedule = _plan(_read_case(cases_dir, "pace.avro"), speed=None)
    assert {r.offset_micros for r in schedule.releases} == {0}
    assert schedule.planned_duration_micros == 0


def test_slow_call_does_not_shift_schedule():
    """A slow call makes the next release late but leaves later deadlines where they were."""
    items = [Archived(f"e{i}", i * 1_000_000) for i in range(4)]
    schedule = _plan(items, speed=1.0)
    clock = ManualClock()
    pacer = Pacer(clock)
    for index, release in enumerate(schedule.releases):
        pacer.wait_for(release.offset_micros)
        if index == 0:
            clock.advance(2_500_000)  # the first processor call takes 2.5 s
    assert pacer.lateness_micros == [0, 1_500_000, 500_000, 0]
    assert clock.sleeps == [3_000_000]


def test_order_events_tie_breaks():
    """Equal publish times sort by event id, except within an ordering key, which keeps recorded order."""
    items = [Archived("z", 10, "k"), Archived("a", 10, "k"), Archived("m", 10, None), Archived("b", 5, None)]
    ordered = order_events(items, publish_time=lambda a: a.publish_time, event_id=lambda a: a.message_id,
                           ordering_key=lambda a: a.ordering_key)
    assert [a.message_id for a in ordered] == ["b", "z", "m", "a"]


def test_lateness_stats_percentiles():
    """Lateness is summarised as nearest-rank p50/p99 and max in milliseconds."""
    stats = lateness_stats([0, 1000, 2000, 3000] + [0] * 96)
    assert stats.releases == 100
    assert stats.p50_ms == 0.0
    assert stats.p99_ms == 2.0
    assert stats.max_ms == 3.0


def test_real_clock_reports_lateness():
    """On the real clock a 10x schedule of 20 releases is never early and its lateness is measured."""
    items = [Archived(f"e{i:02d}", i * 50_000) for i in range(20)]
    schedule = _plan(items, speed=10.0)
    clock = MonotonicClock()
    pacer = Pacer(clock)
    for release in schedule.releases:
        pacer.wait_for(release.offset_micros)
    elapsed = clock.now_micros() - pacer.start_micros
    stats = pacer.stats()
    assert stats.releases == 20
    assert elapsed >= schedule.planned_duration_micros
    assert len(pacer.lateness_micros) == 20
    assert min(pacer.lateness_micros) >= 0
    assert 0 <= stats.p50_ms <= stats.p99_ms <= stats.max_ms
