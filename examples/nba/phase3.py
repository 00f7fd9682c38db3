"""Phase 3 analytics: per game player and team summaries from the raw rows.

:func:`summarize_game` reads the raw rows a ``nba-phase3-trigger`` names. It
builds ``nba_analytics.player_game_summary``, one row per player line with
minutes as float, and ``nba_analytics.team_game_summary``, one row per team
with box score totals checked against NBA.com's line score. It writes both
under ``DATASET_PREFIX`` and returns the two ``nba-phase3-analytics-complete``
messages. The Flask service in :mod:`examples.nba.phase3_app` publishes them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from examples.nba import storage
from examples.nba._messages import HandlingClock, stored_output_message
from examples.nba.orchestrators import PLAYER_SUMMARY_PROCESSOR_NAME, TEAM_SUMMARY_PROCESSOR_NAME

ANALYTICS_DATASET = "nba_analytics"
PLAYER_TABLE = "player_game_summary"
TEAM_TABLE = "team_game_summary"


class MinutesFormatError(ValueError):
    """A ``min`` value is neither ``MM`` nor ``MM:SS``."""


def parse_minutes(value: Any) -> float:
    """Convert BallDontLie's ``min`` string (``"28"``, ``"00"``, ``"32:15"``, empty) to float minutes."""
    if value is None or value == "":
        return 0.0
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    minutes_text, _, seconds_text = text.partition(":")
    try:
        minutes = int(minutes_text)
        seconds = int(seconds_text) if seconds_text else 0
    except ValueError as error:
        raise MinutesFormatError(f"minutes value {value!r} is not 'MM' or 'MM:SS'") from error
    if minutes < 0 or not 0 <= seconds < 60:
        raise MinutesFormatError(f"minutes value {value!r} is out of range")
    return round(minutes + seconds / 60.0, 4)


def true_shooting_pct(points: int, fga: int, fta: int) -> float | None:
    """Return points / (2 * (FGA + 0.44 * FTA)), or None without attempts."""
    attempts = 2.0 * (fga + 0.44 * fta)
    return round(points / attempts, 4) if attempts else None


