"""Noise learning from repeated replays, latency statistics and thresholds."""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import io
import json

import pytest

from replayer.diff import DiffRules, build_report, latency_stats, learn_noise, match_outputs, parse_thresholds
from replayer.diff import print_summary
from replayer.diff.latency import CRITICAL, OK, WARN, latency_rows
from replayer.diff.report_html import END_TO_END_CAPTION, render_html
from replayer.diff.summary import END_TO_END_NOTE
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


def _cascade_report(replayed_at_micros, recorded_at_micros=9_000_000, thresholds=None, out_dir=None):
    entry = RecordedEvent(event_id="m0", logical_date=DAY, phase="phase2", direction=Direction.INPUT,
                          publish_time=1_710_000_000_000_000, data=b"{}", source="sdk", processor="p2")
    recorded = [entry, output("a", {"v": 1}, cause="m0", at_micros=recorded_at_micros, phase="phase3")]
    replayed = [output("r", {"v": 1}, cause="m0", at_micros=replayed_at_micros, phase="phase3")]
    return build_report(recorded_events=recorded, replayed_events=replayed,
                        run_meta={"mode": "cascade", "phases": ["phase2", "phase3"]},
                        thresholds=parse_thresholds(thresholds or {}), out_dir=out_dir)


def test_end_to_end_rounded_to_milliseconds(tmp_path):
    """recorded_s and replayed_s are rounded to 3 decimals in the report and in report.json."""
    report = _cascade_report(327_022_991, recorded_at_micros=513_000_400, out_dir=tmp_path)
    [end] = report.end_to_end
    assert (end.recorded_s, end.replayed_s) == (513.0, 327.023)
    [row] = json.loads((tmp_path / "report.json").read_text())["latency"]["end_to_end"]
    assert (row["recorded_s"], row["replayed_s"]) == (513.0, 327.023)


def test_end_to_end_status_follows_rounded_value():
    """A span that rounds to the limit is not above it, so the status agrees with the printed number."""
    at_limit = _cascade_report(3_000_400, thresholds={"end_to_end": {"critical_s": 3.0}})
    above = _cascade_report(3_000_600, thresholds={"end_to_end": {"critical_s": 3.0}})
    assert [(end.replayed_s, end.status) for end in at_limit.end_to_end] == [(3.0, OK)]
    assert [(end.replayed_s, end.status) for end in above.end_to_end] == [(3.001, CRITICAL)]


def test_end_to_end_html_labels_simulated():
    """report.html prints the spans with 3 decimals under a replayed (simulated) header and explains them."""
    page = render_html(_cascade_report(327_022_991, thresholds={"end_to_end": {"warn_s": 400}}))
    section = page[page.index("<h3>End to end per date</h3>"):]
    assert "<th>replayed s (simulated)</th>" in section
    assert html.escape(END_TO_END_CAPTION) in section
    assert '<td class="num">9.000</td><td class="num">327.023</td><td>warn 400 s</td>' in section
    assert "327.022991" not in page


def test_end_to_end_terminal_table():
    """The terminal summary has an end-to-end table with a replayed (simulated) column and a note."""
    buffer = io.StringIO()
    print_summary(_cascade_report(327_022_991), file=buffer, width=160)
    text = buffer.getvalue()
    assert "End to end per date (s)" in text
    assert "replayed (simulated)" in text
    assert "327.023" in text
    assert " ".join(END_TO_END_NOTE.split()) in " ".join(text.split())


def test_end_to_end_terminal_absent_in_isolated():
    """Without end-to-end rows (isolated mode) the terminal summary prints no end-to-end table."""
    entry = RecordedEvent(event_id="m0", logical_date=DAY, phase="phase2", direction=Direction.INPUT,
                          publish_time=1_710_000_000_000_000, data=b"{}", source="sdk", processor="p2")
    report = build_report(recorded_events=[entry], replayed_events=[output("r", {"v": 1}, cause="m0")],
                          run_meta={"mode": "isolated", "phases": ["phase2", "phase3"]})
    buffer = io.StringIO()
    print_summary(report, file=buffer, width=160)
    assert "End to end" not in buffer.getvalue()


# --- each threshold sets the exit code, and each limit is configurable ------------


def _pairs(recorded_payloads, replayed_payloads):
    recorded = [output(f"a{index}", payload, cause=f"m{index}") for index, payload in enumerate(recorded_payloads)]
    replayed = [output(f"r{index}", payload, cause=f"m{index}") for index, payload in enumerate(replayed_payloads)]
    return recorded, replayed


