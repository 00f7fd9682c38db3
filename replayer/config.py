"""``replay.toml``: the replay topology and rules as frozen dataclasses.

:func:`load_config` parses and validates the file; every problem raises
:class:`replayer.errors.ConfigError` naming the file, the line (when the key
can be found in the text), the key and the bad value. Command-line options
override the file through :func:`apply_overrides`, and
:func:`resolve_selection` turns ``--date``/``--phases``/``--where`` into the
dates, phases and entry-event filters of one run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import importlib.util
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from replayer.errors import ConfigError, extra_for_missing_module, install_hint
from schemas import MISSING, DateRule, EventValidationError, resolve_pointer, split_pointer
from schemas._event import PHASE_PATTERN

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MODES = ("cascade", "isolated")
CLOCKS = ("recorded", "wall")
ADAPTER_NAMES = ("callable", "wsgi", "http")
RECEIVES = ("message", "envelope")

_TOP_KEYS = frozenset({"phases", "terminal_topics", "archive", "replay", "sandbox", "processors", "diff",
                       "thresholds"})
_ARCHIVE_KEYS = frozenset({"uri", "time_zone", "date_attribute", "date_pointer"})
_REPLAY_KEYS = frozenset({"mode", "speed", "max_gap_s", "project", "resend_redeliveries", "output", "strict"})
_SANDBOX_KEYS = frozenset({"env", "clock"})
_PROCESSOR_KEYS = frozenset({
    "name", "phase", "adapter", "target", "subscribes", "filter", "stateful", "timeout_s",
    "expected", "url", "auth_header", "id_token_audience", "receives", "delivery_attempt",
    "subscription", "path",
})
_FILTER_KEYS = frozenset({"attribute", "pointer", "equals"})
# Processor keys that only some adapters read; set on another adapter they
# would be silently ignored, so they are rejected.
_ADAPTER_KEYS = {
    "target": ("callable", "wsgi"),
    "url": ("http",),
    "auth_header": ("http",),
    "id_token_audience": ("http",),
    "receives": ("callable",),
    "path": ("wsgi",),
}


# --------------------------------------------------------------------------- data model


@dataclasses.dataclass(frozen=True)
class ValueMatch:
    """An attribute or a payload JSON pointer that must equal ``equals``.

    Used for a processor's ``filter`` and for ``--where``. Attributes are
    strings, so an attribute is compared with ``equals`` as text. A payload
    field is compared as a JSON value (:func:`json_values_equal`): its type
    must match, and numbers compare by value, so ``7`` equals ``7.0`` as in
    the diff's match keys, while ``true`` is not ``1`` and ``"1"`` is not ``1``.
    """

    equals: Any
    attribute: str | None = None
    pointer: str | None = None

    def matches(self, *, attributes: Mapping[str, str], data: bytes) -> bool:
        """True when the message's attribute or payload field equals the value."""
        if self.attribute is not None:
            return attributes.get(self.attribute) == _as_text(self.equals)
        try:
            document = json.loads(data)
        except ValueError:
            return False
        value = resolve_pointer(document, self.pointer, MISSING)
        if value is MISSING:
            return False
        return json_values_equal(value, self.equals)

    def describe(self) -> str:
        """Return ``attribute=value`` or ``/pointer=value`` as typed on the command line.

        A pointer's string value that would parse as another JSON value keeps
        its quotes (``/id="7"``), so the text selects the same events again.
        """
        if self.attribute is not None:
            return f"{self.attribute}={_as_text(self.equals)}"
        if isinstance(self.equals, str) and where_value(self.equals) == self.equals:
            return f"{self.pointer}={self.equals}"
        return f"{self.pointer}={json.dumps(self.equals, separators=(',', ':'), ensure_ascii=False)}"


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def json_values_equal(left: Any, right: Any) -> bool:
    """Compare two JSON values by type: numbers by value (``7 == 7.0``), ``true != 1``, ``"1" != 1``.

    Arrays compare item by item and objects key by key with the same rule.
    """
    if _is_number(left) and _is_number(right):
        return left == right
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left is right
    if isinstance(left, str) or isinstance(right, str):
        return isinstance(left, str) and isinstance(right, str) and left == right
    if left is None or right is None:
        return left is None and right is None
    if isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        return len(left) == len(right) and all(json_values_equal(a, b) for a, b in zip(left, right))
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(json_values_equal(left[k], right[k]) for k in left)
    return False


def _is_json_value(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool, int, float)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_json_value(item) for item in value)
    if isinstance(value, Mapping):
        return all(isinstance(key, str) and _is_json_value(item) for key, item in value.items())
    return False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def where_value(text: str) -> Any:
    """Parse the value of ``--where /pointer=TEXT``: TEXT as JSON when it is JSON, else TEXT itself.

    ``7`` is the number 7, ``true`` the boolean, ``"7"`` the string ``7``,
    and ``g1`` or ``0022300001`` (not JSON) the string as typed. ``NaN`` and
    ``Infinity``, which Python's parser would accept, stay strings.
    """
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return text


@dataclasses.dataclass(frozen=True)
class ArchiveSettings:
    """``[archive]``: where the recording is and how logical dates were assigned."""

    uri: str
    time_zone: str = "UTC"
    date_attribute: str | None = None
    date_pointer: str | None = None

    @property
    def date_rule(self) -> DateRule:
        """The rule the recorder used to assign logical dates."""
        return DateRule(attribute=self.date_attribute, json_pointer=self.date_pointer,
                        time_zone=self.time_zone)


