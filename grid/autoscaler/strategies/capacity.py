"""The capacity strategy: scale up fast, scale down carefully, trust a forecast only while right.

Input: the pool total of the metric over the check's window - by default the evaluation
interval itself, so the vote sees the samples of the interval that just ended, not a minute
average. The check's memory (kept in the pool state between evaluations) holds the recent
interval totals, 5-minute buckets over two days, the forecasts waiting for their actual
value, each forecaster's recent error and the periods found in the data.

* **Up, within one evaluation**: ``need = ceil(total / (capacity x utilization))`` - no
  tolerance band and no step limit, the vote is the size needed, in one step.
* **Forecasts**: a linear trend over the last `trend`, and "the value one period ago" when the
  data has a period (found by autocorrelation: one to fifteen minutes in the recent totals,
  half an hour to a day in the 5-minute buckets). Each forecasts the load `spin_up` plus one
  interval ahead; each is scored when its time comes. A forecast acts only while its recent
  error (an exponential average of |forecast - actual| / max(actual, capacity)) is at most
  `max_error` over at least MIN_SCORED forecasts and below the error of no forecast at all
  ("the load stays as it is", scored the same way); the reason says which acted and why.
  A trusted forecast raises `need` to the load it expects within the next spin-up.
* **Down, carefully**: never below what the peak of the last `hold` plus `spin_up` needs, nor
  below the trusted forecasts' upper band (trend + 2 standard deviations of its fit, the
  period's peak over the next spin-up plus its error): the capacity the demand of the next
  spin-up window may need is kept, so it is not dropped just before a cycle returns.

Pure Python (no numpy): the default policy must run without the `predictive` extra.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from typing import Any

from grid.autoscaler.policy import CapacityCheck
from grid.autoscaler.votes import CheckInput, Vote, ceil_safe, error_vote, fmt, make_vote
from grid.core.durations import format_duration

RECENT_KEEP = 45 * 60.0  # seconds of interval totals kept (short periods need three cycles)
RECENT_MAX = 540  # ... and at most this many (a 1 s interval keeps 9 minutes)
COARSE_STEP = 300.0  # bucket of the long history
COARSE_KEEP = 2 * 86400.0 + 3600.0  # two days: a daily period needs two cycles
SHORT_PERIODS = (60.0, 900.0)  # periods looked for in the recent totals
LONG_PERIODS = (1800.0, 86400.0)  # ... and in the 5-minute buckets
SHORT_EVERY, LONG_EVERY = 300.0, 1800.0  # how often each search runs
SEARCH_POINTS = 180  # values a search looks at, at most
MIN_CORRELATION = 0.6  # autocorrelation at the period for it to count as one
MIN_SCORED = 10  # forecasts scored before one may act
ALPHA = 0.1  # weight of the newest error in the running average
MAX_PENDING = 200
DOWN_BAND = 0.1  # a smaller size must fit the kept load at 90 % of `utilization`: no flapping
NAIVE = "naive"  # the yardstick: a forecast must beat "the load stays as it is"


def capacity(
    check: CapacityCheck,
    inp: CheckInput,
    current: int,
    tolerance: float = 0.0,
    now: float = 0.0,
    memory: Mapping[str, Any] | None = None,
) -> Vote:
    """Vote for the capacity the measured load and the trusted forecasts need."""
    if inp.error is not None or inp.value is None:
        return error_vote(check.name, check.strategy, inp.error or "no value")
    total = max(0.0, inp.value)
    book = _Book.load(memory)
    interval = now - book.rt[-1] if book.rt and now > book.rt[-1] else 0.0
    book.observe(now, total, check.capacity)
    if check.periods:
        book.find_periods(now)
    horizon = check.spin_up + interval
    per_node = check.capacity * check.utilization

    book.expect(now + horizon, NAIVE, total)  # "no forecast": the load stays as it is
    trend = _trend(book.rt, book.rv, now, check.trend, horizon)
    season = book.season_ahead(now, horizon) if check.periods else None
    used_up: list[float] = [total]
    used_keep: list[float] = [book.peak(now, check.hold + check.spin_up)]
    notes: list[str] = []
    details: dict[str, Any] = {"total": round(total, 6)}
    sigma = _noise(book.rt, book.rv, now, check.hold + check.spin_up)
    if trend is not None:
        point, _ = trend
        book.expect(now + horizon, "trend", point)
        ok, note = book.trusted("trend", check.max_error)
        notes.append(f"trend {fmt(point)} in {format_duration(horizon)}: {note}")
        details["trend"] = {"forecast": round(point, 6), "error": book.error("trend"), "used": ok}
        if ok:
            used_keep.append(point + 2 * sigma)
            if point > total + 2 * sigma:  # a rise the noise does not explain
                used_up.append(point)
    if season is not None:
        period, point, peak = season
        book.expect(now + horizon, "season", point)
        ok, note = book.trusted("season", check.max_error)
        notes.append(f"period {format_duration(period)}: peak {fmt(peak)} ahead: {note}")
        err = book.error("season") or 0.0
        details["season"] = {"period": period, "forecast": round(point, 6),
                             "peak": round(peak, 6), "error": err, "used": ok}  # fmt: skip
        if ok:
            used_up.append(peak)
            used_keep.append(peak * (1 + err))
    elif check.periods:
        notes.append("no period found")

    room = current * per_node
    expected = max(used_up)
    need = ceil_safe(expected / per_node)
    noise = 2 * sigma
    keep = ceil_safe((max(used_keep) + noise) / (per_node * (1 - DOWN_BAND)))
    desired = need if expected > room else min(current, max(need, keep))
    details.update(need=need, keep=keep, peak=round(used_keep[0], 6))
    reason = (
        f"{check.metric} total {fmt(total)} / {fmt(per_node)} per node"
        f" ({fmt(check.utilization * 100)}% of {fmt(check.capacity)}) -> need {need}"
    )
    if desired < current or (desired == current and keep >= current > need):
        held = format_duration(check.hold + check.spin_up)
        reason += f"; keep {desired}: peak of the last {held} {fmt(used_keep[0])}"
        reason += f" + 2 x noise {fmt(noise / 2)}" if noise else ""
        if len(used_keep) > 1:
            reason += f", trusted forecasts' upper band {fmt(max(used_keep[1:]))}"
    if notes:
        reason += "; " + "; ".join(notes)
    return make_vote(
        check.name, check.strategy, current, desired, reason, value=total,
        details=details, memory=book.dump(),
    )  # fmt: skip


def _trend(
    times: Sequence[float], values: Sequence[float], now: float, window: float, horizon: float
) -> tuple[float, float] | None:
    """Least-squares line through the totals of the last `window`: (value at now + horizon,
    standard deviation of the residuals); None with fewer than four points."""
    first = bisect.bisect_right(times, now - window)
    points = list(zip(times[first:], values[first:], strict=True))
    if len(points) < 4:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    sxx = sum((t - mt) ** 2 for t, _ in points)
    slope = sum((t - mt) * (v - mv) for t, v in points) / sxx if sxx > 0 else 0.0
    residuals = [v - (mv + slope * (t - mt)) for t, v in points]
    spread = math.sqrt(sum(r * r for r in residuals) / n)
    return max(0.0, mv + slope * (now + horizon - mt)), spread


def _noise(times: Sequence[float], values: Sequence[float], now: float, window: float) -> float:
    """The noise of the totals of the last `window`: a standard deviation estimated from the
    median second difference, which neither a level shift nor a smooth trend or cycle
    inflates (white noise of deviation s has second differences of deviation s x sqrt(6))."""
    values = values[bisect.bisect_right(times, now - window - 1e-6) :]
    second = sorted(
        abs(c - 2 * b + a) for a, b, c in zip(values, values[1:], values[2:], strict=False)
    )
    return 1.4826 * second[len(second) // 2] / math.sqrt(6) if second else 0.0


def best_period(values: Sequence[float], step: float, low: float, high: float) -> float | None:
    """The lag (seconds) in [low, high] where the autocorrelation of `values` (evenly spaced by
    `step`, linear trend removed) has its highest local peak, if at least MIN_CORRELATION."""
    n = len(values)
    first, last = max(2, math.ceil(low / step)), min(int(high / step), n // 3)
    if last <= first:
        return None
    mean, middle = sum(values) / n, (n - 1) / 2
    sxx = sum((i - middle) ** 2 for i in range(n))
    slope = sum((i - middle) * (v - mean) for i, v in enumerate(values)) / sxx
    dev = [v - mean - slope * (i - middle) for i, v in enumerate(values)]  # detrended
    energy = sum(d * d for d in dev)
    if energy <= 1e-12 * n:
        return None
    acf = {
        lag: sum(dev[i] * dev[i + lag] for i in range(n - lag)) / energy * n / (n - lag)
        for lag in range(first - 1, last + 2)
        if lag < n
    }
    best: tuple[float, int] | None = None
    for lag in range(first, last + 1):
        r = acf[lag]
        if r >= acf.get(lag - 1, r) and r >= acf.get(lag + 1, r) and (best is None or r > best[0]):
            best = (r, lag)
    return best[1] * step if best is not None and best[0] >= MIN_CORRELATION else None


def _coarsen(values: list[float], step: float) -> tuple[list[float], float]:
    """At most SEARCH_POINTS values: means of consecutive groups; and their spacing."""
    k = max(1, math.ceil(len(values) / SEARCH_POINTS))
    if k == 1:
        return values, step
    groups = [values[i : i + k] for i in range(0, len(values), k)]
    return [sum(g) / len(g) for g in groups], step * k


def _regular(times: Sequence[float], values: Sequence[float], step: float) -> list[float]:
    """Values on a grid of `step` from the first time, each the last value seen (gaps carry)."""
    out: list[float] = []
    index = 0
    for k in range(int((times[-1] - times[0]) / step) + 1):
        at = times[0] + k * step + 1e-6
        while index + 1 < len(times) and times[index + 1] <= at:
            index += 1
        out.append(values[index])
    return out


class _Book:
    """The check's memory, kept in columns of plain numbers (JSON-ready, and a few lists
    rather than thousands of small ones to decode and collect at every evaluation)."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        recent: Sequence[Sequence[Any]] = data.get("recent") or ([], [])
        coarse: Sequence[Sequence[Any]] = data.get("coarse") or ([], [], [])
        pending: Sequence[Sequence[Any]] = data.get("pending") or ([], [], [])
        self.rt: list[float] = list(recent[0])
        self.rv: list[float] = list(recent[1])
        self.cb: list[float] = list(coarse[0])
        self.cs: list[float] = list(coarse[1])
        self.cn: list[int] = list(coarse[2])
        self.pd: list[float] = list(pending[0])
        self.pk: list[str] = list(pending[1])
        self.pv: list[float] = list(pending[2])
        self.errors: dict[str, list[float]] = {k: list(v) for k, v in data.get("err", {}).items()}
        self.periods: dict[str, Any] = dict(data.get("periods", {}))

    @classmethod
    def load(cls, memory: Mapping[str, Any] | None) -> _Book:
        return cls(memory or {})

    def dump(self) -> dict[str, Any]:
        return {"recent": [self.rt, self.rv], "coarse": [self.cb, self.cs, self.cn],
                "pending": [self.pd, self.pk, self.pv], "err": self.errors,
                "periods": self.periods}  # fmt: skip

    def observe(self, now: float, total: float, scale: float) -> None:
        """Record this interval's total and score the forecasts that were due by now."""
        self.rt.append(now)
        self.rv.append(round(total, 4))
        first = max(bisect.bisect_right(self.rt, now - RECENT_KEEP), len(self.rt) - RECENT_MAX)
        if first > 0:
            del self.rt[:first], self.rv[:first]
        bucket = math.floor(now / COARSE_STEP) * COARSE_STEP
        if self.cb and self.cb[-1] == bucket:
            self.cs[-1] += total
            self.cn[-1] += 1
        else:
            self.cb.append(bucket)
            self.cs.append(total)
            self.cn.append(1)
            first = bisect.bisect_right(self.cb, now - COARSE_KEEP)
            if first > 0:
                del self.cb[:first], self.cs[:first], self.cn[:first]
        keep = [i for i, due in enumerate(self.pd) if due > now][-MAX_PENDING:]
        for i, due in enumerate(self.pd):
            if due > now:
                continue
            error = abs(self.pv[i] - total) / max(total, scale)
            avg, count = self.errors.get(self.pk[i], [0.0, 0])
            avg = error if count == 0 else (1 - ALPHA) * avg + ALPHA * error
            self.errors[self.pk[i]] = [round(avg, 6), count + 1]
        self.pd = [self.pd[i] for i in keep]
        self.pk = [self.pk[i] for i in keep]
        self.pv = [self.pv[i] for i in keep]

    def expect(self, due: float, kind: str, value: float) -> None:
        self.pd.append(due)
        self.pk.append(kind)
        self.pv.append(round(value, 4))

    def error(self, kind: str) -> float | None:
        found = self.errors.get(kind)
        return None if not found or not found[1] else found[0]

    def trusted(self, kind: str, max_error: float) -> tuple[bool, str]:
        """Whether forecaster `kind` may act, and the words that say so."""
        avg, count = self.errors.get(kind, [0.0, 0])
        if count < MIN_SCORED:
            return False, f"not used ({int(count)}/{MIN_SCORED} forecasts scored)"
        if avg > max_error:
            return False, f"not used: recent error {avg:.0%} > {max_error:.0%}"
        naive = self.error(NAIVE)
        if naive is not None and avg >= naive:
            return False, f"not used: recent error {avg:.0%} >= {naive:.0%} of no forecast"
        return True, f"used: recent error {avg:.0%} <= {max_error:.0%}"

    def peak(self, now: float, window: float) -> float:
        return float(max(self.rv[bisect.bisect_right(self.rt, now - window - 1e-6) :]))

    def find_periods(self, now: float) -> None:
        """Search for a short period every SHORT_EVERY and a long one every LONG_EVERY, at
        most one search per evaluation and on at most SEARCH_POINTS values, so a search costs
        a few milliseconds (the autocorrelation is O(points x lags) in pure Python)."""
        if len(self.rt) >= 12 and now - self.periods.get("short_at", -math.inf) >= SHORT_EVERY:
            gaps = sorted(b - a for a, b in zip(self.rt, self.rt[1:], strict=False))
            step = max(1.0, gaps[(len(gaps) - 1) // 2])
            values, step = _coarsen(_regular(self.rt, self.rv, step), step)
            self.periods["short"] = best_period(values, step, *SHORT_PERIODS)
            self.periods["short_at"] = now
        elif len(self.cb) >= 12 and now - self.periods.get("long_at", -math.inf) >= LONG_EVERY:
            found = None
            if len(self.cb) >= 13:  # complete buckets only: not the current one
                means = [s / n for s, n in zip(self.cs[:-1], self.cn[:-1], strict=True)]
                values = _regular(self.cb[:-1], means, COARSE_STEP)
                low, high = LONG_PERIODS
                middle = min(high, 4 * 3600.0)  # half an hour to 4 h on the last 12 h ...
                recent = values[-int(3 * middle / COARSE_STEP) :]
                found = best_period(recent, COARSE_STEP, low, middle)
                if found is None:  # ... else up to a day on all of it, in coarser buckets
                    wide, step = _coarsen(values, COARSE_STEP)
                    found = best_period(wide, step, middle, high)
            self.periods["long"] = found
            self.periods["long_at"] = now

    def season_ahead(self, now: float, horizon: float) -> tuple[float, float, float] | None:
        """(period, value expected at now + horizon, peak expected over (now, now + horizon]):
        what the data did one period ago; None without a period."""
        short, long = self.periods.get("short"), self.periods.get("long")
        if short:
            lo = bisect.bisect_right(self.rt, now - short)
            hi = bisect.bisect_right(self.rt, now - short + horizon)
            if hi > lo:
                return short, self.rv[hi - 1], max(self.rv[lo:hi])
        if long:
            lo, hi = now - long, now - long + horizon
            then = [s / n for b, s, n in zip(self.cb, self.cs, self.cn, strict=True)
                    if b + COARSE_STEP > lo and b <= hi]  # fmt: skip
            if then:
                return long, then[-1], max(then)
        return None
