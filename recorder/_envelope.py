"""The Pub/Sub push envelope, parsed and built exactly as push delivers it.

Real push bodies carry both key spellings (``messageId`` and ``message_id``,
``publishTime`` and ``publish_time``), omit ``attributes`` when a message has
none, omit ``data`` when the payload is empty, encode ``data`` in standard
(not URL-safe) base64, and add ``deliveryAttempt`` only when a dead-letter
policy is set. Pub/Sub counts 102, 200, 201, 202 and 204 as acks; every other
status is a nack.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import Any, Mapping

from schemas import micros_to_rfc3339, parse_rfc3339_micros
from schemas._event import AVRO_INT_RANGE

ACK_STATUS_CODES = frozenset({102, 200, 201, 202, 204})


class EnvelopeError(ValueError):
    """A request body is not a Pub/Sub push envelope."""


class InvalidPushMessageError(EnvelopeError):
    """A push envelope has a message id but a field with a value Pub/Sub never sends.

    ``field`` names the envelope field (``publishTime``, ``attributes``,
    ``data``, ``deliveryAttempt``, ...) and ``message_id`` the message.
    """

    def __init__(self, message_id: str, field: str, problem: str) -> None:
        super().__init__(f"push message {message_id!r}: {problem}")
        self.message_id = message_id
        self.field = field


def is_ack_status(status: int) -> bool:
    """True when Pub/Sub treats the HTTP ``status`` as an acknowledgement."""
    return status in ACK_STATUS_CODES


@dataclasses.dataclass(frozen=True)
class PushMessage:
    """The message inside a push envelope, decoded."""

    message_id: str
    data: bytes
    attributes: dict[str, str]
    publish_time: int
    ordering_key: str | None
    subscription: str | None
    delivery_attempt: int | None


def _first(mapping: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in mapping and mapping[key] not in (None, ""):
            return mapping[key]
    return None


def _delivery_attempt(value: Any, message_id: str) -> int | None:
    if value is None:
        return None
    # JSON has one number type, so 5.0 is accepted as 5; bool is an int in Python.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidPushMessageError(message_id, "deliveryAttempt", "'deliveryAttempt' is not an integer")
    low, high = AVRO_INT_RANGE
    if not low <= value <= high:
        raise InvalidPushMessageError(message_id, "deliveryAttempt",
                                     "'deliveryAttempt' is outside the 32-bit int range")
    return value


def _optional_text(message: Mapping[str, Any], message_id: str, *keys: str) -> str | None:
    value = _first(message, *keys)
    if value is not None and not isinstance(value, str):
        raise InvalidPushMessageError(message_id, keys[0], f"{keys[0]!r} is not a string")
    return value


def parse_push_envelope(body: Any) -> PushMessage:
    """Decode a wrapped push body; raise :class:`EnvelopeError` naming what is wrong.

    A body with a message id but a bad field raises the subclass
    :class:`InvalidPushMessageError`, which names the field.
    """
    if not isinstance(body, Mapping) or not isinstance(body.get("message"), Mapping):
        raise EnvelopeError(
            "body is not a Pub/Sub push envelope: expected a JSON object with a 'message' object"
        )
    message = body["message"]
    message_id = _first(message, "messageId", "message_id")
    if message_id is None:
        raise EnvelopeError("push envelope has no 'messageId' or 'message_id' in 'message'")
    if isinstance(message_id, bool) or not isinstance(message_id, (str, int)):
        raise EnvelopeError("push envelope 'messageId' is not a string")
    message_id = str(message_id)
    raw_data = message.get("data") or ""
    try:
        data = base64.b64decode(raw_data, validate=True)
    except (binascii.Error, TypeError, ValueError) as error:
        raise InvalidPushMessageError(message_id, "data", f"'data' is not standard base64 ({error})") from error
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        raise InvalidPushMessageError(message_id, "attributes", "'attributes' is not an object")
    publish_text = _first(message, "publishTime", "publish_time")
    if publish_text is None:
        raise InvalidPushMessageError(message_id, "publishTime", "has no 'publishTime'")
    try:
        publish_time = parse_rfc3339_micros(publish_text)
    except ValueError as error:
        raise InvalidPushMessageError(
            message_id, "publishTime", "'publishTime' is not an RFC 3339 timestamp with a time zone") from error
    subscription = body.get("subscription") or None
    if subscription is not None and not isinstance(subscription, str):
        raise InvalidPushMessageError(message_id, "subscription", "'subscription' is not a string")
    return PushMessage(
        message_id=message_id,
        data=data,
        attributes={str(key): str(value) for key, value in attributes.items()},
        publish_time=publish_time,
        ordering_key=_optional_text(message, message_id, "orderingKey", "ordering_key"),
        subscription=subscription,
        delivery_attempt=_delivery_attempt(
            body.get("deliveryAttempt", body.get("delivery_attempt")), message_id),
    )


def subscription_path(project: str, subscription: str) -> str:
    """Return ``projects/<project>/subscriptions/<subscription>`` (kept if already a path)."""
    if subscription.startswith("projects/"):
        return subscription
    return f"projects/{project}/subscriptions/{subscription}"


def build_push_envelope(
    *,
    message_id: str,
    data: bytes,
    attributes: Mapping[str, str] | None,
    publish_time: int,
    subscription: str,
    ordering_key: str | None = None,
    delivery_attempt: int | None = None,
) -> dict[str, Any]:
    """Build the wrapped push body Pub/Sub would POST for this message."""
    published = micros_to_rfc3339(publish_time)
    message: dict[str, Any] = {}
    if attributes:
        message["attributes"] = dict(attributes)
    if data:
        message["data"] = base64.b64encode(data).decode("ascii")
    message["messageId"] = message_id
    message["message_id"] = message_id
    if ordering_key:
        message["orderingKey"] = ordering_key
    message["publishTime"] = published
    message["publish_time"] = published
    envelope: dict[str, Any] = {"message": message, "subscription": subscription}
    if delivery_attempt is not None:
        envelope["deliveryAttempt"] = delivery_attempt
    return envelope
