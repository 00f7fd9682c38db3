"""Field-level comparison rules: numbers, NaN, tolerance, ignored paths, unordered arrays, bytes."""

from __future__ import annotations

import json
import re

import pytest

from replayer.diff import DiffRules, compare_payloads, parse_diff_rules
from replayer.diff.compare import compare_attributes


def _rules(**table):
    return parse_diff_rules(table, file="test.toml").for_topic("t")


def _diff(recorded, replayed, **table):
    return compare_payloads(recorded.encode() if isinstance(recorded, str) else recorded,
                            replayed.encode() if isinstance(replayed, str) else replayed,
                            _rules(**table))


def _case_pointer(path: str) -> str:
    """Translate the case's dotted notation (meta.trace, plays[*].ts, plays[0].id) into a pointer."""
    return "/" + re.sub(r"\[([^\]]+)\]", r".\1", path).replace(".", "/")


def _case_pairs():
    from tests.conftest import CASES

    path = CASES / "14-json-numeric-diff" / "pairs.json"
    if not path.exists():
        return []
    return json.loads(path.read_text())


@pytest.mark.parametrize("pair", _case_pairs(), ids=lambda pair: pair["id"])
def test_numeric_case_pair(pair):
    """Every recorded/produced pair of the JSON number case gets its expected verdict and path."""
    settings = pair["settings"]
    tolerance = settings.get("tolerance", {})
    diffs = _diff(pair["recorded"], pair["produced"],
                  ignore=[_case_pointer(path) for path in settings.get("ignore", [])],
                  abs_tol=tolerance.get("absolute", 0.0), rel_tol=tolerance.get("relative", 0.0))
    if pair["expected"] == "equal":
        assert diffs == []
    else:
        assert [diff.pointer for diff in diffs] == [_case_pointer(pair["path"])]


def test_numeric_case_present(cases_dir):
    """The shared case file is there, so the parametrized pairs above really ran."""
    assert len(_case_pairs()) == 14


def test_big_integer_original_text():
    """A differing big integer is reported in both original texts, not as re-rendered floats."""
    [diff] = _diff('{"play_id": 10176718226607830673}', '{"play_id": 10176718226607831000}')
    assert (diff.recorded, diff.replayed) == ("10176718226607830673", "10176718226607831000")


def test_float_original_text():
    """A differing float is reported as written (1.50, 1e2), even on the orjson fast path."""
    [diff] = _diff('{"a": 1.50, "b": 1}', '{"a": 1e2, "b": 1}')
    assert (diff.recorded, diff.replayed) == ("1.50", "1e2")


def test_int_equals_float():
    """42 equals 42.0 and 4.2e1 at any depth."""
    assert _diff('{"a": [{"b": 42}]}', '{"a": [{"b": 4.2e1}]}') == []


def test_negative_zero_equals_zero():
    """-0.0 and 0 are the same number."""
    assert _diff('[-0.0]', '[0]') == []


def test_nan_not_null():
    """NaN and null differ, and the kind reports that the JSON type changed."""
    [diff] = _diff('{"x": NaN}', '{"x": null}')
    assert diff.kind == "type_changed"


def test_infinity_equals_overflow():
    """Infinity equals 1e400 (both are +inf), -Infinity does not."""
    assert _diff('{"r": Infinity}', '{"r": 1e400}') == []
    assert len(_diff('{"r": Infinity}', '{"r": -Infinity}')) == 1


def test_big_int_beyond_2_64_nested():
    """Integers beyond 2^64 inside arrays are compared exactly."""
    [diff] = _diff('{"ids": [18446744073709551616, 1]}', '{"ids": [18446744073709551617, 1]}')
    assert diff.pointer == "/ids/0"


def test_tolerance_not_for_integers():
    """An absolute tolerance of 1000 does not make two different integers equal."""
    assert len(_diff('{"n": 5}', '{"n": 6}', abs_tol=1000.0)) == 1


def test_tolerance_for_int_and_float():
    """Tolerance applies when one side is a float text."""
    assert _diff('{"n": 5}', '{"n": 5.0000001}', abs_tol=1e-3) == []


