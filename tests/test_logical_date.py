"""Logical date resolution: explicit, attribute, JSON pointer, publish time in a zone."""

import datetime as dt
import json

import pytest

from schemas import DateRule, EventValidationError, parse_rfc3339_micros


def at(text):
    return parse_rfc3339_micros(text)


def test_explicit_date_wins():
    """An explicit date is used even when an attribute and a pointer are configured."""
    rule = DateRule(attribute="game_date", json_pointer="/game_date")
    resolved = rule.resolve(
        publish_time=at("2024-01-16T03:00:00Z"),
        attributes={"game_date": "2024-01-10"},
        data=b'{"game_date": "2024-01-11"}',
        explicit="2024-01-09",
    )
    assert resolved == dt.date(2024, 1, 9)


def test_attribute_before_pointer():
    """The configured attribute is used before the payload pointer."""
    rule = DateRule(attribute="game_date", json_pointer="/game_date")
    resolved = rule.resolve(
        publish_time=at("2024-01-16T03:00:00Z"),
        attributes={"game_date": "2024-01-10"},
        data=b'{"game_date": "2024-01-11"}',
    )
    assert resolved == dt.date(2024, 1, 10)


def test_nested_pointer_into_payload():
    """A JSON pointer reaches a nested payload field."""
    rule = DateRule(json_pointer="/meta/game_date")
    data = json.dumps({"meta": {"game_date": "2024-01-11T00:00:00"}}).encode()
    assert rule.resolve(publish_time=at("2024-01-16T03:00:00Z"), data=data) == dt.date(2024, 1, 11)


def test_bad_attribute_falls_back():
    """An attribute that is not a date falls through to the next source."""
    rule = DateRule(attribute="game_date", time_zone="UTC")
    resolved = rule.resolve(publish_time=at("2024-01-16T03:00:00Z"), attributes={"game_date": "soon"})
    assert resolved == dt.date(2024, 1, 16)


def test_deeply_nested_payload_falls_back():
    """A payload too deeply nested for json.loads falls through to the publish time."""
    rule = DateRule(json_pointer="/game_date", time_zone="UTC")
    data = b"[" * 100_000 + b"]" * 100_000
    assert rule.message_date(data=data) is None
    resolved = rule.resolve(publish_time=at("2024-01-16T03:00:00Z"), data=data)
    assert resolved == dt.date(2024, 1, 16)


def test_message_date_without_sources():
    """message_date returns None when no source yields a date."""
    rule = DateRule(attribute="game_date", json_pointer="/game_date")
    assert rule.message_date(attributes={"game_date": "soon"}, data=b'{"game_date": 7}') is None
    assert rule.message_date(attributes={}, data=b"not json") is None


@pytest.mark.parametrize(
    "published, expected",
    [
        ("2024-01-16T04:59:59.999999Z", dt.date(2024, 1, 15)),  # 23:59:59.999999 EST
        ("2024-01-16T05:00:00Z", dt.date(2024, 1, 16)),  # midnight EST
        ("2024-03-10T04:59:59Z", dt.date(2024, 3, 9)),  # before the spring-forward day starts
        ("2024-03-11T03:59:59Z", dt.date(2024, 3, 10)),  # 23:59:59 EDT on the short day
        ("2024-03-11T04:00:00Z", dt.date(2024, 3, 11)),  # midnight EDT
        ("2024-11-03T03:59:00Z", dt.date(2024, 11, 2)),  # 23:59 EDT before the fall-back
        ("2024-11-04T04:59:00Z", dt.date(2024, 11, 3)),  # 23:59 EST on the long day
        ("2024-11-04T05:00:00Z", dt.date(2024, 11, 4)),  # midnight EST
    ],
)
def test_publish_time_in_new_york(published, expected):
    """Publish times after midnight UTC belong to the US date, across DST changes."""
    rule = DateRule(time_zone="America/New_York")
    assert rule.resolve(publish_time=at(published)) == expected


def test_unknown_time_zone_is_rejected():
    """A time zone that is not an IANA name is rejected with an example of a valid one."""
    with pytest.raises(EventValidationError, match="America/New_York"):
        DateRule(time_zone="Eastern")


def test_bad_pointer_is_rejected():
    """A JSON pointer without a leading slash is rejected."""
    with pytest.raises(EventValidationError, match="must start with '/'"):
        DateRule(json_pointer="game_date")
