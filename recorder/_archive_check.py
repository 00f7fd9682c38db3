"""Layout checks of an archive that reading alone does not make: misplaced records, stray folders.

The reader trusts the ``date=YYYY-MM-DD/phase=<phase>`` folders: it skips
folders that do not parse and files every record under the folder it sits
in. ``replay validate`` uses these checks to report what that hides:

- records whose logical date or phase differs from their partition folder
  (a replay of that date would read them under the wrong date or phase);
- folders the reader ignores (``notadate``, ``date=2024-13-45``,
  ``date=2024-01-15/garbage``) and phase folders whose name is not a valid
  phase (``phase=UPPER``);
- files that another tool wrote in a format ``replay import`` can convert.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from recorder._reader import DATE_FOLDER, _parse_date_folder
from recorder._storage import Storage, join_uri
from schemas import RecordedEvent
from schemas._event import PHASE_PATTERN

PHASE_FOLDER = "phase="
# Misplaced records are summarised per partition; this many event ids are listed as examples.
MAX_EXAMPLE_EVENT_IDS = 3


@dataclasses.dataclass(frozen=True)
class FolderWarning:
    """A folder the reader ignores, or reads although its name is not a valid phase."""

    uri: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready dict."""
        return dataclasses.asdict(self)


def find_folder_warnings(storage: Storage, archive_uri: str, *, start_date: dt.date | None = None,
                         end_date: dt.date | None = None) -> list[FolderWarning]:
    """List the archive's date and phase folders that the reader skips or should not accept.

    Folders at the top that are not ``date=<valid date>`` are listed whatever
    the date range. Below a valid date folder, only dates in the range are
    checked.
    """
    warnings = []
    for date_name in storage.list_dirs(archive_uri):
        date_uri = join_uri(archive_uri, date_name)
        date = _parse_date_folder(date_name)
        if date is None:
            if date_name.startswith(DATE_FOLDER):
                reason = f"{date_name!r} is not a valid date folder (expected date=YYYY-MM-DD); its files are not read"
            else:
                reason = f"{date_name!r} is not a date=YYYY-MM-DD folder; its files are not read"
            warnings.append(FolderWarning(date_uri, reason))
            continue
        if (start_date and date < start_date) or (end_date and date > end_date):
            continue
        for phase_name in storage.list_dirs(date_uri):
            phase_uri = join_uri(date_uri, phase_name)
            if not phase_name.startswith(PHASE_FOLDER):
                warnings.append(FolderWarning(
                    phase_uri, f"{phase_name!r} is not a phase=<phase> folder; its files are not read"))
                continue
            phase = phase_name[len(PHASE_FOLDER):]
            if not PHASE_PATTERN.fullmatch(phase):
                warnings.append(FolderWarning(
                    phase_uri, f"phase {phase!r} is not a valid phase name (lower-case letters, digits, "
                               "'_' and '-'); no recorder writes it, so its files were put there by hand"))
    return warnings


class MisplacedRecords:
    """Collects records whose logical date or phase differs from their partition folder."""

    def __init__(self) -> None:
        self._by_partition: dict[str, dict[str, Any]] = {}

    def check(self, partition_key: str, date: dt.date, phase: str, event: RecordedEvent) -> None:
        """Note ``event`` if it does not belong in the partition of ``date`` and ``phase``."""
        if event.logical_date == date and event.phase == phase:
            return
        entry = self._by_partition.setdefault(partition_key, {
            "partition": partition_key, "records": 0, "logical_dates": set(), "phases": set(),
            "example_event_ids": [],
        })
        entry["records"] += 1
        entry["logical_dates"].add(event.logical_date.isoformat())
        entry["phases"].add(event.phase)
        if len(entry["example_event_ids"]) < MAX_EXAMPLE_EVENT_IDS:
            entry["example_event_ids"].append(event.event_id)

    def to_list(self) -> list[dict[str, Any]]:
        """Return one JSON-ready summary per partition holding misplaced records."""
        return [
            {**entry, "logical_dates": sorted(entry["logical_dates"]), "phases": sorted(entry["phases"])}
            for _, entry in sorted(self._by_partition.items())
        ]


def suggest_import_format(storage: Storage, uri: str) -> str | None:
    """Return the ``replay import --format`` that reads the Avro file at ``uri``, if one does."""
    import fastavro

    from recorder._import import ImportSourceError, detect_avro_format

    try:
        with storage.open_read(uri) as stream:
            schema = fastavro.reader(stream).writer_schema
        return detect_avro_format(schema)
    except (ImportSourceError, ValueError, OSError, EOFError, TypeError, KeyError):
        return None
