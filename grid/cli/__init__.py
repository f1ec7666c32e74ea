"""The `grid` command line."""
