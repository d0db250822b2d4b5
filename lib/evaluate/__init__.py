"""Evaluation on the test split: the predictions, the metrics, their tables and figures."""
