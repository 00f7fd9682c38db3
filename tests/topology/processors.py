"""The topology's processors, written the way production code is.

``box_scores`` (callable) and ``player_stats`` (Flask app, publishing with the
real ``PublisherClient``) both handle ``raw-games``; ``orchestrator`` (stateful)
publishes ``phase3-trigger`` for a game once both have reported it; ``predict``
(callable) publishes ``phase4-predictions`` stamped with the time it sees.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading

from flask import Flask, request
from google.cloud import pubsub_v1

PROJECT = "replay-local"
EXPECTED_REPORTERS = ("box_scores", "player_stats")
release_hang = threading.Event()


def dumps(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8")


def box_scores(message, ctx):
    game = message.json()
    total = sum(game["home_pts"]) + sum(game["away_pts"])
    ctx.publish("phase2-complete", dumps({"game_id": game["game_id"], "processor": "box_scores",
                                          "total": total}),
                processor="box_scores", game_id=game["game_id"])


def box_scores_raising(message, ctx):
    """Like box_scores, but fails on game g2 (a processor bug met by one message)."""
    if message.json()["game_id"] == "g2":
        raise ValueError("cannot handle overtime periods")
    return box_scores(message, ctx)


def box_scores_hanging(message, ctx):
    """Like box_scores, but blocks on game g2 until the test releases it (at most 30 s)."""
    if message.json()["game_id"] == "g2":
        release_hang.wait(30)
        ctx.publish("phase2-complete", b"late")
        return None
    return box_scores(message, ctx)


def box_scores_missing_data(message, ctx):
    """Reads a file the input refers to, which no longer exists for game g3."""
    if message.json()["game_id"] == "g3":
        raise FileNotFoundError("gs://bucket/raw/g3.json")
    return box_scores(message, ctx)


player_stats_app = Flask("player_stats")
_publisher = None


@player_stats_app.post("/")
def player_stats_push():
    global _publisher
    envelope = request.get_json()
    game = json.loads(base64.b64decode(envelope["message"]["data"]))
    if _publisher is None:
        _publisher = pubsub_v1.PublisherClient()
    best = max(game["players"], key=lambda p: (p["pts"], p["name"]))
    future = _publisher.publish(
        _publisher.topic_path(PROJECT, "phase2-complete"),
        dumps({"game_id": game["game_id"], "processor": "player_stats", "top_scorer": best["name"]}),
        processor="player_stats", game_id=game["game_id"],
    )
    future.result(timeout=5)
    return "", 204


def orchestrator(message, ctx):
    report = message.json()
    reported = ctx.state.setdefault("reported", {}).setdefault(report["game_id"], set())
    reported.add(report["processor"])
    if reported == set(EXPECTED_REPORTERS):
        ctx.publish("phase3-trigger", dumps({"game_id": report["game_id"],
                                             "processors": sorted(reported)}),
                    game_id=report["game_id"])


def predict(message, ctx):
    trigger = message.json()
    now = dt.datetime.now(dt.timezone.utc)
    ctx.publish("phase4-predictions", dumps({"game_id": trigger["game_id"],
                                             "home_win": trigger["game_id"] != "g2",
                                             "seen_date": now.date().isoformat()}),
                game_id=trigger["game_id"])


def envelope_naive(body):
    """Push handler that indexes the envelope directly (fails on optional keys)."""
    message = body["message"]
    payload = json.loads(base64.b64decode(message["data"]))
    _ = message["attributes"]["kind"]
    return 200 if payload else 204


def running_total(message, ctx):
    """Running total of points per game (not idempotent), as in the redelivery case."""
    event = message.json()
    totals = ctx.state.setdefault("totals", {})
    totals[event["game"]] = totals.get(event["game"], 0) + event["pts"]
    ctx.publish("score-totals", {"game": event["game"], "total": totals[event["game"]]})
