"""The example NBA pipeline run "in production" on Google's Pub/Sub emulator, recorded into GCS.

:func:`record_on_emulators` creates the pipeline's real topics on the Pub/Sub
emulator. The phase 3 Flask app, wrapped in the recorder's push middleware,
serves a real push subscription on a loopback port. Every other processor
runs as a callable fed by a pull subscription, inside ``Recorder.handling``.
Payloads, rows and the archive live on the GCS emulator. Publish times are
wall-clock times milliseconds apart, because the in-process recording in
``examples.nba.production`` already covers realistic gaps between phases.

One phase 2 delivery is made to fail and be redelivered: the box score
scraper's message is published before its payload is uploaded, the
processor raises ``MissingInputDataError``, the harness nacks, the payload
appears, and Pub/Sub delivers the same message again. The archive thus contains
two INPUT records with one event id, as a real redelivery leaves it.

The module also contains the processor variants the acceptance tests replay.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import threading
import time
from collections import Counter
from typing import Any, Iterator, Mapping

from examples.nba import phase3, phase3_app, phase5, production
from examples.nba._messages import TOPIC_PHASE1_COMPLETE, TOPICS
from recorder._logging import get_logger

log = get_logger(__name__)

TIME_ZONE = production.TIME_ZONE
REDELIVERED_PROCESSOR = "bdl_boxscores"
PULL_BATCH = 100
RECORDING_TIMEOUT_S = 120.0


@dataclasses.dataclass(frozen=True)
class EmulatedRecording:
    """Result of one recording on the emulators.

    ``published`` counts the messages each topic received, read back from an
    audit subscription per topic (independent of the recorder).
    ``failures`` lists ``(processor, message_id, error)`` of failed deliveries
    (the planned first attempt of the redelivered message included).
    """

    archive_uri: str
    data_root: str
    game_date: str
    games: int
    player_lines: int
    published: Mapping[str, int]
    failures: tuple[tuple[str, str, str], ...]
    redelivered_message_id: str
    recorded: int
    dropped: int


def _topic_path(project: str, topic: str) -> str:
    return f"projects/{project}/topics/{topic}"


def _subscription_path(project: str, name: str) -> str:
    return f"projects/{project}/subscriptions/{name}"


def _create_topology(publisher, subscriber, project: str, push_endpoint: str) -> dict[str, str]:
    """Create topics, one subscription per processor and one audit subscription per topic.

    Returns the subscription path of every pull-fed processor by name.
    """
    from google.cloud.pubsub_v1.types import PushConfig

    for topic in TOPICS:
        publisher.create_topic(name=_topic_path(project, topic))
        subscriber.create_subscription(name=_subscription_path(project, f"audit-{topic}"),
                                       topic=_topic_path(project, topic))
    pulls = {}
    for processor in production.SUBSCRIBERS:
        path = _subscription_path(project, processor.subscription)
        request: dict[str, Any] = {"name": path, "topic": _topic_path(project, processor.topic),
                                   "ack_deadline_seconds": 30}
        if processor.filter_attribute:
            request["filter"] = f'attributes.{processor.filter_attribute} = "{processor.filter_equals}"'
        if processor.adapter == "wsgi":
            request["push_config"] = PushConfig(push_endpoint=push_endpoint)
        else:
            pulls[processor.name] = path
        subscriber.create_subscription(request=request)
    return pulls


@contextlib.contextmanager
def _serve(app) -> Iterator[str]:
    """Serve a WSGI app on 127.0.0.1 and a free port in a thread, and yield its URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="phase3-push-endpoint", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def _drain_audit(subscriber, project: str) -> dict[str, int]:
    counts: Counter = Counter()
    for topic in TOPICS:
        path = _subscription_path(project, f"audit-{topic}")
        while True:
            response = subscriber.pull(subscription=path, max_messages=PULL_BATCH, return_immediately=True)
            if not response.received_messages:
                break
            counts[topic] += len(response.received_messages)
            subscriber.acknowledge(subscription=path, ack_ids=[m.ack_id for m in response.received_messages])
    return dict(counts)


