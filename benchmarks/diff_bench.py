"""Payload comparison throughput of the golden-output diff against DeepDiff, one core.

In one run, on the same pairs of JSON payloads of about 1 KB (a box score
with nine player lines), with ignore paths (``/metadata/duration_seconds``,
``**/execution_id``) and a tolerance (``abs_tol`` 1e-9, ``rel_tol`` 1e-6):

* differing pairs, diff: ``compare_payloads`` on the raw bytes (parsing
  included), where each pair differs in one or two fields beyond the
  tolerance, and most pairs also differ in an ignored field;
* differing pairs, DeepDiff: ``json.loads`` of both sides and ``DeepDiff``
  with the same ignore paths (``exclude_regex_paths``), the same absolute
  tolerance (``math_epsilon``) and ``ignore_numeric_type_changes``;
* identical pairs: byte-identical payloads, and canonically identical
  payloads written with another key order and spacing (which must be parsed).

Goals: differing pairs >= 50x DeepDiff; identical pairs >= 300k pairs/s.
Rates are pairs per second of this process's CPU time (one core), best of
``--repeat`` rounds that interleave the tests, so load from other processes
shifts them less than wall time would.
Every result is checked (the diff must find exactly the planted fields and
DeepDiff must find a difference) before it is timed.

    python3 benchmarks/diff_bench.py --pairs 20000 --deepdiff-pairs 400
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replayer.diff import compare_payloads, parse_diff_rules  # noqa: E402

DIFFERING_GOAL_RATIO = 50.0
IDENTICAL_GOAL_PAIRS_S = 300_000
DIFF_TABLE = {
    "ignore": ["/metadata/duration_seconds", "**/execution_id"],
    "abs_tol": 1e-9,
    "rel_tol": 1e-6,
}
DEEPDIFF_EXCLUDE = [r"root\['metadata'\]\['duration_seconds'\]", r".*\['execution_id'\]$"]


def make_payload(rng: random.Random) -> dict:
    """Return a box-score document of about 1 KB."""
    players = [
        {"player_id": rng.randrange(1_000_000), "name": f"player-{rng.randrange(500)}",
         "pts": rng.randrange(40), "reb": rng.randrange(15), "ast": rng.randrange(12),
         "fg_pct": round(rng.random(), 3), "execution_id": f"run-{rng.randrange(10_000)}"}
        for _ in range(9)
    ]
    return {"game_id": f"00224{rng.randrange(10_000):05d}", "game_date": "2024-03-09", "season": 2023,
            "team": rng.choice(["LAL", "BOS", "DEN", "MIA"]), "players": players,
            "metadata": {"duration_seconds": round(rng.random() * 10, 3), "source": "bdl", "rows": 9}}


def _encode(document: dict) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def make_differing(count: int, seed: int) -> tuple[list[tuple[bytes, bytes]], list[set[str]]]:
    """Pairs that differ in one or two planted fields, plus ignored noise; also the planted pointers."""
    rng = random.Random(seed)
    pairs, planted = [], []
    for _ in range(count):
        recorded = make_payload(rng)
        replayed = json.loads(json.dumps(recorded))
        pointers = set()
        for _ in range(rng.choice((1, 2))):
            player = rng.randrange(9)
            field = rng.choice(("pts", "fg_pct"))
            if field == "pts":
                replayed["players"][player]["pts"] += 1
            else:
                replayed["players"][player]["fg_pct"] = round(replayed["players"][player]["fg_pct"] + 0.01, 3)
            pointers.add(f"/players/{player}/{field}")
        if rng.random() < 0.8:
            replayed["metadata"]["duration_seconds"] += 1.0
            replayed["players"][rng.randrange(9)]["execution_id"] = "run-new"
        pairs.append((_encode(recorded), _encode(replayed)))
        planted.append(pointers)
    return pairs, planted


def make_identical(count: int, seed: int) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """Byte-identical pairs, and pairs of the same document with other key order and spacing."""
    rng = random.Random(seed)
    same, reformatted = [], []
    for _ in range(count):
        document = make_payload(rng)
        data = _encode(document)
        same.append((data, bytes(data)))
        reformatted.append((data, json.dumps(document, sort_keys=True, indent=1).encode()))
    return same, reformatted


def rate(function, pairs) -> float:
    """Pairs per second of CPU time for one pass over ``pairs``.

    CPU time of this process, not wall time, so other work on the machine
    changes the result less; the comparison runs on one core.
    """
    started = time.process_time()
    for recorded, replayed in pairs:
        function(recorded, replayed)
    return len(pairs) / max(time.process_time() - started, 1e-9)


def best_rates(functions: dict, repeat: int) -> dict:
    """Best rate of each (function, pairs) over ``repeat`` interleaved rounds."""
    best = dict.fromkeys(functions, 0.0)
    for _ in range(repeat):
        for name, (function, pairs) in functions.items():
            best[name] = max(best[name], rate(function, pairs))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=20_000, help="differing and identical pairs per test")
    parser.add_argument("--deepdiff-pairs", type=int, default=400, help="pairs given to DeepDiff (it is slow)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="interleaved timed rounds; the best round of each test is reported")
    args = parser.parse_args()

    from deepdiff import DeepDiff
    import deepdiff

    rules = parse_diff_rules(DIFF_TABLE).for_topic("bench")
    differing, planted = make_differing(args.pairs, seed=11)
    same, reformatted = make_identical(args.pairs, seed=12)
    sizes = [len(recorded) for recorded, _ in differing]

    # Check results before timing them.
    for (recorded, replayed), pointers in zip(differing, planted):
        found = {diff.pointer for diff in compare_payloads(recorded, replayed, rules)}
        if found != pointers:
            raise SystemExit(f"diff found {sorted(found)}, expected {sorted(pointers)}")
    for recorded, replayed in same + reformatted:
        if compare_payloads(recorded, replayed, rules):
            raise SystemExit("diff reported a difference in an identical pair")

    def ours(recorded: bytes, replayed: bytes):
        return compare_payloads(recorded, replayed, rules)

    def theirs(recorded: bytes, replayed: bytes):
        return DeepDiff(json.loads(recorded), json.loads(replayed), exclude_regex_paths=DEEPDIFF_EXCLUDE,
                        math_epsilon=DIFF_TABLE["abs_tol"], ignore_numeric_type_changes=True)

    sample = differing[:args.deepdiff_pairs]
    for recorded, replayed in sample[:20]:
        if not theirs(recorded, replayed):
            raise SystemExit("DeepDiff found no difference in a differing pair")

    results = best_rates({
        "diff_differing": (ours, differing),
        "deepdiff_differing": (theirs, sample),
        "diff_identical_bytes": (ours, same),
        "diff_identical_reformatted": (ours, reformatted),
    }, args.repeat)
    ratio = results["diff_differing"] / results["deepdiff_differing"]

    print(f"python {platform.python_version()}, {platform.machine()}, deepdiff {deepdiff.__version__}, "
          f"payload {min(sizes)}-{max(sizes)} bytes (mean {sum(sizes) / len(sizes):.0f})")
    print(f"differing pairs, diff:              {results['diff_differing']:>12,.0f} pairs/s")
    print(f"differing pairs, DeepDiff:          {results['deepdiff_differing']:>12,.0f} pairs/s")
    print(f"  ratio {ratio:.0f}x (goal >= {DIFFERING_GOAL_RATIO:.0f}x): "
          f"{'met' if ratio >= DIFFERING_GOAL_RATIO else 'NOT met'}")
    for name, label in (("diff_identical_bytes", "identical pairs, same bytes:"),
                        ("diff_identical_reformatted", "identical pairs, reformatted:")):
        value = results[name]
        verdict = "met" if value >= IDENTICAL_GOAL_PAIRS_S else "NOT met"
        print(f"{label:<36}{value:>12,.0f} pairs/s (goal >= {IDENTICAL_GOAL_PAIRS_S:,}: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
