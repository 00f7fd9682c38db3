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


class MissingExtraError(ReplayError):
    """An optional dependency group is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"this command needs {package}, which is not installed; "
            f"install it with: pip install 'pipeline-replay[{extra}]'"
        )
