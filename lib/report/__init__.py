"""The HTML report (the report stage)."""
