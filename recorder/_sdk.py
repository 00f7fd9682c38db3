"""The in-process recorder: ``Recorder`` records what a processor receives and publishes.

``Recorder.handling(...)`` wraps the handling of one message. On exit it
records the INPUT with its outcome (``ack``, ``nack`` or
``error:<ExceptionType>``) and handling time. Every
``PublisherClient.publish`` made inside it is recorded as an OUTPUT whose
``causation_id`` is the input's message id (see ``recorder._publish_capture``).
``Recorder.handles(...)`` does the same for a streaming-pull callback.

The hot path only appends a tuple to a bounded in-memory buffer and never
waits: when the buffer is full the event is dropped and counted. A background
flusher thread turns buffered tuples into events (date rule, redaction,
validation), writes them through ``ArchiveWriter`` every
``flush_interval_secs``, retries with exponential backoff while the archive
is unreachable, and after ``retry_budget_secs`` drops the batch, counts it
and logs ``recorder.archive_unreachable`` at most once per
``error_log_interval_secs``. Nothing in recording raises into the caller.

Buffered events are flushed by ``close()``, at interpreter exit (``atexit``)
and on SIGTERM: the SIGTERM handler is installed only from the main thread
and chains to the handler that was there before (or re-sends the signal with
the default disposition), so the application's own handling still runs.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import datetime as dt
import functools
import os
import re
import signal
import socket
import threading
import time
import weakref
from typing import Any, Callable, Iterator, Mapping

from recorder._date_fallback import DateFallbackLog, find_bad_date_source
from recorder._logging import get_logger
from recorder._publish_capture import (
    acquire_publish_patch,
    current_handling,
    release_publish_patch,
    split_publish_arguments,
)
from recorder._redaction import RedactionRules
from schemas import (
    DateRule,
    Direction,
    RecordedEvent,
    datetime_to_micros,
    new_event_id,
    now_micros,
)
from schemas._event import PHASE_PATTERN

log = get_logger(__name__)

DEFAULT_MAX_BUFFER_EVENTS = 10_000
DEFAULT_FLUSH_INTERVAL_SECS = 2.0
DEFAULT_RETRY_BUDGET_SECS = 5.0
DEFAULT_ERROR_LOG_INTERVAL_SECS = 30.0
DEFAULT_CLOSE_TIMEOUT_SECS = 8.0  # Cloud Run allows 10 s between SIGTERM and SIGKILL.

# Index of each field in a buffered tuple (kept as a tuple for a cheap hot path).
(_DIRECTION, _EVENT_ID, _DATA, _ATTRIBUTES, _PUBLISH_TIME, _PHASE, _PROCESSOR, _TOPIC,
 _SUBSCRIPTION, _ORDERING_KEY, _DELIVERY_ATTEMPT, _OUTCOME, _HANDLING_MICROS, _CAUSE,
 _RECORD_TIME, _EXPLICIT_DATE, _CORRELATION_ID) = range(17)


@dataclasses.dataclass(frozen=True)
class RecorderStats:
    """Counters of a recorder since it started.

    ``recorded``: events written durably; ``dropped``: events lost (buffer
    full, archive unreachable past the retry budget, invalid, or still
    buffered when close timed out); ``write_errors``: failed write attempts;
    ``queue_depth``: events buffered now; ``files_written``: archive files;
    ``invalid``: events (or push requests) that could not be recorded;
    ``date_fallbacks``: events whose date attribute or payload date contained
    a bad value, so they were filed under the fallback date (the publish
    date, or for an OUTPUT its input's date).
    """

    recorded: int
    dropped: int
    write_errors: int
    queue_depth: int
    files_written: int
    invalid: int
    publish_failures: int
    date_fallbacks: int = 0


def _default_writer_id() -> str:
    # Writer ids become part of file names: letters, digits, '_' and '-' only.
    host = re.sub(r"[^A-Za-z0-9_-]+", "-", socket.gethostname()).strip("-_")[:40] or "host"
    return f"{host}-{os.getpid()}"


def _to_micros(value: Any) -> int:
    if value is None:
        return now_micros()
    if isinstance(value, dt.datetime):
        return datetime_to_micros(value)
    return int(value)


def _outcome_for_status(status: int) -> str:
    from recorder._envelope import is_ack_status

    return "ack" if is_ack_status(status) else "nack"


class Handling:
    """The handling of one input message; a context manager made by ``Recorder.handling``.

    Inside it, ``ack()``, ``nack()``, ``set_status(http_status)`` and
    ``set_error(exception)`` set the outcome recorded on exit; an exception
    leaving the block sets ``error:<ExceptionType>`` and propagates unchanged.
    """

    __slots__ = (
        "_recorder", "_fields", "_token", "_started_ns", "outcome", "_default_outcome",
        "_publish_ordinal", "__weakref__",
    )

    def __init__(self, recorder: "Recorder", fields: list, default_outcome: str | None) -> None:
        self._recorder = recorder
        self._fields = fields
        self._token = None
        self._started_ns = 0
        self.outcome: str | None = None
        self._default_outcome = default_outcome
        self._publish_ordinal = 0

    @property
    def message_id(self) -> str:
        """The id of the input message being handled."""
        return self._fields[_EVENT_ID]

    def ack(self) -> None:
        """Record the outcome ``ack``."""
        self.outcome = "ack"

    def nack(self) -> None:
        """Record the outcome ``nack``."""
        self.outcome = "nack"

    def set_status(self, status: int) -> None:
        """Record the outcome Pub/Sub push gives ``status`` (102, 200, 201, 202, 204 ack)."""
        self.outcome = _outcome_for_status(int(status))

    def set_error(self, error: BaseException) -> None:
        """Record the outcome ``error:<type of error>``."""
        self.outcome = f"error:{type(error).__name__}"

    def __enter__(self) -> "Handling":
        self._token = current_handling.set(self)
        self._started_ns = time.perf_counter_ns()
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        elapsed_micros = (time.perf_counter_ns() - self._started_ns) // 1000
        try:
            current_handling.reset(self._token)
        except ValueError:
            # Exited in another context than it was entered in; nothing to restore.
            pass
        if exc_type is not None and not (self.outcome or "").startswith("error:"):
            self.outcome = f"error:{exc_type.__name__}"
        fields = self._fields
        fields[_OUTCOME] = self.outcome if self.outcome is not None else self._default_outcome
        fields[_HANDLING_MICROS] = elapsed_micros
        self._recorder._enqueue(tuple(fields))
        return False

    # Called by the publish patch, on the publishing thread.
    def before_publish(self) -> int:
        return now_micros()

    def after_publish(self, publish_time: int, topic: Any, data: Any, args: tuple,
                      kwargs: dict, future: Any) -> None:
        try:
            self._recorder._capture_output(self, publish_time, topic, data, args, kwargs, future)
        except Exception:  # recording must never break a publish
            self._recorder._count("publish_failures")


class Recorder:
    """Records a processor's inputs and outputs into an archive; never raises into the caller.

    Unset arguments come from the environment: ``REPLAY_ARCHIVE_URI``,
    ``REPLAY_WRITER_ID`` (default ``<hostname>-<pid>``), ``REPLAY_TIME_ZONE``,
    ``REPLAY_DATE_ATTRIBUTE``, ``REPLAY_DATE_POINTER``, ``REPLAY_REDACT_*``
    (see ``RedactionRules.from_env``) and ``REPLAY_CODEC``.
    """

    def __init__(
        self,
        archive_uri: str | None = None,
        *,
        writer_id: str | None = None,
        source: str = "sdk",
        date_rule: DateRule | None = None,
        time_zone: str | None = None,
        date_attribute: str | None = None,
        date_pointer: str | None = None,
        redaction: RedactionRules | None = None,
        codec: str | None = None,
        max_buffer_events: int = DEFAULT_MAX_BUFFER_EVENTS,
        flush_interval_secs: float = DEFAULT_FLUSH_INTERVAL_SECS,
        retry_budget_secs: float = DEFAULT_RETRY_BUDGET_SECS,
        error_log_interval_secs: float = DEFAULT_ERROR_LOG_INTERVAL_SECS,
        capture_publish: bool = True,
        install_signal_handler: bool = True,
        clock: Callable[[], float] = time.monotonic,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.archive_uri = archive_uri or env.get("REPLAY_ARCHIVE_URI")
        if not self.archive_uri:
            raise ValueError(
                "Recorder needs an archive: pass archive_uri or set REPLAY_ARCHIVE_URI "
                "(a local folder or gs://bucket/prefix)"
            )
        self._writer_id_given = writer_id or env.get("REPLAY_WRITER_ID")
        self.writer_id = self._writer_id_given or _default_writer_id()
        self.source = source
        if date_rule is None:
            date_rule = DateRule(
                attribute=date_attribute or env.get("REPLAY_DATE_ATTRIBUTE") or None,
                json_pointer=date_pointer or env.get("REPLAY_DATE_POINTER") or None,
                time_zone=time_zone or env.get("REPLAY_TIME_ZONE") or "UTC",
            )
        self.date_rule = date_rule
        self.redaction = redaction if redaction is not None else RedactionRules.from_env(env)
        self.codec = codec or env.get("REPLAY_CODEC") or None
        if self.codec:
            from recorder._writer import check_codec

            # Raised here: a codec failing later, in the flusher, would drop every event.
            check_codec(self.codec)
        if max_buffer_events < 1:
            raise ValueError(f"max_buffer_events must be at least 1, got {max_buffer_events!r}")
        self.max_buffer_events = max_buffer_events
        self.flush_interval_secs = float(flush_interval_secs)
        self.retry_budget_secs = float(retry_budget_secs)
        self.error_log_interval_secs = float(error_log_interval_secs)
        self._clock = clock
        self._date_fallbacks = DateFallbackLog(area="recorder", interval_secs=self.error_log_interval_secs,
                                               clock=clock)
        self._counters = collections.Counter()
        self._counter_lock = threading.Lock()
        self._unreported_drops = 0
        self._last_error_log: float | None = None
        self._closed = False
        self._capture_publish = capture_publish and acquire_publish_patch()
        self._in_flight_publishes = 0
        self._start_worker()
        _live_recorders.add(self)
        _install_exit_hooks(install_signal_handler)

    # ------------------------------------------------------------------ hot path

    def handling(
        self,
        *,
        message_id: str,
        data: bytes = b"",
        attributes: Mapping[str, str] | None = None,
        publish_time: int | dt.datetime | None = None,
        phase: str,
        processor: str | None = None,
        topic: str | None = None,
        subscription: str | None = None,
        ordering_key: str | None = None,
        delivery_attempt: int | None = None,
        logical_date: dt.date | str | None = None,
        correlation_id: str | None = None,
        default_outcome: str | None = "ack",
    ) -> Handling:
        """Return a context manager recording the handling of one input message.

        ``publish_time`` is epoch microseconds or an aware datetime (default:
        now). With no explicit outcome and no exception, ``default_outcome``
        is recorded.
        """
        fields = [
            Direction.INPUT, str(message_id), data, dict(attributes) if attributes else {},
            publish_time, phase, processor, _short_name(topic), _short_name(subscription),
            ordering_key or None, delivery_attempt, None, None, None, now_micros(),
            logical_date, correlation_id,
        ]
        return Handling(self, fields, default_outcome)

    def handles(
        self,
        *,
        phase: str,
        processor: str | None = None,
        topic: str | None = None,
        subscription: str | None = None,
    ) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
        """Decorate a streaming-pull callback taking a ``pubsub_v1`` subscriber ``Message``.

        The outcome is ``ack`` or ``nack`` from the message's ``ack()``/``nack()``
        calls inside the callback, ``error:<Type>`` when it raises, or none
        when it returns without either (the message may be acknowledged later
        elsewhere, which is not recorded).
        """
        _check_phase(phase)

        def decorate(callback: Callable[[Any], Any]) -> Callable[[Any], Any]:
            @functools.wraps(callback)
            def wrapper(message: Any) -> Any:
                handling = self._handling_for_message(message, phase, processor, topic, subscription)
                if handling is None:
                    return callback(message)
                _watch_ack_calls(message, handling)
                with handling:
                    return callback(message)

            return wrapper

        return decorate

    def _handling_for_message(self, message, phase, processor, topic, subscription) -> Handling | None:
        try:
            return self.handling(
                message_id=message.message_id,
                data=message.data,
                attributes=dict(message.attributes),
                publish_time=message.publish_time,
                phase=phase,
                processor=processor,
                topic=topic,
                subscription=subscription,
                ordering_key=message.ordering_key or None,
                delivery_attempt=message.delivery_attempt,
                default_outcome=None,
            )
        except Exception:
            self._count("invalid")
            return None

    def _enqueue(self, item: tuple) -> None:
        buffer = self._buffer
        if len(buffer) >= self.max_buffer_events or self._closed:
            self._record_drops(1, reason="buffer_full" if not self._closed else "closed")
            return
        buffer.append(item)
        if len(buffer) >= self._wake_threshold:
            self._wake.set()

    def _capture_output(self, handling: Handling, publish_time: int, topic: Any, data: Any,
                        args: tuple, kwargs: dict, future: Any) -> None:
        ordering_key, attributes = split_publish_arguments(args, kwargs)
        input_fields = handling._fields
        fields = [
            Direction.OUTPUT, None, bytes(data), attributes, publish_time, input_fields[_PHASE],
            input_fields[_PROCESSOR], _short_name(str(topic)), None, ordering_key, None, None,
            None, input_fields[_EVENT_ID], now_micros(), input_fields, input_fields[_CORRELATION_ID],
        ]
        with self._counter_lock:
            self._in_flight_publishes += 1

        def on_published(done: Any) -> None:
            try:
                message_id = done.result()
            except BaseException:
                # The publish failed, so nothing left the process to record.
                self._count("publish_failures")
            else:
                fields[_EVENT_ID] = str(message_id)
                self._enqueue(tuple(fields))
            finally:
                with self._counter_lock:
                    self._in_flight_publishes -= 1

        future.add_done_callback(on_published)

    # ------------------------------------------------------------------ control

    @property
    def stats(self) -> RecorderStats:
        """Current counters."""
        with self._counter_lock:
            counters = dict(self._counters)
        return RecorderStats(
            recorded=counters.get("recorded", 0),
            dropped=counters.get("dropped", 0),
            write_errors=counters.get("write_errors", 0),
            queue_depth=len(self._buffer),
            files_written=counters.get("files_written", 0),
            invalid=counters.get("invalid", 0),
            publish_failures=counters.get("publish_failures", 0),
            date_fallbacks=self._date_fallbacks.count,
        )

    def flush(self, timeout_secs: float | None = None) -> bool:
        """Write everything buffered now; return False if ``timeout_secs`` passed first.

        Waits (within the timeout) for publishes still in flight, so their
        OUTPUT events are included.
        """
        deadline = None if timeout_secs is None else self._clock() + timeout_secs
        while self._in_flight_publishes > 0 and (deadline is None or self._clock() < deadline):
            time.sleep(0.005)
        done = threading.Event()
        with self._flush_lock:
            self._flush_waiters.append(done)
        self._wake.set()
        remaining = None if deadline is None else max(0.0, deadline - self._clock())
        return done.wait(remaining)

    def close(self, timeout_secs: float | None = DEFAULT_CLOSE_TIMEOUT_SECS) -> RecorderStats:
        """Flush, stop the flusher and release the publish patch; idempotent.

        Events still buffered when ``timeout_secs`` runs out are counted as dropped.
        """
        if self._closed:
            return self.stats
        self.flush(timeout_secs)
        self._closed = True
        self._stopping.set()
        self._wake.set()
        self._worker.join(timeout_secs)
        leftover = len(self._buffer)
        if leftover and not self._worker.is_alive():
            self._buffer.clear()
            self._record_drops(leftover, reason="closed")
        if self._capture_publish:
            self._capture_publish = False
            release_publish_patch()
        _live_recorders.discard(self)
        stats = self.stats
        log.info("recorder.closed", archive=self.archive_uri, records=stats.recorded,
                 dropped=stats.dropped, write_errors=stats.write_errors)
        return stats

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ flusher

    def _start_worker(self) -> None:
        self._writer = None
        self._buffer: collections.deque = collections.deque()
        self._wake_threshold = max(1, self.max_buffer_events // 2)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._flush_lock = threading.Lock()
        self._flush_waiters: list[threading.Event] = []
        self._worker = threading.Thread(
            target=self._run_flusher, name=f"replay-recorder-{self.writer_id}", daemon=True
        )
        self._worker.start()

    def _run_flusher(self) -> None:
        while True:
            self._wake.wait(self.flush_interval_secs)
            self._wake.clear()
            with self._flush_lock:
                waiters, self._flush_waiters = self._flush_waiters, []
            try:
                self._drain()
            except Exception as error:  # the flusher must outlive any bug in one batch
                log.error("recorder.flusher_failed", archive=self.archive_uri,
                          error=f"{type(error).__name__}: {error}")
            for waiter in waiters:
                waiter.set()
            if self._stopping.is_set() and not self._buffer:
                return

    def _drain(self) -> None:
        items: list[tuple] = []
        buffer = self._buffer
        while buffer:
            items.append(buffer.popleft())
        if not items:
            return
        events = self._to_events(items)
        if events:
            self._write_with_retry(events)

    def _to_events(self, items: list[tuple]) -> list[RecordedEvent]:
        events: list[RecordedEvent] = []
        for item in items:
            try:
                events.append(self._to_event(item))
            except Exception as error:
                self._count("invalid")
                self._record_drops(1, reason="invalid")
                log.warning("recorder.invalid_event", archive=self.archive_uri,
                            phase=item[_PHASE], event_id=item[_EVENT_ID],
                            error=f"{type(error).__name__}: {error}")
        return events

    def _to_event(self, item: tuple) -> RecordedEvent:
        data, attributes = self.redaction.apply(item[_DATA] or b"", item[_ATTRIBUTES])
        direction = item[_DIRECTION]
        publish_time = _to_micros(item[_PUBLISH_TIME])
        rule = self.date_rule
        explicit = item[_EXPLICIT_DATE] if direction is Direction.INPUT else None
        # The message's own date sources are parsed once here. The bad-source
        # check below parses them again only when they yield no date.
        own_date = None
        if explicit is None:
            own_date = rule.message_date(attributes=item[_ATTRIBUTES], data=item[_DATA] or b"")
        if own_date is not None:
            logical_date = own_date
        elif direction is Direction.INPUT:
            logical_date = rule.resolve(publish_time=publish_time, explicit=explicit)
        else:
            # An output without its own date takes its input's date, not its own
            # publish time, so an output published after midnight stays in the
            # same partition as its cause.
            cause = item[_EXPLICIT_DATE]
            logical_date = rule.resolve(
                publish_time=_to_micros(cause[_PUBLISH_TIME]), attributes=cause[_ATTRIBUTES],
                data=cause[_DATA] or b"", explicit=cause[_EXPLICIT_DATE],
            )
        if own_date is None and explicit is None and (rule.attribute or rule.json_pointer):
            fallback = find_bad_date_source(rule, attributes=item[_ATTRIBUTES], data=item[_DATA] or b"")
            if fallback is not None:
                self._date_fallbacks.report(fallback, logical_date, archive=self.archive_uri,
                                            phase=item[_PHASE], event_id=item[_EVENT_ID])
        return RecordedEvent(
            event_id=item[_EVENT_ID] or new_event_id(),
            logical_date=logical_date,
            phase=item[_PHASE],
            direction=direction,
            processor=item[_PROCESSOR],
            topic=item[_TOPIC],
            subscription=item[_SUBSCRIPTION],
            publish_time=publish_time,
            record_time=item[_RECORD_TIME],
            ordering_key=item[_ORDERING_KEY],
            attributes=attributes,
            data=data,
            correlation_id=item[_CORRELATION_ID],
            causation_id=item[_CAUSE],
            delivery_attempt=item[_DELIVERY_ATTEMPT],
            outcome=item[_OUTCOME],
            handling_micros=item[_HANDLING_MICROS],
            source=self.source,
        )

    def _write_with_retry(self, events: list[RecordedEvent]) -> None:
        started = self._clock()
        delay_secs = 0.05
        writer = None
        try:
            writer = self._archive_writer()
            for event in events:
                try:
                    writer.write(event)
                except Exception:
                    # A full buffer uploads inside write(); the writer keeps
                    # a failed file's events for the flush below.
                    self._count("write_errors")
        except Exception as error:  # the archive could not even be opened
            self._count("write_errors")
            self._record_drops(len(events), reason="archive_unreachable", error=error)
            return
        while True:
            try:
                writer.flush()
            except Exception as error:
                self._count("write_errors")
                elapsed = self._clock() - started
                if elapsed + delay_secs > self.retry_budget_secs or self._stopping.is_set():
                    # Give up on this batch: a new writer starts empty.
                    self._writer = None
                    self._record_drops(writer.buffered_events, reason="archive_unreachable",
                                       error=error)
                    return
                log.debug("recorder.write_retry", archive=self.archive_uri, records=len(events),
                          elapsed_s=round(elapsed, 3), error=f"{type(error).__name__}: {error}")
                self._stopping.wait(delay_secs)
                delay_secs = min(delay_secs * 2, 2.0)
                continue
            return

    def _archive_writer(self) -> Any:
        if self._writer is None:
            from recorder._writer import ArchiveWriter

            # Counted per stored file: write() also stores a file when a
            # partition's buffer fills, which flush() does not return.
            options: dict[str, Any] = {"writer_id": self.writer_id, "source": self.source,
                                       "on_written": self._count_written_file}
            if self.codec:
                options["codec"] = self.codec
            if self.archive_uri.startswith("gs://"):
                from recorder._storage import GcsStorage

                # One attempt must not outlast the recorder's own retry budget
                # (the storage layer's default retries for minutes).
                options["storage"] = GcsStorage(retry_timeout_secs=max(0.5, self.retry_budget_secs))
            self._writer = ArchiveWriter(self.archive_uri, **options)
        return self._writer

    # ------------------------------------------------------------------ counters

    def _count_written_file(self, written: Any) -> None:
        with self._counter_lock:
            self._counters["recorded"] += written.records
            self._counters["files_written"] += 1

    def _count_invalid_input(self) -> None:
        """Count an input that could not be recorded, as ``invalid`` and ``dropped``."""
        with self._counter_lock:
            self._counters["invalid"] += 1
            self._counters["dropped"] += 1

    def _count(self, name: str, amount: int = 1) -> None:
        with self._counter_lock:
            self._counters[name] += amount

    def _record_drops(self, count: int, *, reason: str, error: BaseException | None = None) -> None:
        now = self._clock()
        with self._counter_lock:
            self._counters["dropped"] += count
            self._unreported_drops += count
            due = (self._last_error_log is None
                   or now - self._last_error_log >= self.error_log_interval_secs)
            if not due:
                return
            self._last_error_log = now
            dropped, self._unreported_drops = self._unreported_drops, 0
            dropped_total = self._counters["dropped"]
        event = "recorder.archive_unreachable" if reason == "archive_unreachable" else "recorder.events_dropped"
        log.error(event, archive=self.archive_uri, reason=reason, dropped=dropped,
                  dropped_total=dropped_total,
                  error=None if error is None else f"{type(error).__name__}: {error}")

    def _after_fork_in_child(self) -> None:
        # The flusher thread does not survive fork(); a pre-fork server
        # (gunicorn --preload) needs a new one, and a new default writer id.
        if not self._writer_id_given:
            self.writer_id = _default_writer_id()
        self._counter_lock = threading.Lock()
        self._counters = collections.Counter()
        self._date_fallbacks = DateFallbackLog(area="recorder", interval_secs=self.error_log_interval_secs,
                                               clock=self._clock)
        self._in_flight_publishes = 0
        if not self._closed:
            self._start_worker()


def _short_name(path: str | None) -> str | None:
    if not path:
        return None
    return path.rsplit("/", 1)[-1]


def _check_phase(phase: str) -> None:
    if not isinstance(phase, str) or not PHASE_PATTERN.fullmatch(phase):
        raise ValueError(
            f"phase {phase!r} is not a valid phase name; use lower-case letters, digits, "
            "'_' and '-', starting with a letter or digit"
        )


def _watch_ack_calls(message: Any, handling: Handling) -> None:
    # Instance attributes shadow the class's methods, so the real ack/nack
    # still run and the callback gets the same Message object.
    for name, outcome in (("ack", "ack"), ("nack", "nack"),
                          ("ack_with_response", "ack"), ("nack_with_response", "nack")):
        original = getattr(message, name, None)
        if original is None:
            continue

        def watched(*args, _original=original, _outcome=outcome, **kwargs):
            if not (handling.outcome or "").startswith("error:"):
                handling.outcome = _outcome
            return _original(*args, **kwargs)

        try:
            setattr(message, name, watched)
        except AttributeError:
            return


# ---------------------------------------------------------------------- process hooks

_live_recorders: "weakref.WeakSet[Recorder]" = weakref.WeakSet()
_hooks_lock = threading.Lock()
_atexit_installed = False
_sigterm_installed = False
_previous_sigterm: Any = None


def live_recorders() -> Iterator[Recorder]:
    """Return the recorders not yet closed in this process."""
    return iter(list(_live_recorders))


def _close_all(timeout_secs: float) -> None:
    for recorder in list(_live_recorders):
        try:
            recorder.close(timeout_secs)
        except Exception as error:
            log.error("recorder.close_failed", archive=recorder.archive_uri,
                      error=f"{type(error).__name__}: {error}")


def _install_exit_hooks(install_signal_handler: bool) -> None:
    global _atexit_installed, _sigterm_installed, _previous_sigterm
    with _hooks_lock:
        if not _atexit_installed:
            atexit.register(_close_all, DEFAULT_CLOSE_TIMEOUT_SECS)
            os.register_at_fork(after_in_child=_restart_after_fork)
            _atexit_installed = True
        if not install_signal_handler or _sigterm_installed:
            return
        if threading.current_thread() is not threading.main_thread():
            log.debug("recorder.sigterm_not_installed", reason="not the main thread")
            return
        try:
            _previous_sigterm = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError) as error:
            log.debug("recorder.sigterm_not_installed", reason=str(error))
            return
        _sigterm_installed = True


def _on_sigterm(signum: int, frame: Any) -> None:
    for recorder in list(_live_recorders):
        try:
            recorder.flush(DEFAULT_CLOSE_TIMEOUT_SECS)
        except Exception:
            pass
    previous = _previous_sigterm
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    else:
        # The default disposition terminates the process: restore it and
        # re-send the signal so the exit status stays "killed by SIGTERM".
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _restart_after_fork() -> None:
    for recorder in list(_live_recorders):
        recorder._after_fork_in_child()
