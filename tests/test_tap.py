"""The Pub/Sub tap against the emulator: exact archiving, ack after durable write, kill and stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from recorder._reader import ArchiveReader
from recorder._tap import Tap, TapConfig, TapConfigError, TapSubscription, load_tap_config
from schemas import DateRule, Direction, datetime_to_micros

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def topic(pubsub_emulator, request):
    """A fresh topic and a tap subscription (ordered) plus a check subscription; yields their paths."""
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    name = "tap-" + request.node.name.lower().replace("_", "-")[:40]
    topic_path = publisher.topic_path(pubsub_emulator.project, name)
    publisher.create_topic(name=topic_path)
    paths = {}
    for suffix, ordered in (("tap", True), ("check", True), ("plain", False)):
        paths[suffix] = subscriber.subscription_path(pubsub_emulator.project, f"{name}-{suffix}")
        subscriber.create_subscription(request={"name": paths[suffix], "topic": topic_path,
                                                "enable_message_ordering": ordered,
                                                "ack_deadline_seconds": 10})
    yield topic_path, paths
    subscriber.close()


def publish_all(topic_path: str, count: int, *, start: int = 0) -> dict[str, dict]:
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient(
        publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True))
    futures = {}
    for n in range(start, start + count):
        attributes = {"n": str(n), "game_date": "2024-03-09"}
        key = f"game-{n % 3}"
        future = publisher.publish(topic_path, f'{{"n":{n}}}'.encode(), ordering_key=key, **attributes)
        futures[n] = (future, attributes, key)
    return {future.result(timeout=30): {"attributes": attributes, "ordering_key": key, "n": n}
            for n, (future, attributes, key) in futures.items()}


def pull_publish_times(subscription: str, expected: int) -> dict[str, int]:
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    times: dict[str, int] = {}
    deadline = time.monotonic() + 30
    while len(times) < expected and time.monotonic() < deadline:
        response = subscriber.pull(subscription=subscription, max_messages=100, timeout=10)
        for received in response.received_messages:
            message = received.message
            times[message.message_id] = datetime_to_micros(message.publish_time)
        if response.received_messages:
            subscriber.acknowledge(subscription=subscription,
                                   ack_ids=[r.ack_id for r in response.received_messages])
    subscriber.close()
    return times


def run_tap_in_thread(config: TapConfig) -> tuple[Tap, threading.Thread, list]:
    tap = Tap(config)
    result: list = []
    thread = threading.Thread(target=lambda: result.append(tap.run()), daemon=True)
    thread.start()
    return tap, thread, result


def test_tap_archives_messages_exactly(tmp_path, topic, pubsub_emulator):
    """Ids, attributes, ordering keys and publish times are archived as Pub/Sub delivered them."""
    topic_path, subscriptions = topic
    published = publish_all(topic_path, 30)
    config = TapConfig(
        archive_uri=str(tmp_path), project=pubsub_emulator.project,
        subscriptions=(TapSubscription(name=subscriptions["tap"].rsplit("/", 1)[-1], phase="phase3",
                                       direction="INPUT", processor="analytics"),),
        date_rule=DateRule(attribute="game_date"), flush_max_messages=10, flush_interval_secs=0.2,
        writer_id="tap-test")
    tap, thread, result = run_tap_in_thread(config)
    deadline = time.monotonic() + 60
    while tap.stats.acked < len(published) and time.monotonic() < deadline:
        time.sleep(0.1)
    tap.stop()
    thread.join(30)
    publish_times = pull_publish_times(subscriptions["check"], len(published))
    events = {event.event_id: event for event in ArchiveReader(str(tmp_path)).read()}
    assert set(events) == set(published)
    for message_id, sent in published.items():
        event = events[message_id]
        assert event.attributes == sent["attributes"]
        assert event.ordering_key == sent["ordering_key"]
        assert event.publish_time == publish_times[message_id]
        assert event.data == f'{{"n":{sent["n"]}}}'.encode()
        assert event.logical_date.isoformat() == "2024-03-09"
        assert event.direction is Direction.INPUT
        assert event.topic == topic_path.rsplit("/", 1)[-1]
        assert event.source == "tap"
    assert result[0].acked == len(published)
    assert result[0].backlog == 0


def test_tap_holds_messages_while_archive_fails(tmp_path, topic, pubsub_emulator):
    """Nothing is acknowledged while the archive cannot be written."""
    topic_path, subscriptions = topic
    blocker = tmp_path / "file"
    blocker.write_text("x")
    publish_all(topic_path, 5)
    config = TapConfig(
        archive_uri=str(blocker / "archive"), project=pubsub_emulator.project,
        subscriptions=(TapSubscription(name=subscriptions["tap"], phase="phase3", direction="INPUT"),),
        flush_max_messages=5, flush_interval_secs=0.1, stop_retry_secs=0.5)
    tap, thread, result = run_tap_in_thread(config)
    deadline = time.monotonic() + 30
    while tap.stats.write_errors < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    # An ordered subscription delivers one message per key until it is acked.
    held = tap.stats
    assert held.received >= 3
    assert held.acked == 0
    assert held.backlog == held.received
    tap.stop()
    thread.join(30)
    assert result[0].acked == 0
    assert result[0].nacked == result[0].received


def tap_command(archive: Path, subscription: str, project: str) -> list[str]:
    # NOTE: "python3 -m replayer.cli" registers subcommands on a second copy of
    # the click group (the module runs as __main__), so call main() directly.
    return [sys.executable, "-c", "from replayer.cli import main; main()", "--log-format", "json", "record", "tap",
            "--archive", str(archive), "--subscription", f"{subscription}:phase3:INPUT:analytics",
            "--project", project, "--flush-messages", "7", "--flush-interval-secs", "0.2",
            "--writer-id", "tap-proc", "--stats-interval-secs", "1"]


def start_tap(archive: Path, subscription: str, project: str, log_path: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    log = open(log_path, "ab")
    process = subprocess.Popen(tap_command(archive, subscription, project), cwd=PROJECT_ROOT, env=env,
                               stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while b"tap.started" not in log_path.read_bytes():
        assert process.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.05)
    return process


def archived_files(archive: Path) -> int:
    return len(list(archive.rglob("*.avro")))


def test_tap_killed_and_restarted_loses_nothing(tmp_path, topic, pubsub_emulator):
    """SIGKILL mid-stream then a restart leaves exactly the published set after dedupe."""
    topic_path, subscriptions = topic
    archive = tmp_path / "archive"
    log_path = tmp_path / "tap.log"
    # Unordered: an ordered subscription holds each key back until the dead
    # tap's lease on its outstanding message runs out.
    sub = subscriptions["plain"].rsplit("/", 1)[-1]
    published: dict[str, dict] = {}
    stop_publishing = threading.Event()

    def publish_stream():
        n = 0
        while not stop_publishing.is_set() and n < 300:
            published.update(publish_all(topic_path, 10, start=n))
            n += 10
            time.sleep(0.02)

    process = start_tap(archive, sub, pubsub_emulator.project, log_path)
    publisher_thread = threading.Thread(target=publish_stream)
    publisher_thread.start()
    deadline = time.monotonic() + 30
    while archived_files(archive) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    killed_with_files = archived_files(archive)
    process = start_tap(archive, sub, pubsub_emulator.project, log_path)
    publisher_thread.join(60)
    # NOTE: the Pub/Sub emulator (0.8.20) keeps dispatching part of each
    # redelivery to the killed tap's reset stream, so those messages return
    # only after another 10 s ack deadline, in waves. Real Pub/Sub closes the
    # stream; here several waves can pass before every message is archived.
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        ids = {event.event_id for event in ArchiveReader(str(archive)).read()}
        time.sleep(0.3)
        if ids >= set(published):
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0, log_path.read_text()[-3000:]
    reader = ArchiveReader(str(archive))
    events = list(reader.read())
    assert killed_with_files >= 3
    assert len(published) == 300
    assert sorted(event.event_id for event in events) == sorted(published)


def test_tap_sigterm_flushes_and_exits_zero(tmp_path, topic, pubsub_emulator):
    """SIGTERM writes and acknowledges held messages, then exits 0."""
    topic_path, subscriptions = topic
    archive = tmp_path / "archive"
    log_path = tmp_path / "tap.log"
    process = start_tap(archive, subscriptions["tap"].rsplit("/", 1)[-1], pubsub_emulator.project, log_path)
    published = publish_all(topic_path, 12)
    deadline = time.monotonic() + 30
    while b'"received": 12' not in log_path.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0, log_path.read_text()[-3000:]
    assert b"tap.stopped" in log_path.read_bytes()
    assert {event.event_id for event in ArchiveReader(str(archive)).read()} == set(published)


def test_subscription_spec_parsing():
    """SUB:phase:direction[:processor] is parsed; bad specs name the expected form."""
    parsed = TapSubscription.parse("scores-tap:phase3:output:analytics")
    assert parsed == TapSubscription("scores-tap", "phase3", Direction.OUTPUT, "analytics")
    with pytest.raises(TapConfigError, match="SUBSCRIPTION:phase:direction"):
        TapSubscription.parse("scores-tap:phase3")
    with pytest.raises(TapConfigError, match="INPUT or OUTPUT"):
        TapSubscription.parse("scores-tap:phase3:sideways")


def test_toml_config_loaded(tmp_path):
    """A tap TOML file maps subscriptions and the archive's date rule."""
    path = tmp_path / "tap.toml"
    path.write_text(
        'project = "demo"\n[archive]\nuri = "/tmp/a"\ntime_zone = "America/New_York"\n'
        'date_attribute = "game_date"\n'
        '[[subscriptions]]\nname = "s-in"\nphase = "phase2"\ndirection = "INPUT"\nprocessor = "p"\n'
        '[[subscriptions]]\nname = "s-out"\nphase = "phase2"\ndirection = "OUTPUT"\ntopic = "t-out"\n')
    config = load_tap_config(path)
    assert config.archive_uri == "/tmp/a"
    assert config.date_rule == DateRule(attribute="game_date", time_zone="America/New_York")
    assert [s.direction for s in config.subscriptions] == [Direction.INPUT, Direction.OUTPUT]
    assert config.subscriptions[1].topic == "t-out"
    assert list(config.subscription_paths()) == ["projects/demo/subscriptions/s-in",
                                                 "projects/demo/subscriptions/s-out"]


