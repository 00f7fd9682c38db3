"""Hostile payloads and names: deep nesting, control characters, line separators, many outputs, boundaries."""

from __future__ import annotations

import datetime as dt
import io
import json
import xml.etree.ElementTree as ET

import pytest

import replayer._cli_diff  # noqa: F401  (adds the diff command to the group)
from recorder._writer import ArchiveWriter
from replayer.cli import main
from replayer.diff import build_report, compare_payloads, numbers_equal, parse_diff_rules, print_summary
from replayer.diff.canonical import MAX_DEPTH
from replayer.diff.compare import TOO_DEEP_NOTE
from replayer.diff.match import match_outputs
from replayer.diff.rules import DiffRules, parse_thresholds
from schemas import Direction, RecordedEvent

DAY = dt.date(2024, 5, 1)
START = 1_714_564_800_000_000
RULES = parse_diff_rules({}).for_topic("t")
CONTROLS = "ctl\x00\x01\x08\x0b\x1b[31mRED\x7f\ufffe\x9b"


def output(event_id, data, *, topic="t", cause="i1", attributes=None, at_ms=0, source="sdk"):
    payload = data if isinstance(data, bytes) else json.dumps(data, ensure_ascii=False).encode()
    return RecordedEvent(event_id=event_id, logical_date=DAY, phase="p1", direction=Direction.OUTPUT,
                         publish_time=START + at_ms * 1000, data=payload, source=source, processor="p",
                         topic=topic, causation_id=cause, attributes=attributes or {})


def nested(depth, leaf, opener="{\"a\":", closer="}"):
    return (opener * depth + leaf + closer * depth).encode()


# 1. Deep nesting ---------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 600, 1000, 5000])
@pytest.mark.parametrize("opener,closer", [("{\"a\":", "}"), ("[", "]")])
def test_deep_payload_compared_as_bytes(depth, opener, closer):
    """Payloads nested past the limit never raise; they differ as bytes at the root, with a note."""
    diffs = compare_payloads(nested(depth, "1", opener, closer), nested(depth, "2", opener, closer), RULES)
    assert [(diff.pointer, diff.kind, diff.note) for diff in diffs] == [("", "bytes", TOO_DEEP_NOTE)]
    assert diffs[0].to_dict()["note"] == TOO_DEEP_NOTE


def test_deep_payload_unordered_rules_no_error():
    """Order-insensitive rules (which build canonical texts) also stop at the limit."""
    rules = parse_diff_rules({"unordered": ["**/a"]}).for_topic("t")
    diffs = compare_payloads(nested(700, "1"), nested(700, "2"), rules)
    assert [diff.kind for diff in diffs] == ["bytes"]


def test_payload_at_depth_limit_compared_by_field():
    """Nesting up to the limit keeps the field-level comparison and its pointer."""
    diffs = compare_payloads(nested(MAX_DEPTH, "1"), nested(MAX_DEPTH, "2"), RULES)
    assert [(diff.pointer, diff.kind, diff.note) for diff in diffs] == [("/a" * MAX_DEPTH, "changed", None)]


def test_deep_outputs_matched_by_content_and_reported(tmp_path):
    """Content matching of deep payloads works, and the report counts the byte comparisons as a warning."""
    recorded = [output("a1", nested(700, "1"), cause=None), output("a2", nested(700, "1"), cause=None)]
    replayed = [output("b1", nested(700, "1"), cause=None, source="replay")]
    result = match_outputs(recorded, replayed, DiffRules())
    assert sorted(entry.category for entry in result.entries(include_identical=True)) == ["duplicate", "identical"]

    report = build_report(recorded_events=[output("a1", nested(700, "1"))],
                          replayed_events=[output("b1", nested(700, "2"), source="replay")], out_dir=tmp_path)
    assert report.totals.changed == 1
    document = json.loads((tmp_path / "report.json").read_text())
    assert any("1 output pair was compared as bytes" in warning for warning in document["warnings"])
    line = json.loads((tmp_path / "diffs.jsonl").read_text().splitlines()[0])
    assert line["diffs"][0]["note"] == TOO_DEEP_NOTE


def _archive(path, events, source):
    with ArchiveWriter(str(path), writer_id="test", source=source) as writer:
        for item in events:
            writer.write(item)
    return str(path)


