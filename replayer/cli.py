"""The ``replay`` command line: one click group, subcommands in their own modules.

Every subcommand raises :class:`replayer.errors.ReplayError` (or a subclass of
``recorder.StorageError``) for bad input; :func:`main` prints it as one line
and exits non-zero, with the traceback only under ``--debug``.
"""

from __future__ import annotations

import sys
import traceback
import warnings

import click

from recorder._logging import configure_logging
from replayer.errors import ReplayError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    default="auto",
    show_default=True,
    help="Log format on standard error; auto is JSON unless it is a terminal.",
)
@click.pass_context
def cli(ctx: click.Context, debug: bool, log_format: str) -> None:
    """Record Pub/Sub pipeline traffic and replay recorded dates through your processors."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    json_output = {"auto": None, "json": True, "console": False}[log_format]
    configure_logging(json_output=json_output, level="DEBUG" if debug else None, force=True)


def _register_subcommands() -> None:
    # Each module adds its commands to ``cli``; importing them here keeps the
    # group in one place while every command lives in a module of its own.
    from replayer import _cli_archive  # noqa: F401  (ls, show, validate)

    for optional in ("_cli_record", "_cli_run", "_cli_diff", "_cli_demo"):
        try:
            __import__(f"replayer.{optional}")
        except ModuleNotFoundError as error:
            if error.name != f"replayer.{optional}":
                raise


# google-api-core (2.44 checked) warns once per Google client package imported
# when the running Python nears or passes its end of life, so a command on
# Python 3.10 printed several of these before its own output. All three
# variants (deprecated, past end of life, unsupported) start with this text.
_PYTHON_SUPPORT_WARNING = r"You are using a (non-supported )?Python version"
_PYTHON_SUPPORT_WARNING_MODULE = r"google\.api_core\."


def silence_python_support_warnings() -> None:
    """Ignore google-api-core's Python end-of-support FutureWarning; every other warning still shows."""
    warnings.filterwarnings("ignore", message=_PYTHON_SUPPORT_WARNING, category=FutureWarning,
                            module=_PYTHON_SUPPORT_WARNING_MODULE)


INTERRUPTED_EXIT_CODE = 130


def _wraps_interrupt(error: BaseException) -> bool:
    """True when ``error`` carries a Ctrl-C, as Beam's RuntimeError around a KeyboardInterrupt does."""
    try:
        from replayer.run import interrupted_by_user
    except ImportError:  # this guard reports the original error, whatever breaks here
        return False
    return interrupted_by_user(error)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``replay`` console script."""
    # Before the subcommands import the Google clients, which warn at import.
    silence_python_support_warnings()
    _register_subcommands()
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        # Commands return their exit code (e.g. 1 when a threshold is exceeded).
        exit_code = cli.main(args=args, prog_name="replay", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(INTERRUPTED_EXIT_CODE)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except ReplayError as error:
        if debug:
            traceback.print_exc()
        # 130 is the shell's code for Ctrl-C: the user stopped the command, nothing failed.
        click.echo(str(error) if error.exit_code == INTERRUPTED_EXIT_CODE else f"error: {error}", err=True)
        sys.exit(error.exit_code)
    except Exception as error:  # the last guard: one line, unless --debug
        from recorder._storage import StorageError

        if debug:
            traceback.print_exc()
        if _wraps_interrupt(error):
            click.echo("interrupted", err=True)
            sys.exit(INTERRUPTED_EXIT_CODE)
        if isinstance(error, StorageError):
            click.echo(f"error: {error}", err=True)
            sys.exit(2)
        if debug:
            click.echo(f"error: unexpected {type(error).__name__}: {error}", err=True)
            sys.exit(1)
        click.echo(
            f"error: unexpected {type(error).__name__}: {error} (run with --debug for the traceback)",
            err=True,
        )
        sys.exit(1)
    else:
        sys.exit(exit_code if isinstance(exit_code, int) else 0)


if __name__ == "__main__":
    main()
