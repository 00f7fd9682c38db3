"""The sandbox: environment, recorded clock, publish capture, timeouts, and the Pub/Sub guard."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time

import pytest
from google.cloud import pubsub_v1

from replayer.config import ProcessorConfig, SandboxSettings, resolve_target
from replayer.sandbox import SANDBOX_PUBSUB_ENDPOINT, PublishCapture, Sandbox, SandboxViolation
from schemas import datetime_to_micros
from tests.topology.network import block_non_loopback
from tests.topology.pubsub import create_guard_topic

PUBLISHED_AT = datetime_to_micros(dt.datetime(2024, 3, 9, 23, 30, tzinfo=dt.timezone.utc))


def _capture() -> PublishCapture:
    return PublishCapture(lambda ordinal: f"id-{ordinal}")


def test_environment_set_and_restored(monkeypatch):
    """Configured variables are visible during the call and restored after it."""
    monkeypatch.setenv("DATASET_PREFIX", "prod_")
    monkeypatch.delenv("GCS_PREFIX", raising=False)
    settings = SandboxSettings(env=(("DATASET_PREFIX", "test_"), ("GCS_PREFIX", "test/")), clock="wall")
    with Sandbox(settings) as sandbox:
        result = sandbox.call(lambda: (os.environ["DATASET_PREFIX"], os.environ["GCS_PREFIX"]),
                              capture=_capture(), timeout_s=5, publish_time_micros=PUBLISHED_AT)
    assert result.value == ("test_", "test/")
    assert os.environ["DATASET_PREFIX"] == "prod_"
    assert "GCS_PREFIX" not in os.environ


def test_recorded_clock_sees_publish_time():
    """With clock 'recorded' the processor's now is the input's publish time."""
    with Sandbox(SandboxSettings(clock="recorded")) as sandbox:
        result = sandbox.call(lambda: dt.datetime.now(dt.timezone.utc), capture=_capture(), timeout_s=5,
                              publish_time_micros=PUBLISHED_AT)
    seen = datetime_to_micros(result.value)
    assert PUBLISHED_AT <= seen < PUBLISHED_AT + 1_000_000
    assert dt.datetime.now(dt.timezone.utc).year > 2024


def test_wall_clock_is_untouched():
    """With clock 'wall' the processor reads the real time."""
    with Sandbox(SandboxSettings(clock="wall")) as sandbox:
        result = sandbox.call(time.time, capture=_capture(), timeout_s=5, publish_time_micros=PUBLISHED_AT)
    assert abs(result.value - time.time()) < 5


def test_publisher_client_is_captured():
    """PublisherClient.publish inside a call returns a resolved future with the deterministic id."""
    capture = _capture()

    def processor():
        options = pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
        client = pubsub_v1.PublisherClient(publisher_options=options)
        first = client.publish("projects/p/topics/scores-out", b"{}", kind="total").result(timeout=1)
        second = client.publish("projects/p/topics/scores-out", b"[]", ordering_key="g1").result(timeout=1)
        return first, second

    with Sandbox(SandboxSettings(clock="wall")) as sandbox:
        result = sandbox.call(processor, capture=capture, timeout_s=10, publish_time_micros=PUBLISHED_AT)
    assert result.error is None
    assert result.value == ("id-0", "id-1")
    assert [(p.topic, p.data, p.attributes, p.ordering_key) for p in capture.published] == [
        ("scores-out", b"{}", {"kind": "total"}, None), ("scores-out", b"[]", {}, "g1")]


def test_publish_rejects_non_bytes():
    """Publishing text instead of bytes fails as it does with the real client."""
    def processor():
        return pubsub_v1.PublisherClient().publish("projects/p/topics/t", "text")

    with Sandbox(SandboxSettings(clock="wall")) as sandbox:
        result = sandbox.call(processor, capture=_capture(), timeout_s=10, publish_time_micros=PUBLISHED_AT)
    assert isinstance(result.error, TypeError)


def test_publish_methods_restored_after_replay():
    """Leaving the sandbox puts the real publish methods back."""
    original = pubsub_v1.PublisherClient.publish
    with Sandbox(SandboxSettings(clock="wall")):
        assert pubsub_v1.PublisherClient.publish is not original
    assert pubsub_v1.PublisherClient.publish is original


def test_exception_is_the_outcome():
    """An exception raised by the processor is returned, not raised."""
    def processor():
        raise ValueError("bad box score")

    with Sandbox(SandboxSettings(clock="wall")) as sandbox:
        result = sandbox.call(processor, capture=_capture(), timeout_s=5, publish_time_micros=PUBLISHED_AT)
    assert isinstance(result.error, ValueError)
    assert not result.timed_out


def test_timeout_abandons_call_and_drops_late_publish():
    """A call past timeout_s times out; what it publishes afterwards is dropped."""
    release = threading.Event()
    finished = threading.Event()
    capture = _capture()
    late: list = []

    def hanging():
        release.wait(10)
        try:
            pubsub_v1.PublisherClient().publish("projects/p/topics/t", b"late").result(timeout=1)
        except SandboxViolation as error:
            late.append(error)
        finally:
            finished.set()

    with Sandbox(SandboxSettings(clock="wall")) as sandbox:
        result = sandbox.call(hanging, capture=capture, timeout_s=0.2, publish_time_micros=PUBLISHED_AT)
        still_running = not finished.is_set()
        assert result.timed_out
        release.set()
        assert finished.wait(10)
        follow_up = sandbox.call(lambda: "next", capture=_capture(), timeout_s=5, publish_time_micros=PUBLISHED_AT)
    assert still_running
    assert follow_up.value == "next"
    assert capture.published == []
    assert len(late) == 1


def test_real_publisher_publishes_nothing(pubsub_emulator):
    """A processor publishing with a real PublisherClient to the emulator publishes nothing there."""
    publisher, subscriber, topic, subscription = create_guard_topic(pubsub_emulator.project, "guard-topic",
                                                                     "guard-sub")
    # A client made before the replay, as a module-level client in a processor would be.
    early_client = pubsub_v1.PublisherClient()
    capture = _capture()

    def processor():
        inner = pubsub_v1.PublisherClient()
        inner.publish(topic, b'{"inner": true}').result(timeout=5)
        early_client.publish(topic, b'{"early": true}').result(timeout=5)

    with Sandbox(SandboxSettings(clock="recorded")) as sandbox:
        result = sandbox.call(processor, capture=capture, timeout_s=20, publish_time_micros=PUBLISHED_AT)
    assert result.error is None
    assert len(capture.published) == 2
    response = subscriber.pull(subscription=subscription, max_messages=10, return_immediately=True, timeout=10)
    assert list(response.received_messages) == []
    # The emulator itself works: a publish outside the replay arrives.
    publisher.publish(topic, b"outside").result(timeout=10)
    response = subscriber.pull(subscription=subscription, max_messages=10, timeout=10)
    assert [m.message.data for m in response.received_messages] == [b"outside"]


def test_client_in_call_needs_no_network(monkeypatch):
    """A PublisherClient built in a call looks up no credentials and points at a closed loopback port."""
    attempts = block_non_loopback(monkeypatch)
    capture = _capture()

    def processor():
        client = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
        message_id = client.publish(client.topic_path("prod", "scores-out"), b"{}").result(timeout=1)
        return client.target, subscriber.target, message_id

    with Sandbox(SandboxSettings(clock="recorded")) as sandbox:
        result = sandbox.call(processor, capture=capture, timeout_s=20, publish_time_micros=PUBLISHED_AT)
    assert result.error is None
    assert result.value == (SANDBOX_PUBSUB_ENDPOINT, SANDBOX_PUBSUB_ENDPOINT, "id-0")
    assert [p.topic for p in capture.published] == ["scores-out"]
    assert attempts == []
    assert "PUBSUB_EMULATOR_HOST" not in os.environ


MODULE_LEVEL_CLIENT = """
from google.cloud import pubsub_v1

