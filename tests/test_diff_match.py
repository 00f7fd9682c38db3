"""Matching replayed outputs to recorded outputs: strategies and categories."""

from __future__ import annotations

import datetime as dt
import json

from replayer.diff import DiffRules, match_outputs, parse_diff_rules
from schemas import Direction, RecordedEvent

DAY = dt.date(2024, 3, 9)
BASE_MICROS = 1_710_007_200_000_000


def output(event_id, payload, *, cause=None, topic="scores", phase="phase3", processor="p", at_ms=0,
           source="sdk", attributes=None, day=DAY):
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return RecordedEvent(event_id=event_id, logical_date=day, phase=phase, direction=Direction.OUTPUT,
                         publish_time=BASE_MICROS + at_ms * 1000, data=data, source=source, processor=processor,
                         topic=topic, causation_id=cause, attributes=attributes or {})


def categories(result):
    return sorted((entry.category, entry.recorded_event_id, entry.replayed_event_id)
                  for entry in result.entries(include_identical=True))


KEYS = parse_diff_rules({"keys": {"scores": ["/game", "/player"]}})


def test_keys_identical_and_changed():
    """Configured keys pair outputs; equal payloads are identical, others changed."""
    result = match_outputs(
        [output("a", {"game": 1, "player": 7, "pts": 3}), output("b", {"game": 1, "player": 8, "pts": 1})],
        [output("y", {"game": 1, "player": 8, "pts": 2}), output("x", {"game": 1, "player": 7, "pts": 3.0})],
        KEYS)
    assert categories(result) == [("changed", "b", "y"), ("identical", "a", "x")]
    [changed] = [entry for entry in result.entries() if entry.category == "changed"]
    assert [(diff.pointer, diff.recorded, diff.replayed) for diff in changed.diffs] == [("/pts", "1", "2")]


def test_keys_missing_and_extra():
    """A key on one side only is missing (recorded) or extra (replayed)."""
    result = match_outputs([output("a", {"game": 1, "player": 7})], [output("x", {"game": 2, "player": 7})], KEYS)
    assert categories(result) == [("extra", None, "x"), ("missing", "a", None)]


def test_keys_numeric_forms_match():
    """Key values 7 and 7.0 are the same key."""
    result = match_outputs([output("a", {"game": 1, "player": 7})], [output("x", {"game": 1, "player": 7.0})], KEYS)
    assert result.counts.identical == 1


def test_keys_duplicate_not_missing():
    """A second output with the same key on one side is a duplicate, not missing or extra."""
    result = match_outputs(
        [output("a", {"game": 1, "player": 7}), output("a2", {"game": 1, "player": 7}, at_ms=5)],
        [output("x", {"game": 1, "player": 7})], KEYS)
    counts = result.counts
    assert (counts.identical, counts.missing, counts.extra, counts.duplicate_recorded) == (1, 0, 0, 1)
    [duplicate] = [entry for entry in result.entries() if entry.category == "duplicate"]
    assert (duplicate.side, duplicate.recorded_event_id, duplicate.duplicate_of) == ("recorded", "a2", "a")


def test_keys_absent_pointer_unmatchable():
    """An output without a key pointer is unmatchable, with topic and event id, and never paired."""
    result = match_outputs([output("a", {"game": 1})], [output("x", {"game": 1})], KEYS)
    assert result.counts.matched == 0
    entries = sorted(result.entries(), key=lambda entry: entry.side)
    assert [(entry.category, entry.side, entry.topic) for entry in entries] == [
        ("unmatchable", "recorded", "scores"), ("unmatchable", "replayed", "scores")]
    assert "/player" in entries[0].reason
    assert entries[1].replayed_event_id == "x"


def test_keys_non_json_unmatchable():
    """A non-JSON payload on a topic with keys is unmatchable."""
    result = match_outputs([output("a", b"\x00raw")], [], KEYS)
    [entry] = result.entries()
    assert (entry.category, entry.recorded_event_id) == ("unmatchable", "a")
    assert "not JSON" in entry.reason


def test_causation_pairs_by_input_and_ordinal():
    """Without keys, outputs pair by causing input and publish order."""
    result = match_outputs(
        [output("a", {"v": 1}, cause="m-1"), output("b", {"v": 2}, cause="m-1", at_ms=1)],
        [output("x", {"v": 1}, cause="m-1"), output("y", {"v": 3}, cause="m-1")], DiffRules())
    assert result.groups[0].strategy == "causation"
    assert categories(result) == [("changed", "b", "y"), ("identical", "a", "x")]


