"""End to end: record the test topology, replay it with run_replay or `replay run`, and read the reports.

Each variant swaps one processor for a version defined below (changed field,
dropped output, duplicate publish, slow call, non-deterministic field) and
checks that report.json, diffs.jsonl, report.html, JUnit XML and the exit
code report exactly what changed, and nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

import replayer._cli_diff  # noqa: F401  (adds the diff command to the group)
import replayer._cli_run  # noqa: F401  (adds the run command to the group)
from replayer.cli import main
from replayer.run import run_replay
from tests.topology import recording

THIS_MODULE = __name__
SLOW_CALL_S = 1.0

# --- processor variants (targets of the replay config) ------------------------


def _dumps(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8")


def _box_score(game) -> dict:
    return {"game_id": game["game_id"], "processor": "box_scores",
            "total": sum(game["home_pts"]) + sum(game["away_pts"])}


def box_scores_off_by_one(message, ctx):
    """A regression: the total is one point too high. The execution id is new in each call and ignored by the config."""
    game = message.json()
    payload = _box_score(game)
    payload["total"] += 1
    payload["execution_id"] = uuid.uuid4().hex
    ctx.publish("phase2-complete", _dumps(payload), processor="box_scores", game_id=game["game_id"])


def box_scores_dropping_g2(message, ctx):
    """A regression: game g2 is handled but its box score is never published."""
    game = message.json()
    if game["game_id"] != "g2":
        ctx.publish("phase2-complete", _dumps(_box_score(game)), processor="box_scores", game_id=game["game_id"])


def box_scores_twice_g1(message, ctx):
    """A regression: game g1's box score is published twice (a retry without idempotence)."""
    game = message.json()
    copies = 2 if game["game_id"] == "g1" else 1
    for _ in range(copies):
        ctx.publish("phase2-complete", _dumps(_box_score(game)), processor="box_scores", game_id=game["game_id"])


def box_scores_slow_g2(message, ctx):
    """Same outputs as production, but game g2 takes SLOW_CALL_S seconds."""
    game = message.json()
    if game["game_id"] == "g2":
        time.sleep(SLOW_CALL_S)
    ctx.publish("phase2-complete", _dumps(_box_score(game)), processor="box_scores", game_id=game["game_id"])


def predict_with_run_id(message, ctx):
    """Same prediction as production plus a random run id, which differs in every replay."""
    trigger = message.json()
    ctx.publish("phase4-predictions", _dumps({"game_id": trigger["game_id"], "home_win": trigger["game_id"] != "g2",
                                              "seen_date": recording.DATE.isoformat(),
                                              "run_id": uuid.uuid4().hex}),
                game_id=trigger["game_id"])


# --- helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> str:
    """The production recording of the topology's day, written once for the module."""
    path = tmp_path_factory.mktemp("production") / "archive"
    recording.write_archive(str(path))
    return str(path)


def _config(folder: Path, archive: str, *, box_scores: str | None = None, predict: str | None = None,
            extra_toml: str = "", mode: str = "cascade") -> str:
    """Write the topology's replay.toml with processors swapped and tables appended."""
    path = recording.write_config(folder / "replay.toml", archive=archive, output=str(folder / "out"), mode=mode,
                                  box_scores_target=f"{THIS_MODULE}:{box_scores}" if box_scores else
                                  "tests.topology.processors:box_scores")
    text = Path(path).read_text()
    if predict is not None:
        target = 'target = "tests.topology.processors:predict"'
        assert target in text, "the topology config no longer names the predict processor this way"
        text = text.replace(target, f'target = "{THIS_MODULE}:{predict}"')
    Path(path).write_text(text + extra_toml)
    return path


def _report(folder: Path) -> dict:
    return json.loads((folder / "out" / "report.json").read_text())