@dataclasses.dataclass(frozen=True)
class ReplaySettings:
    """``[replay]``: mode, speed and where the replay output goes.

    ``speed`` is a multiplier of recorded time, or None for as fast as possible
    (``"max"``); ``max_gap_s`` caps idle gaps between entry events. With
    ``strict`` a damaged archive file stops the run instead of being skipped.
    """

    mode: str = "cascade"
    speed: float | None = None
    max_gap_s: float | None = None
    project: str = "replay-local"
    resend_redeliveries: bool = False
    output: str = "./replay-output"
    strict: bool = False


@dataclasses.dataclass(frozen=True)
class SandboxSettings:
    """``[sandbox]``: environment set around every processor call, and the clock the call reads."""

    env: tuple[tuple[str, str], ...] = ()
    clock: str = "recorded"


@dataclasses.dataclass(frozen=True)
class ProcessorConfig:
    """One ``[[processors]]`` entry.

    ``receives`` is ``message`` (``process(message, ctx)``) or ``envelope``
    (``process(push_body)`` returning an HTTP status, as a push handler does)
    for the callable adapter. ``delivery_attempt`` adds ``deliveryAttempt`` to
    push envelopes, as a subscription with a dead-letter policy does.
    """

    name: str
    phase: str
    adapter: str
    target: str | None
    subscribes: tuple[str, ...]
    filter: ValueMatch | None = None
    stateful: bool = False
    timeout_s: float = 30.0
    expected: bool = True
    url: str | None = None
    auth_header: str | None = dataclasses.field(default=None, repr=False)
    id_token_audience: str | None = None
    receives: str = "message"
    delivery_attempt: bool = False
    subscription: str | None = None
    path: str = "/"

    @property
    def subscription_name(self) -> str:
        """Subscription short name used in push envelopes when none was recorded."""
        return self.subscription or self.name

    def accepts(self, *, topic: str | None, attributes: Mapping[str, str], data: bytes) -> bool:
        """True when this processor subscribes to ``topic`` and its filter passes."""
        if topic not in self.subscribes:
            return False
        return self.filter is None or self.filter.matches(attributes=attributes, data=data)


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    """A parsed ``replay.toml``; ``file`` is its path, or None when built in code.

    ``terminal_topics`` are topics the pipeline publishes to that no replayed
    processor consumes (they are read by dashboards, by other teams, or not at
    all), so a cascade does not expect a subscriber for them.
    """

    phases: tuple[str, ...]
    archive: ArchiveSettings
    replay: ReplaySettings
    sandbox: SandboxSettings
    processors: tuple[ProcessorConfig, ...]
    diff: Any = None
    thresholds: Any = None
    file: str | None = None
    terminal_topics: tuple[str, ...] = ()

    @property
    def base_dir(self) -> Path:
        """Folder relative paths in the file are resolved against."""
        return Path(self.file).resolve().parent if self.file else Path.cwd()

    def processors_of(self, phase: str) -> tuple[ProcessorConfig, ...]:
        """Return the processors of ``phase``, in file order."""
        return tuple(p for p in self.processors if p.phase == phase)

    def processor(self, name: str) -> ProcessorConfig:
        """Return the processor called ``name``; raise KeyError when there is none."""
        for candidate in self.processors:
            if candidate.name == name:
                return candidate
        raise KeyError(name)


@dataclasses.dataclass(frozen=True)
class Selection:
    """Scope of one run: dates, phases in order, and ``--where`` filters on entry events.

    ``replayed_topics`` are topics that the selected phases published to in
    the recording. In cascade mode the replayed processors publish them
    again, so recorded inputs on them are not entry events.
    """

    dates: tuple[dt.date, ...]
    phases: tuple[str, ...]
    where: tuple[ValueMatch, ...] = ()
    replayed_topics: frozenset[str] = frozenset()

    def selects(self, *, attributes: Mapping[str, str], data: bytes) -> bool:
        """True when an entry event passes every ``--where`` filter."""
        return all(clause.matches(attributes=attributes, data=data) for clause in self.where)


# --------------------------------------------------------------------------- locating keys


