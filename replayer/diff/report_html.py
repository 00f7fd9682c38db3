"""``report.html``: one self-contained page, readable without JavaScript or network.

Inline CSS and an inline SVG bar chart (p95 handling time per phase, recorded
against replayed). Tables show the checks, counts per phase and topic,
validation and the first differences per topic. The page contains no script and
no link or resource address, so opening it makes no request.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from replayer.diff._text import visible

if TYPE_CHECKING:
    from replayer.diff.report import Report

DIFFERENCES_PER_TOPIC = 10
_VALUE_CHARS = 160
_RECORDED_COLOUR = "#6b8fb3"
_REPLAYED_COLOUR = "#d9822b"

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #1d2733; background: #fbfcfd; }
h1 { font-size: 1.5em; margin-bottom: 4px; }
h2 { font-size: 1.15em; margin-top: 28px; border-bottom: 1px solid #d5dbe1; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.9em; }
th, td { border: 1px solid #d5dbe1; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eef2f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: 0.95em; word-break: break-all; }
.verdict { display: inline-block; padding: 6px 14px; border-radius: 4px; font-weight: bold; color: #fff; }
.pass { background: #2e7d32; } .fail { background: #c62828; }
.status-ok { color: #2e7d32; } .status-warn { color: #b26a00; font-weight: bold; }
.status-fail, .status-critical { color: #c62828; font-weight: bold; }
.muted { color: #66727f; }
"""


def _e(value: Any) -> str:
    # Control characters are shown as \u0000 text: a raw NUL or escape byte is
    # invalid in HTML and invisible to the reader.
    return html.escape(visible("" if value is None else str(value)), quote=True)