_SCENARIOS = {
    # name: (recorded payloads, replayed payloads, limit key, limit that lets it pass)
    "changed_ratio": ([{"v": 1}, {"v": 2}], [{"v": 1}, {"v": 3}], "max_changed_ratio", 0.5),
    "missing": ([{"v": 1}, {"v": 2}], [{"v": 1}], "max_missing", 1),
    "extra": ([{"v": 1}], [{"v": 1}, {"v": 2}], "max_extra", 1),
}


@pytest.mark.parametrize("name", sorted(_SCENARIOS))
def test_threshold_fails_then_passes(name):
    """Over the default limit of 0 the check fails with exit code 1; at a raised limit it passes."""
    recorded_payloads, replayed_payloads, key, limit = _SCENARIOS[name]
    recorded, replayed = _pairs(recorded_payloads, replayed_payloads)
    strict = build_report(recorded_events=recorded, replayed_events=replayed)
    relaxed = build_report(recorded_events=recorded, replayed_events=replayed,
                           thresholds=parse_thresholds({key: limit}))
    assert strict.exit_code == 1
    assert {check.name for check in strict.failed_checks} == {name}
    assert relaxed.exit_code == 0
    assert relaxed.failed_checks == ()


def test_duplicates_threshold():
    """A replayed duplicate fails max_duplicates = 0 and passes max_duplicates = 1."""
    recorded = [output("a", {"v": 1}, cause="m")]
    replayed = [output("r", {"v": 1}, cause="m"), output("r2", {"v": 1}, cause="m", at_micros=5)]
    strict = build_report(recorded_events=recorded, replayed_events=replayed)
    relaxed = build_report(recorded_events=recorded, replayed_events=replayed,
                           thresholds=parse_thresholds({"max_duplicates": 1}))
    assert [check.name for check in strict.failed_checks] == ["duplicates"]
    assert relaxed.exit_code == 0


def test_recorded_duplicates_do_not_fail():
    """Duplicates already in the recording are reported but never fail the replay."""
    recorded = [output("a", {"v": 1}, cause="m"), output("a2", {"v": 1}, cause="m", at_micros=5)]
    report = build_report(recorded_events=recorded, replayed_events=[output("r", {"v": 1}, cause="m")])
    assert (report.totals.duplicate_recorded, report.exit_code) == (1, 0)


def test_unmatchable_threshold():
    """An output without its key pointer fails max_unmatchable = 0."""
    rules = DiffRules(keys={"t": ("/id",)})
    recorded = [output("a", {"id": 1}, cause="m"), output("b", {"v": 1}, cause="n")]
    replayed = [output("r", {"id": 1}, cause="m")]
    strict = build_report(recorded_events=recorded, replayed_events=replayed, rules=rules)
    relaxed = build_report(recorded_events=recorded, replayed_events=replayed, rules=rules,
                           thresholds=parse_thresholds({"max_unmatchable": 1}))
    assert [check.name for check in strict.failed_checks] == ["unmatchable"]
    assert relaxed.exit_code == 0


def test_changed_ratio_at_limit_passes():
    """A changed ratio equal to max_changed_ratio passes; only a larger one fails."""
    recorded, replayed = _pairs([{"v": 1}, {"v": 2}, {"v": 3}, {"v": 4}], [{"v": 1}, {"v": 2}, {"v": 3}, {"v": 5}])
    at_limit = build_report(recorded_events=recorded, replayed_events=replayed,
                            thresholds=parse_thresholds({"max_changed_ratio": 0.25}))
    below = build_report(recorded_events=recorded, replayed_events=replayed,
                         thresholds=parse_thresholds({"max_changed_ratio": 0.2}))
    assert (at_limit.exit_code, below.exit_code) == (0, 1)


def test_thresholds_per_topic_scope():
    """Each phase and topic is checked on its own: a clean topic passes beside a failing one."""
    recorded = [output("a", {"v": 1}, cause="m", topic="good"), output("b", {"v": 1}, cause="n", topic="bad")]
    replayed = [output("r", {"v": 1}, cause="m", topic="good")]
    report = build_report(recorded_events=recorded, replayed_events=replayed)
    failed = {(check.name, check.scope["topic"]) for check in report.failed_checks}
    assert failed == {("missing", "bad")}


