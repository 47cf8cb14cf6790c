"""The most points one read may ask for, over all its metrics and runs.

``max_points`` bounds one series; a request naming 64 metrics x 16 runs at 100,000 points each could
otherwise build a response of hundreds of megabytes for tens of seconds. The bound is on what the
request asks (``max_points`` x metrics x runs), so the answer is known before any work is done.
"""

from __future__ import annotations

from ..errors import BadRequest

__all__ = ["MAX_POINTS_PER_REQUEST", "check_points_budget"]

# 2**20: every metric of the catalogue (59) at 10,000 points, or 16 runs x 64 metrics at the default 1,000.
MAX_POINTS_PER_REQUEST = 1_048_576


def check_points_budget(max_points: int, metrics: int, runs: int = 1) -> None:
    """422 naming ``max_points`` when ``max_points x metrics x runs`` is above the cap."""
    asked = max_points * metrics * runs
    if asked > MAX_POINTS_PER_REQUEST:
        per = MAX_POINTS_PER_REQUEST // (metrics * runs)
        raise BadRequest(
            f"max_points={max_points} x {metrics} metric(s) x {runs} run(s) asks for {asked:,} points; at most "
            f"{MAX_POINTS_PER_REQUEST:,} per request (max_points <= {per:,} here, or fewer metrics or runs)",
            ["query", "max_points"],
        )
