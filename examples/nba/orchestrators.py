"""Fan-in orchestrators between phases (stateful callables; state lives in ``ctx.state``).

* :func:`orchestrate_phase2_to_3` waits until every expected phase 2
  processor has reported success for a game date, then publishes one
  ``nba-phase3-trigger`` per game, naming the raw row objects to read.
* :func:`orchestrate_phase3_to_4` waits until every expected phase 3 table of
  a game is complete, then publishes ``nba-phase4-trigger`` for that game.

Both trigger once per date (or game): a redelivered or late report after the
trigger is logged and dropped, so downstream phases never run twice for it.
Failed reports are kept but never count towards completeness.
"""

from __future__ import annotations

from typing import Any, Mapping

from recorder._logging import get_logger
from examples.nba._messages import (
    STATUS_SUCCESS,
    TOPIC_PHASE3_TRIGGER,
    TOPIC_PHASE4_TRIGGER,
    HandlingClock,
    completion_message,
    execution_id,
    publish_message,
)
from examples.nba.phase2 import BDL_PROCESSOR_NAME, NBAC_PROCESSOR_NAME, PHASE2_PROCESSOR_NAMES

log = get_logger(__name__)

PHASE2_TO_3_NAME = "Phase2To3Orchestrator"
PHASE3_TO_4_NAME = "Phase3To4Orchestrator"
PLAYER_SUMMARY_PROCESSOR_NAME = "PlayerGameSummaryProcessor"
TEAM_SUMMARY_PROCESSOR_NAME = "TeamGameSummaryProcessor"
PHASE3_PROCESSOR_NAMES = (PLAYER_SUMMARY_PROCESSOR_NAME, TEAM_SUMMARY_PROCESSOR_NAME)


def _record_report(state: dict, key: str, report: Mapping[str, Any], expected: tuple[str, ...]) -> dict | None:
    """Store one report under ``key``; return the entry when it just became complete."""
    entry = state.setdefault(key, {"reports": {}, "triggered": False})
    name = report.get("processor_name")
    if entry["triggered"]:
        log.info("nba.report_after_trigger", key=key, processor=name)
        return None
    if name not in expected:
        log.warning("nba.report_unexpected", key=key, processor=name)
        return None
    if report.get("status") != STATUS_SUCCESS:
        log.warning("nba.report_failed", key=key, processor=name, status=report.get("status"))
        return None
    entry["reports"][name] = {
        "rows_object": report.get("rows_object"),
        "content_sha256": report.get("content_sha256"),
        "record_count": report.get("record_count"),
        "games": report.get("games", []),
        "correlation_id": report.get("correlation_id"),
    }
    if all(expected_name in entry["reports"] for expected_name in expected):
        entry["triggered"] = True
        return entry
    return None


def _upstream_table(report: Mapping[str, Any]) -> dict[str, Any]:
    """Return the rows object and its digest that a trigger names for one upstream table."""
    return {"rows_object": report["rows_object"], "content_sha256": report["content_sha256"]}


def orchestrate_phase2_to_3(message, ctx) -> None:
    """Publish one phase 3 trigger per game once both phase 2 processors reported the date."""
    clock = HandlingClock()
    report = message.json()
    game_date = report["game_date"]
    entry = _record_report(ctx.state, game_date, report, PHASE2_PROCESSOR_NAMES)
    if entry is None:
        return

    box_scores = entry["reports"][BDL_PROCESSOR_NAME]
    scoreboard = entry["reports"][NBAC_PROCESSOR_NAME]
    lines_per_code = {game["game_code"]: game["record_count"] for game in box_scores["games"]}
    date_game_ids = [game["game_id"] for game in scoreboard["games"] if game["game_code"] in lines_per_code]

    for game in scoreboard["games"]:
        if game["game_code"] not in lines_per_code:
            log.warning("nba.game_skipped", date=game_date, game=game["game_id"], reason="no box score lines")
            continue
        trigger = completion_message(
            event_type="phase3_trigger",
            processor_name=PHASE2_TO_3_NAME,
            execution_id=execution_id("orch", PHASE2_TO_3_NAME, game_date, game["game_id"]),
            correlation_id=scoreboard["correlation_id"],
            game_date=game_date,
            game_ids=[game["game_id"]],
            record_count=lines_per_code[game["game_code"]],
            clock=clock,
            game_id=game["game_id"],
            game_code=game["game_code"],
            home_team_abbr=game["home_team_abbr"],
            visitor_team_abbr=game["visitor_team_abbr"],
            date_game_ids=date_game_ids,
            upstream={
                "nba_raw.bdl_player_boxscores": _upstream_table(box_scores),
                "nba_raw.nbac_scoreboard_games": _upstream_table(scoreboard),
            },
        )
        publish_message(ctx, TOPIC_PHASE3_TRIGGER, trigger)
    log.info("nba.phase_triggered", phase="phase3", date=game_date, game_ids=date_game_ids)


def orchestrate_phase3_to_4(message, ctx) -> None:
    """Publish the phase 4 trigger of a game once both of its phase 3 tables are complete."""
    clock = HandlingClock()
    report = message.json()
    game_date, game_id = report["game_date"], report["game_id"]
    entry = _record_report(ctx.state, f"{game_date}/{game_id}", report, PHASE3_PROCESSOR_NAMES)
    if entry is None:
        return
    players = entry["reports"][PLAYER_SUMMARY_PROCESSOR_NAME]
    teams = entry["reports"][TEAM_SUMMARY_PROCESSOR_NAME]
    trigger = completion_message(
        event_type="phase4_trigger",
        processor_name=PHASE3_TO_4_NAME,
        execution_id=execution_id("orch", PHASE3_TO_4_NAME, game_date, game_id),
        correlation_id=players["correlation_id"],
        game_date=game_date,
        game_ids=[game_id],
        record_count=players["record_count"],
        clock=clock,
        game_id=game_id,
        upstream={
            "nba_analytics.player_game_summary": _upstream_table(players),
            "nba_analytics.team_game_summary": _upstream_table(teams),
        },
    )
    publish_message(ctx, TOPIC_PHASE4_TRIGGER, trigger)
    log.info("nba.phase_triggered", phase="phase4", date=game_date, game_ids=[game_id])
