"""Reading the Prometheus text format (prometheus_client's parser, through the agent's
`read_series`) and writing it (grid-node's stdlib formatter in grid.node.prom)."""

from __future__ import annotations

import math

import pytest

from grid.node.prom import format_sample, format_value, is_metric_name, series_key
from grid.workers.agent.sampler import read_series, sum_by_name
from tests.helpers import series_by_key

HISTOGRAM = """\
# HELP grid_node_request_latency_seconds time to serve a request
# TYPE grid_node_request_latency_seconds histogram
grid_node_request_latency_seconds_bucket{le="0.005"} 3
grid_node_request_latency_seconds_bucket{le="0.1"} 5
grid_node_request_latency_seconds_bucket{le="+Inf"} 6
grid_node_request_latency_seconds_sum 0.75
grid_node_request_latency_seconds_count 6
"""

PARSE_CASES = [
    pytest.param("up 1\n", {"up": 1.0}, id="plain"),
    pytest.param("# HELP up is up\n# TYPE up gauge\n\n  \nup 0\n", {"up": 0.0}, id="comments"),
    pytest.param(
        'grid_node_requests_total{method="GET",code="200"} 7\n',
        {'grid_node_requests_total{code="200",method="GET"}': 7.0},
        id="labels-sorted",
    ),
    pytest.param(
        'm{ a = "1" , b="2", } 3\n', {'m{a="1",b="2"}': 3.0}, id="blanks-and-trailing-comma"
    ),
    pytest.param("m{} 4\n", {"m": 4.0}, id="empty-braces"),
    pytest.param(
        'm{path="C:\\\\dir",msg="say \\"hi\\"\\nbye"} 1\n',
        {'m{msg="say \\"hi\\"\\nbye",path="C:\\\\dir"}': 1.0},
        id="escaped-label-values",
    ),
    pytest.param('m{v="a,b}c=d"} 2\n', {'m{v="a,b}c=d"}': 2.0}, id="separators-inside-value"),
    pytest.param('m{v="a#b"} 2 # {trace="x"} 1\n', {'m{v="a#b"}': 2.0}, id="exemplar-dropped"),
    pytest.param("m 1.5e3 1700000000000\n", {"m": 1500.0}, id="timestamp-ignored"),
    pytest.param("m\t-2.5\n", {"m": -2.5}, id="tab-and-negative"),
    pytest.param("a:b_c 1\n", {"a:b_c": 1.0}, id="colon-in-name"),
    pytest.param("m 1\nm 2\n", {"m": 2.0}, id="repeat-keeps-last"),
    pytest.param("m 1\r\nn 2\r\n", {"m": 1.0, "n": 2.0}, id="crlf"),
    pytest.param(
        "# TYPE jobs counter\njobs 3\n# TYPE done_total counter\ndone_total 4\n",
        {"jobs_total": 3.0, "done_total": 4.0},
        id="counter-samples-named-with-total",
    ),
    pytest.param(
        HISTOGRAM,
        {
            'grid_node_request_latency_seconds_bucket{le="0.005"}': 3.0,
            'grid_node_request_latency_seconds_bucket{le="0.1"}': 5.0,
            'grid_node_request_latency_seconds_bucket{le="+Inf"}': 6.0,
            "grid_node_request_latency_seconds_sum": 0.75,
            "grid_node_request_latency_seconds_count": 6.0,
        },
        id="histogram",
    ),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_CASES)
def test_parse(text: str, expected: dict[str, float]) -> None:
    assert series_by_key(text) == expected


SPECIAL_CASES = [
    ("NaN", math.nan),
    ("nan", math.nan),
    ("+Inf", math.inf),
    ("Inf", math.inf),
    ("-Inf", -math.inf),
    ("+inf", math.inf),
]


@pytest.mark.parametrize(("token", "expected"), SPECIAL_CASES)
def test_parse_special_values(token: str, expected: float) -> None:
    value = series_by_key(f"m {token}\n")["m"]
    if math.isnan(expected):
        assert math.isnan(value)
    else:
        assert value == expected


BAD_LINES = [
    pytest.param("9m 1", id="name-starts-with-digit"),
    pytest.param("m", id="no-value"),
    pytest.param("m one", id="value-not-a-number"),
    pytest.param("m 1_000", id="underscore-in-value"),
    pytest.param('m{a="1" 2', id="unclosed-braces"),
    pytest.param('m{a="1} 2', id="unterminated-value"),
    pytest.param("m{a=1} 2", id="unquoted-value"),
    pytest.param('m{1a="x"} 2', id="bad-label-name"),
    pytest.param('m{a="x",a="y"} 2', id="duplicate-label"),
]


@pytest.mark.parametrize("line", BAD_LINES)
def test_parse_rejects_malformed_lines_naming_the_line(line: str) -> None:
    with pytest.raises(ValueError, match="line 2"):
        read_series(f"ok 1\n{line}\n")


# Rejected by Grid's former hand parser, read by prometheus_client's (which says it is laxer
# than Prometheus' own): the first field is the value. Pinned so a change shows up here.
LAX_LINES = [
    pytest.param("m 1 2 3", id="too-many-fields"),
    pytest.param("m 1 1.5", id="fractional-timestamp"),
    pytest.param('m{a="x"}1', id="no-blank-before-value"),
]


@pytest.mark.parametrize("line", LAX_LINES)
def test_parse_reads_lax_lines_by_their_first_field(line: str) -> None:
    assert list(series_by_key(f"ok 1\n{line}\n").values()) == [1.0, 1.0]


def test_sum_by_name_sums_over_labels() -> None:
    samples = read_series(
        'req{code="200"} 3\nreq{code="404"} 2\nreq 1\nother{x="y"} 1.5\n' + HISTOGRAM
    )
    totals = sum_by_name(samples)
    assert totals["req"] == 6.0
    assert totals["other"] == 1.5
    assert totals["grid_node_request_latency_seconds_bucket"] == 14.0
    assert totals["grid_node_request_latency_seconds_count"] == 6.0


FORMAT_CASES = [
    (3.0, "3"),
    (0, "0"),
    (-2.0, "-2"),
    (0.25, "0.25"),
    (1e-7, "1e-07"),
    (1e20, "1e+20"),
    (math.nan, "NaN"),
    (math.inf, "+Inf"),
    (-math.inf, "-Inf"),
]


@pytest.mark.parametrize(("value", "text"), FORMAT_CASES)
def test_format_value(value: float, text: str) -> None:
    assert format_value(value) == text


@pytest.mark.parametrize(
    "labels",
    [{}, {"code": "200"}, {"b": "2", "a": "1"}, {"v": 'quote " backslash \\ newline \n end'}],
)
def test_format_then_parse_round_trips(labels: dict[str, str]) -> None:
    line = format_sample("grid_thing", 0.5, labels)
    assert series_by_key(line + "\n") == {series_key("grid_thing", labels): 0.5}


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("queue_depth", True),
        ("a:b", True),
        ("_x9", True),
        ("9x", False),
        ("a-b", False),
        ("", False),
    ],
)
def test_is_metric_name(name: str, valid: bool) -> None:
    assert is_metric_name(name) is valid
