"""Phase 3 analytics as a Flask service behind a Pub/Sub push subscription.

``POST /`` takes the push envelope of one ``nba-phase3-trigger`` message,
computes the game's summaries (:func:`examples.nba.phase3.summarize_game`) and
publishes each ``nba-phase3-analytics-complete`` message with the real
``google.cloud.pubsub_v1.PublisherClient``: the recorder SDK records those
publishes in production and the replay sandbox intercepts them. It returns
204 (ack), 400 for a body that is not a push envelope (Pub/Sub would
redeliver it until it dead-letters), and 500 when processing fails.

Run it with ``flask --app examples.nba.phase3_app:app run`` or any WSGI server.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Callable, Mapping

from flask import Flask, request

from recorder._logging import get_logger
from examples.nba._messages import TOPIC_PHASE3_COMPLETE, message_attributes
from examples.nba.phase3 import GameSummaries, summarize_game
from recorder._envelope import EnvelopeError, parse_push_envelope

log = get_logger(__name__)

PROJECT_ENV_NAMES = ("GOOGLE_CLOUD_PROJECT", "PUBSUB_PROJECT_ID")
DEFAULT_PROJECT = "replay-local"

_publishers: dict[str | None, Any] = {}
_publisher_lock = threading.Lock()


def project_id() -> str:
    """Return the Pub/Sub project from ``GOOGLE_CLOUD_PROJECT`` or ``PUBSUB_PROJECT_ID``."""
    for name in PROJECT_ENV_NAMES:
        if os.environ.get(name):
            return os.environ[name]
    return DEFAULT_PROJECT


def publisher():
    """Return the process's PublisherClient, created on first use (clients are thread-safe).

    One client per ``PUBSUB_EMULATOR_HOST`` value, because the client library
    reads that variable only when a client is created.
    """
    emulator_host = os.environ.get("PUBSUB_EMULATOR_HOST")
    with _publisher_lock:
        if emulator_host not in _publishers:
            from google.cloud import pubsub_v1

            _publishers[emulator_host] = pubsub_v1.PublisherClient()
        return _publishers[emulator_host]


def create_app(
    *,
    summarize: Callable[[Mapping[str, Any]], GameSummaries] = summarize_game,
    publisher_factory: Callable[[], Any] | None = None,
) -> Flask:
    """Build the phase 3 service.

    ``summarize`` computes one game (replaceable for variants); ``publisher_factory``
    returns the PublisherClient to publish with (default: :func:`publisher`).
    """
    get_publisher = publisher_factory or publisher
    app = Flask(__name__)

    @app.post("/")
    def handle_push():
        try:
            pushed = parse_push_envelope(request.get_json(force=True, silent=True))
            trigger = json.loads(pushed.data)
        except (EnvelopeError, ValueError) as error:
            log.warning("nba.push_rejected", phase="phase3", error=str(error))
            return {"error": str(error)}, 400
        summaries = summarize(trigger)
        client = get_publisher()
        for message in summaries.messages:
            topic = client.topic_path(project_id(), TOPIC_PHASE3_COMPLETE)
            future = client.publish(
                topic, json.dumps(message, sort_keys=True).encode("utf-8"), **message_attributes(message)
            )
            future.result(timeout=60)
        log.info("nba.game_summarized", phase="phase3", date=trigger.get("game_date"),
                 game=trigger.get("game_id"), records=len(summaries.player_rows))
        return "", 204

    return app


app = create_app()
