"""Causal closure of recorded events: what a ``--where`` selection of entry events led to.

A recorded OUTPUT's ``causation_id`` is the ``event_id`` of the INPUT that
caused it, and Pub/Sub keeps a message's id from publisher to subscriber, so
the INPUT deliveries of an OUTPUT on the next phase carry the OUTPUT's
``event_id``. :func:`causal_closure` follows these two links from the
selected entry events to every recorded event they reached.
"""

from __future__ import annotations

import collections
from typing import Callable, Iterable, Sequence

from schemas import Direction, RecordedEvent


def causal_closure(events: Sequence[RecordedEvent], entry_ids: Iterable[str], *, transitive: bool,
                   selects: Callable[[RecordedEvent], bool]) -> list[RecordedEvent]:
    """Return the events of ``events`` caused by the entry INPUTs ``entry_ids``, in their original order.

    The result contains the INPUTs named by ``entry_ids``, every OUTPUT whose
    ``causation_id`` is a kept INPUT and, when ``transitive`` (cascade
    mode), every INPUT delivery of a kept OUTPUT and so on through the phases.
    Without ``transitive`` (isolated mode) the closure stops after the first
    OUTPUTs, because each phase is then fed only by its own selected inputs.

    An OUTPUT recorded without a ``causation_id`` cannot be traced; it is kept
    when ``selects(event)`` is true, i.e. when it matches the ``--where``
    clauses itself. Every copy of a redelivered INPUT (same ``event_id``) is kept.
    """
    inputs_by_id: dict[str, list[int]] = collections.defaultdict(list)
    outputs_by_cause: dict[str, list[int]] = collections.defaultdict(list)
    kept: set[int] = set()
    for index, event in enumerate(events):
        if event.direction is Direction.INPUT:
            inputs_by_id[event.event_id].append(index)
        elif event.causation_id:
            outputs_by_cause[event.causation_id].append(index)
        elif selects(event):
            kept.add(index)

    # Breadth-first over message ids: an INPUT id leads to the OUTPUTs it
    # caused, and (cascade) an OUTPUT id leads to its deliveries downstream.
    seen_inputs: set[str] = set()
    pending = collections.deque(entry_ids)
    untraced = [events[index].event_id for index in kept]
    if transitive:
        pending.extend(untraced)
    while pending:
        input_id = pending.popleft()
        if input_id in seen_inputs:
            continue
        seen_inputs.add(input_id)
        kept.update(inputs_by_id.get(input_id, ()))
        for index in outputs_by_cause.get(input_id, ()):
            kept.add(index)
            if transitive:
                pending.append(events[index].event_id)
    return [events[index] for index in sorted(kept)]
