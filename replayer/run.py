"""``run_replay``: plan a replay, run the Beam pipeline, and hand the results to the report.

Planning reads the selected partitions once in the launcher. It resolves
dates and phases, rejects a cascade whose recorded output topics reach no
selected processor, and computes the release schedule of every lane. So the
planned duration is known before anything runs (``dry_run`` stops there).
The run writes ``<out>/archive`` (replayed outputs), ``<out>/calls/*.jsonl``,
``<out>/lanes.json`` and ``<out>/run.json``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence


from recorder._logging import get_logger
from recorder._reader import ArchiveReader
from recorder._storage import join_uri, open_storage
from replayer.closure import causal_closure
from replayer.config import (
    ReplayConfig, Selection, ValueMatch, apply_overrides, check_cascade_routing, check_output_location,
    load_config, parse_where, resolve_dates, select_phases,
)
from replayer.errors import ConfigError, MissingExtraError, ReplayError, extra_for_missing_module
from replayer.lane import EntryDelivery, entry_phases, plan_lane, route_entry_event
from replayer.pacing import count_out_of_order, lateness_stats
from schemas import Direction, RecordedEvent, micros_to_rfc3339, now_micros

log = get_logger(__name__)

CATEGORIES = ("missing_input_data", "processor_exception", "non_ack_response", "timeout")


class ReplayInterrupted(ReplayError):
    """The user stopped the run with Ctrl-C. The output folder contains what was written until then."""

    exit_code = 130

    def __init__(self, out_dir: str) -> None:
        written = _contains_files(out_dir)
        super().__init__(f"interrupted; partial output in {out_dir}" if written
                         else f"interrupted; nothing was written to {out_dir}")
        self.out_dir = out_dir


def _contains_files(uri: str) -> bool:
    try:
        return any(True for _ in open_storage(uri).list(uri))
    except Exception:  # noqa: BLE001  (only for the wording of the interrupt line; it must not hide the interrupt)
        return False


def interrupted_by_user(error: BaseException) -> bool:
    """True when ``error`` is a KeyboardInterrupt or wraps one.

    Beam re-raises an exception of a DoFn with the step name added. When the
    exception cannot be rebuilt with that message (a KeyboardInterrupt
    without arguments), Beam raises ``RuntimeError("KeyboardInterrupt [while
    running 'Step']")`` and the original is only in the exception chain.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, KeyboardInterrupt):
            return True
        if isinstance(current, RuntimeError) and str(current).startswith("KeyboardInterrupt"):
            return True
        current = current.__cause__ or current.__context__
    return False


