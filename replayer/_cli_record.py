"""``replay record tap`` (archive Pub/Sub subscriptions) and ``replay import`` (convert old archives)."""

from __future__ import annotations

import dataclasses
import json
import signal
import threading

import click

from recorder._import import (
    DATA_ENCODINGS,
    IMPORT_FORMATS,
    ImportMapping,
    ImportSourceError,
    import_files,
)
from recorder._redaction import RedactionRules
from recorder._tap import Tap, TapConfigError, TapUnreachableError, tap_config_from_options
from recorder._writer import CodecUnavailableError
from replayer.cli import cli
from replayer.errors import ConfigError, ReplayError
from schemas import DateRule, Direction, EventValidationError, parse_date, parse_rfc3339_micros


@cli.group("record")
def record() -> None:
    """Record live Pub/Sub traffic into an archive."""


@record.command("tap")
@click.option("--archive", "archive_uri", help="Archive to write: a local folder or gs://bucket/prefix.")
@click.option("--subscription", "subscriptions", multiple=True, metavar="SUB:PHASE:DIRECTION[:PROCESSOR]",
              help="A subscription to archive and what its messages are; repeat for several.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Tap TOML file with [archive] and [[subscriptions]]; options override it.")
@click.option("--project", help="Project of short subscription names (default: PUBSUB_PROJECT_ID).")
@click.option("--time-zone", help="IANA time zone whose date of the publish time is the logical date.")
@click.option("--date-attribute", help="Attribute holding the logical date (YYYY-MM-DD).")
@click.option("--date-pointer", help="JSON pointer to the logical date in JSON payloads.")
@click.option("--codec", help="Avro codec of archive files (null, deflate, snappy, zstandard).")
@click.option("--writer-id", help="Writer id in file names (default: <hostname>-<pid>).")
@click.option("--flush-messages", "flush_max_messages", type=int,
              help="Write and acknowledge after this many held messages.")
@click.option("--flush-interval-secs", type=float, help="Write and acknowledge at least this often, in seconds.")
@click.option("--max-outstanding", "max_outstanding_messages", type=int,
              help="Flow control: maximum messages held and not yet acknowledged.")
@click.option("--stats-interval-secs", type=float, help="Seconds between tap.progress log lines.")
@click.option("--lease-extension-secs", type=int,
              help="Maximum ack deadline extension, 10-600 s; a killed tap's messages are redelivered "
                   "this long after its last extension (default 10).")
@click.option("--connect-timeout-secs", type=float,
              help="Seconds to wait at start-up for Pub/Sub to respond before failing (default 30).")
@click.option("--json", "json_output", is_flag=True, help="Print the final counters as JSON.")
def tap_command(archive_uri, subscriptions, config_path, project, json_output, **options) -> int:
    """Archive every message of Pub/Sub subscriptions; acknowledge only what is written.

    Stops on SIGINT or SIGTERM after writing and acknowledging the messages it holds.
    """
    try:
        config = tap_config_from_options(archive_uri=archive_uri, subscription_specs=subscriptions,
                                          config_path=config_path, project=project, **options)
        tap = Tap(config)
    except (TapConfigError, EventValidationError, ValueError) as error:
        raise ConfigError(str(error)) from error
    previous = _install_stop_handlers(tap)
    try:
        stats = tap.run()
    except TapUnreachableError as error:
        raise ReplayError(f"the tap could not start: {error}", exit_code=1) from error
    except RuntimeError as error:
        raise ReplayError(f"the tap stopped: {error}", exit_code=1) from error
    finally:
        _restore_handlers(previous)
    if json_output:
        click.echo(json.dumps(dataclasses.asdict(stats)))
    else:
        click.echo(f"archived {stats.archived} messages, acknowledged {stats.acked}, "
                   f"returned {stats.nacked} to Pub/Sub", err=True)
    return 0


def _install_stop_handlers(tap: Tap) -> dict:
    previous = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, lambda *_: tap.stop())
    return previous


def _restore_handlers(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


@cli.command("import")
@click.argument("sources", nargs=-1, required=True)
@click.option("--archive", "archive_uri", required=True, help="Archive to write: a local folder or gs://bucket/prefix.")
@click.option("--format", "source_format", type=click.Choice(IMPORT_FORMATS), default="auto", show_default=True,
              help="Source format; auto reads each Avro file's writer schema.")
@click.option("--phase", required=True, help="Phase the imported messages belong to.")
@click.option("--direction", type=click.Choice(["INPUT", "OUTPUT"], case_sensitive=False), required=True,
              help="Whether the messages arrived at (INPUT) or left (OUTPUT) the phase.")
@click.option("--processor", help="Processor that received or produced the messages.")
@click.option("--topic", help="Topic short name of the messages.")
@click.option("--subscription", help="Subscription short name of the messages.")
@click.option("--time-zone", default="UTC", show_default=True,
              help="IANA time zone whose date of the publish time is the logical date.")
@click.option("--date-attribute", help="Attribute holding the logical date (YYYY-MM-DD).")
@click.option("--date-pointer", help="JSON pointer to the logical date in JSON payloads.")
@click.option("--date", "logical_date", help="Logical date for every imported message (YYYY-MM-DD).")
@click.option("--publish-time", help="RFC 3339 publish time for records that have none "
              "(Cloud Storage subscription files without metadata).")
@click.option("--data-encoding", type=click.Choice(DATA_ENCODINGS), default="auto", show_default=True,
              help="JSON lines: how a string 'data' is decoded.")
@click.option("--codec", help="Avro codec of archive files.")
@click.option("--writer-id", help="Writer id in file names (default: <hostname>-<pid>).")
@click.option("--json", "json_output", is_flag=True, help="Print the result as JSON.")
def import_command(sources, archive_uri, source_format, phase, direction, processor, topic, subscription,
                   time_zone, date_attribute, date_pointer, logical_date, publish_time, data_encoding,
                   codec, writer_id, json_output) -> int:
    """Convert Dataflow, Cloud Storage subscription, JSON lines or message Avro files into the archive.

    Exits 1 when records were skipped (each is listed with its file and record number).
    """
    try:
        mapping = ImportMapping(
            phase=phase, direction=Direction(direction.upper()), processor=processor, topic=topic,
            subscription=subscription,
            date_rule=DateRule(attribute=date_attribute, json_pointer=date_pointer, time_zone=time_zone),
            logical_date=parse_date(logical_date, field="--date") if logical_date else None,
            redaction=RedactionRules.from_env(),
        )
        default_publish_time = parse_rfc3339_micros(publish_time) if publish_time else None
        result = import_files(list(sources), archive_uri=archive_uri, mapping=mapping, format=source_format,
                              data_encoding=data_encoding, default_publish_time=default_publish_time,
                              writer_id=writer_id, codec=codec)
    except (ImportSourceError, EventValidationError, CodecUnavailableError) as error:
        raise ConfigError(str(error)) from error
    if json_output:
        click.echo(json.dumps(dataclasses.asdict(result)))
    else:
        click.echo(f"imported {result.imported} of {result.records_read} records from {result.files} "
                   f"file(s) into {len(result.written)} archive file(s)")
        for bad in result.bad:
            click.echo(f"skipped {bad.file} record {bad.record}: {bad.reason}", err=True)
    return 1 if result.bad else 0
