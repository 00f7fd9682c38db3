"""Run the example NBA pipeline "in production" for one game date, with the recorder attached.

:func:`record_production_day` plays a game day through phases 1-6 on an
in-process Pub/Sub bus under a simulated clock (``time_machine``), with the
recorder SDK around every callable processor (``Recorder.handling``) and the
push middleware around the phase 3 Flask service (``recorder.flask.record_push``).
It writes the scraper payloads and production rows under a data root and the
recorded events into an archive. No cloud service is contacted.

The bus replaces ``PublisherClient.publish`` before the recorder wraps it, so
the recorder records every publish as an OUTPUT. The bus then routes the
message to its subscribers, filters included, as Pub/Sub push would. Simulated time gives the recording realistic publish-time gaps:
phase 1 scrapers finish in the early morning (US Eastern) after the game
date, and each processor's first publish happens its processing time after
the message arrived (seconds to minutes per phase). A processor starts at its
input's publish time, so a replay with the recorded clock shows it the same
"now".

Command line::

    python -m examples.nba.production --archive DIR --date 2024-01-15 [--realdata DIR | --synthetic-games N]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import hashlib
import heapq
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from zoneinfo import ZoneInfo

from examples.nba import generator, orchestrators, phase2, phase4, phase5, phase6, storage
from recorder._logging import get_logger
from examples.nba._messages import TOPIC_PHASE1_COMPLETE
from recorder._envelope import build_push_envelope
from schemas import datetime_to_micros, micros_to_datetime, micros_to_rfc3339

log = get_logger(__name__)

PROJECT = "replay-local"
TIME_ZONE = "America/New_York"
BDL_FILE_PATTERN = "bdl_box_scores_{date}.json"
NBAC_FILE_PATTERN = "nbac_scoreboard_v2_{date}.json"


@dataclasses.dataclass(frozen=True)
class Subscriber:
    """One processor behind a push subscription; mirrors a ``[[processors]]`` entry of replay.toml."""

    name: str
    phase: str
    topic: str
    target: Callable[..., Any] | None
    adapter: str = "callable"
    filter_attribute: str | None = None
    filter_equals: str | None = None
    stateful: bool = False
    work_secs: float = 1.0

    @property
    def subscription(self) -> str:
        return f"{self.topic}-{self.name.replace('_', '-')}"


def _subscribers() -> tuple[Subscriber, ...]:
    return (
        Subscriber("bdl_boxscores", "phase2", TOPIC_PHASE1_COMPLETE, phase2.process_bdl_boxscores,
                   filter_attribute="scraper_name", filter_equals="bdl_box_scores", work_secs=94.0),
        Subscriber("nbac_scoreboard", "phase2", TOPIC_PHASE1_COMPLETE, phase2.process_nbac_scoreboard,
                   filter_attribute="scraper_name", filter_equals="nbac_scoreboard_v2", work_secs=12.0),
        Subscriber("orchestrator_phase2_to_3", "phase3", "nba-phase2-raw-complete",
                   orchestrators.orchestrate_phase2_to_3, stateful=True, work_secs=1.0),
        Subscriber("analytics", "phase3", "nba-phase3-trigger", None, adapter="wsgi", work_secs=27.0),
        Subscriber("orchestrator_phase3_to_4", "phase4", "nba-phase3-analytics-complete",
                   orchestrators.orchestrate_phase3_to_4, stateful=True, work_secs=1.0),
        Subscriber("player_features", "phase4", "nba-phase4-trigger", phase4.process_player_features, work_secs=16.0),
        Subscriber("predictions", "phase5", "nba-phase4-precompute-complete", phase5.process_predictions,
                   work_secs=41.0),
        Subscriber("export", "phase6", "nba-phase6-export-trigger", phase6.process_export, work_secs=6.0),
    )


SUBSCRIBERS = _subscribers()


@dataclasses.dataclass(frozen=True)
class ProductionRun:
    """Summary of one production-like recording.

    ``published`` counts messages per topic (phase 1 included), and
    ``deliveries`` counts processor calls. ``failures`` lists
    ``(processor, message_id, error)`` for calls that raised or nacked.
    ``recorded`` is the number of events the recorders wrote.
    ``first_publish_micros`` and ``last_publish_micros`` bound the simulated
    timeline.
    """

    archive_uri: str
    data_root: str
    game_date: str
    games: int
    player_lines: int
    published: dict[str, int]
    deliveries: int
    failures: tuple[tuple[str, str, str], ...]
    recorded: int
    dropped: int
    first_publish_micros: int
    last_publish_micros: int


@dataclasses.dataclass(order=True)
class _Delivery:
    deliver_at_micros: int
    sequence: int
    subscriber: Subscriber = dataclasses.field(compare=False)
    message_id: str = dataclasses.field(compare=False)
    topic: str = dataclasses.field(compare=False)
    data: bytes = dataclasses.field(compare=False)
    attributes: dict = dataclasses.field(compare=False)
    publish_time_micros: int = dataclasses.field(compare=False)
    ordering_key: str | None = dataclasses.field(compare=False)
    delivery_attempt: int = dataclasses.field(compare=False, default=1)


class InProcessBus:
    """Pub/Sub for one process: routes every ``PublisherClient.publish`` to subscribers, by topic.

    Install it (:meth:`installed`) before any recorder is created, so the
    recorder's publish capture wraps it and still records each publish.
    """

    def __init__(self, subscribers: Sequence[Subscriber], *, traveller, message_id_seed: str,
                 redeliver: Sequence[str] = ()) -> None:
        self.subscribers = tuple(subscribers)
        self.traveller = traveller
        self.redeliver = frozenset(redeliver)
        self.queue: list[_Delivery] = []
        self.published: dict[str, int] = {}
        self._sequence = itertools.count()
        start = int(hashlib.sha256(message_id_seed.encode()).hexdigest()[:12], 16) % 9 * 10**15
        self._message_ids = itertools.count(10**16 + start)
        self.now_micros = 0
        self.work_pending: float | None = None
        self.publish_times: list[int] = []

    # -- clock
    def move_to(self, micros: int) -> None:
        self.traveller.move_to(micros_to_datetime(micros))
        self.now_micros = micros

    def start_work(self, work_secs: float) -> None:
        """Note that the handler now running publishes ``work_secs`` after it started."""
        self.work_pending = work_secs

    def before_publish(self) -> None:
        # The first publish of a handling happens after the simulated processing time.
        if self.work_pending is not None:
            self.move_to(self.now_micros + round(self.work_pending * 1_000_000))
            self.work_pending = None

    # -- publishing
    def publish(self, topic_path: str, data: bytes, ordering_key: str | None, attributes: dict[str, str]) -> str:
        topic = topic_path.rsplit("/", 1)[-1]
        message_id = str(next(self._message_ids))
        publish_time = self.now_micros
        self.published[topic] = self.published.get(topic, 0) + 1
        self.publish_times.append(publish_time)
        for subscriber in self.subscribers:
            if subscriber.topic != topic:
                continue
            if subscriber.filter_attribute and attributes.get(subscriber.filter_attribute) != subscriber.filter_equals:
                continue
            attempts = (1, 2) if subscriber.name in self.redeliver else (1,)
            for attempt in attempts:
                # A redelivery arrives after the ack deadline of the first attempt ran out.
                delay = 0 if attempt == 1 else 30_000_000
                heapq.heappush(self.queue, _Delivery(
                    publish_time + delay, next(self._sequence), subscriber, message_id, topic, bytes(data),
                    dict(attributes), publish_time, ordering_key, attempt,
                ))
        return message_id

    @contextlib.contextmanager
    def installed(self) -> Iterator["InProcessBus"]:
        """Replace ``PublisherClient.publish`` with this bus; restore it on exit."""
        from google.cloud.pubsub_v1 import PublisherClient
        from google.cloud.pubsub_v1.publisher import futures

        from recorder._publish_capture import publish_patch_references

        if publish_patch_references():
            raise RuntimeError(
                "a Recorder is already open in this process; close it before recording the "
                "example pipeline, so the in-process bus sits beneath the recorder's publish capture"
            )
        bus = self
        original = PublisherClient.__dict__.get("publish")

        def publish(client, topic, data, ordering_key="", retry=None, timeout=None, **attrs):  # noqa: ARG001
            future = futures.Future()
            attributes = {key: value.decode() if isinstance(value, bytes) else str(value) for key, value in attrs.items()}
            future.set_result(bus.publish(str(topic), bytes(data), ordering_key or None, attributes))
            return future

        PublisherClient.publish = publish
        try:
            yield self
        finally:
            if original is None:
                # The method lives on a base class; drop the class attribute set here.
                del PublisherClient.publish
            else:
                PublisherClient.publish = original


def _simulated_work_client(bus: InProcessBus):
    """Return a PublisherClient whose publishes happen after the handler's simulated work."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.pubsub_v1 import PublisherClient

    class SimulatedWorkPublisher(PublisherClient):
        def publish(self, topic, data, *args, **kwargs):
            bus.before_publish()
            return super().publish(topic, data, *args, **kwargs)

    # Anonymous credentials suffice because the bus handles every publish, so no request is ever sent.
    return SimulatedWorkPublisher(credentials=AnonymousCredentials())