def test_causation_redelivery_duplicate():
    """A recorded output repeated for a redelivered input is a duplicate, not missing in replay."""
    result = match_outputs(
        [output("o-2", {"total": 5}, cause="m-2", at_ms=400), output("o-2b", {"total": 5}, cause="m-2", at_ms=900)],
        [output("r-2", {"total": 5}, cause="m-2")], DiffRules())
    counts = result.counts
    assert (counts.identical, counts.missing, counts.duplicate_recorded) == (1, 0, 1)


def test_causation_second_distinct_output_missing():
    """A second recorded output with other content is missing when the replay made only one."""
    result = match_outputs(
        [output("a", {"v": 1}, cause="m"), output("b", {"v": 2}, cause="m", at_ms=1)],
        [output("x", {"v": 1}, cause="m")], DiffRules())
    assert categories(result) == [("identical", "a", "x"), ("missing", "b", None)]


def test_replayed_duplicate_counted():
    """The replay publishing the same output twice is a replayed duplicate."""
    result = match_outputs([output("a", {"v": 1}, cause="m")],
                           [output("x", {"v": 1}, cause="m"), output("x2", {"v": 1}, cause="m")], DiffRules())
    assert (result.counts.duplicate_replayed, result.counts.extra) == (1, 0)


def test_content_strategy_without_causation():
    """Outputs without causation ids are paired by canonical content."""
    result = match_outputs([output("a", {"v": 1, "w": [1, 2]}), output("b", {"v": 2})],
                           [output("x", {"w": [1, 2], "v": 1.0}), output("y", {"v": 3})], DiffRules())
    assert result.groups[0].strategy == "content"
    assert categories(result) == [("extra", None, "y"), ("identical", "a", "x"), ("missing", "b", None)]


def test_auto_falls_back_to_content():
    """Causation ids that never overlap (two environments) switch auto matching to content."""
    result = match_outputs([output("a", {"v": 1}, cause="prod-1")], [output("x", {"v": 1}, cause="test-9")],
                           DiffRules())
    assert (result.groups[0].strategy, result.counts.identical) == ("content", 1)


def test_groups_per_topic_and_date():
    """Outputs on different topics or dates are never paired with each other."""
    result = match_outputs([output("a", {"v": 1}, topic="t1")],
                           [output("x", {"v": 1}, topic="t2"), output("y", {"v": 1}, topic="t1",
                                                                       day=dt.date(2024, 3, 10))], DiffRules())
    assert (result.counts.missing, result.counts.extra, result.counts.matched) == (1, 2, 0)


def test_cascade_causation_translated():
    """A later phase's replayed causation id is translated through the earlier phase's pairs."""
    recorded = [
        output("rec-out-2", {"step": 2}, cause="entry-1", phase="phase2", topic="t2"),
        output("rec-out-3", {"step": 3}, cause="rec-out-2", phase="phase3", topic="t3"),
    ]
    replayed = [
        output("r-aaa", {"step": 2}, cause="entry-1", phase="phase2", topic="t2", source="replay"),
        output("r-bbb", {"step": 3, "x": 1}, cause="r-aaa", phase="phase3", topic="t3", source="replay"),
    ]
    result = match_outputs(recorded, replayed, DiffRules(), phase_order=["phase2", "phase3"])
    assert [group.strategy for group in result.groups] == ["causation", "causation"]
    assert categories(result) == [("changed", "rec-out-3", "r-bbb"), ("identical", "rec-out-2", "r-aaa")]
    assert result.pairs["r-bbb"] == "rec-out-3"


def test_ignored_field_identical():
    """A difference only in an ignored field leaves the key identical."""
    rules = parse_diff_rules({"ignore": ["**/execution_id"]})
    result = match_outputs([output("a", {"v": 1, "execution_id": "e1"}, cause="m")],
                           [output("x", {"v": 1, "execution_id": "e2"}, cause="m")], rules)
    assert result.counts.identical == 1


