"""The steps of ``replay demo``: generate a synthetic game day, record it, replay phases 2-6.

:func:`run_demo` claims three local folders (archive, data root, replay
output), generates a deterministic game day with :mod:`examples.nba.generator`,
records the example pipeline running it "in production"
(:func:`examples.nba.production.record_production_day`), and replays phases
2-6 in cascade mode with ``examples/nba/replay.toml``.

The demo replaces only what an earlier demo wrote. Each folder it uses gets a
marker file, ``_replay-demo.json``, that lists every file the demo left there.
The archive reader and the storage layer skip names starting with ``_``, so
the marker never shows up as data. A rerun clears a folder only when that
marker is present and the folder contains no file the marker does not list.
It rejects any other non-empty folder and names the option that picks another
one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recorder._logging import get_logger
from replayer.errors import ConfigError, ReplayError

log = get_logger(__name__)

CONFIG_PATH = Path(__file__).with_name("replay.toml")
MARKER_NAME = "_replay-demo.json"
# DATASET_PREFIX and GCS_PREFIX of the example replay.toml sandbox.
SANDBOX_PREFIXES = ("test_", "test/")
DEFAULT_DATE = "2024-01-15"
DEFAULT_GAMES = 11
DEFAULT_SPEED = 60.0
PHASES = "2-6"
#: When the recorded idle gaps, at the chosen speed, would make the replay
#: wait longer than this, the demo caps each gap (unless --max-gap is given).
REPLAY_BUDGET_S = 90.0

#: The folder option of each role, named in errors.
FOLDER_OPTIONS = {"archive": "--archive", "data_root": "--data-root", "output": "--output"}


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    """The demo's settings: the folders, the game day it generates and the replay speed.

    Folders are local paths as the user gave them. Relative ones resolve
    against the current folder, and the recorded phase 1 messages carry the
    data root in this form. ``speed`` is a multiplier of recorded time, or
    None for as fast as possible. ``max_gap_s`` caps recorded idle gaps
    between entry events; None lets the demo cap them only when the replay
    would exceed :data:`REPLAY_BUDGET_S`.
    """

    archive: str = "./demo-archive"
    data_root: str = "./nba-data"
    output: str = "./replay-output"
    date: str = DEFAULT_DATE
    games: int = DEFAULT_GAMES
    seed: int = 0
    speed: float | None = DEFAULT_SPEED
    max_gap_s: float | None = None


@dataclasses.dataclass(frozen=True)
class DemoFolder:
    """One folder the demo writes: its role, the path as given, and what a rerun found there.

    ``state`` is ``new`` (absent or empty) or ``previous_demo`` (cleared before use).
    """

    role: str
    path: str
    resolved: Path
    state: str
    previous_files: int = 0


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """Result of one demo run.

    ``production`` is the :class:`examples.nba.production.ProductionRun`,
    ``replay`` the :class:`replayer.run.RunResult`. ``max_gap_s`` is the idle
    gap cap in force, or None. ``uncapped_duration_s`` is the planned replay
    time without the cap, set only when the demo chose the cap itself.
    """

    options: DemoOptions
    folders: tuple[DemoFolder, ...]
    production: Any
    replay: Any
    max_gap_s: float | None
    uncapped_duration_s: float | None
    elapsed_s: float

    @property
    def report_html(self) -> Path:
        return self.folder("output").resolved / "report.html"

    @property
    def exit_code(self) -> int:
        return self.replay.exit_code

    def folder(self, role: str) -> DemoFolder:
        return next(folder for folder in self.folders if folder.role == role)


class DemoStages:
    """Receives the demo's steps as they start and end; the CLI draws progress from them.

    Every method does nothing here; a display overrides the ones it needs.
    """

    def folder_cleared(self, folder: DemoFolder) -> None:
        """Called after a folder an earlier demo wrote was emptied for reuse."""

    def stage_started(self, stage: str, description: str) -> None:
        """Called when a step (``generate``, ``record`` or ``replay``) starts."""

    def stage_finished(self, stage: str, result: Mapping[str, Any]) -> None:
        """Called when a step ends, with its figures in ``result``."""

    def gaps_capped(self, max_gap_s: float, uncapped_s: float, budget_s: float) -> None:
        """Called when the demo caps recorded idle gaps at ``max_gap_s`` to wait at most ``budget_s``."""

    def replay_planned(self, plan: Any) -> None:
        """Called with the :class:`replayer.run.ReplayPlan` just before the replay starts."""


# ---------------------------------------------------------------- folders


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _files_below(folder: Path) -> list[str]:
    return sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if (path.is_file() or path.is_symlink()) and path.name != MARKER_NAME
    )


def _inspect_folder(role: str, path: str, cwd: Path) -> DemoFolder:
    """Decide whether the demo may use ``path``; raise ConfigError naming the fix when not."""
    option = FOLDER_OPTIONS[role]
    if "://" in path and not path.startswith("file://"):
        raise ConfigError(f"option '{option}' = {path!r} is not a local folder; the demo writes local "
                          "folders only (use 'replay run' for gs:// archives)")
    resolved = (cwd / Path(path.removeprefix("file://")).expanduser()).resolve()

    if _is_within(cwd, resolved):
        raise ConfigError(f"option '{option}' = {path!r} is the current folder or contains it; the demo "
                          "clears its folders on a rerun, so pick a subfolder such as ./demo-folder")
    if not resolved.exists():
        return DemoFolder(role, path, resolved, "new")

    if not resolved.is_dir():
        raise ConfigError(f"option '{option}' = {path!r} exists and is not a folder; pass another {option}")

    marker = resolved / MARKER_NAME
    present = _files_below(resolved)
    if not marker.exists():
        if not present and not any(resolved.iterdir()):
            return DemoFolder(role, path, resolved, "new")
        raise ConfigError(f"folder {path!r} exists and was not written by 'replay demo' (it has no "
                          f"{MARKER_NAME}); pass {option} with a new folder, or move {path!r} away")

    try:
        listed = json.loads(marker.read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError) as error:
        raise ConfigError(f"cannot read {str(marker)!r} ({error}); pass {option} with a new folder, "
                          f"or move {path!r} away") from error
    # A marker without a file list comes from a demo that stopped early. That
    # demo started from an absent or empty folder, so everything in it is the demo's.
    if listed is not None:
        foreign = sorted(set(present) - set(listed))
        if role == "data_root":
            # Replays of the demo archive write their sandbox rows and exports
            # under the test prefixes of this data root; they are demo output too.
            foreign = [name for name in foreign if not name.startswith(SANDBOX_PREFIXES)]
        if foreign:
            more = f" and {len(foreign) - 1} more files" if len(foreign) > 1 else ""
            raise ConfigError(f"folder {path!r} contains {foreign[0]!r}{more}, which the previous demo did "
                              f"not write; pass {option} with a new folder, or move those files away")
    return DemoFolder(role, path, resolved, "previous_demo", previous_files=len(present))


def plan_folders(options: DemoOptions, *, cwd: Path | None = None) -> tuple[DemoFolder, ...]:
    """Check the three folders before anything is written; raise ConfigError on the first problem.

    Relative paths resolve against ``cwd`` (default: the current folder).
    """
    cwd = (cwd or Path.cwd()).resolve()
    folders = tuple(_inspect_folder(role, getattr(options, role), cwd) for role in FOLDER_OPTIONS)
    for index, first in enumerate(folders):
        for second in folders[index + 1:]:
            if _is_within(first.resolved, second.resolved) or _is_within(second.resolved, first.resolved):
                raise ConfigError(
                    f"options '{FOLDER_OPTIONS[first.role]}' = {first.path!r} and "
                    f"'{FOLDER_OPTIONS[second.role]}' = {second.path!r} overlap; give each its own folder")
    return folders


def _clear_folder(folder: DemoFolder) -> None:
    # Info, not warning: replacing its own earlier output is what a rerun is for.
    # The marker check has ruled out anything else, and the CLI prints the step.
    log.info("demo.folder_cleared", folder=str(folder.resolved), role=folder.role,
                files=folder.previous_files)
    for child in folder.resolved.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _write_marker(folder: DemoFolder, *, files: list[str] | None) -> None:
    """Write the marker; ``files`` None means the demo is still writing into the folder."""
    folder.resolved.mkdir(parents=True, exist_ok=True)
    marker = {"written_by": "replay demo", "role": folder.role, "files": files,
              "updated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    temporary = folder.resolved / f".{MARKER_NAME}.tmp-{os.getpid()}"
    temporary.write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, folder.resolved / MARKER_NAME)


# ---------------------------------------------------------------- steps


class _DataRoot:
    """Point ``NBA_DATA_ROOT`` at the demo's data root while the replay runs, then restore it."""

    def __init__(self, path: str) -> None:
        from examples.nba import storage

        self.name = storage.DATA_ROOT_ENV
        self.path = path
        self.saved: str | None = None

    def __enter__(self) -> None:
        self.saved = os.environ.get(self.name)
        os.environ[self.name] = self.path

    def __exit__(self, *exc_info: object) -> None:
        if self.saved is None:
            os.environ.pop(self.name, None)
        else:
            os.environ[self.name] = self.saved


