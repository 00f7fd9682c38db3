"""Loads ``recorded_event.avsc`` and derives the reader schema from it."""

import copy
import json
from pathlib import Path
from typing import Any

import fastavro

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("recorded_event.avsc")


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    """Return the schema at ``path`` as a JSON document (not yet parsed)."""
    with open(path, encoding="utf-8") as schema_file:
        return json.load(schema_file)


def _without_logical_types(node: Any) -> Any:
    # Schema resolution ignores logicalType annotations, so the reader can drop
    # them and receive the raw long/int: exact microseconds and epoch days.
    if isinstance(node, dict):
        return {
            key: _without_logical_types(value)
            for key, value in node.items()
            if key != "logicalType"
        }
    if isinstance(node, list):
        return [_without_logical_types(item) for item in node]
    return node


RECORDED_EVENT_SCHEMA = fastavro.parse_schema(load_schema())
READER_SCHEMA = fastavro.parse_schema(_without_logical_types(copy.deepcopy(load_schema())))
