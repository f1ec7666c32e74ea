"""The control plane: the master runtime, reconciler, placement, health monitor, reports, pages."""
