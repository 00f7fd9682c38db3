"""The sandbox around every processor call during a replay.

For the duration of a call it sets the configured environment variables (and
restores them), makes the processor see the input's publish time as "now"
(clock ``recorded``, with ``time_machine``), and captures every publish. Both
``google.cloud.pubsub_v1.PublisherClient.publish`` and the generated
``google.pubsub_v1.PublisherClient.publish`` are replaced at class level
while a replay runs, so clients created inside the processor, or before the
replay, publish nothing. Other publisher calls raise :class:`SandboxViolation`.
A publish belongs to the thread that makes it: a call's own thread, or a
thread started during the call (``threading.Thread.start`` is wrapped while
the guard is installed), which publishes into that call while it runs and
is dropped as a stray publish of it afterwards. The guard outlives the
replay while such a thread is alive; other threads then publish normally.
After ``timeout_s`` the sandbox stops waiting for a call and the replay goes
on. A lane replays under :meth:`Sandbox.supervise`, where calls run inline
in a runner thread that is abandoned on a timeout; a lone :meth:`Sandbox.call`
runs in a worker thread instead.

Under :meth:`Sandbox.supervise` the environment is set once for the lane,
checked (and set again if a processor changed it) before every call, and
restored when the last supervised lane of the process ends; with clock
``recorded``, ``TZ=UTC`` is part of that environment unless ``env`` sets TZ, and each call moves one
reused ``time_machine`` travel to its publish time. Setting and restoring
both for every call cost about 15 us a call, more than the rest of the
sandbox (benchmarks/replay_bench.py). Between the calls of a lane the
process keeps the sandbox environment but the real clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
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
#: Thread -> the capture of the processor call it is running now.
_call_threads: "dict[threading.Thread, PublishCapture]" = {}
#: Thread -> the capture of the call that started it (threads a processor started,
#: their descendants, and call threads abandoned on a timeout). The publish guard
#: stays installed while one of them is alive, even after the replay.
_owned_threads: "dict[threading.Thread, PublishCapture]" = {}
_dropped_publishes = 0
_ORIGINAL_THREAD_START = threading.Thread.start
#: Endpoint of Pub/Sub clients created during a replay: a closed port on loopback.
SANDBOX_PUBSUB_ENDPOINT = "127.0.0.1:9"


class SandboxViolation(RuntimeError):
    """A Pub/Sub call the sandbox does not allow during a replay.

    Raised for a publish outside a sandboxed call (the publish is dropped) and
    for any publisher method besides publish, which would reach an endpoint.
    """


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

    def __init__(self, message_id_for: Callable[[int], str], *, call_id: str | None = None,
                 processor: str | None = None) -> None:
        self._message_id_for = message_id_for
        self._lock = threading.Lock()
        self.published: list[CapturedPublish] = []
        self.started_ns = time.perf_counter_ns()
        self.closed = False
        #: Names the call in logs: its input event id and processor.
        self.call_id = call_id
        self.processor = processor
        #: Publishes made after the call ended by a thread it started (dropped).
        self.stray_publishes = 0

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str] | None = None,
                ordering_key: str | None = None, content_type: str | None = None) -> str:
        """Record one publish and return its deterministic message id."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("Data being published to Pub/Sub must be sent as a bytestring.")
        if len(data) > _MAX_PUBLISH_REQUEST_BYTES:
            # Pub/Sub accepts no such message; the client raises this before sending.
            raise _too_large_error()
        clean: dict[str, str] = {}
        for key, value in (attributes or {}).items():
            if isinstance(value, bytes):
                value = value.decode("utf-8")
            if not isinstance(value, str):
                raise TypeError("All attributes being published to Pub/Sub must be sent as text strings.")
            clean[str(key)] = value
        with self._lock:
            if self.closed:
                _record_drop(self, topic, "the processor call that started this thread has ended")
                raise SandboxViolation("publish after the processor call ended")
            message_id = self._message_id_for(len(self.published))
            self.published.append(CapturedPublish(
                topic=topic.rsplit("/", 1)[-1], data=bytes(data), attributes=clean,
                ordering_key=ordering_key or None, content_type=content_type, message_id=message_id,
                elapsed_micros=(time.perf_counter_ns() - self.started_ns) // 1000,
            ))
        return message_id


