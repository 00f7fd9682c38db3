"""Phase 6 export: one JSON file per game under ``GCS_PREFIX``, then a completion message.

:func:`process_export` handles one ``nba-phase6-export-trigger`` (published by
phase 5 when a game's predictions are stored): it reads the prediction rows,
writes ``exports/predictions/<game_date>/<game_id>-<sha256[:16]>.json`` under
``GCS_PREFIX`` and publishes ``nba-phase6-export-complete``.
"""

from __future__ import annotations

from examples.nba import storage
from examples.nba._messages import (
    TOPIC_PHASE6_COMPLETE,
    HandlingClock,
    completion_message,
    execution_id,
    message_attributes,
)

PROCESSOR_NAME = "PredictionsExporter"
EXPORT_KIND = "predictions"


def export_document(trigger: dict, predictions: list[dict]) -> dict:
    """Build the exported JSON document of one game's predictions."""
    return {
        "game_date": trigger["game_date"],
        "game_id": trigger["game_id"],
        "model_version": trigger.get("model_version"),
        "players": [
            {
                "player_id": row["player_id"],
                "player_name": row["player_name"],
                "team": row["team_abbr"],
                "opponent": row["opponent_abbr"],
                "minutes": row["projected_minutes"],
                "points": row["predicted_points"],
                "rebounds": row["predicted_rebounds"],
                "assists": row["predicted_assists"],
            }
            for row in predictions
        ],
    }


def process_export(message, ctx) -> None:
    """Export one game's predictions and publish ``nba-phase6-export-complete``."""
    clock = HandlingClock()
    trigger = message.json()
    game_date, game_id = trigger["game_date"], trigger["game_id"]
    document = export_document(trigger, storage.read_rows(trigger["rows_object"]))
    written = storage.write_export(kind=EXPORT_KIND, game_date=game_date, name=game_id, document=document)
    done = completion_message(
        event_type="export_complete",
        processor_name=PROCESSOR_NAME,
        execution_id=execution_id("export", PROCESSOR_NAME, game_date, game_id),
        correlation_id=trigger.get("correlation_id"),
        game_date=game_date,
        game_ids=[game_id],
        record_count=written.record_count,
        clock=clock,
        game_id=game_id,
        export_path=written.relative_path,
        content_sha256=written.content_sha256,
        metadata={"size_bytes": written.size_bytes},
    )
    ctx.publish(TOPIC_PHASE6_COMPLETE, done, **message_attributes(done))
