"""Given rows of a Parquet file (the feature table), read one batch at a time from only the row
groups that hold them."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def read_rows(parquet: pq.ParquetFile, rows: np.ndarray, columns: list[str],
              batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
    """``columns`` of the table's ``rows`` (row numbers, ascending, no repeats), in order, as
    record batches of at most ``batch_size`` rows read at a time.

    Row groups holding none of ``rows`` are skipped, so a population partition stored as its own
    row groups (:func:`lookalike.data.features.merge_feature_partitions`) costs a read of that
    partition only; memory is one batch. A batch that holds none of ``rows`` yields nothing.

    Example::

        parquet = pq.ParquetFile("features.parquet")
        table = pa.Table.from_batches(read_rows(parquet, np.array([3, 10, 42]), ["age"]))
    """
    sizes = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
    starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
    for group in np.unique(np.searchsorted(starts, rows, side="right") - 1):
        start = int(starts[group])
        for batch in parquet.iter_batches(batch_size=batch_size, row_groups=[int(group)],
                                          columns=columns):
            lo, hi = np.searchsorted(rows, [start, start + batch.num_rows])
            if hi > lo:
                yield batch.take(pa.array(rows[lo:hi] - start))
            start += batch.num_rows