class _DropInterruptTraceback(logging.Filter):
    """Drops Beam's logged traceback of a KeyboardInterrupt: the launcher reports the interrupt in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and record.exc_info[0] is not None
                    and issubclass(record.exc_info[0], KeyboardInterrupt))


# Beam logs an exception of a DoFn, with its traceback, where it re-raises it.
_BEAM_STEP_LOGGER = "apache_beam.runners.common"


@contextlib.contextmanager
def _launcher_guard(out_dir: str) -> Iterator[None]:
    """Run processors without letting them change the launcher's environment, and report Ctrl-C in one line.

    Callable and WSGI processors run in this process. The sandbox gives the
    configured variables their values during calls. Any other variable that a
    processor adds, removes or changes would stay for the report and for the
    caller of :func:`run_replay`, so every variable is put back as it was.
    """
    saved = dict(os.environ)
    beam_logger = logging.getLogger(_BEAM_STEP_LOGGER)
    quiet = _DropInterruptTraceback()
    beam_logger.addFilter(quiet)
    try:
        yield
    except BaseException as error:
        if interrupted_by_user(error):
            log.warning("replay.interrupted", archive=out_dir)
            raise ReplayInterrupted(out_dir) from error
        raise
    finally:
        beam_logger.removeFilter(quiet)
        changed = _restore_environ(saved)
        if changed:
            log.warning("replay.environment_restored", archive=out_dir, variables=changed)


def _restore_environ(saved: Mapping[str, str]) -> list[str]:
    """Make ``os.environ`` equal to ``saved``; return the names that differed (never their values)."""
    changed = sorted(name for name in set(os.environ) | set(saved) if os.environ.get(name) != saved.get(name))
    for name in changed:
        if name in saved:
            os.environ[name] = saved[name]
        else:
            del os.environ[name]
    if "TZ" in changed:
        time.tzset()
    return changed


@dataclasses.dataclass(frozen=True)
class ReplayPlan:
    """Plan of a run, known before it starts.

    ``entries`` counts entry deliveries per (phase, processor);
    ``planned_duration_s`` is the sum of the lanes' schedules, because the
    in-process runner replays lanes one after another. ``recorded_events``
    are what the report compares against: every recorded event of the
    selection, or with ``--where`` only those the selected entry events led
    to (see :func:`replayer.closure.causal_closure`).
    """

    config: ReplayConfig
    selection: Selection
    lanes: Mapping[str, int]
    entries: Mapping[tuple[str, str], int]
    planned_duration_s: float
    gaps_shortened: int
    out_of_order: int
    recorded_events: tuple[RecordedEvent, ...]
    read_stats: Mapping[str, Any]

    def describe(self) -> dict[str, Any]:
        """Return the plan as JSON-ready data (what ``--dry-run`` prints)."""
        return {
            "mode": self.config.replay.mode,
            "dates": [d.isoformat() for d in self.selection.dates],
            "phases": list(self.selection.phases),
            "speed": "max" if self.config.replay.speed is None else self.config.replay.speed,
            "lanes": dict(self.lanes),
            "entry_events": [{"phase": phase, "processor": processor, "events": count}
                             for (phase, processor), count in sorted(self.entries.items())],
            "planned_duration_s": round(self.planned_duration_s, 6),
            "gaps_shortened": self.gaps_shortened,
            "out_of_order": self.out_of_order,
        }


@dataclasses.dataclass(frozen=True)
class RunResult:
    """A finished (or dry) run: where its output is, its call records and ``run.json`` content.

    ``exit_code`` is the report's (non-zero when a threshold is exceeded), or 0.
    """

    out_dir: str
    calls: tuple[dict[str, Any], ...]
    run_meta: dict[str, Any]
    plan: ReplayPlan
    report: Any = None
    exit_code: int = 0
    summary: tuple[dict[str, Any], ...] = ()


def _selection(config: ReplayConfig, reader: ArchiveReader, overrides: Mapping[str, Any]) -> Selection:
    available: list[dt.date] = []
    if overrides.get("date") is None and (overrides.get("start_date") is None
                                          or overrides.get("end_date") is None):
        available = sorted({p.date for p in reader.list_partitions()})
    dates = resolve_dates(date=overrides.get("date"), start_date=overrides.get("start_date"),
                          end_date=overrides.get("end_date"), available=available)
    if not dates:
        raise ConfigError(f"archive {config.archive.uri!r} contains no dates; record some or pass --date")
    phases = select_phases(config, phases=overrides.get("phases"), start_phase=overrides.get("start_phase"),
                           skip_phase=overrides.get("skip_phase") or ())
    where: list[ValueMatch] = []
    for clause in overrides.get("where") or ():
        where.append(clause if isinstance(clause, ValueMatch) else parse_where(clause))
    return Selection(dates=dates, phases=phases, where=tuple(where))


def plan_replay(config: ReplayConfig, selection: Selection, *, in_process: bool = True) -> ReplayPlan:
    """Read the selected partitions and compute every lane's schedule; nothing is replayed."""
    reader = ArchiveReader(config.archive.uri, dedupe=not config.replay.resend_redeliveries,
                           strict=config.replay.strict)
    recorded: list[RecordedEvent] = []
    output_topics: dict[str, set[str]] = collections.defaultdict(set)
    for day in selection.dates:
        for event in reader.read(start_date=day, end_date=day, phases=selection.phases):
            recorded.append(event)
            if event.direction is Direction.OUTPUT and event.topic:
                output_topics[event.phase].add(event.topic)

    check_cascade_routing(config, selection, output_topics)
    selection = dataclasses.replace(
        selection, replayed_topics=frozenset(topic for topics in output_topics.values() for topic in topics))

    lanes: dict[str, list[EntryDelivery]] = collections.defaultdict(list)
    entry_ids: set[str] = set()
    for event in recorded:
        for lane, delivery in route_entry_event(event, config=config, selection=selection):
            lanes[lane].append(delivery)
            entry_ids.add(event.event_id)

    durations, gaps, out_of_order = [], 0, 0
    entries: dict[tuple[str, str], int] = collections.Counter()
    for deliveries in lanes.values():
        schedule = plan_lane(deliveries, speed=config.replay.speed, max_gap_s=config.replay.max_gap_s)
        durations.append(schedule.planned_duration_s)
        gaps += schedule.gaps_shortened
        out_of_order += count_out_of_order(d.event.publish_time for d in deliveries)
        for delivery in deliveries:
            entries[(delivery.event.phase, delivery.processor)] += 1

    planned = sum(durations) if in_process else max(durations, default=0.0)
    stats = reader.stats
    read_stats = {"files_read": stats.files_read, "records_read": stats.records_read,
                  "duplicates_removed": stats.duplicates_removed,
                  "damaged": [damaged.to_dict() for damaged in stats.damaged]}

    if selection.where:
        if not entry_ids:
            raise _nothing_selected(config, selection)
        recorded = _narrow_to_selection(recorded, entry_ids, config=config, selection=selection)
        read_stats["where_selected_records"] = len(recorded)
    return ReplayPlan(config=config, selection=selection,
                      lanes={lane: len(items) for lane, items in sorted(lanes.items())},
                      entries=dict(entries), planned_duration_s=planned, gaps_shortened=gaps,
                      out_of_order=out_of_order, recorded_events=tuple(recorded), read_stats=read_stats)