def test_toml_unknown_key_rejected(tmp_path):
    """Unknown keys are rejected with the file named."""
    path = tmp_path / "tap.toml"
    path.write_text('[archive]\nuri = "/tmp/a"\nzone = "UTC"\n')
    with pytest.raises(TapConfigError, match="zone"):
        load_tap_config(path)


@pytest.mark.parametrize("table, key", [("tap", "flush_max_msgs"), ("redaction", "salty")])
def test_toml_unknown_table_key_rejected(tmp_path, table, key):
    """A misspelt key in [tap] or [redaction] is rejected instead of silently falling back to a default."""
    path = tmp_path / "tap.toml"
    path.write_text(f'[archive]\nuri = "/tmp/a"\n[{table}]\n{key} = 1\n')
    with pytest.raises(TapConfigError, match=rf"{key}.*\[{table}\]"):
        load_tap_config(path)


def test_ordered_messages_flushed_without_full_batch(tmp_path, topic, pubsub_emulator):
    """With ordering keys the client hands over one message per key, so batches are written when idle."""
    topic_path, subscriptions = topic
    published = publish_all(topic_path, 15)  # 3 ordering keys, 5 messages each
    config = TapConfig(
        archive_uri=str(tmp_path), project=pubsub_emulator.project,
        subscriptions=(TapSubscription(name=subscriptions["tap"], phase="phase3", direction="INPUT"),),
        # Neither limit can trigger a write here: only the idle rule can.
        flush_max_messages=100, flush_interval_secs=3600, writer_id="ordered")
    tap, thread, result = run_tap_in_thread(config)
    deadline = time.monotonic() + 60
    while tap.stats.acked < len(published) and time.monotonic() < deadline:
        time.sleep(0.05)
    tap.stop()
    thread.join(30)
    assert result[0].acked == len(published)
    events = list(ArchiveReader(str(tmp_path)).read())
    assert {event.event_id for event in events} == set(published)
    by_key: dict[str, list[int]] = {}
    for event in sorted(events, key=lambda event: event.publish_time):
        by_key.setdefault(event.ordering_key, []).append(int(event.attributes["n"]))
    assert by_key == {f"game-{k}": list(range(k, 15, 3)) for k in range(3)}


