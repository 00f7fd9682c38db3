"""Noise learning from repeated replays, latency statistics and thresholds."""

from __future__ import annotations

import datetime as dt
import json

from replayer.diff import DiffRules, build_report, latency_stats, learn_noise, match_outputs, parse_thresholds
from replayer.diff.latency import CRITICAL, OK, WARN, latency_rows
from schemas import Direction, RecordedEvent

DAY = dt.date(2024, 3, 9)


def output(event_id, payload, *, cause, at_micros=0, phase="phase3", topic="t", attributes=None):
    return RecordedEvent(event_id=event_id, logical_date=DAY, phase=phase, direction=Direction.OUTPUT,
                         publish_time=1_710_000_000_000_000 + at_micros, data=json.dumps(payload).encode(),
                         source="replay", processor="p", topic=topic, causation_id=cause,
                         attributes=attributes or {})


def _run(stamp, total=5):
    return [output(f"r{index}", {"v": total, "plays": [{"id": 1, "ts": stamp + index}], "run": f"x{stamp}"},
                   cause=f"m{index}") for index in range(3)]


def test_noise_fields_found():
    """Fields that differ between replays are listed with how often they changed."""
    model = learn_noise([_run(1), _run(2), _run(3)], DiffRules())
    fields = {(field.pattern, field.changes, field.pairs_compared) for field in model.fields}
    assert fields == {("/plays/*/ts", 6, 6), ("/run", 6, 6)}


def test_noise_single_run_empty():
    """One run cannot show noise."""
    assert learn_noise([_run(1)], DiffRules()).fields == ()


def test_noise_applied_to_golden():
    """Noise fields are left out of the golden comparison; real changes still show."""
    model = learn_noise([_run(1), _run(2)], DiffRules())
    rules = model.apply(DiffRules())
    assert match_outputs(_run(7), _run(8), rules).counts.changed == 0
    assert match_outputs(_run(7), _run(8, total=6), rules).counts.changed == 3


def test_noise_attribute_ignored():
    """An attribute that differs between replays is ignored by name."""
    runs = [[output("r", {"v": 1}, cause="m", attributes={"sent": str(n)})] for n in range(2)]
    rules = learn_noise(runs, DiffRules()).apply(DiffRules())
    recorded = [output("a", {"v": 1}, cause="m", attributes={"sent": "old"})]
    assert match_outputs(recorded, runs[0], rules).counts.identical == 1


def test_noise_replays_in_report(tmp_path):
    """build_report learns noise from extra replays and lists it in report.json."""
    report = build_report(recorded_events=_run(0), replayed_events=_run(1), noise_replays=[_run(2)],
                          run_meta={"phases": ["phase3"]}, out_dir=tmp_path)
    assert report.totals.changed == 0
    document = json.loads((tmp_path / "report.json").read_text())
    assert {field["pattern"] for field in document["noise"]["fields"]} == {"/plays/*/ts", "/run"}


def test_latency_stats_values():
    """p50 and p95 interpolate between ranks; units are milliseconds."""
    stats = latency_stats([1000, 2000, 3000, 4000, 100000])
    assert (stats.count, stats.p50_ms, stats.max_ms, stats.total_ms) == (5, 3.0, 100.0, 110.0)
    assert round(stats.p95_ms, 3) == 80.8


def test_latency_stats_empty():
    """No values give no statistics."""
    assert latency_stats([]) is None


def _calls(micros, phase="phase3"):
    return [{"phase": phase, "processor": "p", "handling_micros": value} for value in micros]


def test_latency_threshold_levels():
    """The replayed p95 against warn and critical seconds gives ok, warn or critical."""
    thresholds = parse_thresholds({"latency": {"phase3": {"warn_s": 1.0, "critical_s": 2.0}}})
    status = {micros: latency_rows([], _calls([micros] * 5), thresholds)[0].status
              for micros in (500_000, 1_500_000, 2_500_000)}
    assert status == {500_000: OK, 1_500_000: WARN, 2_500_000: CRITICAL}


def test_critical_latency_fails_report():
    """A critical latency makes the exit code 1; a warning alone does not."""
    thresholds = parse_thresholds({"latency": {"warn_s": 1.0, "critical_s": 2.0}})
    slow = build_report(recorded_events=[], replayed_events=[], calls=_calls([3_000_000] * 3), thresholds=thresholds)
    warned = build_report(recorded_events=[], replayed_events=[], calls=_calls([1_500_000] * 3),
                          thresholds=thresholds)
    assert (slow.exit_code, warned.exit_code) == (1, 0)
    assert [check.status for check in warned.checks if check.name == "latency"] == ["warn"]


def test_end_to_end_cascade():
    """In cascade mode the end-to-end time runs from the first entry input to the last output."""
    entry = RecordedEvent(event_id="m0", logical_date=DAY, phase="phase2", direction=Direction.INPUT,
                          publish_time=1_710_000_000_000_000, data=b"{}", source="sdk", processor="p2")
    recorded = [entry, output("a", {"v": 1}, cause="m0", at_micros=9_000_000, phase="phase3")]
    replayed = [output("r", {"v": 1}, cause="m0", at_micros=4_000_000, phase="phase3")]
    report = build_report(recorded_events=recorded, replayed_events=replayed,
                          run_meta={"mode": "cascade", "phases": ["phase2", "phase3"]},
                          thresholds=parse_thresholds({"end_to_end": {"critical_s": 3.0}}))
    [end] = report.end_to_end
    assert (end.recorded_s, end.replayed_s, end.status) == (9.0, 4.0, CRITICAL)
    assert report.exit_code == 1