def _check_extras() -> None:
    from replayer.errors import MissingExtraError

    for module, package in (("apache_beam", "apache-beam"), ("time_machine", "time-machine"),
                            ("flask", "flask")):
        try:
            __import__(module)
        except ImportError as error:
            raise MissingExtraError(package, "replay") from error


def _gap_cap(plan: Any, speed: float | None) -> float | None:
    """Return the idle-gap cap, in recorded seconds, that fits the replay into the budget, or None."""
    if speed is None or plan.planned_duration_s <= REPLAY_BUDGET_S:
        return None
    gaps = sum(max(count - 1, 0) for count in plan.lanes.values())
    return REPLAY_BUDGET_S * speed / max(gaps, 1)


def _generate(options: DemoOptions, stages: DemoStages) -> Any:
    from examples.nba.production import count_player_lines, synthetic_payloads

    stages.stage_started("generate", f"generating {options.games} games on {options.date} (seed {options.seed})")
    try:
        payloads = synthetic_payloads(options.date, n_games=options.games, seed=options.seed)
    except ValueError as error:
        raise ConfigError(f"option '--games' = {options.games!r} is invalid: {error}") from error
    lines = count_player_lines(payloads.box_scores)
    stages.stage_finished("generate", {"games": options.games, "player_lines": lines})
    return payloads


