"""``build_report``: diff, validation, latency and checks of one replay, written to its output folder.

``replay run`` calls it after the pipeline; ``replay diff A B`` calls it
for two archives. It writes ``report.json``, ``diffs.jsonl`` and
``report.html`` (and JUnit XML on request) and returns a :class:`Report`
whose ``exit_code`` is 1 when a threshold check failed, else 0.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence


from recorder._logging import get_logger
from replayer.diff.canonical import MAX_DEPTH
from replayer.diff.causes import explain_missing
from replayer.diff.checks import (
    FAIL,
    Check,
    cascade_limit_check,
    damaged_files_check,
    error_checks,
    latency_checks,
    topic_checks,
    validation_checks,
)
from replayer.diff.compare import TOO_DEEP_NOTE
from replayer.diff.latency import (
    EndToEnd,
    LatencyRow,
    LatencyStats,
    end_to_end,
    latency_rows,
    latency_stats,
    recorded_latencies,
    replayed_latencies,
)
from replayer.diff.match import MatchCounts, MatchResult, match_outputs
from replayer.diff.noise import NoiseModel, learn_noise
from replayer.diff.rules import DiffRules, Thresholds, parse_diff_rules, parse_thresholds
from replayer.diff.validation import Validation, config_value, dedupe_events, validate
from schemas import Direction, RecordedEvent

REPORT_VERSION = 1
log = get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class TopicSummary:
    """Counts of one phase and topic over all dates, and the match strategies used."""

    phase: str
    topic: str | None
    strategies: tuple[str, ...]
    counts: MatchCounts


@dataclasses.dataclass(frozen=True)
class PhaseLatency:
    """Handling time of all processors of one phase together, recorded and replayed."""

    phase: str
    recorded: LatencyStats | None
    replayed: LatencyStats | None


@dataclasses.dataclass(frozen=True)
class Report:
    """Everything the report files show; ``exit_code`` is 1 when any check failed."""

    exit_code: int
    run: Mapping[str, Any]
    topics: tuple[TopicSummary, ...]
    totals: MatchCounts
    match: MatchResult
    validation: Validation
    latency: tuple[LatencyRow, ...]
    phase_latency: tuple[PhaseLatency, ...]
    end_to_end: tuple[EndToEnd, ...]
    noise: NoiseModel | None
    checks: tuple[Check, ...]
    rules: DiffRules
    thresholds: Thresholds
    files: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Things a reader must not miss although no check failed (see _warnings).
    warnings: tuple[str, ...] = ()

    @property
    def failed_checks(self) -> tuple[Check, ...]:
        """The checks that failed (they set the exit code)."""
        return tuple(check for check in self.checks if check.status == FAIL)


def _rules_from(config: Any, rules: DiffRules | None, thresholds: Thresholds | None) -> tuple[DiffRules, Thresholds]:
    # The replay config may carry the raw TOML tables or already parsed rules.
    file = config_value(config, "file", None)
    file = str(file) if file is not None else None
    if rules is None:
        raw = config_value(config, "diff", None)
        rules = raw if isinstance(raw, DiffRules) else parse_diff_rules(raw, file=file)
    if thresholds is None:
        raw = config_value(config, "thresholds", None)
        thresholds = raw if isinstance(raw, Thresholds) else parse_thresholds(raw, file=file)
    return rules, thresholds


def _phase_order(config: Any, run_meta: Mapping[str, Any]) -> list[str]:
    phases = run_meta.get("phases") or config_value(config, "phases", None) or []
    return [str(phase) for phase in phases]


def _configured_processors(config: Any) -> dict[str, set[str]]:
    by_phase: dict[str, set[str]] = {}
    for processor in config_value(config, "processors", None) or ():
        by_phase.setdefault(config_value(processor, "phase"), set()).add(config_value(processor, "name"))
    return by_phase


def _selected_outputs(recorded: Iterable[RecordedEvent], phases: Sequence[str],
                      processors: Mapping[str, set[str]]) -> tuple[list[RecordedEvent], int]:
    """Recorded outputs of the replayed phases and configured processors; and how many were left out."""
    selected = []
    skipped = 0
    for event in recorded:
        if event.direction is not Direction.OUTPUT:
            continue
        if phases and event.phase not in phases:
            continue
        names = processors.get(event.phase)
        if names and event.processor not in names:
            skipped += 1
            continue
        selected.append(event)
    return selected, skipped


def _topic_summaries(match: MatchResult) -> tuple[TopicSummary, ...]:
    merged: dict[tuple[str, str | None], tuple[set[str], MatchCounts]] = {}
    for group in match.groups:
        strategies, counts = merged.get((group.phase, group.topic), (set(), MatchCounts()))
        strategies.add(group.strategy)
        merged[(group.phase, group.topic)] = (strategies, counts + group.counts)
    return tuple(
        TopicSummary(phase, topic, tuple(sorted(strategies)), counts)
        for (phase, topic), (strategies, counts) in merged.items()
    )


def _phase_latency(recorded: Sequence[RecordedEvent], calls: Sequence[Mapping[str, Any]],
                   order: Sequence[str]) -> tuple[PhaseLatency, ...]:
    recorded_values: dict[str, list[int]] = {}
    for (phase, _), (values, _) in recorded_latencies(recorded).items():
        recorded_values.setdefault(phase, []).extend(values)
    replayed_values: dict[str, list[int]] = {}
    for (phase, _), values in replayed_latencies(calls).items():
        replayed_values.setdefault(phase, []).extend(values)
    rank = {phase: index for index, phase in enumerate(order)}
    phases = sorted(set(recorded_values) | set(replayed_values), key=lambda phase: (rank.get(phase, len(rank)), phase))
    return tuple(
        PhaseLatency(phase, latency_stats(recorded_values.get(phase, [])), latency_stats(replayed_values.get(phase, [])))
        for phase in phases
    )


def _run_summary(run_meta: Mapping[str, Any], skipped_outputs: int, elapsed_s: float) -> dict[str, Any]:
    keys = ("mode", "dates", "phases", "speed", "config", "archive", "runner", "started_at", "finished_at",
            "planned_duration_s", "elapsed_s", "pacing", "gaps_shortened", "out_of_order", "where", "read",
            "abandoned_calls", "unrouted_outputs", "cascade_limit_hits", "baseline", "candidate")
    summary = {key: run_meta[key] for key in keys if key in run_meta}
    summary["recorded_outputs_of_unconfigured_processors"] = skipped_outputs
    summary["report_elapsed_s"] = round(elapsed_s, 3)
    return summary


def _warnings(match: MatchResult) -> tuple[str, ...]:
    """Return the warnings of a report: nothing compared, payloads compared as bytes for their depth."""
    warnings = []
    totals = match.counts
    if totals.recorded_outputs == 0 and totals.replayed_outputs == 0:
        warnings.append("no outputs were compared: the selected phases, processors and dates have no recorded "
                        "or replayed outputs; check --phases, --where and --date")
    elif totals.matched == 0:
        warnings.append(f"no outputs were compared: none of the {totals.recorded_outputs} recorded and "
                        f"{totals.replayed_outputs} replayed outputs could be paired")
    too_deep = sum(1 for entry in match.entries() for diff in entry.diffs if diff.note == TOO_DEEP_NOTE)
    if too_deep:
        pairs = "pair was" if too_deep == 1 else "pairs were"
        warnings.append(f"{too_deep} output {pairs} compared as bytes because a payload nests deeper than "
                        f"{MAX_DEPTH} levels")
    return tuple(warnings)


def build_report(
    *,
    recorded_events: Iterable[RecordedEvent],
    replayed_events: Iterable[RecordedEvent],
    calls: Iterable[Mapping[str, Any]] = (),
    run_meta: Mapping[str, Any] | None = None,
    config: Any = None,
    out_dir: str | os.PathLike | None = None,
    junit_xml: str | os.PathLike | None = None,
    noise: NoiseModel | None = None,
    noise_replays: Sequence[Sequence[RecordedEvent]] | None = None,
    rules: DiffRules | None = None,
    thresholds: Thresholds | None = None,
    write_html: bool = True,
) -> Report:
    """Diff replayed outputs against recorded ones, validate, measure latency and write the reports.

    ``recorded_events`` are the recorded INPUT and OUTPUT events of the
    replayed dates (duplicates are counted and removed here too).
    ``replayed_events`` are the replayed OUTPUT events, ``calls`` the call
    records and ``run_meta`` the contents of ``run.json``. Diff rules and thresholds come
    from ``config`` (its ``diff`` and ``thresholds`` tables) unless given.
    ``noise`` (from :func:`replayer.diff.learn_noise`) adds the unstable
    fields to the ignored paths; alternatively ``noise_replays`` passes the
    OUTPUT events of N extra replays of the same dates, which are compared
    with ``replayed_events`` to learn the model here. With ``out_dir`` None
    nothing is written.
    """
    started = time.perf_counter()
    run_meta = dict(run_meta or {})
    raw_recorded = list(recorded_events)
    replayed = [event for event in replayed_events if event.direction is Direction.OUTPUT]
    calls = list(calls)
    rules, thresholds = _rules_from(config, rules, thresholds)
    if noise is None and noise_replays:
        noise = learn_noise([replayed, *[list(run) for run in noise_replays]], rules)
    golden_rules = noise.apply(rules) if noise is not None else rules
    order = _phase_order(config, run_meta)
    log.info("report.started", phase=",".join(order), records=len(raw_recorded) + len(replayed))

    recorded, _ = dedupe_events(raw_recorded)
    outputs, skipped = _selected_outputs(recorded, order, _configured_processors(config))
    match = explain_missing(match_outputs(outputs, replayed, golden_rules, phase_order=order), recorded, calls)
    validation = validate(recorded_events=raw_recorded, replayed_events=replayed, calls=calls, match=match,
                          run_meta=run_meta, config=config, phases=order or None)
    rows = latency_rows(recorded, calls, thresholds)
    mode = run_meta.get("mode") or config_value(config_value(config, "replay", None), "mode", None)
    ends = end_to_end(recorded, replayed, entry_phase=order[0], thresholds=thresholds) if (
        mode == "cascade" and order) else []
    topics = _topic_summaries(match)

    checks: list[Check] = []
    for topic in topics:
        checks.extend(topic_checks(topic.phase, topic.topic, topic.counts, thresholds))
    checks.extend(latency_checks(rows, ends))
    checks.extend(error_checks(calls, thresholds, order))
    checks.extend(validation_checks(validation, thresholds))
    checks.append(damaged_files_check(validation, thresholds))
    cascade_check = cascade_limit_check(run_meta)
    if cascade_check is not None:
        checks.append(cascade_check)
    exit_code = 1 if any(check.status == FAIL for check in checks) else 0

    report = Report(
        exit_code=exit_code,
        run=_run_summary(run_meta, skipped, time.perf_counter() - started),
        topics=topics,
        totals=match.counts,
        match=match,
        validation=validation,
        latency=tuple(rows),
        phase_latency=_phase_latency(recorded, calls, order),
        end_to_end=tuple(ends),
        noise=noise,
        checks=tuple(checks),
        rules=golden_rules,
        thresholds=thresholds,
        warnings=_warnings(match),
    )
    for warning in report.warnings:
        log.warning("report.warning", phase=",".join(order), message=warning)
    if out_dir is not None:
        report = write_reports(report, out_dir, junit_xml=junit_xml, write_html=write_html)
    log.info("report.finished", phase=",".join(order), records=len(outputs) + len(replayed),
             exit_code=exit_code, elapsed_s=round(time.perf_counter() - started, 3))
    return report


def write_reports(report: Report, out_dir: str | os.PathLike, *, junit_xml: str | os.PathLike | None = None,
                  write_html: bool = True) -> Report:
    """Write report.json, diffs.jsonl, report.html and optional JUnit XML; return the report with ``files``."""
    from replayer.diff.junit import write_junit
    from replayer.diff.report_html import write_html as write_html_file
    from replayer.diff.report_json import write_diffs_jsonl, write_report_json

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "report_json": str(folder / "report.json"),
        "diffs_jsonl": str(folder / "diffs.jsonl"),
    }
    if write_html:
        files["report_html"] = str(folder / "report.html")
    if junit_xml is not None:
        files["junit_xml"] = str(junit_xml)
    report = dataclasses.replace(report, files=files)
    write_diffs_jsonl(report, files["diffs_jsonl"])
    write_report_json(report, files["report_json"])
    if write_html:
        write_html_file(report, files["report_html"])
    if junit_xml is not None:
        write_junit(report, files["junit_xml"])
    for path in files.values():
        log.info("report.file_written", file=path)
    return report
