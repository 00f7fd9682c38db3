"""The lane executor: replays one lane's entry events through the processors.

A lane is one logical date in cascade mode, and one (date, processor) in
isolated mode. Entry events are released on the pacing schedule. In cascade
mode every message a processor publishes is delivered at once, like Pub/Sub
fan-out, to every selected processor subscribed to its topic (filters
applied), through a FIFO queue. Each call is one call record (a JSON-ready
dict) and each publish one replayed OUTPUT event (``source = replay``) with a
deterministic event id.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import datetime as dt
import hashlib
from typing import Any, Callable, Iterable, Mapping

from recorder._envelope import subscription_path

from recorder._logging import get_logger
from replayer.adapters import (
    Adapter, MissingInputData, Message, ProcessorContext, build_adapter, response_status,
)
from replayer.config import ProcessorConfig, ReplayConfig, Selection
from replayer.pacing import Clock, LatenessStats, MonotonicClock, Pacer, plan_schedule, Schedule
from replayer.sandbox import CallResult, PublishCapture, Sandbox
from schemas import Direction, RecordedEvent, now_micros

log = get_logger(__name__)

#: A message routed more hops than this is not delivered again (a topology loop).
MAX_CASCADE_HOPS = 64
#: Default cap on the calls one entry event may cause in cascade mode (the entry
#: call included); ``[replay] max_calls_per_entry_event`` overrides it. The hop
#: limit above stops a long chain, this one a wide one (a processor publishing
#: twice into its own topic doubles the calls at every hop).
MAX_CALLS_PER_ENTRY_EVENT = 1000
#: Exception messages in call records are cut to this length (they may quote data).
MAX_ERROR_CHARS = 300
#: A wait for the next entry event at least this long is logged, so a paced
#: replay in a long idle gap visibly waits instead of looking stuck.
LONG_WAIT_S = 10.0

CATEGORY_EXCEPTION = "processor_exception"
CATEGORY_NON_ACK = "non_ack_response"
CATEGORY_TIMEOUT = "timeout"
CATEGORY_MISSING = "missing_input_data"
# Exception type names that mean "what the input points to does not exist".
_MISSING_DATA_ERRORS = (MissingInputData, FileNotFoundError)
_MISSING_DATA_NAMES = frozenset({"NotFound"})  # google.api_core.exceptions.NotFound (GCS, BigQuery)


_progress_listeners: list[Callable[[str, int, int], None]] = []


def add_progress_listener(listener: Callable[[str, int, int], None]) -> Callable[[], None]:
    """Call ``listener(lane, released, total)`` after every entry release; return a remover.

    Listeners live in this process, so they see lanes run by the in-process runner only.
    """
    _progress_listeners.append(listener)
    return lambda: _progress_listeners.remove(listener)


@dataclasses.dataclass(frozen=True)
class EntryDelivery:
    """A recorded INPUT event to be delivered to one processor at the start of a chain."""

    event: RecordedEvent
    processor: str


def lane_name(logical_date: dt.date, processor: str | None, mode: str) -> str:
    """``YYYY-MM-DD`` in cascade mode, ``YYYY-MM-DD.processor`` in isolated mode."""
    if mode == "isolated" and processor is not None:
        return f"{logical_date.isoformat()}.{processor}"
    return logical_date.isoformat()


def entry_phases(config: ReplayConfig, selection: Selection) -> tuple[str, ...]:
    """Phases that receive recorded inputs: the first selected one in cascade, all in isolated."""
    return selection.phases[:1] if config.replay.mode == "cascade" else selection.phases


def _receives_recorded(processor: ProcessorConfig, event: RecordedEvent) -> bool:
    if processor.filter is not None and not processor.filter.matches(attributes=event.attributes,
                                                                     data=event.data):
        return False
    if event.processor is not None:
        return event.processor == processor.name
    return event.topic in processor.subscribes


def route_entry_event(event: RecordedEvent, *, config: ReplayConfig,
                      selection: Selection) -> list[tuple[str, EntryDelivery]]:
    """Return ``(lane, delivery)`` for every processor that gets ``event`` as an entry event.

    A recorded INPUT that names its processor goes to that processor; one
    without a processor (e.g. from a tap) goes to every processor of its phase
    subscribed to its topic. In cascade mode an input on a topic the selected
    phases publish to (``selection.replayed_topics``, e.g. the trigger a
    phase's own orchestrator publishes) is left to the replayed publisher, so
    it is not delivered twice.
    """
    return EntryRouter.for_replay(config, selection).route(event)


class EntryRouter:
    """Entry router: :func:`route_entry_event` with the configuration's lookups done once per replay.

    Routing looked the entry phases, the processors of a phase and the lane
    names up again for every event, which cost about as much as reading it.
    """

    _last: "EntryRouter | None" = None

    def __init__(self, config: ReplayConfig, selection: Selection) -> None:
        self.config = config
        self.selection = selection
        self._dates = frozenset(selection.dates)
        phases = entry_phases(config, selection)
        self._processors = {phase: config.processors_of(phase) for phase in phases}
        self._skipped_topics = selection.replayed_topics if config.replay.mode == "cascade" else frozenset()
        self._lanes: dict[tuple[dt.date, str], str] = {}

    @classmethod
    def for_replay(cls, config: ReplayConfig, selection: Selection) -> "EntryRouter":
        """Return the router of ``config`` and ``selection``, reused while they stay the same objects."""
        last = cls._last
        if last is None or last.config is not config or last.selection is not selection:
            last = cls._last = cls(config, selection)
        return last

    def route(self, event: RecordedEvent) -> list[tuple[str, EntryDelivery]]:
        """See :func:`route_entry_event`."""
        if event.direction is not Direction.INPUT or event.logical_date not in self._dates:
            return []
        processors = self._processors.get(event.phase)
        if processors is None or event.topic in self._skipped_topics:
            return []
        if self.selection.where and not self.selection.selects(attributes=event.attributes, data=event.data):
            return []
        routed = []
        for processor in processors:
            if _receives_recorded(processor, event):
                key = (event.logical_date, processor.name)
                lane = self._lanes.get(key)
                if lane is None:
                    lane = self._lanes[key] = lane_name(event.logical_date, processor.name,
                                                        self.config.replay.mode)
                routed.append((lane, EntryDelivery(event, processor.name)))
        return routed


def replay_event_id(causation_id: str, processor: str, ordinal: int) -> str:
    """Deterministic id of a replayed output: ``r-`` + 24 hex chars of a SHA-256."""
    digest = hashlib.sha256(f"{causation_id}\x1f{processor}\x1f{ordinal}".encode("utf-8")).hexdigest()
    return "r-" + digest[:24]


def plan_lane(deliveries: Iterable[EntryDelivery], *, speed: float | None,
              max_gap_s: float | None) -> Schedule[EntryDelivery]:
    """Plan the release schedule of a lane's entry deliveries."""
    return plan_schedule(
        deliveries,
        publish_time=lambda d: d.event.publish_time,
        event_id=lambda d: f"{d.event.event_id}\x00{d.processor}",
        ordering_key=lambda d: f"{d.processor}\x00{d.event.ordering_key}" if d.event.ordering_key else None,
        speed=speed, max_gap_s=max_gap_s,
    )


@dataclasses.dataclass(frozen=True)
class LaneResult:
    """Everything one lane produced: outputs, call records and pacing figures."""

    lane: str
    logical_date: dt.date
    outputs: tuple[RecordedEvent, ...]
    calls: tuple[dict[str, Any], ...]
    lateness: LatenessStats
    lateness_micros: tuple[int, ...]
    planned_duration_micros: int
    gaps_shortened: int
    unrouted_outputs: int
    abandoned_calls: int
    #: Outputs not delivered because their chain reached the calls-per-entry-event cap.
    cascade_limit_hits: int = 0


@dataclasses.dataclass
class _Pending:
    """A message waiting for delivery to one processor."""

    processor: ProcessorConfig
    message: Message
    causation_id: str
    correlation_id: str | None
    recorded: bool
    hops: int
    #: Which entry event's chain this delivery belongs to (its release index).
    chain: int = 0
    offset_micros: int | None = None
    lateness_micros: int | None = None


@dataclasses.dataclass
class _LaneRun:
    """The progress of one lane, shared by the runner threads that replay it in turn."""

    lane: str
    logical_date: dt.date
    releases: tuple
    pacer: Pacer
    next_release: int = 0
    notified: int = 0
    date_text: str = ""
    queue: collections.deque = dataclasses.field(default_factory=collections.deque)
    in_flight: tuple[_Pending, PublishCapture] | None = None
    state: dict[str, dict] = dataclasses.field(default_factory=lambda: collections.defaultdict(dict))
    outputs: list[RecordedEvent] = dataclasses.field(default_factory=list)
    calls: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    unrouted: int = 0
    #: Calls queued so far per chain (entry release index), for the cascade width cap.
    chain_calls: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    #: Chains that reached the cap (logged once each) and outputs not routed because of it.
    limited_chains: set = dataclasses.field(default_factory=set)
    cascade_limit_hits: int = 0


def _detached_state(state: dict) -> dict:
    """Deep-copy a processor's state while an abandoned call may still change it."""
    for _ in range(10):
        try:
            return copy.deepcopy(state)
        except RuntimeError:  # "changed size during iteration": the abandoned call wrote meanwhile
            continue
    return copy.deepcopy(dict(state))


def categorize(result: CallResult, ack: bool | None) -> tuple[str, str | None]:
    """Return ``(outcome, category)`` of a call, as the call record states them."""
    if result.timed_out:
        return "timeout", CATEGORY_TIMEOUT
    if result.error is not None:
        error = result.error
        outcome = f"error:{type(error).__name__}"
        if isinstance(error, _MISSING_DATA_ERRORS) or type(error).__name__ in _MISSING_DATA_NAMES:
            return outcome, CATEGORY_MISSING
        return outcome, CATEGORY_EXCEPTION
    if ack:
        return "ack", None
    return "nack", CATEGORY_NON_ACK


class LaneExecutor:
    """Runs lanes of a replay; adapters are built once and reused across lanes.

    ``clock`` paces entry events (a :class:`replayer.pacing.ManualClock` in
    tests); ``adapters`` may be given to reuse already-built ones.
    """

    def __init__(self, config: ReplayConfig, selection: Selection, *, clock: Clock | None = None,
                 adapters: Mapping[str, Adapter] | None = None) -> None:
        self.config = config
        self.selection = selection
        self.clock = clock or MonotonicClock()
        self._adapters: dict[str, Adapter] = dict(adapters or {})
        self._by_name = {processor.name: processor for processor in reversed(config.processors)}
        self._subscription_paths: dict[str, str] = {}
        self._subscribers: dict[str, list[ProcessorConfig]] = collections.defaultdict(list)
        self.max_calls_per_entry_event = int(getattr(config.replay, "max_calls_per_entry_event", None)
                                             or MAX_CALLS_PER_ENTRY_EVENT)
        for processor in config.processors:
            if processor.phase in selection.phases:
                for topic in processor.subscribes:
                    self._subscribers[topic].append(processor)

    def adapter(self, processor: ProcessorConfig) -> Adapter:
        if processor.name not in self._adapters:
            self._adapters[processor.name] = build_adapter(processor, config=self.config)
        return self._adapters[processor.name]

    def close(self) -> None:
        for adapter in self._adapters.values():
            adapter.close()

    def run(self, lane: str, deliveries: Iterable[EntryDelivery], *, logical_date: dt.date) -> LaneResult:
        """Replay one lane: paced entry deliveries, then (cascade) their routed outputs."""
        schedule = plan_lane(deliveries, speed=self.config.replay.speed, max_gap_s=self.config.replay.max_gap_s)
        for processor in self.config.processors:
            if processor.phase in self.selection.phases:
                self.adapter(processor)  # import targets now, so the first release is not late
        run = _LaneRun(lane=lane, logical_date=logical_date, releases=schedule.releases,
                       pacer=Pacer(self.clock, paced=self.config.replay.speed is not None),
                       date_text=logical_date.isoformat())
        log.info("replay.lane_started", lane=lane, date=logical_date.isoformat(),
                 records=len(schedule.releases), planned_duration_s=schedule.planned_duration_s)
        with Sandbox(self.config.sandbox) as sandbox:
            sandbox.supervise(lambda: self._drive(run, sandbox))
            abandoned = sandbox.abandoned_workers
        stats = run.pacer.stats()
        log.info("replay.lane_finished", lane=lane, date=logical_date.isoformat(), records=len(run.calls),
                 outputs=len(run.outputs), lateness_p99_ms=stats.p99_ms)
        return LaneResult(lane=lane, logical_date=logical_date, outputs=tuple(run.outputs), calls=tuple(run.calls),
                          lateness=stats, lateness_micros=tuple(run.pacer.lateness_micros),
                          planned_duration_micros=schedule.planned_duration_micros,
                          gaps_shortened=schedule.gaps_shortened, unrouted_outputs=run.unrouted,
                          abandoned_calls=abandoned, cascade_limit_hits=run.cascade_limit_hits)

    def _drive(self, run: "_LaneRun", sandbox: Sandbox) -> None:
        """Release entry events and deliver what they cause, until the lane is done.

        Runs in the sandbox's runner thread and resumes from ``run`` when a
        new runner replaces one whose call timed out.
        """
        total = len(run.releases)
        while True:
            if run.in_flight is not None:
                # The previous runner was abandoned during this call.
                pending, capture = run.in_flight
                run.in_flight = None
                if pending.processor.stateful:
                    # The abandoned call keeps the state object it was given and may still
                    # write to it. Later calls get a copy taken now, so those writes are lost.
                    run.state[pending.processor.name] = _detached_state(run.state[pending.processor.name])
                self._finish(run, pending, capture, sandbox.last_timeout or CallResult(timed_out=True))
            elif run.queue:
                pending = run.queue.popleft()
                capture = PublishCapture(
                    lambda ordinal, pending=pending: replay_event_id(pending.causation_id, pending.processor.name,
                                                                     ordinal),
                    call_id=pending.message.message_id, processor=pending.processor.name)
                run.in_flight = (pending, capture)
                result = self._invoke(sandbox, run, pending, capture)
                run.in_flight = None
                self._finish(run, pending, capture, result)
            else:
                if run.next_release > run.notified:
                    run.notified = run.next_release
                    for listener in list(_progress_listeners) if _progress_listeners else ():
                        listener(run.lane, run.next_release, total)
                if run.next_release >= total:
                    return
                release = run.releases[run.next_release]
                wait_s = run.pacer.wait_micros(release.offset_micros) / 1e6
                if wait_s >= LONG_WAIT_S:
                    log.info("replay.waiting", lane=run.lane, released=run.next_release, total=total,
                             wait_s=round(wait_s, 1))
                lateness = run.pacer.wait_for(release.offset_micros)
                entry = self._entry_pending(release.item, release.offset_micros, lateness)
                entry.chain = run.next_release
                run.chain_calls[entry.chain] += 1
                run.queue.append(entry)
                run.next_release += 1

    # ------------------------------------------------------------------ steps

    def _entry_pending(self, delivery: EntryDelivery, offset: int, lateness: int) -> _Pending:
        event = delivery.event
        processor = self._by_name.get(delivery.processor) or self.config.processor(delivery.processor)
        subscription = self._subscription_path(event.subscription or processor.subscription_name)
        message = Message(message_id=event.event_id, data=event.data, attributes=dict(event.attributes),
                          publish_time=event.publish_time, ordering_key=event.ordering_key,
                          topic=event.topic, subscription=subscription,
                          delivery_attempt=event.delivery_attempt)
        return _Pending(processor=processor, message=message, causation_id=event.event_id,
                        correlation_id=event.correlation_id, recorded=True, hops=0,
                        offset_micros=offset, lateness_micros=lateness)

    def _subscription_path(self, name: str) -> str:
        path = self._subscription_paths.get(name)
        if path is None:
            path = self._subscription_paths[name] = subscription_path(self.config.replay.project, name)
        return path

    def _route(self, output: RecordedEvent, hops: int) -> list[_Pending]:
        if hops > MAX_CASCADE_HOPS:
            log.warning("replay.cascade_loop", topic=output.topic, processor=output.processor, hops=hops)
            return []
        routed = []
        for processor in self._subscribers.get(output.topic or "", ()):
            if not processor.accepts(topic=output.topic, attributes=output.attributes, data=output.data):
                continue
            message = Message(
                message_id=output.event_id, data=output.data, attributes=dict(output.attributes),
                publish_time=output.publish_time, ordering_key=output.ordering_key, topic=output.topic,
                subscription=self._subscription_path(processor.subscription_name),
            )
            routed.append(_Pending(processor=processor, message=message, causation_id=output.event_id,
                                   correlation_id=output.correlation_id, recorded=False, hops=hops))
        return routed

    def _invoke(self, sandbox: Sandbox, run: "_LaneRun", pending: _Pending,
                capture: PublishCapture) -> CallResult:
        processor = pending.processor
        ctx = ProcessorContext(
            publisher=capture.publish,
            state=run.state[processor.name] if processor.stateful else {},
            logical_date=run.logical_date, processor=processor.name, phase=processor.phase,
        )
        adapter = self.adapter(processor)
        return sandbox.call(lambda: adapter.deliver(pending.message, ctx), capture=capture,
                            timeout_s=processor.timeout_s, publish_time_micros=pending.message.publish_time)

    def _finish(self, run: "_LaneRun", pending: _Pending, capture: PublishCapture, result: CallResult) -> None:
        """Record the call, keep its outputs and, in cascade mode, route them to subscribers."""
        processor = pending.processor
        delivery = result.value
        outcome, category = categorize(result, delivery.ack if delivery is not None else None)
        error = None
        if result.error is not None:
            error = f"{type(result.error).__name__}: {result.error}"[:MAX_ERROR_CHARS]
        elif result.timed_out:
            error = f"no answer within timeout_s={processor.timeout_s}"
        if category is not None:
            log.warning("replay.call_failed", lane=run.lane, phase=processor.phase, processor=processor.name,
                        event_id=pending.message.message_id, outcome=outcome, category=category)
        produced = [
            RecordedEvent(
                event_id=published.message_id, logical_date=run.logical_date, phase=processor.phase,
                direction=Direction.OUTPUT, publish_time=pending.message.publish_time + published.elapsed_micros,
                data=published.data, source="replay", record_time=now_micros(), processor=processor.name,
                topic=published.topic, ordering_key=published.ordering_key, attributes=published.attributes,
                content_type=published.content_type, correlation_id=pending.correlation_id,
                causation_id=pending.causation_id,
            )
            for published in list(capture.published)
        ]
        run.calls.append({
            "lane": run.lane, "logical_date": run.date_text, "phase": processor.phase,
            "processor": processor.name, "input_event_id": pending.message.message_id,
            "input_topic": pending.message.topic, "recorded_input": pending.recorded, "outcome": outcome,
            "category": category,
            "status": delivery.status if delivery is not None else response_status(result.error),
            "error": error, "handling_micros": result.handling_micros,
            "scheduled_offset_micros": pending.offset_micros, "lateness_micros": pending.lateness_micros,
            "outputs": len(produced),
        })
        run.outputs.extend(produced)
        if self.config.replay.mode != "cascade":
            return
        for output in produced:
            routed = self._route(output, pending.hops + 1)
            if not routed:
                run.unrouted += 1
                continue
            if run.chain_calls[pending.chain] + len(routed) > self.max_calls_per_entry_event:
                run.cascade_limit_hits += 1
                if pending.chain not in run.limited_chains:
                    run.limited_chains.add(pending.chain)
                    log.warning("replay.cascade_limit", lane=run.lane, entry_event_id=self._chain_entry_id(run, pending),
                                limit=self.max_calls_per_entry_event)
                continue
            run.chain_calls[pending.chain] += len(routed)
            for delivery in routed:
                delivery.chain = pending.chain
            run.queue.extend(routed)

    @staticmethod
    def _chain_entry_id(run: "_LaneRun", pending: _Pending) -> str:
        release = run.releases[pending.chain] if pending.chain < len(run.releases) else None
        return release.item.event.event_id if release is not None else pending.causation_id
