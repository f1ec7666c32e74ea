"""Backups of a grid's control state: a logical, versioned file of every `grid:` key.

`service` takes and restores them, `files` writes and reads the files, `format` is the
file format, `scope` says which keys are in, `dump` and `load` move keys out of and into
Redis. docs/BACKUPS.md is the user's guide.
"""
