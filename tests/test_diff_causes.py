"""Missing outputs traced back to the failed replayed call that explains them."""

from __future__ import annotations

import datetime as dt
import json

from replayer.diff import match_outputs, parse_diff_rules
from replayer.diff.causes import explain_missing
from schemas import Direction, RecordedEvent

DAY = dt.date(2024, 1, 15)
KEYS = parse_diff_rules({"keys": {"trigger": ["/game"], "summary": ["/game"], "features": ["/game"]}})


def output(event_id, topic, game, *, cause):
    return RecordedEvent(event_id=event_id, logical_date=DAY, phase="p", direction=Direction.OUTPUT,
                         publish_time=1_705_399_334_000_000, data=json.dumps({"game": game}).encode(),
                         source="sdk", processor="proc", topic=topic, causation_id=cause)


# Recorded chain per game: entry input e<g> -> trigger t<g> -> summary s<g> -> features f<g>.
RECORDED = [event for game in (1, 2) for event in (
    output(f"t{game}", "trigger", game, cause=f"e{game}"),
    output(f"s{game}", "summary", game, cause=f"t{game}"),
    output(f"f{game}", "features", game, cause=f"s{game}"),
)]
# The replay produced both triggers, and the downstream outputs of game 1 only.
REPLAYED = [output("rt1", "trigger", 1, cause="e1"), output("rt2", "trigger", 2, cause="e2"),
            output("rs1", "summary", 1, cause="rt1"), output("rf1", "features", 1, cause="rs1")]


def reasons(result):
    return {entry.recorded_event_id: entry.reason for entry in result.entries() if entry.category == "missing"}


def test_missing_chain_names_failed_call():
    """Every output downstream of a failed call is missing with that call's category and input."""
    calls = [{"phase": "p", "processor": "summarizer", "input_event_id": "rt2", "category": "processor_exception",
              "outcome": "error:ValueError", "error": "ValueError: bad game", "status": None}]
    result = explain_missing(match_outputs(RECORDED, REPLAYED, KEYS), RECORDED, calls)
    assert reasons(result) == {
        "s2": "processor_exception: the replayed call of p/summarizer on input rt2 failed (ValueError: bad game)",
        "f2": "processor_exception: the replayed call of p/summarizer on input rt2 failed (ValueError: bad game)",
    }


def test_missing_after_entry_failure():
    """A failed call on a recorded entry event explains everything that event caused."""
    calls = [{"phase": "p", "processor": "orchestrator", "input_event_id": "e2", "category": "non_ack_response",
              "outcome": "nack", "error": None, "status": 503}]
    replayed = [event for event in REPLAYED if event.event_id != "rt2"]
    result = explain_missing(match_outputs(RECORDED, replayed, KEYS), RECORDED, calls)
    assert set(reasons(result)) == {"t2", "s2", "f2"}
    for reason in reasons(result).values():
        assert reason.startswith("non_ack_response: the replayed call of p/orchestrator on input e2 ")
        assert reason.endswith("(HTTP 503)")


def test_missing_without_failure_unexplained():
    """A missing output whose upstream calls all succeeded keeps no reason, despite failures elsewhere."""
    calls = [{"phase": "p", "processor": "summarizer", "input_event_id": "rt2", "category": None},
             {"phase": "p", "processor": "other", "input_event_id": "x9", "category": "timeout",
              "outcome": "timeout", "error": "no answer within timeout_s=5", "status": None}]
    result = explain_missing(match_outputs(RECORDED, REPLAYED, KEYS), RECORDED, calls)
    assert reasons(result) == {"s2": None, "f2": None}
