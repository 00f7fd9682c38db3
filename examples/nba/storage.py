"""Storage paths where the example NBA processors read payloads and write rows and exports.

Everything goes through the archive's storage layer (``recorder._storage``),
so a data root may be a local folder, a ``file://`` URI or ``gs://bucket/prefix``.
The data root comes from ``NBA_DATA_ROOT`` (default ``./nba-data``).

Rows are stored the way the real pipeline's BigQuery tables are named::

    <data root>/<DATASET_PREFIX>nba_raw/<table>/<game_date>/<name>-<sha256[:16]>.json

and exports the way its GCS exports are::

    <data root>/<GCS_PREFIX>exports/<kind>/<game_date>/<name>-<sha256[:16]>.json

The storage layer never overwrites an object, so every object name carries
the digest of its content: writing the same rows twice is a no-op, and
writing different rows makes a new object. Messages carry the object path
relative to the prefixed root (``rows_object``), never the prefix, so a
replay with ``DATASET_PREFIX=test_`` publishes the same messages as
production while writing only under ``test_`` datasets.

Reading resolves a relative object under the prefixed root first and then
under the production root. The digest in the name pins the content, so the
fall-back can only return the exact rows the message names. An isolated
replay of one phase reads production's upstream rows read-only, and a
cascade replay reads what the replayed upstream phase wrote.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Iterable

from recorder._storage import ObjectExistsError, join_uri, open_storage

DATA_ROOT_ENV = "NBA_DATA_ROOT"
DEFAULT_DATA_ROOT = "./nba-data"
DATASET_PREFIX_ENV = "DATASET_PREFIX"
GCS_PREFIX_ENV = "GCS_PREFIX"
DIGEST_NAME_CHARS = 16


class MissingInputDataError(FileNotFoundError):
    """An object a message refers to exists under neither the prefixed nor the production root."""


@dataclasses.dataclass(frozen=True)
class StoredObject:
    """Rows or an export written by a processor.

    ``relative_path`` is the path that messages carry, and ``uri`` is where the
    object was written (under the prefix in force). ``content_sha256`` is the
    digest of the canonical JSON content. ``created`` is false when identical
    content was already there.
    """

    relative_path: str
    uri: str
    record_count: int
    content_sha256: str
    size_bytes: int
    created: bool


def data_root() -> str:
    """Return the data root from ``NBA_DATA_ROOT`` (default ``./nba-data``)."""
    return os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT


def dataset_prefix() -> str:
    """Return ``DATASET_PREFIX`` (empty in production, e.g. ``test_`` in a replay)."""
    return os.environ.get(DATASET_PREFIX_ENV, "")


def gcs_prefix() -> str:
    """Return ``GCS_PREFIX`` (empty in production, e.g. ``test/`` in a replay)."""
    return os.environ.get(GCS_PREFIX_ENV, "")


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` as canonical JSON: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def content_digest(value: Any) -> str:
    """Return the hex SHA-256 of the canonical JSON of ``value``."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


def table_path(dataset: str, table: str, game_date: str, name: str, digest: str) -> str:
    """Return the relative path of a row object (without any prefix)."""
    return f"{dataset}/{table}/{game_date}/{name}-{digest[:DIGEST_NAME_CHARS]}.json"


def export_path(kind: str, game_date: str, name: str, digest: str) -> str:
    """Return the relative path of an export object (without any prefix)."""
    return f"exports/{kind}/{game_date}/{name}-{digest[:DIGEST_NAME_CHARS]}.json"


def _write_object(prefixed_relative: str, relative_path: str, content: Any, record_count: int) -> StoredObject:
    digest = content_digest(content)
    payload = canonical_json(content)
    root = data_root()
    uri = join_uri(root, prefixed_relative)
    storage = open_storage(root)
    created = True
    try:
        storage.write_new(uri, payload)
    except ObjectExistsError:
        # Same name means same digest, so the content is already there.
        created = False
    return StoredObject(
        relative_path=relative_path,
        uri=uri,
        record_count=record_count,
        content_sha256=digest,
        size_bytes=len(payload),
        created=created,
    )


def write_rows(*, dataset: str, table: str, game_date: str, name: str, rows: list[dict]) -> StoredObject:
    """Write ``rows`` as one object of ``dataset.table`` under ``DATASET_PREFIX``."""
    relative = table_path(dataset, table, game_date, name, content_digest(rows))
    return _write_object(dataset_prefix() + relative, relative, rows, len(rows))


def write_game_rows(*, dataset: str, table: str, trigger: dict, rows: list[dict]) -> StoredObject:
    """Write one game's ``rows``, named by the ``game_date`` and ``game_id`` of its ``trigger``."""
    return write_rows(dataset=dataset, table=table, game_date=trigger["game_date"], name=trigger["game_id"], rows=rows)


def write_export(*, kind: str, game_date: str, name: str, document: dict) -> StoredObject:
    """Write an export document under ``GCS_PREFIX``."""
    relative = export_path(kind, game_date, name, content_digest(document))
    records = len(document.get("players", ())) if isinstance(document, dict) else 0
    return _write_object(gcs_prefix() + relative, relative, document, records)


def read_json_uri(uri: str) -> Any:
    """Read and decode one JSON object by full URI (e.g. a scraper payload)."""
    storage = open_storage(uri)
    if not storage.exists(uri):
        raise MissingInputDataError(f"input object {uri!r} does not exist; check the message's gcs_path")
    raw = storage.read_bytes(uri)
    try:
        return json.loads(raw)
    except ValueError as error:
        raise ValueError(f"input object {uri!r} is not valid JSON: {error}") from error


def read_rows(relative_path: str) -> Any:
    """Read a row object named in a message, under the prefixed root, else the production root."""
    if not isinstance(relative_path, str) or not relative_path or relative_path.startswith("/"):
        raise ValueError(f"rows_object {relative_path!r} is not a relative object path such as 'nba_raw/<table>/...'")
    return _read_relative([dataset_prefix() + relative_path, relative_path])


def _read_relative(candidates: Iterable[str]) -> Any:
    root = data_root()
    storage = open_storage(root)
    tried = []
    for relative in dict.fromkeys(candidates):
        uri = join_uri(root, relative)
        tried.append(uri)
        if storage.exists(uri):
            return json.loads(storage.read_bytes(uri))
    raise MissingInputDataError(
        f"rows object not found at {' or '.join(repr(uri) for uri in tried)}; "
        f"check {DATA_ROOT_ENV} and that the upstream phase wrote it"
    )
