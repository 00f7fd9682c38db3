"""The recorder SDK: inputs, outputs captured from real publishes, drops, exit hooks."""

from __future__ import annotations

import concurrent.futures
import contextvars
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import structlog

from recorder import Recorder
from recorder._publish_capture import publish_patch_references
from recorder._reader import ArchiveReader
from schemas import Direction

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def read_all(archive) -> list:
    return list(ArchiveReader(str(archive)).read())


def make_recorder(archive, **options) -> Recorder:
    options.setdefault("flush_interval_secs", 0.05)
    options.setdefault("install_signal_handler", False)
    options.setdefault("writer_id", "test")
    options.setdefault("environ", {})
    return Recorder(str(archive), **options)


@pytest.fixture
def topic_path(pubsub_emulator, request):
    """A fresh topic on the emulator with a pull subscription; yields (topic path, subscription path)."""
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    name = "sdk-" + request.node.name.lower().replace("_", "-")[:40]
    topic = publisher.topic_path(pubsub_emulator.project, name)
    subscription = subscriber.subscription_path(pubsub_emulator.project, name + "-sub")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic)
    yield topic, subscription
    subscriber.close()


def test_input_recorded_with_outcome(tmp_path):
    """A handled message is archived as an INPUT with outcome ack and its handling time."""
    recorder = make_recorder(tmp_path)
    with recorder.handling(message_id="m-1", data=b'{"x":1}', attributes={"k": "v"},
                           publish_time=1_700_000_000_123_456, phase="phase2", processor="p"):
        time.sleep(0.002)
    recorder.close()
    [event] = read_all(tmp_path)
    assert event.event_id == "m-1"
    assert event.direction is Direction.INPUT
    assert event.outcome == "ack"
    assert event.handling_micros >= 2000
    assert event.publish_time == 1_700_000_000_123_456
    assert event.attributes == {"k": "v"}
    assert event.source == "sdk"


def test_exception_recorded_and_reraised(tmp_path):
    """An exception leaving the handler is recorded as error:<Type> and propagates."""
    recorder = make_recorder(tmp_path)
    with pytest.raises(KeyError):
        with recorder.handling(message_id="m-2", data=b"", phase="phase2"):
            raise KeyError("data")
    recorder.close()
    [event] = read_all(tmp_path)
    assert event.outcome == "error:KeyError"


@pytest.mark.parametrize(("action", "expected"), [
    (lambda h: h.nack(), "nack"),
    (lambda h: h.set_status(204), "ack"),
    (lambda h: h.set_status(203), "nack"),
    (lambda h: h.set_status(500), "nack"),
])
def test_explicit_outcomes(tmp_path, action, expected):
    """nack() and push status codes set the recorded outcome."""
    recorder = make_recorder(tmp_path)
    with recorder.handling(message_id="m-3", data=b"x", phase="phase2") as handling:
        action(handling)
    recorder.close()
    assert read_all(tmp_path)[0].outcome == expected


def test_logical_date_from_time_zone(tmp_path):
    """The publish time in the configured zone gives the logical date."""
    recorder = make_recorder(tmp_path, time_zone="America/New_York")
    # 2024-03-10T03:30:00Z is still March 9 in New York.
    with recorder.handling(message_id="m-4", data=b"x", phase="phase2",
                           publish_time=1_710_041_400_000_000):
        pass
    recorder.close()
    assert read_all(tmp_path)[0].logical_date.isoformat() == "2024-03-09"


def test_redaction_applied_before_storage(tmp_path):
    """Configured pointers and attributes never reach the archive in clear."""
    from recorder import RedactionRules

    recorder = make_recorder(tmp_path, redaction=RedactionRules(
        pointers=("/email",), attributes=("token",), mode="remove"))
    with recorder.handling(message_id="m-5", data=b'{"email":"a@b.c","id":1}',
                           attributes={"token": "secret", "k": "v"}, phase="phase2"):
        pass
    recorder.close()
    [event] = read_all(tmp_path)
    assert b"a@b.c" not in event.data
    assert event.attributes == {"k": "v"}
    raw = b"".join(path.read_bytes() for path in tmp_path.rglob("*.avro"))
    assert b"secret" not in raw


