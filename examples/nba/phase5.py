"""Phase 5 predictions: points, rebounds and assists per player, by a fixed formula.

:func:`process_predictions` handles one ``nba-phase4-precompute-complete``
message (one game): it reads the game's player features, predicts each player
who played, writes ``nba_predictions.player_prop_predictions`` under
``DATASET_PREFIX``, publishes one ``nba-phase5-predictions-complete``
message per player (matched in a diff by ``/game_date`` + ``/player_id``) and
then one ``nba-phase6-export-trigger`` for the game.

The formula shrinks each per-minute rate towards a league rate with a few
pseudo-minutes and multiplies it by projected minutes, so low-minute
outliers do not dominate. :class:`PredictionModel` contains every coefficient,
and :func:`make_prediction_processor` builds a processor for another model.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

from examples.nba import storage
from examples.nba._messages import (
    TOPIC_PHASE5_COMPLETE,
    TOPIC_PHASE6_TRIGGER,
    HandlingClock,
    completion_message,
    execution_id,
    publish_message,
    stored_output_message,
)

PREDICTIONS_DATASET = "nba_predictions"
PREDICTIONS_TABLE = "player_prop_predictions"
PROCESSOR_NAME = "PredictionCoordinator"


@dataclasses.dataclass(frozen=True)
class PredictionModel:
    """Coefficients of the prediction formula (rates are per minute)."""

    version: str = "v1"
    league_points_per_min: float = 0.48
    league_rebounds_per_min: float = 0.18
    league_assists_per_min: float = 0.11
    prior_minutes: float = 12.0
    minutes_anchor: float = 24.0
    minutes_anchor_weight: float = 0.25
    min_projected_minutes: float = 6.0
    max_projected_minutes: float = 40.0


DEFAULT_MODEL = PredictionModel()


def _shrunk_rate(total: float, minutes: float, league_rate: float, prior_minutes: float) -> float:
    return (total + league_rate * prior_minutes) / (minutes + prior_minutes)


def predict_player(features: Mapping[str, Any], model: PredictionModel = DEFAULT_MODEL) -> dict[str, Any]:
    """Predict one player's points, rebounds and assists from their feature row."""
    minutes = features["avg_minutes"]
    projected = minutes * (1 - model.minutes_anchor_weight) + model.minutes_anchor * model.minutes_anchor_weight
    projected = min(max(projected, model.min_projected_minutes), model.max_projected_minutes)
    predictions = {}
    for stat, league_rate in (
        ("points", model.league_points_per_min),
        ("rebounds", model.league_rebounds_per_min),
        ("assists", model.league_assists_per_min),
    ):
        rate = _shrunk_rate(features[f"avg_{stat}"], minutes, league_rate, model.prior_minutes)
        predictions[f"predicted_{stat}"] = round(projected * rate, 2)
    return {"projected_minutes": round(projected, 2), **predictions}


def predict_game(feature_rows: Sequence[Mapping[str, Any]], model: PredictionModel = DEFAULT_MODEL) -> list[dict[str, Any]]:
    """Return one prediction row per player who played, sorted by team and player id."""
    rows = []
    for features in feature_rows:
        if features["games_played"] == 0:
            continue
        rows.append({
            "game_id": features["game_id"],
            "game_date": features["game_date"],
            "player_id": features["player_id"],
            "player_name": features["player_name"],
            "team_abbr": features["team_abbr"],
            "opponent_abbr": features["opponent_abbr"],
            "model_version": model.version,
            **predict_player(features, model),
        })
    rows.sort(key=lambda row: (row["team_abbr"], row["player_id"]))
    return rows


def make_prediction_processor(model: PredictionModel = DEFAULT_MODEL) -> Callable[..., None]:
    """Build a phase 5 processor that predicts with ``model``."""

    def process(message, ctx) -> None:
        clock = HandlingClock()
        features_done = message.json()
        game_date, game_id = features_done["game_date"], features_done["game_id"]
        predictions = predict_game(storage.read_rows(features_done["rows_object"]), model)
        written = storage.write_game_rows(dataset=PREDICTIONS_DATASET, table=PREDICTIONS_TABLE,
                                          trigger=features_done, rows=predictions)
        correlation_id = features_done.get("correlation_id")
        for row in predictions:
            player_message = completion_message(
                event_type="player_prediction",
                processor_name=PROCESSOR_NAME,
                execution_id=execution_id("pred", PROCESSOR_NAME, game_date, game_id, row["player_id"]),
                correlation_id=correlation_id,
                game_date=game_date,
                game_ids=[game_id],
                record_count=1,
                clock=clock,
                **{key: value for key, value in row.items() if key not in ("game_date",)},
            )
            publish_message(ctx, TOPIC_PHASE5_COMPLETE, player_message)
        summary = stored_output_message(
            trigger=features_done, stored=written, event_type="predictions_complete", processor_name=PROCESSOR_NAME,
            id_prefix="pred", clock=clock, model_version=model.version,
            target_table=f"{PREDICTIONS_DATASET}.{PREDICTIONS_TABLE}",
        )
        publish_message(ctx, TOPIC_PHASE6_TRIGGER, summary)

    process.__doc__ = f"Predict one game's players with model {model.version!r} and publish per player."
    return process


process_predictions = make_prediction_processor(DEFAULT_MODEL)
