"""Chaos tests: kill, cut and restart parts of a real grid, then check it heals."""