# --------------------------------------------------------------------------- publish guard


#: What the guard does with one publish: capture it, drop it, or let it through.
_PASS = object()
_DROP = object()


def _record_drop(owner: "PublishCapture | None", topic: Any, reason: str) -> None:
    """Count and log one dropped publish; ``owner`` is the call whose thread made it, if any."""
    global _dropped_publishes
    _dropped_publishes += 1
    if owner is not None:
        owner.stray_publishes += 1
    log.warning("sandbox.publish_dropped", reason=reason,
                call=owner.call_id if owner is not None else None,
                processor=owner.processor if owner is not None else None,
                thread=threading.current_thread().name, topic=str(topic).rsplit("/", 1)[-1],
                dropped=_dropped_publishes)


def _owner_of(thread: threading.Thread) -> "PublishCapture | None":
    """Return the capture of the call ``thread`` runs, or of the call that started it."""
    capture = _call_threads.get(thread)
    return capture if capture is not None else _owned_threads.get(thread)


def _publish_target(topic: Any) -> Any:
    """Return where a publish made by the current thread goes: a capture, ``_DROP`` or ``_PASS``.

    A publish is attributed to the thread that makes it, never to whatever
    call happens to be running: a thread started during call X publishes
    into X while X runs, and is dropped (a stray publish of X) afterwards.
    """
    owner = _owner_of(threading.current_thread())
    if owner is not None:
        if not owner.closed:
            return owner
        _record_drop(owner, topic, "the processor call that started this thread has ended")
        return _DROP
    if _guard_references == 0:
        # The replay is over; the guard only stays for threads a processor started.
        return _PASS
    _record_drop(None, topic, "no processor call is active in this thread")
    return _DROP


#: The largest publish request Pub/Sub accepts. The client raises for a message that would exceed it.
_MAX_PUBLISH_REQUEST_BYTES = 10 * 1000 * 1000
#: ``projects/{project}/topics/{topic}``, with the topic ID rules of Pub/Sub.
_TOPIC_PATH = re.compile(r"projects/[^/]+/topics/[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}")