def test_cli_diff_deep_payload_writes_report(tmp_path, capsys):
    """`replay diff` of two archives with a 700-level payload exits 1 with a report, not an error."""
    baseline = _archive(tmp_path / "a", [output("o1", nested(700, "1"))], "sdk")
    candidate = _archive(tmp_path / "b", [output("r1", nested(700, "2"), source="replay")], "replay")
    with pytest.raises(SystemExit) as exited:
        main(["diff", baseline, candidate, "--date", DAY.isoformat(), "--output", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert exited.value.code == 1, captured.err
    assert "nests deeper than" in captured.out
    assert json.loads((tmp_path / "out" / "report.json").read_text())["totals"]["changed"] == 1


# 2. Control characters in names and values -------------------------------------------------------

def _hostile_report(tmp_path):
    topic = "t<script>" + CONTROLS
    recorded = [output("id" + CONTROLS, {"c": CONTROLS, "n": 1}, topic=topic, attributes={"k": CONTROLS}),
                output("miss" + CONTROLS, b"\x00\xff<script>", topic=topic, cause="c2")]
    replayed = [output("idB", {"c": CONTROLS + "!", "n": 2}, topic=topic, attributes={"k": "x"}, source="replay"),
                output("extra", b"\x1b[2J", topic=topic, cause="c3", source="replay")]
    return build_report(recorded_events=recorded, replayed_events=replayed, out_dir=tmp_path,
                        junit_xml=tmp_path / "junit.xml")


def test_junit_is_well_formed_with_control_characters(tmp_path):
    """NUL, ESC and U+FFFE in a topic are written as visible text, so an XML parser reads the file."""
    _hostile_report(tmp_path)
    raw = (tmp_path / "junit.xml").read_bytes()
    root = ET.fromstring(raw)
    names = [case.get("name") for case in root.iter("testcase")]
    assert any("\\u0000" in name and "\\u001b" in name and "\\ufffe" in name for name in names)
    for forbidden in (b"\x00", b"\x1b", b"\x01", "\ufffe".encode()):
        assert forbidden not in raw


def test_html_has_no_raw_control_characters(tmp_path):
    """report.html shows control characters as \\uXXXX text and contains none of the raw bytes."""
    _hostile_report(tmp_path)
    raw = (tmp_path / "report.html").read_bytes()
    for byte in [*range(0x00, 0x09), 0x0b, 0x0c, *range(0x0e, 0x20), 0x7f]:
        assert bytes([byte]) not in raw, hex(byte)
    text = raw.decode("utf-8")
    assert "\ufffe" not in text
    assert "\x9b" not in text
    assert "\\u0000" in text
    assert "\\u001b" in text
    assert "<script>" not in text


def test_terminal_summary_escapes_control_characters_and_markup(tmp_path):
    """The summary writes no escape sequence from the data, and brackets in names are not rich markup."""
    report = _hostile_report(tmp_path)
    buffer = io.StringIO()
    print_summary(report, file=buffer, width=400)
    text = buffer.getvalue()
    assert "\x1b" not in text
    assert "\x00" not in text
    assert "\x9b" not in text
    assert "\\u001b[31mRED" in text


def test_diffs_jsonl_escapes_line_separators(tmp_path):
    """U+2028, U+2029 and U+0085 in values are escaped, so splitlines() gives one line per record."""
    value = "x\u2028y\u2029z\x85w\r\nq"
    recorded = [output("a1", {"v": value}, attributes={"k": "a\u2028b"})]
    replayed = [output("b1", {"v": "x"}, attributes={"k": "z"}, source="replay")]
    build_report(recorded_events=recorded, replayed_events=replayed, out_dir=tmp_path)
    text = (tmp_path / "diffs.jsonl").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert json.loads(record["diffs"][0]["recorded"]) == value
    report_text = (tmp_path / "report.json").read_text(encoding="utf-8")
    assert "\u2028" not in report_text
    assert "\x85" not in report_text
    assert json.loads(report_text)["topics"][0]["samples"][0]["diffs"][0]["pointer"] == "/v"


# 3. Many outputs of one input --------------------------------------------------------------------

def test_many_surplus_outputs_of_one_input():
    """20000 replayed outputs of one input: each surplus output is extra or a duplicate of its first copy."""
    count = 20_000
    recorded = [output("a0", {"v": 0})]
    replayed = [output(f"b{index}", {"v": index % 5000}, at_ms=index, source="replay") for index in range(count)]
    result = match_outputs(recorded, replayed, DiffRules())
    entries = list(result.entries(include_identical=True))
    assert result.counts.identical == 1
    assert result.counts.extra == 4999
    assert result.counts.duplicate_replayed == count - 5000
    by_id = {entry.replayed_event_id: entry for entry in entries}
    # b5000 has the content of b0, the first output (which was paired).
    assert by_id["b5000"].duplicate_of == "b0"
    assert by_id["b19999"].duplicate_of == "b4999"


# 4. Attributes, tolerance boundary, ratio display, zero comparisons --------------------------------

def test_attribute_differences_are_json_texts():
    """Attribute values are strings, carried as JSON texts like payload values."""
    from replayer.diff.compare import compare_attributes

    diffs = compare_attributes({"a": "1", "q": 'say "hi"'}, {"a": "2", "b": "x"}, RULES)
    rows = {diff.pointer: (diff.recorded, diff.replayed) for diff in diffs}
    assert rows == {"/a": ('"1"', '"2"'), "/b": (None, '"x"'), "/q": ('"say \\"hi\\""', None)}
    assert json.loads(rows["/q"][0]) == 'say "hi"'


@pytest.mark.parametrize("left,right,abs_tol,equal", [
    (1.0, 1.1, 0.1, True), (-1.0, -1.1, 0.1, True), (1_000_000.0, 1_000_000.1, 0.1, True),
    (1.0, 1.1001, 0.1, False), (0.0, 0.30000000000000004, 0.3, True), (1.0, 1.2, 0.1, False),
])
def test_abs_tol_boundary_is_inclusive(left, right, abs_tol, equal):
    """|a - b| <= abs_tol is true at the decimal boundary despite binary rounding."""
    assert numbers_equal(left, right, abs_tol=abs_tol, rel_tol=0.0) is equal
    rules = parse_diff_rules({"abs_tol": abs_tol}).for_topic("t")
    diffs = compare_payloads(json.dumps({"a": left}).encode(), json.dumps({"a": right}).encode(), rules)
    assert (diffs == []) is equal


def test_changed_ratio_check_shows_why_it_failed():
    """1/3 against a limit of 0.333333 fails, and value and message tell the two apart."""
    from replayer.diff.checks import topic_checks
    from replayer.diff.match import MatchCounts

    counts = MatchCounts(identical=2, changed=1)
    check = topic_checks("p1", "t", counts, parse_thresholds({"max_changed_ratio": 0.333333}))[0]
    assert check.status == "fail"
    assert check.value > check.limit
    assert "33.33333%" in check.message
    assert "limit 33.33330%" in check.message
    passed = topic_checks("p1", "t", counts, parse_thresholds({"max_changed_ratio": 1 / 3}))[0]
    assert passed.status == "ok"


def test_zero_comparisons_warn_without_failing(tmp_path):
    """A report that compared nothing passes, with a warning in report.json, HTML and the summary."""
    report = build_report(recorded_events=[], replayed_events=[], out_dir=tmp_path)
    assert report.exit_code == 0
    document = json.loads((tmp_path / "report.json").read_text())
    assert [warning.startswith("no outputs were compared") for warning in document["warnings"]] == [True]
    assert "no outputs were compared" in (tmp_path / "report.html").read_text()
    buffer = io.StringIO()
    print_summary(report, file=buffer, width=200)
    assert "warning: no outputs were compared" in buffer.getvalue()


def test_nothing_paired_warns_too(tmp_path):
    """Outputs on both sides that never pair (limits allowing it) still warn that nothing was compared."""
    report = build_report(recorded_events=[output("a", {"v": 1}, cause="x")],
                          replayed_events=[output("b", {"v": 2}, cause="y", source="replay")],
                          thresholds=parse_thresholds({"max_missing": 5, "max_extra": 5}), out_dir=tmp_path)
    assert report.exit_code == 0
    assert any("none of the 1 recorded and 1 replayed" in warning for warning in report.warnings)


def test_normal_report_has_no_warnings(tmp_path):
    """A report that compared outputs has an empty warnings list."""
    build_report(recorded_events=[output("a", {"v": 1})], replayed_events=[output("b", {"v": 1}, source="replay")],
                 out_dir=tmp_path)
    assert json.loads((tmp_path / "report.json").read_text())["warnings"] == []
