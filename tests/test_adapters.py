"""Processor adapters: exact push envelopes, decoding, status classification, http delivery."""

from __future__ import annotations

import base64
import datetime as dt
import importlib.util
import json
import threading

import pytest
from flask import Flask, request

from recorder._envelope import parse_push_envelope
from replayer.adapters import ProcessorContext, build_adapter, classify_return
from replayer.config import ProcessorConfig, ReplayConfig, ReplaySettings, SandboxSettings, ArchiveSettings
from replayer.lane import LaneExecutor, lane_name, EntryDelivery
from replayer.config import Selection
from replayer.pacing import ManualClock
from schemas import Direction, RecordedEvent, micros_to_rfc3339

CASE = "08-push-envelope-shapes"
DAY = dt.date(2024, 3, 9)


def _config(processor: ProcessorConfig, project: str = "demo-project") -> ReplayConfig:
    return ReplayConfig(phases=("score",), archive=ArchiveSettings(uri="unused"),
                        replay=ReplaySettings(mode="isolated", speed=None, project=project),
                        sandbox=SandboxSettings(clock="wall"), processors=(processor,))


def _processor(adapter: str, **options) -> ProcessorConfig:
    return ProcessorConfig(name="score", phase="score", adapter=adapter, target=options.pop("target", "x:y"),
                           subscribes=("scores",), subscription="score-push", **options)


def _case_events(cases_dir) -> dict[str, RecordedEvent]:
    events = {}
    for path in sorted((cases_dir / CASE).glob("envelope_*.json")):
        message = parse_push_envelope(json.loads(path.read_text()))
        events[path.name] = RecordedEvent(
            event_id=message.message_id, logical_date=DAY, phase="score", direction=Direction.INPUT,
            processor="score", topic="scores", subscription="score-push", publish_time=message.publish_time,
            data=message.data, attributes=message.attributes, ordering_key=message.ordering_key,
            delivery_attempt=message.delivery_attempt, source="push")
    return events


