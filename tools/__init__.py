"""Maintenance scripts; a package so that `python -m tools.crosscheck` and pytest imports work."""