def _check_client_publish(client: Any, topic: Any, data: Any, attrs: Mapping[str, Any], ordering_key: str) -> None:
    """Raise what ``PublisherClient.publish`` raises before sending, so the call fails as in production."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("Data being published to Pub/Sub must be sent as a bytestring.")
    if ordering_key and not getattr(client, "_enable_message_ordering", True):
        raise ValueError("Cannot publish a message with an ordering key when message ordering is not enabled.")
    # Cheap bound first: the exact request size needs a protobuf, worth building only near the limit.
    rough = len(data) + len(ordering_key or "") + len(str(topic)) + sum(
        len(str(k)) + len(v if isinstance(v, (bytes, str)) else str(v)) for k, v in attrs.items())
    if rough < _MAX_PUBLISH_REQUEST_BYTES - 100_000:
        return
    from google.pubsub_v1 import types

    message = types.PubsubMessage(data=bytes(data), ordering_key=ordering_key or "", attributes={
        str(k): v.decode("utf-8") if isinstance(v, bytes) else str(v) for k, v in attrs.items()})
    size = types.PublishRequest(topic=str(topic), messages=[message])._pb.ByteSize()
    if size > _MAX_PUBLISH_REQUEST_BYTES:
        raise _too_large_error()


def _too_large_error() -> ValueError:
    """Build the error the Pub/Sub client raises for a message over the request size limit."""
    message = ("The message being published would produce too large a publish request that would exceed "
               f"the maximum allowed size on the backend ({_MAX_PUBLISH_REQUEST_BYTES} bytes).")
    try:
        from google.cloud.pubsub_v1.publisher.exceptions import MessageTooLargeError
    except ImportError:
        return ValueError(message)
    return MessageTooLargeError(message)


def _server_rejection(topic: Any) -> BaseException | None:
    """Return the error Pub/Sub returns for a topic that is not a valid topic path, or None."""
    if isinstance(topic, str) and _TOPIC_PATH.fullmatch(topic):
        return None
    from google.api_core.exceptions import InvalidArgument

    log.warning("sandbox.publish_rejected", reason="invalid topic path", topic=str(topic)[:200])
    return InvalidArgument(f"Invalid resource name given (name={topic}).")


def _sandbox_publish_for(original: Callable[..., Any]) -> Callable[..., Any]:
    def publish(self, topic, data, ordering_key="", retry=None, timeout=None, **attrs):
        from google.cloud.pubsub_v1.publisher import futures

        target = _publish_target(topic)
        if target is _PASS:
            kwargs = {} if retry is None else {"retry": retry}
            if timeout is not None:
                kwargs["timeout"] = timeout
            return original(self, topic, data, ordering_key=ordering_key, **kwargs, **attrs)
        _check_client_publish(self, topic, data, attrs, ordering_key)
        future = futures.Future()
        if target is _DROP:
            future.set_exception(SandboxViolation(
                f"publish to {topic!r} outside a processor call during a replay was dropped"))
            return future
        rejected = _server_rejection(topic)
        if rejected is not None:
            future.set_exception(rejected)
            return future
        future.set_result(target.publish(topic, data, attrs, ordering_key or None))
        return future

    publish.__name__ = "publish"
    return publish


def _sandbox_gapic_publish_for(original: Callable[..., Any]) -> Callable[..., Any]:
    def publish(self, request=None, *, topic=None, messages=None, retry=None,  # noqa: ARG001
                timeout=None, metadata=()):
        from google.pubsub_v1.types import PublishResponse

        if request is not None:
            topic_name = request["topic"] if isinstance(request, dict) else request.topic
        else:
            topic_name = topic
        target = _publish_target(topic_name)
        if target is _PASS:
            kwargs: dict[str, Any] = {"metadata": metadata}
            if retry is not None:
                kwargs["retry"] = retry
            if timeout is not None:
                kwargs["timeout"] = timeout
            return original(self, request, topic=topic, messages=messages, **kwargs)
        if target is _DROP:
            raise SandboxViolation(f"publish to {topic_name!r} outside a processor call during a replay was dropped")
        if request is not None:
            messages = request["messages"] if isinstance(request, dict) else request.messages
        ids = []
        for message in messages or ():
            if isinstance(message, dict):
                data, attributes, key = message.get("data", b""), message.get("attributes", {}), \
                    message.get("ordering_key")
            else:
                data, attributes, key = message.data, dict(message.attributes), message.ordering_key
            ids.append(target.publish(topic_name, data, attributes, key or None))
        return PublishResponse(message_ids=ids)

    publish.__name__ = "publish"
    return publish


def _after_replay_passthrough() -> bool:
    """True when the guard is only kept for processor threads and this thread is not one."""
    return _guard_references == 0 and _owner_of(threading.current_thread()) is None


def _recording_start(self: threading.Thread) -> None:
    """``Thread.start`` while the guard is installed: a thread a call starts belongs to that call.

    NOTE: a thread belongs to the call that started it for its whole life.
    A pool thread that a processor keeps between calls therefore publishes as
    the call that started it, not as the call it works for, and its publishes
    are dropped once that call has ended.
    """
    owner = _owner_of(threading.current_thread())
    if owner is not None:
        _owned_threads[self] = owner
        run = self.run

        def run_owned() -> None:
            try:
                run()
            finally:
                _thread_ended(self)

        try:
            self.run = run_owned  # type: ignore[method-assign]
        except AttributeError:
            pass  # a class with __slots__: released by the next thread that ends, or the next guard exit
    return _ORIGINAL_THREAD_START(self)


def _thread_ended(thread: threading.Thread) -> None:
    """Forget ``thread``; remove a guard kept only for processor threads once none is alive."""
    with _GUARD_LOCK:
        _owned_threads.pop(thread, None)
        _release_if_idle(ending=thread)


def _release_if_idle(ending: threading.Thread | None = None) -> None:
    """Restore the patched methods if no replay runs and no owned thread is alive (under ``_GUARD_LOCK``)."""
    if _guard_references or not _saved_methods:
        return
    for thread in list(_owned_threads):
        if thread is not ending and not thread.is_alive():
            _owned_threads.pop(thread, None)
    if any(thread is not ending for thread in list(_owned_threads)):
        return
    while _saved_methods:
        cls, name, original = _saved_methods.pop()
        if original is None:
            delattr(cls, name)
        else:
            setattr(cls, name, original)
    log.debug("sandbox.guard_removed")


def _sandboxed_init(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a client constructor so a client made during a replay needs no credentials.

    The client gets anonymous credentials, so google-auth looks nothing up:
    no credential file, no metadata server probe. Its endpoint is a closed
    loopback port instead of Pub/Sub or the emulator named by
    PUBSUB_EMULATOR_HOST, so no call it makes reaches a Pub/Sub endpoint.
    """
    def __init__(self, *args, **kwargs):
        from google.auth.credentials import AnonymousCredentials

        if _after_replay_passthrough():
            return original(self, *args, **kwargs)
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


