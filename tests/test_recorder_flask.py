"""Flask push middleware: envelope shapes, unchanged responses, real push delivery, dead archive."""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest
import structlog
from flask import Flask, request

from recorder import Recorder
from recorder._reader import ArchiveReader
from recorder.flask import record_push, recorded_push_view
from schemas import Direction, micros_to_rfc3339

ENVELOPES = ("envelope_full.json", "envelope_no_attributes.json",
             "envelope_attributes_only.json", "envelope_binary_data.json")


def make_recorder(archive, **options) -> Recorder:
    options.setdefault("flush_interval_secs", 0.05)
    options.setdefault("install_signal_handler", False)
    options.setdefault("writer_id", "flask")
    options.setdefault("environ", {})
    return Recorder(str(archive), **options)


def naive_app() -> Flask:
    """A push handler that indexes data and attributes directly, as many do."""
    app = Flask("naive")

    @app.post("/push")
    def push():
        message = request.get_json()["message"]
        payload = json.loads(base64.b64decode(message["data"]))
        _ = message["attributes"]["kind"]
        return ("ok", 200) if payload else ("", 204)

    return app


def read_events(archive) -> list:
    return list(ArchiveReader(str(archive)).read())


@pytest.fixture
def envelopes(cases_dir):
    folder = cases_dir / "08-push-envelope-shapes"
    return {name: (folder / name).read_bytes() for name in ENVELOPES}, json.loads(
        (folder / "expected_decoded.json").read_text())


def test_envelope_shapes_recorded_exactly(tmp_path, envelopes):
    """Every genuine envelope shape is decoded into the archived INPUT exactly."""
    bodies, expected = envelopes
    recorder = make_recorder(tmp_path)
    app = Flask("tolerant")

    @app.post("/push")
    def push():
        return "", 204

    record_push(app, recorder, phase="phase2", processor="scores", topic="scores")
    client = app.test_client()
    for body in bodies.values():
        assert client.post("/push", data=body, content_type="application/json").status_code == 204
    recorder.close()
    events = {event.event_id: event for event in read_events(tmp_path)}
    assert len(events) == 4
    for name, want in expected.items():
        event = events[want["message_id"]]
        assert event.data.hex() == want["data_hex"], name
        assert event.attributes == want["attributes"], name
        assert (event.ordering_key or "") == want["ordering_key"], name
        assert micros_to_rfc3339(event.publish_time) == want["publish_time"], name
        assert event.delivery_attempt == want["delivery_attempt"], name
        assert event.outcome == "ack", name
        assert event.subscription == "score-push", name
        assert event.topic == "scores", name


def test_naive_handler_errors_recorded(tmp_path, envelopes):
    """Handler exceptions are recorded as error:<Type>; Flask still returns 500."""
    bodies, _ = envelopes
    recorder = make_recorder(tmp_path)
    app = record_push(naive_app(), recorder, phase="phase2", processor="naive")
    client = app.test_client()
    statuses = {name: client.post("/push", data=body, content_type="application/json").status_code
                for name, body in bodies.items()}
    recorder.close()
    assert statuses == {"envelope_full.json": 200, "envelope_no_attributes.json": 500,
                        "envelope_attributes_only.json": 500, "envelope_binary_data.json": 500}
    outcomes = {event.event_id: event.outcome for event in read_events(tmp_path)}
    assert outcomes == {"960000000001": "ack", "960000000002": "error:KeyError",
                        "960000000003": "error:KeyError", "960000000004": "error:UnicodeDecodeError"}


def test_responses_unchanged(tmp_path, envelopes):
    """Wrapped and unwrapped apps return identical bytes for the same requests."""
    bodies, _ = envelopes
    plain = naive_app().test_client()
    recorder = make_recorder(tmp_path)
    wrapped = record_push(naive_app(), recorder, phase="phase2").test_client()
    requests = [*bodies.values(), b"not json", b'{"message": 1}']
    for body in requests:
        want = plain.post("/push", data=body, content_type="application/json")
        got = wrapped.post("/push", data=body, content_type="application/json")
        assert got.status_code == want.status_code
        assert got.get_data() == want.get_data()
        assert sorted(got.headers.items()) == sorted(want.headers.items())
    recorder.close()


