"""The sandbox around every processor call during a replay.

For the duration of a call it sets the configured environment variables (and
restores them), makes the processor see the input's publish time as "now"
(clock ``recorded``, with ``time_machine``), and captures every publish: both
``google.cloud.pubsub_v1.PublisherClient.publish`` and the generated
``google.pubsub_v1.PublisherClient.publish`` are replaced at class level
while a replay runs, so clients created inside the processor, or before the
replay, publish nothing. The call runs in a worker thread; after
``timeout_s`` the sandbox stops waiting and the replay goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import threading
import time
from typing import Any, Callable, Iterator, Mapping


from recorder._logging import get_logger
from replayer.config import SandboxSettings

log = get_logger(__name__)

# Processor calls are serialised: the environment and the travelled clock are
# process-wide, so two calls at once would see each other's settings.
_CALL_LOCK = threading.Lock()
_GUARD_LOCK = threading.Lock()
_guard_references = 0
_saved_methods: list[tuple[type, str, Any]] = []
_active_capture: "PublishCapture | None" = None
_abandoned_threads: set[threading.Thread] = set()
_dropped_publishes = 0
#: Where Pub/Sub clients created during a replay point: a closed port on loopback.
SANDBOX_PUBSUB_ENDPOINT = "127.0.0.1:9"


class SandboxViolation(RuntimeError):
    """A processor published outside a sandboxed call during a replay (the publish was dropped)."""


@dataclasses.dataclass(frozen=True)
class CapturedPublish:
    """One message a processor published during a call.

    ``elapsed_micros`` is the time since the call started, so the replay can
    give the output a simulated publish time.
    """

    topic: str
    data: bytes
    attributes: dict[str, str]
    ordering_key: str | None
    content_type: str | None
    message_id: str
    elapsed_micros: int


class PublishCapture:
    """Collects the publishes of one processor call; ``message_id_for(ordinal)`` names them."""

    def __init__(self, message_id_for: Callable[[int], str]) -> None:
        self._message_id_for = message_id_for
        self._lock = threading.Lock()
        self.published: list[CapturedPublish] = []
        self.started_ns = time.perf_counter_ns()
        self.closed = False

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str] | None = None,
                ordering_key: str | None = None, content_type: str | None = None) -> str:
        """Record one publish and return its deterministic message id."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("Data being published to Pub/Sub must be sent as a bytestring.")
        clean: dict[str, str] = {}
        for key, value in (attributes or {}).items():
            if isinstance(value, bytes):
                value = value.decode("utf-8")
            if not isinstance(value, str):
                raise TypeError("All attributes being published to Pub/Sub must be sent as text strings.")
            clean[str(key)] = value
        with self._lock:
            if self.closed:
                raise SandboxViolation("publish after the processor call ended")
            message_id = self._message_id_for(len(self.published))
            self.published.append(CapturedPublish(
                topic=topic.rsplit("/", 1)[-1], data=bytes(data), attributes=clean,
                ordering_key=ordering_key or None, content_type=content_type, message_id=message_id,
                elapsed_micros=(time.perf_counter_ns() - self.started_ns) // 1000,
            ))
        return message_id


# --------------------------------------------------------------------------- publish guard


def _current_capture() -> PublishCapture | None:
    global _dropped_publishes
    if threading.current_thread() in _abandoned_threads or _active_capture is None:
        _dropped_publishes += 1
        log.warning("sandbox.publish_dropped", reason="no processor call is active in this thread",
                    dropped=_dropped_publishes)
        return None
    return _active_capture


def _sandbox_publish(self, topic, data, ordering_key="", retry=None, timeout=None, **attrs):  # noqa: ARG001
    from google.cloud.pubsub_v1.publisher import futures

    future = futures.Future()
    capture = _current_capture()
    if capture is None:
        future.set_exception(SandboxViolation(
            f"publish to {topic!r} outside a processor call during a replay was dropped"))
        return future
    future.set_result(capture.publish(topic, data, attrs, ordering_key or None))
    return future


def _sandbox_gapic_publish(self, request=None, *, topic=None, messages=None, retry=None,  # noqa: ARG001
                           timeout=None, metadata=()):
    from google.pubsub_v1.types import PublishResponse

    if request is not None:
        topic = request["topic"] if isinstance(request, dict) else request.topic
        messages = request["messages"] if isinstance(request, dict) else request.messages
    capture = _current_capture()
    if capture is None:
        raise SandboxViolation(f"publish to {topic!r} outside a processor call during a replay was dropped")
    ids = []
    for message in messages or ():
        if isinstance(message, dict):
            data, attributes, key = message.get("data", b""), message.get("attributes", {}), \
                message.get("ordering_key")
        else:
            data, attributes, key = message.data, dict(message.attributes), message.ordering_key
        ids.append(capture.publish(topic, data, attributes, key or None))
    return PublishResponse(message_ids=ids)


