"""The replay as a Beam pipeline.

``ReadArchive`` lists the partition files of the chosen dates and phases and
reads each file in a DoFn through the project's storage layer and tolerant
reader (Beam counters for files, records and damaged files). The replay
reads them in batches of events. ``KeyIntoLanes`` keys entry events by
replay lane, one encoded batch of deliveries per lane and batch. ``ReplayLaneFn``
keeps the first delivery of each event, replays the lane through the
sandbox, paced, and writes its outputs (an archive with ``source = replay``)
and call records. ``WriteLaneSummaries`` collects the lane summaries into
``<out>/lanes.json`` for the launcher.

Events travel in batches because Beam's work per element (and the lane
shuffle's per-element encoding) cost more than reading an event: at speed
max one element per event made the replay about 10x slower than reading
the archive (benchmarks/replay_bench.py). The shuffle carries the batches
already encoded (bytes): the in-process runner decodes and encodes again
every element it groups, which for events cost as much as the replay.

The in-process FnApiRunner is named explicitly for ``DirectRunner`` (or no
runner), because Beam 2.77's DirectRunner otherwise first tries to download
the Prism runner.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import gc
import json
import operator
import re
import typing
from typing import Any, Iterable, Iterator, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions

from recorder._reader import DamagedFile, dedupe_key, event_from_datum, read_event_file
from recorder._storage import join_uri, open_storage
from recorder._writer import ArchiveWriter
from replayer.config import ReplayConfig, Selection
from replayer.lane import EntryDelivery, EntryRouter, LaneExecutor
from schemas import RecordedEvent

METRICS_NAMESPACE = "replay"
IN_PROCESS_RUNNERS = frozenset({"directrunner", "direct", "fnapirunner"})
LANE_SUMMARIES_FILE = "lanes.json"
#: Events per element from the archive read to the lanes: enough that Beam's
#: work per element is negligible, few enough to bound an element's memory
#: (about 2 MB of ~1 KB events).
BATCH_EVENTS = 2_000
_WRITER_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
#: One call record per line, keys sorted; one encoder for every line.
_CALL_ENCODER = json.JSONEncoder(sort_keys=True)


def writer_id_for(lane: str) -> str:
    """Return a valid archive writer id (file-name safe, at most 63 characters) for a lane."""
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


class _ReadArchiveBatchesFn(_ReadArchiveFileFn):
    """Reads one archive file like :class:`_ReadArchiveFileFn`, as lists of at most ``batch_events`` events."""

    def __init__(self, archive_uri: str, *, strict: bool, batch_events: int) -> None:
        super().__init__(archive_uri, strict=strict)
        self.batch_events = batch_events

    def process(self, uri: str) -> Iterable[EventBatch]:
        self.files_read.inc()
        batch: list[RecordedEvent] = []
        for event in read_event_file(self.storage, uri, strict=self.strict, on_damage=self._on_damage):
            batch.append(event)
            if len(batch) >= self.batch_events:
                self.records_read.inc(len(batch))
                yield EventBatch(batch)
                batch = []
        if batch:
            self.records_read.inc(len(batch))
            yield EventBatch(batch)


class ReadArchive(beam.PTransform):
    """Reads the recorded events of ``dates`` x ``phases`` from an archive (local or gs://).

    Files are listed inside the pipeline, so building the pipeline needs no
    access to the archive (a Dataflow job for a 30-day range is built offline).
    With ``batch_events`` the elements are :class:`EventBatch` es of at most
    that many events of one file, in file order, instead of single events.
    """

    def __init__(self, archive_uri: str, *, dates: Sequence[Any], phases: Sequence[str],
                 strict: bool = False, batch_events: int | None = None) -> None:
        super().__init__()
        if batch_events is not None and batch_events < 1:
            raise ValueError(f"batch_events {batch_events!r} must be at least 1, or None for single events")
        self.archive_uri = archive_uri
        self.partitions = [(date.isoformat(), phase) for date in dates for phase in phases]
        self.strict = strict
        self.batch_events = batch_events

    def expand(self, pbegin):
        if self.batch_events is None:
            read = _ReadArchiveFileFn(self.archive_uri, strict=self.strict)
        else:
            read = _ReadArchiveBatchesFn(self.archive_uri, strict=self.strict,
                                         batch_events=self.batch_events).with_output_types(EventBatch)
        partitions = self.partitions
        return (
            pbegin
            # Impulse and FlatMap instead of Create: Create adds a reshuffle of its own
            # (the files are spread below) and doubles the time to build and start
            # the pipeline, which is most of a short replay.
            | "Start" >> beam.Impulse()
            | "Partitions" >> beam.FlatMap(lambda _: partitions)
            | "ListFiles" >> beam.ParDo(_ListPartitionFilesFn(self.archive_uri))
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadFiles" >> beam.ParDo(read)
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


_EPOCH = dt.date(1970, 1, 1)
# Every event field but the two with their own encoding, in a fixed order.
_PLAIN_FIELDS = tuple(field.name for field in dataclasses.fields(RecordedEvent)
                      if field.name not in ("logical_date", "direction"))
_plain_values = operator.itemgetter(*_PLAIN_FIELDS)
#: Bytes per event besides its data, for size estimates.
_EVENT_OVERHEAD_BYTES = 200


def _event_row(event: RecordedEvent) -> tuple:
    """Return an event as primitives: the date in days since 1970, the direction's symbol, the other fields.

    The date and direction use the archive's own encodings; the other fields
    follow in the fixed order of ``_PLAIN_FIELDS``.
    """
    fields = event.__dict__
    return (fields["logical_date"] - _EPOCH).days, fields["direction"].value, _plain_values(fields)


def _event_from_row(row: tuple) -> RecordedEvent:
    days, direction, values = row
    datum = dict(zip(_PLAIN_FIELDS, values))
    datum["logical_date"] = days
    datum["direction"] = direction
    return event_from_datum(datum)  # the datum's types are the archive reader's


def _estimate_bytes(events: Iterable[RecordedEvent]) -> int:
    return sum(len(event.data) + _EVENT_OVERHEAD_BYTES for event in events)


class EventBatch:
    """Events read from one archive file, in file order: the element from the read to the routing."""

    __slots__ = ("events",)

    def __init__(self, events: list[RecordedEvent]) -> None:
        self.events = events

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EventBatch) and self.events == other.events

    def __repr__(self) -> str:
        return f"EventBatch({len(self.events)} events)"


class EventBatchCoder(beam.coders.Coder):
    """Encodes an :class:`EventBatch` as one list of primitive tuples (Beam's primitives coder).

    Encoding each event as its own element, or pickling the frozen
    dataclasses, cost 5 to 17 us per event (benchmarks/replay_bench.py).
    ``estimate_size`` does not encode: Beam calls it for every element it
    samples for its size metrics, and encoding a batch for that took as
    long as replaying it.
    """

    def __init__(self) -> None:
        self._primitives = beam.coders.FastPrimitivesCoder()

    def encode(self, batch: EventBatch) -> bytes:
        return self._primitives.encode([_event_row(event) for event in batch.events])

    def decode(self, encoded: bytes) -> EventBatch:
        return EventBatch([_event_from_row(row) for row in self._primitives.decode(encoded)])

    def estimate_size(self, batch: EventBatch) -> int:
        return _estimate_bytes(batch.events)

    def is_deterministic(self) -> bool:
        return False  # dict attributes: fine for values, never used as a key

    def to_type_hint(self):
        return EventBatch


beam.coders.registry.register_coder(EventBatch, EventBatchCoder)
_PRIMITIVES = beam.coders.FastPrimitivesCoder()


def encode_deliveries(deliveries: Sequence[EntryDelivery]) -> bytes:
    """Entry deliveries as bytes for the lane shuffle (see :func:`decode_deliveries`)."""
    return _PRIMITIVES.encode([(delivery.processor, _event_row(delivery.event)) for delivery in deliveries])


def decode_deliveries(encoded: bytes) -> list[EntryDelivery]:
    """Decode the output of :func:`encode_deliveries` into deliveries equal to the originals."""
    return [EntryDelivery(_event_from_row(row), processor) for processor, row in _PRIMITIVES.decode(encoded)]


def route_batch(batch: EventBatch, *, config: ReplayConfig, selection: Selection) -> list[tuple[str, bytes]]:
    """Route a batch of events (see :class:`EntryRouter`); one ``(lane, encoded deliveries)`` per lane met."""
    lanes: dict[str, list[EntryDelivery]] = {}
    route = EntryRouter.for_replay(config, selection).route
    for event in batch.events:
        for lane, delivery in route(event):
            deliveries = lanes.get(lane)
            if deliveries is None:
                lanes[lane] = deliveries = []
            deliveries.append(delivery)
    return [(lane, encode_deliveries(deliveries)) for lane, deliveries in lanes.items()]


class KeyIntoLanes(beam.PTransform):
    """Keys batches of entry events by replay lane: a date in cascade mode, (date, processor) in isolated mode.

    The input elements are :class:`EventBatch` es; the output is ``(lane, [encoded deliveries, ...])``
    (see :func:`decode_deliveries`).
    """

    def __init__(self, config: ReplayConfig, selection: Selection) -> None:
        super().__init__()
        self.config = config
        self.selection = selection

    def expand(self, events):
        config, selection = self.config, self.selection
        return (
            events
            | "Route" >> beam.FlatMap(
                lambda batch: route_batch(batch, config=config, selection=selection)
            ).with_output_types(typing.Tuple[str, bytes])
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

    def process(self, element: tuple[str, Iterable[bytes]]) -> Iterable[dict[str, Any]]:
        lane, batches = element
        deliveries = [delivery for encoded in batches for delivery in decode_deliveries(encoded)]
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
        # ensure_ascii (the default) makes every line ASCII, so one encode covers them all.
        lines = "".join([_CALL_ENCODER.encode(call) + "\n" for call in result.calls]).encode("ascii")
        self.storage.write_new(join_uri(self.out_dir, "calls", f"{lane}.jsonl"), lines)
        self.calls_counter.inc(len(result.calls))
        self.outputs_counter.inc(len(result.outputs))
        yield {
            "lane": lane, "logical_date": logical_date.isoformat(), "calls": len(result.calls),
            "outputs": len(result.outputs), "lateness_micros": list(result.lateness_micros),
            "planned_duration_micros": result.planned_duration_micros,
            "gaps_shortened": result.gaps_shortened, "unrouted_outputs": result.unrouted_outputs,
            "abandoned_calls": result.abandoned_calls, "cascade_limit_hits": result.cascade_limit_hits,
        }


class _WriteSummariesFn(beam.DoFn):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def process(self, _: bytes, summaries: list[dict[str, Any]]) -> Iterable[str]:
        uri = join_uri(self.out_dir, LANE_SUMMARIES_FILE)
        ordered = sorted(summaries, key=lambda summary: summary["lane"])
        open_storage(self.out_dir).write_new(uri, json.dumps(ordered, sort_keys=True).encode("utf-8"))
        yield uri


class WriteLaneSummaries(beam.PTransform):
    """Collects every lane summary into ``<out>/lanes.json`` (``[]`` when there are no lanes).

    One write runs on an impulse with the summaries as a list side input:
    the same result as ``combiners.ToList``, whose default-value machinery
    took about 70 ms to build and run, a tenth of a 20,000-event replay.
    """

    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.out_dir = out_dir

    def expand(self, summaries):
        return (
            summaries.pipeline
            | "Once" >> beam.Impulse()
            | "WriteSummaries" >> beam.ParDo(_WriteSummariesFn(self.out_dir), beam.pvalue.AsList(summaries))
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
                                       strict=config.replay.strict, batch_events=BATCH_EVENTS)
        | "KeyIntoLanes" >> KeyIntoLanes(worker_config, selection)
        | "ReplayLanes" >> beam.ParDo(ReplayLaneFn(worker_config, selection, out_dir))
        | "Summaries" >> WriteLaneSummaries(out_dir)
    )


@dataclasses.dataclass(frozen=True)
class PipelineOutcome:
    """Result of a finished pipeline, as read by the launcher: runner, state and counters."""

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


@contextlib.contextmanager
def _collector_ignores_existing_objects(enabled: bool) -> Iterator[None]:
    """Keep the objects that exist before an in-process run out of the garbage collector's full passes.

    A replay keeps every event of a lane alive until the lane ends, so the
    collector runs full passes while it reads. Each pass walked every object
    of the process (Beam's modules, the launcher's plan) and took 0.1-0.25 s.
    Together they were up to a third of a 20,000-event replay at speed max
    (benchmarks/replay_bench.py).

    ``gc.freeze()`` sets the existing objects aside until ``gc.unfreeze()``;
    they are still freed when unreferenced, and garbage cycles among them
    are collected after the run. A process that froze objects itself (to
    share memory with forked children) is left as it is.
    """
    if not enabled or gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


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
    with _collector_ignores_existing_objects(in_process):
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