def test_publish_recorded_as_output(tmp_path, topic_path):
    """A real publish inside handling is archived as an OUTPUT with causation and message id."""
    from google.cloud import pubsub_v1

    topic, _ = topic_path
    recorder = make_recorder(tmp_path)
    publisher = pubsub_v1.PublisherClient()
    with recorder.handling(message_id="in-1", data=b"{}", phase="phase3", processor="proc"):
        future = publisher.publish(topic, b'{"out":1}', ordering_key="", team="lal")
    message_id = future.result(timeout=30)
    recorder.close()
    outputs = [e for e in read_all(tmp_path) if e.direction is Direction.OUTPUT]
    assert len(outputs) == 1
    assert outputs[0].event_id == message_id
    assert outputs[0].causation_id == "in-1"
    assert outputs[0].topic == topic.rsplit("/", 1)[-1]
    assert outputs[0].attributes == {"team": "lal"}
    assert outputs[0].data == b'{"out":1}'
    assert outputs[0].processor == "proc"


def test_publish_outside_handling_not_recorded(tmp_path, topic_path):
    """Publishes outside any handling context are not archived."""
    from google.cloud import pubsub_v1

    topic, _ = topic_path
    recorder = make_recorder(tmp_path)
    pubsub_v1.PublisherClient().publish(topic, b"x").result(timeout=30)
    recorder.close()
    assert read_all(tmp_path) == []


def test_concurrent_handlings_keep_causation(tmp_path, topic_path):
    """Messages handled at once on several threads each get their own outputs."""
    from google.cloud import pubsub_v1

    topic, _ = topic_path
    recorder = make_recorder(tmp_path)
    publisher = pubsub_v1.PublisherClient()
    barrier = threading.Barrier(8)

    def handle(index: int) -> str:
        with recorder.handling(message_id=f"in-{index}", data=b"{}", phase="phase3"):
            barrier.wait(timeout=10)
            return publisher.publish(topic, f"out-{index}".encode()).result(timeout=30)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(handle, range(8)))
    recorder.close()
    outputs = [e for e in read_all(tmp_path) if e.direction is Direction.OUTPUT]
    assert len(outputs) == 8
    for event in outputs:
        assert event.data.decode() == "out-" + event.causation_id.split("-")[1]


def test_copied_context_thread_recorded(tmp_path, topic_path):
    """A thread started with a copied context publishes as part of the handling; a plain thread does not."""
    from google.cloud import pubsub_v1

    topic, _ = topic_path
    recorder = make_recorder(tmp_path)
    publisher = pubsub_v1.PublisherClient()
    with recorder.handling(message_id="in-ctx", data=b"{}", phase="phase3"):
        context = contextvars.copy_context()
        copied = threading.Thread(target=context.run,
                                  args=(lambda: publisher.publish(topic, b"copied").result(30),))
        plain = threading.Thread(target=lambda: publisher.publish(topic, b"plain").result(30))
        copied.start(), plain.start()
        copied.join(), plain.join()
    recorder.close()
    outputs = [e.data for e in read_all(tmp_path) if e.direction is Direction.OUTPUT]
    assert outputs == [b"copied"]


def test_publish_patch_reference_counted(tmp_path):
    """The publish patch is installed once and removed with the last recorder."""
    from google.cloud.pubsub_v1 import PublisherClient

    before = publish_patch_references()
    first = make_recorder(tmp_path / "a")
    second = make_recorder(tmp_path / "b")
    assert publish_patch_references() == before + 2
    assert hasattr(PublisherClient.publish, "__wrapped__")
    first.close()
    first.close()
    assert publish_patch_references() == before + 1
    second.close()
    assert publish_patch_references() == before
    if before == 0:
        assert not hasattr(PublisherClient.publish, "__wrapped__")


def test_buffer_full_drops_are_counted(tmp_path):
    """Events beyond max_buffer_events are dropped and counted, never blocking."""
    recorder = make_recorder(tmp_path, max_buffer_events=3, flush_interval_secs=60)
    recorder._wake_threshold = 10  # keep the flusher asleep while the buffer fills
    for index in range(10):
        with recorder.handling(message_id=f"m-{index}", data=b"x", phase="phase2"):
            pass
    assert recorder.stats.dropped == 7
    recorder.close()
    assert len(read_all(tmp_path)) == 3