class _Locator:
    """Finds the line of a key in the TOML text, so errors can name it."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.lines = text.splitlines()

    def line_of(self, key: str, *, table: str | None = None, index: int = 0) -> int | None:
        start, end = 0, len(self.lines)
        if table is not None:
            header = re.compile(rf"^\s*\[\[?\s*{re.escape(table)}\s*\]\]?\s*(#.*)?$")
            seen = -1
            for number, line in enumerate(self.lines):
                if header.match(line):
                    seen += 1
                    if seen == index:
                        start = number
                        break
            else:
                return None
            for number in range(start + 1, len(self.lines)):
                if re.match(r"^\s*\[", self.lines[number]):
                    end = number
                    break
        pattern = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
        inline = re.compile(rf"[{{,]\s*\"?{re.escape(key)}\"?\s*=")
        for number in range(start, end):
            if pattern.match(self.lines[number]) or inline.search(self.lines[number]):
                return number + 1
        return start + 1 if table is not None else None

    def line_of_dotted(self, dotted: str) -> int | None:
        """Return the line of a dotted key (``thresholds.latency.phase9.warn_s``), or of its nearest table.

        Table headers are compared without quotes and spaces, so
        ``[diff.topics."scores"]`` is found as ``diff.topics.scores``.
        """
        parts = dotted.split(".")
        headers: dict[str, int] = {}
        for number, line in enumerate(self.lines):
            found = re.match(r"^\s*\[\[?([^\]]+)\]\]?\s*(#.*)?$", line)
            if found:
                headers.setdefault(re.sub(r"[\s\"']", "", found.group(1)), number)
        if dotted in headers:
            return headers[dotted] + 1
        for split in range(len(parts) - 1, -1, -1):
            table, key = ".".join(parts[:split]), parts[split]
            if split and table not in headers:
                continue
            line = self.line_of(key, table=table or None)
            if line is not None:
                return line
            if split:
                return headers[table] + 1
        return None

    def with_line(self, error: ConfigError) -> ConfigError:
        """Return ``error`` with ``file:line`` in place of its leading ``file:``, when its key can be found."""
        message = str(error)
        prefix = f"{self.file}: "
        line = self.line_of_dotted(error.key) if error.key else None
        if line is None or not message.startswith(prefix):
            return error
        return ConfigError(f"{self.file}:{line}: {message[len(prefix):]}", key=error.key)

    def error(self, key: str, value: Any, problem: str, *, table: str | None = None,
              index: int = 0, dotted: str | None = None, scope: str | None = None) -> ConfigError:
        """Build the error for ``key = value``; ``scope`` names the table it is in (a processor)."""
        line = self.line_of(key.split(".")[-1], table=table, index=index)
        where = f"{self.file}:{line}" if line else self.file
        if scope is not None:
            where = f"{where}: {scope}"
        return ConfigError(f"{where}: key {dotted or key!r} = {value!r} {problem}")


_ORDINAL_SUFFIXES = {1: "st", 2: "nd", 3: "rd"}


def _ordinal(number: int) -> str:
    """Return ``1st``, ``2nd``, ``3rd``, ``4th``, ..., ``11th``, ``21st``."""
    suffix = "th" if 10 <= number % 100 <= 20 else _ORDINAL_SUFFIXES.get(number % 10, "th")
    return f"{number}{suffix}"


def processor_label(index: int, name: Any = None) -> str:
    """Name the ``[[processors]]`` table at ``index`` (from 0) for messages, counting from 1 as people do.

    ``processor 'analytics' (8th [[processors]] table)``, or only the
    position when the table has no usable name.
    """
    table = f"{_ordinal(index + 1)} [[processors]] table"
    if isinstance(name, str) and name:
        return f"processor {name!r} ({table})"
    return table


# --------------------------------------------------------------------------- parsing


def load_config(path: str | Path, *, import_targets: bool = True) -> ReplayConfig:
    """Read and validate ``replay.toml`` at ``path``.

    With ``import_targets`` every processor target is imported now, so a typo
    fails before the run starts instead of in the middle of it.
    """
    file = str(path)
    return parse_config(read_config_text(file), file=file, import_targets=import_targets)


def read_config_text(file: str) -> str:
    """Return the text of the configuration file ``file``; ConfigError when it is missing, a folder or not UTF-8."""
    path = Path(file)
    if path.is_dir():
        raise ConfigError(f"replay configuration {file!r} is a folder, not a file; pass the replay.toml "
                          f"inside it, e.g. --config {path / 'replay.toml'}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{file}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start}); "
            "TOML files must be UTF-8, so save the file as UTF-8"
        ) from error
    except FileNotFoundError as error:
        raise ConfigError(f"replay configuration {file!r} not found; pass an existing file with --config") from error
    except OSError as error:
        raise ConfigError(
            f"cannot read replay configuration {file!r}: {error.strerror}; "
            "pass an existing file with --config"
        ) from error


def load_diff_config(path: str | Path) -> ReplayConfig:
    """Read and validate a ``replay.toml`` for ``replay diff``.

    The whole file is checked as :func:`load_config` checks it. Only
    ``phases`` and ``[[processors]]`` are optional, because a diff needs just
    ``[diff]``, ``[thresholds]`` and, when given, the phase order. Targets are
    not imported.
    """
    file = str(path)
    return parse_config(read_config_text(file), file=file, import_targets=False, for_diff=True)


def parse_config(text: str, *, file: str = "<replay.toml>", import_targets: bool = True,
                 for_diff: bool = False) -> ReplayConfig:
    """Parse the text of a ``replay.toml``; see :func:`load_config` and :func:`load_diff_config`."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{file}: not valid TOML: {error}") from error
    where = _Locator(file, text)
    _reject_unknown(where, table, _TOP_KEYS, table_name=None)

    optional = for_diff and "phases" not in table
    phases = () if optional else _parse_phases(where, table.get("phases", MISSING))
    archive = _parse_archive(where, table.get("archive", {}))
    replay = _parse_replay(where, table.get("replay", {}))
    sandbox = _parse_sandbox(where, table.get("sandbox", {}))
    raw_processors = table.get("processors", [])
    if not isinstance(raw_processors, list) or not (raw_processors or for_diff):
        raise where.error("processors", raw_processors,
                          "must be one or more [[processors]] tables, each with name, phase, "
                          "adapter, target and subscribes")
    if raw_processors and optional:
        raise ConfigError(f"{file}: key 'phases' is missing; [[processors]] need the phases in order, "
                          'e.g. phases = ["phase2", "phase3"]')
    processors = tuple(
        _parse_processor(where, index, entry, phases) for index, entry in enumerate(raw_processors)
    )
    _reject_duplicate_names(where, processors)
    terminal_topics = _parse_terminal_topics(where, table.get("terminal_topics", []), processors)
    known_phases = None if optional else phases
    try:
        diff = _parse_diff_table(table.get("diff"), file, "parse_diff_rules")
        thresholds = _parse_diff_table(table.get("thresholds"), file, "parse_thresholds", phases=known_phases)
    except ConfigError as error:
        raise where.with_line(error) from error
    config = ReplayConfig(
        phases=phases, archive=archive, replay=replay, sandbox=sandbox, processors=processors,
        diff=diff, thresholds=thresholds, file=file, terminal_topics=terminal_topics,
    )
    if import_targets:
        for index, processor in enumerate(processors):
            try:
                resolve_target(processor, base_dir=config.base_dir)
            except ConfigError as error:
                raise where.error("target", processor.target, f"cannot be imported: {error}",
                                  table="processors", index=index,
                                  scope=processor_label(index, processor.name)) from error
    return config


