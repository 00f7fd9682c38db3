"""Phase 4 precompute: per-player features for one game from the phase 3 summaries.

:func:`process_player_features` handles one ``nba-phase4-trigger``: it reads
the ``player_game_summary`` rows the trigger names, computes each player's
averages over the games available in them (one per player for a single game
date) and per-36-minute rates, writes ``nba_precompute.player_game_features``
under ``DATASET_PREFIX`` and publishes ``nba-phase4-precompute-complete``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping, Sequence

from examples.nba import storage
from examples.nba._messages import TOPIC_PHASE4_COMPLETE, HandlingClock, publish_message, stored_output_message

PRECOMPUTE_DATASET = "nba_precompute"
FEATURES_TABLE = "player_game_features"
PROCESSOR_NAME = "PlayerGameFeaturesProcessor"
PER_MINUTES = 36.0


def _average(values: Sequence[float]) -> float:
    return round(sum(values) / len(values), 4) if values else 0.0


def _per36(total: float, minutes: float) -> float:
    return round(total * PER_MINUTES / minutes, 4) if minutes > 0 else 0.0


def player_features(summary_rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Compute one feature row per player over the games in ``summary_rows``."""
    games_by_player: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for row in summary_rows:
        games_by_player[row["player_id"]].append(row)
    features = []
    for player_id, games in games_by_player.items():
        games = sorted(games, key=lambda row: (row["game_date"], row["game_id"]))
        played = [row for row in games if row["played"]]
        minutes_total = sum(row["minutes"] for row in played)
        latest = games[-1]
        features.append({
            "game_id": latest["game_id"],
            "game_date": latest["game_date"],
            "player_id": player_id,
            "player_name": latest["player_name"],
            "team_abbr": latest["team_abbr"],
            "opponent_abbr": latest["opponent_abbr"],
            "games_available": len(games),
            "games_played": len(played),
            "avg_minutes": _average([row["minutes"] for row in played]),
            "avg_points": _average([row["points"] for row in played]),
            "avg_rebounds": _average([row["rebounds"] for row in played]),
            "avg_assists": _average([row["assists"] for row in played]),
            "points_per36": _per36(sum(row["points"] for row in played), minutes_total),
            "rebounds_per36": _per36(sum(row["rebounds"] for row in played), minutes_total),
            "assists_per36": _per36(sum(row["assists"] for row in played), minutes_total),
            "usage_per36": _per36(
                sum(row["fga"] + 0.44 * row["fta"] + row["turnovers"] for row in played), minutes_total
            ),
            "true_shooting_pct": latest["true_shooting_pct"],
        })
    features.sort(key=lambda row: (row["team_abbr"], row["player_id"]))
    return features


def process_player_features(message, ctx) -> None:
    """Compute and store the features of one game's players; publish the completion."""
    clock = HandlingClock()
    trigger = message.json()
    summaries = storage.read_rows(trigger["upstream"]["nba_analytics.player_game_summary"]["rows_object"])
    written = storage.write_game_rows(dataset=PRECOMPUTE_DATASET, table=FEATURES_TABLE, trigger=trigger,
                                      rows=player_features(summaries))
    done = stored_output_message(
        trigger=trigger, stored=written, event_type="precompute_complete", processor_name=PROCESSOR_NAME,
        id_prefix="precompute", clock=clock, metadata={"rows_upserted": written.record_count},
        target_table=f"{PRECOMPUTE_DATASET}.{FEATURES_TABLE}",
    )
    publish_message(ctx, TOPIC_PHASE4_COMPLETE, done)