def _sandboxed_init(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a client constructor so a client made during a replay needs no credentials.

    The client gets anonymous credentials and an endpoint on a closed loopback
    port instead of Pub/Sub or the emulator named by PUBSUB_EMULATOR_HOST, so
    even a call the sandbox does not capture (e.g. ``get_topic``) reaches no
    Pub/Sub endpoint; it fails with a connection error instead.
    """
    def __init__(self, *args, **kwargs):
        from google.auth.credentials import AnonymousCredentials

        kwargs.pop("transport", None)
        kwargs["credentials"] = AnonymousCredentials()
        kwargs["client_options"] = {"api_endpoint": SANDBOX_PUBSUB_ENDPOINT}
        emulator_host = os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        try:
            original(self, *args, **kwargs)
        finally:
            if emulator_host is not None:
                os.environ["PUBSUB_EMULATOR_HOST"] = emulator_host

    return __init__


def _publisher_patches() -> list[tuple[type, str, Callable[..., Any]]]:
    patches: list[tuple[type, str, Callable[..., Any]]] = []
    try:
        from google.cloud.pubsub_v1 import PublisherClient
        patches.append((PublisherClient, "publish", _sandbox_publish))
        patches.append((PublisherClient, "__init__", _sandboxed_init(PublisherClient.__init__)))
    except ImportError:
        pass
    try:
        from google.pubsub_v1.services.publisher import PublisherClient as GapicPublisherClient
        patches.append((GapicPublisherClient, "publish", _sandbox_gapic_publish))
        patches.append((GapicPublisherClient, "__init__", _sandboxed_init(GapicPublisherClient.__init__)))
    except ImportError:
        pass
    return patches


@contextlib.contextmanager
def publish_guard() -> Iterator[None]:
    """Replace the Pub/Sub publish methods for the duration of a replay (reference counted).

    NOTE: the asynchronous generated client (``PublisherAsyncClient``) is not
    intercepted; a processor using it directly would reach its endpoint.
    """
    global _guard_references
    with _GUARD_LOCK:
        if _guard_references == 0:
            for cls, name, replacement in _publisher_patches():
                # None marks an inherited method: restoring deletes the override.
                _saved_methods.append((cls, name, cls.__dict__.get(name)))
                setattr(cls, name, replacement)
        _guard_references += 1
    try:
        yield
    finally:
        with _GUARD_LOCK:
            _guard_references -= 1
            if _guard_references == 0:
                while _saved_methods:
                    cls, name, original = _saved_methods.pop()
                    if original is None:
                        delattr(cls, name)
                    else:
                        setattr(cls, name, original)


def dropped_publishes() -> int:
    """How many publishes were dropped because no processor call was active (process total)."""
    return _dropped_publishes


# --------------------------------------------------------------------------- calls


@dataclasses.dataclass(frozen=True)
class CallResult:
    """What one sandboxed call did: its return value or exception, or that it timed out."""

    value: Any = None
    error: BaseException | None = None
    timed_out: bool = False
    handling_micros: int = 0


class _Worker:
    """A daemon thread that runs calls one at a time; replaced when a call times out."""

    def __init__(self) -> None:
        self.jobs: queue.Queue = queue.Queue()
        self.abandoned = False
        self.thread = threading.Thread(target=self._loop, name="replay-processor", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            function, outcome, done = job
            try:
                outcome["value"] = function()
            except BaseException as error:  # the processor's failure is the call's outcome
                outcome["error"] = error
            finally:
                outcome["end_ns"] = time.perf_counter_ns()
                done.set()
            if self.abandoned:
                _abandoned_threads.discard(self.thread)
                return


@contextlib.contextmanager
def _environment(values: tuple[tuple[str, str], ...]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name, _ in values}
    os.environ.update(dict(values))
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous


@contextlib.contextmanager
def _recorded_clock(publish_time_micros: int | None) -> Iterator[None]:
    if publish_time_micros is None:
        yield
        return
    try:
        import time_machine
    except ImportError as error:
        from replayer.errors import MissingExtraError

        raise MissingExtraError("time-machine", "replay") from error
    import datetime as dt

    moment = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=publish_time_micros)
    traveller = time_machine.travel(moment, tick=True)
    traveller.start()
    try:
        yield
    finally:
        traveller.stop()


class Sandbox:
    """Runs processor calls with the configured environment, clock and publish capture.

    Use as a context manager (it installs the publish guard); :meth:`call`
    then runs one function and returns a :class:`CallResult`.
    """

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self._worker: _Worker | None = None
        self._guard: contextlib.AbstractContextManager | None = None
        self.abandoned_workers = 0

    def __enter__(self) -> "Sandbox":
        self._guard = publish_guard()
        self._guard.__enter__()
        # The first travel and the first worker thread cost tens of milliseconds;
        # paying that here keeps it out of the first paced release.
        with _recorded_clock(time.time_ns() // 1000 if self.settings.clock == "recorded" else None):
            self._worker = _Worker()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._worker is not None and not self._worker.abandoned:
            self._worker.jobs.put(None)
        self._worker = None
        if self._guard is not None:
            self._guard.__exit__(*exc_info)
            self._guard = None

    def call(self, function: Callable[[], Any], *, capture: PublishCapture, timeout_s: float,
             publish_time_micros: int) -> CallResult:
        """Run ``function`` in the worker thread, waiting at most ``timeout_s`` seconds."""
        global _active_capture
        if self._guard is None:
            raise RuntimeError("Sandbox.call needs the sandbox entered: use 'with Sandbox(...) as sandbox'")
        travel_to = publish_time_micros if self.settings.clock == "recorded" else None
        with _CALL_LOCK, _environment(self.settings.env), _recorded_clock(travel_to):
            if self._worker is None:
                self._worker = _Worker()
            worker = self._worker
            outcome: dict[str, Any] = {}
            done = threading.Event()
            _active_capture = capture
            capture.started_ns = time.perf_counter_ns()
            worker.jobs.put((function, outcome, done))
            try:
                finished = done.wait(timeout_s)
            finally:
                _active_capture = None
            if not finished:
                # NOTE: Python cannot stop a thread; the timed-out call keeps running in
                # its abandoned daemon thread, and any publish it makes later is dropped.
                worker.abandoned = True
                _abandoned_threads.add(worker.thread)
                self._worker = None
                self.abandoned_workers += 1
                capture.closed = True
                return CallResult(timed_out=True, handling_micros=round(timeout_s * 1e6))
            capture.closed = True
        elapsed = (outcome["end_ns"] - capture.started_ns) // 1000
        return CallResult(value=outcome.get("value"), error=outcome.get("error"), handling_micros=elapsed)
