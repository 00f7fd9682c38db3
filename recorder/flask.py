"""Recording for Flask apps behind Pub/Sub push subscriptions.

``record_push(app, recorder, phase=..., processor=...)`` wraps the app's WSGI
callable: each POST whose body is a Pub/Sub push envelope is handled inside
``recorder.handling(...)``, so the INPUT is recorded with the HTTP status as
its outcome (102, 200, 201, 202 and 204 are acks, anything else a nack; an
exception Flask turns into a 500 is recorded as ``error:<Type>``) and every
``PublisherClient.publish`` during the request is recorded as its OUTPUT.
``recorded_push_view`` does the same for one view function.

The response is passed through untouched and the request body the app reads
is byte-for-byte the one received. A body that is not a push envelope is
passed through unrecorded (counted in ``non_envelope_requests``), and so is
an envelope whose message has a field Pub/Sub never sends that way (counted
as ``invalid`` in the recorder's stats, logged as ``push.invalid_message``
at most once per ``error_log_interval_secs``). Recording never raises into
the request. Request
headers, including ``Authorization``, are never read into a record.
"""

from __future__ import annotations

import functools
import io
import json
import threading
from typing import Any, Callable

from recorder._envelope import InvalidPushMessageError, PushMessage, parse_push_envelope
from recorder._logging import get_logger
from recorder._publish_capture import current_handling
from recorder._sdk import Handling, Recorder, _check_phase

log = get_logger(__name__)

# Pub/Sub push messages are at most 10 MB; larger bodies are passed through unread.
MAX_ENVELOPE_BYTES = 16 * 1024 * 1024

__all__ = ["PushRecordingMiddleware", "record_push", "recorded_push_view"]


def _parse_body(body: bytes) -> PushMessage | InvalidPushMessageError | None:
    """Return the push message, the error of an invalid one, or None for a non-envelope.

    Never raises: a body nested deeper than the JSON parser's recursion
    limit, or any other surprise, is reported as not an envelope.
    """
    try:
        return parse_push_envelope(json.loads(body))
    except InvalidPushMessageError as error:
        return error
    except Exception:
        return None


class _InvalidPushLog:
    """Counts push messages that cannot be recorded and logs them at most once per interval."""

    def __init__(self, recorder: Recorder, phase: str, processor: str | None) -> None:
        self.recorder = recorder
        self.phase = phase
        self.processor = processor
        self.count = 0
        self._lock = threading.Lock()
        self._last_logged: float | None = None
        self._suppressed = 0

    def report(self, message_id: str | None, field: str | None, error: BaseException) -> None:
        self.recorder._count_invalid_input()
        now = self.recorder._clock()
        with self._lock:
            self.count += 1
            if (self._last_logged is not None
                    and now - self._last_logged < self.recorder.error_log_interval_secs):
                self._suppressed += 1
                return
            self._last_logged = now
            suppressed, self._suppressed = self._suppressed, 0
        # The error text names the field, never its value or the payload.
        log.warning("push.invalid_message", phase=self.phase, processor=self.processor,
                    message_id=message_id, field=field, error=type(error).__name__,
                    suppressed=suppressed)