#: Publisher RPCs besides publish. A client created before the replay still
#: points at its real endpoint, so during a replay these raise instead.
_OTHER_PUBLISHER_RPCS = (
    "create_topic", "update_topic", "get_topic", "list_topics", "list_topic_subscriptions",
    "list_topic_snapshots", "delete_topic", "detach_subscription", "set_iam_policy", "get_iam_policy",
    "test_iam_permissions",
)


def _rejected_rpc(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    def rpc(self, *args, **kwargs):
        if _after_replay_passthrough():
            return original(self, *args, **kwargs)
        raise SandboxViolation(
            f"PublisherClient.{name} is not available during a replay: the sandbox lets no call "
            "reach Pub/Sub; only publish is captured")

    rpc.__name__ = name
    return rpc


def _publisher_patches() -> list[tuple[type, str, Callable[..., Any]]]:
    patches: list[tuple[type, str, Callable[..., Any]]] = []
    try:
        from google.cloud.pubsub_v1 import PublisherClient
        patches.append((PublisherClient, "publish", _sandbox_publish_for(PublisherClient.publish)))
        patches.append((PublisherClient, "__init__", _sandboxed_init(PublisherClient.__init__)))
    except ImportError:
        pass
    try:
        from google.pubsub_v1.services.publisher import PublisherClient as GapicPublisherClient
        patches.append((GapicPublisherClient, "publish", _sandbox_gapic_publish_for(GapicPublisherClient.publish)))
        patches.append((GapicPublisherClient, "__init__", _sandboxed_init(GapicPublisherClient.__init__)))
        for name in _OTHER_PUBLISHER_RPCS:
            if name in GapicPublisherClient.__dict__:
                patches.append((GapicPublisherClient, name, _rejected_rpc(name, GapicPublisherClient.__dict__[name])))
    except ImportError:
        pass
    patches.append((threading.Thread, "start", _recording_start))
    return patches


@contextlib.contextmanager
def publish_guard() -> Iterator[None]:
    """Replace the Pub/Sub publish methods for the duration of a replay (reference counted).

    NOTE: the asynchronous generated client (``PublisherAsyncClient``) is not
    intercepted; a processor using it directly would reach its endpoint.
    """
    global _guard_references
    with _GUARD_LOCK:
        if _guard_references == 0 and not _saved_methods:
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
            _release_if_idle()
            if _guard_references == 0 and _saved_methods:
                log.info("sandbox.guard_kept", threads=len(_owned_threads))


def dropped_publishes() -> int:
    """Return how many publishes were dropped because no processor call was active (process total)."""
    return _dropped_publishes


# --------------------------------------------------------------------------- calls


@dataclasses.dataclass(frozen=True)
class CallResult:
    """Result of one sandboxed call: its return value or exception, or that it timed out."""

    value: Any = None
    error: BaseException | None = None
    timed_out: bool = False
    handling_micros: int = 0


class _Job:
    """One call handed to a worker; ``done`` is released when it has finished."""

    __slots__ = ("function", "value", "error", "end_ns", "done")

    def __init__(self, function: Callable[[], Any]) -> None:
        self.function = function
        self.value: Any = None
        self.error: BaseException | None = None
        self.end_ns = 0
        self.done = threading.Lock()
        self.done.acquire()


class _Worker:
    """A daemon thread that runs calls one at a time; replaced when a call times out.

    Plain locks used as binary semaphores hand a call over and back: a call
    costs two thread switches and no Condition, which matters at speed max.
    """

    def __init__(self) -> None:
        self._job: _Job | None = None
        self._posted = threading.Lock()
        self._posted.acquire()
        self.abandoned = False
        self.thread = threading.Thread(target=self._loop, name="replay-processor", daemon=True)
        self.thread.start()

    def submit(self, function: Callable[[], Any]) -> _Job:
        """Start ``function`` in the worker thread; wait on the returned job's ``done`` lock."""
        job = _Job(function)
        self._job = job
        self._posted.release()
        return job

    def stop(self) -> None:
        """Let the thread end after its current call."""
        self._job = None
        self._posted.release()

    def _loop(self) -> None:
        while True:
            self._posted.acquire()
            job = self._job
            if job is None:
                return
            try:
                job.value = job.function()
            except BaseException as error:  # the processor's failure is the call's outcome
                job.error = error
            finally:
                job.end_ns = time.perf_counter_ns()
                job.done.release()
            if self.abandoned:
                _thread_ended(self.thread)
                return


def _apply_environment(values: tuple[tuple[str, str], ...]) -> dict[str, str | None]:
    """Set ``values`` (a later pair wins over an earlier one); return what to restore."""
    saved = {name: os.environ.get(name) for name, _ in values}
    os.environ.update(dict(values))
    return saved


def _restore_environment(saved: dict[str, str | None]) -> None:
    for name, previous in saved.items():
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@contextlib.contextmanager
def _environment(values: tuple[tuple[str, str], ...]) -> Iterator[None]:
    saved = _apply_environment(values)
    # The C library reads TZ only on tzset(): without it a configured TZ would not reach localtime().
    zone_changed = "TZ" in saved and saved["TZ"] != os.environ.get("TZ")
    if zone_changed:
        time.tzset()
    try:
        yield
    finally:
        _restore_environment(saved)
        if zone_changed:
            time.tzset()


def _start_travel(publish_time_micros: int | None) -> Any:
    """Make "now" the publish time (ticking on from there); return the traveller, or None."""
    if publish_time_micros is None:
        return None
    try:
        import time_machine
    except ImportError as error:
        from replayer.errors import MissingExtraError

        raise MissingExtraError("time-machine", "replay") from error
    import datetime as dt

    moment = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=publish_time_micros)
    traveller = time_machine.travel(moment, tick=True)
    if hasattr(traveller, "destination_tzname"):
        # time_machine would set TZ=UTC for a UTC destination; the sandbox environment owns TZ.
        traveller.destination_tzname = None
    traveller.start()
    return traveller


