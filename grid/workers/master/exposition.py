"""The master's Prometheus metrics: grid-level gauges read from Redis at scrape time.

A custom `Collector` on a private `CollectorRegistry`, not gauges in the global registry
kept up to date elsewhere: the numbers live in Redis, so every master (leader or standby)
reads them when scraped and serves the same values.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from grid.core.state import AgentStatus, GridState
from grid.workers.master.report import status_report

CLUSTER_STATE_VALUES = {"healthy": 0, "degraded": 1, "critical": 2}


class GridCollector(Collector):
    """Agents by status, nodes by pool and status, desired size, shortfall, cluster state."""

    def __init__(self, state: GridState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        report = status_report(self.state)
        agents = GaugeMetricFamily("grid_agents", "Agents by status.", labels=["status"])
        for status in AgentStatus:
            agents.add_metric([status.value], report["agents"][status.value])
        nodes = GaugeMetricFamily(
            "grid_nodes", "Nodes by pool and status.", labels=["pool", "status"]
        )
        desired = GaugeMetricFamily("grid_pool_desired", "Desired size per pool.", labels=["pool"])
        shortfall = GaugeMetricFamily(
            "grid_pool_shortfall", "Nodes that do not fit.", labels=["pool"]
        )
        for pool, entry in sorted(report["pools"].items()):
            for status_name, count in sorted(entry["nodes"].items()):
                nodes.add_metric([pool, str(status_name)], count)
            if entry["desired"] is not None:
                desired.add_metric([pool], entry["desired"])
            shortfall.add_metric([pool], entry["shortfall"])
        yield from (agents, nodes, desired, shortfall)
        yield GaugeMetricFamily(
            "grid_cluster_state",
            "0 healthy, 1 degraded, 2 critical.",
            value=CLUSTER_STATE_VALUES[report["cluster"]],
        )


def metrics_registry(state: GridState) -> CollectorRegistry:
    """A registry holding only Grid's collector (no process or platform collectors)."""
    registry = CollectorRegistry()
    registry.register(GridCollector(state))
    return registry
