"""The replay as a Beam pipeline.

``ReadArchive`` lists the partition files of the chosen dates and phases and
reads each file in a DoFn through the project's storage layer and tolerant
reader (Beam counters for files, records and damaged files);
``DedupeDeliveries`` keeps the first delivery of each event;
``KeyIntoLanes`` keys entry events by replay lane; ``ReplayLaneFn`` replays
one lane through the sandbox, paced, and writes its outputs (an archive with
``source = replay``) and call records; ``WriteLaneSummaries`` collects the
lane summaries into ``<out>/lanes.json`` for the launcher.

The in-process FnApiRunner is named explicitly for ``DirectRunner`` (or no
runner), because Beam 2.77's DirectRunner otherwise first tries to download
the Prism runner.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Iterable, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions

from recorder._reader import DamagedFile, dedupe_key, read_event_file
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


def _dedupe_text(event: RecordedEvent) -> str:
    # A text key: GroupByKey needs a deterministic coder, and dates and enums
    # inside a tuple would fall back to pickling.
    date, phase, direction, processor, event_id = dedupe_key(event)
    return "\x1f".join((date.isoformat(), phase, direction.value, processor or "", event_id))


class _FirstDeliveryFn(beam.DoFn):
    """Keeps the first delivery (earliest publish, then record time) of each event."""

    def __init__(self) -> None:
        self.duplicates_removed = Metrics.counter(METRICS_NAMESPACE, "duplicates_removed")

    def process(self, element: tuple[str, Iterable[RecordedEvent]]) -> Iterable[RecordedEvent]:
        _key, copies = element
        copies = list(copies)
        if len(copies) > 1:
            self.duplicates_removed.inc(len(copies) - 1)
        yield min(copies, key=lambda e: (e.publish_time, e.record_time))


class DedupeDeliveries(beam.PTransform):
    """Removes redelivered copies of an event (same dedupe key), keeping the first delivery."""

    def expand(self, events):
        return (
            events
            | "KeyByIdentity" >> beam.Map(lambda event: (_dedupe_text(event), event))
            | "GroupCopies" >> beam.GroupByKey()
            | "KeepFirst" >> beam.ParDo(_FirstDeliveryFn())
        )


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
            | "Route" >> beam.FlatMap(lambda event: route_entry_event(event, config=config, selection=selection))
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
    events = pipeline | "ReadArchive" >> ReadArchive(
        config.archive.uri, dates=selection.dates, phases=entry_phases_to_read(config, selection))
    if not config.replay.resend_redeliveries:
        events = events | "Dedupe" >> DedupeDeliveries()
    return (
        events
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
