"""Ways a processor could get round the sandbox: stray threads, wide cascades, abandoned calls."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
from google.cloud import pubsub_v1

from replayer import lane as lane_module
from replayer.config import Selection, SandboxSettings, load_config
from replayer.lane import LaneExecutor, route_entry_event
from replayer.pacing import ManualClock
from replayer.sandbox import PublishCapture, Sandbox, SandboxViolation
from schemas import datetime_to_micros
from tests.topology import recording
from tests.topology.processors import box_scores, dumps
from tests.topology.pubsub import create_guard_topic

PUBLISHED_AT = datetime_to_micros(dt.datetime(2024, 3, 9, 23, 30, tzinfo=dt.timezone.utc))


def _capture(name: str) -> PublishCapture:
    return PublishCapture(lambda ordinal: f"{name}-{ordinal}", call_id=name, processor="test")


# --------------------------------------------------------------------------- threads outliving a call


def test_thread_publishing_after_the_replay_reaches_nothing(pubsub_emulator):
    """A thread a call started publishes after the sandbox closed: dropped, and counted for that call."""
    publisher, subscriber, topic, subscription = create_guard_topic(pubsub_emulator.project, "escape-topic",
                                                                     "escape-sub")
    go = threading.Event()
    outcome: list = []
    threads: list[threading.Thread] = []

    def later() -> None:
        try:
            pubsub_v1.PublisherClient().publish(topic, b"escaped").result(timeout=5)
            outcome.append("published")
        except SandboxViolation as error:
            outcome.append(error)

    def processor() -> None:
        thread = threading.Thread(target=lambda: (go.wait(10), later()), daemon=True)
        threads.append(thread)
        thread.start()

    capture = _capture("g1")
    with Sandbox(SandboxSettings(clock="wall")) as sandbox:
        result = sandbox.call(processor, capture=capture, timeout_s=5, publish_time_micros=PUBLISHED_AT)
    assert result.error is None
    # The replay is over, the processor's thread still lives: this thread's publish goes through.
    publisher.publish(topic, b"outside").result(timeout=10)
    go.set()
    threads[0].join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], SandboxViolation)
    assert capture.stray_publishes == 1
    assert capture.published == []
    response = subscriber.pull(subscription=subscription, max_messages=10, timeout=10)
    assert [m.message.data for m in response.received_messages] == [b"outside"]
    # With the last such thread gone the real methods are back.
    assert "sandbox" not in pubsub_v1.PublisherClient.publish.__module__


def _run_two_calls(sandbox: Sandbox, first, second, captures) -> list:
    results = [sandbox.call(first, capture=captures[0], timeout_s=10, publish_time_micros=PUBLISHED_AT)]
    results.append(sandbox.call(second, capture=captures[1], timeout_s=10, publish_time_micros=PUBLISHED_AT))
    return results


@pytest.mark.parametrize("supervised", [False, True])
def test_publish_attributed_to_its_thread(supervised):
    """A thread started by call 1 publishing during call 2 is a stray of call 1, not an output of call 2."""
    go, done = threading.Event(), threading.Event()
    captures = [_capture("first"), _capture("second")]

    def first() -> None:
        joined = threading.Thread(target=lambda: pubsub_v1.PublisherClient().publish(
            "projects/p/topics/during", b"while-running").result())
        joined.start()
        joined.join()  # published while the call runs: an output of this call

        def stray() -> None:
            go.wait(10)
            try:
                pubsub_v1.PublisherClient().publish("projects/p/topics/stray", b"late").result()
            except SandboxViolation:
                pass
            finally:
                done.set()

        threading.Thread(target=stray, daemon=True).start()

    def second() -> None:
        go.set()
        done.wait(10)

    with Sandbox(SandboxSettings(clock="wall")) as sandbox:
        if supervised:
            results: list = []
            sandbox.supervise(lambda: results.extend(_run_two_calls(sandbox, first, second, captures)))
        else:
            results = _run_two_calls(sandbox, first, second, captures)
    assert [r.error for r in results] == [None, None]
    assert [p.topic for p in captures[0].published] == ["during"]
    assert captures[1].published == []
    assert (captures[0].stray_publishes, captures[1].stray_publishes) == (1, 0)


# --------------------------------------------------------------------------- lanes


def self_loop2(message, ctx):
    """Publishes twice into the topic it subscribes to: the cascade doubles at every hop."""
    ctx.publish("raw-games", message.data)
    ctx.publish("raw-games", message.data)


_release_abandoned = threading.Event()
_abandoned_wrote = threading.Event()


def stateful_abandoned(message, ctx):
    """g1 times out and writes state later, while g2 runs; g2 and g3 publish the keys they see."""
    game = message.json()["game_id"]
    if game == "g1":
        _release_abandoned.wait(10)
        ctx.state["written_by_abandoned_call"] = True
        _abandoned_wrote.set()
        return
    if game == "g2":
        _release_abandoned.set()
        _abandoned_wrote.wait(10)
    ctx.publish("phase2-complete", dumps({"game_id": game, "state": sorted(ctx.state)}))
    box_scores(message, ctx)


def _run_lanes(config):
    selection = Selection(dates=(recording.DATE,), phases=config.phases)
    lanes: dict[str, list] = {}
    for event in recording.production_events():
        for lane, delivery in route_entry_event(event, config=config, selection=selection):
            lanes.setdefault(lane, []).append(delivery)
    executor = LaneExecutor(config, selection, clock=ManualClock())
    try:
        return [executor.run(lane, items, logical_date=recording.DATE) for lane, items in sorted(lanes.items())]
    finally:
        executor.close()


def test_cascade_width_is_capped(tmp_path, monkeypatch):
    """A processor fanning out into its own topic stops at the calls-per-entry-event cap, counted."""
    monkeypatch.setattr(lane_module, "MAX_CALLS_PER_ENTRY_EVENT", 20)
    path = recording.write_config(tmp_path / "replay.toml", archive=str(tmp_path / "archive"),
                                  output=str(tmp_path / "out"),
                                  box_scores_target="tests.test_sandbox_escapes:self_loop2")
    [result] = _run_lanes(load_config(path))
    entries = len({(c["input_event_id"], c["processor"]) for c in result.calls if c["recorded_input"]})
    loop_calls = [c for c in result.calls if c["processor"] == "box_scores"]
    assert result.cascade_limit_hits > 0
    assert len(result.calls) <= 20 * entries
    # Its outputs also reach player_stats (raw-games), which counts towards the same chains.
    assert 3 < len(loop_calls) < 3 * 20


def test_abandoned_call_state_writes_are_not_seen(tmp_path):
    """State written by a call after its timeout does not reach the calls after it."""
    _release_abandoned.clear()
    _abandoned_wrote.clear()
    path = recording.write_config(tmp_path / "replay.toml", archive=str(tmp_path / "archive"),
                                  output=str(tmp_path / "out"), timeout_s=0.5,
                                  box_scores_target="tests.test_sandbox_escapes:stateful_abandoned")
    text = (tmp_path / "replay.toml").read_text()
    (tmp_path / "replay.toml").write_text(text.replace("timeout_s = 0.5\n", "timeout_s = 0.5\nstateful = true\n", 1))
    [result] = _run_lanes(load_config(path))
    assert _abandoned_wrote.is_set()
    outcomes = {c["input_event_id"]: c["outcome"] for c in result.calls if c["processor"] == "box_scores"}
    assert outcomes == {"m-g1": "timeout", "m-g2": "ack", "m-g3": "ack"}
    seen = [json.loads(e.data) for e in result.outputs
            if e.processor == "box_scores" and "state" in json.loads(e.data)]
    assert sorted(s["game_id"] for s in seen) == ["g2", "g3"]
    assert all(s["state"] == [] for s in seen)


# --------------------------------------------------------------------------- what the real client refuses


def _ordering_key_without_ordering():
    client = pubsub_v1.PublisherClient()
    client.publish(client.topic_path("replay-local", "side"), b"{}", ordering_key="k1").result()


def _too_large_by_client():
    client = pubsub_v1.PublisherClient()
    client.publish(client.topic_path("replay-local", "side"), b"x" * 10_000_001).result()


def _too_large_by_context():
    capture = PublishCapture(lambda ordinal: f"id-{ordinal}")
    capture.publish("side", b"x" * 10_000_001)


def _bare_topic_name():
    pubsub_v1.PublisherClient().publish("side", b"{}").result()


@pytest.mark.parametrize("processor, error_type", [
    (_ordering_key_without_ordering, ValueError),
    (_too_large_by_client, "MessageTooLargeError"),
    (_too_large_by_context, "MessageTooLargeError"),
    (_bare_topic_name, "InvalidArgument"),
])
def test_invalid_publish_fails_call(processor, error_type):
    """The sandbox raises what the Pub/Sub client (or server) raises, and captures nothing."""
    capture = _capture("refused")
    with Sandbox(SandboxSettings(clock="wall")) as sandbox:
        result = sandbox.call(processor, capture=capture, timeout_s=10, publish_time_micros=PUBLISHED_AT)
    assert result.error is not None
    if isinstance(error_type, str):
        assert type(result.error).__name__ == error_type
    else:
        assert type(result.error) is error_type
    assert capture.published == []


def test_ordering_key_accepted_with_ordering_enabled():
    """A client created with message ordering enabled may publish with an ordering key."""
    def processor():
        options = pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
        client = pubsub_v1.PublisherClient(publisher_options=options)
        return client.publish(client.topic_path("replay-local", "side"), b"{}", ordering_key="k1").result()

    capture = _capture("ordered")
    with Sandbox(SandboxSettings(clock="wall")) as sandbox:
        result = sandbox.call(processor, capture=capture, timeout_s=10, publish_time_micros=PUBLISHED_AT)
    assert result.error is None
    assert [(p.topic, p.ordering_key) for p in capture.published] == [("side", "k1")]


def test_cut_cascade_fails_the_report(tmp_path, monkeypatch):
    """A run whose cascade hit the call limit fails the cascade_limit check and exits non-zero."""
    from replayer.run import run_replay

    monkeypatch.setattr(lane_module, "MAX_CALLS_PER_ENTRY_EVENT", 20)
    recording.write_archive(str(tmp_path / "archive"))
    path = recording.write_config(tmp_path / "replay.toml", archive=str(tmp_path / "archive"),
                                  output=str(tmp_path / "out"),
                                  box_scores_target="tests.test_sandbox_escapes:self_loop2")
    result = run_replay(path)

    assert result.run_meta["cascade_limit_hits"] > 0
    checks = [check for check in result.report.checks if check.name == "cascade_limit"]
    assert len(checks) == 1
    assert checks[0].status == "fail"
    assert checks[0].value == result.run_meta["cascade_limit_hits"]
    assert result.exit_code == 1