def _reject_unknown(where: _Locator, table: Mapping[str, Any], allowed: frozenset[str], *,
                    table_name: str | None, index: int = 0, prefix: str = "",
                    scope: str | None = None) -> None:
    for key in table:
        if key not in allowed:
            raise where.error(
                key, table[key],
                f"is not a known key; allowed here: {', '.join(sorted(allowed))}",
                table=table_name, index=index, dotted=f"{prefix}{key}", scope=scope,
            )


def _parse_phases(where: _Locator, value: Any) -> tuple[str, ...]:
    if value is MISSING:
        raise ConfigError(f"{where.file}: key 'phases' is missing; list the phases in order, "
                          'e.g. phases = ["phase2", "phase3"]')
    if not isinstance(value, list) or not value or not all(isinstance(p, str) for p in value):
        raise where.error("phases", value, "must be a non-empty list of phase names in order")
    for phase in value:
        if not PHASE_PATTERN.fullmatch(phase):
            raise where.error("phases", phase, "is not a valid phase name; use lower-case letters, "
                              "digits, '_' and '-'")
    if len(set(value)) != len(value):
        raise where.error("phases", value, "lists a phase twice")
    return tuple(value)


def _parse_terminal_topics(where: _Locator, value: Any,
                           processors: tuple[ProcessorConfig, ...]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(topic, str) and topic for topic in value):
        raise where.error("terminal_topics", value, "must be a list of topic short names, e.g. "
                          '["nba-phase6-export-complete"]')
    for topic in value:
        if "/" in topic:
            raise where.error("terminal_topics", topic, "must be a topic short name, not a path")
        subscriber = next((p for p in processors if topic in p.subscribes), None)
        if subscriber is not None:
            raise where.error("terminal_topics", topic,
                              f"is subscribed to by processor {subscriber.name!r}, so it does not end "
                              "the pipeline; remove it from terminal_topics or from that processor's "
                              "'subscribes'")
    return tuple(value)


def _parse_archive(where: _Locator, table: Any) -> ArchiveSettings:
    if not isinstance(table, dict):
        raise where.error("archive", table, "must be a table")
    _reject_unknown(where, table, _ARCHIVE_KEYS, table_name="archive", prefix="archive.")
    uri = table.get("uri", "")
    if not isinstance(uri, str):
        raise where.error("uri", uri, "must be a string (a folder or gs://bucket/prefix)",
                          table="archive", dotted="archive.uri")
    for key in ("time_zone", "date_attribute", "date_pointer"):
        if key in table and not isinstance(table[key], str):
            raise where.error(key, table[key], "must be a string", table="archive",
                              dotted=f"archive.{key}")
    settings = ArchiveSettings(uri=uri, time_zone=table.get("time_zone", "UTC"),
                               date_attribute=table.get("date_attribute"),
                               date_pointer=table.get("date_pointer"))
    try:
        settings.date_rule  # noqa: B018 - validates the zone and the pointer
    except EventValidationError as error:
        key = "date_pointer" if "pointer" in str(error) else "time_zone"
        raise where.error(key, table.get(key), f"is invalid: {error}", table="archive",
                          dotted=f"archive.{key}") from error
    return settings


# Below MIN_SPEED the release offsets (recorded offset / speed) outgrow any
# wait the clock can make, and become infinite for tiny values. At MAX_SPEED
# a recorded second already takes one microsecond, so faster is "max".
MIN_SPEED = 0.001
MAX_SPEED = 1_000_000.0


def parse_speed(value: Any, *, source: str = "speed") -> float | None:
    """Parse ``max`` (None) or a multiplier from MIN_SPEED to MAX_SPEED; ValueError names what is wrong."""
    if isinstance(value, str) and value.strip().lower() == "max":
        return None
    if isinstance(value, bool):
        raise ValueError(f"{source} {value!r} is not a number or 'max'")
    try:
        number = float(value.rstrip("xX")) if isinstance(value, str) else float(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source} {value!r} is not a number or 'max'") from error
    if not MIN_SPEED <= number <= MAX_SPEED:  # also false for NaN
        raise ValueError(f"{source} {value!r} must be a number from {MIN_SPEED:g} to {MAX_SPEED:g} "
                         "(e.g. 1, 10, 0.5), or 'max' for as fast as possible")
    return number


