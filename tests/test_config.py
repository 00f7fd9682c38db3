"""replay.toml parsing: valid files, overrides, and rejections that name file, line, key and value."""

from __future__ import annotations

import datetime as dt
import textwrap

import pytest

from replayer.config import (
    Selection,
    apply_overrides,
    check_cascade_routing,
    check_output_location,
    load_config,
    load_diff_config,
    parse_where,
    processor_label,
    resolve_dates,
    select_phases,
)
from replayer.errors import ConfigError
from tests.topology import recording

VALID = """\
phases = ["phase2", "phase3", "phase4", "phase5", "phase6"]
[archive]
uri = "./archive"
time_zone = "America/New_York"
[replay]
mode = "cascade"
speed = 60
max_gap_s = 300
[sandbox]
env = { DATASET_PREFIX = "test_", GCS_PREFIX = "test/" }
clock = "recorded"
""" + (recording.BOX_SCORES_TABLE
       + 'filter = { attribute = "scraper", equals = "bdl" }\n'
       + recording.ORCHESTRATOR_TABLE
       + "timeout_s = 5\n")


def _write(tmp_path, text: str):
    path = tmp_path / "replay.toml"
    path.write_text(textwrap.dedent(text))
    return path


def _with_box_scores_adapter(adapter: str) -> str:
    return VALID.replace('adapter = "callable"\ntarget = "tests.topology.processors:box',
                         f'adapter = "{adapter}"\ntarget = "tests.topology.processors:box')


def _reject(tmp_path, text: str) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


def test_valid_file_parses(tmp_path):
    """A complete file becomes frozen dataclasses with the file's values."""
    config = load_config(_write(tmp_path, VALID))
    assert config.phases[0] == "phase2"
    assert config.replay.speed == 60.0
    assert config.replay.max_gap_s == 300.0
    assert dict(config.sandbox.env) == {"DATASET_PREFIX": "test_", "GCS_PREFIX": "test/"}
    assert config.processor("orchestrator").stateful is True
    assert config.processor("orchestrator").timeout_s == 5.0
    assert config.processor("box_scores").filter.attribute == "scraper"


def test_unknown_top_level_key(tmp_path):
    """An unknown key names the file, its line and the key."""
    message = _reject(tmp_path, VALID.replace("[archive]", "speedup = 2\n[archive]"))
    assert f"{tmp_path / 'replay.toml'}:2: key 'speedup' = 2 is not a known key" in message


def test_unknown_processor_key(tmp_path):
    """An unknown key inside [[processors]] names its index and line."""
    message = _reject(tmp_path, VALID.replace("stateful = true", "statefull = true"))
    assert ":25: processor 'orchestrator' (2nd [[processors]] table): key 'statefull' = True is not a known key" \
        in message


def test_unknown_phase(tmp_path):
    """A processor in a phase that is not listed is rejected with the phases allowed."""
    message = _reject(tmp_path, VALID.replace('phase = "phase3"', 'phase = "phase9"'))
    assert ("processor 'orchestrator' (2nd [[processors]] table): key 'phase' = 'phase9' is not a known phase; "
            "phases are phase2") in message
    assert ":21:" in message


def test_processor_without_name(tmp_path):
    """A [[processors]] table without a name is named by its position, counted from 1."""
    message = _reject(tmp_path, VALID.replace('name = "orchestrator"\n', ""))
    assert (":19: 2nd [[processors]] table: key 'name' = None is required and must be a non-empty string"
            in message)


def test_duplicate_processor_name(tmp_path):
    """A second processor with a taken name points at both tables."""
    message = _reject(tmp_path, VALID.replace('name = "orchestrator"', 'name = "box_scores"'))
    assert (":20: processor 'box_scores' (2nd [[processors]] table): key 'name' = 'box_scores' is also the name "
            "of the 1st [[processors]] table; names must be unique") in message


@pytest.mark.parametrize("index, expected", [
    (0, "1st"), (1, "2nd"), (2, "3rd"), (3, "4th"), (10, "11th"), (11, "12th"), (12, "13th"), (20, "21st"),
    (21, "22nd"), (110, "111th"),
])
def test_processor_label_ordinals(index, expected):
    """Positions in messages count from 1 with English ordinal suffixes."""
    assert processor_label(index, "p") == f"processor 'p' ({expected} [[processors]] table)"