class PushRecordingMiddleware:
    """WSGI middleware recording Pub/Sub push deliveries to the wrapped app.

    ``non_envelope_requests`` counts POST bodies that are not push envelopes;
    ``invalid_messages`` counts envelopes with a message id whose message
    could not be recorded (a field Pub/Sub never sends that way). Both are
    passed to the app unchanged.
    """

    def __init__(self, wsgi_app: Callable, recorder: Recorder, *, phase: str,
                 processor: str | None = None, topic: str | None = None) -> None:
        _check_phase(phase)
        self.wsgi_app = wsgi_app
        self.recorder = recorder
        self.phase = phase
        self.processor = processor
        self.topic = topic
        self._lock = threading.Lock()
        self.non_envelope_requests = 0
        self._invalid = _InvalidPushLog(recorder, phase, processor)

    @property
    def invalid_messages(self) -> int:
        """Push messages that had a message id but could not be recorded."""
        return self._invalid.count

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        try:
            handling = self._start_handling(environ)
        except Exception as error:  # recording must never fail the request
            self._invalid.report(None, None, error)
            handling = None
        if handling is None:
            return self.wsgi_app(environ, start_response)

        def recording_start_response(status: str, headers: list, exc_info: Any = None) -> Any:
            try:
                code = int(status.split(" ", 1)[0])
            except ValueError:
                code = 0
            if not (handling.outcome or "").startswith("error:"):
                handling.set_status(code)
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        with handling:
            # NOTE: publishes made while a streamed response body is iterated,
            # after this call returns, are not attributed to this input.
            return self.wsgi_app(environ, recording_start_response)

    def _start_handling(self, environ: dict) -> Handling | None:
        body = self._read_body(environ)
        if body is None:
            return None
        parsed = _parse_body(body)
        if isinstance(parsed, InvalidPushMessageError):
            self._invalid.report(parsed.message_id, parsed.field, parsed)
            return None
        if not isinstance(parsed, PushMessage):
            with self._lock:
                self.non_envelope_requests += 1
            log.debug("push.not_an_envelope", phase=self.phase, processor=self.processor,
                      size_bytes=len(body))
            return None
        return _handling_for(self.recorder, parsed, phase=self.phase, processor=self.processor,
                             topic=self.topic)

    def _read_body(self, environ: dict) -> bytes | None:
        if environ.get("REQUEST_METHOD") != "POST":
            return None
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None
        if length <= 0 or length > MAX_ENVELOPE_BYTES:
            return None
        body = environ["wsgi.input"].read(length)
        # The app must read exactly the bytes that arrived.
        environ["wsgi.input"] = io.BytesIO(body)
        return body


def _handling_for(recorder: Recorder, message: PushMessage, *, phase: str, processor: str | None,
                  topic: str | None) -> Handling:
    return recorder.handling(
        message_id=message.message_id,
        data=message.data,
        attributes=message.attributes,
        publish_time=message.publish_time,
        phase=phase,
        processor=processor,
        topic=topic,
        subscription=message.subscription,
        ordering_key=message.ordering_key,
        delivery_attempt=message.delivery_attempt,
    )


def _mark_exception(sender: Any, exception: BaseException, **extra: Any) -> None:
    handling = current_handling.get()
    if handling is not None:
        handling.set_error(exception)


def record_push(app: Any, recorder: Recorder, *, phase: str, processor: str | None = None,
                topic: str | None = None) -> Any:
    """Wrap ``app.wsgi_app`` in :class:`PushRecordingMiddleware`; return ``app``.

    ``topic`` is the short name of the topic the push subscription reads (the
    envelope names only the subscription).
    """
    middleware = PushRecordingMiddleware(app.wsgi_app, recorder, phase=phase,
                                         processor=processor, topic=topic)
    app.wsgi_app = middleware
    _connect_exception_signal(app)
    return app


def _connect_exception_signal(app: Any) -> None:
    try:
        from flask import got_request_exception
    except ImportError:
        return
    # Flask turns an unhandled exception into a 500 response without re-raising it;
    # the signal lets the record name the exception type instead of "nack".
    got_request_exception.connect(_mark_exception, app, weak=False)


def recorded_push_view(recorder: Recorder, *, phase: str, processor: str | None = None,
                       topic: str | None = None) -> Callable[[Callable], Callable]:
    """Decorate one Flask view that receives Pub/Sub push requests.

    Bodies that are not push envelopes, or whose message cannot be
    recorded, reach the view unrecorded, as with :func:`record_push`.
    """
    _check_phase(phase)
    invalid = _InvalidPushLog(recorder, phase, processor)

    def start_handling() -> Handling | None:
        from flask import request

        if request.method != "POST":
            return None
        parsed = _parse_body(request.get_data(cache=True))
        if isinstance(parsed, InvalidPushMessageError):
            invalid.report(parsed.message_id, parsed.field, parsed)
            return None
        if not isinstance(parsed, PushMessage):
            return None
        return _handling_for(recorder, parsed, phase=phase, processor=processor, topic=topic)

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from flask import current_app

            try:
                handling = start_handling()
            except Exception as error:  # recording must never fail the request
                invalid.report(None, None, error)
                handling = None
            if handling is None:
                return view(*args, **kwargs)
            with handling:
                response = current_app.make_response(view(*args, **kwargs))
                handling.set_status(response.status_code)
                return response

        return wrapper

    return decorate
