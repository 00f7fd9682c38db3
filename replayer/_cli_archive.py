"""``replay ls``, ``replay show`` and ``replay validate``: look into an archive without replaying it."""

from __future__ import annotations

import base64
import collections
import contextlib
import dataclasses
import datetime as dt
import json
import sys
from typing import Any, Iterable, Iterator

import click

from recorder._archive_check import MisplacedRecords, find_folder_warnings, suggest_import_format
from recorder._reader import SCHEMA_MISMATCH, ArchiveReader, DamagedFile, Partition, ReadStats
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


# The storage layer retries GCS for minutes, which suits a recorder but not
# someone waiting at a terminal for `replay ls`.
DEFAULT_CLI_RETRY_SECS = 20.0


def _open_reader(archive: str, *, strict: bool, dedupe: bool,
                 retry_timeout_secs: float = DEFAULT_CLI_RETRY_SECS) -> ArchiveReader:
    try:
        storage = None
        if archive.startswith("gs://"):
            from recorder._storage import GcsStorage

            storage = GcsStorage(retry_timeout_secs=retry_timeout_secs)
        return ArchiveReader(archive, strict=strict, dedupe=dedupe, storage=storage)
    except StorageError as error:
        raise ReplayError(str(error)) from error


def _retry_option(function):
    return click.option(
        "--retry-timeout-secs", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_CLI_RETRY_SECS,
        show_default=True, help="gs:// archives: seconds to retry an unreachable Cloud Storage before failing.",
    )(function)


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
@_retry_option
def ls_command(archive: str, date: str | None, start_date: str | None, end_date: str | None,
               phases: tuple[str, ...], as_json: bool, retry_timeout_secs: float) -> int:
    """List an archive's partitions: dates, phases, files, bytes and events per direction.

    Event counts are after duplicate removal; damaged files are counted and
    named on standard error. ARCHIVE is a local folder or gs://bucket/prefix.
    """
    start, end = _date_range(date, start_date, end_date)
    reader = _open_reader(archive, strict=False, dedupe=True, retry_timeout_secs=retry_timeout_secs)
    with _storage_errors():
        rows = _partition_rows(reader, _partitions(reader, start, end, phases))
    _warn_damaged(reader.stats)
    if not rows:
        click.echo(f"note: no partitions in {archive} for the selected dates and phases", err=True)
    if as_json:
        click.echo(json.dumps({"archive": archive, "partitions": rows,
                               "read": reader.stats.to_dict()}, indent=2))
        return 0
    if not rows:
        return 0
    _print_table(
        ["date", "phase", "files", "bytes", "inputs", "outputs", "events", "duplicates", "damaged"],
        [[row["date"], row["phase"], row["files"], row["size_bytes"], row["inputs"], row["outputs"],
          row["events"], row["duplicates"], row["damaged_files"]] for row in rows],
    )
    return 0


@contextlib.contextmanager
def _storage_errors() -> Iterator[None]:
    """Turn a storage failure met while reading into one CLI error line."""
    try:
        yield
    except StorageError as error:
        raise ReplayError(str(error)) from error


def _partition_rows(reader: ArchiveReader, partitions: list[Partition]) -> list[dict[str, Any]]:
    rows = []
    for partition in partitions:
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
    return rows


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
@_retry_option
def show_command(archive: str, date: str, phases: tuple[str, ...], direction: str | None,
                 processor: str | None, limit: int | None, keep_duplicates: bool, strict: bool,
                 retry_timeout_secs: float) -> int:
    """Print one date's events as JSON lines, in archive order.

    The payload is under "data" when it is JSON, else base64 under
    "data_base64"; times are RFC 3339 UTC.
    """
    day = _parse_day("--date", date)
    reader = _open_reader(archive, strict=strict, dedupe=not keep_duplicates,
                          retry_timeout_secs=retry_timeout_secs)
    wanted_direction = direction.upper() if direction else None
    with _storage_errors():
        printed = _print_events(reader, _partitions(reader, day, day, phases), wanted_direction,
                                processor, limit)
    _warn_damaged(reader.stats)
    if not printed:
        selection = [f"date {day.isoformat()}"]
        selection += [f"phase {', '.join(phases)}"] if phases else []
        selection += [f"direction {wanted_direction}"] if wanted_direction else []
        selection += [f"processor {processor}"] if processor else []
        click.echo(f"note: no events in {archive} for {', '.join(selection)}", err=True)
    return 0