def test_target_not_importable(tmp_path):
    """A target whose module does not import is rejected before the run."""
    message = _reject(tmp_path, VALID.replace("tests.topology.processors:orchestrator",
                                              "tests.topology.nope:orchestrator"))
    assert ("processor 'orchestrator' (2nd [[processors]] table): key 'target' = "
            "'tests.topology.nope:orchestrator' cannot be imported") in message
    assert "ModuleNotFoundError" in message


def test_target_attribute_missing(tmp_path):
    """A target naming a missing attribute is rejected naming module and attribute."""
    message = _reject(tmp_path, VALID.replace("processors:orchestrator", "processors:orchestrate"))
    assert "module 'tests.topology.processors' has no attribute 'orchestrate'" in message


def test_bad_adapter(tmp_path):
    """An adapter outside callable/wsgi/http is rejected with the choices."""
    message = _reject(tmp_path, _with_box_scores_adapter("grpc"))
    assert ("processor 'box_scores' (1st [[processors]] table): key 'adapter' = 'grpc' is not an adapter; "
            "use one of callable, wsgi, http") in message


def test_bad_speed(tmp_path):
    """A speed that is neither positive nor 'max' is rejected."""
    message = _reject(tmp_path, VALID.replace("speed = 60", "speed = -3"))
    assert ":7: key 'replay.speed' = -3 is invalid" in message


def test_http_needs_url(tmp_path):
    """The http adapter needs a URL."""
    message = _reject(tmp_path, _with_box_scores_adapter("http"))
    assert "processor 'box_scores' (1st [[processors]] table): key 'url' = None is required for the http adapter" \
        in message


ROUTED = VALID + """\
[[processors]]
name = "predict"
phase = "phase4"
adapter = "callable"
target = "tests.topology.processors:predict"
subscribes = ["phase3-trigger"]
[[processors]]
name = "late_report"
phase = "phase6"
adapter = "callable"
target = "tests.topology.processors:predict"
subscribes = ["phase2-late"]
"""
DAY = dt.date(2024, 3, 9)


def _selection(*phases: str) -> Selection:
    return Selection(dates=(DAY,), phases=phases)


def test_cascade_topic_without_subscriber(tmp_path):
    """A topic no processor subscribes to, published before a later selected phase, is rejected."""
    config = load_config(_write(tmp_path, ROUTED))
    with pytest.raises(ConfigError) as caught:
        check_cascade_routing(config, _selection("phase2", "phase3"),
                              {"phase2": {"phase2-complete", "phase2-errors"}})
    message = str(caught.value)
    assert f"{tmp_path / 'replay.toml'}:17: recorded topic 'phase2-errors' of phase 'phase2'" in message
    assert "has no subscriber in 'processors.subscribes'" in message
    assert "or to 'terminal_topics'" in message


def test_cascade_routed_topics_accepted(tmp_path):
    """Topics read by a selected processor pass."""
    config = load_config(_write(tmp_path, ROUTED))
    check_cascade_routing(config, _selection("phase2", "phase3", "phase4"),
                          {"phase2": {"phase2-complete"}, "phase3": {"phase3-trigger"}})


def test_cascade_last_phase_ends_run(tmp_path):
    """Topics of the last selected phase end the run, subscribed or not."""
    config = load_config(_write(tmp_path, ROUTED))
    check_cascade_routing(config, _selection("phase2", "phase3"),
                          {"phase2": {"phase2-complete"}, "phase3": {"phase3-trigger", "phase3-audit"}})


def test_cascade_terminal_topic_accepted(tmp_path):
    """A topic listed in terminal_topics needs no subscriber, even before a later phase."""
    config = load_config(_write(tmp_path, 'terminal_topics = ["phase2-errors"]\n' + ROUTED))
    assert config.terminal_topics == ("phase2-errors",)
    check_cascade_routing(config, _selection("phase2", "phase3"),
                          {"phase2": {"phase2-complete", "phase2-errors"}})


def test_cascade_consumer_after_selection(tmp_path):
    """A topic read only by a phase after the last selected one ends the run there."""
    config = load_config(_write(tmp_path, ROUTED))
    check_cascade_routing(config, _selection("phase2", "phase3"),
                          {"phase2": {"phase2-complete", "phase2-late"}})