def _stop_travel(traveller: Any) -> None:
    if traveller is not None:
        traveller.stop()


@contextlib.contextmanager
def _recorded_clock(publish_time_micros: int | None) -> Iterator[None]:
    traveller = _start_travel(publish_time_micros)
    try:
        yield
    finally:
        _stop_travel(traveller)


class _CallClock:
    """One ``time_machine`` travel reused for every call of a lane (clock ``recorded``).

    A new travel per call parses a datetime and sets ``TZ`` and calls
    ``tzset()`` twice. Here the lane environment contains ``TZ=UTC`` and each
    call only sets the travel's destination (an integer of nanoseconds) and
    starts it, which ticks on from the exact publish time like a new travel.
    """

    def __init__(self) -> None:
        try:
            import time_machine
        except ImportError as error:
            from replayer.errors import MissingExtraError

            raise MissingExtraError("time-machine", "replay") from error
        self._travel = time_machine.travel(0, tick=True)
        # NOTE: destination_timestamp_ns and destination_tzname are attributes of
        # time_machine.travel in 3.6, not documented API. A version without them
        # falls back to a new travel per call.
        self._reusable = (getattr(self._travel, "destination_timestamp_ns", None) == 0
                          and hasattr(self._travel, "destination_tzname"))
        if self._reusable:
            self._travel.destination_tzname = None

    def start(self, publish_time_micros: int) -> Any:
        """Make "now" ``publish_time_micros``; return what :meth:`stop` needs."""
        if not self._reusable:
            return _start_travel(publish_time_micros)
        self._travel.destination_timestamp_ns = publish_time_micros * 1000
        self._travel.start()
        return self._travel

    @staticmethod
    def stop(traveller: Any) -> None:
        _stop_travel(traveller)


