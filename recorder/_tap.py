"""The Pub/Sub tap: archives every message of one or more subscriptions.

``Tap`` streaming-pulls each configured subscription with flow control,
buffers the messages it receives, and every ``flush_max_messages`` messages or
``flush_interval_secs`` writes them through ``ArchiveWriter`` and, only after
that flush returned, acknowledges them. A tap killed at any moment has
therefore acknowledged only archived messages; the others are redelivered to
the next tap, and the archive reader removes the duplicates this produces.

Two details of google-cloud-pubsub (read in version 2.44) shape how fast a
killed tap's messages come back and how fast ordered messages flow:

- Each lease extension is capped at ``lease_extension_secs`` (the client's
  ``max_duration_per_lease_extension``, which also sets the stream's ack
  deadline). Without the cap the stream deadline is 60 s, so every message a
  killed tap had received, including the many the client keeps on hold,
  stays invisible to the next tap for a minute or more.
- The client hands over only one message per ordering key until that message
  is acknowledged, whether or not the subscription enables ordering. A batch
  holding messages with ordering keys would therefore never fill, so it is
  written as soon as no message has arrived for ``ordered_idle_secs``.

While the archive is unreachable the tap keeps the messages (flow control
stops the pull once ``max_outstanding_messages`` are held) and retries with
backoff. ``stop()`` (the CLI calls it on SIGINT and SIGTERM) flushes and
acknowledges what is held, then stops pulling. Progress is logged as
``tap.progress`` every ``stats_interval_secs``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path
from typing import Any, Callable, Mapping

from recorder._date_fallback import DateFallbackLog, find_bad_date_source
from recorder._envelope import subscription_path
from recorder._logging import get_logger
from recorder._redaction import RedactionRules
from schemas import DateRule, Direction, RecordedEvent, datetime_to_micros
from schemas._event import PHASE_PATTERN

log = get_logger(__name__)


class TapConfigError(ValueError):
    """A tap subscription spec or TOML file has a bad value."""


class TapUnreachableError(RuntimeError):
    """Pub/Sub did not respond within ``connect_timeout_secs`` at start-up."""


def pubsub_endpoint(subscriber: Any) -> str:
    """Return the host:port a subscriber client talks to, for error messages."""
    emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
    if emulator:
        return f"{emulator} (PUBSUB_EMULATOR_HOST)"
    return str(getattr(subscriber, "target", None) or "pubsub.googleapis.com:443")


def _first_line(error: BaseException) -> str:
    # gRPC errors repeat the address list after ';', which the endpoint already names.
    text = str(error).strip().splitlines()
    first = text[0].split(";", 1)[0][:200] if text else ""
    return f"{type(error).__name__}: {first}"


@dataclasses.dataclass(frozen=True)
class TapSubscription:
    """One subscription the tap reads, and what its messages are in the archive."""

    name: str
    phase: str
    direction: Direction
    processor: str | None = None
    topic: str | None = None

    def __post_init__(self) -> None:
        if not self.name or len(self.name.rsplit("/", 1)[-1]) < 3:
            raise TapConfigError(f"subscription name {self.name!r} is invalid; use at least 3 characters")
        if not PHASE_PATTERN.fullmatch(self.phase or ""):
            raise TapConfigError(
                f"phase {self.phase!r} of subscription {self.name!r} is invalid; use lower-case "
                "letters, digits, '_' and '-'"
            )
        # The same rule as a processor name in replay.toml, so a recorded
        # processor can be named in the replay configuration.
        if self.processor is not None and (not isinstance(self.processor, str)
                                           or not PHASE_PATTERN.fullmatch(self.processor.lower())):
            raise TapConfigError(
                f"processor {self.processor!r} of subscription {self.name!r} is invalid; use letters, "
                "digits, '_' and '-', starting with a letter or digit"
            )
        try:
            value = self.direction.value if isinstance(self.direction, Direction) else str(self.direction)
            object.__setattr__(self, "direction", Direction(value.upper()))
        except ValueError as error:
            raise TapConfigError(
                f"direction {self.direction!r} of subscription {self.name!r} is invalid; use INPUT or OUTPUT"
            ) from error

    @classmethod
    def parse(cls, spec: str) -> "TapSubscription":
        """Parse ``SUBSCRIPTION:phase:direction[:processor]``."""
        parts = spec.split(":")
        if len(parts) not in (3, 4) or not all(parts):
            raise TapConfigError(
                f"subscription spec {spec!r} is invalid; expected SUBSCRIPTION:phase:direction[:processor], "
                "e.g. nba-phase3-trigger-tap:phase3:INPUT:analytics"
            )
        return cls(name=parts[0], phase=parts[1], direction=parts[2],
                   processor=parts[3] if len(parts) == 4 else None)


@dataclasses.dataclass(frozen=True)
class TapConfig:
    """Everything a tap needs: archive, subscriptions, date rule and batching."""

    archive_uri: str
    subscriptions: tuple[TapSubscription, ...]
    project: str | None = None
    date_rule: DateRule = DateRule()
    redaction: RedactionRules = RedactionRules()
    codec: str | None = None
    writer_id: str | None = None
    flush_max_messages: int = 500
    flush_interval_secs: float = 5.0
    max_outstanding_messages: int = 1000
    stats_interval_secs: float = 30.0
    # Upper bound of one ack deadline extension, 10 to 600 s: the time after
    # which a killed tap's unacknowledged messages are redelivered.
    lease_extension_secs: int = 10
    # A batch holding messages with ordering keys is written after this long
    # without a new message (see the module docstring).
    ordered_idle_secs: float = 0.05
    # How long a stopping tap keeps retrying a failed archive write before it
    # nacks the held messages.
    stop_retry_secs: float = 10.0
    # How long start-up waits for Pub/Sub to respond before the tap fails
    # with an error naming the endpoint.
    connect_timeout_secs: float = 30.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "subscriptions", tuple(self.subscriptions))
        if not self.archive_uri:
            raise TapConfigError("the tap needs an archive: pass --archive or set [archive] uri")
        if not self.subscriptions:
            raise TapConfigError("the tap needs at least one subscription (--subscription or [[subscriptions]])")
        if (not isinstance(self.connect_timeout_secs, (int, float)) or isinstance(self.connect_timeout_secs, bool)
                or not self.connect_timeout_secs > 0):
            raise TapConfigError(
                f"connect_timeout_secs must be a positive number of seconds, got {self.connect_timeout_secs!r}")
        for name in ("flush_max_messages", "max_outstanding_messages"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise TapConfigError(f"{name} must be a positive integer, got {value!r}")
        if (not isinstance(self.lease_extension_secs, int) or isinstance(self.lease_extension_secs, bool)
                or not 10 <= self.lease_extension_secs <= 600):
            raise TapConfigError(
                f"lease_extension_secs must be a whole number of seconds from 10 to 600, got {self.lease_extension_secs!r}")
        if self.codec:
            from recorder._writer import CodecUnavailableError, check_codec

            try:
                check_codec(self.codec)
            except CodecUnavailableError as error:
                raise TapConfigError(str(error)) from error
        if self.flush_max_messages > self.max_outstanding_messages:
            # Flow control would stop the pull before a batch is full; the
            # time limit would still flush, but only every interval.
            object.__setattr__(self, "flush_max_messages", self.max_outstanding_messages)

    def subscription_paths(self) -> dict[str, TapSubscription]:
        """Return each subscription's full path mapped to its entry."""
        paths = {}
        for subscription in self.subscriptions:
            if not subscription.name.startswith("projects/") and not self.project:
                raise TapConfigError(
                    f"subscription {subscription.name!r} is not a full path and no project is set; "
                    "pass --project or set PUBSUB_PROJECT_ID"
                )
            paths[subscription_path(self.project or "", subscription.name)] = subscription
        return paths


