"""A deterministic synthetic NBA game day in the real scrapers' formats.

:func:`generate_game_day` returns a BallDontLie ``box_scores`` response and an
NBA.com ``scoreboardV2`` response for ``n_games`` games on one date. Both
have the same keys, nesting and value types as the real payloads: minutes as
zero-padded strings, shooting percentages as floats, ``resultSets`` of
``headers`` + ``rowSet``. The same seed gives byte-identical payloads.

Box scores are internally consistent. Points are 2 * FGM + 3PM + FTM, and
rebounds are offensive + defensive. Team scores are the sums of their players'
points, quarter scores add up to the final score, and there are no ties.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from typing import Any

# (abbreviation, BallDontLie id, NBA.com id, conference, division, city, name, arena)
TEAMS = (
    ("ATL", 1, 1610612737, "East", "Southeast", "Atlanta", "Hawks", "State Farm Arena"),
    ("BOS", 2, 1610612738, "East", "Atlantic", "Boston", "Celtics", "TD Garden"),
    ("BKN", 3, 1610612751, "East", "Atlantic", "Brooklyn", "Nets", "Barclays Center"),
    ("CHA", 4, 1610612766, "East", "Southeast", "Charlotte", "Hornets", "Spectrum Center"),
    ("CHI", 5, 1610612741, "East", "Central", "Chicago", "Bulls", "United Center"),
    ("CLE", 6, 1610612739, "East", "Central", "Cleveland", "Cavaliers", "Rocket Mortgage FieldHouse"),
    ("DAL", 7, 1610612742, "West", "Southwest", "Dallas", "Mavericks", "American Airlines Center"),
    ("DEN", 8, 1610612743, "West", "Northwest", "Denver", "Nuggets", "Ball Arena"),
    ("DET", 9, 1610612765, "East", "Central", "Detroit", "Pistons", "Little Caesars Arena"),
    ("GSW", 10, 1610612744, "West", "Pacific", "Golden State", "Warriors", "Chase Center"),
    ("HOU", 11, 1610612745, "West", "Southwest", "Houston", "Rockets", "Toyota Center"),
    ("IND", 12, 1610612754, "East", "Central", "Indiana", "Pacers", "Gainbridge Fieldhouse"),
    ("LAC", 13, 1610612746, "West", "Pacific", "LA", "Clippers", "Crypto.com Arena"),
    ("LAL", 14, 1610612747, "West", "Pacific", "Los Angeles", "Lakers", "Crypto.com Arena"),
    ("MEM", 15, 1610612763, "West", "Southwest", "Memphis", "Grizzlies", "FedExForum"),
    ("MIA", 16, 1610612748, "East", "Southeast", "Miami", "Heat", "Kaseya Center"),
    ("MIL", 17, 1610612749, "East", "Central", "Milwaukee", "Bucks", "Fiserv Forum"),
    ("MIN", 18, 1610612750, "West", "Northwest", "Minnesota", "Timberwolves", "Target Center"),
    ("NOP", 19, 1610612740, "West", "Southwest", "New Orleans", "Pelicans", "Smoothie King Center"),
    ("NYK", 20, 1610612752, "East", "Atlantic", "New York", "Knicks", "Madison Square Garden"),
    ("OKC", 21, 1610612760, "West", "Northwest", "Oklahoma City", "Thunder", "Paycom Center"),
    ("ORL", 22, 1610612753, "East", "Southeast", "Orlando", "Magic", "Kia Center"),
    ("PHI", 23, 1610612755, "East", "Atlantic", "Philadelphia", "76ers", "Wells Fargo Center"),
    ("PHX", 24, 1610612756, "West", "Pacific", "Phoenix", "Suns", "Footprint Center"),
    ("POR", 25, 1610612757, "West", "Northwest", "Portland", "Trail Blazers", "Moda Center"),
    ("SAC", 26, 1610612758, "West", "Pacific", "Sacramento", "Kings", "Golden 1 Center"),
    ("SAS", 27, 1610612759, "West", "Southwest", "San Antonio", "Spurs", "Frost Bank Center"),
    ("TOR", 28, 1610612761, "East", "Atlantic", "Toronto", "Raptors", "Scotiabank Arena"),
    ("UTA", 29, 1610612762, "West", "Northwest", "Utah", "Jazz", "Delta Center"),
    ("WAS", 30, 1610612764, "East", "Southeast", "Washington", "Wizards", "Capital One Arena"),
)

_FIRST_NAMES = (
    "Aaron", "Andre", "Bennett", "Caleb", "Cameron", "Darius", "Desmond", "Elijah", "Evan", "Felix",
    "Gavin", "Isaiah", "Jalen", "Jaden", "Jordan", "Julian", "Keon", "Kyle", "Landon", "Marcus",
    "Malik", "Miles", "Nathan", "Omar", "Quentin", "Reggie", "Simon", "Terrence", "Tobias", "Victor",
)
_LAST_NAMES = (
    "Adams", "Baker", "Brooks", "Carter", "Coleman", "Dawson", "Ellis", "Fletcher", "Graham", "Hayes",
    "Hughes", "Irving", "Jenkins", "Kendall", "Lawson", "Mitchell", "Morris", "Nash", "Owens", "Palmer",
    "Porter", "Reed", "Sanders", "Thompson", "Turner", "Vaughn", "Walker", "Watson", "Young", "Zimmer",
)
_POSITIONS = ("G", "G", "F", "F", "C", "G-F", "F-C", "F-G", "C-F", "")
_COUNTRIES = ("USA", "USA", "USA", "USA", "Canada", "France", "Australia", "Serbia", "Nigeria", "Spain")
_COLLEGES = ("Kentucky", "Duke", "Kansas", "Gonzaga", "Arizona", "Villanova", "Baylor", "UCLA", "None", "Michigan")
_TV = ("ESPN", "TNT", "NBA TV", None, None, None)

SCOREBOARD_HEADERS = {
    "GameHeader": ["GAME_DATE_EST", "GAME_SEQUENCE", "GAME_ID", "GAME_STATUS_ID", "GAME_STATUS_TEXT", "GAMECODE",
                   "HOME_TEAM_ID", "VISITOR_TEAM_ID", "SEASON", "LIVE_PERIOD", "LIVE_PC_TIME",
                   "NATL_TV_BROADCASTER_ABBREVIATION", "HOME_TV_BROADCASTER_ABBREVIATION",
                   "AWAY_TV_BROADCASTER_ABBREVIATION", "LIVE_PERIOD_TIME_BCAST", "ARENA_NAME", "WH_STATUS",
                   "WNBA_COMMISSIONER_FLAG"],
    "LineScore": ["GAME_DATE_EST", "GAME_SEQUENCE", "GAME_ID", "TEAM_ID", "TEAM_ABBREVIATION", "TEAM_CITY_NAME",
                  "TEAM_NAME", "TEAM_WINS_LOSSES", "PTS_QTR1", "PTS_QTR2", "PTS_QTR3", "PTS_QTR4", "PTS_OT1",
                  "PTS_OT2", "PTS_OT3", "PTS_OT4", "PTS_OT5", "PTS_OT6", "PTS_OT7", "PTS_OT8", "PTS_OT9", "PTS_OT10",
                  "PTS", "FG_PCT", "FT_PCT", "FG3_PCT", "AST", "REB", "TOV"],
    "SeriesStandings": ["GAME_ID", "HOME_TEAM_ID", "VISITOR_TEAM_ID", "GAME_DATE_EST", "HOME_TEAM_WINS",
                        "HOME_TEAM_LOSSES", "SERIES_LEADER"],
    "LastMeeting": ["GAME_ID", "LAST_GAME_ID", "LAST_GAME_DATE_EST", "LAST_GAME_HOME_TEAM_ID",
                    "LAST_GAME_HOME_TEAM_CITY", "LAST_GAME_HOME_TEAM_NAME", "LAST_GAME_HOME_TEAM_ABBREVIATION",
                    "LAST_GAME_HOME_TEAM_POINTS", "LAST_GAME_VISITOR_TEAM_ID", "LAST_GAME_VISITOR_TEAM_CITY",
                    "LAST_GAME_VISITOR_TEAM_NAME", "LAST_GAME_VISITOR_TEAM_CITY1", "LAST_GAME_VISITOR_TEAM_POINTS"],
    "EastConfStandingsByDay": ["TEAM_ID", "LEAGUE_ID", "SEASON_ID", "STANDINGSDATE", "CONFERENCE", "TEAM", "G",
                               "W", "L", "W_PCT", "HOME_RECORD", "ROAD_RECORD"],
    "WestConfStandingsByDay": ["TEAM_ID", "LEAGUE_ID", "SEASON_ID", "STANDINGSDATE", "CONFERENCE", "TEAM", "G",
                               "W", "L", "W_PCT", "HOME_RECORD", "ROAD_RECORD"],
    "Available": ["GAME_ID", "PT_AVAILABLE"],
    "TeamLeaders": ["GAME_ID", "TEAM_ID", "TEAM_CITY", "TEAM_NICKNAME", "TEAM_ABBREVIATION", "PTS_PLAYER_ID",
                    "PTS_PLAYER_NAME", "PTS", "REB_PLAYER_ID", "REB_PLAYER_NAME", "REB", "AST_PLAYER_ID",
                    "AST_PLAYER_NAME", "AST"],
    "TicketLinks": ["GAME_ID", "LEAG_TIX"],
}

MAX_GAMES = len(TEAMS) // 2


@dataclasses.dataclass(frozen=True)
class GameDay:
    """The scraper payloads of one synthetic game date."""

    game_date: str
    box_scores: dict[str, Any]
    scoreboard: dict[str, Any]


def season_of(game_date: dt.date) -> int:
    """Return the NBA season year (a season starting in October 2023 is 2023)."""
    return game_date.year if game_date.month >= 8 else game_date.year - 1


def _pct(made: int, attempted: int) -> float:
    return round(made / attempted, 7) if attempted else 0


def _minutes_split(rng: random.Random, n_players: int) -> list[int]:
    """Minutes per player summing to 240, starters first, a few players not used."""
    used = min(n_players, rng.randint(9, 11))
    weights = [rng.uniform(30, 37) for _ in range(5)] + [rng.uniform(8, 24) for _ in range(used - 5)]
    scale = 240 / sum(weights)
    minutes = [max(1, round(weight * scale)) for weight in weights]
    minutes[0] += 240 - sum(minutes)
    return minutes + [0] * (n_players - used)


def _player_line(rng: random.Random, player: dict, minutes: int) -> dict[str, Any]:
    if minutes == 0:
        counts = dict.fromkeys(("fgm", "fga", "fg3m", "fg3a", "ftm", "fta", "oreb", "dreb", "ast", "stl",
                                "blk", "turnover", "pf"), 0)
    else:
        fga = max(0, round(minutes * rng.uniform(0.2, 0.55)))
        fg3a = min(fga, round(fga * rng.uniform(0.15, 0.55)))
        fg3m = sum(rng.random() < 0.36 for _ in range(fg3a))
        twos_made = sum(rng.random() < 0.52 for _ in range(fga - fg3a))
        fta = round(minutes * rng.uniform(0.0, 0.2))
        counts = {
            "fgm": twos_made + fg3m, "fga": fga, "fg3m": fg3m, "fg3a": fg3a,
            "ftm": sum(rng.random() < 0.78 for _ in range(fta)), "fta": fta,
            "oreb": round(minutes * rng.uniform(0.0, 0.08)), "dreb": round(minutes * rng.uniform(0.05, 0.25)),
            "ast": round(minutes * rng.uniform(0.02, 0.22)), "stl": round(minutes * rng.uniform(0.0, 0.05)),
            "blk": round(minutes * rng.uniform(0.0, 0.04)), "turnover": round(minutes * rng.uniform(0.0, 0.08)),
            "pf": min(6, round(minutes * rng.uniform(0.02, 0.12))),
        }
    return {
        "min": f"{minutes:02d}",
        "fgm": counts["fgm"], "fga": counts["fga"], "fg_pct": _pct(counts["fgm"], counts["fga"]),
        "fg3m": counts["fg3m"], "fg3a": counts["fg3a"], "fg3_pct": _pct(counts["fg3m"], counts["fg3a"]),
        "ftm": counts["ftm"], "fta": counts["fta"], "ft_pct": _pct(counts["ftm"], counts["fta"]),
        "oreb": counts["oreb"], "dreb": counts["dreb"], "reb": counts["oreb"] + counts["dreb"],
        "ast": counts["ast"], "stl": counts["stl"], "blk": counts["blk"], "turnover": counts["turnover"],
        "pf": counts["pf"], "pts": 2 * counts["fgm"] + counts["fg3m"] + counts["ftm"],
        "player": dict(player),
    }


def _roster(rng: random.Random, team_index: int, size: int) -> list[dict[str, Any]]:
    roster = []
    for slot in range(size):
        drafted = rng.random() < 0.8
        draft_year = rng.randint(2008, 2023) if drafted else None
        roster.append({
            "id": 100000 + team_index * 100 + slot,
            "first_name": rng.choice(_FIRST_NAMES),
            "last_name": rng.choice(_LAST_NAMES),
            "position": rng.choice(_POSITIONS),
            "height": f"6-{rng.randint(0, 11)}" if rng.random() < 0.85 else f"7-{rng.randint(0, 3)}",
            "weight": str(rng.randint(180, 275)),
            "jersey_number": str(rng.randint(0, 99)),
            "college": rng.choice(_COLLEGES),
            "country": rng.choice(_COUNTRIES),
            "draft_year": draft_year,
            "draft_round": rng.randint(1, 2) if drafted else None,
            "draft_number": rng.randint(1, 60) if drafted else None,
        })
    return roster


def _team_object(team: tuple) -> dict[str, Any]:
    abbr, bdl_id, _, conference, division, city, name, _ = team
    return {"id": bdl_id, "conference": conference, "division": division, "city": city, "name": name,
            "full_name": f"{city} {name}", "abbreviation": abbr}


def _quarters(rng: random.Random, points: int) -> list[int]:
    shares = [rng.uniform(0.9, 1.1) for _ in range(4)]
    quarters = [round(points * share / sum(shares)) for share in shares]
    quarters[3] += points - sum(quarters)
    return quarters


def _break_tie(home_lines: list[dict]) -> None:
    # A made free throw by the home team's first player settles a tied synthetic game.
    line = home_lines[0]
    line["ftm"] += 1
    line["fta"] += 1
    line["ft_pct"] = _pct(line["ftm"], line["fta"])
    line["pts"] += 1


def generate_game_day(game_date: str | dt.date, *, n_games: int = 11, seed: int = 0) -> GameDay:
    """Generate the box scores and scoreboard payloads of ``n_games`` synthetic games."""
    date = dt.date.fromisoformat(game_date) if isinstance(game_date, str) else game_date
    if not 1 <= n_games <= MAX_GAMES:
        raise ValueError(f"n_games={n_games!r} is out of range; a game day has 1 to {MAX_GAMES} games")
    rng = random.Random(f"{date.isoformat()}/{n_games}/{seed}")
    season = season_of(date)
    teams = list(range(len(TEAMS)))
    rng.shuffle(teams)
    first_game_number = 100 + (date - dt.date(season, 10, 1)).days * 7 % 900

    games, results = [], []
    for index in range(n_games):
        visitor_index, home_index = teams[2 * index], teams[2 * index + 1]
        lines = {}
        for side, team_index in (("home", home_index), ("visitor", visitor_index)):
            roster = _roster(random.Random(f"roster/{team_index}/{seed}"), team_index, rng.randint(13, 15))
            minutes = _minutes_split(rng, len(roster))
            lines[side] = [_player_line(rng, player, played) for player, played in zip(roster, minutes)]
        if sum(line["pts"] for line in lines["home"]) == sum(line["pts"] for line in lines["visitor"]):
            _break_tie(lines["home"])
        home_score = sum(line["pts"] for line in lines["home"])
        visitor_score = sum(line["pts"] for line in lines["visitor"])
        games.append({
            "date": date.isoformat(), "season": season, "status": "Final", "period": 4, "time": "Final",
            "postseason": False, "home_team_score": home_score, "visitor_team_score": visitor_score,
            "home_team": {**_team_object(TEAMS[home_index]), "players": lines["home"]},
            "visitor_team": {**_team_object(TEAMS[visitor_index]), "players": lines["visitor"]},
        })
        results.append((index, home_index, visitor_index, lines))

    scoreboard = _scoreboard(rng, date, season, first_game_number, results)
    return GameDay(game_date=date.isoformat(), box_scores={"data": games}, scoreboard=scoreboard)


def _scoreboard(rng, date, season, first_game_number, results) -> dict[str, Any]:
    date_est = f"{date.isoformat()}T00:00:00"
    sets: dict[str, list] = {name: [] for name in SCOREBOARD_HEADERS}
    for index, home_index, visitor_index, lines in results:
        game_id = f"002{season % 100:02d}{first_game_number + index:05d}"
        home, visitor = TEAMS[home_index], TEAMS[visitor_index]
        sequence = index + 1
        tv = rng.choice(_TV)
        sets["GameHeader"].append([
            date_est, sequence, game_id, 3, "Final", f"{date:%Y%m%d}/{visitor[0]}{home[0]}", home[2], visitor[2],
            str(season), 4, "     ", tv, f"{home[0]}-TV", f"{visitor[0]}-TV", f"Q4       - {tv or ''}".rstrip() + (
                "" if tv else " "), home[7], 1, 0,
        ])
        for team, side in ((visitor, "visitor"), (home, "home")):
            team_lines = lines[side]
            points = sum(line["pts"] for line in team_lines)
            fgm, fga = sum(line["fgm"] for line in team_lines), sum(line["fga"] for line in team_lines)
            ftm, fta = sum(line["ftm"] for line in team_lines), sum(line["fta"] for line in team_lines)
            fg3m, fg3a = sum(line["fg3m"] for line in team_lines), sum(line["fg3a"] for line in team_lines)
            wins = rng.randint(5, 35)
            sets["LineScore"].append([
                date_est, sequence, game_id, team[2], team[0], team[5], team[6], f"{wins}-{rng.randint(5, 35)}",
                *_quarters(rng, points), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, points,
                round(fgm / fga, 3) if fga else 0, round(ftm / fta, 3) if fta else 0,
                round(fg3m / fg3a, 3) if fg3a else 0,
                sum(line["ast"] for line in team_lines), sum(line["reb"] for line in team_lines),
                sum(line["turnover"] for line in team_lines),
            ])
            leaders = {stat: max(team_lines, key=lambda line, s=stat: line[s]) for stat in ("pts", "reb", "ast")}
            sets["TeamLeaders"].append([
                game_id, team[2], team[5], team[6], team[0],
                *[value for stat in ("pts", "reb", "ast") for value in (
                    leaders[stat]["player"]["id"],
                    f"{leaders[stat]['player']['first_name']} {leaders[stat]['player']['last_name']}",
                    leaders[stat][stat],
                )],
            ])
        home_wins = rng.randint(0, 2)
        if home_wins == 1:
            series_leader = "Tied"
        elif home_wins == 2:
            series_leader = home[5]
        else:
            series_leader = visitor[5]
        sets["SeriesStandings"].append([game_id, home[2], visitor[2], date_est, home_wins, 2 - home_wins,
                                        series_leader])
        last = date - dt.timedelta(days=rng.randint(10, 60))
        sets["LastMeeting"].append([
            game_id, f"002{season % 100:02d}{max(1, first_game_number - rng.randint(50, 300)):05d}",
            f"{last.isoformat()}T00:00:00", home[2], home[5], home[6], home[0], rng.randint(95, 135),
            visitor[2], visitor[5], visitor[6], visitor[0], rng.randint(95, 135),
        ])
        sets["Available"].append([game_id, 0])
    for conference, name in (("East", "EastConfStandingsByDay"), ("West", "WestConfStandingsByDay")):
        for team in (team for team in TEAMS if team[3] == conference):
            played = rng.randint(36, 42)
            won = rng.randint(8, played - 8)
            sets[name].append([team[2], "00", f"2{season}", date.isoformat(), conference, team[5], played, won,
                               played - won, round(won / played, 3), f"{won // 2}-{played // 2 - won // 2}",
                               f"{won - won // 2}-{played - played // 2 - (won - won // 2)}"])
        sets[name].sort(key=lambda row: -row[9])
    return {
        "resource": "scoreboardV2",
        "parameters": {"GameDate": date.isoformat(), "LeagueID": "00", "DayOffset": "0"},
        "resultSets": [{"name": name, "headers": headers, "rowSet": sets[name]}
                       for name, headers in SCOREBOARD_HEADERS.items()],
    }
