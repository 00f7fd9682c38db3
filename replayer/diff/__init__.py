"""Golden-output diff, validation, latency and reports of a replay.

Replayed outputs are matched to recorded outputs per date, phase and topic
(:func:`match_outputs`) and compared field by field (:func:`compare_payloads`);
:func:`build_report` adds validation, latency and threshold checks and
writes report.json, diffs.jsonl, report.html and JUnit XML.
"""

from replayer.diff.canonical import JsonFloat, NotJson, canonical_text, parse_exact
from replayer.diff.checks import Check
from replayer.diff.compare import FieldDiff, compare_attributes, compare_events, compare_payloads, numbers_equal
from replayer.diff.latency import EndToEnd, LatencyRow, LatencyStats, latency_rows, latency_stats
from replayer.diff.match import MatchCounts, MatchEntry, MatchResult, TopicMatch, match_outputs
from replayer.diff.noise import NoiseField, NoiseModel, learn_noise
from replayer.diff.report import REPORT_VERSION, Report, build_report, write_reports
from replayer.diff.rules import (
    DiffRules,
    LatencyThreshold,
    Thresholds,
    TopicOverride,
    TopicRules,
    parse_diff_rules,
    parse_thresholds,
)
from replayer.diff.summary import print_summary
from replayer.diff.validation import ProcessorCounts, Validation, dedupe_events, validate

__all__ = [
    "Check",
    "DiffRules",
    "EndToEnd",
    "FieldDiff",
    "JsonFloat",
    "LatencyRow",
    "LatencyStats",
    "LatencyThreshold",
    "MatchCounts",
    "MatchEntry",
    "MatchResult",
    "NoiseField",
    "NoiseModel",
    "NotJson",
    "ProcessorCounts",
    "REPORT_VERSION",
    "Report",
    "Thresholds",
    "TopicMatch",
    "TopicOverride",
    "TopicRules",
    "Validation",
    "build_report",
    "canonical_text",
    "compare_attributes",
    "compare_events",
    "compare_payloads",
    "dedupe_events",
    "latency_rows",
    "latency_stats",
    "learn_noise",
    "match_outputs",
    "numbers_equal",
    "parse_diff_rules",
    "parse_exact",
    "parse_thresholds",
    "print_summary",
    "validate",
    "write_reports",
]