def test_relative_tolerance():
    """A relative tolerance scales with the larger magnitude."""
    assert _diff('{"v": 1000000.0}', '{"v": 1000001.0}', rel_tol=1e-5) == []
    assert len(_diff('{"v": 1000000.0}', '{"v": 1000100.0}', rel_tol=1e-5)) == 1


def test_bool_not_number():
    """true is not 1 and false is not 0, even inside otherwise equal objects."""
    diffs = _diff('{"a": {"on": true, "off": false}}', '{"a": {"on": 1, "off": 0}}')
    assert sorted(diff.pointer for diff in diffs) == ["/a/off", "/a/on"]
    assert {diff.kind for diff in diffs} == {"type_changed"}


def test_string_not_number():
    """A number inside a string is not the number."""
    [diff] = _diff('{"a": "1"}', '{"a": 1}')
    assert diff.kind == "type_changed"


def test_missing_and_extra_keys():
    """Keys present on one side only are missing or extra, with their values."""
    diffs = _diff('{"a": 1, "b": 2}', '{"a": 1, "c": 3}')
    assert [(diff.pointer, diff.kind, diff.recorded, diff.replayed) for diff in diffs] == [
        ("/b", "missing", "2", None), ("/c", "extra", None, "3")]


def test_key_order_irrelevant():
    """Objects with the same members in another order are equal."""
    assert _diff('{"a": 1, "b": [1, 2]}', '{"b": [1, 2], "a": 1}') == []


def test_array_order_matters_by_default():
    """Without an unordered rule, a reordered array differs."""
    assert [diff.pointer for diff in _diff('[1, 2]', '[2, 1]')] == ["/0", "/1"]


def test_array_length_change():
    """A longer array reports the extra items by index."""
    [diff] = _diff('{"a": [1]}', '{"a": [1, 2]}')
    assert (diff.pointer, diff.kind) == ("/a/1", "extra")


def test_unordered_array_equal():
    """An order-insensitive array with the same items in another order is equal."""
    assert _diff('{"game_ids": [3, 1, 2]}', '{"game_ids": [1, 2, 3.0]}', unordered=["/game_ids"]) == []


def test_unordered_array_multiset():
    """Order-insensitive comparison counts repeated items (a multiset, not a set)."""
    [diff] = _diff('{"g": [1, 1, 2]}', '{"g": [1, 2, 2]}', unordered=["/g"])
    assert diff.kind == "changed"


def test_unordered_array_of_objects_field_diff():
    """A changed object in an unordered array is reported field by field."""
    diffs = _diff('{"p": [{"id": 1, "v": 1}, {"id": 2, "v": 2}]}',
                  '{"p": [{"id": 2, "v": 2}, {"id": 1, "v": 5}]}', unordered=["/p"])
    assert [(diff.pointer, diff.recorded, diff.replayed) for diff in diffs] == [("/p/0/v", "1", "5")]


def test_unordered_with_ignored_field():
    """Ignored fields inside items do not break the multiset match."""
    assert _diff('{"p": [{"id": 1, "ts": "a"}, {"id": 2, "ts": "b"}]}',
                 '{"p": [{"id": 2, "ts": "x"}, {"id": 1, "ts": "y"}]}',
                 unordered=["/p"], ignore=["/p/*/ts"]) == []


def test_unordered_wildcard_path():
    """Unordered paths take wildcards like ignore paths."""
    assert _diff('{"t": [{"ids": [1, 2]}]}', '{"t": [{"ids": [2, 1]}]}', unordered=["/t/*/ids"]) == []


def test_ignore_any_depth():
    """'**/execution_id' ignores the key at any depth, including the root."""
    assert _diff('{"execution_id": 1, "a": {"b": [{"execution_id": 2}]}}',
                 '{"execution_id": 9, "a": {"b": [{"execution_id": 8}]}}', ignore=["**/execution_id"]) == []


def test_ignore_star_is_one_level():
    """'/plays/*/ts' does not ignore a deeper ts."""
    [diff] = _diff('{"plays": [{"x": {"ts": 1}}]}', '{"plays": [{"x": {"ts": 2}}]}', ignore=["/plays/*/ts"])
    assert diff.pointer == "/plays/0/x/ts"