def _short(text: str | None) -> str:
    if text is None:
        return "(absent)"
    return text if len(text) <= _VALUE_CHARS else text[:_VALUE_CHARS] + "..."


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{_e(header)}</th>" for header in headers)
    body = []
    for row in rows:
        cells = []
        for index, cell in enumerate(row):
            css = ' class="num"' if index in numeric else ""
            cells.append(f"<td{css}>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(headers)}" class="muted">none</td></tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _ms(stats: Any, name: str) -> str:
    return "" if stats is None else f"{getattr(stats, name):.1f}"


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _limits(warn_s: float | None, critical_s: float | None) -> str:
    """Return ``warn 2 s, critical 10 s`` with the limits that are set, or ``none``."""
    parts = [f"{name} {value:g} s" for name, value in (("warn", warn_s), ("critical", critical_s))
             if value is not None]
    return ", ".join(parts) or "none"


# Shown under the end-to-end table, because a reader takes "replayed s" for the
# replay's wall time otherwise. EndToEnd in replayer/diff/latency.py is the source.
END_TO_END_CAPTION = (
    "From the date's first recorded entry input to its last output. Recorded: production's publish times, "
    "with Pub/Sub delivery and queueing. Replayed (simulated): the lane gives each replayed output the publish "
    "time of the entry event that started its chain plus the replayed handling time of every call on the "
    "way, so this is not how long the replay took, and --speed does not change it. "
    "[thresholds.end_to_end] is checked against the replayed span."
)


def latency_chart(report: "Report") -> str:
    """Return an inline SVG with recorded and replayed p95 handling time per phase."""
    items = [(item.phase, item.recorded.p95_ms if item.recorded else None,
              item.replayed.p95_ms if item.replayed else None) for item in report.phase_latency]
    if not items:
        return '<p class="muted">No handling times were recorded or replayed.</p>'
    label_w, bar_h, gap, chart_w = 140, 14, 10, 520
    peak = max([value for _, left, right in items for value in (left, right) if value] + [1.0])
    height = len(items) * (2 * bar_h + gap) + 40
    parts = [f'<svg width="{label_w + chart_w + 120}" height="{height}" '
             'role="img" aria-label="p95 handling time per phase, recorded and replayed">']
    y = 10
    for phase, recorded, replayed in items:
        parts.append(f'<text x="{label_w - 8}" y="{y + bar_h + 4}" text-anchor="end" font-size="12">{_e(phase)}</text>')
        for value, colour in ((recorded, _RECORDED_COLOUR), (replayed, _REPLAYED_COLOUR)):
            width = 0 if value is None else max(1, round(chart_w * value / peak))
            label = "n/a" if value is None else f"{value:.1f} ms"
            parts.append(f'<rect x="{label_w}" y="{y}" width="{width}" height="{bar_h}" fill="{colour}"/>')
            parts.append(f'<text x="{label_w + width + 6}" y="{y + bar_h - 3}" font-size="11">{label}</text>')
            y += bar_h
        y += gap
    legend_y = y + 12
    parts.append(f'<rect x="{label_w}" y="{legend_y - 10}" width="12" height="12" fill="{_RECORDED_COLOUR}"/>')
    parts.append(f'<text x="{label_w + 18}" y="{legend_y}" font-size="12">recorded</text>')
    parts.append(f'<rect x="{label_w + 100}" y="{legend_y - 10}" width="12" height="12" fill="{_REPLAYED_COLOUR}"/>')
    parts.append(f'<text x="{label_w + 118}" y="{legend_y}" font-size="12">replayed</text>')
    parts.append("</svg>")
    return "".join(parts)


def _summary(report: "Report") -> str:
    passed = report.exit_code == 0
    verdict = ('<span class="verdict pass">PASS</span>' if passed
               else '<span class="verdict fail">FAIL</span>')
    run = report.run
    totals = report.totals
    facts = [
        ("mode", run.get("mode")), ("dates", ", ".join(map(str, run.get("dates") or []))),
        ("phases", ", ".join(map(str, run.get("phases") or []))), ("speed", run.get("speed")),
        ("exit code", report.exit_code),
        ("outputs", f"{totals.recorded_outputs} recorded, {totals.replayed_outputs} replayed"),
        ("keys", f"{totals.identical} identical, {totals.changed} changed, {totals.missing} missing, "
                 f"{totals.extra} extra, {totals.duplicate_recorded + totals.duplicate_replayed} duplicate, "
                 f"{totals.unmatchable_recorded + totals.unmatchable_replayed} unmatchable"),
    ]
    failed: dict[str, int] = {}
    for row in report.validation.rows:
        for category, count in row.errors.items():
            failed[category] = failed.get(category, 0) + count
    if failed:
        facts.append(("failed calls", f"{sum(failed.values())} ("
                      + ", ".join(f"{category} {count}" for category, count in sorted(failed.items())) + ")"))
    if report.validation.damaged_files:
        facts.append(("damaged files skipped", len(report.validation.damaged_files)))
    for warning in report.warnings:
        facts.append(("warning", warning))
    rows = [(f"<th>{_e(name)}</th>", _e(value)) for name, value in facts if value not in (None, "")]
    body = "".join(f"<tr>{name}<td>{value}</td></tr>" for name, value in rows)
    return f'<section id="summary"><h1>Replay report {verdict}</h1><table>{body}</table></section>'


def _checks(report: "Report") -> str:
    shown = [check for check in report.checks if check.status != "ok"]
    rows = [(f'<span class="status-{_e(check.status)}">{_e(check.status)}</span>', _e(check.name),
             _e(check.message)) for check in shown]
    ok = len(report.checks) - len(shown)
    return (f'<section id="checks"><h2>Checks</h2><p>{ok} of {len(report.checks)} checks passed; '
            f'those below did not.</p>{_table(["status", "check", "detail"], rows)}</section>')


def _counts(report: "Report") -> str:
    rows = []
    for topic in report.topics:
        counts = topic.counts
        rows.append((_e(topic.phase), f"<code>{_e(topic.topic)}</code>", _e(", ".join(topic.strategies)),
                     counts.recorded_outputs, counts.replayed_outputs, counts.identical, counts.changed,
                     counts.missing, counts.extra, f"{counts.duplicate_recorded} / {counts.duplicate_replayed}",
                     counts.unmatchable_recorded + counts.unmatchable_replayed, f"{counts.changed_ratio:.1%}"))
    headers = ["phase", "topic", "matched by", "recorded", "replayed", "identical", "changed", "missing", "extra",
               "duplicate (rec / rep)", "unmatchable", "changed ratio"]
    return f'<section id="counts"><h2>Outputs per phase and topic</h2>{_table(headers, rows, range(3, 12))}</section>'


def _latency(report: "Report") -> str:
    rows = []
    for row in report.latency:
        threshold = row.threshold
        limits = f"{threshold.statistic}: {_limits(threshold.warn_s, threshold.critical_s)}"
        rows.append((_e(row.phase), _e(row.processor), row.recorded.count if row.recorded else "",
                     _ms(row.recorded, "p50_ms"), _ms(row.recorded, "p95_ms"), _ms(row.recorded, "max_ms"),
                     row.replayed.count if row.replayed else "", _ms(row.replayed, "p50_ms"),
                     _ms(row.replayed, "p95_ms"), _ms(row.replayed, "max_ms"), _ms(row.replayed, "total_ms"),
                     _e(limits), f'<span class="status-{_e(row.status)}">{_e(row.status)}</span>'))
    headers = ["phase", "processor", "rec n", "rec p50 ms", "rec p95 ms", "rec max ms", "rep n", "rep p50 ms",
               "rep p95 ms", "rep max ms", "rep total ms", "threshold", "status"]
    ends = [(_e(end.logical_date), _seconds(end.recorded_s), _seconds(end.replayed_s),
             _e(_limits(end.threshold.warn_s, end.threshold.critical_s)),
             f'<span class="status-{_e(end.status)}">{_e(end.status)}</span>') for end in report.end_to_end]
    end_table = ""
    if report.end_to_end:
        end_headers = ["date", "recorded s", "replayed s (simulated)", "threshold", "status"]
        end_table = (f"<h3>End to end per date</h3><p>{_e(END_TO_END_CAPTION)}</p>"
                     + _table(end_headers, ends, (1, 2)))
    caption = "<p>p95 handling time per phase, all processors together (milliseconds).</p>"
    return (f'<section id="latency"><h2>Latency</h2>{caption}{latency_chart(report)}'
            f"{_table(headers, rows, range(2, 11))}{end_table}</section>")


def _validation(report: "Report") -> str:
    validation = report.validation
    rows = []
    for row in validation.rows:
        errors = ", ".join(f"{name}: {count}" for name, count in sorted(row.errors.items()))
        silent = '<span class="status-fail">never reported</span>' if row.silent else ""
        rows.append((_e(row.phase), _e(row.processor), row.recorded_input_records, row.recorded_inputs,
                     row.recorded_input_duplicates, row.recorded_outputs, row.recorded_output_duplicates,
                     row.replayed_calls, row.replayed_outputs, row.replayed_output_duplicates, _e(errors), silent))
    headers = ["phase", "processor", "input records", "unique inputs", "input duplicates", "recorded outputs",
               "recorded output dups", "replayed calls", "replayed outputs", "replayed output dups", "errors",
               "expected"]
    damaged = [(f"<code>{_e(item.get('uri'))}</code>", _e(item.get("reason")), _e(item.get("records_recovered")))
               for item in validation.damaged_files]
    return (f'<section id="validation"><h2>Validation</h2>'
            f"<p>Archive duplicates removed by the reader: {validation.archive_duplicates_removed}; "
            f"found in the events given: {validation.archive_duplicates_found}.</p>"
            f"{_table(headers, rows, range(2, 10))}<h3>Damaged files skipped</h3>"
            f"{_table(['file', 'reason', 'records recovered'], damaged)}</section>")


def _differences(report: "Report") -> str:
    parts = ['<section id="differences"><h2>First differences per topic</h2>']
    shown: dict[tuple[str, str | None], int] = {}
    rows_by_topic: dict[tuple[str, str | None], list[tuple[Any, ...]]] = {}
    for entry in report.match.entries():
        scope = (entry.phase, entry.topic)
        if shown.get(scope, 0) >= DIFFERENCES_PER_TOPIC:
            continue
        shown[scope] = shown.get(scope, 0) + 1
        event_ids = " / ".join(_e(value) for value in (entry.recorded_event_id, entry.replayed_event_id) if value)
        detail = _e(entry.reason or (f"{entry.side} copy of {entry.duplicate_of}" if entry.duplicate_of else ""))
        if entry.diffs:
            detail = "<br>".join(
                f"<code>{_e(diff.part + ':' if diff.part != 'data' else '')}{_e(diff.pointer or '(payload)')}</code> "
                f"{_e(diff.kind)}: <code>{_e(_short(diff.recorded))}</code> &rarr; "
                f"<code>{_e(_short(diff.replayed))}</code>"
                for diff in entry.diffs[:DIFFERENCES_PER_TOPIC]
            )
        rows_by_topic.setdefault(scope, []).append(
            (_e(entry.logical_date), _e(entry.category), f"<code>{_e(_short(entry.key))}</code>",
             f"<code>{event_ids}</code>", detail))
    if not rows_by_topic:
        parts.append('<p class="muted">No differences: every key is identical.</p>')
    for (phase, topic), rows in rows_by_topic.items():
        parts.append(f"<h3>{_e(phase)} / <code>{_e(topic)}</code></h3>")
        parts.append(_table(["date", "category", "key", "event ids", "differences"], rows))
    parts.append("</section>")
    return "".join(parts)


def _noise(report: "Report") -> str:
    if report.noise is None:
        return ""
    rows = [(f"<code>{_e(field.topic)}</code>", _e(field.part), f"<code>{_e(field.pattern)}</code>",
             f"{field.changes} of {field.pairs_compared}") for field in report.noise.fields]
    return (f'<section id="noise"><h2>Non-deterministic fields ({report.noise.runs} replays compared)</h2>'
            f"<p>These fields changed between replays of the same code and were left out of the comparison.</p>"
            f"{_table(['topic', 'part', 'path', 'changed in'], rows)}</section>")


def render_html(report: "Report") -> str:
    """Return the whole report page."""
    sections = [_summary(report), _checks(report), _counts(report), _latency(report), _validation(report),
                _differences(report), _noise(report)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>Replay report</title>"
            f"<style>{_CSS}</style></head><body>{''.join(sections)}</body></html>\n")


def write_html(report: "Report", path: str) -> None:
    """Write report.html."""
    from replayer.diff.report_json import _write_atomic

    _write_atomic(Path(path), render_html(report))