def load_tap_config(path: str | Path, **overrides: Any) -> TapConfig:
    """Read a tap TOML file (``[archive]`` and ``[[subscriptions]]``); ``overrides`` win when not None."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise TapConfigError(f"cannot read tap config {str(path)!r}: {error}") from error
    unknown = set(document) - {"archive", "subscriptions", "tap", "project", "redaction"}
    if unknown:
        raise TapConfigError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: archive, subscriptions, tap, project, redaction")
    archive = document.get("archive", {})
    allowed_archive = {"uri", "time_zone", "date_attribute", "date_pointer", "codec", "writer_id"}
    if set(archive) - allowed_archive:
        raise TapConfigError(f"{path}: unknown key(s) {sorted(set(archive) - allowed_archive)} in [archive]")
    subscriptions = []
    for index, table in enumerate(document.get("subscriptions", [])):
        allowed = {"name", "phase", "direction", "processor", "topic"}
        if set(table) - allowed:
            raise TapConfigError(f"{path}: unknown key(s) {sorted(set(table) - allowed)} in [[subscriptions]] #{index + 1}")
        try:
            subscriptions.append(TapSubscription(
                name=table["name"], phase=table["phase"], direction=table.get("direction", "INPUT"),
                processor=table.get("processor"), topic=table.get("topic")))
        except KeyError as error:
            raise TapConfigError(f"{path}: [[subscriptions]] #{index + 1} has no {error.args[0]!r}") from error
    tap = document.get("tap", {})
    allowed_tap = {"flush_max_messages", "flush_interval_secs", "max_outstanding_messages", "stats_interval_secs",
                   "lease_extension_secs", "ordered_idle_secs", "connect_timeout_secs"}
    if set(tap) - allowed_tap:
        raise TapConfigError(f"{path}: unknown key(s) {sorted(set(tap) - allowed_tap)} in [tap]; "
                             f"allowed: {', '.join(sorted(allowed_tap))}")
    redaction = document.get("redaction", {})
    # A misspelt salt would silently weaken the hashing of redacted values.
    allowed_redaction = {"pointers", "attributes", "mode", "salt"}
    if set(redaction) - allowed_redaction:
        raise TapConfigError(f"{path}: unknown key(s) {sorted(set(redaction) - allowed_redaction)} in "
                             f"[redaction]; allowed: {', '.join(sorted(allowed_redaction))}")
    for key, archive_key in (("time_zone", "time_zone"), ("date_attribute", "date_attribute"),
                             ("date_pointer", "date_pointer")):
        value = overrides.pop(key, None)
        if value is not None:
            archive = {**archive, archive_key: value}
    values: dict[str, Any] = {
        "archive_uri": archive.get("uri"),
        "subscriptions": tuple(subscriptions),
        "project": document.get("project"),
        "date_rule": DateRule(attribute=archive.get("date_attribute"),
                              json_pointer=archive.get("date_pointer"),
                              time_zone=archive.get("time_zone", "UTC")),
        "redaction": RedactionRules(pointers=tuple(redaction.get("pointers", ())),
                                    attributes=tuple(redaction.get("attributes", ())),
                                    mode=redaction.get("mode", "hash"),
                                    salt=redaction.get("salt", os.environ.get("REPLAY_REDACT_SALT", ""))),
        "codec": archive.get("codec"),
        "writer_id": archive.get("writer_id"),
    }
    for key in sorted(allowed_tap):
        if key in tap:
            values[key] = tap[key]
    values.update({key: value for key, value in overrides.items() if value is not None})
    return TapConfig(**values)


@dataclasses.dataclass(frozen=True)
class TapStats:
    """Counters of a tap run: ``backlog`` is messages held and not yet acknowledged."""

    received: int
    archived: int
    acked: int
    nacked: int
    files_written: int
    write_errors: int
    backlog: int
    elapsed_s: float
    # Messages filed under their publish date because the date attribute or
    # payload date held a bad value.
    date_fallbacks: int = 0


class Tap:
    """Streaming pull from the configured subscriptions into the archive."""

    def __init__(self, config: TapConfig, *, subscriber: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._paths = config.subscription_paths()
        self._subscriber = subscriber
        self._clock = clock
        self._lock = threading.Lock()
        self._held: list[tuple[Any, TapSubscription, str | None]] = []
        self._oldest_held_at: float | None = None
        self._last_received_at = 0.0
        self._held_ordered = 0  # held messages that have an ordering key
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._accepting = True
        self._counts = {"received": 0, "archived": 0, "acked": 0, "nacked": 0,
                        "files_written": 0, "write_errors": 0, "date_fallbacks": 0}
        self._date_fallbacks = DateFallbackLog(area="tap", interval_secs=config.stats_interval_secs,
                                               clock=clock)
        self._in_flush = 0
        self._started = clock()
        self._writer = None
        self._topics: dict[str, str | None] = {}

    # ------------------------------------------------------------------ public

    def stop(self) -> None:
        """Ask ``run`` to flush, acknowledge and return; safe from a signal handler."""
        self._stop.set()
        self._wake.set()

    @property
    def stats(self) -> TapStats:
        """Current counters."""
        with self._lock:
            counts = dict(self._counts)
            backlog = len(self._held) + self._in_flush
        return TapStats(backlog=backlog, elapsed_s=round(self._clock() - self._started, 3), **counts)

    def run(self) -> TapStats:
        """Pull until ``stop()``; return the final counters. Raises if a pull fails."""
        from google.cloud import pubsub_v1

        subscriber = self._subscriber or pubsub_v1.SubscriberClient()
        flow_control = pubsub_v1.types.FlowControl(
            max_messages=self.config.max_outstanding_messages,
            max_duration_per_lease_extension=int(self.config.lease_extension_secs))
        try:
            started = self._resolve_topics_until_stopped(subscriber)
        except BaseException:
            if self._subscriber is None:
                subscriber.close()
            raise
        if not started:
            if self._subscriber is None:
                subscriber.close()
            log.info("tap.stopped", archive=self.config.archive_uri, records=0, acked=0, nacked=0,
                     backlog=0, elapsed_s=self.stats.elapsed_s)
            return self.stats
        futures = []
        for path, subscription in self._paths.items():
            callback = functools.partial(self._on_message, subscription, self._topics.get(path))
            futures.append(subscriber.subscribe(path, callback=callback, flow_control=flow_control))
        log.info("tap.started", archive=self.config.archive_uri, subscriptions=list(self._paths),
                 flush_max_messages=self.config.flush_max_messages,
                 flush_interval_secs=self.config.flush_interval_secs)
        failure: BaseException | None = None
        next_stats = self._clock() + self.config.stats_interval_secs
        try:
            while not self._stop.is_set():
                self._wake.wait(self._wait_secs())
                self._wake.clear()
                if self._flush_due():
                    self._flush_and_ack(final=False)
                if self._clock() >= next_stats:
                    self._log_progress()
                    next_stats = self._clock() + self.config.stats_interval_secs
                failed = [future for future in futures if future.done()]
                if failed:
                    failure = failed[0].exception() or RuntimeError("streaming pull ended")
                    break
        finally:
            self._accepting = False
            self._flush_and_ack(final=True)
            for future in futures:
                future.cancel()
            for future in futures:
                try:
                    future.result(timeout=10)
                except BaseException:  # cancelled or already failed: reported below
                    pass
            if self._subscriber is None:
                subscriber.close()
        stats = self.stats
        log.info("tap.stopped", archive=self.config.archive_uri, records=stats.archived,
                 acked=stats.acked, nacked=stats.nacked, backlog=stats.backlog,
                 elapsed_s=stats.elapsed_s)
        if failure is not None:
            raise RuntimeError(f"streaming pull failed: {type(failure).__name__}: {failure}") from failure
        return stats

    # ----------------------------------------------------------------- private

    def _resolve_topics_until_stopped(self, subscriber: Any) -> bool:
        """Look up each subscription's topic, which also proves that Pub/Sub responds.

        Returns False when ``stop()`` came first. The lookups run on a helper
        thread because a gRPC call cannot be interrupted by a signal, and a
        stop during start-up must not wait for them.
        """
        outcome: list[BaseException | None] = []
        done = threading.Event()

        def resolve() -> None:
            try:
                self._resolve_topics(subscriber)
                outcome.append(None)
            except BaseException as error:
                outcome.append(error)
            finally:
                done.set()

        threading.Thread(target=resolve, name="replay-tap-connect", daemon=True).start()
        while not done.wait(0.05):
            if self._stop.is_set():
                log.info("tap.stopped_during_startup", archive=self.config.archive_uri)
                return False
        if outcome[0] is not None:
            raise outcome[0]
        return not self._stop.is_set()

    def _resolve_topics(self, subscriber: Any) -> None:
        from google.api_core import exceptions, retry

        timeout_secs = float(self.config.connect_timeout_secs)
        unreachable = (exceptions.ServiceUnavailable, exceptions.DeadlineExceeded)

        failures = [0]

        def on_error(error: BaseException) -> None:
            # One warning reports that start-up is retrying. The final error names the endpoint.
            failures[0] += 1
            emit = log.warning if failures[0] == 1 else log.debug
            emit("tap.connect_retry", endpoint=pubsub_endpoint(subscriber), attempt=failures[0],
                 timeout_s=timeout_secs, error=_first_line(error))

        policy = retry.Retry(predicate=retry.if_exception_type(*unreachable), initial=0.25,
                             maximum=2.0, multiplier=2.0, timeout=timeout_secs, on_error=on_error)
        for path, subscription in self._paths.items():
            if self._stop.is_set():
                return
            try:
                topic = subscriber.get_subscription(subscription=path, retry=policy,
                                                    timeout=timeout_secs).topic
            except (exceptions.RetryError, *unreachable) as error:
                cause = getattr(error, "cause", None) or error
                raise TapUnreachableError(
                    f"Pub/Sub at {pubsub_endpoint(subscriber)} did not respond within {timeout_secs:g} s "
                    f"(last error: {_first_line(cause)}); check that the service or emulator is running "
                    "and PUBSUB_EMULATOR_HOST, or raise --connect-timeout-secs") from error
            except Exception as error:
                # Reading the subscription may be forbidden where pulling is not.
                log.warning("tap.topic_unknown", subscription=path, error=f"{type(error).__name__}: {error}")
                topic = None
            if subscription.topic:
                self._topics[path] = subscription.topic
            else:
                self._topics[path] = topic.rsplit("/", 1)[-1] if topic else None

    def _on_message(self, subscription: TapSubscription, topic: str | None, message: Any) -> None:
        # Runs on the subscriber's callback threads: hold the message, no I/O.
        if not self._accepting:
            message.nack()
            return
        with self._lock:
            self._held.append((message, subscription, topic))
            self._counts["received"] += 1
            self._last_received_at = self._clock()
            if message.ordering_key:
                self._held_ordered += 1
            if self._oldest_held_at is None:
                self._oldest_held_at = self._last_received_at
            # The first ordered message shortens the flusher's wait.
            wake = (len(self._held) >= self.config.flush_max_messages
                    or (self._held_ordered == 1 and message.ordering_key))
        if wake:
            self._wake.set()

    def _wait_secs(self) -> float:
        with self._lock:
            ordered = self._held_ordered > 0
        if ordered:
            return min(self.config.ordered_idle_secs, self.config.flush_interval_secs)
        return min(0.2, self.config.flush_interval_secs)

    def _flush_due(self) -> bool:
        with self._lock:
            if not self._held:
                return False
            now = self._clock()
            if self._held_ordered and now - self._last_received_at >= self.config.ordered_idle_secs:
                return True
            return (len(self._held) >= self.config.flush_max_messages
                    or now - self._oldest_held_at >= self.config.flush_interval_secs)

    def _take_held(self) -> list[tuple[Any, TapSubscription, str | None]]:
        with self._lock:
            held, self._held = self._held, []
            self._oldest_held_at = None
            self._held_ordered = 0
            self._in_flush = len(held)
        return held

    def _flush_and_ack(self, *, final: bool) -> None:
        held = self._take_held()
        if not held:
            return
        events = []
        archived_messages = []
        for message, subscription, topic in held:
            try:
                events.append(self._to_event(message, subscription, topic))
                archived_messages.append(message)
            except Exception as error:
                # An event the archive cannot hold is left to the subscription's
                # dead-letter policy instead of being acknowledged unarchived.
                log.error("tap.invalid_message", subscription=subscription.name,
                          event_id=getattr(message, "message_id", None),
                          error=f"{type(error).__name__}: {error}")
                message.nack()
                self._bump("nacked")
        if events and not self._write_durably(events, final=final):
            for message in archived_messages:
                message.nack()
            self._bump("nacked", len(archived_messages))
            self._finish_flush()
            return
        for message in archived_messages:
            message.ack()
        self._bump("archived", len(events))
        self._bump("acked", len(archived_messages))
        self._finish_flush()

    def _finish_flush(self) -> None:
        with self._lock:
            self._in_flush = 0

    def _write_durably(self, events: list[RecordedEvent], *, final: bool) -> bool:
        """Write and flush ``events``; retry with backoff; False only when stopping gives up."""
        delay_secs = 0.1
        give_up_at = self._clock() + self.config.stop_retry_secs if final else None
        writer = self._archive_writer()
        try:
            for event in events:
                writer.write(event)
        except Exception:
            # A failed upload inside write() keeps its events in the writer
            # for the flush below.
            self._bump("write_errors")
        while True:
            try:
                writer.flush()
            except Exception as error:
                self._bump("write_errors")
                log.warning("tap.write_failed", archive=self.config.archive_uri, records=len(events),
                            error=f"{type(error).__name__}: {error}", retry_in_s=delay_secs)
                if give_up_at is None and self._stop.is_set():
                    # Stopping: keep trying for a bounded time, then hand the
                    # messages back to Pub/Sub for the next tap.
                    give_up_at = self._clock() + self.config.stop_retry_secs
                if give_up_at is not None and self._clock() >= give_up_at:
                    self._writer = None
                    log.error("tap.gave_up", archive=self.config.archive_uri, records=len(events))
                    return False
                time.sleep(delay_secs)
                delay_secs = min(delay_secs * 2, 5.0)
                continue
            return True

    def _archive_writer(self) -> Any:
        if self._writer is None:
            from recorder._writer import ArchiveWriter
            from recorder._sdk import _default_writer_id

            # Counted per stored file: write() also stores a file when a
            # partition's buffer fills, which flush() does not return.
            options: dict[str, Any] = {"writer_id": self.config.writer_id or _default_writer_id(),
                                       "source": "tap", "on_written": lambda _: self._bump("files_written")}
            if self.config.codec:
                options["codec"] = self.config.codec
            self._writer = ArchiveWriter(self.config.archive_uri, **options)
        return self._writer

    def _to_event(self, message: Any, subscription: TapSubscription, topic: str | None) -> RecordedEvent:
        data = bytes(message.data)
        attributes = dict(message.attributes)
        publish_time = datetime_to_micros(message.publish_time)
        rule = self.config.date_rule
        # The payload is parsed once for its date. The bad-source check parses
        # it again only when the message yields no date.
        logical_date = rule.message_date(attributes=attributes, data=data)
        if logical_date is None:
            logical_date = rule.resolve(publish_time=publish_time)
            fallback = find_bad_date_source(rule, attributes=attributes, data=data)
            if fallback is not None:
                self._bump("date_fallbacks")
                self._date_fallbacks.report(fallback, logical_date, archive=self.config.archive_uri,
                                            subscription=subscription.name, event_id=message.message_id)
        data, stored_attributes = self.config.redaction.apply(data, attributes)
        return RecordedEvent(
            event_id=message.message_id,
            logical_date=logical_date,
            phase=subscription.phase,
            direction=subscription.direction,
            processor=subscription.processor,
            topic=topic,
            subscription=subscription.name.rsplit("/", 1)[-1],
            publish_time=publish_time,
            ordering_key=message.ordering_key or None,
            attributes=stored_attributes,
            data=data,
            delivery_attempt=message.delivery_attempt,
            source="tap",
        )

    def _bump(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def _log_progress(self) -> None:
        stats = self.stats
        rate = stats.archived / stats.elapsed_s if stats.elapsed_s > 0 else 0.0
        log.info("tap.progress", archive=self.config.archive_uri, received=stats.received,
                 records=stats.archived, acked=stats.acked, backlog=stats.backlog,
                 records_per_s=round(rate, 1), write_errors=stats.write_errors,
                 elapsed_s=stats.elapsed_s)


def tap_config_from_options(
    *, archive_uri: str | None, subscription_specs: tuple[str, ...], config_path: str | None,
    project: str | None, environ: Mapping[str, str] | None = None, **options: Any,
) -> TapConfig:
    """Build a ``TapConfig`` from CLI options and an optional TOML file (options win)."""
    env = os.environ if environ is None else environ
    project = project or env.get("PUBSUB_PROJECT_ID") or env.get("GOOGLE_CLOUD_PROJECT")
    subscriptions = tuple(TapSubscription.parse(spec) for spec in subscription_specs)
    if config_path:
        overrides = dict(options)  # date options are merged into the file's [archive]
        overrides.update(archive_uri=archive_uri, project=project,
                         subscriptions=subscriptions or None)
        return load_tap_config(config_path, **overrides)
    date_rule = DateRule(attribute=options.pop("date_attribute", None),
                         json_pointer=options.pop("date_pointer", None),
                         time_zone=options.pop("time_zone", None) or "UTC")
    return TapConfig(archive_uri=archive_uri or env.get("REPLAY_ARCHIVE_URI") or "",
                     subscriptions=subscriptions, project=project, date_rule=date_rule,
                     redaction=RedactionRules.from_env(env),
                     **{key: value for key, value in options.items() if value is not None})
