"""Threshold checks: each count and latency compared with its configured limit.

A check is ``ok``, ``warn`` (latency above ``warn_s``) or ``fail``; any
``fail`` makes the report's exit code 1.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

from replayer.diff.latency import CRITICAL, WARN, EndToEnd, LatencyRow
from replayer.diff.match import MatchCounts
from replayer.diff.rules import Thresholds
from replayer.diff.validation import Validation

OK = "ok"
FAIL = "fail"

# A latency verdict as a check status: critical fails, warn warns, ok and no_data pass.
_LATENCY_CHECK_STATUS = {CRITICAL: FAIL, WARN: WARN}


@dataclasses.dataclass(frozen=True)
class Check:
    """One limit applied to one scope (``scope`` contains phase, topic, processor or date)."""

    name: str
    scope: Mapping[str, str]
    value: float
    limit: float | None
    status: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used in report.json."""
        return {"name": self.name, "scope": dict(self.scope), "value": self.value,
                "limit": self.limit, "status": self.status, "message": self.message}


def _count_check(name: str, scope: Mapping[str, str], value: int, limit: int, what: str) -> Check:
    status = FAIL if value > limit else OK
    where = ", ".join(f"{key} {val}" for key, val in scope.items())
    return Check(name, dict(scope), value, limit, status, f"{where}: {value} {what} (limit {limit})")


def _percents(value: float, limit: float) -> tuple[str, str]:
    """Return value and limit as percentages with enough digits to tell two different numbers apart."""
    for digits in range(1, 16):
        shown = f"{value:.{digits}%}", f"{limit:.{digits}%}"
        if value == limit or shown[0] != shown[1]:
            return shown
    return f"{value!r}", f"{limit!r}"


def topic_checks(phase: str, topic: str | None, counts: MatchCounts, thresholds: Thresholds) -> list[Check]:
    """Check changed ratio, missing, extra, replayed duplicates and unmatchable outputs of one topic."""
    scope = {"phase": phase, "topic": topic or "(none)"}
    ratio = counts.changed_ratio
    limit = thresholds.max_changed_ratio
    ratio_status = FAIL if ratio > limit else OK
    shown_ratio, shown_limit = _percents(ratio, limit)
    # The value is not rounded: 1/3 against a limit of 0.333333 fails, and the
    # value must show why.
    checks = [Check(
        "changed_ratio", scope, ratio, limit, ratio_status,
        f"phase {phase}, topic {scope['topic']}: {counts.changed} of {counts.matched} matched outputs "
        f"changed ({shown_ratio}, limit {shown_limit})",
    )]
    checks.append(_count_check("missing", scope, counts.missing, thresholds.max_missing,
                               "recorded outputs missing in the replay"))
    checks.append(_count_check("extra", scope, counts.extra, thresholds.max_extra,
                               "replayed outputs not in the recording"))
    checks.append(_count_check("duplicates", scope, counts.duplicate_replayed, thresholds.max_duplicates,
                               "duplicate outputs in the replay"))
    checks.append(_count_check("unmatchable", scope, counts.unmatchable_recorded + counts.unmatchable_replayed,
                               thresholds.max_unmatchable, "outputs without a usable match key"))
    return checks


def latency_checks(rows: Iterable[LatencyRow], ends: Iterable[EndToEnd]) -> list[Check]:
    """Check replayed latency per phase and processor, and end-to-end time per date."""
    checks = []
    for row in rows:
        if row.replayed is None or (row.threshold.warn_s is None and row.threshold.critical_s is None):
            continue
        statistic = row.threshold.statistic
        value_s = row.replayed.statistic_ms(statistic) / 1000
        status = _LATENCY_CHECK_STATUS.get(row.status, OK)
        limit = row.threshold.critical_s if row.threshold.critical_s is not None else row.threshold.warn_s
        checks.append(Check(
            "latency", {"phase": row.phase, "processor": row.processor or "(none)"}, round(value_s, 6), limit,
            status,
            f"phase {row.phase}, processor {row.processor}: replayed {statistic} handling time "
            f"{value_s:.3f} s (warn {row.threshold.warn_s} s, critical {row.threshold.critical_s} s)",
        ))
    for end in ends:
        if end.replayed_s is None or (end.threshold.warn_s is None and end.threshold.critical_s is None):
            continue
        status = _LATENCY_CHECK_STATUS.get(end.status, OK)
        limit = end.threshold.critical_s if end.threshold.critical_s is not None else end.threshold.warn_s
        checks.append(Check(
            "end_to_end", {"date": end.logical_date.isoformat()}, round(end.replayed_s, 6), limit, status,
            f"date {end.logical_date}: replayed end-to-end {end.replayed_s:.3f} s "
            f"(warn {end.threshold.warn_s} s, critical {end.threshold.critical_s} s)",
        ))
    return checks