def parse_max_gap(value: Any, *, source: str) -> float:
    """Parse a cap on idle gaps in seconds: a finite number >= 0; ValueError names what is wrong."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{source} = {value!r} must be a finite number of seconds >= 0; "
                         "leave it out to keep every gap")
    return float(value)


def _parse_replay(where: _Locator, table: Any) -> ReplaySettings:
    if not isinstance(table, dict):
        raise where.error("replay", table, "must be a table")
    _reject_unknown(where, table, _REPLAY_KEYS, table_name="replay", prefix="replay.")
    defaults = ReplaySettings()
    mode = table.get("mode", defaults.mode)
    if mode not in MODES:
        raise where.error("mode", mode, f"is not one of {', '.join(MODES)}", table="replay",
                          dotted="replay.mode")
    try:
        speed = parse_speed(table.get("speed", "max"))
    except ValueError as error:
        raise where.error("speed", table.get("speed"), f"is invalid: {error}", table="replay",
                          dotted="replay.speed") from error
    max_gap_s = table.get("max_gap_s")
    if max_gap_s is not None and (isinstance(max_gap_s, bool) or not isinstance(max_gap_s, (int, float))
                                  or not math.isfinite(max_gap_s) or max_gap_s < 0):
        raise where.error("max_gap_s", max_gap_s, "must be a finite number of seconds >= 0; leave it out "
                          "to keep every gap", table="replay", dotted="replay.max_gap_s")
    for key, kind in (("project", str), ("output", str), ("resend_redeliveries", bool), ("strict", bool)):
        if key in table and not isinstance(table[key], kind):
            raise where.error(key, table[key], f"must be a {kind.__name__}", table="replay",
                              dotted=f"replay.{key}")
    return ReplaySettings(
        mode=mode, speed=speed,
        max_gap_s=float(max_gap_s) if max_gap_s is not None else None,
        project=table.get("project", defaults.project),
        resend_redeliveries=table.get("resend_redeliveries", defaults.resend_redeliveries),
        output=table.get("output", defaults.output),
        strict=table.get("strict", defaults.strict),
    )


def _parse_sandbox(where: _Locator, table: Any) -> SandboxSettings:
    if not isinstance(table, dict):
        raise where.error("sandbox", table, "must be a table")
    _reject_unknown(where, table, _SANDBOX_KEYS, table_name="sandbox", prefix="sandbox.")
    env = table.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise where.error("env", env, "must be a table of string values, e.g. "
                          '{ DATASET_PREFIX = "test_" }', table="sandbox", dotted="sandbox.env")
    clock = table.get("clock", "recorded")
    if clock not in CLOCKS:
        raise where.error("clock", clock, f"is not one of {', '.join(CLOCKS)}", table="sandbox",
                          dotted="sandbox.clock")
    return SandboxSettings(env=tuple(sorted(env.items())), clock=clock)


def parse_value_match(value: Any) -> ValueMatch:
    """Build a :class:`ValueMatch` from ``{attribute|pointer = ..., equals = ...}``."""
    if not isinstance(value, dict):
        raise ValueError("must be a table like { attribute = \"kind\", equals = \"score\" }")
    unknown = set(value) - _FILTER_KEYS
    if unknown:
        raise ValueError(f"has unknown key {sorted(unknown)[0]!r}; allowed: attribute, pointer, equals")
    if ("attribute" in value) == ("pointer" in value):
        raise ValueError("needs exactly one of 'attribute' or 'pointer'")
    if "equals" not in value:
        raise ValueError("needs 'equals'")
    if "pointer" in value:
        problem = pointer_problem(value["pointer"])
        if problem:
            raise ValueError(f"has 'pointer' = {value['pointer']!r}, which {problem}")
    if not _is_json_value(value["equals"]):
        raise ValueError(f"has 'equals' = {value['equals']!r}, which is not a JSON value (a TOML date or time "
                         "never equals a payload field or an attribute); write it as a string in quotes")
    return ValueMatch(equals=value["equals"], attribute=value.get("attribute"),
                      pointer=value.get("pointer"))


def parse_where(text: str) -> ValueMatch:
    """Parse ``--where KEY=VALUE`` (attribute) or ``--where /pointer=VALUE`` (payload field).

    An attribute's VALUE is text, as attributes are. A payload field's VALUE is
    parsed as JSON when it is JSON, else taken as text (:func:`where_value`).
    """
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(
            f"option '--where' = {text!r} is invalid: expected ATTRIBUTE=VALUE or /json/pointer=VALUE, "
            "e.g. --where game_id=0022300001"
        )
    if key.startswith("/"):
        problem = pointer_problem(key)
        if problem:
            raise ConfigError(f"option '--where' = {text!r} is invalid: {key!r} {problem}")
        return ValueMatch(equals=where_value(value), pointer=key)
    return ValueMatch(equals=value, attribute=key)


def pointer_problem(pointer: Any) -> str | None:
    """Say what makes ``pointer`` an invalid JSON pointer (RFC 6901), or return None when it is valid."""
    if not isinstance(pointer, str):
        return "is not a string"
    if pointer and not pointer.startswith("/"):
        return "is not a JSON pointer: it must start with '/', e.g. '/game_id'"
    if re.search(r"~(?![01])", pointer):
        return ("is not a valid JSON pointer: '~' must be followed by 0 ('~0' is '~') or 1 ('~1' is '/'), "
                "e.g. '/a~1b' for the key 'a/b'")
    try:
        split_pointer(pointer)
    except ValueError as error:
        return f"is not a valid JSON pointer: {error}"
    return None


def _parse_processor(where: _Locator, index: int, entry: Any, phases: tuple[str, ...]) -> ProcessorConfig:
    if not isinstance(entry, dict):
        raise where.error("processors", entry, "entries must be tables ([[processors]])")
    scope = processor_label(index, entry.get("name"))

    def fail(key: str, value: Any, problem: str) -> ConfigError:
        return where.error(key, value, problem, table="processors", index=index, scope=scope)

    _reject_unknown(where, entry, _PROCESSOR_KEYS, table_name="processors", index=index, scope=scope)
    for key in ("name", "phase", "adapter"):
        if not isinstance(entry.get(key), str) or not entry.get(key):
            raise fail(key, entry.get(key), "is required and must be a non-empty string")
    if entry["phase"] not in phases:
        raise fail("phase", entry["phase"], f"is not a known phase; phases are {', '.join(phases)}")
    if entry["adapter"] not in ADAPTER_NAMES:
        raise fail("adapter", entry["adapter"], f"is not an adapter; use one of {', '.join(ADAPTER_NAMES)}")
    target = entry.get("target")
    if entry["adapter"] == "http":
        url = entry.get("url")
        if not isinstance(url, str) or not re.match(r"^https?://", url):
            raise fail("url", url, "is required for the http adapter: an http:// or https:// URL")
    elif not isinstance(target, str) or ":" not in target:
        raise fail("target", target, "must be 'module:attribute' (or 'file.py:attribute')")
    for key, adapters in _ADAPTER_KEYS.items():
        if key in entry and entry["adapter"] not in adapters:
            users = " or ".join(f"adapter = {name!r}" for name in adapters)
            raise fail(key, "<redacted>" if key == "auth_header" else entry[key],
                       f"is read only with {users}, not adapter = {entry['adapter']!r}; remove the key "
                       "or change the adapter")
    subscribes = entry.get("subscribes")
    if not isinstance(subscribes, list) or not subscribes or not all(isinstance(t, str) and t for t in subscribes):
        raise fail("subscribes", subscribes, "must be a non-empty list of topic names")
    bad_topic = next((t for t in subscribes if "/" in t), None)
    if bad_topic is not None:
        raise fail("subscribes", bad_topic, "must be a topic short name, not a path")
    match = None
    if "filter" in entry:
        try:
            match = parse_value_match(entry["filter"])
        except ValueError as error:
            raise fail("filter", entry["filter"], str(error)) from error
    timeout_s = entry.get("timeout_s", 30)
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
        raise fail("timeout_s", timeout_s, "must be a positive number of seconds")
    for key in ("stateful", "expected", "delivery_attempt"):
        if key in entry and not isinstance(entry[key], bool):
            raise fail(key, entry[key], "must be true or false")
    for key in ("auth_header", "id_token_audience", "subscription", "path"):
        if key in entry and not isinstance(entry[key], str):
            raise fail(key, "<redacted>" if key == "auth_header" else entry[key], "must be a string")
    receives = entry.get("receives", "message")
    if receives not in RECEIVES:
        raise fail("receives", receives, f"is not one of {', '.join(RECEIVES)}")
    if not PHASE_PATTERN.fullmatch(entry["name"].lower()) or "/" in entry["name"]:
        raise fail("name", entry["name"], "must use letters, digits, '_' and '-'")
    return ProcessorConfig(
        name=entry["name"], phase=entry["phase"], adapter=entry["adapter"], target=target,
        subscribes=tuple(subscribes), filter=match, stateful=entry.get("stateful", False),
        timeout_s=float(timeout_s), expected=entry.get("expected", True), url=entry.get("url"),
        auth_header=entry.get("auth_header"), id_token_audience=entry.get("id_token_audience"),
        receives=receives, delivery_attempt=entry.get("delivery_attempt", False),
        subscription=entry.get("subscription"), path=entry.get("path", "/"),
    )


def _reject_duplicate_names(where: _Locator, processors: tuple[ProcessorConfig, ...]) -> None:
    first_index: dict[str, int] = {}
    for index, processor in enumerate(processors):
        if processor.name in first_index:
            first = _ordinal(first_index[processor.name] + 1)
            raise where.error("name", processor.name,
                              f"is also the name of the {first} [[processors]] table; names must be unique",
                              table="processors", index=index, scope=processor_label(index, processor.name))
        first_index[processor.name] = index


def _parse_diff_table(table: Any, file: str, parser_name: str, **options: Any) -> Any:
    """Hand ``[diff]``/``[thresholds]`` to the diff package's parser when it is installed."""
    if table is None:
        return None
    try:
        rules = importlib.import_module("replayer.diff.rules")
    except ModuleNotFoundError:
        return dict(table)
    parser = getattr(rules, parser_name, None)
    if parser is None:
        return dict(table)
    return parser(table, file=file, **options)


