"""Builds the recorded archive of one production day of the topology with ArchiveWriter.

Payloads are computed here independently of the processors, as production
recorded them, so a replay that reproduces them shows the processors agree.
"""

from __future__ import annotations

import datetime as dt
import json

from recorder._writer import ArchiveWriter
from schemas import Direction, RecordedEvent, datetime_to_micros

DATE = dt.date(2024, 3, 9)
T0 = datetime_to_micros(dt.datetime(2024, 3, 9, 23, 0, tzinfo=dt.timezone.utc))
GAMES = (
    {"game_id": "g1", "home_pts": [30, 25], "away_pts": [20, 22],
     "players": [{"name": "Ann", "pts": 31}, {"name": "Bo", "pts": 12}]},
    {"game_id": "g2", "home_pts": [18, 20], "away_pts": [33, 29],
     "players": [{"name": "Cy", "pts": 40}, {"name": "Di", "pts": 9}]},
    {"game_id": "g3", "home_pts": [27, 27], "away_pts": [26, 25],
     "players": [{"name": "Ed", "pts": 22}, {"name": "Flo", "pts": 22}]},
)
GAME_SPACING_MICROS = 2_000_000
# [[processors]] tables that several test configs share. They contain no braces, so they can
# also go into str.format templates.
BOX_SCORES_TABLE = """\
[[processors]]
name = "box_scores"
phase = "phase2"
adapter = "callable"
target = "tests.topology.processors:box_scores"
subscribes = ["raw-games"]
"""
ORCHESTRATOR_TABLE = """\
[[processors]]
name = "orchestrator"
phase = "phase3"
adapter = "callable"
target = "tests.topology.processors:orchestrator"
subscribes = ["phase2-complete"]
stateful = true
"""
TOPOLOGY_TOML = """
phases = ["phase2", "phase3", "phase4"]
[archive]
uri = "{archive}"
[replay]
mode = "{mode}"
speed = "{speed}"
output = "{output}"
[sandbox]
env = {{ DATASET_PREFIX = "test_" }}
clock = "recorded"
[[processors]]
name = "box_scores"
phase = "phase2"
adapter = "callable"
target = "{box_scores_target}"
subscribes = ["raw-games"]
timeout_s = {timeout_s}
[[processors]]
name = "player_stats"
phase = "phase2"
adapter = "wsgi"
target = "tests.topology.processors:player_stats_app"
subscribes = ["raw-games"]
""" + ORCHESTRATOR_TABLE + """\
[[processors]]
name = "predict"
phase = "phase4"
adapter = "callable"
target = "tests.topology.processors:predict"
subscribes = ["phase3-trigger"]
"""


def write_config(path, *, archive, output, mode="cascade", speed="max",
                 box_scores_target="tests.topology.processors:box_scores", timeout_s=30) -> str:
    """Write a replay.toml for the topology; return its path."""
    path.write_text(TOPOLOGY_TOML.format(archive=archive, output=output, mode=mode, speed=speed,
                                         box_scores_target=box_scores_target, timeout_s=timeout_s))
    return str(path)


def dumps(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8")


def _event(event_id, phase, direction, processor, topic, publish_time, data, **extra) -> RecordedEvent:
    return RecordedEvent(event_id=event_id, logical_date=DATE, phase=phase, direction=direction,
                         processor=processor, topic=topic, publish_time=publish_time, data=data,
                         source="sdk", content_type="application/json", **extra)


def production_events() -> list[RecordedEvent]:
    """Every INPUT and OUTPUT the recorder archived for the day, as production saw them."""
    events = []
    for index, game in enumerate(GAMES):
        start = T0 + index * GAME_SPACING_MICROS
        gid = game["game_id"]
        raw = dumps(game)
        for processor in ("box_scores", "player_stats"):
            events.append(_event(f"m-{gid}", "phase2", Direction.INPUT, processor, "raw-games", start, raw,
                                 subscription=f"raw-games-{processor}", outcome="ack", handling_micros=50_000))
        box = dumps({"game_id": gid, "processor": "box_scores",
                     "total": sum(game["home_pts"]) + sum(game["away_pts"])})
        top = max(game["players"], key=lambda p: (p["pts"], p["name"]))["name"]
        stats = dumps({"game_id": gid, "processor": "player_stats", "top_scorer": top})
        outputs2 = (("box_scores", f"p2b-{gid}", box, 100_000), ("player_stats", f"p2p-{gid}", stats, 150_000))
        for processor, event_id, data, delay in outputs2:
            events.append(_event(event_id, "phase2", Direction.OUTPUT, processor, "phase2-complete",
                                 start + delay, data, causation_id=f"m-{gid}",
                                 attributes={"processor": processor, "game_id": gid}))
            events.append(_event(event_id, "phase3", Direction.INPUT, "orchestrator", "phase2-complete",
                                 start + delay, data, attributes={"processor": processor, "game_id": gid},
                                 outcome="ack", handling_micros=1_000))
        trigger = dumps({"game_id": gid, "processors": ["box_scores", "player_stats"]})
        events.append(_event(f"p3-{gid}", "phase3", Direction.OUTPUT, "orchestrator", "phase3-trigger",
                             start + 160_000, trigger, causation_id=f"p2p-{gid}", attributes={"game_id": gid}))
        events.append(_event(f"p3-{gid}", "phase4", Direction.INPUT, "predict", "phase3-trigger",
                             start + 160_000, trigger, attributes={"game_id": gid}, outcome="ack",
                             handling_micros=2_000))
        prediction = dumps({"game_id": gid, "home_win": gid != "g2", "seen_date": DATE.isoformat()})
        events.append(_event(f"p4-{gid}", "phase4", Direction.OUTPUT, "predict", "phase4-predictions",
                             start + 170_000, prediction, causation_id=f"p3-{gid}", attributes={"game_id": gid}))
    return events


def write_archive(archive_uri: str) -> list[RecordedEvent]:
    """Write the day's recording into ``archive_uri``; return the events written."""
    events = production_events()
    with ArchiveWriter(archive_uri, writer_id="prod-1", source="sdk") as writer:
        for event in events:
            writer.write(event)
    return events


def output_signature(events) -> list[tuple]:
    """Comparable form of OUTPUT events: (phase, processor, topic, payload), sorted."""
    return sorted((e.phase, e.processor, e.topic, e.data) for e in events if e.direction is Direction.OUTPUT)


# One stateful processor over the redelivery case's archive (phase "score", topic "scores").
CASE10_TOML = """
phases = ["score"]
[archive]
uri = "{archive}"
[replay]
mode = "cascade"
speed = "max"
output = "{output}"
resend_redeliveries = {resend}
[[processors]]
name = "totals"
phase = "score"
adapter = "callable"
target = "tests.topology.processors:running_total"
subscribes = ["scores"]
stateful = true
"""