def test_ignore_exact_path():
    """An ignored path hides only that field."""
    diffs = _diff('{"metadata": {"duration_seconds": 1.5, "rows": 3}}',
                  '{"metadata": {"duration_seconds": 9.1, "rows": 4}}', ignore=["/metadata/duration_seconds"])
    assert [diff.pointer for diff in diffs] == ["/metadata/rows"]


def test_ignored_missing_key():
    """A key that exists on one side only is not reported when its path is ignored."""
    assert _diff('{"a": 1, "run": "x"}', '{"a": 1}', ignore=["/run"]) == []


def test_pointer_escaping():
    """Keys with '/' and '~' are escaped in the reported pointer."""
    [diff] = _diff('{"a/b": {"c~d": 1}}', '{"a/b": {"c~d": 2}}')
    assert diff.pointer == "/a~1b/c~0d"


def test_non_json_bytes_equal():
    """Identical non-JSON payloads are equal."""
    assert _diff(b"\x00\x01binary", b"\x00\x01binary") == []


def test_non_json_bytes_differ():
    """Different non-JSON payloads give one bytes difference at the payload root."""
    [diff] = _diff(b"\xff\x00", b"\xff\x01")
    assert (diff.pointer, diff.kind) == ("", "bytes")
    assert diff.recorded.startswith("0x")


def test_json_against_non_json():
    """A JSON payload against a non-JSON one compares as bytes."""
    [diff] = _diff('{"a": 1}', "plain text")
    assert diff.kind == "bytes"


def test_whole_payload_ignored():
    """The empty pattern ignores the whole payload."""
    assert _diff(b"abc", b"xyz", ignore=[""]) == []


def test_topic_override_tolerance():
    """A per-topic tolerance applies only to that topic."""
    rules = parse_diff_rules({"topics": {"scores": {"abs_tol": 0.5}}})
    assert compare_payloads(b'{"v": 1.0}', b'{"v": 1.2}', rules.for_topic("scores")) == []
    assert len(compare_payloads(b'{"v": 1.0}', b'{"v": 1.2}', rules.for_topic("other"))) == 1


def test_attribute_diffs():
    """Attributes are compared by name, and ignored names are skipped."""
    rules = DiffRules(ignore_attributes=("sent_at",)).for_topic("t")
    diffs = compare_attributes({"a": "1", "sent_at": "x"}, {"a": "2", "sent_at": "y", "b": "3"}, rules)
    assert [(diff.pointer, diff.kind, diff.part) for diff in diffs] == [
        ("/a", "changed", "attributes"), ("/b", "extra", "attributes")]


def test_attributes_not_compared_when_disabled():
    """compare_attributes = false skips attributes."""
    rules = DiffRules(compare_attributes=False).for_topic("t")
    assert compare_attributes({"a": "1"}, {"a": "2"}, rules) == []


# --- the whole kind of number fault: exact ids, mixed int/float, non-finite values ---


@pytest.mark.parametrize("recorded, replayed", [
    ('{"id": 10176718226607830673}', '{"id": 1.0176718226607831e19}'),
    ('{"id": 9007199254740993}', '{"id": 9007199254740992.0}'),
    ('{"id": -9007199254740993}', '{"id": -9007199254740992.0}'),
    ('{"id": 18446744073709551617}', '{"id": 1.8446744073709552e19}'),
    ('{"id": 100000000000000000000000000000000000000000000000000}', '{"id": 1e50}'),
])
def test_big_int_against_float_differs(recorded, replayed):
    """An integer id beyond 2^53 differs from the nearest double written as a float."""
    [diff] = _diff(recorded, replayed)
    assert (diff.pointer, diff.kind) == ("/id", "changed")
    assert diff.recorded == recorded.split(": ")[1].rstrip("}")


