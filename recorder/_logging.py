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

import structlog

_configured = False


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
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(name: str):
    """Return a structlog logger bound to ``logger=name``."""
    return structlog.get_logger(logger=name)
