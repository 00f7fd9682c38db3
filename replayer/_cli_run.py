"""``replay run``: replay recorded dates through the configured processors."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from replayer.cli import cli


def _progress(json_output: bool):
    """Return (listener, close): a rich bar on a terminal, a line per 10% otherwise."""
    if not json_output and sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import Progress

        # Standard error, like the line fallback: standard output carries the results.
        progress = Progress(console=Console(stderr=True), transient=False)
        progress.start()
        tasks: dict[str, Any] = {}

        def listener(lane: str, released: int, total: int) -> None:
            if lane not in tasks:
                tasks[lane] = progress.add_task(f"lane {lane}", total=total)
            progress.update(tasks[lane], completed=released)

        return listener, progress.stop

    reported: dict[str, int] = {}

    def log_listener(lane: str, released: int, total: int) -> None:
        tenth = released * 10 // max(total, 1)
        if reported.get(lane) != tenth:
            reported[lane] = tenth
            click.echo(f"lane {lane}: {released}/{total} entry {'event' if total == 1 else 'events'} released",
                       err=True)

    return log_listener, lambda: None


@cli.command("run", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", default="replay.toml", show_default=True,
              help="The replay configuration file (replay.toml).")
@click.option("--archive", help="Archive to replay (folder or gs://bucket/prefix); overrides [archive] uri.")
@click.option("--date", "date", help="Replay this logical date (YYYY-MM-DD).")
@click.option("--start-date", help="First logical date of a range (YYYY-MM-DD).")
@click.option("--end-date", help="Last logical date of a range, inclusive (YYYY-MM-DD).")
@click.option("--phases", help="Phases to replay: names or numbers, ranges allowed (e.g. 2-6 or phase3,phase5).")
@click.option("--start-phase", help="Start the chain at this phase (name or number).")
@click.option("--skip-phase", multiple=True, help="Leave this phase out (repeatable).")
@click.option("--mode", type=click.Choice(["cascade", "isolated"]), help="cascade or isolated replay.")
@click.option("--speed", help="Replay speed: a multiplier of recorded time (1, 10, 0.5) or max.")
@click.option("--max-gap", "max_gap_s", type=float, help="Cap idle gaps between entry events at this many seconds.")
@click.option("--where", multiple=True,
              help="Replay only entry events whose ATTRIBUTE=VALUE or /json/pointer=VALUE (repeatable); "
                   "the report then compares only the recorded events they led to.")
@click.option("--output", help="Output folder (or gs:// prefix) of this replay; must not hold a replay yet.")
@click.option("--resend-redeliveries", is_flag=True, default=None,
              help="Deliver recorded redeliveries again instead of removing duplicates.")
@click.option("--clock", type=click.Choice(["recorded", "wall"]),
              help="What 'now' is for a processor: the input's publish time, or the real time.")
@click.option("--strict", is_flag=True, default=None,
              help="Stop at a damaged archive file instead of skipping it and counting it.")
@click.option("--dry-run", is_flag=True, help="Print the plan (entry events, planned duration); run nothing.")
@click.option("--json", "json_output", is_flag=True, help="Print the result as JSON on standard output.")
@click.option("--junit-xml", type=click.Path(dir_okay=False), help="Also write the report's checks as JUnit XML.")
@click.option("--noise-runs", type=click.IntRange(min=0), help="Replay N extra times to measure run-to-run noise.")
@click.argument("beam_args", nargs=-1, type=click.UNPROCESSED)
def run_command(config_path: str, json_output: bool, dry_run: bool, beam_args: tuple[str, ...],
                **options: Any) -> int:
    """Replay recorded dates of an archive through the processors in replay.toml.

    Arguments after -- go to Apache Beam as pipeline options, e.g.
    -- --runner=DataflowRunner --project=P --region=R --setup_file ./setup.py
    """
    from replayer.run import count_of, plan_lines, run_replay, summary_lines

    overrides = {key: value for key, value in options.items() if value not in (None, ())}
    for option in ("where", "skip_phase"):
        if option in overrides:
            overrides[option] = list(overrides[option])

    def on_plan(plan) -> None:
        if not json_output:
            for line in plan_lines(plan):
                click.echo(line)

    from replayer.config import read_config_text

    read_config_text(config_path)  # a missing file, a folder or non-UTF-8 text fails here, in one line

    if dry_run:
        result = run_replay(config_path, dry_run=True, beam_args=list(beam_args), **overrides)
        if json_output:
            click.echo(json.dumps(result.plan.describe(), indent=2))
        else:
            for line in plan_lines(result.plan):
                click.echo(line)
        return 0

    from replayer.lane import add_progress_listener

    listener, stop_progress = _progress(json_output)
    remove = add_progress_listener(listener)
    try:
        result = run_replay(config_path, on_plan=on_plan, beam_args=list(beam_args), **overrides)
    finally:
        remove()
        stop_progress()
    if json_output:
        click.echo(json.dumps({"out_dir": result.out_dir, "run": result.run_meta, "summary": list(result.summary),
                               "exit_code": result.exit_code}, indent=2, sort_keys=True))
    else:
        for line in summary_lines(result.summary):
            click.echo(line)
        if result.report is not None:
            from replayer.diff import print_summary

            print_summary(result.report)
        pacing = result.run_meta["pacing"]
        click.echo(f"pacing lateness p50 {pacing['p50_ms']} ms, p99 {pacing['p99_ms']} ms, max "
                   f"{pacing['max_ms']} ms over {count_of(pacing['releases'], 'release')}; "
                   f"output in {result.out_dir}")
    return result.exit_code