def test_cascade_skipped_consumer_rejected(tmp_path):
    """A topic read by a skipped phase that a later selected phase depends on is rejected."""
    config = load_config(_write(tmp_path, ROUTED))
    with pytest.raises(ConfigError) as caught:
        check_cascade_routing(config, _selection("phase2", "phase4"), {"phase2": {"phase2-complete"}})
    message = str(caught.value)
    assert "recorded topic 'phase2-complete' of phase 'phase2' is read by phase 'phase3'" in message
    assert "select 'phase3' or end --phases before it" in message


def test_cascade_isolated_not_checked(tmp_path):
    """Isolated mode feeds every phase from the recording, so routing is not checked."""
    config = apply_overrides(load_config(_write(tmp_path, ROUTED)), mode="isolated")
    check_cascade_routing(config, _selection("phase2", "phase4"), {"phase2": {"phase2-errors"}})


def test_terminal_topic_with_subscriber_rejected(tmp_path):
    """A terminal topic that a processor subscribes to is a contradiction, rejected on load."""
    message = _reject(tmp_path, 'terminal_topics = ["phase2-complete"]\n' + VALID)
    assert ":1: key 'terminal_topics' = 'phase2-complete' is subscribed to by processor 'orchestrator'" in message


def test_terminal_topics_must_be_names(tmp_path):
    """terminal_topics must be a list of topic short names."""
    message = _reject(tmp_path, 'terminal_topics = "phase2-errors"\n' + VALID)
    assert ":1: key 'terminal_topics' = 'phase2-errors' must be a list of topic short names" in message
    message = _reject(tmp_path, 'terminal_topics = ["projects/p/topics/x"]\n' + VALID)
    assert "must be a topic short name, not a path" in message


def test_nba_example_full_cascade_accepted():
    """The example NBA replay.toml loads, and a phases 2-6 cascade over its recorded topics passes."""
    from pathlib import Path

    config = load_config(Path(__file__).resolve().parent.parent / "examples" / "nba" / "replay.toml")
    recorded = {
        "phase2": {"nba-phase2-raw-complete"},
        "phase3": {"nba-phase3-analytics-complete", "nba-phase3-trigger"},
        "phase4": {"nba-phase4-precompute-complete", "nba-phase4-trigger"},
        "phase5": {"nba-phase5-predictions-complete", "nba-phase6-export-trigger"},
        "phase6": {"nba-phase6-export-complete"},
    }
    check_cascade_routing(config, _selection(*config.phases), recorded)
    check_cascade_routing(config, _selection("phase2", "phase3", "phase4", "phase5"), recorded)


def test_overrides_replace_file_values(tmp_path):
    """Command-line values replace the file's; None keeps them."""
    config = apply_overrides(load_config(_write(tmp_path, VALID)), mode="isolated", speed="max",
                             max_gap_s=5, output="/tmp/out", archive="gs://b/a")
    assert config.replay.mode == "isolated"
    assert config.replay.speed is None
    assert config.replay.max_gap_s == 5.0
    assert config.replay.output == "/tmp/out"
    assert config.archive.uri == "gs://b/a"
    assert config.archive.time_zone == "America/New_York"


def test_phase_selection(tmp_path):
    """--phases ranges map numbers to phases; --start-phase and --skip-phase narrow them."""
    config = load_config(_write(tmp_path, VALID))
    assert select_phases(config, phases="3-5") == ("phase3", "phase4", "phase5")
    assert select_phases(config, phases="phase6,2") == ("phase2", "phase6")
    assert select_phases(config, start_phase="4", skip_phase=["phase5"]) == ("phase4", "phase6")
    with pytest.raises(ConfigError, match="'--phases' = '7' is not a configured phase"):
        select_phases(config, phases="2-7")


def test_where_parsing():
    """--where KEY=VALUE is an attribute match, /pointer=VALUE a payload match."""
    by_attribute = parse_where("game_id=g1")
    by_pointer = parse_where("/game/id=42")
    assert by_attribute.matches(attributes={"game_id": "g1"}, data=b"{}")
    assert not by_attribute.matches(attributes={"game_id": "g2"}, data=b"{}")
    assert by_pointer.matches(attributes={}, data=b'{"game": {"id": 42}}')
    assert not by_pointer.matches(attributes={}, data=b"not json")
    with pytest.raises(ConfigError, match="expected ATTRIBUTE=VALUE"):
        parse_where("game_id")