def _narrow_to_selection(recorded: list[RecordedEvent], entry_ids: set[str], *, config: ReplayConfig,
                         selection: Selection) -> list[RecordedEvent]:
    """Keep the recorded events the ``--where`` entry events led to, so the report compares like with like."""
    narrowed = causal_closure(
        recorded, entry_ids, transitive=config.replay.mode == "cascade",
        selects=lambda event: selection.selects(attributes=event.attributes, data=event.data))
    log.info("replay.where_narrowed", archive=config.archive.uri, entry_events=len(entry_ids),
             records=len(narrowed), records_read=len(recorded))
    return narrowed


def _nothing_selected(config: ReplayConfig, selection: Selection) -> ConfigError:
    clauses = " ".join(f"--where {clause.describe()}" for clause in selection.where)
    phases = ", ".join(entry_phases(config, selection))
    return ConfigError(
        f"{clauses} selects no entry event: no recorded input of {phases} on "
        f"{', '.join(d.isoformat() for d in selection.dates)} has that value; check the value, or choose "
        "--phases (and --mode) whose entry events carry it, as `replay show` lists them")


def _check_output_folder(out_dir: str) -> None:
    storage = open_storage(out_dir)
    for name in ("run.json", "lanes.json"):
        if storage.exists(join_uri(out_dir, name)):
            raise ConfigError(
                f"output folder {out_dir!r} already contains a replay ({name}); pass another --output "
                "or remove it, since replay outputs are never overwritten"
            )


def _read_calls(out_dir: str) -> list[dict[str, Any]]:
    storage = open_storage(out_dir)
    calls: list[dict[str, Any]] = []
    try:
        infos = list(storage.list(join_uri(out_dir, "calls")))
    except FileNotFoundError:
        return calls
    for info in infos:
        for line in storage.read_bytes(info.uri).splitlines():
            if line.strip():
                calls.append(json.loads(line))
    return calls