# --------------------------------------------------------------------------- targets


def resolve_target(processor: ProcessorConfig, *, base_dir: Path | None = None) -> Callable[..., Any] | None:
    """Import a processor's ``module:attribute`` (or ``file.py:attribute``) target.

    The configuration file's folder is put on ``sys.path`` first, so a target
    like ``app.main:app`` next to ``replay.toml`` imports as it would there.
    Returns None for the http adapter, which has no target.
    """
    if processor.target is None:
        return None
    module_name, _, attribute = processor.target.partition(":")
    base = base_dir or Path.cwd()
    # Imported under the publish guard: a module-level PublisherClient is then
    # built without a credential lookup and pointed at a closed loopback port.
    from replayer.sandbox import publish_guard  # here: replayer.sandbox imports this module

    try:
        with publish_guard():
            module = _import_module(module_name, base)
    except Exception as error:  # any import-time failure of user code is a config problem
        message = f"importing {module_name!r} failed with {type(error).__name__}: {error}"
        extra = extra_for_missing_module(error)
        if extra is not None:
            message += f"; install the {extra} extra: {install_hint(extra)}"
        raise ConfigError(message) from error
    value: Any = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise ConfigError(f"module {module_name!r} has no attribute {attribute!r}")
        value = getattr(value, part)
    if not callable(value):
        raise ConfigError(f"{processor.target!r} is a {type(value).__name__}, not a callable or WSGI app")
    return value