def test_latency_statistic_selects_value():
    """The configured statistic decides: a single slow call breaks a max limit but not a p50 limit."""
    calls = _calls([100_000] * 9 + [5_000_000])
    by_max = latency_rows([], calls, parse_thresholds({"latency": {"critical_s": 1.0, "statistic": "max"}}))
    by_p50 = latency_rows([], calls, parse_thresholds({"latency": {"critical_s": 1.0, "statistic": "p50"}}))
    assert (by_max[0].status, by_p50[0].status) == (CRITICAL, OK)


def test_latency_per_phase_limits():
    """A phase's own limits replace the defaults for that phase only."""
    thresholds = parse_thresholds({"latency": {"critical_s": 1.0, "phase2": {"critical_s": 10.0}}})
    rows = latency_rows([], _calls([2_000_000] * 3, phase="phase2") + _calls([2_000_000] * 3, phase="phase3"),
                        thresholds)
    assert {row.phase: row.status for row in rows} == {"phase2": OK, "phase3": CRITICAL}


def test_latency_row_stats_fields():
    """A latency row has count, p50, p95, max and total for both sides, in milliseconds."""
    entry = RecordedEvent(event_id="m0", logical_date=DAY, phase="phase3", direction=Direction.INPUT,
                          publish_time=1_710_000_000_000_000, data=b"{}", source="sdk", processor="p",
                          handling_micros=40_000)
    [row] = latency_rows([entry], _calls([10_000, 20_000, 30_000]), parse_thresholds(None))
    assert (row.recorded.count, row.recorded.total_ms, row.recorded_source) == (1, 40.0, "handling_micros")
    assert (row.replayed.count, row.replayed.p50_ms, row.replayed.max_ms, row.replayed.total_ms) == (
        3, 20.0, 30.0, 60.0)
    assert row.replayed.p95_ms == 29.0
    assert row.status == "ok"


def test_no_latency_threshold_no_check():
    """Without latency limits no latency check is created, so no latency can fail the run."""
    report = build_report(recorded_events=[], replayed_events=[], calls=_calls([60_000_000]))
    assert [check.name for check in report.checks if check.name == "latency"] == []
    assert report.exit_code == 0


def test_end_to_end_isolated_not_reported():
    """End-to-end time is a cascade measure; an isolated run has none."""
    entry = RecordedEvent(event_id="m0", logical_date=DAY, phase="phase2", direction=Direction.INPUT,
                          publish_time=1_710_000_000_000_000, data=b"{}", source="sdk", processor="p2")
    report = build_report(recorded_events=[entry], replayed_events=[output("r", {"v": 1}, cause="m0")],
                          run_meta={"mode": "isolated", "phases": ["phase2", "phase3"]})
    assert report.end_to_end == ()


def test_end_to_end_per_date():
    """Two dates in a cascade give two end-to-end rows, each from its own first input."""
    other_day = DAY + dt.timedelta(days=1)
    entries = [RecordedEvent(event_id=f"m{day.day}", logical_date=day, phase="phase2", direction=Direction.INPUT,
                             publish_time=1_710_000_000_000_000 + offset, data=b"{}", source="sdk",
                             processor="p2")
               for day, offset in ((DAY, 0), (other_day, 86_400_000_000))]
    replayed = [output("r1", {"v": 1}, cause="m9", at_micros=2_000_000),
                dataclasses.replace(output("r2", {"v": 1}, cause="m10", at_micros=86_400_000_000 + 5_000_000),
                                    logical_date=other_day)]
    report = build_report(recorded_events=entries, replayed_events=replayed,
                          run_meta={"mode": "cascade", "phases": ["phase2", "phase3"]})
    assert [(end.logical_date, end.replayed_s) for end in report.end_to_end] == [(DAY, 2.0), (other_day, 5.0)]


def test_noise_unstable_outputs_listed():
    """An output present in one replay and not the other is listed as unstable, not as a field."""
    first = _run(1)
    second = _run(1)[:2]
    model = learn_noise([first, second], DiffRules())
    assert model.fields == ()
    assert model.unstable_outputs == (("t", 1),)


def test_noise_model_in_report_json():
    """The noise model's JSON form names runs, fields with change counts and unstable outputs."""
    model = learn_noise([_run(1), _run(2), _run(3)], DiffRules())
    data = model.to_dict()
    assert data["runs"] == 3
    assert {"topic": "t", "part": "data", "pattern": "/run", "changes": 6, "pairs_compared": 6} in data["fields"]
    assert data["unstable_outputs"] == []
