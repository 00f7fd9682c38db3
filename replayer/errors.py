"""Errors the CLI turns into one clear line and a non-zero exit code."""


class ReplayError(Exception):
    """A user-facing error: names the bad value, where it came from, and the fix.

    ``exit_code`` is what the CLI exits with (2 for bad input or configuration).
    """

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(ReplayError):
    """``replay.toml`` or a command-line option has a bad key or value.

    ``key`` is the dotted TOML key at fault (``thresholds.latency.phase3``)
    when known, so the config loader can add the line it is on.
    """

    def __init__(self, message: str, *, exit_code: int | None = None, key: str | None = None) -> None:
        super().__init__(message, exit_code=exit_code)
        self.key = key


# Top-level modules that an extra of setup.py installs, so an import that
# fails on one of them can name the extra. ``werkzeug`` comes with flask.
EXTRA_OF_MODULE = {
    "apache_beam": "replay",
    "flask": "replay",
    "werkzeug": "replay",
    "requests": "replay",
    "time_machine": "replay",
}


def install_hint(extra: str) -> str:
    """Return the pip commands that install ``extra``, from the package index and from a clone."""
    return f"pip install 'pipeline-replay[{extra}]' (from a clone: pip install '.[{extra}]')"


def extra_for_missing_module(error: BaseException) -> str | None:
    """Return the extra that provides the module a ModuleNotFoundError names, or None."""
    if not isinstance(error, ModuleNotFoundError) or not error.name:
        return None
    return EXTRA_OF_MODULE.get(error.name.partition(".")[0])


class MissingExtraError(ReplayError):
    """An optional dependency group is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"this command needs {package}, which is not installed; "
            f"install the {extra} extra: {install_hint(extra)}"
        )
