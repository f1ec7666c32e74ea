"""Write the synthetic load traces the autoscaler backtests use (deterministic).

    python bench/make_traces.py [OUT_DIR]                  # the four shipped traces (bench/traces)
    python bench/make_traces.py --set tuning [OUT_DIR]     # generated families, seed "tuning"
    python bench/make_traces.py --set heldout [OUT_DIR]    # the same families, other draws

Each CSV is `timestamp,value`: unix seconds and the pool's total load (requests/s, or total
CPU % - the backtest reads it as the load of the metric it measures capacity on). The shipped
traces have one row a minute. A generated set (default OUT_DIR bench/results/traces/SET, not
committed) draws every family's parameters - levels, step sizes, periods, noise, timings -
from its own seed, with one row every 10 s (a minute for the two-day cycles): steps, ramps,
oscillations at several periods, sawtooths, noise (white and correlated), daily cycles,
outages with a retry surge and flash crowds. The policy is tuned on `tuning` only; `heldout`
is looked at once, for the report.
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable
from pathlib import Path

SEED = 20260105
START = 1767571200  # 2026-01-05T00:00:00Z, a Monday
MINUTE = 60
ROOT = Path(__file__).resolve().parent

# ---- the four shipped traces (one row a minute) -------------------------------------------


def daily(minute: int, rng: random.Random) -> float:
    """Two days of a business cycle: quiet nights, a morning climb, an afternoon peak."""
    hour = (minute / 60) % 24
    day = 0.0 if not 6 <= hour <= 22 else math.sin(math.pi * (hour - 6) / 16) ** 1.5
    return (300 + 2200 * day) * (1 + rng.gauss(0, 0.03))


def spike(minute: int, rng: random.Random) -> float:
    """Six hours flat at 400 with a 30-minute surge to 1,600 at hour 2."""
    surge = 1600 if 120 <= minute < 150 else 400
    return surge * (1 + rng.gauss(0, 0.03))


def ramp(minute: int, rng: random.Random) -> float:
    """Eight hours: an hour at 200, a six-hour climb to 2,000, an hour flat."""
    climb = min(1.0, max(0.0, (minute - 60) / 360))
    return (200 + 1800 * climb) * (1 + rng.gauss(0, 0.03))


def noisy(minute: int, rng: random.Random) -> float:
    """Six hours around 800 with 10 % (one sigma) minute-to-minute noise."""
    return max(0.0, 800 * (1 + rng.gauss(0, 0.10)))


TRACES: dict[str, tuple[Callable[[int, random.Random], float], int]] = {
    "daily": (daily, 2 * 24 * 60),
    "spike": (spike, 6 * 60),
    "ramp": (ramp, 8 * 60),
    "noisy": (noisy, 6 * 60),
}


def write(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (shape, minutes) in TRACES.items():
        rng = random.Random(f"{SEED}-{name}")
        path = out / f"{name}.csv"
        rows = [f"{START + m * MINUTE},{shape(m, rng):.2f}" for m in range(minutes)]
        path.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
        written.append(path)
    return written


# ---- generated families (parameters drawn from the set's seed) ----------------------------

Shape = Callable[[float], float]  # seconds since the start -> load before noise


def _step(rng: random.Random, hours: float) -> Shape:
    """Flat, then one or two steps up by x2-x5 lasting 10-40 minutes."""
    base = rng.uniform(200, 900)
    steps = [(rng.uniform(0.2, 0.45) * hours * 3600, rng.uniform(2, 5), rng.uniform(600, 2400))
             for _ in range(rng.randint(1, 2))]  # fmt: skip
    steps[-1] = (rng.uniform(0.55, 0.8) * hours * 3600, *steps[-1][1:])
    return lambda t: base * max([f for at, f, d in steps if at <= t < at + d] or [1.0])


def _ramp(rng: random.Random, hours: float) -> Shape:
    """Flat, a climb (15 minutes to 3 hours) by x3-x8, flat, and a fall as long."""
    base, factor = rng.uniform(150, 500), rng.uniform(3, 8)
    begin, climb = rng.uniform(0.1, 0.2) * hours * 3600, rng.uniform(900, 0.35 * hours * 3600)
    top = rng.uniform(600, 1800)

    def shape(t: float) -> float:
        up = min(1.0, max(0.0, (t - begin) / climb))
        down = min(1.0, max(0.0, (t - begin - climb - top) / climb))
        return base * (1 + (factor - 1) * (up - down))

    return shape


def _oscillation(rng: random.Random, hours: float) -> Shape:
    """A sine around a level; the period is 2-40 minutes, the amplitude 15-50 %."""
    level, amp = rng.uniform(400, 1500), rng.uniform(0.15, 0.5)
    period = rng.choice([120, 240, 360, 600, 900, 1500, 2400]) * rng.uniform(0.9, 1.1)
    phase = rng.uniform(0, 2 * math.pi)
    return lambda t: level * (1 + amp * math.sin(2 * math.pi * t / period + phase))


def _sawtooth(rng: random.Random, hours: float) -> Shape:
    """Slow climbs by x2-x4 and sudden drops, every 5-25 minutes."""
    base, factor = rng.uniform(200, 700), rng.uniform(2, 4)
    period = rng.uniform(300, 1500)
    return lambda t: base * (1 + (factor - 1) * ((t % period) / period))


def _noise(rng: random.Random, hours: float) -> Shape:
    """A level with slow wandering (an AR(1) walk with a 2-10 minute memory)."""
    level, sigma, memory = rng.uniform(300, 1500), rng.uniform(0.05, 0.2), rng.uniform(120, 600)
    walk: list[float] = [0.0]
    seed = rng.random()
    local = random.Random(seed)
    keep = math.exp(-10 / memory)
    for _ in range(int(hours * 360) + 2):
        walk.append(keep * walk[-1] + math.sqrt(1 - keep * keep) * local.gauss(0, sigma))
    return lambda t: level * max(0.05, 1 + walk[int(t // 10)])


def _daily(rng: random.Random, hours: float) -> Shape:
    """Days of one or two peaks (morning, evening) between a night floor and a day peak."""
    night, peak = rng.uniform(100, 400), rng.uniform(1500, 3500)
    first, second = rng.uniform(9, 12), rng.uniform(16, 21)
    width, two = rng.uniform(2, 4), rng.random() < 0.6

    def shape(t: float) -> float:
        hour = (t / 3600) % 24
        bump = math.exp(-(((hour - first) / width) ** 2))
        if two:
            bump = max(bump, 0.8 * math.exp(-(((hour - second) / width) ** 2)))
        return night + (peak - night) * bump

    return shape


def _outage(rng: random.Random, hours: float) -> Shape:
    """A level; an upstream outage of 2-10 minutes (load near zero), then a retry surge of
    x1.5-x3 that decays over 2-8 minutes."""
    level = rng.uniform(400, 1500)
    at, gone = rng.uniform(0.3, 0.6) * hours * 3600, rng.uniform(120, 600)
    surge, decay = rng.uniform(1.5, 3), rng.uniform(120, 480)

    def shape(t: float) -> float:
        if at <= t < at + gone:
            return level * 0.05
        if t >= at + gone:
            return level * (1 + (surge - 1) * math.exp(-(t - at - gone) / decay))
        return level

    return shape


def _flash(rng: random.Random, hours: float) -> Shape:
    """Flash crowds: x4-x8 within 10-60 s, holding 3-15 minutes, decaying over as long."""
    base = rng.uniform(200, 600)
    crowds = [(rng.uniform(0.15, 0.8) * hours * 3600, rng.uniform(4, 8), rng.uniform(10, 60),
               rng.uniform(180, 900)) for _ in range(rng.randint(1, 3))]  # fmt: skip

    def shape(t: float) -> float:
        load = 1.0
        for at, factor, rise, hold in crowds:
            if t < at:
                continue
            if t < at + rise:
                load = max(load, 1 + (factor - 1) * (t - at) / rise)
            elif t < at + rise + hold:
                load = max(load, factor)
            else:
                load = max(load, 1 + (factor - 1) * math.exp(-(t - at - rise - hold) / hold))
        return base * load

    return shape


# name -> (shape maker, hours, seconds per row)
FAMILIES: dict[str, tuple[Callable[[random.Random, float], Shape], float, int]] = {
    "step": (_step, 3, 10),
    "ramp": (_ramp, 6, 10),
    "oscillation": (_oscillation, 2, 10),
    "oscillation-b": (_oscillation, 2, 10),
    "sawtooth": (_sawtooth, 2, 10),
    "noise": (_noise, 3, 10),
    "daily": (_daily, 48, 60),
    "outage": (_outage, 3, 10),
    "flash": (_flash, 3, 10),
    "flash-b": (_flash, 3, 10),
}


def write_set(name: str, out: Path) -> list[Path]:
    """Every family of a set, its parameters and row noise (1-5 %) drawn from `name`."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for family, (maker, hours, every) in FAMILIES.items():
        rng = random.Random(f"{SEED}-{name}-{family}")
        shape, noise = maker(rng, hours), rng.uniform(0.01, 0.05)
        rows = []
        for k in range(int(hours * 3600 / every)):
            value = max(0.0, shape(k * every) * (1 + rng.gauss(0, noise)))
            rows.append(f"{START + k * every},{value:.2f}")
        path = out / f"{name}-{family}.csv"
        path.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("out", nargs="?", type=Path, help="output directory")
    parser.add_argument("--set", dest="set_name", help="a generated set: its name is its seed")
    args = parser.parse_args()
    if args.set_name:
        paths = write_set(args.set_name, args.out or ROOT / "results" / "traces" / args.set_name)
    else:
        paths = write(args.out or ROOT / "traces")
    for path in paths:
        print(path)
