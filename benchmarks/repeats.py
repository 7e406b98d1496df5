# SPDX-License-Identifier: Apache-2.0
"""What a benchmark reports of a number measured over several repetitions."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def spread(values: Sequence[float], digits: int = 4) -> dict[str, float]:
    """``{"median", "min", "max"}`` of ``values``, rounded to ``digits``."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def keyed_spread(key: str, runs: Sequence[float]) -> dict:
    """``key`` (the median), ``key_min``, ``key_max`` and ``key_runs``.

    With no runs the three numbers are None and ``key_runs`` is empty.
    """
    stats = spread(runs) if runs else dict.fromkeys(("median", "min", "max"))
    return {
        key: stats["median"],
        f"{key}_min": stats["min"],
        f"{key}_max": stats["max"],
        f"{key}_runs": list(runs),
    }
