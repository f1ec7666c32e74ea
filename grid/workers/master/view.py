"""The leader's in-memory view of every agent and node record, kept current incrementally.

A full read of 50,000 node records costs about a second; the master's passes run every
second. So the view loads everything once, then applies only what the change stream
(`grid:changes`, appended by GridState beside every record write) names: each pass re-reads
just the records that changed since the last one. A periodic full resync (and one whenever
the capped stream has dropped entries the view has not seen) bounds any drift, so the view is
never more than `resync_interval` away from what Redis holds.
"""

from __future__ import annotations

import logging
import time

from grid.core.state import AgentRecord, ChangeBatch, GridState, NodeCensus, NodeRecord

log = logging.getLogger(__name__)


class FleetView:
    def __init__(self, state: GridState, resync_interval: float = 30.0) -> None:
        self.state = state
        self.resync_interval = resync_interval
        self.agents: dict[str, AgentRecord] = {}
        self.nodes: dict[str, NodeRecord] = {}
        self.census = NodeCensus()  # of `nodes`, kept as they change: the health pass's counts
        self.version = 0  # bumped whenever a refresh changed anything
        self._cursor: str | None = None  # last change-stream id applied
        self._synced_at = 0.0

    def refresh(self, now: float | None = None) -> bool:
        """Bring the view up to date; True if anything changed."""
        now = time.monotonic() if now is None else now
        if self._cursor is None or now - self._synced_at >= self.resync_interval:
            return self.resync(now)
        batch = self.state.changes_since(self._cursor)
        if batch.gap:
            log.info("change stream trimmed past the view: full resync")
            return self.resync(now)
        if not batch.agents and not batch.nodes:
            return False
        self._apply(batch)
        return True

    def resync(self, now: float | None = None) -> bool:
        """Read everything again. The cursor is taken first: a write racing the read is
        then seen again by the next refresh, which re-reads it (harmless)."""
        cursor = self.state.change_cursor()
        agents = {a.agent_id: a for a in self.state.agents()}
        nodes = {n.node_id: n for n in self.state.nodes()}
        changed = agents != self.agents or nodes != self.nodes
        self.agents, self.nodes = agents, nodes
        self._cursor = cursor
        self._synced_at = time.monotonic() if now is None else now
        if changed:
            self.census = NodeCensus.of(nodes.values())
            self.version += 1
        return changed

    def _apply(self, batch: ChangeBatch) -> None:
        agents, nodes = self.state.reread(batch)
        for agent_id in batch.agents:
            record = agents.get(agent_id)
            if record is None:
                self.agents.pop(agent_id, None)
            else:
                self.agents[agent_id] = record
        for node_id in batch.nodes:
            before = self.nodes.pop(node_id, None)
            if before is not None:
                self.census.add_node(before, -1)
            node = nodes.get(node_id)
            if node is not None:
                self.nodes[node_id] = node
                self.census.add_node(node)
        self._cursor = batch.cursor
        self.version += 1

    def agent_list(self) -> list[AgentRecord]:
        return [self.agents[a] for a in sorted(self.agents)]

    def node_list(self) -> list[NodeRecord]:
        return [self.nodes[n] for n in sorted(self.nodes)]