_LANE_LOCK = threading.Lock()
#: Supervised lanes in progress; the lane environment is restored when the last one ends.
_lane_users = 0
#: Each variable's value before the first supervised lane set it (None: it was unset).
_lane_saved: dict[str, str | None] = {}


def _enter_lane_environment() -> None:
    global _lane_users
    with _LANE_LOCK:
        _lane_users += 1


def _ensure_lane_environment(values: Mapping[str, str]) -> None:
    """Give the variables their sandbox values before a call (the caller has acquired ``_CALL_LOCK``).

    Only variables whose value differs are set, so a lane pays one lookup
    per variable and call, and a variable a processor changed is reset
    before the next call, as when every call set and restored them.

    NOTE: a variable that is not configured and that a processor adds or
    changes stays for the later calls of the run. The launcher restores the
    whole environment only when the run ends.
    """
    environ = os.environ
    for name, value in values.items():
        if name not in _lane_saved:
            _lane_saved[name] = environ.get(name)
        if environ.get(name) != value:
            environ[name] = value
            if name == "TZ":
                time.tzset()


def _leave_lane_environment() -> None:
    # Not under _CALL_LOCK, which a call of another lane may hold for long: with
    # no supervised lane left, nothing else reads or changes _lane_saved.
    global _lane_users
    with _LANE_LOCK:
        _lane_users -= 1
        if _lane_users:
            return
        reset_zone = "TZ" in _lane_saved
        _restore_environment(_lane_saved)
        _lane_saved.clear()
        if reset_zone:
            time.tzset()


class _Abandoned(BaseException):
    """Unwinds a runner thread whose call timed out: the supervisor has moved on without it."""


@dataclasses.dataclass
class _InlineCall:
    """A call running in the supervised runner thread, with what must be undone after it."""

    thread: threading.Thread
    deadline: float
    timeout_s: float
    capture: PublishCapture
    traveller: Any
    abandoned: bool = False