class _RecordingSubscriber:
    """A stand-in SubscriberClient that stores the subscribe() arguments and delivers nothing."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.subscribed = threading.Event()

    def get_subscription(self, subscription: str, **options):
        return type("Subscription", (), {"topic": "projects/p/topics/scores"})()

    def subscribe(self, path, callback, flow_control):
        import concurrent.futures

        self.calls.append({"path": path, "flow_control": flow_control})
        self.subscribed.set()
        return concurrent.futures.Future()


def test_lease_extension_caps_redelivery_delay(tmp_path):
    """The streaming pull requests lease extensions of at most lease_extension_secs."""
    subscriber = _RecordingSubscriber()
    config = TapConfig(archive_uri=str(tmp_path), project="p", lease_extension_secs=15,
                       max_outstanding_messages=40, flush_max_messages=10,
                       subscriptions=(TapSubscription(name="scores-tap", phase="phase3", direction="INPUT"),))
    tap = Tap(config, subscriber=subscriber)
    threading.Thread(target=lambda: subscriber.subscribed.wait(30) and tap.stop(), daemon=True).start()
    stats = tap.run()
    (call,) = subscriber.calls
    assert call["path"] == "projects/p/subscriptions/scores-tap"
    assert call["flow_control"].max_duration_per_lease_extension == 15
    assert call["flow_control"].max_messages == 40
    assert stats.received == 0


@pytest.mark.parametrize("value", [5, 601, 12.5, True])
def test_lease_extension_out_of_range_rejected(tmp_path, value):
    """lease_extension_secs outside 10-600 whole seconds is rejected with the value named."""
    with pytest.raises(TapConfigError, match="lease_extension_secs"):
        TapConfig(archive_uri=str(tmp_path), project="p", lease_extension_secs=value,
                  subscriptions=(TapSubscription(name="scores-tap", phase="phase3", direction="INPUT"),))


def closed_loopback_port() -> int:
    """Return a loopback port nothing listens on (bound once, then released)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def one_subscription(**options) -> TapConfig:
    return TapConfig(subscriptions=(TapSubscription(name="scores-tap", phase="phase3", direction="INPUT"),),
                     project="p", **options)


