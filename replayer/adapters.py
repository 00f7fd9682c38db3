"""Processor adapters: how a replayed message reaches a processor.

``callable`` calls ``process(message, ctx)``, or ``process(push_body)`` with
``receives = "envelope"``. ``wsgi`` calls a Flask or any WSGI app in-process
with the genuine Pub/Sub push envelope, and ``http`` POSTs that envelope to a
running service. :data:`ADAPTERS` maps each adapter name to its class, and
every adapter returns a :class:`Delivery` classified as Pub/Sub would: for
push, 102, 200, 201, 202 and 204 are acks and every other status is a nack.
The ``wsgi`` adapter raises again an exception that a Flask app raised,
because the recorder's push middleware records it as ``error:<Type>``, not as a nack.
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime as dt
import json
from typing import Any, Callable, Mapping

from recorder._envelope import build_push_envelope, is_ack_status, subscription_path
from replayer.config import ProcessorConfig, ReplayConfig, resolve_target
from replayer.errors import ConfigError, MissingExtraError

# The sandbox's timeout decides the outcome. The request's own, a little
# longer, only lets the abandoned thread that made the request end soon after.
HTTP_TIMEOUT_GRACE_S = 1.0
PUSH_USER_AGENT = "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)"


class MissingInputData(Exception):
    """Raised by a processor when data an input refers to does not exist.

    A replay of an old date often meets objects that were cleaned up since;
    such failures are reported as ``missing_input_data``, apart from bugs.
    ``FileNotFoundError`` is reported the same way.
    """


@dataclasses.dataclass(frozen=True)
class Message:
    """A Pub/Sub message as a callable processor receives it.

    ``publish_time`` is epoch microseconds (UTC); ``subscription`` is the full
    ``projects/<p>/subscriptions/<s>`` path.
    """

    message_id: str
    data: bytes
    attributes: Mapping[str, str]
    publish_time: int
    ordering_key: str | None = None
    topic: str | None = None
    subscription: str | None = None
    delivery_attempt: int | None = None

    def json(self) -> Any:
        """Return the payload decoded as JSON."""
        return json.loads(self.data)

    @property
    def publish_datetime(self) -> dt.datetime:
        """The publish time as an aware UTC datetime."""
        return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=self.publish_time)


class ProcessorContext:
    """Context a callable processor receives besides its message.

    ``publish`` hands a message to the replay, and nothing is sent to Pub/Sub.
    ``state`` lives for the whole replay lane when the processor is stateful
    and is a fresh dict for every call otherwise.
    """

    def __init__(self, *, publisher: Callable[..., str], state: dict, logical_date: dt.date,
                 processor: str, phase: str) -> None:
        self._publisher = publisher
        self.state = state
        self.logical_date = logical_date
        self.processor = processor
        self.phase = phase

    def publish(self, topic: str, data: bytes | dict | list, *, ordering_key: str | None = None,
                **attributes: str) -> str:
        """Publish ``data`` (bytes, or a dict/list sent as JSON) to ``topic``; return the message id."""
        content_type = None
        if isinstance(data, (dict, list)):
            data = json.dumps(data, separators=(",", ":"), sort_keys=False).encode("utf-8")
            content_type = "application/json"
        return self._publisher(topic, data, attributes, ordering_key, content_type)


@dataclasses.dataclass(frozen=True)
class Delivery:
    """Outcome of delivering one message: acked or not, and the HTTP status if any."""

    ack: bool
    status: int | None = None


def _status_code_of(value: Any) -> int | None:
    """Return the integer ``status_code`` of a response object (Flask, Werkzeug, requests), found by duck typing."""
    status = getattr(value, "status_code", None)
    if isinstance(status, int) and not isinstance(status, bool):
        return status
    return None


def classify_return(value: Any) -> Delivery:
    """Classify a callable's return value: None/True ack, False nack, an int is an HTTP status.

    A response object with an integer ``status_code`` (a Flask or Werkzeug
    ``Response``, as Functions Framework functions return) uses that status.
    A ``(body, status)`` tuple, as Flask views return, uses its status; a
    ``(response, headers)`` tuple the response's. Any other value counts as
    an ack, because returning data is not a failure.
    """
    if value is None or value is True:
        return Delivery(ack=True)
    if value is False:
        return Delivery(ack=False)
    if isinstance(value, int):
        return Delivery(ack=is_ack_status(value), status=value)
    status = _status_code_of(value)
    if status is None and isinstance(value, tuple) and value:
        if len(value) >= 2 and isinstance(value[1], int) and not isinstance(value[1], bool):
            status = value[1]
        else:
            status = _status_code_of(value[0])
    if status is not None:
        return Delivery(ack=is_ack_status(status), status=status)
    return Delivery(ack=True)


@dataclasses.dataclass(frozen=True)
class AdapterContext:
    """Per-run facts an adapter needs to build envelopes."""

    project: str


class Adapter:
    """Delivers messages to one processor; subclasses implement :meth:`deliver`."""

    def __init__(self, processor: ProcessorConfig, target: Any, context: AdapterContext) -> None:
        self.processor = processor
        self.target = target
        self.context = context

    def envelope(self, message: Message) -> dict[str, Any]:
        """Build the push body Pub/Sub would send for ``message`` on this processor's subscription."""
        attempt = None
        if self.processor.delivery_attempt:
            attempt = message.delivery_attempt or 1
        subscription = message.subscription or subscription_path(
            self.context.project, self.processor.subscription_name)
        return build_push_envelope(
            message_id=message.message_id, data=message.data, attributes=message.attributes,
            publish_time=message.publish_time, subscription=subscription,
            ordering_key=message.ordering_key, delivery_attempt=attempt,
        )

    def deliver(self, message: Message, ctx: ProcessorContext) -> Delivery:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the adapter holds (sessions); safe to call twice."""


class CallableAdapter(Adapter):
    """Calls a Python function in-process."""

    def deliver(self, message: Message, ctx: ProcessorContext) -> Delivery:
        if self.processor.receives == "envelope":
            return classify_return(self.target(self.envelope(message)))
        return classify_return(self.target(message, ctx))


# Exceptions Flask handled during the wsgi delivery running in this context;
# None outside a delivery, so requests served by anything else are ignored.
_request_exceptions: contextvars.ContextVar[list[BaseException] | None] = contextvars.ContextVar(
    "replay_wsgi_request_exceptions", default=None)


def _note_request_exception(sender: Any, exception: BaseException, **extra: Any) -> None:
    raised = _request_exceptions.get()
    if raised is not None:
        raised.append(exception)


def _watch_flask_exceptions() -> None:
    """Connect to Flask's ``got_request_exception`` signal (once; blinker ignores repeats)."""
    try:
        from flask import got_request_exception
    except ImportError:
        return  # not Flask: a plain WSGI app's exception reaches the adapter by itself
    # Flask responds to an unhandled exception with a 500 and does not re-raise it,
    # so the signal is the only place where the exception is still available.
    got_request_exception.connect(_note_request_exception, weak=False)