def summarize_calls(calls: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per phase and processor: inputs replayed, outputs, errors by category, handling time, lateness."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = collections.defaultdict(list)
    for call in calls:
        groups[(call["phase"], call["processor"])].append(call)
    rows = []
    for (phase, processor), items in sorted(groups.items()):
        handling = sorted(call["handling_micros"] for call in items)
        lateness = [call["lateness_micros"] for call in items if call.get("lateness_micros") is not None]
        errors = collections.Counter(call["category"] for call in items if call["category"])
        stats = lateness_stats(lateness)
        rows.append({
            "phase": phase, "processor": processor, "inputs": len(items),
            "recorded_inputs": sum(1 for call in items if call["recorded_input"]),
            "outputs": sum(call["outputs"] for call in items),
            "errors": {category: errors.get(category, 0) for category in CATEGORIES},
            "handling_ms": {"total": round(sum(handling) / 1000, 3),
                            "p50": round(handling[(len(handling) - 1) // 2] / 1000, 3) if handling else 0.0,
                            "max": round(handling[-1] / 1000, 3) if handling else 0.0},
            "lateness_ms": {"p50": stats.p50_ms, "p99": stats.p99_ms, "max": stats.max_ms},
        })
    return rows


def _read_replayed(out_dir: str) -> list[RecordedEvent]:
    if not _has_archive(out_dir):
        return []
    return list(ArchiveReader(join_uri(out_dir, "archive"), dedupe=False).read())


def _learn_noise(plan: ReplayPlan, out_dir: str, replayed: list[RecordedEvent], noise_runs: int,
                 beam_args: Sequence[str]) -> Any:
    """Replay ``noise_runs`` more times into ``<out>/noise/run-N`` and learn the fields that vary."""
    from pipelines.replay import run_replay_pipeline
    from replayer.diff import learn_noise, parse_diff_rules

    runs = [replayed]
    for index in range(1, noise_runs + 1):
        run_dir = join_uri(out_dir, "noise", f"run-{index}")
        with _launcher_guard(run_dir):
            run_replay_pipeline(config=plan.config, selection=plan.selection, out_dir=run_dir,
                                beam_args=beam_args)
        runs.append(_read_replayed(run_dir))
    rules = plan.config.diff if plan.config.diff is not None and not isinstance(plan.config.diff, dict) \
        else parse_diff_rules(plan.config.diff or {}, file=plan.config.file or "<config>")
    return learn_noise(runs, rules)


def _import_report_builder(out_dir: str) -> Callable[..., Any] | None:
    """Return ``build_report``; None only when a module of an optional extra is missing.

    Processors run in the launcher's process and can break its imports (a
    processor that sets ``sys.modules["json"] = None``). Such a failure, or
    any import error that no extra explains, must not pass for "no report":
    the run would then exit 0 with nothing compared.
    """
    try:
        from replayer.diff import build_report
    except ImportError as error:
        # ``sys.modules[name] = None`` raises the same ModuleNotFoundError as a
        # missing install; only the latter is an extra that is not installed.
        blocked = bool(error.name) and sys.modules.get(error.name, 0) is None
        extra = None if blocked else extra_for_missing_module(error)
        if extra is not None:
            log.warning("replay.report_skipped", archive=out_dir, module=error.name, extra=extra)
            return None
        module = getattr(error, "name", None) or "?"
        raise ReplayError(
            f"the report of {out_dir!r} could not be built: importing it failed on module {module!r} "
            f"({type(error).__name__}: {error}); processors run in the launcher's process, so check that "
            "no processor removes or replaces modules in sys.modules, else reinstall pipeline-replay",
            exit_code=1) from error
    return build_report


def _build_report(plan: ReplayPlan, out_dir: str, calls: list[dict[str, Any]], run_meta: dict[str, Any],
                  junit_xml: str | None, noise_runs: int | None, beam_args: Sequence[str]) -> tuple[Any, int]:
    build_report = _import_report_builder(out_dir)
    if build_report is None:
        return None, 0
    replayed = _read_replayed(out_dir)
    noise = _learn_noise(plan, out_dir, replayed, noise_runs, beam_args) if noise_runs else None
    report_dir: str | None = out_dir
    if "://" in out_dir and not out_dir.startswith("file://"):
        # NOTE: the report writer writes local files only; for a gs:// output the
        # report is built and printed but report.json/html are not written.
        log.warning("replay.report_not_written", archive=out_dir, reason="report files need a local folder")
        report_dir = None
    report = build_report(recorded_events=list(plan.recorded_events), replayed_events=replayed, calls=calls,
                          run_meta=run_meta, config=plan.config, out_dir=report_dir, junit_xml=junit_xml,
                          noise=noise)
    return report, int(getattr(report, "exit_code", 0) or 0)


def _has_archive(out_dir: str) -> bool:
    try:
        return any(True for _ in open_storage(out_dir).list(join_uri(out_dir, "archive")))
    except FileNotFoundError:
        return False


def run_replay(config: ReplayConfig | str | Path, *, on_plan: Callable[[ReplayPlan], None] | None = None,
               **overrides: Any) -> RunResult:
    """Replay the selected dates and phases of an archive through the configured processors.

    ``overrides`` are the command-line options: ``archive``, ``date``,
    ``start_date``, ``end_date``, ``phases``, ``start_phase``, ``skip_phase``,
    ``mode``, ``speed``, ``max_gap_s``, ``where``, ``output``,
    ``resend_redeliveries``, ``clock``, ``strict``, ``beam_args``, ``dry_run``,
    ``junit_xml``, ``noise_runs``. ``on_plan`` is called with the plan before
    anything runs (the CLI prints the planned duration there).
    """
    known = {"archive", "date", "start_date", "end_date", "phases", "start_phase", "skip_phase", "mode",
             "speed", "max_gap_s", "where", "output", "resend_redeliveries", "clock", "beam_args", "dry_run",
             "junit_xml", "noise_runs", "project", "strict"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"run_replay() got unknown option {unknown[0]!r}; known: {', '.join(sorted(known))}")
    if not isinstance(config, ReplayConfig):
        config = load_config(config)
    config = apply_overrides(config, archive=overrides.get("archive"), mode=overrides.get("mode"),
                             speed=overrides.get("speed"), max_gap_s=overrides.get("max_gap_s"),
                             output=overrides.get("output"), project=overrides.get("project"),
                             resend_redeliveries=overrides.get("resend_redeliveries"),
                             clock=overrides.get("clock"), strict=overrides.get("strict"))
    if not config.archive.uri:
        raise ConfigError("no archive given: set [archive] uri in replay.toml or pass --archive")
    if not overrides.get("dry_run"):
        check_output_location(config.replay.output, {"the archive": config.archive.uri})
    beam_args = list(overrides.get("beam_args") or ())
    in_process = not any(arg.split("=", 1)[-1].lower() not in ("directrunner", "direct", "fnapirunner")
                         for arg in beam_args if arg.startswith("--runner"))
    reader = ArchiveReader(config.archive.uri)
    selection = _selection(config, reader, overrides)
    plan = plan_replay(config, selection, in_process=in_process)
    out_dir = config.replay.output
    # With damaged files skipped, the run goes on so its report names them (and fails their check).
    if not plan.entries and not plan.read_stats["damaged"]:
        if not overrides.get("dry_run"):
            raise ConfigError(nothing_to_replay(plan))
        log.warning("replay.nothing_to_replay", archive=config.archive.uri,
                    dates=[d.isoformat() for d in selection.dates], phases=list(selection.phases))
    if overrides.get("dry_run"):
        return RunResult(out_dir=out_dir, calls=(), run_meta={"plan": plan.describe(), "dry_run": True}, plan=plan)
    _check_output_folder(out_dir)
    if on_plan is not None:
        on_plan(plan)
    try:
        from pipelines.replay import run_replay_pipeline
    except ImportError as error:
        if "apache_beam" in str(error):
            raise MissingExtraError("apache-beam", "replay") from error
        raise
    started_at = now_micros()
    started = time.perf_counter()
    log.info("replay.started", archive=config.archive.uri, mode=config.replay.mode,
             dates=[d.isoformat() for d in selection.dates], phases=list(selection.phases),
             planned_duration_s=round(plan.planned_duration_s, 3))
    selection = plan.selection  # with the topics the replay publishes again
    with _launcher_guard(out_dir):
        outcome = run_replay_pipeline(config=config, selection=selection, out_dir=out_dir, beam_args=beam_args)
    calls = _read_calls(out_dir) if outcome.in_process else []
    lanes = []
    storage = open_storage(out_dir)
    if outcome.in_process and storage.exists(join_uri(out_dir, "lanes.json")):
        lanes = json.loads(storage.read_bytes(join_uri(out_dir, "lanes.json")))
    lateness = lateness_stats(value for lane in lanes for value in lane["lateness_micros"])
    run_meta = {
        "mode": config.replay.mode, "dates": [d.isoformat() for d in selection.dates],
        "phases": list(selection.phases),
        "speed": "max" if config.replay.speed is None else config.replay.speed,
        "config": config.file, "archive": config.archive.uri,
        "started_at": micros_to_rfc3339(started_at), "finished_at": micros_to_rfc3339(now_micros()),
        "planned_duration_s": round(plan.planned_duration_s, 6),
        "elapsed_s": round(time.perf_counter() - started, 3),
        "pacing": {"p50_ms": lateness.p50_ms, "p99_ms": lateness.p99_ms, "max_ms": lateness.max_ms,
                   "releases": lateness.releases},
        "gaps_shortened": plan.gaps_shortened, "out_of_order": plan.out_of_order,
        "read": dict(plan.read_stats), "where": [clause.describe() for clause in selection.where],
        "runner": outcome.runner, "pipeline_state": outcome.state, "counters": outcome.counters,
        "abandoned_calls": sum(lane.get("abandoned_calls", 0) for lane in lanes),
        "unrouted_outputs": sum(lane.get("unrouted_outputs", 0) for lane in lanes),
        "cascade_limit_hits": sum(lane.get("cascade_limit_hits", 0) for lane in lanes),
    }
    storage.write_new(join_uri(out_dir, "run.json"), json.dumps(run_meta, indent=2, sort_keys=True).encode())
    log.info("replay.finished", archive=config.archive.uri, records=len(calls),
             elapsed_s=run_meta["elapsed_s"], lateness_p99_ms=lateness.p99_ms)
    report, exit_code = (None, 0)
    if outcome.in_process:
        try:
            report, exit_code = _build_report(plan, out_dir, calls, run_meta, overrides.get("junit_xml"),
                                              overrides.get("noise_runs"), beam_args)
        except KeyboardInterrupt as error:
            raise ReplayInterrupted(out_dir) from error
    return RunResult(out_dir=out_dir, calls=tuple(calls), run_meta=run_meta, plan=plan, report=report,
                     exit_code=exit_code, summary=tuple(summarize_calls(calls)))


def count_of(count: int, noun: str) -> str:
    """Return ``count`` and ``noun``, with an ``s`` unless the count is 1: ``1 entry event``, ``0 entry events``."""
    return f"{count} {noun if count == 1 else noun + 's'}"


def plan_lines(plan: ReplayPlan) -> list[str]:
    """Human-readable lines of a plan (dry run, and before a run starts)."""
    description = plan.describe()
    dates, phases = description["dates"], description["phases"]
    lines = [f"mode {description['mode']}, speed {description['speed']}, "
             f"{'date' if len(dates) == 1 else 'dates'} {', '.join(dates)}, "
             f"{'phase' if len(phases) == 1 else 'phases'} {', '.join(phases)}"]
    for row in description["entry_events"]:
        lines.append(f"  {row['phase']}/{row['processor']}: {count_of(row['events'], 'entry event')}")
    lines.append(f"planned duration {description['planned_duration_s']:.3f} s "
                 f"({count_of(description['gaps_shortened'], 'gap')} shortened, "
                 f"{count_of(description['out_of_order'], 'event')} out of time order in the archive)")
    if not plan.entries:
        damaged = len(plan.read_stats["damaged"])
        skipped = f"{count_of(damaged, 'damaged archive file')} {'was' if damaged == 1 else 'were'} skipped"
        lines.append(f"warning: {nothing_to_replay(plan)}" + (f"; {skipped}" if damaged else ""))
    return lines


def nothing_to_replay(plan: ReplayPlan) -> str:
    """Return the message for a plan without entry events, naming its archive, entry phases, dates and clauses."""
    selection, archive = plan.selection, plan.config.archive.uri
    where = "".join(f" matching --where {clause.describe()}" for clause in selection.where)
    phases = entry_phases(plan.config, selection)
    return (f"nothing to replay: archive {archive!r} contains no recorded input{where} of {', '.join(phases)} "
            f"(the entry {'phase' if len(phases) == 1 else 'phases'} in {plan.config.replay.mode} mode) on "
            f"{', '.join(d.isoformat() for d in selection.dates)}; `replay ls {archive}` lists the "
            "recorded dates and phases")


# Columns of the end-of-run table: header, minimum width, and whether it is
# left-aligned text. A column grows past its minimum to fit its longest cell.
_SUMMARY_COLUMNS = (("phase", 10, True), ("processor", 20, True), ("inputs", 6, False), ("outputs", 7, False),
                    ("missing", 7, False), ("except", 6, False), ("nonack", 6, False), ("timeout", 7, False),
                    ("handling_ms", 11, False), ("late_p99_ms", 11, False))


def summary_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Format the per phase and processor table printed at the end of a run, with columns sized to fit."""
    table = [[header for header, _, _ in _SUMMARY_COLUMNS]]
    for row in rows:
        errors = row["errors"]
        table.append([
            str(row["phase"]), str(row["processor"]), str(row["inputs"]), str(row["outputs"]),
            str(errors["missing_input_data"]), str(errors["processor_exception"]),
            str(errors["non_ack_response"]), str(errors["timeout"]),
            f"{row['handling_ms']['total']:.1f}", f"{row['lateness_ms']['p99']:.3f}",
        ])
    widths = [max(minimum, *(len(cells[index]) for cells in table))
              for index, (_, minimum, _) in enumerate(_SUMMARY_COLUMNS)]
    lines = []
    for cells in table:
        padded = [cell.ljust(width) if left else cell.rjust(width)
                  for cell, width, (_, _, left) in zip(cells, widths, _SUMMARY_COLUMNS)]
        lines.append(" ".join(padded).rstrip())
    return lines
