"""Phase 6 export: one JSON file per game under ``GCS_PREFIX``, then a completion message.

:func:`process_export` handles one ``nba-phase6-export-trigger`` (published by
phase 5 when a game's predictions are stored): it reads the prediction rows,
writes ``exports/predictions/<game_date>/<game_id>-<sha256[:16]>.json`` under
``GCS_PREFIX`` and publishes ``nba-phase6-export-complete``.
"""

from __future__ import annotations

from examples.nba import storage
from examples.nba._messages import TOPIC_PHASE6_COMPLETE, HandlingClock, publish_message, stored_output_message

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
    document = export_document(trigger, storage.read_rows(trigger["rows_object"]))
    written = storage.write_export(kind=EXPORT_KIND, game_date=trigger["game_date"], name=trigger["game_id"],
                                   document=document)
    done = stored_output_message(
        trigger=trigger, stored=written, event_type="export_complete", processor_name=PROCESSOR_NAME,
        id_prefix="export", clock=clock, object_field="export_path", metadata={"size_bytes": written.size_bytes},
    )
    publish_message(ctx, TOPIC_PHASE6_COMPLETE, done)
