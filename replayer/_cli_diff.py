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
from replayer._cli_archive import _date_range, _open_reader
from replayer.cli import cli
from replayer.config import ReplayConfig, check_output_location, load_diff_config
from replayer.errors import ReplayError
from schemas import Direction, RecordedEvent


def _read(reader: ArchiveReader, start: dt.date | None, end: dt.date | None,
          phases: list[str] | None) -> list[RecordedEvent]:
    try:
        return list(reader.read(start_date=start, end_date=end, phases=phases))
    except StorageError as error:
        raise ReplayError(str(error)) from error


def _describe_selection(start: dt.date | None, end: dt.date | None, phases: list[str] | None) -> str:
    parts = []
    if start is not None and start == end:
        parts.append(f"--date {start.isoformat()}")
    else:
        if start is not None:
            parts.append(f"--start-date {start.isoformat()}")
        if end is not None:
            parts.append(f"--end-date {end.isoformat()}")
    parts.extend(f"--phase {phase}" for phase in phases or ())
    return " ".join(parts) or "the selection"


def _check_selection(readers: dict[str, ArchiveReader], start: dt.date | None, end: dt.date | None,
                     phases: list[str] | None) -> None:
    """Reject a selection that matches no partition in either archive, so a diff never passes on nothing."""
    available: dict[str, list] = {}
    for role, reader in readers.items():
        try:
            if reader.list_partitions(start_date=start, end_date=end, phases=phases):
                return
            available[role] = reader.list_partitions()
        except StorageError as error:
            raise ReplayError(str(error)) from error
    found = "; ".join(
        f"{role} {reader.archive_uri!r} has "
        + (f"dates {', '.join(sorted({p.date.isoformat() for p in available[role]}))} and phases "
           f"{', '.join(sorted({p.phase for p in available[role]}))}" if available[role] else "no partitions")
        for role, reader in readers.items())
    raise ReplayError(f"no partition matches {_describe_selection(start, end, phases)} in A or B, so there is "
                      f"nothing to compare: {found}; choose dates and phases that were recorded")


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


NO_CONFIG_HINT = ("no --config given: no match keys or ignore rules applied; pass the replay.toml used for "
                  "the run (e.g. --config examples/nba/replay.toml)")


def _content_mismatch(report: Any) -> bool:
    """True when a group matched by content has missing or extra outputs.

    Without ``[diff]`` rules a field that differs on every run (an execution
    id, a timestamp) changes the content key, so such outputs show up as
    missing and extra instead of changed.
    """
    return any(group.strategy == "content" and (group.counts.missing or group.counts.extra)
               for group in report.match.groups)


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
@click.option("--strict", is_flag=True,
              help="Stop at a damaged archive file instead of skipping it and counting it.")
def diff_command(baseline: str, candidate: str, config_path: str | None, date: str | None,
                 start_date: str | None, end_date: str | None, phases: tuple[str, ...], match: str | None,
                 output: str | None, junit_xml: str | None, as_json: bool, strict: bool) -> int:
    """Compare the outputs of archive B (candidate) against archive A (baseline)."""
    import dataclasses

    from replayer.diff import DiffRules, Thresholds, build_report, print_summary
    from replayer.diff.junit import write_junit
    from replayer.diff.report_json import report_to_dict

    config: ReplayConfig | None = load_diff_config(config_path) if config_path is not None else None
    rules = config.diff if config is not None and config.diff is not None else DiffRules()
    if match is not None:
        rules = dataclasses.replace(rules, match=match, _compiled={})
    thresholds = config.thresholds if config is not None and config.thresholds is not None else Thresholds()
    configured_phases = list(config.phases) if config is not None else []
    unknown = [phase for phase in phases if configured_phases and phase not in configured_phases]
    if unknown:
        raise ReplayError(f"--phase {unknown[0]!r} is not a phase of {config_path}; its phases are "
                          f"{', '.join(configured_phases)}")
    start, end = _date_range(date, start_date, end_date)
    selected = list(phases) or None
    if output is not None:
        # Checked before reading, so a bad folder fails in a second instead of after the whole diff.
        check_output_location(output, {"archive A": baseline, "archive B": candidate},
                              reject_archive_inside=False)

    baseline_reader = _open_reader(baseline, strict=strict, dedupe=True)
    candidate_reader = _open_reader(candidate, strict=strict, dedupe=True)
    _check_selection({"A": baseline_reader, "B": candidate_reader}, start, end, selected)
    baseline_events = _read(baseline_reader, start, end, selected)
    candidate_events = _read(candidate_reader, start, end, selected)
    seen_phases = sorted({event.phase for event in baseline_events + candidate_events})
    order = list(phases) or [phase for phase in configured_phases if phase in seen_phases]
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
    if config_path is None and _content_mismatch(report):
        click.echo(NO_CONFIG_HINT, err=True)
    return report.exit_code


__all__ = ["diff_command"]
