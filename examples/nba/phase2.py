"""Phase 2 raw processors: scraper payloads in, ``nba_raw`` rows and a completion message out.

Each processor handles one ``nba-phase1-scrapers-complete`` message and reads
the scraper payload its ``gcs_path`` (or ``source_uri``) names. It parses the
payload into rows and writes them under ``DATASET_PREFIX`` + ``nba_raw``. Then
it publishes ``nba-phase2-raw-complete`` with the row count, the rows' SHA-256
and the games, teams and players they cover.

* :func:`process_bdl_boxscores`: BallDontLie ``box_scores`` (one entry per
  game with nested teams and player lines) into ``nba_raw.bdl_player_boxscores``,
  one row per player line. BallDontLie has no NBA.com game id, so rows carry
  the game code ``YYYYMMDD/<visitor><home>`` that NBA.com's ``GAMECODE`` uses.
* :func:`process_nbac_scoreboard`: NBA.com ``scoreboardV2`` (``resultSets``
  of ``headers`` + ``rowSet``) into ``nba_raw.nbac_scoreboard_games``, one row
  per game with both teams' line scores.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from examples.nba import storage
from recorder._logging import get_logger
from examples.nba._messages import (
    STATUS_FAILED,
    STATUS_SUCCESS,
    TOPIC_PHASE2_COMPLETE,
    HandlingClock,
    completion_message,
    execution_id,
    publish_message,
    sorted_unique,
)

log = get_logger(__name__)

BDL_PROCESSOR_NAME = "BdlBoxScoresProcessor"
NBAC_PROCESSOR_NAME = "NbacScoreboardV2Processor"
PHASE2_PROCESSOR_NAMES = (BDL_PROCESSOR_NAME, NBAC_PROCESSOR_NAME)
BDL_TABLE = "bdl_player_boxscores"
NBAC_TABLE = "nbac_scoreboard_games"
RAW_DATASET = "nba_raw"

_BDL_STAT_FIELDS = (
    "fgm", "fga", "fg_pct", "fg3m", "fg3a", "fg3_pct", "ftm", "fta", "ft_pct",
    "oreb", "dreb", "reb", "ast", "stl", "blk", "turnover", "pf", "pts",
)


class PayloadFormatError(ValueError):
    """A scraper payload does not have the structure its parser expects."""


def game_code(game_date: str, visitor_abbr: str, home_abbr: str) -> str:
    """Return NBA.com's game code, e.g. ``20240115/HOUPHI`` (visitor first)."""
    return f"{game_date.replace('-', '')}/{visitor_abbr}{home_abbr}"


def parse_bdl_box_scores(payload: Mapping[str, Any], *, game_date: str) -> list[dict[str, Any]]:
    """Parse a BallDontLie ``box_scores`` response into one row per player line."""
    games = payload.get("data") if isinstance(payload, Mapping) else None
    if not isinstance(games, list):
        raise PayloadFormatError("BallDontLie box scores payload has no 'data' list of games")
    rows = []
    for index, game in enumerate(games):
        try:
            home, visitor = game["home_team"], game["visitor_team"]
            code = game_code(game.get("date") or game_date, visitor["abbreviation"], home["abbreviation"])
            for side, team, opponent in (("home", home, visitor), ("visitor", visitor, home)):
                for line in team["players"]:
                    rows.append(_bdl_player_row(game, code, side, team, opponent, line, game_date))
        except (KeyError, TypeError) as error:
            raise PayloadFormatError(
                f"BallDontLie box scores game at data[{index}] is missing field {error}"
            ) from error
    rows.sort(key=lambda row: (row["game_code"], row["team_abbr"], row["player_id"]))
    return rows