def test_unreachable_pubsub_fails_naming_endpoint(tmp_path, monkeypatch):
    """Start-up against a closed port fails within connect_timeout_secs with the endpoint named."""
    from recorder._tap import TapUnreachableError

    port = closed_loopback_port()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{port}")
    tap = Tap(one_subscription(archive_uri=str(tmp_path), connect_timeout_secs=1))
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(tap.run())
        except Exception as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    if thread.is_alive():
        tap.stop()
    assert not thread.is_alive(), "the tap kept waiting for an unreachable Pub/Sub"
    assert isinstance(outcome[0], TapUnreachableError)
    assert f"127.0.0.1:{port}" in str(outcome[0])
    assert "PUBSUB_EMULATOR_HOST" in str(outcome[0])


class _HangingSubscriber(_RecordingSubscriber):
    """A SubscriberClient whose subscription lookup blocks until released, like an unreachable service."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def get_subscription(self, subscription: str, **options):
        self.entered.set()
        self.release.wait(120)
        return super().get_subscription(subscription)


def test_stop_during_startup_returns(tmp_path):
    """stop() while start-up waits for Pub/Sub makes run() return without subscribing."""
    subscriber = _HangingSubscriber()
    tap = Tap(one_subscription(archive_uri=str(tmp_path)), subscriber=subscriber)
    result: list = []
    thread = threading.Thread(target=lambda: result.append(tap.run()), daemon=True)
    thread.start()
    assert subscriber.entered.wait(30)
    tap.stop()
    thread.join(30)
    alive = thread.is_alive()
    subscriber.release.set()
    assert not alive, "run() kept waiting for the subscription lookup after stop()"
    assert result[0].received == 0
    assert subscriber.calls == []


class _FakeMessage:
    """The attributes of a pubsub_v1 subscriber Message the tap reads, with ack/nack recorded."""

    def __init__(self, message_id: str, attributes: dict) -> None:
        import datetime as dt

        self.message_id = message_id
        self.data = b'{"n": 1}'
        self.attributes = attributes
        self.publish_time = dt.datetime(2024, 12, 4, 12, 0, tzinfo=dt.timezone.utc)
        self.ordering_key = ""
        self.delivery_attempt = None
        self.acked = False

    def ack(self) -> None:
        self.acked = True

    def nack(self) -> None:
        pass


class _DeliveringSubscriber(_RecordingSubscriber):
    """A SubscriberClient that delivers the given messages on subscribe()."""

    def __init__(self, messages: list) -> None:
        super().__init__()
        self.messages = messages

    def subscribe(self, path, callback, flow_control):
        future = super().subscribe(path, callback, flow_control)
        for message in self.messages:
            callback(message)
        return future


def test_tap_bad_date_attribute_counted(tmp_path):
    """A message whose date attribute is not a date is archived under its publish date and counted."""
    import structlog

    messages = [_FakeMessage("m-1", {"game_date": "2024-13-45"}), _FakeMessage("m-2", {"game_date": "2024-01-15"})]
    config = one_subscription(archive_uri=str(tmp_path), date_rule=DateRule(attribute="game_date"))
    subscriber = _DeliveringSubscriber(messages)
    tap = Tap(config, subscriber=subscriber)
    threading.Thread(target=lambda: subscriber.subscribed.wait(30) and tap.stop(), daemon=True).start()
    with structlog.testing.capture_logs() as logs:
        stats = tap.run()
    assert stats.archived == 2
    assert stats.date_fallbacks == 1
    (fallback,) = [entry for entry in logs if entry["event"] == "tap.date_fallback"]
    assert fallback["name"] == "game_date"
    assert fallback["date"] == "2024-12-04"
    dates = {event.event_id: event.logical_date.isoformat() for event in ArchiveReader(str(tmp_path)).read()}
    assert dates == {"m-1": "2024-12-04", "m-2": "2024-01-15"}


@pytest.mark.parametrize("spec, message", [
    ("sub1:phase1:INPUT:bad proc", "processor 'bad proc'"),
    ("sub1:phase1:INPUT:/x", "processor '/x'"),
])
def test_bad_processor_name_rejected(spec, message):
    """A processor name that replay.toml would reject is rejected in the subscription spec."""
    with pytest.raises(TapConfigError, match=message):
        TapSubscription.parse(spec)


def test_unknown_codec_rejected(tmp_path):
    """An unknown codec is a config error naming the value, before anything is pulled."""
    with pytest.raises(TapConfigError, match="'lzma'"):
        one_subscription(archive_uri=str(tmp_path), codec="lzma")


def test_cli_tap_unknown_codec_one_line(tmp_path, capsys):
    """replay record tap --codec lzma is one error line and exit status 2."""
    from replayer.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["record", "tap", "--archive", str(tmp_path), "--project", "p",
              "--subscription", "sub1:phase1:INPUT", "--codec", "lzma"])
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert "'lzma'" in err
    assert "unexpected" not in err
    assert len(err.strip().splitlines()) == 1
