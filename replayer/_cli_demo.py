"""``replay demo``: record a synthetic NBA game day with the example pipeline and replay it.

The steps live in :mod:`examples.nba.demo`; this module contains the options,
the progress display and what is printed. The narrative goes to standard
output and ends with the path of ``report.html``. Progress goes to standard
error: a rich bar on a terminal, otherwise a plain line per tenth of the entry
events, and nothing with ``--no-progress`` or ``--json``.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Mapping
from typing import Any

import click

from examples.nba.demo import (
    DEFAULT_DATE,
    DEFAULT_GAMES,
    DEFAULT_SPEED,
    REPLAY_BUDGET_S,
    DemoOptions,
    DemoStages,
    run_demo,
)
from examples.nba.generator import MAX_GAMES
from replayer.cli import cli
from replayer.config import parse_speed
from replayer.errors import ConfigError


class _OneLineErrorCommand(click.Command):
    """A command whose usage errors (unknown option, bad int) reach the CLI as one-line ConfigErrors."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as error:
            message = error.format_message().rstrip(".")
            raise ConfigError(f"{message}; see 'replay demo --help'") from error


def _parse_date(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date; use YYYY-MM-DD, e.g. 2024-01-15") from None


def _parse_speed(_ctx: click.Context, _param: click.Parameter, value: str) -> float | None:
    try:
        return parse_speed(value, source="speed")
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


class _Display(DemoStages):
    """Prints the demo's narrative and draws the replay's progress."""

    def __init__(self, *, narrative: bool, progress: str | None) -> None:
        self.narrative = narrative
        self.progress = progress  # "bar", "lines" or None
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        self._reported: dict[str, int] = {}
        self._remove_listener: Any = None
        self._planned_s = 0.0

    def say(self, line: str) -> None:
        if self.narrative:
            click.echo(line)

    # -- DemoStages
    def folder_cleared(self, folder: Any) -> None:
        self.say(f"replaced the previous demo's {folder.previous_files} files in {folder.path}")

    def stage_finished(self, stage: str, result: Mapping[str, Any]) -> None:
        if stage == "generate":
            self.say(f"generated {result['games']} games, {result['player_lines']} player lines "
                     "(BallDontLie box scores, NBA.com scoreboardV2)")
        elif stage == "record":
            self.say(f"recorded {result['recorded']} events of the production run into the archive "
                     f"({result['published']} messages published over {result['timeline_s'] / 60:.1f} min "
                     "of simulated publish times)")
        elif stage == "replay":
            self.close()

    def gaps_capped(self, max_gap_s: float, uncapped_s: float, budget_s: float) -> None:
        self.say(f"the recorded idle gaps would make this replay wait {uncapped_s:.0f} s, so gaps are capped at "
                 f"{max_gap_s:.0f} s of recorded time to stay under {budget_s:.0f} s; pass --max-gap to choose")

    def replay_planned(self, plan: Any) -> None:
        described = plan.describe()
        speed = "max" if described["speed"] == "max" else f"{described['speed']:g}x"
        entries = sum(row["events"] for row in described["entry_events"])
        self.say(f"replaying {', '.join(described['phases'])} in {described['mode']} mode at speed {speed} on "
                 f"the DirectRunner: {entries} entry events, planned wait {described['planned_duration_s']:.1f} s")
        self._start_progress(described["planned_duration_s"])

    # -- progress
    def _start_progress(self, planned_s: float) -> None:
        from replayer.lane import add_progress_listener

        self._planned_s = planned_s
        if self.progress == "bar":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("entry events"), TimeElapsedColumn(),
                                 console=Console(stderr=True), transient=False)
            self._bar.start()
        if self.progress is not None:
            self._remove_listener = add_progress_listener(self._on_release)

    def _on_release(self, lane: str, released: int, total: int) -> None:
        if self._bar is not None:
            if lane not in self._tasks:
                self._tasks[lane] = self._bar.add_task(f"replay {lane} (planned {self._planned_s:.1f} s)",
                                                       total=total)
            self._bar.update(self._tasks[lane], completed=released)
            return
        tenth = released * 10 // max(total, 1)
        if self._reported.get(lane) != tenth:
            self._reported[lane] = tenth
            click.echo(f"replay {lane}: {released}/{total} entry events released", err=True)

    def close(self) -> None:
        """Stop the bar and the listener; safe to call twice."""
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _progress_mode(no_progress: bool, json_output: bool) -> str | None:
    if no_progress or json_output:
        return None
    return "bar" if sys.stderr.isatty() else "lines"


def _quiet_logging(ctx: click.Context) -> None:
    """Log warnings and errors only, unless --debug is given or REPLAY_LOG_LEVEL is set.

    At INFO every processor call and archive file logs a line, which would
    bury the demo's own output.
    """
    import os

    from recorder._logging import configure_logging

    root = ctx.find_root()
    if root.params.get("debug") or os.environ.get("REPLAY_LOG_LEVEL"):
        return
    json_output = {"auto": None, "json": True, "console": False}[root.params.get("log_format") or "auto"]
    configure_logging(json_output=json_output, level="WARNING", force=True)