class _Harness:
    """Pulls each callable processor's subscription and runs it inside ``Recorder.handling``."""

    def __init__(self, *, publisher, subscriber, project: str, pulls: Mapping[str, str], recorder,
                 game_date: str) -> None:
        self.publisher = publisher
        self.subscriber = subscriber
        self.project = project
        self.pulls = pulls
        self.recorder = recorder
        self.game_date = game_date
        self.states: dict[str, dict] = {}
        self.failures: list[tuple[str, str, str]] = []
        self.handled: Counter = Counter()

    def publish(self, topic: str, data: bytes, attributes: dict, ordering_key: str | None, _content_type) -> str:
        future = self.publisher.publish(_topic_path(self.project, topic), data, **attributes)
        return future.result(timeout=30)

    def pull_once(self, name: str) -> int:
        """Handle the messages one pull of ``name``'s subscription returns; return their number."""
        path = self.pulls[name]
        response = self.subscriber.pull(subscription=path, max_messages=PULL_BATCH, return_immediately=True)
        for received in response.received_messages:
            self._handle(name, path, received)
        return len(response.received_messages)

    def _handle(self, name: str, path: str, received) -> None:
        from replayer.adapters import Message, ProcessorContext

        processor = next(p for p in production.SUBSCRIBERS if p.name == name)
        pubsub_message = received.message
        if processor.filter_attribute and (
                pubsub_message.attributes.get(processor.filter_attribute) != processor.filter_equals):
            # The emulator (cloud-pubsub-emulator 0.8.20) accepts subscription filters but does not apply them.
            # Pub/Sub acknowledges filtered-out messages without delivering them.
            self.subscriber.acknowledge(subscription=path, ack_ids=[received.ack_id])
            return
        publish_micros = int(pubsub_message.publish_time.timestamp() * 1_000_000)
        topic = processor.topic
        attributes = dict(pubsub_message.attributes)
        message = Message(message_id=pubsub_message.message_id, data=bytes(pubsub_message.data),
                          attributes=attributes, publish_time=publish_micros, topic=topic, subscription=path,
                          delivery_attempt=received.delivery_attempt or None)
        state = self.states.setdefault(name, {}) if processor.stateful else {}
        ctx = ProcessorContext(publisher=self.publish, state=state,
                               logical_date=dt.date.fromisoformat(self.game_date),
                               processor=name, phase=processor.phase)
        try:
            with self.recorder.handling(
                message_id=message.message_id, data=message.data, attributes=attributes,
                publish_time=publish_micros, phase=processor.phase, processor=name, topic=topic,
                subscription=path, delivery_attempt=message.delivery_attempt,
            ):
                processor.target(message, ctx)
        except Exception as error:  # a failed delivery is nacked and redelivered, as Pub/Sub does
            self.failures.append((name, message.message_id, f"{type(error).__name__}: {error}"))
            log.warning("nba.delivery_failed", phase=processor.phase, processor=name,
                        event_id=message.message_id, error=type(error).__name__)
            self.subscriber.modify_ack_deadline(subscription=path, ack_ids=[received.ack_id],
                                                ack_deadline_seconds=0)
            return
        self.subscriber.acknowledge(subscription=path, ack_ids=[received.ack_id])
        self.handled[name] += 1


def _publish_scraper_message(publisher, project: str, scraper_name: str, game_date: str, uri: str) -> str:
    body = {
        "event_type": "scraper_complete",
        "scraper_name": scraper_name,
        "execution_id": f"scraper_{scraper_name}_{game_date.replace('-', '')}",
        "correlation_id": f"morning_ops_{game_date.replace('-', '')}",
        "game_date": game_date,
        "gcs_path": uri,
        "status": "success",
    }
    future = publisher.publish(_topic_path(project, TOPIC_PHASE1_COMPLETE),
                               json.dumps(body, sort_keys=True).encode("utf-8"),
                               scraper_name=scraper_name, game_date=game_date, event_type="scraper_complete")
    return future.result(timeout=30)