def _bdl_player_row(game, code, side, team, opponent, line, game_date) -> dict[str, Any]:
    player = line["player"]
    row = {
        "game_date": game_date,
        "game_code": code,
        "season": game.get("season"),
        "game_status": game.get("status"),
        "is_home": side == "home",
        "team_abbr": team["abbreviation"],
        "bdl_team_id": team["id"],
        "opponent_abbr": opponent["abbreviation"],
        "player_id": player["id"],
        "player_name": f"{player.get('first_name', '')} {player.get('last_name', '')}".strip(),
        "position": player.get("position") or None,
        "min": line.get("min"),
    }
    for field in _BDL_STAT_FIELDS:
        row[field] = line.get(field)
    return row


def _result_set_rows(payload: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    for result_set in payload.get("resultSets") or ():
        if result_set.get("name") == name:
            headers = result_set["headers"]
            return [dict(zip(headers, values)) for values in result_set["rowSet"]]
    raise PayloadFormatError(f"NBA.com scoreboardV2 payload has no result set named {name!r}")


def parse_scoreboard_v2(payload: Mapping[str, Any], *, game_date: str) -> list[dict[str, Any]]:
    """Parse an NBA.com ``scoreboardV2`` response into one row per game with both line scores."""
    if not isinstance(payload, Mapping):
        raise PayloadFormatError("NBA.com scoreboardV2 payload is not a JSON object")
    line_scores = {}
    for line in _result_set_rows(payload, "LineScore"):
        line_scores[(line["GAME_ID"], line["TEAM_ID"])] = line
    rows = []
    for header in _result_set_rows(payload, "GameHeader"):
        game_id = header["GAME_ID"]
        home = line_scores.get((game_id, header["HOME_TEAM_ID"]))
        visitor = line_scores.get((game_id, header["VISITOR_TEAM_ID"]))
        if home is None or visitor is None:
            raise PayloadFormatError(f"NBA.com scoreboardV2 game {game_id!r} has no LineScore row for both teams")
        rows.append({
            "game_date": game_date,
            "game_id": game_id,
            "game_code": header["GAMECODE"],
            "game_sequence": header["GAME_SEQUENCE"],
            "game_status_id": header["GAME_STATUS_ID"],
            "game_status_text": str(header["GAME_STATUS_TEXT"]).strip(),
            "season": header["SEASON"],
            "arena_name": header["ARENA_NAME"],
            "national_tv": header["NATL_TV_BROADCASTER_ABBREVIATION"],
            "home_team_id": header["HOME_TEAM_ID"],
            "visitor_team_id": header["VISITOR_TEAM_ID"],
            "home_team_abbr": home["TEAM_ABBREVIATION"],
            "visitor_team_abbr": visitor["TEAM_ABBREVIATION"],
            "home_pts": home["PTS"],
            "visitor_pts": visitor["PTS"],
            "home_line": _line_score(home),
            "visitor_line": _line_score(visitor),
        })
    rows.sort(key=lambda row: row["game_id"])
    return rows


def _line_score(line: Mapping[str, Any]) -> dict[str, Any]:
    overtime = [line.get(f"PTS_OT{n}") or 0 for n in range(1, 11)]
    return {
        "team_id": line["TEAM_ID"],
        "team_abbr": line["TEAM_ABBREVIATION"],
        "wins_losses": line.get("TEAM_WINS_LOSSES"),
        "quarters": [line.get(f"PTS_QTR{n}") for n in range(1, 5)],
        "overtime_periods": [points for points in overtime if points],
        "pts": line["PTS"],
        "fg_pct": line.get("FG_PCT"),
        "ft_pct": line.get("FT_PCT"),
        "fg3_pct": line.get("FG3_PCT"),
        "ast": line.get("AST"),
        "reb": line.get("REB"),
        "tov": line.get("TOV"),
    }


def _payload_uri(scraper_message: Mapping[str, Any]) -> str:
    uri = scraper_message.get("gcs_path") or scraper_message.get("source_uri")
    if not isinstance(uri, str) or not uri:
        raise PayloadFormatError(
            f"phase 1 message from {scraper_message.get('scraper_name')!r} has no 'gcs_path' or 'source_uri'"
        )
    return uri


def _handle_scraper_message(message, ctx, *, processor_name, table, parse, summarize) -> None:
    clock = HandlingClock()
    scraper = message.json()
    game_date = scraper["game_date"]
    exec_id = execution_id("proc", processor_name, game_date, scraper.get("execution_id"))
    common = {
        "event_type": "raw_data_loaded",
        "processor_name": processor_name,
        "execution_id": exec_id,
        "correlation_id": scraper.get("correlation_id"),
        "game_date": game_date,
        "source_table": scraper.get("scraper_name"),
        "target_table": f"{RAW_DATASET}.{table}",
        "source_scraper_execution_id": scraper.get("execution_id"),
    }
    if scraper.get("status", STATUS_SUCCESS) != STATUS_SUCCESS:
        failed = completion_message(
            **common, game_ids=[], record_count=0, clock=clock, status=STATUS_FAILED,
            metadata={"error_type": "ScraperFailed", "error_message": f"scraper status {scraper.get('status')!r}"},
        )
        publish_message(ctx, TOPIC_PHASE2_COMPLETE, failed)
        return
    rows = parse(storage.read_json_uri(_payload_uri(scraper)), game_date=game_date)
    stored = storage.write_rows(dataset=RAW_DATASET, table=table, game_date=game_date, name=game_date, rows=rows)
    done = completion_message(
        **common,
        record_count=stored.record_count,
        clock=clock,
        rows_object=stored.relative_path,
        content_sha256=stored.content_sha256,
        metadata={"rows_inserted": stored.record_count if stored.created else 0},
        **summarize(rows),
    )
    publish_message(ctx, TOPIC_PHASE2_COMPLETE, done)
    log.info("nba.rows_written", phase="phase2", processor=processor_name, date=game_date,
             records=stored.record_count, file=stored.relative_path)


def _summarize_bdl(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    lines_per_game: dict[str, int] = {}
    for row in rows:
        lines_per_game[row["game_code"]] = lines_per_game.get(row["game_code"], 0) + 1
    return {
        "game_ids": sorted(lines_per_game),
        "games": [{"game_code": code, "record_count": count} for code, count in sorted(lines_per_game.items())],
        "affected_entities": {
            "games": sorted_unique(row["game_code"] for row in rows),
            "teams": sorted_unique(row["team_abbr"] for row in rows),
            "players": sorted_unique(str(row["player_id"]) for row in rows),
        },
    }


def _summarize_scoreboard(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "game_ids": [row["game_id"] for row in rows],
        "games": [
            {
                "game_id": row["game_id"],
                "game_code": row["game_code"],
                "home_team_abbr": row["home_team_abbr"],
                "visitor_team_abbr": row["visitor_team_abbr"],
                "game_status_text": row["game_status_text"],
            }
            for row in rows
        ],
        "affected_entities": {
            "games": [row["game_id"] for row in rows],
            "teams": sorted_unique(
                abbr for row in rows for abbr in (row["home_team_abbr"], row["visitor_team_abbr"])
            ),
        },
    }


def process_bdl_boxscores(message, ctx) -> None:
    """Load a BallDontLie box scores payload into ``nba_raw.bdl_player_boxscores``."""
    _handle_scraper_message(
        message, ctx, processor_name=BDL_PROCESSOR_NAME, table=BDL_TABLE,
        parse=parse_bdl_box_scores, summarize=_summarize_bdl,
    )


def process_nbac_scoreboard(message, ctx) -> None:
    """Load an NBA.com scoreboardV2 payload into ``nba_raw.nbac_scoreboard_games``."""
    _handle_scraper_message(
        message, ctx, processor_name=NBAC_PROCESSOR_NAME, table=NBAC_TABLE,
        parse=parse_scoreboard_v2, summarize=_summarize_scoreboard,
    )
