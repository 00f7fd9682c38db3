"""Phase messages of the example NBA pipeline: topics, fields, ids and timestamps.

Messages follow the real pipeline's shape: ``event_type``, ``processor_name``,
``game_date``, ``game_ids``, ``record_count``, ``status``, ``correlation_id``,
``timestamp``, ``execution_id`` and ``metadata.duration_seconds``.

``timestamp`` is read from the clock when handling starts, so a replay with
the recorded clock reproduces it for the phase that receives recorded input.
``execution_id`` is derived from the processor and what it handled, so it is
the same on every run. ``metadata.duration_seconds`` is measured and differs
on every run, so the example's diff rules ignore it.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Iterable


from schemas import micros_to_rfc3339, now_micros

TOPIC_PHASE1_COMPLETE = "nba-phase1-scrapers-complete"
TOPIC_PHASE2_COMPLETE = "nba-phase2-raw-complete"
TOPIC_PHASE3_TRIGGER = "nba-phase3-trigger"
TOPIC_PHASE3_COMPLETE = "nba-phase3-analytics-complete"
TOPIC_PHASE4_TRIGGER = "nba-phase4-trigger"
TOPIC_PHASE4_COMPLETE = "nba-phase4-precompute-complete"
TOPIC_PHASE5_COMPLETE = "nba-phase5-predictions-complete"
TOPIC_PHASE6_TRIGGER = "nba-phase6-export-trigger"
TOPIC_PHASE6_COMPLETE = "nba-phase6-export-complete"

TOPICS = (
    TOPIC_PHASE1_COMPLETE,
    TOPIC_PHASE2_COMPLETE,
    TOPIC_PHASE3_TRIGGER,
    TOPIC_PHASE3_COMPLETE,
    TOPIC_PHASE4_TRIGGER,
    TOPIC_PHASE4_COMPLETE,
    TOPIC_PHASE5_COMPLETE,
    TOPIC_PHASE6_TRIGGER,
    TOPIC_PHASE6_COMPLETE,
)

STATUS_SUCCESS = "success"
STATUS_FAILED = "failed"


class HandlingClock:
    """The clock readings of one handling: start time for ``timestamp``, elapsed for duration."""

    def __init__(self) -> None:
        self.started_micros = now_micros()
        self._started_counter = time.perf_counter()

    @property
    def timestamp(self) -> str:
        """The handling start as RFC 3339 UTC with whole seconds, like the real messages."""
        return micros_to_rfc3339(self.started_micros - self.started_micros % 1_000_000).replace(".000000Z", "Z")

    def duration_secs(self) -> float:
        """Seconds since the handling started, rounded to milliseconds."""
        return round(time.perf_counter() - self._started_counter, 3)


def execution_id(prefix: str, *parts: Any) -> str:
    """Return a deterministic execution id such as ``analytics_3f9a1c2b7d10``."""
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode("utf-8")).hexdigest()
    return f"{prefix}_{digest[:12]}"


def sorted_unique(values: Iterable[Any]) -> list:
    """Return the distinct values in sorted order (stable message content)."""
    return sorted(set(values))


def completion_message(
    *,
    event_type: str,
    processor_name: str,
    execution_id: str,
    correlation_id: str | None,
    game_date: str,
    game_ids: list[str],
    record_count: int,
    clock: HandlingClock,
    status: str = STATUS_SUCCESS,
    metadata: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Build a phase message in the real pipeline's shape; ``fields`` are added as they are."""
    message: dict[str, Any] = {
        "event_type": event_type,
        "processor_name": processor_name,
        "execution_id": execution_id,
        "correlation_id": correlation_id,
        "game_date": game_date,
        "game_ids": list(game_ids),
        "record_count": record_count,
        "status": status,
        "timestamp": clock.timestamp,
    }
    message.update(fields)
    message["metadata"] = {"duration_seconds": clock.duration_secs(), **(metadata or {})}
    return message


def message_attributes(message: dict[str, Any]) -> dict[str, str]:
    """Return the Pub/Sub attributes every example message carries (for filters and dates)."""
    attributes = {"event_type": str(message["event_type"]), "game_date": str(message["game_date"])}
    if message.get("processor_name"):
        attributes["processor_name"] = str(message["processor_name"])
    return attributes


def stored_output_message(
    *,
    trigger: dict[str, Any],
    stored: Any,
    event_type: str,
    processor_name: str,
    id_prefix: str,
    clock: HandlingClock,
    object_field: str = "rows_object",
    metadata: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Build the completion message of one game's stored rows or export.

    ``trigger`` is the message that names the game (``game_date``,
    ``game_id``, ``correlation_id``); ``stored`` is the
    :class:`examples.nba.storage.StoredObject` written for it. The message
    carries its row count, its object path under ``object_field`` and its
    content digest, so a diff of the messages catches any change in the rows.
    """
    game_date, game_id = trigger["game_date"], trigger["game_id"]
    return completion_message(
        event_type=event_type,
        processor_name=processor_name,
        execution_id=execution_id(id_prefix, processor_name, game_date, game_id),
        correlation_id=trigger.get("correlation_id"),
        game_date=game_date,
        game_ids=[game_id],
        record_count=stored.record_count,
        clock=clock,
        metadata=metadata,
        game_id=game_id,
        **{object_field: stored.relative_path},
        content_sha256=stored.content_sha256,
        **fields,
    )


def publish_message(ctx: Any, topic: str, message: dict[str, Any]) -> str:
    """Publish ``message`` as JSON with the attributes every example message carries."""
    return ctx.publish(topic, message, **message_attributes(message))