def _print_events(reader: ArchiveReader, partitions: list[Partition], direction: str | None,
                  processor: str | None, limit: int | None) -> int:
    printed = 0
    for partition in partitions:
        for event in reader.read_partition(partition):
            if direction and event.direction.value != direction:
                continue
            if processor and event.processor != processor:
                continue
            click.echo(json.dumps(event_to_json(event), ensure_ascii=False))
            printed += 1
            if limit is not None and printed >= limit:
                return printed
    return printed


# ------------------------------------------------------------------ validate


def validate_archive(reader: ArchiveReader, partitions: list[Partition], *,
                     start: dt.date | None = None, end: dt.date | None = None) -> dict[str, Any]:
    """Count records, unique events and duplicates per date/phase/direction/processor.

    Also reports records filed under another date or phase than their own
    (``misplaced``, which fails validation), folders the reader skips
    (``folder_warnings``) and, for files in a foreign Avro format, the
    ``replay import`` format that converts them (``import_suggestions``).
    """
    counts: dict[tuple, dict[str, int]] = {}
    misplaced = MisplacedRecords()
    for partition in partitions:
        seen: set = set()
        for event in reader.read_partition(partition):
            misplaced.check(partition.key, partition.date, partition.phase, event)
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
    misplaced_partitions = misplaced.to_list()
    folder_warnings = find_folder_warnings(reader.storage, reader.archive_uri, start_date=start, end_date=end)
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
        "misplaced": misplaced_partitions,
        "folder_warnings": [warning.to_dict() for warning in folder_warnings],
        "import_suggestions": _import_suggestions(reader, stats.damaged),
        "ok": bool(partitions) and not stats.damaged and not misplaced_partitions,
    }


def _import_suggestions(reader: ArchiveReader, damaged: list[DamagedFile]) -> dict[str, str]:
    """Map each file written in a foreign format that ``replay import`` reads to that format."""
    suggestions = {}
    for item in damaged:
        if item.kind != SCHEMA_MISMATCH:
            continue
        import_format = suggest_import_format(reader.storage, item.uri)
        if import_format is not None:
            suggestions[item.uri] = import_format
    return suggestions


@cli.command("validate")
@click.argument("archive")
@_date_options
@_phase_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
@click.option("--strict", is_flag=True, help="Fail on the first damaged file instead of reporting it.")
@_retry_option
def validate_command(archive: str, date: str | None, start_date: str | None, end_date: str | None,
                     phases: tuple[str, ...], as_json: bool, strict: bool, retry_timeout_secs: float) -> int:
    """Check an archive: counts per date/phase/direction/processor, duplicates, damage, schemas.

    Exit status: 0 when every file reads completely. Duplicates (at-least-once
    delivery records some messages twice) and folders the reader skips are
    reported as warnings. 1 when a file is damaged, a record sits under
    another date or phase than its own, or no partition matches the
    selection;
    2 for bad options, an unreadable archive, or (with --strict) the first
    damaged file.
    """
    start, end = _date_range(date, start_date, end_date)
    reader = _open_reader(archive, strict=strict, dedupe=False, retry_timeout_secs=retry_timeout_secs)
    partitions = _partitions(reader, start, end, phases)
    with _storage_errors():
        result = validate_archive(reader, partitions, start=start, end=end)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _print_validation(result)
    return 0 if result["ok"] else 1


def _print_validation(result: dict[str, Any]) -> None:
    for warning in result["folder_warnings"]:
        click.echo(f"warning: {warning['uri']}: {warning['reason']}")
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
        import_format = result["import_suggestions"].get(damaged["uri"])
        if import_format:
            click.echo(f"  this file is in the {import_format} format, not an archive file; convert it with "
                       f"replay import --format {import_format} --archive <new archive> --phase <phase> "
                       f"--direction INPUT|OUTPUT {damaged['uri']}")
    for entry in result["misplaced"]:
        click.echo(f"MISPLACED {entry['records']} records in partition {entry['partition']} have logical "
                   f"date {', '.join(entry['logical_dates'])} and phase {', '.join(entry['phases'])} "
                   f"(e.g. event {entry['example_event_ids'][0]}); move their files to the matching "
                   "date=/phase= folder")
    if result["ok"]:
        click.echo("archive OK")
        return
    problems = []
    if result["damaged"]:
        problems.append(f"{len(result['damaged'])} damaged files")
    if result["misplaced"]:
        problems.append(f"{sum(entry['records'] for entry in result['misplaced'])} misplaced records")
    click.echo(f"archive INCOMPLETE: {', '.join(problems)}")
