"""``replay diff A B``: compare the OUTPUT events of two archives with the replay's diff rules.

A is the baseline (for example production, or yesterday's replay output), B
the candidate (a test environment, today's replay output). The same matching,
comparison, validation and reports as ``replay run`` apply; the exit code is 1
when a threshold is exceeded. B's recorded INPUT handling times, when it has
any, stand in for the replay's call records in the latency table.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any, Iterable

import click

from recorder._reader import ArchiveReader
from recorder._storage import StorageError
from replayer.cli import cli
from replayer.errors import ConfigError, ReplayError
from schemas import Direction, RecordedEvent

try:
    import tomllib
except ImportError:  # Python 3.10: the same parser, packaged as tomli
    import tomli as tomllib


def _parse_day(option: str, value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError as error:
        raise ReplayError(f"{option} {value!r} is not a date; use YYYY-MM-DD, e.g. {option} 2024-03-09") from error


def _date_range(date: str | None, start: str | None, end: str | None) -> tuple[dt.date | None, dt.date | None]:
    if date is not None and (start is not None or end is not None):
        raise ReplayError("--date selects one day; use it without --start-date/--end-date")
    if date is not None:
        day = _parse_day("--date", date)
        return day, day
    start_day, end_day = _parse_day("--start-date", start), _parse_day("--end-date", end)
    if start_day and end_day and start_day > end_day:
        raise ReplayError(f"--start-date {start!r} is after --end-date {end!r}; swap them")
    return start_day, end_day


def _load_tables(path: str | None) -> dict[str, Any]:
    """Read only what a diff needs from replay.toml: phases, [diff] and [thresholds]."""
    if path is None:
        return {}
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError as error:
        raise ConfigError(f"--config {path!r} was not found; pass the path of a replay.toml") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from error
    return {"file": path, "phases": document.get("phases"), "diff": document.get("diff"),
            "thresholds": document.get("thresholds")}


def _read(uri: str, start: dt.date | None, end: dt.date | None,
          phases: list[str] | None) -> tuple[list[RecordedEvent], ArchiveReader]:
    try:
        reader = ArchiveReader(uri)
        events = list(reader.read(start_date=start, end_date=end, phases=phases))
    except StorageError as error:
        raise ReplayError(str(error)) from error
    return events, reader


def _handling_records(events: Iterable[RecordedEvent]) -> list[dict[str, Any]]:
    """Turn the candidate's recorded INPUT handling times into call-like records for the latency table."""
    return [
        {"phase": event.phase, "processor": event.processor, "handling_micros": event.handling_micros}
        for event in events
        if event.direction is Direction.INPUT and event.handling_micros is not None
    ]


def _read_meta(baseline: ArchiveReader, candidate: ArchiveReader) -> dict[str, Any]:
    damaged = []
    for role, reader in (("baseline", baseline), ("candidate", candidate)):
        for item in reader.stats.damaged:
            damaged.append({**item.to_dict(), "archive": role})
    return {
        "files_read": baseline.stats.files_read + candidate.stats.files_read,
        "records_read": baseline.stats.records_read + candidate.stats.records_read,
        "duplicates_removed": baseline.stats.duplicates_removed + candidate.stats.duplicates_removed,
        "damaged": damaged,
    }


@cli.command("diff")
@click.argument("baseline", metavar="A")
@click.argument("candidate", metavar="B")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="replay.toml whose [diff] and [thresholds] tables (and phase order) apply.")
@click.option("--date", help="Only this logical date (YYYY-MM-DD).")
@click.option("--start-date", help="First logical date to include (YYYY-MM-DD).")
@click.option("--end-date", help="Last logical date to include (YYYY-MM-DD).")
@click.option("--phase", "phases", multiple=True, help="Only this phase; repeat for several.")
@click.option("--match", "match", type=click.Choice(["auto", "causation", "content"]),
              help="Matching for topics without keys (default: [diff] match, else auto).")
@click.option("--output", "output", type=click.Path(file_okay=False),
              help="Folder for report.json, diffs.jsonl and report.html (none written without it).")
@click.option("--junit-xml", "junit_xml", type=click.Path(dir_okay=False), help="Write JUnit XML to this file.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json to standard output instead of tables.")
def diff_command(baseline: str, candidate: str, config_path: str | None, date: str | None,
                 start_date: str | None, end_date: str | None, phases: tuple[str, ...], match: str | None,
                 output: str | None, junit_xml: str | None, as_json: bool) -> int:
    """Compare the outputs of archive B (candidate) against archive A (baseline)."""
    import dataclasses

    from replayer.diff import build_report, parse_diff_rules, parse_thresholds, print_summary
    from replayer.diff.junit import write_junit
    from replayer.diff.report_json import report_to_dict

    tables = _load_tables(config_path)
    rules = parse_diff_rules(tables.get("diff"), file=config_path)
    if match is not None:
        rules = dataclasses.replace(rules, match=match, _compiled={})
    thresholds = parse_thresholds(tables.get("thresholds"), file=config_path)
    start, end = _date_range(date, start_date, end_date)
    selected = list(phases) or None

    baseline_events, baseline_reader = _read(baseline, start, end, selected)
    candidate_events, candidate_reader = _read(candidate, start, end, selected)
    seen_phases = sorted({event.phase for event in baseline_events + candidate_events})
    order = list(phases) or [phase for phase in (tables.get("phases") or []) if phase in seen_phases]
    order += [phase for phase in seen_phases if phase not in order]
    dates = sorted({event.logical_date.isoformat() for event in baseline_events + candidate_events})
    run_meta = {
        "mode": "diff", "baseline": baseline, "candidate": candidate, "dates": dates, "phases": order,
        "read": _read_meta(baseline_reader, candidate_reader),
    }
    report = build_report(
        recorded_events=baseline_events,
        replayed_events=[event for event in candidate_events if event.direction is Direction.OUTPUT],
        calls=_handling_records(candidate_events),
        run_meta=run_meta,
        config=None,
        out_dir=output,
        junit_xml=junit_xml if output else None,
        rules=rules,
        thresholds=thresholds,
    )
    if junit_xml and not output:
        write_junit(report, junit_xml)
    if as_json:
        click.echo(json.dumps(report_to_dict(report), indent=2, ensure_ascii=False, default=str))
    else:
        print_summary(report, file=sys.stdout)
    return report.exit_code


__all__ = ["diff_command"]
