"""Data: the prepare stage and everything that reads or writes images (docs/architecture.md)."""
