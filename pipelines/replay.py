"""The replay as a Beam pipeline.

``ReadArchive`` lists the partition files of the chosen dates and phases and
reads each file in a DoFn through the project's storage layer and tolerant
reader (Beam counters for files, records and damaged files).
``KeyIntoLanes`` keys entry events by replay lane. ``ReplayLaneFn`` keeps
the first delivery of each event, replays the lane through the sandbox,
paced, and writes its outputs (an archive with ``source = replay``) and call
records. ``WriteLaneSummaries`` collects the lane summaries into
``<out>/lanes.json`` for the launcher.

The in-process FnApiRunner is named explicitly for ``DirectRunner`` (or no
runner), because Beam 2.77's DirectRunner otherwise first tries to download
the Prism runner.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import typing
from typing import Any, Iterable, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions

from recorder._reader import DamagedFile, dedupe_key, event_from_datum, read_event_file
from recorder._storage import join_uri, open_storage
from recorder._writer import ArchiveWriter
from replayer.config import ReplayConfig, Selection
from replayer.lane import EntryDelivery, LaneExecutor, route_entry_event
from schemas import RecordedEvent

METRICS_NAMESPACE = "replay"
IN_PROCESS_RUNNERS = frozenset({"directrunner", "direct", "fnapirunner"})
LANE_SUMMARIES_FILE = "lanes.json"
_WRITER_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def writer_id_for(lane: str) -> str:
    """A valid archive writer id (file-name safe, at most 63 characters) for a lane."""
    return _WRITER_ID_UNSAFE.sub("_", lane)[:63]


class _ListPartitionFilesFn(beam.DoFn):
    """Lists the ``.avro`` files of one ``date=/phase=`` partition."""

    def __init__(self, archive_uri: str) -> None:
        self.archive_uri = archive_uri

    def setup(self) -> None:
        self.storage = open_storage(self.archive_uri)

    def process(self, partition: tuple[str, str]) -> Iterable[str]:
        date_text, phase = partition
        prefix = join_uri(self.archive_uri, f"date={date_text}", f"phase={phase}")
        try:
            infos = list(self.storage.list(prefix))
        except FileNotFoundError:
            return
        for info in infos:
            if info.uri.endswith(".avro"):
                yield info.uri


class _ReadArchiveFileFn(beam.DoFn):
    """Reads one archive file with the tolerant reader, counting what it met."""

    def __init__(self, archive_uri: str, *, strict: bool) -> None:
        self.archive_uri = archive_uri
        self.strict = strict
        self.files_read = Metrics.counter(METRICS_NAMESPACE, "files_read")
        self.records_read = Metrics.counter(METRICS_NAMESPACE, "records_read")
        self.damaged_files = Metrics.counter(METRICS_NAMESPACE, "damaged_files")
        self.damaged_records_recovered = Metrics.counter(METRICS_NAMESPACE, "damaged_records_recovered")

    def setup(self) -> None:
        self.storage = open_storage(self.archive_uri)

    def _on_damage(self, damaged: DamagedFile) -> None:
        self.damaged_files.inc()
        self.damaged_records_recovered.inc(damaged.records_recovered)

    def process(self, uri: str) -> Iterable[RecordedEvent]:
        self.files_read.inc()
        for event in read_event_file(self.storage, uri, strict=self.strict, on_damage=self._on_damage):
            self.records_read.inc()
            yield event


class ReadArchive(beam.PTransform):
    """Reads the recorded events of ``dates`` x ``phases`` from an archive (local or gs://).

    Files are listed inside the pipeline, so building the pipeline needs no
    access to the archive (a Dataflow job for a 30-day range is built offline).
    """

    def __init__(self, archive_uri: str, *, dates: Sequence[Any], phases: Sequence[str],
                 strict: bool = False) -> None:
        super().__init__()
        self.archive_uri = archive_uri
        self.partitions = [(date.isoformat(), phase) for date in dates for phase in phases]
        self.strict = strict

    def expand(self, pbegin):
        return (
            pbegin
            | "Partitions" >> beam.Create(self.partitions)
            | "ListFiles" >> beam.ParDo(_ListPartitionFilesFn(self.archive_uri))
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadFiles" >> beam.ParDo(_ReadArchiveFileFn(self.archive_uri, strict=self.strict))
        )


def first_deliveries(deliveries: Iterable[EntryDelivery]) -> tuple[list[EntryDelivery], int]:
    """Keep the first delivery (earliest publish, then record time) of each event; count the rest.

    Every copy of an event has the same date, phase and processor, so all of
    them land in the same lane and duplicates can be removed there, without
    a shuffle of their own.
    """
    first: dict[tuple, EntryDelivery] = {}
    removed = 0
    for delivery in deliveries:
        key = (dedupe_key(delivery.event), delivery.processor)
        kept = first.get(key)
        if kept is None:
            first[key] = delivery
            continue
        removed += 1
        event = delivery.event
        if (event.publish_time, event.record_time) < (kept.event.publish_time, kept.event.record_time):
            first[key] = delivery
    return list(first.values()), removed


_EVENT_FIELDS = tuple(field.name for field in dataclasses.fields(RecordedEvent))
_EPOCH = dt.date(1970, 1, 1)


class EntryDeliveryCoder(beam.coders.Coder):
    """Encodes an :class:`EntryDelivery` as a tuple of primitives for the lane shuffle.

    Pickling the frozen dataclass was the largest cost of the replay at speed
    max (about 17 us per event to encode alone, measured with
    benchmarks/replay_bench.py); Beam's primitives coder handles the tuple
    in compiled code. Dates travel as days since 1970 and directions as their
    schema symbol, the archive's own encodings.
    """

    def __init__(self) -> None:
        self._primitives = beam.coders.FastPrimitivesCoder()

    def encode(self, delivery: EntryDelivery) -> bytes:
        fields = delivery.event.__dict__
        values = [fields[name] for name in _EVENT_FIELDS]
        values[_DATE_INDEX] = (fields["logical_date"] - _EPOCH).days
        values[_DIRECTION_INDEX] = fields["direction"].value
        values[_ATTRIBUTES_INDEX] = dict(fields["attributes"])
        return self._primitives.encode((delivery.processor, tuple(values)))

    def decode(self, encoded: bytes) -> EntryDelivery:
        processor, values = self._primitives.decode(encoded)
        return EntryDelivery(event_from_datum(dict(zip(_EVENT_FIELDS, values))), processor)

    def is_deterministic(self) -> bool:
        return False  # dict attributes: fine for values, never used as a key

    def to_type_hint(self):
        return EntryDelivery


_DATE_INDEX = _EVENT_FIELDS.index("logical_date")
_DIRECTION_INDEX = _EVENT_FIELDS.index("direction")
_ATTRIBUTES_INDEX = _EVENT_FIELDS.index("attributes")
beam.coders.registry.register_coder(EntryDelivery, EntryDeliveryCoder)


class KeyIntoLanes(beam.PTransform):
    """Keys entry events by replay lane: a date in cascade mode, (date, processor) in isolated mode."""

    def __init__(self, config: ReplayConfig, selection: Selection) -> None:
        super().__init__()
        self.config = config
        self.selection = selection

    def expand(self, events):
        config, selection = self.config, self.selection
        return (
            events
            | "Route" >> beam.FlatMap(
                lambda event: route_entry_event(event, config=config, selection=selection)
            ).with_output_types(typing.Tuple[str, EntryDelivery])
            | "GroupLanes" >> beam.GroupByKey()
        )


class ReplayLaneFn(beam.DoFn):
    """Replays one lane and writes its outputs and call records under ``out_dir``."""

    def __init__(self, config: ReplayConfig, selection: Selection, out_dir: str) -> None:
        self.config = config
        self.selection = selection
        self.out_dir = out_dir
        self.calls_counter = Metrics.counter(METRICS_NAMESPACE, "processor_calls")
        self.outputs_counter = Metrics.counter(METRICS_NAMESPACE, "replayed_outputs")
        self.duplicates_removed = Metrics.counter(METRICS_NAMESPACE, "duplicates_removed")

    def setup(self) -> None:
        self.executor = LaneExecutor(self.config, self.selection)
        self.storage = open_storage(self.out_dir)

    def teardown(self) -> None:
        executor = getattr(self, "executor", None)
        if executor is not None:
            executor.close()

    def process(self, element: tuple[str, Iterable[EntryDelivery]]) -> Iterable[dict[str, Any]]:
        lane, deliveries = element
        deliveries = list(deliveries)
        if not self.config.replay.resend_redeliveries:
            deliveries, removed = first_deliveries(deliveries)
            self.duplicates_removed.inc(removed)
        logical_date = deliveries[0].event.logical_date
        result = self.executor.run(lane, deliveries, logical_date=logical_date)
        # NOTE: a bundle retried by the runner writes its lane again under new file
        # names; the in-process runner does not retry, Dataflow may.
        if result.outputs:
            with ArchiveWriter(join_uri(self.out_dir, "archive"), writer_id=writer_id_for(lane),
                               source="replay") as writer:
                for event in result.outputs:
                    writer.write(event)
        lines = b"".join(json.dumps(call, sort_keys=True).encode("utf-8") + b"\n" for call in result.calls)
        self.storage.write_new(join_uri(self.out_dir, "calls", f"{lane}.jsonl"), lines)
        self.calls_counter.inc(len(result.calls))
        self.outputs_counter.inc(len(result.outputs))
        yield {
            "lane": lane, "logical_date": logical_date.isoformat(), "calls": len(result.calls),
            "outputs": len(result.outputs), "lateness_micros": list(result.lateness_micros),
            "planned_duration_micros": result.planned_duration_micros,
            "gaps_shortened": result.gaps_shortened, "unrouted_outputs": result.unrouted_outputs,
            "abandoned_calls": result.abandoned_calls,
        }


class _WriteSummariesFn(beam.DoFn):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def process(self, summaries: list[dict[str, Any]]) -> Iterable[str]:
        uri = join_uri(self.out_dir, LANE_SUMMARIES_FILE)
        ordered = sorted(summaries, key=lambda summary: summary["lane"])
        open_storage(self.out_dir).write_new(uri, json.dumps(ordered, sort_keys=True).encode("utf-8"))
        yield uri


class WriteLaneSummaries(beam.PTransform):
    """Collects every lane summary into ``<out>/lanes.json``."""

    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.out_dir = out_dir

    def expand(self, summaries):
        return (
            summaries
            | "CollectSummaries" >> beam.combiners.ToList()
            | "WriteSummaries" >> beam.ParDo(_WriteSummariesFn(self.out_dir))
        )


def entry_phases_to_read(config: ReplayConfig, selection: Selection) -> tuple[str, ...]:
    """Partitions that hold entry events: the first selected phase in cascade mode, else all."""
    return selection.phases[:1] if config.replay.mode == "cascade" else selection.phases


def build_replay(pipeline: beam.Pipeline, *, config: ReplayConfig, selection: Selection, out_dir: str):
    """Add the replay transforms to ``pipeline``; return the PCollection of the summary file URI."""
    # The diff rules are the launcher's business; workers only need the topology.
    worker_config = dataclasses.replace(config, diff=None, thresholds=None)
    # Redelivered copies are removed inside each lane (see first_deliveries).
    return (
        pipeline
        | "ReadArchive" >> ReadArchive(config.archive.uri, dates=selection.dates,
                                       phases=entry_phases_to_read(config, selection),
                                       strict=config.replay.strict)
        | "KeyIntoLanes" >> KeyIntoLanes(worker_config, selection)
        | "ReplayLanes" >> beam.ParDo(ReplayLaneFn(worker_config, selection, out_dir))
        | "Summaries" >> WriteLaneSummaries(out_dir)
    )


@dataclasses.dataclass(frozen=True)
class PipelineOutcome:
    """What the launcher learns from a finished pipeline: runner, state and counters."""

    runner: str
    in_process: bool
    state: str
    counters: dict[str, int]
    job: Any = None


def make_options(beam_args: Sequence[str]) -> tuple[PipelineOptions, str, bool]:
    """Parse the Beam arguments; return the options, the runner name and whether it runs in-process."""
    options = PipelineOptions(list(beam_args))
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    in_process = runner.lower() in IN_PROCESS_RUNNERS
    if in_process:
        options.view_as(StandardOptions).runner = None
    options.view_as(SetupOptions).save_main_session = False
    return options, runner, in_process


def run_replay_pipeline(*, config: ReplayConfig, selection: Selection, out_dir: str,
                        beam_args: Sequence[str] = ()) -> PipelineOutcome:
    """Build and run the replay pipeline; wait for it when it runs in-process."""
    options, runner_name, in_process = make_options(beam_args)
    if in_process:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        pipeline = beam.Pipeline(runner=FnApiRunner(), options=options)
    else:
        pipeline = beam.Pipeline(options=options)
    build_replay(pipeline, config=config, selection=selection, out_dir=out_dir)
    result = pipeline.run()
    result.wait_until_finish()
    counters: dict[str, int] = {}
    if in_process:
        from apache_beam.metrics.metric import MetricsFilter

        for counter in result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]:
            name = counter.key.metric.name
            counters[name] = counters.get(name, 0) + int(counter.committed or 0)
    return PipelineOutcome(runner=runner_name, in_process=in_process, state=str(result.state),
                           counters=counters, job=getattr(result, "job", None))
