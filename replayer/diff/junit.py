"""JUnit XML for CI: one test case per phase and topic, per processor latency and per check group.

Each test case fails with the messages of its failed checks, so a CI system
shows which phase and topic (or processor) broke which limit.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from replayer.diff._text import xml_text
from replayer.diff.checks import FAIL

if TYPE_CHECKING:
    from replayer.diff.report import Report


def _case(suite: ET.Element, classname: str, name: str, checks: list) -> tuple[int, int]:
    case = ET.SubElement(suite, "testcase", classname=classname, name=name, time="0")
    failed = [check for check in checks if check.status == FAIL]
    warned = [check for check in checks if check.status == "warn"]
    if failed:
        failure = ET.SubElement(case, "failure", message="; ".join(check.message for check in failed),
                                type="threshold")
        failure.text = "\n".join(check.message for check in failed)
    if warned:
        out = ET.SubElement(case, "system-out")
        out.text = "\n".join("warning: " + check.message for check in warned)
    return 1, 1 if failed else 0


def build_junit(report: "Report") -> ET.ElementTree:
    """Return the JUnit XML tree of ``report``."""
    root = ET.Element("testsuites", name="replay")
    suite = ET.SubElement(root, "testsuite", name="replay")
    tests = failures = 0
    for topic in report.topics:
        name = topic.topic or "(none)"
        checks = [check for check in report.checks
                  if check.scope.get("phase") == topic.phase and check.scope.get("topic") == name]
        added, failed = _case(suite, f"replay.{topic.phase}", f"topic {name}", checks)
        tests, failures = tests + added, failures + failed

    for row in report.latency:
        name = row.processor or "(none)"
        checks = [check for check in report.checks if check.name == "latency"
                  and check.scope.get("phase") == row.phase and check.scope.get("processor") == name]
        added, failed = _case(suite, f"replay.{row.phase}", f"latency {name}", checks)
        tests, failures = tests + added, failures + failed

    for end in report.end_to_end:
        checks = [check for check in report.checks if check.name == "end_to_end"
                  and check.scope.get("date") == end.logical_date.isoformat()]
        added, failed = _case(suite, "replay.end_to_end", f"date {end.logical_date}", checks)
        tests, failures = tests + added, failures + failed

    for check in report.checks:
        if check.name == "errors":
            added, failed = _case(suite, f"replay.{check.scope['phase']}", f"errors {check.scope['processor']}",
                                  [check])
            tests, failures = tests + added, failures + failed

    checks = [check for check in report.checks if check.name == "silent_processors"]
    added, failed = _case(suite, "replay.validation", "expected processors reported", checks)
    tests, failures = tests + added, failures + failed

    checks = [check for check in report.checks if check.name == "damaged_files"]
    added, failed = _case(suite, "replay.validation", "archive files readable", checks)
    tests, failures = tests + added, failures + failed

    checks = [check for check in report.checks if check.name == "cascade_limit"]
    if checks:
        added, failed = _case(suite, "replay.validation", "cascades complete", checks)
        tests, failures = tests + added, failures + failed

    for element in (root, suite):
        element.set("tests", str(tests))
        element.set("failures", str(failures))
        element.set("errors", "0")
    _make_xml_safe(root)
    ET.indent(root)
    return ET.ElementTree(root)


def _make_xml_safe(root: ET.Element) -> None:
    """Rewrite characters XML 1.0 cannot contain (NUL, ESC, U+FFFE) as text; topics come from recorded data.

    ElementTree escapes ``<`` and ``&`` but writes these characters raw, and
    a CI system then rejects the whole file.
    """
    for element in root.iter():
        for name, value in element.attrib.items():
            element.set(name, xml_text(value))
        if element.text:
            element.text = xml_text(element.text)


def write_junit(report: "Report", path: str | os.PathLike) -> None:
    """Write the JUnit XML file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    build_junit(report).write(path, encoding="utf-8", xml_declaration=True)
