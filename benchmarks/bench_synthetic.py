"""Throughput of the synthetic data generator, against the cost of only writing its output.

The baseline, measured in the same run, writes the generated tables again with pyarrow alone (same
encoding, row groups and compression): the ratio says how much of the time is generation, not I/O.
The target is at least 2M events/s on one core.

    python benchmarks/bench_synthetic.py --users 200000 [--events-per-user 50] [--chunk-users 200000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from threadpoolctl import threadpool_limits

from lookalike.data.synthetic import ROW_GROUP_ROWS, generate
from lookalike.testing.peak_rss import peak_rss_mib

TARGET_EVENTS_PER_SECOND = 2_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--events-per-user", type=float, default=50.0)
    parser.add_argument("--chunk-users", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(1):
        generate(Path(tmp) / "warm-up", 1_000)  # first calls import pandas (through pyarrow)
        started = time.perf_counter()
        data = generate(
            Path(tmp) / "data", args.users, events_per_user=args.events_per_user, chunk_users=args.chunk_users
        )
        generation = time.perf_counter() - started
        peak_mib = peak_rss_mib()
        files = [data.events, data.profiles, data.conversions, data.truth]
        size_mib = sum(path.stat().st_size for path in files) / 2**20
        write_only = _rewrite_seconds(files, Path(tmp))
    rate = data.n_events / generation
    print(f"users {args.users:,}  events {data.n_events:,}  conversions {data.n_conversions:,}  "
          f"Parquet {size_mib:,.0f} MiB")
    print(f"generate + write: {generation:.2f} s = {rate / 1e6:.2f}M events/s "
          f"({rate / TARGET_EVENTS_PER_SECOND:.2f}x the 2M/s target), peak RSS {peak_mib:,.0f} MiB")
    print(f"baseline, writing the same tables only: {write_only:.2f} s "
          f"(generate + write = {generation / write_only:.2f}x)")


def _rewrite_seconds(paths: list[Path], tmp: Path) -> float:
    """Seconds to write the tables again the way the generator does (dictionary strings, no schema)."""
    tables = []
    for path in paths:
        schema = pq.read_schema(path)
        strings = [field.name for field in schema if field.type == pa.string()]
        tables.append(pq.read_table(path, read_dictionary=strings))
    started = time.perf_counter()
    for path, table in zip(paths, tables):
        pq.write_table(table, tmp / f"rewrite-{path.name}", row_group_size=ROW_GROUP_ROWS, store_schema=False)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
