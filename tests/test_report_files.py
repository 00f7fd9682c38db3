"""report.json, diffs.jsonl, report.html and JUnit XML written by build_report."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest

from replayer.diff import REPORT_VERSION, build_report, parse_diff_rules, print_summary
from schemas import Direction, RecordedEvent

DAY = dt.date(2024, 3, 9)
START = 1_710_000_000_000_000


def event(event_id, direction, payload, *, cause=None, processor="scorer", phase="phase3", topic="scores",
          at_ms=0, handling_micros=None, source="sdk"):
    return RecordedEvent(event_id=event_id, logical_date=DAY, phase=phase, direction=direction,
                         publish_time=START + at_ms * 1000, data=json.dumps(payload).encode(), source=source,
                         processor=processor, topic=topic, causation_id=cause, handling_micros=handling_micros)


def _scenario():
    recorded = [
        event("m1", Direction.INPUT, {"g": 1}, topic="games", handling_micros=120_000),
        event("m2", Direction.INPUT, {"g": 2}, topic="games", handling_micros=80_000),
        event("m3", Direction.INPUT, {"g": 3}, topic="games", handling_micros=90_000),
        event("o1", Direction.OUTPUT, {"g": 1, "pts": 10176718226607830673}, cause="m1", at_ms=120),
        event("o2", Direction.OUTPUT, {"g": 2, "pts": 3}, cause="m2", at_ms=80),
        event("o2b", Direction.OUTPUT, {"g": 2, "pts": 3}, cause="m2", at_ms=95),
        event("o3", Direction.OUTPUT, {"g": 3, "pts": 4}, cause="m3", at_ms=90),
    ]
    replayed = [
        event("r1", Direction.OUTPUT, {"g": 1, "pts": 10176718226607831000}, cause="m1", source="replay"),
        event("r2", Direction.OUTPUT, {"g": 2, "pts": 3}, cause="m2", source="replay"),
    ]
    calls = [{"lane": "2024-03-09", "logical_date": "2024-03-09", "phase": "phase3", "processor": "scorer",
              "input_event_id": f"m{index}", "outcome": "ack", "category": None, "handling_micros": micros,
              "outputs": 1} for index, micros in ((1, 100_000), (2, 70_000), (3, 2_500_000))]
    config = SimpleNamespace(
        file="replay.toml", phases=("phase3",),
        processors=(SimpleNamespace(name="scorer", phase="phase3", expected=True),
                    SimpleNamespace(name="ranker", phase="phase3", expected=True)),
        diff=parse_diff_rules({"ignore": ["**/execution_id"]}),
        thresholds={"latency": {"phase3": {"warn_s": 0.5, "critical_s": 2.0, "statistic": "max"}}},
        replay=SimpleNamespace(mode="isolated"),
    )
    run_meta = {"mode": "isolated", "dates": ["2024-03-09"], "phases": ["phase3"], "speed": "max",
                "read": {"files_read": 2, "records_read": 7, "duplicates_removed": 1,
                         "damaged": [{"uri": "archive/date=2024-03-09/phase=phase3/x.avro",
                                      "reason": "truncated", "records_recovered": 3, "block": 2}]}}
    return recorded, replayed, calls, config, run_meta


@pytest.fixture
def report_dir(tmp_path):
    recorded, replayed, calls, config, run_meta = _scenario()
    report = build_report(recorded_events=recorded, replayed_events=replayed, calls=calls, run_meta=run_meta,
                          config=config, out_dir=tmp_path, junit_xml=tmp_path / "junit.xml")
    return tmp_path, report


def test_exit_code_nonzero(report_dir):
    """Changed, missing, critical latency, a silent processor and a damaged file make the exit code 1."""
    _, report = report_dir
    failed = {check.name for check in report.failed_checks}
    assert report.exit_code == 1
    assert failed == {"changed_ratio", "missing", "latency", "silent_processors", "damaged_files"}


def test_clean_report_exit_zero(tmp_path):
    """Identical outputs and latency under the limits give exit code 0."""
    recorded, _, _, _, _ = _scenario()
    outputs = [item for item in recorded if item.direction is Direction.OUTPUT and item.event_id != "o2b"]
    report = build_report(recorded_events=recorded[:3] + outputs, replayed_events=outputs, out_dir=tmp_path)
    assert report.exit_code == 0


def test_report_json_schema(report_dir):
    """report.json has the documented version and top-level sections."""
    folder, _ = report_dir
    document = json.loads((folder / "report.json").read_text())
    assert document["report_version"] == REPORT_VERSION == 1
    assert set(document) >= {"exit_code", "passed", "run", "totals", "topics", "validation", "latency",
                             "noise", "checks", "rules", "files"}
    assert document["totals"]["changed"] == 1
    assert document["totals"]["missing"] == 1
    assert document["totals"]["duplicate_recorded"] == 1


def test_report_json_original_numbers(report_dir):
    """The changed big integer keeps both original texts in report.json."""
    folder, _ = report_dir
    document = json.loads((folder / "report.json").read_text())
    changed = [sample for sample in document["topics"][0]["samples"] if sample["category"] == "changed"]
    diff = changed[0]["diffs"][0]
    assert (diff["recorded"], diff["replayed"]) == ("10176718226607830673", "10176718226607831000")


def test_validation_in_report(report_dir):
    """Validation lists the silent processor, the damaged file and the reader's duplicates."""
    folder, _ = report_dir
    validation = json.loads((folder / "report.json").read_text())["validation"]
    assert validation["silent_processors"] == [{"phase": "phase3", "processor": "ranker"}]
    assert validation["damaged_files"][0]["reason"] == "truncated"
    assert validation["archive_duplicates_removed"] == 1


