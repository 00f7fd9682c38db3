"""Redaction rules: pointers in JSON payloads and attribute keys, hashed or removed."""

from __future__ import annotations

import hashlib
import json

import pytest

from recorder import RedactionRules


def test_pointer_hashed_with_salt():
    """A redacted payload field becomes sha256 of salt plus value."""
    rules = RedactionRules(pointers=("/email",), salt="pepper")
    out = json.loads(rules.redact_data(b'{"email": "a@b.c", "n": 1}'))
    assert out["email"] == "sha256:" + hashlib.sha256(b"peppera@b.c").hexdigest()
    assert out["n"] == 1


def test_pointer_removed():
    """Mode remove deletes the field."""
    rules = RedactionRules(pointers=("/secret",), mode="remove")
    assert json.loads(rules.redact_data(b'{"secret": "x", "keep": true}')) == {"keep": True}


def test_wildcard_pointer_reaches_every_item():
    """A '*' segment redacts the field in every array item."""
    rules = RedactionRules(pointers=("/players/*/ssn",), mode="remove")
    data = b'{"players": [{"ssn": "1", "id": 1}, {"ssn": "2", "id": 2}]}'
    assert json.loads(rules.redact_data(data)) == {"players": [{"id": 1}, {"id": 2}]}


def test_unmatched_payload_keeps_exact_bytes():
    """A JSON payload without the field is stored byte for byte."""
    rules = RedactionRules(pointers=("/email",))
    data = b'{ "b": 1.0,  "a": 2 }'
    assert rules.redact_data(data) is data


def test_non_json_payload_unchanged():
    """A payload that is not JSON cannot be addressed and is kept."""
    rules = RedactionRules(pointers=("/email",))
    assert rules.redact_data(b"\xff\x00email") == b"\xff\x00email"


def test_attribute_hashed_and_removed():
    """Configured attribute keys are hashed, or dropped in remove mode."""
    hashed = RedactionRules(attributes=("token",), salt="s").redact_attributes({"token": "t", "k": "v"})
    assert hashed["token"] == "sha256:" + hashlib.sha256(b"st").hexdigest()
    assert hashed["k"] == "v"
    removed = RedactionRules(attributes=("token",), mode="remove").redact_attributes({"token": "t"})
    assert removed == {}


def test_equal_values_hash_equal():
    """Equal values give equal hashes so diffs still match them."""
    rules = RedactionRules(pointers=("/id",), salt="s")
    first = json.loads(rules.redact_data(b'{"id": 42}'))["id"]
    second = json.loads(rules.redact_data(b'{"id": 42, "x": 1}'))["id"]
    assert first == second


def test_from_env_reads_lists():
    """REPLAY_REDACT_* variables configure the rules."""
    rules = RedactionRules.from_env({
        "REPLAY_REDACT_POINTERS": "/a, /b/c",
        "REPLAY_REDACT_ATTRIBUTES": "auth",
        "REPLAY_REDACT_SALT": "x",
        "REPLAY_REDACT_MODE": "remove",
    })
    assert rules.pointers == ("/a", "/b/c")
    assert rules.attributes == ("auth",)
    assert rules.mode == "remove"
    assert rules.salt == "x"


@pytest.mark.parametrize("kwargs", [{"mode": "mask"}, {"pointers": ("email",)}, {"pointers": ("",)}])
def test_bad_rules_rejected(kwargs):
    """Unknown modes and malformed pointers raise ValueError."""
    with pytest.raises(ValueError):
        RedactionRules(**kwargs)