def response_status(error: BaseException | None) -> int | None:
    """Return the HTTP status the app returned before the ``wsgi`` adapter raised ``error`` again, if any."""
    return getattr(error, "replay_http_status", None)


class WsgiAdapter(Adapter):
    """POSTs the push envelope to a WSGI app in-process: no socket, no credentials.

    When a Flask app raises, Flask sends ``got_request_exception`` and responds
    with 500. The adapter then raises that exception again, with the status in
    its ``replay_http_status`` attribute (see :func:`response_status`), so the
    call is a ``processor_exception`` named by type, like in the recording.
    A 500 the app returns without raising stays a nack.
    """

    def __init__(self, processor: ProcessorConfig, target: Any, context: AdapterContext) -> None:
        super().__init__(processor, target, context)
        try:
            from werkzeug.test import EnvironBuilder, run_wsgi_app
        except ImportError as error:
            raise MissingExtraError("werkzeug (with flask)", "replay") from error
        self._builder = EnvironBuilder
        self._run = run_wsgi_app
        _watch_flask_exceptions()

    def deliver(self, message: Message, ctx: ProcessorContext) -> Delivery:
        body = json.dumps(self.envelope(message)).encode("utf-8")
        builder = self._builder(
            path=self.processor.path, method="POST", data=body,
            headers={"Content-Type": "application/json", "User-Agent": PUSH_USER_AGENT},
            base_url="http://replay.invalid/",
        )
        try:
            environ = builder.get_environ()
        finally:
            builder.close()
        raised: list[BaseException] = []
        token = _request_exceptions.set(raised)
        try:
            app_iter, status_line, _headers = self._run(self.target, environ, buffered=False)
            try:
                for _chunk in app_iter:
                    pass  # drain the body so generator views run to the end
            finally:
                close = getattr(app_iter, "close", None)
                if close is not None:
                    close()
        finally:
            _request_exceptions.reset(token)
        status = int(str(status_line).split(" ", 1)[0])
        if raised:
            error = raised[0]  # the original one; an error handler that fails adds a second
            try:
                error.replay_http_status = status  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass  # an exception type with __slots__; the status is then not reported
            raise error
        return Delivery(ack=is_ack_status(status), status=status)