@dataclasses.dataclass(frozen=True)
class GamePayloads:
    """The two scraper payloads of a game date."""

    box_scores: dict
    scoreboard: dict


def load_realdata(realdata_dir: str | Path, game_date: str) -> GamePayloads:
    """Read the BallDontLie and NBA.com payloads of ``game_date`` from a folder."""
    folder = Path(realdata_dir)
    payloads = []
    for pattern in (BDL_FILE_PATTERN, NBAC_FILE_PATTERN):
        path = folder / pattern.format(date=game_date)
        try:
            payloads.append(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError as error:
            raise FileNotFoundError(
                f"real data file {str(path)!r} not found; pass --realdata with a folder containing "
                f"{pattern.format(date=game_date)!r}, or use --synthetic-games N"
            ) from error
    return GamePayloads(box_scores=payloads[0], scoreboard=payloads[1])


def synthetic_payloads(game_date: str, *, n_games: int, seed: int = 0) -> GamePayloads:
    """Generate the payloads of a synthetic game day (see :mod:`examples.nba.generator`)."""
    day = generator.generate_game_day(game_date, n_games=n_games, seed=seed)
    return GamePayloads(box_scores=day.box_scores, scoreboard=day.scoreboard)


def _scraper_schedule(game_date: str) -> list[tuple[str, str, int]]:
    """Return ``(scraper_name, folder, publish micros)``: early next morning, US Eastern."""
    next_day = dt.date.fromisoformat(game_date) + dt.timedelta(days=1)
    eastern = ZoneInfo(TIME_ZONE)
    scoreboard_at = dt.datetime.combine(next_day, dt.time(5, 2, 14), tzinfo=eastern)
    box_scores_at = dt.datetime.combine(next_day, dt.time(5, 7, 41), tzinfo=eastern)
    return [
        ("nbac_scoreboard_v2", "nba-com/scoreboard-v2", datetime_to_micros(scoreboard_at)),
        ("bdl_box_scores", "ball-dont-lie/box-scores", datetime_to_micros(box_scores_at)),
    ]


def scraper_payload_uri(root: str, folder: str, game_date: str, payload: dict) -> str:
    """Return where a scraper payload is stored under ``root``, named by its content digest."""
    from recorder._storage import join_uri

    return join_uri(root, "scraped", folder, game_date, f"{storage.content_digest(payload)[:16]}.json")


def write_scraper_payload(root: str, folder: str, game_date: str, payload: dict) -> str:
    """Store a scraper payload as canonical JSON at :func:`scraper_payload_uri`; return that URI."""
    from recorder._storage import ObjectExistsError, open_storage

    uri = scraper_payload_uri(root, folder, game_date, payload)
    with contextlib.suppress(ObjectExistsError):
        open_storage(root).write_new(uri, storage.canonical_json(payload))
    return uri


def count_player_lines(box_scores: dict) -> int:
    """Return the number of player lines in a BallDontLie box scores payload."""
    return sum(len(game[side]["players"]) for game in box_scores.get("data", ())
               for side in ("home_team", "visitor_team"))


@contextlib.contextmanager
def production_environment(data_root: str) -> Iterator[None]:
    """Set ``NBA_DATA_ROOT`` and clear the replay prefixes while production runs; restore them after."""
    names = (storage.DATA_ROOT_ENV, storage.DATASET_PREFIX_ENV, storage.GCS_PREFIX_ENV)
    saved = {name: os.environ.get(name) for name in names}
    os.environ[storage.DATA_ROOT_ENV] = data_root
    os.environ.pop(storage.DATASET_PREFIX_ENV, None)
    os.environ.pop(storage.GCS_PREFIX_ENV, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def record_production_day(
    *,
    archive_uri: str,
    game_date: str,
    data_root: str,
    payloads: GamePayloads,
    redeliver: Sequence[str] = (),
    writer_id: str = "production",
    run_label: str | None = None,
) -> ProductionRun:
    """Run phases 1-6 for ``game_date`` with the recorder attached; return what happened.

    ``redeliver`` names processors whose every input Pub/Sub delivers twice
    (the second attempt 30 s later, as after a missed ack deadline).
    ``run_label`` seeds the message ids (default: a fresh random label), so
    two recordings of the same day never share event ids.
    """
    import time_machine

    from recorder._sdk import Recorder
    from recorder.flask import record_push
    from replayer.adapters import Message, ProcessorContext, classify_return

    from examples.nba import phase3_app

    schedule = _scraper_schedule(game_date)
    label = run_label or os.urandom(8).hex()
    traveller = time_machine.travel(micros_to_datetime(schedule[0][2] - 60_000_000), tick=False)
    failures: list[tuple[str, str, str]] = []
    deliveries = 0
    states: dict[str, dict] = {}

    with production_environment(data_root), contextlib.ExitStack() as stack:
        coordinates = stack.enter_context(traveller)
        bus = InProcessBus(SUBSCRIBERS, traveller=coordinates, message_id_seed=f"{label}/{game_date}",
                           redeliver=redeliver)
        stack.enter_context(bus.installed())
        recorder_options = dict(
            date_attribute="game_date", date_pointer="/game_date", time_zone=TIME_ZONE,
            install_signal_handler=False, flush_interval_secs=0.2,
        )
        sdk_recorder = Recorder(archive_uri, writer_id=f"{writer_id}-sdk", source="sdk", **recorder_options)
        push_recorder = Recorder(archive_uri, writer_id=f"{writer_id}-push", source="push", **recorder_options)
        client = _simulated_work_client(bus)
        flask_app = record_push(
            phase3_app.create_app(publisher_factory=lambda: client), push_recorder,
            phase="phase3", processor="analytics", topic="nba-phase3-trigger",
        )
        http = flask_app.test_client()

        def publish_json(topic: str, data: bytes, attributes: dict, ordering_key: str | None, _content_type) -> str:
            future = client.publish(client.topic_path(PROJECT, topic), data, ordering_key=ordering_key or "",
                                    **attributes)
            return future.result()

        try:
            for scraper_name, folder, publish_micros in schedule:
                payload = payloads.box_scores if scraper_name == "bdl_box_scores" else payloads.scoreboard
                uri = write_scraper_payload(data_root, folder, game_date, payload)
                bus.move_to(publish_micros)
                phase1 = {
                    "event_type": "scraper_complete",
                    "scraper_name": scraper_name,
                    "execution_id": f"scraper_{hashlib.sha256(f'{scraper_name}/{game_date}'.encode()).hexdigest()[:12]}",
                    "correlation_id": f"morning_ops_{game_date.replace('-', '')}",
                    "game_date": game_date,
                    "gcs_path": uri,
                    "status": "success",
                    "timestamp": micros_to_rfc3339(publish_micros).replace(".000000Z", "Z"),
                }
                bus.publish(f"projects/{PROJECT}/topics/{TOPIC_PHASE1_COMPLETE}",
                            json.dumps(phase1, sort_keys=True).encode(), None,
                            {"scraper_name": scraper_name, "game_date": game_date, "event_type": "scraper_complete"})

            while bus.queue:
                delivery = heapq.heappop(bus.queue)
                bus.move_to(delivery.deliver_at_micros)
                subscriber = delivery.subscriber
                subscription = f"projects/{PROJECT}/subscriptions/{subscriber.subscription}"
                deliveries += 1
                bus.start_work(subscriber.work_secs)
                if subscriber.adapter == "wsgi":
                    envelope = build_push_envelope(
                        message_id=delivery.message_id, data=delivery.data, attributes=delivery.attributes,
                        publish_time=delivery.publish_time_micros, subscription=subscription,
                        ordering_key=delivery.ordering_key,
                        delivery_attempt=delivery.delivery_attempt if delivery.delivery_attempt > 1 else None,
                    )
                    response = http.post("/", json=envelope)
                    if response.status_code >= 300:
                        failures.append((subscriber.name, delivery.message_id, f"HTTP {response.status_code}"))
                    continue
                message = Message(
                    message_id=delivery.message_id, data=delivery.data, attributes=delivery.attributes,
                    publish_time=delivery.publish_time_micros, ordering_key=delivery.ordering_key,
                    topic=delivery.topic, subscription=subscription,
                    delivery_attempt=delivery.delivery_attempt,
                )
                state = states.setdefault(subscriber.name, {}) if subscriber.stateful else {}
                ctx = ProcessorContext(publisher=publish_json, state=state,
                                       logical_date=dt.date.fromisoformat(game_date),
                                       processor=subscriber.name, phase=subscriber.phase)
                try:
                    with sdk_recorder.handling(
                        message_id=delivery.message_id, data=delivery.data, attributes=delivery.attributes,
                        publish_time=delivery.publish_time_micros, phase=subscriber.phase,
                        processor=subscriber.name, topic=delivery.topic, subscription=subscription,
                        ordering_key=delivery.ordering_key, delivery_attempt=delivery.delivery_attempt,
                    ) as handling:
                        outcome = classify_return(subscriber.target(message, ctx))
                        if outcome.status is not None:
                            handling.set_status(outcome.status)
                        elif not outcome.ack:
                            handling.nack()
                    if not outcome.ack:
                        failures.append((subscriber.name, delivery.message_id, "nack"))
                except Exception as error:  # production goes on after a failed message
                    failures.append((subscriber.name, delivery.message_id, f"{type(error).__name__}: {error}"))
                    log.warning("nba.processor_failed", phase=subscriber.phase, processor=subscriber.name,
                                error=f"{type(error).__name__}: {error}")
        finally:
            sdk_stats = sdk_recorder.close(timeout_secs=60)
            push_stats = push_recorder.close(timeout_secs=60)

    times = bus.publish_times or [0]
    run = ProductionRun(
        archive_uri=archive_uri,
        data_root=data_root,
        game_date=game_date,
        games=len(payloads.box_scores.get("data", ())),
        player_lines=count_player_lines(payloads.box_scores),
        published=dict(bus.published),
        deliveries=deliveries,
        failures=tuple(failures),
        recorded=sdk_stats.recorded + push_stats.recorded,
        dropped=sdk_stats.dropped + push_stats.dropped,
        first_publish_micros=min(times),
        last_publish_micros=max(times),
    )
    log.info("nba.production_recorded", archive=archive_uri, date=game_date, records=run.recorded,
             dropped=run.dropped, phase="phase1-6")
    return run


def main(argv: list[str] | None = None) -> int:
    """Command line: record one game day of the example pipeline into an archive."""
    parser = argparse.ArgumentParser(prog="python -m examples.nba.production", description=__doc__.split("\n")[0])
    parser.add_argument("--archive", required=True, help="archive folder or gs://bucket/prefix to record into")
    parser.add_argument("--date", required=True, help="game date, YYYY-MM-DD")
    parser.add_argument("--data-root", default=None,
                        help=f"where payloads and rows go (default: ${storage.DATA_ROOT_ENV} or ./nba-data)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--realdata", help="folder with bdl_box_scores_<date>.json and nbac_scoreboard_v2_<date>.json")
    source.add_argument("--synthetic-games", type=int, help="generate a synthetic game day with this many games")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic game day")
    parser.add_argument("--redeliver", action="append", default=[],
                        help="processor whose inputs Pub/Sub delivers twice (repeatable)")
    args = parser.parse_args(argv)
    try:
        dt.date.fromisoformat(args.date)
    except ValueError:
        parser.error(f"--date {args.date!r} is not a date; use YYYY-MM-DD")
    if args.realdata:
        payloads = load_realdata(args.realdata, args.date)
    else:
        payloads = synthetic_payloads(args.date, n_games=args.synthetic_games, seed=args.seed)
    run = record_production_day(
        archive_uri=args.archive, game_date=args.date,
        data_root=args.data_root or storage.data_root(), payloads=payloads, redeliver=args.redeliver,
    )
    print(json.dumps(dataclasses.asdict(run), indent=2))
    return 1 if run.failures or run.dropped else 0


if __name__ == "__main__":
    sys.exit(main())