def test_unreachable_archive_drops_and_logs_rarely(tmp_path):
    """With an unwritable archive every event is dropped, counted, and the error logged once."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the archive folder should be")
    recorder = make_recorder(blocker / "archive", retry_budget_secs=0.05,
                             error_log_interval_secs=30)
    with structlog.testing.capture_logs() as logs:
        for index in range(20):
            with recorder.handling(message_id=f"m-{index}", data=b"x", phase="phase2"):
                pass
            time.sleep(0.01)
        stats = recorder.close(timeout_secs=5)
    assert stats.dropped == 20
    assert stats.recorded == 0
    assert stats.write_errors >= 1
    errors = [entry for entry in logs if entry["event"] == "recorder.archive_unreachable"]
    assert len(errors) == 1


def test_error_log_interval_uses_clock(tmp_path):
    """A later drop is logged again once the interval has passed on the injected clock."""
    now = [100.0]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    recorder = make_recorder(blocker / "archive", retry_budget_secs=0.0,
                             error_log_interval_secs=30, clock=lambda: now[0])
    with structlog.testing.capture_logs() as logs:
        recorder._record_drops(2, reason="archive_unreachable")
        recorder._record_drops(3, reason="archive_unreachable")
        now[0] += 31
        recorder._record_drops(4, reason="archive_unreachable")
    recorder.close()
    errors = [entry for entry in logs if entry["event"] == "recorder.archive_unreachable"]
    assert [entry["dropped"] for entry in errors] == [2, 7]


SIGTERM_SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    sys.path.insert(0, {root!r})
    if {app_handler!r}:
        def on_term(signum, frame):
            print("app handler ran", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
    from recorder import Recorder
    recorder = Recorder({archive!r}, writer_id="sig", flush_interval_secs=60, environ={{}})
    with recorder.handling(message_id="m-term", data=b"x", phase="phase2"):
        pass
    print("ready", flush=True)
    time.sleep(30)
""")


@pytest.mark.parametrize("app_handler", [True, False])
def test_sigterm_flushes_and_chains(tmp_path, app_handler):
    """SIGTERM flushes buffered events, then runs the app's handler or the default action."""
    archive = tmp_path / "archive"
    script = SIGTERM_SCRIPT.format(root=str(PROJECT_ROOT), archive=str(archive), app_handler=app_handler)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=20)
    if app_handler:
        assert "app handler ran" in output
        assert process.returncode == 0
    else:
        assert process.returncode == -signal.SIGTERM
    assert [event.event_id for event in read_all(archive)] == ["m-term"]


def test_atexit_flushes(tmp_path):
    """Events still buffered at interpreter exit are written."""
    archive = tmp_path / "archive"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(PROJECT_ROOT)!r})
        from recorder import Recorder
        recorder = Recorder({str(archive)!r}, writer_id="exit", flush_interval_secs=60, environ={{}})
        with recorder.handling(message_id="m-exit", data=b"x", phase="phase2"):
            pass
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    assert [event.event_id for event in read_all(archive)] == ["m-exit"]


def test_environment_configures_recorder(tmp_path):
    """REPLAY_* variables fill every unset argument."""
    recorder = Recorder(environ={
        "REPLAY_ARCHIVE_URI": str(tmp_path),
        "REPLAY_WRITER_ID": "env-writer",
        "REPLAY_TIME_ZONE": "America/New_York",
        "REPLAY_DATE_ATTRIBUTE": "game_date",
        "REPLAY_DATE_POINTER": "/game_date",
        "REPLAY_REDACT_ATTRIBUTES": "token",
        "REPLAY_CODEC": "deflate",
    }, install_signal_handler=False, flush_interval_secs=0.05)
    with recorder.handling(message_id="m-env", data=b"{}", attributes={"game_date": "2024-01-02"},
                           phase="phase2"):
        pass
    recorder.close()
    assert recorder.writer_id == "env-writer"
    assert recorder.date_rule.time_zone == "America/New_York"
    [event] = read_all(tmp_path)
    assert event.logical_date.isoformat() == "2024-01-02"
    assert all(path.name.startswith("sdk-env-writer-") for path in tmp_path.rglob("*.avro"))


def test_missing_archive_rejected():
    """Without an archive argument or REPLAY_ARCHIVE_URI the recorder refuses to start."""
    with pytest.raises(ValueError, match="REPLAY_ARCHIVE_URI"):
        Recorder(environ={}, install_signal_handler=False)


