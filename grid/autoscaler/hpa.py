"""The Kubernetes HorizontalPodAutoscaler algorithm, as the baseline for backtests.

What it reproduces (kubernetes.io "Horizontal Pod Autoscaling", algorithm details, and the
controller's default `behavior`):

* desiredReplicas = ceil[currentReplicas x (currentMetricValue / desiredMetricValue)],
  skipped while the ratio is within the tolerance (0.1) of 1.0; the replica base is the
  pods that report metrics (ready pods) - :func:`votes.proportional`, shared with the
  target_value strategy;
* scale-down stabilisation: the applied size is the largest recommendation of the last
  5 minutes; scale-up has no stabilisation window;
* default scale-up rate: at most +100 % or +4 pods (whichever is more) per 15 s;
* the result is clamped to minReplicas/maxReplicas; the controller syncs every 15 s.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from grid.autoscaler.votes import proportional


@dataclass
class HPA:
    target: float
    min_replicas: int
    max_replicas: int
    tolerance: float = 0.1
    downscale_stabilization: float = 300.0
    sync_period: float = 15.0
    up_percent: float = 100.0
    up_pods: int = 4
    up_period: float = 15.0
    _recommendations: deque[tuple[float, int]] = field(default_factory=deque, repr=False)
    _scale_ups: deque[tuple[float, int]] = field(default_factory=deque, repr=False)

    def recommend(self, now: float, current: int, value: float, ready: float | None = None) -> int:
        """The replica count the controller sets at `now`, given the per-pod metric average."""
        raw = proportional(current, value, self.target, self.tolerance, ready or None)
        while self._recommendations and self._recommendations[0][0] <= (
            now - self.downscale_stabilization
        ):
            self._recommendations.popleft()
        # Stabilise: never below the largest recommendation of the window (scale-down only).
        down_limit = max([raw, *(r for _, r in self._recommendations)])
        self._recommendations.append((now, raw))
        desired = current
        if raw > current:
            desired = raw
        elif down_limit < current:
            desired = down_limit
        desired = min(desired, self._scale_up_limit(now, current))
        desired = max(self.min_replicas, min(self.max_replicas, desired))
        if desired > current:
            self._scale_ups.append((now, desired - current))
        return desired

    def _scale_up_limit(self, now: float, current: int) -> int:
        while self._scale_ups and self._scale_ups[0][0] <= now - self.up_period:
            self._scale_ups.popleft()
        period_start = current - sum(n for _, n in self._scale_ups)
        by_percent = math.ceil(period_start * (1 + self.up_percent / 100.0))
        return max(by_percent, period_start + self.up_pods)