def player_game_summaries(box_rows: Sequence[Mapping[str, Any]], game: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Build one summary row per player line of ``game`` (a scoreboard row)."""
    team_points = {game["home_team_abbr"]: game["home_pts"], game["visitor_team_abbr"]: game["visitor_pts"]}
    rows = []
    for line in box_rows:
        if line["game_code"] != game["game_code"]:
            continue
        minutes = parse_minutes(line["min"])
        points = line["pts"] or 0
        own, other = team_points.get(line["team_abbr"]), team_points.get(line["opponent_abbr"])
        rows.append({
            "game_id": game["game_id"],
            "game_date": line["game_date"],
            "player_id": line["player_id"],
            "player_name": line["player_name"],
            "team_abbr": line["team_abbr"],
            "opponent_abbr": line["opponent_abbr"],
            "is_home": line["is_home"],
            "played": minutes > 0,
            "minutes": minutes,
            "points": points,
            "rebounds": line["reb"] or 0,
            "offensive_rebounds": line["oreb"] or 0,
            "defensive_rebounds": line["dreb"] or 0,
            "assists": line["ast"] or 0,
            "steals": line["stl"] or 0,
            "blocks": line["blk"] or 0,
            "turnovers": line["turnover"] or 0,
            "personal_fouls": line["pf"] or 0,
            "fgm": line["fgm"] or 0,
            "fga": line["fga"] or 0,
            "fg3m": line["fg3m"] or 0,
            "fg3a": line["fg3a"] or 0,
            "ftm": line["ftm"] or 0,
            "fta": line["fta"] or 0,
            "true_shooting_pct": true_shooting_pct(points, line["fga"] or 0, line["fta"] or 0),
            "team_won": None if own is None or other is None else own > other,
        })
    rows.sort(key=lambda row: (row["team_abbr"], row["player_id"]))
    return rows


def team_game_summaries(player_rows: Sequence[Mapping[str, Any]], game: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Build one row per team of ``game``: box score totals next to the line score."""
    rows = []
    for side, other in (("home", "visitor"), ("visitor", "home")):
        abbr = game[f"{side}_team_abbr"]
        lines = [row for row in player_rows if row["team_abbr"] == abbr]
        box_points = sum(row["points"] for row in lines)
        line = game[f"{side}_line"]
        fga = sum(row["fga"] for row in lines)
        rows.append({
            "game_id": game["game_id"],
            "game_date": game["game_date"],
            "team_abbr": abbr,
            "opponent_abbr": game[f"{other}_team_abbr"],
            "is_home": side == "home",
            "points": game[f"{side}_pts"],
            "opponent_points": game[f"{other}_pts"],
            "won": game[f"{side}_pts"] > game[f"{other}_pts"],
            "quarter_points": line["quarters"],
            "overtime_periods": len(line["overtime_periods"]),
            "box_score_points": box_points,
            "points_match_line_score": box_points == game[f"{side}_pts"],
            "players_used": sum(1 for row in lines if row["played"]),
            "rebounds": sum(row["rebounds"] for row in lines),
            "assists": sum(row["assists"] for row in lines),
            "turnovers": sum(row["turnovers"] for row in lines),
            "fg_pct": round(sum(row["fgm"] for row in lines) / fga, 4) if fga else None,
        })
    return rows


@dataclasses.dataclass(frozen=True)
class GameSummaries:
    """Phase 3 output for one game: the rows and the two completion messages."""

    player_rows: list[dict[str, Any]]
    team_rows: list[dict[str, Any]]
    messages: tuple[dict[str, Any], dict[str, Any]]


def _find_game(scoreboard_rows: Sequence[Mapping[str, Any]], game_id: str) -> Mapping[str, Any]:
    for row in scoreboard_rows:
        if row["game_id"] == game_id:
            return row
    raise storage.MissingInputDataError(f"game {game_id!r} is not in the scoreboard rows the trigger names")


def summarize_game(trigger: Mapping[str, Any]) -> GameSummaries:
    """Compute, write and describe both phase 3 tables for the game of one trigger."""
    clock = HandlingClock()
    game_id = trigger["game_id"]
    upstream = trigger["upstream"]
    box_rows = storage.read_rows(upstream["nba_raw.bdl_player_boxscores"]["rows_object"])
    game = _find_game(storage.read_rows(upstream["nba_raw.nbac_scoreboard_games"]["rows_object"]), game_id)

    player_rows = player_game_summaries(box_rows, game)
    team_rows = team_game_summaries(player_rows, game)
    stored = {
        PLAYER_SUMMARY_PROCESSOR_NAME: (PLAYER_TABLE, player_rows),
        TEAM_SUMMARY_PROCESSOR_NAME: (TEAM_TABLE, team_rows),
    }
    messages = []
    for processor_name, (table, rows) in stored.items():
        written = storage.write_game_rows(dataset=ANALYTICS_DATASET, table=table, trigger=trigger, rows=rows)
        messages.append(stored_output_message(
            trigger=trigger,
            stored=written,
            event_type="analytics_complete",
            processor_name=processor_name,
            id_prefix="analytics",
            clock=clock,
            target_table=f"{ANALYTICS_DATASET}.{table}",
            dependencies_met=True,
            affected_entities={
                "players": [str(row["player_id"]) for row in player_rows] if table == PLAYER_TABLE else [],
                "teams": [row["team_abbr"] for row in team_rows],
                "games": [game_id],
            },
            metadata={
                "rows_upserted": written.record_count,
                "dependencies_checked": sorted(upstream),
            },
        ))
    return GameSummaries(player_rows=player_rows, team_rows=team_rows, messages=tuple(messages))
