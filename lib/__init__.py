"""Reusable code of the brain-MRI study; notebooks and DVC stages call into it."""