def test_date_range():
    """--start-date/--end-date expand to every day, inclusive."""
    days = resolve_dates(start_date="2024-03-30", end_date="2024-04-01")
    assert days == (dt.date(2024, 3, 30), dt.date(2024, 3, 31), dt.date(2024, 4, 1))
    with pytest.raises(ConfigError, match="exclude each other"):
        resolve_dates(date="2024-03-09", start_date="2024-03-01")


def test_strict_key_and_override(tmp_path):
    """[replay] strict is read from the file and --strict overrides it."""
    config = load_config(_write(tmp_path, VALID.replace("max_gap_s = 300", "max_gap_s = 300\nstrict = true")))
    assert config.replay.strict is True
    assert apply_overrides(config, strict=False).replay.strict is False
    message = _reject(tmp_path, VALID.replace("max_gap_s = 300", 'max_gap_s = 300\nstrict = "yes"'))
    assert ":9: key 'replay.strict' = 'yes' must be a bool" in message


@pytest.mark.parametrize("old, new, expected", [
    ('subscribes = ["raw-games"]', 'subscribes = ["raw-games"]\nurl = "http://127.0.0.1:1/"',
     ":18: processor 'box_scores' (1st [[processors]] table): key 'url' = 'http://127.0.0.1:1/' is read only "
     "with adapter = 'http', "
     "not adapter = 'callable'"),
    ('subscribes = ["raw-games"]', 'subscribes = ["raw-games"]\npath = "/push"',
     ":18: processor 'box_scores' (1st [[processors]] table): key 'path' = '/push' is read only with "
     "adapter = 'wsgi'"),
    ('adapter = "callable"\ntarget = "tests.topology.processors:box',
     'adapter = "http"\nurl = "http://127.0.0.1:1/"\ntarget = "tests.topology.processors:box',
     ":17: processor 'box_scores' (1st [[processors]] table): key 'target' = "
     "'tests.topology.processors:box_scores' is read only with "
     "adapter = 'callable' or adapter = 'wsgi', not adapter = 'http'"),
    ('stateful = true', 'stateful = true\nauth_header = "Bearer secret"',
     ":26: processor 'orchestrator' (2nd [[processors]] table): key 'auth_header' = '<redacted>' is read only "
     "with adapter = 'http'"),
])
def test_adapter_keys_rejected(tmp_path, old, new, expected):
    """A key that the processor's adapter never reads is rejected instead of silently ignored."""
    message = _reject(tmp_path, VALID.replace(old, new))
    assert expected in message
    assert "remove the key or change the adapter" in message
    assert "secret" not in message


def test_latency_table_of_unknown_phase(tmp_path):
    """[thresholds.latency.<phase>] for a phase not in 'phases' names file, line, key and the phases."""
    message = _reject(tmp_path, VALID + "[thresholds]\nmax_missing = 1\n[thresholds.latency.phase9]\nwarn_s = 1.0\n")
    assert ":29: invalid value {'warn_s': 1.0} for 'thresholds.latency.phase9': 'phase9' is not a configured phase; " \
           "phases are phase2, phase3, phase4, phase5, phase6" in message


def test_threshold_error_has_line(tmp_path):
    """An error from the [thresholds] parser gets the line of its key."""
    message = _reject(tmp_path, VALID + "[thresholds]\nmax_missing = 1\nmax_errors = -2\n")
    assert f"{tmp_path / 'replay.toml'}:29: invalid value -2 for 'thresholds.max_errors'" in message


