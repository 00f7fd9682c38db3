"""Terminal summary of a report: rich tables of outputs per topic, latency, end to end and failed checks."""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

from replayer.diff._text import visible
from replayer.diff.checks import FAIL

if TYPE_CHECKING:
    from rich.table import Table

    from replayer.diff.report import Report

_LOG_WIDTH = 160
_STATUS_STYLE = {"ok": "green", "warn": "yellow", "critical": "bold red", "fail": "bold red", "no_data": "dim"}


def _safe(text: object) -> str:
    """Return recorded text (a topic, a processor, a message) fit for the terminal.

    Control characters become ``\\u001b``-style text, so an escape sequence in
    a topic name cannot drive the terminal, and brackets are escaped so rich
    does not read them as markup.
    """
    from rich.markup import escape

    return escape(visible(str(text)))


def _ms(stats, name: str) -> str:
    return "" if stats is None else f"{getattr(stats, name):.1f}"


def print_summary(report: "Report", *, file: TextIO | None = None, width: int | None = None) -> None:
    """Print the summary tables to ``file`` (standard output by default)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(file=file, width=width, highlight=False)
    if width is None and not console.is_terminal:
        # Rich assumes 80 columns when the output is a file or a CI log, which
        # would cut phase, topic and processor names down to a few letters.
        console.width = _LOG_WIDTH
    outputs = Table(title="Outputs per phase and topic")
    for header in ("phase", "topic", "recorded", "replayed", "identical", "changed", "missing", "extra",
                   "dup rec/rep", "unmatchable"):
        outputs.add_column(header, justify="left" if header in ("phase", "topic") else "right",
                           overflow="fold")
    for topic in report.topics:
        counts = topic.counts
        outputs.add_row(
            _safe(topic.phase), _safe(topic.topic or "(none)"), str(counts.recorded_outputs), str(counts.replayed_outputs),
            str(counts.identical), str(counts.changed), str(counts.missing), str(counts.extra),
            f"{counts.duplicate_recorded}/{counts.duplicate_replayed}",
            str(counts.unmatchable_recorded + counts.unmatchable_replayed),
        )
    console.print(outputs)

    latency = Table(title="Handling time per phase and processor (ms)")
    for header in ("phase", "processor", "rec n", "rec p50", "rec p95", "rec max", "rec total", "rep n", "rep p50",
                   "rep p95", "rep max", "rep total", "status"):
        latency.add_column(header, justify="left" if header in ("phase", "processor", "status") else "right",
                           overflow="fold")
    for row in report.latency:
        latency.add_row(
            _safe(row.phase), _safe(row.processor or "(none)"), str(row.recorded.count) if row.recorded else "",
            _ms(row.recorded, "p50_ms"), _ms(row.recorded, "p95_ms"), _ms(row.recorded, "max_ms"),
            _ms(row.recorded, "total_ms"),
            str(row.replayed.count) if row.replayed else "", _ms(row.replayed, "p50_ms"),
            _ms(row.replayed, "p95_ms"), _ms(row.replayed, "max_ms"), _ms(row.replayed, "total_ms"),
            f"[{_STATUS_STYLE.get(row.status, '')}]{row.status}[/]",
        )
    console.print(latency)
    if report.end_to_end:
        console.print(_end_to_end_table(report))
        console.print(f"[dim]{escape(END_TO_END_NOTE)}[/]")

    failed = [check for check in report.checks if check.status != "ok"]
    if failed:
        checks = Table(title="Checks not passed")
        checks.add_column("status")
        checks.add_column("detail")
        for check in failed:
            # A message may contain brackets ("[thresholds] max_errors"), which rich would read as markup.
            checks.add_row(f"[{_STATUS_STYLE.get(check.status, '')}]{check.status}[/]", _safe(check.message))
        console.print(checks)
    for line in _problem_lines(report):
        console.print(line)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {_safe(warning)}")
    verdict = "[bold green]PASS[/]" if report.exit_code == 0 else "[bold red]FAIL[/]"
    failures = sum(1 for check in report.checks if check.status == FAIL)
    where = report.files.get("report_html") or report.files.get("report_json") or "(not written)"
    noun = "failed check" if failures == 1 else "failed checks"
    console.print(f"{verdict}: {failures} {noun}, exit code {report.exit_code}; report: {_safe(where)}")


# The terminal form of report_html.END_TO_END_CAPTION.
END_TO_END_NOTE = ("end to end: first recorded entry input to last output; replayed (simulated) = recorded "
                   "entry times + replayed handling time, not wall time")


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _end_to_end_table(report: "Report") -> "Table":
    """Return the table of end-to-end spans per date (cascade runs only)."""
    from rich.table import Table

    table = Table(title="End to end per date (s)")
    for header in ("date", "recorded", "replayed (simulated)", "warn", "critical", "status"):
        table.add_column(header, justify="left" if header in ("date", "status") else "right", overflow="fold")
    for end in report.end_to_end:
        threshold = end.threshold
        table.add_row(
            end.logical_date.isoformat(), _seconds(end.recorded_s), _seconds(end.replayed_s),
            "" if threshold.warn_s is None else f"{threshold.warn_s:g}",
            "" if threshold.critical_s is None else f"{threshold.critical_s:g}",
            f"[{_STATUS_STYLE.get(end.status, '')}]{end.status}[/]",
        )
    return table


def _problem_lines(report: "Report") -> list[str]:
    """Failed calls and damaged archive files, printed even when their limits allow them."""
    lines = []
    failed: dict[str, int] = {}
    for row in report.validation.rows:
        for category, count in row.errors.items():
            failed[category] = failed.get(category, 0) + count
    if failed:
        detail = ", ".join(f"{category} {count}" for category, count in sorted(failed.items()))
        lines.append(f"[yellow]failed calls:[/] {sum(failed.values())} ({detail})")
    damaged = report.validation.damaged_files
    if damaged:
        names = ", ".join(_safe(item.get("uri")) for item in damaged[:3])
        more = f" and {len(damaged) - 3} more" if len(damaged) > 3 else ""
        lines.append(f"[yellow]damaged archive files skipped:[/] {len(damaged)} ({names}{more})")
    return lines
