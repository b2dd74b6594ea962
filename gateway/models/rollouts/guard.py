"""The guard: when a rollout's candidate is misbehaving, as pure functions over the
prediction log's rows (anything with status_code, latency_ms and shadow_top1_agree)."""

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Guard:
    min_requests: int = 50  # the window: the newest N candidate requests
    max_error_rate: float = 0.05
    max_p95_ratio: float | None = 2.0  # candidate p95 / default p95 over the same window
    min_agreement: float | None = None  # shadow only: smallest top-1 agreement


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank q-quantile (0 < q < 1), or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def candidate_failed(status: int) -> bool:
    """The candidate's failure, not the client's: a server error, or a candidate that is
    no longer registered."""
    return status >= 500 or status == 404


def error_rate(rows) -> float | None:
    return sum(candidate_failed(r.status_code) for r in rows) / len(rows) if rows else None


def breach(guard: Guard, window: list, baseline: list) -> str | None:
    """Why the candidate's window (its newest rows) breaches the guard, or None. The
    baseline is the default arm's newest rows of the same rollout."""
    if len(window) < guard.min_requests:
        return None
    rate = error_rate(window)
    if rate > guard.max_error_rate:
        return (f"error_rate {rate:.3f} over the last {len(window)} candidate requests "
                f"is above {guard.max_error_rate}")
    if guard.max_p95_ratio is not None and len(baseline) >= 5:
        candidate = percentile(
            [r.latency_ms for r in window if not candidate_failed(r.status_code)], 0.95)
        default = percentile(
            [r.latency_ms for r in baseline if not candidate_failed(r.status_code)], 0.95)
        if candidate is not None and default and candidate / default > guard.max_p95_ratio:
            return (f"p95_ratio {candidate / default:.2f} (candidate p95 {candidate} ms, default "
                    f"{default} ms) is above {guard.max_p95_ratio}")
    if guard.min_agreement is not None:
        compared = [r.shadow_top1_agree for r in window if r.shadow_top1_agree is not None]
        if compared:
            agreement = statistics.fmean(compared)
            if agreement < guard.min_agreement:
                return (f"agreement {agreement:.3f} top-1 over the last {len(compared)} shadow "
                        f"copies is below {guard.min_agreement}")
    return None
