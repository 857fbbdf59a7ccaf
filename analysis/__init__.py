"""Pareto fronts, hypervolume, plots and reports from a study's Parquet results.

Runs with numpy, pyarrow, pandas and matplotlib only: no torch, no Ray.
"""
