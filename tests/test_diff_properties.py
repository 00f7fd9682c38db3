"""Property tests of the diff: self-comparison is empty, swapping sides mirrors the result."""

from __future__ import annotations

import datetime as dt
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from replayer.diff import DiffRules, compare_payloads, match_outputs, parse_diff_rules
from schemas import Direction, RecordedEvent

RULES = DiffRules().for_topic("t")
_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
            | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8))
documents = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


def _text(document) -> bytes:
    return json.dumps(document).encode()


@given(documents)
def test_self_diff_empty(document):
    """A document compared with itself has no differences (NaN included)."""
    assert compare_payloads(_text(document), _text(document), RULES) == []


@given(documents)
def test_reformatted_self_diff_empty(document):
    """Whitespace and key order do not matter."""
    reformatted = json.dumps(document, indent=2, sort_keys=True).encode()
    assert compare_payloads(_text(document), reformatted, RULES) == []


@given(documents, documents)
def test_swap_mirrors_field_diffs(left, right):
    """Swapping sides swaps recorded and replayed values, and missing with extra."""
    forward = compare_payloads(_text(left), _text(right), RULES)
    backward = compare_payloads(_text(right), _text(left), RULES)
    mirror = {"missing": "extra", "extra": "missing"}
    expected = sorted((diff.pointer, mirror.get(diff.kind, diff.kind), diff.replayed, diff.recorded)
                      for diff in forward)
    assert sorted((diff.pointer, diff.kind, diff.recorded, diff.replayed) for diff in backward) == expected


def _outputs(payloads, prefix):
    return [
        RecordedEvent(event_id=f"{prefix}{index}", logical_date=dt.date(2024, 3, 9), phase="p",
                      direction=Direction.OUTPUT, publish_time=index, data=_text(payload), source="sdk",
                      processor="proc", topic="t", causation_id=f"in-{cause}")
        for index, (cause, payload) in enumerate(payloads)
    ]


_output_lists = st.lists(st.tuples(st.integers(0, 3), documents), max_size=6)


@settings(max_examples=60)
@given(_output_lists)
def test_match_self_identical(payloads):
    """Outputs matched against themselves are all identical, with no missing or extra."""
    counts = match_outputs(_outputs(payloads, "a"), _outputs(payloads, "b"), DiffRules()).counts
    assert (counts.changed, counts.missing, counts.extra) == (0, 0, 0)


@settings(max_examples=60)
@given(_output_lists, _output_lists)
def test_match_swap_mirrors_counts(left, right):
    """Swapping sides swaps missing with extra and recorded with replayed duplicates."""
    forward = match_outputs(_outputs(left, "a"), _outputs(right, "b"), DiffRules()).counts
    backward = match_outputs(_outputs(right, "b"), _outputs(left, "a"), DiffRules()).counts
    assert (backward.missing, backward.extra) == (forward.extra, forward.missing)
    assert (backward.duplicate_recorded, backward.duplicate_replayed) == (
        forward.duplicate_replayed, forward.duplicate_recorded)
    assert (backward.identical, backward.changed) == (forward.identical, forward.changed)


KEYED = parse_diff_rules({"keys": {"t": ["/k"]}})
CONTENT = parse_diff_rules({"match": "content"})
TOLERANT = parse_diff_rules({"abs_tol": 0.5, "rel_tol": 1e-6, "ignore": ["**/ts"], "unordered": ["/u"]})

# Payloads for keyed matching: "k" is sometimes absent (unmatchable), sometimes shared (duplicates).
_keyed_payloads = st.fixed_dictionaries(
    {"v": documents},
    optional={"k": st.integers(0, 3) | st.sampled_from([1.0, 2.0]), "ts": st.integers(), "u": st.lists(_scalars)},
)
_keyed_lists = st.lists(st.tuples(st.integers(0, 3), _keyed_payloads), max_size=6)
_strategies = st.sampled_from([("keys", KEYED), ("content", CONTENT), ("causation", DiffRules()),
                               ("tolerant", TOLERANT)])


