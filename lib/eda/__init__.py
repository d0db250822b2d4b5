"""Exploratory data analysis (the eda stage, 01_eda): measures and figures."""
