"""Percentile bootstrap intervals, shared by the offline evaluation
(:mod:`lookalike.evaluation.metrics`) and the export's quality estimate
(:mod:`lookalike.audience.quality`), which may not import the evaluation (a later layer).
"""

from __future__ import annotations

import numpy as np


def percentile_interval(samples: np.ndarray) -> tuple[float, float]:
    """The central 95% of bootstrap ``samples``: their 2.5th and 97.5th percentiles.

    Args:
        samples: one statistic per bootstrap resample (NaN where there were none: NaN bounds).

    Example::

        >>> percentile_interval(np.arange(101.0))
        (2.5, 97.5)
    """
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(low), float(high)
