"""Parsing of the [diff] and [thresholds] tables, and path patterns."""

from __future__ import annotations

import pytest

from replayer.diff import parse_diff_rules, parse_thresholds
from replayer.diff._paths import compile_patterns
from replayer.errors import ConfigError


def test_diff_table_parsed():
    """A full [diff] table becomes DiffRules with every field set."""
    rules = parse_diff_rules({
        "keys": {"nba-phase5-predictions-complete": ["/game_date", "/player_id"]},
        "ignore": ["/metadata/duration_seconds", "**/execution_id", "/plays/*/ts"],
        "abs_tol": 1e-9, "rel_tol": 0.001, "unordered": ["/game_ids"], "match": "content",
    }, file="replay.toml")
    assert rules.keys["nba-phase5-predictions-complete"] == ("/game_date", "/player_id")
    assert rules.ignore[1] == "**/execution_id"
    assert (rules.abs_tol, rules.rel_tol, rules.match) == (1e-9, 0.001, "content")


def test_diff_empty_defaults():
    """No [diff] table means exact comparison with no keys."""
    rules = parse_diff_rules(None)
    assert (rules.abs_tol, rules.rel_tol, rules.ignore, dict(rules.keys)) == (0.0, 0.0, (), {})


@pytest.mark.parametrize("table, key", [
    ({"ignored": ["/a"]}, "diff.ignored"),
    ({"abs_tol": -1}, "diff.abs_tol"),
    ({"rel_tol": "0.1"}, "diff.rel_tol"),
    ({"abs_tol": float("nan")}, "diff.abs_tol"),
    ({"ignore": "/a"}, "diff.ignore"),
    ({"ignore": ["a.b"]}, "diff.ignore"),
    ({"ignore": ["/a*b"]}, "diff.ignore"),
    ({"unordered": [3]}, "diff.unordered"),
    ({"keys": {"t": []}}, "diff.keys.t"),
    ({"keys": {"t": ["player_id"]}}, "diff.keys.t"),
    ({"keys": {"t": ["/plays/*/id"]}}, "diff.keys.t"),
    ({"match": "fuzzy"}, "diff.match"),
    ({"topics": {"t": {"tolerance": 1}}}, "diff.topics.t.tolerance"),
    ({"compare_attributes": "yes"}, "diff.compare_attributes"),
])
def test_diff_table_rejected(table, key):
    """Unknown keys and bad values raise ConfigError naming the file and the key."""
    with pytest.raises(ConfigError, match=r"replay\.toml") as caught:
        parse_diff_rules(table, file="replay.toml")
    assert key in str(caught.value)


def test_bad_value_named():
    """The error message shows the bad value itself."""
    with pytest.raises(ConfigError, match=r"-1"):
        parse_diff_rules({"abs_tol": -1}, file="replay.toml")


def test_thresholds_parsed():
    """A [thresholds] table with per-phase latency limits."""
    thresholds = parse_thresholds({
        "max_changed_ratio": 0.05, "max_missing": 2, "max_extra": 1, "max_duplicates": 0,
        "latency": {"warn_s": 1.0, "critical_s": 10.0, "phase3": {"warn_s": 5.0, "critical_s": 30.0,
                                                                  "statistic": "max"}},
        "end_to_end": {"critical_s": 600},
    }, file="replay.toml")
    assert thresholds.max_changed_ratio == 0.05
    assert thresholds.latency_for("phase3").critical_s == 30.0
    assert thresholds.latency_for("phase3").statistic == "max"
    assert thresholds.latency_for("phase4").warn_s == 1.0
    assert thresholds.end_to_end.critical_s == 600.0


def test_phase_latency_inherits_defaults():
    """A phase table that sets only critical_s keeps the default warn_s."""
    thresholds = parse_thresholds({"latency": {"warn_s": 2.0, "phase2": {"critical_s": 9.0}}})
    assert (thresholds.latency_for("phase2").warn_s, thresholds.latency_for("phase2").critical_s) == (2.0, 9.0)


def test_thresholds_defaults_strict():
    """Without a [thresholds] table every count limit is zero."""
    thresholds = parse_thresholds(None)
    assert (thresholds.max_changed_ratio, thresholds.max_missing, thresholds.max_extra,
            thresholds.max_duplicates) == (0.0, 0, 0, 0)


@pytest.mark.parametrize("table, key", [
    ({"max_changed": 0.1}, "thresholds.max_changed"),
    ({"max_changed_ratio": 1.5}, "thresholds.max_changed_ratio"),
    ({"max_missing": -1}, "thresholds.max_missing"),
    ({"max_extra": 1.5}, "thresholds.max_extra"),
    ({"max_duplicates": True}, "thresholds.max_duplicates"),
    ({"latency": {"phase3": {"warn_s": 0}}}, "thresholds.latency.phase3.warn_s"),
    ({"latency": {"phase3": {"warn": 1}}}, "thresholds.latency.phase3.warn"),
    ({"latency": {"phase3": {"warn_s": 10, "critical_s": 5}}}, "thresholds.latency.phase3.warn_s"),
    ({"latency": {"statistic": "p99"}}, "thresholds.latency.statistic"),
    ({"end_to_end": {"statistic": "p50"}}, "thresholds.end_to_end.statistic"),
    ({"max_errors": -1}, "thresholds.max_errors"),
    ({"max_errors": 0.5}, "thresholds.max_errors"),
    ({"max_damaged_files": True}, "thresholds.max_damaged_files"),
])
def test_thresholds_rejected(table, key):
    """Unknown keys and bad threshold values raise ConfigError naming the file and the key."""
    with pytest.raises(ConfigError, match=r"replay\.toml") as caught:
        parse_thresholds(table, file="replay.toml")
    assert key in str(caught.value)


def test_error_and_damage_limits():
    """max_errors and max_damaged_files default to 0 and are read from the table."""
    assert (parse_thresholds(None).max_errors, parse_thresholds(None).max_damaged_files) == (0, 0)
    thresholds = parse_thresholds({"max_errors": 3, "max_damaged_files": 1})
    assert (thresholds.max_errors, thresholds.max_damaged_files) == (3, 1)


def test_latency_phase_must_be_configured():
    """With the configured phases, a latency table of another phase is rejected naming its key."""
    table = {"latency": {"phase3": {"warn_s": 1.0}, "phase9": {"warn_s": 1.0}}}
    assert parse_thresholds(table).latency_for("phase9").warn_s == 1.0
    with pytest.raises(ConfigError, match="'phase9' is not a configured phase; phases are phase2, phase3") as caught:
        parse_thresholds(table, file="replay.toml", phases=["phase2", "phase3"])
    assert caught.value.key == "thresholds.latency.phase9"


@pytest.mark.parametrize("pattern, path, expected", [
    ("/a/b", ["a", "b"], True),
    ("/a/b", ["a", "b", "c"], True),
    ("/a/b", ["a"], False),
    ("/a/*/c", ["a", "0", "c"], True),
    ("/a/*/c", ["a", "0", "1", "c"], False),
    ("**/id", ["id"], True),
    ("**/id", ["x", "3", "y", "id"], True),
    ("**/id", ["x", "idx"], False),
    ("/a/**/z", ["a", "z"], True),
    ("/a/**/z", ["a", "b", "c", "z"], True),
    ("/a~1b", ["a/b"], True),
    ("", [], True),
])
def test_pattern_matches(pattern, path, expected):
    """Wildcards: '*' is one level, '**' any number of levels (also none)."""
    assert compile_patterns([pattern]).matches(path) is expected