def test_attribute_change_is_changed():
    """A changed Pub/Sub attribute makes the output changed."""
    result = match_outputs([output("a", {"v": 1}, cause="m", attributes={"kind": "final"})],
                           [output("x", {"v": 1}, cause="m", attributes={"kind": "draft"})], DiffRules())
    [entry] = result.entries()
    assert [(diff.part, diff.pointer) for diff in entry.diffs] == [("attributes", "/kind")]


def test_keys_several_pointers_nested():
    """Keys of several pointers, one nested, pair outputs regardless of publish order."""
    rules = parse_diff_rules({"keys": {"scores": ["/game/id", "/player_id", "/stat_type"]}})
    recorded = [output("a", {"game": {"id": 1}, "player_id": 7, "stat_type": "pts", "v": 10}),
                output("b", {"game": {"id": 1}, "player_id": 7, "stat_type": "reb", "v": 4}, at_ms=1)]
    replayed = [output("y", {"game": {"id": 1}, "player_id": 7, "stat_type": "reb", "v": 5}),
                output("x", {"game": {"id": 1}, "player_id": 7, "stat_type": "pts", "v": 10}, at_ms=1)]
    result = match_outputs(recorded, replayed, rules)
    assert categories(result) == [("changed", "b", "y"), ("identical", "a", "x")]
    [changed] = [entry for entry in result.entries() if entry.category == "changed"]
    assert changed.key == "/game/id=1, /player_id=7, /stat_type=\"reb\""


def test_keys_null_value_is_a_key():
    """A key pointer present with null is a usable key, unlike an absent one."""
    result = match_outputs([output("a", {"game": 1, "player": None})], [output("x", {"game": 1, "player": None})],
                           KEYS)
    assert (result.counts.identical, result.counts.unmatchable_recorded) == (1, 0)


def test_keys_object_value():
    """A key pointer may select an object; its canonical text (key order ignored) is the key."""
    rules = parse_diff_rules({"keys": {"scores": ["/id"]}})
    result = match_outputs([output("a", {"id": {"g": 1, "p": 2}, "v": 1})],
                           [output("x", {"id": {"p": 2, "g": 1.0}, "v": 1})], rules)
    assert result.counts.identical == 1


def test_keys_replayed_duplicate_other_content():
    """Two replayed outputs with one key: the second is a duplicate even when its content differs."""
    result = match_outputs([output("a", {"game": 1, "player": 7, "v": 1})],
                           [output("x", {"game": 1, "player": 7, "v": 1}),
                            output("x2", {"game": 1, "player": 7, "v": 2}, at_ms=1)], KEYS)
    counts = result.counts
    assert (counts.identical, counts.duplicate_replayed, counts.extra) == (1, 1, 0)
    [duplicate] = [entry for entry in result.entries() if entry.category == "duplicate"]
    assert (duplicate.side, duplicate.replayed_event_id, duplicate.duplicate_of) == ("replayed", "x2", "x")


def test_keys_first_by_publish_time():
    """Of two outputs with one key, the one published first is paired, whatever the input order."""
    result = match_outputs([output("late", {"game": 1, "player": 7, "v": 2}, at_ms=9),
                            output("early", {"game": 1, "player": 7, "v": 1}, at_ms=1)],
                           [output("x", {"game": 1, "player": 7, "v": 1})], KEYS)
    assert ("identical", "early", "x") in categories(result)


def test_unmatchable_reasons_per_side():
    """Unmatchable outputs on both sides are listed with topic, event id and side, never counted as missing."""
    result = match_outputs([output("a", {"game": 1}), output("b", b"not json")],
                           [output("x", {"player": 7}), output("y", {"game": 1, "player": 7})], KEYS)
    counts = result.counts
    assert (counts.unmatchable_recorded, counts.unmatchable_replayed, counts.missing, counts.extra) == (2, 1, 0, 1)
    unmatchable = {(entry.side, entry.recorded_event_id or entry.replayed_event_id): entry.reason
                   for entry in result.entries() if entry.category == "unmatchable"}
    assert set(unmatchable) == {("recorded", "a"), ("recorded", "b"), ("replayed", "x")}
    assert "/player" in unmatchable[("recorded", "a")]
    assert "/game" in unmatchable[("replayed", "x")]
    assert "not JSON" in unmatchable[("recorded", "b")]


