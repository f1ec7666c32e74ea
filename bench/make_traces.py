"""Write the synthetic load traces the autoscaler backtests use (deterministic).

    python bench/make_traces.py [OUT_DIR]      # default bench/traces

Each CSV is `timestamp,value`: unix seconds, one row a minute, and the pool's total load
(requests/s, or total CPU % - the backtest reads it as the load of every metric a policy uses).
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable
from pathlib import Path

SEED = 20260105
START = 1767571200  # 2026-01-05T00:00:00Z, a Monday
MINUTE = 60


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


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "traces"
    for path in write(target):
        print(path)