class Sandbox:
    """Runs processor calls with the configured environment, clock and publish capture.

    Use as a context manager (it installs the publish guard). :meth:`call`
    runs one function and returns a :class:`CallResult`. Inside
    :meth:`supervise`, calls run inline in the runner thread, and the
    supervisor abandons that thread when a call passes its timeout. Any other
    call is handed to a worker thread and waited for.
    """

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self._worker: _Worker | None = None
        self._guard: contextlib.AbstractContextManager | None = None
        self._state_lock = threading.Lock()
        self._runner: threading.Thread | None = None
        self._inline: _InlineCall | None = None
        self.abandoned_workers = 0
        self.last_timeout: CallResult | None = None
        self._lane_values: dict[str, str] = dict(self._environment_values())
        self._clock: _CallClock | None = None
        if settings.clock == "recorded" and "TZ" not in self._lane_values:
            # The travel moves "now", and TZ=UTC makes local time read as UTC, as
            # time_machine does for a UTC destination. A configured TZ wins: the
            # clock sets the instant, TZ only how local time renders it.
            self._lane_values["TZ"] = "UTC"

    def __enter__(self) -> "Sandbox":
        self._guard = publish_guard()
        self._guard.__enter__()
        # The first travel costs tens of milliseconds; paying it here keeps it
        # out of the first paced release.
        _stop_travel(_start_travel(time.time_ns() // 1000 if self.settings.clock == "recorded" else None))
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._worker is not None and not self._worker.abandoned:
            self._worker.stop()
        self._worker = None
        if self._guard is not None:
            self._guard.__exit__(*exc_info)
            self._guard = None

    def _environment_values(self) -> tuple[tuple[str, str], ...]:
        # PUBSUB_EMULATOR_HOST comes last, so it wins over the configured environment:
        # any Pub/Sub client the processor builds from it (a SubscriberClient too)
        # gets anonymous credentials and a closed loopback port.
        return (*self.settings.env, ("PUBSUB_EMULATOR_HOST", SANDBOX_PUBSUB_ENDPOINT))

    def call(self, function: Callable[[], Any], *, capture: PublishCapture, timeout_s: float,
             publish_time_micros: int) -> CallResult:
        """Run ``function`` sandboxed, waiting at most ``timeout_s`` seconds for it."""
        if self._guard is None:
            raise RuntimeError("Sandbox.call needs the sandbox entered: use 'with Sandbox(...) as sandbox'")
        travel_to = publish_time_micros if self.settings.clock == "recorded" else None
        if threading.current_thread() is self._runner:
            return self._call_inline(function, capture=capture, timeout_s=timeout_s, travel_to=travel_to)
        return self._call_in_worker(function, capture=capture, timeout_s=timeout_s, travel_to=travel_to)

    # ------------------------------------------------------------------ supervised, inline

    def supervise(self, body: Callable[[], None], *, poll_s: float = 0.05) -> None:
        """Run ``body`` in a runner thread whose :meth:`call` runs processors inline.

        Handing every call to another thread costs two thread switches, the
        largest cost of a replay at speed max. Here the runner calls the
        processor itself, and this thread only watches the deadline of the
        call in progress, waking every ``poll_s`` seconds at most, so a
        timeout is detected up to ``poll_s`` late. When a call times out, its
        runner is abandoned (it unwinds if the call ever returns),
        :attr:`last_timeout` contains the timed-out result, and ``body`` runs
        again in a new runner: it must resume where it stopped and take that
        result for the call it had in flight.
        """
        if self.settings.clock == "recorded" and self._clock is None:
            self._clock = _CallClock()
        _enter_lane_environment()
        try:
            self._supervise(body, poll_s)
        finally:
            _leave_lane_environment()

    def _supervise(self, body: Callable[[], None], poll_s: float) -> None:
        while True:
            finished = threading.Lock()
            finished.acquire()
            outcome: dict[str, BaseException] = {}

            def run(finished: threading.Lock = finished, outcome: dict = outcome) -> None:
                try:
                    body()
                except _Abandoned:
                    _thread_ended(threading.current_thread())
                    return  # the supervisor no longer waits for this runner
                except BaseException as error:  # handed to the supervisor, which re-raises it
                    outcome["error"] = error
                finished.release()

            runner = threading.Thread(target=run, name="replay-lane", daemon=True)
            self._runner = runner
            runner.start()
            if self._watch(finished, poll_s):
                self._runner = None
                if "error" in outcome:
                    raise outcome["error"]
                return

    def _watch(self, finished: threading.Lock, poll_s: float) -> bool:
        """Wait for the runner; True when it finished, False when its call timed out."""
        while True:
            with self._state_lock:
                current = self._inline
            wait_s = poll_s
            if current is not None:
                wait_s = min(poll_s, max(0.0, current.deadline - time.monotonic()))
            if finished.acquire(timeout=wait_s):
                return True
            with self._state_lock:
                current = self._inline
                if current is not None and time.monotonic() >= current.deadline:
                    self._abandon(current)
                    return False

    def _abandon(self, inline: _InlineCall) -> None:
        """Undo a timed-out call's settings on its behalf; the caller has acquired ``_state_lock``."""
        inline.abandoned = True
        # The thread stays the call's: what it publishes from now on is a stray publish of it.
        _owned_threads[inline.thread] = inline.capture
        _call_threads.pop(inline.thread, None)
        inline.capture.closed = True
        _CallClock.stop(inline.traveller)
        self._inline = None
        self.abandoned_workers += 1
        self.last_timeout = CallResult(timed_out=True, handling_micros=round(inline.timeout_s * 1e6))
        _CALL_LOCK.release()

    def _call_inline(self, function: Callable[[], Any], *, capture: PublishCapture, timeout_s: float,
                     travel_to: int | None) -> CallResult:
        _CALL_LOCK.acquire()
        try:
            _ensure_lane_environment(self._lane_values)
            traveller = None if travel_to is None else self._clock.start(travel_to)
        except BaseException:
            _CALL_LOCK.release()
            raise
        # NOTE: Python cannot stop a thread; a timed-out call keeps running in its
        # abandoned runner, and any publish it makes later is dropped.
        inline = _InlineCall(thread=threading.current_thread(), deadline=time.monotonic() + timeout_s,
                             timeout_s=timeout_s, capture=capture, traveller=traveller)
        with self._state_lock:
            self._inline = inline
        _call_threads[inline.thread] = capture
        capture.started_ns = time.perf_counter_ns()
        value: Any = None
        error: BaseException | None = None
        try:
            value = function()
        except BaseException as failure:  # the processor's failure is the call's outcome
            error = failure
        end_ns = time.perf_counter_ns()
        with self._state_lock:
            if inline.abandoned:
                raise _Abandoned()
            self._inline = None
            _call_threads.pop(inline.thread, None)
            capture.closed = True
            _CallClock.stop(traveller)
            _CALL_LOCK.release()
        return CallResult(value=value, error=error, handling_micros=(end_ns - capture.started_ns) // 1000)

    # ------------------------------------------------------------------ handed to a worker

    def _call_in_worker(self, function: Callable[[], Any], *, capture: PublishCapture, timeout_s: float,
                        travel_to: int | None) -> CallResult:
        with _CALL_LOCK, _environment(tuple(self._lane_values.items())), _recorded_clock(travel_to):
            if self._worker is None:
                self._worker = _Worker()
            worker = self._worker
            _call_threads[worker.thread] = capture
            capture.started_ns = time.perf_counter_ns()
            job = worker.submit(function)
            try:
                finished = job.done.acquire(timeout=timeout_s)
            finally:
                _call_threads.pop(worker.thread, None)
            if not finished:
                # NOTE: Python cannot stop a thread; the timed-out call keeps running in
                # its abandoned daemon thread, and any publish it makes later is dropped.
                _owned_threads[worker.thread] = capture
                worker.abandoned = True
                self._worker = None
                self.abandoned_workers += 1
                capture.closed = True
                return CallResult(timed_out=True, handling_micros=round(timeout_s * 1e6))
            capture.closed = True
        elapsed = (job.end_ns - capture.started_ns) // 1000
        return CallResult(value=job.value, error=job.error, handling_micros=elapsed)