def _import_module(module_name: str, base: Path) -> Any:
    """Import ``module_name``, or the file ``base/module_name`` when it ends in ``.py``."""
    if not module_name.endswith(".py"):
        if str(base) not in sys.path:
            sys.path.insert(0, str(base))
        return importlib.import_module(module_name)
    module_path = (base / module_name).resolve()
    spec = importlib.util.spec_from_file_location(f"_replay_target_{module_path.stem}", module_path)
    if spec is None or spec.loader is None or not module_path.is_file():
        raise FileNotFoundError(f"no such file {str(module_path)!r}")
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[spec.name]  # a later attempt must not find a half-run module
            raise
    return module


# --------------------------------------------------------------------------- overrides and selection


def apply_overrides(config: ReplayConfig, *, archive: str | None = None, mode: str | None = None,
                    speed: Any = None, max_gap_s: float | None = None, output: str | None = None,
                    resend_redeliveries: bool | None = None, project: str | None = None,
                    clock: str | None = None, strict: bool | None = None) -> ReplayConfig:
    """Return ``config`` with command-line values (those not None) replacing the file's."""
    replay = config.replay
    changes: dict[str, Any] = {}
    if mode is not None:
        if mode not in MODES:
            raise ConfigError(f"option '--mode' = {mode!r} is not one of {', '.join(MODES)}")
        changes["mode"] = mode
    if speed is not None:
        try:
            changes["speed"] = parse_speed(speed, source="option '--speed'")
        except ValueError as error:
            raise ConfigError(str(error)) from error
    if max_gap_s is not None:
        try:
            changes["max_gap_s"] = parse_max_gap(max_gap_s, source="option '--max-gap'")
        except ValueError as error:
            raise ConfigError(str(error)) from error
    for key, value in (("output", output), ("resend_redeliveries", resend_redeliveries),
                       ("project", project), ("strict", strict)):
        if value is not None:
            changes[key] = value
    sandbox = config.sandbox
    if clock is not None:
        if clock not in CLOCKS:
            raise ConfigError(f"option '--clock' = {clock!r} is not one of {', '.join(CLOCKS)}")
        sandbox = dataclasses.replace(sandbox, clock=clock)
    archive_settings = config.archive if archive is None else dataclasses.replace(config.archive, uri=archive)
    return dataclasses.replace(config, replay=dataclasses.replace(replay, **changes), sandbox=sandbox,
                               archive=archive_settings)


def _location(uri: str) -> tuple[str, tuple[str, ...]]:
    """Split a folder URI into its scheme and path parts; local paths are made absolute."""
    if "://" in uri and not uri.startswith("file://"):
        scheme, _, rest = uri.partition("://")
        return scheme, tuple(part for part in rest.split("/") if part)
    path = uri[len("file://"):] if uri.startswith("file://") else uri
    return "file", Path(path).expanduser().resolve().parts


def check_output_folder_path(output: str, *, option: str = "--output") -> None:
    """Reject a local output folder that is an existing file or lies under one; gs:// URIs pass."""
    scheme, _ = _location(output)
    if scheme != "file":
        return
    path = Path(output[len("file://"):] if output.startswith("file://") else output).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"option {option!r} = {output!r} is a file, not a folder; pass a folder path")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"option {option!r} = {output!r} lies under the file {str(parent)!r}, so the "
                                  "folder cannot be created; pass a folder path")
            break


def check_output_location(output: str, archives: Mapping[str, str], *, option: str = "--output",
                          reject_archive_inside: bool = True) -> None:
    """Reject an output folder that is unusable or overlaps an archive, before anything is read or written.

    ``archives`` maps a role ("the archive", "archive A") to its URI. Writing
    into an archive would add the replay's files to its partitions, and a
    later read would take them for recorded events. With
    ``reject_archive_inside`` an archive inside the output folder is rejected
    too, because the run writes its own ``archive/`` and report files there.
    """
    check_output_folder_path(output, option=option)
    out = _location(output)
    for role, uri in archives.items():
        archive = _location(uri)
        if out[0] != archive[0]:
            continue
        if out[1][:len(archive[1])] == archive[1]:
            raise ConfigError(f"option {option!r} = {output!r} is inside {role} {uri!r}; writing there would "
                              "mix replay files into the recording, so pass a folder outside it")
        if reject_archive_inside and archive[1][:len(out[1])] == out[1]:
            raise ConfigError(f"option {option!r} = {output!r} contains {role} {uri!r}; the replay writes its "
                              "own archive and reports there, so pass a folder that does not contain it")


def _phase_number(name: str) -> int | None:
    digits = re.findall(r"\d+", name)
    return int(digits[-1]) if digits else None


def _resolve_phase(config: ReplayConfig, token: str, option: str) -> str:
    if token in config.phases:
        return token
    if token.isdigit():
        for phase in config.phases:
            if _phase_number(phase) == int(token):
                return phase
    raise ConfigError(f"option {option!r} = {token!r} is not a configured phase; phases are "
                      f"{', '.join(config.phases)} (names, or the numbers in their names)")