def _result_document(result: Any) -> dict[str, Any]:
    replay = result.replay
    report = replay.report
    return {
        "exit_code": result.exit_code,
        "date": result.options.date,
        "games": result.options.games,
        "seed": result.options.seed,
        "archive": str(result.folder("archive").resolved),
        "data_root": str(result.folder("data_root").resolved),
        "output": str(result.folder("output").resolved),
        "report_html": str(result.report_html),
        "report_json": str(result.folder("output").resolved / "report.json"),
        "recorded_events": result.production.recorded,
        "speed": replay.run_meta["speed"],
        "max_gap_s": result.max_gap_s,
        "gaps_shortened": replay.run_meta["gaps_shortened"],
        "planned_duration_s": replay.run_meta["planned_duration_s"],
        "replay_elapsed_s": replay.run_meta["elapsed_s"],
        "elapsed_s": round(result.elapsed_s, 3),
        "totals": report.totals.to_dict() if report is not None else None,
        "replaced_previous_demo": [folder.path for folder in result.folders if folder.state == "previous_demo"],
    }


def _print_outcome(result: Any) -> None:
    from replayer.diff import print_summary

    replay = result.replay
    if replay.report is not None:
        # rich wraps tables at 80 columns when standard output is not a terminal.
        print_summary(replay.report, width=None if sys.stdout.isatty() else 132)
        totals = replay.report.totals
        if result.exit_code == 0:
            click.echo(f"all {totals.replayed_outputs} replayed outputs are identical to the "
                       f"{totals.recorded_outputs} recorded ones (exit code 0)")
        else:
            click.echo(f"the replay did not pass its checks: {totals.changed} changed, {totals.missing} missing, "
                       f"{totals.extra} extra outputs (exit code {result.exit_code}); see the checks above")
    click.echo(f"demo finished in {result.elapsed_s:.1f} s")
    click.echo(f"report: {result.report_html}")


@cli.command("demo", cls=_OneLineErrorCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--archive", default="./demo-archive", show_default=True,
              help="Local folder the production run is recorded into.")
@click.option("--data-root", default="./nba-data", show_default=True,
              help="Local folder for the scraper payloads and the rows the processors write (NBA_DATA_ROOT).")
@click.option("--output", default="./replay-output", show_default=True,
              help="Local folder for the replay's outputs and reports.")
@click.option("--date", default=DEFAULT_DATE, show_default=True, callback=_parse_date,
              help="Game date of the synthetic game day (YYYY-MM-DD).")
@click.option("--games", type=click.IntRange(1, MAX_GAMES), default=DEFAULT_GAMES, show_default=True,
              help=f"Number of games on the synthetic game day (1-{MAX_GAMES}).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the deterministic generator.")
@click.option("--speed", default=f"{DEFAULT_SPEED:g}", show_default=True, callback=_parse_speed,
              help="Replay speed: a multiplier of recorded time (60 = one recorded minute per second) or max.")
@click.option("--max-gap", "max_gap_s", type=click.FloatRange(min=0), default=None,
              help="Cap idle gaps between entry events at this many recorded seconds "
                   f"(default: capped only when the replay would wait over {REPLAY_BUDGET_S:g} s).")
@click.option("--no-progress", is_flag=True, help="Print no progress bar or progress lines.")
@click.option("--json", "json_output", is_flag=True, help="Print the result as one JSON document only.")
@click.pass_context
def demo_command(ctx: click.Context, archive: str, data_root: str, output: str, date: str, games: int,
                 seed: int, speed: float | None, max_gap_s: float | None, no_progress: bool,
                 json_output: bool) -> int:
    """Record a synthetic NBA game day with the example pipeline, replay phases 2-6 and report.

    Writes only into the three folders. A rerun replaces what an earlier demo
    wrote there and rejects folders containing anything else. Exits 0 when every
    replayed output is identical to the recorded one.
    """
    _quiet_logging(ctx)
    options = DemoOptions(archive=archive, data_root=data_root, output=output, date=date, games=games,
                          seed=seed, speed=speed, max_gap_s=max_gap_s)
    display = _Display(narrative=not json_output, progress=_progress_mode(no_progress, json_output))
    display.say(f"replay demo: synthetic game day {date}, {games} games, seed {seed}; archive {archive}, "
                f"payloads and rows {data_root}, replay output {output}")
    try:
        result = run_demo(options, stages=display)
    finally:
        display.close()
    if json_output:
        click.echo(json.dumps(_result_document(result), indent=2, sort_keys=True))
    else:
        _print_outcome(result)
    return result.exit_code
