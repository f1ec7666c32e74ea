"""Rates as `grid sim` reads them (--churn, --crash-rate)."""

from __future__ import annotations

import pytest

from grid.core.durations import parse_rate


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("2/s", 2.0), ("30/min", 0.5), ("30/m", 0.5), ("3/10s", 0.3), ("36/h", 0.01), ("1.5", 1.5),
     ("0", 0.0), (" 4 / s ", 4.0), ("1/500ms", 2.0)],
)  # fmt: skip
def test_rates(text: str, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["", "fast", "2/", "/s", "2/w", "-1/s", "1/0s", "nan"])
def test_bad_rates_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)
