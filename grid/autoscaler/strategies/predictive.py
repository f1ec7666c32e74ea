"""The predictive strategy: forecast a pool's total load and provision ahead of it.

The history is the per-minute pool total of the metric (sum over nodes), which does not
depend on how many nodes served it, so a forecast of it divided by the per-node `target`
is the size the pool will need. The model is a linear regression (scikit-learn) on time,
recent minutes weighted more (half-life a quarter of `history`) so it follows a level shift
within minutes; with `season:` it adds two Fourier harmonics of the season (a daily cycle)
and weighs the whole history equally. Small, fast and stable. pandas and scikit-learn are
imported inside the functions that use them: they are the optional `predictive` extra (a
pool without a forecast must run without them) and take about a second to import.

The vote is the peak of the forecast over (now, now + horizon] plus `margin` standard
deviations of the fit's residuals (headroom for the noise the trend cannot see), divided by
the per-node target. The strategy scales out ahead
of demand, never in unless `scale_in: true`; with less than `min_history` of data it abstains
so the reactive checks decide. Every forecast is remembered (the engine keeps this "memory"
in the pool state) and scored against the actual value once its time has come: the mean
absolute percentage error is reported with each vote, which is what `shadow: true` is for.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from grid.autoscaler.policy import PredictiveCheck
from grid.autoscaler.votes import (
    CheckInput,
    Vote,
    ceil_safe,
    error_vote,
    make_vote,
    proportional,
)
from grid.core.durations import format_duration

MAX_PENDING = 500  # forecasts waiting for their actual value


@dataclass(frozen=True)
class Forecast:
    point: float  # the forecast at now + horizon
    peak: float  # the largest forecast over (now, now + horizon]
    points: int  # history buckets the model was fitted on
    spread: float  # standard deviation of the fit's residuals


def forecast(
    series: Sequence[tuple[float, float]],
    now: float,
    horizon: float,
    resolution: float = 60.0,
    season: float | None = None,
    margin: float = 0.0,
) -> Forecast:
    """Fit trend (+ season) on `series` and forecast up to `horizon` seconds after `now`."""
    # Optional `predictive` extra, and about a second to import: loaded on the first forecast.
    import numpy as np  # noqa: PLC0415
    import pandas as pd  # noqa: PLC0415
    from sklearn.linear_model import LinearRegression  # noqa: PLC0415

    # Regular buckets of `resolution` seconds, gaps interpolated, each at its midpoint.
    frame = pd.DataFrame(series, columns=["ts", "value"])
    buckets = (frame["ts"] // resolution).astype("int64")
    means = frame["value"].groupby(buckets).mean()
    regular = means.reindex(range(int(means.index.min()), int(means.index.max()) + 1))
    regular = regular.interpolate(limit_direction="both")
    t0 = float(regular.index[0]) * resolution
    grid = (regular.index.to_numpy(dtype="float64") + 0.5) - t0 / resolution
    steps = max(1, math.ceil(horizon / resolution))
    future = (now - t0) / resolution + np.arange(1, steps + 1) * (horizon / resolution / steps)
    features, actual = _features(grid, season, resolution), regular.to_numpy()
    weights = None if season else 0.5 ** ((grid[-1] - grid) / max(1.0, len(grid) / 4))
    model = LinearRegression().fit(features, actual, sample_weight=weights)
    residuals = actual - model.predict(features)
    spread = float(np.sqrt(np.average(residuals**2, weights=weights)))
    predicted = np.maximum(model.predict(_features(future, season, resolution)), 0.0)
    peak = float(predicted.max()) + margin * spread
    return Forecast(float(predicted[-1]), peak, len(regular), spread)


def _features(t: Any, season: float | None, resolution: float) -> Any:
    import numpy as np  # noqa: PLC0415 - the optional `predictive` extra (see forecast)

    columns = [t]
    if season:
        phase = 2 * np.pi * t * resolution / season
        columns += [np.sin(phase), np.cos(phase), np.sin(2 * phase), np.cos(2 * phase)]
    return np.column_stack(columns)


def score_forecasts(
    memory: Mapping[str, Any] | None, series: Sequence[tuple[float, float]]
) -> dict[str, Any]:
    """Move forecasts whose time has come out of `pending` into the error totals."""
    pending = [list(p) for p in (memory or {}).get("pending", [])]
    count = int((memory or {}).get("n", 0))
    ape_sum = float((memory or {}).get("ape_sum", 0.0))
    if series:
        times = [t for t, _ in series]
        last = times[-1]
        still = []
        for target_ts, predicted in pending:
            if target_ts > last:
                still.append([target_ts, predicted])
                continue
            actual = series[max(0, bisect.bisect_right(times, target_ts) - 1)][1]
            ape_sum += abs(predicted - actual) / max(abs(actual), 1e-9)
            count += 1
        pending = still
    return {"pending": pending[-MAX_PENDING:], "n": count, "ape_sum": ape_sum}


def predictive(
    check: PredictiveCheck,
    inp: CheckInput,
    current: int,
    tolerance: float,
    now: float,
    memory: Mapping[str, Any] | None = None,
) -> Vote:
    """Vote for ceil(peak forecast / target), within tolerance of the current size."""
    if inp.error is not None:
        return error_vote(check.name, check.strategy, inp.error)
    series = [(t, v) for t, v in inp.series if now - check.history <= t <= now]
    book = score_forecasts(memory, series)
    details: dict[str, Any] = {}
    if book["n"]:
        details["mape"] = round(book["ape_sum"] / book["n"], 6)
        details["scored"] = book["n"]
    span = series[-1][0] - series[0][0] + check.resolution if series else 0.0
    if len(series) < 3 or span < check.min_history:
        reason = (
            f"history {format_duration(span)} < min_history {format_duration(check.min_history)}:"
            " the reactive checks decide"
        )
        return make_vote(
            check.name, check.strategy, current, None, reason,
            shadow=check.shadow, details=details, memory=book,
        )  # fmt: skip
    fc = forecast(series, now, check.horizon, check.resolution, check.season, check.margin)
    book["pending"] = [*book["pending"], [now + check.horizon, fc.point]][-MAX_PENDING:]
    details.update(
        forecast=round(fc.point, 6), peak=round(fc.peak, 6), spread=round(fc.spread, 6),
        points=fc.points,
    )  # fmt: skip
    if current > 0:  # the proportional rule on the forecast per node: ceil(peak / target)
        desired = proportional(current, fc.peak / current, check.target, tolerance)
    else:
        desired = ceil_safe(fc.peak / check.target)
    reason = (
        f"{check.metric} total forecast peak {fc.peak:.4g} in {format_duration(check.horizon)}"
        + (f" (margin {check.margin:g} x spread {fc.spread:.3g})" if check.margin else "")
        + f" / target {check.target:g} per node -> {desired}"
    )
    if desired < current and not check.scale_in:
        reason += f" < {current}: no scale-in on a forecast (scale_in: false)"
        return make_vote(
            check.name, check.strategy, current, None, reason,
            shadow=check.shadow, details=details, memory=book,
        )  # fmt: skip
    if check.shadow:
        reason = "shadow: would vote " + reason
    return make_vote(
        check.name, check.strategy, current, desired, reason,
        shadow=check.shadow, details=details, memory=book,
    )  # fmt: skip