class HttpAdapter(Adapter):
    """POSTs the push envelope to a running service with ``requests``.

    Sends ``auth_header`` as ``Authorization`` when configured, or an ID token
    for ``id_token_audience`` fetched with Google's default credentials.
    """

    def __init__(self, processor: ProcessorConfig, target: Any, context: AdapterContext) -> None:
        super().__init__(processor, target, context)
        try:
            import requests
        except ImportError as error:
            raise MissingExtraError("requests", "replay") from error
        self._session = requests.Session()
        self._id_token: str | None = None

    def _authorization(self) -> str | None:
        if self.processor.auth_header:
            return self.processor.auth_header
        if self.processor.id_token_audience:
            if self._id_token is None:
                # NOTE: the token is fetched once per adapter and not refreshed; ID tokens
                # last an hour, so a replay longer than that gets 401s from the service.
                import google.auth.transport.requests
                import google.oauth2.id_token

                request = google.auth.transport.requests.Request()
                self._id_token = google.oauth2.id_token.fetch_id_token(
                    request, self.processor.id_token_audience)
            return f"Bearer {self._id_token}"
        return None

    def deliver(self, message: Message, ctx: ProcessorContext) -> Delivery:
        headers = {"Content-Type": "application/json", "User-Agent": PUSH_USER_AGENT}
        authorization = self._authorization()
        if authorization:
            headers["Authorization"] = authorization
        response = self._session.post(self.processor.url, data=json.dumps(self.envelope(message)),
                                      headers=headers, timeout=self.processor.timeout_s + HTTP_TIMEOUT_GRACE_S)
        response.close()
        return Delivery(ack=is_ack_status(response.status_code), status=response.status_code)

    def close(self) -> None:
        self._session.close()


ADAPTERS: dict[str, type[Adapter]] = {
    "callable": CallableAdapter,
    "wsgi": WsgiAdapter,
    "http": HttpAdapter,
}


def build_adapter(processor: ProcessorConfig, *, config: ReplayConfig, target: Any = None) -> Adapter:
    """Create the adapter for ``processor``, importing its target unless one is given."""
    try:
        adapter_class = ADAPTERS[processor.adapter]
    except KeyError as error:
        raise ConfigError(f"processor {processor.name!r}: adapter {processor.adapter!r} is not one of "
                          f"{', '.join(ADAPTERS)}") from error
    if target is None:
        target = resolve_target(processor, base_dir=config.base_dir)
    return adapter_class(processor, target, AdapterContext(project=config.replay.project))

