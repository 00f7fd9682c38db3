"""The faster replay paths: batches and their encoding, the entry router, the lane-wide sandbox settings."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import json
import os
import time

import pytest

from pipelines.replay import (
    EventBatch, EventBatchCoder, ReadArchive, decode_deliveries, encode_deliveries, route_batch,
    run_replay_pipeline,
)
from recorder._reader import ArchiveReader
from recorder._writer import ArchiveWriter
from replayer.config import Selection, SandboxSettings, load_config
from replayer.lane import EntryDelivery, EntryRouter, route_entry_event
from replayer.run import plan_replay
from replayer.sandbox import PublishCapture, Sandbox
from schemas import Direction, RecordedEvent, datetime_to_micros
from tests.topology import recording

DAY = dt.date(2024, 3, 9)
PUBLISHED_AT = datetime_to_micros(dt.datetime(2024, 3, 9, 23, 30, tzinfo=dt.timezone.utc))


def _event(index: int, **fields) -> RecordedEvent:
    values = dict(event_id=f"e-{index}", logical_date=DAY, phase="phase2", direction=Direction.INPUT,
                  publish_time=PUBLISHED_AT + index, data=f'{{"n":{index}}}'.encode(), source="sdk",
                  processor=None, topic="raw-games")
    values.update(fields)
    return RecordedEvent(**values)


def _config(tmp_path, **options):
    path = recording.write_config(tmp_path / "replay.toml", archive=str(tmp_path / "archive"),
                                  output=str(tmp_path / "out"), **options)
    return load_config(path)


def test_shuffle_encoding_roundtrip():
    """Every field of every delivery, optional ones and odd bytes included, decodes as it was."""
    events = [
        _event(0),
        _event(1, attributes={"game": "g1", "ünï": "cödé"}, ordering_key="k", subscription="s",
               correlation_id="c", causation_id="x", delivery_attempt=3, content_type="application/json",
               record_time=PUBLISHED_AT + 5, data=b"\x00\xff not json"),
        _event(2, direction=Direction.OUTPUT, logical_date=dt.date(1999, 12, 31), data=b""),
    ]
    deliveries = [EntryDelivery(event, f"p{index}") for index, event in enumerate(events)]
    decoded = decode_deliveries(encode_deliveries(deliveries))
    assert decoded == deliveries
    assert [dataclasses.asdict(d.event) for d in decoded] == [dataclasses.asdict(e) for e in events]
    assert decoded[1].event.direction is Direction.INPUT
    coder = EventBatchCoder()
    assert coder.decode(coder.encode(EventBatch(events))) == EventBatch(events)
    assert coder.estimate_size(EventBatch(events)) > sum(len(event.data) for event in events)


def test_router_follows_selection(tmp_path):
    """Only selected INPUTs reach lanes; a new selection object is routed by its own rules."""
    config = _config(tmp_path, mode="isolated")
    events = recording.production_events()
    first = Selection(dates=(recording.DATE,), phases=config.phases)
    routed = [pair for event in events for pair in route_entry_event(event, config=config, selection=first)]
    assert routed
    assert all(delivery.event.direction is Direction.INPUT for _, delivery in routed)
    assert {lane for lane, _ in routed} == {f"{recording.DATE.isoformat()}.{d.processor}" for _, d in routed}
    other_day = Selection(dates=(recording.DATE + dt.timedelta(days=1),), phases=config.phases)
    assert [pair for event in events for pair in route_entry_event(event, config=config, selection=other_day)] == []
    assert EntryRouter.for_replay(config, other_day) is EntryRouter.for_replay(config, other_day)
    # The batch router groups the same deliveries by lane, in the same order.
    lanes: dict[str, list] = {}
    for lane, encoded in route_batch(EventBatch(list(events)), config=config, selection=first):
        lanes.setdefault(lane, []).extend(decode_deliveries(encoded))
    expected: dict[str, list] = {}
    for lane, delivery in routed:
        expected.setdefault(lane, []).append(delivery)
    assert lanes == expected


def test_read_batches_file_order(tmp_path):
    """ReadArchive with batch_events yields every event once, in batches no larger than asked."""
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.testing.util import assert_that, equal_to

    events = [_event(index) for index in range(7)]
    with ArchiveWriter(str(tmp_path / "archive"), writer_id="t", source="sdk") as writer:
        for event in events:
            writer.write(event)
    with beam.Pipeline(runner=FnApiRunner()) as pipeline:
        batches = pipeline | ReadArchive(str(tmp_path / "archive"), dates=(DAY,), phases=("phase2",),
                                         batch_events=3)
        assert_that(batches | beam.Map(lambda batch: [e.event_id for e in batch.events]),
                    equal_to([["e-0", "e-1", "e-2"], ["e-3", "e-4", "e-5"], ["e-6"]]))
    with pytest.raises(ValueError, match="batch_events 0"):
        ReadArchive("unused", dates=(DAY,), phases=("phase2",), batch_events=0)


def test_empty_replay_writes_summaries(tmp_path):
    """With no entry events the pipeline writes lanes.json as an empty list, and undoes its gc.freeze."""
    config = _config(tmp_path)
    recording.write_archive(str(tmp_path / "archive"))
    frozen_before = gc.get_freeze_count()
    outcome = run_replay_pipeline(config=config, out_dir=str(tmp_path / "out"),
                                  selection=Selection(dates=(dt.date(2001, 1, 1),), phases=config.phases))
    assert json.loads((tmp_path / "out" / "lanes.json").read_text()) == []
    assert outcome.counters.get("processor_calls", 0) == 0
    assert gc.get_freeze_count() == frozen_before


def test_lane_environment_reset_per_call(monkeypatch):
    """A processor that changes a sandbox variable does not leak it into the next call or the process."""
    monkeypatch.setenv("DATASET_PREFIX", "prod_")
    monkeypatch.delenv("GCS_PREFIX", raising=False)
    seen: list = []

    def meddle():
        seen.append((os.environ["DATASET_PREFIX"], os.environ.get("GCS_PREFIX"), os.environ.get("TZ")))
        os.environ["DATASET_PREFIX"] = "changed_"
        os.environ["TZ"] = "Asia/Tokyo"
        time.tzset()

    def body():
        for _ in range(2):
            sandbox.call(meddle, capture=PublishCapture(lambda n: f"id-{n}"), timeout_s=5,
                         publish_time_micros=PUBLISHED_AT)

    tz_before = os.environ.get("TZ")
    settings = SandboxSettings(env=(("DATASET_PREFIX", "test_"), ("GCS_PREFIX", "test/")), clock="recorded")
    with Sandbox(settings) as sandbox:
        sandbox.supervise(body)
    assert seen == [("test_", "test/", "UTC"), ("test_", "test/", "UTC")]
    assert os.environ["DATASET_PREFIX"] == "prod_"
    assert "GCS_PREFIX" not in os.environ
    assert os.environ.get("TZ") == tz_before


def test_recorded_clock_per_call():
    """Each call starts at its own publish time (earlier ones too); the lane's own code reads the real clock."""
    publish_times = [PUBLISHED_AT, PUBLISHED_AT + 3_600_000_000, PUBLISHED_AT - 86_400_000_000]
    seen: list = []
    between: list = []

    def body():
        for publish_time in publish_times:
            result = sandbox.call(lambda: (time.time_ns() // 1000, time.localtime().tm_zone),
                                  capture=PublishCapture(lambda n: f"id-{n}"), timeout_s=5,
                                  publish_time_micros=publish_time)
            seen.append(result.value)
            between.append(time.time())

    with Sandbox(SandboxSettings(clock="recorded")) as sandbox:
        sandbox.supervise(body)
    assert [micros for micros, _ in seen] == publish_times
    assert {zone for _, zone in seen} == {"UTC"}
    assert all(abs(moment - time.time()) < 60 for moment in between)
    assert dt.datetime.now(dt.timezone.utc).year > 2024


def test_batched_replay_outputs(tmp_path):
    """The batched pipeline replays the recording into the same outputs as the recorded ones."""
    config = _config(tmp_path)
    recording.write_archive(str(tmp_path / "archive"))
    selection = plan_replay(config, Selection(dates=(recording.DATE,), phases=config.phases)).selection
    run_replay_pipeline(config=config, out_dir=str(tmp_path / "out"), selection=selection)
    replayed = list(ArchiveReader(str(tmp_path / "out" / "archive"), dedupe=False).read())
    assert recording.output_signature(replayed) == recording.output_signature(recording.production_events())
