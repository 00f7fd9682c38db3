"""``report.json`` (schema ``report_version`` 1, see docs/report-format.md) and ``diffs.jsonl``.

Files are written under a temporary name and renamed, so a reader never sees
half a report.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from replayer.diff._text import one_line_json

if TYPE_CHECKING:
    from replayer.diff.report import Report

# How many differing entries per phase and topic report.json carries as
# samples; diffs.jsonl has all of them.
SAMPLES_PER_TOPIC = 20


def _stats(stats: Any) -> dict[str, Any] | None:
    return stats.to_dict() if stats is not None else None


def _override(override: Any) -> dict[str, Any]:
    """Per-topic rules as JSON, with tuples as lists and unset fields as null."""
    data = {}
    for field in dataclasses.fields(override):
        value = getattr(override, field.name)
        data[field.name] = list(value) if isinstance(value, tuple) else value
    return data


def report_to_dict(report: "Report") -> dict[str, Any]:
    """Return the report.json document."""
    from replayer.diff.report import REPORT_VERSION

    samples: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for entry in report.match.entries():
        bucket = samples.setdefault((entry.phase, entry.topic), [])
        if len(bucket) < SAMPLES_PER_TOPIC:
            bucket.append(entry.to_dict())
    return {
        "report_version": REPORT_VERSION,
        "exit_code": report.exit_code,
        "passed": report.exit_code == 0,
        "run": report.run,
        "totals": report.totals.to_dict(),
        "topics": [
            {
                "phase": topic.phase,
                "topic": topic.topic,
                "strategies": list(topic.strategies),
                "counts": topic.counts.to_dict(),
                "samples": samples.get((topic.phase, topic.topic), []),
            }
            for topic in report.topics
        ],
        "validation": report.validation.to_dict(),
        "latency": {
            "processors": [row.to_dict() for row in report.latency],
            "phases": [
                {"phase": item.phase, "recorded": _stats(item.recorded), "replayed": _stats(item.replayed)}
                for item in report.phase_latency
            ],
            "end_to_end": [item.to_dict() for item in report.end_to_end],
        },
        "noise": report.noise.to_dict() if report.noise is not None else None,
        "checks": [check.to_dict() for check in report.checks],
        "warnings": list(report.warnings),
        "rules": {
            "ignore": list(report.rules.ignore),
            "unordered": list(report.rules.unordered),
            "abs_tol": report.rules.abs_tol,
            "rel_tol": report.rules.rel_tol,
            "keys": {topic: list(pointers) for topic, pointers in report.rules.keys.items()},
            "match": report.rules.match,
            "compare_attributes": report.rules.compare_attributes,
            "ignore_attributes": list(report.rules.ignore_attributes),
            "topics": {topic: _override(override) for topic, override in report.rules.topics.items()},
        },
        "files": dict(report.files),
    }


def _write_atomic(path: str | os.PathLike, text: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, target)


def write_report_json(report: "Report", path: str | os.PathLike) -> None:
    """Write report.json."""
    text = json.dumps(report_to_dict(report), indent=2, ensure_ascii=False, default=str)
    _write_atomic(path, one_line_json(text) + "\n")


def write_diffs_jsonl(report: "Report", path: str | os.PathLike) -> None:
    """Write diffs.jsonl: one JSON object per key that is not identical, one line each.

    ``str.splitlines()`` also splits at U+2028, U+2029 and U+0085, which
    ``ensure_ascii=False`` leaves raw in strings, so those are escaped.
    """
    lines = [one_line_json(json.dumps(entry.to_dict(), ensure_ascii=False)) for entry in report.match.entries()]
    _write_atomic(path, "\n".join(lines) + ("\n" if lines else ""))