def test_topic_override_keys():
    """Keys configured for one topic leave other topics on causation matching."""
    rules = parse_diff_rules({"topics": {"scores": {"keys": ["/player"]}}})
    result = match_outputs(
        [output("a", {"player": 7}, cause="m"), output("b", {"v": 1}, cause="m", topic="other")],
        [output("x", {"player": 7}, cause="zzz"), output("y", {"v": 1}, cause="m", topic="other")], rules)
    assert {group.topic: group.strategy for group in result.groups} == {"scores": "keys", "other": "causation"}
    assert result.counts.identical == 2


def test_forced_content_matching():
    """match = "content" pairs by payload even when causation ids are present and differ in order."""
    rules = parse_diff_rules({"match": "content"})
    result = match_outputs([output("a", {"v": 1}, cause="m1"), output("b", {"v": 2}, cause="m2")],
                           [output("x", {"v": 2}, cause="m1"), output("y", {"v": 1}, cause="m2")], rules)
    assert result.groups[0].strategy == "content"
    assert categories(result) == [("identical", "a", "y"), ("identical", "b", "x")]


def test_forced_causation_without_overlap():
    """match = "causation" keeps causation matching even when no cause is shared: all missing or extra."""
    rules = parse_diff_rules({"match": "causation"})
    result = match_outputs([output("a", {"v": 1}, cause="prod-1")], [output("x", {"v": 1}, cause="test-1")], rules)
    assert (result.counts.missing, result.counts.extra, result.counts.identical) == (1, 1, 0)


def test_content_ignores_ignored_paths():
    """Content matching leaves ignored paths out of the content key, so those outputs still pair."""
    rules = parse_diff_rules({"ignore": ["/ts"]})
    result = match_outputs([output("a", {"v": 1, "ts": 1})], [output("x", {"v": 1, "ts": 2})], rules)
    assert (result.groups[0].strategy, result.counts.identical) == ("content", 1)


def test_content_duplicates_per_side():
    """With content matching, a repeated payload beyond the other side's copies is a duplicate."""
    result = match_outputs([output("a", {"v": 1})],
                           [output("x", {"v": 1}), output("x2", {"v": 1.0}), output("x3", {"v": 1})], DiffRules())
    counts = result.counts
    assert (counts.identical, counts.duplicate_replayed, counts.extra) == (1, 2, 0)


def test_content_non_json_by_bytes():
    """Non-JSON outputs are matched by their bytes under content matching."""
    result = match_outputs([output("a", b"\x00\x01"), output("b", b"\x02")], [output("x", b"\x00\x01")],
                           DiffRules())
    assert categories(result) == [("identical", "a", "x"), ("missing", "b", None)]


def test_causation_ordinal_by_publish_time():
    """Outputs of one input pair by their publish order, not by their position in the archive."""
    result = match_outputs(
        [output("b", {"v": 2}, cause="m", at_ms=5), output("a", {"v": 1}, cause="m", at_ms=1)],
        [output("x", {"v": 1}, cause="m", at_ms=0), output("y", {"v": 2}, cause="m", at_ms=3)], DiffRules())
    assert categories(result) == [("identical", "a", "x"), ("identical", "b", "y")]
    keys = sorted(entry.key for entry in result.entries(include_identical=True))
    assert keys == ["processor=p causation=m #0", "processor=p causation=m #1"]


def test_causation_by_processor():
    """Outputs of two processors that handled the same input are matched separately."""
    result = match_outputs([output("a", {"v": 1}, cause="m", processor="p1"),
                            output("b", {"v": 2}, cause="m", processor="p2")],
                           [output("y", {"v": 2}, cause="m", processor="p2"),
                            output("x", {"v": 1}, cause="m", processor="p1")], DiffRules())
    assert categories(result) == [("identical", "a", "x"), ("identical", "b", "y")]


def test_entry_to_dict_fields():
    """A changed entry's JSON form carries the date, topic, key, event ids and field differences."""
    result = match_outputs([output("a", {"v": 1}, cause="m")], [output("x", {"v": 2}, cause="m")], DiffRules())
    [entry] = result.entries()
    data = entry.to_dict()
    assert (data["category"], data["logical_date"], data["topic"], data["phase"]) == (
        "changed", "2024-03-09", "scores", "phase3")
    assert data["diffs"] == [{"pointer": "/v", "part": "data", "kind": "changed", "recorded": "1", "replayed": "2"}]
