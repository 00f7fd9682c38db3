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
passed through unrecorded (counted in ``non_envelope_requests``). Request
headers, including ``Authorization``, are never read into a record.
"""

from __future__ import annotations

import functools
import io
import json
import threading
from typing import Any, Callable

from recorder._envelope import EnvelopeError, PushMessage, parse_push_envelope
from recorder._logging import get_logger
from recorder._publish_capture import current_handling
from recorder._sdk import Recorder, _check_phase

log = get_logger(__name__)

# Pub/Sub push messages are at most 10 MB; larger bodies are passed through unread.
MAX_ENVELOPE_BYTES = 16 * 1024 * 1024

__all__ = ["PushRecordingMiddleware", "record_push", "recorded_push_view"]


def _parse_body(body: bytes) -> PushMessage | None:
    try:
        return parse_push_envelope(json.loads(body))
    except (ValueError, EnvelopeError, TypeError):
        return None


class PushRecordingMiddleware:
    """WSGI middleware recording Pub/Sub push deliveries to the wrapped app."""

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

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        message = self._read_envelope(environ)
        if message is None:
            return self.wsgi_app(environ, start_response)
        handling = self.recorder.handling(
            message_id=message.message_id,
            data=message.data,
            attributes=message.attributes,
            publish_time=message.publish_time,
            phase=self.phase,
            processor=self.processor,
            topic=self.topic,
            subscription=message.subscription,
            ordering_key=message.ordering_key,
            delivery_attempt=message.delivery_attempt,
        )

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

    def _read_envelope(self, environ: dict) -> PushMessage | None:
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
        message = _parse_body(body)
        if message is None:
            with self._lock:
                self.non_envelope_requests += 1
            log.debug("push.not_an_envelope", phase=self.phase, processor=self.processor,
                      size_bytes=len(body))
        return message


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
    # Flask answers an unhandled exception with a 500 without re-raising it;
    # the signal lets the record name the exception type instead of "nack".
    got_request_exception.connect(_mark_exception, app, weak=False)


def recorded_push_view(recorder: Recorder, *, phase: str, processor: str | None = None,
                       topic: str | None = None) -> Callable[[Callable], Callable]:
    """Decorate one Flask view that receives Pub/Sub push requests."""
    _check_phase(phase)

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from flask import current_app, request

            message = _parse_body(request.get_data(cache=True)) if request.method == "POST" else None
            if message is None:
                return view(*args, **kwargs)
            with recorder.handling(
                message_id=message.message_id, data=message.data, attributes=message.attributes,
                publish_time=message.publish_time, phase=phase, processor=processor, topic=topic,
                subscription=message.subscription, ordering_key=message.ordering_key,
                delivery_attempt=message.delivery_attempt,
            ) as handling:
                response = current_app.make_response(view(*args, **kwargs))
                handling.set_status(response.status_code)
                return response

        return wrapper

    return decorate