@pytest.mark.parametrize("old, new, expected", [
    ("speed = 60", "speed = 1e-300", ":7: key 'replay.speed' = 1e-300 is invalid"),
    ("speed = 60", "speed = nan", ":7: key 'replay.speed' = nan is invalid"),
    ("speed = 60", "speed = inf", ":7: key 'replay.speed' = inf is invalid"),
    ("speed = 60", "speed = 2e6", ":7: key 'replay.speed' = 2000000.0 is invalid"),
    ("max_gap_s = 300", "max_gap_s = nan", ":8: key 'replay.max_gap_s' = nan must be a finite number"),
    ("max_gap_s = 300", "max_gap_s = inf", ":8: key 'replay.max_gap_s' = inf must be a finite number"),
])
def test_extreme_numbers_rejected(tmp_path, old, new, expected):
    """Non-finite and out-of-range speeds and gaps are rejected with the key and line."""
    assert expected in _reject(tmp_path, VALID.replace(old, new))


def test_speed_range_edges_accepted(tmp_path):
    """The smallest and largest speeds are accepted."""
    for speed in (0.001, 1_000_000):
        config = load_config(_write(tmp_path, VALID.replace("speed = 60", f"speed = {speed}")))
        assert config.replay.speed == float(speed)


@pytest.mark.parametrize("option, value", [("max_gap_s", float("nan")), ("max_gap_s", float("inf")),
                                           ("speed", "1e-300"), ("speed", "inf")])
def test_extreme_overrides_rejected(tmp_path, option, value):
    """Command-line overrides get the same range checks as the file."""
    config = load_config(_write(tmp_path, VALID))
    with pytest.raises(ConfigError, match="must be a"):
        apply_overrides(config, **{option: value})


def test_non_utf8_file_named(tmp_path):
    """A file that is not UTF-8 is a ConfigError naming the file, the byte and its offset."""
    path = tmp_path / "replay.toml"
    path.write_bytes(VALID.encode() + b"# \xff\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: not UTF-8 text (byte 0xff at offset {len(VALID) + 2})")


def test_config_folder_named(tmp_path):
    """A folder passed as the configuration is rejected as a folder."""
    with pytest.raises(ConfigError, match="is a folder, not a file"):
        load_config(tmp_path)


@pytest.mark.parametrize("text", ["/bad~pointer=x", "/a~2=x", "/a~=x"])
def test_where_invalid_pointer(text):
    """--where rejects a JSON pointer with an invalid '~' escape."""
    with pytest.raises(ConfigError, match="is not a valid JSON pointer"):
        parse_where(text)


def test_where_escaped_pointer_accepted():
    """'~0' and '~1' are valid escapes."""
    assert parse_where("/a~1b~0c=1").pointer == "/a~1b~0c"


def test_filter_invalid_pointer(tmp_path):
    """A processor filter with an invalid JSON pointer is rejected."""
    message = _reject(tmp_path, VALID.replace('filter = { attribute = "scraper", equals = "bdl" }',
                                              'filter = { pointer = "/x~y", equals = "bdl" }'))
    assert ":18: processor 'box_scores' (1st [[processors]] table): key 'filter' = " in message
    assert "is not a valid JSON pointer" in message


def test_diff_config_optional_processors(tmp_path):
    """load_diff_config accepts a file with only [diff] and [thresholds], and checks their phases when given."""
    path = _write(tmp_path, "[thresholds]\nmax_errors = 3\n[thresholds.latency.any]\nwarn_s = 1.0\n")
    assert load_diff_config(path).thresholds.max_errors == 3
    path = _write(tmp_path, 'phases = ["p1"]\n[thresholds.latency.any]\nwarn_s = 1.0\n')
    with pytest.raises(ConfigError, match=":2: invalid value .* 'any' is not a configured phase"):
        load_diff_config(path)


def test_output_location_checks(tmp_path):
    """Output folders inside the archive, containing it, or under a file are rejected."""
    archive = tmp_path / "archive"
    archive.mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is inside the archive"):
        check_output_location(str(archive / "date=2024-01-15"), {"the archive": str(archive)})
    with pytest.raises(ConfigError, match="is inside the archive"):
        check_output_location(f"file://{archive}", {"the archive": str(archive)})
    with pytest.raises(ConfigError, match="contains the archive"):
        check_output_location(str(tmp_path), {"the archive": str(archive)})
    with pytest.raises(ConfigError, match="lies under the file"):
        check_output_location(str(tmp_path / "file" / "out"), {"the archive": str(archive)})
    with pytest.raises(ConfigError, match="is inside the archive"):
        check_output_location("gs://bucket/arch/out", {"the archive": "gs://bucket/arch/"})
    check_output_location(str(tmp_path / "out"), {"the archive": str(archive)})
    check_output_location("gs://bucket/archive-out", {"the archive": "gs://bucket/archive"})


