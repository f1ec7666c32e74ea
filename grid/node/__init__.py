"""The storage node Grid runs by default (grid-node); stdlib only."""