def validation_checks(validation: Validation, thresholds: Thresholds) -> list[Check]:
    """Check the number of expected processors that never reported."""
    silent = len(validation.silent_processors)
    names = ", ".join(f"{phase}/{name}" for phase, name in validation.silent_processors) or "none"
    status = FAIL if silent > thresholds.max_silent_processors else OK
    return [Check("silent_processors", {}, silent, thresholds.max_silent_processors, status,
                  f"{silent} expected processors never reported ({names}; "
                  f"limit {thresholds.max_silent_processors})")]


def error_checks(calls: Iterable[Mapping[str, Any]], thresholds: Thresholds,
                 phase_order: Sequence[str] = ()) -> list[Check]:
    """Check the failed calls of each replayed phase and processor against ``max_errors``.

    Only call records of a replay count: they carry a ``category`` key (None
    for a call that acked). ``replay diff`` passes recorded handling times
    without it, so it gets no error checks.
    """
    totals: Counter = Counter()
    by_category: dict[tuple[str, str], Counter] = {}
    for call in calls:
        if "category" not in call:
            continue
        key = (call.get("phase") or "", call.get("processor") or "(none)")
        totals[key] += 1
        failures = by_category.setdefault(key, Counter())
        if call["category"]:
            failures[call["category"]] += 1
    rank = {phase: index for index, phase in enumerate(phase_order)}
    checks = []
    for phase, processor in sorted(totals, key=lambda key: (rank.get(key[0], len(rank)), key)):
        failures = by_category[(phase, processor)]
        failed = sum(failures.values())
        detail = ", ".join(f"{category} {count}" for category, count in sorted(failures.items()))
        status = FAIL if failed > thresholds.max_errors else OK
        fix = "; fix the processor, or raise [thresholds] max_errors to accept them" if status == FAIL else ""
        checks.append(Check(
            "errors", {"phase": phase, "processor": processor}, failed, thresholds.max_errors, status,
            f"phase {phase}, processor {processor}: {failed} of {totals[(phase, processor)]} calls failed"
            f"{f' ({detail})' if detail else ''} (limit {thresholds.max_errors}){fix}",
        ))
    return checks


def damaged_files_check(validation: Validation, thresholds: Thresholds) -> Check:
    """Check the damaged archive files the reader skipped against ``max_damaged_files``."""
    damaged = validation.damaged_files
    # The damage kind leads every reason ("truncated: the file ends ..."); report.json has the rest.
    listed = ", ".join(f"{item.get('uri')} ({str(item.get('reason')).split(':')[0]})" for item in damaged[:3])
    if len(damaged) > 3:
        listed += f" and {len(damaged) - 3} more in report.json"
    status = FAIL if len(damaged) > thresholds.max_damaged_files else OK
    fix = ("; repair or remove them, or raise [thresholds] max_damaged_files to accept them"
           if status == FAIL else "")
    return Check("damaged_files", {}, len(damaged), thresholds.max_damaged_files, status,
                 f"{len(damaged)} damaged archive files skipped ({listed or 'none'}; "
                 f"limit {thresholds.max_damaged_files}){fix}")


def cascade_limit_check(run_meta: Mapping[str, Any]) -> Check | None:
    """Check that no cascade was cut by the per-entry-event call limit; None when the run has no such counter.

    A cut cascade means part of the day was never replayed, so any hit fails
    the run: the usual cause is a processor that publishes into a topic that
    leads back to itself.
    """
    if "cascade_limit_hits" not in run_meta:
        return None
    hits = int(run_meta.get("cascade_limit_hits") or 0)
    status = FAIL if hits else OK
    fix = ("; look for a processor whose outputs lead back to its own topic (replay.cascade_limit in the log "
           "names the entry event)" if hits else "")
    return Check("cascade_limit", {}, hits, 0, status,
                 f"{hits} outputs not delivered because their chain reached the limit of calls per entry "
                 f"event{fix}")