def _record(options: DemoOptions, payloads: Any, stages: DemoStages) -> Any:
    from examples.nba.production import record_production_day

    stages.stage_started("record", f"recording the production run into {options.archive}")
    run = record_production_day(archive_uri=options.archive, game_date=options.date,
                                data_root=options.data_root, payloads=payloads, writer_id="demo")
    if run.failures or run.dropped:
        detail = " ".join(run.failures[0]) if run.failures else f"{run.dropped} events dropped"
        raise ReplayError(f"the recorded production run of the example pipeline failed ({detail}); "
                          "so there is no sound recording to replay", exit_code=1)
    stages.stage_finished("record", {
        "recorded": run.recorded, "published": sum(run.published.values()),
        "timeline_s": (run.last_publish_micros - run.first_publish_micros) / 1e6,
    })
    return run


def _replay_overrides(options: DemoOptions) -> dict[str, Any]:
    return {"archive": options.archive, "output": options.output, "date": options.date, "phases": PHASES,
            "mode": "cascade", "speed": "max" if options.speed is None else options.speed}


def run_demo(options: DemoOptions, *, stages: DemoStages | None = None) -> DemoResult:
    """Generate, record and replay the demo game day from the current folder; return what happened.

    Raises ConfigError, before writing anything, when a folder cannot be used.
    """
    from replayer.run import run_replay

    stages = stages or DemoStages()
    started = time.perf_counter()
    folders = plan_folders(options)
    _check_extras()
    for folder in folders:
        if folder.state == "previous_demo":
            _clear_folder(folder)
            stages.folder_cleared(folder)
        _write_marker(folder, files=None)
    try:
        payloads = _generate(options, stages)
        production = _record(options, payloads, stages)

        overrides = _replay_overrides(options)
        max_gap_s = options.max_gap_s
        uncapped_s: float | None = None
        with _DataRoot(options.data_root):
            if max_gap_s is None and options.speed is not None:
                probe = run_replay(CONFIG_PATH, dry_run=True, **overrides).plan
                max_gap_s = _gap_cap(probe, options.speed)
                if max_gap_s is not None:
                    uncapped_s = probe.planned_duration_s
                    stages.gaps_capped(max_gap_s, uncapped_s, REPLAY_BUDGET_S)
            stages.stage_started("replay", f"replaying phases {PHASES} into {options.output}")
            replay = run_replay(CONFIG_PATH, max_gap_s=max_gap_s, on_plan=stages.replay_planned, **overrides)
        stages.stage_finished("replay", {"exit_code": replay.exit_code, "out_dir": replay.out_dir})
    finally:
        for folder in folders:
            if folder.resolved.is_dir():
                _write_marker(folder, files=_files_below(folder.resolved))
    return DemoResult(options=options, folders=folders, production=production, replay=replay,
                      max_gap_s=max_gap_s, uncapped_duration_s=uncapped_s,
                      elapsed_s=time.perf_counter() - started)