@pytest.mark.parametrize("table", [{"rel_tol": 1e-9}, {"abs_tol": 1000.0}, {"abs_tol": 1.0, "rel_tol": 0.5}])
def test_big_int_against_float_with_tolerance(table):
    """A tolerance does not make a big integer id equal to a nearby float."""
    [diff] = _diff('{"id": 9007199254740993}', '{"id": 9007199254740992.0}', **table)
    assert diff.pointer == "/id"


@pytest.mark.parametrize("table", [{}, {"rel_tol": 1e-9}])
def test_big_int_pair_with_tolerance(table):
    """Two integers just above 2^53 differ by one and are reported, with or without tolerance."""
    [diff] = _diff('{"n": [9007199254740993]}', '{"n": [9007199254740992]}', **table)
    assert (diff.pointer, diff.recorded, diff.replayed) == ("/n/0", "9007199254740993", "9007199254740992")


def test_big_int_equal_to_exact_float():
    """A float whose value is exactly the integer equals it (2^60 written both ways)."""
    assert _diff('{"n": 1152921504606846976}', '{"n": 1.152921504606846976e18}') == []


@pytest.mark.parametrize("recorded, replayed", [
    ("42", "42.0"), ("100", "1e2"), ("100", "1E+2"), ("0.5", "5e-1"), ("0.10", "0.1"),
    ("-0", "0"), ("-0.0", "0.0"), ("-0.0", "0"), ("[-0.0, 0]", "[0, -0]"),
])
def test_same_number_other_text(recorded, replayed):
    """Different texts of one number are equal, also as the whole payload."""
    assert _diff(recorded, replayed) == []


@pytest.mark.parametrize("recorded, replayed, pointer", [
    ('{"x": NaN}', '{"x": null}', "/x"),
    ('{"x": NaN}', '{"x": "NaN"}', "/x"),
    ('{"x": NaN}', '{"x": 0}', "/x"),
    ('{"x": [NaN]}', '{"x": [Infinity]}', "/x/0"),
    ('{"x": Infinity}', '{"x": -Infinity}', "/x"),
    ('{"x": Infinity}', '{"x": 1.7976931348623157e308}', "/x"),
])
def test_non_finite_differences(recorded, replayed, pointer):
    """NaN and infinities differ from null, strings, finite numbers and each other."""
    [diff] = _diff(recorded, replayed)
    assert diff.pointer == pointer


@pytest.mark.parametrize("table", [{"abs_tol": 1e300}, {"rel_tol": 1.0}])
def test_tolerance_never_bridges_nan_or_infinity(table):
    """Even a huge tolerance keeps NaN and Infinity apart from finite numbers."""
    assert len(_diff('{"a": NaN}', '{"a": 1.0}', **table)) == 1
    assert len(_diff('{"a": Infinity}', '{"a": 1e308}', **table)) == 1


@pytest.mark.parametrize("recorded, replayed", [
    ('{"x": [NaN, {"y": NaN}]}', '{"x": [NaN, {"y": NaN}]}'),
    ('{"x": -Infinity}', '{"x": -1e400}'),
    ('NaN', 'NaN '),
])
def test_non_finite_equal(recorded, replayed):
    """NaN equals NaN at any depth; -Infinity equals -1e400."""
    # Extra spaces keep the bytes apart, so the parsed documents are compared.
    assert _diff(recorded, replayed.replace(" ", "  ")) == []


def test_tolerance_boundary():
    """abs_tol is inclusive and rel_tol scales with the larger side."""
    assert _diff('{"v": 1.0}', '{"v": 1.5}', abs_tol=0.5) == []
    assert len(_diff('{"v": 1.0}', '{"v": 1.5000001}', abs_tol=0.5)) == 1
    assert _diff('{"v": 100.0}', '{"v": 110.0}', rel_tol=0.1) == []
    assert len(_diff('{"v": 100.0}', '{"v": 112.0}', rel_tol=0.1)) == 1


def test_tolerance_per_field_in_arrays():
    """Tolerance applies to every float in nested arrays, and each miss is its own difference."""
    diffs = _diff('{"p": [[1.0, 2.0], [3.0]]}', '{"p": [[1.0000001, 2.5], [3.9]]}', abs_tol=0.01)
    assert [diff.pointer for diff in diffs] == ["/p/0/1", "/p/1/0"]