CLIENT = pubsub_v1.PublisherClient()


def process(message, ctx):
    CLIENT.publish(CLIENT.topic_path("prod", "scores-out"), b"{}").result(timeout=1)
"""


def test_module_level_client_at_import(monkeypatch, tmp_path):
    """A client built when the target is imported looks up no credentials, and its publish is captured."""
    attempts = block_non_loopback(monkeypatch)
    (tmp_path / "client_at_import.py").write_text(MODULE_LEVEL_CLIENT)
    processor = ProcessorConfig(name="p", phase="score", adapter="callable", target="client_at_import.py:process",
                                subscribes=("scores",))
    process = resolve_target(processor, base_dir=tmp_path)
    assert attempts == []
    assert process.__globals__["CLIENT"].target == SANDBOX_PUBSUB_ENDPOINT
    capture = _capture()
    with Sandbox(SandboxSettings(clock="wall")) as sandbox:
        result = sandbox.call(lambda: process(None, None), capture=capture, timeout_s=20,
                              publish_time_micros=PUBLISHED_AT)
    assert result.error is None
    assert [p.topic for p in capture.published] == ["scores-out"]
    assert attempts == []


def test_other_publisher_rpcs_rejected(monkeypatch):
    """get_topic on a client made before the replay raises at once instead of reaching its endpoint."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    attempts = block_non_loopback(monkeypatch)
    early = pubsub_v1.PublisherClient(credentials=AnonymousCredentials(),
                                      client_options=ClientOptions(api_endpoint="127.0.0.1:9"))
    with Sandbox(SandboxSettings(clock="wall")) as sandbox:
        result = sandbox.call(lambda: early.get_topic(topic="projects/prod/topics/scores-out"),
                              capture=_capture(), timeout_s=20, publish_time_micros=PUBLISHED_AT)
    assert isinstance(result.error, SandboxViolation)
    assert "PublisherClient.get_topic is not available during a replay" in str(result.error)
    assert attempts == []