def record_on_emulators(*, bucket: str, game_date: str, payloads: production.GamePayloads,
                        prefix: str = "nba") -> EmulatedRecording:
    """Run phases 1-6 for ``game_date`` on the Pub/Sub emulator, recorded into ``gs://bucket/prefix``.

    Needs ``PUBSUB_EMULATOR_HOST`` and ``STORAGE_EMULATOR_HOST`` set. Topics
    are created in the project the phase 3 service publishes to
    (``PUBSUB_PROJECT_ID``). Creating them again raises ``AlreadyExists``, so
    call this once per emulator and project. Sets ``NBA_DATA_ROOT`` only for
    the duration of the call.
    """
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import pubsub_v1

    from recorder._sdk import Recorder
    from recorder.flask import record_push

    project = phase3_app.project_id()
    archive_uri = f"gs://{bucket}/{prefix}/archive"
    data_root = f"gs://{bucket}/{prefix}/data"
    recorder_options = dict(date_attribute="game_date", date_pointer="/game_date", time_zone=TIME_ZONE,
                            install_signal_handler=False, flush_interval_secs=0.2)
    publisher = pubsub_v1.PublisherClient(credentials=AnonymousCredentials())
    subscriber = pubsub_v1.SubscriberClient(credentials=AnonymousCredentials())

    with production.production_environment(data_root), contextlib.ExitStack() as stack:
        sdk_recorder = Recorder(archive_uri, writer_id="emulated-sdk", source="sdk", **recorder_options)
        push_recorder = Recorder(archive_uri, writer_id="emulated-push", source="push", **recorder_options)
        app = record_push(phase3_app.create_app(), push_recorder, phase="phase3", processor="analytics",
                          topic="nba-phase3-trigger")
        endpoint = stack.enter_context(_serve(app))
        pulls = _create_topology(publisher, subscriber, project, endpoint)
        harness = _Harness(publisher=publisher, subscriber=subscriber, project=project, pulls=pulls,
                           recorder=sdk_recorder, game_date=game_date)
        try:
            redelivered = _run_day(harness, publisher, project, game_date, data_root, payloads)
        finally:
            sdk_stats = sdk_recorder.close(timeout_secs=60)
            push_stats = push_recorder.close(timeout_secs=60)
        published = _drain_audit(subscriber, project)

    games = len(payloads.box_scores.get("data", ()))
    return EmulatedRecording(
        archive_uri=archive_uri, data_root=data_root, game_date=game_date, games=games,
        player_lines=production.count_player_lines(payloads.box_scores), published=published,
        failures=tuple(harness.failures), redelivered_message_id=redelivered,
        recorded=sdk_stats.recorded + push_stats.recorded, dropped=sdk_stats.dropped + push_stats.dropped,
    )


def _run_day(harness: _Harness, publisher, project: str, game_date: str, data_root: str,
             payloads: production.GamePayloads) -> str:
    """Publish phase 1, redeliver one phase 2 message, and pump every subscription until phase 6 is done."""
    scoreboard_uri = production.write_scraper_payload(data_root, "nba-com/scoreboard-v2", game_date,
                                                       payloads.scoreboard)
    _publish_scraper_message(publisher, project, "nbac_scoreboard_v2", game_date, scoreboard_uri)
    _pump_until(harness, lambda: harness.handled["nbac_scoreboard"] == 1)

    # The box score message goes out before its payload is visible: the
    # first delivery fails, and the nack makes Pub/Sub deliver it again.
    box_scores_uri = production.scraper_payload_uri(data_root, "ball-dont-lie/box-scores", game_date, payloads.box_scores)
    message_id = _publish_scraper_message(publisher, project, "bdl_box_scores", game_date, box_scores_uri)
    _pump_until(harness, lambda: len(harness.failures) == 1, only=REDELIVERED_PROCESSOR)
    written = production.write_scraper_payload(data_root, "ball-dont-lie/box-scores", game_date,
                                                payloads.box_scores)
    if written != box_scores_uri:
        raise RuntimeError(f"payload written to {written!r}, but the message names {box_scores_uri!r}")

    games = len(payloads.box_scores.get("data", ()))
    _pump_until(harness, lambda: harness.handled["export"] == games)
    return message_id


def _pump_until(harness: _Harness, done, *, only: str | None = None) -> None:
    """Pull every subscription (or ``only`` one) in phase order until ``done()`` is true."""
    deadline = time.monotonic() + RECORDING_TIMEOUT_S
    names = [only] if only else list(harness.pulls)
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the emulated pipeline did not finish within {RECORDING_TIMEOUT_S} s; "
                f"handled so far: {dict(harness.handled)}, failures: {harness.failures}"
            )
        pulled = sum(harness.pull_once(name) for name in names)
        if not pulled:
            # Push deliveries to phase 3 run on the server's threads meanwhile.
            time.sleep(0.02)


# ---------------------------------------------------------------- processor variants replayed by the tests

# Phase 5 with a lower cap on projected minutes: only players projected above
# the new cap get other predictions.
CAPPED_MINUTES = 34.0
capped_minutes_model = dataclasses.replace(phase5.DEFAULT_MODEL, max_projected_minutes=CAPPED_MINUTES)
process_predictions_capped = phase5.make_prediction_processor(capped_minutes_model)


class GameFailure(RuntimeError):
    """The failure the phase 3 variant raises for one game."""


FAILING_GAME_ID = "0022300560"


def _summarize_failing_one_game(trigger: Mapping[str, Any]) -> phase3.GameSummaries:
    if trigger.get("game_id") == FAILING_GAME_ID:
        raise GameFailure(f"analytics variant fails game {FAILING_GAME_ID}")
    return phase3.summarize_game(trigger)


# Phase 3 service that raises for one game, so Flask returns HTTP 500 for that push.
failing_phase3_app = phase3_app.create_app(summarize=_summarize_failing_one_game)
