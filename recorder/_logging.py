"""structlog set up once for the whole tool.

JSON lines with a Cloud Logging ``severity`` key when standard error is not a
terminal (Cloud Run, Dataflow, CI); coloured, readable lines otherwise.
Callers log stable event names with the same keys every time and never log
payloads, secrets or request headers.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

import structlog

_configured = False


class _StderrLogger:
    """Writes each rendered line to the current ``sys.stderr``.

    Looked up at every call rather than at configuration time, so a stream
    swapped in later (a test runner, a daemonised process) is used, and a
    closed stream never turns a log call into an exception in the caller.
    """

    _lock = threading.Lock()

    def msg(self, message: str) -> None:
        with self._lock:
            try:
                print(message, file=sys.stderr, flush=True)
            except (OSError, ValueError):
                pass

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _stderr_logger_factory(*args) -> _StderrLogger:
    return _StderrLogger()


def _add_severity(logger, method_name: str, event_dict: dict) -> dict:
    # Cloud Logging reads the level from "severity" in structured JSON lines.
    level = event_dict.get("level", method_name)
    event_dict["severity"] = {"warn": "WARNING"}.get(level, level.upper())
    return event_dict


def configure_logging(*, json_output: bool | None = None, level: str | None = None, force: bool = False) -> None:
    """Configure structlog; later calls are ignored unless ``force`` is set.

    ``json_output`` defaults to true when standard error is not a terminal;
    ``level`` defaults to ``REPLAY_LOG_LEVEL`` or INFO.
    """
    global _configured
    if _configured and not force:
        return
    if json_output is None:
        json_output = not sys.stderr.isatty()
    level_name = (level or os.environ.get("REPLAY_LOG_LEVEL") or "INFO").upper()
    numeric_level = getattr(logging, level_name, None)
    if not isinstance(numeric_level, int):
        raise ValueError(
            f"log level {level_name!r} is not one of DEBUG, INFO, WARNING, ERROR"
        )
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json_output:
        processors += [_add_severity, structlog.processors.format_exc_info,
                       structlog.processors.JSONRenderer()]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=_stderr_logger_factory,
        cache_logger_on_first_use=False,
    )
    _configured = True


class _NamedLogger:
    """A logger bound to ``logger=name`` that follows later ``configure_logging`` calls.

    Binding at import time would freeze whatever configuration exists then
    (structlog's default prints to standard output), so the binding happens
    at each call, after the CLI or the application has configured logging.
    """

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, method: str):
        # structlog's own default prints to standard output, which would mix
        # logs into a command's --json output, so an unconfigured process
        # gets this tool's configuration; an application's own wins.
        if not structlog.is_configured():
            configure_logging()
        return getattr(structlog.get_logger().bind(logger=self._name), method)


def get_logger(name: str) -> _NamedLogger:
    """Return a structlog logger that adds ``logger=name`` to every event.

    ``logger`` cannot go through ``structlog.get_logger(**initial_values)``,
    where it collides with ``wrap_logger``'s own parameter.
    """
    return _NamedLogger(name)