def test_configured_emulator_host_overridden(monkeypatch):
    """Even a PUBSUB_EMULATOR_HOST in [sandbox] env gives way to the closed sandbox port."""
    settings = SandboxSettings(env=(("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085"),), clock="wall")
    with Sandbox(settings) as sandbox:
        result = sandbox.call(lambda: os.environ["PUBSUB_EMULATOR_HOST"], capture=_capture(), timeout_s=5,
                              publish_time_micros=PUBLISHED_AT)
    assert result.value == SANDBOX_PUBSUB_ENDPOINT


def test_supervised_call_runs_in_runner():
    """Under supervise, a call runs inline in the runner thread, with the environment set."""
    threads: list = []
    results: list = []

    def body():
        threads.append(threading.current_thread())
        results.append(sandbox.call(lambda: (threading.current_thread(), os.environ.get("DATASET_PREFIX")),
                                    capture=_capture(), timeout_s=5, publish_time_micros=PUBLISHED_AT))

    with Sandbox(SandboxSettings(env=(("DATASET_PREFIX", "test_"),), clock="wall")) as sandbox:
        sandbox.supervise(body)
    assert results[0].value == (threads[0], "test_")
    assert threads[0] is not threading.current_thread()


def test_supervised_timeout_resumes_body(monkeypatch):
    """A supervised call past its timeout abandons the runner and runs the body again in a new one."""
    monkeypatch.delenv("DATASET_PREFIX", raising=False)
    release = threading.Event()
    runs: list = []

    def body():
        runs.append(threading.current_thread())
        if len(runs) == 1:
            sandbox.call(lambda: release.wait(10), capture=_capture(), timeout_s=0.2,
                         publish_time_micros=PUBLISHED_AT)
            runs.append("returned")  # never reached: the abandoned runner unwinds

    with Sandbox(SandboxSettings(env=(("DATASET_PREFIX", "test_"),), clock="recorded")) as sandbox:
        sandbox.supervise(body, poll_s=0.05)
        timeout_result = sandbox.last_timeout
        abandoned = sandbox.abandoned_workers
        environment_after = os.environ.get("DATASET_PREFIX")
        release.set()
        runs[0].join(10)
    assert len(runs) == 2
    assert runs[0] is not runs[1]
    assert timeout_result.timed_out
    assert timeout_result.handling_micros == 200_000
    assert abandoned == 1
    assert environment_after is None
    assert dt.datetime.now(dt.timezone.utc).year > 2024


def test_supervised_body_error_raised():
    """An error in the supervised body itself (not in a processor) reaches the caller."""
    def body():
        raise KeyError("lane bug")

    with Sandbox(SandboxSettings(clock="wall")) as sandbox, pytest.raises(KeyError) as raised:
        sandbox.supervise(body)
    assert raised.value.args == ("lane bug",)


@pytest.mark.parametrize("supervised", [False, True])
def test_configured_zone_wins_over_recorded_clock(supervised):
    """TZ in [sandbox] env sets how the recorded instant renders as local time."""
    settings = SandboxSettings(env=(("TZ", "America/New_York"),), clock="recorded")

    def probe():
        return dt.datetime.now(), time.localtime().tm_zone, dt.datetime.now(dt.timezone.utc)

    seen: list = []
    with Sandbox(settings) as sandbox:
        def run():
            seen.append(sandbox.call(probe, capture=_capture(), timeout_s=5, publish_time_micros=PUBLISHED_AT))

        if supervised:
            sandbox.supervise(run)
        else:
            run()
    naive, zone, instant = seen[0].value
    # 2024-03-09 23:30 UTC is 18:30 EST in New York.
    assert zone == "EST"
    assert naive.replace(microsecond=0) == dt.datetime(2024, 3, 9, 18, 30)
    assert datetime_to_micros(instant) // 1_000_000 == PUBLISHED_AT // 1_000_000