def _filter(tmp_path, text: str):
    path = _write(tmp_path, VALID.replace('filter = { attribute = "scraper", equals = "bdl" }', text))
    return load_config(path).processor("box_scores").filter


@pytest.mark.parametrize("equals, payload, expected", [
    ("1", b'{"n": 1}', True),
    ("1", b'{"n": 1.0}', True),
    ("1", b'{"n": true}', False),
    ("1", b'{"n": "1"}', False),
    ("false", b'{"n": false}', True),
    ("false", b'{"n": 0}', False),
    ("0", b'{"n": false}', False),
    ('"1"', b'{"n": "1"}', True),
    ('"1"', b'{"n": 1}', False),
    ("[1, 2]", b'{"n": [1.0, 2]}', True),
    ("[1, 2]", b'{"n": [true, 2]}', False),
    ("{ a = 1 }", b'{"n": {"a": 1.0}}', True),
    ("{ a = 1 }", b'{"n": {"a": 1, "b": 2}}', False),
])
def test_filter_pointer_compares_json_values_by_type(tmp_path, equals, payload, expected):
    """A pointer filter compares JSON values by type; numbers by value (1 == 1.0), never true == 1 or "1" == 1."""
    match = _filter(tmp_path, f'filter = {{ pointer = "/n", equals = {equals} }}')
    assert match.matches(attributes={}, data=payload) is expected


def test_filter_attribute_compares_text(tmp_path):
    """An attribute filter compares the attribute's text with the TOML value written as text."""
    match = _filter(tmp_path, 'filter = { attribute = "n", equals = 1 }')
    assert match.matches(attributes={"n": "1"}, data=b"{}")
    assert not match.matches(attributes={"n": "1.0"}, data=b"{}")
    assert not match.matches(attributes={}, data=b'{"n": 1}')


def test_filter_rejects_toml_date(tmp_path):
    """A TOML date as 'equals' is no JSON value: rejected, naming the key and the fix."""
    message = _reject(tmp_path, VALID.replace('filter = { attribute = "scraper", equals = "bdl" }',
                                              'filter = { pointer = "/day", equals = 2024-03-09 }'))
    assert "key 'filter' = " in message
    assert "is not a JSON value" in message
    assert "in quotes" in message


@pytest.mark.parametrize("text, payload, expected", [
    ("/id=7", b'{"id": 7}', True),
    ("/id=7", b'{"id": 7.0}', True),
    ("/id=7", b'{"id": "7"}', False),
    ('/id="7"', b'{"id": "7"}', True),
    ('/id="7"', b'{"id": 7}', False),
    ("/flag=true", b'{"flag": true}', True),
    ("/flag=true", b'{"flag": 1}', False),
    ("/flag=1", b'{"flag": true}', False),
    ("/x=null", b'{"x": null}', True),
    ("/g=g1", b'{"g": "g1"}', True),
    ("/g=0022300001", b'{"g": "0022300001"}', True),
    ("/g=NaN", b'{"g": "NaN"}', True),
])
def test_where_pointer_value_parsed_as_json(text, payload, expected):
    """--where /pointer=VALUE takes VALUE as JSON when it parses, else as text; compared like a filter."""
    assert parse_where(text).matches(attributes={}, data=payload) is expected


def test_where_attribute_value_is_text():
    """--where KEY=VALUE on an attribute compares text: 7 matches "7" only, never "7.0"."""
    clause = parse_where("n=7")
    assert clause.matches(attributes={"n": "7"}, data=b"{}")
    assert not clause.matches(attributes={"n": "7.0"}, data=b"{}")
    assert parse_where('n="7"').matches(attributes={"n": '"7"'}, data=b"{}")


@pytest.mark.parametrize("text", ["/id=7", '/id="7"', "/g=g1", "/x=null", "n=7", 'n="7"', "/f=1.5"])
def test_where_describe_round_trips(text):
    """describe() gives text that parse_where reads back to the same clause (run.json and messages use it)."""
    clause = parse_where(text)
    assert parse_where(clause.describe()) == clause