def _diff_lines(folder: Path) -> list[dict]:
    text = (folder / "out" / "diffs.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def _topic(document: dict, topic: str) -> dict:
    [found] = [item for item in document["topics"] if item["topic"] == topic]
    return found


def _failed_checks(document: dict) -> set[tuple[str, str | None]]:
    return {(check["name"], check["scope"].get("topic") or check["scope"].get("processor"))
            for check in document["checks"] if check["status"] == "fail"}


def _run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(args)
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


# --- unchanged -----------------------------------------------------------------


@pytest.fixture(scope="module")
def unchanged(tmp_path_factory, archive):
    """One replay of the recording with the production processors."""
    folder = tmp_path_factory.mktemp("unchanged")
    result = run_replay(_config(folder, archive))
    return folder, result


def test_unchanged_all_identical(unchanged):
    """The production code reproduces every recorded output: all identical, exit code 0."""
    folder, result = unchanged
    document = _report(folder)
    totals = document["totals"]
    assert result.exit_code == 0
    assert document["passed"] is True
    assert (totals["identical"], totals["recorded_outputs"], totals["replayed_outputs"]) == (12, 12, 12)
    for category in ("changed", "missing", "extra", "duplicate_recorded", "duplicate_replayed",
                     "unmatchable_recorded", "unmatchable_replayed"):
        assert totals[category] == 0, category
    assert _diff_lines(folder) == []


def test_unchanged_run_section(unchanged):
    """report.json names what was replayed: mode, date, phases, runner, abandoned calls and unrouted outputs."""
    run = _report(unchanged[0])["run"]
    assert (run["mode"], run["dates"], run["phases"]) == ("cascade", ["2024-03-09"], ["phase2", "phase3", "phase4"])
    assert run["runner"] == "DirectRunner"
    assert run["abandoned_calls"] == 0
    # The last phase's three predictions have no subscriber in the topology.
    assert run["unrouted_outputs"] == 3
    assert run["read"]["damaged"] == []


def test_unchanged_topics_matched_by_causation(unchanged):
    """Every topic without configured keys is matched by causing input and ordinal."""
    document = _report(unchanged[0])
    strategies = {item["topic"]: item["strategies"] for item in document["topics"]}
    assert strategies == {"phase2-complete": ["causation"], "phase3-trigger": ["causation"],
                          "phase4-predictions": ["causation"]}


def test_unchanged_validation_counts(unchanged):
    """Validation counts recorded inputs, recorded outputs and replayed outputs per processor."""
    rows = {(row["phase"], row["processor"]): row for row in _report(unchanged[0])["validation"]["processors"]}
    assert set(rows) == {("phase2", "box_scores"), ("phase2", "player_stats"), ("phase3", "orchestrator"),
                         ("phase4", "predict")}
    expected = {("phase2", "box_scores"): (3, 3, 3), ("phase2", "player_stats"): (3, 3, 3),
                ("phase3", "orchestrator"): (6, 3, 3), ("phase4", "predict"): (3, 3, 3)}
    for key, (inputs, recorded_outputs, replayed_outputs) in expected.items():
        row = rows[key]
        assert (row["recorded_inputs"], row["recorded_outputs"], row["replayed_outputs"]) == (
            inputs, recorded_outputs, replayed_outputs), key
        assert row["silent"] is False
    assert _report(unchanged[0])["validation"]["silent_processors"] == []


def test_unchanged_latency_recorded_vs_replayed(unchanged):
    """Latency rows carry the recorded handling times (from the recording) next to the replayed ones."""
    document = _report(unchanged[0])
    rows = {(row["phase"], row["processor"]): row for row in document["latency"]["processors"]}
    box = rows[("phase2", "box_scores")]
    assert box["recorded_source"] == "handling_micros"
    assert (box["recorded"]["count"], box["recorded"]["p50_ms"], box["recorded"]["max_ms"]) == (3, 50.0, 50.0)
    assert box["recorded"]["total_ms"] == 150.0
    assert box["replayed"]["count"] == 3
    for name in ("p50_ms", "p95_ms", "max_ms", "total_ms"):
        assert box["replayed"][name] >= 0.0
    assert box["replayed"]["p50_ms"] <= box["replayed"]["p95_ms"] <= box["replayed"]["max_ms"]
    phases = [item["phase"] for item in document["latency"]["phases"]]
    assert phases == ["phase2", "phase3", "phase4"]
    assert document["latency"]["phases"][1]["recorded"]["count"] == 6


def test_unchanged_end_to_end_per_date(unchanged):
    """A cascade run reports the end-to-end time of the date, recorded and replayed."""
    [end] = _report(unchanged[0])["latency"]["end_to_end"]
    assert end["logical_date"] == recording.DATE.isoformat()
    # Production: first raw game at T0, last prediction 2 games later plus 170 ms.
    assert end["recorded_s"] == pytest.approx(2 * recording.GAME_SPACING_MICROS / 1e6 + 0.17)
    assert end["replayed_s"] is not None
    assert end["replayed_s"] >= 0.0


def test_unchanged_archive_diff_cli(unchanged, archive, capsys):
    """`replay diff` of the recording against the replay's own archive finds them identical."""
    folder, _ = unchanged
    code, out, err = _run_cli(["diff", archive, str(folder / "out" / "archive"), "--date", "2024-03-09",
                               "--json"], capsys)
    document = json.loads(out)
    assert code == 0, err
    assert (document["totals"]["identical"], document["totals"]["changed"]) == (12, 0)
    assert document["run"]["mode"] == "diff"


def test_unchanged_archive_diff_phase_filter(unchanged, archive, capsys):
    """--phase limits `replay diff` to the named phase, with the date given as a range."""
    folder, _ = unchanged
    code, out, err = _run_cli(["diff", archive, str(folder / "out" / "archive"), "--start-date", "2024-03-09",
                               "--end-date", "2024-03-09", "--phase", "phase4", "--json"], capsys)
    document = json.loads(out)
    assert code == 0, err
    assert [item["topic"] for item in document["topics"]] == ["phase4-predictions"]
    assert document["totals"]["identical"] == 3


def test_archive_diff_empty_range(unchanged, archive, capsys):
    """A date with no recorded data in either archive compares nothing, so it is an input error."""
    folder, _ = unchanged
    code, out, err = _run_cli(["diff", archive, str(folder / "out" / "archive"), "--date", "2024-03-10",
                               "--json"], capsys)
    assert code == 2, err
    assert out == ""
    assert "error: no partition matches --date 2024-03-10 in A or B" in err


# --- one processor changed -----------------------------------------------------


IGNORE_EXECUTION_ID = '\n[diff]\nignore = ["**/execution_id"]\n'


@pytest.fixture(scope="module")
def changed(tmp_path_factory, archive):
    folder = tmp_path_factory.mktemp("changed")
    result = run_replay(_config(folder, archive, box_scores="box_scores_off_by_one",
                                extra_toml=IGNORE_EXECUTION_ID),
                        junit_xml=str(folder / "junit.xml"))
    return folder, result


def test_changed_reports_exact_fields(changed):
    """Only /total of box_scores' three outputs is reported, not the ignored execution_id."""
    folder, result = changed
    lines = _diff_lines(folder)
    assert result.exit_code == 1
    assert {line["category"] for line in lines} == {"changed"}
    assert sorted(line["recorded_event_id"] for line in lines) == ["p2b-g1", "p2b-g2", "p2b-g3"]
    totals = {"g1": 97, "g2": 100, "g3": 105}
    for line in lines:
        [diff] = line["diffs"]
        game = line["recorded_event_id"][len("p2b-"):]
        assert (diff["pointer"], diff["part"], diff["kind"]) == ("/total", "data", "changed")
        assert (diff["recorded"], diff["replayed"]) == (str(totals[game]), str(totals[game] + 1))


def test_changed_other_topics_identical(changed):
    """The later phases do not depend on the total, so they stay identical."""
    document = _report(changed[0])
    assert _topic(document, "phase2-complete")["counts"]["identical"] == 3
    assert _topic(document, "phase2-complete")["counts"]["changed"] == 3
    for topic in ("phase3-trigger", "phase4-predictions"):
        counts = _topic(document, topic)["counts"]
        assert (counts["identical"], counts["changed"], counts["missing"], counts["extra"]) == (3, 0, 0, 0)


def test_changed_ratio_check_fails(changed):
    """The changed ratio of phase2-complete (3 of 6) exceeds the default limit of 0."""
    document = _report(changed[0])
    assert _failed_checks(document) == {("changed_ratio", "phase2-complete")}
    [check] = [item for item in document["checks"] if item["status"] == "fail"]
    assert check["value"] == 0.5


def test_changed_junit(changed):
    """JUnit XML fails exactly the phase2 topic case, with the check message."""
    root = ET.parse(changed[0] / "junit.xml").getroot()
    failed = [(case.get("classname"), case.get("name")) for case in root.iter("testcase")
              if case.find("failure") is not None]
    assert failed == [("replay.phase2", "topic phase2-complete")]
    names = {(case.get("classname"), case.get("name")) for case in root.iter("testcase")}
    assert ("replay.phase4", "topic phase4-predictions") in names
    assert ("replay.phase2", "latency box_scores") in names


def test_changed_html_shows_difference(changed):
    """report.html lists the changed pointer and both values in the differences section."""
    text = (changed[0] / "out" / "report.html").read_text()
    differences = text[text.index('id="differences"'):]
    assert "/total" in differences
    assert "97" in differences
    assert "98" in differences
    assert "execution_id" not in text


def test_replay_against_replay(changed, unchanged, capsys, tmp_path):
    """`replay diff` of yesterday's replay output against today's finds the three changed totals."""
    baseline = str(unchanged[0] / "out" / "archive")
    candidate = str(changed[0] / "out" / "archive")
    config = tmp_path / "replay.toml"
    config.write_text(IGNORE_EXECUTION_ID)
    code, out, err = _run_cli(["diff", baseline, candidate, "--config", str(config),
                               "--output", str(tmp_path / "report")], capsys)
    document = json.loads((tmp_path / "report" / "report.json").read_text())
    assert code == 1, err
    assert (document["totals"]["changed"], document["totals"]["identical"]) == (3, 9)
    assert "FAIL" in out


# --- one output dropped --------------------------------------------------------


def test_dropped_output_missing(tmp_path, archive):
    """A box score never published is missing, and so is what the cascade built on it."""
    result = run_replay(_config(tmp_path, archive, box_scores="box_scores_dropping_g2"))
    document = _report(tmp_path)
    lines = _diff_lines(tmp_path)
    assert result.exit_code == 1
    assert sorted((line["category"], line["topic"], line["recorded_event_id"]) for line in lines) == [
        ("missing", "phase2-complete", "p2b-g2"),
        ("missing", "phase3-trigger", "p3-g2"),
        ("missing", "phase4-predictions", "p4-g2"),
    ]
    assert (document["totals"]["identical"], document["totals"]["changed"], document["totals"]["extra"]) == (9, 0, 0)
    assert {name for name, _ in _failed_checks(document)} == {"missing"}


def test_dropped_output_isolated(tmp_path, archive):
    """In isolated mode the later phases get recorded inputs, so only the one output is missing."""
    result = run_replay(_config(tmp_path, archive, box_scores="box_scores_dropping_g2", mode="isolated"))
    lines = _diff_lines(tmp_path)
    assert result.exit_code == 1
    assert [(line["category"], line["recorded_event_id"]) for line in lines] == [("missing", "p2b-g2")]
    assert _report(tmp_path)["latency"]["end_to_end"] == []


# --- duplicate publish ---------------------------------------------------------


def test_duplicate_publish(tmp_path, archive, capsys):
    """A box score published twice is a replayed duplicate, not an extra, and fails the duplicates check."""
    code, out, err = _run_cli(["run", "--config", _config(tmp_path, archive, box_scores="box_scores_twice_g1")],
                              capsys)
    document = _report(tmp_path)
    [line] = _diff_lines(tmp_path)
    assert code == 1, err
    assert (line["category"], line["side"], line["topic"]) == ("duplicate", "replayed", "phase2-complete")
    counts = _topic(document, "phase2-complete")["counts"]
    assert (counts["identical"], counts["duplicate_replayed"], counts["extra"], counts["missing"]) == (6, 1, 0, 0)
    rows = {(row["phase"], row["processor"]): row for row in document["validation"]["processors"]}
    assert rows[("phase2", "box_scores")]["replayed_output_duplicates"] == 1
    assert rows[("phase2", "box_scores")]["replayed_outputs"] == 4
    assert _failed_checks(document) == {("duplicates", "phase2-complete")}
    # The terminal summary: the table row of the topic and the verdict line.
    [row] = [text for text in out.splitlines() if text.startswith("│ phase2") and "phase2-complete" in text]
    cells = [cell.strip() for cell in row.strip("│").split("│")]
    assert cells[:4] == ["phase2", "phase2-complete", "6", "7"]
    assert cells[8] == "0/1"
    assert "FAIL: 1 failed check, exit code 1" in out
    assert "duplicate outputs in the replay" in out
    [latency] = [text for text in out.splitlines() if text.startswith("│ phase2") and "box_scores" in text]
    cells = [cell.strip() for cell in latency.strip("│").split("│")]
    assert cells[2:7] == ["3", "50.0", "50.0", "50.0", "150.0"]


# --- slow processor --------------------------------------------------------------


SLOW_THRESHOLDS = """
[thresholds.latency.phase2]
warn_s = 0.25
critical_s = 0.5
statistic = "max"
"""


@pytest.fixture(scope="module")
def slow(tmp_path_factory, archive):
    """`replay run` through the CLI with box_scores taking SLOW_CALL_S on one game."""
    folder = tmp_path_factory.mktemp("slow")
    path = _config(folder, archive, box_scores="box_scores_slow_g2", extra_toml=SLOW_THRESHOLDS)
    with pytest.raises(SystemExit) as exited:
        main(["run", "--config", path, "--junit-xml", str(folder / "junit.xml")])
    return folder, exited.value.code


def test_slow_processor_critical(slow):
    """A call above critical_s makes box_scores critical and the exit code 1, while outputs stay identical."""
    folder, code = slow
    document = _report(folder)
    rows = {(row["phase"], row["processor"]): row for row in document["latency"]["processors"]}
    box = rows[("phase2", "box_scores")]
    assert code == 1
    assert box["status"] == "critical"
    assert box["replayed"]["max_ms"] >= SLOW_CALL_S * 1000
    assert box["recorded"]["max_ms"] == 50.0
    assert box["threshold"] == {"warn_s": 0.25, "critical_s": 0.5, "statistic": "max"}
    assert ("latency", "box_scores") in _failed_checks(document)
    assert document["totals"]["identical"] == 12


def test_slow_processor_junit(slow):
    """JUnit XML fails the latency case of box_scores with the threshold message."""
    root = ET.parse(slow[0] / "junit.xml").getroot()
    [case] = [case for case in root.iter("testcase") if case.get("name") == "latency box_scores"]
    failure = case.find("failure")
    assert failure is not None
    assert "critical 0.5 s" in failure.get("message")


def test_slow_processor_html_chart(slow):
    """report.html draws the per-phase latency chart with a recorded and a replayed bar per phase."""
    page = _Page()
    page.feed((slow[0] / "out" / "report.html").read_text())
    bars = [attrs for tag, attrs in page.elements if tag == "rect" and attrs.get("height") == "14"]
    assert len(bars) == 2 * 3
    assert page.section_ids == ["summary", "checks", "counts", "latency", "validation", "differences"]


# --- noise learning ------------------------------------------------------------


def test_noise_runs_ignore_unstable_field(tmp_path, archive):
    """--noise-runs finds the random run id, leaves it out of the comparison and lists it."""
    result = run_replay(_config(tmp_path, archive, predict="predict_with_run_id"), noise_runs=2)
    document = _report(tmp_path)
    fields = [(field["topic"], field["part"], field["pattern"], field["changes"], field["pairs_compared"])
              for field in document["noise"]["fields"]]
    assert fields == [("phase4-predictions", "data", "/run_id", 6, 6)]
    assert document["noise"]["runs"] == 3
    assert document["rules"]["topics"]["phase4-predictions"]["ignore"] == ["/run_id"]
    assert result.exit_code == 0
    assert document["totals"]["identical"] == 12
    assert (tmp_path / "out" / "noise" / "run-2" / "archive").is_dir()
    assert 'id="noise"' in (tmp_path / "out" / "report.html").read_text()


def test_without_noise_runs_field_is_extra(tmp_path, archive):
    """Without noise runs the same run id shows up as an extra field of every prediction."""
    result = run_replay(_config(tmp_path, archive, predict="predict_with_run_id"))
    lines = _diff_lines(tmp_path)
    assert result.exit_code == 1
    assert len(lines) == 3
    assert {(diff["pointer"], diff["kind"]) for line in lines for diff in line["diffs"]} == {("/run_id", "extra")}


# --- damaged archive file ------------------------------------------------------


def test_damaged_file_reported(tmp_path, archive):
    """A damaged archive file is skipped, named in the validation, and fails only the damaged_files check."""
    copy = tmp_path / "archive"
    shutil.copytree(archive, copy)
    broken = copy / "date=2024-03-09" / "phase=phase4" / "sdk-broken-20240309T230000000000Z-000009.avro"
    broken.write_bytes(b"Obj\x01 cut short")
    result = run_replay(_config(tmp_path, str(copy)))
    document = _report(tmp_path)
    damaged = document["validation"]["damaged_files"]
    assert [Path(item["uri"]).name for item in damaged] == [broken.name]
    assert damaged[0]["reason"]
    assert result.exit_code == 1
    assert {check["name"] for check in document["checks"] if check["status"] == "fail"} == {"damaged_files"}
    assert broken.name in (tmp_path / "out" / "report.html").read_text()


# --- report.html: structure and rendering ----------------------------------------


class _Page(HTMLParser):
    """Collects elements, section ids and every attribute that could load something."""

    def __init__(self):
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.section_ids: list[str] = []
        self.references: list[str] = []

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        self.elements.append((tag, values))
        if tag == "section":
            self.section_ids.append(values.get("id"))
        for name, value in values.items():
            if name in ("src", "href", "action", "xlink:href", "srcset", "poster", "data") or name.startswith("on"):
                self.references.append(f"{name}={value}")


@pytest.mark.parametrize("variant", ["unchanged", "changed", "slow"])
def test_html_self_contained(variant, request):
    """Every report.html has no script, no event handler, no link and no URL of any kind."""
    folder = request.getfixturevalue(variant)[0]
    text = (folder / "out" / "report.html").read_text()
    page = _Page()
    page.feed(text)
    tags = {tag for tag, _ in page.elements}
    for tag in ("script", "link", "iframe", "img", "object", "embed"):
        assert tag not in tags, tag
    assert page.references == []
    for marker in ("http:", "https:", "//", "url(", "@import"):
        assert marker not in text.replace("<!DOCTYPE html>", ""), marker


def _chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if path is None:
        pytest.skip("chromium is not installed; apt-get install chromium to render report.html")
    return path


def _screenshot(html_path: Path, work: Path) -> Path:
    """Render a local file in headless Chromium, with no network use and a new empty profile."""
    screenshot = work / "report.png"
    profile = work / "profile"
    profile.mkdir()
    subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--hide-scrollbars", f"--screenshot={screenshot}", "--window-size=1280,1400", html_path.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    return screenshot


def _has_colour(counts: dict, rgb: tuple[int, int, int], slack: int = 4) -> int:
    return sum(count for colour, count in counts.items()
               if all(abs(channel - wanted) <= slack for channel, wanted in zip(colour, rgb)))


@pytest.mark.slow
def test_html_renders_in_chromium(slow, tmp_path):
    """Chromium draws the failing report: text, the FAIL badge and both chart bar colours are on screen."""
    from PIL import Image

    screenshot = _screenshot(slow[0] / "out" / "report.html", tmp_path)
    with Image.open(screenshot) as image:
        pixels = image.convert("RGB")
        counts = {colour: count for count, colour in pixels.getcolors(maxcolors=1 << 24)}
        total = pixels.width * pixels.height
    background = max(counts.values())
    assert background < 0.97 * total, "the screenshot is (almost) one colour"
    assert len(counts) > 50
    assert _has_colour(counts, (0xC6, 0x28, 0x28)) > 100, "the red FAIL badge is not drawn"
    assert _has_colour(counts, (0x6B, 0x8F, 0xB3)) > 100, "no recorded bar in the latency chart"
    assert _has_colour(counts, (0xD9, 0x82, 0x2B)) > 100, "no replayed bar in the latency chart"
