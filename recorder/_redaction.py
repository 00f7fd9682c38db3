"""Redaction of payload fields and attributes before anything is stored.

``RedactionRules`` names JSON pointers into JSON payloads (``*`` matches every
key or array index at that level, e.g. ``/players/*/email``) and attribute
keys. A matched value is either removed or replaced by
``sha256:<hex>``, the SHA-256 of the salt followed by the value (strings as
their UTF-8 text, anything else as compact JSON), so equal values still match
each other in a diff without revealing what they were.

Payloads that are not JSON are stored unchanged: pointers cannot address
them. Request headers never reach the recorder, so they need no rule.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Mapping

from schemas import split_pointer

REDACTION_MODES = ("hash", "remove")


@dataclasses.dataclass(frozen=True)
class RedactionRules:
    """Which payload fields and attributes to redact, and how.

    ``pointers``: JSON pointers into JSON payloads; ``attributes``: attribute
    keys; ``mode``: ``hash`` (salted SHA-256) or ``remove``; ``salt``: text
    prefixed to every hashed value, so hashes cannot be looked up in a table of
    common values.
    """

    pointers: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()
    mode: str = "hash"
    salt: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "pointers", tuple(self.pointers))
        object.__setattr__(self, "attributes", tuple(self.attributes))
        if self.mode not in REDACTION_MODES:
            raise ValueError(
                f"redaction mode {self.mode!r} is not one of {', '.join(REDACTION_MODES)}; "
                "set REPLAY_REDACT_MODE or the 'mode' argument to hash or remove"
            )
        for pointer in self.pointers:
            try:
                parts = split_pointer(pointer)
            except ValueError as error:
                raise ValueError(f"redaction pointer {pointer!r} is invalid: {error}") from error
            if not parts:
                raise ValueError(
                    "redaction pointer '' would redact the whole payload; name a field, e.g. '/email'"
                )
        object.__setattr__(self, "_split", tuple(split_pointer(p) for p in self.pointers))
        object.__setattr__(self, "_attribute_keys", frozenset(self.attributes))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "RedactionRules":
        """Build rules from ``REPLAY_REDACT_POINTERS``/``_ATTRIBUTES`` (comma-separated), ``_MODE``, ``_SALT``."""
        env = os.environ if environ is None else environ
        return cls(
            pointers=_split_list(env.get("REPLAY_REDACT_POINTERS", "")),
            attributes=_split_list(env.get("REPLAY_REDACT_ATTRIBUTES", "")),
            mode=env.get("REPLAY_REDACT_MODE", "hash") or "hash",
            salt=env.get("REPLAY_REDACT_SALT", ""),
        )

    @property
    def active(self) -> bool:
        """True when at least one pointer or attribute is configured."""
        return bool(self.pointers or self.attributes)

    def hash_value(self, value: Any) -> str:
        """Return ``sha256:<hex>`` of the salt followed by ``value``."""
        if isinstance(value, str):
            text = value
        else:
            text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        digest = hashlib.sha256((self.salt + text).encode("utf-8")).hexdigest()
        return f"sha256:{digest}"

    def redact_attributes(self, attributes: Mapping[str, str]) -> dict[str, str]:
        """Return a copy of ``attributes`` with the configured keys redacted."""
        keys = self._attribute_keys  # type: ignore[attr-defined]
        if not keys or not keys.intersection(attributes):
            return dict(attributes)
        redacted: dict[str, str] = {}
        for key, value in attributes.items():
            if key not in keys:
                redacted[key] = value
            elif self.mode == "hash":
                redacted[key] = self.hash_value(value)
        return redacted

    def redact_data(self, data: bytes) -> bytes:
        """Return ``data`` with the configured pointers redacted (unchanged unless JSON and matched)."""
        if not self.pointers or data[:1] not in (b"{", b"["):
            return data
        try:
            document = json.loads(data)
        except ValueError:
            return data
        changed = False
        for parts in self._split:  # type: ignore[attr-defined]
            changed = self._redact_path(document, list(parts)) or changed
        if not changed:
            # Unmatched payloads keep their exact bytes: re-serialising would
            # change key order, spacing and number formats for no reason.
            return data
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def apply(self, data: bytes, attributes: Mapping[str, str]) -> tuple[bytes, dict[str, str]]:
        """Return ``(data, attributes)`` redacted by these rules."""
        return self.redact_data(data), self.redact_attributes(attributes)

    def _redact_path(self, node: Any, parts: list[str]) -> bool:
        head, rest = parts[0], parts[1:]
        if isinstance(node, dict):
            if head == "*":
                keys = list(node)
            elif head in node:
                keys = [head]
            else:
                keys = []
        elif isinstance(node, list):
            if head == "*":
                keys = list(range(len(node)))
            elif head.isdigit() and int(head) < len(node):
                keys = [int(head)]
            else:
                keys = []
        else:
            return False
        changed = False
        # Iterate in reverse so removing list items keeps the remaining indices valid.
        for key in reversed(keys):
            if rest:
                changed = self._redact_path(node[key], rest) or changed
            elif self.mode == "remove":
                del node[key]
                changed = True
            else:
                node[key] = self.hash_value(node[key])
                changed = True
        return changed


def _split_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


NO_REDACTION = RedactionRules()
