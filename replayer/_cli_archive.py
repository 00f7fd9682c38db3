"""``replay ls``, ``replay show`` and ``replay validate``: look into an archive without replaying it."""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime as dt
import json
import sys
from typing import Any, Iterable

import click

from recorder._reader import ArchiveReader, Partition, ReadStats
from recorder._storage import StorageError
from replayer.cli import cli
from replayer.errors import ReplayError
from schemas import Direction, RecordedEvent, micros_to_rfc3339

_DATE_HELP = "Only this logical date (YYYY-MM-DD)."


def _parse_day(option: str, value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        if len(value) != 10:
            raise ValueError(value)
        return dt.date.fromisoformat(value)
    except ValueError as error:
        raise ReplayError(
            f"{option} {value!r} is not a date; use YYYY-MM-DD, e.g. {option} 2024-03-09"
        ) from error


def _date_range(date: str | None, start: str | None, end: str | None) -> tuple[dt.date | None, dt.date | None]:
    """Turn --date / --start-date / --end-date into an inclusive range."""
    if date is not None and (start is not None or end is not None):
        raise ReplayError("--date selects one day; use it without --start-date/--end-date")
    if date is not None:
        day = _parse_day("--date", date)
        return day, day
    start_day = _parse_day("--start-date", start)
    end_day = _parse_day("--end-date", end)
    if start_day and end_day and start_day > end_day:
        raise ReplayError(
            f"--start-date {start!r} is after --end-date {end!r}; swap them"
        )
    return start_day, end_day


def _open_reader(archive: str, *, strict: bool, dedupe: bool) -> ArchiveReader:
    try:
        return ArchiveReader(archive, strict=strict, dedupe=dedupe)
    except StorageError as error:
        raise ReplayError(str(error)) from error


def _partitions(reader: ArchiveReader, start: dt.date | None, end: dt.date | None,
                phases: Iterable[str]) -> list[Partition]:
    try:
        return reader.list_partitions(start_date=start, end_date=end, phases=list(phases) or None)
    except StorageError as error:
        raise ReplayError(str(error)) from error


def _date_options(function):
    function = click.option("--end-date", help="Last logical date to include (YYYY-MM-DD).")(function)
    function = click.option("--start-date", help="First logical date to include (YYYY-MM-DD).")(function)
    function = click.option("--date", "date", help=_DATE_HELP)(function)
    return function


def _phase_option(function):
    return click.option("--phase", "phases", multiple=True,
                        help="Only this phase; repeat for several.")(function)


def _warn_damaged(stats: ReadStats, already: int = 0) -> None:
    for damaged in stats.damaged[already:]:
        click.echo(f"warning: skipped damage in {damaged.uri}: {damaged.reason} "
                   f"({damaged.records_recovered} records recovered)", err=True)


# ------------------------------------------------------------------------ ls


@cli.command("ls")
@click.argument("archive")
@_date_options
@_phase_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a table.")
def ls_command(archive: str, date: str | None, start_date: str | None, end_date: str | None,
               phases: tuple[str, ...], as_json: bool) -> int:
    """List an archive's partitions: dates, phases, files, bytes and events per direction.

    Event counts are after duplicate removal; damaged files are counted and
    named on standard error. ARCHIVE is a local folder or gs://bucket/prefix.
    """
    start, end = _date_range(date, start_date, end_date)
    reader = _open_reader(archive, strict=False, dedupe=True)
    rows = []
    for partition in _partitions(reader, start, end, phases):
        damaged_before = len(reader.stats.damaged)
        duplicates_before = reader.stats.duplicates_removed
        directions = collections.Counter(event.direction.value for event in reader.read_partition(partition))
        rows.append({
            "date": partition.date.isoformat(),
            "phase": partition.phase,
            "files": len(partition.files),
            "size_bytes": partition.size_bytes,
            "events": sum(directions.values()),
            "inputs": directions.get(Direction.INPUT.value, 0),
            "outputs": directions.get(Direction.OUTPUT.value, 0),
            "duplicates": reader.stats.duplicates_removed - duplicates_before,
            "damaged_files": len(reader.stats.damaged) - damaged_before,
        })
    _warn_damaged(reader.stats)
    if as_json:
        click.echo(json.dumps({"archive": archive, "partitions": rows,
                               "read": reader.stats.to_dict()}, indent=2))
        return 0
    if not rows:
        click.echo(f"no partitions in {archive} for the selected dates and phases")
        return 0
    _print_table(
        ["date", "phase", "files", "bytes", "inputs", "outputs", "events", "duplicates", "damaged"],
        [[row["date"], row["phase"], row["files"], row["size_bytes"], row["inputs"], row["outputs"],
          row["events"], row["duplicates"], row["damaged_files"]] for row in rows],
    )
    return 0


def _print_table(headers: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*headers, box=None, pad_edge=False, header_style="bold")
    for row in rows:
        table.add_row(*(f"{cell:,}" if isinstance(cell, int) else str(cell) for cell in row))
    # Off a terminal (pipes, CI logs) rich would wrap at 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 200, soft_wrap=False)
    console.print(table)


# ---------------------------------------------------------------------- show


def event_to_json(event: RecordedEvent) -> dict[str, Any]:
    """Return an event as a JSON-ready dict: RFC 3339 times, payload decoded when it is JSON."""
    document = {field.name: getattr(event, field.name) for field in dataclasses.fields(event)}
    document["logical_date"] = event.logical_date.isoformat()
    document["direction"] = event.direction.value
    document["publish_time"] = micros_to_rfc3339(event.publish_time)
    document["record_time"] = micros_to_rfc3339(event.record_time)
    document["attributes"] = dict(event.attributes)
    del document["data"]
    try:
        document["data"] = json.loads(event.data)
    except (ValueError, UnicodeDecodeError):
        document["data_base64"] = base64.b64encode(event.data).decode("ascii")
    return document


@cli.command("show")
@click.argument("archive")
@click.option("--date", "date", required=True, help=_DATE_HELP)
@_phase_option
@click.option("--direction", type=click.Choice(["INPUT", "OUTPUT"], case_sensitive=False),
              help="Only inputs or only outputs.")
@click.option("--processor", help="Only events of this processor.")
@click.option("--limit", type=click.IntRange(min=1), help="Print at most this many events.")
@click.option("--keep-duplicates", is_flag=True, help="Print duplicate deliveries too.")
@click.option("--strict", is_flag=True, help="Fail on the first damaged file instead of skipping it.")
def show_command(archive: str, date: str, phases: tuple[str, ...], direction: str | None,
                 processor: str | None, limit: int | None, keep_duplicates: bool, strict: bool) -> int:
    """Print one date's events as JSON lines, in archive order.

    The payload is under "data" when it is JSON, else base64 under
    "data_base64"; times are RFC 3339 UTC.
    """
    day = _parse_day("--date", date)
    reader = _open_reader(archive, strict=strict, dedupe=not keep_duplicates)
    wanted_direction = direction.upper() if direction else None
    printed = 0
    for partition in _partitions(reader, day, day, phases):
        for event in reader.read_partition(partition):
            if wanted_direction and event.direction.value != wanted_direction:
                continue
            if processor and event.processor != processor:
                continue
            click.echo(json.dumps(event_to_json(event), ensure_ascii=False))
            printed += 1
            if limit is not None and printed >= limit:
                _warn_damaged(reader.stats)
                return 0
    _warn_damaged(reader.stats)
    return 0


# ------------------------------------------------------------------ validate


def validate_archive(reader: ArchiveReader, partitions: list[Partition]) -> dict[str, Any]:
    """Count records, unique events and duplicates per date/phase/direction/processor."""
    counts: dict[tuple, dict[str, int]] = {}
    for partition in partitions:
        seen: set = set()
        for event in reader.read_partition(partition):
            group = (partition.date.isoformat(), partition.phase, event.direction.value, event.processor)
            entry = counts.setdefault(group, {"records": 0, "unique": 0, "duplicates": 0})
            entry["records"] += 1
            key = (event.direction, event.processor, event.event_id)
            if key in seen:
                entry["duplicates"] += 1
            else:
                seen.add(key)
                entry["unique"] += 1
    stats = reader.stats
    groups = [
        {"date": date, "phase": phase, "direction": direction, "processor": processor, **entry}
        for (date, phase, direction, processor), entry in sorted(
            counts.items(), key=lambda item: (item[0][0], item[0][1], item[0][2], item[0][3] or ""))
    ]
    duplicates = sum(group["duplicates"] for group in groups)
    return {
        "archive": reader.archive_uri,
        "partitions": len(partitions),
        "files": stats.files_read,
        "records": stats.records_read,
        "unique_events": stats.records_read - duplicates,
        "duplicates": duplicates,
        "groups": groups,
        "damaged": [damaged.to_dict() for damaged in stats.damaged],
        "writer_schemas": dict(stats.writer_schemas),
        "ok": bool(partitions) and not stats.damaged,
    }


@cli.command("validate")
@click.argument("archive")
@_date_options
@_phase_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
@click.option("--strict", is_flag=True, help="Fail on the first damaged file instead of reporting it.")
def validate_command(archive: str, date: str | None, start_date: str | None, end_date: str | None,
                     phases: tuple[str, ...], as_json: bool, strict: bool) -> int:
    """Check an archive: counts per date/phase/direction/processor, duplicates, damage, schemas.

    Exit status: 0 when every file reads completely (duplicates are reported
    as warnings, because at-least-once delivery records some messages twice);
    1 when a file is damaged or no partition matches the selection;
    2 for bad options, an unreadable archive, or (with --strict) the first
    damaged file.
    """
    start, end = _date_range(date, start_date, end_date)
    reader = _open_reader(archive, strict=strict, dedupe=False)
    partitions = _partitions(reader, start, end, phases)
    result = validate_archive(reader, partitions)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _print_validation(result)
    return 0 if result["ok"] else 1


def _print_validation(result: dict[str, Any]) -> None:
    if not result["partitions"]:
        click.echo(f"no partitions in {result['archive']} for the selected dates and phases")
        return
    _print_table(
        ["date", "phase", "direction", "processor", "records", "unique", "duplicates"],
        [[group["date"], group["phase"], group["direction"], group["processor"] or "-",
          group["records"], group["unique"], group["duplicates"]] for group in result["groups"]],
    )
    click.echo(f"{result['partitions']} partitions, {result['files']} files, "
               f"{result['records']} records, {result['unique_events']} unique events")
    for schema, files in sorted(result["writer_schemas"].items()):
        click.echo(f"writer schema {schema}: {files} files")
    if result["duplicates"]:
        click.echo(f"warning: {result['duplicates']} duplicate deliveries (same event id) were recorded")
    for damaged in result["damaged"]:
        location = f", block {damaged['block']}" if damaged["block"] is not None else ""
        click.echo(f"DAMAGED {damaged['uri']}: {damaged['reason']}{location}; "
                   f"{damaged['records_recovered']} records recovered")
    click.echo("archive OK" if result["ok"] else
               f"archive INCOMPLETE: {len(result['damaged'])} damaged files")