def test_unicode_escapes_equal():
    """An escaped and a literal non-ASCII character are the same string."""
    assert _diff('{"name": "Joki\\u0107"}', '{"name": "Joki\u0107"}') == []


def test_whitespace_only_difference():
    """Formatting (spaces, newlines, key order) never matters."""
    assert _diff('{"a":1,"b":[1,2]}', '{\n  "b": [ 1, 2 ],\n  "a": 1\n}\n') == []


@pytest.mark.parametrize("pattern, changed, expected", [
    ("/plays", '{"plays": [9], "n": 1, "meta": {"a": 1}}', []),
    ("/plays/0", '{"plays": [9, 2], "n": 1, "meta": {"a": 1}}', []),
    ("/plays/0", '{"plays": [1, 9], "n": 1, "meta": {"a": 1}}', ["/plays/1"]),
    ("/plays/*", '{"plays": [9, 9, 9], "n": 1, "meta": {"a": 1}}', []),
    ("/**/n", '{"plays": [1, 2], "n": 5, "meta": {"a": 1}}', []),
    ("/meta/**", '{"plays": [1, 2], "n": 1, "meta": {"a": {"b": 1}}}', []),
    ("/meta/**", '{"plays": [1, 2], "n": 1}', []),
    ("**/missing", '{"plays": [1, 3], "n": 1, "meta": {"a": 1}}', ["/plays/1"]),
])
def test_ignore_pattern_shapes(pattern, changed, expected):
    """Whole arrays, single indexes, '*' over items and '**' anywhere are ignored as written."""
    diffs = _diff('{"plays": [1, 2], "n": 1, "meta": {"a": 1}}', changed, ignore=[pattern])
    assert [diff.pointer for diff in diffs] == expected


def test_ignore_execution_id_at_every_depth():
    """'**/execution_id' ignores the key in objects nested in arrays of objects, not a sibling."""
    recorded = '{"execution_id": "a", "runs": [{"execution_id": "b", "s": {"execution_id": "c", "v": 1}}]}'
    replayed = '{"execution_id": "x", "runs": [{"execution_id": "y", "s": {"execution_id": "z", "v": 2}}]}'
    [diff] = _diff(recorded, replayed, ignore=["**/execution_id"])
    assert diff.pointer == "/runs/0/s/v"


def test_ignore_key_with_slash():
    """An ignore pattern reaches a key containing '/' through the '~1' escape."""
    assert _diff('{"a/b": 1, "c": 2}', '{"a/b": 3, "c": 2}', ignore=["/a~1b"]) == []


def test_unordered_only_where_configured():
    """An unordered rule on one array leaves the order of another array significant."""
    diffs = _diff('{"a": [1, 2], "b": [1, 2]}', '{"a": [2, 1], "b": [2, 1]}', unordered=["/a"])
    assert [diff.pointer for diff in diffs] == ["/b/0", "/b/1"]


def test_unordered_length_change():
    """An order-insensitive array with an item added reports exactly that item as extra."""
    [diff] = _diff('{"g": [3, 1]}', '{"g": [1, 2, 3]}', unordered=["/g"])
    assert (diff.kind, diff.replayed) == ("extra", "2")


def test_unordered_nan_and_numbers():
    """Items compare by canonical value inside unordered arrays (NaN, 1 and 1.0, -0.0 and 0)."""
    assert _diff('{"g": [NaN, 1, -0.0]}', '{"g": [0, NaN, 1.0]}', unordered=["/g"]) == []


def test_unordered_with_tolerance_pairs_closest():
    """Unmatched items are paired in canonical order and compared with the tolerance."""
    assert _diff('{"g": [2.0, 1.0]}', '{"g": [1.0000001, 2.0000001]}', unordered=["/g"], abs_tol=1e-3) == []