def test_handles_records_streaming_pull_ack(tmp_path, topic_path):
    """The decorator records a streaming-pull callback's ack and its publishes."""
    from google.cloud import pubsub_v1

    topic, subscription = topic_path
    recorder = make_recorder(tmp_path)
    publisher = pubsub_v1.PublisherClient()
    done = threading.Event()

    @recorder.handles(phase="phase4", processor="puller", subscription=subscription)
    def callback(message):
        if message.data == b"trigger":
            publisher.publish(topic, b"result").result(timeout=30)
        message.ack()
        done.set()

    sent_id = publisher.publish(topic, b"trigger").result(timeout=30)
    subscriber = pubsub_v1.SubscriberClient()
    future = subscriber.subscribe(subscription, callback)
    assert done.wait(30)
    future.cancel()
    recorder.close()
    events = read_all(tmp_path)
    inputs = [e for e in events if e.direction is Direction.INPUT and e.event_id == sent_id]
    assert inputs and inputs[0].outcome == "ack"
    outputs = [e for e in events if e.direction is Direction.OUTPUT]
    assert outputs and outputs[0].causation_id == sent_id


def test_files_rolled_inside_batch_counted(tmp_path):
    """Files the writer stores when a buffer fills mid-batch count in recorded and files_written."""
    recorder = make_recorder(tmp_path, flush_interval_secs=60)
    recorder._wake_threshold = 100  # one batch, written at close()
    recorder._archive_writer().max_records = 3  # a file per 3 events of one partition
    for index in range(10):
        with recorder.handling(message_id=f"m-{index}", data=b"x", phase="phase2"):
            pass
    stats = recorder.close()
    assert stats.recorded == 10
    assert stats.files_written == 4
    assert stats.dropped == 0
    assert len(read_all(tmp_path)) == 10


def test_out_of_range_event_dropped_alone(tmp_path):
    """One event with a delivery attempt outside the Avro int range is counted invalid; its batch is written."""
    recorder = make_recorder(tmp_path, flush_interval_secs=60)
    for index in range(5):
        with recorder.handling(message_id=f"good-{index}", data=b"{}", phase="phase2"):
            pass
    with recorder.handling(message_id="poison", data=b"{}", phase="phase2", delivery_attempt=2**31):
        pass
    stats = recorder.close(timeout_secs=10)
    assert stats.invalid == 1
    assert stats.dropped == 1
    assert stats.recorded == 5
    assert sorted(event.event_id for event in read_all(tmp_path)) == [f"good-{index}" for index in range(5)]


def test_unknown_codec_rejected_at_construction(tmp_path):
    """An unknown codec raises in the constructor, naming the value and the valid codecs."""
    with pytest.raises(ValueError, match="'lzma'.*zstandard"):
        make_recorder(tmp_path, codec="lzma")


def test_bad_date_attribute_counted_and_logged(tmp_path):
    """A date attribute that is not a date falls back to the publish date, counted and logged once."""
    recorder = make_recorder(tmp_path, date_attribute="game_date", error_log_interval_secs=30)
    publish_time = 1_733_270_400_000_000  # 2024-12-04T00:00:00Z
    with structlog.testing.capture_logs() as logs:
        for index in range(3):
            with recorder.handling(message_id=f"m-{index}", data=b"x", phase="phase2",
                                   attributes={"game_date": "2024-13-45"}, publish_time=publish_time):
                pass
        stats = recorder.close(timeout_secs=5)
    assert stats.date_fallbacks == 3
    assert stats.recorded == 3
    fallbacks = [entry for entry in logs if entry["event"] == "recorder.date_fallback"]
    assert len(fallbacks) == 1
    assert fallbacks[0]["name"] == "game_date"
    assert "2024-13-45" in fallbacks[0]["value"]
    assert fallbacks[0]["date"] == "2024-12-04"
    assert {event.logical_date.isoformat() for event in read_all(tmp_path)} == {"2024-12-04"}


def test_bad_payload_date_counted(tmp_path):
    """A payload date behind a JSON pointer that is not a date is counted as a fallback."""
    recorder = make_recorder(tmp_path, date_pointer="/game_date")
    with structlog.testing.capture_logs() as logs:
        with recorder.handling(message_id="m-1", data=b'{"game_date": "soon"}', phase="phase2"):
            pass
        with recorder.handling(message_id="m-2", data=b'{"game_date": "2024-01-15"}', phase="phase2"):
            pass
        stats = recorder.close(timeout_secs=5)
    assert stats.date_fallbacks == 1
    (fallback,) = [entry for entry in logs if entry["event"] == "recorder.date_fallback"]
    assert fallback["source"] == "pointer"
    assert fallback["name"] == "/game_date"