def select_phases(config: ReplayConfig, *, phases: str | Iterable[str] | None = None,
                  start_phase: str | None = None, skip_phase: Iterable[str] = ()) -> tuple[str, ...]:
    """Resolve ``--phases 2-6`` / ``phase3,phase5``, ``--start-phase`` and ``--skip-phase``.

    Phase numbers map to the configured phases by the digits in their names;
    the result keeps the configured order.
    """
    chosen: list[str] = list(config.phases)
    if phases:
        tokens = phases.split(",") if isinstance(phases, str) else list(phases)
        wanted: set[str] = set()
        for token in (t.strip() for t in tokens if t.strip()):
            low, dash, high = token.partition("-")
            if dash and low.isdigit() and high.isdigit():
                first = config.phases.index(_resolve_phase(config, low, "--phases"))
                last = config.phases.index(_resolve_phase(config, high, "--phases"))
                if first > last:
                    raise ConfigError(f"option '--phases' = {token!r} is an empty range; "
                                      f"write the lower phase first, e.g. {high}-{low}")
                wanted.update(config.phases[first:last + 1])
            else:
                wanted.add(_resolve_phase(config, token, "--phases"))
        chosen = [p for p in config.phases if p in wanted]
    if start_phase:
        start = config.phases.index(_resolve_phase(config, start_phase, "--start-phase"))
        chosen = [p for p in chosen if config.phases.index(p) >= start]
    skipped = {_resolve_phase(config, token, "--skip-phase") for token in skip_phase}
    chosen = [p for p in chosen if p not in skipped]
    if not chosen:
        raise ConfigError("the phase options select no phase; check --phases, --start-phase and --skip-phase")
    return tuple(chosen)


def resolve_dates(*, date: Any = None, start_date: Any = None, end_date: Any = None,
                  available: Iterable[dt.date] = ()) -> tuple[dt.date, ...]:
    """Resolve ``--date`` or ``--start-date/--end-date``; all archived dates when none is given."""
    def parse(value: Any, option: str) -> dt.date:
        try:
            return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
        except ValueError as error:
            raise ConfigError(f"option {option!r} = {value!r} is not a date; use YYYY-MM-DD") from error

    if date is not None and (start_date is not None or end_date is not None):
        raise ConfigError("options '--date' and '--start-date/--end-date' exclude each other; use one")
    if date is not None:
        dates = [date] if isinstance(date, (str, dt.date)) else list(date)
        return tuple(sorted({parse(d, "--date") for d in dates}))
    if start_date is None and end_date is None:
        return tuple(sorted(set(available)))
    first = parse(start_date, "--start-date") if start_date is not None else min(available, default=None)
    last = parse(end_date, "--end-date") if end_date is not None else max(available, default=None)
    if first is None or last is None:
        raise ConfigError("the archive has no dates; pass both --start-date and --end-date")
    if first > last:
        raise ConfigError(f"option '--start-date' = {first.isoformat()!r} is after '--end-date' = "
                          f"{last.isoformat()!r}")
    return tuple(first + dt.timedelta(days=n) for n in range((last - first).days + 1))


def check_cascade_routing(config: ReplayConfig, selection: Selection,
                          recorded_output_topics: Mapping[str, Iterable[str]]) -> None:
    """Reject a cascade run that would stop before a later selected phase.

    ``recorded_output_topics`` maps each phase to the topics its recorded
    OUTPUT events were published to. A topic that a selected processor
    subscribes to is routed. Any other topic of a selected phase is checked
    only when a later phase is selected, because the outputs of the last
    selected phase end this run. Such a topic is fine when it is listed in
    ``terminal_topics``, or when every processor subscribed to it belongs to
    a phase after the last selected one. It is an error when no processor
    subscribes to it (a typo in 'subscribes' would otherwise silently cut the
    chain), and when its subscribers belong to a skipped phase that a later
    selected phase depends on.
    """
    if config.replay.mode != "cascade":
        return
    selected = set(selection.phases)
    subscribed = {topic for p in config.processors if p.phase in selected for topic in p.subscribes}
    terminal = set(config.terminal_topics)
    last_selected = max(config.phases.index(phase) for phase in selection.phases)
    for phase in selection.phases:
        if config.phases.index(phase) >= last_selected:
            continue
        for topic in sorted(set(recorded_output_topics.get(phase, ()))):
            if topic in subscribed or topic in terminal:
                continue
            consumers = sorted({p.phase for p in config.processors if topic in p.subscribes},
                               key=config.phases.index)
            if not consumers:
                raise ConfigError(
                    f"{_subscribes_location(config)}: recorded topic {topic!r} of phase {phase!r} has no "
                    f"subscriber in 'processors.subscribes', but phases after it are selected "
                    f"({', '.join(selection.phases)}), so the cascade would stop there; add the topic "
                    "to the 'subscribes' of the processor that reads it, or to 'terminal_topics' if "
                    "nothing in the pipeline reads it"
                )
            skipped = [q for q in consumers if config.phases.index(q) < last_selected]
            if skipped:
                raise ConfigError(
                    f"{_subscribes_location(config)}: recorded topic {topic!r} of phase {phase!r} is "
                    f"read by phase {skipped[0]!r}, which is not selected, while a later phase is "
                    f"({', '.join(selection.phases)}); the cascade cannot pass through a skipped phase, "
                    f"so select {skipped[0]!r} or end --phases before it"
                )


def _subscribes_location(config: ReplayConfig) -> str:
    """``file:line`` of the first 'subscribes' key, or the file, for routing errors."""
    if not config.file:
        return "<config>"
    path = Path(config.file)
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    line = _Locator(config.file, text).line_of("subscribes")
    return f"{config.file}:{line}" if line else config.file