def test_unordered_array_of_arrays():
    """Unordered rules on '/m' and '/m/*' make both levels of nested arrays order-insensitive."""
    assert _diff('{"m": [[1, 2], [3, 4]]}', '{"m": [[4, 3], [2, 1]]}', unordered=["/m", "/m/*"]) == []
    assert len(_diff('{"m": [[1, 2], [3, 4]]}', '{"m": [[4, 3], [2, 1]]}', unordered=["/m"])) > 0


@pytest.mark.parametrize("recorded, replayed", [
    (b"", b"{}"),
    (b"\xef\xbb\xbf\xff", b"\xef\xbb\xbf\xfe"),
    (b'{"a": 1', b'{"a": 1}'),
    (b"\x89PNG\r\n\x1a\n" + bytes(200), b"\x89PNG\r\n\x1a\n" + bytes(199) + b"\x01"),
])
def test_non_json_compared_as_bytes(recorded, replayed):
    """Empty, invalid UTF-8, truncated JSON and binary payloads are compared as bytes, with previews."""
    [diff] = _diff(recorded, replayed)
    assert (diff.pointer, diff.kind) == ("", "bytes")
    assert diff.recorded is not None
    assert diff.replayed is not None
    assert len(diff.recorded) < 260


def test_non_json_same_bytes_equal():
    """Equal bytes are equal even when neither side is JSON."""
    assert _diff(b"\x00\xff" * 100, b"\x00\xff" * 100) == []


def test_type_change_reported_with_kind():
    """An object turning into an array, or a number into a string, is a type change at that pointer."""
    diffs = _diff('{"a": {"x": 1}, "b": 1}', '{"a": [1], "b": "1"}')
    assert [(diff.pointer, diff.kind) for diff in diffs] == [("/a", "type_changed"), ("/b", "type_changed")]


def test_unordered_float_original_text():
    """A changed float inside a reordered array keeps both original texts."""
    [diff] = _diff('{"p": [{"id": 1, "v": 1.50}, {"id": 2, "v": 2.0}]}',
                   '{"p": [{"id": 2, "v": 2.0}, {"id": 1, "v": 1.250}]}', unordered=["/p"])
    assert (diff.pointer, diff.recorded, diff.replayed) == ("/p/0/v", "1.50", "1.250")


def test_unordered_extra_float_original_text():
    """An extra float item is reported at its replayed index with its own text, not a paired item's."""
    diffs = _diff('{"u": [null]}', '{"u": [0.50, -1]}', unordered=["/u"], abs_tol=0.5)
    assert sorted((diff.kind, diff.pointer, diff.recorded, diff.replayed) for diff in diffs) == [
        ("extra", "/u/0", None, "0.50"), ("type_changed", "/u/0", "null", "-1")]


def test_missing_subtree_original_text():
    """A missing object is rendered with its numbers as written."""
    [diff] = _diff('{"a": {"x": 1.10, "y": [2E3]}}', '{}')
    assert (diff.kind, diff.recorded) == ("missing", '{"x":1.10,"y":[2E3]}')


@pytest.mark.parametrize("recorded, replayed, texts", [
    ('{"a": 1e-07, "b": 1}', '{"a": 2e-07, "b": 1}', ("1e-07", "2e-07")),
    ('{"a":1e-7,"b":1}', '{"a":2e-7,"b":1}', ("1e-7", "2e-7")),
    ('{"a": 0.25, "b": [1.5]}', '{"a": 0.5, "b": [1.5]}', ("0.25", "0.5")),
    ('{"a": 0.250}', '{"a":0.5}', ("0.250", "0.5")),
    ('{"a": 1E+2}', '{"a": 101.0}', ("1E+2", "101.0")),
])
def test_float_text_as_written(recorded, replayed, texts):
    """Differing floats keep the text each side wrote, whatever the spacing or exponent style."""
    [diff] = _diff(recorded, replayed)
    assert (diff.recorded, diff.replayed) == texts


def test_boolean_on_one_side_only():
    """A subtree equal under Python's == but holding true against 1 is still a type change."""
    [diff] = _diff('{"p": [{"on": 1, "v": 1}], "w": 2}', '{"p": [{"on": true, "v": 1}], "w": 2}')
    assert (diff.pointer, diff.kind) == ("/p/0/on", "type_changed")