def test_non_envelope_passed_through(tmp_path):
    """A body that is not an envelope reaches the app unchanged and is not recorded."""
    recorder = make_recorder(tmp_path)
    app = Flask("echo")

    @app.post("/push")
    def push():
        return request.get_data()

    record_push(app, recorder, phase="phase2")
    response = app.test_client().post("/push", data=b'{"hello": "world"}')
    recorder.close()
    assert response.get_data() == b'{"hello": "world"}'
    assert app.wsgi_app.non_envelope_requests == 1
    assert read_events(tmp_path) == []


def test_view_decorator_records(tmp_path, envelopes):
    """recorded_push_view records one view's deliveries with its status."""
    bodies, _ = envelopes
    recorder = make_recorder(tmp_path)
    app = Flask("view")

    @app.post("/push")
    @recorded_push_view(recorder, phase="phase2", processor="view")
    def push():
        return "", 202

    response = app.test_client().post("/push", data=bodies["envelope_full.json"],
                                      content_type="application/json")
    recorder.close()
    assert response.status_code == 202
    [event] = read_events(tmp_path)
    assert event.outcome == "ack"
    assert event.processor == "view"


@pytest.fixture
def served_app():
    """Serve a Flask app on a loopback port in a thread; yields a starter returning the port."""
    from werkzeug.serving import make_server

    servers = []

    def serve(app: Flask) -> int:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_port

    yield serve
    for server in servers:
        server.shutdown()


def test_push_subscription_records_inputs_and_outputs(tmp_path, pubsub_emulator, served_app):
    """Real emulator pushes are recorded as INPUTs and the app's publishes as their OUTPUTs."""
    from google.cloud import pubsub_v1

    project = pubsub_emulator.project
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    in_topic = publisher.topic_path(project, "flask-push-in")
    out_topic = publisher.topic_path(project, "flask-push-out")
    publisher.create_topic(name=in_topic)
    publisher.create_topic(name=out_topic)
    handled = []
    lock = threading.Lock()
    app = Flask("pusher")

    @app.post("/push")
    def push():
        message = request.get_json()["message"]
        payload = json.loads(base64.b64decode(message["data"]))
        publisher.publish(out_topic, json.dumps({"double": payload["n"] * 2}).encode(),
                          source=message["messageId"]).result(timeout=30)
        with lock:
            handled.append(message["messageId"])
        return "", 204

    recorder = make_recorder(tmp_path)
    record_push(app, recorder, phase="phase3", processor="doubler", topic="flask-push-in")
    port = served_app(app)
    subscriber.create_subscription(
        name=subscriber.subscription_path(project, "flask-push-sub"), topic=in_topic,
        push_config={"push_endpoint": f"http://127.0.0.1:{port}/push"})
    sent = {publisher.publish(in_topic, json.dumps({"n": n}).encode(), n=str(n)).result(timeout=30)
            for n in range(5)}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not sent <= set(handled):
        time.sleep(0.1)
    recorder.close()
    assert sent <= set(handled)
    events = read_events(tmp_path)
    inputs = {e.event_id: e for e in events if e.direction is Direction.INPUT}
    outputs = [e for e in events if e.direction is Direction.OUTPUT]
    assert set(inputs) == sent
    assert all(event.outcome == "ack" for event in inputs.values())
    assert all(event.subscription == "flask-push-sub" for event in inputs.values())
    assert {event.causation_id for event in outputs} == sent
    for event in outputs:
        assert event.attributes["source"] == event.causation_id
        assert json.loads(event.data)["double"] == 2 * int(inputs[event.causation_id].attributes["n"])
        assert event.topic == "flask-push-out"


def test_stopped_gcs_archive_keeps_answering(tmp_path, monkeypatch, envelopes):
    """With the GCS archive down, the app still returns 200, every event is counted as dropped."""
    from tests._emulators import GcsEmulator

    emulator = GcsEmulator(tmp_path).start()
    emulator.stop()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.host)
    bodies, _ = envelopes
    recorder = make_recorder("gs://stopped-bucket/archive", retry_budget_secs=0.2,
                             error_log_interval_secs=30)
    app = record_push(naive_app(), recorder, phase="phase2")
    client = app.test_client()
    with structlog.testing.capture_logs() as logs:
        for _ in range(15):
            response = client.post("/push", data=bodies["envelope_full.json"],
                                   content_type="application/json")
            assert response.status_code == 200
        stats = recorder.close(timeout_secs=30)
    assert stats.dropped == 15
    assert stats.recorded == 0
    errors = [entry for entry in logs if entry["event"] == "recorder.archive_unreachable"]
    assert len(errors) == 1


