"""The recorded-event model: validation and exact integer timestamps."""

import datetime as dt

import pytest

from schemas import (
    Direction,
    EventValidationError,
    RecordedEvent,
    datetime_to_micros,
    micros_to_datetime,
    micros_to_rfc3339,
    parse_rfc3339_micros,
)


def make_event(**changes):
    fields = dict(
        event_id="m-1",
        logical_date=dt.date(2024, 1, 15),
        phase="phase2",
        direction=Direction.INPUT,
        publish_time=1_705_363_199_999_999,
        data=b'{"game_date": "2024-01-15"}',
        source="sdk",
    )
    fields.update(changes)
    return RecordedEvent(**fields)


def test_last_microsecond_stays_in_day():
    """A publish time of 23:59:59.9999995Z is cut to .999999, never rounded into the next day."""
    micros = parse_rfc3339_micros("2024-01-15T23:59:59.9999995Z")
    assert micros_to_datetime(micros).date() == dt.date(2024, 1, 15)
    assert micros_to_rfc3339(micros) == "2024-01-15T23:59:59.999999Z"


def test_float_seconds_would_move_day():
    """The float the Pub/Sub client gives for that instant rounds into the next day; micros do not."""
    as_float = dt.datetime(2024, 1, 15, 23, 59, 59, 999999, tzinfo=dt.timezone.utc).timestamp() + 0.0000005
    assert dt.datetime.fromtimestamp(round(as_float, 6), dt.timezone.utc).date() == dt.date(2024, 1, 16)
    assert micros_to_datetime(parse_rfc3339_micros("2024-01-15T23:59:59.9999995Z")).day == 15


def test_rfc3339_offsets_are_converted_to_utc():
    """A timestamp with an offset gives the same micros as its UTC spelling."""
    assert parse_rfc3339_micros("2024-01-15T19:00:00.5-05:00") == parse_rfc3339_micros("2024-01-16T00:00:00.500Z")


def test_naive_datetime_is_rejected():
    """A datetime without a time zone is refused with a fix in the message."""
    with pytest.raises(EventValidationError, match="no time zone"):
        datetime_to_micros(dt.datetime(2024, 1, 15, 12, 0))


def test_aware_datetime_becomes_micros():
    """publish_time given as an aware datetime is stored as integer micros."""
    event = make_event(publish_time=dt.datetime(2024, 1, 15, 12, 0, 0, 1, tzinfo=dt.timezone.utc))
    assert event.publish_time == 1_705_320_000_000_001


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"phase": "Phase 2"}, "not a valid phase name"),
        ({"phase": ""}, "not a valid phase name"),
        ({"direction": "SIDEWAYS"}, "not INPUT or OUTPUT"),
        ({"source": "kafka"}, "is not one of"),
        ({"attributes": {"n": 1}}, "must map str to str"),
        ({"data": "text"}, "must be bytes"),
        ({"event_id": ""}, "non-empty string"),
        ({"logical_date": "2024-01-15"}, "must be a datetime.date"),
        ({"publish_time": 1.5}, "epoch microseconds"),
        ({"delivery_attempt": "2"}, "must be an int"),
    ],
)
def test_invalid_fields_are_rejected(changes, message):
    """Each invalid field value raises an error naming it."""
    with pytest.raises(EventValidationError, match=message):
        make_event(**changes)


def test_avro_datum_round_trip():
    """to_avro then from_avro gives an equal event."""
    event = make_event(attributes={"game_date": "2024-01-15"}, ordering_key="g-1", delivery_attempt=2)
    assert RecordedEvent.from_avro(event.to_avro()) == event


def test_direction_string_is_coerced():
    """A direction given as a string becomes the enum."""
    assert make_event(direction="OUTPUT").direction is Direction.OUTPUT


@pytest.mark.parametrize("field, value, avro_type", [
    ("delivery_attempt", 2**31, "int"),
    ("delivery_attempt", -(2**31) - 1, "int"),
    ("schema_version", 2**31, "int"),
    ("handling_micros", 2**63, "long"),
    ("publish_time", 2**63, "long"),
    ("record_time", -(2**63) - 1, "long"),
])
def test_value_outside_avro_range_rejected(field, value, avro_type):
    """An integer the Avro int or long type cannot hold is rejected when the event is built."""
    with pytest.raises(EventValidationError, match=f"'{field}'.*Avro {avro_type} range"):
        make_event(**{field: value})


def test_avro_range_limits_accepted():
    """The largest int and long values are still valid."""
    event = make_event(delivery_attempt=2**31 - 1, handling_micros=2**63 - 1)
    assert event.delivery_attempt == 2**31 - 1
    assert event.handling_micros == 2**63 - 1
