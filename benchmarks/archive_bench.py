"""Archive writer and reader throughput against raw fastavro, per codec.

For each codec, in one run on the same events:

* raw write: ``fastavro.writer`` of prepared datums to a local file;
* ArchiveWriter: ``write()`` of every RecordedEvent, then ``close()`` (datum
  building, buffering, encoding, temporary file, fsync and link);
* raw read: ``fastavro.reader`` over the same files, counting datums;
* ArchiveReader: ``read()`` with duplicate removal, building RecordedEvents.

Goals: writer >= 0.7x raw, reader with dedupe >= 0.6x raw. Also prints the
file size per codec and block size (``sync_interval``).

    python3 benchmarks/archive_bench.py --events 200000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastavro  # noqa: E402

from recorder._logging import configure_logging  # noqa: E402
from recorder._reader import ArchiveReader  # noqa: E402
from recorder._writer import CODECS, DEFAULT_SYNC_INTERVAL_BYTES, ArchiveWriter  # noqa: E402
from schemas import RECORDED_EVENT_SCHEMA, Direction, RecordedEvent  # noqa: E402

WRITER_GOAL = 0.7
READER_GOAL = 0.6


def make_events(count: int, *, seed: int = 7) -> list[RecordedEvent]:
    """Return ``count`` events with JSON payloads of about 1 KB, like a box-score message."""
    rng = random.Random(seed)
    base_micros = 1_710_000_000_000_000
    events = []
    for index in range(count):
        players = [
            {"player_id": rng.randrange(1_000_000), "name": f"player-{rng.randrange(500)}",
             "pts": rng.randrange(40), "reb": rng.randrange(15), "ast": rng.randrange(12),
             "min": f"{rng.randrange(48)}:{rng.randrange(60):02d}", "fg_pct": round(rng.random(), 3)}
            for _ in range(9)
        ]
        payload = {"game_id": f"00224{rng.randrange(10_000):05d}", "game_date": "2024-03-09",
                   "season": 2023, "status": "final", "team": rng.choice(["LAL", "BOS", "DEN", "MIA"]),
                   "players": players}
        data = json.dumps(payload, separators=(",", ":")).encode()
        events.append(RecordedEvent(
            event_id=f"{10_000_000_000 + index}",
            logical_date=dt.date(2024, 3, 9),
            phase="phase2",
            direction=Direction.INPUT if index % 3 else Direction.OUTPUT,
            processor="bdl_boxscores",
            topic="nba-phase1-scrapers-complete",
            subscription="nba-phase2-raw-sub",
            publish_time=base_micros + index * 1000,
            record_time=base_micros + index * 1000 + 250,
            attributes={"scraper": "bdl_box_scores", "game_date": "2024-03-09"},
            data=data,
            content_type="application/json",
            delivery_attempt=1,
            outcome="ack",
            handling_micros=1500,
            source="sdk",
        ))
    return events


def best_of_alternating(repeats: int, first, second) -> tuple[float, float]:
    """Run ``first`` and ``second`` alternately ``repeats`` times; return the fastest time of each."""
    first_times, second_times = [], []
    for _ in range(repeats):
        for function, times in ((first, first_times), (second, second_times)):
            started = time.perf_counter()
            function()
            times.append(time.perf_counter() - started)
    return min(first_times), min(second_times)


def bench_codec(events, datums, codec: str, sync_interval: int, workdir: Path, repeats: int) -> dict:
    raw_dir = workdir / f"raw-{codec}"
    archive_dir = workdir / f"archive-{codec}"
    raw_file = raw_dir / "raw.avro"

    def raw_write():
        shutil.rmtree(raw_dir, ignore_errors=True)
        raw_dir.mkdir()
        with open(raw_file, "wb") as target:
            fastavro.writer(target, RECORDED_EVENT_SCHEMA, datums, codec=codec, sync_interval=sync_interval)

    def archive_write():
        shutil.rmtree(archive_dir, ignore_errors=True)
        # Default roll limits (a file per 64 MiB or 100,000 events), as in production.
        with ArchiveWriter(str(archive_dir), writer_id="bench", source="sdk", codec=codec,
                           sync_interval=sync_interval, max_age_secs=3600) as writer:
            for event in events:
                writer.write(event)

    def raw_read():
        with open(raw_file, "rb") as source:
            count = sum(1 for _ in fastavro.reader(source))
        assert count == len(events)

    def archive_read():
        reader = ArchiveReader(str(archive_dir))
        count = sum(1 for _ in reader.read())
        assert count == len(events), count

    # Raw and archive runs alternate, so a burst of load from other processes
    # slows both sides of a ratio instead of one.
    raw_write_s, archive_write_s = best_of_alternating(repeats, raw_write, archive_write)
    raw_read_s, archive_read_s = best_of_alternating(repeats, raw_read, archive_read)
    size = sum(path.stat().st_size for path in archive_dir.rglob("*.avro"))
    return {
        "codec": codec,
        "raw_write_per_s": len(events) / raw_write_s,
        "writer_per_s": len(events) / archive_write_s,
        "writer_ratio": raw_write_s / archive_write_s,
        "raw_read_per_s": len(events) / raw_read_s,
        "reader_per_s": len(events) / archive_read_s,
        "reader_ratio": raw_read_s / archive_read_s,
        "size_bytes": size,
    }


def block_size_table(datums, codecs, sizes) -> list[dict]:
    import io

    rows = []
    for codec in codecs:
        for sync_interval in sizes:
            buffer = io.BytesIO()
            started = time.perf_counter()
            fastavro.writer(buffer, RECORDED_EVENT_SCHEMA, datums, codec=codec, sync_interval=sync_interval)
            elapsed = time.perf_counter() - started
            rows.append({"codec": codec, "sync_interval": sync_interval,
                         "size_bytes": buffer.tell(), "write_per_s": len(datums) / elapsed})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="Events per run (default 200000).")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per measurement; the fastest counts.")
    parser.add_argument("--codec", action="append", choices=sorted(CODECS), help="Codec to measure; repeatable.")
    parser.add_argument("--sync-interval", type=int, default=DEFAULT_SYNC_INTERVAL_BYTES,
                        help="Block size in bytes for the throughput runs.")
    args = parser.parse_args()
    codecs = args.codec or list(CODECS)
    configure_logging(level="WARNING", force=True)  # no log line per file written or read

    print(f"python {platform.python_version()}, fastavro {fastavro.__version__}, "
          f"{os.cpu_count()} cpus, {args.events} events")
    events = make_events(args.events)
    datums = [event.to_avro() for event in events]
    mean_payload = sum(len(event.data) for event in events) / len(events)
    print(f"mean payload {mean_payload:.0f} bytes, sync_interval {args.sync_interval} bytes")

    results = []
    with tempfile.TemporaryDirectory(prefix="archive-bench-") as workdir:
        for codec in codecs:
            results.append(bench_codec(events, datums, codec, args.sync_interval, Path(workdir), args.repeats))

    null_size = next((row["size_bytes"] for row in results if row["codec"] == "null"), None)
    print()
    print(f"{'codec':<10} {'raw write/s':>12} {'writer/s':>10} {'ratio':>6} "
          f"{'raw read/s':>11} {'reader/s':>10} {'ratio':>6} {'MiB':>8} {'vs null':>8}")
    failed = False
    for row in results:
        shrink = f"{null_size / row['size_bytes']:.2f}x" if null_size else "-"
        print(f"{row['codec']:<10} {row['raw_write_per_s']:>12,.0f} {row['writer_per_s']:>10,.0f} "
              f"{row['writer_ratio']:>6.2f} {row['raw_read_per_s']:>11,.0f} {row['reader_per_s']:>10,.0f} "
              f"{row['reader_ratio']:>6.2f} {row['size_bytes'] / 2**20:>8.1f} {shrink:>8}")
        failed |= row["writer_ratio"] < WRITER_GOAL or row["reader_ratio"] < READER_GOAL

    sample = datums[: min(len(datums), 50_000)]
    print()
    print(f"block size ({len(sample)} events, in memory): codec, sync_interval, MiB, writes/s")
    for row in block_size_table(sample, [codec for codec in codecs if codec != "null"],
                                [16_000, 64 * 1024, 256 * 1024, 1024 * 1024]):
        print(f"  {row['codec']:<10} {row['sync_interval']:>8} {row['size_bytes'] / 2**20:>7.2f} "
              f"{row['write_per_s']:>10,.0f}")
    print()
    print(f"goals: writer >= {WRITER_GOAL}x raw, reader with dedupe >= {READER_GOAL}x raw: "
          + ("MISSED" if failed else "met"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
