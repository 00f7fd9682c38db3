"""Noise learning: fields that differ between replays of the same date with the same code.

``replay run --noise-runs N`` replays the date N more times. Any field that
differs between those replays (a timestamp, a random id, an iteration order)
cannot be a regression. So :meth:`NoiseModel.apply` adds it to the topic's
ignored paths before the golden comparison, and the report lists it with how
often it changed. Array indices are generalised to ``*``: a field that is
unstable in one item of an array is treated as unstable in every item.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any, Sequence

from replayer.diff._paths import escape_segment
from replayer.diff.match import match_outputs
from replayer.diff.rules import DiffRules
from schemas import RecordedEvent, split_pointer


@dataclasses.dataclass(frozen=True)
class NoiseField:
    """A field seen changing between replays: ``changes`` of ``pairs_compared`` output pairs."""

    topic: str | None
    part: str
    pattern: str
    changes: int
    pairs_compared: int

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used in report.json."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class NoiseModel:
    """Result of the extra replays: unstable fields, and outputs that came and went.

    ``unstable_outputs`` counts, per topic, outputs present in one replay and
    not in another, because their count or keys are not deterministic. They
    are reported but cannot be ignored field by field.
    """

    runs: int
    fields: tuple[NoiseField, ...] = ()
    unstable_outputs: tuple[tuple[str | None, int], ...] = ()

    def apply(self, rules: DiffRules) -> DiffRules:
        """Return ``rules`` with every unstable field ignored on its topic."""
        if not self.fields:
            return rules
        paths: dict[str, list[str]] = {}
        attributes: dict[str, list[str]] = {}
        for field in self.fields:
            topic = field.topic or ""
            if field.part == "attributes":
                attributes.setdefault(topic, []).append(split_pointer(field.pattern)[0])
            else:
                paths.setdefault(topic, []).append(field.pattern)
        return rules.with_topic_ignores(paths, attributes)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used in report.json."""
        return {
            "runs": self.runs,
            "fields": [field.to_dict() for field in self.fields],
            "unstable_outputs": [{"topic": topic, "outputs": count} for topic, count in self.unstable_outputs],
        }


def generalise_pointer(pointer: str) -> str:
    """Replace array indices in ``pointer`` by ``*`` (``/plays/3/ts`` becomes ``/plays/*/ts``).

    NOTE: a pointer does not say whether a segment is an array index, so an
    object key made of digits (``/by_player/1630/pts``) is generalised too.
    """
    if pointer == "":
        return ""
    parts = split_pointer(pointer)
    return "".join("/" + ("*" if part.isdigit() else escape_segment(part)) for part in parts)


def learn_noise(replayed_runs: Sequence[Sequence[RecordedEvent]], rules: DiffRules) -> NoiseModel:
    """Compare every replay with the first one and collect the fields that changed.

    Needs at least two runs; with fewer the model is empty.
    """
    if len(replayed_runs) < 2:
        return NoiseModel(runs=len(replayed_runs))
    changes: Counter[tuple[str | None, str, str]] = Counter()
    pairs_compared: Counter[str | None] = Counter()
    unstable: Counter[str | None] = Counter()
    baseline = list(replayed_runs[0])
    for other in replayed_runs[1:]:
        result = match_outputs(baseline, list(other), rules)
        for group in result.groups:
            pairs_compared[group.topic] += group.counts.matched
            unstable[group.topic] += group.counts.missing + group.counts.extra
            for entry in group.entries:
                if entry.category != "changed":
                    continue
                seen = {(diff.part, generalise_pointer(diff.pointer)) for diff in entry.diffs}
                for part, pattern in seen:
                    changes[(group.topic, part, pattern)] += 1
    fields = tuple(
        NoiseField(topic=topic, part=part, pattern=pattern, changes=count,
                   pairs_compared=pairs_compared[topic])
        for (topic, part, pattern), count in sorted(changes.items(), key=lambda item: (str(item[0][0]), item[0][1:]))
    )
    return NoiseModel(
        runs=len(replayed_runs),
        fields=fields,
        unstable_outputs=tuple(sorted(((topic, count) for topic, count in unstable.items() if count),
                                      key=lambda item: str(item[0]))),
    )
