"""The Pub/Sub push envelope (case 08): decoding real shapes and building them."""

import base64
import json

import pytest

from recorder import (
    EnvelopeError,
    build_push_envelope,
    is_ack_status,
    parse_push_envelope,
)
from schemas import micros_to_rfc3339

ENVELOPES = [
    "envelope_full.json",
    "envelope_no_attributes.json",
    "envelope_attributes_only.json",
    "envelope_binary_data.json",
]


@pytest.fixture(scope="module")
def case08(cases_dir):
    return cases_dir / "08-push-envelope-shapes"


@pytest.mark.parametrize("name", ENVELOPES)
def test_decodes_real_envelope_shapes(case08, name):
    """Each genuine push body decodes to exactly the expected message."""
    expected = json.loads((case08 / "expected_decoded.json").read_text())[name]
    message = parse_push_envelope(json.loads((case08 / name).read_text()))
    assert message.data.hex() == expected["data_hex"]
    assert message.attributes == expected["attributes"]
    assert message.message_id == expected["message_id"]
    assert (message.ordering_key or "") == expected["ordering_key"]
    assert micros_to_rfc3339(message.publish_time) == expected["publish_time"]
    assert message.delivery_attempt == expected["delivery_attempt"]


def test_binary_data_is_standard_base64(case08):
    """The binary payload decodes with the standard alphabet, never URL-safe."""
    message = parse_push_envelope(json.loads((case08 / "envelope_binary_data.json").read_text()))
    assert base64.b64encode(message.data) == b"++++//4/"


def test_status_classification_matches_pubsub(case08):
    """102, 200, 201, 202 and 204 are acks; every other status is a nack."""
    expected = json.loads((case08 / "expected_status_handling.json").read_text())
    for status, verdict in expected.items():
        assert is_ack_status(int(status)) == (verdict == "ack"), status


def test_built_envelope_has_the_real_shape():
    """Both spellings, RFC 3339 with Z, no empty keys, full subscription path."""
    envelope = build_push_envelope(
        message_id="42",
        data=bytes.fromhex("fbefbefffe3f"),
        attributes={},
        publish_time=1_710_025_808_000_001,
        subscription="projects/p/subscriptions/s",
    )
    message = envelope["message"]
    assert message["data"] == "++++//4/"
    assert "attributes" not in message
    assert "orderingKey" not in message
    assert message["messageId"] == message["message_id"] == "42"
    assert message["publishTime"] == message["publish_time"] == "2024-03-09T23:10:08.000001Z"
    assert "deliveryAttempt" not in envelope
    assert envelope["subscription"] == "projects/p/subscriptions/s"


def test_empty_payload_has_no_data_key():
    """An attribute-only message is built without a data key, as push sends it."""
    envelope = build_push_envelope(
        message_id="1", data=b"", attributes={"kind": "heartbeat"},
        publish_time=0, subscription="projects/p/subscriptions/s", delivery_attempt=3,
    )
    assert "data" not in envelope["message"]
    assert envelope["deliveryAttempt"] == 3


@pytest.mark.parametrize("name", ENVELOPES)
def test_build_then_parse_round_trip(case08, name):
    """Building an envelope from a decoded message and parsing it gives the same message."""
    original = parse_push_envelope(json.loads((case08 / name).read_text()))
    rebuilt = build_push_envelope(
        message_id=original.message_id, data=original.data, attributes=original.attributes,
        publish_time=original.publish_time, subscription=original.subscription,
        ordering_key=original.ordering_key, delivery_attempt=original.delivery_attempt,
    )
    assert parse_push_envelope(rebuilt) == original


@pytest.mark.parametrize(
    "body, message",
    [
        ([], "expected a JSON object"),
        ({"message": {"data": "e30="}}, "no 'messageId'"),
        ({"message": {"messageId": "1", "data": "not base64!", "publishTime": "2024-01-01T00:00:00Z"}}, "not standard base64"),
        ({"message": {"messageId": "1"}}, "no 'publishTime'"),
    ],
)
def test_bad_bodies_are_rejected(body, message):
    """A body that is not a push envelope raises an error saying what is missing."""
    with pytest.raises(EnvelopeError, match=message):
        parse_push_envelope(body)
