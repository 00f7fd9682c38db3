"""Property tests of the diff: self-comparison is empty, swapping sides mirrors the result."""

from __future__ import annotations

import datetime as dt
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from replayer.diff import DiffRules, compare_payloads, match_outputs
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