@settings(max_examples=80)
@given(_keyed_lists, _strategies)
def test_match_self_identical_any_strategy(payloads, named):
    """Under every strategy a list of outputs against itself has nothing changed, missing or extra."""
    _, rules = named
    counts = match_outputs(_outputs(payloads, "a"), _outputs(payloads, "b"), rules).counts
    assert (counts.changed, counts.missing, counts.extra) == (0, 0, 0)
    assert counts.duplicate_recorded == counts.duplicate_replayed
    assert counts.unmatchable_recorded == counts.unmatchable_replayed


@settings(max_examples=80)
@given(_keyed_lists, _keyed_lists, _strategies)
def test_match_swap_mirrors_any_strategy(left, right, named):
    """Under every strategy swapping sides swaps missing with extra and the per-side counts."""
    _, rules = named
    forward = match_outputs(_outputs(left, "a"), _outputs(right, "b"), rules).counts
    backward = match_outputs(_outputs(right, "b"), _outputs(left, "a"), rules).counts
    assert (backward.missing, backward.extra) == (forward.extra, forward.missing)
    assert (backward.duplicate_recorded, backward.duplicate_replayed) == (
        forward.duplicate_replayed, forward.duplicate_recorded)
    assert (backward.unmatchable_recorded, backward.unmatchable_replayed) == (
        forward.unmatchable_replayed, forward.unmatchable_recorded)
    assert (backward.identical, backward.changed) == (forward.identical, forward.changed)


@given(documents, documents)
def test_swap_mirrors_with_rules(left, right):
    """With tolerance, ignored paths and unordered arrays the diff is still symmetric."""
    rules = TOLERANT.for_topic("t")
    forward = compare_payloads(_text(left), _text(right), rules)
    backward = compare_payloads(_text(right), _text(left), rules)
    mirror = {"missing": "extra", "extra": "missing"}
    assert sorted((diff.pointer, mirror.get(diff.kind, diff.kind)) for diff in forward) == sorted(
        (diff.pointer, diff.kind) for diff in backward)


@given(documents)
def test_self_diff_empty_with_rules(document):
    """A document compared with its reformatted self is equal under tolerance and unordered rules."""
    reformatted = json.dumps(document, indent=1, sort_keys=True).encode()
    assert compare_payloads(_text(document), reformatted, TOLERANT.for_topic("t")) == []


@given(st.integers(min_value=2**53 + 1, max_value=2**80), st.integers(min_value=1, max_value=1000))
def test_big_integers_never_within_tolerance(value, delta):
    """Any two different integers above 2^53 differ, whatever the tolerance."""
    rules = parse_diff_rules({"abs_tol": 1e9, "rel_tol": 0.1}).for_topic("t")
    [diff] = compare_payloads(_text({"id": value}), _text({"id": value + delta}), rules)
    assert (diff.recorded, diff.replayed) == (str(value), str(value + delta))


@given(st.lists(_scalars, max_size=6), st.lists(_scalars, max_size=6))
def test_unordered_swap_mirrors_kinds(left, right):
    """Order-insensitive arrays: swapping sides swaps missing and extra items; changed stays changed.

    Pointers of changed items name the recorded side's index, so they are not compared here.
    """
    rules = TOLERANT.for_topic("t")
    forward = compare_payloads(_text({"u": left}), _text({"u": right}), rules)
    backward = compare_payloads(_text({"u": right}), _text({"u": left}), rules)
    mirror = {"missing": "extra", "extra": "missing"}
    assert sorted(mirror.get(diff.kind, diff.kind) for diff in forward) == sorted(diff.kind for diff in backward)
    assert sorted(repr((diff.recorded, diff.replayed)) for diff in forward) == sorted(
        repr((diff.replayed, diff.recorded)) for diff in backward)