def push_body(message_id: str, *, message: dict | None = None, **envelope) -> dict:
    """A valid push envelope whose message and envelope fields ``message`` and ``envelope`` replace."""
    fields = {"data": base64.b64encode(b'{"x":1}').decode(), "attributes": {"a": "b"},
              "messageId": message_id, "publishTime": "2024-01-15T10:00:00.000Z"}
    fields.update(message or {})
    return {"message": fields, "subscription": "projects/p/subscriptions/s", **envelope}


def counting_app(received: list) -> Flask:
    app = Flask("counting")

    @app.post("/")
    def handle():
        received.append(request.get_data())
        return "", 204

    return app


@pytest.mark.parametrize("attempt", [2**31, 2**40, 1e30])
def test_push_attempt_out_of_range_invalid(tmp_path, attempt):
    """A deliveryAttempt outside the Avro int range drops only that message; the others are recorded."""
    recorder = make_recorder(tmp_path, flush_interval_secs=60)
    app = record_push(counting_app([]), recorder, phase="phase2")
    client = app.test_client()
    assert client.post("/", json=push_body("good-1")).status_code == 204
    assert client.post("/", json=push_body("poison", deliveryAttempt=attempt)).status_code == 204
    assert client.post("/", json=push_body("good-2")).status_code == 204
    stats = recorder.close(timeout_secs=10)
    assert stats.invalid == 1
    assert stats.recorded == 2
    assert app.wsgi_app.invalid_messages == 1
    assert sorted(event.event_id for event in read_events(tmp_path)) == ["good-1", "good-2"]


def test_push_middleware_never_raises(tmp_path):
    """A non-string subscription and JSON nested 100,000 deep reach the app unrecorded and counted."""
    received: list = []
    recorder = make_recorder(tmp_path)
    app = record_push(counting_app(received), recorder, phase="phase2")
    client = app.test_client()
    deep = "[" * 100_000 + "]" * 100_000
    bad_subscription = json.dumps(push_body("m-1", subscription=5))
    assert client.post("/", data=bad_subscription, content_type="application/json").status_code == 204
    assert client.post("/", data=deep, content_type="application/json").status_code == 204
    stats = recorder.close(timeout_secs=5)
    assert len(received) == 2
    assert received[1] == deep.encode()
    assert app.wsgi_app.invalid_messages == 1
    assert app.wsgi_app.non_envelope_requests == 1
    assert stats.invalid == 1
    assert stats.recorded == 0


@pytest.mark.parametrize("field, message, envelope", [
    ("publishTime", {"publishTime": None}, {}),
    ("publishTime", {"publishTime": "2024-01-15T10:00:00"}, {}),
    ("publishTime", {"publishTime": "yesterday"}, {}),
    ("attributes", {"attributes": ["a"]}, {}),
    ("data", {"data": "----__4_"}, {}),
    ("deliveryAttempt", {}, {"deliveryAttempt": "x"}),
])
def test_push_bad_field_counted_and_named(tmp_path, field, message, envelope):
    """A push message with a bad field is counted invalid and logged once, naming the field, not the payload."""
    recorder = make_recorder(tmp_path, error_log_interval_secs=30)
    app = record_push(counting_app([]), recorder, phase="phase2")
    client = app.test_client()
    with structlog.testing.capture_logs() as logs:
        for index in range(3):
            body = push_body(f"m-{index}", message=message, **envelope)
            assert client.post("/", json=body).status_code == 204
    stats = recorder.close(timeout_secs=5)
    assert stats.invalid == 3
    assert app.wsgi_app.invalid_messages == 3
    assert app.wsgi_app.non_envelope_requests == 0
    warnings = [entry for entry in logs if entry["event"] == "push.invalid_message"]
    assert len(warnings) == 1
    assert warnings[0]["field"] == field
    assert warnings[0]["message_id"] == "m-0"
    assert "eyJ4IjoxfQ" not in repr(warnings[0])


def test_push_view_bad_field_counted(tmp_path):
    """The view decorator counts a message with a bad field and still calls the view."""
    recorder = make_recorder(tmp_path)
    app = Flask("view")
    calls = []

    @app.post("/")
    @recorded_push_view(recorder, phase="phase2")
    def handle():
        calls.append(1)
        return "", 204

    client = app.test_client()
    assert client.post("/", json=push_body("m-1", subscription=5)).status_code == 204
    stats = recorder.close(timeout_secs=5)
    assert calls == [1]
    assert stats.invalid == 1