def test_diffs_jsonl_lines(report_dir):
    """diffs.jsonl has one JSON line per key that is not identical."""
    folder, _ = report_dir
    lines = [json.loads(line) for line in (folder / "diffs.jsonl").read_text().splitlines()]
    assert sorted(line["category"] for line in lines) == ["changed", "duplicate", "missing"]


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.section_ids = []
        self.references = []
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        values = dict(attrs)
        if tag == "section":
            self.section_ids.append(values.get("id"))
        for name in ("src", "href", "action", "xlink:href"):
            if name in values:
                self.references.append(values[name])


def test_html_sections(report_dir):
    """report.html has the summary, checks, counts, latency chart, validation and differences."""
    folder, _ = report_dir
    page = _Page()
    page.feed((folder / "report.html").read_text())
    assert page.section_ids == ["summary", "checks", "counts", "latency", "validation", "differences"]
    assert "svg" in page.tags
    assert "rect" in page.tags


def test_html_self_contained(report_dir):
    """report.html has no script, no external reference and no URL at all."""
    folder, _ = report_dir
    text = (folder / "report.html").read_text()
    page = _Page()
    page.feed(text)
    assert "script" not in page.tags
    assert page.references == []
    assert "http://" not in text
    assert "https://" not in text
    assert "<link" not in text
    assert "@import" not in text
    assert "url(" not in text


def test_html_shows_difference(report_dir):
    """The first differences show the pointer and both original numbers."""
    folder, _ = report_dir
    text = (folder / "report.html").read_text()
    assert "/pts" in text
    assert "10176718226607830673" in text
    assert "10176718226607831000" in text


def test_junit_cases(report_dir):
    """JUnit XML has a case per phase and topic and per processor latency, failing where limits broke."""
    folder, _ = report_dir
    root = ET.parse(folder / "junit.xml").getroot()
    cases = {(case.get("classname"), case.get("name")): case for case in root.iter("testcase")}
    assert set(cases) == {("replay.phase3", "topic scores"), ("replay.phase3", "latency scorer"),
                          ("replay.phase3", "errors scorer"), ("replay.validation", "expected processors reported"),
                          ("replay.validation", "archive files readable")}
    failed = {key for key, case in cases.items() if case.find("failure") is not None}
    assert failed == set(cases) - {("replay.phase3", "errors scorer")}
    assert root.get("failures") == "4"


def test_summary_tables(report_dir, capsys):
    """The terminal summary shows the topic table and the verdict."""
    _, report = report_dir
    print_summary(report, width=160)
    text = capsys.readouterr().out
    assert "scores" in text
    assert "FAIL" in text
    assert "exit code 1" in text


def _chromium():
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if path is None:
        pytest.skip("chromium is not installed; apt-get install chromium to render report.html")
    return path


@pytest.mark.slow
def test_html_renders_in_chromium(report_dir, tmp_path_factory):
    """Headless Chromium renders report.html into a screenshot that is not blank."""
    from PIL import Image

    chromium = _chromium()
    folder, _ = report_dir
    work = tmp_path_factory.mktemp("chromium")
    screenshot = work / "report.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={work / 'profile'}",
         f"--screenshot={screenshot}", "--window-size=1200,900", (folder / "report.html").as_uri()],
        check=True, capture_output=True, timeout=90,
    )
    with Image.open(screenshot) as image:
        pixels = image.convert("RGB")
        colours = pixels.getcolors(maxcolors=1 << 24)
        total = pixels.width * pixels.height
    background = max(count for count, _ in colours)
    assert background < 0.97 * total, "the screenshot is (almost) one colour"
    assert len(colours) > 20
    fail_badge = sum(count for count, rgb in colours if all(abs(a - b) <= 4 for a, b in zip(rgb, (0xC6, 0x28, 0x28))))
    assert fail_badge > 100, "the red FAIL badge is not drawn"