def _case_module(cases_dir):
    spec = importlib.util.spec_from_file_location("case08_processors", cases_dir / CASE / "processors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _replay(processor: ProcessorConfig, target, events) -> list[dict]:
    config = _config(processor)
    executor = LaneExecutor(config, Selection(dates=(DAY,), phases=("score",)), clock=ManualClock(),
                            adapters={processor.name: build_adapter(processor, config=config, target=target)})
    deliveries = [EntryDelivery(event, processor.name) for event in events]
    return list(executor.run(lane_name(DAY, processor.name, "isolated"), deliveries, logical_date=DAY).calls)


def test_envelopes_have_push_shape(cases_dir):
    """Envelopes built from archived records equal the real push bodies key for key."""
    events = _case_events(cases_dir)
    for name, event in events.items():
        expected = json.loads((cases_dir / CASE / name).read_text())
        processor = _processor("callable", delivery_attempt="deliveryAttempt" in expected)
        adapter = build_adapter(processor, config=_config(processor), target=lambda m, c: None)
        from replayer.adapters import Message

        envelope = adapter.envelope(Message(
            message_id=event.event_id, data=event.data, attributes=event.attributes,
            publish_time=event.publish_time, ordering_key=event.ordering_key,
            subscription="projects/demo-project/subscriptions/score-push",
            delivery_attempt=event.delivery_attempt))
        for spelling in ("publishTime", "publish_time"):
            expected["message"][spelling] = micros_to_rfc3339(event.publish_time)
        assert envelope == expected, name


def test_callable_receives_decoded_message(cases_dir):
    """A callable receives exactly the decoded values of each envelope."""
    expected = json.loads((cases_dir / CASE / "expected_decoded.json").read_text())
    seen = {}

    def process(message, ctx):
        seen[message.message_id] = message

    _replay(_processor("callable"), process, _case_events(cases_dir).values())
    for name, values in expected.items():
        message = seen[values["message_id"]]
        assert message.data.hex() == values["data_hex"], name
        assert dict(message.attributes) == values["attributes"], name
        assert (message.ordering_key or "") == values["ordering_key"], name
        assert micros_to_rfc3339(message.publish_time) == values["publish_time"], name
        assert message.delivery_attempt == values["delivery_attempt"], name


def test_naive_envelope_handler_fails_three(cases_dir):
    """The naive push handler fails on the three optional-key envelopes; the replay goes on."""
    processor = _processor("callable", receives="envelope")
    calls = _replay(processor, _case_module(cases_dir).naive_handler, _case_events(cases_dir).values())
    failed = {call["input_event_id"]: call for call in calls if call["category"]}
    assert sorted(failed) == ["960000000002", "960000000003", "960000000004"]
    assert failed["960000000003"]["error"] == "KeyError: 'data'"
    assert failed["960000000002"]["error"] == "KeyError: 'attributes'"
    assert failed["960000000004"]["outcome"] == "error:UnicodeDecodeError"
    assert {call["category"] for call in failed.values()} == {"processor_exception"}
    assert [call["outcome"] for call in calls if not call["category"]] == ["ack"]


def test_tolerant_envelope_handler_delivers_all(cases_dir):
    """The tolerant push handler acks all four envelopes with 204."""
    processor = _processor("callable", receives="envelope")
    calls = _replay(processor, _case_module(cases_dir).tolerant_handler, _case_events(cases_dir).values())
    assert [(call["outcome"], call["status"]) for call in calls] == [("ack", 204)] * 4


def _flask_app(handler) -> Flask:
    app = Flask("case08")

    @app.post("/push")
    def push():
        return "", handler(request.get_json())

    return app


@pytest.mark.parametrize(("handler_name", "failures"), [("naive_handler", 3), ("tolerant_handler", 0)])
def test_wsgi_flask_app(cases_dir, handler_name, failures):
    """The Flask equivalent of each handler gives the same counts and the same exception types as the callable."""
    app = _flask_app(getattr(_case_module(cases_dir), handler_name))
    calls = _replay(_processor("wsgi", path="/push"), app, _case_events(cases_dir).values())
    failed = {call["input_event_id"]: call for call in calls if call["category"]}
    assert len(failed) == failures
    assert {call["category"] for call in failed.values()} <= {"processor_exception"}
    if failures:
        assert failed["960000000003"]["outcome"] == "error:KeyError"
        assert failed["960000000003"]["error"] == "KeyError: 'data'"
        assert failed["960000000004"]["outcome"] == "error:UnicodeDecodeError"
    assert len(calls) - len(failed) == 4 - failures


def _raising_app(error: BaseException) -> Flask:
    app = Flask("raising")

    @app.post("/push")
    def push():
        raise error

    return app


def _message(cases_dir):
    from replayer.adapters import Message

    event = next(iter(_case_events(cases_dir).values()))
    return Message(message_id=event.event_id, data=event.data, attributes=event.attributes,
                   publish_time=event.publish_time)


def test_wsgi_exception_raised_again(cases_dir):
    """A Flask view that raises makes the adapter raise the same exception, carrying the 500 status."""
    from replayer.adapters import response_status

    processor = _processor("wsgi", path="/push")
    error = ValueError("bad box score")
    adapter = build_adapter(processor, config=_config(processor), target=_raising_app(error))
    ctx = ProcessorContext(publisher=lambda *args: "id", state={}, logical_date=DAY, processor="score",
                           phase="score")
    with pytest.raises(ValueError) as raised:
        adapter.deliver(_message(cases_dir), ctx)
    assert raised.value is error
    assert response_status(raised.value) == 500


@pytest.mark.parametrize(("error", "outcome", "category"), [
    (ValueError("bad box score"), "error:ValueError", "processor_exception"),
    (FileNotFoundError("gs://bucket/raw/g3.json"), "error:FileNotFoundError", "missing_input_data"),
])
def test_wsgi_exception_categories(cases_dir, error, outcome, category):
    """A raising Flask app is categorized like a raising callable, by exception type."""
    events = list(_case_events(cases_dir).values())[:1]
    calls = _replay(_processor("wsgi", path="/push"), _raising_app(error), events)
    assert calls[0]["outcome"] == outcome
    assert calls[0]["category"] == category
    assert calls[0]["error"].startswith(f"{type(error).__name__}: ")


def test_wsgi_returned_500_is_nack(cases_dir):
    """A Flask app that returns 500 without raising is a non-ack, not an exception."""
    events = list(_case_events(cases_dir).values())[:1]
    calls = _replay(_processor("wsgi", path="/push"), _flask_app(lambda body: 500), events)
    assert (calls[0]["outcome"], calls[0]["category"], calls[0]["status"]) == ("nack", "non_ack_response", 500)
    assert calls[0]["error"] is None


def test_wsgi_ignores_other_requests(cases_dir):
    """An exception in a Flask request outside a replay delivery does not mark the next delivery."""
    other = _raising_app(RuntimeError("served elsewhere"))
    with other.test_client() as client:
        assert client.post("/push", json={}).status_code == 500
    events = list(_case_events(cases_dir).values())[:1]
    calls = _replay(_processor("wsgi", path="/push"), _flask_app(lambda body: 204), events)
    assert (calls[0]["outcome"], calls[0]["category"]) == ("ack", None)


def test_wsgi_plain_app_exception(cases_dir):
    """A WSGI app that is not Flask and raises is a processor_exception of its type."""
    def app(environ, start_response):
        raise LookupError("no such game")

    events = list(_case_events(cases_dir).values())[:1]
    calls = _replay(_processor("wsgi", path="/push"), app, events)
    assert (calls[0]["outcome"], calls[0]["category"]) == ("error:LookupError", "processor_exception")


def test_status_classification(cases_dir):
    """Returned status codes are acks exactly when Pub/Sub push counts them as acks."""
    table = json.loads((cases_dir / CASE / "expected_status_handling.json").read_text())
    for status, expected in table.items():
        assert classify_return(int(status)).ack is (expected == "ack"), status
    assert classify_return(None).ack
    assert classify_return(True).ack
    assert not classify_return(False).ack
    assert classify_return(("", 503)).status == 503


def test_response_object_status_classification(cases_dir):
    """A returned Flask/Werkzeug Response is classified by its status_code, like a push endpoint's response."""
    from flask import Response

    table = json.loads((cases_dir / CASE / "expected_status_handling.json").read_text())
    for status, expected in table.items():
        delivery = classify_return(Response("body", status=int(status)))
        assert (delivery.ack, delivery.status) == (expected == "ack", int(status)), status
        # Flask's (response, headers) form keeps the response's status.
        assert classify_return((Response("body", status=int(status)), {"X-A": "1"})).ack is (expected == "ack")


def test_callable_returning_500_response_is_nack(cases_dir):
    """A Functions Framework style callable returning Response(status=500) is a non_ack_response, not an ack."""
    from flask import Response

    events = list(_case_events(cases_dir).values())[:1]
    calls = _replay(_processor("callable"), lambda message, ctx: Response("boom", status=500), events)
    assert (calls[0]["category"], calls[0]["status"]) == ("non_ack_response", 500)
    calls = _replay(_processor("callable"), lambda message, ctx: Response("fine", status=204), events)
    assert calls[0]["category"] is None
    assert calls[0]["status"] == 204


def test_wsgi_status_classification(cases_dir):
    """A WSGI app responding with each status is classified like push."""
    table = json.loads((cases_dir / CASE / "expected_status_handling.json").read_text())
    events = list(_case_events(cases_dir).values())[:1]
    for status, expected in table.items():
        app = _flask_app(lambda body, status=int(status): status)
        calls = _replay(_processor("wsgi", path="/push"), app, events)
        assert calls[0]["outcome"] == expected, status
        assert calls[0]["status"] == int(status)


@pytest.fixture
def push_server():
    """A Flask app on a loopback port that stores what it receives."""
    from werkzeug.serving import make_server

    received = []
    app = Flask("push-server")

    @app.post("/")
    def push():
        received.append({"body": request.get_json(), "authorization": request.headers.get("Authorization")})
        message = request.get_json()["message"]
        return "", (500 if "data" not in message else 204)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/", received
    server.shutdown()
    thread.join(5)


def test_http_adapter_posts_envelope(cases_dir, push_server):
    """The http adapter POSTs the push envelope with the configured Authorization header."""
    url, received = push_server
    processor = _processor("http", target=None, url=url, auth_header="Bearer test-token", timeout_s=5)
    calls = _replay(processor, None, _case_events(cases_dir).values())
    assert len(received) == 4
    assert {item["authorization"] for item in received} == {"Bearer test-token"}
    bodies = {item["body"]["message"]["messageId"]: item["body"] for item in received}
    assert bodies["960000000004"]["message"]["data"] == base64.b64encode(bytes.fromhex("fbefbefffe3f")).decode()
    assert bodies["960000000004"]["subscription"] == "projects/demo-project/subscriptions/score-push"
    outcomes = {call["input_event_id"]: (call["outcome"], call["status"]) for call in calls}
    assert outcomes["960000000003"] == ("nack", 500)
    assert outcomes["960000000001"] == ("ack", 204)


def test_http_adapter_timeout(cases_dir):
    """A service that never answers within timeout_s is a timeout, not a hang."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts connections but never answers
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        processor = _processor("http", target=None, url=url, timeout_s=0.3)
        calls = _replay(processor, None, list(_case_events(cases_dir).values())[:1])
    finally:
        listener.close()
    assert calls[0]["category"] == "timeout"
    assert calls[0]["outcome"] == "timeout"
    assert calls[0]["handling_micros"] == 300_000


def test_context_publish_json():
    """ctx.publish sends dicts as compact JSON and returns the message id."""
    published = []
    ctx = ProcessorContext(publisher=lambda *args: published.append(args) or "id-1", state={},
                           logical_date=DAY, processor="p", phase="score")
    assert ctx.publish("t", {"a": 1}, kind="x") == "id-1"
    assert published == [("t", b'{"a":1}', {"kind": "x"}, None, "application/json")]
